"""Recurrent layers: LSTM, RNN, and the LSTMUnit step (Caffe's ``recurrent_layer``,
``lstm_layer``, ``rnn_layer``, ``lstm_unit_layer``).

Caffe builds an unrolled internal net (InnerProduct, Scale/Eltwise, LSTMUnit or
TanH per time step); here the same recurrence is written directly with array
ops and a loop over the ``T`` time steps, with the same parameter blobs in the
same order and the same backward (BPTT over the ``T`` steps of one batch).

Shapes (``T`` time steps, ``N`` independent streams, ``H = num_output``):

* bottom ``x`` ``[T, N, ...]`` (trailing axes flattened to ``I``),
  ``cont`` ``[T, N]`` (0 starts a new sequence: the previous state is dropped),
  optional static input ``x_static`` ``[N, ...]`` (flattened to ``S``) added to
  every step, and with ``expose_hidden`` the initial states ``h0`` (and ``c0``
  for LSTM) ``[1, N, H]``.
* top ``[T, N, H]``, and with ``expose_hidden`` the final states ``hT`` (and
  ``cT``) ``[1, N, H]``.

Hidden state across forward calls (Caffe): without ``expose_hidden`` the last
states of one forward are kept and used as ``h_0`` / ``c_0`` of the next
(a ``cont`` of 0 at the first step discards them); no gradient flows across
calls.  With ``expose_hidden`` the states come from the extra bottoms and go to
the extra tops, and - exactly as in Caffe, which shares only their *data* with
its internal net - no gradient flows into ``h0``/``c0`` nor from ``hT``/``cT``.
"""
import numpy

from pycaffe_lite.backend import get_array_module
from pycaffe_lite.layer import Layer, register


def _sigmoid(x):
    xp = get_array_module(x)
    with numpy.errstate(over="ignore"):  # exp(-x) -> inf gives the right limit 0
        return 1 / (1 + xp.exp(-x))


def lstm_unit_forward(c_prev, gates, cont):
    """One LSTM step from gate pre-activations ``[i', f', o', g']`` (last axis 4H).

    ``cont`` broadcasts against ``c_prev`` ([..., 1]).  As in Caffe,
    ``f = 0 if cont == 0 else cont * sigmoid(f')``.
    Returns ``(c, h, acts, tanh_c)`` with ``acts = (i, f, o, g)``.
    """
    xp = get_array_module(gates)
    hidden = c_prev.shape[-1]
    i = _sigmoid(gates[..., :hidden])
    f = cont * _sigmoid(gates[..., hidden:2 * hidden])
    f = xp.where(cont == 0, 0, f).astype(gates.dtype, copy=False)
    o = _sigmoid(gates[..., 2 * hidden:3 * hidden])
    g = xp.tanh(gates[..., 3 * hidden:])
    c = f * c_prev + i * g
    tanh_c = xp.tanh(c)
    return c, o * tanh_c, (i, f, o, g), tanh_c


def lstm_unit_backward(c_prev, acts, tanh_c, dc, dh):
    """Caffe's LSTMUnit backward: returns ``(dc_prev, dgates)``.

    Uses the cont-scaled ``f`` in ``f * (1 - f)`` exactly as Caffe does (exact
    for the usual binary ``cont``).
    """
    xp = get_array_module(c_prev)
    i, f, o, g = acts
    c_term = dc + dh * o * (1 - tanh_c * tanh_c)
    dgates = xp.concatenate([
        c_term * g * i * (1 - i),
        c_term * c_prev * f * (1 - f),
        dh * tanh_c * o * (1 - o),
        c_term * i * (1 - g * g),
    ], axis=-1)
    return c_term * f, dgates


def _flat_rows(a):
    """[..., K] -> [rows, K] for the parameter-gradient GEMMs."""
    return a.reshape(-1, a.shape[-1])


