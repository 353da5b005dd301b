"""Swap data-source layers for synthetic data of the same shape.

Lets a user build, time and smoke-test a net whose LMDBs or image lists are
not on this machine (``caffe_lite time --synthetic-data``): every Data,
ImageData, HDF5Data, WindowData and MemoryData layer becomes a DummyData layer
with the same tops, batch size and (where the prototxt tells it) sample size.
Images get Gaussian noise, labels the constant 0.
"""
from ..proto import caffe_pb2

SOURCE_TYPES = {"Data", "ImageData", "HDF5Data", "WindowData", "MemoryData"}


def batch_size(layer):
    for field in ("data_param", "image_data_param", "hdf5_data_param", "window_data_param",
                  "memory_data_param"):
        if layer.HasField(field):
            return getattr(layer, field).batch_size
    return 1


def _sample_shape(layer, default):
    """(C, H, W) the layer would produce, as far as the prototxt says."""
    channels, height, width = default
    if layer.type == "MemoryData":
        p = layer.memory_data_param
        return (p.channels, p.height, p.width)
    if layer.type == "ImageData":
        p = layer.image_data_param
        channels = 3 if p.is_color else 1
        height, width = p.new_height or height, p.new_width or width
    crop = layer.transform_param.crop_size
    if crop:
        height = width = crop
    return (channels, height, width)


def _twin_shapes(net_param, default):
    """``{first top: (C, H, W)}`` of the source layers whose prototxt sets a size.

    A train_val often crops in one phase only (CIFAR: ``crop_size: 32`` for TRAIN,
    the whole padded image for TEST); the other phase's layer, writing the same
    top, is given this size, so that the train and test nets share weights of the
    same shapes.
    """
    shapes = {}
    for layer in net_param.layer:
        if layer.type in SOURCE_TYPES and layer.top:
            shape = _sample_shape(layer, default)
            if shape != tuple(default):
                shapes.setdefault(layer.top[0], shape)
    return shapes


def synthesize_data_layers(net_param, sample_shape=(3, 224, 224), shapes=None, batch=None):
    """A copy of ``net_param`` with data-source layers replaced by DummyData.

    ``sample_shape``: (C, H, W) of an image where the prototxt does not say it
    (no crop_size, no image_data_param size, and no layer writing the same top
    in another phase that says it).  ``batch``: a batch size to use instead of
    the prototxt's.

    ``shapes``: optional ``{top name: full shape}`` that overrides the inferred
    shape of a top (e.g. ``{"data": (64, 1, 28, 28)}``).
    """
    shapes = shapes or {}
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    twins = _twin_shapes(net_param, sample_shape)
    for layer in out.layer:
        if layer.type not in SOURCE_TYPES:
            continue
        n = batch or batch_size(layer)
        sample = _sample_shape(layer, sample_shape)
        if sample == tuple(sample_shape) and layer.top:
            sample = twins.get(layer.top[0], sample)
        image = (n,) + tuple(sample)
        dummy = caffe_pb2.LayerParameter(name=layer.name, type="DummyData")
        dummy.top.extend(layer.top)
        dummy.include.extend(layer.include)
        dummy.exclude.extend(layer.exclude)
        for i, top in enumerate(layer.top):
            shape = shapes.get(top, image if i == 0 else (n,))
            dummy.dummy_data_param.shape.add().dim.extend(int(d) for d in shape)
            filler = dummy.dummy_data_param.data_filler.add()
            if i == 0:
                filler.type, filler.std = "gaussian", 1.0
            else:
                filler.type, filler.value = "constant", 0.0
        layer.CopyFrom(dummy)
    return out
