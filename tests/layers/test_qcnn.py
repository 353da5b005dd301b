"""Tests of layers/qcnn.py (QConvolution, QInnerProduct) and engines/lookup.py.

The lookup-table forward against the dense forward of the reconstructed weight
(our Convolution / InnerProduct, itself checked against the real Caffe by the
golden cases), on both sum paths (compiled Numba and the array fallback) and
for grouped, strided, padded, dilated, 1-D and ragged-subspace convolutions
and for inner products with an axis; the reconstruction against a loop over
its definition; bit-packed caffemodel round trips; clear errors for bad
indices, backward, learning rates and shapes.  The layers have no backward, so
no gradient check: the tests check that asking for one fails clearly.

Tolerance: float32 tables summed in another order than the GEMM; measured
relative differences (to the output's max) up to 4e-7 on these cases; 1e-5 is
the issue's bound.
"""
import itertools

import numpy
import pytest
from google.protobuf import text_format

from pycaffe_lite.backend import to_numpy
from pycaffe_lite.engines import lookup
from pycaffe_lite.errors import LayerError, NetError, WeightsError
from pycaffe_lite.io import bitpack, files
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite import Net
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.tools.qdense import dense_net

TOL = 1e-5
PATHS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    not lookup.numba_available(), reason="Numba not installed (pip install numba): "
    "the compiled lookup path is not tested"))]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    monkeypatch.setattr(lookup, "PATH", request.param)
    monkeypatch.setattr(lookup, "DENSE_BELOW", 0)   # tables everywhere
    return request.param


def _net(text, phase=TEST):
    return Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)


def _fill(net, seed=0):
    rng = numpy.random.default_rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            if blob.dtype.kind == "u":
                blob.data[...] = rng.integers(0, blobs[0].shape[1], blob.shape)
            else:
                blob.data[...] = rng.standard_normal(blob.shape)
    for name in net.input_names:
        net.blobs[name].data[...] = rng.standard_normal(net.blobs[name].shape)


def _compare_with_dense(net, text, out):
    net.forward()
    param = text_format.Parse(text, caffe_pb2.NetParameter())
    dense_param, weights = dense_net(param, net)
    dense = Net(dense_param, TEST)
    dense.copy_from(weights)
    for name in net.input_names:
        dense.blobs[name].data[...] = net.blobs[name].data
    dense.forward()
    got, want = to_numpy(net.blobs[out].data), to_numpy(dense.blobs[out].data)
    assert got.shape == want.shape
    assert numpy.abs(got - want).max() <= TOL * numpy.abs(want).max()
    return got


def _qconv(shape, conv, q="", extra=""):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f"""
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}
layer {{ name: "q" type: "QConvolution" bottom: "data" top: "q" {extra}
  convolution_param {{ {conv} }} q_convolution_param {{ {q} }} }}"""


CONVS = [  # (input shape, convolution_param, q_convolution_param)
    ((2, 6, 9, 8), "num_output: 4 kernel_size: 3 pad: 1", "subspace_dim: 2 codebook_size: 5"),
    ((1, 6, 11, 10), "num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2",
     "subspace_dim: 3 codebook_size: 7"),
    ((1, 3, 19, 19), "num_output: 8 kernel_size: 5 stride: 3",           # conv1-like: ragged
     "subspace_dim: 8 codebook_size: 16"),
    ((2, 12, 10, 11), "num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 "
     "pad_h: 2 pad_w: 0 dilation: 2 group: 3", "subspace_dim: 3 codebook_size: 300"),
    ((1, 10, 7, 7), "num_output: 5 kernel_size: 1 bias_term: false",
     "subspace_dim: 4 codebook_size: 3"),                               # 10 = 4 + 4 + 2
    ((2, 4, 13), "num_output: 3 kernel_size: 3 pad: 1 stride: 2",          # 1-D
     "subspace_dim: 2 codebook_size: 4"),
]


@pytest.mark.parametrize("shape,conv,q", CONVS)
def test_qconvolution_equals_dense_convolution_of_its_weight(path, shape, conv, q):
    text = _qconv(shape, conv, q)
    net = _net(text)
    _fill(net)
    _compare_with_dense(net, text, "q")


