"""``caffe_lite import qcnn``: Q-CNN's own AlexNet files as a deploy net and a caffemodel.

Q-CNN (Wu et al., CVPR 2016) ships its quantised AlexNet as a folder of
binary files, ``Bin.Files/<prefix>.{ctrdLst,asmtLst,biasVec}.NN.{bin,cbn}``
(:mod:`pycaffe_lite.io.qcnn` reads them): per conv / FC layer, the codebooks
``ctrdLst [S, K, D]``, the codeword assignments ``asmtLst`` (conv ``[M, kh, kw,
S]``, FC ``[M, S]``, 0-based) and the bias ``biasVec [M]``.  Those are exactly
the blobs of our QConvolution / QInnerProduct layers, so importing is reading
the files, checking their shapes against AlexNet's geometry and copying them.

What upstream does (``src/CaffePara.cc``, ``src/CaffeEva.cc``,
``src/BmpImgIO.cc``, ``src/CaffeEvaWrapper.cc`` of CAS-CLab/quantized-cnn):

* **The net** (``ConfigLayer_AlexNet``): 23 layers, BVLC AlexNet's deploy net
  layer for layer: conv1 (11x11, stride 4, 96), relu, norm (LRN 5, 1e-4,
  0.75, k 1), max pool 3/2, conv2 (5x5, pad 2, group 2, 256), relu, norm,
  pool, conv3 (3x3, pad 1, 384), relu, conv4 (3x3, pad 1, group 2, 384), relu,
  conv5 (3x3, pad 1, group 2, 256), relu, pool, fc6 (4096), relu, dropout,
  fc7 (4096), relu, dropout, fc8 (1000), softmax.  A layer's files carry its
  1-based position in that list (``LoadLayerPara``: ``"%02d", layerInd + 1``):
  01 conv1, 05 conv2, 09 conv3, 11 conv4, 13 conv5, 16 fc6, 19 fc7, 22 fc8.
* **Layouts.**  Q-CNN keeps feature maps channel-last, ``(N, H, W, C)``, but
  permutes pool5 to ``(N, C, H, W)`` before the first FC layer, so fc6's 9216
  inputs are in Caffe's channel-first order: the files need no reordering.
  Its codebooks are shared by a convolution's groups, and a subspace covers
  ``D`` consecutive channels of a group (the last one may be short): our Q
  layers' layout.
* **The input** (``BmpImgIO::Load`` with AlexNet's settings): the BMP in BGR
  order, channel-first, values 0..255; resized to 256x256 by bilinear
  interpolation with the corners aligned (``ReszImg``, "Strict"); minus the
  256x256 mean ``AlexNet/imagenet_mean.single.bin`` (BGR, ``[3, 256, 256]``);
  then the centre 227x227 crop (offset 14).  :func:`qcnn_image` does the same.

The importer writes ``DIR/deploy.prototxt`` (Input ``data`` 1x3x227x227),
``DIR/q.caffemodel`` and, when Q-CNN's mean file is in ``--dir`` or its parent
(where upstream keeps it), ``DIR/mean.binaryproto`` (``[1, 3, 256, 256]``,
Caffe's mean file: a TEST ``transform_param { crop_size: 227 mean_file: ...}``
on 256x256 images subtracts it before the centre crop as Q-CNN does; only
Q-CNN's corner-aligned resize differs from OpenCV's in ``convert_imageset``,
so for Q-CNN's exact input use :func:`qcnn_image`).  A missing file stops the
import with an error naming it; with ``skip_missing`` the net ends at the last
layer before the first incomplete one, and the log says what was left out.
"""
import collections
import logging
import os

import numpy

from ..engines import lookup
from ..io import files
from ..io.qcnn import QcnnFileError, read_bin, read_cbn
from ..layer import TEST
from ..net import Net
from ..proto import caffe_pb2

log = logging.getLogger("pycaffe_lite")

DEFAULT_PREFIX = "bvlc_alexnet_aCaF"
MEAN_FILE = "imagenet_mean.single.bin"
INPUT_SHAPE = (1, 3, 227, 227)
# Q-CNN's AlexNet input: the image resized to FULL_SIZE, the centre CROP_SIZE kept.
FULL_SIZE = (256, 256)
CROP_SIZE = (227, 227)

