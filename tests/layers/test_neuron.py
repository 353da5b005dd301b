"""Tests of the element-wise layers in layers/neuron.py.

Each layer: a float64 gradient check through the shared checker, a value test
of forward and backward against a naive per-element reference (Caffe's loops
written out), an in-place run that must equal the out-of-place one, and its
parameter validation.  Golden data from real Caffe is covered by
tests/test_golden.py.
"""
import math

import numpy
import pytest

from pycaffe_lite import rng
from pycaffe_lite.backend import to_numpy
from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import LayerError
from pycaffe_lite.layer import TEST, TRAIN, create_layer, layer_class
from pycaffe_lite.layers import neuron
from pycaffe_lite.testing.gradient_check import check_gradient, make_layer

SHAPE = (2, 3, 4, 5)


def _input(shape=SHAPE, seed=0, low=None, high=None, avoid=(), margin=2e-2):
    """Random float64 input; values within ``margin`` of a point in ``avoid`` are moved."""
    rs = numpy.random.RandomState(seed)
    x = rs.uniform(low, high, shape) if low is not None else rs.standard_normal(shape)
    for point in avoid:
        near = numpy.abs(x - point) < margin
        x[near] = point + numpy.where(x[near] >= point, margin, -margin) * 2
    return x


def _layer(proto, x, xp=numpy, phase=TRAIN, dtype=numpy.float64):
    return make_layer(proto, [x], phase=phase, dtype=dtype, xp=xp)


def _reseeding(layer, seed=5):
    """Reseed the shared RNG before every forward, as Caffe's GradientChecker does."""
    forward = layer.forward

    def reseeded(bottom, top):
        rng.set_random_seed(seed)
        forward(bottom, top)
    layer.forward = reseeded
    return layer


def F(value):
    """A float parameter as the proto stores it (float32)."""
    return float(numpy.float32(value))


# --- naive references: Caffe's per-element loops ---------------------------
def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v)) if v > -700 else 0.0


def _bnll(v):
    return v + math.log(1.0 + math.exp(-v)) if v > 0 else math.log(1.0 + math.exp(v))


