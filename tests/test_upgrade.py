"""Old Caffe files load unchanged: V0 / V1 nets and caffemodels, old solvers, the tools.

Every upgrade rule of Caffe's ``upgrade_proto.cpp`` has a small hand-written
case here; the real files of ``../shared/fixtures`` (V0 LeNet and ImageNet
definitions, V1 CIFAR-10 caffemodels) must load and give OpenCV DNN's outputs,
and what the upgrade tools write must read back bit-identically.
"""
import logging
import subprocess
import sys

import numpy
import pytest
from google.protobuf import text_format

import pycaffe_lite as caffe
from conftest import FIXTURES, REPO
from pycaffe_lite import cli
from pycaffe_lite.errors import ParseError, WeightsError
from pycaffe_lite.io import files, upgrade
from pycaffe_lite.io.synthetic import synthesize_data_layers
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.net import Net
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.tools import (upgrade_net_proto_binary, upgrade_net_proto_text,
                                upgrade_solver_proto_text)

V0_DIR = "bvlc/history_v0_20833e05c"
V0_LENET = f"{V0_DIR}/lenet.prototxt"
LENET_WEIGHTS = "models/lenet_mnist/lenet_iter_10000.caffemodel"
CIFAR = "models/cifar10_quick_v1"
CIFAR_DEPLOY = f"{CIFAR}/cifar10_quick_deploy_bvlc_v2.prototxt"
CIFAR_WEIGHTS = f"{CIFAR}/cifar10_quick_iter_5000.caffemodel"
NIN = "models/nin_cifar10_v1"
NIN_DEPLOY = f"{NIN}/nin_deploy_v1_DERIVED.prototxt"
NIN_WEIGHTS = f"{NIN}/cifar10_nin.caffemodel"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def fixture(relative):
    path = FIXTURES / relative
    if not path.exists():
        pytest.skip(f"fixture {path} not found (is ../shared present?)")
    return path


