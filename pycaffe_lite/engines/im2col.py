"""The im2col / col2im GEMM engine of the convolution family.

Caffe's ``src/caffe/util/im2col.cpp`` and the GEMM calls of
``base_conv_layer.cpp``.  The layers (``layers/conv.py``: Convolution,
Deconvolution, Im2col; ``layers/quant.py``: BinaryConvolution, BinActiv)
state the maths and call only this interface; everything else here is how.

Interface (arrays in, results written into arrays the caller allocated):

* ``ConvGeometry(kernel, stride, pad, dilation)``: one tuple each; the output
  shapes (``conv_out_shape``, ``deconv_out_shape``, ``extent``).
* ``im2col(img, geom, col)`` / ``col2im(col, geom, img)``: the column buffer
  and its adjoint (the Im2col layer).
* ``conv_forward(x, weight, geom, group, out, bias)``,
  ``conv_backward_data(dy, weight, geom, group, dx, bias)``,
  ``conv_backward_weight(x, dy, geom, group, dw)``: a grouped convolution and
  its two gradients (Deconvolution is the first two swapped).

The path is chosen from the arrays (``xp = get_array_module(x)``: the column
budget) and the geometry; a CuPy or compiled kernel, or a Winograd path,
plugs in behind these same functions, measured to win.

Column layout.  ``im2col`` turns an image batch ``[n, C, *spatial]`` into
columns ``[n, C, *kernel, *out]``: per sample exactly Caffe's channel-major
column buffer ``[C * prod(kernel), prod(out)]`` (and the Im2col layer's top).
Both ``im2col`` and ``col2im`` loop over the ``prod(kernel)`` kernel offsets (a
handful) and move whole strided slices, never single elements.

Speed.  A convolution is, per group, the GEMM ``W[M/g, C/g*K] @ col[C/g*K,
n*P]`` over a chunk of ``n`` samples: the columns are built channel-major
(``[C, *kernel, n, *out]``), so one 2-D GEMM per group covers the chunk, and
its result is moved into ``[n, M, *out]`` with the bias in the same pass (a
chunk of one sample needs no move).  The batch is processed in chunks whose
column buffer holds about ``_COL_BUDGET_*`` elements (on the CPU a few MiB;
on a GPU the whole batch at once).  When a single sample's columns exceed
the budget (large images), forward goes by bands of output rows.  A 1x1,
stride-1, pad-0 convolution uses the input itself as its columns.  A 2-D,
stride-1 convolution whose output rows are as wide as its input rows (3x3
pad 1, ...) builds its columns from whole-image runs of a flat padded layout
instead of row by row (and its backward adds them back the same way); a
depthwise one on large maps skips the columns and adds the kernel's shifted
runs directly.  Measured on a 2-core machine:
AlexNet's conv3 at batch 16 runs at about 80% of NumPy's float32 GEMM peak.
"""
import itertools
import math

import numpy

from pycaffe_lite.backend import get_array_module

__all__ = ["ConvGeometry", "im2col", "col2im", "conv_forward", "conv_backward_data",
           "conv_backward_weight"]

# Elements of one column buffer chunk.  CPU: ~8 MiB in float32, measured best on
# a 2-core machine (larger chunks fall out of cache, smaller ones make thin GEMMs).
_COL_BUDGET_CPU = 1 << 21
_COL_BUDGET_GPU = 1 << 26
# NumPy: up to this many groups are multiplied one 2-D GEMM at a time (see
# ``_grouped_matmul``).
_GROUP_LOOP_MAX = 8
# Depthwise convolutions go direct (no columns) from this many output pixels per
# channel: measured faster from 80x80 up, slower than the 1x9 GEMMs at 40x40 and
# below (NumPy's multiply by a per-channel scalar is slow on short rows).
_DEPTHWISE_DIRECT_MIN_PLANE = 4096
# im2col by phases when a 2-D kernel has at least this many offsets per phase
# (see _phases_pay).
_PHASE_MIN_OFFSETS = 4
# Elements of one channel chunk of a direct depthwise convolution (CPU).
_DEPTHWISE_CHUNK_CPU = 1 << 20


