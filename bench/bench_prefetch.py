"""Does a training iteration wait on LMDB reads and transforms?  Data-layer prefetch.

Builds a real LMDB in a temporary directory: ``--records`` (2,000) ImageNet-size
256 x 256 BGR images cut from the photos in ``fixtures/data`` (random crops
of random scale, flips, brightness), stored as JPEG-encoded Datums
(``--encoding jpg``, what ``convert_imageset --encoded`` writes) or raw
uint8 Datums (``--encoding raw``, what BVLC's create_imagenet.sh writes).  A
training net (BVLC AlexNet train_val at batch 32, or ``--net small``: a cheap
conv + pool + fc net on the same crops) reads it through a ``Data`` layer with
crop_size 227, mirror and mean_value 104, 117, 123, trained by the real
SGDSolver, in three modes (three solvers, built up front):

  synthetic   the Data layer swapped for synthetic data set once (no data cost):
              the compute-only iteration
  prefetch    the Data layer as shipped (a background thread, 4 batches ahead)
  sync        ``data_param.prefetch: 0`` (loads each batch inside forward)

``--rounds`` rounds (2) run the modes in turn, each for ``--warmup`` untimed
(2; one more in the first round) and ``--iters`` timed ``solver.step(1)``
calls, so that slow drifts of the machine reach all three alike (a mode's
iteration time varies by ~10% from one block to the next at 2 threads).
While one mode runs, the others' prefetch threads sit blocked on a full queue.
The data layer's own forward (the wait for the prefetched batch, or the whole
load with ``prefetch: 0``, plus the copy into the top) is timed inside those
steps.  Printed: mean iteration time, mean data-layer time, the fraction of
the iteration spent in the data layer (waiting for data), this process's CPU
time per iteration (the prefetch thread's work included), and ratios:
prefetch / synthetic (1.0 = training never waits and the loader steals no
compute), sync / synthetic, prefetch data time / sync data time.  Also the
loader alone (one batch read + transformed on this thread), for the margin: a
loader slower than an iteration cannot be hidden by any prefetch.

The LMDB sits in the page cache after it is written, so "reads" are memory
reads plus Datum parsing (and JPEG decoding), as on a warm training machine.

On 2 cores with 2 BLAS threads, OpenBLAS's idle worker spins (for
OPENBLAS_THREAD_TIMEOUT, default 2^28 cycles) between GEMMs, on the core the
prefetch thread needs; ``OPENBLAS_THREAD_TIMEOUT=4`` in the environment makes
it sleep at once (see README.md).

    python bench/bench_prefetch.py [--quick] [--threads N] [--net alexnet|small]
        [--encoding jpg|raw] [--records 2000] [--batch 32] [--rounds 2]
        [--iters 5] [--warmup 2]
"""
import os
import statistics
import sys
import time

import common