class _RecurrentLayer(Layer):
    """Common bottoms/tops, parameter creation, shape checks and state carry-over.

    Subclasses set ``state_names`` and implement ``_param_specs``, ``_run``
    and ``_run_backward``.
    """

    state_names = ()      # recurrent states, in Caffe's bottom/top order

    def __init__(self, param, **kwargs):
        super().__init__(param, **kwargs)
        n_states = len(self.state_names) if param.recurrent_param.expose_hidden else 0
        self.min_bottoms = 2 + n_states
        self.max_bottoms = 3 + n_states
        self.exact_tops = 1 + n_states

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1  # sequence continuation indicators

    # --- setup / reshape -----------------------------------------------------
    def setup(self, bottom, top):
        rp = self.param.recurrent_param
        self.num_output = self.positive("recurrent_param.num_output", rp.num_output)
        self.expose_hidden = bool(rp.expose_hidden)
        n_states = len(self.state_names) if self.expose_hidden else 0
        self.static_input = len(bottom) > 2 + n_states
        self._check_x_cont(bottom)
        self.T = bottom[0].shape[0]
        if self.static_input:
            self._check_static(bottom)
        in_dim = bottom[0].count_range(2)
        static_dim = bottom[2].count_range(1) if self.static_input else 0
        self.blobs = []
        for shape, filler in self._param_specs(in_dim, static_dim):
            self.add_param_blob(shape, rp.weight_filler if filler == "weight" else rp.bias_filler)
        self._carry = None  # states kept between forward calls (no expose_hidden)

    def _check_x_cont(self, bottom):
        x, cont = bottom[0], bottom[1]
        if x.num_axes < 2:
            raise self.error(f"bottom '{self.bottom_name(0)}' must have at least 2 axes "
                             f"(#timesteps, #streams, ...), got shape {x.shape}")
        if cont.shape != x.shape[:2]:
            raise self.error(f"bottom '{self.bottom_name(1)}' (sequence continuation indicators) "
                             f"must have shape (#timesteps, #streams) = {x.shape[:2]}, "
                             f"got {cont.shape}")

    def _check_static(self, bottom):
        n = bottom[0].shape[1]
        xs = bottom[2]
        if xs.num_axes < 1 or xs.shape[0] != n:
            raise self.error(f"bottom '{self.bottom_name(2)}' (static input) must have shape "
                             f"(#streams = {n}, ...), got {xs.shape}")

    def reshape(self, bottom, top):
        self._check_x_cont(bottom)
        if bottom[0].shape[0] != self.T:
            raise self.error(f"bottom '{self.bottom_name(0)}': the number of timesteps changed "
                             f"from {self.T} to {bottom[0].shape[0]}")
        n = bottom[0].shape[1]
        if bottom[0].count_range(2) != self.blobs[0].shape[1]:
            raise self.error(f"bottom '{self.bottom_name(0)}' {bottom[0].shape} has "
                             f"{bottom[0].count_range(2)} input values per step, the weights "
                             f"expect {self.blobs[0].shape[1]}")
        if self.static_input:
            self._check_static(bottom)
            expected = self.blobs[2].shape[1]
            if bottom[2].count_range(1) != expected:
                raise self.error(f"bottom '{self.bottom_name(2)}' (static input) "
                                 f"{bottom[2].shape} has {bottom[2].count_range(1)} values per "
                                 f"stream, the weights expect {expected}")
        state_shape = (1, n, self.num_output)
        if self.expose_hidden:
            first = 2 + self.static_input
            for k, name in enumerate(self.state_names):
                got = bottom[first + k].shape
                if got != state_shape:
                    raise self.error(f"bottom '{self.bottom_name(first + k)}' (initial {name}) "
                                     f"must have shape {state_shape}, got {got}")
        top[0].reshape((self.T, n, self.num_output))
        for k in range(1, len(top)):
            top[k].reshape(state_shape)

    # --- hidden state carried between forward calls --------------------------
    def reset(self):
        """Zero the carried hidden state (Caffe's ``RecurrentLayer::Reset``)."""
        self._carry = None

    def _initial_states(self, bottom, n, xp, dtype):
        if self.expose_hidden:
            first = 2 + self.static_input
            return [bottom[first + k].data[0] for k in range(len(self.state_names))]
        if self._carry is None or self._carry[0].shape[0] < n:
            # Caffe's state blobs start zeroed and are reallocated (zeroed) when N grows.
            self._carry = [xp.zeros((n, self.num_output), dtype=dtype) for _ in self.state_names]
        # When N shrinks Caffe keeps the start of the old buffer: the first N streams.
        return [s[:n] for s in self._carry]

    # --- forward / backward ----------------------------------------------------
    def _inputs(self, bottom):
        """x [T, N, I], cont [T, N, 1], x_static [N, S] or None."""
        n = bottom[0].shape[1]
        xs = bottom[2].data.reshape(n, -1) if self.static_input else None
        return bottom[0].data.reshape(self.T, n, -1), bottom[1].data.reshape(self.T, n, 1), xs

    def forward(self, bottom, top):
        x, cont, xs = self._inputs(bottom)
        xp = get_array_module(x)
        states = self._initial_states(bottom, x.shape[1], xp, x.dtype)
        out, final = self._run(x, cont, xs, states)
        top[0].data[...] = out
        if self.expose_hidden:
            for k, s in enumerate(final):
                top[1 + k].data[...] = s[None]
        else:
            self._carry = [xp.array(s, copy=True) for s in final]

    def backward(self, top, propagate_down, bottom):
        # Parameters always get their gradient; Caffe never propagates to cont,
        # nor (it shares only data with them) to the exposed initial states.
        x, cont, xs = self._inputs(bottom)
        # Gate pre-activation diffs [T, N, G] (G = 4H for LSTM, H for RNN).
        dpre = self._run_backward(top[0].diff, cont)
        w_x, b = self.blobs[0], self.blobs[1]
        w_x.diff += _flat_rows(dpre).T @ _flat_rows(x)
        b.diff += dpre.sum(axis=(0, 1))
        if propagate_down[0]:
            bottom[0].diff[...] = (dpre @ w_x.data).reshape(bottom[0].shape)
        if self.static_input:
            w_s = self.blobs[2]
            dstatic = dpre.sum(axis=0)                          # [N, G]
            w_s.diff += dstatic.T @ xs
            if propagate_down[2]:
                bottom[2].diff[...] = (dstatic @ w_s.data).reshape(bottom[2].shape)

    def _static_term(self, xs):
        return 0 if xs is None else xs @ self.blobs[2].data.T

    def _recurrent_blob(self, k):
        """The k-th parameter after W_x, b (and W_x_static)."""
        return self.blobs[2 + self.static_input + k]


