"""``caffe_lite import qcnn``: Q-CNN's AlexNet files as a Q net (tools/import_qcnn).

Three sets of files: Q-CNN's own (the fixture; fc6's assignments are absent), the
fixture completed with random fc6 assignments (so that fc7 and fc8 import), and a
fully synthetic set of AlexNet's shapes at Q-CNN's settings written here (needs no
test material).  Each imported layer's lookup-table forward is checked against
the dense forward of the weights it stands for (its twin from tools/qdense).
"""
import os

import numpy
import pytest

from pycaffe_lite import cli
from pycaffe_lite.io import files
from pycaffe_lite.io.qcnn import QcnnFileError, read_bin, read_cbn, write_cbn
from pycaffe_lite.layer import TEST
from pycaffe_lite.net import Net
from pycaffe_lite.tools.import_qcnn import (import_qcnn, load_mean, qcnn_image, qcnn_resize,
                                            read_bmp)
from pycaffe_lite.tools.qdense import dense_net

from conftest import FIXTURES

QCNN = FIXTURES / "qcnn"
BIN = QCNN / "AlexNet" / "Bin.Files"
MEAN = QCNN / "AlexNet" / "imagenet_mean.single.bin"
BMPS = sorted((QCNN / "Bmp.Files").glob("*.BMP"))
PREFIX = "bvlc_alexnet_aCaF"
MISSING = f"{PREFIX}.asmtLst.16.cbn"

# Q-CNN's AlexNet at its settings (CaffePara.cc and the fixture's files), written
# down here, apart from the importer: file number -> (layer, codebooks [S, K, D],
# assignments).  The numbers are the layers' 1-based positions in Q-CNN's list.
ALEXNET_FILES = {
    1: ("conv1", (1, 128, 8), (96, 11, 11, 1)),
    5: ("conv2", (6, 128, 8), (256, 5, 5, 6)),
    9: ("conv3", (32, 128, 8), (384, 3, 3, 32)),
    11: ("conv4", (24, 128, 8), (384, 3, 3, 24)),
    13: ("conv5", (24, 128, 8), (256, 3, 3, 24)),
    16: ("fc6", (2304, 32, 4), (4096, 2304)),
    19: ("fc7", (1024, 32, 4), (4096, 1024)),
    22: ("fc8", (4096, 16, 1), (1000, 4096)),
}
LAYER_NUMBER = {name: number for number, (name, _, _) in ALEXNET_FILES.items()}
# BVLC AlexNet's deploy net, layer for layer.
BVLC_ALEXNET = [
    ("data", "Input"), ("conv1", "QConvolution"), ("relu1", "ReLU"), ("norm1", "LRN"),
    ("pool1", "Pooling"), ("conv2", "QConvolution"), ("relu2", "ReLU"), ("norm2", "LRN"),
    ("pool2", "Pooling"), ("conv3", "QConvolution"), ("relu3", "ReLU"),
    ("conv4", "QConvolution"), ("relu4", "ReLU"), ("conv5", "QConvolution"),
    ("relu5", "ReLU"), ("pool5", "Pooling"), ("fc6", "QInnerProduct"), ("relu6", "ReLU"),
    ("drop6", "Dropout"), ("fc7", "QInnerProduct"), ("relu7", "ReLU"), ("drop7", "Dropout"),
    ("fc8", "QInnerProduct"), ("prob", "Softmax"),
]
# Computed by Q-CNN's own code (CAS-CLab/quantized-cnn @ d6e5084: BmpImgIO and
# CaffeEva, built without BLAS by g++ -O2) on its files, per BMP 01 .. 10: the
# input's sum and its centre pixel (B, G, R), then pool5's sum, its argmax (flat,
# channel-first) and its max.
QCNN_GOLDEN = [
    (11292822.8050, [100.34601, 92.230934, 78.13004], 25391.2271, 4176, 72.11406),
    (8420943.4854, [102.317535, 82.149925, 67.8818], 34161.2717, 2365, 111.41433),
    (-2651590.4537, [21.52665, 16.566933, 23.495216], 51978.1650, 5523, 168.16386),
    (5376563.3357, [-20.105545, -12.067375, -9.34523], 46227.1269, 8270, 140.33839),
    (210849.1297, [23.843262, 26.188347, 45.63804], 40185.3792, 9166, 163.81818),
    (3186343.7590, [68.99771, 60.92605, 47.5091], 19691.4037, 1502, 79.58886),
    (-5627441.6653, [-75.964584, -93.172005, -103.78868], 40981.3278, 2723, 105.13554),
    (2680216.0709, [51.62439, -23.913918, -10.052681], 46125.8727, 3372, 124.86080),
    (1484725.3577, [-35.138847, -20.863045, 72.538765], 48441.4921, 1967, 91.03952),
    (-3179944.9673, [-73.63155, -38.17476, 4.5929947], 28922.3767, 1736, 109.84737),
]
# BVLC AlexNet's parameter count (weights and biases, groups included).
ALEXNET_PARAMS = 60_965_224
TOLERANCE = 1e-5


