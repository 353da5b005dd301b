"""Tests of layers/quant.py: Quant (HWGQ and Label-free), BinaryConvolution, BinaryInnerProduct,
BinActiv and ActQuantize.

Forward and backward against naive per-element references (the HWGQ Caffe's loops
written out), float64 gradient checks through the shared checker where the
backward is the true gradient (leaky relu, hard_tanh inside the clip range, the
bottom gradient of the binary layers), and parameter validation.  Golden data from
real Caffe is covered by tests/test_golden.py (quant_*, binconv_*, binip_*, *hwgq*).

BinActiv and ActQuantize (no golden data: neither is in the HWGQ Caffe): references
that enumerate the levels or loop over the K windows, the shared checker on
ActQuantize with a step far below its own (where the STE is the true gradient),
each special case built next to ActQuantize (Label-free Quant + Scale, HWGQ's
uniform Quant, the sign), calibration, noise, and caffemodels written with
``Net.save`` with and without BinActiv's filter blob.  Both backends via ``xp``.
"""
import math

import numpy
import pytest
from google.protobuf import text_format

from pycaffe_lite import rng
from pycaffe_lite.backend import to_numpy
from pycaffe_lite.errors import LayerError, WeightsError
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.net import Net
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.testing.gradient_check import check_gradient, make_layer

SHAPE = (2, 3, 4, 5)
CENTERS = (0.538, 1.076, 1.614)


def _input(shape=SHAPE, seed=0, scale=1.0, avoid=(), margin=2e-2):
    """Random float64 input; values within ``margin`` of a point in ``avoid`` are moved."""
    x = numpy.random.RandomState(seed).standard_normal(shape) * scale
    for point in avoid:
        near = numpy.abs(x - point) < margin
        x[near] = point + numpy.where(x[near] >= point, 2 * margin, -2 * margin)
    return x


def F(value):
    """A float parameter as the proto stores it (float32)."""
    return float(numpy.float32(value))


def _quant(fwd, bwd, clip=0.0, slope=0.0, centers=CENTERS, thrs=()):
    text = f'type: "Quant" quant_param {{ forward_func: "{fwd}" backward_func: "{bwd}"'
    text += f" clip_thr: {clip} negative_slope: {slope}"
    text += "".join(f" centers: {c}" for c in centers)
    text += "".join(f" thrs: {t}" for t in thrs)
    return text + " }"


# --- naive references: HWGQ Caffe's per-element loops ------------------------
def ref_forward(x, fwd, slope, centers, thrs, dtype):
    c = [dtype(F(v)) for v in centers]
    t = [dtype(F(v)) for v in thrs] if thrs else [(a + b) * dtype(0.5)
                                                  for a, b in zip(c[:-1], c[1:])]
    t = t + [numpy.finfo(numpy.float32).max]
    out = numpy.zeros_like(x)
    flat, res = x.reshape(-1), out.reshape(-1)
    for i, v in enumerate(flat):
        if fwd == "sign":
            res[i] = 1 if v >= 0 else -1
        elif fwd == "hard_tanh":
            res[i] = min(max(v, -1), 1)
        elif fwd == "relu":
            res[i] = max(v, 0) + F(slope) * min(v, 0)
        elif v <= 0:
            res[i] = -F(slope)
        else:
            res[i] = next(cj for cj, tj in zip(c, t) if v <= tj)
    return out


def ref_backward(x, dy, bwd, clip, slope):
    thr = F(clip) if clip > 0 else numpy.finfo(numpy.float32).max
    dx = numpy.zeros_like(x)
    for i, (v, d) in enumerate(zip(x.reshape(-1), dy.reshape(-1))):
        if bwd == "hard_tanh":
            dx.flat[i] = d if -thr <= v <= thr else 0
        else:
            dx.flat[i] = d * ((v > 0) + F(slope) * (v <= 0)) * (v <= thr)
    return dx


HWGQ_CASES = {
    "hwgq_relu_clip": dict(fwd="hwgq", bwd="relu", clip=1.614),
    "hwgq_negative_slope": dict(fwd="hwgq", bwd="relu", clip=1.614, slope=0.1),
    "hwgq_noclip": dict(fwd="hwgq", bwd="relu"),
    "hwgq_thrs": dict(fwd="hwgq", bwd="relu", thrs=(0.7, 1.5)),
    "hwgq_one_center": dict(fwd="hwgq", bwd="relu", centers=(0.9,)),
    # more thresholds than the comparison path takes: searchsorted
    "hwgq_many_centers": dict(fwd="hwgq", bwd="relu", centers=tuple(0.2 * k for k in range(1, 13))),
    "sign_hard_tanh": dict(fwd="sign", bwd="hard_tanh", clip=1),
    "hard_tanh": dict(fwd="hard_tanh", bwd="hard_tanh", clip=1),
    "hard_tanh_noclip": dict(fwd="hard_tanh", bwd="hard_tanh"),
    "relu_clip": dict(fwd="relu", bwd="relu", clip=1.5),
    "relu_leaky": dict(fwd="relu", bwd="relu", slope=0.1),
}


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("name", sorted(HWGQ_CASES))
def test_quant_hwgq_matches_reference(name, dtype):
    kw = dict(clip=0.0, slope=0.0, centers=CENTERS, thrs=())
    kw.update(HWGQ_CASES[name])
    x = _input(scale=1.2).astype(dtype)
    # the exact decision points, as in the golden quant_hwgq_exact_points case
    x.flat[:6] = numpy.array([0, -0.0, 0.5 * (F(0.538) + F(1.076)), 0.5 * (F(1.076) + F(1.614)),
                              F(1.614), 1], dtype=dtype)
    layer, bottom, top = make_layer(_quant(kw["fwd"], kw["bwd"], kw["clip"], kw["slope"],
                                           kw["centers"], kw["thrs"]), [x], dtype=dtype)
    layer.forward(bottom, top)
    want = ref_forward(x, kw["fwd"], kw["slope"], kw["centers"], kw["thrs"], dtype)
    numpy.testing.assert_array_equal(top[0].data, want)
    assert top[0].data.dtype == dtype
    dy = _input(seed=1).astype(dtype)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    numpy.testing.assert_allclose(bottom[0].diff, ref_backward(x, dy, kw["bwd"], kw["clip"],
                                                               kw["slope"]), rtol=1e-6)


