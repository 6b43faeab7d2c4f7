"""QUANTIZE (float32 -> int8, int8 -> int8) and DEQUANTIZE (int8 -> float32), as TFLite computes them.

QUANTIZE float32 -> int8 (and -> int16: same rule, int16 clamp) (reference_ops::AffineQuantize), per tensor or per
channel (PerChannelQuantize, along the output's quantized dimension):

    q = clamp(int32(round_half_away(float32(x) / float32(scale))) + zp, -128, 127)

The division is a float32 division and the rounding TfLiteRound on a float.
A float -> int32 conversion that is out of range (|x / scale| >= 2**31, inf,
NaN) gives INT32_MIN, as x86's cvttss2si does in the reference builds, so it
clamps to -128 (also for +inf and NaN): qsim reproduces that.

QUANTIZE int8 -> int8, and int32 <-> int16, int16 -> int16, int8 <-> int16 in int16x8 models
(reference_ops::Requantize, the output type's range as the clamp): multiplier from
double(s_in) / double(s_out) (QuantizeMultiplier), then
``clamp(MBQM(q - zp_in, M, shift) + zp_out, -128, 127)`` with the profile's
rounding.

DEQUANTIZE int8 (or int16) -> float32 (reference_ops::Dequantize):
``float32(double(scale) * (q - zp))`` (exact product, one rounding to float32).

Per-channel tensors (profile variants): LiteRT quantizes/dequantizes per
channel; TFLite Micro refuses a per-channel QUANTIZE ("per_tensor_only") and
dequantizes every element with the first channel's scale and zero point
("first_scale").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import fixedpoint as fp
from ..errors import QsimError
from . import batch_always, register
from .elementwise import require_int8_tensor


def _io(op, graph):
    ins = graph.op_inputs(op)
    if len(ins) != 1 or len(op.outputs) != 1:
        raise QsimError(f"{op.opcode} needs 1 input and 1 output.")
    x, out = ins[0], graph.op_outputs(op)[0]
    if x.size != out.size:
        raise QsimError(f"{op.opcode}: output shape {list(out.shape)} does not match input {list(x.shape)}.")
    return x, out


def _int16_refusal(op, t, role):
    if np.dtype(t.dtype) == np.int16:
        raise QsimError(f"{op.opcode}: {role} '{t.name}' is int16: of the int16 forms qsim simulates only "
                        "float32 -> int16 and the integer requantizations int32 <-> int16, int16 -> int16 and "
                        "int8 <-> int16.")


# --------------------------------------------------------------------------- QUANTIZE

@dataclass
class QuantizeParams:
    """Prepared QUANTIZE.  mode "float": scale/zero_point per channel along ``axis`` (len 1 = per tensor);
    mode "requant": Q31 multiplier and TFLite-sign shift for s_in / s_out."""

    mode: str  # "float" | "requant"
    scale: np.ndarray  # float32 [C] ("float")
    zero_point: np.ndarray  # int64 [C] ("float")
    axis: int  # channel axis of the per-channel case ("float")
    input_zero_point: int  # ("requant")
    output_zero_point: int  # ("requant")
    multiplier: int  # ("requant")
    shift: int  # ("requant")
    rounding: str
    out_min: int = -128  # ("requant") clamp range of the output type
    out_max: int = 127
    # ("requant" from int8 / int16) (input dtype, output of every input value from its type's
    # minimum up): eval looks the values up (see _integer_table)
    table: Any = field(default=None, repr=False, compare=False)


# Input types whose every value gets its result tabulated in prepare (256 or 65,536 entries): eval
# is then one lookup, the cheapest single-sample path; the table holds the very arithmetic of eval.
_TABULATED = (np.dtype(np.int8), np.dtype(np.int16))


def _integer_table(dtype, values_of) -> tuple[np.dtype, np.ndarray] | None:
    """(dtype, ``values_of`` applied to every value of ``dtype``, in the order of the values' bit
    patterns read as unsigned), for int8 and int16 inputs; None otherwise.  Looked up by
    :func:`_lookup`."""
    dtype = np.dtype(dtype)
    if dtype not in _TABULATED:
        return None
    info = np.iinfo(dtype)
    values = values_of(np.arange(info.min, info.max + 1, dtype=dtype))
    half = values.shape[0] // 2  # bit patterns 0 .. 2^(b-1) - 1 are the values 0 .. max, the rest min .. -1
    return dtype, np.ascontiguousarray(np.concatenate([values[half:], values[:half]]))


def _lookup(table, x: np.ndarray) -> np.ndarray | None:
    """The tabulated values at ``x``, or None when ``x`` is not of the table's input type (or 0-d:
    ``take`` would give a scalar, not an array).  Indexed by x's bits read as unsigned (one pass:
    no widening and offset of the index)."""
    if table is None or x.dtype != table[0] or x.ndim == 0:
        return None
    return table[1].take(x.view(np.uint8 if x.itemsize == 1 else np.uint16))


# (input, output) integer types TFLite's QUANTIZE requantizes between in int16x8 models
# (reference_ops::Requantize in LiteRT's and TFLM's quantize kernels): the int32 <-> int16 edges of
# a SEANet graph and int16 -> int16 / int8.
_INT16_REQUANT = {(np.dtype(a), np.dtype(b)) for a, b in (
    (np.int32, np.int16), (np.int16, np.int32), (np.int16, np.int16), (np.int16, np.int8), (np.int8, np.int16))}


def _prepare_requant_int16(x, out, rounding) -> QuantizeParams:
    """QUANTIZE between integer types with an int16 side: Requantize with the output type's clamp."""
    for t, role in ((x, "input"), (out, "output")):
        if t.quant is None or t.quant.scale.size != 1:
            raise QsimError(f"QUANTIZE: {role} '{t.name}' needs one (per-tensor) scale and zero point; TFLite's "
                            "integer requantization is per tensor.")
    real = float(np.float32(x.quant.scale0)) / float(np.float32(out.quant.scale0))
    m, shift = fp.quantize_multiplier(real, single_rounding=rounding == "single")
    info = np.iinfo(out.dtype)
    return _tabulated(QuantizeParams("requant", np.zeros(0, np.float32), np.zeros(0, np.int64), 0,
                                     x.quant.zp0, out.quant.zp0, m, shift, rounding, int(info.min), int(info.max)),
                      x.dtype)


