"""convert_imageset: images listed in a file -> an LMDB of Datums (Caffe's tool).

    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

LISTFILE holds lines "relative/path label" (the label after the last space).
Record i is stored under the key ``%08d_<path>`` (i = the line's index), its
Datum holds the raw C x H x W BGR pixels (or, with -encoded / -encode_type,
the encoded image).  Unreadable images are logged and skipped.  DB_NAME must
not exist; if the conversion fails, the partly written database is removed.

Flags (gflags style, :mod:`pycaffe_lite.flags`) are Caffe's: -gray, -shuffle,
-backend, -resize_width, -resize_height, -check_size, -encoded, -encode_type.
"""
import logging
import sys

from tqdm import tqdm

from pycaffe_lite import rng
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.flags import Flag
from pycaffe_lite.tools import run_tool

log = logging.getLogger("pycaffe_lite")

USAGE = ("Convert a set of images to the leveldb/lmdb\n"
         "format used as input for Caffe.\n"
         "Usage:\n"
         "    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME\n")


FLAGS = [
    Flag("gray", bool, False, "When this option is on, treat images as grayscale ones"),
    Flag("shuffle", bool, False, "Randomly shuffle the order of images and their labels"),
    Flag("backend", str, "lmdb", "The backend {lmdb, leveldb} for storing the result"),
    Flag("resize_width", int, 0, "Width images are resized to"),
    Flag("resize_height", int, 0, "Height images are resized to"),
    Flag("check_size", bool, False,
         "When this option is on, check that all the datum have the same size"),
    Flag("encoded", bool, False,
         "When this option is on, the encoded image will be save in datum"),
    Flag("encode_type", str, "",
         "Optional: What type should we encode the image as ('png','jpg',...)."),
]
ARGUMENTS = ("ROOTFOLDER/", "LISTFILE", "DB_NAME")


def convert(root_folder, list_file, db_name, gray=False, shuffle=False, backend="lmdb",
            resize_width=0, resize_height=0, check_size=False, encoded=False, encode_type=""):
    """Write the database; returns the number of records written."""
    from pycaffe_lite.io.caffe_io import (can_encode, check_encoding, image_encodings,
                                          read_image_list, read_image_to_datum)
    from pycaffe_lite.io.db import create_db
    if encode_type:     # before the database is made
        encode_type = check_encoding(encode_type, "-encode_type")
    is_color = not gray
    lines = read_image_list(list_file)
    if shuffle:
        log.info("Shuffling data")
        order = rng.generator().permutation(len(lines))
        lines = [lines[k] for k in order]
    log.info("A total of %d images.", len(lines))
    if encode_type and not encoded:
        log.info("encode_type specified, assuming encoded=true.")
    resize_height = max(0, resize_height)
    resize_width = max(0, resize_width)

    count = 0
    data_size = None
    with create_db(db_name, backend) as db:   # removed again if anything below fails
        for line_id, (name, label, number) in enumerate(tqdm(lines, desc="convert_imageset",
                                                     unit="img", disable=None)):
            enc = encode_type
            if encoded and not enc:
                # Guess the encoding type from the file name.
                if "." not in name:
                    log.warning("Failed to guess the encoding of '%s'; skipped", name)
                    continue
                enc = name.rsplit(".", 1)[1].lower()
                if not can_encode(enc):
                    log.warning("%s:%d: cannot encode '%s' as '%s', not an image format "
                                "OpenCV writes (%s; or give -encode_type); skipped",
                                list_file, number, name, enc, ", ".join(image_encodings()))
                    continue
            datum = read_image_to_datum(root_folder + name, label, resize_height, resize_width,
                                        is_color, enc)
            if datum is None:
                log.error("Could not open or find file %s", root_folder + name)
                continue
            if check_size:
                if data_size is None:
                    data_size = datum.channels * datum.height * datum.width
                elif len(datum.data) != data_size:
                    raise CaffeError(f"{list_file}:{number}: image {name}: "
                                     f"Incorrect data field size {len(datum.data)}, expected "
                                     f"{data_size} (use -resize_width/-resize_height)")
            db.put(f"{line_id:08d}_{name}", datum.SerializeToString())
            count += 1
            if count % 1000 == 0:
                db.commit()
                log.info("Processed %d files.", count)
    if count % 1000 != 0:
        log.info("Processed %d files.", count)
    return count


def main(argv=None):
    def body(args, flags):
        convert(*args, gray=flags.gray, shuffle=flags.shuffle, backend=flags.backend,
                resize_width=flags.resize_width, resize_height=flags.resize_height,
                check_size=flags.check_size, encoded=flags.encoded,
                encode_type=flags.encode_type)
    return run_tool("convert_imageset", USAGE, FLAGS, ARGUMENTS, argv, body)


if __name__ == "__main__":
    sys.exit(main())
