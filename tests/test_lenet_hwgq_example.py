"""examples/mnist/lenet-hwgq: the nets build, mirror the HWGQ paper's LeNet, and
compare.py runs end to end on a tiny LMDB made from the fixtures' MNIST test set."""
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import numpy
import pytest

from pycaffe_lite import rng
from pycaffe_lite.io import files
from pycaffe_lite.io.synthetic import synthesize_data_layers
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.net import Net
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.tools import convert_mnist_data

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("PYCAFFE_LITE_SHARED", REPO.parent / "shared")) / "fixtures"
EXAMPLE = REPO / "examples" / "mnist" / "lenet-hwgq"
PAPER = FIXTURES / "hwgq" / "mnist" / "lenet-hwgq-3ne"
ALEX_SIGN = FIXTURES / "hwgq" / "imagenet" / "alex-sign-step-160k" / "train_val.prototxt"
MNIST = FIXTURES / "datasets" / "mnist"
TRAIN_VALS = ["train_val.prototxt", "train_val_sign.prototxt", "train_val_fp.prototxt"]
SEED = 1701


def read(path):
    return files.read_net(str(path))


def build(net_param, phase, seed=SEED):
    """The net on synthetic 1 x 28 x 28 data (the LMDBs are not in CI)."""
    rng.set_random_seed(seed)
    return Net(synthesize_data_layers(net_param, sample_shape=(1, 28, 28)), phase=phase)


def shapes(net):
    """Per layer: (name, type, top shapes, param shapes)."""
    return [(r.name, r.layer.type, [tuple(t.shape) for t in r.top_blobs],
             [tuple(b.shape) for b in r.layer.blobs])
            for r in net.records]


