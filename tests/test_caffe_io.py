"""Tests of pycaffe_lite/io/caffe_io.py (pycaffe's caffe.io API, Caffe's image and
Datum helpers) and pycaffe_lite/io/db.py (the LMDB reader/writer)."""
from pathlib import Path

import cv2
import numpy
import pytest

from pycaffe_lite.io import caffe_io, files
from pycaffe_lite.io.db import DBError, create_db, open_db
from pycaffe_lite.proto import caffe_pb2

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
PHOTOS = SHARED / "fixtures" / "data"
TRAIN_LMDB = SHARED / "golden" / "train" / "lenet_bvlc_sgd_inv" / "train_lmdb"


def need(path):
    if not path.exists():
        pytest.skip(f"test material not found: {path}")
    return path


# --- BlobProto / Datum conversions --------------------------------------------------

def test_blobproto_round_trip_and_legacy_shape():
    arr = numpy.arange(24, dtype=numpy.float64).reshape(2, 3, 4) / 7
    blob = caffe_io.array_to_blobproto(arr, diff=-arr)
    assert list(blob.shape.dim) == [2, 3, 4]
    numpy.testing.assert_allclose(caffe_io.blobproto_to_array(blob), arr, rtol=1e-7)
    numpy.testing.assert_allclose(caffe_io.blobproto_to_array(blob, return_diff=True), -arr,
                                  rtol=1e-7)
    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=3, width=4)
    legacy.data.extend(range(24))
    assert caffe_io.blobproto_to_array(legacy).shape == (1, 2, 3, 4)


def test_blobproto_pycaffe_semantics():
    """float64 values; the legacy 4-D fields win over ``shape``; ValueError on a bad size."""
    blob = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=3)
    blob.shape.dim.extend([6])
    blob.double_data.extend([0.1] * 6)
    array = caffe_io.blobproto_to_array(blob)
    assert array.shape == (1, 1, 2, 3) and array.dtype == numpy.float64
    assert array[0, 0, 0, 0] == 0.1
    blob.double_data.append(0.2)
    with pytest.raises(ValueError, match="holds 7"):
        caffe_io.blobproto_to_array(blob)


def test_legacy_blob_proto_as_caffe_tools_write_it():
    blob = files.array_to_blob_proto(numpy.ones((3, 2, 2)), legacy=True)
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 2, 2)
    assert not blob.HasField("shape")
    assert caffe_io.blobproto_to_array(blob).shape == (1, 3, 2, 2)


def test_blobproto_reads_real_mean_file():
    path = need(PHOTOS / "imagenet_mean.binaryproto")
    blob = caffe_pb2.BlobProto()
    blob.ParseFromString(path.read_bytes())
    mean = caffe_io.blobproto_to_array(blob)
    assert mean.shape == (1, 3, 256, 256)
    assert 90 < mean.mean() < 130          # BGR ImageNet pixel mean
    numpy.testing.assert_array_equal(files.read_blob(str(path)), mean)


def test_blobprotovector_round_trip():
    arrays = [numpy.ones((2, 2)), numpy.arange(3.0)]
    text = caffe_io.arraylist_to_blobprotovector_str(arrays)
    back = caffe_io.blobprotovector_str_to_arraylist(text)
    assert len(back) == 2
    for a, b in zip(arrays, back):
        numpy.testing.assert_array_equal(a, b)


def test_datum_round_trip():
    pixels = numpy.random.RandomState(0).randint(0, 256, (3, 4, 5)).astype(numpy.uint8)
    datum = caffe_io.array_to_datum(pixels, label=4)
    assert (datum.channels, datum.height, datum.width, datum.label) == (3, 4, 5, 4)
    assert datum.data == pixels.tobytes() and not datum.float_data
    numpy.testing.assert_array_equal(caffe_io.datum_to_array(datum), pixels)
    floats = pixels.astype(numpy.float32) / 3
    datum = caffe_io.array_to_datum(floats)
    assert not datum.data and len(datum.float_data) == 60
    numpy.testing.assert_allclose(caffe_io.datum_to_array(datum), floats, rtol=1e-6)
    with pytest.raises(ValueError, match="Incorrect array shape"):
        caffe_io.array_to_datum(numpy.zeros((2, 2)))


