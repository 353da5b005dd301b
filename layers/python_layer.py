"""The ``Python`` layer: a layer written by the user in Python, as in pycaffe.

``python_param { module: "m" layer: "L" param_str: "..." }`` imports module
``m`` and instantiates its class ``L``.  User code written for pycaffe works
unchanged when it imports ``pycaffe_lite as caffe``::

    import pycaffe_lite as caffe

    class L(caffe.Layer):                 # pycaffe_lite.layer.Layer
        def setup(self, bottom, top): ...       # may read self.param_str, self.phase
        def reshape(self, bottom, top): ...     # top[0].reshape(*shape)
        def forward(self, bottom, top): ...     # top[0].data[...] = ...
        def backward(self, top, propagate_down, bottom): ...  # bottom[0].diff[...] = ...

Blobs offer what pycaffe's do: ``.data``, ``.diff``, ``.reshape(*shape)``,
``.shape``, ``.count``, ``.num``/``.channels``/``.height``/``.width``;
``self.blobs.add_blob(*shape)`` adds a learnable parameter blob.

Security: as in Caffe, a net's prototxt names the code it runs, so building a
net from an untrusted prototxt runs whatever module it names.  Each Python
layer logs (INFO) its module and file when it is created.  Inside
``with python_layers_allowed(False):`` (what ``Net(..., allow_python_layers=False)``
and ``caffe_lite --no-python-layers`` do) a Python layer is refused when the net
is built, naming the layer and the module, before anything is imported.  The
setting is a context variable: a thread started inside the block has its own
(the default, allowed).
"""
import contextlib
import contextvars
import importlib
import logging
import os
import sys
import types

import numpy

from pycaffe_lite.errors import LayerError
from pycaffe_lite.layer import TRAIN, Layer, register

log = logging.getLogger("pycaffe_lite")

_ALLOWED = contextvars.ContextVar("pycaffe_lite_python_layers_allowed", default=True)
_USER_FILES = set()     # the files of the modules Python layers were created from


def user_module_files():
    """The absolute paths of the modules Python layers came from (the user's code:
    an exception raised there is not a bug of pycaffe_lite)."""
    return frozenset(_USER_FILES)


def python_layers_allowed_now():
    """Whether a Python layer may import its module here (default True, as Caffe)."""
    return _ALLOWED.get()


@contextlib.contextmanager
def python_layers_allowed(allowed=True):
    """Within the block, Python layers are built (``True``) or refused (``False``).

    ``None`` leaves the current setting as it is (an enclosing block's)."""
    if allowed is None:
        yield
        return
    token = _ALLOWED.set(bool(allowed))
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def _import_module(name):
    """Import ``name`` from sys.path, else also from the current directory and
    PYTHONPATH (which pycaffe's embedded interpreter has on its path)."""
    importlib.invalidate_caches()  # the module may have been written just now
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if not (exc.name == name or name.startswith(f"{exc.name}.")):
            raise  # the module exists; one of *its* imports is missing
    extra = [os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    added = [p for p in dict.fromkeys(os.path.abspath(p) for p in extra) if p not in sys.path]
    if not added:
        return importlib.import_module(name)
    # Appended for good, as on pycaffe's path: the module may import siblings later.
    sys.path.extend(added)
    importlib.invalidate_caches()
    return importlib.import_module(name)


@register("Python")
class PythonLayer(Layer):
    """Factory for user layers: ``PythonLayer(param, phase=, xp=, dtype=)``
    returns an instance of the user's class, not of PythonLayer.

    ``__new__`` imports ``python_param.module``, instantiates its class
    ``python_param.layer`` (a subclass of ``pycaffe_lite.Layer``) with the same
    arguments, and sets ``param_str`` (from ``python_param.param_str``),
    ``phase`` (0 TRAIN, 1 TEST, like pycaffe's), ``type = "Python"`` and
    ``blobs`` (a :class:`~pycaffe_lite.layer.BlobVec`).  Forward, gradient and shapes are whatever
    the user's class defines.  ``share_in_parallel`` is accepted and ignored.
    """

    def __new__(cls, param, phase=TRAIN, xp=numpy, dtype=numpy.float32):
        if cls is not PythonLayer:  # a user class deriving from PythonLayer itself
            return super().__new__(cls)
        user_cls = _user_class(param)
        layer = user_cls(param, phase=phase, xp=xp, dtype=dtype)
        layer.param_str = param.python_param.param_str
        layer.phase = phase
        try:
            layer.type = "Python"
        except AttributeError:  # the user's class defines a read-only ``type``
            pass
        layer._python_ready = True
        return layer

    def __init__(self, *args, **kwargs):
        # type.__call__ re-runs __init__ when the user's class derives from
        # PythonLayer; do not reset what __new__ set up.
        if not getattr(self, "_python_ready", False):
            super().__init__(*args, **kwargs)


def _user_class(param):
    pp = param.python_param
    where = types.SimpleNamespace(name=param.name, type="Python")
    if not pp.module:
        raise LayerError(where, "python_param.module must name the Python module to import")
    if not pp.layer:
        raise LayerError(where, f"python_param.layer must name the layer class in module "
                                f"'{pp.module}'")
    if not python_layers_allowed_now():
        raise LayerError(where, f"Python layers are disabled (allow_python_layers=False, "
                                f"--no-python-layers): not importing python_param.module "
                                f"'{pp.module}' (class '{pp.layer}')")
    try:
        module = _import_module(pp.module)
    except Exception as exc:
        raise LayerError(where, f"python_param.module '{pp.module}' could not be imported: "
                                f"{type(exc).__name__}: {exc} (searched sys.path, the current "
                                f"directory and PYTHONPATH)") from exc
    user_cls = getattr(module, pp.layer, None)
    if user_cls is None:
        raise LayerError(where, f"python_param.layer '{pp.layer}' not found in module "
                                f"'{pp.module}' ({getattr(module, '__file__', '?')})")
    if not (isinstance(user_cls, type) and issubclass(user_cls, Layer)):
        raise LayerError(where, f"python_param.layer '{pp.layer}' in module '{pp.module}' must "
                                f"be a class derived from pycaffe_lite.Layer (caffe.Layer), "
                                f"got {user_cls!r}")
    source = getattr(sys.modules.get(user_cls.__module__), "__file__", None)
    for path in (getattr(module, "__file__", None), source):
        if path:
            _USER_FILES.add(os.path.abspath(path))
    log.info("Python layer '%s': class %s from module %s (%s)", param.name, pp.layer,
             pp.module, getattr(module, "__file__", None) or "no file")
    return user_cls