def without_data_sources(net_param):
    """A copy with the Data layers' sources and the net's name cleared."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    out.ClearField("name")
    for layer in out.layer:
        if layer.type == "Data":
            layer.data_param.ClearField("source")
    return out


def need_fixture(path):
    if not path.is_file():
        pytest.skip(f"fixture not found at {path} (set PYCAFFE_LITE_SHARED)")


# --- the nets build ---------------------------------------------------------------------

@pytest.mark.parametrize("phase", [TRAIN, TEST], ids=["TRAIN", "TEST"])
@pytest.mark.parametrize("prototxt", TRAIN_VALS)
def test_train_val_builds_and_runs(prototxt, phase):
    net = build(read(EXAMPLE / prototxt), phase)
    loss = net.forward_range()
    assert numpy.isfinite(loss)
    assert tuple(net.blobs["ip2"].shape) == ((64, 10) if phase == TRAIN else (100, 10))
    if phase == TRAIN:
        net.backward_range()
        assert all(numpy.isfinite(b.diff).all() for b in net.layer_dict["conv1"].blobs)
    else:
        assert "accuracy" in net.output_names


def test_data_layers_read_our_lmdbs_from_the_repository_root():
    for prototxt in TRAIN_VALS:
        sources = {caffe_pb2.Phase.Name(layer.include[0].phase): layer.data_param.source
                   for layer in read(EXAMPLE / prototxt).layer if layer.type == "Data"}
        assert sources == {"TRAIN": "examples/mnist/mnist_train_lmdb",
                           "TEST": "examples/mnist/mnist_test_lmdb"}, prototxt


# --- the HWGQ net is the paper's ----------------------------------------------------------

@pytest.mark.parametrize("phase", [TRAIN, TEST], ids=["TRAIN", "TEST"])
def test_train_val_is_the_papers_lenet_layer_by_layer(phase):
    need_fixture(PAPER / "train_val.prototxt")
    ours = build(read(EXAMPLE / "train_val.prototxt"), phase)
    paper = build(read(PAPER / "train_val.prototxt"), phase)
    assert shapes(ours) == shapes(paper)
    for name, layer in ours.layer_dict.items():
        if layer.type != "Quant":
            continue
        theirs = paper.layer_dict[name]
        assert (layer.forward_func, layer.backward_func) == ("hwgq", "relu")
        assert (layer.forward_func, layer.backward_func) == (theirs.forward_func,
                                                             theirs.backward_func)
        numpy.testing.assert_array_equal(layer.centers, theirs.centers)
        numpy.testing.assert_array_equal(layer.thrs, theirs.thrs)
        assert float(layer.clip_thr) == float(theirs.clip_thr) == pytest.approx(1.614)
    # same seed, same fillers: the same initial weights, and so the same loss
    for name, blobs in ours.params.items():
        for mine, theirs in zip(blobs, paper.params[name]):
            numpy.testing.assert_array_equal(mine.data, theirs.data)
    losses = []
    for net in (ours, paper):
        rng.set_random_seed(0)   # the same synthetic batch
        losses.append(net.forward_range())
    assert losses[0] == losses[1]


def test_train_val_prototxt_says_what_the_papers_says():
    """Every field of every layer, the Data sources aside (ours are our LMDBs)."""
    need_fixture(PAPER / "train_val.prototxt")
    ours = without_data_sources(read(EXAMPLE / "train_val.prototxt"))
    paper = without_data_sources(read(PAPER / "train_val.prototxt"))
    assert [layer.name for layer in ours.layer] == [layer.name for layer in paper.layer]
    for mine, theirs in zip(ours.layer, paper.layer):
        assert mine == theirs, f"layer {mine.name}:\n{mine}\nthe paper's:\n{theirs}"


# --- the sign variant differs only in the quantiser ----------------------------------------

def test_sign_variant_differs_only_in_the_quantiser():
    need_fixture(ALEX_SIGN)
    hwgq = without_data_sources(read(EXAMPLE / "train_val.prototxt"))
    sign = without_data_sources(read(EXAMPLE / "train_val_sign.prototxt"))
    alex_sign = {str(layer.quant_param) for layer in read(ALEX_SIGN).layer
                 if layer.type == "Quant"}
    assert len(alex_sign) == 1   # one setting, used at every activation
    assert len(hwgq.layer) == len(sign.layer)
    quantisers = 0
    for a, b in zip(hwgq.layer, sign.layer):
        if a.type == "Quant":
            quantisers += 1
            assert b.type == "Quant"
            assert str(b.quant_param) in alex_sign
            assert (b.quant_param.forward_func, b.quant_param.backward_func,
                    b.quant_param.clip_thr) == ("sign", "hard_tanh", 1.0)
            a.ClearField("quant_param")
            b.ClearField("quant_param")
        assert a == b, f"layer {a.name} differs beyond the quantiser"
    assert quantisers == 3
    net = build(read(EXAMPLE / "train_val_sign.prototxt"), TRAIN)
    net.forward_range()
    assert set(numpy.unique(net.blobs["qt1"].data)) <= {-1.0, 1.0}


# --- the full-precision reference is the same net unquantised ---------------------------

def test_fp_reference_is_the_hwgq_net_without_quantisation():
    hwgq = read(EXAMPLE / "train_val.prototxt")
    fp = read(EXAMPLE / "train_val_fp.prototxt")
    plain = {"BinaryConvolution": "Convolution", "BinaryInnerProduct": "InnerProduct",
             "Quant": "ReLU"}
    renamed = {}   # quantiser top -> ReLU top
    assert len(hwgq.layer) == len(fp.layer)
    for q, f in zip(hwgq.layer, fp.layer):
        assert f.type == plain.get(q.type, q.type), (q.name, f.name)
        assert [renamed.get(b, b) for b in q.bottom] == list(f.bottom)
        if q.type == "Quant":
            renamed[q.top[0]] = f.top[0]
            assert not f.HasField("quant_param")
            continue
        assert f.name == q.name
        assert list(f.top) == list(q.top)
        assert list(f.param) == list(q.param)
        for field in ("convolution_param", "inner_product_param", "pooling_param",
                      "batch_norm_param", "transform_param", "data_param"):
            assert getattr(f, field) == getattr(q, field), (f.name, field)
        assert not f.HasField("binary_convolution_param")
        assert not f.HasField("binary_inner_product_param")


def test_the_three_nets_start_from_the_same_weights():
    """Same param shapes, same fillers, same seed: trained 'identically' starts here."""
    nets = [build(read(EXAMPLE / p), TRAIN) for p in TRAIN_VALS]
    for net in nets[1:]:
        assert {n: [tuple(b.shape) for b in blobs] for n, blobs in net.params.items()} == {
            n: [tuple(b.shape) for b in blobs] for n, blobs in nets[0].params.items()}
        for name, blobs in net.params.items():
            for mine, theirs in zip(blobs, nets[0].params[name]):
                numpy.testing.assert_array_equal(mine.data, theirs.data)


# --- the solver ------------------------------------------------------------------------------

def test_solver_is_bvlcs_lenet_solver():
    ours = files.read_solver(str(EXAMPLE / "solver.prototxt"))
    bvlc = files.read_solver(str(REPO / "examples" / "mnist" / "lenet_solver.prototxt"))
    for field in ("base_lr", "momentum", "weight_decay", "lr_policy", "gamma", "power",
                  "max_iter", "test_iter", "test_interval", "display", "snapshot",
                  "solver_mode", "type"):
        assert getattr(ours, field) == getattr(bvlc, field), field
    assert (ours.base_lr, ours.lr_policy, ours.gamma, ours.power, ours.max_iter) == (
        pytest.approx(0.01), "inv", pytest.approx(0.0001), pytest.approx(0.75), 10000)
    assert ours.random_seed == SEED
    assert (REPO / ours.net).resolve() == (EXAMPLE / "train_val.prototxt").resolve()
    assert ours.snapshot_prefix.startswith("examples/mnist/lenet-hwgq/")


def test_solver_deviates_from_the_papers_only_in_the_lr_schedule_and_seed():
    need_fixture(PAPER / "solver.prototxt")
    ours = files.read_solver(str(EXAMPLE / "solver.prototxt"))
    paper = files.read_solver(str(PAPER / "solver.prototxt"))
    assert (paper.lr_policy, paper.stepsize) == ("step", 500)
    given = {field.name for message in (ours, paper) for field, _ in message.ListFields()}
    differing = {name for name in given if getattr(ours, name) != getattr(paper, name)}
    assert differing == {"net", "snapshot_prefix", "lr_policy", "gamma", "power",
                         "stepsize", "random_seed"}
    assert list(ours.test_iter) == list(paper.test_iter)


# --- deploy ----------------------------------------------------------------------------------

def test_deploy_scores_as_the_test_net(tmp_path):
    """deploy.prototxt with a train_val snapshot gives the TEST net's ip2."""
    test_net = build(read(EXAMPLE / "train_val.prototxt"), TEST)
    generator = numpy.random.default_rng(0)
    for name in ("bn1", "bn2", "bn3"):   # statistics as after training
        mean, var, factor = test_net.params[name]
        mean.data[...] = generator.normal(size=mean.shape)
        var.data[...] = generator.uniform(0.5, 2.0, size=var.shape)
        factor.data[...] = 1
    test_net.forward_range()
    weights = tmp_path / "lenet_hwgq.caffemodel"
    test_net.save(str(weights))
    deploy = Net(str(EXAMPLE / "deploy.prototxt"), phase=TEST, weights=str(weights))
    assert [n for n, layer in deploy.params.items()] == list(test_net.params)
    batch = deploy.blobs["data"].shape[0]
    deploy.blobs["data"].data[...] = test_net.blobs["data"].data[:batch]
    deploy.forward_range()
    numpy.testing.assert_allclose(deploy.blobs["ip2"].data, test_net.blobs["ip2"].data[:batch],
                                  rtol=1e-5, atol=1e-5)
    numpy.testing.assert_allclose(deploy.blobs["prob"].data.sum(axis=1), 1, rtol=1e-5)


