"""TFLite's integer requantization arithmetic: the one source of truth in qsim.

Every kernel, the accelerator model, the C generator's tables and the RTL
testbench call these functions; nothing else in qsim re-derives them.

Conventions (identical to TFLite / gemmlowp):
  * A real multiplier M is stored as ``M = M0 * 2**(shift - 31)`` with ``M0`` a
    Q31 int32 in [2**30, 2**31) (or 0) and ``shift`` a signed int where a
    *positive* shift means a left shift (M > 1) and a negative shift a right
    shift.  That is ``QuantizeMultiplier`` in quantization_util.cc.
  * "double" rounding is TFLite's default MultiplyByQuantizedMultiplier:
    optional left shift, SaturatingRoundingDoublingHighMul (round half away
    toward +infinity on the 64-bit product), then RoundingDivideByPOT (round
    half away from zero).  Two roundings.
  * "single" rounding is the ``TFLITE_SINGLE_ROUNDING`` build:
    ``(x * M0 + 2**(30 - shift)) >> (31 - shift)`` in 64 bits (round half up).

All functions are vectorized over numpy integer arrays (computed in int64)
and also accept Python ints; results are int64 arrays holding int32 values,
except that the gemmlowp reciprocal chain (:func:`get_reciprocal` and what it
calls: wrap_int32, saturating_rounding_doubling_high_mul, rounding_divide_by_pot,
rounding_half_sum, saturating_rounding_multiply_by_pot, count_leading_zeros_u32)
returns Python ints for Python int arguments: the same code on exact ints,
for one value without numpy's per-call cost.

Arithmetic edges: one behaviour each, shared by this module, the generated C
(codegen/templates/qkernels.c) and the requant RTL (rtl/requant_lane.sv);
tests/test_edges.py and hdl_tests run all three on the same vectors.
  * single-rounding results outside int32 saturate to int32
    (:func:`multiply_by_quantized_multiplier_single`);
  * shifts outside :data:`SHIFT_RANGE` are refused at prepare with a QsimError
    (:func:`quantize_multiplier`, :func:`check_shift_range`);
  * acc + bias and the double-rounding left shift wrap like int32;
  * the zero-point add before the activation clamp never wraps.
SOFTMAX's row-sum edge is the kernel's (qsim/kernels/activations.py).
"""
from __future__ import annotations

import math
from typing import Any

from dataclasses import dataclass, field

import numpy as np

from .errors import QsimError

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
ROUNDING_MODES = ("double", "single")

# The shifts (TFLite sign convention, > 0 = left) MultiplyByQuantizedMultiplier accepts, per
# rounding mode; the one range every consumer supports:
#  * TFLite "double": ``x * (1 << left)`` and RoundingDivideByPOT (gemmlowp asserts
#    0 <= exponent <= 31) are defined for -31 <= shift <= 31 only (1 << 32 is undefined in C++);
#    TFLITE_SINGLE_ROUNDING DCHECKs -31 <= shift <= 30 (a total right shift of 1..62).
#  * the generated C: ``(uint32_t)x << s`` and ``x >> e`` are undefined from 32 bits on;
#  * the RTL: a 6-bit signed shift port (rtl/requant_lane.sv).
# QuantizeMultiplier never yields a shift below -31 (it flushes to (0, 0)); above 31 (double) it
# does for a real multiplier >= 2**31, which no meaningful model has: that is refused at prepare
# (:func:`quantize_multiplier` raises QsimError) instead of being given some arbitrary meaning.
SHIFT_RANGE = {"double": (-31, 31), "single": (-31, 30)}
SHIFT_RANGE_INT64 = (-31, 7)  # MultiplyByQuantizedMultiplier(int64 x, ...): TFLite's range (int16x8)
INT64_ACC_LIMIT = 1 << 47  # ... which assumes |x| < 2**47 (larger x: double wraps in int64, single overflows)


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def _int_or_i64(x):
    """A Python int as itself, anything else as an int64 array: the functions that use it are
    generic over one exact Python int (arbitrary precision, ``>>`` floors and ``&`` is two's
    complement like int64) and int64 arrays, so a single value (e.g. one SOFTMAX row's sum) runs
    the same code without numpy's per-call overhead (see :func:`get_reciprocal`)."""
    return x if type(x) is int else np.asarray(x, dtype=np.int64)


def _select(cond, a, b):
    """``np.where(cond, a, b)``; for a Python bool ``cond`` (the Python int path) ``a if cond else b``."""
    if type(cond) is bool:
        return a if cond else b
    return np.where(cond, a, b)


