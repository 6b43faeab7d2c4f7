"""Rounding profiles: which arithmetic variant each reference interpreter uses, per op, as data.

TFLite Micro and LiteRT's reference kernels are not bit-identical everywhere.
A profile names, per op, the rounding of MultiplyByQuantizedMultiplier
("double" = TFLite's classic SRDHM + RoundingDivideByPOT, "single" =
TFLITE_SINGLE_ROUNDING) and, where the two references run a different
algorithm for the same op, which variant.  Every entry is established by the
differential tests in tests/test_reference_*.py, not by assumption.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import QsimError


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    default_rounding: str = "double"
    rounding_per_op: dict[str, str] = field(default_factory=dict)
    variant_per_op: dict[str, str] = field(default_factory=dict)  # op -> algorithm variant name

    def rounding(self, opcode: str) -> str:
        return self.rounding_per_op.get(opcode, self.default_rounding)

    def variant(self, opcode: str, default: str = "reference") -> str:
        return self.variant_per_op.get(opcode, default)


# TFLite Micro's per-op algorithm variants (shared by the profiles whose fallback kernels are TFLM's).
# STRIDED_SLICE "tflm": ignores ellipsis/new_axis/offset, <= 4-D, refuses rank>=2 outputs with
# a zero dimension (tests/test_kernels_shape.py; LiteRT honours all three masks/flags).
# PAD/PADV2 "tflm": int64 paddings are read as int32 words.
_TFLM_VARIANTS = {"STRIDED_SLICE": "tflm", "PAD": "tflm", "PADV2": "tflm",
                  # Elementwise/activations (tests/test_kernels_elementwise.py): LOGISTIC/TANH run
                  # gemmlowp fixed point (Q4.27 input); RELU forms s_in/s_out in double; RELU6 does not
                  # requantize (clamps the raw input to [zp, q(6)]); MUL forms s1*s2/s_out in double.
                  # Per-channel QUANTIZE is refused; per-channel DEQUANTIZE uses scale[0]/zp[0] throughout.
                  "LOGISTIC": "fixed", "TANH": "fixed", "RELU": "double_scale", "RELU6": "clamp_only",
                  "MUL": "double", "QUANTIZE": "per_tensor_only", "DEQUANTIZE": "first_scale",
                  # LEAKY_RELU forms s_in*alpha/s_out and s_in/s_out in double (LiteRT: float32);
                  # alpha=0.9 with s_in == s_out differs by 1 LSB on 13 of 256 inputs.
                  "LEAKY_RELU": "double_scale",
                  # Integer LSTM (lstm_eval.h): table sigmoid/tanh, MultiplyByQuantizedMultiplier between
                  # gates (qsim/kernels/lstm.py; tests/test_lstm.py).
                  "UNIDIRECTIONAL_SEQUENCE_LSTM": "tflm",
                  # SVDF (qsim/kernels/svdf.py, tests/test_svdf.py): effective scales as double (measured on
                  # exact-tie models; LiteRT: float32); the state row shifted before the newest column is
                  # written; int8 state/weights_time ok, the state zero point added after the clamp
                  # (tests/test_svdf.py: TFLM's stored state column shows it).
                  "SVDF": "shift_first", "SVDF_SCALE": "double", "SVDF_STATE_ZP": "after_clamp",
                  # SOFTMAX int16 -> int16: float32 gen_lut tables (qsim/kernels/activations.py)
                  "SOFTMAX_INT16": "float32"}

PROFILES: dict[str, Profile] = {
    "tflm": Profile(
        name="tflm",
        description="TensorFlow Lite Micro (tflite-micro Python runtime): TFLite's classic double rounding everywhere.",
        default_rounding="double",
        variant_per_op=_TFLM_VARIANTS,
    ),
    "litert": Profile(
        name="litert",
        description="LiteRT interpreter with OpResolverType.BUILTIN_REF (ai-edge-litert 2.3).",
        default_rounding="double",
        # CONV_2D / DEPTHWISE_CONV_2D (per-tensor and per-channel) and MEAN (integer
        # QuantizedMeanOrSum for every axis set, as in TFLM): classic double rounding
        # (tests/test_kernels_gemm.py, exact-tie models); pooling has no requantization.
        # FULLY_CONNECTED int8 (per-tensor and per-channel) is NOT fixed point at all: it rescales
        # by the double real scale in_scale*w_scale/out_scale with std::round (ties away from
        # zero); "single" only looked right on ad01 because it has no exact ties.
        rounding_per_op={},
        variant_per_op={"FULLY_CONNECTED": "float_rescale",
                        # Elementwise/activations (tests/test_kernels_elementwise.py): LOGISTIC/TANH are a
                        # float32 LUT built in Prepare; RELU/RELU6 requantize by float32(s_in/s_out); MUL
                        # forms s1*s2/s_out in float32.  ADD/SUB/SOFTMAX/HARD_SWISH/LEAKY_RELU/QUANTIZE/
                        # DEQUANTIZE (per tensor) are bit-identical in both references (double rounding),
                        # except LEAKY_RELU's multipliers, formed in float32 here and in double in TFLM.
                        "LOGISTIC": "lut", "TANH": "lut", "RELU": "float32_scale", "RELU6": "float32_scale",
                        "MUL": "float32", "QUANTIZE": "per_channel", "DEQUANTIZE": "per_channel",
                        # int16x8 conv with an int32 bias: LiteRT reads the bias as int64 (measured: outputs
                        # saturate on every other channel); qsim refuses it under this profile (TFLM: int32 ok).
                        "INT16X8_BIAS": "int64_only",
                        # Integer LSTM (lstm_eval.cc Integer8x8_16): gemmlowp int16 sigmoid/tanh, rounding
                        # shifts between gates, hidden scale from the 5th intermediate (qsim/kernels/lstm.py).
                        "UNIDIRECTIONAL_SEQUENCE_LSTM": "gemmlowp",
                        # SVDF: effective scales formed in float32 (measured, tests/test_svdf.py); the newest
                        # column overwrites the last one, the shift comes after the op;
                        # int8 state/weights_time are read as int16 (no defined answer: refused).
                        "SVDF": "shift_after", "SVDF_SCALE": "float32", "SVDF_INT8_STATE": "undefined",
                        # SOFTMAX int16 -> int16: LUTPopulate tables in double (qsim/kernels/activations.py)
                        "SOFTMAX_INT16": "double",
                        # int16 LOGISTIC: the output scale must be exactly 1/32768 (measured: LiteRT's
                        # Prepare refuses 2**-15 * 1.0004, which TFLM's CheckedLog2 test accepts).
                        "LOGISTIC_INT16_OUT_SCALE": "exact"},
    ),
    # CMSIS-NN (codegen --kernels cmsis-nn), read from its sources (arm_nnsupportfunctions.h,
    # arm_nn_softmax_common_s8.c, arm_avgpool_s8.c, arm_elementwise_*_s8.c, README "CMSIS-NN"): in its
    # default build arm_nn_requantize is the doubling high multiply (same nudge) + rounding divide by
    # POT of TFLM's MultiplyByQuantizedMultiplier, and softmax (gemmlowp's exp / reciprocal),
    # pooling and add/mul follow the reference formulas; conv/FC fold the input offset into a kernel
    # sum, equal modulo 2^32.  So the int8 ops generated as CMSIS-NN calls compute TFLM's integers
    # (tests/test_codegen_cmsis.py); the others run qsim's kernels, i.e. TFLM's variants.
    "cmsis-nn": Profile(
        name="cmsis-nn",
        description="CMSIS-NN int8 kernels (default build, double rounding); TFLite Micro's choices elsewhere.",
        default_rounding="double",
        variant_per_op=_TFLM_VARIANTS,
    ),
    "single": Profile(
        name="single",
        description="TFLITE_SINGLE_ROUNDING build: single rounding in every op.",
        default_rounding="single",
    ),
}


def get_profile(name: str | Profile) -> Profile:
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise QsimError(f"unknown rounding profile '{name}'; choose one of: {', '.join(PROFILES)}") from None