# --- Transformer ----------------------------------------------------------------------

def naive_preprocess(img, mean, raw_scale, input_scale):
    """transpose (2,0,1), RGB->BGR, raw scale, mean per channel, input scale."""
    chw = numpy.asarray(img, numpy.float32).transpose(2, 0, 1)[::-1]
    out = numpy.empty_like(chw)
    for c in range(chw.shape[0]):
        out[c] = (chw[c] * raw_scale - mean[c]) * input_scale
    return out


def make_transformer(shape=(1, 3, 6, 5)):
    t = caffe_io.Transformer({"data": shape})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255.0)
    t.set_mean("data", numpy.array([104.0, 117.0, 123.0]))
    t.set_input_scale("data", 0.5)
    return t


def test_transformer_preprocess_and_deprocess():
    img = numpy.random.RandomState(0).uniform(0, 1, (6, 5, 3)).astype(numpy.float32)
    t = make_transformer()
    got = t.preprocess("data", img)
    want = naive_preprocess(img, [104.0, 117.0, 123.0], 255.0, 0.5)
    assert got.dtype == numpy.float32 and got.shape == (3, 6, 5)
    numpy.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    numpy.testing.assert_allclose(t.deprocess("data", got[None]), img, atol=1e-5)


def test_transformer_resizes_first():
    img = numpy.random.RandomState(1).uniform(0, 1, (12, 10, 3)).astype(numpy.float32)
    t = make_transformer()
    want = naive_preprocess(caffe_io.resize_image(img, (6, 5)), [104.0, 117.0, 123.0],
                            255.0, 0.5)
    numpy.testing.assert_allclose(t.preprocess("data", img), want, rtol=1e-5, atol=1e-4)


def test_transformer_elementwise_mean():
    t = caffe_io.Transformer({"data": (1, 1, 2, 3)})
    t.set_transpose("data", (2, 0, 1))
    mean = numpy.arange(6, dtype=numpy.float32).reshape(2, 3)
    t.set_mean("data", mean)            # 2-D mean: treated as (1, H, W)
    img = numpy.full((2, 3, 1), 10, numpy.float32)
    numpy.testing.assert_array_equal(t.preprocess("data", img)[0], 10 - mean)


def test_transformer_resizes_an_elementwise_mean():
    # BVLC master: classify.py's 3x256x256 ImageNet mean against a 227x227 input.
    # A linear ramp stays the ramp bilinear interpolation gives (pixel centres at
    # (x + 0.5) * 256 / 227 - 0.5), away from the clamped border.
    t = caffe_io.Transformer({"data": (1, 3, 227, 227)})
    y, x = numpy.mgrid[0:256, 0:256].astype(numpy.float64)
    mean = numpy.stack([100 + 0.5 * x, 110 + 0.25 * y, 120 + 0.1 * x + 0.2 * y])
    t.set_mean("data", mean)
    got = t.mean["data"]
    assert got.shape == (3, 227, 227)
    src = (numpy.arange(227) + 0.5) * 256 / 227 - 0.5
    inner = slice(2, -2)
    numpy.testing.assert_allclose(got[0, 100, inner], 100 + 0.5 * src[inner], atol=2e-3)
    numpy.testing.assert_allclose(got[1, inner, 7], 110 + 0.25 * src[inner], atol=2e-3)
    t.set_mean("data", numpy.full((3, 256, 256), 104.0))
    assert (t.mean["data"] == 104.0).all()