def net_param(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def upgraded(text, weights=False):
    net = net_param(text)
    report = upgrade.upgrade_net_as_needed(net, "<test>", weights=weights)
    return net, report


def one_layer(text, **kwargs):
    net, report = upgraded(text, **kwargs)
    layers = [layer for layer in net.layer if layer.type != "Input"]
    assert len(layers) == 1, net
    return layers[0], report


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def cifar_images():
    """The three real CIFAR images, BGR 0..255 minus 120 (see the fixtures README)."""
    cv2 = pytest.importorskip("cv2")
    images = []
    for name in ("cat10.png", "dog10.png", "truck10.png"):
        img = cv2.imread(str(fixture(f"{CIFAR}/images/{name}")))
        images.append(img.transpose(2, 0, 1).astype(numpy.float32) - numpy.float32(120))
    return numpy.ascontiguousarray(numpy.stack(images))


def params_of(net):
    return {name: [numpy.array(blob.data) for blob in blobs] for name, blobs in net.params.items()}


# --- V0 -> V1 -> V2: one case per rule ------------------------------------------------

# UpgradeV0LayerType then UpgradeV1LayerType, written out independently of the tables.
V0_TYPES = {
    "accuracy": "Accuracy", "bnll": "BNLL", "concat": "Concat", "conv": "Convolution",
    "data": "Data", "dropout": "Dropout", "euclidean_loss": "EuclideanLoss",
    "flatten": "Flatten", "hdf5_data": "HDF5Data", "hdf5_output": "HDF5Output",
    "im2col": "Im2col", "images": "ImageData", "infogain_loss": "InfogainLoss",
    "innerproduct": "InnerProduct", "lrn": "LRN",
    "multinomial_logistic_loss": "MultinomialLogisticLoss", "pool": "Pooling",
    "relu": "ReLU", "sigmoid": "Sigmoid", "softmax": "Softmax",
    "softmax_loss": "SoftmaxWithLoss", "split": "Split", "tanh": "TanH",
    "window_data": "WindowData",
}


@pytest.mark.parametrize("v0,v2", sorted(V0_TYPES.items()))
def test_v0_layer_type(v0, v2):
    layer, report = one_layer(f'layers {{ layer {{ name: "l" type: "{v0}" }} }}')
    assert layer.type == v2 and layer.name == "l"
    assert report.steps == ["V0 layers", "V1 layers"] and not report.problems


def test_v0_conv_fields_go_to_convolution_param():
    layer, report = one_layer('''input: "x" input_dim: 1 input_dim: 2 input_dim: 5 input_dim: 5
        layers { bottom: "x" top: "y" layer {
        name: "c" type: "conv" num_output: 8 biasterm: false kernelsize: 3 stride: 2 pad: 1
        group: 2 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.5 }
        blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 } }''')
    p = layer.convolution_param
    assert (p.num_output, p.bias_term, p.group) == (8, False, 2)
    assert (list(p.kernel_size), list(p.stride), list(p.pad)) == ([3], [2], [1])
    assert p.weight_filler.type == "xavier" and p.bias_filler.value == 0.5
    assert [(s.lr_mult, s.decay_mult) for s in layer.param] == [(1, 1), (2, 0)]
    assert list(layer.bottom) == ["x"] and list(layer.top) == ["y"]
    assert not report.problems


def test_v0_innerproduct_fields():
    layer, _ = one_layer('''layers { layer { name: "ip" type: "innerproduct" num_output: 10
        biasterm: false weight_filler { type: "gaussian" std: 0.01 } } }''')
    p = layer.inner_product_param
    assert (p.num_output, p.bias_term, p.weight_filler.std) == (10, False,
                                                                numpy.float32(0.01))


@pytest.mark.parametrize("v0_pool,v2_pool", [("MAX", "MAX"), ("AVE", "AVE"),
                                             ("STOCHASTIC", "STOCHASTIC")])
def test_v0_pool_fields_go_to_pooling_param(v0_pool, v2_pool):
    layer, _ = one_layer(f'''layers {{ layer {{ name: "p" type: "pool" pool: {v0_pool}
        kernelsize: 3 stride: 2 pad: 1 }} }}''')
    p = layer.pooling_param
    assert caffe_pb2.PoolingParameter.PoolMethod.Name(p.pool) == v2_pool
    assert (p.kernel_size, p.stride, p.pad) == (3, 2, 1)


def test_v0_dropout_lrn_concat_fields():
    net, report = upgraded('''
        layers { layer { name: "d" type: "dropout" dropout_ratio: 0.3 } }
        layers { layer { name: "n" type: "lrn" local_size: 3 alpha: 0.001 beta: 0.5 k: 2 } }
        layers { layer { name: "c" type: "concat" concat_dim: 0 } }''')
    drop, lrn, concat = net.layer
    assert drop.dropout_param.dropout_ratio == numpy.float32(0.3)
    assert (lrn.lrn_param.local_size, lrn.lrn_param.k) == (3, 2)
    assert lrn.lrn_param.alpha == numpy.float32(0.001) and lrn.lrn_param.beta == 0.5
    assert concat.concat_param.HasField("concat_dim") and concat.concat_param.concat_dim == 0
    assert not report.problems


def test_v0_data_layers_fields_and_transformation():
    net, report = upgraded('''
        layers { layer { name: "d" type: "data" source: "db" batchsize: 64 rand_skip: 5
                         scale: 0.5 meanfile: "m.binaryproto" cropsize: 227 mirror: true } }
        layers { layer { name: "h" type: "hdf5_data" source: "list.txt" batchsize: 4 } }
        layers { layer { name: "i" type: "images" source: "files.txt" batchsize: 2
                         rand_skip: 1 shuffle_images: true new_height: 32 new_width: 30 } }
        layers { layer { name: "w" type: "window_data" source: "w.txt" batchsize: 8
                         det_fg_threshold: 0.6 det_bg_threshold: 0.4 det_fg_fraction: 0.3
                         det_context_pad: 16 det_crop_mode: "square" } }
        layers { layer { name: "g" type: "infogain_loss" source: "H.binaryproto" } }
        layers { layer { name: "o" type: "hdf5_output" hdf5_output_param {
                         file_name: "out.h5" } } }''')
    data, hdf5, images, window, infogain, output = net.layer
    assert (data.data_param.source, data.data_param.batch_size,
            data.data_param.rand_skip) == ("db", 64, 5)
    t = data.transform_param
    assert (t.scale, t.mean_file, t.crop_size, t.mirror) == (0.5, "m.binaryproto", 227, True)
    assert (hdf5.hdf5_data_param.source, hdf5.hdf5_data_param.batch_size) == ("list.txt", 4)
    p = images.image_data_param
    assert (p.source, p.batch_size, p.rand_skip, p.shuffle, p.new_height, p.new_width) == (
        "files.txt", 2, 1, True, 32, 30)
    w = window.window_data_param
    assert (w.source, w.batch_size, w.context_pad, w.crop_mode) == ("w.txt", 8, 16, "square")
    assert [w.fg_threshold, w.bg_threshold, w.fg_fraction] == [
        numpy.float32(0.6), numpy.float32(0.4), numpy.float32(0.3)]
    assert infogain.infogain_loss_param.source == "H.binaryproto"
    assert output.hdf5_output_param.file_name == "out.h5"
    assert not report.problems


def test_v0_padding_layer_folds_into_next_conv_and_pool():
    net, _ = upgraded('''input: "data" input_dim: 1 input_dim: 1 input_dim: 8 input_dim: 8
        layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
        layers { layer { name: "conv1" type: "conv" num_output: 2 kernelsize: 3 }
                 bottom: "pad1" top: "conv1" }
        layers { layer { name: "pad2" type: "padding" pad: 1 } bottom: "conv1" top: "pad2" }
        layers { layer { name: "pool2" type: "pool" kernelsize: 3 } bottom: "pad2"
                 top: "pool2" }''')
    assert [layer.name for layer in net.layer] == ["input", "conv1", "pool2"]
    conv, pool = net.layer[1:]
    assert list(conv.bottom) == ["data"] and list(conv.convolution_param.pad) == [2]
    assert list(pool.bottom) == ["conv1"] and pool.pooling_param.pad == 1
    shapes = {name: blob.shape for name, blob in Net(net, phase=TEST).blobs.items()}
    assert shapes == {"data": (1, 1, 8, 8), "conv1": (1, 2, 10, 10), "pool2": (1, 2, 10, 10)}


@pytest.mark.parametrize("consumer,needle", [
    ('layer { name: "r" type: "relu" } bottom: "p" top: "r"',
     r"layer 1 \('r'\) reads the output of padding layer 'p'.*only conv and pool"),
    ('layer { name: "c" type: "conv" } bottom: "p" bottom: "data" top: "c"',
     r"layer 1 \('c'\).*single bottom, it takes 2"),
    ('layer { name: "c" type: "conv" } bottom: "nope" top: "c"',
     r"layer 1 \('c'\): unknown bottom blob 'nope'"),
])
def test_v0_padding_layer_errors_name_the_layer(consumer, needle):
    net = net_param(f'''input: "data"
        layers {{ layer {{ name: "p" type: "padding" pad: 1 }} bottom: "data" top: "p" }}
        layers {{ {consumer} }}''')
    with pytest.raises(ParseError, match=f"<test>: {needle}"):
        upgrade.upgrade_net_as_needed(net, "<test>")


def test_v0_unknown_type_names_the_layer():
    with pytest.raises(ParseError, match=r"layer 0 \('x'\): unknown V0 layer type 'fancy'"):
        upgraded('layers { layer { name: "x" type: "fancy" } }')


def test_v0_field_without_a_place_is_dropped_and_reported(caplog, tmp_path):
    text = 'layers { layer { name: "r" type: "relu" num_output: 3 } bottom: "a" top: "b" }'
    layer, report = one_layer('input: "a" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1 '
                              + text)
    assert layer.type == "ReLU" and not layer.HasField("convolution_param")
    assert report.problems == ["layer 0 ('r'): unknown parameter num_output for type 'relu'"]
    # Reading logs the problem as an error naming the file and the layer, and goes on.
    path = write(tmp_path, "odd.prototxt", 'input: "a" input_dim: 1 input_dim: 1 '
                 'input_dim: 1 input_dim: 1 ' + text)
    caplog.set_level(logging.INFO, logger="pycaffe_lite")
    files.read_net(str(path))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(str(path) in m and "'r'" in m and "num_output" in m for m in errors), errors
    # The tool still writes the file, and exits 1 as Caffe's does.
    out = tmp_path / "out.prototxt"
    assert upgrade_net_proto_text.main([str(path), str(out)]) == 1
    assert files.identify(str(out)).version == "V2"


def test_v0_net_fields_and_weights_are_kept():
    blob = files.array_to_blob_proto(numpy.arange(6, dtype=numpy.float32).reshape(2, 3))
    net = caffe_pb2.NetParameter(name="old", force_backward=True)
    net.input.append("data")
    net.input_dim.extend([1, 3, 1, 1])
    layer = net.layers.add(bottom=["data"], top=["ip"])
    layer.layer.name, layer.layer.type, layer.layer.num_output = "ip", "innerproduct", 2
    layer.layer.blobs.add().CopyFrom(blob)
    report = upgrade.upgrade_net_as_needed(net, weights=True)
    assert report.steps == ["V0 layers", "V1 layers", "input fields"]
    assert net.name == "old" and net.force_backward
    assert [layer.type for layer in net.layer] == ["Input", "InnerProduct"]
    assert net.layer[1].blobs[0] == blob


def test_mixed_v0_and_v1_layers_are_refused():
    with pytest.raises(ParseError, match=r"layer 1 \('b'\) is a V1 layer in a V0 net"):
        upgraded('layers { layer { name: "a" type: "relu" } } '
                 'layers { name: "b" type: RELU }')


# --- V1 -> V2 ---------------------------------------------------------------------------

V1_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax",
    "BNLL": "BNLL", "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution", "DATA": "Data",
    "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN",
    "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split",
    "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}


def test_every_v1_type_is_mapped():
    assert set(V1_TYPES) == set(caffe_pb2.V1LayerParameter.LayerType.keys())


@pytest.mark.parametrize("v1,v2", sorted(V1_TYPES.items()))
def test_v1_layer_type(v1, v2):
    layer, report = one_layer(f'layers {{ name: "l" type: {v1} }}')
    assert layer.type == v2 and layer.name == "l"
    assert report.steps == ["V1 layers"]


def test_v1_param_specs_from_blobs_lr_weight_decay_names_and_share_modes():
    layer, _ = one_layer('''layers { name: "c" type: CONVOLUTION
        param: "w" param: "b" blob_share_mode: PERMISSIVE
        blobs_lr: 1 blobs_lr: 2 weight_decay: 0.5 }''')
    w, b = layer.param
    assert (w.name, w.lr_mult, w.decay_mult) == ("w", 1, 0.5)
    assert w.share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert (b.name, b.lr_mult) == ("b", 2)
    assert not b.HasField("decay_mult") and not b.HasField("share_mode")


def test_v1_layer_connections_rules_and_loss_weights():
    layer, _ = one_layer('''layers { name: "loss" type: SOFTMAX_LOSS bottom: "a" bottom: "b"
        top: "l" loss_weight: 2 include { phase: TRAIN } exclude { stage: "deploy" } }''')
    assert list(layer.bottom) == ["a", "b"] and list(layer.top) == ["l"]
    assert list(layer.loss_weight) == [2]
    assert layer.include[0].phase == TRAIN and list(layer.exclude[0].stage) == ["deploy"]


@pytest.mark.parametrize("field", upgrade.V1_PARAM_FIELDS)
def test_every_v1_parameter_message_is_copied(field):
    v1 = caffe_pb2.V1LayerParameter(name="l", type=caffe_pb2.V1LayerParameter.RELU)
    getattr(v1, field).SetInParent()
    layer, _ = upgrade.upgrade_v1_layer(v1)
    assert layer.HasField(field)


def test_v1_parameter_contents_are_copied():
    layer, _ = one_layer('''layers { name: "c" type: CONVOLUTION convolution_param {
        num_output: 4 pad: 1 kernel_size: 3 weight_filler { type: "msra" } } }''')
    p = layer.convolution_param
    assert (p.num_output, list(p.pad), list(p.kernel_size)) == (4, [1], [3])
    assert p.weight_filler.type == "msra"


@pytest.mark.parametrize("v1_type,field", [("DATA", "data_param"),
                                           ("IMAGE_DATA", "image_data_param"),
                                           ("WINDOW_DATA", "window_data_param")])
def test_v1_data_transformation_fields_move_to_transform_param(v1_type, field):
    layer, report = one_layer(f'''layers {{ name: "d" type: {v1_type} top: "data"
        transform_param {{ scale: 2 }}
        {field} {{ source: "s" scale: 0.25 mean_file: "m" crop_size: 11 mirror: true }} }}''')
    t = layer.transform_param
    assert (t.scale, t.mean_file, t.crop_size, t.mirror) == (0.25, "m", 11, True)
    params = getattr(layer, field)
    assert params.source == "s"
    assert not any(params.HasField(f) for f in ("scale", "mean_file", "crop_size", "mirror"))
    assert report.steps == ["data transformation fields", "V1 layers"]


def test_v1_with_layer_entries_too_is_refused():
    with pytest.raises(ParseError, match="both 'layer'.*and 'layers'"):
        upgraded('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }')


def test_v1_type_unknown_to_caffe():
    """A fork's enum value: a net definition cannot build it; weights still load by name."""
    v1 = caffe_pb2.V1LayerParameter(name="roi")
    raw = caffe_pb2.NetParameter()
    raw.ParseFromString(bytes([2 << 3 | 2, len(v1.SerializeToString()) + 2])
                        + v1.SerializeToString() + bytes([5 << 3, 100]))
    net = caffe_pb2.NetParameter()
    net.CopyFrom(raw)
    with pytest.raises(ParseError, match=r"layer 0 \('roi'\): V1 layer type number 100"):
        upgrade.upgrade_net_as_needed(net)
    upgrade.upgrade_net_as_needed(raw, weights=True)
    assert raw.layer[0].name == "roi" and raw.layer[0].type == ""


def test_v1_caffemodel_4d_blob_shapes_load_into_v2_layers(tmp_path):
    """V1 caffemodels store an InnerProduct weight as 1 x 1 x N x K, a bias as 1 x 1 x 1 x N."""
    weights = numpy.arange(6, dtype=numpy.float32).reshape(2, 3)
    model = caffe_pb2.NetParameter()
    v1 = model.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    files.array_to_blob_proto(weights, proto=v1.blobs.add(), legacy=True)
    files.array_to_blob_proto(numpy.float32([7, 8]), proto=v1.blobs.add(), legacy=True)
    assert (v1.blobs[0].num, v1.blobs[0].height, v1.blobs[1].width) == (1, 2, 2)
    path = tmp_path / "old.caffemodel"
    files.write_binary_proto(str(path), model)
    net = Net(net_param('''layer { name: "in" type: "Input" top: "x" input_param {
        shape { dim: 1 dim: 3 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
                inner_product_param { num_output: 2 } }'''), phase=TEST, weights=str(path))
    numpy.testing.assert_array_equal(net.params["ip"][0].data, weights)
    numpy.testing.assert_array_equal(net.params["ip"][1].data, [7, 8])


# --- inputs, BatchNorm, solvers ----------------------------------------------------------

def test_input_dim_form_becomes_an_input_layer_first():
    net, report = upgraded('''input: "a" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4
        input: "b" input_dim: 5 input_dim: 6 input_dim: 7 input_dim: 8
        layer { name: "r" type: "ReLU" bottom: "a" top: "r" }''')
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["a", "b"])
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert net.layer[1].name == "r" and not net.input and not net.input_dim
    assert report.steps == ["input fields"]


