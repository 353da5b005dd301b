"""Pooling family: Pooling (MAX, AVE, STOCHASTIC) and SPP.

Caffe's ``src/caffe/layers/{pooling,spp}_layer.cpp`` (STOCHASTIC from
``pooling_layer.cu``: Caffe has no CPU version).

The layers read their parameters, size their tops and split the batch for
the thread pool; the windows (padded and phase-split layouts, running
reductions, Caffe's order of gradient sums) live in the engine
:mod:`pycaffe_lite.engines.pooling` behind ``PoolGeometry`` and ``Pooler``.
"""
import math

import numpy

from pycaffe_lite import parallel
from pycaffe_lite.backend import get_array_module
from pycaffe_lite.engines.pooling import AVE, CEIL, MAX, STOCHASTIC, PoolGeometry, Pooler
from pycaffe_lite.layer import TRAIN, Layer, register

_METHOD_NAMES = {MAX: "MAX", AVE: "AVE", STOCHASTIC: "STOCHASTIC"}

# Inputs per part of a Pooling batch on the CPU (see _batch_parts).
_PART_ELEMENTS = 1 << 20


def _check_4d(layer, bottom):
    if bottom[0].num_axes != 4:
        raise layer.error(f"bottom '{layer.bottom_name(0)}' must have 4 axes (num, channels, "
                          f"height, width), got shape {bottom[0].shape}")


def _make_geometry(layer, in_hw, kernel, stride, pad, round_mode):
    # Past in + 2*pad every stride gives the same windows (all after the first start
    # beyond the padded input) and outputs, but the engine's padded layout spans
    # (out - 1) * stride + kernel: it gets the smallest such stride.
    stride = tuple(min(s, i + 2 * p + 1) for s, i, p in zip(stride, in_hw, pad))
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
            train = self.phase == TRAIN
            self.poolers = [Pooler(self.geom, self.method, train) for _ in self.parts]
        shape = bottom[0].shape[:2] + self.geom.out
        for t in top:
            t.reshape(shape)

    def forward(self, bottom, top):
        # TRAIN keeps the MAX winners for backward; TEST finds them again if asked.
        need_idx = len(top) > 1 or self.phase == TRAIN
        if not bottom[0].count:     # no images or channels: Caffe's loops run zero times
            return
        x, y = bottom[0].data, top[0].data

        def run(item, _):
            pooler, part = item
            idx = pooler.forward(x[part], y[part], need_idx=need_idx)
            if len(top) > 1:
                top[1].data[part] = self.geom.mask_index(idx)
        parallel.for_each(zip(self.poolers, self.parts), run)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0] and bottom[0].count:
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
                                   self.phase == TRAIN) for level in range(self.height)]
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
