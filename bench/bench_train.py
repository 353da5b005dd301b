"""Time per training iteration (forward + backward + update) vs NumPy's sgemm peak.

Each net is BVLC's train_val prototxt with its Data layers swapped for
synthetic data (``pycaffe_lite.io.synthetic.synthesize_data_layers``), trained
by the real SGDSolver with BVLC's solver settings (momentum 0.9, weight decay
0.0005, no test nets, no display, no snapshots).  The synthetic image blob is
filled with Gaussian noise once, at setup (a constant filler, then overwritten),
so that an iteration pays for no data generation: ``solver.step(1)`` =
clear the param diffs + forward + backward + the update of every param.

FLOPs counted exactly, per Convolution / InnerProduct layer, 2 x multiply-adds
(biases, pooling, LRN, activations, loss and the update not counted):

    forward           F
    backward weights  F   (when the layer's weights get a gradient)
    backward data     F   (when its bottom needs a gradient: not conv1, whose
                           bottom is the data)

so a training iteration is 3F less conv1's F (AlexNet: 4.136 GFLOP per image,
2.855 x its 1.449 forward; the "3 x forward" convention, also printed, counts
5% more).  The peak: the best of
several 2048^3 float32 sgemms before and after the nets, as in
bench_gemm_peak.py.  ``--layers`` adds our forward, backward and update time
layer by layer (each layer's best over the passes).

    python bench/bench_train.py [--quick] [--threads N] [--repeat R] [--layers]
                                [--batch-alexnet 16] [--batch-lenet 64]
"""
import statistics
import sys
import time

import common

LENET = common.FIXTURES / "bvlc" / "examples" / "mnist" / "lenet_train_test.prototxt"
ALEXNET_TRAIN = common.FIXTURES / "bvlc" / "models" / "bvlc_alexnet" / "train_val.prototxt"


def make_solver(prototxt, batch, seed=1):
    """An SGDSolver on ``prototxt``'s TRAIN net with synthetic data of ``batch``."""
    import numpy

    from pycaffe_lite import solvers
    from pycaffe_lite.io import files
    from pycaffe_lite.io.synthetic import synthesize_data_layers
    from pycaffe_lite.proto import caffe_pb2

    net_param = files.read_net(common.need(prototxt))
    # MNIST's Data layers say nothing of the sample size; ImageNet's crop_size does.
    sample = (1, 28, 28) if net_param.name == "LeNet" else (3, 227, 227)
    net_param = synthesize_data_layers(net_param, sample_shape=sample, batch=batch)
    for layer in net_param.layer:
        if layer.type == "DummyData":        # fill once (constant), noise set below
            layer.dummy_data_param.data_filler[0].type = "constant"
    param = caffe_pb2.SolverParameter(
        train_net_param=net_param, base_lr=0.01, momentum=0.9, weight_decay=0.0005,
        lr_policy="fixed", max_iter=1 << 30, display=0, snapshot=0, random_seed=seed,
        solver_mode=caffe_pb2.SolverParameter.CPU)
    solver = solvers.SGDSolver(param, xp=numpy, progress=False)
    data = solver.net.blobs["data"]
    data.data[...] = numpy.random.default_rng(seed).standard_normal(data.shape,
                                                                     numpy.float32)
    # Labels (constant 0 from the synthesizer) spread over the classes instead.
    label = solver.net.blobs["label"]
    classes = solver.net.blobs[solver.net.records[-1].bottoms[0]].shape[1]
    label.data[...] = numpy.arange(label.count).reshape(label.shape) % classes
    return solver


def training_flops(net):
    """[(layer name, type, forward FLOPs, backward FLOPs)] for Conv / IP layers."""
    out = []
    records = {record.name: record for record in net.records}
    for name, kind, flops in common.layer_flops(net):
        record = records[name]
        layer = record.layer
        backward = 0
        if record.need_backward:
            if layer.param_propagate_down and layer.param_propagate_down[0]:
                backward += flops                               # weight gradient
            if record.bottom_need_backward and record.bottom_need_backward[0]:
                backward += flops                               # bottom gradient
        out.append((name, kind, flops, backward))
    return out


def per_layer(solver, repeat):
    """Best forward, backward time of each layer and of the update, over ``repeat``
    iterations run layer by layer (the solver's step, timed piecewise)."""
    net = solver.net
    n = len(net.layers)
    fwd, bwd = [float("inf")] * n, [float("inf")] * n
    update = float("inf")
    solver.step(1)                                  # warm-up
    for _ in range(repeat):
        net.clear_param_diffs()
        for i in range(n):
            start = time.perf_counter()
            net.forward_range(i, i)
            fwd[i] = min(fwd[i], time.perf_counter() - start)
        for i in reversed(range(n)):
            start = time.perf_counter()
            net.backward_range(i, i)
            bwd[i] = min(bwd[i], time.perf_counter() - start)
        start = time.perf_counter()
        solver.apply_update()
        solver.iter += 1
        update = min(update, time.perf_counter() - start)
    return fwd, bwd, update


