"""LSTM, RNN and LSTMUnit: values against naive per-stream references, gradients
through the shared checker, hidden-state carry-over, shapes and errors."""
import numpy
import pytest

from pycaffe_lite.backend import to_numpy
from pycaffe_lite.errors import LayerError
from pycaffe_lite.testing.gradient_check import check_gradient, make_layer







def sig(z):
    return 1.0 / (1.0 + numpy.exp(-z))


def recurrent_proto(kind, num_output=3, static=False, expose=False, fillers=""):
    bottoms = ["x", "cont"] + (["x_static"] if static else [])
    tops = ["y"]
    if expose:
        states = ["h", "c"] if kind == "LSTM" else ["h"]
        bottoms += [s + "0" for s in states]
        tops += [s + "T" for s in states]
    text = f'name: "rec" type: "{kind}" '
    text += " ".join(f'bottom: "{b}"' for b in bottoms) + " "
    text += " ".join(f'top: "{t}"' for t in tops) + " "
    text += (f"recurrent_param {{ num_output: {num_output} "
             f"expose_hidden: {'true' if expose else 'false'} {fillers} }}")
    return text


def random_cont(rs, T, N):
    """Binary indicators, 0 at the first step (so the carried state never
    enters a gradient check) and some resets later."""
    cont = (rs.uniform(size=(T, N)) > 0.3).astype(float)
    cont[0] = 0
    return cont


def set_params(layer, rs, scale=0.6):
    for blob in layer.blobs:
        blob.data[...] = layer.xp.asarray(rs.uniform(-scale, scale, blob.shape))


def params_np(layer):
    return [to_numpy(b.data).astype(numpy.float64) for b in layer.blobs]


# --- naive references (one stream, one step at a time) ----------------------
def ref_lstm(x, cont, params, static=False, xs=None, h0=None, c0=None):
    T, N = cont.shape
    x = x.reshape(T, N, -1)
    if static:
        w_xc, b_c, w_s, w_hc = params
    else:
        w_xc, b_c, w_hc = params
    H = w_hc.shape[1]
    h = numpy.zeros((N, H)) if h0 is None else h0[0].astype(float).copy()
    c = numpy.zeros((N, H)) if c0 is None else c0[0].astype(float).copy()
    out = numpy.zeros((T, N, H))
    for t in range(T):
        for n in range(N):
            z = w_xc @ x[t, n] + b_c + w_hc @ (cont[t, n] * h[n])
            if static:
                z = z + w_s @ xs[n].ravel()
            i, f, o, g = sig(z[:H]), sig(z[H:2 * H]), sig(z[2 * H:3 * H]), numpy.tanh(z[3 * H:])
            c[n] = cont[t, n] * f * c[n] + i * g
            h[n] = o * numpy.tanh(c[n])
        out[t] = h
    return out, h, c


def ref_rnn(x, cont, params, static=False, xs=None, h0=None):
    T, N = cont.shape
    x = x.reshape(T, N, -1)
    if static:
        w_xh, b_h, w_s, w_hh, w_ho, b_o = params
    else:
        w_xh, b_h, w_hh, w_ho, b_o = params
    H = w_hh.shape[0]
    h = numpy.zeros((N, H)) if h0 is None else h0[0].astype(float).copy()
    out = numpy.zeros((T, N, H))
    for t in range(T):
        for n in range(N):
            z = w_hh @ (cont[t, n] * h[n]) + w_xh @ x[t, n] + b_h
            if static:
                z = z + w_s @ xs[n].ravel()
            h[n] = numpy.tanh(z)
            out[t, n] = numpy.tanh(w_ho @ h[n] + b_o)
    return out, h


def make_inputs(rs, kind, T, N, x_tail, static, expose, H, static_tail=(2,)):
    arrays = [rs.standard_normal((T, N) + x_tail), random_cont(rs, T, N)]
    if static:
        arrays.append(rs.standard_normal((N,) + static_tail))
    if expose:
        for _ in range(2 if kind == "LSTM" else 1):
            arrays.append(rs.uniform(-0.8, 0.8, (1, N, H)))
    return arrays


