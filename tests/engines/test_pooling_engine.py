"""The pooling engine's layouts.  Pooling and SPP values and gradients are tested
through the layers (tests/layers/test_pooling.py)."""
import numpy

from pycaffe_lite.engines import pooling as engine


def test_phase_layout_roundtrip():
    """Splitting into stride phases and back loses nothing."""
    x = numpy.random.RandomState(14).standard_normal((2, 3, 9, 8))
    for stride, pad in (((2, 3), (1, 0)), ((3, 2), (2, 1)), ((1, 1), (0, 0)), ((1, 1), (1, 2)),
                        ((4, 5), (0, 0))):
        geom = engine.PoolGeometry(x.shape[2:], (3, 3), stride, pad)
        lay = geom.layout(x, numpy.nan)
        assert numpy.isnan(lay).sum() == lay.size - x.size          # the border is all fill
        back = numpy.empty_like(x)
        acc = geom.gradient_layout(back)
        acc[...] = lay
        geom.unlayout(acc, back)
        numpy.testing.assert_array_equal(back, x)
