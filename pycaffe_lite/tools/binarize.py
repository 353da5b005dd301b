"""``caffe_lite binarize``: a HWGQ net's binary-weight layers as standard layers.

A net trained with the HWGQ fork keeps real-valued weights ``W`` in its
BinaryConvolution / BinaryInnerProduct layers and binarises them in every
forward pass.  For deployment on a stock Caffe (or OpenCV DNN, or anything else
that reads caffemodels) the HWGQ authors publish ``deploy_bw.prototxt`` nets
whose layers are plain Convolution / InnerProduct holding the binarised weights
``sign(W) * alpha``.  :func:`binarize` makes such a pair from a deploy net and
its trained weights:

* **the net**: every BinaryConvolution becomes a Convolution, every
  BinaryInnerProduct an InnerProduct, and their ``binary_convolution_param`` /
  ``binary_inner_product_param`` go: ``use_alpha`` and ``use_binarization`` are
  baked into the weights, and everything a standard layer needs (geometry,
  ``bias_term``, fillers) is already in the ``convolution_param`` /
  ``inner_product_param`` they share with the standard layers.  Two further
  changes keep the standard layer equal to the binary one: a set
  ``inner_product_param.transpose`` is cleared (BinaryInnerProduct ignores it,
  its weight is ``[num_output, K]``; InnerProduct would transpose), and a weight
  ParamSpec ``name`` that other layers share is cleared (the binarised weight is
  no longer the shared one).  Everything else is kept as it was read: other
  layers, names, tops, bottoms, Input shapes, include/exclude rules, ParamSpecs
  (the text is written from the parsed net, so comments and layout are not).
  :func:`binarized_net_param` of the net as written is, for the HWGQ fixtures,
  exactly the authors' ``deploy_bw.prototxt``; :func:`binarize` converts the
  net upgraded to the current format (deprecated ``input:`` fields become an
  Input layer, as :mod:`pycaffe_lite.io.upgrade` does on every read), so that
  its output reads back without an upgrade warning.
* **the weights**: what Caffe's ``net.save`` writes for the net built in the
  TEST phase (every layer, with the blobs as loaded, as a standard caffemodel),
  except that blob 0 of each binary layer is the weight its forward pass uses,
  taken from the layer itself (``effective_weight()``), so that the
  binarisation has one definition: ``sign(W)`` (``+1`` where ``W >= 0``) times
  ``alpha``, the mean ``|W|`` of that output's weights with ``use_alpha``, else 1.
  Biases and every other layer's blobs are copied.  A binary layer with
  ``use_binarization: false`` is converted too, its weights copied as they are.
  Layer fields on whose number Caffe schemas disagree (147 and up: HWGQ's
  ``quant_param``, ...) are left out of the weights file, where no loader reads
  them; the net keeps them.  With ``quant_param`` in it, OpenCV DNN could not
  parse the caffemodel at all.

The binarised net computes what the binary net computes: the same weights go
through the same convolution code, so the outputs agree bit for bit here.

Errors (:class:`~pycaffe_lite.errors.CaffeError`, each naming the file and the
layer): a net without any binary layer (an error, and nothing is written: the
output would be a copy of the input, so the input is most likely the wrong
file, e.g. a net binarised already); a binary layer absent from the weights
file (its weights would be random); weights whose blob count or shape does not
fit the net (both shapes named); a net that cannot be built in the TEST phase
(the net must be a deploy net: Input layers, not Data layers).  A non-binary
layer with parameters but no weights only gets a warning, as Caffe only
ignores it.
"""
import collections
import logging
import os

from ..backend import to_numpy
from ..errors import CaffeError, NetError, WeightsError
from ..io import files
from ..io.upgrade import upgrade_net
from ..layer import TEST
from ..log import caffe_float
from ..net import Net
from ..proto import caffe_pb2

log = logging.getLogger("pycaffe_lite")

# binary layer type -> (the standard type it becomes, its own parameter message)
STANDARD_TYPES = {
    "BinaryConvolution": ("Convolution", "binary_convolution_param"),
    "BinaryInnerProduct": ("InnerProduct", "binary_inner_product_param"),
}

_GIVEN = "<NetParameter>"   # how Net.copy_from names weights given as a message

# LayerParameter fields numbered from here on mean different things in different
# Caffe schemas: 147-149 are the HWGQ fork's (binary_*_param, quant_param); BVLC
# master has swish_param 147 and clip_param 148 (151 and 150 here); OpenCV DNN's
# schema has detection_output_param 147, permute_param 148, norm_param 149 and
# prior_box_param 150; 152 is our act_quantize_param.  Below 147 they all agree.
# Loaders take only names and blobs from a weights file (the net comes from the
# prototxt), so the weights file leaves these fields out: with quant_param in it,
# OpenCV cannot even parse the file (it reads field 149 as its norm_param).
_SHARED_FIELD_LIMIT = 147


