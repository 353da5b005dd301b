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
from .classifier import Classifier  # noqa: F401
from .detector import Detector  # noqa: F401
from .rng import set_random_seed  # noqa: F401
from .memory import set_memory_limit  # noqa: F401
from .caffe_extras import (NCCL, Timer, has_nccl, init_log,  # noqa: F401
                           set_multiprocess, set_solver_count, set_solver_rank, solver_count,
                           solver_rank)
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver,  # noqa: F401
                      NesterovSolver, RMSPropSolver, SGDSolver, get_solver)

# pycaffe's caffe.log(message) is a function; the glog formatting module stays
# importable as pycaffe_lite.log (sys.modules), its attribute here is the function.
from .caffe_extras import log  # noqa: E402,F401  (last: after every submodule import)

__version__ = "0.1.0"
