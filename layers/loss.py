"""Loss layers and Accuracy.

Every loss writes one 0-d top and scales its gradient by that top's diff (the
loss weight, ``top[0]->cpu_diff()[0]`` in Caffe).  Label bottoms never receive
gradients: they are excluded from ``force_backward`` and asking for their
gradient is an error, as in Caffe.  Labels are stored as floats and read the
way Caffe's ``static_cast<int>`` reads them (truncation toward zero).
"""
import numpy

from pycaffe_lite.backend import get_array_module
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.io.files import read_blob
from pycaffe_lite.layer import Layer, LossLayer, register
from pycaffe_lite.proto import caffe_pb2

from .normalization import softmax

_Mode = caffe_pb2.LossParameter
# Caffe's kLOG_THRESHOLD (loss_layer.hpp) and FLT_MIN (SoftmaxWithLoss).
LOG_THRESHOLD = 1e-20
FLT_MIN = float(numpy.finfo(numpy.float32).tiny)


def normalization_mode(loss_param, default):
    """The NormalizationMode a loss uses: ``normalization`` when set, else the
    legacy ``normalize`` (true = VALID, false = BATCH_SIZE), else ``default``."""
    if loss_param.HasField("normalization"):
        return loss_param.normalization
    if loss_param.HasField("normalize"):
        return _Mode.VALID if loss_param.normalize else _Mode.BATCH_SIZE
    return default


def get_normalizer(mode, outer_num, inner_num, valid_count=None, dtype=None):
    """Caffe's ``get_normalizer``: the divisor of a summed loss, at least 1.

    FULL = outer*inner, VALID = ``valid_count`` (outer*inner when None),
    BATCH_SIZE = outer, NONE = 1.  ``valid_count`` may be an array count (kept
    on the device); the result is then a 0-d array of ``dtype``, else a float.
    """
    if mode == _Mode.FULL:
        n = outer_num * inner_num
    elif mode == _Mode.VALID:
        n = outer_num * inner_num if valid_count is None else valid_count
    elif mode == _Mode.BATCH_SIZE:
        n = outer_num
    elif mode == _Mode.NONE:
        n = 1
    else:
        raise ValueError(f"unknown loss normalization mode {mode}")
    if isinstance(n, (int, float)):
        return float(max(1, n))
    xp = get_array_module(n)
    return xp.asarray(xp.maximum(n, 1), dtype=dtype)


class _OneLabelPerItem:
    """Loss layers whose second bottom holds one label per item of the batch."""

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        n = bottom[0].shape[0]
        if bottom[1].count != n:
            raise self.error(f"bottom '{self.bottom_name(1)}' has shape {bottom[1].shape}, "
                             f"expected {n} labels (one per item)")


class _LabelMixin:
    """Reading integer labels and refusing gradients for label bottoms."""

    label_bottoms = (1,)

    def allow_force_backward(self, bottom_index):
        return bottom_index not in self.label_bottoms

    def refuse_label_backward(self, propagate_down):
        for i in self.label_bottoms:
            if i < len(propagate_down) and propagate_down[i]:
                raise self.error(f"cannot backpropagate to bottom {i} "
                                 f"'{self.bottom_name(i)}' (labels get no gradient)")

    def read_labels(self, blob, index, num_classes, valid=None):
        """Integer labels of ``blob``; every label where ``valid`` must lie in
        [0, num_classes).  Returns the labels with invalid ones set to 0."""
        xp = get_array_module(blob.data)
        labels = blob.data.astype(xp.int64)
        bad = (labels < 0) | (labels >= num_classes)
        if valid is not None:
            bad &= valid
            labels = xp.where(valid, labels, 0)
        if bool(bad.any()):
            first = blob.data[bad].ravel()[0]
            raise self.error(f"label {float(first):g} in bottom '{self.bottom_name(index)}' "
                             f"is out of range, expected an integer in [0, {num_classes})")
        return labels

    def ignore_mask(self, labels_float, ignore_label):
        """True where the label is not ``ignore_label`` (None: all True)."""
        xp = get_array_module(labels_float)
        if ignore_label is None:
            return xp.ones(labels_float.shape, dtype=bool)
        return labels_float.astype(xp.int64) != ignore_label