def _tabulated(p: QuantizeParams, in_dtype) -> QuantizeParams:
    p.table = _integer_table(in_dtype, lambda v: _requantize(p, v))
    return p


def prepare_quantize(op, graph, profile) -> QuantizeParams:
    x, out = _io(op, graph)
    rounding = profile.rounding("QUANTIZE")
    if (np.dtype(x.dtype), np.dtype(out.dtype)) in _INT16_REQUANT:
        return _prepare_requant_int16(x, out, rounding)
    _int16_refusal(op, x, "input")
    if np.dtype(x.dtype) == np.float32:
        if np.dtype(out.dtype) not in (np.dtype(np.int8), np.dtype(np.int16)):
            raise QsimError(f"QUANTIZE: output '{out.name}' is {np.dtype(out.dtype).name}; only float32 -> int8 "
                            "and float32 -> int16 are supported.")
        if out.quant is None or out.quant.scale.size == 0:
            raise QsimError(f"QUANTIZE: output '{out.name}' has no quantization parameters.")
        scale = out.quant.scale.astype(np.float32)
        if np.any(~np.isfinite(scale)) or np.any(scale <= 0):
            raise QsimError(f"QUANTIZE: output '{out.name}' has a non-positive or non-finite scale.")
        axis = out.quant.axis if out.quant.per_channel else 0
        if out.quant.per_channel and profile.variant("QUANTIZE", "per_channel") == "per_tensor_only":
            raise QsimError(f"QUANTIZE: output '{out.name}' is quantized per channel ({scale.size} scales); the "
                            f"'{profile.name}' reference (TFLite Micro) only supports per-tensor QUANTIZE and refuses "
                            "this model (quantize_common.cc: scale->size == 1).")
        if out.quant.per_channel and (axis >= len(out.shape) or out.shape[axis] != scale.size):
            raise QsimError(f"QUANTIZE: {scale.size} per-channel scales do not match dimension {axis} of "
                            f"{list(out.shape)}.")
        info = np.iinfo(out.dtype)
        return QuantizeParams("float", scale, out.quant.zero_point.astype(np.int64), axis, 0, 0, 0, 0, rounding,
                              int(info.min), int(info.max))
    _int16_refusal(op, out, "output")
    require_int8_tensor(x, "input", "QUANTIZE")
    require_int8_tensor(out, "output", "QUANTIZE")
    real = float(np.float32(x.quant.scale0)) / float(np.float32(out.quant.scale0))
    m, shift = fp.quantize_multiplier(real, single_rounding=rounding == "single")
    return _tabulated(QuantizeParams("requant", np.zeros(0, np.float32), np.zeros(0, np.int64), 0,
                                     x.quant.zp0, out.quant.zp0, m, shift, rounding), x.dtype)