# --------------------------------------------------------------------------
# Geometry and the shared im2col / col2im
# --------------------------------------------------------------------------
class ConvGeometry:
    """Kernel, stride, pad and dilation of an N-d convolution (one tuple each)."""

    def __init__(self, kernel, stride, pad, dilation):
        self.kernel = tuple(int(k) for k in kernel)
        self.stride = tuple(int(s) for s in stride)
        self.pad = tuple(int(p) for p in pad)
        self.dilation = tuple(int(d) for d in dilation)
        self._plans = {}

    @property
    def extent(self):
        """Dilated kernel size per spatial axis."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    @property
    def kernel_count(self):
        return math.prod(self.kernel)

    @property
    def is_pointwise(self):
        """1x1, stride 1, pad 0: the input is its own column buffer."""
        return all(k == 1 for k in self.kernel) and all(s == 1 for s in self.stride) \
            and all(p == 0 for p in self.pad)

    def conv_out_shape(self, in_shape):
        """Caffe's ``(in + 2*pad - extent) / stride + 1`` per axis."""
        return tuple((i + 2 * p - e) // s + 1
                     for i, p, e, s in zip(in_shape, self.pad, self.extent, self.stride))

    def deconv_out_shape(self, in_shape):
        """Caffe's deconvolution ``stride * (in - 1) + extent - 2*pad`` per axis."""
        return tuple(s * (i - 1) + e - 2 * p
                     for i, p, e, s in zip(in_shape, self.pad, self.extent, self.stride))

    def axis_ranges(self, offset, img_shape, col_shape, first_row=0):
        """Per axis, for one kernel offset: (lo, hi, slice into the image).

        Column positions ``lo <= o < hi`` read image position
        ``(o + origin)*stride - pad + offset*dilation`` (``origin`` is ``first_row``
        on the first axis, 0 on the others); the others fall into the padding.
        """
        ranges = []
        origins = (first_row,) + (0,) * (len(offset) - 1)
        for k, size, osize, s, p, d, origin in zip(offset, img_shape, col_shape, self.stride,
                                                   self.pad, self.dilation, origins):
            start = k * d - p + origin * s
            lo = min(max(0, -(start // s)), osize)
            hi = max(min(osize, -((start - size) // s)), lo)
            first = lo * s + start
            ranges.append((lo, hi, slice(first, first + (hi - lo - 1) * s + 1, s)))
        return ranges

    def plan(self, img_shape, col_shape, first_row=0):
        """``[(offset, ranges)]`` for every kernel offset (row-major), cached per shape."""
        key = (tuple(img_shape), tuple(col_shape), first_row)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 64:
                self._plans.clear()
            plan = self._plans[key] = [
                (offset, self.axis_ranges(offset, img_shape, col_shape, first_row))
                for offset in itertools.product(*(range(k) for k in self.kernel))]
        return plan


def im2col(img, geom, col, first_row=0):
    """Fill ``col [n, C, *kernel, *out]`` from ``img [n, C, *in]`` (zero padding).

    ``first_row``: the columns start at this output position of the first
    spatial axis (a band of output rows).
    """
    if _rows_are_runs(img, geom, col):
        return _im2col_runs(img, geom, col, first_row)
    if _phases_pay(geom):
        return _im2col_phases(img, geom, col, first_row)
    img_shape = img.shape[2:]
    col_shape = col.shape[2 + len(geom.kernel):]
    lead = (slice(None), slice(None))
    for offset, ranges in geom.plan(img_shape, col_shape, first_row):
        dst = col[lead + offset]                        # [n, C, *out]
        if any(hi == lo for lo, hi, _ in ranges):
            dst[...] = 0
            continue
        for axis, (lo, hi, _) in enumerate(ranges):
            before = lead + (slice(None),) * axis
            if lo > 0:
                dst[before + (slice(0, lo),)] = 0
            if hi < col_shape[axis]:
                dst[before + (slice(hi, None),)] = 0
        dst[lead + tuple(slice(lo, hi) for lo, hi, _ in ranges)] = \
            img[lead + tuple(src for _, _, src in ranges)]
    return col


def _rows_are_runs(img, geom, col):
    """2-D, stride 1, output rows as wide as input rows ("same" padding across)."""
    return (len(geom.kernel) == 2 and geom.stride == (1, 1) and geom.kernel_count > 1
            and col.shape[-1] == img.shape[-1])


def _flat_layout(img, geom, first_row, rows):
    """``(length, start)`` of the :func:`_flat_rows` layout of ``img``: values per
    image and channel, and where input pixel (0, 0) lies."""
    (kh, _), (ph, pw), (dh, _) = geom.kernel, geom.pad, geom.dilation
    h, w = img.shape[2:]
    below = max(0, first_row + rows - 1 + (kh - 1) * dh - ph - (h - 1))
    start = pw + ph * w
    return start + (h + below) * w + pw, start


def _flat_rows(img, geom, first_row, rows):
    """``img [n, C, H, W]`` laid out flat per image and channel for a
    :func:`_rows_are_runs` geometry: ``pad_h`` zero rows above, enough zero
    rows below for output rows ``first_row .. first_row + rows``, and
    ``pad_w`` zeros at either end.  Input row ``r`` starts at ``pad_w + (r +
    pad_h) * W``.
    """
    xp = get_array_module(img)
    n, c, h, w = img.shape
    length, start = _flat_layout(img, geom, first_row, rows)
    flat = xp.empty((n, c, length), dtype=img.dtype)
    flat[:, :, :start] = 0
    flat[:, :, start:start + h * w] = img.reshape(n, c, h * w)
    flat[:, :, start + h * w:] = 0
    return flat


def _runs(geom, width, first_row, rows):
    """Per kernel offset of a :func:`_rows_are_runs` geometry: ``(index, start,
    shift)``: its output rows read ``rows * width`` values of the
    :func:`_flat_rows` layout from ``start``; ``shift`` is its column offset
    (``-pad_w .. pad_w``): the first ``-shift`` (or last ``shift``) columns of
    each output row read the neighbouring input row and must be zero."""
    (kh, kw), (_, pw), (dh, dw) = geom.kernel, geom.pad, geom.dilation
    return [(i * kw + j, pw + (first_row + i * dh) * width + j * dw - pw, j * dw - pw)
            for i in range(kh) for j in range(kw)]


def _zero_wrapped(rows_view, shift):
    """Zero the columns of ``rows_view [..., W]`` that a ``shift`` wrapped into the next row."""
    width = rows_view.shape[-1]
    if shift < 0:
        rows_view[..., :min(-shift, width)] = 0
    elif shift > 0:
        rows_view[..., max(width - shift, 0):] = 0


def _im2col_runs(img, geom, col, first_row):
    """:func:`im2col` for :func:`_rows_are_runs` geometries, by whole-image copies.

    Every output row is as wide as an input row, so in the :func:`_flat_rows`
    layout the columns of one kernel offset are ONE contiguous run per image
    and channel (less the few wrapped columns, zeroed after).  Long runs
    instead of one short copy per row.
    """
    n, c = img.shape[:2]
    rows, width = col.shape[-2:]
    flat = _flat_rows(img, geom, first_row, rows)
    kw = geom.kernel[1]
    for k, start, shift in _runs(geom, width, first_row, rows):
        dst = col[:, :, k // kw, k % kw]
        dst[...] = flat[:, :, start:start + rows * width].reshape(n, c, rows, width)
        _zero_wrapped(dst, shift)
    return col


def _phases_pay(geom):
    """2-D, strided, and many kernel offsets per phase (AlexNet's 11x11 stride 4,
    7x7 stride 2): :func:`_im2col_phases` beats the strided copies (measured:
    conv1 of AlexNet 0.71 -> 0.38 ms per image; a 3x3 stride 2 is slower)."""
    return (len(geom.kernel) == 2 and geom.stride != (1, 1)
            and geom.kernel_count >= _PHASE_MIN_OFFSETS * math.prod(geom.stride))


def _im2col_phases(img, geom, col, first_row):
    """:func:`im2col` by phases: the zero-padded image (the rows the columns read)
    is split once into its ``sh * sw`` phases, ``P[a, b, n, c, u, v] = x_pad[n, c,
    u*sh + a, v*sw + b]``, each contiguous; kernel offset ``(i, j)`` then reads
    whole rows of phase ``(i*dh % sh, j*dw % sw)`` from ``(i*dh // sh, j*dw //
    sw)`` instead of gathering every ``sh``-th value.
    """
    xp = get_array_module(img)
    (sh, sw), (ph, pw), (dh, dw), (kh, kw) = geom.stride, geom.pad, geom.dilation, geom.kernel
    n, c, h, w = img.shape
    rows, width = col.shape[-2:]
    hq, wq = rows + (kh - 1) * dh // sh, width + (kw - 1) * dw // sw
    top, left = first_row * sh - ph, -pw          # image position of frame (0, 0)
    frame = xp.zeros((n, c, hq * sh, wq * sw), dtype=img.dtype)
    r0, r1 = max(0, top), min(h, top + hq * sh)
    c0, c1 = max(0, left), min(w, left + wq * sw)
    if r0 < r1 and c0 < c1:
        frame[:, :, r0 - top:r1 - top, c0 - left:c1 - left] = img[:, :, r0:r1, c0:c1]
    phases = xp.ascontiguousarray(
        frame.reshape(n, c, hq, sh, wq, sw).transpose(3, 5, 0, 1, 2, 4))
    for i in range(kh):
        a, u = divmod(i * dh, sh)[::-1]
        for j in range(kw):
            b, v = divmod(j * dw, sw)[::-1]
            col[:, :, i, j] = phases[a, b, :, :, u:u + rows, v:v + width]
    return col


def _depthwise_runs(x, weight, geom, out, bias):
    """Depthwise convolution (``group == C == M``) of a :func:`_rows_are_runs`
    geometry, without columns: ``out[:, c] = sum_k weight[c, k] * run_k(x)[:, c]``.

    One multiply and one add per kernel offset, straight into ``out``, a
    chunk of channels at a time (bounding the scratch).  On 80x80 maps and up
    this beats writing 9x the input as columns for a batch of 1x9 GEMMs
    (measured in RetinaFace: 1.6 -> 1.0 ms on 64x80x80); on small maps
    NumPy's multiply by a per-channel scalar over short rows loses.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    plane = out.shape[2] * w
    flat = _flat_rows(x, geom, 0, out.shape[2])
    taps = weight.reshape(c, -1)
    step = c if xp is not numpy else max(1, min(c, _DEPTHWISE_CHUNK_CPU // (n * plane)))
    scratch = xp.empty((n, step, plane), dtype=out.dtype)
    total = out.reshape(n, c, plane)
    runs = sorted(_runs(geom, w, 0, out.shape[2]), key=lambda run: run[2] != 0)
    for c0 in range(0, c, step):
        part = slice(c0, min(c0 + step, c))
        acc = total[:, part]
        tmp = scratch[:, :acc.shape[1]]
        for index, (k, start, shift) in enumerate(runs):
            target = acc if index == 0 else tmp
            xp.multiply(flat[:, part, start:start + plane], taps[part, k, None], out=target)
            _zero_wrapped(target.reshape(target.shape[:2] + (-1, w)), shift)
            if index:
                acc += tmp
        if bias is not None:
            acc += bias[part, None]
    return out


def col2im(col, geom, img, scratch_col=False):
    """Overwrite ``img [n, C, *in]`` with the sum of ``col``'s entries onto their pixels.

    The adjoint of :func:`im2col`; kernel offsets are added in Caffe's order.
    ``scratch_col``: ``col`` may be overwritten (allows the faster
    :func:`_col2im_runs`).
    """
    if scratch_col and _rows_are_runs(img, geom, col):
        return _col2im_runs(col, geom, img)
    img[...] = 0
    img_shape = img.shape[2:]
    col_shape = col.shape[2 + len(geom.kernel):]
    lead = (slice(None), slice(None))
    for offset, ranges in geom.plan(img_shape, col_shape):
        if any(hi == lo for lo, hi, _ in ranges):
            continue
        src = col[lead + offset][lead + tuple(slice(lo, hi) for lo, hi, _ in ranges)]
        img[lead + tuple(s for _, _, s in ranges)] += src
    return img


def _col2im_runs(col, geom, img):
    """:func:`col2im` for :func:`_rows_are_runs` geometries: each kernel offset's
    columns are added as ONE contiguous run per image and channel into the
    :func:`_flat_rows` layout, after zeroing (in ``col``) the wrapped columns
    that would land on the neighbouring row.  Every pixel still receives its
    contributions in kernel-offset order from zero (adding those zeros changes
    no value), so the sums are Caffe's bit for bit.
    """
    xp = get_array_module(img)
    n, c, h, w = img.shape
    rows, width = col.shape[-2:]
    length, start = _flat_layout(img, geom, 0, rows)
    flat = xp.zeros((n, c, length), dtype=img.dtype)
    kw = geom.kernel[1]
    for k, begin, shift in _runs(geom, width, 0, rows):
        src = col[:, :, k // kw, k % kw]
        _zero_wrapped(src, shift)
        flat[:, :, begin:begin + rows * width] += src.reshape(n, c, rows * width)
    img[...] = flat[:, :, start:start + h * w].reshape(img.shape)
    return img


# --------------------------------------------------------------------------
# Convolution GEMMs over chunks of the batch
# --------------------------------------------------------------------------
def _budget(xp):
    return _COL_BUDGET_CPU if xp is numpy else _COL_BUDGET_GPU


def _chunk_size(xp, num, per_sample):
    return max(1, min(num, _budget(xp) // max(per_sample, 1)))


def _add_bias(out, bias):
    """``out [n, M, *sp] += bias [M]`` (per chunk, while ``out`` is in cache)."""
    if bias is not None:
        out += bias.reshape((-1,) + (1,) * (out.ndim - 2))


def _grouped_matmul(a, b, out):
    """``out[g] = a[g] @ b[g]`` for every group ``g``.

    NumPy: one 2-D GEMM per group.  A stacked ``matmul`` of the same shapes
    ran up to 2x slower in a microbenchmark right after the columns were
    written (2 BLAS threads, 2 cores); it is kept for many tiny groups
    (depthwise), where a call per group would cost more in Python than the
    GEMMs themselves.
    """
    xp = get_array_module(b)
    if xp is not numpy or a.shape[0] > _GROUP_LOOP_MAX:
        return xp.matmul(a, b, out=out)
    for g in range(a.shape[0]):
        numpy.matmul(a[g], b[g], out=out[g])
    return out


class _ColumnChunks:
    """Chunks of a batch and the buffers of one chunk.

    Columns are channel-major, ``[group, C/group*K, n*P]`` for a chunk of ``n``
    samples (the memory of ``[C, *kernel, n, *out]``), so that one GEMM per
    group covers the whole chunk: few large GEMMs instead of one per sample.
    The GEMM's ``[group, M/group, n*P]`` result is then moved into ``[n, M,
    *out]`` (with the bias, in the same pass); a chunk of one sample needs no
    move (the GEMM writes into the top).  A 1x1, stride-1, pad-0 geometry uses
    the image itself as its columns.
    """

    # CPU: 1x1 convolutions go one sample at a time (no copies of the input or
    # the output at all, and the output is still in cache when the bias is added).
    pointwise_step_cpu = 1

    def __init__(self, xp, geom, group, num, channels, col_shape, dtype):
        self.xp, self.geom, self.group = xp, geom, group
        self.channels = channels
        self.col_shape = tuple(col_shape)
        self.p = math.prod(col_shape)
        self.per_group = channels // group * geom.kernel_count
        per_sample = channels * geom.kernel_count * self.p
        if geom.is_pointwise and xp is numpy:
            step = self.pointwise_step_cpu
        else:
            step = _chunk_size(xp, num, per_sample)
        self.chunks = [slice(s, min(s + step, num)) for s in range(0, num, step)]
        # One sample's columns over budget: forward goes by bands of output rows.
        self.band_rows = None
        if not geom.is_pointwise and self.col_shape and per_sample > _budget(xp):
            self.band_rows = max(1, _budget(xp) * self.col_shape[0] // per_sample)
        self.dtype = dtype
        self._buffers = {}

    def _scratch(self, name, shape):
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = self._buffers[name] = self.xp.empty(shape, dtype=self.dtype)
        return buf

    def bands(self):
        """Slices of the first output axis, each with columns within budget (``[None]``: all)."""
        if self.band_rows is None:
            return [None]
        rows, total = self.band_rows, self.col_shape[0]
        return [slice(r, min(r + rows, total)) for r in range(0, total, rows)]

    def _col_buffer(self, n, rows):
        """``[C, *kernel, n, *rows]`` and the same memory as ``[n, C, *kernel, *rows]``."""
        buf = self._scratch("col", (self.channels,) + self.geom.kernel + (n,) + rows)
        return buf, self.xp.moveaxis(buf, len(self.geom.kernel) + 1, 0)

    def columns(self, img, band=None):
        """Columns of ``img [n, C, *in]`` (output rows ``band`` only): ``[group, C/group*K, n*P]``."""
        if self.geom.is_pointwise:
            return self.merged(img, "img")
        rows = self.col_shape if band is None else (band.stop - band.start,) + self.col_shape[1:]
        buf, per_sample = self._col_buffer(img.shape[0], rows)
        im2col(img, self.geom, per_sample, first_row=0 if band is None else band.start)
        return buf.reshape(self.group, self.per_group, -1)

    def column_gradient(self, a, grads, dx):
        """``dx [n, C, *in] = col2im(a @ grads)``, ``a [group, C/group*K, M/group]``."""
        buf, per_sample = self._col_buffer(dx.shape[0], self.col_shape)
        _grouped_matmul(a, grads, buf.reshape(self.group, self.per_group, -1))
        col2im(per_sample, self.geom, dx, scratch_col=True)

    def merged(self, arr, name):
        """``[n, C, *sp]`` as ``[group, C/group, n*P]`` (a copy unless ``n == 1``)."""
        n, c = arr.shape[:2]
        if n == 1:
            return arr.reshape(self.group, -1, self.p)
        buf = self._scratch(name, (c, n, self.p))
        buf[...] = arr.reshape(n, c, -1).swapaxes(0, 1)
        return buf.reshape(self.group, -1, n * self.p)

    def multiply(self, a, b, out, bias=None):
        """``out [n, M, *sp] = a @ b`` per group (``a [group, M/group, K]``,
        ``b [group, K, n*P]``), plus ``bias [M]``.

        ``out``'s spatial rows must be contiguous (a band of rows is).
        """
        n, m = out.shape[:2]
        if n == 1:
            _grouped_matmul(a, b, out.reshape(self.group, m // self.group, -1))
            _add_bias(out, bias)
            return
        result = self._scratch("gemm", (self.group, m // self.group, b.shape[-1]))
        _grouped_matmul(a, b, result)
        moved = result.reshape(m, n, -1).swapaxes(0, 1)
        target = out.reshape(n, m, -1)
        if bias is None:
            target[...] = moved
        else:
            self.xp.add(moved, bias.reshape(1, m, 1), out=target)


def conv_forward(x, weight, geom, group, out, bias=None):
    """``out [N, M, *o] = conv(x [N, C, *i], weight [M, C/group, *k]) + bias [M]``."""
    xp = get_array_module(x)
    m = weight.shape[0]
    if (group == m == x.shape[1] and _rows_are_runs(x, geom, out)
            and math.prod(out.shape[2:]) >= _DEPTHWISE_DIRECT_MIN_PLANE):
        return _depthwise_runs(x, weight, geom, out, bias)
    cc = _ColumnChunks(xp, geom, group, x.shape[0], x.shape[1], out.shape[2:], x.dtype)
    w = weight.reshape(group, m // group, cc.per_group)
    for chunk in cc.chunks:
        for band in cc.bands():
            part = out[chunk] if band is None else out[chunk][:, :, band]
            cc.multiply(w, cc.columns(x[chunk], band), part, bias)
    return out


def conv_backward_data(dy, weight, geom, group, dx, bias=None):
    """Gradient of :func:`conv_forward` w.r.t. its input: overwrite ``dx [N, C, *i]``.

    (Deconvolution's forward; it adds its ``bias [C]``.)
    """
    xp = get_array_module(dy)
    m = weight.shape[0]
    cc = _ColumnChunks(xp, geom, group, dx.shape[0], dx.shape[1], dy.shape[2:], dx.dtype)
    w_t = weight.reshape(group, m // group, cc.per_group).swapaxes(1, 2)
    for chunk in cc.chunks:
        grads = cc.merged(dy[chunk], "dy")               # [group, M/g, n*P]
        if geom.is_pointwise:
            cc.multiply(w_t, grads, dx[chunk], bias)
        else:
            cc.column_gradient(w_t, grads, dx[chunk])
            _add_bias(dx[chunk], bias)
    return dx


def conv_backward_weight(x, dy, geom, group, dw):
    """Add the gradient of :func:`conv_forward` w.r.t. the weight into ``dw``."""
    xp = get_array_module(x)
    cc = _ColumnChunks(xp, geom, group, x.shape[0], x.shape[1], dy.shape[2:], x.dtype)
    shape = (group, dw.shape[0] // group, cc.per_group)
    total = xp.zeros(shape, dtype=dw.dtype)
    part = xp.empty(shape, dtype=dw.dtype)
    for chunk in cc.chunks:
        cols = cc.columns(x[chunk])                      # [group, C/g*K, n*P]
        _grouped_matmul(cc.merged(dy[chunk], "dy"), cols.swapaxes(1, 2), part)
        total += part
    dw += total.reshape(dw.shape)
    return dw