Layer = collections.namedtuple("Layer", "name kind options")
Skipped = collections.namedtuple("Skipped", "layer reason")

# Q-CNN's AlexNet (CaffePara.cc, ConfigLayer_AlexNet), in its order: the files of
# a conv / fc layer are numbered by its position here, plus one.
ALEXNET = (
    Layer("conv1", "conv", dict(num_output=96, kernel=11, stride=4, pad=0, group=1)),
    Layer("relu1", "relu", {}),
    Layer("norm1", "lrn", {}),
    Layer("pool1", "pool", {}),
    Layer("conv2", "conv", dict(num_output=256, kernel=5, stride=1, pad=2, group=2)),
    Layer("relu2", "relu", {}),
    Layer("norm2", "lrn", {}),
    Layer("pool2", "pool", {}),
    Layer("conv3", "conv", dict(num_output=384, kernel=3, stride=1, pad=1, group=1)),
    Layer("relu3", "relu", {}),
    Layer("conv4", "conv", dict(num_output=384, kernel=3, stride=1, pad=1, group=2)),
    Layer("relu4", "relu", {}),
    Layer("conv5", "conv", dict(num_output=256, kernel=3, stride=1, pad=1, group=2)),
    Layer("relu5", "relu", {}),
    Layer("pool5", "pool", {}),
    Layer("fc6", "fc", dict(num_output=4096)),
    Layer("relu6", "relu", {}),
    Layer("drop6", "dropout", {}),
    Layer("fc7", "fc", dict(num_output=4096)),
    Layer("relu7", "relu", {}),
    Layer("drop7", "dropout", {}),
    Layer("fc8", "fc", dict(num_output=1000)),
    Layer("prob", "softmax", {}),
)

# The three files of a quantised layer: (blob index, name stem, extension, what).
_FILES = ((0, "ctrdLst", "bin", "codebooks"),
          (1, "asmtLst", "cbn", "codeword assignments"),
          (2, "biasVec", "bin", "bias"))


def layer_files(directory, prefix, position):
    """The paths of the codebooks, assignments and bias of the layer at 0-based
    ``position`` in :data:`ALEXNET`, in blob order."""
    return [os.path.join(directory, f"{prefix}.{stem}.{position + 1:02d}.{ext}")
            for _, stem, ext, _ in _FILES]


# --- the net ----------------------------------------------------------------------

def _add_layer(net, layer, bottom, codebook_shape=None):
    """Append ``layer`` reading blob ``bottom``; returns the blob it writes."""
    lp = net.layer.add(name=layer.name, bottom=[bottom])
    opts = layer.options
    in_place = layer.kind in ("relu", "dropout")
    lp.top.append(bottom if in_place else layer.name)
    if layer.kind == "conv":
        lp.type = "QConvolution"
        cp = lp.convolution_param
        cp.num_output = opts["num_output"]
        cp.kernel_size.append(opts["kernel"])
        cp.stride.append(opts["stride"])
        if opts["pad"]:
            cp.pad.append(opts["pad"])
        if opts["group"] > 1:
            cp.group = opts["group"]
        _set_codebook(lp.q_convolution_param, codebook_shape)
    elif layer.kind == "fc":
        lp.type = "QInnerProduct"
        lp.inner_product_param.num_output = opts["num_output"]
        _set_codebook(lp.q_inner_product_param, codebook_shape)
    elif layer.kind == "relu":
        lp.type = "ReLU"
    elif layer.kind == "lrn":
        lp.type = "LRN"
        lp.lrn_param.local_size = 5
        lp.lrn_param.alpha = 0.0001
        lp.lrn_param.beta = 0.75
    elif layer.kind == "pool":
        lp.type = "Pooling"
        lp.pooling_param.pool = caffe_pb2.PoolingParameter.MAX
        lp.pooling_param.kernel_size = 3
        lp.pooling_param.stride = 2
    elif layer.kind == "dropout":
        lp.type = "Dropout"
        lp.dropout_param.dropout_ratio = 0.5
    else:
        lp.type = "Softmax"
    return lp.top[0]


