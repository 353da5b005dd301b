"""Tests of Caffe's data tools: convert_mnist_data, convert_imageset, compute_image_mean."""
import gzip
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import lmdb
import numpy
import pytest
from google.protobuf import text_format

from pycaffe_lite.io import caffe_io, files
from pycaffe_lite.flags import parse_flags
from pycaffe_lite.log import setup_logging
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.testing.gradient_check import make_layer
from pycaffe_lite.tools import compute_image_mean, convert_imageset, convert_mnist_data

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
MNIST = SHARED / "fixtures" / "datasets" / "mnist"
GOLDEN_LMDB = SHARED / "golden" / "train" / "lenet_bvlc_sgd_inv" / "train_lmdb"


def need(path):
    if not path.exists():
        pytest.skip(f"test material not found: {path}")
    return path


def records(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return list(txn.cursor())
    finally:
        env.close()


def datum(value):
    d = caffe_pb2.Datum()
    d.ParseFromString(value)
    return d


def data_layer_batch(source, batch_size, transform, labels=False):
    """The tops of a Data layer (float32) after one forward over the LMDB ``source``."""
    tops = 'top: "data" top: "label"' if labels else 'top: "data"'
    lp = text_format.Parse(
        f'name: "d" type: "Data" {tops} transform_param {{ {transform} }} '
        f'data_param {{ source: "{source}" batch_size: {batch_size} backend: LMDB }}',
        caffe_pb2.LayerParameter())
    layer, _, top = make_layer(lp, [], dtype=numpy.float32)
    layer.run_forward([], top)
    layer.close()
    return top


# --- flags ------------------------------------------------------------------------------

def test_tool_flag_spellings():
    argv = ["-gray", "-noshuffle", "--check_size=false", "-backend=lmdb", "--resize_width",
            "5", "-resize_height", "6", "root/", "list", "db"]
    args, flags = parse_flags(argv, convert_imageset.FLAGS)
    assert args == ["root/", "list", "db"]
    assert (flags.gray, flags.shuffle, flags.check_size, flags.backend, flags.resize_width,
            flags.resize_height) == (True, False, False, "lmdb", 5, 6)
    args, flags = parse_flags(["root/", "-encode_type", "png", "list", "--encoded", "db"],
                              convert_imageset.FLAGS)
    assert args == ["root/", "list", "db"]
    assert flags.encoded is True and flags.encode_type == "png" and flags.gray is False


@pytest.mark.parametrize("argv,needle", [
    (["root/", "list"], "expected the arguments ROOTFOLDER/ LISTFILE DB_NAME, got 2"),
    (["--colour", "root/", "list", "db"], "unknown command line flag 'colour'"),
    (["root/", "list", "db", "-backend"], "flag '-backend' is missing its argument"),
    (["-gray=maybe", "root/", "list", "db"], "flag --gray: 'maybe' is not a boolean"),
    (["-resize_width=wide", "root/", "list", "db"], "flag --resize_width: 'wide' is not an integer"),
])
def test_tool_usage_errors(capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        convert_imageset.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"convert_imageset: error: {needle}" in err


def test_tool_help_lists_flags(capsys):
    assert compute_image_mean.main(["-help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:\n    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]" in out
    assert '-backend (The backend {leveldb, lmdb} containing the images) type: string ' \
           'default: "lmdb"' in out


# --- convert_mnist_data --------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_lmdb(tmp_path_factory):
    need(MNIST / "t10k-images-idx3-ubyte.gz")
    out = tmp_path_factory.mktemp("mnist") / "mnist_test_lmdb"
    rc = convert_mnist_data.main([str(MNIST / "t10k-images-idx3-ubyte.gz"),
                                  str(MNIST / "t10k-labels-idx1-ubyte.gz"), str(out),
                                  "-backend=lmdb"])
    assert rc == 0
    return out


def test_convert_mnist_data_records(mnist_lmdb):
    items = records(mnist_lmdb)
    assert len(items) == 10000
    assert [k for k, _ in items[:2]] == [b"00000000", b"00000001"] and items[-1][0] == b"00009999"
    raw = gzip.decompress((MNIST / "t10k-images-idx3-ubyte.gz").read_bytes())
    labels = gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    first = datum(items[0][1])
    assert (first.channels, first.height, first.width) == (1, 28, 28)
    assert first.label == 7 == labels[8]                       # MNIST test image 0 is a 7
    assert first.data == raw[16:16 + 784]
    assert datum(items[9999][1]).data == raw[16 + 9999 * 784:]
    assert [datum(v).label for _, v in items[:10]] == list(labels[8:18])


def test_convert_mnist_data_layout_equals_golden(mnist_lmdb):
    """Same Datum encoding as the golden LMDB made by Caffe's convert_mnist_data."""
    need(GOLDEN_LMDB)
    golden = records(GOLDEN_LMDB)[0][1]
    ours = records(mnist_lmdb)[0][1]
    g, o = datum(golden), datum(ours)
    rebuilt = caffe_pb2.Datum(channels=1, height=28, width=28, data=g.data, label=g.label)
    assert rebuilt.SerializeToString() == golden
    assert ours == caffe_pb2.Datum(channels=1, height=28, width=28, data=o.data,
                                   label=o.label).SerializeToString()


def test_convert_mnist_data_read_back_through_data_layer(mnist_lmdb):
    top = data_layer_batch(mnist_lmdb, 16, "scale: 0.00390625", labels=True)
    raw = gzip.decompress((MNIST / "t10k-images-idx3-ubyte.gz").read_bytes())
    pixels = numpy.frombuffer(raw[16:16 + 16 * 784], numpy.uint8).reshape(16, 1, 28, 28)
    numpy.testing.assert_array_equal(top[0].data, pixels.astype(numpy.float32) *
                                     numpy.float32(0.00390625))
    labels = gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    numpy.testing.assert_array_equal(top[1].data, list(labels[8:24]))


def test_convert_mnist_data_errors(tmp_path, caplog, mnist_lmdb):
    images = str(MNIST / "t10k-images-idx3-ubyte.gz")
    labels = str(MNIST / "t10k-labels-idx1-ubyte.gz")
    with caplog.at_level(logging.ERROR, logger="pycaffe_lite"):
        assert convert_mnist_data.main([images, labels, str(mnist_lmdb)]) == 1
    assert "already exists" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="pycaffe_lite"):
        assert convert_mnist_data.main([labels, images, str(tmp_path / "x")]) == 1
    assert "Incorrect image file magic" in caplog.text
    assert not (tmp_path / "x").exists()


def test_compute_image_mean_of_mnist(mnist_lmdb, tmp_path, caplog):
    out = tmp_path / "mean.binaryproto"
    with caplog.at_level(logging.INFO, logger="pycaffe_lite"):
        assert compute_image_mean.main([str(mnist_lmdb), str(out), "--backend", "lmdb"]) == 0
    raw = gzip.decompress((MNIST / "t10k-images-idx3-ubyte.gz").read_bytes())
    pixels = numpy.frombuffer(raw[16:], numpy.uint8).reshape(10000, 784)
    blob = caffe_pb2.BlobProto()
    blob.ParseFromString(out.read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 1, 28, 28)
    # float32 sums of integers below 2**24 are exact
    want = pixels.sum(axis=0).astype(numpy.float32) / numpy.float32(10000)
    numpy.testing.assert_array_equal(numpy.array(blob.data, numpy.float32), want)
    assert "Number of channels: 1" in caplog.text
    logged = caplog.text.split("mean_value channel [0]: ")[1].split()[0]
    assert float(logged) == pytest.approx(want.astype(numpy.float64).mean(), rel=1e-5)


# --- convert_imageset + compute_image_mean ----------------------------------------------------

@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    rs = numpy.random.RandomState(0)
    names = ["a.png", "sub/b.png", "c.png", "d.jpeg"]
    imgs = []
    for name in names:
        img = rs.randint(0, 256, (6, 8, 3)).astype(numpy.uint8)
        cv2.imwrite(str(root / name), img)
        imgs.append(cv2.imread(str(root / name), cv2.IMREAD_COLOR))   # jpeg is lossy
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    return root, listing, names, imgs


def test_convert_imageset_raw_keys_and_pixels(image_folder, tmp_path):
    root, listing, names, imgs = image_folder
    db = tmp_path / "db"
    assert convert_imageset.main([f"{root}/", str(listing), str(db)]) == 0
    items = records(db)
    assert [k.decode() for k, _ in items] == [f"{i:08d}_{n}" for i, n in enumerate(names)]
    for i, (_, value) in enumerate(items):
        d = datum(value)
        assert d.label == i and not d.encoded
        numpy.testing.assert_array_equal(caffe_io.datum_to_array(d), imgs[i].transpose(2, 0, 1))


def test_convert_imageset_gray_resize_encoded(image_folder, tmp_path):
    root, listing, names, imgs = image_folder
    db = tmp_path / "gray"
    assert convert_imageset.main(["-gray", "-resize_width=4", "-resize_height", "3",
                                  f"{root}/", str(listing), str(db)]) == 0
    d = datum(records(db)[0][1])
    assert (d.channels, d.height, d.width) == (1, 3, 4)
    want = cv2.resize(cv2.imread(str(root / "a.png"), cv2.IMREAD_GRAYSCALE), (4, 3))
    numpy.testing.assert_array_equal(caffe_io.datum_to_array(d)[0], want)

    enc = tmp_path / "enc"
    assert convert_imageset.main(["--encoded", f"{root}/", str(listing), str(enc)]) == 0
    items = records(enc)
    assert all(datum(v).encoded for _, v in items)
    assert datum(items[0][1]).data == (root / "a.png").read_bytes()       # file kept as is
    assert datum(items[3][1]).data == (root / "d.jpeg").read_bytes()      # jpeg == jpg

    png = tmp_path / "png"
    assert convert_imageset.main(["-encode_type=png", "-resize_width=4", "-resize_height=3",
                                  f"{root}/", str(listing), str(png)]) == 0
    d = datum(records(png)[0][1])
    assert d.encoded
    caffe_io.decode_datum_native(d)
    assert (d.channels, d.height, d.width) == (3, 3, 4)


def test_convert_imageset_skips_missing_and_shuffles(image_folder, tmp_path, caplog):
    root, listing, names, imgs = image_folder
    listing.write_text(listing.read_text() + "missing.png 9\n")
    db = tmp_path / "db"
    with caplog.at_level(logging.ERROR, logger="pycaffe_lite"):
        assert convert_imageset.main(["-shuffle", f"{root}/", str(listing), str(db)]) == 0
    assert "Could not open or find file" in caplog.text and "missing.png" in caplog.text
    keys = [k.decode() for k, _ in records(db)]
    assert len(keys) == 4 and sorted(k.split("_", 1)[1] for k in keys) == sorted(names)


def test_convert_imageset_errors(image_folder, tmp_path, caplog):
    root, listing, names, imgs = image_folder
    cv2.imwrite(str(root / "big.png"), numpy.zeros((9, 9, 3), numpy.uint8))
    listing.write_text(listing.read_text() + "big.png 4\n")
    db = tmp_path / "db"
    with caplog.at_level(logging.ERROR, logger="pycaffe_lite"):
        assert convert_imageset.main(["-check_size", f"{root}/", str(listing), str(db)]) == 1
    assert "Incorrect data field size" in caplog.text and "big.png" in caplog.text
    assert not db.exists()               # a failed conversion leaves no database behind
    db.mkdir()
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="pycaffe_lite"):
        assert convert_imageset.main([f"{root}/", str(listing), str(db)]) == 1
    assert "already exists" in caplog.text
    bad = tmp_path / "bad.txt"
    bad.write_text("a.png 0\nb.png\n")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="pycaffe_lite"):
        assert convert_imageset.main([f"{root}/", str(bad), str(tmp_path / "x")]) == 1
    assert f"{bad}:2: expected 'path label'" in caplog.text
    with pytest.raises(SystemExit):
        convert_imageset.main([f"{root}/", str(listing)])          # DB_NAME missing


def test_convert_imageset_then_compute_image_mean(image_folder, tmp_path, caplog):
    root, listing, names, imgs = image_folder
    db = tmp_path / "db"
    assert convert_imageset.main(["-encoded", f"{root}/", str(listing), str(db)]) == 0
    out = tmp_path / "mean.binaryproto"
    with caplog.at_level(logging.INFO, logger="pycaffe_lite"):
        assert compute_image_mean.main(["-backend=lmdb", str(db), str(out)]) == 0
    mean = files.read_blob(str(out))
    assert mean.shape == (1, 3, 6, 8)
    want = numpy.stack([im.transpose(2, 0, 1) for im in imgs]).astype(numpy.float32)
    numpy.testing.assert_allclose(mean[0], want.mean(axis=0), rtol=1e-6)
    for c in range(3):
        assert f"mean_value channel [{c}]:" in caplog.text
    # The mean file drives a Data layer's mean subtraction.
    top = data_layer_batch(db, 4, f'mean_file: "{out}"')
    numpy.testing.assert_allclose(top[0].data, want - mean, rtol=1e-6, atol=1e-4)


def test_compute_image_mean_errors(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="pycaffe_lite"):
        assert compute_image_mean.main([str(tmp_path / "none")]) == 1
    assert "does not exist" in caplog.text


def test_tools_log_glog_lines(tmp_path, capsys):
    assert compute_image_mean.main([str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert re.search(r"^E\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ \w+\.py:\d+\] compute_image_mean: "
                     r".*does not exist", err, re.MULTILINE), err
    try:
        assert compute_image_mean.main(["-minloglevel=3", str(tmp_path / "none")]) == 1
        assert capsys.readouterr().err == ""
    finally:
        setup_logging()


def test_executable_scripts():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for name in ("convert_imageset", "compute_image_mean", "convert_mnist_data"):
        script = REPO / "tools" / name
        assert os.access(script, os.X_OK), f"{script} is not executable"
        result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                                text=True, env=env, timeout=60)
        assert result.returncode == 0 and "Usage" in result.stdout, result.stderr
