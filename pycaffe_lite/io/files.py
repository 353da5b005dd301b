"""Reading and writing Caffe's protobuf files (prototxt, caffemodel, solver).

Every reader names the file (and line and column for text) in its errors and
reads regular files only (a device, a FIFO or a socket is refused by name
before it is opened; a file larger than the memory available is refused
before it is read); every writer writes a temporary file
``.tmp_<pid>@<host>_<name>.<random>`` beside the target and renames it, so a crash
never leaves a half-written file under the final name, and
:func:`remove_stale_temporaries` clears what a killed writer left behind.

Weights holding NaN or inf are reported when copied into a net
(:func:`check_finite`): a warning per blob, or an error after
:func:`set_strict_weights`.
"""
import collections
import contextlib
import errno
import logging
import math
import os
import re
import socket
import stat
import tempfile
import time

import numpy
from google.protobuf import message, text_format
from google.protobuf.descriptor import FieldDescriptor

from .. import memory
from ..errors import CaffeError, ParseError, WeightsError
from ..proto import caffe_pb2
from . import bitpack
from .upgrade import net_version, upgrade_net, upgrade_solver

# First bytes of files that users mistake for Caffe files.
_FOREIGN_SIGNATURES = [
    (b"\x89HDF\r\n\x1a\n", ("an HDF5 file (an HDF5 caffemodel, or Keras weights?); HDF5 "
                            "caffemodels are not supported: save the net with the binary "
                            "protobuf format (net.save('x.caffemodel'))")),
    (b"PK\x03\x04", "a zip archive (a PyTorch checkpoint? a NumPy .npz?)"),
    (b"\x80\x02", "a Python pickle (a PyTorch / Chainer checkpoint?)"),
    (b"\x80\x03", "a Python pickle (a PyTorch / Chainer checkpoint?)"),
    (b"\x80\x04", "a Python pickle (a PyTorch / Chainer checkpoint?)"),
    (b"\x80\x05", "a Python pickle (a PyTorch / Chainer checkpoint?)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x1f\x8b", "gzip-compressed data; decompress it first"),
]


def _foreign_format(data):
    """What ``data`` is, when its first bytes say it is not a Caffe file; else None."""
    for signature, description in _FOREIGN_SIGNATURES:
        if data.startswith(signature):
            return description
    if data[4:8] == b"TFL3":
        return "a TensorFlow Lite model"
    if len(data) > 10 and data[8:10] == b'{"' and int.from_bytes(data[:8], "little") < len(data):
        return "a safetensors file"
    return None


log = logging.getLogger("pycaffe_lite")


class WriteError(CaffeError):
    """An output file could not be written (missing or read-only folder, disk full)."""


# --- paths and regular files ----------------------------------------------------------

def check_path(path, what="file", error=ParseError):
    """``path`` as a str; a NUL byte in it (no file name can hold one) raises
    ``error`` naming ``what`` (a field, a layer, a file kind)."""
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if "\0" in path:
        raise error(f"{what}: the path {path!r} holds a NUL byte (\\0); no file name can "
                    "hold one")
    return path


# Names of the string fields of caffe.proto that hold a file or folder path.
PATH_FIELDS = frozenset({"source", "mean_file", "meanfile", "file_name", "root_folder",
                         "net", "train_net", "test_net", "snapshot_prefix", "weights",
                         "learned_net"})


def check_path_fields(msg, where):
    """Every path field (:data:`PATH_FIELDS`) of ``msg`` and the messages in it,
    checked with :func:`check_path`; the error names ``where`` (the file), the
    layer and the field."""
    def walk(msg, layer, field_path):
        for field, value in msg.ListFields():
            if field.type == FieldDescriptor.TYPE_STRING:
                if field.name in PATH_FIELDS:
                    for text in (value if field.is_repeated else [value]):
                        check_path(text, f"{where}: {layer}{field_path}{field.name}")
            elif field.type == FieldDescriptor.TYPE_MESSAGE and \
                    field.message_type.name != "BlobProto":
                for i, item in enumerate(value if field.is_repeated else [value]):
                    if field.message_type.name in ("LayerParameter", "V1LayerParameter",
                                                   "V0LayerParameter"):
                        name = getattr(item, "name", "") or f"#{i}"
                        walk(item, f"{layer}layer '{name}': ", "")
                    else:
                        walk(item, layer, f"{field_path}{field.name}.")
    walk(msg, "", "")
    return msg