def build(kind, static, expose, x_tail, sizes, xp, seed, cont=None):
    """Random inputs and parameters; returns (arrays, layer, bottom, top)."""
    rs = numpy.random.RandomState(seed)
    T, N, H = sizes
    arrays = make_inputs(rs, kind, T, N, x_tail, static, expose, H)
    if cont is not None:
        arrays[1] = numpy.array(cont, dtype=float)
    layer, bottom, top = make_layer(recurrent_proto(kind, H, static, expose), arrays, xp=xp)
    set_params(layer, rs)
    return arrays, layer, bottom, top


CONFIGS = [
    pytest.param(False, False, (3,), id="plain"),
    pytest.param(True, False, (3,), id="static"),
    pytest.param(False, True, (3,), id="expose"),
    pytest.param(True, True, (2, 2), id="static_expose_4d_x"),
]


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static,expose,x_tail", CONFIGS)
def test_forward_matches_reference(kind, static, expose, x_tail, xp):
    T, N, H = 4, 3, 3
    arrays, layer, bottom, top = build(kind, static, expose, x_tail, (T, N, H), xp, seed=3)
    layer.forward(bottom, top)
    xs = arrays[2] if static else None
    hidden = arrays[2 + static:] if expose else [None, None]
    if kind == "LSTM":
        out, h, c = ref_lstm(arrays[0], arrays[1], params_np(layer), static, xs, *hidden)
        finals = [h, c]
    else:
        out, h = ref_rnn(arrays[0], arrays[1], params_np(layer), static, xs, hidden[0])
        finals = [h]
    assert top[0].shape == (T, N, H)
    numpy.testing.assert_allclose(to_numpy(top[0].data), out, rtol=1e-10, atol=1e-12)
    if expose:
        assert len(top) == 1 + len(finals)
        for t, ref in zip(top[1:], finals):
            assert t.shape == (1, N, H)
            numpy.testing.assert_allclose(to_numpy(t.data)[0], ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static,expose,x_tail", CONFIGS)
def test_gradient(kind, static, expose, x_tail, xp):
    # cont [[0, 0], [1, 0], [1, 1]]: continuations and resets inside the batch.
    _, layer, bottom, top = build(kind, static, expose, x_tail, (3, 2, 3), xp, seed=5,
                                  cont=[[0, 0], [1, 0], [1, 1]])
    # cont gets no gradient; neither do the exposed h0/c0 (Caffe shares only
    # their data), and the exposed hT/cT tops feed no gradient back.
    check_gradient(layer, bottom, top, check_bottom=[0, 2] if static else [0], top_ids=[0])


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_hidden_state_carries_over_between_forward_calls(kind, xp):
    """One call over T steps equals T calls of a T=1 layer with the same
    weights (Caffe's TestForward for LSTM/RNN), resets included."""
    rs = numpy.random.RandomState(7)
    T, N, H = 5, 2, 3
    x = rs.standard_normal((T, N, 4))
    cont = numpy.ones((T, N))
    cont[0] = 0
    cont[3, 1] = 0
    full, fb, ft = make_layer(recurrent_proto(kind, H), [x, cont], xp=xp)
    set_params(full, rs)
    full.forward(fb, ft)
    step, sb, st = make_layer(recurrent_proto(kind, H), [x[:1], cont[:1]], xp=xp)
    for mine, theirs in zip(step.blobs, full.blobs):
        mine.data[...] = theirs.data
    for t in range(T):
        sb[0].data[...] = xp.asarray(x[t:t + 1])
        sb[1].data[...] = xp.asarray(cont[t:t + 1])
        step.reshape(sb, st)
        step.forward(sb, st)
        numpy.testing.assert_allclose(to_numpy(st[0].data)[0], to_numpy(ft[0].data)[t],
                                      rtol=1e-12, atol=1e-14)
    # cont = 1 at the first step uses the carried state; reset() drops it.
    sb[1].data[...] = 1
    step.forward(sb, st)
    carried = to_numpy(st[0].data).copy()
    step.reset()
    step.forward(sb, st)
    from_zero = to_numpy(st[0].data).copy()
    assert not numpy.allclose(from_zero, carried)
    sb[1].data[...] = 0  # a reset discards whatever state is carried
    step.forward(sb, st)
    numpy.testing.assert_array_equal(to_numpy(st[0].data), from_zero)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_no_gradient_across_batches(kind, xp):
    """The second batch of a carrying layer behaves like an exposed-hidden layer
    fed the first batch's final states as constants: same output, same
    parameter and input gradients (BPTT stops at the batch boundary)."""
    rs = numpy.random.RandomState(11)
    T, N, H = 3, 2, 3
    x1, x2 = rs.standard_normal((2, T, N, 4))
    cont = numpy.ones((T, N))
    n_states = 2 if kind == "LSTM" else 1
    carry, cb, ct = make_layer(recurrent_proto(kind, H), [x1, cont], xp=xp)
    set_params(carry, rs)
    carry.forward(cb, ct)
    finals = [s[None] for s in carry._carry]
    cb[0].data[...] = xp.asarray(x2)
    carry.forward(cb, ct)
    exposed, eb, et = make_layer(recurrent_proto(kind, H, expose=True),
                                 [x2, cont] + [to_numpy(f) for f in finals], xp=xp)
    for mine, theirs in zip(exposed.blobs, carry.blobs):
        mine.data[...] = theirs.data
    exposed.forward(eb, et)
    numpy.testing.assert_allclose(to_numpy(ct[0].data), to_numpy(et[0].data), rtol=1e-12)
    top_diff = xp.asarray(rs.standard_normal(ct[0].shape))
    for layer, bottom, top in ((carry, cb, ct), (exposed, eb, et)):
        top[0].diff[...] = top_diff
        for t in top[1:]:
            t.diff[...] = 7.0  # ignored, as in Caffe
        for b in bottom:
            b.diff[...] = -3.0
        layer.backward(top, [True] * len(bottom), bottom)
    for mine, theirs in zip(exposed.blobs, carry.blobs):
        numpy.testing.assert_allclose(to_numpy(mine.diff), to_numpy(theirs.diff), rtol=1e-10)
    numpy.testing.assert_allclose(to_numpy(eb[0].diff), to_numpy(cb[0].diff), rtol=1e-10)
    # Caffe never writes the diff of cont, h0 or c0.
    for b in [cb[1], eb[1]] + eb[2:2 + n_states]:
        assert (to_numpy(b.diff) == -3.0).all()


def test_param_diffs_accumulate(xp):
    rs = numpy.random.RandomState(2)
    arrays = make_inputs(rs, "LSTM", 3, 2, (3,), True, False, 3)
    layer, bottom, top = make_layer(recurrent_proto("LSTM", 3, static=True), arrays, xp=xp)
    set_params(layer, rs)
    layer.forward(bottom, top)
    top[0].diff[...] = xp.asarray(rs.standard_normal(top[0].shape))
    layer.backward(top, [True, False, True], bottom)
    once = [to_numpy(b.diff).copy() for b in layer.blobs]
    layer.backward(top, [True, False, True], bottom)
    for b, d in zip(layer.blobs, once):
        numpy.testing.assert_allclose(to_numpy(b.diff), 2 * d, rtol=1e-12)


@pytest.mark.parametrize("kind,expected", [
    ("LSTM", [(12, 6), (12,), (12, 5), (12, 3)]),
    ("RNN", [(3, 6), (3,), (3, 5), (3, 3), (3, 3), (3,)]),
])
def test_param_layout_and_fillers(kind, expected):
    rs = numpy.random.RandomState(0)
    arrays = [rs.standard_normal((2, 4, 2, 3)), numpy.zeros((2, 4)), rs.standard_normal((4, 5))]
    fillers = ('weight_filler { type: "uniform" min: -0.1 max: 0.1 } '
               'bias_filler { type: "constant" value: 0.25 }')
    layer, bottom, top = make_layer(recurrent_proto(kind, 3, static=True, fillers=fillers), arrays)
    assert [b.shape for b in layer.blobs] == expected
    biases = [1] if kind == "LSTM" else [1, 5]
    for k, blob in enumerate(layer.blobs):
        if k in biases:
            assert (blob.data == 0.25).all()
        else:
            assert numpy.abs(blob.data).max() <= 0.1 and blob.data.std() > 0
    assert top[0].shape == (2, 4, 3)
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)


