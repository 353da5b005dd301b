"""Layers that combine, reduce, select or hold values: Eltwise, Reduction,
ArgMax, Parameter and Embed, each following BVLC Caffe's
``src/caffe/layers/<name>_layer.cpp`` (forward, backward, checks).

The layers that only route blobs or change their shape are in :mod:`.shape`;
the helpers both modules use (``_CommonLayer``, ``_as_indices``) are here.

Where Caffe shares memory between top and param (Parameter) the top's *data*
here is a reshaped view of the param's; its diff is its own array, which
backward sums into the param's.
"""
from ..backend import get_array_module
from ..errors import CaffeError
from ..layer import Layer, register

# Enum values of caffe.proto (EltwiseParameter.EltwiseOp, ReductionParameter.ReductionOp).
ELTWISE_PROD, ELTWISE_SUM, ELTWISE_MAX = 0, 1, 2
REDUCE_SUM, REDUCE_ASUM, REDUCE_SUMSQ, REDUCE_MEAN = 1, 2, 3, 4


class _CommonLayer(Layer):
    """Helpers shared by the layers of this module and of :mod:`.shape`."""

    def _canonical_axis(self, blob, axis, field, i=0):
        """Caffe's CanonicalAxisIndex, failing with the layer, field and blob named."""
        try:
            return blob.canonical_axis(axis)
        except CaffeError:
            raise self.error(f"{field} {axis} is out of range for bottom "
                             f"'{self.bottom_name(i)}' of shape {blob.shape} (expected "
                             f"{-blob.num_axes} <= {field} < {blob.num_axes})") from None

    # --- data sharing (Caffe's ShareData) ----------------------------------------
    @staticmethod
    def _view(source, target, shape):
        """Size ``target`` as ``shape`` with its data a view of ``source``'s data.

        The diff stays ``target``'s own array; backward copies it over.  Re-run in
        forward, so a bottom array replaced after ``reshape`` is still followed.
        """
        target.reshape(shape)
        target.data = source.data.reshape(target.shape)


def _as_indices(layer, blob, i, upper, what):
    """Integer indices from a float blob, checked to lie in [0, upper)."""
    xp = get_array_module(blob.data)
    values = blob.data
    outside = ~((values >= 0) & (values < upper))  # NaN counts as outside
    if values.size and bool(outside.any()):
        bad = float(values[outside].reshape(-1)[0])
        raise layer.error(f"bottom '{layer.bottom_name(i)}' holds {what} {bad:g}, expected "
                          f"values in [0, {upper})")
    return values.astype(xp.int64)  # truncation toward zero, as static_cast<int>


@register("Eltwise", "ELTWISE")
class EltwiseLayer(_CommonLayer):
    """Element-wise PROD, SUM (with ``coeff``) or MAX of K >= 2 same-shape bottoms.

    PROD: ``y = x_1 * x_2 * ... * x_K``; ``dE/dx_i = dE/dy * prod_{j != i} x_j``
    (``stable_prod_grad: false``: ``dE/dy * y / x_i``).
    SUM: ``y = sum_i c_i x_i``; ``dE/dx_i = c_i dE/dy``.
    MAX: ``y = max_i x_i``; ``dE/dx_i = dE/dy`` where ``x_i`` was the arg max
    (ties: bottom 1 beats bottom 0, otherwise the earlier bottom wins), else 0.
    Top: the bottoms' shape.
    """

    min_bottoms = 2
    exact_tops = 1

    def setup(self, bottom, top):
        p = self.param.eltwise_param
        if p.coeff and len(p.coeff) != len(bottom):
            raise self.error(f"eltwise_param: {len(p.coeff)} coeff(s) given for "
                             f"{len(bottom)} bottoms, expected one per bottom")
        if p.operation == ELTWISE_PROD and p.coeff:
            raise self.error("eltwise_param: coeff is only for operation SUM, got it with PROD")
        if p.operation not in (ELTWISE_PROD, ELTWISE_SUM, ELTWISE_MAX):
            raise self.error(f"eltwise_param.operation {p.operation} is unknown "
                             "(expected PROD, SUM or MAX)")
        self.op = p.operation
        self.coeffs = [float(c) for c in p.coeff] or [1.0] * len(bottom)
        self.stable_prod_grad = p.stable_prod_grad

    def reshape(self, bottom, top):
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != bottom[0].shape:
                raise self.error(f"bottom '{self.bottom_name(i)}' has shape {b.shape}, "
                                 f"expected {bottom[0].shape} like '{self.bottom_name(0)}'")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        y = top[0].data
        if self.op == ELTWISE_PROD:
            xp.multiply(bottom[0].data, bottom[1].data, out=y)
            for b in bottom[2:]:
                y *= b.data
        elif self.op == ELTWISE_SUM:
            y[...] = 0
            for b, c in zip(bottom, self.coeffs):
                y += b.data if c == 1 else y.dtype.type(c) * b.data
        else:
            a, b = bottom[0].data, bottom[1].data
            first = a > b
            self.max_index = xp.where(first, 0, 1).astype(xp.int32)
            y[...] = xp.where(first, a, b)
            for i, blob in enumerate(bottom[2:], 2):
                later = blob.data > y
                self.max_index = xp.where(later, i, self.max_index).astype(xp.int32)
                y[...] = xp.where(later, blob.data, y)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        for i, b in enumerate(bottom):
            if not propagate_down[i]:
                continue
            if self.op == ELTWISE_PROD:
                if self.stable_prod_grad:
                    others = [o.data for j, o in enumerate(bottom) if j != i]
                    g = others[0].copy()
                    for o in others[1:]:
                        g *= o
                else:
                    g = top[0].data / b.data
                b.diff[...] = g * dy
            elif self.op == ELTWISE_SUM:
                c = self.coeffs[i]
                b.diff[...] = dy if c == 1 else dy.dtype.type(c) * dy
            else:
                b.diff[...] = get_array_module(dy).where(self.max_index == i, dy, 0)


