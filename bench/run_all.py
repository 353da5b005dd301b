"""Run every benchmark, one after the other, each in its own process.

    python bench/run_all.py [--quick] [--threads N] [--repeat R]

Each script runs in a fresh interpreter so that its thread settings take
effect before NumPy loads.  Exits non-zero when any of them fails.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ["bench_forward.py", "bench_gemm_peak.py", "bench_train.py", "bench_prefetch.py",
           "bench_hwgq.py", "bench_labelfree.py", "bench_qcnn.py"]
LAYERS = ("bench_gemm_peak.py", "bench_train.py")     # get --layers unless --quick


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    failed = []
    for script in SCRIPTS:
        extra = ["--layers"] if script in LAYERS and "--quick" not in argv else []
        print(f"\n$ {os.path.basename(sys.executable)} bench/{script} "
              f"{' '.join([*argv, *extra])}", flush=True)
        code = subprocess.call([sys.executable, os.path.join(HERE, script), *argv, *extra])
        if code:
            failed.append(f"{script} (exit {code})")
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
