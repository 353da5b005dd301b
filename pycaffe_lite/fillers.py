"""Weight fillers (Caffe's ``filler.hpp``) driven by the shared RNG."""
import math

import numpy

from . import rng
from .errors import FillerError

KNOWN = ("constant", "uniform", "gaussian", "positive_unitball", "xavier", "msra", "bilinear")


def _fans(shape):
    # Caffe: fan_in = count / num, fan_out = count / channels.
    count = math.prod(shape)
    fan_in = count // shape[0] if shape and shape[0] else count
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    return fan_in, fan_out


def _variance_n(filler, shape):
    fan_in, fan_out = _fans(shape)
    norm = filler.variance_norm
    # VarianceNorm enum: FAN_IN = 0, FAN_OUT = 1, AVERAGE = 2
    if norm == 2:
        return (fan_in + fan_out) / 2.0
    if norm == 1:
        return fan_out
    return fan_in


def _check(filler, shape):
    """Refuse what Caffe's fillers CHECK (a FillerError; the net names the layer and field)."""
    kind = filler.type
    if kind not in KNOWN:
        raise FillerError(filler, f"unknown filler type {kind!r} (known: {', '.join(KNOWN)})")
    if kind == "uniform" and not (math.isfinite(filler.min) and math.isfinite(filler.max)
                                  and filler.min <= filler.max):
        raise FillerError(filler, f"uniform filler: min ({filler.min}) must be at most max "
                                  f"({filler.max}), both finite")
    if kind == "gaussian" and not (math.isfinite(filler.mean) and 0 < filler.std < math.inf):
        raise FillerError(filler, f"gaussian filler: std must be > 0 and finite (Caffe's "
                                  f"CHECK_GT(sigma, 0)), got std {filler.std} (mean "
                                  f"{filler.mean})")
    sparse = kind == "gaussian" and filler.sparse >= 0
    if sparse and len(shape) < 2:
        raise FillerError(filler, f"sparse gaussian filler needs a blob of at least 2 axes, "
                                  f"got shape {shape}")
    if (kind in ("xavier", "msra", "positive_unitball", "bilinear") or sparse) and \
            math.prod(shape) == 0:
        raise FillerError(filler, f"{kind} filler: the blob of shape {shape} holds no values "
                                  "(its fan_in is 0)")
    if kind == "bilinear" and (len(shape) != 4 or shape[2] != shape[3]):
        raise FillerError(filler, f"bilinear filler needs a square 4-D blob, got {shape}")


def fill(blob, filler):
    """Fill ``blob.data`` as the FillerParameter ``filler`` says."""
    shape = blob.shape
    _check(filler, shape)
    gen = rng.generator()
    kind = filler.type
    if kind == "constant":
        values = numpy.full(shape, filler.value)
    elif kind == "uniform":
        values = gen.uniform(filler.min, filler.max, shape)
    elif kind == "gaussian":
        values = gen.normal(filler.mean, filler.std, shape)
        if filler.sparse >= 0:
            num_outputs = shape[0]
            keep = gen.random(shape) < filler.sparse / float(num_outputs)
            values = values * keep
    elif kind == "positive_unitball":
        values = gen.uniform(0, 1, shape)
        flat = values.reshape(shape[0], -1) if shape else values.reshape(1, -1)
        flat /= flat.sum(axis=1, keepdims=True)
    elif kind == "xavier":
        scale = math.sqrt(3.0 / _variance_n(filler, shape))
        values = gen.uniform(-scale, scale, shape)
    elif kind == "msra":
        std = math.sqrt(2.0 / _variance_n(filler, shape))
        values = gen.normal(0.0, std, shape)
    else:  # bilinear
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        ramp = 1 - numpy.abs(numpy.arange(k) / f - c)
        values = numpy.broadcast_to(numpy.outer(ramp, ramp), shape)
    blob.data[...] = blob.xp.asarray(numpy.asarray(values, dtype=blob.dtype))
