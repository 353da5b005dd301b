"""Element-wise ("neuron") layers: one bottom, one top of the same shape.

Caffe's ``src/caffe/layers/{absval,bnll,clip,dropout,elu,exp,log,power,prelu,
relu,sigmoid,swish,tanh,threshold}_layer.cpp``.  Every layer here may run in
place (``top[0] is bottom[0]``); a layer whose backward needs the input it
overwrote keeps a copy of it in forward, as Caffe's PReLU does with
``bottom_memory_``.  Scalar constants derived from the parameters (``log(base)``,
``power * scale``, ...) are rounded to the blobs' dtype, as Caffe computes them
in ``Dtype``.
"""
import numpy

from pycaffe_lite import parallel, rng
from pycaffe_lite.backend import get_array_module
from pycaffe_lite.errors import BackwardNotImplementedError
from pycaffe_lite.fillers import fill
from pycaffe_lite.layer import TRAIN, NeuronLayer, register
from pycaffe_lite.proto import caffe_pb2


def _in_place(bottom, top):
    return top[0] is bottom[0] or top[0].data is bottom[0].data


# NumPy's maximum has a SIMD loop for two arrays but not for an array and a
# scalar (about 3x slower, measured on float32); ``relu`` compares with a row
# of zeros broadcast over the input viewed as [-1, row] instead.
_ZERO_ROW = 1 << 14
# Elements per piece of an elementwise pass on the CPU (_ElementwiseLayer._by_pieces).
_PIECE = 1 << 18
_zero_rows = {}


def relu(x, out):
    """``out = max(x, 0)`` (NaN stays NaN); ``out`` may be ``x``."""
    xp = get_array_module(x)
    if xp is not numpy or x.size < _ZERO_ROW or not (
            x.flags.c_contiguous and out.flags.c_contiguous):
        return xp.maximum(x, 0, out=out)
    zeros = _zero_rows.get(x.dtype)
    if zeros is None:
        zeros = _zero_rows[x.dtype] = numpy.zeros(_ZERO_ROW, x.dtype)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    body = x.size - x.size % _ZERO_ROW
    numpy.maximum(flat_x[:body].reshape(-1, _ZERO_ROW), zeros,
                  out=flat_out[:body].reshape(-1, _ZERO_ROW))
    numpy.maximum(flat_x[body:], zeros[:x.size - body], out=flat_out[body:])
    return out


class _ElementwiseLayer(NeuronLayer):
    """A NeuronLayer that can keep its input for backward when run in place."""

    _input_copy = None

    def _keep_input(self, bottom, top, needed=True):
        """Call at the start of forward: copy the input if forward overwrites it."""
        self._input_copy = (bottom[0].data.copy()
                            if needed and self.keeps_inputs and _in_place(bottom, top) else None)

    def _input(self, bottom):
        """The input of the last forward (in place: the copy kept then)."""
        return bottom[0].data if self._input_copy is None else self._input_copy

    def _by_pieces(self, fn, *arrays):
        """``fn(*views)`` over consecutive pieces of the flattened ``arrays`` (all of
        one size): on the CPU pieces of :data:`_PIECE` elements, run on
        :mod:`pycaffe_lite.parallel`'s threads, so that a piece's temporaries stay in
        cache; on the GPU (or for arrays that are not contiguous) one piece.  Only for
        passes where each output element depends on the same element of the inputs."""
        xp = get_array_module(arrays[0])
        n = arrays[0].size
        if xp is not numpy or not all(a.flags.c_contiguous for a in arrays):
            fn(*arrays)
            return
        flat = [a.reshape(-1) for a in arrays]
        parallel.for_each(parallel.slices(n, _PIECE),
                          lambda part, _: fn(*(f[part] for f in flat)))

    def _const(self, value):
        """A parameter rounded to the blobs' dtype, as Caffe stores it in a ``Dtype``."""
        return self.dtype.type(value)


