#!/usr/bin/env sh
# Train the Fashion-MNIST BN net of the Label-free compression example
# ("Learning Compression from Limited Unlabeled Data", ECCV 2018: BatchNorm +
# Scale after every convolution).  Run it from the repository root:
#
#     examples/labelfree/train_fmnist_bn.sh
#
# Builds examples/mnist/mnist_{train,test}_lmdb with examples/mnist/create_mnist.sh
# when they are missing, trains for 2000 iterations on the CPU (a few minutes;
# examples/labelfree/fmnist_bn_iter_2000.caffemodel and .solverstate), then
# compresses the trained net with the Label-free pipeline into
# examples/labelfree/fmnist_bn_labelfree/ (4-bit weights, 8-bit activations,
# 1000 unlabeled training images; report.md there).
set -e

EXAMPLE=examples/labelfree
SOLVER=$EXAMPLE/fmnist_bn_solver.prototxt
WEIGHTS=$EXAMPLE/fmnist_bn_iter_2000.caffemodel

if [ ! -f "$SOLVER" ] || [ ! -f examples/mnist/create_mnist.sh ]; then
    echo "train_fmnist_bn.sh: run me from the pycaffe_lite repository root" >&2
    exit 1
fi

# caffe_lite: the installed console script, else the module of this checkout.
if command -v caffe_lite >/dev/null 2>&1; then
    CAFFE="caffe_lite"
else
    CAFFE="${PYTHON:-python3} -m pycaffe_lite.cli"
fi

if [ ! -d examples/mnist/mnist_train_lmdb ] || [ ! -d examples/mnist/mnist_test_lmdb ]; then
    examples/mnist/create_mnist.sh
fi

if [ ! -f "$WEIGHTS" ]; then
    $CAFFE train --solver "$SOLVER" "$@"
fi
echo "Trained weights: $WEIGHTS"

$CAFFE compress labelfree --model $EXAMPLE/fmnist_bn_train_test.prototxt --weights "$WEIGHTS" \
    --out $EXAMPLE/fmnist_bn_labelfree
echo "Compressed: $EXAMPLE/fmnist_bn_labelfree/ (report.md, quantized.caffemodel)"
