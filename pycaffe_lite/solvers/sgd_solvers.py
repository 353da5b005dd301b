"""The update rules: Caffe's ``sgd_solver.cpp`` and its subclasses.

Every iteration :meth:`SGDSolver.apply_update` takes the gradient summed over
``iter_size`` passes and, with ``rate`` from the lr policy,
``lr = rate * lr_mult`` and ``g`` a param's diff:

1. clip: when ``clip_gradients >= 0`` and the L2 norm of all diffs together
   exceeds it, scale every diff by ``clip_gradients / norm``;
2. normalise: ``g *= 1 / iter_size``;
3. regularise with ``decay = weight_decay * decay_mult``: L2 ``g += decay * w``,
   L1 ``g += decay * sign(w)``;
4. the rule turns ``g`` into the update ``u`` (below; ``h`` is the history);
5. ``w -= u``.

Rules (float32 throughout, in Caffe's order of operations)::

    SGD       h = lr * g + momentum * h;  u = h
    Nesterov  h' = lr * g + momentum * h;  u = (1 + momentum) * h' - momentum * h
    AdaGrad   h += g^2;  u = lr * g / (sqrt(h) + delta)
    RMSProp   h = (1 - rms_decay) * g^2 + rms_decay * h;  u = lr * g / (sqrt(h) + delta)
    AdaDelta  h = (1 - momentum) * g^2 + momentum * h
              d = g * sqrt((hu + delta) / (h + delta))
              hu = (1 - momentum) * d^2 + momentum * hu;  u = lr * d
    Adam      m = (1 - b1) * g + b1 * m;  v = (1 - b2) * g^2 + b2 * v
              u = lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + delta),  t = iter + 1
              (b1 = momentum, b2 = momentum2)

AdaDelta and Adam keep two histories per param; the solverstate holds the
first kind for every param, then the second kind.
"""
import logging
import math

import numpy

from .. import parallel
from ..errors import CaffeError
from ..io import files
from ..log import caffe_float
from .lr_policies import check_lr_policy, learning_rate
from .solver import Solver, SolverParamError, register_solver, resolve_learned_net

log = logging.getLogger("pycaffe_lite")

f32 = numpy.float32

# Elements per piece of the CPU update (see SGDSolver.apply_update): its arrays stay
# in cache between the steps of a rule.  AlexNet's 61M params, momentum SGD with
# weight decay: 133 ms in whole-array passes, 60 ms in pieces of 2^18 (2 cores).
_PIECE = 1 << 18


