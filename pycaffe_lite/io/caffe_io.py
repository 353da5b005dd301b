"""pycaffe's ``caffe.io`` helpers and Caffe's image/Datum helpers.

Two groups, each a thin layer over NumPy and OpenCV (``cv2``):

* pycaffe's ``caffe.io`` API with its exact semantics: ``load_image``,
  ``resize_image``, ``oversample``, ``Transformer``, and the BlobProto /
  Datum <-> array conversions.  OpenCV replaces scikit-image: images are
  read with ``cv2`` and converted from BGR to RGB.
* Caffe's ``util/io.cpp``: reading an image as OpenCV does (``read_image``,
  BGR, HxWxC uint8), packing it into a ``Datum`` (``cvmat_to_datum``) and
  decoding encoded Datums.

Caffe's databases (``util/db``) are in :mod:`pycaffe_lite.io.db`.
"""
import logging
import os

import numpy

from ..errors import CaffeError, WeightsError
from ..proto import caffe_pb2
from . import files

log = logging.getLogger("pycaffe_lite")

try:  # OpenCV is a dependency; imported lazily-tolerant so the proto helpers work without it
    import cv2
except ImportError:  # pragma: no cover - cv2 is declared in pyproject.toml
    cv2 = None


class InputError(CaffeError, ValueError):
    """What pycaffe's ``caffe.io`` refuses with a ValueError; a CaffeError too, so
    the tools report it as the user's error, in one line."""


def _cv2():
    if cv2 is None:  # pragma: no cover
        raise CaffeError("this function needs OpenCV: pip install opencv-python-headless")
    return cv2


# --- proto / datum / ndarray conversion (pycaffe) ------------------------------------

def blobproto_to_array(blob, return_diff=False):
    """The data (or diff) of a BlobProto as an array of its shape.

    The legacy num/channels/height/width take precedence over ``shape`` when
    any of them is set, as in pycaffe.  Values come back as float64 (pycaffe
    builds them with ``np.array`` of the repeated field).
    """
    try:
        return files.blob_proto_to_array(blob, numpy.float64, return_diff)
    except WeightsError as e:
        raise InputError(str(e)) from None  # pycaffe's reshape raises ValueError


def array_to_blobproto(arr, diff=None):
    """A BlobProto with ``shape`` and the values of ``arr`` (and ``diff``)."""
    return files.array_to_blob_proto(arr, diff)


