"""Data layers whose blobs are held in memory: no files, no transformation, no
prefetch (the net's sources of blobs: no bottoms, no backward).

* ``Input``: tops shaped by ``input_param``; the user fills them.
* ``DummyData``: tops filled by fillers (constant ones once, others every pass).
* ``MemoryData``: batches cut from arrays given with ``set_input_arrays``.
"""
import logging

import numpy

from pycaffe_lite.errors import CaffeError
from pycaffe_lite.fillers import fill
from pycaffe_lite.layer import register
from pycaffe_lite.layers.data import BaseDataLayer
from pycaffe_lite.proto import caffe_pb2

log = logging.getLogger("pycaffe_lite")


# --- Input ---------------------------------------------------------------------

@register("Input")
class InputLayer(BaseDataLayer):
    """Tops whose values the user sets (``net.blobs[name].data[...] = x``).

    ``input_param.shape``: none (tops keep the shape they are given), one for
    every top, or one per top.  No forward computation, no gradient.
    Reshaping the blob by hand and calling ``net.reshape()`` keeps the new
    shape (Caffe's Input has an empty Reshape).
    """

    def setup(self, bottom, top):
        shapes = self.param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise self.error(f"Must specify 'shape' once, once per top blob, or not at all: "
                             f"{len(top)} tops vs. {len(shapes)} shapes")
        for i, blob in enumerate(top):
            if shapes:
                shape = shapes[0 if len(shapes) == 1 else i]
                if any(d < 0 for d in shape.dim):
                    raise self.error(f"input_param.shape for top '{self.param.top[i]}' has a "
                                     f"negative dimension: {list(shape.dim)}")
                blob.reshape(tuple(shape.dim))


# --- DummyData -------------------------------------------------------------------

@register("DummyData", "DUMMY_DATA")
class DummyDataLayer(BaseDataLayer):
    """Tops filled by ``data_filler`` (constant 0 by default).

    Shapes: ``shape`` (once or once per top) or the legacy ``num``,
    ``channels``, ``height``, ``width`` (once or once per top).  Constant
    fillers fill once at setup; other fillers refill on every forward.
    """

    def setup(self, bottom, top):
        p = self.param.dummy_data_param
        n_top = len(top)
        n_fill = len(p.data_filler)
        if n_fill not in (0, 1, n_top):
            raise self.error(f"Number of data fillers must be 0, 1 or equal to the number of "
                             f"tops: {n_top} tops vs. {n_fill} data_fillers")
        legacy = len(p.num)
        if legacy and len(p.shape):
            raise self.error("Both shape and legacy fields (num, channels, height, width) "
                             "were specified")
        count = legacy or len(p.shape)
        if count not in (1, n_top):
            raise self.error(f"Must specify 'shape' once, or once per top blob ({n_top}); "
                             f"specified {count}")
        if legacy:
            for field in ("channels", "height", "width"):
                if len(getattr(p, field)) != legacy:
                    raise self.error(f"dummy_data_param: {legacy} 'num' values but "
                                     f"{len(getattr(p, field))} '{field}' values; give as "
                                     "many of each")
        if n_fill == 0:
            self.fillers = [caffe_pb2.FillerParameter(type="constant", value=0)]
        else:
            self.fillers = list(p.data_filler)
        for i, blob in enumerate(top):
            k = 0 if count == 1 else i
            if legacy:
                shape = (p.num[k], p.channels[k], p.height[k], p.width[k])
            else:
                shape = tuple(p.shape[k].dim)
            blob.reshape(shape)
        # Constant fillers fill once here, the others at every forward (as Caffe).
        self.refill = [f.type != "constant" for f in self.fillers]
        for i, blob in enumerate(top):
            if not self.refill[i if len(self.fillers) > 1 else 0]:
                self._fill(i, blob)

    def _fill(self, i, blob):
        filler = self.fillers[i if len(self.fillers) > 1 else 0]
        try:
            fill(blob, filler)
        except CaffeError as e:
            raise self.error(f"data_filler for top '{self.param.top[i]}': {e}") from None

    def forward(self, bottom, top):
        for i, blob in enumerate(top):
            if self.refill[i if len(self.fillers) > 1 else 0]:
                self._fill(i, blob)


