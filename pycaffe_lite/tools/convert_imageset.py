"""convert_imageset: images listed in a file -> an LMDB of Datums (Caffe's tool).

    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

LISTFILE holds lines "relative/path label" (the label after the last space).
Record i is stored under the key ``%08d_<path>`` (i = the line's index), its
Datum holds the raw C x H x W BGR pixels (or, with -encoded / -encode_type,
the encoded image).  Unreadable images are logged and skipped.  DB_NAME must
not exist; if the conversion fails, the partly written database is removed.

Flags (gflags style: ``-flag=value``, ``--flag value``, ``-flag`` /
``-noflag`` for booleans) are Caffe's: -gray, -shuffle, -backend,
-resize_width, -resize_height, -check_size, -encoded, -encode_type.
"""
import argparse
import logging
import sys

from tqdm import tqdm

from pycaffe_lite import rng
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.log import setup_logging

log = logging.getLogger("pycaffe_lite")

USAGE = ("Convert a set of images to the leveldb/lmdb\n"
         "format used as input for Caffe.\n"
         "Usage:\n"
         "    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME\n")


# --- gflags-style command lines (shared by the tools) -------------------------------

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def gflags_bool(text):
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def normalise_gflags(argv, bool_flags, value_flags):
    """Rewrite gflags spellings into ``--name=value`` for argparse.

    Accepts ``-name=value``, ``--name=value``, ``-name value``, ``--name
    value``, and for booleans ``-name`` and ``-noname``.  ``--`` ends the flags.
    Unknown flags are left as they are (argparse reports them).
    """
    out = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            out.extend(args[i - 1:])
            break
        if not arg.startswith("-") or arg == "-" or arg in ("-h", "--help"):
            out.append(arg)
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if name in bool_flags:
            out.append(f"--{name}={value if eq else 'true'}")
        elif name.startswith("no") and name[2:] in bool_flags and not eq:
            out.append(f"--{name[2:]}=false")
        elif name in value_flags:
            if not eq:
                if i >= len(args):
                    out.append(f"--{name}")  # argparse: "expected one argument"
                    continue
                value = args[i]
                i += 1
            out.append(f"--{name}={value}")
        else:
            out.append(arg)
    return out


def run_tool(prog, parser, argv, body, bool_flags=(), value_flags=()):
    """Parse gflags-style ``argv`` (default ``sys.argv[1:]``) with ``parser`` and run
    ``body(args)``.  Returns the exit status: 0, or 1 after logging a CaffeError.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    setup_logging()
    args = parser.parse_intermixed_args(normalise_gflags(argv, bool_flags, value_flags))
    try:
        body(args)
    except CaffeError as e:
        log.error("%s: %s", prog, e)
        return 1
    return 0


FLAGS_NOTE = ("Flags may be written as in Caffe (-flag=value, -flag value, -flag and -noflag for "
              "booleans) or --flag=value.")


# --- the tool ------------------------------------------------------------------------

BOOL_FLAGS = ("gray", "shuffle", "check_size", "encoded")
VALUE_FLAGS = ("backend", "resize_width", "resize_height", "encode_type")


def parser():
    p = argparse.ArgumentParser(prog="convert_imageset", description=USAGE,
                                epilog=FLAGS_NOTE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gray", type=gflags_bool, default=False, metavar="BOOL",
                   help="When this option is on, treat images as grayscale ones")
    p.add_argument("--shuffle", type=gflags_bool, default=False, metavar="BOOL",
                   help="Randomly shuffle the order of images and their labels")
    p.add_argument("--backend", default="lmdb",
                   help="The backend {lmdb, leveldb} for storing the result")
    p.add_argument("--resize_width", type=int, default=0, help="Width images are resized to")
    p.add_argument("--resize_height", type=int, default=0,
                   help="Height images are resized to")
    p.add_argument("--check_size", type=gflags_bool, default=False, metavar="BOOL",
                   help="When this option is on, check that all the datum have the same size")
    p.add_argument("--encoded", type=gflags_bool, default=False, metavar="BOOL",
                   help="When this option is on, the encoded image will be save in datum")
    p.add_argument("--encode_type", default="",
                   help="Optional: What type should we encode the image as ('png','jpg',...).")
    p.add_argument("root_folder", metavar="ROOTFOLDER/")
    p.add_argument("list_file", metavar="LISTFILE")
    p.add_argument("db_name", metavar="DB_NAME")
    return p


def convert(root_folder, list_file, db_name, gray=False, shuffle=False, backend="lmdb",
            resize_width=0, resize_height=0, check_size=False, encoded=False, encode_type=""):
    """Write the database; returns the number of records written."""
    from pycaffe_lite.io.caffe_io import create_db, read_image_list, read_image_to_datum
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
    def body(args):
        convert(args.root_folder, args.list_file, args.db_name, gray=args.gray,
                shuffle=args.shuffle, backend=args.backend, resize_width=args.resize_width,
                resize_height=args.resize_height, check_size=args.check_size,
                encoded=args.encoded, encode_type=args.encode_type)
    return run_tool("convert_imageset", parser(), argv, body, BOOL_FLAGS, VALUE_FLAGS)


if __name__ == "__main__":
    sys.exit(main())
