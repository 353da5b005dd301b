"""fold_batchnorm: folded nets compute what the unfolded ones compute.

Real models (RetinaFace mnet0.25, yoloface-50k, landmark106) and small
hand-written nets; patterns that cannot be folded exactly leave the net as it was.
"""
import numpy
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.errors import NetError
from pycaffe_lite.fuse import fold_batchnorm

from test_models import MODELS, fixture, image, nchw, relative_error, retinaface_input

RTOL = 1e-4


def run(net, inputs):
    for name, value in inputs.items():
        net.blobs[name].reshape(*value.shape)
    net.reshape()
    return {name: numpy.array(value) for name, value in net.forward(**inputs).items()}


def check_folded(proto, weights, inputs, expect_folds):
    plain = caffe.Net(str(proto), caffe.TEST, weights=str(weights))
    folded = caffe.Net(str(proto), caffe.TEST, weights=str(weights))
    count = len(folded.layers)
    chains = fold_batchnorm(folded)
    assert len(chains) == expect_folds
    assert len(folded.layers) == count - sum(1 + (s is not None) for _, _, s in chains)
    assert not any(layer.type in ("BatchNorm",) for layer in folded.layers)
    want, got = run(plain, inputs), run(folded, inputs)
    assert set(got) == set(want)
    for name in want:
        assert relative_error(got[name], want[name]) < RTOL, name
    with pytest.raises(NetError, match="inference-only"):
        folded.backward()
    return chains


def test_retinaface_folded_matches_unfolded():
    proto = fixture("models", "retinaface_mnet25_bn", "mnet.prototxt")
    check_folded(proto, MODELS / "retinaface_mnet25_bn" / "mnet.caffemodel",
                 {"data": retinaface_input(320, 240)}, 47)


def test_yoloface50k_folded_matches_unfolded():
    proto = fixture("models", "yoloface50k_landmark106_bn", "yoloface-50k.prototxt")
    import cv2
    img = image("models", "yoloface50k_landmark106_bn", "test.jpeg")
    data = nchw(cv2.resize(img, (56, 56), interpolation=cv2.INTER_AREA)) / numpy.float32(255)
    check_folded(proto, MODELS / "yoloface50k_landmark106_bn" / "yoloface-50k.caffemodel",
                 {"data": data}, 23)


def test_landmark106_folded_matches_unfolded():
    proto = fixture("models", "yoloface50k_landmark106_bn", "landmark106.prototxt")
    data = numpy.random.default_rng(0).uniform(0, 1, (1, 3, 112, 112)).astype(numpy.float32)
    check_folded(proto, MODELS / "yoloface50k_landmark106_bn" / "landmark106.caffemodel",
                 {"data": data}, 38)


# --- hand-written nets -----------------------------------------------------------------

HEAD = 'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 ' \
       'dim: 6 dim: 5 } } }\n'


def conv(name, bottom, top, bias=True, out=4):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}" '
            f'convolution_param {{ num_output: {out} kernel_size: 3 pad: 1 '
            f'bias_term: {"true" if bias else "false"} }} }}\n')


def bn(name, bottom, top, global_stats=None):
    extra = "" if global_stats is None else \
        f'batch_norm_param {{ use_global_stats: {"true" if global_stats else "false"} }}'
    return f'layer {{ name: "{name}" type: "BatchNorm" bottom: "{bottom}" top: "{top}" {extra} }}\n'


def scale(name, bottom, top, bias=True):
    return (f'layer {{ name: "{name}" type: "Scale" bottom: "{bottom}" top: "{top}" '
            f'scale_param {{ bias_term: {"true" if bias else "false"} }} }}\n')


def layer(name, kind, bottoms, top):
    return (f'layer {{ name: "{name}" type: "{kind}" '
            + " ".join(f'bottom: "{b}"' for b in bottoms) + f' top: "{top}" }}\n')


def make_net(tmp_path, text, seed=0):
    """A TEST net from ``text`` with random params (positive BN variances and scale)."""
    path = tmp_path / "net.prototxt"
    path.write_text(HEAD + text)
    net = caffe.Net(str(path), caffe.TEST)
    rng = numpy.random.default_rng(seed)
    for layer_obj in net.layers:
        for k, blob in enumerate(layer_obj.blobs):
            values = rng.normal(0, 1, blob.shape)
            if layer_obj.type == "BatchNorm":
                values = [rng.normal(0, 1, blob.shape) * 3, rng.uniform(0.5, 2, blob.shape) * 3,
                          numpy.full(blob.shape, 3.0)][k]
            blob.data[...] = values
    weights = tmp_path / "net.caffemodel"
    net.save(str(weights))
    return str(path), str(weights)


def compare(tmp_path, text, folds):
    proto, weights = make_net(tmp_path, text)
    data = numpy.random.default_rng(5).normal(0, 1, (2, 3, 6, 5)).astype(numpy.float32)
    plain = caffe.Net(proto, caffe.TEST, weights=weights)
    folded = caffe.Net(proto, caffe.TEST, weights=weights)
    chains = fold_batchnorm(folded)
    assert chains == folds
    want, got = run(plain, {"data": data}), run(folded, {"data": data})
    assert set(got) == set(want)
    for name in want:
        assert relative_error(got[name], want[name]) < 1e-5, name
    return plain, folded


