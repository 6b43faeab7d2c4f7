"""ADD, SUB, MUL, MAXIMUM, MINIMUM on int8 and int16x8, bit-exact with TFLite's reference kernels.

Broadcasting follows numpy rules, which is what TFLite's BroadcastAdd/Mul
(4-D in TFLM, up to 6-D in LiteRT) compute: a dimension of size 1 repeats.

ADD / SUB (reference_integer_ops::Add, PrepareGeneralSubOp): both inputs are
moved to a common high-resolution scale 2 * max(s1, s2) / 2**20:

    x_i'   = (q_i - zp_i) * 2**left_shift                       left_shift = 20
    y_i    = MBQM(x_i', M_i, shift_i)        M_i ~ s_i / (2 max(s1, s2)), shift_i <= 0
    sum    = y_1 +/- y_2                     (int32 wrap)
    out    = clamp(MBQM(sum, M_o, shift_o) + zp_o, act_min, act_max)
             M_o ~ 2 max(s1, s2) / (2**20 s_o)

int16x8 ADD/SUB (zero points 0) run the same formula with left_shift = 15 and int16 clamps
(LiteRT's general-scale int16 path, TFLM's only one).

Each MBQM is QuantizeMultiplierSmallerThanOneExp's pair applied with the
profile's rounding (double: SRDHM then RoundingDivideByPOT; single: one
rounding).  Shifts use TFLite's sign convention (> 0 left, < 0 right).

MUL (reference_integer_ops::Mul):
``out = clamp(MBQM((q1 - zp1) * (q2 - zp2), M, shift) + zp_o, act_min, act_max)``
with M ~ s1 * s2 / s_o.  How that real multiplier is formed is a per-profile
variant (mul_real_multiplier): LiteRT computes it in float32, TFLM in double;
they differ when QuantizeMultiplier's rounding lands on the other side.

MAXIMUM / MINIMUM: element-wise max/min of the raw int8 values (TFLite does
not rescale; it assumes both inputs share the output's quantization).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import fixedpoint as fp
from ..errors import QsimError
from . import batch_same_rank, register

ADD_LEFT_SHIFT = 20  # TFLite's left_shift for int8 ADD/SUB
ADD_LEFT_SHIFT_INT16 = 15  # ... and for int16x8 ADD/SUB (general scales)
INT8_MIN, INT8_MAX = -128, 127
INT16_MIN, INT16_MAX = -32768, 32767


# --------------------------------------------------------------------------- shared checks

def require_int8_tensor(t, role: str, opcode: str) -> None:
    """QsimError unless ``t`` is an int8 tensor with per-tensor quantization (int16 is refused)."""
    if t is None:
        raise QsimError(f"{opcode}: the {role} tensor is missing.")
    dt = np.dtype(t.dtype)
    if dt == np.int16:
        raise QsimError(f"{opcode}: {role} '{t.name}' is int16: int16 activations are not supported "
                        "(qsim simulates int8 kernels only).")
    if dt != np.int8:
        raise QsimError(f"{opcode}: {role} '{t.name}' is {dt.name}; this kernel supports int8 only.")
    if t.quant is None or t.quant.scale.size == 0:
        raise QsimError(f"{opcode}: {role} '{t.name}' has no quantization parameters; int8 kernels need a "
                        "scale and zero point.")
    if t.quant.per_channel:
        raise QsimError(f"{opcode}: {role} '{t.name}' is quantized per channel; TFLite needs per-tensor "
                        "quantization here.")


def require_int16_tensor(t, role: str, opcode: str) -> None:
    """QsimError unless ``t`` is an int16x8 activation: int16, one scale, zero point 0 (TFLite's rule)."""
    if t is None:
        raise QsimError(f"{opcode}: the {role} tensor is missing.")
    if np.dtype(t.dtype) != np.int16:
        raise QsimError(f"{opcode}: {role} '{t.name}' is {np.dtype(t.dtype).name}; in an int16x8 {opcode} every "
                        "activation is int16 (TFLite has no mixed int8/int16 form of this op).")
    if t.quant is None or t.quant.scale.size != 1:
        raise QsimError(f"{opcode}: {role} '{t.name}' needs one (per-tensor) scale; TFLite's int16 kernels are "
                        "per tensor.")
    if t.quant.zp0 != 0:
        raise QsimError(f"{opcode}: {role} '{t.name}' has zero point {t.quant.zp0}; TFLite's int16x8 kernels "
                        "require zero point 0 on int16 tensors.")


def is_int16_op(op, graph) -> bool:
    """True when the op's first input is int16 (its int16x8 form; the int16 checks follow)."""
    ins = graph.op_inputs(op)
    return bool(ins) and ins[0] is not None and np.dtype(ins[0].dtype) == np.int16


def activation_range(activation: str, out, opcode: str) -> tuple[int, int]:
    """(act_min, act_max) of a fused activation on the int8 or int16 output (CalculateActivationRangeQuantized)."""
    try:
        if np.dtype(out.dtype) == np.int16:
            return fp.quantized_activation_range(activation, out.quant.scale0, out.quant.zp0, INT16_MIN, INT16_MAX)
        return fp.quantized_activation_range(activation, out.quant.scale0, out.quant.zp0)
    except ValueError:
        raise QsimError(f"{opcode}: fused activation {activation} is not supported on int8 outputs "
                        "(TFLite only fuses NONE, RELU, RELU6 and RELU_N1_TO_1 into quantized ops).") from None


def broadcast_shape(a, b, out, opcode: str) -> tuple[int, ...]:
    """numpy/TFLite broadcast of the two input shapes; must equal the output tensor's shape."""
    try:
        shape = tuple(np.broadcast_shapes(tuple(a.shape), tuple(b.shape)))
    except ValueError:
        raise QsimError(f"{opcode}: input shapes {list(a.shape)} and {list(b.shape)} do not broadcast.") from None
    if len(shape) > 6:
        raise QsimError(f"{opcode}: broadcasting beyond 6 dimensions is not supported by TFLite.")
    if tuple(out.shape) != shape:
        raise QsimError(f"{opcode}: output '{out.name}' has shape {list(out.shape)} but the inputs broadcast "
                        f"to {list(shape)}.")
    return shape


def _activation_of(op) -> str:
    return getattr(op.options, "activation", "NONE") if op.options is not None else "NONE"


def _binary_tensors(op, graph, int16: bool = False):
    ins = graph.op_inputs(op)
    if len(ins) != 2 or len(op.outputs) != 1:
        raise QsimError(f"{op.opcode} needs exactly 2 inputs and 1 output, got {len(ins)} and {len(op.outputs)}.")
    a, b = ins
    out = graph.op_outputs(op)[0]
    for t, role in ((a, "first input"), (b, "second input"), (out, "output")):
        (require_int16_tensor if int16 else require_int8_tensor)(t, role, op.opcode)
    return a, b, out


# --------------------------------------------------------------------------- ADD / SUB

@dataclass
class AddSubParams:
    """Prepared int8 ADD/SUB.  Multipliers are Q31 M0, shifts <= 0 (right shifts, TFLite sign)."""

    sign: int  # +1 for ADD, -1 for SUB (the second scaled input is subtracted)
    input1_offset: int  # -zp1
    input2_offset: int  # -zp2
    output_offset: int  # zp_out
    left_shift: int  # 20
    input1_multiplier: int
    input1_shift: int
    input2_multiplier: int
    input2_shift: int
    output_multiplier: int
    output_shift: int
    act_min: int
    act_max: int
    rounding: str  # "double" | "single"
    out_shape: tuple[int, ...]
    table: np.ndarray | None = field(default=None, repr=False)  # int8 [256, 256], see pair_table (None: int16)


def _smaller_than_one(real: float, what: str, opcode: str) -> tuple[int, int]:
    try:
        return fp.quantize_multiplier_smaller_than_one_exp(real)
    except ValueError:
        raise QsimError(f"{opcode}: the {what} multiplier {real!r} is outside (0, 1), which TFLite's int8 "
                        "kernel cannot represent (scales too far apart).") from None


def prepare_add_sub(op, graph, profile) -> AddSubParams:
    """int8, or int16x8 (left_shift 15, LiteRT/TFLM's general-scale int16 path; zero points 0).

    int16: LiteRT runs a different, power-of-two kernel when the op's ``pot_scale_int16`` is true
    (the schema default) and all three scales are powers of two; qsim refuses that case."""
    int16 = is_int16_op(op, graph)
    a, b, out = _binary_tensors(op, graph, int16)
    left_shift = ADD_LEFT_SHIFT_INT16 if int16 else ADD_LEFT_SHIFT
    if int16 and getattr(op.options, "pot_scale_int16", True) and all(
            math.frexp(float(np.float32(t.quant.scale0)))[0] == 0.5 for t in (a, b, out)):
        raise QsimError(f"{op.opcode}: int16 with pot_scale_int16 and power-of-two scales runs LiteRT's separate "
                        "power-of-two kernel, which qsim does not simulate yet (TFLM has no such kernel).")
    shape = broadcast_shape(a, b, out, op.opcode)
    s1, s2, so = (float(np.float32(t.quant.scale0)) for t in (a, b, out))
    if min(s1, s2, so) <= 0:
        raise QsimError(f"{op.opcode}: scales must be positive, got {s1}, {s2}, {so}.")
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = _smaller_than_one(s1 / twice_max, "first input", op.opcode)
    m2, sh2 = _smaller_than_one(s2 / twice_max, "second input", op.opcode)
    with np.errstate(over="ignore"):
        out_denominator = float(np.float32((1 << left_shift) * np.float32(so)))  # int * float in float32
    if not math.isfinite(out_denominator):
        raise QsimError(f"{op.opcode}: output scale {so:.6g} times 2**{left_shift} overflows float32 (TFLite forms "
                        "that product in float32); no meaningful model has such a scale.")
    mo, sho = _smaller_than_one(twice_max / out_denominator, "output", op.opcode)
    act_min, act_max = activation_range(_activation_of(op), out, op.opcode)
    p = AddSubParams(sign=-1 if op.opcode == "SUB" else 1,
                        input1_offset=-a.quant.zp0, input2_offset=-b.quant.zp0, output_offset=out.quant.zp0,
                        left_shift=left_shift, input1_multiplier=m1, input1_shift=sh1,
                        input2_multiplier=m2, input2_shift=sh2, output_multiplier=mo, output_shift=sho,
                        act_min=act_min, act_max=act_max, rounding=profile.rounding(op.opcode), out_shape=shape)
    if not int16:
        p.table = pair_table(add_sub_arithmetic, p)
    return p


def add_sub_arithmetic(p: AddSubParams, q1, q2) -> np.ndarray:
    """The int8 ADD/SUB arithmetic on (broadcastable) int8 value arrays -> int64 clamped outputs."""
    x1 = (np.asarray(q1, np.int64) + p.input1_offset) << p.left_shift
    x2 = (np.asarray(q2, np.int64) + p.input2_offset) << p.left_shift
    y1 = fp.multiply_by_quantized_multiplier(x1, p.input1_multiplier, p.input1_shift, p.rounding)
    y2 = fp.multiply_by_quantized_multiplier(x2, p.input2_multiplier, p.input2_shift, p.rounding)
    raw = fp.wrap_int32(y1 + p.sign * y2)
    out = fp.multiply_by_quantized_multiplier(raw, p.output_multiplier, p.output_shift, p.rounding)
    return np.clip(out + p.output_offset, p.act_min, p.act_max)


def eval_add_sub(p: AddSubParams, inputs) -> list[np.ndarray]:
    if p.table is None:  # int16x8: 2**32 input pairs, computed directly
        return [add_sub_arithmetic(p, inputs[0], inputs[1]).astype(np.int16)]
    return [lookup_pair(p, inputs)]


# --------------------------------------------------------------------------- MUL

@dataclass
class MulParams:
    """Prepared int8 MUL: one Q31 multiplier M0 and shift (TFLite sign, > 0 left) for s1*s2/s_out."""

    input1_offset: int
    input2_offset: int
    output_offset: int
    output_multiplier: int
    output_shift: int
    act_min: int
    act_max: int
    rounding: str
    out_shape: tuple[int, ...]
    real_multiplier: float  # the real value that was quantized (for documentation / codegen comments)
    table: np.ndarray | None = field(default=None, repr=False)  # int8 [256, 256], see pair_table


def mul_real_multiplier(s1: float, s2: float, so: float, variant: str) -> float:
    """s1 * s2 / s_out as the reference computes it.

    "float32": LiteRT's mul.cc multiplies and divides the float32 scales in
    float32 before widening to double; "double" (TFLM): in double.
    """
    if variant == "float32":
        return float(np.float32(np.float32(s1) * np.float32(s2)) / np.float32(so))
    return float(s1) * float(s2) / float(so)


def prepare_mul(op, graph, profile) -> MulParams:
    """int8, or int16x8 (zero points 0, int16 clamp; the products are computed directly, no table)."""
    int16 = is_int16_op(op, graph)
    a, b, out = _binary_tensors(op, graph, int16)
    shape = broadcast_shape(a, b, out, op.opcode)
    variant = profile.variant("MUL", "double")
    real = mul_real_multiplier(a.quant.scale0, b.quant.scale0, out.quant.scale0, variant)
    rounding = profile.rounding("MUL")
    try:
        m0, shift = fp.quantize_multiplier(real, single_rounding=rounding == "single")
    except ValueError:
        raise QsimError(f"MUL: invalid real multiplier {real!r} from the tensor scales.") from None
    act_min, act_max = activation_range(_activation_of(op), out, op.opcode)
    p = MulParams(input1_offset=-a.quant.zp0, input2_offset=-b.quant.zp0, output_offset=out.quant.zp0,
                  output_multiplier=m0, output_shift=shift, act_min=act_min, act_max=act_max,
                  rounding=rounding, out_shape=shape, real_multiplier=real)
    p.table = None if int16 else pair_table(mul_arithmetic, p)
    return p


def mul_arithmetic(p: MulParams, q1, q2) -> np.ndarray:
    """The int8 MUL arithmetic on (broadcastable) int8 value arrays -> int64 clamped outputs."""
    prod = (np.asarray(q1, np.int64) + p.input1_offset) * (np.asarray(q2, np.int64) + p.input2_offset)
    out = fp.multiply_by_quantized_multiplier(prod, p.output_multiplier, p.output_shift, p.rounding)
    return np.clip(out + p.output_offset, p.act_min, p.act_max)


def eval_mul(p: MulParams, inputs) -> list[np.ndarray]:
    if p.table is None:  # int16x8: 2**32 input pairs, computed directly
        return [mul_arithmetic(p, inputs[0], inputs[1]).astype(np.int16)]
    return [lookup_pair(p, inputs)]


# --------------------------------------------------------------------------- int8 pair tables

# Every int8 value in uint8-view order: index u holds the int8 whose bit pattern is u.
_INT8_BY_BITS = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.int64)


