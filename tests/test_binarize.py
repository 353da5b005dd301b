"""``caffe_lite binarize`` (pycaffe_lite.tools.binarize): binary layers made standard.

Nets: the HWGQ LeNet and AlexNet of the fixtures (their train_val made into
deploy nets here), with random weights whose BatchNorm statistics are
calibrated on the inputs (so that every quantiser sees a realistic spread), and
the golden HWGQ nets with the weights the real HWGQ Caffe saved.  Inputs are
real: MNIST test digits, the fixture photos.  For each, the binarised net must

* compute what the binary deploy net computes (every blob, 1e-5 relative);
* hold no binary layer (prototxt and caffemodel) and keep the rest as it was;
* hold ``sign(W) * alpha`` (checked here by a float64 computation of its own);
* load in OpenCV DNN.  OpenCV knows neither HWGQ's Quant layer nor its
  prototxt fields, so it cannot run a whole HWGQ net; instead each
  Convolution / InnerProduct (the converted ones and the others) is cut out (an
  Input of its bottom's shape + the layer, as written in the binarised
  prototxt) and OpenCV reads it with the whole binarised caffemodel (which it
  parses entirely, finding the weights by layer name), is fed the layer's real
  input from our run and must give our layer's output (1e-4 relative).
"""
import gzip
import json

import numpy
import pytest
from google.protobuf import text_format

from allowance import within
from conftest import FIXTURES, GOLDEN
from pycaffe_lite import cli
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.io import files
from pycaffe_lite.layer import TEST
from pycaffe_lite.net import Net, filter_net
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.tools import binarize as bz

cv2 = pytest.importorskip("cv2")

HWGQ = FIXTURES / "hwgq"
LENET = HWGQ / "mnist" / "lenet-hwgq-3ne" / "train_val.prototxt"
ALEXNET = HWGQ / "imagenet" / "alex-hwgq-3ne-clip-step-160k" / "train_val.prototxt"
PHOTOS = ["cat.jpg", "banana.png", "chicken.jpg", "platypus.jpg"]
IMAGENET_MEAN = numpy.array([104, 117, 123], numpy.float32)   # the train_val's mean_value
RTOL = 1e-5           # binarised vs binary net, relative to the blob's largest value
OPENCV_RTOL = 1e-4    # OpenCV's own convolution code vs ours
BINARY = {"BinaryConvolution": ("Convolution", "binary_convolution_param"),
          "BinaryInnerProduct": ("InnerProduct", "binary_inner_product_param")}
DROPPED = {"Data", "SoftmaxWithLoss", "Accuracy"}


def need(path):
    if not path.exists():
        pytest.skip(f"{path} not found (is ../shared present? set PYCAFFE_LITE_SHARED)")
    return path


# --- inputs ---------------------------------------------------------------------------

def mnist_digits(count):
    """The first ``count`` MNIST test digits, scaled as the LeNet's Data layer scales."""
    with gzip.open(need(FIXTURES / "datasets" / "mnist" / "t10k-images-idx3-ubyte.gz")) as f:
        raw = f.read()
    images = numpy.frombuffer(raw, numpy.uint8, count * 28 * 28, 16).reshape(count, 1, 28, 28)
    return images.astype(numpy.float32) * numpy.float32(0.00390625)


def photos():
    """The fixture photos (227x227 already) as AlexNet's Data layer makes them: BGR minus
    the mean values."""
    batch = []
    for name in PHOTOS:
        image = cv2.imread(str(need(FIXTURES / "data" / name)))
        image = cv2.resize(image, (227, 227), interpolation=cv2.INTER_AREA)
        batch.append((image.astype(numpy.float32) - IMAGENET_MEAN).transpose(2, 0, 1))
    return numpy.ascontiguousarray(numpy.stack(batch))


# --- nets and weights --------------------------------------------------------------------

def deploy_from(net_param, input_shape):
    """The TEST-phase net of ``net_param`` as a deploy net: data layers (and Input
    layers) replaced by one Input 'data' of ``input_shape``, losses and accuracies
    dropped."""
    test = filter_net(net_param, caffe_pb2.NetState(phase=TEST))
    out = caffe_pb2.NetParameter(name=test.name)
    data = out.layer.add(name="data", type="Input", top=["data"])
    data.input_param.shape.add().dim.extend(input_shape)
    for layer in test.layer:
        if layer.type not in DROPPED | {"Input"}:
            out.layer.add().CopyFrom(layer)
    return out


