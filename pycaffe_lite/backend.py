"""NumPy / CuPy selection.

Layers never consult a global flag: they take ``xp`` from their arrays
(``get_array_module``).  Only the net (when it allocates blobs) and the CLI
decide where arrays live.
"""
import numpy

try:  # CuPy is an optional extra
    import cupy  # noqa: F401
except Exception:  # pragma: no cover - no CuPy on this machine
    cupy = None


def get_array_module(*arrays):
    """numpy or cupy, whichever the arrays belong to."""
    if cupy is not None:
        return cupy.get_array_module(*arrays)
    return numpy


def gpu_available():
    """True when CuPy imports and sees at least one CUDA device."""
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def to_numpy(array):
    """A NumPy copy (or the array itself) of a NumPy or CuPy array."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy.asnumpy(array)
    return numpy.asarray(array)
