"""Hostile files (issue 13): devices, FIFOs, NUL bytes in paths, writes that cannot
happen, stale temporaries after ``kill -9``, NaN/inf weights, BlobProtos that do not
add up, bad solver settings.  Each test is named after the finding it covers;
every error must be one of ours and name the file (and the layer, blob or line)."""
import errno
import logging
import os
import re
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import numpy
import pytest
from google.protobuf import text_format

import pycaffe_lite as caffe
from pycaffe_lite import memory
from pycaffe_lite.errors import CaffeError, ParseError, WeightsError
from pycaffe_lite.io import files, hdf5_weights
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.solvers import SolverParamError, get_solver

import test_train_cli
from test_train_cli import messages, write_case

lmdbs = test_train_cli.lmdbs     # the fixture: 64 MNIST images per phase in LMDBs

NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(NET)
    return path


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --- only regular files are read ---------------------------------------------------

READERS = {
    "read_weights": lambda tiny, p: files.read_weights(p),
    "copy_from": lambda tiny, p: caffe.Net(str(tiny), caffe.TEST).copy_from(p),
    "read_net": lambda tiny, p: files.read_net(p),
    "read_solver": lambda tiny, p: files.read_solver(p),
    "mean_file": lambda tiny, p: files.read_blob(p, "mean file"),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_dev_zero_is_refused_by_name_not_read_until_memory_runs_out(reader, tiny):
    with pytest.raises(ParseError, match=r"^/dev/zero: is a character device, not a \w"):
        READERS[reader](tiny, "/dev/zero")


def test_dev_null_as_model_is_refused_not_benchmarked_as_an_empty_net():
    with pytest.raises(ParseError, match="^/dev/null: is a character device, not a net file"):
        caffe.Net("/dev/null", caffe.TEST)


def _in_thread(call, seconds=10):
    """``call()``'s exception (None when it returned), failing if it blocks."""
    outcome = []

    def run():
        try:
            call()
            outcome.append(None)
        except Exception as e:      # noqa: BLE001 (the test looks at it)
            outcome.append(e)
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"blocked for {seconds} s"
    return outcome[0]


def test_fifo_is_refused_without_blocking(tmp_path, tiny):
    fifo = tmp_path / "weights.caffemodel"
    os.mkfifo(fifo)
    net = caffe.Net(str(tiny), caffe.TEST)
    for call in (lambda: net.copy_from(str(fifo)), lambda: files.read_net(str(fifo)),
                 lambda: files.read_solver(str(fifo))):
        error = _in_thread(call)
        assert isinstance(error, ParseError), error
        assert str(error).startswith(f"{fifo}: is a FIFO (named pipe), not a ")


def test_directory_and_socket_are_refused_by_name(tmp_path, monkeypatch):
    with pytest.raises(ParseError, match=f"^{tmp_path}: is a directory, not a net file$"):
        files.read_net(str(tmp_path))
    monkeypatch.chdir(tmp_path)         # a relative name: AF_UNIX paths are short
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("s.sock")
        with pytest.raises(ParseError, match="^s.sock: is a socket, not a caffemodel file"):
            files.read_weights("s.sock")


def test_file_larger_than_the_memory_limit_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.caffemodel"
    path.write_bytes(b"\0" * 4096)
    memory.set_memory_limit(1000)
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    try:
        with pytest.raises(ParseError, match=r"big.caffemodel: the caffemodel file has 4096 "
                                             r"bytes, more than the memory limit of 1000 bytes"):
            files.read_weights(str(path))
    finally:
        memory.set_memory_limit(None)
    assert not [a for a in opened if a[0] == str(path)]


@pytest.mark.parametrize("text", ["", "# only a comment\n", 'name: "nothing"\n'])
def test_empty_net_is_an_error_naming_the_file(tmp_path, text):
    path = tmp_path / "empty.prototxt"
    path.write_text(text)
    with pytest.raises(ParseError, match=f"^{path}: an empty net: no layers"):
        caffe.Net(str(path), caffe.TEST)


def test_caffemodel_without_layers_is_an_error_naming_the_file(tmp_path, tiny):
    path = tmp_path / "nothing.caffemodel"
    path.write_bytes(caffe_pb2.NetParameter(name="nothing").SerializeToString())
    with pytest.raises(WeightsError, match=f"^{path}: a caffemodel without layers"):
        caffe.Net(str(tiny), caffe.TEST).copy_from(str(path))


# --- NUL bytes in paths -----------------------------------------------------------

DATA_LAYERS = {
    "image_data_param.source": 'layer {{ name: "images" type: "ImageData" top: "data" '
                               'top: "label" image_data_param {{ source: "{}" batch_size: 1 '
                               '}} }}',
    "hdf5_data_param.source": 'layer {{ name: "rows" type: "HDF5Data" top: "data" '
                              'hdf5_data_param {{ source: "{}" batch_size: 1 }} }}',
    "data_param.source": 'layer {{ name: "lmdb" type: "Data" top: "data" data_param {{ '
                         'source: "{}" batch_size: 1 backend: LMDB }} }}',
    "transform_param.mean_file": 'layer {{ name: "lmdb" type: "Data" top: "data" '
                                 'transform_param {{ mean_file: "{}" }} data_param {{ '
                                 'source: "db" batch_size: 1 backend: LMDB }} }}',
    "hdf5_output_param.file_name": 'layer {{ name: "out" type: "HDF5Output" bottom: "a" '
                                   'bottom: "b" hdf5_output_param {{ file_name: "{}" }} }}',
}


@pytest.mark.parametrize("field", sorted(DATA_LAYERS))
def test_nul_byte_in_a_path_field_names_file_layer_and_field(tmp_path, field):
    path = tmp_path / "net.prototxt"
    path.write_text(DATA_LAYERS[field].format(r"list\000.txt"))
    with pytest.raises(ParseError) as e:
        caffe.Net(str(path), caffe.TRAIN)
    layer = re.search(r'name: "(\w+)"', DATA_LAYERS[field]).group(1)
    assert str(e.value).startswith(f"{path}: layer '{layer}': {field}: the path "
                                   "'list\\x00.txt' holds a NUL byte"), e.value


@pytest.mark.parametrize("field", sorted(DATA_LAYERS))
def test_nul_byte_in_a_path_field_of_a_netparameter_given_to_the_api(field):
    param = text_format.Parse(DATA_LAYERS[field].format(r"list\000.txt"),
                              caffe_pb2.NetParameter())
    with pytest.raises(ParseError, match=f"^<NetParameter>: layer '\\w+': {field}: the path"):
        caffe.Net(param, caffe.TRAIN)


def test_nul_byte_in_net_weights_and_mean_paths_given_to_the_api(tiny):
    for call, what in [(lambda: caffe.Net("net\0.prototxt", caffe.TEST), "net file"),
                       (lambda: caffe.Net(str(tiny), caffe.TEST).copy_from("w\0.caffemodel"),
                        "caffemodel file"),
                       (lambda: files.read_blob("mean\0.binaryproto", "mean file"),
                        "mean file file"),
                       (lambda: files.read_solver("s\0.prototxt"), "solver file")]:
        with pytest.raises(ParseError, match=f"^{what}: the path '.*' holds a NUL byte"):
            call()


@pytest.mark.parametrize("field", ["snapshot_prefix", "net"])
def test_nul_byte_in_a_solver_path_names_the_solver_and_field(tmp_path, tiny, field):
    solver = tmp_path / "solver.prototxt"
    values = {"net": str(tiny), "snapshot_prefix": "snap"}
    values[field] = r"x\000y"
    solver.write_text("".join(f'{k}: "{v}"\n' for k, v in values.items())
                      + 'base_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\n')
    with pytest.raises(ParseError, match=f"^{solver}: {field}: the path 'x\\\\x00y' holds"):
        get_solver(str(solver))
    param = caffe_pb2.SolverParameter(**{field: "x\0y"})
    with pytest.raises(ParseError, match=f"^SolverParameter: {field}: the path"):
        get_solver(param)


# --- writes into a missing or read-only folder ------------------------------------

def test_save_into_a_missing_folder_names_the_file_not_the_temporary(tmp_path, tiny):
    net = caffe.Net(str(tiny), caffe.TEST)
    target = tmp_path / "nowhere" / "x.caffemodel"
    with pytest.raises(files.WriteError) as e:
        net.save(str(target))
    assert str(e.value) == (f"{target}: cannot write the file: the folder "
                            f"{tmp_path / 'nowhere'} does not exist")
    assert ".tmp_" not in str(e.value) and e.value.__cause__ is None


@pytest.mark.parametrize("error, reason", [
    (PermissionError(errno.EACCES, "Permission denied"), "no permission to write in the folder"),
    (OSError(errno.EROFS, "Read-only file system"), "is on a read-only file system"),
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
])
def test_write_into_a_read_only_folder_names_the_file_and_the_reason(
        tmp_path, monkeypatch, error, reason):
    target = tmp_path / "x.prototxt"

    def refuse(prefix, dir):
        error.filename = os.path.join(dir, prefix + "abcdefgh")
        raise error
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(files.WriteError, match=f"^{target}: cannot write the file: .*{reason}"):
        files.write_text_proto(str(target), caffe_pb2.NetParameter(name="x"))


def test_save_onto_a_directory_names_it_and_leaves_no_temporary(tmp_path, tiny):
    target = tmp_path / "x.caffemodel"
    target.mkdir()
    with pytest.raises(files.WriteError, match=f"^{target}: cannot write the file: it is a "
                                               "directory$"):
        caffe.Net(str(tiny), caffe.TEST).save(str(target))
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp_")]


def test_disk_full_while_writing_leaves_nothing_and_names_the_file(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(files.WriteError, match=f"^{target}: cannot write the file: No space"):
        with files.atomic_output(str(target)):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert os.listdir(tmp_path) == []


def test_upgrade_tool_into_a_missing_folder_exits_1_without_a_traceback(tmp_path, tiny):
    target = tmp_path / "nowhere" / "up.prototxt"
    run = subprocess.run([sys.executable, "-m", "pycaffe_lite.tools.upgrade_net_proto_text",
                          str(tiny), str(target)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and ".tmp_" not in run.stderr
    assert f"{target}: cannot write the file: the folder " in run.stderr


# --- stale temporaries -------------------------------------------------------------

def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_the_prefix_are_removed_and_live_ones_kept(tmp_path, caplog):
    """Two trainings may share a folder: only a gone writer's temporaries go."""
    caplog.set_level(logging.INFO, logger="pycaffe_lite")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead, host, me = _dead_pid(), files._HOST, os.getpid()
        names = {
            f".tmp_{dead}@{host}_snap_iter_8.caffemodel.abc_1234": False,  # killed writer's
            f".tmp_{me}@{host}_snap_iter_4.solverstate.zzzzzzzz": False,   # ours, not open
            f".tmp_{live.pid}@{host}_snap_iter_12.caffemodel.abcdefgh": True,  # a live writer's
            f".tmp_{dead}@{host}_other_iter_8.caffemodel.abcdefgh": True,  # another prefix's
            f".tmp_{dead}@{host}_snapshot_iter_8.caffemodel.abcdefgh": True,  # not 'snap_iter_'
            f".tmp_{dead}@elsewhere_snap_iter_8.caffemodel.abcdefgh": True,   # written just now
            f".tmp_{dead}@elsewhere_snap_iter_4.caffemodel.abcdefgh": False,  # old, on another host
            ".tmp_abcdefgh": True,                                         # not one of ours
            "snap_iter_4.caffemodel": True,
        }
        for name in names:
            (tmp_path / name).write_bytes(b"partial")
        old = time.time() - 3600
        os.utime(tmp_path / f".tmp_{dead}@elsewhere_snap_iter_4.caffemodel.abcdefgh", (old, old))
        removed = files.remove_stale_temporaries(str(tmp_path / "snap"))
    finally:
        live.kill()
        live.wait()
    assert sorted(removed) == sorted(str(tmp_path / n) for n, keep in names.items() if not keep)
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, keep in names.items() if keep)
    logged = [r.getMessage() for r in caplog.records]
    assert (f"Removed the stale temporary file {tmp_path}/.tmp_{dead}@{host}_snap_iter_8."
            f"caffemodel.abc_1234 (left by process {dead}, which no longer writes it)") in logged
    assert any(m.startswith(f"Removed the stale temporary file {tmp_path}/.tmp_{dead}@elsewhere_"
                            f"snap_iter_4.caffemodel.abcdefgh (left by process {dead} on "
                            "elsewhere, unchanged since ") for m in logged), logged


def test_temporary_names_carry_the_writer_pid_host_and_target(tmp_path):
    target = tmp_path / "snap_iter_4.caffemodel"
    with files.atomic_output(str(target)) as f:
        (name,) = os.listdir(tmp_path)
        assert re.fullmatch(rf"\.tmp_{os.getpid()}@{re.escape(files._HOST)}_snap_iter_4"
                            r"\.caffemodel\.[a-z0-9_]{8}", name)
        assert files.remove_stale_temporaries(str(tmp_path / "snap")) == []  # being written
        f.write(b"x")
    assert os.listdir(tmp_path) == ["snap_iter_4.caffemodel"]


STALL_AT_ITER_8 = """
import contextlib, sys, time
from pycaffe_lite import cli
from pycaffe_lite.io import files
real = files.atomic_output

@contextlib.contextmanager
def stalled(path):
    with real(path) as f:
        yield f
        if path.endswith("_iter_8.caffemodel"):   # written, not yet renamed: stall there
            f.flush()
            print("STALLED", flush=True)
            time.sleep(600)

files.atomic_output = stalled
sys.exit(cli.main(sys.argv[1:]))
"""


def test_kill_9_during_a_snapshot_keeps_the_previous_one_and_the_next_run_cleans_up(
        lmdbs, tmp_path, capsys):
    """kill -9 in the middle of snapshot 2: snapshot 1 is byte-identical, nothing is
    under snapshot 2's names, and the resumed run removes the temporary (logged)."""
    solver, _ = write_case(tmp_path, lmdbs, max_iter=12, snapshot=4, test_interval=100)
    with open(tmp_path / "train.log", "w") as log_file:
        process = subprocess.Popen([sys.executable, "-c", STALL_AT_ITER_8, "train",
                                    f"--solver={solver}"], stdout=subprocess.PIPE,
                                   stderr=log_file, text=True, cwd=tmp_path)
        watchdog = threading.Timer(120, process.kill)   # readline() must not block forever
        watchdog.start()
        try:
            line = ""
            for line in process.stdout:     # until the stall (or the end: a failure)
                if line == "STALLED\n":
                    break
            before = {n: (tmp_path / n).read_bytes()
                      for n in ("tiny_iter_4.caffemodel", "tiny_iter_4.solverstate")
                      if line == "STALLED\n"}
            process.kill()                              # SIGKILL
            process.wait(30)
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
    assert line == "STALLED\n", (tmp_path / "train.log").read_text()[-3000:]
    assert process.returncode == -9
    for name, data in before.items():
        assert (tmp_path / name).read_bytes() == data
    assert not (tmp_path / "tiny_iter_8.caffemodel").exists()
    assert not (tmp_path / "tiny_iter_8.solverstate").exists()
    (stale,) = [n for n in os.listdir(tmp_path) if n.startswith(".tmp_")]
    assert stale.startswith(f".tmp_{process.pid}@{files._HOST}_tiny_iter_8.caffemodel.")
    assert (tmp_path / stale).stat().st_size > 0

    status = caffe.cli.main(["train", f"--solver={solver}",
                             f"--snapshot={tmp_path / 'tiny_iter_4.solverstate'}"])
    err = capsys.readouterr().err
    assert status == 0, err
    msgs = messages(err)
    removal = (f"Removed the stale temporary file {tmp_path / stale} (left by process "
               f"{process.pid}, which no longer writes it)")
    assert removal in msgs
    assert msgs.index(removal) < msgs.index(
        f"Snapshotting to binary proto file {tmp_path / 'tiny_iter_8.caffemodel'}")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp_")]
    for name, data in before.items():
        assert (tmp_path / name).read_bytes() == data
    files.read_weights(str(tmp_path / "tiny_iter_8.caffemodel"))
    files.read_weights(str(tmp_path / "tiny_iter_12.caffemodel"))
    # Snapshot 1 is what an uninterrupted run writes at iteration 4, byte for byte.
    reference, _ = write_case(tmp_path / "reference", lmdbs, max_iter=4, snapshot=4,
                              test_interval=100)
    assert caffe.cli.main(["train", f"--solver={reference}"]) == 0
    capsys.readouterr()
    assert (tmp_path / "reference" / "tiny_iter_4.caffemodel").read_bytes() == \
        before["tiny_iter_4.caffemodel"]


# --- NaN / inf in weights ------------------------------------------------------------

def _poisoned_caffemodel(tiny, path):
    net = caffe.Net(str(tiny), caffe.TEST)
    net.params["ip"][0].data[0, :2] = [numpy.nan, numpy.inf]
    net.params["ip"][0].data[1, 0] = -numpy.inf
    net.save(str(path))
    return net


def test_nan_and_inf_in_a_caffemodel_warn_naming_layer_blob_and_counts(tiny, tmp_path, caplog):
    path = tmp_path / "poisoned.caffemodel"
    _poisoned_caffemodel(tiny, path)
    caplog.set_level(logging.INFO, logger="pycaffe_lite")
    net = caffe.Net(str(tiny), caffe.TEST, weights=str(path))
    assert _warnings(caplog) == [
        f"{path}: layer 'ip' param blob 0 holds 1 NaN and 2 inf of its 6 values"]
    assert numpy.isnan(net.params["ip"][0].data).sum() == 1     # copied as it is


def test_nan_and_inf_in_weights_are_an_error_when_strict(tiny, tmp_path):
    path = tmp_path / "poisoned.caffemodel"
    _poisoned_caffemodel(tiny, path)
    previous = files.set_strict_weights(True)
    try:
        assert files.strict_weights()
        with pytest.raises(WeightsError, match=r"poisoned.caffemodel: layer 'ip' param blob 0 "
                                               r"holds 1 NaN and 2 inf of its 6 values"):
            caffe.Net(str(tiny), caffe.TEST, weights=str(path))
    finally:
        files.set_strict_weights(previous)
    assert not files.strict_weights()


def test_nan_in_hdf5_weights_warns_naming_layer_and_blob(tiny, tmp_path, caplog):
    pytest.importorskip("h5py")
    path = tmp_path / "poisoned.h5"
    net = caffe.Net(str(tiny), caffe.TEST)
    net.params["ip"][1].data[1] = numpy.nan
    hdf5_weights.save(net, str(path))
    caplog.set_level(logging.INFO, logger="pycaffe_lite")
    caffe.Net(str(tiny), caffe.TEST).copy_from(str(path))
    assert _warnings(caplog) == [
        f"{path}: layer 'ip' param blob 1 holds 1 NaN and 0 inf of its 2 values"]


def test_finite_weights_load_without_a_word(tiny, tmp_path, caplog):
    path = tmp_path / "fine.caffemodel"
    caffe.Net(str(tiny), caffe.TEST).save(str(path))
    caplog.set_level(logging.INFO, logger="pycaffe_lite")
    caffe.Net(str(tiny), caffe.TEST, weights=str(path))
    assert _warnings(caplog) == []


# --- BlobProto errors name the file, layer and blob ------------------------------------

def test_blobproto_count_mismatch_in_a_caffemodel_names_file_layer_and_blob(tiny, tmp_path):
    net = caffe.Net(str(tiny), caffe.TEST)
    param = net.to_proto()
    (ip,) = [lp for lp in param.layer if lp.name == "ip"]
    del ip.blobs[1].data[1:]
    path = tmp_path / "short.caffemodel"
    files.write_binary_proto(str(path), param)
    with pytest.raises(WeightsError, match=re.escape(
            f"{path}: layer 'ip' param blob 1: BlobProto declares shape (2,) (2 values) but "
            "holds 1")):
        net.copy_from(str(path))


def test_blobproto_count_mismatch_in_a_mean_file_names_the_file(tmp_path):
    path = tmp_path / "mean.binaryproto"
    proto = caffe_pb2.BlobProto(num=1, channels=1, height=28, width=28)
    proto.data.extend([0.5] * 9)
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(WeightsError, match=re.escape(
            f"{path}: BlobProto declares shape (1, 1, 28, 28) (784 values) but holds 9")):
        files.read_blob(str(path), "mean file")


def test_blobproto_value_counts_do_not_overflow_to_negative_numbers(tmp_path):
    proto = caffe_pb2.BlobProto()
    proto.shape.dim.extend([2 ** 40, 2 ** 40, 2 ** 40])
    proto.data.extend([1.0, 2.0])
    with pytest.raises(WeightsError, match=re.escape(f"({2 ** 120} values) but holds 2")):
        files.blob_proto_to_array(proto)
    proto.shape.dim.append(-1)
    with pytest.raises(WeightsError, match="with a negative dimension"):
        files.blob_proto_to_array(proto)


def test_solverstate_history_mismatch_names_the_state_file_and_blob(tmp_path):
    state = caffe_pb2.SolverState()
    history = state.history.add()
    history.shape.dim.extend([3])
    history.data.extend([1.0])
    with pytest.raises(WeightsError, match=re.escape(
            "s.solverstate: history blob 0: BlobProto declares shape (3,) (3 values) but "
            "holds 1")):
        files.blob_proto_to_array(history, where="s.solverstate: history blob 0")


# --- solver errors name the solver file and line ---------------------------------------

SOLVER = """net: "{net}"
base_lr: 0.01
lr_policy: "fixed"
max_iter: 1
"""


@pytest.mark.parametrize("change, needle", [
    (("max_iter: 1", "max_iter: -1"), "solver.prototxt:4: max_iter must not be negative, got -1"),
    (("base_lr", "display: -2\nbase_lr"), "solver.prototxt:2: display must not be negative"),
    (("max_iter: 1", "max_iter: 1\niter_size: 0"), "solver.prototxt:5: iter_size must be at "
                                                   "least 1, got 0"),
    (('"fixed"', '"sideways"'), "solver.prototxt:3: unknown learning rate policy 'sideways'"),
    (('"fixed"', '"step"'), "solver.prototxt: lr_policy 'step' needs stepsize > 0, got 0"),
    (("max_iter: 1", 'max_iter: 1\nregularization_type: "L3"'),
     "solver.prototxt:5: Unknown regularization type: 'L3'"),
    (("max_iter: 1", 'max_iter: 1\ntype: "AdaGrad"\nmomentum: 0.9'),
     "solver.prototxt:6: Momentum cannot be used with AdaGrad"),
    (("max_iter: 1", "max_iter: 1\ntest_iter: 1"),
     "solver.prototxt:5: 1 test net(s) need test_interval > 0, got 0"),
])
def test_solver_parameter_errors_name_the_solver_file_and_line(tmp_path, tiny, change, needle):
    solver = tmp_path / "solver.prototxt"
    solver.write_text(SOLVER.format(net=tiny).replace(*change))
    with pytest.raises(SolverParamError) as e:
        get_solver(str(solver))
    assert str(e.value).startswith(f"{tmp_path}/{needle}"), e.value


def test_empty_net_field_in_a_solver_names_the_solver_not_an_empty_file(tmp_path, tiny):
    solver = tmp_path / "solver.prototxt"
    solver.write_text(SOLVER.format(net=""))
    with pytest.raises(SolverParamError, match=re.escape(
            f"{solver}:1: 'net' is empty: give the path of a net prototxt")):
        get_solver(str(solver))


def test_unknown_solver_type_names_the_solver_file_and_line(tmp_path, tiny):
    solver = tmp_path / "solver.prototxt"
    solver.write_text(SOLVER.format(net=tiny) + 'type: "Sideways"\n')
    with pytest.raises(SolverParamError, match=re.escape(
            f"{solver}:5: unknown solver type 'Sideways'")):
        get_solver(str(solver))


def test_net_field_naming_a_directory_names_the_solver_and_field(tmp_path):
    solver = tmp_path / "solver.prototxt"
    solver.write_text(SOLVER.format(net=tmp_path))
    with pytest.raises(ParseError, match=re.escape(
            f"{tmp_path}: is a directory, not a net file (named by 'net' in {solver}:1)")):
        get_solver(str(solver))


def test_snapshot_into_a_vanished_folder_names_the_file_and_the_solver(tmp_path, tiny):
    folder = tmp_path / "snaps"
    folder.mkdir()
    solver = tmp_path / "solver.prototxt"
    solver.write_text(SOLVER.format(net=tiny) + f'snapshot_prefix: "{folder}/tiny"\n')
    trainer = get_solver(str(solver))
    folder.rmdir()
    with pytest.raises(files.WriteError, match=re.escape(
            f"{folder}/tiny_iter_0.caffemodel: cannot write the file: the folder {folder} "
            f"does not exist (snapshot_prefix of {solver}:5)")):
        trainer.snapshot()


def test_solver_errors_through_the_cli_exit_1_naming_the_solver(tmp_path, tiny, capsys):
    solver = tmp_path / "solver.prototxt"
    solver.write_text(SOLVER.format(net=tiny).replace("max_iter: 1", "max_iter: -1"))
    assert caffe.cli.main(["train", f"--solver={solver}"]) == 1
    err = capsys.readouterr().err
    assert f"{solver}:4: max_iter must not be negative, got -1" in err
    assert "Traceback" not in err


def test_solver_parameter_from_the_api_keeps_its_plain_message(tiny):
    param = caffe_pb2.SolverParameter(net=str(tiny), base_lr=0.1, lr_policy="fixed",
                                      max_iter=-1)
    with pytest.raises(CaffeError, match="^max_iter must not be negative, got -1$"):
        get_solver(param)


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_an_output_path_naming_a_device_is_refused_and_the_device_kept(device):
    # the atomic rename would replace the device node with a file (as root it can)
    before = os.stat(device)
    with pytest.raises(files.WriteError, match=f"^{device}: cannot write the file: it is a "
                                               "character device$"):
        with files.atomic_output(device) as f:
            f.write(b"x")
    after = os.stat(device)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert not [n for n in os.listdir("/dev") if n.startswith(".tmp_")]


def test_an_output_path_naming_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(files.WriteError, match="it is a FIFO"):
        with files.atomic_output(str(fifo)):
            pass
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_hdf5_data_list_naming_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "list.txt"
    os.mkfifo(fifo)
    net = tmp_path / "net.prototxt"
    net.write_text(f'layer {{ name: "h5" type: "HDF5Data" top: "data" hdf5_data_param {{ '
                   f'source: "{fifo}" batch_size: 2 }} }}')
    with pytest.raises(CaffeError, match=r"layer 'h5'.*list.txt: is a FIFO"):
        caffe.Net(str(net), caffe.TEST)
