"""pycaffe's Python interface (``import caffe``) on top of the core Net.

``caffe.Net(model, weights, caffe.TEST)`` and ``caffe.Net(model, caffe.TEST,
weights=...)`` both work; ``forward``/``backward`` take and return blobs by
name as pycaffe's do.
"""
import collections

import numpy

from . import backend
from .errors import CaffeError
from .layer import TEST, TRAIN
from .net import Net as CoreNet

_mode = {"gpu": False, "device": 0}


def set_mode_cpu():
    _mode["gpu"] = False


def set_mode_gpu():
    """GPU mode.  Without a usable GPU this behaves as a CPU-only Caffe build: the
    first net or solver made afterwards fails, saying why."""
    _mode["gpu"] = True


def set_device(device_id):
    _mode["device"] = int(device_id)
    if _mode["gpu"] and backend.gpu_available():   # else the first net says why
        backend.cupy.cuda.Device(int(device_id)).use()


def array_module():
    """Where new nets allocate their blobs under the current mode."""
    if not _mode["gpu"]:
        return numpy
    if not backend.gpu_available():
        raise CaffeError("caffe.set_mode_gpu() was called, but there is no usable GPU "
                         "(CuPy missing or no CUDA device): call caffe.set_mode_cpu(), or "
                         "install the 'gpu' extra on a machine with a CUDA GPU")
    return backend.cupy


