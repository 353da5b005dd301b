"""``caffe_lite speedtest``: a Q net against its dense twin (pycaffe_lite/tools/speedtest.py).

Times are not asserted (they depend on the machine); the tests check that
both nets ran every layer on the same input and computed the same outputs,
that the table has Q-CNN's rows and the sizes, and the errors.
"""
import numpy
import pytest
from google.protobuf import text_format

from pycaffe_lite import cli
from pycaffe_lite.io import files
from pycaffe_lite.layer import TEST
from pycaffe_lite.net import Net
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.testing import randomize
from pycaffe_lite.tools import speedtest
from pycaffe_lite.tools.qdense import q_net_param

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 16 dim: 12 dim: 12 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 300 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture
def q_files(tmp_path):
    dense = text_format.Parse(NET, caffe_pb2.NetParameter())
    param = q_net_param(dense, conv=(4, 16), fc=(4, 8))
    net = Net(param, phase=TEST)
    randomize(net, seed=3)
    model, weights = tmp_path / "q.prototxt", tmp_path / "q.caffemodel"
    files.write_text_proto(str(model), param)
    net.save(str(weights))
    return str(model), str(weights)


def test_q_net_param_converts_every_dense_layer():
    param = q_net_param(text_format.Parse(NET, caffe_pb2.NetParameter()), {"fc": (2, 8)})
    types = {layer.name: layer.type for layer in param.layer}
    assert types["conv"] == "Convolution" and types["fc"] == "QInnerProduct"
    fc = next(layer for layer in param.layer if layer.name == "fc")
    assert (fc.q_inner_product_param.subspace_dim, fc.q_inner_product_param.codebook_size) \
        == (2, 8)


def test_speedtest_times_both_nets_layer_by_layer(q_files):
    result = speedtest.speedtest(*q_files, iterations=2)
    assert result["batch"] == 1 and result["threads"] == 1
    assert [r["layer"] for r in result["rows"]] == ["data", "conv", "relu", "pool", "fc", "prob"]
    assert all(r["dense_ms"] > 0 and r["q_ms"] > 0 for r in result["rows"][1:])
    assert result["dense_ms"] == pytest.approx(sum(r["dense_ms"] for r in result["rows"]))
    assert result["speedup"] == pytest.approx(result["dense_ms"] / result["q_ms"])
    table = speedtest.format_table(result, only_q=True)
    assert "conv" in table and "relu" not in table and "whole net" in table
    assert "weights (MB)" in table


def test_the_dense_twin_computes_the_q_nets_outputs(q_files):
    """What speedtest compares is the same function: Q net = dense twin on its input."""
    from pycaffe_lite.tools.qdense import dense_net
    model, weights = q_files
    param = files.read_net(model)
    q = Net(param, phase=TEST)
    q.copy_from(weights)
    dense_param, dense_weights = dense_net(param, q)
    dense = Net(dense_param, phase=TEST)
    dense.copy_from(dense_weights)
    x = numpy.random.default_rng(0).standard_normal(q.blobs["data"].shape)
    for net in (q, dense):
        net.blobs["data"].data[...] = x
        net.forward_range()
    numpy.testing.assert_allclose(q.blobs["fc"].data, dense.blobs["fc"].data, rtol=0,
                                  atol=1e-5 * abs(dense.blobs["fc"].data).max())


def test_speedtest_cli_prints_the_table(q_files, capsys):
    model, weights = q_files
    assert cli.main(["speedtest", f"--model={model}", f"--weights={weights}",
                     "--iterations=2"]) == 0
    captured = capsys.readouterr()
    assert "whole net" in captured.out and "speed-up" in captured.out
    assert "Average Forward pass: dense" in captured.err


def test_speedtest_errors(tmp_path, q_files, capsys):
    model, weights = q_files
    dense = tmp_path / "dense.prototxt"
    dense.write_text(NET)
    assert cli.main(["speedtest", f"--model={dense}", f"--weights={weights}"]) == 1
    assert "no QConvolution or QInnerProduct layer" in capsys.readouterr().err
    assert cli.main(["speedtest", f"--model={model}"]) == 1
    assert "--weights" in capsys.readouterr().err
    assert cli.main(["speedtest", f"--model={model}", f"--weights={weights}",
                     "--iterations=0"]) == 1
    assert "--iterations" in capsys.readouterr().err
