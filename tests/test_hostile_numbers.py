"""Hostile numbers (issue 13): huge, overflowing, negative, zero, NaN and out-of-range
values in a net get a clear error of our own naming the layer (and the blob, the
field, the file), never a NumPy exception or an allocation past the memory guard.

Each test is named after the finding it pins down.
"""
import math

import cv2
import numpy
import pytest
from google.protobuf import text_format

import pycaffe_lite as caffe
from pycaffe_lite import fillers, memory
from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import (CaffeError, FillerError, LayerError, MemoryLimitError,
                                 NetError)
from pycaffe_lite.io.db import create_db
from pycaffe_lite.net import Net
from pycaffe_lite.proto import caffe_pb2


@pytest.fixture(autouse=True)
def default_limit(monkeypatch):
    """Each test starts from the default limit (the memory available)."""
    monkeypatch.delenv(memory.ENV, raising=False)
    caffe.set_memory_limit(None)
    yield
    caffe.set_memory_limit(None)


def net(text, phase=caffe.TEST):
    return Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)


def input_layer(*dims, name="d"):
    shape = " ".join(f"dim: {d}" for d in dims)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {shape} }} }} }}\n'


def ip_layer(filler, num_output=4):
    return ('layer { name: "ip" type: "InnerProduct" bottom: "d" top: "ip" '
            f'inner_product_param {{ num_output: {num_output} weight_filler {{ {filler} }} }} }}\n')


# --- the memory guard ----------------------------------------------------------------

def test_huge_input_dim_is_refused_naming_layer_blob_shape_bytes_and_limit():
    with pytest.raises(MemoryLimitError) as e:
        net(input_layer(99999999999, 3))
    text = str(e.value)
    assert "layer 'd' (type Input)" in text and "blob 'd'" in text
    assert "(99999999999, 3)" in text and "2399999999976 bytes" in text
    assert "memory limit" in text and "the memory available" in text
    assert isinstance(e.value, MemoryError)       # what callers catching MemoryError expect


@pytest.mark.parametrize("dims", [(9999999999, 9999999999, 9999999999),
                                  (0, 2 ** 62), (2, 3, 999999999, 999999999)])
def test_dims_whose_product_overflows_are_refused_not_array_is_too_big(dims):
    with pytest.raises(MemoryLimitError, match=r"layer 'd'.*blob 'd'.*2\*\*63"):
        net(input_layer(*dims))


def test_huge_top_of_a_layer_names_the_layer_and_its_top():
    with pytest.raises(MemoryLimitError, match=r"layer 't' \(type Tile\): blob 't' of shape "
                                               r"\(2, 6000000000\)"):
        net(input_layer(2, 3) + 'layer { name: "t" type: "Tile" bottom: "d" top: "t" '
                                'tile_param { axis: 1 tiles: 2000000000 } }')
    with pytest.raises(MemoryLimitError, match=r"layer 't' \(type Tile\): blob 't' .*2\*\*63"):
        net(input_layer(0, 2 ** 31)
            + 'layer { name: "t" type: "Tile" bottom: "d" top: "t" '
              'tile_param { axis: 1 tiles: 2000000000 } }')


def test_huge_num_output_param_blob_is_refused_naming_layer_and_param():
    with pytest.raises(MemoryLimitError) as e:
        net(input_layer(2, 1000) + ip_layer('type: "constant"', num_output=999999999))
    text = str(e.value)
    assert "layer 'ip' (type InnerProduct): param blob 0 of shape (999999999, 1000)" in text
    assert "7999999992000 bytes" in text


def test_net_running_total_past_the_limit_names_the_layer():
    # Each blob (100000 floats: 800 kB with its diff) fits in 1 MiB, two do not.
    caffe.set_memory_limit(1 << 20)
    text = input_layer(100000) + ('layer { name: "r1" type: "ReLU" bottom: "d" top: "r1" }\n'
                                  'layer { name: "r2" type: "ReLU" bottom: "r1" top: "r2" }\n')
    with pytest.raises(MemoryLimitError, match=r"layer 'r1' \(type ReLU\): the net up to this "
                                               r"layer .* needs 1.53 MiB \(1600000 bytes\), "
                                               r"more than the memory limit of 1 MiB"):
        net(text)
    caffe.set_memory_limit(None)
    assert net(text).blobs["r2"].shape == (100000,)