def arraylist_to_blobprotovector_str(arraylist):
    """A serialized BlobProtoVector holding each array of the list."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(arr) for arr in arraylist])
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(str):  # noqa: A002 - pycaffe's parameter name
    """The arrays of a serialized BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(str)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr, label=None):
    """A Datum from a CxHxW array: raw bytes if uint8, else ``float_data``."""
    arr = numpy.asarray(arr)
    if arr.ndim != 3:
        raise InputError(f"Incorrect array shape: array_to_datum needs a 3-D (C x H x W) "
                         f"array, got shape {arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == numpy.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).flat)
    if label is not None:
        datum.label = _int32_label(label, "array_to_datum")
    return datum


def datum_to_array(datum):
    """The CxHxW array of a (not encoded) Datum; the label is ``datum.label``."""
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        return numpy.frombuffer(datum.data, dtype=numpy.uint8).reshape(shape).copy()
    return numpy.array(datum.float_data).astype(float).reshape(shape)


# --- pre-processing (pycaffe's Transformer) ---------------------------------------------

class Transformer:
    """Prepare images for a net's inputs (pycaffe's ``caffe.io.Transformer``).

    ``inputs``: ``{blob name: blob shape}``, e.g. ``{'data': net.blobs['data'].data.shape}``.
    ``preprocess`` applies, in this order: conversion to float32, resize to
    the input's H x W, transpose, channel swap, raw scale, mean subtraction,
    input scale.  ``deprocess`` undoes them in reverse order (except resizing).
    """

    def __init__(self, inputs):
        self.inputs = inputs
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def __check_input(self, in_):
        if in_ not in self.inputs:
            raise CaffeError(f"{in_} is not one of the net inputs: {self.inputs}")

    def preprocess(self, in_, data):
        """(H' x W' x K) image -> (K x H x W) float32 array for the input ``in_``."""
        self.__check_input(in_)
        # A copy: pycaffe's in-place scaling could write into the caller's array.
        caffe_in = numpy.array(data, dtype=numpy.float32)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = tuple(self.inputs[in_][2:])
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        if raw_scale is not None:
            caffe_in *= raw_scale
        if mean is not None:
            caffe_in -= mean
        if input_scale is not None:
            caffe_in *= input_scale
        return caffe_in

    def deprocess(self, in_, data):
        """Invert ``preprocess`` (without the resize)."""
        self.__check_input(in_)
        decaf_in = numpy.array(data, copy=True).squeeze()
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        if mean is not None:
            decaf_in += mean
        if raw_scale is not None:
            decaf_in /= raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[numpy.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(numpy.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """Order of dimensions, e.g. (2, 0, 1) turns H x W x C into C x H x W."""
        self.__check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise CaffeError("Transpose order needs to have the same number of dimensions as "
                            f"the input: got {tuple(order)} for input '{in_}' of shape "
                            f"{tuple(self.inputs[in_])}")
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """Channel order after the transpose, e.g. (2, 1, 0) maps RGB to BGR."""
        self.__check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise CaffeError("Channel swap needs to have the same number of dimensions as the "
                            f"input channels: got {tuple(order)}, input '{in_}' has "
                            f"{self.inputs[in_][1]} channels")
        channels = self.inputs[in_][1]
        if not all(isinstance(k, (int, numpy.integer)) and 0 <= k < channels for k in order):
            raise CaffeError(f"Channel swap {tuple(order)} for input '{in_}': every entry must "
                             f"be a channel index, 0 to {channels - 1}")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """Multiply the raw input (before the mean), e.g. 255 for [0, 1] images."""
        self.__check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Mean to subtract: one value per channel (K,) or an elementwise (K, H, W)
        (or (H, W)), resized bilinearly to the input's H x W when it differs."""
        self.__check_input(in_)
        mean = numpy.asarray(mean)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise InputError(f"Mean channels incompatible with input: mean has {ms[0]} "
                                 f"values, input '{in_}' has {self.inputs[in_][1]} channels")
            mean = mean[:, numpy.newaxis, numpy.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise InputError(f"Mean shape invalid: {mean.shape} (expected (K,), (H, W) or "
                                 "(K, H, W))")
            in_shape = tuple(self.inputs[in_][1:])
            if ms[0] != in_shape[0]:
                raise InputError(f"Mean channels incompatible with input: mean {ms}, input "
                                 f"'{in_}' {in_shape}")
            if ms != in_shape:
                # BVLC master resizes an elementwise mean to the input (the 3x256x256
                # ImageNet mean for a 227x227 net).  Bilinear interpolation is affine-
                # invariant, so the min/max normalisation pycaffe does for skimage's
                # sake changes nothing here.
                mean = resize_image(mean.reshape(ms).transpose(1, 2, 0),
                                    in_shape[1:]).transpose(2, 0, 1)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiply the preprocessed input (after the mean subtraction)."""
        self.__check_input(in_)
        self.input_scale[in_] = scale


# --- image IO (pycaffe) ----------------------------------------------------------------

# scikit-image's rgb2gray weights (pycaffe reads grayscale through skimage).
_GRAY_WEIGHTS = numpy.array([0.2125, 0.7154, 0.0721])


def _as_float(img):
    """skimage.img_as_float: integers scaled to [0, 1] by their type's maximum."""
    if img.dtype.kind == "u":
        return img.astype(numpy.float64) / numpy.iinfo(img.dtype).max
    if img.dtype.kind == "i":
        return numpy.maximum(img.astype(numpy.float64) / numpy.iinfo(img.dtype).max, -1.0)
    return img.astype(numpy.float64)


class ImageFileError(CaffeError, OSError):
    """An image path that is not a regular file: OpenCV would read a device or a FIFO
    forever.  An OSError, as pycaffe's load_image raises."""


def _check_image_file(filename):
    """Refuse a device, a FIFO, a socket or a folder, before OpenCV opens it; a
    missing file is left to the caller (OpenCV returns None)."""
    filename = files.check_path(filename, "image", ImageFileError)
    try:
        mode = os.stat(filename).st_mode
    except OSError:
        return filename
    kind = files._not_regular(mode)
    if kind:
        raise ImageFileError(f"{filename}: is {kind}, not an image file")
    return filename


def load_image(filename, color=True):
    """An image as float32 in [0, 1]: H x W x 3 RGB, or H x W x 1 with ``color=False``.

    A grayscale file gives three equal channels when ``color`` is True; an
    alpha channel is dropped.  ``color=False`` converts colour files with
    scikit-image's luminance weights (0.2125 R + 0.7154 G + 0.0721 B).
    """
    img = _cv2().imread(_check_image_file(filename), cv2.IMREAD_UNCHANGED)
    if img is None:
        if not os.path.exists(filename):
            raise FileNotFoundError(f"load_image: no such file: {filename}")
        raise IOError(f"load_image: cannot decode {filename} as an image")
    if img.ndim == 3:
        # BGR(A) -> RGB; gray + alpha -> gray; the alpha channel is dropped.
        img = img[:, :, 2::-1] if img.shape[2] >= 3 else img[:, :, 0]
    img = _as_float(img)
    if not color and img.ndim == 3:
        img = img @ _GRAY_WEIGHTS
    img = img.astype(numpy.float32)
    if img.ndim == 2:
        img = img[:, :, numpy.newaxis]
        if color:
            img = numpy.tile(img, (1, 1, 3))
    return numpy.ascontiguousarray(img)


_INTERPOLATION = {0: "INTER_NEAREST", 1: "INTER_LINEAR", 2: "INTER_CUBIC", 3: "INTER_CUBIC"}


def resize_image(im, new_dims, interp_order=1):
    """Resize an H x W x K array to ``new_dims`` = (height, width), keeping K.

    ``interp_order``: 0 nearest, 1 bilinear (default), 2-3 bicubic.  A
    constant image stays that constant.  Returns float32.
    """
    im = numpy.asarray(im)
    new_h, new_w = int(new_dims[0]), int(new_dims[1])
    if im.ndim != 3:
        raise InputError(f"resize_image needs an H x W x K array, got shape {im.shape}")
    if not im.size or new_h < 1 or new_w < 1:
        raise InputError(f"resize_image: cannot resize an image of shape {im.shape} to "
                         f"{new_h} x {new_w} (empty image or size)")
    im_min, im_max = im.min(), im.max()
    if not im_max > im_min:
        # the image is a constant -- as pycaffe, avoid interpolating
        return numpy.full((new_h, new_w, im.shape[-1]), im_min, dtype=numpy.float32)
    flag = getattr(_cv2(), _INTERPOLATION.get(interp_order, "INTER_LINEAR"))
    src = numpy.ascontiguousarray(im, dtype=numpy.float32)
    # OpenCV handles at most 512 channels per call.
    parts = [cv2.resize(src[:, :, k:k + 512], (new_w, new_h), interpolation=flag)
             for k in range(0, src.shape[2], 512)]
    parts = [p[:, :, numpy.newaxis] if p.ndim == 2 else p for p in parts]
    return numpy.concatenate(parts, axis=2).astype(numpy.float32)


def oversample(images, crop_dims):
    """The four corner crops, the centre crop and their mirrors of every image.

    ``images``: iterable of H x W x K arrays (same shape).  Returns a
    (10 * N) x h x w x K float32 array: per image 5 crops then 5 mirrored.
    """
    images = list(images)
    im_shape = numpy.array(images[0].shape)
    crop_dims = numpy.array(crop_dims)
    im_center = im_shape[:2] / 2.0

    h_indices = (0, im_shape[0] - crop_dims[0])
    w_indices = (0, im_shape[1] - crop_dims[1])
    crops_ix = numpy.empty((5, 4), dtype=int)
    curr = 0
    for i in h_indices:
        for j in w_indices:
            crops_ix[curr] = (i, j, i + crop_dims[0], j + crop_dims[1])
            curr += 1
    crops_ix[4] = numpy.tile(im_center, (1, 2)) + numpy.concatenate(
        [-crop_dims / 2.0, crop_dims / 2.0])
    crops_ix = numpy.tile(crops_ix, (2, 1))

    crops = numpy.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]),
                        dtype=numpy.float32)
    ix = 0
    for im in images:
        for crop in crops_ix:
            crops[ix] = im[crop[0]:crop[2], crop[1]:crop[3], :]
            ix += 1
        crops[ix - 5:ix] = crops[ix - 5:ix, :, ::-1, :]  # flip for mirrors
    return crops


# --- Caffe's util/io: OpenCV images and Datums -----------------------------------------

def read_image(filename, height=0, width=0, is_color=True):
    """Caffe's ReadImageToCVMat: HxWx3 BGR (or HxW gray) uint8, or None if unreadable.

    ``height``/``width`` both > 0 resize with bilinear interpolation.
    """
    flag = cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE
    img = _cv2().imread(_check_image_file(filename), flag)
    if img is None:
        return None
    if height > 0 and width > 0:
        img = cv2.resize(img, (int(width), int(height)))
    return img


def _match_ext(filename, encoding):
    ext = filename.rsplit(".", 1)[-1].lower()
    encoding = encoding.lower()
    return ext == encoding or (encoding == "jpg" and ext == "jpeg")


def cvmat_to_datum(img, datum=None):
    """Caffe's CVMatToDatum: an HxWxC (or HxW) uint8 image as raw CxHxW Datum bytes."""
    img = numpy.asarray(img)
    if img.dtype != numpy.uint8:
        raise CaffeError(f"Image data type must be unsigned byte, got {img.dtype}")
    chw = img[numpy.newaxis] if img.ndim == 2 else img.transpose(2, 0, 1)
    datum = datum if datum is not None else caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in chw.shape)
    datum.ClearField("float_data")
    datum.data = numpy.ascontiguousarray(chw).tobytes()
    datum.encoded = False
    return datum


