"""Q-CNN's own binary files (Wu et al., CVPR 2016, ``include/FileIO.h`` upstream).

``.bin``: int32 dimension count ``d``, ``d`` int32 lengths, then the elements
(raw, little-endian, row-major).  ``.cbn`` ("compact binary", the codeword
assignments): the same header, an int32 bit count ``b`` per element, then
blocks of 4096 bytes, each holding ``floor(32768 / b)`` elements packed most
significant bit first (no element crosses a block; the last block is padded
with zeros).  An element is stored as its value minus one, and Q-CNN's loader
subtracts one again after adding it back, so a stored element is the 0-based
codeword index: :func:`read_cbn` returns exactly that.
"""
import math
import os

import numpy

from ..errors import CaffeError
from . import bitpack, files

BLOCK = 4096
MAX_DIMS = 8


class QcnnFileError(CaffeError):
    pass


def _header(data, path, extra=0):
    """(dims, offset of the payload); ``extra`` int32 fields after the dims."""
    if len(data) < 4:
        raise QcnnFileError(f"{path}: {len(data)} bytes, too short for a Q-CNN file header")
    count = int(numpy.frombuffer(data, "<i4", 1)[0])
    if not 1 <= count <= MAX_DIMS:
        raise QcnnFileError(f"{path}: the header says {count} dimensions; expected 1 to "
                            f"{MAX_DIMS} (is this a Q-CNN .bin/.cbn file?)")
    need = 4 * (1 + count + extra)
    if len(data) < need:
        raise QcnnFileError(f"{path}: the header needs {need} bytes, the file has {len(data)}")
    fields = numpy.frombuffer(data, "<i4", 1 + count + extra)
    dims = tuple(int(d) for d in fields[1:1 + count])
    if any(d < 0 for d in dims):
        raise QcnnFileError(f"{path}: negative dimension in {dims}")
    return dims, [int(v) for v in fields[1 + count:]], need


def _read(path):
    path = files.check_path(path, "Q-CNN file", QcnnFileError)
    if not os.path.exists(path):
        raise QcnnFileError(f"Q-CNN file '{path}' does not exist")
    return files.read_regular(path, "Q-CNN", QcnnFileError)


def read_bin(path, dtype=numpy.float32):
    """The array of a ``.bin`` file (``dtype``: its element type, float32 for
    codebooks, biases and the mean; uint16 for ``lablVecTst.uint16.bin``)."""
    data = _read(path)
    dims, _, offset = _header(data, path)
    dtype = numpy.dtype(dtype).newbyteorder("<")
    count = math.prod(dims)
    if len(data) - offset != count * dtype.itemsize:
        raise QcnnFileError(f"{path}: dims {list(dims)} need {count * dtype.itemsize} bytes of "
                            f"{dtype.name} after the header, the file has {len(data) - offset}")
    return numpy.frombuffer(data, dtype, count, offset).reshape(dims).astype(dtype.newbyteorder("="))


def read_cbn(path):
    """The 0-based codeword indices of a ``.cbn`` file (int32, its dims)."""
    data = _read(path)
    dims, (bits,), offset = _header(data, path, extra=1)
    if not 1 <= bits <= 16:
        raise QcnnFileError(f"{path}: {bits} bits per element; expected 1 to 16")
    count = math.prod(dims)
    per_block = BLOCK * 8 // bits
    blocks = -(-count // per_block)
    payload = len(data) - offset
    if payload != blocks * BLOCK:
        raise QcnnFileError(f"{path}: dims {list(dims)} at {bits} bits need {blocks} blocks of "
                            f"{BLOCK} bytes, the file has {payload} bytes after the header")
    raw = numpy.frombuffer(data, numpy.uint8, blocks * BLOCK, offset).reshape(blocks, BLOCK)
    # Drop each block's padding bits: one continuous stream, as bitpack reads.
    stream = numpy.unpackbits(raw, axis=1)[:, :per_block * bits]
    values = bitpack.unpack(numpy.packbits(stream.reshape(-1)), bits, count)
    return values.astype(numpy.int32).reshape(dims)


def write_cbn(path, indices, bits):
    """Write 0-based indices as Q-CNN's ``.cbn`` (for tests and round trips)."""
    indices = numpy.asarray(indices)
    if indices.size and (indices.min() < 0 or indices.max() >= 1 << bits):
        raise QcnnFileError(f"{path}: indices {indices.min()}..{indices.max()} do not fit "
                            f"{bits} bits")
    per_block = BLOCK * 8 // bits
    blocks = -(-indices.size // per_block)
    flat = numpy.zeros(blocks * per_block, numpy.int64)
    flat[:indices.size] = indices.ravel()
    stream = numpy.unpackbits(numpy.frombuffer(bitpack.pack(flat, bits), numpy.uint8))
    padded = numpy.zeros((blocks, BLOCK * 8), numpy.uint8)
    padded[:, :per_block * bits] = stream[:blocks * per_block * bits].reshape(blocks, -1)
    header = numpy.array([indices.ndim, *indices.shape, bits], "<i4").tobytes()
    files.write_atomic(os.fspath(path), header + numpy.packbits(padded, axis=1).tobytes())