def test_memory_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv(memory.ENV, "1M")
    with pytest.raises(MemoryLimitError, match=r"PYCAFFE_LITE_MEMORY_LIMIT=1M"):
        net(input_layer(1000, 1000))
    monkeypatch.setenv(memory.ENV, "lots")
    with pytest.raises(CaffeError, match=r"memory limit 'lots': expected a number of bytes"):
        net(input_layer(1000, 1000))
    monkeypatch.setenv(memory.ENV, "1G")
    caffe.set_memory_limit(1000)        # the API's limit wins over the environment's
    with pytest.raises(MemoryLimitError, match=r"set by pycaffe_lite.set_memory_limit"):
        net(input_layer(1000))


@pytest.mark.parametrize("text, size", [("4096", 4096), ("64K", 65536), ("1.5G", 3 << 29),
                                        ("2MiB", 2 << 20), ("1t", 1 << 40), (" 10 ", 10)])
def test_memory_limit_sizes(text, size):
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "1X", "nan", "inf", "G"])
def test_memory_limit_bad_sizes(text):
    with pytest.raises(CaffeError, match="expected a number of bytes"):
        memory.parse_size(text)


def test_user_reshape_past_the_limit_names_the_blob_and_forward_names_the_layer():
    n = net(input_layer(2, 3) + 'layer { name: "r" type: "ReLU" bottom: "d" top: "r" }')
    caffe.set_memory_limit("1M")
    with pytest.raises(MemoryLimitError, match=r"^blob 'd' of shape \(1000, 1000\)"):
        n.blobs["d"].reshape(1000, 1000)
    n.blobs["d"].reshape(300, 300)              # fits; the ReLU's top, sized in forward, too
    n.blobs["d"].data[...] = 1
    n.forward_range()
    n.blobs["d"].reshape(200, 500)              # same count: a view, nothing allocated
    caffe.set_memory_limit(500000)
    n.blobs["d"].reshape(100, 300)              # 240 kB with its diff: fits
    with pytest.raises(MemoryLimitError, match=r"^layer 'r' \(type ReLU\): blob 'r' of shape "
                                               r"\(100, 300\)"):
        caffe.set_memory_limit(200000)
        n.forward_range()


def test_negative_dim_names_the_blob_and_the_layer():
    n = net(input_layer(2, 3))
    with pytest.raises(CaffeError, match=r"blob 'd' shape \(-1, 3\) has a negative dimension"):
        n.blobs["d"].reshape(-1, 3)
    with pytest.raises(CaffeError, match=r"negative dimension"):
        Blob((2, -3))
    with pytest.raises(LayerError, match=r"layer 'd' \(type Input\).*negative dimension"):
        net(input_layer(-2, 3))


def test_numpy_memory_error_in_a_layer_becomes_a_memory_limit_error(monkeypatch):
    relu = caffe.layer.layer_class("ReLU")

    def forward(self, bottom, top):
        raise MemoryError("Unable to allocate 285 TiB for an array with shape (99999999999,)")
    monkeypatch.setattr(relu, "forward", forward)
    n = net(input_layer(2, 3) + 'layer { name: "r" type: "ReLU" bottom: "d" top: "r" }')
    with pytest.raises(MemoryLimitError, match=r"layer 'r' \(type ReLU\): out of memory for "
                                               r"a buffer \(Unable to allocate 285 TiB"):
        n.forward_range()


def test_numpy_memory_error_in_a_backward_names_the_layer(monkeypatch):
    relu = caffe.layer.layer_class("ReLU")

    def backward(self, top, propagate_down, bottom):
        raise MemoryError("Unable to allocate 2.01 GiB for an array")
    monkeypatch.setattr(relu, "backward", backward)
    n = net('force_backward: true ' + input_layer(2, 3)
            + 'layer { name: "r" type: "ReLU" bottom: "d" top: "r" }')
    n.forward_range()
    with pytest.raises(MemoryLimitError, match=r"layer 'r' \(type ReLU\): out of memory for "
                                               r"a buffer \(Unable to allocate 2.01 GiB"):
        n.backward_range()


