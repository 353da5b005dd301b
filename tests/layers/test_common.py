"""Concat, Slice, Split, Flatten, Reshape, Crop, Tile, Silence, BatchReindex and
Filter (layers/shape.py); Eltwise, Reduction, ArgMax, Parameter and Embed
(layers/common.py).

Value tests compare with naive references written here (loops where the layer
does index arithmetic); gradient tests go through the shared checker in float64.
The golden cases of the real Caffe are run by tests/test_golden.py.
"""
import itertools

import numpy
import pytest
from google.protobuf import text_format

from pycaffe_lite.backend import to_numpy
from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import LayerError
from pycaffe_lite.layer import create_layer, layer_class
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.testing.gradient_check import check_gradient, make_layer


def rand(*shape, seed=0):
    return numpy.random.RandomState(seed).standard_normal(shape)


def distinct(*shape, seed=0, gap=0.01):
    """Values at least ``gap`` apart (no ties for max / argmax / kinks)."""
    n = int(numpy.prod(shape))
    return (numpy.random.RandomState(seed).permutation(n) - n / 2.0).reshape(shape) * gap


def run(prototxt, bottoms, xp=numpy, dtype=numpy.float64, num_tops=None):
    layer, bottom, top = make_layer(prototxt, bottoms, xp=xp, dtype=dtype, num_tops=num_tops)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


def backward(layer, bottom, top, top_diffs, propagate=None):
    for t, d in zip(top, top_diffs):
        t.diff[...] = t.xp.asarray(d)
    for b in bottom:
        b.diff[...] = 0
    propagate = [True] * len(bottom) if propagate is None else propagate
    layer.backward(top, propagate, bottom)
    return [to_numpy(b.diff) for b in bottom]


def layer_param(text):
    return text_format.Parse(text, caffe_pb2.LayerParameter())


# --- registry -------------------------------------------------------------------

@pytest.mark.parametrize("v1,v2", [
    ("CONCAT", "Concat"), ("SLICE", "Slice"), ("SPLIT", "Split"), ("FLATTEN", "Flatten"),
    ("ELTWISE", "Eltwise"), ("SILENCE", "Silence"), ("ARGMAX", "ArgMax")])
def test_v1_aliases(v1, v2):
    assert layer_class(v1) is layer_class(v2)
    assert layer_class(v1).type == v2


@pytest.mark.parametrize("name", ["Reshape", "Crop", "Tile", "Reduction", "BatchReindex",
                                  "Filter", "Parameter", "Embed"])
def test_registered(name):
    assert layer_class(name).type == name


# --- Concat ---------------------------------------------------------------------

CONCAT_CASES = [
    ("concat_param { axis: 0 }", [(1, 3, 2), (2, 3, 2)], 0),
    ("", [(2, 1, 3), (2, 4, 3), (2, 2, 3)], 1),
    ("concat_param { axis: -1 }", [(2, 3, 1), (2, 3, 2)], 2),
    ("concat_param { concat_dim: 2 }", [(2, 3, 2), (2, 3, 3)], 2),
]


@pytest.mark.parametrize("params,shapes,axis", CONCAT_CASES)
def test_concat_values(xp, params, shapes, axis):
    xs = [rand(*s, seed=i) for i, s in enumerate(shapes)]
    text = f'type: "Concat" {params} ' + " ".join(f'bottom: "b{i}"' for i in range(len(xs)))
    layer, bottom, top = run(text, xs, xp=xp)
    numpy.testing.assert_array_equal(to_numpy(top[0].data), numpy.concatenate(xs, axis=axis))
    g = rand(*top[0].shape, seed=9)
    diffs = backward(layer, bottom, top, [g])
    for d, part in zip(diffs, numpy.split(g, numpy.cumsum([s[axis] for s in shapes])[:-1],
                                          axis=axis)):
        numpy.testing.assert_array_equal(d, part)


@pytest.mark.parametrize("params,shapes,axis", CONCAT_CASES)
def test_concat_gradient(params, shapes, axis):
    xs = [rand(*s, seed=i) for i, s in enumerate(shapes)]
    text = f'type: "Concat" {params} ' + " ".join(f'bottom: "b{i}"' for i in range(len(xs)))
    check_gradient(*make_layer(text, xs))


def test_concat_single_bottom_is_a_view():
    x = rand(2, 3)
    layer, bottom, top = run('type: "Concat"', [x])
    numpy.testing.assert_array_equal(top[0].data, x)
    bottom[0].data[0, 0] = 42.0
    assert top[0].data[0, 0] == 42.0
    check_gradient(layer, bottom, top)