def test_transformer_errors():
    t = caffe_io.Transformer({"data": (1, 3, 4, 4)})
    with pytest.raises(Exception, match="not one of the net inputs"):
        t.set_raw_scale("image", 1)
    with pytest.raises(Exception, match="Transpose order"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(Exception, match="Channel swap"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError, match="Mean channels incompatible"):
        t.set_mean("data", numpy.zeros(2))
    with pytest.raises(ValueError, match=r"Mean channels incompatible.*\(2, 4, 4\)"):
        t.set_mean("data", numpy.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="Mean shape invalid"):
        t.set_mean("data", numpy.zeros((1, 3, 4, 4)))


# --- image IO -------------------------------------------------------------------------------

def test_load_image_rgb_float():
    path = need(PHOTOS / "cat.jpg")
    img = caffe_io.load_image(str(path))
    assert img.shape == (227, 227, 3) and img.dtype == numpy.float32
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    numpy.testing.assert_allclose(img, bgr[:, :, ::-1] / 255.0, rtol=1e-6)
    gray = caffe_io.load_image(str(path), color=False)
    assert gray.shape == (227, 227, 1)
    rgb = bgr[:, :, ::-1] / 255.0
    want = 0.2125 * rgb[..., 0] + 0.7154 * rgb[..., 1] + 0.0721 * rgb[..., 2]
    numpy.testing.assert_allclose(gray[..., 0], want, rtol=1e-5)


def test_load_image_alpha_and_gray_files(tmp_path):
    banana = caffe_io.load_image(str(need(PHOTOS / "banana.png")))
    assert banana.shape == (227, 227, 3)          # RGBA: alpha dropped
    g = numpy.random.RandomState(0).randint(0, 256, (4, 6)).astype(numpy.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), g)
    color = caffe_io.load_image(str(tmp_path / "g.png"))
    assert color.shape == (4, 6, 3)
    numpy.testing.assert_allclose(color[..., 1], g / 255.0, rtol=1e-6)
    one = caffe_io.load_image(str(tmp_path / "g.png"), color=False)
    assert one.shape == (4, 6, 1)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        caffe_io.load_image(str(tmp_path / "nope.png"))


def test_resize_image():
    im = numpy.random.RandomState(0).uniform(0, 1, (4, 6, 3)).astype(numpy.float32)
    out = caffe_io.resize_image(im, (8, 12))
    assert out.shape == (8, 12, 3) and out.dtype == numpy.float32
    assert im.min() - 1e-6 <= out.min() and out.max() <= im.max() + 1e-6
    nearest = caffe_io.resize_image(im, (8, 12), interp_order=0)
    numpy.testing.assert_array_equal(nearest, im.repeat(2, axis=0).repeat(2, axis=1))
    const = caffe_io.resize_image(numpy.full((3, 3, 1), 0.25), (5, 2))
    assert const.shape == (5, 2, 1) and (const == 0.25).all()
    many = caffe_io.resize_image(numpy.random.rand(4, 4, 5), (2, 2))
    assert many.shape == (2, 2, 5)
    single = caffe_io.resize_image(numpy.random.rand(4, 4, 1), (2, 3))
    assert single.shape == (2, 3, 1)


def test_oversample_vs_naive():
    ims = [numpy.random.RandomState(k).rand(6, 8, 2).astype(numpy.float32) for k in range(2)]
    crops = caffe_io.oversample(ims, (4, 4))
    assert crops.shape == (20, 4, 4, 2)
    for n, im in enumerate(ims):
        corners = [(0, 0), (0, 4), (2, 0), (2, 4), (1, 2)]
        for k, (y, x) in enumerate(corners):
            want = im[y:y + 4, x:x + 4]
            numpy.testing.assert_array_equal(crops[10 * n + k], want)
            numpy.testing.assert_array_equal(crops[10 * n + 5 + k], want[:, ::-1])


# --- Caffe's util/io --------------------------------------------------------------------------

def test_read_image_to_datum_raw_and_encoded(tmp_path):
    img = numpy.random.RandomState(0).randint(0, 256, (5, 7, 3)).astype(numpy.uint8)
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), img)
    datum = caffe_io.read_image_to_datum(str(path), 3)
    assert (datum.channels, datum.height, datum.width, datum.label) == (3, 5, 7, 3)
    numpy.testing.assert_array_equal(caffe_io.datum_to_array(datum), img.transpose(2, 0, 1))
    enc = caffe_io.read_image_to_datum(str(path), 1, encoding="png")
    assert enc.encoded and enc.data == path.read_bytes()    # the file itself
    resized = caffe_io.read_image_to_datum(str(path), 1, 4, 6, encoding="png")
    decoded = caffe_pb2.Datum()
    decoded.CopyFrom(resized)
    assert caffe_io.decode_datum_native(decoded) and decoded.label == 1
    assert (decoded.channels, decoded.height, decoded.width) == (3, 4, 6)
    numpy.testing.assert_array_equal(caffe_io.datum_to_array(decoded),
                                     cv2.resize(img, (6, 4)).transpose(2, 0, 1))
    gray = caffe_io.read_image_to_datum(str(path), 0, is_color=False)
    assert gray.channels == 1
    assert caffe_io.read_image_to_datum(str(tmp_path / "none.png"), 0) is None