def test_numpy_array_too_big_in_a_layer_becomes_a_memory_limit_error(monkeypatch):
    relu = caffe.layer.layer_class("ReLU")

    def forward(self, bottom, top):
        numpy.zeros((2 ** 40, 2 ** 40))
    monkeypatch.setattr(relu, "forward", forward)
    n = net(input_layer(2, 3) + 'layer { name: "r" type: "ReLU" bottom: "d" top: "r" }')
    with pytest.raises(MemoryLimitError, match=r"layer 'r' \(type ReLU\): out of memory for "
                                               r"a buffer \(array is too big"):
        n.forward_range()

    def forward(self, bottom, top):
        raise ValueError("something else")
    monkeypatch.setattr(relu, "forward", forward)
    with pytest.raises(ValueError, match="^something else$"):     # not ours to rename
        n.forward_range()


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_pooling_stride_past_the_input_does_not_size_a_buffer_by_it(pool):
    """A stride of 2**31 - 1 made the engine's padded layout (out - 1) * stride + kernel
    wide ('array is too big'); every stride past in + 2 * pad pools alike."""
    def pooled(stride):
        n = net(input_layer(2, 3, 16, 16) + (
            'force_backward: true layer { name: "p" type: "Pooling" bottom: "d" top: "p" '
            f'pooling_param {{ pool: {pool} kernel_size: 3 stride: {stride} }} }}'))
        n.blobs["d"].data[...] = numpy.random.RandomState(0).randn(2, 3, 16, 16)
        n.forward_range()
        n.blobs["p"].diff[...] = 1
        n.backward_range()
        return n.blobs["p"].data.copy(), n.blobs["d"].diff.copy()
    huge, small = pooled(2 ** 31 - 1), pooled(40)
    assert huge[0].shape == (2, 3, 2, 2)
    for a, b in zip(huge, small):
        numpy.testing.assert_array_equal(a, b)


def test_guard_runs_only_when_a_blob_is_allocated(monkeypatch):
    """Nothing per forward: the check runs when a reshape changes the element count."""
    n = net(input_layer(4, 3, 8, 8) + (
        'layer { name: "c" type: "Convolution" bottom: "d" top: "c" '
        'convolution_param { num_output: 2 kernel_size: 3 } }\n'
        'layer { name: "r" type: "ReLU" bottom: "c" top: "c" }'))
    calls = []
    monkeypatch.setattr(memory, "check_blob", lambda *a, **k: calls.append(a))
    for _ in range(3):
        n.forward_range()
    assert calls == []
    n.blobs["d"].reshape(2, 3, 8, 8)
    n.forward_range()
    assert len(calls) == 2          # the input and the convolution's top, once each


def test_small_blobs_do_not_read_the_available_memory(monkeypatch):
    monkeypatch.setattr(memory, "host_available", lambda: pytest.fail("read /proc/meminfo"))
    Blob((1000,))
    with pytest.raises(MemoryLimitError, match=r"more than the memory limit of 1 MiB"):
        monkeypatch.setattr(memory, "host_available", lambda: 1 << 20)
        Blob((1 << 20,))


def test_default_limit_is_the_memory_available():
    limit, source = memory.memory_limit()
    assert source == "the memory available" and 0 < limit
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    assert limit <= int(fields["MemAvailable"].split()[0]) * 1024 * 1.5


def test_blob_count_range_does_not_overflow():
    blob = Blob((3, 0, 5))
    assert blob.count_range(0) == 0 and blob.count_range(2) == 5
    assert isinstance(blob.count_range(0), int)


# --- fillers -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["xavier", "msra"])
def test_xavier_msra_filler_with_fan_in_0_is_refused_not_zero_division(kind):
    with pytest.raises(FillerError, match=rf"{kind} filler: the blob of shape \(4, 0\) holds no "
                                          r"values \(its fan_in is 0\)"):
        fillers.fill(Blob((4, 0)), caffe_pb2.FillerParameter(type=kind))
    with pytest.raises(FillerError, match=rf"^layer 's' \(type Scale\): scale_param.filler: "
                                          rf"{kind} filler"):
        net(input_layer(2, 0) + 'layer { name: "s" type: "Scale" bottom: "d" top: "s" '
                                f'scale_param {{ filler {{ type: "{kind}" }} }} }}')


