"""``python -m pycaffe_lite.run script.py [args]``: an old pycaffe script, unchanged.

The script runs as ``__main__`` with ``sys.argv`` = ``[script.py, args...]`` and
its folder first on ``sys.path``, as ``python script.py`` would run it, after
:func:`pycaffe_lite.install_as_caffe` (so its ``import caffe`` gives
pycaffe_lite; the log says so, and names any other Caffe it shadows).
"""
import os
import runpy
import sys

USAGE = "usage: python -m pycaffe_lite.run SCRIPT.py [ARGS...]"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n\n" + __doc__.strip().split("\n\n", 1)[1])
        return 0 if argv else 2
    script = argv[0]
    if not os.path.isfile(script):
        print(f"pycaffe_lite.run: error: script '{script}' not found", file=sys.stderr)
        return 2
    from . import install_as_caffe
    from .log import setup_logging
    setup_logging()
    install_as_caffe()
    sys.argv = [script] + argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
