#!/usr/bin/env python3
"""Train LeNet-FP, LeNet-HWGQ and LeNet-sign identically and compare them.

    python examples/mnist/lenet-hwgq/compare.py [--iterations N] [--data-dir DIR]
        [--out DIR] [--nets fp,hwgq,sign] [--readme FILE | --no-readme]
        [--random-seed N] [--no-train] [--gpu ID]

The three nets of this folder (train_val_fp.prototxt, train_val.prototxt,
train_val_sign.prototxt) differ only in their weights (real or binary) and
activations (ReLU, 2-bit HWGQ, 1-bit sign).  Each is trained with
``caffe_lite train`` and the settings of solver.prototxt (BVLC's LeNet solver);
only the net, the data paths, the snapshot prefix and, with --iterations, the
length change, the same for all three.  All three read the same LMDBs from
their first record on, so they see the same batches in the same order, and the
solver's random_seed gives them the same initial weights.  Then
``caffe_lite test`` scores each final snapshot over the whole test LMDB
(test_iter = its size / the test batch size).

For each net, ``OUT/<net>/`` receives the net and solver actually trained
(train_val.prototxt, solver.prototxt), the Caffe-format logs of the training
(train.log, with the tables train.log.train and train.log.test that parse_log
writes) and of the test (test.log), and the snapshots
(lenet_<net>_iter_N.caffemodel / .solverstate).  The comparison table goes to
stdout, to ``OUT/results.md`` and ``OUT/results.json`` (with the learning
curves), and between the markers of README.md (see --readme).  A progress bar
per net is drawn when stderr is a terminal.

Run it from anywhere; relative paths are taken from the current directory.
"""
import argparse
import datetime
import itertools
import json
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]

try:
    import pycaffe_lite  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(REPO))

import numpy  # noqa: E402

from pycaffe_lite import cli  # noqa: E402
from pycaffe_lite.io import files  # noqa: E402
from pycaffe_lite.io.db import DBReader  # noqa: E402
from pycaffe_lite.log import GlogFormatter  # noqa: E402
from pycaffe_lite.proto import caffe_pb2  # noqa: E402
from pycaffe_lite.tools import parse_log  # noqa: E402

SOLVER = HERE / "solver.prototxt"
README = HERE / "README.md"
DEFAULT_DATA_DIR = REPO / "examples" / "mnist"
DEFAULT_OUT = HERE / "compare_out"
TRAIN_DB, TEST_DB = "mnist_train_lmdb", "mnist_test_lmdb"
BEGIN = "<!-- compare.py results: begin -->"
END = "<!-- compare.py results: end -->"

# key: (prototxt, name in the table, weights, activations)
NETS = {
    "fp": ("train_val_fp.prototxt", "LeNet-FP", "real (float32)", "ReLU"),
    "hwgq": ("train_val.prototxt", "LeNet-HWGQ", "binary (sign x alpha)", "2-bit HWGQ"),
    "sign": ("train_val_sign.prototxt", "LeNet-sign", "binary (sign x alpha)", "1-bit sign"),
}
AVERAGE_TIME = re.compile(r"Average time per iteration: (\S+) ms")
TEST_MEAN = re.compile(r"\] (\w+) = (\S+)(?: \(\*.*\))?$", re.MULTILINE)   # not "Batch i, ..."
LAST_TESTS = 5
log = logging.getLogger("pycaffe_lite")


class CompareError(Exception):
    """A problem that ends the comparison with one line on stderr."""


# --- the nets and solvers that are trained ------------------------------------------

def data_layers(net_param):
    """``{"TRAIN": layer, "TEST": layer}``: the net's Data layers by phase."""
    by_phase = {}
    for layer in net_param.layer:
        if layer.type != "Data":
            continue
        phases = {caffe_pb2.Phase.Name(rule.phase) for rule in layer.include if
                  rule.HasField("phase")}
        for phase in phases:
            by_phase[phase] = layer
    if set(by_phase) != {"TRAIN", "TEST"}:
        raise CompareError(f"{net_param.name}: expected one Data layer per phase (TRAIN, TEST), "
                           f"found phases {sorted(by_phase)}")
    return by_phase


def database_size(path):
    reader = DBReader(str(path), what="LMDB")
    try:
        return len(reader)
    finally:
        reader.close()


