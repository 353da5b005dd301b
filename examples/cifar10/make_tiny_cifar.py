#!/usr/bin/env python3
"""Tiny CIFAR-10-style LMDBs (32 x 32), made from photos this machine already has.

    python examples/cifar10/make_tiny_cifar.py [--out DIR] [--train N] [--test N]
                                               [--classes K] [--seed S]

Writes in DIR (this script's folder, ``examples/cifar10/``, unless given) what
the HWGQ paper's CIFAR-10 net reads:

- ``tiny_pad_train_lmdb``: N (default 500) 40 x 40 images, 32 x 32 views
  padded with 4 black pixels on each side as the paper's
  ``cifar10_pad_train_lmdb`` is; the net trains on random 32 x 32 crops;
- ``tiny_test_lmdb``: M (default 100) 32 x 32 images;
- ``tiny_mean_pad.binaryproto`` and ``tiny_mean.binaryproto``: their mean
  images (our ``compute_image_mean``).

The records are raw Datums (as CIFAR-10's LMDBs are) written by our
``convert_imageset``.  Photos and classes are those of
``examples/imagenet/make_tiny_imagenet.py`` (views shrunk to 32 x 32): real
photographs that exercise the pipeline, not a data set to learn anything
from.  Running it again keeps what is already there and complete.
"""
import argparse
import importlib.util
import logging
import sys
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent


def _tiny_imagenet():
    path = HERE.parent / "imagenet" / "make_tiny_imagenet.py"
    spec = importlib.util.spec_from_file_location("make_tiny_imagenet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny = _tiny_imagenet()   # also puts the checkout on sys.path when not installed
from pycaffe_lite.io import files
from pycaffe_lite.log import setup_logging
from pycaffe_lite.tools.compute_image_mean import compute_mean

log = logging.getLogger("pycaffe_lite")

PAD = 4


def padded(views):
    for view, label in views:
        yield cv2.copyMakeBorder(view, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=0), label


def build(out=HERE, train=500, test=100, classes=10, seed=1):
    """Make the two LMDBs and their mean files in ``out``; returns the four paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    photos = tiny.sample_photos()
    regions = tiny.class_regions(photos, classes)
    paths = []
    for name, mean_name, count, part_seed, pad in (
            ("tiny_pad_train_lmdb", "tiny_mean_pad.binaryproto", train, seed, True),
            ("tiny_test_lmdb", "tiny_mean.binaryproto", test, seed + 1000, False)):
        db, mean = out / name, out / mean_name
        views = tiny.labelled_views(photos, regions, count, part_seed, shape=(32, 32))
        written = tiny.write_db(db, padded(views) if pad else views, count, "png", part_seed,
                                desc=name)
        if written or not mean.is_file():
            blob, _, _ = compute_mean(str(db))
            files.write_binary_proto(str(mean), blob)   # atomic: a temp file renamed
            log.info("Wrote %s", mean)
        paths += [db, mean]
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE,
                        help="folder for the databases and means (default: %(default)s)")
    parser.add_argument("--train", type=int, default=500, help="training records")
    parser.add_argument("--test", type=int, default=100, help="test records")
    parser.add_argument("--classes", type=int, default=10, help="labels 0..K-1")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if min(args.train, args.test, args.classes) < 1:
        parser.error("--train, --test and --classes must be at least 1")
    setup_logging()
    build(args.out, args.train, args.test, args.classes, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
