"""Per-op C emission data: kernel call, parameter struct and flash tables.

Every number that TFLite computes in Prepare (multipliers, shifts, biases,
offsets, activation ranges, padding, softmax scaling) is read from the
prepared params of qsim's Python kernels (``qsim.interpreter.prepare_graph``);
nothing here re-derives quantization math.  Weights are the model's own int8
constants, emitted byte for byte in TFLite's layouts (see qkernels.h).

Each ``emit_<op>`` returns an :class:`OpEmit` whose ``call`` is a C statement
with ``{in0}``, ``{in1}``, ``{out0}``, ``{scratch}`` placeholders that
:mod:`qsim.codegen.emit` fills with pointers once memory is planned.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qsim import fixedpoint as fp
from qsim import ir
from qsim.errors import QsimError

# Ops the C kernels implement (anything else is reported at generation time).
# Element-wise unary int8 -> int8 ops: the output element is a function of the input
# element's value alone, so generation evaluates qsim's own kernel on all 256 int8
# values and the C code is one table lookup (bit-exact by construction, no run-time math).
UNARY_LUT_OPS = ("LOGISTIC", "TANH", "RELU", "RELU6", "LEAKY_RELU", "HARD_SWISH", "QUANTIZE")
STATE_OPS = ("SVDF", "UNIDIRECTIONAL_SEQUENCE_LSTM")  # ops that read and update variable tensors
C_SUPPORTED = STATE_OPS + ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D",
               "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SOFTMAX", "ADD", "SUB", "MUL", "MEAN", "PAD", "PADV2",
               "CONCATENATION", "MAXIMUM", "MINIMUM", "TRANSPOSE", "STRIDED_SLICE", "DEQUANTIZE") + UNARY_LUT_OPS

C_INT16_FORMS = "SVDF int16 state, LSTM int16 cell state, SOFTMAX int8 -> int16"  # the 16x8 LSTM: int16.py


def int16_without_c_kernel(op: ir.Operator, g: ir.Graph):
    """The first non-constant int16 tensor of ``op`` outside the C kernels' int16 forms
    (C_INT16_FORMS), or None."""
    ins = [g.tensors[t] if t >= 0 else None for t in op.inputs]
    outs = [g.tensors[t] for t in op.outputs]
    for k, t in [(k, t) for k, t in enumerate(ins)] + [(-1, t) for t in outs]:
        if t is None or t.is_const or np.dtype(t.dtype) != np.int16:
            continue
        ok = ((op.opcode == "SVDF" and k == 4) or (op.opcode == "UNIDIRECTIONAL_SEQUENCE_LSTM" and k == 19)
              or (op.opcode == "SOFTMAX" and k == -1 and np.dtype(ins[0].dtype) == np.int8))
        if not ok:
            return t
    return None


# Operand positions a C call reads as int8 data ({inK}) that may be model constants; those become
# flash arrays (None: every operand).  Other constant operands are only read at generation time.
CONST_DATA_INPUTS = {"ADD": None, "SUB": None, "MUL": None, "MAXIMUM": None, "MINIMUM": None,
                     "CONCATENATION": None, "STRIDED_SLICE": (0,), "TRANSPOSE": (0,), "PAD": (0,),
                     "PADV2": (0,)}


# The one place the generator maps element types to C: numpy dtype -> C type of the tensor's
# elements (graph I/O pointers, arena pointers, constant tables).  Element bytes come from numpy.
C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.uint8): "uint8_t", np.dtype(np.int16): "int16_t",
           np.dtype(np.uint16): "uint16_t", np.dtype(np.int32): "int32_t", np.dtype(np.int64): "int64_t",
           np.dtype(np.float32): "float"}  # float: DEQUANTIZE's output only (graph outputs, emit.check_supported)
CTYPE_BYTES = {**{c: d.itemsize for d, c in C_TYPES.items()}, "double": 8}  # double: LiteRT's real scales


def c_type(dtype) -> str:
    """The C element type of a numpy dtype (``int16`` -> ``"int16_t"``); QsimError when C has none here."""
    dt = np.dtype(dtype)
    if dt not in C_TYPES:
        raise QsimError(f"{dt.name} tensors have no C element type in qsim codegen "
                        f"(supported: {', '.join(d.name for d in C_TYPES)}).")
    return C_TYPES[dt]


def c_pointer(expr: str, dtype, const: bool = False) -> str:
    """``expr`` (a byte pointer, e.g. into the int8 arena) as a pointer to ``dtype`` elements;
    int8 pointers stay as they are."""
    ct = c_type(dtype)
    if ct == "int8_t":
        return expr
    q = "const " if const else ""
    return f"(({q}{ct} *)({q}void *)({expr}))"


@dataclass
class CArray:
    """A const table for NAME_weights.c (lives in flash)."""

    name: str
    ctype: str  # a C_TYPES value: "int8_t" | "int16_t" | "uint16_t" | "int32_t" | "int64_t", or "double"
    values: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.values.size) * CTYPE_BYTES[self.ctype]


@dataclass
class OpEmit:
    position: int
    opcode: str
    comment: str
    call: str  # C statement with {in0} {in1} {out0} {scratch} placeholders
    struct_type: str = ""  # qk_*_params, or "" when the call needs none
    struct_fields: dict = field(default_factory=dict)
    arrays: list[CArray] = field(default_factory=list)
    scratch_bytes: int = 0
    macs: int = 0  # qsim.report.op_macs, set by the generator (one MAC definition across qsim)
    prefix: str = ""  # C name prefix of this op's params and tables (set by the generator)
    kernel: str = ""  # the specialized C path chosen at generation time (KERNEL_PATHS), "" = the op's only one


def _i32(values) -> np.ndarray:
    a = np.asarray(values, dtype=np.int64).reshape(-1)
    if a.size and (a.min() < -(1 << 31) or a.max() >= (1 << 31)):
        raise QsimError("a requantization table value does not fit in int32.")
    return a


def _mbqm_shifts(values, rounding: str, opcode: str) -> np.ndarray:
    """Shifts the C's qk_mbqm will use: each must be in qsim.fixedpoint.SHIFT_RANGE[rounding]
    (prepare already refuses others; this keeps an out-of-range value from becoming C UB)."""
    a = np.asarray(values, dtype=np.int64).reshape(-1)
    try:
        fp.check_shift_range(a, rounding)
    except QsimError as e:
        raise QsimError(f"{opcode}: {e}") from None
    return a


def _check_rounding(rq, opcode: str) -> None:
    if rq.rounding not in ("double", "single"):
        raise QsimError(f"{opcode}: the '{rq.rounding}' requantization variant has no C kernel "
                        "(generate with --rounding double or single).")


def _requant_arrays(prefix: str, rq, channels: int, opcode: str) -> list[CArray]:
    """bias / multiplier / shift tables, broadcast to one entry per output channel."""
    def per_channel(a):
        a = np.asarray(a, dtype=np.int64).reshape(-1)
        return np.broadcast_to(a, (channels,)).copy() if a.size == 1 else a
    mult = _i32(per_channel(rq.multiplier))
    if mult.size and mult.min() < 0:  # qkernels.c's fast requantization (qk_mbqm_right2) relies on M0 >= 0
        raise QsimError(f"{opcode}: a negative requantization multiplier ({int(mult.min())}); "
                        "QuantizeMultiplier gives M0 in [0, 2^31) for every valid (non-negative) scale.")
    return [CArray(prefix + "_bias", "int32_t", _i32(per_channel(rq.bias))),
            CArray(prefix + "_mult", "int32_t", mult),
            CArray(prefix + "_shift", "int8_t", _mbqm_shifts(per_channel(rq.shift), rq.rounding, opcode))]


def _weights(prefix: str, t: ir.Tensor) -> CArray:
    if t is None or not t.is_const or np.dtype(t.dtype) != np.int8:
        raise QsimError(f"weights of {prefix} must be a constant int8 tensor.")
    return CArray(prefix + "_w", "int8_t", np.asarray(t.data, dtype=np.int64).reshape(-1))


def offset_weights(values) -> tuple[np.ndarray, int]:
    """GEMM weights as int8 bytes and a filter offset (the C multiplies ``w + filter_offset``):
    ``(values, 0)`` when they fit int8, else ``(values - fo, fo)`` with ``fo = min + 128`` -- a
    uint8 model's centred weights ``w - zp_w`` span at most 256 values (codegen/uint8.py)."""
    v = np.asarray(values, dtype=np.int64)
    if v.size == 0 or (v.min() >= -128 and v.max() <= 127):
        return v, 0
    fo = int(v.min()) + 128
    if v.max() - fo > 127:
        raise QsimError(f"GEMM weights span {int(v.min())}..{int(v.max())}: more than 256 values, no int8 bytes "
                        "with one filter offset hold them.")
    return v - fo, fo


