"""The net executor: layers from the registry wired by blob names.

Construction follows Caffe's ``Net::Init``: filter the layers by the NetState
(phase, level, stages), insert Split layers where a blob feeds several layers,
create each layer and its top blobs, share parameters named alike, and work
out which layers and bottoms need a backward pass.  Each layer ends up in one
:class:`LayerRecord`: its blobs by name and by object and its backward flags.
"""
import collections
import dataclasses
import logging
import math

import numpy

from .backend import to_numpy
from .blob import Blob
from .errors import CaffeError, FillerError, MemoryLimitError, NetError, WeightsError
from .io import files, hdf5_weights
from .layer import TRAIN, Layer, create_layer
from .memory import Tally
from .net_log import log_backward, log_done, log_set_up, log_wiring
from .proto import caffe_pb2

log = logging.getLogger("pycaffe_lite")


# --- NetState filtering (Caffe's FilterNet / StateMeetsRule) ---------------------

def state_meets_rule(state, rule):
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(stage not in state.stage for stage in rule.stage):
        return False
    if any(stage in state.stage for stage in rule.not_stage):
        return False
    return True


def filter_net(net_param, state):
    """A copy of ``net_param`` holding only the layers active in ``state``."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    for layer in net_param.layer:
        if layer.include and layer.exclude:
            raise NetError(f"layer '{layer.name}': specify either include or exclude rules, "
                           "not both")
        if layer.include:
            active = any(state_meets_rule(state, r) for r in layer.include)
        else:
            active = not any(state_meets_rule(state, r) for r in layer.exclude)
        if active:
            out.layer.add().CopyFrom(layer)
    return out


# --- automatic Split layers (Caffe's InsertSplits) --------------------------------

def split_layer_name(layer_name, blob_name, top_index):
    return f"{blob_name}_{layer_name}_{top_index}_split"


def split_blob_name(layer_name, blob_name, top_index, split_index):
    return f"{blob_name}_{layer_name}_{top_index}_split_{split_index}"


def insert_splits(net_param):
    """A copy of ``net_param`` with a Split layer after every blob used twice."""
    last_top = {}           # blob name -> (layer index, top index) that wrote it last
    source = {}             # (layer, bottom index) -> (layer, top index)
    uses = collections.Counter()
    loss_weight = {}
    for i, layer in enumerate(net_param.layer):
        for j, name in enumerate(layer.bottom):
            if name not in last_top:
                raise NetError(f"layer '{layer.name}' (type {layer.type}): unknown bottom blob "
                               f"'{name}' (bottom index {j}); no earlier layer produces it")
            source[(i, j)] = last_top[name]
            uses[last_top[name]] += 1
        for j, name in enumerate(layer.top):
            last_top[name] = (i, j)
            weight = layer.loss_weight[j] if j < len(layer.loss_weight) else 0.0
            loss_weight[(i, j)] = weight
            if weight:
                uses[(i, j)] += 1
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    next_split = collections.Counter()
    for i, layer in enumerate(net_param.layer):
        new = out.layer.add()
        new.CopyFrom(layer)
        for j, name in enumerate(layer.bottom):
            src = source[(i, j)]
            if uses[src] > 1:
                producer = net_param.layer[src[0]].name
                new.bottom[j] = split_blob_name(producer, name, src[1], next_split[src])
                next_split[src] += 1
        for j, name in enumerate(layer.top):
            count = uses[(i, j)]
            if count > 1:
                split = out.layer.add(name=split_layer_name(layer.name, name, j), type="Split")
                split.bottom.append(name)
                for k in range(count):
                    split.top.append(split_blob_name(layer.name, name, j, k))
                    weight = loss_weight[(i, j)]
                    split.loss_weight.append(weight if weight and k == count - 1 else 0.0)
                if not loss_weight[(i, j)]:
                    del split.loss_weight[:]
    return out


def check_param_shapes(shapes, blobs, count_error, shape_error, fits=None):
    """Raise unless ``shapes`` holds one shape per param blob and each fits its blob.

    ``fits(k, shape, blob)`` decides (default: the same shape); the exception
    raised is ``count_error()`` or ``shape_error(k, shape, blob)``.
    """
    if len(shapes) != len(blobs):
        raise count_error()
    for k, (shape, blob) in enumerate(zip(shapes, blobs)):
        if not (fits(k, shape, blob) if fits else shape == blob.shape):
            raise shape_error(k, shape, blob)


# NumPy's ValueErrors for an array it cannot address.
_TOO_BIG = ("array is too big", "Maximum allowed dimension exceeded")


def _in_layer(error, layer, new_blob=None):
    """``error``, raised below ``layer`` (by a Blob, a filler, NumPy), made to name the
    layer; a memory error the blob too (``new_blob``: what an unnamed one is).  Any
    other ValueError is returned as it is."""
    where = f"layer '{layer.name}' (type {layer.type})"
    if isinstance(error, ValueError) and not str(error).startswith(_TOO_BIG):
        return error
    if not isinstance(error, CaffeError):   # NumPy's or CuPy's, for a buffer of the layer
        error = MemoryLimitError(None, None, None, what=new_blob or "a buffer",
                                 reason=str(error))
    if isinstance(error, MemoryLimitError):
        return error.name(where, new_blob)
    if isinstance(error, FillerError):
        error.locate(layer.param)
    if f"layer '{layer.name}'" not in str(error):
        error.args = (f"{where}: {error}",) + error.args[1:]
    return error


@dataclasses.dataclass
class LayerRecord:
    """One layer of a built net and its wiring.

    ``bottoms``/``tops`` are blob names, ``bottom_blobs``/``top_blobs`` the Blobs
    the layer runs on (an unnamed automatic top is in ``top_blobs`` only).
    ``need_backward``: the layer runs backward; ``bottom_need_backward[j]``: it
    fills bottom j's diff; ``frozen_params``: indices of the params whose diff
    backward leaves as it was (``lr_mult: 0``).
    """
    name: str
    layer: Layer
    bottoms: list
    tops: list
    bottom_blobs: list
    top_blobs: list
    need_backward: bool = False
    bottom_need_backward: list = dataclasses.field(default_factory=list)
    frozen_params: list = dataclasses.field(default_factory=list)

    def set_param_propagate_down(self):
        """Tell the layer which param gradients are wanted: those not frozen."""
        self.layer.param_propagate_down = [
            k not in self.frozen_params for k in range(len(self.layer.blobs))]


class Net:
    """A Caffe net: ``layers``, ``blobs`` and ``params`` by name, forward/backward.

    ``net_param``: a NetParameter or the path of a prototxt.  ``phase``: TRAIN
    or TEST.  ``xp``/``dtype`` choose where and how blobs are stored.
    ``records`` holds one :class:`LayerRecord` per layer, in execution order;
    ``layers``, ``layer_names``, ``layer_dict`` and ``params`` are views of it.
    ``allow_python_layers=False`` refuses a Python layer (naming it) instead of
    importing the module its prototxt names: for nets from untrusted sources;
    ``None`` (default) keeps the enclosing ``python_layers_allowed`` setting, which
    allows them, as Caffe does.
    """

    def __init__(self, net_param, phase=TRAIN, level=0, stages=(), weights=None,
                 xp=numpy, dtype=numpy.float32, allow_python_layers=None):
        self.source = net_param if isinstance(net_param, str) else "<NetParameter>"
        if isinstance(net_param, str):
            net_param = files.read_net(net_param)
        else:                       # read_net checks a file's: NUL bytes in path fields
            files.check_path_fields(net_param, self.source)
        if not -2 ** 31 <= level < 2 ** 31:     # NetState.level is an int32
            raise NetError(f"level {level} is out of range: an int32 is -2147483648 to "
                           "2147483647")
        state = caffe_pb2.NetState(phase=phase, level=level, stage=list(stages))
        # A NetParameter's own state (set by solvers) adds to the defaults.
        if net_param.HasField("state"):
            given = net_param.state
            state.phase = given.phase if given.HasField("phase") else phase
            state.level = given.level if given.HasField("level") else level
            state.stage.extend(s for s in given.stage if s not in state.stage)
        self.phase = state.phase
        self.name = net_param.name
        self.xp, self.dtype = xp, numpy.dtype(dtype)
        self.inference_only = None  # a reason, once an optimisation removed backward
        self.hooks = {when: [] for when in ("before_forward", "after_forward",
                                            "before_backward", "after_backward")}
        self.param = insert_splits(filter_net(net_param, state))
        from .layers.python_layer import python_layers_allowed  # lazy: layers load on use
        with python_layers_allowed(allow_python_layers):
            self._build()
        if weights:
            self.copy_from(weights)

    # --- construction ------------------------------------------------------------
    def _build(self):
        self.records = []
        self.blobs = collections.OrderedDict()
        self.input_names = []
        self.learnable_params = []      # owner blobs, in net order
        self.param_specs = []           # (lr_mult, decay_mult) per learnable param
        self.param_owner = {}           # shared param name -> (layer index, param index)
        blob_need_backward = {}
        available = collections.OrderedDict()
        memory = 0                      # top elements so far, for Caffe's setup log
        tally = Tally(self.xp)          # bytes of all blobs so far, for the memory guard
        for i, lp in enumerate(self.param.layer):
            if not lp.name:
                lp.name = f"{lp.type.lower() or 'layer'}_{i}"
            try:
                layer = create_layer(lp, phase=self.phase, xp=self.xp, dtype=self.dtype)
            except NetError as e:   # an unknown type: say where it was asked for
                raise NetError(f"{self.source}: layer '{lp.name}': {e}") from None
            if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
                raise NetError(f"layer '{lp.name}' (type {lp.type}): propagate_down must be "
                               f"given once per bottom ({len(lp.bottom)}), got "
                               f"{len(lp.propagate_down)}")
            if not all(math.isfinite(w) for w in lp.loss_weight):
                raise NetError(f"layer '{lp.name}' (type {lp.type}): loss_weight must be "
                               f"finite, got {list(lp.loss_weight)}")
            bottoms, need = [], []
            for j, name in enumerate(lp.bottom):
                if name not in self.blobs:
                    raise NetError(f"layer '{lp.name}' (type {lp.type}): unknown bottom blob "
                                   f"'{name}' (bottom index {j})")
                bottoms.append(self.blobs[name])
                # An explicit propagate_down overrides what the blob needs (as Caffe).
                if lp.propagate_down:
                    need.append(bool(lp.propagate_down[j]))
                else:
                    need.append(blob_need_backward[name])
                available.pop(name, None)
            tops = []
            for j, name in enumerate(lp.top):
                in_place = j < len(lp.bottom) and lp.bottom[j] == name
                if name in self.blobs and not in_place:
                    raise NetError(f"layer '{lp.name}' (type {lp.type}): top blob '{name}' is "
                                   "already produced by an earlier layer (only in-place layers "
                                   "may write a blob twice)")
                if not in_place:
                    self.blobs[name] = Blob((), xp=self.xp, dtype=self.dtype)
                    self.blobs[name].name = name
                tops.append(self.blobs[name])
                available[name] = True
                if lp.type == "Input":
                    self.input_names.append(name)
            if layer.auto_top_blobs:
                needed = max(layer.min_tops or 0, layer.exact_tops or 0)
                # unnamed: not in net.blobs, not an output (Caffe's "(automatic)")
                tops += [Blob((), xp=self.xp, dtype=self.dtype)
                         for _ in range(needed - len(tops))]
            log_wiring(lp, len(tops) - len(lp.top))
            in_place = {j: bottoms[j].shape for j in range(len(bottoms))
                        if j < len(tops) and tops[j] is bottoms[j]}
            try:
                layer.set_up(bottoms, tops)
                tally.add(tops + list(layer.blobs))
            except (CaffeError, MemoryError, ValueError) as error:
                raise _in_layer(error, layer, f"param blob {len(layer.blobs)}")
            for j, shape in in_place.items():
                if tops[j].shape != shape:
                    raise NetError(f"layer '{lp.name}' (type {lp.type}) cannot run in place: "
                                   f"its top '{lp.top[j]}' has shape {tops[j].shape}, its bottom "
                                   f"had {shape}; give the top a name of its own")
            record = LayerRecord(lp.name, layer, list(lp.bottom), list(lp.top), bottoms, tops,
                                 bottom_need_backward=need)
            memory = log_set_up(record, memory, self.dtype.itemsize)
            self.records.append(record)
            for k in range(len(layer.blobs)):
                self._add_param(i, k, lp.param[k] if k < len(lp.param) else caffe_pb2.ParamSpec())
            if len(lp.param) > len(layer.blobs):
                raise NetError(f"layer '{lp.name}' (type {lp.type}): {len(lp.param)} param "
                               f"specs given, but the layer has {len(layer.blobs)} param blobs")
            learns = len(record.frozen_params) < len(layer.blobs)
            layer_need = learns or any(blob_need_backward[name] for name in lp.bottom)
            record.need_backward = layer_need
            for name in lp.top:
                blob_need_backward[name] = blob_need_backward.get(name, False) or layer_need
        self.output_names = sorted(available)  # Caffe keeps them in a std::set
        self._prune_backward()
        log_done(self.output_names)

    def _add_param(self, i, k, spec):
        """Register param ``k`` of layer ``i``; share it if another layer named it first.

        Its diff is frozen when ``spec.lr_mult`` is 0.  An integer blob (Q-CNN's
        codeword indices) is a fixed table, never a learnable param.
        """
        record = self.records[i]
        blob = record.layer.blobs[k]
        if blob.dtype.kind in "iu":
            record.frozen_params.append(k)
            return
        if spec.name and spec.name in self.param_owner:
            owner_layer, owner_index = self.param_owner[spec.name]
            if owner_layer == i:
                raise NetError(f"layer '{record.name}': param '{spec.name}' is shared within "
                               "one layer, which Caffe does not allow")
            owner = self.records[owner_layer].layer.blobs[owner_index]
            strict = spec.share_mode == caffe_pb2.ParamSpec.STRICT
            if (strict and owner.shape != blob.shape) or owner.count != blob.count:
                raise NetError(f"layer '{record.name}': cannot share param '{spec.name}': owner "
                               f"'{self.records[owner_layer].name}' has shape {owner.shape}, "
                               f"this layer needs {blob.shape}")
            blob.data = owner.data.reshape(blob.shape)
            blob.diff = owner.diff.reshape(blob.shape)
        else:
            if spec.name:
                self.param_owner[spec.name] = (i, k)
            self.learnable_params.append(blob)
            self.param_specs.append((spec.lr_mult, spec.decay_mult))
        if spec.lr_mult == 0:
            record.frozen_params.append(k)

    def _prune_backward(self):
        """Skip backward where it cannot matter (the tail of Caffe's Net::Init).

        Walking from the last layer: a layer that feeds no loss does no backward;
        a layer none of whose tops is wanted by a consumer's backward skips it too.
        ``force_backward`` then turns every layer (and every bottom that allows
        it) back on, including the gradients of params with ``lr_mult: 0``.
        """
        under_loss, skip = set(), set()
        for record in reversed(self.records):
            contributes = any(w != 0 for w in record.layer.loss_weights) or any(
                name in under_loss for name in record.tops)
            if record.need_backward and all(name in skip for name in record.tops):
                record.need_backward = False
                record.bottom_need_backward = [False] * len(record.bottoms)
            if not contributes:
                record.need_backward = False
            log_backward(record)
            for j, name in enumerate(record.bottoms):
                if contributes:
                    under_loss.add(name)
                else:
                    record.bottom_need_backward[j] = False
                if not record.bottom_need_backward[j]:
                    skip.add(name)
        for record in self.records:
            if self.param.force_backward:
                record.need_backward = True
                record.bottom_need_backward = [
                    need or record.layer.allow_force_backward(j)
                    for j, need in enumerate(record.bottom_need_backward)]
                record.frozen_params = []
            record.set_param_propagate_down()
            wanted = any(record.bottom_need_backward) or \
                len(record.frozen_params) < len(record.layer.blobs)
            if record.need_backward and wanted and record.layer.inference_only:
                raise NetError(
                    f"layer '{record.name}' (type {record.layer.type}) is inference-only "
                    f"({record.layer.inference_only}), but this net asks it for gradients: "
                    "give it propagate_down: false for each bottom (the layers below it "
                    "then do not learn through it) and no param with a non-zero lr_mult")

    # --- views and edits of the layer records ------------------------------------------
    @property
    def layers(self):
        return [record.layer for record in self.records]

    @property
    def layer_names(self):
        return [record.name for record in self.records]

    @property
    def layer_dict(self):
        return collections.OrderedDict((record.name, record.layer) for record in self.records)

    @property
    def params(self):
        """Param blobs by layer name, for the layers that have any."""
        return collections.OrderedDict((record.name, record.layer.blobs)
                                       for record in self.records if record.layer.blobs)

    @property
    def blob_loss_weights(self):
        """Loss weight of every blob (a later in-place layer overrides, as in Caffe)."""
        weights = collections.OrderedDict((name, 0.0) for name in self.blobs)
        for record in self.records:
            for name, weight in zip(record.tops, record.layer.loss_weights):
                weights[name] = weight
        return weights

    def param_frozen(self, i, k):
        """Whether backward leaves the diff of param ``k`` of layer ``i`` as it was."""
        return k in self.records[i].frozen_params

    def freeze_param(self, i, k):
        """Stop computing the gradient of param ``k`` of layer ``i`` (its diff is kept)."""
        record = self.records[i]
        if k not in record.frozen_params:
            record.frozen_params.append(k)
        record.set_param_propagate_down()

    def add_param(self, i, blob, spec=None):
        """Give layer ``i`` one more param ``blob``, learned as ``spec`` (a ParamSpec) says."""
        layer = self.records[i].layer
        layer.blobs.append(blob)
        self._add_param(i, len(layer.blobs) - 1, spec or caffe_pb2.ParamSpec())
        self.records[i].set_param_propagate_down()

    def remove_layers(self, indices):
        """Take the layers at ``indices`` out of the net, with their learnable params.

        For optimisations that made them redundant: their blobs stay in ``blobs``.
        """
        gone = set(indices)
        dropped = {id(blob) for i in gone for blob in self.records[i].layer.blobs}
        keep = [i for i in range(len(self.records)) if i not in gone]
        self.records = [self.records[i] for i in keep]
        pairs = [(blob, spec) for blob, spec in zip(self.learnable_params, self.param_specs)
                 if id(blob) not in dropped]
        self.learnable_params = [blob for blob, _ in pairs]
        self.param_specs = [spec for _, spec in pairs]
        self.param_owner = {name: (keep.index(i), k) for name, (i, k) in self.param_owner.items()
                            if i in keep}

    # --- running -------------------------------------------------------------------
    def _index(self, name, default):
        if name is None:
            return default
        for i, record in enumerate(self.records):
            if record.name == name:
                return i
        raise NetError(f"no layer named '{name}' in net '{self.name}'")

    def set_inference_only(self, reason):
        """Refuse backward from now on (saying ``reason``); in-place layers then stop
        keeping copies of their inputs."""
        self.inference_only = reason
        for record in self.records:
            record.layer.keeps_inputs = False

    def forward_range(self, start=0, end=None):
        """Run layers ``start..end`` (inclusive) forward; return the summed loss."""
        end = len(self.records) - 1 if end is None else end
        loss = 0.0
        for i in range(start, end + 1):
            record = self.records[i]
            self._run_hooks("before_forward", i)
            try:
                loss += record.layer.run_forward(record.bottom_blobs, record.top_blobs)
            except (CaffeError, MemoryError, ValueError) as error:
                raise _in_layer(error, record.layer)
            self._run_hooks("after_forward", i)
        return loss

    def backward_range(self, start=None, end=0):
        """Run layers ``start`` down to ``end`` backward (where needed)."""
        if self.inference_only:
            raise NetError(f"net '{self.name}' is inference-only: {self.inference_only}")
        start = len(self.records) - 1 if start is None else start
        for i in range(start, end - 1, -1):
            record = self.records[i]
            self._run_hooks("before_backward", i)
            if record.need_backward:
                blobs = record.layer.blobs
                kept = [blobs[k].diff.copy() for k in record.frozen_params]
                try:
                    record.layer.backward(record.top_blobs, record.bottom_need_backward,
                                          record.bottom_blobs)
                except (CaffeError, MemoryError, ValueError) as error:
                    raise _in_layer(error, record.layer)
                for k, diff in zip(record.frozen_params, kept):
                    blobs[k].diff[...] = diff
            self._run_hooks("after_backward", i)

    def add_hook(self, when, callback):
        """Call ``callback(i)`` before or after layer i's forward or backward
        (``when``: before_forward, after_forward, before_backward, after_backward),
        as Caffe's Net callbacks: every layer in the range, in order."""
        if when not in self.hooks:
            raise NetError(f"unknown hook '{when}' (expected one of {', '.join(self.hooks)})")
        self.hooks[when].append(callback)

    def _run_hooks(self, when, i):
        for callback in self.hooks[when]:
            callback(i)

    def forward_backward(self):
        loss = self.forward_range()
        self.backward_range()
        return loss

    def clear_param_diffs(self):
        for blob in self.learnable_params:
            blob.diff[...] = 0

    def close(self):
        """Stop background work (data prefetch threads) of every layer."""
        for record in self.records:
            if hasattr(record.layer, "close"):
                record.layer.close()

    def reshape_all(self):
        for record in self.records:
            try:
                record.layer.reshape(record.bottom_blobs, record.top_blobs)
            except (CaffeError, MemoryError, ValueError) as error:
                raise _in_layer(error, record.layer)

    # --- weights -------------------------------------------------------------------
    def copy_from(self, weights):
        """Copy trained params by layer name (Caffe's CopyTrainedLayersFrom).

        ``weights``: a path to a caffemodel (or Caffe's HDF5 weights) or a NetParameter.  Layers absent from
        this net are ignored; shapes must match (legacy 4-D shapes compare as
        Caffe compares them).
        """
        if isinstance(weights, str) and hdf5_weights.is_hdf5(weights):
            return hdf5_weights.load(self, weights)
        source = weights if isinstance(weights, str) else "<NetParameter>"
        trained = files.read_weights(weights) if isinstance(weights, str) else weights
        layers = self.layer_dict
        for lp in trained.layer:
            layer = layers.get(lp.name)
            if layer is None:
                if lp.blobs:
                    log.info("Ignoring source layer %s", lp.name)
                continue
            if not lp.blobs:
                continue
            check_param_shapes(
                [files.blob_proto_shape(proto) for proto in lp.blobs], layer.blobs,
                lambda: WeightsError(
                    f"{source}: layer '{lp.name}' holds {len(lp.blobs)} param blob(s), the "
                    f"net's layer (type {layer.type}) has {len(layer.blobs)}"),
                lambda k, shape, blob: WeightsError(
                    f"{source}: cannot copy param {k} of layer '{lp.name}': shape mismatch; "
                    f"the weights file has {shape}, the net defines {blob.shape} (check "
                    "num_output / kernel sizes in the prototxt)"),
                fits=lambda k, shape, blob: shape == blob.shape or (
                    files.has_legacy_shape(lp.blobs[k])
                    and files.legacy_shape(blob.shape) == shape))
            for k, (proto, blob) in enumerate(zip(lp.blobs, layer.blobs)):
                values = files.weights_array(proto, blob.dtype,
                                             f"{source}: layer '{lp.name}' param blob {k}")
                blob.data[...] = self.xp.asarray(values.reshape(blob.shape))

    def to_proto(self, write_diff=False):
        """The net as a NetParameter with its params (Caffe's ToProto)."""
        out = caffe_pb2.NetParameter()
        out.name = self.name
        for record in self.records:
            lp = out.layer.add()
            lp.CopyFrom(record.layer.param)
            del lp.blobs[:]
            for blob in record.layer.blobs:
                diff = write_diff and blob.dtype.kind == "f"
                files.array_to_blob_proto(to_numpy(blob.data), to_numpy(blob.diff) if diff else None,
                                          lp.blobs.add())
        return out

    def save(self, path, write_diff=False):
        """Write a binary caffemodel (atomically)."""
        files.write_binary_proto(path, self.to_proto(write_diff))