def test_concat_errors():
    with pytest.raises(LayerError, match="either axis or concat_dim"):
        make_layer('type: "Concat" concat_param { axis: 1 concat_dim: 1 }',
                   [rand(2, 3), rand(2, 3)])
    with pytest.raises(LayerError, match="expected .* except along axis 1"):
        make_layer('type: "Concat" bottom: "a" bottom: "b"', [rand(2, 3), rand(3, 3)])
    with pytest.raises(LayerError, match="same number of axes"):
        make_layer('type: "Concat"', [rand(2, 3), rand(2, 3, 1)])
    with pytest.raises(LayerError, match="out of range"):
        make_layer('type: "Concat" concat_param { axis: 2 }', [rand(2, 3), rand(2, 3)])
    with pytest.raises(LayerError, match=r"concat_dim 2 is out of range for bottom 'a' of "
                                         r"shape \(2, 3\)"):
        make_layer('type: "Concat" bottom: "a" bottom: "b" concat_param { concat_dim: 2 }',
                   [rand(2, 3), rand(2, 3)])


# --- Slice ----------------------------------------------------------------------

SLICE_CASES = [
    ("slice_param { axis: 0 }", (4, 3, 2), 2, 0, [2, 2]),
    ("slice_param { axis: 1 slice_point: 1 slice_point: 4 }", (2, 6, 2), 3, 1, [1, 3, 2]),
    ("slice_param { axis: -1 slice_point: 2 }", (2, 3, 5), 2, 2, [2, 3]),
    ("slice_param { slice_dim: 0 }", (6, 2), 3, 0, [2, 2, 2]),
    ("", (2, 4), 1, 1, [4]),
]


@pytest.mark.parametrize("params,shape,n_top,axis,sizes", SLICE_CASES)
def test_slice_values(xp, params, shape, n_top, axis, sizes):
    x = rand(*shape)
    layer, bottom, top = run(f'type: "Slice" {params}', [x], xp=xp, num_tops=n_top)
    parts = numpy.split(x, numpy.cumsum(sizes)[:-1], axis=axis)
    for t, part in zip(top, parts):
        numpy.testing.assert_array_equal(to_numpy(t.data), part)
    gs = [rand(*t.shape, seed=5 + i) for i, t in enumerate(top)]
    (dx,) = backward(layer, bottom, top, gs)
    numpy.testing.assert_array_equal(dx, numpy.concatenate(gs, axis=axis))


@pytest.mark.parametrize("params,shape,n_top,axis,sizes", SLICE_CASES)
def test_slice_gradient(params, shape, n_top, axis, sizes):
    check_gradient(*make_layer(f'type: "Slice" {params}', [rand(*shape)], num_tops=n_top))


def test_slice_errors():
    with pytest.raises(LayerError, match="evenly divide"):
        make_layer('type: "Slice" slice_param { axis: 1 }', [rand(2, 5)], num_tops=2)
    with pytest.raises(LayerError, match="expected 2"):
        make_layer('type: "Slice" slice_param { slice_point: 1 }', [rand(2, 5)], num_tops=3)
    with pytest.raises(LayerError, match="increase strictly"):
        make_layer('type: "Slice" slice_param { slice_point: 3 slice_point: 2 }',
                   [rand(2, 5)], num_tops=3)
    with pytest.raises(LayerError, match="beyond axis"):
        make_layer('type: "Slice" slice_param { slice_point: 7 }', [rand(2, 5)], num_tops=2)
    with pytest.raises(LayerError, match="either axis or slice_dim"):
        make_layer('type: "Slice" slice_param { axis: 1 slice_dim: 1 }', [rand(2, 4)],
                   num_tops=2)
    with pytest.raises(LayerError, match=r"slice_dim 2 is out of range .* shape \(2, 4\)"):
        make_layer('type: "Slice" slice_param { slice_dim: 2 }', [rand(2, 4)], num_tops=2)


# --- Split ----------------------------------------------------------------------

@pytest.mark.parametrize("n_top", [1, 2, 3])
def test_split_values(xp, n_top):
    x = rand(2, 3, 4)
    layer, bottom, top = run('type: "Split"', [x], xp=xp, num_tops=n_top)
    for t in top:
        numpy.testing.assert_array_equal(to_numpy(t.data), x)
    gs = [rand(2, 3, 4, seed=3 + i) for i in range(n_top)]
    (dx,) = backward(layer, bottom, top, gs)
    numpy.testing.assert_allclose(dx, sum(gs), rtol=1e-15)
    # the tops keep their own diffs
    for t, g in zip(top, gs):
        numpy.testing.assert_array_equal(to_numpy(t.diff), g)


@pytest.mark.parametrize("n_top", [1, 3])
def test_split_gradient(n_top):
    check_gradient(*make_layer('type: "Split"', [rand(2, 3)], num_tops=n_top))


@pytest.mark.parametrize("kind", ["Split", "Flatten", "Reshape"])
def test_not_in_place(kind):
    blob = Blob((2, 3, 4), dtype=numpy.float64)
    layer = create_layer(layer_param(f'name: "x" type: "{kind}" bottom: "a" top: "a" '
                                     'reshape_param { shape { dim: -1 } }'),
                         dtype=numpy.float64)
    with pytest.raises(LayerError, match="in-place"):
        layer.set_up([blob], [blob])


