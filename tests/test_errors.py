"""Bad input gets a clear error naming the file, the layer and the blob."""
import re

import numpy
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.errors import CaffeError, NetError, ParseError, WeightsError
from pycaffe_lite.proto import caffe_pb2

NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(NET)
    return path


def test_prototxt_syntax_error_names_file_line_column(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  type "ReLU"\n}\n')
    with pytest.raises(ParseError) as e:
        caffe.Net(str(path), caffe.TEST)
    assert f"{path}:4:" in str(e.value)


def test_unknown_field_names_file_and_line(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  permute_param { order: 0 }\n}\n')
    with pytest.raises(ParseError, match=r"bad.prototxt:4:.*permute_param"):
        caffe.Net(str(path), caffe.TEST)


def test_missing_model_file(tmp_path):
    with pytest.raises(ParseError, match="nope.prototxt: prototxt file not found|nope.prototxt"):
        caffe.Net(str(tmp_path / "nope.prototxt"), caffe.TEST)


def test_unknown_layer_type_lists_known(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('layer { name: "a" type: "Permute" top: "x" }')
    with pytest.raises(NetError, match=r"net.prototxt: layer 'a': unknown layer type "
                                       r"'Permute'; known types: .*Convolution"):
        caffe.Net(str(path), caffe.TEST)


def test_missing_bottom_names_layer_and_blob(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET + 'layer { name: "r" type: "ReLU" bottom: "ipp" top: "r" }')
    with pytest.raises(NetError, match="layer 'r'.*unknown bottom blob 'ipp'"):
        caffe.Net(str(path), caffe.TEST)


def test_weights_shape_mismatch_names_layer_and_both_shapes(tiny, tmp_path):
    net = caffe.Net(str(tiny), caffe.TEST)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    other = tmp_path / "other.prototxt"
    other.write_text(NET.replace("num_output: 4", "num_output: 5"))
    with pytest.raises(WeightsError) as e:
        caffe.Net(str(other), caffe.TEST, weights=str(weights))
    message = str(e.value)
    assert "w.caffemodel" in message and "'ip'" in message
    assert "(4, 3)" in message and "(5, 3)" in message


def test_truncated_caffemodel(tiny, tmp_path):
    net = caffe.Net(str(tiny), caffe.TEST)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="w.caffemodel: not a valid binary caffemodel"):
        caffe.Net(str(tiny), caffe.TEST, weights=str(weights))


ONNX_START = b"\x08\x07\x12\x07pytorch\x3a\x06\x0a\x04node\x42\x02\x10\x0d"


@pytest.mark.parametrize("content,what", [
    (b"PK\x03\x04" + b"\0" * 64, "zip"),
    (b"\x80\x02}q\x00" + b"\0" * 64, "pickle"),
    (b"\x80\x04\x95" + b"\0" * 64, "pickle"),
    (b"\x93NUMPY\x01\x00" + b"\0" * 64, "NumPy"),
    (b"\x1f\x8b\x08\x00" + b"\0" * 64, "gzip"),
    (ONNX_START, "ONNX"),
    (caffe_pb2.SolverState(iter=100, learned_net="x.caffemodel").SerializeToString(),
     r"solver state \(a .solverstate"),
    (caffe_pb2.BlobProto(num=1, channels=3, height=2, width=2, data=[0.5] * 12)
     .SerializeToString(), "BlobProto"),
])
def test_foreign_weight_files_are_named(tiny, tmp_path, content, what):
    weights = tmp_path / "model.bin"
    weights.write_bytes(content)
    with pytest.raises(WeightsError, match=f"model.bin: not a caffemodel: .*{what}"):
        caffe.Net(str(tiny), caffe.TEST, weights=str(weights))


def test_broken_hdf5_weights_are_named(tiny, tmp_path):
    # HDF5 is a weights format Caffe reads (CopyTrainedLayersFromHDF5): a file with its
    # signature but no readable content is reported as broken HDF5 weights, by name.
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(WeightsError, match="model.bin: cannot read HDF5 weights"):
        caffe.Net(str(tiny), caffe.TEST, weights=str(weights))