# --- compare.py end to end ------------------------------------------------------------------

def write_idx_part(source, target, magic, first, count):
    """Records ``first .. first + count - 1`` of the idx file ``source`` as an idx file."""
    dims, payload = convert_mnist_data.read_idx(str(source), magic, "idx")
    size = int(numpy.prod(dims[1:]))
    header = numpy.array([magic, count, *dims[1:]], ">u4").tobytes()
    target.write_bytes(header + payload[first * size:(first + count) * size])


@pytest.fixture
def tiny_data(tmp_path):
    """mnist_train_lmdb (128 images) and mnist_test_lmdb (100) from the MNIST test set."""
    images, labels = MNIST / "t10k-images-idx3-ubyte.gz", MNIST / "t10k-labels-idx1-ubyte.gz"
    need_fixture(images)
    root = tmp_path / "data"
    root.mkdir()
    for name, first, count in (("train", 0, 128), ("test", 128, 100)):
        write_idx_part(images, root / f"{name}-images", convert_mnist_data.IMAGE_MAGIC,
                       first, count)
        write_idx_part(labels, root / f"{name}-labels", convert_mnist_data.LABEL_MAGIC,
                       first, count)
        assert convert_mnist_data.convert(str(root / f"{name}-images"),
                                          str(root / f"{name}-labels"),
                                          str(root / f"mnist_{name}_lmdb")) == count
    return root


