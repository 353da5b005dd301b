"""Calibration images: read once from their source, kept as one ``.npy`` file.

A source is an LMDB folder (a Data layer reads it), an image list in
ImageData's ``path label`` format, ``synthetic`` (Gaussian images of the
net's input shape, for nets whose data is not on this machine), or by default
the net's own TRAIN data layer.  An LMDB or list takes the TRAIN data layer's
``transform_param`` (crop, mirror, mean, scale), as the paper's TRAIN-phase
forward does.  Labels are never read into the file.

The file is written in chunks and read back in chunks, so no more than one
chunk of images is in memory at a time.
"""
import os

import numpy
from numpy.lib import format as npy

from ..errors import CaffeError
from ..io import files
from ..io.synthetic import synthesize_data_layers
from ..layer import TEST, TRAIN
from ..net import Net
from ..proto import caffe_pb2
from . import netparams, stages


class CalibrationError(CaffeError):
    pass


def _source(net_param, phase):
    layers = netparams.source_layers(netparams.phase_param(net_param, phase))
    if len(layers) > 1:
        names = ", ".join(f"'{layer.name}'" for layer in layers)
        which = "TRAIN" if phase == TRAIN else "TEST"
        raise CalibrationError(f"the net has {len(layers)} {which} data layers ({names}); the "
                               "pipeline calibrates nets with one data input")
    return layers[0] if layers else None


def _input_layer(net_param):
    for layer in netparams.phase_param(net_param, TRAIN).layer:
        if layer.type == "Input" and layer.input_param.shape:
            return layer
    return None


def source_path(layer):
    """The file or folder a Data / ImageData layer reads (None for other types)."""
    if layer.type == "Data":
        return layer.data_param.source
    if layer.type == "ImageData":
        return layer.image_data_param.source
    return None


def source_layer(net_param, source, model="the net"):
    """The LayerParameter that reads the calibration images of ``source``."""
    train = _source(net_param, TRAIN)
    if source == "synthetic":
        if train is not None:
            return synthesize_data_layers(caffe_pb2.NetParameter(layer=[train])).layer[0]
        given = _input_layer(net_param)
        if given is None:
            raise CalibrationError(f"{model} has neither a TRAIN data layer nor an Input "
                                   "layer with a shape: nothing tells the image size")
        return _dummy(given.top[0], given.input_param.shape[0].dim[1:])
    if source is None:
        if train is None:
            raise CalibrationError(f"{model} has no TRAIN data layer to calibrate from: give "
                                   "a calibration source (--calib: an LMDB folder, an image "
                                   "list, or 'synthetic')")
        return train
    layer = caffe_pb2.LayerParameter(name="calibration", top=["data", "label"])
    # The images as the net sees them: the TRAIN layer's transform, else the TEST one's.
    reference = train or _source(net_param, TEST)
    if reference is not None:
        layer.transform_param.CopyFrom(reference.transform_param)
    if os.path.isdir(source):
        layer.type = "Data"
        layer.data_param.source = source
        layer.data_param.backend = caffe_pb2.DataParameter.LMDB
    elif os.path.isfile(source):
        layer.type = "ImageData"
        if reference is not None and reference.type == "ImageData":
            layer.image_data_param.CopyFrom(reference.image_data_param)
            layer.image_data_param.shuffle = False
        elif layer.transform_param.crop_size:
            size = layer.transform_param.crop_size
            layer.image_data_param.new_height = layer.image_data_param.new_width = size
        layer.image_data_param.source = source
    else:
        raise CalibrationError(f"calibration source '{source}' does not exist (expected an "
                               "LMDB folder, an image list file, or 'synthetic')")
    return layer


def _dummy(top, sample_shape):
    layer = caffe_pb2.LayerParameter(name="data", type="DummyData", top=[top])
    layer.dummy_data_param.shape.add().dim.extend([1] + list(sample_shape))
    filler = layer.dummy_data_param.data_filler.add()
    filler.type, filler.std = "gaussian", 1.0
    return layer


def available(layer):
    """How many images the layer's source holds (None: unbounded or unknown)."""
    if layer.type == "Data":
        from ..io.db import DBReader
        reader = DBReader(source_path(layer), layer.data_param.backend,
                          what="calibration database")
        try:
            return len(reader)
        finally:
            reader.close()
    if layer.type == "ImageData":
        from ..io.caffe_io import read_image_list
        try:
            return len(read_image_list(source_path(layer)))
        except CaffeError as e:
            raise CalibrationError(f"calibration image list: {e}") from None
    return None


def _set_batch(layer, batch):
    for field in ("data_param", "image_data_param", "hdf5_data_param", "memory_data_param"):
        if layer.HasField(field):
            getattr(layer, field).batch_size = batch
    if layer.type == "DummyData":
        for shape in layer.dummy_data_param.shape:
            shape.dim[0] = batch
    if layer.type == "Data" or layer.type == "ImageData":
        getattr(layer, "data_param" if layer.type == "Data" else "image_data_param").rand_skip = 0


def write(layer, images, path, chunk=50, progress=None, describe="calibration source"):
    """Read ``images`` images of ``layer`` into ``path`` (atomically); return their
    shape."""
    held = available(layer)
    if held is not None and held < images:
        raise CalibrationError(f"{describe} holds {held} images; {images} asked "
                               f"(ask for at most {held}, e.g. --images {held})")
    reader = caffe_pb2.LayerParameter()
    reader.CopyFrom(layer)
    del reader.include[:]
    del reader.exclude[:]
    _set_batch(reader, min(chunk, images))
    net = Net(caffe_pb2.NetParameter(name="calibration", layer=[reader]), phase=TRAIN)
    try:
        with files.atomic_output(path) as f:
            done, header = 0, None
            while done < images:
                net.forward_range()
                data = numpy.ascontiguousarray(net.blobs[reader.top[0]].data, numpy.float32)
                data = data[:images - done]
                if header is None:
                    header = (images,) + data.shape[1:]
                    npy.write_array_header_1_0(f, {"descr": npy.dtype_to_descr(data.dtype),
                                                   "fortran_order": False, "shape": header})
                f.write(data.tobytes())
                done += len(data)
                if progress is not None:
                    progress.update(len(data))
    finally:
        net.close()
    return header


class Images:
    """The calibration file, read ``chunk`` images at a time (no memory map)."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            version = npy.read_magic(f)
            header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            self.shape, _, self.dtype = header(f)
            self.offset = f.tell()
        self.sample = int(numpy.prod(self.shape[1:]))

    def __len__(self):
        return self.shape[0]

    def chunks(self, chunk, count=None):
        count = len(self) if count is None else min(count, len(self))
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for start in range(0, count, chunk):
                n = min(chunk, count - start)
                data = numpy.fromfile(f, dtype=self.dtype, count=n * self.sample)
                yield data.reshape((n,) + tuple(self.shape[1:]))


def fingerprint(layer):
    """What identifies the images a source layer reads (a file's bytes, an LMDB's
    size and time)."""
    source = source_path(layer)
    if layer.type == "Data":
        path = os.path.join(source, "data.mdb")
        if os.path.exists(path):
            st = os.stat(path)
            return [path, st.st_size, st.st_mtime_ns]
        return [source]
    if layer.type == "ImageData" and os.path.isfile(source):
        return stages.sha256_file(source)
    return None
