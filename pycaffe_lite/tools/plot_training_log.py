"""plot_training_log: learning curves of Caffe training logs, as a PNG.

    plot_training_log [-x iters|seconds] [-y SERIES,...] OUTPUT.png LOG [LOG ...]
    plot_training_log CHART_TYPE OUTPUT.png LOG [LOG ...]

The logs are read by :mod:`pycaffe_lite.tools.parse_log` (Caffe's or ours).
``-y`` lists the series to draw, each ``train:<column>``, ``test:<column>``
or a bare ``<column>`` (train and test, where the log has it); a column is an
output name (``loss``, ``accuracy``, ...), ``lr`` for the learning rate, or a
name contained in one (``acc`` finds ``accuracy``).  Default ``loss,accuracy``:
train loss, test loss and test accuracy, accuracies on a right-hand axis.
``-x`` is ``iters`` (default) or ``seconds``.

The second form is Caffe's ``tools/extra/plot_training_log.py`` (chart types
0-7: test accuracy, test loss, train learning rate, train loss, each versus
iterations then seconds).  Unlike Caffe's, log names need not end in ``.log``
and the image format comes from the output name (``.png``, ``.svg``,
``.pdf``, ...).  matplotlib is needed: ``pip install 'pycaffe_lite[plot]'``.
"""
import logging
import os
import sys

from pycaffe_lite.errors import CaffeError
from pycaffe_lite.flags import Flag
from pycaffe_lite.tools import run_tool
from pycaffe_lite.tools.parse_log import parse_log

log = logging.getLogger("pycaffe_lite")

PROG = "plot_training_log"

# Caffe's chart types: (table, column, x axis)
CHART_TYPES = {
    0: ("test", "accuracy", "iters"), 1: ("test", "accuracy", "seconds"),
    2: ("test", "loss", "iters"), 3: ("test", "loss", "seconds"),
    4: ("train", "lr", "iters"), 5: ("train", "lr", "seconds"),
    6: ("train", "loss", "iters"), 7: ("train", "loss", "seconds"),
}
_CHART_LINES = "\n".join(f"    {n}: {'Train' if t == 'train' else 'Test'} "
                         f"{'learning rate' if c == 'lr' else c}  vs. "
                         f"{'Iters' if x == 'iters' else 'Seconds'}"
                         for n, (t, c, x) in CHART_TYPES.items())

USAGE = (f"Plot learning curves of Caffe training logs.\n"
         f"Usage:\n"
         f"    {PROG} [-x iters|seconds] [-y SERIES,...] output.png log [log ...]\n"
         f"    {PROG} chart_type[0-7] output.png log [log ...]   (Caffe's form)\n"
         f"SERIES: train:<column>, test:<column> or <column> (both); columns are the\n"
         f"logged outputs (loss, accuracy, ...) and lr; default -y loss,accuracy.\n"
         f"Caffe's chart types:\n{_CHART_LINES}\n")

FLAGS = [
    Flag("x", str, "iters", "The x axis: iters or seconds."),
    Flag("y", str, "loss,accuracy", "The series, comma-separated: train:<column>, "
         "test:<column> or <column> (train and test)."),
]

ARGUMENTS = ("OUTPUT_PNG", "LOG", "[LOG...]")   # or Caffe's CHART_TYPE OUTPUT_PNG LOG...

X_COLUMNS = {"iters": "NumIters", "seconds": "Seconds"}


def _column(rows, name):
    """The CSV column that ``name`` means in ``rows``, or None."""
    if not rows:
        return None
    # every row's columns: a log whose output names change has rows without some
    names = [c for c in dict.fromkeys(c for row in rows for c in row)
             if c not in ("NumIters", "Seconds", "LearningRate")]
    if name.lower() in ("lr", "learningrate", "learning_rate"):
        return "LearningRate"
    if name in names:
        return name
    return next((c for c in names if name.lower() in c.lower()), None)


def _series(spec):
    """[(table or None, column)] from a -y value."""
    out = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        table, sep, column = part.partition(":")
        if not sep:
            out.append((None, part))
        elif table in ("train", "test") and column:
            out.append((table, column))
        else:
            raise CaffeError(f"-y: '{part}' is not train:<column>, test:<column> or <column>")
    if not out:
        raise CaffeError("-y names no series")
    return out