def _axis_split(layer, blob, axis, what):
    """(outer, classes, inner) of ``blob`` around ``axis`` (Caffe's CanonicalAxisIndex)."""
    n = blob.num_axes
    if not -n <= axis < n:
        raise layer.error(f"{what} {axis} out of range for bottom '{layer.bottom_name(0)}' "
                          f"of shape {blob.shape}")
    axis = axis + n if axis < 0 else axis
    return axis, blob.count_range(0, axis), blob.shape[axis], blob.count_range(axis + 1)


def _check_label_count(layer, bottom, outer, inner, axis):
    if bottom[1].count != outer * inner:
        raise layer.error(
            f"bottom '{layer.bottom_name(1)}' holds {bottom[1].count} labels {bottom[1].shape}, "
            f"expected {outer * inner}: one per prediction (outer {outer} x inner {inner} "
            f"around the class axis {axis} of '{layer.bottom_name(0)}' {bottom[0].shape})")


@register("Accuracy", "ACCURACY")
class AccuracyLayer(_LabelMixin, Layer):
    """Top-k classification accuracy (no gradient).

    bottom[0] scores, class axis ``axis`` with K classes: (outer, K, inner);
    bottom[1] labels, outer*inner values in [0, K).
    A prediction is correct when ``#{k != label : x_k >= x_label} < top_k``
    (Caffe's rule: ties count against the label).  Positions whose label is
    ``ignore_label`` are skipped.
    top[0] (0-d) = correct / counted (0 when nothing is counted);
    optional top[1] (K,) = per-class accuracy (0 for classes without samples).
    Backward: not defined; asking for it is an error.
    """

    exact_bottoms = 2
    min_tops = 1
    max_tops = 2

    def allow_force_backward(self, bottom_index):
        # Caffe aborts when force_backward reaches Accuracy's prediction bottom.
        return bottom_index == 0

    def setup(self, bottom, top):
        p = self.param.accuracy_param
        self.top_k = p.top_k
        self.axis = p.axis
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None

    def reshape(self, bottom, top):
        axis, outer, k, inner = _axis_split(self, bottom[0], self.axis, "accuracy_param.axis")
        if bottom[1].count == 0 or self.top_k > bottom[0].count // bottom[1].count:
            raise self.error(f"accuracy_param.top_k {self.top_k} must be at most the number of "
                             f"classes {bottom[0].count // max(bottom[1].count, 1)}")
        _check_label_count(self, bottom, outer, inner, axis)
        self.dims = (outer, k, inner)
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((k,))

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        outer, k, inner = self.dims
        x = bottom[0].data.reshape(outer, k, inner)
        raw = bottom[1].data.reshape(outer, inner)
        valid = self.ignore_mask(raw, self.ignore_label)
        labels = self.read_labels(bottom[1], 1, k, valid.reshape(bottom[1].shape))
        labels = labels.reshape(outer, inner)
        true_score = xp.take_along_axis(x, labels[:, None, :], axis=1)
        better = (x >= true_score).sum(axis=1) - 1
        correct = (better < self.top_k) & valid
        count = valid.sum()
        dtype = top[0].data.dtype
        accuracy = xp.where(count > 0, correct.sum() / xp.maximum(count, 1), 0)
        top[0].data[...] = accuracy.astype(dtype)
        if len(top) > 1:
            flat = labels.ravel()
            seen = xp.bincount(flat, weights=valid.ravel().astype(dtype), minlength=k)
            hits = xp.bincount(flat, weights=correct.ravel().astype(dtype), minlength=k)
            top[1].data[...] = xp.where(seen > 0, hits / xp.maximum(seen, 1), 0).astype(dtype)

    def backward(self, top, propagate_down, bottom):
        for i, down in enumerate(propagate_down):
            if down:
                raise self.error(f"Accuracy has no backward, but a gradient was requested for "
                                 f"bottom {i} '{self.bottom_name(i)}' (remove force_backward "
                                 f"or the Accuracy layer from this phase)")