# --- Flatten / Reshape ----------------------------------------------------------

def check_reshapes(xp, text, x, expected):
    """A layer that only reshapes: y = x.reshape(expected), dE/dx = dE/dy.reshape(x.shape)."""
    layer, bottom, top = run(text, [x], xp=xp)
    assert top[0].shape == expected
    numpy.testing.assert_array_equal(to_numpy(top[0].data), x.reshape(expected))
    g = rand(*expected, seed=4)
    (dx,) = backward(layer, bottom, top, [g])
    numpy.testing.assert_array_equal(dx, g.reshape(x.shape))


@pytest.mark.parametrize("params,expected", [
    ("", (2, 90)),
    ("flatten_param { axis: 2 }", (2, 3, 30)),
    ("flatten_param { end_axis: -2 }", (2, 18, 5)),
    ("flatten_param { axis: 0 end_axis: 1 }", (6, 6, 5)),
    ("flatten_param { axis: -1 }", (2, 3, 6, 5)),
    ("flatten_param { axis: 2 end_axis: 1 }", (2, 3, 1, 6, 5)),
])
def test_flatten_shapes(xp, params, expected):
    check_reshapes(xp, f'type: "Flatten" {params}', rand(2, 3, 6, 5), expected)


def test_flatten_gradient_and_view():
    layer, bottom, top = make_layer('type: "Flatten" flatten_param { axis: 1 }', [rand(2, 3, 4)])
    bottom[0].data[1, 2, 3] = 7.0
    assert top[0].data[1, 11] == 7.0  # the top views the bottom's data
    check_gradient(layer, bottom, top)


def test_flatten_errors():
    with pytest.raises(LayerError, match="comes before"):
        make_layer('type: "Flatten" flatten_param { axis: 2 end_axis: 0 }', [rand(2, 3, 4)])
    with pytest.raises(LayerError, match="out of range"):
        make_layer('type: "Flatten" flatten_param { axis: 3 }', [rand(2, 3, 4)])


RESHAPE_CASES = [  # bottom (2, 3, 6, 5); Caffe's test_reshape_layer.cpp
    ("shape { dim: 0 dim: -1 dim: 1 dim: 1 }", (2, 90, 1, 1)),
    ("shape { dim: 0 dim: 0 dim: 0 dim: 0 }", (2, 3, 6, 5)),
    ("shape { dim: 0 dim: 3 dim: 10 dim: -1 }", (2, 3, 10, 3)),
    ("axis: 1 shape { dim: 3 dim: 10 dim: -1 }", (2, 3, 10, 3)),
    ("axis: 0 num_axes: 0 shape { dim: 1 dim: 1 dim: 1 }", (1, 1, 1, 2, 3, 6, 5)),
    ("axis: 2 num_axes: 0 shape { dim: 1 dim: 1 dim: 1 }", (2, 3, 1, 1, 1, 6, 5)),
    ("axis: -1 num_axes: 0 shape { dim: 1 dim: 1 dim: 1 }", (2, 3, 6, 5, 1, 1, 1)),
    ("axis: 1 num_axes: 2 shape { dim: -1 }", (2, 18, 5)),
    ("axis: -3 num_axes: 1 shape { dim: 2 dim: 3 }", (2, 3, 2, 3, 5)),
    ("axis: -2 num_axes: 1 shape { dim: 0 dim: -1 }", (2, 3, 6, 5, 1)),
    ("axis: 1 num_axes: 1 shape { }", (2, 6, 5)),
    ("shape { dim: -1 }", (180,)),
]


@pytest.mark.parametrize("params,expected", RESHAPE_CASES)
def test_reshape_shapes(xp, params, expected):
    x = rand(2, 3, 6, 5) if expected != (2, 6, 5) else rand(2, 1, 6, 5)
    check_reshapes(xp, f'type: "Reshape" reshape_param {{ {params} }}', x, expected)


def test_reshape_gradient_and_new_bottom_shape():
    layer, bottom, top = make_layer(
        'type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }', [rand(2, 3, 4)])
    check_gradient(layer, bottom, top)
    bottom[0].reshape(4, 3, 2)
    bottom[0].data[...] = rand(4, 3, 2, seed=2)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (4, 6)
    numpy.testing.assert_array_equal(top[0].data, rand(4, 3, 2, seed=2).reshape(4, 6))


@pytest.mark.parametrize("params,message", [
    ("shape { dim: -1 dim: -1 }", "at most one"),
    ("shape { dim: 7 dim: -1 }", "not divisible"),
    ("shape { dim: 5 dim: 5 }", "has 25 elements"),
    ("shape { dim: -2 dim: -12 }", "negative dims"),
    ("axis: 5 shape { dim: 1 }", "out of range"),
    ("axis: 2 num_axes: 3 shape { dim: 1 }", "beyond"),
    ("axis: 3 shape { dim: 0 dim: 0 }", "no axis"),
    ("num_axes: -2 shape { dim: 1 }", "num_axes"),
])
def test_reshape_errors(params, message):
    with pytest.raises(LayerError, match=message):
        make_layer(f'type: "Reshape" reshape_param {{ {params} }}', [rand(2, 3, 4)])