def test_quant_hwgq_levels_and_zero_sign():
    x = numpy.array([-1, 0, 0.5, 0.807, 0.81, 1.3, 1.345, 1.35, 9], dtype=numpy.float32)
    layer, bottom, top = make_layer(_quant("hwgq", "relu", 1.614), [x], dtype=numpy.float32)
    layer.forward(bottom, top)
    numpy.testing.assert_array_equal(
        top[0].data, numpy.float32([0, 0, 0.538, 0.538, 1.076, 1.076, 1.076, 1.614, 1.614]))
    assert numpy.signbit(top[0].data[:2]).all()  # -negative_slope = -0.0, as in Caffe
    layer, bottom, top = make_layer(_quant("sign", "hard_tanh", 1), [x[:2]],
                                    dtype=numpy.float32)
    layer.forward(bottom, top)
    numpy.testing.assert_array_equal(top[0].data, [-1, 1])  # sign(0) = +1


@pytest.mark.parametrize("proto,kink", [
    (_quant("relu", "relu", slope=0.1), [0]),
    (_quant("relu", "relu", slope=-0.3), [0]),
    (_quant("hard_tanh", "hard_tanh", clip=1), [-1, 1]),
])
def test_quant_gradient(proto, kink):
    """Where the backward is the true derivative of the forward."""
    x = _input(scale=1.5, avoid=kink)
    layer, bottom, top = make_layer(proto, [x])
    check_gradient(layer, bottom, top, kink=kink[0] if len(kink) == 1 else None,
                   kink_range=0.01)


@pytest.mark.parametrize("name", ["hwgq_relu_clip", "sign_hard_tanh", "relu_leaky"])
def test_quant_in_place(name):
    kw = dict(clip=0.0, slope=0.0)
    kw.update(HWGQ_CASES[name])
    proto = _quant(kw["fwd"], kw["bwd"], kw["clip"], kw["slope"])
    x, dy = _input(scale=1.5), _input(seed=3)
    layer, bottom, top = make_layer(proto, [x])
    layer.forward(bottom, top)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    layer2, bottom2, _ = make_layer(proto, [x])
    layer2.forward(bottom2, bottom2)
    numpy.testing.assert_array_equal(bottom2[0].data, top[0].data)
    bottom2[0].diff[...] = dy
    layer2.backward(bottom2, [True], bottom2)
    numpy.testing.assert_array_equal(bottom2[0].diff, bottom[0].diff)


# --- Label-free semantics -------------------------------------------------------
def ref_labelfree(x, dy, step):
    y, dx = numpy.zeros_like(x), numpy.zeros_like(x)
    for i, v in enumerate(x.reshape(-1)):
        if v > 0:
            y.flat[i] = min(max(math.floor(v / step + 0.5), 0), 127)
            if v < 127.5 * step:
                dx.flat[i] = dy.flat[i] / step
    return y, dx


@pytest.mark.parametrize("step", [0.05, 0.0125])
def test_quant_labelfree_matches_reference(step):
    x = _input(scale=1.0)
    x.flat[:4] = [0.0, 2.5 * F(step), 200 * step, -step]  # 0 -> 0, half-way up, saturated
    layer, bottom, top = make_layer(f'type: "Quant" relu_param {{ negative_slope: {step} }}',
                                    [x])
    assert layer.labelfree
    layer.forward(bottom, top)
    dy = _input(seed=2)
    want_y, want_dx = ref_labelfree(x, dy, F(step))
    numpy.testing.assert_array_equal(top[0].data, want_y)
    assert top[0].data.flat[1] == 3 and top[0].data.flat[2] == 127
    assert top[0].data.max() <= 127 and top[0].data.min() >= 0
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    numpy.testing.assert_allclose(bottom[0].diff, want_dx, rtol=1e-12)


def test_quant_labelfree_times_step_approximates_relu():
    """The code times the step (what the following Scale layer does) is ReLU to step/2."""
    step = 0.01
    x = _input(scale=0.3)
    layer, bottom, top = make_layer(f'type: "Quant" relu_param {{ negative_slope: {step} }}',
                                    [x])
    layer.forward(bottom, top)
    assert numpy.abs(top[0].data * F(step) - numpy.maximum(x, 0)).max() <= F(step) / 2 + 1e-12


@pytest.mark.parametrize("proto,match", [
    ('type: "Quant"', "negative_slope"),
    ('type: "Quant" relu_param { negative_slope: -0.1 }', "negative_slope"),
    ('type: "Quant" quant_param { forward_func: "hwgq" }', "centers"),
    ('type: "Quant" quant_param { centers: 0.5 centers: -1 }', "centers"),
    ('type: "Quant" quant_param { forward_func: "round" centers: 1 }', "forward_func"),
    ('type: "Quant" quant_param { backward_func: "ste" centers: 1 }', "backward_func"),
    ('type: "Quant" quant_param { centers: 1 centers: 2 thrs: 1 thrs: 2 }', "thrs"),
])
def test_quant_errors(proto, match):
    with pytest.raises(LayerError, match=match):
        make_layer(proto, [_input()])


# --- BinaryConvolution / BinaryInnerProduct ---------------------------------------
def ref_binarise(w, use_alpha):
    """sign(W) (W >= 0 gives +1) times mean |W| per output, written out per output."""
    wb = numpy.empty_like(w)
    for m in range(w.shape[0]):
        alpha = numpy.abs(w[m]).sum() / w[m].size if use_alpha else 1.0
        wb[m] = numpy.where(w[m] >= 0, 1.0, -1.0) * alpha
    return wb


CONV_CASES = {
    "alpha": "num_output: 4 kernel_size: 3 pad: 1",
    "noalpha_bias_stride2": "num_output: 4 kernel_size: 3 stride: 2 bias_term: true",
    "alpha_group2_dilation": "num_output: 4 kernel_size: 2 group: 2 dilation: 2 pad: 1",
}


def _binconv(geometry, use_alpha, binarise=True, kind="Convolution"):
    prefix = "convolution" if kind == "Convolution" else "inner_product"
    bias = "" if "bias_term" in geometry else " bias_term: false"
    text = (f'type: "Binary{kind}" {prefix}_param {{ {geometry}{bias} '
            f'weight_filler {{ type: "gaussian" std: 1 }} '
            f'bias_filler {{ type: "gaussian" std: 1 }} }}')
    text += (f" binary_{prefix}_param {{ use_alpha: {str(use_alpha).lower()} "
             f"use_binarization: {str(binarise).lower()} }}")
    return text


