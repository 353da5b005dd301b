"""``classify``: BVLC's ``python/classify.py``, images in, class probabilities out.

    classify INPUT OUTPUT.npy [--model_def F] [--pretrained_model F] [--gpu]
             [--center_only] [--images_dim H,W] [--mean_file F] [--input_scale S]
             [--raw_scale S] [--channel_swap 2,1,0] [--ext jpg]

INPUT: an image, a folder (its ``*.<ext>`` images) or a ``.npy`` of images.
The defaults are BVLC's paths in a Caffe checkout (CaffeNet, the ILSVRC 2012
mean), looked up from the current folder; a mean may also be a ``.binaryproto``.
"""
import argparse
import glob
import math
import os
import sys
import time

import numpy

from ..errors import CaffeError
from ..flags import run_reporting
from ..io import files

# BVLC's defaults, relative to its python/ folder; we look from the current folder
# (a Caffe checkout, or its python/ folder).
CAFFENET = "models/bvlc_reference_caffenet/"
DEFAULT_MODEL = CAFFENET + "deploy.prototxt"
DEFAULT_WEIGHTS = CAFFENET + "bvlc_reference_caffenet.caffemodel"
DEFAULT_MEAN = "python/caffe/imagenet/ilsvrc_2012_mean.npy"


def default_path(flag, path):
    """BVLC's default ``path`` (relative to a Caffe checkout) from here or ``..``."""
    for root in (".", "..", "python/.."):
        for candidate in (os.path.join(root, path),
                          os.path.join(root, path.removeprefix("python/"))):
            if os.path.exists(candidate):
                return candidate
    raise CaffeError(f"--{flag} not given, and its default {path} (in a Caffe checkout) is "
                     "not here: pass --" + flag + " FILE")


def load_mean(path):
    """A mean as an array: a ``.npy`` (BVLC's) or a ``.binaryproto`` (Caffe's mean
    files), the latter's leading 1 dropped."""
    if path.endswith(".binaryproto"):
        mean = files.read_blob(path, "mean file")
        return mean[0] if mean.ndim == 4 and mean.shape[0] == 1 else mean
    try:
        return numpy.load(path)
    except (OSError, ValueError) as e:
        raise CaffeError(f"{path}: cannot read the mean (.npy or .binaryproto): {e}") from None


