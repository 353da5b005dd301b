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


class FillerError(CaffeError):
    """A FillerParameter that cannot fill its blob (``fillers.fill``); the net names
    the layer and, with :meth:`locate`, the field holding the filler."""

    def __init__(self, filler, message):
        self.filler, self.message, self.field = filler, message, None
        super().__init__(message)

    def locate(self, layer_param):
        """Name the field of ``layer_param`` holding the filler (``convolution_param.weight_filler``)."""
        def find(msg, path):
            for field, value in msg.ListFields():
                if field.message_type is None or field.message_type.name == "BlobProto":
                    continue
                items = value if field.is_repeated else [value]
                for k, item in enumerate(items):
                    name = path + field.name + (f"[{k}]" if len(items) > 1 else "")
                    if field.message_type.name == "FillerParameter":
                        if item == self.filler:
                            return name
                    else:
                        found = find(item, name + ".")
                        if found:
                            return found
            return None
        self.field = find(layer_param, "")
        if self.field:
            self.args = (f"{self.field}: {self.message}",)
        return self


class MemoryLimitError(CaffeError, MemoryError):
    """A blob, or a net's blobs together, would need more memory than the limit
    (:mod:`pycaffe_lite.memory`), or NumPy / CuPy ran out (``reason``: their
    words).  ``layer`` and ``what`` (the blob) are filled in by whoever knows them
    (:meth:`name`)."""

    def __init__(self, nbytes, limit, source, shape=None, dtype=None, what=None, layer=None,
                 reason=None):
        self.nbytes, self.limit, self.source, self.reason = nbytes, limit, source, reason
        self.shape, self.dtype, self.what, self.layer = shape, dtype, what, layer
        super().__init__(self._message())

    def name(self, layer=None, what=None):
        """Fill in the layer (``"layer 'x' (type T)"``) and the blob where still unknown."""
        self.layer = self.layer or layer
        self.what = self.what or what
        self.args = (self._message(),)
        return self

    @staticmethod
    def size(nbytes):
        for unit, bits in (("EiB", 60), ("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20),
                           ("KiB", 10)):
            if nbytes >= 1 << bits:
                return f"{nbytes / (1 << bits):.3g} {unit}"
        return f"{nbytes} bytes"

    def _message(self):
        where = f"{self.layer}: " if self.layer else ""
        what = self.what or "a blob"
        if self.shape is not None:
            what += f" of shape {tuple(self.shape)}"
        if self.reason:
            return (f"{where}out of memory for {what} ({self.reason}); check the dims "
                    "(batch_size, num_output, input shape)")
        if self.nbytes >= 1 << 63:
            need = f"needs {self.nbytes} bytes, past the 2**63 NumPy can address"
        else:
            of = f", data and diff of {self.dtype}" if self.dtype is not None else ""
            need = f"needs {self.size(self.nbytes)} ({self.nbytes} bytes{of})"
            if self.limit is not None:
                need += (f", more than the memory limit of {self.size(self.limit)} "
                         f"({self.limit} bytes: {self.source})")
        return (f"{where}{what} {need}; check its dims (batch_size, num_output, input "
                "shape), or set PYCAFFE_LITE_MEMORY_LIMIT / pycaffe_lite.set_memory_limit()")
