"""Low-precision layers: Quant, BinaryConvolution, BinaryInnerProduct.

The HWGQ Caffe fork (github.com/zhaoweicai/hwgq,
``src/caffe/layers/{quant,binary_conv,binary_inner_product}_layer.cpp``) and the
Label-free network compression paper's 8-bit activation ``Quant`` layer, which
shares the type name and is told apart by its parameters (see
:class:`QuantLayer`).
"""
import numpy

from pycaffe_lite.backend import get_array_module
from pycaffe_lite.layer import register

from .conv import ConvolutionLayer, InnerProductLayer
from .neuron import _ElementwiseLayer

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

    # -- forward -------------------------------------------------------------
    def forward(self, bottom, top):
        self._keep_input(bottom, top)
        x, y = bottom[0].data, top[0].data
        xp = get_array_module(x)
        if self.labelfree:
            code = xp.floor(x / self.step + self.dtype.type(0.5))
            xp.clip(code, 0, LABELFREE_MAX_CODE, out=code)
            y[...] = xp.where(x > 0, code, self.dtype.type(0))
        elif self.forward_func == "hwgq":
            # first j with x <= t_j: searchsorted's left side; past the last threshold
            # the index is len(thrs), the last center
            level = self.centers[xp.searchsorted(self.thrs, x.ravel(), side="left")]
            y[...] = xp.where(x > 0, level.reshape(x.shape), -self.negative_slope)
        elif self.forward_func == "sign":
            y[...] = xp.where(x >= 0, self.dtype.type(1), self.dtype.type(-1))
        elif self.forward_func == "hard_tanh":
            xp.clip(x, -1, 1, out=y)
        else:  # relu
            y[...] = xp.maximum(x, 0) + self.negative_slope * xp.minimum(x, 0)

    # -- backward ------------------------------------------------------------
    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = self._input(bottom)
        xp = get_array_module(x)
        dy, dx = top[0].diff, bottom[0].diff
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
    ``use_binarization``: ``W`` itself."""
    if not param.use_binarization:
        return weight
    xp = get_array_module(weight)
    one = layer.dtype.type(1)
    binary = xp.where(weight >= 0, one, -one)
    if param.use_alpha:
        rows = weight.reshape(weight.shape[0], -1)
        alpha = xp.abs(rows).mean(axis=1, dtype=weight.dtype)
        binary = binary * alpha.reshape((-1,) + (1,) * (weight.ndim - 1))
    return binary


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
