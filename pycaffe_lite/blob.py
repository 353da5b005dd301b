"""Blob: an N-d array of data and one of diffs, in Caffe's row-major layout."""
import math

import numpy

from . import memory
from .errors import CaffeError

# Caffe's Blob limits the number of axes (kMaxBlobAxes).
MAX_BLOB_AXES = 32


class Blob:
    """Holds ``data`` and ``diff`` of the same shape, NumPy or CuPy.

    ``reshape`` keeps the values when the element count is unchanged (a view
    of the same memory, as Caffe keeps its buffer) and allocates zeros when it
    changes, after the memory guard (:mod:`~pycaffe_lite.memory`) let it.
    """

    name = None     # the net's name for the blob, for errors

    def __init__(self, shape=(), xp=numpy, dtype=numpy.float32):
        self.xp = xp
        self.dtype = numpy.dtype(dtype)
        shape = tuple(int(d) for d in shape)
        self._check(shape)
        self._allocate(shape)

    def _check(self, shape):
        if len(shape) > MAX_BLOB_AXES:
            raise CaffeError(f"{self._what()} shape {shape} has more than {MAX_BLOB_AXES} axes")
        if any(d < 0 for d in shape):
            raise CaffeError(f"{self._what()} shape {shape} has a negative dimension")

    def _what(self):
        return f"blob '{self.name}'" if self.name else "blob"

    def _allocate(self, shape):
        memory.check_blob(shape, self.xp, self.dtype, self.name)
        self.data = self.xp.zeros(shape, dtype=self.dtype)
        self.diff = self.xp.zeros(shape, dtype=self.dtype)

    # --- shape -----------------------------------------------------------
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def num_axes(self):
        return self.data.ndim

    @property
    def count(self):
        return int(self.data.size)

    def count_range(self, start, end=None):
        """Product of dims in [start, end): Caffe's ``count(start, end)``."""
        dims = self.shape[start:end]
        return math.prod(dims)

    def canonical_axis(self, axis):
        """Caffe's CanonicalAxisIndex: negative axes count from the end."""
        n = self.num_axes
        if not -n <= axis < max(n, 1):
            raise CaffeError(f"axis {axis} out of range for a {n}-D blob of shape {self.shape}")
        return axis + n if axis < 0 else axis

    def reshape(self, *shape):
        if len(shape) == 1 and not isinstance(shape[0], (int, numpy.integer)):
            shape = shape[0]
        shape = tuple(int(d) for d in shape)
        if shape == self.shape:
            return
        self._check(shape)
        if math.prod(shape) == self.count:
            self.data = self.data.reshape(shape)
            self.diff = self.diff.reshape(shape)
        else:
            self._allocate(shape)

    def reshape_like(self, other):
        self.reshape(other.shape)

    # --- legacy 4-D accessors -------------------------------------------
    def _legacy(self, index):
        if self.num_axes > 4:
            raise CaffeError(f"legacy accessor on a {self.num_axes}-D blob")
        if index < self.num_axes:
            return self.shape[index]
        return 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def share_data(self, other):
        """Use ``other``'s data array (Caffe's ShareData)."""
        self.data = other.data

    def share_diff(self, other):
        self.diff = other.diff

    def __repr__(self):
        return f"Blob(shape={self.shape}, dtype={self.dtype.name})"
