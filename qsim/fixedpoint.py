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
and also accept Python ints; results are int64 arrays holding int32 values.
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
ROUNDING_MODES = ("double", "single")


def _i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def wrap_int32(x) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32 range (C's int32 overflow)."""
    x = _i64(x)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturate(x, lo: int, hi: int) -> np.ndarray:
    return np.clip(_i64(x), lo, hi)


# --------------------------------------------------------------------------- prepare

def quantize_multiplier(real_multiplier: float, single_rounding: bool = False) -> tuple[int, int]:
    """Real multiplier -> (M0 Q31 int32, shift), TFLite's QuantizeMultiplier.

    frexp gives q in [0.5, 1); M0 = round(q * 2**31) (half away from zero).
    If rounding produced 2**31, halve it and bump the shift.  Multipliers below
    ~2**-31 flush to (0, 0).  With ``single_rounding`` (TFLITE_SINGLE_ROUNDING
    builds) a shift above 30 saturates to (2**31 - 1, 30).
    """
    m = float(real_multiplier)
    if not math.isfinite(m) or m < 0:
        raise ValueError(f"multiplier must be finite and >= 0, got {real_multiplier!r}")
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = _round_half_away(q * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if single_rounding and shift > 30:
        return (1 << 31) - 1, 30
    return int(q_fixed), int(shift)


def quantize_multiplier_array(real_multipliers, single_rounding: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Vector form of :func:`quantize_multiplier` (per-channel tables)."""
    flat = np.asarray(real_multipliers, dtype=np.float64).reshape(-1)
    pairs = [quantize_multiplier(v, single_rounding) for v in flat]
    m0 = np.array([p[0] for p in pairs], dtype=np.int64)
    sh = np.array([p[1] for p in pairs], dtype=np.int64)
    return m0, sh


def quantize_multiplier_smaller_than_one_exp(real_multiplier: float) -> tuple[int, int]:
    """QuantizeMultiplierSmallerThanOneExp: M in (0, 1) -> (M0, left_shift <= 0)."""
    if not 0.0 < real_multiplier < 1.0:
        raise ValueError(f"multiplier must be in (0, 1), got {real_multiplier!r}")
    m0, shift = quantize_multiplier(real_multiplier)
    if shift > 0:
        raise ValueError("multiplier rounded up to >= 1")
    return m0, shift


def _round_half_away(v: float) -> int:
    """C's std::round for doubles: round half away from zero."""
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


# --------------------------------------------------------------------------- eval

def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values.

    Returns round(a*b / 2**31) with ties rounded toward +infinity (the nudge is
    2**30 for a non-negative product and 1 - 2**30 for a negative one, then C
    division truncates toward zero); the one overflow case
    INT32_MIN * INT32_MIN saturates to INT32_MAX.
    """
    a, b = _i64(a), _i64(b)
    ab = a * b  # |a*b| <= 2**62: exact in int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    # C integer division truncates toward zero; numpy's // floors.
    high = np.where(num >= 0, num >> 31, -((-num) >> 31))
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2**exponent, ties away from zero. 0 <= exponent <= 31."""
    x, e = _i64(x), _i64(exponent)
    if np.any((e < 0) | (e > 31)):
        raise ValueError("rounding_divide_by_pot exponent must be in [0, 31]")
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier_double(x, m0, shift) -> np.ndarray:
    """TFLite's default MultiplyByQuantizedMultiplier (two roundings).

    ``x * 2**max(shift, 0)`` wraps like C int32 arithmetic, then SRDHM by M0,
    then a rounding right shift by ``max(-shift, 0)``.
    """
    shift = _i64(shift)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    scaled = wrap_int32(_i64(x) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, m0), right)


def multiply_by_quantized_multiplier_single(x, m0, shift) -> np.ndarray:
    """TFLITE_SINGLE_ROUNDING MultiplyByQuantizedMultiplier (one rounding, half up).

    ``(x * M0 + 2**(30 - shift)) >> (31 - shift)`` in 64 bits; requires
    -31 <= shift <= 30 and M0 >= 0 as TFLite does.
    """
    x, m0, shift = _i64(x), _i64(m0), _i64(shift)
    if np.any((shift < -31) | (shift > 30)):
        raise ValueError("single-rounding shift must be in [-31, 30]")
    total = 31 - shift
    rounding = np.int64(1) << (total - 1)
    return (x * m0 + rounding) >> total


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
    The accumulator add wraps like int32 (the C kernels' behaviour).
    """
    summed = wrap_int32(_i64(acc) + _i64(bias))
    scaled = multiply_by_quantized_multiplier(summed, m0, shift, rounding)
    return saturate(scaled + _i64(output_zero_point), act_min, act_max)


# --------------------------------------------------------------------------- activation ranges

def quantize_float_to_int(value: float, scale: float, zero_point: int) -> int:
    """TFLite's Quantize helper in CalculateActivationRangeQuantized.

    ``zero_point + round(float32(value) / float32(scale))``: the division is
    done in float32 (TfLiteRound on a float, ties away from zero).
    """
    q = np.float32(value) / np.float32(scale)
    return int(zero_point) + _round_half_away(float(q))


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
