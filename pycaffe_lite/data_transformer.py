"""Caffe's DataTransformer: crop, mirror, mean subtraction and scaling of inputs.

Data layers run every record through it (``data_transformer.cpp``).  For an
input of C x H x W pixels ``x`` (a Datum's bytes or floats, or an OpenCV
image, H x W x C, BGR) and output size h x w (``crop_size`` or H x W)::

    top[c, i, j'] = (x[c, h_off + i, w_off + j] - mean[c, h_off + i, w_off + j]) * scale
    j' = w - 1 - j if mirrored else j

``mean`` is the ``mean_file`` blob indexed at the crop position, or one
``mean_value`` per channel (a single value is used for every channel).
Mirroring is drawn at random for each record whenever ``mirror`` is set, in
TRAIN and in TEST alike (as Caffe does); the crop offset is random in TRAIN
and centred in TEST.  Random numbers come from a generator of the
transformer's own, seeded from ``pycaffe_lite.rng`` when it is made, so a
data layer's prefetch thread never races the other users of the shared
generator.
"""
import logging

import numpy

from . import rng
from .errors import CaffeError
from .layer import TRAIN
from .proto import caffe_pb2

log = logging.getLogger("pycaffe_lite")


class TransformError(CaffeError):
    """An input the transformer cannot handle (size, channels, encoding...)."""


