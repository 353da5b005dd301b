"""Loading the real-Caffe golden cases and comparing against them."""
import json

import numpy

from conftest import GOLDEN

# Types that belong to the low-precision issue; cases using them are run there.
LOW_PRECISION_TYPES = {"Quant", "BinaryConvolution", "BinaryInnerProduct"}


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

    def uses_low_precision(self):
        return bool(LOW_PRECISION_TYPES & set(self.meta["layer_types"]))


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