def write_text(path, net_param):
    path.write_text(text_format.MessageToString(net_param))
    return str(path)


def run(net, inputs):
    """Forward ``inputs`` (the 'data' blob); every blob's value, layer by layer
    (in-place layers overwrite a blob: each layer's own top is kept as
    '<layer>:<top>')."""
    net.blobs["data"].data[...] = inputs
    values = {}
    for i, record in enumerate(net.records):
        net.forward_range(i, i)
        for top, blob in zip(record.tops, record.top_blobs):
            values[f"{record.name}:{top}"] = numpy.array(blob.data)
    return values


def calibrate_batchnorm(net, inputs):
    """Give every BatchNorm the statistics of its input on ``inputs`` (scale factor 1),
    as a trained net has them, so that random weights give realistic activations."""
    net.blobs["data"].data[...] = inputs
    for i, layer in enumerate(net.layers):
        if layer.type == "BatchNorm":
            x = net.records[i].bottom_blobs[0].data
            axes = (0,) + tuple(range(2, x.ndim))
            mean, var, factor = layer.blobs
            mean.data[...] = x.mean(axis=axes)
            var.data[...] = x.var(axis=axes) + 1e-3
            factor.data[...] = 1
        net.forward_range(i, i)


def random_weights(model, path, inputs, seed=0):
    """Seeded random weights for ``model`` (binary weights with some exact zeros, to
    see sign(0) = +1), BatchNorm calibrated on ``inputs``; saved to ``path``."""
    rng = numpy.random.default_rng(seed)
    net = Net(str(model), phase=TEST)
    for layer in net.layers:
        if layer.type == "BatchNorm" or not layer.blobs:
            continue
        for blob in layer.blobs:
            blob.data[...] = rng.standard_normal(blob.shape, numpy.float32) * numpy.float32(0.1)
        if layer.type in BINARY:
            weight = layer.blobs[0].data.reshape(layer.blobs[0].shape[0], -1)
            weight[:, :3] = 0
            weight[0] = 0                   # a filter of zeros: alpha 0
    calibrate_batchnorm(net, inputs)
    net.save(str(path))
    return str(path)


# --- the checks ------------------------------------------------------------------------

def binary_layers(net_param):
    return {layer.name: layer for layer in net_param.layer if layer.type in BINARY}


def expected_layer(layer, shared):
    """What the binarised prototxt must hold for ``layer``: for a binary one, the standard
    type, no binary parameter, no ``transpose`` and no name on a weight that ``shared``
    (names used by several layers) holds; anything else unchanged."""
    out = caffe_pb2.LayerParameter()
    out.CopyFrom(layer)
    if layer.type in BINARY:
        out.type, own = BINARY[layer.type]
        out.ClearField(own)
        out.inner_product_param.ClearField("transpose")
        if not layer.HasField("inner_product_param"):
            out.ClearField("inner_product_param")
        if out.param and out.param[0].name in shared:
            out.param[0].ClearField("name")
    return out


def naive_binarized(weight, param):
    """sign(W) * alpha in float64, one output (first axis) at a time."""
    w = numpy.asarray(weight, numpy.float64)
    if not param.use_binarization:
        return w
    out = numpy.empty_like(w)
    for m in range(w.shape[0]):
        alpha = numpy.abs(w[m]).sum() / w[m].size if param.use_alpha else 1.0
        out[m] = numpy.where(w[m] >= 0, alpha, -alpha)
    return out


def relative_difference(ours, reference):
    ours, reference = numpy.asarray(ours, numpy.float64), numpy.asarray(reference, numpy.float64)
    scale = numpy.abs(reference).max()
    return float(numpy.abs(ours - reference).max() / scale) if scale else float(
        numpy.abs(ours).max())


