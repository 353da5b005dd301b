"""Every layer type, one small class each, grouped by family.

Importing this package registers them all (see ``pycaffe_lite.layer.register``).
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