# --- Crop -----------------------------------------------------------------------

def crop_reference(x, ref_shape, axis, offsets):
    axis = axis % x.ndim
    offs = [0] * x.ndim
    shape = list(x.shape)
    for i in range(axis, x.ndim):
        offs[i] = offsets[0] if len(offsets) == 1 else (offsets[i - axis] if offsets else 0)
        shape[i] = ref_shape[i]
    out = numpy.zeros(shape)
    for idx in itertools.product(*[range(s) for s in shape]):
        out[idx] = x[tuple(i + o for i, o in zip(idx, offs))]
    return out


CROP_CASES = [
    ("crop_param { axis: 1 offset: 1 }", (2, 4, 7, 7), (2, 2, 5, 5), 1, [1]),
    ("crop_param { axis: 2 offset: 1 offset: 2 }", (2, 3, 8, 9), (2, 3, 5, 6), 2, [1, 2]),
    ("", (2, 3, 6, 6), (1, 1, 4, 3), 2, []),
    ("crop_param { axis: -1 offset: 3 }", (2, 3, 6), (1, 1, 2), -1, [3]),
    ("crop_param { axis: 0 offset: 1 offset: 0 offset: 2 }", (3, 4, 5), (2, 4, 3), 0, [1, 0, 2]),
]


@pytest.mark.parametrize("params,shape,ref_shape,axis,offsets", CROP_CASES)
def test_crop_values(xp, params, shape, ref_shape, axis, offsets):
    x = rand(*shape)
    layer, bottom, top = run(f'type: "Crop" {params}', [x, rand(*ref_shape, seed=1)], xp=xp)
    expected = crop_reference(x, ref_shape, axis, offsets)
    numpy.testing.assert_array_equal(to_numpy(top[0].data), expected)
    # backward: the top diff lands on the window, zeros elsewhere, nothing to bottom 1
    g = rand(*top[0].shape, seed=2)
    bottom[1].diff[...] = 5.0
    bottom[0].diff[...] = 5.0
    top[0].diff[...] = xp.asarray(g)
    layer.backward(top, [True, True], bottom)
    dx = to_numpy(bottom[0].diff)
    numpy.testing.assert_array_equal(crop_reference(dx, ref_shape, axis, offsets), g)
    assert dx.sum() == pytest.approx(g.sum())
    assert (to_numpy(bottom[1].diff) == 5.0).all()


@pytest.mark.parametrize("params,shape,ref_shape,axis,offsets", CROP_CASES[:3])
def test_crop_gradient(params, shape, ref_shape, axis, offsets):
    layer, bottom, top = make_layer(f'type: "Crop" {params}', [rand(*shape), rand(*ref_shape)])
    check_gradient(layer, bottom, top, check_bottom=[0])


def test_crop_errors():
    with pytest.raises(LayerError, match="out of bounds"):
        make_layer('type: "Crop" crop_param { axis: 2 offset: 3 }',
                   [rand(1, 1, 5, 5), rand(1, 1, 3, 3)])
    with pytest.raises(LayerError, match="expected one offset or 2"):
        make_layer('type: "Crop" crop_param { axis: 2 offset: 1 offset: 1 offset: 1 }',
                   [rand(1, 1, 5, 5), rand(1, 1, 3, 3)])


# --- Eltwise --------------------------------------------------------------------

def test_eltwise_prod_values(xp):
    a, b, c = rand(2, 3, seed=0), rand(2, 3, seed=1), rand(2, 3, seed=2)
    for stable in ("true", "false"):
        layer, bottom, top = run('type: "Eltwise" eltwise_param { operation: PROD '
                                 f'stable_prod_grad: {stable} }}', [a, b, c], xp=xp)
        numpy.testing.assert_allclose(to_numpy(top[0].data), a * b * c, rtol=1e-14)
        g = rand(2, 3, seed=3)
        da, db, dc = backward(layer, bottom, top, [g])
        numpy.testing.assert_allclose(da, g * b * c, rtol=1e-12)
        numpy.testing.assert_allclose(db, g * a * c, rtol=1e-12)
        numpy.testing.assert_allclose(dc, g * a * b, rtol=1e-12)


