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
and Scale layers then leave the net's execution lists.

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
    return [m for m in range(after + 1, len(net.layers)) if name in net.layer_bottoms[m]]


def _last_writer(net, name, before):
    found = None
    for m in range(before):
        if name in net.layer_tops[m]:
            found = m
    return found


def _shared_param_names(net):
    counts = collections.Counter()
    for layer in net.layers:
        for spec in layer.param.param:
            if spec.name:
                counts[spec.name] += 1
    return {name for name, count in counts.items() if count > 1}


def _channel_check(net, p, bn):
    """Why the producer ``p`` cannot be folded with ``bn`` (None: it can)."""
    layer = net.layers[p]
    if len(net.layer_bottoms[p]) != 1 or len(net.layer_tops[p]) != 1:
        return f"'{net.layer_names[p]}' has several bottoms/tops"
    if net.layer_tops[p][0] in net.layer_bottoms[p]:
        return f"'{net.layer_names[p]}' runs in place"
    if layer.type == "Convolution":
        if layer.channel_axis != 1:
            return f"'{net.layer_names[p]}' has channel axis {layer.channel_axis}"
    elif layer.axis != 1:
        return f"'{net.layer_names[p]}' has inner_product_param.axis {layer.axis}"
    if bn.channels != layer.num_output:
        return (f"BatchNorm has {bn.channels} channels, '{net.layer_names[p]}' "
                f"{layer.num_output} outputs")
    return None


def _find_chain(net, j, shared):
    """``(chain layer indices, None)`` for the BatchNorm at ``j``, or ``(None, reason)``."""
    bn = net.layers[j]
    if not bn.use_global_stats:
        return None, "it computes batch statistics (use_global_stats false)"
    if len(net.layer_bottoms[j]) != 1:
        return None, "it has several bottoms"
    p = _last_writer(net, net.layer_bottoms[j][0], j)
    if p is None:
        return None, "its bottom is a net input"
    if net.layers[p].type not in FOLDABLE:
        kind = net.layers[p].type
        if kind == "Split":
            return None, (f"its bottom comes from Split '{net.layer_names[p]}' (the producer's "
                          "top has other consumers)")
        return None, f"its bottom comes from a {kind} layer ('{net.layer_names[p]}')"
    reason = _channel_check(net, p, bn)
    if reason:
        return None, reason
    chain = [p, j]
    readers = _readers(net, net.layer_tops[j][0], j)
    if readers and net.layers[readers[0]].type == "Scale":
        k = readers[0]
        scale = net.layers[k]
        sp = scale.param.scale_param
        ndim = net.top_vecs[j][0].num_axes
        if len(net.layer_bottoms[k]) != 1:
            return None, f"the Scale '{net.layer_names[k]}' after it has two bottoms"
        if net.layer_bottoms[k][0] != net.layer_tops[j][0]:
            return None, f"the Scale '{net.layer_names[k]}' reads it as a second bottom"
        if sp.axis not in (1, 1 - ndim) or sp.num_axes != 1 or \
                tuple(scale.blobs[0].shape) != (bn.channels,):
            return None, (f"the Scale '{net.layer_names[k]}' after it is not per channel "
                          "(axis 1, num_axes 1)")
        chain.append(k)
    # Every other reader of a chain blob must read the chain's final value.
    final = net.layer_tops[chain[-1]][0]
    for c in chain:
        for blob in net.layer_tops[c]:
            for m in _readers(net, blob, p):
                if m in chain:
                    continue
                if m < chain[-1] or blob != final:
                    return None, (f"layer '{net.layer_names[m]}' reads the intermediate blob "
                                  f"'{blob}'")
            if blob != final and blob in net.output_names:
                return None, f"the intermediate blob '{blob}' is a net output"
    for c in chain:
        for spec in net.layers[c].param.param:
            if spec.name in shared:
                return None, f"layer '{net.layer_names[c]}' shares param '{spec.name}'"
    return chain, None


