"""pycaffe_lite: Caffe in pure Python (NumPy on the CPU, CuPy on the GPU).

``import pycaffe_lite as caffe`` offers pycaffe's interface (``caffe.layers``
is both our layer implementations and NetSpec's ``L``), and
:func:`install_as_caffe` makes ``import caffe`` give it.
"""
from . import parallel  # noqa: F401  (first: it sets OpenBLAS's thread timeout)
from . import io  # noqa: F401
from . import proto  # noqa: F401
from .blob import Blob  # noqa: F401
from .layer import TEST, TRAIN, Layer, layer_type_list  # noqa: F401
from .net_spec import NetSpec, params, to_proto  # noqa: F401
from .alias import install_as_caffe  # noqa: F401
from .pycaffe import Net, set_device, set_mode_cpu, set_mode_gpu  # noqa: F401
from .rng import set_random_seed  # noqa: F401


def has_nccl():
    """False: this build has no NCCL (pycaffe's ``caffe.has_nccl``)."""
    return False

from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver,  # noqa: F401
                      NesterovSolver, RMSPropSolver, SGDSolver, get_solver)

__version__ = "0.1.0"