_FILE_TYPES = [(stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISSOCK, "a socket")]


def _not_regular(mode):
    """What a non-regular file of ``mode`` is ('a character device', ...), else None."""
    if stat.S_ISREG(mode):
        return None
    for test, description in _FILE_TYPES:
        if test(mode):
            return description
    return "not a regular file"


def regular_file(path, what, error=ParseError):
    """``os.stat`` of ``path`` when it is a regular file; anything else (missing,
    a directory, a device, a FIFO, a socket, a NUL in the name) raises ``error``
    naming it, before the file is opened."""
    path = check_path(path, f"{what} file", error)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what} file: {e.strerror}") from None
    kind = _not_regular(st.st_mode)
    if kind:
        raise error(f"{path}: is {kind}, not a {what} file")
    return st


def read_regular(path, what, error=ParseError):
    """The bytes of the regular file ``path`` (see :func:`regular_file`); a file
    larger than the memory limit (:mod:`pycaffe_lite.memory`) is refused before
    it is read."""
    st = regular_file(path, what, error)
    limit, source = memory.memory_limit()
    if limit is not None and st.st_size > limit:
        raise error(f"{path}: the {what} file has {st.st_size} bytes, more than the memory "
                    f"limit of {limit} bytes ({source})")
    try:
        # O_NONBLOCK: should the name have become a FIFO since the stat, open does not block.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"{path}: cannot read {what} file: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        kind = _not_regular(os.fstat(fd).st_mode)
        if kind:
            raise error(f"{path}: is {kind}, not a {what} file")
        os.set_blocking(fd, True)
        try:
            return f.read()
        except OSError as e:
            raise error(f"{path}: cannot read {what} file: {e.strerror}") from None


# --- binary protobuf: which message is it? ------------------------------------------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _top_level_fields(data):
    """The (field number, wire type) of each top-level field of a binary protobuf,
    or None when ``data`` is not a well-formed message."""
    fields, pos, end = [], 0, len(data)

    def varint():
        nonlocal pos
        value = shift = 0
        while pos < end and shift < 64:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise ValueError("truncated varint")

    try:
        while pos < end:
            key = varint()
            number, wire = key >> 3, key & 7
            if number == 0:
                return None
            if wire == _VARINT:
                varint()
            elif wire == _I64:
                pos += 8
            elif wire == _LEN:
                length = varint()       # read before pos is used: varint() moves it
                pos += length
            elif wire == _I32:
                pos += 4
            else:
                return None             # groups: no Caffe message uses them
            if pos > end:
                return None
            fields.append((number, wire))
    except ValueError:
        return None
    return fields


_FIXED64 = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FIXED64,
            FieldDescriptor.TYPE_SFIXED64}
_FIXED32 = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_FIXED32,
            FieldDescriptor.TYPE_SFIXED32}
_LENGTH_DELIMITED = {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES,
                     FieldDescriptor.TYPE_MESSAGE}


def _wire_types(descriptor):
    """{field number: wire types it may come with} of a message descriptor."""
    table = {}
    for field in descriptor.fields:
        if field.type in _LENGTH_DELIMITED:
            wires = {_LEN}
        else:
            wires = {_I64 if field.type in _FIXED64 else
                     _I32 if field.type in _FIXED32 else _VARINT}
            if field.is_repeated:
                wires.add(_LEN)         # packed
        table[field.number] = wires
    return table


def _fits(fields, table):
    return all(wire in table.get(number, ()) for number, wire in fields)


# ONNX's ModelProto (onnx.proto): ir_version, producer, ..., graph (7), opset_import (8).
_ONNX_MODEL = {1: {_VARINT}, 2: {_LEN}, 3: {_LEN}, 4: {_LEN}, 5: {_VARINT}, 6: {_LEN},
               7: {_LEN}, 8: {_LEN}, 14: {_LEN}, 20: {_LEN}, 25: {_LEN}}

