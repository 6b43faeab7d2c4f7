"""AVERAGE_POOL_2D, MAX_POOL_2D and MEAN (int8 and int16x8), bit-exact with TFLite's reference kernels.

Pooling (NHWC, reference_integer_ops::AveragePool / MaxPool): each output
element looks at the filter window clipped to the input (padding cells are
skipped, not zero), so ``count`` = number of in-bounds elements.  Average:
``sum > 0 ? (sum + count//2) / count : (sum - count//2) / count`` with C
division (truncation toward zero), i.e. round half away from zero; the raw
int8 values are averaged.  Both clamp to the fused activation range of the
output.  Input and output must share scale and zero point (TFLM refuses other
models, LiteRT silently ignores the output quantization): qsim raises QsimError.

MEAN over constant int32 axes (int8): both references (LiteRT 2.3
BUILTIN_REF and TFLM) run the integer QuantizedMeanOrSum for every axis set,
including keep_dims 4-D means over {1, 2} and equal input/output scales
(established in tests/test_kernels_gemm.py; the older reference_integer_ops::
Mean and "sum / count" branches are not taken).  The 1/count factor is folded
into the multiplier M from in_scale / out_scale:
``s = min(floor(log2(count)), 32, 31 + shift)``, ``M' = (M << s) // count``,
``shift' = shift - s``, then
``out = clamp(MBQM(sum(x) - in_zp * count, M', shift') + out_zp, -128, 127)``.
An empty axis list copies the input.  int16 MEAN (zero points 0) runs the same
QuantizedMeanOrSum in both references with the int16 clamp (tests/test_int16_ops.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fixedpoint as fp
from ..errors import QsimError
from . import batch_always, register
from .conv import check_output_shape, compute_out_size, compute_padding, require_int8
from .elementwise import activation_range, is_int16_op, require_int16_tensor


# --------------------------------------------------------------------------- 2-D pooling

@dataclass
class PoolParams:
    """Prepared AVERAGE_POOL_2D / MAX_POOL_2D (units: elements, NHWC)."""

    filter_h: int
    filter_w: int
    stride_h: int
    stride_w: int
    pad_h: int  # leading (top) padding
    pad_w: int  # leading (left) padding
    out_h: int
    out_w: int
    count: np.ndarray  # int64 [OH, OW]: in-bounds elements per window
    act_min: int
    act_max: int
    dtype: np.dtype = np.dtype(np.int8)  # activations: int8, or int16 (int16x8)


def _axis_counts(out_size: int, stride: int, pad: int, filt: int, in_size: int) -> np.ndarray:
    """In-bounds filter taps along one axis for every output position (TFLite's clipped window)."""
    origin = np.arange(out_size, dtype=np.int64) * stride - pad
    start = np.maximum(0, -origin)
    end = np.minimum(filt, in_size - origin)
    return np.maximum(end - start, 0)


def prepare_pool(op, graph, profile) -> PoolParams:
    x = graph.op_inputs(op)[0]
    out = graph.op_outputs(op)[0]
    o = op.options
    int16 = is_int16_op(op, graph)
    if int16:  # int16x8: the same integer pooling on int16 values, int16 clamp (both references)
        require_int16_tensor(x, "input", op.opcode)
        require_int16_tensor(out, "output", op.opcode)
    else:
        require_int8(x, "input")
        require_int8(out, "output")
    if len(x.shape) != 4:
        raise QsimError(f"{op.opcode} needs a 4-D NHWC input, got shape {list(x.shape)}.")
    if x.quant.zp0 != out.quant.zp0 or np.float32(x.quant.scale0) != np.float32(out.quant.scale0):
        raise QsimError(f"{op.opcode} input '{x.name}' (scale {x.quant.scale0:.6g}, zero point {x.quant.zp0}) and "
                        f"output '{out.name}' (scale {out.quant.scale0:.6g}, zero point {out.quant.zp0}) are quantized "
                        "differently; TFLite's int8 pooling does not rescale (TFLite Micro refuses such a model and "
                        "LiteRT silently ignores the output quantization), so qsim rejects it.")
    n, h, w, c = x.shape
    out_h = compute_out_size(o.padding, h, o.filter_h, o.stride_h)
    out_w = compute_out_size(o.padding, w, o.filter_w, o.stride_w)
    if out_h <= 0 or out_w <= 0:
        raise QsimError(f"the {o.filter_h}x{o.filter_w} pool window does not fit the {h}x{w} input "
                        f"with {o.padding} padding.")
    pad_h = compute_padding(o.stride_h, 1, h, o.filter_h, out_h)
    pad_w = compute_padding(o.stride_w, 1, w, o.filter_w, out_w)
    check_output_shape(out, (n, out_h, out_w, c))
    count = np.outer(_axis_counts(out_h, o.stride_h, pad_h, o.filter_h, h),
                     _axis_counts(out_w, o.stride_w, pad_w, o.filter_w, w))
    if np.any(count == 0):
        raise QsimError(f"{op.opcode}: some pool windows contain no input element (TFLite fails on these).")
    act_min, act_max = activation_range(o.activation, out, op.opcode)
    return PoolParams(o.filter_h, o.filter_w, o.stride_h, o.stride_w, pad_h, pad_w, out_h, out_w,
                      count, act_min, act_max, np.dtype(out.dtype))


def _windows(p: PoolParams, x: np.ndarray, fill: int):
    """Yield one [N, OH, OW, C] int64 view per filter tap; out-of-bounds cells hold ``fill``."""
    n, h, w, c = x.shape
    need_h = (p.out_h - 1) * p.stride_h + p.filter_h
    need_w = (p.out_w - 1) * p.stride_w + p.filter_w
    bottom = max(need_h - h - p.pad_h, 0)
    right = max(need_w - w - p.pad_w, 0)
    xp = np.pad(x.astype(np.int64), ((0, 0), (p.pad_h, bottom), (p.pad_w, right), (0, 0)), constant_values=fill)
    h_span = (p.out_h - 1) * p.stride_h + 1
    w_span = (p.out_w - 1) * p.stride_w + 1
    for i in range(p.filter_h):
        for j in range(p.filter_w):
            yield xp[:, i:i + h_span:p.stride_h, j:j + w_span:p.stride_w, :]


def rounded_average(total: np.ndarray, count) -> np.ndarray:
    """TFLite's integer average: (sum +/- count//2) / count with C truncation (ties away from zero)."""
    total = np.asarray(total, dtype=np.int64)
    count = np.asarray(count, dtype=np.int64)
    half = count // 2
    pos = (total + half) // count
    neg = -((-total + half) // count)
    return np.where(total > 0, pos, neg)


def _window_matrix(out_size: int, stride: int, pad: int, filt: int, in_size: int) -> np.ndarray:
    """0/1 [out_size, in_size]: row o marks the in-bounds inputs of window o along one axis."""
    origin = np.arange(out_size)[:, None] * stride - pad
    i = np.arange(in_size)[None, :]
    return ((i >= origin) & (i < origin + filt)).astype(np.float64)


def window_sums(p: PoolParams, x: np.ndarray, max_abs: int | None = None) -> np.ndarray:
    """Sum of the in-bounds int8 values of every pool window, int64 [N, OH, OW, C].

    Padding cells count 0.  Small windows: one pass per tap.  Large ones (a global pool:
    fh * fw >= OH + OW), as two matmuls with the 0/1 window matrices of the H and W axes
    (separable: sum over rows, then over columns), in float32 when every partial sum is
    provably exact there (|x| <= max_abs, default 128 for int8 and 32768 for int16, at most fh * fw
    terms: max_abs * fh * fw < 2**24), else
    float64 (exact far beyond any pool).
    """
    n, h, w, c = x.shape
    if p.filter_h * p.filter_w < p.out_h + p.out_w:
        total = np.zeros((n, p.out_h, p.out_w, c), dtype=np.int64)
        for tap in _windows(p, x, 0):
            total += tap
        return total
    bound = max_abs if max_abs is not None else (128 if p.dtype == np.int8 else 32768)
    dt = np.float32 if bound * p.filter_h * p.filter_w < (1 << 24) else np.float64
    rows = _window_matrix(p.out_h, p.stride_h, p.pad_h, p.filter_h, h).astype(dt)
    cols = _window_matrix(p.out_w, p.stride_w, p.pad_w, p.filter_w, w).astype(dt)
    by_rows = rows @ x.astype(dt).reshape(n, h, w * c)  # [N, OH, W*C]
    sums = cols @ by_rows.reshape(n * p.out_h, w, c)  # [N*OH, OW, C]
    return sums.astype(np.int64).reshape(n, p.out_h, p.out_w, c)


def average_pool(p: PoolParams, x: np.ndarray, max_abs: int | None = None) -> np.ndarray:
    """Clamped window averages (int64 [N, OH, OW, C]) of integers x with |x| <= ``max_abs``
    (None: 128 for int8, 32768 for int16; the uint8 kernel passes 255 for its raw 0..255 values)."""
    avg = rounded_average(window_sums(p, x, max_abs), p.count[None, :, :, None])
    return np.clip(avg, p.act_min, p.act_max)


def eval_average_pool(p: PoolParams, inputs) -> list[np.ndarray]:
    return [average_pool(p, np.asarray(inputs[0])).astype(p.dtype)]


def eval_max_pool(p: PoolParams, inputs) -> list[np.ndarray]:
    x = np.asarray(inputs[0])
    best = np.full((x.shape[0], p.out_h, p.out_w, x.shape[3]), -(1 << 20), dtype=np.int64)
    for tap in _windows(p, x, -(1 << 20)):
        np.maximum(best, tap, out=best)
    return [np.clip(best, p.act_min, p.act_max).astype(p.dtype)]


# --------------------------------------------------------------------------- MEAN

@dataclass
class MeanParams:
    """Prepared int8 (or int16, zero points 0) MEAN.  ``axes``: sorted unique non-negative reduced axes."""

    axes: tuple[int, ...]
    path: str  # "general" | "copy"
    count: int  # elements averaged per output
    input_zero_point: int
    output_zero_point: int
    multiplier: int  # Q31 from in_scale / out_scale, folded with 1/count
    shift: int
    rounding: str
    dtype: np.dtype = np.dtype(np.int8)  # int8, or int16 (int16x8: the same formula, int16 clamp)


def prepare_mean(op, graph, profile) -> MeanParams:
    ins = graph.op_inputs(op)
    x = ins[0]
    axis_t = ins[1] if len(ins) > 1 else None
    out = graph.op_outputs(op)[0]
    int16 = is_int16_op(op, graph)
    if int16:
        require_int16_tensor(x, "input", op.opcode)
        require_int16_tensor(out, "output", op.opcode)
    else:
        require_int8(x, "input")
        require_int8(out, "output")
    if axis_t is None or not axis_t.is_const:
        raise QsimError("MEAN needs a constant axis tensor (dynamic axes are not simulated).")
    rank = len(x.shape)
    raw = [int(a) for a in np.asarray(axis_t.data).reshape(-1)]
    if any(a < -rank or a >= rank for a in raw):
        raise QsimError(f"MEAN axis {raw} is out of range for a rank-{rank} input.")
    axes = tuple(sorted({a % rank for a in raw}))
    keep = bool(op.options.keep_dims) if op.options is not None else False
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64)) if axes else 1
    expected = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keep else \
        tuple(d for i, d in enumerate(x.shape) if i not in axes)
    if int(np.prod(expected, dtype=np.int64)) != out.size:
        raise QsimError(f"MEAN output '{out.name}' has {out.size} elements; reducing {list(x.shape)} over "
                        f"{list(axes)} gives {list(expected)}.")
    if count == 0:
        raise QsimError("MEAN over an empty axis is not supported.")
    path = "general" if axes else "copy"
    rounding = profile.rounding(op.opcode)
    m0, shift = fp.quantize_multiplier(np.float64(x.quant.scale0) / np.float64(out.quant.scale0),
                                       single_rounding=(rounding == "single"))
    if path == "general":
        m0, shift = fp.fold_divisor_into_multiplier(m0, shift, count)
    return MeanParams(axes, path, count, x.quant.zp0, out.quant.zp0, m0, shift, rounding, np.dtype(x.dtype))


def eval_mean(p: MeanParams, inputs) -> list[np.ndarray]:
    x = np.asarray(inputs[0])
    if p.path == "copy":
        return [x.copy()]
    total = x.astype(np.int64).sum(axis=p.axes)
    shifted = fp.wrap_int32(total - p.input_zero_point * p.count)
    q = fp.multiply_by_quantized_multiplier(shifted, p.multiplier, p.shift, p.rounding) + p.output_zero_point
    info = np.iinfo(p.dtype)
    return [np.clip(q, info.min, info.max).astype(p.dtype)]


def batch_mean(p: MeanParams, op, graph, batched) -> bool:
    """A MEAN that keeps axis 0 reduces each sample on its own; one over axis 0 runs sample by sample."""
    return 0 not in p.axes


register("AVERAGE_POOL_2D", prepare_pool, eval_average_pool, batch=batch_always, int16=True)
register("MAX_POOL_2D", prepare_pool, eval_max_pool, batch=batch_always, int16=True)
register("MEAN", prepare_mean, eval_mean, batch=batch_mean, int16=True)
