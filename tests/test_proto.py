"""Checks of the protobuf schema (proto/caffe.proto) and its generated module."""

import ast
import glob
import os

import pytest
from google.protobuf import descriptor_pb2

from pycaffe_lite.proto import caffe_pb2 as pb

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_FILE = os.path.join(REPO_ROOT, "proto", "caffe.proto")
PB2_FILE = os.path.join(REPO_ROOT, "pycaffe_lite", "proto", "caffe_pb2.py")
GOLDEN = os.path.join(os.path.dirname(REPO_ROOT), "shared", "golden")
ALEXNET_WEIGHTS = os.path.join(GOLDEN, "nets", "alexnet_hwgq_test", "weights.caffemodel")


def _serialized_descriptor(path):
    """The FileDescriptorProto bytes embedded in a generated *_pb2.py file."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "AddSerializedFile"):
            return ast.literal_eval(node.args[0])
    raise AssertionError("no AddSerializedFile call in %s" % path)


def _file_proto(data):
    proto = descriptor_pb2.FileDescriptorProto()
    proto.ParseFromString(data)
    return proto


def _unknown_field_count(message):
    from google.protobuf import unknown_fields
    return len(unknown_fields.UnknownFieldSet(message))


def _unknown_paths(message, path="msg"):
    """Paths of the message and all sub-messages that carry unknown fields."""
    found = []
    if _unknown_field_count(message):
        found.append(path)
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.is_repeated:
            for i, item in enumerate(value):
                found += _unknown_paths(item, "%s.%s[%d]" % (path, field.name, i))
        else:
            found += _unknown_paths(value, "%s.%s" % (path, field.name))
    return found


def _have_unknown_fields_api():
    try:
        from google.protobuf import unknown_fields  # noqa: F401
    except ImportError:
        return False
    return True


def _load_net(path):
    net = pb.NetParameter()
    with open(path, "rb") as handle:
        net.ParseFromString(handle.read())
    return net


# (a) the committed module matches the schema --------------------------------

def test_committed_module_matches_schema(tmp_path):
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools not installed")
    status = protoc.main([
        "grpc_tools.protoc",
        "-I" + os.path.dirname(PROTO_FILE),
        "--python_out=" + str(tmp_path),
        PROTO_FILE,
    ])
    assert status == 0
    fresh = _file_proto(_serialized_descriptor(str(tmp_path / "caffe_pb2.py")))
    committed = _file_proto(_serialized_descriptor(PB2_FILE))
    assert committed == fresh, "caffe_pb2.py is stale: run `make proto`"


# (b) numbers and defaults that matter ----------------------------------------

def _number(message, field):
    return message.DESCRIPTOR.fields_by_name[field].number


@pytest.mark.parametrize("field,number", [
    ("name", 1), ("type", 2), ("bottom", 3), ("top", 4), ("loss_weight", 5),
    ("param", 6), ("blobs", 7), ("include", 8), ("exclude", 9), ("phase", 10),
    ("propagate_down", 11), ("transform_param", 100), ("loss_param", 101),
    ("accuracy_param", 102), ("convolution_param", 106),
    ("inner_product_param", 117), ("pooling_param", 121), ("relu_param", 123),
    ("batch_norm_param", 139), ("scale_param", 142), ("input_param", 143),
    ("recurrent_param", 146),
    # HWGQ fork
    ("binary_convolution_param", 147), ("binary_inner_product_param", 148),
    ("quant_param", 149),
    # moved from upstream 148 / 147 (see proto/README.md)
    ("clip_param", 150), ("swish_param", 151),
    # ours (see proto/README.md)
    ("act_quantize_param", 152),
])
def test_layer_parameter_numbers(field, number):
    assert _number(pb.LayerParameter, field) == number


def test_layer_parameter_numbers_unique():
    numbers = [f.number for f in pb.LayerParameter.DESCRIPTOR.fields]
    assert len(numbers) == len(set(numbers))


def test_net_parameter_numbers():
    assert _number(pb.NetParameter, "layer") == 100
    assert _number(pb.NetParameter, "layers") == 2
    assert _number(pb.NetParameter, "input_shape") == 8
    assert _number(pb.BlobProto, "shape") == 7
    assert _number(pb.BlobProto, "data") == 5
    assert _number(pb.BlobProto, "double_data") == 8


def test_v1_layer_parameter():
    assert pb.V1LayerParameter.CONVOLUTION == 4
    assert pb.V1LayerParameter.INNER_PRODUCT == 14
    assert pb.V1LayerParameter.DECONVOLUTION == 39
    assert pb.V1LayerParameter.ABSVAL == 35
    assert _number(pb.V1LayerParameter, "convolution_param") == 10
    assert _number(pb.V1LayerParameter, "param") == 1001
    assert _number(pb.V1LayerParameter, "blob_share_mode") == 1002
    assert _number(pb.V1LayerParameter, "layer") == 1
    assert pb.V1LayerParameter.PERMISSIVE == 1


@pytest.mark.parametrize("field,number", [
    ("net", 24), ("net_param", 25), ("train_net", 1), ("test_net", 2),
    ("test_iter", 3), ("test_interval", 4), ("base_lr", 5), ("display", 6),
    ("max_iter", 7), ("lr_policy", 8), ("gamma", 9), ("power", 10),
    ("momentum", 11), ("weight_decay", 12), ("stepsize", 13), ("snapshot", 14),
    ("snapshot_prefix", 15), ("solver_mode", 17), ("random_seed", 20),
    ("regularization_type", 29), ("solver_type", 30), ("delta", 31),
    ("average_loss", 33), ("stepvalue", 34), ("clip_gradients", 35),
    ("iter_size", 36), ("snapshot_format", 37), ("rms_decay", 38),
    ("momentum2", 39), ("type", 40), ("layer_wise_reduce", 41), ("weights", 42),
])
def test_solver_parameter_numbers(field, number):
    assert _number(pb.SolverParameter, field) == number


def test_solver_defaults():
    solver = pb.SolverParameter()
    assert solver.type == "SGD"
    assert solver.solver_type == pb.SolverParameter.SGD
    assert pb.SolverParameter.ADAM == 5
    assert solver.regularization_type == "L2"
    assert solver.clip_gradients == -1
    assert solver.iter_size == 1
    assert solver.random_seed == -1
    assert solver.solver_mode == pb.SolverParameter.GPU
    assert solver.snapshot_format == pb.SolverParameter.BINARYPROTO
    assert solver.momentum2 == pytest.approx(0.999)
    assert solver.delta == pytest.approx(1e-8)
    assert solver.test_initialization is True
    assert _number(pb.SolverState, "current_step") == 4


def test_layer_defaults():
    assert pb.ConvolutionParameter().bias_term is True
    assert pb.ConvolutionParameter().group == 1
    assert pb.InnerProductParameter().bias_term is True
    assert pb.PoolingParameter().pool == pb.PoolingParameter.MAX
    assert pb.PoolingParameter().stride == 1
    assert pb.PoolingParameter().round_mode == pb.PoolingParameter.CEIL
    bn = pb.BatchNormParameter()
    assert bn.moving_average_fraction == pytest.approx(0.999)
    assert bn.eps == pytest.approx(1e-5)
    assert bn.HasField("use_global_stats") is False
    assert pb.LossParameter().normalization == pb.LossParameter.VALID
    assert pb.LossParameter.BATCH_SIZE == 2
    assert pb.LRNParameter().local_size == 5
    assert pb.LRNParameter().beta == pytest.approx(0.75)
    assert pb.EltwiseParameter().operation == pb.EltwiseParameter.SUM
    assert pb.FillerParameter().type == "constant"
    assert pb.NetState().phase == pb.TEST
    assert pb.ParamSpec().lr_mult == 1.0
    assert pb.SwishParameter().beta == 1.0
    assert pb.InfogainLossParameter().axis == 1


def test_hwgq_messages():
    binconv = pb.BinaryConvolutionParameter()
    assert binconv.use_alpha is False and binconv.use_binarization is True
    binip = pb.BinaryInnerProductParameter()
    assert binip.use_alpha is False and binip.use_binarization is True
    quant = pb.QuantParameter()
    assert quant.forward_func == "hwgq"
    assert quant.backward_func == "relu"
    assert quant.clip_thr == 0 and quant.negative_slope == 0
    assert [_number(pb.QuantParameter, f) for f in
            ("forward_func", "backward_func", "clip_thr", "negative_slope", "thrs", "centers")] \
        == [1, 2, 3, 4, 5, 6]
    fields = pb.QuantParameter.DESCRIPTOR.fields_by_name
    assert fields["thrs"].is_repeated and fields["centers"].is_repeated
    assert fields["centers"].type == fields["centers"].TYPE_FLOAT


def test_clip_parameter_required():
    fields = pb.ClipParameter.DESCRIPTOR.fields_by_name
    assert fields["min"].is_required and fields["max"].is_required


# (c) golden caffemodels from the real HWGQ Caffe ----------------------------

@pytest.mark.skipif(not os.path.exists(ALEXNET_WEIGHTS), reason="golden data not present")
def test_alexnet_hwgq_caffemodel():
    raw = open(ALEXNET_WEIGHTS, "rb").read()
    net = _load_net(ALEXNET_WEIGHTS)
    binconv = [layer for layer in net.layer if layer.type == "BinaryConvolution"]
    assert binconv, "expected BinaryConvolution layers"
    for layer in binconv:
        assert layer.HasField("binary_convolution_param")
        assert layer.binary_convolution_param.use_alpha is True
        assert layer.binary_convolution_param.use_binarization is True
        assert layer.convolution_param.num_output > 0
        assert len(layer.blobs) >= 1
    quant = [layer for layer in net.layer if layer.type == "Quant"]
    assert quant and all(q.quant_param.forward_func for q in quant)
    again = pb.NetParameter()
    again.ParseFromString(net.SerializeToString())
    assert again == net
    assert len(net.SerializeToString()) == len(raw)
    if _have_unknown_fields_api():
        assert _unknown_paths(net, "net") == []


def _golden_caffemodels():
    return sorted(glob.glob(os.path.join(GOLDEN, "layers", "*", "weights.caffemodel"))
                  + glob.glob(os.path.join(GOLDEN, "nets", "*", "weights.caffemodel")))


@pytest.mark.skipif(not _golden_caffemodels(), reason="golden data not present")
@pytest.mark.skipif(not _have_unknown_fields_api(),
                    reason="google.protobuf.unknown_fields not available")
def test_golden_caffemodels_have_no_unknown_fields():
    for path in _golden_caffemodels():
        net = _load_net(path)
        assert net.layer, path
        for layer in net.layer:
            assert _unknown_field_count(layer) == 0, (path, layer.name)
        assert _unknown_paths(net, "net") == [], path