def _is_accuracy(column):
    return "acc" in column.lower()


def plot(output, logs, series=(("train", "loss"), ("test", "loss"), ("test", "accuracy")),
         x="iters", title=None):
    """Draw ``series`` of every log in ``logs`` into ``output``; returns the curves
    drawn as ``[(label, xs, ys)]``."""
    if x not in X_COLUMNS:
        raise CaffeError(f"-x must be iters or seconds, got '{x}'")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CaffeError(f"{PROG} needs matplotlib: pip install 'pycaffe_lite[plot]' "
                         "(or pip install matplotlib)") from None
    curves = []
    for path in logs:
        tables = dict(zip(("train", "test"), parse_log(path)))
        name = os.path.basename(path)
        for table, wanted in series:
            for kind in ([table] if table else ["train", "test"]):
                rows = tables[kind]
                column = _column(rows, wanted)
                if column is None:
                    continue
                label = f"{kind} {'learning rate' if column == 'LearningRate' else column}"
                if len(logs) > 1:
                    label = f"{name}: {label}"
                rows = [r for r in rows if column in r]
                curves.append((label, [r[X_COLUMNS[x]] for r in rows],
                               [r[column] for r in rows], kind, column))
    if not curves:
        wanted = ", ".join(f"{t}:{c}" if t else c for t, c in series)
        raise CaffeError(f"none of the series {wanted} is in {', '.join(logs)} (no "
                         "'Train net output' / 'Test net output' lines with those names?)")
    figure, left = plt.subplots(figsize=(8, 5))
    split = any(_is_accuracy(c[4]) for c in curves) and not all(
        _is_accuracy(c[4]) for c in curves)
    right = left.twinx() if split else None
    for i, (label, xs, ys, kind, column) in enumerate(curves):
        axis = right if split and _is_accuracy(column) else left
        style = "-" if kind == "train" else "o-"
        # One colour cycle over both axes (each axis would restart it).
        axis.plot(xs, ys, style, color=f"C{i % 10}", label=label, markersize=3,
                  linewidth=1 if kind == "train" else 1.5)
    left.set_xlabel("Iterations" if x == "iters" else "Seconds")
    lefts = sorted({c[4] for c in curves if not (split and _is_accuracy(c[4]))})
    left.set_ylabel(", ".join("learning rate" if c == "LearningRate" else c for c in lefts))
    if right is not None:
        right.set_ylabel(", ".join(sorted({c[4] for c in curves if _is_accuracy(c[4])})))
    handles, labels = left.get_legend_handles_labels()
    if right is not None:
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    left.legend(handles, labels, loc="best", fontsize="small")
    left.grid(True, alpha=0.3)
    left.set_title(title or " / ".join(os.path.basename(p) for p in logs))
    figure.tight_layout()
    try:
        figure.savefig(output)
    except (OSError, ValueError) as e:
        raise CaffeError(f"cannot write {output}: {e}") from None
    finally:
        plt.close(figure)
    log.info("Wrote %s (%s)", output, ", ".join(c[0] for c in curves))
    return [c[:3] for c in curves]


def _caffe_chart(chart_type):
    table, column, x = CHART_TYPES[chart_type]
    title = (f"{'Train' if table == 'train' else 'Test'} "
             f"{'learning rate' if column == 'lr' else column}  vs. "
             f"{'Iters' if x == 'iters' else 'Seconds'}")
    return [(table, column)], x, title


def main(argv=None):
    def body(args, flags):
        if args[0].isdigit():
            if int(args[0]) not in CHART_TYPES or len(args) < 3:
                raise CaffeError(f"Caffe's form is: {PROG} chart_type[0-7] output.png log "
                                 f"[log ...], got {' '.join(args)}")
            series, x, title = _caffe_chart(int(args[0]))
            args = args[1:]
        else:
            series, x, title = _series(flags.y), flags.x, None
        plot(args[0], args[1:], series, x, title)
    return run_tool(PROG, USAGE, FLAGS, ARGUMENTS, argv, body)


if __name__ == "__main__":
    sys.exit(main())
