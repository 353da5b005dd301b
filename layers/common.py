"""Layers that move, combine, reduce or select data without learned maths.

Concat, Slice, Split, Flatten, Reshape, Crop, Eltwise, Tile, Reduction,
Silence, ArgMax, BatchReindex, Filter, Parameter and Embed, each following
BVLC Caffe's ``src/caffe/layers/<name>_layer.cpp`` (forward, backward, checks).

Where Caffe shares memory between top and bottom (Flatten, Reshape, a Concat of
one bottom, a Slice into one top, Split, Parameter) the top's *data* here is a
reshaped view of the bottom's; its diff is its own array, which backward copies
(or, for Split and Parameter, sums) into the bottom's.  The values are Caffe's;
a bottom diff cleared after the top diff was set does not lose the gradient.
"""
from ..backend import get_array_module
from ..errors import CaffeError
from ..layer import Layer, register

# Enum values of caffe.proto (EltwiseParameter.EltwiseOp, ReductionParameter.ReductionOp).
ELTWISE_PROD, ELTWISE_SUM, ELTWISE_MAX = 0, 1, 2
REDUCE_SUM, REDUCE_ASUM, REDUCE_SUMSQ, REDUCE_MEAN = 1, 2, 3, 4


def _axis_slice(axis, start, stop):
    """Index selecting ``start:stop`` along ``axis`` (all of the axes before it)."""
    return (slice(None),) * axis + (slice(start, stop),)


def _count(shape, start=0, end=None):
    n = 1
    for d in shape[start:end]:
        n *= int(d)
    return n


class _CommonLayer(Layer):
    """Helpers shared by the layers of this module."""

    def _top_name(self, i):
        return self.param.top[i] if i < len(self.param.top) else f"top[{i}]"

    def _canonical_axis(self, blob, axis, field, i=0):
        """Caffe's CanonicalAxisIndex, failing with the layer, field and blob named."""
        try:
            return blob.canonical_axis(axis)
        except CaffeError:
            raise self.error(f"{field} {axis} is out of range for bottom "
                             f"'{self.bottom_name(i)}' of shape {blob.shape} (expected "
                             f"{-blob.num_axes} <= {field} < {blob.num_axes})") from None

    def _check_axis_or_legacy(self, field, legacy):
        """``self.param.<field>`` sets ``axis`` or its legacy name ``legacy``, not both."""
        p = getattr(self.param, field)
        if p.HasField("axis") and p.HasField(legacy):
            raise self.error(f"{field}: give either axis or {legacy}, not both "
                             f"(got axis {p.axis}, {legacy} {getattr(p, legacy)})")

    def _axis_or_legacy(self, blob, field, legacy):
        """The axis ``self.param.<field>`` names in ``blob`` (bottom 0): the legacy
        ``legacy`` when set (never negative), else ``axis`` made canonical."""
        p = getattr(self.param, field)
        if p.HasField(legacy):
            axis = int(getattr(p, legacy))
            if axis >= blob.num_axes:
                raise self.error(f"{legacy} {axis} is out of range for bottom "
                                 f"'{self.bottom_name(0)}' of shape {blob.shape}")
            return axis
        return self._canonical_axis(blob, p.axis, f"{field}.axis")

    def _no_in_place(self, bottom, top):
        for j, t in enumerate(top):
            if t is bottom[0]:
                raise self.error(f"does not allow in-place computation (top "
                                 f"'{self._top_name(j)}' is bottom '{self.bottom_name(0)}')")

    # --- data sharing (Caffe's ShareData) ----------------------------------------
    @staticmethod
    def _view(source, target, shape):
        """Size ``target`` as ``shape`` with its data a view of ``source``'s data.

        The diff stays ``target``'s own array; backward copies it over.  Re-run in
        forward, so a bottom array replaced after ``reshape`` is still followed.
        """
        target.reshape(shape)
        target.data = source.data.reshape(target.shape)


