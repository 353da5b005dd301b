"""The HDF5 layers: a source of blobs read from HDF5 files, and a sink.

* ``HDF5Data``: rows of the datasets of the HDF5 files listed in a text file.
* ``HDF5Output``: writes its two bottoms to an HDF5 file (no tops).

Both need the ``h5py`` package (imported when such a layer is set up).
"""
import logging
import os

import numpy

from pycaffe_lite import rng
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.io import files
from pycaffe_lite.backend import to_numpy
from pycaffe_lite.layer import Layer, register
from pycaffe_lite.layers.data import BaseDataLayer

log = logging.getLogger("pycaffe_lite")


# --- HDF5Data ---------------------------------------------------------------------------

@register("HDF5Data", "HDF5_DATA")
class HDF5DataLayer(BaseDataLayer):
    """Rows of the HDF5 files listed in ``hdf5_data_param.source`` (one per line).

    Each top reads the dataset of its own name; all of them must have the
    same number of rows.  Top i: batch_size x (the dataset's trailing dims).
    Rows are taken in order, file after file, wrapping around; ``shuffle``
    permutes the files and the rows within each file (again at each pass).
    Relative file names are relative to the current directory, as in Caffe.
    """

    def setup(self, bottom, top):
        p = self.param.hdf5_data_param
        if self.param.HasField("transform_param"):
            raise self.error(f"{self.type} does not transform data (remove transform_param)")
        self.positive("hdf5_data_param.batch_size", p.batch_size)
        try:   # a regular file only: a FIFO or /dev/zero would block or never end
            text = files.read_regular(p.source, "HDF5 list")
            self.filenames = text.decode("utf-8", errors="replace").split()
        except CaffeError as e:
            raise self.error(f"Failed to open source file: hdf5_data_param.source: {e}") \
                from None
        if not self.filenames:
            raise self.error(f"Must have at least 1 HDF5 filename listed in {p.source}")
        log.info("Number of HDF5 files: %d", len(self.filenames))
        self.shuffle = p.shuffle
        self.file_permutation = numpy.arange(len(self.filenames))
        if self.shuffle:
            rng.generator().shuffle(self.file_permutation)
        self.current_file = 0
        self._load(self.filenames[self.file_permutation[0]])
        self.current_row = 0
        for blob, array in zip(top, self.arrays):
            blob.reshape((p.batch_size,) + array.shape[1:])
        self.row_shapes = [a.shape[1:] for a in self.arrays]

    def _load(self, filename):
        import h5py
        if not os.path.isfile(filename):
            raise self.error(f"Failed opening HDF5 file: {filename} does not exist (listed in "
                             f"{self.param.hdf5_data_param.source}; relative paths are "
                             f"relative to the current directory {os.getcwd()})")
        arrays = []
        try:
            with h5py.File(filename, "r") as f:
                for name in self.param.top:
                    if name not in f:
                        raise self.error(f"HDF5 file {filename} has no dataset '{name}' for "
                                         f"the top of that name (datasets: "
                                         f"{', '.join(f.keys()) or 'none'})")
                    dataset = f[name]
                    if dataset.dtype.kind not in "fiub":
                        raise self.error(f"dataset '{name}' of {filename} holds "
                                         f"{dataset.dtype}, expected float or integer data")
                    arrays.append(numpy.asarray(dataset[()], dtype=self.dtype))
        except OSError as e:
            raise self.error(f"Failed opening HDF5 file: {filename}: {e}") from None
        for name, array in zip(self.param.top, arrays):
            if array.ndim < 1:
                raise self.error(f"dataset '{name}' of {filename} is a scalar; it must have "
                                 "at least 1 axis (rows)")
        rows = arrays[0].shape[0]
        for name, array in zip(self.param.top, arrays):
            if array.shape[0] != rows:
                raise self.error(f"datasets of {filename} differ in their number of rows: "
                                 f"'{self.param.top[0]}' has {rows}, '{name}' has "
                                 f"{array.shape[0]}")
        if rows == 0:
            raise self.error(f"HDF5 file {filename} holds no rows")
        if hasattr(self, "row_shapes"):
            for name, array, shape in zip(self.param.top, arrays, self.row_shapes):
                if array.shape[1:] != shape:
                    raise self.error(f"dataset '{name}' of {filename} has rows of shape "
                                     f"{array.shape[1:]}, the first file's have {shape}")
        self.arrays = arrays
        self.data_permutation = numpy.arange(rows)
        if self.shuffle:
            rng.generator().shuffle(self.data_permutation)

    def _next(self):
        self.current_row += 1
        if self.current_row == self.arrays[0].shape[0]:
            if len(self.filenames) > 1:
                self.current_file += 1
                if self.current_file == len(self.filenames):
                    self.current_file = 0
                    if self.shuffle:
                        rng.generator().shuffle(self.file_permutation)
                self._load(self.filenames[self.file_permutation[self.current_file]])
            self.current_row = 0
            if self.shuffle:
                rng.generator().shuffle(self.data_permutation)

    def forward(self, bottom, top):
        batch_size = self.param.hdf5_data_param.batch_size
        batches = [numpy.empty((batch_size,) + shape, dtype=self.dtype)
                   for shape in self.row_shapes]
        for i in range(batch_size):
            row = self.data_permutation[self.current_row]
            for batch, array in zip(batches, self.arrays):
                batch[i] = array[row]
            self._next()
        for blob, batch in zip(top, batches):
            blob.data[...] = blob.xp.asarray(batch)


# --- HDF5Output -------------------------------------------------------------------------

@register("HDF5Output", "HDF5_OUTPUT")
class HDF5OutputLayer(Layer):
    """Writes bottom 0 to dataset "data" and bottom 1 to "label" of
    ``hdf5_output_param.file_name`` (created at setup, rewritten at every
    forward) as num x channels x height x width arrays.  No tops; backward
    does nothing.
    """

    exact_bottoms = 2
    exact_tops = 0

    def setup(self, bottom, top):
        import h5py
        self.file_name = self.param.hdf5_output_param.file_name
        if not self.file_name:
            raise self.error("hdf5_output_param.file_name is not set")
        try:
            h5py.File(self.file_name, "w").close()
        except OSError as e:
            raise self.error(f"Failed to open HDF5 file {self.file_name} for writing: "
                             f"{e}") from None

    def reshape(self, bottom, top):
        if bottom[0].num != bottom[1].num:
            raise self.error(f"data blob '{self.bottom_name(0)}' and label blob "
                             f"'{self.bottom_name(1)}' must have the same batch size, got "
                             f"{bottom[0].num} and {bottom[1].num}")

    def forward(self, bottom, top):
        import h5py
        with h5py.File(self.file_name, "a") as f:
            for name, blob in (("data", bottom[0]), ("label", bottom[1])):
                shape = (blob.num, blob.channels, blob.height, blob.width)
                if name in f:
                    del f[name]
                f.create_dataset(name, data=to_numpy(blob.data).reshape(shape))
        log.info("Successfully saved %d rows", bottom[0].num)

    def backward(self, top, propagate_down, bottom):
        pass
