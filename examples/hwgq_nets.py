#!/usr/bin/env python3
"""Write the HWGQ example nets: ``python examples/hwgq_nets.py`` (from any folder).

Each function below builds one net of the HWGQ paper (Cai, He, Sun and
Vasconcelos, "Deep Learning with Low Precision by Half-wave Gaussian
Quantization", CVPR 2017) as a ``caffe_pb2.NetParameter``, layer for layer as
in the paper's own example folders (github.com/zhaoweicai/hwgq,
``examples/imagenet/*-hwgq-*``, ``examples/cifar10/vgg-hwgq-*``): the same
layer names, types, shapes, quantisers, BatchNorm/Scale placement, lr and
decay multipliers, and solvers with the same hyper-parameters.
``tests/test_examples.py`` checks all of that against the paper's files.

What differs is where the files look for things.  The paper's nets were run
from inside their folder (``source: "../ilsvrc12_train_lmdb"``,
``net: "train_val.prototxt"``); ours are run from the repository root, as
Caffe's own examples are, so every path starts with ``examples/``; and the
Data layers read the tiny LMDBs that ``make_tiny_imagenet.py`` /
``make_tiny_cifar.py`` build (see ``examples/imagenet/README.md``).

For every example this writes ``train_val.prototxt``, ``solver.prototxt``,
``deploy.prototxt`` (an ``input`` of batch 1 instead of the Data layers,
BatchNorm on its stored statistics, Softmax instead of the loss) and
``deploy_bw.prototxt`` (the deploy net with BinaryConvolution and
BinaryInnerProduct as plain Convolution and InnerProduct, for the weights that
``caffe_lite binarize`` writes: sign(W) * alpha).  The files are committed;
``tests/test_examples.py`` fails when they differ from what this script writes.
"""
import sys
from pathlib import Path

import numpy

try:
    from pycaffe_lite.proto import caffe_pb2
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pycaffe_lite.proto import caffe_pb2

EXAMPLES = Path(__file__).resolve().parent

# --- the settings every HWGQ net shares ------------------------------------------------

# The 2-bit HWGQ activation quantiser of the paper's "3ne-clip" nets: levels 0,
# 0.538, 1.076, 1.614 (uniform, the step fitted to the positive half of a unit
# Gaussian, roughly what a BatchNorm output is), and in the backward pass the
# ReLU's gradient clipped at the last level.
HWGQ_2BIT = dict(forward_func="hwgq", backward_func="relu",
                 centers=[0.538, 1.076, 1.614], clip_thr=1.614)
# Binary activations (alex-sign): sign(x), with the hard-tanh gradient.
SIGN = dict(forward_func="sign", backward_func="hard_tanh", clip_thr=1.0)

WEIGHTS = [dict(lr_mult=1, decay_mult=1)]                  # weights only
WEIGHTS_AND_BIAS = WEIGHTS + [dict(lr_mult=2, decay_mult=0)]
FROZEN_STATS = [dict(lr_mult=0)] * 3                       # BatchNorm's mean, variance, factor

IMAGENET_MEAN_BGR = [104, 117, 123]


def gaussian(std):
    return dict(type="gaussian", std=std)


MSRA, XAVIER = dict(type="msra"), dict(type="xavier")

# --- layers ------------------------------------------------------------------------------


def _list(blobs):
    return [blobs] if isinstance(blobs, str) else list(blobs)


def add(net, name, type_, bottom=(), top=None, **fields):
    """Append a layer; ``top`` defaults to the layer's name.  Returns the top's name."""
    top = name if top is None else top
    net.layer.add(name=name, type=type_, bottom=_list(bottom), top=_list(top), **fields)
    return top


def conv(net, name, bottom, num_output, kernel, pad=0, stride=1, filler=MSRA, binary=False,
         bias=False):
    """A Convolution, or with ``binary`` a BinaryConvolution (weights sign(W) * alpha)."""
    param = dict(num_output=num_output, kernel_size=[kernel], weight_filler=filler)
    if pad:
        param["pad"] = [pad]
    if stride != 1:
        param["stride"] = [stride]
    return _weighted(net, name, "Convolution", bottom, "convolution_param", param, binary,
                     bias)


