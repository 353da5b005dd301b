"""The Label-free pipeline's report: ``report.json``, ``report.md``, ``report.png``.

Accuracy is measured when the net's TEST phase reads labelled data that is
on this machine and has Accuracy layers: full precision, weights quantised
without re-normalisation, re-normalised (activations still float), and the
final 4/8-bit net, each over the same TEST batches (every whole batch of the
source unless ``test_iterations`` says fewer).
"""
import json
import os

import numpy

from ..backend import to_numpy
from ..errors import CaffeError
from ..io import files
from ..io.synthetic import batch_size
from ..layer import TEST
from ..net import Net
from . import calibration, netparams

NETS = (("full precision", None, None),
        ("weights quantised, no re-normalisation", "weights.prototxt", "weights.caffemodel"),
        ("re-normalised, float activations", "weights.prototxt", "renorm.caffemodel"),
        ("final", "train_val.prototxt", "quantized.caffemodel"))


def _test_setup(net_param, iterations):
    """(accuracy tops {name: top_k}, iterations, images) or a reason string."""
    test = netparams.phase_param(net_param, TEST)
    tops = {layer.top[0]: layer.accuracy_param.top_k for layer in test.layer
            if layer.type == "Accuracy"}
    if not tops:
        return "the TEST phase has no Accuracy layer"
    sources = netparams.source_layers(test)
    if len(sources) != 1:
        return f"the TEST phase has {len(sources)} data layers (one is needed)"
    layer = sources[0]
    if layer.type not in ("Data", "ImageData"):
        if iterations:
            return tops, iterations, None
        return f"the TEST data layer is {layer.type}: give --test-iterations"
    source = calibration.source_path(layer)
    if not os.path.exists(source):
        return f"the TEST data source '{source}' is not on this machine"
    batch = batch_size(layer)
    try:
        held = calibration.available(layer)
    except CaffeError as e:
        return f"the TEST data source cannot be read: {e}"
    whole = held // batch
    if not whole:
        return f"the TEST source holds {held} images, fewer than one batch of {batch}"
    iterations = min(iterations or whole, whole)
    return tops, iterations, iterations * batch


def score(model, weights, tops, iterations, progress=None):
    """Mean of each accuracy top over ``iterations`` TEST batches; ``progress(total)``:
    a tqdm-like bar maker."""
    net = Net(model, phase=TEST, weights=weights)
    sums = dict.fromkeys(tops, 0.0)
    bar = progress(iterations) if progress else None
    try:
        for _ in range(iterations):
            net.forward_range()
            for name in tops:
                sums[name] += float(to_numpy(net.blobs[name].data).ravel()[0])
            if bar is not None:
                bar.update()
    finally:
        net.close()
        if bar is not None:
            bar.close()
    return {name: value / iterations for name, value in sums.items()}


def _accuracy(run):
    setup = _test_setup(run.net_param, run.options.test_iterations)
    if isinstance(setup, str):
        return {"skipped": setup}
    tops, iterations, images = setup
    rows = []
    for label, model, weights in NETS:
        model = run.model if model is None else run.path(model)
        weights = run.weights if weights is None else run.path(weights)
        rows.append({"net": label, **score(model, weights, tops, iterations,
                                           run.bar(label, unit="batch"))})
    return {"tops": tops, "iterations": iterations, "images": images, "rows": rows}


def _fmt_bytes(mb):
    return f"{mb:.0f} MB"


