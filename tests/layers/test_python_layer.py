"""The Python layer: user modules written for pycaffe (``import ... as caffe;
class L(caffe.Layer)``) are imported, instantiated and run like pycaffe does."""
import itertools
import sys
import textwrap

import numpy
import pytest

import pycaffe_lite
from pycaffe_lite.errors import LayerError
from pycaffe_lite.layer import TEST, TRAIN, Layer, layer_class
from pycaffe_lite.testing.gradient_check import check_gradient, make_layer

_counter = itertools.count()

# pycaffe's classic examples/pycaffe/layers/pyloss.py, written again here; the
# gradient is scaled by the loss weight in top[0].diff (the original ignores it).
EUCLIDEAN = '''
import numpy as np
import pycaffe_lite as caffe


class EuclideanLossLayer(caffe.Layer):
    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("Need two inputs to compute distance.")

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise Exception("Inputs must have the same dimension.")
        self.diff = np.zeros_like(bottom[0].data)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.

    def backward(self, top, propagate_down, bottom):
        for i in range(2):
            if not propagate_down[i]:
                continue
            sign = 1 if i == 0 else -1
            bottom[i].diff[...] = sign * top[0].diff[0] * self.diff / bottom[i].num
'''

# A layer with a learnable parameter (pycaffe's self.blobs.add_blob), reading
# param_str and phase, and recording what pycaffe's Blob API returns.
SCALE = '''
import json
import numpy as np
import pycaffe_lite as caffe


class ChannelScale(caffe.Layer):
    def setup(self, bottom, top):
        cfg = json.loads(self.param_str)
        self.factor = cfg["factor"] if self.phase == 0 else 1.0
        self.seen = dict(num=bottom[0].num, channels=bottom[0].channels,
                         height=bottom[0].height, width=bottom[0].width,
                         count=bottom[0].count, shape=bottom[0].shape,
                         data_shape=bottom[0].data.shape)
        self.blobs.add_blob(bottom[0].channels)
        self.blobs[0].data[...] = cfg["init"]

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def _w(self, shape):
        return self.blobs[0].data.reshape((1, -1) + (1,) * (len(shape) - 2))

    def forward(self, bottom, top):
        top[0].data[...] = self.factor * bottom[0].data * self._w(bottom[0].shape)

    def backward(self, top, propagate_down, bottom):
        g = self.factor * top[0].diff
        self.blobs[0].diff[...] += (g * bottom[0].data).sum(axis=(0, 2, 3))
        if propagate_down[0]:
            bottom[0].diff[...] = g * self._w(bottom[0].shape)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """write(source) -> a fresh module name importable from tmp_path."""
    assert pycaffe_lite.Layer is Layer  # user code subclasses caffe.Layer
    monkeypatch.setattr(sys, "path", list(sys.path))
    names = []

    def write(source, on_path=True, directory=None):
        name = f"user_pylayer_{next(_counter)}"
        folder = directory or tmp_path
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        if on_path and directory is None:
            monkeypatch.syspath_prepend(str(tmp_path))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def python_proto(module, layer, bottoms=("a", "b"), tops=("loss",), param_str=None, extra=""):
    text = 'name: "py" type: "Python" '
    text += " ".join(f'bottom: "{b}"' for b in bottoms) + " "
    text += " ".join(f'top: "{t}"' for t in tops) + " "
    text += f'python_param {{ module: "{module}" layer: "{layer}" '
    if param_str is not None:
        text += f"param_str: '{param_str}' "
    return text + "} " + extra


def test_python_type_is_registered():
    assert layer_class("Python").type == "Python"


def test_factory_returns_the_users_layer(user_module):
    name = user_module(EUCLIDEAN)
    rs = numpy.random.RandomState(0)
    layer, bottom, top = make_layer(python_proto(name, "EuclideanLossLayer", param_str="abc",
                                                 extra="loss_weight: 1"),
                                    [rs.standard_normal((4, 3)), rs.standard_normal((4, 3))],
                                    phase=TEST)
    module = sys.modules[name]
    assert type(layer) is module.EuclideanLossLayer
    assert isinstance(layer, pycaffe_lite.Layer) and isinstance(layer, Layer)
    assert layer.type == "Python" and layer.name == "py"
    assert layer.param_str == "abc" and layer.phase == TEST
    assert hasattr(layer.blobs, "add_blob") and len(layer.blobs) == 0
    assert "Python" in repr(layer.error("x"))


def test_euclidean_loss_value_and_gradient(user_module):
    name = user_module(EUCLIDEAN)
    rs = numpy.random.RandomState(1)
    a, b = rs.standard_normal((2, 5, 2, 3))
    layer, bottom, top = make_layer(python_proto(name, "EuclideanLossLayer",
                                                 extra="loss_weight: 2"), [a, b])
    assert top[0].shape == (1,)
    loss = layer.run_forward(bottom, top)
    expected = ((a - b) ** 2).sum() / 5 / 2
    numpy.testing.assert_allclose(top[0].data[0], expected, rtol=1e-12)
    numpy.testing.assert_allclose(loss, 2 * expected, rtol=1e-12)
    layer.backward(top, [True, True], bottom)
    numpy.testing.assert_allclose(bottom[0].diff, 2 * (a - b) / 5, rtol=1e-12)
    numpy.testing.assert_allclose(bottom[1].diff, -2 * (a - b) / 5, rtol=1e-12)
    check_gradient(layer, bottom, top)


def test_param_str_phase_blobs_and_blob_api(user_module):
    name = user_module(SCALE)
    rs = numpy.random.RandomState(2)
    x = rs.standard_normal((2, 3, 4, 5))
    proto = python_proto(name, "ChannelScale", bottoms=("x",), tops=("y",),
                         param_str='{"factor": 3.0, "init": 0.5}')
    layer, bottom, top = make_layer(proto, [x], phase=TRAIN)
    assert layer.seen == dict(num=2, channels=3, height=4, width=5, count=120,
                              shape=(2, 3, 4, 5), data_shape=(2, 3, 4, 5))
    assert [b.shape for b in layer.blobs] == [(3,)]
    assert layer.blobs[0].dtype == numpy.float64
    layer.forward(bottom, top)
    assert top[0].shape == x.shape
    numpy.testing.assert_allclose(top[0].data, 1.5 * x, rtol=1e-12)
    layer.blobs[0].data[...] = rs.uniform(0.5, 1.5, 3)
    check_gradient(layer, bottom, top)
    test_layer = make_layer(proto, [x], phase=TEST)[0]
    assert test_layer.factor == 1.0 and test_layer.phase == TEST


def test_module_found_in_current_directory(user_module, tmp_path, monkeypatch):
    folder = tmp_path / "cwd"
    folder.mkdir()
    name = user_module(EUCLIDEAN, directory=folder)
    monkeypatch.chdir(folder)
    layer = make_layer(python_proto(name, "EuclideanLossLayer"),
                       [numpy.zeros((2, 2)), numpy.ones((2, 2))])[0]
    assert type(layer).__module__ == name


def test_module_found_on_pythonpath(user_module, tmp_path, monkeypatch):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    name = user_module(EUCLIDEAN, directory=folder)
    monkeypatch.setenv("PYTHONPATH", str(folder))
    layer = make_layer(python_proto(name, "EuclideanLossLayer"),
                       [numpy.zeros((2, 2)), numpy.ones((2, 2))])[0]
    assert type(layer).__module__ == name


@pytest.mark.parametrize("source,layer,match", [
    (None, "EuclideanLossLayer", r"python_param.module 'no_such_module_[0-9a-z_]*' could not"),
    (EUCLIDEAN, "NoSuchLayer", r"python_param.layer 'NoSuchLayer' not found in module"),
    ("class NotALayer:\n    pass\n", "NotALayer", r"'NotALayer' .* must be a class derived"),
    ("import surely_missing_dependency_42\n", "L", r"surely_missing_dependency_42"),
    ("raise RuntimeError('boom at import')\n", "L", r"RuntimeError: boom at import"),
])
def test_import_errors_name_module_and_class(user_module, source, layer, match):
    name = "no_such_module_x" if source is None else user_module(source)
    with pytest.raises(LayerError, match=match) as info:
        make_layer(python_proto(name, layer), [numpy.zeros((2, 2)), numpy.zeros((2, 2))])
    assert "layer 'py' (type Python)" in str(info.value)


@pytest.mark.parametrize("param", [
    'name: "py" type: "Python" bottom: "a" top: "b" python_param { layer: "L" }',
    'name: "py" type: "Python" bottom: "a" top: "b" python_param { module: "m" }',
])
def test_missing_module_or_layer_field(param):
    with pytest.raises(LayerError, match="python_param.(module|layer) must name"):
        make_layer(param, [numpy.zeros((2, 2))])


def test_user_errors_propagate(user_module):
    name = user_module(EUCLIDEAN)
    with pytest.raises(Exception, match="Need two inputs"):
        make_layer(python_proto(name, "EuclideanLossLayer", bottoms=("a",)), [numpy.zeros(3)])


def test_python_layer_param_in_a_net_saves_loads_and_shares(user_module, tmp_path):
    # pycaffe's test_python_layer test_parameter: the param blob a Python layer adds
    # gets its gradient from the net, goes into the caffemodel, comes back with
    # copy_from, and is shared by share_with.
    name = user_module(SCALE)
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(
        'layer { name: "x" type: "DummyData" top: "x" dummy_data_param { '
        'shape { dim: 2 dim: 3 dim: 1 dim: 1 } data_filler { type: "constant" value: 1 } } }\n'
        'layer { ' + python_proto(name, "ChannelScale", bottoms=("x",), tops=("y",),
                                   param_str='{"factor": 1.0, "init": 0.0}') + '}\n'
        'layer { name: "loss" type: "Reduction" bottom: "y" top: "loss" loss_weight: 1 }\n')
    net = pycaffe_lite.Net(str(net_file), pycaffe_lite.TRAIN)
    net.forward()
    net.backward()
    layer = net.layers[list(net._layer_names).index("py")]
    assert (layer.blobs[0].data == 0).all()
    numpy.testing.assert_array_equal(layer.blobs[0].diff, [2, 2, 2])   # sum over 2 items
    layer.blobs[0].data[...] += layer.blobs[0].diff
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    layer.blobs[0].data[...] = -1
    net.copy_from(weights)
    numpy.testing.assert_array_equal(layer.blobs[0].data, [2, 2, 2])
    other = pycaffe_lite.Net(str(net_file), pycaffe_lite.TRAIN)
    other.share_with(net)
    assert other.layers[list(other._layer_names).index("py")].blobs[0].data is \
        layer.blobs[0].data