def inner_product(net, name, bottom, num_output, filler=MSRA, binary=False, bias=False):
    """An InnerProduct, or with ``binary`` a BinaryInnerProduct."""
    param = dict(num_output=num_output, weight_filler=filler)
    return _weighted(net, name, "InnerProduct", bottom, "inner_product_param", param, binary,
                     bias)


def _weighted(net, name, type_, bottom, field, param, binary, bias):
    """The layer with its weights' (and bias's) learning rates, or no bias at all."""
    if bias:
        param["bias_filler"] = dict(type="constant", value=0)
    else:
        param["bias_term"] = False
    fields = {field: param}
    if binary:
        fields[f"binary_{field}"] = dict(use_alpha=True)   # binary_convolution_param, ...
        type_ = "Binary" + type_
    return add(net, name, type_, bottom, param=WEIGHTS_AND_BIAS if bias else WEIGHTS,
               **fields)


def batch_norm(net, name, bottom, top=None):
    """BatchNorm, in place unless ``top`` is given; its statistics are not learnt."""
    return add(net, name, "BatchNorm", bottom, bottom if top is None else top,
               param=FROZEN_STATS, batch_norm_param=dict(moving_average_fraction=0.95))


def scale(net, name, blob):
    return add(net, name, "Scale", blob, blob, scale_param=dict(bias_term=True))


def relu(net, name, blob):
    return add(net, name, "ReLU", blob, blob)


def quant(net, name, bottom, quantiser):
    return add(net, name, "Quant", bottom, quant_param=quantiser)


def pool(net, name, bottom, kernel, stride, method="MAX"):
    return add(net, name, "Pooling", bottom,
               pooling_param=dict(pool=method, kernel_size=kernel, stride=stride))


def quantised_conv(net, bottom, conv_name, qt_name, num_output, kernel=3, pad=1, stride=1,
                   quantiser=HWGQ_2BIT, filler=MSRA):
    """The unit every HWGQ net repeats: quantise the (normalised) activations, then a
    binary convolution.  Returns the convolution's top."""
    q = quant(net, qt_name, bottom, quantiser)
    return conv(net, conv_name, q, num_output, kernel, pad, stride, filler, binary=True)


def quantised_inner_product(net, bottom, ip_name, qt_name, num_output, quantiser=HWGQ_2BIT,
                            filler=MSRA):
    q = quant(net, qt_name, bottom, quantiser)
    return inner_product(net, ip_name, q, num_output, filler, binary=True)


def classifier(net, name, bottom, num_output, filler, top5=True, loss_weight=None):
    """The full-precision classifier (with bias), the loss and the accuracies (in
    both phases, as the paper has them): top-1 and top-5 after the loss, or (CIFAR)
    one accuracy before it."""
    scores = inner_product(net, name, bottom, num_output, filler, bias=True)
    loss = ("loss", "SoftmaxWithLoss",
            dict(loss_weight=[loss_weight]) if loss_weight is not None else {})
    if top5:
        layers = [loss, ("accuracy-top1", "Accuracy", {}),
                  ("accuracy-top5", "Accuracy", dict(accuracy_param=dict(top_k=5)))]
    else:
        layers = [("accuracy", "Accuracy", {}), loss]
    for layer_name, type_, fields in layers:
        add(net, layer_name, type_, [scores, "label"], **fields)


# --- data --------------------------------------------------------------------------------

IMAGENET_TRAIN_LMDB = "examples/imagenet/tiny_train_lmdb"
IMAGENET_VAL_LMDB = "examples/imagenet/tiny_val_lmdb"
CIFAR_TRAIN_LMDB = "examples/cifar10/tiny_pad_train_lmdb"   # 40 x 40: 32 x 32 padded by 4
CIFAR_TEST_LMDB = "examples/cifar10/tiny_test_lmdb"
CIFAR_TRAIN_MEAN = "examples/cifar10/tiny_mean_pad.binaryproto"
CIFAR_TEST_MEAN = "examples/cifar10/tiny_mean.binaryproto"


