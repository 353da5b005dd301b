"""Reading and writing Caffe's protobuf files (prototxt, caffemodel, solver).

Every reader names the file (and line and column for text) in its errors;
every writer writes a temporary file and renames it, so a crash never leaves
a half-written file behind.
"""
import os
import tempfile

import numpy
from google.protobuf import message, text_format

from ..errors import ParseError, WeightsError
from ..proto import caffe_pb2

# First bytes of files that users mistake for caffemodels.
_FOREIGN_SIGNATURES = [
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (HDF5 caffemodels are not supported; save it "
                           "with the binary protobuf format)"),
    (b"PK\x03\x04", "a zip archive (a PyTorch checkpoint?)"),
    (b"\x80\x02", "a Python pickle (a PyTorch / Chainer checkpoint?)"),
]


def _read_bytes(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ParseError(f"{path}: {what} file not found") from None
    except OSError as e:
        raise ParseError(f"{path}: cannot read {what} file: {e.strerror}") from None


def parse_text(text, msg, path="<string>"):
    """Parse prototxt ``text`` into ``msg``; errors read ``path:line:column: ...``."""
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        line, column = e.GetLine(), e.GetColumn()
        detail = str(e)
        if line is not None and detail.startswith(f"{line}:"):
            detail = detail.split(" : ", 1)[-1]
        where = f"{path}:{line}:{column}" if line is not None else path
        raise ParseError(f"{where}: {detail}") from None
    return msg


def read_text_proto(path, msg):
    data = _read_bytes(path, "prototxt")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(f"{path}: not a text prototxt (binary data; did you pass a "
                         ".caffemodel where a .prototxt was expected?)") from None
    return parse_text(text, msg, path)


def read_binary_proto(path, msg, what="caffemodel"):
    data = _read_bytes(path, what)
    for signature, description in _FOREIGN_SIGNATURES:
        if data.startswith(signature):
            raise WeightsError(f"{path}: not a {what}: this is {description}")
    if data[:1].isascii() and data[:64].strip() and all(
            32 <= b < 127 or b in b"\r\n\t" for b in data[:256]):
        raise WeightsError(f"{path}: not a binary {what}: it looks like a text file "
                           "(a .prototxt?)")
    try:
        msg.ParseFromString(data)
    except message.DecodeError as e:
        raise WeightsError(f"{path}: not a valid binary {what} (truncated or corrupt: "
                           f"{e})") from None
    return msg


def _read_net_param(path, what):
    """(NetParameter, read as text?) of a text prototxt or a binary caffemodel."""
    data = _read_bytes(path, what)
    net = caffe_pb2.NetParameter()
    if _looks_binary(data):
        return read_binary_proto(path, net, "caffemodel"), False
    return read_text_proto(path, net), True


def read_net(path):
    """A NetParameter from a text prototxt or a binary caffemodel, upgraded."""
    from .upgrade import upgrade_net
    net, _ = _read_net_param(path, "net")
    return upgrade_net(net, path)


def read_solver(path):
    """A SolverParameter from a text prototxt, upgraded."""
    from .upgrade import upgrade_solver
    solver = read_text_proto(path, caffe_pb2.SolverParameter())
    return upgrade_solver(solver, path)


def read_weights(path):
    """A trained NetParameter (binary caffemodel; text with blobs also accepted)."""
    from .upgrade import upgrade_net
    net, is_text = _read_net_param(path, "caffemodel")
    if is_text and not any(layer.blobs for layer in net.layer) and not any(
            layer.blobs for layer in net.layers):
        raise WeightsError(f"{path}: a text net definition with no trained weights; "
                           "pass the binary .caffemodel as weights")
    return upgrade_net(net, path)


def _looks_binary(data):
    head = data[:512]
    return any(b < 9 or 13 < b < 32 or b > 126 for b in head if b not in (27,))


def write_atomic(path, data):
    """Write bytes to ``path`` through a temporary file and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def blob_proto_to_array(proto, dtype=numpy.float32, diff=False):
    """The values (``diff``: the diffs) of a BlobProto as an array of its declared shape.

    ``double_data`` / ``double_diff`` are read when present.
    """
    shape = blob_proto_shape(proto)
    if diff:
        values = proto.double_diff if len(proto.double_diff) else proto.diff
    else:
        values = proto.double_data if len(proto.double_data) else proto.data
    array = numpy.array(values, dtype=dtype)
    expected = int(numpy.prod(shape, dtype=numpy.int64))
    if array.size != expected:
        raise WeightsError(f"BlobProto declares shape {shape} ({expected} values) but holds "
                           f"{array.size}")
    return array.reshape(shape)


def array_to_blob_proto(array, diff=None, proto=None, legacy=False):
    """Fill a BlobProto (packed float data, and ``diff``) from arrays.

    The shape goes to ``shape``, or with ``legacy`` to num/channels/height/width
    (as Caffe's tools write mean files; at most 4 axes).
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
    proto.data.extend(array.astype(numpy.float32).ravel().tolist())
    if diff is not None:
        proto.diff.extend(numpy.asarray(diff, numpy.float32).ravel().tolist())
    return proto


def read_blob(path, what="BlobProto", dtype=numpy.float32):
    """The array of a binary BlobProto file (``.binaryproto``: a mean file, say)."""
    return blob_proto_to_array(read_binary_proto(path, caffe_pb2.BlobProto(), what), dtype)