def test_qconvolution_axis_and_lead_dims(path):
    text = _qconv((2, 3, 4, 6, 6), "num_output: 4 kernel_size: 3 axis: 2",
                  "subspace_dim: 3 codebook_size: 6")
    net = _net(text)
    _fill(net)
    assert _compare_with_dense(net, text, "q").shape == (2, 3, 4, 4, 4)


def test_conv1_like_layer_goes_dense_from_its_codebook(monkeypatch):
    """3 channels in one subspace: 3 multiply-adds a lookup; the engine convolves the
    reconstructed weight instead, and computes the same outputs."""
    assert not lookup.conv_by_tables(3, 1) and lookup.conv_by_tables(48, 6)
    text = _qconv((1, 3, 19, 19), "num_output: 8 kernel_size: 5 stride: 3",
                  "subspace_dim: 8 codebook_size: 16")
    net = _net(text)
    _fill(net)
    by_dense = _compare_with_dense(net, text, "q").copy()
    monkeypatch.setattr(lookup, "DENSE_BELOW", 0)
    net.forward()
    numpy.testing.assert_allclose(net.blobs["q"].data, by_dense, atol=TOL * abs(by_dense).max())


def _qfc(shape, ip, q):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f"""
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}
layer {{ name: "q" type: "QInnerProduct" bottom: "data" top: "q"
  inner_product_param {{ {ip} }} q_inner_product_param {{ {q} }} }}"""


FCS = [
    ((3, 2, 3, 4), "num_output: 7", "subspace_dim: 4 codebook_size: 5"),
    ((1, 9216), "num_output: 33", "subspace_dim: 4 codebook_size: 32"),
    ((2, 3, 10), "num_output: 4 axis: 2", "subspace_dim: 3 codebook_size: 300"),  # ragged
    ((2, 5), "num_output: 3 bias_term: false", "subspace_dim: 1 codebook_size: 2"),
    ((20, 17), "num_output: 9", "subspace_dim: 8 codebook_size: 16"),
]


@pytest.mark.parametrize("shape,ip,q", FCS)
def test_qinnerproduct_equals_dense_inner_product_of_its_weight(path, shape, ip, q):
    text = _qfc(shape, ip, q)
    net = _net(text)
    _fill(net)
    _compare_with_dense(net, text, "q")


def test_fc_indices_kept_subspace_major():
    """The compiled FC path reads [S, M] rows: the blob keeps its [M, S] shape on such
    memory, so no copy is made per forward; writes through the blob land there."""
    net = _net(_qfc((1, 12), "num_output: 5", "subspace_dim: 4 codebook_size: 8"))
    blob = net.params["q"][1]
    assert blob.shape == (5, 3) and blob.data.T.flags.c_contiguous
    blob.data[...] = numpy.arange(15).reshape(5, 3) % 8
    assert blob.data.T.flags.c_contiguous and blob.data[4, 2] == 14 % 8