def _plain_twin(layer, x, kind):
    """The standard layer with the binarised weights, for reference."""
    p = layer.param.__class__()
    p.CopyFrom(layer.param)
    p.type = kind
    twin, bottom, top = make_layer(p, [x])
    twin.blobs[0].data[...] = layer.effective_weight()
    for k in range(1, len(layer.blobs)):
        twin.blobs[k].data[...] = layer.blobs[k].data
    return twin, bottom, top


@pytest.mark.parametrize("use_alpha", [True, False])
@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_binary_convolution(name, use_alpha):
    x = _input((2, 4, 6, 6))
    layer, bottom, top = make_layer(_binconv(CONV_CASES[name], use_alpha), [x])
    w = layer.blobs[0].data
    w.flat[0] = 0.0  # sign(0) = +1
    want_w = ref_binarise(w, use_alpha)
    numpy.testing.assert_allclose(layer.effective_weight(), want_w, rtol=1e-12)
    assert layer.effective_weight().flat[0] > 0
    layer.forward(bottom, top)
    twin, tb, tt = _plain_twin(layer, x, "Convolution")
    twin.forward(tb, tt)
    numpy.testing.assert_allclose(top[0].data, tt[0].data, rtol=1e-12, atol=1e-12)
    dy = _input(top[0].shape, seed=4)
    top[0].diff[...] = tt[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    twin.backward(tt, [True], tb)
    # bottom diff with Wb; weight diff is the ordinary one (independent of W), into W
    numpy.testing.assert_allclose(bottom[0].diff, tb[0].diff, rtol=1e-12, atol=1e-12)
    for k in range(len(layer.blobs)):
        numpy.testing.assert_allclose(layer.blobs[k].diff, twin.blobs[k].diff, rtol=1e-12,
                                      atol=1e-12)
    numpy.testing.assert_array_equal(layer.blobs[0].data, w)  # the real weights are kept


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("use_alpha", [True, False])
def test_binary_inner_product(use_alpha, transpose):
    x = _input((3, 2, 2, 3))
    geometry = f"num_output: 5 bias_term: true transpose: {str(transpose).lower()}"
    layer, bottom, top = make_layer(_binconv(geometry, use_alpha, kind="InnerProduct"), [x])
    assert layer.blobs[0].shape == (5, 12)  # HWGQ ignores transpose
    w = layer.blobs[0].data
    wb = ref_binarise(w, use_alpha)
    layer.forward(bottom, top)
    rows = x.reshape(3, 12)
    numpy.testing.assert_allclose(top[0].data, rows @ wb.T + layer.blobs[1].data, rtol=1e-12)
    dy = _input((3, 5), seed=5)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    numpy.testing.assert_allclose(bottom[0].diff.reshape(3, 12), dy @ wb, rtol=1e-12)
    numpy.testing.assert_allclose(layer.blobs[0].diff, dy.T @ rows, rtol=1e-12)
    numpy.testing.assert_allclose(layer.blobs[1].diff, dy.sum(0), rtol=1e-12)


def test_binary_weights_recomputed_every_forward():
    x = _input((2, 6))
    layer, bottom, top = make_layer(_binconv("num_output: 3", True, kind="InnerProduct"), [x])
    layer.forward(bottom, top)
    first = top[0].data.copy()
    layer.blobs[0].data[...] *= -2
    layer.forward(bottom, top)
    numpy.testing.assert_allclose(top[0].data, -2 * first, rtol=1e-12)


@pytest.mark.parametrize("proto", [
    _binconv(CONV_CASES["alpha_group2_dilation"], True),
    _binconv(CONV_CASES["noalpha_bias_stride2"], False),
    _binconv("num_output: 4 bias_term: true", True, kind="InnerProduct"),
])
def test_binary_bottom_gradient(proto):
    """The bottom gradient is the true one (the layer is linear in x for fixed W)."""
    layer, bottom, top = make_layer(proto, [_input((2, 4, 5, 5))])
    # the weight gradient is straight-through, not d/dW: check bottom and bias only
    check_gradient(layer, bottom, top, check_params=False)


def test_without_binarization_is_the_standard_layer():
    x = _input((2, 4, 5, 5))
    layer, bottom, top = make_layer(_binconv("num_output: 3 kernel_size: 3", True,
                                             binarise=False), [x])
    check_gradient(layer, bottom, top)
    numpy.testing.assert_array_equal(layer.effective_weight(), layer.blobs[0].data)


# =================================================================================
# BinActiv (XNOR-Net ports) and ActQuantize (ours)
# =================================================================================


def _act(fields, phase=TRAIN, x=None, xp=numpy, dtype=numpy.float64):
    x = _input() if x is None else x
    return make_layer(f'type: "ActQuantize" act_quantize_param {{ {fields} }}', [x],
                      phase=phase, xp=xp, dtype=dtype)


def _run(layer, bottom, top, x, dy, xp):
    """Forward over ``x`` and backward of ``dy``; NumPy copies of ``y`` and ``dx``."""
    bottom[0].data[...] = xp.asarray(x)
    layer.forward(bottom, top)
    top[0].diff[...] = xp.asarray(dy)
    layer.backward(top, [True], bottom)
    return to_numpy(top[0].data).copy(), to_numpy(bottom[0].diff).copy()


# --- ActQuantize: naive references, by enumerating the levels ----------------------
def ref_levels(levels, bits, signed, top):
    """Every level the quantiser can output, ascending (the sign bit aside)."""
    if signed and bits == 1:
        return [-top, top]
    n = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
    if levels == "LOG":
        positive = [top * 2.0 ** -k for k in range(n)]
    else:
        positive = [top * q / n for q in range(1, n + 1)]
    negative = [-v for v in positive] if signed else []
    return sorted(negative + [0.0] + positive)


def ref_act_quantize(x, levels, bits, signed, top, half_wave=False):
    """Nearest level (LOG: in log2, with 0 below the smallest level's lower bound), ties up."""
    grid = ref_levels(levels, bits, signed, top)
    out = numpy.empty_like(x)
    for i, v in enumerate(x.reshape(-1)):
        if signed and bits == 1:
            out.flat[i] = top if v >= 0 else -top
        elif levels == "LOG":
            mags = [g for g in grid if g > 0]
            a = abs(v) if signed else max(v, 0.0)
            if a == 0 or math.log2(a / top) < -(len(mags) - 1) - 0.5:
                out.flat[i] = 0.0
                continue
            best = min(mags, key=lambda g: (abs(math.log2(a / g)), -g))
            out.flat[i] = best if (v >= 0 or not signed) else -best
        elif half_wave:
            out.flat[i] = 0.0 if v <= 0 else min(
                grid[1:], key=lambda g: (abs(v - g), g))   # ties to the lower level
        else:
            out.flat[i] = min(grid, key=lambda g: (abs(v - g), -g))  # ties up
    return out


def ref_ste(x, dy, signed, top):
    lo = -top if signed else 0.0
    return numpy.where((x >= lo) & (x <= top), dy, 0.0)


# (fields, levels, bits, signed, top, half_wave); top as the layer computes it
ACT_CASES = {
    "linear_u2_step": ("bits: 2 step: 0.5", "LINEAR", 2, False, 1.5, False),
    "linear_s3_max": ("bits: 3 signed: true max: 1.5", "LINEAR", 3, True, 1.5, False),
    "linear_s4_step": ("bits: 4 signed: true step: 0.25", "LINEAR", 4, True, 1.75, False),
    "linear_u8_step": ("bits: 8 step: 0.01", "LINEAR", 8, False, 255 * F(0.01), False),
    "half_wave_u2": ("bits: 2 step: 0.5 rounding: HALF_WAVE", "LINEAR", 2, False, 1.5, True),
    "linear_u1": ("bits: 1 step: 1", "LINEAR", 1, False, 1.0, False),
    "sign_s1": ("bits: 1 signed: true step: 0.75", "LINEAR", 1, True, 0.75, False),
    "log_u3": ("levels: LOG bits: 3 max: 2", "LOG", 3, False, 2.0, False),
    "log_s4": ("levels: LOG bits: 4 signed: true max: 1", "LOG", 4, True, 1.0, False),
    "log_u1": ("levels: LOG bits: 1 max: 1", "LOG", 1, False, 1.0, False),
    "log_s1": ("levels: LOG bits: 1 signed: true max: 0.5", "LOG", 1, True, 0.5, False),
}


@pytest.mark.parametrize("name", sorted(ACT_CASES))
def test_act_quantize_matches_reference(name, xp):
    fields, levels, bits, signed, top, half_wave = ACT_CASES[name]
    x = _input(scale=1.2)
    x.flat[:4] = [0.0, -0.0, top, -top]  # zero and the range ends (inside the STE range)
    layer, bottom, top_blobs = _act(fields, xp=xp)
    dy = _input(seed=5)
    y, dx = _run(layer, bottom, top_blobs, x, dy, xp)
    numpy.testing.assert_allclose(y, ref_act_quantize(x, levels, bits, signed, top, half_wave),
                                  rtol=1e-12, atol=0)
    numpy.testing.assert_array_equal(dx, ref_ste(x, dy, signed, top))
    # every output is one of the levels
    grid = numpy.array(ref_levels(levels, bits, signed, top))
    assert numpy.abs(y.reshape(-1, 1) - grid).min(axis=1).max() <= 1e-12


def test_act_quantize_hand_cases():
    def run(fields, values):
        layer, bottom, top = _act(fields, x=numpy.array(values, dtype=numpy.float64))
        layer.forward(bottom, top)
        return top[0].data.tolist()

    # unsigned 2 bits, step 0.5: levels 0, 0.5, 1, 1.5; ties round up
    assert run("bits: 2 step: 0.5", [-1, 0, 0.24, 0.25, 0.74, 0.75, 1.49, 2]) == \
        [0, 0, 0, 0.5, 0.5, 1.0, 1.5, 1.5]
    # HWGQ's half-wave rounding: no positive input gives 0, ties go down
    assert run("bits: 2 step: 0.5 rounding: HALF_WAVE", [-1, 0, 1e-3, 0.75, 0.76, 1.25, 1.26, 9]) \
        == [0, 0, 0.5, 0.5, 1.0, 1.0, 1.5, 1.5]
    # signed 3 bits, step 1: -3 .. 3 (the code -4 unused)
    assert run("bits: 3 signed: true step: 1", [-9, -2.5, -0.4, 0.5, 2.6, 9]) == \
        [-3, -2, 0, 1, 3, 3]
    # BinaryNet's sign, sign(0) = +1 (also for -0.0)
    assert run("bits: 1 signed: true step: 1", [-0.5, -0.0, 0, 3]) == [-1, 1, 1, 1]
    # unsigned 1 bit: a threshold at step / 2
    assert run("bits: 1 step: 2", [-1, 0.99, 1, 5]) == [0, 0, 2, 2]
    # LOG unsigned 2 bits, max 1: levels 1, 0.5, 0.25 and 0 (below 0.25 / sqrt 2)
    assert run("levels: LOG bits: 2 max: 1", [0.1, 0.2, 0.3, 0.6, 0.8, 5, -1]) == \
        [0, 0.25, 0.25, 0.5, 1, 1, 0]


@pytest.mark.parametrize("fields,kinks", [
    ("bits: 32 signed: true step: 9.313225746154785e-10", (-2.0, 2.0)),   # step 2^-30
    ("bits: 32 max: 2", (0.0, 2.0)),
    ("bits: 32 signed: true max: 1.5 noise: true", (-1.5, 1.5)),
])
def test_act_quantize_fine_step_gradient(fields, kinks, xp):
    """With a step far below the checker's, the forward is clip(x, lo, hi) to within the
    step, whose true gradient is the straight-through estimator: the shared checker
    verifies it (the range ends, the kinks, avoided).  In TRAIN, with noise too."""
    x = _input(scale=1.3, avoid=kinks, margin=0.02)
    layer, bottom, top = _act(fields, x=x, xp=xp)
    check_gradient(layer, bottom, top)


def test_act_quantize_in_place(xp):
    x, dy = _input(scale=1.5), _input(seed=3)
    fields = "bits: 3 signed: true max: 1.2"
    y, dx = _run(*_act(fields, xp=xp), x, dy, xp)
    layer, bottom, _ = _act(fields, xp=xp)
    y2, dx2 = _run(layer, bottom, bottom, x, dy, xp)
    numpy.testing.assert_array_equal(y2, y)
    numpy.testing.assert_array_equal(dx2, dx)


# --- ActQuantize: calibration ----------------------------------------------------------
def test_act_quantize_calibrates_on_first_train_batch(xp):
    x = _input(scale=0.7)
    layer, bottom, top = _act("bits: 4 signed: true calibrate: true", x=x, xp=xp)
    assert len(layer.blobs) == 1 and float(to_numpy(layer.blobs[0].data)[0]) == 0
    assert layer.param.param[0].lr_mult == 0          # never learned
    peak = numpy.abs(x).max()
    y, _ = _run(layer, bottom, top, x, x, xp)
    assert float(to_numpy(layer.blobs[0].data)[0]) == peak
    numpy.testing.assert_allclose(y, ref_act_quantize(x, "LINEAR", 4, True, peak), rtol=1e-12)
    # a later, larger batch keeps the first calibration: it saturates at the stored top
    y2, dx2 = _run(layer, bottom, top, 3 * x, x, xp)
    assert float(to_numpy(layer.blobs[0].data)[0]) == peak
    assert numpy.abs(y2).max() == pytest.approx(peak, rel=1e-12)
    numpy.testing.assert_array_equal(dx2, ref_ste(3 * x, x, True, peak))


def test_act_quantize_calibration_test_phase_and_zero_statistic():
    x = _input(scale=0.7)
    layer, bottom, top = _act("bits: 3 calibrate: true", phase=TEST, x=x)
    layer.forward(bottom, top)
    assert layer.blobs[0].data[0] == 0                  # TEST never stores
    numpy.testing.assert_allclose(top[0].data, ref_act_quantize(x, "LINEAR", 3, False, x.max()),
                                  rtol=1e-12)
    # TRAIN, a batch with nothing above 0 (unsigned): y = 0, still uncalibrated
    layer, bottom, top = _act("bits: 3 calibrate: true", x=-numpy.abs(x))
    layer.forward(bottom, top)
    assert layer.blobs[0].data[0] == 0 and not top[0].data.any()
    bottom[0].data[...] = x
    layer.forward(bottom, top)
    assert layer.blobs[0].data[0] == x.max()


ACT_NET = """
name: "aq"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }
layer { name: "q" type: "ActQuantize" bottom: "x" top: "y"
        act_quantize_param { bits: 5 signed: true calibrate: true } }
"""


def test_act_quantize_calibration_is_saved_and_loaded(tmp_path):
    net_param = text_format.Parse(ACT_NET, caffe_pb2.NetParameter())
    train = Net(net_param, phase=TRAIN, dtype=numpy.float64)
    x = _input(scale=0.9)
    train.blobs["x"].data[...] = x
    train.forward_range()
    assert train.param_specs == [(0.0, 1.0)]           # lr_mult 0: no update, no decay
    path = str(tmp_path / "aq.caffemodel")
    train.save(path)
    deploy = Net(net_param, phase=TEST, weights=path, dtype=numpy.float64)
    peak = F(numpy.abs(x).max())                           # caffemodels hold float32
    assert deploy.params["q"][0].data[0] == peak
    deploy.blobs["x"].data[...] = 2 * x                   # would calibrate higher if unset
    deploy.forward_range()
    want = ref_act_quantize(2 * x, "LINEAR", 5, True, peak)
    numpy.testing.assert_allclose(deploy.blobs["y"].data, want, rtol=1e-12)


# --- ActQuantize: noise -----------------------------------------------------------------
def test_act_quantize_noise_train_only(xp):
    x = numpy.linspace(-1.3, 1.3, 53)
    fields = "bits: 3 signed: true step: 0.25 noise: true"
    plain = ref_act_quantize(x, "LINEAR", 3, True, 0.75)
    layer, bottom, top = _act(fields, phase=TEST, x=x, xp=xp)
    layer.forward(bottom, top)
    numpy.testing.assert_array_equal(to_numpy(top[0].data), plain)   # TEST: no noise

    layer, bottom, top = _act(fields, x=x, xp=xp)
    draws = []
    rng.set_random_seed(7)
    for _ in range(400):
        layer.forward(bottom, top)
        draws.append(to_numpy(top[0].data).copy())
    draws = numpy.array(draws)
    codes = draws / 0.25
    numpy.testing.assert_array_equal(codes, numpy.round(codes))      # still on the grid
    assert numpy.abs(codes).max() == 3
    assert (draws != plain).any()
    # stochastic rounding: the mean over the noise is x inside the range
    inside = numpy.abs(x) <= 0.75 - 0.125
    assert numpy.abs(draws.mean(axis=0) - x)[inside].max() < 0.05
    rng.set_random_seed(7)
    layer.forward(bottom, top)
    numpy.testing.assert_array_equal(to_numpy(top[0].data), draws[0])  # reproducible


# --- ActQuantize: the special cases ----------------------------------------------------
def _net(text, phase=TRAIN):
    return Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase=phase,
               dtype=numpy.float64)


