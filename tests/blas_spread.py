"""Measure how far every golden case sits from the real Caffe under each BLAS kernel.

    python tests/blas_spread.py [--jobs 2] [--kernels Haswell SkylakeX ...] [--threads 1 2]

Runs the golden tests (tests/test_golden.py, the golden train runs of
tests/test_solvers.py, the binarised AlexNet of tests/test_binarize.py) once per
OpenBLAS kernel (``OPENBLAS_CORETYPE``; "default" is the one OpenBLAS picks for
this CPU) and thread count (``OPENBLAS_NUM_THREADS`` and
``PYCAFFE_LITE_NUM_THREADS``), each in a fresh process with
``PYCAFFE_LITE_SPREAD_LOG`` set: every comparison records its deviation instead
of asserting (tests/allowance.py).  Writes, beside this file:

- ``blas_spread.json``: per run (kernel, threads, the kernel OpenBLAS reports),
  the largest deviation of every quantity of every case;
- ``blas_spread.md``: the tables: the largest deviation over all runs per case
  and quantity, and each quantity that passes the rule with the allowance set
  for it (tests/allowance.py's WIDER).

The test environment itself is left alone: only the child processes get the
variables.  Takes 10-30 minutes on 2 cores.
"""
import argparse
import collections
import concurrent.futures
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from allowance import RULES, SPREAD_LOG, WIDER, allowed, rule  # noqa: E402

TESTS = ["tests/test_golden.py",
         "tests/test_solvers.py::test_golden_train_case",
         "tests/test_solvers.py::test_golden_resume_equals_straight_run",
         "tests/test_binarize.py::test_alexnet_golden_weights_match_real_caffe"]
# The kernels issue 9 names, plus two older ones; "Haswell/L2=512" is the environment
# of the machines that set both variables.  Unsupported names fall back (the report
# says to what).
KERNELS = ["default", "Haswell", "Haswell/L2=512", "SkylakeX", "Zen", "Sandybridge",
           "Nehalem", "Prescott"]
PROBE = ("import numpy, threadpoolctl; print(next((p['architecture'] for p in "
         "threadpoolctl.threadpool_info() if p['internal_api'] == 'openblas'), '?'))")


def child_env(kernel, threads, log):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    name, _, l2 = kernel.partition("/L2=")
    if name != "default":
        env["OPENBLAS_CORETYPE"] = name
    if l2:
        env["OPENBLAS_L2_SIZE"] = l2
    env.update(OPENBLAS_NUM_THREADS=str(threads), PYCAFFE_LITE_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env[SPREAD_LOG] = log
    return env


def run(kernel, threads, workdir):
    log = str(Path(workdir) / f"{kernel.replace('/', '_')}-{threads}.jsonl")
    env = child_env(kernel, threads, log)
    probe = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                           text=True)
    arch = probe.stdout.strip() or "unknown (pip install threadpoolctl)"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p",
                           "no:cacheprovider", *TESTS], cwd=REPO, env=env,
                          capture_output=True, text=True)
    out = done.stdout.strip().splitlines()
    summary = out[-1] if out else done.stderr.strip()[-300:]
    failed = [line for line in out if line.startswith("FAILED ")]
    if failed:
        summary += " (" + "; ".join(line[len("FAILED "):] for line in failed) + ")"
    worst = {}
    if os.path.exists(log):
        for line in open(log):
            r = json.loads(line)
            key = f"{r['case']}|{r['quantity']}"
            if r["deviation"] >= worst.get(key, (-1.0,))[0]:
                worst[key] = (r["deviation"], r["what"])
    print(f"{kernel:>16} {threads} thread(s): OpenBLAS {arch}; {summary}", flush=True)
    return {"kernel": kernel, "threads": threads, "architecture": arch,
            "pytest": summary, "worst": worst}


def fmt(x):
    return "0" if x == 0 else f"{x:.2g}"


def largest(runs):
    """(case, quantity) -> (largest deviation over the runs, "kernel xthreads", array)."""
    worst = {}
    for r in runs:
        for key, (value, what) in r["worst"].items():
            case, quantity = key.split("|")
            if value > worst.get((case, quantity), (-1.0,))[0]:
                worst[(case, quantity)] = (value, f"{r['kernel']} x{r['threads']}", what)
    return worst


TRAIN_QUANTITIES = ("loss", "test", "clip", "final", "weights", "history", "binary")