def need_fixture():
    if not BIN.is_dir():
        pytest.skip(f"Q-CNN's files not found at {BIN} (set PYCAFFE_LITE_SHARED)")


def file_name(kind, number):
    ext = "cbn" if kind == "asmtLst" else "bin"
    return f"{PREFIX}.{kind}.{number:02d}.{ext}"


def write_bin(path, array):
    """A Q-CNN ``.bin``: int32 dimension count, the int32 dims, the float32 values."""
    array = numpy.asarray(array, dtype="<f4")
    header = numpy.array([array.ndim, *array.shape], "<i4").tobytes()
    with open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_layer(folder, number, rng, kinds=("ctrdLst", "asmtLst", "biasVec")):
    """Random files of one layer at Q-CNN's shapes; the codebooks at He's scale so
    that activations keep their size through the net."""
    _, codebook_shape, index_shape = ALEXNET_FILES[number]
    subspaces, codewords, dims = codebook_shape
    fan_in = subspaces * dims * int(numpy.prod(index_shape[1:-1]))
    if "ctrdLst" in kinds:
        write_bin(folder / file_name("ctrdLst", number),
                  rng.normal(0, (2 / fan_in) ** 0.5, codebook_shape))
    if "asmtLst" in kinds:
        write_cbn(folder / file_name("asmtLst", number),
                  rng.integers(0, codewords, index_shape), (codewords - 1).bit_length())
    if "biasVec" in kinds:
        write_bin(folder / file_name("biasVec", number), rng.normal(0, 0.01, index_shape[0]))


def linked_copy(source, target):
    """A folder of links to ``source``'s files (the fixtures are read-only)."""
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).symlink_to(path)
    return target


def relative_error(got, want):
    return float(numpy.abs(got - want).max() / max(numpy.abs(want).max(), 1e-30))


# --- module fixtures ------------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    """Every file of Q-CNN's AlexNet, random, at Q-CNN's shapes and settings."""
    folder = tmp_path_factory.mktemp("synthetic") / "Bin.Files"
    folder.mkdir()
    rng = numpy.random.default_rng(0)
    for number in ALEXNET_FILES:
        write_layer(folder, number, rng)
    return folder


@pytest.fixture(scope="module")
def completed_dir(tmp_path_factory):
    """The fixture's files plus random fc6 assignments (the one file it lacks)."""
    need_fixture()
    folder = linked_copy(BIN, tmp_path_factory.mktemp("completed") / "Bin.Files")
    write_layer(folder, 16, numpy.random.default_rng(1), kinds=("asmtLst",))
    return folder