@register_solver("SGD")
class SGDSolver(Solver):
    """Stochastic gradient descent with momentum (Caffe's SGDSolver)."""

    histories_per_param = 1

    def pre_solve(self):
        check_lr_policy(self.param)
        if self.param.regularization_type not in ("L1", "L2"):
            raise SolverParamError(f"Unknown regularization type: "
                                   f"'{self.param.regularization_type}' (use L2 or L1)",
                                   "regularization_type")
        self.check_param()
        params = self.net.learnable_params
        self.history = [self.xp.zeros_like(blob.data)
                        for _ in range(self.histories_per_param) for blob in params]
        self._scratch = None

    def check_param(self):
        """Subclasses validate their settings."""

    # --- the update --------------------------------------------------------------------
    @property
    def lr(self):
        """The learning rate of the current iteration (pycaffe's ``solver.lr``); reading
        it changes nothing."""
        with self.naming_errors():
            return float(learning_rate(self.param, self.iter, self.current_step)[0])

    def learning_rate(self):
        """The rate of the current iteration (advances ``current_step`` as Caffe)."""
        with self.naming_errors():
            rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        return rate

    def apply_update(self):
        """Steps 1-5 of the module docstring for every learnable param.

        After step 1 every element is independent of every other, so steps 2-5
        run piece by piece (:meth:`_pieces`): a piece's data, diff, histories
        and scratch stay in cache through the whole rule instead of a pass over
        memory per operation, and on the CPU the pieces are shared among
        threads (:mod:`pycaffe_lite.parallel`).  Each element sees the same
        float32 operations in the same order as in Caffe's whole-array passes.
        """
        rate = self.learning_rate()
        if self.param.display and self.iter % self.param.display == 0:
            log.info("Iteration %d, lr = %s", self.iter, caffe_float(rate))
        self.clip_gradients()
        params = self.net.learnable_params
        specs = self.net.param_specs
        pieces = []
        for param_id, blob in enumerate(params):
            lr_mult, decay_mult = specs[param_id]
            decay = f32(self.param.weight_decay) * f32(decay_mult)
            local_rate = f32(rate * f32(lr_mult))
            histories = self.history[param_id::len(params)]
            pieces += [(w, g, h, decay, local_rate) for w, g, h in self._pieces(blob, histories)]
        if self.xp is numpy:
            parallel.for_each(pieces, self._update_piece)
        else:
            for piece in pieces:
                self._update_piece(piece, 0)

    def _update_piece(self, piece, worker):
        w, g, h, decay, local_rate = piece
        tmp = [buf[:g.size].reshape(g.shape) for buf in self._scratch[worker]]
        if self.param.iter_size != 1:
            g *= f32(1.0) / f32(self.param.iter_size)
        if decay:
            self.regularize(w, g, decay, tmp[0])
        self.compute_update_value(g, h, local_rate, tmp)
        w -= g

    def _pieces(self, blob, histories):
        """``(data, diff, [histories])`` views over consecutive pieces of a param
        (CPU: of :data:`_PIECE` elements; GPU, or arrays set by hand that are not
        contiguous: the whole param), and scratch for them."""
        count = blob.count
        arrays = [blob.data, blob.diff] + list(histories)
        whole = self.xp is not numpy or not all(a.flags.c_contiguous for a in arrays)
        piece = count if whole else min(count, _PIECE)
        workers = parallel.num_threads() if self.xp is numpy else 1
        if (self._scratch is None or len(self._scratch) < workers
                or self._scratch[0][0].size < piece):
            size = max(piece, self._scratch[0][0].size if self._scratch else 0)
            self._scratch = [[self.xp.empty(size, dtype=blob.data.dtype)
                              for _ in range(self.scratch_per_piece)]
                             for _ in range(workers)]
        if whole:
            yield blob.data, blob.diff, histories
            return
        flat = [arr.reshape(-1) for arr in arrays]
        for part in parallel.slices(count, piece):
            w, g, *h = (arr[part] for arr in flat)
            yield w, g, h

    def clip_gradients(self):
        clip = f32(self.param.clip_gradients)
        if clip < 0:
            return
        sumsq = f32(0)
        for blob in self.net.learnable_params:
            flat = blob.diff.ravel()
            sumsq += f32(float(flat.dot(flat)))   # float(): CuPy scalars too
        norm = f32(math.sqrt(sumsq))
        if norm > clip:
            scale = f32(clip / norm)
            log.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale "
                     "factor %s", caffe_float(norm), caffe_float(clip), caffe_float(scale))
            for blob in self.net.learnable_params:
                blob.diff *= scale

    def regularize(self, w, g, decay, tmp):
        """``g += decay * w`` (L2) or ``g += decay * sign(w)`` (L1)."""
        if self.param.regularization_type == "L2":
            self.xp.multiply(w, decay, out=tmp)
        else:
            self.xp.sign(w, out=tmp)
            tmp *= decay
        g += tmp

    # Scratch arrays (piece-sized) each rule needs.
    scratch_per_piece = 1

    def compute_update_value(self, g, h, local_rate, tmp):
        """Turn the gradient ``g`` into the update, in place; ``h``: this param's
        histories, ``tmp``: :attr:`scratch_per_piece` scratch arrays (all pieces)."""
        momentum = f32(self.param.momentum)
        h[0] *= momentum
        self.xp.multiply(g, local_rate, out=tmp[0])
        h[0] += tmp[0]
        g[...] = h[0]

    # --- solverstate -------------------------------------------------------------------
    def snapshot_solver_state(self, model_filename):
        from ..backend import to_numpy
        from ..proto import caffe_pb2
        state = caffe_pb2.SolverState(iter=self.iter, learned_net=model_filename,
                                      current_step=self.current_step)
        for history in self.history:
            files.array_to_blob_proto(to_numpy(history), proto=state.history.add())
        filename = self.snapshot_filename(".solverstate")
        log.info("Snapshotting solver state to binary proto file %s", filename)
        files.write_binary_proto(filename, state)

    def restore_solver_state(self, state, state_file):
        if len(state.history) != len(self.history):
            raise CaffeError(f"{state_file}: Incorrect length of history blobs: the state "
                             f"holds {len(state.history)}, this {self.type} solver on this "
                             f"net needs {len(self.history)}")
        arrays = []
        for i, (proto, history) in enumerate(zip(state.history, self.history)):
            array = files.blob_proto_to_array(proto, where=f"{state_file}: history blob {i}")
            if array.size != history.size:
                raise CaffeError(f"{state_file}: history blob {i} has shape {array.shape}, "
                                 f"the net's param has shape {history.shape}")
            arrays.append(array.reshape(history.shape))
        self.iter = state.iter
        if state.HasField("learned_net"):
            self.net.copy_from(resolve_learned_net(state.learned_net, state_file))
        self.current_step = state.current_step
        log.info("SGDSolver: restoring history")
        for history, array in zip(self.history, arrays):
            history[...] = self.xp.asarray(array)


