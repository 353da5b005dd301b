"""parse_log: a Caffe training log -> CSV tables of its train and test outputs.

    parse_log [FLAGS] LOGFILE_PATH OUTPUT_DIR

Caffe's ``tools/extra/parse_log.py``: writes ``OUTPUT_DIR/<log name>.train`` and
``OUTPUT_DIR/<log name>.test``, one row per iteration that logged outputs,
with the columns ``NumIters,Seconds,LearningRate`` and then one per output
blob (``loss``, ``accuracy``, ...) in the order the log names them::

    NumIters,Seconds,LearningRate,accuracy,loss
    0.0,0.050634,0.01,0.0859375,2.38251

``Seconds`` counts from the "Solving" line; ``LearningRate`` is the last
"lr = X" logged before the row (so, as in Caffe, a train row carries the rate
of the previous display; the first row takes the second row's rate).  A
table without rows is not written.  Flags: ``-delimiter`` (default ``,``;
``\\t`` means a tab), ``-verbose`` (print the names of the files written).

It reads the logs of Caffe (glog's ``I0210 13:39:22.381027`` and newer glog's
``I20260210 13:39:22.381027`` timestamps) and of ``caffe_lite train`` alike.
Differences from Caffe's script, all where Caffe's fails: both timestamp
forms are read (Caffe's reads only the first and takes the year from the
file's ctime; so do we for that form), ``nan`` / ``inf`` outputs are kept,
a log with a single row (one test) keeps it, and a log without a "Solving"
line counts seconds from its first timestamp.
"""
import collections
import csv
import datetime
import io
import logging
import os
import re
import sys

from pycaffe_lite.errors import CaffeError
from pycaffe_lite.flags import Flag
from pycaffe_lite.tools import read_input, run_tool

log = logging.getLogger("pycaffe_lite")

USAGE = ("Parse a Caffe training log into two CSV files containing training and\n"
         "testing information.\n"
         "Usage:\n"
         "    parse_log [FLAGS] logfile_path output_dir\n"
         "writes output_dir/<logfile name>.train and output_dir/<logfile name>.test\n")

FLAGS = [
    Flag("delimiter", str, ",", "Column delimiter in output files ('\\t' for a tab)"),
    Flag("verbose", bool, False, "Print some extra info (e.g., output filenames)"),
]
ARGUMENTS = ("LOGFILE_PATH", "OUTPUT_DIR")

_NUMBER = r"[-+]?(?:nan|inf|[\.\deE+-]+)"
REGEX_ITERATION = re.compile(r"Iteration (\d+)")
REGEX_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = (" + _NUMBER + ")")
REGEX_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = (" + _NUMBER + ")")
REGEX_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
# glog: level letter, [YYYY]MMDD, HH:MM:SS.micro
REGEX_TIME = re.compile(r"^[IWEF](\d{4})?(\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{1,6})\b")


def line_time(line, year):
    """The datetime of a glog line (``year`` when the line has none), or None."""
    match = REGEX_TIME.match(line.strip())
    if not match:
        return None
    line_year, month, day, hour, minute, second, micro = match.groups()
    try:
        return datetime.datetime(int(line_year) if line_year else year, int(month), int(day),
                                 int(hour), int(minute), int(second), int(micro.ljust(6, "0")))
    except ValueError:
        return None


def log_created_year(path):
    """Caffe's guess of the year of a log whose lines do not say it."""
    return datetime.datetime.fromtimestamp(os.path.getctime(path)).year


def _start_time(lines, year):
    """(index, time) of the "Solving" line, else of the first timestamped line."""
    first = None
    for i, line in enumerate(lines):
        if "Solving" in line:
            when = line_time(line, year)
            if when is not None:
                return i, when
        if first is None:
            when = line_time(line, year)
            if when is not None:
                first = (-1, when)
    return first if first is not None else (-1, None)


