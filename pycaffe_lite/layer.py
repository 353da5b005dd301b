"""The layer contract and the registry of layer types.

Every layer follows Caffe's contract (``include/caffe/layer.hpp``):

* ``setup(bottom, top)``: read ``self.param.<x>_param`` once, validate it,
  create the learnable ``self.blobs``.  Runs once.
* ``reshape(bottom, top)``: all shape inference; tops are sized here, never
  inside ``forward``.  Re-run before every forward.
* ``forward(bottom, top)``: compute ``top[i].data`` from ``bottom[i].data``.
* ``backward(top, propagate_down, bottom)``: fill ``bottom[i].diff`` only where
  ``propagate_down[i]``; *add* parameter gradients into ``self.blobs[j].diff``
  in place (the net zeroes them; shared parameters share the array).

``bottom`` and ``top`` are lists of :class:`~pycaffe_lite.blob.Blob`.  Arrays
are NumPy or CuPy: take ``xp = get_array_module(x)`` from them.
"""
import numpy

from .blob import Blob
from .errors import LayerError, NetError
from .registry import Registry

TRAIN, TEST = 0, 1


class BlobVec(list):
    """A layer's ``blobs`` (pycaffe's BlobVec): a list of Blobs, plus
    ``add_blob(*shape)`` for a new zero-filled one, on every layer as in pycaffe."""

    def __init__(self, xp, dtype, blobs=()):
        super().__init__(blobs)
        self._xp = xp
        self._dtype = dtype

    def add_blob(self, *shape):
        self.append(Blob(tuple(int(d) for d in shape), xp=self._xp, dtype=self._dtype))


def _load_builtin_layers():
    from . import layers  # noqa: F401  (importing registers every layer)


LAYERS = Registry("layer", NetError, load=_load_builtin_layers)
register = LAYERS.register              # @register("ReLU", "RELU"): type string, V1 alias
layer_type_list = LAYERS.type_list      # pycaffe's layer_type_list
layer_class = LAYERS.lookup


def create_layer(param, phase=TRAIN, xp=numpy, dtype=numpy.float32):
    """Instantiate the layer that ``param.type`` names."""
    cls = layer_class(param.type)
    return cls(param, phase=phase, xp=xp, dtype=dtype)


