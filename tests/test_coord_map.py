"""caffe.coord_map (pycaffe_lite/coord_map.py): the maps of each layer kind, worked
by hand, composition back to a common ancestor, and crop() on an FCN-style net
that then builds and runs (the Crop's top has the target's shape)."""
import numpy
import pytest

import pycaffe_lite as caffe
from pycaffe_lite import coord_map
from pycaffe_lite import layers as L
from pycaffe_lite import params as P


def _data(shape=(1, 3, 100, 100)):
    return L.Input(shape=dict(dim=list(shape)))


def test_layer_maps_by_hand():
    x = _data()
    conv = L.Convolution(x, kernel_size=5, stride=2, pad=1, num_output=4)
    axis, a, b = coord_map.coord_map(conv.fn)
    assert axis == 1 and a == [0.5] and b == [(1 - 2) / 2]
    dil = L.Convolution(x, kernel_size=3, dilation=2, pad=2, num_output=4)
    assert coord_map.coord_map(dil.fn)[1:] == ([1.0], [0.0])       # extent 5, pad 2
    deconv = L.Deconvolution(x, convolution_param=dict(kernel_size=4, stride=2, pad=1,
                                                       num_output=4))
    axis, a, b = coord_map.coord_map(deconv.fn)
    assert a == [2] and b == [(4 - 1) / 2 - 1]
    assert coord_map.coord_map(L.ReLU(x).fn) == (None, 1, 0)
    crop = L.Crop(x, x, crop_param=dict(axis=2, offset=[3, 4]))
    axis, a, b = coord_map.coord_map(crop.fn)
    assert axis == 1 and a == 1 and list(b) == [-3, -4]
    with pytest.raises(coord_map.UndefinedMapException):
        coord_map.coord_map(L.InnerProduct(x, num_output=2).fn)


def test_composition_to_a_common_ancestor():
    x = _data()
    conv = L.Convolution(x, kernel_size=3, pad=0, num_output=4)           # b = -1
    pool = L.Pooling(conv, kernel_size=2, stride=2, pool=P.Pooling.MAX)  # a = 1/2, b = -1/4
    axis, a, b = coord_map.coord_map_from_to(pool, x)
    # x = 2 * (pool + 1/4) + 1: back through the pooling, then the convolution.
    assert axis == 1 and a == [2] and b == [1.5]
    # and the other way round
    axis, a, b = coord_map.coord_map_from_to(x, pool)
    assert a == [0.5] and b == [-0.75]


def test_crop_aligns_an_upsampled_score_map(tmp_path):
    n = caffe.NetSpec()
    n.data = _data((1, 3, 64, 64))
    n.conv = L.Convolution(n.data, kernel_size=3, pad=50, num_output=4)
    n.pool = L.Pooling(n.conv, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.up = L.Deconvolution(n.pool, convolution_param=dict(kernel_size=4, stride=2,
                                                          num_output=4, bias_term=False))
    n.score = coord_map.crop(n.up, n.data)
    proto = n.to_proto()
    crop = proto.layer[-1]
    assert crop.type == "Crop" and list(crop.bottom) == ["up", "data"]
    # conv: x = c - 49; pool: c = 2 p + 1/2; deconv: p = (u - 3/2) / 2; so x = u - 50
    assert crop.crop_param.axis == 2 and list(crop.crop_param.offset) == [50]
    path = tmp_path / "fcn.prototxt"
    path.write_text(str(proto))
    net = caffe.Net(str(path), caffe.TEST)
    assert net.blobs["up"].data.shape[2] > 64
    assert net.blobs["score"].data.shape == (1, 4, 64, 64)
    net.forward()


def test_crop_errors():
    x = _data()
    pool = L.Pooling(x, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    with pytest.raises(AssertionError, match="scale mismatch"):
        coord_map.crop(pool, x)
    padded = L.Convolution(x, kernel_size=1, pad=2, num_output=1)
    with pytest.raises(AssertionError, match="negative offset"):
        coord_map.crop(x, padded)
    other = _data()
    with pytest.raises(RuntimeError, match="connected by spatial layers"):
        coord_map.coord_map_from_to(L.ReLU(x), other)
    legacy = L.Convolution(x, kernel_h=3, kernel_w=3, num_output=1)
    with pytest.raises(ValueError, match="legacy kernel_h, kernel_w"):
        coord_map.coord_map(legacy.fn)


def test_crop_second_bottom_is_not_walked():
    """Only a Crop's first bottom maps; the reference bottom gives the shape only."""
    x = _data()
    conv = L.Convolution(x, kernel_size=3, num_output=2)                  # b = -1
    reference = L.Convolution(x, kernel_size=5, num_output=2)
    cropped = L.Crop(conv, reference, crop_param=dict(axis=2, offset=1))
    axis, a, b = coord_map.coord_map_from_to(cropped, x)
    assert numpy.all(a == 1) and list(b) == [2]
