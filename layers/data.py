"""Data layers that read records from files in a prefetch thread, and the base
of every data layer (the net's sources of blobs: no bottoms, no backward).

* ``Data``: Datums read from an LMDB in key order by a prefetch thread.
* ``ImageData``: image files listed with their labels in a text file.

The other sources build on :class:`BaseDataLayer` in their own modules:
:mod:`.inputs` (``Input``, ``DummyData``, ``MemoryData``: blobs held in memory)
and :mod:`.hdf5` (``HDF5Data``, with ``HDF5Output``, which writes its bottoms).

``Data`` and ``ImageData`` pass every record through the
:class:`~pycaffe_lite.data_transformer.DataTransformer` and load batches in a
background thread (``data_param.prefetch`` batches ahead, default 4; 0 loads
synchronously).  Batches come out in record order, wrapping to the first
record when the source is exhausted (also in the middle of a batch).  The
thread stops when the layer is garbage-collected or ``close()`` is called.
"""
import logging
import os
import queue
import threading
import types
import weakref

import numpy

from pycaffe_lite import memory, rng
from pycaffe_lite.data_transformer import DataTransformer, TransformError
from pycaffe_lite.errors import CaffeError, LayerError, MemoryLimitError
from pycaffe_lite.layer import Layer, register
from pycaffe_lite.proto import caffe_pb2

log = logging.getLogger("pycaffe_lite")


class BaseDataLayer(Layer):
    """Base of the data layers: no bottoms, nothing to do backward."""

    exact_bottoms = 0
    min_tops = 1

    def reshape(self, bottom, top):
        # Caffe's data layers size their tops at setup (and, for the
        # prefetching ones, from each loaded batch); nothing to infer here.
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass

    def _transformer(self):
        """The DataTransformer of ``transform_param`` (errors name this layer)."""
        legacy = self._legacy_transform_fields()
        if legacy:
            log.warning("layer '%s': %s set in the layer's data parameter is ignored (as "
                        "Caffe ignores it in V2 nets); use transform_param", self.name,
                        ", ".join(legacy))
        try:
            return DataTransformer(self.param.transform_param, self.phase, self.dtype)
        except TransformError as e:
            raise self.error(str(e)) from None

    def _legacy_transform_fields(self):
        for field in ("data_param", "image_data_param", "window_data_param"):
            if self.param.HasField(field):
                sub = getattr(self.param, field)
                return [f"{field}.{name}" for name in ("scale", "mean_file", "crop_size",
                                                       "mirror") if sub.HasField(name)]
        return []


# --- prefetching -------------------------------------------------------------------

class _Failure:
    def __init__(self, error):
        self.error = error


class _Prefetcher:
    """Runs ``load`` (one batch per call) in a daemon thread, ``depth`` batches ahead.

    Holds no reference to the layer, so the layer can be collected (which
    stops the thread).  ``depth`` 0 loads synchronously in ``next()``.
    """

    def __init__(self, load, depth, name):
        self._load = load
        self._error = None
        self._stop = threading.Event()
        self._thread = None
        if depth > 0:
            self._queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self):
        try:
            while not self._stop.is_set():
                self._put(self._load())
        except BaseException as e:  # handed to the consumer, raised there
            self._put(_Failure(e))

    def next(self):
        if self._error is not None:
            raise self._error
        if self._stop.is_set():
            raise CaffeError("the data prefetch thread was stopped (layer closed)")
        if self._thread is None:
            return self._load()
        while True:
            try:
                item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise CaffeError("the data prefetch thread died") from None
        if isinstance(item, _Failure):
            self._error = item.error
            raise item.error
        return item

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            while True:  # unblock a producer waiting for room
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            if self._thread is not threading.current_thread():
                self._thread.join(timeout=5)


