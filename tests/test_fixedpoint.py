"""qsim.fixedpoint against plain big-int / exact-rational statements of each definition.

The references below are written from the definitions (what the result *means*:
a rounded rational), not from the vectorized bit tricks in qsim.fixedpoint, so a
wrong nudge, mask or shift there fails here.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qsim import fixedpoint as fp
from qsim.errors import QsimError

I32 = st.integers(min_value=fp.INT32_MIN, max_value=fp.INT32_MAX)
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def ref_round_half_up(r: Fraction) -> int:
    return math.floor(r + Fraction(1, 2))


def ref_round_half_away(r: Fraction) -> int:
    return math.floor(r + Fraction(1, 2)) if r >= 0 else -math.floor(-r + Fraction(1, 2))


def ref_srdhm(a: int, b: int) -> int:
    """High word of the doubled product, a*b/2^31, nearest, ties toward +inf; MIN*MIN saturates."""
    if a == b == INT32_MIN:
        return INT32_MAX
    return ref_round_half_up(Fraction(a * b, 2 ** 31))


def ref_rdbpot(x: int, e: int) -> int:
    return ref_round_half_away(Fraction(x, 2 ** e))


def ref_wrap32(v: int) -> int:
    return (v + 2 ** 31) % 2 ** 32 - 2 ** 31


def ref_mbqm_double(x: int, m0: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    return ref_rdbpot(ref_srdhm(ref_wrap32(x * 2 ** left), m0), right)


def ref_mbqm_single(x: int, m0: int, shift: int) -> int:
    return ref_round_half_up(Fraction(x * m0, 2 ** (31 - shift)))


# ------------------------------------------------------------------ SRDHM

def test_srdhm_int32_min_squared_saturates():
    assert int(fp.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN)) == INT32_MAX
    # and the neighbours do not saturate
    assert int(fp.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN + 1)) == ref_srdhm(INT32_MIN, INT32_MIN + 1)
    assert int(fp.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MAX)) == ref_srdhm(INT32_MIN, INT32_MAX)


def test_srdhm_ties():
    # a*b = +-2^30 is exactly +-0.5 after the /2^31: +0.5 -> 1, -0.5 -> 0 (ties toward +inf)
    assert int(fp.saturating_rounding_doubling_high_mul(1 << 15, 1 << 15)) == 1
    assert int(fp.saturating_rounding_doubling_high_mul(-(1 << 15), 1 << 15)) == 0
    assert int(fp.saturating_rounding_doubling_high_mul(-3 * (1 << 15), 1 << 15)) == -1  # -1.5 -> -1


@settings(max_examples=3000, derandomize=True)
@given(I32, I32)
def test_srdhm_matches_definition(a, b):
    assert int(fp.saturating_rounding_doubling_high_mul(a, b)) == ref_srdhm(a, b)


def test_srdhm_vectorized_matches_scalar():
    rng = np.random.default_rng(1)
    a = rng.integers(INT32_MIN, INT32_MAX, 20000, endpoint=True)
    b = rng.integers(INT32_MIN, INT32_MAX, 20000, endpoint=True)
    got = fp.saturating_rounding_doubling_high_mul(a, b)
    assert [int(v) for v in got] == [ref_srdhm(int(x), int(y)) for x, y in zip(a, b)]


# ------------------------------------------------------------------ RoundingDivideByPOT

@pytest.mark.parametrize("e", range(0, 32))
def test_rdbpot_every_exponent(e):
    rng = np.random.default_rng(e)
    xs = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 2000, endpoint=True),
                         [INT32_MIN, INT32_MAX, 0, -1, 1],
                         # exact ties, both signs
                         [(2 * k + 1) * (1 << e) // 2 for k in range(-5, 5)] if e > 0 else []]).astype(np.int64)
    got = fp.rounding_divide_by_pot(xs, e)
    assert [int(v) for v in got] == [ref_rdbpot(int(x), e) for x in xs]


def test_rdbpot_negative_ties_round_away_from_zero():
    assert int(fp.rounding_divide_by_pot(-3, 1)) == -2
    assert int(fp.rounding_divide_by_pot(3, 1)) == 2
    assert int(fp.rounding_divide_by_pot(-5, 2)) == -1  # -1.25
    assert int(fp.rounding_divide_by_pot(-6, 2)) == -2  # -1.5


def test_rdbpot_rejects_bad_exponent():
    with pytest.raises(ValueError):
        fp.rounding_divide_by_pot(1, 32)


# ------------------------------------------------------------------ QuantizeMultiplier

def test_quantize_multiplier_rounds_up_to_two_pow_31():
    # q = 1 - 2^-40 rounds to 2^31 -> halved to 2^30 with the exponent bumped.
    assert fp.quantize_multiplier(1 - 2 ** -40) == (1 << 30, 1)
    assert fp.quantize_multiplier(0.5 - 2 ** -41) == (1 << 30, 0)


def test_quantize_multiplier_hand_values():
    assert fp.quantize_multiplier(0.5) == (1 << 30, 0)
    assert fp.quantize_multiplier(0.25) == (1 << 30, -1)
    assert fp.quantize_multiplier(1.0) == (1 << 30, 1)
    assert fp.quantize_multiplier(0.75) == (3 << 29, 0)
    assert fp.quantize_multiplier(0.0) == (0, 0)
    assert fp.quantize_multiplier(2.0 ** -40) == (0, 0)  # below 2^-31: flushed
    assert fp.quantize_multiplier(3.0 * 2 ** 31, single_rounding=True) == (INT32_MAX, 30)


@settings(max_examples=2000, derandomize=True)
@given(st.floats(min_value=2.0 ** -31, max_value=2.0 ** 30, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_represents_the_real_value(m):
    m0, shift = fp.quantize_multiplier(m)
    assert (1 << 30) <= m0 < (1 << 31)
    # M0 * 2^(shift-31) is the nearest Q31 significand: error at most half an ulp of 2^(shift-31)
    err = abs(Fraction(m0) * Fraction(2) ** (shift - 31) - Fraction(m))
    assert err <= Fraction(2) ** (shift - 32)


def test_quantize_multiplier_bad_values():
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            fp.quantize_multiplier(bad)


# ------------------------------------------------------------------ MultiplyByQuantizedMultiplier

@pytest.mark.parametrize("shift", range(-31, 31))
def test_mbqm_every_shift_both_roundings(shift):
    rng = np.random.default_rng(100 + shift)
    m0s = np.concatenate([rng.integers(1 << 30, INT32_MAX, 300, endpoint=True), [1 << 30, INT32_MAX]])
    if shift > 0:  # left shifts: TFLite's inputs fit after the shift; include wrapping cases too
        xs = rng.integers(-(1 << (31 - shift)), 1 << (31 - shift), 302)
    else:
        xs = rng.integers(INT32_MIN, INT32_MAX, 302, endpoint=True)
    xs[:2] = [INT32_MIN if shift <= 0 else -(1 << (31 - shift)), -1]
    got_d = fp.multiply_by_quantized_multiplier(xs, m0s, shift, "double")
    got_s = fp.multiply_by_quantized_multiplier(xs, m0s, shift, "single")
    assert [int(v) for v in got_d] == [ref_mbqm_double(int(x), int(m), shift) for x, m in zip(xs, m0s)]
    assert [int(v) for v in got_s] == [ref_mbqm_single(int(x), int(m), shift) for x, m in zip(xs, m0s)]


def test_double_and_single_rounding_really_differ():
    # M = M0 * 2^(shift-31) = 2^30 * 2^-32 = 0.25.
    # x = 5: SRDHM gives 5 * 0.5 = 2.5 -> 3 (tie up), then 3 / 2 = 1.5 -> 2 (away);
    #        single rounding rounds 5 * 0.25 = 1.25 once -> 1.
    assert int(fp.multiply_by_quantized_multiplier(5, 1 << 30, -1, "double")) == 2
    assert int(fp.multiply_by_quantized_multiplier(5, 1 << 30, -1, "single")) == 1
    # x = -10: SRDHM exact (-5), then -5 / 2 = -2.5 -> -3 (away from zero); single: -2.5 -> -2 (half up).
    assert int(fp.multiply_by_quantized_multiplier(-10, 1 << 30, -1, "double")) == -3
    assert int(fp.multiply_by_quantized_multiplier(-10, 1 << 30, -1, "single")) == -2


def test_mbqm_per_channel_broadcast():
    acc = np.array([[100, 200, -300], [7, -8, 9]])
    m0 = np.array([1 << 30, 3 << 29, 1 << 30])
    sh = np.array([0, -2, 3])
    got = fp.multiply_by_quantized_multiplier(acc, m0, sh)
    want = [[ref_mbqm_double(int(acc[i, c]), int(m0[c]), int(sh[c])) for c in range(3)] for i in range(2)]
    assert got.tolist() == want


def test_single_rounding_rejects_out_of_range_shift():
    with pytest.raises(ValueError):
        fp.multiply_by_quantized_multiplier(1, 1 << 30, 31, "single")
    with pytest.raises(ValueError):
        fp.multiply_by_quantized_multiplier(1, 1 << 30, 0, "triple")


# ------------------------------------------------------------------ requantize

def test_requantize_hand_derived():
    # acc 1000 + bias 24 = 1024; M = 0.5 (M0 = 2^30, shift 0) -> 512; + zp 3 = 515
    assert int(fp.requantize(1000, 24, 1 << 30, 0, 3, -10_000, 10_000)) == 515
    # same, clamped to int8 and to a RELU6-like range
    assert int(fp.requantize(1000, 24, 1 << 30, 0, 3, -128, 127)) == 127
    assert int(fp.requantize(-1000, 24, 1 << 30, 0, 3, -128, 127)) == -128
    assert int(fp.requantize(-1000, 24, 1 << 30, 0, 3, 3, 50)) == 3


def test_requantize_accumulator_add_wraps_like_int32():
    assert int(fp.requantize(INT32_MAX, 1, 1 << 30, 1, 0, INT32_MIN, INT32_MAX)) == \
        ref_mbqm_double(INT32_MIN, 1 << 30, 1)


def test_round_half_away_is_exact_at_the_largest_double_below_one_half():
    just_below_half = 0.49999999999999994  # floor(x + 0.5) would give 1
    assert fp.round_half_away_int(just_below_half) == 0
    assert fp.round_half_away_int(-just_below_half) == 0
    assert float(fp.round_half_away(just_below_half)) == 0.0
    assert [fp.round_half_away_int(v) for v in (0.5, -0.5, 1.5, -2.5, 2.4999)] == [1, -1, 2, -3, 2]
    assert fp.round_half_away(np.array([0.5, -0.5, 1.5, -2.5])).tolist() == [1.0, -1.0, 2.0, -3.0]


def test_quantize_multiplier_unnormalized_wraps_like_the_c_cast():
    # q = 1 - 2^-40 rounds to 2^31, which the (int32_t) cast wraps to INT32_MIN (no renormalisation).
    assert fp.quantize_multiplier_unnormalized(1 - 2 ** -40) == (INT32_MIN, 0)
    assert fp.quantize_multiplier_unnormalized(0.75 * 2 ** 5) == (3 << 29, 5)


def test_quantize_affine_is_tflites_float32_rule():
    # Ties go away from zero; the zero point is added after rounding; the result is clamped.
    assert fp.quantize_affine(np.array([2.5, -2.5, 0.49, 1000.0, -1000.0]), 1.0, 3).tolist() == [6, 0, 3, 127, -128]
    # The division is float32: 0.5 / float32(1/255) = 127.4999... rounds to 127, not 128
    # (a float64 division would give exactly 127.5 and round up).
    assert int(fp.quantize_affine(0.5, 1 / 255, -128)) == -1
    assert round(0.5 / (1 / 255) + 0.5) - 128 == 0  # the float64 answer it must not give
    # Ratios beyond int32 saturate in their own direction (clip in float before the cast), where
    # C's x86 int32 cast would give INT32_MIN (-128 after the clamp) for +huge too.
    big = np.array([1e10, -1e10, 3.5e38, -3.5e38, np.inf, -np.inf, 2.0 ** 31, -2.0 ** 31 - 1e3])
    assert fp.quantize_affine(big, 1.0, 0).tolist() == [127, -128] * 4
    assert fp.quantize_affine(np.array([3e38, -3e38]), 1e-30, 0).tolist() == [127, -128]
    assert fp.quantize_affine(1e10, 1.0, 5, INT32_MIN, INT32_MAX) == INT32_MAX  # no wrap past int32
    assert fp.quantize_affine(-1e10, 1.0, -5, INT32_MIN, INT32_MAX) == INT32_MIN
    with pytest.raises(QsimError, match="NaN"):
        fp.quantize_affine(np.array([1.0, np.nan]), 1.0, 0)
    # overflow="x86": the references on an x86 host (the QUANTIZE kernel): NaN / overflow -> INT32_MIN
    assert fp.quantize_affine(np.array([np.nan, 3e38, 1e10]), 1e-30, 0, overflow="x86").tolist() == [-128] * 3
    assert fp.quantize_float_to_int(6.0, 1e-30, 0) == INT32_MIN
    inside = np.array([2.5, -2.5, 0.49, 1000.0, -1000.0, 126.5, -2.0 ** 30])
    assert np.array_equal(fp.quantize_affine(inside, 1.0, 3), fp.quantize_affine(inside, 1.0, 3, overflow="x86"))
    # per-channel broadcast along the last axis, and the scalar helper agrees
    got = fp.quantize_affine(np.array([[1.0, 1.0], [-1.0, -1.0]]), np.array([0.5, 0.25]), np.array([0, 10]))
    assert got.tolist() == [[2, 14], [-2, 6]]
    assert fp.quantize_float_to_int(6.0, 0.0235, -128) == int(fp.quantize_affine(6.0, 0.0235, -128, -2**31, 2**31 - 1))


def test_fold_divisor_into_multiplier_hand_values():
    # divisor 4: s = 2, M0 * 4 // 4 = M0 and the shift drops by 2 (divide by 2^2 exactly)
    assert fp.fold_divisor_into_multiplier(1 << 30, 0, 4) == (1 << 30, -2)
    # divisor 3: s = 1, (2^30 * 2) // 3 = 715827882, shift - 1: M0*2^(shift-31) / 3 within one Q31 ulp
    m, s = fp.fold_divisor_into_multiplier(1 << 30, 0, 3)
    assert (m, s) == (715827882, -1)
    assert abs(Fraction(m, 2**31) * Fraction(2) ** s - Fraction(1, 2) / 3) < Fraction(1, 2**32)
    # s is capped by 31 + shift (no shift below -31)
    assert fp.fold_divisor_into_multiplier(1 << 30, -30, 1 << 10) == ((1 << 30) * 2 // (1 << 10), -31)


def test_double_requant_plan_equals_requantize():
    """fixedpoint.plan_requantize_double (the GEMM kernels' eval path: one float64 product or a split one,
    applied in chunks) == fixedpoint.requantize("double") for every accumulator within the bound,
    including the bound itself, exact ties, float (BLAS) accumulators, left shifts, wide clamps,
    clamps at the zero point (fused RELU),
    zero points beyond int8, and chunks of more than one pass; None where it cannot prove it."""
    rng = np.random.default_rng(11)
    kinds = {"float": 0, "split": 0, "float_relu": 0, "split_relu": 0, "float_signed": 0, None: 0}
    int8_checked: dict[str, int] = {}
    for trial in range(300):
        c = int(rng.integers(1, 20))
        rows = int(rng.integers(1, 3000)) if trial % 10 else 5000  # 5000 rows: several chunks
        bound = int(2 ** rng.uniform(2, 30))
        m0 = rng.integers(1 << 30, 1 << 31, c) if trial % 3 else np.full(c, int(rng.integers(0, 1 << 31)))
        m0[rng.random(c) < 0.2] = 1 << 30  # exact ties in RoundingDivideByPOT
        shift = rng.integers(-31, 4, c) if trial % 5 else np.full(c, int(rng.integers(-31, 31)))
        bias = rng.integers(-(1 << int(rng.integers(1, 31))), 1 << int(rng.integers(1, 31)), c)
        zp = int(rng.integers(-300, 300)) if trial % 4 else int(rng.integers(-2**16, 2**16))
        lo, hi = (-128, 127) if trial % 2 else (-2**31, 2**31 - 1)
        if trial % 4 == 3:
            lo, hi = zp, max(zp, 127)  # a fused RELU: the plan's sign-free rounding path
            if trial % 8 == 3:
                bound, zp = min(bound, 2**16), int(rng.integers(-128, 128))  # room for the one-floor form
                lo, hi, shift = zp, 127, rng.integers(-12, 3, c)
        acc = rng.integers(-bound, bound + 1, (rows, c))
        acc[0], acc[-1] = bound, -bound
        if trial % 3 == 1:
            acc = acc.astype(np.float32 if bound < 2**24 else np.float64)
        plan = fp.plan_requantize_double(bias, m0, shift, zp, lo, hi, bound)
        kinds[None if plan is None else plan.kind] += 1
        if plan is None:
            assert np.any(((bound + np.abs(bias)) << np.maximum(shift, 0)) > 2**31 - 1) or np.any(shift > 30)
            continue
        want = fp.requantize(np.asarray(acc, np.int64), bias, m0, shift, zp, lo, hi, "double")
        np.testing.assert_array_equal(plan.apply(acc, np.int64), want, err_msg=f"{plan.kind} {trial}")
        if -128 <= lo <= hi <= 127:  # the int8 output path (fused RELU: the float -> uint8 floor)
            int8_checked[plan.kind] = int8_checked.get(plan.kind, 0) + 1
            np.testing.assert_array_equal(plan.apply(acc), want.astype(np.int8), err_msg=f"{plan.kind} {trial}")
    assert min(kinds.values()) >= 5, kinds
    assert int8_checked.get("float_relu", 0) >= 5 and int8_checked.get("float_signed", 0) >= 1, int8_checked  # every closed form and the refusal were exercised


def test_double_requant_plan_small_shapes_equal_requantize():
    """DoubleRequantPlan.apply's per-shape closure (int8 outputs of at most _SMALL_PASS values: a
    single-sample layer) == fixedpoint.requantize("double"), on the first call (which builds it)
    and on later calls (which reuse it), for shapes (C,), (1, C), (3, C), per-tensor and
    per-channel multipliers, fused-RELU clamps (the float -> uint8 floor) and plain ones, float32
    and int64 accumulators at the bound, exact ties and negative values."""
    rng = np.random.default_rng(21)
    seen = set()
    for trial in range(120):
        c = int(rng.integers(1, 40))
        bound = int(2 ** rng.uniform(4, 20))
        m0 = rng.integers(1 << 30, 1 << 31, c) if trial % 2 else np.full(c, int(rng.integers(1 << 30, 1 << 31)))
        m0[rng.random(c) < 0.2] = 1 << 30  # exact ties
        shift = rng.integers(-12, 2, c) if trial % 3 else np.full(c, int(rng.integers(-12, 2)))
        bias = rng.integers(-(1 << 12), 1 << 12, c)
        zp = int(rng.integers(-128, 128))
        lo, hi = (zp, 127) if trial % 2 == 0 else (-128, 127)
        plan = fp.plan_requantize_double(bias, m0, shift, zp, lo, hi, bound)
        assert plan is not None
        seen.add(plan.kind)
        for shape in [(c,), (1, c), (3, c)]:
            for _ in range(2):
                acc = rng.integers(-bound, bound + 1, shape)
                acc.reshape(-1)[0], acc.reshape(-1)[-1] = bound, -bound
                if trial % 3 == 1:
                    acc = acc.astype(np.float32)
                want = fp.requantize(np.asarray(acc, np.int64), bias, m0, shift, zp, lo, hi, "double")
                got = plan.apply(acc)
                assert got.dtype == np.int8 and got.shape == shape
                np.testing.assert_array_equal(got, want.astype(np.int8), err_msg=f"{plan.kind} {trial} {shape}")
        assert len(plan.int8_passes) == 3  # one closure per shape, reused
    assert {"float_relu", "float_signed"} <= seen, seen


def test_double_requant_plan_constant_channels_and_per_channel_bounds():
    """plan_requantize_double with per-channel accumulator bounds and constant channels (a pruned
    channel: huge bias, tiny multiplier, one output for every acc in its bound, as in vww_96_int8's
    pointwise layers) == requantize("double") on every acc within each channel's bound, ends
    included; such layers take a one-product float kind (the split kinds without the constant
    channels' precision needs), and channels one step from constant are not treated as constant."""
    rng = np.random.default_rng(23)
    kinds: dict[str, int] = {}
    for trial in range(200):
        c = int(rng.integers(2, 24))
        bound = rng.integers(1 << 10, 1 << 20, c)
        m0 = rng.integers(1 << 30, 1 << 31, c)
        shift = rng.integers(-10, -4, c)
        bias = rng.integers(-(1 << 16), 1 << 16, c)
        dead = rng.random(c) < 0.4
        dead[0] = True
        # |bias| * M >= 2**29 * 2**-21 > 255: saturated whatever the acc (|acc| * M < 1)
        bias[dead] = rng.choice([-1, 1], int(dead.sum())) * rng.integers(1 << 29, 1 << 30, int(dead.sum()))
        shift[dead] = -20
        zp = int(rng.integers(-128, 128))
        lo, hi = (zp, 127) if trial % 2 else (-128, 127)
        if trial % 5 == 4:  # a channel whose ends differ: not constant, though nearly so
            x_end = int(bias[1]) + int(bound[1])
            m0[1], shift[1] = 1 << 30, -int(np.clip(np.ceil(np.log2(abs(x_end) + 1)), 1, 31))
        rows = int(rng.integers(1, 2000))
        acc = rng.integers(-bound, bound + 1, (rows, c))
        acc[0], acc[-1] = bound, -bound
        if trial % 3 == 1:
            acc = acc.astype(np.float32)
        plan = fp.plan_requantize_double(bias, m0, shift, zp, lo, hi, bound)
        assert plan is not None
        if trial % 5 != 4:  # (the nearly constant channel may need the split kinds)
            kinds[plan.kind] = kinds.get(plan.kind, 0) + 1
        want = fp.requantize(np.asarray(acc, np.int64), bias, m0, shift, zp, lo, hi, "double")
        np.testing.assert_array_equal(plan.apply(acc, np.int64), want, err_msg=f"{plan.kind} {trial}")
        np.testing.assert_array_equal(plan.apply(acc), want.astype(np.int8), err_msg=f"{plan.kind} {trial}")
    assert set(kinds) == {"float_relu", "float_signed"} and min(kinds.values()) >= 50, kinds
    # the same tables without the constant-channel proof would need the split kinds
    bias, m0, shift = np.array([1 << 30, 5000]), np.array([1 << 30, 1 << 30]), np.array([-31, -7])
    plan = fp.plan_requantize_double(bias, m0, shift, -128, -128, 127, 1 << 18)
    assert plan.kind == "float_relu"
    acc = np.arange(-(1 << 18), (1 << 18) + 1, 7)[:, None].repeat(2, axis=1)
    want = fp.requantize(acc, bias, m0, shift, -128, -128, 127, "double")
    assert np.array_equal(plan.apply(acc, np.int64), want) and np.all(want[:, 0] == want[0, 0])


def test_round_half_away_f32_equals_round_half_away_on_float32():
    """The float32 fast path (QUANTIZE's rounding) is bit-identical to round_half_away: random bit
    patterns of every exponent, every tie k + 0.5 and its float32 neighbours, the boundaries."""
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2 ** 32, size=2_000_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    ties = np.concatenate([np.arange(-2 ** 12, 2 ** 12) + 0.5, 2.0 ** np.arange(-30, 64), [0.25, 0.5, 0.75]])
    t32 = ties.astype(np.float32)
    near = np.concatenate([t32, np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-np.inf))])
    x = np.concatenate([x, near, -near, np.float32([0.0, -0.0, np.inf, -np.inf, np.nan, 2 ** 23, 2 ** 52, 2 ** 53])])
    with np.errstate(invalid="ignore"):  # random bits include signalling NaNs: widening them flags "invalid"
        want, got = fp.round_half_away(x), fp.round_half_away_f32(x)
    assert np.array_equal(want, got, equal_nan=True)  # == : a zero's sign may differ (both cast to 0)
    assert got.dtype == np.float64


