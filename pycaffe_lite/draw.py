"""pycaffe's ``caffe.draw``: a NetParameter as a graph (pydot + Graphviz's ``dot``).

Layers are boxes (coloured by kind, labelled with their name, type and the
parameters that shape them), blobs are octagons, edges run bottom -> layer ->
top (labelled with the layer's output count).  The low-precision layers say
their bits: BinaryConvolution / BinaryInnerProduct "1-bit weights", Quant its
levels, ActQuantize its bits, QConvolution / QInnerProduct their subspace
dimension, codebook size and index bits.  ``phase`` keeps the layers a TRAIN
or TEST net would build (include / exclude rules); ``display_lrm`` adds the
learning-rate multipliers.  Same functions and arguments as BVLC's
``python/caffe/draw.py``; the code is ours.
"""
import math
import os

from .errors import CaffeError
from .proto import caffe_pb2

LAYER_STYLE = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_STYLE = {"color": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}
COLOURS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
           "InnerProduct": "#CC33FF", "BinaryConvolution": "#B22222",
           "BinaryInnerProduct": "#8B008B", "QConvolution": "#FF8080",
           "QInnerProduct": "#E080FF", "Quant": "#20B2AA", "ActQuantize": "#20B2AA"}


def _pydot():
    try:
        import pydot
    except ImportError:
        raise CaffeError("caffe.draw needs pydot: pip install pydot (and Graphviz: "
                         "apt-get install graphviz, or brew install graphviz)") from None
    return pydot


def get_pooling_types_dict():
    """``{enum value: name}`` of PoolingParameter.PoolMethod."""
    return {value.number: value.name
            for value in caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR.values}


def _first(values, default):
    return values[0] if len(values) else default


def _conv_text(param, sep):
    kernel = _first(param.kernel_size, param.kernel_h or 1)
    stride = _first(param.stride, param.stride_h or 1)
    pad = _first(param.pad, param.pad_h)
    return f"kernel size: {kernel}{sep}stride: {stride}{sep}pad: {pad}"


def _bits_text(layer, sep):
    """What the low-precision layers keep: their bits."""
    kind = layer.type
    if kind in ("BinaryConvolution", "BinaryInnerProduct"):
        own = (layer.binary_convolution_param if kind == "BinaryConvolution"
               else layer.binary_inner_product_param)
        if not own.use_binarization:
            return "float weights"
        return "1-bit weights" + (" x alpha" if own.use_alpha else "")
    if kind == "Quant":
        levels = len(layer.quant_param.centers) + 1 if layer.HasField("quant_param") else 256
        return f"{layer.quant_param.forward_func or 'quant'}: {levels} levels " \
               f"({math.ceil(math.log2(max(levels, 2)))} bits)"
    if kind == "ActQuantize":
        p = layer.act_quantize_param
        levels = caffe_pb2.ActQuantizeParameter.Levels.Name(p.levels)
        return f"{p.bits} bits, {levels}{', signed' if p.signed else ''}"
    if kind in ("QConvolution", "QInnerProduct"):
        own = layer.q_convolution_param if kind == "QConvolution" else layer.q_inner_product_param
        bits = max(1, (own.codebook_size - 1).bit_length())
        return f"D {own.subspace_dim}, K {own.codebook_size}{sep}{bits}-bit indices"
    return None


def get_layer_label(layer, rankdir, display_lrm=False):
    """The node label of ``layer``: name, type and what shapes it."""
    sep = "\\n" if rankdir in ("TB", "BT") else " "
    lines = [layer.name, f"({layer.type})"]
    if layer.type in ("Convolution", "Deconvolution", "BinaryConvolution", "QConvolution"):
        lines.append(_conv_text(layer.convolution_param, sep))
    elif layer.type == "Pooling":
        p = layer.pooling_param
        lines.append(f"pool: {get_pooling_types_dict()[p.pool]}{sep}kernel size: "
                     f"{p.kernel_size or p.kernel_h}{sep}stride: {p.stride or p.stride_h}"
                     f"{sep}pad: {p.pad or p.pad_h}")
    bits = _bits_text(layer, sep)
    if bits:
        lines.append(bits)
    if display_lrm and layer.param:
        lines.append("lr mult: " + ", ".join(f"{p.lr_mult:g}" for p in layer.param))
        lines.append("decay mult: " + ", ".join(f"{p.decay_mult:g}" for p in layer.param))
    return '"' + sep.join(lines) + '"'


def get_edge_label(layer):
    """The label of ``layer``'s output edges: its output count, where it has one."""
    if layer.type == "Data":
        return f'"Batch {layer.data_param.batch_size}"'
    for field in ("convolution_param", "inner_product_param"):
        if layer.type.endswith("Convolution" if field == "convolution_param"
                               else "InnerProduct"):
            return f'"{getattr(layer, field).num_output}"'
    return '""'


def choose_color_by_layertype(layertype):
    return COLOURS.get(layertype, "#6495ED")


def _in_phase(layer, phase):
    if phase is None:
        return True
    if layer.include:
        return any(rule.phase == phase for rule in layer.include if rule.HasField("phase")) \
            or all(not rule.HasField("phase") for rule in layer.include)
    return not any(rule.HasField("phase") and rule.phase == phase for rule in layer.exclude)


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """A ``pydot.Dot`` of the NetParameter ``caffe_net`` (see the module doc)."""
    pydot = _pydot()
    graph = pydot.Dot(caffe_net.name or "Net", graph_type="digraph", compound="true",
                      rankdir=rankdir)
    nodes, edges = {}, []
    for index, layer in enumerate(caffe_net.layer):
        if not _in_phase(layer, phase):
            continue
        node = f"{layer.name}_{layer.type}_{index}"
        style = dict(NEURON_STYLE) if len(layer.bottom) == 1 and list(layer.bottom) == list(
            layer.top) else dict(LAYER_STYLE, fillcolor=choose_color_by_layertype(layer.type))
        nodes[node] = pydot.Node(node, label=get_layer_label(layer, rankdir, display_lrm),
                                 **style)
        for bottom in layer.bottom:
            nodes.setdefault(bottom + "_blob", pydot.Node(bottom + "_blob", label=f'"{bottom}"',
                                                          **BLOB_STYLE))
            edges.append((bottom + "_blob", node, '""'))
        for top in layer.top:
            nodes.setdefault(top + "_blob", pydot.Node(top + "_blob", label=f'"{top}"',
                                                       **BLOB_STYLE))
            edges.append((node, top + "_blob", get_edge_label(layer) if label_edges else '""'))
    for node in nodes.values():
        graph.add_node(node)
    for source, target, label in edges:
        graph.add_edge(pydot.Edge(source, target, label=label))
    return graph


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False):
    """The drawing of ``caffe_net`` as bytes in format ``ext`` (png, svg, pdf, ...)."""
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    try:
        return graph.create(format=ext)
    except FileNotFoundError:
        raise CaffeError("Graphviz's 'dot' program was not found: apt-get install graphviz "
                         "(or brew install graphviz, conda install graphviz)") from None
    except Exception as e:  # pydot reports dot's own failures as plain exceptions
        if "dot" in str(e) and "not found" in str(e):
            raise CaffeError("Graphviz's 'dot' program was not found: apt-get install "
                             "graphviz (or brew install graphviz)") from None
        raise


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Draw ``caffe_net`` into ``filename``, its format from the extension (atomically)."""
    from .io import files
    ext = os.path.splitext(filename)[1].lstrip(".") or "png"
    files.write_atomic(filename, draw_net(caffe_net, rankdir, ext, phase, display_lrm))