def load_compare():
    """compare.py as a module (no bytecode cache written beside it)."""
    spec = importlib.util.spec_from_file_location("lenet_hwgq_compare", EXAMPLE / "compare.py")
    module = importlib.util.module_from_spec(spec)
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module


def test_compare_trains_the_three_nets_and_writes_the_table(tiny_data, tmp_path, capsys):
    compare = load_compare()
    out = tmp_path / "out"
    readme = tmp_path / "README.md"
    readme.write_text(f"# before\n\n{compare.BEGIN}\nold table\n{compare.END}\n\n# after\n")
    status = compare.main(["--iterations", "4", "--data-dir", str(tiny_data),
                           "--out", str(out), "--readme", str(readme), "--random-seed", "5"])
    printed = capsys.readouterr().out
    assert status == 0
    report = json.loads((out / "results.json").read_text())
    results = report["results"]
    assert [r["net"] for r in results] == ["fp", "hwgq", "sign"]
    assert report["environment"]["test_images"] == 100
    for r in results:
        assert r["iterations"] == 4
        assert 0 <= r["accuracy"] <= 1
        assert r["ms_per_iter_mean"] > 0
        assert Path(r["snapshot"]).is_file()
        # no display forward after iteration 4: the snapshot scores as the last test did
        assert r["accuracy"] == pytest.approx(r["logged_accuracy"]) == r["curve"]["4"]
        assert "] accuracy = " in (Path(r["log"]).parent / "test.log").read_text()
        text = Path(r["log"]).read_text()
        # Caffe's log format, tests at iterations 0 and 4 over the whole test set
        assert re.search(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ \S+:\d+\] Iteration 4, "
                         r"Testing net \(#0\)$", text, re.MULTILINE)
        assert "Test net output #0: accuracy = " in text
        assert (Path(r["log"]).parent / "train.log.test").is_file()
    # the three solvers differ only in their net and snapshot prefix, and read one data set
    solvers, nets = [], []
    for key in ("fp", "hwgq", "sign"):
        solver = files.read_solver(str(out / key / "solver.prototxt"))
        assert (solver.max_iter, list(solver.test_iter), solver.solver_mode,
                solver.random_seed) == (4, [1], caffe_pb2.SolverParameter.CPU, 5)
        nets.append([(layer.data_param.source, layer.data_param.batch_size)
                     for layer in read(solver.net).layer if layer.type == "Data"])
        solver.ClearField("net")
        solver.ClearField("snapshot_prefix")
        solvers.append(solver)
    assert solvers[0] == solvers[1] == solvers[2]
    assert nets[0] == nets[1] == nets[2] == [
        (str(tiny_data / "mnist_train_lmdb"), 64), (str(tiny_data / "mnist_test_lmdb"), 100)]
    # the table: printed, in results.md and between the README's markers
    table = (out / "results.md").read_text()
    assert "| LeNet-HWGQ | binary (sign x alpha) | 2-bit HWGQ |" in table
    assert table in printed
    text = readme.read_text()
    assert text.startswith("# before\n") and text.endswith("# after\n")
    assert "old table" not in text and table in text
    # --no-train tabulates the same runs again, with the environment they recorded
    assert compare.main(["--no-train", "--iterations", "99", "--data-dir", str(tiny_data),
                         "--out", str(out), "--no-readme"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["environment"] == report["environment"]
    assert [r["accuracy"] for r in again["results"]] == [r["accuracy"] for r in results]
    assert (out / "results.md").read_text() == table


def test_compare_rejects_bad_options(tmp_path, capsys):
    compare = load_compare()
    with pytest.raises(SystemExit):
        compare.main(["--nets", "fp,int8"])
    with pytest.raises(SystemExit):
        compare.main(["--iterations", "0"])
    assert compare.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "out"),
                         "--no-readme"]) == 1
    assert "create_mnist.sh" in capsys.readouterr().err