@pytest.fixture(scope="module")
def skip_import(tmp_path_factory):
    """The fixture as it is, with --skip_missing: (deploy, weights, skipped, out)."""
    need_fixture()
    out = tmp_path_factory.mktemp("skip_out")
    return import_qcnn(str(BIN), PREFIX, str(out), skip_missing=True) + (out,)


@pytest.fixture(scope="module")
def synthetic_import(synthetic_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_out")
    return import_qcnn(str(synthetic_dir), PREFIX, str(out)) + (out,)


@pytest.fixture(scope="module")
def completed_twins(completed_dir, tmp_path_factory):
    """The completed fixture's Q net, its dense twin, and each Q layer's real input
    from a forward pass of the first BMP through the Q net."""
    out = tmp_path_factory.mktemp("completed_out")
    deploy, _, skipped = import_qcnn(str(completed_dir), PREFIX, str(out))
    assert skipped == []
    qnet = Net(str(out / "deploy.prototxt"), phase=TEST, weights=str(out / "q.caffemodel"))
    dense_param, dense_weights = dense_net(deploy, qnet)
    dense = Net(dense_param, phase=TEST, weights=dense_weights)
    qnet.blobs["data"].data[...] = qcnn_image(BMPS[0], MEAN)
    qnet.forward_range()
    inputs = {r.name: r.bottom_blobs[0].data.copy() for r in qnet.records
              if r.layer.type in ("QConvolution", "QInnerProduct")}
    return qnet, dense, inputs, out


def run_layer(net, name, x):
    """``net``'s layer ``name`` alone on input ``x``; a copy of its output."""
    i = net.layer_names.index(name)
    record = net.records[i]
    record.bottom_blobs[0].data[...] = x
    net.forward_range(i, i)
    return record.top_blobs[0].data.copy()


# --- the fixture ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7",
                                  "fc8"])
def test_fixture_layer_lookup_equals_dense(completed_twins, name):
    """Each of Q-CNN's layers: lookup-table forward == dense forward of its weights
    (fc6: Q-CNN's codebooks and bias, random assignments, its real input)."""
    qnet, dense, inputs, _ = completed_twins
    x = inputs[name]
    if name in ("fc7", "fc8"):
        # Their real input is fc6's output, which needs the fc6 assignments that
        # the fixture lacks (here they are random): random non-negative inputs
        # of post-ReLU fc activations' scale (a few units) instead.
        rng = numpy.random.default_rng(LAYER_NUMBER[name])
        x = numpy.maximum(rng.normal(0, 3, x.shape), 0).astype(numpy.float32)
    q, d = run_layer(qnet, name, x), run_layer(dense, name, x)
    assert q.shape == d.shape
    assert numpy.abs(d).max() > 0
    assert relative_error(q, d) <= TOLERANCE, name


def test_fixture_net_through_pool5_equals_dense(completed_twins):
    """The whole Q net on a real image agrees with its dense twin at pool5 (the errors
    of five layers, LRN and pooling in between)."""
    qnet, dense, _, _ = completed_twins
    for net in (qnet, dense):
        net.blobs["data"].data[...] = qcnn_image(BMPS[0], MEAN)
        net.forward_range(0, net.layer_names.index("pool5"))
    assert relative_error(qnet.blobs["pool5"].data, dense.blobs["pool5"].data) <= 1e-4


def test_fixture_blobs_are_the_files(completed_twins, completed_dir):
    """Each layer's blobs are its files' arrays: the numbering 01 .. 22 is Q-CNN's."""
    qnet = completed_twins[0]
    for number, (name, codebook_shape, index_shape) in ALEXNET_FILES.items():
        blobs = qnet.layer_dict[name].blobs
        codebooks = read_bin(completed_dir / file_name("ctrdLst", number))
        assert codebooks.shape == codebook_shape == blobs[0].shape
        numpy.testing.assert_array_equal(blobs[0].data, codebooks)
        if name != "fc6":   # a big random file; its codebooks and bias are Q-CNN's
            numpy.testing.assert_array_equal(
                blobs[1].data, read_cbn(completed_dir / file_name("asmtLst", number)))
        assert blobs[1].shape == index_shape
        numpy.testing.assert_array_equal(
            blobs[2].data, read_bin(completed_dir / file_name("biasVec", number)))


