"""Pooling and SPP against a transcription of Caffe's loops."""
import math

import numpy
import pytest
from pycaffe_lite.layers import pooling

from pycaffe_lite import rng
from pycaffe_lite.backend import to_numpy
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.testing.gradient_check import check_gradient, make_layer

FLT_MAX = float(numpy.finfo(numpy.float32).max)
FLT_MIN = float(numpy.finfo(numpy.float32).tiny)


def caffe_pool_shape(h, w, kh, kw, sh, sw, ph, pw, floor=False):
    rnd = math.floor if floor else math.ceil
    oh = rnd((h + 2 * ph - kh) / sh) + 1
    ow = rnd((w + 2 * pw - kw) / sw) + 1
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    return oh, ow


def caffe_pool(x, method, kh, kw, sh, sw, ph, pw, dy=None, u=None, phase=TRAIN, floor=False):
    """Caffe's Forward_cpu / Backward_cpu (STOCHASTIC: the CUDA kernels), element by element.

    Returns (top, mask, bottom_diff)."""
    n_, c_, h_, w_ = x.shape
    oh_, ow_ = caffe_pool_shape(h_, w_, kh, kw, sh, sw, ph, pw, floor)
    top = numpy.zeros((n_, c_, oh_, ow_))
    mask = numpy.full((n_, c_, oh_, ow_), -1.0)
    dx = numpy.zeros_like(x)
    for n, c, oh, ow in numpy.ndindex(n_, c_, oh_, ow_):
        plane = x[n, c]
        if method == "MAX":
            hs, ws = oh * sh - ph, ow * sw - pw
            he, we = min(hs + kh, h_), min(ws + kw, w_)
            hs, ws = max(hs, 0), max(ws, 0)
            best, idx = -FLT_MAX, -1
            for h in range(hs, he):
                for w in range(ws, we):
                    if plane[h, w] > best:
                        best, idx = plane[h, w], h * w_ + w
            top[n, c, oh, ow], mask[n, c, oh, ow] = best, idx
            if dy is not None and idx >= 0:
                dx[n, c, idx // w_, idx % w_] += dy[n, c, oh, ow]
        elif method == "AVE":
            hs, ws = oh * sh - ph, ow * sw - pw
            he, we = min(hs + kh, h_ + ph), min(ws + kw, w_ + pw)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h_), min(we, w_)
            top[n, c, oh, ow] = plane[hs:he, ws:we].sum() / size
            if dy is not None:
                dx[n, c, hs:he, ws:we] += dy[n, c, oh, ow] / size
        else:
            hs, ws = oh * sh, ow * sw
            he, we = min(hs + kh, h_), min(ws + kw, w_)
            window = plane[hs:he, ws:we].ravel()
            if phase == TEST:
                top[n, c, oh, ow] = (window ** 2).sum() / (FLT_MIN + window.sum())
                continue
            thres = u[n, c, oh, ow] * window.sum()
            running = numpy.cumsum(window)
            k = int(numpy.argmax(running >= thres))
            top[n, c, oh, ow] = window[k]
            if dy is not None:
                dx[n, c, hs + k // (we - ws), ws + k % (we - ws)] += dy[n, c, oh, ow]
    return top, mask, dx


def _pool_param(method, kernel=None, stride=None, pad=None, extra=""):
    parts = [f"pool: {method}"]
    for name, value in (("kernel", kernel), ("stride", stride), ("pad", pad)):
        if value is None:
            continue
        key = "kernel_size" if name == "kernel" else name
        parts.append(f"{key}_h: {value[0]} {key}_w: {value[1]}".replace("kernel_size_", "kernel_"))
    return f'type: "Pooling" pooling_param {{ {" ".join(parts)} {extra} }}'


def _distinct(*shape, seed=0):
    """Values far apart (no ties, safe for finite differences)."""
    rs = numpy.random.RandomState(seed)
    return rs.permutation(int(numpy.prod(shape))).reshape(shape) * 0.01 - 0.3


# (input shape, kernel, stride, pad): the offsets loop (small kernels) and the
# windows loop (kernel count > output count) both appear.
GEOMETRIES = [
    ((2, 3, 7, 7), (3, 3), (2, 2), (0, 0)),
    ((2, 3, 8, 8), (3, 3), (2, 2), (0, 0)),      # ceil: partial last window
    ((2, 3, 7, 7), (3, 3), (2, 2), (1, 1)),
    ((2, 3, 5, 5), (3, 3), (3, 3), (1, 1)),      # last window dropped
    ((2, 2, 7, 8), (2, 3), (2, 2), (0, 0)),
    ((2, 2, 8, 9), (3, 2), (1, 3), (1, 1)),
    ((2, 2, 5, 6), (4, 5), (1, 2), (2, 1)),
    ((1, 2, 9, 9), (5, 5), (4, 4), (2, 2)),      # windows loop
    ((2, 2, 6, 6), (2, 2), (2, 2), (0, 0)),
    ((1, 2, 5, 7), (2, 1), (3, 3), (0, 0)),      # stride > kernel
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("shape,kernel,stride,pad", GEOMETRIES)
def test_pooling_matches_caffe_loops(method, shape, kernel, stride, pad, xp):
    x = numpy.random.RandomState(1).standard_normal(shape)
    dy_seed = numpy.random.RandomState(2)
    lp = _pool_param(method, kernel, stride, pad) + (' top: "y" top: "mask"' if method == "MAX" else "")
    layer, bottom, top = make_layer(lp, [x], xp=xp)
    layer.forward(bottom, top)
    dy = dy_seed.standard_normal(top[0].shape)
    expected, mask, dx = caffe_pool(x, method, *kernel, *stride, *pad, dy=dy)
    assert top[0].shape == expected.shape
    numpy.testing.assert_allclose(to_numpy(top[0].data), expected, rtol=1e-12, atol=1e-12)
    if method == "MAX":
        numpy.testing.assert_array_equal(to_numpy(top[1].data), mask)
    top[0].diff[...] = xp.asarray(dy)
    layer.backward(top, [True], bottom)
    numpy.testing.assert_allclose(to_numpy(bottom[0].diff), dx, rtol=1e-12, atol=1e-12)


def test_max_ties_go_to_first_in_row_major_order():
    x = numpy.random.RandomState(3).randint(0, 3, size=(2, 3, 9, 9)).astype(float)
    for kernel, stride, pad in (((3, 3), (2, 2), (1, 1)), ((4, 4), (1, 1), (0, 0)),
                                ((9, 9), (1, 1), (0, 0))):
        layer, bottom, top = make_layer(_pool_param("MAX", kernel, stride, pad) + ' top: "y" top: "m"',
                                        [x])
        layer.forward(bottom, top)
        dy = numpy.random.RandomState(4).standard_normal(top[0].shape)
        _, mask, dx = caffe_pool(x, "MAX", *kernel, *stride, *pad, dy=dy)
        numpy.testing.assert_array_equal(top[1].data, mask)
        top[0].diff[...] = dy
        layer.backward(top, [True], bottom)
        numpy.testing.assert_allclose(bottom[0].diff, dx, rtol=1e-12)


def test_max_without_real_values_gives_minus_flt_max():
    x = numpy.full((1, 1, 4, 4), -numpy.inf)
    x[0, 0, 3, 3] = 1.0
    layer, bottom, top = make_layer(_pool_param("MAX", (2, 2), (2, 2)) + ' top: "y" top: "m"', [x])
    layer.forward(bottom, top)
    numpy.testing.assert_array_equal(top[0].data[0, 0], [[-FLT_MAX, -FLT_MAX], [-FLT_MAX, 1.0]])
    numpy.testing.assert_array_equal(top[1].data[0, 0], [[-1, -1], [-1, 15]])


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method):
    x = numpy.random.RandomState(5).standard_normal((2, 3, 5, 6))
    layer, bottom, top = make_layer(f'type: "Pooling" pooling_param {{ pool: {method} '
                                    f'global_pooling: true }}', [x])
    layer.forward(bottom, top)
    assert top[0].shape == (2, 3, 1, 1)
    reduce = numpy.max if method == "MAX" else numpy.mean
    numpy.testing.assert_allclose(top[0].data[..., 0, 0], reduce(x, axis=(2, 3)), rtol=1e-12)
    # A new bottom size resizes the kernel (Caffe's Reshape).
    bottom[0].reshape((2, 3, 4, 4))
    bottom[0].data[...] = x[:, :, :4, :4]
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    numpy.testing.assert_allclose(top[0].data[..., 0, 0], reduce(x[:, :, :4, :4], axis=(2, 3)))


def test_floor_round_mode():
    x = numpy.random.RandomState(6).standard_normal((1, 2, 8, 8))
    layer, bottom, top = make_layer(_pool_param("AVE", (3, 3), (2, 2), extra="round_mode: FLOOR"), [x])
    layer.forward(bottom, top)
    expected, _, _ = caffe_pool(x, "AVE", 3, 3, 2, 2, 0, 0, floor=True)
    assert top[0].shape == (1, 2, 3, 3)
    numpy.testing.assert_allclose(top[0].data, expected, rtol=1e-12)


@pytest.mark.parametrize("shape,kernel,stride", [((2, 3, 7, 7), (3, 3), (2, 2)),
                                                 ((2, 2, 5, 6), (2, 3), (2, 1)),
                                                 ((1, 2, 6, 6), (6, 6), (1, 1))])
def test_stochastic_matches_caffe_kernels(shape, kernel, stride, xp):
    x = numpy.random.RandomState(7).uniform(0, 1, shape)
    x[0, 0, :3, :3] = 0                                          # all-zero windows
    lp = _pool_param("STOCHASTIC", kernel, stride)
    rng.set_random_seed(11)
    layer, bottom, top = make_layer(lp, [x], phase=TRAIN, xp=xp)
    rng.set_random_seed(12)
    layer.forward(bottom, top)
    rng.set_random_seed(12)
    u = rng.generator().random(top[0].shape)
    dy = numpy.random.RandomState(8).standard_normal(top[0].shape)
    expected, _, dx = caffe_pool(x, "STOCHASTIC", *kernel, *stride, 0, 0, dy=dy, u=u)
    numpy.testing.assert_allclose(to_numpy(top[0].data), expected, rtol=1e-12)
    top[0].diff[...] = xp.asarray(dy)
    layer.backward(top, [True], bottom)
    numpy.testing.assert_allclose(to_numpy(bottom[0].diff), dx, rtol=1e-12)

    test_layer, bottom, top = make_layer(lp, [x], phase=TEST, xp=xp)
    test_layer.forward(bottom, top)
    expected, _, _ = caffe_pool(x, "STOCHASTIC", *kernel, *stride, 0, 0, phase=TEST)
    numpy.testing.assert_allclose(to_numpy(top[0].data), expected, rtol=1e-12)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("shape,kernel,stride,pad", [GEOMETRIES[i] for i in (0, 2, 3, 5, 7)])
def test_pooling_gradient(method, shape, kernel, stride, pad, xp):
    layer, bottom, top = make_layer(_pool_param(method, kernel, stride, pad), [_distinct(*shape)], xp=xp)
    check_gradient(layer, bottom, top, max_elements=80)


def test_stochastic_test_phase_gradient():
    """Caffe has no TEST backward; ours is the derivative of sum(x^2)/sum(x)."""
    x = numpy.random.RandomState(9).uniform(0.5, 1.5, (2, 2, 5, 5))
    for kernel, stride in (((2, 2), (2, 2)), ((5, 5), (1, 1))):
        layer, bottom, top = make_layer(_pool_param("STOCHASTIC", kernel, stride), [x], phase=TEST)
        check_gradient(layer, bottom, top, max_elements=50)


def test_max_test_phase_backward_matches_train():
    """TEST skips the winners in forward and finds them again in backward."""
    x = numpy.random.RandomState(10).standard_normal((2, 3, 7, 7))
    diffs = []
    for phase in (TRAIN, TEST):
        layer, bottom, top = make_layer(_pool_param("MAX", (3, 3), (2, 2), (1, 1)), [x], phase=phase)
        layer.forward(bottom, top)
        top[0].data[...] = 0                          # a following in-place layer may do this
        top[0].diff[...] = 1.5
        layer.backward(top, [True], bottom)
        diffs.append(bottom[0].diff.copy())
    numpy.testing.assert_array_equal(diffs[0], diffs[1])


@pytest.mark.parametrize("lp,message", [
    ('pool: MAX global_pooling: true kernel_size: 2', "global_pooling"),
    ('pool: MAX kernel_size: 2 kernel_h: 2 kernel_w: 2', "not both"),
    ('pool: MAX kernel_h: 2', "kernel_h and kernel_w"),
    ('pool: MAX kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1', "not both"),
    ('pool: MAX kernel_size: 2 pad: 2', "smaller than kernel"),
    ('pool: STOCHASTIC kernel_size: 3 pad: 1', "padding"),
    ('pool: MAX global_pooling: true stride: 2', "stride = 1"),
    ('pool: MAX kernel_size: 9', "larger than the padded input"),
])
def test_pooling_parameter_errors(lp, message):
    with pytest.raises(CaffeError, match=message):
        make_layer(f'type: "Pooling" pooling_param {{ {lp} }}', [numpy.zeros((1, 1, 5, 5))])


def test_mask_top_only_for_max():
    with pytest.raises(CaffeError, match="mask"):
        make_layer(_pool_param("AVE", (2, 2)) + ' top: "a" top: "b"', [numpy.zeros((1, 1, 4, 4))])


def test_pooling_needs_4d():
    with pytest.raises(CaffeError, match="4 axes"):
        make_layer(_pool_param("MAX", (2, 2)), [numpy.zeros((1, 4, 4))])


# --- SPP ------------------------------------------------------------------------
def spp_reference(x, height, method, dy=None):
    """Pooling per level (Caffe's GetPoolingParam), flattened and concatenated."""
    tops, dx = [], numpy.zeros_like(x)
    offset = 0
    for level in range(height):
        bins = 2 ** level
        kh, kw = (math.ceil(s / bins) for s in x.shape[2:])
        ph, pw = ((k * bins - s + 1) // 2 for k, s in zip((kh, kw), x.shape[2:]))
        oh, ow = caffe_pool_shape(*x.shape[2:], kh, kw, kh, kw, ph, pw)
        size = x.shape[1] * oh * ow
        part_dy = None if dy is None else dy[:, offset:offset + size].reshape(x.shape[:2] + (oh, ow))
        top, _, part_dx = caffe_pool(x, method, kh, kw, kh, kw, ph, pw, dy=part_dy)
        tops.append(top.reshape(x.shape[0], -1))
        dx += part_dx
        offset += size
    return numpy.concatenate(tops, axis=1), dx


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("shape,height", [((2, 3, 13, 13), 3), ((2, 2, 7, 9), 2), ((1, 2, 8, 8), 4)])
def test_spp(method, shape, height, xp):
    x = _distinct(*shape)
    layer, bottom, top = make_layer(f'type: "SPP" spp_param {{ pyramid_height: {height} pool: {method} }}',
                                    [x], xp=xp)
    dy = numpy.random.RandomState(12).standard_normal(top[0].shape)
    expected, dx = spp_reference(x, height, method, dy)
    assert top[0].shape == expected.shape
    layer.forward(bottom, top)
    numpy.testing.assert_allclose(to_numpy(top[0].data), expected, rtol=1e-12)
    top[0].diff[...] = xp.asarray(dy)
    layer.backward(top, [True], bottom)
    numpy.testing.assert_allclose(to_numpy(bottom[0].diff), dx, rtol=1e-12, atol=1e-12)
    check_gradient(layer, bottom, top, max_elements=40)


def test_spp_height_one_keeps_4d_top():
    x = numpy.random.RandomState(13).standard_normal((2, 3, 6, 5))
    layer, bottom, top = make_layer('type: "SPP" spp_param { pyramid_height: 1 }', [x])
    layer.forward(bottom, top)
    assert top[0].shape == (2, 3, 1, 1)
    numpy.testing.assert_allclose(top[0].data[..., 0, 0], x.max(axis=(2, 3)))


def test_spp_rejects_too_small_input():
    # 5 rows in 4 bins: kernel 2, pad 2 -- Caffe's pooling refuses pad >= kernel.
    with pytest.raises(CaffeError, match="too small"):
        make_layer('type: "SPP" spp_param { pyramid_height: 3 }', [numpy.zeros((1, 1, 5, 5))])


@pytest.mark.parametrize("type_,alias", [("Pooling", "POOLING"), ("SPP", "SPP")])
def test_v1_aliases(type_, alias):
    from pycaffe_lite.layer import layer_class
    assert layer_class(alias) is layer_class(type_)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_scratch_buffers_follow_batch_size(method):
    """The layout and result buffers kept from call to call are resized with the batch."""
    lp = _pool_param(method, (3, 3), (2, 2), (1, 1))
    x = numpy.random.RandomState(3).standard_normal((3, 2, 7, 7))
    layer, bottom, top = make_layer(lp, [x[:2]])
    for n in (2, 3, 1):
        bottom[0].reshape((n, 2, 7, 7))
        bottom[0].data[...] = x[:n]
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        expected = caffe_pool(x[:n], method, 3, 3, 2, 2, 1, 1)[0]
        numpy.testing.assert_allclose(top[0].data, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("n_threads,part_elements", [(1, 1 << 20), (3, 1 << 20), (2, 100)])
def test_batch_parts_on_threads_match_caffe(method, n_threads, part_elements, threads,
                                            monkeypatch):
    """The batch pooled in parts (one per thread, or smaller parts that fit the
    cache) on the thread pool: Caffe's values, mask and gradient."""
    threads(n_threads)
    monkeypatch.setattr(pooling, "_PART_ELEMENTS", part_elements)
    x = numpy.random.RandomState(4).standard_normal((5, 3, 7, 7))
    dy = numpy.random.RandomState(5).standard_normal((5, 3, 3, 3))
    lp = _pool_param(method, (3, 3), (2, 2), (0, 0)) + (' top: "y" top: "mask"'
                                                        if method == "MAX" else "")
    layer, bottom, top = make_layer(lp, [x])
    expected_parts = {(1, 1 << 20): 1, (3, 1 << 20): 3, (2, 100): 5}[n_threads, part_elements]
    assert len(layer.parts) == expected_parts
    layer.forward(bottom, top)
    expected, mask, dx = caffe_pool(x, method, 3, 3, 2, 2, 0, 0, dy=dy)
    numpy.testing.assert_allclose(top[0].data, expected, rtol=1e-12, atol=1e-12)
    if method == "MAX":
        numpy.testing.assert_array_equal(top[1].data, mask)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    numpy.testing.assert_allclose(bottom[0].diff, dx, rtol=1e-12, atol=1e-12)
