"""The Label-free paper's four nets through the whole pipeline.

Random weights (:func:`~pycaffe_lite.testing.randomize`), their real 224x224 input, 16 synthetic
calibration images (``calib="synthetic"``: their ILSVRC12 LMDBs are not on
our machines); the outputs then run in ``caffe_lite test --synthetic_data``.
"""
import json
import re

import pytest

from pycaffe_lite.cli import main
from pycaffe_lite.compress import labelfree
from pycaffe_lite.io import files
from pycaffe_lite.io.synthetic import synthesize_data_layers
from pycaffe_lite.layer import TEST
from pycaffe_lite.net import Net
from pycaffe_lite.testing import randomize

from conftest import SHARED

QMODEL = SHARED / "fixtures" / "labelfree" / "qmodel"

# ResNet-18 runs in `make test`; the bigger three (1.5-3 minutes each on 2 cores,
# most of it AlexNet's and VGG's fc weights and ResNet-50's 49 BatchNorm levels)
# with `make test-all`.
NETS = [pytest.param("resnet-18", id="resnet-18"),
        pytest.param("alexnet_bn", id="alexnet_bn", marks=pytest.mark.slow),
        pytest.param("resnet-50", id="resnet-50", marks=pytest.mark.slow),
        pytest.param("vgg16_bn", id="vgg16_bn", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", NETS)
def test_paper_net_compresses_and_its_output_runs(name, tmp_path, capsys):
    model = QMODEL / f"{name}.prototxt"
    if not model.exists():
        pytest.skip(f"test material not found at {model} (set PYCAFFE_LITE_SHARED)")
    param = files.read_net(str(model))
    weights = tmp_path / "random.caffemodel"
    randomize(Net(synthesize_data_layers(param, batch=1), phase=TEST)).save(str(weights))
    out = tmp_path / "out"
    report = labelfree(str(model), str(weights), str(out), calib="synthetic", images=16,
                       batch=8, progress=False)
    assert "is not on this machine" in report["accuracy"]["skipped"]
    final = files.read_net(str(out / "train_val.prototxt"))
    count = lambda net, kind: sum(layer.type == kind for layer in net.layer)   # noqa: E731
    params = count(param, "Convolution") + count(param, "InnerProduct")
    names = [layer.name for layer in final.layer]
    assert sum(n.endswith("_alpha_term") for n in names) == params
    shared = len(param.layer) - len({layer.name for layer in param.layer})   # TRAIN/TEST data
    assert len(names) - len(set(names)) == shared
    assert count(final, "Quant") == count(param, "ReLU") > 0 and count(final, "ReLU") == 0
    assert count(final, "BatchNorm") == count(param, "BatchNorm")
    assert len(report["weights"]) == params and len(report["activations"]) == count(
        param, "ReLU")
    assert [w["kind"] for w in report["weights"]].count("fixed") == 2
    state = json.loads((out / "state.json").read_text())
    assert state["stages"]["renorm"]["info"]["passes"] >= 1
    capsys.readouterr()
    assert main(["test", f"--model={out / 'train_val.prototxt'}",
                 f"--weights={out / 'quantized.caffemodel'}", "--synthetic_data",
                 "--iterations=1", "--batch_size=2"]) == 0
    loss = re.findall(r"\] Loss: ([\d.e+-]+)$", capsys.readouterr().err, re.M)
    assert loss and 0 < float(loss[-1]) < 100