def _net_run(net, x, dy, out):
    net.blobs["x"].data[...] = x
    net.forward_range()
    net.blobs[out].diff[...] = dy
    net.backward_range()
    return net.blobs[out].data.copy(), net.blobs["x"].diff.copy()


@pytest.mark.parametrize("step", [0.05, 0.0125])
def test_act_quantize_is_labelfree_quant_then_scale(step):
    """Label-free's Quant (7-bit codes 0..127) followed by a Scale by its step a is
    ActQuantize ``bits: 7 step: a``: the same values.  Gradients agree except where
    the two STEs differ by design: Label-free passes ``0 < x < 127.5 a``, ActQuantize
    its representable range ``0 <= x <= 127 a``."""
    shape = "input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } }"
    labelfree = _net(f"""force_backward: true
        layer {{ name: "in" type: "Input" top: "x" {shape} }}
        layer {{ name: "q" type: "Quant" bottom: "x" top: "code"
                 relu_param {{ negative_slope: {step} }} }}
        layer {{ name: "s" type: "Scale" bottom: "code" top: "y"
                 scale_param {{ filler {{ type: "constant" value: {step} }} }} }}""")
    ours = _net(f"""force_backward: true
        layer {{ name: "in" type: "Input" top: "x" {shape} }}
        layer {{ name: "q" type: "ActQuantize" bottom: "x" top: "y"
                 act_quantize_param {{ bits: 7 step: {step} }} }}""")
    a = F(step)
    x = _input(scale=100 * step)
    x.flat[:5] = [0.0, 2.5 * a, 200 * a, -a, 127.2 * a]   # 0, a tie, saturated, < 0, the band
    dy = _input(seed=6)
    y_lf, dx_lf = _net_run(labelfree, x, dy, "y")
    y_aq, dx_aq = _net_run(ours, x, dy, "y")
    numpy.testing.assert_array_equal(y_aq, y_lf)
    assert y_aq.max() == 127 * a and y_aq.flat[1] == 3 * a
    differ = (x == 0) | ((x > 127 * a) & (x < 127.5 * a))
    numpy.testing.assert_allclose(dx_aq[~differ], dx_lf[~differ], rtol=1e-12)
    assert dx_aq.flat[0] == dy.flat[0] and dx_lf.flat[0] == 0          # x = 0
    assert dx_aq.flat[4] == 0 and dx_lf.flat[4] == pytest.approx(dy.flat[4])  # 127a < x