@register("ContrastiveLoss", "CONTRASTIVE_LOSS")
class ContrastiveLossLayer(_LabelMixin, LossLayer):
    """Contrastive loss of feature pairs (Hadsell et al. 2006).

    bottom[0] a, bottom[1] b: (N, C[, 1, 1]); bottom[2] sim: N values, a pair is
    similar when ``int(sim) != 0``.  With d_n = ||a_n - b_n||_2:
      E = 1/(2N) sum_n [ sim_n d_n^2 + (1 - sim_n) max(margin - d_n, 0)^2 ]
    or, with ``legacy_version``, ``max(margin - d_n^2, 0)`` for dissimilar pairs.
    Gradient (w = loss weight, sign +1 for a, -1 for b):
      similar:    sign * w/N * (a - b)
      dissimilar: -sign * w/N * (margin - d)/(d + 1e-4) * (a - b)  if margin - d > 0
                  (legacy: -sign * w/N * (a - b) if margin - d^2 > 0), else 0.
    Both feature bottoms get gradients; sim gets none (Caffe leaves it untouched).
    top[0]: 0-d loss.
    """

    exact_bottoms = 3
    label_bottoms = (2,)

    def setup(self, bottom, top):
        p = self.param.contrastive_loss_param
        self.margin = p.margin
        self.legacy = p.legacy_version

    def reshape(self, bottom, top):
        a, b, sim = bottom
        n = a.shape[0] if a.num_axes else 1
        if a.num_axes < 2 or a.count != n * a.shape[1]:
            raise self.error(f"bottom '{self.bottom_name(0)}' has shape {a.shape}, expected "
                             f"(N, C) or (N, C, 1, 1)")
        if b.shape[:1] != (n,) or b.count != a.count or b.shape[1:2] != a.shape[1:2]:
            raise self.error(f"bottom '{self.bottom_name(1)}' has shape {b.shape}, expected the "
                             f"shape of '{self.bottom_name(0)}' {a.shape}")
        if sim.shape[:1] != (n,) or sim.count != n:
            raise self.error(f"bottom '{self.bottom_name(2)}' has shape {sim.shape}, expected "
                             f"{n} similarity labels, shape ({n},) or ({n}, 1, 1, 1)")
        top[0].reshape(())

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        n = bottom[0].shape[0]
        self.diff = (bottom[0].data - bottom[1].data).reshape(n, -1)
        self.dist_sq = (self.diff * self.diff).sum(axis=1)
        self.similar = bottom[2].data.reshape(n).astype(xp.int64) != 0
        if self.legacy:
            dissimilar = xp.maximum(self.margin - self.dist_sq, 0)
        else:
            dissimilar = xp.maximum(self.margin - xp.sqrt(self.dist_sq), 0) ** 2
        loss = xp.where(self.similar, self.dist_sq, dissimilar).sum()
        top[0].data[...] = loss / n / 2

    def backward(self, top, propagate_down, bottom):
        xp = get_array_module(self.diff)
        n = bottom[0].shape[0]
        if self.legacy:
            mdist = self.margin - self.dist_sq
            beta = -xp.ones_like(mdist)
        else:
            dist = xp.sqrt(self.dist_sq)
            mdist = self.margin - dist
            beta = -mdist / (dist + 1e-4)
        coeff = xp.where(self.similar, 1, xp.where(mdist > 0, beta, 0)).astype(self.diff.dtype)
        grad = coeff[:, None] * self.diff
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                alpha = sign * top[0].diff / n
                bottom[i].diff[...] = (alpha * grad).reshape(bottom[i].shape)


@register("EuclideanLoss", "EUCLIDEAN_LOSS")
class EuclideanLossLayer(LossLayer):
    """E = 1/(2N) sum_n ||a_n - b_n||^2.

    bottom[0] a, bottom[1] b: same count per item, N = first axis.
    Gradient: dE/da = w/N (a - b), dE/db = -w/N (a - b) (w = loss weight);
    both bottoms may receive gradients.  top[0]: 0-d loss.
    """

    def allow_force_backward(self, bottom_index):
        return True

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count_range(1) != bottom[1].count_range(1):
            raise self.error(f"bottoms '{self.bottom_name(0)}' {bottom[0].shape} and "
                             f"'{self.bottom_name(1)}' {bottom[1].shape} must have the same "
                             f"dimension per item")

    def forward(self, bottom, top):
        self.diff = bottom[0].data - bottom[1].data.reshape(bottom[0].shape)
        n = bottom[0].shape[0]
        top[0].data[...] = (self.diff * self.diff).sum() / n / 2

    def backward(self, top, propagate_down, bottom):
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                alpha = sign * top[0].diff / bottom[i].shape[0]
                bottom[i].diff[...] = (alpha * self.diff).reshape(bottom[i].shape)