def test_empty_weight_file(tiny, tmp_path):
    weights = tmp_path / "empty.caffemodel"
    weights.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty.caffemodel: empty file, not a caffemodel"):
        caffe.Net(str(tiny), caffe.TEST, weights=str(weights))


def test_prototxt_passed_as_weights(tiny):
    with pytest.raises(WeightsError, match="no trained weights"):
        caffe.Net(str(tiny), caffe.TEST, weights=str(tiny))


def test_forward_with_wrong_input_shape(tiny):
    net = caffe.Net(str(tiny), caffe.TEST)
    with pytest.raises(CaffeError, match="blob 'data': got shape"):
        net.forward(data=numpy.zeros((2, 4)))
    with pytest.raises(CaffeError, match="not an input"):
        net.forward(ip=numpy.zeros((2, 4)))


def test_errors_are_caffe_errors_not_numpy_tracebacks(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('layer { name: "data" type: "Input" top: "data" '
                    'input_param { shape { dim: 2 dim: 3 } } }\n'
                    'layer { name: "c" type: "Concat" bottom: "data" bottom: "data" top: "c" '
                    'concat_param { axis: 5 } }')
    with pytest.raises(CaffeError, match="layer 'c'"):
        caffe.Net(str(path), caffe.TEST)


@pytest.mark.parametrize("lp,shapes,tops,message", [
    ('type: "Convolution" convolution_param { num_output: 2 kernel_size: 7 }',
     [(1, 2, 5, 5)], 1, "bottom 'BOTTOM0' spatial shape"),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 }', [(1, 2, 5)], 1,
     "bottom 'BOTTOM0' must have 4 axes"),
    ('type: "PReLU"', [(3,)], 1, "bottom 'BOTTOM0' must have at least 2 axes"),
    ('type: "HDF5Output" hdf5_output_param { file_name: "FILE" }', [(2, 3), (3, 1)], 0,
     "data blob 'BOTTOM0' and label blob 'BOTTOM1'"),
    ('type: "LRN"', [(1, 2, 5)], 1, "bottom 'BOTTOM0' has shape (1, 2, 5); expected 4 axes"),
    ('type: "Softmax" softmax_param { axis: 5 }', [(2, 3)], 1,
     "softmax_param.axis 5 out of range for bottom 'BOTTOM0'"),
])
@pytest.mark.parametrize("named", [True, False])
def test_bad_bottom_is_named_by_the_layer_base(lp, shapes, tops, message, named, tmp_path):
    """Every layer names a bottom through Layer.bottom_name: its prototxt name, or
    ``bottom[i]`` for a layer set up outside a net with unnamed bottoms."""
    from pycaffe_lite.testing.gradient_check import make_layer
    names = ["x", "y"][:len(shapes)] if named else []
    lp = lp.replace("FILE", str(tmp_path / "out.h5")) + "".join(f' bottom: "{n}"' for n in names)
    for i in range(len(shapes)):
        message = message.replace(f"BOTTOM{i}", names[i] if named else f"bottom[{i}]")
    with pytest.raises(CaffeError, match=r"layer '\w+' \(type \w+\): .*" + re.escape(message)):
        make_layer(lp, [numpy.zeros(s) for s in shapes], num_tops=tops)


@pytest.mark.parametrize("layer,field", [
    ('type: "Convolution" convolution_param { num_output: 0 kernel_size: 1 }',
     "convolution_param.num_output"),
    ('type: "InnerProduct" inner_product_param { num_output: 0 }',
     "inner_product_param.num_output"),
    ('type: "Embed" embed_param { num_output: 0 input_dim: 3 }', "embed_param.num_output"),
    ('type: "Embed" embed_param { num_output: 2 input_dim: 0 }', "embed_param.input_dim"),
    ('type: "Tile" tile_param { tiles: 0 }', "tile_param.tiles"),
])
def test_a_count_that_must_be_positive_is_named(layer, field, tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('layer { name: "data" type: "Input" top: "data" '
                    'input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }\n'
                    f'layer {{ name: "bad" bottom: "data" top: "out" {layer} }}\n')
    with pytest.raises(CaffeError, match=rf"'bad'.*{re.escape(field)} must be positive, got 0"):
        caffe.Net(str(path), caffe.TEST)
