"""HWGQ AlexNet: a training iteration and the deploy forward, against float AlexNet.

The HWGQ paper's AlexNet (``fixtures/hwgq/imagenet/alex-hwgq-3ne-clip-poly-320k``:
BatchNorm, 2-bit HWGQ ``Quant`` activations, ``BinaryConvolution`` /
``BinaryInnerProduct`` weights) is trained by the real SGDSolver on synthetic
data (as ``bench_train.py`` does), and its ``deploy.prototxt`` and
``deploy_bw.prototxt`` (binary layers replaced by standard ones holding
sign(W) * alpha) run forward.  Baselines measured in the same run: BVLC
AlexNet at the same batch (training step and deploy forward) and NumPy's
sgemm peak.

Printed: iteration times and their ratio to float AlexNet; GFLOP/s over the
peak; and the share of the quantisation work in the HWGQ iteration: the
``Quant`` layers' forward + backward, and the binarisation of the weights
(sign and per-filter alpha, recomputed at every forward of a Binary layer),
measured layer by layer.  Target: quantisation < 10% of the iteration.

    python bench/bench_hwgq.py [--quick] [--threads N] [--repeat R] [--batch 16]
"""
import statistics
import sys
import time
from pathlib import Path

import common
from bench_train import ALEXNET_TRAIN, make_solver, per_layer, training_flops

HWGQ = common.FIXTURES / "hwgq" / "imagenet" / "alex-hwgq-3ne-clip-poly-320k"
QUANT_TYPES = ("Quant", "ActQuantize", "BinActiv")
BINARY_TYPES = ("BinaryConvolution", "BinaryInnerProduct")


def step_times(solver, repeat):
    solver.step(1)                                   # warm-up (allocations, history)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        solver.step(1)
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def binarisation_time(net, repeat):
    """Best total time of ``effective_weight()`` (sign * alpha) over the Binary layers."""
    layers = [layer for layer in net.layers if layer.type in BINARY_TYPES]
    return common.best_time(lambda: [layer.effective_weight() for layer in layers], repeat)


