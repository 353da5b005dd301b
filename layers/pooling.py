"""Pooling family: Pooling (MAX, AVE, STOCHASTIC) and SPP.

Caffe's ``src/caffe/layers/{pooling,spp}_layer.cpp`` (STOCHASTIC from
``pooling_layer.cu``: Caffe has no CPU version).

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

from pycaffe_lite import parallel, rng
from pycaffe_lite.backend import get_array_module
from pycaffe_lite.layer import TRAIN, Layer, register
from pycaffe_lite.proto import caffe_pb2

MAX = caffe_pb2.PoolingParameter.MAX
AVE = caffe_pb2.PoolingParameter.AVE
STOCHASTIC = caffe_pb2.PoolingParameter.STOCHASTIC
CEIL = caffe_pb2.PoolingParameter.CEIL
_METHOD_NAMES = {MAX: "MAX", AVE: "AVE", STOCHASTIC: "STOCHASTIC"}

# Inputs per part of a Pooling batch on the CPU (see _batch_parts).
_PART_ELEMENTS = 1 << 20

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
        if self.by_offsets:
            return xp.stack([self.offset_view(lay, i, j) for i, j in self.offsets()], axis=-1)
        n, c = lay.shape[2:4]
        col = xp.empty((n, c) + self.out + self.kernel, dtype=lay.dtype)
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
    """One pooling (method + geometry) with the state its backward needs."""

    def __init__(self, geom, method, phase):
        self.geom, self.method, self.phase = geom, method, phase
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
        elif self.phase == TRAIN:
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
        if self.method == STOCHASTIC and self.phase != TRAIN:
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


def _check_4d(layer, bottom):
    if bottom[0].num_axes != 4:
        name = layer.param.bottom[0] if layer.param.bottom else "0"
        raise layer.error(f"bottom '{name}' must have 4 axes (num, channels, height, width), "
                          f"got shape {bottom[0].shape}")


def _make_geometry(layer, in_hw, kernel, stride, pad, round_mode):
    geom = PoolGeometry(in_hw, kernel, stride, pad, round_mode)
    if any(o <= 0 for o in geom.out):
        raise layer.error(f"kernel {kernel} is larger than the padded input {in_hw} "
                          f"(pad {pad}): output size {geom.out}")
    return geom


@register("Pooling", "POOLING")
class PoolingLayer(Layer):
    """Spatial pooling over ``[N, C, H, W]`` windows (Caffe's PoolingLayer).

    MAX: ``y = max(window)`` (ties: the first maximum in row-major window
    order; a window with nothing above ``-FLT_MAX`` gives ``-FLT_MAX``), ``dx``
    gets ``dy`` at the winner; optional second top: the winners' flat indices
    ``h * W + w`` as floats.  AVE: ``y = sum(window) / size`` with ``size`` the
    window clipped to ``[-pad, in + pad)`` (padding counts, the overhang does
    not); ``dx += dy / size`` over the window.  STOCHASTIC (no padding): TRAIN
    samples pixel ``p`` with probability ``x_p / sum(window)`` (the first whose
    running sum reaches ``u * sum``, ``u ~ U[0, 1)``) and routes ``dy`` to it;
    TEST gives ``sum(x^2) / sum(x)``.  Top ``[N, C, OH, OW]``, see
    :class:`PoolGeometry`; ``global_pooling`` pools the whole image.
    """

    exact_bottoms = 1
    min_tops = 1
    max_tops = 2

    def setup(self, bottom, top):
        p = self.param.pooling_param
        self.method = p.pool
        self.global_pooling = p.global_pooling
        self.round_mode = p.round_mode
        has = p.HasField
        if len(top) > 1 and self.method != MAX:
            raise self.error(f"only MAX pooling has a second (mask) top, got {len(top)} tops "
                             f"for {_METHOD_NAMES[self.method]}")
        if self.global_pooling:
            if has("kernel_size") or has("kernel_h") or has("kernel_w"):
                raise self.error("with global_pooling: true the kernel size cannot be specified")
        else:
            if has("kernel_size") == (has("kernel_h") or has("kernel_w")):
                raise self.error("kernel size is kernel_size OR kernel_h and kernel_w; not both"
                                 if has("kernel_size") else
                                 "kernel size is missing: give kernel_size or kernel_h and kernel_w")
            if not has("kernel_size") and not (has("kernel_h") and has("kernel_w")):
                raise self.error("for non-square filters both kernel_h and kernel_w are required")
        for name in ("pad", "stride"):
            if has(name) and (has(name + "_h") or has(name + "_w")):
                raise self.error(f"{name} is {name} OR {name}_h and {name}_w; not both")
            if has(name + "_h") != has(name + "_w"):
                raise self.error(f"{name}_h and {name}_w are required together")
        self.kernel = None if self.global_pooling else (
            (p.kernel_size, p.kernel_size) if has("kernel_size") else (p.kernel_h, p.kernel_w))
        self.pad = (p.pad_h, p.pad_w) if has("pad_h") else (p.pad, p.pad)
        self.stride = (p.stride_h, p.stride_w) if has("stride_h") else (p.stride, p.stride)
        if self.kernel is not None and min(self.kernel) <= 0:
            raise self.error(f"kernel dimensions cannot be zero, got {self.kernel}")
        if min(self.stride) <= 0:
            raise self.error(f"stride must be > 0, got {self.stride}")
        if self.global_pooling and (any(self.pad) or self.stride != (1, 1)):
            raise self.error(f"with global_pooling: true only pad = 0 and stride = 1 are "
                             f"allowed, got pad {self.pad} and stride {self.stride}")
        if any(self.pad):
            if self.method not in (MAX, AVE):
                raise self.error(f"padding is implemented only for AVE and MAX pooling, got "
                                 f"pad {self.pad} with {_METHOD_NAMES[self.method]}")
            if self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]:
                raise self.error(f"pad {self.pad} must be smaller than kernel {self.kernel}")
        self.geom = None
        self.poolers, self.parts = [], []

    def reshape(self, bottom, top):
        _check_4d(self, bottom)
        in_hw = bottom[0].shape[2:]
        if self.geom is None or self.geom.in_hw != in_hw:
            kernel = in_hw if self.global_pooling else self.kernel
            self.geom = _make_geometry(self, in_hw, kernel, self.stride, self.pad,
                                       self.round_mode)
            self.poolers = []
        self.parts = _batch_parts(get_array_module(bottom[0].data), bottom[0].shape,
                                  self.method)
        if len(self.poolers) != len(self.parts):
            self.poolers = [Pooler(self.geom, self.method, self.phase) for _ in self.parts]
        shape = bottom[0].shape[:2] + self.geom.out
        for t in top:
            t.reshape(shape)

    def forward(self, bottom, top):
        # TRAIN keeps the MAX winners for backward; TEST finds them again if asked.
        need_idx = len(top) > 1 or self.phase == TRAIN
        x, y = bottom[0].data, top[0].data

        def run(item, _):
            pooler, part = item
            idx = pooler.forward(x[part], y[part], need_idx=need_idx)
            if len(top) > 1:
                top[1].data[part] = self.geom.mask_index(idx)
        parallel.for_each(zip(self.poolers, self.parts), run)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy, dx = top[0].diff, bottom[0].diff
            parallel.for_each(zip(self.poolers, self.parts),
                              lambda item, _: item[0].backward(dy[item[1]], dx[item[1]]))


def _batch_parts(xp, shape, method):
    """Slices of a batch pooled separately: on the CPU, parts of at most
    :data:`_PART_ELEMENTS` inputs (their scratch stays in cache) and at least one
    per thread, run on :mod:`pycaffe_lite.parallel`'s threads.  STOCHASTIC stays
    whole (its random draws come in the batch's order)."""
    n = shape[0]
    if xp is not numpy or method == STOCHASTIC or n <= 1:
        return [slice(0, n)]
    per_sample = max(1, math.prod(shape[1:]))
    step = max(1, min(-(-n // parallel.num_threads()), _PART_ELEMENTS // per_sample))
    return parallel.slices(n, step)


@register("SPP", "SPP")
class SPPLayer(Layer):
    """Spatial pyramid pooling (Caffe's SPPLayer).

    Level ``l < pyramid_height`` pools with ``bins = 2^l``: ``kernel =
    ceil(in / bins)``, ``stride = kernel``, ``pad = (kernel*bins - in + 1) / 2``
    (integer division), by ``spp_param.pool``.  Top: the levels flattened to
    ``[N, C*OH_l*OW_l]`` and concatenated along axis 1; with ``pyramid_height:
    1`` the single level's ``[N, C, OH, OW]``.  Backward: the sum of the
    levels' pooling gradients.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        p = self.param.spp_param
        self.height = int(p.pyramid_height)
        self.method = p.pool
        if self.height < 1:
            raise self.error(f"spp_param.pyramid_height must be >= 1, got {self.height}")
        self.poolers = []
        self._in_shape = None

    def _level_geometry(self, level, in_hw):
        bins = 2 ** level
        kernel = tuple(-(-size // bins) for size in in_hw)
        pad = tuple((k * bins - size + 1) // 2 for k, size in zip(kernel, in_hw))
        if any(pad):
            if self.method not in (MAX, AVE):
                raise self.error(f"level {level} of an input {in_hw} needs padding {pad}, "
                                 f"implemented only for AVE and MAX pooling")
            if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
                raise self.error(f"input {in_hw} is too small for pyramid_height {self.height}: "
                                 f"level {level} needs pad {pad} >= kernel {kernel}")
        return _make_geometry(self, in_hw, kernel, kernel, pad, CEIL)

    def reshape(self, bottom, top):
        _check_4d(self, bottom)
        shape = bottom[0].shape
        if shape != self._in_shape:
            self.poolers = [Pooler(self._level_geometry(level, shape[2:]), self.method,
                                   self.phase) for level in range(self.height)]
            self._in_shape = shape
        if self.height == 1:
            top[0].reshape(shape[:2] + self.poolers[0].geom.out)
        else:
            width = sum(shape[1] * math.prod(pl.geom.out) for pl in self.poolers)
            top[0].reshape((shape[0], width))

    def _level_slices(self, shape):
        start = 0
        for pooler in self.poolers:
            size = shape[1] * math.prod(pooler.geom.out)
            yield pooler, slice(start, start + size), shape[:2] + pooler.geom.out
            start += size

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.height == 1:
            self.poolers[0].forward(x, top[0].data)
            return
        xp = get_array_module(x)
        for pooler, cols, shape in self._level_slices(x.shape):
            out = xp.empty(shape, dtype=x.dtype)
            pooler.forward(x, out)
            top[0].data[:, cols] = out.reshape(shape[0], -1)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        if self.height == 1:
            self.poolers[0].backward(top[0].diff, dx)
            return
        xp = get_array_module(dx)
        part = xp.empty_like(dx)
        for level, (pooler, cols, shape) in enumerate(self._level_slices(dx.shape)):
            dy = xp.ascontiguousarray(top[0].diff[:, cols]).reshape(shape)
            pooler.backward(dy, dx if level == 0 else part)
            if level:
                dx += part
