"""In-memory upgrade of old Caffe files to the current (V2) format.

Caffe upgrades every net it reads (``src/caffe/util/upgrade_proto.cpp``,
``UpgradeNetAsNeeded``); so do we, in the same order and with the same rules:

1. **V0 -> V1** (``layers { layer { type: "conv" ... } }``): "padding" layers
   are folded into the conv / pool layer that reads them
   (``UpgradeV0PaddingLayers``); each V0 field moves to the parameter message
   of its layer type (``UpgradeV0LayerParameter``); type strings become V1
   enums (``UpgradeV0LayerType``).
2. **Data transformation**: the ``scale`` / ``mean_file`` / ``crop_size`` /
   ``mirror`` of V1 Data, ImageData and WindowData layers move into
   ``transform_param`` (``UpgradeNetDataTransformation``).
3. **V1 -> V2** (``layers { type: CONVOLUTION }``): enum types become strings,
   ``param`` / ``blob_share_mode`` / ``blobs_lr`` / ``weight_decay`` become
   ``ParamSpec`` s, every ``*_param`` is copied (``UpgradeV1LayerParameter``).
4. **Inputs**: top-level ``input`` + ``input_shape`` / ``input_dim`` become an
   Input layer; in a caffemodel, bare ``input`` names are dropped
   (``UpgradeNetInput``).
5. **BatchNorm** layers that declare three ParamSpecs get ``lr_mult`` and
   ``decay_mult`` 0 (``UpgradeNetBatchNorm``).

Solvers: the ``solver_type`` enum becomes the ``type`` string
(``UpgradeSolverType``).  Blob protos are never rewritten: their legacy
num/channels/height/width shapes are read as Caffe's ``Blob::FromProto`` reads
them (:func:`pycaffe_lite.io.files.blob_proto_shape`).

Where Caffe gives up (``LOG(FATAL)``) we raise :class:`ParseError` naming the
file and the layer.  Where Caffe logs an error and goes on (a V0 field that
its layer type has no place for), we log the same error, naming the layer,
and go on; the upgrade tools (:mod:`pycaffe_lite.tools.upgrade_proto`) then
exit with status 1, as Caffe's do.  This module converts messages only;
:mod:`pycaffe_lite.io.files` reads and writes the files, and imports this
module, never the reverse.
"""
import collections
import logging

from google.protobuf import unknown_fields

from ..errors import ParseError
from ..proto import caffe_pb2

log = logging.getLogger("pycaffe_lite")

V1 = caffe_pb2.V1LayerParameter