def _gemm_call(fn: str, prefix: str, scratch_type: str | None) -> str:
    scratch = f", ({scratch_type} *){{scratch}}" if scratch_type else ""
    return (f"{fn}(&{prefix}_params, {{in0}}, {prefix}_w, {prefix}_bias, {prefix}_mult, "
            f"{prefix}_shift, {{out0}}{scratch});")


def _gemm_operands(prepared, g, real_ok: bool = False):
    """(op, params, requant, input, weights, output) of a GEMM op whose rounding has a C kernel
    (``real_ok``: also LiteRT's double real-scale requantization, FULLY_CONNECTED's "float")."""
    op, p = prepared.op, prepared.params
    if not (real_ok and p.requant.rounding == "float"):
        _check_rounding(p.requant, op.opcode)
    return (op, p, p.requant, g.tensors[op.inputs[0]], g.tensors[op.inputs[1]],
            g.tensors[op.outputs[0]])


def _conv_window_fields(x: ir.Tensor, p, rq) -> dict:
    """Geometry, offsets and activation range shared by qk_conv_params and qk_dwconv_params,
    from the conv kernels' prepared params (NHWC input ``x``)."""
    n, h, wd, c = x.shape
    return dict(batches=n, in_h=h, in_w=wd, in_c=c, out_h=p.out_h, out_w=p.out_w, out_c=p.out_channels,
                k_h=p.kernel_h, k_w=p.kernel_w, stride_h=p.stride_h, stride_w=p.stride_w,
                dil_h=p.dilation_h, dil_w=p.dilation_w, pad_h=p.pad_h, pad_w=p.pad_w,
                input_offset=-p.input_zero_point, output_offset=rq.output_zero_point,
                act_min=rq.act_min, act_max=rq.act_max)


# Specialized C paths, chosen per layer at generation time (OpEmit.kernel -> C function).
KERNEL_PATHS = {
    "conv_1x1": "qk_conv2d_1x1",  # 1x1, stride 1, no padding: GEMM over the channel vectors
    "conv_im2col": "qk_conv2d",  # any other CONV_2D: int8 patches (zero-point padded)
    "conv_direct": "qk_conv2d_direct",  # the same with in_c % 4 == 0: columns expanded from the image
    "dw_as_conv": "qk_conv2d",  # one input channel (any depth multiplier): a CONV_2D with in_c = 1
    "dw_3x3": "qk_depthwise_conv3x3",  # depth multiplier 1, 3x3, no dilation (any stride)
    "dw_3x3_sat": "qk_depthwise_conv3x3_sat",  # the same, activation range all of int8, every shift <= -2
    "dw_dm1": "qk_depthwise_conv2d_dm1",  # depth multiplier 1, no dilation, other filter sizes
    "dw_channel_major": "qk_depthwise_conv2d",  # few output channels: one dot product per output
    "dw_generic": "qk_depthwise_conv2d",  # depth multiplier > 1 or dilation, many channels
    "fc_folded": "qk_fully_connected_folded",  # symmetric weights: input offset folded into the bias
    "fc_folded_pt": "qk_fully_connected_folded_pt",  # the same, one multiplier and shift for all units
    "fc_offsets": "qk_fully_connected",  # weights with a zero point: TFLite's two-offset form
    "conv_offsets": "qk_conv2d_offsets",  # weights with a filter offset (uint8 models): patch sum * offset
    "dw_offsets": "qk_depthwise_conv2d",  # the same on the channel-major depthwise path (filter_offset set)
    "fc_real": "qk_fully_connected_real",  # LiteRT's FULLY_CONNECTED: two offsets, double real-scale requant
    "lstm": "qk_lstm",  # the 8x8 LSTM, weights [4 * cells][n] (firmware targets)
    "lstm_t": "qk_lstm_t",  # the same, weights as column pairs [n / 2][4 * cells][2] (target "host": lstm_host_form)
}
CONV_TILE = 2  # QK_CONV_TILE in qkernels.h
CONV_COLS = 4  # QK_CONV_COLS in qkernels.h


