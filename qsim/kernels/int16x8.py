"""int16x8 GEMM kernels: int16 activations (zero point 0), int8 weights, int64 (or int32) bias --
CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED -- and TRANSPOSE_CONV (int16x8 and int8), which has
no int8 module of its own.

CONV_2D (reference_integer_ops::ConvPerChannel, the int16 overload, in LiteRT and TFLM alike):

    acc[n, oy, ox, oc] = sum over in-bounds taps of x * w          (int64; no input offset)
    out = clamp(MBQM64(acc + bias[oc], M0[oc], shift[oc]), act_min, act_max)     (int16)

with the per-channel (M0, shift) of ``double(s_in) * double(s_w[oc]) / double(s_out)``
(PopulateConvolutionQuantizationParams, as for int8) and MBQM64
:func:`qsim.fixedpoint.multiply_by_quantized_multiplier_int64` (the Q15-reduced multiplier).

The int8 kernels keep their own modules and speed paths; this module registers a thin
dispatcher per opcode: an op whose first input is int16 gets the int16x8 ``prepare``/``eval``
below, every other op the int8 kernel's own functions, unchanged.

Speed: the accumulators are an im2col matmul in float64, exact because every partial sum
is bounded by 32768 * sum|w| of an output channel, checked < 2**53 at prepare.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fixedpoint as fp
from ..errors import QsimError, UndefinedInReferenceError
from . import REGISTRY, Kernel, RequantParams, batch_always, register
from .conv import (ConvParams, bias_values, compute_out_size, compute_padding, conv_geometry, depthwise_geometry,
                   im2col_rows, make_requant, padded_centered, weight_scales)
from .fully_connected import fc_operands, fc_shapes
from .elementwise import INT16_MAX, INT16_MIN, is_int16_op, require_int16_tensor, require_int8_tensor

FLOAT64_EXACT = 1 << 53
INT16_ABS_MAX = 32768


@dataclass
class Conv16Params:
    """Prepared int16x8 CONV_2D: the window geometry and float64 weights [KH*KW*IC, OC] in ``conv``
    (a :class:`~qsim.kernels.conv.ConvParams`, input zero point 0) and its int16 requant tables
    (``conv.requant``: int64 bias, Q31 multiplier, TFLite-sign shift, int16 activation range),
    applied with :func:`qsim.fixedpoint.requantize_int64`."""

    conv: ConvParams


def int16_bias(b, n_channels: int, profile) -> np.ndarray:
    """Constant int64 (or, where the profile's reference reads it correctly, int32) bias as int64
    [n_channels]; zeros without one."""
    if b is None:
        return np.zeros(n_channels, dtype=np.int64)
    if not b.is_const:
        raise QsimError(f"bias '{b.name}' must be a constant tensor.")
    if np.dtype(b.dtype) not in (np.dtype(np.int64), np.dtype(np.int32)):
        raise QsimError(f"bias '{b.name}' is {np.dtype(b.dtype).name}; TFLite's int16x8 kernels take an int64 "
                        "(or int32) bias.")
    if np.dtype(b.dtype) == np.int32 and profile.variant("INT16X8_BIAS", "int64_or_int32") == "int64_only":
        raise UndefinedInReferenceError(f"bias '{b.name}' is int32 in an int16x8 layer; the '{profile.name}' reference (LiteRT) "
                        "reads such a bias as int64 and computes garbage (measured), so qsim refuses it: "
                        "re-export with an int64 bias (TFLite Micro reads int32 correctly: --profile tflm).")
    if b.size != n_channels:
        raise QsimError(f"bias '{b.name}' has {b.size} values for {n_channels} output channels.")
    return np.asarray(b.data, dtype=np.int64).reshape(n_channels)


def int8_weight_scales(w, n_channels: int, axis: int) -> np.ndarray:
    """:func:`~qsim.kernels.conv.weight_scales`, saying what int16x8 requires when it refuses."""
    try:
        return weight_scales(w, n_channels, axis)
    except QsimError as e:
        raise QsimError(f"{e} int16x8 kernels (16-bit activations) take symmetric int8 weights only; TFLite "
                        "defines no int16-weight form.") from None


def float64_exact(w_int: np.ndarray, reduce_axes, what: str) -> None:
    """QsimError unless every partial sum of x * w (|x| <= 32768) is exact in float64."""
    col = np.abs(np.asarray(w_int, dtype=np.int64)).sum(axis=reduce_axes)
    if col.size and INT16_ABS_MAX * int(col.max()) >= FLOAT64_EXACT:
        raise QsimError(f"{what}: an output channel's weights sum to {int(col.max()):,} in magnitude; its "
                        "int16 accumulator could exceed 2**53, beyond what qsim computes exactly.")


def conv16_operands(op, graph):
    """(input, filter, bias or None, output, options) of an int16x8 conv-like op, int16 input/output checked."""
    ins = graph.op_inputs(op)
    b = ins[2] if len(ins) > 2 else None
    out = graph.op_outputs(op)[0]
    require_int16_tensor(ins[0], "input", op.opcode)
    require_int16_tensor(out, "output", op.opcode)
    return ins[0], ins[1], b, out, op.options


def prepare_conv16(op, graph, profile) -> Conv16Params:
    x, w, b, out, o = conv16_operands(op, graph)
    oc, kh, kw, ic, out_h, out_w, pad_h, pad_w = conv_geometry(x, w, out, o)
    scales = int8_weight_scales(w, oc, axis=0)
    float64_exact(w.data, (1, 2, 3), op.opcode)
    wmat = np.asarray(w.data, dtype=np.float64).transpose(1, 2, 3, 0).reshape(kh * kw * ic, oc)
    rq = make_requant(x, scales, out, int16_bias(b, oc, profile), o.activation, profile.rounding(op.opcode),
                      INT16_MIN, INT16_MAX)
    conv = ConvParams(0, o.stride_h, o.stride_w, o.dilation_h, o.dilation_w, pad_h, pad_w,
                      out_h, out_w, kh, kw, np.ascontiguousarray(wmat), oc, 1, rq)
    return Conv16Params(conv)


def accumulate_conv16(p: Conv16Params, inputs) -> np.ndarray:
    """int64 accumulators sum(x * w) [N, OH, OW, OC], without bias."""
    c = p.conv
    x = np.asarray(inputs[0])
    need_h = (c.out_h - 1) * c.stride_h + (c.kernel_h - 1) * c.dilation_h + 1
    need_w = (c.out_w - 1) * c.stride_w + (c.kernel_w - 1) * c.dilation_w + 1
    xs = padded_centered(x, 0, c.pad_h, c.pad_w, need_h, need_w, np.float64)
    acc = im2col_rows(c, xs, 0, c.out_h) @ c.weights
    return acc.reshape(x.shape[0], c.out_h, c.out_w, c.out_channels).astype(np.int64)


def requant16(rq: RequantParams, acc: np.ndarray) -> np.ndarray:
    """int16 outputs of int64 accumulators under ``rq``'s tables (:func:`qsim.fixedpoint.requantize_int64`)."""
    return fp.requantize_int64(acc, rq.bias, rq.multiplier, rq.shift, rq.output_zero_point, rq.act_min,
                               rq.act_max, rq.rounding).astype(np.int16)


def eval_conv16(p: Conv16Params, inputs) -> list[np.ndarray]:
    return [requant16(p.conv.requant, accumulate_conv16(p, inputs))]


# --------------------------------------------------------------------------- DEPTHWISE_CONV_2D

@dataclass
class Depthwise16Params:
    """Prepared int16x8 DEPTHWISE_CONV_2D (reference_integer_ops::DepthwiseConvPerChannel, int16
    overload): output channel ``oc = ic * multiplier + m`` sums ``x[.., ic] * w[0, fy, fx, oc]`` over
    the window (int64), + int64 bias, int64 requantization.  ``conv`` holds the geometry, the float64
    weights [KH*KW, OC] and the requant tables (input zero point 0)."""

    conv: ConvParams


def prepare_depthwise16(op, graph, profile) -> Depthwise16Params:
    x, w, b, out, o = conv16_operands(op, graph)
    kh, kw, oc, mult, out_h, out_w, pad_h, pad_w = depthwise_geometry(x, w, out, o)
    scales = int8_weight_scales(w, oc, axis=3)
    float64_exact(w.data, (0, 1, 2), op.opcode)
    rq = make_requant(x, scales, out, int16_bias(b, oc, profile), o.activation, profile.rounding(op.opcode),
                      INT16_MIN, INT16_MAX)
    wk = np.ascontiguousarray(np.asarray(w.data, np.float64).reshape(kh * kw, oc))
    return Depthwise16Params(ConvParams(0, o.stride_h, o.stride_w, o.dilation_h, o.dilation_w, pad_h, pad_w,
                                        out_h, out_w, kh, kw, wk, oc, mult, rq))


def eval_depthwise16(p: Depthwise16Params, inputs) -> list[np.ndarray]:
    c = p.conv
    x = np.asarray(inputs[0])
    if c.depth_multiplier > 1:
        x = np.repeat(x, c.depth_multiplier, axis=3)  # channel ic * m + k reads input channel ic
    n = x.shape[0]
    need_h = (c.out_h - 1) * c.stride_h + (c.kernel_h - 1) * c.dilation_h + 1
    need_w = (c.out_w - 1) * c.stride_w + (c.kernel_w - 1) * c.dilation_w + 1
    xs = padded_centered(x, 0, c.pad_h, c.pad_w, need_h, need_w, np.float64)
    taps = im2col_rows(c, xs, 0, c.out_h).reshape(-1, c.kernel_h * c.kernel_w, c.out_channels)
    acc = np.einsum("ptc,tc->pc", taps, c.weights).astype(np.int64)
    return [requant16(c.requant, acc.reshape(n, c.out_h, c.out_w, c.out_channels))]


# --------------------------------------------------------------------------- FULLY_CONNECTED

@dataclass
class FC16Params:
    """Prepared int16x8 FULLY_CONNECTED (reference_integer_ops::FullyConnected, int16 overload):
    ``acc[b, o] = sum_i x[b, i] * w[o, i]`` (int64, no offsets), + int64 bias, int64 requantization."""

    in_units: int
    weights_t: np.ndarray  # float64 [in_units, out_units] (exact: see float64_exact)
    requant: RequantParams  # int64 bias, Q31 multipliers per output unit, int16 activation range
    real_scale: np.ndarray | None = None  # profile variant "float_rescale" (LiteRT): double s_in*s_w/s_out


def prepare_fc16(op, graph, profile) -> FC16Params:
    x, w, b, out, o = fc_operands(op, graph)
    require_int16_tensor(x, "input", op.opcode)
    require_int16_tensor(out, "output", op.opcode)
    out_units, in_units = fc_shapes(x, w, out, o)
    scales = int8_weight_scales(w, out_units, axis=0)
    float64_exact(w.data, 1, op.opcode)
    rq = make_requant(x, scales, out, int16_bias(b, out_units, profile), o.activation if o is not None else "NONE",
                      profile.rounding(op.opcode), INT16_MIN, INT16_MAX)
    real = None
    if profile.variant(op.opcode) == "float_rescale":
        real = np.float64(x.quant.scale0) * scales / np.float64(out.quant.scale0)
    return FC16Params(in_units, np.ascontiguousarray(np.asarray(w.data, np.float64).T), rq, real)


def eval_fc16(p: FC16Params, inputs) -> list[np.ndarray]:
    acc = (np.asarray(inputs[0]).reshape(-1, p.in_units).astype(np.float64) @ p.weights_t).astype(np.int64)
    if p.real_scale is not None:
        rq = p.requant
        return [fp.requantize_float_rescale(acc, rq.bias, p.real_scale, rq.output_zero_point, rq.act_min, rq.act_max,
                                            accumulator="int64").astype(np.int16)]
    return [requant16(p.requant, acc)]


# --------------------------------------------------------------------------- TRANSPOSE_CONV

@dataclass
class TransposeConvParams:
    """Prepared TRANSPOSE_CONV, int16x8 or int8 (reference_integer_ops::TransposeConv; units: elements,
    NHWC).  Operands: 0 output_shape (int32 [4], constant or a runtime input that must hold the
    output tensor's shape), 1 filter int8 [OC, KH, KW, IC], 2 input int16 (or int8), 3 bias
    (optional; int64 for int16x8, int32 for int8).

    Each input pixel (iy, ix) scatters ``x[iy, ix, :] @ w[:, fy, fx, :].T`` to output
    (iy * stride_h - pad_h + fy, ix * stride_w - pad_w + fx) when inside the output; the int64
    scratch sums, plus bias, go through :func:`qsim.fixedpoint.requantize_int64`.  int8: the taps
    multiply ``x - input_zero_point``, the scratch is int32 and the requantization the int8 one
    (:func:`qsim.fixedpoint.requantize`, the profile's rounding, output zero point, int8 clamp).  Padding:
    ComputePaddingHeightWidth on the *output* size (the forward conv's input), leading half.
    """

    out_shape: tuple[int, int, int, int]
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    weights: np.ndarray  # float64 [KH, KW, IC, OC] (exact: see float64_exact)
    requant: RequantParams  # int64 bias, per-channel Q31 multipliers, int16 activation range
    shape_is_input: bool  # output_shape is computed at run time: eval checks its value
    input_zero_point: int = 0  # int8 only (int16: 0)
    dtype: np.dtype = np.dtype(np.int16)  # activations: int16 (int16x8) or int8


def prepare_transpose_conv(op, graph, profile) -> TransposeConvParams:
    from ..validate import MAX_SCRATCH_ELEMENTS
    ins = graph.op_inputs(op)
    if len(ins) < 3 or len(op.outputs) != 1 or any(t is None for t in ins[:3]):
        raise QsimError("TRANSPOSE_CONV needs the inputs output_shape, filter and input (bias optional) and one output.")
    shape_t, w, x = ins[0], ins[1], ins[2]
    b = ins[3] if len(ins) > 3 else None
    out = graph.op_outputs(op)[0]
    o = op.options if op.options is not None else None
    if o is None:
        raise QsimError("TRANSPOSE_CONV has no options (padding, strides).")
    int16 = np.dtype(x.dtype) == np.int16
    require = require_int16_tensor if int16 else require_int8_tensor
    require(x, "input", op.opcode)
    require(out, "output", op.opcode)
    if np.dtype(shape_t.dtype) != np.int32 or tuple(shape_t.shape) != (4,):
        raise QsimError(f"TRANSPOSE_CONV: output_shape '{shape_t.name}' must be int32 [4], got "
                        f"{np.dtype(shape_t.dtype).name} {list(shape_t.shape)}.")
    if shape_t.data is not None and tuple(int(v) for v in shape_t.data) != tuple(out.shape):
        raise QsimError(f"TRANSPOSE_CONV: output_shape holds {shape_t.data.tolist()} but the output tensor "
                        f"'{out.name}' has shape {list(out.shape)}.")
    if len(x.shape) != 4 or len(w.shape) != 4 or len(out.shape) != 4:
        raise QsimError("TRANSPOSE_CONV needs 4-D NHWC input/output and a 4-D [out_ch, kh, kw, in_ch] filter.")
    oc, kh, kw, ic = w.shape
    n, oh, ow, out_c = out.shape
    if x.shape[3] != ic or out_c != oc or x.shape[0] != n:
        raise QsimError(f"TRANSPOSE_CONV: input {list(x.shape)}, filter {list(w.shape)} and output {list(out.shape)} "
                        "disagree on batch or channels.")
    if min(o.stride_h, o.stride_w) < 1 or o.padding not in ("SAME", "VALID"):
        raise QsimError(f"TRANSPOSE_CONV: strides {o.stride_h}x{o.stride_w} and padding {o.padding} are not valid.")
    geo_h = compute_out_size(o.padding, oh, kh, o.stride_h)
    geo_w = compute_out_size(o.padding, ow, kw, o.stride_w)
    if (geo_h, geo_w) != tuple(x.shape[1:3]):
        raise QsimError(f"TRANSPOSE_CONV: a {o.padding} {kh}x{kw} conv with strides {o.stride_h}x{o.stride_w} maps "
                        f"the output {oh}x{ow} to {geo_h}x{geo_w}, not to the input's {x.shape[1]}x{x.shape[2]}.")
    pad_h = compute_padding(o.stride_h, 1, oh, kh, geo_h)
    pad_w = compute_padding(o.stride_w, 1, ow, kw, geo_w)
    scratch = n * max((x.shape[1] - 1) * o.stride_h + kh, pad_h + oh) * max((x.shape[2] - 1) * o.stride_w + kw,
                                                                             pad_w + ow) * oc
    if scratch > MAX_SCRATCH_ELEMENTS:
        raise QsimError(f"TRANSPOSE_CONV needs a {scratch:,}-element scratch buffer, more than the "
                        f"{MAX_SCRATCH_ELEMENTS:,} qsim accepts.")
    if int16:
        scales = int8_weight_scales(w, oc, axis=0)
        float64_exact(w.data, (1, 2, 3), op.opcode)
        rq = make_requant(x, scales, out, int16_bias(b, oc, profile), o.activation, profile.rounding(op.opcode),
                          INT16_MIN, INT16_MAX)
    else:
        scales = weight_scales(w, oc, axis=0)
        rq = make_requant(x, scales, out, bias_values(b, oc), o.activation, profile.rounding(op.opcode))
    wt = np.ascontiguousarray(np.asarray(w.data, np.float64).transpose(1, 2, 3, 0))
    return TransposeConvParams(tuple(out.shape), o.stride_h, o.stride_w, pad_h, pad_w, wt, rq, shape_t.data is None,
                               x.quant.zp0, np.dtype(x.dtype))


def accumulate_transpose_conv(p: TransposeConvParams, x: np.ndarray) -> np.ndarray:
    """Scratch sums (no bias) as int64 [N, OH, OW, OC] of an input [N, IH, IW, IC], ``x - zp`` per tap.
    float64 is exact: int16 bounded by float64_exact at prepare; int8 sums stay far below 2**53."""
    kh, kw, _, oc = p.weights.shape
    n, ih, iw, _ = x.shape
    _, oh, ow, _ = p.out_shape
    full_h = max((ih - 1) * p.stride_h + kh, p.pad_h + oh)
    full_w = max((iw - 1) * p.stride_w + kw, p.pad_w + ow)
    scratch = np.zeros((n, full_h, full_w, oc), np.float64)
    xf = x.astype(np.float64)
    xf -= p.input_zero_point
    for fy in range(kh):
        for fx in range(kw):
            scratch[:, fy:fy + (ih - 1) * p.stride_h + 1:p.stride_h,
                    fx:fx + (iw - 1) * p.stride_w + 1:p.stride_w] += xf @ p.weights[fy, fx]
    return scratch[:, p.pad_h:p.pad_h + oh, p.pad_w:p.pad_w + ow].astype(np.int64)


def eval_transpose_conv(p: TransposeConvParams, inputs) -> list[np.ndarray]:
    if p.shape_is_input:
        got = np.asarray(inputs[0]).ravel()
        if got.size != 4 or tuple(int(v) for v in got) != p.out_shape:
            raise QsimError(f"TRANSPOSE_CONV: the output_shape input holds {got.tolist()}; qsim computes the shape "
                            f"the model stores for the output, {list(p.out_shape)} (dynamic shapes are not simulated).")
    acc = accumulate_transpose_conv(p, np.asarray(inputs[2]))
    if p.dtype == np.int16:
        return [requant16(p.requant, acc)]
    # int8: TFLite's int32 scratch (a wrapped total equals wrapped partial sums) and int32 requantization
    return [p.requant.requantize(fp.wrap_int32(acc)).astype(np.int8)]


# --------------------------------------------------------------------------- dispatch

def _dispatching(base: Kernel, prepare16, eval16, params16: type) -> Kernel:
    """``base`` (the int8 kernel) with an int16x8 form: ops whose first input is int16 prepare
    with ``prepare16``; eval dispatches on the params' type.  ``accumulate`` (the int8 GEMM seam
    of the accelerator model and ``qsim vectors``) refuses int16x8 params with a QsimError."""

    def prepare(op, graph, profile):
        return prepare16(op, graph, profile) if is_int16_op(op, graph) else base.prepare(op, graph, profile)

    def eval_(p, inputs):
        return eval16(p, inputs) if type(p) is params16 else base.eval(p, inputs)

    accumulate = None
    if base.accumulate is not None:
        def accumulate(p, inputs):
            if type(p) is params16:
                raise QsimError(f"{base.opcode}: the int8 GEMM seam (accelerator model, qsim vectors) does not "
                                "cover int16x8 layers yet.")
            return base.accumulate(p, inputs)
    def eval_for(p):
        return eval16 if type(p) is params16 else base.bound_eval(p)
    return Kernel(base.opcode, prepare, eval_, accumulate, base.batch, int16=True, eval_for=eval_for)


REGISTRY["CONV_2D"] = _dispatching(REGISTRY["CONV_2D"], prepare_conv16, eval_conv16, Conv16Params)
REGISTRY["DEPTHWISE_CONV_2D"] = _dispatching(REGISTRY["DEPTHWISE_CONV_2D"], prepare_depthwise16, eval_depthwise16,
                                             Depthwise16Params)
REGISTRY["FULLY_CONNECTED"] = _dispatching(REGISTRY["FULLY_CONNECTED"], prepare_fc16, eval_fc16, FC16Params)
# Batches: the scatter treats axis 0 as a batch (a runtime output_shape input cannot be batched).
register("TRANSPOSE_CONV", prepare_transpose_conv, eval_transpose_conv, batch=batch_always, int16=True)
