"""``caffe_lite compress qcnn``: Q-CNN's product quantisation of a trained net.

Wu et al., "Quantized Convolutional Neural Networks for Mobile Devices", CVPR
2016.  ``compress(model, weights, out, calib=...)`` turns the chosen
Convolution / InnerProduct layers into QConvolution / QInnerProduct layers
(``layers/qcnn.py``), layer after layer in the net's order:

1. **Codebooks** (:mod:`~pycaffe_lite.compress.qcnn_kmeans`): the layer's
   inputs split into subspaces of ``D`` values; in each, k-means over the
   weight sub-vectors of every output (and kernel offset) gives ``K``
   codewords, and each sub-vector the index of its nearest one.
2. **Error correction** (:mod:`~pycaffe_lite.compress.qcnn_refine`): codebooks
   and assignments refitted to the layer's *responses* on calibration
   images: inputs from the net with the earlier layers already quantised,
   targets from the full-precision net, so each layer corrects the error
   accumulated upstream.  ``refine_iterations=0``: k-means alone.

Every step writes its files atomically into ``out`` and records in
``out/state.json`` the hash of what it was made from (model, weights,
calibration images, options, and the layers before it); a re-run keeps the
steps whose inputs are unchanged, ``restart`` redoes from one step on
(``calibration``, a layer's name, ``output``).  Layers and their D and K:
:mod:`~pycaffe_lite.compress.qcnn_plan` (``--layers conv1:1:16,ip1``).  Outputs: ``deploy.prototxt``
(the net with its Q layers; ``train_val.prototxt`` too for a net with data
layers), ``quantized.caffemodel`` (indices bit-packed), ``report.md`` /
``report.json`` (:mod:`~pycaffe_lite.compress.qcnn_report`).
"""
import dataclasses
import json
import logging
import os
import sys
import time
import zlib

import numpy
from google.protobuf import text_format

from .. import rng as caffe_rng
from ..backend import to_numpy
from ..flags import UsageError
from ..io import files
from ..layer import TEST
from . import calibration, netparams, qcnn_layers, qcnn_report, streaming
from . import stages
from .stages import CompressError
from .qcnn_kmeans import ITERATIONS as KMEANS_ITERATIONS
from .qcnn_kmeans import kmeans
from ..tools.qdense import q_net_param
from .qcnn_plan import check_values, make_plan, parse_layers, select
from .qcnn_refine import Refinement, refine

log = logging.getLogger("pycaffe_lite")

REFINE_ITERATIONS = 8
SAMPLES = 4096              # calibration columns per layer (a convolution: positions)
FORMAT = 1                  # bump when the steps' outputs change meaning


@dataclasses.dataclass
class Options:
    calib: str = None               # LMDB folder, image list, "synthetic"; None: TRAIN data
    images: int = 1000
    subspace_dim: int = None        # None: 8 for convolutions, 4 for inner products
    codebook: int = None            # None: 128 for convolutions, 32 for inner products
    layers: object = None           # None: all; "a,b:D:K" text, names, or {name: (D, K)}
    seed: int = 1
    batch: int = None               # images per forward; None: what the memory budget holds
    refine_iterations: int = REFINE_ITERATIONS
    kmeans_iterations: int = KMEANS_ITERATIONS
    samples: int = SAMPLES

    def check(self):
        for name, value, low in (("--images", self.images, 1), ("--batch_size", self.batch, 1),
                                 ("--refine_iterations", self.refine_iterations, 0),
                                 ("k-means iterations", self.kmeans_iterations, 1),
                                 ("calibration samples", self.samples, 1)):
            if value is not None and value < low:
                raise CompressError(f"{name} must be at least {low}, got {value}")
        check_values("--subspace_dim", self.subspace_dim, "--codebook", self.codebook)


# --- one run ---------------------------------------------------------------------------

