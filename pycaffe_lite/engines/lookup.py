"""The lookup-table engine of the Q-CNN layers (Wu et al., CVPR 2016).

A product-quantised layer keeps, per subspace ``s`` of its inputs, a codebook
``C[s] [K, D]`` and, per output (and kernel offset), the index of one codeword
per subspace.  Its weight is never built: forward first computes the table of
inner products of every input sub-vector with every codeword, then each
output is its bias plus a sum of table entries picked by the indices.

Interface (the layers in ``layers/qcnn.py`` call only these):

* ``conv_forward(x, codebooks, indices, geom, group, out, bias)``: ``x [n, C,
  H, W]``, ``codebooks [S, K, D]`` (shared by the groups), ``indices [M, KH,
  KW, S]``, ``out [n, M, OH, OW]``.  Group ``g``'s channels split into ``S``
  subspaces of ``D`` channels (the last one may be shorter: Q-CNN's conv1
  holds 3 channels in an 8-dimensional codebook, and only the first 3
  dimensions count).
* ``fc_forward(x, codebooks, indices, out, bias)``: ``x [n, I]``, ``indices [M,
  S]``, ``out [n, M]``; the inputs split into subspaces of ``D`` values.  The
  compiled path wants the indices subspace-major in memory (``indices.T``
  C-contiguous, as ``QInnerProduct`` keeps them); others are copied first.
* ``conv_weight`` / ``fc_weight``: the dense weights the indices stand for
  (tests, the dense speed baseline, export).
* ``check_indices``: an index outside the codebook, found and named.

Tables.  Convolution: the padded input of a group is split into its stride
phases (``x_pad[c, i*stride + p]``), so that every kernel offset reads one
phase at a fixed offset: the table ``T[s, k, phase, i, j]`` is one GEMM per
subspace, ``C[s] @ x[s-th channels]``, over every input pixel, and output
row ``oh`` of kernel offset ``(kh, kw)`` is a contiguous run of a table row.
Outputs are summed on rows as wide as the phase (``Wq``), the extra columns
dropped at the end: the sum for one output channel, offset and subspace is
one contiguous run of ``(OH - 1) * Wq + OW`` additions.

Paths.  A convolution with fewer than ``DENSE_BELOW`` input channels per
subspace (AlexNet's conv1: 3 channels, one subspace) saves too little per
lookup: it runs as the dense convolution of its reconstructed weight instead
(``conv_by_tables``), the same numbers.  With Numba installed and NumPy
arrays, the sums run in compiled loops (``_lookup_numba``): NumPy's fancy indexing would copy every picked
run before adding it, which measured slower than the dense GEMM it
replaces (see ``bench/bench_qcnn.py``).  Without Numba, or on CuPy, the same
sums are array expressions (gather, then add): the fallback, checked against
the compiled path by the tests.  ``PATH`` forces one (``"numpy"`` /
``"numba"``; None: the best available).
"""
import numpy

from pycaffe_lite.backend import get_array_module

from . import im2col

try:
    from . import _lookup_numba as _compiled
except ImportError:  # Numba is an optional extra
    _compiled = None

__all__ = ["conv_forward", "fc_forward", "conv_weight", "fc_weight", "check_indices",
           "index_dtype", "numba_available", "LookupIndexError", "PATH"]

PATH = None
# A lookup stands for (C/group) / S multiply-adds of the dense convolution.  Below
# this many, the dense convolution of the reconstructed weight (a few thousand
# gathers, then im2col + GEMM) is faster: measured on AlexNet's conv1 (3 channels
# in one subspace: 3 per lookup) 13.4 ms by tables against 3.5 ms dense, while
# conv2-conv5 (8 per lookup) run 1.2-1.8x faster by tables (single thread,
# bench/bench_qcnn.py).  0 forces the tables everywhere.
DENSE_BELOW = 4
# Elements one fallback gather may copy at a time.
_GATHER_BUDGET = 1 << 22


def numba_available():
    return _compiled is not None


def _use_numba(xp):
    if PATH == "numba" and _compiled is None:
        raise RuntimeError("lookup.PATH = 'numba' but Numba is not installed "
                           "(pip install numba)")
    return xp is numpy and _compiled is not None and PATH != "numpy"


