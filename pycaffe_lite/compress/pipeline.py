"""The Label-free pipeline (He & Cheng, ECCV 2018): ``labelfree(model, weights, out)``.

``labelfree(model, weights, out)`` runs five stages, each writing its files
atomically into ``out`` and recording in ``out/state.json`` a hash of its
inputs; a later run skips a stage whose inputs are unchanged (``restart``
redoes from a stage on):

1. ``calibration``: the calibration images (``calibration.npy``), see
   :mod:`~pycaffe_lite.compress.calibration`.
2. ``weights``: every Convolution / InnerProduct as ``W = alpha * Q``: power
   of two levels (``weight_bits``), the first and last such layer (file order)
   ``fixed_bits`` fixed point.  A Scale layer ``<layer>_alpha_term`` follows
   each, in place, holding ``alpha`` and the bias ``b * (1 - alpha)`` (the
   layer keeps its bias ``b``: ``alpha (Q x + b) + b (1 - alpha) = alpha Q x + b``;
   a net that already has its ``_alpha_term`` layers keeps them, the product
   folded in: :func:`fold_scale`).
   The layer's blob holds the integer levels ``Q``.  Writes ``weights.prototxt``
   (the paper's ``BN_update`` net) and ``weights.caffemodel``.
3. ``renorm``: BatchNorm statistics re-estimated through the quantised net on
   all calibration images (:func:`~pycaffe_lite.compress.streaming.renormalize`);
   ``renorm.caffemodel``.
4. ``activations``: a step per ReLU from the first ``act_images`` images (the
   paper's iteration; the ReLUs still float, BatchNorms on the new
   statistics).  8-bit: the ReLU becomes a ``Quant`` layer with
   ``relu_param.negative_slope: step``, which outputs the integer code
   0..127; the step is given back downstream: multiplied into the next
   Convolution / InnerProduct's ``_alpha_term`` Scale (through Pooling,
   Dropout, Flatten, Reshape), or into an Eltwise SUM's ``coeff``, else a
   ``Power`` layer ``<relu>_step`` (``scale: step``) follows the Quant.
   Other widths: an ``ActQuantize`` layer (``step``, unsigned, ``bits - 1``
   code bits), which outputs ``step * code`` itself.  Writes
   ``train_val.prototxt``, ``deploy.prototxt`` and ``quantized.caffemodel``.
5. ``report``: ``report.md``, ``report.json``, ``report.png``.
"""
import dataclasses
import json
import logging
import os
import time

import numpy
from google.protobuf import text_format

from .. import rng
from ..io import files
from ..layer import TEST
from . import calibration, netparams, quantizers, stages, streaming
from .stages import CompressError

log = logging.getLogger("pycaffe_lite")

STAGES = ("calibration", "weights", "renorm", "activations", "report")
PASS_THROUGH = ("Pooling", "Dropout", "Flatten", "Reshape")


@dataclasses.dataclass
class Options:
    calib: str = None               # LMDB folder, image list, "synthetic"; None: TRAIN data
    images: int = 1000
    act_images: int = None          # default min(400, images), as the paper
    weight_bits: int = 4
    fixed_bits: int = 8             # first and last Convolution / InnerProduct
    act_bits: int = 8
    batch: int = None               # images per forward; None: what MEMORY_BUDGET holds
    seed: int = 1
    test_iterations: int = None     # report: default every TEST image (whole batches)

    def check(self):
        if self.images < 1:
            raise CompressError(f"--images must be at least 1, got {self.images}")
        if self.act_images is None:
            self.act_images = min(400, self.images)
        if not 1 <= self.act_images <= self.images:
            raise CompressError(f"--act-images must be 1..{self.images} (--images), got "
                                f"{self.act_images}")
        if self.batch is not None and self.batch < 1:
            raise CompressError(f"--batch_size must be at least 1, got {self.batch}")
        for name, value, allowed in (
                ("--weight-bits", self.weight_bits, quantizers.WEIGHT_BITS),
                ("--first-last-bits", self.fixed_bits, quantizers.FIXED_BITS),
                ("--act-bits", self.act_bits, quantizers.ACT_BITS)):
            if value not in allowed:
                raise CompressError(f"{name} must be {allowed.start}..{allowed.stop - 1}, "
                                    f"got {value}")
        if self.test_iterations is not None and self.test_iterations < 1:
            raise CompressError(f"--test-iterations must be at least 1, got "
                                f"{self.test_iterations}")


