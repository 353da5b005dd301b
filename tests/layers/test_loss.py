"""Loss layers and Accuracy: gradients, values against naive references, errors.

The golden cases (accuracy_*, contrastive_loss*, euclidean_loss, hinge_loss_*,
infogain_loss, multinomial_logistic_loss, sigmoid_ce_loss*, swl_*) are run by
tests/test_golden.py; here are the behaviours they do not pin down.
"""
import math

import numpy
import pytest
from google.protobuf import text_format

from pycaffe_lite.backend import to_numpy
from pycaffe_lite.errors import LayerError
from pycaffe_lite.layer import layer_class
from pycaffe_lite.io.files import read_blob
from pycaffe_lite.layers.loss import get_normalizer, normalization_mode
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.testing.gradient_check import check_gradient, make_layer

Mode = caffe_pb2.LossParameter


def rng(seed=0):
    return numpy.random.RandomState(seed)


def named(param, n):
    """``param`` parsed, with bottoms named b0, b1, ... unless it names them."""
    if isinstance(param, str):
        param = text_format.Parse(param, caffe_pb2.LayerParameter())
    if not param.bottom:
        param.bottom.extend(f"b{i}" for i in range(n))
    return param


def build(param, bottoms):
    """Set up the layer (no forward); returns (layer, bottom, top)."""
    return make_layer(named(param, len(bottoms)), bottoms)


def run(param, bottoms, xp=numpy, dtype=numpy.float64, num_tops=None):
    """Set up the layer and run forward; returns (layer, bottom, top)."""
    layer, bottom, top = make_layer(named(param, len(bottoms)), bottoms, dtype=dtype, xp=xp,
                                    num_tops=num_tops)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return layer, bottom, top


def backward(layer, bottom, top, top_diff=1.0):
    """Backward with the diff ``top_diff`` on the loss top, into every bottom that
    may receive a gradient; returns their diffs as NumPy arrays (None elsewhere)."""
    top[0].diff[...] = top_diff
    down = [layer.allow_force_backward(i) for i in range(len(bottom))]
    for b in bottom:
        b.diff[...] = 0
    layer.backward(top, down, bottom)
    return [to_numpy(b.diff) if d else None for b, d in zip(bottom, down)]


def loss_of(top):
    return float(to_numpy(top[0].data))


def labels(rs, shape, k, ignore=None, every=3):
    lab = rs.randint(0, k, size=shape).astype(numpy.float64)
    if ignore is not None:
        lab.reshape(-1)[::every] = ignore
    return lab


def split(shape, axis):
    axis = axis % len(shape)
    return (int(numpy.prod(shape[:axis])), shape[axis], int(numpy.prod(shape[axis + 1:])))


def label_shape(shape, axis):
    """Caffe's label layout: the prediction shape without the class axis."""
    axis = axis % len(shape)
    return shape[:axis] + shape[axis + 1:]


# --- the shared helpers ---------------------------------------------------


@pytest.mark.parametrize("mode, valid, expected", [
    (Mode.FULL, 3, 24.0), (Mode.VALID, 3, 3.0), (Mode.VALID, None, 24.0),
    (Mode.BATCH_SIZE, 3, 4.0), (Mode.NONE, 3, 1.0), (Mode.VALID, 0, 1.0),
])
def test_get_normalizer(mode, valid, expected):
    assert get_normalizer(mode, 4, 6, valid) == expected
    if valid is not None:
        got = get_normalizer(mode, 4, 6, numpy.int64(valid), numpy.float32)
        assert float(got) == expected


def test_get_normalizer_at_least_one():
    assert get_normalizer(Mode.BATCH_SIZE, 0, 5) == 1.0
    assert get_normalizer(Mode.FULL, 0, 0) == 1.0


@pytest.mark.parametrize("text, default, expected", [
    ("", Mode.VALID, Mode.VALID),
    ("", Mode.BATCH_SIZE, Mode.BATCH_SIZE),
    ("normalize: false", Mode.VALID, Mode.BATCH_SIZE),
    ("normalize: true", Mode.BATCH_SIZE, Mode.VALID),
    ("normalize: false normalization: FULL", Mode.VALID, Mode.FULL),
    ("normalization: NONE", Mode.BATCH_SIZE, Mode.NONE),
])
def test_normalization_mode(text, default, expected):
    lp = text_format.Parse(text, caffe_pb2.LossParameter())
    assert normalization_mode(lp, default) == expected