_KNOWN_BINARY = [
    ("net", _wire_types(caffe_pb2.NetParameter.DESCRIPTOR), "a Caffe net (a .caffemodel)"),
    ("blob", _wire_types(caffe_pb2.BlobProto.DESCRIPTOR),
     "a Caffe BlobProto (a .binaryproto, such as a mean file)"),
    ("solverstate", _wire_types(caffe_pb2.SolverState.DESCRIPTOR),
     "a Caffe solver state (a .solverstate; resume training from it with --snapshot)"),
]


def _binary_kind(fields):
    """(kind, description) of the Caffe message or known format that ``fields`` fit."""
    if fields and _fits(fields, _ONNX_MODEL) and any(n == 7 for n, _ in fields) and any(
            n == 1 for n, _ in fields):
        return "onnx", "an ONNX model (pycaffe_lite reads Caffe models only)"
    for kind, table, description in _KNOWN_BINARY:
        if _fits(fields, table):
            return kind, description
    return None, None


def parse_text(text, msg, path="<string>"):
    """Parse prototxt ``text`` into ``msg``; errors read ``path:line:column: ...``.

    The ParseError raised carries the ``line`` it stopped at (0 when unknown).
    """
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        line, column = e.GetLine(), e.GetColumn()
        detail = str(e)
        if line is not None and detail.startswith(f"{line}:"):
            detail = detail.split(" : ", 1)[-1]
        where = f"{path}:{line}:{column}" if line is not None else path
        error = ParseError(f"{where}: {detail}")
        error.line = line or 0
        raise error from None
    return msg


def _decode_text(data, path):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(f"{path}: not a text prototxt (binary data; did you pass a "
                         ".caffemodel where a .prototxt was expected?)") from None


def read_text_proto(path, msg):
    return parse_text(_decode_text(read_regular(path, "prototxt"), path), msg, path)


def read_binary_proto(path, msg, what="caffemodel"):
    """Parse a binary protobuf file into ``msg``, naming what the file is when it is
    something else (another Caffe message, ONNX, HDF5, a pickle, text)."""
    data = read_regular(path, what)
    return _parse_binary(data, msg, path, what)


def _parse_binary(data, msg, path, what):
    error = WeightsError if what == "caffemodel" else ParseError
    foreign = _foreign_format(data)
    if foreign:
        raise error(f"{path}: not a {what}: this is {foreign}")
    if not data:
        raise error(f"{path}: empty file, not a {what}")
    if data[:1].isascii() and data[:64].strip() and all(
            32 <= b < 127 or b in b"\r\n\t" for b in data[:256]):
        raise error(f"{path}: not a binary {what}: it looks like a text file "
                    "(a .prototxt?)")
    fields = _top_level_fields(data)
    if fields is not None and not _fits(fields, _wire_types(msg.DESCRIPTOR)):
        _, description = _binary_kind(fields)
        if description:
            raise error(f"{path}: not a {what}: this is {description}")
    try:
        msg.ParseFromString(data)
    except message.DecodeError as e:
        raise error(f"{path}: not a valid binary {what} (truncated or corrupt: "
                    f"{e})") from None
    if fields and not msg.ListFields():
        raise error(f"{path}: not a {what}: none of its fields is one of a "
                    f"{msg.DESCRIPTOR.name}")
    return msg


# --- text prototxt: a net or a solver? ----------------------------------------------

_TEXT_KINDS = {"net": caffe_pb2.NetParameter, "solver": caffe_pb2.SolverParameter}
_WRONG_KIND = {
    "net": "a net definition, not a solver",
    "solver": "a solver definition, not a net (give it to 'caffe_lite train --solver' or "
              "caffe.get_solver)",
}


def _parse_text_kind(text, path, prefer):
    """(kind, message) of prototxt ``text``: ``prefer`` ('net' or 'solver') when it
    parses as one, else the other kind.  When neither parses, the error of the
    reading that got further (the kind the file most likely is) is raised."""
    order = [prefer] + [kind for kind in _TEXT_KINDS if kind != prefer]
    errors = []
    for kind in order:
        try:
            return kind, parse_text(text, _TEXT_KINDS[kind](), path)
        except ParseError as e:
            errors.append(e)
    raise max(errors, key=lambda e: e.line)   # max keeps the first of equals: prefer's


