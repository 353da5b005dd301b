"""The net executor: layers from the registry wired by blob names.

Construction follows Caffe's ``Net::Init``: filter the layers by the NetState
(phase, level, stages), insert Split layers where a blob feeds several layers,
create each layer and its top blobs, share parameters named alike, and work
out which layers and bottoms need a backward pass.
"""
import collections
import logging

import numpy

from .blob import Blob
from .errors import NetError, WeightsError
from .io import files
from .layer import TRAIN, create_layer
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


class Net:
    """A Caffe net: ``layers``, ``blobs`` and ``params`` by name, forward/backward.

    ``net_param``: a NetParameter or the path of a prototxt.  ``phase``: TRAIN
    or TEST.  ``xp``/``dtype`` choose where and how blobs are stored.
    """

    def __init__(self, net_param, phase=TRAIN, level=0, stages=(), weights=None,
                 xp=numpy, dtype=numpy.float32):
        self.source = net_param if isinstance(net_param, str) else "<NetParameter>"
        if isinstance(net_param, str):
            net_param = files.read_net(net_param)
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
        self.param = insert_splits(filter_net(net_param, state))
        self._build()
        if weights:
            self.copy_from(weights)

    # --- construction ------------------------------------------------------------
    def _build(self):
        self.layers, self.layer_names = [], []
        self.blobs = collections.OrderedDict()
        self.bottom_vecs, self.top_vecs = [], []
        self.layer_bottoms, self.layer_tops = [], []
        self.bottom_need_backward, self.layer_need_backward = [], []
        self.input_names = []
        self.learnable_params = []      # owner blobs, in net order
        self.param_specs = []           # (lr_mult, decay_mult) per learnable param
        self.param_owner = {}           # shared param name -> (layer index, param index)
        self._frozen_params = []        # per layer: param indices whose diff is not computed
        blob_need_backward = {}
        available = collections.OrderedDict()
        for i, lp in enumerate(self.param.layer):
            if not lp.name:
                lp.name = f"{lp.type.lower() or 'layer'}_{i}"
            layer = create_layer(lp, phase=self.phase, xp=self.xp, dtype=self.dtype)
            bottoms, need = [], []
            for j, name in enumerate(lp.bottom):
                if name not in self.blobs:
                    raise NetError(f"layer '{lp.name}' (type {lp.type}): unknown bottom blob "
                                   f"'{name}' (bottom index {j})")
                bottoms.append(self.blobs[name])
                # An explicit propagate_down overrides what the blob needs (as Caffe).
                if lp.propagate_down:
                    if len(lp.propagate_down) != len(lp.bottom):
                        raise NetError(f"layer '{lp.name}': propagate_down must be given once "
                                       f"per bottom ({len(lp.bottom)}), got "
                                       f"{len(lp.propagate_down)}")
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
                tops.append(self.blobs[name])
                available[name] = True
                if lp.type == "Input":
                    self.input_names.append(name)
            if layer.auto_top_blobs:
                needed = max(layer.min_tops or 0, layer.exact_tops or 0)
                # unnamed: not in net.blobs, not an output (Caffe's "(automatic)")
                tops += [Blob((), xp=self.xp, dtype=self.dtype)
                         for _ in range(needed - len(tops))]
            layer.set_up(bottoms, tops)
            layer_need = any(blob_need_backward[name] for name in lp.bottom)
            frozen = []
            for k, blob in enumerate(layer.blobs):
                spec = lp.param[k] if k < len(lp.param) else caffe_pb2.ParamSpec()
                learn = self._append_param(i, k, blob, spec, lp)
                layer_need |= learn
                if not learn:
                    frozen.append(k)
            if len(lp.param) > len(layer.blobs):
                raise NetError(f"layer '{lp.name}' (type {lp.type}): {len(lp.param)} param "
                               f"specs given, but the layer has {len(layer.blobs)} param blobs")
            for name in lp.top:
                blob_need_backward[name] = blob_need_backward.get(name, False) or layer_need
            self.layers.append(layer)
            self.layer_names.append(lp.name)
            self.bottom_vecs.append(bottoms)
            self.top_vecs.append(tops)
            self.layer_bottoms.append(list(lp.bottom))
            self.layer_tops.append(list(lp.top))
            self.bottom_need_backward.append(need)
            self.layer_need_backward.append(layer_need)
            self._frozen_params.append(frozen)
        self.output_names = sorted(available)  # Caffe keeps them in a std::set
        self._prune_backward(blob_need_backward)
        self.layer_dict = collections.OrderedDict(zip(self.layer_names, self.layers))
        self.params = collections.OrderedDict(
            (name, layer.blobs) for name, layer in zip(self.layer_names, self.layers)
            if layer.blobs)

    @property
    def blob_loss_weights(self):
        """Loss weight of every blob (a later in-place layer overrides, as in Caffe)."""
        weights = collections.OrderedDict((name, 0.0) for name in self.blobs)
        for layer, tops in zip(self.layers, self.layer_tops):
            for name, weight in zip(tops, layer.loss_weights):
                weights[name] = weight
        return weights

    def _append_param(self, layer_index, param_index, blob, spec, lp):
        """Register a param blob; share it if another layer named it first.

        Returns True when the net computes its gradient (lr_mult != 0).
        """
        lr_mult = spec.lr_mult
        if spec.name and spec.name in self.param_owner:
            owner_layer, owner_index = self.param_owner[spec.name]
            owner = self.layers[owner_layer].blobs[owner_index] if owner_layer < len(
                self.layers) else None
            if owner is None:
                raise NetError(f"layer '{lp.name}': param '{spec.name}' is shared within "
                               "one layer, which Caffe does not allow")
            strict = spec.share_mode == caffe_pb2.ParamSpec.STRICT
            if (strict and owner.shape != blob.shape) or owner.count != blob.count:
                raise NetError(f"layer '{lp.name}': cannot share param '{spec.name}': owner "
                               f"'{self.layer_names[owner_layer]}' has shape {owner.shape}, "
                               f"this layer needs {blob.shape}")
            blob.data = owner.data.reshape(blob.shape)
            blob.diff = owner.diff.reshape(blob.shape)
            return lr_mult != 0
        if spec.name:
            self.param_owner[spec.name] = (layer_index, param_index)
        self.learnable_params.append(blob)
        self.param_specs.append((lr_mult, spec.decay_mult))
        return lr_mult != 0

    def _prune_backward(self, blob_need_backward):
        """Skip backward where it cannot matter (the tail of Caffe's Net::Init).

        Walking from the last layer: a layer that feeds no loss does no backward;
        a layer none of whose tops is wanted by a consumer's backward skips it too.
        ``force_backward`` then turns every layer (and every bottom that allows
        it) back on, including the gradients of params with ``lr_mult: 0``.
        """
        under_loss, skip = set(), set()
        for i in reversed(range(len(self.layers))):
            tops = self.layer_tops[i]
            contributes = any(w != 0 for w in self.layers[i].loss_weights) or any(
                name in under_loss for name in tops)
            skip_down = all(name in skip for name in tops)
            if self.layer_need_backward[i] and skip_down:
                self.layer_need_backward[i] = False
                self.bottom_need_backward[i] = [False] * len(self.bottom_vecs[i])
            if not contributes:
                self.layer_need_backward[i] = False
            for j, name in enumerate(self.layer_bottoms[i]):
                if contributes:
                    under_loss.add(name)
                else:
                    self.bottom_need_backward[i][j] = False
                if not self.bottom_need_backward[i][j]:
                    skip.add(name)
        for layer, frozen in zip(self.layers, self._frozen_params):
            layer.param_propagate_down = [k not in frozen for k in range(len(layer.blobs))]
        if self.param.force_backward:
            for i, layer in enumerate(self.layers):
                layer.param_propagate_down = [True] * len(layer.blobs)
                self.layer_need_backward[i] = True
                self.bottom_need_backward[i] = [
                    need or layer.allow_force_backward(j)
                    for j, need in enumerate(self.bottom_need_backward[i])]
                self._frozen_params[i] = []

    # --- running -------------------------------------------------------------------
    def _index(self, name, default):
        if name is None:
            return default
        if name not in self.layer_dict:
            raise NetError(f"no layer named '{name}' in net '{self.name}'")
        return self.layer_names.index(name)

    def forward_range(self, start=0, end=None):
        """Run layers ``start..end`` (inclusive) forward; return the summed loss."""
        end = len(self.layers) - 1 if end is None else end
        loss = 0.0
        for i in range(start, end + 1):
            loss += self.layers[i].run_forward(self.bottom_vecs[i], self.top_vecs[i])
        return loss

    def backward_range(self, start=None, end=0):
        """Run layers ``start`` down to ``end`` backward (where needed)."""
        if self.inference_only:
            raise NetError(f"net '{self.name}' is inference-only: {self.inference_only}")
        start = len(self.layers) - 1 if start is None else start
        for i in range(start, end - 1, -1):
            if not self.layer_need_backward[i]:
                continue
            layer = self.layers[i]
            frozen = self._frozen_params[i]
            kept = [layer.blobs[k].diff.copy() for k in frozen]
            layer.backward(self.top_vecs[i], self.bottom_need_backward[i], self.bottom_vecs[i])
            for k, diff in zip(frozen, kept):
                layer.blobs[k].diff[...] = diff

    def forward_backward(self):
        loss = self.forward_range()
        self.backward_range()
        return loss

    def clear_param_diffs(self):
        for blob in self.learnable_params:
            blob.diff[...] = 0

    def close(self):
        """Stop background work (data prefetch threads) of every layer."""
        for layer in self.layers:
            if hasattr(layer, "close"):
                layer.close()

    def reshape_all(self):
        for layer, bottom, top in zip(self.layers, self.bottom_vecs, self.top_vecs):
            layer.reshape(bottom, top)

    # --- weights -------------------------------------------------------------------
    def copy_from(self, weights):
        """Copy trained params by layer name (Caffe's CopyTrainedLayersFrom).

        ``weights``: a path to a caffemodel or a NetParameter.  Layers absent from
        this net are ignored; shapes must match (legacy 4-D shapes compare as
        Caffe compares them).
        """
        source = weights if isinstance(weights, str) else "<NetParameter>"
        trained = files.read_weights(weights) if isinstance(weights, str) else weights
        for lp in trained.layer:
            layer = self.layer_dict.get(lp.name)
            if layer is None:
                if lp.blobs:
                    log.info("Ignoring source layer %s", lp.name)
                continue
            if not lp.blobs:
                continue
            if len(lp.blobs) != len(layer.blobs):
                raise WeightsError(f"{source}: layer '{lp.name}' holds {len(lp.blobs)} "
                                   f"param blob(s), the net's layer (type {layer.type}) has "
                                   f"{len(layer.blobs)}")
            for k, (proto, blob) in enumerate(zip(lp.blobs, layer.blobs)):
                shape = files.blob_proto_shape(proto)
                same = shape == blob.shape
                if not same and files.has_legacy_shape(proto):
                    same = files.legacy_shape(blob.shape) == shape
                if not same:
                    raise WeightsError(
                        f"{source}: cannot copy param {k} of layer '{lp.name}': shape "
                        f"mismatch; the weights file has {shape}, the net defines "
                        f"{blob.shape} (check num_output / kernel sizes in the prototxt)")
                values = files.blob_proto_to_array(proto, dtype=blob.dtype)
                blob.data[...] = self.xp.asarray(values.reshape(blob.shape))

    def to_proto(self, write_diff=False):
        """The net as a NetParameter with its params (Caffe's ToProto)."""
        out = caffe_pb2.NetParameter()
        out.name = self.name
        for layer in self.layers:
            lp = out.layer.add()
            lp.CopyFrom(layer.param)
            del lp.blobs[:]
            for blob in layer.blobs:
                from .backend import to_numpy
                files.array_to_blob_proto(to_numpy(blob.data),
                                          to_numpy(blob.diff) if write_diff else None,
                                          lp.blobs.add())
        return out

    def save(self, path, write_diff=False):
        """Write a binary caffemodel (atomically)."""
        files.write_binary_proto(path, self.to_proto(write_diff))