@pytest.mark.parametrize("type_name, alias", [
    ("Accuracy", "ACCURACY"), ("ContrastiveLoss", "CONTRASTIVE_LOSS"),
    ("EuclideanLoss", "EUCLIDEAN_LOSS"), ("HingeLoss", "HINGE_LOSS"),
    ("InfogainLoss", "INFOGAIN_LOSS"), ("MultinomialLogisticLoss", "MULTINOMIAL_LOGISTIC_LOSS"),
    ("SigmoidCrossEntropyLoss", "SIGMOID_CROSS_ENTROPY_LOSS"), ("SoftmaxWithLoss", "SOFTMAX_LOSS"),
])
def test_v1_aliases(type_name, alias):
    assert layer_class(alias) is layer_class(type_name)
    assert layer_class(type_name).type == type_name


# --- Accuracy ---------------------------------------------------------------


def accuracy_ref(x, lab, axis, top_k, ignore):
    outer, k, inner = split(x.shape, axis)
    x = x.reshape(outer, k, inner)
    lab = lab.reshape(outer, inner)
    hits, count = 0, 0
    seen, per_hits = numpy.zeros(k), numpy.zeros(k)
    for i in range(outer):
        for j in range(inner):
            lv = int(lab[i, j])
            if ignore is not None and lv == ignore:
                continue
            better = sum(1 for c in range(k) if c != lv and x[i, c, j] >= x[i, lv, j])
            seen[lv] += 1
            if better < top_k:
                hits += 1
                per_hits[lv] += 1
            count += 1
    per_class = numpy.where(seen > 0, per_hits / numpy.maximum(seen, 1), 0)
    return (hits / count if count else 0.0), per_class


@pytest.mark.parametrize("shape, axis, top_k, ignore", [
    ((7, 5), 1, 1, None),
    ((7, 5), -1, 2, 3),
    ((2, 4, 3, 2), 1, 2, 0),
    ((3, 2, 6), 2, 4, None),
    ((5, 3, 2), 0, 1, 1),
])
def test_accuracy_values(xp, shape, axis, top_k, ignore):
    rs = rng(1)
    x = rs.randint(-3, 4, size=shape).astype(numpy.float64)  # many ties
    outer, k, inner = split(shape, axis)
    lab = labels(rs, (outer * inner,), k, ignore)
    param = (f'type: "Accuracy" top: "a" top: "pc" accuracy_param {{ top_k: {top_k} axis: {axis} '
             + (f"ignore_label: {ignore}" if ignore is not None else "") + " }")
    _, _, top = run(param, [x, lab], xp=xp, dtype=numpy.float32)
    acc, per_class = accuracy_ref(x, lab, axis, top_k, ignore)
    assert top[0].shape == () and top[1].shape == (k,)
    assert abs(loss_of(top) - acc) < 1e-6
    numpy.testing.assert_allclose(to_numpy(top[1].data), per_class, rtol=1e-6)


def test_accuracy_everything_ignored_is_zero():
    _, _, top = run('type: "Accuracy" accuracy_param { ignore_label: 2 }',
                    [numpy.ones((3, 4)), numpy.full(3, 2.0)])
    assert loss_of(top) == 0.0


def test_accuracy_label_truncates_like_static_cast():
    # 1.9 reads as class 1, as static_cast<int> in Caffe.
    x = numpy.array([[0.0, 1.0, 0.5]])
    _, _, top = run('type: "Accuracy"', [x, numpy.array([1.9])])
    assert loss_of(top) == 1.0


def test_accuracy_has_no_backward():
    layer, bottom, top = run('name: "acc" type: "Accuracy" bottom: "x" bottom: "y"',
                             [numpy.zeros((2, 3)), numpy.zeros(2)])
    layer.backward(top, [False, False], bottom)  # nothing asked, nothing done
    with pytest.raises(LayerError, match="acc.*no backward.*'x'"):
        layer.backward(top, [True, False], bottom)
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)


def test_accuracy_errors():
    with pytest.raises(LayerError, match="top_k 6"):
        build('type: "Accuracy" accuracy_param { top_k: 6 }', [numpy.zeros((2, 5)), numpy.zeros(2)])
    with pytest.raises(LayerError, match="expected 6"):
        build('type: "Accuracy" bottom: "x" bottom: "y"', [numpy.zeros((2, 5, 3)), numpy.zeros(2)])
    with pytest.raises(LayerError, match=r"label 5 .*\[0, 5\)"):
        run('type: "Accuracy" bottom: "x" bottom: "y"',
            [numpy.zeros((2, 5)), numpy.array([0.0, 5.0])])