def read_net_param(path, what="net"):
    """``(NetParameter, encoding)`` of a text prototxt or a binary caffemodel, as
    written (not upgraded); ``encoding`` is 'text' or 'binary'.  A solver raises."""
    data = read_regular(path, what)
    if _looks_binary(data) or (what == "caffemodel" and not data):
        return _parse_binary(data, caffe_pb2.NetParameter(), path, "caffemodel"), "binary"
    kind, net = _parse_text_kind(_decode_text(data, path), path, "net")
    if kind != "net":
        raise ParseError(f"{path}: {_WRONG_KIND[kind]}")
    return net, "text"


def read_solver_param(path):
    """The SolverParameter of a solver prototxt, as written (not upgraded)."""
    data = read_regular(path, "solver")
    if _looks_binary(data):
        foreign = _foreign_format(data)
        fields = _top_level_fields(data)
        _, description = _binary_kind(fields) if fields is not None else (None, None)
        what = foreign or description or "binary data"
        raise ParseError(f"{path}: not a solver prototxt: this is {what}")
    kind, solver = _parse_text_kind(_decode_text(data, path), path, "solver")
    if kind != "solver":
        raise ParseError(f"{path}: {_WRONG_KIND[kind]}")
    return solver


def read_net(path):
    """A NetParameter from a text prototxt or a binary caffemodel, upgraded; a net
    without layers, or with a NUL byte in a path field, raises."""
    net, _ = read_net_param(path, "net")
    net = upgrade_net(net, path)
    if not net.layer:
        raise ParseError(f"{path}: an empty net: no layers (and no inputs)")
    return check_path_fields(net, path)


def read_solver(path):
    """A SolverParameter from a text prototxt, upgraded; a NUL byte in a path field
    (net, snapshot_prefix, ..., or one of an inline net's) raises."""
    return check_path_fields(upgrade_solver(read_solver_param(path), path), path)


def read_weights(path):
    """A trained NetParameter (binary caffemodel; text with blobs also accepted), upgraded."""
    net, encoding = read_net_param(path, "caffemodel")
    if encoding == "text" and not any(layer.blobs for layer in net.layer) and not any(
            layer.blobs or layer.layer.blobs for layer in net.layers):
        raise WeightsError(f"{path}: a text net definition with no trained weights; "
                           "pass the binary .caffemodel as weights")
    net = upgrade_net(net, path, weights=True)
    if not net.layer:
        raise WeightsError(f"{path}: a caffemodel without layers: no weights to copy")
    return net


def _looks_binary(data):
    head = data[:512]
    return any(b < 9 or 13 < b < 32 or b > 126 for b in head if b not in (27,))


FileKind = collections.namedtuple("FileKind", "encoding kind version")
FileKind.__doc__ = """What a Caffe file is: ``encoding`` 'text' or 'binary'; ``kind``
'net', 'solver', 'blob' (a BlobProto) or 'solverstate'; ``version`` of a net's
layer format, 'V0', 'V1' or 'V2' (None for other kinds)."""


def identify(path):
    """The :class:`FileKind` of ``path``, without upgrading it.

    Anything that is not a Caffe file raises a :class:`ParseError` that says,
    where it can tell, what the file is instead (ONNX, HDF5, a pickle, ...).
    """
    data = read_regular(path, "Caffe")
    if not _looks_binary(data):
        kind, msg = _parse_text_kind(_decode_text(data, path), path, "net")
        return FileKind("text", kind, net_version(msg) if kind == "net" else None)
    foreign = _foreign_format(data)
    if foreign:
        raise ParseError(f"{path}: not a Caffe file: this is {foreign}")
    fields = _top_level_fields(data)
    kind, description = _binary_kind(fields) if fields else (None, None)
    if kind is None or kind == "onnx":
        raise ParseError(f"{path}: not a Caffe file: this is "
                         f"{description or 'binary data of no Caffe message type'}")
    if kind != "net":
        return FileKind("binary", kind, None)
    net = _parse_binary(data, caffe_pb2.NetParameter(), path, "caffemodel")
    return FileKind("binary", "net", net_version(net))