def test_eltwise_prod_unstable_divides_by_the_bottom():
    a, b = numpy.array([[0.0, 2.0]]), numpy.array([[3.0, 4.0]])
    g = numpy.ones((1, 2))
    with numpy.errstate(divide="ignore", invalid="ignore"):
        layer, bottom, top = run('type: "Eltwise" eltwise_param { operation: PROD '
                                 'stable_prod_grad: false }', [a, b])
        da, db = backward(layer, bottom, top, [g])
    assert numpy.isnan(da[0, 0]) and da[0, 1] == 4.0  # 0 / 0, as Caffe's caffe_div
    layer, bottom, top = run('type: "Eltwise" eltwise_param { operation: PROD }', [a, b])
    da, db = backward(layer, bottom, top, [g])
    numpy.testing.assert_array_equal(da, [[3.0, 4.0]])
    numpy.testing.assert_array_equal(db, [[0.0, 2.0]])


def test_eltwise_sum_coeff_values(xp):
    xs = [rand(2, 3, seed=i) for i in range(3)]
    layer, bottom, top = run('type: "Eltwise" eltwise_param { operation: SUM coeff: 1 '
                             'coeff: -0.5 coeff: 2 }', xs, xp=xp)
    numpy.testing.assert_allclose(to_numpy(top[0].data), xs[0] - 0.5 * xs[1] + 2 * xs[2],
                                  rtol=1e-14)
    g = rand(2, 3, seed=5)
    diffs = backward(layer, bottom, top, [g])
    for d, c in zip(diffs, [1, -0.5, 2]):
        numpy.testing.assert_array_equal(d, c * g)


def test_eltwise_max_routes_ties_like_caffe(xp):
    # element 0: a == b -> bottom 1; element 1: all equal -> bottom 1 (strict > after);
    # element 2: c largest; element 3: a largest
    a = numpy.array([1.0, 2.0, 0.0, 5.0])
    b = numpy.array([1.0, 2.0, 1.0, 0.0])
    c = numpy.array([0.0, 2.0, 3.0, 1.0])
    layer, bottom, top = run('type: "Eltwise" eltwise_param { operation: MAX }',
                             [a, b, c], xp=xp)
    numpy.testing.assert_array_equal(to_numpy(top[0].data), [1, 2, 3, 5])
    g = numpy.array([10.0, 20.0, 30.0, 40.0])
    da, db, dc = backward(layer, bottom, top, [g])
    numpy.testing.assert_array_equal(da, [0, 0, 0, 40])
    numpy.testing.assert_array_equal(db, [10, 20, 0, 0])
    numpy.testing.assert_array_equal(dc, [0, 0, 30, 0])


@pytest.mark.parametrize("params", [
    "operation: PROD", "operation: PROD stable_prod_grad: false", "operation: SUM",
    "operation: SUM coeff: 0.5 coeff: -2 coeff: 3", "operation: MAX"])
def test_eltwise_gradient(params):
    xs = list(distinct(3, 2, 3, 4, gap=0.05) + (0.33 if "PROD" in params else 0))
    layer, bottom, top = make_layer(f'type: "Eltwise" eltwise_param {{ {params} }}', xs)
    check_gradient(layer, bottom, top)


def test_eltwise_errors():
    with pytest.raises(LayerError, match="one per bottom"):
        make_layer('type: "Eltwise" eltwise_param { coeff: 1 }', [rand(2), rand(2)])
    with pytest.raises(LayerError, match="only for operation SUM"):
        make_layer('type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 1 }',
                   [rand(2), rand(2)])
    with pytest.raises(LayerError, match="expected \\(2, 3\\)"):
        make_layer('type: "Eltwise" bottom: "a" bottom: "b"', [rand(2, 3), rand(3, 2)])


# --- Tile -----------------------------------------------------------------------

def tile_reference(x, axis, tiles):
    axis = axis % x.ndim
    shape = list(x.shape)
    shape[axis] *= tiles
    out = numpy.zeros(shape)
    for idx in itertools.product(*[range(s) for s in shape]):
        src = list(idx)
        src[axis] = idx[axis] % x.shape[axis]
        out[idx] = x[tuple(src)]
    return out


@pytest.mark.parametrize("axis,tiles", [(1, 3), (-1, 2), (0, 2), (2, 1)])
def test_tile_values(xp, axis, tiles):
    x = rand(2, 3, 4)
    layer, bottom, top = run(f'type: "Tile" tile_param {{ axis: {axis} tiles: {tiles} }}',
                             [x], xp=xp)
    numpy.testing.assert_array_equal(to_numpy(top[0].data), tile_reference(x, axis, tiles))
    g = rand(*top[0].shape, seed=1)
    (dx,) = backward(layer, bottom, top, [g])
    expected = numpy.zeros_like(x)
    for idx in itertools.product(*[range(s) for s in g.shape]):
        src = list(idx)
        src[axis % 3] = idx[axis % 3] % x.shape[axis % 3]
        expected[tuple(src)] += g[idx]
    numpy.testing.assert_allclose(dx, expected, rtol=1e-13)


@pytest.mark.parametrize("axis,tiles", [(1, 3), (-1, 2)])
def test_tile_gradient(axis, tiles):
    check_gradient(*make_layer(f'type: "Tile" tile_param {{ axis: {axis} tiles: {tiles} }}',
                               [rand(2, 3, 4)]))