def test_gaussian_filler_negative_std_names_layer_and_field():
    with pytest.raises(FillerError, match=r"^layer 'ip' \(type InnerProduct\): inner_product_"
                                          r"param.weight_filler: gaussian filler: std must be "
                                          r"> 0.*got std -1"):
        net(input_layer(2, 3) + ip_layer('type: "gaussian" std: -1'))


def test_uniform_filler_min_above_max_names_layer_and_field():
    with pytest.raises(FillerError, match=r"^layer 'ip' \(type InnerProduct\): inner_product_"
                                          r"param.weight_filler: uniform filler: min \(1.0\) "
                                          r"must be at most max \(0.0\)"):
        net(input_layer(2, 3) + ip_layer('type: "uniform" min: 1 max: 0'))


def test_filler_field_is_found_when_it_is_the_bias_filler():
    text = input_layer(2, 3) + (
        'layer { name: "ip" type: "InnerProduct" bottom: "d" top: "ip" inner_product_param { '
        'num_output: 4 weight_filler { type: "xavier" } bias_filler { type: "uniform" min: 2 '
        'max: -2 } } }')
    with pytest.raises(FillerError, match=r"inner_product_param.bias_filler: uniform"):
        net(text)


@pytest.mark.parametrize("filler", ['type: "uniform" min: 0 max: inf',
                                    'type: "gaussian" std: nan',
                                    'type: "gaussian" mean: inf'])
def test_non_finite_filler_values_are_refused(filler):
    with pytest.raises(FillerError, match=r"layer 'ip'.*weight_filler"):
        net(input_layer(2, 3) + ip_layer(filler))


def test_unknown_filler_type_names_the_layer():
    with pytest.raises(FillerError, match=r"^layer 'ip' \(type InnerProduct\): inner_product_"
                                          r"param.weight_filler: unknown filler type 'Softmax' "
                                          r"\(known: constant,"):
        net(input_layer(2, 3) + ip_layer('type: "Softmax"'))


def test_valid_fillers_draw_as_before():
    """The checks draw nothing: a seeded gaussian fill is what NumPy's generator gives."""
    caffe.set_random_seed(5)
    blob = Blob((3, 4))
    fillers.fill(blob, caffe_pb2.FillerParameter(type="gaussian", std=0.5))
    from pycaffe_lite import rng
    caffe.set_random_seed(5)
    want = rng.generator().normal(0.0, 0.5, (3, 4)).astype(numpy.float32)
    numpy.testing.assert_array_equal(blob.data, want)


# --- layers ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_convolution_on_a_0_channel_input_is_refused(kind):
    with pytest.raises(LayerError, match=rf"layer 'c' \(type {kind}\): bottom 'd' of shape "
                                         r"\(2, 0, 5, 5\) has 0 channels"):
        net(input_layer(2, 0, 5, 5) + f'layer {{ name: "c" type: "{kind}" bottom: "d" '
                                      'top: "c" convolution_param { num_output: 4 '
                                      'kernel_size: 3 } }')


def test_inner_product_on_an_input_of_0_values_is_refused():
    with pytest.raises(LayerError, match=r"layer 'ip' \(type InnerProduct\): bottom 'd' of shape "
                                         r"\(2, 0, 3\) has 0 inputs"):
        net(input_layer(2, 0, 3) + ip_layer('type: "constant"'))


@pytest.mark.parametrize("weight", ["nan", "inf", "-inf"])
def test_loss_weight_nan_or_inf_is_refused_naming_the_layer(weight):
    with pytest.raises(NetError, match=r"layer 'r' \(type ReLU\): loss_weight must be finite"):
        net(input_layer(2, 3) + 'layer { name: "r" type: "ReLU" bottom: "d" top: "r" '
                                f'loss_weight: {weight} }}')


def test_propagate_down_on_a_layer_without_bottoms_is_refused():
    text = ('layer { name: "d" type: "Input" top: "d" propagate_down: true '
            'input_param { shape { dim: 2 dim: 3 } } }')
    with pytest.raises(NetError, match=r"layer 'd' \(type Input\): propagate_down must be "
                                       r"given once per bottom \(0\), got 1"):
        net(text)