@pytest.mark.parametrize("step,exact", [(0.5, True), (0.538, False)])
def test_act_quantize_is_hwgq_uniform_quant(step, exact, xp):
    """HWGQ's Quant with centers ``step * (1, 2, 3)`` (``forward_func: "hwgq"``,
    ``backward_func: "relu"``, ``clip_thr`` the last center) is ActQuantize ``bits: 2
    step: s rounding: HALF_WAVE``.  With a step exact in binary every value agrees,
    the decision points included; otherwise up to the float32 rounding of the
    centers.  The STEs agree except at ``x = 0`` (HWGQ: 0, ours: dy)."""
    centers = [step * k for k in (1, 2, 3)]
    hwgq = make_layer(_quant("hwgq", "relu", clip=centers[-1], centers=centers), [_input()],
                      xp=xp)
    ours = _act(f"bits: 2 step: {step} rounding: HALF_WAVE", xp=xp)
    x = _input(scale=1.2, avoid=[0] if exact else [0, 0.5 * 3 * step, 0.5 * 5 * step,
                                                    3 * step], margin=1e-4)
    if exact:
        x.flat[:7] = [0, -0.0, 0.75, 1.25, 1.5, 0.1, 9]
    dy = _input(seed=8)
    y_h, dx_h = _run(*hwgq, x, dy, xp)
    y_a, dx_a = _run(*ours, x, dy, xp)
    if exact:
        numpy.testing.assert_array_equal(y_a, y_h)
        numpy.testing.assert_array_equal(dx_a[x != 0], dx_h[x != 0])
        assert dx_h.flat[0] == 0 and dx_a.flat[0] == dy.flat[0]
    else:
        numpy.testing.assert_allclose(y_a, y_h, rtol=1e-7)
        numpy.testing.assert_array_equal(dx_a, dx_h)