def _check_net(net_param, model):
    layers = [layer for layer in net_param.layer if layer.type in netparams.PARAM_TYPES]
    if not layers:
        raise CompressError(f"{model}: no Convolution or InnerProduct layer to quantise")
    test = netparams.phase_param(net_param, TEST)
    readers = netparams.consumers(test)
    for i, layer in enumerate(test.layer):
        if layer.type != "BatchNorm":
            continue
        after = [test.layer[c] for c, _ in readers[(i, 0)]]
        if not any(next_layer.type == "Scale" for next_layer in after):
            raise CompressError(
                f"{model}: layer '{layer.name}' (BatchNorm) has no Scale layer after it; the "
                "Label-free nets pair each BatchNorm with a Scale (bias_term: true) reading "
                f"its top '{layer.top[0]}'")
    return layers


def existing_alpha_terms(net_param):
    """Names of the Convolution / InnerProduct layers already followed by their
    ``<layer>_alpha_term`` Scale, in place (the paper's VGG16-BN file has them)."""
    found = set()
    for layer, after in zip(net_param.layer, list(net_param.layer)[1:]):
        if (layer.type in netparams.PARAM_TYPES and after.name == layer.name + "_alpha_term"
                and after.type == "Scale" and list(after.bottom) == [layer.top[0]]
                and list(after.top) == [layer.top[0]]):
            found.add(layer.name)
    return found


def alpha_term_param(net_param, existing=()):
    """``net_param`` with a Scale ``<layer>_alpha_term`` after every Convolution /
    InnerProduct, in place on its top (the paper's structure); a layer in
    ``existing`` keeps its own, which gets a bias term where the layer has one."""
    out = type(net_param)()
    out.CopyFrom(net_param)
    del out.layer[:]
    bias_of = {}
    for layer in net_param.layer:
        entry = out.layer.add()
        entry.CopyFrom(layer)
        if layer.type == "Scale" and layer.name in bias_of:
            entry.scale_param.bias_term = entry.scale_param.bias_term or bias_of[layer.name]
        if layer.type not in netparams.PARAM_TYPES:
            continue
        conv = layer.convolution_param if layer.type == "Convolution" else layer.inner_product_param
        if layer.name in existing:
            bias_of[layer.name + "_alpha_term"] = conv.bias_term
            continue
        scale = out.layer.add(name=layer.name + "_alpha_term", type="Scale",
                              bottom=[layer.top[0]], top=[layer.top[0]])
        scale.include.extend(layer.include)
        scale.exclude.extend(layer.exclude)
        scale.scale_param.bias_term = conv.bias_term
        if layer.type == "InnerProduct" and conv.axis != 1:
            scale.scale_param.axis = conv.axis
    return out


def fold_scale(term, bias, factor):
    """The alpha term ``(S, B)`` of a layer with bias ``b`` once the layer's product
    is multiplied by ``factor``: ``S (factor P + b) + B = S' (P + b) + B'`` with
    ``S' = S factor`` and ``B' = B + S b (1 - factor)``."""
    scale = term[0]
    new = [(scale * factor).astype(numpy.float32)]
    offset = term[1] if len(term) > 1 else None
    if bias is not None:
        offset = numpy.zeros_like(scale) if offset is None else offset
        offset = offset + scale * bias * (numpy.float32(1) - factor)
    if offset is not None:
        new.append(offset.astype(numpy.float32))
    return new