def conv_scratch_bytes(depth: int, pointwise: bool, in_c: int = 1) -> int:
    """Scratch bytes of qk_conv2d (im2col) / qk_conv2d_1x1 for filter rows of ``depth`` taps over
    ``in_c`` input channels: the larger of the portable path's QK_CONV_TILE int8 patches and the DSP
    path's QK_CONV_COLS columns expanded to int16 (8 bytes per column and group of four taps, the last
    group zero padded), plus (im2col with in_c % 4 != 0) one int8 patch; qk_conv2d_direct (in_c % 4
    == 0) expands its columns straight from the image."""
    dsp = 8 * CONV_COLS * -(-depth // 4) + (0 if pointwise or in_c % 4 == 0 else depth)
    return max(CONV_TILE * depth, dsp)


def fold_input_offset(bias: CArray, rows: np.ndarray, input_offset: int) -> None:
    """CMSIS-NN's "kernel sum": bias[o] + input_offset * sum(rows[o]), wrapped like int32, in place.

    The C then accumulates sum(w * x) over raw int8 inputs; adding this bias with the int32
    wrap the requant stage already applies (qsim.fixedpoint.requantize) gives exactly TFLite's
    acc + bias with acc = sum(w * (x + input_offset)).  ``rows``: the weights, one row per output
    channel, over every tap the kernel multiplies (padded taps hold the input zero point)."""
    sums = np.asarray(rows, dtype=np.int64).reshape(bias.values.size, -1).sum(axis=1)
    bias.values = fp.wrap_int32(np.asarray(bias.values, dtype=np.int64) + int(input_offset) * sums).astype(np.int64)


def emit_conv(pos, prepared, g, prefix) -> OpEmit:
    op, p, rq, x, w, out = _gemm_operands(prepared, g)
    n, _, _, c = x.shape
    fields = _conv_window_fields(x, p, rq)
    pointwise = (p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w) == (1, 1, 1, 1, 0, 0)
    kernel = "conv_1x1" if pointwise else "conv_direct" if c % 4 == 0 else "conv_im2col"
    weights = _weights(prefix, w)
    arrays = [weights] + _requant_arrays(prefix, rq, p.out_channels, op.opcode)
    fold_input_offset(arrays[1], weights.values, fields["input_offset"])  # the centred rows (uint8: w - zp_w)
    weights.values, fields["filter_offset"] = offset_weights(weights.values)
    if fields["filter_offset"]:  # uint8 weights whose centred values leave int8: patch sum * filter offset
        kernel = "conv_offsets"
        return OpEmit(pos, op.opcode, f"CONV_2D {p.kernel_h}x{p.kernel_w} ({kernel}) -> '{out.name}'",
                      _gemm_call(KERNEL_PATHS[kernel], prefix, "int8_t"), "qk_conv_params", fields, arrays,
                      scratch_bytes=p.kernel_h * p.kernel_w * c, kernel=kernel)
    return OpEmit(pos, op.opcode, f"CONV_2D {p.kernel_h}x{p.kernel_w} ({kernel}) -> '{out.name}'",
                  _gemm_call(KERNEL_PATHS[kernel], prefix, "int8_t"), "qk_conv_params", fields, arrays,
                  scratch_bytes=conv_scratch_bytes(c if pointwise else p.kernel_h * p.kernel_w * c, pointwise, c),
                  kernel=kernel)


def emit_depthwise(pos, prepared, g, prefix) -> OpEmit:
    op, p, rq, x, w, out = _gemm_operands(prepared, g)
    n, _, _, c = x.shape
    fields = _conv_window_fields(x, p, rq)
    weights = _weights(prefix, w)
    arrays = [weights] + _requant_arrays(prefix, rq, p.out_channels, op.opcode)
    if offset_weights(weights.values)[1]:
        # uint8 weights whose centred values leave int8: the channel-major path (filter [out_c][kh][kw],
        # bias + input_offset * sum of the centred row), weights stored w - fo, plus fo * (window sum)
        kernel = "dw_offsets"
        weights.values = np.ascontiguousarray(weights.values.reshape(-1, p.out_channels).T).reshape(-1)
        fold_input_offset(arrays[1], weights.values, fields["input_offset"])
        weights.values, filter_offset = offset_weights(weights.values)
        fields.update(depth_multiplier=p.depth_multiplier, channel_major=1, filter_offset=filter_offset)
        return OpEmit(pos, op.opcode, f"DEPTHWISE_CONV_2D {p.kernel_h}x{p.kernel_w} x{p.depth_multiplier} "
                      f"({kernel}) -> '{out.name}'", _gemm_call(KERNEL_PATHS[kernel], prefix, "int32_t"),
                      "qk_dwconv_params", fields, arrays, scratch_bytes=4 * p.out_channels + p.kernel_h * p.kernel_w * c,
                      kernel=kernel)
    if c == 1:
        # One input channel: output channel m is sum_taps w[m][tap] * x[tap], a CONV_2D with one input
        # channel and out_c = depth_multiplier filters [out_c][kh][kw][1] (the filter transposed), run
        # by the conv GEMM path (zero-point padded patches, input offset folded into the bias: TFLM's
        # skipped taps contribute nothing either way).
        kernel = "dw_as_conv"
        weights.values = np.ascontiguousarray(weights.values.reshape(-1, p.out_channels).T).reshape(-1)
        fold_input_offset(arrays[1], weights.values, fields["input_offset"])
        return OpEmit(pos, op.opcode, f"DEPTHWISE_CONV_2D {p.kernel_h}x{p.kernel_w} x{p.depth_multiplier} "
                      f"({kernel}) -> '{out.name}'", _gemm_call(KERNEL_PATHS[kernel], prefix, "int8_t"),
                      "qk_conv_params", fields, arrays, scratch_bytes=conv_scratch_bytes(p.kernel_h * p.kernel_w, False),
                      kernel=kernel)
    if p.depth_multiplier == 1 and p.dilation_h == p.dilation_w == 1 and p.out_channels >= 4:
        kernel = "dw_3x3" if (p.kernel_h, p.kernel_w) == (3, 3) else "dw_dm1"
        if kernel == "dw_3x3" and (rq.act_min, rq.act_max) == (-128, 127) and max(arrays[3].values) <= DW_FAST_SHIFT:
            kernel = "dw_3x3_sat"
        weights.values = dw_group_major(weights.values, p.kernel_h * p.kernel_w, p.out_channels)
        scratch = 0
    elif p.out_channels <= DW_FEW_CHANNELS:
        # Few output channels: store the filter [out_c][kh][kw] so each output is one contiguous dot.
        kernel = "dw_channel_major"
        weights.values = np.ascontiguousarray(weights.values.reshape(-1, p.out_channels).T).reshape(-1)
        fold_input_offset(arrays[1], weights.values, fields["input_offset"])
        scratch = 4 * p.out_channels + p.kernel_h * p.kernel_w * c
    else:
        kernel, scratch = "dw_generic", 4 * p.out_channels
    fields.update(depth_multiplier=p.depth_multiplier, channel_major=int(kernel == "dw_channel_major"))
    return OpEmit(pos, op.opcode, f"DEPTHWISE_CONV_2D {p.kernel_h}x{p.kernel_w} x{p.depth_multiplier} ({kernel}) "
                  f"-> '{out.name}'", _gemm_call(KERNEL_PATHS[kernel], prefix, "int32_t"), "qk_dwconv_params",
                  fields, arrays, scratch_bytes=scratch, kernel=kernel)


def unify_dw_3x3(emits: list) -> None:
    """One 3x3 depthwise kernel per image: when some layer needs the general dw_3x3, the layers that
    chose dw_3x3_sat run dw_3x3 too (the same results; linking both copies would cost flash).  In place."""
    if any(e.kernel == "dw_3x3" for e in emits):
        for e in emits:
            if e.kernel == "dw_3x3_sat":
                e.kernel = "dw_3x3"
                e.call = e.call.replace(KERNEL_PATHS["dw_3x3_sat"] + "(", KERNEL_PATHS["dw_3x3"] + "(")
                e.comment = e.comment.replace("(dw_3x3_sat)", "(dw_3x3)")


DW_FAST_SHIFT = -2  # QK_FAST_SHIFT in qkernels.c: dw_3x3_sat requires every shift <= this
DW_FEW_CHANNELS = 8  # depthwise ops with at most this many output channels use the channel-major path


def dw_group_major(values: np.ndarray, taps: int, channels: int) -> np.ndarray:
    """A depthwise filter [taps][channels] (TFLite's [1][kh][kw][c], depth multiplier 1) in the order
    qkernels.c's depth-multiplier-1 paths read it: for each group of four channels its taps of four
    weights ([c // 4][taps][4]: one word per tap, a group's taps contiguous), then the c % 4 remaining
    channels as [taps][c % 4].  A permutation: the same bytes, so the same flash."""
    w = np.asarray(values).reshape(taps, channels)
    c4 = channels - channels % 4
    groups = w[:, :c4].reshape(taps, c4 // 4, 4).transpose(1, 0, 2).reshape(-1)
    return np.concatenate([groups, w[:, c4:].reshape(-1)])


def emit_fully_connected(pos, prepared, g, prefix) -> OpEmit:
    op, p, rq, x, w, out = _gemm_operands(prepared, g, real_ok=True)
    batches = x.size // p.in_units
    # The Python kernel folds the weight zero point into its float weights; the C
    # kernel reads the raw int8 weights, so it gets TFLite's filter_offset = -w_zp.
    w_zp = 0 if w.quant is None or w.quant.per_channel else w.quant.zp0
    weights = _weights(prefix, w)
    weights.values, fo = offset_weights(weights.values)  # fo != 0: a uint8 model's wide centred weights
    w_zp -= fo
    fields = dict(batches=batches, in_units=p.in_units, out_units=p.out_units,
                  input_offset=-p.input_zero_point, filter_offset=-w_zp,
                  output_offset=rq.output_zero_point, act_min=rq.act_min, act_max=rq.act_max)
    if rq.rounding == "float":  # LiteRT BUILTIN_REF (the litert profile): double real scale, std::round
        real = np.broadcast_to(np.asarray(rq.real_scale, np.float64).reshape(-1), (p.out_units,)).copy()
        arrays = [weights, CArray(prefix + "_bias", "int32_t", _i32(np.broadcast_to(
            np.asarray(rq.bias, np.int64).reshape(-1), (p.out_units,)))), CArray(prefix + "_real", "double", real)]
        return OpEmit(pos, op.opcode, f"FULLY_CONNECTED {p.in_units}->{p.out_units} (fc_real) -> '{out.name}'",
                      f"qk_fully_connected_real(&{prefix}_params, {{in0}}, {prefix}_w, {prefix}_bias, "
                      f"{prefix}_real, {{out0}});", "qk_fc_params", fields, arrays, kernel="fc_real")
    arrays = [weights] + _requant_arrays(prefix, rq, p.out_units, op.opcode)
    kernel = "fc_folded" if w_zp == 0 else "fc_offsets"
    if kernel == "fc_folded" and all(np.unique(a.values).size == 1 for a in arrays[2:]):
        kernel = "fc_folded_pt"  # one multiplier and shift for every unit: one table entry each
        for a in arrays[2:]:
            a.values = a.values[:1]
    if kernel != "fc_offsets":
        fold_input_offset(arrays[1], weights.values, fields["input_offset"])
    return OpEmit(pos, op.opcode, f"FULLY_CONNECTED {p.in_units}->{p.out_units} ({kernel}) -> '{out.name}'",
                  _gemm_call(KERNEL_PATHS[kernel], prefix, None), "qk_fc_params", fields, arrays, kernel=kernel)


def _params_call(fn: str, prefix: str, *operands: str) -> str:
    """``fn(&PREFIX_params, operands...);``: the call of a kernel taking this op's parameter struct."""
    return f"{fn}(&{prefix}_params, {', '.join(operands)});"


def _require_int8(op, *tensors: ir.Tensor) -> None:
    """The data-movement and table kernels are int8 only."""
    for t in tensors:
        if np.dtype(t.dtype) != np.int8:
            raise QsimError(f"{op.opcode} on {np.dtype(t.dtype).name} data ('{t.name}') has no C kernel "
                            "(int8 only).")


def _int8_io(prepared, g, dtype=np.int8):
    """(op, params, input 0, output 0) of an op whose C kernel reads and writes ``dtype`` (int8, or
    int16 for the qkernels_int16.c twin: :func:`kernel_fn`) only."""
    op = prepared.op
    x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if np.dtype(dtype) == np.int8:
        _require_int8(op, x, out)
    else:
        for t in (x, out):
            if np.dtype(t.dtype) != np.dtype(dtype):
                raise QsimError(f"{op.opcode} on {np.dtype(t.dtype).name} data ('{t.name}') has no C kernel "
                                f"({np.dtype(dtype).name} only).")
    return op, prepared.params, x, out


def kernel_fn(name: str, dtype=np.int8) -> str:
    """The C kernel for ``dtype`` elements: qkernels.c's ``name`` (int8) or its int16 twin
    ``name_s16`` in qkernels_int16.c (same params struct)."""
    return name if np.dtype(dtype) == np.int8 else f"{name}_s16"


def emit_pool(pos, prepared, g, prefix, dtype=np.int8) -> OpEmit:
    op, p, x, out = _int8_io(prepared, g, dtype)
    n, h, wd, c = x.shape
    fields = dict(batches=n, in_h=h, in_w=wd, channels=c, out_h=p.out_h, out_w=p.out_w,
                  filter_h=p.filter_h, filter_w=p.filter_w, stride_h=p.stride_h, stride_w=p.stride_w,
                  pad_h=p.pad_h, pad_w=p.pad_w, act_min=p.act_min, act_max=p.act_max, tap_offset=0)
    fn = kernel_fn("qk_average_pool2d" if op.opcode == "AVERAGE_POOL_2D" else "qk_max_pool2d", dtype)
    return OpEmit(pos, op.opcode, f"{op.opcode} {p.filter_h}x{p.filter_w} -> '{out.name}'",
                  _params_call(fn, prefix, "{in0}", "{out0}"), "qk_pool_params", fields)


def byte_copy(src: str, dst: str, nbytes: int) -> str:
    """A qk_copy statement over ``nbytes`` bytes between pointers of any element type."""
    return f"qk_copy((const int8_t *){src}, (int8_t *){dst}, {nbytes});"


def emit_alias(pos, prepared, g, prefix) -> OpEmit:
    op = prepared.op
    out = g.tensors[op.outputs[0]]
    return OpEmit(pos, op.opcode, f"{op.opcode} -> '{out.name}'", byte_copy("{in0}", "{out0}", out.nbytes))


def _attr(p, names, opcode):
    """First present attribute among ``names`` of a prepared params object."""
    for n in names:
        if hasattr(p, n):
            return getattr(p, n)
    raise QsimError(f"{opcode}: the Python kernel's prepared params lack '{names[0]}' "
                    f"(have: {', '.join(sorted(vars(p)))}); codegen cannot emit this op.")


def _param_ints(p, opcode: str, *names) -> dict:
    """{field: int} read from prepared params; a name may be a tuple (field, alternative attribute...)."""
    out = {}
    for spec in names:
        spec = (spec,) if isinstance(spec, str) else tuple(spec)
        out[spec[0]] = int(_attr(p, spec, opcode))
    return out


ACT_RANGE = (("act_min", "activation_min"), ("act_max", "activation_max"))


def broadcast_strides(in_shape, out_shape) -> list[int]:
    """Element strides of an input over a 4-D output shape, 0 along broadcast dimensions."""
    in4, out4 = _pad4(in_shape), _pad4(out_shape)
    strides, step = [0] * 4, 1
    for d in range(3, -1, -1):
        strides[d] = 0 if (in4[d] == 1 and out4[d] != 1) else step
        step *= in4[d]
    return strides


def _emit_binary(pos, prepared, g, prefix, fn: str, struct_type: str, fields: dict) -> OpEmit:
    """A broadcasting two-input op: its qk_broadcast_shape (``shape``) plus ``fields``."""
    op = prepared.op
    a, b = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
    out = g.tensors[op.outputs[0]]
    shape = dict(out_dims=_dims4(out.shape, op.opcode), in1_strides=broadcast_strides(a.shape, out.shape),
                 in2_strides=broadcast_strides(b.shape, out.shape))  # qk_broadcast_shape
    return OpEmit(pos, op.opcode, f"{op.opcode} -> '{out.name}'",
                  _params_call(fn, prefix, "{in0}", "{in1}", "{out0}"), struct_type, {"shape": shape, **fields})


def emit_add(pos, prepared, g, prefix, dtype=np.int8) -> OpEmit:
    fields = _param_ints(prepared.params, prepared.op.opcode, "sign", "left_shift",
                         "input1_offset", "input1_multiplier", "input1_shift",
                         "input2_offset", "input2_multiplier", "input2_shift",
                         "output_offset", "output_multiplier", "output_shift", *ACT_RANGE)
    _mbqm_shifts([fields["input1_shift"], fields["input2_shift"], fields["output_shift"]],
                 prepared.params.rounding, prepared.op.opcode)
    return _emit_binary(pos, prepared, g, prefix, kernel_fn("qk_add", dtype), "qk_add_params", fields)


def emit_mul(pos, prepared, g, prefix, dtype=np.int8) -> OpEmit:
    fields = _param_ints(prepared.params, prepared.op.opcode, "input1_offset", "input2_offset",
                         "output_offset", "output_multiplier", "output_shift", *ACT_RANGE)
    _mbqm_shifts([fields["output_shift"]], prepared.params.rounding, prepared.op.opcode)
    return _emit_binary(pos, prepared, g, prefix, kernel_fn("qk_mul", dtype), "qk_mul_params", fields)


def emit_minmax(pos, prepared, g, prefix, dtype=np.int8) -> OpEmit:
    return _emit_binary(pos, prepared, g, prefix, kernel_fn("qk_minmax", dtype), "qk_minmax_params",
                        dict(take_max=int(bool(prepared.params.take_max))))


def emit_transpose(pos, prepared, g, prefix, dtype=np.int8) -> OpEmit:
    op, p, x, out = _int8_io(prepared, g, dtype)
    in_dims = _dims4(x.shape, op.opcode)
    strides = _row_major_strides(in_dims)
    lead = 4 - len(x.shape)
    perm4 = list(range(lead)) + [lead + a for a in p.perm]
    fields = dict(out_dims=[in_dims[a] for a in perm4], in_strides=[strides[a] for a in perm4], in_offset=0)
    return OpEmit(pos, op.opcode, f"TRANSPOSE {list(p.perm)} -> '{out.name}'",
                  _params_call(kernel_fn("qk_gather", dtype), prefix, "{in0}", "{out0}"), "qk_gather_params", fields)


def slice_axes(params) -> list[tuple[int, int, int, int]]:
    """Per effective input axis of a prepared STRIDED_SLICE, (dim, start, step, count).

    Read from the Python kernel's prepare() result (``StridedSliceParams``:
    ``effective_shape`` and the gathered ``indices`` per axis, with masks,
    negative strides, clamping, shrink and new axes already applied); each
    index list must be the arithmetic progression start + step * i, i < count.
    """
    axes = []
    for k, (dim, idx) in enumerate(zip(params.effective_shape, params.indices)):
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        start = int(idx[0]) if idx.size else 0
        step = int(idx[1] - idx[0]) if idx.size > 1 else 1
        if not np.array_equal(idx, start + step * np.arange(idx.size, dtype=np.int64)) \
                or (idx.size and (idx.min() < 0 or idx.max() >= dim)):
            raise QsimError(f"STRIDED_SLICE axis {k}: the prepared indices are not an in-bounds "
                            "arithmetic progression; codegen cannot emit this op.")
        axes.append((int(dim), start, step, int(idx.size)))
    return axes


def emit_strided_slice(pos, prepared, g, prefix, dtype=np.int8) -> OpEmit:
    """STRIDED_SLICE as a 4-D strided gather: axes taking one element fold into the start
    offset (shrunk and new axes included), at most 4 others remain."""
    op, p = prepared.op, prepared.params
    out = g.tensors[op.outputs[0]]
    _int8_io(prepared, g, dtype)
    axes = slice_axes(p)
    in_strides = _row_major_strides(p.effective_shape)
    offset = sum(start * st for (_, start, _, _), st in zip(axes, in_strides))
    loops = [(count, step * st) for (_, _, step, count), st in zip(axes, in_strides) if count != 1]
    if len(loops) > 4:
        raise QsimError(f"STRIDED_SLICE taking more than one element along {len(loops)} axes has no C kernel "
                        "(at most 4).")
    loops = [(1, 0)] * (4 - len(loops)) + loops
    if int(np.prod([c for c, _ in loops], dtype=np.int64)) != out.size:
        raise QsimError(f"STRIDED_SLICE: the prepared slice has {out.size} elements in '{out.name}' but "
                        "the gather would copy a different number; codegen cannot emit this op.")
    fields = dict(out_dims=[c for c, _ in loops], in_strides=[s for _, s in loops], in_offset=offset)
    desc = ", ".join(f"{start}:{step}x{count}" for _, start, step, count in axes)
    return OpEmit(pos, op.opcode, f"STRIDED_SLICE [{desc}] -> '{out.name}'",
                  _params_call(kernel_fn("qk_gather", dtype), prefix, "{in0}", "{out0}"), "qk_gather_params", fields)


def emit_softmax(pos, prepared, g, prefix) -> OpEmit:
    """int8 -> int8, or int8 -> int16 (qk_softmax_s8_s16: the same algorithm, 16-bit output)."""
    op = prepared.op
    out = g.tensors[op.outputs[0]]
    s16 = np.dtype(out.dtype) == np.int16
    if s16:
        _require_int8(op, g.tensors[op.inputs[0]])
        x, p = g.tensors[op.inputs[0]], prepared.params
    else:
        op, p, x, out = _int8_io(prepared, g)
    depth = int(x.shape[-1]) if x.shape else 1
    fields = dict(outer=x.size // max(depth, 1), depth=depth,
                  **_param_ints(p, op.opcode, "input_multiplier", "input_left_shift", "diff_min"))
    _mbqm_shifts([fields["input_left_shift"]], p.rounding, op.opcode)
    fn, dst = ("qk_softmax_s8_s16", c_pointer("{out0}", np.int16)) if s16 else ("qk_softmax", "{out0}")
    return OpEmit(pos, op.opcode, f"SOFTMAX{' (int16 output)' if s16 else ''} -> '{out.name}'",
                  _params_call(fn, prefix, "{in0}", dst), "qk_softmax_params", fields)


def emit_svdf(pos, prepared, g, prefix) -> OpEmit:
    """SVDF (qk_svdf): TFLite Micro's memory (shift first), int8 or int16 state in NAME_state
    ({at4}); the input and state zero points folded into per-filter int32 biases here."""
    op, p = prepared.op, prepared.params
    _check_rounding(p, op.opcode)
    if not p.shift_first:
        raise QsimError("SVDF: only TFLite Micro's state memory (shift first) has a C kernel.")
    x, wf, wt = (g.tensors[op.inputs[k]] for k in range(3))
    out = g.tensors[op.outputs[0]]
    filters = int(wt.shape[0])
    wf_rows = np.asarray(wf.data, np.int64).reshape(filters, -1)
    wt_rows = np.asarray(wt.data, np.int64).reshape(filters, -1)
    shifts = _mbqm_shifts([p.s1, p.s2], p.rounding, op.opcode)
    fields = dict(batches=int(x.shape[0]), n_in=int(x.shape[1]), filters=filters, memory=p.memory, rank=p.rank,
                  units=p.units, m1=int(_i32([p.m1])[0]), s1=int(shifts[0]), m2=int(_i32([p.m2])[0]),
                  s2=int(shifts[1]), state_min=p.state_min, state_max=p.state_max, state_zp=p.state_zero_point,
                  output_offset=p.output_zero_point, zp_after_clamp=int(p.zero_point_after_clamp),
                  state_bits=p.state_bits)
    arrays = [CArray(prefix + "_wf", "int8_t", wf_rows.reshape(-1)),
              CArray(prefix + "_fb", "int32_t", _i32(-p.input_zero_point * wf_rows.sum(axis=1))),
              CArray(prefix + "_wt", c_type(p.state_dtype), wt_rows.reshape(-1)),
              CArray(prefix + "_tb", "int32_t", fp.wrap_int32(-p.state_zero_point * wt_rows.sum(axis=1))),
              CArray(prefix + "_bias", "int32_t", _i32(p.bias))]
    call = (f"qk_svdf(&{prefix}_params, {{in0}}, {prefix}_wf, {prefix}_fb, {prefix}_wt, {prefix}_tb, "
            f"{prefix}_bias, (void *)({{at4}}), {{out0}}, (int32_t *){{scratch}});")
    return OpEmit(pos, op.opcode, f"SVDF rank {p.rank}, memory {p.memory}, {np.dtype(p.state_dtype).name} state "
                  f"-> '{out.name}'", call, "qk_svdf_params", fields, arrays, scratch_bytes=4 * filters)


def emit_lstm(pos, prepared, g, prefix, dtype=np.int8) -> OpEmit:
    """UNIDIRECTIONAL_SEQUENCE_LSTM, TFLite Micro's integer 8x8->16 form (qk_lstm; ``dtype`` int8) or
    16x8 form (qk_lstm_s16; ``dtype`` int16: int16 activations, int64 biases and FC accumulators, the
    int64 requantization): the prepared constants (qsim.kernels.lstm.LSTMConsts) as tables, hidden
    ({at18}) and cell ({at19}) state in NAME_state, the sigmoid table from qsim.fixedpoint.SIGMOID_TABLE_UINT16."""
    op, p = prepared.op, prepared.params
    s16 = np.dtype(dtype) == np.int16
    if p.variant != "tflm" or p.int16 != s16 or p.consts is None:
        raise QsimError("UNIDIRECTIONAL_SEQUENCE_LSTM: only TFLite Micro's integer forms (8x8->16 and 16x8) have a C "
                        "kernel.")
    k = p.consts
    s = p.n_cell
    x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    steps, batches = (x.shape[0], x.shape[1]) if p.time_major else (x.shape[1], x.shape[0])
    per_gate = lambda a: [int(v) for v in np.asarray(a, np.int64)[::s]]  # noqa: E731 (one value per gate)
    _check_rounding(k, op.opcode)
    _mbqm_shifts([k.input_mul[1], k.forget_mul[1], k.hidden_mul[1]], k.rounding, op.opcode)
    if s16:  # the FCs: int64 MultiplyByQuantizedMultiplier (qk_mbqm64's shift range)
        from .int16 import _shifts64
        _shifts64([*k.shift_x, *k.shift_h], op.opcode)
    else:
        _mbqm_shifts([*k.shift_x, *k.shift_h], k.rounding, op.opcode)
    fields = dict(batches=int(batches), steps=int(steps), n_in=int(x.shape[2]), cells=s,
                  time_major=int(p.time_major), cell_gate_sigmoid=int(k.activation == "SIGMOID"),
                  mult_x=per_gate(_i32(k.mult_x)), shift_x=per_gate(k.shift_x), mult_h=per_gate(_i32(k.mult_h)),
                  shift_h=per_gate(k.shift_h), input_mul=k.input_mul[0], input_shift=k.input_mul[1],
                  forget_mul=k.forget_mul[0], forget_shift=k.forget_mul[1], hidden_mul=k.hidden_mul[0],
                  hidden_shift=k.hidden_mul[1], hidden_zp=k.hidden_zp, cell_min=p.cell_lo, cell_max=p.cell_hi,
                  cell_tanh_multiplier=k.cell_tanh_input[0], cell_tanh_left_shift=k.cell_tanh_input[1])
    bias_type, bias = ("int64_t", lambda a: np.asarray(a, np.int64)) if s16 else ("int32_t", _i32)
    arrays = [CArray(prefix + "_wx", "int8_t", np.asarray(p.w_x, np.float64).T.astype(np.int64).reshape(-1)),
              CArray(prefix + "_wh", "int8_t", np.asarray(p.w_h, np.int64).T.reshape(-1)),
              CArray(prefix + "_bx", bias_type, bias(k.bias_x)),
              CArray(prefix + "_bh", bias_type, bias(k.bias_h)),
              CArray(prefix + "_sigmoid", "uint16_t", np.asarray(fp.SIGMOID_TABLE_UINT16, np.int64))]
    fn, hidden = ("qk_lstm_s16", c_pointer("{at18}", np.int16)) if s16 else (KERNEL_PATHS["lstm"], "{at18}")
    call = (f"{fn}(&{prefix}_params, {{in0}}, {prefix}_wx, {prefix}_wh, {prefix}_bx, {prefix}_bh, "
            f"{prefix}_sigmoid, {hidden}, {c_pointer('{at19}', np.int16)}, {{out0}}, (int32_t *){{scratch}});")
    return OpEmit(pos, op.opcode, f"UNIDIRECTIONAL_SEQUENCE_LSTM {'16x8 ' if s16 else ''}{s} cells, {steps} steps "
                  f"-> '{out.name}'", call, "qk_lstm_params", fields, arrays, scratch_bytes=16 * s,
                  kernel="" if s16 else "lstm")


def lstm_host_form(emits: list) -> None:
    """Target "host": the 8x8 LSTMs run qk_lstm_t, their weight tables [4 * cells][n] stored as column pairs
    [ceil(n / 2)][4 * cells][2] (a zero column pads an odd n; qk_gemv_pairs: row-contiguous loops that host
    compilers vectorize without per-row tails, the same integer sums, so the same results), scratch
    8 * cells int32.  In place."""
    for e in emits:
        if e.kernel == "lstm":
            s = e.struct_fields["cells"]
            for a, n in ((e.arrays[0], e.struct_fields["n_in"]), (e.arrays[1], s)):
                w = np.zeros((4 * s, n + n % 2), np.int64)
                w[:, :n] = a.values.reshape(4 * s, n)
                a.values = w.reshape(4 * s, -1, 2).transpose(1, 0, 2).reshape(-1)
            e.kernel, e.scratch_bytes = "lstm_t", 32 * s
            e.call = e.call.replace(KERNEL_PATHS["lstm"] + "(", KERNEL_PATHS["lstm_t"] + "(")


def emit_dequantize(pos, prepared, g, prefix) -> OpEmit:
    """DEQUANTIZE int8 / int16 -> float32 (qk_dequantize, the one float kernel): TFLite's
    float32(double(scale) * (q - zp)).  The double product is exact (a 24-bit float32 scale times
    |q - zp| < 2**17), so one float32 multiply of the two exact float32 operands rounds the same
    exact product once: the same bits.  The scale is the prepared float32 value as a hex literal
    (exact); one scale per tensor (TFLite Micro's first_scale reading of a per-channel tensor)."""
    op, p = prepared.op, prepared.params
    x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    scale = np.asarray(p.scale, np.float64).reshape(-1)
    if scale.size != 1:
        raise QsimError(f"DEQUANTIZE: per-channel input '{x.name}' under a per-channel profile has no C kernel "
                        "(TFLite Micro reads the first scale: generate with --rounding double or single).")
    fields = dict(size=out.size, in_bytes=np.dtype(x.dtype).itemsize,
                  zero_point=int(np.asarray(p.zero_point).reshape(-1)[0]), scale=float(np.float32(scale[0])))
    return OpEmit(pos, op.opcode, f"DEQUANTIZE {np.dtype(x.dtype).name} -> float32 -> '{out.name}'",
                  _params_call("qk_dequantize", prefix, "{in0}", "{out0}"), "qk_dequantize_params", fields)


def emit_quantize_float(pos, prepared, g, prefix) -> OpEmit:
    """QUANTIZE float32 -> int8 / int16 (qk_quantize_float, a float graph input's edge): TFLite's AffineQuantize
    clamp(int32(round_half_away(float32(x) / float32(scale))) + zero_point), the float32 division and the
    x86 int cast of the references (qsim.fixedpoint.quantize_affine, overflow "x86": INT32_MIN for
    |ratio| >= 2**31, inf, NaN; the zero-point add wraps like int32).  One scale (per tensor)."""
    op, p = prepared.op, prepared.params
    x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if p.mode != "float" or p.scale.size != 1:
        raise QsimError(f"QUANTIZE float32 -> '{out.name}': only a per-tensor float QUANTIZE has a C kernel.")
    fields = dict(size=out.size, out_bytes=np.dtype(out.dtype).itemsize, zero_point=int(p.zero_point[0]),
                  out_min=p.out_min, out_max=p.out_max, scale=float(np.float32(p.scale[0])))
    return OpEmit(pos, op.opcode, f"QUANTIZE float32 -> {np.dtype(out.dtype).name} -> '{out.name}'",
                  _params_call("qk_quantize_float", prefix, "{in0}", "{out0}"), "qk_quantize_float_params", fields)


def emit_quantize(pos, prepared, g, prefix) -> OpEmit:
    """int8 QUANTIZE: from float32 (emit_quantize_float), else int8 -> int8 (a 256-entry table)."""
    if np.dtype(g.tensors[prepared.op.inputs[0]].dtype) == np.float32:
        return emit_quantize_float(pos, prepared, g, prefix)
    return emit_unary_lut(pos, prepared, g, prefix)


def _pad4(shape) -> list[int]:
    """A shape of rank <= 4 as 4-D, leading 1s (TFLite's 4-D kernel convention)."""
    return [1] * (4 - len(shape)) + [int(d) for d in shape]


def _dims4(shape, opcode: str) -> list[int]:
    if len(shape) > 4:
        raise QsimError(f"{opcode} on more than 4 dimensions has no C kernel.")
    return _pad4(shape)


def _row_major_strides(shape) -> list[int]:
    """Element strides of a row-major (C order) array of ``shape``."""
    return [int(np.prod(shape[k + 1:], dtype=np.int64)) for k in range(len(shape))]


def emit_mean(pos, prepared, g, prefix) -> OpEmit:
    op, p = prepared.op, prepared.params
    x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if p.path == "copy":
        return OpEmit(pos, op.opcode, f"MEAN (no axes: copy) -> '{out.name}'",
                      byte_copy("{in0}", "{out0}", out.nbytes))
    in_dims = _dims4(x.shape, op.opcode)
    reduce = [0] * (4 - len(x.shape)) + [1 if a in p.axes else 0 for a in range(len(x.shape))]
    fields = dict(in_dims=in_dims, reduce=reduce, out_size=out.size, count=p.count,
                  input_zero_point=p.input_zero_point, output_zero_point=p.output_zero_point,
                  multiplier=int(_i32([p.multiplier])[0]),
                  shift=int(_mbqm_shifts([p.shift], p.rounding, op.opcode)[0]),
                  elem_bytes=np.dtype(out.dtype).itemsize)
    if np.dtype(x.dtype) != np.dtype(out.dtype) or fields["elem_bytes"] not in (1, 2):
        raise QsimError(f"MEAN from {np.dtype(x.dtype).name} to {np.dtype(out.dtype).name} has no C kernel "
                        "(int8 -> int8 and int16 -> int16).")
    return OpEmit(pos, op.opcode, f"MEAN over axes {list(p.axes)} -> '{out.name}'",
                  _params_call("qk_mean", prefix, "{in0}", "{out0}", "(int32_t *){scratch}"), "qk_mean_params",
                  fields, scratch_bytes=4 * out.size)


def emit_pad(pos, prepared, g, prefix, dtype=np.int8) -> OpEmit:
    op, p, x, out = _int8_io(prepared, g, dtype)
    lead = 4 - len(x.shape)
    fields = dict(in_dims=_dims4(x.shape, op.opcode), out_dims=_dims4(out.shape, op.opcode),
                  before=[0] * lead + [int(v) for v in np.asarray(p.pads)[:, 0]], value=int(p.value))
    return OpEmit(pos, op.opcode, f"{op.opcode} -> '{out.name}'",
                  _params_call(kernel_fn("qk_pad", dtype), prefix, "{in0}", "{out0}"), "qk_pad_params", fields)


def emit_concat(pos, prepared, g, prefix) -> OpEmit:
    op, p = prepared.op, prepared.params
    out = g.tensors[op.outputs[0]]
    c_type(out.dtype)
    esize = np.dtype(out.dtype).itemsize  # a byte copy: any element type (inputs share the output's)
    outer = int(np.prod(out.shape[:p.axis], dtype=np.int64))
    out_inner = esize * int(np.prod(out.shape[p.axis:], dtype=np.int64))
    calls, offset = [], 0
    for k, t in enumerate(i for i in op.inputs if i >= 0):
        if np.dtype(g.tensors[t].dtype) != np.dtype(out.dtype):
            raise QsimError(f"CONCATENATION: input '{g.tensors[t].name}' is {np.dtype(g.tensors[t].dtype).name} "
                            f"and the output {np.dtype(out.dtype).name}; codegen needs one element type.")
        inner = esize * int(np.prod(g.tensors[t].shape[p.axis:], dtype=np.int64))
        calls.append(f"qk_concat_part((const int8_t *){{in{k}}}, (int8_t *){{out0}} + {offset}, {outer}, {inner}, "
                     f"{out_inner});")
        offset += inner
    return OpEmit(pos, op.opcode, f"CONCATENATION axis {p.axis} -> '{out.name}'", "\n    ".join(calls))


def unary_table(prepared, g) -> np.ndarray:
    """int64[256]: the op's output for int8 input value i - 128, from the Python kernel's eval."""
    op = prepared.op
    x = g.tensors[op.inputs[0]]
    values = np.arange(-128, 128, dtype=np.int64)
    n = x.size
    table = np.empty(256, dtype=np.int64)
    for start in range(0, 256, n):
        chunk = values[start:start + n]
        arr = np.resize(chunk, n).astype(np.int8).reshape(x.shape)
        out = np.asarray(prepared.kernel.eval(prepared.params, [arr])[0]).reshape(-1)
        table[start:start + chunk.size] = out[:chunk.size]
    return table


def emit_unary_lut(pos, prepared, g, prefix) -> OpEmit:
    op, _, x, out = _int8_io(prepared, g)
    if x.size != out.size:
        raise QsimError(f"{op.opcode}: input and output sizes differ.")
    return OpEmit(pos, op.opcode, f"{op.opcode} (256-entry table) -> '{out.name}'",
                  f"qk_lut({prefix}_lut, {{in0}}, {{out0}}, {out.size});",
                  arrays=[CArray(prefix + "_lut", "int8_t", unary_table(prepared, g))])


EMITTERS = {
    "CONV_2D": emit_conv,
    "DEPTHWISE_CONV_2D": emit_depthwise,
    "FULLY_CONNECTED": emit_fully_connected,
    "AVERAGE_POOL_2D": emit_pool,
    "MAX_POOL_2D": emit_pool,
    "RESHAPE": emit_alias,
    "SQUEEZE": emit_alias,
    "EXPAND_DIMS": emit_alias,
    "ADD": emit_add,
    "SUB": emit_add,
    "MUL": emit_mul,
    "SOFTMAX": emit_softmax,
    "SVDF": emit_svdf,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": emit_lstm,
    "DEQUANTIZE": emit_dequantize,
    "MEAN": emit_mean,
    "PAD": emit_pad,
    "PADV2": emit_pad,
    "CONCATENATION": emit_concat,
    "MAXIMUM": emit_minmax,
    "MINIMUM": emit_minmax,
    "TRANSPOSE": emit_transpose,
    "STRIDED_SLICE": emit_strided_slice,
    **{opc: emit_unary_lut for opc in UNARY_LUT_OPS},
    "QUANTIZE": emit_quantize,
}


# ------------------------------------------------------------------ in-place overlap

def _delta(write_end: np.ndarray, read_start_after: np.ndarray) -> int:
    """Smallest d >= 0 with write_end[p] - d <= read_start_after[p] for every step p (bytes)."""
    if write_end.size == 0:
        return 0
    return int(max(0, np.max(write_end - read_start_after)))


def _suffix_min(a: np.ndarray) -> np.ndarray:
    return np.minimum.accumulate(a[::-1])[::-1]


def _window_delta(in_shape, out_shape, stride_h, stride_w, pad_h, pad_w, same_step: bool) -> int:
    """Overlap delta of a sliding-window kernel that steps over output pixels in row-major order.

    Each output pixel p is one step; it writes out_c bytes at [p*out_c, (p+1)*out_c)
    relative to the output base.  The lowest input byte any step >= q reads is
    bounded below by its window's clamped top-left corner.  ``same_step``: the
    kernel writes part of a step's output before that step's reads are done
    (pooling loops channels outermost), so writes must also spare the current
    step's reads.
    """
    _, in_h, in_w, in_c = in_shape
    _, out_h, out_w, out_c = out_shape
    oy, ox = np.meshgrid(np.arange(out_h), np.arange(out_w), indexing="ij")
    iy = np.maximum(oy.reshape(-1) * stride_h - pad_h, 0)
    ix = np.maximum(ox.reshape(-1) * stride_w - pad_w, 0)
    low = _suffix_min((iy * in_w + ix) * in_c)
    write_end = (np.arange(low.size) + 1) * out_c
    if same_step:
        return _delta(write_end, low)
    return _delta(write_end[:-1], low[1:])


def overlap_delta(prepared, g) -> list[tuple[int, int]]:
    """[(input tensor, delta)] this op's C kernel may run in place over (empty: none).

    Valid because every kernel here finishes a step's reads before writing that
    step's output (conv: per tile of output pixels; depthwise: per output pixel;
    softmax: per row; ADD/SUB/MUL: per element).  FULLY_CONNECTED writes outputs
    while still reading its input row, so it never runs in place.  (conv_offsets, uint8 models:
    per output pixel, its patch is read before its outputs are written.)
    """
    op, p = prepared.op, prepared.params
    x = g.tensors[op.inputs[0]] if op.inputs and op.inputs[0] >= 0 else None
    out = g.tensors[op.outputs[0]]
    if x is None or x.is_const or np.dtype(out.dtype) != np.int8 or np.dtype(x.dtype) != np.int8:
        return []  # int16 kernels (qkernels_int16.c) never run in place
    if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(x.shape) == 4 and x.shape[0] == 1:
        return [(op.inputs[0], _window_delta(x.shape, out.shape, p.stride_h, p.stride_w, p.pad_h, p.pad_w,
                                             False))]
    if op.opcode in ("AVERAGE_POOL_2D", "MAX_POOL_2D") and len(x.shape) == 4 and x.shape[0] == 1:
        return [(op.inputs[0], _window_delta(x.shape, out.shape, p.stride_h, p.stride_w, p.pad_h, p.pad_w,
                                             True))]
    if op.opcode == "SOFTMAX" or op.opcode in UNARY_LUT_OPS:
        return [(op.inputs[0], 0)]
    if op.opcode in ("ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM"):
        return [(t, 0) for t in op.inputs[:2]
                if t >= 0 and not g.tensors[t].is_const and tuple(g.tensors[t].shape) == tuple(out.shape)]
    return []
