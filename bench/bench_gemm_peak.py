"""Achieved GFLOP/s of AlexNet as a fraction of NumPy's float32 GEMM peak.

The peak is measured in the same run: the best of several large square
sgemms (2048^3 by default).  FLOPs count 2 x multiply-adds of every
Convolution, Deconvolution and InnerProduct layer (biases, pooling, LRN and
activations not counted), so a whole-net figure is a lower bound on what the
GEMMs themselves reach.  OpenCV DNN's figure on the same net and threads is
printed beside ours.  ``--layers`` adds a per-layer breakdown of our forward.

    python bench/bench_gemm_peak.py [--quick] [--threads N] [--layers] [--gemm-size N]
"""
import sys
import time

import common


def per_layer(net, data, repeat):
    """Our forward layer by layer: [(name, type, seconds, FLOPs or None)].

    The whole net runs ``repeat`` times with a timer around each layer; each
    layer's best is kept (timing a layer alone, over and over, flatters it:
    its weights and input stay in cache).
    """
    flops = {name: f for name, _, f in common.layer_flops(net)}
    best = [float("inf")] * len(net.layers)
    net.forward(**{net.inputs[0]: data})          # warm-up
    for _ in range(repeat):
        net.blobs[net.inputs[0]].data[...] = data
        for i in range(len(net.layers)):
            start = time.perf_counter()
            net.forward_range(i, i)
            best[i] = min(best[i], time.perf_counter() - start)
    return [(name, net.layers[i].type, best[i], flops.get(name))
            for i, name in enumerate(net.layer_names)]


def layer_table(layers, peak):
    total = sum(t for _, _, t, _ in layers)
    rows = []
    for name, kind, t, f in layers:
        rate = f / t / 1e9 if f else None
        rows.append([name, kind, f"{t * 1e3:.2f}", f"{100 * t / total:.1f}%",
                     f"{f / 1e9:.3f}" if f else "", f"{rate:.1f}" if f else "",
                     f"{rate / peak:.2f}" if f else ""])
    return common.table(["layer", "type", "ms", "share", "GFLOP", "GFLOP/s", "/peak"], rows)


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--gemm-size", type=int, default=None,
                   help="side of the square sgemm that measures the peak (default 2048)")
    p.add_argument("--layers", action="store_true", help="per-layer breakdown of our forward")
    args = p.parse_args(argv)
    common.configure_threads(args.threads)
    import numpy
    repeat = args.repeat or (2 if args.quick else 5)
    gemm_repeat = max(repeat, 3)
    n = args.gemm_size or (1024 if args.quick else 2048)
    print("== conv-heavy nets: achieved GFLOP/s vs NumPy sgemm peak ==")
    print("\n".join(common.environment_lines(args.threads)))
    background = common.BackgroundLoad()
    peaks = [common.sgemm_peak(n, gemm_repeat)[0]]
    measured, layers = [], None
    with common.temp_dir() as directory:
        weights = common.random_weights(common.ALEXNET, directory)
        for batch in (1,) if args.quick else (16, 1):
            shape = (batch, 3, 227, 227)
            net = common.load_net(common.ALEXNET, weights, shape)
            data = numpy.random.default_rng(1).uniform(0, 255, shape).astype(numpy.float32)
            cv_net = common.opencv_net(common.ALEXNET, weights)

            def ours(net=net, data=data):
                return net.forward(data=data)

            def theirs(cv_net=cv_net, data=data):
                cv_net.setInput(data)
                return cv_net.forward()
            times = common.best_times([ours, theirs], repeat)
            gflop = sum(f for _, _, f in common.layer_flops(net)) / 1e9
            measured.append((f"AlexNet batch {batch}", gflop, *times))
            print(f"  done: AlexNet batch {batch}", file=sys.stderr, flush=True)
            if args.layers and layers is None:
                layers = (batch, per_layer(net, data, repeat))
    peaks.append(common.sgemm_peak(n, gemm_repeat)[0])
    peak = max(peaks)   # the best seen, before or after the nets
    rows = [[name, f"{gflop:.2f}", f"{t_ours * 1e3:.1f}", f"{gflop / t_ours:.1f}",
             f"{gflop / t_ours / peak:.2f}", f"{t_cv * 1e3:.1f}", f"{gflop / t_cv:.1f}",
             f"{gflop / t_cv / peak:.2f}"] for name, gflop, t_ours, t_cv in measured]
    print(f"sgemm {n}x{n}x{n} float32, best of {gemm_repeat}, before / after the nets: "
          + " / ".join(f"{p:.1f}" for p in peaks) + f" GFLOP/s; peak = {peak:.1f} GFLOP/s")
    print(f"nets: best of {repeat} runs after one warm-up, ours and OpenCV interleaved")
    print(common.table(["net", "GFLOP", "ours ms", "ours GFLOP/s", "ours/peak", "OpenCV ms",
                        "OpenCV GFLOP/s", "OpenCV/peak"], rows))
    print(background.line())
    if layers:
        batch, per = layers
        print(f"\nour forward layer by layer, AlexNet batch {batch} (best of {repeat} passes):")
        print(layer_table(per, peak))
    return peak, measured


if __name__ == "__main__":
    main()
