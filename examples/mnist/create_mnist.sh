#!/usr/bin/env sh
# Build examples/mnist/mnist_train_lmdb and mnist_test_lmdb from the idx files of
# MNIST or Fashion-MNIST (Caffe's examples/mnist/create_mnist.sh).  Run it from
# the repository root:
#
#     examples/mnist/create_mnist.sh [DATA_DIR]
#
# DATA_DIR holds train-images-idx3-ubyte, train-labels-idx1-ubyte,
# t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, plain or .gz.  Default:
# /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist package).
set -e

DATA=${1:-/usr/share/datasets/fashion-mnist}
EXAMPLE=examples/mnist
BACKEND=lmdb

if [ ! -f "$EXAMPLE/lenet_solver.prototxt" ]; then
    echo "create_mnist.sh: run me from the pycaffe_lite repository root" >&2
    exit 1
fi

# convert_mnist_data: the installed console script, else the module of this checkout.
if command -v convert_mnist_data >/dev/null 2>&1; then
    CONVERT="convert_mnist_data"
else
    CONVERT="${PYTHON:-python3} -m pycaffe_lite.tools.convert_mnist_data"
fi

# idx file NAME in $DATA, plain or gzip-compressed.
idx() {
    for candidate in "$DATA/$1" "$DATA/$1.gz"; do
        if [ -f "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    echo "create_mnist.sh: $DATA/$1(.gz) not found" >&2
    if [ "$DATA" = /usr/share/datasets/fashion-mnist ]; then
        echo "  install Fashion-MNIST with: apt-get install dataset-fashion-mnist" >&2
    fi
    return 1
}

TRAIN_IMAGES=$(idx train-images-idx3-ubyte)
TRAIN_LABELS=$(idx train-labels-idx1-ubyte)
TEST_IMAGES=$(idx t10k-images-idx3-ubyte)
TEST_LABELS=$(idx t10k-labels-idx1-ubyte)

echo "Creating $BACKEND databases from $DATA..."
rm -rf "$EXAMPLE/mnist_train_$BACKEND" "$EXAMPLE/mnist_test_$BACKEND"
$CONVERT "$TRAIN_IMAGES" "$TRAIN_LABELS" "$EXAMPLE/mnist_train_$BACKEND" --backend=$BACKEND
$CONVERT "$TEST_IMAGES" "$TEST_LABELS" "$EXAMPLE/mnist_test_$BACKEND" --backend=$BACKEND
echo "Done."