def index_dtype(codewords):
    """The unsigned integer type that holds indices ``0 .. codewords - 1``."""
    return numpy.dtype(numpy.uint8 if codewords <= 256 else numpy.uint16)


def check_indices(indices, codewords):
    """None, or a message naming the first index outside ``0 .. codewords - 1``."""
    if indices.size == 0:
        return None
    xp = get_array_module(indices)
    top = int(indices.max())
    if top < codewords:
        return None
    where = tuple(int(i) for i in numpy.unravel_index(int(xp.argmax(indices >= codewords)),
                                                      indices.shape))
    return (f"codeword index {top} at {where} is outside the codebook of {codewords} "
            f"codewords")


class LookupIndexError(ValueError):
    """An index outside the codebook met during a forward (the layer names itself)."""


# --------------------------------------------------------------------------
# Dense reconstructions
# --------------------------------------------------------------------------
def _picked(codebooks, indices):
    """``codebooks[s, indices[..., s]]``: ``[*indices.shape, D]``."""
    xp = get_array_module(codebooks)
    subspaces = codebooks.shape[0]
    return codebooks[xp.arange(subspaces), indices.astype(numpy.intp)]


def fc_weight(codebooks, indices, inputs):
    """The dense ``[M, inputs]`` weight: ``W[m, s*D + d] = C[s, indices[m, s], d]``."""
    m = indices.shape[0]
    return _picked(codebooks, indices).reshape(m, -1)[:, :inputs]


def conv_weight(codebooks, indices, channels):
    """The dense ``[M, channels, *kernel]`` weight (``channels`` per group):
    ``W[m, s*D + d, kh, kw] = C[s, indices[m, kh, kw, s], d]``."""
    xp = get_array_module(codebooks)
    picked = _picked(codebooks, indices)            # [M, *kernel, S, D]
    lead = picked.shape[:-2]
    flat = picked.reshape(lead + (-1,))[..., :channels]
    return xp.ascontiguousarray(xp.moveaxis(flat, -1, 1))


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------
def _tables(x, codebooks, dtype):
    """``T[..., s, k, f] = sum_d C[s, k, d] x[..., s*D + d, f]`` for ``x [..., I, F]``
    (the last subspace may hold fewer than ``D`` inputs)."""
    xp = get_array_module(x)
    subspaces, codewords, dim = codebooks.shape
    lead, inputs, cols = x.shape[:-2], x.shape[-2], x.shape[-1]
    table = xp.empty(lead + (subspaces, codewords, cols), dtype=dtype)
    full = inputs // dim
    if full:
        xp.matmul(codebooks[:full], x[..., :full * dim, :].reshape(lead + (full, dim, cols)),
                  out=table[..., :full, :, :])
    if full < subspaces:
        xp.matmul(codebooks[full, :, :inputs - full * dim], x[..., full * dim:, :],
                  out=table[..., full, :, :])
    return table


