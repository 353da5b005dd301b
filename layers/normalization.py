"""Normalisation layers: Softmax, BatchNorm, MVN, LRN, Scale, Bias.

Each follows the maths of the matching Caffe layer (``src/caffe/layers/``),
including its quirks: BatchNorm stores running sums weighted by a scale
factor, MVN adds ``eps`` to the standard deviation, WITHIN_CHANNEL LRN is an
average pooling over a zero-padded window (padding counts in the divisor).
"""
import numpy

from pycaffe_lite import parallel
from pycaffe_lite.backend import get_array_module
from pycaffe_lite.fillers import fill
from pycaffe_lite.layer import TEST, Layer, NeuronLayer, register


def softmax(x, axis):
    """Numerically stable softmax of ``x`` along ``axis`` (max subtracted first)."""
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# LRN forward works on chunks of about this many elements (whole samples).
_LRN_CHUNK = 1 << 18


def _window_sum(a, axis, size, out=None):
    """Sum over a centred window of odd ``size`` along ``axis``, zeros outside.

    In place on ``out`` (a new array if None): ``a`` plus its shifts by
    1 .. (size-1)/2 either way, no padded copy.
    """
    xp = get_array_module(a)
    out = xp.empty_like(a) if out is None else out
    xp.copyto(out, a)
    n = a.shape[axis]

    def part(start, stop):
        index = [slice(None)] * a.ndim
        index[axis] = slice(start, stop)
        return tuple(index)
    for shift in range(1, min((size - 1) // 2, n - 1) + 1):
        out[part(shift, n)] += a[part(0, n - shift)]
        out[part(0, n - shift)] += a[part(shift, n)]
    return out


def _negative_power(base, beta, out):
    """``out = base ** -beta`` as ``exp(-beta * log(base))``: the same values within
    float rounding, about 25% faster than NumPy's float32 ``power`` (measured)."""
    xp = get_array_module(base)
    xp.log(base, out=out)
    out *= -beta
    return xp.exp(out, out=out)


def _keep_input_of(layer, bottom, top):
    """Set ``layer.x`` to the input; a copy (in a reused buffer) when running in place."""
    x = bottom[0].data
    if layer.keeps_inputs and (top[0] is bottom[0] or top[0].data is x):
        layer._x_copy = _reuse(layer._x_copy, x)
        get_array_module(x).copyto(layer._x_copy, x)
        layer.x = layer._x_copy
    else:
        layer.x = x


def _reuse(buffer, like):
    """``buffer`` if it has the shape and dtype of ``like``, else a new empty array."""
    if buffer is None or buffer.shape != like.shape or buffer.dtype != like.dtype:
        return get_array_module(like).empty_like(like)
    return buffer


def _canonical_axis(layer, blob, axis, field):
    n = blob.num_axes
    if not -n <= axis < max(n, 1):
        raise layer.error(f"{field} {axis} out of range for bottom '{layer.bottom_name(0)}' "
                          f"of shape {blob.shape}; expected an axis in [{-n}, {n})")
    return axis + n if axis < 0 else axis


def _operand_shape(layer, bottom0, axis, num_axes, field):
    """Shape of a learned Scale/Bias operand: bottom0's dims [axis, axis + num_axes)."""
    axis = _canonical_axis(layer, bottom0, axis, f"{field}.axis")
    if num_axes < -1:
        raise layer.error(f"{field}.num_axes must be non-negative, or -1 to extend to the end "
                          f"of bottom[0]; got {num_axes}")
    if num_axes >= 0 and bottom0.num_axes < axis + num_axes:
        raise layer.error(f"{field}: a {num_axes}-axis operand starting at axis {axis} extends "
                          f"past bottom '{layer.bottom_name(0)}' of shape {bottom0.shape}")
    end = None if num_axes == -1 else axis + num_axes
    return bottom0.shape[axis:end]


def _broadcast_dims(layer, bottom0, operand_shape, axis, what):
    """(outer, dim, inner) of bottom0 around an operand placed at ``axis``.

    A scalar operand (0 axes) is placed at axis 0 whatever ``axis`` says, as Caffe does.
    """
    k = len(operand_shape)
    axis = 0 if k == 0 else _canonical_axis(layer, bottom0, axis, f"{what} axis")
    dims = bottom0.shape[axis:axis + k]
    if bottom0.num_axes < axis + k or tuple(dims) != tuple(operand_shape):
        raise layer.error(f"{what} of shape {tuple(operand_shape)} does not match bottom "
                          f"'{layer.bottom_name(0)}' of shape {bottom0.shape} at axes "
                          f"[{axis}, {axis + k}); expected {what} shape {tuple(dims)}")
    outer = bottom0.count_range(0, axis)
    dim = bottom0.count_range(axis, axis + k)
    inner = bottom0.count_range(axis + k)
    return outer, dim, inner


@register("Softmax", "SOFTMAX")
class SoftmaxLayer(NeuronLayer):
    """Softmax along ``softmax_param.axis`` (default 1).

    Forward: ``y_i = exp(x_i - max_j x_j) / sum_j exp(x_j - max_j x_j)`` over the axis.
    Backward: ``dx = (dy - sum_j(dy_j * y_j)) * y``.
    Bottom: any shape; top: the same shape.  May run in place.
    """

    def setup(self, bottom, top):
        self.axis = _canonical_axis(self, bottom[0], self.param.softmax_param.axis,
                                    "softmax_param.axis")

    def reshape(self, bottom, top):
        self.axis = _canonical_axis(self, bottom[0], self.param.softmax_param.axis,
                                    "softmax_param.axis")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        if not bottom[0].count:     # an empty blob: Caffe's loops run zero times
            return
        top[0].data[...] = softmax(bottom[0].data, self.axis)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or not bottom[0].count:
            return
        y, dy = top[0].data, top[0].diff
        dot = (dy * y).sum(axis=self.axis, keepdims=True)
        bottom[0].diff[...] = (dy - dot) * y


@register("BatchNorm")
class BatchNormLayer(NeuronLayer):
    """Batch normalisation without learned scale/shift (Caffe's BatchNorm).

    Blobs: ``[mean_sum (C,), var_sum (C,), s (1,)]``; the global statistics
    are ``mean_sum / s`` and ``var_sum / s`` (0 when ``s == 0``).  Statistics are
    over every axis but 1 (``m = count / C`` values per channel).

    Forward, batch statistics (``use_global_stats`` false, the TRAIN default):
    ``mu = mean(x)``, ``var = mean((x - mu)^2)`` (biased),
    ``y = (x - mu) / sqrt(var + eps)``, then the blobs are updated in place:
    ``s = maf*s + 1``, ``mean_sum = maf*mean_sum + mu``,
    ``var_sum = maf*var_sum + m/(m-1)*var``.
    Forward, global statistics: ``y = (x - mean_sum/s) / sqrt(var_sum/s + eps)``.

    Backward, batch statistics:
    ``dx = (dy - mean(dy) - mean(dy*y)*y) / sqrt(var + eps)``;
    global statistics: ``dx = dy / sqrt(var + eps)``.  The blobs get no gradient.

    The statistics are not learnable: like Caffe, setup appends ``param {
    lr_mult: 0 }`` for each blob the prototxt does not describe and rejects a
    non-zero ``lr_mult``.  Bottom: (N, C, ...); top: the same shape; may run in place.
    """

    x_norm = None       # batch statistics: the normalised input, for backward

    def setup(self, bottom, top):
        p = self.param.batch_norm_param
        self.use_global_stats = self.phase == TEST
        if p.HasField("use_global_stats"):
            self.use_global_stats = p.use_global_stats
        self.moving_average_fraction = p.moving_average_fraction
        self.eps = p.eps
        if bottom[0].num_axes == 0:
            raise self.error(f"bottom '{self.bottom_name(0)}' is 0-D; expected (N, C, ...)")
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        self.blobs = [self.make_blob((self.channels,)), self.make_blob((self.channels,)),
                      self.make_blob((1,))]
        self.freeze_param_blobs("batch normalization statistics")

    def reshape(self, bottom, top):
        channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        if bottom[0].num_axes == 0 or channels != self.channels:
            raise self.error(f"bottom '{self.bottom_name(0)}' has shape {bottom[0].shape}; "
                             f"expected {self.channels} channels on axis 1")
        top[0].reshape(bottom[0].shape)

    def _view(self, array):
        n = array.shape[0]
        return array.reshape(n, self.channels, -1)

    def forward(self, bottom, top):
        if not bottom[0].count:     # an empty blob: Caffe's loops run zero times
            return
        xp = get_array_module(bottom[0].data)
        x = self._view(bottom[0].data)
        y = self._view(top[0].data)
        if self.use_global_stats:
            s = self.blobs[2].data[0]
            factor = 0 if s == 0 else 1 / s
            mean = self.blobs[0].data * factor
            var = self.blobs[1].data * factor
            xp.subtract(x, mean[None, :, None], out=y)
        else:
            mean = x.mean(axis=(0, 2))
            xp.subtract(x, mean[None, :, None], out=y)     # in place: x is gone from here on
            var = (y * y).mean(axis=(0, 2))
            m = y.size // self.channels
            correction = y.dtype.type(m / (m - 1) if m > 1 else 1)
            maf = y.dtype.type(self.moving_average_fraction)
            self.blobs[2].data *= maf
            self.blobs[2].data += 1
            self.blobs[0].data[...] = mean + maf * self.blobs[0].data
            self.blobs[1].data[...] = correction * var + maf * self.blobs[1].data
        self.std = xp.sqrt(var + self.eps).astype(y.dtype, copy=False)
        # Caffe's order: subtract the mean, then divide by the std (in the top).
        xp.divide(y, self.std[None, :, None], out=y)
        if not self.use_global_stats:
            # Kept for backward: later in-place layers may overwrite the top.
            self.x_norm = _reuse(self.x_norm, y)
            xp.copyto(self.x_norm, y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or not bottom[0].count:
            return
        xp = get_array_module(top[0].diff)
        dy = self._view(top[0].diff)
        std = self.std[None, :, None]
        if self.use_global_stats:
            xp.divide(dy, std, out=self._view(bottom[0].diff))
            return
        y = self.x_norm
        m = dy.shape[0] * dy.shape[2]
        sum_dy_y = (dy * y).sum(axis=(0, 2), keepdims=True)
        sum_dy = dy.sum(axis=(0, 2), keepdims=True)
        dx = (dy - (y * sum_dy_y + sum_dy) / m) / std
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)


@register("MVN")
class MVNLayer(NeuronLayer):
    """Mean-variance normalisation (Caffe's MVN).

    Statistics per (n, c) over the spatial axes, or per n over (C, H, W) with
    ``across_channels``.  Forward: ``y = x - mean(x)``; with
    ``normalize_variance`` (default) ``y = (x - mean(x)) / (std(x) + eps)``,
    ``std`` the biased standard deviation: ``eps`` is added to the std, not the variance.
    Backward (Caffe's formula, exact for ``eps = 0``):
    ``dx = (dy - mean(dy) - mean(dy*y)*y) / (std + eps)``; mean only: ``dx = dy - mean(dy)``.
    Bottom: up to 4 axes (N, C, H, W); top: the same shape.
    """

    def setup(self, bottom, top):
        p = self.param.mvn_param
        self.normalize_variance = p.normalize_variance
        self.across_channels = p.across_channels
        self.eps = p.eps

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if not 1 <= len(shape) <= 4:
            raise self.error(f"bottom '{self.bottom_name(0)}' has shape {shape}; expected "
                             "1 to 4 axes (N, C, H, W)")
        top[0].reshape(shape)

    def _rows(self, array):
        shape = array.shape
        num = shape[0] if self.across_channels or len(shape) < 2 else shape[0] * shape[1]
        return array.reshape(num, -1)

    def forward(self, bottom, top):
        if not bottom[0].count:     # an empty blob: Caffe's loops run zero times
            return
        xp = get_array_module(bottom[0].data)
        x = self._rows(bottom[0].data)
        y = x - x.mean(axis=1, keepdims=True)
        if self.normalize_variance:
            self.std = xp.sqrt((y * y).mean(axis=1, keepdims=True)) + self.eps
            y = y / self.std
            self.y = y
        top[0].data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or not bottom[0].count:
            return
        dy = self._rows(top[0].diff)
        if self.normalize_variance:
            y = self.y
            dim = dy.shape[1]
            sums = y * (dy * y).sum(axis=1, keepdims=True) + dy.sum(axis=1, keepdims=True)
            dx = (dy - sums / dim) / self.std
        else:
            dx = dy - dy.mean(axis=1, keepdims=True)
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)


@register("LRN")
class LRNLayer(NeuronLayer):
    """Local response normalisation (Caffe's LRN), bottom/top (N, C, H, W).

    ACROSS_CHANNELS: ``scale = k + alpha/n * sum_{c' in window(c)} x_{c'}^2`` over
    ``n = local_size`` channels centred on c (zeros beyond the edges),
    ``y = x * scale^-beta``.  Backward:
    ``dx = dy * scale^-beta - 2*alpha*beta/n * x * sum_{window}(dy * y / scale)``.

    WITHIN_CHANNEL: Caffe's Power/Pooling(AVE, pad (n-1)/2)/Power/Eltwise chain:
    ``a = sum_{n x n window} x^2 / n^2`` (padded cells count in the divisor),
    ``p = (1 + alpha * a)^-beta`` (``k`` is not used), ``y = x * p``.  Backward:
    ``da = dy * x * (-beta*alpha) * p / (1 + alpha*a)``,
    ``dx = dy * p + 2 * x * sum_{window}(da) / n^2``.
    """

    # Arrays kept from call to call (base and power are backward's too).
    base = power = _squares = _scratch = _x_copy = None

    def setup(self, bottom, top):
        p = self.param.lrn_param
        self.size = p.local_size
        if self.size % 2 != 1:
            raise self.error(f"lrn_param.local_size must be odd, got {self.size}")
        # Scalars rounded to the blobs' dtype, as Caffe computes them in Dtype.
        t = self.dtype.type
        self.alpha, self.beta, self.k = t(p.alpha), t(p.beta), t(p.k)
        self.alpha_over_size = t(p.alpha / self.size)
        self.cache_ratio = t(2 * p.alpha * p.beta / self.size)
        self.within_channel = p.norm_region == 1  # LRNParameter.WITHIN_CHANNEL

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error(f"bottom '{self.bottom_name(0)}' has shape {bottom[0].shape}; "
                             "expected 4 axes (num, channels, height, width)")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        if not bottom[0].count:     # an empty blob: Caffe's loops run zero times
            return
        x = bottom[0].data
        xp = get_array_module(x)
        _keep_input_of(self, bottom, top)
        self._squares = _reuse(self._squares, x)
        self.base = _reuse(self.base, x)
        self.power = _reuse(self.power, x)
        y = top[0].data
        parallel.for_each(self._parts(xp, x), lambda part, _: self._forward_part(
            xp, x[part], self._squares[part], self.base[part], self.power[part], y[part]))

    @staticmethod
    def _parts(xp, x):
        """Slices of the batch, a few samples each on the CPU, so that the passes over
        a part stay in cache (measured ~25% faster on AlexNet's norm1 than whole-batch
        passes); the parts run on :mod:`pycaffe_lite.parallel`'s threads (norm1 at
        batch 16 on 2 cores: 9.9 -> 6.1 ms)."""
        step = max(1, _LRN_CHUNK // max(x[0].size, 1)) if xp is numpy else x.shape[0]
        return parallel.slices(x.shape[0], step)

    def _forward_part(self, xp, x, sq, base, power, y):
        xp.multiply(x, x, out=sq)
        if self.within_channel:
            _window_sum(_window_sum(sq, 2, self.size, out=base), 3, self.size, out=sq)
            xp.divide(sq, self.size ** 2, out=base)
            base *= self.alpha
            base += 1
        else:
            _window_sum(sq, 1, self.size, out=base)
            base *= self.alpha_over_size
            base += self.k
        _negative_power(base, self.beta, power)
        xp.multiply(x, power, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or not bottom[0].count:
            return
        x, dy, dx = self.x, top[0].diff, bottom[0].diff
        xp = get_array_module(x)
        self._squares = _reuse(self._squares, x)
        self._scratch = _reuse(self._scratch, x)
        # In place, dx is dy: each part reads its dy before writing its dx.
        parallel.for_each(self._parts(xp, x), lambda part, _: self._backward_part(
            xp, x[part], dy[part], self.base[part], self.power[part], dx[part],
            self._squares[part], self._scratch[part]))

    def _backward_part(self, xp, x, dy, base, power, dx, t1, t2):
        if self.within_channel:
            xp.divide(power, base, out=t1)            # d_avg = p / base * (-beta alpha) * dy x
            t1 *= -self.beta * self.alpha
            xp.multiply(dy, x, out=t2)
            t1 *= t2
            _window_sum(_window_sum(t1, 2, self.size, out=t2), 3, self.size, out=t1)
            t1 /= self.size ** 2                       # d_sq
            xp.multiply(x, 2, out=t2)
            t2 *= t1                                   # 2 x d_sq
            xp.multiply(dy, power, out=dx)
            dx += t2
        else:
            xp.multiply(x, power, out=t1)              # y
            t1 *= dy
            t1 /= base
            _window_sum(t1, 1, self.size, out=t2)      # ratio
            xp.multiply(x, self.cache_ratio, out=t1)
            t1 *= t2
            xp.multiply(dy, power, out=dx)
            dx -= t1


def _bias_grad(dy, outer, dim, inner):
    return dy.reshape(outer, dim, inner).sum(axis=(0, 2))


@register("Bias")
class BiasLayer(Layer):
    """``y = x + b``, ``b`` broadcast over bottom[0] from ``bias_param.axis``.

    ``b`` is bottom[1] when given (its shape must equal bottom[0]'s dims
    [axis, axis + b.ndim)), else a learned blob of bottom[0]'s dims
    [axis, axis + num_axes) (``num_axes`` -1: to the end; 0: a scalar),
    filled by ``bias_param.filler`` (default constant 0).
    Backward: ``dx = dy``; ``db = sum of dy over the broadcast axes``.
    Top: bottom[0]'s shape; may run in place.
    """

    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def setup(self, bottom, top):
        p = self.param.bias_param
        if len(bottom) == 1:
            shape = _operand_shape(self, bottom[0], p.axis, p.num_axes, "bias_param")
            self.add_param_blob(shape, p.filler)

    def _operand(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        b = self._operand(bottom)
        self.dims = _broadcast_dims(self, bottom[0], b.shape, self.param.bias_param.axis, "bias")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        outer, dim, inner = self.dims
        b = self._operand(bottom).data.reshape(1, dim, 1)
        x = bottom[0].data.reshape(outer, dim, inner)
        top[0].data[...] = (x + b).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        if len(bottom) > 1:
            if propagate_down[1]:
                bottom[1].diff[...] = _bias_grad(dy, *self.dims).reshape(bottom[1].shape)
        else:
            self.blobs[0].diff += _bias_grad(dy, *self.dims).reshape(self.blobs[0].shape)
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff[...] = dy


@register("Scale")
class ScaleLayer(Layer):
    """``y = x * a (+ b)``, ``a`` broadcast over bottom[0] from ``scale_param.axis``.

    ``a`` is bottom[1] when given (shape = bottom[0]'s dims [axis, axis + a.ndim)),
    else a learned blob of bottom[0]'s dims [axis, axis + num_axes) (``num_axes``
    -1: to the end; 0: a scalar) filled by ``scale_param.filler`` (default
    constant 1).  With ``bias_term`` a learned bias ``b`` of ``a``'s shape
    (filled by ``bias_filler``, default constant 0) is added.
    Blobs: ``[a, b]`` (one bottom) or ``[b]`` (two bottoms).
    Backward: ``dx = dy * a``; ``da = sum(dy * x)`` and ``db = sum(dy)`` over
    the broadcast axes.  Top: bottom[0]'s shape; may run in place (the input is
    kept for ``da``).
    """

    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    _checked = None     # the shapes reshape last validated
    _x_copy = None      # in place: the input, for the scale gradient

    def setup(self, bottom, top):
        p = self.param.scale_param
        self.blobs = []
        if len(bottom) == 1:
            shape = _operand_shape(self, bottom[0], p.axis, p.num_axes, "scale_param")
            scale = self.make_blob(shape)
            if p.HasField("filler"):
                fill(scale, p.filler)
            else:
                scale.data[...] = 1
            self.blobs.append(scale)
        if p.bias_term:
            num_axes = bottom[1].num_axes if len(bottom) > 1 else p.num_axes
            shape = _operand_shape(self, bottom[0], p.axis, num_axes, "scale_param (bias)")
            self.add_param_blob(shape, p.bias_filler)

    def _scale(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        a = self._scale(bottom)
        shapes = (bottom[0].shape, a.shape)
        if shapes != self._checked:        # reshape runs before every forward: check once
            axis = self.param.scale_param.axis
            self.dims = _broadcast_dims(self, bottom[0], a.shape, axis, "scale")
            if self.param.scale_param.bias_term:
                self.bias_dims = _broadcast_dims(self, bottom[0], self.blobs[-1].shape, axis,
                                                 "bias")
            self._checked = shapes
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        outer, dim, inner = self.dims
        x = bottom[0].data
        xp = get_array_module(x)
        _keep_input_of(self, bottom, top)
        y = top[0].data
        xp.multiply(x.reshape(outer, dim, inner), self._scale(bottom).data.reshape(1, dim, 1),
                    out=y.reshape(outer, dim, inner))
        if self.param.scale_param.bias_term:
            b_outer, b_dim, b_inner = self.bias_dims
            y = y.reshape(b_outer, b_dim, b_inner)
            xp.add(y, self.blobs[-1].data.reshape(1, b_dim, 1), out=y)

    def backward(self, top, propagate_down, bottom):
        outer, dim, inner = self.dims
        dy = top[0].diff
        if self.param.scale_param.bias_term:
            self.blobs[-1].diff += _bias_grad(dy, *self.bias_dims).reshape(self.blobs[-1].shape)
        a = self._scale(bottom)
        grad_a = None
        if len(bottom) == 1 or propagate_down[1]:
            grad_a = (dy * self.x).reshape(outer, dim, inner).sum(axis=(0, 2)).reshape(a.shape)
        if propagate_down[0]:
            dx = dy.reshape(outer, dim, inner) * a.data.reshape(1, dim, 1)
            bottom[0].diff[...] = dx.reshape(bottom[0].shape)
        if len(bottom) == 1:
            self.blobs[0].diff += grad_a
        elif propagate_down[1]:
            bottom[1].diff[...] = grad_a
