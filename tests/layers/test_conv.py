"""Convolution, Deconvolution, Im2col and InnerProduct against naive references.

The im2col engine's own paths: tests/engines/test_im2col.py.
"""
import numpy
import pytest
from pycaffe_lite.layers import conv

from pycaffe_lite.backend import to_numpy
from pycaffe_lite.engines import im2col as conv_engine
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.testing.gradient_check import check_gradient, make_layer


def _rand(*shape, seed=0):
    return numpy.random.RandomState(seed).standard_normal(shape)


def _conv_param(type_="Convolution", num_output=4, extra="", bias=True, filler="gaussian"):
    return (f'type: "{type_}" convolution_param {{ num_output: {num_output} {extra} '
            f'bias_term: {str(bias).lower()} '
            f'weight_filler {{ type: "{filler}" std: 0.5 }} '
            f'bias_filler {{ type: "gaussian" std: 0.5 }} }}')


def _out_size(size, k, s, p, d):
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def naive_conv(x, w, b, stride, pad, dilation, group):
    """Direct N-d convolution, one output position and kernel offset at a time."""
    spatial = x.shape[2:]
    kernel = w.shape[2:]
    xpad = numpy.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out_sp = [_out_size(*a) for a in zip(spatial, kernel, stride, pad, dilation)]
    m, cg = w.shape[0], w.shape[1]
    mg = m // group
    y = numpy.zeros((x.shape[0], m) + tuple(out_sp))
    for o in numpy.ndindex(*out_sp):
        for k in numpy.ndindex(*kernel):
            pos = tuple(oi * s + ki * d for oi, ki, s, d in zip(o, k, stride, dilation))
            patch = xpad[(slice(None), slice(None)) + pos]          # [N, C]
            for g in range(group):
                y[(slice(None), slice(g * mg, (g + 1) * mg)) + o] += \
                    patch[:, g * cg:(g + 1) * cg] @ w[(slice(g * mg, (g + 1) * mg), slice(None)) + k].T
    if b is not None:
        y += b.reshape((-1,) + (1,) * len(spatial))
    return y


def naive_deconv(x, w, b, stride, pad, dilation, group):
    """Scatter every input pixel through the kernel, then crop the padding."""
    spatial = x.shape[2:]
    kernel = w.shape[2:]
    cin, mg = w.shape[0], w.shape[1]
    cg = cin // group
    full = [s * (i - 1) + d * (k - 1) + 1 for i, k, s, d in zip(spatial, kernel, stride, dilation)]
    y = numpy.zeros((x.shape[0], mg * group) + tuple(full))
    for i in numpy.ndindex(*spatial):
        for k in numpy.ndindex(*kernel):
            pos = tuple(ii * s + ki * d for ii, ki, s, d in zip(i, k, stride, dilation))
            for g in range(group):
                y[(slice(None), slice(g * mg, (g + 1) * mg)) + pos] += \
                    x[(slice(None), slice(g * cg, (g + 1) * cg)) + i] @ w[(slice(g * cg, (g + 1) * cg),
                                                                           slice(None)) + k]
    crop = tuple(slice(p, f - p) for p, f in zip(pad, full))
    y = y[(slice(None), slice(None)) + crop]
    if b is not None:
        y = y + b.reshape((-1,) + (1,) * len(spatial))
    return y


def naive_im2col(x, kernel, stride, pad, dilation):
    spatial = x.shape[2:]
    xpad = numpy.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out_sp = [_out_size(*a) for a in zip(spatial, kernel, stride, pad, dilation)]
    n, c = x.shape[:2]
    cols = numpy.zeros((n, c) + tuple(kernel) + tuple(out_sp))
    for o in numpy.ndindex(*out_sp):
        for k in numpy.ndindex(*kernel):
            pos = tuple(oi * s + ki * d for oi, ki, s, d in zip(o, k, stride, dilation))
            cols[(slice(None), slice(None)) + k + o] = xpad[(slice(None), slice(None)) + pos]
    return cols.reshape((n, -1) + tuple(out_sp))