def _shared_param_names(net_param):
    """ParamSpec names that more than one layer of ``net_param`` uses."""
    layers_using = collections.Counter(
        name for layer in net_param.layer for name in {spec.name for spec in layer.param}
        if name)
    return {name for name, count in layers_using.items() if count > 1}


def _make_standard(layer, shared_names):
    """Turn binary ``layer`` (a LayerParameter) into its standard type, in place."""
    standard, own_param = STANDARD_TYPES[layer.type]
    layer.type = standard
    layer.ClearField(own_param)
    if standard == "InnerProduct" and layer.HasField("inner_product_param"):
        layer.inner_product_param.ClearField("transpose")
    if layer.param and layer.param[0].name in shared_names:
        layer.param[0].ClearField("name")


def binarized_net_param(net_param):
    """``(net, names)``: a copy of ``net_param`` whose binary layers are standard
    ones, and the names of the layers converted (in net order).

    Works on the net as given (as written or upgraded); only ``layer`` entries
    can be binary (V0/V1 nets have no binary layer types).
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    shared = _shared_param_names(net_param)
    converted = []
    for layer in out.layer:
        if layer.type not in STANDARD_TYPES:
            continue
        if layer.type == "BinaryInnerProduct" and layer.inner_product_param.transpose:
            log.warning("layer '%s': inner_product_param.transpose cleared: "
                        "BinaryInnerProduct ignores it (its weight is [num_output, K]), "
                        "InnerProduct would not", layer.name)
        if layer.param and layer.param[0].name in shared:
            log.warning("layer '%s': its weight was shared with other layers as '%s'; the "
                        "binarised weight is its own (ParamSpec name cleared)",
                        layer.name, layer.param[0].name)
        _make_standard(layer, shared)
        converted.append(layer.name)
    return out, converted


def _describe(weight, param, binary_type):
    """A log phrase for a binarised weight: its shape and the range of alpha."""
    if binary_type == "BinaryConvolution":
        what = f"{weight.shape[0]} filters of {'x'.join(str(d) for d in weight.shape[1:])}"
    else:
        what = f"{weight.shape[0]} outputs of {weight.shape[1]} inputs"
    if not param.use_alpha:
        return f"{what}, weights +-1 (use_alpha: false)"
    alpha = abs(weight.reshape(weight.shape[0], -1)[:, 0])   # |sign * alpha|
    return (f"{what}, alpha in [{caffe_float(alpha.min())}, {caffe_float(alpha.max())}]"
            if alpha.size else what)


def _log_conversion(layer, weight):
    binary_type = layer.param.type
    standard, own_param = STANDARD_TYPES[binary_type]
    param = getattr(layer.param, own_param)
    if not param.use_binarization:
        log.info("Converted layer %s (%s -> %s): use_binarization is false, weights copied "
                 "as they are", layer.name, binary_type, standard)
        return
    log.info("Binarized layer %s (%s -> %s): %s", layer.name, binary_type, standard,
             _describe(weight, param, binary_type))


def _leave_out_unshared_fields(weights_bw):
    """Clear, in place, the layer fields that not every Caffe schema reads alike."""
    left_out = collections.defaultdict(list)
    for entry in weights_bw.layer:
        for field, _ in entry.ListFields():
            if field.number >= _SHARED_FIELD_LIMIT:
                entry.ClearField(field.name)
                left_out[field.name].append(entry.name)
    for name, layers in left_out.items():
        log.info("Left %s out of the weights file (layers %s): Caffe schemas differ on its "
                 "field number; the net definition keeps it", name, ", ".join(layers))


def _with_source(error, source):
    """``error``'s message naming the weights file ``source``."""
    message = str(error)
    if message.startswith(_GIVEN):
        return source + message[len(_GIVEN):]
    return message if message.startswith(source) else f"{source}: {message}"


def _check_coverage(net, trained, source):
    """A binary layer without trained weights is an error; other layers a warning."""
    given = {layer.name for layer in trained.layer if layer.blobs}
    for name, layer in net.layer_dict.items():
        if not layer.blobs or name in given:
            continue
        if layer.param.type in STANDARD_TYPES:
            raise WeightsError(f"{source}: no weights for layer '{name}' (type "
                               f"{layer.param.type}); the weights file has weights for "
                               f"{', '.join(sorted(given)) or 'no layer'}")
        log.warning("%s: no weights for layer '%s' (type %s); it keeps its filler values",
                    source, name, layer.param.type)