@register("HingeLoss", "HINGE_LOSS")
class HingeLossLayer(_OneLabelPerItem, _LabelMixin, LossLayer):
    """One-vs-all hinge loss.

    bottom[0] x: (N, D...) scores, K = count/N classes; bottom[1]: N labels.
    With t_nk = +1 if k == l_n else -1 and m_nk = max(0, 1 - t_nk x_nk):
      L1: E = 1/N sum m_nk        dE/dx_nk = -w/N t_nk [m_nk > 0]
      L2: E = 1/N sum m_nk^2      dE/dx_nk = -2w/N t_nk m_nk
    (w = loss weight).  top[0]: 0-d loss.
    """

    def setup(self, bottom, top):
        self.norm = self.param.hinge_loss_param.norm


    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        n = bottom[0].shape[0]
        x = bottom[0].data.reshape(n, -1)
        k = x.shape[1]
        labels = self.read_labels(bottom[1], 1, k).reshape(n)
        # -t: +1 off the label, -1 at it (Caffe negates the label's entry).
        self.neg_t = 1 - 2 * (xp.arange(k)[None, :] == labels[:, None]).astype(x.dtype)
        self.margin = xp.maximum(0, 1 + self.neg_t * x)
        if self.norm == caffe_pb2.HingeLossParameter.L1:
            loss = self.margin.sum()
        else:
            loss = (self.margin * self.margin).sum()
        top[0].data[...] = loss / n

    def backward(self, top, propagate_down, bottom):
        self.refuse_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        xp = get_array_module(self.margin)
        n = bottom[0].shape[0]
        signed = self.neg_t * self.margin
        if self.norm == caffe_pb2.HingeLossParameter.L1:
            grad = xp.sign(signed) * (top[0].diff / n)
        else:
            grad = signed * (top[0].diff * 2 / n)
        bottom[0].diff[...] = grad.reshape(bottom[0].shape)


@register("InfogainLoss", "INFOGAIN_LOSS")
class InfogainLossLayer(_LabelMixin, LossLayer):
    """Infogain loss on probabilities (the HWGQ fork's form: no internal softmax).

    bottom[0] p: probabilities, class axis ``infogain_loss_param.axis`` with K
    classes, (outer, K, inner); bottom[1]: outer*inner labels; H (K x K, any
    shape of K*K values) from ``infogain_loss_param.source`` (a binary
    BlobProto, relative paths from the current directory) or bottom[2].
      E = -1/Z sum_{valid (i, j)} sum_k H[l_ij, k] log(max(p_ikj, 1e-20))
    Z from ``loss_param`` (get_normalizer; default VALID, which for a
    (N, K) input without ignore_label is N as in the fork).
    Gradient: dE/dp_ikj = -w/Z H[l_ij, k] / max(p_ikj, 1e-20) at valid
    positions, 0 at ignored ones (w = loss weight).  Neither the labels nor
    H get a gradient.  top[0]: 0-d loss.
    """

    exact_bottoms = None
    min_bottoms = 2
    max_bottoms = 3
    label_bottoms = (1, 2)

    def setup(self, bottom, top):
        p = self.param.infogain_loss_param
        lp = self.param.loss_param
        self.axis = p.axis
        self.ignore_label = lp.ignore_label if lp.HasField("ignore_label") else None
        self.normalization = normalization_mode(lp, _Mode.VALID)
        self.infogain = None
        if len(bottom) < 3:
            if not p.source:
                raise self.error("needs the infogain matrix H: set infogain_loss_param.source "
                                 "or give it as a third bottom")
            try:
                h = read_blob(p.source, "infogain matrix H", numpy.float64)
            except CaffeError as e:
                raise self.error(f"infogain_loss_param.source: {e} (relative paths are "
                                 "resolved from the current directory)") from None
            self.infogain = self.xp.asarray(h, dtype=self.dtype)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        axis, outer, k, inner = _axis_split(self, bottom[0], self.axis, "infogain_loss_param.axis")
        _check_label_count(self, bottom, outer, inner, axis)
        h = bottom[2].data if len(bottom) > 2 else self.infogain
        where = f"bottom '{self.bottom_name(2)}'" if len(bottom) > 2 else \
            f"'{self.param.infogain_loss_param.source}'"
        if h.size != k * k:
            raise self.error(f"infogain matrix H from {where} has shape {tuple(h.shape)} "
                             f"({h.size} values), expected {k} x {k} = {k * k} values "
                             f"({k} classes on axis {axis})")
        self.dims = (outer, k, inner)

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        outer, k, inner = self.dims
        h = (bottom[2].data if len(bottom) > 2 else self.infogain).reshape(k, k)
        p = bottom[0].data.reshape(outer, k, inner)
        raw = bottom[1].data.reshape(outer, inner)
        self.valid = self.ignore_mask(raw, self.ignore_label)
        labels = self.read_labels(bottom[1], 1, k, self.valid.reshape(bottom[1].shape))
        # weights[i, k, j] = H[l_ij, k] at valid positions, else 0
        self.weights = h[labels.reshape(outer, inner)].transpose(0, 2, 1) * self.valid[:, None, :]
        self.prob = xp.maximum(p, LOG_THRESHOLD)
        loss = -(self.weights * xp.log(self.prob)).sum()
        self.normalizer = get_normalizer(self.normalization, outer, inner, self.valid.sum(),
                                         p.dtype)
        top[0].data[...] = loss / self.normalizer

    def backward(self, top, propagate_down, bottom):
        self.refuse_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        scale = -top[0].diff / self.normalizer
        bottom[0].diff[...] = (scale * self.weights / self.prob).reshape(bottom[0].shape)


