"""The allowances against the measured spread of the BLAS kernels (tests/blas_spread.json).

Every deviation measured under any kernel and thread count sits within the case's
allowance, and every allowance wider than the rule is needed: some kernel went past
the rule there.  Re-measure with ``python tests/blas_spread.py`` after changing a
layer's arithmetic.
"""
import json
from pathlib import Path

import pytest

from allowance import WIDER, allowed, rule
from blas_spread import largest

SPREAD = Path(__file__).with_name("blas_spread.json")


def runs():
    return json.loads(SPREAD.read_text())


def test_spread_covers_several_kernels_and_both_thread_counts():
    measured = runs()
    assert {r["threads"] for r in measured} >= {1, 2}
    assert len({r["architecture"] for r in measured}) >= 3, "fewer than 3 kernels measured"
    assert all(r["worst"] for r in measured), "a run recorded nothing"


@pytest.mark.parametrize("threads", [1, 2])
def test_every_measured_deviation_is_within_its_allowance(threads):
    over = []
    for run in runs():
        if run["threads"] != threads:
            continue
        for key, (value, what) in run["worst"].items():
            case, quantity = key.split("|")
            if value > allowed(case, quantity):
                over.append(f"{run['kernel']}: {case} {what}: {quantity} {value:.3g} > "
                            f"{allowed(case, quantity):.3g}")
    assert not over, "\n".join(over)


def test_every_wider_allowance_is_needed():
    worst = largest(runs())
    for (case, quantity), limit in WIDER.items():
        base = rule(quantity)[0]
        assert limit > base, f"{case} {quantity}: {limit} is not wider than the rule {base}"
        assert (case, quantity) in worst, f"{case} {quantity}: never measured"
        assert worst[(case, quantity)][0] > base, (
            f"{case} {quantity}: no kernel went past the rule {base} "
            f"(largest {worst[(case, quantity)][0]:.3g}); the allowance is not needed")
