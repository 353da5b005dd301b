"""pycaffe's ``caffe.coord_map``: how the coordinates of two NetSpec tops relate,
and the Crop layer that aligns them (fully convolutional nets, e.g. FCN).

Each spatial layer maps the coordinates of its bottom to those of its top by
``y = a x + b`` per spatial axis, from ``axis`` on:

* Convolution, Pooling, Im2col (stride ``s``, dilated kernel ``k``, pad ``p``):
  ``a = 1/s``, ``b = (p - (k - 1)/2) / s``;
* Deconvolution: ``a = s``, ``b = (k - 1)/2 - p``;
* Crop (``offset`` ``o`` from ``axis``): ``a = 1``, ``b = -o``;
* elementwise layers (ReLU, BatchNorm, Eltwise, ...): ``a = 1``, ``b = 0``
  for any axis.

:func:`coord_map_from_to` composes the maps back from both tops to a common
ancestor; :func:`crop` makes ``L.Crop(top_from, top_to)`` with the offset
that maps ``top_from`` onto ``top_to``.  The maths is BVLC's
``python/caffe/coord_map.py``; the code is ours.
"""
import numpy

from .net_spec import layers as L

ELEMENTWISE = frozenset((
    "AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log", "LRN",
    "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split", "TanH",
    "Threshold", "Quant", "ActQuantize", "Clip", "Swish"))

IDENTITY = (None, 1, 0)


class UndefinedMapException(Exception):
    """The layer's coordinate map is not defined (not a spatial layer)."""


class AxisMismatchException(Exception):
    """Two maps on different axes cannot be composed."""


def _values(params, message, name, default):
    """A (possibly repeated) geometry value, from ``message`` if given as a dict,
    else from the layer's own keywords."""
    source = params.get(message, params)
    return numpy.array(source.get(name, default), ndmin=1)


def _window(fn):
    """(axis, stride, dilated kernel extent, pad) of a conv-like NetSpec layer."""
    message = "pooling_param" if fn.type_name == "Pooling" else "convolution_param"
    source = fn.params.get(message, fn.params)
    legacy = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"} & set(source)
    if legacy:
        raise ValueError(f"{fn.type_name}: cropping does not support the legacy "
                         f"{', '.join(sorted(legacy))} fields; give kernel_size / stride / "
                         "pad")
    kernel = _values(fn.params, message, "kernel_size", 1)
    dilation = _values(fn.params, message, "dilation", 1)
    return (source.get("axis", 1), _values(fn.params, message, "stride", 1),
            (kernel - 1) * dilation + 1, _values(fn.params, message, "pad", 0))


def coord_map(fn):
    """``(axis, a, b)`` of one NetSpec layer (see the module doc)."""
    kind = fn.type_name
    if kind in ("Convolution", "Pooling", "Im2col"):
        axis, stride, extent, pad = _window(fn)
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if kind == "Deconvolution":
        axis, stride, extent, pad = _window(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if kind in ELEMENTWISE:
        return IDENTITY
    if kind == "Crop":
        source = fn.params.get("crop_param", fn.params)
        # The map's axis counts coordinate axes from the one before the crop axis.
        return source.get("axis", 2) - 1, 1, -numpy.array(source.get("offset", 0), ndmin=1)
    raise UndefinedMapException(kind)


def compose(first, then):
    """The map ``then`` applied after ``first``."""
    axis1, a1, b1 = first
    axis2, a2, b2 = then
    if axis1 is not None and axis2 is not None and axis1 != axis2:
        raise AxisMismatchException(f"axis {axis1} against axis {axis2}")
    return (axis2 if axis1 is None else axis1), a1 * a2, a1 * b2 + b1


def inverse(mapping):
    axis, a, b = mapping
    return axis, 1 / a, -b / a


def _bottoms(top):
    # A Crop's second bottom only gives the shape: its coordinates do not map.
    inputs = top.fn.inputs
    return inputs[:1] if top.fn.type_name == "Crop" else inputs


def _walk_back(start):
    """``(top, map from top to start)`` for ``start`` and every ancestor reachable
    through mapped layers, nearest first."""
    maps, frontier = {start: IDENTITY}, [start]
    while frontier:
        top = frontier.pop(0)
        yield top, maps[top]
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _bottoms(top):
            if bottom not in maps:
                maps[bottom] = compose(maps[top], step)
                frontier.append(bottom)


def coord_map_from_to(top_from, top_to):
    """``(axis, a, b)`` with ``coordinate in top_to = a * coordinate in top_from + b``.

    Raises RuntimeError when the two tops share no ancestor through spatial layers.
    """
    from_maps = dict(_walk_back(top_from))
    for top, to_map in _walk_back(top_to):
        if top in from_maps:
            return compose(to_map, inverse(from_maps[top]))
    raise RuntimeError("Could not compute map between tops; are they connected by "
                       "spatial layers?")


def crop(top_from, top_to):
    """``L.Crop(top_from, top_to)`` with the offsets that align ``top_from`` to ``top_to``."""
    axis, a, b = coord_map_from_to(top_from, top_to)
    if not numpy.all(a == 1):
        raise AssertionError(f"scale mismatch on crop (a = {a})")
    if not numpy.all(b <= 0):
        raise AssertionError(f"cannot crop negative offset (b = {b})")
    if not numpy.all(numpy.round(b) == b):
        raise AssertionError(f"cannot crop noninteger offset (b = {b})")
    return L.Crop(top_from, top_to, crop_param=dict(
        axis=axis + 1, offset=[int(v) for v in -numpy.round(b).astype(int)]))
