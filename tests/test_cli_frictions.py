"""Frictions a new user met on the command line (issue 12): each test here failed
before its fix.

train --synthetic-data, the missing-LMDB and missing-net-file errors, Caffe's
net-setup log lines, binarize's output format, the upgrade warning once per
file, and the --help texts.
"""
import logging
import os
import re
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO
from pycaffe_lite import cli
from pycaffe_lite.io import files
from pycaffe_lite.layer import TEST
from pycaffe_lite.net import Net
from pycaffe_lite.tools import convert_mnist_data

GLOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] (.*)$")
HWGQ_LENET = FIXTURES / "hwgq" / "mnist" / "lenet-hwgq-3ne"


def messages(err):
    return [m.group(1) for m in map(GLOG_LINE.match, err.splitlines()) if m]


def error_line(err):
    """The one ``caffe_lite: error:`` line of a failed run (and no traceback)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("caffe_lite: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def need(path):
    if not path.exists():
        pytest.skip(f"test material not found: {path}")
    return path


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --- binarize writes the current format; the upgrade warning once per file ---------

OLD_DEPLOY = """name: "old"
input: "data"
input_shape { dim: 2 dim: 1 dim: 6 dim: 6 }
layer { name: "bconv" type: "BinaryConvolution" bottom: "data" top: "bconv"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 1 } }
  binary_convolution_param { use_alpha: true } }