def test_input_shape_form_becomes_an_input_layer():
    net, _ = upgraded('input: "x" input_shape { dim: 2 dim: 5 }')
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[2, 5]]
    assert not net.input_shape


def test_input_shape_fixture_builds():
    net = Net(str(fixture("bvlc/mnist_input_shape_form.prototxt")), phase=TEST)
    assert net.blobs["data"].shape == (1, 1, 28, 28)


def test_bare_input_names_are_dropped_from_caffemodels_only():
    net, _ = upgraded('input: "data" layer { name: "ip" type: "InnerProduct" }', weights=True)
    assert [layer.name for layer in net.layer] == ["ip"] and not net.input
    with pytest.raises(ParseError, match="'input' given without 'input_shape' or 'input_dim'"):
        upgraded('input: "data"')


@pytest.mark.parametrize("text,needle", [
    ('input: "a" input: "b" input_shape { dim: 1 }', "2 'input' names but 1 'input_shape'"),
    ('input: "a" input_dim: 1 input_dim: 2', "'input_dim' needs 4 values per input"),
])
def test_inconsistent_inputs_are_errors(text, needle):
    with pytest.raises(ParseError, match=needle):
        upgraded(text)


def test_batch_norm_with_three_param_specs_is_frozen():
    net, report = upgraded('''
        layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 decay_mult: 1 name: "m" }
                param { lr_mult: 1 } param { lr_mult: 1 } }
        layer { name: "bn2" type: "BatchNorm" param { lr_mult: 1 } }
        layer { name: "s" type: "Scale" param { lr_mult: 1 } param { lr_mult: 1 }
                param { lr_mult: 1 } }''')
    bn, bn2, scale = net.layer
    assert [(p.lr_mult, p.decay_mult) for p in bn.param] == [(0, 0)] * 3
    assert bn.param[0].name == "m"
    assert bn2.param[0].lr_mult == 1 and scale.param[0].lr_mult == 1
    assert report.steps == ["BatchNorm params"]