@register("MultinomialLogisticLoss", "MULTINOMIAL_LOGISTIC_LOSS")
class MultinomialLogisticLossLayer(_OneLabelPerItem, _LabelMixin, LossLayer):
    """E = -1/N sum_n log(max(p_{n, l_n}, 1e-20)) on probabilities.

    bottom[0] p: (N, K...) with K = count/N; bottom[1]: N labels in [0, K).
    Gradient: dE/dp_{n,l_n} = -w/N / max(p_{n,l_n}, 1e-20), 0 elsewhere
    (w = loss weight).  top[0]: 0-d loss.
    """


    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        n = bottom[0].shape[0]
        p = bottom[0].data.reshape(n, -1)
        self.labels = self.read_labels(bottom[1], 1, p.shape[1]).reshape(n, 1)
        self.prob = xp.maximum(xp.take_along_axis(p, self.labels, axis=1), LOG_THRESHOLD)
        top[0].data[...] = -xp.log(self.prob).sum() / n

    def backward(self, top, propagate_down, bottom):
        self.refuse_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        xp = get_array_module(self.prob)
        n = bottom[0].shape[0]
        k = bottom[0].count // max(n, 1)
        onehot = xp.arange(k)[None, :] == self.labels
        grad = onehot * (-top[0].diff / n / self.prob)
        bottom[0].diff[...] = grad.reshape(bottom[0].shape)


@register("SigmoidCrossEntropyLoss", "SIGMOID_CROSS_ENTROPY_LOSS")
class SigmoidCrossEntropyLossLayer(_LabelMixin, LossLayer):
    """Cross-entropy of sigmoid(x) against targets t in [0, 1].

    bottom[0] x and bottom[1] t: same count, N = first axis.  Per element
    (Caffe's overflow-free form, [.] = 1 where true):
      e = -( x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0])) )
    E = sum over elements whose int(t) != ignore_label of e, divided by
    get_normalizer(normalization; default BATCH_SIZE, legacy normalize true =
    VALID, false = BATCH_SIZE).
    Gradient: dE/dx = w/Z (sigmoid(x) - t), 0 at ignored elements (w = loss
    weight).  top[0]: 0-d loss.
    """

    def setup(self, bottom, top):
        lp = self.param.loss_param
        self.ignore_label = lp.ignore_label if lp.HasField("ignore_label") else None
        self.normalization = normalization_mode(lp, _Mode.BATCH_SIZE)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.error(f"bottoms '{self.bottom_name(0)}' {bottom[0].shape} and "
                             f"'{self.bottom_name(1)}' {bottom[1].shape} must have the same count")

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data
        t = bottom[1].data.reshape(x.shape)
        self.valid = self.ignore_mask(t, self.ignore_label)
        pos = (x >= 0).astype(x.dtype)
        e = x * (t - pos) - xp.log(1 + xp.exp(x - 2 * x * pos))
        loss = -(e * self.valid).sum()
        outer = x.shape[0]
        self.normalizer = get_normalizer(self.normalization, outer, x.size // max(outer, 1),
                                         self.valid.sum(), x.dtype)
        top[0].data[...] = loss / self.normalizer

    def backward(self, top, propagate_down, bottom):
        self.refuse_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data
        sigmoid = 0.5 * xp.tanh(0.5 * x) + 0.5
        grad = (sigmoid - bottom[1].data.reshape(x.shape)) * self.valid
        bottom[0].diff[...] = grad * (top[0].diff / self.normalizer)