class PrefetchingDataLayer(BaseDataLayer):
    """A data layer whose batches a background thread loads (Caffe's
    BasePrefetchingDataLayer).  Subclasses make ``self._loader`` in ``setup``
    (an object with ``load_batch() -> (data, labels)`` and ``close()``, holding
    no reference to the layer) and then call ``_start(prefetch)``.  The
    batch popped by ``reshape`` sizes the tops and is what ``forward`` copies.
    """

    min_tops = 1
    max_tops = 2

    def _start(self, depth):
        self._pending = None
        self._prefetch = _Prefetcher(self._loader.load_batch, depth,
                                     f"{self.type} prefetch '{self.name}'")
        self._finalizer = weakref.finalize(self, _shut_down, self._prefetch, self._loader)

    def close(self):
        """Stop the prefetch thread (also done when the layer is collected)."""
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()

    def _next_batch(self):
        try:
            return self._prefetch.next()
        except (LayerError, MemoryLimitError):
            raise
        except CaffeError as e:
            raise self.error(str(e)) from None

    def _size_tops(self, top, data_shape):
        top[0].reshape(data_shape)
        if len(top) > 1:
            top[1].reshape(data_shape[:1])

    def reshape(self, bottom, top):
        if self._pending is None:
            self._pending = self._next_batch()
        self._size_tops(top, self._pending[0].shape)

    def forward(self, bottom, top):
        if self._pending is None:
            self.reshape(bottom, top)
        data, labels = self._pending
        self._pending = None
        xp = top[0].xp
        top[0].data[...] = xp.asarray(data)
        if len(top) > 1:
            top[1].data[...] = xp.asarray(labels)


def _shut_down(prefetch, loader):
    prefetch.stop()
    loader.close()


def _identity(name, type_name):
    """A stand-in for the layer in LayerErrors raised by a loader."""
    return types.SimpleNamespace(name=name, type=type_name)


def _batch_shape(transformer, sample, batch_size, who, where, dtype):
    """The data top's shape for a batch that ``sample`` (a Datum or an image) starts,
    refused when negative or larger than the memory guard allows.

    ``who``: the layer (or its stand-in) and ``where``: the sample, as errors name them.
    """
    try:
        shape = transformer.infer_blob_shape(sample)
    except TransformError as e:
        raise LayerError(who, f"{where}: {e}") from None
    shape = (batch_size,) + tuple(shape[1:])
    if any(d < 0 for d in shape):
        raise LayerError(who, f"{where}: a negative dimension in its channels x height x width "
                              f"{' x '.join(str(d) for d in shape[1:])}")
    try:
        memory.check_blob(shape, numpy, dtype)
    except MemoryLimitError as e:
        raise e.name(f"layer '{who.name}' (type {who.type})", f"{where}: the batch") from None
    return shape


class _BatchLoader:
    """Base of the loaders a prefetch thread runs: ``load_batch`` transforms the
    samples that ``_batch_samples`` yields as (Datum or image, label, where)."""

    def __init__(self, transformer, batch_size, dtype, who):
        self.transformer = transformer
        self.batch_size = batch_size
        self.dtype = dtype
        self.who = who

    def close(self):
        pass

    def _batch_samples(self):
        raise NotImplementedError

    def load_batch(self):
        """(data, labels); the first sample of each batch decides the batch's shape."""
        labels = numpy.empty(self.batch_size, dtype=self.dtype)
        data = None
        for i, (sample, label, where) in enumerate(self._batch_samples()):
            if data is None:
                data = numpy.empty(_batch_shape(self.transformer, sample, self.batch_size,
                                                self.who, where, self.dtype), self.dtype)
            try:
                self.transformer.transform(sample, out=data[i])
            except TransformError as e:
                raise LayerError(self.who, f"{where}: {e}") from None
            labels[i] = label
        return data, labels


# --- Data (LMDB / LevelDB) --------------------------------------------------------------