def test_in_place_conv_bn_scale(tmp_path):
    text = (conv("c1", "data", "c1") + bn("bn1", "c1", "c1") + scale("s1", "c1", "c1")
            + layer("r1", "ReLU", ["c1"], "c1") + conv("c2", "c1", "c2", bias=False, out=2)
            + bn("bn2", "c2", "c2") + scale("s2", "c2", "c2", bias=False))
    plain, folded = compare(tmp_path, text, [("c1", "bn1", "s1"), ("c2", "bn2", "s2")])
    assert folded.layer_names == ["in", "c1", "r1", "c2"]
    assert len(folded.params["c2"]) == 2 and folded.layers[-1].bias_term    # bias added
    assert "bias_term: true" in str(folded.to_proto().layer[-1])


def test_not_in_place_conv_bn(tmp_path):
    text = (conv("c1", "data", "c1") + bn("bn1", "c1", "b1") + layer("r1", "ReLU", ["b1"], "r1")
            + conv("c2", "r1", "c2", bias=False) + bn("bn2", "c2", "b2")
            + scale("s2", "b2", "s2") + layer("p", "TanH", ["s2"], "out"))
    plain, folded = compare(tmp_path, text, [("c1", "bn1", None), ("c2", "bn2", "s2")])
    assert folded.layer_names == ["in", "c1", "r1", "c2", "p"]
    assert folded.top_names["c1"] == ["b1"] and folded.top_names["c2"] == ["s2"]
    # The old names alias the folded output (now post-BN values).
    assert folded.blobs["c1"] is folded.blobs["b1"]
    assert folded.blobs["c2"] is folded.blobs["b2"] is folded.blobs["s2"]
    assert folded.bottom_names["r1"] == ["b1"]
    assert folded.records[2].bottom_blobs[0] is folded.blobs["b1"]


def test_inner_product_bn(tmp_path):
    text = (layer("f", "Flatten", ["data"], "flat")
            + 'layer { name: "ip" type: "InnerProduct" bottom: "flat" top: "ip" '
              'inner_product_param { num_output: 5 } }\n'
            + bn("bn", "ip", "ip") + scale("s", "ip", "ip"))
    compare(tmp_path, text, [("ip", "bn", "s")])


def test_post_bn_value_with_two_consumers_folds_bn_only(tmp_path):
    # BN's top feeds a Scale and an Eltwise (a Split): conv + BN fold, the Scale stays.
    text = (conv("c1", "data", "c1") + bn("bn1", "c1", "c1") + scale("s1", "c1", "s1")
            + layer("e", "Eltwise", ["c1", "s1"], "e"))
    _, folded = compare(tmp_path, text, [("c1", "bn1", None)])
    assert "s1" in folded.layer_names


def snapshot(net):
    return (list(net.layer_names), [list(r.tops) for r in net.records],
            [[numpy.array(b.data) for b in layer_obj.blobs] for layer_obj in net.layers])


@pytest.mark.parametrize("text", [
    # batch statistics
    conv("c1", "data", "c1") + bn("bn1", "c1", "c1", global_stats=False) + scale("s1", "c1", "c1"),
    # Scale with two bottoms
    conv("c1", "data", "c1") + conv("c0", "data", "c0") + bn("bn1", "c1", "c1")
    + 'layer { name: "s1" type: "Scale" bottom: "c1" bottom: "c0" top: "c1" '
      'scale_param { axis: 0 } }\n',
    # the conv top has a second consumer
    conv("c1", "data", "c1") + bn("bn1", "c1", "b1") + layer("r", "ReLU", ["c1"], "r"),
    # a Deconvolution (weights laid out [C, M, k]) is not folded
    'layer { name: "d" type: "Deconvolution" bottom: "data" top: "d" '
    'convolution_param { num_output: 4 kernel_size: 3 } }\n' + bn("bn1", "d", "d"),
])
def test_refusals_leave_the_net_unchanged(tmp_path, text):
    proto, weights = make_net(tmp_path, text)
    data = numpy.random.default_rng(5).normal(0, 1, (2, 3, 6, 5)).astype(numpy.float32)
    plain = caffe.Net(proto, caffe.TEST, weights=weights)
    net = caffe.Net(proto, caffe.TEST, weights=weights)
    before = snapshot(net)
    assert fold_batchnorm(net) == []
    after = snapshot(net)
    assert before[:2] == after[:2]
    for a, b in zip(before[2], after[2]):
        assert all(numpy.array_equal(x, y) for x, y in zip(a, b))
    want, got = run(plain, {"data": data}), run(net, {"data": data})
    for name in want:
        numpy.testing.assert_array_equal(got[name], want[name])
    net.backward()      # still trainable-shaped: backward works