@pytest.mark.parametrize("qmin,qmax,zp", [(-128, 127, -5), (-128, 127, np.array([-128, 0, 127])),
                                          (-32768, 32767, 0), (0, 255, 128), (INT32_MIN, INT32_MAX, 7)])
def test_quantize_affine_saturate_equals_its_definition(qmin, qmax, zp):
    """clamp(clamp(round_half_away(float32(x) / float32(scale)), int32) + zp, qmin, qmax), written out
    step by step, on values across the whole range (ties, beyond int32, infinities)."""
    rng = np.random.default_rng(9)
    scale = np.float32(0.0173)
    x = np.concatenate([rng.normal(0, 3, 3000), rng.normal(0, 1e9, 300), (np.arange(-300, 300) + 0.5) * 0.0173,
                        [np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0]]).astype(np.float32)
    x = np.resize(x, (x.size // 3, 3))
    ratio = (x / scale).astype(np.float32)
    r = np.clip(fp.round_half_away(ratio), float(INT32_MIN), float(INT32_MAX)).astype(np.int64)
    want = np.clip(r + np.asarray(zp, np.int64), qmin, qmax)
    got = fp.quantize_affine(x, scale, zp, qmin, qmax)
    assert got.dtype == np.int64 and np.array_equal(got, want)


def test_quantize_affine_float32_path_equals_double_rounding():
    """The saturating rule's float32 path (scalar zero point, range inside ±2^24) against the
    definition in float64: clamp(round_half_away(float32(x) / float32(scale)) + zp), on random
    float32 bit patterns (every magnitude, inf), exact ties, their neighbours, for int8, uint8
    and int16 ranges."""
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2**32, size=400_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    ties = (np.arange(-40000, 40000) + 0.5).astype(np.float32)
    data = np.concatenate([bits[~np.isnan(bits)], ties, np.nextafter(ties, np.float32(np.inf)),
                           np.nextafter(ties, np.float32(-np.inf)),
                           np.array([np.inf, -np.inf, 0, -0.0, 0.49999997, -0.49999997], np.float32)])
    for qmin, qmax in ((-128, 127), (0, 255), (-32768, 32767)):
        for zp in (qmin, 0, 7, qmax):
            for scale in (1.0, 0.0235, 3e-5, 7.0):
                with np.errstate(all="ignore"):
                    ratio = (data / np.float32(scale)).astype(np.float64)
                want = np.clip(fp.round_half_away(np.clip(ratio, -2.0**40, 2.0**40)) + zp, qmin, qmax)
                got = fp.quantize_affine(data, scale, zp, qmin, qmax)
                assert got.dtype == np.int64 and np.array_equal(got, want.astype(np.int64)), (qmin, zp, scale)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_monotone_thresholds_equal_the_plan(rounding):
    """A requant plan as a threshold array (the LSTM's single-sample path): f(x) == y_lo +
    searchsorted(thr, x, 'right') on the domain's ends, every threshold and its neighbours, and
    random values; for the LSTM's products (MBQM by 2**-15 / 2**-19 to int16, RoundingDivideByPOT)
    and its hidden requant (to int8 with a zero point)."""
    rng = np.random.default_rng(7)
    x_hi = 1 << 30
    for plan, y_lo, y_hi in [
            (fp.plan_multiply_by_quantized_multiplier(1 << 30, -14, rounding, 0, 0, -32768, 32767, x_hi),
             -32768, 32767),
            (fp.plan_multiply_by_quantized_multiplier(1 << 30, -18, rounding, 0, 0, -32768, 32767, x_hi),
             -32768, 32767),
            (fp.plan_multiply_by_quantized_multiplier(1518500250, -20, rounding, 0, 5, -128, 127, x_hi), -128, 127),
            (fp.plan_multiply_by_quantized_multiplier(1753870272, -23, rounding, 0, -3, -128, 127, x_hi), -128, 127),
            (fp.plan_rounding_divide_by_pot([19], -32768, 32767, x_hi), -32768, 32767),
            (fp.plan_rounding_divide_by_pot([15], -32768, 32767, x_hi), -32768, 32767)]:
        assert plan.generic is None

        def f(x, plan=plan):
            return plan.apply(np.asarray(x, np.int64).reshape(-1, 1)).reshape(-1)
        thr = fp.monotone_thresholds(f, -x_hi, x_hi, y_lo, y_hi)
        assert thr.shape == (y_hi - y_lo,) and np.all(np.diff(thr) >= 0)
        x = np.concatenate([[-x_hi, x_hi, 0, 1, -1], thr, thr - 1, thr + 1, rng.integers(-x_hi, x_hi + 1, 20000)])
        x = np.clip(x, -x_hi, x_hi)
        np.testing.assert_array_equal(y_lo + np.searchsorted(thr, x, side="right"), f(x))
    with pytest.raises(ValueError, match="not non-decreasing"):
        fp.monotone_thresholds(lambda x: -np.sign(x), -5, 5, -1, 1)
    with pytest.raises(ValueError, match="outside"):
        fp.monotone_thresholds(lambda x: x, -5, 5, -1, 1)


def test_plan_channels_first_equals_the_plan():
    """Int64RequantPlan.channels_first (the LSTM's batched [C, B] layout) on the transposed values
    equals the plan: per-channel closed forms (ties, left shifts, per-channel bias), a general-form
    plan and RoundingDivideByPOT per channel."""
    rng = np.random.default_rng(6)
    for plan, n in [
            (fp.plan_multiply_by_quantized_multiplier([1 << 30, 1518500250], [-15, -30], "double", 0, 0, -128, 127,
                                                      1 << 30), 2),
            (fp.plan_multiply_by_quantized_multiplier([2147483647, 1073741824, 1288490189, 1717986918], [-1, 0, 2, -20],
                                                      "single", [7, -9, 100000, -5], -4, -32768, 32767, 652800), 4),
            (fp.plan_multiply_by_quantized_multiplier([1518500250, 1 << 30], -31, "double", -3, 1, -128, 127, 1 << 40),
             2),  # general form
            (fp.plan_rounding_divide_by_pot([15, 21, 0], -32768, 32767, 1 << 40), 3)]:
        x = rng.integers(-(1 << 28), 1 << 28, size=(300, n))
        x[:3] = [[3 << 14] * n, [-(3 << 14)] * n, [0] * n]  # ties
        xt = np.ascontiguousarray(x.T)
        want = plan.apply(x)
        assert np.array_equal(plan.channels_first().apply(xt), want.T)
        assert np.array_equal(plan.channels_first().apply(xt.copy(), out=np.empty_like(xt), tmp=np.empty_like(xt)),
                              want.T)


def _plan_inputs(bound, rng):
    edge = np.array([0, 1, -1, 2, -2, bound, -bound, bound - 1, -bound + 1], np.int64)
    return np.concatenate([edge, rng.integers(-bound, bound + 1, 4000)])


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_int64_requant_plan_equals_the_general_functions(rounding):
    """The LSTM's prepared requant (closed form, constants folded at prepare) against
    saturate(multiply_by_quantized_multiplier(x + bias) + zp) on edge and random values,
    including ties, e = 0, left shifts, and a bound that forces the general form."""
    rng = np.random.default_rng(5)
    fast_seen = 0
    for m0, shift, bias, zp, lo, hi, bound in [
            (1 << 30, -14, 0, 3, -32768, 32767, 1 << 30),  # 2**-15: exact ties, zp folded
            (1 << 30, 0, 0, 0, INT32_MIN, INT32_MAX, 1 << 29),  # e = 0
            ([1 << 30, 1518500250], [-15, -30], 0, 0, -128, 127, 1 << 30),  # per channel
            ([2147483647, 1073741824, 1288490189, 1717986918], [-1, 0, 2, -20], [7, -9, 100000, -5], -4,
             -32768, 32767, 652800),
            ([1754508184, 2147483647], -4, [2138352891, -2147000000], -50, -128, 127, 400000),  # |x+b|*m ~ 2**62
            (1518500250, 3, 5, 0, INT32_MIN, INT32_MAX, 1 << 28),  # left shift: int32 wrap reachable
            (1518500250, -31, -3, 1, -128, 127, 1 << 40)]:  # outside int32: general form
        plan = fp.plan_multiply_by_quantized_multiplier(m0, shift, rounding, bias, zp, lo, hi, bound)
        fast_seen += plan.generic is None
        n = np.size(m0)
        x = _plan_inputs(bound, rng)[: 4000 // n * n].reshape(-1, n) if n > 1 else _plan_inputs(bound, rng)
        want = fp.saturate(fp.multiply_by_quantized_multiplier(x + np.asarray(bias), m0, shift, rounding) + zp, lo, hi)
        out = np.empty_like(x)
        assert np.array_equal(plan.apply(x), want), (m0, shift, rounding)
        assert np.array_equal(plan.apply(x, out=out, tmp=np.empty_like(x)), want) and np.array_equal(out, want)
    assert fast_seen >= 5  # the closed form is really exercised
    assert not fp.plan_multiply_by_quantized_multiplier(1 << 30, 0, rounding, 0, 0, x_bound=1 << 29).clip
    for e, lo, hi in (([0], -32768, 32767), ([1], -32768, 32767), ([15], INT32_MIN, INT32_MAX), ([31], -5, 5),
                      ([15, 21], -32768, 32767), ([9], INT32_MIN, INT32_MAX)):  # e = 9: int32 saturation reachable
        plan = fp.plan_rounding_divide_by_pot(e, lo, hi, 1 << 40)
        x = _plan_inputs(1 << 40, rng)[:4000 // len(e) * len(e)].reshape(-1, len(e))
        x = np.concatenate([x, np.array([[3 << 14] * len(e), [-(3 << 14)] * len(e)])])  # ties
        assert plan.generic is None
        assert plan.clip == (e != [15])
        assert np.array_equal(plan.apply(x), fp.saturate(fp.rounding_divide_by_pot(x, e), lo, hi)), e


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_monotone_window_table_equals_the_requant_definition(rounding):
    """SVDF's step-1 table: ``saturate(MBQM(v) + zp, lo, hi)`` as a window table against the
    definition, on the window's edges (its plateau ends, ties inside) and random v over the whole
    range; the premise (non-decreasing in v) is checked on the window too."""
    rng = np.random.default_rng(12)
    for m0, shift, zp, lo, hi, v_min, v_max in [
            (1479101707, -10, 0, -128, 127, -1099264, 1099264),  # keyword_scrambled's first SVDF
            (1 << 30, -6, -50, -128, 127, -300000, 20000),  # 2**-7: exact ties; zp inside the clamp
            (1518500250, -3, 7, -32768, 32767, -400000, 400000),  # int16 state
            (2147483647, 0, 0, -128, 127, -5, 3),  # window reaches neither plateau
            (1 << 30, -20, 0, -128, 127, -1000, 1000)]:  # constant (0) over the range
        def f(v):
            return fp.saturate(fp.multiply_by_quantized_multiplier(v, m0, shift, rounding) + zp, lo, hi)
        win = fp.monotone_window_table(f, v_min, v_max)
        end = win.start + win.table.size - 1
        assert v_min <= win.start <= end <= v_max
        assert np.all(np.diff(win.table) >= 0)
        edge = np.array([v_min, v_max, win.start - 1, win.start, win.start + 1, end - 1, end, end + 1], np.int64)
        v = np.concatenate([edge.clip(v_min, v_max), rng.integers(v_min, v_max + 1, 20000)])
        assert np.array_equal(win.lookup(v), f(v)), (m0, shift)
        assert np.array_equal(win.lookup(v.astype(np.float64)), f(v))  # integer-valued floats too
        if win.table.size > 1:  # the plateau ends are tight: f changes right inside the window
            assert f(np.array([win.start + 1]))[0] != f(np.array([win.start]))[0]
            assert f(np.array([end - 1]))[0] != f(np.array([end]))[0]
    assert fp.monotone_window_table(lambda v: v // 2, -100, 100, max_size=50) is None  # too wide
