"""Tests of layers/quant.py: Quant (HWGQ and Label-free), BinaryConvolution, BinaryInnerProduct.

Forward and backward against naive per-element references (the HWGQ Caffe's loops
written out), float64 gradient checks through the shared checker where the
backward is the true gradient (leaky relu, hard_tanh inside the clip range, the
bottom gradient of the binary layers), and parameter validation.  Golden data from
real Caffe is covered by tests/test_golden.py (quant_*, binconv_*, binip_*, *hwgq*).
"""
import math

import numpy
import pytest

from pycaffe_lite.errors import LayerError
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