# name: (prototxt, forward(x) -> y, dy/dx(x, y), input kwargs)
CASES = {
    "absval": ('type: "AbsVal"', abs, lambda x, y: float(x > 0) - float(x < 0), dict(avoid=[0])),
    "bnll": ('type: "BNLL"', _bnll, lambda x, y: math.exp(min(x, 50)) / (math.exp(min(x, 50)) + 1),
             dict(low=-60, high=60)),
    "clip": ('type: "Clip" clip_param { min: -0.5 max: 0.75 }', lambda x: max(-0.5, min(x, 0.75)),
             lambda x, y: float(-0.5 <= x <= 0.75), dict(avoid=[-0.5, 0.75])),
    "elu": ('type: "ELU" elu_param { alpha: 0.7 }',
            lambda x: x if x > 0 else F(0.7) * (math.exp(x) - 1),
            lambda x, y: 1.0 if x > 0 else y + F(0.7), dict(avoid=[0])),
    "elu_negative_alpha": ('type: "ELU" elu_param { alpha: -0.5 }',
                           lambda x: x if x > 0 else -0.5 * (math.exp(x) - 1),
                           lambda x, y: 1.0 if x > 0 else y - 0.5, dict(avoid=[0])),
    "exp_e": ('type: "Exp"', math.exp, lambda x, y: y, {}),
    "exp_e_scale_shift": ('type: "Exp" exp_param { scale: 0.5 shift: 0.1 }',
                          lambda x: math.exp(F(0.1) + 0.5 * x), lambda x, y: 0.5 * y, {}),
    "exp_base2": ('type: "Exp" exp_param { base: 2 scale: 1.5 shift: -1 }',
                  lambda x: 2.0 ** (-1 + 1.5 * x), lambda x, y: math.log(2) * 1.5 * y, {}),
    "log_e": ('type: "Log"', math.log, lambda x, y: 1 / x, dict(low=0.2, high=3)),
    "log_base10_scaled": ('type: "Log" log_param { base: 10 scale: 2 shift: 1 }',
                          lambda x: math.log10(1 + 2 * x),
                          lambda x, y: 2 / (math.log(10) * (1 + 2 * x)),
                          dict(low=-0.3, high=3)),
    "power_identity": ('type: "Power"', lambda x: x, lambda x, y: 1.0, {}),
    "power_linear": ('type: "Power" power_param { power: 1 scale: -1.5 shift: 0.3 }',
                     lambda x: F(0.3) - 1.5 * x, lambda x, y: -1.5, {}),
    "power_square": ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }',
                     lambda x: (1 + 0.5 * x) ** 2, lambda x, y: 2 * 0.5 * (1 + 0.5 * x), {}),
    "power_square_noshift": ('type: "Power" power_param { power: 2 scale: -2 }',
                             lambda x: (2 * x) ** 2, lambda x, y: 8 * x, {}),
    "power_sqrt": ('type: "Power" power_param { power: 0.5 scale: 2 shift: 0.5 }',
                   lambda x: math.sqrt(0.5 + 2 * x), lambda x, y: 1 / math.sqrt(0.5 + 2 * x),
                   dict(low=0.1, high=3)),
    "power_cube_noshift": ('type: "Power" power_param { power: 3 scale: 0.5 }',
                           lambda x: (0.5 * x) ** 3, lambda x, y: 1.5 * (0.5 * x) ** 2,
                           dict(avoid=[0])),
    "power_general": ('type: "Power" power_param { power: -1.5 scale: 0.5 shift: 2 }',
                      lambda x: (2 + 0.5 * x) ** -1.5, lambda x, y: -0.75 * (2 + 0.5 * x) ** -2.5,
                      dict(low=-1, high=3)),
    "power_zero": ('type: "Power" power_param { power: 0 scale: 3 shift: 2 }',
                   lambda x: 1.0, lambda x, y: 0.0, {}),
    "power_scale_zero": ('type: "Power" power_param { power: 3 scale: 0 shift: 2 }',
                         lambda x: 8.0, lambda x, y: 0.0, {}),
    "relu": ('type: "ReLU"', lambda x: max(x, 0.0), lambda x, y: float(x > 0), dict(avoid=[0])),
    "relu_leaky": ('type: "ReLU" relu_param { negative_slope: 0.1 }',
                   lambda x: x if x > 0 else F(0.1) * x,
                   lambda x, y: 1.0 if x > 0 else F(0.1), dict(avoid=[0])),
    "relu_negative_slope": ('type: "ReLU" relu_param { negative_slope: -0.3 }',
                            lambda x: x if x > 0 else -F(0.3) * x,
                            lambda x, y: 1.0 if x > 0 else -F(0.3),
                            dict(avoid=[0])),
    "sigmoid": ('type: "Sigmoid"', _sigmoid, lambda x, y: y * (1 - y), dict(low=-8, high=8)),
    "swish": ('type: "Swish"', lambda x: x * _sigmoid(x),
              lambda x, y: y + _sigmoid(x) * (1 - y), {}),
    "swish_beta": ('type: "Swish" swish_param { beta: 1.5 }', lambda x: x * _sigmoid(1.5 * x),
                   lambda x, y: 1.5 * y + _sigmoid(1.5 * x) * (1 - 1.5 * y), {}),
    "tanh": ('type: "TanH"', math.tanh, lambda x, y: 1 - y * y, {}),
}


def _reference(name, x, dy):
    _, f, df, _ = CASES[name]
    flat = x.reshape(-1)
    y = numpy.array([f(v) for v in flat]).reshape(x.shape)
    g = numpy.array([df(v, w) for v, w in zip(flat, y.reshape(-1))]).reshape(x.shape)
    return y, dy * g


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient(name, xp):
    proto, _, _, kw = CASES[name]
    layer, bottom, top = _layer(proto, _input(**kw), xp)
    check_gradient(layer, bottom, top, step=1e-4 if "bnll" in name else 1e-3)


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_against_reference(name, xp):
    proto, _, _, kw = CASES[name]
    x = _input(seed=3, **kw)
    dy = _input(seed=4)
    layer, bottom, top = _layer(proto, x, xp)
    layer.forward(bottom, top)
    top[0].diff[...] = xp.asarray(dy)
    layer.backward(top, [True], bottom)
    y_ref, dx_ref = _reference(name, x, dy)
    numpy.testing.assert_allclose(to_numpy(top[0].data), y_ref, rtol=1e-10, atol=1e-12)
    numpy.testing.assert_allclose(to_numpy(bottom[0].diff), dx_ref, rtol=1e-9, atol=1e-12)


