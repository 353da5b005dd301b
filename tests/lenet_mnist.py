"""BVLC's trained LeNet and the MNIST test set, as the tests use them (../shared)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("PYCAFFE_LITE_SHARED",
                             Path(__file__).resolve().parents[2] / "shared"))
LENET = SHARED / "fixtures" / "models" / "lenet_mnist"
MNIST = SHARED / "fixtures" / "datasets" / "mnist"


def needs(path):
    if not path.exists():
        pytest.skip(f"test material not found at {path} (set PYCAFFE_LITE_SHARED)")


def write_mnist_lmdb(images_gz, labels_gz, path):
    """The MNIST LMDB that Caffe's examples score on, made by our convert_mnist_data."""
    result = subprocess.run([sys.executable, "-m", "pycaffe_lite.tools.convert_mnist_data",
                             str(images_gz), str(labels_gz), str(path)],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr


def lenet_with_data_layer(source):
    """lenet.prototxt with its Input replaced by an MNIST Data layer, plus scoring."""
    text = (LENET / "lenet.prototxt").read_text()
    start = text.index("layer {")
    end = text.index("layer {", start + 1)
    data_layer = f"""layer {{
  name: "mnist"
  type: "Data"
  top: "data"
  top: "label"
  include {{ phase: TEST }}
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{source}" batch_size: 100 backend: LMDB }}
}}
"""
    prob = text.index('layer {\n  name: "prob"')
    scoring = """layer {
  name: "accuracy"
  type: "Accuracy"
  bottom: "ip2"
  bottom: "label"
  top: "accuracy"
  include { phase: TEST }
}
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "ip2"
  bottom: "label"
  top: "loss"
}
"""
    return text[:start] + data_layer + text[end:prob] + scoring


def lenet_on_mnist(directory):
    """(the MNIST test LMDB, a lenet_train_test.prototxt scoring on it) in ``directory``;
    skips without the test material."""
    needs(LENET)
    needs(MNIST / "t10k-images-idx3-ubyte.gz")
    db = directory / "mnist_test_lmdb"
    write_mnist_lmdb(MNIST / "t10k-images-idx3-ubyte.gz", MNIST / "t10k-labels-idx1-ubyte.gz",
                     db)
    model = directory / "lenet_train_test.prototxt"
    model.write_text(lenet_with_data_layer(db))
    return db, model