def data_layers(net, name, train, test):
    """A TRAIN and a TEST Data layer; ``train``/``test``: (source, batch size,
    transform_param)."""
    for phase, (source, batch, transform) in (("TRAIN", train), ("TEST", test)):
        add(net, name, "Data", top=["data", "label"], include=[dict(phase=phase)],
            transform_param=transform,
            data_param=dict(source=source, batch_size=batch, backend="LMDB"))


def imagenet_data(net, crop, train_batch, test_batch):
    """ILSVRC12-style LMDBs of 256 x 256 images: random crops and mirrors for
    training, the centre crop for testing, the mean colour subtracted."""
    def transform(mirror):
        return dict(mirror=mirror, crop_size=crop, mean_value=IMAGENET_MEAN_BGR)
    data_layers(net, "data", (IMAGENET_TRAIN_LMDB, train_batch, transform(True)),
                (IMAGENET_VAL_LMDB, test_batch, transform(False)))


# --- the nets ------------------------------------------------------------------------------

def alexnet(quantiser=HWGQ_2BIT):
    """AlexNet (Caffe's CaffeNet order: pool before norm) with binary weights after
    conv1 and quantised activations; BatchNorm instead of LRN, no Scale, no biases
    but the classifier's.  alex-hwgq with the HWGQ quantiser, alex-sign with SIGN.
    Layer names follow the conv they feed (bn2, qt2 before conv2)."""
    net = caffe_pb2.NetParameter(name="CaffeNet")
    imagenet_data(net, crop=227, train_batch=128, test_batch=50)
    x = conv(net, "conv1", "data", 96, 11, stride=4, filler=gaussian(0.01))
    x = pool(net, "pool1", x, 3, 2)
    #         index, outputs, kernel, pad, max-pool after
    for i, num_output, kernel, pad, pooled in ((2, 256, 5, 2, True), (3, 384, 3, 1, False),
                                               (4, 384, 3, 1, False), (5, 256, 3, 1, True)):
        batch_norm(net, f"bn{i}", x)
        x = quantised_conv(net, x, f"conv{i}", f"qt{i}", num_output, kernel, pad,
                           quantiser=quantiser, filler=gaussian(0.01))
        if pooled:
            x = pool(net, f"pool{i}", x, 3, 2)
    for i in (6, 7):
        batch_norm(net, f"bn{i}", x)
        x = quantised_inner_product(net, x, f"fc{i}", f"qt{i}", 4096, quantiser,
                                    filler=gaussian(0.005))
    batch_norm(net, "bn8", x)
    relu(net, "relu8", x)
    classifier(net, "fc8", x, 1000, gaussian(0.01))
    return net


def vgg_variant():
    """The paper's VGG-Variant: a 7x7/2 conv1 of 96, then three stages of three
    binary 3x3 convs (256, 512, 512) each ending in a 2x2 max-pool, and two binary
    fully connected layers of 4096.  BatchNorm names follow the layer they
    normalise (bn2_3 after conv2_3 and pool2)."""
    net = caffe_pb2.NetParameter(name="VGG")
    imagenet_data(net, crop=224, train_batch=64, test_batch=25)
    x = conv(net, "conv1", "data", 96, 7, pad=3, stride=2)
    relu(net, "relu1", x)
    x = pool(net, "pool1", x, 2, 2)
    batch_norm(net, "bn1", x)
    for stage, num_output in ((2, 256), (3, 512), (4, 512)):
        for j in (1, 2, 3):
            x = quantised_conv(net, x, f"conv{stage}_{j}", f"qt{stage}_{j}", num_output)
            if j == 3:
                x = pool(net, f"pool{stage}", x, 2, 2)
            batch_norm(net, f"bn{stage}_{j}", x)
    for i in (5, 6):
        x = quantised_inner_product(net, x, f"fc{i}", f"qt{i}", 4096)
        batch_norm(net, f"bn{i}", x)
    relu(net, "relu6", x)
    classifier(net, "fc7", x, 1000, MSRA)
    return net


