"""SOFTMAX, LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU, RELU, RELU6 on int8, bit-exact per reference.

Where TFLite Micro and LiteRT's BUILTIN_REF run different algorithms, the
profile names the variant (qsim/profiles.py, established by
tests/test_kernels_elementwise.py):

* SOFTMAX: both run reference_ops::Softmax, gemmlowp fixed point.  Input
  differences ``q - max(q)`` (row = last axis) >= diff_min are rescaled by
  (input_multiplier, input_left_shift) from PreprocessSoftmaxScaling(beta,
  s_in, 5) into Q5.26, exp'd (exp_on_negative_values -> Q0.31), summed in
  Q12.19, the sum's reciprocal taken (GetReciprocal), and each output is
  ``RoundingDivideByPOT(SRDHM(recip, exp), num_bits_over_unit + 23) - 128``
  clamped to int8; entries below diff_min output -128.  The output scale
  is assumed to be 1/256 with zero point -128 (as TFLite requires).
* LOGISTIC / TANH: variant "lut" (LiteRT): a 256-entry table computed in
  Prepare with float32 math (LUTPopulate, libm expf/tanhf) and a lookup in
  eval.  Variant "fixed" (TFLM): reference_integer_ops::Logistic / Tanh:
  ``d = q - zp_in``; |d| >= input_range_radius saturates; otherwise
  d -> Q4.27 via MBQM(d, M, left_shift), gemmlowp logistic/tanh -> Q0.31,
  then RoundingDivideByPOT by 23 (logistic, + -128) or 24 (tanh); the output
  quantization is implied (1/256, -128 and 1/128, 0) not read.
* RELU / RELU6: variant "float32_scale" (LiteRT, ReluX): requantize by
  M ~ float32(s_in / s_out) then clamp to the activation range;
  "double_scale" (TFLM RELU): the same with the ratio in double;
  "clamp_only" (TFLM RELU6): no requantization, clamp the raw input to
  [zp_in, round(6 / s_in) + zp_in].
* HARD_SWISH: reference_ops::HardSwish (int16 fixed point, both references).
* LEAKY_RELU: QuantizeLeakyRelu: ``d = q - zp_in``; d >= 0 uses the identity
  multiplier s_in/s_out, d < 0 the alpha multiplier s_in*alpha/s_out (formed
  in float32 for LiteRT, "float32_scale", in double for TFLM,
  "double_scale"; then QuantizeMultiplier), then + zp_out and clamp.

Multipliers are Q31 (or Q15 for HARD_SWISH); shifts use TFLite's sign
convention (> 0 left) unless a field name says "right"/"left".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import fixedpoint as fp
from ..errors import QsimError
from . import batch_always, register
from .elementwise import is_int16_op, require_int16_tensor, require_int8_tensor

SOFTMAX_SCALED_DIFF_INTEGER_BITS = 5
SOFTMAX_ACCUMULATION_INTEGER_BITS = 12
SIGMOID_INPUT_INTEGER_BITS = 4  # logistic / tanh "fixed" variant: input in Q4.27


def _unary_tensors(op, graph, int16: bool = False):
    ins = graph.op_inputs(op)
    if len(ins) < 1 or len(op.outputs) != 1:
        raise QsimError(f"{op.opcode} needs 1 input and 1 output.")
    x, out = ins[0], graph.op_outputs(op)[0]
    require = require_int16_tensor if int16 else require_int8_tensor
    require(x, "input", op.opcode)
    require(out, "output", op.opcode)
    if tuple(x.shape) != tuple(out.shape) and int(np.prod(x.shape)) != int(np.prod(out.shape)):
        raise QsimError(f"{op.opcode}: output shape {list(out.shape)} does not match input {list(x.shape)}.")
    return x, out


def _f32(v) -> np.float32:
    return np.float32(v)


# --------------------------------------------------------------------------- SOFTMAX

@dataclass
class SoftmaxParams:
    """Prepared int8 SOFTMAX over the last axis (gemmlowp fixed point)."""

    input_multiplier: int  # Q31, from PreprocessSoftmaxScaling
    input_left_shift: int  # >= 0
    diff_min: int  # most negative q - max(q) still exp'd (others -> -128)
    rounding: str  # rounding of MultiplyByQuantizedMultiplierGreaterThanOne
    output_bits: int = 8  # 8: int8 output (1/256, -128); 16: int16 output (1/65536, -32768)
    # (fields they were built from, exp in Q0.31, its Q12.19 rescale; 0 below diff_min) for every
    # int8 difference diff = q - max(q) in [-255, 0], index diff + 255: see softmax_exp_tables
    _exp_tables: Any = field(default=None, init=False, repr=False, compare=False)
    # (the same fields, the output of an int8 row of two entries by their difference): see softmax_pair_table
    _pair_table: Any = field(default=None, init=False, repr=False, compare=False)


def softmax_exps(p: SoftmaxParams, diff) -> tuple[np.ndarray, np.ndarray]:
    """(exp in Q0.31, its Q12.19 rescale) of int64 differences q - max(q), TFLite's arithmetic."""
    rescaled = fp.multiply_by_quantized_multiplier_greater_than_one(diff, p.input_multiplier, p.input_left_shift,
                                                                    p.rounding)
    exp_q0 = fp.exp_on_negative_values(rescaled, SOFTMAX_SCALED_DIFF_INTEGER_BITS)  # Q0.31
    return exp_q0, fp.rescale_fixed(exp_q0, 0, SOFTMAX_ACCUMULATION_INTEGER_BITS)  # Q12.19