def test_act_quantize_sign_is_binarynet_and_binactiv(xp):
    """``bits: 1 signed: true step: 1`` = HWGQ's Quant sign / hard_tanh(1) = BinActiv top 0."""
    x = _input(scale=1.5)
    x.flat[:4] = [0, -0.0, 1, -1]
    dy = _input(seed=9)
    y_a, dx_a = _run(*_act("bits: 1 signed: true step: 1", xp=xp), x, dy, xp)
    y_q, dx_q = _run(*make_layer(_quant("sign", "hard_tanh", clip=1), [x], xp=xp), x, dy, xp)
    y_b, dx_b = _run(*make_layer('type: "BinActiv"', [x], xp=xp), x, dy, xp)
    for y, dx in ((y_q, dx_q), (y_b, dx_b)):
        numpy.testing.assert_array_equal(y_a, y)
        numpy.testing.assert_array_equal(dx_a, dx)


@pytest.mark.parametrize("fields,match", [
    ("bits: 0 step: 1", "bits: got 0, expected 1 to 32"),
    ("bits: 33 step: 1", "bits: got 33"),
    ("bits: 4", "exactly one of step, max and calibrate; got none"),
    ("bits: 4 step: 1 max: 2", "got step and max"),
    ("bits: 4 max: 2 calibrate: true", "got max and calibrate"),
    ("levels: LOG bits: 4 step: 0.5", "step applies to levels: LINEAR only"),
    ("bits: 4 signed: true step: 1 rounding: HALF_WAVE", "HALF_WAVE needs .*signed: true"),
    ("levels: LOG bits: 4 max: 1 rounding: HALF_WAVE", "HALF_WAVE needs .*levels: LOG"),
    ("levels: LOG bits: 4 max: 1 noise: true", "noise needs levels: LINEAR"),
    ("bits: 4 step: -0.5", r"step: got -0.5, expected a finite value > 0"),
    ("bits: 4 max: 0", r"max: got 0.0, expected"),
])
def test_act_quantize_errors(fields, match):
    with pytest.raises(LayerError, match=r"layer 'aq' \(type ActQuantize\): .*" + match):
        make_layer(f'name: "aq" type: "ActQuantize" act_quantize_param {{ {fields} }}',
                   [_input()])


def test_act_quantize_calibration_blob_not_learnable():
    with pytest.raises(LayerError, match=r"'aq'.*param 0 has lr_mult 1.0; the calibrated top "
                                         r"level cannot be learned, expected lr_mult 0"):
        make_layer('name: "aq" type: "ActQuantize" param { lr_mult: 1 } '
                   'act_quantize_param { bits: 4 calibrate: true }', [_input()])


# --- BinActiv ------------------------------------------------------------------------------
def ref_binactiv_k(x, kernel, stride, pad, dilation=(1, 1), window=None):
    """K = mean_c |x| averaged over each window of the following convolution (zero padding);
    ``window``: the filter's weights instead of the mean's 1 / (kh*kw)."""
    n, _, h, w = x.shape
    a = numpy.abs(x).mean(axis=1)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    k = numpy.zeros((n, 1, oh, ow))
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                total = 0.0
                for u in range(kh):
                    for v in range(kw):
                        r, c = i * sh - ph + u * dh, j * sw - pw + v * dw
                        if 0 <= r < h and 0 <= c < w:
                            total += a[b, r, c] * (1 / (kh * kw) if window is None
                                                   else window[u, v])
                k[b, 0, i, j] = total
    return k