def layer_table(solver, fwd, bwd, update, peak):
    net = solver.net
    flops = {name: (f, b) for name, _, f, b in training_flops(net)}
    total = sum(fwd) + sum(bwd) + update
    rows = []

    def rate(f, t):
        return (f"{f / t / 1e9:.1f}", f"{f / t / 1e9 / peak:.2f}") if f else ("", "")

    for i, name in enumerate(net.layer_names):
        f, b = flops.get(name, (0, 0))
        t = fwd[i] + bwd[i]
        if t < 5e-5 and not f:
            continue
        rows.append([name, net.layers[i].type, f"{fwd[i] * 1e3:.2f}", *rate(f, fwd[i]),
                     f"{bwd[i] * 1e3:.2f}", *rate(b, bwd[i]), f"{100 * t / total:.1f}%"])
    rows.append(["(update)", "SGD", "", "", "", f"{update * 1e3:.2f}", "", "",
                 f"{100 * update / total:.1f}%"])
    rows.append(["total", "", f"{sum(fwd) * 1e3:.1f}", "", "", f"{(sum(bwd) + update) * 1e3:.1f}",
                 "", "", "100%"])
    return common.table(["layer", "type", "fwd ms", "GFLOP/s", "/peak", "bwd ms", "GFLOP/s",
                         "/peak", "share"], rows)


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--gemm-size", type=int, default=None,
                   help="side of the square sgemm that measures the peak (default 2048)")
    p.add_argument("--layers", action="store_true",
                   help="per-layer forward / backward / update breakdown")
    p.add_argument("--batch-alexnet", type=int, default=None, help="default 16 (--quick: 4)")
    p.add_argument("--batch-lenet", type=int, default=64)
    args = p.parse_args(argv)
    common.configure_threads(args.threads)
    import logging
    logging.getLogger("pycaffe_lite").setLevel(logging.WARNING)
    repeat = args.repeat or (2 if args.quick else 5)
    gemm_repeat = max(repeat, 3)
    n = args.gemm_size or (1024 if args.quick else 2048)
    batch_alexnet = args.batch_alexnet or (4 if args.quick else 16)
    print("== training iteration (forward + backward + SGD update) vs NumPy sgemm peak ==")
    print("\n".join(common.environment_lines(args.threads)))
    background = common.BackgroundLoad()
    peaks = [common.sgemm_peak(n, gemm_repeat)[0]]
    cases = [("LeNet", LENET, args.batch_lenet), ("AlexNet", ALEXNET_TRAIN, batch_alexnet)]
    measured, breakdowns = [], []
    for name, prototxt, batch in cases:
        solver = make_solver(prototxt, batch)
        times = []
        solver.step(1)                               # warm-up (allocations, history)
        for _ in range(repeat):
            start = time.perf_counter()
            solver.step(1)
            times.append(time.perf_counter() - start)
        per = training_flops(solver.net)
        fwd_flops = sum(f for _, _, f, _ in per)
        train_flops = sum(f + b for _, _, f, b in per)
        measured.append((f"{name} batch {batch}", fwd_flops / 1e9, train_flops / 1e9,
                         min(times), statistics.median(times)))
        print(f"  done: {name} batch {batch}", file=sys.stderr, flush=True)
        if args.layers:
            breakdowns.append((f"{name} batch {batch}", solver, per_layer(solver, repeat)))
        else:
            solver.close()
    peaks.append(common.sgemm_peak(n, gemm_repeat)[0])
    peak = max(peaks)
    print(f"sgemm {n}x{n}x{n} float32, best of {gemm_repeat}, before / after the nets: "
          + " / ".join(f"{p:.1f}" for p in peaks) + f" GFLOP/s; peak = {peak:.1f} GFLOP/s")
    print(f"iterations: solver.step(1), best (and median) of {repeat} after one warm-up; "
          "training GFLOP = forward + backward-weights + backward-data of conv/IP, exact")
    rows = []
    for label, fwd_g, train_g, best, median in measured:
        rows.append([label, f"{fwd_g:.3f}", f"{train_g:.3f}", f"{best * 1e3:.1f}",
                     f"{median * 1e3:.1f}", f"{train_g / best:.1f}",
                     f"{train_g / best / peak:.2f}", f"{3 * fwd_g / best / peak:.2f}"])
    print(common.table(["net", "fwd GFLOP", "train GFLOP", "iter ms (best)", "median ms",
                        "GFLOP/s", "/peak", "/peak (3x fwd)"], rows))
    print(background.line())
    for label, solver, (fwd, bwd, update) in breakdowns:
        print(f"\n{label}, layer by layer (best of {repeat} iterations run layer by layer; "
              "backward GFLOP/s counts weight + data gradients):")
        print(layer_table(solver, fwd, bwd, update, peak))
        solver.close()
    return peak, measured


if __name__ == "__main__":
    main()