def wrap_int32(x) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32 range (C's int32 overflow); a Python int
    gives a Python int."""
    x = _int_or_i64(x)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturate(x, lo: int, hi: int) -> np.ndarray:
    return np.clip(_i64(x), lo, hi)


def check_shift_range(shift, rounding: str, what: str = "requantization shift") -> None:
    """QsimError unless every ``shift`` is in ``SHIFT_RANGE[rounding]`` (see there for why)."""
    if rounding not in SHIFT_RANGE:
        raise QsimError(f"unknown rounding mode {rounding!r}; expected one of {ROUNDING_MODES}")
    lo, hi = SHIFT_RANGE[rounding]
    a = _i64(shift)
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        bad = int(a.min()) if int(a.min()) < lo else int(a.max())
        raise QsimError(
            f"{what} {bad} is outside [{lo}, {hi}], the range {rounding}-rounding "
            "MultiplyByQuantizedMultiplier supports in TFLite, in the generated C and in the requant RTL "
            "(a real multiplier of 2**31 or more: the tensor scales are not meaningful).")


def _require_shifts(shift: np.ndarray, rounding: str) -> None:
    """Eval-time guard (prepare never produces other shifts): ValueError outside SHIFT_RANGE."""
    lo, hi = SHIFT_RANGE[rounding]
    if np.any((shift < lo) | (shift > hi)):
        raise ValueError(f"{rounding}-rounding shift must be in [{lo}, {hi}] (SHIFT_RANGE)")


# --------------------------------------------------------------------------- prepare

def quantize_multiplier(real_multiplier: float, single_rounding: bool = False) -> tuple[int, int]:
    """Real multiplier -> (M0 Q31 int32, shift), TFLite's QuantizeMultiplier.

    frexp gives q in [0.5, 1); M0 = round(q * 2**31) (half away from zero).
    If rounding produced 2**31, halve it and bump the shift.  Multipliers below
    ~2**-31 flush to (0, 0).  With ``single_rounding`` (TFLITE_SINGLE_ROUNDING
    builds) a shift above 30 saturates to (2**31 - 1, 30).  Without it a shift above
    31 (a real multiplier >= 2**31) raises QsimError: outside ``SHIFT_RANGE["double"]``.
    """
    m = float(real_multiplier)
    if not math.isfinite(m) or m < 0:
        raise ValueError(f"multiplier must be finite and >= 0, got {real_multiplier!r}")
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = round_half_away_int(q * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    return _finish_multiplier(q_fixed, shift, single_rounding)


def _finish_multiplier(q_fixed: int, shift: int, single_rounding: bool) -> tuple[int, int]:
    """QuantizeMultiplier's range handling of (M0, shift): flush below -31, saturate above 30
    (single rounding), refuse above 31 (double rounding)."""
    if shift < -31:
        return 0, 0
    if single_rounding and shift > 30:
        return (1 << 31) - 1, 30
    check_shift_range(shift, "double", "requantization shift")
    return int(q_fixed), int(shift)


def quantize_multiplier_array(real_multipliers, single_rounding: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Vector form of :func:`quantize_multiplier` (per-channel tables)."""
    flat = np.asarray(real_multipliers, dtype=np.float64).reshape(-1)
    pairs = [quantize_multiplier(v, single_rounding) for v in flat]
    m0 = np.array([p[0] for p in pairs], dtype=np.int64)
    sh = np.array([p[1] for p in pairs], dtype=np.int64)
    return m0, sh


def fold_divisor_into_multiplier(m0: int, shift: int, divisor: int) -> tuple[int, int]:
    """QuantizedMeanOrSum's division of a (M0, shift) multiplier by an element count:
    ``(M0 * 2**s // divisor, shift - s)`` with ``s = min(floor(log2(divisor)), 32, 31 + shift)``,
    so the quotient keeps as many significant bits as the Q31 format allows."""
    s = min(int(divisor).bit_length() - 1, 32, 31 + int(shift))
    return int((int(m0) << s) // int(divisor)), int(shift) - s


def quantize_multiplier_smaller_than_one_exp(real_multiplier: float) -> tuple[int, int]:
    """QuantizeMultiplierSmallerThanOneExp: M in (0, 1) -> (M0, left_shift <= 0)."""
    if not 0.0 < real_multiplier < 1.0:
        raise ValueError(f"multiplier must be in (0, 1), got {real_multiplier!r}")
    m0, shift = quantize_multiplier(real_multiplier)
    if shift > 0:
        raise ValueError("multiplier rounded up to >= 1")
    return m0, shift


def round_half_away_int(v: float) -> int:
    """C's std::round / TfLiteRound on one double: nearest integer, ties away from zero.

    Exact for every double (``floor(|v| + 0.5)`` is not: it rounds 0.49999999999999994 up).
    """
    a = abs(float(v))
    r = math.floor(a)
    if a - r >= 0.5:  # a - floor(a) is exact in binary floating point
        r += 1
    return int(r) if v >= 0 else -int(r)




def quantize_multiplier_unnormalized(real_multiplier: float) -> tuple[int, int]:
    """TFLM's inline multiplier for LOGISTIC/TANH (fixed-point variant): frexp, then
    ``(int32_t)TfLiteRound(q * 2**31)`` with no renormalisation of a 2**31 result (it
    wraps to INT32_MIN like the C cast) and no flush of tiny values.  -> (M0, exponent)."""
    q, e = math.frexp(float(real_multiplier))
    return int(wrap_int32(round_half_away_int(q * (1 << 31)))), int(e)


# --------------------------------------------------------------------------- eval

def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values.

    Returns round(a*b / 2**31) with ties rounded toward +infinity; the one
    overflow case INT32_MIN * INT32_MIN saturates to INT32_MAX.  gemmlowp adds
    a nudge of 2**30 (product >= 0) or 1 - 2**30 (product < 0) and lets C
    division truncate toward zero; both branches equal the single floor shift
    ``(a*b + 2**30) >> 31`` (for a negative product p, with p + 2**30 =
    q*2**31 + r: trunc((q-1)*2**31 + r + 1) / 2**31 = q), computed here.
    The product 2**62 arises only from INT32_MIN * INT32_MIN.
    """
    ab = _int_or_i64(a) * _int_or_i64(b)  # |a*b| <= 2**62: exact in int64
    high = (ab + (1 << 30)) >> 31
    return _select(ab == 1 << 62, INT32_MAX, high)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2**exponent, ties away from zero. 0 <= exponent <= 31.
    Python ints x and exponent give a Python int."""
    x, e = _int_or_i64(x), _int_or_i64(exponent)
    if (not 0 <= e <= 31) if type(e) is int else np.any((e < 0) | (e > 31)):
        raise ValueError("rounding_divide_by_pot exponent must be in [0, 31]")
    mask = ((1 if type(e) is int else np.int64(1)) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier_double(x, m0, shift) -> np.ndarray:
    """TFLite's default MultiplyByQuantizedMultiplier (two roundings).

    ``x * 2**max(shift, 0)`` wraps like C int32 arithmetic (TFLite's ``x * (1 << left)``
    as every compiler executes it; the C kernels and the RTL wrap the same way), then
    SRDHM by M0, then a rounding right shift by ``max(-shift, 0)``.  Shifts must be in
    ``SHIFT_RANGE["double"]`` ([-31, 31]).
    """
    shift = _i64(shift)
    _require_shifts(shift, "double")
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    scaled = wrap_int32(_i64(x) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, m0), right)


def multiply_by_quantized_multiplier_single(x, m0, shift) -> np.ndarray:
    """TFLITE_SINGLE_ROUNDING MultiplyByQuantizedMultiplier (one rounding, half up).

    ``saturate_int32((x * M0 + 2**(30 - shift)) >> (31 - shift))`` in 64 bits, for
    ``SHIFT_RANGE["single"]`` (-31 <= shift <= 30) as TFLite requires.

    A result outside int32 (e.g. x = 2**30, M0 = 2**30, shift 2) saturates.  TFLite only
    DCHECKs this: a debug build aborts, a release build truncates to int32 (a huge
    positive value becomes 0 or negative, a wrong answer).  Saturation is what a
    hardware requantizer does (rtl/requant_lane.sv) and gives the int8 output the
    unbounded value would; the generated C does the same (qk_mbqm).
    """
    x, m0, shift = _i64(x), _i64(m0), _i64(shift)
    _require_shifts(shift, "single")
    total = 31 - shift
    rounding = np.int64(1) << (total - 1)
    return np.clip((x * m0 + rounding) >> total, INT32_MIN, INT32_MAX)


def multiply_by_quantized_multiplier(x, m0, shift, rounding: str = "double") -> np.ndarray:
    """Dispatch on the rounding mode name ("double" | "single")."""
    if rounding == "double":
        return multiply_by_quantized_multiplier_double(x, m0, shift)
    if rounding == "single":
        return multiply_by_quantized_multiplier_single(x, m0, shift)
    raise ValueError(f"unknown rounding mode {rounding!r}; expected one of {ROUNDING_MODES}")


def requantize(acc, bias, m0, shift, output_zero_point, act_min, act_max, rounding: str = "double") -> np.ndarray:
    """The requantization unit: int32 accumulator -> clamped int8/int16 value.

    ``clamp(MBQM(acc + bias, M0, shift) + zp, act_min, act_max)``.  ``bias``,
    ``m0`` and ``shift`` broadcast along the last (channel) axis of ``acc``.
    The accumulator add wraps like int32 (TFLite's int32 ``acc += bias`` as compilers
    execute it; the C kernels and the RTL wrap explicitly).  The zero-point add does
    not wrap (MBQM may return INT32_MAX; TFLite would overflow int32 there, the C
    kernels add in 64 bits, the RTL in 33 bits), so the clamp sees the true sum.
    """
    summed = wrap_int32(_i64(acc) + _i64(bias))
    scaled = multiply_by_quantized_multiplier(summed, m0, shift, rounding)
    return saturate(scaled + _i64(output_zero_point), act_min, act_max)


# --------------------------------------------------------------------------- int16x8: int64 accumulators

def int64_rescale_factor(m0, shift, rounding: str = "double") -> tuple[np.ndarray, np.ndarray]:
    """(factor, total right shift) of the int64-accumulator rescale's one rounding,
    ``(x * factor + 2**(total - 1)) >> total`` (:func:`multiply_by_quantized_multiplier_int64`):
    "double": ``m0`` reduced to Q15, ``(m0 + 2**15) >> 16`` (0x7FFF when m0 >= 0x7FFF0000), and
    ``15 - shift``; "single": ``m0`` itself and ``31 - shift``."""
    m0, shift = _i64(m0), _i64(shift)
    if rounding == "double":
        return np.where(m0 < 0x7FFF0000, (m0 + (1 << 15)) >> 16, 0x7FFF), 15 - shift
    if rounding == "single":
        return m0, 31 - shift
    raise ValueError(f"unknown rounding mode {rounding!r}; expected one of {ROUNDING_MODES}")


def multiply_by_quantized_multiplier_int64(x, m0, shift, rounding: str = "double") -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier overload for int64 accumulators (int16x8 CONV_2D,
    DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV).

    "double" (TFLite's default build): the Q31 ``m0`` is first reduced to Q15,
    ``r = (m0 + 2**15) >> 16`` (0x7FFF when m0 >= 0x7FFF0000), then one rounding,
    ``(x * r + 2**(14 - shift)) >> (15 - shift)`` in 64 bits.  "single"
    (TFLITE_SINGLE_ROUNDING): the full Q31 multiplier, ``(x * m0 + 2**(30 - shift)) >> (31 - shift)``
    (exact here in Python integers).  The int64 -> int32 conversion of the result wraps, as the
    references' ``static_cast<int32_t>`` does (the assumed ranges, |x| < 2**47 and a result that
    fits int32, hold for real layers).  ``m0`` >= 0, -31 <= shift <= 7.
    """
    x, m0, shift = _i64(x), _i64(m0), _i64(shift)
    if np.any((shift < SHIFT_RANGE_INT64[0]) | (shift > SHIFT_RANGE_INT64[1])):
        raise QsimError(f"an int64-accumulator requantization shift must be in [-31, 7] (TFLite's range), "
                        f"got {int(np.asarray(shift).ravel()[np.argmax(((shift < -31) | (shift > 7)).ravel())])}; "
                        "the layer's scales are too far apart.")
    factor, total = int64_rescale_factor(m0, shift, rounding)
    if rounding == "double":
        return wrap_int32((x * factor + (np.int64(1) << (total - 1))) >> total)
    res = _SINGLE_ROUNDING_64(x, factor, total)  # x * m0 may pass 2**63: Python integers
    return wrap_int32(np.asarray(res, dtype=object).astype(np.int64))


_SINGLE_ROUNDING_64 = np.frompyfunc(lambda x, m, t: (int(x) * int(m) + (1 << (int(t) - 1))) >> int(t), 3, 1)


def requantize_int64(acc, bias, m0, shift, output_zero_point, act_min, act_max, rounding: str = "double") -> np.ndarray:
    """The int16x8 requantization: ``clamp(MBQM64(acc + bias, m0, shift) + zp, act_min, act_max)``.

    ``acc`` and ``bias`` are int64 and add without wrapping (TFLite's int64 accumulator and
    bias); ``bias``, ``m0``, ``shift`` broadcast along the last (channel) axis.
    """
    scaled = multiply_by_quantized_multiplier_int64(_i64(acc) + _i64(bias), m0, shift, rounding)
    return saturate(scaled + _i64(output_zero_point), act_min, act_max)


# --------------------------------------------------------------------------- activation ranges

QUANTIZE_OVERFLOW = ("saturate", "x86")


def float_to_int32_cast(v) -> np.ndarray:
    """C ``static_cast<int32_t>`` of already-rounded doubles/floats as x86 executes it (cvttss2si):
    values outside int32, and NaN, become INT32_MIN.  Returns int64."""
    v = np.asarray(v, np.float64)
    ok = np.isfinite(v) & (v >= -2.0 ** 31) & (v < 2.0 ** 31)
    return np.where(ok, np.where(ok, v, 0).astype(np.int64), INT32_MIN)


def quantize_affine(x, scale, zero_point, qmin: int = -128, qmax: int = 127,
                    overflow: str = "saturate", dtype=np.int64) -> np.ndarray:
    """TFLite's AffineQuantize (QUANTIZE float -> int, and the input quantization a user must do):
    ``clamp(int32(round_half_away(float32(x) / float32(scale))) + zero_point, qmin, qmax)``.

    The division is a float32 division, the rounding TfLiteRound (ties away from
    zero).  ``scale`` and ``zero_point`` broadcast (per-channel: shape them along
    the axis).  Returns ``dtype`` (int64 by default; an integer type holding [qmin, qmax]).
    For every ratio inside int32 both ``overflow`` rules below are bit-identical to TFLite.

    ``overflow`` says what a ratio with |x / scale| >= 2^31 (or inf, NaN) gives; C++
    leaves the int cast undefined there:

    * ``"saturate"`` (default; qsim's rule for data a user quantizes): the rounded
      ratio is clipped to int32 *in floating point* before the cast, so +1e10 and
      +inf give ``qmax``, -1e10 gives ``qmin`` (what an Arm ``vcvt`` does too); the
      zero-point add cannot wrap.  NaN has no direction and is a QsimError.
    * ``"x86"``: what the references (LiteRT, TFLite Micro) do on an x86 host
      (cvttss2si gives INT32_MIN for all of them, so +1e10 -> ``qmin``), then the
      int32 zero-point add wraps.  The QUANTIZE kernel and the activation-range
      helper use it to stay bit-exact with the references on every input.
    """
    if overflow not in QUANTIZE_OVERFLOW:
        raise ValueError(f"overflow must be one of {QUANTIZE_OVERFLOW}, got {overflow!r}")
    with np.errstate(all="ignore"):  # float32 overflow -> inf, handled below
        ratio = (np.asarray(x, np.float32) / np.asarray(scale, np.float32)).astype(np.float32, copy=False)
    if overflow == "x86":
        return np.clip(wrap_int32(float_to_int32_cast(round_half_away_f32(ratio)) + _i64(zero_point)),
                       qmin, qmax).astype(dtype, copy=False)
    if ratio.size and np.isnan(ratio.min()):  # min is NaN when any value is
        raise QsimError(f"cannot quantize NaN: {int(np.isnan(ratio).sum())} of {ratio.size} value(s) are NaN "
                        "(or 0/0, inf/inf with this scale); NaN has no integer representation.")
    if np.ndim(zero_point) == 0 and np.ndim(ratio):  # ratio: a new array (the quotient), ours to overwrite
        lo, hi = qmin - int(zero_point), qmax - int(zero_point)
        if -F32_EXACT < lo - 1 and hi + 1 < F32_EXACT:
            return _quantize_small_f32(ratio, lo, hi, int(zero_point)).astype(dtype, copy=False)
    r = round_half_away_f32(ratio)
    zp = _i64(zero_point)
    lo, hi = qmin - zp, qmax - zp
    if np.broadcast_shapes(r.shape, zp.shape) == r.shape and lo.min() >= INT32_MIN and hi.max() <= INT32_MAX:
        # [qmin - zp, qmax - zp] lies inside int32, so clamping to int32, adding zp and clamping to
        # [qmin, qmax] is one clamp to [qmin - zp, qmax - zp] and the add (exact in float64: < 2^53)
        np.clip(r, lo.astype(np.float64), hi.astype(np.float64), out=r)
        r += zp
        return r.astype(dtype)
    np.clip(r, float(INT32_MIN), float(INT32_MAX), out=r)  # exact in float64
    return np.clip(r.astype(np.int64) + zp, qmin, qmax).astype(dtype, copy=False)


F32_EXACT = 1 << 24  # integers of magnitude below this are exact in float32


def _quantize_small_f32(ratio: np.ndarray, lo: int, hi: int, zp: int) -> np.ndarray:
    """:func:`quantize_affine`'s saturating rule for a float32 ``ratio`` (no NaN; overwritten) and an
    integer range [lo, hi] = [qmin - zp, qmax - zp] inside ±2^24, in float32 passes, all exact:
    clamping to [lo - 1, hi + 1] first changes no result (rounding is monotone, and lo - 1, hi + 1
    are integers that clamp to lo, hi as every value beyond them does); then |ratio| < 2^24, so
    t = trunc(ratio), the fraction ratio - t, twice it (in (-2, 2)) and its trunc (±1 exactly when
    |fraction| >= 0.5: a tie goes away from zero) are all exact, as is t plus it.  Returns the
    integers [qmin, qmax] as float32."""
    np.clip(ratio, np.float32(lo - 1), np.float32(hi + 1), out=ratio)
    t = np.trunc(ratio)
    ratio -= t
    ratio *= 2
    np.trunc(ratio, out=ratio)
    t += ratio
    np.clip(t, np.float32(lo), np.float32(hi), out=t)
    t += np.float32(zp)
    return t


def quantize_float_to_int(value: float, scale: float, zero_point: int) -> int:
    """TFLite's Quantize helper in CalculateActivationRangeQuantized: :func:`quantize_affine`
    of one value, unclamped, with the references' x86 overflow (bit-exact with them)."""
    return int(quantize_affine(value, scale, zero_point, INT32_MIN, INT32_MAX, overflow="x86"))


UINT8_OFFSET = 128  # uint8 q and int8 q - 128 are the same real value when the zero point moves by 128 too


def uint8_to_int8(q) -> np.ndarray:
    """uint8 values as the int8 values ``q - 128`` (the bit pattern with its top bit flipped).

    Every uint8 kernel of TFLite works on differences (q - zero_point), offsets added after
    rounding and clamps to the type's range, all unchanged when q, every zero point and the
    clamp bounds move by -128 together: this is the exact map into qsim's int8 kernels."""
    return np.bitwise_xor(np.ascontiguousarray(q, dtype=np.uint8).view(np.int8), np.int8(-128))


def int8_to_uint8(q) -> np.ndarray:
    """Inverse of :func:`uint8_to_int8`: int8 ``q`` as uint8 ``q + 128``."""
    return np.bitwise_xor(np.ascontiguousarray(q, dtype=np.int8), np.int8(-128)).view(np.uint8)


def quantized_activation_range(activation: str, scale: float, zero_point: int,
                               qmin: int = -128, qmax: int = 127) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: (act_min, act_max) for a fused activation.

    ``activation`` is the ir name ("NONE", "RELU", "RELU6", "RELU_N1_TO_1");
    the bounds are the output tensor's real 0 / 6 / -1..1 quantized with its
    scale and zero point, intersected with [qmin, qmax] (int8 by default).
    Raises ValueError for other activations (TANH, SIGN_BIT are not fusable here).
    """
    if activation == "NONE":
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, quantize_float_to_int(0.0, scale, zero_point)), qmax
    if activation == "RELU6":
        return (max(qmin, quantize_float_to_int(0.0, scale, zero_point)),
                min(qmax, quantize_float_to_int(6.0, scale, zero_point)))
    if activation == "RELU_N1_TO_1":
        return (max(qmin, quantize_float_to_int(-1.0, scale, zero_point)),
                min(qmax, quantize_float_to_int(1.0, scale, zero_point)))
    raise ValueError(f"unsupported fused activation {activation!r}")


# --------------------------------------------------------------------------- float rescale

def round_half_away(x) -> np.ndarray:
    """std::round / TfLiteRound on doubles, vectorized: ties away from zero. Returns float64."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    r = np.floor(a)
    with np.errstate(invalid="ignore"):  # inf - inf for infinite inputs: they stay infinite
        r = r + (a - r >= 0.5)  # exact, unlike floor(a + 0.5) at 0.49999999999999994
    return np.where(x < 0, -r, r)


def rescale_float32(q, scale: float, zero_in: int, zero_out: int, qmin: int, qmax: int) -> np.ndarray:
    """LiteRT's ConcatenationWithScaling element rule, in float32 as its kernel computes it:
    ``s = float32(s_in) * float32(1 / float32(s_out))``, ``b = float32(-zp_in * s)``, then
    ``clamp(int(round_half_away(float32(float32(q * s) + b))) + zp_out, qmin, qmax)`` (int64)."""
    one = np.float32(1)
    s = np.float32(np.float32(scale[0]) * np.float32(one / np.float32(scale[1])))
    b = np.float32(np.float32(-zero_in) * s)
    v = np.asarray(q).astype(np.float32) * s + b  # float32 products and sums, each rounded once
    return np.clip(round_half_away_f32(v).astype(np.int64) + zero_out, qmin, qmax)


def round_half_away_f32(x) -> np.ndarray:
    """:func:`round_half_away` of float32 values in fewer passes: ``trunc(x + copysign(0.5, x))`` in
    float64.  Bit-identical for every float32 ``x`` (24 significant bits): for 0.25 <= |x| < 2^52 the
    sum x ± 0.5 fits in 53 bits and is exact; below 0.25 it stays inside (-0.75, 0.75) however it
    rounds and truncates to 0; from 2^23 on x is an integer and x ± 0.5 rounds back to x (a tie only
    in [2^52, 2^53), where a float32 x is even) or is exact.  inf stays inf, NaN stays NaN; the
    sign of a zero result may differ (-0.0 for -0.0 input), which casts to the same integer.
    Returns float64."""
    a = np.asarray(x, np.float32).astype(np.float64)
    np.add(a, np.copysign(0.5, a), out=a)
    return np.trunc(a, out=a)


def requantize_float_rescale(acc, bias, real_scale, output_zero_point, act_min, act_max,
                             accumulator: str = "int32") -> np.ndarray:
    """Requantization by a double-precision real multiplier (no Q31 fixed point).

    ``clamp(round_half_away(double(int32(acc + bias)) * real_scale) + zp, act_min, act_max)``
    with ``real_scale = double(input_scale) * double(filter_scale[c]) / double(output_scale)``
    broadcast along the last (channel) axis.  This is what LiteRT 2.3's
    BUILTIN_REF FULLY_CONNECTED does for int8 (established by differential
    tests in tests/test_kernels_gemm.py: it matches neither double nor single
    fixed-point rounding on exact ties, and follows the unquantized double
    scale where QuantizeMultiplier rounds the multiplier).  ``accumulator`` "int64" (LiteRT's
    int16x8 FULLY_CONNECTED): ``acc + bias`` in int64, not wrapped to int32.
    """
    summed = _i64(acc) + _i64(bias)
    summed = (wrap_int32(summed) if accumulator == "int32" else summed).astype(np.float64)
    r = round_half_away(summed * np.asarray(real_scale, dtype=np.float64))
    r = np.clip(r, INT32_MIN, INT32_MAX).astype(np.int64)
    return saturate(r + _i64(output_zero_point), act_min, act_max)


# --------------------------------------------------------------------------- gemmlowp fixed point (softmax/logistic/tanh)
# Conventions of this block: a gemmlowp ``FixedPoint<int32, I>`` value is passed
# as its raw int32 (held in int64 arrays) plus, where it matters, its number of
# integer bits ``I`` (the value is raw / 2**(31 - I)).  Plain ``+``/``-`` on
# FixedPoint raws wrap like int32 (gemmlowp's Add/Sub/Neg); ``*`` is
# saturating_rounding_doubling_high_mul (integer bits add up).

def rounding_half_sum(a, b) -> np.ndarray:
    """gemmlowp RoundingHalfSum on int32: (a + b) / 2 rounded half away from zero (exact in 64 bits)."""
    s = _int_or_i64(a) + _int_or_i64(b)
    num = s + _select(s >= 0, 1, -1)
    return _select(num >= 0, num // 2, -((-num) // 2))  # C division truncates toward zero


def saturating_rounding_multiply_by_pot(x, exponent: int, bits: int = 32) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent> on a ``bits``-bit signed value.

    exponent > 0: left shift saturating to the type's range (gemmlowp saturates when
    |x| > 2**(bits-1-exponent) - 1); exponent < 0: RoundingDivideByPOT(x, -exponent)
    (ties away from zero); exponent == 0: identity.
    """
    x = _int_or_i64(x)
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    threshold = (1 << (bits - 1 - exponent)) - 1
    return _select(x > threshold, hi, _select(x < -threshold, lo, x << exponent))


def rescale_fixed(x, src_integer_bits: int, dst_integer_bits: int, bits: int = 32) -> np.ndarray:
    """gemmlowp Rescale<dst>(FixedPoint<int``bits``, src>): SaturatingRoundingMultiplyByPOT<src - dst> on the raw."""
    return saturating_rounding_multiply_by_pot(x, src_integer_bits - dst_integer_bits, bits)


# gemmlowp's FixedPoint code is generic over the raw type: the functions below take ``bits``
# (32: int32 raws, 16: int16 raws as in LiteRT's int16 LSTM gates).  Products are
# SaturatingRoundingDoublingHighMul of that width, Add/Sub/Neg wrap to it, and every constant is
# written as its int32 raw and, for int16, rounding-divided by 2**16 (RescaleConstantInitializer).

def _fx_wrap(x, bits: int) -> np.ndarray:
    return wrap_int32(x) if bits == 32 else wrap_int16(x)


def _fx_mul(a, b, bits: int = 32) -> np.ndarray:
    if bits == 32:
        return saturating_rounding_doubling_high_mul(a, b)
    return saturating_rounding_doubling_high_mul_int16(a, b)


def _fx_const(int32_raw: int, bits: int) -> int:
    """gemmlowp RescaleConstantInitializer: an int32 constant raw for a ``bits``-bit FixedPoint."""
    return int32_raw if bits == 32 else int(rounding_divide_by_pot(int32_raw, 32 - bits))


def _fx_one(bits: int) -> int:
    """Raw of FixedPoint<int``bits``, 0>::One() (saturated: 2**(bits-1) - 1)."""
    return (1 << (bits - 1)) - 1


def exp_on_interval_between_negative_one_quarter_and_0_excl(a, bits: int = 32) -> np.ndarray:
    """gemmlowp: exp(a) for a Q0.(bits-1) raw ``a`` in [-1/4, 0); result Q0.(bits-1) raw.

    Fourth-order Taylor expansion around -1/8: exp(-1/8) * (1 + x + x^2/2 + x^3/6 + x^4/24)
    with x = a + 1/8, every product an SRDHM and the constants gemmlowp's
    (exp(-1/8) = 1895147668 / 2**31, 1/3 = 715827883 / 2**31, rescaled to ``bits``).
    """
    constant_term = _fx_const(1895147668, bits)
    constant_1_over_3 = _fx_const(715827883, bits)
    x = _fx_wrap(_i64(a) + (1 << (bits - 4)), bits)
    x2 = _fx_mul(x, x, bits)
    x3 = _fx_mul(x2, x, bits)
    x4 = _fx_mul(x2, x2, bits)
    x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2, bits)
    inner = _fx_wrap(_fx_mul(_fx_wrap(x4_over_4 + x3, bits), constant_1_over_3, bits) + x2, bits)
    poly = saturating_rounding_multiply_by_pot(inner, -1, bits)
    return _fx_wrap(constant_term + _fx_mul(constant_term, _fx_wrap(x + poly, bits), bits), bits)


# (exponent, Q0.31 raw of exp(-2**exponent)) for gemmlowp's barrel shifter
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a, integer_bits: int, bits: int = 32) -> np.ndarray:
    """gemmlowp exp_on_negative_values: exp(a) for a <= 0 given as FixedPoint<int``bits``, integer_bits> raw.

    Returns a Q0.(bits-1) raw (exp(0) saturates to the type's max).  a is split into
    (a mod 1/4) - 1/4, evaluated by the Taylor kernel, then multiplied by
    exp(-2**k) for each set bit k of the remainder; inputs below -32 give 0
    (when integer_bits > 5).
    """
    a = _i64(a)
    frac_bits = bits - 1 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = _fx_wrap((a & mask) - one_quarter, bits)
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale_fixed(a_mod_quarter_minus_one_quarter, integer_bits, 0, bits), bits)
    remainder = _fx_wrap(a_mod_quarter_minus_one_quarter - a, bits)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = 1 << (frac_bits + exponent)
            result = np.where((remainder & bit) != 0, _fx_mul(result, _fx_const(multiplier, bits), bits), result)
    if integer_bits > 5:
        clamp = _fx_const(-(1 << (36 - integer_bits)), bits)
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, _fx_one(bits), result)


def _newton_reciprocal_half_denominator(a, bits: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Shared Newton-Raphson core of gemmlowp's 1/(1+x) and (1-x)/(1+x): returns Q2 x ~ 1/half_denominator."""
    half_denominator = rounding_half_sum(a, _fx_one(bits))  # (1 + a) / 2, Q0
    x = _fx_wrap(_fx_const(1515870810, bits) + _fx_mul(half_denominator, _fx_const(-1010580540, bits), bits),
                 bits)  # 48/17 - 32/17 * hd, Q2
    one_q2 = 1 << (bits - 3)
    for _ in range(3):
        half_denominator_times_x = _fx_mul(half_denominator, x, bits)
        one_minus = _fx_wrap(one_q2 - half_denominator_times_x, bits)
        x = _fx_wrap(x + rescale_fixed(_fx_mul(x, one_minus, bits), 4, 2, bits), bits)
    return x, half_denominator


def one_over_one_plus_x_for_x_in_0_1(a, bits: int = 32) -> np.ndarray:
    """gemmlowp: 1 / (1 + a) for a Q0 raw a in [0, 1); result Q0 raw (3 Newton-Raphson steps)."""
    x, _ = _newton_reciprocal_half_denominator(a, bits)
    return rescale_fixed(x, 1, 0, bits)  # ExactMulByPot<-1> (Q2 -> Q1, same raw) then Rescale<0>


def one_minus_x_over_one_plus_x_for_x_in_0_1(a, bits: int = 32) -> np.ndarray:
    """gemmlowp: (1 - a) / (1 + a) for a Q0 raw a in [0, 1); result Q0 raw."""
    x, _ = _newton_reciprocal_half_denominator(a, bits)
    return rescale_fixed(_fx_wrap(x - (1 << (bits - 3)), bits), 2, 0, bits)


def fixed_logistic(a, integer_bits: int, bits: int = 32) -> np.ndarray:
    """gemmlowp logistic(FixedPoint<int``bits``, integer_bits>) -> Q0.(bits-1) raw of 1 / (1 + exp(-a)).

    Positive side: 1 / (1 + exp(-|a|)); negative side: One - that (wrapping);
    a == 0 gives exactly one half.  ``bits=16`` is LiteRT's int16 ApplySigmoid (Q3.12 in).
    """
    a = _i64(a)
    positive = a > 0
    abs_input = np.where(positive, a, _fx_wrap(-a, bits))
    if_positive = one_over_one_plus_x_for_x_in_0_1(
        exp_on_negative_values(_fx_wrap(-abs_input, bits), integer_bits, bits), bits)
    if_negative = _fx_wrap(_fx_one(bits) - if_positive, bits)
    return np.where(a == 0, _fx_const(1 << 30, bits), np.where(positive, if_positive, if_negative))


def fixed_tanh(a, integer_bits: int, bits: int = 32) -> np.ndarray:
    """gemmlowp tanh(FixedPoint<int``bits``, integer_bits>) -> Q0.(bits-1) raw.

    t = (1 - exp(2n)) / (1 + exp(2n)) with n = -|a| (the doubling is exact: the raw
    is reinterpreted with integer_bits + 1); the sign is restored, tanh(0) = 0.
    ``bits=16`` is LiteRT's int16 ApplyTanh<integer_bits>.
    """
    a = _i64(a)
    negative = a < 0
    n = np.where(negative, a, _fx_wrap(-a, bits))
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1, bits), bits)
    return np.where(a == 0, 0, np.where(negative, _fx_wrap(-t, bits), t))


def count_leading_zeros_u32(x) -> np.ndarray:
    """Leading zero bits of x viewed as uint32 (32 for 0): 32 - bit_length(u), the bit length
    being frexp's exponent of u (exact: u < 2**32 is a float64; frexp(0) gives 0); a Python int
    uses int.bit_length."""
    u = _int_or_i64(x) & 0xFFFFFFFF
    if type(u) is int:
        return 32 - u.bit_length()
    return 32 - np.frexp(u.astype(np.float64))[1].astype(np.int64)


def get_reciprocal(x, x_integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite GetReciprocal: x (raw FixedPoint<int32, x_integer_digits>, > 0) -> (Q0.31 raw, num_bits_over_unit).

    x is normalised to 1 + s with s in [0, 1) by a left shift of its leading zeros;
    the reciprocal is 1 / (1 + s) (one_over_one_plus_x_for_x_in_0_1) and
    1 / x = raw / 2**31 * 2**-num_bits_over_unit, num_bits_over_unit =
    x_integer_digits - leading_zeros.  A Python int x gives Python ints (the same code; cheaper
    than numpy for one value, e.g. a single SOFTMAX row's sum).
    """
    x = _int_or_i64(x)
    headroom_plus_one = count_leading_zeros_u32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted = ((x & 0xFFFFFFFF) << headroom_plus_one) & 0xFFFFFFFF
    shifted_sum_minus_one = wrap_int32(shifted - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


def quantize_multiplier_greater_than_one(real_multiplier: float, single_rounding: bool = False) -> tuple[int, int]:
    """TFLite QuantizeMultiplierGreaterThanOne: M > 1 -> (M0 Q31, left_shift >= 0)."""
    if not real_multiplier > 1.0:
        raise ValueError(f"multiplier must be > 1, got {real_multiplier!r}")
    m0, shift = quantize_multiplier(real_multiplier, single_rounding)
    if shift < 0:
        raise ValueError("multiplier rounded to < 1")
    return m0, shift


def multiply_by_quantized_multiplier_greater_than_one(x, m0, left_shift, rounding: str = "double") -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplierGreaterThanOne.

    "double": SRDHM(x * 2**left_shift, M0) with the left shift wrapping like C int32;
    "single": the single-rounding MultiplyByQuantizedMultiplier(x, M0, left_shift).
    """
    if rounding == "single":
        return multiply_by_quantized_multiplier_single(x, m0, left_shift)
    if rounding != "double":
        raise ValueError(f"unknown rounding mode {rounding!r}; expected one of {ROUNDING_MODES}")
    return saturating_rounding_doubling_high_mul(wrap_int32(_i64(x) << _i64(left_shift)), m0)


def preprocess_softmax_scaling(beta: float, input_scale: float, input_integer_bits: int,
                               single_rounding: bool = False) -> tuple[int, int]:
    """TFLite PreprocessSoftmaxScaling -> (input_multiplier Q31, input_left_shift >= 0).

    Real multiplier min(beta * input_scale * 2**(31 - input_integer_bits), cap) in double,
    cap = 2**31 - 1 (2**30 - 1 for single-rounding builds), then
    QuantizeMultiplierGreaterThanOne: input differences become Q(input_integer_bits).
    """
    cap = float((1 << 30) - 1) if single_rounding else float((1 << 31) - 1)
    real = min(float(beta) * float(input_scale) * float(1 << (31 - input_integer_bits)), cap)
    return quantize_multiplier_greater_than_one(real, single_rounding)


def calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31) -> int:
    """TFLite CalculateInputRadius: floor((2**ib - 1) * 2**(tsb - ib) / 2**left_shift), in double."""
    max_input_rescaled = (1.0 * ((1 << input_integer_bits) - 1) * float(1 << (total_signed_bits - input_integer_bits))
                          / float(1 << input_left_shift) if input_left_shift < 63 else 0.0)
    return int(math.floor(max_input_rescaled))


# --------------------------------------------------------------------------- int16 fixed point (HARD_SWISH)

def wrap_int16(x) -> np.ndarray:
    """Two's-complement wrap to int16 range (C's conversion of an int to int16_t)."""
    return wrap_bits(x, 16)


def wrap_bits(x, bits: int) -> np.ndarray:
    """Two's-complement wrap to a signed ``bits``-bit range (C's conversion to int8_t / int16_t)."""
    half = 1 << (bits - 1)
    return ((_i64(x) + half) & ((1 << bits) - 1)) - half


def saturating_rounding_doubling_high_mul_int16(a, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul<int16>: a * b / 2**15 rounded to nearest, -32768**2 -> 32767.

    The nudge is 2**14 for a * b >= 0 and 1 - 2**14 below, then C truncation, so exact ties
    round up (toward +inf): -0.5 -> 0, +0.5 -> 1.
    """
    a, b = _i64(a), _i64(b)
    ab = a * b
    num = ab + np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    high = np.where(num >= 0, num >> 15, -((-num) >> 15))
    return np.where((a == -32768) & (b == -32768), 32767, wrap_int16(high))


def saturating_doubling_high_mul_int16(a, b) -> np.ndarray:
    """TFLite's SaturatingDoublingHighMul<int16> (SQDMULH): a * b / 2**15 truncated toward zero; -32768**2 -> 32767."""
    a, b = _i64(a), _i64(b)
    ab = a * b
    high = np.where(ab >= 0, ab >> 15, -((-ab) >> 15))
    return np.where((a == -32768) & (b == -32768), 32767, wrap_int16(high))


def saturating_left_shift_int16(x, amount: int) -> np.ndarray:
    """TFLite's SaturatingLeftShift on int16: clamp(x * 2**amount, -32768, 32767)."""
    return np.clip(_i64(x) * (1 << amount), -32768, 32767)


def downscale_int32_to_int16_multiplier(m0: int) -> int:
    """TFLite DownScaleInt32ToInt16Multiplier: Q31 multiplier -> Q15, round half up, saturating at 32767."""
    if m0 < 0:
        raise ValueError("multiplier must be >= 0")
    if m0 >= INT32_MAX - (1 << 15):
        return 32767
    return (m0 + (1 << 15)) >> 16


# --------------------------------------------------------------------------- int16 sigmoid/tanh by table (TFLM)

# TFLite's shared sigmoid table (tensorflow/lite/kernels/internal/common.h, sigmoid_table_uint16;
# also CMSIS-NN's arm_nntables.c): entry i is sigmoid(i / 24) in unsigned 0.16 fixed point,
# as published -- 44 entries are 1 LSB above round(65536 * sigmoid(i / 24)), so the numbers are
# data, not a formula (tests/test_lstm.py checks their shape).
SIGMOID_TABLE_UINT16 = np.array([
    32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498, 40149, 40794, 41432, 42064, 42688,
    43304, 43912, 44511, 45102, 45683, 46255, 46817, 47369, 47911, 48443, 48964, 49475, 49975, 50464, 50942, 51409,
    51865, 52311, 52745, 53169, 53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174, 56503, 56823, 57133, 57433,
    57724, 58007, 58280, 58544, 58800, 59048, 59288, 59519, 59743, 59959, 60168, 60370, 60565, 60753, 60935, 61110,
    61279, 61441, 61599, 61750, 61896, 62036, 62172, 62302, 62428, 62549, 62666, 62778, 62886, 62990, 63090, 63186,
    63279, 63368, 63454, 63536, 63615, 63691, 63765, 63835, 63903, 63968, 64030, 64090, 64148, 64204, 64257, 64308,
    64357, 64405, 64450, 64494, 64536, 64576, 64614, 64652, 64687, 64721, 64754, 64786, 64816, 64845, 64873, 64900,
    64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079, 65097, 65115, 65132, 65149, 65164, 65179, 65194, 65208,
    65221, 65234, 65246, 65258, 65269, 65280, 65291, 65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360, 65367,
    65374, 65381, 65387, 65393, 65399, 65404, 65410, 65415, 65420, 65425, 65429, 65433, 65438, 65442, 65445, 65449,
    65453, 65456, 65459, 65462, 65465, 65468, 65471, 65474, 65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491,
    65493, 65495, 65497, 65498, 65500, 65501, 65503, 65504, 65505, 65507, 65508, 65509, 65510, 65511, 65512, 65513,
    65514, 65515, 65516, 65517, 65517, 65518, 65519, 65520, 65520, 65521, 65522, 65522, 65523, 65523, 65524, 65524,
    65525, 65525, 65526, 65526, 65526, 65527, 65527, 65528, 65528, 65528, 65529, 65529, 65529, 65529, 65530, 65530,
    65530, 65530, 65531, 65531, 65531, 65531, 65531, 65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533,
    65533, 65533, 65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65535,
], dtype=np.int64)


def _lut_input(x, input_multiplier: int, input_left_shift: int) -> np.ndarray:
    """The scaled table input of TFLite's int16 Logistic/Tanh: multiplier 0 means "power of two":
    x * (3 << left_shift); otherwise (x * multiplier + rounding) >> left_shift (floor shift)."""
    x = _i64(x)
    if input_multiplier == 0:
        return x * (3 << input_left_shift)
    rnd = (1 << (input_left_shift - 1)) if input_left_shift > 0 else 0
    return (x * input_multiplier + rnd) >> input_left_shift


def _lut_interp(abs_x: np.ndarray, frac_bits: int) -> np.ndarray:
    """Linear interpolation in SIGMOID_TABLE_UINT16 at |x| / 2**frac_bits, in 0.(16 + frac_bits);
    indices >= 255 saturate to 0xFFFF << frac_bits (tanh) / 0x7FFF << 10 (logistic, by the caller)."""
    hi = abs_x >> frac_bits
    idx = np.minimum(hi, 254)
    ua = SIGMOID_TABLE_UINT16[idx]
    ub = SIGMOID_TABLE_UINT16[idx + 1]
    frac = abs_x & ((1 << frac_bits) - 1)
    return hi, (ua << frac_bits) + frac * (ub - ua)


def logistic_int16_lut(x, input_multiplier: int = 0, input_left_shift: int = 0) -> np.ndarray:
    """TFLite's reference_integer_ops::Logistic on int16 (TFLM's LSTM gates): sigmoid of a Q3.12
    input (after the input scaling) as Q0.15, by the sigmoid table.

    The input times 3 indexes the table in steps of 1/24 with 9 fractional bits; the
    interpolated 0.25 value is rounded (+2**9) and shifted right by 10; negative inputs take
    1 - that (2**25 - r + 2**9 - 1, same shift).  |input| >= 255 table steps saturate.
    """
    v = _lut_input(x, input_multiplier, input_left_shift)
    hi, r = _lut_interp(np.abs(v), 9)
    r = np.where(hi >= 255, 0x7FFF << 10, r)
    r = np.where(v >= 0, r + (1 << 9), (1 << 25) - r + (1 << 9) - 1)
    return r >> 10


def tanh_int16_lut(x, input_multiplier: int = 0, input_left_shift: int = 0) -> np.ndarray:
    """TFLite's reference_integer_ops::Tanh on int16 (TFLM's LSTM cell gate and tanh(cell)):
    tanh(x) = 2 * sigmoid(2x) - 1 read from the same table with 8 fractional bits, Q0.15 out.

    Non-negative inputs: (r - 2**23 + 2**7) >> 8; negative: (-r + 2**23 + 2**7 - 1) >> 8
    (arithmetic shifts); |input| >= 255 table steps saturate to 0xFFFF << 8.
    """
    v = _lut_input(x, input_multiplier, input_left_shift)
    hi, r = _lut_interp(np.abs(v), 8)
    r = np.where(hi >= 255, 0xFFFF << 8, r)
    r = np.where(v >= 0, r - (1 << 23) + (1 << 7), -r + (1 << 23) + (1 << 7) - 1)
    return r >> 8


def checked_log2(x: float) -> tuple[int, bool]:
    """TFLite CheckedLog2: (round(log2 x), whether x is a power of two to within 1e-3 in the
    exponent), in float32 as TFLite computes it."""
    lg = np.float32(np.log(np.float32(x))) * np.float32(1.0 / np.log(np.float32(2.0)))
    r = np.float32(np.round(lg))
    return int(r), bool(abs(float(lg - r)) < 1e-3)


# --------------------------------------------------------------------------- float32 LUTs (LiteRT LOGISTIC/TANH int8)

def _libm_float_fn(name: str):
    """The C library's float32 function (``expf``, ``tanhf``) via ctypes, or None if unavailable.

    LiteRT's Prepare calls std::exp / std::tanh on floats, i.e. the platform's
    libm ``expf`` / ``tanhf``; calling the same functions reproduces its
    float32 results bit for bit (numpy's own float32 exp may differ by 1 ulp).
    """
    import ctypes
    import ctypes.util
    path = ctypes.util.find_library("m")
    if path is None:
        return None
    try:
        f = getattr(ctypes.CDLL(path), name)
    except (OSError, AttributeError):
        return None
    f.restype = ctypes.c_float
    f.argtypes = [ctypes.c_float]
    return f


def _float32_transform(kind: str):
    """float32 -> float32 callable for the LUT transforms: "logistic" 1/(1+expf(-x)) or "tanh" tanhf(x)."""
    f32 = np.float32
    if kind == "logistic":
        expf = _libm_float_fn("expf")
        exp = (lambda v: f32(expf(f32(v)))) if expf else (lambda v: f32(np.exp(f32(v))))
        return lambda v: f32(f32(1.0) / f32(f32(1.0) + exp(f32(-v))))
    if kind == "tanh":
        tanhf = _libm_float_fn("tanhf")
        return (lambda v: f32(tanhf(f32(v)))) if tanhf else (lambda v: f32(np.tanh(f32(v))))
    raise ValueError(f"unknown LUT transform {kind!r}")


def lut_populate_int8(kind: str, input_scale: float, input_zero_point: int,
                      output_scale: float, output_zero_point: int) -> np.ndarray:
    """TFLite LUTPopulate<int8_t> with a float32 transform: 256-entry table indexed by q_in + 128.

    For every int8 q: x = float32(in_scale) * float32(q - in_zp) (float32 product),
    y = transform(x) in float32, r = round_half_away(y * float32(1 / out_scale))
    (float32 product), out = clamp(int32(float32(r + out_zp)), -128, 127) where an
    out-of-range float -> int32 conversion gives INT32_MIN as on x86.
    Returns int64[256] with entry i for input value i - 128.
    """
    f32 = np.float32
    transform = _float32_transform(kind)
    in_scale = f32(input_scale)
    inverse_scale = f32(f32(1.0) / f32(output_scale))
    table = np.empty(256, dtype=np.int64)
    for q in range(-128, 128):
        x = f32(in_scale * f32(q - int(input_zero_point)))
        y = transform(x)
        scaled = f32(y * inverse_scale)
        total = f32(f32(round_half_away_int(float(scaled)) if np.isfinite(scaled) else scaled) + f32(output_zero_point))
        # static_cast<int32_t> of an out-of-range float is INT32_MIN on x86 (cvttss2si): clamps to -128
        quantized = int(total) if np.isfinite(total) and -2.0 ** 31 <= total < 2.0 ** 31 else INT32_MIN
        table[q + 128] = min(max(quantized, -128), 127)
    return table


def lut_transform_int16(kind: str, precision: str):
    """The function an int16 LUT tabulates, computed as the reference computes it: "exp" (exp(x)) or
    "reciprocal" (1 / (1 + x)), in "float32" (TFLite Micro: libm ``expf``, float32 division) or
    "double" (LiteRT: ``exp``, double division)."""
    if precision == "float32":
        f32 = np.float32
        if kind == "exp":
            expf = _libm_float_fn("expf")
            return (lambda v: f32(expf(f32(v)))) if expf else (lambda v: f32(np.exp(f32(v))))
        if kind == "reciprocal":
            return lambda v: f32(f32(1.0) / f32(f32(1.0) + f32(v)))
    elif precision == "double":
        if kind == "exp":
            return lambda v: np.float64(math.exp(float(v)))
        if kind == "reciprocal":
            return lambda v: np.float64(1.0 / (1.0 + float(v)))
    raise ValueError(f"unknown int16 LUT transform {kind!r} / precision {precision!r}")


def gen_lut_int16(transform, input_min, input_max, output_min, output_max, precision: str) -> np.ndarray:
    """TFLite's LUT generator for int16 inputs and outputs (``gen_lut<FloatT, int16_t, int16_t>``,
    ``LUTPopulateInt16``): 513 entries, int64.

    Every operation runs in ``precision`` ("float32" or "double", the reference's FloatT).  Over
    512 steps of ``step = (input_max - input_min) / 512`` each entry is the sample
    ``round(f(x_i) * inv)`` (``inv = 65536 / (output_max - output_min)``, round half away from
    zero) minus half the error that linear interpolation from it would make at the step's
    midpoint, ``round((round(round((f(x_i+1) * inv + round(f(x_i) * inv)) / 2) - round(f(mid) *
    inv)) / 2)``, clamped to int16; entry 512 is ``round(f(input_max) * inv)`` (the last slope's
    end).  :func:`int16_lut_lookup` interpolates between entries."""
    F = np.float32 if precision == "float32" else np.float64
    lo, hi = F(input_min), F(input_max)
    step = F(F(hi - lo) / F(512))
    half = F(step / F(2))
    inv = F(F(65536) / F(F(output_max) - F(output_min)))

    def rnd(v):
        return F(round_half_away_int(float(v)))

    lut = np.empty(513, np.int64)
    for i in range(512):
        x = F(lo + F(F(i) * step))
        val = F(transform(x))
        mid = F(transform(F(x + half)))
        nxt = F(transform(F(lo + F(F(i + 1) * step))))
        sample = rnd(F(val * inv))
        interp = rnd(F(F(F(nxt * inv) + sample) / F(2)))
        bias = rnd(F(F(interp - rnd(F(mid * inv))) / F(2)))
        lut[i] = min(max(float(F(sample - bias)), -32768.0), 32767.0)
    lut[512] = min(max(float(rnd(F(F(transform(hi)) * inv))), -32768.0), 32767.0)
    return lut


def int16_lut_lookup(value, lut: np.ndarray) -> np.ndarray:
    """TFLite's interpolating int16 table lookup (``generic_int16_table_lookup`` / ``LUTLookup``):
    for int16 ``value``, entry ``256 + (value >> 7)`` plus ``(slope * (value & 127) + 64) >> 7``
    where slope is the difference to the next entry.  Returns int64 (int16 values)."""
    v = _i64(value)
    index = 256 + (v >> 7)
    base = lut[index]
    delta = ((lut[index + 1] - base) * (v & 0x7F) + 64) >> 7
    return wrap_int16(base + delta)


def requantize_double_fast(acc, bias, m0, shift, output_zero_point, act_min, act_max,
                           acc_bound: int | None = None) -> np.ndarray:
    """Same result as ``requantize(..., rounding="double")`` in far fewer numpy passes.

    For 0 <= M0 < 2**31 (every QuantizeMultiplier output) the two gemmlowp roundings
    have closed forms that need no sign tests on the product p = x * M0:
      * SRDHM(x, M0) == h == (p + 2**30) >> 31 (floor shift; the nudge 1 - 2**30 for
        negative products followed by truncation is the same floor);
      * RoundingDivideByPOT(h, e) == (h + (2**e >> 1) - [h < 0 and e > 0]) >> e,
    and nested floor shifts fold into one:
      result == (p + 2**30 + ((2**e >> 1) - [p < -2**30 and e > 0]) * 2**31) >> (31 + e)
    (|p| <= 2**62, so the sum stays inside int64).  Adding the zero point before the
    shift, as zp * 2**(31 + e), is exact and is done when it cannot overflow int64.
    ``bias``, ``m0`` and ``shift`` broadcast along the last axis; int32 wrap-around of
    ``acc + bias`` and of the left shift is kept.  ``acc_bound``: a proven bound on
    |acc| (e.g. K * 255 * 128 for an int8 GEMM); with it the wrap check is skipped
    when |acc + bias| cannot leave int32.  tests/test_kernels_gemm.py checks equality
    with :func:`requantize` on random and extreme values.
    """
    m0, shift = _i64(m0), _i64(shift)
    if np.any((m0 < 0) | (m0 > INT32_MAX)):
        return requantize(acc, bias, m0, shift, output_zero_point, act_min, act_max, "double")
    b = _i64(bias)
    x = _i64(acc) + b
    max_bias = int(np.abs(b).max()) if b.size else 0
    if acc_bound is None or acc_bound + max_bias > INT32_MAX:
        if x.size and (x.max() > INT32_MAX or x.min() < INT32_MIN):
            x = wrap_int32(x)
    left = np.maximum(shift, 0)
    if np.any(left):
        x = wrap_int32(x << left)
    right = np.maximum(-shift, 0)
    x *= m0
    if np.any(right):  # RoundingDivideByPOT's tie correction for negative h (a masked ufunc is slower)
        x -= (x < -(1 << 30)) * np.where(right > 0, np.int64(1) << 31, 0)
    total_shift = 31 + right
    offset = (1 << 30) + (((np.int64(1) << right) >> 1) << 31)
    zp = int(output_zero_point)
    fold_zp = int(right.max()) <= 20 and abs(zp) <= 256  # 2**62 + 2**51 + 256 * 2**51 < 2**63
    if fold_zp:
        offset = offset + (np.int64(zp) << total_shift)
    x += offset
    x >>= total_shift
    if not fold_zp:
        x += zp
    return np.clip(x, act_min, act_max, out=x)


# numpy's clip ufunc (np.clip's Python wrapper costs more than the pass on a small array).
_clip = getattr(getattr(np, "_core", None), "umath", None)
_clip = getattr(_clip, "clip", None) or (lambda x, lo, hi, out: np.clip(x, lo, hi, out=out))
clip_ufunc = _clip  # public name (kernels clipping in place in a loop)

# Values per pass of DoubleRequantPlan.apply: 16K (128 KiB of int64/float64) keeps the few
# in-place passes inside the L2 cache however large the batch is.
_PLAN_CHUNK = 1 << 14
# Largest accumulator (values) DoubleRequantPlan.apply serves with a per-shape closure
# (DoubleRequantPlan._small_pass); at most 8 shapes per plan are kept.
_SMALL_PASS = 1 << 12


@dataclass
class DoubleRequantPlan:
    """``requantize(acc, bias, M0, shift, zp, lo, hi, "double")`` for one layer, with
    everything but the accumulator folded once (prepare time), applied in cache-sized
    chunks of flat contiguous passes, written straight to int8.  Built by
    :func:`plan_requantize_double` only where no run-time check is needed: 0 <= M0 < 2**31,
    -31 <= shift <= 30, and a proven bound on |acc| with |acc + bias| << left inside int32
    (no wrap to emulate).  Then, per channel (e = max(-shift, 0), left = max(shift, 0)),
    with x = acc + bias and m = M0 << left, SRDHM(x << left, M0) = floor((x*m + 2**30) / 2**31)
    and RoundingDivideByPOT(h, e) = floor((h + [e > 0] * (2**(e-1) - [h < 0])) / 2**e).

    Evaluated in float64 with every intermediate an integer, or an integer over a power of
    two, that float64 holds exactly (SIMD-friendly passes, no int64 multiply or shift).
    RoundingDivideByPOT rounds h / 2**e half away from zero (also right for e = 0, h being
    an integer), so ``out = clamp(trunc(h * 2**-e + copysign(1/2, h)) + zp, lo, hi)``
    (|h| < 2**31: at most 33 significant bits).  h itself (``kind``):

    * "float", when (bound + |bias|) * m + 2**30 < 2**53:
      ``h = floor(acc * m/2**31 + (bias * m/2**31 + 1/2))`` (one product, exact).
    * "split", otherwise: with x = acc + bias (|x| < 2**31) and m = mh * 2**15 + ml,
      ``h = floor(x * mh/2**16 + floor(x * ml/2**15 + 2**15) / 2**16)``: x*mh < 2**47 and
      x*ml + 2**30 < 2**47 are exact, and floor((A*2**15 + B) / 2**31) ==
      floor((A + floor(B / 2**15)) / 2**16) for integers A, B.

    When ``act_min >= zp`` (a fused RELU/RELU6: nothing below the real value 0 survives the
    clamp) the sign-dependent part is not needed: for h >= 0 RoundingDivideByPOT is
    floor((h + 2**(e-1)) / 2**e), and for h < 0 both that and the true result are <= 0, so
    both clamp to act_min.  Then, h being floor(z) and floor(floor(z) + k) / 2**e) ==
    floor((z + k) / 2**e) for an integer k, ``out = clamp(floor(z * 2**-e + [e > 0]/2 + zp),
    lo, hi)`` with one floor (kinds "float_relu" / "split_relu", where the numerators over
    2**(31+e) resp. 2**(16+e) stay below 2**53).  Their additive constant also carries
    -act_min, so that the chunk holds z - act_min and the floor comes free with the int8
    conversion (:meth:`DoubleRequantPlan._finish`).

    Without that clamp ("float_signed", when the numerators over 2**(31+e) below stay under
    2**53): RoundingDivideByPOT(h, e) = floor((h + 2**(e-1) - [h < 0]) / 2**e) for e > 0, and
    with h = floor(z), [h < 0] == [z < 0] and the identity above, ``out = clamp(floor(w -
    [z < 0] * [e > 0] / 2**e) + ..)`` where ``w = z * 2**-e + [e > 0]/2 + zp``; z < 0 exactly
    when w < [e > 0]/2 + zp (all values exact), so one comparison, one masked subtraction and
    one floor replace the floor / scale / copysign / trunc passes.

    ``acc`` may be a float array of exact integers (a BLAS accumulator).
    """

    kind: str  # "float" | "split" | "float_relu" | "split_relu" | "float_signed"
    constants: tuple  # per-channel values ([C] arrays or scalars), see plan_requantize_double
    zero_point: int
    act_min: int
    act_max: int
    _tile_cache: dict | None = field(default=None, init=False, repr=False, compare=False)
    _lo: Any = field(default=None, init=False, repr=False, compare=False)
    _hi: Any = field(default=None, init=False, repr=False, compare=False)
    _span: Any = field(default=None, init=False, repr=False, compare=False)
    _relu: bool = field(default=False, init=False, repr=False, compare=False)
    _byte_ok: bool = field(default=False, init=False, repr=False, compare=False)  # see _finish
    _lo_byte: Any = field(default=None, init=False, repr=False, compare=False)
    # {accumulator shape: closure acc -> int8 outputs}, the per-shape passes apply() builds for
    # small int8 outputs (see _small_pass); a caller may look its shape up to skip apply's dispatch.
    int8_passes: dict | None = field(default=None, init=False, repr=False, compare=False)
    # (bias, M0, shift, acc_bound): the layer's own tables (plan_requantize_double's checked [C]
    # arrays), for the native requantization of large int8 blocks (see apply); None: numpy only
    tables: tuple | None = field(default=None, init=False, repr=False, compare=False)
    _native: Any = field(default=None, init=False, repr=False, compare=False)  # see _native_block

    def __post_init__(self):
        # Everything _finish needs besides the chunk, computed once (a small layer's requant is
        # a few microseconds: per-call dtype or string tests would be a sizeable part of it).
        self._lo, self._hi = np.float64(self.act_min), np.float64(self.act_max)
        self._span = np.float64(self.act_max - self.act_min)
        self._relu = self.kind.endswith("_relu")
        self._byte_ok = self._relu and self.act_max - self.act_min <= 255 and self.act_min >= -128
        self._lo_byte = np.uint8(self.act_min & 0xFF)
        self.int8_passes = {}

    def _small_pass(self, shape: tuple, channels: int):
        """``apply(acc, np.int8)`` for accumulators of one small ``shape`` (at most _SMALL_PASS
        values, channel last), as a closure: the passes of :meth:`_chunk` and :meth:`_finish`
        (same ufuncs on the same values in the same order, so the same results) without their
        per-call dispatch, and with every constant -- per-channel or not -- an array of
        ``shape`` (a numpy scalar operand costs a conversion per call: ~40% more than the pass
        itself on ~100 values).  A single-sample run of a small layer is a handful of such
        passes, where the Python around them costs as much.  The "float_relu" (int8 clamp)
        and "float_signed" kinds have their own closures; the others call _chunk/_finish."""
        size = int(np.prod(shape, dtype=np.int64))
        tiles = self._tiles(size, channels)
        kind = self.kind
        if not ((kind == "float_relu" and self._byte_ok) or kind == "float_signed"):
            chunk, finish = self._chunk, self._finish

            def generic(acc):
                return finish(chunk(acc.reshape(-1), tiles), np.int8).reshape(shape)
            return generic

        def full(v, dtype=np.float64):
            return _filled(v, size, shape, dtype)
        mult, offset = full(tiles[0]), full(tiles[1])
        clip, multiply, add, f64, u8, i8 = _clip, np.multiply, np.add, np.float64, np.uint8, np.int8
        if kind == "float_relu":
            clipped, lo_byte = self._relu_clipped(shape, tiles), full(self._lo_byte, np.uint8)

            def relu_bytes(acc):
                u = clipped(acc).astype(u8)  # truncation of h in [0, span]: floor (see _finish)
                add(u, lo_byte, out=u)
                return u.view(i8)
            return relu_bytes
        threshold, below, lo, hi = full(tiles[2]), full(tiles[3]), full(self._lo), full(self._hi)
        less, subtract, floor = np.less, np.subtract, np.floor

        def signed(acc):
            h = acc.astype(f64)
            multiply(h, mult, out=h)
            add(h, offset, out=h)
            t = multiply(less(h, threshold), below)  # see _chunk
            subtract(h, t, out=h)
            floor(h, out=h)
            clip(h, lo, hi, out=h)
            return h.astype(i8)
        return signed

    def _relu_clipped(self, shape: tuple, tiles: tuple):
        """A "float_relu" plan's closure acc -> h = clamp(z - act_min, 0, act_max - act_min), float64
        of ``shape`` (not yet floored; see _finish), every constant an array of ``shape`` (see
        _small_pass); ``tiles``: self._tiles of that many values."""
        size = int(np.prod(shape, dtype=np.int64))
        mult, offset, zero, span = (_filled(v, size, shape) for v in (tiles[0], tiles[1], 0.0, self._span))
        clip, multiply, add, f64 = _clip, np.multiply, np.add, np.float64

        def clipped(acc):
            h = acc.astype(f64)  # exact (acc: integers below 2**53)
            multiply(h, mult, out=h)
            add(h, offset, out=h)
            clip(h, zero, span, out=h)
            return h
        return clipped

    @property
    def int8_relu(self) -> bool:
        """A "float_relu" plan whose outputs fit int8 (-128 <= act_min, act_max - act_min <= 255):
        :meth:`relu_offset_pass` applies."""
        return self.kind == "float_relu" and self._byte_ok

    def relu_offset_pass(self, shape: tuple, dtype=np.float32):
        """For a "float_relu" plan with int8 outputs: a closure acc -> ``apply(acc, np.int8) -
        act_min`` as ``dtype`` (float32: integers 0..255, exact), for accumulators of one small
        ``shape`` (channel last): the passes of apply's small-shape closure up to the clamp,
        then the floor (see _finish) and the conversion, without adding act_min back -- for a
        following GEMM that takes its input minus act_min and folds act_min into its own bias
        (qsim.kernels.fully_connected.fc_chain).  None for the other kinds or outputs."""
        if not self.int8_relu:
            return None
        size = int(np.prod(shape, dtype=np.int64))
        clipped = self._relu_clipped(shape, self._tiles(size, shape[-1] if len(shape) else 1))
        floor = np.floor

        def offset_values(acc):
            h = clipped(acc)
            floor(h, out=h)
            return h.astype(dtype)
        return offset_values

    def apply(self, acc, dtype=np.int8) -> np.ndarray:
        acc = np.asarray(acc)
        if dtype is np.int8:
            small = self.int8_passes.get(acc.shape)
            if small is not None:  # an int8 shape seen before (e.g. every single-sample run)
                return small(acc)
            if acc.size >= native_min_values():
                native = self._native_block()
                if native is not False:
                    return native(acc)
            if acc.size <= _SMALL_PASS and len(self.int8_passes) < 8:
                small = self.int8_passes[acc.shape] = self._small_pass(acc.shape, acc.shape[-1] if acc.ndim else 1)
                return small(acc)
        flat = acc.reshape(-1)
        consts = self._tile_cache.get(flat.size) if self._tile_cache is not None else None
        if consts is not None:  # a size seen before that fits one pass (e.g. every single-sample run)
            return self._finish(self._chunk(flat, consts), dtype).reshape(acc.shape)
        channels = acc.shape[-1] if acc.ndim else 1
        step = max(1, _PLAN_CHUNK // max(channels, 1)) * channels  # whole rows per chunk
        if flat.size <= step:  # one pass: no chunk bookkeeping
            return self._finish(self._chunk(flat, self._tiles(flat.size, channels)), dtype).reshape(acc.shape)
        out = np.empty(flat.shape, dtype)
        h, t = np.empty(step), np.empty(step)  # reused: a fresh 128 KiB array per pass costs page faults
        for r in range(0, flat.size, step):
            a = flat[r:r + step]
            k = a.size
            self._finish(self._chunk(a, self._tiles(k, channels), h[:k], t[:k]), dtype, out[r:r + k])
        return out.reshape(acc.shape)

    def _native_block(self):
        """The native requantization of this plan's layer (:func:`qsim.native.block_requantizer`
        on :attr:`tables`, "double" rounding: the same integers as the plan), built on the first
        large int8 block and kept; False when unavailable (then apply's numpy passes run)."""
        if self._native is None:
            self._native = False
            if self.tables is not None:
                from . import native
                bias, m0, shift, bound = self.tables
                self._native = native.block_requantizer(bias, m0, shift, self.zero_point, self.act_min,
                                                        self.act_max, "double", int(np.max(bound))) or False
        return self._native

    def native_requantizer(self):
        """This plan's :func:`qsim.native.block_requantizer` (built on first use), or None when
        unavailable."""
        return self._native_block() or None

    def native_available(self) -> bool:
        """Whether :meth:`apply` hands large int8 blocks to the native requantization."""
        return self._native_block() is not False

    def relu_affine(self, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(A, B), float64 [channels]: a "float_relu" plan's value before the floor, z - act_min =
        acc * A + B (A = M0 * 2**left / 2**(31+e), B = (bias * M0 * 2**left + 2**30) / 2**(31+e) + [e > 0]/2
        + zp - act_min; every term a multiple of 2**-(31+e) whose numerator, for |acc| within the
        plan's bound, stays below 2**53: see the class docstring), for a caller that computes z
        itself and then calls :meth:`finish`; None for the other kinds."""
        if self.kind != "float_relu":
            return None
        a, b = (np.broadcast_to(np.asarray(v, np.float64), (channels,)) for v in self.constants[:2])
        return a, b

    def finish(self, z: np.ndarray, dtype=np.int8, out: np.ndarray | None = None) -> np.ndarray:
        """The outputs from exact values z - act_min = acc * A + B (:meth:`relu_affine`), float64,
        overwritten: clamp, floor, add act_min (the last passes of :meth:`apply`)."""
        return self._finish(z, dtype, out)

    def _finish(self, h: np.ndarray, dtype, out: np.ndarray | None = None) -> np.ndarray:
        """Clamp the chunk result ``h`` (see :meth:`_chunk`) and convert it to ``dtype``, into
        ``out`` when given (else a new array, fewer calls for a small chunk); returns it.

        "float"/"split": h holds integers; clamp to [act_min, act_max] and convert.
        "*_relu": h = z - act_min, the output being floor(z) clamped; clamping h to
        [0, act_max - act_min] first is the same (the bounds are integers), after which
        floor == truncation (h >= 0).  For int8 outputs (-128 <= act_min <= act_max <= 127)
        that truncation is the float -> uint8 conversion itself, and adding act_min
        modulo 256 then reading the bytes as int8 gives floor(z) exactly (the true value
        lies in int8); other dtypes take an explicit floor and add act_min back.
        """
        if not self._relu:
            _clip(h, self._lo, self._hi, out=h)
        else:
            _clip(h, 0.0, self._span, out=h)
            if self._byte_ok and (dtype is np.int8 or np.dtype(dtype) == np.int8):
                if out is None:
                    u = h.astype(np.uint8)  # truncation of h in [0, 255]: floor
                else:
                    u = out.view(np.uint8)
                    np.copyto(u, h, casting="unsafe")
                np.add(u, self._lo_byte, out=u)  # modulo 256, exact in int8 (see above)
                return u.view(np.int8)
            np.floor(h, out=h)
            np.add(h, self._lo, out=h)
        if out is None:
            return h.astype(dtype)
        np.copyto(out, h, casting="unsafe")
        return out

    def _chunk(self, acc: np.ndarray, consts: tuple, h: np.ndarray | None = None,
               t: np.ndarray | None = None) -> np.ndarray:
        """The formula on one flat chunk of exact integers ``acc`` (left untouched), computed in
        the float64 work buffers ``h`` and ``t`` (len(acc) each; new arrays when None, fewer
        calls for a small chunk); returns ``h`` before the clamp (for "*_relu" kinds the
        unfloored z - act_min, see :meth:`_finish`)."""
        kind = self.kind
        if kind in ("float", "float_relu", "float_signed"):
            mult, offset = consts[0], consts[1]
            if h is None:
                if isinstance(mult, np.ndarray):  # float64 [len]: numpy converts acc to float64 (exactly)
                    h = np.multiply(acc, mult)  # one call (dtype= would be 3x slower on a small chunk)
                else:
                    h = acc.astype(np.float64)  # exact (a float scalar could keep float32 under old numpy casting)
                    np.multiply(h, mult, out=h)
            else:
                h[...] = acc  # exact (float32/float64/int accumulators); faster than a mixed-type multiply
                np.multiply(h, mult, out=h)
            np.add(h, offset, out=h)
        else:
            bias, high, low, post = consts[:4]
            if t is None:
                t = np.add(acc, bias, dtype=np.float64)  # x = acc + bias, |x| < 2**31
                h = np.multiply(t, high)  # x * mh / 2**16 (/ 2**e for "split_relu")
            else:
                t[...] = acc
                np.add(t, bias, out=t)
                np.multiply(t, high, out=h)
            np.multiply(t, low, out=t)
            np.add(t, 2.0 ** 15, out=t)  # x * ml / 2**15 + 2**15
            np.floor(t, out=t)
            np.multiply(t, post, out=t)  # / 2**16 (/ 2**e for "split_relu")
            np.add(h, t, out=h)
        if self._relu:  # one floor, left to _finish: see the class docstring
            if kind == "split_relu":
                np.add(h, consts[4], out=h)
        elif kind == "float_signed":  # one floor after the sign correction: see the class docstring
            threshold, below = consts[2], consts[3]
            t = np.multiply(np.less(h, threshold), below, out=t)  # (a masked ufunc is 6x slower)
            np.subtract(h, t, out=h)
            np.floor(h, out=h)
        else:
            scale, zp = consts[-2], consts[-1]
            np.floor(h, out=h)  # h = SRDHM(x << left, M0)
            np.multiply(h, scale, out=h)
            t = np.copysign(0.5, h, out=t)  # h * 2**-e has h's sign
            np.add(h, t, out=h)
            np.trunc(h, out=h)  # RoundingDivideByPOT: h / 2**e rounded half away from zero
            np.add(h, zp, out=h)  # an integer: _finish needs no floor
        return h

    def _tiles(self, length: int, channels: int) -> tuple:
        """The per-channel constants repeated to ``length`` values (whole rows), so that every
        pass is one flat contiguous loop (broadcasting a [C] vector over [rows, C] costs a
        numpy inner loop per row: ~50 ns per element for C = 8).  Cached per length."""
        cache = self._tile_cache
        if cache is None:
            cache = self._tile_cache = {}
        got = cache.get(length)
        if got is None:
            reps = -(-length // max(channels, 1))
            got = cache[length] = tuple(v if v is None or np.ndim(v) == 0 else np.tile(np.asarray(v), reps)[:length]
                                        for v in self.constants)
        return got


def _filled(v, size: int, shape: tuple, dtype=np.float64) -> np.ndarray:
    """``v`` (a scalar, or ``size`` values flat) as a contiguous ``dtype`` array of ``shape``."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype).reshape(-1) if np.ndim(v) else
                                                np.asarray(v, dtype), (size,)).reshape(shape))


def native_min_values() -> int:
    """The smallest block (values) handed to the native requantization (qsim.native.MIN_VALUES)."""
    from .native import MIN_VALUES
    return MIN_VALUES


def _scalar_if_uniform(v):
    v = np.asarray(v)
    return v.reshape(-1)[0] if v.size and np.all(v == v.reshape(-1)[0]) else v


def plan_requantize_double(bias, m0, shift, output_zero_point, act_min, act_max,
                           acc_bound: int | None) -> DoubleRequantPlan | None:
    """A :class:`DoubleRequantPlan` equal to ``requantize(acc, bias, m0, shift, zp, lo, hi, "double")``
    for every |acc| <= ``acc_bound``, or None when that cannot be proven here.  ``acc_bound``: one
    bound for every channel, or one per channel (int [C], channel c's accumulators bounded by
    ``acc_bound[c]``: the precision conditions below are per channel anyway).

    Constant channels: without int32 wrap (checked below) :func:`requantize` is monotone
    non-decreasing in acc (x = acc + bias, x << left, SRDHM = floor((x*M0 + 2**30) / 2**31) with
    M0 >= 0, RoundingDivideByPOT and the clamp all are), so a channel whose outputs at acc =
    -acc_bound and +acc_bound agree outputs that value v for every |acc| <= acc_bound (a pruned
    channel: huge bias, tiny multiplier).  The float kinds compute such a channel as
    0 * acc + (v + 1/2 in the kind's units) -- floor and clamp give v exactly -- and leave it
    out of the precision conditions, which would otherwise fail on its huge bias or shift."""
    m0, shift, b = _i64(m0).reshape(-1), _i64(shift).reshape(-1), _i64(bias).reshape(-1)
    zp = int(output_zero_point)
    if acc_bound is None or not m0.size or np.any((m0 < 0) | (m0 > INT32_MAX)) or np.any(shift < -31) \
            or np.any(shift > 30) or abs(zp) > (1 << 20):
        return None
    n = max(m0.size, shift.size, b.size)
    bound = _i64(acc_bound).reshape(-1)
    if bound.size not in (1, n) or np.any(bound < 0):
        return None
    m0, shift, b, bound = (np.broadcast_to(v, (n,)) for v in (m0, shift, b, bound))
    left = np.maximum(shift, 0)
    reach = (bound + np.abs(b)) << left  # bound on |(acc + bias) << left|
    if np.any(reach > INT32_MAX):
        return None
    lo, hi = int(act_min), int(act_max)
    ends = requantize(np.stack([-bound, bound]), b, m0, shift, zp, lo, hi, "double")
    const = ends[0] == ends[1]  # monotone, no wrap: these channels output ends[1] for every |acc| <= bound
    plan = None
    if np.any(const):
        keep = ~const
        plan = _plan_double(np.where(keep, b, 0), np.where(keep, m0, 0), np.where(keep, shift, 0), zp, lo, hi,
                            bound, const, ends[1])
    if plan is None:
        plan = _plan_double(b, m0, shift, zp, lo, hi, bound, None, None)
    plan.tables = (b, m0, shift, bound)
    return plan


def _plan_double(b, m0, shift, zp, lo, hi, acc_bound, const, value) -> DoubleRequantPlan:
    """plan_requantize_double's kinds for checked [C] tables; ``const`` (bool [C]) channels, whose
    table entries are zeros, output ``value`` (int [C]) in the float kinds; None when a constant
    channel is given and the split kinds would be needed (the caller retries without)."""
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    m = m0 << left
    relu = lo >= zp  # the sign-free rounding of the class docstring applies
    scale, zpf = 2.0 ** -right.astype(np.float64), float(zp)
    round_add = np.where(right > 0, 0.5, 0.0) + zpf  # (2**e >> 1) / 2**e + zp
    relu_add = round_add - lo  # the "*_relu" kinds compute z - act_min (see DoubleRequantPlan._finish)
    reach = (acc_bound + np.abs(b)) * m + (1 << 30)  # bound on |x*m + 2**30| (acc_bound: int64 [C])
    kept = np.zeros(b.shape, bool) if const is None else const
    vals = np.zeros(b.shape, np.int64) if value is None else np.asarray(value, np.int64)

    def fixed(v, c):  # the constant channels' entry c in place of v
        return np.where(kept, c, v)

    if int(reach.max()) < (1 << 53):
        m_real = m.astype(np.float64) * 2.0 ** -31  # exact: m < 2**53
        offset = b.astype(np.float64) * m_real + 0.5
        # one floor: (x*m + 2**30 + (relu_add << 31+e)) / 2**(31+e), numerator < 2**53
        if relu and all(int(r) + ((abs(zp - lo) + 1) << (31 + int(e))) < (1 << 53) for r, e in zip(reach, right)):
            consts = (m_real * scale, fixed(offset * scale + relu_add, vals - lo + 0.5))
            return _plan("float_relu", consts, zp, lo, hi)
        # one floor: (x*m + 2**30 + (round_add << 31+e) - 2**31) / 2**(31+e), numerator < 2**53
        if all(int(r) + ((abs(zp) + 2) << (31 + int(e))) < (1 << 53) for r, e in zip(reach, right)):
            below = np.where(right > 0, scale, 0.0)  # [e > 0] / 2**e
            return _plan("float_signed", (m_real * scale, fixed(offset * scale + round_add, vals + 0.5),
                                          round_add, below), zp, lo, hi)
        # constant channels: floor(v - zp + 1/2) * 1, then +-1/2 truncated, + zp
        return _plan("float", (m_real, fixed(offset, vals - zp + 0.5), scale, zpf), zp, lo, hi)
    if const is not None:
        return None
    high = (m >> 15).astype(np.float64) * 2.0 ** -16
    low = (m & 0x7FFF).astype(np.float64) * 2.0 ** -15
    b = b.astype(np.float64)
    # one floor: (x*mh + floor(..)) / 2**(16+e) + relu_add, numerators < 2**48 + (|zp - lo|+1) * 2**(16+e)
    if relu and all((1 << 48) + ((abs(zp - lo) + 1) << (16 + int(e))) < (1 << 53) for e in right):
        return _plan("split_relu", (b, high * scale, low, 2.0 ** -16 * scale, relu_add), zp, lo, hi)
    return _plan("split", (b, high, low, 2.0 ** -16, scale, zpf), zp, lo, hi)


def _plan(kind, consts, zp, lo, hi) -> DoubleRequantPlan:
    return DoubleRequantPlan(kind, tuple(_scalar_if_uniform(v) for v in consts), zp, lo, hi)


def quantize_multiplier_signed(real_multiplier: float, single_rounding: bool = False) -> tuple[int, int]:
    """TFLite QuantizeMultiplier for any finite real, negative ones included (LEAKY_RELU's alpha < 0).

    Same as :func:`quantize_multiplier` for m >= 0.  For m < 0, frexp keeps the sign:
    M0 = round_half_away(q * 2**31) with q in (-1, -0.5]; rounding to -2**31 is kept as is
    (TFLite only renormalises +2**31), shift < -31 flushes to (0, 0), and single-rounding
    builds saturate shift > 30 to (2**31 - 1, 30) like the positive case.
    """
    m = float(real_multiplier)
    if m >= 0:
        return quantize_multiplier(m, single_rounding)
    if not math.isfinite(m):
        raise ValueError(f"multiplier must be finite, got {real_multiplier!r}")
    q, shift = math.frexp(m)
    q_fixed = round_half_away_int(q * (1 << 31))
    return _finish_multiplier(q_fixed, shift, single_rounding)


# --------------------------------------------------------------------------- requant arithmetic variants
# What-if arithmetic for the requant unit of a GEMM layer (CONV_2D, DEPTHWISE_CONV_2D,
# FULLY_CONNECTED): the same (M0, shift) table TFLite's Prepare computes, applied by a cheaper
# or different datapath.  x = int32-wrapped acc + bias; M = M0 * 2**(shift - 31) the real
# multiplier of the table; every variant then adds the zero point and clamps like requantize().

REQUANT_VARIANT_NAMES = ("double", "single", "float32", "shift-only", "shift=N", "mult-bits=N", "truncate")


@dataclass(frozen=True)
class RequantVariant:
    """One requant arithmetic, parsed (:func:`parse_requant_variant`); ``str()`` gives it back.

    * ``double``: TFLite Micro's MultiplyByQuantizedMultiplier (SRDHM, then RoundingDivideByPOT).
    * ``single``: TFLITE_SINGLE_ROUNDING, ``(x*M0 + 2**(30-shift)) >> (31-shift)``.
    * ``float32``: ``round_half_away(f32(f32(x) * f32(M)))``, M rounded to float32 once, the
      product rounded to float32 (a float32 multiplier unit), ties away from zero.
    * ``shift-only``: each channel's M replaced by the power of two nearest in log2, 2**k with
      k = shift - 1 + [M0**2 >= 2**61] (the ``>> n`` a designer picks as n = round(-log2 M));
      applied by the double arithmetic with M0 = 2**30, so an exact power-of-two M gives
      ``double``'s bits.
    * ``shift=N``: every channel's M replaced by 2**-N (one hand-picked ``>> N``), double arithmetic.
    * ``mult-bits=N``: M0 rounded to N significant bits (half away; 2**31 renormalised to
      2**30 with shift + 1), double arithmetic.  N = 31 is ``double``; N = 1 rounds M to the
      linearly nearest power of two.
    * ``truncate``: one floor, ``(x * M0) >> (31 - shift)`` (no rounding at all).
    """

    name: str  # "double" | "single" | "float32" | "shift-only" | "shift" | "mult-bits" | "truncate"
    n: int = 0  # shift=N: the N; mult-bits=N: the N

    def __str__(self) -> str:
        return f"{self.name}={self.n}" if self.name in ("shift", "mult-bits") else self.name

    @property
    def arithmetic(self) -> str:
        """The datapath after the table transform: "double" | "single" | "float32" | "truncate"."""
        return self.name if self.name in ("single", "float32", "truncate") else "double"

    def table(self, m0, shift) -> tuple[np.ndarray, np.ndarray]:
        """The (M0, shift) table this variant's hardware holds, from TFLite's table (int64 arrays)."""
        m0, shift = _i64(m0).copy(), _i64(shift).copy()
        if self.name == "shift-only":
            up = m0 * m0 >= (1 << 61)  # M0 >= 2**30.5: 2**shift is nearer in log2 than 2**(shift-1)
            return np.where(m0 > 0, 1 << 30, 0), np.where(m0 > 0, shift + up, 0)
        if self.name == "shift":
            return np.where(m0 > 0, 1 << 30, 0), np.where(m0 > 0, 1 - self.n, 0)
        if self.name == "mult-bits":
            drop = 31 - self.n
            if drop > 0:
                half = 1 << (drop - 1)
                m0 = ((m0 + half) >> drop) << drop  # M0 >= 0: floor(m0 + half) = half away from zero
                carry = m0 == (1 << 31)
                m0, shift = np.where(carry, 1 << 30, m0), shift + carry
        return m0, shift


def parse_requant_variant(text) -> RequantVariant:
    """``"double"``, ``"single"``, ``"float32"``, ``"shift-only"``, ``"shift=8"``,
    ``"mult-bits=16"``, ``"truncate"`` (or a RequantVariant) -> RequantVariant; QsimError otherwise."""
    if isinstance(text, RequantVariant):
        return text
    s = str(text).strip().lower()
    if s in ("double", "single", "float32", "shift-only", "truncate"):
        return RequantVariant(s)
    name, sep, num = s.partition("=")
    lim = {"shift": (0, 32), "mult-bits": (1, 31)}  # shift=N: 1 - N within SHIFT_RANGE["double"]
    if sep and name in lim:
        try:
            n = int(num)
        except ValueError:
            n = None
        lo, hi = lim[name]
        if n is not None and lo <= n <= hi:
            return RequantVariant(name, n)
        raise QsimError(f"requant variant {text!r}: N must be an integer in [{lo}, {hi}].")
    raise QsimError(f"unknown requant variant {text!r}; choose one of: {', '.join(REQUANT_VARIANT_NAMES)} "
                    "(e.g. mult-bits=16, shift=8).")


def requantize_variant(acc, bias, m0, shift, output_zero_point, act_min, act_max, variant) -> np.ndarray:
    """:func:`requantize` with the requant arithmetic of ``variant`` (a RequantVariant or its text).

    ``clamp(R(wrap_int32(acc + bias)) + zp, act_min, act_max)`` with R the variant's rescale of
    its (M0, shift) table (:meth:`RequantVariant.table`); int64 results, rescaled values
    outside int32 saturate to int32 before the zero point is added.
    """
    v = parse_requant_variant(variant)
    m0, shift = v.table(m0, shift)
    if v.arithmetic in ROUNDING_MODES:
        check_shift_range(shift, v.arithmetic, f"requantization shift of variant {v}")
        return requantize(acc, bias, m0, shift, output_zero_point, act_min, act_max, v.arithmetic)
    x = wrap_int32(_i64(acc) + _i64(bias))
    if v.arithmetic == "truncate":
        check_shift_range(shift, "double", f"requantization shift of variant {v}")
        y = (x * m0) >> (31 - shift)  # |x * M0| < 2**62: exact; >> is floor
    else:  # float32
        mf = (m0.astype(np.float64) * np.exp2(shift.astype(np.float64) - 31)).astype(np.float32)
        y = round_half_away((x.astype(np.float32) * mf).astype(np.float32))
        y = np.clip(y, INT32_MIN, INT32_MAX).astype(np.int64)
    return saturate(np.clip(y, INT32_MIN, INT32_MAX) + _i64(output_zero_point), act_min, act_max)


def monotone_thresholds(f, x_lo: int, x_hi: int, y_lo: int, y_hi: int) -> np.ndarray:
    """A non-decreasing integer function as a sorted threshold array: ``thr`` (int64, y_hi - y_lo
    entries) with ``f(x) == y_lo + np.searchsorted(thr, x, side="right")`` for every integer x in
    [x_lo, x_hi].  ``thr[k]`` is the smallest x in [x_lo, x_hi] with ``f(x) >= y_lo + 1 + k``
    (x_hi + 1 when there is none), found by a vectorized bisection over all levels at once.

    ``f``: int64 array -> int64 array, non-decreasing on [x_lo, x_hi] with values in [y_lo, y_hi]:
    every requant of this module with a non-negative multiplier, no reachable int32 wrap and a
    saturation is (each rounding step is monotone), e.g. an :class:`Int64RequantPlan` in its
    closed form.  One searchsorted then replaces the plan's passes, for a kernel that requantizes
    a few values many times (an LSTM time step).  Monotonicity is the caller's proof; checked here
    (ValueError else): the range, sorted thresholds, and the searchsorted form equal to f at both
    ends and at every threshold and the value below it."""
    x_lo, x_hi, y_lo, y_hi = int(x_lo), int(x_hi), int(y_lo), int(y_hi)
    if x_hi < x_lo or y_hi < y_lo or abs(x_lo) >= 1 << 62 or abs(x_hi) >= 1 << 62:
        raise ValueError("monotone_thresholds needs x_lo <= x_hi (|x| < 2**62) and y_lo <= y_hi")
    ends = np.asarray(f(np.array([x_lo, x_hi], np.int64)), np.int64)
    if ends[0] < y_lo or ends[1] > y_hi:
        raise ValueError(f"f spans [{ends[0]}, {ends[1]}] on [{x_lo}, {x_hi}], outside [{y_lo}, {y_hi}]")
    levels = np.arange(y_lo + 1, y_hi + 1, dtype=np.int64)
    lo = np.full(levels.shape, x_lo, np.int64)
    hi = np.full(levels.shape, x_hi + 1, np.int64)
    while True:  # invariant: f(x) < level for x < lo; f(x) >= level for x >= hi (within the domain)
        open_ = lo < hi
        if not open_.any():
            break
        mid = (lo + hi) >> 1  # < hi <= x_hi + 1: inside the domain where open
        ge = np.asarray(f(np.where(open_, mid, x_lo)), np.int64) >= levels
        hi = np.where(open_ & ge, mid, hi)
        lo = np.where(open_ & ~ge, mid + 1, lo)
    thr = lo
    # the searchsorted form must reproduce f at both ends and on both sides of every threshold
    x = np.clip(np.concatenate([[x_lo, x_hi], thr, thr - 1]), x_lo, x_hi)
    if np.any(np.diff(thr) < 0) or not np.array_equal(y_lo + np.searchsorted(thr, x, side="right"),
                                                      np.asarray(f(x), np.int64)):
        raise ValueError("monotone_thresholds: f is not non-decreasing on the domain")
    return thr


# --------------------------------------------------------------------------- int64 requant plans (recurrent kernels)

@dataclass
class Int64RequantPlan:
    """``saturate(MBQM(x + bias, M0, shift) + zp, lo, hi)`` (or ``saturate(RoundingDivideByPOT(x, e), lo, hi)``)
    with fixed per-channel constants, for a kernel that applies it many times to small int64 arrays
    (an LSTM's time steps).  Built by :func:`plan_multiply_by_quantized_multiplier` /
    :func:`plan_rounding_divide_by_pot`; the channel axis is the last one.

    Fast form (``m`` is not None or ``rdbp``), proven exact at plan time for every |x| <= the
    caller's bound: the closed form of :func:`requantize_double_fast`, all in int64,
    ``y = x*m + offset; y -= [y < threshold] * below; y >>= total; clip``, where for double
    rounding (e = max(-shift, 0), m = M0 << max(shift, 0), no int32 wrap reachable)
    ``offset = bias*m + 2**30 + (2**e >> 1) * 2**31 + zp * 2**(31+e)``, ``threshold = offset - bias*m -
    2**30`` (y < threshold iff p = (x + bias)*m < -2**30), ``below = [e > 0] * 2**31``, ``total = 31 + e``; for single rounding
    ``offset = bias*M0 + 2**(30-shift) + zp * 2**(31-shift)``, ``total = 31 - shift``, no correction
    (the int32 saturation is unreachable); for RoundingDivideByPOT ``m = 1``,
    ``offset = 2**e >> 1``, ``threshold = offset``, ``below = [e > 0]``, ``total = e``.
    Otherwise (``generic`` set) the general functions of this module are called.
    tests/test_fixedpoint.py checks equality with them on edge and random values.
    """

    m: Any  # int64 [C] or None (RoundingDivideByPOT)
    offset: Any
    threshold: Any
    below: Any  # None: no tie correction
    total: Any
    lo: int
    hi: int
    generic: Any = None  # x -> result, when the fast form is not proven exact
    clip: bool = True  # False: the result provably lies in [lo, hi] (no saturation pass)

    def apply(self, x, out=None, tmp=None) -> np.ndarray:
        """int64 result (into ``out`` when given, an int64 array of x's shape; ``tmp``: an int64
        work array of that shape, so that a loop allocates nothing)."""
        if self.generic is not None:
            r = self.generic(x)
            if out is None:
                return r
            out[...] = r
            return out
        if self.m is None:
            y = np.add(x, self.offset, out=out)
        else:
            y = np.multiply(x, self.m, out=out)
            y += self.offset
        if self.below is not None:
            if tmp is None:
                y -= np.less(y, self.threshold) * self.below
            else:
                np.less(y, self.threshold, out=tmp)
                tmp *= self.below
                y -= tmp
        y >>= self.total
        return _clip(y, self.lo, self.hi, out=y) if self.clip else y

    def channels_first(self) -> "Int64RequantPlan":
        """The same plan with the channel axis first: for x of shape [C, ...] (the per-channel
        constants shaped [C, 1]); ``channels_first().apply(x.T) == apply(x).T`` for 2-D x.  On a
        [C, B] array a per-channel constant is one value per row (a faster pass than one per column)."""
        if self.generic is not None:
            generic = self.generic
            return Int64RequantPlan(None, None, None, None, None, self.lo, self.hi, lambda x: generic(x.T).T)

        def col(v):
            return v.reshape(-1, 1) if isinstance(v, np.ndarray) and v.ndim == 1 else v
        return Int64RequantPlan(col(self.m), col(self.offset), col(self.threshold), col(self.below), col(self.total),
                                self.lo, self.hi, clip=self.clip)


def plan_multiply_by_quantized_multiplier(m0, shift, rounding: str, bias=0, zero_point: int = 0,
                                          lo: int = INT32_MIN, hi: int = INT32_MAX, x_bound=None,
                                          int64_acc: bool = False) -> Int64RequantPlan:
    """An :class:`Int64RequantPlan` for ``saturate(MBQM(x + bias, m0, shift, rounding) + zero_point, lo, hi)``
    (the int32 MultiplyByQuantizedMultiplier; with ``int64_acc`` TFLite's int64 overload,
    :func:`multiply_by_quantized_multiplier_int64`, always the general form).  ``m0``, ``shift``,
    ``bias`` broadcast along the last axis; ``x_bound``: a proven bound on |x| (scalar or per
    channel), without which the general form is used."""
    m0, shift, bias = _i64(m0).reshape(-1), _i64(shift).reshape(-1), _i64(bias).reshape(-1)
    zp = int(zero_point)
    mbqm = multiply_by_quantized_multiplier_int64 if int64_acc else multiply_by_quantized_multiplier

    def generic(x):
        return saturate(mbqm(_i64(x) + bias, m0, shift, rounding) + zp, lo, hi)

    slow = Int64RequantPlan(None, None, None, None, None, lo, hi, generic)
    if int64_acc or x_bound is None or rounding not in ROUNDING_MODES or not m0.size:
        return slow
    check_shift_range(shift, rounding)
    n = max(m0.size, shift.size, bias.size)
    m0, shift, bias = (np.broadcast_to(v, (n,)) for v in (m0, shift, bias))
    reach = np.broadcast_to(_i64(x_bound).reshape(-1), (n,)) + np.abs(bias)  # bound on |x + bias|
    if np.any((m0 < 0) | (m0 > INT32_MAX)):
        return slow
    consts = []
    for mc, sc, bc, rc in zip(m0.tolist(), shift.tolist(), bias.tolist(), reach.tolist()):
        if rounding == "double":
            left, e = max(sc, 0), max(-sc, 0)
            if rc << left > INT32_MAX:  # an int32 wrap of the left shift would be reachable
                return slow
            m, total = mc << left, 31 + e
            off = bc * m + (1 << 30) + (((1 << e) >> 1) << 31) + (zp << total)
            thr, below = off - bc * m - (1 << 30), (1 << 31) if e > 0 else 0
        else:
            m, total = mc, 31 - sc
            if (rc * m + (1 << (total - 1))) >> total > INT32_MAX \
                    or (-rc * m + (1 << (total - 1))) >> total < INT32_MIN:
                return slow  # the int32 saturation would be reachable
            off = bc * m + (1 << (total - 1)) + (zp << total)
            thr, below = 0, 0
        # int64 headroom: |x*m + off - [..]*below| <= |x + bias|*m + |off - bias*m| + below
        if rc * m + abs(off - bc * m) + below >= 1 << 63:
            return slow
        consts.append((m, off, thr, below, total))
    m, off, thr, below, total = (_scalar_if_uniform(np.array(c, np.int64)) for c in zip(*consts))
    # MBQM's result is an int32 (double rounding; single rounding: its saturation is proven unreachable)
    clip = zp != 0 or lo > INT32_MIN or hi < INT32_MAX
    return Int64RequantPlan(m, off, thr, below if np.any(below) else None, total, lo, hi, clip=clip)


def plan_rounding_divide_by_pot(exponent, lo: int = INT32_MIN, hi: int = INT32_MAX,
                                x_bound: int = 1 << 62) -> Int64RequantPlan:
    """An :class:`Int64RequantPlan` for ``saturate(rounding_divide_by_pot(x, exponent), lo, hi)``
    (``exponent`` in [0, 31], per channel along the last axis; |x| <= ``x_bound``)."""
    e = _i64(exponent).reshape(-1)
    if np.any((e < 0) | (e > 31)):
        raise ValueError("rounding_divide_by_pot exponent must be in [0, 31]")
    if int(x_bound) + (1 << 31) >= 1 << 63:
        return Int64RequantPlan(None, None, None, None, None, lo, hi,
                                lambda x: saturate(rounding_divide_by_pot(x, e), lo, hi))
    off = (np.int64(1) << e) >> 1
    below = (e > 0).astype(np.int64)
    reach = (int(x_bound) >> int(e.min())) + 1 if e.size else int(x_bound)  # bound on |result|
    return Int64RequantPlan(None, _scalar_if_uniform(off), _scalar_if_uniform(off),
                            _scalar_if_uniform(below) if np.any(below) else None, _scalar_if_uniform(e), lo, hi,
                            clip=-reach < lo or reach > hi)


# --------------------------------------------------------------------------- monotone functions by table (SVDF)

@dataclass
class WindowTable:
    """A monotone non-decreasing integer function ``f`` on ``[v_min, v_max]`` as a table over the
    window ``[start, start + len(table) - 1]`` outside which ``f`` is constant:
    ``f(v) = table[clip(v - start, 0, len(table) - 1)]`` for every integer v in ``[v_min, v_max]``
    (``table.take(v - start, mode="clip")``).  The window runs from the last v of the bottom
    plateau (``f(v) = f(v_min)``) to the first v of the top one (``f(v) = f(v_max)``), so its
    size is about the output span over f's slope (a requantization's (hi - lo) / scale)."""

    start: int
    table: np.ndarray  # int64, f over the window

    def lookup(self, v) -> np.ndarray:
        """f(v) for integer (or integer-valued float) v inside [v_min, v_max] of the build."""
        return self.table.take(np.asarray(v).astype(np.intp) - self.start, mode="clip")


def monotone_window_table(f, v_min: int, v_max: int, max_size: int = 1 << 20) -> WindowTable | None:
    """:class:`WindowTable` of ``f`` (int64 array -> int64 array, element-wise, monotone
    non-decreasing on ``[v_min, v_max]``, e.g. a requantization ``saturate(MBQM(v) + zp, lo, hi)``
    with a non-negative multiplier: each of its steps -- the rounding doubling high multiply, the
    rounding shift, the zero point, the clamp -- is non-decreasing) evaluated by ``f`` itself on
    every v of the window; None when the window is wider than ``max_size``.  The plateau ends come
    from :func:`monotone_thresholds` (its bisection and its monotonicity check): the window starts
    one below the first threshold and ends on the last one."""
    v_min, v_max = int(v_min), int(v_max)
    if v_min > v_max:
        raise ValueError("monotone_window_table: v_min > v_max")
    bottom, top = (int(y) for y in np.asarray(f(np.array([v_min, v_max], np.int64))).reshape(-1))
    thr = monotone_thresholds(f, v_min, v_max, bottom, top)
    start, end = (int(thr[0]) - 1, int(thr[-1])) if thr.size else (v_max, v_max)
    if end - start + 1 > max_size:
        return None
    table = np.asarray(f(np.arange(start, end + 1, dtype=np.int64)), np.int64).reshape(-1)
    return WindowTable(start, table)
