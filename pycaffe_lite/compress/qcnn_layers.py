"""A Convolution or InnerProduct layer as Q-CNN sees it: sub-vectors, samples, costs.

Both kinds are one shape here.  An output ``m`` of group ``g`` reads, at
each of ``KK`` kernel offsets (1 for an inner product), ``Cg`` input values
(the channels of its group; an inner product's inputs): the weight is
``w [M, KK, Cg]``, one column of the layer's input is ``x [KK, Cg]`` and
the response is ``y[m] = b[m] + sum_{k, c} w[m, k, c] x_g(m)[k, c]``.  The
``Cg`` values split into ``S = ceil(Cg / D)`` subspaces of ``D`` (the last
one zero-padded), so arrays here carry ``[..., S, D]`` where the layer has
``Cg``.

Calibration columns: an inner product gives one per image (row of its
flattened input); a convolution one per output position, of which
``per_image`` random positions per image are kept (Q-CNN's error correction
needs the responses, not every one of them: memory stays bounded).
"""
import dataclasses
import math

import numpy

from ..engines import lookup
from ..io import bitpack

DEFAULTS = {"Convolution": (8, 128), "InnerProduct": (4, 32)}
class UnsupportedLayer(ValueError):
    """A layer Q-CNN's layers cannot stand for (the message says why)."""


