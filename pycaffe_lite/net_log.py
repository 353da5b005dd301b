"""Caffe's net-setup log lines (``Net::Init`` in ``net.cpp``), for :class:`~pycaffe_lite.net.Net`.

Caffe logs, for every net it builds::

    Creating Layer conv1
    conv1 <- data
    conv1 -> conv1
    Setting up conv1
    Top shape: 64 20 24 24 (737280)
    Memory required for data: 3150080
    ...
    conv1 needs backward computation.
    This network produces output loss
    Network initialization done.

Users grep their logs for these (``Top shape``, ``Memory required for data``),
so we log them word for word, at INFO: the CLI shows them, a Python script
only when it turned INFO on (as pycaffe's glog shows them only after
``caffe.init_log()``).  Every function returns at once when INFO is off, so a
net built with logging off pays one level check per layer.  Caffe's dump of
the whole filtered NetParameter ("Initializing net from parameters:") and its
per-layer phase-filter notes are left out.
"""
import logging
import math

from .log import caffe_float

log = logging.getLogger("pycaffe_lite")


def _enabled():
    return log.isEnabledFor(logging.INFO)


def shape_string(shape):
    """Caffe's ``Blob::shape_string``: every dim followed by a space, then the count."""
    return "".join(f"{dim} " for dim in shape) + f"({math.prod(shape)})"


def log_wiring(layer_param, automatic_tops):
    """``Creating Layer``, then one ``<-`` line a bottom and one ``->`` line a top
    (``automatic_tops``: unnamed tops added for the layer), before its SetUp."""
    if not _enabled():
        return
    name = layer_param.name
    log.info("Creating Layer %s", name)
    for bottom in layer_param.bottom:
        log.info("%s <- %s", name, bottom)
    for j, top in enumerate(layer_param.top):
        in_place = j < len(layer_param.bottom) and layer_param.bottom[j] == top
        log.info("%s -> %s%s", name, top, " (in-place)" if in_place else "")
    for _ in range(automatic_tops):
        log.info("%s -> (automatic)", name)


def log_set_up(record, memory, itemsize):
    """``Setting up``, each top's shape (and loss weight), and the data memory of
    the net so far; returns ``memory`` (top elements so far) with this layer's."""
    if not _enabled():
        return memory
    log.info("Setting up %s", record.name)
    weights = record.layer.loss_weights
    for j, blob in enumerate(record.top_blobs):
        log.info("Top shape: %s", shape_string(blob.shape))
        if j < len(weights) and weights[j]:
            log.info("    with loss weight %s", caffe_float(weights[j]))
        memory += blob.count
    log.info("Memory required for data: %d", memory * itemsize)
    return memory


def log_backward(record):
    """Whether the layer runs backward, as decided before ``force_backward``."""
    if not _enabled():
        return
    if record.need_backward:
        log.info("%s needs backward computation.", record.name)
    else:
        log.info("%s does not need backward computation.", record.name)


def log_done(output_names):
    if not _enabled():
        return
    for name in output_names:
        log.info("This network produces output %s", name)
    log.info("Network initialization done.")