def test_tile_errors():
    with pytest.raises(LayerError, match="must be specified"):
        make_layer('type: "Tile"', [rand(2, 3)])
    with pytest.raises(LayerError, match="positive"):
        make_layer('type: "Tile" tile_param { tiles: 0 }', [rand(2, 3)])


# --- Reduction ------------------------------------------------------------------

REDUCTIONS = {
    "SUM": (lambda v: v.sum(), lambda v, dim: numpy.ones_like(v)),
    "ASUM": (lambda v: numpy.abs(v).sum(), lambda v, dim: numpy.sign(v)),
    "SUMSQ": (lambda v: (v * v).sum(), lambda v, dim: 2 * v),
    "MEAN": (lambda v: v.sum() / v.size, lambda v, dim: numpy.ones_like(v) / dim),
}


@pytest.mark.parametrize("op", list(REDUCTIONS))
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, -2.0), (2, 0.5), (-1, 1.0)])
def test_reduction_values(xp, op, axis, coeff):
    x = distinct(2, 3, 4, gap=0.1)
    layer, bottom, top = run(f'type: "Reduction" reduction_param {{ operation: {op} '
                             f'axis: {axis} coeff: {coeff} }}', [x], xp=xp)
    a = axis % 3
    assert top[0].shape == x.shape[:a]
    rows = x.reshape(int(numpy.prod(x.shape[:a])), -1)
    value, grad = REDUCTIONS[op]
    expected = numpy.array([coeff * value(r) for r in rows]).reshape(x.shape[:a])
    numpy.testing.assert_allclose(to_numpy(top[0].data), expected, rtol=1e-12)
    g = rand(*top[0].shape, seed=3)
    (dx,) = backward(layer, bottom, top, [g])
    expected = numpy.stack([coeff * gi * grad(r, r.size)
                            for r, gi in zip(rows, g.reshape(-1))]).reshape(x.shape)
    numpy.testing.assert_allclose(dx, expected, rtol=1e-12)


@pytest.mark.parametrize("op", list(REDUCTIONS))
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_reduction_gradient(op, axis):
    x = distinct(2, 3, 4, gap=0.1)  # |x| >= 0.05: away from ASUM's kink at 0
    layer, bottom, top = make_layer(f'type: "Reduction" reduction_param {{ operation: {op} '
                                    f'axis: {axis} coeff: 0.7 }}', [x])
    check_gradient(layer, bottom, top)


def test_reduction_asum_sign_of_zero_is_zero():
    layer, bottom, top = run('type: "Reduction" reduction_param { operation: ASUM }',
                             [numpy.array([0.0, -2.0, 3.0])])
    assert float(top[0].data) == 5.0
    (dx,) = backward(layer, bottom, top, [numpy.array(2.0)])
    numpy.testing.assert_array_equal(dx, [0.0, -2.0, 2.0])


def test_reduction_float32_mean_coeff():
    layer, _, top = run('type: "Reduction" reduction_param { operation: MEAN '
                        'axis: 1 coeff: -2 }', [numpy.ones((2, 3, 4))], dtype=numpy.float32)
    assert layer.coeff == numpy.float32(-2) / numpy.float32(12)
    assert top[0].data.dtype == numpy.float32


# --- Silence --------------------------------------------------------------------

def test_silence():
    layer, bottom, top = make_layer('type: "Silence"', [rand(2, 3), rand(4)], num_tops=0)
    assert top == []
    layer.forward(bottom, top)
    bottom[0].diff[...] = 1.0
    bottom[1].diff[...] = 1.0
    layer.backward(top, [True, False], bottom)
    assert (bottom[0].diff == 0).all() and (bottom[1].diff == 1).all()
    check_gradient(layer, bottom, top)


# --- ArgMax ---------------------------------------------------------------------

def caffe_top_k(values, k):
    """std::partial_sort with std::greater<pair<value, index>>."""
    pairs = sorted(((v, j) for j, v in enumerate(values)), reverse=True)[:k]
    return [j for _, j in pairs], [v for v, _ in pairs]


def argmax_reference(x, top_k, out_max_val, axis=None):
    if axis is None:
        rows = x.reshape(x.shape[0], -1)
        shape = [1] * max(x.ndim, 3)
        shape[0], shape[2] = x.shape[0], top_k
        if out_max_val:
            shape[1] = 2
        out = numpy.zeros(shape).reshape(x.shape[0], -1)
        for n, row in enumerate(rows):
            idx, val = caffe_top_k(list(row), top_k)
            out[n, :top_k] = idx
            if out_max_val:
                out[n, top_k:2 * top_k] = val
        return out.reshape(shape)
    moved = numpy.moveaxis(x, axis, -1)
    out = numpy.zeros(moved.shape[:-1] + (top_k,))
    for idx in itertools.product(*[range(s) for s in moved.shape[:-1]]):
        ind, val = caffe_top_k(list(moved[idx]), top_k)
        out[idx] = val if out_max_val else ind
    return numpy.moveaxis(out, -1, axis)


