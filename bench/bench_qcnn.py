"""Q-CNN AlexNet: lookup-table layers against our dense Convolution / InnerProduct.

Q-CNN's speed-test (its README: AlexNet 55.3 ms against Caffe's 167.8 ms per
image, 3.03x, one thread, batch 1): BVLC AlexNet's deploy net with every
Convolution a QConvolution (Q-CNN's settings: K = 128 codewords of D = 8
channels) and every InnerProduct a QInnerProduct (K = 32, D = 4), random
codebooks and indices, against its dense twin (the same net with the
reconstructed weights in Convolution / InnerProduct: our im2col + BLAS path),
both by ``caffe_lite speedtest``'s timer in the same run.  Printed: per layer
and whole net, with the compiled (Numba) lookup sums and with the NumPy
fallback; and the caffemodels' sizes.  Targets: whole net >= 3x faster than
the dense path; the Q caffemodel >= 15x smaller than the float one.

    python bench/bench_qcnn.py [--quick] [--threads 1] [--repeat R]
"""
import sys

import common


def alexnet_q(directory):
    """(Q deploy prototxt, its random caffemodel) of BVLC AlexNet at batch 1."""
    from pycaffe_lite.io import files
    from pycaffe_lite.layer import TEST
    from pycaffe_lite.net import Net
    from pycaffe_lite.testing import randomize
    from pycaffe_lite.tools.qdense import q_net_param
    param = q_net_param(files.read_net(str(common.need(common.ALEXNET))))
    for layer in param.layer:
        for shape in layer.input_param.shape if layer.type == "Input" else ():
            shape.dim[0] = 1
    net = Net(param, phase=TEST)
    randomize(net, seed=1)
    model, weights = f"{directory}/alexnet_q.prototxt", f"{directory}/alexnet_q.caffemodel"
    files.write_text_proto(model, param)
    net.save(weights)
    return model, weights


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.set_defaults(threads=1)
    args = p.parse_args(argv)
    common.configure_threads(args.threads)
    import logging
    logging.getLogger("pycaffe_lite").setLevel(logging.WARNING)
    from pycaffe_lite.engines import lookup
    from pycaffe_lite.tools.speedtest import format_table, speedtest
    iterations = args.repeat or (3 if args.quick else 20)
    print("== Q-CNN AlexNet (conv K=128 D=8, fc K=32 D=4): lookup tables vs our dense path, "
          "batch 1 ==")
    print("\n".join(common.environment_lines(args.threads)))
    background = common.BackgroundLoad()
    results = {}
    with common.temp_dir() as directory:
        model, weights = alexnet_q(directory)
        paths = ["numba", "numpy"] if lookup.numba_available() else ["numpy"]
        for path in paths:
            lookup.PATH = path
            runs = iterations if path == "numba" else max(1, iterations // 4)
            results[path] = speedtest(model, weights, iterations=runs, threads=args.threads)
            print(f"  done: {path} sums ({runs} iterations)", file=sys.stderr, flush=True)
        lookup.PATH = None
    if "numba" not in results:
        print("Numba is not installed: only the NumPy fallback was measured "
              "(pip install numba)")
    for path, result in results.items():
        print(f"\n-- lookup sums by {path}, {result['iterations']} iterations, mean ms per "
              f"image, {args.threads} thread(s) --")
        print(format_table(result, only_q=True))
    best = results.get("numba", results["numpy"])
    q_layers = [r for r in best["rows"] if r["type"].startswith("Q")]
    q_dense = sum(r["dense_ms"] for r in q_layers)
    q_q = sum(r["q_ms"] for r in q_layers)
    print(f"\nQ layers alone: dense {q_dense:.2f} ms, Q {q_q:.2f} ms: {q_dense / q_q:.2f}x; the "
          f"other layers (ReLU, LRN, pooling, softmax) {best['dense_ms'] - q_dense:.2f} ms in "
          "both nets")
    print(f"whole net: {best['speedup']:.2f}x faster (target >= 3x: "
          f"{'met' if best['speedup'] >= 3 else 'not met'}); caffemodel "
          f"{best['dense_bytes'] / best['q_bytes']:.1f}x smaller (target >= 15x: "
          f"{'met' if best['dense_bytes'] >= 15 * best['q_bytes'] else 'not met'})")
    print(background.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
