#!/usr/bin/env python3
"""A tiny ImageNet-style LMDB pair, made from photos this machine already has.

    python examples/imagenet/make_tiny_imagenet.py [--out DIR] [--train N] [--val N]
                                                   [--classes K] [--seed S]

Writes ``DIR/tiny_train_lmdb`` (N records, default 400) and ``DIR/tiny_val_lmdb``
(default 100), DIR being this script's folder (``examples/imagenet/``) unless
given: the databases the HWGQ example nets read.  They are made as ILSVRC12's
are: the images and a "path label" list go through our ``convert_imageset``
(``--resize_height=256 --resize_width=256 --shuffle --encoded
--encode_type=jpg``), so each record is a Datum holding a 256 x 256 JPEG and
a label, under the key ``%08d_<path>``.

The photos: matplotlib's sample photo of Grace Hopper (matplotlib is installed
with ``pip install -e .[test]``), and scikit-image's sample photos
(``skimage.data``) when scikit-image happens to be installed.  Class k (labels
0..K-1) is one region of one photo; its images are random crops of that region,
shifted, scaled and made brighter or darker.  This exercises the whole pipeline
(LMDB, JPEG decoding, crops, mirrors, mean subtraction, training) on real
photographs; the accuracy a net reaches on it means nothing.

Running it again does nothing when the databases are there with the asked
number of records; a database is written under a temporary name and renamed
when complete, so an interrupted run leaves nothing half-made behind.
"""
import argparse
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy
from tqdm import tqdm

try:
    import pycaffe_lite  # noqa: F401
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pycaffe_lite import rng
from pycaffe_lite.io.db import open_db
from pycaffe_lite.log import setup_logging
from pycaffe_lite.tools.convert_imageset import convert

log = logging.getLogger("pycaffe_lite")

HERE = Path(__file__).resolve().parent

# scikit-image's colour photos that ship inside the package (no download).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                  "immunohistochemistry")


def sample_photos():
    """[(name, H x W x 3 BGR uint8 image)]: matplotlib's Grace Hopper, then
    scikit-image's photos when it is installed."""
    import matplotlib
    import matplotlib.cbook
    try:
        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    except (OSError, ValueError):
        path = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read matplotlib's sample photo {path}")
    photos = [("grace_hopper", image)]
    try:
        import skimage.data
    except ImportError:
        return photos
    for name in SKIMAGE_PHOTOS:
        try:
            rgb = getattr(skimage.data, name)()
        except Exception as e:  # noqa: BLE001 - missing in this version, or not shipped
            log.info("skimage.data.%s not used: %s", name, e)
            continue
        if rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == numpy.uint8:
            photos.append((name, numpy.ascontiguousarray(rgb[:, :, ::-1])))
    return photos