@register("Reduction")
class ReductionLayer(_CommonLayer):
    """Reduce all axes from ``axis`` on to one number per leading index.

    With x viewed as (num, dim), dim = count(axis):
    SUM ``y = c sum x``; ASUM ``y = c sum |x|``; SUMSQ ``y = c sum x^2``;
    MEAN ``y = (c / dim) sum x``.  Gradients: ``c dE/dy`` (SUM), ``c/dim dE/dy``
    (MEAN), ``c sign(x) dE/dy`` (ASUM, sign(0) = 0), ``2 c x dE/dy`` (SUMSQ).
    Top shape: ``x.shape[:axis]`` (0-d for axis 0).
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        p = self.param.reduction_param
        if p.operation not in (REDUCE_SUM, REDUCE_ASUM, REDUCE_SUMSQ, REDUCE_MEAN):
            raise self.error(f"reduction_param.operation {p.operation} is unknown "
                             "(expected SUM, ASUM, SUMSQ or MEAN)")
        self.op = p.operation

    def reshape(self, bottom, top):
        x = bottom[0]
        axis = self._canonical_axis(x, self.param.reduction_param.axis, "reduction_param.axis")
        self.num = x.count_range(0, axis)
        self.dim = x.count_range(axis)
        coeff = self.dtype.type(self.param.reduction_param.coeff)
        if self.op == REDUCE_MEAN:
            coeff = coeff / self.dtype.type(self.dim)
        self.coeff = self.dtype.type(coeff)
        top[0].reshape(x.shape[:axis])

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data.reshape(self.num, self.dim)
        if self.op == REDUCE_ASUM:
            y = xp.abs(x).sum(axis=1)
        elif self.op == REDUCE_SUMSQ:
            y = (x * x).sum(axis=1)
        else:
            y = x.sum(axis=1)
        if self.coeff != 1:
            y = y * self.coeff
        top[0].data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = get_array_module(bottom[0].data)
        scale = (top[0].diff.reshape(self.num, 1) * self.coeff).astype(self.dtype)
        if self.op == REDUCE_ASUM:
            g = xp.sign(bottom[0].data.reshape(self.num, self.dim)) * scale
        elif self.op == REDUCE_SUMSQ:
            g = (2 * scale) * bottom[0].data.reshape(self.num, self.dim)
        else:
            g = xp.broadcast_to(scale, (self.num, self.dim))
        bottom[0].diff[...] = g.reshape(bottom[0].shape)


@register("ArgMax", "ARGMAX")
class ArgMaxLayer(_CommonLayer):
    """Indices (and optionally values) of the ``top_k`` largest entries.

    Without ``axis``: per item n over its flattened ``count(1)`` values; the
    top is (N, 1, top_k) of indices, or (N, 2, top_k) holding indices then
    values when ``out_max_val`` (padded with 1s to at least 3 axes).
    With ``axis``: along that axis; the top is the bottom's shape with
    ``top_k`` there, holding the indices, or the values if ``out_max_val``.
    Order: descending value, ties to the larger index (Caffe's
    ``std::greater<pair>``).  Indices are stored as floats.  No backward.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        p = self.param.argmax_param
        self.out_max_val = p.out_max_val
        self.top_k = int(p.top_k)
        self.has_axis = p.HasField("axis")
        if self.top_k < 1:
            raise self.error(f"argmax_param.top_k must be at least 1, got {self.top_k}")

    def reshape(self, bottom, top):
        x = bottom[0]
        if self.has_axis:
            self.axis = self._canonical_axis(x, self.param.argmax_param.axis,
                                             "argmax_param.axis")
            if self.top_k > x.shape[self.axis]:
                raise self.error(f"argmax_param.top_k {self.top_k} exceeds axis {self.axis} "
                                 f"of bottom '{self.bottom_name(0)}' (shape {x.shape})")
            shape = list(x.shape)
            shape[self.axis] = self.top_k
        else:
            if x.num_axes < 1:
                raise self.error(f"bottom '{self.bottom_name(0)}' must have at least one "
                                 "axis (the items), got a 0-d blob")
            if self.top_k > x.count_range(1):
                raise self.error(f"argmax_param.top_k {self.top_k} exceeds the "
                                 f"{x.count_range(1)} values per item of bottom "
                                 f"'{self.bottom_name(0)}' (shape {x.shape})")
            shape = [1] * max(x.num_axes, 3)
            shape[0] = x.shape[0]
            shape[2] = self.top_k
            if self.out_max_val:
                shape[1] = 2
        top[0].reshape(shape)

    def _top_k(self, values):
        """Indices and values of the k largest along the last axis, Caffe's order."""
        xp = get_array_module(values)
        # A stable ascending sort read backwards gives descending values with
        # ties in descending index order, as std::greater<std::pair> does.
        order = xp.argsort(values, axis=-1, kind="stable")[..., ::-1][..., :self.top_k]
        return order, xp.take_along_axis(values, order, axis=-1)

    def forward(self, bottom, top):
        if not top[0].count:        # no items: Caffe's loops run zero times
            return
        x = bottom[0].data
        xp = get_array_module(x)
        dtype = top[0].data.dtype
        if self.has_axis:
            order, values = self._top_k(xp.moveaxis(x, self.axis, -1))
            result = values if self.out_max_val else order.astype(dtype)
            top[0].data[...] = xp.moveaxis(result, -1, self.axis)
        else:
            n = x.shape[0]
            order, values = self._top_k(x.reshape(n, -1))
            if self.out_max_val:
                result = xp.stack([order.astype(dtype), values.astype(dtype)], axis=1)
            else:
                result = order.astype(dtype)
            top[0].data[...] = result.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error("ArgMax has no backward pass (asked to propagate to bottom "
                             f"'{self.bottom_name(0)}')")


