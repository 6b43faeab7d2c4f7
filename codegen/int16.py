"""Per-op C emission for TFLite's int16x8 scheme (int16 activations, zero point 0; int8 per-channel
weights; int64 bias): the kernels of templates/qkernels_int16.c.

As in :mod:`qsim.codegen.tables`, every number comes from the prepared params of qsim's Python
kernels (``qsim/kernels/int16x8.py``, ``elementwise.py``, ``activations.py``, ``quantize.py``):
the int64 bias, the Q31 multipliers and the shifts (checked in
``qsim.fixedpoint.SHIFT_RANGE_INT64`` for the int64 requantization) become const tables at
generation time; the C performs eval's integer arithmetic only.  An op is int16x8 when any of
its non-constant operands is int16 (:func:`is_int16_op`).
"""
from __future__ import annotations

import numpy as np

from qsim import fixedpoint as fp
from qsim import ir
from qsim.errors import QsimError

from . import tables
from .tables import CArray, OpEmit


def has_int16_tensor(op: ir.Operator, g: ir.Graph) -> bool:
    """True when a non-constant input or an output of ``op`` is int16."""
    ts = [g.tensors[t] for t in list(op.inputs) + list(op.outputs) if t >= 0]
    return any(np.dtype(t.dtype) == np.int16 and not t.is_const for t in ts)


def is_int16_op(op: ir.Operator, g: ir.Graph) -> bool:
    """True when the int16x8 kernels (qkernels_int16.c, :data:`EMITTERS`) run ``op``: it has an int16
    tensor outside the int16 forms of the int8 kernels (``tables.C_INT16_FORMS``: SVDF/LSTM state,
    SOFTMAX int8 -> int16), which qkernels.c runs."""
    return has_int16_tensor(op, g) and tables.int16_without_c_kernel(op, g) is not None


def _shifts64(values, opcode: str) -> np.ndarray:
    """int64-requantization shifts, each in qsim.fixedpoint.SHIFT_RANGE_INT64 (else C UB)."""
    a = np.asarray(values, dtype=np.int64).reshape(-1)
    lo, hi = fp.SHIFT_RANGE_INT64
    if a.size and (a.min() < lo or a.max() > hi):
        raise QsimError(f"{opcode}: an int64-accumulator requantization shift outside [{lo}, {hi}] "
                        f"(got {int(a.min())}..{int(a.max())}).")
    return a


def _requant64_arrays(prefix: str, rq, channels: int, opcode: str) -> list[CArray]:
    """int64 bias / Q31 multiplier / shift tables, one entry per output channel."""
    tables._check_rounding(rq, opcode)

    def per_channel(a):
        a = np.asarray(a, dtype=np.int64).reshape(-1)
        return np.broadcast_to(a, (channels,)).copy() if a.size == 1 else a
    mult = tables._i32(per_channel(rq.multiplier))
    if mult.size and mult.min() < 0:
        raise QsimError(f"{opcode}: a negative requantization multiplier ({int(mult.min())}).")
    return [CArray(prefix + "_bias", "int64_t", per_channel(rq.bias)),
            CArray(prefix + "_mult", "int32_t", mult),
            CArray(prefix + "_shift", "int8_t", _shifts64(per_channel(rq.shift), opcode))]


def _gemm_call(fn: str, prefix: str, scratch: bool = False, data: str = "{in0}") -> str:
    extra = ", (int64_t *){scratch}" if scratch else ""
    return (f"{fn}(&{prefix}_params, {data}, {prefix}_w, {prefix}_bias, {prefix}_mult, {prefix}_shift, "
            f"{{out0}}{extra});")


def emit_conv16(pos, prepared, g, prefix) -> OpEmit:
    op, c = prepared.op, prepared.params.conv
    x, w, out = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    fields = tables._conv_window_fields(x, c, c.requant)
    arrays = [tables._weights(prefix, w)] + _requant64_arrays(prefix, c.requant, c.out_channels, op.opcode)
    return OpEmit(pos, op.opcode, f"CONV_2D int16x8 {c.kernel_h}x{c.kernel_w} -> '{out.name}'",
                  _gemm_call("qk_conv2d_s16", prefix), "qk_conv_params", fields, arrays)


def emit_depthwise16(pos, prepared, g, prefix) -> OpEmit:
    op, c = prepared.op, prepared.params.conv
    x, w, out = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    fields = tables._conv_window_fields(x, c, c.requant)  # qk_conv_params; the multiplier is an argument
    arrays = [tables._weights(prefix, w)] + _requant64_arrays(prefix, c.requant, c.out_channels, op.opcode)
    return OpEmit(pos, op.opcode, f"DEPTHWISE_CONV_2D int16x8 {c.kernel_h}x{c.kernel_w} x{c.depth_multiplier} "
                  f"-> '{out.name}'", _gemm_call("qk_depthwise_conv2d_s16", prefix, data=f"{c.depth_multiplier}, {{in0}}"),
                  "qk_conv_params", fields, arrays)


