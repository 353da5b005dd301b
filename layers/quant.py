"""Low-precision layers: Quant, BinaryConvolution, BinaryInnerProduct, BinActiv, ActQuantize.

The HWGQ Caffe fork (github.com/zhaoweicai/hwgq,
``src/caffe/layers/{quant,binary_conv,binary_inner_product}_layer.cpp``) and the
Label-free network compression paper's 8-bit activation ``Quant`` layer, which
shares the type name and is told apart by its parameters (see
:class:`QuantLayer`).

``BinActiv`` is the binary activation of the XNOR-Net Caffe ports
(``ex_layers/binactiv_layer.cpp``): ``sign(x)`` and XNOR-Net's scale map ``K``
(see :class:`BinActivLayer` for where it departs from the ports).

``ActQuantize`` is pycaffe_lite's own activation quantiser
(``act_quantize_param``, LayerParameter field 152, see ``proto/README.md``):
LINEAR or LOG (power-of-two) levels, any bit width, signed or unsigned, a fixed
or calibrated scale, optional noise in TRAIN.  Label-free's Quant (``bits: 7
step: a``, values instead of codes), HWGQ's Quant with uniform centers ``s, 2s,
.., (2^b - 1)s`` (``bits: b step: s rounding: HALF_WAVE``), BinaryNet's sign and
BinActiv's top 0 (``bits: 1 signed: true step: 1``) are special cases of it (see
:class:`ActQuantizeLayer` for where their gradients differ).

Every quantiser here is trained through a straight-through estimator: the
forward is piecewise constant, and the backward passes ``dy`` where the input
lies in a clip range and 0 elsewhere (each layer's docstring gives the range).
That backward is not the derivative of the forward, so gradient tests check it
against references, and against the numeric gradient only where it is one
(ActQuantize with a step so fine that the forward is ``clip(x)``).
"""
import numpy

from pycaffe_lite import parallel, rng
from pycaffe_lite.backend import get_array_module
from pycaffe_lite.engines.im2col import conv_forward
from pycaffe_lite.layer import TRAIN, register
from pycaffe_lite.proto import caffe_pb2

from .conv import ConvolutionLayer, InnerProductLayer, _check_out_shape, _read_geometry
from .neuron import _ElementwiseLayer

# HWGQ forward: up to this many thresholds by comparisons, more by searchsorted.
_HWGQ_COMPARE_MAX = 8

# Weights per block of rows binarised at a time on the CPU (see _binarised).
_BINARISE_BLOCK = 1 << 18

# Label-free: activations are unsigned 8-bit codes 0..127 (7 bits + sign, the sign unused).
LABELFREE_MAX_CODE = 127

_FORWARD_FUNCS = ("hwgq", "sign", "hard_tanh", "relu")
_BACKWARD_FUNCS = ("relu", "hard_tanh")


