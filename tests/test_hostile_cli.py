"""Issue 13, the command line and API side: what a hostile or careless user gives
``caffe_lite``, its tools, ``caffe.io`` and ``Net`` ends in one clear line of ours.

Each test is named after the finding it pins down: a traceback from the CLI,
int32 flags out of range, an unknown image encoding, labels beyond int32,
huge batches and empty nets from ``time``, and Python layers running code
named by an untrusted prototxt.
"""
import logging
import os
import re
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy
import pytest

import pycaffe_lite
from pycaffe_lite import cli, flags as gflags
from pycaffe_lite.errors import CaffeError, LayerError, NetError
from pycaffe_lite.io import caffe_io
from pycaffe_lite.layer import TEST
from pycaffe_lite.layers.python_layer import python_layers_allowed
from pycaffe_lite.net import Net
from pycaffe_lite.tools import (classify, convert_imageset, convert_mnist_data, detect,
                                parse_log, run_tool)

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "caffe_lite"
GLOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.<>-]+:\d+\] (.*)$")

INPUT_NET = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 4 } }
"""

DUMMY_DATA = """
layer {
  name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param {
    data_filler { type: "constant" value: 1 }
    data_filler { type: "constant" value: 1 }
    shape { dim: 4 dim: 3 }
    shape { dim: 4 }
  }
}
"""

TRAIN_NET = """
name: "tiny"
""" + DUMMY_DATA + """layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

# A Python layer whose module leaves a mark when imported: "did its code run?"
PYTHON_NET = """
name: "untrusted"
""" + DUMMY_DATA + """layer { name: "mystery" type: "Python" bottom: "data" top: "copied"
        python_param { module: "%(module)s" layer: "Copy" } }
layer { name: "ip" type: "InnerProduct" bottom: "copied" top: "ip"
        inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

PYTHON_MODULE = '''
import os
import pycaffe_lite as caffe

open(os.environ["HOSTILE_MARK"], "a").write("imported\\n")


class Copy(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff
'''


def run_main(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_script(*argv, cwd=None, env=None, memory=None):
    """``caffe_lite ARGV`` in a child process (``memory``: an address-space cap, bytes)."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    full_env = dict(os.environ, **(env or {}))
    for name in ("PYCAFFE_LITE_DEBUG", "GLOG_v"):
        if name not in (env or {}):
            full_env.pop(name, None)
    return subprocess.run([sys.executable, str(TOOL), *map(str, argv)], capture_output=True,
                          text=True, cwd=cwd, env=full_env, timeout=300, check=False,
                          preexec_fn=cap if memory else None)


def error_line(err, prog="caffe_lite"):
    """The one ``<prog>: error:`` line of ``err``, its last line, and no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1 and err.rstrip().splitlines()[-1] == lines[0], err
    return lines[0][len(f"{prog}: error: "):]


@pytest.fixture
def small(tmp_path):
    model = tmp_path / "small.prototxt"
    model.write_text(INPUT_NET)
    return model


@pytest.fixture
def tiny(tmp_path):
    """(model, weights, solver) of a small trainable net."""
    model = tmp_path / "tiny.prototxt"
    model.write_text(TRAIN_NET)
    weights = tmp_path / "tiny.caffemodel"
    Net(str(model), phase=TEST).save(str(weights))
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{model}"\nbase_lr: 0.01\nmax_iter: 2\nlr_policy: "fixed"\n'
                      f'snapshot_after_train: false\nsolver_mode: CPU\n')
    return model, weights, solver


@pytest.fixture
def untrusted(tmp_path, monkeypatch):
    """(model, weights, mark, module name): a net with a Python layer; ``mark``
    exists once its module's code ran."""
    name = f"hostile_module_{os.getpid()}_{abs(hash(str(tmp_path))) % 10 ** 8}"
    (tmp_path / f"{name}.py").write_text(PYTHON_MODULE)
    model = tmp_path / "untrusted.prototxt"
    model.write_text(PYTHON_NET % {"module": name})
    mark = tmp_path / "mark"
    monkeypatch.setenv("HOSTILE_MARK", str(mark))
    monkeypatch.syspath_prepend(str(tmp_path))
    trusted = tmp_path / "trusted.prototxt"        # the same net without the Python layer
    trusted.write_text(TRAIN_NET)
    weights = tmp_path / "untrusted.caffemodel"
    Net(str(trusted), phase=TEST).save(str(weights))
    yield model, weights, mark, name
    sys.modules.pop(name, None)


# --- no traceback from the CLI ---------------------------------------------------------