def prepare(key, data_dir, out, iterations, test_size, gpu, seed=None):
    """Write ``out/<key>/train_val.prototxt`` and ``solver.prototxt``; returns the solver path."""
    prototxt = NETS[key][0]
    net = files.read_net(str(HERE / prototxt))
    layers = data_layers(net)
    layers["TRAIN"].data_param.source = str(data_dir / TRAIN_DB)
    layers["TEST"].data_param.source = str(data_dir / TEST_DB)
    test_batch = layers["TEST"].data_param.batch_size
    directory = out / key
    directory.mkdir(parents=True, exist_ok=True)
    net_path = directory / "train_val.prototxt"
    files.write_text_proto(str(net_path), net)

    solver = files.read_solver(str(SOLVER))
    solver.net = str(net_path)
    solver.max_iter = iterations
    # Every test covers the whole test set (a last partial batch wraps around, as
    # Caffe's Data layer does).
    solver.test_iter[:] = [math.ceil(test_size / test_batch)]
    if iterations % solver.test_interval:
        solver.test_interval = iterations   # so that the last iteration is tested
    solver.snapshot_prefix = str(directory / f"lenet_{key}")
    if seed is not None:
        solver.random_seed = seed
    if gpu is None:
        solver.solver_mode = caffe_pb2.SolverParameter.CPU
    solver_path = directory / "solver.prototxt"
    files.write_text_proto(str(solver_path), solver)
    return solver_path


def caffe_lite(argv, log_path, gpu):
    """``caffe_lite <argv>`` with its log also written to ``log_path``."""
    if gpu is not None:
        argv = [*argv, f"--gpu={gpu}"]
    to_file = logging.FileHandler(log_path, mode="w")
    to_file.setFormatter(GlogFormatter())
    log.addHandler(to_file)
    try:
        status = cli.main(argv)
    finally:
        log.removeHandler(to_file)
        to_file.close()
    if status != 0:
        raise CompareError(f"caffe_lite {' '.join(argv)} failed with status {status}; "
                           f"see {log_path}")


def score(solver_path, iterations, gpu):
    """``caffe_lite test`` of the final snapshot over the whole test set:
    ``(accuracy, loss)``, its log in ``test.log``."""
    solver = files.read_solver(str(solver_path))
    weights = f"{solver.snapshot_prefix}_iter_{iterations}.caffemodel"
    if not os.path.isfile(weights):
        raise CompareError(f"no snapshot {weights}: the training stopped early (Ctrl-C?)")
    log_path = solver_path.parent / "test.log"
    caffe_lite(["test", f"--model={solver.net}", f"--weights={weights}",
                f"--iterations={solver.test_iter[0]}", "--noprogress"], log_path, gpu)
    means = dict(TEST_MEAN.findall(log_path.read_text(errors="replace")))
    if "accuracy" not in means:
        raise CompareError(f"{log_path}: no accuracy in the output of caffe_lite test")
    return weights, float(means["accuracy"]), float(means.get("loss", "nan"))


# --- reading the results from the log -------------------------------------------------

def summarise(key, solver_path, iterations, gpu):
    """The run's numbers from its log (``train.log``) and a test of its final snapshot."""
    log_path = solver_path.parent / "train.log"
    if not log_path.is_file():
        raise CompareError(f"no log {log_path}: train first (without --no-train)")
    train_rows, test_rows = parse_log.parse_log(str(log_path))
    parse_log.save_csv_files(str(log_path), str(log_path.parent), train_rows, test_rows)
    if not test_rows or int(test_rows[-1]["NumIters"]) != iterations:
        raise CompareError(f"{log_path}: no test at iteration {iterations}: the training "
                           "stopped early (Ctrl-C?); nothing to compare")
    weights, accuracy, loss = score(solver_path, iterations, gpu)
    mean = AVERAGE_TIME.findall(log_path.read_text(errors="replace"))
    solver = files.read_solver(str(solver_path))
    busy = {solver.test_interval, solver.snapshot}
    spans = []   # ms per iteration over each display interval without a test or snapshot
    for before, after in itertools.pairwise(train_rows):
        end, count = int(after["NumIters"]), after["NumIters"] - before["NumIters"]
        if count > 0 and not any(step and end % step == 0 for step in busy):
            spans.append((after["Seconds"] - before["Seconds"]) / count * 1e3)
    curve = {int(row["NumIters"]): row.get("accuracy", float("nan")) for row in test_rows}
    return {
        "net": key,
        "name": NETS[key][1],
        "weights": NETS[key][2],
        "activations": NETS[key][3],
        "iterations": iterations,
        "accuracy": accuracy,
        "loss": loss,
        "snapshot": weights,
        "logged_accuracy": test_rows[-1].get("accuracy", float("nan")),
        "mean_of_last_tests": statistics.mean(list(curve.values())[-LAST_TESTS:]),
        "ms_per_iter_mean": float(mean[-1]) if mean else float("nan"),
        "ms_per_iter_median_span": statistics.median(spans) if spans else float("nan"),
        "curve": curve,
        "log": str(log_path),
    }