def softmax_live_exps(p: SoftmaxParams, diff) -> tuple[np.ndarray, np.ndarray]:
    """:func:`softmax_exps` with 0 wherever ``diff < diff_min``: TFLite skips those entries in the
    row sum and outputs the minimum for them, and a 0 exponential does both (SRDHM(recip, 0) = 0,
    RoundingDivideByPOT(0, .) = 0, so the output is 0 + minimum)."""
    diff = np.asarray(diff, dtype=np.int64)
    live = diff >= p.diff_min
    exp_q0, exp_acc = softmax_exps(p, diff)
    return np.where(live, exp_q0, 0), np.where(live, exp_acc, 0)


def softmax_exp_tables(p: SoftmaxParams) -> tuple[np.ndarray, np.ndarray]:
    """:func:`softmax_live_exps` of all 256 int8 differences -255..0 (index diff + 255): an int8
    row's difference to its maximum takes no other value, so eval looks the exponentials up (the
    tables are the same arithmetic, tabulated once per parameter set, like the ADD/MUL pair
    tables; rebuilt if the multiplier, shift, diff_min or rounding fields change)."""
    key = (p.input_multiplier, p.input_left_shift, p.diff_min, p.rounding)
    if p._exp_tables is None or p._exp_tables[0] != key:
        p._exp_tables = (key,) + softmax_live_exps(p, np.arange(-255, 1, dtype=np.int64))
    return p._exp_tables[1:]


# Up to this many rows the sums' reciprocals run row by row on Python ints (fixedpoint's scalar
# path, ~15x cheaper than numpy for one value); more rows run as one int64 array.
SOFTMAX_SCALAR_ROWS = 16


def softmax_row_reciprocals(sum_of_exps: np.ndarray) -> tuple[Any, Any, int]:
    """:func:`qsim.fixedpoint.get_reciprocal` of each row's Q12.19 sum (int64, any shape; int32
    wrap applied here) -> (recip Q0.31, num_bits_over_unit, the largest num_bits_over_unit): arrays
    of the sums' shape, or Python ints for a single row (they broadcast alike)."""
    if sum_of_exps.size > SOFTMAX_SCALAR_ROWS:
        recip, bits_over = fp.get_reciprocal(fp.wrap_int32(sum_of_exps), SOFTMAX_ACCUMULATION_INTEGER_BITS)
        return recip, bits_over, int(bits_over.max())
    pairs = [fp.get_reciprocal(fp.wrap_int32(int(s)), SOFTMAX_ACCUMULATION_INTEGER_BITS) for s in sum_of_exps.flat]
    if len(pairs) == 1:
        return pairs[0] + (pairs[0][1],)
    recip = np.array([r for r, _ in pairs], dtype=np.int64).reshape(sum_of_exps.shape)
    bits_over = [n for _, n in pairs]
    return recip, np.array(bits_over, dtype=np.int64).reshape(sum_of_exps.shape), max(bits_over, default=0)


# The last step of TFLite's int8 softmax is RoundingDivideByPOT(., num_bits_over_unit + 31 - 8),
# defined for exponents <= 31: num_bits_over_unit = 12 - clz(sum_of_exps) must stay <= 8, i.e. the
# Q12.19 sum of exponentials below 2**28 (512.0).  LiteRT and TFLite Micro abort the process on a
# row that reaches it (measured: 511 equal entries run, 512 abort).  Each entry adds at most
# exp(0) = 2**19 (the row maximum's own term), so only rows of >= 512 entries can reach it.
_SOFTMAX_MAX_BITS_OVER_UNIT = 31 - (31 - 8)
SOFTMAX_ABORT_SUM = 1 << (32 - (SOFTMAX_ACCUMULATION_INTEGER_BITS - _SOFTMAX_MAX_BITS_OVER_UNIT))


