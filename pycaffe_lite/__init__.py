"""pycaffe_lite: Caffe in pure Python (NumPy on the CPU, CuPy on the GPU).

``import pycaffe_lite as caffe`` offers pycaffe's interface.
"""
from . import parallel  # noqa: F401  (first: it sets OpenBLAS's thread timeout)
from . import io  # noqa: F401
from . import proto  # noqa: F401
from .blob import Blob  # noqa: F401
from .layer import TEST, TRAIN, Layer, layer_type_list  # noqa: F401
from .pycaffe import Net, set_device, set_mode_cpu, set_mode_gpu  # noqa: F401
from .rng import set_random_seed  # noqa: F401
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver,  # noqa: F401
                      NesterovSolver, RMSPropSolver, SGDSolver, get_solver)

__version__ = "0.1.0"