@register("Concat", "CONCAT")
class ConcatLayer(_CommonLayer):
    """Concatenate the bottoms along ``axis`` (legacy ``concat_dim``).

    Forward: ``y = [x_1, x_2, ..., x_K]`` along the axis.
    Backward: ``dE/dx_i`` is the slice of ``dE/dy`` that ``x_i`` filled.
    Bottoms: K >= 1 blobs, equal in every axis but ``axis``.
    Top: the same shape with ``sum_i x_i.shape[axis]`` along ``axis``.
    One bottom: the top's data is a view of the bottom's.
    """

    min_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        self._check_axis_or_legacy("concat_param", "concat_dim")

    def reshape(self, bottom, top):
        first = bottom[0]
        axis = self.axis = self._axis_or_legacy(first, "concat_param", "concat_dim")
        shape = list(first.shape)
        for i, b in enumerate(bottom[1:], 1):
            if b.num_axes != first.num_axes:
                raise self.error(f"all bottoms must have the same number of axes: "
                                 f"'{self.bottom_name(i)}' has shape {b.shape}, "
                                 f"'{self.bottom_name(0)}' has {first.shape}")
            for k in range(first.num_axes):
                if k != axis and b.shape[k] != first.shape[k]:
                    raise self.error(f"bottom '{self.bottom_name(i)}' has shape {b.shape}, "
                                     f"expected {first.shape} except along axis {axis}")
            shape[axis] += b.shape[axis]
        if len(bottom) == 1:
            self._view(first, top[0], shape)
        else:
            top[0].reshape(shape)

    def forward(self, bottom, top):
        if len(bottom) == 1:
            self._view(bottom[0], top[0], top[0].shape)
            return
        offset = 0
        for b in bottom:
            n = b.shape[self.axis]
            top[0].data[_axis_slice(self.axis, offset, offset + n)] = b.data
            offset += n

    def backward(self, top, propagate_down, bottom):
        offset = 0
        for i, b in enumerate(bottom):
            n = b.shape[self.axis]
            if propagate_down[i]:
                b.diff[...] = top[0].diff[_axis_slice(self.axis, offset, offset + n)]
            offset += n