def softmax_abort_row_length() -> int:
    """Shortest SOFTMAX row whose sum of exponentials can reach :data:`SOFTMAX_ABORT_SUM` (512):
    the abort threshold divided by the largest term, exp(0) in Q12.19 (fixedpoint's own values)."""
    largest = int(fp.rescale_fixed(fp.exp_on_negative_values(0, SOFTMAX_SCALED_DIFF_INTEGER_BITS), 0,
                                   SOFTMAX_ACCUMULATION_INTEGER_BITS))
    return -(-SOFTMAX_ABORT_SUM // largest)


def softmax_abort_message(depth: int) -> str:
    """The one explanation, for `run` (a row reached the threshold) and `codegen` (rows this long
    can reach it, and the generated C has no way to refuse at run time)."""
    return (f"SOFTMAX: a row of {depth} entries can have a sum of exponentials >= 512 (512 or more entries at "
            "or near the row maximum). TFLite's int8 reference softmax then needs a RoundingDivideByPOT by more "
            "than 31 bits and both LiteRT and TFLite Micro abort the process on such a row, so there is no "
            "reference answer to simulate or to generate code for.")


@dataclass
class Softmax16Params:
    """Prepared int16 -> int16 SOFTMAX (reference_ops::SoftmaxInt16, both references), last axis.

    ``d = x - max(row)`` is rescaled by (input_multiplier, input_shift) so that [-65535, 0] maps
    onto [-10, 0], recentred (+ 32767, int16 saturation) and looked up in ``exp_lut`` (exp on
    [-10, 0], output [-1, 1]); the int32 sum of a row's exps is normalized by its leading zeros
    (``clz``), rounded to Q1.14 and looked up in ``reciprocal_lut`` (1 / (1 + x) on [0, 1]); each
    output is ``(exp * recip + 2**(r - 1)) >> r`` with ``r = 31 - clz``, clamped to [0, 32767]
    (scale 1/32768, zero point 0).  The two 513-entry LUTs are built in prepare
    (:func:`qsim.fixedpoint.gen_lut_int16`): variant "SOFTMAX_INT16" "float32" (TFLite Micro:
    float32 gen_lut on [-10, 0] / [0, 1], output [-1, 1]) or "double" (LiteRT: LUTPopulate in
    double with ranges from float32 scales 10/65535, 1/65535 and 2/65535)."""

    input_multiplier: int
    input_shift: int  # TFLite sign (> 0 left)
    rounding: str
    exp_lut: np.ndarray  # int64 [513]
    reciprocal_lut: np.ndarray  # int64 [513]
    # softmax16_exps of every int16 difference -65535..0 (index diff + 65535), built by prepare from
    # the fields above (rebuild it with softmax16_exps if you change them)
    exp_by_diff: Any = field(default=None, repr=False, compare=False)


def softmax16_exps(p: Softmax16Params, diff) -> np.ndarray:
    """exp LUT value of int64 differences ``x - max(row)``: rescaled by (input_multiplier,
    input_shift), recentred (+ 32767, int16 saturation), looked up with interpolation."""
    scaled = fp.multiply_by_quantized_multiplier(diff, p.input_multiplier, p.input_shift, p.rounding)
    return fp.int16_lut_lookup(np.clip(scaled + 32767, -32768, 32767), p.exp_lut)


def softmax16_luts(variant: str) -> tuple[np.ndarray, np.ndarray]:
    """(exp LUT, 1/(1+x) LUT) as the reference of ``variant`` builds them (see Softmax16Params)."""
    if variant == "float32":
        return (fp.gen_lut_int16(fp.lut_transform_int16("exp", "float32"), -10.0, 0.0, -1.0, 1.0, "float32"),
                fp.gen_lut_int16(fp.lut_transform_int16("reciprocal", "float32"), 0.0, 1.0, -1.0, 1.0, "float32"))
    span = 65535  # int16 max - min
    in_exp, in_rec, out = (float(_f32(v / span)) for v in (10.0, 1.0, 2.0))  # float32 scale arguments

    def bounds(scale, zp):  # LUTPopulateInt16: scale * (q - zp) at the int16 ends, in double
        return scale * (-32768 - zp), scale * (32767 - zp)
    return (fp.gen_lut_int16(fp.lut_transform_int16("exp", "double"), *bounds(in_exp, 32767), *bounds(out, 0),
                             "double"),
            fp.gen_lut_int16(fp.lut_transform_int16("reciprocal", "double"), *bounds(in_rec, -32768),
                             *bounds(out, 0), "double"))


def prepare_softmax16(op, graph, profile) -> Softmax16Params:
    x, out = _unary_tensors(op, graph, int16=True)
    if len(x.shape) < 1:
        raise QsimError("SOFTMAX needs an input with at least one dimension.")
    if abs(out.quant.scale0 - 1.0 / 32768) > 0.001 / 32768:
        raise QsimError(f"SOFTMAX: int16 output '{out.name}' of an int16 input must have scale 1/32768 and zero "
                        f"point 0 (TFLite requires it), got scale {out.quant.scale0:.6g}.")
    if x.shape[-1] * 32767 >= 1 << 31:
        raise QsimError(f"SOFTMAX: int16 rows of {x.shape[-1]:,} entries can overflow TFLite's int32 sum of "
                        "exponentials (a shift by a negative amount in the references): not simulated.")
    beta = float(_f32(getattr(op.options, "beta", 1.0) if op.options is not None else 1.0))
    variant = profile.variant("SOFTMAX_INT16", "float32")
    s_in = float(_f32(x.quant.scale0))
    # LiteRT multiplies the float32 scale and beta in float32; TFLite Micro in double
    product = float(_f32(_f32(s_in) * _f32(beta))) if variant == "double" else s_in * beta
    rounding = profile.rounding("SOFTMAX")
    m, shift = fp.quantize_multiplier(product / (10.0 / 65535.0), single_rounding=rounding == "single")
    exp_lut, rec_lut = softmax16_luts(variant)
    p = Softmax16Params(m, shift, rounding, exp_lut, rec_lut)
    p.exp_by_diff = softmax16_exps(p, np.arange(-65535, 1, dtype=np.int64))
    return p


def eval_softmax16(p: Softmax16Params, inputs) -> list[np.ndarray]:
    x = np.asarray(inputs[0])
    q = x.astype(np.int64)
    diff = q - q.max(axis=-1, keepdims=True)
    if x.dtype == np.int16 and p.exp_by_diff is not None:  # int16: diff in [-65535, 0]
        exps = p.exp_by_diff[diff + 65535]
    else:
        exps = softmax16_exps(p, diff)
    total = fp.wrap_int32(exps.sum(axis=-1, keepdims=True))
    clz = fp.count_leading_zeros_u32(total)
    shifted = ((total << (clz - 1)) + (1 << 13)) >> 14
    recip = fp.int16_lut_lookup(np.clip(shifted - (1 << 15) - (1 << 16), -32768, 32767), p.reciprocal_lut)
    right = 31 - clz
    y = (exps * recip + (np.int64(1) << (right - 1))) >> right
    return [np.clip(y, 0, 32767).astype(np.int16)]


def prepare_softmax(op, graph, profile) -> SoftmaxParams | Softmax16Params:
    ins = graph.op_inputs(op)
    if ins and ins[0] is not None and np.dtype(ins[0].dtype) == np.int16:
        return prepare_softmax16(op, graph, profile)
    int16_out = len(op.outputs) == 1 and ins and ins[0] is not None and np.dtype(ins[0].dtype) == np.int8 \
        and np.dtype(graph.tensors[op.outputs[0]].dtype) == np.int16
    if int16_out:  # int8 -> int16: the same algorithm with a 16-bit output (both references)
        x, out = ins[0], graph.op_outputs(op)[0]
        require_int8_tensor(x, "input", op.opcode)
        if out.quant is None or out.quant.per_channel or x.size != out.size:
            raise QsimError(f"SOFTMAX: int16 output '{out.name}' needs one scale and the input's shape.")
    else:
        x, out = _unary_tensors(op, graph)
    if len(x.shape) < 1:
        raise QsimError("SOFTMAX needs an input with at least one dimension.")
    bits = 16 if int16_out else 8
    zp_want, scale_want = -(1 << (bits - 1)), 1.0 / (1 << bits)
    if out.quant.zp0 != zp_want or abs(out.quant.scale0 - scale_want) > 0.001 * scale_want:
        raise QsimError(f"SOFTMAX: {np.dtype(out.dtype).name} output '{out.name}' must have scale 1/{1 << bits} and "
                        f"zero point {zp_want} (TFLite requires it), got scale {out.quant.scale0:.6g} and zero point "
                        f"{out.quant.zp0}.")
    beta = float(_f32(getattr(op.options, "beta", 1.0) if op.options is not None else 1.0))
    rounding = profile.rounding("SOFTMAX")
    try:
        m, left = fp.preprocess_softmax_scaling(beta, float(_f32(x.quant.scale0)), SOFTMAX_SCALED_DIFF_INTEGER_BITS,
                                                single_rounding=rounding == "single")
    except ValueError as e:
        raise QsimError(f"SOFTMAX: beta * input scale is too small for TFLite's int8 softmax ({e}).") from None
    diff_min = -fp.calculate_input_radius(SOFTMAX_SCALED_DIFF_INTEGER_BITS, left)
    p = SoftmaxParams(input_multiplier=m, input_left_shift=left, diff_min=diff_min, rounding=rounding,
                      output_bits=bits)
    softmax_exp_tables(p)  # built in prepare
    return p


def softmax_pair_table(p: SoftmaxParams) -> np.ndarray:
    """The output (output dtype) of an entry of an int8 row of two entries, by ``e + 255`` where
    e (in [-255, 255]) is the entry minus the other one: a two-entry row's softmax depends on that
    difference only (each entry's difference to the row maximum is min(e, 0), the other's
    min(-e, 0)).  Tabulated by :func:`softmax_int8_rows` on one row per e, once per parameter set
    (rebuilt if the fields change, like :func:`softmax_exp_tables`)."""
    key = (p.input_multiplier, p.input_left_shift, p.diff_min, p.rounding, p.output_bits)
    if p._pair_table is None or p._pair_table[0] != key:
        e = np.arange(-255, 256, dtype=np.int64)
        rows = np.stack([np.maximum(e, 0), np.maximum(-e, 0)], axis=1) - 128  # entry 0 minus entry 1 = e
        p._pair_table = (key, softmax_int8_rows(p, rows.astype(np.int8))[:, 0].copy())
    return p._pair_table[1]


def eval_softmax(p: SoftmaxParams, inputs) -> list[np.ndarray]:
    if type(p) is Softmax16Params:
        return eval_softmax16(p, inputs)
    x = np.asarray(inputs[0])
    if x.dtype == np.int8 and x.shape[-1] == 2:  # rows of two: a table of the entries' difference
        q = x.astype(np.intp)
        e = q - q[..., ::-1]
        e += 255
        return [softmax_pair_table(p).take(e)]
    return [softmax_int8_rows(p, x)]


def softmax_int8_rows(p: SoftmaxParams, x: np.ndarray) -> np.ndarray:
    """TFLite's int8-input softmax over the last axis of ``x`` (int8, or any integer type the
    exponentials are computed for), output int8 or int16 (``p.output_bits``)."""
    q = x.astype(np.int64)
    if x.dtype == np.int8:
        table_q0, table_acc = softmax_exp_tables(p)
        index = q + (255 - q.max(axis=-1, keepdims=True))  # diff + 255; int8: diff in [-255, 0]
        exp_q0, exp_acc = table_q0[index], table_acc[index]
    else:
        exp_q0, exp_acc = softmax_live_exps(p, q - q.max(axis=-1, keepdims=True))
    recip, num_bits_over_unit, most_bits = softmax_row_reciprocals(exp_acc.sum(axis=-1, keepdims=True))
    bits = p.output_bits
    if most_bits > bits:  # RoundingDivideByPOT by more than 31: the references abort
        raise QsimError(softmax_abort_message(q.shape[-1]) + " This input has such a row.")
    prod = fp.saturating_rounding_doubling_high_mul(recip, exp_q0)
    unsat = fp.rounding_divide_by_pot(prod, num_bits_over_unit + 31 - bits)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    # a 0 exponential (below diff_min) outputs lo
    return np.minimum(np.maximum(unsat + lo, lo), hi).astype(np.int8 if bits == 8 else np.int16)


# --------------------------------------------------------------------------- LOGISTIC / TANH

@dataclass
class SigmoidParams:
    """Prepared int8 LOGISTIC or TANH: a LUT ("lut") or gemmlowp fixed point ("fixed")."""

    kind: str  # "logistic" | "tanh"
    variant: str  # "lut" | "fixed"
    lut: np.ndarray | None  # int64[256], entry i for q_in = i - 128 ("lut")
    input_zero_point: int
    input_range_radius: int  # |q - zp| >= radius saturates ("fixed")
    input_multiplier: int  # Q31 ("fixed"), may wrap to INT32_MIN like TFLite's cast
    input_left_shift: int  # frexp exponent of s_in * 2**27 ("fixed"; applied as MBQM shift)
    rounding: str


@dataclass
class Sigmoid16Params:
    """Prepared int16 LOGISTIC or TANH (reference_integer_ops::Logistic / Tanh, int16 overload, in
    TFLite Micro and LiteRT BUILTIN_REF alike): the input is rescaled to table steps of 1/(3 * 4096)
    (Q3.12 times 3) and looked up with interpolation in TFLite's sigmoid table
    (:func:`qsim.fixedpoint.logistic_int16_lut` / :func:`qsim.fixedpoint.tanh_int16_lut`); output
    Q0.15 (scale 2**-15, zero point 0).  ``input_multiplier`` 0: power-of-two input scale, the
    rescale is ``x * (3 << input_left_shift)``; otherwise ``(x * M + round) >> input_left_shift``."""

    kind: str  # "logistic" | "tanh"
    input_multiplier: int  # 0 (power-of-two scale) or an integer <= 32767
    input_left_shift: int  # >= 0


def prepare_sigmoid16(op, graph, profile) -> Sigmoid16Params:
    """The int16 Prepare of both references: zero points 0; a power-of-two input scale of 2**-12 (tanh
    also 2**-11) uses multiplier 0 and the shift ``12 + log2(s_in)``; any other scale gets
    ``M = int(s_in * 3 * 4096 * 2**k)`` with the smallest k (<= 31) bringing M above 32767 / 2;
    the output scale must be 2**-15 to within CheckedLog2's tolerance (LiteRT's LOGISTIC: exactly,
    profile variant "LOGISTIC_INT16_OUT_SCALE" "exact")."""
    x, out = _unary_tensors(op, graph, int16=True)
    kind = "logistic" if op.opcode == "LOGISTIC" else "tanh"
    for t, what in ((x, "input"), (out, "output")):
        if t.quant.zp0 != 0:
            raise QsimError(f"{op.opcode}: int16 {what} '{t.name}' must have zero point 0 (TFLite requires it), "
                            f"got {t.quant.zp0}.")
    s_out = float(_f32(out.quant.scale0))
    if kind == "logistic" and s_out != 2.0 ** -15 and profile.variant("LOGISTIC_INT16_OUT_SCALE", "log2") == "exact":
        raise QsimError(f"LOGISTIC: int16 output '{out.name}' must have scale exactly 1/32768 (the '{profile.name}' "
                        f"reference, LiteRT, requires it), got {out.quant.scale0:.9g}.")
    power, exact = fp.checked_log2(s_out)
    if not exact or power != -15:
        raise QsimError(f"{op.opcode}: int16 output '{out.name}' must have scale 1/32768 (TFLite requires a power of "
                        f"two, 2**-15), got {out.quant.scale0:.9g}.")
    s_in = float(_f32(x.quant.scale0))
    power, exact = fp.checked_log2(s_in)
    left = 12 + power
    if exact and (left == 0 or (kind == "tanh" and left == 1)):
        return Sigmoid16Params(kind, 0, left)
    m, left = s_in * 4096.0 * 3.0, 0
    while m <= 32767.0 / 2.0 and left <= 30:
        left += 1
        m *= 2.0
    if int(m) < 1:
        raise QsimError(f"{op.opcode}: int16 input scale {x.quant.scale0:.9g} is too small for TFLite's table "
                        "rescaling (its multiplier rounds to 0).")
    if int(m) > 32767:
        raise QsimError(f"{op.opcode}: int16 input scale {x.quant.scale0:.9g} needs a table multiplier of {int(m):,}, "
                        "above the 32767 TFLite allows (its int32 product could overflow); use an input scale "
                        "below 2.67.")
    return Sigmoid16Params(kind, int(m), left)


def eval_sigmoid16(p: Sigmoid16Params, inputs) -> list[np.ndarray]:
    f = fp.logistic_int16_lut if p.kind == "logistic" else fp.tanh_int16_lut
    return [f(np.asarray(inputs[0]), p.input_multiplier, p.input_left_shift).astype(np.int16)]


def prepare_sigmoid(op, graph, profile) -> SigmoidParams | Sigmoid16Params:
    if is_int16_op(op, graph):
        return prepare_sigmoid16(op, graph, profile)
    x, out = _unary_tensors(op, graph)
    kind = "logistic" if op.opcode == "LOGISTIC" else "tanh"
    variant = profile.variant(op.opcode, "fixed")
    s_in = float(_f32(x.quant.scale0))
    if variant == "lut":
        if kind == "logistic" and float(_f32(out.quant.scale0)) != 1.0 / 256:
            raise QsimError(f"LOGISTIC: int8 output '{out.name}' must have scale exactly 1/256 (LiteRT requires it), "
                            f"got {out.quant.scale0:.9g}.")
        lut = fp.lut_populate_int8(kind, s_in, x.quant.zp0, out.quant.scale0, out.quant.zp0)
        return SigmoidParams(kind, variant, lut, x.quant.zp0, 0, 0, 0, profile.rounding(op.opcode))
    if variant != "fixed":
        raise QsimError(f"{op.opcode}: unknown variant '{variant}' in profile '{profile.name}'.")
    if kind == "logistic" and out.quant.zp0 != -128:
        raise QsimError(f"LOGISTIC: int8 output '{out.name}' must have zero point -128 (TFLite Micro requires it), "
                        f"got {out.quant.zp0}.")
    m, left = fp.quantize_multiplier_unnormalized(s_in * float(1 << (31 - SIGMOID_INPUT_INTEGER_BITS)))
    radius = fp.calculate_input_radius(SIGMOID_INPUT_INTEGER_BITS, left, 31)
    return SigmoidParams(kind, variant, None, x.quant.zp0, radius, m, left, profile.rounding(op.opcode))


def eval_sigmoid(p: SigmoidParams | Sigmoid16Params, inputs) -> list[np.ndarray]:
    if type(p) is Sigmoid16Params:
        return eval_sigmoid16(p, inputs)
    q = np.asarray(inputs[0], np.int64)
    if p.variant == "lut":
        return [p.lut[q + 128].astype(np.int8)]
    d = q - p.input_zero_point
    inner = (d > -p.input_range_radius) & (d < p.input_range_radius)
    safe = np.where(inner, d, 0)
    if p.input_left_shift > 30 or p.input_left_shift < -31:
        x_q4 = np.zeros_like(safe)  # unreachable: the radius is 0 then, every input saturates
    else:
        x_q4 = fp.multiply_by_quantized_multiplier(safe, p.input_multiplier, p.input_left_shift, p.rounding)
    if p.kind == "logistic":
        y = fp.rounding_divide_by_pot(fp.fixed_logistic(x_q4, SIGMOID_INPUT_INTEGER_BITS), 31 - 8) - 128
    else:
        y = fp.rounding_divide_by_pot(fp.fixed_tanh(x_q4, SIGMOID_INPUT_INTEGER_BITS), 31 - 7)
    y = np.clip(y, -128, 127)
    y = np.where(d <= -p.input_range_radius, -128, np.where(d >= p.input_range_radius, 127, y))
    return [y.astype(np.int8)]


# --------------------------------------------------------------------------- RELU / RELU6

@dataclass
class ReluParams:
    """Prepared int8 RELU / RELU6 (ReluX requantize-and-clamp, or TFLM RELU6's plain clamp)."""

    variant: str  # "float32_scale" | "double_scale" | "clamp_only"
    input_offset: int  # zp_in (subtracted)
    output_offset: int  # zp_out (added)
    output_multiplier: int  # Q31 (unused for "clamp_only")
    output_shift: int  # TFLite sign (> 0 left)
    act_min: int
    act_max: int
    rounding: str
    dtype: np.dtype = np.dtype(np.int8)  # int8, or int16 (int16x8 models)


def _round_float32_ratio(value: float, scale: float) -> int:
    """roundf(float32(value) / float32(scale)) (ties away from zero)."""
    return fp.round_half_away_int(float(_f32(_f32(value) / _f32(scale))))


def prepare_relu(op, graph, profile) -> ReluParams:
    """int8, or int16 (int16 in and out, zero points 0): the same formulas with the int16 range."""
    x, out = _unary_tensors(op, graph, int16=is_int16_op(op, graph))
    info = np.iinfo(out.dtype)
    qmin, qmax = int(info.min), int(info.max)
    upper = 6.0 if op.opcode == "RELU6" else None
    variant = profile.variant(op.opcode, "double_scale")
    rounding = profile.rounding(op.opcode)
    if variant == "clamp_only":
        lo = x.quant.zp0
        hi = qmax if upper is None else min(qmax, max(qmin, _round_float32_ratio(upper, x.quant.scale0) + x.quant.zp0))
        return ReluParams(variant, x.quant.zp0, x.quant.zp0, 0, 0, max(qmin, lo), hi, rounding, np.dtype(out.dtype))
    if variant == "float32_scale":
        real = float(_f32(_f32(x.quant.scale0) / _f32(out.quant.scale0)))
    elif variant == "double_scale":
        real = float(_f32(x.quant.scale0)) / float(_f32(out.quant.scale0))
    else:
        raise QsimError(f"{op.opcode}: unknown variant '{variant}' in profile '{profile.name}'.")
    m, shift = fp.quantize_multiplier(real, single_rounding=rounding == "single")
    zp = out.quant.zp0
    act_min = max(qmin, zp + _round_float32_ratio(0.0, out.quant.scale0))
    act_max = qmax if upper is None else min(qmax, zp + _round_float32_ratio(upper, out.quant.scale0))
    return ReluParams(variant, x.quant.zp0, zp, m, shift, act_min, act_max, rounding, np.dtype(out.dtype))


def eval_relu(p: ReluParams, inputs) -> list[np.ndarray]:
    q = np.asarray(inputs[0], np.int64)
    if p.variant == "clamp_only":
        return [np.clip(q, p.act_min, p.act_max).astype(p.dtype)]
    y = p.output_offset + fp.multiply_by_quantized_multiplier(q - p.input_offset, p.output_multiplier,
                                                              p.output_shift, p.rounding)
    return [np.clip(y, p.act_min, p.act_max).astype(p.dtype)]


# --------------------------------------------------------------------------- LEAKY_RELU

@dataclass
class LeakyReluParams:
    """Prepared int8 LEAKY_RELU: identity and alpha branches, each a Q31 multiplier and shift."""

    input_offset: int  # zp_in
    output_offset: int  # zp_out
    multiplier_identity: int
    shift_identity: int
    multiplier_alpha: int  # may be negative (alpha < 0)
    shift_alpha: int
    rounding: str
    dtype: np.dtype = np.dtype(np.int8)  # int8, or int16 (int16x8 models)


def prepare_leaky_relu(op, graph, profile) -> LeakyReluParams:
    """int8, or int16x8 (int16 in and out, zero points 0): the same two-branch requantization with
    the int16 clamp (reference_ops::QuantizeLeakyRelu<int16_t> in both references)."""
    x, out = _unary_tensors(op, graph, int16=is_int16_op(op, graph))
    alpha = _f32(getattr(op.options, "alpha", 0.0) if op.options is not None else 0.0)
    s_in, s_out = _f32(x.quant.scale0), _f32(out.quant.scale0)
    rounding = profile.rounding("LEAKY_RELU")
    single = rounding == "single"
    if profile.variant("LEAKY_RELU", "float32_scale") == "double_scale":  # TFLM: operands cast to double
        alpha_real = float(s_in) * float(alpha) / float(s_out)
        identity_real = float(s_in) / float(s_out)
    else:  # LiteRT: float32 arithmetic, widened afterwards
        alpha_real = float(_f32(_f32(s_in * alpha) / s_out))
        identity_real = float(_f32(s_in / s_out))
    if not np.isfinite(alpha_real) or not np.isfinite(identity_real):
        raise QsimError(f"LEAKY_RELU: alpha {float(alpha)} and the scales give a non-finite multiplier.")
    m_a, s_a = fp.quantize_multiplier_signed(alpha_real, single)  # alpha < 0 gives M0 < 0
    m_i, s_i = fp.quantize_multiplier(identity_real, single)
    return LeakyReluParams(x.quant.zp0, out.quant.zp0, m_i, s_i, m_a, s_a, rounding, np.dtype(out.dtype))


def eval_leaky_relu(p: LeakyReluParams, inputs) -> list[np.ndarray]:
    d = np.asarray(inputs[0], np.int64) - p.input_offset
    pos = fp.multiply_by_quantized_multiplier(d, p.multiplier_identity, p.shift_identity, p.rounding)
    neg = fp.multiply_by_quantized_multiplier(d, p.multiplier_alpha, p.shift_alpha, p.rounding)
    y = p.output_offset + np.where(d >= 0, pos, neg)
    info = np.iinfo(p.dtype)
    return [np.clip(y, info.min, info.max).astype(p.dtype)]


# --------------------------------------------------------------------------- HARD_SWISH

@dataclass
class HardSwishParams:
    """Prepared int8 HARD_SWISH (reference_ops::HardSwish, int16 fixed point).

    Both multipliers are Q15 (int16) with a TFLite-sign exponent; the
    real multipliers are formed in float32 from hires_input_scale = s_in / 128:
    output = hires / s_out (exponent <= 0), reluish = hires / (3 / 32768).
    """

    input_zero_point: int
    output_zero_point: int
    output_multiplier_fixedpoint_int16: int
    output_multiplier_exponent: int  # <= 0
    reluish_multiplier_fixedpoint_int16: int
    reluish_multiplier_exponent: int


def prepare_hard_swish(op, graph, profile) -> HardSwishParams:
    x, out = _unary_tensors(op, graph)
    single = profile.rounding("HARD_SWISH") == "single"
    hires = _f32(_f32(1.0 / 128.0) * _f32(x.quant.scale0))
    reluish_scale = _f32(_f32(3.0) / _f32(32768.0))
    out_real = float(_f32(hires / _f32(out.quant.scale0)))
    reluish_real = float(_f32(hires / reluish_scale))
    m_o, e_o = fp.quantize_multiplier(out_real, single)
    if e_o > 0:
        raise QsimError(f"HARD_SWISH: input scale / output scale is too large (output exponent {e_o} > 0; "
                        "TFLite rejects this model).")
    m_r, e_r = fp.quantize_multiplier(reluish_real, single)
    return HardSwishParams(x.quant.zp0, out.quant.zp0, fp.downscale_int32_to_int16_multiplier(m_o), e_o,
                           fp.downscale_int32_to_int16_multiplier(m_r), e_r)


def eval_hard_swish(p: HardSwishParams, inputs) -> list[np.ndarray]:
    v = fp.wrap_int16(np.asarray(inputs[0], np.int64) - p.input_zero_point)
    hires = fp.wrap_int16(v * 128)
    preshift_out = fp.saturating_rounding_doubling_high_mul_int16(hires, p.output_multiplier_fixedpoint_int16)
    r = hires
    if p.reluish_multiplier_exponent > 0:
        r = fp.saturating_left_shift_int16(r, p.reluish_multiplier_exponent - 1)
    r = fp.saturating_rounding_doubling_high_mul_int16(r, p.reluish_multiplier_fixedpoint_int16)
    if p.reluish_multiplier_exponent > 0:
        r = fp.saturating_left_shift_int16(r, 1)
    if p.reluish_multiplier_exponent < 0:
        r = fp.rounding_divide_by_pot(r, -p.reluish_multiplier_exponent)
    r = (r + (1 << 15)) >> 1  # [-1, 1] -> [0, 1] in Q0.15
    pre = fp.saturating_doubling_high_mul_int16(r, preshift_out)
    y = fp.wrap_int16(fp.rounding_divide_by_pot(pre, -p.output_multiplier_exponent) + p.output_zero_point)
    return [np.clip(y, -128, 127).astype(np.int8)]


def batch_softmax(p: SoftmaxParams, op, graph, batched) -> bool:
    """Rows are the last axis: a batch rides on axis 0 unless the input is 1-D (its row would
    become the batch)."""
    return len(graph.tensors[op.inputs[0]].shape) >= 2


register("SOFTMAX", prepare_softmax, eval_softmax, batch=batch_softmax, int16=True)
register("LOGISTIC", prepare_sigmoid, eval_sigmoid, batch=batch_always, int16=True)
register("TANH", prepare_sigmoid, eval_sigmoid, batch=batch_always, int16=True)
register("RELU", prepare_relu, eval_relu, batch=batch_always, int16=True)
register("RELU6", prepare_relu, eval_relu, batch=batch_always, int16=True)
register("LEAKY_RELU", prepare_leaky_relu, eval_leaky_relu, batch=batch_always, int16=True)
register("HARD_SWISH", prepare_hard_swish, eval_hard_swish, batch=batch_always)