def darknet19():
    """The paper's Darknet-19: 3x3 convs only (its bottleneck layers too), widths
    doubling after each 2x2 max-pool, global average pooling.  BatchNorm names
    follow the layer they normalise; the last one keeps its Scale."""
    net = caffe_pb2.NetParameter(name="DarkNet")
    imagenet_data(net, crop=224, train_batch=64, test_batch=25)
    x = conv(net, "conv1", "data", 32, 3, pad=1)
    x = pool(net, "pool1", x, 2, 2)
    batch_norm(net, "bn1", x)
    stages = ((2, [64]), (3, [128, 64, 128]), (4, [256, 128, 256]),
              (5, [512, 256, 512, 256, 512]), (6, [1024, 512, 1024, 512, 1024]))
    for stage, widths in stages:
        for j, num_output in enumerate(widths, start=1):
            suffix = f"{stage}_{j}" if len(widths) > 1 else f"{stage}"
            x = quantised_conv(net, x, f"conv{suffix}", f"qt{suffix}", num_output)
            if j == len(widths) and stage < 6:
                x = pool(net, f"pool{stage}", x, 2, 2)
            batch_norm(net, f"bn{suffix}", x)
    scale(net, "scale6_5", x)
    relu(net, "relu6_5", x)
    x = pool(net, "pool6", x, 7, 1, method="AVE")
    classifier(net, "fc7", x, 1000, MSRA)
    return net


# GoogLeNet's inception modules as the paper has them: three branches (1x1, 3x3
# and 5x5; no pooling branch), each reduce as wide as the conv after it.
#              name, 1x1, 3x3 (and its reduce), 5x5 (and its reduce)
INCEPTIONS = [("3a", 96, 128, 32), ("3b", 192, 192, 96), "pool3",
              ("4a", 256, 208, 48), ("4b", 224, 224, 64), ("4c", 192, 256, 64),
              ("4d", 176, 288, 64), ("4e", 384, 320, 128), "pool4",
              ("5a", 384, 320, 128), ("5b", 512, 384, 128)]


