"""Tests of the data layers (layers/data.py, layers/inputs.py, layers/hdf5.py) and
the DataTransformer.

Data layers have no bottoms and no backward, so there is no gradient to
check: each layer gets value tests against a naive reference (Caffe's loops
written out, with the transformer's random draws replayed from the same
seed), tests on real data (the golden Fashion-MNIST LMDB written by Caffe's
tools, the BVLC HDF5 test files, real photos) and its error cases.
"""
import gc
import threading
from pathlib import Path

import cv2
import h5py
import numpy
import pytest
from google.protobuf import text_format

from pycaffe_lite import rng
from pycaffe_lite.blob import Blob
from pycaffe_lite.data_transformer import DataTransformer, TransformError
from pycaffe_lite.errors import LayerError
from pycaffe_lite.io.caffe_io import array_to_blobproto
from pycaffe_lite.io.db import create_db
from pycaffe_lite.io.files import read_blob
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.testing.gradient_check import make_layer

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
TRAIN_LMDB = SHARED / "golden" / "train" / "lenet_bvlc_sgd_inv" / "train_lmdb"
PHOTOS = SHARED / "fixtures" / "data"
H5_DIR = SHARED / "fixtures" / "bvlc" / "src" / "caffe" / "test" / "test_data"
SCALE = 0.00390625


def need(path):
    if not path.exists():
        pytest.skip(f"test material not found: {path}")
    return path


def layer_param(text):
    return text_format.Parse(text, caffe_pb2.LayerParameter())


def build(text, phase=TRAIN, dtype=numpy.float32, num_tops=None):
    """(layer, top) of a data layer; closes prefetch threads at teardown via gc."""
    layer, _, top = make_layer(layer_param(text), [], phase=phase, dtype=dtype,
                               num_tops=num_tops)
    return layer, top


def run(layer, top):
    layer.run_forward([], top)
    return [numpy.array(t.data) for t in top]