# --- the report -----------------------------------------------------------------------

def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine():
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"


def environment(args, train_size, test_size):
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    device = (f"GPU {args.gpu} (CuPy)" if args.gpu is not None
              else f"CPU (NumPy {numpy.__version__})")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "device": device,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "commit": commit,
        "data_dir": str(args.data_dir),
        "train_images": train_size,
        "test_images": test_size,
        "iterations": args.iterations,
        "random_seed": (args.random_seed if args.random_seed is not None
                        else files.read_solver(str(SOLVER)).random_seed),
    }


def verdict(results):
    by_key = {r["net"]: r for r in results}
    if not {"fp", "hwgq", "sign"} <= set(by_key):
        return None
    fp, hwgq, sign = (100 * by_key[k]["accuracy"] for k in ("fp", "hwgq", "sign"))
    holds = fp >= hwgq > sign and fp - hwgq <= 2
    return (f"full precision {fp:.2f} % >= HWGQ {hwgq:.2f} % > sign {sign:.2f} %, with HWGQ "
            f"within 2 points of full precision ({fp - hwgq:+.2f}): "
            f"{'holds' if holds else 'does NOT hold'}")


def _shown(path):
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(Path(path).relative_to(REPO))
    except ValueError:
        return str(path)


def _ms(value):
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def table(results, env):
    lines = [
        (f"{env['iterations']:,} iterations each on {env['train_images']:,} training images; "
         f"test accuracy and loss of the final snapshot (`caffe_lite test`) over "
         f"{env['test_images']:,} test images ({_shown(env['data_dir'])})."),
        "",
        ("| net | weights | activations | test accuracy | test loss "
         "| ms / iteration (mean) | ms / iteration (median of 100-iteration spans) |"),
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['name']} | {r['weights']} | {r['activations']} "
                     f"| **{r['accuracy']:.4f}** | {r['loss']:.4g} "
                     f"| {_ms(r['ms_per_iter_mean'])} | {_ms(r['ms_per_iter_median_span'])} |")
    shown = sorted({500, 1000, 2000, 5000, env["iterations"]}
                   & set.intersection(*(set(r["curve"]) for r in results)))
    last = min(LAST_TESTS, *(len(r["curve"]) for r in results))
    lines += ["", "The solver's own tests during training (the log's `Test net output`):", "",
              ("| iteration | " + " | ".join(f"{i:,}" for i in shown)
               + f" | mean of the last {last} tests |"),
              "|---|" + "---|" * (len(shown) + 1)]
    for r in results:
        lines.append(f"| {r['name']} | "
                     + " | ".join(f"{r['curve'][i]:.4f}" for i in shown)
                     + f" | {r['mean_of_last_tests']:.4f} |")
    check = verdict(results)
    if check:
        lines += ["", f"Ordering (final snapshots): {check}."]
    load = " / ".join(str(x) for x in env["load_average_at_start"])
    seed = f"random_seed {env['random_seed']}; " if "random_seed" in env else ""
    lines += ["", (f"Measured {env['date']} on {env['machine']}, {env['device']}, Python "
                   f"{env['python']}; {seed}load average at the start {load}; commit "
                   f"{env['commit']}.")]
    return "\n".join(lines) + "\n"


def write_readme(path, text):
    """Put ``text`` between the markers of ``path`` (appended with them when absent)."""
    block = f"{BEGIN}\n{text}{END}"
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old.split(BEGIN, 1)[1]:
        head, rest = old.split(BEGIN, 1)
        new = head + block + rest.split(END, 1)[1]
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + block + "\n"
    path.write_text(new)