class _DatumLoader(_BatchLoader):
    """Reads Datums from the database in key order, wrapping around."""

    def __init__(self, reader, transformer, batch_size, skip, dtype, who):
        super().__init__(transformer, batch_size, dtype, who)
        self.reader = reader
        self.skip = skip
        self._records = None

    def close(self):
        if self._records is not None:
            self._records.close()
            self._records = None
        self.reader.close()

    def _next_record(self):
        if self._records is None:
            self._records = self.reader.records()
            for _ in range(self.skip):
                self._advance()
        return self._advance()

    def _advance(self):
        record = next(self._records, None)
        if record is None:
            log.debug("Restarting data prefetching from start.")
            self._records = self.reader.records()
            record = next(self._records, None)
            if record is None:
                raise LayerError(self.who, f"the database {self.reader.path} is empty")
        return record

    def where(self, key):
        """The record ``key`` as errors name it."""
        return f"record {key.decode(errors='replace')!r} of {self.reader.path}"

    def datum(self, key, value):
        datum = caffe_pb2.Datum()
        try:
            datum.ParseFromString(value)
        except Exception:
            raise LayerError(self.who, f"{self.where(key)} is not a Datum") from None
        return datum

    def _batch_samples(self):
        for _ in range(self.batch_size):
            key, value = self._next_record()
            datum = self.datum(key, value)
            yield datum, datum.label, self.where(key)


class MissingSourceError(LayerError):
    """A Data layer whose database does not exist (the net came without its data)."""


def missing_source_hint(source, backend):
    """How to get going without the database ``source``: make it, or do without it.

    The nets of papers name LMDBs that never travel with them; the user needs the
    two ways out more than the path.  ``backend``: data_param.backend (the tools
    write LMDB unless told otherwise).
    """
    flag = "" if backend == caffe_pb2.DataParameter.LMDB else "-backend=leveldb "
    return (f"; make it with convert_imageset {flag}[FLAGS] ROOTFOLDER/ LISTFILE {source} "
            "(LISTFILE: 'relative/path label' lines; convert_mnist_data makes MNIST's from "
            "its idx files), or run caffe_lite train / test / time with --synthetic-data to "
            "replace the data layers by random data of the same shapes")


@register("Data", "DATA")
class DataLayer(PrefetchingDataLayer):
    """Datums from an LMDB (``data_param.source``), in key order, transformed.

    Tops: data (batch_size x C x h x w, h x w = crop_size or the Datum's
    size) and optionally label (batch_size).  ``rand_skip`` skips a random
    number in [0, rand_skip) of records at the start.  LevelDB needs the
    ``plyvel`` package.
    """

    def setup(self, bottom, top):
        from pycaffe_lite.io.db import DBError, open_db
        p = self.param.data_param
        self.positive("data_param.batch_size", p.batch_size)
        try:
            reader = open_db(p.source, p.backend, what="data_param.source")
        except DBError as e:
            if not os.path.exists(p.source):
                hint = missing_source_hint(p.source, p.backend)
                raise MissingSourceError(self, str(e) + hint) from None
            raise self.error(str(e)) from None
        try:
            self._setup_from(reader, p, top)
        except BaseException:
            reader.close()
            raise
        log.info("output data size: %s", ",".join(str(d) for d in top[0].shape))
        self._start(p.prefetch)

    def _setup_from(self, reader, p, top):
        first = reader.first()
        if first is None:
            raise self.error(f"data_param.source '{p.source}' holds no records")
        transformer = self._transformer()
        skip = 0
        if p.rand_skip:
            skip = int(rng.generator().integers(p.rand_skip))
            log.info("Skipping first %d data points.", skip)
        self._loader = _DatumLoader(reader, transformer, p.batch_size, skip, self.dtype,
                                    _identity(self.name, self.type))
        # Shape from the record the first batch starts with.
        key, value = first
        if skip:
            records = reader.records()
            for _ in range(skip % len(reader) + 1):
                key, value = next(records)
            records.close()
        shape = _batch_shape(transformer, self._loader.datum(key, value), p.batch_size, self,
                             self._loader.where(key), self.dtype)
        self._size_tops(top, shape)


# --- ImageData ----------------------------------------------------------------------