@register("LSTM")
class LSTMLayer(_RecurrentLayer):
    """Long short-term memory over T time steps (Caffe's LSTMLayer).

    Parameters, in Caffe's order: ``W_xc`` [4H, I], ``b_c`` [4H],
    (``W_xc_static`` [4H, S] with a static input), ``W_hc`` [4H, H]; the gate
    rows are ordered i, f, o, g.  For t = 1..T::

        h'_{t-1} = cont_t * h_{t-1}
        [i', f', o', g'] = W_hc h'_{t-1} + W_xc x_t + b_c (+ W_xc_static x_static)
        i, f, o = sigmoid(i', f', o');  g = tanh(g')      (f := 0 where cont_t == 0)
        c_t = cont_t * f * c_{t-1} + i * g
        h_t = o * tanh(c_t)

    Top: h [T, N, H] (plus h_T, c_T with expose_hidden).  Gradient: BPTT with
    Caffe's LSTMUnit backward (see ``lstm_unit_backward``) and
    dh_{t-1} = cont_t * W_hc^T dgates_t.
    """

    state_names = ("h", "c")

    def _param_specs(self, in_dim, static_dim):
        gates = 4 * self.num_output
        specs = [((gates, in_dim), "weight"), ((gates,), "bias")]
        if self.static_input:
            specs.append(((gates, static_dim), "weight"))
        specs.append(((gates, self.num_output), "weight"))
        return specs

    def _run(self, x, cont, xs, states):
        xp = get_array_module(x)
        w_hc = self._recurrent_blob(0).data
        pre_x = x @ self.blobs[0].data.T + self.blobs[1].data + self._static_term(xs)
        h, c = states
        h_conted, c_prev, acts, tanh_c, outs = [], [], [], [], []
        for t in range(self.T):
            hc = cont[t] * h
            c_prev.append(c)
            c, h, a, tc = lstm_unit_forward(c, hc @ w_hc.T + pre_x[t], cont[t])
            h_conted.append(hc)
            acts.append(a)
            tanh_c.append(tc)
            outs.append(h)
        self._cache = (h_conted, c_prev, acts, tanh_c)
        return xp.stack(outs), (h, c)

    def _run_backward(self, top_diff, cont):
        xp = get_array_module(top_diff)
        h_conted, c_prev, acts, tanh_c = self._cache
        w_hc = self._recurrent_blob(0)
        dh_next = xp.zeros_like(top_diff[0])
        dc = xp.zeros_like(top_diff[0])
        dpre = [None] * self.T
        for t in reversed(range(self.T)):
            dc, dpre[t] = lstm_unit_backward(c_prev[t], acts[t], tanh_c[t], dc,
                                             top_diff[t] + dh_next)
            dh_next = cont[t] * (dpre[t] @ w_hc.data)
        dpre = xp.stack(dpre)
        w_hc.diff += _flat_rows(dpre).T @ _flat_rows(xp.stack(h_conted))
        return dpre