# --- command line ---------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Train LeNet-FP, LeNet-HWGQ and LeNet-sign with the same solver and "
                    "data order, and compare their test accuracy and time per iteration.")
    default_iterations = files.read_solver(str(SOLVER)).max_iter
    parser.add_argument("--iterations", type=int, default=default_iterations,
                        help="training iterations per net (default: the solver's max_iter, "
                             "%(default)s)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help=f"folder holding {TRAIN_DB} and {TEST_DB}, as "
                             "examples/mnist/create_mnist.sh makes them (default: "
                             "examples/mnist)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for the nets, solvers, logs, snapshots and results "
                             "(default: examples/mnist/lenet-hwgq/compare_out)")
    parser.add_argument("--nets", default=",".join(NETS),
                        help=f"comma-separated subset of {', '.join(NETS)} (default: all)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="markdown file whose results block to replace (default: this "
                             "folder's README.md when --iterations is the solver's max_iter "
                             "and all three nets are trained, else none)")
    parser.add_argument("--no-readme", action="store_true", help="write no README")
    parser.add_argument("--random-seed", type=int, default=None,
                        help="the solver's random_seed for all three nets (other initial "
                             "weights, the same for the three; default: solver.prototxt's)")
    parser.add_argument("--no-train", action="store_true",
                        help="tabulate the runs already in OUT (their solvers, logs and final "
                             "snapshots) without training; the iterations, date, machine and "
                             "commit are those recorded in OUT/results.json when it exists")
    parser.add_argument("--gpu", default=None,
                        help="train on this GPU (caffe_lite train --gpu); default: the CPU")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error(f"--iterations must be at least 1, got {args.iterations}")
    args.nets = [k.strip() for k in args.nets.split(",") if k.strip()]
    unknown = [k for k in args.nets if k not in NETS]
    if unknown or not args.nets:
        parser.error(f"--nets: got {args.nets}, expected names from {', '.join(NETS)}")
    if args.no_readme:
        args.readme = None
    elif args.readme is None and args.iterations == default_iterations \
            and set(args.nets) == set(NETS):
        args.readme = README
    args.data_dir = args.data_dir.resolve()
    args.out = args.out.resolve()
    return args


def recorded_environment(out):
    """The environment that OUT/results.json recorded, or None."""
    try:
        return json.loads((out / "results.json").read_text())["environment"]
    except (OSError, ValueError, KeyError):
        return None


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        for name in (TRAIN_DB, TEST_DB):
            if not (args.data_dir / name / "data.mdb").is_file():
                raise CompareError(f"no LMDB {args.data_dir / name}: build it with "
                                   "examples/mnist/create_mnist.sh (or pass --data-dir)")
        env = recorded_environment(args.out) if args.no_train else None
        if env is None:
            env = environment(args, database_size(args.data_dir / TRAIN_DB),
                              database_size(args.data_dir / TEST_DB))
        args.iterations = env["iterations"]
        args.out.mkdir(parents=True, exist_ok=True)
        results = []
        for n, key in enumerate(args.nets, 1):
            step = f"[{n}/{len(args.nets)}] {NETS[key][1]}"
            if args.no_train:
                solver_path = args.out / key / "solver.prototxt"
                if not solver_path.is_file():
                    raise CompareError(f"--no-train: no {solver_path}: nothing trained there")
            else:
                solver_path = prepare(key, args.data_dir, args.out, args.iterations,
                                      env["test_images"], args.gpu, args.random_seed)
                log_path = solver_path.parent / "train.log"
                print(f"{step}: {args.iterations} iterations; log {log_path}", flush=True)
                caffe_lite(["train", f"--solver={solver_path}"], log_path, args.gpu)
            results.append(summarise(key, solver_path, args.iterations, args.gpu))
            print(f"{step}: test accuracy {results[-1]['accuracy']:.4f}, "
                  f"{_ms(results[-1]['ms_per_iter_mean'])} ms per iteration", flush=True)
    except CompareError as e:
        print(f"compare.py: {e}", file=sys.stderr)
        return 1
    text = table(results, env)
    (args.out / "results.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps({"environment": env, "results": results},
                                                      indent=2) + "\n")
    print()
    print(text, end="")
    if args.readme is not None:
        write_readme(args.readme, text)
        print(f"\nTable written into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
