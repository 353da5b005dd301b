"""The low-precision papers' own files run: every HWGQ and Label-free prototxt.

Each train_val (and each Label-free model) is built in TRAIN and TEST at its
real input size (the crop of its Data layer; 28 for MNIST, 32 for CIFAR), its
Data layers swapped for synthetic data of that shape at batch 2 (what
``caffe_lite --synthetic_data --batch_size 2`` does), and runs forward and
backward once; every deploy and deploy_bw runs under ``caffe_lite time`` at
batch 2.  ``tests/test_fixtures.py`` checks the build of every fixture; this
file runs them.
"""
import numpy
import pytest

from conftest import FIXTURES
from pycaffe_lite import cli
from pycaffe_lite.io import files
from pycaffe_lite.io.synthetic import synthesize_data_layers
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.net import Net

ROOTS = [FIXTURES / "hwgq", FIXTURES / "labelfree"]


def _files(pattern):
    found = sorted(p for root in ROOTS if root.is_dir() for p in root.rglob(pattern))
    return [pytest.param(p, id=str(p.relative_to(FIXTURES))) for p in found]


NETS = _files("train_val.prototxt") + [p for p in _files("*.prototxt")
                                        if "labelfree" in str(p.values[0])]
DEPLOYS = _files("deploy*.prototxt")


def _sample_shape(path):
    return (1, 28, 28) if "mnist" in str(path) else (3, 32, 32) if "cifar" in str(path) \
        else (3, 224, 224)


def test_every_paper_file_is_found():
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures is not present")
    assert len(NETS) >= 14 and len(DEPLOYS) >= 10


@pytest.mark.parametrize("phase", [TRAIN, TEST], ids=["TRAIN", "TEST"])
@pytest.mark.parametrize("path", NETS)
def test_net_runs_forward_and_backward_at_its_input_size(path, phase):
    net_param = synthesize_data_layers(files.read_net(str(path)),
                                       sample_shape=_sample_shape(path), batch=2)
    net = Net(net_param, phase=phase)
    # Statistics as a trained BatchNorm holds them, for TEST and for the nets that
    # say use_global_stats (Caffe's fresh zeros would multiply by 1/sqrt(eps) at every
    # layer and overflow a deep net).
    for layer in net.layers:
        if layer.type == "BatchNorm":
            layer.blobs[1].data[...] = 1
            layer.blobs[2].data[...] = 1
    # Weights without a filler (vgg16_bn: the Label-free pipeline loads trained ones
    # into it) are zeros, as in Caffe: give them random values, as a caffemodel would.
    rng = numpy.random.default_rng(0)
    for blob in net.learnable_params:
        if blob.data.ndim > 1 and not blob.data.any():
            fan_in = blob.count // blob.shape[0]
            blob.data[...] = rng.standard_normal(blob.shape) * numpy.sqrt(2.0 / fan_in)
    data = net.blobs["data"]
    crop = [layer.transform_param.crop_size for layer in files.read_net(str(path)).layer
            if layer.HasField("transform_param") and layer.transform_param.crop_size]
    if crop:
        assert data.shape[2:] == (crop[0], crop[0])
    loss = net.forward_backward()
    assert numpy.isfinite(loss)
    for name in net.output_names:
        assert numpy.isfinite(net.blobs[name].data).all(), name
    # Some gradient reached the first learnable layer (through every quantiser).
    first = net.learnable_params[0]
    assert numpy.isfinite(first.diff).all()
    if phase == TRAIN:
        assert numpy.abs(first.diff).max() > 0


@pytest.mark.parametrize("path", DEPLOYS)
def test_caffe_lite_time_runs_on_deploy(path, capsys):
    status = cli.main(["time", f"--model={path}", "--iterations=1", "--batch_size=2",
                       "--noprogress"])
    err = capsys.readouterr().err
    assert status == 0, err[-2000:]
    assert "Average Forward-Backward" in err and "*** Benchmark ends ***" in err
