"""Layers that route blobs or change their shape: Concat, Slice, Split,
Flatten, Reshape, Crop, Tile, Silence, BatchReindex and Filter, each following
BVLC Caffe's ``src/caffe/layers/<name>_layer.cpp`` (forward, backward, checks).
Forward copies, cuts, joins, repeats or views values and computes nothing new;
backward puts the gradient back where the values came from.

Where Caffe shares memory between top and bottom (Flatten, Reshape, a Concat of
one bottom, a Slice into one top, Split) the top's *data* here is a reshaped
view of the bottom's; its diff is its own array, which backward copies (or, for
Split, sums) into the bottom's.  The values are Caffe's; a bottom diff cleared
after the top diff was set does not lose the gradient.
"""
from ..backend import get_array_module
from ..layer import register
from .common import _CommonLayer, _as_indices


def _axis_slice(axis, start, stop):
    """Index selecting ``start:stop`` along ``axis`` (all of the axes before it)."""
    return (slice(None),) * axis + (slice(start, stop),)


def _count(shape, start=0, end=None):
    n = 1
    for d in shape[start:end]:
        n *= int(d)
    return n


class _ShapeLayer(_CommonLayer):
    """Helpers shared by the layers of this module."""

    def _top_name(self, i):
        return self.param.top[i] if i < len(self.param.top) else f"top[{i}]"

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


@register("Concat", "CONCAT")
class ConcatLayer(_ShapeLayer):
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
class SliceLayer(_ShapeLayer):
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
class SplitLayer(_ShapeLayer):
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


class _ViewLayer(_ShapeLayer):
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
class CropLayer(_ShapeLayer):
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


@register("Tile")
class TileLayer(_ShapeLayer):
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
        self.positive("tile_param.tiles", p.tiles)
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


@register("Silence", "SILENCE")
class SilenceLayer(_ShapeLayer):
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


@register("BatchReindex")
class BatchReindexLayer(_ShapeLayer):
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
class FilterLayer(_ShapeLayer):
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