@pytest.mark.parametrize("layer", [
    'type: "BatchNorm"', 'type: "MVN"', 'type: "LRN"', 'type: "Softmax"',
    'type: "Pooling" pooling_param { kernel_size: 2 }', 'type: "ArgMax"'])
@pytest.mark.parametrize("dims", [(0, 3, 4, 4), (2, 0, 4, 4)])
def test_empty_batch_or_channels_run_as_caffe_loops_do_not_reshape_errors(layer, dims):
    """Found by a sweep setting each input dim of the golden nets to 0: reshape(n, -1)
    and reductions over nothing raised NumPy errors; Caffe's loops run zero times."""
    if "ArgMax" in layer and dims[1] == 0:
        pytest.skip("top_k > the 0 values: refused, as Caffe's CHECK_LE(top_k, dim)")
    n = net(input_layer(*dims) + f'layer {{ name: "l" bottom: "d" top: "t" {layer} }}',
            phase=caffe.TRAIN)
    n.forward_range()
    if "ArgMax" not in layer:
        n.param.force_backward = True
        n.records[-1].bottom_need_backward = [True]
        n.records[-1].need_backward = True
        n.backward_range()
    assert n.blobs["t"].count == 0


def test_softmax_loss_over_0_classes_and_deconvolution_of_an_empty_image_are_refused():
    with pytest.raises(LayerError, match=r"layer 'loss' \(type SoftmaxWithLoss\): bottom 'd' "
                                         r"of shape \(2, 0\) has 0 classes on axis 1"):
        net(input_layer(2, 0) + input_layer(2, name="l") + (
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "d" bottom: "l" '
            'top: "loss" }'))
    with pytest.raises(LayerError, match=r"layer 'dc' \(type Deconvolution\): bottom 'd' of "
                                         r"shape \(2, 3, 0, 4\) has an empty spatial axis"):
        net(input_layer(2, 3, 0, 4) + (
            'layer { name: "dc" type: "Deconvolution" bottom: "d" top: "dc" '
            'convolution_param { num_output: 2 kernel_size: 3 stride: 2 } }'))


def test_in_place_layer_that_changes_the_shape_is_refused():
    """Found by fuzzing: Pooling written in place (top: "data") shrank its own bottom,
    then its forward broadcast a 3x3 into a 1x1 (a NumPy ValueError)."""
    with pytest.raises(NetError, match=r"layer 'pool' \(type Pooling\) cannot run in place: "
                                       r"its top 'd' has shape \(2, 3, 3, 3\), its bottom had "
                                       r"\(2, 3, 7, 7\)"):
        net(input_layer(2, 3, 7, 7) + 'layer { name: "pool" type: "Pooling" bottom: "d" '
                                      'top: "d" pooling_param { kernel_size: 3 stride: 2 } }')
    assert net(input_layer(2, 3) + 'layer { name: "r" type: "ReLU" bottom: "d" top: "d" }'
               ).blobs["d"].shape == (2, 3)


# --- data layers -----------------------------------------------------------------------

def write_lmdb(path, datums):
    with create_db(str(path)) as db:
        for i, d in enumerate(datums):
            db.put(f"{i:08d}", d.SerializeToString())
    return str(path)


def data_net(source):
    return net(f'layer {{ name: "data" type: "Data" top: "data" top: "label" '
               f'data_param {{ source: "{source}" batch_size: 2 backend: LMDB prefetch: 0 }} }}')


GOOD = caffe_pb2.Datum(channels=1, height=2, width=2, data=bytes(4), label=1)


@pytest.mark.parametrize("bad, message", [
    (caffe_pb2.Datum(channels=1, height=-1, width=2, data=bytes(2)),
     r"record '00000002' of .*db: a negative dimension in its channels x height x width "
     r"1 x -1 x 2"),
    (caffe_pb2.Datum(channels=1000000, height=100000, width=100000, data=bytes(2)),
     r"record '00000002' of .*db: the batch of shape \(2, 1000000, 100000, 100000\) needs "
     r"142 PiB"),
])
def test_later_lmdb_datum_with_negative_or_huge_shape_names_layer_source_and_key(
        tmp_path, bad, message):
    n = data_net(write_lmdb(tmp_path / "db", [GOOD, GOOD, bad]))
    n.forward_range()
    with pytest.raises(CaffeError, match=r"^layer 'data' \(type Data\): " + message):
        n.forward_range()
    n.close()