@register("RNN")
class RNNLayer(_RecurrentLayer):
    """Simple (Elman) recurrent net over T time steps (Caffe's RNNLayer).

    Parameters, in Caffe's order: ``W_xh`` [H, I], ``b_h`` [H],
    (``W_xh_static`` [H, S]), ``W_hh`` [H, H], ``W_ho`` [H, H], ``b_o`` [H].
    For t = 1..T::

        h_t = tanh(W_hh (cont_t * h_{t-1}) + W_xh x_t + b_h (+ W_xh_static x_static))
        o_t = tanh(W_ho h_t + b_o)

    Top: o [T, N, H] (plus h_T with expose_hidden).  Gradient: BPTT,
    dz_o = do (1 - o^2), dh_t = W_ho^T dz_o + cont_{t+1} W_hh^T dz_{t+1},
    dz_t = dh_t (1 - h_t^2).
    """

    state_names = ("h",)

    def _param_specs(self, in_dim, static_dim):
        hidden = self.num_output
        specs = [((hidden, in_dim), "weight"), ((hidden,), "bias")]
        if self.static_input:
            specs.append(((hidden, static_dim), "weight"))
        specs += [((hidden, hidden), "weight"), ((hidden, hidden), "weight"), ((hidden,), "bias")]
        return specs

    def _run(self, x, cont, xs, states):
        xp = get_array_module(x)
        w_hh = self._recurrent_blob(0).data
        w_ho, b_o = self._recurrent_blob(1).data, self._recurrent_blob(2).data
        pre_x = x @ self.blobs[0].data.T + self.blobs[1].data + self._static_term(xs)
        (h,) = states
        h_conted, hs = [], []
        for t in range(self.T):
            hc = cont[t] * h
            h = xp.tanh(hc @ w_hh.T + pre_x[t])
            h_conted.append(hc)
            hs.append(h)
        hs = xp.stack(hs)
        o = xp.tanh(hs @ w_ho.T + b_o)
        self._cache = (xp.stack(h_conted), hs, o)
        return o, (h,)

    def _run_backward(self, top_diff, cont):
        xp = get_array_module(top_diff)
        h_conted, hs, o = self._cache
        w_hh, w_ho, b_o = (self._recurrent_blob(k) for k in range(3))
        dz_o = top_diff * (1 - o * o)
        w_ho.diff += _flat_rows(dz_o).T @ _flat_rows(hs)
        b_o.diff += dz_o.sum(axis=(0, 1))
        dh_out = dz_o @ w_ho.data
        dh_next = xp.zeros_like(dh_out[0])
        dz = [None] * self.T
        for t in reversed(range(self.T)):
            dz[t] = (dh_out[t] + dh_next) * (1 - hs[t] * hs[t])
            dh_next = cont[t] * (dz[t] @ w_hh.data)
        dz = xp.stack(dz)
        w_hh.diff += _flat_rows(dz).T @ _flat_rows(h_conted)
        return dz


@register("LSTMUnit")
class LSTMUnitLayer(Layer):
    """One LSTM step (Caffe's LSTMUnitLayer, the helper the unrolled LSTM uses).

    Bottoms: c_prev [1, N, H], gate pre-activations x [1, N, 4H] ordered
    (i', f', o', g'), cont [1, N].  Tops: c [1, N, H], h [1, N, H]::

        i, f, o = sigmoid(i', f', o');  g = tanh(g');  f := cont * f (0 where cont == 0)
        c = f * c_prev + i * g;  h = o * tanh(c)

    Gradient (Caffe's, with the cont-scaled f): t = dc + dh * o * (1 - tanh(c)^2),
    dc_prev = t * f, di' = t g i (1-i), df' = t c_prev f (1-f),
    do' = dh tanh(c) o (1-o), dg' = t i (1-g^2).  No gradient to cont.
    """

    exact_bottoms = 3
    exact_tops = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        c_prev, gates, cont = bottom
        n = c_prev.shape[1] if c_prev.num_axes > 1 else None
        for k, (blob, axes) in enumerate(((c_prev, 3), (gates, 3), (cont, 2))):
            if blob.num_axes != axes or blob.shape[0] != 1 or blob.shape[1] != n:
                raise self.error(f"bottom '{self.bottom_name(k)}' must have {axes} axes shaped "
                                 f"(1, #streams{', ...' if axes == 3 else ''}) with the #streams "
                                 f"of '{self.bottom_name(0)}' {c_prev.shape}, got {blob.shape}")
        if gates.shape[2] != 4 * c_prev.shape[2]:
            raise self.error(f"bottom '{self.bottom_name(1)}' must have 4 * {c_prev.shape[2]} gate inputs "
                             f"on axis 2 (shape {(1, n, 4 * c_prev.shape[2])}), got {gates.shape}")
        top[0].reshape(c_prev.shape)
        top[1].reshape(c_prev.shape)

    def forward(self, bottom, top):
        cont = bottom[2].data[..., None]
        c, h, _, _ = lstm_unit_forward(bottom[0].data, bottom[1].data, cont)
        top[0].data[...] = c
        top[1].data[...] = h

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise self.error("cannot backpropagate to the sequence continuation indicators "
                             f"'{self.bottom_name(2)}'")
        if not (propagate_down[0] or propagate_down[1]):
            return
        c_prev = bottom[0].data
        _, _, acts, tanh_c = lstm_unit_forward(c_prev, bottom[1].data, bottom[2].data[..., None])
        dc_prev, dgates = lstm_unit_backward(c_prev, acts, tanh_c, top[0].diff, top[1].diff)
        if propagate_down[0]:
            bottom[0].diff[...] = dc_prev
        if propagate_down[1]:
            bottom[1].diff[...] = dgates
