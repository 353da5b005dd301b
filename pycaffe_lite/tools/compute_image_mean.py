"""compute_image_mean: the mean image of a database of Datums (Caffe's tool).

    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]

Sums every record's pixels in float32 (encoded Datums are decoded first),
divides by the number of records and writes the result as a 1 x C x H x W
BlobProto (``.binaryproto``, the ``mean_file`` of transform_param) when
OUTPUT_FILE is given.  Logs the mean of each channel like Caffe.
Flag: -backend {lmdb, leveldb} (gflags style).
"""
import logging
import sys

import numpy
from tqdm import tqdm

from pycaffe_lite.errors import CaffeError
from pycaffe_lite.io import files
from pycaffe_lite.flags import Flag
from pycaffe_lite.log import caffe_float
from pycaffe_lite.tools import run_tool

log = logging.getLogger("pycaffe_lite")

USAGE = ("Compute the mean_image of a set of images given by a leveldb/lmdb\n"
         "Usage:\n"
         "    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]\n")


FLAGS = [Flag("backend", str, "lmdb", "The backend {leveldb, lmdb} containing the images")]
ARGUMENTS = ("INPUT_DB", "[OUTPUT_FILE]")


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
    from pycaffe_lite.io.db import open_db
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
        first_key = first[0].decode(errors="replace")
        values = _pixels(datum, first_key).size
        channels, height, width = datum.channels, datum.height, datum.width
        data_size = channels * height * width
        if min(channels, height, width) < 1 or values != data_size:
            raise CaffeError(f"record {first_key!r} of {input_db}: its shape {channels} x "
                             f"{height} x {width} (channels x height x width) does not fit "
                             f"its {values} values (every dim must be at least 1)")
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
                raise CaffeError(f"record {key!r} of {input_db}: Incorrect data field size "
                                 f"{pixels.size}, "
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
    blob = files.array_to_blob_proto(mean.reshape(1, channels, height, width), legacy=True)
    # Caffe sums each channel in float, one value after the other.
    per_channel = mean.reshape(channels, height * width)
    sums = numpy.add.accumulate(per_channel, axis=1, dtype=numpy.float32)[:, -1]
    channel_means = sums / numpy.float32(height * width)
    return blob, channel_means, count


def main(argv=None):
    def body(args, flags):
        input_db, output_file = (args + [None])[:2]
        blob, channel_means, _ = compute_mean(input_db, flags.backend)
        if output_file:
            log.info("Write to %s", output_file)
            files.write_binary_proto(output_file, blob)
        log.info("Number of channels: %d", len(channel_means))
        for c, value in enumerate(channel_means):
            log.info("mean_value channel [%d]: %s", c, caffe_float(value))
    return run_tool("compute_image_mean", USAGE, FLAGS, ARGUMENTS, argv, body)


if __name__ == "__main__":
    sys.exit(main())