@register("SoftmaxWithLoss", "SOFTMAX_LOSS")
class SoftmaxWithLossLayer(_LabelMixin, LossLayer):
    """Softmax over ``softmax_param.axis`` followed by the multinomial logistic loss.

    bottom[0] x: (outer, K, inner) around the axis; bottom[1]: outer*inner
    labels in [0, K).  With p = softmax(x):
      E = -1/Z sum_{valid (i, j)} log(max(p_{i, l_ij, j}, FLT_MIN))
    Z = get_normalizer(normalization; default VALID, legacy ``normalize:
    false`` = BATCH_SIZE).  Positions with label ``ignore_label`` are skipped.
    Gradient: dE/dx_ikj = w/Z (p_ikj - [k == l_ij]), 0 at ignored positions
    (w = loss weight).
    top[0]: 0-d loss; optional top[1]: the probabilities p (shape of x), a
    plain output with loss weight 0 (gradient arriving on it is ignored, as in
    BVLC Caffe).
    """

    max_tops = 2
    exact_tops = None
    min_tops = 1

    def setup(self, bottom, top):
        lp = self.param.loss_param
        self.axis = self.param.softmax_param.axis
        self.ignore_label = lp.ignore_label if lp.HasField("ignore_label") else None
        self.normalization = normalization_mode(lp, _Mode.VALID)
        weights = list(self.param.loss_weight)
        if len(weights) > 1 and weights[1] != 0:
            name = self.param.top[1] if len(self.param.top) > 1 else "#1"
            raise self.error(f"the probability top '{name}' must have loss_weight 0 (its "
                             f"gradient is not propagated), got {weights[1]}")

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        axis, outer, k, inner = _axis_split(self, bottom[0], self.axis, "softmax_param.axis")
        if k == 0:
            raise self.error(f"bottom '{self.bottom_name(0)}' of shape {bottom[0].shape} has 0 "
                             f"classes on axis {axis}; expected at least 1")
        _check_label_count(self, bottom, outer, inner, axis)
        self.dims = (axis, outer, k, inner)
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        axis, outer, k, inner = self.dims
        self.prob = softmax(bottom[0].data.reshape(outer, k, inner), 1)
        raw = bottom[1].data.reshape(outer, inner)
        self.valid = self.ignore_mask(raw, self.ignore_label)
        labels = self.read_labels(bottom[1], 1, k, self.valid.reshape(bottom[1].shape))
        self.labels = labels.reshape(outer, 1, inner)
        p_true = xp.take_along_axis(self.prob, self.labels, axis=1)[:, 0, :]
        loss = -(xp.log(xp.maximum(p_true, FLT_MIN)) * self.valid).sum()
        self.normalizer = get_normalizer(self.normalization, outer, inner, self.valid.sum(),
                                         self.prob.dtype)
        top[0].data[...] = loss / self.normalizer
        if len(top) > 1:
            top[1].data[...] = self.prob.reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        self.refuse_label_backward(propagate_down)
        if not propagate_down[0]:
            return
        xp = get_array_module(self.prob)
        k = self.prob.shape[1]
        onehot = xp.arange(k)[None, :, None] == self.labels
        grad = (self.prob - onehot) * self.valid[:, None, :]
        bottom[0].diff[...] = (grad * (top[0].diff / self.normalizer)).reshape(bottom[0].shape)