def _run(proto, x, dy, in_place, xp=numpy, phase=TRAIN, dtype=numpy.float64, blobs=None):
    from google.protobuf import text_format
    from pycaffe_lite.proto import caffe_pb2
    param = text_format.Parse(proto, caffe_pb2.LayerParameter(name="l"))
    layer = create_layer(param, phase=phase, xp=xp, dtype=dtype)
    bottom = Blob(x.shape, xp=xp, dtype=dtype)
    bottom.data[...] = xp.asarray(x)
    top = bottom if in_place else Blob((), xp=xp, dtype=dtype)
    layer.set_up([bottom], [top])
    if blobs is not None:
        for blob, value in zip(layer.blobs, blobs):
            blob.data[...] = xp.asarray(value)
    rng.set_random_seed(11)
    layer.forward([bottom], [top])
    y = to_numpy(top.data).copy()
    top.diff[...] = xp.asarray(dy)
    layer.backward([top], [True], [bottom])
    params = [to_numpy(b.diff).copy() for b in layer.blobs]
    return y, to_numpy(bottom.diff).copy(), params


IN_PLACE = {name: case[0] for name, case in CASES.items()}
IN_PLACE.update({
    "prelu": 'type: "PReLU" prelu_param { filler { type: "gaussian" std: 0.5 } }',
    "prelu_shared": 'type: "PReLU" prelu_param { channel_shared: true }',
    "dropout": 'type: "Dropout" dropout_param { dropout_ratio: 0.3 }',
})


@pytest.mark.parametrize("name", sorted(IN_PLACE))
def test_in_place_equals_out_of_place(name, xp):
    kw = CASES[name][3] if name in CASES else {}
    x, dy = _input(seed=1, **kw), _input(seed=2)
    rng.set_random_seed(3)
    separate = _run(IN_PLACE[name], x, dy, in_place=False, xp=xp)
    rng.set_random_seed(3)
    shared = _run(IN_PLACE[name], x, dy, in_place=True, xp=xp)
    for a, b in zip(separate[:2], shared[:2]):
        numpy.testing.assert_array_equal(a, b)
    for a, b in zip(separate[2], shared[2]):
        numpy.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("name", ["relu", "sigmoid", "power_sqrt", "log_base10_scaled",
                                  "exp_base2"])
def test_keeps_blob_dtype(name, dtype):
    proto, _, _, kw = CASES[name]
    y, dx, _ = _run(proto, _input(**kw), _input(seed=9), False, dtype=dtype)
    assert y.dtype == dtype and dx.dtype == dtype


# --- Power: Caffe's special cases -------------------------------------------
def test_power_shift_zero_gives_nan_at_zero_like_caffe():
    # dy/dx = power * y / x: Caffe computes 0/0 there.
    x = numpy.array([[0.0, 1.0, -2.0]])
    y, dx, _ = _run('type: "Power" power_param { power: 3 scale: 2 }', x, numpy.ones_like(x), False)
    numpy.testing.assert_allclose(y, [[0.0, 8.0, -64.0]])
    assert math.isnan(dx[0, 0])
    numpy.testing.assert_allclose(dx[0, 1:], [24.0, 96.0])


def test_power_constant_output_ignores_input_and_zeroes_gradient():
    x = numpy.array([[math.nan, 1.0, -5.0]])
    proto = 'type: "Power" power_param { power: 2 scale: 0 shift: 3 }'
    y, dx, _ = _run(proto, x, numpy.ones_like(x), False)
    numpy.testing.assert_array_equal(y, [[9.0, 9.0, 9.0]])
    numpy.testing.assert_array_equal(dx, [[0.0, 0.0, 0.0]])