def deploy_net(prototxt, batch, directory):
    """``prototxt`` at ``batch`` with random weights (saved, then loaded as a user would)."""
    import numpy

    from pycaffe_lite.io import files
    from pycaffe_lite.layer import TEST
    from pycaffe_lite.net import Net
    param = files.read_net(str(common.need(prototxt)))
    for layer in param.layer:
        if layer.type == "Input":
            for shape in layer.input_param.shape:
                shape.dim[0] = batch
    net = Net(param, phase=TEST)
    rng = numpy.random.default_rng(0)
    for layer in net.layers:
        for blob in layer.blobs:
            blob.data[...] = rng.standard_normal(blob.shape).astype(numpy.float32) * 0.01
        if layer.type == "BatchNorm":                # trained statistics, not zeros
            layer.blobs[2].data[...] = 1
            layer.blobs[1].data[...] = 1
    weights = Path(directory) / (prototxt.parent.name + prototxt.stem + ".caffemodel")
    net.save(str(weights))
    loaded = Net(param, phase=TEST, weights=str(weights))
    data = loaded.blobs[loaded.input_names[0]]
    data.data[...] = rng.standard_normal(data.shape).astype(numpy.float32)
    return loaded


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=None, help="default 16 (--quick: 4)")
    args = p.parse_args(argv)
    common.configure_threads(args.threads)
    import logging
    logging.getLogger("pycaffe_lite").setLevel(logging.WARNING)
    repeat = args.repeat or (2 if args.quick else 5)
    batch = args.batch or (4 if args.quick else 16)
    print("== HWGQ AlexNet: training iteration and deploy forward vs float AlexNet ==")
    print("\n".join(common.environment_lines(args.threads)))
    background = common.BackgroundLoad()
    peaks = [common.sgemm_peak(1024 if args.quick else 2048, max(repeat, 3))[0]]

    rows, breakdown = [], None
    for label, prototxt in (("AlexNet (float)", ALEXNET_TRAIN),
                            ("AlexNet-HWGQ", HWGQ / "train_val.prototxt")):
        solver = make_solver(common.need(prototxt), batch)
        best, median = step_times(solver, repeat)
        flops = sum(f + b for _, _, f, b in training_flops(solver.net))
        rows.append([label, f"{flops / 1e9:.2f}", best, median])
        if label == "AlexNet-HWGQ":
            fwd, bwd, update = per_layer(solver, repeat)
            binarise = binarisation_time(solver.net, repeat)
            breakdown = (solver.net, fwd, bwd, update, binarise)
        else:
            solver.close()
        print(f"  done: {label} training", file=sys.stderr, flush=True)

    deploys = []
    with common.temp_dir() as directory:
        for label, prototxt in (("AlexNet (float) deploy", common.ALEXNET),
                                ("AlexNet-HWGQ deploy", HWGQ / "deploy.prototxt"),
                                ("AlexNet-HWGQ deploy_bw", HWGQ / "deploy_bw.prototxt")):
            net = deploy_net(prototxt, batch, directory)
            best = common.best_time(net.forward_range, repeat)
            gflop = sum(f for _, _, f in common.layer_flops(net)) / 1e9
            deploys.append([label, gflop, best])
            print(f"  done: {label}", file=sys.stderr, flush=True)
    peaks.append(common.sgemm_peak(1024 if args.quick else 2048, max(repeat, 3))[0])
    peak = max(peaks)

    print(f"sgemm peak {peak:.1f} GFLOP/s (best before / after: "
          + " / ".join(f"{v:.1f}" for v in peaks) + ")")
    base = rows[0][2]
    print(f"\ntraining step, batch {batch}: solver.step(1), best (median) of {repeat}")
    print(common.table(
        ["net", "train GFLOP", "ms", "median ms", "/float AlexNet", "GFLOP/s", "/peak"],
        [[label, g, f"{best * 1e3:.1f}", f"{median * 1e3:.1f}", f"{best / base:.2f}",
          f"{float(g) / best:.1f}", f"{float(g) / best / peak:.2f}"]
         for label, g, best, median in rows]))
    base = deploys[0][2]
    print(f"\ndeploy forward, batch {batch}: best of {repeat}")
    print(common.table(
        ["net", "fwd GFLOP", "ms", "/float AlexNet", "/peak"],
        [[label, f"{g:.2f}", f"{best * 1e3:.1f}", f"{best / base:.2f}",
          f"{g / best / peak:.2f}"] for label, g, best in deploys]))

    net, fwd, bwd, update, binarise = breakdown
    total = sum(fwd) + sum(bwd) + update
    by_type = {}
    for i, layer in enumerate(net.layers):
        by_type[layer.type] = by_type.get(layer.type, 0.0) + fwd[i] + bwd[i]
    quant = sum(t for kind, t in by_type.items() if kind in QUANT_TYPES)
    print(f"\nAlexNet-HWGQ iteration layer by layer: {total * 1e3:.1f} ms (best of {repeat} "
          "per layer, update included)")
    print(common.table(
        ["part", "ms", "share"],
        [[kind, f"{t * 1e3:.1f}", f"{100 * t / total:.1f}%"]
         for kind, t in sorted(by_type.items(), key=lambda kv: -kv[1]) if t > 1e-4]
        + [["(update)", f"{update * 1e3:.1f}", f"{100 * update / total:.1f}%"]]))
    share = (quant + binarise) / total
    print(f"quantisation: Quant layers {quant * 1e3:.1f} ms + weight binarisation (sign, alpha) "
          f"{binarise * 1e3:.1f} ms = {100 * share:.1f}% of the iteration (target < 10%)")
    print(background.line())
    return share


if __name__ == "__main__":
    main()
