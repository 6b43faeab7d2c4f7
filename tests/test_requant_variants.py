"""Requant arithmetic variants (qsim.fixedpoint.RequantVariant) against plain big-int statements.

Each reference below states what the variant *means* with Python ints and Fractions (and, for
float32, IEEE single rounding via struct), not how qsim.fixedpoint vectorizes it.
"""
from __future__ import annotations

import math
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qsim import fixedpoint as fp
from qsim.errors import QsimError
from qsim.interpreter import prepare_graph
from qsim.loader import load

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "models" / "demo_cnn_int8.tflite"
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1

I32 = st.integers(INT32_MIN, INT32_MAX)
M0 = st.one_of(st.just(1 << 30), st.just((1 << 31) - 1), st.integers(1 << 30, (1 << 31) - 1))
SHIFT = st.integers(-31, 30)


def half_up(r: Fraction) -> int:
    return math.floor(r + Fraction(1, 2))


def half_away(r: Fraction) -> int:
    return half_up(r) if r >= 0 else -half_up(-r)


def wrap32(v: int) -> int:
    return (v + 2 ** 31) % 2 ** 32 - 2 ** 31


def sat32(v: int) -> int:
    return min(max(v, INT32_MIN), INT32_MAX)


def ref_double(x: int, m0: int, shift: int) -> int:
    """x * 2^left wrapped, high word of the doubled product rounded half up, then / 2^right half away."""
    xs = wrap32(x * 2 ** max(shift, 0))
    h = INT32_MAX if xs == m0 == INT32_MIN else half_up(Fraction(xs * m0, 2 ** 31))
    return half_away(Fraction(h, 2 ** max(-shift, 0)))


def ref_single(x: int, m0: int, shift: int) -> int:
    return sat32(half_up(Fraction(x * m0, 2 ** (31 - shift))))


def f32(v: float) -> float:
    return struct.unpack("<f", struct.pack("<f", v))[0]


def ref_float32(x: int, m0: int, shift: int) -> int:
    m = f32(m0 * 2.0 ** (shift - 31))  # exact in double, then rounded to float32
    p = f32(f32(float(x)) * m)  # float32 * float32 is exact in double; one rounding to float32
    return sat32(half_away(Fraction(p)))


def ref_truncate(x: int, m0: int, shift: int) -> int:
    return sat32(math.floor(Fraction(x * m0, 2 ** (31 - shift))))


def ref_pow2(x: int, k: int) -> int:
    """x * 2^k by TFLite's double rounding with M0 = 2^30: x/2 rounded half up, then / 2^(-k-1) half away."""
    if k >= 0:
        return wrap32(x * 2 ** (k + 1)) // 2  # x*2^(k+1) wrapped, halved exactly (SRDHM with 2^30)
    return half_away(Fraction(half_up(Fraction(x, 2)), 2 ** (-k - 1)))


def ref_shift_only(x: int, m0: int, shift: int) -> int:
    m = Fraction(m0, 2 ** 31) * Fraction(2) ** shift
    k = math.floor(math.log2(m))  # m in [2^k, 2^(k+1)); nearest in log2: compare m with 2^(k + 1/2)
    k = k + 1 if m * m >= Fraction(2) ** (2 * k + 1) else k
    return ref_pow2(x, k)


def ref_mult_bits(x: int, m0: int, shift: int, n: int) -> int:
    q = half_away(Fraction(m0, 2 ** (31 - n))) * 2 ** (31 - n)
    if q == 2 ** 31:
        q, shift = 2 ** 30, shift + 1
    return ref_double(x, q, shift)


def run_variant(text, x, m0, shift, zp=0, lo=INT32_MIN, hi=INT32_MAX):
    return int(fp.requantize_variant(np.int64(x), 0, np.int64(m0), np.int64(shift), zp, lo, hi, text))


@settings(max_examples=300, deadline=None)
@given(I32, M0, SHIFT)
def test_double_single_float32_truncate_match_their_statements(x, m0, shift):
    assert run_variant("double", x, m0, shift) == sat32(ref_double(x, m0, shift))
    assert run_variant("single", x, m0, shift) == ref_single(x, m0, shift)
    assert run_variant("float32", x, m0, shift) == ref_float32(x, m0, shift)
    assert run_variant("truncate", x, m0, shift) == ref_truncate(x, m0, shift)