# --- PReLU -------------------------------------------------------------------
def _prelu_reference(x, a, dy, shared):
    y, dx, da = numpy.empty_like(x), numpy.empty_like(x), numpy.zeros_like(a)
    channels = x.shape[1]
    dim = int(numpy.prod(x.shape[2:]))
    for i, (v, d) in enumerate(zip(x.reshape(-1), dy.reshape(-1))):
        c = 0 if shared else (i // dim) % channels
        slope = a.reshape(-1)[c]
        y.reshape(-1)[i] = max(v, 0) + slope * min(v, 0)
        dx.reshape(-1)[i] = d * ((v > 0) + slope * (v <= 0))
        da.reshape(-1)[c] += d * v * (v <= 0)
    return y, dx, da


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 3), (2, 3, 2, 2, 3)])
@pytest.mark.parametrize("shared", [False, True])
def test_prelu_against_reference(shape, shared, xp):
    x, dy = _input(shape, seed=5, avoid=[0]), _input(shape, seed=6)
    proto = f'type: "PReLU" prelu_param {{ channel_shared: {str(shared).lower()} }}'
    layer, bottom, top = _layer(proto, x, xp)
    assert layer.blobs[0].shape == (() if shared else (shape[1],))
    numpy.testing.assert_array_equal(to_numpy(layer.blobs[0].data), 0.25)  # the default filler
    a = numpy.random.RandomState(7).uniform(-1, 1, layer.blobs[0].shape)
    layer.blobs[0].data[...] = xp.asarray(a)
    layer.blobs[0].diff[...] = 1.0  # param diffs accumulate
    layer.forward(bottom, top)
    top[0].diff[...] = xp.asarray(dy)
    layer.backward(top, [True], bottom)
    y, dx, da = _prelu_reference(x, a, dy, shared)
    numpy.testing.assert_allclose(to_numpy(top[0].data), y, rtol=1e-12)
    numpy.testing.assert_allclose(to_numpy(bottom[0].diff), dx, rtol=1e-12)
    numpy.testing.assert_allclose(to_numpy(layer.blobs[0].diff), da + 1.0, rtol=1e-10)
    check_gradient(layer, bottom, top, kink=0.0, kink_range=2e-3)


def test_prelu_param_gradient_without_bottom_gradient():
    x, dy = _input(seed=5), _input(seed=6)
    layer, bottom, top = _layer('type: "PReLU"', x)
    layer.forward(bottom, top)
    top[0].diff[...] = dy
    bottom[0].diff[...] = 7.0
    layer.backward(top, [False], bottom)
    assert (bottom[0].diff == 7.0).all()
    _, _, da = _prelu_reference(x, numpy.full(3, 0.25), dy, False)
    numpy.testing.assert_allclose(layer.blobs[0].diff, da, rtol=1e-10)


def test_prelu_filler():
    rng.set_random_seed(1)
    layer, _, _ = _layer('type: "PReLU" prelu_param { filler { type: "constant" value: 0.1 } }',
                         _input())
    numpy.testing.assert_array_equal(layer.blobs[0].data, F(0.1))


# --- Dropout -------------------------------------------------------------------
def test_dropout_train_mask_and_scale(xp):
    x = _input((50, 40), seed=8, avoid=[0])
    dy = _input((50, 40), seed=9)
    rng.set_random_seed(42)
    layer, bottom, top = _layer('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', x, xp)
    layer.forward(bottom, top)
    y = to_numpy(top[0].data).copy()
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.05
    scale = 1 / (1 - numpy.float64(numpy.float32(0.3)))
    numpy.testing.assert_allclose(y[kept], x[kept] * scale, rtol=1e-12)
    top[0].diff[...] = xp.asarray(dy)
    layer.backward(top, [True], bottom)
    numpy.testing.assert_allclose(to_numpy(bottom[0].diff), dy * kept * scale, rtol=1e-12)
    # A new mask every forward, the same one for the same seed.
    layer.forward(bottom, top)
    assert (to_numpy(top[0].data) != y).any()
    rng.set_random_seed(42)
    layer.forward(bottom, top)
    numpy.testing.assert_array_equal(to_numpy(top[0].data), y)


def test_dropout_test_phase_is_identity(xp):
    x, dy = _input(seed=10), _input(seed=11)
    for in_place in (False, True):
        y, dx, _ = _run('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', x, dy, in_place,
                        xp=xp, phase=TEST)
        numpy.testing.assert_array_equal(y, x)
        numpy.testing.assert_array_equal(dx, dy)


def test_dropout_gradient_with_fixed_mask(xp):
    proto = 'type: "DROPOUT" dropout_param { dropout_ratio: 0.4 }'
    layer, bottom, top = _layer(proto, _input(), xp)
    check_gradient(_reseeding(layer), bottom, top)


