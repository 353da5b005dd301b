"""Convolution family: Convolution, Deconvolution, Im2col, InnerProduct.

Caffe's ``src/caffe/layers/{base_conv,conv,deconv,im2col,inner_product}_layer.cpp``.

The layers read their parameters, size their tops and state the maths; the
columns, the GEMMs over chunks of the batch and the faster paths live in the
engine :mod:`pycaffe_lite.engines.im2col` behind ``conv_forward``,
``conv_backward_data``, ``conv_backward_weight`` and ``im2col`` / ``col2im``.

The weight used by forward and by the bottom gradient comes from
``effective_weight()``; the weight gradient always accumulates into
``blobs[0].diff``.  BinaryConvolution / BinaryInnerProduct override only that.
"""
import math

import numpy

from pycaffe_lite.backend import get_array_module
from pycaffe_lite.engines.im2col import (ConvGeometry, col2im, conv_backward_data,
                                         conv_backward_weight, conv_forward, im2col)
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.layer import Layer, register

# NumPy InnerProduct: batches below this many rows multiply the weight from the
# left, this many weight rows at a time (see InnerProductLayer.forward).
_IP_THIN_BATCH = 128
_IP_ROW_BLOCK = 1024


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
                          f"'{layer.bottom_name(0)}' of shape {bottom[0].shape}") from None
    num_spatial = bottom[0].num_axes - channel_axis - 1
    geom = ConvGeometry(
        _spatial_values(layer, cp, "kernel_size", num_spatial, None),
        _spatial_values(layer, cp, "stride", num_spatial, 1),
        _spatial_values(layer, cp, "pad", num_spatial, 0),
        _spatial_values(layer, cp, "dilation", num_spatial, 1))
    return channel_axis, num_spatial, geom