class _ImageLoader(_BatchLoader):
    """Reads the listed images in turn (reshuffling at each pass if asked)."""

    def __init__(self, lines, param, transformer, shuffle_rng, dtype, who):
        super().__init__(transformer, param.batch_size, dtype, who)
        self.lines = lines
        self.pos = 0
        self.p = param
        self.shuffle_rng = shuffle_rng

    def read(self, index):
        from pycaffe_lite.io.caffe_io import read_image
        name, label, number = self.lines[index]
        path = self.p.root_folder + name
        img = read_image(path, self.p.new_height, self.p.new_width, self.p.is_color)
        if img is None:
            hint = ""
            if self.p.root_folder and not self.p.root_folder.endswith("/"):
                hint = " (root_folder is prefixed as it is: does it need a trailing '/'?)"
            why = "does not exist" if not os.path.exists(path) else "is not a readable image"
            raise LayerError(self.who, f"Could not load {path} ({self.p.source}:{number}): the "
                                       f"file {why}{hint}")
        return img, label, number

    def where(self, index):
        """Image ``index`` of the list as errors name it."""
        name, _, number = self.lines[index]
        return f"image {name} ({self.p.source}:{number})"

    def shuffle(self):
        order = self.shuffle_rng.permutation(len(self.lines))
        self.lines = [self.lines[k] for k in order]

    def _batch_samples(self):
        for _ in range(self.batch_size):
            img, label, _ = self.read(self.pos)
            yield img, label, self.where(self.pos)
            # Moves on once the image is in the batch (a failed one is read again).
            self.pos += 1
            if self.pos >= len(self.lines):
                log.debug("Restarting data prefetching from start.")
                self.pos = 0
                if self.p.shuffle:
                    self.shuffle()


@register("ImageData", "IMAGE_DATA")
class ImageDataLayer(PrefetchingDataLayer):
    """Images listed in ``image_data_param.source`` ("path label" per line).

    Images are read by OpenCV (BGR; gray with ``is_color: false``), resized
    to ``new_height`` x ``new_width`` when both are set, then transformed.
    Paths are ``root_folder + path``.  Tops: data (batch_size x C x h x w,
    the first image of each batch decides h x w) and label (batch_size).
    """

    def setup(self, bottom, top):
        p = self.param.image_data_param
        who = _identity(self.name, self.type)
        if (p.new_height == 0) != (p.new_width == 0) or p.new_height < 0 or p.new_width < 0:
            raise self.error(f"new_height and new_width must be set together (both > 0), got "
                             f"new_height {p.new_height}, new_width {p.new_width}")
        self.positive("image_data_param.batch_size", p.batch_size)
        from pycaffe_lite.io.caffe_io import read_image_list
        try:
            lines = read_image_list(p.source)
        except CaffeError as e:
            if not os.path.lexists(p.source):
                raise MissingSourceError(self, f"image_data_param.source: {e}; write it: one "
                                         "'relative/path label' line per image, the paths "
                                         "under image_data_param.root_folder, or run "
                                         "caffe_lite train / test / time with "
                                         "--synthetic-data to replace the data layers by "
                                         "random data of the same shapes") from None
            raise self.error(f"image_data_param.source: {e}") from None
        if not lines:
            raise self.error(f"image_data_param.source '{p.source}': File is empty")
        transformer = self._transformer()
        shuffle_rng = None
        if p.shuffle:
            shuffle_rng = numpy.random.default_rng(int(rng.generator().integers(1 << 63)))
        loader = _ImageLoader(lines, p, transformer, shuffle_rng, self.dtype, who)
        if p.shuffle:
            log.info("Shuffling data")
            loader.shuffle()
        log.info("A total of %d images.", len(lines))
        if p.rand_skip:
            skip = int(rng.generator().integers(p.rand_skip))
            log.info("Skipping first %d data points.", skip)
            if skip >= len(lines):
                raise self.error(f"Not enough points to skip: rand_skip drew {skip}, the list "
                                 f"has {len(lines)} images")
            loader.pos = skip
        img, _, _ = loader.read(loader.pos)
        self._size_tops(top, _batch_shape(transformer, img, p.batch_size, self,
                                          loader.where(loader.pos), self.dtype))
        self._loader = loader
        self._start(self.param.data_param.prefetch)