def _conv_layout(geom, in_shape):
    """Phase grid and, per kernel offset, (phase, offset in the phase plane)."""
    (sh, sw), (ph, pw) = geom.stride, geom.pad
    hp, wp = in_shape[0] + 2 * ph, in_shape[1] + 2 * pw
    hq, wq = -(-hp // sh), -(-wp // sw)
    phases, offsets = [], []
    for kh in range(geom.kernel[0]):
        for kw in range(geom.kernel[1]):
            rh, rw = kh * geom.dilation[0], kw * geom.dilation[1]
            phases.append((rh % sh) * sw + rw % sw)
            offsets.append((rh // sh) * wq + rw // sw)
    return hq, wq, numpy.array(phases, numpy.int64), numpy.array(offsets, numpy.int64)


def _phase_split(x, geom, hq, wq):
    """``x [n, C, H, W]`` padded and split by stride phase: ``[n, C, sh*sw, hq*wq]``."""
    xp = get_array_module(x)
    (sh, sw), (ph, pw) = geom.stride, geom.pad
    n, c, h, w = x.shape
    if (sh, sw) == (1, 1) and (ph, pw) == (0, 0):
        return x.reshape(n, c, 1, h * w)
    padded = xp.zeros((n, c, hq * sh, wq * sw), dtype=x.dtype)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    split = padded.reshape(n, c, hq, sh, wq, sw).transpose(0, 1, 3, 5, 2, 4)
    return xp.ascontiguousarray(split).reshape(n, c, sh * sw, hq * wq)


# --------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------
def conv_forward(x, codebooks, indices, geom, group, out, bias=None):
    """A grouped 2-D product-quantised convolution into ``out`` (see the module doc).

    Raises ``LookupIndexError`` for an index outside the codebook (checked first:
    no path reads outside a table).
    """
    xp = get_array_module(x)
    n, channels = x.shape[:2]
    num_output, oh, ow = out.shape[1:]
    cg, mg = channels // group, num_output // group
    subspaces, codewords, _ = codebooks.shape
    message = check_indices(indices, codewords)
    if message:
        raise LookupIndexError(message)
    if not conv_by_tables(cg, subspaces):
        im2col.conv_forward(x, conv_weight(codebooks, indices, cg), geom, group, out, bias)
        return
    hq, wq, phases, offsets = _conv_layout(geom, x.shape[2:])
    run = (oh - 1) * wq + ow
    kernel_count = len(offsets)
    fast = _use_numba(xp)
    flat_indices = indices.reshape(num_output, kernel_count, subspaces)
    split = _phase_split(x, geom, hq, wq)                # [n, C, P, hq*wq]
    planes = split.shape[2]
    wide = xp.empty((mg, oh * wq), dtype=out.dtype)
    for i in range(n):
        grouped = split[i].reshape(group, cg, planes * hq * wq)
        table = _tables(grouped, codebooks, out.dtype).reshape(
            group, subspaces, codewords, planes, hq * wq)
        for g in range(group):
            outputs = slice(g * mg, (g + 1) * mg)
            wide[...] = 0 if bias is None else bias[outputs, None]
            if fast:
                _compiled.conv_sums(table[g], flat_indices[outputs], phases, offsets, run, wide)
            else:
                _conv_sums_arrays(table[g], flat_indices[outputs], phases, offsets, run, wide)
            out[i, outputs] = wide.reshape(mg, oh, wq)[:, :, :ow]


def conv_by_tables(channels_per_group, subspaces):
    """True when a convolution runs by lookup tables, False when densely from its
    codebooks (fewer than ``DENSE_BELOW`` multiply-adds per lookup)."""
    return channels_per_group >= DENSE_BELOW * subspaces


def _conv_sums_arrays(table, indices, phases, offsets, run, wide):
    """The fallback of ``_lookup_numba.conv_sums``: per kernel offset, gather the
    runs of every (output, subspace) and add them up."""
    xp = get_array_module(table)
    mg, _, subspaces = indices.shape
    rows = xp.arange(subspaces)
    step = max(1, _GATHER_BUDGET // max(1, subspaces * run))
    for kk, (phase, offset) in enumerate(zip(phases.tolist(), offsets.tolist())):
        window = table[:, :, phase, offset:offset + run]          # [S, K, run]
        for m in range(0, mg, step):
            picked = window[rows, indices[m:m + step, kk].astype(numpy.intp)]
            wide[m:m + step, :run] += picked.sum(axis=1)


def fc_forward(x, codebooks, indices, out, bias=None):
    """``out[i, m] = bias[m] + sum_s T[i, s, indices[m, s]]`` with ``T`` the tables of
    ``x [n, I]``.  Raises ``LookupIndexError`` for an index outside the codebook."""
    xp = get_array_module(x)
    subspaces, codewords, _ = codebooks.shape
    table = _tables(x[:, :, None], codebooks, out.dtype)[..., 0]   # [n, S, K]
    message = check_indices(indices, codewords)
    if message:
        raise LookupIndexError(message)
    if _use_numba(xp):
        out[...] = 0 if bias is None else bias
        # A layer keeps its indices subspace-major in memory (an F-ordered [M, S]):
        # .T is then a free C-ordered [S, M] view.
        _compiled.fc_sums(table, numpy.ascontiguousarray(indices.T), out)
        return
    rows = xp.arange(subspaces)
    step = max(1, _GATHER_BUDGET // max(1, subspaces * x.shape[0]))
    for m in range(0, indices.shape[0], step):
        picked = table[:, rows, indices[m:m + step].astype(numpy.intp)]   # [n, mc, S]
        out[:, m:m + step] = picked.sum(axis=-1)
    if bias is not None:
        out += bias