@register("Slice", "SLICE")
class SliceLayer(_CommonLayer):
    """Cut the bottom along ``axis`` (legacy ``slice_dim``) into the tops.

    ``slice_point`` p_1 < ... < p_{K-1} gives the cuts; without it the axis is
    split into K equal parts.  Forward: ``y_k = x[..., p_{k-1}:p_k, ...]``.
    Backward: ``dE/dx`` is the tops' diffs put back in place.
    Bottom: one blob.  Tops: K >= 1 blobs (a single top views the bottom's data).
    """

    exact_bottoms = 1
    min_tops = 1

    def setup(self, bottom, top):
        self._check_axis_or_legacy("slice_param", "slice_dim")
        self.slice_points = [int(s) for s in self.param.slice_param.slice_point]
        if self.slice_points and len(self.slice_points) != len(top) - 1:
            raise self.error(f"slice_param: {len(self.slice_points)} slice_point(s) given "
                             f"for {len(top)} tops, expected {len(top) - 1}")

    def reshape(self, bottom, top):
        x = bottom[0]
        axis = self.axis = self._axis_or_legacy(x, "slice_param", "slice_dim")
        length = x.shape[axis]
        if self.slice_points:
            if len(top) > length:
                raise self.error(f"{len(top)} tops cannot slice axis {axis} of bottom "
                                 f"'{self.bottom_name(0)}' (shape {x.shape})")
            sizes, prev = [], 0
            for point in self.slice_points:
                if point <= prev:
                    raise self.error(f"slice_point must increase strictly from above 0, "
                                     f"got {self.slice_points}")
                sizes.append(point - prev)
                prev = point
            if prev > length:
                raise self.error(f"slice_point {prev} is beyond axis {axis} of bottom "
                                 f"'{self.bottom_name(0)}' (size {length})")
            sizes.append(length - prev)
        else:
            if length % len(top):
                raise self.error(f"{len(top)} tops do not evenly divide axis {axis} "
                                 f"(size {length}) of bottom '{self.bottom_name(0)}'")
            sizes = [length // len(top)] * len(top)
        self.sizes = sizes
        for t, size in zip(top, sizes):
            shape = list(x.shape)
            shape[axis] = size
            if len(top) == 1:
                self._view(x, t, shape)
            else:
                t.reshape(shape)

    def forward(self, bottom, top):
        if len(top) == 1:
            self._view(bottom[0], top[0], top[0].shape)
            return
        offset = 0
        for t, size in zip(top, self.sizes):
            t.data[...] = bottom[0].data[_axis_slice(self.axis, offset, offset + size)]
            offset += size

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        offset = 0
        for t, size in zip(top, self.sizes):
            bottom[0].diff[_axis_slice(self.axis, offset, offset + size)] = t.diff
            offset += size


@register("Split", "SPLIT")
class SplitLayer(_CommonLayer):
    """Hand one bottom to several consumers.

    Forward: every top shares the bottom's data, ``y_k = x``.
    Backward: ``dE/dx = sum_k dE/dy_k`` (each top keeps its own diff).
    Bottom: one blob.  Tops: K >= 1 blobs of the bottom's shape; not in place.
    """

    exact_bottoms = 1
    min_tops = 1

    def reshape(self, bottom, top):
        self._no_in_place(bottom, top)
        for t in top:
            t.reshape(bottom[0].shape)
            t.share_data(bottom[0])

    def forward(self, bottom, top):
        for t in top:
            t.share_data(bottom[0])

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        if len(top) == 1:
            diff[...] = top[0].diff
            return
        xp = get_array_module(diff)
        xp.add(top[0].diff, top[1].diff, out=diff)
        for t in top[2:]:
            diff += t.diff


class _ViewLayer(_CommonLayer):
    """A top that is the bottom under another shape (a view of its data)."""

    exact_bottoms = 1
    exact_tops = 1

    def top_shape(self, x):
        raise NotImplementedError

    def reshape(self, bottom, top):
        self._no_in_place(bottom, top)
        self._view(bottom[0], top[0], self.top_shape(bottom[0]))

    def forward(self, bottom, top):
        self._view(bottom[0], top[0], top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.reshape(bottom[0].shape)


@register("Flatten", "FLATTEN")
class FlattenLayer(_ViewLayer):
    """Merge axes ``axis`` .. ``end_axis`` (inclusive) into one.

    Forward: ``y = x`` viewed as ``shape[:axis] + (prod(shape[axis:end_axis+1]),)
    + shape[end_axis+1:]``.  Backward: ``dE/dx = dE/dy`` under the bottom shape.
    Bottom: any blob.  Top: a view of the bottom's data; not in place (as in Caffe).
    """

    def top_shape(self, x):
        p = self.param.flatten_param
        start = self._canonical_axis(x, p.axis, "flatten_param.axis")
        end = self._canonical_axis(x, p.end_axis, "flatten_param.end_axis")
        if end + 1 < start:
            raise self.error(f"flatten_param.end_axis {p.end_axis} (axis {end}) comes before "
                             f"axis {p.axis} (axis {start}) for bottom shape {x.shape}")
        return x.shape[:start] + (x.count_range(start, end + 1),) + x.shape[end + 1:]


@register("Reshape")
class ReshapeLayer(_ViewLayer):
    """Give the bottom a new shape without touching its values.

    ``reshape_param.shape`` replaces the axes ``[axis, axis + num_axes)``
    (``num_axes: -1`` = up to the end; a negative ``axis`` counts from the end,
    -1 meaning after the last axis).  A dim of 0 copies the bottom's dim at that
    position; one dim of -1 is inferred from the element count.
    Forward: ``y = x`` viewed in the new shape; backward: ``dE/dx = dE/dy``.
    Bottom: any blob.  Top: a view of the bottom's data; not in place (as in Caffe).
    """

    def setup(self, bottom, top):
        dims = [int(d) for d in self.param.reshape_param.shape.dim]
        self.copy_axes = [i for i, d in enumerate(dims) if d == 0]
        inferred = [i for i, d in enumerate(dims) if d == -1]
        if len(inferred) > 1:
            raise self.error(f"reshape_param.shape {dims} has {len(inferred)} dims of -1, "
                             "expected at most one")
        bad = [d for d in dims if d < -1]
        if bad:
            raise self.error(f"reshape_param.shape {dims} has negative dims {bad}; "
                             "expected >= 0, or -1 for one inferred dim")
        self.inferred_axis = inferred[0] if inferred else -1
        self.constant_count = _count([d for d in dims if d > 0])
        self.dims = dims
        if self.param.reshape_param.num_axes < -1:
            raise self.error(f"reshape_param.num_axes must be >= 0, or -1 for all, "
                             f"got {self.param.reshape_param.num_axes}")

    def top_shape(self, x):
        p = self.param.reshape_param
        n = x.num_axes
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        if not 0 <= start <= n:
            raise self.error(f"reshape_param.axis {p.axis} is out of range for bottom "
                             f"'{self.bottom_name(0)}' of shape {x.shape}")
        end = n if p.num_axes == -1 else start + p.num_axes
        if end > n:
            raise self.error(f"reshape_param.axis + num_axes = {end} is beyond the {n} axes "
                             f"of bottom '{self.bottom_name(0)}' (shape {x.shape})")
        shape = list(x.shape[:start]) + list(self.dims) + list(x.shape[end:])
        for i in self.copy_axes:
            if start + i >= n:
                raise self.error(f"reshape_param.shape has a 0 at position {i}, but bottom "
                                 f"'{self.bottom_name(0)}' (shape {x.shape}) has no axis "
                                 f"{start + i} to copy")
            shape[start + i] = x.shape[start + i]
        if self.inferred_axis >= 0:
            explicit = self.constant_count * x.count_range(0, start) * x.count_range(end)
            for i in self.copy_axes:
                explicit *= shape[start + i]
            if explicit == 0 or x.count % explicit:
                raise self.error(f"bottom '{self.bottom_name(0)}' count {x.count} (shape "
                                 f"{x.shape}) is not divisible by the product of the "
                                 f"specified dimensions ({explicit})")
            shape[start + self.inferred_axis] = x.count // explicit
        if _count(shape) != x.count:
            raise self.error(f"output shape {tuple(shape)} has {_count(shape)} elements, "
                             f"bottom '{self.bottom_name(0)}' {x.shape} has {x.count}")
        return tuple(shape)


@register("Crop")
class CropLayer(_CommonLayer):
    """Crop bottom 0 to the shape of bottom 1 from ``axis`` on.

    ``offset``: none (0), one for every cropped axis, or one per axis from
    ``axis`` to the last.  Forward: ``y = x[..., o_a : o_a + s_a, ...]`` with
    ``s`` = bottom 1's shape on the cropped axes.  Backward: ``dE/dx`` is zero
    except on the cropped window, which gets ``dE/dy``; bottom 1 gets nothing.
    Bottoms: data, reference (only its shape is read).  Top: the crop.
    """

    exact_bottoms = 2
    exact_tops = 1

    def setup(self, bottom, top):
        p = self.param.crop_param
        start = self._canonical_axis(bottom[0], p.axis, "crop_param.axis")
        if len(p.offset) > 1 and start + len(p.offset) != bottom[0].num_axes:
            raise self.error(f"crop_param: {len(p.offset)} offsets given for axis {start} of "
                             f"a {bottom[0].num_axes}-D bottom, expected one offset or "
                             f"{bottom[0].num_axes - start}")

    def reshape(self, bottom, top):
        p = self.param.crop_param
        x, ref = bottom
        start = self._canonical_axis(x, p.axis, "crop_param.axis")
        if ref.num_axes < x.num_axes:
            raise self.error(f"bottom '{self.bottom_name(1)}' has shape {ref.shape}, "
                             f"expected at least {x.num_axes} axes like '{self.bottom_name(0)}'")
        offsets, shape = [], []
        for i in range(x.num_axes):
            offset, size = 0, x.shape[i]
            if i >= start:
                size = ref.shape[i]
                if len(p.offset) == 1:
                    offset = int(p.offset[0])
                elif len(p.offset) > 1:
                    offset = int(p.offset[i - start])
                if x.shape[i] - offset < size:
                    raise self.error(f"the crop of axis {i} is out of bounds: bottom "
                                     f"'{self.bottom_name(0)}' has size {x.shape[i]}, offset "
                                     f"{offset} + crop size {size} exceeds it")
            offsets.append(offset)
            shape.append(size)
        self.window = tuple(slice(o, o + s) for o, s in zip(offsets, shape))
        top[0].reshape(shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data[self.window]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            bottom[0].diff[self.window] = top[0].diff


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


@register("Tile")
class TileLayer(_CommonLayer):
    """Repeat the block ``x[..., axis:]`` ``tiles`` times along ``axis``.

    Forward: viewing x as (outer, inner) with inner = count(axis), y is
    (outer, tiles, inner) with ``y[o, t] = x[o]``; the top shape is the
    bottom's with ``shape[axis] * tiles``.  Backward: ``dE/dx[o] = sum_t dE/dy[o, t]``.
    """

    exact_bottoms = 1
    exact_tops = 1

    def setup(self, bottom, top):
        p = self.param.tile_param
        if not p.HasField("tiles"):
            raise self.error("tile_param.tiles must be specified")
        if p.tiles <= 0:
            raise self.error(f"tile_param.tiles must be positive, got {p.tiles}")
        self.tiles = int(p.tiles)

    def reshape(self, bottom, top):
        x = bottom[0]
        axis = self._canonical_axis(x, self.param.tile_param.axis, "tile_param.axis")
        self.outer = x.count_range(0, axis)
        self.inner = x.count_range(axis)
        shape = list(x.shape)
        shape[axis] *= self.tiles
        top[0].reshape(shape)

    def forward(self, bottom, top):
        xp = get_array_module(bottom[0].data)
        x = bottom[0].data.reshape(self.outer, 1, self.inner)
        y = xp.broadcast_to(x, (self.outer, self.tiles, self.inner))
        top[0].data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.outer, self.tiles, self.inner)
        g = dy[:, 0].copy()
        for t in range(1, self.tiles):  # Caffe's order of summation
            g += dy[:, t]
        bottom[0].diff[...] = g.reshape(bottom[0].shape)


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


@register("Silence", "SILENCE")
class SilenceLayer(_CommonLayer):
    """Swallow its bottoms (no tops), so that they count as used.

    Forward: nothing.  Backward: ``dE/dx_i = 0`` for every bottom asked.
    """

    min_bottoms = 1
    exact_tops = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, down in zip(bottom, propagate_down):
            if down:
                b.diff[...] = 0


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


@register("BatchReindex")
class BatchReindexLayer(_CommonLayer):
    """Select / reorder / repeat items of the batch: ``y = x[idx]``.

    Bottoms: x (N, ...), idx (M,) of floats holding item numbers in [0, N).
    Top: (M, ...).  Backward: ``dE/dx[n] = sum_{m: idx[m] = n} dE/dy[m]``;
    no gradient to idx (asking for one is an error).
    """

    exact_bottoms = 2
    exact_tops = 1

    def reshape(self, bottom, top):
        x, idx = bottom
        if idx.num_axes != 1:
            raise self.error(f"bottom '{self.bottom_name(1)}' (the indices) must be 1-D, "
                             f"got shape {idx.shape}")
        if x.num_axes < 1:
            raise self.error(f"bottom '{self.bottom_name(0)}' must have a batch axis, "
                             "got a 0-d blob")
        top[0].reshape((idx.shape[0],) + x.shape[1:])

    def forward(self, bottom, top):
        self.index = _as_indices(self, bottom[1], 1, bottom[0].shape[0], "index")
        if top[0].count:
            top[0].data[...] = bottom[0].data[self.index]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error(f"cannot backpropagate to the indices "
                             f"'{self.bottom_name(1)}'")
        if not propagate_down[0]:
            return
        xp = get_array_module(bottom[0].data)
        bottom[0].diff[...] = 0
        xp.add.at(bottom[0].diff, self.index, top[0].diff)


@register("Filter")
class FilterLayer(_CommonLayer):
    """Keep the items whose selector is non-zero.

    Bottoms: x_1 .. x_K (each N x ...), then the selector (N, 1, ..., 1).
    Tops: K blobs ``y_k = x_k[s != 0]`` (S x ...).  Backward: ``dE/dx_k`` is
    ``dE/dy_k`` on the kept items and 0 elsewhere; none to the selector (asking
    for one is an error).  Like Caffe, the first reshape (at setup, when the
    selector may not be filled yet) sizes the tops for the whole batch.
    """

    min_bottoms = 2
    min_tops = 1

    def setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise self.error(f"takes one top per filtered bottom: {len(bottom) - 1} "
                             f"expected, got {len(top)}")
        self.first_reshape = True

    def reshape(self, bottom, top):
        selector = bottom[-1]
        last = len(bottom) - 1
        if selector.num_axes < 1 or any(d != 1 for d in selector.shape[1:]):
            raise self.error(f"selector '{self.bottom_name(last)}' has shape "
                             f"{selector.shape}, expected (N, 1, ..., 1)")
        for i, b in enumerate(bottom[:-1]):
            if b.num_axes < 1 or b.shape[0] != selector.shape[0]:
                raise self.error(f"bottom '{self.bottom_name(i)}' has shape {b.shape}, "
                                 f"expected {selector.shape[0]} items like the selector "
                                 f"'{self.bottom_name(last)}'")
        xp = get_array_module(selector.data)
        self.index = xp.nonzero(selector.data.reshape(-1))[0]
        kept = int(self.index.size)
        if self.first_reshape:
            kept = selector.shape[0]
            self.first_reshape = False
        for t, b in zip(top, bottom):
            t.reshape((kept,) + b.shape[1:])

    def forward(self, bottom, top):
        n = int(self.index.size)
        for t, b in zip(top, bottom):
            t.data[:n] = b.data[self.index]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise self.error(f"cannot backpropagate to the selector "
                             f"'{self.bottom_name(len(bottom) - 1)}'")
        n = int(self.index.size)
        for i, (t, b) in enumerate(zip(top, bottom)):
            if propagate_down[i]:
                b.diff[...] = 0
                b.diff[self.index] = t.diff[:n]


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
        if p.num_output <= 0:
            raise self.error(f"embed_param.num_output must be positive, got {p.num_output}")
        if p.input_dim <= 0:
            raise self.error(f"embed_param.input_dim must be positive, got {p.input_dim}")
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