class DataTransformer:
    """Apply a TransformationParameter to Datums, images and arrays.

    ``param``: a ``caffe_pb2.TransformationParameter``; ``phase``: TRAIN or
    TEST; ``dtype``: the dtype of what ``transform`` returns.
    """

    def __init__(self, param=None, phase=TRAIN, dtype=numpy.float32):
        self.param = param if param is not None else caffe_pb2.TransformationParameter()
        self.phase = phase
        self.dtype = numpy.dtype(dtype)
        p = self.param
        if p.force_color and p.force_gray:
            raise TransformError("transform_param: cannot set both force_color and force_gray")
        self.scale = self.dtype.type(p.scale)
        self.mean = None
        if p.HasField("mean_file"):
            if len(p.mean_value):
                raise TransformError("transform_param: cannot specify mean_file and "
                                     "mean_value at the same time")
            from .io.files import read_blob
            log.info("Loading mean file from: %s", p.mean_file)
            try:
                mean = read_blob(p.mean_file, "mean file (binaryproto)")
            except CaffeError as e:
                raise TransformError(f"transform_param.mean_file: {e}") from None
            self.mean = self._mean_chw(mean, p.mean_file)
        self.mean_values = numpy.array(p.mean_value, dtype=self.dtype)
        self._warned_force = False
        # Caffe's InitRand: a generator only where randomness is needed.
        needs_rand = p.mirror or (phase == TRAIN and p.crop_size)
        self._rng = (numpy.random.default_rng(int(rng.generator().integers(1 << 63)))
                     if needs_rand else None)

    def _mean_chw(self, mean, path):
        # Caffe reads data_mean_.channels()/height()/width(): the legacy 4-D view.
        if mean.ndim == 3:
            mean = mean[numpy.newaxis]
        if mean.ndim != 4 or mean.shape[0] < 1:
            raise TransformError(f"mean file {path}: expected a 1 x C x H x W blob, got shape "
                                 f"{mean.shape}")
        return numpy.ascontiguousarray(mean[0], dtype=self.dtype)

    # --- random numbers ------------------------------------------------------
    def rand(self, n):
        """An integer in [0, n) (Caffe's ``Rand``)."""
        if self._rng is None:
            raise TransformError("random draw without a generator (mirror/crop not set)")
        return int(self._rng.integers(n))

    # --- inputs -> C x H x W arrays ------------------------------------------
    def _decode(self, datum):
        from .io.caffe_io import decode_datum_to_cvmat
        p = self.param
        is_color = True if p.force_color else False if p.force_gray else None
        img = decode_datum_to_cvmat(datum, is_color)
        if img is None:
            raise TransformError("cannot decode the encoded Datum (not an image OpenCV reads)")
        return img

    def _datum_chw(self, datum):
        """A Datum's pixels as a C x H x W array (uint8 or float32)."""
        if datum.encoded:
            return self._image_chw(self._decode(datum))
        if (self.param.force_color or self.param.force_gray) and not self._warned_force:
            self._warned_force = True   # Caffe logs this for every Datum; once is enough
            log.error("force_color and force_gray only for encoded datum")
        c, h, w = datum.channels, datum.height, datum.width
        if c <= 0:
            raise TransformError(f"Datum has {c} channels, expected at least 1")
        if len(datum.data):
            values = numpy.frombuffer(datum.data, dtype=numpy.uint8)
        else:
            values = numpy.array(datum.float_data, dtype=numpy.float32)
        if values.size != c * h * w:
            raise TransformError(f"Datum holds {values.size} values, but its channels x "
                                 f"height x width is {c} x {h} x {w} = {c * h * w}")
        return values.reshape(c, h, w)

    @staticmethod
    def _image_chw(img):
        img = numpy.asarray(img)
        if img.dtype not in (numpy.uint8, numpy.float32, numpy.float64):
            raise TransformError(f"Image data type must be unsigned byte (or float), got "
                                 f"{img.dtype}")
        if img.ndim == 2:
            return img[numpy.newaxis]
        if img.ndim != 3:
            raise TransformError(f"expected an H x W x C image, got shape {img.shape}")
        return img.transpose(2, 0, 1)

    def _as_chw(self, x):
        if isinstance(x, caffe_pb2.Datum):
            return self._datum_chw(x)
        return self._image_chw(x)

    # --- shapes ------------------------------------------------------------
    def infer_blob_shape(self, x):
        """(1, C, h, w) that ``transform(x)`` produces, for a Datum or an image."""
        crop = self.param.crop_size
        if isinstance(x, caffe_pb2.Datum) and not x.encoded:
            c, h, w = x.channels, x.height, x.width
        else:
            c, h, w = self._as_chw(x).shape
        if crop:
            if h < crop or w < crop:
                raise TransformError(f"input of {h} x {w} pixels is smaller than crop_size "
                                     f"{crop}")
            h = w = crop
        return (1, c, h, w)

    # --- the transform -----------------------------------------------------
    def _draw(self, height, width):
        """(mirror?, h_off, w_off, out_h, out_w), drawn in Caffe's order: mirror, then
        the crop offsets (random in TRAIN, centred in TEST)."""
        crop = self.param.crop_size
        do_mirror = bool(self.param.mirror) and self.rand(2) == 1
        if not crop:
            return do_mirror, 0, 0, height, width
        if height < crop or width < crop:
            raise TransformError(f"input of {height} x {width} pixels is smaller than "
                                 f"crop_size {crop}")
        if self.phase == TRAIN:
            h_off = self.rand(height - crop + 1)
            w_off = self.rand(width - crop + 1)
        else:
            h_off, w_off = (height - crop) // 2, (width - crop) // 2
        return do_mirror, h_off, w_off, crop, crop

    def transform(self, x, out=None):
        """Transform a Datum or an H x W (x C) image into a C x h x w array.

        With ``out`` (an array of the expected C x h x w shape) the result is
        written there, after checking that the shapes agree.
        """
        chw = self._as_chw(x)
        c, height, width = chw.shape
        do_mirror, h_off, w_off, out_h, out_w = self._draw(height, width)
        if out is not None and tuple(out.shape) != (c, out_h, out_w):
            raise TransformError(f"input of {c} x {height} x {width} gives {c} x {out_h} x "
                                 f"{out_w} values, the batch expects "
                                 f"{' x '.join(str(d) for d in out.shape)}")
        rows, cols = slice(h_off, h_off + out_h), slice(w_off, w_off + out_w)
        y = chw[:, rows, cols].astype(self.dtype)
        if self.mean is not None:
            self._check_mean(c, height, width)
            y -= self.mean[:, rows, cols]
        elif self.mean_values.size:
            y -= self._channel_means(c)[:, None, None]
        y *= self.scale
        if do_mirror:
            y = y[:, :, ::-1]
        if out is None:
            return numpy.ascontiguousarray(y)
        out[...] = y
        return out

    def transform_blob(self, blob):
        """Caffe's Transform(Blob, Blob) on an N x C x H x W array (returns a new one).

        One mirror decision and one crop offset serve the whole batch; the mean
        is subtracted before cropping and the scale applied last, as in Caffe.
        """
        x = numpy.asarray(blob)
        if x.ndim != 4:
            raise TransformError(f"expected an N x C x H x W array, got shape {x.shape}")
        n, c, height, width = x.shape
        do_mirror, h_off, w_off, out_h, out_w = self._draw(height, width)
        y = x.astype(self.dtype)
        if self.mean is not None:
            self._check_mean(c, height, width)
            y -= self.mean
        elif self.mean_values.size:
            y -= self._channel_means(c)[None, :, None, None]
        y = y[:, :, h_off:h_off + out_h, w_off:w_off + out_w]
        if do_mirror:
            y = y[..., ::-1]
        y = numpy.ascontiguousarray(y)
        if self.scale != 1:
            y *= self.scale
        return y

    def _check_mean(self, *shape):
        if self.mean.shape != shape:
            raise TransformError(f"the mean file is {self._dims(self.mean.shape)}, the input "
                                 f"is {self._dims(shape)}; they must be equal")

    def _channel_means(self, channels):
        values = self.mean_values
        if values.size == 1:
            return numpy.repeat(values, channels)
        if values.size != channels:
            raise TransformError(f"Specify either 1 mean_value or as many as channels: got "
                                 f"{values.size} mean_value(s) for an input of {channels} "
                                 "channels")
        return values

    @staticmethod
    def _dims(shape):
        return " x ".join(str(d) for d in shape)