# Image formats OpenCV may write (cv2.haveImageWriter tells which this build does).
_ENCODINGS = ("bmp", "dib", "jpg", "jpeg", "jpe", "jp2", "png", "webp", "avif", "pbm", "pgm",
              "ppm", "pxm", "pnm", "pfm", "sr", "ras", "tif", "tiff", "hdr", "pic")


def can_encode(encoding):
    """Whether OpenCV writes images of this encoding (a file extension: 'png')."""
    if not (encoding.isascii() and encoding.isalnum()):
        return False        # haveImageWriter takes a file name: 'x.png' would pass
    try:
        return bool(_cv2().haveImageWriter("." + encoding))
    except cv2.error:       # a codec compiled in but disabled (OpenEXR)
        return False


def image_encodings():
    """The encodings (file extensions) this OpenCV can write, for Datums."""
    return [encoding for encoding in _ENCODINGS if can_encode(encoding)]


def check_encoding(encoding, what="encoding"):
    """``encoding`` lower-cased, or a CaffeError naming it and the accepted ones."""
    if not can_encode(encoding):
        raise CaffeError(f"{what} '{encoding}': not an image format OpenCV can write; "
                         f"accepted: {', '.join(image_encodings())}")
    return encoding.lower()


def read_image_to_datum(filename, label, height=0, width=0, is_color=True, encoding=""):
    """Caffe's ReadImageToDatum; None when the image cannot be read.

    With ``encoding`` ('jpg', 'png', ...; :func:`image_encodings` lists them) the
    Datum holds the encoded file: the original bytes when no conversion is
    needed, else OpenCV's re-encoding.  An unknown encoding or a label outside
    int32 (Datum.label) is a CaffeError naming it.
    """
    if encoding:
        encoding = check_encoding(encoding)
    label = _int32_label(label, filename)
    img = read_image(filename, height, width, is_color)
    if img is None:
        return None
    if encoding:
        channels = 1 if img.ndim == 2 else img.shape[2]
        if (channels == 3) == is_color and not height and not width and _match_ext(
                os.fspath(filename), encoding):
            with open(filename, "rb") as f:
                data = f.read()
        else:
            try:
                ok, buf = cv2.imencode("." + encoding, img)
            except cv2.error as e:
                ok, reason = False, str(e).strip().splitlines()[-1]
            else:
                reason = "imencode failed"
            if not ok:
                raise CaffeError(f"{filename}: OpenCV cannot encode it as '{encoding}' "
                                 f"({reason})")
            data = buf.tobytes()
        return caffe_pb2.Datum(data=data, label=label, encoded=True)
    datum = cvmat_to_datum(img)
    datum.label = label
    return datum