def _requantize(p: QuantizeParams, x: np.ndarray) -> np.ndarray:
    """Requantize (mode "requant"): clamp(MBQM(x - zp_in, M, shift) + zp_out) in the output type."""
    y = fp.multiply_by_quantized_multiplier(x.astype(np.int64) - p.input_zero_point, p.multiplier, p.shift,
                                            p.rounding) + p.output_zero_point
    return np.clip(y, p.out_min, p.out_max).astype(_out_dtype(p))


def eval_quantize(p: QuantizeParams, inputs) -> list[np.ndarray]:
    x = np.asarray(inputs[0])
    if p.mode == "requant":
        y = _lookup(p.table, x)
        return [_requantize(p, x) if y is None else y]
    shape = [1] * x.ndim
    if p.scale.size > 1:
        shape[p.axis] = p.scale.size
    scale = p.scale.reshape(shape) if x.ndim else p.scale[0]
    zp = p.zero_point.reshape(shape) if x.ndim else p.zero_point[0]
    # the references' own out-of-range behaviour (x86 int cast), to stay bit-exact with them
    return [fp.quantize_affine(x, scale, zp, p.out_min, p.out_max, overflow="x86").astype(_out_dtype(p))]


def _out_dtype(p: QuantizeParams):
    return np.int8 if p.out_max == 127 else np.int16 if p.out_max == 32767 else np.int32


# --------------------------------------------------------------------------- DEQUANTIZE

@dataclass
class DequantizeParams:
    """Prepared DEQUANTIZE int8 -> float32 (per tensor or per channel along ``axis``)."""

    scale: np.ndarray  # float64 holding the float32 scales [C]
    zero_point: np.ndarray  # int64 [C]
    axis: int
    # per tensor, int8 / int16 input: (input dtype, float32 of every input value), see _integer_table
    table: Any = field(default=None, repr=False, compare=False)


def prepare_dequantize(op, graph, profile) -> DequantizeParams:
    x, out = _io(op, graph)
    if np.dtype(x.dtype) not in (np.dtype(np.int8), np.dtype(np.int16)):
        raise QsimError(f"DEQUANTIZE: input '{x.name}' is {np.dtype(x.dtype).name}; only int8 -> float32 and "
                        "int16 -> float32 are supported (float16 weights dequantization is not simulated).")
    if np.dtype(out.dtype) != np.float32:
        raise QsimError(f"DEQUANTIZE: output '{out.name}' must be float32, got {np.dtype(out.dtype).name}.")
    if x.quant is None or x.quant.scale.size == 0:
        raise QsimError(f"DEQUANTIZE: input '{x.name}' has no quantization parameters.")
    scale = x.quant.scale.astype(np.float32).astype(np.float64)
    zero_point = x.quant.zero_point.astype(np.int64)
    axis = x.quant.axis if x.quant.per_channel else 0
    if x.quant.per_channel and profile.variant("DEQUANTIZE", "per_channel") == "first_scale":
        # TFLite Micro reads only scale[0] / zero_point[0] and applies them to every element.
        p = DequantizeParams(scale[:1], zero_point[:1], 0)
    elif x.quant.per_channel and (axis >= len(x.shape) or x.shape[axis] != scale.size):
        raise QsimError(f"DEQUANTIZE: {scale.size} per-channel scales do not match dimension {axis} of "
                        f"{list(x.shape)}.")
    else:
        p = DequantizeParams(scale, zero_point, axis)
    if p.scale.size == 1:
        p.table = _integer_table(x.dtype, lambda v: _dequantize(p, v))
    return p


def eval_dequantize(p: DequantizeParams, inputs) -> list[np.ndarray]:
    x = np.asarray(inputs[0])
    y = _lookup(p.table, x)
    return [_dequantize(p, x) if y is None else y]


def _dequantize(p: DequantizeParams, x: np.ndarray) -> np.ndarray:
    """float32(double(scale) * (q - zp)), per channel along ``axis`` when there are several scales."""
    q = x.astype(np.int64)
    shape = [1] * q.ndim
    if p.scale.size > 1:
        shape[p.axis] = p.scale.size
    scale = p.scale.reshape(shape) if q.ndim else p.scale[0]
    zp = p.zero_point.reshape(shape) if q.ndim else p.zero_point[0]
    return (scale * (q - zp).astype(np.float64)).astype(np.float32)


# Batches: element-wise; a per-channel axis is never 0 when the batched input has dim 0 == 1.
register("QUANTIZE", prepare_quantize, eval_quantize, batch=batch_always, int16=True)
register("DEQUANTIZE", prepare_dequantize, eval_dequantize, batch=batch_always, int16=True)
