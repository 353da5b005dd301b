"""The HWGQ example folders: ``examples/imagenet/{alex,res18,vgg,google,dark19}-hwgq``,
``examples/imagenet/alex-sign`` and ``examples/cifar10/vgg-hwgq``.

- The committed prototxts are exactly what ``examples/hwgq_nets.py`` writes.
- Each net, deploy net and solver says what the paper's file says
  (``../shared/fixtures/hwgq``) but for where data and snapshots lie; built with
  synthetic data, the nets have the paper's layers, top shapes and parameter
  shapes, in TRAIN and TEST.
- Each net runs forward and backward at its real input size (batch 2), and
  ``caffe_lite time`` runs on each deploy and deploy_bw net.
- The tiny LMDB builders work and are idempotent; alex-hwgq trains two
  iterations from the repository-root layout on a tiny LMDB.
"""
import importlib.util
import math

import numpy
import pytest

from conftest import FIXTURES, REPO
from pycaffe_lite import cli
from pycaffe_lite.io import files
from pycaffe_lite.io.caffe_io import decode_datum_to_cvmat
from pycaffe_lite.io.db import open_db
from pycaffe_lite.io.synthetic import synthesize_data_layers
from pycaffe_lite.layer import TEST, TRAIN, layer_type_list
from pycaffe_lite.net import Net
from pycaffe_lite.proto import caffe_pb2

EXAMPLES = REPO / "examples"
PAPER = FIXTURES / "hwgq"
KINDS = ("train_val", "solver", "deploy", "deploy_bw")