def check_prototxt(model, bw_model):
    """The binarised prototxt: binary layers standard, every other field as in the
    given net upgraded to the current format (binarize writes that format)."""
    given = files.read_net(model)
    written, _ = files.read_net_param(bw_model)
    assert binary_layers(given), "the test net should have binary layers"
    assert not binary_layers(written)
    assert [layer.name for layer in written.layer] == [layer.name for layer in given.layer]
    users = [name for layer in given.layer for name in {spec.name for spec in layer.param}]
    shared = {name for name in users if name and users.count(name) > 1}
    for before, after in zip(given.layer, written.layer):
        assert after == expected_layer(before, shared), before.name
    expected = caffe_pb2.NetParameter()
    expected.CopyFrom(given)
    del expected.layer[:]
    written_rest = caffe_pb2.NetParameter()
    written_rest.CopyFrom(written)
    del written_rest.layer[:]
    assert written_rest == expected


def check_weights(model, weights, bw_weights):
    """The binarised caffemodel: no binary layer, no field of number >= 147; binary
    weights are sign(W) * alpha; every other blob as in ``weights``."""
    kind = files.identify(bw_weights)
    assert (kind.encoding, kind.kind, kind.version) == ("binary", "net", "V2")
    written = files.read_weights(bw_weights)
    trained = {layer.name: layer for layer in files.read_weights(weights).layer}
    binaries = binary_layers(files.read_net(model))
    for layer in written.layer:
        assert layer.type not in BINARY, layer.name
        assert all(field.number < 147 for field, _ in layer.ListFields()), layer.name
        blobs = [files.blob_proto_to_array(b) for b in layer.blobs]
        source = [files.blob_proto_to_array(b) for b in trained[layer.name].blobs] \
            if layer.name in trained else []
        assert len(blobs) == len(source), layer.name
        if layer.name in binaries:
            spec = getattr(binaries[layer.name], BINARY[binaries[layer.name].type][1])
            expected = naive_binarized(source[0], spec)
            numpy.testing.assert_allclose(blobs[0], expected, rtol=1e-6, atol=0,
                                          err_msg=layer.name)
            if spec.use_binarization:
                # exactly one value per output, its sign that of W (+ for W == 0)
                rows = blobs[0].reshape(len(blobs[0]), -1)
                assert (numpy.abs(rows) == numpy.abs(rows[:, :1])).all(), layer.name
                assert ((rows >= 0) == (source[0].reshape(rows.shape) >= 0)).all(), layer.name
            blobs, source = blobs[1:], source[1:]
        for ours, theirs in zip(blobs, source):
            numpy.testing.assert_array_equal(ours, theirs, err_msg=layer.name)
    assert set(binaries) <= {layer.name for layer in written.layer}


def check_outputs(model, weights, bw_model, bw_weights, inputs):
    """Every blob of the binarised net equals the binary net's; returns the largest
    relative difference."""
    binary = run(Net(str(model), phase=TEST, weights=str(weights)), inputs)
    binarised = run(Net(str(bw_model), phase=TEST, weights=str(bw_weights)), inputs)
    assert binarised.keys() == binary.keys()
    worst = 0.0
    for name, reference in binary.items():
        difference = relative_difference(binarised[name], reference)
        assert difference <= RTOL, f"{name}: relative difference {difference:.3g}"
        worst = max(worst, difference)
    last = list(binary)[-1]
    assert numpy.ptp(binary[last]) > 0, "degenerate test: the net's output is constant"
    return worst


def check_opencv(bw_model, bw_weights, inputs, tmp_path):
    """Each Convolution / InnerProduct (the converted ones and the others), cut out of the
    binarised prototxt, loads in OpenCV with the binarised caffemodel and gives our output
    on its real input."""
    written, _ = files.read_net_param(bw_model)
    net = Net(str(bw_model), phase=TEST, weights=str(bw_weights))
    net.blobs["data"].data[...] = inputs
    names = [layer.name for layer in written.layer if layer.type in ("Convolution",
                                                                     "InnerProduct")]
    worst = 0.0
    for name in names:
        i = net.layer_names.index(name)
        net.forward_range(0, i)
        bottom, top = net.records[i].bottom_blobs[0].data, net.records[i].top_blobs[0].data
        layer = next(layer for layer in written.layer if layer.name == name)
        cut = caffe_pb2.NetParameter(name=f"{name}_alone")
        data = cut.layer.add(name="input", type="Input", top=[layer.bottom[0]])
        data.input_param.shape.add().dim.extend(bottom.shape)
        cut.layer.add().CopyFrom(layer)
        cv_net = cv2.dnn.readNetFromCaffe(write_text(tmp_path / f"{name}_alone.prototxt", cut),
                                          str(bw_weights))
        cv_net.setInput(numpy.ascontiguousarray(bottom), layer.bottom[0])
        theirs = cv_net.forward(name)
        difference = relative_difference(theirs.reshape(top.shape), top)
        assert difference <= OPENCV_RTOL, f"OpenCV, layer {name}: {difference:.3g}"
        worst = max(worst, difference)
    return worst