@register("AbsVal", "ABSVAL")
class AbsValLayer(_ElementwiseLayer):
    """Absolute value.

    Forward: ``y = |x|``.  Backward: ``dx = dy * sign(x)`` with ``sign(0) = 0``.
    Bottom and top: any shape, the same.  (Caffe refuses to run AbsVal in
    place; here it may, keeping a copy of the input.)
    """

    def forward(self, bottom, top):
        self._keep_input(bottom, top)
        xp = get_array_module(bottom[0].data)
        top[0].data[...] = xp.abs(bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            xp = get_array_module(top[0].diff)
            bottom[0].diff[...] = top[0].diff * xp.sign(self._input(bottom))


@register("BNLL", "BNLL")
class BNLLLayer(_ElementwiseLayer):
    """Binomial normal log likelihood (softplus).

    Forward: ``y = x + log(1 + exp(-x))`` for ``x > 0``, else ``log(1 + exp(x))``.
    Backward: ``dx = dy * e / (e + 1)`` with ``e = exp(min(x, 50))``.
    Bottom and top: any shape, the same.
    """

    THRESHOLD = 50.0  # Caffe's kBNLL_THRESHOLD

    def forward(self, bottom, top):
        self._keep_input(bottom, top)
        x = bottom[0].data
        xp = get_array_module(x)
        # Both of Caffe's branches at once: max(x, 0) + log(1 + exp(-|x|)).
        top[0].data[...] = xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            xp = get_array_module(top[0].diff)
            e = xp.exp(xp.minimum(self._input(bottom), self._const(self.THRESHOLD)))
            bottom[0].diff[...] = top[0].diff * e / (e + 1)


@register("Clip")
class ClipLayer(_ElementwiseLayer):
    """Clip to ``[min, max]`` (``clip_param``, both required).

    Forward: ``y = max(min, min(x, max))``.
    Backward: ``dx = dy * (min <= x <= max)``.
    Bottom and top: any shape, the same.
    """

    def setup(self, bottom, top):
        p = self.param.clip_param
        missing = [f for f in ("min", "max") if not p.HasField(f)]
        if missing:
            raise self.error(f"clip_param needs both min and max (required fields), "
                             f"missing {' and '.join(missing)}")
        if p.min > p.max:
            raise self.error(f"clip_param.min must be <= clip_param.max, got min {p.min} "
                             f"and max {p.max}")
        self.min = self._const(p.min)
        self.max = self._const(p.max)
        self._pass = None

    def _mask(self, x):
        return (x >= self.min) & (x <= self.max)

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = get_array_module(x)
        # In place the input is lost; the pass-through mask is all backward needs.
        self._pass = self._mask(x) if _in_place(bottom, top) else None
        top[0].data[...] = xp.maximum(self.min, xp.minimum(x, self.max))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            mask = self._pass if self._pass is not None else self._mask(bottom[0].data)
            bottom[0].diff[...] = top[0].diff * mask


@register("ELU")
class ELULayer(_ElementwiseLayer):
    """Exponential linear unit (``elu_param.alpha``, default 1).

    Forward: ``y = x`` for ``x > 0``, else ``alpha * (exp(x) - 1)``.
    Backward: ``dx = dy`` for ``x > 0``, else ``dy * (y + alpha)``.
    Bottom and top: any shape, the same.
    """

    def setup(self, bottom, top):
        self.alpha = self._const(self.param.elu_param.alpha)

    def forward(self, bottom, top):
        # For alpha >= 0 the sign of y is the sign of x, which is what Caffe's
        # in-place backward relies on; otherwise keep the input.
        self._keep_input(bottom, top, needed=self.alpha < 0)
        x = bottom[0].data
        xp = get_array_module(x)
        top[0].data[...] = xp.maximum(x, 0) + self.alpha * (xp.exp(xp.minimum(x, 0)) - 1)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = self._input(bottom)
            positive = x > 0
            slope = positive + (self.alpha + top[0].data) * (x <= 0)
            bottom[0].diff[...] = top[0].diff * slope


@register("Exp", "EXP")
class ExpLayer(_ElementwiseLayer):
    """``y = base ^ (shift + scale * x)`` (``exp_param``; ``base: -1``, the default, is e).

    Computed as Caffe does: ``y = outer * exp(inner * x)`` with
    ``inner = log(base) * scale`` and ``outer = base ^ shift``.
    Backward: ``dx = dy * y * inner``.
    Bottom and top: any shape, the same.
    """

    def setup(self, bottom, top):
        p = self.param.exp_param
        base, scale, shift = (self._const(v) for v in (p.base, p.scale, p.shift))
        if base != -1 and not base > 0:
            raise self.error(f"exp_param.base must be > 0 (or -1 for e), got {p.base}")
        log_base = self._const(1) if base == -1 else numpy.log(base)
        self.inner_scale = log_base * scale
        if shift == 0:
            self.outer_scale = self._const(1)
        else:
            self.outer_scale = numpy.exp(shift) if base == -1 else numpy.power(base, shift)

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = get_array_module(x)
        y = xp.exp(x if self.inner_scale == 1 else self.inner_scale * x)
        if self.outer_scale != 1:
            y *= self.outer_scale
        top[0].data[...] = y

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            g = top[0].data * top[0].diff
            if self.inner_scale != 1:
                g *= self.inner_scale
            bottom[0].diff[...] = g


@register("Log")
class LogLayer(_ElementwiseLayer):
    """``y = log_base(shift + scale * x)`` (``log_param``; ``base: -1``, the default, is e).

    Backward: ``dx = dy * scale / (log(base) * (shift + scale * x))``.
    Bottom and top: any shape, the same.
    """

    def setup(self, bottom, top):
        p = self.param.log_param
        base = self._const(p.base)
        if base != -1 and not (base > 0 and base != 1):
            raise self.error(f"log_param.base must be > 0 and != 1 (or -1 for e), got {p.base}")
        log_base = self._const(1) if base == -1 else numpy.log(base)
        self.base_scale = self._const(1) / log_base
        self.input_scale = self._const(p.scale)
        self.input_shift = self._const(p.shift)
        self.backward_num_scale = self.input_scale / log_base

    def _argument(self, x):
        if self.input_scale != 1:
            x = x * self.input_scale
        if self.input_shift != 0:
            x = x + self.input_shift
        return x

    def forward(self, bottom, top):
        self._keep_input(bottom, top)
        xp = get_array_module(bottom[0].data)
        y = xp.log(self._argument(bottom[0].data))
        if self.base_scale != 1:
            y *= self.base_scale
        top[0].data[...] = y

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            g = 1 / self._argument(self._input(bottom))
            if self.backward_num_scale != 1:
                g *= self.backward_num_scale
            bottom[0].diff[...] = top[0].diff * g


@register("Power", "POWER")
class PowerLayer(_ElementwiseLayer):
    """``y = (shift + scale * x) ^ power`` (``power_param``).

    Backward: ``dx = dy * power * scale * (shift + scale * x) ^ (power - 1)``,
    with Caffe's shortcuts: ``power * scale == 0`` gives ``y = 0^power`` as a
    constant (``1`` if ``power == 0``) and ``dx = 0``; ``power == 1`` gives
    ``dx = dy * scale``; ``power == 2`` gives ``dx = dy * 2 * scale * (shift + scale * x)``;
    ``shift == 0`` gives ``dx = dy * power * y / x``; otherwise
    ``dx = dy * power * scale * y / (shift + scale * x)``.
    Bottom and top: any shape, the same.
    """

    def setup(self, bottom, top):
        p = self.param.power_param
        self.power = self._const(p.power)
        self.scale = self._const(p.scale)
        self.shift = self._const(p.shift)
        self.diff_scale = self.power * self.scale

    def forward(self, bottom, top):
        # Backward reads x unless the gradient is a constant.
        self._keep_input(bottom, top, needed=not (self.diff_scale == 0 or self.power == 1))
        if self.diff_scale == 0:
            value = 1 if self.power == 0 else numpy.power(self.shift, self.power)
            top[0].data[...] = value
            return
        xp = get_array_module(bottom[0].data)
        y = bottom[0].data
        if self.scale != 1:
            y = y * self.scale
        if self.shift != 0:
            y = y + self.shift
        if self.power != 1:
            y = xp.power(y, self.power)
        top[0].data[...] = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.diff_scale == 0:
            bottom[0].diff[...] = 0
            return
        if self.power == 1:
            bottom[0].diff[...] = top[0].diff * self.diff_scale
            return
        x = self._input(bottom)
        y = top[0].data
        with numpy.errstate(divide="ignore", invalid="ignore"):  # 0/0 is NaN, as in Caffe
            if self.power == 2:
                g = (self.diff_scale * self.scale) * x
                if self.shift != 0:
                    g += self.diff_scale * self.shift
            elif self.shift == 0:
                g = y / x
                g *= self.power
            else:
                base = x * self.scale if self.scale != 1 else x
                g = y / (base + self.shift)
                if self.diff_scale != 1:
                    g *= self.diff_scale
        bottom[0].diff[...] = top[0].diff * g


@register("PReLU")
class PReLULayer(_ElementwiseLayer):
    """Parametric ReLU with learned slopes ``a`` (``prelu_param``).

    Forward: ``y = max(x, 0) + a_c * min(x, 0)``, ``c`` the channel (axis 1).
    Backward: ``dx = dy * ((x > 0) + a_c * (x <= 0))``;
    ``da_c += sum over n and spatial positions of dy * x * (x <= 0)``.
    Param blob 0: the slopes, shape ``(C,)``, or ``()`` with
    ``channel_shared: true``; filled by ``prelu_param.filler`` (default
    constant 0.25).  Bottom: at least 2 axes ``(N, C, ...)``; top: the same shape.
    """

    def setup(self, bottom, top):
        p = self.param.prelu_param
        self._check_axes(bottom)
        self.channel_shared = p.channel_shared
        self.channels = bottom[0].shape[1]
        self.blobs = [self.make_blob(() if self.channel_shared else (self.channels,))]
        filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(
            type="constant", value=0.25)
        fill(self.blobs[0], filler)

    def _check_axes(self, bottom):
        if bottom[0].num_axes < 2:
            raise self.error(f"bottom '{self.bottom_name(0)}' must have at least 2 axes "
                             f"(N, C, ...), got shape {bottom[0].shape}")

    def reshape(self, bottom, top):
        self._check_axes(bottom)
        if not self.channel_shared and bottom[0].shape[1] != self.channels:
            raise self.error(f"bottom '{self.bottom_name(0)}' has {bottom[0].shape[1]} "
                             f"channels (shape {bottom[0].shape}), expected {self.channels} "
                             "as at setup")
        super().reshape(bottom, top)

    def _slope(self, ndim):
        a = self.blobs[0].data
        return a if self.channel_shared else a.reshape((1, -1) + (1,) * (ndim - 2))

    def forward(self, bottom, top):
        self._keep_input(bottom, top)
        x = bottom[0].data
        xp = get_array_module(x)
        top[0].data[...] = xp.maximum(x, 0) + self._slope(x.ndim) * xp.minimum(x, 0)

    def backward(self, top, propagate_down, bottom):
        x = self._input(bottom)
        dy = top[0].diff
        xp = get_array_module(dy)
        negative = x <= 0
        # The slope gradient first: in place, bottom diff overwrites dy.
        contrib = dy * x * negative
        if self.channel_shared:
            grad = contrib.sum()
        else:
            grad = contrib.sum(axis=tuple(i for i in range(x.ndim) if i != 1))
        xp.add(self.blobs[0].diff, grad.astype(self.dtype, copy=False), out=self.blobs[0].diff)
        if propagate_down[0]:
            bottom[0].diff[...] = dy * ((x > 0) + self._slope(x.ndim) * negative)


@register("ReLU", "RELU")
class ReLULayer(_ElementwiseLayer):
    """Rectified linear unit, leaky with ``relu_param.negative_slope`` (default 0).

    Forward: ``y = max(x, 0) + negative_slope * min(x, 0)``.
    Backward: ``dx = dy * ((x > 0) + negative_slope * (x <= 0))``.
    Bottom and top: any shape, the same.
    """

    def setup(self, bottom, top):
        self.negative_slope = self._const(self.param.relu_param.negative_slope)

    def forward(self, bottom, top):
        # With a slope >= 0, y > 0 exactly where x > 0: backward can read y in
        # place, as Caffe does.  A negative slope flips signs: keep the input.
        self._keep_input(bottom, top, needed=self.negative_slope < 0)
        x, y = bottom[0].data, top[0].data
        if self.negative_slope == 0:
            relu(x, out=y)
            return
        xp = get_array_module(x)
        negative = xp.minimum(x, 0)
        negative *= self.negative_slope
        relu(x, out=y)
        y += negative

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = self._input(bottom)
            xp = get_array_module(x)
            dy, dx = top[0].diff, bottom[0].diff
            if self.negative_slope == 0:
                xp.multiply(dy, x > 0, out=dx)
                return
            gate = (x > 0).astype(self.dtype)
            gate += self.negative_slope * (x <= 0)
            xp.multiply(dy, gate, out=dx)


def _sigmoid(x):
    """``1 / (1 + exp(-x))``, the form of the HWGQ Caffe the golden data comes from."""
    xp = get_array_module(x)
    with numpy.errstate(over="ignore"):  # exp(-x) = inf gives 0, correctly
        return 1 / (1 + xp.exp(-x))


@register("Sigmoid", "SIGMOID")
class SigmoidLayer(_ElementwiseLayer):
    """Logistic function.

    Forward: ``y = 1 / (1 + exp(-x))``.  Backward: ``dx = dy * y * (1 - y)``.
    Bottom and top: any shape, the same.
    """

    def forward(self, bottom, top):
        top[0].data[...] = _sigmoid(bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * y * (1 - y)


@register("Swish")
class SwishLayer(_ElementwiseLayer):
    """Swish (``swish_param.beta``, default 1).

    Forward: ``y = x * s`` with ``s = sigmoid(beta * x)``.
    Backward: ``dx = dy * (beta * y + s * (1 - beta * y))``.
    Bottom and top: any shape, the same.
    """

    def setup(self, bottom, top):
        self.beta = self._const(self.param.swish_param.beta)
        self._sigmoid_out = None

    def forward(self, bottom, top):
        x = bottom[0].data
        self._sigmoid_out = _sigmoid(x * self.beta)
        top[0].data[...] = x * self._sigmoid_out

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            by = self.beta * top[0].data
            s = self._sigmoid_out
            bottom[0].diff[...] = top[0].diff * (by + s * (1 - by))


@register("TanH", "TANH")
class TanHLayer(_ElementwiseLayer):
    """Hyperbolic tangent.

    Forward: ``y = tanh(x)``.  Backward: ``dx = dy * (1 - y^2)``.
    Bottom and top: any shape, the same.
    """

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        top[0].data[...] = xp.tanh(bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * (1 - y * y)


@register("Threshold", "THRESHOLD")
class ThresholdLayer(_ElementwiseLayer):
    """Step function (``threshold_param.threshold``, default 0).

    Forward: ``y = 1 if x > threshold else 0``.  No backward (as in Caffe):
    asking for a bottom gradient raises ``BackwardNotImplementedError``.
    Bottom and top: any shape, the same.
    """

    def setup(self, bottom, top):
        self.threshold = self._const(self.param.threshold_param.threshold)

    def allow_force_backward(self, bottom_index):
        return False

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data > self.threshold

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise BackwardNotImplementedError(
                self, f"has no backward in Caffe; cannot propagate a gradient to bottom "
                      f"'{self.bottom_name(0)}' (set "
                      "propagate_down: false or remove force_backward)")


@register("Dropout", "DROPOUT")
class DropoutLayer(_ElementwiseLayer):
    """Dropout (``dropout_param.dropout_ratio`` p, default 0.5).

    TRAIN: ``y = x * m * scale`` with ``m ~ Bernoulli(1 - p)`` drawn every
    forward from :func:`pycaffe_lite.rng.generator` and ``scale = 1 / (1 - p)``;
    ``dx = dy * m * scale``.
    TEST: ``y = x``, ``dx = dy``.
    With ``scale_train: false`` (a field of some Caffe forks, absent from BVLC
    and HWGQ) TRAIN does not scale and TEST multiplies by ``1 - p`` instead.
    Bottom and top: any shape, the same.
    """

    def setup(self, bottom, top):
        p = self.param.dropout_param
        ratio = self._const(p.dropout_ratio)
        if not 0 <= ratio < 1:
            raise self.error(f"dropout_param.dropout_ratio must be in [0, 1), got "
                             f"{p.dropout_ratio}")
        self.ratio = ratio
        self.scale_train = getattr(p, "scale_train", True)
        self.scale = self._const(1.0 / (1.0 - float(ratio))) if self.scale_train else None
        self._mask = None

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = get_array_module(x)
        if self.phase == TRAIN:
            keep = rng.generator().random(x.shape) < 1.0 - float(self.ratio)
            self._mask = xp.asarray(keep.astype(self.dtype))
            y = x * self._mask
            if self.scale_train:
                y *= self.scale
            top[0].data[...] = y
        elif self.scale_train:
            if not _in_place(bottom, top):
                top[0].data[...] = x
        else:
            top[0].data[...] = x * (1 - self.ratio)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff
        if self.phase == TRAIN:
            g = dy * self._mask
            if self.scale_train:
                g *= self.scale
            bottom[0].diff[...] = g
        elif self.scale_train:
            if not _in_place(bottom, top):
                bottom[0].diff[...] = dy
        else:
            bottom[0].diff[...] = dy * (1 - self.ratio)