# --- ContrastiveLoss --------------------------------------------------------


def contrastive_ref(a, b, sim, margin, legacy):
    loss = 0.0
    for n in range(a.shape[0]):
        d2 = float(((a[n] - b[n]) ** 2).sum())
        if int(sim[n]):
            loss += d2
        elif legacy:
            loss += max(margin - d2, 0.0)
        else:
            loss += max(margin - math.sqrt(d2), 0.0) ** 2
    return loss / a.shape[0] / 2


@pytest.mark.parametrize("margin, legacy", [(1.0, False), (2.0, False), (2.0, True), (20.0, True)])
@pytest.mark.parametrize("feature_shape", [(6, 4), (6, 4, 1, 1)])
def test_contrastive(margin, legacy, feature_shape):
    rs = rng(2)
    a, b = rs.standard_normal(feature_shape) * 0.6, rs.standard_normal(feature_shape) * 0.6
    sim = numpy.array([1, 0, 0, 1, 0, 0.5]).reshape(6, 1, 1, 1)  # 0.5 reads as dissimilar
    param = (f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: {margin} '
             f'legacy_version: {str(legacy).lower()} }}')
    layer, bottom, top = run(param, [a, b, sim])
    assert abs(loss_of(top) - contrastive_ref(a, b, sim.ravel(), margin, legacy)) < 1e-12
    # the non-legacy gradient divides by (d + 1e-4) as Caffe does: not exact
    check_gradient(layer, bottom, top, check_bottom=[0, 1], threshold=1e-3)
    assert not layer.allow_force_backward(2)


def test_contrastive_gradient_formula():
    """Caffe's dissimilar-pair gradient: -(margin - d)/(d + 1e-4) (a - b) / N."""
    a, b = numpy.array([[0.3, 0.4]]), numpy.zeros((1, 2))
    layer, bottom, top = run('type: "ContrastiveLoss" contrastive_loss_param { margin: 2 }',
                             [a, b, numpy.zeros(1)])
    da, db, _ = backward(layer, bottom, top, 3.0)
    expected = -3.0 * (2 - 0.5) / (0.5 + 1e-4) * a
    numpy.testing.assert_allclose(da, expected, rtol=1e-12)
    numpy.testing.assert_allclose(db, -expected, rtol=1e-12)


def test_contrastive_shape_errors():
    with pytest.raises(LayerError, match="'b'.*expected the shape"):
        build('type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "s"',
                   [numpy.zeros((3, 4)), numpy.zeros((3, 5)), numpy.zeros(3)])
    with pytest.raises(LayerError, match="'s'.*3 similarity labels"):
        build('type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "s"',
                   [numpy.zeros((3, 4)), numpy.zeros((3, 4)), numpy.zeros((3, 2))])
    with pytest.raises(LayerError, match=r"'a'.*\(N, C\)"):
        build('type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "s"',
                   [numpy.zeros((3, 4, 2)), numpy.zeros((3, 4, 2)), numpy.zeros(3)])


# --- EuclideanLoss ------------------------------------------------------------


@pytest.mark.parametrize("shape_a, shape_b", [((4, 6), (4, 6)), ((3, 2, 2, 2), (3, 8))])
def test_euclidean(xp, shape_a, shape_b):
    rs = rng(3)
    a, b = rs.standard_normal(shape_a), rs.standard_normal(shape_b)
    layer, bottom, top = run('type: "EuclideanLoss"', [a, b], xp=xp)
    diff = a.reshape(len(a), -1) - b.reshape(len(b), -1)
    assert abs(loss_of(top) - (diff ** 2).sum() / len(a) / 2) < 1e-12
    da, db = backward(layer, bottom, top, 2.5)
    numpy.testing.assert_allclose(da, (2.5 * diff / len(a)).reshape(shape_a), rtol=1e-12)
    numpy.testing.assert_allclose(db, (-2.5 * diff / len(a)).reshape(shape_b), rtol=1e-12)
    if xp is numpy:
        check_gradient(layer, bottom, top)