def binarize_cli(model, weights, out_model, out_weights, capsys):
    status = cli.main(["binarize", f"--model={model}", "--weights", str(weights),
                       "--out-model", str(out_model), f"-out_weights={out_weights}"])
    err = capsys.readouterr().err
    assert status == 0, err
    return err


def check_all(model, weights, inputs, tmp_path, capsys):
    """Binarise through the CLI, check everything; returns (max relative difference,
    stderr)."""
    bw_model, bw_weights = tmp_path / "deploy_bw.prototxt", tmp_path / "bw.caffemodel"
    err = binarize_cli(model, weights, bw_model, bw_weights, capsys)
    for name in binary_layers(files.read_net(str(model))):
        assert f"] Binarized layer {name} (Binary" in err or f"] Converted layer {name} (" in err
    check_prototxt(str(model), str(bw_model))
    check_weights(str(model), str(weights), str(bw_weights))
    worst = check_outputs(model, weights, bw_model, bw_weights, inputs)
    print(f"{model}: OpenCV per layer, max relative difference "
          f"{check_opencv(str(bw_model), str(bw_weights), inputs, tmp_path):.3g}")
    return worst, err


# --- the HWGQ authors' deploy_bw.prototxt ---------------------------------------------------

@pytest.mark.parametrize("folder", ["alex-hwgq-3ne-clip-poly-320k", "vgg-hwgq-3ne-clip-poly-640k",
                                    "res18-hwgq-3ne-clip-poly-320k"])
def test_net_conversion_gives_the_authors_deploy_bw(folder):
    deploy, _ = files.read_net_param(str(need(HWGQ / "imagenet" / folder / "deploy.prototxt")))
    theirs, _ = files.read_net_param(str(need(HWGQ / "imagenet" / folder / "deploy_bw.prototxt")))
    ours, converted = bz.binarized_net_param(deploy)
    assert ours == theirs
    assert converted == list(binary_layers(deploy))


# --- LeNet ------------------------------------------------------------------------------

@pytest.fixture
def lenet(tmp_path):
    """(deploy prototxt, random weights, 16 MNIST digits) of the HWGQ LeNet."""
    digits = mnist_digits(16)
    model = write_text(tmp_path / "deploy.prototxt",
                       deploy_from(files.read_net(str(need(LENET))), digits.shape))
    return model, random_weights(model, tmp_path / "trained.caffemodel", digits), digits


def test_lenet_random_weights(lenet, tmp_path, capsys):
    model, weights, digits = lenet
    worst, err = check_all(model, weights, digits, tmp_path, capsys)
    print(f"LeNet-HWGQ, random weights: max relative difference {worst:.3g}")
    assert "Left quant_param out of the weights file (layers qt1, qt2, qt3)" in err


def test_lenet_function_matches_files(lenet, tmp_path, capsys):
    """binarize() on messages and on paths gives what the command wrote."""
    model, weights, _ = lenet
    binarize_cli(model, weights, tmp_path / "bw.prototxt", tmp_path / "bw.caffemodel", capsys)
    net_bw, weights_bw = bz.binarize(model, weights)
    assert net_bw == files.read_net_param(str(tmp_path / "bw.prototxt"))[0]
    assert weights_bw.SerializeToString() == (tmp_path / "bw.caffemodel").read_bytes()
    from_messages = bz.binarize(files.read_net_param(model)[0], files.read_weights(weights))
    assert from_messages == (net_bw, weights_bw)