class _Run:
    def __init__(self, model, weights, out, options, progress):
        self.model, self.weights, self.out = model, weights, out
        self.options, self.progress = options, progress
        self.net_param = files.read_net(model)
        self.wanted = parse_layers(options.layers)
        self.chosen = select(self.net_param, self.wanted, model)
        held = {lp.name for lp in files.read_weights(weights).layer if lp.blobs}
        for name, kind in self.chosen:
            if name not in held:
                raise CompressError(f"{weights}: no weights for layer '{name}' ({kind}) of "
                                    f"{model}")
        self.state = stages.State(out)
        self.hashes = [stages.sha256_file(model), stages.sha256_file(weights)]

    def path(self, name):
        return os.path.join(self.out, name)

    def bar(self, desc, total, unit):
        make = stages.bar(self.progress, desc, unit)
        return make(total) if make else None

    def stage(self, name, key, forced, body):
        """Run ``body() -> (outputs, info)`` unless the state says its outputs are fresh."""
        if not forced and self.state.fresh(name, key):
            log.info("%s: inputs unchanged, kept (--restart %s redoes it)", name,
                     name.split(" ", 1)[-1])
            return
        log.info("Step %s", name)
        exact = stages.reset_peak()
        start = time.perf_counter()
        outputs, info = body()
        self.state.record(name, key, outputs, info, time.perf_counter() - start, stages.peak_mb(),
                          exact)

    def run(self, restart):
        names = ["calibration"] + [name for name, _ in self.chosen] + ["output"]
        if restart is not None and restart not in names:
            raise CompressError(f"--restart must be one of {', '.join(names)}, got '{restart}'")
        o = self.options
        source = calibration.source_layer(self.net_param, o.calib, self.model)
        if o.calib not in (None, "synthetic") and not netparams.source_layers(self.net_param):
            log.warning("%s has no data layer whose transform_param (scale, mean, crop) "
                        "the calibration images could take: they are used as stored; give "
                        "the train_val net as --model to use its data layer's transform",
                        self.model)
        key = stages.key("calibration", text_format.MessageToString(source),
                         calibration.fingerprint(source), o.images, o.seed)
        forced = restart == "calibration"
        self.stage("calibration", key, forced, lambda: self.calibration(source))
        key = stages.key(key, self.state.outputs("calibration"), *self.hashes, FORMAT)
        images = calibration.Images(self.path("calibration.npy"))
        fp_net = streaming.build(self.net_param, self.weights, images.shape[1:], 1)
        q_net = streaming.build(self.net_param, self.weights, images.shape[1:], 1)
        chunk = o.batch or streaming.chunk_for(fp_net, streaming.MEMORY_BUDGET // 2)
        plans = self.plans(fp_net)
        os.makedirs(self.path("layers"), exist_ok=True)
        bar = self.bar("Q-CNN layers", len(plans), "layer")
        keys = []
        for number, plan in enumerate(plans):
            forced = forced or plan.name == restart
            key = stages.key("layer", plan.name, key, plan.dim, plan.codewords,
                             o.refine_iterations, o.kmeans_iterations, o.samples, o.seed)
            keys.append(key)
            self.stage("layer " + plan.name, key, forced, lambda: self.quantise(
                plan, fp_net, q_net, images, chunk, upstream=number > 0))
            q_net.params[plan.name][0].data[...] = qcnn_layers.dense_weight(
                *self.saved(plan), plan.spec)
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        forced = forced or restart == "output"
        self.stage("output", stages.key("output", keys, FORMAT), forced,
                   lambda: self.output(plans, fp_net, images.shape[1:]))
        with open(self.path("report.json")) as f:
            return json.load(f)

    def saved(self, plan):
        """(codebooks, indices) of a finished layer, from its file."""
        with numpy.load(self.path(plan.file)) as saved:
            return saved["codebooks"], saved["indices"]

    def plans(self, net):
        index = {record.name: i for i, record in enumerate(net.records)}
        wanted = self.wanted or {}
        return [make_plan(net.records[index[name]], index[name],
                          wanted.get(name, (None, None)), self.options)
                for name, _ in self.chosen]

    # --- steps
    def calibration(self, source):
        o = self.options
        caffe_rng.set_random_seed(o.seed)
        describe = (f"calibration source '{o.calib}'" if o.calib else
                    f"the TRAIN data layer '{source.name}' of {self.model}")
        bar = self.bar("calibration images", o.images, "image")
        try:
            shape = calibration.write(source, o.images, self.path("calibration.npy"),
                                      chunk=o.batch or 50, progress=bar, describe=describe)
        finally:
            if bar is not None:
                bar.close()
        log.info("Calibration: %d images of %s from %s", shape[0],
                 "x".join(map(str, shape[1:])), describe)
        return ["calibration.npy"], {"shape": list(shape),
                                     "source": o.calib or f"TRAIN layer '{source.name}'"}

    def columns(self, plan, fp_net, q_net, images, chunk, picks, upstream):
        """(inputs ``[G, N, KK, Cg]`` from ``q_net``, responses ``[M, N]`` from ``fp_net``)
        at the kept columns ``picks``; one pass when nothing upstream is quantised."""
        spec, taken = plan.spec, {"x": [], "y": []}

        def hook(kind, take):
            def collect(array):
                done = sum(part.shape[1] for part in taken[kind]) // picks.shape[1]
                taken[kind].append(take(array, spec, picks[done:done + len(array)]))
            return collect
        take_x = {plan.index: hook("x", qcnn_layers.input_columns)}
        take_y = {plan.index: hook("y", qcnn_layers.output_columns)}
        count = len(picks)
        bar = self.bar(f"{plan.name} columns", count * (2 if upstream else 1), "image")
        if upstream:
            streaming.run_pass(q_net, images, chunk, count, plan.index, before=take_x,
                               progress=bar)
            streaming.run_pass(fp_net, images, chunk, count, plan.index, after=take_y,
                               progress=bar)
        else:
            streaming.run_pass(fp_net, images, chunk, count, plan.index, before=take_x,
                               after=take_y, progress=bar)
        if bar is not None:
            bar.close()
        return numpy.concatenate(taken["x"], axis=1), numpy.concatenate(taken["y"], axis=1)

    def quantise(self, plan, fp_net, q_net, images, chunk, upstream):
        o, spec = self.options, plan.spec
        start = time.perf_counter()
        rng = numpy.random.default_rng([o.seed, zlib.crc32(spec.name.encode())])
        per_image = max(1, -(-o.samples // len(images)))
        picks = qcnn_layers.draw_columns(spec, len(images), per_image, rng)
        x, y = self.columns(plan, fp_net, q_net, images, chunk, picks, upstream)
        blobs = fp_net.params[spec.name]
        weight = to_numpy(blobs[0].data)
        bias = to_numpy(blobs[1].data) if spec.bias else numpy.zeros(spec.outputs, numpy.float32)
        books, labels, iterations = kmeans(qcnn_layers.sub_vectors(weight, spec, plan.dim),
                                           plan.codewords, rng, o.kmeans_iterations)
        subspaces = books.shape[0]
        indices = labels.reshape(subspaces, spec.outputs, spec.offsets).transpose(1, 2, 0)
        refinement = Refinement(qcnn_layers.padded(x, plan.dim), y - bias[:, None], books,
                                indices, reference=float(numpy.sum(y.astype(numpy.float64) ** 2)))
        bar = self.bar(f"{spec.name} refinement", o.refine_iterations, "sweep") \
            if o.refine_iterations else None
        history = refine(refinement, o.refine_iterations, bar)
        if bar is not None:
            bar.close()
        codebooks = refinement.codebooks.astype(numpy.float32)
        indices = qcnn_layers.index_blob(refinement.indices, spec, plan.codewords)
        refinement.codebooks = codebooks.astype(numpy.float64)    # the error of what is kept
        refinement.reset_residual()
        with files.atomic_output(self.path(plan.file)) as f:
            numpy.savez(f, codebooks=codebooks, indices=indices)
        dense = qcnn_layers.dense_weight(codebooks, indices, spec)
        info = {"layer": spec.name, "type": spec.type, "subspace_dim": plan.dim,
                "codebook": plan.codewords, "subspaces": subspaces, "offsets": spec.offsets,
                "outputs": spec.outputs, "inputs": spec.inputs, "groups": spec.groups,
                "columns": int(y.shape[1]), "kmeans_iterations": iterations,
                "error_kmeans": history[0], "error_refined": refinement.relative_error(),
                "error_history": history, "sweeps": len(history) - 1,
                "weight_error": float(numpy.linalg.norm(dense - weight)
                                      / max(numpy.linalg.norm(weight), 1e-30)),
                "seconds": time.perf_counter() - start,
                **qcnn_layers.costs(spec, plan.dim, plan.codewords)}
        log.info("%s (%s): D %d, K %d, %d subspaces x %d offsets; k-means %d iterations; "
                 "response error %.4f -> %.4f after %d sweeps (%d columns); %d -> %d bytes, "
                 "predicted speed-up %.2fx (%.1f s)", spec.name, spec.type, plan.dim,
                 plan.codewords, subspaces, spec.offsets, iterations, info["error_kmeans"],
                 info["error_refined"], info["sweeps"], info["columns"], info["dense_bytes"],
                 info["q_bytes"], info["predicted_speedup"], info["seconds"])
        return [plan.file], info

    def output(self, plans, fp_net, sample_shape):
        """deploy.prototxt (+ train_val.prototxt), quantized.caffemodel, the report."""
        final = q_net_param(self.net_param, {p.name: (p.dim, p.codewords) for p in plans})
        outputs = ["deploy.prototxt", "quantized.caffemodel", "report.md", "report.json"]
        if netparams.source_layers(netparams.phase_param(self.net_param, TEST)):
            files.write_text_proto(self.path("train_val.prototxt"), final)
            outputs.insert(0, "train_val.prototxt")
            deploy = netparams.deploy_param(final, (1,) + tuple(sample_shape), softmax=True)
        else:
            deploy = final
        files.write_text_proto(self.path("deploy.prototxt"), deploy)
        layers = {}
        for plan in plans:
            bias = fp_net.params[plan.name][1].data if plan.spec.bias else None
            layers[plan.name] = self.saved(plan) + (bias,)
        net = qcnn_report.build_net(deploy, self.weights, layers)
        net.save(self.path("quantized.caffemodel"))
        qcnn_report.write(self, plans, net)
        return outputs, {"files": outputs}


def compress(model, weights, out, restart=None, progress=True, **options):
    """Quantise ``model`` + ``weights`` the Q-CNN way into folder ``out``.

    ``options``: see :class:`Options` (``calib``, ``images``, ``subspace_dim``,
    ``codebook``, ``layers``, ``seed``, ``batch``, ``refine_iterations``,
    ``kmeans_iterations``, ``samples``).  ``restart``: ``calibration``, a layer
    name or ``output``, redone with every step after it.  Returns the report
    (a dict, also ``out/report.json``).
    """
    opts = Options(**options)
    opts.check()
    stages.prepare(model, weights, out)
    return _Run(model, weights, out, opts, progress).run(restart)


def qcnn_cli(flags):
    """``caffe_lite compress qcnn --model NET --weights W --out DIR [--calib SOURCE] ...``."""
    for name, what in (("model", "the net to compress (a deploy or train_val prototxt)"),
                       ("weights", "its trained full-precision weights"),
                       ("out", "a folder for the outputs")):
        if not getattr(flags, name):
            raise UsageError(f"Need {what} (--{name}).")
    if flags.batch_size < 0:
        raise UsageError(f"--batch_size must be positive, got {flags.batch_size}",
                         show_usage=False)
    report = compress(
        flags.model, flags.weights, flags.out, restart=flags.restart or None,
        progress=flags.progress and sys.stderr.isatty(), calib=flags.calib or None,
        images=flags.images, subspace_dim=flags.subspace_dim or None,
        codebook=flags.codebook or None, layers=flags.layers or None, seed=flags.seed,
        batch=flags.batch_size or None, refine_iterations=flags.refine_iterations,
        samples=flags.samples)
    net = report["net"]
    log.info("Weights: %d -> %d bytes (%.1fx smaller); predicted speed-up of the Q layers "
             "%.2fx", net["float_param_bytes"], net["q_param_bytes"], net["ratio"],
             net["predicted_speedup"])
    log.info("Wrote %s/deploy.prototxt, quantized.caffemodel and report.md", flags.out)
    return 0