@settings(max_examples=300, deadline=None)
@given(I32, M0, st.integers(-31, 29), st.sampled_from([1, 4, 8, 12, 16, 24, 31]))
def test_shift_only_and_mult_bits_match_their_statements(x, m0, shift, n):
    assert run_variant("shift-only", x, m0, shift) == sat32(ref_shift_only(x, m0, shift))
    assert run_variant(f"mult-bits={n}", x, m0, shift) == sat32(ref_mult_bits(x, m0, shift, n))


@settings(max_examples=200, deadline=None)
@given(I32, st.integers(0, 31))
def test_shift_n_is_a_rounding_shift_by_n(x, n):
    assert run_variant(f"shift={n}", x, 1_518_500_250, -5) == sat32(ref_pow2(x, -n))


def test_exact_power_of_two_scale_shift_only_equals_double():
    xs = np.arange(-5000, 5000, dtype=np.int64)
    for k in range(-20, 3):
        m0, shift = fp.quantize_multiplier(2.0 ** k)
        assert m0 == 1 << 30
        for v in ("shift-only", f"shift={-k}" if k <= 0 else "shift-only", "mult-bits=1"):
            got = fp.requantize_variant(xs, 3, m0, shift, -7, -128, 127, v)
            assert np.array_equal(got, fp.requantize(xs, 3, m0, shift, -7, -128, 127, "double")), (k, v)


def test_hand_derived_corners():
    # M = 0.71875 * 2^-7 (M0 = 23 * 2^26, shift -7): log2 M = -7.48 -> nearest in log2 2^-7,
    # linearly nearest (mult-bits=1: M0 rounds to 2^30) 2^-8
    m0, shift = 23 << 26, -7
    assert run_variant("shift-only", 512, m0, shift) == 4  # 512 >> 7
    assert run_variant("mult-bits=1", 512, m0, shift) == 2  # 512 >> 8
    assert run_variant("double", 512, m0, shift) == 3  # 512 * 0.71875 / 128 = 2.875
    assert run_variant("truncate", 512, m0, shift) == 2  # floor(2.875)
    assert run_variant("truncate", -512, m0, shift) == -3  # floor(-2.875)
    assert run_variant("double", -448, m0, shift) == -3  # -2.515625 -> -3
    assert run_variant("float32", -256, 1 << 30, -7) == -1  # -256 * 2^-8 = -1 exactly
    assert run_variant("float32", -384, 1 << 30, -7) == -2  # -1.5: half away from zero
    # zero point and clamp apply after every variant
    assert run_variant("truncate", 512, m0, shift, zp=10, lo=-128, hi=11) == 11  # 2 + 10 -> clamp


def test_parse_and_errors():
    assert str(fp.parse_requant_variant(" Mult-Bits=16 ")) == "mult-bits=16"
    assert fp.parse_requant_variant("shift=8") == fp.RequantVariant("shift", 8)
    for bad in ("half", "mult-bits=0", "mult-bits=32", "mult-bits=x", "shift=-1", "double=3"):
        with pytest.raises(QsimError, match="requant variant"):
            fp.parse_requant_variant(bad)


def _gemm_outputs(prepared, values):
    """Each GEMM op's output recomputed by ``prepared`` from the inputs recorded in ``values``."""
    g = prepared.graph
    out = {}
    for p in prepared.ops:
        if p.kernel.accumulate is not None:
            ins = [values[i] if i in values else g.tensors[i].data for i in p.op.inputs if i >= 0]
            out[p.op.index] = np.asarray(p.kernel.eval(p.params, ins)[0])
    return out


def test_double_and_single_variants_equal_todays_profiles():
    g = load(DEMO)
    x = np.load(REPO / "examples" / "models" / "demo_testset.npz")["x"][:40]
    tflm = prepare_graph(g, "tflm").run_samples({g.inputs[0]: x}, keep_all=True)
    dbl = prepare_graph(g, "tflm", "double").run_samples({g.inputs[0]: x}, keep_all=True)
    assert all(np.array_equal(tflm[t], dbl[t]) for t in tflm)
    single = prepare_graph(g, "single")
    sv = single.run_samples({g.inputs[0]: x}, keep_all=True)
    want = _gemm_outputs(single, sv)
    got = _gemm_outputs(prepare_graph(g, "tflm", "single"), sv)
    assert want and all(np.array_equal(want[k].reshape(got[k].shape), got[k]) for k in want)
    # litert's FULLY_CONNECTED rescales in double; requant="double" makes it TFLM's fixed point
    lit = prepare_graph(g, "litert", "double").run_samples({g.inputs[0]: x}, keep_all=True)
    assert all(np.array_equal(tflm[t], lit[t]) for t in tflm)
