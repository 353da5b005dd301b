"""Softmax, BatchNorm, MVN, LRN, Scale, Bias: gradients and naive references.

Golden data from real Caffe is checked by tests/test_golden.py; the value
tests here pin down what those cases do not (other params, in place, errors)
against references written with plain loops.
"""
import itertools
import math

import numpy
import pytest
from google.protobuf import text_format

from pycaffe_lite.backend import gpu_available
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.layers import normalization
from pycaffe_lite.layers.normalization import softmax
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.testing.gradient_check import check_gradient, make_layer


def randn(*shape, seed=0):
    return numpy.random.RandomState(seed).standard_normal(shape)


def run(param, bottoms, top_diffs=None, phase=TRAIN, in_place=False, dtype=numpy.float64,
        xp=numpy, blobs=None):
    """Forward (and backward when ``top_diffs``); returns (layer, bottom, top)."""
    layer, bottom, top = make_layer(param, bottoms, phase=phase, dtype=dtype, xp=xp)
    if in_place:
        top = [bottom[0]]
    for blob, value in zip(layer.blobs, blobs or []):
        blob.data[...] = xp.asarray(value, dtype=dtype)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    if top_diffs is not None:
        for t, d in zip(top, top_diffs):
            t.diff[...] = xp.asarray(d, dtype=dtype)
        layer.backward(top, [True] * len(bottom), bottom)
    return layer, bottom, top


def to_np(array):
    return array.get() if hasattr(array, "get") else numpy.asarray(array)


# --- Softmax --------------------------------------------------------------

def naive_softmax(x, axis):
    y = numpy.empty_like(x)
    moved = numpy.moveaxis(x, axis, -1)
    out = numpy.moveaxis(y, axis, -1)
    for idx in numpy.ndindex(moved.shape[:-1]):
        row = moved[idx]
        e = [math.exp(v - max(row)) for v in row]
        out[idx] = [v / sum(e) for v in e]
    return y


@pytest.mark.parametrize("axis,shape", [(1, (2, 4, 3)), (-1, (3, 5)), (0, (4, 2, 2)),
                                        (2, (2, 3, 4, 2))])
def test_softmax_values_and_gradient(axis, shape):
    x = randn(*shape) * 3
    layer, bottom, top = make_layer(f"type: 'Softmax' softmax_param {{ axis: {axis} }}", [x])
    layer.forward(bottom, top)
    numpy.testing.assert_allclose(top[0].data, naive_softmax(x, axis), rtol=1e-12)
    check_gradient(layer, bottom, top)


def test_softmax_function_is_stable():
    x = numpy.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    y = softmax(x, 1)
    numpy.testing.assert_allclose(y, naive_softmax(x, 1))
    numpy.testing.assert_allclose(y.sum(axis=1), 1)


def test_softmax_v1_alias_and_in_place():
    x = randn(2, 3, 4)
    dy = randn(2, 3, 4, seed=1)
    _, b_ref, t_ref = run("type: 'SOFTMAX'", [x], [dy])
    _, b_in, _ = run("type: 'Softmax'", [x], [dy], in_place=True)
    numpy.testing.assert_allclose(b_in[0].data, t_ref[0].data, rtol=1e-12)
    numpy.testing.assert_allclose(b_in[0].diff, b_ref[0].diff, rtol=1e-12)


# --- BatchNorm ------------------------------------------------------------