def test_cvmat_to_datum_layout():
    img = numpy.arange(2 * 3 * 3, dtype=numpy.uint8).reshape(2, 3, 3)   # H x W x C
    datum = caffe_io.cvmat_to_datum(img)
    raw = numpy.frombuffer(datum.data, numpy.uint8)
    want = [img[h, w, c] for c in range(3) for h in range(2) for w in range(3)]
    numpy.testing.assert_array_equal(raw, want)


# --- databases ------------------------------------------------------------------------------

def test_db_write_read_key_order(tmp_path):
    path = tmp_path / "db"
    with create_db(str(path), "lmdb", commit_every=3) as db:
        for k in [5, 1, 9, 3, 7, 2, 0]:
            db.put(f"{k:08d}", bytes([k]))
    reader = open_db(str(path), caffe_pb2.DataParameter.LMDB)
    assert len(reader) == 7
    assert [k for k, _ in reader.records()] == [f"{k:08d}".encode() for k in sorted(
        [5, 1, 9, 3, 7, 2, 0])]
    other = open_db(str(path))           # a second reader shares the handle
    assert other.first() == (b"00000000", b"\x00")
    reader.close()
    assert other.first() == (b"00000000", b"\x00")
    other.close()
    with pytest.raises(DBError, match="already exists"):
        create_db(str(path))


def test_db_grows_map(tmp_path):
    with create_db(str(tmp_path / "big")) as db:
        for k in range(80):
            db.put(f"{k:08d}", bytes(1 << 20))     # 80 MiB > the initial 64 MiB map
    assert len(open_db(str(tmp_path / "big"))) == 80


def test_db_errors(tmp_path):
    with pytest.raises(DBError, match="does not exist"):
        open_db(str(tmp_path / "missing"))
    with pytest.raises(DBError, match="unknown database backend 'rocksdb'"):
        open_db(str(tmp_path), "rocksdb")
    try:
        import plyvel  # noqa: F401
    except ImportError:
        with pytest.raises(DBError, match="plyvel"):
            open_db(str(tmp_path), "leveldb")


def test_golden_lmdb_read_only(tmp_path):
    reader = open_db(str(need(TRAIN_LMDB)))
    key, value = reader.first()
    datum = caffe_pb2.Datum()
    datum.ParseFromString(value)
    assert key == b"00000000" and (datum.channels, datum.height, datum.width) == (1, 28, 28)
    assert len(reader) == 512
    reader.close()


@pytest.mark.parametrize("shape", [(0,), (3,), (2, 3, 4), (40, 1000)])
def test_blob_proto_packed_bytes_equal_protobufs_own(shape):
    """array_to_blob_proto writes the packed floats as wire bytes: the message (data
    and diff, float64 input rounded to float32) serialises exactly as one filled by
    protobuf's own repeated-field extend."""
    rng = numpy.random.default_rng(1)
    data, diff = rng.standard_normal(shape), rng.standard_normal(shape)
    ours = files.array_to_blob_proto(data, diff=diff)
    theirs = caffe_pb2.BlobProto()
    theirs.shape.dim.extend(shape)
    theirs.data.extend(data.astype(numpy.float32).ravel().tolist())
    theirs.diff.extend(diff.astype(numpy.float32).ravel().tolist())
    assert ours.SerializeToString() == theirs.SerializeToString()
    assert ours == theirs
    numpy.testing.assert_array_equal(files.blob_proto_to_array(ours),
                                     data.astype(numpy.float32))
