"""The Label-free quantisers on small cases worked out by hand."""
import numpy
import pytest

from pycaffe_lite.compress import quantizers as q


def f32(values):
    return numpy.asarray(values, dtype=numpy.float32)


def test_power_of_two_levels_by_hand():
    # 4 bits: 0 and +-2^m .. +-2^(m+6).  Nearer power in linear distance (1.5 * 2^e
    # ties down), 0 below 2^m (|v| <= 0.75 * 2^m), clipped at 2^(m+6).
    v = f32([0, 0.7, 0.75, 0.76, 1, 1.5, 1.6, 3, 3.1, 6, 100, -1.6, -0.2, -0.0])
    assert q.power_of_two(v, 4, 0).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 4, 4, 64, -2, 0, 0]
    assert q.power_of_two(v, 4, 2).tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 128, 0, 0, 0]
    # 2 bits: ternary {0, +-2^m}; 3 bits: 0, +-2^m .. +-2^(m+2)
    assert q.power_of_two(v, 2, 0).tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, -1, 0, 0]
    assert q.power_of_two(v, 3, 1).tolist() == [0, 0, 0, 0, 0, 0, 2, 2, 4, 4, 8, -2, 0, 0]
    assert not numpy.signbit(q.power_of_two(f32([-0.1, -0.0]), 4, 0)).any()


def test_power_of_two_matches_the_log2_definition_on_many_values():
    rng = numpy.random.default_rng(0)
    v = f32(rng.standard_normal(20000) * 40)
    for bits in (2, 4, 6):
        for low in range(4):
            a = numpy.abs(v).astype(numpy.float64)
            lower = 2.0 ** numpy.floor(numpy.log2(numpy.maximum(a, 1e-30)))
            ref = numpy.where(a > 1.5 * lower, 2 * lower, lower)
            ref[ref < 2.0 ** low] = 0
            ref = numpy.minimum(ref, 2.0 ** (low + 2 ** (bits - 1) - 2)) * numpy.sign(v)
            assert numpy.array_equal(q.power_of_two(v, bits, low), ref), (bits, low)


def test_fixed_point_rounding_by_hand():
    # 8 bits, 4 integer bits: k = round(v * 16), ties down, clipped to -128..127.
    v = f32([0.03125, 0.0313, -0.03125, -0.0313, 0.09375, 1.0, 100, -100, 7.9])
    assert q.fixed_point(v, 8, 4).tolist() == [0, 1, -1, -1, 1, 16, 127, -128, 126]
    # 4 bits, 1 integer bit: k = round(v * 8) in -8..7
    assert q.fixed_point(f32([0.3, -0.3, 2, -2, 0.0625]), 4, 1).tolist() == [2, -2, 7, -8, 0]


def test_alternation_finds_exact_powers_of_two():
    # mean(w^2) = 21.25e-4 sends w / alpha to [4.7, 9.4, 18.8, 37.6] -> Q = [4, 8, 16, 32],
    # alpha = <w, Q> / <Q, Q> = 0.0025, then Q is stable: w = 0.0025 * Q exactly.
    w = f32([[0.01, 0.02, 0.04, 0.08]])
    levels, alpha, iterations = q.alternate(w, "power", 4, 0)
    assert levels.tolist() == [[4, 8, 16, 32]]
    assert alpha[0] == pytest.approx(0.0025, rel=1e-6)
    assert iterations == 1
    result = q.quantize_kernels(w, "power", 4)
    assert result.error < 1e-14
    numpy.testing.assert_allclose(result.reconstruction(), w, rtol=1e-6)


def test_alternation_converges_to_a_fixed_point_of_both_steps():
    rng = numpy.random.default_rng(1)
    w = f32(rng.standard_normal((6, 50)) * 0.05)
    for kind, bits, start in (("power", 4, 1), ("fixed", 8, 3)):
        levels, alpha, _ = q.alternate(w, kind, bits, start)
        # alpha is the least-squares scale of its Q, and Q the quantisation at that alpha
        best = (w * levels).sum(1, dtype=numpy.float64) / (
            (levels * levels).sum(1, dtype=numpy.float64) + 1e-7)
        numpy.testing.assert_allclose(alpha, best, rtol=1e-6)
        again = q._levels(kind, w / alpha[:, None], bits, start)
        assert numpy.array_equal(again, levels)


