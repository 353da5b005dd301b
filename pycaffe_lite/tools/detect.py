"""``detect``: BVLC's ``python/detect.py``, windows of images classified.

    detect INPUT.{txt,csv} OUTPUT.{csv,h5} [--crop_mode list|selective_search]
           [--model_def F] [--pretrained_model F] [--gpu] [--mean_file F]
           [--input_scale S] [--raw_scale S] [--channel_swap 2,1,0] [--context_pad 16]

INPUT: a ``.txt`` of image filenames (for selective search), or a ``.csv``
with a header ``filename,xmin,ymin,xmax,ymax`` (``--crop_mode list``).
OUTPUT: a ``.csv`` (filename, ymin, xmin, ymax, xmax, class0 ...) or an HDF5
file (datasets ``filename``, ``window``, ``prediction``).  BVLC writes a pandas
frame (its ``.csv`` branch does not run); we write plain csv / h5py, without
pandas.
"""
import argparse
import csv
import io
import sys
import time

import numpy

from ..errors import CaffeError
from ..flags import run_reporting
from ..io import files
from .classify import add_preprocessing_flags, resolve

COORD_COLS = ["ymin", "xmin", "ymax", "xmax"]


def _read_text(path):
    """The text of the regular file ``path`` (a device, a FIFO or a NUL in the name
    is refused by name)."""
    return files.read_regular(path, "window or image list", CaffeError).decode(
        "utf-8", errors="replace")


def read_windows(path):
    """(filename, windows) pairs from a CSV with a filename,xmin,ymin,xmax,ymax
    header, windows as ymin, xmin, ymax, xmax rows, in first-seen order."""
    rows = list(csv.DictReader(io.StringIO(_read_text(path), newline=""),
                               skipinitialspace=True))
    windows = {}
    for line, row in enumerate(rows, start=2):
        try:
            box = [int(float(row[c])) for c in COORD_COLS]
        except (KeyError, TypeError, ValueError, OverflowError):   # OverflowError: inf
            raise CaffeError(f"{path}:{line}: expected filename,xmin,ymin,xmax,ymax values "
                             "under a header naming them") from None
        ymin, xmin, ymax, xmax = box
        if not (0 <= xmin < xmax and 0 <= ymin < ymax):
            # a negative coordinate would index from the image's far edge
            raise CaffeError(f"{path}:{line}: window xmin={xmin} ymin={ymin} xmax={xmax} "
                             f"ymax={ymax}: needs 0 <= xmin < xmax and 0 <= ymin < ymax")
        windows.setdefault(row["filename"], []).append(box)
    return list(windows.items())


def write_detections(path, detections):
    """The detections as a csv (one row per window) or an HDF5 file."""
    names = [d["filename"] for d in detections]
    windows = numpy.array([d["window"] for d in detections], dtype=numpy.int64)
    predictions = numpy.array([d["prediction"] for d in detections]).reshape(len(names), -1)
    with files.atomic_output(path) as f:
        if path.lower().endswith(".csv"):
            text = [",".join(["filename"] + COORD_COLS +
                             [f"class{i}" for i in range(predictions.shape[1])])]
            text += [",".join([name] + [str(v) for v in window] +
                              [repr(float(p)) for p in prediction])
                     for name, window, prediction in zip(names, windows, predictions)]
            f.write(("\n".join(text) + "\n").encode())
        else:
            import h5py
            with h5py.File(f, "w") as h5:
                h5["filename"] = numpy.array(names, dtype=h5py.string_dtype())
                h5["window"] = windows
                h5["prediction"] = predictions


def check_context_pad(detector, context_pad):
    """A context pad of half the input or more leaves no room for the window (the
    grown box's scale would be infinite or negative)."""
    size = int(min(detector.crop_dims[:2]))
    if not 0 <= 2 * context_pad < size:
        raise CaffeError(f"--context_pad {context_pad}: must be at least 0 and less than half "
                         f"the net's input size ({size} pixels)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="detect", description="Windowed detection with a "
                                     "Caffe model (BVLC's python/detect.py)")
    parser.add_argument("input_file", help="Input txt/csv filename. If .txt, must be list "
                        "of filenames. If .csv, must be comma-separated file with header "
                        "'filename, xmin, ymin, xmax, ymax'")
    parser.add_argument("output_file", help="Output h5/csv filename. Format depends on "
                        "extension.")
    parser.add_argument("--crop_mode", default="selective_search",
                        choices=["list", "selective_search"],
                        help="How to generate windows for detection.")
    add_preprocessing_flags(parser, "Data set image mean of H x W x K dimensions (numpy "
                            "array, or a Caffe .binaryproto); averaged to one value per "
                            "channel")
    parser.add_argument("--context_pad", type=int, default=16,
                        help="Amount of surrounding context to collect in input window.")
    args = parser.parse_args(argv)
    if not args.input_file.lower().endswith((".txt", ".csv")):
        parser.error(f"{args.input_file}: unknown input file type: not in txt or csv")

    def body():
        import pycaffe_lite as caffe
        mean, swap = resolve(args)
        if mean is not None and mean.ndim == 3 and mean.shape[1:] != (1, 1):
            mean = mean.mean(1).mean(1)
        detector = caffe.Detector(args.model_def, args.pretrained_model, mean=mean,
                                  input_scale=args.input_scale, raw_scale=args.raw_scale,
                                  channel_swap=swap, context_pad=args.context_pad)
        start = time.time()
        print("Loading input...")
        if args.crop_mode == "list":
            if not args.input_file.lower().endswith(".csv"):
                raise CaffeError(f"{args.input_file}: --crop_mode list needs a .csv of "
                                 "windows (filename,xmin,ymin,xmax,ymax)")
            windows = read_windows(args.input_file)
            check_context_pad(detector, args.context_pad)
            detections = detector.detect_windows(windows)
        else:
            names = [line.strip() for line in _read_text(args.input_file).splitlines()
                     if line.strip()]
            detections = detector.detect_selective_search(names)
        print(f"Processed {len(detections)} windows in {time.time() - start:.3f} s.")
        start = time.time()
        write_detections(args.output_file, detections)
        print(f"Saved to {args.output_file} in {time.time() - start:.3f} s.")
    return run_reporting("detect", body, args)


if __name__ == "__main__":
    sys.exit(main())