def _set_codebook(qparam, codebook_shape):
    _, codewords, dims = codebook_shape
    qparam.subspace_dim = dims
    qparam.codebook_size = codewords


def deploy_net(layers, codebook_shapes):
    """The deploy NetParameter of ``layers`` (a prefix of :data:`ALEXNET`), the Q
    layers' ``subspace_dim`` / ``codebook_size`` from ``codebook_shapes`` (name ->
    ``[S, K, D]``)."""
    net = caffe_pb2.NetParameter(name="AlexNet_QCNN")
    data = net.layer.add(name="data", type="Input", top=["data"])
    data.input_param.shape.add().dim.extend(INPUT_SHAPE)
    blob = "data"
    for layer in layers:
        blob = _add_layer(net, layer, blob, codebook_shapes.get(layer.name))
    return net


# --- the files ----------------------------------------------------------------------

def _missing_files(directory, prefix):
    """[(position, layer, [missing file names])] for every quantised layer that lacks one."""
    out = []
    for position, layer in enumerate(ALEXNET):
        if layer.kind in ("conv", "fc"):
            gone = [os.path.basename(p) for p in layer_files(directory, prefix, position)
                    if not os.path.isfile(p)]
            if gone:
                out.append((position, layer, gone))
    return out


def _layers_to_import(directory, prefix, skip_missing):
    """(the layers of :data:`ALEXNET` to build, [Skipped])."""
    missing = _missing_files(directory, prefix)
    if not missing:
        return list(ALEXNET), []
    if not skip_missing:
        named = "; ".join(f"{layer.name}: {', '.join(gone)}" for _, layer, gone in missing)
        raise QcnnFileError(f"Q-CNN files missing in '{directory}' ({named}); "
                            "--skip_missing builds the net up to the last complete layer")
    position, first, gone = missing[0]
    if position == 0:
        raise QcnnFileError(f"nothing to import from '{directory}': the first layer, "
                            f"{first.name}, lacks {', '.join(gone)}")
    reason = f"{' and '.join(gone)} {'is' if len(gone) == 1 else 'are'} missing"
    skipped = [Skipped(first.name, reason)]
    skipped += [Skipped(layer.name, f"follows {first.name}") for layer in ALEXNET[position + 1:]]
    return list(ALEXNET[:position]), skipped


def _read_codebooks(path):
    """A layer's codebooks ``[S, K, D]``: the layer's ``D`` and ``K`` come from them."""
    codebooks = read_bin(path, numpy.float32)
    if codebooks.ndim != 3:
        raise QcnnFileError(f"{os.path.basename(path)}: codebooks must be 3-D [subspaces, "
                            f"codewords, dims], the file holds shape {list(codebooks.shape)}")
    return codebooks


def _layouts(layer, inputs, dims):
    """What each of ``layer``'s blobs holds, for the shape errors."""
    per = " per group" if layer.options.get("group", 1) > 1 else ""
    index_axes = "num_output, kernel_h, kernel_w, subspaces" if layer.kind == "conv" \
        else "num_output, subspaces"
    return (f"[subspaces, codewords, dims]: {inputs} inputs{per} in subspaces of {dims}",
            f"[{index_axes}]", "[num_output]")


def _layer_inputs(net, layer):
    """The values one output of ``layer`` reads: channels per group, or FC inputs."""
    record = next(r for r in net.records if r.name == layer.name)
    bottom = record.bottom_blobs[0].shape
    if layer.kind == "conv":
        return bottom[1] // layer.options["group"]
    return int(numpy.prod(bottom[1:]))


def _fill_layer(net, layer, paths, codebooks):
    """Read ``layer``'s assignments and bias, check the three arrays against its
    blobs in ``net`` and copy them in."""
    arrays = (codebooks, read_cbn(paths[1]), read_bin(paths[2], numpy.float32))
    blobs = net.layer_dict[layer.name].blobs
    layouts = _layouts(layer, _layer_inputs(net, layer), codebooks.shape[2])
    for (k, _, _, what), path, array, layout in zip(_FILES, paths, arrays, layouts):
        expected = blobs[k].shape
        if array.shape != expected:
            raise QcnnFileError(
                f"{os.path.basename(path)}: {layer.name}'s {what} should have shape "
                f"{list(expected)} ({layout}), the file holds {list(array.shape)}")
    wrong = lookup.check_indices(arrays[1], codebooks.shape[1])
    if wrong:
        raise QcnnFileError(f"{os.path.basename(paths[1])}: {layer.name}'s codeword "
                            f"assignments: {wrong}")
    for blob, array in zip(blobs, arrays):
        blob.data[...] = net.xp.asarray(array)


