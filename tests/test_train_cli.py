"""``caffe_lite train`` (Caffe's ``train()``), signals, snapshots, and the log tools.

A small MLP on 64 MNIST training images (batch 16: an epoch is 4 iterations,
so a snapshot every 4 iterations is epoch-aligned and resuming from it is
exact: the Data layer restarts at the first record, as Caffe's does) and 64
test images (test_iter 4 covers them exactly once per test).
"""
import gzip
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy
import pytest

from pycaffe_lite import cli
from pycaffe_lite.io import files
from pycaffe_lite.layer import TRAIN
from pycaffe_lite.net import Net
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.tools import convert_mnist_data, parse_log, plot_training_log

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYCAFFE_LITE_SHARED", REPO.parent / "shared"))
MNIST = SHARED / "fixtures" / "datasets" / "mnist"
GOLDEN_TRAIN = SHARED / "golden" / "train"

GLOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] (.*)$")
NUM = r"[-+]?[\d.]+(?:e[-+]\d+)?"

NET = """name: "TinyMNIST"
layer {{ name: "mnist" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{train}" batch_size: 16 backend: LMDB }} }}
layer {{ name: "mnist" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{test}" batch_size: 16 backend: LMDB }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param {{ num_output: 16 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include {{ phase: TEST }} }}
layer {{ name: "probe_accuracy" type: "Accuracy" bottom: "ip2" bottom: "label"
  top: "probe_accuracy" include {{ phase: TRAIN stage: "probe" }} }}
layer {{ name: "level_accuracy" type: "Accuracy" bottom: "ip2" bottom: "label"
  top: "level_accuracy" include {{ phase: TRAIN min_level: 2 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""

SOLVER = """net: "{net}"
test_iter: 4
test_interval: {test_interval}
base_lr: {base_lr}
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 1
max_iter: {max_iter}
snapshot: {snapshot}
snapshot_prefix: "{prefix}"
random_seed: 1701
solver_mode: {mode}
"""


def _idx_slice(path, first, count):
    """Records ``first .. first + count - 1`` of a gzip idx file, as idx bytes."""
    data = gzip.decompress(Path(path).read_bytes())
    dims = data[3]
    header = numpy.frombuffer(data[4:4 + 4 * dims], ">u4").copy()
    size = int(numpy.prod(header[1:]))
    header[0] = count
    start = 4 + 4 * dims + first * size
    return data[:4] + header.tobytes() + data[start:start + count * size]


@pytest.fixture(scope="module")
def lmdbs(tmp_path_factory):
    """(train, test) LMDBs of 64 MNIST images each, made by convert_mnist_data."""
    images, labels = MNIST / "t10k-images-idx3-ubyte.gz", MNIST / "t10k-labels-idx1-ubyte.gz"
    if not images.is_file():
        pytest.skip(f"MNIST test images not found at {images}")
    root = tmp_path_factory.mktemp("mnist")
    out = []
    for name, first in (("train", 0), ("test", 64)):
        (root / f"{name}-images").write_bytes(_idx_slice(images, first, 64))
        (root / f"{name}-labels").write_bytes(_idx_slice(labels, first, 64))
        db = root / f"{name}_lmdb"
        assert convert_mnist_data.convert(str(root / f"{name}-images"),
                                          str(root / f"{name}-labels"), str(db)) == 64
        out.append(db)
    return tuple(out)


def write_case(directory, lmdbs, name="solver", max_iter=8, snapshot=4, test_interval=4,
               base_lr=0.01, mode="CPU", prefix="tiny"):
    directory.mkdir(parents=True, exist_ok=True)
    net = directory / "net.prototxt"
    net.write_text(NET.format(train=lmdbs[0], test=lmdbs[1]))
    solver = directory / f"{name}.prototxt"
    solver.write_text(SOLVER.format(net=net, max_iter=max_iter, snapshot=snapshot,
                                    test_interval=test_interval, base_lr=base_lr, mode=mode,
                                    prefix=directory / prefix))
    return solver, net


def messages(err):
    out = []
    for line in err.splitlines():
        match = GLOG_LINE.match(line)
        if match:
            out.append(match.group(1))
    return out


def train(capsys, *argv):
    status = cli.main(["train", *argv])
    err = capsys.readouterr().err
    return status, err


def blobs(path):
    net = files.read_weights(str(path))
    return {layer.name: [files.blob_proto_to_array(b) for b in layer.blobs]
            for layer in net.layer if layer.blobs}


def test_train_logs_caffe_lines_and_snapshots(lmdbs, tmp_path, capsys):
    solver, _ = write_case(tmp_path, lmdbs)
    status, err = train(capsys, f"--solver={solver}")
    assert status == 0, err
    msgs = messages(err)
    assert msgs[0] == "Use CPU."
    body = msgs[msgs.index("Starting Optimization"):]
    assert body[1:3] == ["Solving TinyMNIST", "Learning Rate Policy: inv"]
    assert body[3] == "Iteration 0, Testing net (#0)"
    assert re.fullmatch(rf"    Test net output #0: accuracy = {NUM}", body[4])
    assert re.fullmatch(rf"    Test net output #1: loss = ({NUM}) \(\* 1 = \1 loss\)", body[5])
    assert re.fullmatch(rf"Iteration 0, loss = {NUM}", body[6])
    assert re.fullmatch(rf"    Train net output #0: loss = ({NUM}) \(\* 1 = \1 loss\)", body[7])
    assert body[8] == "Iteration 0, lr = 0.01"
    for i in range(8):
        assert sum(1 for m in body if m.startswith(f"Iteration {i}, loss = ")) == 1
    assert [m for m in body if "Testing net" in m] == [
        f"Iteration {i}, Testing net (#0)" for i in (0, 4, 8)]
    prefix = tmp_path / "tiny"
    assert [m for m in body if m.startswith("Snapshotting")] == [
        f"Snapshotting to binary proto file {prefix}_iter_4.caffemodel",
        f"Snapshotting solver state to binary proto file {prefix}_iter_4.solverstate",
        f"Snapshotting to binary proto file {prefix}_iter_8.caffemodel",
        f"Snapshotting solver state to binary proto file {prefix}_iter_8.solverstate"]
    assert re.fullmatch(rf"Iteration 8, loss = {NUM}", body[body.index(
        "Iteration 8, Testing net (#0)") - 1])
    assert re.fullmatch(r"Average time per iteration: [\d.e+-]+ ms \(forward, backward and "
                        r"update, over 6 iterations; tests and snapshots excluded\)", body[-2])
    assert body[-3] == "Optimization Done." and body[-1] == "Optimization Done."
    state = files.read_binary_proto(f"{prefix}_iter_8.solverstate", caffe_pb2.SolverState(),
                                    "solverstate")
    assert state.iter == 8 and state.learned_net == f"{prefix}_iter_8.caffemodel"
    assert len(state.history) == 4        # momentum for ip1, ip2 (weights and biases)
    assert set(blobs(f"{prefix}_iter_8.caffemodel")) == {"ip1", "ip2"}


def test_snapshot_resumes_exactly_and_scores_as_logged(lmdbs, tmp_path, capsys):
    straight, net = write_case(tmp_path / "straight", lmdbs)
    assert train(capsys, f"--solver={straight}")[0] == 0
    resumed, _ = write_case(tmp_path / "resumed", lmdbs)
    status, err = train(capsys, f"--solver={resumed}",
                        f"--snapshot={tmp_path / 'straight' / 'tiny_iter_4.solverstate'}")
    assert status == 0, err
    msgs = messages(err)
    assert f"Resuming from {tmp_path / 'straight' / 'tiny_iter_4.solverstate'}" in msgs
    assert not any(re.match(r"Iteration [0-3], loss", m) for m in msgs)
    assert any(re.match(r"Iteration 4, loss", m) for m in msgs)
    a = blobs(tmp_path / "straight" / "tiny_iter_8.caffemodel")
    b = blobs(tmp_path / "resumed" / "tiny_iter_8.caffemodel")
    for name in a:
        for x, y in zip(a[name], b[name]):
            numpy.testing.assert_array_equal(x, y)
    # The snapshot scores on the whole test set what the solver logged at that iteration.
    logged = msgs[msgs.index("Iteration 8, Testing net (#0)") + 1]
    status = cli.main(["test", f"--model={net}",
                       f"--weights={tmp_path / 'resumed' / 'tiny_iter_8.caffemodel'}",
                       "--iterations=4"])
    scored = messages(capsys.readouterr().err)
    assert status == 0
    assert logged == "    Test net output #0: " + next(
        m for m in scored if m.startswith("accuracy = "))


def test_weights_list_goes_into_train_and_test_nets(lmdbs, tmp_path, capsys):
    solver, net_path = write_case(tmp_path, lmdbs, max_iter=0, snapshot=0, base_lr=0)
    net = Net(files.read_net(str(net_path)), phase=TRAIN)
    for i, name in enumerate(("ip1", "ip2")):
        for blob in net.layer_dict[name].blobs:
            blob.data[...] = numpy.random.RandomState(i).uniform(-0.1, 0.1, blob.shape)
    net.save(str(tmp_path / "a.caffemodel"))
    net.close()
    only_ip2 = files.read_weights(str(tmp_path / "a.caffemodel"))
    kept = [layer for layer in only_ip2.layer if layer.name == "ip2"]
    for blob in kept[0].blobs:
        blob.data[:] = [0.25] * len(blob.data)
    del only_ip2.layer[:]
    only_ip2.layer.extend(kept)
    files.write_binary_proto(str(tmp_path / "b.caffemodel"), only_ip2)

    status, err = train(capsys, f"--solver={solver}",
                        f"--weights={tmp_path / 'a.caffemodel'},{tmp_path / 'b.caffemodel'}")
    assert status == 0, err
    msgs = messages(err)
    assert f"Finetuning from {tmp_path / 'a.caffemodel'}" in msgs
    assert f"Finetuning from {tmp_path / 'b.caffemodel'}" in msgs
    got = blobs(tmp_path / "tiny_iter_0.caffemodel")
    want = blobs(tmp_path / "a.caffemodel")
    numpy.testing.assert_array_equal(got["ip1"][0], want["ip1"][0])
    assert (got["ip2"][0] == 0.25).all() and (got["ip2"][1] == 0.25).all()
    # ip2 all 0.25: every class scores the same, so the test net (if it holds
    # these weights) gives loss ln(10) and accuracy of predicting class 0.
    test_loss = next(m for m in msgs if m.startswith("    Test net output #1: loss = "))
    assert float(test_loss.split()[6]) == pytest.approx(numpy.log(10), rel=1e-5)


def test_stage_and_level_go_into_the_train_state(lmdbs, tmp_path, capsys):
    solver, _ = write_case(tmp_path, lmdbs, max_iter=1, snapshot=0, test_interval=100)

    def train_outputs(*argv):
        status, err = train(capsys, f"--solver={solver}", *argv)
        assert status == 0, err
        return [m.split(":")[1].split("=")[0].strip() for m in messages(err)
                if m.startswith("    Train net output")]
    assert train_outputs("--stage=probe", "--level=2") == [
        "level_accuracy", "loss", "probe_accuracy"]
    assert train_outputs() == ["loss"]


@pytest.mark.parametrize("argv,needle", [
    (["--weights=a.caffemodel", "--snapshot=a.solverstate"],
     "Give a snapshot to resume training or weights to finetune but not both"),
    (["--sigint_effect=explode"], "invalid sigint_effect 'explode': use stop, snapshot or none"),
    (["--sighup_effect=later"], "invalid sighup_effect 'later'"),
])
def test_train_flag_errors(lmdbs, tmp_path, capsys, argv, needle):
    solver, _ = write_case(tmp_path, lmdbs)
    status, err = train(capsys, f"--solver={solver}", *argv)
    assert status == 1
    assert needle in err and err.count("caffe_lite: error:") == 1


def test_train_needs_a_solver(capsys):
    status, err = train(capsys)
    assert status == 1 and "Need a solver definition to train (--solver)." in err


@pytest.mark.parametrize("how", ["flag", "solver_mode"])
def test_gpu_asked_without_one_warns_once_and_trains_on_cpu(lmdbs, tmp_path, capsys,
                                                            monkeypatch, how):
    monkeypatch.setattr(cli.backend, "gpu_available", lambda: False)
    solver, _ = write_case(tmp_path, lmdbs, max_iter=1, snapshot=0, test_interval=100,
                           mode="GPU" if how == "solver_mode" else "CPU")
    status, err = train(capsys, f"--solver={solver}", *(["--gpu=0"] if how == "flag" else []))
    assert status == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("W")]
    assert len(warnings) == 1 and "no usable GPU" in warnings[0], warnings
    assert ("--gpu=0" if how == "flag" else "solver_mode: GPU") in warnings[0]
    assert "Use CPU." in messages(err)


@pytest.mark.gpu
@pytest.mark.skipif(not cli.backend.gpu_available(), reason="no CuPy with a usable CUDA "
                    "device on this machine")
def test_train_on_gpu_matches_cpu(lmdbs, tmp_path, capsys):
    losses = {}
    for device in ("cpu", "gpu"):
        solver, _ = write_case(tmp_path / device, lmdbs, snapshot=0)
        status, err = train(capsys, f"--solver={solver}",
                            *(["--gpu=0"] if device == "gpu" else []))
        assert status == 0, err
        msgs = messages(err)
        assert ("Using GPUs 0" in msgs) == (device == "gpu")
        losses[device] = [float(m.split()[-1]) for m in msgs
                          if re.match(r"Iteration \d+, loss = ", m)]
    numpy.testing.assert_allclose(losses["gpu"], losses["cpu"], rtol=1e-4)


def _read_until(stream, pattern, lines, deadline):
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return True
    return False


def test_real_sighup_snapshots_and_real_sigint_stops_with_a_resumable_snapshot(
        lmdbs, tmp_path, capsys):
    """A real caffe_lite process: SIGHUP snapshots and goes on (Caffe's default),
    SIGINT stops with a complete snapshot that --snapshot resumes and test loads."""
    solver, net = write_case(tmp_path, lmdbs, max_iter=10 ** 6, snapshot=0, test_interval=0)
    solver.write_text(solver.read_text().replace("test_iter: 4\n", ""))
    process = subprocess.Popen([sys.executable, str(REPO / "tools" / "caffe_lite"), "train",
                                f"--solver={solver}"], stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path)
    lines = []
    watchdog = threading.Timer(120, process.kill)   # readline() must not block forever
    watchdog.start()
    try:
        deadline = time.monotonic() + 60
        assert _read_until(process.stderr, r"Iteration 3, loss", lines, deadline), "".join(lines)
        process.send_signal(signal.SIGHUP)
        assert _read_until(process.stderr, r"Snapshotting solver state", lines, deadline)
        assert _read_until(process.stderr, r"Iteration \d+, lr", lines, deadline)  # goes on
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    msgs = messages("".join(lines) + rest)
    assert process.returncode == 0, "".join(lines) + rest
    snapshots = [m.rsplit(" ", 1)[1] for m in msgs if m.startswith("Snapshotting to binary")]
    states = [m.rsplit(" ", 1)[1] for m in msgs if m.startswith("Snapshotting solver state")]
    assert len(snapshots) == len(states) == 2, msgs[-10:]
    assert msgs[-1] == "Optimization Done." and "Optimization stopped early." in msgs[-3:]
    stopped_at = int(re.search(r"_iter_(\d+)\.solverstate$", states[1]).group(1))
    last = max(int(m.split()[1][:-1]) for m in msgs if re.match(r"Iteration \d+, loss", m))
    assert stopped_at == last + 1      # the iteration in progress finished, then the snapshot
    state = files.read_binary_proto(states[1], caffe_pb2.SolverState(), "solverstate")
    assert state.iter == stopped_at and Path(state.learned_net).is_file()

    # Resume it for two more iterations, in this process.
    solver.write_text(solver.read_text().replace("max_iter: 1000000",
                                                 f"max_iter: {stopped_at + 2}"))
    status, err = train(capsys, f"--solver={solver}", f"--snapshot={states[1]}")
    assert status == 0, err
    resumed = [m for m in messages(err) if re.match(r"Iteration \d+, loss", m)]
    assert resumed[0].startswith(f"Iteration {stopped_at}, loss = ")
    assert (tmp_path / f"tiny_iter_{stopped_at + 2}.solverstate").is_file()
    status = cli.main(["test", f"--model={net}", f"--weights={snapshots[1]}", "--iterations=2"])
    err = capsys.readouterr().err
    assert status == 0 and any(m.startswith("accuracy = ") for m in messages(err)), err


# --- parse_log / plot_training_log ----------------------------------------------------

def test_parse_log_reads_our_log_as_caffe_logs(lmdbs, tmp_path, capsys):
    solver, _ = write_case(tmp_path, lmdbs)
    status, err = train(capsys, f"--solver={solver}")
    assert status == 0
    log_file = tmp_path / "ours.log"
    log_file.write_text(err)
    assert parse_log.main([str(log_file), str(tmp_path), "--verbose"]) == 0
    assert capsys.readouterr().out.count("Wrote ") == 2
    train_rows = parse_log.read_csv(tmp_path / "ours.log.train")
    test_rows = parse_log.read_csv(tmp_path / "ours.log.test")
    assert list(train_rows[0]) == ["NumIters", "Seconds", "LearningRate", "loss"]
    assert list(test_rows[0]) == ["NumIters", "Seconds", "LearningRate", "accuracy", "loss"]
    assert [r["NumIters"] for r in train_rows] == list(range(8))
    assert [r["NumIters"] for r in test_rows] == [0, 4, 8]
    assert train_rows[0]["LearningRate"] == 0.01
    assert all(r["Seconds"] >= 0 for r in train_rows + test_rows)
    losses = [float(m.split()[4]) for m in messages(err) if re.match(r"Iteration [0-7], loss", m)]
    assert [r["loss"] for r in train_rows] == losses

    golden = GOLDEN_TRAIN / "lenet_bvlc_sgd_inv" / "caffe.log"
    if not golden.is_file():
        pytest.skip(f"{golden} not found")
    caffe_train, caffe_test = parse_log.parse_log(str(golden))
    assert list(caffe_train[0]) == list(train_rows[0])
    assert list(caffe_test[0]) == list(test_rows[0])
    assert [r["NumIters"] for r in caffe_train] == list(range(50))
    assert [r["NumIters"] for r in caffe_test] == [0, 25, 50]
    assert caffe_test[0]["accuracy"] == 0.203125 and caffe_test[0]["Seconds"] > 0


GOLDEN_CASES = sorted(p.name for p in GOLDEN_TRAIN.iterdir()) if GOLDEN_TRAIN.is_dir() else []


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_parse_log_on_real_caffe_logs(case):
    """Every golden Caffe log parses into the values its losses.npz records; as in
    Caffe's script, a train row carries the rate logged before it (iteration N-1)."""
    directory = GOLDEN_TRAIN / case
    log_file = directory / ("caffe_straight.log" if case.startswith("resume") else "caffe.log")
    expected = numpy.load(directory / "losses.npz")
    train_rows, test_rows = parse_log.parse_log(str(log_file))
    assert [r["NumIters"] for r in train_rows] == list(expected["iter"])
    # "Train net output" is the last forward pass's loss (with iter_size > 1, not the mean).
    losses = expected["loss_last_pass_f32" if "loss_last_pass_f32" in expected else "loss"]
    assert [r["loss"] for r in train_rows] == pytest.approx(losses, rel=1e-5)
    rates = [r["LearningRate"] for r in train_rows]
    assert rates == pytest.approx([expected["lr"][0], *expected["lr"][:-1]], rel=1e-6)
    assert [r["NumIters"] for r in test_rows] == list(expected["test_iter"])
    for name in ("accuracy", "loss"):
        assert [r[name] for r in test_rows] == pytest.approx(expected[f"test/{name}"],
                                                             rel=1e-6)
    seconds = [r["Seconds"] for r in train_rows]
    assert seconds == sorted(seconds) and 0 < seconds[0] < seconds[-1] < 600


def test_parse_log_script_on_a_caffe_log(tmp_path):
    golden = GOLDEN_TRAIN / "adadelta" / "caffe.log"
    if not golden.is_file():
        pytest.skip(f"{golden} not found")
    result = subprocess.run([sys.executable, str(REPO / "tools" / "parse_log"), str(golden),
                             str(tmp_path), "-delimiter=\\t"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "caffe.log.test").read_text().splitlines()
    assert lines[0] == "NumIters\tSeconds\tLearningRate\taccuracy\tloss"
    assert lines[1].startswith("0.0\t0.05") and lines[1].endswith("\t1.0\t0.0859375\t2.38251")
    assert len((tmp_path / "caffe.log.train").read_text().splitlines()) == 41


def test_parse_log_errors(tmp_path, capsys):
    assert parse_log.main([str(tmp_path / "none.log"), str(tmp_path)]) == 1
    assert "cannot read the log" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        parse_log.main([str(tmp_path / "none.log")])
    assert exit_info.value.code == 2


def test_plot_training_log(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    golden = GOLDEN_TRAIN / "lenet_bvlc_sgd_inv" / "caffe.log"
    if not golden.is_file():
        pytest.skip(f"{golden} not found")
    out = tmp_path / "curve.png"
    assert plot_training_log.main([str(out), str(golden)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Wrote " in capsys.readouterr().err
    curves = plot_training_log.plot(str(tmp_path / "c.png"), [str(golden)],
                                    [("train", "lr")], x="seconds")
    assert [c[0] for c in curves] == ["train learning rate"] and len(curves[0][1]) == 50
    assert plot_training_log.main(["0", str(tmp_path / "caffe0.png"), str(golden),
                                   str(GOLDEN_TRAIN / "adadelta" / "caffe.log")]) == 0
    assert "caffe.log: test accuracy, caffe.log: test accuracy" in capsys.readouterr().err
    assert plot_training_log.main(["-y=test:nothing", str(out), str(golden)]) == 1
    assert "none of the series test:nothing" in capsys.readouterr().err


def test_plot_training_log_without_matplotlib(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert plot_training_log.main([str(tmp_path / "x.png"), str(tmp_path / "x.log")]) == 1
    assert "needs matplotlib: pip install 'pycaffe_lite[plot]'" in capsys.readouterr().err