# --- MemoryData ------------------------------------------------------------------

@register("MemoryData", "MEMORY_DATA")
class MemoryDataLayer(BaseDataLayer):
    """Batches cut in turn from arrays set with ``set_input_arrays(data, labels)``.

    Tops: data (batch_size x channels x height x width) and labels (batch_size
    at setup, batch_size x 1 x 1 x 1 once data is set, as Caffe).  The arrays
    are used as they are (no copy, no transformation).
    """

    exact_tops = 2

    def setup(self, bottom, top):
        p = self.param.memory_data_param
        self.batch_size = p.batch_size
        self.channels, self.height, self.width = p.channels, p.height, p.width
        if min(self.batch_size, self.channels, self.height, self.width) <= 0:
            raise self.error(f"batch_size, channels, height, and width must be specified and "
                             f"positive in memory_data_param, got {self.batch_size}, "
                             f"{self.channels}, {self.height}, {self.width}")
        self._data = self._labels = None
        self._pos = 0
        top[0].reshape((self.batch_size, self.channels, self.height, self.width))
        top[1].reshape((self.batch_size,))

    def set_input_arrays(self, data, labels):
        """Use ``data`` (N x C x H x W float32) and ``labels`` (N or N x 1 x 1 x 1).

        N must be a multiple of batch_size; batches are taken in order and
        wrap around.
        """
        labels = numpy.asarray(labels)
        if labels.ndim == 1:
            labels = numpy.ascontiguousarray(labels[:, None, None, None])
        self._check_array(data, "data array", (self.channels, self.height, self.width))
        self._check_array(labels, "labels array", (1, 1, 1))
        if data.shape[0] != labels.shape[0]:
            raise self.error(f"data and labels must have the same first dimension, got "
                             f"{data.shape[0]} and {labels.shape[0]}")
        if data.shape[0] % self.batch_size:
            raise self.error(f"first dimensions of input arrays must be a multiple of batch "
                             f"size {self.batch_size}, got {data.shape[0]}")
        if self.param.HasField("transform_param"):
            log.warning("%s does not transform array data on Reset()", self.type)
        self._data, self._labels = data, labels
        self._pos = 0

    reset = set_input_arrays

    def _check_array(self, array, name, dims):
        if not isinstance(array, numpy.ndarray) or not array.flags["C_CONTIGUOUS"]:
            raise self.error(f"{name} must be a C contiguous NumPy array")
        if array.ndim != 4:
            raise self.error(f"{name} must be 4-d, got shape {array.shape}")
        if array.dtype != numpy.float32:
            raise self.error(f"{name} must be float32, got {array.dtype}")
        if array.shape[1:] != dims:
            raise self.error(f"{name} has wrong dimensions {array.shape[1:]}, expected "
                             f"{dims} (channels, height, width)")

    def set_batch_size(self, batch_size):
        if batch_size <= 0:
            raise self.error(f"batch size must be positive, got {batch_size}")
        self.batch_size = int(batch_size)
        self._pos = 0

    def reshape(self, bottom, top):
        top[0].reshape((self.batch_size, self.channels, self.height, self.width))
        if self._data is not None:
            top[1].reshape((self.batch_size, 1, 1, 1))
        else:
            top[1].reshape((self.batch_size,))

    def forward(self, bottom, top):
        if self._data is None:
            raise self.error("MemoryDataLayer needs to be initialized by calling "
                             "set_input_arrays (Reset) first")
        if len(self._data) % self.batch_size:
            raise self.error(f"the {len(self._data)} rows set are not a multiple of the "
                             f"batch size {self.batch_size}")
        xp = top[0].xp
        rows = slice(self._pos, self._pos + self.batch_size)
        top[0].data[...] = xp.asarray(self._data[rows])
        top[1].data[...] = xp.asarray(self._labels[rows])
        self._pos = (self._pos + self.batch_size) % len(self._data)
