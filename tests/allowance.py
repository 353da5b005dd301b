"""How far a result may sit from the real Caffe's, and the record of how far it does.

Every comparison against a golden case goes through ``within(case, quantity,
deviation, what)``: the measured deviation (each quantity's measure is in
``RULES``) against the case's allowance for that quantity.  Normally it
asserts.  With ``PYCAFFE_LITE_SPREAD_LOG=<file>`` set (``tests/blas_spread.py``
does that for each OpenBLAS kernel and thread count) it appends the deviation
to that file and asserts nothing, so one run measures every quantity of every
case as the tests measure it.

The rule holds for every case the kernels reproduce; a case gets a wider
allowance only where ``tests/blas_spread.md`` (made by ``tests/blas_spread.py``)
shows the kernels spreading further, in ``WIDER`` below, with the measured
figure and the margin beside it.
"""
import json
import os

SPREAD_LOG = "PYCAFFE_LITE_SPREAD_LOG"

# quantity -> (the rule's allowance, what the deviation measures)
RULES = {
    # golden layer and net cases (tests/test_golden.py, test_binarize.py)
    "end-to-end forward": (1e-5, "max |ours - Caffe's| / max |Caffe's|, over every blob"),
    "end-to-end backward": (1e-4, "the same over every diff and param diff"),
    "end-to-end param": (1e-5, "the same over the params after backward"),
    "layer-by-layer forward": (1e-5, "the same over every top, each layer fed Caffe's bottoms"),
    "layer-by-layer backward": (1e-4, "the same over every bottom and param diff"),
    "quantised off": (1e-3, "fraction of a quantised array's elements one level off"),
    "irreproducible cosine": (0.05, "1 - cosine, for arrays Caffe's own rerun did not "
                                    "reproduce (meta.repeat_run)"),
    "kink cosine": (0.05, "1 - cosine, for the arrays behind a kink (BEHIND_A_KINK)"),
    "rounding noise": (16.0, "max |ours| / (float32 eps * sum |top diff|), for param diffs "
                             "that are zero up to rounding in Caffe"),
    "binarised forward": (1e-4, "max relative difference of the binarised deploy net's output"),
    # golden `caffe train` runs (tests/test_solvers.py)
    "loss 0-9": (1e-4, "max relative loss deviation, iterations 0-9"),
    "loss 10+": (1e-3, "max relative loss deviation, iterations 10 on"),
    "test": (1e-3, "max |ours - Caffe's| / max(1, |Caffe's|) over the test outputs"),
    "clip": (1e-3, "max relative deviation of the clipping L2 norm and scale"),
    "final loss": (1e-3, "relative deviation of the extra forward pass's loss"),
    "weights": (1e-2, "max |ours - Caffe's| / max |Caffe's| per snapshot param blob "
                      "(minus an L1 sign-flip slack, see test_solvers.l1_flip)"),
    "history": (1e-2, "the same per solver history blob"),
    # binarised-weight training is chaotic after the first update (sign(W) flips)
    "binary loss 0": (1e-4, "relative loss deviation, iteration 0"),
    "binary loss 1": (1e-3, "relative loss deviation, iteration 1"),
    "binary test": (0.06, "|ours - Caffe's| of the last test outputs"),
}

# Allowances wider than RULES, from tests/blas_spread.md: the largest deviation over
# every OpenBLAS kernel and thread count measured there, and the margin chosen.
# (The chaotic iterations of two train cases, from CHAOS_FROM in test_solvers.py, are
# quantities of their own: "loss 10+ from 37" is adagrad_fixed's loss from iteration 37
# on; without an entry here they keep the rule of the part before " from ".)
WIDER = {
}


# Cases whose golden values sit on a kink that float rounding decides: the layer named
# stops or passes a gradient depending on the last bit of its input, so the end-to-end
# diffs behind it (of blobs and params produced before it) are compared by direction
# ("kink cosine"); layer by layer, every one of them keeps the rule.
# - alexnet_hwgq_train: BatchNorm bn8 normalises a batch of 2 in which some channels
#   hold two equal values (binary weights on quantised inputs), so its output there is
#   exactly 0 in Caffe and a few 1e-5 under other kernels (Haswell); relu8 then passes
#   gradient where Caffe's stopped, and fc7's and qt7's diffs change direction.
BEHIND_A_KINK = {"alexnet_hwgq_train": "relu8"}


def allowed(case, quantity):
    """The allowance of ``quantity`` for golden case ``case``."""
    if (case, quantity) in WIDER:
        return WIDER[(case, quantity)]
    return RULES[quantity.split(" from ")[0]][0]


def within(case, quantity, deviation, what):
    """Assert ``deviation <= allowed(case, quantity)`` (or, while a spread is being
    measured, record it)."""
    limit = allowed(case, quantity)
    log = os.environ.get(SPREAD_LOG)
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"case": case, "quantity": quantity, "what": what,
                                "deviation": float(deviation)}) + "\n")
        return
    assert deviation <= limit, (f"{case}: {what}: {quantity} deviation {deviation:.3g} "
                                f"(allowed {limit:.3g})")