def test_lenet_golden_weights(tmp_path, capsys):
    """The weights the real HWGQ Caffe saved for its LeNet (same shapes as the fixture's)."""
    weights = need(GOLDEN / "nets" / "lenet_hwgq_train" / "weights.caffemodel")
    digits = mnist_digits(16)
    model = write_text(tmp_path / "deploy.prototxt",
                       deploy_from(files.read_net(str(need(LENET))), digits.shape))
    worst, _ = check_all(model, weights, digits, tmp_path, capsys)
    print(f"LeNet-HWGQ, golden weights: max relative difference {worst:.3g}")


# --- AlexNet ------------------------------------------------------------------------------

@pytest.mark.slow
def test_alexnet_random_weights(tmp_path, capsys):
    """The full HWGQ AlexNet (61M weights, 250 MB caffemodels) on the four photos."""
    images = photos()
    model = write_text(tmp_path / "deploy.prototxt",
                       deploy_from(files.read_net(str(need(ALEXNET))), images.shape))
    weights = random_weights(model, tmp_path / "trained.caffemodel", images)
    worst, _ = check_all(model, weights, images, tmp_path, capsys)
    print(f"AlexNet-HWGQ, random weights: max relative difference {worst:.3g}")


def test_alexnet_golden_weights_match_real_caffe(tmp_path, capsys):
    """The golden (narrower) AlexNet-HWGQ with the weights the real HWGQ Caffe saved:
    checked on the photos, and the binarised net gives the real Caffe's fc8 for the
    golden inputs."""
    case = need(GOLDEN / "nets" / "alexnet_hwgq_test")
    net_param = files.read_net(str(case / "net.prototxt"))
    images = photos()
    model = write_text(tmp_path / "deploy.prototxt", deploy_from(net_param, images.shape))
    weights = case / "weights.caffemodel"
    worst, _ = check_all(model, weights, images, tmp_path, capsys)
    print(f"AlexNet-HWGQ (golden), golden weights: max relative difference {worst:.3g}")

    golden = numpy.load(case / "case.npz")
    inputs = golden["input/data"]
    assert json.loads((case / "meta.json").read_text())["phase"] == "TEST"
    model2 = write_text(tmp_path / "deploy2.prototxt", deploy_from(net_param, inputs.shape))
    bw_model, bw_weights = tmp_path / "bw2.prototxt", tmp_path / "bw2.caffemodel"
    bz.binarize_files(model2, str(weights), str(bw_model), str(bw_weights))
    net = Net(str(bw_model), phase=TEST, weights=str(bw_weights))
    net.blobs["data"].data[...] = inputs
    net.forward_range()
    difference = relative_difference(net.blobs["fc8"].data, golden["blob/fc8"])
    print(f"AlexNet-HWGQ (golden): binarised fc8 vs the real HWGQ Caffe's, max relative "
          f"difference {difference:.3g}")
    within("alexnet_hwgq_test", "binarised forward", difference, "binarised fc8")


# --- options: use_alpha false, use_binarization false, transpose, shared weights, bias -----

OPTIONS_NET = """
name: "options"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 4 dim: 3 dim: 9 dim: 9 } } }
layer { name: "shared" type: "Convolution" bottom: "data" top: "shared"
  param { name: "w" } convolution_param { num_output: 4 kernel_size: 3 bias_term: false } }
layer { name: "bconv" type: "BinaryConvolution" bottom: "data" top: "bconv"
  param { name: "w" } convolution_param { num_output: 4 kernel_size: 3 bias_term: false } }
layer { name: "noalpha" type: "BinaryConvolution" bottom: "bconv" top: "noalpha"
  param { lr_mult: 2 } param { lr_mult: 0 }
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 2 }
  binary_convolution_param { use_alpha: false } }
layer { name: "float" type: "BinaryConvolution" bottom: "noalpha" top: "float"
  convolution_param { num_output: 4 kernel_size: 1 }
  binary_convolution_param { use_alpha: true use_binarization: false } }
layer { name: "sum" type: "Eltwise" bottom: "float" bottom: "shared" top: "sum" }
layer { name: "fc" type: "BinaryInnerProduct" bottom: "sum" top: "fc"
  inner_product_param { num_output: 5 transpose: true }
  binary_inner_product_param { use_alpha: true } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" include { phase: TEST } }
"""


