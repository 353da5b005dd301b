"""Non-negative integers packed at a fixed number of bits each.

The layout of Q-CNN's ``.cbn`` blocks and of a BlobProto's ``packed_data``:
the values row-major, each in ``bits`` bits, most significant bit first, one
continuous bit stream; the last byte is padded with zero bits.
"""
import numpy

MAX_BITS = 16


def bits_for(count):
    """Bits that hold the values ``0 .. count - 1`` (at least 1): ``ceil(log2 count)``."""
    return max(1, (int(count) - 1).bit_length())


def pack(values, bits):
    """``values`` (integers in ``0 .. 2**bits - 1``) as packed bytes."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be 1 to {MAX_BITS}, got {bits}")
    flat = numpy.ascontiguousarray(values).reshape(-1)
    if flat.size and (flat.min() < 0 or int(flat.max()) >> bits):
        raise ValueError(f"values {flat.min()}..{flat.max()} do not fit {bits} bits")
    # Each value's 16 bits, big-endian, then its low ``bits``.
    stream = numpy.unpackbits(flat.astype(">u2").view(numpy.uint8).reshape(-1, 2), axis=1)
    return numpy.packbits(stream[:, 16 - bits:].reshape(-1)).tobytes()


def unpack(data, bits, count):
    """The first ``count`` values of packed bytes ``data`` (uint8 up to 8 bits, else uint16)."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be 1 to {MAX_BITS}, got {bits}")
    need = -(-count * bits // 8)
    raw = numpy.frombuffer(data, numpy.uint8)
    if raw.size < need:
        raise ValueError(f"{count} values at {bits} bits need {need} bytes, got {raw.size}")
    stream = numpy.unpackbits(raw[:need])[:count * bits].reshape(count, bits)
    width = 8 if bits <= 8 else 16
    padded = numpy.zeros((count, width), numpy.uint8)
    padded[:, width - bits:] = stream
    out = numpy.packbits(padded, axis=1)
    if width == 8:
        return out.reshape(count)
    return out.view(">u2").reshape(count).astype(numpy.uint16)