def test_skip_missing_runs_the_bmps_through_pool5(skip_import):
    """Q-CNN's 10 BMPs, preprocessed as Q-CNN does, through the net written to disk."""
    out = skip_import[3]
    net = Net(str(out / "deploy.prototxt"), phase=TEST, weights=str(out / "q.caffemodel"))
    assert net.layer_names[-1] == "pool5"
    mean = load_mean(MEAN)
    images = numpy.concatenate([qcnn_image(path, mean) for path in BMPS])
    assert len(BMPS) == 10 and images.shape == (10, 3, 227, 227)
    net.blobs["data"].reshape(images.shape)
    net.reshape_all()
    net.blobs["data"].data[...] = images
    net.forward_range()
    features = net.blobs["pool5"].data.reshape(10, -1)
    assert net.blobs["pool5"].shape == (10, 256, 6, 6)
    assert numpy.isfinite(features).all()
    active = (features > 0).mean(axis=1)
    assert ((active > 0.05) & (active < 0.95)).all(), active
    assert (features.std(axis=1) > 0.1).all()
    # Different images, different features.
    similarity = numpy.corrcoef(features)[numpy.triu_indices(10, 1)]
    assert similarity.max() < 0.99
    # What Q-CNN's own code computes: the same input (to the bit) and pool5.
    for x, f, golden in zip(images, features.astype(numpy.float64), QCNN_GOLDEN):
        total, centre, pool_sum, pool_argmax, pool_max = golden
        assert x.astype(numpy.float64).sum() == pytest.approx(total, abs=1e-3)
        numpy.testing.assert_array_equal(x[:, 113, 113], numpy.float32(centre))
        assert f.sum() == pytest.approx(pool_sum, rel=1e-5)
        assert f.argmax() == pool_argmax
        assert f.max() == pytest.approx(pool_max, rel=1e-5)


def test_skip_missing_reports_fc6(skip_import, tmp_path, caplog):
    deploy, weights, skipped, _ = skip_import
    assert skipped[0].layer == "fc6" and MISSING in skipped[0].reason
    assert [s.layer for s in skipped] == [name for name, _ in BVLC_ALEXNET[16:]]
    assert [layer.name for layer in deploy.layer] == [name for name, _ in BVLC_ALEXNET[:16]]
    assert [layer.name for layer in weights.layer][-1] == "pool5"
    with caplog.at_level("INFO", logger="pycaffe_lite"):
        import_qcnn(str(BIN), PREFIX, str(tmp_path), skip_missing=True)
    assert f"fc6: {MISSING} is missing; the net ends at pool5" in caplog.text


