"""caffe.draw and draw_net (pycaffe_lite/draw.py, tools/draw_net.py): every HWGQ and
Label-free fixture prototxt drawn to a PNG, the labels of the low-precision
layers, phases, formats, and the errors when pydot or Graphviz is missing."""
import shutil

import numpy
import pytest
from google.protobuf import text_format

from pycaffe_lite import draw
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.tools import draw_net

from conftest import FIXTURES

try:
    import pydot  # noqa: F401
    HAVE_PYDOT = True
except ImportError:
    HAVE_PYDOT = False
needs_dot = pytest.mark.skipif(
    not HAVE_PYDOT or shutil.which("dot") is None,
    reason="pydot or Graphviz's dot is not installed (pip install pydot; "
           "apt-get install graphviz): drawing is not tested")

PAPER_NETS = sorted(p for folder in ("hwgq", "labelfree")
                    for p in (FIXTURES / folder).rglob("*.prototxt")
                    if "solver" not in p.name) if FIXTURES.is_dir() else []

NET = """
name: "lowprec"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "bconv" type: "BinaryConvolution" bottom: "data" top: "bconv"
  param { lr_mult: 1 decay_mult: 1 }
  convolution_param { num_output: 4 kernel_size: 3 } binary_convolution_param { use_alpha: true } }
layer { name: "q" type: "Quant" bottom: "bconv" top: "bconv"
  quant_param { forward_func: "hwgq" centers: 0.5 centers: 1.0 centers: 1.5 } }
layer { name: "act" type: "ActQuantize" bottom: "bconv" top: "act" act_quantize_param { bits: 4 } }
layer { name: "qc" type: "QConvolution" bottom: "act" top: "qc"
  convolution_param { num_output: 4 kernel_size: 3 } q_convolution_param { subspace_dim: 4 } }
layer { name: "drop" type: "Dropout" bottom: "qc" top: "qc" include { phase: TRAIN } }
"""


def _net(text=NET):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def test_labels_say_the_bits():
    layers = {layer.name: layer for layer in _net().layer}
    assert "1-bit weights x alpha" in draw.get_layer_label(layers["bconv"], "LR")
    assert "hwgq: 4 levels (2 bits)" in draw.get_layer_label(layers["q"], "LR")
    assert "4 bits, LINEAR" in draw.get_layer_label(layers["act"], "LR")
    label = draw.get_layer_label(layers["qc"], "TB")
    assert "D 4, K 128\\n7-bit indices" in label and "kernel size: 3" in label
    assert "lr mult: 1" in draw.get_layer_label(layers["bconv"], "LR", display_lrm=True)
    assert draw.get_edge_label(layers["bconv"]) == '"4"'


@needs_dot
def test_phase_keeps_the_layers_of_that_phase():
    names = lambda phase: {n.get_name() for n in draw.get_pydot_graph(  # noqa: E731
        _net(), "LR", phase=phase).get_nodes()}
    assert any(name.startswith("drop_") for name in names(None))
    assert any(name.startswith("drop_") for name in names(caffe_pb2.TRAIN))
    assert not any(name.startswith("drop_") for name in names(caffe_pb2.TEST))


@needs_dot
@pytest.mark.parametrize("ext,magic", [("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_formats(tmp_path, ext, magic):
    path = tmp_path / f"net.{ext}"
    draw.draw_net_to_file(_net(), str(path), "TB")
    assert path.read_bytes().startswith(magic)


@needs_dot
@pytest.mark.parametrize("prototxt", PAPER_NETS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_every_paper_net_draws(tmp_path, prototxt):
    import cv2
    out = tmp_path / "net.png"
    assert draw_net.main([str(prototxt), str(out), "--rankdir", "TB"]) == 0
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 200 and numpy.ptp(image) > 0


def test_missing_dot_is_named(tmp_path, monkeypatch):
    if not HAVE_PYDOT:
        pytest.skip("pydot is not installed (pip install pydot)")
    monkeypatch.setenv("PATH", str(tmp_path))       # no dot on the path
    with pytest.raises(CaffeError, match="Graphviz's 'dot' program was not found: "
                                         "apt-get install graphviz"):
        draw.draw_net(_net(), "LR")


def test_draw_net_cli_errors(tmp_path, capsys):
    assert draw_net.main([str(tmp_path / "missing.prototxt"), str(tmp_path / "x.png")]) == 1
    assert "draw_net: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        draw_net.main(["a.prototxt", "b.png", "--phase", "VAL"])