def test_euclidean_errors():
    with pytest.raises(LayerError, match="same dimension per item"):
        build('type: "EuclideanLoss" bottom: "a" bottom: "b"',
              [numpy.zeros((3, 4)), numpy.zeros((3, 5))])
    with pytest.raises(LayerError, match="same num"):
        build('type: "EuclideanLoss" bottom: "a" bottom: "b"',
              [numpy.zeros((3, 4)), numpy.zeros((2, 6))])


# --- HingeLoss ------------------------------------------------------------------


def hinge_ref(x, lab, norm):
    n = x.shape[0]
    x = x.reshape(n, -1)
    loss = 0.0
    for i in range(n):
        for k in range(x.shape[1]):
            t = 1.0 if k == int(lab[i]) else -1.0
            m = max(0.0, 1.0 - t * x[i, k])
            loss += m if norm == "L1" else m * m
    return loss / n


@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 2, 1)])
def test_hinge(norm, shape):
    rs = rng(4)
    x = rs.standard_normal(shape) * 2
    x[numpy.abs(numpy.abs(x) - 1) < 0.05] = 0.3  # keep away from the kinks at +-1
    lab = labels(rs, (shape[0],), int(numpy.prod(shape[1:])))
    layer, bottom, top = run(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', [x, lab])
    assert abs(loss_of(top) - hinge_ref(x, lab, norm)) < 1e-12
    check_gradient(layer, bottom, top, check_bottom=[0])


def test_hinge_label_errors():
    with pytest.raises(LayerError, match="'y'.*expected 3 labels"):
        build('type: "HingeLoss" bottom: "x" bottom: "y"',
              [numpy.zeros((3, 4)), numpy.zeros((3, 2))])
    layer, bottom, top = build('type: "HingeLoss" bottom: "x" bottom: "y"',
                                    [numpy.zeros((2, 4)), numpy.array([1.0, -1.0])])
    with pytest.raises(LayerError, match=r"label -1 in bottom 'y'.*\[0, 4\)"):
        layer.forward(bottom, top)
    layer, bottom, top = run('type: "HingeLoss" bottom: "x" bottom: "y"',
                             [numpy.zeros((2, 4)), numpy.array([1.0, 0.0])])
    with pytest.raises(LayerError, match="bottom 1 'y'"):
        layer.backward(top, [True, True], bottom)


# --- InfogainLoss ---------------------------------------------------------------


def infogain_ref(p, lab, h, axis, ignore, mode):
    outer, k, inner = split(p.shape, axis)
    p = p.reshape(outer, k, inner)
    lab = lab.reshape(outer, inner)
    loss, valid = 0.0, 0
    for i in range(outer):
        for j in range(inner):
            lv = int(lab[i, j])
            if ignore is not None and lv == ignore:
                continue
            for c in range(k):
                loss -= h[lv, c] * math.log(max(p[i, c, j], 1e-20))
            valid += 1
    return loss / get_normalizer(mode, outer, inner, valid)


def write_blob_proto(path, array, legacy_shape=False, double=False):
    blob = caffe_pb2.BlobProto()
    if legacy_shape:
        blob.num, blob.channels, blob.height, blob.width = 1, 1, *array.shape
    else:
        blob.shape.dim.extend([1, 1, *array.shape])
    (blob.double_data if double else blob.data).extend(array.ravel().tolist())
    path.write_bytes(blob.SerializeToString())


def infogain_inputs(shape, axis, ignore, seed=5):
    rs = rng(seed)
    outer, k, inner = split(shape, axis)
    p = rs.uniform(0.05, 1.0, size=shape)
    p /= p.sum(axis=axis, keepdims=True)
    lab = labels(rs, label_shape(shape, axis), k, ignore)
    h = rs.uniform(0, 1, size=(k, k)) + numpy.eye(k)
    return p, lab, h


@pytest.mark.parametrize("shape, axis, ignore, norm", [
    ((4, 5), 1, None, ""),
    ((2, 3, 2, 2), 1, 2, ""),
    ((2, 3, 4), -1, None, "normalization: BATCH_SIZE"),
    ((3, 4, 2), 1, 0, "normalization: FULL"),
    ((3, 4), 1, None, "normalize: false"),
])
def test_infogain_third_bottom(xp, shape, axis, ignore, norm):
    p, lab, h = infogain_inputs(shape, axis, ignore)
    loss_param = (f"ignore_label: {ignore} " if ignore is not None else "") + norm
    param = (f'type: "InfogainLoss" infogain_loss_param {{ axis: {axis} }} '
             f'loss_param {{ {loss_param} }}')
    layer, bottom, top = run(param, [p, lab, h], xp=xp)
    mode = normalization_mode(layer.param.loss_param, Mode.VALID)
    assert abs(loss_of(top) - infogain_ref(p, lab, h, axis, ignore, mode)) < 1e-10
    assert not layer.allow_force_backward(1) and not layer.allow_force_backward(2)
    if xp is numpy:
        check_gradient(layer, bottom, top, check_bottom=[0], step=1e-4)


@pytest.mark.parametrize("legacy_shape, double", [(False, False), (True, True)])
def test_infogain_source_file(tmp_path, monkeypatch, legacy_shape, double):
    p, lab, h = infogain_inputs((4, 3), 1, None)
    write_blob_proto(tmp_path / "H.binaryproto", h, legacy_shape, double)
    assert read_blob(str(tmp_path / "H.binaryproto")).shape == (1, 1, 3, 3)
    monkeypatch.chdir(tmp_path)  # relative paths resolve from the current directory
    layer, bottom, top = run('type: "InfogainLoss" infogain_loss_param { source: "H.binaryproto" }',
                             [p, lab])
    tol = 1e-10 if double else 1e-6  # float data is stored in float32
    assert abs(loss_of(top) - infogain_ref(p, lab, h, 1, None, Mode.VALID)) < tol
    check_gradient(layer, bottom, top, check_bottom=[0], step=1e-4)
    (dp, _) = backward(layer, bottom, top, 2.0)
    h_used = h if double else h.astype(numpy.float32).astype(numpy.float64)
    expected = -2.0 / 4 * h_used[lab.astype(int).ravel()] / p
    numpy.testing.assert_allclose(dp, expected, rtol=1e-12)


def test_infogain_clamps_tiny_probabilities():
    p = numpy.array([[0.0, 1.0]])
    layer, bottom, top = run('type: "InfogainLoss"', [p, numpy.array([0.0]), numpy.eye(2)])
    assert abs(loss_of(top) - (-math.log(1e-20))) < 1e-9
    dp, _, _ = backward(layer, bottom, top)
    assert numpy.isfinite(dp).all() and abs(dp[0, 0] + 1e20) < 1e8


def test_infogain_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p, lab, h = infogain_inputs((4, 3), 1, None)
    with pytest.raises(LayerError, match=r"layer 'ig'.*missing/H\.binaryproto: infogain matrix H file not found"):
        build('name: "ig" type: "InfogainLoss" '
              'infogain_loss_param { source: "missing/H.binaryproto" }',
                   [p, lab])
    with pytest.raises(LayerError, match="infogain_loss_param.source"):
        build('type: "InfogainLoss"', [p, lab])
    (tmp_path / "junk.binaryproto").write_bytes(b"\xff\xff\xff")
    with pytest.raises(LayerError, match="junk.binaryproto: not a valid binary infogain matrix H"):
        build('type: "InfogainLoss" infogain_loss_param { source: "junk.binaryproto" }', [p, lab])
    with pytest.raises(LayerError, match="'H'.*expected 3 x 3 = 9"):
        build('type: "InfogainLoss" bottom: "p" bottom: "l" bottom: "H"', [p, lab, numpy.eye(4)])
    layer, bottom, top = run('type: "InfogainLoss" bottom: "p" bottom: "l" bottom: "H"',
                             [p, lab, h])
    with pytest.raises(LayerError, match="bottom 2 'H'"):
        layer.backward(top, [True, False, True], bottom)


# --- MultinomialLogisticLoss --------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 2, 2)])
def test_multinomial_logistic(xp, shape):
    rs = rng(6)
    p = rs.uniform(0.05, 1, size=shape)
    k = int(numpy.prod(shape[1:]))
    lab = labels(rs, (shape[0],), k)
    layer, bottom, top = run('type: "MultinomialLogisticLoss"', [p, lab], xp=xp)
    flat = p.reshape(shape[0], -1)
    expected = -sum(math.log(flat[i, int(lab[i])]) for i in range(shape[0])) / shape[0]
    assert abs(loss_of(top) - expected) < 1e-12
    dp, _ = backward(layer, bottom, top, 1.5)
    ref = numpy.zeros_like(flat)
    for i in range(shape[0]):
        ref[i, int(lab[i])] = -1.5 / shape[0] / flat[i, int(lab[i])]
    numpy.testing.assert_allclose(dp, ref.reshape(shape), rtol=1e-12)
    if xp is numpy:
        check_gradient(layer, bottom, top, check_bottom=[0], step=1e-4)


def test_multinomial_logistic_clamps_zero():
    layer, bottom, top = run('type: "MultinomialLogisticLoss"',
                             [numpy.array([[0.0, 1.0]]), numpy.array([0.0])])
    assert abs(loss_of(top) + math.log(1e-20)) < 1e-9
    dp, _ = backward(layer, bottom, top)
    assert numpy.isfinite(dp).all()


# --- SigmoidCrossEntropyLoss -------------------------------------------------------


def sigmoid_ce_ref(x, t, ignore, mode):
    loss, valid = 0.0, 0
    for xi, ti in zip(x.ravel(), t.ravel()):
        if ignore is not None and int(ti) == ignore:
            continue
        s = 1 / (1 + math.exp(-xi))
        loss -= ti * math.log(s) + (1 - ti) * math.log(1 - s)
        valid += 1
    outer = x.shape[0]
    return loss / get_normalizer(mode, outer, x.size // outer, valid)


@pytest.mark.parametrize("loss_param, ignore, mode", [
    ("", None, Mode.BATCH_SIZE),
    ("normalize: true", None, Mode.VALID),
    ("normalization: FULL", None, Mode.FULL),
    ("ignore_label: -1", -1, Mode.BATCH_SIZE),
    ("ignore_label: -1 normalization: VALID", -1, Mode.VALID),
    ("ignore_label: 2 normalization: NONE", 2, Mode.NONE),
])
def test_sigmoid_cross_entropy(xp, loss_param, ignore, mode):
    rs = rng(7)
    x = rs.standard_normal((3, 2, 4)) * 3
    t = rs.uniform(0, 1, size=(3, 8))
    if ignore is not None:
        t.reshape(-1)[::3] = ignore
    layer, bottom, top = run(f'type: "SigmoidCrossEntropyLoss" loss_param {{ {loss_param} }}',
                             [x, t], xp=xp)
    assert abs(loss_of(top) - sigmoid_ce_ref(x, t, ignore, mode)) < 1e-10
    if xp is numpy:
        check_gradient(layer, bottom, top, check_bottom=[0])


def test_sigmoid_cross_entropy_is_stable():
    x = numpy.array([[-1000.0, 1000.0, -80.0, 80.0]])
    t = numpy.array([[0.0, 1.0, 1.0, 0.0]])
    layer, bottom, top = run('type: "SigmoidCrossEntropyLoss"', [x, t], dtype=numpy.float32)
    assert abs(loss_of(top) - 160.0) < 1e-4
    dx, _ = backward(layer, bottom, top)
    numpy.testing.assert_allclose(dx, [[0, 0, -1, 1]], atol=1e-6)


def test_sigmoid_cross_entropy_errors():
    with pytest.raises(LayerError, match="same count"):
        build('type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t"',
                   [numpy.zeros((2, 3)), numpy.zeros((2, 4))])


# --- SoftmaxWithLoss -------------------------------------------------------------


def swl_ref(x, lab, axis, ignore, mode):
    outer, k, inner = split(x.shape, axis)
    x = x.reshape(outer, k, inner)
    lab = lab.reshape(outer, inner)
    loss, valid = 0.0, 0
    for i in range(outer):
        for j in range(inner):
            lv = int(lab[i, j])
            if ignore is not None and lv == ignore:
                continue
            z = x[i, :, j] - x[i, :, j].max()
            loss -= z[lv] - math.log(numpy.exp(z).sum())
            valid += 1
    return loss / get_normalizer(mode, outer, inner, valid)


@pytest.mark.parametrize("shape, axis, loss_param, ignore, mode", [
    ((5, 4), 1, "", None, Mode.VALID),
    ((2, 3, 2, 2), 1, "ignore_label: 1", 1, Mode.VALID),
    ((2, 3, 4), -1, "ignore_label: 0 normalization: FULL", 0, Mode.FULL),
    ((3, 4, 2), 1, "normalize: false", None, Mode.BATCH_SIZE),
    ((3, 4, 2), 2, "normalize: true ignore_label: 1", 1, Mode.VALID),
    ((2, 4, 3), 1, "normalization: NONE ignore_label: 3", 3, Mode.NONE),
    ((2, 4, 3), 1, "normalization: BATCH_SIZE", None, Mode.BATCH_SIZE),
])
def test_softmax_with_loss(xp, shape, axis, loss_param, ignore, mode):
    rs = rng(8)
    x = rs.standard_normal(shape) * 2
    outer, k, inner = split(shape, axis)
    lab = labels(rs, label_shape(shape, axis), k, ignore)
    param = (f'type: "SoftmaxWithLoss" softmax_param {{ axis: {axis} }} '
             f'loss_param {{ {loss_param} }}')
    layer, bottom, top = run(param, [x, lab], xp=xp)
    assert abs(loss_of(top) - swl_ref(x, lab, axis, ignore, mode)) < 1e-10
    if xp is numpy:
        check_gradient(layer, bottom, top, check_bottom=[0])


def test_softmax_with_loss_prob_top(xp):
    rs = rng(9)
    x = rs.standard_normal((2, 3, 4))
    lab = labels(rs, (2, 4), 3)
    layer, bottom, top = run('type: "SoftmaxWithLoss" top: "loss" top: "prob"', [x, lab], xp=xp)
    assert layer.loss_weights == [1.0, 0.0]
    e = numpy.exp(x - x.max(axis=1, keepdims=True))
    numpy.testing.assert_allclose(to_numpy(top[1].data), e / e.sum(axis=1, keepdims=True),
                                  rtol=1e-12)
    assert abs(loss_of(top) - swl_ref(x, lab, 1, None, Mode.VALID)) < 1e-12
    if xp is numpy:
        check_gradient(layer, bottom, top, check_bottom=[0], top_ids=[0])
    with pytest.raises(LayerError, match="'prob' must have loss_weight 0"):
        build('type: "SoftmaxWithLoss" top: "loss" top: "prob" loss_weight: 1 loss_weight: 1',
                   [x, lab])


def test_softmax_with_loss_float32_extremes():
    x = numpy.array([[1000.0, -1000.0, 0.0]])
    layer, bottom, top = run('type: "SoftmaxWithLoss"', [x, numpy.array([1.0])],
                             dtype=numpy.float32)
    # p = 0 is clamped at FLT_MIN, as in Caffe
    assert abs(loss_of(top) + math.log(numpy.finfo(numpy.float32).tiny)) < 1e-3
    dx, _ = backward(layer, bottom, top)
    numpy.testing.assert_allclose(dx, [[1, -1, 0]], atol=1e-6)


def test_softmax_with_loss_errors():
    with pytest.raises(LayerError, match="'y' holds 4 labels.*expected 6"):
        build('type: "SoftmaxWithLoss" bottom: "x" bottom: "y"',
              [numpy.zeros((2, 3, 3)), numpy.zeros((2, 2))])
    with pytest.raises(LayerError, match="softmax_param.axis 3"):
        build('type: "SoftmaxWithLoss" softmax_param { axis: 3 }',
              [numpy.zeros((2, 3, 3)), numpy.zeros(2)])
    layer, bottom, top = build('type: "SoftmaxWithLoss" bottom: "x" bottom: "y" '
                               'loss_param { ignore_label: 7 }',
                               [numpy.zeros((3, 4)), numpy.array([7.0, 1.0, 4.0])])
    with pytest.raises(LayerError, match=r"label 4 in bottom 'y'.*\[0, 4\)"):
        layer.forward(bottom, top)
    bottom[1].data[2] = 7  # ignored labels may be anything
    layer.forward(bottom, top)
    with pytest.raises(LayerError, match="bottom 1 'y'"):
        layer.backward(top, [True, True], bottom)


@pytest.mark.parametrize("type_name, bottoms, expected", [
    ("SoftmaxWithLoss", 2, [True, False]),
    ("SigmoidCrossEntropyLoss", 2, [True, False]),
    ("MultinomialLogisticLoss", 2, [True, False]),
    ("HingeLoss", 2, [True, False]),
    ("EuclideanLoss", 2, [True, True]),
    ("ContrastiveLoss", 3, [True, True, False]),
    ("InfogainLoss", 3, [True, False, False]),
])
def test_label_bottoms_not_forced(type_name, bottoms, expected):
    cls = layer_class(type_name)
    layer = cls(caffe_pb2.LayerParameter(name="l", type=type_name))
    assert [layer.allow_force_backward(i) for i in range(bottoms)] == expected
