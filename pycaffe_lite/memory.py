"""The memory guard: a blob is refused before it is allocated when it needs more
memory than there is.

The limit is, first found: :func:`set_memory_limit`'s, the environment variable
``PYCAFFE_LITE_MEMORY_LIMIT`` (bytes, or a number with a K, M, G or T suffix:
``512M``, ``1.5G``), else the memory available now: on the host the least of
``MemAvailable`` (``/proc/meminfo``), the cgroup's room and the address space
left under ``ulimit -v``; on a GPU the device's free memory (CuPy's pool
included).  :class:`~pycaffe_lite.blob.Blob` calls :func:`check` whenever it
allocates (not when a reshape keeps the element count), the net checks the
total of its blobs after each layer is set up, and a data layer checks a
Datum's batch before reading it.  The errors say the shape and the bytes; the
net adds the layer and blob names.

Sizes are Python integers, so dims whose product overflows 64 bits are
refused as too large, not wrapped to a negative count.
"""
import math
import os

import numpy

from .errors import CaffeError, MemoryLimitError

ENV = "PYCAFFE_LITE_MEMORY_LIMIT"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# Without a set limit, an allocation below this is not worth reading
# /proc/meminfo for: no machine that runs a net is that short of memory.
_SMALL = 1 << 20

_limit = None       # set_memory_limit's


def parse_size(text):
    """Bytes of ``text``: ``"1000"``, ``"64K"``, ``"1.5G"`` (binary units; ``B``/``iB`` may follow)."""
    spec = str(text).strip().upper().removesuffix("B").removesuffix("I")
    unit = spec[-1:] if spec[-1:] in _UNITS else ""
    try:
        value = float(spec[:len(spec) - len(unit)])
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise CaffeError(f"memory limit {text!r}: expected a number of bytes, optionally with "
                         "a K, M, G or T suffix (512M, 1.5G)")
    return int(value * _UNITS[unit])


def set_memory_limit(limit):
    """Refuse any blob (and any net's blobs together) above ``limit`` bytes (an int
    or a string such as ``"2G"``); ``None`` returns to ``PYCAFFE_LITE_MEMORY_LIMIT``
    or the available memory."""
    global _limit
    _limit = None if limit is None else parse_size(limit)


def _set_limit():
    """(bytes, where the limit comes from) when one is set, else None."""
    if _limit is not None:
        return _limit, "set by pycaffe_lite.set_memory_limit()"
    text = os.environ.get(ENV)
    if text:
        return parse_size(text), f"{ENV}={text}"
    return None


def _read_int(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def host_available():
    """Bytes the host can still give this process."""
    room = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    room.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError):
        pass
    if not room:
        try:
            room.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    cgroup_max = _read_int("/sys/fs/cgroup/memory.max")     # "max" reads as None
    if cgroup_max is not None:
        room.append(cgroup_max - (_read_int("/sys/fs/cgroup/memory.current") or 0))
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            room.append(soft - used)
    except (ImportError, OSError, ValueError):
        pass
    return max(min(room), 0) if room else None


def device_available(xp):
    """Free bytes of the current GPU, counting what CuPy's pool holds unused."""
    free, _ = xp.cuda.runtime.memGetInfo()
    return free + xp.get_default_memory_pool().free_bytes()


def memory_limit(xp=numpy):
    """(bytes or None, where the limit comes from) for blobs of ``xp``."""
    given = _set_limit()
    if given is not None:
        return given
    if xp is numpy:
        return host_available(), "the memory available"
    return device_available(xp), "the GPU memory free"


def blob_bytes(shape, itemsize):
    """Bytes of a Blob of ``shape``: data and diff (Python ints: no overflow)."""
    return 2 * math.prod(shape) * itemsize


def check(nbytes, xp=numpy, shape=None, dtype=None, what=None, addressable=None):
    """Raise :class:`MemoryLimitError` when ``nbytes`` is over the limit.

    ``addressable``: the bytes NumPy must be able to index (the product of the
    non-zero dims), refused past 63 bits even when ``nbytes`` is 0.
    """
    given = _set_limit()
    if max(nbytes, addressable or 0) >= 1 << 63:
        nbytes = max(nbytes, addressable or 0)
    elif given is None and nbytes < _SMALL:
        return
    limit, source = given or memory_limit(xp)
    if nbytes >= 1 << 63 or (limit is not None and nbytes > limit):
        raise MemoryLimitError(nbytes, limit, source, shape=shape, dtype=dtype, what=what)


def check_blob(shape, xp, dtype, name=None):
    """``check`` for a Blob of ``shape`` (named ``name`` when the net knows it)."""
    itemsize = numpy.dtype(dtype).itemsize
    check(blob_bytes(shape, itemsize), xp, shape, numpy.dtype(dtype),
          f"blob '{name}'" if name else None,
          addressable=math.prod(max(d, 1) for d in shape) * itemsize)


class Tally:
    """The bytes of a net's blobs as its layers are set up (what Caffe's ``Memory
    required for data`` counts, with the diffs and the params), checked against
    the limit read once, when the net starts."""

    def __init__(self, xp=numpy):
        self.limit, self.source = _set_limit() or memory_limit(xp)
        self.total = 0
        self._seen = set()

    def add(self, blobs):
        for blob in blobs:
            if id(blob) not in self._seen:
                self._seen.add(id(blob))
                self.total += blob.data.nbytes + blob.diff.nbytes
        if self.limit is not None and self.total > self.limit:
            raise MemoryLimitError(self.total, self.limit, self.source,
                                   what="the net up to this layer (data and diff of every "
                                        "top and param blob)")
