"""The Label-free paper's quantisers (He & Cheng, ECCV 2018), from its maths.

Weights are quantised one kernel (output row) at a time as ``W ~ alpha * Q``:

* **power of two** (``b`` bits): ``Q`` in ``{0, +-2^m, ..., +-2^(m+K-1)}`` with
  ``K = 2^(b-1) - 1`` magnitudes (4 bits: 0 and 7 powers each sign).  A value
  ``v = w / alpha`` goes to the nearer of the two powers around it in linear
  distance (``2^e`` when ``|v| <= 1.5 * 2^e``, ties down), to 0 below ``2^m``
  (``|v| <= 0.75 * 2^m``), and is clipped at ``2^(m+K-1)``.
* **fixed point** (``b`` bits, ``i`` integer bits, ``f = b - i`` fraction
  bits): ``Q = k / 2^f`` with the integer code ``k = round(v * 2^f)`` (ties
  down) clipped to ``[-2^(b-1), 2^(b-1) - 1]``.  We store ``k`` and fold
  ``2^-f`` into ``alpha`` (the same product, exactly).

``alpha`` (one per kernel) and ``Q`` come from the paper's alternating
minimisation of ``||w - alpha Q||^2``: ``alpha = mean(w^2)`` to start, then
``Q = quant(w / alpha)`` and ``alpha = <w, Q> / (<Q, Q> + 1e-7)`` in turn until
``alpha`` moves by at most 1e-7 of its norm (one difference: a kernel whose
first levels are all 0, which happens for weights of magnitude about 1 and
more, starts from ``max|w|`` on the largest level instead of staying 0).  The
scale of ``Q`` is free under ``alpha``, so the range parameter (``m`` for powers, ``i`` for fixed point)
only changes where the iteration starts: the paper tries each (``m`` = 0..3,
``i`` = 1..b) and keeps the smallest layer error, as :func:`quantize_kernels`.

Activations (:class:`StepSearch`): codes ``q = clip(floor(x / a + 0.5), 0, T)``
(``T = 127`` at 8 bits), the step ``a`` from ``max(x) / T``, then
``a = <x, q> / <q, q>`` until it moves by at most 1e-3 of itself or the
error ``||x - a q||`` grows (the last step that did not grow it is kept).
"""
import dataclasses
import logging

import numpy

from .. import parallel

log = logging.getLogger("pycaffe_lite")

WEIGHT_BITS = range(2, 7)       # power of two: 2^(b-1)-1 magnitudes must fit a float32
FIXED_BITS = range(2, 17)
ACT_BITS = range(2, 17)
EXPONENT_STARTS = range(0, 4)   # the paper's search: 2^0 .. 2^3 as the smallest magnitude
ALPHA_TOLERANCE = 1e-7
STEP_TOLERANCE = 1e-3
MAX_ITERATIONS = 1000


def power_of_two(v, bits, low):
    """``v`` (float32 array) to ``{0, +-2^low, ..., +-2^(low + 2^(bits-1) - 2)}``.

    On the float32 bits: ``|v| = 1.f * 2^e`` goes to ``2^(e+1)`` when
    ``1.f > 1.5`` (fraction bits above 0x400000), else to ``2^e``; positive
    float32 bit patterns order as the values do, so the range is two integer
    comparisons.
    """
    v = numpy.ascontiguousarray(v, dtype=numpy.float32)
    b = v.view(numpy.int32)
    magnitude = b & numpy.int32(0x7FFFFFFF)
    rounded = (magnitude & numpy.int32(0x7F800000)) + (
        (magnitude & numpy.int32(0x7FFFFF)) > 0x400000).astype(numpy.int32) * (1 << 23)
    smallest = numpy.int32((127 + low) << 23)
    largest = numpy.int32((127 + low + 2 ** (bits - 1) - 2) << 23)
    numpy.minimum(rounded, largest, out=rounded)
    rounded[rounded < smallest] = 0
    rounded |= (b & numpy.int32(-0x80000000)) * (rounded != 0)
    return rounded.view(numpy.float32)


def fixed_point(v, bits, integer_bits):
    """The integer codes ``k`` of ``v`` at ``integer_bits`` of ``bits`` (value ``k / 2^f``)."""
    scale = numpy.float32(2.0 ** (bits - integer_bits))
    top = 2 ** (bits - 1)
    clipped = numpy.clip(numpy.asarray(v, dtype=numpy.float32), -top / scale,
                         (top - 1) / scale)
    return numpy.ceil(clipped * scale - numpy.float32(0.5)).astype(numpy.float32)