def test_cli_missing_file_is_one_line(tmp_path, capsys):
    need_fixture()
    status = cli.main(["import", "qcnn", "--dir", str(BIN), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1 and MISSING in err[0] and "--skip_missing" in err[0], err
    assert not (tmp_path / "q.caffemodel").exists()


def test_cli_skip_missing_writes_the_files(tmp_path):
    need_fixture()
    status = cli.main(["import", "qcnn", "--dir", str(BIN), "--prefix", PREFIX,
                       "--out", str(tmp_path), "--skip-missing"])
    assert status == 0
    assert {"deploy.prototxt", "q.caffemodel", "mean.binaryproto"} <= set(os.listdir(tmp_path))
    numpy.testing.assert_array_equal(files.read_blob(str(tmp_path / "mean.binaryproto")),
                                     load_mean(MEAN)[None])


def test_cli_truncated_file_is_named(tmp_path, capsys):
    need_fixture()
    folder = linked_copy(BIN, tmp_path / "Bin.Files")
    name = file_name("asmtLst", 5)
    data = (BIN / name).read_bytes()
    (folder / name).unlink()
    (folder / name).write_bytes(data[:len(data) - 100])
    status = cli.main(["import", "qcnn", "--dir", str(folder), "--out", str(tmp_path / "o"),
                       "--skip_missing"])
    # (the log's warning that fc6 is left out comes first)
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert status == 1 and len(errors) == 1 and name in errors[0], errors


# --- synthetic files --------------------------------------------------------------

def replace_file(folder, name, write):
    (folder / name).unlink()
    write(folder / name)


@pytest.mark.parametrize("name, write, expected", [
    (file_name("ctrdLst", 5), lambda p: write_bin(p, numpy.zeros((5, 128, 8))),
     ["conv2's codebooks should have shape [6, 128, 8]", "48 inputs per group in subspaces of 8",
      "the file holds [5, 128, 8]"]),
    (file_name("biasVec", 9), lambda p: write_bin(p, numpy.zeros(383)),
     ["conv3's bias should have shape [384]", "the file holds [383]"]),
    (file_name("asmtLst", 19), lambda p: write_cbn(p, numpy.zeros((4096, 1000), int), 5),
     ["fc7's codeword assignments should have shape [4096, 1024]", "[num_output, subspaces]",
      "the file holds [4096, 1000]"]),
    (file_name("asmtLst", 1), lambda p: write_cbn(p, numpy.full((96, 11, 11, 1), 200), 8),
     ["conv1's codeword assignments", "200"]),
    (file_name("ctrdLst", 22), lambda p: write_bin(p, numpy.zeros((4096, 16))),
     ["codebooks must be 3-D", "[4096, 16]"]),
])
def test_missized_file_is_named(synthetic_dir, tmp_path, name, write, expected):
    folder = linked_copy(synthetic_dir, tmp_path / "Bin.Files")
    replace_file(folder, name, write)
    with pytest.raises(QcnnFileError) as info:
        import_qcnn(str(folder), PREFIX, str(tmp_path / "out"))
    message = str(info.value)
    assert name in message
    for part in expected:
        assert part in message, message
    assert not (tmp_path / "out").exists()


def test_synthetic_import_is_full_alexnet(synthetic_import):
    deploy, weights, skipped, out = synthetic_import
    assert skipped == []
    assert [(layer.name, layer.type) for layer in deploy.layer] == BVLC_ALEXNET
    assert list(deploy.layer[0].input_param.shape[0].dim) == [1, 3, 227, 227]
    net = Net(str(out / "deploy.prototxt"), phase=TEST, weights=str(out / "q.caffemodel"))
    assert net.blobs["prob"].shape == (1, 1000)
    for name in ("conv2", "fc6", "fc8"):
        q = deploy.layer[[layer.name for layer in deploy.layer].index(name)]
        param = q.q_convolution_param if q.type == "QConvolution" else q.q_inner_product_param
        codebooks = ALEXNET_FILES[LAYER_NUMBER[name]][1]
        assert (param.codebook_size, param.subspace_dim) == codebooks[1:]
    # No mean file next to synthetic files: none is written.
    assert not (out / "mean.binaryproto").exists()


def test_synthetic_net_equals_its_dense_twin(synthetic_import):
    deploy, weights, _, _ = synthetic_import
    qnet = Net(deploy, phase=TEST, weights=weights)
    dense_param, dense_weights = dense_net(deploy, qnet)
    dense = Net(dense_param, phase=TEST, weights=dense_weights)
    x = numpy.random.default_rng(2).normal(0, 50, (1, 3, 227, 227)).astype(numpy.float32)
    for net in (qnet, dense):
        net.blobs["data"].data[...] = x
        net.forward_range()
    fc8 = dense.blobs["fc8"].data
    assert numpy.abs(fc8).max() > 0.1   # a signal that got through eight layers
    assert relative_error(qnet.blobs["fc8"].data, fc8) <= 1e-4
    prob = qnet.blobs["prob"].data
    assert prob.shape == (1, 1000) and abs(prob.sum() - 1) < 1e-5
    numpy.testing.assert_allclose(prob, dense.blobs["prob"].data, rtol=1e-3, atol=1e-7)
    assert sum(b.data.size for layer in dense.layers for b in layer.blobs) == ALEXNET_PARAMS


def dense_bytes(deploy):
    """Bytes of the float32 weights and biases the Q layers of ``deploy`` stand for."""
    net = Net(deploy, phase=TEST)
    count = 0
    for layer in net.layers:
        if layer.type in ("QConvolution", "QInnerProduct"):
            count += layer.dense_weight().size + layer.blobs[2].data.size
    return 4 * count


def test_q_caffemodel_is_15x_smaller(synthetic_import, request):
    """The full AlexNet at Q-CNN's settings (the synthetic files: fc6's assignments
    2304 subspaces x 4096 outputs at 5 bits) against the float AlexNet."""
    deploy, _, _, out = synthetic_import
    q_bytes = os.path.getsize(out / "q.caffemodel")
    assert dense_bytes(deploy) == 4 * ALEXNET_PARAMS
    ratio = 4 * ALEXNET_PARAMS / q_bytes
    print(f"\nfull AlexNet: q.caffemodel {q_bytes} bytes, float {4 * ALEXNET_PARAMS} bytes: "
          f"{ratio:.1f}x smaller")
    assert ratio >= 15


def test_fixture_q_caffemodel_size(skip_import, completed_twins):
    """The fixture's layers (conv1 .. conv5), and the fixture completed with fc6's
    assignments (all but those are Q-CNN's): far smaller than their float weights."""
    for deploy, out, least in ((skip_import[0], skip_import[3], 10),
                               (completed_twins[0].param, completed_twins[3], 15)):
        q_bytes = os.path.getsize(out / "q.caffemodel")
        ratio = dense_bytes(deploy) / q_bytes
        print(f"\n{deploy.layer[-1].name}: q.caffemodel {q_bytes} bytes, float "
              f"{dense_bytes(deploy)} bytes: {ratio:.1f}x smaller")
        assert ratio >= least


# --- preprocessing ------------------------------------------------------------------

def write_image(path, rgb):
    from PIL import Image
    Image.fromarray(numpy.asarray(rgb, numpy.uint8), "RGB").save(path, format="BMP")


def test_qcnn_image_is_bgr_mean_subtracted_centre_crop(tmp_path):
    """A 256x256 image (no resampling): channel 0 is blue, the mean is subtracted
    before the crop at offset 14, the result is [1, 3, 227, 227] float32."""
    rgb = numpy.zeros((256, 256, 3), numpy.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 10                  # red 200, blue 10
    rgb[100, 50] = (1, 2, 3)
    write_image(tmp_path / "a.bmp", rgb)
    mean = numpy.arange(3 * 256 * 256, dtype=numpy.float32).reshape(3, 256, 256) / 1e4
    x = qcnn_image(tmp_path / "a.bmp", mean)
    assert x.shape == (1, 3, 227, 227) and x.dtype == numpy.float32
    numpy.testing.assert_array_equal(x[0, 0, 0, 0], 10 - mean[0, 14, 14])
    numpy.testing.assert_array_equal(x[0, 2, 0, 0], 200 - mean[2, 14, 14])
    numpy.testing.assert_array_equal(x[0, :, 100 - 14, 50 - 14], [3, 2, 1] - mean[:, 100, 50])


def test_qcnn_resize_aligns_the_corners():
    """Q-CNN's "Strict" bilinear: corners map to corners, the rest interpolates."""
    image = numpy.array([[0, 10], [20, 30]], numpy.float32)[None]
    out = qcnn_resize(image, 3, 5)
    numpy.testing.assert_allclose(out[0], [[0, 2.5, 5, 7.5, 10], [10, 12.5, 15, 17.5, 20],
                                           [20, 22.5, 25, 27.5, 30]], rtol=1e-6)
    ramp = numpy.arange(375 * 500, dtype=numpy.float32).reshape(1, 375, 500)
    big = qcnn_resize(ramp, 256, 256)
    assert big[0, 0, 0] == 0 and big[0, -1, -1] == ramp[0, -1, -1]
    assert big[0, 0, -1] == ramp[0, 0, -1] and big[0, -1, 0] == ramp[0, -1, 0]


def test_fixture_mean_and_bmp():
    need_fixture()
    mean = load_mean(MEAN)
    assert mean.shape == (3, 256, 256)
    # ImageNet's mean is about (104, 117, 123) in B, G, R: the file is BGR.
    numpy.testing.assert_allclose(mean.reshape(3, -1).mean(axis=1), [104.0, 116.7, 122.7],
                                  atol=0.5)
    image = read_bmp(BMPS[0])
    assert image.shape == (3, 375, 500) and 0 <= image.min() and image.max() <= 255
    x = qcnn_image(BMPS[0], MEAN)
    assert x.shape == (1, 3, 227, 227) and numpy.isfinite(x).all()


def test_not_a_folder(tmp_path):
    with pytest.raises(QcnnFileError, match="not a folder"):
        import_qcnn(str(tmp_path / "nope"))


def test_nothing_to_import(tmp_path):
    with pytest.raises(QcnnFileError, match="conv1"):
        import_qcnn(str(tmp_path), skip_missing=True)


def test_cli_needs_dir_and_out(capsys):
    assert cli.main(["import", "qcnn", "--out", "x"]) == 1
    assert "--dir" in capsys.readouterr().err
    assert cli.main(["import", "qcnn", "--dir", "x"]) == 1
    assert "--out" in capsys.readouterr().err


def test_prefix_selects_the_files(synthetic_dir, tmp_path):
    folder = tmp_path / "renamed"
    folder.mkdir()
    for path in synthetic_dir.iterdir():
        (folder / path.name.replace(PREFIX, "mynet")).symlink_to(path)
    _, _, skipped = import_qcnn(str(folder), "mynet")
    assert skipped == []
    with pytest.raises(QcnnFileError, match=f"{PREFIX}.ctrdLst.01.bin"):
        import_qcnn(str(folder))


def test_opencv_runs_the_dense_twin_of_qcnns_alexnet(skip_import, tmp_path):
    """The second oracle: OpenCV DNN, given the dense twin (a standard prototxt and
    caffemodel), computes on a BMP what our lookup tables compute, through pool5."""
    import cv2
    from pycaffe_lite.io.files import write_binary_proto, write_text_proto
    deploy, _, _, out = skip_import
    qnet = Net(str(out / "deploy.prototxt"), phase=TEST, weights=str(out / "q.caffemodel"))
    dense_param, dense_weights = dense_net(deploy, qnet)
    write_text_proto(str(tmp_path / "dense.prototxt"), dense_param)
    write_binary_proto(str(tmp_path / "dense.caffemodel"), dense_weights)
    x = qcnn_image(BMPS[3], MEAN)
    qnet.blobs["data"].data[...] = x
    qnet.forward_range()
    cv_net = cv2.dnn.readNetFromCaffe(str(tmp_path / "dense.prototxt"),
                                      str(tmp_path / "dense.caffemodel"))
    cv_net.setInput(x)
    got = cv_net.forward("pool5")
    want = qnet.blobs["pool5"].data
    # OpenCV's own float32 GEMMs against our tables: 1e-5 of the largest value.
    print("relative", numpy.abs(got - want).max() / numpy.abs(want).max())
    assert numpy.abs(got - want).max() <= 1e-5 * numpy.abs(want).max()
