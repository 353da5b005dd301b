"""Every layer type, one small class each, grouped by family.

Importing this package registers them all (see ``pycaffe_lite.layer.register``).

It is also pycaffe's ``caffe.layers``: ``from pycaffe_lite import layers as L``
then ``L.Convolution(...)`` is NetSpec's layer function (a capitalised name
that is not a module here goes to :data:`pycaffe_lite.net_spec.layers`).
"""
from . import (  # noqa: F401
    common,
    conv,
    data,
    hdf5,
    inputs,
    loss,
    neuron,
    normalization,
    pooling,
    python_layer,
    qcnn,
    quant,
    recurrent,
    shape,
)


def __getattr__(name):
    if name[:1].isupper():
        from pycaffe_lite.net_spec import layers
        return getattr(layers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