def test_batch_size_change_keeps_first_streams_then_resets():
    rs = numpy.random.RandomState(4)
    x = rs.standard_normal((2, 3, 2))
    layer, bottom, top = make_layer(recurrent_proto("LSTM", 2), [x, numpy.ones((2, 3))])
    set_params(layer, rs)
    layer.forward(bottom, top)
    h_prev = [s.copy() for s in layer._carry]
    # Fewer streams: Caffe keeps the start of its state buffers (streams 0, 1).
    small = make_layer(recurrent_proto("LSTM", 2), [x[:, :2], numpy.ones((2, 2))])
    for mine, theirs in zip(small[0].blobs, layer.blobs):
        mine.data[...] = theirs.data
    small[0]._carry = [s[:2].copy() for s in h_prev]
    small[0].forward(small[1], small[2])
    bottom[0].reshape((2, 2, 2))
    bottom[0].data[...] = x[:, :2]
    bottom[1].reshape((2, 2))
    bottom[1].data[...] = 1
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    numpy.testing.assert_allclose(top[0].data, small[2][0].data, rtol=1e-12)
    # More streams: fresh zero states.
    bottom[0].reshape((2, 4, 2))
    bottom[0].data[...] = rs.standard_normal((2, 4, 2))
    bottom[1].reshape((2, 4))
    bottom[1].data[...] = 1
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    out, _, _ = ref_lstm(bottom[0].data, bottom[1].data, params_np(layer))
    numpy.testing.assert_allclose(top[0].data, out, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("proto,arrays,match", [
    (recurrent_proto("LSTM", 0), [numpy.zeros((2, 3, 4)), numpy.zeros((2, 3))], "num_output"),
    (recurrent_proto("LSTM"), [numpy.zeros((2, 3, 4)), numpy.zeros((3, 2))], "'cont'"),
    (recurrent_proto("RNN"), [numpy.zeros((6,)), numpy.zeros((2, 3))], "at least 2 axes"),
    (recurrent_proto("RNN", static=True),
     [numpy.zeros((2, 3, 4)), numpy.zeros((2, 3)), numpy.zeros((2, 5))], "static input"),
    (recurrent_proto("LSTM", 3, expose=True),
     [numpy.zeros((2, 3, 4)), numpy.zeros((2, 3)), numpy.zeros((1, 3, 3)), numpy.zeros((1, 2, 3))],
     "'c0'"),
    (recurrent_proto("LSTM", 3, expose=True), [numpy.zeros((2, 3, 4)), numpy.zeros((2, 3))],
     "at least 4 bottom"),
])
def test_setup_errors(proto, arrays, match):
    with pytest.raises(LayerError, match=match):
        make_layer(proto, arrays)


def test_reshape_errors():
    layer, bottom, top = make_layer(recurrent_proto("LSTM"), [numpy.zeros((2, 3, 4)),
                                                             numpy.zeros((2, 3))])
    bottom[0].reshape((3, 3, 4))
    bottom[1].reshape((3, 3))
    with pytest.raises(LayerError, match="timesteps changed from 2 to 3"):
        layer.reshape(bottom, top)
    bottom[0].reshape((2, 3, 5))
    bottom[1].reshape((2, 3))
    with pytest.raises(LayerError, match="expect 4"):
        layer.reshape(bottom, top)


# --- LSTMUnit ------------------------------------------------------------------
LSTM_UNIT = ('name: "unit" type: "LSTMUnit" bottom: "c_prev" bottom: "gates" bottom: "cont" '
             'top: "c" top: "h"')


def unit_inputs(rs, N=4, H=3, cont=None):
    cont = numpy.array([[0, 1, 1, 0]], float) if cont is None else cont
    return [rs.standard_normal((1, N, H)), rs.standard_normal((1, N, 4 * H)), cont]


def test_lstm_unit_forward_and_caffe_backward(xp):
    rs = numpy.random.RandomState(8)
    H = 3
    # Non-binary cont pins Caffe's backward, which uses f = cont * sigmoid(f').
    c_prev, x, cont = unit_inputs(rs, cont=numpy.array([[0, 1, 0.5, 2]]))
    layer, bottom, top = make_layer(LSTM_UNIT, [c_prev, x, cont], xp=xp)
    layer.forward(bottom, top)
    dc, dh = rs.standard_normal((2, 1, 4, H))
    top[0].diff[...] = xp.asarray(dc)
    top[1].diff[...] = xp.asarray(dh)
    layer.backward(top, [True, True, False], bottom)
    for n in range(4):
        z, k = x[0, n], cont[0, n]
        i, o, g = sig(z[:H]), sig(z[2 * H:3 * H]), numpy.tanh(z[3 * H:])
        f = 0 * z[:H] if k == 0 else k * sig(z[H:2 * H])
        c = f * c_prev[0, n] + i * g
        h = o * numpy.tanh(c)
        numpy.testing.assert_allclose(to_numpy(top[0].data)[0, n], c, rtol=1e-12)
        numpy.testing.assert_allclose(to_numpy(top[1].data)[0, n], h, rtol=1e-12)
        term = dc[0, n] + dh[0, n] * o * (1 - numpy.tanh(c) ** 2)
        numpy.testing.assert_allclose(to_numpy(bottom[0].diff)[0, n], term * f, rtol=1e-12)
        expected = numpy.concatenate([term * g * i * (1 - i), term * c_prev[0, n] * f * (1 - f),
                                      dh[0, n] * numpy.tanh(c) * o * (1 - o),
                                      term * i * (1 - g * g)])
        numpy.testing.assert_allclose(to_numpy(bottom[1].diff)[0, n], expected, rtol=1e-12,
                                      atol=1e-15)


def test_lstm_unit_gradient(xp):
    rs = numpy.random.RandomState(9)
    layer, bottom, top = make_layer(LSTM_UNIT, unit_inputs(rs), xp=xp)
    check_gradient(layer, bottom, top, check_bottom=[0, 1])


def test_lstm_unit_propagate_down_and_errors():
    rs = numpy.random.RandomState(1)
    layer, bottom, top = make_layer(LSTM_UNIT, unit_inputs(rs))
    layer.forward(bottom, top)
    bottom[0].diff[...] = 5.0
    layer.backward(top, [False, True, False], bottom)
    assert (bottom[0].diff == 5.0).all()
    with pytest.raises(LayerError, match="continuation indicators 'cont'"):
        layer.backward(top, [True, True, True], bottom)
    assert not layer.allow_force_backward(2) and layer.allow_force_backward(1)
    c_prev, x, cont = unit_inputs(rs)
    with pytest.raises(LayerError, match="'gates'"):
        make_layer(LSTM_UNIT, [c_prev, x[..., :-1], cont])
    with pytest.raises(LayerError, match="'cont'"):
        make_layer(LSTM_UNIT, [c_prev, x, cont[0]])
    with pytest.raises(LayerError, match="takes 3 bottom"):
        make_layer(LSTM_UNIT, [c_prev, x])


def test_float32_runs_in_float32():
    rs = numpy.random.RandomState(6)
    arrays = make_inputs(rs, "LSTM", 3, 2, (3,), False, False, 3)
    layer, bottom, top = make_layer(recurrent_proto("LSTM", 3), arrays, dtype=numpy.float32)
    set_params(layer, rs)
    layer.forward(bottom, top)
    assert top[0].data.dtype == numpy.float32
    out, _, _ = ref_lstm(arrays[0].astype(numpy.float32), arrays[1], params_np(layer))
    numpy.testing.assert_allclose(top[0].data, out, rtol=1e-5, atol=1e-6)
    top[0].diff[...] = 1
    layer.backward(top, [True, False], bottom)
    assert bottom[0].diff.dtype == numpy.float32
    assert all(b.diff.dtype == numpy.float32 for b in layer.blobs)