def pair_table(arithmetic, p) -> np.ndarray:
    """``arithmetic(p, q1, q2)`` for all 65,536 int8 pairs, as int8 [256, 256] indexed by the
    inputs' bit patterns (``q.view(np.uint8)``).  A binary int8 op's output depends on nothing
    but the two input values, so tabulating the op's own arithmetic once in prepare turns eval
    into one gather; the table is not a second implementation of the math."""
    return arithmetic(p, _INT8_BY_BITS[:, None], _INT8_BY_BITS[None, :]).astype(np.int8)


def lookup_pair(p, inputs) -> np.ndarray:
    """``table[a, b]`` for the inputs' bit patterns, broadcast against each other (to out_shape,
    or its batched form), as one flat ``take`` at ``a * 256 + b`` (4x faster than 2-D fancy
    indexing).  The index is uint16 (a * 256 + b <= 65535): a quarter of the memory traffic of
    an intp index, 3x faster on a batch."""
    a = np.ascontiguousarray(inputs[0], dtype=np.int8).view(np.uint8)
    b = np.ascontiguousarray(inputs[1], dtype=np.int8).view(np.uint8)
    if a.shape == b.shape and a.size > _PAIR_CHUNK:  # a batch: the same lookup block by block
        return _lookup_pair_blocks(p.table.reshape(-1), a.reshape(-1), b.reshape(-1)).reshape(a.shape)
    index = a.astype(np.uint16)
    index <<= 8
    index = np.bitwise_or(index, b, out=index if a.shape == b.shape else None)
    return p.table.reshape(-1).take(index)


