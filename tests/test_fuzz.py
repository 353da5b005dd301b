"""The mutation fuzzer (tests/fuzz.py), bounded: a few dozen seeded cases per target,
each in a forked child with a 3 GiB address-space cap and a 10 s timeout.

No case may crash (an exception that is not ours, or a CLI traceback), hang, run
out of memory past pycaffe_lite's guard, fail with an error that names neither
the file, a layer nor the flag, or run mutated weights to NaN outputs without a
warning.  ``PYCAFFE_LITE_FUZZ_CASES`` sets the cases per
target (default 100); ``PYCAFFE_LITE_FUZZ_SEED`` the seed (default 1).  The long
run is ``python tests/fuzz.py --cases 10000``.
"""
import json
import os
import subprocess
import sys

import pytest

import fuzz

CASES = int(os.environ.get("PYCAFFE_LITE_FUZZ_CASES", "100"))
SEED = int(os.environ.get("PYCAFFE_LITE_FUZZ_SEED", "1"))


@pytest.mark.skipif(not fuzz.FIXTURES.is_dir(),
                    reason=f"test material not found at {fuzz.FIXTURES} (set PYCAFFE_LITE_SHARED)")
@pytest.mark.parametrize("target", sorted(fuzz.TARGETS))
def test_fuzz_target(target, tmp_path):
    # In a fresh interpreter: forking this one, whose other threads (data prefetch,
    # progress bars) may hold locks, could leave a child waiting on one forever.
    out = tmp_path / "results.json"
    run = subprocess.run([sys.executable, fuzz.__file__, "--target", target, "--cases",
                          str(CASES), "--seed", str(SEED), "--json", str(out)],
                         capture_output=True, text=True, timeout=60 + CASES * fuzz.TIMEOUT_S)
    assert out.exists(), run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert len(results) == CASES
    bad = [f"#{r['case']} {r['outcome']}: {r['detail'][:300]}" for r in results
           if r["outcome"] in fuzz.BAD]
    assert not bad, (f"seed {SEED}, rerun one with: python tests/fuzz.py --target {target} "
                     f"--seed {SEED} --case N --show\n" + "\n".join(bad))


def test_fuzz_sorts_outcomes():
    # the harness itself: a crash, an anonymous error and a hang are told apart
    from pycaffe_lite.errors import CaffeError

    def boom():
        raise KeyError("x")

    def anonymous():
        raise CaffeError("something is wrong")

    assert fuzz.run_case(("call", boom, set()))[0] == "crash"
    assert fuzz.run_case(("call", anonymous, {"net.prototxt"}))[0] == "anonymous"
    assert fuzz.run_case(("call", lambda: 0, set()))[0] == "ok"


SELF_TEST = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import fuzz
fuzz.TIMEOUT_S = 1
fuzz.TARGETS.update(
    sleepy=lambda rng, work: ("call", lambda: time.sleep(30), set()),
    dying=lambda rng, work: ("call", lambda: os.kill(os.getpid(), 9), set()),
    greedy=lambda rng, work: ("call", lambda: bytearray(4 << 30), set()))
print(json.dumps({r["target"]: r["outcome"] for r in fuzz.fuzz(["sleepy", "dying", "greedy"],
                                                             1, 0)}))
"""


def test_fuzz_children_time_out_and_die_apart():
    # a child past the timeout is a hang; one killed, or past the 3 GiB cap, memory
    run = subprocess.run([sys.executable, "-c", SELF_TEST, os.path.dirname(fuzz.__file__)],
                         capture_output=True, text=True, timeout=60)
    assert json.loads(run.stdout.splitlines()[-1]) == {"sleepy": "hang", "dying": "memory",
                                                       "greedy": "memory"}, run.stderr


def test_nan_outputs_without_a_word_are_silent(tmp_path):
    # the "silent" outcome: NaN weights give NaN outputs; with their warning it is fine,
    # with the warning suppressed (the logger above WARNING) the case is flagged
    import logging

    import numpy
    import pycaffe_lite as caffe
    model = tmp_path / "net.prototxt"
    model.write_text('layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 '
                     'dim: 3 } } }\nlayer { name: "ip" type: "InnerProduct" bottom: "d" '
                     'top: "ip" inner_product_param { num_output: 2 } }')
    net = caffe.Net(str(model), caffe.TEST)
    net.params["ip"][1].data[0] = numpy.nan
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    assert fuzz._run("api_net", [str(model), str(weights)]) == 0
    logger = logging.getLogger("pycaffe_lite")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        assert fuzz._run("api_net", [str(model), str(weights)]) == "silent"
    finally:
        logger.setLevel(level)