def emit_fc16(pos, prepared, g, prefix) -> OpEmit:
    op, p = prepared.op, prepared.params
    if p.real_scale is not None:
        raise QsimError("FULLY_CONNECTED int16x8: the profile's double real-scale rescale (LiteRT) has no C kernel; "
                        "generate with --rounding double (TFLite Micro) or single.")
    x, w, out = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    rq = p.requant
    out_units = int(np.asarray(p.weights_t).shape[1])
    fields = dict(batches=x.size // p.in_units, in_units=p.in_units, out_units=out_units, input_offset=0,
                  filter_offset=0, output_offset=rq.output_zero_point, act_min=rq.act_min, act_max=rq.act_max)
    arrays = [tables._weights(prefix, w)] + _requant64_arrays(prefix, rq, out_units, op.opcode)
    return OpEmit(pos, op.opcode, f"FULLY_CONNECTED int16x8 {p.in_units}->{out_units} -> '{out.name}'",
                  _gemm_call("qk_fully_connected_s16", prefix), "qk_fc_params", fields, arrays)


def emit_transpose_conv16(pos, prepared, g, prefix) -> OpEmit:
    """Operands: {in0} output_shape (int32 [4]: checked at run time when it is a graph input),
    the filter (flash table), {in2} the int16 input; scratch: int64 per output element."""
    op, p = prepared.op, prepared.params
    if np.dtype(p.dtype) != np.int16:
        raise QsimError("TRANSPOSE_CONV on int8 has no C kernel in qsim codegen (int16x8 only).")
    shape_t, w, x = (g.tensors[t] for t in op.inputs[:3])
    out = g.tensors[op.outputs[0]]
    kh, kw, ic, oc = p.weights.shape
    n, oh, ow, _ = p.out_shape
    fields = dict(batches=n, in_h=x.shape[1], in_w=x.shape[2], in_c=ic, out_h=oh, out_w=ow, out_c=oc, k_h=kh,
                  k_w=kw, stride_h=p.stride_h, stride_w=p.stride_w, pad_h=p.pad_h, pad_w=p.pad_w,
                  output_offset=p.requant.output_zero_point, act_min=p.requant.act_min,
                  act_max=p.requant.act_max)
    arrays = [tables._weights(prefix, w)] + _requant64_arrays(prefix, p.requant, oc, op.opcode)
    call = _gemm_call("qk_transpose_conv_s16", prefix, scratch=True, data="{in2}")
    if not shape_t.is_const:  # a runtime output_shape must hold the stored shape (as qsim run refuses others)
        call = (f"if (qk_check_shape4({{in0}}, {n}, {oh}, {ow}, {oc}) != 0) {{{{\n        return 5; "
                f"/* output_shape input differs from the stored output shape */\n    }}}}\n    " + call)
    return OpEmit(pos, op.opcode, f"TRANSPOSE_CONV int16x8 {kh}x{kw} -> '{out.name}'", call, "qk_tconv_params",
                  fields, arrays, scratch_bytes=8 * out.size)


def emit_leaky_relu16(pos, prepared, g, prefix) -> OpEmit:
    op, p, x, out = tables._int8_io(prepared, g, np.int16)
    tables._mbqm_shifts([p.shift_identity, p.shift_alpha], p.rounding, op.opcode)
    fields = dict(size=out.size, input_offset=p.input_offset, output_offset=p.output_offset,
                  multiplier_identity=p.multiplier_identity, shift_identity=p.shift_identity,
                  multiplier_alpha=p.multiplier_alpha, shift_alpha=p.shift_alpha)
    return OpEmit(pos, op.opcode, f"LEAKY_RELU int16 -> '{out.name}'",
                  tables._params_call("qk_leaky_relu_s16", prefix, "{in0}", "{out0}"), "qk_leaky_relu_params",
                  fields)


def emit_relu16(pos, prepared, g, prefix) -> OpEmit:
    op, p, x, out = tables._int8_io(prepared, g, np.int16)
    clamp_only = p.variant == "clamp_only"
    if not clamp_only:
        tables._mbqm_shifts([p.output_shift], p.rounding, op.opcode)
    fields = dict(size=out.size, input_offset=p.input_offset, output_offset=p.output_offset,
                  multiplier=0 if clamp_only else p.output_multiplier, shift=0 if clamp_only else p.output_shift,
                  act_min=p.act_min, act_max=p.act_max)
    return OpEmit(pos, op.opcode, f"{op.opcode} int16 -> '{out.name}'",
                  tables._params_call("qk_relu_s16", prefix, "{in0}", "{out0}"), "qk_relu_params", fields)


