"""glog-style log lines for the ``pycaffe_lite`` logger.

Caffe logs through glog; scripts written for Caffe (``tools/extra/parse_log.py``,
``extract_seconds.py``, plotting scripts) read lines of the form::

    I1125 13:58:00.123456 12345 cli.py:123] message

level letter (I, W, E, F), month and day, local time with microseconds, thread
id (the pid for the main thread) padded to 5 columns as glog pads it, the
``file:line`` that logged, ``]`` and the message.  We print the same, to
stderr, so those scripts work on our logs.

``GLOG_minloglevel`` is honoured as glog honours it: 0 INFO, 1 WARNING,
2 ERROR, 3 FATAL.
"""
import datetime
import logging
import os
import sys
import threading

LOGGER_NAME = "pycaffe_lite"

_LEVEL_LETTERS = ((logging.CRITICAL, "F"), (logging.ERROR, "E"), (logging.WARNING, "W"))

_GLOG_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}


def level_letter(levelno):
    """glog's letter for a Python level; DEBUG prints as I (glog's VLOG does)."""
    for threshold, letter in _LEVEL_LETTERS:
        if levelno >= threshold:
            return letter
    return "I"


class GlogFormatter(logging.Formatter):
    def format(self, record):
        when = datetime.datetime.fromtimestamp(record.created)
        tid = threading.get_native_id()     # handlers run in the logging thread
        prefix = (f"{level_letter(record.levelno)}{when:%m%d %H:%M:%S}.{when.microsecond:06d} "
                  f"{tid:5d} {record.filename}:{record.lineno}] ")
        text = prefix + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class GlogHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (so redirections apply).

    When a tqdm progress bar is drawn on stderr, it is cleared for the line and
    redrawn after it, so bars and log lines do not garble each other.
    """

    def __init__(self):
        super().__init__()
        self.setFormatter(GlogFormatter())

    def emit(self, record):
        try:
            text = self.format(record) + "\n"
            stream = sys.stderr
            tqdm = sys.modules.get("tqdm")
            if tqdm is not None and getattr(tqdm.tqdm, "_instances", None):
                with tqdm.tqdm.external_write_mode(file=stream):
                    stream.write(text)
                    stream.flush()
            else:
                stream.write(text)
                stream.flush()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def min_level_from_env(default=logging.INFO):
    """The level that ``GLOG_minloglevel`` asks for, or ``default``."""
    value = os.environ.get("GLOG_minloglevel", "").strip()
    if not value:
        return default
    try:
        return _GLOG_LEVELS[min(max(int(value), 0), 3)]
    except ValueError:
        return default


def setup_logging(verbose=False, min_level=None):
    """Send the ``pycaffe_lite`` logger to stderr in glog's format.

    ``verbose`` also shows DEBUG messages.  ``min_level`` (0..3, glog's
    numbering) overrides ``GLOG_minloglevel``.  Safe to call more than once:
    the previous glog handler is replaced, not duplicated.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if isinstance(handler, GlogHandler):
            logger.removeHandler(handler)
    base = logging.DEBUG if verbose else logging.INFO
    if min_level is not None:
        level = _GLOG_LEVELS[min(max(int(min_level), 0), 3)]
    else:
        level = min_level_from_env(logging.INFO)
    logger.setLevel(level if level > logging.INFO else base)
    logger.addHandler(GlogHandler())
    return logger


def caffe_float(value):
    """``value`` as C++ ``std::ostream << float`` prints it (6 significant digits).

    The stream's default format is printf's ``%g``: ``0.9914``, ``0.0288435``,
    ``1e-05``, ``inf``, ``nan``.
    """
    return "%g" % float(value)