def test_current_net_needs_nothing():
    net, report = upgraded('layer { name: "a" type: "Input" top: "x" '
                           'input_param { shape { dim: 1 } } }')
    assert report == upgrade.Report([], []) and not upgrade.net_needs_upgrade(net)


SOLVER_TYPES = [("SGD", "SGD"), ("NESTEROV", "Nesterov"), ("ADAGRAD", "AdaGrad"),
                ("RMSPROP", "RMSProp"), ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")]


@pytest.mark.parametrize("old,new", SOLVER_TYPES)
def test_solver_type_enum_becomes_type_string(tmp_path, caplog, old, new):
    path = write(tmp_path, "solver.prototxt", f'base_lr: 0.1 solver_type: {old}')
    caplog.set_level(logging.INFO, logger="pycaffe_lite")
    solver = files.read_solver(str(path))
    assert solver.type == new and not solver.HasField("solver_type")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0]


def test_solver_with_type_and_solver_type_is_refused_as_caffe_does(tmp_path):
    path = write(tmp_path, "solver.prototxt", 'type: "Adam" solver_type: ADAM')
    with pytest.raises(ParseError, match="solver.prototxt: both 'type: \"Adam\"' and the "
                                         "deprecated 'solver_type: ADAM'"):
        files.read_solver(str(path))