def _umask():
    """The process umask (read without changing it where Linux allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)     # elsewhere: read it by setting it, and restore it
    os.umask(umask)
    return umask


# A temporary's name: the writer's pid and host (so that a stale one can be told
# from a live one), the target's name (so that it can be told whose it is), mkstemp's
# random suffix: .tmp_<pid>@<host>_<target>.<random>
_TEMP_PREFIX = ".tmp_"
_TEMP_NAME = re.compile(r"^\.tmp_(\d+)@([A-Za-z0-9.-]*)_(.*)\.[a-z0-9_]{8}$")
_TEMP_TARGET_CHARS = 160        # of the target's name, within NAME_MAX (255)
_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64]
_writing = set()                # this process's temporaries being written now
_STARTED = time.time()          # about when this process started (this module's import)
# Another host's temporary (a shared folder) is stale when it has not been written
# to since before this process started and for this long: a live writer's grows.
_FOREIGN_STALE_S = 600

# Errors of a write that are the disk's, not the code's: reported naming the file.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}


def _write_failure(path, error):
    """A WriteError naming the final ``path`` (never the temporary) and why."""
    folder = os.path.dirname(os.path.abspath(path))
    if isinstance(error, FileNotFoundError):
        reason = f"the folder {folder} does not exist"
    elif isinstance(error, NotADirectoryError):
        reason = f"a part of the folder {folder} is not a folder"
    elif isinstance(error, PermissionError):
        reason = f"no permission to write in the folder {folder}"
    elif error.errno == errno.EROFS:
        reason = f"the folder {folder} is on a read-only file system"
    elif isinstance(error, IsADirectoryError):
        reason = "it is a directory"
    else:
        reason = error.strerror or str(error)
    return WriteError(f"{path}: cannot write the file: {reason}")


@contextlib.contextmanager
def atomic_output(path):
    """A binary file to write (readable too: h5py reads back what it writes) that
    becomes ``path`` (by a rename) only when the ``with`` block ends without an
    error; otherwise nothing is left behind.  A folder that is missing or not
    writable, or a full disk, raises a :class:`WriteError` naming ``path``."""
    path = check_path(path, "output file", WriteError)
    try:
        kind = _not_regular(os.stat(path).st_mode)
    except OSError:
        kind = None                              # not there yet: the usual case
    if kind:
        # the rename would put a file where a device, FIFO or folder was (as root,
        # over /dev/zero): refused
        raise WriteError(f"{path}: cannot write the file: it is {kind}")
    directory = os.path.dirname(os.path.abspath(path))
    prefix = (f"{_TEMP_PREFIX}{os.getpid()}@{_HOST}_"
              f"{os.path.basename(path)[:_TEMP_TARGET_CHARS]}.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    except OSError as e:
        raise _write_failure(path, e) from None
    _writing.add(tmp)
    try:
        try:
            with os.fdopen(fd, "w+b") as f:
                yield f
            # mkstemp creates 0600; give the file the mode open() would (0666 - umask).
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except OSError as e:
            if e.errno in _DISK_ERRORS or e.filename in (tmp, path) or \
                    getattr(e, "filename2", None) == path:
                raise _write_failure(path, e) from None
            raise
    finally:
        _writing.discard(tmp)
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _process_alive(pid):
    """Whether process ``pid`` of this host runs; None for this process."""
    if pid == os.getpid():
        return None
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True         # another user's process
    except (OverflowError, ValueError, OSError):
        return False        # no such pid can exist
    return True


def _stale(path, pid, host):
    """Why the temporary ``path`` of writer ``pid`` on ``host`` is stale, or None."""
    if host != _HOST:
        try:
            modified = os.stat(path).st_mtime
        except OSError:
            return None
        if modified < _STARTED and modified < time.time() - _FOREIGN_STALE_S:
            return (f"left by process {pid} on {host or 'another host'}, unchanged since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(modified))}")
        return None
    alive = _process_alive(pid)
    if alive or (alive is None and path in _writing):
        return None
    return f"left by process {pid}, which no longer writes it"


def remove_stale_temporaries(prefix):
    """Remove the temporaries that a killed writer (``kill -9`` in a snapshot) left
    beside ``prefix``'s files (``<prefix>_iter_N.caffemodel``, ...), logging each.

    Only this module's ``.tmp_<pid>@<host>_<name>.<random>`` files whose
    ``<name>`` starts with the prefix, and only stale ones: on this host, when
    process ``<pid>`` is gone (or is this process, not writing it now); from
    another host (a shared folder), when unchanged since before this process
    started and for 10 minutes.  Another training writing beside us keeps its
    files.  Returns the paths removed.
    """
    directory = os.path.dirname(os.path.abspath(prefix))
    stem = (os.path.basename(prefix) + "_iter_")[:_TEMP_TARGET_CHARS]
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for name in sorted(names):
        match = _TEMP_NAME.match(name)
        if not match or not match.group(3).startswith(stem):
            continue
        tmp = os.path.join(directory, name)
        why = _stale(tmp, int(match.group(1)), match.group(2))
        if why is None:
            continue
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("Cannot remove the stale temporary file %s: %s", tmp, e.strerror)
            continue
        log.info("Removed the stale temporary file %s (%s)", tmp, why)
        removed.append(tmp)
    return removed


def write_atomic(path, data):
    """Write bytes to ``path`` through a temporary file and a rename."""
    with atomic_output(path) as f:
        f.write(data)


def write_binary_proto(path, msg):
    write_atomic(path, msg.SerializeToString())


def write_text_proto(path, msg):
    write_atomic(path, text_format.MessageToString(msg).encode("utf-8"))


# --- BlobProto <-> arrays -------------------------------------------------------

_LEGACY_FIELDS = ("num", "channels", "height", "width")


def has_legacy_shape(proto):
    return any(proto.HasField(f) for f in _LEGACY_FIELDS)


def blob_proto_shape(proto):
    """The shape a BlobProto declares.

    As Caffe's ``Blob::FromProto`` (and pycaffe's ``blobproto_to_array``): the
    legacy num/channels/height/width win when any of them is set, else
    ``shape``; a proto with neither is a 0-axis (scalar) blob.
    """
    if has_legacy_shape(proto):
        return (proto.num, proto.channels, proto.height, proto.width)
    return tuple(int(d) for d in proto.shape.dim)


def legacy_shape(shape):
    """Caffe's 4-D view of a shape: missing leading axes count as 1."""
    shape = tuple(shape)
    if len(shape) > 4:
        return None
    return (1,) * (4 - len(shape)) + shape