@pytest.mark.parametrize("params,axis,top_k,out_max_val", [
    ("", None, 1, False),
    ("top_k: 2 out_max_val: true", None, 2, True),
    ("top_k: 3", None, 3, False),
    ("axis: 1", 1, 1, False),
    ("axis: 1 top_k: 2 out_max_val: true", 1, 2, True),
    ("axis: -1 top_k: 3", 3, 3, False),
    ("axis: 0 top_k: 2", 0, 2, False),
])
def test_argmax_values(xp, params, axis, top_k, out_max_val):
    # rounded values produce ties: Caffe puts the larger index first
    x = numpy.round(rand(3, 4, 2, 5), 0)
    _, _, top = run(f'type: "ArgMax" argmax_param {{ {params} }}', [x], xp=xp)
    expected = argmax_reference(x, top_k, out_max_val, axis)
    assert top[0].shape == expected.shape
    numpy.testing.assert_array_equal(to_numpy(top[0].data), expected)


def test_argmax_2d_shape_and_ties():
    x = numpy.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    _, _, top = run('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', [x],
                    dtype=numpy.float32)
    assert top[0].shape == (2, 2, 2)
    numpy.testing.assert_array_equal(top[0].data, [[[2, 1], [3, 3]], [[3, 2], [2, 2]]])


def test_argmax_backward():
    layer, bottom, top = run('type: "ArgMax"', [rand(2, 3)])
    layer.backward(top, [False], bottom)  # nothing asked: fine
    with pytest.raises(LayerError, match="no backward"):
        layer.backward(top, [True], bottom)


def test_argmax_errors():
    with pytest.raises(LayerError, match="top_k 4 exceeds"):
        make_layer('type: "ArgMax" argmax_param { top_k: 4 }', [rand(2, 3)])
    with pytest.raises(LayerError, match="top_k 3 exceeds"):
        make_layer('type: "ArgMax" argmax_param { axis: 0 top_k: 3 }', [rand(2, 3)])
    with pytest.raises(LayerError, match="at least 1"):
        make_layer('type: "ArgMax" argmax_param { top_k: 0 }', [rand(2, 3)])


# --- BatchReindex ---------------------------------------------------------------

def test_batch_reindex_values(xp):
    x = rand(4, 2, 3)
    idx = numpy.array([2.0, 0.0, 2.0, 3.0, 2.0])
    layer, bottom, top = run('type: "BatchReindex"', [x, idx], xp=xp)
    assert top[0].shape == (5, 2, 3)
    for m, n in enumerate(idx.astype(int)):
        numpy.testing.assert_array_equal(to_numpy(top[0].data[m]), x[n])
    g = rand(5, 2, 3, seed=1)
    dx, _ = backward(layer, bottom, top, [g], propagate=[True, False])
    expected = numpy.zeros_like(x)
    for m, n in enumerate(idx.astype(int)):
        expected[n] += g[m]
    numpy.testing.assert_allclose(dx, expected, rtol=1e-14)


def test_batch_reindex_gradient():
    layer, bottom, top = make_layer('type: "BatchReindex"',
                                    [rand(4, 3), numpy.array([3.0, 1.0, 1.0])])
    check_gradient(layer, bottom, top, check_bottom=[0])


def test_batch_reindex_errors():
    with pytest.raises(LayerError, match=r"in \[0, 4\)"):
        run('type: "BatchReindex"', [rand(4, 3), numpy.array([4.0])])
    with pytest.raises(LayerError, match="1-D"):
        make_layer('type: "BatchReindex"', [rand(4, 3), numpy.zeros((1, 1))])
    layer, bottom, top = run('type: "BatchReindex"', [rand(4, 3), numpy.array([1.0])])
    with pytest.raises(LayerError, match="cannot backpropagate to the indices"):
        layer.backward(top, [True, True], bottom)


# --- Filter ---------------------------------------------------------------------

def test_filter_values(xp):
    a, b = rand(5, 2, 3), rand(5, 4, seed=1)
    selector = numpy.array([1.0, 0.0, 0.0, 2.5, 1.0]).reshape(5, 1, 1)
    layer, bottom, top = make_layer('type: "Filter"', [a, b, selector], xp=xp, num_tops=2)
    assert top[0].shape == (5, 2, 3)  # the first reshape keeps the whole batch (Caffe)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    keep = [0, 3, 4]
    numpy.testing.assert_array_equal(to_numpy(top[0].data), a[keep])
    numpy.testing.assert_array_equal(to_numpy(top[1].data), b[keep])
    ga, gb = rand(3, 2, 3, seed=2), rand(3, 4, seed=3)
    da, db, _ = backward(layer, bottom, top, [ga, gb], propagate=[True, True, False])
    expected = numpy.zeros_like(a)
    expected[keep] = ga
    numpy.testing.assert_array_equal(da, expected)
    expected = numpy.zeros_like(b)
    expected[keep] = gb
    numpy.testing.assert_array_equal(db, expected)