def decode_datum_to_cvmat(datum, is_color=None):
    """The image of an encoded Datum: native channels (``is_color=None``), colour or gray.

    Returns an HxWxC (or HxW) array, or None when OpenCV cannot decode it.
    """
    flag = (cv2.IMREAD_UNCHANGED if is_color is None
            else cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
    buf = numpy.frombuffer(datum.data, dtype=numpy.uint8)
    if not buf.size:
        return None
    return _cv2().imdecode(buf, flag)


def decode_datum_native(datum):
    """Caffe's DecodeDatumNative: replace an encoded Datum by its raw pixels (in place).

    Returns True when it decoded something.
    """
    if not datum.encoded:
        return False
    img = decode_datum_to_cvmat(datum)
    if img is None:
        raise CaffeError("Could not decode datum")
    label = datum.label
    cvmat_to_datum(img, datum)
    datum.label = label
    return True


INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1


def _int32_label(label, where):
    try:
        value = int(label)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{where}: label {label!r} is not an integer") from None
    if not INT32_MIN <= value <= INT32_MAX:
        raise InputError(f"{where}: label {label} is out of range: Caffe's labels are int32 "
                         f"({INT32_MIN} to {INT32_MAX})")
    return value


def read_image_list(path):
    """[(path, label, line number)] of a "path label" list (the label follows the last space).

    The format of ImageData sources and convert_imageset lists; blank lines
    are skipped; a malformed line, or a label outside int32 (Caffe reads an
    int), raises an error naming ``file:line``.
    """
    path = files.check_path(path, "list file", CaffeError)
    if not os.path.lexists(path):
        raise CaffeError(f"list file '{path}' does not exist")
    data = files.read_regular(path, "list", CaffeError)   # not a device, FIFO, folder
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CaffeError(f"{path}:{line}: not a text list of 'path label' lines (byte "
                         f"{e.start} is not UTF-8)") from None
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        name, sep, label = line.rpartition(" ")
        try:
            label = int(label)
        except ValueError:
            label = None
        if not sep or not name or label is None:
            raise CaffeError(f"{path}:{number}: expected 'path label' (an image path, a space, "
                             f"an integer label), got {line!r}")
        lines.append((name, _int32_label(label, f"{path}:{number}"), number))
    return lines
