"""Threads for memory-bound NumPy work outside the BLAS.

NumPy's GEMMs already use every core (OpenBLAS's own threads), but an
elementwise pass such as the solver's update runs on one core, and one core
does not draw all of the memory bandwidth.  NumPy releases the GIL inside its
loops, so independent pieces of such work can run on a few Python threads.
Only work whose result cannot depend on the split goes here (every element
computed by the same operations whichever thread takes it).

Threads: ``PYCAFFE_LITE_NUM_THREADS``, else ``OMP_NUM_THREADS`` (the variable
OpenBLAS reads too), else the cores this process may run on;
:func:`set_num_threads` changes it at run time.

OpenBLAS's idle threads.  After each GEMM, OpenBLAS's worker threads spin
for ``2^OPENBLAS_THREAD_TIMEOUT`` cycles (tens of ms with its default) before
they sleep, on exactly the cores these threads and the Data layer's prefetch
thread need: on 2 cores, AlexNet's threaded update right after the backward
GEMMs took 60 ms, as unthreaded, instead of 35.  So when this module is loaded
before NumPy (``import pycaffe_lite`` first, and always under ``caffe_lite``)
it sets ``OPENBLAS_THREAD_TIMEOUT=4`` (workers sleep at once) unless the
variable is already set.  The GEMMs themselves measured no slower with it.
"""
import os
import sys
from concurrent.futures import ThreadPoolExecutor

if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

_threads = None
_pool = None


def _default_threads():
    for var in ("PYCAFFE_LITE_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def num_threads():
    """Threads :func:`for_each` uses."""
    global _threads
    if _threads is None:
        _threads = _default_threads()
    return _threads


def set_num_threads(n):
    """Use ``n`` (>= 1) threads from now on."""
    global _threads, _pool
    n = int(n)
    if n < 1:
        raise ValueError(f"thread count must be at least 1, got {n}")
    if _pool is not None:
        _pool.shutdown()
        _pool = None
    _threads = n


def slices(n, step):
    """``range(n)`` cut into consecutive slices of ``step`` (the last may be shorter):
    the pieces that memory-bound work hands to :func:`for_each`."""
    step = max(1, int(step))
    return [slice(s, min(s + step, n)) for s in range(0, n, step)]


def for_each(items, fn):
    """Call ``fn(item, worker)`` for every item; ``worker`` (0 .. threads-1) names
    the thread, for per-thread scratch.  Items are dealt round-robin; the calling
    thread is worker 0.  Returns when all are done; re-raises the first error."""
    global _pool
    items = list(items)
    n = min(num_threads(), len(items))
    if n <= 1:
        for item in items:
            fn(item, 0)
        return

    def run(worker):
        for item in items[worker::n]:
            fn(item, worker)
    if _pool is None or _pool._max_workers < n - 1:
        _pool = ThreadPoolExecutor(max_workers=num_threads() - 1,
                                   thread_name_prefix="pycaffe_lite")
    futures = [_pool.submit(run, worker) for worker in range(1, n)]
    error = None
    try:
        run(0)
    except BaseException as e:  # noqa: BLE001 - re-raised below, after the others end
        error = e
    for future in futures:
        try:
            future.result()
        except BaseException as e:  # noqa: BLE001
            error = error or e
    if error is not None:
        raise error