def quantize_weights(net_param, weights, options, model="net", source="weights",
                     progress=None):
    """(alpha-term NetParameter, caffemodel NetParameter, per-layer info);
    ``progress(total)``: a tqdm-like bar maker, one step per layer."""
    layers = _check_net(net_param, model)
    blobs = netparams.weight_blobs(weights)
    first = {}
    for layer in layers:                    # a layer in both phases counts once
        first.setdefault(layer.name, layer)
    unique = list(first.values())
    fixed = {unique[0].name, unique[-1].name}
    existing = existing_alpha_terms(net_param)
    info = []
    bar = progress(len(unique)) if progress else None
    for layer in unique:
        if bar is not None:
            bar.update()
        if layer.name not in blobs:
            raise CompressError(f"{source}: no weights for layer '{layer.name}' "
                                f"({layer.type}) of {model}")
        held = blobs[layer.name]
        weight = held[0]
        rows = (layer.convolution_param.num_output if layer.type == "Convolution"
                else layer.inner_product_param.num_output)
        if weight.size % max(rows, 1):
            raise CompressError(f"{source}: layer '{layer.name}' weight of shape "
                                f"{weight.shape} does not split into {rows} kernels")
        kind = "fixed" if layer.name in fixed else "power"
        bits = options.fixed_bits if kind == "fixed" else options.weight_bits
        t = time.perf_counter()
        result = quantizers.quantize_kernels(weight.reshape(rows, -1), kind, bits)
        norm = float(numpy.linalg.norm(weight.astype(numpy.float64)))
        error = float(numpy.sqrt(result.error)) / norm if norm else 0.0
        levels = result.levels.reshape(weight.shape)
        alpha = result.alpha
        bias = held[1].reshape(-1) if len(held) > 1 else None
        blobs[layer.name] = [levels] + held[1:]
        term_name = layer.name + "_alpha_term"
        if layer.name in existing and term_name in blobs:
            term = [b.reshape(-1) for b in blobs[term_name]]
        else:               # a new alpha term (or an existing one the weights lack: 1, 0)
            term = [numpy.ones(rows, numpy.float32)]
        blobs[term_name] = fold_scale(term, bias, alpha)
        distinct = numpy.unique(numpy.abs(levels))
        info.append({"layer": layer.name, "type": layer.type, "kind": kind, "bits": bits,
                     "range": result.range_text(), "start": result.start,
                     "relative_l2_error": error, "iterations": result.iterations,
                     "zero_fraction": float(numpy.mean(levels == 0)),
                     "magnitudes": [float(v) for v in distinct if v]})
        log.info("%s: %s, relative L2 error %.4f (%d iterations, %.2f s)", layer.name,
                 result.range_text(), error, result.iterations, time.perf_counter() - t)
    if bar is not None:
        bar.close()
    quantized = alpha_term_param(net_param, existing)
    return quantized, netparams.weights_message(quantized, blobs), info


# --- stage 4: activations -----------------------------------------------------------

def _absorbers(test, readers, start):
    """Where the step of the codes leaving ``start`` (layer index, top) can be
    multiplied back: a list of ("scale", conv name) / ("eltwise", name, bottom),
    or None when some reader cannot take it (then a Power layer does).
    ``readers``: :func:`netparams.consumers` of ``test``."""
    found = []

    def walk(source):
        if not readers[source]:
            return False                # a net output: it would show the codes
        for c, j in readers[source]:
            layer = test.layer[c]
            if layer.type in PASS_THROUGH:
                if not walk((c, 0)):
                    return False
            elif layer.type in netparams.PARAM_TYPES:
                found.append(("scale", layer.name))
            elif (layer.type == "Eltwise" and layer.eltwise_param.operation
                  == layer.eltwise_param.SUM):
                found.append(("eltwise", layer.name, j))
            else:
                return False
        return True

    return found if walk(start) else None


def quantize_activations(param, blobs, steps, bits):
    """Turn the ReLUs named in ``steps`` into Quant / ActQuantize layers; give
    each step back downstream.  Returns (NetParameter, blobs, per-ReLU how)."""
    test = netparams.phase_param(param, TEST)
    readers = netparams.consumers(test)
    index = {layer.name: i for i, layer in enumerate(test.layer)}
    where = {}
    coeffs, powers = {}, set()
    for name, step in steps.items():
        if bits != 8:
            where[name] = "ActQuantize (outputs step x code)"
            continue
        absorbers = _absorbers(test, readers, (index[name], 0))
        if absorbers is None:
            powers.add(name)
            where[name] = f"Power layer {name}_step"
            continue
        parts = []
        for kind, target, *rest in absorbers:
            if kind == "scale":
                held = blobs[target]
                term = target + "_alpha_term"
                blobs[term] = fold_scale(blobs[term], held[1].reshape(-1) if len(held) > 1
                                         else None, numpy.float32(step))
                parts.append(term)
            else:
                coeffs.setdefault(target, {})[rest[0]] = step
                parts.append(f"{target} coeff {rest[0]}")
        where[name] = ", ".join(parts)
    out = type(param)()
    out.CopyFrom(param)
    del out.layer[:]
    for layer in param.layer:
        entry = out.layer.add()
        entry.CopyFrom(layer)
        if layer.name in steps and layer.type == "ReLU":
            step = float(numpy.float32(steps[layer.name]))
            if bits == 8:
                entry.type = "Quant"
                entry.relu_param.negative_slope = step
            else:
                entry.type = "ActQuantize"
                entry.ClearField("relu_param")
                p = entry.act_quantize_param
                p.bits, p.step = bits - 1, step
        if layer.name in coeffs:
            n = len(layer.bottom)
            given = list(layer.eltwise_param.coeff) or [1.0] * n
            for j, step in coeffs[layer.name].items():
                given[j] *= step
            del entry.eltwise_param.coeff[:]
            entry.eltwise_param.coeff.extend(given)
        if layer.name in powers:
            power = out.layer.add(name=layer.name + "_step", type="Power",
                                  bottom=[layer.top[0]], top=[layer.top[0]])
            power.include.extend(layer.include)
            power.exclude.extend(layer.exclude)
            power.power_param.scale = float(numpy.float32(steps[layer.name]))
    return out, blobs, where


