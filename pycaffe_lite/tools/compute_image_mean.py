"""compute_image_mean: the mean image of a database of Datums (Caffe's tool).

    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]

Sums every record's pixels in float32 (encoded Datums are decoded first),
divides by the number of records and writes the result as a 1 x C x H x W
BlobProto (``.binaryproto``, the ``mean_file`` of transform_param) when
OUTPUT_FILE is given.  Logs the mean of each channel like Caffe.
Flag: -backend {lmdb, leveldb} (gflags style).
"""
import argparse
import logging
import sys

import numpy
from tqdm import tqdm

from pycaffe_lite.errors import CaffeError
from pycaffe_lite.io import files
from pycaffe_lite.log import caffe_float
from pycaffe_lite.tools.convert_imageset import FLAGS_NOTE, run_tool

log = logging.getLogger("pycaffe_lite")

USAGE = ("Compute the mean_image of a set of images given by a leveldb/lmdb\n"
         "Usage:\n"
         "    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]\n")


def parser():
    p = argparse.ArgumentParser(prog="compute_image_mean", description=USAGE, epilog=FLAGS_NOTE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="lmdb",
                   help="The backend {leveldb, lmdb} containing the images")
    p.add_argument("input_db", metavar="INPUT_DB")
    p.add_argument("output_file", metavar="OUTPUT_FILE", nargs="?")
    return p


def _pixels(datum, key):
    from pycaffe_lite.io.caffe_io import decode_datum_native
    try:
        decode_datum_native(datum)
    except CaffeError as e:
        raise CaffeError(f"record {key!r}: {e}") from None
    if len(datum.data):
        return numpy.frombuffer(datum.data, dtype=numpy.uint8)
    return numpy.array(datum.float_data, dtype=numpy.float32)


def compute_mean(input_db, backend="lmdb"):
    """(BlobProto of the mean, per-channel means, number of records)."""
    from pycaffe_lite.io.caffe_io import open_db
    from pycaffe_lite.proto import caffe_pb2
    reader = open_db(input_db, backend, what="input database")
    try:
        first = reader.first()
        if first is None:
            raise CaffeError(f"input database '{input_db}' holds no records")
        datum = caffe_pb2.Datum()
        datum.ParseFromString(first[1])
        if datum.encoded:
            log.info("Decoding Datum")
        _pixels(datum, first[0].decode(errors="replace"))
        channels, height, width = datum.channels, datum.height, datum.width
        data_size = channels * height * width
        total = numpy.zeros(data_size, dtype=numpy.float32)
        count = 0
        log.info("Starting iteration")
        for key, value in tqdm(reader.records(), total=len(reader), desc="compute_image_mean",
                               unit="rec", disable=None):
            key = key.decode(errors="replace")
            datum = caffe_pb2.Datum()
            try:
                datum.ParseFromString(value)
            except Exception:
                raise CaffeError(f"record {key!r} of {input_db} is not a Datum") from None
            pixels = _pixels(datum, key)
            if pixels.size != data_size:
                raise CaffeError(f"record {key!r}: Incorrect data field size {pixels.size}, "
                                 f"expected {data_size} ({channels} x {height} x {width}, the "
                                 "first record's size)")
            total += pixels  # float32 accumulation, as Caffe's BlobProto sum
            count += 1
            if count % 10000 == 0:
                log.info("Processed %d files.", count)
        if count % 10000 != 0:
            log.info("Processed %d files.", count)
    finally:
        reader.close()
    mean = total / numpy.float32(count)
    blob = caffe_pb2.BlobProto(num=1, channels=channels, height=height, width=width)
    blob.data.extend(mean.tolist())
    # Caffe sums each channel in float, one value after the other.
    per_channel = mean.reshape(channels, height * width)
    sums = numpy.add.accumulate(per_channel, axis=1, dtype=numpy.float32)[:, -1]
    channel_means = sums / numpy.float32(height * width)
    return blob, channel_means, count


def main(argv=None):
    def body(args):
        blob, channel_means, _ = compute_mean(args.input_db, args.backend)
        if args.output_file:
            log.info("Write to %s", args.output_file)
            files.write_binary_proto(args.output_file, blob)
        log.info("Number of channels: %d", len(channel_means))
        for c, value in enumerate(channel_means):
            log.info("mean_value channel [%d]: %s", c, caffe_float(value))
    return run_tool("compute_image_mean", parser(), argv, body, (), ("backend",))


if __name__ == "__main__":
    sys.exit(main())
