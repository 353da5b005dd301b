"""The ``caffe_lite`` command line: Caffe's flags, log lines and error handling.

The small net's outputs are known in closed form: an InnerProduct with zero
weights and bias (0, 2) gives logits (0, 2) for every sample, so with label 1
softmax is (1/(1+e^2), e^2/(1+e^2)) = (0.119203, 0.880797), the loss is
ln(1+e^-2) = 0.126928 and the accuracy 1.
"""
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pytest

from pycaffe_lite import backend, cli
from pycaffe_lite.flags import parse_flags
from pycaffe_lite.layer import TEST
from pycaffe_lite.log import GlogHandler, caffe_float, setup_logging
from pycaffe_lite.net import Net

from lenet_mnist import LENET, lenet_on_mnist, needs

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "caffe_lite"
SHARED = Path(os.environ.get("PYCAFFE_LITE_SHARED", REPO.parent / "shared"))

# glog: level, MMDD, time with microseconds, thread id (5 columns), file:line.
GLOG_LINE = re.compile(r"^([IWEF])(\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{6}) +(\d+) "
                       r"([\w.<>-]+):(\d+)\] (.*)$")

TINY_NET = """
name: "tiny"
layer {
  name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param {
    data_filler { type: "constant" value: 1 }
    data_filler { type: "constant" value: 1 }
    shape { dim: 4 dim: 3 }
    shape { dim: 4 }
  }
}
layer {
  name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 }
}
layer {
  name: "prob" type: "Softmax" bottom: "ip" top: "prob"
  include { stage: "probs" }
}
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" }
layer {
  name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
  loss_weight: 2
}
"""

P0 = 1 / (1 + math.exp(2))          # softmax of logits (0, 2)
LOSS = math.log1p(math.exp(-2))     # -ln(softmax[1])


@pytest.fixture
def tiny(tmp_path):
    """(model, weights) of the small net, the weights chosen so logits are (0, 2)."""
    model = tmp_path / "tiny.prototxt"
    model.write_text(TINY_NET)
    net = Net(str(model), phase=TEST)
    weight, bias = net.params["ip"]
    weight.data[...] = 0
    bias.data[...] = numpy.array([0, 2], numpy.float32)
    weights = tmp_path / "tiny.caffemodel"
    net.save(str(weights))
    return str(model), str(weights)


def messages(text):
    """The messages of the glog lines in ``text`` (every line must be one)."""
    out = []
    for line in text.splitlines():
        match = GLOG_LINE.match(line)
        assert match, f"not a glog line: {line!r}"
        out.append(match.group(11))
    return out


def run_main(capsys, *argv):
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_tool(*argv, cwd=None, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, str(TOOL), *argv], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=600, check=False)


def expected_test_lines(iterations, probs=False):
    per_batch = [("accuracy", 1.0), ("loss", LOSS)]
    if probs:
        per_batch += [("prob", P0), ("prob", 1 - P0)] * 4
    batch = [f"Batch {i}, {name} = {caffe_float(v)}"
             for i in range(iterations) for name, v in per_batch]
    summary = [f"Loss: {caffe_float(2 * LOSS)}", "accuracy = 1",
               f"loss = {caffe_float(LOSS)} (* 2 = {caffe_float(2 * LOSS)} loss)"]
    if probs:
        summary += [f"prob = {caffe_float(v)}" for v in [P0, 1 - P0] * 4]
    return batch, summary


def scoring_lines(msgs):
    batch = [m for m in msgs if m.startswith("Batch ")]
    start = next(i for i, m in enumerate(msgs) if m.startswith("Loss: "))
    return batch, msgs[start:]


# --- formatting and logging --------------------------------------------------------

@pytest.mark.parametrize("value,text", [
    (0.9914, "0.9914"), (numpy.float32(0.9914), "0.9914"), (0.02884349, "0.0288435"),
    (1.0, "1"), (0.0, "0"), (1e-5, "1e-05"), (123456789.0, "1.23457e+08"),
    (-0.5, "-0.5"), (float("inf"), "inf")])
def test_caffe_float_prints_as_iostream(value, text):
    assert caffe_float(value) == text