BINACTIV_CASES = {
    "k3_pad1": ("kernel_size: 3 pad: 1", (3, 3), (1, 1), (1, 1), (1, 1)),
    "k3_stride2": ("kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0), (1, 1)),
    "k2x3_pad": ("kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 0", (2, 3), (1, 1), (1, 0), (1, 1)),
    "k2_dilation2": ("kernel_size: 2 dilation: 2 pad: 1 num_output: 64 group: 2",
                     (2, 2), (1, 1), (1, 1), (2, 2)),
}


def _binactiv(conv, x, xp=numpy, tops=2):
    top_text = ' top: "b"' + (' top: "k"' if tops == 2 else "")
    return make_layer(f'name: "ba" type: "BinActiv"{top_text} convolution_param {{ {conv} }}',
                      [x], xp=xp)


@pytest.mark.parametrize("name", sorted(BINACTIV_CASES))
def test_binactiv_matches_reference(name, xp):
    conv, kernel, stride, pad, dilation = BINACTIV_CASES[name]
    x = _input((2, 3, 6, 7), scale=1.3)
    x.flat[:2] = [0.0, -0.0]
    layer, bottom, top = _binactiv(conv, x, xp)
    assert layer.blobs[0].shape == (1, 1) + kernel
    layer.forward(bottom, top)
    want_k = ref_binactiv_k(x, kernel, stride, pad, dilation)
    assert top[1].shape == want_k.shape
    numpy.testing.assert_allclose(to_numpy(top[1].data), want_k, rtol=1e-12, atol=1e-15)
    numpy.testing.assert_array_equal(to_numpy(top[0].data), numpy.where(x >= 0, 1.0, -1.0))
    dy = _input(x.shape, seed=10)
    top[0].diff[...] = xp.asarray(dy)
    top[1].diff[...] = xp.asarray(_input(want_k.shape, seed=11))    # ignored, as in the ports
    layer.backward(top, [True], bottom)
    numpy.testing.assert_array_equal(to_numpy(bottom[0].diff),
                                     numpy.where(numpy.abs(x) <= 1, dy, 0.0))


def test_binactiv_k_is_the_xnor_scale():
    """XNOR-Net's ``conv(x, sign W) ~ conv(sign x, sign W) * K`` holds exactly where |x| is
    the same over every window: here a per-sample magnitude, no padding."""
    magnitude = numpy.array([0.7, 1.9]).reshape(2, 1, 1, 1)
    x = numpy.where(_input((2, 4, 7, 7), seed=13) >= 0, 1.0, -1.0) * magnitude
    layer, bottom, top = _binactiv("num_output: 3 kernel_size: 3 stride: 2", x)
    layer.forward(bottom, top)
    conv, cbottom, ctop = make_layer(
        'type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 stride: 2 '
        'bias_term: false weight_filler { type: "gaussian" } }', [x])
    conv.blobs[0].data[...] = numpy.where(conv.blobs[0].data >= 0, 1.0, -1.0)
    conv.forward(cbottom, ctop)
    real = ctop[0].data.copy()
    cbottom[0].data[...] = top[0].data
    conv.forward(cbottom, ctop)
    assert top[1].shape == (2, 1) + ctop[0].shape[2:]
    numpy.testing.assert_allclose(top[1].data, numpy.broadcast_to(magnitude, top[1].shape),
                                  rtol=1e-12)
    numpy.testing.assert_allclose(ctop[0].data * top[1].data, real, rtol=1e-12, atol=1e-12)


def test_binactiv_one_top(xp):
    x = _input((3, 4), scale=2)                       # no kernel: any shape, no blob
    layer, bottom, top = make_layer('type: "BinActiv"', [x], xp=xp)
    assert layer.blobs == []
    layer, bottom, top = _binactiv("kernel_size: 3", _input((2, 3, 5, 5)), xp, tops=1)
    assert len(layer.blobs) == 1 and len(top) == 1    # the filter is owned all the same
    layer.forward(bottom, top)
    assert top[0].shape == (2, 3, 5, 5)


def test_binactiv_in_place(xp):
    x, dy = _input((2, 3, 5, 5), scale=1.5), _input((2, 3, 5, 5), seed=14)
    layer, bottom, top = _binactiv("kernel_size: 3 pad: 1", x, xp)
    y, dx = _run(layer, bottom, top, x, dy, xp)
    k = to_numpy(top[1].data).copy()
    layer2, bottom2, top2 = _binactiv("kernel_size: 3 pad: 1", x, xp)
    in_place = [bottom2[0], top2[1]]
    layer2.reshape(bottom2, in_place)
    y2, dx2 = _run(layer2, bottom2, in_place, x, dy, xp)
    numpy.testing.assert_array_equal(y2, y)
    numpy.testing.assert_array_equal(to_numpy(top2[1].data), k)  # K from the input, not sign(x)
    numpy.testing.assert_array_equal(dx2, dx)


BINACTIV_NET = """
name: "xnor"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "ba" type: "BinActiv" bottom: "x" top: "b" top: "k"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bc" type: "BinaryConvolution" bottom: "b" top: "c"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" } } }
"""


def test_binactiv_caffemodel_with_and_without_the_filter(tmp_path):
    net_param = text_format.Parse(BINACTIV_NET, caffe_pb2.NetParameter())
    net = Net(net_param, phase=TEST, dtype=numpy.float64)
    assert [len(net.params[name]) for name in ("ba", "bc")] == [1, 2]
    assert net.params["ba"][0].data.shape == (1, 1, 3, 3)
    x = _input((2, 3, 6, 6), seed=15)
    # a caffemodel holding the filter (here not the box one): it is loaded and used
    custom = numpy.random.RandomState(16).uniform(0.0, 0.2, (1, 1, 3, 3)).astype(numpy.float32)
    net.params["ba"][0].data[...] = custom
    with_filter = str(tmp_path / "with.caffemodel")
    net.save(with_filter)
    loaded = Net(net_param, phase=TEST, weights=with_filter, dtype=numpy.float64)
    numpy.testing.assert_array_equal(loaded.params["ba"][0].data, custom)
    loaded.blobs["x"].data[...] = x
    loaded.forward_range()
    box_k = ref_binactiv_k(x, (3, 3), (1, 1), (1, 1))
    numpy.testing.assert_allclose(loaded.blobs["k"].data,
                                  ref_binactiv_k(x, (3, 3), (1, 1), (1, 1), window=custom[0, 0]),
                                  rtol=1e-12)
    assert not numpy.allclose(loaded.blobs["k"].data, box_k)
    # the ports' caffemodel: no blob for BinActiv (only the convolution's)
    ports = net.to_proto()
    for lp in ports.layer:
        if lp.name == "ba":
            del lp.blobs[:]
            del lp.param[:]
    without = str(tmp_path / "without.caffemodel")
    with open(without, "wb") as handle:
        handle.write(ports.SerializeToString())
    loaded = Net(net_param, phase=TEST, weights=without, dtype=numpy.float64)
    numpy.testing.assert_array_equal(loaded.params["bc"][0].data,
                                     net.params["bc"][0].data.astype(numpy.float32))
    numpy.testing.assert_array_equal(loaded.params["ba"][0].data, numpy.full((1, 1, 3, 3), 1 / 9))
    loaded.blobs["x"].data[...] = x
    loaded.forward_range()
    numpy.testing.assert_allclose(loaded.blobs["k"].data, box_k, rtol=1e-12)
    # a filter of another shape does not load
    wrong = net.to_proto()
    for lp in wrong.layer:
        if lp.name == "ba":
            del lp.blobs[0].shape.dim[:]
            lp.blobs[0].shape.dim.extend([1, 1, 2, 2])
            del lp.blobs[0].data[5:]
    with pytest.raises(WeightsError, match="layer 'ba'.*shape mismatch"):
        Net(net_param, phase=TEST, weights=wrong, dtype=numpy.float64)


@pytest.mark.parametrize("proto,x_shape,tops,match", [
    ('type: "BinActiv"', (2, 3, 4, 4), 2, r"top 1 \(K\) needs convolution_param.kernel_size"),
    ('type: "BinActiv" convolution_param { kernel_size: 3 }', (6, 4), 2, r"\[N, C, \*spatial\]"),
    ('type: "BinActiv" convolution_param { kernel_size: 3 axis: 2 }', (2, 3, 4, 4), 2,
     "convolution_param.axis: got 2, expected 1"),
    ('type: "BinActiv" convolution_param { kernel_size: 5 }', (2, 3, 4, 4), 2, "too small"),
    ('type: "BinActiv" convolution_param { kernel_size: 3 } param { lr_mult: 1 }',
     (2, 3, 4, 4), 1, r"param 0 has lr_mult 1.0; the K averaging filter cannot be learned"),
    ('type: "BinActiv" convolution_param { kernel_size: 3 }', (2, 3, 4, 4), 3,
     r"takes at most 2 top"),
])
def test_binactiv_errors(proto, x_shape, tops, match):
    with pytest.raises(LayerError, match=r"layer 'ba' \(type BinActiv\): .*" + match):
        make_layer('name: "ba" ' + proto, [_input(x_shape)], num_tops=tops)


def test_binactiv_k_cannot_be_in_place():
    param = text_format.Parse('name: "ba" type: "BinActiv" convolution_param { kernel_size: 1 }',
                              caffe_pb2.LayerParameter())
    layer, bottom, top = make_layer(param, [_input((2, 3, 4, 4))], num_tops=2)
    fresh = type(layer)(param)
    with pytest.raises(LayerError, match=r"top 1 \(K\) cannot be computed in place"):
        fresh.set_up(bottom, [top[0], bottom[0]])


@pytest.mark.parametrize("use_alpha", [True, False])
def test_binarised_weights_in_blocks_on_threads_are_exact(use_alpha, threads, monkeypatch):
    """sign(W) * alpha computed in blocks of rows on two threads: bit for bit the
    naive whole-array formula (sign(0) = sign(-0.0) = +1), and the buffer is reused."""
    from pycaffe_lite.layers import quant
    threads(2)
    monkeypatch.setattr(quant, "_BINARISE_BLOCK", 7)        # 1 row of 12 per block
    rng = numpy.random.default_rng(0)
    w = rng.standard_normal((5, 3, 2, 2)).astype(numpy.float32)
    w[0, 0, 0, 0], w[1, 0, 0, 1], w[4, 2, 1, 1] = 0.0, -0.0, 1e-30
    lp = ("type: 'BinaryConvolution' convolution_param { num_output: 5 kernel_size: 2 } "
          f"binary_convolution_param {{ use_alpha: {str(use_alpha).lower()} }}")
    layer, bottom, top = make_layer(lp, [rng.standard_normal((1, 3, 4, 4))],
                                    dtype=numpy.float32)
    layer.blobs[0].data[...] = w
    alpha = (numpy.abs(w).reshape(5, -1).mean(axis=1, dtype=numpy.float32) if use_alpha
             else numpy.ones(5, numpy.float32))
    expected = numpy.where(w >= 0, 1.0, -1.0).astype(numpy.float32) * alpha[:, None, None, None]
    first = layer.effective_weight()
    numpy.testing.assert_array_equal(first, expected)
    assert layer.effective_weight() is first


@pytest.mark.parametrize("name", sorted(HWGQ_CASES) + ["labelfree"])
@pytest.mark.parametrize("in_place", [False, True])
def test_quant_pieces_on_threads_equal_one_pass(name, in_place, threads, monkeypatch):
    """The CPU forward and backward run in pieces on the thread pool: the bits of
    one whole-array pass, in place or not."""
    from pycaffe_lite.layers import neuron
    if name == "labelfree":
        lp = 'type: "Quant" relu_param { negative_slope: 0.05 }'
    else:
        kw = dict(clip=0.0, slope=0.0, centers=CENTERS, thrs=())
        kw.update(HWGQ_CASES[name])
        lp = _quant(**kw)
    x = _input(scale=1.2).astype(numpy.float32)
    dy = numpy.random.default_rng(3).standard_normal(x.shape).astype(numpy.float32)
    results = []
    for piece, n_threads in ((7, 3), (1 << 30, 1)):
        monkeypatch.setattr(neuron, "_PIECE", piece)
        threads(n_threads)
        layer, bottom, top = make_layer(lp, [x], dtype=numpy.float32)
        if in_place:
            top = bottom
        layer.forward(bottom, top)
        y = top[0].data.copy()
        top[0].diff[...] = dy
        layer.backward(top, [True], bottom)
        results.append((y, bottom[0].diff.copy()))
    for pieces, whole in zip(*results):
        numpy.testing.assert_array_equal(pieces, whole)