def test_options(tmp_path, capsys):
    model = tmp_path / "options.prototxt"
    model.write_text(OPTIONS_NET)
    inputs = numpy.random.default_rng(3).standard_normal((4, 3, 9, 9), numpy.float32)
    weights = random_weights(str(model), tmp_path / "options.caffemodel", inputs)
    # 'shared' and 'bconv' share W: 'shared' keeps W, 'bconv' must get its own sign(W)*alpha
    worst, err = check_all(str(model), weights, inputs, tmp_path, capsys)
    print(f"options net: max relative difference {worst:.3g}")
    written = {layer.name: layer for layer in
               files.read_net_param(str(tmp_path / "deploy_bw.prototxt"))[0].layer}
    assert not written["bconv"].param[0].name and written["shared"].param[0].name == "w"
    assert written["fc"].inner_product_param.transpose is False
    assert [spec.lr_mult for spec in written["noalpha"].param] == [2, 0]
    assert "weights +-1 (use_alpha: false)" in err
    assert "Converted layer float (BinaryConvolution -> Convolution): use_binarization is " \
           "false" in err
    assert "transpose cleared" in err and "ParamSpec name cleared" in err


def test_original_caffemodel_is_not_readable_by_opencv(lenet, tmp_path, capsys):
    """Why the binarised caffemodel leaves quant_param out: OpenCV reads field 149 as
    its own norm_param and rejects the file."""
    model, weights, _ = lenet
    written = files.read_net_param(model)[0]
    cut = caffe_pb2.NetParameter()
    cut.layer.add().CopyFrom(written.layer[0])
    with pytest.raises(cv2.error):
        cv2.dnn.readNetFromCaffe(write_text(tmp_path / "input.prototxt", cut), weights)


# --- errors -------------------------------------------------------------------------------

def fails(capsys, *args):
    """Run ``caffe_lite binarize`` expecting exit status 1; its one error message."""
    status = cli.main(["binarize", *[str(a) for a in args]])
    err = capsys.readouterr().err
    assert status == 1, err
    lines = [line for line in err.splitlines() if line.startswith("caffe_lite: error: ")]
    assert len(lines) == 1, err
    return lines[0][len("caffe_lite: error: "):]


@pytest.fixture
def outputs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    return out / "bw.prototxt", out / "bw.caffemodel"


def nothing_written(outputs):
    return not any(outputs[0].parent.iterdir())


@pytest.mark.parametrize("missing", ["model", "weights", "out_model", "out_weights"])
def test_missing_flag(lenet, outputs, capsys, missing):
    model, weights, _ = lenet
    given = {"model": model, "weights": weights, "out_model": outputs[0],
             "out_weights": outputs[1]}
    del given[missing]
    message = fails(capsys, *[f"--{name}={value}" for name, value in given.items()])
    assert message.startswith("Need ") and message.endswith(f"(--{missing}).")
    assert nothing_written(outputs)


def test_unreadable_files(lenet, outputs, tmp_path, capsys):
    model, weights, _ = lenet
    absent = tmp_path / "absent.prototxt"
    assert fails(capsys, "--model", absent, "--weights", weights, "--out_model", outputs[0],
                 "--out_weights", outputs[1]) == f"{absent}: net file not found"
    absent = tmp_path / "absent.caffemodel"
    assert fails(capsys, "--model", model, "--weights", absent, "--out_model", outputs[0],
                 "--out_weights", outputs[1]) == f"{absent}: caffemodel file not found"
    message = fails(capsys, "--model", model, "--weights", model, "--out_model", outputs[0],
                    "--out_weights", outputs[1])
    assert message.startswith(f"{model}: ") and "no trained weights" in message
    assert nothing_written(outputs)


def test_model_without_binary_layers_is_an_error(lenet, outputs, tmp_path, capsys):
    model, weights, _ = lenet
    bw_model, bw_weights = tmp_path / "bw.prototxt", tmp_path / "bw.caffemodel"
    binarize_cli(model, weights, bw_model, bw_weights, capsys)
    message = fails(capsys, "--model", bw_model, "--weights", bw_weights, "--out_model",
                    outputs[0], "--out_weights", outputs[1])
    assert message.startswith(f"{bw_model}: no BinaryConvolution or BinaryInnerProduct "
                              "layer, nothing to binarize")
    assert nothing_written(outputs)