def _check_out_shape(layer, in_shape, geom, out_shape, i):
    if any(o <= 0 for o in out_shape):
        raise layer.error(f"bottom '{layer.bottom_name(i)}' spatial shape {tuple(in_shape)} "
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
    # Deconvolution: True.  Its forward and bottom gradient are a convolution's
    # bottom gradient and forward, and its weight maps top to bottom.
    reverse_dimensions = False

    def setup(self, bottom, top):
        cp = self.param.convolution_param
        self.channel_axis, self.num_spatial, self.geom = _read_geometry(self, cp, bottom)
        self.channels = bottom[0].shape[self.channel_axis]
        if self.channels == 0:   # Caffe fails its filler's CHECK(count) on the empty weight
            raise self.error(f"bottom '{self.bottom_name(0)}' of shape {bottom[0].shape} has 0 "
                             f"channels (axis {self.channel_axis}); expected at least 1")
        self.num_output = self.positive("convolution_param.num_output", cp.num_output)
        self.group = int(cp.group)
        if self.group <= 0 or self.channels % self.group:
            raise self.error(f"bottom '{self.bottom_name(0)}' has {self.channels} channels, "
                             f"not a multiple of group {self.group}")
        if self.num_output % self.group:
            raise self.error(f"num_output {self.num_output} should be a multiple of group "
                             f"{self.group}")
        self.bias_term = bool(cp.bias_term)
        self.blobs = []
        self.make_param_blobs(cp)
        self._weight = None

    def make_param_blobs(self, cp):
        """Weight ``[out, in/group, *kernel]`` and bias (QConvolution: its own)."""
        if self.reverse_dimensions:
            out_c, in_c = self.channels, self.num_output
        else:
            out_c, in_c = self.num_output, self.channels
        self.add_param_blob((out_c, in_c // self.group) + self.geom.kernel, cp.weight_filler)
        if self.bias_term:
            self.add_param_blob((self.num_output,), cp.bias_filler)

    def reshape(self, bottom, top):
        first = bottom[0]
        if first.num_axes != self.channel_axis + 1 + self.num_spatial:
            raise self.error(f"bottom num_axes may not change: bottom '{self.bottom_name(0)}' "
                             f"has shape {first.shape}, expected "
                             f"{self.channel_axis + 1 + self.num_spatial} axes")
        if first.shape[self.channel_axis] != self.channels:
            raise self.error(f"input size incompatible with convolution kernel: bottom "
                             f"'{self.bottom_name(0)}' has {first.shape[self.channel_axis]} "
                             f"channels, expected {self.channels}")
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != first.shape:
                raise self.error(f"shape mismatch - bottom '{self.bottom_name(0)}': "
                                 f"{first.shape} vs. bottom '{self.bottom_name(i)}': {b.shape}")
        in_spatial = first.shape[self.channel_axis + 1:]
        if 0 in in_spatial:
            raise self.error(f"bottom '{self.bottom_name(0)}' of shape {first.shape} has an "
                             "empty spatial axis; expected each at least 1")
        out_spatial = self.output_spatial(in_spatial)
        _check_out_shape(self, in_spatial, self.geom, out_spatial, 0)
        shape = first.shape[:self.channel_axis] + (self.num_output,) + tuple(out_spatial)
        for t in top:
            t.reshape(shape)

    def output_spatial(self, in_spatial):
        if self.reverse_dimensions:
            return self.geom.deconv_out_shape(in_spatial)
        return self.geom.conv_out_shape(in_spatial)

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
        # Deconvolution's forward is a convolution's input gradient.
        gemm = conv_backward_data if self.reverse_dimensions else conv_forward
        self._weight = self.effective_weight()
        for b, t in zip(bottom, top):
            bias = self.blobs[1].data if self.bias_term else None
            gemm(self._as_batch(b.data), self._weight, self.geom, self.group,
                 self._as_batch(t.data), bias)

    def backward(self, top, propagate_down, bottom):
        gemm = conv_forward if self.reverse_dimensions else conv_backward_data
        weight = self._weight if self._weight is not None else self.effective_weight()
        for i, (t, b) in enumerate(zip(top, bottom)):
            dy = self._as_batch(t.diff)
            self._bias_gradient(dy)
            if self.needs_param_gradient(0):
                # The columns come from the geometry's image side: Deconvolution's top.
                x = self._as_batch(b.data)
                image, output = (dy, x) if self.reverse_dimensions else (x, dy)
                conv_backward_weight(image, output, self.geom, self.group, self.blobs[0].diff)
            if propagate_down[i]:
                gemm(dy, weight, self.geom, self.group, self._as_batch(b.diff))


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
            raise self.error(f"bottom '{self.bottom_name(0)}' of shape {bottom[0].shape} has "
                             f"no spatial axis after channel axis {self.channel_axis}")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != self.channel_axis + 1 + self.num_spatial:
            raise self.error(f"bottom num_axes may not change: bottom '{self.bottom_name(0)}' "
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
        self.num_output = self.positive("inner_product_param.num_output", p.num_output)
        self.bias_term = bool(p.bias_term)
        self.transpose = bool(p.transpose) and self.honours_transpose
        try:
            self.axis = bottom[0].canonical_axis(p.axis)
        except CaffeError:
            raise self.error(f"inner_product_param.axis {p.axis} out of range for bottom "
                             f"'{self.bottom_name(0)}' of shape {bottom[0].shape}") from None
        self.k = bottom[0].count_range(self.axis)
        if self.k == 0:     # Caffe fails its filler's CHECK(count) on the empty weight
            raise self.error(f"bottom '{self.bottom_name(0)}' of shape {bottom[0].shape} has 0 "
                             f"inputs (the count from axis {self.axis}); expected at least 1")
        self.blobs = []
        self.make_param_blobs(p)
        self._weight = None

    def make_param_blobs(self, p):
        """Weight ``[N, K]`` (transpose: ``[K, N]``) and bias (QInnerProduct: its own)."""
        shape = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
        self.add_param_blob(shape, p.weight_filler)
        if self.bias_term:
            self.add_param_blob((self.num_output,), p.bias_filler)

    def reshape(self, bottom, top):
        try:
            axis = bottom[0].canonical_axis(self.param.inner_product_param.axis)
        except CaffeError:
            axis = -1
        if axis != self.axis or bottom[0].count_range(axis) != self.k:
            raise self.error(f"input size incompatible with inner product parameters: bottom "
                             f"'{self.bottom_name(0)}' of shape {bottom[0].shape} has "
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
        x = self._rows(bottom[0].data)
        out = top[0].data.reshape(-1, self.num_output)
        bias = self.blobs[1].data if self.bias_term else None
        if xp is numpy and not self.transpose and x.shape[0] < _IP_THIN_BATCH:
            # y^T = W x^T, by blocks of weight rows: OpenBLAS runs a thin right-hand
            # side much faster than a thin left-hand side (AlexNet's fc6 at batch
            # 16: 11 ms instead of 19 ms, 2 threads).
            out_t = numpy.empty((self.num_output, x.shape[0]), dtype=out.dtype)
            for r in range(0, self.num_output, _IP_ROW_BLOCK):
                numpy.matmul(w[r:r + _IP_ROW_BLOCK], x.T, out=out_t[r:r + _IP_ROW_BLOCK])
            if bias is None:
                out[...] = out_t.T
            else:
                numpy.add(out_t.T, bias, out=out)
            return
        xp.matmul(x, w if self.transpose else w.T, out=out)
        if bias is not None:
            out += bias

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