@register("Quant")
class QuantLayer(_ElementwiseLayer):
    """Activation quantiser, in one of two semantics chosen from the layer's own parameters.

    **HWGQ** (the layer has a ``quant_param``), ``s = quant_param.negative_slope``:

    Forward ``forward_func``:
      - ``hwgq``: ``y = -s`` (a constant) for ``x <= 0``; otherwise ``y = c_j`` for the
        first ``j`` with ``x <= t_j``, where ``c`` are ``centers`` and ``t`` the
        thresholds ``0.5*(c_j + c_(j+1))`` (rounded to the blob dtype, as Caffe stores
        them), or the explicit ``thrs`` (``len(centers) - 1`` values, ascending) when
        given; above the last threshold ``y = c_last``.
      - ``sign``: ``y = +1`` for ``x >= 0``, else ``-1``.
      - ``hard_tanh``: ``y = clip(x, -1, 1)``.
      - ``relu``: ``y = max(x, 0) + s * min(x, 0)``.
    Backward ``backward_func`` (``T = clip_thr``, ``T <= 0`` meaning no clip):
      - ``relu``: ``dx = dy * ((x > 0) + s * (x <= 0)) * (x <= T)``.
      - ``hard_tanh``: ``dx = dy * (-T <= x <= T)``.
    Neither is the derivative of the forward (straight-through estimators).

    **Label-free** (no ``quant_param``; step ``a = relu_param.negative_slope > 0``):

    Forward: ``y = clip(floor(x / a + 0.5), 0, 127)`` for ``x > 0``, else ``0`` (the
    integer code; a following Scale layer multiplies by ``a``).
    Backward: ``dx = dy / a`` where ``0 < x < 127.5 * a`` (inside the clip range,
    i.e. where the code is not saturated), else ``0``: the straight-through
    estimator of ``x / a``.  **Difference from the original**: the Label-free
    layer's backward is empty (it is used only for post-training quantisation and
    leaves the bottom diff untouched); here it has this gradient so that a
    Label-free net can be fine-tuned.

    Bottom and top: any shape, the same; may run in place (the input is kept for
    backward, whereas Caffe would read the overwritten output there).
    """

    def setup(self, bottom, top):
        self.labelfree = not self.param.HasField("quant_param")
        if self.labelfree:
            self._setup_labelfree()
        else:
            self._setup_hwgq()

    def _setup_labelfree(self):
        step = float(self.param.relu_param.negative_slope)
        if not step > 0:
            raise self.error(
                "Quant without quant_param uses the Label-free semantics, whose step is "
                f"relu_param.negative_slope: got {step}, expected a value > 0 (or give a "
                "quant_param for the HWGQ semantics)")
        self.step = self._const(step)

    def _setup_hwgq(self):
        qp = self.param.quant_param
        self.forward_func = qp.forward_func
        self.backward_func = qp.backward_func
        if self.forward_func not in _FORWARD_FUNCS:
            raise self.error(f"quant_param.forward_func: got '{self.forward_func}', expected "
                             f"one of {', '.join(_FORWARD_FUNCS)}")
        if self.backward_func not in _BACKWARD_FUNCS:
            raise self.error(f"quant_param.backward_func: got '{self.backward_func}', expected "
                             f"one of {', '.join(_BACKWARD_FUNCS)}")
        self.negative_slope = self._const(qp.negative_slope)
        clip_thr = float(numpy.float32(qp.clip_thr))
        # Caffe keeps clip_thr in a float; <= 0 means FLT_MAX (no clipping).
        self.clip_thr = self._const(clip_thr) if clip_thr > 0 else None
        if self.forward_func == "hwgq":
            self._setup_levels(qp)

    def _setup_levels(self, qp):
        centers = numpy.asarray(list(qp.centers), dtype=self.dtype)
        if centers.size == 0:
            raise self.error("quant_param.centers: got none, expected at least one positive "
                             "center for forward_func 'hwgq'")
        if (centers <= 0).any():
            raise self.error(f"quant_param.centers: got {list(qp.centers)}, expected every "
                             "center > 0")
        if len(qp.thrs):
            thrs = numpy.asarray(list(qp.thrs), dtype=self.dtype)
            if thrs.size != centers.size - 1:
                raise self.error(f"quant_param.thrs: got {thrs.size} thresholds, expected "
                                 f"{centers.size - 1} (one fewer than the centers)")
        else:
            # float32 midpoints, as Caffe computes them into its Dtype blob
            thrs = (centers[:-1] + centers[1:]) * self.dtype.type(0.5)
        if (numpy.diff(thrs) < 0).any():
            raise self.error(f"quant_param thresholds {thrs.tolist()} must be ascending")
        self.centers = self.xp.asarray(centers)
        self.thrs = self.xp.asarray(thrs)
        self._thrs_host = list(thrs)          # dtype scalars, for the comparisons

    # -- forward -------------------------------------------------------------
    def forward(self, bottom, top):
        self._keep_input(bottom, top)
        self._by_pieces(self._forward_piece, bottom[0].data, top[0].data)

    def _forward_piece(self, x, y):
        xp = get_array_module(x)
        if self.labelfree:
            code = xp.floor(x / self.step + self.dtype.type(0.5))
            xp.clip(code, 0, LABELFREE_MAX_CODE, out=code)
            y[...] = xp.where(x > 0, code, self.dtype.type(0))
        elif self.forward_func == "hwgq":
            # The first j with x <= t_j (past the last threshold: the last center) is
            # the number of thresholds below x: a few comparisons for HWGQ's 1-3
            # thresholds, searchsorted's left side for many.
            if len(self._thrs_host) <= _HWGQ_COMPARE_MAX:
                index = xp.zeros(x.shape, dtype=numpy.uint8)
                for t in self._thrs_host:
                    index += x > t
            else:
                index = xp.searchsorted(self.thrs, x.ravel(), side="left").reshape(x.shape)
            y[...] = xp.where(x > 0, self.centers[index], -self.negative_slope)
        elif self.forward_func == "sign":
            y[...] = xp.where(x >= 0, self.dtype.type(1), self.dtype.type(-1))
        elif self.forward_func == "hard_tanh":
            xp.clip(x, -1, 1, out=y)
        else:  # relu
            y[...] = xp.maximum(x, 0) + self.negative_slope * xp.minimum(x, 0)

    # -- backward ------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            # In place, dx is dy: each piece reads its dy before writing its dx.
            self._by_pieces(self._backward_piece, self._input(bottom), top[0].diff,
                            bottom[0].diff)

    def _backward_piece(self, x, dy, dx):
        xp = get_array_module(x)
        if self.labelfree:
            inside = (x > 0) & (x < self.step * self.dtype.type(LABELFREE_MAX_CODE + 0.5))
            dx[...] = xp.where(inside, dy / self.step, self.dtype.type(0))
            return
        thr = self.clip_thr
        if self.backward_func == "hard_tanh":
            gate = (x >= -thr) & (x <= thr) if thr is not None else None
            if gate is None:
                dx[...] = dy
            else:
                xp.multiply(dy, gate, out=dx)
            return
        # relu
        gate = (x > 0).astype(self.dtype)
        if self.negative_slope != 0:
            gate += self.negative_slope * (x <= 0)
        if thr is not None:
            gate *= x <= thr
        xp.multiply(dy, gate, out=dx)