layer { name: "ip" type: "InnerProduct" bottom: "bconv" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
"""


def test_binarize_output_reads_back_without_an_upgrade_warning(tmp_path, capsys, caplog):
    model = tmp_path / "deploy.prototxt"
    model.write_text(OLD_DEPLOY)
    weights = tmp_path / "trained.caffemodel"
    Net(str(model), phase=TEST).save(str(weights))
    out_model, out_weights = tmp_path / "deploy_bw.prototxt", tmp_path / "bw.caffemodel"
    assert cli.main(["binarize", f"--model={model}", f"--weights={weights}",
                     f"--out_model={out_model}", f"--out_weights={out_weights}"]) == 0
    capsys.readouterr()
    caplog.set_level(logging.INFO, logger="pycaffe_lite")
    caplog.clear()
    written = files.read_net(str(out_model))
    Net(str(out_model), phase=TEST, weights=str(out_weights))
    assert warnings(caplog) == []
    assert "input:" not in out_model.read_text()
    assert [(layer.name, layer.type) for layer in written.layer] == [
        ("input", "Input"), ("bconv", "Convolution"), ("ip", "InnerProduct")]


def test_upgrade_warning_once_per_file(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pycaffe_lite")
    old, other = tmp_path / "old.prototxt", tmp_path / "other.prototxt"
    old.write_text(OLD_DEPLOY)
    other.write_text(OLD_DEPLOY)
    for _ in range(3):
        files.read_net(str(old))
    Net(str(old), phase=TEST)
    files.read_net(str(other))
    assert len(warnings(caplog)) == 2
    assert warnings(caplog)[0].startswith(f"{old}: upgraded in memory from deprecated "
                                          "input fields;")
    assert warnings(caplog)[1].startswith(f"{other}: ")


def test_solver_upgrade_warning_once_per_file(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pycaffe_lite")
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "x.prototxt" base_lr: 0.1 solver_type: ADAM')
    for _ in range(2):
        assert files.read_solver(str(solver)).type == "Adam"
    assert len(warnings(caplog)) == 1


# --- train --synthetic-data; the missing-LMDB error -----------------------------------

def hwgq_lenet_solver(directory, **fields):
    """A copy of the HWGQ LeNet solver, its net named by absolute path; a few
    iterations (``fields`` override)."""
    need(HWGQ_LENET / "train_val.prototxt")
    settings = dict(test_iter=1, test_interval=2, max_iter=3, display=1,
                    snapshot_after_train="false")
    settings.update(fields)
    text = (HWGQ_LENET / "solver.prototxt").read_text()
    text = re.sub(r'^net: ".*"$', f'net: "{HWGQ_LENET / "train_val.prototxt"}"', text,
                  flags=re.M)
    for key, value in settings.items():
        text = re.sub(rf"^{key}: .*\n", "", text, flags=re.M) + f"{key}: {value}\n"
    solver = directory / "solver.prototxt"
    solver.write_text(text)
    return solver


def test_train_with_synthetic_data_runs_a_fixture_without_its_lmdb(tmp_path, monkeypatch,
                                                                    capsys):
    solver = hwgq_lenet_solver(tmp_path)
    monkeypatch.chdir(tmp_path)             # its "../mnist_train_lmdb" is not there
    assert not Path("../mnist_train_lmdb").exists()
    assert cli.main(["train", f"--solver={solver}"]) == 1
    error = error_line(capsys.readouterr().err)
    assert "layer 'mnist' (type Data): data_param.source '../mnist_train_lmdb' does not " \
           "exist" in error
    status = cli.main(["train", f"--solver={solver}", "--synthetic-data",
                       "--synthetic-shape=1,28,28"])
    msgs = messages(capsys.readouterr().err)
    assert status == 0, msgs[-5:]
    assert msgs.count("Top shape: 64 1 28 28 (50176)") == 1        # the train net
    assert msgs.count("Top shape: 100 1 28 28 (78400)") == 1       # the test net
    assert [m for m in msgs if "Testing net" in m] == [
        "Iteration 0, Testing net (#0)", "Iteration 2, Testing net (#0)"]
    assert any(m.startswith("Iteration 3, loss = ") for m in msgs)
    assert msgs[-1] == "Optimization Done."


def test_train_batch_size_and_bad_synthetic_shape(tmp_path, monkeypatch, capsys):
    solver = hwgq_lenet_solver(tmp_path, max_iter=1, test_initialization="false")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", f"--solver={solver}", "-synthetic_data", "--batch-size=2",
                     "-synthetic_shape", "1,28,28"]) == 0
    msgs = messages(capsys.readouterr().err)
    assert msgs.count("Top shape: 2 1 28 28 (1568)") == 2         # train and test nets
    assert cli.main(["train", f"--solver={solver}", "--synthetic-data",
                     "--synthetic-shape=28x28"]) == 1
    assert "--synthetic_shape must be C,H,W" in error_line(capsys.readouterr().err)


def test_synthetic_data_takes_the_size_the_other_phase_crops_to():
    """CIFAR's train_val crops 32 x 32 in TRAIN only: TEST gets 32 x 32 too, so that
    the train and test nets' weights have the same shapes."""
    from pycaffe_lite.io.synthetic import synthesize_data_layers
    from pycaffe_lite.proto import caffe_pb2
    from google.protobuf import text_format
    net = text_format.Parse(
        'layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TRAIN } '
        '  transform_param { crop_size: 32 } data_param { source: "x" batch_size: 4 } }'
        'layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TEST } '
        '  data_param { source: "y" batch_size: 5 } }', caffe_pb2.NetParameter())
    shapes = [list(layer.dummy_data_param.shape[0].dim)
              for layer in synthesize_data_layers(net).layer]
    assert shapes == [[4, 3, 32, 32], [5, 3, 32, 32]]


MISSING_LMDB_NET = """name: "nodata"
layer { name: "mnist" type: "Data" top: "data" top: "label"
  transform_param { crop_size: 4 }
  data_param { source: "nowhere_lmdb" batch_size: 2 backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_missing_lmdb_says_how_to_make_one_or_do_without(tmp_path, monkeypatch, capsys):
    from pycaffe_lite.errors import CaffeError
    model = tmp_path / "net.prototxt"
    model.write_text(MISSING_LMDB_NET)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["time", f"--model={model}", "--iterations=1"]) == 1
    error = error_line(capsys.readouterr().err)
    assert "layer 'mnist' (type Data): data_param.source 'nowhere_lmdb' does not exist" in error
    assert f"current directory {tmp_path}" in error
    assert "convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE nowhere_lmdb" in error
    assert "convert_mnist_data" in error and "--synthetic-data" in error
    with pytest.raises(CaffeError) as caught:
        Net(str(model), phase=TEST)
    assert type(caught.value).__name__ == "MissingSourceError"
    # Caffe's default backend is LevelDB: the hint then makes one of those.
    model.write_text(MISSING_LMDB_NET.replace(" backend: LMDB", ""))
    with pytest.raises(CaffeError, match=r"backend leveldb;.*convert_imageset "
                                         r"-backend=leveldb \[FLAGS\]"):
        Net(str(model), phase=TEST)


def test_missing_image_list_says_what_to_write_or_do_without(tmp_path, capsys):
    model = tmp_path / "net.prototxt"
    model.write_text('layer { name: "images" type: "ImageData" top: "data" top: "label" '
                     f'image_data_param {{ source: "{tmp_path / "train.txt"}" batch_size: 2 }} }}')
    assert cli.main(["time", f"--model={model}", "--iterations=1"]) == 1
    error = error_line(capsys.readouterr().err)
    assert "layer 'images' (type ImageData): image_data_param.source: " in error
    assert "train.txt" in error and "'relative/path label' line per image" in error
    assert "--synthetic-data" in error


# --- a solver's net file that is not there -------------------------------------------

def test_missing_net_file_names_the_solver_and_the_directory(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "net.prototxt").write_text(MISSING_LMDB_NET)
    solver = folder / "solver.prototxt"
    solver.write_text('net: "net.prototxt" base_lr: 0.1 max_iter: 1 solver_mode: CPU')
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--solver=model/solver.prototxt"]) == 1
    error = error_line(capsys.readouterr().err)
    assert error.startswith("caffe_lite: error: net.prototxt: net file not found (named by "
                            "'net' in model/solver.prototxt:1;")   # the field's line
    assert f"current directory {tmp_path}" in error
    assert f"it is next to the solver: run from {folder}" in error
    os.remove(folder / "net.prototxt")
    solver.write_text('train_net: "elsewhere.prototxt" base_lr: 0.1 max_iter: 1')
    assert cli.main(["train", "--solver=model/solver.prototxt"]) == 1
    error = error_line(capsys.readouterr().err)
    assert "elsewhere.prototxt: net file not found (named by 'train_net' in " in error
    assert "next to the solver" not in error


# --- Caffe's net-setup log lines -------------------------------------------------------

SETUP_NET = """name: "setup"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 4 } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
  loss_weight: 2 }
