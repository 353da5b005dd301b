"""Every golden case of the real Caffe: end to end through the Net, and layer by layer.

On every backend (NumPy; CuPy when a GPU is usable, else skipped with the reason),
compared on the host.  Forward within 1e-5 and backward within 1e-4 of each array's
largest value; quantised outputs, arrays Caffe itself does not reproduce and
rounding-noise gradients have measures of their own; every allowance, and where the
BLAS kernels' spread makes it wider, is in ``allowance.py``.
"""
import pytest

from allowance import KINKS
from golden import (Case, cases, check_close, check_param_diff, check_quantised,
                    check_same_direction, is_rounding_noise)
from pycaffe_lite.blob import Blob
from pycaffe_lite.net import Net

CASES = [("layers", c["name"]) for c in cases("layers")] + [
    ("nets", c["name"]) for c in cases("nets")]


def load(kind, name):
    return Case(kind, name)


def kink_regions(case, net):
    """For a case with a kink (allowance.KINKS): the layers from the kink layer on, the
    blobs they write, and the blobs first written there; empty sets otherwise."""
    kink = KINKS.get(case.name)
    if kink is None:
        return set(), set(), set()
    start = net.layer_names.index(kink)
    before = {t for r in net.records[:start] for t in r.tops}
    after = net.records[start:]
    written = {t for r in after for t in r.tops}
    return {r.name for r in after}, written, written - before


def check_forward(case, stage, blob, ours, golden, what, kinked=False):
    quantity = "kink forward" if kinked else f"{stage} forward"
    if blob in case.quantised_blobs():
        check_quantised(case.name, quantity, ours, golden, what)
    else:
        check_close(case.name, quantity, ours, golden, what)


def check_backward_end_to_end(case, kind, name, ours, what, top_diffs=(), after_kink=None):
    """``after_kink``: None without a kink, else whether the array comes after it."""
    golden = case.get(kind, name)
    if case.irreproducible(kind, name):
        check_same_direction(case.name, "irreproducible cosine", ours, golden, what)
    elif after_kink is False and not is_rounding_noise(golden, top_diffs)[0]:
        check_same_direction(case.name, "kink cosine", ours, golden, what)
    else:
        check_param_diff(case.name, "kink backward" if after_kink else "end-to-end backward",
                         ours, golden, what, top_diffs)


def build(case, xp):
    net = Net(str(case.dir / "net.prototxt"), phase=case.phase,
              weights=str(case.dir / "weights.caffemodel"), xp=xp)
    for name in case.keys("input"):
        net.blobs[name].reshape(case.get("input", name).shape)
        net.blobs[name].data[...] = xp.asarray(case.get("input", name))
    return net


def run_backward(net, case, xp):
    net.clear_param_diffs()
    for name in case.keys("top_diff"):
        net.blobs[name].diff[...] = xp.asarray(case.get("top_diff", name))
    net.backward_range()


@pytest.mark.parametrize("kind,name", CASES, ids=[n for _, n in CASES])
def test_end_to_end(kind, name, xp, monkeypatch):
    case = load(kind, name)
    monkeypatch.chdir(case.dir)  # relative paths in a prototxt resolve from the cwd
    net = build(case, xp)
    net.forward_range()
    kink_layers, kink_written, kink_produced = kink_regions(case, net)
    kinked = case.name in KINKS
    for blob in case.keys("blob"):
        check_forward(case, "end-to-end", blob, net.blobs[blob].data, case.get("blob", blob),
                      f"blob '{blob}'", kinked=blob in kink_written)
    if not case.meta["backward"]:
        return
    run_backward(net, case, xp)
    for blob in case.keys("diff"):
        check_backward_end_to_end(case, "diff", blob, net.blobs[blob].diff, f"diff '{blob}'",
                                  after_kink=blob in kink_produced if kinked else None)
    for key in case.keys("param_diff"):
        layer, i = key.rsplit("/", 1)
        tops = net.records[net.layer_names.index(layer)].tops
        check_backward_end_to_end(case, "param_diff", key, net.params[layer][int(i)].diff,
                                  f"param diff {key}", [case.get("diff", t) for t in tops],
                                  after_kink=layer in kink_layers if kinked else None)
    for key in case.keys("param"):
        layer, i = key.rsplit("/", 1)
        check_close(case.name, "kink forward" if layer in kink_layers else "end-to-end param",
                    net.params[layer][int(i)].data, case.get("param", key), f"param {key}")