def parse_log(path):
    """``(train_rows, test_rows)``: lists of OrderedDicts (NumIters, Seconds,
    LearningRate, then the outputs), as Caffe's ``parse_log.parse_log``."""
    # a regular file only: /dev/zero or a FIFO would be read forever
    data = read_input(path, "log", f"cannot read the log {path}")
    lines = io.StringIO(data.decode(errors="replace"), newline=None).readlines()  # as open()
    year = log_created_year(path)
    start_index, start_time = _start_time(lines, year)
    last_time = start_time
    iteration = -1
    learning_rate = float("nan")
    tables = {"train": [[], None], "test": [[], None]}   # [rows, row being filled]
    for number, line in enumerate(lines[start_index + 1:], start=start_index + 2):
        match = REGEX_ITERATION.search(line)
        if match:
            iteration = float(match.group(1))
        if iteration == -1:
            continue   # nothing counts before the first iteration
        time = line_time(line, year)
        if time is None:
            continue   # not a log line (e.g. the parameters printed when resuming)
        if time.month < last_time.month and not REGEX_TIME.match(line.strip()).group(1):
            year += 1   # the log ran over new year
            time = line_time(line, year)
        last_time = time
        seconds = (time - start_time).total_seconds()
        match = REGEX_LEARNING_RATE.search(line)
        if match and _number(match.group(1)) is None:     # Caffe's pattern: "0.01-1" too
            log.warning("%s:%d: lr = %s is not a number; skipped", path, number,
                        match.group(1))
        elif match:
            learning_rate = float(match.group(1))
        for kind, regex in (("train", REGEX_TRAIN_OUTPUT), ("test", REGEX_TEST_OUTPUT)):
            match = regex.search(line)
            if match and _number(match.group(3)) is None:
                log.warning("%s:%d: output %s = %s is not a number; line skipped", path,
                            number, match.group(2), match.group(3))
                match = None
            _add_output(tables[kind], match, iteration, seconds, learning_rate)
    result = []
    for rows, row in tables.values():
        if row is not None and not rows:
            rows.append(row)   # a single row: Caffe's script drops it
        _fix_initial_nan_learning_rate(rows)
        result.append(rows)
    return tuple(result)


def _number(text):
    """``float(text)``, or None where the pattern matched a non-number ("0-.5")."""
    try:
        return float(text)
    except ValueError:
        return None


def _add_output(table, match, iteration, seconds, learning_rate):
    """Caffe's parse_line_for_net_output: a row is complete once it has as many
    columns as the first row; the first row is complete when the next begins."""
    rows, row = table
    if match:
        if row is None or row["NumIters"] != iteration:
            if row is not None:
                rows.append(row)
            row = collections.OrderedDict([("NumIters", iteration), ("Seconds", seconds),
                                           ("LearningRate", learning_rate)])
        row[match.group(2)] = float(match.group(3))
    if row is not None and rows and len(row) == len(rows[0]):
        rows.append(row)
        row = None
    table[1] = row


def _fix_initial_nan_learning_rate(rows):
    """The first rows precede the first "lr =" line: take the second row's rate
    (always, as Caffe's script does)."""
    if len(rows) > 1:
        rows[0]["LearningRate"] = rows[1]["LearningRate"]


def write_csv(filename, rows, delimiter=",", verbose=False):
    """One table as Caffe writes it (csv's excel dialect); nothing when empty."""
    if not rows:
        if verbose:
            print(f"Not writing {filename}; no lines to write")
        return False
    # Every row's columns, first seen first: the same as the first row's for a log of
    # one net; a log whose output names change leaves blanks where a row has none.
    fieldnames = list(dict.fromkeys(name for row in rows for name in row))
    with open(filename, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames, dialect=csv.excel,
                                delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    if verbose:
        print(f"Wrote {filename}")
    return True


def save_csv_files(logfile_path, output_dir, train_rows, test_rows, delimiter=",",
                   verbose=False):
    """Write ``<log name>.train`` and ``<log name>.test`` in ``output_dir``."""
    base = os.path.join(output_dir, os.path.basename(logfile_path))
    write_csv(base + ".train", train_rows, delimiter, verbose)
    write_csv(base + ".test", test_rows, delimiter, verbose)


def read_csv(path, delimiter=","):
    """A table written by :func:`write_csv`, as a list of {column: float}."""
    with open(path, newline="") as f:
        return [{name: float(value) if value != "" else float("nan")
                 for name, value in row.items()}
                for row in csv.DictReader(f, delimiter=delimiter)]


def _delimiter(text):
    text = {"\\t": "\t", "tab": "\t"}.get(text, text)
    if len(text) != 1:
        raise CaffeError(f"-delimiter must be one character, got '{text}'")
    return text


def main(argv=None):
    def body(args, flags):
        logfile_path, output_dir = args
        delimiter = _delimiter(flags.delimiter)
        if not os.path.isdir(output_dir):
            raise CaffeError(f"output directory {output_dir} does not exist")
        train_rows, test_rows = parse_log(logfile_path)
        save_csv_files(logfile_path, output_dir, train_rows, test_rows, delimiter,
                       flags.verbose)
    return run_tool("parse_log", USAGE, FLAGS, ARGUMENTS, argv, body)


if __name__ == "__main__":
    sys.exit(main())
