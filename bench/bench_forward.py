"""Forward time of real nets, ours against OpenCV DNN in the same run.

Cases: LeNet (batch 64, trained weights), RetinaFace MobileNet-0.25 (its
prototxt's input, 1x3x640x640, trained weights), BVLC AlexNet (batch 1 and 16,
random weights written to a temporary caffemodel that both load), yoloface-50k
(1x3x56x56, trained weights).  The BatchNorm nets (RetinaFace, yoloface) get a
second row "(BN folded)": ours after ``pycaffe_lite.fuse.fold_batchnorm``
(OpenCV fuses BatchNorm/Scale itself in both rows); ``--no-fold-bn`` leaves
those rows out.  Both sides
get the same thread count; the ratio is ours / OpenCV (lower is better, 1.0
is parity).  Each case also checks that the two outputs agree.

    python bench/bench_forward.py [--quick] [--threads N] [--repeat R] [--no-fold-bn]
"""
import sys

import common


def cases(quick, directory, fold_bn=True):
    lenet = common.MODELS / "lenet_mnist"
    retina = common.MODELS / "retinaface_mnet25_bn"
    yolo = common.MODELS / "yoloface50k_landmark106_bn"
    out = [("LeNet", lenet / "lenet.prototxt", lenet / "lenet_iter_10000.caffemodel",
            (64, 1, 28, 28))]
    bn_nets = [("RetinaFace mnet0.25", retina / "mnet.prototxt", retina / "mnet.caffemodel",
                (1, 3, 320, 320) if quick else (1, 3, 640, 640)),
               ("yoloface-50k", yolo / "yoloface-50k.prototxt", yolo / "yoloface-50k.caffemodel",
                (1, 3, 56, 56))]
    for case in bn_nets:
        out.append(case)
        if fold_bn:
            out.append((case[0] + " (BN folded)",) + case[1:])
    alex_weights = common.random_weights(common.ALEXNET, directory)
    for batch in (1,) if quick else (1, 16):
        out.append(("AlexNet (random weights)", common.ALEXNET, alex_weights,
                    (batch, 3, 227, 227)))
    return out


def run_case(name, prototxt, weights, shape, repeat):
    import numpy
    net = common.load_net(prototxt, weights, shape)
    cv_outputs = common.opencv_names(net, net.outputs)     # names before folding
    if "(BN folded)" in name:
        from pycaffe_lite.fuse import fold_batchnorm
        fold_batchnorm(net)
    data = numpy.random.default_rng(1).uniform(0, 1, shape).astype(numpy.float32)
    if "LeNet" not in name:
        data *= 255     # image-like range for the image nets
    input_name = net.inputs[0]
    cv_net = common.opencv_net(prototxt, weights)
    outputs = net.outputs

    def ours():
        return net.forward(**{input_name: data})

    def theirs():
        cv_net.setInput(data, input_name)
        return cv_net.forward(cv_outputs)

    t_ours, t_cv = common.best_times([ours, theirs], repeat)
    mine, ref = ours(), theirs()
    err = max(common.relative_error(mine[o], r) for o, r in zip(outputs, ref))
    gflop = sum(f for _, _, f in common.layer_flops(net)) / 1e9
    return [name, "x".join(map(str, shape)), f"{gflop:.3f}", f"{t_ours * 1e3:.1f}",
            f"{t_cv * 1e3:.1f}", f"{t_ours / t_cv:.2f}", f"{err:.1e}"]


def main(argv=None):
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--no-fold-bn", dest="fold_bn", action="store_false",
                        help="leave out the rows of BatchNorm nets with BN folded")
    args = parser.parse_args(argv)
    common.configure_threads(args.threads)
    repeat = args.repeat or (2 if args.quick else 5)
    print("== forward time: ours vs OpenCV DNN ==")
    print("\n".join(common.environment_lines(args.threads)))
    rows = []
    background = common.BackgroundLoad()
    with common.temp_dir() as directory:
        for name, prototxt, weights, shape in cases(args.quick, directory, args.fold_bn):
            rows.append(run_case(name, prototxt, weights, shape, repeat))
            print(f"  done: {name} {rows[-1][1]}", file=sys.stderr, flush=True)
    print(f"best of {repeat} runs after one warm-up, ours and OpenCV interleaved; "
          f"{background.line()}")
    print(common.table(["net", "input", "GFLOP", "ours ms", "OpenCV ms", "ours/OpenCV",
                        "max rel err"], rows))
    return rows


if __name__ == "__main__":
    main()