def modified_lenet_weights(model, tmp_path, change):
    """Weights of the LeNet deploy net after ``change(net_param)``."""
    net_param = files.read_net(model)
    change({layer.name: layer for layer in net_param.layer})
    path = tmp_path / "other.caffemodel"
    Net(net_param, phase=TEST).save(str(path))
    return path


def test_weights_of_another_shape(lenet, outputs, tmp_path, capsys):
    model, _, _ = lenet

    def narrower(layers):
        layers["conv2"].convolution_param.num_output = 40
    weights = modified_lenet_weights(model, tmp_path, narrower)
    message = fails(capsys, "--model", model, "--weights", weights, "--out_model", outputs[0],
                    "--out_weights", outputs[1])
    assert message.startswith(f"{weights}: cannot copy param 0 of layer 'conv2': shape "
                              "mismatch; the weights file has (40, 20, 5, 5), the net "
                              "defines (50, 20, 5, 5)")
    assert nothing_written(outputs)


def test_weights_without_a_bias(lenet, outputs, tmp_path, capsys):
    model, _, _ = lenet

    def no_bias(layers):
        layers["ip2"].inner_product_param.bias_term = False
    weights = modified_lenet_weights(model, tmp_path, no_bias)
    message = fails(capsys, "--model", model, "--weights", weights, "--out_model", outputs[0],
                    "--out_weights", outputs[1])
    assert message == (f"{weights}: layer 'ip2' holds 1 param blob(s), the net's layer "
                       "(type BinaryInnerProduct) has 2")
    assert nothing_written(outputs)


def test_binary_layer_missing_from_weights(lenet, outputs, tmp_path, capsys):
    model, _, _ = lenet

    def renamed(layers):
        layers["ip1"].name = "ip1_renamed"
    weights = modified_lenet_weights(model, tmp_path, renamed)
    message = fails(capsys, "--model", model, "--weights", weights, "--out_model", outputs[0],
                    "--out_weights", outputs[1])
    assert message.startswith(f"{weights}: no weights for layer 'ip1' (type "
                              "BinaryInnerProduct)")
    assert nothing_written(outputs)


def test_net_that_does_not_build(outputs, tmp_path, capsys):
    """A train_val net: its Data layer reads an LMDB that is not there."""
    weights = need(GOLDEN / "nets" / "lenet_hwgq_train" / "weights.caffemodel")
    model = need(LENET)
    message = fails(capsys, "--model", model, "--weights", weights, "--out_model", outputs[0],
                    "--out_weights", outputs[1])
    assert message.startswith(f"{model}: cannot build the net in the TEST phase (")
    assert "layer 'mnist'" in message and "deploy net" in message
    assert nothing_written(outputs)


def test_outputs_that_cannot_be_written(lenet, outputs, tmp_path, capsys):
    model, weights, _ = lenet
    message = fails(capsys, "--model", model, "--weights", weights, "--out_model", model,
                    "--out_weights", outputs[1])
    assert message == f"{model}: is the input net file; write the binarised files elsewhere"
    message = fails(capsys, "--model", model, "--weights", weights, "--out_model", outputs[0],
                    "--out_weights", outputs[0])
    assert message == f"{outputs[0]}: the same file for the binarised net and its weights"
    missing = tmp_path / "no_such_dir" / "bw.caffemodel"
    message = fails(capsys, "--model", model, "--weights", weights, "--out_model", outputs[0],
                    "--out_weights", missing)
    assert message == f"{missing}: cannot write: directory {missing.parent} does not exist"
    assert nothing_written(outputs)


def test_function_errors_name_what_was_given(lenet):
    model, weights, _ = lenet
    net_param = files.read_net_param(model)[0]
    no_binary, _ = bz.binarized_net_param(net_param)
    with pytest.raises(CaffeError, match=r"^<NetParameter>: no BinaryConvolution"):
        bz.binarize(no_binary, weights)
    trained = files.read_weights(weights)
    for layer in trained.layer:
        if layer.name == "conv1":
            del layer.blobs[:]
    with pytest.raises(CaffeError, match=r"^<NetParameter>: no weights for layer 'conv1'"):
        bz.binarize(net_param, trained)


def test_help_lists_binarize(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "  binarize" in out and "-out_model" in out and "-out_weights" in out