# --- the mean and the image ------------------------------------------------------

def find_mean(directory):
    """Q-CNN's mean file in ``directory`` or its parent (upstream's layout), or None."""
    for folder in (directory, os.path.dirname(os.path.abspath(directory))):
        path = os.path.join(folder, MEAN_FILE)
        if os.path.isfile(path):
            return path
    return None


def load_mean(path):
    """Q-CNN's mean image ``[3, H, W]`` (BGR, float32) from ``imagenet_mean.single.bin``."""
    mean = read_bin(path, numpy.float32)
    if mean.ndim != 3 or mean.shape[0] != 3:
        raise QcnnFileError(f"{path}: a mean image must be [3, height, width] (BGR), the "
                            f"file holds shape {list(mean.shape)}")
    return mean


def qcnn_resize(image, height, width):
    """``image [C, h, w]`` resized to ``[C, height, width]`` as Q-CNN's ``ReszImg``
    ("Strict"): bilinear, the corner pixels aligned (step ``(h - 1) / (height - 1)``),
    in float32 and in its order of operations, so the values are Q-CNN's."""
    src_h, src_w = image.shape[1:]
    image = image.astype(numpy.float32)
    rows = _taps(src_h, height)
    cols = _taps(src_w, width)
    (r_lo, r_hi, wr_lo, wr_hi), (c_lo, c_hi, wc_lo, wc_hi) = rows, cols
    corners = []
    for r, wr in ((r_lo, wr_lo), (r_hi, wr_hi)):
        for c, wc in ((c_lo, wc_lo), (c_hi, wc_hi)):
            corners.append((image[:, r[:, None], c[None, :]], wr[:, None] * wc[None, :]))
    # Q-CNN: (LT, RT, LB, RB) summed left to right, then divided by the weights' sum.
    (lt, w_lt), (rt, w_rt), (lb, w_lb), (rb, w_rb) = corners
    total = lt * w_lt + rt * w_rt + lb * w_lb + rb * w_rb
    return total / (w_lt + w_rt + w_lb + w_rb)


def _taps(size, out):
    """Per output index: the lower / upper source index and their weights (float32).
    At the far edge both taps are the last pixel (Q-CNN's clamp), the weights then
    summing to about 2: the division by their sum makes it that pixel."""
    step = numpy.float32(size - 1) / numpy.float32(out - 1)
    pos = step * numpy.arange(out, dtype=numpy.float32)
    lo = numpy.maximum(pos.astype(numpy.int64), 0)
    hi = numpy.minimum(lo + 1, size - 1)
    one = numpy.float32(1)
    w_lo = one - (pos - lo.astype(numpy.float32))
    w_hi = one - (hi.astype(numpy.float32) - pos)
    return lo, hi, w_lo, w_hi


def read_bmp(path):
    """A BMP (or any image OpenCV reads) as Q-CNN loads it: ``[3, H, W]`` float32, BGR."""
    import cv2
    bgr = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR) if os.path.isfile(path) else None
    if bgr is None:
        raise QcnnFileError(f"cannot read image '{path}' (missing, or not an image "
                            "OpenCV reads)")
    return bgr.transpose(2, 0, 1).astype(numpy.float32)


def qcnn_image(path, mean):
    """The input Q-CNN's AlexNet gets for the image at ``path``: ``[1, 3, 227, 227]``
    float32, BGR, channel-first (our net's ``data``).

    As ``BmpImgIO::Load``: resize to 256x256 (:func:`qcnn_resize`), subtract
    ``mean`` (``[3, 256, 256]`` array or the path of Q-CNN's mean file), crop the
    centre 227x227.
    """
    if isinstance(mean, (str, os.PathLike)):
        mean = load_mean(mean)
    if tuple(mean.shape) != (3,) + FULL_SIZE:
        raise QcnnFileError(f"the mean image must be [3, {FULL_SIZE[0]}, {FULL_SIZE[1]}], "
                            f"got {list(mean.shape)}")
    full = qcnn_resize(read_bmp(path), *FULL_SIZE) - mean
    top = (FULL_SIZE[0] - CROP_SIZE[0]) // 2
    left = (FULL_SIZE[1] - CROP_SIZE[1]) // 2
    crop = full[:, top:top + CROP_SIZE[0], left:left + CROP_SIZE[1]]
    return numpy.ascontiguousarray(crop[None], dtype=numpy.float32)