def _declared_count(shape, where):
    """Values the BlobProto's ``shape`` declares, in Python ints (no overflow)."""
    if any(d < 0 for d in shape):
        raise WeightsError(f"{where}BlobProto declares shape {shape}, with a negative "
                           "dimension")
    return math.prod(shape)


def blob_proto_to_array(proto, dtype=numpy.float32, diff=False, where=None):
    """The values (``diff``: the diffs) of a BlobProto as an array of its declared shape.

    ``double_data`` / ``double_diff`` are read when present.  ``where`` (the
    file, and the layer and blob in it) begins the errors.
    """
    where = f"{where}: " if where else ""
    shape = blob_proto_shape(proto)
    expected = _declared_count(shape, where)
    if proto.packed_bits and not diff:
        try:
            values = bitpack.unpack(proto.packed_data, proto.packed_bits, expected)
        except ValueError as e:
            raise WeightsError(f"{where}BlobProto of shape {shape} packed at "
                               f"{proto.packed_bits} bits: {e}") from None
        return _as_unsigned(values, dtype, shape, where) if numpy.dtype(dtype).kind == "u" \
            else values.astype(dtype).reshape(shape)
    if diff:
        values = proto.double_diff if len(proto.double_diff) else proto.diff
    else:
        values = proto.double_data if len(proto.double_data) else proto.data
    if len(values) != expected:
        raise WeightsError(f"{where}BlobProto declares shape {shape} ({expected} values) but "
                           f"holds {len(values)}")
    dtype = numpy.dtype(dtype)
    if dtype.kind == "u":
        return _as_unsigned(numpy.array(values, dtype=numpy.float64), dtype, shape, where)
    return numpy.array(values, dtype=dtype).reshape(shape)


