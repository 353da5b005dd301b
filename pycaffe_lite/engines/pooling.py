"""The window engine of the pooling family: geometry, layouts and reductions.

Caffe's ``src/caffe/layers/pooling_layer.{cpp,cu}`` loops.  The layers
(``layers/pooling.py``: Pooling, SPP) read their parameters and call only
this interface:

* ``PoolGeometry(in_hw, kernel, stride, pad, round_mode)``: Caffe's output
  shape (``out``) and MAX mask indices (``mask_index``).
* ``Pooler(geom, method, train)``: ``forward(x, out, need_idx)`` (returns the
  MAX winners when asked) and ``backward(dy, dx)``, keeping what backward
  needs between the two.

The path is chosen from the geometry and the arrays (``get_array_module``);
a CuPy or compiled kernel plugs in behind ``Pooler``, measured to win.

Windows.  Output ``(oh, ow)`` pools rows ``oh*stride_h - pad_h + i`` and
columns ``ow*stride_w - pad_w + j`` for kernel offsets ``(i, j)``, clipped to
the image (MAX, STOCHASTIC) or to ``[-pad, in + pad)`` for AVE's divisor.  The
bottom is laid out once, padded with a fill value that cannot win (``-inf`` for
MAX, ``0`` for sums); then either

* **offsets** (small kernels, the usual case): a loop over the ``kh*kw``
  kernel offsets, each a slice of shape ``[N, C, OH, OW]``, with running
  reductions.  For stride > 1 the bottom is first split into its
  ``stride_h*stride_w`` phases (``B[a, b, n, c, u, v] = x_pad[n, c, u*sh + a,
  v*sw + b]``) so that every offset slice is contiguous along its rows.
  Forward values run over whole rows of that layout (``wide_view``, one long
  run per image and channel) and drop the junk columns once at the end; the
  layout and that result are scratch kept from call to call.
* **windows** (large kernels, few outputs: global pooling, SPP): a loop over
  the ``OH*OW`` outputs gathering the windows into ``[N, C, OH, OW, K]`` and
  reducing along the last axis.

Backward adds each window's contribution in Caffe's order (outputs in
row-major order), so pooled gradients match Caffe's bit for bit.
"""
import math

import numpy

from pycaffe_lite import memory, rng
from pycaffe_lite.backend import get_array_module
from pycaffe_lite.proto import caffe_pb2

__all__ = ["PoolGeometry", "Pooler", "MAX", "AVE", "STOCHASTIC", "CEIL"]

MAX = caffe_pb2.PoolingParameter.MAX
AVE = caffe_pb2.PoolingParameter.AVE
STOCHASTIC = caffe_pb2.PoolingParameter.STOCHASTIC
CEIL = caffe_pb2.PoolingParameter.CEIL

# Caffe initialises MAX pooling with -FLT_MAX and STOCHASTIC TEST sums with FLT_MIN.
FLT_MAX = float(numpy.finfo(numpy.float32).max)
FLT_MIN = float(numpy.finfo(numpy.float32).tiny)


def _index_dtype(count):
    """Smallest signed integer type holding -1 .. count."""
    for dtype in (numpy.int8, numpy.int16, numpy.int32):
        if count < numpy.iinfo(dtype).max:
            return dtype
    return numpy.int64