def class_regions(photos, classes):
    """[(photo index, (x0, y0, x1, y1))] for each class: the classes are dealt out to
    the photos in turn, and a photo with m of them is cut into a grid of at least m
    cells (ceil(sqrt(m)) columns), one region per class."""
    count = [len(range(p, classes, len(photos))) for p in range(len(photos))]
    regions = []
    for label in range(classes):
        p, slot = label % len(photos), label // len(photos)
        height, width = photos[p][1].shape[:2]
        cols = math.ceil(math.sqrt(count[p]))
        rows = math.ceil(count[p] / cols)
        row, col = divmod(slot, cols)
        regions.append((p, (col * width // cols, row * height // rows,
                            (col + 1) * width // cols, (row + 1) * height // rows)))
    return regions


def random_view(image, region, generator):
    """A random crop of ``region`` (70-100% of its size, shifted by up to 10% of it,
    kept inside the photo), its brightness and contrast changed by up to 20%."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = region
    size = generator.uniform(0.7, 1.0)
    w, h = max(8, int((x1 - x0) * size)), max(8, int((y1 - y0) * size))
    left = x0 + generator.uniform(-0.1, 1.1) * (x1 - x0 - w)
    top = y0 + generator.uniform(-0.1, 1.1) * (y1 - y0 - h)
    left = int(min(max(left, 0), width - w))
    top = int(min(max(top, 0), height - h))
    crop = image[top:top + h, left:left + w].astype(numpy.float32)
    crop = crop * generator.uniform(0.8, 1.2) + generator.uniform(-25, 25)
    return numpy.clip(crop, 0, 255).astype(numpy.uint8)


def labelled_views(photos, regions, count, seed, shape=None):
    """``count`` (image, label) pairs, the labels taking turns; ``shape`` (h, w)
    resizes each view (area interpolation) where the caller wants a fixed size."""
    generator = numpy.random.default_rng(seed)
    for i in range(count):
        label = i % len(regions)
        p, region = regions[label]
        view = random_view(photos[p][1], region, generator)
        if shape is not None:
            view = cv2.resize(view, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        yield view, label


def _records(path):
    """The number of records of the LMDB at ``path``, or None when there is none."""
    if not (path / "data.mdb").is_file():
        return None
    reader = open_db(path)
    try:
        return len(reader)
    finally:
        reader.close()


def write_db(path, views, count, image_ext, seed, desc, **convert_flags):
    """Write ``count`` (image, label) views as the LMDB ``path`` with our
    convert_imageset (``convert_flags``: its flags), unless it is already there
    with ``count`` records.  Returns True when it wrote the database."""
    path = Path(path)
    have = _records(path)
    if have == count:
        log.info("%s is there (%d records): kept", path, count)
        return False
    if path.exists():
        log.info("%s holds %s records, %d asked for: making it again", path, have, count)
        shutil.rmtree(path)
    for stale in path.parent.glob(f".{path.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix=f"{path.name}-images-") as images:
        lines = []
        for i, (view, label) in enumerate(tqdm(views, total=count, desc=desc, unit="img",
                                               disable=None)):
            name = f"{label:04d}/{i:06d}.{image_ext}"
            os.makedirs(os.path.join(images, f"{label:04d}"), exist_ok=True)
            if not cv2.imwrite(os.path.join(images, name), view):
                raise SystemExit(f"OpenCV cannot write {name} in {images}")
            lines.append(f"{name} {label}\n")
        list_file = os.path.join(images, "list.txt")
        with open(list_file, "w") as f:
            f.writelines(lines)
        rng.set_random_seed(seed)  # the order --shuffle gives
        written = convert(images + os.sep, list_file, os.fspath(partial), shuffle=True,
                          **convert_flags)
    if written != count:
        shutil.rmtree(partial, ignore_errors=True)
        raise SystemExit(f"convert_imageset stored {written} of {count} images in {path}")
    os.rename(partial, path)
    log.info("Wrote %s: %d records", path, count)
    return True


def build(out=HERE, train=400, val=100, classes=10, seed=1):
    """Make ``out/tiny_train_lmdb`` and ``out/tiny_val_lmdb``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    photos = sample_photos()
    regions = class_regions(photos, classes)
    log.info("%d classes from %d photo(s): %s", classes, len(photos),
             ", ".join(name for name, _ in photos))
    paths = []
    for name, count, part_seed in (("tiny_train_lmdb", train, seed),
                                   ("tiny_val_lmdb", val, seed + 1000)):
        path = out / name
        # The crops are stored as JPEG files; convert_imageset resizes them to
        # 256 x 256 and stores them JPEG-encoded (ILSVRC12's raw 256 x 256 Datums
        # would be 10 times larger).
        write_db(path, labelled_views(photos, regions, count, part_seed), count, "jpg",
                 part_seed, desc=name, resize_height=256, resize_width=256, encoded=True,
                 encode_type="jpg")
        paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE,
                        help="folder for the databases (default: %(default)s)")
    parser.add_argument("--train", type=int, default=400, help="training records")
    parser.add_argument("--val", type=int, default=100, help="validation records")
    parser.add_argument("--classes", type=int, default=10, help="labels 0..K-1")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if min(args.train, args.val, args.classes) < 1:
        parser.error("--train, --val and --classes must be at least 1")
    setup_logging()
    build(args.out, args.train, args.val, args.classes, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