def golden_records():
    """(pixels N x 1 x 28 x 28 uint8, labels N) of the golden LMDB, in key order."""
    import lmdb
    env = lmdb.open(str(need(TRAIN_LMDB)), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            items = list(txn.cursor())
    finally:
        env.close()
    datums = []
    for _, value in items:
        d = caffe_pb2.Datum()
        d.ParseFromString(value)
        datums.append(d)
    pixels = numpy.stack([numpy.frombuffer(d.data, numpy.uint8).reshape(1, 28, 28)
                          for d in datums])
    return pixels, numpy.array([d.label for d in datums], dtype=numpy.float32)


@pytest.fixture(scope="module")
def golden():
    return golden_records()


def write_lmdb(path, datums):
    with create_db(str(path)) as db:
        for i, d in enumerate(datums):
            db.put(f"{i:08d}", d.SerializeToString())
    return str(path)


def uint8_datum(shape, seed, label=0):
    pixels = numpy.random.RandomState(seed).randint(0, 256, shape).astype(numpy.uint8)
    return caffe_pb2.Datum(channels=shape[0], height=shape[1], width=shape[2],
                           data=pixels.tobytes(), label=label), pixels


# --- naive reference of Caffe's DataTransformer::Transform(Datum) ---------------------

def replay_rng(seed):
    """The generator a DataTransformer made right after set_random_seed(seed)."""
    rng.set_random_seed(seed)
    return numpy.random.default_rng(int(rng.generator().integers(1 << 63)))


def naive_transform(pixels, param, phase, draws, mean=None):
    """Caffe's loop: top[c,h,w'] = (x[c,h_off+h,w_off+w] - mean[...]) * scale."""
    C, H, W = pixels.shape
    crop = param.crop_size
    do_mirror = bool(param.mirror) and int(draws.integers(2)) == 1
    h_off = w_off = 0
    height, width = H, W
    if crop:
        height = width = crop
        if phase == TRAIN:
            h_off = int(draws.integers(H - crop + 1))
            w_off = int(draws.integers(W - crop + 1))
        else:
            h_off, w_off = (H - crop) // 2, (W - crop) // 2
    scale = numpy.float32(param.scale)
    means = list(param.mean_value)
    if len(means) == 1:
        means = means * C
    out = numpy.zeros((C, height, width), dtype=numpy.float32)
    for c in range(C):
        for h in range(height):
            for w in range(width):
                x = numpy.float32(pixels[c, h_off + h, w_off + w])
                if mean is not None:
                    x = x - numpy.float32(mean[c, h_off + h, w_off + w])
                elif means:
                    x = x - numpy.float32(means[c])
                ww = width - 1 - w if do_mirror else w
                out[c, h, ww] = x * scale
    return out


TRANSFORM_CASES = [
    "scale: 0.5",
    "crop_size: 3",
    "crop_size: 3 mirror: true",
    "mirror: true scale: 0.25",
    "mean_value: 100",
    "mean_value: 10 mean_value: 20 mean_value: 30 scale: 0.017",
    "crop_size: 4 mirror: true mean_value: 5 mean_value: 6 mean_value: 7",
    "MEANFILE crop_size: 3 mirror: true scale: 0.1",
    "MEANFILE",
]


@pytest.mark.parametrize("phase", [TRAIN, TEST], ids=["TRAIN", "TEST"])
@pytest.mark.parametrize("case", TRANSFORM_CASES)
def test_transformer_datum_vs_naive(case, phase, tmp_path):
    mean = None
    if case.startswith("MEANFILE"):
        mean = numpy.random.RandomState(5).uniform(0, 255, (1, 3, 5, 6)).astype(numpy.float32)
        mean_path = tmp_path / "mean.binaryproto"
        blob = caffe_pb2.BlobProto(num=1, channels=3, height=5, width=6)
        blob.data.extend(mean.ravel().tolist())
        mean_path.write_bytes(blob.SerializeToString())
        case = case.replace("MEANFILE", f'mean_file: "{mean_path}"')
    param = text_format.Parse(case, caffe_pb2.TransformationParameter())
    datums = [uint8_datum((3, 5, 6), seed) for seed in range(6)]
    rng.set_random_seed(11)
    transformer = DataTransformer(param, phase)
    draws = replay_rng(11)
    for datum, pixels in datums:
        got = transformer.transform(datum)
        want = naive_transform(pixels, param, phase, draws,
                               None if mean is None else mean[0])
        assert got.dtype == numpy.float32
        numpy.testing.assert_array_equal(got, want)


def test_transformer_mirror_is_random_in_test_phase_too():
    # Caffe draws the mirror flip whenever mirror is set, whatever the phase
    # (test_data_transformer.cpp: TestMirrorTest expects some flips).
    param = caffe_pb2.TransformationParameter(mirror=True)
    datum, pixels = uint8_datum((1, 2, 3), 0)
    t = DataTransformer(param, TEST)
    outs = {t.transform(datum).tobytes() for _ in range(40)}
    assert len(outs) == 2


def test_transformer_image_equals_datum_path():
    """An HxWxC OpenCV image and the Datum holding the same pixels agree."""
    param = text_format.Parse("crop_size: 4 mirror: true mean_value: 3 scale: 0.5",
                              caffe_pb2.TransformationParameter())
    datum, pixels = uint8_datum((3, 6, 7), 1)
    image = pixels.transpose(1, 2, 0).copy()
    rng.set_random_seed(3)
    a = DataTransformer(param, TRAIN)
    rng.set_random_seed(3)
    b = DataTransformer(param, TRAIN)
    for _ in range(5):
        numpy.testing.assert_array_equal(a.transform(datum), b.transform(image))
    gray = pixels[0]
    assert DataTransformer(caffe_pb2.TransformationParameter(), TEST).transform(gray).shape == \
        (1, 6, 7)


def test_transformer_float_data_and_float64():
    values = numpy.random.RandomState(0).standard_normal((2, 3, 4))
    datum = caffe_pb2.Datum(channels=2, height=3, width=4)
    datum.float_data.extend(values.ravel().tolist())
    param = caffe_pb2.TransformationParameter(scale=2.0)
    got = DataTransformer(param, TEST, dtype=numpy.float64).transform(datum)
    assert got.dtype == numpy.float64
    numpy.testing.assert_array_equal(got, values.astype(numpy.float32).astype(numpy.float64)
                                     * 2.0)


def test_transformer_encoded_datum_force_gray():
    _, pixels = uint8_datum((3, 5, 4), 2)
    ok, png = cv2.imencode(".png", pixels.transpose(1, 2, 0))
    datum = caffe_pb2.Datum(data=png.tobytes(), encoded=True, label=3)
    native = DataTransformer(caffe_pb2.TransformationParameter(), TEST)
    assert native.infer_blob_shape(datum) == (1, 3, 5, 4)
    numpy.testing.assert_array_equal(native.transform(datum), pixels.astype(numpy.float32))
    gray = DataTransformer(caffe_pb2.TransformationParameter(force_gray=True), TEST)
    want = cv2.imdecode(png, cv2.IMREAD_GRAYSCALE)   # what Caffe's DecodeDatumToCVMat does
    numpy.testing.assert_array_equal(gray.transform(datum)[0], want.astype(numpy.float32))


def test_transformer_blob_semantics():
    """Transform(Blob): one flip/crop for the batch, mean before crop, scale last."""
    x = numpy.random.RandomState(0).uniform(0, 255, (2, 3, 6, 6)).astype(numpy.float32)
    param = text_format.Parse("crop_size: 4 mirror: true mean_value: 1 mean_value: 2 "
                              "mean_value: 3 scale: 0.5", caffe_pb2.TransformationParameter())
    rng.set_random_seed(4)
    got = DataTransformer(param, TRAIN).transform_blob(x)
    draws = replay_rng(4)
    mirror = int(draws.integers(2)) == 1
    h, w = int(draws.integers(3)), int(draws.integers(3))
    want = (x - numpy.array([1, 2, 3], numpy.float32)[:, None, None])[:, :, h:h + 4, w:w + 4]
    if mirror:
        want = want[..., ::-1]
    numpy.testing.assert_array_equal(got, want * numpy.float32(0.5))


@pytest.mark.parametrize("text, message", [
    ("force_color: true force_gray: true", "both force_color and force_gray"),
    ('mean_file: "/nonexistent/mean.binaryproto"', "mean.binaryproto"),
])
def test_transformer_param_errors(text, message, tmp_path):
    param = text_format.Parse(text, caffe_pb2.TransformationParameter())
    with pytest.raises(TransformError, match=message):
        DataTransformer(param, TRAIN)


def test_transformer_mean_file_and_value_exclusive(tmp_path):
    path = tmp_path / "m.binaryproto"
    path.write_bytes(array_to_blobproto(numpy.zeros((1, 1, 2, 2))).SerializeToString())
    param = caffe_pb2.TransformationParameter(mean_file=str(path), mean_value=[1.0])
    with pytest.raises(TransformError, match="mean_file and mean_value"):
        DataTransformer(param, TRAIN)


def test_transformer_input_errors(tmp_path):
    datum, _ = uint8_datum((3, 4, 4), 0)
    with pytest.raises(TransformError, match="smaller than crop_size 5"):
        DataTransformer(caffe_pb2.TransformationParameter(crop_size=5), TEST).transform(datum)
    with pytest.raises(TransformError, match="either 1 mean_value or as many as channels"):
        DataTransformer(caffe_pb2.TransformationParameter(mean_value=[1, 2]),
                        TEST).transform(datum)
    path = tmp_path / "m.binaryproto"
    path.write_bytes(array_to_blobproto(numpy.zeros((1, 3, 5, 5))).SerializeToString())
    with pytest.raises(TransformError, match="mean file is 3 x 5 x 5, the input is 3 x 4 x 4"):
        DataTransformer(caffe_pb2.TransformationParameter(mean_file=str(path)),
                        TEST).transform(datum)
    bad = caffe_pb2.Datum(channels=3, height=4, width=4, data=b"\x00" * 10)
    with pytest.raises(TransformError, match="holds 10 values"):
        DataTransformer(caffe_pb2.TransformationParameter(), TEST).transform(bad)


# --- Input ------------------------------------------------------------------------

def test_input_shapes():
    _, top = build('type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } }')
    assert [t.shape for t in top] == [(2, 3), (2, 3)]
    layer, top = build('type: "Input" top: "a" top: "b" input_param { shape { dim: 2 } '
                       'shape { dim: 4 dim: 1 dim: 5 } }')
    assert [t.shape for t in top] == [(2,), (4, 1, 5)]
    # Reshape is empty, as Caffe's: a blob the user resized keeps its shape.
    top[0].reshape((7, 7))
    top[0].data[...] = 3
    layer.run_forward([], top)
    assert top[0].shape == (7, 7) and (top[0].data == 3).all()
    layer.backward(top, [], [])


def test_input_without_shape_keeps_given_shape():
    layer = make_layer('type: "Input" top: "a"', [])[0]
    top = [Blob((2, 5))]
    layer.set_up([], top)
    assert top[0].shape == (2, 5)


def test_input_errors():
    with pytest.raises(LayerError, match="Must specify 'shape' once, once per top blob"):
        build('name: "in" type: "Input" top: "a" top: "b" top: "c" input_param { '
              'shape { dim: 1 } shape { dim: 2 } }')
    with pytest.raises(LayerError, match="takes 0 bottom"):
        make_layer('type: "Input" top: "a" input_param { shape { dim: 1 } }',
                   [numpy.zeros(1)])


# --- DummyData ----------------------------------------------------------------------

def test_dummy_data_constant_and_refill():
    layer, top = build('type: "DummyData" top: "a" top: "b" top: "c" dummy_data_param { '
                       'shape { dim: 2 dim: 3 } shape { dim: 4 } shape { dim: 1 dim: 2 } '
                       'data_filler { type: "constant" value: 7 } '
                       'data_filler { type: "gaussian" std: 1 } '
                       'data_filler { type: "constant" } }')
    assert [t.shape for t in top] == [(2, 3), (4,), (1, 2)]
    assert (top[0].data == 7).all() and (top[2].data == 0).all()
    top[0].data[...] = -1           # constants are filled once, never again
    first = run(layer, top)
    second = run(layer, top)
    assert (first[0] == -1).all()
    assert not numpy.array_equal(first[1], second[1])     # gaussian refilled each pass


def test_dummy_data_legacy_shape_and_default_filler():
    _, top = build('type: "DummyData" top: "a" top: "b" dummy_data_param { num: 2 '
                   'channels: 3 height: 4 width: 5 }')
    assert [t.shape for t in top] == [(2, 3, 4, 5)] * 2
    assert all((t.data == 0).all() for t in top)
    _, top = build('type: "DummyData" top: "a" top: "b" dummy_data_param { num: 2 num: 1 '
                   'channels: 3 channels: 1 height: 4 height: 1 width: 5 width: 2 '
                   'data_filler { type: "constant" value: 1 } }')
    assert [t.shape for t in top] == [(2, 3, 4, 5), (1, 1, 1, 2)]
    assert all((t.data == 1).all() for t in top)


@pytest.mark.parametrize("params, message", [
    ("shape { dim: 1 } num: 1 channels: 1 height: 1 width: 1", "Both shape and legacy"),
    ("shape { dim: 1 } shape { dim: 1 } shape { dim: 1 }", "Must specify 'shape' once"),
    ("", "Must specify 'shape' once"),
    ("num: 1 channels: 1 height: 1", "'width'"),
    ("shape { dim: 1 } data_filler { } data_filler { } data_filler { }",
     "Number of data fillers"),
])
def test_dummy_data_errors(params, message):
    with pytest.raises(LayerError, match=message):
        build(f'type: "DummyData" top: "a" top: "b" dummy_data_param {{ {params} }}')


# --- MemoryData ---------------------------------------------------------------------

MEMORY = ('type: "MemoryData" top: "data" top: "label" memory_data_param { batch_size: 2 '
          'channels: 3 height: 2 width: 1 }')


def test_memory_data_batches_in_order_and_wrap():
    layer, top = build(MEMORY)
    assert top[0].shape == (2, 3, 2, 1) and top[1].shape == (2,)
    data = numpy.arange(6 * 6, dtype=numpy.float32).reshape(6, 3, 2, 1)
    labels = numpy.arange(6, dtype=numpy.float32)
    layer.set_input_arrays(data, labels)
    for start in (0, 2, 4, 0):
        out, lab = run(layer, top)
        numpy.testing.assert_array_equal(out, data[start:start + 2])
        numpy.testing.assert_array_equal(lab.ravel(), labels[start:start + 2])
        assert lab.shape == (2, 1, 1, 1)
    data[2] = -5                      # the arrays are used without a copy, as pycaffe
    run(layer, top)
    assert (top[0].data[0] == -5).all()


def test_memory_data_errors():
    layer, top = build(MEMORY)
    with pytest.raises(LayerError, match="set_input_arrays"):
        run(layer, top)
    good = numpy.zeros((4, 3, 2, 1), numpy.float32)
    labels = numpy.zeros(4, numpy.float32)
    with pytest.raises(LayerError, match="must be float32"):
        layer.set_input_arrays(good.astype(numpy.float64), labels)
    with pytest.raises(LayerError, match="wrong dimensions"):
        layer.set_input_arrays(numpy.zeros((4, 3, 1, 2), numpy.float32), labels)
    with pytest.raises(LayerError, match="multiple of batch size"):
        layer.set_input_arrays(good[:3], labels[:3])
    with pytest.raises(LayerError, match="same first dimension"):
        layer.set_input_arrays(good, labels[:2])
    with pytest.raises(LayerError, match="must be specified and positive"):
        build('type: "MemoryData" top: "d" top: "l" memory_data_param { batch_size: 2 }')


# --- Data (LMDB) -----------------------------------------------------------------------

def data_layer_text(source, batch_size, transform="scale: 0.00390625", extra="",
                    tops=('data', 'label')):
    top = " ".join(f'top: "{t}"' for t in tops)
    return (f'name: "mnist" type: "Data" {top} transform_param {{ {transform} }} '
            f'data_param {{ source: "{source}" batch_size: {batch_size} backend: LMDB '
            f'{extra} }}')


def test_data_golden_lmdb_key_order_scale_and_wrap(golden):
    pixels, labels = golden
    ref = pixels.astype(numpy.float32) * numpy.float32(SCALE)
    n = len(ref)
    layer, top = build(data_layer_text(TRAIN_LMDB, 100))
    assert top[0].shape == (100, 1, 28, 28) and top[1].shape == (100,)
    start = 0
    for _ in range(7):        # batch 6 (records 500..599) wraps inside the batch
        data, lab = run(layer, top)
        rows = numpy.arange(start, start + 100) % n
        numpy.testing.assert_array_equal(data, ref[rows])
        numpy.testing.assert_array_equal(lab, labels[rows])
        start += 100
    layer.close()


def test_data_synchronous_equals_prefetched_and_shared_source(golden):
    pixels, labels = golden
    # Two layers read the same LMDB at once (a train and a test net, say).
    a, top_a = build(data_layer_text(TRAIN_LMDB, 64, extra="prefetch: 0"))
    b, top_b = build(data_layer_text(TRAIN_LMDB, 64, extra="prefetch: 2"), phase=TEST)
    for _ in range(9):
        da, la = run(a, top_a)
        db, lb = run(b, top_b)
        numpy.testing.assert_array_equal(da, db)
        numpy.testing.assert_array_equal(la, lb)
    a.close()
    b.close()


def test_data_only_data_top(golden):
    pixels, _ = golden
    layer, top = build(data_layer_text(TRAIN_LMDB, 3, transform="", tops=("data",)))
    (data,) = run(layer, top)
    numpy.testing.assert_array_equal(data, pixels[:3].astype(numpy.float32))
    layer.close()


def test_data_crop_mirror_mean_file_vs_naive(golden, tmp_path):
    """Data layer in TRAIN with crop, mirror and the real MNIST mean file."""
    mean_file = need(PHOTOS / "mnist_mean.binaryproto")
    mean = read_blob(str(mean_file))[0]
    pixels, labels = golden
    transform = f'crop_size: 24 mirror: true scale: 0.00390625 mean_file: "{mean_file}"'
    rng.set_random_seed(21)
    layer, top = build(data_layer_text(TRAIN_LMDB, 5, transform=transform))
    data, lab = run(layer, top)
    assert data.shape == (5, 1, 24, 24)
    param = text_format.Parse(transform, caffe_pb2.TransformationParameter())
    draws = replay_rng(21)
    for i in range(5):
        want = naive_transform(pixels[i], param, TRAIN, draws, mean)
        numpy.testing.assert_array_equal(data[i], want)
    numpy.testing.assert_array_equal(lab, labels[:5])
    layer.close()


def test_data_rand_skip(golden):
    pixels, _ = golden
    rng.set_random_seed(8)
    layer, top = build(data_layer_text(TRAIN_LMDB, 4, transform="",
                                       extra="rand_skip: 300"))
    rng.set_random_seed(8)
    skip = int(rng.generator().integers(300))
    (data, _) = run(layer, top)
    numpy.testing.assert_array_equal(data, pixels[skip:skip + 4].astype(numpy.float32))
    layer.close()


def test_data_variable_batch_shape_and_float_datums(tmp_path):
    # The first Datum of each batch sets the batch's shape (Caffe reshapes per batch).
    d1, p1 = uint8_datum((2, 3, 4), 1, label=1)
    d2, p2 = uint8_datum((2, 3, 4), 2, label=2)
    d3 = caffe_pb2.Datum(channels=1, height=2, width=2, label=3)
    d3.float_data.extend([0.5, 1.5, 2.5, 3.5])
    source = write_lmdb(tmp_path / "db", [d1, d2, d3])
    layer, top = build(data_layer_text(source, 2, transform=""))
    data, lab = run(layer, top)
    numpy.testing.assert_array_equal(data, numpy.stack([p1, p2]).astype(numpy.float32))
    # Next batch starts with d3 (1 x 2 x 2), then d1 (2 x 3 x 4) does not fit.
    with pytest.raises(LayerError, match=r"layer 'mnist'.*record '00000000'.*2 x 3 x 4"):
        run(layer, top)
    layer.close()


def test_data_datum_size_error_names_key(tmp_path):
    bad = caffe_pb2.Datum(channels=1, height=2, width=2, data=b"\x00\x01\x02", label=0)
    good, _ = uint8_datum((1, 2, 2), 0)
    source = write_lmdb(tmp_path / "db", [good, good, bad])
    layer, top = build(data_layer_text(source, 2, transform="", extra="prefetch: 0"))
    run(layer, top)
    with pytest.raises(LayerError, match=r"layer 'mnist'.*record '00000002'.*holds 3 values"):
        run(layer, top)


def test_data_missing_lmdb_is_clear(tmp_path):
    missing = tmp_path / "nope_lmdb"
    with pytest.raises(LayerError) as info:
        build(data_layer_text(missing, 2))
    text = str(info.value)
    assert "layer 'mnist'" in text and str(missing) in text and "does not exist" in text


def test_data_not_an_lmdb(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(LayerError, match="not an LMDB"):
        build(data_layer_text(tmp_path / "empty_dir", 2))


def test_data_leveldb_needs_plyvel(golden):
    try:
        import plyvel  # noqa: F401
        pytest.skip("plyvel is installed: LevelDB is supported here")
    except ImportError:
        pass
    text = data_layer_text(TRAIN_LMDB, 2).replace("backend: LMDB", "")   # default LEVELDB
    with pytest.raises(LayerError, match=r"LevelDB backend is not supported.*plyvel.*"
                                         r"backend: LMDB"):
        build(text)


def test_data_bad_batch_size():
    with pytest.raises(LayerError, match="batch_size must be positive"):
        build(data_layer_text(need(TRAIN_LMDB), 0))


def test_data_thread_stops_on_close_and_collection(golden):
    def threads():
        return {t for t in threading.enumerate() if "prefetch 'mnist'" in t.name}
    before = threads()
    layer, top = build(data_layer_text(TRAIN_LMDB, 8))
    run(layer, top)
    assert threads() - before
    layer.close()
    assert not threads() - before
    with pytest.raises(Exception, match="stopped"):
        run(layer, top)
    layer, top = build(data_layer_text(TRAIN_LMDB, 8))
    run(layer, top)
    del layer
    gc.collect()
    assert not threads() - before


# --- ImageData ----------------------------------------------------------------------------

PHOTO_NAMES = ["cat.jpg", "banana.png", "chicken.jpg", "platypus.jpg"]


def image_list(tmp_path, names=PHOTO_NAMES, prefix=""):
    path = tmp_path / "list.txt"
    path.write_text("".join(f"{prefix}{name} {i}\n" for i, name in enumerate(names)))
    return path


def image_data_text(source, batch_size, extra="", transform=""):
    return (f'name: "images" type: "ImageData" top: "data" top: "label" '
            f'transform_param {{ {transform} }} image_data_param {{ source: "{source}" '
            f'batch_size: {batch_size} {extra} }}')


def test_image_data_real_photos_resized(tmp_path):
    need(PHOTOS / "cat.jpg")
    source = image_list(tmp_path)
    layer, top = build(image_data_text(source, 3, f'root_folder: "{PHOTOS}/" new_height: 40 '
                                                  f'new_width: 50'))
    assert top[0].shape == (3, 3, 40, 50)
    expected = [cv2.resize(cv2.imread(str(PHOTOS / n), cv2.IMREAD_COLOR), (50, 40))
                for n in PHOTO_NAMES]
    order = [0, 1, 2, 3, 0, 1]       # wraps to the first image in the second batch
    got = run(layer, top) + run(layer, top)
    data = numpy.concatenate([got[0], got[2]])
    lab = numpy.concatenate([got[1], got[3]])
    for i, k in enumerate(order):
        numpy.testing.assert_array_equal(data[i], expected[k].transpose(2, 0, 1))
        assert lab[i] == k
    layer.close()


def test_image_data_gray_crop_and_mean(tmp_path):
    need(PHOTOS / "cat.jpg")
    source = image_list(tmp_path, ["cat.jpg", "chicken.jpg"], prefix=f"{PHOTOS}/")
    layer, top = build(image_data_text(source, 2, "is_color: false",
                                       "crop_size: 200 mean_value: 128 scale: 0.5"),
                       phase=TEST)
    data, _ = run(layer, top)
    assert data.shape == (2, 1, 200, 200)
    cat = cv2.imread(str(PHOTOS / "cat.jpg"), cv2.IMREAD_GRAYSCALE).astype(numpy.float32)
    off = (227 - 200) // 2
    want = (cat[off:off + 200, off:off + 200] - 128) * numpy.float32(0.5)
    numpy.testing.assert_array_equal(data[0, 0], want)
    layer.close()


def test_image_data_shuffle_covers_every_image(tmp_path):
    need(PHOTOS / "cat.jpg")
    source = image_list(tmp_path, ["cat.jpg", "chicken.jpg", "banana.png"] * 2,
                        prefix=f"{PHOTOS}/")
    rng.set_random_seed(1)
    layer, top = build(image_data_text(source, 6, "shuffle: true new_height: 8 new_width: 8"))
    for _ in range(2):
        _, lab = run(layer, top)
        assert sorted(lab.tolist()) == list(range(6))
    layer.close()


def test_image_data_missing_image_names_file_and_line(tmp_path):
    need(PHOTOS / "cat.jpg")
    source = tmp_path / "list.txt"
    source.write_text(f"{PHOTOS}/cat.jpg 0\n{PHOTOS}/cat.jpg 0\n{tmp_path}/missing.jpg 1\n")
    layer, top = build(image_data_text(source, 2))
    run(layer, top)
    with pytest.raises(LayerError, match=rf"layer 'images'.*Could not load "
                                         rf"{tmp_path}/missing.jpg \({source}:3\).*does not "
                                         rf"exist"):
        run(layer, top)
    layer.close()
    source.write_text(f"{tmp_path}/missing.jpg 1\n")
    with pytest.raises(LayerError, match=r"missing.jpg .*:1\)"):
        build(image_data_text(source, 1))


def test_image_data_size_change_in_a_batch_names_image_and_line(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), numpy.zeros((4, 4, 3), numpy.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), numpy.zeros((5, 5, 3), numpy.uint8))
    source = image_list(tmp_path, ["a.png", "a.png", "a.png", "b.png"], prefix=f"{tmp_path}/")
    layer, top = build(image_data_text(source, 2) + " data_param { prefetch: 0 }")
    run(layer, top)
    with pytest.raises(LayerError, match=rf"layer 'images'.*image {tmp_path}/b.png "
                                         rf"\({source}:4\).*the batch expects 3 x 4 x 4"):
        run(layer, top)
    # The image that failed is read again: the next batch starts with it.
    with pytest.raises(LayerError, match=rf"image {tmp_path}/a.png \({source}:1\)"):
        run(layer, top)
    layer.close()


@pytest.mark.parametrize("content, line", [
    ("cat.jpg 0\nno_label_here\n", 2),
    ("cat.jpg 0\n\ncat.jpg x\n", 3),
    (" 4\n", 1),
])
def test_image_data_bad_list_line(tmp_path, content, line):
    source = tmp_path / "list.txt"
    source.write_text(content)
    with pytest.raises(LayerError, match=rf"{source}:{line}: expected 'path label'"):
        build(image_data_text(source, 1))


def test_image_data_param_errors(tmp_path):
    source = tmp_path / "list.txt"
    source.write_text("")
    with pytest.raises(LayerError, match="File is empty"):
        build(image_data_text(source, 1))
    with pytest.raises(LayerError, match="does not exist"):
        build(image_data_text(tmp_path / "nope.txt", 1))
    source.write_text("a.jpg 1\n")
    with pytest.raises(LayerError, match="new_height and new_width must be set together"):
        build(image_data_text(source, 1, "new_height: 4"))


# --- HDF5Data / HDF5Output -------------------------------------------------------------

def h5_list(tmp_path, names):
    path = tmp_path / "h5list.txt"
    path.write_text("".join(f"{H5_DIR / n}\n" for n in names))
    return path


def h5_text(source, batch_size, tops=("data", "label", "label2"), extra=""):
    top = " ".join(f'top: "{t}"' for t in tops)
    return (f'name: "h5" type: "HDF5Data" {top} hdf5_data_param {{ source: "{source}" '
            f'batch_size: {batch_size} {extra} }}')


def h5_rows(names):
    arrays = {"data": [], "label": [], "label2": []}
    for n in names:
        with h5py.File(H5_DIR / n, "r") as f:
            for k in arrays:
                arrays[k].append(numpy.asarray(f[k][()], numpy.float32))
    return {k: numpy.concatenate(v) for k, v in arrays.items()}


def test_hdf5_data_fixture_files_in_order(tmp_path):
    need(H5_DIR / "sample_data.h5")
    names = ["sample_data.h5", "sample_data_2_gzip.h5"]
    rows = h5_rows(names)
    assert len(rows["data"]) == 20
    layer, top = build(h5_text(h5_list(tmp_path, names), 3))
    assert [t.shape for t in top] == [(3, 8, 6, 5), (3, 1), (3, 1)]
    start = 0
    for _ in range(9):                # 27 rows: crosses the files and wraps around
        got = run(layer, top)
        idx = numpy.arange(start, start + 3) % 20
        for array, name in zip(got, ("data", "label", "label2")):
            numpy.testing.assert_array_equal(array, rows[name][idx])
        start += 3
    # The BVLC fixture's own values: data counts up, label = row + 1, label2 = row + 2.
    numpy.testing.assert_array_equal(rows["data"].ravel(), numpy.arange(20 * 240))
    numpy.testing.assert_array_equal(rows["label"].ravel(), list(range(1, 11)) * 2)
    numpy.testing.assert_array_equal(rows["label2"].ravel(), list(range(2, 12)) * 2)


def test_hdf5_data_shuffle_is_a_permutation(tmp_path):
    need(H5_DIR / "sample_data.h5")
    rng.set_random_seed(2)
    layer, top = build(h5_text(h5_list(tmp_path, ["sample_data.h5"]), 10,
                               tops=("label",), extra="shuffle: true"))
    first = run(layer, top)[0].ravel()
    second = run(layer, top)[0].ravel()
    assert sorted(first) == sorted(second) == list(range(1, 11))
    assert first.tolist() != list(range(1, 11)) or second.tolist() != list(range(1, 11))


def test_hdf5_data_errors(tmp_path):
    need(H5_DIR / "sample_data.h5")
    source = h5_list(tmp_path, ["sample_data.h5"])
    with pytest.raises(LayerError, match=r"no dataset 'nope'.*datasets: data, label, label2"):
        build(h5_text(source, 2, tops=("data", "nope")))
    with pytest.raises(LayerError, match="does not transform data"):
        build(h5_text(source, 2).replace('type: "HDF5Data"',
                                         'type: "HDF5Data" transform_param { scale: 2 }'))
    missing = tmp_path / "list2.txt"
    missing.write_text(f"{tmp_path}/absent.h5\n")
    with pytest.raises(LayerError, match=r"absent.h5 does not exist"):
        build(h5_text(missing, 2))
    with pytest.raises(LayerError, match="Failed to open source file"):
        build(h5_text(tmp_path / "nolist.txt", 2))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(LayerError, match="at least 1 HDF5 filename"):
        build(h5_text(empty, 2))


def test_hdf5_output_writes_data_and_label(tmp_path):
    out = tmp_path / "out.h5"
    data = numpy.random.RandomState(0).standard_normal((4, 3, 2, 2)).astype(numpy.float32)
    label = numpy.arange(4, dtype=numpy.float32)
    layer, bottom, top = make_layer(
        layer_param(f'type: "HDF5Output" bottom: "d" bottom: "l" '
                    f'hdf5_output_param {{ file_name: "{out}" }}'),
        [data, label], dtype=numpy.float32, num_tops=0)
    assert out.exists()
    for _ in range(2):                # rewritten at every forward
        layer.run_forward(bottom, top)
    layer.backward(top, [True, True], bottom)
    with h5py.File(out, "r") as f:
        numpy.testing.assert_array_equal(f["data"][()], data)
        numpy.testing.assert_array_equal(f["label"][()], label.reshape(4, 1, 1, 1))
    with pytest.raises(LayerError, match="same batch size"):
        make_layer(layer_param(f'type: "HDF5Output" bottom: "d" bottom: "l" '
                               f'hdf5_output_param {{ file_name: "{out}" }}'),
                   [data, label[:3]], num_tops=0)


def test_registered_types():
    from pycaffe_lite.layer import layer_class
    names = {"Input": None, "DummyData": "DUMMY_DATA", "MemoryData": "MEMORY_DATA",
             "Data": "DATA", "ImageData": "IMAGE_DATA", "HDF5Data": "HDF5_DATA",
             "HDF5Output": "HDF5_OUTPUT"}
    for name, v1 in names.items():
        assert layer_class(name).type == name
        if v1:
            assert layer_class(v1) is layer_class(name)


def test_data_float64_blobs(golden):
    pixels, labels = golden
    layer, top = build(data_layer_text(TRAIN_LMDB, 4, transform="scale: 0.017"),
                       dtype=numpy.float64)
    data, lab = run(layer, top)
    assert data.dtype == numpy.float64
    # Caffe<double>: the float scale parameter widened to double, then pixel * scale.
    numpy.testing.assert_array_equal(data, pixels[:4] * float(numpy.float32(0.017)))
    layer.close()


@pytest.mark.gpu
def test_data_layers_on_cupy(golden, tmp_path):
    from pycaffe_lite.backend import gpu_available
    if not gpu_available():
        pytest.skip("no CuPy / GPU")
    import cupy
    pixels, labels = golden
    layer, _, top = make_layer(layer_param(data_layer_text(TRAIN_LMDB, 4)), [], xp=cupy,
                               dtype=numpy.float32)
    layer.run_forward([], top)
    assert isinstance(top[0].data, cupy.ndarray)
    numpy.testing.assert_array_equal(cupy.asnumpy(top[0].data),
                                     pixels[:4].astype(numpy.float32) * numpy.float32(SCALE))
    numpy.testing.assert_array_equal(cupy.asnumpy(top[1].data), labels[:4])
    layer.close()
    memory, _, top = make_layer(layer_param(MEMORY), [], xp=cupy, dtype=numpy.float32)
    data = numpy.arange(2 * 6, dtype=numpy.float32).reshape(2, 3, 2, 1)
    memory.set_input_arrays(data, numpy.zeros(2, numpy.float32))
    memory.run_forward([], top)
    numpy.testing.assert_array_equal(cupy.asnumpy(top[0].data), data)
    out = tmp_path / "o.h5"
    h5out, bottom, _ = make_layer(
        layer_param(f'type: "HDF5Output" bottom: "d" bottom: "l" '
                    f'hdf5_output_param {{ file_name: "{out}" }}'),
        [data, numpy.zeros(2)], xp=cupy, dtype=numpy.float32, num_tops=0)
    h5out.run_forward(bottom, [])
    with h5py.File(out, "r") as f:
        numpy.testing.assert_array_equal(f["data"][()], data)