def test_reconstruction_matches_its_definition():
    rng = numpy.random.default_rng(1)
    codebooks = rng.standard_normal((3, 4, 2))          # 5 channels: 2 + 2 + 1
    indices = rng.integers(0, 4, (2, 3, 2, 3))
    w = lookup.conv_weight(codebooks, indices, 5)
    assert w.shape == (2, 5, 3, 2)
    for m, c, kh, kw in itertools.product(range(2), range(5), range(3), range(2)):
        s, d = divmod(c, 2)
        assert w[m, c, kh, kw] == codebooks[s, indices[m, kh, kw, s], d]
    fc = lookup.fc_weight(codebooks, indices[:, 0, 0], 5)
    for m, i in itertools.product(range(2), range(5)):
        assert fc[m, i] == codebooks[i // 2, indices[m, 0, 0, i // 2], i % 2]


# --- files ------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 3, 5, 7, 8, 9, 12, 16])
def test_bitpack_round_trip(bits):
    values = numpy.random.default_rng(bits).integers(0, 1 << bits, 1001)
    data = bitpack.pack(values, bits)
    assert len(data) == -(-1001 * bits // 8)
    numpy.testing.assert_array_equal(bitpack.unpack(data, bits, 1001), values)


def test_bitpack_layout_msb_first():
    assert bitpack.pack([1, 2, 3], 2) == bytes([0b01101100])
    assert bitpack.pack([5], 3) == bytes([0b10100000])
    assert bitpack.bits_for(128) == 7 and bitpack.bits_for(129) == 8 and bitpack.bits_for(1) == 1
    with pytest.raises(ValueError, match="do not fit"):
        bitpack.pack([4], 2)


def test_caffemodel_packs_indices_and_round_trips(tmp_path):
    text = (_qconv((1, 16, 6, 6), "num_output: 8 kernel_size: 3", "")
            + '\nlayer { name: "f" type: "QInnerProduct" bottom: "q" top: "f" '
              'inner_product_param { num_output: 10 } }')
    net = _net(text)
    _fill(net)
    net.forward()
    path = tmp_path / "q.caffemodel"
    net.save(str(path))
    weights = files.read_weights(str(path))
    layer = {lp.name: lp for lp in weights.layer}
    conv_idx, fc_idx = layer["q"].blobs[1], layer["f"].blobs[1]
    assert conv_idx.packed_bits <= 7 and not conv_idx.data and not conv_idx.diff
    assert len(conv_idx.packed_data) == -(-8 * 9 * 2 * conv_idx.packed_bits // 8)
    assert fc_idx.packed_bits <= 5 and len(fc_idx.packed_data) <= -(-10 * 72 * 5 // 8)
    again = _net(text)
    again.copy_from(str(path))
    for name in ("q", "f"):
        for a, b in zip(net.params[name], again.params[name]):
            assert a.dtype == b.dtype
            numpy.testing.assert_array_equal(a.data, b.data)
    again.blobs["data"].data[...] = net.blobs["data"].data
    again.forward()
    numpy.testing.assert_array_equal(again.blobs["f"].data, net.blobs["f"].data)


def test_float_indices_in_a_caffemodel_are_read_if_whole(tmp_path):
    text = _qfc((1, 8), "num_output: 3", "subspace_dim: 4 codebook_size: 4")
    net = _net(text)
    _fill(net)
    weights = net.to_proto()
    blob = weights.layer[1].blobs[1]
    values = files.blob_proto_to_array(blob, numpy.uint8)
    files.array_to_blob_proto(values.astype(numpy.float32), proto=blob)   # as floats
    again = _net(text)
    again.copy_from(weights)
    numpy.testing.assert_array_equal(again.params["q"][1].data, net.params["q"][1].data)
    files.array_to_blob_proto(values + 0.5, proto=blob)
    with pytest.raises(WeightsError, match="whole numbers 0..255"):
        _net(text).copy_from(weights)


# --- errors ---------------------------------------------------------------------
@pytest.mark.parametrize("path_name", ["numpy", "numba"])
def test_index_outside_the_codebook_names_layer_and_position(monkeypatch, path_name):
    if path_name == "numba" and not lookup.numba_available():
        pytest.skip("Numba not installed")
    monkeypatch.setattr(lookup, "PATH", path_name)
    conv = _net(_qconv((1, 4, 5, 5), "num_output: 2 kernel_size: 3",
                       "subspace_dim: 2 codebook_size: 5"))
    _fill(conv)
    conv.params["q"][1].data[1, 2, 0, 1] = 5
    with pytest.raises(LayerError, match=r"layer 'q'.*index 5 at \(1, 2, 0, 1\).*5 codewords"):
        conv.forward()
    fc = _net(_qfc((1, 8), "num_output: 3", "subspace_dim: 4 codebook_size: 4"))
    _fill(fc)
    fc.params["q"][1].data[2, 1] = 200
    with pytest.raises(LayerError, match=r"index 200 at \(2, 1\).*4 codewords"):
        fc.forward()


def test_backward_is_refused_clearly():
    text = _qfc((2, 8), "num_output: 3", "") + """
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "q" bottom: "label" top: "loss" }"""
    # The data needs no gradient and the Q params are frozen: the net trains nothing
    # below the loss, and builds.
    net = _net(text, TRAIN)
    layer = net.layer_dict["q"]
    with pytest.raises(LayerError, match="layer 'q'.*no backward.*propagate_down: false"):
        layer.backward([net.blobs["q"]], [True], [net.blobs["data"]])
    layer.backward([net.blobs["q"]], [False], [net.blobs["data"]])   # nothing asked: fine


def test_net_asking_a_q_layer_for_gradients_is_refused_when_built():
    below = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 8 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 8 } }
layer { name: "q" type: "QInnerProduct" bottom: "ip" top: "q" %s
  inner_product_param { num_output: 3 } q_inner_product_param { subspace_dim: 4 } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "q" bottom: "label" top: "loss" }"""
    with pytest.raises(NetError, match="layer 'q' \\(type QInnerProduct\\) is inference-only"):
        _net(below % "", TRAIN)
    # propagate_down: false: the layer below does not learn through it; builds.
    net = _net(below % "propagate_down: false", TRAIN)
    net.forward_backward()


def test_q_layer_above_trainable_layers_lets_them_train():
    """The paper fine-tunes the FC layers on top of quantised convolutions."""
    text = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 4 dim: 5 dim: 5 } } }
layer { name: "q" type: "QConvolution" bottom: "data" top: "q"
  convolution_param { num_output: 4 kernel_size: 3 } q_convolution_param { subspace_dim: 2 codebook_size: 4 } }
layer { name: "ip" type: "InnerProduct" bottom: "q" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 4 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }"""
    net = _net(text, TRAIN)
    _fill(net)
    net.blobs["label"].data[...] = [0, 1, 2, 0]
    before = [b.data.copy() for b in net.params["q"]]
    net.forward_backward()
    assert numpy.abs(net.params["ip"][0].diff).sum() > 0
    for b, was in zip(net.params["q"], before):
        numpy.testing.assert_array_equal(b.data, was)
    assert all(b is not net.params["q"][1] for b in net.learnable_params)


def test_lr_mult_on_a_q_layer_is_an_error_in_train():
    text = _qfc((1, 8), "num_output: 3", "").replace(
        'top: "q"', 'top: "q" param { lr_mult: 1 }')
    with pytest.raises(LayerError, match="layer 'q'.*lr_mult 1.*inference-only"):
        _net(text, TRAIN)
    _net(text, TEST)   # a TEST net never learns: accepted


@pytest.mark.parametrize("text,message", [
    (_qfc((1, 8), "num_output: 3 transpose: true", ""), "transpose is not supported"),
    (_qfc((1, 8), "num_output: 3", "codebook_size: 0"), "codebook_size must be positive"),
    (_qfc((1, 8), "num_output: 3", "subspace_dim: 0"), "subspace_dim must be positive"),
    (_qfc((1, 8), "num_output: 3", "codebook_size: 70000"), "more than 65536"),
    (_qconv((1, 2, 3, 3, 3), "num_output: 2 kernel_size: 1", ""), "1 or 2 spatial axes"),
])
def test_bad_parameters(text, message):
    with pytest.raises(LayerError, match=message):
        _net(text)


def test_blob_shapes_follow_qcnn_layout():
    net = _net(_qconv((1, 96, 27, 27), "num_output: 256 kernel_size: 5 pad: 2 group: 2", "")
               + '\nlayer { name: "f" type: "QInnerProduct" bottom: "q" top: "f" '
                 'inner_product_param { num_output: 10 } }')
    codebooks, indices, bias = net.params["q"]
    assert (codebooks.shape, indices.shape, bias.shape) == ((6, 128, 8), (256, 5, 5, 6), (256,))
    assert indices.dtype == numpy.uint8
    assert net.params["f"][0].shape == (256 * 27 * 27 // 4, 32, 4)
    assert net.blobs["q"].shape == (1, 256, 27, 27)