# --- the pipeline -------------------------------------------------------------------

class _Run:
    """One call of :func:`labelfree`: paths, options and the stage bodies."""

    def __init__(self, model, weights, out, options, progress):
        self.model, self.weights, self.out = model, weights, out
        self.options, self.progress = options, progress
        self.net_param = files.read_net(model)
        self.state = stages.State(out)
        self._inputs = None

    def path(self, name):
        return os.path.join(self.out, name)

    def bar(self, desc, unit="image"):
        return stages.bar(self.progress, desc, unit)

    def inputs(self):
        """sha256 of the model and weights files (hashed once a run)."""
        if self._inputs is None:
            self._inputs = [stages.sha256_file(self.model), stages.sha256_file(self.weights)]
        return self._inputs

    # -- keys: what each stage reads
    def key(self, stage):
        o = self.options
        if stage == "calibration":
            layer = calibration.source_layer(self.net_param, o.calib, self.model)
            return stages.key(text_format.MessageToString(layer),
                              calibration.fingerprint(layer), o.images, o.seed)
        upstream = {"weights": (), "renorm": ("calibration", "weights"),
                    "activations": ("calibration", "renorm", "weights"),
                    "report": ("calibration", "weights", "renorm", "activations")}[stage]
        parts = [self.state.outputs(s) for s in upstream]
        if stage == "weights":
            parts += [*self.inputs(), o.weight_bits, o.fixed_bits]
        if stage == "renorm":
            parts += [o.images]
        if stage == "activations":
            parts += [o.act_images, o.act_bits]
        if stage == "report":
            parts += [o.test_iterations, *self.inputs()]
        return stages.key(stage, *parts)

    # -- stages
    def calibration(self):
        o = self.options
        layer = calibration.source_layer(self.net_param, o.calib, self.model)
        rng.set_random_seed(o.seed)
        describe = (f"calibration source '{o.calib}'" if o.calib else
                    f"the TRAIN data layer '{layer.name}' of {self.model}")
        make = self.bar("calibration images")
        bar = make(o.images) if make else None
        try:
            shape = calibration.write(layer, o.images, self.path("calibration.npy"),
                                              chunk=o.batch or 50, progress=bar,
                                              describe=describe)
        finally:
            if bar is not None:
                bar.close()
        log.info("Calibration: %d images of %s from %s", shape[0], "x".join(map(str, shape[1:])),
                 describe)
        return ["calibration.npy"], {"shape": list(shape),
                                     "source": o.calib or f"TRAIN layer '{layer.name}'"}

    def weights_stage(self):
        param, caffemodel, info = quantize_weights(
            self.net_param, self.weights, self.options, self.model, self.weights,
            self.bar("weights", unit="layer"))
        files.write_text_proto(self.path("weights.prototxt"), param)
        files.write_binary_proto(self.path("weights.caffemodel"), caffemodel)
        return ["weights.prototxt", "weights.caffemodel"], {"layers": info}

    def _stream_net(self, caffemodel):
        images = calibration.Images(self.path("calibration.npy"))
        param = files.read_net(self.path("weights.prototxt"))
        net = streaming.build(param, self.path(caffemodel), images.shape[1:], 1)
        chunk = self.options.batch or streaming.chunk_for(net, streaming.MEMORY_BUDGET)
        log.info("Streaming %d images at a time", chunk)
        return param, net, images, chunk

    def renorm(self):
        param, net, images, chunk = self._stream_net("weights.caffemodel")
        found, passes = streaming.renormalize(net, images, chunk,
                                              self.options.images,
                                              self.bar("re-normalisation"))
        blobs = netparams.weight_blobs(self.path("weights.caffemodel"))
        before = {}
        for name, (mean, var) in found.items():
            old = blobs[name]
            s = float(old[2].ravel()[0])
            before[name] = (old[0].ravel() / s if s else old[0].ravel(),
                            old[1].ravel() / s if s else old[1].ravel())
            blobs[name] = [mean.reshape(old[0].shape), var.reshape(old[1].shape),
                           numpy.ones_like(old[2])]
        files.write_binary_proto(self.path("renorm.caffemodel"),
                                 netparams.weights_message(param, blobs))
        shifts = {name: {"mean_shift": float(numpy.abs(found[name][0] - before[name][0]).mean()),
                         "var_ratio": float(numpy.mean(found[name][1] /
                                                       numpy.maximum(before[name][1], 1e-12)))}
                  for name in found}
        log.info("Re-normalised %d BatchNorm layers in %d passes over %d images", len(found),
                 passes, min(self.options.images, len(images)))
        return ["renorm.caffemodel"], {"batchnorms": shifts, "passes": passes, "chunk": chunk}

    def activations(self):
        o = self.options
        param, net, images, chunk = self._stream_net("renorm.caffemodel")
        test = netparams.phase_param(param, TEST)
        relus = [layer.name for layer in test.layer if layer.type == "ReLU"
                 and layer.relu_param.negative_slope == 0]
        leaky = [layer.name for layer in test.layer if layer.type == "ReLU"
                 and layer.relu_param.negative_slope != 0]
        for name in leaky:
            log.warning("%s: a leaky ReLU (negative_slope != 0) stays float", name)
        top = quantizers.act_top_code(o.act_bits)
        steps, passes = {}, 0
        info = []
        if relus:
            searches, passes = streaming.activation_steps(
                net, images, chunk, o.act_images, relus, top,
                self.bar("activation steps"))
            steps = {name: s.result for name, s in searches.items()}
        blobs = netparams.weight_blobs(self.path("renorm.caffemodel"))
        final, blobs, where = quantize_activations(param, blobs, steps, o.act_bits)
        for name in relus:
            s = searches[name]
            e = s.final
            info.append({"layer": name, "step": s.result, "iterations": s.iterations,
                         "clip_rate": e.clipped / e.count if e.count else 0.0,
                         "relative_l2_error": float(numpy.sqrt(e.error / e.xx)) if e.xx else 0.0,
                         "restored_by": where[name]})
            log.info("%s: step %.6g (%d iterations), %.3f%% clipped; restored in %s", name,
                     s.result, s.iterations, 100 * info[-1]["clip_rate"], where[name])
        files.write_text_proto(self.path("train_val.prototxt"), final)
        files.write_text_proto(self.path("deploy.prototxt"), netparams.deploy_param(
            final, (1,) + tuple(images.shape[1:]), softmax=True))
        files.write_binary_proto(self.path("quantized.caffemodel"),
                                 netparams.weights_message(final, blobs))
        return (["train_val.prototxt", "deploy.prototxt", "quantized.caffemodel"],
                {"relus": info, "leaky": leaky, "passes": passes, "bits": o.act_bits,
                 "chunk": chunk})

    def report(self):
        from . import report
        return report.write(self)


