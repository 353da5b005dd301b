"""The im2col engine: its faster column paths against the generic one, col2im as
the adjoint of im2col, and the per-axis ranges of ConvGeometry.

The convolutions themselves are tested through the layers (tests/layers/test_conv.py).
"""
import itertools

import numpy
import pytest

from pycaffe_lite.engines import im2col as engine


def _rand(*shape, seed=0):
    return numpy.random.RandomState(seed).standard_normal(shape)


@pytest.mark.parametrize("kernel,pad,dilation", [
    ((3, 3), (1, 1), (1, 1)), ((5, 3), (0, 1), (1, 1)), ((1, 5), (3, 2), (1, 1)),
    ((3, 3), (2, 2), (2, 2)), ((2, 3), (1, 3), (2, 3))])
@pytest.mark.parametrize("size", [(1, 1), (4, 3), (6, 9)])
def test_im2col_whole_row_runs_match_row_by_row(monkeypatch, kernel, pad, dilation, size):
    """Stride 1 with outputs as wide as inputs: the flat-layout copies, whole or by
    bands of output rows, give the columns of the generic row-by-row im2col."""
    geom = engine.ConvGeometry(kernel, (1, 1), pad, dilation)
    assert geom.conv_out_shape(size)[1] == size[1]        # outputs as wide as inputs
    _check_im2col_against_generic(monkeypatch, geom, size, "_rows_are_runs")


def _check_im2col_against_generic(monkeypatch, geom, size, fast_path):
    """im2col of a (2, 3, *size) input, whole and by bands of 2 output rows, equals
    the generic strided copies (``fast_path``, the predicate choosing the faster
    path, patched to refuse)."""
    out = geom.conv_out_shape(size)
    if min(out) <= 0:
        pytest.skip("kernel larger than the padded input")
    x = _rand(2, 3, *size)
    for first_row in range(out[0]):
        rows = min(2, out[0] - first_row) if first_row else out[0]
        fast = numpy.full((2, 3) + geom.kernel + (rows, out[1]), numpy.nan)
        slow = fast.copy()
        engine.im2col(x, geom, fast, first_row)
        with monkeypatch.context() as m:
            m.setattr(engine, fast_path, lambda *args: False)
            engine.im2col(x, geom, slow, first_row)
        numpy.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize("kernel,stride,pad,dilation", [
    ((11, 11), (4, 4), (0, 0), (1, 1)), ((7, 7), (2, 2), (3, 3), (1, 1)),
    ((5, 7), (2, 3), (1, 2), (1, 1)), ((5, 5), (2, 2), (2, 1), (2, 3)),
    ((9, 4), (3, 1), (4, 0), (1, 1))])
@pytest.mark.parametrize("size", [(11, 11), (16, 13), (23, 29)])
def test_im2col_by_phases_matches_strided_copies(monkeypatch, kernel, stride, pad, dilation,
                                                 size):
    """Strided 2-D kernels with many offsets: the phase split gives the columns of
    the generic strided copies, whole or by bands of output rows."""
    geom = engine.ConvGeometry(kernel, stride, pad, dilation)
    assert engine._phases_pay(geom)
    _check_im2col_against_generic(monkeypatch, geom, size, "_phases_pay")


@pytest.mark.parametrize("kernel,pad,dilation", [
    ((3, 3), (1, 1), (1, 1)), ((5, 5), (2, 2), (1, 1)), ((5, 3), (0, 1), (1, 1)),
    ((1, 5), (3, 2), (1, 1)), ((3, 3), (2, 2), (2, 2)), ((2, 3), (1, 3), (2, 3))])
@pytest.mark.parametrize("size", [(1, 1), (4, 3), (6, 9)])
def test_col2im_whole_row_runs_match_row_by_row(kernel, pad, dilation, size):
    """Stride 1 with outputs as wide as inputs: col2im on a scratch column buffer
    adds whole runs into a flat layout; the sums equal the generic col2im's bit for
    bit (float32, same order of additions per pixel)."""
    geom = engine.ConvGeometry(kernel, (1, 1), pad, dilation)
    out = geom.conv_out_shape(size)
    if min(out) <= 0:
        pytest.skip("kernel larger than the padded input")
    cols = _rand(2, 3, *kernel, *out).astype(numpy.float32)
    assert engine._rows_are_runs(numpy.empty((2, 3) + size), geom, cols)
    slow = engine.col2im(cols, geom, numpy.full((2, 3) + size, numpy.nan, numpy.float32))
    fast = engine.col2im(cols.copy(), geom, numpy.full((2, 3) + size, numpy.nan, numpy.float32),
                       scratch_col=True)
    numpy.testing.assert_array_equal(fast, slow)


def test_col2im_is_adjoint_of_im2col():
    geom = engine.ConvGeometry((3, 2), (2, 1), (1, 2), (1, 2))
    x = _rand(2, 3, 7, 6)
    out = geom.conv_out_shape(x.shape[2:])
    cols = engine.im2col(x, geom, numpy.empty((2, 3) + geom.kernel + out))
    y = _rand(*cols.shape, seed=5)
    back = engine.col2im(y, geom, numpy.empty_like(x))
    assert numpy.isclose((cols * y).sum(), (x * back).sum())


def test_geometry_ranges_cover_all_positions():
    """Every (output, offset) pair is either read from the image or left as padding."""
    for k, s, p, d, size in itertools.product((1, 2, 3), (1, 2, 3), (0, 1, 2), (1, 2), (1, 4, 5)):
        geom = engine.ConvGeometry((k,), (s,), (p,), (d,))
        out = geom.conv_out_shape((size,))[0]
        if out <= 0:
            continue
        for off in range(k):
            (lo, hi, src), = geom.axis_ranges((off,), (size,), (out,))
            inside = [o for o in range(out) if 0 <= o * s - p + off * d < size]
            assert list(range(lo, hi)) == inside
            assert list(range(size))[src] == [o * s - p + off * d for o in inside]