def test_log_lines_are_glog_lines(capsys):
    logger = setup_logging()
    logger.info("Iteration 100, lr = 0.01")
    logger.warning("careful")
    logger.error("broken")
    err = capsys.readouterr().err.splitlines()
    assert [GLOG_LINE.match(line).group(1) for line in err] == ["I", "W", "E"]
    match = GLOG_LINE.match(err[0])
    assert match.group(9) == "test_cli.py" and match.group(11) == "Iteration 100, lr = 0.01"
    # Caffe's tools/extra/extract_seconds.py reads the date and time this way.
    fields = err[0].split()
    assert int(fields[0][1:3]) == time.localtime().tm_mon
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{6}", fields[1])
    assert int(fields[2]) > 0


def test_setup_logging_twice_prints_once(capsys):
    setup_logging()
    logger = setup_logging()
    logger.info("once")
    assert capsys.readouterr().err.count("once") == 1
    assert sum(isinstance(h, GlogHandler) for h in logger.handlers) == 1


@pytest.mark.parametrize("env,shown", [("0", "IWE"), ("1", "WE"), ("2", "E")])
def test_glog_minloglevel(monkeypatch, capsys, env, shown):
    monkeypatch.setenv("GLOG_minloglevel", env)
    logger = setup_logging()
    logger.info("i")
    logger.warning("w")
    logger.error("e")
    letters = "".join(line[0] for line in capsys.readouterr().err.splitlines())
    assert letters == shown


# --- flags -----------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["test", "-model=m", "-iterations=3"],
    ["test", "--model=m", "--iterations=3"],
    ["test", "--model", "m", "--iterations", "3"],
    ["-model", "m", "test", "-iterations", "3"],
])
def test_flag_spellings(argv):
    positional, flags = parse_flags(argv, cli.FLAGS)
    assert positional == ["test"]
    assert (flags.model, flags.iterations) == ("m", 3)


def test_flag_defaults_and_booleans():
    _, flags = parse_flags(["time"], cli.FLAGS)
    assert (flags.iterations, flags.gpu, flags.phase, flags.level, flags.progress) == (
        50, "", "", 0, True)
    assert parse_flags(["--noprogress"], cli.FLAGS)[1].progress is False
    assert parse_flags(["--progress=false"], cli.FLAGS)[1].progress is False
    assert parse_flags(["-progress"], cli.FLAGS)[1].progress is True


# --- test ------------------------------------------------------------------------------

def test_test_logs_batches_and_means(tiny, capsys):
    model, weights = tiny
    status, out, err = run_main(capsys, "test", f"--model={model}", f"--weights={weights}",
                                "--iterations=3")
    assert status == 0 and out == ""
    msgs = messages(err)
    assert "Running for 3 iterations." in msgs
    batch, summary = scoring_lines(msgs)
    assert (batch, summary) == expected_test_lines(3)
    assert summary[-1] == "loss = 0.126928 (* 2 = 0.253856 loss)"


def test_test_stage_selects_layers(tiny, capsys):
    model, weights = tiny
    status, _, err = run_main(capsys, "test", "-model", model, "-weights", weights,
                              "-iterations", "2", "-stage", "probs")
    assert status == 0
    # Outputs in Caffe's order (by name): accuracy, loss, prob.
    assert scoring_lines(messages(err)) == expected_test_lines(2, probs=True)


