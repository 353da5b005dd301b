"""The Q-CNN net and its report: ``quantized.caffemodel``, ``report.json``, ``report.md``.

Per layer: the relative response error on the calibration columns after
k-means and after the error correction, the bytes of the dense layer and of
its Q layer, and the multiply-adds of each per image (the predicted
speed-up, see :func:`~pycaffe_lite.compress.qcnn_layers.costs`).  For the
whole net: the param bytes of the full-precision caffemodel and of the Q
one (indices bit-packed), over the layers of the deploy net.  Measured
speed-ups: ``caffe_lite speedtest``'s timer on the written deploy net against
its dense twin (batch 1, one thread, ``SPEEDTEST_ITERATIONS`` alternating
passes); the report gives the command for a longer run.
"""
import json

from ..io import files
from ..layer import TEST
from ..net import Net
from ..proto import caffe_pb2
from ..tools import speedtest

SPEEDTEST_ITERATIONS = 5


def build_net(deploy, weights, layers):
    """The deploy Q net: the full-precision ``weights`` in its other layers, ``layers
    {name: (codebooks, indices, bias or None)}`` in its Q layers."""
    net = Net(deploy, phase=TEST)
    trained = files.read_weights(weights)
    others = caffe_pb2.NetParameter(name=trained.name)
    for lp in trained.layer:
        if lp.name not in layers:
            others.layer.add().CopyFrom(lp)
    net.copy_from(others)
    for name, (codebooks, indices, bias) in layers.items():
        blobs = net.layer_dict[name].blobs
        blobs[0].data[...] = net.xp.asarray(codebooks)
        blobs[1].data[...] = net.xp.asarray(indices)
        if bias is not None:
            blobs[2].data[...] = bias
    return net


def blob_bytes(proto):
    """Bytes a BlobProto's values take: packed indices as stored, floats at 4 bytes."""
    if proto.packed_bits:
        return len(proto.packed_data)
    return 4 * (len(proto.data) or len(proto.double_data))


def param_bytes(message, names=None):
    """Param bytes of a caffemodel message (only the layers in ``names``, when given)."""
    return sum(blob_bytes(b) for lp in message.layer if names is None or lp.name in names
               for b in lp.blobs)


def summary(run, plans, net):
    infos = [run.state.info("layer " + plan.name) for plan in plans]
    names = set(net.layer_names)
    dense = param_bytes(files.read_weights(run.weights), names)
    quantised = param_bytes(net.to_proto())
    macs = sum(i["dense_macs"] for i in infos)
    q_macs = sum(i["table_macs"] + i["lookups"] for i in infos)
    o = run.options
    timed = speedtest.speedtest(run.path("deploy.prototxt"), run.path("quantized.caffemodel"),
                                iterations=SPEEDTEST_ITERATIONS, threads=1)
    measured = {row["layer"]: row["speedup"] for row in timed["rows"]}
    for info in infos:
        info["measured_speedup"] = measured.get(info["layer"])
    return {
        "model": run.model, "weights": run.weights,
        "options": {"calib": o.calib, "images": o.images, "subspace_dim": o.subspace_dim,
                    "codebook": o.codebook, "seed": o.seed, "samples": o.samples,
                    "refine_iterations": o.refine_iterations,
                    "kmeans_iterations": o.kmeans_iterations},
        "calibration": run.state.info("calibration"),
        "layers": infos,
        "net": {"float_param_bytes": dense, "q_param_bytes": quantised,
                "ratio": dense / quantised if quantised else 0.0,
                "dense_macs": macs, "q_macs": q_macs,
                "predicted_speedup": macs / q_macs if q_macs else 0.0,
                "measured_ms": {"dense": timed["dense_ms"], "q": timed["q_ms"]},
                "measured_speedup": timed["speedup"]},
        "speedtest": (f"caffe_lite speedtest --model {run.path('deploy.prototxt')} "
                      f"--weights {run.path('quantized.caffemodel')}"),
    }


def _markdown(report):
    net = report["net"]
    cal = report["calibration"]
    lines = [
        "# Q-CNN compression", "",
        f"Model `{report['model']}`, weights `{report['weights']}`; calibration: "
        f"{cal['shape'][0]} images from {cal['source']}; seed {report['options']['seed']}.",
        "",
        "| layer | type | D | K | subspaces | response error, k-means | after error "
        "correction | bytes float -> Q | smaller | multiply-adds dense | tables + lookups | "
        "predicted speed-up | measured |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i in report["layers"]:
        lines.append(
            f"| {i['layer']} | {i['type']} | {i['subspace_dim']} | {i['codebook']} | "
            f"{i['subspaces']} | {i['error_kmeans']:.4f} | {i['error_refined']:.4f} "
            f"({i['sweeps']} sweeps) | {i['dense_bytes']:,} -> {i['q_bytes']:,} | "
            f"{i['dense_bytes'] / i['q_bytes']:.1f}x | {i['dense_macs']:,} | "
            f"{i['table_macs']:,} + {i['lookups']:,} | {i['predicted_speedup']:.2f}x | "
            f"{i['measured_speedup']:.2f}x |")
    lines += [
        "",
        f"Whole net: {net['float_param_bytes']:,} param bytes -> {net['q_param_bytes']:,} "
        f"(**{net['ratio']:.1f}x smaller**; the caffemodels' param blobs, float32 against "
        "codebooks + bit-packed indices + biases); the quantised layers' multiply-adds "
        f"{net['dense_macs']:,} -> {net['q_macs']:,} per image (predicted "
        f"{net['predicted_speedup']:.2f}x). Measured, batch 1, one thread: the whole "
        f"net {net['measured_ms']['dense']:.2f} ms dense, {net['measured_ms']['q']:.2f} ms "
        f"Q ({net['measured_speedup']:.2f}x).",
        "",
        "Response errors are `||y - y_q|| / ||y||` on the calibration columns (a convolution: "
        "sampled output positions), `y` the full-precision net's response, `y_q` the Q "
        "layer's on inputs from the net quantised up to it. Bytes: codebooks float32, "
        "indices at ceil(log2 K) bits, the bias float32. Multiply-adds per image: dense "
        "`OH OW M KK Cg`, Q-CNN's tables `G Hp Wp Cg K` plus one addition per lookup "
        "`OH OW M KK S`.",
        "",
        f"Measured speed-ups: the mean of {SPEEDTEST_ITERATIONS} alternating passes of the "
        "deploy net and its dense twin (the reconstructed weights in Convolution / "
        f"InnerProduct); a longer run: `{report['speedtest']}`.", ""]
    return "\n".join(lines)


def write(run, plans, net):
    """Write ``report.json`` and ``report.md`` into the run's folder; return the report."""
    report = summary(run, plans, net)
    files.write_atomic(run.path("report.json"), json.dumps(report, indent=1).encode())
    files.write_atomic(run.path("report.md"), _markdown(report).encode())
    return report

