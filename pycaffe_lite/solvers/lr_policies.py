"""Learning-rate policies (Caffe's ``SGDSolver::GetLearningRate``).

With ``it`` the iteration (updates done so far)::

    fixed      base_lr
    step       base_lr * gamma ^ floor(it / stepsize)
    exp        base_lr * gamma ^ it
    inv        base_lr * (1 + gamma * it) ^ (-power)
    multistep  base_lr * gamma ^ k, k = number of stepvalues reached (one more at most
               per call, as Caffe counts them)
    poly       base_lr * (1 - it / max_iter) ^ power
    sigmoid    base_lr / (1 + exp(-gamma * (it - stepsize)))

The arithmetic follows Caffe's types: ``pow(float, int)`` is computed in double,
``pow(float, float)`` and ``exp(float)`` are float functions (correctly rounded
here: the double result rounded to float), the rest is float arithmetic; the
rate is a float.
"""
import logging
import math

import numpy

from .solver import SolverParamError

log = logging.getLogger("pycaffe_lite")

f32 = numpy.float32


def _fixed(p, it, step):
    return f32(p.base_lr), step


def _step(p, it, step):
    step = it // p.stepsize
    return f32(float(f32(p.base_lr)) * float(f32(p.gamma)) ** step), step


def _exp(p, it, step):
    return f32(float(f32(p.base_lr)) * float(f32(p.gamma)) ** it), step


def _powf(base, exponent):
    """C's powf (correctly rounded), which numpy's float32 power is not always."""
    with numpy.errstate(all="ignore"):
        return f32(numpy.power(numpy.float64(base), numpy.float64(exponent)))


def _inv(p, it, step):
    base = f32(1) + f32(p.gamma) * f32(it)
    return f32(p.base_lr) * _powf(base, -f32(p.power)), step


def _multistep(p, it, step):
    if step < len(p.stepvalue) and it >= p.stepvalue[step]:
        step += 1
        log.info("MultiStep Status: Iteration %d, step = %d", it, step)
    return f32(float(f32(p.base_lr)) * float(f32(p.gamma)) ** step), step


def _poly(p, it, step):
    base = f32(1) - f32(it) / f32(p.max_iter)
    return f32(p.base_lr) * _powf(base, f32(p.power)), step


def _sigmoid(p, it, step):
    x = -f32(p.gamma) * (f32(it) - f32(p.stepsize))
    with numpy.errstate(over="ignore"):
        expf = f32(numpy.exp(numpy.float64(x)))
    return f32(p.base_lr) * (f32(1) / (f32(1) + expf)), step


LR_POLICIES = {"fixed": _fixed, "step": _step, "exp": _exp, "inv": _inv,
               "multistep": _multistep, "poly": _poly, "sigmoid": _sigmoid}


def check_lr_policy(param):
    """Raise a SolverParamError when ``param``'s lr policy is unknown or lacks a setting."""
    policy = param.lr_policy
    if policy not in LR_POLICIES:
        shown = f"'{policy}'" if policy else "none (lr_policy is not set)"
        raise SolverParamError(f"unknown learning rate policy {shown}; known policies: "
                               f"{', '.join(LR_POLICIES)}", "lr_policy")
    if policy == "step" and param.stepsize <= 0:
        raise SolverParamError(f"lr_policy 'step' needs stepsize > 0, got {param.stepsize}",
                               "stepsize")
    if policy == "poly" and param.max_iter <= 0:
        raise SolverParamError(f"lr_policy 'poly' needs max_iter > 0, got {param.max_iter}",
                               "max_iter")


def learning_rate(param, it, current_step=0):
    """``(rate, current_step)`` of iteration ``it`` under ``param`` (a SolverParameter).

    ``current_step`` is the solver's step counter (used and advanced by ``step``
    and ``multistep``, stored in the solverstate).
    """
    check_lr_policy(param)
    rate, step = LR_POLICIES[param.lr_policy](param, int(it), int(current_step))
    if not math.isfinite(float(rate)):
        raise SolverParamError(f"lr_policy '{param.lr_policy}' gives a non-finite learning "
                               f"rate ({rate}) at iteration {it}", "lr_policy")
    return f32(rate), step