ALEXNET_TRAIN = common.FIXTURES / "bvlc" / "models" / "bvlc_alexnet" / "train_val.prototxt"
PHOTOS = common.FIXTURES / "data"
MEAN_VALUES = (104, 117, 123)
SMALL_NET = """
name: "Small"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 16 kernel_size: 11 stride: 8
    weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc"
  inner_product_param { num_output: 1000 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


# --- the database ---------------------------------------------------------------------------

def photos():
    import cv2
    images = []
    for name in sorted(os.listdir(PHOTOS)):
        if name.lower().endswith((".jpg", ".jpeg", ".png")):
            img = cv2.imread(str(PHOTOS / name), cv2.IMREAD_COLOR)
            if img is not None:
                images.append(img)
    if not images:
        sys.exit(f"no photos (*.jpg, *.png) in {PHOTOS}")
    return images


def build_lmdb(path, records, encoding, seed=0):
    """``records`` 256 x 256 Datums cut from the photos; returns the mean bytes per record."""
    import cv2
    import numpy

    from pycaffe_lite.io.caffe_io import cvmat_to_datum
    from pycaffe_lite.io.db import create_db
    from pycaffe_lite.proto import caffe_pb2
    rng = numpy.random.default_rng(seed)
    sources = photos()
    total = 0
    with create_db(path, "lmdb") as db:
        for i in range(records):
            src = sources[i % len(sources)]
            h, w = src.shape[:2]
            side = int(min(h, w) * rng.uniform(0.3, 1.0))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            img = cv2.resize(src[y:y + side, x:x + side], (256, 256),
                             interpolation=cv2.INTER_AREA)
            if rng.random() < 0.5:
                img = img[:, ::-1]
            img = numpy.clip(img * rng.uniform(0.7, 1.3), 0, 255).astype(numpy.uint8)
            label = int(rng.integers(1000))
            if encoding == "raw":
                datum = cvmat_to_datum(img)
                datum.label = label
            else:
                _, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
                datum = caffe_pb2.Datum(data=buf.tobytes(), label=label, encoded=True)
            value = datum.SerializeToString()
            total += len(value)
            db.put(f"{i:08d}", value)
    return total / records


# --- the nets ----------------------------------------------------------------------------------

def net_param(kind, source, batch, prefetch):
    """The TRAIN net: ``kind``'s Data layer reading ``source`` (or None: synthetic)."""
    from google.protobuf import text_format

    from pycaffe_lite.io import files
    from pycaffe_lite.io.synthetic import synthesize_data_layers
    from pycaffe_lite.proto import caffe_pb2
    if kind == "alexnet":
        param = files.read_net(common.need(ALEXNET_TRAIN))
    else:
        param = text_format.Parse(SMALL_NET, caffe_pb2.NetParameter())
    # Keep the TRAIN Data layer only (the TEST one would be filtered out anyway).
    keep = [layer for layer in param.layer
            if not (layer.type == "Data" and any(r.phase == caffe_pb2.TEST
                                                 for r in layer.include))]
    del param.layer[:]
    param.layer.extend(keep)
    data = param.layer[0]
    data.ClearField("transform_param")
    t = data.transform_param
    t.crop_size, t.mirror = 227, True
    t.mean_value.extend(MEAN_VALUES)
    data.data_param.source = str(source)
    data.data_param.backend = caffe_pb2.DataParameter.LMDB
    data.data_param.batch_size = batch
    if prefetch is not None:
        data.data_param.prefetch = prefetch
    if source is None:
        param = synthesize_data_layers(param, sample_shape=(3, 227, 227), batch=batch)
        for layer in param.layer:
            if layer.type == "DummyData":
                layer.dummy_data_param.data_filler[0].type = "constant"  # set once below
    return param


def make_solver(param, seed=1):
    """SGD with BVLC AlexNet's settings (the small net: a rate that keeps it finite)."""
    import numpy

    from pycaffe_lite import solvers
    from pycaffe_lite.proto import caffe_pb2
    rate = 0.01 if param.name == "AlexNet" else 1e-6
    sp = caffe_pb2.SolverParameter(
        train_net_param=param, base_lr=rate, momentum=0.9, weight_decay=0.0005,
        lr_policy="fixed", max_iter=1 << 30, display=0, snapshot=0, random_seed=seed,
        solver_mode=caffe_pb2.SolverParameter.CPU)
    solver = solvers.SGDSolver(sp, xp=numpy, progress=False)
    if solver.net.layers[0].type == "DummyData":
        data = solver.net.blobs["data"]
        rng = numpy.random.default_rng(seed)
        data.data[...] = rng.uniform(-100, 130, data.shape).astype(numpy.float32)
        label = solver.net.blobs["label"]
        label.data[...] = rng.integers(0, 1000, label.shape)
    return solver


class Timed:
    """Wraps a layer's ``run_forward`` and keeps the time of each call."""

    def __init__(self, layer):
        self.times = []
        self._run = layer.run_forward
        layer.run_forward = self

    def __call__(self, bottom, top):
        start = time.perf_counter()
        try:
            return self._run(bottom, top)
        finally:
            self.times.append(time.perf_counter() - start)


class Mode:
    """One way of feeding the net: its solver, and what its timed steps measured."""

    def __init__(self, name, param):
        self.name = name
        self.solver = make_solver(param)
        self.timer = Timed(self.solver.net.layers[0])
        self.times, self.data_times, self.cpu = [], [], 0.0

    def run(self, warmup, iters):
        """``warmup`` untimed then ``iters`` timed iterations; CPU time is this
        process's (the prefetch thread included; the other modes' threads are idle)."""
        for _ in range(warmup):
            self.solver.step(1)
        del self.timer.times[:]
        cpu = sum(os.times()[:2])
        for _ in range(iters):
            start = time.perf_counter()
            self.solver.step(1)
            self.times.append(time.perf_counter() - start)
        self.cpu += sum(os.times()[:2]) - cpu
        self.data_times += self.timer.times
        del self.timer.times[:]

    def close(self):
        self.solver.close()


