"""convert_mnist_data: MNIST idx files -> an LMDB of Datums (Caffe's tool).

    convert_mnist_data [FLAGS] INPUT_IMAGE_FILE INPUT_LABEL_FILE OUTPUT_DB

Reads the idx3 images and idx1 labels (plain or gzip-compressed) and stores
record i under the key ``%08d`` as a Datum of 1 x rows x cols raw uint8
pixels with its label, as Caffe's examples/mnist/convert_mnist_data.cpp.
OUTPUT_DB must not exist.  Flag: -backend {lmdb, leveldb} (gflags style).
"""
import gzip
import io
import logging
import sys

import numpy
from tqdm import tqdm

from pycaffe_lite.errors import CaffeError
from pycaffe_lite.flags import Flag
from pycaffe_lite.tools import read_input, run_tool

log = logging.getLogger("pycaffe_lite")

USAGE = ("This script converts the MNIST dataset to\n"
         "the lmdb/leveldb format used by Caffe to load data.\n"
         "Usage:\n"
         "    convert_mnist_data [FLAGS] input_image_file input_label_file output_db_file\n"
         "The MNIST dataset could be downloaded at\n"
         "    http://yann.lecun.com/exdb/mnist/\n"
         "(Fashion-MNIST, in the same format: apt-get install dataset-fashion-mnist).\n"
         "The idx files may be plain or gzip-compressed.  In a pycaffe_lite checkout,\n"
         "examples/mnist/create_mnist.sh [DATA_DIR] converts the training and test sets.\n")

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


FLAGS = [Flag("backend", str, "lmdb", "The backend for storing the result")]
ARGUMENTS = ("INPUT_IMAGE_FILE", "INPUT_LABEL_FILE", "OUTPUT_DB")


def _gunzip(data, path):
    """``data`` decompressed, refused past the memory limit (a gzip bomb)."""
    from pycaffe_lite import memory
    limit, source = memory.memory_limit()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(limit + 1) if limit is not None else f.read()
    except (OSError, EOFError) as e:
        raise CaffeError(f"{path}: corrupt gzip file: {e}") from None
    if limit is not None and len(out) > limit:
        raise CaffeError(f"{path}: decompresses to more than the memory limit of {limit} "
                         f"bytes ({source})")
    return out


def read_idx(path, magic, what):
    """(header ints after the magic, payload bytes) of an idx file, gzip or not."""
    data = read_input(path, "MNIST idx", f"Unable to open file {path} ({what})")
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, path)
    dims = 3 if magic == IMAGE_MAGIC else 1
    header = 4 * (1 + dims)
    if len(data) < header:
        raise CaffeError(f"{path}: too short for an idx {what} file")
    values = numpy.frombuffer(data[:header], dtype=">u4").astype(int)
    if values[0] != magic:
        raise CaffeError(f"{path}: Incorrect {what} file magic: {values[0]}, expected {magic}")
    return [int(v) for v in values[1:]], data[header:]


def convert(image_file, label_file, db_path, backend="lmdb"):
    """Write the database; returns the number of records."""
    from pycaffe_lite.io.db import create_db
    from pycaffe_lite.proto import caffe_pb2
    (num_items, rows, cols), pixels = read_idx(image_file, IMAGE_MAGIC, "image")
    (num_labels,), labels = read_idx(label_file, LABEL_MAGIC, "label")
    if num_items != num_labels:
        raise CaffeError(f"{image_file} holds {num_items} images but {label_file} holds "
                         f"{num_labels} labels")
    size = rows * cols
    if len(pixels) < num_items * size or len(labels) < num_items:
        raise CaffeError(f"{image_file} / {label_file}: truncated (the header announces "
                         f"{num_items} items of {rows} x {cols})")
    log.info("A total of %d items.", num_items)
    log.info("Rows: %d Cols: %d", rows, cols)
    with create_db(db_path, backend) as db:   # removed again if anything below fails
        for item in tqdm(range(num_items), desc="convert_mnist_data", unit="img",
                         disable=None):
            datum = caffe_pb2.Datum(channels=1, height=rows, width=cols,
                                    data=pixels[item * size:(item + 1) * size],
                                    label=labels[item])
            db.put(f"{item:08d}", datum.SerializeToString())
    log.info("Processed %d files.", num_items)
    return num_items


def main(argv=None):
    def body(args, flags):
        convert(*args, backend=flags.backend)
    return run_tool("convert_mnist_data", USAGE, FLAGS, ARGUMENTS, argv, body)


if __name__ == "__main__":
    sys.exit(main())
