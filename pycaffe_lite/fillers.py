"""Weight fillers (Caffe's ``filler.hpp``) driven by the shared RNG."""
import math

import numpy

from . import rng
from .errors import CaffeError


def _fans(shape):
    # Caffe: fan_in = count / num, fan_out = count / channels.
    count = int(numpy.prod(shape)) if shape else 1
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


def fill(blob, filler):
    """Fill ``blob.data`` as the FillerParameter ``filler`` says."""
    shape = blob.shape
    gen = rng.generator()
    kind = filler.type
    if kind == "constant":
        values = numpy.full(shape, filler.value)
    elif kind == "uniform":
        values = gen.uniform(filler.min, filler.max, shape)
    elif kind == "gaussian":
        values = gen.normal(filler.mean, filler.std, shape)
        if filler.sparse >= 0:
            if len(shape) < 2:
                raise CaffeError("sparse gaussian filler needs a blob of at least 2 axes")
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
    elif kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise CaffeError(f"bilinear filler needs a square 4-D blob, got {shape}")
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        ramp = 1 - numpy.abs(numpy.arange(k) / f - c)
        values = numpy.broadcast_to(numpy.outer(ramp, ramp), shape)
    else:
        raise CaffeError(f"unknown filler type {kind!r} (known: constant, uniform, gaussian, "
                         "positive_unitball, xavier, msra, bilinear)")
    blob.data[...] = blob.xp.asarray(numpy.asarray(values, dtype=blob.dtype))