def _as_unsigned(values, dtype, shape, where=""):
    """Values read for an unsigned integer blob (codeword indices): whole numbers in
    the dtype's range, or an error.  ``values`` holds as many as ``shape`` declares
    (:func:`blob_proto_to_array` checks it)."""
    top = numpy.iinfo(dtype).max
    whole = values.dtype.kind in "iu" or numpy.all(values == numpy.floor(values))
    if values.size and not (whole and values.min() >= 0 and values.max() <= top):
        raise WeightsError(f"{where}BlobProto of shape {shape} should hold whole numbers "
                           f"0..{top} (codeword indices); it holds {values.min()}..{values.max()}")
    return values.astype(dtype).reshape(shape)


# --- NaN / inf in weights --------------------------------------------------------------

_strict_weights = False


def set_strict_weights(strict=True):
    """Make NaN or inf in weights copied into a net an error (``True``) or a warning
    (``False``, the default); returns the previous setting."""
    global _strict_weights
    previous, _strict_weights = _strict_weights, bool(strict)
    return previous


def strict_weights():
    """True when NaN or inf in weights is an error (see :func:`set_strict_weights`)."""
    return _strict_weights


def check_finite(array, where, strict=None):
    """Warn, one line, when the float ``array`` (``where``: the file, layer and blob)
    holds NaN or inf; raise a WeightsError instead when ``strict`` (default: the
    :func:`set_strict_weights` setting)."""
    array = numpy.asarray(array)
    if array.dtype.kind != "f" or not array.size:
        return
    with numpy.errstate(all="ignore"):
        if numpy.isfinite(array.sum(dtype=numpy.float64)):
            return      # any NaN or inf would make the sum NaN or inf
    nan, inf = int(numpy.isnan(array).sum()), int(numpy.isinf(array).sum())
    if not nan and not inf:
        return
    text = f"{where} holds {nan} NaN and {inf} inf of its {array.size} values"
    if _strict_weights if strict is None else strict:
        raise WeightsError(f"{text} (non-finite weights refused: strict mode)")
    log.warning("%s", text)


def weights_array(proto, dtype, where, strict=None):
    """:func:`blob_proto_to_array` of a param blob being copied into a net, checked
    with :func:`check_finite`."""
    array = blob_proto_to_array(proto, dtype, where=where)
    check_finite(array, where, strict)
    return array


def array_to_blob_proto(array, diff=None, proto=None, legacy=False):
    """Fill a BlobProto (packed float data, and ``diff``) from arrays.

    The shape goes to ``shape``, or with ``legacy`` to num/channels/height/width
    (as Caffe's tools write mean files; at most 4 axes).  An unsigned integer
    array (Q-CNN's codeword indices) is stored bit-packed, at the bits its
    largest value needs, with no diff.
    """
    proto = proto if proto is not None else caffe_pb2.BlobProto()
    proto.Clear()
    array = numpy.asarray(array)
    if legacy:
        four = legacy_shape(array.shape)
        if four is None:
            raise ValueError(f"a legacy BlobProto holds at most 4 axes, got shape {array.shape}")
        proto.num, proto.channels, proto.height, proto.width = (int(d) for d in four)
    else:
        proto.shape.dim.extend(int(d) for d in array.shape)
    if array.dtype.kind == "u":
        proto.packed_bits = bitpack.bits_for(int(array.max()) + 1 if array.size else 1)
        proto.packed_data = bitpack.pack(array, proto.packed_bits)
        return proto
    proto.MergeFromString(_packed_floats(_BLOB_DATA, array))
    if diff is not None:
        proto.MergeFromString(_packed_floats(_BLOB_DIFF, diff))
    return proto


_BLOB_DATA = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name["data"].number
_BLOB_DIFF = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name["diff"].number


def _varint(value):
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _packed_floats(field, array):
    """The wire bytes of ``array`` as packed float ``field``: merged into a message,
    7x faster than ``extend`` of a list of Python floats (AlexNet's fc6: 37M values)."""
    raw = numpy.ascontiguousarray(array, dtype="<f4").tobytes()
    if not raw:
        return b""
    return _varint(field << 3 | 2) + _varint(len(raw)) + raw


def read_blob(path, what="BlobProto", dtype=numpy.float32):
    """The array of a binary BlobProto file (``.binaryproto``: a mean file, say)."""
    return blob_proto_to_array(read_binary_proto(path, caffe_pb2.BlobProto(), what), dtype,
                               where=path)