class Net(CoreNet):
    """A net with pycaffe's constructor and methods."""

    def __init__(self, model, *args, weights=None, phase=None, level=0, stages=(), xp=None,
                 allow_python_layers=None):
        """``allow_python_layers=False``: a Python layer is refused, naming it, instead of
        importing the module the prototxt names (for untrusted nets; see
        :class:`pycaffe_lite.net.Net`)."""
        args = list(args)
        if args and isinstance(args[0], str):      # Net(model, weights, phase)
            weights = args.pop(0)
        if args:
            phase = args.pop(0)
        if args or phase not in (TRAIN, TEST):
            raise CaffeError("use caffe.Net(model, phase[, weights=...]) or "
                             "caffe.Net(model, weights, phase) with phase caffe.TRAIN or "
                             "caffe.TEST")
        super().__init__(model, phase=phase, level=level, stages=stages, weights=weights,
                         xp=xp if xp is not None else array_module(),
                         allow_python_layers=allow_python_layers)

    # --- names ----------------------------------------------------------------
    @property
    def inputs(self):
        return list(self.input_names)

    @property
    def outputs(self):
        return list(self.output_names)

    @property
    def _layer_names(self):
        return self.layer_names

    @property
    def top_names(self):
        return collections.OrderedDict((r.name, list(r.tops)) for r in self.records)

    @property
    def bottom_names(self):
        return collections.OrderedDict((r.name, list(r.bottoms)) for r in self.records)

    # --- running -----------------------------------------------------------------
    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """Set inputs from ``kwargs``, run forward, return the output blobs."""
        start_i = self._index(start, 0)
        end_i = self._index(end, len(self.records) - 1)
        outputs = set(self.records[end_i].tops if end is not None else self.outputs)
        outputs.update(blobs or [])
        for name, value in kwargs.items():
            if name not in self.input_names:
                raise CaffeError(f"forward(): '{name}' is not an input of the net "
                                 f"(inputs: {', '.join(self.input_names) or 'none'})")
            self._set(self.blobs[name], "data", name, value)
        self.forward_range(start_i, end_i)
        return {name: self.blobs[name].data for name in outputs}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """Set output diffs from ``kwargs``, run backward, return the input diffs."""
        start_i = self._index(start, len(self.records) - 1)
        end_i = self._index(end, 0)
        wanted = set(self.records[end_i].bottoms if end is not None else self.inputs)
        wanted.update(diffs or [])
        for name, value in kwargs.items():
            if name not in self.output_names:
                raise CaffeError(f"backward(): '{name}' is not an output of the net "
                                 f"(outputs: {', '.join(self.output_names)})")
            self._set(self.blobs[name], "diff", name, value)
        self.backward_range(start_i, end_i)
        return {name: self.blobs[name].diff for name in wanted}

    def _set(self, blob, field, name, value):
        value = self.xp.asarray(value)
        if value.shape != blob.shape:
            if value.ndim and blob.num_axes and value.shape[0] != blob.shape[0]:
                raise CaffeError(f"blob '{name}': got a batch of {value.shape[0]}, the net "
                                 f"expects {blob.shape[0]} (shape {blob.shape}); reshape the "
                                 "blob and call net.reshape() first")
            raise CaffeError(f"blob '{name}': got shape {value.shape}, expected {blob.shape}")
        getattr(blob, field)[...] = value

    def forward_all(self, blobs=None, **kwargs):
        """Forward whole arrays of inputs batch by batch; concatenated outputs."""
        outputs = collections.defaultdict(list)
        total = len(next(iter(kwargs.values()))) if kwargs else 0
        for chunk in (self._batch(kwargs) if kwargs else [{}]):
            for name, value in self.forward(blobs=blobs, **chunk).items():
                outputs[name].append(backend.to_numpy(value).copy())
        return _gather(outputs, total)

    def set_input_arrays(self, data, labels):
        """Feed a MemoryData first layer (pycaffe's ``Net.set_input_arrays``)."""
        first = self.layers[0] if self.layers else None
        if first is None or first.type != "MemoryData":
            raise CaffeError("set_input_arrays needs a MemoryData layer as the net's first "
                             "layer")
        first.set_input_arrays(data, labels)

    def reshape(self):
        self.reshape_all()

    # --- pycaffe's lower-level names (_caffe.cpp) ----------------------------------
    @property
    def _blob_names(self):
        return list(self.blobs)

    @property
    def _blobs(self):
        return list(self.blobs.values())

    def _blob_ids(self, names):
        """Indices into ``_blobs`` of the blobs ``names``."""
        index = {name: i for i, name in enumerate(self.blobs)}
        return [index[name] for name in names]

    @property
    def _inputs(self):
        return self._blob_ids(self.input_names)

    @property
    def _outputs(self):
        return self._blob_ids(self.output_names)

    def _top_ids(self, i):
        return self._blob_ids(self.records[i].tops)

    def _bottom_ids(self, i):
        return self._blob_ids(self.records[i].bottoms)

    def _forward(self, start, end):
        return self.forward_range(start, end)

    def _backward(self, start, end):
        self.backward_range(start, end)

    def _set_input_arrays(self, data, labels):
        self.set_input_arrays(data, labels)

    def _batch(self, blobs):
        """``blobs`` (name -> array of N items) in batches of the net's batch size,
        the last one padded with zeros."""
        total = len(next(iter(blobs.values())))
        batch = next(iter(self.blobs.values())).shape[0]
        for start in range(0, total, batch):
            chunk = {}
            for name, values in blobs.items():
                part = numpy.asarray(values[start:start + batch])
                pad = batch - len(part)
                if pad:
                    part = numpy.concatenate([part, numpy.zeros((pad,) + part.shape[1:],
                                                                part.dtype)])
                chunk[name] = part
            yield chunk

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """Forward and backward whole arrays batch by batch (pycaffe's
        ``forward_backward_all``): ``(outputs, input diffs)``, padding trimmed."""
        inputs = {name: kwargs[name] for name in self.inputs if name in kwargs}
        out_diffs = {name: kwargs[name] for name in self.outputs if name in kwargs}
        total = len(next(iter(kwargs.values()))) if kwargs else 0
        outs, grads = collections.defaultdict(list), collections.defaultdict(list)
        forward_batches = self._batch(inputs) if inputs else iter([{}])
        backward_batches = self._batch(out_diffs) if out_diffs else iter(lambda: {}, None)
        for fb, bb in zip(forward_batches, backward_batches):
            for name, value in self.forward(blobs=blobs, **fb).items():
                outs[name].append(backend.to_numpy(value).copy())
            for name, value in self.backward(diffs=diffs, **bb).items():
                grads[name].append(backend.to_numpy(value).copy())
        return _gather(outs, total), _gather(grads, total)

    # --- Caffe's Net callbacks: f(layer index) around each layer's pass ----------------
    def before_forward(self, callback):
        self.add_hook("before_forward", callback)

    def after_forward(self, callback):
        self.add_hook("after_forward", callback)

    def before_backward(self, callback):
        self.add_hook("before_backward", callback)

    def after_backward(self, callback):
        self.add_hook("after_backward", callback)

    # --- sharing and HDF5 weights ---------------------------------------------
    def share_with(self, other):
        """Use ``other``'s param arrays, layer by name (Caffe's ShareTrainedLayersWith)."""
        from .solvers.solver import share_trained_layers
        share_trained_layers(self, other)

    def save_hdf5(self, filename, write_diff=False):
        """Params (and diffs) as Caffe's ``Net::ToHDF5`` writes them."""
        from .io import hdf5_weights
        hdf5_weights.save(self, filename, write_diff)

    def load_hdf5(self, filename):
        """Params from Caffe's HDF5 weights (``CopyTrainedLayersFromHDF5``)."""
        from .io import hdf5_weights
        hdf5_weights.load(self, filename)


def _gather(per_batch, total):
    """Join each blob's per-batch arrays along the batch axis, the padding cut off
    (``total`` items; 0: keep all). A blob without a batch axis (a loss) gives one value
    per batch, stacked (pycaffe's own forward_all cannot iterate such a blob)."""
    out = {}
    for name, arrays in per_batch.items():
        if arrays[0].ndim == 0:
            out[name] = numpy.stack(arrays)
        else:
            joined = numpy.concatenate(arrays)
            out[name] = joined[:total] if total else joined
    return out
