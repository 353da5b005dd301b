"""``caffe.Detector``: classify windows of images (pycaffe's, after R-CNN).

Each window (ymin, xmin, ymax, xmax) is cropped, optionally with ``context_pad``
pixels of the net input showing the surroundings (R-CNN's context padding; the
part outside the image is filled with the mean), warped to the net's input size
and classified.
"""
import numpy

from .classifier import make_transformer
from .errors import CaffeError
from .io import caffe_io
from .layer import TEST
from .pycaffe import Net


class Detector(Net):
    """``Detector(model_file, pretrained_file, mean=None, input_scale=None,
    raw_scale=None, channel_swap=None, context_pad=None)``."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, context_pad=None, allow_python_layers=None):
        super().__init__(model_file, TEST, weights=pretrained_file,
                         allow_python_layers=allow_python_layers)
        if not self.inputs:
            raise CaffeError(f"{model_file}: Detector needs a net with an input blob")
        self.transformer = make_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """``images_windows``: (image filename, windows) pairs.  Returns one dict per
        window: ``{'window', 'prediction', 'filename'}``, in input order."""
        images_windows = [(name, numpy.asarray(windows)) for name, windows in images_windows]
        crops = []
        for name, windows in images_windows:
            image = caffe_io.load_image(name).astype(numpy.float32)
            crops += [self.crop(image, window) for window in windows]
        if not crops:
            raise CaffeError("Detector.detect_windows: no windows given")
        in_ = self.inputs[0]
        caffe_in = numpy.stack([self.transformer.preprocess(in_, c) for c in crops])
        predictions = iter(self.forward_all(**{in_: caffe_in})[self.outputs[0]])
        return [{"window": window, "prediction": next(predictions), "filename": name}
                for name, windows in images_windows for window in windows]

    def detect_selective_search(self, image_fnames):
        """Windows from Selective Search (Sergey Karayev's
        ``selective_search_ijcv_with_python``, which runs MATLAB), then
        :meth:`detect_windows`."""
        import os
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise CaffeError("selective search proposals need the package "
                             "selective_search_ijcv_with_python (and MATLAB), not installed; "
                             "give the windows yourself (detect_windows, or detect "
                             "--crop_mode list with a CSV of windows)") from None
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows))

    def crop(self, im, window):
        """The window (ymin, xmin, ymax, xmax) of an H x W x K image, with
        ``context_pad`` context: the box is grown so that, once warped to the
        input size, ``context_pad`` pixels around it are context."""
        window = numpy.asarray(window, dtype=int)
        if not self.context_pad:
            return im[window[0]:window[2], window[1]:window[3]]
        size = self.crop_dims[0]                        # the input is assumed square
        scale = size / (size - 2.0 * self.context_pad)
        half = (window[2:] - window[:2] + 1) / 2.0      # half height, half width
        centre = window[:2] + half
        box = numpy.round(numpy.concatenate([centre - scale * half, centre + scale * half]))
        full = box[2:] - box[:2] + 1
        scale_hw = size / full
        pad = numpy.round(numpy.maximum(0, -box[:2]) * scale_hw).astype(int)
        im_h, im_w = im.shape[:2]
        box = numpy.clip(box, 0, [im_h, im_w, im_h, im_w]).astype(int)
        clip = box[2:] - box[:2] + 1
        if (clip <= 0).any():
            raise CaffeError(f"Detector.crop: window {window.tolist()} lies outside the "
                             f"{im_h} x {im_w} image")
        crop_hw = numpy.minimum(numpy.round(clip * scale_hw).astype(int), size - pad)
        context = caffe_io.resize_image(im[box[0]:box[2], box[1]:box[3]], crop_hw)
        out = numpy.ones(self.crop_dims, dtype=numpy.float32) * self.crop_mean
        out[pad[0]:pad[0] + crop_hw[0], pad[1]:pad[1] + crop_hw[1]] = context
        return out

    def configure_crop(self, context_pad):
        """Crop size (the input's H x W x K) and, with context padding, the mean in
        the raw image's space (undoing transpose, channel swap and raw scale) to fill
        the part of a grown box outside the image."""
        in_ = self.inputs[0]
        tpose = self.transformer.transpose[in_]
        self.crop_dims = numpy.array(self.blobs[in_].data.shape[1:])[numpy.argsort(tpose)]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = numpy.zeros(self.crop_dims, dtype=numpy.float32)
            return
        crop_mean = numpy.broadcast_to(mean, self.blobs[in_].data.shape[1:])
        crop_mean = crop_mean.transpose(numpy.argsort(tpose)).astype(numpy.float32)
        swap = self.transformer.channel_swap.get(in_)
        if swap is not None:
            crop_mean = crop_mean[:, :, numpy.argsort(swap)]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
