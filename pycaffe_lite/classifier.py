"""``caffe.Classifier``: a Net that classifies H x W x K images (pycaffe's).

Images are resized to ``image_dims``, then either the centre crop of the net's
input size is taken, or ten crops (four corners, centre, and their mirrors)
whose predictions are averaged (``oversample=True``, the default).
"""
import numpy

from .errors import CaffeError
from .io import caffe_io
from .layer import TEST
from .pycaffe import Net


def make_transformer(net, mean, input_scale, raw_scale, channel_swap):
    """The preprocessing both Classifier and Detector set up for ``net.inputs[0]``:
    H x W x K images in, K x H x W out."""
    in_ = net.inputs[0]
    transformer = caffe_io.Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer


class Classifier(Net):
    """``Classifier(model_file, pretrained_file, image_dims=None, mean=None,
    input_scale=None, raw_scale=None, channel_swap=None)``: a TEST net whose first
    input takes the images; ``image_dims`` (height, width) defaults to that input's.
    ``allow_python_layers=False`` (ours) refuses a net's Python layers, as ``Net``."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None, allow_python_layers=None):
        super().__init__(model_file, TEST, weights=pretrained_file,
                         allow_python_layers=allow_python_layers)
        if not self.inputs:
            raise CaffeError(f"{model_file}: Classifier needs a net with an input blob "
                             "(an Input layer or input: fields)")
        self.transformer = make_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = numpy.array(self.blobs[self.inputs[0]].data.shape[2:])
        self.image_dims = numpy.array(self.crop_dims if image_dims is None or
                                      len(image_dims) == 0 else image_dims, dtype=int)
        if (self.image_dims < self.crop_dims).any():
            raise CaffeError(f"Classifier: image_dims {tuple(self.image_dims.tolist())} smaller than "
                             f"the net's input {tuple(self.crop_dims.tolist())}: crops would not fit")

    def predict(self, inputs, oversample=True):
        """Class probabilities (N x C) of N images (each H x W x K): the average over
        ten crops when ``oversample``, else the centre crop's."""
        inputs = list(inputs)
        if not inputs:
            raise CaffeError("Classifier.predict: no images given")
        bad = [i for i, im in enumerate(inputs) if numpy.ndim(im) != 3]
        if bad:
            raise CaffeError(f"Classifier.predict: image {bad[0]} has shape "
                             f"{numpy.shape(inputs[bad[0]])}; expected H x W x K (load it "
                             "with caffe.io.load_image)")
        resized = numpy.stack([caffe_io.resize_image(im, self.image_dims) for im in inputs])
        if oversample:
            crops = caffe_io.oversample(resized, self.crop_dims)
        else:
            top, left = ((self.image_dims - self.crop_dims) / 2.0).astype(int)
            crops = resized[:, top:top + self.crop_dims[0], left:left + self.crop_dims[1]]
        in_ = self.inputs[0]
        caffe_in = numpy.stack([self.transformer.preprocess(in_, crop) for crop in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape(len(inputs), 10, -1).mean(1)
        return predictions