def binarize(model, weights, phase=TEST, level=0, stages=()):
    """The binarised net and weights of a binary net and its trained weights.

    ``model``: the net, a NetParameter or the path of a prototxt (a deploy
    net: it is built in ``phase``/``level``/``stages`` to read the weights as
    Caffe reads them).  ``weights``: the trained weights, a NetParameter (as
    :func:`pycaffe_lite.io.files.read_weights` returns it) or the path of a
    caffemodel.  Returns ``(net_param_bw, weights_bw)``, two NetParameters:
    the net with its binary layers made standard, and the caffemodel message.
    """
    model_source = model if isinstance(model, str) else _GIVEN
    weights_source = weights if isinstance(weights, str) else _GIVEN
    net_param = files.read_net_param(model, "net")[0] if isinstance(model, str) else model
    upgraded = caffe_pb2.NetParameter()
    upgraded.CopyFrom(net_param)
    upgrade_net(upgraded, model_source)
    # Written in the current format: read back, it needs no upgrade (and no warning).
    net_param_bw, converted = binarized_net_param(upgraded)
    if not converted:
        types = sorted({layer.type for layer in net_param.layer}) or ["none"]
        raise NetError(f"{model_source}: no BinaryConvolution or BinaryInnerProduct layer, "
                       f"nothing to binarize (layer types: {', '.join(types)}); is it a net "
                       "binarised already?")
    trained = files.read_weights(weights) if isinstance(weights, str) else weights
    try:
        net = Net(upgraded, phase=phase, level=level, stages=stages)
    except CaffeError as e:
        raise NetError(f"{model_source}: cannot build the net in the "
                       f"{caffe_pb2.Phase.Name(phase)} phase ({e}); binarize "
                       "needs a net that builds without its data (a deploy net with Input "
                       "layers)") from None
    for name in converted:
        if name not in net.layer_dict:
            log.warning("%s: layer '%s' is not in the net's %s phase: converted in the net, "
                        "but no weights written for it", model_source, name,
                        caffe_pb2.Phase.Name(phase))
    _check_coverage(net, trained, weights_source)
    try:
        net.copy_from(trained)
    except WeightsError as e:
        raise WeightsError(_with_source(e, weights_source)) from None
    del trained
    shared = _shared_param_names(upgraded)
    weights_bw = net.to_proto()
    for entry in weights_bw.layer:
        if entry.type not in STANDARD_TYPES:
            continue
        layer = net.layer_dict[entry.name]
        weight = to_numpy(layer.effective_weight())
        files.array_to_blob_proto(weight, proto=entry.blobs[0])
        _log_conversion(layer, weight)
        _make_standard(entry, shared)
    _leave_out_unshared_fields(weights_bw)
    return net_param_bw, weights_bw


# --- files ---------------------------------------------------------------------------

def _check_outputs(model, weights, out_model, out_weights):
    """Refuse outputs that would overwrite an input or each other, or cannot be made."""
    for path, flag in ((model, "--model"), (weights, "--weights"), (out_model, "--out_model"),
                       (out_weights, "--out_weights")):
        files.check_path(path, flag, CaffeError)      # a NUL byte: no file has that name

    def same(a, b):
        return os.path.realpath(a) == os.path.realpath(b)

    if same(out_model, out_weights):
        raise CaffeError(f"{out_model}: the same file for the binarised net and its weights")
    for out in (out_model, out_weights):
        for given, what in ((model, "net"), (weights, "weights")):
            if same(out, given):
                raise CaffeError(f"{out}: is the input {what} file; write the binarised "
                                 "files elsewhere")
        if os.path.isdir(out):
            raise CaffeError(f"{out}: is a directory, not a file name")
        directory = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(directory):
            raise CaffeError(f"{out}: cannot write: directory {directory} does not exist")


def _write(path, writer, message):
    try:
        writer(path, message)
    except OSError as e:
        raise CaffeError(f"{path}: cannot write: {e.strerror or e}") from None


def binarize_files(model, weights, out_model, out_weights, phase=TEST, level=0, stages=()):
    """:func:`binarize` the files ``model`` + ``weights``; write the binarised net
    (text prototxt) to ``out_model`` and its weights (binary caffemodel) to
    ``out_weights``, each atomically (temporary file + rename).  Nothing is
    written when binarising fails.  Returns what :func:`binarize` returns."""
    _check_outputs(model, weights, out_model, out_weights)
    log.info("Binarizing %s with the weights %s", model, weights)
    net_bw, weights_bw = binarize(model, weights, phase, level, stages)
    _write(out_weights, files.write_binary_proto, weights_bw)
    log.info("Wrote the binarised weights to %s", out_weights)
    _write(out_model, files.write_text_proto, net_bw)
    log.info("Wrote the binarised net to %s", out_model)
    return net_bw, weights_bw
