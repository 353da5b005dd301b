"""``caffe_lite speedtest``: Q-CNN's speed-test, a Q net against its dense twin.

Q-CNN's README reports, per layer and for the whole net, the time of one
image (batch 1, one thread) through Caffe and through its lookup-table
engine, and the ratio.  Here the two nets are the Q net (``--model`` +
``--weights``, with QConvolution / QInnerProduct layers) and its dense twin
(:func:`pycaffe_lite.tools.qdense.dense_net`: the same net with Convolution /
InnerProduct holding the reconstructed weights), both run by pycaffe_lite on
the same random input: so the ratio is the lookup tables' against our own
im2col + BLAS path, the strongest dense baseline at hand.

Each net runs once untimed (allocations, the Numba kernels' compilation), then
``iterations`` passes alternate between the two nets, so a slow moment of the
machine hits both; the table gives each layer's mean forward time.  Threads:
BLAS (through threadpoolctl), our pool and Numba are set to ``threads``.
"""
import logging
import time

import numpy

from .. import parallel
from ..errors import CaffeError
from ..io import files
from ..layer import TEST
from ..log import caffe_float
from ..net import Net
from .qdense import DENSE_TYPES, dense_net

log = logging.getLogger("pycaffe_lite")


def _limit_threads(threads):
    """A context that runs BLAS, our pool and Numba on ``threads`` threads."""
    import contextlib
    stack = contextlib.ExitStack()
    try:
        import threadpoolctl
        stack.enter_context(threadpoolctl.threadpool_limits(threads))
    except ImportError:
        log.warning("threadpoolctl is not installed: BLAS keeps its own thread count")
    before = parallel.num_threads()
    parallel.set_num_threads(threads)
    stack.callback(parallel.set_num_threads, before)
    try:
        import numba
        old = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        stack.callback(numba.set_num_threads, old)
    except ImportError:
        pass
    return stack


def _at_batch(net_param, batch):
    for layer in net_param.layer:
        for shape in layer.input_param.shape if layer.type == "Input" else ():
            if shape.dim:
                shape.dim[0] = batch
    return net_param


def _feed(net, seed):
    rng = numpy.random.default_rng(seed)
    for name in net.input_names:
        blob = net.blobs[name]
        blob.data[...] = net.xp.asarray(rng.standard_normal(blob.shape).astype(blob.dtype))


def _pass(net, times):
    clock = time.perf_counter
    for i, record in enumerate(net.records):
        start = clock()
        record.layer.run_forward(record.bottom_blobs, record.top_blobs)
        times[i] += clock() - start


def speedtest(model, weights, iterations=10, threads=1, batch=1, seed=0):
    """Time the Q net ``model`` + ``weights`` against its dense twin.

    Returns ``{"rows": [{"layer", "type", "dense_ms", "q_ms", "speedup"}], "dense_ms",
    "q_ms", "speedup", "q_bytes", "dense_bytes", "threads", "batch", "iterations"}``:
    the layers in net order (the Q layers with their lookup time, the others as a
    check that both nets did the same work), the whole forward, and the
    caffemodels' sizes.
    """
    if iterations <= 0:
        raise CaffeError(f"speedtest: --iterations must be positive, got {iterations}")
    net_param = _at_batch(files.read_net(model) if isinstance(model, str) else model, batch)
    q_net = Net(net_param, phase=TEST)
    if not any(r.layer.type in DENSE_TYPES for r in q_net.records):
        raise CaffeError(f"{model}: no QConvolution or QInnerProduct layer: nothing to "
                         "compare (speedtest takes a Q-CNN net, e.g. from 'caffe_lite import "
                         "qcnn' or 'caffe_lite compress qcnn')")
    q_net.copy_from(weights)
    q_net.set_inference_only("speedtest")
    dense_param, dense_weights = dense_net(net_param, q_net)
    dense = Net(dense_param, phase=TEST)
    dense.copy_from(dense_weights)
    dense.set_inference_only("speedtest")
    nets = (dense, q_net)
    times = [[0.0] * len(n.records) for n in nets]
    with _limit_threads(threads):
        for net in nets:
            _feed(net, seed)
            net.forward_range()                   # untimed: allocations, compilation
        for _ in range(iterations):
            for net, t in zip(nets, times):
                _pass(net, t)
    rows = []
    for record, d, q in zip(q_net.records, *times):
        rows.append({"layer": record.name, "type": record.layer.type,
                     "dense_ms": 1e3 * d / iterations, "q_ms": 1e3 * q / iterations,
                     "speedup": d / q if q else float("inf")})
    dense_ms, q_ms = (1e3 * sum(t) / iterations for t in times)
    q_bytes = q_net.to_proto().ByteSize()
    return {"rows": rows, "dense_ms": dense_ms, "q_ms": q_ms, "speedup": dense_ms / q_ms,
            "q_bytes": q_bytes, "dense_bytes": dense_weights.ByteSize(), "threads": threads,
            "batch": batch, "iterations": iterations}


def format_table(result, only_q=False):
    """Q-CNN's README table: per layer, the dense and Q times and the speed-up."""
    lines = [f"{'layer':<12}{'type':<16}{'dense (ms)':>12}{'Q (ms)':>10}{'speed-up':>10}"]
    for row in result["rows"]:
        if only_q and row["type"] not in DENSE_TYPES:
            continue
        lines.append(f"{row['layer']:<12}{row['type']:<16}{row['dense_ms']:>12.2f}"
                     f"{row['q_ms']:>10.2f}{row['speedup']:>9.2f}x")
    lines.append(f"{'whole net':<28}{result['dense_ms']:>12.2f}{result['q_ms']:>10.2f}"
                 f"{result['speedup']:>9.2f}x")
    lines.append(f"{'weights (MB)':<28}{result['dense_bytes'] / 1e6:>12.2f}"
                 f"{result['q_bytes'] / 1e6:>10.2f}"
                 f"{result['dense_bytes'] / result['q_bytes']:>9.2f}x")
    return "\n".join(lines)


def speedtest_cli(flags):
    from ..flags import UsageError
    for name, what in (("model", "a Q-CNN net (deploy prototxt)"),
                       ("weights", "its weights (caffemodel)")):
        if not getattr(flags, name):
            raise UsageError(f"Need {what} (--{name}).")
    if flags.threads <= 0:
        raise UsageError(f"--threads must be positive, got {flags.threads}", show_usage=False)
    batch = flags.batch_size or 1
    log.info("Speed-test of %s (batch %d, %d thread(s), %d iterations; dense twin: the "
             "reconstructed weights through Convolution / InnerProduct)", flags.model, batch,
             flags.threads, flags.iterations)
    result = speedtest(flags.model, flags.weights, iterations=flags.iterations,
                       threads=flags.threads, batch=batch)
    for row in result["rows"]:
        log.info("%10s\tdense: %s ms.\tQ: %s ms.\tspeed-up: %sx", row["layer"],
                 caffe_float(row["dense_ms"]), caffe_float(row["q_ms"]),
                 caffe_float(row["speedup"]))
    log.info("Average Forward pass: dense %s ms, Q %s ms, speed-up %sx",
             caffe_float(result["dense_ms"]), caffe_float(result["q_ms"]),
             caffe_float(result["speedup"]))
    print(format_table(result), flush=True)
    return 0