# --- import ---------------------------------------------------------------------------

def import_qcnn(directory, prefix=DEFAULT_PREFIX, out=None, skip_missing=False, mean=None):
    """Q-CNN's AlexNet files in ``directory`` as ``(deploy, weights, skipped)``.

    ``deploy``: the deploy NetParameter (QConvolution / QInnerProduct layers),
    ``weights``: the caffemodel NetParameter, ``skipped``: a list of
    :data:`Skipped` ``(layer, reason)`` for the layers left out with
    ``skip_missing`` (empty when the net is complete).  With ``out``, writes
    ``out/deploy.prototxt``, ``out/q.caffemodel`` and ``out/mean.binaryproto``
    (from ``mean``, the path of Q-CNN's mean file; default: :func:`find_mean`).
    Errors (:class:`~pycaffe_lite.io.qcnn.QcnnFileError`) name the file.
    """
    if not os.path.isdir(directory):
        raise QcnnFileError(f"'{directory}' is not a folder (--dir: Q-CNN's Bin.Files)")
    layers, skipped = _layers_to_import(directory, prefix, skip_missing)
    if skipped:
        log.warning("%s: %s; the net ends at %s (left out: %s)", skipped[0].layer,
                    skipped[0].reason, layers[-1].name, ", ".join(s.layer for s in skipped))
    # The codebooks first (small): they give each Q layer's D and K, so the net.
    quantised = [(layer, layer_files(directory, prefix, position))
                 for position, layer in enumerate(layers) if layer.kind in ("conv", "fc")]
    codebooks = {layer.name: _read_codebooks(paths[0]) for layer, paths in quantised}
    deploy = deploy_net(layers, {name: array.shape for name, array in codebooks.items()})
    net = Net(deploy, phase=TEST)
    for layer, paths in quantised:
        _fill_layer(net, layer, paths, codebooks[layer.name])
    weights = net.to_proto()
    if out:
        mean = mean or find_mean(directory)
        _write(out, deploy, weights, load_mean(mean) if mean else None)
    return deploy, weights, skipped


def _write(out, deploy, weights, mean):
    """``out/deploy.prototxt``, ``out/q.caffemodel`` and, with ``mean`` (an array
    ``[3, H, W]``), ``out/mean.binaryproto`` (``[1, 3, H, W]``, as Caffe's tools)."""
    os.makedirs(out, exist_ok=True)
    files.write_text_proto(os.path.join(out, "deploy.prototxt"), deploy)
    model = os.path.join(out, "q.caffemodel")
    files.write_binary_proto(model, weights)
    log.info("Wrote %s and %s (%d bytes)", os.path.join(out, "deploy.prototxt"), model,
             os.path.getsize(model))
    if mean is not None:
        target = os.path.join(out, "mean.binaryproto")
        files.write_binary_proto(target, files.array_to_blob_proto(mean[None], legacy=True))
        log.info("Wrote %s (Q-CNN's mean, BGR: subtract it from the image resized to "
                 "256x256, then crop the centre 227x227)", target)
    else:
        log.info("No %s next to the files: no mean written", MEAN_FILE)


def import_cli(flags):
    """``caffe_lite import qcnn --dir Bin.Files [--prefix P] --out DIR [--skip_missing]``."""
    from ..flags import UsageError
    if not flags.dir:
        raise UsageError("Need the folder of Q-CNN's files (--dir, its Bin.Files).")
    if not flags.out:
        raise UsageError("Need a folder for the deploy net and caffemodel (--out).")
    import_qcnn(flags.dir, flags.prefix or DEFAULT_PREFIX, flags.out,
                skip_missing=flags.skip_missing)
    return 0