"""


def test_net_setup_lines_as_caffe_prints_them(tmp_path, capsys):
    model = tmp_path / "net.prototxt"
    model.write_text(SETUP_NET)
    assert cli.main(["time", f"--model={model}", "--iterations=1"]) == 0
    msgs = messages(capsys.readouterr().err)
    start = msgs.index("Creating Layer data")
    end = msgs.index("Network initialization done.")
    # 4 bytes a float: 2*3 + 2, then 2*4 twice (in-place), then the loss.
    assert msgs[start:end + 1] == [
        "Creating Layer data", "data -> data", "data -> label", "Setting up data",
        "Top shape: 2 3 (6)", "Top shape: 2 (2)", "Memory required for data: 32",
        "Creating Layer ip", "ip <- data", "ip -> ip", "Setting up ip",
        "Top shape: 2 4 (8)", "Memory required for data: 64",
        "Creating Layer relu", "relu <- ip", "relu -> ip (in-place)", "Setting up relu",
        "Top shape: 2 4 (8)", "Memory required for data: 96",
        "Creating Layer loss", "loss <- ip", "loss <- label", "loss -> loss",
        "Setting up loss", "Top shape: (1)", "    with loss weight 2",
        "Memory required for data: 100",
        "loss needs backward computation.", "relu needs backward computation.",
        "ip needs backward computation.", "data does not need backward computation.",
        "This network produces output loss", "Network initialization done."]


def test_net_setup_lines_cost_nothing_when_info_is_off(tmp_path, monkeypatch):
    from pycaffe_lite import net_log

    def refuse(*args):
        raise AssertionError("formatted a setup line with INFO off")
    monkeypatch.setattr(net_log, "shape_string", refuse)
    monkeypatch.setattr(net_log.log, "info", refuse)
    logging.getLogger("pycaffe_lite").setLevel(logging.WARNING)
    model = tmp_path / "net.prototxt"
    model.write_text(SETUP_NET)
    assert Net(str(model), phase=TEST).output_names == ["loss"]


# --- --help texts ------------------------------------------------------------------

def test_caffe_lite_help_names_the_flag_spellings(capsys):
    from pycaffe_lite.flags import SPELLING_NOTE, parse_flags
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert SPELLING_NOTE in out and "--flag=value" in out and "-noflag" in out
    assert "'-' in a flag's name reads as '_'" in out
    for spelling in (["--synthetic-data"], ["-synthetic_data"], ["--synthetic_data=true"],
                     ["-synthetic-data"]):
        assert parse_flags(spelling, cli.FLAGS)[1].synthetic_data is True
    for spelling in (["--batch-size", "3"], ["-batch_size=3"], ["--batch_size=3"]):
        assert parse_flags(spelling, cli.FLAGS)[1].batch_size == 3


def test_convert_mnist_data_help_points_to_what_exists(capsys):
    assert convert_mnist_data.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "get_mnist.sh" not in out
    paths = re.findall(r"\b(?:examples|data|tools)/[\w./-]+", out)
    assert paths, out
    for path in paths:
        assert (REPO / path).exists(), path