@dataclasses.dataclass
class KernelQuantization:
    """``W ~ alpha[:, None] * levels`` for a (kernels, kernel size) matrix."""
    levels: numpy.ndarray       # float32 integers: powers of two, or fixed-point codes
    alpha: numpy.ndarray        # float32, one per kernel
    kind: str                   # "power" or "fixed"
    bits: int
    start: int                  # power: smallest exponent m; fixed: integer bits i
    iterations: int
    error: float                # sum of squared errors

    def range_text(self):
        if self.kind == "power":
            top = self.start + 2 ** (self.bits - 1) - 2
            return f"{self.bits}-bit power of two: 0, +-2^{self.start}..2^{top}"
        return f"{self.bits}-bit fixed point, {self.start} integer bit(s)"

    def reconstruction(self):
        return self.alpha[:, None] * self.levels.reshape(len(self.alpha), -1)


def _levels(kind, v, bits, start):
    if kind == "power":
        return power_of_two(v, bits, start)
    levels = fixed_point(v, bits, start)
    return levels / numpy.float32(2.0 ** (bits - start))


def _largest_level(kind, bits, start):
    if kind == "power":
        return 2.0 ** (start + 2 ** (bits - 1) - 2)
    return (2 ** (bits - 1) - 1) / 2.0 ** (bits - start)


def alternate(w, kind, bits, start, max_iterations=MAX_ITERATIONS):
    """The paper's alternating minimisation from ``alpha = mean(w^2)`` per row.

    Returns ``(Q, alpha, iterations)``; ``Q`` in the quantiser's own units
    (fixed point: ``k / 2^f``).  A row of zeros keeps ``Q = 0``, ``alpha = 1``.
    A row whose ``Q`` did not change has found its ``alpha`` for good (the
    next one would be the same), so only the others are iterated: the same
    result as iterating every row, as the stopping rule sums over rows.
    """
    w = numpy.asarray(w, dtype=numpy.float32)
    alpha = (w.astype(numpy.float64) ** 2).mean(axis=1)
    alpha[alpha == 0] = 1
    q = _levels(kind, w / alpha[:, None].astype(numpy.float32), bits, start)
    active = numpy.flatnonzero((w != 0).any(axis=1))
    # mean(w^2) is a first scale only for small weights: where it sends every
    # level of a row to 0 (|w| of about 1 and more), the iteration could not
    # start; there we start from max|w| on the largest level instead.
    stuck = active[~q[active].any(axis=1)]
    if stuck.size:
        alpha[stuck] = numpy.abs(w[stuck]).max(axis=1) / _largest_level(kind, bits, start)
        q[stuck] = _levels(kind, w[stuck] / alpha[stuck, None].astype(numpy.float32), bits,
                           start)
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        wa, qa = w[active], q[active]
        new = ((wa * qa).sum(axis=1, dtype=numpy.float64)
               / ((qa * qa).sum(axis=1, dtype=numpy.float64) + 1e-7))
        zero = new == 0                       # every level 0: keep the old scale
        new[zero] = alpha[active][zero]
        step = numpy.linalg.norm(new - alpha[active])
        alpha[active] = new
        moved = step / numpy.linalg.norm(alpha)
        qn = _levels(kind, wa / new[:, None].astype(numpy.float32), bits, start)
        changed = (qn != qa).any(axis=1)
        q[active] = qn
        active = active[changed]
        if moved <= ALPHA_TOLERANCE or not active.size:
            return q, alpha.astype(numpy.float32), iteration
    log.warning("alternating minimisation stopped after %d iterations (alpha still moving)",
                max_iterations)
    return q, alpha.astype(numpy.float32), iteration