@register_solver("Nesterov")
class NesterovSolver(SGDSolver):
    """Nesterov's accelerated gradient (Caffe's NesterovSolver)."""

    scratch_per_piece = 2

    def compute_update_value(self, g, h, local_rate, tmp):
        momentum = f32(self.param.momentum)
        previous, scaled = tmp
        previous[...] = h[0]
        h[0] *= momentum
        self.xp.multiply(g, local_rate, out=scaled)
        h[0] += scaled
        previous *= -momentum
        self.xp.multiply(h[0], f32(1) + momentum, out=scaled)
        previous += scaled
        g[...] = previous


class _NoMomentum(SGDSolver):
    """AdaGrad and RMSProp: ``u = lr * g / (sqrt(h) + delta)``, no momentum."""

    def check_param(self):
        if self.param.momentum != 0:
            raise SolverParamError(f"Momentum cannot be used with {self.type} (momentum: "
                                   f"{caffe_float(self.param.momentum)})", "momentum")

    def scale_by_rms(self, g, history, local_rate, tmp):
        self.xp.sqrt(history, out=tmp)
        tmp += f32(self.param.delta)
        g /= tmp
        g *= local_rate


@register_solver("AdaGrad")
class AdaGradSolver(_NoMomentum):
    """AdaGrad (Caffe's AdaGradSolver)."""

    def compute_update_value(self, g, h, local_rate, tmp):
        self.xp.multiply(g, g, out=tmp[0])
        h[0] += tmp[0]
        self.scale_by_rms(g, h[0], local_rate, tmp[0])


@register_solver("RMSProp")
class RMSPropSolver(_NoMomentum):
    """RMSProp with ``rms_decay`` (Caffe's RMSPropSolver)."""

    def check_param(self):
        super().check_param()
        if not 0 <= self.param.rms_decay < 1:
            raise SolverParamError(f"rms_decay should lie between 0 and 1, got "
                                   f"{caffe_float(self.param.rms_decay)}", "rms_decay")

    def compute_update_value(self, g, h, local_rate, tmp):
        decay = f32(self.param.rms_decay)
        h[0] *= decay
        self.xp.multiply(g, g, out=tmp[0])
        tmp[0] *= f32(1) - decay
        h[0] += tmp[0]
        self.scale_by_rms(g, h[0], local_rate, tmp[0])


@register_solver("AdaDelta")
class AdaDeltaSolver(SGDSolver):
    """AdaDelta (Caffe's AdaDeltaSolver); ``momentum`` is the decay of both averages."""

    histories_per_param = 2
    scratch_per_piece = 2

    def compute_update_value(self, g, h, local_rate, tmp):
        momentum = f32(self.param.momentum)
        delta = f32(self.param.delta)
        grads, updates = h
        ratio, other = tmp
        grads *= momentum
        self.xp.multiply(g, g, out=other)
        other *= f32(1) - momentum
        grads += other
        self.xp.add(updates, delta, out=ratio)
        self.xp.add(grads, delta, out=other)
        ratio /= other
        self.xp.sqrt(ratio, out=ratio)
        g *= ratio
        updates *= momentum
        self.xp.multiply(g, g, out=other)
        other *= f32(1) - momentum
        updates += other
        g *= local_rate


@register_solver("Adam")
class AdamSolver(SGDSolver):
    """Adam (Caffe's AdamSolver): ``momentum`` = beta1, ``momentum2`` = beta2,
    ``delta`` = epsilon, with the bias correction folded into the rate."""

    histories_per_param = 2

    def compute_update_value(self, g, h, local_rate, tmp):
        beta1 = f32(self.param.momentum)
        beta2 = f32(self.param.momentum2)
        m, v = h
        t = self.iter + 1
        correction = f32(math.sqrt(1.0 - float(beta2) ** t) / (1.0 - float(beta1) ** t))
        m *= beta1
        self.xp.multiply(g, f32(1) - beta1, out=tmp[0])
        m += tmp[0]
        v *= beta2
        self.xp.multiply(g, g, out=tmp[0])
        tmp[0] *= f32(1) - beta2
        v += tmp[0]
        self.xp.sqrt(v, out=tmp[0])
        tmp[0] += f32(self.param.delta)
        self.xp.divide(m, tmp[0], out=g)
        g *= f32(local_rate * correction)