def test_tool_runs_as_a_script(tiny, tmp_path):
    model, weights = tiny
    result = run_tool("test", "--model", model, "--weights", weights, "--iterations", "2",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert scoring_lines(messages(result.stderr)) == expected_test_lines(2)


def test_gpu_flag_without_gpu_falls_back_to_cpu(tiny, capsys, monkeypatch):
    monkeypatch.setattr(backend, "gpu_available", lambda: False)
    model, weights = tiny
    status, _, err = run_main(capsys, "test", "--gpu=0", f"--model={model}",
                              f"--weights={weights}", "--iterations=1")
    assert status == 0
    warnings = [line for line in err.splitlines() if line.startswith("W")]
    assert len(warnings) == 1 and "no usable GPU" in warnings[0]
    assert scoring_lines(messages(err)) == expected_test_lines(1)


@pytest.mark.gpu
@pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a CUDA GPU")
def test_test_on_gpu_matches_cpu(tiny, capsys):
    model, weights = tiny
    status, _, err = run_main(capsys, "test", "--gpu=0", f"--model={model}",
                              f"--weights={weights}", "--iterations=2")
    assert status == 0
    msgs = messages(err)
    assert "Use GPU with device ID 0" in msgs
    assert scoring_lines(msgs) == expected_test_lines(2)


# --- time --------------------------------------------------------------------------

def check_time_output(msgs, layer_names, iterations):
    begin = msgs.index("*** Benchmark begins ***")
    assert msgs[begin + 1] == f"Testing for {iterations} iterations."
    for j in range(1, iterations + 1):
        assert any(re.fullmatch(rf"Iteration: {j} forward-backward time: [\d.e+-]+ ms\.", m)
                   for m in msgs)
    per_layer = msgs[msgs.index("Average time per layer: ") + 1:]
    for k, name in enumerate(layer_names):
        assert re.fullmatch(rf" *{re.escape(name)}\tforward: [\d.e+-]+ ms\.", per_layer[2 * k])
        assert re.fullmatch(rf" *{re.escape(name)}\tbackward: [\d.e+-]+ ms\.",
                            per_layer[2 * k + 1])
        assert len(per_layer[2 * k].split("\t")[0]) >= 10    # std::setw(10)
    tail = per_layer[2 * len(layer_names):]
    labels = ["Average Forward pass", "Average Backward pass", "Average Forward-Backward",
              "Total Time"]
    for label, line in zip(labels, tail):
        assert re.fullmatch(rf"{label}: [\d.e+-]+ ms\.", line), line
    assert tail[4] == "*** Benchmark ends ***"


def test_time_reports_every_layer(tiny, capsys):
    model, _ = tiny
    status, _, err = run_main(capsys, "time", f"--model={model}", "--iterations=2")
    assert status == 0
    msgs = messages(err)
    initial = msgs[msgs.index("Performing Forward") + 1]
    assert initial == f"Initial loss: {caffe_float(2 * math.log(2))}"
    net = Net(model, phase=0)
    check_time_output(msgs, net.layer_names, 2)
    assert "label_data_1_split" in net.layer_names     # Caffe's automatic splits are timed too


# --- errors ----------------------------------------------------------------------------

def one_error_line(err):
    lines = [line for line in err.splitlines() if not GLOG_LINE.match(line)]
    assert lines and lines[0].startswith("caffe_lite: error: "), err
    assert "Traceback" not in err
    return lines[0][len("caffe_lite: error: "):]


def test_missing_model_file_names_it(capsys, tmp_path):
    missing = tmp_path / "nowhere.prototxt"
    status, _, err = run_main(capsys, "time", f"--model={missing}")
    assert status == 1
    assert str(missing) in one_error_line(err)


def test_bad_prototxt_syntax_gives_line_and_column(capsys, tmp_path):
    model = tmp_path / "bad.prototxt"
    model.write_text('name: "x"\nlayer {\n  name: "a"\n  top "a"\n}\n')
    status, _, err = run_main(capsys, "time", f"--model={model}")
    assert status == 1
    assert re.match(rf"{re.escape(str(model))}:4:\d+: ", one_error_line(err))


def test_unknown_layer_type(capsys, tmp_path):
    model = tmp_path / "unknown.prototxt"
    model.write_text('layer { name: "a" type: "NoSuchLayer" top: "a" }\n')
    status, _, err = run_main(capsys, "time", f"--model={model}")
    assert status == 1
    message = one_error_line(err)
    assert "NoSuchLayer" in message and "InnerProduct" in message


def test_weights_that_do_not_fit(tiny, capsys, tmp_path):
    model, _ = tiny
    status, _, err = run_main(capsys, "test", f"--model={model}",
                              f"--weights={tmp_path / 'missing.caffemodel'}")
    assert status == 1
    assert "missing.caffemodel" in one_error_line(err)


@pytest.mark.parametrize("argv,needle", [
    (["test"], "Need a model definition to score"),
    (["time"], "Need a model definition to time"),
    (["test", "--model=m.prototxt"], "Need model weights to score"),
    ([], "no command given"),
    (["fly"], "unknown command 'fly'"),
    (["test", "--modle=x"], "unknown command line flag 'modle'"),
    (["test", "--model"], "missing its argument"),
])
def test_usage_errors_show_usage(capsys, argv, needle):
    status, _, err = run_main(capsys, *argv)
    assert status == 1
    assert needle in one_error_line(err)
    assert "usage: caffe_lite <command> <args>" in err
    for command in ("train", "test", "device_query", "time"):
        assert re.search(rf"^  {command} +\S", err, re.MULTILINE)


@pytest.mark.parametrize("argv,needle", [
    (["time", "--model=m", "--iterations=many"], "'many' is not an integer"),
    (["time", "--model=m", "--iterations=0"], "at least 1"),
    (["time", "--model=m", "--phase=VAL"], '"TRAIN" or "TEST"'),
    (["time", "--model=m", "--gpu=x"], "not a list of device IDs"),
])
def test_bad_flag_values(capsys, argv, needle):
    status, _, err = run_main(capsys, *argv)
    assert status == 1
    assert needle in one_error_line(err)


def test_help_goes_to_stdout(capsys):
    status, out, err = run_main(capsys, "--help")
    assert status == 0 and err == ""
    assert "usage: caffe_lite <command> <args>" in out
    assert "-iterations (The number of iterations to run.) type: int32 default: 50" in out


def test_train_is_registered(capsys):
    """The command itself is tested in test_train_cli.py."""
    status, _, err = run_main(capsys, "train")
    assert status == 1
    assert "Need a solver definition to train" in err


def test_device_query_without_gpu(capsys, monkeypatch):
    monkeypatch.setattr(backend, "gpu_available", lambda: False)
    status, _, err = run_main(capsys, "device_query")
    assert status == 1
    assert "no usable GPU" in one_error_line(err)


@pytest.mark.gpu
@pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a CUDA GPU")
def test_device_query_on_gpu(capsys):
    status, _, err = run_main(capsys, "device_query", "--gpu=0")
    assert status == 0
    msgs = messages(err)
    assert "Device id:                     0" in msgs
    assert any(m.startswith("Name:") for m in msgs)


def test_debug_env_shows_traceback(tmp_path):
    result = run_tool("time", f"--model={tmp_path / 'nowhere.prototxt'}",
                      env={"PYCAFFE_LITE_DEBUG": "1"})
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("caffe_lite: error: ")


def test_errors_from_the_script_are_one_line(tmp_path):
    result = run_tool("time", f"--model={tmp_path / 'nowhere.prototxt'}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("caffe_lite")] == [
        f"caffe_lite: error: {tmp_path / 'nowhere.prototxt'}: net file not found (--model)"]


# --- the real LeNet --------------------------------------------------------------

def test_time_on_lenet(capsys):
    needs(LENET)
    model = str(LENET / "lenet.prototxt")
    status, _, err = run_main(capsys, "time", f"--model={model}", "--iterations=2")
    assert status == 0, err
    names = ["data", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"]
    check_time_output(messages(err), names, 2)


def test_lenet_scores_mnist_test_set(tmp_path):
    """caffe_lite test on the 10,000 MNIST test images: 99.14 %, as the model is known."""
    _, model = lenet_on_mnist(tmp_path)
    start = time.perf_counter()
    result = run_tool("test", f"--model={model}",
                      f"--weights={LENET / 'lenet_iter_10000.caffemodel'}",
                      "--iterations=100", cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    msgs = messages(result.stderr)
    batch, summary = scoring_lines(msgs)
    assert len(batch) == 200 and batch[0].startswith("Batch 0, accuracy = ")
    assert summary[1] == "accuracy = 0.9914"
    assert re.fullmatch(r"loss = [\d.e+-]+ \(\* 1 = [\d.e+-]+ loss\)", summary[2])
    loss = float(summary[0].split()[1])
    assert 0.01 < loss < 0.05, summary
    print(f"caffe_lite test on 10000 MNIST images: {elapsed:.1f} s")


def test_time_with_synthetic_data_on_a_net_without_its_database(tmp_path, capsys):
    """--synthetic-data swaps the missing LMDB for random data of the same shape."""
    from pycaffe_lite.cli import main
    model = tmp_path / "net.prototxt"
    model.write_text('layer { name: "data" type: "Data" top: "data" top: "label" '
                     'transform_param { crop_size: 8 } '
                     'data_param { source: "nowhere_lmdb" batch_size: 3 } }\n'
                     'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                     'inner_product_param { num_output: 2 } }\n'
                     'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" '
                     'bottom: "label" top: "loss" }\n')
    assert main(["time", f"--model={model}", "--iterations=1"]) == 1
    assert "nowhere_lmdb" in capsys.readouterr().err
    assert main(["time", f"--model={model}", "--iterations=1", "--synthetic-data"]) == 0
    err = capsys.readouterr().err
    assert "*** Benchmark ends ***" in err and "ip\tforward" in err


BN_NET = """
name: "bn"
layer { name: "data" type: "DummyData" top: "data"
        dummy_data_param { data_filler { type: "constant" value: 1 } shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 bias_term: false } }
layer { name: "bn" type: "BatchNorm" bottom: "ip" top: "bn" }
layer { name: "scale" type: "Scale" bottom: "bn" top: "bn" scale_param { bias_term: true } }
"""


def test_fold_bn_flag(tmp_path, capsys):
    model = tmp_path / "bn.prototxt"
    model.write_text(BN_NET)
    net = Net(str(model), phase=TEST)
    rng = numpy.random.default_rng(0)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.uniform(0.5, 2, blob.shape)
    weights = tmp_path / "bn.caffemodel"
    net.save(str(weights))
    argv = ["test", f"--model={model}", f"--weights={weights}", "--iterations=1"]
    _, _, plain = run_main(capsys, *argv)
    _, _, folded = run_main(capsys, *argv, "--fold_bn")
    plain, folded = messages(plain), messages(folded)
    assert any("folded 'bn' + 'scale' into 'ip'" in m for m in folded)
    scores = [m for m in plain if m.startswith("Batch ")]
    got = [m for m in folded if m.startswith("Batch ")]
    assert len(scores) == len(got) == 4
    for a, b in zip(scores, got):
        assert float(a.split("= ")[1]) == pytest.approx(float(b.split("= ")[1]), rel=1e-5)
    status, _, err = run_main(capsys, "time", f"--model={model}", f"--weights={weights}",
                              "--iterations=2", "--fold_bn")
    msgs = messages(err)
    assert status == 0 and "Performing Backward" not in msgs
    assert any("backward skipped" in m for m in msgs)
    check_time_output(msgs, ["data", "ip"], 2)


def test_batch_size_resizes_inputs_and_synthetic_data(tmp_path, capsys):
    """--batch_size (our extension) sets the first dim of Input layers and, with
    --synthetic-data, of the data that replaces a missing database."""
    model = tmp_path / "net.prototxt"
    model.write_text('layer { name: "in" type: "Input" top: "a" '
                     'input_param { shape { dim: 50 dim: 2 } } }\n'
                     'layer { name: "d" type: "Data" top: "b" top: "label" '
                     'data_param { source: "nowhere_lmdb" batch_size: 7 } }\n'
                     'layer { name: "ip" type: "InnerProduct" bottom: "a" top: "y" '
                     'inner_product_param { num_output: 3 } }\n')
    _, flags = parse_flags([f"--model={model}", "--synthetic-data", "--batch_size=2"],
                           cli.FLAGS)
    net = cli._build_net(flags, TEST, numpy)
    assert net.blobs["a"].shape == (2, 2) and net.blobs["y"].shape == (2, 3)
    assert net.blobs["b"].shape[0] == 2 and net.blobs["label"].shape == (2,)
    status, _, err = run_main(capsys, "time", f"--model={model}", "--iterations=1",
                              "--synthetic-data", "--batch_size=2")
    assert status == 0 and "*** Benchmark ends ***" in err
    status, _, err = run_main(capsys, "time", f"--model={model}", "--iterations=1",
                              "--batch_size=-1", "--synthetic-data")
    assert status != 0 and "--batch_size must be positive, got -1" in err