class Layer:
    """Base of every layer.  Subclasses set the count limits they need."""

    type = None
    # Bottom/top count checks (Caffe's ExactNumBottomBlobs & co.); None = any.
    exact_bottoms = None
    min_bottoms = None
    max_bottoms = None
    exact_tops = None
    min_tops = None
    max_tops = None
    equal_bottom_top = False
    # Loss layers weight their first top by 1 unless loss_weight says otherwise.
    is_loss = False
    # Create unnamed tops up to the minimum when the prototxt names none
    # (Caffe's AutoTopBlobs: a loss layer written without a top still counts).
    auto_top_blobs = False
    # In-place layers keep a copy of their input for backward; an inference-only
    # net (Net.set_inference_only) turns that off.
    keeps_inputs = True
    # Why the layer has no backward (the Q-CNN layers), or None: a net that would
    # run its backward is refused when built.
    inference_only = None

    def __init__(self, param, phase=TRAIN, xp=numpy, dtype=numpy.float32):
        self.param = param
        self.name = param.name
        self.phase = phase
        self.xp = xp
        self.dtype = numpy.dtype(dtype)
        self.blobs = []    # a BlobVec: see the property
        self.loss_weights = []
        # Set by the net: False for a param whose gradient nobody needs (lr_mult 0
        # without force_backward).  Layers may skip that gradient to save time;
        # the net restores such diffs after backward either way.
        self.param_propagate_down = None

    @property
    def blobs(self):
        return self._blobs

    @blobs.setter
    def blobs(self, blobs):
        self._blobs = BlobVec(self.xp, self.dtype, blobs)

    def needs_param_gradient(self, index):
        flags = self.param_propagate_down
        return flags is None or index >= len(flags) or flags[index]

    # --- what subclasses implement --------------------------------------
    def setup(self, bottom, top):
        """Read parameters once and create ``self.blobs``."""

    def reshape(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__}.reshape")

    def forward(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, top, propagate_down, bottom):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def allow_force_backward(self, bottom_index):
        """False where a bottom can never receive a gradient (labels)."""
        return True

    # --- helpers -----------------------------------------------------------
    def error(self, message):
        """A LayerError naming this layer; ``raise self.error(...)``."""
        return LayerError(self, message)

    def positive(self, field, value):
        """``int(value)``, which must be > 0: ``field`` names it (``"x_param.y"``)."""
        if value <= 0:
            raise self.error(f"{field} must be positive, got {value}")
        return int(value)

    def bottom_name(self, i):
        """The prototxt name of bottom ``i`` for messages (``bottom[i]`` when the
        param names none, as for a layer built outside a net)."""
        return self.param.bottom[i] if i < len(self.param.bottom) else f"bottom[{i}]"

    def make_blob(self, shape):
        return Blob(shape, xp=self.xp, dtype=self.dtype)

    def add_param_blob(self, shape, filler):
        """Create a learnable blob, fill it as ``filler`` says, append it to ``blobs``."""
        from .fillers import fill
        blob = self.make_blob(shape)
        fill(blob, filler)
        self.blobs.append(blob)
        return blob

    def freeze_param_blobs(self, what):
        """Mark every param blob as never learned, as Caffe's BatchNorm does: a blob
        the prototxt gives no ``param`` spec gets ``param { lr_mult: 0 }`` (so no
        update or weight decay touches it); a non-zero ``lr_mult`` is an error
        (``what``: the blobs, for the message)."""
        for i in range(len(self.blobs)):
            if len(self.param.param) == i:
                self.param.param.add().lr_mult = 0.0
            elif self.param.param[i].lr_mult != 0:
                raise self.error(f"param {i} has lr_mult {self.param.param[i].lr_mult}; "
                                 f"{what} cannot be learned, expected lr_mult 0 or no "
                                 "param spec")

    def check(self, condition, message):
        if not condition:
            raise self.error(message)

    # --- what the net calls --------------------------------------------------
    def set_up(self, bottom, top):
        """Caffe's ``Layer::SetUp``: count checks, setup, reshape, loss weights."""
        self._check_blob_counts(bottom, top)
        self.setup(bottom, top)
        self.reshape(bottom, top)
        self._set_loss_weights(top)

    def _check_blob_counts(self, bottom, top):
        def check(what, n, exact, lo, hi):
            if exact is not None and n != exact:
                raise self.error(f"takes {exact} {what} blob(s), got {n}")
            if lo is not None and n < lo:
                raise self.error(f"takes at least {lo} {what} blob(s), got {n}")
            if hi is not None and n > hi:
                raise self.error(f"takes at most {hi} {what} blob(s), got {n}")
        check("bottom", len(bottom), self.exact_bottoms, self.min_bottoms, self.max_bottoms)
        check("top", len(top), self.exact_tops, self.min_tops, self.max_tops)
        if self.equal_bottom_top and len(bottom) != len(top):
            raise self.error(f"needs as many tops as bottoms, got {len(bottom)} bottoms "
                             f"and {len(top)} tops")

    def _set_loss_weights(self, top):
        explicit = list(self.param.loss_weight)
        if explicit and len(explicit) != len(top):
            raise self.error(f"loss_weight must be given once per top ({len(top)}), "
                             f"got {len(explicit)}")
        weights = explicit or ([1.0] if self.is_loss else [])
        self.loss_weights = weights + [0.0] * (len(top) - len(weights))
        for blob, weight in zip(top, self.loss_weights):
            if weight:
                blob.diff[...] = weight

    def run_forward(self, bottom, top):
        """Reshape, forward, and return the weighted loss of this layer's tops."""
        self.reshape(bottom, top)
        self.forward(bottom, top)
        loss = 0.0
        for blob, weight in zip(top, self.loss_weights):
            if weight:
                loss += weight * float(blob.data.sum())
        return loss

    def __repr__(self):
        return f"<{type(self).__name__} '{self.name}'>"


class LossLayer(Layer):
    """Two bottoms (prediction, target), one scalar top weighted 1 by default."""

    exact_bottoms = 2
    exact_tops = 1
    is_loss = True
    auto_top_blobs = True

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def reshape(self, bottom, top):
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise self.error(f"bottoms '{self.bottom_name(0)}' {bottom[0].shape} and "
                             f"'{self.bottom_name(1)}' {bottom[1].shape} must have the "
                             f"same num (first axis)")
        top[0].reshape(())


class NeuronLayer(Layer):
    """One bottom, one top of the same shape (may run in place)."""

    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)
