"""Loading the real-Caffe golden cases and comparing against them."""
import json

import numpy

from allowance import allowed, within
from conftest import GOLDEN

from pycaffe_lite.backend import to_numpy


def cases(kind):
    """Names of the golden cases of ``kind`` ("layers" or "nets")."""
    if not (GOLDEN / "index.json").exists():
        return []
    index = json.loads((GOLDEN / "index.json").read_text())
    return [c for c in index["cases"] if c["kind"] == kind]


class Case:
    def __init__(self, kind, name):
        self.dir = GOLDEN / kind / name
        self.name = name
        self.meta = json.loads((self.dir / "meta.json").read_text())
        with numpy.load(self.dir / "case.npz") as npz:
            self.arrays = dict(npz.items())
        self.phase = {"TRAIN": 0, "TEST": 1}[self.meta["phase"]]

    def get(self, kind, name):
        return self.arrays.get(f"{kind}/{name}")

    def keys(self, kind):
        prefix = kind + "/"
        return [k[len(prefix):] for k in self.arrays if k.startswith(prefix)]

    def quantised_blobs(self):
        """Tops of the Quant layers: their values are levels."""
        return {t for layer in self.meta["layers"] if layer["type"] == "Quant"
                for t in layer["tops"]}

    def irreproducible(self, kind, name):
        """Whether Caffe's own 2-thread rerun differed on ``<kind>/<name>`` (meta.repeat_run)."""
        differing = self.meta.get("repeat_run", {}).get("differing_arrays") or {}
        return f"{kind}/{name}" in differing


def host(array):
    """A float64 NumPy array of a NumPy or CuPy one (the golden harness runs on both)."""
    return numpy.asarray(to_numpy(array), dtype=numpy.float64)


def relative_error(ours, golden):
    ours, golden = host(ours), host(golden)
    assert ours.shape == golden.shape, f"shape {ours.shape} != golden {golden.shape}"
    scale = numpy.abs(golden).max() if golden.size else 0.0
    diff = numpy.abs(ours - golden).max() if golden.size else 0.0
    return diff / scale if scale > 0 else diff


def check_close(case, quantity, ours, golden, what):
    """Max difference over the array's largest value, within the allowance."""
    within(case, quantity, relative_error(ours, golden), what)


def check_quantised(case, quantity, ours, golden, what):
    """A quantised array: equal within ``quantity``'s allowance, except a fraction of its
    elements (allowance "quantised off"), which may sit one level (of the values either
    array takes) apart."""
    ours, golden = host(ours), host(golden)
    assert ours.shape == golden.shape, f"shape {ours.shape} != golden {golden.shape}"
    if not golden.size:
        return
    scale = max(numpy.abs(golden).max(), 1e-30)
    off = numpy.abs(ours - golden) > allowed(case, quantity) * scale
    within(case, "quantised off", off.sum() / golden.size, what)
    if off.any():
        levels = numpy.unique(numpy.concatenate([golden.ravel(), ours.ravel()]))
        steps = numpy.abs(numpy.searchsorted(levels, ours[off])
                          - numpy.searchsorted(levels, golden[off]))
        assert steps.max() <= 1, f"{what}: quantised elements more than one level apart"


def check_same_direction(case, quantity, ours, golden, what):
    """An array whose value rounding decides (Caffe's own rerun differs, or it lies
    behind a kink): 1 - its cosine with Caffe's."""
    ours, golden = host(ours).ravel(), host(golden).ravel()
    assert ours.shape == golden.shape, f"shape {ours.shape} != golden {golden.shape}"
    norms = numpy.linalg.norm(ours) * numpy.linalg.norm(golden)
    if norms == 0:
        assert not ours.any() and not golden.any(), f"{what}: one array is zero, the other not"
        return
    within(case, quantity, 1.0 - float(ours @ golden) / norms, what)


EPS32 = float(numpy.finfo(numpy.float32).eps)


def is_rounding_noise(golden, top_diffs):
    """A param diff that is zero in exact arithmetic (a bias before a batch-statistics
    BatchNorm): every golden value is below float32 rounding of a sum over the layer's
    top diffs (their total magnitude ``sum |dy|``)."""
    reference = sum(float(numpy.abs(host(d)).sum()) for d in top_diffs if d is not None)
    golden = host(golden)
    return reference > 0 and numpy.abs(golden).max() <= EPS32 * reference, reference


def check_param_diff(case, quantity, ours, golden, what, top_diffs):
    """``check_close``; a param diff that is rounding noise in Caffe (see
    ``is_rounding_noise``) need only be noise here too (allowance "rounding noise", in
    units of eps * sum |dy|)."""
    noise, reference = is_rounding_noise(golden, top_diffs)
    if noise:
        within(case, "rounding noise", numpy.abs(host(ours)).max() / (EPS32 * reference),
               what)
        return
    check_close(case, quantity, ours, golden, what)