def labelfree(model, weights, out, restart=None, progress=True, **options):
    """Quantise ``model`` + ``weights`` the Label-free way into folder ``out``.

    ``options``: see :class:`Options` (``calib``, ``images``, ``act_images``,
    ``weight_bits``, ``fixed_bits``, ``act_bits``, ``batch``, ``seed``,
    ``test_iterations``).  ``restart``: a stage name to redo from.  Returns
    the report (a dict, also ``out/report.json``).
    """
    opts = Options(**options)
    opts.check()
    if restart is not None and restart not in STAGES:
        raise CompressError(f"--restart must be one of {', '.join(STAGES)}, got '{restart}'")
    stages.prepare(model, weights, out)
    run = _Run(model, weights, out, opts, progress)
    bodies = {"calibration": run.calibration, "weights": run.weights_stage,
              "renorm": run.renorm, "activations": run.activations, "report": run.report}
    forced = False
    for stage in STAGES:
        forced = forced or stage == restart
        key = run.key(stage)
        if not forced and run.state.fresh(stage, key):
            log.info("Stage %s: inputs unchanged, kept (--restart %s redoes it)", stage, stage)
            continue
        log.info("Stage %s", stage)
        exact = stages.reset_peak()
        start = time.perf_counter()
        outputs, info = bodies[stage]()
        seconds = time.perf_counter() - start
        peak = stages.peak_mb()
        run.state.record(stage, key, outputs, info, seconds, peak, exact)
        log.info("Stage %s done in %.1f s, peak RSS %.0f MB", stage, seconds, peak)
    with open(run.path("report.json")) as f:
        return json.load(f)