def naive_batch_norm(x, eps):
    """Per-channel (axis 1) normalisation with biased variance; mean, var (biased)."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    y = numpy.empty_like(flat)
    means, variances = [], []
    for ch in range(c):
        values = [flat[i, ch, j] for i in range(n) for j in range(flat.shape[2])]
        mu = sum(values) / len(values)
        var = sum((v - mu) ** 2 for v in values) / len(values)
        y[:, ch] = (flat[:, ch] - mu) / math.sqrt(var + eps)
        means.append(mu)
        variances.append(var)
    return y.reshape(x.shape), numpy.array(means), numpy.array(variances)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5), (2, 2, 3, 2, 2)])
def test_batch_norm_train_values_and_running_statistics(shape):
    x = randn(*shape) * 2 + 1
    init = [randn(shape[1], seed=3), numpy.abs(randn(shape[1], seed=4)), [2.0]]
    layer, _, top = run("type: 'BatchNorm' batch_norm_param { moving_average_fraction: 0.8 "
                        "eps: 0.01 }", [x], blobs=init)
    y, mu, var = naive_batch_norm(x, 0.01)
    numpy.testing.assert_allclose(top[0].data, y, rtol=1e-10, atol=1e-12)
    m = x.size / shape[1]
    maf = float(numpy.float32(0.8))  # the proto field is a float
    numpy.testing.assert_allclose(layer.blobs[2].data, [maf * 2 + 1])
    numpy.testing.assert_allclose(layer.blobs[0].data, maf * init[0] + mu, rtol=1e-10)
    numpy.testing.assert_allclose(layer.blobs[1].data, maf * init[1] + m / (m - 1) * var,
                                  rtol=1e-10)


def test_batch_norm_global_statistics_and_zero_scale_factor():
    x = randn(2, 3, 2, 2)
    mean, var = randn(3, seed=1), numpy.abs(randn(3, seed=2)) + 0.5
    _, _, top = run("type: 'BatchNorm'", [x], phase=TEST, blobs=[mean * 4, var * 4, [4.0]])
    expected = (x - mean[:, None, None]) / numpy.sqrt(var[:, None, None] + 1e-5)
    numpy.testing.assert_allclose(top[0].data, expected, rtol=1e-6)
    # s == 0: the statistics read as zero, whatever the other blobs hold.
    _, _, top = run("type: 'BatchNorm'", [x], phase=TEST, blobs=[mean, var, [0.0]])
    numpy.testing.assert_allclose(top[0].data, x / numpy.sqrt(1e-5), rtol=1e-6)


@pytest.mark.parametrize("phase,flag,global_stats", [
    (TRAIN, "", False), (TEST, "", True), (TRAIN, "use_global_stats: true", True),
    (TEST, "use_global_stats: false", False)])
def test_batch_norm_use_global_stats_default_follows_phase(phase, flag, global_stats):
    layer, _, _ = run(f"type: 'BatchNorm' batch_norm_param {{ {flag} }}", [randn(3, 2)],
                      phase=phase)
    assert layer.use_global_stats is global_stats
    # Batch statistics update the blobs in forward; global statistics leave them alone.
    assert float(layer.blobs[2].data[0]) == (0.0 if global_stats else 1.0)


def test_batch_norm_statistics_are_not_learnable():
    layer, _, _ = make_layer("type: 'BatchNorm'", [randn(2, 3)])
    assert [b.shape for b in layer.blobs] == [(3,), (3,), (1,)]
    assert [p.lr_mult for p in layer.param.param] == [0, 0, 0]
    layer, _, _ = make_layer("type: 'BatchNorm' param { lr_mult: 0 decay_mult: 0 }",
                             [randn(2, 3)])
    assert [(p.lr_mult, p.decay_mult) for p in layer.param.param] == [(0, 0), (0, 1), (0, 1)]
    with pytest.raises(CaffeError, match="lr_mult"):
        make_layer("type: 'BatchNorm' param { lr_mult: 0 } param { lr_mult: 1 }", [randn(2, 3)])


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 3, 2)])
@pytest.mark.parametrize("global_stats", [False, True])
def test_batch_norm_gradient(shape, global_stats):
    flag = "true" if global_stats else "false"
    layer, bottom, top = make_layer(
        f"type: 'BatchNorm' batch_norm_param {{ use_global_stats: {flag} eps: 0.001 }}",
        [randn(*shape)])
    layer.blobs[0].data[...] = randn(shape[1], seed=5)
    layer.blobs[1].data[...] = numpy.abs(randn(shape[1], seed=6)) + 0.1
    layer.blobs[2].data[...] = 1.5
    check_gradient(layer, bottom, top, check_params=False)


def test_batch_norm_then_scale_in_place_matches_out_of_place():
    x, dy = randn(2, 3, 2, 2), randn(2, 3, 2, 2, seed=1)
    gamma, beta = randn(3, seed=2), randn(3, seed=3)
    bn = "type: 'BatchNorm'"
    scale = "type: 'Scale' scale_param { bias_term: true }"
    _, _, t_bn = run(bn, [x])
    layer_s, b_s, t_s = run(scale, [t_bn[0].data], [dy], blobs=[gamma, beta])
    _, b_bn, _ = run(bn, [x], [b_s[0].diff])
    # The same chain in place on one blob.
    bn_l, blob, _ = make_layer(bn, [x])
    sc_l, _, _ = make_layer(scale, [x])
    sc_l.blobs[0].data[...], sc_l.blobs[1].data[...] = gamma, beta
    for layer in (bn_l, sc_l):
        layer.reshape(blob, blob)
        layer.forward(blob, blob)
    numpy.testing.assert_allclose(blob[0].data, t_s[0].data, rtol=1e-12)
    blob[0].diff[...] = dy
    for layer in (sc_l, bn_l):
        layer.backward(blob, [True], blob)
    numpy.testing.assert_allclose(blob[0].diff, b_bn[0].diff, rtol=1e-10, atol=1e-12)
    for mine, ref in zip(sc_l.blobs, layer_s.blobs):
        numpy.testing.assert_allclose(mine.diff, ref.diff, rtol=1e-12)


def test_batch_norm_rejects_channel_change():
    layer, bottom, top = make_layer("type: 'BatchNorm'", [randn(2, 3, 2)])
    bottom[0].reshape(2, 4, 2)
    with pytest.raises(CaffeError, match="3 channels"):
        layer.reshape(bottom, top)


# --- MVN ------------------------------------------------------------------

def naive_mvn(x, across_channels, normalize_variance, eps):
    rows = x.reshape(x.shape[0], -1) if across_channels else x.reshape(x.shape[0] * x.shape[1],
                                                                        -1)
    y = numpy.empty_like(rows)
    for r, row in enumerate(rows):
        mu = sum(row) / len(row)
        centred = [v - mu for v in row]
        if normalize_variance:
            std = math.sqrt(sum(v * v for v in centred) / len(row))
            centred = [v / (std + eps) for v in centred]  # eps on the std, as Caffe
        y[r] = centred
    return y.reshape(x.shape)


@pytest.mark.parametrize("across,variance,eps", [(False, True, 1e-9), (True, True, 0.5),
                                                 (False, False, 1e-9), (True, False, 1e-9)])
def test_mvn_values_and_gradient(across, variance, eps):
    x = randn(2, 3, 3, 2) * 2 + 1
    param = (f"type: 'MVN' mvn_param {{ across_channels: {str(across).lower()} "
             f"normalize_variance: {str(variance).lower()} eps: {eps} }}")
    layer, bottom, top = make_layer(param, [x])
    layer.forward(bottom, top)
    numpy.testing.assert_allclose(top[0].data, naive_mvn(x, across, variance, eps), rtol=1e-10,
                                  atol=1e-12)
    if eps < 1e-6:  # Caffe's backward is the exact gradient only for eps -> 0
        check_gradient(layer, bottom, top)


def test_mvn_rejects_five_axes():
    with pytest.raises(CaffeError, match="1 to 4 axes"):
        make_layer("type: 'MVN'", [randn(1, 2, 2, 2, 2)])


# --- LRN ------------------------------------------------------------------

def naive_lrn(x, size, alpha, beta, k, within):
    n, c, h, w = x.shape
    pad = (size - 1) // 2
    y = numpy.empty_like(x)
    for i, ch, r, col in itertools.product(range(n), range(c), range(h), range(w)):
        if within:
            # Caffe: 1 + alpha * AVE-pool of x^2 over a zero-padded size x size window.
            total = sum(x[i, ch, rr, cc] ** 2
                        for rr in range(r - pad, r + pad + 1)
                        for cc in range(col - pad, col + pad + 1)
                        if 0 <= rr < h and 0 <= cc < w)
            base = 1 + alpha * total / size ** 2
        else:
            total = sum(x[i, cc, r, col] ** 2 for cc in range(ch - pad, ch + pad + 1)
                        if 0 <= cc < c)
            base = k + alpha / size * total
        y[i, ch, r, col] = x[i, ch, r, col] * base ** -beta
    return y


LRN_CASES = [
    ("ACROSS_CHANNELS", 5, 0.3, 0.75, 2.0, (2, 6, 3, 2)),
    ("ACROSS_CHANNELS", 3, 1.0, 0.5, 1.0, (1, 2, 2, 3)),   # window wider than C/2
    ("ACROSS_CHANNELS", 1, 0.5, 1.0, 1.5, (1, 3, 2, 2)),
    ("WITHIN_CHANNEL", 3, 0.4, 0.75, 1.0, (2, 2, 4, 5)),
    ("WITHIN_CHANNEL", 5, 2.0, 0.6, 3.0, (1, 2, 3, 3)),    # k is ignored within channel
]


@pytest.mark.parametrize("region,size,alpha,beta,k,shape", LRN_CASES)
def test_lrn_values_and_gradient(region, size, alpha, beta, k, shape):
    x = randn(*shape)
    param = (f"type: 'LRN' lrn_param {{ norm_region: {region} local_size: {size} "
             f"alpha: {alpha} beta: {beta} k: {k} }}")
    layer, bottom, top = make_layer(param, [x])
    layer.forward(bottom, top)
    # The proto stores float32 params: the reference uses the same values.
    f32 = lambda v: float(numpy.float32(v))  # noqa: E731
    expected = naive_lrn(x, size, f32(alpha), f32(beta), f32(k), region == "WITHIN_CHANNEL")
    numpy.testing.assert_allclose(top[0].data, expected, rtol=1e-10)
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn_sample_chunks_do_not_change_results(monkeypatch, threads, region):
    """Forward and backward a sample (or two) at a time, as on a large batch, in place
    or not, on two threads."""
    threads(2)
    monkeypatch.setattr(normalization, "_LRN_CHUNK", 100)
    x, dy = randn(3, 4, 3, 5), randn(3, 4, 3, 5, seed=1)
    param = f"type: 'LRN' lrn_param {{ norm_region: {region} local_size: 3 alpha: 0.7 }}"
    expected = naive_lrn(x, 3, float(numpy.float32(0.7)), 0.75, 1.0, region == "WITHIN_CHANNEL")
    for in_place in (False, True):
        layer, bottom, top = run(param, [x], [dy], in_place=in_place)
        numpy.testing.assert_allclose(top[0].data, expected, rtol=1e-10)
    monkeypatch.setattr(normalization, "_LRN_CHUNK", 1 << 18)
    _, ref, _ = run(param, [x], [dy])
    numpy.testing.assert_array_equal(bottom[0].diff, ref[0].diff)


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn_in_place_and_v1_alias(region):
    x, dy = randn(2, 4, 3, 3), randn(2, 4, 3, 3, seed=1)
    param = f"type: 'LRN' lrn_param {{ norm_region: {region} local_size: 3 alpha: 0.7 }}"
    _, b_ref, t_ref = run(param, [x], [dy])
    _, b_in, _ = run(param, [x], [dy], in_place=True)
    numpy.testing.assert_allclose(b_in[0].data, t_ref[0].data, rtol=1e-12)
    numpy.testing.assert_allclose(b_in[0].diff, b_ref[0].diff, rtol=1e-12)


def test_lrn_errors():
    with pytest.raises(CaffeError, match="odd"):
        make_layer("type: 'LRN' lrn_param { local_size: 4 }", [randn(1, 4, 2, 2)])
    with pytest.raises(CaffeError, match="4 axes"):
        make_layer("type: 'LRN'", [randn(2, 4, 2)])


# --- Scale and Bias -----------------------------------------------------------

def naive_broadcast(x, operand, axis, op):
    """Apply ``op(x[idx], operand[idx[axis:axis+k]])`` element by element."""
    k = operand.ndim
    axis = 0 if k == 0 else axis % x.ndim
    y = numpy.empty_like(x)
    for idx in numpy.ndindex(x.shape):
        y[idx] = op(x[idx], operand[idx[axis:axis + k]])
    return y


SCALE_CASES = [  # (scale_param text, x shape, scale shape)
    ("", (2, 3, 4), (3,)),
    ("axis: 0 num_axes: 2", (2, 3, 4), (2, 3)),
    ("axis: -1", (2, 3, 4), (4,)),
    ("axis: 1 num_axes: -1", (2, 3, 2), (3, 2)),
    ("num_axes: 0", (2, 3), ()),
    ("axis: 2 num_axes: 0", (2, 3, 2), ()),
]


@pytest.mark.parametrize("text,shape,scale_shape", SCALE_CASES)
@pytest.mark.parametrize("bias_term", [False, True])
def test_scale_learned_values_and_gradient(text, shape, scale_shape, bias_term):
    param = (f"type: 'Scale' scale_param {{ {text} bias_term: {str(bias_term).lower()} "
             "filler { type: 'gaussian' std: 1 } bias_filler { type: 'uniform' min: -1 max: 1 }}")
    layer, bottom, top = make_layer(param, [randn(*shape)])
    assert [b.shape for b in layer.blobs] == [scale_shape] * (2 if bias_term else 1)
    layer.forward(bottom, top)
    x, a = bottom[0].data, layer.blobs[0].data
    axis = text_format.Parse(f"{text}", caffe_pb2.ScaleParameter()).axis
    expected = naive_broadcast(x, a, axis, lambda u, v: u * v)
    if bias_term:
        expected = naive_broadcast(expected, layer.blobs[1].data, axis, lambda u, v: u + v)
    numpy.testing.assert_allclose(top[0].data, expected, rtol=1e-12)
    check_gradient(layer, bottom, top)


def test_scale_default_fillers_give_identity():
    x = randn(2, 3, 2)
    layer, _, top = run("type: 'Scale' scale_param { bias_term: true }", [x])
    numpy.testing.assert_array_equal(layer.blobs[0].data, numpy.ones(3))
    numpy.testing.assert_array_equal(layer.blobs[1].data, numpy.zeros(3))
    numpy.testing.assert_array_equal(top[0].data, x)


@pytest.mark.parametrize("axis,scale_shape,bias_term", [
    (1, (3,), False), (0, (2, 3), True), (-2, (4,), True), (1, (3, 4, 2), False),
    (1, (), True)])
def test_scale_two_bottoms_values_and_gradient(axis, scale_shape, bias_term):
    x, a = randn(2, 3, 4, 2), randn(*scale_shape, seed=1)
    param = (f"type: 'Scale' scale_param {{ axis: {axis} bias_term: {str(bias_term).lower()} "
             "bias_filler { type: 'gaussian' std: 1 } }")
    layer, bottom, top = make_layer(param, [x, a])
    assert [b.shape for b in layer.blobs] == ([scale_shape] if bias_term else [])
    layer.forward(bottom, top)
    expected = naive_broadcast(x, a, axis, lambda u, v: u * v)
    if bias_term:
        expected = naive_broadcast(expected, layer.blobs[0].data, axis, lambda u, v: u + v)
    numpy.testing.assert_allclose(top[0].data, expected, rtol=1e-12)
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("param,bottoms", [
    ("type: 'Scale' scale_param { bias_term: true filler { type: 'gaussian' } "
     "bias_filler { type: 'gaussian' } }", [(2, 3, 2)]),
    ("type: 'Scale' scale_param { axis: 2 }", [(2, 3, 2), (2,)]),
    ("type: 'Bias' bias_param { filler { type: 'gaussian' } }", [(2, 3, 2)]),
    ("type: 'Bias' bias_param { axis: 0 }", [(2, 3, 2), (2, 3)]),
])
def test_scale_and_bias_in_place_match_out_of_place(param, bottoms):
    arrays = [randn(*s, seed=i) for i, s in enumerate(bottoms)]
    dy = randn(*bottoms[0], seed=9)
    ref_layer, b_ref, t_ref = run(param, arrays, [dy])
    blobs = [b.data.copy() for b in ref_layer.blobs]
    layer, b_in, _ = run(param, arrays, [dy], in_place=True, blobs=blobs)
    numpy.testing.assert_allclose(b_in[0].data, t_ref[0].data, rtol=1e-12)
    for mine, ref in zip(b_in, b_ref):
        numpy.testing.assert_allclose(mine.diff, ref.diff, rtol=1e-12)
    for mine, ref in zip(layer.blobs, ref_layer.blobs):
        numpy.testing.assert_allclose(mine.diff, ref.diff, rtol=1e-12)


def test_scale_and_bias_param_diffs_accumulate():
    x, dy = randn(2, 3), randn(2, 3, seed=1)
    for param in ("type: 'Scale' scale_param { bias_term: true }", "type: 'Bias'"):
        layer, bottom, top = run(param, [x], [dy])
        first = [b.diff.copy() for b in layer.blobs]
        layer.backward(top, [True], bottom)
        for blob, once in zip(layer.blobs, first):
            numpy.testing.assert_allclose(blob.diff, 2 * once)


BIAS_CASES = [  # (bias_param text, x shape, bias shape)
    ("", (2, 3, 4), (3,)),
    ("axis: 0 num_axes: -1", (2, 3), (2, 3)),
    ("axis: -2 num_axes: 2", (2, 3, 4), (3, 4)),
    ("num_axes: 0", (2, 3), ()),
]


@pytest.mark.parametrize("text,shape,bias_shape", BIAS_CASES)
def test_bias_learned_values_and_gradient(text, shape, bias_shape):
    param = f"type: 'Bias' bias_param {{ {text} filler {{ type: 'gaussian' std: 1 }} }}"
    layer, bottom, top = make_layer(param, [randn(*shape)])
    assert [b.shape for b in layer.blobs] == [bias_shape]
    layer.forward(bottom, top)
    axis = text_format.Parse(text, caffe_pb2.BiasParameter()).axis
    expected = naive_broadcast(bottom[0].data, layer.blobs[0].data, axis, lambda u, v: u + v)
    numpy.testing.assert_allclose(top[0].data, expected, rtol=1e-12)
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("axis,bias_shape", [(1, (3,)), (0, (2, 3, 4)), (2, (4,)), (1, ())])
def test_bias_two_bottoms_values_and_gradient(axis, bias_shape):
    x, b = randn(2, 3, 4), randn(*bias_shape, seed=1)
    layer, bottom, top = make_layer(f"type: 'Bias' bias_param {{ axis: {axis} }}", [x, b])
    assert layer.blobs == []
    layer.forward(bottom, top)
    numpy.testing.assert_allclose(top[0].data, naive_broadcast(x, b, axis, lambda u, v: u + v))
    check_gradient(layer, bottom, top)


@pytest.mark.parametrize("param,bottoms,message", [
    ("type: 'Scale'", [(2, 3), (4,)], "does not match"),
    ("type: 'Scale' scale_param { axis: 1 num_axes: 3 }", [(2, 3, 4)], "extends past"),
    ("type: 'Scale' scale_param { num_axes: -2 }", [(2, 3)], "num_axes"),
    ("type: 'Scale' scale_param { axis: 3 }", [(2, 3)], "out of range"),
    ("type: 'Bias'", [(2, 3), (2,)], "does not match"),
    ("type: 'Bias' bias_param { axis: -3 }", [(2, 3)], "out of range"),
])
def test_scale_and_bias_errors(param, bottoms, message):
    with pytest.raises(CaffeError, match=message):
        make_layer(param, [randn(*s) for s in bottoms])


# --- backends -------------------------------------------------------------------

BACKEND_CASES = [
    ("type: 'Softmax' softmax_param { axis: 2 }", [(2, 3, 4)], TRAIN),
    ("type: 'BatchNorm'", [(2, 3, 2, 2)], TRAIN),
    ("type: 'BatchNorm'", [(2, 3, 2, 2)], TEST),
    ("type: 'MVN' mvn_param { across_channels: true }", [(2, 3, 2, 2)], TRAIN),
    ("type: 'LRN' lrn_param { local_size: 3 alpha: 0.5 k: 2 }", [(2, 5, 3, 3)], TRAIN),
    ("type: 'LRN' lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL }", [(2, 2, 4, 4)],
     TRAIN),
    ("type: 'Scale' scale_param { bias_term: true filler { type: 'gaussian' } }", [(2, 3, 2)],
     TRAIN),
    ("type: 'Scale' scale_param { axis: 0 }", [(2, 3, 2), (2, 3)], TRAIN),
    ("type: 'Bias' bias_param { filler { type: 'gaussian' } }", [(2, 3, 2)], TRAIN),
    ("type: 'Bias'", [(2, 3, 2), (3, 2)], TRAIN),
]


@pytest.mark.gpu
@pytest.mark.parametrize("param,bottoms,phase", BACKEND_CASES)
def test_cupy_matches_numpy(param, bottoms, phase):
    if not gpu_available():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy
    arrays = [randn(*s, seed=i) for i, s in enumerate(bottoms)]
    dy = randn(*bottoms[0], seed=7)
    ref, b_ref, t_ref = run(param, arrays, [dy], phase=phase, dtype=numpy.float32)
    blobs = [numpy.abs(b.data) + 1 for b in ref.blobs]  # positive: valid BatchNorm statistics
    ref, b_ref, t_ref = run(param, arrays, [dy], phase=phase, dtype=numpy.float32, blobs=blobs)
    gpu, b_gpu, t_gpu = run(param, arrays, [dy], phase=phase, dtype=numpy.float32, xp=cupy,
                            blobs=blobs)
    assert isinstance(t_gpu[0].data, cupy.ndarray)
    pairs = [(t_gpu[0].data, t_ref[0].data)] + [(g.diff, r.diff) for g, r in zip(b_gpu, b_ref)]
    pairs += [(g.data, r.data) for g, r in zip(gpu.blobs, ref.blobs)]
    pairs += [(g.diff, r.diff) for g, r in zip(gpu.blobs, ref.blobs)]
    for mine, expected in pairs:
        numpy.testing.assert_allclose(to_np(mine), expected, rtol=1e-4,
                                      atol=1e-5 * max(1.0, float(numpy.abs(expected).max())))

