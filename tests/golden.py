"""Loading the real-Caffe golden cases and comparing against them."""
import json

import numpy

from conftest import GOLDEN

# A quantised array may have this fraction of its elements one level off the golden
# one: float32 rounding differences near a threshold (issue #5).
QUANTISED_OFF_BY_ONE = 1e-3
# End to end, arrays the golden repeat_run lists as not reproducible by Caffe itself
# (MAX-pooling ties after binary convolutions) must point the same way.
IRREPRODUCIBLE_COSINE = 0.95


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


def relative_error(ours, golden):
    ours = numpy.asarray(ours, dtype=numpy.float64)
    golden = numpy.asarray(golden, dtype=numpy.float64)
    assert ours.shape == golden.shape, f"shape {ours.shape} != golden {golden.shape}"
    scale = numpy.abs(golden).max() if golden.size else 0.0
    diff = numpy.abs(ours - golden).max() if golden.size else 0.0
    return diff / scale if scale > 0 else diff


def assert_close(ours, golden, tol, what):
    err = relative_error(ours, golden)
    assert err <= tol, f"{what}: max difference {err:.3g} of the array's max (tolerance {tol})"


def assert_quantised_close(ours, golden, tol, what):
    """A quantised array: equal within ``tol``, except at most QUANTISED_OFF_BY_ONE of its
    elements, which may sit one level (of the values either array takes) apart."""
    ours = numpy.asarray(ours, dtype=numpy.float64)
    golden = numpy.asarray(golden, dtype=numpy.float64)
    assert ours.shape == golden.shape, f"shape {ours.shape} != golden {golden.shape}"
    if not golden.size:
        return
    scale = max(numpy.abs(golden).max(), 1e-30)
    off = numpy.abs(ours - golden) > tol * scale
    allowed = int(QUANTISED_OFF_BY_ONE * golden.size)
    assert off.sum() <= allowed, (f"{what}: {off.sum()} of {golden.size} quantised elements "
                                  f"differ (at most {allowed} may sit one level apart)")
    if off.any():
        levels = numpy.unique(numpy.concatenate([golden.ravel(), ours.ravel()]))
        steps = numpy.abs(numpy.searchsorted(levels, ours[off])
                          - numpy.searchsorted(levels, golden[off]))
        assert steps.max() <= 1, f"{what}: quantised elements more than one level apart"


def assert_same_direction(ours, golden, what, minimum=IRREPRODUCIBLE_COSINE):
    ours = numpy.asarray(ours, dtype=numpy.float64).ravel()
    golden = numpy.asarray(golden, dtype=numpy.float64).ravel()
    assert ours.shape == golden.shape, f"shape {ours.shape} != golden {golden.shape}"
    norms = numpy.linalg.norm(ours) * numpy.linalg.norm(golden)
    if norms == 0:
        assert not ours.any() and not golden.any(), f"{what}: one array is zero, the other not"
        return
    cosine = float(ours @ golden) / norms
    assert cosine >= minimum, f"{what}: cosine {cosine:.4f} with golden (minimum {minimum})"


EPS32 = float(numpy.finfo(numpy.float32).eps)


def is_rounding_noise(golden, top_diffs):
    """A param diff that is zero in exact arithmetic (a bias before a batch-statistics
    BatchNorm): every golden value is below float32 rounding of a sum over the layer's
    top diffs (their total magnitude ``sum |dy|``)."""
    reference = sum(float(numpy.abs(numpy.asarray(d, dtype=numpy.float64)).sum())
                    for d in top_diffs if d is not None)
    golden = numpy.asarray(golden, dtype=numpy.float64)
    return reference > 0 and numpy.abs(golden).max() <= EPS32 * reference, reference


def assert_param_diff_close(ours, golden, tol, what, top_diffs):
    """``assert_close``; a param diff that is rounding noise in Caffe (see
    ``is_rounding_noise``) need only be noise here too (within 16 eps of ``sum |dy|``)."""
    noise, reference = is_rounding_noise(golden, top_diffs)
    if noise:
        err = numpy.abs(numpy.asarray(ours, dtype=numpy.float64)).max()
        assert err <= 16 * EPS32 * reference, (
            f"{what}: zero up to rounding in Caffe, ours reaches {err:.3g} "
            f"(sum |top diff| {reference:.3g})")
        return
    assert_close(ours, golden, tol, what)
