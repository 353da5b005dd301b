"""Inference-time graph optimisation: fold BatchNorm (and Scale) into the layer before.

``fold_batchnorm(net)`` rewrites a built net whose weights are loaded, as
OpenCV DNN does when it fuses layers: every Convolution or InnerProduct
followed by a BatchNorm in global-statistics mode (``use_global_stats``, the
TEST default) and optionally by a one-bottom Scale (``axis: 1``,
``num_axes: 1``) gets

    W' = W * g / std,    b' = (b - mean) * g / std + beta

with ``mean = blobs[0] / s``, ``var = blobs[1] / s`` (``s = blobs[2][0]``, 0 gives
zeros), ``std = sqrt(var + eps)``, ``g``/``beta`` the Scale's blobs (1 and 0
without a Scale or its bias).  A layer without a bias gets one.  The BatchNorm
and Scale layers then leave the net (its ``records``).

It is opt-in because it changes what the net exposes:

* the folded layer's top blob holds the post-BatchNorm (post-Scale) values;
  when the chain was not in place, the intermediate blob names stay in
  ``net.blobs`` as aliases of the chain's final blob (same Blob object), and
  the folded layer's top is renamed to the final blob;
* the BatchNorm/Scale layers are gone from ``layers``, ``layer_names``,
  ``layer_dict`` and ``params``;
* the net becomes inference-only: ``backward_range`` (and so ``backward`` and
  ``forward_backward``) raises :class:`~pycaffe_lite.errors.NetError`.

Only exact rewrites are made.  A chain is skipped, with a log line, when the
BatchNorm computes batch statistics, when the Scale has two bottoms or another
shape, when an intermediate value is read by any other layer (a Split after the
convolution: its top has a second consumer), when the convolution has several
bottoms or is a Deconvolution / binary variant, or when a parameter is shared
with another layer.  A skipped chain is left exactly as it was.
"""
import collections
import logging

import numpy

from .backend import get_array_module, to_numpy

log = logging.getLogger("pycaffe_lite")

FOLDABLE = ("Convolution", "InnerProduct")


def _readers(net, name, after):
    """Indices of layers after ``after`` that read blob ``name``."""
    return [m for m in range(after + 1, len(net.records)) if name in net.records[m].bottoms]


def _last_writer(net, name, before):
    found = None
    for m in range(before):
        if name in net.records[m].tops:
            found = m
    return found


def _shared_param_names(net):
    counts = collections.Counter()
    for record in net.records:
        for spec in record.layer.param.param:
            if spec.name:
                counts[spec.name] += 1
    return {name for name, count in counts.items() if count > 1}


def _channel_check(net, p, bn):
    """Why the producer ``p`` cannot be folded with ``bn`` (None: it can)."""
    producer = net.records[p]
    layer, name = producer.layer, producer.name
    if len(producer.bottoms) != 1 or len(producer.tops) != 1:
        return f"'{name}' has several bottoms/tops"
    if producer.tops[0] in producer.bottoms:
        return f"'{name}' runs in place"
    if layer.type == "Convolution":
        if layer.channel_axis != 1:
            return f"'{name}' has channel axis {layer.channel_axis}"
    elif layer.axis != 1:
        return f"'{name}' has inner_product_param.axis {layer.axis}"
    if bn.channels != layer.num_output:
        return f"BatchNorm has {bn.channels} channels, '{name}' {layer.num_output} outputs"
    return None


def _find_chain(net, j, shared):
    """``(chain layer indices, None)`` for the BatchNorm at ``j``, or ``(None, reason)``."""
    records = net.records
    bn = records[j].layer
    if not bn.use_global_stats:
        return None, "it computes batch statistics (use_global_stats false)"
    if len(records[j].bottoms) != 1:
        return None, "it has several bottoms"
    p = _last_writer(net, records[j].bottoms[0], j)
    if p is None:
        return None, "its bottom is a net input"
    if records[p].layer.type not in FOLDABLE:
        kind = records[p].layer.type
        if kind == "Split":
            return None, (f"its bottom comes from Split '{records[p].name}' (the producer's "
                          "top has other consumers)")
        return None, f"its bottom comes from a {kind} layer ('{records[p].name}')"
    reason = _channel_check(net, p, bn)
    if reason:
        return None, reason
    chain = [p, j]
    readers = _readers(net, records[j].tops[0], j)
    if readers and records[readers[0]].layer.type == "Scale":
        k = readers[0]
        scale = records[k].layer
        sp = scale.param.scale_param
        ndim = records[j].top_blobs[0].num_axes
        if len(records[k].bottoms) != 1:
            return None, f"the Scale '{records[k].name}' after it has two bottoms"
        if records[k].bottoms[0] != records[j].tops[0]:
            return None, f"the Scale '{records[k].name}' reads it as a second bottom"
        if sp.axis not in (1, 1 - ndim) or sp.num_axes != 1 or \
                tuple(scale.blobs[0].shape) != (bn.channels,):
            return None, (f"the Scale '{records[k].name}' after it is not per channel "
                          "(axis 1, num_axes 1)")
        chain.append(k)
    # Every other reader of a chain blob must read the chain's final value.
    final = records[chain[-1]].tops[0]
    for c in chain:
        for blob in records[c].tops:
            for m in _readers(net, blob, p):
                if m in chain:
                    continue
                if m < chain[-1] or blob != final:
                    return None, (f"layer '{records[m].name}' reads the intermediate blob "
                                  f"'{blob}'")
            if blob != final and blob in net.output_names:
                return None, f"the intermediate blob '{blob}' is a net output"
    for c in chain:
        for spec in records[c].layer.param.param:
            if spec.name in shared:
                return None, f"layer '{records[c].name}' shares param '{spec.name}'"
    return chain, None