@register("Parameter")
class ParameterLayer(_CommonLayer):
    """Expose a learnable blob of ``parameter_param.shape`` as the top.

    No bottoms.  Forward: ``y = W`` (the top's data is a view of the param's).
    Backward: ``dE/dW += dE/dy``.  The param starts at zero (Caffe fills it
    with nothing; trained weights are copied in).
    """

    exact_bottoms = 0
    exact_tops = 1

    def setup(self, bottom, top):
        shape = tuple(int(d) for d in self.param.parameter_param.shape.dim)
        if any(d < 0 for d in shape):
            raise self.error(f"parameter_param.shape {shape} has a negative dim")
        self.blobs = [self.make_blob(shape)]
        top[0].reshape(shape)

    def reshape(self, bottom, top):
        self._view(self.blobs[0], top[0], self.blobs[0].shape)

    def forward(self, bottom, top):
        self._view(self.blobs[0], top[0], self.blobs[0].shape)

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff += top[0].diff


@register("Embed")
class EmbedLayer(_CommonLayer):
    """Look up rows of a table: ``y[..., :] = W[idx[...], :] (+ b)``.

    Bottom: indices (any shape, floats holding integers in [0, input_dim)).
    Top: the bottom's shape + (num_output,).  Params: W (input_dim, num_output)
    and, with ``bias_term``, b (num_output,).
    Backward: ``dE/dW[k] += sum_{n: idx[n] = k} dE/dy[n]``, ``dE/db += sum_n dE/dy[n]``;
    no gradient to the indices (asking for one is an error).
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        p = self.param.embed_param
        self.positive("embed_param.num_output", p.num_output)
        self.positive("embed_param.input_dim", p.input_dim)
        self.num_output = int(p.num_output)
        self.input_dim = int(p.input_dim)
        self.bias_term = p.bias_term
        self.blobs = []
        self.add_param_blob((self.input_dim, self.num_output), p.weight_filler)
        if self.bias_term:
            self.add_param_blob((self.num_output,), p.bias_filler)

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.num_output,))

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        values = bottom[0].data
        if values.size and bool(xp.any(values != xp.floor(values))):
            bad = float(values[values != xp.floor(values)].reshape(-1)[0])
            raise self.error(f"bottom '{self.bottom_name(0)}' holds the non-integer index "
                             f"{bad:g}")
        self.index = _as_indices(self, bottom[0], 0, self.input_dim, "index")
        y = self.blobs[0].data[self.index]
        if self.bias_term:
            y += self.blobs[1].data
        top[0].data[...] = y

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error(f"cannot backpropagate to the indices '{self.bottom_name(0)}'")
        xp = get_array_module(top[0].diff)
        dy = top[0].diff.reshape(-1, self.num_output)
        xp.add.at(self.blobs[0].diff, self.index.reshape(-1), dy)
        if self.bias_term:
            self.blobs[1].diff += dy.sum(axis=0)
