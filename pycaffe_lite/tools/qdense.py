"""A Q-CNN net's QConvolution / QInnerProduct layers as dense Convolution / InnerProduct.

The dense twin holds the weights the codeword indices stand for
(``layer.dense_weight()``: ``W = codebooks[s, indices]`` laid side by side), so
it computes what the Q net computes, by im2col and GEMM instead of lookup
tables: the baseline of ``caffe_lite speedtest`` and of the Q-CNN benchmark, the
reference of the lookup-table tests, and a net any Caffe can run.
"""
from ..backend import to_numpy
from ..io import files
from ..proto import caffe_pb2

# Q layer type -> (the dense type it becomes, its own parameter message)
DENSE_TYPES = {
    "QConvolution": ("Convolution", "q_convolution_param"),
    "QInnerProduct": ("InnerProduct", "q_inner_product_param"),
}


def q_net_param(net_param, settings=None, conv=(8, 128), fc=(4, 32)):
    """A copy of ``net_param`` with Convolution / InnerProduct layers as QConvolution /
    QInnerProduct: those in ``settings`` (``{name: (subspace_dim, codebook_size)}``),
    or without it every one, at ``conv`` / ``fc`` (Q-CNN's AlexNet settings by
    default).  Their param specs go (they do not fit the Q layers' frozen blobs)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    for layer in out.layer:
        if settings is not None and layer.name not in settings:
            continue
        for q_type, (dense, own) in DENSE_TYPES.items():
            if layer.type == dense:
                default = conv if dense == "Convolution" else fc
                dim, codewords = settings[layer.name] if settings is not None else default
                layer.type = q_type
                getattr(layer, own).subspace_dim = dim
                getattr(layer, own).codebook_size = codewords
                del layer.param[:]
    return out


def _make_dense(layer):
    dense, own = DENSE_TYPES[layer.type]
    layer.type = dense
    layer.ClearField(own)
    # The Q layers' param specs (codebooks, indices, bias: all frozen) do not fit.
    del layer.param[:]


def dense_net(net_param, net):
    """``(net_param, weights)``: ``net_param`` with its Q layers made dense, and the
    caffemodel message of ``net`` (a built Net of ``net_param`` with its weights)
    whose Q layers hold their dense weights and biases."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    for layer in out.layer:
        if layer.type in DENSE_TYPES:
            _make_dense(layer)
    weights = net.to_proto()
    for entry in weights.layer:
        if entry.type not in DENSE_TYPES:
            continue
        layer = net.layer_dict[entry.name]
        blobs = [to_numpy(layer.dense_weight())]
        if layer.bias_term:
            blobs.append(to_numpy(layer.blobs[2].data))
        _make_dense(entry)
        del entry.blobs[:]
        for array in blobs:
            files.array_to_blob_proto(array, proto=entry.blobs.add())
    return out, weights