def _raise_internal(flags):
    return {}["no such key"]        # a KeyError: what a bug looks like


@pytest.fixture
def buggy_command(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "time", cli.COMMANDS["time"]._replace(run=_raise_internal))


def test_cli_internal_exception_is_one_line_saying_bug(capsys, buggy_command, monkeypatch):
    monkeypatch.delenv("PYCAFFE_LITE_DEBUG", raising=False)
    monkeypatch.delenv("GLOG_v", raising=False)
    status, _, err = run_main(capsys, "time", "--model=x")
    assert status == 1
    line = error_line(err)
    # the place named is the innermost frame of our code (here: the CLI that called it)
    assert line.startswith("internal error, a bug in pycaffe_lite: KeyError: 'no such key' "
                           "(at cli.py:"), line
    assert "report it" in line and "--debug" in line


@pytest.mark.parametrize("how", [["--debug"], ["-v", "1"], ["-v=2"], "GLOG_v",
                                 "PYCAFFE_LITE_DEBUG"])
def test_cli_internal_exception_traceback_only_when_asked(capsys, buggy_command, monkeypatch,
                                                          how):
    monkeypatch.delenv("PYCAFFE_LITE_DEBUG", raising=False)
    monkeypatch.delenv("GLOG_v", raising=False)
    if isinstance(how, str):
        monkeypatch.setenv(how, "1")
        how = []
    status, _, err = run_main(capsys, "time", "--model=x", *how)
    assert status == 1
    assert "Traceback" in err and "_raise_internal" in err
    assert err.rstrip().splitlines()[-1].startswith(
        "caffe_lite: error: internal error, a bug in pycaffe_lite: KeyError")


def test_cli_user_error_traceback_with_debug_flag(capsys, tmp_path):
    status, _, err = run_main(capsys, "time", f"--model={tmp_path / 'none.prototxt'}",
                              "--debug")
    assert status == 1
    assert "Traceback" in err
    assert err.rstrip().splitlines()[-1] == (
        f"caffe_lite: error: {tmp_path / 'none.prototxt'}: net file not found (--model)")


def test_cli_os_error_is_one_line_naming_the_file(capsys, monkeypatch, tmp_path):
    def unreadable(flags):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked"))
    monkeypatch.setitem(cli.COMMANDS, "time", cli.COMMANDS["time"]._replace(run=unreadable))
    status, _, err = run_main(capsys, "time")
    assert status == 1
    assert error_line(err) == f"{tmp_path / 'locked'}: Permission denied"