# UpgradeV0LayerType: V0 type strings -> V1 enums.
V0_LAYER_TYPES = {
    "accuracy": V1.ACCURACY, "bnll": V1.BNLL, "concat": V1.CONCAT, "conv": V1.CONVOLUTION,
    "data": V1.DATA, "dropout": V1.DROPOUT, "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN, "hdf5_data": V1.HDF5_DATA, "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL, "images": V1.IMAGE_DATA, "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT, "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS, "pool": V1.POOLING,
    "relu": V1.RELU, "sigmoid": V1.SIGMOID, "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS, "split": V1.SPLIT, "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

# UpgradeV1LayerType: V1 enums -> V2 type strings.
V1_LAYER_TYPES = {
    V1.NONE: "", V1.ABSVAL: "AbsVal", V1.ACCURACY: "Accuracy", V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL", V1.CONCAT: "Concat", V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution", V1.DECONVOLUTION: "Deconvolution", V1.DATA: "Data",
    V1.DROPOUT: "Dropout", V1.DUMMY_DATA: "DummyData", V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise", V1.EXP: "Exp", V1.FLATTEN: "Flatten", V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output", V1.HINGE_LOSS: "HingeLoss", V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData", V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct", V1.LRN: "LRN", V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss", V1.MVN: "MVN",
    V1.POOLING: "Pooling", V1.POWER: "Power", V1.RELU: "ReLU", V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax", V1.SOFTMAX_LOSS: "SoftmaxWithLoss", V1.SPLIT: "Split",
    V1.SLICE: "Slice", V1.TANH: "TanH", V1.WINDOW_DATA: "WindowData",
    V1.THRESHOLD: "Threshold",
}

# UpgradeV0LayerParameter: V0 field -> {V0 type: (V1 parameter message, its field)}.
# A field given for a type not listed here has no place in V1: Caffe logs
# "Unknown parameter <field> for layer type <type>" and drops it.
_CONV, _IP, _POOL = "convolution_param", "inner_product_param", "pooling_param"
_SOURCES = {"data": "data_param", "hdf5_data": "hdf5_data_param",
            "images": "image_data_param", "window_data": "window_data_param"}
V0_FIELDS = {
    "num_output": {"conv": (_CONV, "num_output"), "innerproduct": (_IP, "num_output")},
    "biasterm": {"conv": (_CONV, "bias_term"), "innerproduct": (_IP, "bias_term")},
    "weight_filler": {"conv": (_CONV, "weight_filler"),
                      "innerproduct": (_IP, "weight_filler")},
    "bias_filler": {"conv": (_CONV, "bias_filler"), "innerproduct": (_IP, "bias_filler")},
    "pad": {"conv": (_CONV, "pad"), "pool": (_POOL, "pad")},
    "kernelsize": {"conv": (_CONV, "kernel_size"), "pool": (_POOL, "kernel_size")},
    "group": {"conv": (_CONV, "group")},
    "stride": {"conv": (_CONV, "stride"), "pool": (_POOL, "stride")},
    "pool": {"pool": (_POOL, "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": dict({t: (p, "source") for t, p in _SOURCES.items()},
                   infogain_loss=("infogain_loss_param", "source")),
    "batchsize": {t: (p, "batch_size") for t, p in _SOURCES.items()},
    "rand_skip": {"data": ("data_param", "rand_skip"),
                  "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None)},
}
# V0 fields that go to transform_param whatever the layer type.
V0_TRANSFORM_FIELDS = {"scale": "scale", "meanfile": "mean_file", "cropsize": "crop_size",
                       "mirror": "mirror"}
# V0's new_num / new_channels (dims of a reshape layer that never shipped) are
# copied nowhere, silently, as in Caffe.

# NetNeedsDataUpgrade / UpgradeNetDataTransformation.
DATA_TRANSFORM_LAYERS = {V1.DATA: "data_param", V1.IMAGE_DATA: "image_data_param",
                         V1.WINDOW_DATA: "window_data_param"}
DATA_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

# UpgradeSolverType.
SOLVER_TYPES = {caffe_pb2.SolverParameter.SGD: "SGD",
                caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
                caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad",
                caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
                caffe_pb2.SolverParameter.ADADELTA: "AdaDelta",
                caffe_pb2.SolverParameter.ADAM: "Adam"}

Report = collections.namedtuple("Report", "steps problems")
Report.__doc__ = """What an upgrade did: ``steps`` (names of the upgrades applied, in
order) and ``problems`` (Caffe's "not fully compatible" messages)."""


def _layer_label(index, name):
    return f"layer {index} ('{name}')" if name else f"layer {index}"


# --- what a file needs ------------------------------------------------------------

def net_needs_v0_upgrade(net):
    return any(v1.HasField("layer") for v1 in net.layers)


def net_needs_v1_upgrade(net):
    return len(net.layers) > 0


def net_needs_data_upgrade(net):
    for v1 in net.layers:
        field = DATA_TRANSFORM_LAYERS.get(v1.type)
        if field and any(getattr(v1, field).HasField(f) for f in DATA_TRANSFORM_FIELDS):
            return True
    return False


def net_needs_input_upgrade(net):
    return len(net.input) > 0


def net_needs_batch_norm_upgrade(net):
    return any(layer.type == "BatchNorm" and len(layer.param) == 3 for layer in net.layer)


def net_needs_upgrade(net):
    """True when the net is not in the current format (Caffe's NetNeedsUpgrade)."""
    return (net_needs_v0_upgrade(net) or net_needs_v1_upgrade(net)
            or net_needs_data_upgrade(net) or net_needs_input_upgrade(net)
            or net_needs_batch_norm_upgrade(net))


def net_version(net):
    """'V0', 'V1' or 'V2': the layer format a NetParameter is written in."""
    if net_needs_v0_upgrade(net):
        return "V0"
    return "V1" if net_needs_v1_upgrade(net) else "V2"


# --- V0 -> V1 ---------------------------------------------------------------------

def upgrade_v0_padding_layers(net, path="<net>"):
    """A copy of the V0 ``net`` without "padding" layers; their pad moves to the
    conv or pool layer that reads their top (Caffe's UpgradeV0PaddingLayers)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    last_top = {name: None for name in net.input}   # blob -> index of the layer writing it
    for i, connection in enumerate(net.layers):
        v0 = connection.layer
        if v0.type != "padding":
            out.layers.add().CopyFrom(connection)
        for j, blob in enumerate(connection.bottom):
            if blob not in last_top:
                raise ParseError(f"{path}: {_layer_label(i, v0.name)}: unknown bottom blob "
                                 f"'{blob}' (bottom {j}); no earlier layer or input "
                                 "produces it")
            source_index = last_top[blob]
            if source_index is None:
                continue
            source = net.layers[source_index]
            if source.layer.type != "padding":
                continue
            where = (f"{path}: {_layer_label(i, v0.name)} reads the output of padding layer "
                     f"'{source.layer.name}'")
            if v0.type not in ("conv", "pool"):
                raise ParseError(f"{where}, but only conv and pool layers can absorb a "
                                 f"padding layer (this one is '{v0.type}')")
            if len(connection.bottom) != 1:
                raise ParseError(f"{where}; a padded layer must take a single bottom, it "
                                 f"takes {len(connection.bottom)}")
            if len(source.bottom) != 1 or len(source.top) != 1:
                raise ParseError(f"{path}: padding layer '{source.layer.name}' must take "
                                 f"one bottom and produce one top, it has "
                                 f"{len(source.bottom)} and {len(source.top)}")
            padded = out.layers[len(out.layers) - 1]
            padded.layer.pad = source.layer.pad
            padded.bottom[j] = source.bottom[0]
        for blob in connection.top:
            last_top[blob] = i
    return out


def upgrade_v0_layer(connection, index=0, path="<net>"):
    """(V1LayerParameter, problems) for one V0 layer (Caffe's UpgradeV0LayerParameter)."""
    out = V1()
    out.bottom.extend(connection.bottom)
    out.top.extend(connection.top)
    problems = []
    if not connection.HasField("layer"):
        return out, problems
    v0 = connection.layer
    if v0.HasField("name"):
        out.name = v0.name
    kind = v0.type
    label = _layer_label(index, v0.name)
    if v0.HasField("type"):
        if kind not in V0_LAYER_TYPES:
            raise ParseError(f"{path}: {label}: unknown V0 layer type '{kind}' (known: "
                             f"{', '.join(sorted(V0_LAYER_TYPES))})")
        out.type = V0_LAYER_TYPES[kind]
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, value in v0.ListFields():
        name = field.name
        if name in V0_TRANSFORM_FIELDS:
            setattr(out.transform_param, V0_TRANSFORM_FIELDS[name], value)
            continue
        if name not in V0_FIELDS:
            continue        # name, type, blobs, blobs_lr, weight_decay, ignored fields
        target = V0_FIELDS[name].get(kind)
        if target is None:
            problems.append(f"{label}: unknown parameter {name} for type '{kind}'")
            continue
        message_name, target_field = target
        message = getattr(out, message_name)
        if target_field is None:
            message.CopyFrom(value)
            continue
        destination = message.DESCRIPTOR.fields_by_name[target_field]
        if destination.message_type is not None:
            getattr(message, target_field).CopyFrom(value)
        elif destination.is_repeated:      # ConvolutionParameter's pad / kernel / stride
            getattr(message, target_field).append(value)
        else:
            setattr(message, target_field, value)   # V0 PoolMethod values equal Pooling's
    return out, problems


def upgrade_v0_net(net, path="<net>"):
    """(V1-format NetParameter, problems) of a V0 net (Caffe's UpgradeV0Net)."""
    padded = upgrade_v0_padding_layers(net, path)
    out = caffe_pb2.NetParameter()
    if padded.HasField("name"):
        out.name = padded.name
    problems = []
    for i, connection in enumerate(padded.layers):
        if not connection.HasField("layer"):
            # Caffe keeps only its bottoms and tops, leaving a layer of no type.
            raise ParseError(f"{path}: {_layer_label(i, connection.name)} is a V1 layer in a "
                             "V0 net; Caffe cannot upgrade a net that mixes the two formats")
        layer, layer_problems = upgrade_v0_layer(connection, i, path)
        out.layers.add().CopyFrom(layer)
        problems += layer_problems
    out.input.extend(padded.input)
    out.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        out.force_backward = padded.force_backward
    return out, problems


# --- data transformation ------------------------------------------------------------

def upgrade_net_data_transformation(net):
    """Move V1 data layers' transformation fields into transform_param (in place)."""
    for v1 in net.layers:
        field = DATA_TRANSFORM_LAYERS.get(v1.type)
        if field is None:
            continue
        params = getattr(v1, field)
        for name in DATA_TRANSFORM_FIELDS:
            if params.HasField(name):
                setattr(v1.transform_param, name, getattr(params, name))
                params.ClearField(name)


# --- V1 -> V2 ----------------------------------------------------------------------

# Every V1 parameter message is copied to the LayerParameter field of that name.
V1_PARAM_FIELDS = tuple(f.name for f in V1.DESCRIPTOR.fields
                        if f.name.endswith("_param") and f.message_type is not None)

_SHARE_MODES = {V1.STRICT: caffe_pb2.ParamSpec.STRICT,
                V1.PERMISSIVE: caffe_pb2.ParamSpec.PERMISSIVE}


def _v1_type_number(v1):
    """The V1 type enum number a layer was stored with, known to this schema or not."""
    for field in unknown_fields.UnknownFieldSet(v1):
        if field.field_number == V1.DESCRIPTOR.fields_by_name["type"].number:
            return field.data
    return None


def upgrade_v1_layer(v1, index=0, path="<net>", weights=False):
    """(LayerParameter, problems) for one V1 layer (Caffe's UpgradeV1LayerParameter)."""
    out = caffe_pb2.LayerParameter()
    problems = []
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    out.include.extend(v1.include)
    out.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        out.type = V1_LAYER_TYPES[v1.type]
    elif not weights:
        number = _v1_type_number(v1)
        if number is not None:
            raise ParseError(f"{path}: {_layer_label(index, v1.name)}: V1 layer type number "
                             f"{number} is not one of BVLC Caffe's (a fork's layer?)")
    out.blobs.extend(v1.blobs)

    def spec(i):
        while len(out.param) <= i:
            out.param.add()
        return out.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        spec(i).share_mode = _SHARE_MODES[mode]
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    out.loss_weight.extend(v1.loss_weight)
    for name in V1_PARAM_FIELDS:
        if v1.HasField(name):
            getattr(out, name).CopyFrom(getattr(v1, name))
    if v1.HasField("layer"):
        problems.append(f"{_layer_label(index, v1.name)}: has a V0 layer too; ignored")
    return out, problems


def upgrade_v1_net(net, path="<net>", weights=False):
    """(V2 NetParameter, problems) of a V1 net (Caffe's UpgradeV1Net)."""
    if len(net.layer):
        raise ParseError(f"{path}: has both 'layer' (current format) and 'layers' (V1 "
                         "format) entries; Caffe refuses to upgrade such a net: write the "
                         "'layers' entries as 'layer { type: \"...\" }'")
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    problems = []
    for i, v1 in enumerate(net.layers):
        layer, layer_problems = upgrade_v1_layer(v1, i, path, weights)
        out.layer.add().CopyFrom(layer)
        problems += layer_problems
    return out, problems


# --- inputs, BatchNorm --------------------------------------------------------------

def upgrade_net_input(net, path="<net>", weights=False):
    """Top-level ``input`` fields -> an Input layer first in the net (in place).

    Names alone (no ``input_shape`` / ``input_dim``) are what old caffemodels
    hold: they are dropped, as Caffe drops them.  A net definition needs the
    shapes, so there it is an error.
    """
    names = list(net.input)
    if net.input_shape:
        if len(net.input_shape) != len(names):
            raise ParseError(f"{path}: {len(names)} 'input' names but "
                             f"{len(net.input_shape)} 'input_shape' entries")
        shapes = [list(s.dim) for s in net.input_shape]
    elif net.input_dim:
        if len(net.input_dim) != 4 * len(names):
            raise ParseError(f"{path}: 'input_dim' needs 4 values per input ({len(names)} "
                             f"inputs), got {len(net.input_dim)}")
        dims = list(net.input_dim)
        shapes = [dims[4 * i:4 * i + 4] for i in range(len(names))]
    elif weights:
        shapes = None
    else:
        raise ParseError(f"{path}: 'input' given without 'input_shape' or 'input_dim'")
    if shapes is not None:
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        layer.top.extend(names)
        for shape in shapes:
            layer.input_param.shape.add().dim.extend(shape)
        layers = [layer] + list(net.layer)
        del net.layer[:]
        net.layer.extend(layers)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


def upgrade_net_batch_norm(net):
    """BatchNorm layers declaring three ParamSpecs: lr_mult and decay_mult 0 (in place).

    The old BatchNorm definition asked users to freeze its statistics by hand;
    the layer now never learns them.  Other ParamSpec fields are kept.
    """
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


# --- the whole net -------------------------------------------------------------------

def upgrade_net_as_needed(net, path="<net>", weights=False):
    """Upgrade ``net`` in place, as Caffe's UpgradeNetAsNeeded; returns a :class:`Report`.

    ``weights``: the file holds trained weights (a caffemodel), which may name
    inputs without shapes and may hold layers of types unknown here.
    Raises :class:`ParseError` where Caffe would abort.
    """
    steps, problems = [], []
    if net_needs_v0_upgrade(net):
        upgraded, found = upgrade_v0_net(net, path)
        net.CopyFrom(upgraded)
        steps.append("V0 layers")
        problems += found
    if net_needs_data_upgrade(net):
        upgrade_net_data_transformation(net)
        steps.append("data transformation fields")
    if net_needs_v1_upgrade(net):
        upgraded, found = upgrade_v1_net(net, path, weights)
        net.CopyFrom(upgraded)
        steps.append("V1 layers")
        problems += found
    if net_needs_input_upgrade(net):
        upgrade_net_input(net, path, weights)
        steps.append("input fields")
    if net_needs_batch_norm_upgrade(net):
        upgrade_net_batch_norm(net)
        steps.append("BatchNorm params")
    return Report(steps, problems)


def log_problems(report, path):
    """Log each of ``report``'s problems as Caffe does, and that it goes on."""
    for problem in report.problems:
        log.error("%s: %s", path, problem)
    if report.problems:
        log.error("%s: had one or more problems upgrading (see above); continuing anyway",
                  path)


# (level, path, message) of the upgrade notes logged so far for files (see _note_once).
_noted = set()


def _note_once(level, path, message, *args):
    """Log an upgrade note about the file ``path`` once per process.

    A solver reads its net file once for the train net and again for each test
    net, a script may build the same deploy net many times: one note per file
    says it all.  Nets given as messages (``path`` like ``<net>``) are noted
    every time, since nothing tells two of them apart.
    """
    path = str(path)
    key = (level, path, message % args)
    if not path.startswith("<"):
        if key in _noted:
            return
        _noted.add(key)
    log.log(level, "%s: " + message, path, *args)


def forget_notes():
    """Note every upgrade again (for tests, which read the same files repeatedly)."""
    _noted.clear()


def upgrade_net(net, path="<net>", weights=False):
    """Upgrade ``net`` in place to the current format, logging as Caffe; returns it.

    One warning names the file and what was upgraded (Caffe's "Note that future
    Caffe releases will not support ..."); BatchNorm alone is only noted (INFO).
    Each file is noted once per process (:func:`_note_once`).
    """
    report = upgrade_net_as_needed(net, path, weights)
    log_problems(report, path)
    steps = [s for s in report.steps if not (s == "V1 layers" and "V0 layers" in report.steps)]
    if steps == ["BatchNorm params"]:
        _note_once(logging.INFO, path, "upgraded BatchNorm layers that declare deprecated params")
    elif steps:
        tool = "upgrade_net_proto_binary" if weights else "upgrade_net_proto_text"
        _note_once(logging.WARNING, path, "upgraded in memory from deprecated %s; %s writes it "
                   "in the current format", ", ".join(steps), tool)
    return net


# --- solvers ------------------------------------------------------------------------

def solver_needs_upgrade(solver):
    return solver.HasField("solver_type")


def upgrade_solver_as_needed(solver, path="<solver>"):
    """``solver_type`` (enum) -> ``type`` (string), in place; returns a :class:`Report`."""
    if not solver_needs_upgrade(solver):
        return Report([], [])
    if solver.HasField("type"):
        old = caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)
        raise ParseError(f"{path}: both 'type: \"{solver.type}\"' and the deprecated "
                         f"'solver_type: {old}' are given; Caffe refuses such a solver: keep "
                         "only 'type'")
    solver.type = SOLVER_TYPES[solver.solver_type]
    solver.ClearField("solver_type")
    return Report(["'solver_type' field"], [])


def upgrade_solver(solver, path="<solver>"):
    """Upgrade ``solver`` in place (Caffe's UpgradeSolverAsNeeded); returns it."""
    report = upgrade_solver_as_needed(solver, path)
    if report.steps:
        _note_once(logging.WARNING, path, "upgraded the deprecated 'solver_type' field to "
                   "'type: \"%s\"'; upgrade_solver_proto_text writes it in the current format",
                   solver.type)
    return solver
