"""Soak: ``caffe_lite train`` on LeNet for 10,000 iterations, testing and
snapshotting every 1,000, watching the process from outside.

Samples the trainer's resident memory (VmRSS), open file descriptors and
threads from /proc at every logged iteration, and prints the end against
iteration 1,000 (the baseline: the nets, the prefetch threads and the first
snapshot all exist by then).  Leaks show as a ratio above 1 and a growing fd or
thread count.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/soak_train.py [--iterations 10000]
        [--data /usr/share/datasets/fashion-mnist] [--json soak.json]

Data: the idx files of MNIST or Fashion-MNIST (Debian's dataset-fashion-mnist).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ITERATION = re.compile(r"Iteration (\d+)")


def proc_stats(pid):
    """(resident MB, open fds, threads) of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, threads


def make_lmdbs(data, work):
    for split, prefix in (("train", "train"), ("test", "t10k")):
        subprocess.run([sys.executable, "-m", "pycaffe_lite.tools.convert_mnist_data",
                        str(data / f"{prefix}-images-idx3-ubyte.gz"),
                        str(data / f"{prefix}-labels-idx1-ubyte.gz"),
                        str(work / f"{split}_lmdb")], check=True, capture_output=True)


def write_solver(work, iterations, every):
    net = (REPO / "examples/mnist/lenet_train_test.prototxt").read_text()
    net = net.replace("examples/mnist/mnist_train_lmdb", str(work / "train_lmdb"))
    net = net.replace("examples/mnist/mnist_test_lmdb", str(work / "test_lmdb"))
    (work / "net.prototxt").write_text(net)
    solver = (REPO / "examples/mnist/lenet_solver.prototxt").read_text()
    replace = {"net": f'"{work / "net.prototxt"}"', "test_interval": every,
               "max_iter": iterations, "snapshot": every, "display": 100,
               "snapshot_prefix": f'"{work / "snap" / "lenet"}"', "solver_mode": "CPU"}
    for key, value in replace.items():
        solver = re.sub(rf"^{key}:.*$", f"{key}: {value}", solver, flags=re.MULTILINE)
    (work / "snap").mkdir()
    (work / "solver.prototxt").write_text(solver)
    return work / "solver.prototxt"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=10000)
    p.add_argument("--every", type=int, default=1000, help="test and snapshot interval")
    p.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--json", help="write the samples here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_lmdbs(args.data, work)
        solver = write_solver(work, args.iterations, args.every)
        start = time.time()
        trainer = subprocess.Popen([sys.executable, "-m", "pycaffe_lite.cli", "train",
                                    f"--solver={solver}"], stderr=subprocess.PIPE, text=True)
        samples = []
        for line in trainer.stderr:
            m = ITERATION.search(line)
            if m and trainer.poll() is None:
                try:
                    samples.append((int(m.group(1)), *proc_stats(trainer.pid)))
                except (FileNotFoundError, AttributeError):
                    pass                        # the process is ending
        status = trainer.wait()
        seconds = time.time() - start
        snapshots = sorted(p.name for p in (work / "snap").iterdir())
    if status != 0 or not samples:
        print(f"train failed (exit {status})")
        return 1
    base = next(s for s in samples if s[0] >= args.every)
    end = samples[-1]
    peak_rss = max(s[1] for s in samples if s[0] >= args.every)
    print(f"{args.iterations} iterations in {seconds:.0f} s; {len(snapshots)} snapshot files")
    print(f"{'':16} {'RSS MB':>8} {'fds':>5} {'threads':>8}")
    print(f"{'iteration ' + str(base[0]):16} {base[1]:8.1f} {base[2]:5d} {base[3]:8d}")
    print(f"{'iteration ' + str(end[0]):16} {end[1]:8.1f} {end[2]:5d} {end[3]:8d}")
    print(f"RSS end / after {base[0]}: {end[1] / base[1]:.3f} (peak after it "
          f"{peak_rss / base[1]:.3f}); fds {end[2] - base[2]:+d}, threads "
          f"{end[3] - base[3]:+d}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(samples=samples, seconds=seconds,
                                                   snapshots=snapshots), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
