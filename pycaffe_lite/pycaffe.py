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
    if not backend.gpu_available():
        raise CaffeError("set_mode_gpu: no usable GPU (CuPy missing or no CUDA device); "
                         "install the 'gpu' extra on a machine with a CUDA GPU")
    _mode["gpu"] = True


def set_device(device_id):
    _mode["device"] = int(device_id)
    if _mode["gpu"]:
        backend.cupy.cuda.Device(int(device_id)).use()


def array_module():
    """Where new nets allocate their blobs under the current mode."""
    return backend.cupy if _mode["gpu"] else numpy


class Net(CoreNet):
    """A net with pycaffe's constructor and methods."""

    def __init__(self, model, *args, weights=None, phase=None, level=0, stages=(), xp=None):
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
                         xp=xp if xp is not None else array_module())

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
        names = list(kwargs)
        total = len(kwargs[names[0]]) if names else 0
        batch = self.blobs[names[0]].shape[0] if names else 1
        for start in range(0, max(total, 1), batch):
            chunk = {}
            for name in names:
                part = numpy.asarray(kwargs[name][start:start + batch])
                pad = batch - len(part)
                if pad:
                    part = numpy.concatenate([part, numpy.zeros((pad,) + part.shape[1:],
                                                                part.dtype)])
                chunk[name] = part
            out = self.forward(blobs=blobs, **chunk)
            for name, value in out.items():
                outputs[name].append(backend.to_numpy(value).copy())
        return {name: numpy.concatenate(v)[:total] if total else numpy.concatenate(v)
                for name, v in outputs.items()}

    def set_input_arrays(self, data, labels):
        """Feed a MemoryData first layer (pycaffe's ``Net.set_input_arrays``)."""
        first = self.layers[0] if self.layers else None
        if first is None or first.type != "MemoryData":
            raise CaffeError("set_input_arrays needs a MemoryData layer as the net's first "
                             "layer")
        first.set_input_arrays(data, labels)

    def reshape(self):
        self.reshape_all()

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
