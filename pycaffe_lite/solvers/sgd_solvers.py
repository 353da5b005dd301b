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

from ..errors import CaffeError
from ..io import files
from ..log import caffe_float
from .lr_policies import check_lr_policy, learning_rate
from .solver import Solver, register_solver, resolve_learned_net

log = logging.getLogger("pycaffe_lite")

f32 = numpy.float32


@register_solver("SGD")
class SGDSolver(Solver):
    """Stochastic gradient descent with momentum (Caffe's SGDSolver)."""

    histories_per_param = 1

    def pre_solve(self):
        check_lr_policy(self.param)
        if self.param.regularization_type not in ("L1", "L2"):
            raise CaffeError(f"Unknown regularization type: "
                             f"'{self.param.regularization_type}' (use L2 or L1)")
        self.check_param()
        params = self.net.learnable_params
        self.history = [self.xp.zeros_like(blob.data)
                        for _ in range(self.histories_per_param) for blob in params]

    def check_param(self):
        """Subclasses validate their settings."""

    # --- the update --------------------------------------------------------------------
    def learning_rate(self):
        """The rate of the current iteration (advances ``current_step`` as Caffe)."""
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        return rate

    def apply_update(self):
        rate = self.learning_rate()
        if self.param.display and self.iter % self.param.display == 0:
            log.info("Iteration %d, lr = %s", self.iter, caffe_float(rate))
        self.clip_gradients()
        specs = self.net.param_specs
        for param_id, blob in enumerate(self.net.learnable_params):
            lr_mult, decay_mult = specs[param_id]
            self.normalize(blob)
            self.regularize(blob, decay_mult)
            self.compute_update_value(param_id, blob, f32(rate * f32(lr_mult)))
        for blob in self.net.learnable_params:
            blob.data -= blob.diff

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

    def normalize(self, blob):
        if self.param.iter_size != 1:
            blob.diff *= f32(1.0) / f32(self.param.iter_size)

    def regularize(self, blob, decay_mult):
        decay = f32(self.param.weight_decay) * f32(decay_mult)
        if not decay:
            return
        if self.param.regularization_type == "L2":
            blob.diff += decay * blob.data
        else:
            blob.diff += decay * self.xp.sign(blob.data)

    def compute_update_value(self, param_id, blob, local_rate):
        momentum = f32(self.param.momentum)
        history = self.history[param_id]
        history *= momentum
        history += local_rate * blob.diff
        blob.diff[...] = history

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
            array = files.blob_proto_to_array(proto)
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

    def compute_update_value(self, param_id, blob, local_rate):
        momentum = f32(self.param.momentum)
        history = self.history[param_id]
        previous = history.copy()
        history *= momentum
        history += local_rate * blob.diff
        previous *= -momentum
        previous += (f32(1) + momentum) * history
        blob.diff[...] = previous


class _NoMomentum(SGDSolver):
    """AdaGrad and RMSProp: ``u = lr * g / (sqrt(h) + delta)``, no momentum."""

    def check_param(self):
        if self.param.momentum != 0:
            raise CaffeError(f"Momentum cannot be used with {self.type} (momentum: "
                             f"{caffe_float(self.param.momentum)})")

    def scale_by_rms(self, blob, history, local_rate):
        update = self.xp.sqrt(history)
        update += f32(self.param.delta)
        blob.diff /= update
        blob.diff *= local_rate


@register_solver("AdaGrad")
class AdaGradSolver(_NoMomentum):
    """AdaGrad (Caffe's AdaGradSolver)."""

    def compute_update_value(self, param_id, blob, local_rate):
        history = self.history[param_id]
        history += blob.diff * blob.diff
        self.scale_by_rms(blob, history, local_rate)


@register_solver("RMSProp")
class RMSPropSolver(_NoMomentum):
    """RMSProp with ``rms_decay`` (Caffe's RMSPropSolver)."""

    def check_param(self):
        super().check_param()
        if not 0 <= self.param.rms_decay < 1:
            raise CaffeError(f"rms_decay should lie between 0 and 1, got "
                             f"{caffe_float(self.param.rms_decay)}")

    def compute_update_value(self, param_id, blob, local_rate):
        decay = f32(self.param.rms_decay)
        history = self.history[param_id]
        history *= decay
        history += (f32(1) - decay) * (blob.diff * blob.diff)
        self.scale_by_rms(blob, history, local_rate)


@register_solver("AdaDelta")
class AdaDeltaSolver(SGDSolver):
    """AdaDelta (Caffe's AdaDeltaSolver); ``momentum`` is the decay of both averages."""

    histories_per_param = 2

    def compute_update_value(self, param_id, blob, local_rate):
        momentum = f32(self.param.momentum)
        delta = f32(self.param.delta)
        grads = self.history[param_id]
        updates = self.history[len(self.net.learnable_params) + param_id]
        grads *= momentum
        grads += (f32(1) - momentum) * (blob.diff * blob.diff)
        ratio = (updates + delta) / (grads + delta)
        blob.diff *= self.xp.sqrt(ratio)
        updates *= momentum
        updates += (f32(1) - momentum) * (blob.diff * blob.diff)
        blob.diff *= local_rate


@register_solver("Adam")
class AdamSolver(SGDSolver):
    """Adam (Caffe's AdamSolver): ``momentum`` = beta1, ``momentum2`` = beta2,
    ``delta`` = epsilon, with the bias correction folded into the rate."""

    histories_per_param = 2

    def compute_update_value(self, param_id, blob, local_rate):
        beta1 = f32(self.param.momentum)
        beta2 = f32(self.param.momentum2)
        m = self.history[param_id]
        v = self.history[len(self.net.learnable_params) + param_id]
        t = self.iter + 1
        correction = f32(math.sqrt(1.0 - float(beta2) ** t) / (1.0 - float(beta1) ** t))
        m *= beta1
        m += (f32(1) - beta1) * blob.diff
        v *= beta2
        v += (f32(1) - beta2) * (blob.diff * blob.diff)
        update = self.xp.sqrt(v)
        update += f32(self.param.delta)
        blob.diff[...] = m / update
        blob.diff *= f32(local_rate * correction)