def _golden_io(case, net):
    """Per layer: the golden arrays it reads and writes (golden README's rules)."""
    in_place = [set(b for b, t in zip(r.bottoms, r.tops) if b == t)
                for r in net.records]

    def next_in_place(i, x):
        for m in range(i + 1, len(net.layers)):
            if x in in_place[m]:
                return net.layer_names[m]
        return None

    def prev_in_place(i, x):
        for m in range(i - 1, -1, -1):
            if x in in_place[m]:
                return net.layer_names[m]
        return None

    for i, layer in enumerate(net.layers):
        name = net.layer_names[i]
        bottom_data, top_data, top_diff, bottom_diff = [], [], [], []
        for x in net.records[i].bottoms:
            after = next_in_place(i, x)
            if x in in_place[i]:
                bottom_data.append(case.get("inplace_in", name))
            elif after:
                bottom_data.append(case.get("inplace_in", after))
            else:
                bottom_data.append(case.get("blob", x))
            before = prev_in_place(i, x)
            bottom_diff.append(case.get("inplace_top_diff", before) if before
                               else case.get("diff", x))
        for x in net.records[i].tops:
            after = next_in_place(i, x)
            top_data.append(case.get("inplace_in", after) if after else case.get("blob", x))
            top_diff.append(case.get("inplace_top_diff", name) if x in in_place[i]
                            else case.get("diff", x))
        yield i, name, layer, bottom_data, top_data, top_diff, bottom_diff


@pytest.mark.parametrize("kind,name", CASES, ids=[n for _, n in CASES])
def test_layer_by_layer(kind, name, xp, monkeypatch):
    case = load(kind, name)
    monkeypatch.chdir(case.dir)
    net = build(case, xp)
    for i, lname, layer, bottom_data, top_data, top_diff, bottom_diff in _golden_io(case, net):
        if layer.type == "Input":
            continue
        blobs = {}
        bottom = []
        for x, data in zip(net.records[i].bottoms, bottom_data):
            blob = blobs.setdefault(x, Blob(data.shape, xp=xp))
            blob.data[...] = xp.asarray(data)
            bottom.append(blob)
        top = [blobs.setdefault(x, Blob(xp=xp)) for x in net.records[i].tops]
        if case.meta["phase"] == "TRAIN" and layer.type == "BatchNorm":
            # batch-statistics mode updates the stored statistics: start from the file's
            for k, blob in enumerate(layer.blobs):
                blob.data[...] = xp.asarray(net_weights(case)[lname][k])
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        for x, blob, want in zip(net.records[i].tops, top, top_data):
            check_forward(case, "layer-by-layer", x, blob.data, want,
                          f"layer '{lname}' top '{x}'")
        if not case.meta["backward"] or not net.records[i].need_backward:
            continue
        for blob, diff in zip(top, top_diff):
            blob.diff[...] = xp.asarray(diff)
        for p in layer.blobs:
            p.diff[...] = 0
        layer.backward(top, net.records[i].bottom_need_backward, bottom)
        for x, blob, need, want in zip(net.records[i].bottoms, bottom,
                                       net.records[i].bottom_need_backward, bottom_diff):
            if need:
                check_close(case.name, "layer-by-layer backward", blob.diff, want,
                            f"layer '{lname}' bottom diff '{x}'")
        for k, p in enumerate(layer.blobs):
            want = case.get("param_diff", f"{lname}/{k}")
            if want is not None and not net.param_frozen(i, k):
                check_param_diff(case.name, "layer-by-layer backward", p.diff, want,
                                 f"layer '{lname}' param diff {k}", top_diff)


_weights_cache = {}


def net_weights(case):
    if case.dir not in _weights_cache:
        from pycaffe_lite.io import files
        proto = files.read_weights(str(case.dir / "weights.caffemodel"))
        _weights_cache[case.dir] = {
            lp.name: [files.blob_proto_to_array(b) for b in lp.blobs] for lp in proto.layer}
    return _weights_cache[case.dir]