def emit_quantize16(pos, prepared, g, prefix) -> OpEmit:
    """QUANTIZE between integer types with an int16 side (TFLite's Requantize), or float32 -> int16."""
    op, p = prepared.op, prepared.params
    x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if p.mode == "float":
        return tables.emit_quantize_float(pos, prepared, g, prefix)
    if np.dtype(x.dtype).itemsize == 4 and p.input_zero_point != 0:
        raise QsimError(f"QUANTIZE: int32 input '{x.name}' with zero point {p.input_zero_point} has no C kernel "
                        "(x - zero point may leave int32).")
    tables._mbqm_shifts([p.shift], p.rounding, op.opcode)
    fields = dict(size=out.size, in_bytes=np.dtype(x.dtype).itemsize, out_bytes=np.dtype(out.dtype).itemsize,
                  input_zero_point=p.input_zero_point, output_zero_point=p.output_zero_point,
                  multiplier=p.multiplier, shift=p.shift, out_min=p.out_min, out_max=p.out_max)
    return OpEmit(pos, op.opcode, f"QUANTIZE {np.dtype(x.dtype).name} -> {np.dtype(out.dtype).name} -> '{out.name}'",
                  tables._params_call("qk_requant_elems", prefix, "{in0}", "{out0}"), "qk_requant_params", fields)


def emit_sigmoid16(pos, prepared, g, prefix) -> OpEmit:
    op, p, x, out = tables._int8_io(prepared, g, np.int16)
    fields = dict(size=out.size, input_multiplier=p.input_multiplier, input_left_shift=p.input_left_shift,
                  is_tanh=int(p.kind == "tanh"))
    lut = CArray(prefix + "_lut", "uint16_t", fp.SIGMOID_TABLE_UINT16)
    return OpEmit(pos, op.opcode, f"{op.opcode} int16 (interpolated table) -> '{out.name}'",
                  tables._params_call("qk_sigmoid_s16", prefix, f"{prefix}_lut", "{in0}", "{out0}"),
                  "qk_sigmoid16_params", fields, [lut])


def emit_softmax16(pos, prepared, g, prefix) -> OpEmit:
    op, p, x, out = tables._int8_io(prepared, g, np.int16)
    tables._mbqm_shifts([p.input_shift], p.rounding, op.opcode)
    depth = int(x.shape[-1])
    fields = dict(outer=x.size // depth, depth=depth, input_multiplier=p.input_multiplier, input_shift=p.input_shift)
    luts = [CArray(prefix + "_exp", "int16_t", np.asarray(p.exp_lut, np.int64)),
            CArray(prefix + "_recip", "int16_t", np.asarray(p.reciprocal_lut, np.int64))]
    for a in luts:
        if a.values.size != 513 or a.values.min() < -32768 or a.values.max() > 32767:
            raise QsimError("SOFTMAX int16: the prepared tables are not 513 int16 entries; codegen cannot emit it.")
    return OpEmit(pos, op.opcode, f"SOFTMAX int16 -> '{out.name}'",
                  tables._params_call("qk_softmax_s16", prefix, f"{prefix}_exp", f"{prefix}_recip", "{in0}", "{out0}"),
                  "qk_softmax16_params", fields, luts)


def _typed(emitter):
    """An int8 emitter of :mod:`tables` bound to its int16 twin kernel (``dtype=np.int16``)."""
    def emit(pos, prepared, g, prefix):
        return emitter(pos, prepared, g, prefix, dtype=np.int16)
    return emit


EMITTERS = {
    "CONV_2D": emit_conv16,
    "DEPTHWISE_CONV_2D": emit_depthwise16,
    "FULLY_CONNECTED": emit_fc16,
    "TRANSPOSE_CONV": emit_transpose_conv16,
    "ADD": _typed(tables.emit_add),
    "SUB": _typed(tables.emit_add),
    "MUL": _typed(tables.emit_mul),
    "MAXIMUM": _typed(tables.emit_minmax),
    "MINIMUM": _typed(tables.emit_minmax),
    "LEAKY_RELU": emit_leaky_relu16,
    "RELU": emit_relu16,
    "RELU6": emit_relu16,
    "QUANTIZE": emit_quantize16,
    "LOGISTIC": emit_sigmoid16,
    "TANH": emit_sigmoid16,
    "PAD": _typed(tables.emit_pad),
    "PADV2": _typed(tables.emit_pad),
    "STRIDED_SLICE": _typed(tables.emit_strided_slice),
    "TRANSPOSE": _typed(tables.emit_transpose),
    "MAX_POOL_2D": _typed(tables.emit_pool),
    "AVERAGE_POOL_2D": _typed(tables.emit_pool),
    "RESHAPE": tables.emit_alias,
    "SQUEEZE": tables.emit_alias,
    "EXPAND_DIMS": tables.emit_alias,
    "CONCATENATION": tables.emit_concat,
    "MEAN": tables.emit_mean,
    "DEQUANTIZE": tables.emit_dequantize,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": _typed(tables.emit_lstm),  # the 16x8 form (qk_lstm_s16)  # int8 or int16 -> float32 (qk_dequantize)
    "SOFTMAX": emit_softmax16,  # qk_mean reads int8 or int16 (qk_mean_params.elem_bytes)
}
# Ops with an int16x8 C kernel (anything else touching int16 is refused by name at generation time).
C_SUPPORTED_INT16 = tuple(EMITTERS)