def loader_alone(source, batch, repeat):
    """Best time of one batch loaded and transformed on this thread (no net)."""
    from pycaffe_lite.proto import caffe_pb2
    from pycaffe_lite.pycaffe import Net
    param = net_param("small", source, batch, 0)
    del param.layer[1:]
    param.layer[0].ClearField("include")
    net = Net(param, caffe_pb2.TRAIN)
    try:
        return common.best_time(lambda: net.forward_range(0, 0), repeat)
    finally:
        net.close()


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--net", choices=("alexnet", "small"), default=None,
                   help="AlexNet (default) or a cheap net (default with --quick)")
    p.add_argument("--encoding", choices=("jpg", "raw"), default="jpg")
    p.add_argument("--records", type=int, default=None, help="default 2000 (--quick: 256)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds of the three modes, one after the other (default 2, "
                        "--quick: 1)")
    p.add_argument("--iters", type=int, default=None,
                   help="timed iterations per mode and round (default: AlexNet 5, the "
                        "small net 15, --quick 5)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed iterations per mode and round (one more the first time)")
    args = p.parse_args(argv)
    common.configure_threads(args.threads)
    import logging
    logging.getLogger("pycaffe_lite").setLevel(logging.WARNING)
    kind = args.net or ("small" if args.quick else "alexnet")
    records = args.records or (256 if args.quick else 2000)
    rounds = args.rounds or (1 if args.quick else 2)
    iters = args.iters or args.repeat or (5 if args.quick or kind == "alexnet" else 15)
    print("== data-layer prefetch: does a training iteration wait for data? ==")
    print("\n".join(common.environment_lines(args.threads)))
    background = common.BackgroundLoad()
    with common.temp_dir() as directory:
        source = os.path.join(directory, f"train_{args.encoding}_lmdb")
        start = time.perf_counter()
        size = build_lmdb(source, records, args.encoding)
        print(f"LMDB: {records} records of 256x256x3, {args.encoding}, "
              f"{size / 1024:.1f} KiB each, written in {time.perf_counter() - start:.1f} s")
        load = loader_alone(source, args.batch, max(3, iters // 2))
        specs = [("synthetic", None, None), ("prefetch", source, None), ("sync", source, 0)]
        modes = [Mode(name, net_param(kind, src, args.batch, prefetch))
                 for name, src, prefetch in specs]
        try:
            for r in range(rounds):
                for mode in modes:
                    mode.run(args.warmup + (1 if r == 0 else 0), iters)
                print(f"  done: round {r + 1} of {rounds}", file=sys.stderr, flush=True)
        finally:
            for mode in modes:
                mode.close()
    net_name = {"alexnet": "AlexNet", "small": "small net (conv 11/8 + pool + fc)"}[kind]
    print(f"{net_name}, batch {args.batch}, Data layer crop 227 + mirror + mean_value; "
          f"{rounds} round{'s' if rounds > 1 else ''} of (synthetic, prefetch, sync), each {args.warmup} untimed + "
          f"{iters} timed iterations; means of the {rounds * iters} timed ones")
    print(f"loader alone (read + parse + {'decode + ' if args.encoding == 'jpg' else ''}"
          f"transform, one thread): {load * 1e3:.1f} ms per batch of {args.batch}")
    mean = {m.name: statistics.fmean(m.times) for m in modes}
    data_mean = {m.name: statistics.fmean(m.data_times) for m in modes}
    rows = []
    for m in modes:
        rows.append([m.name, f"{mean[m.name] * 1e3:.1f}",
                     f"{statistics.median(m.times) * 1e3:.1f}",
                     f"{data_mean[m.name] * 1e3:.2f}", f"{max(m.data_times) * 1e3:.2f}",
                     f"{100 * data_mean[m.name] / mean[m.name]:.1f}%",
                     f"{mean[m.name] / mean['synthetic']:.3f}",
                     f"{m.cpu / len(m.times) * 1e3:.0f}"])
    print(common.table(["mode", "iter ms", "median", "data layer ms", "max", "waiting",
                        "/synthetic", "CPU ms/iter"], rows))
    print(f"ratios: prefetch / synthetic iteration {mean['prefetch'] / mean['synthetic']:.3f}, "
          f"sync / synthetic {mean['sync'] / mean['synthetic']:.3f}, "
          f"prefetch / sync iteration {mean['prefetch'] / mean['sync']:.3f}; "
          f"data layer prefetch / sync {data_mean['prefetch'] / data_mean['sync']:.4f}")
    print(background.line())
    return {m.name: (m.times, m.data_times, m.cpu) for m in modes}


if __name__ == "__main__":
    main()