def _binarised(layer, weight, param):
    """``sign(W) * alpha`` per output (first axis), ``sign(0) = +1``; ``alpha`` is
    ``mean(|W|)`` over that output's weights with ``use_alpha``, else 1.  Without
    ``use_binarization``: ``W`` itself.

    Computed into a buffer of the layer's (overwritten by its next forward) in
    blocks of rows, on :mod:`pycaffe_lite.parallel`'s threads: a block's weights
    stay in cache for the two passes (fc6 of the HWGQ AlexNet: 38M weights every
    forward).  ``2a * [W >= 0] - a`` is exactly ``+-a`` (a doubling, then a
    subtraction of values within a factor of two).
    """
    if not param.use_binarization:
        return weight
    xp = get_array_module(weight)
    rows = weight.reshape(weight.shape[0], -1)
    buffer = getattr(layer, "_binary_buffer", None)
    if buffer is None or buffer.shape != weight.shape or buffer.dtype != weight.dtype:
        buffer = layer._binary_buffer = xp.empty_like(weight)
    out = buffer.reshape(rows.shape)
    step = max(1, _BINARISE_BLOCK // max(rows.shape[1], 1)) if xp is numpy else rows.shape[0]
    one = layer.dtype.type(1)

    def block(part, _):
        w = rows[part]
        if param.use_alpha:
            alpha = xp.abs(w).mean(axis=1, dtype=weight.dtype, keepdims=True)
        else:
            alpha = xp.full((w.shape[0], 1), one, dtype=weight.dtype)
        xp.multiply(w >= 0, alpha + alpha, out=out[part])
        out[part] -= alpha
    parallel.for_each(parallel.slices(rows.shape[0], step), block)
    return buffer


@register("BinaryConvolution")
class BinaryConvolutionLayer(ConvolutionLayer):
    """Convolution with binarised weights (HWGQ's BinaryConvolutionLayer).

    Geometry, group, bias and fillers come from ``convolution_param``;
    ``binary_convolution_param`` has ``use_binarization`` (default true) and
    ``use_alpha`` (default false).  Forward: ``y = conv(x, Wb) + b`` with
    ``Wb[m] = sign(W[m]) * alpha_m``, ``sign(0) = +1``, ``alpha_m = mean |W[m]|``
    over output ``m``'s ``C/group * prod(kernel)`` weights (1 without ``use_alpha``),
    recomputed every forward.  Backward (straight-through): ``dx = conv^T(dy, Wb)``;
    ``dW += sum_{n,o} dy * x_pad`` (the ordinary convolution weight gradient, with no
    alpha term and no ``|W| <= 1`` mask), accumulated into the real-valued ``W``;
    ``db += sum dy``.  Bottom ``[N, C, *in]``, top ``[N, num_output, *out]`` as
    Convolution.
    """

    def effective_weight(self):
        return _binarised(self, self.blobs[0].data, self.param.binary_convolution_param)


@register("BinaryInnerProduct")
class BinaryInnerProductLayer(InnerProductLayer):
    """InnerProduct with binarised weights (HWGQ's BinaryInnerProductLayer).

    ``inner_product_param`` gives num_output, bias, axis and fillers (its
    ``transpose`` is ignored, as in HWGQ: weight ``[N, K]``);
    ``binary_inner_product_param`` has ``use_binarization`` (default true) and
    ``use_alpha`` (default false).  Forward: ``y = x Wb^T + b`` with ``Wb[n] =
    sign(W[n]) * alpha_n``, ``sign(0) = +1``, ``alpha_n = mean_k |W[n, k]|`` (1
    without ``use_alpha``).  Backward (straight-through): ``dx = dy Wb``, ``dW +=
    dy^T x`` into the real-valued ``W``, ``db += sum_rows dy``.  Bottom ``[*lead,
    *rest]`` flattened from ``axis``, top ``[*lead, num_output]``.
    """

    honours_transpose = False

    def effective_weight(self):
        return _binarised(self, self.blobs[0].data, self.param.binary_inner_product_param)


@register("BinActiv")
class BinActivLayer(_ElementwiseLayer):
    """XNOR-Net binary activation with its scale map (the XNOR-Net Caffe ports' BinActiv).

    Top 0: ``B = sign(x)``, ``+1`` for ``x >= 0``, else ``-1`` (HWGQ's sign).
    Optional top 1: ``K = box(A)`` with ``A[n, 0, p] = mean_c |x[n, c, p]|``, ``box`` a
    convolution with the layer's one param blob ``F`` (the averaging filter, shape
    ``[1, 1, *kernel]``, each element ``1 / prod(kernel)``) and the ``kernel_size``,
    ``stride``, ``pad`` and ``dilation`` of ``convolution_param``, which describes the
    FOLLOWING (binary) convolution, so that ``K`` has its output's spatial shape and
    ``conv(x, W) ~ conv(B, sign(W)) * K * alpha``.  Zero padding counts in the mean
    (a border window averages its padded zeros), as in the ports.

    Backward (straight-through, of top 0 only): ``dx = dy0 * (|x| <= 1)``.  A diff on
    top 1 is ignored, as in the ports (their XnorNet layer never propagates ``K``): K is
    treated as a constant, so connect it only where that is wanted.

    The param blob ``F``: the layer owns it whenever ``convolution_param`` gives a
    kernel (with one top or two, so that the blobs depend on the prototxt only).  A
    caffemodel that holds it loads into it (the loaded filter is the one used); one
    without it (the ports' own, whose inner Convolution's weights never reach the
    layer's blobs) leaves the default box filter.  It has no gradient and is not
    learned: ``param { lr_mult: 0 }`` is added when the prototxt gives no spec, and a
    non-zero ``lr_mult`` is an error (with lr_mult 0 no weight decay applies either).
    Models saved here hold the blob, which the ports' Caffe would refuse to load
    (blob count mismatch).

    Differences from the ports, on purpose: ``A`` is the channel mean of ``|x|`` (XNOR-Net's
    formula; the ports average ``x`` itself); the window's size is ``prod(kernel)`` (the
    ports use ``kernel_size[0]**2``, wrong for non-square kernels); ``num_output``,
    ``group``, ``bias_term`` and the fillers of ``convolution_param`` are ignored (a port
    variant took them for its inner convolution, giving ``num_output`` random K maps);
    the top 1 is optional (the ports require it; one variant drops it with
    ``binactiv_param { no_k: true }``, a message not in our schema).

    Bottom ``[N, C, *spatial]`` (any shape with one top and no kernel); top 0 the same
    (may be in place); top 1 ``[N, 1, *out]`` with Convolution's
    ``out = (in + 2*pad - dilation*(kernel-1) - 1) / stride + 1``.
    """

    exact_tops = None
    min_tops = 1
    max_tops = 2

    def setup(self, bottom, top):
        cp = self.param.convolution_param
        has_kernel = bool(len(cp.kernel_size) or cp.HasField("kernel_h")
                          or cp.HasField("kernel_w"))
        self.geom = None
        if len(top) == 2 and not has_kernel:
            raise self.error("top 1 (K) needs convolution_param.kernel_size (or kernel_h/"
                             "kernel_w) of the following convolution; got none")
        if len(top) == 2 and top[1] is bottom[0]:
            raise self.error("top 1 (K) cannot be computed in place over the bottom "
                             f"'{self.bottom_name(0)}'; give it a blob of its own")
        if not has_kernel:
            return
        if bottom[0].num_axes < 3:
            raise self.error(f"bottom '{self.bottom_name(0)}' has shape {bottom[0].shape}; the "
                             "K window (convolution_param) needs [N, C, *spatial]")
        channel_axis, _, self.geom = _read_geometry(self, cp, bottom)
        if channel_axis != 1:
            raise self.error(f"convolution_param.axis: got {cp.axis}, expected 1 (channels "
                             "follow the batch axis)")
        window = self.make_blob((1, 1) + self.geom.kernel)
        window.data[...] = 1.0 / self.geom.kernel_count
        self.blobs = [window]
        self.freeze_param_blobs("the K averaging filter")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        top[0].reshape(shape)
        if len(top) < 2:
            return
        if len(shape) != 2 + len(self.geom.kernel):
            raise self.error(f"bottom '{self.bottom_name(0)}' has shape {shape}; expected "
                             f"{2 + len(self.geom.kernel)} axes (as at setup)")
        out = self.geom.conv_out_shape(shape[2:])
        _check_out_shape(self, shape[2:], self.geom, out, 0)
        top[1].reshape((shape[0], 1) + tuple(out))

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = get_array_module(x)
        if len(top) == 2:  # before top 0 may overwrite x
            mean_abs = xp.abs(x).mean(axis=1, keepdims=True, dtype=self.dtype)
            conv_forward(mean_abs, self.blobs[0].data, self.geom, 1, top[1].data)
        self._keep_input(bottom, top)
        one = self.dtype.type(1)
        top[0].data[...] = xp.where(x >= 0, one, -one)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = self._input(bottom)
        xp = get_array_module(x)
        bottom[0].diff[...] = xp.where(xp.abs(x) <= 1, top[0].diff, self.dtype.type(0))


_ACT_Q = caffe_pb2.ActQuantizeParameter
ACT_QUANTIZE_MAX_BITS = 32


@register("ActQuantize")
class ActQuantizeLayer(_ElementwiseLayer):
    """Activation quantiser: LINEAR or LOG levels, ``bits``, signed or not (``act_quantize_param``).

    Let ``T`` be the top level (largest magnitude) and ``n`` the number of positive
    levels: unsigned ``n = 2^bits - 1``, signed ``n = 2^(bits-1) - 1`` (a sign bit, then
    levels symmetric around 0; the two's-complement code ``-2^(bits-1)`` is unused).
    The scale is exactly one of: ``step`` (LINEAR only; ``T = n * step``), ``max``
    (``T = max``; LINEAR ``step = T / n``), or ``calibrate``: ``T`` is set by the first
    TRAIN forward to ``max(x)`` (unsigned) or ``max |x|`` (signed) of that batch and kept
    in the layer's one param blob (shape ``[1]``, 0 = not yet calibrated; a batch whose
    statistic is 0 leaves it unset).  The blob is saved with the weights, shared with the
    solver's test nets, loaded by ``copy_from``, and never learned (``param { lr_mult: 0
    }`` is added; a non-zero lr_mult is an error).  A TEST forward before calibration
    uses its own batch's statistic without storing it.

    Forward, with ``z = x`` (or ``x + u``, see noise), ``T > 0``:
      - LINEAR, ``rounding: NEAREST``: ``q = clip(floor(z / step + 0.5), -n or 0, n)``,
        ``y = q * step``.
      - LINEAR, ``rounding: HALF_WAVE`` (HWGQ's, unsigned only): ``y = 0`` for ``z <= 0``,
        else ``y = step * clip(ceil(z / step - 0.5), 1, n)`` (no positive input becomes
        0; ties go down).
      - LOG: ``m = T * 2^e`` with ``e = min(floor(log2(|z| / T) + 0.5), 0)`` (nearest
        in the log domain), ``m = 0`` where ``e < -(n - 1)`` (below the smallest level
        ``T * 2^-(n-1)``); ``y = sign(z) * m`` signed, ``y = m`` for ``z > 0`` (else 0)
        unsigned.
      - Signed 1 bit (``n`` would be 0), LINEAR or LOG: BinaryNet's sign, ``y = +T`` for
        ``z >= 0``, else ``-T`` (``T = step`` or ``max``).  Unsigned 1 bit is the
        general rule with levels ``{0, T}``: ``y = T`` for ``z >= T/2`` (LOG: ``z >=
        T/sqrt(2)``), else 0; a threshold, not a sign.
    ``T = 0`` (a zero calibration statistic): ``y = 0``.

    Noise (``noise: true``, LINEAR only, TRAIN only, never in TEST): ``z = x + u`` with
    ``u`` uniform in ``[-s/2, s/2)``, ``s`` the spacing of adjacent levels (``step``;
    ``2T`` for the sign), drawn from :func:`pycaffe_lite.rng.generator` every forward:
    stochastic rounding, whose mean over the noise is ``x`` inside the range.

    Backward (straight-through): ``dx = dy`` where ``x`` (without noise) lies in the
    representable range ``[-T, T]`` (signed) or ``[0, T]`` (unsigned), else 0.

    Special cases (tests/layers/test_quant.py builds each pair and compares them):
      - Label-free's Quant (step ``a``) then a Scale by ``a``: ``bits: 7 step: a``, the
        same values; the STE differs at the range ends by design (Label-free passes
        ``0 < x < 127.5 a``, this layer ``0 <= x <= 127 a``).
      - HWGQ's Quant, ``forward_func: "hwgq"``, centers ``s, 2s, .., (2^b - 1)s``,
        ``backward_func: "relu"``, ``clip_thr`` the last center: ``bits: b step: s
        rounding: HALF_WAVE``, the same values (thresholds up to float rounding) and STE
        but at ``x = 0`` (HWGQ passes ``x > 0`` only).
      - BinaryNet's sign (HWGQ's Quant ``sign`` with ``hard_tanh`` clip 1, BinActiv's
        top 0): ``bits: 1 signed: true step: 1``, values and STE.

    Bottom and top: any shape, the same; may run in place (the input is kept for
    backward).
    """

    def setup(self, bottom, top):
        p = self.param.act_quantize_param
        bits = int(p.bits)
        if not 1 <= bits <= ACT_QUANTIZE_MAX_BITS:
            raise self.error(f"act_quantize_param.bits: got {bits}, expected 1 to "
                             f"{ACT_QUANTIZE_MAX_BITS}")
        self.log = p.levels == _ACT_Q.LOG
        self.signed = bool(p.signed)
        self.sign_only = self.signed and bits == 1
        self.n = 1 if self.sign_only else (1 << (bits - 1 if self.signed else bits)) - 1
        self.half_wave = p.rounding == _ACT_Q.HALF_WAVE
        self.noise = bool(p.noise)
        levels = "LOG" if self.log else "LINEAR"
        scales = [f for f in ("step", "max") if p.HasField(f)] + (
            ["calibrate"] if p.calibrate else [])
        if len(scales) != 1:
            raise self.error("act_quantize_param needs exactly one of step, max and calibrate; "
                             f"got {' and '.join(scales) if scales else 'none'}")
        if self.log and p.HasField("step"):
            raise self.error("act_quantize_param.step applies to levels: LINEAR only; got "
                             "levels: LOG (give max or calibrate)")
        if self.half_wave and (self.log or self.signed):
            raise self.error("act_quantize_param.rounding: HALF_WAVE needs levels: LINEAR and "
                             f"signed: false; got levels: {levels}, signed: "
                             f"{str(self.signed).lower()}")
        if self.noise and self.log:
            raise self.error("act_quantize_param.noise needs levels: LINEAR (uniform steps); "
                             "got levels: LOG")
        self.calibrate = bool(p.calibrate)
        self.fixed_step = None
        if self.calibrate:
            self.blobs = [self.make_blob((1,))]
            self.blobs[0].data[...] = 0
            self.freeze_param_blobs("the calibrated top level")
            return
        name = scales[0]
        value = float(getattr(p, name))
        if not (value > 0 and numpy.isfinite(value)):
            raise self.error(f"act_quantize_param.{name}: got {value}, expected a finite "
                             "value > 0")
        if name == "step":
            self.fixed_step = self._const(value)
            self.fixed_top = self.fixed_step * self.dtype.type(self.n)
        else:
            self.fixed_top = self._const(value)

    # -- the scale -----------------------------------------------------------
    def _statistic(self, x):
        xp = get_array_module(x)
        if x.size == 0:
            return self.dtype.type(0)
        peak = xp.abs(x).max() if self.signed else xp.maximum(x.max(), 0)
        return self.dtype.type(float(peak))

    def top_level(self, x=None):
        """``T`` for a forward over ``x`` (calibrating on the first TRAIN batch)."""
        if not self.calibrate:
            return self.fixed_top
        stored = self.blobs[0].data
        value = self.dtype.type(float(stored[0]))
        if value > 0 or x is None:
            return value
        value = self._statistic(x)
        if self.phase == TRAIN and value > 0:
            stored[...] = value
        return value

    def _step(self, top_level):
        if self.fixed_step is not None:
            return self.fixed_step
        return top_level / self.dtype.type(self.n)

    # -- forward -------------------------------------------------------------
    def forward(self, bottom, top):
        x = bottom[0].data
        xp = get_array_module(x)
        t = self.top_level(x)  # before top 0 may overwrite x
        self._range = (-t if self.signed else self.dtype.type(0), t)
        self._keep_input(bottom, top)
        zero = self.dtype.type(0)
        if t == 0:
            top[0].data[...] = zero
            return
        step = self._step(t)
        z = x
        if self.noise and self.phase == TRAIN:
            spacing = 2 * step if self.sign_only else step
            u = rng.generator().random(x.shape) - 0.5
            z = x + xp.asarray(u.astype(self.dtype)) * spacing
        if self.sign_only:
            y = xp.where(z >= 0, t, -t)
        elif self.log:
            y = self._log_levels(z, t, xp)
        elif self.half_wave:
            q = xp.ceil(z / step - self.dtype.type(0.5))
            xp.clip(q, 1, self.n, out=q)
            y = xp.where(z > 0, q * step, zero)
        else:
            q = xp.floor(z / step + self.dtype.type(0.5))
            xp.clip(q, -self.n if self.signed else 0, self.n, out=q)
            y = q * step
        top[0].data[...] = y

    def _log_levels(self, z, t, xp):
        magnitude = xp.abs(z) if self.signed else xp.maximum(z, 0)
        tiny = self.dtype.type(numpy.finfo(self.dtype).tiny)  # log2(0) is -inf: keep finite
        e = xp.floor(xp.log2(xp.maximum(magnitude, tiny) / t) + self.dtype.type(0.5))
        xp.minimum(e, 0, out=e)
        level = xp.where(e < -(self.n - 1), self.dtype.type(0), t * xp.exp2(e))
        return xp.where(z < 0, -level, level) if self.signed else level

    # -- backward ------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = self._input(bottom)
        xp = get_array_module(x)
        lo, hi = self._range
        inside = (x >= lo) & (x <= hi)
        bottom[0].diff[...] = xp.where(inside, top[0].diff, self.dtype.type(0))
