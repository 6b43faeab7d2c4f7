"""Elementwise, activation and quantize int8 kernels, bit-exact against both reference interpreters.

Every differential test builds a one-op .tflite with qsim.builder, runs it in
LiteRT (BUILTIN_REF) and in TFLite Micro, and requires qsim's output to equal
each reference's under that reference's profile.  The pinned cases in
``test_reference_variants_*`` are inputs on which the two references
*disagree*; they are the evidence behind the per-profile variants recorded in
qsim/profiles.py (a profile that used the other reference's variant fails
there).  Fixed-point primitives are checked against exact rational math.
"""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from qsim import fixedpoint as fp
from qsim import ir
from qsim.builder import ModelBuilder
from qsim.errors import QsimError
from qsim.interpreter import prepare_graph
from qsim.kernels import REGISTRY
from qsim.loader import load, load_bytes
from qsim.profiles import get_profile
from qsim.reference import make_runner

from conftest import shared_model

REFS = ("litert", "tflm")
SETTINGS = dict(derandomize=True, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ALL_INT8 = np.arange(-128, 128, dtype=np.int8)


# ------------------------------------------------------------------ model building / running

def unary_model(opcode, shape, q_in, q_out, options=None, in_dtype=np.int8, out_dtype=np.int8, out_axis=0):
    b = ModelBuilder(description=f"{opcode} test")
    x = b.add_input("x", shape, in_dtype, scale=q_in[0], zero_point=q_in[1]) if q_in else \
        b.add_input("x", shape, in_dtype)
    y = b.add_tensor("y", shape, out_dtype, scale=q_out[0], zero_point=q_out[1], axis=out_axis) if q_out else \
        b.add_tensor("y", shape, out_dtype)
    b.add_op(opcode, [x], [y], options)
    b.mark_output(y)
    return b.build()


def binary_model(opcode, shape_a, shape_b, qa, qb, qo, activation="NONE"):
    out_shape = tuple(np.broadcast_shapes(tuple(shape_a), tuple(shape_b)))
    b = ModelBuilder(description=f"{opcode} test")
    a = b.add_input("a", shape_a, np.int8, scale=qa[0], zero_point=qa[1])
    c = b.add_input("b", shape_b, np.int8, scale=qb[0], zero_point=qb[1])
    y = b.add_tensor("y", out_shape, np.int8, scale=qo[0], zero_point=qo[1])
    opts = ir.ActivationOptions(activation) if opcode in ("ADD", "SUB", "MUL") else None
    b.add_op(opcode, [a, c], [y], opts)
    b.mark_output(y)
    return b.build()


def reference_run(blob: bytes, reference: str, inputs: list, tensors) -> dict[int, np.ndarray]:
    """One reference interpreter (qsim.reference's runners), every tensor preserved; {tensor index: array}."""
    return make_runner(reference, blob).run(inputs, tensors)


def qsim_run(blob: bytes, profile: str, inputs: list) -> dict[int, np.ndarray]:
    return prepare_graph(load_bytes(blob), profile).run(inputs, keep_all=True)


def mismatches(blob: bytes, inputs: list, reference: str, profile: str | None = None) -> int:
    """Number of output elements where qsim (under ``profile``, default: the reference's) differs."""
    g = load_bytes(blob)
    out = g.outputs[0]
    theirs = np.asarray(reference_run(blob, reference, inputs, [out])[out])
    ours = qsim_run(blob, profile or reference, inputs)[out]
    theirs = theirs.reshape(ours.shape)
    if ours.dtype == np.float32:
        same = (ours.view(np.uint32) == theirs.astype(np.float32).view(np.uint32))
        return int((~same).sum())
    return int((ours.astype(np.int64) != theirs.astype(np.int64)).sum())


def assert_bitexact(blob: bytes, inputs: list, refs=REFS) -> None:
    for ref in refs:
        n = mismatches(blob, inputs, ref)
        assert n == 0, f"qsim differs from {ref} in {n} element(s)"


# ------------------------------------------------------------------ strategies

def scale_st(lo=0.002, hi=0.5):
    return st.floats(math.log(lo), math.log(hi)).map(lambda v: float(np.float32(math.exp(v))))


ZP = st.integers(-128, 127)
QPARAM = st.tuples(scale_st(), ZP)


@st.composite
def broadcast_shapes(draw):
    """(out_shape, shape_a, shape_b): rank 1-4, numpy/TFLite broadcasting, sometimes lower-rank inputs."""
    rank = draw(st.integers(1, 4))
    out = tuple(draw(st.integers(1, 5)) for _ in range(rank))

    def squash(shape):
        s = tuple(d if draw(st.booleans()) else 1 for d in shape)
        drop = draw(st.integers(0, rank - 1))
        return s[drop:]

    a = out if draw(st.booleans()) else squash(out)
    b = squash(out)
    assume(tuple(np.broadcast_shapes(a, b)) == out)
    return out, a, b


# ------------------------------------------------------------------ fixed-point primitives (exact math)

I32 = st.integers(fp.INT32_MIN, fp.INT32_MAX)


def _round_half_away(r: Fraction) -> int:
    return math.floor(r + Fraction(1, 2)) if r >= 0 else -math.floor(-r + Fraction(1, 2))


@given(I32, I32)
@settings(max_examples=300, **SETTINGS)
def test_rounding_half_sum_is_rounded_mean(a, b):
    assert int(fp.rounding_half_sum(a, b)) == _round_half_away(Fraction(a + b, 2))


@given(I32, st.integers(-31, 30))
@settings(max_examples=300, **SETTINGS)
def test_saturating_rounding_multiply_by_pot(x, e):
    got = int(fp.saturating_rounding_multiply_by_pot(x, e))
    if e >= 0:
        assert got == min(max(x * 2 ** e, fp.INT32_MIN), fp.INT32_MAX)
    else:
        assert got == _round_half_away(Fraction(x, 2 ** -e))


@given(st.integers(0, 2 ** 32 - 1))
@settings(max_examples=200, **SETTINGS)
def test_count_leading_zeros_u32(u):
    signed = u - 2 ** 32 if u >= 2 ** 31 else u
    assert int(fp.count_leading_zeros_u32(signed)) == 32 - u.bit_length()


def test_count_leading_zeros_u32_edges():
    """0, every power of two and every 2**k - 1 (the bit-length boundaries), as one array."""
    u = [0] + [1 << k for k in range(32)] + [(1 << k) - 1 for k in range(1, 33)]
    signed = np.array([v - 2 ** 32 if v >= 2 ** 31 else v for v in u], np.int64)
    assert fp.count_leading_zeros_u32(signed).tolist() == [32 - v.bit_length() for v in u]


@pytest.mark.parametrize("integer_bits", [0, 4, 5, 6])
def test_exp_on_negative_values_accuracy(integer_bits):
    """exp(a) for a <= 0 within 3e-7 of the real exponential (gemmlowp's 4th-order Taylor kernel is
    ~2.3e-7 at its interval ends; a wrong barrel constant or mask is off by >= 1e-3); exp(0) saturates
    to INT32_MAX; monotone."""
    frac = 31 - integer_bits
    rng = np.random.default_rng(0)
    raw = np.concatenate([-rng.integers(0, 2 ** 31, 4000), -np.arange(0, 1 << 12), [fp.INT32_MIN]]).astype(np.int64)
    raw = np.unique(raw)
    got = fp.exp_on_negative_values(raw, integer_bits)
    want = np.exp(raw.astype(np.float64) / 2.0 ** frac) * 2.0 ** 31
    assert np.max(np.abs(got - want)) / 2.0 ** 31 < 3e-7
    assert int(got[raw == 0][0]) == fp.INT32_MAX
    assert np.all(np.diff(got) >= 0)  # raw ascending -> exp non-decreasing


def test_one_over_one_plus_x_and_tanh_ratio_accuracy():
    x = np.linspace(0, 2 ** 31 - 1, 5001).astype(np.int64)
    xr = x / 2.0 ** 31
    got = fp.one_over_one_plus_x_for_x_in_0_1(x) / 2.0 ** 31
    assert np.max(np.abs(got - 1 / (1 + xr))) < 1e-8
    got2 = fp.one_minus_x_over_one_plus_x_for_x_in_0_1(x) / 2.0 ** 31
    assert np.max(np.abs(got2 - (1 - xr) / (1 + xr))) < 1e-8


def test_fixed_logistic_and_tanh_accuracy_and_symmetry():
    a = np.linspace(-(2 ** 31), 2 ** 31 - 1, 4001).astype(np.int64)  # Q4.27: [-16, 16)
    real = a / 2.0 ** 27
    lg = fp.fixed_logistic(a, 4)
    th = fp.fixed_tanh(a, 4)
    assert np.max(np.abs(lg / 2.0 ** 31 - 1 / (1 + np.exp(-real)))) < 3e-7
    assert np.max(np.abs(th / 2.0 ** 31 - np.tanh(real))) < 3e-7
    assert int(fp.fixed_logistic(0, 4)) == 2 ** 30 and int(fp.fixed_tanh(0, 4)) == 0
    inner = (a > fp.INT32_MIN)
    assert np.array_equal(fp.fixed_tanh(-a[inner], 4), -th[inner])  # tanh is odd, exactly


@given(st.integers(1, 2 ** 31 - 1), st.integers(0, 12))
@settings(max_examples=200, **SETTINGS)
def test_get_reciprocal(x, integer_bits):
    raw, nbits = fp.get_reciprocal(x, integer_bits)
    recip = Fraction(int(raw), 2 ** 31) * Fraction(2) ** -int(nbits)
    exact = Fraction(2 ** (31 - integer_bits), x)  # 1 / (x / 2**(31 - integer_bits))
    assert abs(recip - exact) / exact < Fraction(1, 10 ** 8)
    assert 2 ** 30 - 4 <= int(raw) < 2 ** 31  # 1/(1+s) with s in [0, 1): (1/2, 1], a few LSB of error


@given(st.integers(-32768, 32767), st.integers(-32768, 32767) | st.sampled_from([1024, 16384, -16384, 2048]))
@settings(max_examples=300, **SETTINGS)
def test_int16_high_muls(a, b):
    if a == b == -32768:
        assert int(fp.saturating_rounding_doubling_high_mul_int16(a, b)) == 32767
        assert int(fp.saturating_doubling_high_mul_int16(a, b)) == 32767
        return
    # gemmlowp's nudge (1 - 2**14 for negative products, then truncation) makes ties round up (toward +inf)
    assert int(fp.saturating_rounding_doubling_high_mul_int16(a, b)) == math.floor(Fraction(a * b, 2 ** 15)
                                                                                  + Fraction(1, 2))
    q = Fraction(a * b, 2 ** 15)
    assert int(fp.saturating_doubling_high_mul_int16(a, b)) == (math.floor(q) if q >= 0 else -math.floor(-q))


def test_int16_helpers():
    assert fp.saturating_left_shift_int16(np.array([1000, -1000, 5]), 6).tolist() == [32767, -32768, 320]
    assert fp.wrap_int16(np.array([32768, -32769, 70000])).tolist() == [-32768, 32767, 70000 - 65536]
    assert fp.downscale_int32_to_int16_multiplier(2 ** 30) == 2 ** 14
    assert fp.downscale_int32_to_int16_multiplier(2 ** 30 + 2 ** 15) == 2 ** 14 + 1  # half rounds up
    assert fp.downscale_int32_to_int16_multiplier(2 ** 31 - 1) == 32767


@given(st.floats(0.001, 10.0), st.floats(1e-4, 1.0))
@settings(max_examples=100, **SETTINGS)
def test_preprocess_softmax_scaling_and_radius(beta, scale):
    m0, left = fp.preprocess_softmax_scaling(beta, scale, 5)
    real = min(beta * scale * 2 ** 26, 2 ** 31 - 1)
    assert left >= 0 and 2 ** 30 <= m0 < 2 ** 31
    assert abs(m0 * 2.0 ** (left - 31) - real) <= 2.0 ** (left - 32)
    radius = fp.calculate_input_radius(5, left)
    assert radius == math.floor(Fraction(31 * 2 ** 26, 2 ** left))


def test_multiply_by_quantized_multiplier_greater_than_one():
    # double: SRDHM(x * 2**s, M) (nearest, ties up); single: round-half-up of x * M * 2**(s - 31)
    x = np.array([-300, -7, 0, 5, 123456])
    m0, s = 1518500250, 3
    want_double = [math.floor(Fraction(int(v) * 2 ** s * m0, 2 ** 31) + Fraction(1, 2)) for v in x]
    want_single = [math.floor(Fraction(int(v) * m0 * 2 ** s, 2 ** 31) + Fraction(1, 2)) for v in x]
    assert fp.multiply_by_quantized_multiplier_greater_than_one(x, m0, s).tolist() == want_double
    assert fp.multiply_by_quantized_multiplier_greater_than_one(x, m0, s, "single").tolist() == want_single


@given(st.floats(-1e6, -1e-9))
@settings(max_examples=200, **SETTINGS)
def test_quantize_multiplier_signed_negative(m):
    m0, shift = fp.quantize_multiplier_signed(m)
    assert -(2 ** 31) <= m0 <= -(2 ** 30)
    # M0 is round_half_away(q * 2**31) for m = q * 2**shift, q in (-1, -0.5]
    assert m0 == _round_half_away(Fraction(m) / Fraction(2) ** shift * 2 ** 31)
    assert fp.quantize_multiplier_signed(-m) == fp.quantize_multiplier(-m)


def test_quantize_multiplier_signed_keeps_minus_two_pow_31():
    assert fp.quantize_multiplier_signed(-(1 - 2.0 ** -40)) == (-(2 ** 31), 0)  # not renormalised
    assert fp.quantize_multiplier(1 - 2.0 ** -40) == (2 ** 30, 1)  # the positive case is


def test_lut_populate_logistic_matches_real_sigmoid_to_one_lsb():
    lut = fp.lut_populate_int8("logistic", 0.05, 3, 1 / 256, -128)
    real = 1 / (1 + np.exp(-0.05 * (np.arange(-128, 128) - 3)))
    assert np.max(np.abs((lut + 128) / 256 - real)) <= 0.5 / 256 + 1e-6
    assert lut.dtype == np.int64 and lut.shape == (256,)


# ------------------------------------------------------------------ differential: binary ops

@given(broadcast_shapes(), QPARAM, QPARAM, QPARAM, st.sampled_from(["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]),
       st.sampled_from(["ADD", "SUB", "MUL"]), st.integers(0, 2 ** 31))
@settings(max_examples=400, **SETTINGS)
def test_add_sub_mul_bitexact(shapes, qa, qb, qo, act, opcode, seed):
    out, sa, sb = shapes
    blob = binary_model(opcode, sa, sb, qa, qb, qo, act)
    rng = np.random.default_rng(seed)
    ins = [rng.integers(-128, 128, sa).astype(np.int8), rng.integers(-128, 128, sb).astype(np.int8)]
    assert_bitexact(blob, ins)


@pytest.mark.parametrize("opcode", ["ADD", "SUB", "MUL"])
def test_batched_pair_lookup_in_blocks_equals_the_arithmetic(opcode):
    """A batched same-shape binary op larger than one lookup block (blocks plus a ragged last one,
    every int8 pair present) == the op's own fixedpoint arithmetic element by element (not the table)."""
    from qsim.kernels import elementwise as E
    blob = binary_model(opcode, (1, 7, 9, 11), (1, 7, 9, 11), (0.05, 3), (0.02, -7), (0.07, 5), "RELU")
    pg = prepare_graph(load_bytes(blob), "tflm")
    n = 2 * E._PAIR_CHUNK // (7 * 9 * 11) + 3
    rng = np.random.default_rng(4)
    a = rng.integers(-128, 128, (n, 7, 9, 11)).astype(np.int8)
    b = rng.integers(-128, 128, (n, 7, 9, 11)).astype(np.int8)
    a.reshape(-1)[:65536] = np.repeat(np.arange(-128, 128), 256)  # every pair
    b.reshape(-1)[:65536] = np.tile(np.arange(-128, 128), 256)
    assert a.size > 2 * E._PAIR_CHUNK and a.size % E._PAIR_CHUNK
    got = pg.run([a, b], keep_all=False)[pg.graph.outputs[0]]
    params = pg._steps()[0].prepared.params
    arith = E.mul_arithmetic if opcode == "MUL" else E.add_sub_arithmetic
    assert got.dtype == np.int8 and np.array_equal(got, arith(params, a, b))


@given(broadcast_shapes(), QPARAM, st.one_of(st.none(), st.tuples(QPARAM, QPARAM)),
       st.sampled_from(["MAXIMUM", "MINIMUM"]), st.integers(0, 2 ** 31))
@settings(max_examples=60, **SETTINGS)
def test_maximum_minimum_bitexact(shapes, q, others, opcode, seed):
    """Raw int8 max/min; with mismatched quantization neither reference rescales (nor does qsim)."""
    out, sa, sb = shapes
    qb, qo = others if others is not None else (q, q)
    blob = binary_model(opcode, sa, sb, q, qb, qo)
    rng = np.random.default_rng(seed)
    ins = [rng.integers(-128, 128, sa).astype(np.int8), rng.integers(-128, 128, sb).astype(np.int8)]
    assert_bitexact(blob, ins)


def test_add_sub_exact_ties_are_double_rounded_in_both_references():
    """s_out = 2 s: out = (d1 +/- d2) / 2 exactly, half the sums are ties.  Single rounding (half up) would
    differ on every negative tie; both references round them away from zero (double rounding)."""
    ins = [ALL_INT8.reshape(256, 1), ALL_INT8.reshape(1, 256)]
    for opcode in ("ADD", "SUB"):
        blob = binary_model(opcode, (256, 1), (1, 256), (0.1, 0), (0.1, 0), (0.2, 0))
        for ref in REFS:
            assert mismatches(blob, ins, ref) == 0
            assert mismatches(blob, ins, ref, profile="single") > 10000


# ------------------------------------------------------------------ differential: activations

@given(QPARAM, QPARAM, st.sampled_from(["RELU", "RELU6", "LEAKY_RELU", "HARD_SWISH", "TANH"]),
       st.floats(-0.9, 1.5))
@settings(max_examples=400, **SETTINGS)
def test_unary_activations_bitexact_on_all_int8(q_in, q_out, opcode, alpha):
    opts = ir.LeakyReluOptions(alpha=alpha) if opcode == "LEAKY_RELU" else None
    if opcode == "HARD_SWISH":
        assume(q_in[0] / 128 / q_out[0] <= 1.0)  # TFLite requires a right-shifting output multiplier
    blob = unary_model(opcode, (1, 256), q_in, q_out, opts)
    assert_bitexact(blob, [ALL_INT8.reshape(1, 256)])


@given(QPARAM)
@settings(max_examples=80, **SETTINGS)
def test_logistic_bitexact_on_all_int8(q_in):
    blob = unary_model("LOGISTIC", (1, 256), q_in, (1 / 256, -128))
    assert_bitexact(blob, [ALL_INT8.reshape(1, 256)])


@given(scale_st(0.001, 1.0), st.sampled_from([1.0, 0.5, 2.0, 0.3]),
       st.lists(st.integers(1, 40), min_size=1, max_size=3), st.integers(0, 2 ** 31), st.booleans())
@settings(max_examples=200, **SETTINGS)
def test_softmax_bitexact(s_in, beta, dims, seed, narrow):
    shape = tuple(dims)
    rng = np.random.default_rng(seed)
    lo = -20 if narrow else -128  # narrow: many entries near the row max
    x = rng.integers(lo, 128 if not narrow else 0, shape).astype(np.int8)
    blob = unary_model("SOFTMAX", shape, (s_in, int(rng.integers(-128, 128))), (1 / 256, -128),
                       ir.SoftmaxOptions(beta=beta))
    assert_bitexact(blob, [x])


# ------------------------------------------------------------------ pinned cases where the references disagree

VARIANT_CASES = {
    # opcode: (model builder, inputs).  Found by searching scales where the two algorithms differ.
    "LOGISTIC": (lambda: unary_model("LOGISTIC", (1, 256), (0.011732176877558231, -36), (1 / 256, -128)),
                 lambda: [ALL_INT8.reshape(1, 256)]),
    "TANH": (lambda: unary_model("TANH", (1, 256), (0.01085013709962368, -83), (1 / 128, 0)),
             lambda: [ALL_INT8.reshape(1, 256)]),
    "RELU": (lambda: unary_model("RELU", (1, 256), (0.1081903800368309, -128), (0.3072163760662079, -128)),
             lambda: [ALL_INT8.reshape(1, 256)]),
    "RELU6": (lambda: unary_model("RELU6", (1, 256), (0.1081903800368309, -128), (0.3072163760662079, -128)),
              lambda: [ALL_INT8.reshape(1, 256)]),
    "MUL": (lambda: binary_model("MUL", (256, 1), (1, 256), (0.038543909788131714, 0), (0.0061994511634111404, 0),
                                 (0.016666604205965996, 0)),
            lambda: [ALL_INT8.reshape(256, 1), ALL_INT8.reshape(1, 256)]),
}


@pytest.mark.parametrize("opcode", sorted(VARIANT_CASES))
def test_reference_variants_are_real_and_profiled(opcode):
    """The two references disagree here; qsim matches each one only under its own profile.

    LOGISTIC/TANH: LiteRT's float32 LUT vs TFLM's gemmlowp fixed point.  RELU: float32 vs double
    s_in/s_out.  RELU6: LiteRT requantizes, TFLM only clamps.  MUL: float32 vs double s1*s2/s_out.
    """
    make_blob, make_inputs = VARIANT_CASES[opcode]
    blob, ins = make_blob(), make_inputs()
    out = load_bytes(blob).outputs[0]
    lit = np.asarray(reference_run(blob, "litert", ins, [out])[out]).reshape(-1)
    tfm = np.asarray(reference_run(blob, "tflm", ins, [out])[out]).reshape(-1)
    assert np.any(lit != tfm), "the references should disagree on this pinned case"
    for ref in REFS:
        assert mismatches(blob, ins, ref) == 0
        other = "tflm" if ref == "litert" else "litert"
        assert mismatches(blob, ins, ref, profile=other) > 0
    assert get_profile("litert").variant(opcode) != get_profile("tflm").variant(opcode)


# ------------------------------------------------------------------ QUANTIZE / DEQUANTIZE

SPECIALS = np.array([np.inf, -np.inf, np.nan, 1e30, -1e30, 3e9, -3e9, 0.0, -0.0], np.float32)


@given(QPARAM, st.integers(0, 2 ** 31))
@settings(max_examples=60, **SETTINGS)
def test_quantize_float_to_int8_bitexact(q_out, seed):
    s, zp = q_out
    rng = np.random.default_rng(seed)
    ties = (np.arange(-300, 300) + 0.5).astype(np.float32) * np.float32(s)  # exact and near .5 ties
    x = np.concatenate([ties, rng.normal(0, 40 * s, 200).astype(np.float32), SPECIALS]).astype(np.float32)
    blob = unary_model("QUANTIZE", (1, x.size), None, (s, zp), in_dtype=np.float32)
    assert_bitexact(blob, [x.reshape(1, -1)])


@given(QPARAM, QPARAM)
@settings(max_examples=60, **SETTINGS)
def test_requantize_and_dequantize_bitexact(q_in, q_out):
    assert_bitexact(unary_model("QUANTIZE", (1, 256), q_in, q_out), [ALL_INT8.reshape(1, 256)])
    assert_bitexact(unary_model("DEQUANTIZE", (1, 256), q_in, None, out_dtype=np.float32),
                    [ALL_INT8.reshape(1, 256)])


def test_quantize_infinities_follow_the_x86_conversion():
    """+inf and NaN quantize to -128 (float->int32 conversion gives INT32_MIN), as both references do."""
    blob = unary_model("QUANTIZE", (1, 4), None, (0.1, 0), in_dtype=np.float32)
    x = np.array([[np.inf, np.nan, -np.inf, 1e20]], np.float32)
    got = qsim_run(blob, "tflm", [x])[load_bytes(blob).outputs[0]]
    assert got.ravel().tolist() == [-128, -128, -128, -128]
    assert_bitexact(blob, [x])


def _per_channel_models():
    scales, zps = np.array([0.1, 0.05, 0.2, 0.03]), np.array([0, 3, -5, 7])
    b = ModelBuilder(description="per-channel QUANTIZE")
    x = b.add_input("x", (2, 3, 4), np.float32)
    y = b.add_tensor("y", (2, 3, 4), np.int8, scale=scales, zero_point=zps, axis=2)
    b.add_op("QUANTIZE", [x], [y])
    b.mark_output(y)
    quant = b.build()
    b = ModelBuilder(description="per-channel DEQUANTIZE")
    x = b.add_input("x", (2, 3, 4), np.int8, scale=scales, zero_point=zps, axis=2)
    y = b.add_tensor("y", (2, 3, 4), np.float32)
    b.add_op("DEQUANTIZE", [x], [y])
    b.mark_output(y)
    return quant, b.build()


def test_per_channel_quantize_and_dequantize_per_reference():
    """LiteRT (de)quantizes per channel.  TFLM refuses a per-channel QUANTIZE and dequantizes every
    element with channel 0's scale and zero point; qsim's "tflm" profile does the same."""
    rng = np.random.default_rng(3)
    quant, dequant = _per_channel_models()
    xf = rng.normal(0, 3, (2, 3, 4)).astype(np.float32)
    assert mismatches(quant, [xf], "litert") == 0
    with pytest.raises(QsimError, match="per channel"):
        prepare_graph(load_bytes(quant), "tflm")
    xq = rng.integers(-128, 128, (2, 3, 4)).astype(np.int8)
    assert_bitexact(dequant, [xq])
    out = load_bytes(dequant).outputs[0]
    tflm = np.asarray(reference_run(dequant, "tflm", [xq], [out])[out])
    assert np.array_equal(tflm.ravel(), (np.float32(0.1) * xq.astype(np.float64)).astype(np.float32).ravel())
    assert mismatches(dequant, [xq], "litert", profile="tflm") > 0


def test_chain_float_in_float_out_every_intermediate():
    """QUANTIZE -> ADD(const, broadcast) -> LEAKY_RELU -> MUL -> LOGISTIC -> SUB -> SOFTMAX -> DEQUANTIZE:
    every intermediate tensor equals each reference's."""
    rng = np.random.default_rng(21)
    b = ModelBuilder(description="elementwise chain")
    xf = b.add_input("x", (2, 4, 6), np.float32)
    q = b.add_tensor("q", (2, 4, 6), np.int8, scale=0.04, zero_point=-7)
    c = b.add_const("c", rng.integers(-128, 128, (6,)).astype(np.int8), scale=0.02, zero_point=5)
    s1 = b.add_tensor("add", (2, 4, 6), np.int8, scale=0.05, zero_point=-3)
    s2 = b.add_tensor("leaky", (2, 4, 6), np.int8, scale=0.03, zero_point=10)
    s3 = b.add_tensor("mul", (2, 4, 6), np.int8, scale=0.07, zero_point=-20)
    s4 = b.add_tensor("logistic", (2, 4, 6), np.int8, scale=1 / 256, zero_point=-128)
    s5 = b.add_tensor("sub", (2, 4, 6), np.int8, scale=0.011, zero_point=0)
    s6 = b.add_tensor("softmax", (2, 4, 6), np.int8, scale=1 / 256, zero_point=-128)
    y = b.add_tensor("y", (2, 4, 6), np.float32)
    b.add_op("QUANTIZE", [xf], [q])
    b.add_op("ADD", [q, c], [s1], ir.ActivationOptions("RELU6"))
    b.add_op("LEAKY_RELU", [s1], [s2], ir.LeakyReluOptions(alpha=0.2))
    b.add_op("MUL", [s2, q], [s3], ir.ActivationOptions("NONE"))
    b.add_op("LOGISTIC", [s3], [s4])
    b.add_op("SUB", [s4, s1], [s5], ir.ActivationOptions("NONE"))
    b.add_op("SOFTMAX", [s5], [s6], ir.SoftmaxOptions(beta=1.0))
    b.add_op("DEQUANTIZE", [s6], [y])
    b.mark_output(y)
    blob = b.build()
    x = rng.normal(0, 2, (2, 4, 6)).astype(np.float32)
    tensors = [q, s1, s2, s3, s4, s5, s6, y]
    for ref in REFS:
        theirs = reference_run(blob, ref, [x], tensors)
        ours = qsim_run(blob, ref, [x])
        for t in tensors:
            assert np.array_equal(ours[t], np.asarray(theirs[t]).reshape(ours[t].shape)), f"tensor {t} vs {ref}"


# ------------------------------------------------------------------ errors

def test_int16_activations_are_refused():
    # ADD/SUB (tests/test_int16x8.py), MUL, MAXIMUM, MINIMUM (tests/test_int16_ops.py) have int16x8 forms
    # LEAKY_RELU, QUANTIZE, DEQUANTIZE (tests/test_int16x8.py), SOFTMAX (tests/test_svdf.py), RELU, LOGISTIC, TANH
    # (tests/test_int16_ops.py)
    for opcode in ("HARD_SWISH",):
        g = load_bytes(unary_model(opcode, (1, 4), (0.1, 0), (1 / 32768, 0), in_dtype=np.int16, out_dtype=np.int16))
        with pytest.raises(QsimError, match="int16"):
            REGISTRY[opcode].prepare(g.operators[0], g, get_profile("litert"))


def test_softmax_rows_the_references_abort_on_are_a_clear_error():
    """A row whose exponentials sum to >= 512 makes TFLite's int8 softmax shift by > 31 bits: LiteRT and TFLM
    abort the process (measured: 511 equal entries run, 512 abort).  qsim refuses with a QsimError."""
    for depth in (512, 5000):
        blob = unary_model("SOFTMAX", (1, depth), (0.001, 0), (1 / 256, -128))
        with pytest.raises(QsimError, match="512"):
            qsim_run(blob, "tflm", [np.full((1, depth), 7, np.int8)])
    blob = unary_model("SOFTMAX", (2, 511), (0.001, 0), (1 / 256, -128))
    assert_bitexact(blob, [np.full((2, 511), 7, np.int8)])


def test_bad_quantization_is_a_clear_error():
    g = load_bytes(unary_model("SOFTMAX", (1, 8), (0.1, 0), (0.1, 0)))
    with pytest.raises(QsimError, match="1/256"):
        prepare_graph(g, "tflm")
    g = load_bytes(unary_model("LOGISTIC", (1, 8), (0.1, 0), (0.01, -128)))
    with pytest.raises(QsimError, match="1/256"):
        prepare_graph(g, "litert")
    g = load_bytes(unary_model("HARD_SWISH", (1, 8), (1.0, 0), (0.0001, 0)))
    with pytest.raises(QsimError, match="HARD_SWISH"):
        prepare_graph(g, "tflm")
    b = ModelBuilder()
    a = b.add_input("a", (2, 3), np.int8, scale=0.1, zero_point=0)
    c = b.add_input("b", (4, 3), np.int8, scale=0.1, zero_point=0)
    y = b.add_tensor("y", (2, 3), np.int8, scale=0.1, zero_point=0)
    b.add_op("ADD", [a, c], [y], ir.ActivationOptions())
    b.mark_output(y)
    with pytest.raises(QsimError, match="broadcast"):
        prepare_graph(load_bytes(b.build()), "tflm")


# ------------------------------------------------------------------ real models: ADD and SOFTMAX layers

@pytest.mark.parametrize("name", ["pretrainedResnet_quant.tflite", "kws_ref_model.tflite",
                                  "micro_speech_quantized.tflite", "person_detect.tflite"])
def test_real_model_add_and_softmax_layers(name):
    """Each ADD / SOFTMAX of a real model, fed the reference's own inputs, gives the reference's output."""
    path = shared_model(name)
    blob, g = path.read_bytes(), load(path)
    refs = ("tflm",) if name == "person_detect.tflite" else REFS  # LiteRT refuses person_detect
    ops = [op for op in g.operators if op.opcode in ("ADD", "SOFTMAX")]
    assert ops
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, size=g.tensors[g.inputs[0]].shape).astype(np.int8)
    wanted = sorted({i for op in ops for i in op.inputs + op.outputs if i >= 0 and not g.tensors[i].is_const})
    for ref in refs:
        theirs = reference_run(blob, ref, [x], wanted)
        prof = get_profile(ref)
        for op in ops:
            k = REGISTRY[op.opcode]
            ins = [g.tensors[i].data if g.tensors[i].is_const else theirs[i] for i in op.inputs]
            out = k.eval(k.prepare(op, g, prof), ins)[0]
            want = theirs[op.outputs[0]]
            assert np.array_equal(np.asarray(out).reshape(want.shape), want), f"{name} op #{op.index} vs {ref}"


def test_leaky_relu_multiplier_precision_differs_per_reference():
    """alpha = 0.9 with equal input/output scales: LiteRT forms s_in*alpha/s_out in float32
    (0.90000004 -> M0 1932735360), TFLM in double (0.89999998 -> M0 1932735232); 13 of the 256
    inputs land on the other side of a rounding boundary.  Each profile must match its reference
    and only its reference."""
    s = 0.0067379469983279705
    blob = unary_model("LEAKY_RELU", (1, 256), (s, 0), (s, 0), ir.LeakyReluOptions(0.9))
    xs = [np.arange(-128, 128, dtype=np.int8).reshape(1, 256)]
    assert mismatches(blob, xs, "tflm", "tflm") == 0
    assert mismatches(blob, xs, "litert", "litert") == 0
    assert mismatches(blob, xs, "tflm", "litert") > 0
    assert mismatches(blob, xs, "litert", "tflm") > 0


@pytest.mark.parametrize("opcode", ["ADD", "SUB", "MUL"])
def test_pair_table_lookup_equals_the_arithmetic(opcode):
    """eval gathers from a table of the op's own arithmetic: same values, bit-pattern indexing and
    broadcasting included, on every int8 pair and on broadcast shapes."""
    from qsim.kernels import elementwise as ew
    blob = binary_model(opcode, (1, 4, 5, 3), (1, 1, 5, 1), (0.02, -7), (0.05, 11), (0.07, 3), "RELU6")
    p = prepare_graph(load_bytes(blob), "tflm").ops[0].params
    arith = ew.mul_arithmetic if opcode == "MUL" else ew.add_sub_arithmetic
    a = np.arange(-128, 128, dtype=np.int8)[:, None]
    b = np.arange(-128, 128, dtype=np.int8)[None, :]
    p_full = dataclasses.replace(p, out_shape=(256, 256))
    assert np.array_equal(ew.lookup_pair(p_full, [a, b]), arith(p, a, b).astype(np.int8))
    rng = np.random.default_rng(3)
    x1 = rng.integers(-128, 128, (1, 4, 5, 3)).astype(np.int8)
    x2 = rng.integers(-128, 128, (1, 1, 5, 1)).astype(np.int8)
    assert np.array_equal(ew.lookup_pair(p, [x1, x2]), np.broadcast_to(arith(p, x1, x2), (1, 4, 5, 3)))
