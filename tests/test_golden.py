"""Every golden case of the real Caffe: end to end through the Net, and layer by layer.

Forward within 1e-5 and backward within 1e-4 of each array's largest value.
Quant outputs: at most 0.1% of elements may sit one level apart.  End-to-end
backward: arrays that Caffe's own rerun could not reproduce
(``meta.repeat_run.differing_arrays``) need only a cosine >= 0.95.
"""
import pytest

from golden import (Case, assert_close, assert_param_diff_close, assert_quantised_close,
                    assert_same_direction, cases)
from pycaffe_lite.blob import Blob
from pycaffe_lite.net import Net

FWD, BWD = 1e-5, 1e-4
CASES = [("layers", c["name"]) for c in cases("layers")] + [
    ("nets", c["name"]) for c in cases("nets")]


def load(kind, name):
    return Case(kind, name)


def assert_forward(case, blob, ours, golden, what):
    if blob in case.quantised_blobs():
        assert_quantised_close(ours, golden, FWD, what)
    else:
        assert_close(ours, golden, FWD, what)


def assert_backward_end_to_end(case, kind, name, ours, what, top_diffs=()):
    golden = case.get(kind, name)
    if case.irreproducible(kind, name):
        assert_same_direction(ours, golden, what)
    else:
        assert_param_diff_close(ours, golden, BWD, what, top_diffs)


def build(case):
    net = Net(str(case.dir / "net.prototxt"), phase=case.phase,
              weights=str(case.dir / "weights.caffemodel"))
    for name in case.keys("input"):
        net.blobs[name].reshape(case.get("input", name).shape)
        net.blobs[name].data[...] = case.get("input", name)
    return net


def run_backward(net, case):
    net.clear_param_diffs()
    for name in case.keys("top_diff"):
        net.blobs[name].diff[...] = case.get("top_diff", name)
    net.backward_range()


@pytest.mark.parametrize("kind,name", CASES, ids=[n for _, n in CASES])
def test_end_to_end(kind, name, monkeypatch):
    case = load(kind, name)
    monkeypatch.chdir(case.dir)  # relative paths in a prototxt resolve from the cwd
    net = build(case)
    net.forward_range()
    for blob in case.keys("blob"):
        assert_forward(case, blob, net.blobs[blob].data, case.get("blob", blob), f"blob '{blob}'")
    if not case.meta["backward"]:
        return
    run_backward(net, case)
    for blob in case.keys("diff"):
        assert_backward_end_to_end(case, "diff", blob, net.blobs[blob].diff, f"diff '{blob}'")
    for key in case.keys("param_diff"):
        layer, i = key.rsplit("/", 1)
        tops = net.records[net.layer_names.index(layer)].tops
        assert_backward_end_to_end(case, "param_diff", key, net.params[layer][int(i)].diff,
                                   f"param diff {key}", [case.get("diff", t) for t in tops])
    for key in case.keys("param"):
        layer, i = key.rsplit("/", 1)
        assert_close(net.params[layer][int(i)].data, case.get("param", key), FWD,
                     f"param {key}")


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
def test_layer_by_layer(kind, name, monkeypatch):
    case = load(kind, name)
    monkeypatch.chdir(case.dir)
    net = build(case)
    for i, lname, layer, bottom_data, top_data, top_diff, bottom_diff in _golden_io(case, net):
        if layer.type == "Input":
            continue
        blobs = {}
        bottom = []
        for x, data in zip(net.records[i].bottoms, bottom_data):
            blob = blobs.setdefault(x, Blob(data.shape))
            blob.data[...] = data
            bottom.append(blob)
        top = [blobs.setdefault(x, Blob()) for x in net.records[i].tops]
        if case.meta["phase"] == "TRAIN" and layer.type == "BatchNorm":
            # batch-statistics mode updates the stored statistics: start from the file's
            for k, blob in enumerate(layer.blobs):
                blob.data[...] = net_weights(case)[lname][k]
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        for x, blob, want in zip(net.records[i].tops, top, top_data):
            assert_forward(case, x, blob.data, want, f"layer '{lname}' top '{x}'")
        if not case.meta["backward"] or not net.records[i].need_backward:
            continue
        for blob, diff in zip(top, top_diff):
            blob.diff[...] = diff
        for p in layer.blobs:
            p.diff[...] = 0
        layer.backward(top, net.records[i].bottom_need_backward, bottom)
        for x, blob, need, want in zip(net.records[i].bottoms, bottom,
                                       net.records[i].bottom_need_backward, bottom_diff):
            if need:
                assert_close(blob.diff, want, BWD, f"layer '{lname}' bottom diff '{x}'")
        for k, p in enumerate(layer.blobs):
            want = case.get("param_diff", f"{lname}/{k}")
            if want is not None and not net.param_frozen(i, k):
                assert_param_diff_close(p.diff, want, BWD, f"layer '{lname}' param diff {k}",
                                        top_diff)


_weights_cache = {}


def net_weights(case):
    if case.dir not in _weights_cache:
        from pycaffe_lite.io import files
        proto = files.read_weights(str(case.dir / "weights.caffemodel"))
        _weights_cache[case.dir] = {
            lp.name: [files.blob_proto_to_array(b) for b in lp.blobs] for lp in proto.layer}
    return _weights_cache[case.dir]