# --- Threshold ------------------------------------------------------------------
def test_threshold_forward_and_no_backward(xp):
    x = _input(avoid=[0.25])
    layer, bottom, top = _layer('type: "Threshold" threshold_param { threshold: 0.25 }', x, xp)
    layer.forward(bottom, top)
    numpy.testing.assert_array_equal(to_numpy(top[0].data), (x > 0.25).astype(numpy.float64))
    layer.backward(top, [False], bottom)  # nothing asked: fine
    with pytest.raises(NotImplementedError, match="no backward"):
        layer.backward(top, [True], bottom)
    with pytest.raises(LayerError):
        layer.backward(top, [True], bottom)
    assert not layer.allow_force_backward(0)


# --- registry and validation -----------------------------------------------------
@pytest.mark.parametrize("alias,name", [
    ("ABSVAL", "AbsVal"), ("BNLL", "BNLL"), ("DROPOUT", "Dropout"), ("EXP", "Exp"),
    ("POWER", "Power"), ("RELU", "ReLU"), ("SIGMOID", "Sigmoid"), ("TANH", "TanH"),
    ("THRESHOLD", "Threshold"),
])
def test_v1_aliases(alias, name):
    assert layer_class(alias) is layer_class(name)
    assert layer_class(alias).type == name


@pytest.mark.parametrize("proto,shape,message", [
    ('type: "Clip" clip_param { min: 0 }', SHAPE, "missing max"),
    ('type: "Clip"', SHAPE, "missing min and max"),
    ('type: "Clip" clip_param { min: 1 max: 0 }', SHAPE, "min must be <= "),
    ('type: "Exp" exp_param { base: 0 }', SHAPE, "base must be > 0"),
    ('type: "Exp" exp_param { base: -2 }', SHAPE, "base must be > 0"),
    ('type: "Log" log_param { base: 1 }', SHAPE, "!= 1"),
    ('type: "Log" log_param { base: -3 }', SHAPE, "base must be > 0"),
    ('type: "Dropout" dropout_param { dropout_ratio: 1 }', SHAPE, r"in \[0, 1\)"),
    ('type: "Dropout" dropout_param { dropout_ratio: -0.1 }', SHAPE, r"in \[0, 1\)"),
    ('type: "PReLU" bottom: "data"', (5,), "at least 2 axes"),
])
def test_bad_params(proto, shape, message):
    with pytest.raises(LayerError, match=message):
        _layer(proto, numpy.zeros(shape))


def test_prelu_rejects_channel_change():
    layer, bottom, top = _layer('type: "PReLU" bottom: "data"', _input())
    bottom[0].reshape((2, 4, 4, 5))
    with pytest.raises(LayerError, match="4 channels"):
        layer.reshape(bottom, top)


def test_blob_count_checked():
    with pytest.raises(LayerError, match="bottom"):
        make_layer('type: "ReLU"', [numpy.zeros(3), numpy.zeros(3)])


@pytest.mark.parametrize("proto", ['type: "Sigmoid"', 'type: "BNLL"', 'type: "Swish"',
                                   'type: "TanH"', 'type: "ELU"'])
def test_extreme_inputs_stay_finite(proto):
    x = numpy.array([[-1e4, -100.0, -60.0, 0.0, 60.0, 100.0, 1e4]], dtype=numpy.float32)
    y, dx, _ = _run(proto, x, numpy.ones_like(x), False, dtype=numpy.float32)
    assert numpy.isfinite(y).all() and numpy.isfinite(dx).all()


@pytest.mark.parametrize("size", [5, neuron._ZERO_ROW * 3 + 7])
def test_relu_helper_matches_maximum(size):
    """``relu`` (rows of zeros on large arrays) gives ``maximum(x, 0)`` exactly,
    NaN, infinities and -0.0 included, in place or not, contiguous or not."""
    x = numpy.random.RandomState(5).standard_normal(size).astype(numpy.float32)
    x[:4] = [numpy.nan, -numpy.inf, numpy.inf, -0.0]
    expected = numpy.maximum(x, 0)
    out = numpy.empty_like(x)
    numpy.testing.assert_array_equal(neuron.relu(x, out=out), expected)
    strided = numpy.repeat(x, 2)[::2]
    numpy.testing.assert_array_equal(neuron.relu(strided, out=numpy.empty_like(x)), expected)
    neuron.relu(x, out=x)
    numpy.testing.assert_array_equal(x, expected)