@dataclasses.dataclass
class LayerView:
    name: str
    type: str
    outputs: int                 # M
    inputs: int                  # Cg: per group (convolution) or all (inner product)
    groups: int = 1
    kernel: tuple = ()           # (KH, KW); () for an inner product
    stride: tuple = (1, 1)
    pad: tuple = (0, 0)
    dilation: tuple = (1, 1)
    in_spatial: tuple = ()       # (H, W) of the input
    out_spatial: tuple = ()      # (OH, OW)
    rows: int = 1                # inner product: rows per image (count of axes before axis)
    bias: bool = True

    @property
    def offsets(self):
        """KK: kernel offsets per output (1 for an inner product)."""
        return math.prod(self.kernel) if self.kernel else 1

    @property
    def columns(self):
        """Calibration columns one image offers."""
        return math.prod(self.out_spatial) if self.kernel else self.rows

    def subspaces(self, dim):
        return -(-self.inputs // dim)


def view(record):
    """The LayerView of a built Convolution / InnerProduct layer record, or
    UnsupportedLayer."""
    layer, kind = record.layer, record.layer.type
    bottom = record.bottom_blobs[0].shape
    if len(record.bottom_blobs) != 1:
        raise UnsupportedLayer(f"it has {len(record.bottom_blobs)} bottoms; the Q layers "
                               "take one")
    if kind == "InnerProduct":
        if layer.transpose:
            raise UnsupportedLayer("inner_product_param.transpose is set; QInnerProduct "
                                   "holds its indices as [num_output, subspaces]")
        return LayerView(record.name, kind, layer.num_output, layer.k,
                         rows=math.prod(bottom[1:layer.axis]), bias=layer.bias_term)
    if layer.channel_axis != 1 or layer.num_spatial != 2:
        raise UnsupportedLayer(f"its input has {layer.num_spatial} spatial axes after channel "
                               f"axis {layer.channel_axis}; 'compress qcnn' quantises 2-D "
                               "convolutions (channel axis 1)")
    g = layer.geom
    return LayerView(record.name, kind, layer.num_output, layer.channels // layer.group,
                     layer.group, g.kernel, g.stride, g.pad, g.dilation, tuple(bottom[2:]),
                     tuple(record.top_blobs[0].shape[2:]), bias=layer.bias_term)


def weight_rows(weight, spec):
    """The layer's weight blob as ``w [M, KK, Cg]``."""
    m = spec.outputs
    if not spec.kernel:
        return weight.reshape(m, 1, spec.inputs)
    return weight.reshape(m, spec.inputs, spec.offsets).transpose(0, 2, 1)


def padded(array, dim):
    """``[..., Cg]`` -> ``[..., S, D]``, the last subspace zero-padded."""
    cg = array.shape[-1]
    s = -(-cg // dim)
    out = numpy.zeros(array.shape[:-1] + (s * dim,), array.dtype)
    out[..., :cg] = array
    return out.reshape(array.shape[:-1] + (s, dim))


def sub_vectors(weight, spec, dim):
    """k-means points per subspace: ``[S, M*KK, D]`` (``W[m, s*D:(s+1)*D, k]`` over
    every output and kernel offset)."""
    w = padded(weight_rows(weight, spec), dim)                   # [M, KK, S, D]
    return numpy.ascontiguousarray(w.reshape(-1, w.shape[2], dim).transpose(1, 0, 2))


def index_blob(indices, spec, codewords):
    """Indices ``[M, KK, S]`` in the Q layer's blob shape and dtype."""
    shape = (spec.outputs,) + tuple(spec.kernel) + (indices.shape[-1],)
    return indices.reshape(shape).astype(lookup.index_dtype(codewords))


def dense_weight(codebooks, indices, spec):
    """The weight blob (the layer's shape) the codebooks and indices ``[M, KK, S]``
    stand for."""
    blob = index_blob(indices, spec, codebooks.shape[1])
    if spec.kernel:
        return lookup.conv_weight(codebooks, blob, spec.inputs)
    return lookup.fc_weight(codebooks, blob, spec.inputs)


# --- calibration columns -----------------------------------------------------------

def draw_columns(spec, images, per_image, rng):
    """``[images, P]``: which columns of each image are kept (all when P covers them)."""
    count = spec.columns
    if per_image >= count:
        return numpy.broadcast_to(numpy.arange(count), (images, count))
    return numpy.stack([numpy.sort(rng.choice(count, per_image, replace=False))
                        for _ in range(images)])


def input_columns(x, spec, picks):
    """Input columns ``[G, n*P, KK, Cg]`` of a chunk ``x`` (the layer's bottom) at the
    kept columns ``picks [n, P]``."""
    n = x.shape[0]
    if not spec.kernel:
        rows = x.reshape(n, spec.rows, spec.inputs)
        taken = numpy.take_along_axis(rows, picks[:, :, None], axis=1)
        return taken.reshape(1, -1, 1, spec.inputs)
    (sh, sw), (ph, pw), (dh, dw) = spec.stride, spec.pad, spec.dilation
    kh, kw = spec.kernel
    out_w = spec.out_spatial[1]
    padded_x = numpy.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    top, left = (picks // out_w) * sh, (picks % out_w) * sw                 # [n, P]
    r = top[:, :, None, None] + dh * numpy.arange(kh)[:, None]
    c = left[:, :, None, None] + dw * numpy.arange(kw)
    # advanced indices around a slice: [n, P, KH, KW, C]
    patches = padded_x[numpy.arange(n)[:, None, None, None], :, r, c]
    g = spec.groups
    patches = patches.reshape(-1, kh * kw, g, spec.inputs)
    return patches.transpose(2, 0, 1, 3)


def output_columns(y, spec, picks):
    """Responses ``[M, n*P]`` of a chunk ``y`` (the layer's top) at ``picks [n, P]``."""
    n = y.shape[0]
    if spec.kernel:
        flat = y.reshape(n, spec.outputs, -1)
        taken = numpy.take_along_axis(flat, picks[:, None, :], axis=2)      # [n, M, P]
        return taken.transpose(1, 0, 2).reshape(spec.outputs, -1)
    rows = y.reshape(n, spec.rows, spec.outputs)
    return numpy.take_along_axis(rows, picks[:, :, None], axis=1).reshape(-1, spec.outputs).T


# --- what a Q layer costs and saves ---------------------------------------------------

def costs(spec, dim, codewords):
    """Per image: bytes and multiply-adds of the dense layer and of its Q layer.

    Dense: ``4 (M KK Cg + M)`` bytes; ``OH OW M KK Cg`` multiply-adds (an inner
    product: ``M Cg``).  Q: codebooks ``4 S K D`` bytes, indices ``M KK S`` at
    ``ceil(log2 K)`` bits, the bias; the tables ``G Hp Wp Cg K`` multiply-adds
    (every padded input pixel against every codeword; an inner product: ``Cg K``)
    plus ``OH OW M KK S`` lookups (additions; an inner product: ``M S``).
    """
    m, kk, cg, s = spec.outputs, spec.offsets, spec.inputs, spec.subspaces(dim)
    bias = 4 * m if spec.bias else 0
    bits = bitpack.bits_for(codewords)
    positions = math.prod(spec.out_spatial) if spec.kernel else spec.rows
    if spec.kernel:
        pixels = math.prod(i + 2 * p for i, p in zip(spec.in_spatial, spec.pad))
        table = spec.groups * pixels * cg * codewords
    else:
        table = spec.rows * cg * codewords
    dense = positions * m * kk * cg
    lookups = positions * m * kk * s
    return {"dense_bytes": 4 * m * kk * cg + bias,
            "q_bytes": 4 * s * codewords * dim + -(-m * kk * s * bits // 8) + bias,
            "index_bits": bits,
            "dense_macs": dense, "table_macs": table, "lookups": lookups,
            "predicted_speedup": dense / (table + lookups)}
