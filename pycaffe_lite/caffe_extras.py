"""pycaffe's module-level odds and ends: ``Timer``, ``init_log``, ``log``, NCCL and
the multi-process solver counts (``caffe.solver_count()`` ...).

NCCL does not exist in this build (``has_nccl()`` is False, ``NCCL(...)`` raises
a clear error); the solver count and rank are kept as Caffe keeps them, for
scripts that set and read them.
"""
import logging
import time

from .errors import CaffeError

log_ = logging.getLogger("pycaffe_lite")
_state = {"solver_count": 1, "solver_rank": 0, "multiprocess": False}


class Timer:
    """Caffe's Timer: ``start()``, ``stop()``, ``ms`` (milliseconds between them)."""

    def __init__(self):
        self._start = self._stop = None

    def start(self):
        self._start, self._stop = time.perf_counter(), None

    def stop(self):
        self._stop = time.perf_counter()

    @property
    def ms(self):
        if self._start is None:
            return 0.0
        end = self._stop if self._stop is not None else time.perf_counter()
        return (end - self._start) * 1e3


def init_log(level=0, stderr=False):
    """glog's setup (pycaffe's ``caffe.init_log``): glog lines on stderr from ``level``."""
    from .log import setup_logging
    setup_logging(min_level=level)


def log(message):
    """One INFO glog line (pycaffe's ``caffe.log``)."""
    log_.info("%s", message)


def has_nccl():
    """False: this build has no NCCL (pycaffe's ``caffe.has_nccl``)."""
    return False


class NCCL:
    """pycaffe's ``caffe.NCCL``: not in this build."""

    def __init__(self, *args, **kwargs):
        raise CaffeError("caffe.NCCL: this build has no NCCL (caffe.has_nccl() is False); "
                         "train on one device")

    @staticmethod
    def new_uid():
        raise CaffeError("caffe.NCCL.new_uid: this build has no NCCL (caffe.has_nccl() is "
                         "False)")


def solver_count():
    return _state["solver_count"]


def set_solver_count(count):
    _state["solver_count"] = int(count)


def solver_rank():
    return _state["solver_rank"]


def set_solver_rank(rank):
    _state["solver_rank"] = int(rank)


def set_multiprocess(multiprocess):
    _state["multiprocess"] = bool(multiprocess)