def _fold(net, chain):
    """Fold the BatchNorm (and Scale) of ``chain`` into its first layer's params."""
    records = [net.records[c] for c in chain]
    layer, bn = records[0].layer, records[1].layer
    scale = records[2].layer if len(records) > 2 else None
    stats = [to_numpy(blob.data).astype(numpy.float64) for blob in bn.blobs]
    s = stats[2].reshape(-1)[0]
    factor = 0.0 if s == 0 else 1.0 / s
    mean, var = stats[0] * factor, stats[1] * factor
    std = numpy.sqrt(var + bn.eps)
    gamma = numpy.ones_like(std)
    beta = numpy.zeros_like(std)
    if scale is not None:
        gamma = to_numpy(scale.blobs[0].data).astype(numpy.float64).reshape(-1)
        if scale.param.scale_param.bias_term:
            beta = to_numpy(scale.blobs[1].data).astype(numpy.float64).reshape(-1)
    f = gamma / std
    weight = layer.blobs[0]
    w = to_numpy(weight.data).astype(numpy.float64)
    out_axis = 1 if layer.type == "InnerProduct" and layer.transpose else 0
    shape = [1] * w.ndim
    shape[out_axis] = -1
    w = w * f.reshape(shape)
    if layer.bias_term:
        b = to_numpy(layer.blobs[1].data).astype(numpy.float64)
    else:
        b = numpy.zeros_like(f)
        net.add_param(chain[0], layer.make_blob((layer.num_output,)))
        net.freeze_param(chain[0], 1)       # the folded net is inference-only
        layer.bias_term = True
        field = "convolution_param" if layer.type == "Convolution" else "inner_product_param"
        getattr(layer.param, field).bias_term = True
    b = (b - mean) * f + beta
    xp = get_array_module(weight.data)
    weight.data[...] = xp.asarray(w.astype(weight.dtype))
    layer.blobs[1].data[...] = xp.asarray(b.astype(layer.blobs[1].dtype))
    # The folded layer now writes the chain's final blob; older names alias it.
    final, final_blob = records[-1].tops[0], records[-1].top_blobs[0]
    for record in records:
        for blob in record.tops:
            net.blobs[blob] = final_blob
    records[0].tops = [final]
    records[0].top_blobs = [final_blob]
    layer.param.top[0] = final


def fold_batchnorm(net):
    """Fold BatchNorm (+ Scale) into the preceding Convolution/InnerProduct of ``net``.

    Returns the folded chains as ``[(layer, batchnorm, scale or None)]`` names.
    Changes ``net`` in place (see the module docstring); when anything was
    folded the net is inference-only from then on.
    """
    shared = _shared_param_names(net)
    folded, removed = [], []
    for j, record in enumerate(net.records):
        if record.layer.type != "BatchNorm":
            continue
        chain, reason = _find_chain(net, j, shared)
        if chain is None:
            log.info("fold_batchnorm: not folding BatchNorm '%s': %s", record.name, reason)
            continue
        names = [net.records[c].name for c in chain]
        _fold(net, chain)
        removed.extend(chain[1:])
        folded.append((names[0], names[1], names[2] if len(names) > 2 else None))
        log.info("fold_batchnorm: folded %s into '%s'",
                 " + ".join(f"'{n}'" for n in names[1:]), names[0])
    if folded:
        net.remove_layers(removed)
        net.set_inference_only("BatchNorm was folded into its convolutions (fold_batchnorm); "
                               "build a fresh Net to train or compute gradients")
    log.info("fold_batchnorm: folded %d BatchNorm layer(s), %d layers left", len(folded),
             len(net.layers))
    return folded
