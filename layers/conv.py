"""Convolution family: Convolution, Deconvolution, Im2col, InnerProduct.

Caffe's ``src/caffe/layers/{base_conv,conv,deconv,im2col,inner_product}_layer.cpp``
and ``src/caffe/util/im2col.cpp``.

Column layout.  ``im2col`` turns an image batch ``[n, C, *spatial]`` into
columns ``[n, C, *kernel, *out]``: per sample exactly Caffe's channel-major
column buffer ``[C * prod(kernel), prod(out)]`` (and the Im2col layer's top).
Both ``im2col`` and ``col2im`` loop over the ``prod(kernel)`` kernel offsets (a
handful) and move whole strided slices, never single elements.

Speed.  A convolution is, per sample and group, the GEMM ``W[M, C*K] @
col[C*K, P]``; one broadcasting ``matmul`` runs them for a chunk of samples
and writes straight into the top (no transposes).  The batch is processed in
chunks whose column buffer holds about ``_COL_BUDGET_*`` elements (on the CPU
a few MiB, so the buffer is still in cache when the GEMM reads it, and the
bias is added while the output is; on a GPU the whole batch at once).  When a
single sample's columns exceed the budget (large images), forward goes by bands
of output rows.  A 1x1, stride-1, pad-0 convolution uses the input itself as
its columns.  Measured on a 2-core machine: a 3x3 convolution 64 -> 64
channels on 16 x 56 x 56 runs at about 2/3 of NumPy's float32 GEMM peak.

The weight used by forward and by the bottom gradient comes from
``effective_weight()``; the weight gradient always accumulates into
``blobs[0].diff``.  BinaryConvolution / BinaryInnerProduct override only that.
"""
import itertools
import math

import numpy

from pycaffe_lite.backend import get_array_module
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.fillers import fill
from pycaffe_lite.layer import Layer, register

# Elements of one column buffer chunk.  CPU: ~8 MiB in float32, measured best on
# a 2-core machine (larger chunks fall out of cache, smaller ones make thin GEMMs).
_COL_BUDGET_CPU = 1 << 21
_COL_BUDGET_GPU = 1 << 26


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


def col2im(col, geom, img):
    """Overwrite ``img [n, C, *in]`` with the sum of ``col``'s entries onto their pixels.

    The adjoint of :func:`im2col`; kernel offsets are added in Caffe's order.
    """
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


# --------------------------------------------------------------------------
# Batched convolution GEMMs
# --------------------------------------------------------------------------
def _budget(xp):
    return _COL_BUDGET_CPU if xp is numpy else _COL_BUDGET_GPU