def test_the_search_keeps_the_start_with_the_smallest_error():
    rng = numpy.random.default_rng(2)
    w = f32(rng.laplace(size=(8, 30)) * 0.02)
    for kind, bits, starts in (("power", 4, range(4)), ("fixed", 6, range(1, 7))):
        errors = []
        for start in starts:
            levels, alpha, _ = q.alternate(w, kind, bits, start)
            diff = w - alpha[:, None] * levels
            errors.append(float(numpy.einsum("ij,ij->", diff, diff, dtype=numpy.float64)))
        result = q.quantize_kernels(w, kind, bits)
        assert result.start == list(starts)[int(numpy.argmin(errors))]
        assert result.error == pytest.approx(min(errors))


def test_stored_levels_are_powers_of_two_or_integer_codes():
    rng = numpy.random.default_rng(3)
    w = f32(rng.standard_normal((16, 3, 3, 3)) * 0.1)
    power = q.quantize_kernels(w, "power", 4)
    magnitudes = numpy.unique(numpy.abs(power.levels))
    low = power.start
    assert set(magnitudes) <= {0.0} | {2.0 ** e for e in range(low, low + 7)}
    fixed = q.quantize_kernels(w, "fixed", 8)
    assert numpy.array_equal(fixed.levels, numpy.round(fixed.levels))
    assert fixed.levels.min() >= -128 and fixed.levels.max() <= 127
    rel = numpy.linalg.norm(fixed.reconstruction() - w.reshape(16, -1)) / numpy.linalg.norm(w)
    assert rel < 0.01            # 8-bit fixed point: about 2^-7 of the range


def test_large_weights_do_not_quantise_to_zero():
    # mean(w^2) = 21.25 would send every w / alpha below 0.75 (all levels 0)
    w = f32([[1, 2, 4, 8], [0, 0, 0, 0]])
    result = q.quantize_kernels(w, "power", 4)
    numpy.testing.assert_allclose(result.reconstruction()[0], w[0], rtol=1e-6)
    assert result.levels[1].tolist() == [0, 0, 0, 0] and result.alpha[1] == 1


def test_bits_out_of_range():
    with pytest.raises(ValueError, match="2..6 bits, got 7"):
        q.quantize_kernels(f32([[1.0]]), "power", 7)
    with pytest.raises(ValueError, match="activations take 2..16 bits, got 1"):
        q.act_top_code(1)
    assert q.act_top_code(8) == 127


def paper_step(x, top=127):
    """The activation step iteration, as the paper's script runs it on all values at once."""
    x = x.astype(numpy.float32)
    alpha = numpy.float32(x.max()) / numpy.float32(top)
    code = numpy.clip(numpy.floor(x / alpha + 0.5), 0, top)
    prev, div, best = alpha, 1e10, 1e10
    while div > 1e-3:
        alpha = float(x.astype(numpy.float64) @ code) / float(code @ code)
        code = numpy.clip(numpy.floor(x / numpy.float32(alpha) + 0.5), 0, top)
        div = abs(prev - alpha) / alpha
        loss = numpy.linalg.norm(x.astype(numpy.float64) - alpha * code)
        if loss > best:
            break
        best, prev = loss, alpha
    return prev


def search(x, top=127, pieces=1):
    s = q.StepSearch(top)
    s.start(x.max())
    while s.result is None:
        e = q.StepEvaluation()
        for part in numpy.array_split(x, pieces):
            e.add(part, s.step, top)
        s.feed(e)
    return s


def test_activation_step_by_hand():
    # max 127 -> step 1: every value is a code, the fit is exact and the step stays
    x = f32([0, 1, 1, 2, 5, 127])
    s = search(x)
    assert s.result == 1.0 and s.iterations == 1 and s.final.error == 0
    # a dead ReLU (all 0): any step; nothing is clipped
    assert search(f32([0, 0, 0])).result == 1.0


def test_activation_step_follows_the_paper_iteration():
    rng = numpy.random.default_rng(4)
    for trial in range(5):
        x = numpy.maximum(f32(rng.standard_normal(5000) * (trial + 1)), 0)
        x[:3] = 30 * x.max()    # a few outliers: the step leaves max / 127 and clips them
        s = search(x, pieces=7)      # sums over pieces = sums over all
        assert s.result == pytest.approx(paper_step(x), rel=1e-6)
        assert s.result < x.max() / 127
        codes = numpy.floor(x / numpy.float32(s.result) + numpy.float32(0.5))
        assert s.final.clipped == numpy.count_nonzero(codes > 127) >= 3