def _fold(net, chain):
    """Fold the BatchNorm (and Scale) of ``chain`` into its first layer's params."""
    layer, bn = net.layers[chain[0]], net.layers[chain[1]]
    scale = net.layers[chain[2]] if len(chain) > 2 else None
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
        layer.blobs.append(layer.make_blob((layer.num_output,)))
        layer.bias_term = True
        field = "convolution_param" if layer.type == "Convolution" else "inner_product_param"
        getattr(layer.param, field).bias_term = True
        net.learnable_params.append(layer.blobs[1])
        net.param_specs.append((1.0, 1.0))
        net._frozen_params[chain[0]].append(1)
        layer.param_propagate_down = list(layer.param_propagate_down) + [False]
    b = (b - mean) * f + beta
    xp = get_array_module(weight.data)
    weight.data[...] = xp.asarray(w.astype(weight.dtype))
    layer.blobs[1].data[...] = xp.asarray(b.astype(layer.blobs[1].dtype))
    # The folded layer now writes the chain's final blob; older names alias it.
    p = chain[0]
    final = net.layer_tops[chain[-1]][0]
    final_blob = net.top_vecs[chain[-1]][0]
    for c in chain:
        for blob in net.layer_tops[c]:
            net.blobs[blob] = final_blob
    net.layer_tops[p] = [final]
    net.top_vecs[p] = [final_blob]
    layer.param.top[0] = final


def _remove_layers(net, removed):
    removed = sorted(set(removed))
    gone = set(removed)
    dropped = {id(blob) for i in removed for blob in net.layers[i].blobs}
    keep = [i for i in range(len(net.layers)) if i not in gone]
    for attr in ("layers", "layer_names", "bottom_vecs", "top_vecs", "layer_bottoms",
                 "layer_tops", "bottom_need_backward", "layer_need_backward",
                 "_frozen_params"):
        values = getattr(net, attr)
        setattr(net, attr, [values[i] for i in keep])
    pairs = [(blob, spec) for blob, spec in zip(net.learnable_params, net.param_specs)
             if id(blob) not in dropped]
    net.learnable_params = [blob for blob, _ in pairs]
    net.param_specs = [spec for _, spec in pairs]
    net.param_owner = {name: (keep.index(li), pi) for name, (li, pi) in net.param_owner.items()
                       if li in keep}
    net.layer_dict = collections.OrderedDict(zip(net.layer_names, net.layers))
    net.params = collections.OrderedDict(
        (name, layer.blobs) for name, layer in zip(net.layer_names, net.layers) if layer.blobs)


def fold_batchnorm(net):
    """Fold BatchNorm (+ Scale) into the preceding Convolution/InnerProduct of ``net``.

    Returns the folded chains as ``[(layer, batchnorm, scale or None)]`` names.
    Changes ``net`` in place (see the module docstring); when anything was
    folded the net is inference-only from then on.
    """
    shared = _shared_param_names(net)
    folded, removed = [], []
    for j, layer in enumerate(net.layers):
        if layer.type != "BatchNorm":
            continue
        chain, reason = _find_chain(net, j, shared)
        if chain is None:
            log.info("fold_batchnorm: not folding BatchNorm '%s': %s", net.layer_names[j],
                     reason)
            continue
        names = [net.layer_names[c] for c in chain]
        _fold(net, chain)
        removed.extend(chain[1:])
        folded.append((names[0], names[1], names[2] if len(names) > 2 else None))
        log.info("fold_batchnorm: folded %s into '%s'",
                 " + ".join(f"'{n}'" for n in names[1:]), names[0])
    if folded:
        _remove_layers(net, removed)
        net.inference_only = ("BatchNorm was folded into its convolutions (fold_batchnorm); "
                              "build a fresh Net to train or compute gradients")
    log.info("fold_batchnorm: folded %d BatchNorm layer(s), %d layers left", len(folded),
             len(net.layers))
    return folded
