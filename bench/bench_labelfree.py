"""The Label-free pipeline on ResNet-18 (224x224): time and peak memory of each
stage, and the re-normalisation against the paper's way, one TRAIN forward of
every calibration image as one batch, measured in the same run.

    python bench/bench_labelfree.py [--images 1000] [--batch 50] [--quick]

Random weights (N(0, 1/fan_in)) and synthetic calibration images
(``--calib synthetic``); each measurement runs in its own process, which
reports its own peak RSS.  The one-big-batch forward cannot be run at 1,000
images here (the paper's README: more than 12 GB); it is measured at
``--baseline-images`` (default 50 and 100) and extrapolated linearly to
``--images`` (RSS = fixed + per-image x N, from the two points).
"""
import json
import os
import subprocess
import sys
import time

import common

NET = common.FIXTURES / "labelfree" / "qmodel" / "resnet-18.prototxt"


def child_pipeline(model, weights, out, images, batch):
    from pycaffe_lite.compress import labelfree
    start = time.perf_counter()
    labelfree(model, weights, out, calib="synthetic", images=images, batch=batch or None,
              progress=False)
    with open(os.path.join(out, "state.json")) as f:
        stages = json.load(f)["stages"]
    return {"seconds": time.perf_counter() - start,
            "stages": {k: {"seconds": v["seconds"], "peak_rss_mb": v["peak_rss_mb"],
                           "info": {"passes": v["info"].get("passes"),
                                    "chunk": v["info"].get("chunk")}}
                       for k, v in stages.items()}}


def child_big_batch(out, images):
    """The paper's renorm.py: the BN_update net, one TRAIN forward of all images."""
    import numpy

    from pycaffe_lite.compress import calibration, netparams
    from pycaffe_lite.io import files
    from pycaffe_lite.layer import TEST
    from pycaffe_lite.net import Net
    data = calibration.Images(os.path.join(out, "calibration.npy"))
    param = netparams.deploy_param(files.read_net(os.path.join(out, "weights.prototxt")),
                                   (images,) + tuple(data.shape[1:]))
    for layer in param.layer:
        if layer.type == "BatchNorm":
            layer.batch_norm_param.use_global_stats = False
            layer.batch_norm_param.moving_average_fraction = 0
    net = Net(param, phase=TEST, weights=os.path.join(out, "weights.caffemodel"))
    net.blobs["data"].data[...] = numpy.concatenate(list(data.chunks(50, images)))
    start = time.perf_counter()
    net.forward_range()
    return {"seconds": time.perf_counter() - start}


def child(args):
    import resource
    kind = args[0]
    if kind == "pipeline":
        result = child_pipeline(args[1], args[2], args[3], int(args[4]), int(args[5]))
    else:
        result = child_big_batch(args[1], int(args[2]))
    result["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def run_child(*args):
    proc = subprocess.run([sys.executable, __file__, "--child", *map(str, args)],
                          capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    sys.exit(f"child {args[0]} failed:\n{proc.stderr[-3000:]}")


def main():
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--batch", type=int, default=0,
                   help="images per forward (--batch_size; default 0: the pipeline's choice)")
    p.add_argument("--baseline-images", type=int, nargs=2, default=(50, 100))
    args = p.parse_args()
    if args.quick:
        args.images, args.baseline_images = 64, (16, 32)
    common.configure_threads(args.threads)
    os.environ["BENCH_THREADS"] = str(args.threads)
    load = common.BackgroundLoad()
    print("\n".join(common.environment_lines(args.threads)))
    with common.temp_dir() as tmp:
        weights = common.random_weights(NET, tmp, synthetic=True)
        out = os.path.join(tmp, "out")
        ours = run_child("pipeline", NET, weights, out, args.images, args.batch)
        big = [run_child("big", out, n) for n in args.baseline_images]
    (n1, n2), (b1, b2) = args.baseline_images, big
    per_image = (b2["ru_maxrss_mb"] - b1["ru_maxrss_mb"]) / (n2 - n1)
    fixed = b1["ru_maxrss_mb"] - per_image * n1
    big_rss = fixed + per_image * args.images
    big_time = b2["seconds"] / n2 * args.images
    renorm = ours["stages"]["renorm"]
    print(f"\nResNet-18, 224x224, {args.images} calibration images, chunks of "
          f"{args.batch or 'the pipeline default'}")
    print(f"{'stage':<14}{'time (s)':>10}{'peak RSS (MB)':>16}")
    for name, s in ours["stages"].items():
        print(f"{name:<14}{s['seconds']:>10.1f}{s['peak_rss_mb']:>16.0f}")
    peak = max(s["peak_rss_mb"] for s in ours["stages"].values())
    print(f"{'whole':<14}{ours['seconds']:>10.1f}{peak:>16.0f}")
    print("\nre-normalisation, one TRAIN batch of N images (the paper's renorm.py): "
          + ", ".join(f"N={n}: {b['seconds']:.1f} s, {b['ru_maxrss_mb']:.0f} MB"
                      for n, b in zip(args.baseline_images, big)))
    print(f"  extrapolated to N={args.images}: {big_time:.0f} s, {big_rss:.0f} MB "
          f"({fixed:.0f} MB + {per_image:.1f} MB per image)")
    print(f"ours, streamed ({renorm['info']['passes']} passes, chunks of "
          f"{renorm['info']['chunk']}): {renorm['seconds']:.1f} s, "
          f"{renorm['peak_rss_mb']:.0f} MB")
    print(f"ratio ours / one batch: time {renorm['seconds'] / big_time:.2f}, "
          f"peak RSS {renorm['peak_rss_mb'] / big_rss:.3f}")
    print(load.line())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        common.configure_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
        child(sys.argv[2:])
    else:
        main()