def test_v0_era_solver_reads():
    solver = files.read_solver(str(fixture(f"{V0_DIR}/lenet_solver.prototxt")))
    assert solver.solver_mode == caffe_pb2.SolverParameter.GPU      # written "solver_mode: 1"
    assert list(solver.test_net) == ["lenet_test.prototxt"] and solver.type == "SGD"


# --- one warning naming the file ----------------------------------------------------------

@pytest.mark.parametrize("relative,weights,expected", [
    (V0_LENET, False, "V0 layers, input fields"),
    (NIN_DEPLOY, False, "V1 layers, input fields"),
    (CIFAR_WEIGHTS, True, "V1 layers"),
])
def test_one_warning_names_the_upgraded_file(caplog, relative, weights, expected):
    path = str(fixture(relative))
    caplog.set_level(logging.INFO, logger="pycaffe_lite")
    (files.read_weights if weights else files.read_net)(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{path}: upgraded in memory from deprecated {expected};")


def test_current_files_read_without_warnings(caplog):
    caplog.set_level(logging.INFO, logger="pycaffe_lite")
    files.read_net(str(fixture(CIFAR_DEPLOY)))
    files.read_weights(str(fixture(LENET_WEIGHTS)))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --- what a file is ---------------------------------------------------------------------

@pytest.mark.parametrize("relative,expected", [
    (V0_LENET, ("text", "net", "V0")),
    (f"{NIN}/nin_model.prototxt", ("text", "net", "V1")),
    (CIFAR_DEPLOY, ("text", "net", "V2")),
    (CIFAR_WEIGHTS, ("binary", "net", "V1")),
    (LENET_WEIGHTS, ("binary", "net", "V2")),
    (f"{V0_DIR}/lenet_solver.prototxt", ("text", "solver", None)),
    ("data/imagenet_mean.binaryproto", ("binary", "blob", None)),
])
def test_identify(relative, expected):
    assert tuple(files.identify(str(fixture(relative)))) == expected


def onnx_bytes():
    """The start of an ONNX ModelProto: ir_version, producer_name, graph, opset_import."""
    graph = b"\x0a\x04node"
    return (b"\x08\x07" + b"\x12\x07pytorch" + b"\x3a" + bytes([len(graph)]) + graph
            + b"\x42\x02\x10\x0d")


def test_onnx_file_is_named(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes())
    with pytest.raises(WeightsError, match="model.onnx: not a caffemodel: this is an ONNX"):
        files.read_weights(str(path))
    with pytest.raises(ParseError, match="model.onnx: not a Caffe file: this is an ONNX"):
        files.identify(str(path))


def test_solver_given_as_net_and_net_given_as_solver(tmp_path):
    solver = write(tmp_path, "solver.prototxt", 'net: "x.prototxt" base_lr: 0.1')
    with pytest.raises(ParseError, match="solver.prototxt: a solver definition, not a net"):
        caffe.Net(str(solver), caffe.TEST)
    with pytest.raises(ParseError, match="lenet.prototxt: a net definition, not a solver"):
        files.read_solver(str(fixture(V0_LENET)))
    with pytest.raises(ParseError, match="not a solver prototxt: this is a Caffe net"):
        files.read_solver(str(fixture(LENET_WEIGHTS)))


def test_fork_solver_error_is_the_solver_reading(tmp_path):
    """Neither a net nor a BVLC solver: the error of the reading that got further."""
    path = write(tmp_path, "solver.prototxt", 'net: "x"\nbase_lr: 0.1\nfork_option: 1\n')
    with pytest.raises(ParseError, match=r"solver.prototxt:3:1: .*SolverParameter.*fork_option"):
        files.read_net(str(path))


# --- the real files ---------------------------------------------------------------------

def test_cifar10_quick_v1_caffemodel_matches_opencv_and_classifies():
    from test_models import compare_with_opencv
    outputs = compare_with_opencv(CIFAR_DEPLOY, CIFAR_WEIGHTS, {"data": cifar_images()})
    predicted = [CIFAR10_CLASSES[i] for i in outputs["prob"].reshape(3, 10).argmax(axis=1)]
    assert predicted == ["cat", "dog", "truck"]


def test_nin_v1_prototxt_and_caffemodel_match_opencv():
    from test_models import compare_with_opencv
    compare_with_opencv(NIN_DEPLOY, NIN_WEIGHTS, {"data": cifar_images()})


def test_nin_v1_train_definition_loads_the_weights_and_runs():
    """The V1 train/test definition (Data layers, swapped for synthetic data) with the
    V1 caffemodel computes the deploy net's scores."""
    images = cifar_images()
    model = synthesize_data_layers(files.read_net(str(fixture(f"{NIN}/nin_model.prototxt"))),
                                   shapes={"data": images.shape, "label": (3,)})
    net = Net(model, phase=TEST, weights=str(fixture(NIN_WEIGHTS)))
    net.blobs["data"].data[...] = images
    net.forward_range(1)                                   # after the data layer
    deploy = caffe.Net(str(fixture(NIN_DEPLOY)), caffe.TEST, weights=str(fixture(NIN_WEIGHTS)))
    deploy.blobs["data"].reshape(*images.shape)
    deploy.reshape()
    deploy.forward(data=images)
    numpy.testing.assert_array_equal(net.blobs["pool3"].data, deploy.blobs["pool3"].data)
    assert numpy.isfinite(net.blobs["loss"].data).all()


def test_v0_lenet_matches_opencv():
    from test_models import compare_with_opencv, mnist
    images, _ = mnist(count=64)
    compare_with_opencv(V0_LENET, LENET_WEIGHTS,
                        {"data": images[:, None] * numpy.float32(0.00390625)})


def test_v0_lenet_scores_99_14_percent_on_mnist():
    from test_models import mnist, ours
    images, labels = mnist()
    proto, weights = fixture(V0_LENET), fixture(LENET_WEIGHTS)
    correct = 0
    for start in range(0, len(images), 2000):
        chunk = images[start:start + 2000, None] * numpy.float32(0.00390625)
        outputs, _ = ours(proto, weights, {"data": chunk})
        correct += int((outputs["prob"].argmax(axis=1) == labels[start:start + 2000]).sum())
    assert correct == 9914, f"top-1 {correct / 100:.2f}%, expected 99.14%"


def blob_shapes(relative, phase, synthetic=False):
    model = files.read_net(str(fixture(relative)))
    if synthetic:
        model = synthesize_data_layers(model, batch=2)
    net = Net(model, phase=phase)
    return ({name: blob.shape for name, blob in net.blobs.items()},
            {name: [blob.shape for blob in blobs] for name, blobs in net.params.items()})


def test_v0_imagenet_deploy_has_caffenet_shapes_and_alexnet_params():
    v0_blobs, v0_params = blob_shapes(f"{V0_DIR}/models/imagenet.prototxt", TEST)
    caffenet_blobs, caffenet_params = blob_shapes(
        "bvlc/models/bvlc_reference_caffenet/deploy.prototxt", TEST)
    assert v0_blobs == caffenet_blobs and v0_params == caffenet_params
    _, alexnet_params = blob_shapes("bvlc/models/bvlc_alexnet/deploy.prototxt", TEST)
    assert v0_params == alexnet_params
    assert v0_blobs["conv2"] == (10, 256, 27, 27)    # the folded padding layer's pad: 2


@pytest.mark.parametrize("v0,phase", [
    ("imagenet_val.prototxt", TEST),
    ("imagenet_train.prototxt", TRAIN),
])
def test_v0_imagenet_train_val_have_caffenet_shapes(v0, phase):
    """Same trunk and params; the heads differ (the 2014 val net scored softmax outputs)."""
    v0_blobs, v0_params = blob_shapes(f"{V0_DIR}/examples/imagenet/{v0}", phase,
                                      synthetic=True)
    v2_blobs, v2_params = blob_shapes("bvlc/models/bvlc_reference_caffenet/train_val.prototxt",
                                      phase, synthetic=True)
    assert v0_params == v2_params
    names = [name for name in v2_blobs if "split" not in name]
    trunk = names[:names.index("fc8") + 1]                 # data, label, conv1 ... fc8
    assert {name: v0_blobs[name] for name in trunk} == {name: v2_blobs[name] for name in trunk}


# --- round trip through the upgrade tools ---------------------------------------------------

def test_binary_tool_output_reads_back_bit_identical(tmp_path):
    source = fixture(NIN_WEIGHTS)
    target = tmp_path / "nin_v2.caffemodel"
    assert upgrade_net_proto_binary.main([str(source), str(target)]) == 0
    assert files.identify(str(target)) == ("binary", "net", "V2")
    raw, _ = files.read_net_param(str(target))
    assert not upgrade.net_needs_upgrade(raw)
    assert raw == files.read_weights(str(source))
    images = cifar_images()
    deploy = str(fixture(NIN_DEPLOY))
    nets = [caffe.Net(deploy, caffe.TEST, weights=str(w)) for w in (source, target)]
    for net in nets:
        net.blobs["data"].reshape(*images.shape)
        net.reshape()
    before, after = (params_of(net) for net in nets)
    assert before.keys() == after.keys()
    for name in before:
        for a, b in zip(before[name], after[name]):
            assert a.tobytes() == b.tobytes()
    outputs = [numpy.array(net.forward(data=images)["prob"]) for net in nets]
    assert outputs[0].tobytes() == outputs[1].tobytes()


def test_text_tool_output_reads_back_identical_and_opencv_agrees(tmp_path):
    cv2 = pytest.importorskip("cv2")
    from test_models import mnist
    source = fixture(V0_LENET)
    target = tmp_path / "lenet_v2.prototxt"
    assert upgrade_net_proto_text.main([str(source), str(target)]) == 0
    assert files.identify(str(target)) == ("text", "net", "V2")
    assert files.read_net(str(target)) == files.read_net(str(source))
    weights = str(fixture(LENET_WEIGHTS))
    images, _ = mnist(count=16)
    data = images[:, None] * numpy.float32(0.00390625)
    outputs = []
    for proto in (source, target):
        net = caffe.Net(str(proto), caffe.TEST, weights=weights)
        net.blobs["data"].reshape(*data.shape)
        net.reshape()
        outputs.append(numpy.array(net.forward(data=data)["prob"]))
        cv_net = cv2.dnn.readNetFromCaffe(str(proto), weights)
        cv_net.setInput(data)
        outputs.append(cv_net.forward())
    ours_v0, cv_v0, ours_v2, cv_v2 = outputs
    assert ours_v0.tobytes() == ours_v2.tobytes()
    assert cv_v0.tobytes() == cv_v2.tobytes()


def test_opencv_reads_the_binary_tool_output(tmp_path):
    from test_models import compare_with_opencv
    target = tmp_path / "cifar_v2.caffemodel"
    assert upgrade_net_proto_binary.main([str(fixture(CIFAR_WEIGHTS)), str(target)]) == 0
    # compare_with_opencv reads fixture-relative paths; an absolute path passes through.
    compare_with_opencv(str(fixture(CIFAR_DEPLOY)), str(target), {"data": cifar_images()})


def test_solver_tool(tmp_path, caplog):
    source = write(tmp_path, "old_solver.prototxt", 'net: "n.prototxt"\nsolver_type: NESTEROV\n')
    target = tmp_path / "solver.prototxt"
    assert upgrade_solver_proto_text.main([str(source), str(target)]) == 0
    solver = files.read_solver_param(str(target))
    assert solver.type == "Nesterov" and not solver.HasField("solver_type")
    caplog.set_level(logging.INFO, logger="pycaffe_lite")
    assert upgrade_solver_proto_text.main([str(target), str(tmp_path / "again.prototxt")]) == 0
    assert any("File already in latest proto format" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("tool,source,status", [
    (upgrade_net_proto_binary, V0_LENET, 2),              # text given to the binary tool
    (upgrade_net_proto_text, CIFAR_WEIGHTS, 2),           # binary given to the text tool
    (upgrade_net_proto_text, f"{V0_DIR}/lenet_solver.prototxt", 2),
    (upgrade_solver_proto_text, V0_LENET, 2),
])
def test_tools_refuse_the_wrong_kind_of_file(tmp_path, tool, source, status):
    target = tmp_path / "out"
    assert tool.main([str(fixture(source)), str(target)]) == status
    assert not target.exists()


def test_tool_refuses_an_impossible_upgrade_and_writes_nothing(tmp_path):
    source = write(tmp_path, "bad.prototxt", 'layers { layer { name: "x" type: "fancy" } }')
    target = tmp_path / "out.prototxt"
    assert upgrade_net_proto_text.main([str(source), str(target)]) == 1
    assert not target.exists()


def test_tool_scripts_and_cli_write_the_same_file(tmp_path, capsys):
    source = str(fixture(CIFAR_WEIGHTS))
    script = REPO / "tools" / "upgrade_net_proto_binary"
    result = subprocess.run([sys.executable, str(script), source, str(tmp_path / "a")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "Wrote upgraded NetParameter binary proto to" in result.stderr
    assert cli.main(["upgrade", "net_binary", source, str(tmp_path / "b")]) == 0
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


@pytest.mark.parametrize("argv,needle", [
    (["upgrade", "net_text", "x"], "'upgrade' takes"),
    (["upgrade", "nets", "x", "y"], "'nets' is not one of net_text, net_binary, solver_text"),
])
def test_cli_upgrade_usage_errors(capsys, argv, needle):
    assert cli.main(argv) == 1
    assert needle in capsys.readouterr().err