def test_first_lmdb_datum_with_negative_height_is_refused(tmp_path):
    bad = caffe_pb2.Datum(channels=1, height=-1, width=2, data=bytes(2))
    with pytest.raises(LayerError, match=r"layer 'data' \(type Data\): record '00000000'.*"
                                         r"negative dimension"):
        data_net(write_lmdb(tmp_path / "db", [bad, GOOD]))


@pytest.mark.parametrize("label", ["99999999999999999999", "2147483648", "-2147483649"])
def test_image_data_label_beyond_int32_names_list_file_and_line(tmp_path, label):
    cv2.imwrite(str(tmp_path / "a.png"), numpy.zeros((4, 4, 3), numpy.uint8))
    source = tmp_path / "list.txt"
    source.write_text(f"a.png 1\na.png {label}\n")
    text = (f'layer {{ name: "img" type: "ImageData" top: "data" top: "label" '
            f'image_data_param {{ source: "{source}" root_folder: "{tmp_path}/" '
            f'batch_size: 2 }} }}')
    # read_image_list (io/caffe_io.py) checks the range; the layer adds its name.
    with pytest.raises(LayerError, match=rf"layer 'img' \(type ImageData\): image_data_param."
                                         rf"source: {source}:2: label {label} is out of range"):
        net(text)
    source.write_text("a.png 2147483647\na.png -2147483648\n")
    n = net(text)
    n.forward_range()
    numpy.testing.assert_array_equal(n.blobs["label"].data,
                                     numpy.float32([2 ** 31 - 1, -2 ** 31]))
    n.close()


def test_memory_limit_error_is_a_caffe_error_with_its_numbers():
    error = MemoryLimitError(3 << 30, 1 << 30, "the memory available", shape=(3, 1 << 28),
                             dtype=numpy.dtype(numpy.float32), what="blob 'x'")
    assert isinstance(error, CaffeError) and error.nbytes == 3 << 30
    assert str(error).startswith("blob 'x' of shape (3, 268435456) needs 3 GiB (3221225472 "
                                 "bytes, data and diff of float32), more than the memory "
                                 "limit of 1 GiB (1073741824 bytes: the memory available)")
    assert math.isclose(error.limit, 1 << 30)


def test_guard_on_each_backend_uses_its_memory(xp):
    """Host blobs against the host's memory, CuPy blobs against the GPU's free memory."""
    where = "the memory available" if xp is numpy else "the GPU memory free"
    limit, source = memory.memory_limit(xp)
    assert source == where and limit > 0
    with pytest.raises(MemoryLimitError, match=rf"^a blob of shape \(99999999999, 3\) needs "
                                               rf".*bytes: {where}\)"):
        Blob((99999999999, 3), xp=xp)
    caffe.set_memory_limit("1K")
    with pytest.raises(MemoryLimitError, match=r"\(1024 bytes: set by pycaffe_lite"):
        Blob((1000,), xp=xp)
    caffe.set_memory_limit(None)
    assert Blob((1000,), xp=xp).count == 1000


def test_pooling_window_copies_past_the_limit_name_the_layer(tmp_path):
    # overlapping windows copied out (the engine's gather) outgrow the input 10^6 times
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 '
                   'dim: 1 dim: 3000 dim: 3000 } } }\n'
                   'layer { name: "p" type: "Pooling" bottom: "d" top: "p" '
                   'pooling_param { pool: MAX kernel_size: 2000 stride: 1 } }')
    caffe.set_memory_limit("1G")
    try:
        n = caffe.Net(str(net), caffe.TEST)
        with pytest.raises(MemoryLimitError, match=r"^layer 'p' \(type Pooling\): the pooling "
                                                   r"windows of shape \(1, 1, 1001, 1001, 2000, "
                                                   r"2000\) needs 14.6 TiB"):
            n.forward()
    finally:
        caffe.set_memory_limit(None)