def inception(net, name, bottom, n1x1, n3x3, n5x5):
    """One module: the input quantised once and shared by the three branches; each
    reduce is normalised and quantised again.  Returns the concatenation."""
    prefix = f"inception_{name}/"
    q = quant(net, prefix + "qt", bottom, HWGQ_2BIT)
    branches = [conv(net, prefix + "1x1", q, n1x1, 1, filler=XAVIER, binary=True)]
    for size, width in ((3, n3x3), (5, n5x5)):
        reduce = conv(net, prefix + f"{size}x{size}_reduce", q, width, 1, filler=XAVIER,
                      binary=True)
        batch_norm(net, prefix + f"bn_{size}x{size}_reduce", reduce)
        branches.append(quantised_conv(net, reduce, prefix + f"{size}x{size}",
                                       prefix + f"qt_{size}x{size}", width, size,
                                       pad=size // 2, filler=XAVIER))
    return add(net, prefix + "output", "Concat", branches)


def googlenet():
    """GoogLeNet with the paper's three-branch inception modules (no auxiliary
    classifiers); a BatchNorm after every module or max-pool."""
    net = caffe_pb2.NetParameter(name="GoogleNet")
    imagenet_data(net, crop=224, train_batch=64, test_batch=50)
    x = conv(net, "conv1/7x7_s2", "data", 64, 7, pad=3, stride=2, filler=XAVIER)
    x = pool(net, "pool1/3x3_s2", x, 3, 2)
    batch_norm(net, "pool1/bn_3x3", x)
    x = quantised_conv(net, x, "conv2/3x3_reduce", "conv2/qt_3x3_reduce", 192, 1, pad=0,
                       filler=XAVIER)
    batch_norm(net, "conv2/bn_3x3_reduce", x)
    x = quantised_conv(net, x, "conv2/3x3", "conv2/qt_3x3", 192, filler=XAVIER)
    x = pool(net, "pool2/3x3_s2", x, 3, 2)
    batch_norm(net, "pool2/bn_3x3", x)
    for i, module in enumerate(INCEPTIONS):
        if isinstance(module, str):
            x = pool(net, f"{module}/3x3_s2", x, 3, 2)
            batch_norm(net, f"{module}/bn_3x3", x)
            continue
        name = module[0]
        x = inception(net, name, x, *module[1:])
        if i + 1 == len(INCEPTIONS) or not isinstance(INCEPTIONS[i + 1], str):
            batch_norm(net, f"inception_{name}/bn_output", x)
    scale(net, "inception_5b/scale_output", x)
    relu(net, "inception_5b/relu_output", x)
    x = pool(net, "pool5/7x7_s1", x, 7, 1, method="AVE")
    classifier(net, "classifier", x, 1000, XAVIER, loss_weight=1)
    return net


def residual_branch(net, block, bottom, num_output, stride):
    """Branch 2 of a basic block: binary 3x3 (stride) -> BN -> quantise -> binary 3x3
    -> BN -> Scale.  ``bottom`` is already quantised."""
    x = conv(net, f"res{block}_branch2a", bottom, num_output, 3, pad=1, stride=stride,
             binary=True)
    batch_norm(net, f"bn{block}_branch2b", x)
    x = quantised_conv(net, x, f"res{block}_branch2b", f"qt{block}_branch2b", num_output)
    batch_norm(net, f"bn{block}_branch2b_end", x)
    return scale(net, f"scale{block}_branch2b_end", x)


def projection(net, block, bottom, num_output):
    """Branch 1 of a downsampling block: a binary 1x1/2 conv -> BN -> Scale."""
    x = conv(net, f"res{block}_branch1", bottom, num_output, 1, stride=2, binary=True)
    batch_norm(net, f"bn{block}_branch1", x)
    return scale(net, f"scale{block}_branch1", x)


def resnet18():
    """ResNet-18 of basic blocks.  Each block normalises and quantises its own
    input, except: the first reads pool1 after bn1, and a downsampling block's two
    branches share the quantised output of the stage before (bn2b, qt2b, ...)."""
    net = caffe_pb2.NetParameter(name="ResNet-18")
    imagenet_data(net, crop=224, train_batch=64, test_batch=25)
    x = conv(net, "conv1", "data", 64, 7, pad=3, stride=2, bias=True)
    x = pool(net, "pool1", x, 3, 2)
    batch_norm(net, "bn1", x)
    for stage, num_output in ((2, 64), (3, 128), (4, 256), (5, 512)):
        for block in (f"{stage}a", f"{stage}b"):
            stride = 1
            if block == "2a":
                q = quant(net, "qt2a_branch2a", x, HWGQ_2BIT)
                shortcut = x
            elif block.endswith("a"):
                before = f"{stage - 1}b"
                batch_norm(net, f"bn{before}", x)
                q = quant(net, f"qt{before}", x, HWGQ_2BIT)
                shortcut = projection(net, block, q, num_output)
                stride = 2
            else:
                normed = batch_norm(net, f"bn{block}_branch2a", x, top=f"bn{block}_branch2a")
                q = quant(net, f"qt{block}_branch2a", normed, HWGQ_2BIT)
                shortcut = x
            branch = residual_branch(net, block, q, num_output, stride)
            x = add(net, f"res{block}", "Eltwise", [shortcut, branch])
    relu(net, "relu5b", x)
    x = pool(net, "pool5", x, 7, 1, method="AVE")
    classifier(net, "fc1000", x, 1000, MSRA)
    return net


def cifar_vgg():
    """The paper's VGG-like CIFAR-10 net: three stages of two 3x3 convs (128, 256,
    512), a 2x2 max-pool after each, one fully connected classifier.  BatchNorm
    names follow the conv they feed (bn1_2 before conv1_2)."""
    net = caffe_pb2.NetParameter(name="CIFAR10")
    data_layers(net, "cifar",
                (CIFAR_TRAIN_LMDB, 100, dict(mirror=True, crop_size=32,
                                             mean_file=CIFAR_TRAIN_MEAN)),
                (CIFAR_TEST_LMDB, 100, dict(mirror=False, mean_file=CIFAR_TEST_MEAN)))
    x = conv(net, "conv1_1", "data", 128, 3, pad=1)
    for stage, num_output in ((1, 128), (2, 256), (3, 512)):
        for j in (1, 2):
            if (stage, j) == (1, 1):
                continue
            batch_norm(net, f"bn{stage}_{j}", x)
            x = quantised_conv(net, x, f"conv{stage}_{j}", f"qt{stage}_{j}", num_output)
        if stage < 3:
            x = pool(net, f"pool{stage}", x, 2, 2)
    batch_norm(net, "bn3", x)
    scale(net, "scale3", x)
    relu(net, "relu3", x)
    x = pool(net, "pool3", x, 2, 2)
    classifier(net, "fc4", x, 10, MSRA, top5=False)
    return net


# --- deploy nets ---------------------------------------------------------------------------

def deploy(train_val, input_size):
    """The inference net: an Input layer of batch 1 (any batch works: pycaffe
    reshapes) where the paper has the deprecated ``input:`` fields of batch 50, no
    learning settings or fillers, BatchNorm on its stored statistics, Softmax
    ``prob`` instead of the loss and accuracies."""
    net = caffe_pb2.NetParameter(name=train_val.name)
    add(net, "data", "Input", top="data",
        input_param=dict(shape=[dict(dim=[1, 3, input_size, input_size])]))
    scores = None
    for layer in train_val.layer:
        if layer.type == "SoftmaxWithLoss":
            scores = layer.bottom[0]
        if layer.type in ("Data", "SoftmaxWithLoss", "Accuracy"):
            continue
        kept = net.layer.add()
        kept.CopyFrom(layer)
        kept.ClearField("param")
        for field in ("convolution_param", "inner_product_param"):
            if kept.HasField(field):
                getattr(kept, field).ClearField("weight_filler")
                getattr(kept, field).ClearField("bias_filler")
        if kept.type == "BatchNorm":
            kept.batch_norm_param.Clear()
            kept.batch_norm_param.use_global_stats = True
    add(net, "prob", "Softmax", scores)
    return net


def deploy_bw(deploy_net):
    """The deploy net for binarised weights (HWGQ's deploy_bw): each binary layer
    becomes the plain layer, holding sign(W) * alpha (``caffe_lite binarize``)."""
    net = caffe_pb2.NetParameter()
    net.CopyFrom(deploy_net)
    for layer in net.layer:
        if layer.type in ("BinaryConvolution", "BinaryInnerProduct"):
            layer.type = layer.type[len("Binary"):]
            layer.ClearField("binary_convolution_param")
            layer.ClearField("binary_inner_product_param")
    return net


# --- solvers -------------------------------------------------------------------------------

def solver(folder, snapshot_prefix, display=100, **hyper):
    """The paper's solver settings; the net and snapshots under ``examples/<folder>/``.
    ``solver_mode: GPU`` as the paper's: without a GPU caffe_lite warns and trains on
    the CPU."""
    return caffe_pb2.SolverParameter(net=f"examples/{folder}/train_val.prototxt",
                                     snapshot_prefix=f"examples/{folder}/{snapshot_prefix}",
                                     momentum=0.9, display=display, solver_mode="GPU",
                                     **hyper)


def poly(base_lr, max_iter, weight_decay):
    return dict(base_lr=base_lr, lr_policy="poly", power=1, max_iter=max_iter,
                weight_decay=weight_decay)


def tests(test_iter, test_interval):
    """The paper's test settings, but ``test_initialization: false`` (ours): the
    paper's solvers first test ``test_iter`` batches (an hour on a CPU) before the
    first iteration; ours start training at once and test every ``test_interval``."""
    return dict(test_iter=[test_iter], test_interval=test_interval, test_initialization=False)


# --- the examples --------------------------------------------------------------------------

class Example:
    """One example folder: ``examples/<folder>/``, the net, the paper's folder it
    mirrors (under the HWGQ repository's ``examples/``), the input size of the
    deploy net and the solver."""

    def __init__(self, folder, build, paper, input_size, solver):
        self.folder, self.build, self.paper = folder, build, paper
        self.input_size, self.solver = input_size, solver


EXAMPLE_LIST = [
    # alex-hwgq mirrors alex-hwgq-3ne-clip-poly-320k (the one with deploy files);
    # alex-hwgq-3ne-clip-step-160k is the same net with alex-sign's step solver.
    Example("imagenet/alex-hwgq", alexnet, "imagenet/alex-hwgq-3ne-clip-poly-320k", 227,
            solver("imagenet/alex-hwgq", "alexnet", snapshot=100000, **tests(1000, 1000),
                   **poly(0.02, 320000, 0.0005))),
    Example("imagenet/alex-sign", lambda: alexnet(SIGN), "imagenet/alex-sign-step-160k", 227,
            solver("imagenet/alex-sign", "alexnet", snapshot=50000, **tests(1000, 1000),
                   base_lr=0.01, lr_policy="step", gamma=0.1, stepsize=50000,
                   max_iter=160000, weight_decay=0.0005)),
    Example("imagenet/res18-hwgq", resnet18, "imagenet/res18-hwgq-3ne-clip-poly-320k", 224,
            solver("imagenet/res18-hwgq", "resnet18", snapshot=50000, **tests(2000, 2000),
                   **poly(0.1, 320000, 0.00005))),
    # No test during training, as the paper's solver (its test lines are commented out).
    Example("imagenet/vgg-hwgq", vgg_variant, "imagenet/vgg-hwgq-3ne-clip-poly-640k", 224,
            solver("imagenet/vgg-hwgq", "vggnet", snapshot=10000,
                   **poly(0.01, 640000, 0.0005))),
    Example("imagenet/google-hwgq", googlenet, "imagenet/google-hwgq-3ne-clip-poly-320k", 224,
            solver("imagenet/google-hwgq", "googlenet", snapshot=50000, **tests(1000, 2000),
                   **poly(0.1, 320000, 0.00005))),
    Example("imagenet/dark19-hwgq", darknet19, "imagenet/dark19-hwgq-3ne-clip-poly-320k", 224,
            solver("imagenet/dark19-hwgq", "darknet", snapshot=50000, **tests(2000, 2000),
                   **poly(0.1, 320000, 0.00005))),
    Example("cifar10/vgg-hwgq", cifar_vgg, "cifar10/vgg-hwgq-3ne-clip-poly", 32,
            solver("cifar10/vgg-hwgq", "vggnet", display=200, snapshot=40000,
                   **tests(100, 1000),
                   **poly(0.01, 100000, 0.0005))),
]


# --- writing -------------------------------------------------------------------------------

def to_text(msg, indent=0):
    """Protobuf text format as Caffe's files are written: two-space indents, fields in
    the order caffe.proto declares them, floats in their shortest float32 form
    ("1", "0.538", "0.00005").  Written here rather than by text_format so that the
    committed files do not change with the protobuf version."""
    lines, pad = [], "  " * indent
    for field in msg.DESCRIPTOR.fields:
        if field.is_repeated:
            values = list(getattr(msg, field.name))
        elif msg.HasField(field.name):
            values = [getattr(msg, field.name)]
        else:
            continue
        for value in values:
            if field.message_type is not None:
                lines += [f"{pad}{field.name} {{", *to_text(value, indent + 1), f"{pad}}}"]
            else:
                lines.append(f"{pad}{field.name}: {_scalar(field, value)}")
    return lines


def _scalar(field, value):
    if field.type == field.TYPE_STRING:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if field.type == field.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name
    if field.type == field.TYPE_BOOL:
        return "true" if value else "false"
    if field.type == field.TYPE_FLOAT:
        return numpy.format_float_positional(numpy.float32(value), trim="-")
    if field.type == field.TYPE_DOUBLE:
        return numpy.format_float_positional(numpy.float64(value), trim="-")
    return str(value)


def _file(msg, name, example):
    header = (f"# {example.folder}/{name}.prototxt: the HWGQ paper's {example.paper}\n"
              "# (github.com/zhaoweicai/hwgq), written by examples/hwgq_nets.py: edit that "
              "script, not this file.\n")
    if name in ("train_val", "solver"):
        header += "# Paths are relative to the repository root: run caffe_lite from there.\n"
    return header + "\n".join(to_text(msg)) + "\n"


def generate():
    """{path relative to examples/: file text} of every file this script writes."""
    out = {}
    for example in EXAMPLE_LIST:
        train_val = example.build()
        inference = deploy(train_val, example.input_size)
        for name, msg in (("train_val", train_val), ("solver", example.solver),
                          ("deploy", inference), ("deploy_bw", deploy_bw(inference))):
            out[f"{example.folder}/{name}.prototxt"] = _file(msg, name, example)
    return out


def main():
    for relative, text in generate().items():
        path = EXAMPLES / relative
        if path.is_file() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