def _spec(kernel, stride, pad, dilation):
    """Prototxt for per-axis values (repeated fields)."""
    parts = []
    for name, values in (("kernel_size", kernel), ("stride", stride), ("pad", pad),
                         ("dilation", dilation)):
        parts += [f"{name}: {v}" for v in values]
    return " ".join(parts)


# (input shape, num_output, kernel, stride, pad, dilation, group)
CONV_CASES = [
    ((2, 3, 7, 7), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((2, 4, 7, 6), 6, (3, 2), (2, 1), (1, 0), (1, 1), 2),
    ((2, 3, 9, 9), 4, (3, 3), (1, 1), (2, 2), (2, 2), 1),
    ((2, 5, 6, 6), 3, (1, 1), (2, 2), (0, 0), (1, 1), 1),
    ((3, 4, 5, 5), 4, (1, 1), (1, 1), (0, 0), (1, 1), 2),      # pointwise
    ((2, 2, 4, 5), 2, (3, 5), (3, 2), (2, 2), (1, 1), 1),      # pad >= overhang
    ((2, 3, 9), 2, (3,), (2,), (1,), (2,), 1),                 # 1-D
    ((2, 2, 4, 5, 4), 3, (2, 3, 2), (1, 2, 1), (1, 1, 0), (1, 1, 2), 1),  # 3-D
    ((2, 4, 6, 7), 4, (3, 3), (1, 1), (1, 1), (1, 1), 4),      # depthwise, direct
    ((1, 3, 7, 5), 3, (3, 5), (1, 1), (2, 4), (2, 2), 3),      # depthwise, dilated, direct
    ((2, 4, 6, 6), 4, (3, 3), (2, 2), (1, 1), (1, 1), 4),      # depthwise, strided: GEMMs
]


@pytest.mark.parametrize("shape,m,kernel,stride,pad,dilation,group", CONV_CASES)
def test_convolution_matches_naive(shape, m, kernel, stride, pad, dilation, group, xp):
    x = _rand(*shape)
    lp = _conv_param(num_output=m, extra=_spec(kernel, stride, pad, dilation) + f" group: {group}")
    layer, bottom, top = make_layer(lp, [x], xp=xp)
    w, b = to_numpy(layer.blobs[0].data), to_numpy(layer.blobs[1].data)
    assert w.shape == (m, shape[1] // group) + kernel
    layer.forward(bottom, top)
    numpy.testing.assert_allclose(to_numpy(top[0].data),
                                  naive_conv(x, w, b, stride, pad, dilation, group),
                                  rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape,m,kernel,stride,pad,dilation,group", CONV_CASES)
def test_deconvolution_matches_naive(shape, m, kernel, stride, pad, dilation, group, xp):
    x = _rand(*shape)
    lp = _conv_param("Deconvolution", num_output=m,
                     extra=_spec(kernel, stride, pad, dilation) + f" group: {group}")
    layer, bottom, top = make_layer(lp, [x], xp=xp)
    w, b = to_numpy(layer.blobs[0].data), to_numpy(layer.blobs[1].data)
    assert w.shape == (shape[1], m // group) + kernel
    expected = naive_deconv(x, w, b, stride, pad, dilation, group)
    assert top[0].shape == expected.shape
    layer.forward(bottom, top)
    numpy.testing.assert_allclose(to_numpy(top[0].data), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("type_", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("case", [0, 1, 2, 4, 5, 6, 7, 8, 9, 10])
def test_conv_gradient(type_, case, xp):
    shape, m, kernel, stride, pad, dilation, group = CONV_CASES[case]
    lp = _conv_param(type_, num_output=m, bias=case % 2 == 0,
                     extra=_spec(kernel, stride, pad, dilation) + f" group: {group}")
    layer, bottom, top = make_layer(lp, [_rand(*shape)], xp=xp)
    check_gradient(layer, bottom, top, max_elements=60)


def test_conv_two_bottoms_share_weights_and_accumulate():
    x0, x1 = _rand(2, 3, 5, 5, seed=1), _rand(2, 3, 5, 5, seed=2)
    lp = _conv_param(num_output=2, extra="kernel_size: 3 pad: 1") + ' top: "a" top: "b"'
    layer, bottom, top = make_layer(lp, [x0, x1])
    w, b = layer.blobs[0].data, layer.blobs[1].data
    layer.forward(bottom, top)
    for x, t in zip((x0, x1), top):
        numpy.testing.assert_allclose(t.data, naive_conv(x, w, b, (1, 1), (1, 1), (1, 1), 1),
                                      rtol=1e-10, atol=1e-10)
    check_gradient(layer, bottom, top, max_elements=40)


def test_conv_axis_and_leading_dims():
    # axis 2: dims before the channel axis are all batch dims.
    x = _rand(2, 3, 4, 6, 6)
    lp = _conv_param(num_output=5, extra="kernel_size: 3 axis: 2")
    layer, bottom, top = make_layer(lp, [x])
    assert top[0].shape == (2, 3, 5, 4, 4)
    layer.forward(bottom, top)
    w, b = layer.blobs[0].data, layer.blobs[1].data
    expected = naive_conv(x.reshape(6, 4, 6, 6), w, b, (1, 1), (0, 0), (1, 1), 1)
    numpy.testing.assert_allclose(top[0].data, expected.reshape(2, 3, 5, 4, 4), rtol=1e-10)


@pytest.mark.parametrize("budget,pointwise_step", [(1, 1), (150, 1), (1 << 30, 3)])
@pytest.mark.parametrize("type_", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("shape,m,kernel,stride,pad,dilation,group", [
    ((5, 4, 6, 6), 4, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    ((5, 4, 6, 6), 4, (1, 1), (1, 1), (0, 0), (1, 1), 2),
    CONV_CASES[1], CONV_CASES[7]])
def test_chunking_does_not_change_results(monkeypatch, budget, pointwise_step, type_, shape, m,
                                          kernel, stride, pad, dilation, group):
    """Sample by sample, bands of output rows (a sample over budget), or the whole
    batch per GEMM: the same numbers."""
    monkeypatch.setattr(conv_engine, "_COL_BUDGET_CPU", budget)
    monkeypatch.setattr(conv_engine._ColumnChunks, "pointwise_step_cpu", pointwise_step)
    x = _rand(*shape)
    lp = _conv_param(type_, num_output=m, extra=_spec(kernel, stride, pad, dilation) + f" group: {group}")
    layer, bottom, top = make_layer(lp, [x])
    w, b = layer.blobs[0].data, layer.blobs[1].data
    naive = naive_conv if type_ == "Convolution" else naive_deconv
    layer.forward(bottom, top)
    numpy.testing.assert_allclose(top[0].data, naive(x, w, b, stride, pad, dilation, group),
                                  rtol=1e-10, atol=1e-10)
    check_gradient(layer, bottom, top, max_elements=30)


@pytest.mark.parametrize("min_plane,chunk", [(0, 1), (0, 50), (0, 1 << 16), (1 << 30, 1)])
def test_depthwise_direct_or_gemm(monkeypatch, min_plane, chunk):
    """Depthwise forward direct (a few channels, or a part of one, at a time) or by
    1xK GEMMs: the same numbers."""
    monkeypatch.setattr(conv_engine, "_DEPTHWISE_DIRECT_MIN_PLANE", min_plane)
    monkeypatch.setattr(conv_engine, "_DEPTHWISE_CHUNK_CPU", chunk)
    for shape, m, kernel, stride, pad, dilation, group in CONV_CASES[8:10]:
        lp = _conv_param(num_output=m, extra=_spec(kernel, stride, pad, dilation) + f" group: {group}")
        x = _rand(*shape)
        layer, bottom, top = make_layer(lp, [x])
        w, b = layer.blobs[0].data, layer.blobs[1].data
        layer.forward(bottom, top)
        numpy.testing.assert_allclose(top[0].data, naive_conv(x, w, b, stride, pad, dilation, group),
                                      rtol=1e-10, atol=1e-10)


def test_conv_rect_fields_and_float32():
    x = _rand(2, 3, 8, 9).astype(numpy.float32)
    lp = _conv_param(num_output=4, bias=False,
                     extra="kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 2 stride_h: 2 stride_w: 1")
    layer, bottom, top = make_layer(lp, [x], dtype=numpy.float32)
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (4, 3, 3, 5)
    layer.forward(bottom, top)
    assert top[0].data.dtype == numpy.float32 and top[0].shape == (2, 4, 4, 9)
    expected = naive_conv(x.astype(numpy.float64), layer.blobs[0].data.astype(numpy.float64), None,
                          (2, 1), (1, 2), (1, 1), 1)
    numpy.testing.assert_allclose(top[0].data, expected, rtol=1e-4, atol=1e-4)


def test_deconv_output_size_formula():
    lp = _conv_param("Deconvolution", num_output=3, extra="kernel_size: 4 stride: 2 pad: 1")
    _, _, top = make_layer(lp, [_rand(2, 4, 5, 5)])
    assert top[0].shape == (2, 3, 2 * (5 - 1) + 4 - 2 * 1, 10)


def test_param_diffs_accumulate():
    lp = _conv_param(num_output=3, extra="kernel_size: 3")
    layer, bottom, top = make_layer(lp, [_rand(2, 2, 5, 5)])
    layer.forward(bottom, top)
    top[0].diff[...] = _rand(*top[0].shape, seed=3)
    layer.backward(top, [True], bottom)
    once = [p.diff.copy() for p in layer.blobs]
    layer.backward(top, [False], bottom)
    for p, g in zip(layer.blobs, once):
        numpy.testing.assert_allclose(p.diff, 2 * g)


def test_effective_weight_override():
    """A subclass swapping the weight (as BinaryConvolution does) changes forward and the
    bottom gradient, while the weight gradient still lands in blobs[0].diff."""
    class SignConvolution(conv.ConvolutionLayer):
        def effective_weight(self):
            return numpy.where(self.blobs[0].data >= 0, 1.0, -1.0)

    from google.protobuf import text_format

    from pycaffe_lite.proto import caffe_pb2
    x = _rand(2, 3, 6, 6)
    param = text_format.Parse(_conv_param(num_output=4, extra="kernel_size: 3 pad: 1"),
                              caffe_pb2.LayerParameter(name="c"))
    plain, bottom, top = make_layer(param, [x])
    signed = SignConvolution(param, dtype=numpy.float64)
    signed.set_up(bottom, top)
    for dst, src in zip(signed.blobs, plain.blobs):
        dst.data[...] = src.data
    wb = signed.effective_weight()
    signed.forward(bottom, top)
    numpy.testing.assert_allclose(top[0].data, naive_conv(x, wb, plain.blobs[1].data, (1, 1),
                                                          (1, 1), (1, 1), 1), rtol=1e-10)
    dy = _rand(*top[0].shape, seed=4)
    top[0].diff[...] = dy
    signed.backward(top, [True], bottom)
    dx_signed = bottom[0].diff.copy()
    plain.blobs[0].data[...] = wb
    plain.forward(bottom, top)
    top[0].diff[...] = dy
    plain.backward(top, [True], bottom)
    numpy.testing.assert_allclose(dx_signed, bottom[0].diff, rtol=1e-10)
    numpy.testing.assert_allclose(signed.blobs[0].diff, plain.blobs[0].diff, rtol=1e-10)


# --- Im2col -------------------------------------------------------------------
@pytest.mark.parametrize("shape,kernel,stride,pad,dilation", [
    ((2, 3, 6, 7), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 2, 7, 6), (3, 2), (2, 3), (1, 1), (2, 1)),
    ((2, 2, 8), (3,), (2,), (2,), (1,)),
])
def test_im2col_matches_naive_and_gradient(shape, kernel, stride, pad, dilation, xp):
    x = _rand(*shape)
    lp = f'type: "Im2col" convolution_param {{ {_spec(kernel, stride, pad, dilation)} }}'
    layer, bottom, top = make_layer(lp, [x], xp=xp)
    layer.forward(bottom, top)
    numpy.testing.assert_array_equal(to_numpy(top[0].data),
                                     naive_im2col(x, kernel, stride, pad, dilation))
    check_gradient(layer, bottom, top, max_elements=60)


# --- InnerProduct ---------------------------------------------------------------
@pytest.mark.parametrize("shape,axis,transpose,bias", [
    ((2, 3, 4, 5), 1, False, True),
    ((2, 3, 4, 5), 2, False, True),
    ((2, 10), 1, True, False),
    ((3, 2, 4), -1, True, True),
])
@pytest.mark.parametrize("thin_batch", [0, 128])
def test_inner_product(monkeypatch, shape, axis, transpose, bias, thin_batch, xp):
    """``thin_batch`` 0: every batch as x W^T; 128: small ones (NumPy) as (W x^T)^T."""
    monkeypatch.setattr(conv, "_IP_THIN_BATCH", thin_batch)
    monkeypatch.setattr(conv, "_IP_ROW_BLOCK", 4)          # two blocks of weight rows
    x = _rand(*shape)
    lp = (f'type: "InnerProduct" inner_product_param {{ num_output: 6 axis: {axis} '
          f'transpose: {str(transpose).lower()} bias_term: {str(bias).lower()} '
          f'weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" std: 0.5 }} }}')
    layer, bottom, top = make_layer(lp, [x], xp=xp)
    ax = axis % len(shape)
    k = int(numpy.prod(shape[ax:]))
    w = to_numpy(layer.blobs[0].data)
    assert w.shape == ((k, 6) if transpose else (6, k))
    layer.forward(bottom, top)
    expected = x.reshape(-1, k) @ (w if transpose else w.T)
    if bias:
        expected = expected + to_numpy(layer.blobs[1].data)
    assert top[0].shape == shape[:ax] + (6,)
    numpy.testing.assert_allclose(to_numpy(top[0].data).reshape(-1, 6), expected, rtol=1e-12)
    check_gradient(layer, bottom, top, max_elements=60)


def test_inner_product_rejects_changed_input_size():
    layer, bottom, top = make_layer('type: "InnerProduct" inner_product_param { num_output: 3 }',
                                    [_rand(2, 4)])
    bottom[0].reshape((2, 5))
    with pytest.raises(CaffeError, match="incompatible with inner product"):
        layer.reshape(bottom, top)


# --- errors ---------------------------------------------------------------------
@pytest.mark.parametrize("extra,shape,message", [
    ("kernel_size: 3 kernel_h: 3 kernel_w: 3", (1, 2, 5, 5), "not both"),
    ("kernel_h: 3", (1, 2, 5, 5), "nonzero"),
    ("kernel_size: 3 kernel_size: 3", (1, 2, 5, 5, 5), "once per spatial dimension"),
    ("kernel_h: 3 kernel_w: 3", (1, 2, 5), "2D"),
    ("kernel_size: 3 group: 2", (1, 3, 5, 5), "multiple of group"),
    ("kernel_size: 3 stride: 0", (1, 2, 5, 5), "stride"),
    ("kernel_size: 7", (1, 2, 5, 5), "too small"),
])
def test_conv_parameter_errors(extra, shape, message):
    with pytest.raises(CaffeError, match=message):
        make_layer(_conv_param(num_output=4, extra=extra), [_rand(*shape)])


def test_conv_rejects_changed_channels():
    layer, bottom, top = make_layer(_conv_param(num_output=2, extra="kernel_size: 1"),
                                    [_rand(1, 3, 4, 4)])
    bottom[0].reshape((1, 4, 4, 4))
    with pytest.raises(CaffeError, match="channels"):
        layer.reshape(bottom, top)


@pytest.mark.parametrize("type_,alias", [("Convolution", "CONVOLUTION"),
                                         ("Deconvolution", "DECONVOLUTION"),
                                         ("Im2col", "IM2COL"),
                                         ("InnerProduct", "INNER_PRODUCT")])
def test_v1_aliases(type_, alias):
    from pycaffe_lite.layer import layer_class
    assert layer_class(alias) is layer_class(type_)