def _markdown(report):
    lines = [f"# Label-free compression of {report['model']}", "",
             f"Weights {report['options']['weight_bits']}-bit power of two (first and last "
             f"layer {report['options']['fixed_bits']}-bit fixed point), activations "
             f"{report['options']['act_bits']}-bit; {report['calibration']['shape'][0]} "
             f"calibration images ({report['calibration']['source']}), "
             f"{report['options']['act_images']} for the activation steps.", ""]
    acc = report["accuracy"]
    lines += ["## Accuracy", ""]
    if "skipped" in acc:
        lines += [f"Not measured: {acc['skipped']}.", ""]
    else:
        tops = list(acc["tops"])
        head = " | ".join(f"{name} (top-{acc['tops'][name]})" for name in tops)
        lines += [f"{acc['images'] or acc['iterations']} TEST "
                  f"{'images' if acc['images'] else 'batches'}.", "",
                  f"| net | {head} |", "|---|" + "---|" * len(tops)]
        for row in acc["rows"]:
            lines.append(f"| {row['net']} | " + " | ".join(f"{100 * row[n]:.2f}%" for n in tops)
                         + " |")
        lines.append("")
    lines += ["## Weights", "", "| layer | levels | relative L2 error | zeros |",
              "|---|---|---|---|"]
    for w in report["weights"]:
        lines.append(f"| {w['layer']} | {w['range']} | {w['relative_l2_error']:.4f} | "
                     f"{100 * w['zero_fraction']:.1f}% |")
    lines += ["", "## Re-normalisation", ""]
    bns = report["renorm"]["batchnorms"]
    if bns:
        lines += [f"{len(bns)} BatchNorm layers in {report['renorm']['passes']} passes.", "",
                  "| layer | mean shift (mean abs) | new / old variance (mean) |",
                  "|---|---|---|"]
        lines += [f"| {name} | {v['mean_shift']:.4g} | {v['var_ratio']:.4f} |"
                  for name, v in bns.items()]
    else:
        lines.append("The net has no BatchNorm layer.")
    lines += ["", "## Activations", "",
              "| ReLU | step | iterations | clipped | relative L2 error | step restored in |",
              "|---|---|---|---|---|---|"]
    for a in report["activations"]:
        lines.append(f"| {a['layer']} | {a['step']:.6g} | {a['iterations']} | "
                     f"{100 * a['clip_rate']:.3f}% | {a['relative_l2_error']:.4f} | "
                     f"{a['restored_by']} |")
    lines += ["", "## Stages", "", "| stage | time | peak RSS |", "|---|---|---|"]
    for name, s in report["stages"].items():
        lines.append(f"| {name} | {s['seconds']:.1f} s | {_fmt_bytes(s['peak_rss_mb'])} |")
    lines += ["", "![per-layer figures](report.png)", ""]
    return "\n".join(lines)


def _plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    acc = report["accuracy"]
    panels = 3 if "rows" in acc else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2))
    w = report["weights"]
    ax = axes[0]
    colours = ["tab:orange" if x["kind"] == "fixed" else "tab:blue" for x in w]
    ax.bar(range(len(w)), [x["relative_l2_error"] for x in w], color=colours)
    ax.set_xticks(range(len(w)), [x["layer"] for x in w], rotation=90, fontsize=7)
    ax.set_ylabel("relative L2 error of W")
    ax.set_title("weights (blue: power of two, orange: fixed point)", fontsize=9)
    a = report["activations"]
    ax = axes[1]
    ax.bar(range(len(a)), [100 * x["clip_rate"] for x in a], color="tab:green")
    ax.set_xticks(range(len(a)), [x["layer"] for x in a], rotation=90, fontsize=7)
    ax.set_ylabel("clipped activations (%)", color="tab:green")
    twin = ax.twinx()
    twin.plot(range(len(a)), [x["relative_l2_error"] for x in a], "o-", color="tab:red")
    twin.set_ylabel("relative L2 error of the activations", color="tab:red")
    ax.set_title("activations", fontsize=9)
    if panels == 3:
        ax = axes[2]
        tops = list(acc["tops"])
        width = 0.8 / len(tops)
        for k, name in enumerate(tops):
            values = [100 * row[name] for row in acc["rows"]]
            bars = ax.bar(numpy.arange(len(values)) + k * width, values, width,
                          label=f"{name} (top-{acc['tops'][name]})")
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        low = min(100 * row[n] for row in acc["rows"] for n in tops)
        ax.set_ylim(max(0, low - 5), 101.5)
        ax.set_xticks(numpy.arange(len(acc["rows"])) + 0.4 - width / 2,
                      [row["net"].replace(", ", ",\n") for row in acc["rows"]], fontsize=7)
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title("TEST accuracy", fontsize=9)
    fig.tight_layout()
    with files.atomic_output(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def write(run):
    state = run.state
    report = {
        "model": run.model, "weights_file": run.weights,
        "options": {k: v for k, v in vars(run.options).items()},
        "calibration": state.info("calibration"),
        "weights": state.info("weights")["layers"],
        "renorm": state.info("renorm"),
        "activations": state.info("activations")["relus"],
        "leaky_relus": state.info("activations")["leaky"],
        "stages": {name: {"seconds": state.stages[name]["seconds"],
                          "peak_rss_mb": state.stages[name]["peak_rss_mb"]}
                   for name in ("calibration", "weights", "renorm", "activations")},
        "accuracy": _accuracy(run),
    }
    files.write_atomic(run.path("report.json"), json.dumps(report, indent=1).encode())
    files.write_atomic(run.path("report.md"), _markdown(report).encode())
    _plot(report, run.path("report.png"))
    return ["report.md", "report.json", "report.png"], {"accuracy": report["accuracy"]}