def test_filter_gradient_and_errors():
    selector = numpy.array([0.0, 1.0, 1.0, 0.0])
    layer, bottom, top = make_layer('type: "Filter"', [rand(4, 3), rand(4), selector],
                                    num_tops=2)
    check_gradient(layer, bottom, top, check_bottom=[0, 1])
    with pytest.raises(LayerError, match="cannot backpropagate to the selector"):
        layer.backward(top, [True, True, True], bottom)
    with pytest.raises(LayerError, match="one top per filtered bottom"):
        make_layer('type: "Filter"', [rand(4, 3), selector], num_tops=2)
    with pytest.raises(LayerError, match=r"expected \(N, 1, ..., 1\)"):
        make_layer('type: "Filter"', [rand(4, 3), numpy.zeros((4, 2))])
    with pytest.raises(LayerError, match="expected 4 items"):
        make_layer('type: "Filter"', [rand(3, 3), selector])


# --- Parameter ------------------------------------------------------------------

def test_parameter(xp):
    layer, bottom, top = make_layer(
        'type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }', [], xp=xp)
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (2, 3)
    assert (to_numpy(layer.blobs[0].data) == 0).all()
    w = rand(2, 3)
    layer.blobs[0].data[...] = xp.asarray(w)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    numpy.testing.assert_array_equal(to_numpy(top[0].data), w)
    layer.blobs[0].diff[...] = 1.0
    top[0].diff[...] = xp.asarray(w)
    layer.backward(top, [], bottom)
    numpy.testing.assert_array_equal(to_numpy(layer.blobs[0].diff), w + 1.0)  # accumulates


def test_parameter_gradient():
    layer, bottom, top = make_layer(
        'type: "Parameter" parameter_param { shape { dim: 3 dim: 2 } }', [])
    layer.blobs[0].data[...] = rand(3, 2)
    check_gradient(layer, bottom, top)


# --- Embed ----------------------------------------------------------------------

EMBED = ('type: "Embed" embed_param { num_output: 4 input_dim: 7 bias_term: %s '
         'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }')


@pytest.mark.parametrize("bias", ["true", "false"])
def test_embed_values(xp, bias):
    idx = numpy.array([[0.0, 6.0, 3.0], [3.0, 3.0, 1.0]])
    layer, bottom, top = make_layer(EMBED % bias, [idx], xp=xp)
    assert [b.shape for b in layer.blobs] == [(7, 4)] + ([(4,)] if bias == "true" else [])
    W = to_numpy(layer.blobs[0].data)
    assert W.std() > 0  # the gaussian filler ran
    layer.forward(bottom, top)
    assert top[0].shape == (2, 3, 4)
    b = to_numpy(layer.blobs[1].data) if bias == "true" else numpy.zeros(4)
    for i, j in itertools.product(range(2), range(3)):
        numpy.testing.assert_allclose(to_numpy(top[0].data[i, j]), W[int(idx[i, j])] + b,
                                      rtol=1e-14)
    g = rand(2, 3, 4, seed=3)
    for p in layer.blobs:
        p.diff[...] = 1.0
    top[0].diff[...] = xp.asarray(g)
    layer.backward(top, [False], bottom)
    dW = numpy.ones((7, 4))
    for i, j in itertools.product(range(2), range(3)):
        dW[int(idx[i, j])] += g[i, j]
    numpy.testing.assert_allclose(to_numpy(layer.blobs[0].diff), dW, rtol=1e-13)
    if bias == "true":
        numpy.testing.assert_allclose(to_numpy(layer.blobs[1].diff),
                                      1.0 + g.reshape(-1, 4).sum(0), rtol=1e-13)


def test_embed_gradient():
    layer, bottom, top = make_layer(EMBED % "true", [numpy.array([[1.0, 5.0, 1.0, 0.0]])])
    check_gradient(layer, bottom, top, check_bottom=[])


def test_embed_errors():
    with pytest.raises(LayerError, match="in \\[0, 7\\)"):
        run(EMBED % "true", [numpy.array([7.0])])
    with pytest.raises(LayerError, match="non-integer"):
        run(EMBED % "true", [numpy.array([1.5])])
    with pytest.raises(LayerError, match="num_output must be positive"):
        make_layer('type: "Embed" embed_param { input_dim: 3 }', [numpy.zeros(2)])
    with pytest.raises(LayerError, match="input_dim must be positive"):
        make_layer('type: "Embed" embed_param { num_output: 3 }', [numpy.zeros(2)])
    layer, bottom, top = run(EMBED % "false", [numpy.array([1.0])])
    with pytest.raises(LayerError, match="cannot backpropagate to the indices"):
        layer.backward(top, [True], bottom)