def quantize_kernels(weight, kind, bits):
    """Quantise ``weight`` (first axis: kernels) with the best start of the paper's search."""
    if kind == "power" and bits not in WEIGHT_BITS:
        raise ValueError(f"power-of-two weights take {WEIGHT_BITS.start}..{WEIGHT_BITS.stop - 1} "
                         f"bits, got {bits}")
    if kind == "fixed" and bits not in FIXED_BITS:
        raise ValueError(f"fixed-point weights take {FIXED_BITS.start}..{FIXED_BITS.stop - 1} "
                         f"bits, got {bits}")
    w = numpy.asarray(weight, dtype=numpy.float32).reshape(weight.shape[0], -1)
    starts = list(EXPONENT_STARTS if kind == "power" else range(1, bits + 1))
    tried = {}

    def attempt(start, _worker):
        q, alpha, iterations = alternate(w, kind, bits, start)
        diff = w - alpha[:, None] * q
        error = float(numpy.einsum("ij,ij->", diff, diff, dtype=numpy.float64))
        tried[start] = KernelQuantization(q, alpha, kind, bits, start, iterations, error)

    # The starts are independent: side by side on the thread pool (measured 1.5-2x
    # faster on 2 cores than cutting each iteration into cache-sized pieces).
    parallel.for_each(starts, attempt)
    best = None
    for start in starts:                       # the first of equal errors, as the paper
        if best is None or tried[start].error < best.error:
            best = tried[start]
    if kind == "fixed":     # store the integer codes; 2^-f goes into alpha (exact)
        scale = numpy.float32(2.0 ** (bits - best.start))
        best.levels = best.levels * scale
        best.alpha = best.alpha / scale
    best.levels = best.levels.reshape(weight.shape)
    return best


def act_top_code(bits):
    """The largest activation code: 127 at 8 bits (the paper's int8 range)."""
    if bits not in ACT_BITS:
        raise ValueError(f"activations take {ACT_BITS.start}..{ACT_BITS.stop - 1} bits, got {bits}")
    return 2 ** (bits - 1) - 1


def act_codes(x, step, top):
    """``clip(floor(x / step + 0.5), 0, top)`` in float32, as the Quant layer computes."""
    code = numpy.floor(x / numpy.float32(step) + numpy.float32(0.5))
    return numpy.clip(code, 0, top, out=code)


@dataclasses.dataclass
class StepEvaluation:
    """Sums over the calibration activations at one step ``a``."""
    xq: float = 0.0         # sum x * q
    qq: float = 0.0         # sum q * q
    error: float = 0.0      # sum (x - a q)^2
    xx: float = 0.0         # sum x * x
    clipped: int = 0        # values whose code would pass the top (x / a + 0.5 >= top + 1)
    count: int = 0

    def add(self, x, step, top):
        x = numpy.asarray(x, dtype=numpy.float32).ravel()
        q = act_codes(x, step, top)
        x64, q64 = x.astype(numpy.float64), q.astype(numpy.float64)
        self.xq += float(x64 @ q64)
        self.qq += float(q64 @ q64)
        r = x64 - float(step) * q64
        self.error += float(r @ r)
        self.xx += float(x64 @ x64)
        self.clipped += int(numpy.count_nonzero(x / numpy.float32(step) + numpy.float32(0.5)
                                                >= top + 1))
        self.count += x.size


class StepSearch:
    """The paper's activation step iteration, fed one pass over the data at a time.

    Pass 0 gives ``max(x)`` (:meth:`start`); every later pass evaluates
    :attr:`step` (:class:`StepEvaluation`) and :meth:`feed` moves on.
    :attr:`result` is set once the iteration has stopped.
    """

    def __init__(self, top):
        self.top = top
        self.step = None
        self.result = None
        self.evaluations = {}       # step -> StepEvaluation
        self._accepted = None       # the last step that did not increase the error
        self._accepted_error = numpy.inf
        self.iterations = 0

    def start(self, maximum):
        if not maximum > 0:             # a dead ReLU: any step gives code 0
            self.result = 1.0
            self.evaluations[1.0] = StepEvaluation()
            return
        self.step = float(numpy.float32(maximum) / numpy.float32(self.top))

    def feed(self, evaluation):
        self.evaluations[self.step] = evaluation
        if self._accepted is not None:
            self.iterations += 1
            if evaluation.error > self._accepted_error:
                self.result = self._accepted
                return
            moved = abs(self._accepted - self.step) / self.step
            self._accepted, self._accepted_error = self.step, evaluation.error
            if moved <= STEP_TOLERANCE or self.iterations >= MAX_ITERATIONS:
                self.result = self.step
                return
        else:
            self._accepted = self.step
        if evaluation.qq == 0:          # every code 0 at this step: nothing to fit
            self.result = self._accepted
            return
        self.step = float(numpy.float32(evaluation.xq / evaluation.qq))

    @property
    def final(self):
        return self.evaluations[self.result]