def test_cli_script_internal_exception_exit_1_no_traceback(tmp_path):
    # The script, end to end: a sitecustomize replaces the command by one that
    # fails as a bug would.
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""
        import pycaffe_lite.cli as cli
        def broken(flags):
            raise ZeroDivisionError("division by zero")
        cli.COMMANDS["time"] = cli.COMMANDS["time"]._replace(run=broken)
    """))
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = run_script("time", "--model=x", env=env)
    assert result.returncode == 1
    assert "internal error, a bug in pycaffe_lite: ZeroDivisionError: division by zero" in \
        error_line(result.stderr)
    result = run_script("time", "--model=x", "--debug", env=env)
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_tool_internal_exception_is_one_glog_error_line(capsys):
    def body(args, values):
        raise ValueError("unexpected")
    status = run_tool("some_tool", "Usage: some_tool\n", [], (), [], body)
    assert status == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.splitlines()
    message = GLOG_LINE.match(line).group(1)
    assert line.startswith("E") and message.startswith(
        "some_tool: internal error, a bug in pycaffe_lite: ValueError: unexpected")
    assert run_tool("some_tool", "Usage: some_tool\n", [], (), ["--debug"], body) == 1
    assert "Traceback" in capsys.readouterr().err


def test_tool_usage_error_in_body_is_one_line(capsys):
    def body(args, values):
        raise gflags.UsageError("Need a thing (--thing).")
    assert run_tool("some_tool", "Usage: some_tool\n", [], (), [], body) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "some_tool: Need a thing (--thing)." in err


# --- int32 flags --------------------------------------------------------------------

@pytest.mark.parametrize("command", ["train", "test", "time"])
@pytest.mark.parametrize("level", ["2147483648", "-2147483649"])
def test_level_out_of_int32_range_is_a_usage_error(capsys, tiny, command, level):
    model, weights, solver = tiny
    status, _, err = run_main(capsys, command, f"--model={model}", f"--weights={weights}",
                              f"--solver={solver}", "--level", level)
    assert status == 1
    assert error_line(err) == (f"flag --level: {level} is out of range: an int32 is "
                               "-2147483648 to 2147483647")


def test_level_at_int32_limits_is_accepted(capsys, tiny):
    model, weights, _ = tiny
    for level in ("2147483647", "-2147483648"):
        status, _, err = run_main(capsys, "test", f"--model={model}", f"--weights={weights}",
                                  "--iterations=1", f"--level={level}")
        assert status == 0, err


@pytest.mark.parametrize("flag", ["iterations", "batch_size", "seed", "threads"])
def test_int32_flags_checked_at_parsing(capsys, small, flag):
    status, _, err = run_main(capsys, "time", f"--model={small}", f"--{flag}=99999999999")
    assert status == 1
    assert error_line(err) == (f"flag --{flag}: 99999999999 is out of range: an int32 is "
                               "-2147483648 to 2147483647")


def test_gpu_device_ids_out_of_int32_range(capsys, small):
    status, _, err = run_main(capsys, "time", f"--model={small}", "--gpu=0,4294967296")
    assert status == 1
    assert "--gpu: device ID: 4294967296 is out of range" in error_line(err)


def test_tool_int32_flag_out_of_range(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        convert_imageset.main(["-resize_width=2147483648", "root/", "list", str(tmp_path / "db")])
    assert exit_info.value.code == 2
    assert "convert_imageset: error: flag --resize_width: 2147483648 is out of range" in \
        capsys.readouterr().err


def test_net_api_level_out_of_int32_range(small):
    with pytest.raises(NetError, match="level 2147483648 is out of range: an int32"):
        Net(str(small), phase=TEST, level=2 ** 31)


# --- image encodings and labels -----------------------------------------------------

@pytest.fixture
def image(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), numpy.full((4, 5, 3), 7, numpy.uint8))
    return path


@pytest.mark.parametrize("encoding", ["foo", "x.png", "../png", "png\0", "exr"])
def test_read_image_to_datum_unknown_encoding_names_it(image, encoding):
    with pytest.raises(CaffeError) as info:
        caffe_io.read_image_to_datum(str(image), 1, encoding=encoding)
    message = str(info.value)
    assert message.startswith(f"encoding '{encoding}': ")
    assert "not an image format OpenCV can write; accepted: " in message
    assert "png" in message.split("accepted: ")[1] and "jpg" in message


def test_read_image_to_datum_known_encodings_still_work(image):
    datum = caffe_io.read_image_to_datum(str(image), 3, encoding="JPG")
    assert datum.encoded and datum.label == 3
    assert caffe_io.decode_datum_to_cvmat(datum).shape == (4, 5, 3)
    assert "png" in caffe_io.image_encodings() and "foo" not in caffe_io.image_encodings()


def test_read_image_to_datum_label_beyond_int32(image):
    with pytest.raises(CaffeError, match=r"a.png: label 99999999999999999999 is out of range: "
                                         r"Caffe's labels are int32"):
        caffe_io.read_image_to_datum(str(image), 99999999999999999999)


def test_image_list_label_beyond_int32_names_file_and_line(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a.png 0\nb.png 99999999999999999999\n")
    with pytest.raises(CaffeError, match=rf"{re.escape(str(listing))}:2: label "
                                         r"99999999999999999999 is out of range"):
        caffe_io.read_image_list(str(listing))
    listing.write_text("a.png -2147483648\nb.png 2147483647\n")
    assert [label for _, label, _ in caffe_io.read_image_list(str(listing))] == [
        -2147483648, 2147483647]


def test_convert_imageset_unknown_encode_type(image, tmp_path, caplog):
    listing = tmp_path / "list.txt"
    listing.write_text("a.png 1\n")
    db = tmp_path / "db"
    with caplog.at_level(logging.ERROR, logger="pycaffe_lite"):
        assert convert_imageset.main(["-encode_type=foo", f"{tmp_path}/", str(listing),
                                      str(db)]) == 1
    assert "convert_imageset: -encode_type 'foo': not an image format OpenCV can write; " \
           "accepted: " in caplog.text
    assert not db.exists()


def test_convert_imageset_guessed_unknown_encoding_skipped(image, tmp_path, caplog):
    odd = tmp_path / "b.notanimage"
    odd.write_bytes(image.read_bytes())
    listing = tmp_path / "list.txt"
    listing.write_text("a.png 1\nb.notanimage 2\n")
    with caplog.at_level(logging.INFO, logger="pycaffe_lite"):
        assert convert_imageset.main(["-encoded", f"{tmp_path}/", str(listing),
                                      str(tmp_path / "db")]) == 0
    assert f"{listing}:2: cannot encode 'b.notanimage' as 'notanimage'" in caplog.text
    assert "Processed 1 files." in caplog.text


def test_convert_imageset_label_beyond_int32(image, tmp_path, caplog):
    listing = tmp_path / "list.txt"
    listing.write_text("a.png 4294967296\n")
    with caplog.at_level(logging.ERROR, logger="pycaffe_lite"):
        assert convert_imageset.main([f"{tmp_path}/", str(listing), str(tmp_path / "db")]) == 1
    assert f"{listing}:1: label 4294967296 is out of range" in caplog.text


# --- time: huge batches, empty nets, the memory total ---------------------------------

def test_time_batch_size_beyond_int32(capsys, small):
    status, _, err = run_main(capsys, "time", f"--model={small}", "--batch_size", "99999999999")
    assert status == 1
    assert error_line(err).startswith("flag --batch_size: 99999999999 is out of range")


def test_time_huge_batch_is_one_line_not_a_traceback(small):
    # 2e9 x 3 floats: 22 GiB, past a 3 GiB address space (and past the memory guard)
    result = run_script("time", f"--model={small}", "--batch_size", "2000000000",
                        "--iterations=1", memory=3 * 2 ** 30)
    assert result.returncode == 1, result.stderr
    line = error_line(result.stderr)
    assert "memory" in line.lower() and "bug" not in line, line
    assert "layer 'data'" in line and "(2000000000, 3)" in line, line     # the memory guard's


@pytest.mark.parametrize("which", ["/dev/null", "empty"])
def test_time_dev_null_or_empty_net_exits_1(capsys, tmp_path, which):
    model = which
    if which == "empty":
        model = tmp_path / "empty.prototxt"
        model.write_text('name: "nothing"\n')
    status, _, err = run_main(capsys, "time", f"--model={model}", "--iterations=1")
    assert status == 1
    line = error_line(err)
    assert str(model) in line and "bug" not in line


def test_time_prints_the_nets_memory_total(capsys, small):
    status, _, err = run_main(capsys, "time", f"--model={small}", "--iterations=1",
                              "--batch_size=5")
    assert status == 0, err
    totals = [int(m.group(1)) for m in re.finditer(r"\] Memory required for data: (\d+)$",
                                                   err, re.MULTILINE)]
    # data 5x3, ip 5x4, float32: Caffe's last line is the net's total
    assert totals and totals[-1] == (5 * 3 + 5 * 4) * 4


# --- Python layers from untrusted nets ------------------------------------------------

def test_python_layer_logs_module_and_file(untrusted, caplog):
    model, _, mark, name = untrusted
    with caplog.at_level(logging.INFO, logger="pycaffe_lite"):
        Net(str(model), phase=TEST)
    assert mark.exists()
    module_file = str(Path(str(model)).parent / f"{name}.py")
    assert f"Python layer 'mystery': class Copy from module {name} ({module_file})" in \
        caplog.text


@pytest.mark.parametrize("make", [
    lambda model: Net(model, phase=TEST, allow_python_layers=False),
    lambda model: pycaffe_lite.Net(model, pycaffe_lite.TEST, allow_python_layers=False),
])
def test_net_allow_python_layers_false_refuses_without_importing(untrusted, make):
    model, _, mark, name = untrusted
    with pytest.raises(LayerError) as info:
        make(str(model))
    message = str(info.value)
    assert message.startswith("layer 'mystery' (type Python): Python layers are disabled")
    assert f"'{name}'" in message
    assert not mark.exists() and name not in sys.modules


def test_python_layers_allowed_by_default_as_caffe(untrusted):
    model, _, mark, _ = untrusted
    with python_layers_allowed(False):
        with pytest.raises(LayerError):
            Net(str(model), phase=TEST)
        net = Net(str(model), phase=TEST, allow_python_layers=True)   # explicit wins
    assert "mystery" in net.layer_dict and mark.exists()
    assert Net(str(model), phase=TEST).layer_dict["mystery"].type == "Python"


@pytest.mark.parametrize("command", ["train", "test", "time"])
def test_cli_no_python_layers_refuses_at_net_build(capsys, untrusted, tmp_path, command):
    model, weights, mark, name = untrusted
    solver = tmp_path / "untrusted_solver.prototxt"
    solver.write_text(f'net: "{model}"\nbase_lr: 0.01\nmax_iter: 1\nlr_policy: "fixed"\n'
                      'snapshot_after_train: false\nsolver_mode: CPU\n')
    status, _, err = run_main(capsys, command, f"--model={model}", f"--weights={weights}",
                              f"--solver={solver}", "--iterations=1", "--no-python-layers")
    assert status == 1
    line = error_line(err)
    assert line.startswith("layer 'mystery' (type Python): Python layers are disabled"), line
    assert f"'{name}'" in line
    assert not mark.exists()


def test_python_layer_code_failing_is_the_users_error_not_a_bug(capsys, untrusted):
    model, weights, _, name = untrusted
    module = Path(str(model)).parent / f"{name}.py"
    module.write_text(PYTHON_MODULE.replace("top[0].data[...] = bottom[0].data",
                                            "raise ValueError('user code broke')"))
    status, _, err = run_main(capsys, "test", f"--model={model}", f"--weights={weights}",
                              "--iterations=1")
    assert status == 1
    line = error_line(err)
    assert line.startswith("layer 'mystery' (type Python): Python layer code failed: "
                           f"ValueError: user code broke (at {module}:"), line
    assert "bug" not in line


def test_cli_python_layers_run_without_the_flag(capsys, untrusted):
    model, weights, mark, name = untrusted
    status, _, err = run_main(capsys, "test", f"--model={model}", f"--weights={weights}",
                              "--iterations=1")
    assert status == 0, err
    assert mark.exists() and f"class Copy from module {name}" in err


def test_classify_no_python_layers_refuses_at_net_build(untrusted, tmp_path, capsys):
    model, weights, mark, name = untrusted
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(textwrap.dedent(f"""
        layer {{ name: "data" type: "Input" top: "data"
                input_param {{ shape {{ dim: 1 dim: 3 dim: 4 dim: 4 }} }} }}
        layer {{ name: "mystery" type: "Python" bottom: "data" top: "copied"
                python_param {{ module: "{name}" layer: "Copy" }} }}
        layer {{ name: "ip" type: "InnerProduct" bottom: "copied" top: "ip"
                inner_product_param {{ num_output: 2 }} }}
    """))
    status = classify.main([str(tmp_path / "none.png"), str(tmp_path / "out"), "--model_def",
                            str(deploy), "--pretrained_model", str(weights), "--mean_file", "",
                            "--no-python-layers"])
    assert status == 1
    line = error_line(capsys.readouterr().err, prog="classify")
    assert line.startswith("layer 'mystery' (type Python): Python layers are disabled"), line
    assert not mark.exists()


# --- --strict: NaN / inf in weights --------------------------------------------------

@pytest.fixture
def nan_weights(tiny, tmp_path):
    model, _, solver = tiny
    net = Net(str(model), phase=TEST)
    net.params["ip"][0].data[0, 1] = numpy.nan
    net.params["ip"][1].data[0] = numpy.inf
    weights = tmp_path / "nan.caffemodel"
    net.save(str(weights))
    return model, weights, solver


@pytest.mark.parametrize("command", ["train", "test", "time"])
def test_strict_makes_nan_weights_an_error(capsys, nan_weights, command):
    model, weights, solver = nan_weights
    argv = [command, f"--model={model}", f"--weights={weights}", f"--solver={solver}",
            "--iterations=1"]
    status, _, err = run_main(capsys, *argv)
    assert status == 0, err
    assert f"{weights}: layer 'ip' param blob 0 holds 1 NaN" in err       # a warning
    status, _, err = run_main(capsys, *argv, "--strict")
    assert status == 1
    line = error_line(err)
    assert line.startswith(f"{weights}: layer 'ip' param blob 0 holds 1 NaN"), line
    assert "strict" in line


# --- files the tools read: devices, FIFOs, binary lists, gzip bombs ------------------

@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("which", ["/dev/zero", "fifo", "folder"])
def test_image_list_device_fifo_or_folder_refused_not_read_forever(tmp_path, fifo, which):
    path = {"/dev/zero": "/dev/zero", "fifo": str(fifo), "folder": str(tmp_path)}[which]
    with pytest.raises(CaffeError, match=rf"{re.escape(path)}: is a .*, not a list file"):
        caffe_io.read_image_list(path)


def test_image_list_binary_file_names_file_and_line(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"a.png 1\n\xff\xfe 2\n")
    with pytest.raises(CaffeError, match=rf"{re.escape(str(listing))}:2: not a text list"):
        caffe_io.read_image_list(str(listing))


@pytest.mark.parametrize("reader", [caffe_io.read_image, caffe_io.load_image])
def test_image_device_or_fifo_refused_before_opencv_reads_it(fifo, reader):
    for path in ("/dev/zero", str(fifo)):
        with pytest.raises(OSError, match=rf"{re.escape(path)}: is a .*, not an image file") \
                as info:
            reader(path)
        assert isinstance(info.value, CaffeError)


def test_transformer_errors_are_caffe_errors_and_pycaffes_types():
    transformer = caffe_io.Transformer({"data": (1, 3, 4, 4)})
    with pytest.raises(CaffeError, match="Transpose order"):
        transformer.set_transpose("data", (1, 0))
    with pytest.raises(ValueError, match="Mean shape invalid") as info:
        transformer.set_mean("data", numpy.zeros((1, 2, 3, 4)))
    assert isinstance(info.value, CaffeError)


def test_parse_log_device_or_fifo_refused(tmp_path, fifo, caplog):
    for path in ("/dev/zero", str(fifo)):
        with caplog.at_level(logging.ERROR, logger="pycaffe_lite"):
            assert parse_log.main([path, str(tmp_path)]) == 1
        assert f"parse_log: {path}: is a" in caplog.text and "not a log file" in caplog.text


def test_parse_log_keeps_universal_newlines(tmp_path):
    log_file = tmp_path / "train.log"
    log_file.write_bytes(b"I1204 10:00:00.000000  1 solver.cpp:1] Solving tiny\r\n"
                         b"I1204 10:00:01.000000  1 solver.cpp:2] Iteration 0, lr = 0.01\r\n"
                         b"I1204 10:00:01.000000  1 solver.cpp:3] Iteration 0, loss = 0.5\r\n"
                         b"I1204 10:00:01.000000  1 solver.cpp:4]     Train net output #0: "
                         b"loss = 0.5\r\n")
    train, _ = parse_log.parse_log(str(log_file))
    assert train and train[0]["loss"] == 0.5


def test_convert_mnist_data_device_or_fifo_refused(tmp_path, fifo, caplog):
    for path in ("/dev/zero", str(fifo)):
        with caplog.at_level(logging.ERROR, logger="pycaffe_lite"):
            assert convert_mnist_data.main([path, path, str(tmp_path / "db")]) == 1
        assert f"{path}: is a" in caplog.text and "not a MNIST idx file" in caplog.text
    assert not (tmp_path / "db").exists()


def test_convert_mnist_data_gzip_bomb_refused(tmp_path, caplog, monkeypatch):
    import gzip
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(bytes(8 << 20)))
    monkeypatch.setenv("PYCAFFE_LITE_MEMORY_LIMIT", "1M")
    with caplog.at_level(logging.ERROR, logger="pycaffe_lite"):
        assert convert_mnist_data.main([str(bomb), str(bomb), str(tmp_path / "db")]) == 1
    assert f"{bomb}: decompresses to more than the memory limit of 1048576 bytes" in \
        caplog.text


# --- detect: windows and context padding ---------------------------------------------

@pytest.fixture
def detector_files(tmp_path):
    model = tmp_path / "det.prototxt"
    model.write_text('layer { name: "data" type: "Input" top: "data" '
                     'input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
                     'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                     'inner_product_param { num_output: 2 } }\n')
    weights = tmp_path / "det.caffemodel"
    Net(str(model), phase=TEST).save(str(weights))
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), numpy.full((20, 30, 3), 100, numpy.uint8))
    flags = ["--crop_mode", "list", "--model_def", str(model), "--pretrained_model",
             str(weights), "--mean_file", "", "--context_pad", "0"]
    return image, flags


@pytest.mark.parametrize("coords", ["1e309,0,5,5", "10,10,0,0", "5,5,5,5", "-9,-9,-1,-1"])
def test_detect_bad_window_names_the_line(detector_files, tmp_path, capsys, coords):
    image, flags = detector_files
    windows = tmp_path / "w.csv"
    windows.write_text(f"filename,xmin,ymin,xmax,ymax\n{image},0,0,8,8\n{image},{coords}\n")
    assert detect.main([str(windows), str(tmp_path / "out.csv")] + flags) == 1
    line = error_line(capsys.readouterr().err, prog="detect")
    assert line.startswith(f"{windows}:3: "), line


def test_detect_context_pad_past_half_the_input(detector_files, tmp_path, capsys):
    image, flags = detector_files
    windows = tmp_path / "w.csv"
    windows.write_text(f"filename,xmin,ymin,xmax,ymax\n{image},0,0,8,8\n")
    assert detect.main([str(windows), str(tmp_path / "out.csv")] + flags[:-1] + ["4"]) == 1
    assert error_line(capsys.readouterr().err, prog="detect") == (
        "--context_pad 4: must be at least 0 and less than half the net's input size "
        "(8 pixels)")
    assert detect.main([str(windows), str(tmp_path / "out.csv")] + flags[:-1] + ["3"]) == 0


@pytest.mark.parametrize("shape,dims", [((0, 0, 3), (8, 8)), ((4, 4, 3), (0, 8))])
def test_resize_image_empty_is_a_clear_error(shape, dims):
    with pytest.raises(ValueError, match="resize_image: cannot resize an image of shape") \
            as info:
        caffe_io.resize_image(numpy.zeros(shape, numpy.float32), dims)
    assert isinstance(info.value, CaffeError)


# --- classify: scales, image dims, channel swap ----------------------------------------

@pytest.mark.parametrize("extra,needle", [
    (["--raw_scale", "nan"], "argument --raw_scale: 'nan' is not a finite number"),
    (["--input_scale", "inf"], "argument --input_scale: 'inf' is not a finite number"),
    (["--images_dim", "1"], "--images_dim 1: expected height,width (two positive integers)"),
    (["--images_dim=-5,5"], "--images_dim -5,5: expected height,width"),
])
def test_classify_bad_numbers_are_usage_errors(detector_files, tmp_path, capsys, extra, needle):
    image, flags = detector_files
    with pytest.raises(SystemExit) as info:
        classify.main([str(image), str(tmp_path / "out")] + flags[2:-2] + extra)
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


def test_classify_channel_swap_out_of_range(detector_files, tmp_path, capsys):
    image, flags = detector_files
    assert classify.main([str(image), str(tmp_path / "out")] + flags[2:-2]
                         + ["--channel_swap", "5,5,5"]) == 1
    assert error_line(capsys.readouterr().err, prog="classify") == (
        "Channel swap (5, 5, 5) for input 'data': every entry must be a channel index, 0 to 2")


def test_transformer_channel_swap_indices_checked():
    transformer = caffe_io.Transformer({"data": (1, 3, 4, 4)})
    with pytest.raises(CaffeError, match=r"Channel swap \(0, 1, 3\) for input 'data'"):
        transformer.set_channel_swap("data", (0, 1, 3))
    transformer.set_channel_swap("data", (2, 1, 0))
    assert transformer.channel_swap["data"] == (2, 1, 0)


# --- compute_image_mean: hostile Datums ---------------------------------------------

def _lmdb_of(path, datums):
    import lmdb
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, datum in enumerate(datums):
            txn.put(b"%08d" % i, datum.SerializeToString())
    env.close()
    return path


@pytest.mark.parametrize("shape", [(3, -1, 5), (0, 0, 0), (3, 2 ** 30, 2 ** 30), (1, 2, 3)])
def test_compute_image_mean_first_datum_shape_checked(tmp_path, caplog, shape):
    from pycaffe_lite.proto import caffe_pb2
    from pycaffe_lite.tools import compute_image_mean
    channels, height, width = shape
    db = _lmdb_of(tmp_path / "db", [caffe_pb2.Datum(channels=channels, height=height,
                                                    width=width, data=bytes(15))])
    with caplog.at_level(logging.ERROR, logger="pycaffe_lite"):
        assert compute_image_mean.main([str(db)]) == 1
    assert (f"record '00000000' of {db}: its shape {channels} x {height} x {width} "
            "(channels x height x width) does not fit its 15 values") in caplog.text


def test_parse_log_output_value_not_a_number_skipped_with_its_line(tmp_path, caplog):
    log_file = tmp_path / "bad.log"
    log_file.write_text(
        "I1204 10:00:00.000000  1 solver.cpp:1] Solving tiny\n"
        "I1204 10:00:01.000000  1 solver.cpp:2] Iteration 0, lr = 0.01\n"
        "I1204 10:00:01.000000  1 solver.cpp:4]     Train net output #0: loss = 0-.5\n"
        "I1204 10:00:02.000000  1 solver.cpp:2] Iteration 1, lr = 0.01\n"
        "I1204 10:00:02.000000  1 solver.cpp:4]     Train net output #0: loss = 0.25\n")
    with caplog.at_level(logging.WARNING, logger="pycaffe_lite"):
        train, _ = parse_log.parse_log(str(log_file))
    assert f"{log_file}:3: output loss = 0-.5 is not a number; line skipped" in caplog.text
    assert [row["loss"] for row in train] == [0.25]


def test_parse_log_lr_not_a_number_skipped_with_its_line(tmp_path, caplog):
    log_file = tmp_path / "bad.log"
    log_file.write_text(
        "I1204 10:00:00.000000  1 solver.cpp:1] Solving tiny\n"
        "I1204 10:00:01.000000  1 solver.cpp:2] Iteration 0, lr = 0.01-1\n"
        "I1204 10:00:01.000000  1 solver.cpp:4]     Train net output #0: loss = 0.5\n")
    with caplog.at_level(logging.WARNING, logger="pycaffe_lite"):
        train, _ = parse_log.parse_log(str(log_file))
    assert f"{log_file}:2: lr = 0.01-1 is not a number; skipped" in caplog.text
    assert [row["loss"] for row in train] == [0.5]


# A log whose output names change midway (a net edited between two runs appended to
# one log): rows of different columns.
CHANGING_OUTPUTS = (
    "I1204 10:00:00.000000  1 solver.cpp:1] Solving tiny\n"
    "I1204 10:00:01.000000  1 solver.cpp:2] Iteration 0, lr = 0.01\n"
    "I1204 10:00:01.000000  1 solver.cpp:4]     Train net output #0: loss = 0.5\n"
    "I1204 10:00:02.000000  1 solver.cpp:2] Iteration 1, lr = 0.01\n"
    "I1204 10:00:02.000000  1 solver.cpp:4]     Train net output #0: loss2 = 0.4\n"
    "I1204 10:00:03.000000  1 solver.cpp:2] Iteration 2, lr = 0.01\n"
    "I1204 10:00:03.000000  1 solver.cpp:4]     Train net output #0: loss = 0.3\n")


def test_parse_log_rows_with_changing_columns_written(tmp_path):
    log_file = tmp_path / "changing.log"
    log_file.write_text(CHANGING_OUTPUTS)
    assert parse_log.main([str(log_file), str(tmp_path)]) == 0
    header, *rows = (tmp_path / "changing.log.train").read_text().splitlines()
    assert header == "NumIters,Seconds,LearningRate,loss,loss2"
    assert rows == ["0.0,1.0,0.01,0.5,", "1.0,2.0,0.01,,0.4", "2.0,3.0,0.01,0.3,"]


def test_plot_training_log_rows_with_changing_columns(tmp_path):
    pytest.importorskip("matplotlib")
    from pycaffe_lite.tools import plot_training_log
    log_file = tmp_path / "changing.log"
    log_file.write_text(CHANGING_OUTPUTS)
    curves = plot_training_log.plot(str(tmp_path / "out.png"), [str(log_file)],
                                    [("train", "loss2")])
    assert [(label, xs, ys) for label, xs, ys in curves] == [("train loss2", [1.0], [0.4])]


def test_array_to_datum_label_beyond_int32():
    with pytest.raises(ValueError, match=r"array_to_datum: label 1099511627776 is out of "
                                         r"range: Caffe's labels are int32") as info:
        caffe_io.array_to_datum(numpy.zeros((1, 2, 2), numpy.uint8), 2 ** 40)
    assert isinstance(info.value, CaffeError)
    assert caffe_io.array_to_datum(numpy.zeros((1, 2, 2), numpy.uint8), -7).label == -7


# --- a NUL byte in a path the CLI or a tool takes -------------------------------------

def test_binarize_nul_in_output_path(capsys, small, tmp_path):
    status, _, err = run_main(capsys, "binarize", f"--model={small}", "--weights=w",
                              "--out_model=a\0b", f"--out_weights={tmp_path / 'w'}")
    assert status == 1
    assert error_line(err) == ("--out_model: the path 'a\\x00b' holds a NUL byte (\\0); no "
                               "file name can hold one")


@pytest.mark.parametrize("method", ["labelfree", "qcnn"])
def test_compress_nul_in_out_folder(capsys, small, method):
    status, _, err = run_main(capsys, "compress", method, f"--model={small}", "--weights=w",
                              "--out=a\0b")
    assert status == 1
    assert error_line(err).startswith("--out: the path 'a\\x00b' holds a NUL byte")


@pytest.mark.parametrize("name", ["a\0b.txt", "fifo.txt"])
def test_detect_input_nul_or_fifo_refused(detector_files, tmp_path, capsys, name):
    image, flags = detector_files
    path = tmp_path / name.replace("\0", "")
    if name.startswith("fifo"):
        os.mkfifo(path)
    else:
        path = f"{tmp_path}/{name}"
    assert detect.main([str(path), str(tmp_path / "out.csv")] + flags[2:]) == 1
    line = error_line(capsys.readouterr().err, prog="detect")
    assert "NUL byte" in line or "is a FIFO (named pipe), not a window or image list file" in line, line