class PoolGeometry:
    """Caffe's pooling shapes for one ``[N, C, H, W]`` bottom.

    ``out``: ``ceil((in + 2*pad - kernel) / stride) + 1`` (``floor`` with
    ``round_mode: FLOOR``); with any padding, a last window that would start
    at or beyond ``in + pad`` is dropped.
    """

    def __init__(self, in_hw, kernel, stride, pad, round_mode=CEIL):
        self.in_hw = tuple(int(v) for v in in_hw)
        self.kernel = tuple(int(v) for v in kernel)
        self.stride = tuple(int(v) for v in stride)
        self.pad = tuple(int(v) for v in pad)
        rounding = math.ceil if round_mode == CEIL else math.floor
        out = [rounding((i + 2 * p - k) / s) + 1
               for i, k, s, p in zip(self.in_hw, self.kernel, self.stride, self.pad)]
        if any(self.pad):
            out = [o - 1 if (o - 1) * s >= i + p else o
                   for o, i, s, p in zip(out, self.in_hw, self.stride, self.pad)]
        self.out = tuple(out)
        self.count = self.kernel[0] * self.kernel[1]
        # Loop over whichever is shorter: kernel offsets or output positions.
        self.by_offsets = self.count <= self.out[0] * self.out[1]
        self.phases = self.stride if self.by_offsets else (1, 1)
        # Padded extent: every window and every input pixel.
        self.extent = tuple(max((o - 1) * s + k, i + p)
                            for o, s, k, i, p in zip(self.out, self.stride, self.kernel,
                                                     self.in_hw, self.pad))

    def offsets(self):
        return [(i, j) for i in range(self.kernel[0]) for j in range(self.kernel[1])]

    # --- the padded (and phase-split) layout ------------------------------
    def _trivial(self):
        return self.phases == (1, 1) and not any(self.pad) and self.extent == self.in_hw

    def _phase_slices(self, a, b):
        """For phase (a, b): per axis, (slice of the layout, slice of the image)."""
        slices = []
        for phase, size, pad, step in zip((a, b), self.in_hw, self.pad, self.phases):
            first = -((phase - pad) // step)          # first u with u*step + phase >= pad
            stop = -((phase - pad - size) // step)    # first u with u*step + phase >= pad + size
            start = first * step + phase - pad
            slices.append((slice(first, stop),
                           slice(start, start + (stop - first - 1) * step + 1, step)))
        return slices

    def _layout_shape(self, x):
        sh, sw = self.phases
        # One spare row (filled) for the last rows of wide_view.
        return (sh, sw) + x.shape[:2] + (-(-self.extent[0] // sh) + 1, -(-self.extent[1] // sw))

    def layout(self, x, fill, buffer=None):
        """``x [N, C, H, W]`` as ``[ph, pw, N, C, Hq, Wq]``, padded with ``fill``.

        ``buffer``: the array a previous call returned, reused if it fits.
        """
        if self._trivial():
            return x[None, None]
        shape = self._layout_shape(x)
        out = buffer
        if out is None or out.shape != shape or out.dtype != x.dtype:
            out = get_array_module(x).empty(shape, dtype=x.dtype)
        for a in range(self.phases[0]):
            for b in range(self.phases[1]):
                (lu, li), (lv, lj) = self._phase_slices(a, b)
                phase = out[a, b]
                phase[:, :, lu, lv] = x[:, :, li, lj]
                # Only the border around the image needs the fill value.
                phase[:, :, :lu.start] = fill
                phase[:, :, lu.stop:] = fill
                phase[:, :, lu, :lv.start] = fill
                phase[:, :, lu, lv.stop:] = fill
        return out

    def gradient_layout(self, dx):
        """A zeroed accumulator in the layout of :meth:`layout` (``dx`` itself if trivial)."""
        if self._trivial():
            dx[...] = 0
            return dx[None, None]
        return get_array_module(dx).zeros(self._layout_shape(dx), dtype=dx.dtype)

    def unlayout(self, acc, dx):
        """Write the image part of ``acc`` (from :meth:`gradient_layout`) into ``dx``."""
        if self._trivial():
            return
        for a in range(self.phases[0]):
            for b in range(self.phases[1]):
                (lu, li), (lv, lj) = self._phase_slices(a, b)
                dx[:, :, li, lj] = acc[a, b, :, :, lu, lv]

    def offset_view(self, lay, i, j):
        """``[N, C, OH, OW]``: pixel ``(i, j)`` of every window (offsets layout)."""
        (sh, sw), (oh, ow) = self.phases, self.out
        return lay[i % sh, j % sw, :, :, i // sh:i // sh + oh, j // sw:j // sw + ow]

    @property
    def has_wide_views(self):
        return self.by_offsets and not self._trivial()

    def wide_view(self, lay, i, j):
        """``[N*C, OH*Wq]``: pixel ``(i, j)`` of every window, whole layout rows.

        Output row ``oh`` reads ``Wq`` layout columns from ``j // sw``: the
        first ``OW`` are its windows', the rest junk that :meth:`crop` drops.
        Long contiguous rows make a pass about 1.4x as fast as over the short
        rows of :meth:`offset_view` (measured on AlexNet's pool1).  Needs a
        layout of its own (not trivial).
        """
        (sh, sw), oh = self.phases, self.out[0]
        phase = lay[i % sh, j % sw]
        n, c, hq, wq = phase.shape
        start = (i // sh) * wq + j // sw
        return phase.reshape(n * c, hq * wq)[:, start:start + oh * wq]

    def crop(self, wide, like):
        """The ``[N, C, OH, OW]`` outputs within the result of passes over :meth:`wide_view`."""
        return wide.reshape(like.shape[:3] + (-1,))[..., :like.shape[3]]

    def window_view(self, lay, oh, ow):
        """``[N, C, kh, kw]``: window ``(oh, ow)`` (windows layout)."""
        (sh, sw), (kh, kw) = self.stride, self.kernel
        return lay[0, 0, :, :, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw]

    # --- gathered windows ----------------------------------------------------
    def gather(self, lay):
        """All windows as ``[N, C, OH, OW, K]`` (kernel offsets row-major)."""
        xp = get_array_module(lay)
        n, c = lay.shape[2:4]
        shape = (n, c) + self.out + self.kernel
        # the window copies can outgrow the input many times over (large overlapping
        # windows): checked like a blob
        memory.check(math.prod(shape) * lay.dtype.itemsize, xp, shape,
                     what="the pooling windows")
        if self.by_offsets:
            return xp.stack([self.offset_view(lay, i, j) for i, j in self.offsets()], axis=-1)
        col = xp.empty(shape, dtype=lay.dtype)
        for oh in range(self.out[0]):
            for ow in range(self.out[1]):
                col[:, :, oh, ow] = self.window_view(lay, oh, ow)
        return col.reshape((n, c) + self.out + (self.count,))

    def scatter(self, dcol, dx):
        """Overwrite ``dx`` with the sum of ``dcol [N, C, OH, OW, K]`` onto the pixels."""
        acc = self.gradient_layout(dx)
        if self.by_offsets:
            for k, (i, j) in reversed(list(enumerate(self.offsets()))):
                self.offset_view(acc, i, j)[...] += dcol[..., k]
        else:
            dcol = dcol.reshape(dcol.shape[:4] + self.kernel)
            for oh in range(self.out[0]):
                for ow in range(self.out[1]):
                    self.window_view(acc, oh, ow)[...] += dcol[:, :, oh, ow]
        self.unlayout(acc, dx)

    # --- Caffe's per-window constants ---------------------------------------
    def _starts(self, axis):
        return numpy.arange(self.out[axis]) * self.stride[axis] - self.pad[axis]

    def ave_divisor(self, xp, dtype):
        """``[OH, OW]``: AVE's window size, clipped to ``[-pad, in + pad)``."""
        sizes = []
        for axis in (0, 1):
            start = self._starts(axis)
            end = numpy.minimum(start + self.kernel[axis], self.in_hw[axis] + self.pad[axis])
            sizes.append(end - start)
        return xp.asarray(numpy.outer(sizes[0], sizes[1]).astype(dtype))

    def mask_index(self, idx):
        """Caffe's MAX mask: ``h * W + w`` of each window's winner (-1: none), as floats."""
        xp = get_array_module(idx)
        kw, width = self.kernel[1], self.in_hw[1]
        flat = idx.astype(numpy.int64)
        i, j = flat // kw, flat % kw
        h = xp.asarray(self._starts(0))[:, None] + i
        w = xp.asarray(self._starts(1))[None, :] + j
        return xp.where(idx >= 0, h * width + w, -1)


class Pooler:
    """One pooling (method + geometry) with the state its backward needs.

    ``train``: STOCHASTIC samples (TRAIN) or takes the weighted average (TEST).
    """

    def __init__(self, geom, method, train):
        self.geom, self.method, self.train = geom, method, train
        self.idx = None          # MAX / STOCHASTIC TRAIN: winning kernel offset, -1 none
        self.x = None            # bottom data kept where backward recomputes from it
        self._lay = self._wide = None     # scratch reused from call to call

    # --- forward ---------------------------------------------------------------
    def forward(self, x, out, need_idx=True):
        """``out [N, C, OH, OW]`` from ``x [N, C, H, W]``; return the MAX winners if asked."""
        g = self.geom
        xp = get_array_module(x)
        self.x, self.idx = x, None
        if self.method == MAX:
            if g.has_wide_views:
                lay = self._lay = g.layout(x, -numpy.inf, self._lay)
                wide, direct = self._wide_buffer(lay, out)
                wide[...] = -FLT_MAX
                for i, j in g.offsets():
                    xp.fmax(wide, g.wide_view(lay, i, j), out=wide)
                if not direct:
                    out[...] = g.crop(wide, out)
                if need_idx:
                    self.idx = self._first_winner(lay, out)
            elif g.by_offsets:
                lay = g.layout(x, -numpy.inf)
                out[...] = -FLT_MAX
                for i, j in g.offsets():
                    xp.fmax(out, g.offset_view(lay, i, j), out=out)
                if need_idx:
                    self.idx = self._first_winner(lay, out)
            else:
                col = g.gather(g.layout(x, -numpy.inf))
                out[...] = xp.maximum(col.max(axis=-1), -FLT_MAX)
                self.idx = self._first_winner_col(col, out)
        elif self.method == AVE:
            divisor = g.ave_divisor(xp, x.dtype)
            if g.has_wide_views:
                lay = self._lay = g.layout(x, 0, self._lay)
                wide, direct = self._wide_buffer(lay, out)
                wide[...] = 0
                for i, j in g.offsets():
                    wide += g.wide_view(lay, i, j)
                xp.divide(out if direct else g.crop(wide, out), divisor, out=out)
            elif g.by_offsets:
                lay = g.layout(x, 0)
                out[...] = 0
                for i, j in g.offsets():
                    out += g.offset_view(lay, i, j)
                out /= divisor
            else:
                out[...] = g.gather(g.layout(x, 0)).sum(axis=-1) / divisor
        elif self.train:
            self._stochastic_sample(x, out)
        else:
            col = g.gather(g.layout(x, 0))
            out[...] = (col * col).sum(axis=-1) / (col.sum(axis=-1) + FLT_MIN)
        return self.idx

    def _wide_buffer(self, lay, out):
        """Where passes over wide views accumulate, and whether that is ``out`` itself
        (layout rows exactly as wide as output rows: no junk columns to drop)."""
        shape = (lay.shape[2] * lay.shape[3], self.geom.out[0] * lay.shape[5])
        if lay.shape[5] == out.shape[3] and out.flags.c_contiguous:
            return out.reshape(shape), True
        if self._wide is None or self._wide.shape != shape or self._wide.dtype != lay.dtype:
            self._wide = get_array_module(lay).empty(shape, dtype=lay.dtype)
        return self._wide, False

    def _first_winner(self, lay, best):
        """First kernel offset (row-major) whose value equals the window's max."""
        g = self.geom
        xp = get_array_module(best)
        dtype = _index_dtype(g.count)
        idx = xp.full(best.shape, -1, dtype=dtype)
        for k, (i, j) in reversed(list(enumerate(g.offsets()))):
            hit = (g.offset_view(lay, i, j) == best).view(numpy.int8)
            idx += hit * (dtype(k) - idx)
        valid = (best > -FLT_MAX).view(numpy.int8)      # nothing beat -FLT_MAX: no winner
        return idx * valid + (valid - 1)

    def _first_winner_col(self, col, best):
        xp = get_array_module(col)
        hit = (col == best[..., None]).view(numpy.int8)   # argmax over bools: not on every backend
        idx = xp.argmax(hit, axis=-1).astype(_index_dtype(self.geom.count))
        return xp.where(best > -FLT_MAX, idx, -1)

    def _stochastic_sample(self, x, out):
        """Caffe's TRAIN rule: pick the first pixel whose running sum reaches ``u * sum``."""
        g = self.geom
        xp = get_array_module(x)
        col = g.gather(g.layout(x, 0))
        running = xp.cumsum(col, axis=-1)
        u = xp.asarray(rng.generator().random(out.shape).astype(x.dtype))
        reached = running >= (u * running[..., -1])[..., None]
        found = reached.any(axis=-1)
        pick = xp.argmax(reached.view(numpy.int8), axis=-1)
        value = xp.take_along_axis(col, pick[..., None], axis=-1)[..., 0]
        out[...] = xp.where(found, value, 0)
        self.idx = xp.where(found, pick, -1).astype(_index_dtype(g.count))

    # --- backward --------------------------------------------------------------
    def backward(self, dy, dx):
        """Overwrite ``dx`` with the gradient for top diff ``dy``."""
        g = self.geom
        xp = get_array_module(dy)
        if self.method == AVE:
            share = dy / g.ave_divisor(xp, dy.dtype)
            if g.by_offsets:
                acc = g.gradient_layout(dx)
                for i, j in reversed(g.offsets()):
                    g.offset_view(acc, i, j)[...] += share
                g.unlayout(acc, dx)
            else:
                g.scatter(xp.broadcast_to(share[..., None], share.shape + (g.count,)), dx)
            return
        if self.method == STOCHASTIC and not self.train:
            # Caffe has no gradient here (it reuses stale TRAIN samples); this is
            # the derivative of the TEST output sum(x^2) / sum(x).
            col = g.gather(g.layout(self.x, 0))
            total = col.sum(axis=-1, keepdims=True) + FLT_MIN
            squares = (col * col).sum(axis=-1, keepdims=True)
            g.scatter(dy[..., None] * (2 * col * total - squares) / (total * total), dx)
            return
        if self.idx is None:                      # MAX forward skipped the winners
            self.forward(self.x, xp.empty_like(dy), need_idx=True)
        if g.by_offsets:
            acc = g.gradient_layout(dx)
            for k, (i, j) in reversed(list(enumerate(g.offsets()))):
                g.offset_view(acc, i, j)[...] += dy * (self.idx == k)
            g.unlayout(acc, dx)
        else:
            picks = self.idx[..., None] == xp.arange(g.count, dtype=self.idx.dtype)
            g.scatter(dy[..., None] * picks, dx)
