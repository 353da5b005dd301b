#!/usr/bin/env sh
# Q-CNN's product quantisation ("Quantized Convolutional Neural Networks for
# Mobile Devices", CVPR 2016) of BVLC's LeNet trained on Fashion-MNIST.  Run
# it from the repository root:
#
#     examples/qcnn/lenet_qcnn.sh
#
# Builds examples/mnist/mnist_{train,test}_lmdb with examples/mnist/create_mnist.sh
# when they are missing, trains LeNet with BVLC's solver (10,000 iterations,
# a few minutes; examples/mnist/lenet_iter_10000.caffemodel) when it is not
# trained yet, then quantises every layer (k-means per subspace, then the
# error correction on 1,000 unlabeled training images) into
# examples/qcnn/lenet_qcnn/, scores both nets on the 10,000 test images, and
# times them against each other (caffe_lite speedtest).
set -e

OUT=examples/qcnn/lenet_qcnn
NET=examples/mnist/lenet_train_test.prototxt
WEIGHTS=examples/mnist/lenet_iter_10000.caffemodel
# conv1 has one input channel: one channel per subspace; ip1 (800 inputs, 500
# outputs) holds most of the weights: 8 codewords of 4 values.
LAYERS=conv1:1:16,conv2:4:64,ip1:4:8,ip2:2:4

if [ ! -f "$NET" ] || [ ! -f examples/mnist/create_mnist.sh ]; then
    echo "lenet_qcnn.sh: run me from the pycaffe_lite repository root" >&2
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
    $CAFFE train --solver examples/mnist/lenet_solver.prototxt
fi

$CAFFE compress qcnn --model "$NET" --weights "$WEIGHTS" --out "$OUT" \
    --calib examples/mnist/mnist_train_lmdb --images 1000 --layers "$LAYERS" "$@"
echo "Full precision:"
$CAFFE test --model "$NET" --weights "$WEIGHTS" --iterations 100 2>&1 | grep "] accuracy ="
echo "Q-CNN:"
$CAFFE test --model "$OUT/train_val.prototxt" --weights "$OUT/quantized.caffemodel" \
    --iterations 100 2>&1 | grep "] accuracy ="
$CAFFE speedtest --model "$OUT/deploy.prototxt" --weights "$OUT/quantized.caffemodel" \
    --iterations 20 2>/dev/null
echo "Report: $OUT/report.md"
