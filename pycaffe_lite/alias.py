"""``import caffe`` giving pycaffe_lite: :func:`install_as_caffe` (as PyMySQL's
``install_as_MySQLdb``).

After ``pycaffe_lite.install_as_caffe()``, ``import caffe``, ``from caffe import
layers as L, params as P``, ``import caffe.proto.caffe_pb2``, ``caffe.io`` ...
are pycaffe_lite's modules themselves (one object each, so ``caffe.TEST is
pycaffe_lite.TEST`` and there is one protobuf descriptor pool): a finder on
``sys.meta_path`` answers every ``caffe.<x>`` import with ``pycaffe_lite.<x>``.
A real Caffe on the path is never shadowed silently: the log says which
Caffe ``import caffe`` now gives, and where the other one is.
"""
import importlib
import importlib.abc
import importlib.util
import logging
import os
import sys

log = logging.getLogger("pycaffe_lite")

ALIAS = "caffe"
PACKAGE = __name__.rpartition(".")[0]


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``caffe.<x>`` -> the module ``pycaffe_lite.<x>`` (imported once, shared)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        real = PACKAGE + fullname[len(ALIAS):]
        if importlib.util.find_spec(real) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=real)

    def create_module(self, spec):
        return importlib.import_module(spec.origin)

    def exec_module(self, module):
        """Nothing to run: the module is pycaffe_lite's, already executed."""


def _other_caffe():
    """Where a Caffe that is not ours would be imported from, or None."""
    module = sys.modules.get(ALIAS)
    if module is not None:
        return None if module is sys.modules[PACKAGE] else getattr(module, "__file__", "?")
    finders = [f for f in sys.meta_path if not isinstance(f, _AliasFinder)]
    for finder in finders:
        try:
            spec = finder.find_spec(ALIAS, None)
        except (AttributeError, ImportError, ValueError):
            continue
        if spec is not None:
            return spec.origin or (list(spec.submodule_search_locations or ["?"])[0])
    return None


def install_as_caffe():
    """Make ``import caffe`` (and ``caffe.<module>``) give pycaffe_lite; returns it."""
    package = sys.modules[PACKAGE]
    other = _other_caffe()
    here = os.path.dirname(package.__file__)
    if other:
        log.warning("A Caffe is installed at %s; 'import caffe' now gives pycaffe_lite %s "
                    "(%s) instead", other, package.__version__, here)
    else:
        log.info("'import caffe' gives pycaffe_lite %s (%s)", package.__version__, here)
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
    for name in [ALIAS] + [n for n in list(sys.modules) if n.startswith(ALIAS + ".")]:
        sys.modules.pop(name, None)
    for name, module in list(sys.modules.items()):
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            sys.modules[ALIAS + name[len(PACKAGE):]] = module
    return package
