"""Statistics over many images, a chunk at a time, through a built net.

**Re-normalisation** (:func:`renormalize`) gives every BatchNorm the mean and
variance that one forward of all N calibration images as a single TRAIN batch
would give it (``use_global_stats: false``, ``moving_average_fraction: 0``:
``mean``, ``m/(m-1) * var`` and scale factor 1, ``m`` = values per channel),
without holding that batch.  The BatchNorms are run in levels: a level's
statistics depend only on earlier levels' (level = 1 + the deepest BatchNorm
upstream).  One pass over the images per level accumulates the level's sums
(float64, shifted by the old mean) while the earlier levels normalise with
the statistics already found, *biased* variance included, exactly as in the
big batch; passes stop at the level's last BatchNorm.  Memory: the net at the
chunk size; time: about (levels / 2) forwards of the images.

**Activation steps** (:func:`activation_steps`): the paper's iteration per
ReLU (:class:`~pycaffe_lite.compress.quantizers.StepSearch`), every ReLU
moving one step per pass over the images, all in the same passes.
"""
import numpy

from ..backend import to_numpy
from ..layer import TEST
from ..net import Net
from . import netparams
from .quantizers import StepEvaluation, StepSearch


def build(net_param, weights, sample_shape, chunk):
    """The TEST net of ``net_param`` fed by an Input of ``chunk`` images, every
    BatchNorm on its stored statistics."""
    param = netparams.deploy_param(net_param, (chunk,) + tuple(sample_shape))
    for layer in param.layer:
        if layer.type == "BatchNorm":
            layer.batch_norm_param.use_global_stats = True
    net = Net(param, phase=TEST, weights=weights)
    net.set_inference_only("a net for statistics (pycaffe_lite.compress.streaming)")
    return net


MEMORY_BUDGET = 768 << 20      # bytes of activations per chunk when no chunk size is given


def chunk_for(net, budget):
    """Images per chunk whose activations fit ``budget`` bytes (1..64), from ``net``
    built for one image; the largest layer's scratch (im2col) is counted as one more
    blob of its size."""
    blobs = {id(b): b.data.nbytes for record in net.records
             for b in record.bottom_blobs + record.top_blobs}
    per_image = sum(blobs.values()) + max(blobs.values(), default=0)
    return int(max(1, min(64, budget // max(per_image, 1))))


def run_pass(net, images, chunk, count, end, before=(), after=(), progress=None):
    """Forward ``count`` images through layers ``0..end``; ``before[i](x)`` sees
    layer i's first bottom before it runs, ``after[i](y)`` its first top after."""
    blob = net.blobs[net.input_names[0]]
    for data in images.chunks(chunk, count):
        if blob.shape != data.shape:
            blob.reshape(data.shape)
            net.reshape_all()
        blob.data[...] = net.xp.asarray(data)
        for i in range(end + 1):
            record = net.records[i]
            if i in before:
                before[i](to_numpy(record.bottom_blobs[0].data))
            record.layer.run_forward(record.bottom_blobs, record.top_blobs)
            if i in after:
                after[i](to_numpy(record.top_blobs[0].data))
        if progress is not None:
            progress.update(len(data))


def batchnorm_levels(net):
    """``{record index: level}`` of every BatchNorm (1: no BatchNorm upstream)."""
    depth, levels = {}, {}
    for i, record in enumerate(net.records):
        d = max((depth.get(id(b), 0) for b in record.bottom_blobs), default=0)
        if record.layer.type == "BatchNorm":
            d += 1
            levels[i] = d
        for blob in record.top_blobs:
            depth[id(blob)] = d
    return levels


class Moments:
    """Per-channel sums of ``x - shift`` and its square over (N, C, ...) chunks."""

    def __init__(self, shift):
        self.shift = numpy.asarray(shift, dtype=numpy.float64)
        self.s1 = numpy.zeros_like(self.shift)
        self.s2 = numpy.zeros_like(self.shift)
        self.m = 0

    def add(self, x):
        channels = self.shift.size
        for sample in x:                # one image at a time: bounded float64 scratch
            d = sample.reshape(channels, -1).astype(numpy.float64) - self.shift[:, None]
            self.s1 += d.sum(axis=1)
            self.s2 += (d * d).sum(axis=1)
            self.m += d.shape[1]

    def result(self):
        """(mean, biased variance, values per channel), float64."""
        mean_d = self.s1 / self.m
        return self.shift + mean_d, numpy.maximum(self.s2 / self.m - mean_d * mean_d, 0), self.m


def _global_mean(layer):
    s = float(to_numpy(layer.blobs[2].data)[0])
    return to_numpy(layer.blobs[0].data) * (0 if s == 0 else 1 / s)


def renormalize(net, images, chunk, count, progress=None):
    """Re-estimate every BatchNorm of ``net`` (built by :func:`build`) in place.

    Returns ``{layer name: (mean, unbiased variance)}`` as float32 arrays;
    ``progress(total)`` makes a tqdm-like bar (``update(n)``) for the images.
    """
    levels = batchnorm_levels(net)
    found = {}
    passes = sorted(set(levels.values()))
    bar = progress(len(passes) * min(count, len(images))) if progress else None
    for level in passes:
        members = [i for i, lv in levels.items() if lv == level]
        sums = {i: Moments(_global_mean(net.records[i].layer)) for i in members}
        run_pass(net, images, chunk, count, max(members),
                 before={i: sums[i].add for i in members}, progress=bar)
        for i in members:
            mean, var, m = sums[i].result()
            layer = net.records[i].layer
            dtype = layer.blobs[0].data.dtype
            # The big batch normalises with the biased variance; it stores m/(m-1) var.
            layer.blobs[0].data[...] = net.xp.asarray(mean.astype(dtype))
            layer.blobs[1].data[...] = net.xp.asarray(var.astype(dtype))
            layer.blobs[2].data[...] = 1
            unbiased = var * (m / (m - 1) if m > 1 else 1)
            found[net.records[i].name] = (mean.astype(numpy.float32),
                                          unbiased.astype(numpy.float32))
    if bar is not None:
        bar.close()
    for i in levels:
        layer = net.records[i].layer
        layer.blobs[1].data[...] = net.xp.asarray(found[net.records[i].name][1])
    return found, len(passes)


def activation_steps(net, images, chunk, count, relus, top, progress=None):
    """``{layer name: StepSearch}`` for the ReLU layers named ``relus``."""
    index = {record.name: i for i, record in enumerate(net.records)}
    searches = {index[name]: StepSearch(top) for name in relus}
    maxima = dict.fromkeys(searches, 0.0)

    def track_max(i):
        def hook(y):
            maxima[i] = max(maxima[i], float(y.max()))
        return hook

    passes = 0
    bar = progress(None) if progress else None
    run_pass(net, images, chunk, count, max(searches),
             after={i: track_max(i) for i in searches}, progress=bar)
    passes += 1
    for i, search in searches.items():
        search.start(maxima[i])
    while True:
        open_ = {i: s for i, s in searches.items() if s.result is None}
        if not open_:
            break
        sums = {i: StepEvaluation() for i in open_}

        def evaluate(i):
            def hook(y):
                for sample in y:
                    sums[i].add(sample, open_[i].step, top)
            return hook

        run_pass(net, images, chunk, count, max(open_),
                 after={i: evaluate(i) for i in open_}, progress=bar)
        passes += 1
        for i, search in open_.items():
            search.feed(sums[i])
    if bar is not None:
        bar.close()
    return {net.records[i].name: s for i, s in searches.items()}, passes
