"""Weights in HDF5: Caffe's ``Net::ToHDF5`` / ``CopyTrainedLayersFromHDF5``.

Layout: a group ``data`` with one group per layer (every layer, in net order,
including those without params) holding one dataset per param blob named by
its index (``data/conv1/0``, ``data/conv1/1``); with diffs, the same under
``diff``.  A param shared with an earlier layer (a ``ParamSpec`` name another
layer owns) is written only by its owner; reading, such a missing dataset is
fine, any other is an error.  ``caffe_lite test --weights x.h5`` and
``Net.copy_from`` read this format as Caffe does (by the file's signature).
"""
import logging

import numpy

from ..backend import to_numpy
from ..errors import WeightsError
from . import files

log = logging.getLogger("pycaffe_lite")


def is_hdf5(path):
    """True when ``path`` is an HDF5 file (by its signature, as Caffe's H5Fis_hdf5).

    A path that is not a regular file (a device, a FIFO: reading it could block
    or never end), is missing or holds a NUL byte raises a ParseError naming it."""
    files.regular_file(path, "caffemodel")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return head == b"\x89HDF\r\n\x1a\n"


def _shared_elsewhere(net, i, k):
    """True when param ``k`` of layer ``i`` is owned by another layer (weight sharing)."""
    specs = net.records[i].layer.param.param
    name = specs[k].name if k < len(specs) else ""
    return bool(name) and net.param_owner.get(name, (i, k)) != (i, k)


def save(net, path, write_diff=False):
    """Write ``net``'s params (and diffs) to the HDF5 file ``path``, atomically."""
    import h5py
    with files.atomic_output(path) as f, h5py.File(f, "w") as h5:
        groups = [h5.create_group("data")] + ([h5.create_group("diff")] if write_diff else [])
        for i, record in enumerate(net.records):
            layer_groups = [g.create_group(record.name) for g in groups]
            for k, blob in enumerate(record.layer.blobs):
                if _shared_elsewhere(net, i, k):
                    continue
                layer_groups[0].create_dataset(str(k), data=to_numpy(blob.data))
                if write_diff:
                    layer_groups[1].create_dataset(str(k), data=to_numpy(blob.diff))


def load(net, path):
    """Copy the params of the HDF5 file ``path`` into ``net``'s layers of the same name."""
    import h5py
    index = {record.name: i for i, record in enumerate(net.records)}
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise WeightsError(f"{path}: cannot read HDF5 weights: {e}") from None
    with h5:
        if "data" not in h5:
            raise WeightsError(f"{path}: no 'data' group; not weights written by Caffe's "
                               "save_hdf5 / ToHDF5")
        for name, group in h5["data"].items():
            if name not in index:
                log.info("Ignoring source layer %s", name)
                continue
            i = index[name]
            blobs = net.records[i].layer.blobs
            if len(group) > len(blobs):
                raise WeightsError(f"{path}: layer '{name}' holds {len(group)} param blob(s), "
                                   f"the net's layer has {len(blobs)}")
            for k, blob in enumerate(blobs):
                if str(k) not in group:
                    if _shared_elsewhere(net, i, k):
                        continue
                    raise WeightsError(f"{path}: layer '{name}' has no param {k} (the net's "
                                       f"layer has {len(blobs)})")
                dataset = group[str(k)]
                if getattr(dataset, "shape", None) != blob.shape:   # checked before reading
                    raise WeightsError(f"{path}: cannot copy param {k} of layer '{name}': "
                                       f"shape mismatch; the file has "
                                       f"{getattr(dataset, 'shape', 'a group')}, the net "
                                       f"defines {blob.shape}")
                values = numpy.asarray(dataset)
                files.check_finite(values, f"{path}: layer '{name}' param blob {k}")
                blob.data[...] = net.xp.asarray(values.astype(blob.dtype))