# Elements per block of a large same-shape lookup (a batched ADD): the uint16 index block stays
# in cache between its passes (measured 1.5x faster than whole-array passes on a zoo ADD batch).
_PAIR_CHUNK = 1 << 16


def _lookup_pair_blocks(table: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`lookup_pair` on flat same-size uint8 views, _PAIR_CHUNK elements at a time."""
    out = np.empty(a.shape, np.int8)
    index = np.empty(_PAIR_CHUNK, np.uint16)
    for s in range(0, a.size, _PAIR_CHUNK):
        k = min(_PAIR_CHUNK, a.size - s)
        i = index[:k]
        np.left_shift(a[s:s + k], 8, out=i, dtype=np.uint16)
        np.bitwise_or(i, b[s:s + k], out=i)
        np.take(table, i, out=out[s:s + k])
    return out


# --------------------------------------------------------------------------- MAXIMUM / MINIMUM

@dataclass
class MinMaxParams:
    """MAXIMUM / MINIMUM: no arithmetic, only the broadcast output shape and which extreme."""

    take_max: bool
    out_shape: tuple[int, ...]
    dtype: np.dtype = np.dtype(np.int8)  # int8, or int16 (int16x8)


def prepare_min_max(op, graph, profile) -> MinMaxParams:
    a, b, out = _binary_tensors(op, graph, is_int16_op(op, graph))
    shape = broadcast_shape(a, b, out, op.opcode)
    return MinMaxParams(take_max=op.opcode == "MAXIMUM", out_shape=shape, dtype=np.dtype(out.dtype))


def eval_min_max(p: MinMaxParams, inputs) -> list[np.ndarray]:
    f = np.maximum if p.take_max else np.minimum
    return [f(np.asarray(inputs[0]), np.asarray(inputs[1])).astype(p.dtype)]


register("ADD", prepare_add_sub, eval_add_sub, batch=batch_same_rank, int16=True)
register("SUB", prepare_add_sub, eval_add_sub, batch=batch_same_rank, int16=True)
register("MUL", prepare_mul, eval_mul, batch=batch_same_rank, int16=True)
register("MAXIMUM", prepare_min_max, eval_min_max, batch=batch_same_rank, int16=True)
register("MINIMUM", prepare_min_max, eval_min_max, batch=batch_same_rank, int16=True)
