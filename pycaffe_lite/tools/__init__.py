"""Caffe's data tools: ``convert_imageset``, ``compute_image_mean``, ``convert_mnist_data``;
its log tools: ``parse_log``, ``plot_training_log``.

Each reads a gflags-style command line (:mod:`pycaffe_lite.flags`, as
``caffe_lite`` does) and logs glog-style lines
(:func:`pycaffe_lite.log.setup_logging`); :func:`run_tool` is their ``main``.
"""
import logging
import os
import sys

from pycaffe_lite.errors import CaffeError
from pycaffe_lite.flags import (GLOG_FLAGS, SPELLING_NOTE, UsageError, describe_flags,
                                parse_flags, report_error, run_reporting, verbose_requested)
from pycaffe_lite.io import files
from pycaffe_lite.log import setup_logging

log = logging.getLogger("pycaffe_lite")

# Exit status for a command line that cannot be read: 2, as when the tools parsed
# with argparse (caffe_lite returns 1).
USAGE_STATUS = 2


def run_tool(prog, usage, flags, arguments, argv, body):
    """Parse ``argv`` (default ``sys.argv[1:]``) and run ``body(args, flags)``.

    ``usage``: the text ``--help`` starts with.  ``flags``: the tool's
    :class:`~pycaffe_lite.flags.Flag` s (glog's flags are added).
    ``arguments``: the names of the positional arguments, optional ones in
    brackets (``"[OUTPUT_FILE]"``), a last one ending in ``...`` taking any
    number (``"[LOG...]"``: none or more).  Returns the exit status: 0, or 1 after
    logging a CaffeError (or any other exception, as a bug; see
    :func:`pycaffe_lite.flags.run_reporting`) as one glog error line (the
    traceback too with ``--debug`` or ``-v 1``).  A command line that cannot be
    read prints the error and the usage to stderr and raises ``SystemExit(2)``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    flags = list(flags) + GLOG_FLAGS
    least = sum(1 for name in arguments if not name.startswith("["))
    variadic = bool(arguments) and arguments[-1].strip("[]").endswith("...")
    most = float("inf") if variadic else len(arguments)
    try:
        args, values = parse_flags(argv, flags)
        if not (values.help or values.version) and not least <= len(args) <= most:
            given = f" ({' '.join(args)})" if args else ""
            raise UsageError(f"expected the arguments {' '.join(arguments)}, got "
                             f"{len(args)}{given}")
    except UsageError as e:
        raise SystemExit(report_error(prog, e, usage if e.show_usage else None,
                                      USAGE_STATUS)) from None
    if values.help:
        sys.stdout.write(f"{usage}\n{describe_flags(flags)}\n{SPELLING_NOTE}\n")
        return 0
    if values.version:
        from pycaffe_lite import __version__
        sys.stdout.write(f"{prog} version {__version__}\n")
        return 0
    setup_logging(verbose=verbose_requested(values), min_level=values.minloglevel)

    def fail(message, status=1, show_usage=False, debug=False):
        log.error("%s: %s", prog, message, exc_info=debug)
        return status

    def run():
        body(args, values)
        return 0

    return run_reporting(prog, run, values, fail, usage_status=USAGE_STATUS)


def read_input(path, what, cannot_open):
    """The bytes of the regular file ``path`` (:func:`pycaffe_lite.io.files.read_regular`:
    no device, FIFO or folder); one that cannot be opened at all (missing, a NUL in
    the name) raises ``CaffeError(f"{cannot_open}: {reason}")``, the tool's own words."""
    try:
        os.stat(path)
    except (OSError, ValueError) as e:
        raise CaffeError(f"{cannot_open}: {getattr(e, 'strerror', None) or e}") from None
    return files.read_regular(path, what, CaffeError)