def finite_float(text):
    """argparse's type for a scale: a finite number (NaN or inf would make every
    prediction NaN)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
    return value


def add_preprocessing_flags(parser, mean_help):
    """The flags classify and detect share (BVLC's spellings and defaults)."""
    parser.add_argument("--model_def", help="Model definition file (default: BVLC's "
                        f"{DEFAULT_MODEL} in a Caffe checkout).")
    parser.add_argument("--pretrained_model", help="Trained model weights file (default: "
                        f"{DEFAULT_WEIGHTS}).")
    parser.add_argument("--gpu", action="store_true", help="Switch for gpu computation.")
    parser.add_argument("--mean_file", help=mean_help + f" (default: {DEFAULT_MEAN}). Set "
                        "to '' for no mean subtraction.")
    parser.add_argument("--input_scale", type=finite_float,
                        help="Multiply input features by this scale to finish preprocessing.")
    parser.add_argument("--raw_scale", type=finite_float, default=255.0,
                        help="Multiply raw input by this scale before preprocessing.")
    parser.add_argument("--channel_swap", default="2,1,0",
                        help="Order to permute input channels. The default converts RGB -> "
                             "BGR since BGR is the Caffe default by way of OpenCV.")
    add_safety_flags(parser)


def add_safety_flags(parser):
    """--no-python-layers and --debug (pycaffe_lite extensions), for the tools that
    build a net with argparse."""
    parser.add_argument("--no-python-layers", action="store_true",
                        help="Refuse Python layers (naming the layer and its module) instead "
                             "of importing the module the prototxt names: for untrusted "
                             "nets (pycaffe_lite extension).")
    parser.add_argument("--debug", action="store_true",
                        help="Print the traceback of an error (pycaffe_lite extension).")


def resolve(args):
    """Fill the default paths, read the mean and channel swap; set the mode."""
    import pycaffe_lite as caffe
    args.model_def = args.model_def or default_path("model_def", DEFAULT_MODEL)
    args.pretrained_model = args.pretrained_model or default_path("pretrained_model",
                                                                  DEFAULT_WEIGHTS)
    if args.mean_file is None:
        args.mean_file = default_path("mean_file", DEFAULT_MEAN)
    mean = load_mean(args.mean_file) if args.mean_file else None
    try:
        swap = [int(s) for s in args.channel_swap.split(",")] if args.channel_swap else None
    except ValueError:
        raise CaffeError(f"--channel_swap {args.channel_swap}: expected channel indices "
                         "such as 2,1,0") from None
    if args.gpu:
        caffe.set_mode_gpu()
        print("GPU mode")
    else:
        caffe.set_mode_cpu()
        print("CPU mode")
    return mean, swap


def main(argv=None):
    parser = argparse.ArgumentParser(prog="classify", description="Classify images with "
                                     "a Caffe model (BVLC's python/classify.py)")
    parser.add_argument("input_file", help="Input image, directory, or npy.")
    parser.add_argument("output_file", help="Output npy filename.")
    add_preprocessing_flags(parser, "Data set image mean of [Channels x Height x Width] "
                            "dimensions (numpy array, or a Caffe .binaryproto)")
    parser.add_argument("--center_only", action="store_true",
                        help="Switch for prediction from center crop alone instead of "
                             "averaging predictions across crops (default).")
    parser.add_argument("--images_dim", default="256,256",
                        help="Canonical 'height,width' dimensions of input images.")
    parser.add_argument("--ext", default="jpg", help="Image file extension to take as "
                        "input when a directory is given as the input file.")
    args = parser.parse_args(argv)
    try:
        image_dims = [int(s) for s in args.images_dim.split(",")]
    except ValueError:
        image_dims = []
    if len(image_dims) != 2 or min(image_dims) < 1:
        parser.error(f"--images_dim {args.images_dim}: expected height,width (two positive "
                     "integers)")

    def body():
        import pycaffe_lite as caffe
        mean, swap = resolve(args)
        classifier = caffe.Classifier(args.model_def, args.pretrained_model,
                                      image_dims=image_dims, mean=mean,
                                      input_scale=args.input_scale, raw_scale=args.raw_scale,
                                      channel_swap=swap)
        inputs = load_inputs(os.path.expanduser(args.input_file), args.ext)
        print(f"Classifying {len(inputs)} inputs.")
        start = time.time()
        predictions = classifier.predict(inputs, not args.center_only)
        print(f"Done in {time.time() - start:.2f} s.")
        out = args.output_file if args.output_file.endswith(".npy") else \
            args.output_file + ".npy"   # as numpy.save names it
        print(f"Saving results into {out}")
        with files.atomic_output(out) as f:
            numpy.save(f, predictions)
    return run_reporting("classify", body, args)


def load_inputs(path, ext):
    """Images from a .npy, a folder's ``*.<ext>`` files, or one image file (an image
    that cannot be read raises an OSError, one line from run_reporting)."""
    from ..io.caffe_io import load_image
    print(f"Loading {'folder' if os.path.isdir(path) else 'file'}: {path}")
    if path.endswith("npy"):
        return list(numpy.load(path))
    if os.path.isdir(path):
        names = sorted(glob.glob(os.path.join(path, "*." + ext)))
        if not names:
            raise CaffeError(f"{path}: no *.{ext} images in this folder (--ext)")
        return [load_image(name) for name in names]
    if not os.path.exists(path):
        raise CaffeError(f"{path}: no such image, folder or .npy file")
    return [load_image(path)]


if __name__ == "__main__":
    sys.exit(main())