def _module(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hwgq_nets = _module(EXAMPLES / "hwgq_nets.py")
EXAMPLE_LIST = hwgq_nets.EXAMPLE_LIST
IDS = [example.folder for example in EXAMPLE_LIST]

needs_paper = pytest.mark.skipif(not PAPER.is_dir(),
                                 reason=f"the HWGQ paper's files are not at {PAPER}")


# --- no drift ----------------------------------------------------------------------------

def test_committed_prototxts_are_what_the_generator_writes():
    generated = hwgq_nets.generate()
    differ = [rel for rel, text in generated.items()
              if not (EXAMPLES / rel).is_file() or (EXAMPLES / rel).read_text() != text]
    assert not differ, (f"{differ} differ from what examples/hwgq_nets.py writes: run "
                        "python examples/hwgq_nets.py and commit the result")
    on_disk = {str(path.relative_to(EXAMPLES)) for example in EXAMPLE_LIST
               for path in (EXAMPLES / example.folder).glob("*.prototxt")}
    assert on_disk == set(generated), "prototxts the generator does not write"


# --- the same files as the paper's -------------------------------------------------------

# Only where the data and snapshots lie may differ: ours are relative to the
# repository root and name the tiny LMDBs; the paper's are relative to its example
# folder and name ILSVRC12's and CIFAR-10's.  Layer and blob names are the paper's,
# so the paper's trained caffemodels load into our nets.
_CONV_DEFAULTS = {"pad": [0], "stride": [1], "dilation": [1]}


def _canonical(msg):
    """``msg`` as nested dicts without what equals the default, so that two files
    that say the same thing differently ("stride: 1" or nothing) compare equal."""
    out = {}
    for field, value in msg.ListFields():
        if field.message_type is not None:
            value = ([_canonical(v) for v in value] if field.is_repeated
                     else _canonical(value))
            if value == {}:
                continue
        elif field.is_repeated:
            value = list(value)
            if (msg.DESCRIPTOR.name == "ConvolutionParameter"
                    and value == _CONV_DEFAULTS.get(field.name)):
                continue
        elif value == field.default_value:
            continue
        out[field.name] = value
    return out


def _without_data_paths(layer):
    layer = caffe_pb2.LayerParameter.FromString(layer.SerializeToString())
    layer.data_param.ClearField("source")
    layer.transform_param.ClearField("mean_file")
    return layer


def _paper_pairs():
    for example in EXAMPLE_LIST:
        for kind in KINDS:
            if not PAPER.is_dir() or (PAPER / example.paper / f"{kind}.prototxt").is_file():
                yield pytest.param(example, kind, id=f"{example.folder}/{kind}")


@needs_paper
@pytest.mark.parametrize("example,kind", list(_paper_pairs()))
def test_file_says_what_the_papers_file_says(example, kind):
    ours_path = EXAMPLES / example.folder / f"{kind}.prototxt"
    paper_path = PAPER / example.paper / f"{kind}.prototxt"
    if kind == "solver":
        ours, paper = files.read_solver(str(ours_path)), files.read_solver(str(paper_path))
        assert ours.net == f"examples/{example.folder}/train_val.prototxt"
        assert ours.snapshot_prefix == f"examples/{example.folder}/{paper.snapshot_prefix}"
        # Ours start training at once (see hwgq_nets.tests); the rest is the paper's.
        assert not ours.test_initialization or not ours.test_iter
        for param in (ours, paper):
            param.ClearField("net")
            param.ClearField("snapshot_prefix")
            param.ClearField("test_initialization")
        assert _canonical(ours) == _canonical(paper)
        return
    ours, paper = files.read_net(str(ours_path)), files.read_net(str(paper_path))
    assert ours.name == paper.name
    if kind.startswith("deploy"):
        # The paper's deploy nets have the deprecated "input:" fields (batch 50), which
        # are read as an Input layer named "input"; ours have that Input layer, named
        # "data" as in BVLC's deploy files, of batch 1.
        mine, theirs = ours.layer.pop(0), paper.layer.pop(0)
        assert mine.type == theirs.type == "Input"
        assert list(mine.top) == list(theirs.top) == ["data"]
        assert ([list(shape.dim)[1:] for shape in mine.input_param.shape]
                == [list(shape.dim)[1:] for shape in theirs.input_param.shape])
    assert [layer.name for layer in ours.layer] == [layer.name for layer in paper.layer]
    for mine, theirs in zip(ours.layer, paper.layer):
        assert (_canonical(_without_data_paths(mine))
                == _canonical(_without_data_paths(theirs))), f"layer '{mine.name}'"


@pytest.mark.parametrize("example", EXAMPLE_LIST, ids=IDS)
def test_deploy_bw_is_what_caffe_lite_binarize_writes(example):
    from pycaffe_lite.tools.binarize import binarized_net_param
    folder = EXAMPLES / example.folder
    binarized, converted = binarized_net_param(files.read_net(str(folder / "deploy.prototxt")))
    assert converted
    assert binarized == files.read_net(str(folder / "deploy_bw.prototxt"))


def _zero_weights(monkeypatch):
    """Leave new weights at zero: shapes do not depend on fillers, and drawing (or
    even writing) VGG's 138M weights takes seconds.  Layer.add_param_blob calls
    pycaffe_lite.fillers.fill; the layer modules that bind ``fill`` when imported
    (DummyData's) are imported first, so that they keep the real one."""
    layer_type_list()
    monkeypatch.setattr("pycaffe_lite.fillers.fill", lambda blob, filler: None)


@pytest.fixture
def no_fillers(monkeypatch):
    _zero_weights(monkeypatch)


def _built(path, input_size, phase):
    """The net at ``path`` with synthetic data (batch 2)."""
    net_param = synthesize_data_layers(files.read_net(str(path)),
                                       sample_shape=(3, input_size, input_size), batch=2)
    for layer in net_param.layer:
        for shape in layer.input_param.shape:
            shape.dim[0] = 2
    return Net(net_param, phase=phase)


def _layout(net):
    """(name, type, top shapes, parameter shapes) of each layer; the deploy nets'
    Input layers are named apart (see above)."""
    return [(r.name if r.layer.param.type != "Input" else "", r.layer.param.type,
             [tuple(top.shape) for top in r.top_blobs],
             [tuple(blob.shape) for blob in r.layer.blobs])
            for r in net.records]


@needs_paper
@pytest.mark.parametrize("example", EXAMPLE_LIST, ids=IDS)
def test_built_nets_have_the_papers_layers_and_shapes(example, no_fillers):
    # (deploy_bw is deploy with other layer types: compared file to file above.)
    for kind, phases in (("train_val", (TRAIN, TEST)), ("deploy", (TEST,))):
        paper = PAPER / example.paper / f"{kind}.prototxt"
        if not paper.is_file():
            continue
        for phase in phases:
            ours = _layout(_built(EXAMPLES / example.folder / f"{kind}.prototxt",
                                  example.input_size, phase))
            assert ours == _layout(_built(paper, example.input_size, phase)), (kind, phase)


# --- they run ------------------------------------------------------------------------------

# Drawing VGG-Variant's 138M weights and a pass at batch 2 (10.7 GMAC an image) take
# 10-20 s here.
SLOW_VGG = pytest.mark.slow(reason="VGG-Variant: 138M weights, 10.7 GMAC an image")
RUN_IDS = [pytest.param(example, id=example.folder,
                        marks=[SLOW_VGG] if example.folder == "imagenet/vgg-hwgq" else [])
           for example in EXAMPLE_LIST]


@pytest.mark.parametrize("example", RUN_IDS)
def test_forward_backward_at_the_real_input_size(example, monkeypatch):
    size = example.input_size
    net_param = synthesize_data_layers(
        files.read_net(str(EXAMPLES / example.folder / "train_val.prototxt")),
        sample_shape=(3, size, size), batch=2)
    net = Net(net_param, phase=TRAIN)
    assert net.blobs["data"].shape == (2, 3, size, size)
    loss = net.forward_range()
    net.backward_range()
    assert math.isfinite(loss) and loss > 0
    first_conv = next(layer for layer in net.layers if layer.param.type == "Convolution")
    assert numpy.abs(first_conv.blobs[0].diff).max() > 0
    _zero_weights(monkeypatch)
    test = _built(EXAMPLES / example.folder / "train_val.prototxt", size, TEST)
    test.forward_range()
    assert test.blobs["data"].shape == (2, 3, size, size)
    assert all(numpy.isfinite(test.blobs[name].data).all() for name in test.output_names)


@pytest.mark.parametrize("kind", ["deploy", "deploy_bw"])
@pytest.mark.parametrize("example", EXAMPLE_LIST, ids=IDS)
def test_caffe_lite_time_runs_on_the_deploy_nets(example, kind, monkeypatch, capfd):
    monkeypatch.chdir(REPO)
    model = f"examples/{example.folder}/{kind}.prototxt"
    assert cli.main(["time", "--model", model, "--iterations", "1"]) == 0
    assert "Average Forward-Backward:" in capfd.readouterr().err


# --- the tiny data sets ------------------------------------------------------------------

tiny_imagenet = _module(EXAMPLES / "imagenet" / "make_tiny_imagenet.py")
tiny_cifar = _module(EXAMPLES / "cifar10" / "make_tiny_cifar.py")


def _datums(path):
    reader = open_db(path)
    try:
        return [caffe_pb2.Datum.FromString(value) for _, value in reader.records()]
    finally:
        reader.close()


def test_tiny_imagenet_lmdbs(tmp_path):
    train, val = tiny_imagenet.build(tmp_path, train=12, val=6, classes=4)
    assert (train, val) == (tmp_path / "tiny_train_lmdb", tmp_path / "tiny_val_lmdb")
    for path, count in ((train, 12), (val, 6)):
        datums = _datums(path)
        assert len(datums) == count
        assert {d.label for d in datums} == {0, 1, 2, 3}
        assert all(d.encoded for d in datums)
        assert decode_datum_to_cvmat(datums[0]).shape == (256, 256, 3)
    stamp = (train / "data.mdb").stat().st_mtime_ns
    assert tiny_imagenet.main(["--out", str(tmp_path), "--train", "12", "--val", "6",
                               "--classes", "4"]) == 0
    assert (train / "data.mdb").stat().st_mtime_ns == stamp, "a complete LMDB was rewritten"
    tiny_imagenet.build(tmp_path, train=8, val=6, classes=4)
    assert len(_datums(train)) == 8, "an LMDB of another size was kept"
    assert not list(tmp_path.glob(".*partial*"))


def test_tiny_cifar_lmdbs_and_means(tmp_path):
    train, train_mean, test, test_mean = tiny_cifar.build(tmp_path, train=10, test=5,
                                                          classes=5)
    for path, mean, count, size in ((train, train_mean, 10, 40), (test, test_mean, 5, 32)):
        datums = _datums(path)
        assert len(datums) == count
        assert {d.label for d in datums} == set(range(5))
        assert not any(d.encoded for d in datums)
        assert all(len(d.data) == 3 * size * size for d in datums)
        assert (datums[0].channels, datums[0].height, datums[0].width) == (3, size, size)
        assert files.read_blob(str(mean)).shape == (1, 3, size, size)
    padded = numpy.frombuffer(_datums(train)[0].data, numpy.uint8).reshape(3, 40, 40)
    assert not padded[:, :4].any() and not padded[:, :, -4:].any()   # the 4-pixel border
    assert padded[:, 4:-4, 4:-4].any()
    assert tiny_cifar.main(["--out", str(tmp_path), "--train", "10", "--test", "5",
                            "--classes", "5"]) == 0   # kept as it is


# --- training from the repository-root layout --------------------------------------------

def _tiny_layout(root, example):
    """``root`` laid out as the repository for ``example``: its tiny LMDBs (and means)
    under ``root/examples/``, and a copy of its train_val and solver with batch 2,
    two iterations, the loss shown at each and one test batch after the second."""
    data = root / "examples" / example.folder.split("/")[0]
    if example.folder.startswith("cifar10/"):
        tiny_cifar.build(data, train=8, test=4, classes=4)
    else:
        tiny_imagenet.build(data, train=8, val=4, classes=4)
    folder = root / "examples" / example.folder
    folder.mkdir()
    net = files.read_net(str(EXAMPLES / example.folder / "train_val.prototxt"))
    for layer in net.layer:
        if layer.type == "Data":
            layer.data_param.batch_size = 2
    files.write_text_proto(str(folder / "train_val.prototxt"), net)
    solver = files.read_solver(str(EXAMPLES / example.folder / "solver.prototxt"))
    solver.max_iter, solver.display, solver.test_iter[0], solver.test_interval = 2, 1, 1, 2
    files.write_text_proto(str(folder / "solver.prototxt"), solver)
    return folder


TRAINED = [pytest.param("imagenet/alex-hwgq", "alexnet", "accuracy-top1", id="alex-hwgq",
                        marks=pytest.mark.slow(reason="alex-hwgq's 61M weights: its snapshot "
                                               "alone takes 10-20 s here")),
           pytest.param("cifar10/vgg-hwgq", "vggnet", "accuracy", id="cifar10-vgg-hwgq")]


@pytest.mark.parametrize("folder,prefix,accuracy", TRAINED)
def test_trains_from_the_repository_root(folder, prefix, accuracy, tmp_path, monkeypatch,
                                         capfd):
    """``caffe_lite train --solver examples/<folder>/solver.prototxt`` run from a copy
    of the repository's layout: the net, its LMDBs (and mean files) and the snapshots
    are found and written where the paths say, relative to the current directory."""
    example = next(e for e in EXAMPLE_LIST if e.folder == folder)
    out = _tiny_layout(tmp_path, example)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--solver", f"examples/{folder}/solver.prototxt"]) == 0
    log = capfd.readouterr().err
    snapshot = f"examples/{folder}/{prefix}_iter_2"
    # test_initialization: false: training starts at once, the test comes after.
    assert "Iteration 0, Testing net (#0)" not in log
    for line in ("Iteration 0, loss = ", "Iteration 1, loss = ",
                 "Iteration 2, Testing net (#0)", f"Test net output #0: {accuracy} = ",
                 f"Snapshotting to binary proto file {snapshot}.caffemodel",
                 "Optimization Done."):
        assert line in log
    snapshots = [out / f"{prefix}_iter_2.caffemodel", out / f"{prefix}_iter_2.solverstate"]
    assert all(path.is_file() for path in snapshots)
    for path in snapshots:   # pytest keeps the last runs' tmp_path; alexnet's are 240 MB
        path.unlink()
