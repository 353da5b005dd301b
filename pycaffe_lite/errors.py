"""Errors a user can cause, each naming where the problem is."""


class CaffeError(Exception):
    """Base of every error pycaffe_lite raises on purpose."""


class ParseError(CaffeError):
    """A prototxt / caffemodel / solver file could not be read."""


class NetError(CaffeError):
    """The net definition is inconsistent (missing bottom, bad sharing, ...)."""


class LayerError(CaffeError):
    """A layer received a parameter or a blob it cannot work with."""

    def __init__(self, layer, message):
        name = getattr(layer, "name", None) or "?"
        kind = getattr(layer, "type", None) or "?"
        super().__init__(f"layer '{name}' (type {kind}): {message}")
        self.layer_name = name


class WeightsError(CaffeError):
    """Trained weights do not fit the net."""


class BackwardNotImplementedError(LayerError, NotImplementedError):
    """Caffe has no backward for this layer (its Backward is NOT_IMPLEMENTED)."""