def tables(runs):
    """Markdown: the largest deviation over the runs per case and quantity."""
    by_case = collections.defaultdict(dict)
    for (case, quantity), entry in largest(runs).items():
        by_case[case][quantity] = entry
    lines = ["# The BLAS kernels' spread against the real Caffe", "",
             "Made by `python tests/blas_spread.py` (see tests/README.md); do not edit.", "",
             "The last column is pytest's summary of the run, in which the allowances are",
             "recorded, not asserted: only the exact checks (lr, log lines, shapes) can fail.",
             "",
             "| kernel asked | threads | OpenBLAS ran | pytest |", "|---|---|---|---|"]
    lines += [f"| {r['kernel']} | {r['threads']} | {r['architecture']} | {r['pytest']} |"
              for r in runs]
    lines += ["", "## Quantities past the rule", "",
              "Each has its own allowance in tests/allowance.py (WIDER).", "",
              "| case | quantity | rule | largest deviation | in run | allowance | margin |",
              "|---|---|---|---|---|---|---|"]
    past = 0
    for case in sorted(by_case):
        for quantity, (value, label, what) in sorted(by_case[case].items()):
            limit, base = allowed(case, quantity), rule(quantity)[0]
            if value > base or (case, quantity) in WIDER:
                past += 1
                margin = f"{limit / value:.2g}x" if value else "-"
                flag = "" if value <= limit else " **(exceeded)**"
                lines.append(f"| {case} | {quantity} | {fmt(base)} | {fmt(value)} | "
                             f"{label}: {what} | {fmt(limit)}{flag} | {margin} |")
    if not past:
        lines.append("| (none) | | | | | | |")
    groups = [("Layer and net cases", [q for q in RULES if not q.startswith(TRAIN_QUANTITIES)]),
              ("Train cases", [q for q in RULES if q.startswith(TRAIN_QUANTITIES)])]
    for title, quantities in groups:
        # per case, the largest deviation of each rule's quantities ("x" and "x from N")
        rows = collections.defaultdict(dict)
        for case, entries in by_case.items():
            for quantity, (value, _, _) in entries.items():
                q = quantity.split(" from ")[0]
                if q in quantities:
                    rows[case][q] = max(value, rows[case].get(q, 0.0))
        present = [q for q in quantities if any(q in cells for cells in rows.values())]
        lines += ["", f"## {title}: largest deviation over all runs", "",
                  "Measures: " + "; ".join(f"*{q}* (rule {fmt(RULES[q][0])}): {RULES[q][1]}"
                                           for q in present) + ".", "",
                  "| case | " + " | ".join(present) + " |",
                  "|---|" + "---|" * len(present)]
        for case in sorted(rows):
            cells = [fmt(rows[case][q]) if q in rows[case] else "" for q in present]
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


MARGIN = 1.5   # allowance = largest deviation measured x MARGIN, rounded up (2 digits)


def round_up(x, digits=2):
    """``x`` rounded up to ``digits`` significant digits."""
    unit = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    return float(f"{math.ceil(x / unit - 1e-9) * unit:.{digits}g}")


def suggest(runs):
    """WIDER entries for the quantities past the rule (for allowance.py)."""
    return [f'    ("{case}", "{quantity}"): {round_up(value * MARGIN):.2g},  # {value:.3g}, '
            f'{label}' for (case, quantity), (value, label, _) in sorted(largest(runs).items())
            if value > rule(quantity)[0]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kernels", nargs="+", default=KERNELS)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--out", default=str(HERE / "blas_spread"),
                        help="path prefix of the .json and .md written")
    parser.add_argument("--suggest", metavar="JSON",
                        help="only print the WIDER entries a measured JSON calls for")
    args = parser.parse_args(argv)
    if args.suggest:
        print("\n".join(suggest(json.loads(Path(args.suggest).read_text()))))
        return
    with tempfile.TemporaryDirectory() as workdir:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run, k, t, workdir)
                       for k in args.kernels for t in args.threads]
            runs = [f.result() for f in futures]
    Path(args.out + ".json").write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")
    Path(args.out + ".md").write_text(tables(runs))
    print(f"wrote {args.out}.json and {args.out}.md")
    print("allowances past the rule (largest deviation x %g):" % MARGIN)
    print("\n".join(suggest(runs)))


if __name__ == "__main__":
    main()