def _chunk_size(xp, num, per_sample):
    return max(1, min(num, _budget(xp) // max(per_sample, 1)))


def _add_bias(out, bias):
    """``out [n, M, *sp] += bias [M]`` (per chunk, while ``out`` is in cache)."""
    if bias is not None:
        out += bias.reshape((-1,) + (1,) * (out.ndim - 2))


class _ColumnChunks:
    """Chunks of a batch and the column buffer of one chunk.

    Forward and the input gradient use per-sample columns ``[n, group,
    C/group*K, P]`` (one GEMM per sample and group, written straight into
    ``[n, M, *out]``); the weight gradient uses channel-major columns ``[group,
    C/group*K, n*P]`` so that one GEMM per group contracts over samples and
    positions at once.  A 1x1, stride-1, pad-0 geometry uses the image itself.
    """

    # CPU: 1x1 convolutions go one sample at a time (no column copies at all,
    # and the output is still in cache when the bias is added).
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
        self._buffer = None

    def _reuse(self, shape):
        if self._buffer is None or self._buffer.shape != shape:
            self._buffer = self.xp.empty(shape, dtype=self.dtype)
        return self._buffer

    def buffer(self, n):
        """A per-sample column buffer ``[n, C, *kernel, *out]``."""
        return self._reuse((n, self.channels) + self.geom.kernel + self.col_shape)

    def grouped(self, arr, p=None):
        """``[n, C, ...]`` columns or images viewed as ``[n, group, rows, P]``."""
        return arr.reshape(arr.shape[0], self.group, -1, p or self.p)

    def bands(self):
        """Slices of the first output axis, each with columns within budget."""
        rows = self.band_rows or self.col_shape[0]
        return [slice(r, min(r + rows, self.col_shape[0])) for r in range(0, self.col_shape[0], rows)]

    def band_columns(self, img, band):
        """Per-sample columns of output rows ``band`` only: ``[n, group, C/group*K, P_band]``."""
        rows = (band.stop - band.start,) + self.col_shape[1:]
        shape = (img.shape[0], self.channels) + self.geom.kernel + rows
        cols = im2col(img, self.geom, self._reuse(shape), first_row=band.start)
        return self.grouped(cols, math.prod(rows))

    def columns(self, img):
        """Per-sample columns of ``img [n, C, *in]``: ``[n, group, C/group*K, P]``."""
        if self.geom.is_pointwise:
            return self.grouped(img)
        return self.grouped(im2col(img, self.geom, self.buffer(img.shape[0])))

    def merged(self, arr):
        """``[n, C, *sp]`` as ``[group, C/group, n*P]`` (a copy unless ``n == 1``)."""
        n = arr.shape[0]
        if n > 1:
            arr = self.xp.ascontiguousarray(arr.reshape(n, arr.shape[1], -1).swapaxes(0, 1))
        return arr.reshape(self.group, -1, n * self.p)

    def merged_columns(self, img):
        """Channel-major columns of ``img [n, C, *in]``: ``[group, C/group*K, n*P]``."""
        if self.geom.is_pointwise:
            return self.merged(img)
        n, k = img.shape[0], len(self.geom.kernel)
        buf = self._reuse((self.channels,) + self.geom.kernel + (n,) + self.col_shape)
        im2col(img, self.geom, self.xp.moveaxis(buf, k + 1, 0))
        return buf.reshape(self.group, self.per_group, n * self.p)


def conv_forward(x, weight, geom, group, out, bias=None):
    """``out [N, M, *o] = conv(x [N, C, *i], weight [M, C/group, *k]) + bias [M]``."""
    xp = get_array_module(x)
    m = weight.shape[0]
    cc = _ColumnChunks(xp, geom, group, x.shape[0], x.shape[1], out.shape[2:], x.dtype)
    w = weight.reshape(group, m // group, cc.per_group)
    for chunk in cc.chunks:
        if cc.band_rows is None:
            xp.matmul(w, cc.columns(x[chunk]), out=cc.grouped(out[chunk]))
            _add_bias(out[chunk], bias)
            continue
        for band in cc.bands():
            part = out[chunk][:, :, band]                 # a view; its rows stay contiguous
            cols = cc.band_columns(x[chunk], band)
            xp.matmul(w, cols, out=cc.grouped(part, cols.shape[-1]))
            _add_bias(part, bias)
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
        grads = cc.grouped(dy[chunk])
        if geom.is_pointwise:
            xp.matmul(w_t, grads, out=cc.grouped(dx[chunk]))
        else:
            cols = cc.buffer(grads.shape[0])
            xp.matmul(w_t, grads, out=cc.grouped(cols))
            col2im(cols, geom, dx[chunk])
        _add_bias(dx[chunk], bias)
    return dx


def conv_backward_weight(x, dy, geom, group, dw):
    """Add the gradient of :func:`conv_forward` w.r.t. the weight into ``dw``."""
    xp = get_array_module(x)
    cc = _ColumnChunks(xp, geom, group, x.shape[0], x.shape[1], dy.shape[2:], x.dtype)
    total = xp.zeros((group, dw.shape[0] // group, cc.per_group), dtype=dw.dtype)
    for chunk in cc.chunks:
        cols = cc.merged_columns(x[chunk])               # [group, C/g*K, n*P]
        total += xp.matmul(cc.merged(dy[chunk]), cols.swapaxes(1, 2))
    dw += total.reshape(dw.shape)
    return dw


# --------------------------------------------------------------------------
# Parameters shared by Convolution, Deconvolution and Im2col
# --------------------------------------------------------------------------
def _spatial_values(layer, cp, name, num_spatial, default):
    """One of kernel_size / stride / pad / dilation, per spatial axis (Caffe's rules)."""
    repeated = list(getattr(cp, name))
    short = {"kernel_size": "kernel", "stride": "stride", "pad": "pad"}.get(name)
    if short is not None and (cp.HasField(short + "_h") or cp.HasField(short + "_w")):
        if num_spatial != 2:
            raise layer.error(f"{short}_h & {short}_w can only be used for 2D convolution, "
                              f"got {num_spatial} spatial axes")
        if repeated:
            raise layer.error(f"either {name} or {short}_h/w should be specified; not both")
        values = [getattr(cp, short + "_h"), getattr(cp, short + "_w")]
    else:
        if len(repeated) not in ((0, 1, num_spatial) if default is not None else (1, num_spatial)):
            raise layer.error(f"{name} must be specified once, or once per spatial dimension "
                              f"({name} specified {len(repeated)} times; {num_spatial} "
                              f"spatial dims)")
        if not repeated:
            values = [default] * num_spatial
        else:
            values = [repeated[0 if len(repeated) == 1 else i] for i in range(num_spatial)]
    if name != "pad" and any(v <= 0 for v in values):
        raise layer.error(f"{name} dimensions must be nonzero, got {values}")
    return tuple(int(v) for v in values)


def _read_geometry(layer, cp, bottom):
    """channel axis, number of spatial axes and the ConvGeometry of a conv-like layer."""
    try:
        channel_axis = bottom[0].canonical_axis(cp.axis)
    except CaffeError:
        raise layer.error(f"convolution_param.axis {cp.axis} out of range for bottom "
                          f"'{_bottom_name(layer, 0)}' of shape {bottom[0].shape}") from None
    num_spatial = bottom[0].num_axes - channel_axis - 1
    geom = ConvGeometry(
        _spatial_values(layer, cp, "kernel_size", num_spatial, None),
        _spatial_values(layer, cp, "stride", num_spatial, 1),
        _spatial_values(layer, cp, "pad", num_spatial, 0),
        _spatial_values(layer, cp, "dilation", num_spatial, 1))
    return channel_axis, num_spatial, geom


def _bottom_name(layer, i):
    return layer.param.bottom[i] if len(layer.param.bottom) > i else str(i)


def _check_out_shape(layer, in_shape, geom, out_shape, i):
    if any(o <= 0 for o in out_shape):
        raise layer.error(f"bottom '{_bottom_name(layer, i)}' spatial shape {tuple(in_shape)} "
                          f"is too small for kernel extent {geom.extent}, pad {geom.pad}, "
                          f"stride {geom.stride}: output shape {tuple(out_shape)}")


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------
class _ConvolutionBase(Layer):
    """Caffe's BaseConvolutionLayer: parameters, weights, shapes.

    Each bottom ``i`` gives top ``i`` with the same weights.
    """

    min_bottoms = 1
    min_tops = 1
    equal_bottom_top = True
    reverse_dimensions = False  # Deconvolution: True

    def setup(self, bottom, top):
        cp = self.param.convolution_param
        self.channel_axis, self.num_spatial, self.geom = _read_geometry(self, cp, bottom)
        self.channels = bottom[0].shape[self.channel_axis]
        self.num_output = int(cp.num_output)
        self.group = int(cp.group)
        if self.num_output <= 0:
            raise self.error(f"convolution_param.num_output must be > 0, got {self.num_output}")
        if self.group <= 0 or self.channels % self.group:
            raise self.error(f"bottom '{_bottom_name(self, 0)}' has {self.channels} channels, "
                             f"not a multiple of group {self.group}")
        if self.num_output % self.group:
            raise self.error(f"num_output {self.num_output} should be a multiple of group "
                             f"{self.group}")
        if self.reverse_dimensions:
            out_c, in_c = self.channels, self.num_output
        else:
            out_c, in_c = self.num_output, self.channels
        self.bias_term = bool(cp.bias_term)
        weight = self.make_blob((out_c, in_c // self.group) + self.geom.kernel)
        fill(weight, cp.weight_filler)
        self.blobs = [weight]
        if self.bias_term:
            bias = self.make_blob((self.num_output,))
            fill(bias, cp.bias_filler)
            self.blobs.append(bias)
        self._weight = None

    def reshape(self, bottom, top):
        first = bottom[0]
        if first.num_axes != self.channel_axis + 1 + self.num_spatial:
            raise self.error(f"bottom num_axes may not change: bottom '{_bottom_name(self, 0)}' "
                             f"has shape {first.shape}, expected "
                             f"{self.channel_axis + 1 + self.num_spatial} axes")
        if first.shape[self.channel_axis] != self.channels:
            raise self.error(f"input size incompatible with convolution kernel: bottom "
                             f"'{_bottom_name(self, 0)}' has {first.shape[self.channel_axis]} "
                             f"channels, expected {self.channels}")
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != first.shape:
                raise self.error(f"shape mismatch - bottom '{_bottom_name(self, 0)}': "
                                 f"{first.shape} vs. bottom '{_bottom_name(self, i)}': {b.shape}")
        in_spatial = first.shape[self.channel_axis + 1:]
        out_spatial = self.output_spatial(in_spatial)
        _check_out_shape(self, in_spatial, self.geom, out_spatial, 0)
        shape = first.shape[:self.channel_axis] + (self.num_output,) + tuple(out_spatial)
        for t in top:
            t.reshape(shape)

    def output_spatial(self, in_spatial):
        raise NotImplementedError

    def effective_weight(self):
        """The weight forward and the bottom gradient use (BinaryConvolution: sign * alpha)."""
        return self.blobs[0].data

    def _as_batch(self, arr):
        """View ``[*lead, C, *spatial]`` as ``[num, C, *spatial]``."""
        lead = arr.shape[:self.channel_axis]
        return arr.reshape((math.prod(lead),) + arr.shape[self.channel_axis:])

    def _bias_gradient(self, dy):
        if self.bias_term and self.needs_param_gradient(1):
            self.blobs[1].diff += dy.sum(axis=(0,) + tuple(range(2, dy.ndim)))

    def forward(self, bottom, top):
        self._weight = self.effective_weight()
        for b, t in zip(bottom, top):
            bias = self.blobs[1].data if self.bias_term else None
            self._forward_gemm(self._as_batch(b.data), self._weight, self._as_batch(t.data), bias)

    def backward(self, top, propagate_down, bottom):
        weight = self._weight if self._weight is not None else self.effective_weight()
        for i, (t, b) in enumerate(zip(top, bottom)):
            dy = self._as_batch(t.diff)
            self._bias_gradient(dy)
            if self.needs_param_gradient(0):
                self._weight_gradient(self._as_batch(b.data), dy, self.blobs[0].diff)
            if propagate_down[i]:
                self._backward_gemm(dy, weight, self._as_batch(b.diff))


@register("Convolution", "CONVOLUTION")
class ConvolutionLayer(_ConvolutionBase):
    """N-d convolution with groups, dilation and padding (Caffe's ConvolutionLayer).

    Forward: ``y[n, m, o] = sum_{c in group(m), k} W[m, c, k] * x_pad[n, c, o*stride + k*dilation]
    + b[m]``.  Backward: ``dW[m, c, k] += sum_{n, o} dy[n, m, o] * x_pad[n, c, o*stride + k*dilation]``,
    ``db[m] += sum_{n, o} dy[n, m, o]``, ``dx = col2im(W^T dy)``.
    Bottom ``[*lead, C, *in]``, top ``[*lead, num_output, *out]`` with
    ``out = (in + 2*pad - dilation*(kernel-1) - 1) / stride + 1``.  Weight
    ``[num_output, C/group, *kernel]``, bias ``[num_output]``.
    """

    def output_spatial(self, in_spatial):
        return self.geom.conv_out_shape(in_spatial)

    def _forward_gemm(self, x, weight, out, bias):
        conv_forward(x, weight, self.geom, self.group, out, bias)

    def _backward_gemm(self, dy, weight, dx):
        conv_backward_data(dy, weight, self.geom, self.group, dx)

    def _weight_gradient(self, x, dy, dw):
        conv_backward_weight(x, dy, self.geom, self.group, dw)


@register("Deconvolution", "DECONVOLUTION")
class DeconvolutionLayer(_ConvolutionBase):
    """Transposed convolution (Caffe's DeconvolutionLayer): convolution's forward and
    backward swapped.

    Forward: ``y = col2im(W^T x) + b`` (the input gradient of a convolution with
    weight ``W``).  Backward: ``dx = conv(dy, W)``, ``dW[c, m, k] += sum_{n, o}
    x[n, c, o] * dy_pad[n, m, o*stride + k*dilation]``, ``db[m] += sum dy[:, m]``.
    Bottom ``[*lead, C, *in]``, top ``[*lead, num_output, *out]`` with
    ``out = stride*(in - 1) + dilation*(kernel-1) + 1 - 2*pad``.  Weight
    ``[C, num_output/group, *kernel]``, bias ``[num_output]``.
    """

    reverse_dimensions = True

    def output_spatial(self, in_spatial):
        return self.geom.deconv_out_shape(in_spatial)

    def _forward_gemm(self, x, weight, out, bias):
        conv_backward_data(x, weight, self.geom, self.group, out, bias)

    def _backward_gemm(self, dy, weight, dx):
        conv_forward(dy, weight, self.geom, self.group, dx)

    def _weight_gradient(self, x, dy, dw):
        conv_backward_weight(dy, x, self.geom, self.group, dw)


@register("Im2col", "IM2COL")
class Im2colLayer(Layer):
    """Caffe's Im2colLayer: the column buffer a convolution would multiply.

    Forward: ``y[n, (c, k), o] = x_pad[n, c, o*stride + k*dilation]`` (channel-major,
    kernel offsets row-major).  Backward: ``dx = col2im(dy)`` (sum over the
    positions each pixel was copied to).  Bottom ``[*lead, C, *in]``, top
    ``[*lead, C*prod(kernel), *out]``; ``convolution_param`` gives kernel,
    stride, pad, dilation and axis.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        cp = self.param.convolution_param
        self.channel_axis, self.num_spatial, self.geom = _read_geometry(self, cp, bottom)
        if self.num_spatial < 1:
            raise self.error(f"bottom '{_bottom_name(self, 0)}' of shape {bottom[0].shape} has "
                             f"no spatial axis after channel axis {self.channel_axis}")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != self.channel_axis + 1 + self.num_spatial:
            raise self.error(f"bottom num_axes may not change: bottom '{_bottom_name(self, 0)}' "
                             f"has shape {shape}, expected "
                             f"{self.channel_axis + 1 + self.num_spatial} axes")
        in_spatial = shape[self.channel_axis + 1:]
        out_spatial = self.geom.conv_out_shape(in_spatial)
        _check_out_shape(self, in_spatial, self.geom, out_spatial, 0)
        channels = shape[self.channel_axis]
        top[0].reshape(shape[:self.channel_axis] + (channels * self.geom.kernel_count,)
                       + tuple(out_spatial))

    def _col_view(self, arr):
        """``[*lead, C*K, *out]`` viewed as ``[num, C, *kernel, *out]``."""
        num = math.prod(arr.shape[:self.channel_axis])
        return arr.reshape((num, -1) + self.geom.kernel + arr.shape[self.channel_axis + 1:])

    def _as_batch(self, arr):
        return arr.reshape((math.prod(arr.shape[:self.channel_axis]),)
                           + arr.shape[self.channel_axis:])

    def forward(self, bottom, top):
        im2col(self._as_batch(bottom[0].data), self.geom, self._col_view(top[0].data))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            col2im(self._col_view(top[0].diff), self.geom, self._as_batch(bottom[0].diff))


@register("InnerProduct", "INNER_PRODUCT")
class InnerProductLayer(Layer):
    """Fully connected layer (Caffe's InnerProductLayer).

    The bottom is flattened from ``axis`` on: ``x [M, K]`` with ``M =
    count(0, axis)``, ``K = count(axis)``.  Forward: ``y = x W^T + b`` (weight
    ``[N, K]``), or ``y = x W + b`` with ``transpose: true`` (weight ``[K, N]``).
    Backward: ``dW += dy^T x`` (transpose: ``x^T dy``), ``db += sum_rows dy``,
    ``dx = dy W`` (transpose: ``dy W^T``).  Top ``[*bottom.shape[:axis], N]``.
    """

    exact_bottoms = 1
    exact_tops = 1
    honours_transpose = True  # BinaryInnerProduct: False (HWGQ ignores the flag)

    def setup(self, bottom, top):
        p = self.param.inner_product_param
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            raise self.error(f"inner_product_param.num_output must be > 0, got {self.num_output}")
        self.bias_term = bool(p.bias_term)
        self.transpose = bool(p.transpose) and self.honours_transpose
        try:
            self.axis = bottom[0].canonical_axis(p.axis)
        except CaffeError:
            raise self.error(f"inner_product_param.axis {p.axis} out of range for bottom "
                             f"'{_bottom_name(self, 0)}' of shape {bottom[0].shape}") from None
        self.k = bottom[0].count_range(self.axis)
        shape = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
        weight = self.make_blob(shape)
        fill(weight, p.weight_filler)
        self.blobs = [weight]
        if self.bias_term:
            bias = self.make_blob((self.num_output,))
            fill(bias, p.bias_filler)
            self.blobs.append(bias)
        self._weight = None

    def reshape(self, bottom, top):
        try:
            axis = bottom[0].canonical_axis(self.param.inner_product_param.axis)
        except CaffeError:
            axis = -1
        if axis != self.axis or bottom[0].count_range(axis) != self.k:
            raise self.error(f"input size incompatible with inner product parameters: bottom "
                             f"'{_bottom_name(self, 0)}' of shape {bottom[0].shape} has "
                             f"{bottom[0].count_range(self.axis)} inputs from axis {self.axis}, "
                             f"expected {self.k}")
        top[0].reshape(bottom[0].shape[:self.axis] + (self.num_output,))

    def effective_weight(self):
        """The weight forward and the bottom gradient use (BinaryInnerProduct: sign * alpha)."""
        return self.blobs[0].data

    def _rows(self, arr):
        return arr.reshape(-1, self.k)

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        self._weight = w = self.effective_weight()
        out = top[0].data.reshape(-1, self.num_output)
        xp.matmul(self._rows(bottom[0].data), w if self.transpose else w.T, out=out)
        if self.bias_term:
            out += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        xp = get_array_module(top[0].diff)
        dy = top[0].diff.reshape(-1, self.num_output)
        x = self._rows(bottom[0].data)
        if self.needs_param_gradient(0):
            if self.transpose:
                self.blobs[0].diff += xp.matmul(x.T, dy)
            else:
                self.blobs[0].diff += xp.matmul(dy.T, x)
        if self.bias_term and self.needs_param_gradient(1):
            self.blobs[1].diff += dy.sum(axis=0)
        if propagate_down[0]:
            w = self._weight if self._weight is not None else self.effective_weight()
            xp.matmul(dy, w.T if self.transpose else w, out=self._rows(bottom[0].diff))
