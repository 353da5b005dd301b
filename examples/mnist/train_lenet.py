#!/usr/bin/env python3
"""Train LeNet with BVLC's solver settings, then plot its learning curve.

    examples/mnist/train_lenet.py [caffe_lite train flags, e.g. --gpu 0]

Run from the repository root, after ``examples/mnist/create_mnist.sh``.  It is
``caffe_lite train --solver=examples/mnist/lenet_solver.prototxt`` (Caffe's
``train_lenet.sh``) with the log also written to
``examples/mnist/lenet_train.log`` while the progress bar stays on the
terminal; then ``parse_log`` writes ``lenet_train.log.train`` / ``.test`` and
``plot_training_log`` draws ``lenet_train.png`` (when matplotlib is installed).
Ctrl-C stops the training with a snapshot that ``--snapshot`` resumes from.
"""
import logging
import os
import sys

try:
    import pycaffe_lite  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, os.getcwd())

from pycaffe_lite import cli  # noqa: E402
from pycaffe_lite.errors import CaffeError  # noqa: E402
from pycaffe_lite.log import GlogFormatter  # noqa: E402
from pycaffe_lite.tools import parse_log, plot_training_log  # noqa: E402

EXAMPLE = os.path.join("examples", "mnist")
SOLVER = os.path.join(EXAMPLE, "lenet_solver.prototxt")
LOG = os.path.join(EXAMPLE, "lenet_train.log")
PLOT = os.path.join(EXAMPLE, "lenet_train.png")


def main(argv):
    if not os.path.isfile(SOLVER):
        sys.exit("train_lenet.py: run me from the pycaffe_lite repository root")
    if not os.path.isdir(os.path.join(EXAMPLE, "mnist_train_lmdb")):
        sys.exit("train_lenet.py: no examples/mnist/mnist_train_lmdb: run "
                 "examples/mnist/create_mnist.sh first")
    resuming = any(arg.lstrip("-").split("=")[0] == "snapshot" for arg in argv)
    to_file = logging.FileHandler(LOG, mode="a" if resuming else "w")   # resumed: one log
    to_file.setFormatter(GlogFormatter())
    logger = logging.getLogger("pycaffe_lite")
    logger.addHandler(to_file)
    try:
        status = cli.main(["train", f"--solver={SOLVER}", *argv])
    finally:
        logger.removeHandler(to_file)
        to_file.close()
    if status != 0:
        return status
    train_rows, test_rows = parse_log.parse_log(LOG)
    parse_log.save_csv_files(LOG, EXAMPLE, train_rows, test_rows)
    print(f"Log: {LOG}; tables: {LOG}.train, {LOG}.test")
    if test_rows:
        last = test_rows[-1]
        print(f"Test accuracy at iteration {int(last['NumIters'])}: "
              f"{last.get('accuracy', float('nan')):.4f}")
    try:
        plot_training_log.plot(PLOT, [LOG], title="LeNet: " + os.path.basename(LOG))
        print(f"Learning curve: {PLOT}")
    except CaffeError as e:
        print(f"No plot: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
