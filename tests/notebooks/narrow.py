"""Helpers the notebook scripts share: a narrower copy of a net (so that tests can
run CaffeNet's notebooks in seconds on a CPU) and random "trained" weights."""
import argparse

import numpy as np
from google.protobuf import text_format

from caffe.proto import caffe_pb2


def caffenet_arguments(doc):
    """The arguments the CaffeNet scripts share: a work folder, the images folder,
    CaffeNet's deploy.prototxt and the ILSVRC mean (.npy), and --width-div."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    for name in ("workdir", "images", "deploy", "mean"):
        parser.add_argument(name)
    parser.add_argument("--width-div", type=int, default=1)
    return parser


def read_net(path):
    net = caffe_pb2.NetParameter()
    with open(path) as f:
        text_format.Merge(f.read(), net)
    return net


def narrow(net, width_div, keep=()):
    """Divide every Convolution / InnerProduct num_output by ``width_div`` in place,
    but those of the layers named in ``keep`` (the classifier, say)."""
    if width_div == 1:
        return net
    for layer in net.layer:
        if layer.name in keep:
            continue
        for param in (layer.convolution_param, layer.inner_product_param):
            if param.num_output:
                assert param.num_output % width_div == 0, (layer.name, param.num_output)
                param.num_output //= width_div
    return net


def fill_random(net, seed=0, input_scale=1.):
    """He-scaled Gaussian weights and small biases for every layer of a pycaffe Net;
    the first layer's divided by ``input_scale`` (the input's typical magnitude), so
    that activations stay near 1 through the net."""
    rng = np.random.RandomState(seed)
    for i, blobs in enumerate(net.params.values()):
        w = blobs[0].data
        w[...] = rng.randn(*w.shape) * np.sqrt(2. / np.prod(w.shape[1:]))
        if i == 0:
            w /= input_scale
        if len(blobs) > 1:
            blobs[1].data[...] = rng.randn(*blobs[1].data.shape) * 0.01
