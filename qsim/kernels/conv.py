"""CONV_2D and DEPTHWISE_CONV_2D, int8, bit-exact with TFLite's reference kernels.

Layouts (TFLite): input/output NHWC; CONV_2D filter [out_ch, kh, kw, in_ch];
DEPTHWISE_CONV_2D filter [1, kh, kw, in_ch * depth_multiplier] where output
channel ``oc = ic * depth_multiplier + m``.  Weights are symmetric int8
(zero point 0), per-tensor or per-output-channel (CONV_2D axis 0, depthwise
axis 3).  Bias is int32 (optional, input index -1).

Accumulation follows reference_integer_ops::ConvPerChannel /
DepthwiseConvPerChannel: ``acc = sum((x - x_zp) * w)`` over in-bounds taps
(padding contributes nothing), then ``requantize(acc + bias)`` per output
channel.  Speed: CONV_2D is im2col (numpy stride tricks) + a BLAS matmul in
floating point.  Every product is an integer of magnitude <= 255 * 128; any
partial sum is bounded by max|x - zp| * sum|w| of the output channel, so the
matmul runs in float32 when that bound is below 2**24 and in float64 (exact
below 2**53) otherwise, exact whatever order BLAS adds in; the result
converts to int64 without rounding.  Depthwise vectorizes over the kernel taps (or one einsum,
or a block-diagonal GEMM for few channels: see _depthwise_rows).  Large layers
are evaluated in blocks of output rows (see eval_in_chunks) so the passes stay in cache; a 1x1
stride-1 CONV_2D runs on the batch as one pixel matrix in blocks across samples, with the
requant's affine map inside a float64 GEMM when the dot products are short (eval_pointwise,
whose docstring has the exactness argument).

Input offset folded into the bias (CMSIS-NN's kernel sum), as in fully_connected.py: with
the input padded by its zero point instead of centred and zero-padded, every window holds
x_pad - zp = the centred, zero-padded values, so sum(x_pad * w) == acc + zp * colsum where
colsum[c] = sum of all of channel c's weights.  eval multiplies the uncentred input and
requantizes with bias - zp * colsum (:func:`folded_requant`: a fixedpoint plan proven for
|x_pad| <= 128, i.e. :func:`accumulator_bound` with zero point 0, which is at most the
centred bound, so the weights' float dtype stays exact): the same integers, one pass fewer.
``accumulate`` (the seam) keeps the centred form.

The helpers here (padding, tensor checks, requant tables) are shared with
fully_connected.py and pooling.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import fixedpoint as fp
from ..errors import QsimError
from . import RequantParams, batch_always, register


# --------------------------------------------------------------------------- shared helpers

def compute_out_size(padding: str, size: int, filter_size: int, stride: int, dilation: int = 1) -> int:
    """TFLite ComputeOutSize: SAME -> ceil(size / stride); VALID -> ceil((size - eff + 1) / stride)."""
    eff = (filter_size - 1) * dilation + 1
    if padding == "SAME":
        return (size + stride - 1) // stride
    if padding == "VALID":
        return (size + stride - eff) // stride
    raise QsimError(f"unsupported padding {padding!r} (TFLite has SAME and VALID)")


def compute_padding(stride: int, dilation: int, in_size: int, filter_size: int, out_size: int) -> int:
    """TFLite ComputePaddingWithOffset: leading (top/left) padding in elements.

    total = (out - 1) * stride + effective_filter - in; the reference kernels
    use total // 2 at the start (the odd element, if any, goes at the end).
    """
    eff = (filter_size - 1) * dilation + 1
    total = (out_size - 1) * stride + eff - in_size
    return max(total // 2, 0)


def require_int8(t, role: str) -> None:
    """Raise a QsimError unless tensor ``t`` is int8 with per-tensor quantization."""
    if t is None:
        raise QsimError(f"the {role} tensor is missing.")
    if np.dtype(t.dtype) != np.int8:
        raise QsimError(f"{role} '{t.name}' is {np.dtype(t.dtype).name}; qsim supports int8 activations only "
                        "(int16x8 and float/hybrid kernels are not simulated).")
    if t.quant is None or t.quant.scale.size == 0:
        raise QsimError(f"{role} '{t.name}' has no quantization parameters; int8 kernels need a scale and zero point.")
    if t.quant.per_channel:
        raise QsimError(f"{role} '{t.name}' is quantized per channel; TFLite requires per-tensor activations.")


def weight_scales(w, n_channels: int, axis: int, role: str = "filter",
                  per_tensor_zero_point_ok: bool = False) -> np.ndarray:
    """Per-output-channel weight scales (float64, length ``n_channels``), validating the layout.

    Weights must be constant int8, per-tensor or per-channel along ``axis``
    (the output-channel dimension), with zero point 0 -- except per-tensor
    weights where the kernel subtracts a filter offset
    (``per_tensor_zero_point_ok``, FULLY_CONNECTED).
    """
    if w is None or not w.is_const:
        raise QsimError(f"the {role} must be a constant tensor (qsim does not simulate runtime weights).")
    if np.dtype(w.dtype) != np.int8:
        raise QsimError(f"{role} '{w.name}' is {np.dtype(w.dtype).name}; only int8 weights are supported "
                        "(hybrid float/int8, int4 and int16 weights are not simulated).")
    q = w.quant
    if q is None or q.scale.size == 0:
        raise QsimError(f"{role} '{w.name}' has no quantization parameters.")
    if np.any(q.zero_point != 0) and (q.per_channel or not per_tensor_zero_point_ok):
        raise QsimError(f"{role} '{w.name}' has non-zero zero points {q.zero_point[:4].tolist()}; "
                        "TFLite's int8 kernels require symmetric weights (zero point 0).")
    if q.per_channel:
        if q.axis != axis or q.scale.size != n_channels:
            raise QsimError(f"{role} '{w.name}' is per-channel along axis {q.axis} with {q.scale.size} scales; "
                            f"expected {n_channels} scales along axis {axis} (the output channels).")
        return q.scale.astype(np.float64)
    return np.full(n_channels, q.scale0, dtype=np.float64)


def bias_values(b, n_channels: int) -> np.ndarray:
    """Constant int32 bias as int64 [n_channels]; zeros when the op has no bias."""
    if b is None:
        return np.zeros(n_channels, dtype=np.int64)
    if not b.is_const:
        raise QsimError(f"bias '{b.name}' must be a constant tensor.")
    if np.dtype(b.dtype) != np.int32:
        raise QsimError(f"bias '{b.name}' is {np.dtype(b.dtype).name}; int8 kernels need an int32 bias.")
    if b.size != n_channels:
        raise QsimError(f"bias '{b.name}' has {b.size} values for {n_channels} output channels.")
    return np.asarray(b.data, dtype=np.int64).reshape(n_channels)


def make_requant(input_t, w_scales: np.ndarray, output_t, bias: np.ndarray, activation: str,
                 rounding: str, qmin: int = -128, qmax: int = 127) -> RequantParams:
    """Per-channel RequantParams as PopulateConvolutionQuantizationParams computes them.

    effective_scale[c] = double(input_scale) * double(filter_scale[c]) / double(output_scale)
    (all float32 values widened to double first), then QuantizeMultiplier.  ``qmin``/``qmax``:
    the output type's range (int16x8: -32768, 32767).
    """
    eff = np.float64(input_t.quant.scale0) * w_scales / np.float64(output_t.quant.scale0)
    m0, shift = fp.quantize_multiplier_array(eff, single_rounding=(rounding == "single"))
    try:
        act_min, act_max = fp.quantized_activation_range(activation, output_t.quant.scale0, output_t.quant.zp0,
                                                         qmin, qmax)
    except ValueError:
        raise QsimError(f"fused activation {activation} is not supported on this op "
                        "(TFLite allows NONE, RELU, RELU6, RELU_N1_TO_1).") from None
    return RequantParams(bias=bias, multiplier=m0, shift=shift, output_zero_point=output_t.quant.zp0,
                         act_min=act_min, act_max=act_max, rounding=rounding)


def _window_geometry(opts, in_h, in_w, k_h, k_w):
    out_h = compute_out_size(opts.padding, in_h, k_h, opts.stride_h, opts.dilation_h)
    out_w = compute_out_size(opts.padding, in_w, k_w, opts.stride_w, opts.dilation_w)
    if out_h <= 0 or out_w <= 0:
        raise QsimError(f"the {k_h}x{k_w} filter (dilation {opts.dilation_h}x{opts.dilation_w}) does not fit the "
                        f"{in_h}x{in_w} input with {opts.padding} padding.")
    pad_h = compute_padding(opts.stride_h, opts.dilation_h, in_h, k_h, out_h)
    pad_w = compute_padding(opts.stride_w, opts.dilation_w, in_w, k_w, out_w)
    return out_h, out_w, pad_h, pad_w


def check_output_shape(out_t, expected: tuple[int, ...]) -> None:
    if tuple(out_t.shape) != tuple(expected):
        raise QsimError(f"output '{out_t.name}' has shape {list(out_t.shape)} but the op produces {list(expected)}.")


def accumulator_bound(w_int: np.ndarray, input_zero_point: int, reduce_axes) -> int:
    """Bound on |partial sum| of (x - zp) * w for any int8 x: max|x - zp| * max column sum|w|."""
    max_x = max(127 - int(input_zero_point), int(input_zero_point) + 128)
    col = np.abs(np.asarray(w_int, dtype=np.int64)).sum(axis=reduce_axes)
    return max_x * int(col.max()) if col.size else 0


def exact_float_dtype(w_int: np.ndarray, input_zero_point: int, reduce_axes) -> type:
    """float32 when every partial sum of (x - zp) * w is provably exact in float32, else float64.

    Any partial sum of a dot product is bounded by :func:`accumulator_bound`; below
    2**24 float32 represents all of them exactly, whatever order BLAS adds in.
    float64 (53 bits) is exact for every int8 model of sane size.
    """
    return np.float32 if accumulator_bound(w_int, input_zero_point, reduce_axes) < (1 << 24) else np.float64


def padded_shape(x_shape, pad_h: int, pad_w: int, need_h: int, need_w: int) -> tuple[int, int, int, int]:
    """NHWC shape of :func:`padded_centered`'s result for an input of shape ``x_shape``."""
    n, h, w, c = x_shape
    return (n, pad_h + h + max(need_h - h - pad_h, 0), pad_w + w + max(need_w - w - pad_w, 0), c)


def padded_centered(x: np.ndarray, zero_point: int, pad_h: int, pad_w: int, need_h: int, need_w: int,
                    dtype=np.float64, raw: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """(x - zp) as ``dtype`` in NHWC, zero-padded so rows [0, need_h) / cols [0, need_w) exist.

    ``pad_h``/``pad_w`` rows/cols go before the data; the tail is padded as far
    as the windows reach (:func:`padded_shape`).  Padding is 0 after the zero-point shift, which is
    exactly TFLite's "skip out-of-bounds taps".  ``raw``: x itself, padded with the zero
    point (the same array plus zp everywhere; see the module docstring's folded bias).
    ``out``: an array of that shape and ``dtype`` to write into (every element is written).
    """
    n, h, w, c = x.shape
    shape = padded_shape(x.shape, pad_h, pad_w, need_h, need_w)
    if raw and shape == x.shape and out is None:
        return x.astype(dtype)
    xs = np.empty(shape, dtype=dtype) if out is None else out  # the border is filled below: one write per element
    fill = zero_point if raw else 0
    xs[:, :pad_h] = fill
    xs[:, pad_h + h:] = fill
    xs[:, pad_h:pad_h + h, :pad_w] = fill
    xs[:, pad_h:pad_h + h, pad_w + w:] = fill
    core = xs[:, pad_h:pad_h + h, pad_w:pad_w + w, :]
    core[...] = x
    if not raw:
        core -= zero_point
    return xs


# --------------------------------------------------------------------------- CONV_2D

@dataclass
class ConvParams:
    """Prepared CONV_2D / DEPTHWISE_CONV_2D (units: elements; NHWC)."""

    input_zero_point: int
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    pad_h: int  # leading (top) padding
    pad_w: int  # leading (left) padding
    out_h: int
    out_w: int
    kernel_h: int
    kernel_w: int
    weights: np.ndarray  # CONV_2D: float [kh*kw*in_ch, out_ch]; depthwise: float [kh, kw, out_ch] (exact dtype)
    out_channels: int
    depth_multiplier: int  # 1 for CONV_2D
    requant: RequantParams
    weight_rows: np.ndarray | None = field(default=None, repr=False, compare=False)  # see _depthwise_rows
    # depthwise with few channels: block-diagonal [KH*KW*OC, OC] dense weights, see _depthwise_rows
    dense_weights: np.ndarray | None = field(default=None, repr=False, compare=False)
    # depthwise: one einsum over the strided window view instead of the tap loop, see _depthwise_rows
    einsum: bool = field(default=False, repr=False, compare=False)
    # sum of each output channel's weights and the bound on the uncentred input's accumulators
    # (see the module docstring and folded_requant)
    colsum: np.ndarray | None = field(default=None, repr=False, compare=False)
    raw_bound: np.ndarray | None = field(default=None, repr=False, compare=False)  # int64 [C]
    # (plan, float64 [IC + 1, OC]): the requant's affine map folded into a pointwise layer's GEMM
    # (see eval_pointwise), cached with the plan it was built from
    affine_gemm: tuple | None = field(default=None, repr=False, compare=False)
    # stride-1 depthwise: each tap's weights repeated along a flat pass's rows (see eval_depthwise_flat)
    flat_weights: np.ndarray | None = field(default=None, repr=False, compare=False)
    # depthwise: (requant, input [H, W, C], qsim.native.depthwise_runner or False), see _native_depthwise
    native_dw: tuple | None = field(default=None, repr=False, compare=False)


def _conv_operands(op, graph):
    """(input, filter, bias or None, output, options) of a conv-like op; int8 input and output checked."""
    ins = graph.op_inputs(op)
    b = ins[2] if len(ins) > 2 else None
    out = graph.op_outputs(op)[0]
    require_int8(ins[0], "input")
    require_int8(out, "output")
    return ins[0], ins[1], b, out, op.options


def conv_geometry(x, w, out, o) -> tuple[int, int, int, int, int, int, int, int]:
    """CONV_2D shapes checked: (oc, kh, kw, ic, out_h, out_w, pad_h, pad_w) (int8 and int16x8)."""
    if len(x.shape) != 4 or w is None or len(w.shape) != 4:
        raise QsimError("CONV_2D needs a 4-D NHWC input and a 4-D [out_ch, kh, kw, in_ch] filter.")
    oc, kh, kw, ic = w.shape
    if x.shape[3] != ic:
        raise QsimError(f"input has {x.shape[3]} channels but the filter expects {ic} "
                        "(grouped convolution is not supported).")
    out_h, out_w, pad_h, pad_w = _window_geometry(o, x.shape[1], x.shape[2], kh, kw)
    check_output_shape(out, (x.shape[0], out_h, out_w, oc))
    return oc, kh, kw, ic, out_h, out_w, pad_h, pad_w


def prepare_conv(op, graph, profile) -> ConvParams:
    x, w, b, out, o = _conv_operands(op, graph)
    oc, kh, kw, ic, out_h, out_w, pad_h, pad_w = conv_geometry(x, w, out, o)
    scales = weight_scales(w, oc, axis=0)
    dt = exact_float_dtype(w.data, x.quant.zp0, (1, 2, 3))
    wmat = np.asarray(w.data, dtype=dt).transpose(1, 2, 3, 0).reshape(kh * kw * ic, oc)
    rq = make_requant(x, scales, out, bias_values(b, oc), o.activation, profile.rounding(op.opcode))
    rq.acc_bound = accumulator_bound(w.data, x.quant.zp0, (1, 2, 3))
    colsum, raw_bound = fold_terms(w.data, (1, 2, 3))
    return ConvParams(x.quant.zp0, o.stride_h, o.stride_w, o.dilation_h, o.dilation_w, pad_h, pad_w,
                      out_h, out_w, kh, kw, np.ascontiguousarray(wmat), oc, 1, rq,
                      colsum=colsum, raw_bound=raw_bound)


def fold_terms(w_int: np.ndarray, reduce_axes) -> tuple[np.ndarray, np.ndarray]:
    """(colsum, raw_bound): each output channel's weight sum over ``reduce_axes`` (int64 [C]) and
    each channel's bound on the uncentred input's accumulators (|x| <= 128: 128 * sum|w| of the
    channel, int64 [C]; :func:`accumulator_bound` with zero point 0 is their maximum), for
    :func:`folded_requant` (fixedpoint's plan checks its precision conditions channel by channel)."""
    w = np.asarray(w_int, dtype=np.int64)
    colsum = w.sum(axis=reduce_axes).reshape(-1)
    return colsum, 128 * np.abs(w).sum(axis=reduce_axes).reshape(-1)


def folded_requant(p):
    """The requant plan of a conv / fully-connected layer's uncentred-input accumulators
    (``p.requant.folded_plan``, see the module docstring), or None: then eval centres the input."""
    got = p.requant._folded  # the cached plan, when built for these weights (see RequantParams.folded_plan)
    if got is not None and got[0] is p.colsum:
        return got[1]
    if p.colsum is None:
        return None
    return p.requant.folded_plan(p.input_zero_point, p.colsum, p.raw_bound)


def _is_pointwise(p: ConvParams, x_shape) -> bool:
    """A 1x1, stride-1 CONV_2D whose output is the input's size: patches are the pixels."""
    return p.kernel_h == 1 and p.kernel_w == 1 and p.stride_h == 1 and p.stride_w == 1 and \
        (p.out_h, p.out_w) == tuple(x_shape[1:3])


def _conv_input(p: ConvParams, x: np.ndarray, raw: bool = False) -> np.ndarray:
    """(x - zp) in the weights' float dtype, NHWC, padded as far as the windows reach (a 1x1
    stride-1 conv needs no padding); ``raw``: x padded with zp (see :func:`padded_centered`)."""
    dt = p.weights.dtype
    if _is_pointwise(p, x.shape):
        xs = x.astype(dt)
        if not raw:
            xs -= p.input_zero_point
        return xs
    need_h = (p.out_h - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1
    need_w = (p.out_w - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1
    return padded_centered(x, p.input_zero_point, p.pad_h, p.pad_w, need_h, need_w, dt, raw)


def _conv_input_raw(p: ConvParams, x: np.ndarray) -> np.ndarray:
    return _conv_input(p, x, raw=True)


def _conv_rows(p: ConvParams, xs: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Accumulators of output rows [r0, r1) from the prepared input ``xs`` (:func:`_conv_input`),
    exact integers in the weights' float dtype, [N, r1 - r0, OW, OC]."""
    return _patch_matmul(p, xs, r0, r1, p.weights)


def _window_view(p: ConvParams, xs: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """The windows of output rows [r0, r1) as a read-only strided view of the padded input
    ``xs`` (no copy): [N, r1 - r0, OW, KH, KW, C], element [n, r, c, i, j, ch] being input
    pixel (r0 + r) * stride_h + i * dilation_h, c * stride_w + j * dilation_w of ``xs``."""
    sn, sh, sw, sc = xs.strides
    return np.lib.stride_tricks.as_strided(
        xs[:, r0 * p.stride_h:], shape=(xs.shape[0], r1 - r0, p.out_w, p.kernel_h, p.kernel_w, xs.shape[3]),
        strides=(sn, sh * p.stride_h, sw * p.stride_w, sh * p.dilation_h, sw * p.dilation_w, sc), writeable=False)


def _patch_matmul(p: ConvParams, xs: np.ndarray, r0: int, r1: int, weights: np.ndarray) -> np.ndarray:
    """:func:`im2col_rows` patches of output rows [r0, r1) times ``weights`` [KH*KW*C, OC]."""
    n, rows = xs.shape[0], r1 - r0
    return (im2col_rows(p, xs, r0, r1) @ weights).reshape(n, rows, p.out_w, p.out_channels)


def im2col_rows(p: ConvParams, xs: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """im2col patches of output rows [r0, r1): [N*(r1-r0)*OW, KH*KW*C], each row one output pixel's
    window in (kh, kw, c) order (the :func:`_window_view` of the padded input ``xs``, copied once by
    the reshape).  ``xs`` is the padded input (:func:`_conv_input` / :func:`_depthwise_input`)."""
    n, c = xs.shape[0], xs.shape[3]
    rows = r1 - r0
    if _is_pointwise(p, xs.shape):
        patches = xs[:, r0:r1].reshape(n * rows * p.out_w, c)
    else:
        patches = _window_view(p, xs, r0, r1).reshape(n * rows * p.out_w, p.kernel_h * p.kernel_w * c)
    return patches


def gemm_operands(p: ConvParams, x: np.ndarray) -> np.ndarray:
    """The GEMM input operand of a CONV_2D / DEPTHWISE_CONV_2D on int8 input ``x`` (NHWC):
    im2col patches [N*OH*OW, KH*KW*C] of (x - input_zero_point) as int64, padding 0 (TFLite's
    skipped out-of-bounds taps).  CONV_2D: accumulators = patches @ weights [KH*KW*IC, OC];
    depthwise (C = output channels, input channels repeated depth_multiplier times):
    acc[:, c] = sum over taps t of patches[:, t*C + c] * weights[t, c]."""
    x = np.asarray(x)
    xs = _depthwise_input(p, x) if p.weights.ndim == 3 else _conv_input(p, x)  # depthwise: [KH, KW, C]
    return im2col_rows(p, xs, 0, p.out_h).astype(np.int64)


def _conv_float(p: ConvParams, x: np.ndarray) -> np.ndarray:
    """Accumulators as exact integers in the weights' float dtype, [N, OH, OW, OC]."""
    return _conv_rows(p, _conv_input(p, x), 0, p.out_h)


def accumulate_conv(p: ConvParams, inputs) -> np.ndarray:
    """Raw accumulators sum((x - x_zp) * w), int64 [N, OH, OW, OC], without bias."""
    return _conv_float(p, np.asarray(inputs[0])).astype(np.int64)


# Output elements per block of a conv-like op's eval: a batch is evaluated a few samples (or, for
# a large layer, a few output rows of one sample) at a time so that patches, accumulators and
# the requantization passes stay in the CPU caches.
CHUNK_ELEMENTS = 1 << 16


def eval_in_chunks(p: ConvParams, x: np.ndarray, prepare_input, accumulate_rows, requant=None) -> np.ndarray:
    """``requant`` (default ``p.requant.apply``) of the accumulators, block by block, int8
    [N, OH, OW, OC].

    ``prepare_input(p, x_group)`` builds the padded (zero-point-centred, or raw for a folded
    ``requant``) input of a group of samples; ``accumulate_rows(p, xs, r0, r1)`` the
    accumulators of output rows [r0, r1).
    Groups hold about CHUNK_ELEMENTS outputs (several samples, or one sample cut into row
    blocks): a speed choice only, every output's arithmetic is the same.
    """
    n = x.shape[0]
    row = max(1, p.out_w * p.out_channels)
    per_sample = row * p.out_h
    samples = max(1, CHUNK_ELEMENTS // per_sample)
    rows = p.out_h if per_sample <= CHUNK_ELEMENTS else max(1, CHUNK_ELEMENTS // row)
    requant = p.requant.apply if requant is None else requant
    if n <= samples:  # one block: no bookkeeping (every single-sample run of a small layer)
        return requant(accumulate_rows(p, prepare_input(p, x), 0, p.out_h))
    out = np.empty((n, p.out_h, p.out_w, p.out_channels), np.int8)
    for s in range(0, n, samples):
        xs = prepare_input(p, x[s:s + samples])
        for r0 in range(0, p.out_h, rows):
            r1 = min(r0 + rows, p.out_h)
            out[s:s + samples, r0:r1] = requant(accumulate_rows(p, xs, r0, r1))
    return out


# Pointwise layers with at most this many input channels fold the requant's affine map into a
# float64 GEMM (see eval_pointwise): the extra BLAS cost of float64 and a bias row is smaller
# than the three requant passes it saves when the dot products are short.
AFFINE_GEMM_MAX_INPUTS = 32


def eval_pointwise(p: ConvParams, x: np.ndarray, requant, raw: bool) -> np.ndarray:
    """A 1x1 stride-1 CONV_2D (:func:`_is_pointwise`) on the batch as one [N*H*W, IC] matrix,
    in blocks of pixels (across samples) whose input and output hold about CHUNK_ELEMENTS
    values: per block, the int8 pixels as the weights' float dtype (``raw``: uncentred, for a
    folded ``requant``; else minus the input zero point) @ weights, then ``requant``.  The
    same integers as :func:`eval_in_chunks` (each output its own dot product), fewer passes
    over memory: no whole-sample float copy of the input.

    Few input channels and a "float_relu" folded plan (unless its blocks are large enough for
    the native requantization, :mod:`qsim.native`, which then costs less): the GEMM computes the plan's pre-floor
    value directly, [x, 1] @ [[w * A], [B]] in float64 (A, B: the plan's
    :meth:`~qsim.fixedpoint.DoubleRequantPlan.relu_affine`), then the plan's ``finish``.  Exact:
    w * A = (w * M0 * 2**left) / 2**(31+e) is exact (|w * M0 * 2**left| < 2**53); every term
    of the dot product, and B, is a multiple of 2**-(31+e), and any partial sum, in whatever
    order BLAS adds, is bounded by raw_bound * M0 * 2**left + |B| * 2**(31+e) in those units
    (raw_bound = 128 * sum|w| of the channel bounds every sub-sum of x * w), which is the
    numerator the plan proved below 2**53 for its one-product form: every partial sum is
    representable, so the GEMM returns acc * A + B exactly."""
    n, h, w, ic = x.shape
    flat = x.reshape(n * h * w, ic)
    step = max(1, CHUNK_ELEMENTS // max(ic, p.out_channels, 1))
    out = np.empty((flat.shape[0], p.out_channels), np.int8)
    fused = _affine_gemm(p, requant) if raw and ic <= AFFINE_GEMM_MAX_INPUTS else None
    if fused is not None and min(step, flat.shape[0]) * p.out_channels >= fp.native_min_values() \
            and fused[0].native_available():
        fused = None  # float32 GEMM + the native requantization cost less (vww 0.92x, zoo 0.98x of the fused)
    if fused is not None:
        plan, wf = fused
        buf = np.empty((min(step, flat.shape[0]), ic + 1))
        buf[:, ic] = 1.0
        for r in range(0, flat.shape[0], step):
            a = buf[:min(step, flat.shape[0] - r)]
            a[:, :ic] = flat[r:r + step]
            plan.finish(a @ wf, np.int8, out[r:r + step])
        return out.reshape(n, h, w, p.out_channels)
    dt = p.weights.dtype
    for r in range(0, flat.shape[0], step):
        xs = flat[r:r + step].astype(dt)
        if not raw:
            xs -= p.input_zero_point
        out[r:r + step] = requant(xs @ p.weights)
    return out.reshape(n, h, w, p.out_channels)


def _affine_gemm(p: ConvParams, requant):
    """(plan, [[w * A], [B]]) for eval_pointwise's fused GEMM, or None (not a "float_relu" plan)."""
    plan = getattr(requant, "__self__", None)
    if p.affine_gemm is not None and p.affine_gemm[0] is plan:
        return p.affine_gemm
    got = plan.relu_affine(p.out_channels) if isinstance(plan, fp.DoubleRequantPlan) else None
    if got is None:
        return None
    a, b = got
    wf = np.vstack([np.asarray(p.weights, np.float64) * a, b[None, :]])
    p.affine_gemm = (plan, np.ascontiguousarray(wf))
    return p.affine_gemm


def eval_conv(p: ConvParams, inputs) -> list[np.ndarray]:
    folded = folded_requant(p)
    x = np.asarray(inputs[0])
    if _is_pointwise(p, x.shape):
        return [eval_pointwise(p, x, folded.apply if folded is not None else p.requant.apply, folded is not None)]
    if folded is not None:
        return [eval_in_chunks(p, np.asarray(inputs[0]), _conv_input_raw, _conv_rows, folded.apply)]
    return [eval_in_chunks(p, np.asarray(inputs[0]), _conv_input, _conv_rows)]


# --------------------------------------------------------------------------- DEPTHWISE_CONV_2D

def depthwise_geometry(x, w, out, o) -> tuple[int, int, int, int, int, int, int, int]:
    """DEPTHWISE_CONV_2D shapes checked: (kh, kw, oc, multiplier, out_h, out_w, pad_h, pad_w)
    (int8 and int16x8)."""
    if len(x.shape) != 4 or w is None or len(w.shape) != 4 or w.shape[0] != 1:
        raise QsimError("DEPTHWISE_CONV_2D needs a 4-D NHWC input and a [1, kh, kw, in_ch*multiplier] filter.")
    _, kh, kw, oc = w.shape
    ic = x.shape[3]
    if ic == 0 or oc % ic != 0:
        raise QsimError(f"depthwise filter has {oc} output channels, not a multiple of the {ic} input channels.")
    mult = oc // ic
    if o.depth_multiplier not in (0, mult):
        raise QsimError(f"depth_multiplier option is {o.depth_multiplier} but the filter shape implies {mult} "
                        f"({oc} output / {ic} input channels).")
    out_h, out_w, pad_h, pad_w = _window_geometry(o, x.shape[1], x.shape[2], kh, kw)
    check_output_shape(out, (x.shape[0], out_h, out_w, oc))
    return kh, kw, oc, mult, out_h, out_w, pad_h, pad_w


def prepare_depthwise(op, graph, profile) -> ConvParams:
    x, w, b, out, o = _conv_operands(op, graph)
    kh, kw, oc, mult, out_h, out_w, pad_h, pad_w = depthwise_geometry(x, w, out, o)
    scales = weight_scales(w, oc, axis=3)
    wk = np.asarray(w.data, dtype=exact_float_dtype(w.data, x.quant.zp0, (0, 1, 2))).reshape(kh, kw, oc)
    rq = make_requant(x, scales, out, bias_values(b, oc), o.activation, profile.rounding(op.opcode))
    rq.acc_bound = accumulator_bound(w.data, x.quant.zp0, (0, 1, 2))
    colsum, raw_bound = fold_terms(w.data, (0, 1, 2))
    p = ConvParams(x.quant.zp0, o.stride_h, o.stride_w, o.dilation_h, o.dilation_w, pad_h, pad_w,
                   out_h, out_w, kh, kw, np.ascontiguousarray(wk), oc, mult, rq,
                   colsum=colsum, raw_bound=raw_bound)
    if oc <= DENSE_DEPTHWISE_MAX_CHANNELS and (o.stride_h * o.stride_w > 1 or kh * kw > 9):
        dense = np.zeros((kh, kw, oc, oc), wk.dtype)
        dense[:, :, np.arange(oc), np.arange(oc)] = wk  # output channel c sees only input channel c
        p.dense_weights = dense.reshape(kh * kw * oc, oc)
    elif oc >= EINSUM_DEPTHWISE_MIN_CHANNELS and out_w >= 6 and (o.stride_h * o.stride_w > 1 or out_h * out_w <= 196):
        p.einsum = True
    return p


# Depthwise layers with at most this many (output) channels and a stride (strided tap reads are
# slow) or a large kernel run as a GEMM with block-diagonal weights: KH*KW*OC multiply-adds per
# output in BLAS beat 2*KH*KW numpy passes there (measured on vww, person_detect, micro_speech;
# a 3x3 stride-1 layer stays faster tap by tap).
DENSE_DEPTHWISE_MAX_CHANNELS = 16
# Depthwise layers with at least this many channels, an output at least 6 wide, and a stride or
# a small output (<= 196 pixels: 14x14) run as one einsum over the window view (numpy's C
# sum-of-products loop): 1.3-2.5x faster than the tap loop there, slower on large or narrow
# outputs with few channels (measured on every depthwise layer of vww, person_detect, kws and
# the zoo MobileNetV2: 3x3 at 6x6/7x7/14x14 with 128-960 channels, strided 56x56 with 96).
EINSUM_DEPTHWISE_MIN_CHANNELS = 64
# Stride-1 depthwise layers with at most this many channels (and no block-diagonal GEMM) run on
# the flat layout (eval_depthwise_flat): 1.2-2x faster than the tap passes or the window
# einsum on vww's and person_detect's 8-, 32- and 64-channel layers, kws's 64-channel 25x5
# ones and the zoo's 32-channel 112x112 one; no faster with 144-960 channels, where the tap
# passes' OW * C long rows or the window einsum's C long rows already suit numpy.
FLAT_DEPTHWISE_MAX_CHANNELS = 64
# ... with einsum rows holding about this many values
FLAT_TILE = 4096
# Strided depthwise layers of a batch with at most this many channels (no dilation, depth
# multiplier 1) run on phase images (eval_depthwise_phased): 1.4-1.7x faster than the
# block-diagonal GEMM on vww's 16-channel stride-2 layer at batch 64, about even at 32 channels,
# slower than the window einsum at 64 channels and than the other paths for one sample.
PHASED_DEPTHWISE_MAX_CHANNELS = 32
# ... and requantize their whole grid (padding rows and columns included) when it has at most this
# many times as many positions as the output.
GRID_REQUANT_MAX = 1.25


def _flat_depthwise(p: ConvParams) -> bool:
    """Whether eval runs :func:`eval_depthwise_flat`: stride 1, no block-diagonal GEMM, few channels."""
    return p.stride_h == 1 and p.stride_w == 1 and p.dense_weights is None and \
        p.out_channels <= FLAT_DEPTHWISE_MAX_CHANNELS


def accumulate_depthwise(p: ConvParams, inputs) -> np.ndarray:
    """Raw depthwise accumulators, int64 [N, OH, OW, C*M], without bias (one pass per kernel tap)."""
    return _depthwise_float(p, np.asarray(inputs[0])).astype(np.int64)


def _depthwise_input(p: ConvParams, x: np.ndarray, raw: bool = False) -> np.ndarray:
    """(x - zp) padded (see :func:`padded_centered`; ``raw``: x padded with zp), channels
    repeated ``depth_multiplier`` times."""
    need_h = (p.out_h - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1
    need_w = (p.out_w - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w + 1
    xs = padded_centered(x, p.input_zero_point, p.pad_h, p.pad_w, need_h, need_w, p.weights.dtype, raw)
    if p.depth_multiplier > 1:
        xs = np.repeat(xs, p.depth_multiplier, axis=3)  # channel ic -> ic*M .. ic*M + M-1
    return xs


def _depthwise_rows(p: ConvParams, xs: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Depthwise accumulators of output rows [r0, r1) from :func:`_depthwise_input`, exact
    integers in the weights' float dtype, [N, r1 - r0, OW, C*M]: one pass per kernel tap, or
    for few channels im2col patches times block-diagonal weights (the extra products are
    exact zeros, so every partial sum is a partial sum of the same taps: exact_float_dtype's
    bound holds whatever order BLAS adds in), or for many channels one einsum over the window
    view (its partial sums are partial sums of the same taps too: exact in any order)."""
    if p.dense_weights is not None:
        return _patch_matmul(p, xs, r0, r1, p.dense_weights)
    if p.einsum:
        return np.einsum("nrcijk,ijk->nrck", _window_view(p, xs, r0, r1), p.weights)
    if p.weight_rows is None:
        # Each tap's weights repeated along an output row: a [C] vector broadcast over
        # [N, OH, OW, C] makes numpy loop over C elements at a time; [OW, C] rows keep the
        # passes' inner loops OW * C long.
        p.weight_rows = np.ascontiguousarray(np.broadcast_to(p.weights[:, :, None, :], (
            p.kernel_h, p.kernel_w, p.out_w, p.out_channels)))
    acc = prod = None
    h_span = (r1 - r0 - 1) * p.stride_h + 1
    w_span = (p.out_w - 1) * p.stride_w + 1
    for i in range(p.kernel_h):
        top = r0 * p.stride_h + i * p.dilation_h
        for j in range(p.kernel_w):
            c0 = j * p.dilation_w
            tap = xs[:, top:top + h_span:p.stride_h, c0:c0 + w_span:p.stride_w, :]
            if acc is None:  # the first tap initialises the accumulator
                acc = np.multiply(tap, p.weight_rows[i, j])
                prod = np.empty_like(acc)
                continue
            np.multiply(tap, p.weight_rows[i, j], out=prod)
            acc += prod  # exact: exact_float_dtype bounded every partial sum
    return acc


def _flat_weights(p: ConvParams) -> np.ndarray:
    """Each tap's weights [C] repeated to a row of about FLAT_TILE values: [KH, KW, k * C]
    (see :func:`eval_depthwise_flat`), built once per prepared layer."""
    if p.flat_weights is None:
        k = max(1, FLAT_TILE // p.out_channels)
        p.flat_weights = np.ascontiguousarray(np.tile(p.weights, (1, 1, k)))
    return p.flat_weights


def eval_depthwise_flat(p: ConvParams, x: np.ndarray, requant, raw: bool) -> np.ndarray:
    """A stride-1 DEPTHWISE_CONV_2D on a flat layout, int8 [N, OH, OW, C].

    The padded input of a group of samples (:func:`padded_centered`, ``raw`` for a folded
    ``requant``; channels repeated for a depth multiplier) sits in one flat buffer of
    [N', HP, WP, C] values.  With stride 1, the window of the "grid" position (s, r, c) -- any
    pixel of that padded layout -- at tap (i, j) is the value (i * dilation_h * WP + j *
    dilation_w) * C places further on, the same for every position.  So the taps are one
    strided view [KH, KW, L / T, T] of the buffer whose rows are contiguous, and one einsum
    against each tap's [C] weights repeated T / C times (:func:`_flat_weights`) sums them:
    numpy's multiply-add loop on rows of T values, where the tap passes of
    :func:`_depthwise_rows` take two passes per tap on rows of OW * C.  Grid positions with r >=
    OH or c >= OW (the padding's rows and columns) are computed too and dropped: they read
    other values of the buffer, never an output's -- padded input values or the buffer's initial
    zeros, so their sums stay within the same accumulator bound as the outputs' (the requant may
    see them, see below).  Each output is
    the same sum of the same exact products as on the other paths, exact in any order
    (exact_float_dtype bounded every partial sum), then ``requant`` -- of the grid's
    computed part when it is at most GRID_REQUANT_MAX times the outputs (one copy fewer), else
    of the outputs' strided view.  Blocks of whole samples or, for a large layer, of output rows
    of one sample, as in :func:`eval_in_chunks`."""
    n = x.shape[0]
    C, OH, OW = p.out_channels, p.out_h, p.out_w
    need_h = (OH - 1) + (p.kernel_h - 1) * p.dilation_h + 1
    need_w = (OW - 1) + (p.kernel_w - 1) * p.dilation_w + 1
    _, HP, WP, _ = padded_shape(x.shape, p.pad_h, p.pad_w, need_h, need_w)
    row = WP * C  # values per grid row
    per = HP * row  # values per sample
    wt = _flat_weights(p)
    T = wt.shape[2]
    samples = max(1, CHUNK_ELEMENTS // per)
    rows = OH if per <= CHUNK_ELEMENTS else max(1, CHUNK_ELEMENTS // row)
    m_max = min(samples, n)
    last = ((p.kernel_h - 1) * p.dilation_h * WP + (p.kernel_w - 1) * p.dilation_w) * C  # the last tap's offset
    span_max = m_max * per if m_max > 1 else min(rows, OH) * row
    acc_all = np.empty(-(-span_max // T) * T, p.weights.dtype)
    buf = np.zeros(m_max * per + last + T, p.weights.dtype)
    size = buf.itemsize
    strides = (p.dilation_h * row * size, p.dilation_w * C * size, T * size, size)
    # the grid's extra rows and columns cost less to requantize than copying the outputs out
    whole_grid = HP * WP <= GRID_REQUANT_MAX * OH * OW
    out = np.empty((n, OH, OW, C), np.int8)
    for s in range(0, n, samples):
        xg = x[s:s + samples]
        m = xg.shape[0]
        grid = buf[:m * per].reshape(m, HP, WP, C)
        if p.depth_multiplier > 1:
            grid[...] = _depthwise_input(p, xg, raw)
        else:
            padded_centered(xg, p.input_zero_point, p.pad_h, p.pad_w, need_h, need_w, p.weights.dtype, raw, grid)
        for r0 in range(0, OH, rows):
            r1 = min(r0 + rows, OH)
            height = HP if m > 1 else r1 - r0  # grid rows per sample in the accumulator
            length = -(-((m - 1) * HP + r1 - r0) * row // T) * T  # computed values, whole [T] rows
            # the taps as one strided view of the buffer: [KH, KW, L / T, T], element [i, j, q, u]
            # being buf[r0 * row + offset(i, j) + q * T + u]
            taps = np.lib.stride_tricks.as_strided(buf[r0 * row:], shape=(p.kernel_h, p.kernel_w, length // T, T),
                                                   strides=strides, writeable=False)
            np.einsum("ijqu,iju->qu", taps, wt, out=acc_all[:length].reshape(-1, T))
            if whole_grid:  # requantize the computed part of the grid, then take the outputs' bytes
                done = ((m - 1) * HP + r1 - r0) * row
                q = requant(acc_all[:done].reshape(-1, C)).reshape(-1)
                out[s:s + m, r0:r1] = np.lib.stride_tricks.as_strided(
                    q, shape=(m, r1 - r0, OW, C), strides=(per * q.itemsize, row * q.itemsize, C * q.itemsize,
                                                           q.itemsize), writeable=False)
            else:
                out[s:s + m, r0:r1] = requant(acc_all[:m * height * row].reshape(m, height, WP, C)[:, :r1 - r0, :OW])
    return out


def _phased_depthwise(p: ConvParams, batch: int) -> bool:
    """Whether eval runs :func:`eval_depthwise_phased`: a batch, a stride above 1, no dilation,
    one output channel per input channel, few channels."""
    return batch > 1 and (p.stride_h > 1 or p.stride_w > 1) and p.dilation_h == 1 and p.dilation_w == 1 and \
        p.depth_multiplier == 1 and p.out_channels <= PHASED_DEPTHWISE_MAX_CHANNELS


def _phased_weights(p: ConvParams) -> np.ndarray:
    """The taps regrouped by phase, [SH, KH', SW, KW', k * C] (KH' = ceil(KH / SH)): entry
    [a, i, b, j] is tap (i * SH + a, j * SW + b)'s weights repeated to about FLAT_TILE values,
    zeros past the kernel (see :func:`eval_depthwise_phased`), built once per prepared layer."""
    if p.flat_weights is None:
        sh, sw = p.stride_h, p.stride_w
        kh2, kw2 = -(-p.kernel_h // sh), -(-p.kernel_w // sw)
        w = np.zeros((kh2 * sh, kw2 * sw, p.out_channels), p.weights.dtype)
        w[:p.kernel_h, :p.kernel_w] = p.weights
        w = w.reshape(kh2, sh, kw2, sw, p.out_channels).transpose(1, 0, 3, 2, 4)
        k = max(1, FLAT_TILE // p.out_channels)
        p.flat_weights = np.ascontiguousarray(np.tile(w, (1, 1, 1, 1, k)))
    return p.flat_weights


def eval_depthwise_phased(p: ConvParams, x: np.ndarray, requant, raw: bool) -> np.ndarray:
    """A strided DEPTHWISE_CONV_2D (:func:`_phased_depthwise`) on phase images, int8 [N, OH, OW, C].

    With strides (SH, SW), tap (i, j) = (i' * SH + a, j' * SW + b) of output (r, c) reads padded
    pixel (r * SH + i, c * SW + j) = pixel (r + i', c + j') of phase image (a, b) -- the padded
    input's rows a, a + SH, .. and columns b, b + SW, .. .  The phase images of a group of samples
    sit one after the other in one flat buffer [SH, SW, N', HP', WP', C] (HP' = HP / SH, the
    padded height rounded up to a multiple of SH), so that, as in :func:`eval_depthwise_flat`,
    the value tap (a, i', b, j') reads for the "grid" position (s, r, c) of phase (0, 0) lies
    a fixed number of places further on: one strided view [SH, KH', SW, KW', L / T, T] of the
    buffer and one einsum against the phase-grouped weights (:func:`_phased_weights`, zeros for
    the taps past the kernel) sum the taps.  Grid positions with r >= OH or c >= OW are computed
    too and dropped: they read other values of the buffer -- padded input values or its zero
    tail -- so their sums stay within the same accumulator bound as the outputs'.  Each output
    is the same sum of the same exact products (plus exact zeros) as on the other paths, exact
    in any order (exact_float_dtype bounded every partial sum), then ``requant`` of the
    outputs' strided view.  Blocks of whole samples, about CHUNK_ELEMENTS grid values each."""
    n = x.shape[0]
    C, OH, OW, sh, sw = p.out_channels, p.out_h, p.out_w, p.stride_h, p.stride_w
    need_h = (OH - 1) * sh + p.kernel_h
    need_w = (OW - 1) * sw + p.kernel_w
    _, HP, WP, _ = padded_shape(x.shape, p.pad_h, p.pad_w, need_h, need_w)
    HP, WP = -(-HP // sh) * sh, -(-WP // sw) * sw
    HP2, WP2 = HP // sh, WP // sw
    wt = _phased_weights(p)
    kh2, kw2, T = wt.shape[1], wt.shape[3], wt.shape[4]
    row = WP2 * C  # values per phase grid row
    per = HP2 * row  # values per sample and phase
    samples = max(1, CHUNK_ELEMENTS // per)
    m_max = min(samples, n)
    length_max = -(-m_max * per // T) * T
    acc_all = np.empty(length_max, p.weights.dtype)
    last = ((kh2 - 1) * WP2 + kw2 - 1) * C  # the last tap's offset inside a phase image
    phase = m_max * per
    buf = np.zeros(sh * sw * phase + last + T, p.weights.dtype)
    grid = np.empty((m_max, HP, WP, C), p.weights.dtype)
    size = buf.itemsize
    out = np.empty((n, OH, OW, C), np.int8)
    for s in range(0, n, samples):
        xg = x[s:s + samples]
        m = xg.shape[0]
        g = grid[:m]
        padded_centered(xg, p.input_zero_point, p.pad_h, p.pad_w, HP, WP, p.weights.dtype, raw, g)
        span = m * per  # this group's values per phase image
        strides = (sw * span * size, row * size, span * size, C * size, T * size, size)
        images = buf[:sh * sw * span].reshape(sh, sw, m, HP2, WP2, C)
        for a in range(sh):
            for b in range(sw):
                images[a, b] = g[:, a::sh, b::sw]
        length = -(-span // T) * T
        taps = np.lib.stride_tricks.as_strided(buf, shape=(sh, kh2, sw, kw2, length // T, T),
                                               strides=strides, writeable=False)
        np.einsum("aibjqu,aibju->qu", taps, wt, out=acc_all[:length].reshape(-1, T))
        out[s:s + m] = requant(acc_all[:span].reshape(m, HP2, WP2, C)[:, :OH, :OW])
    return out


def _depthwise_float(p: ConvParams, x: np.ndarray) -> np.ndarray:
    """Depthwise accumulators as exact integers in the weights' float dtype, [N, OH, OW, C*M]."""
    return _depthwise_rows(p, _depthwise_input(p, x), 0, p.out_h)


def _depthwise_input_raw(p: ConvParams, x: np.ndarray) -> np.ndarray:
    return _depthwise_input(p, x, raw=True)


# Depthwise batches with at least this many output values run in C (_native_depthwise) when it is
# available; smaller ones stay on numpy, where the ctypes call would cost as much as it saves.
# Measured (load ~2, tflm, vww / person_detect / kws / zoo, batch 1 and 64): C 1.5-6x faster
# from 2304 outputs up (about 3x on the zoo at batch 64), except with depth multiplier 1 and fewer
# than NATIVE_DEPTHWISE_MIN_CHANNELS channels (vww's 8-channel 48x48 layer: C 1.0-1.25x slower
# than the flat einsum: too few channels for qk_dw_tap's vectorized channel loop).
NATIVE_DEPTHWISE_MIN_VALUES = 1024
NATIVE_DEPTHWISE_MIN_CHANNELS = 16


def _native_depthwise(p: ConvParams, x: np.ndarray):
    """:func:`qsim.native.depthwise_runner` for this layer (built once per requant object and input
    shape, kept),
    or None: int8 input below NATIVE_DEPTHWISE_MIN_VALUES outputs or NATIVE_DEPTHWISE_MIN_CHANNELS
    channels (depth multiplier 1), native off, or a layer or
    requant it does not take (a requant variant or subclass with its own arithmetic: numpy)."""
    if x.dtype != np.int8 or x.ndim != 4 or x.shape[0] * p.out_h * p.out_w * p.out_channels \
            < NATIVE_DEPTHWISE_MIN_VALUES or (p.depth_multiplier == 1 and p.out_channels < NATIVE_DEPTHWISE_MIN_CHANNELS):
        return None
    rq = p.requant
    if p.native_dw is None or p.native_dw[0] is not rq or p.native_dw[1] != x.shape[1:]:
        run = None
        if isinstance(rq, RequantParams) and rq.plain_arithmetic():
            from .. import native
            run = native.depthwise_runner(
                p.weights, rq.bias, rq.multiplier, rq.shift, rq.output_zero_point, rq.act_min, rq.act_max,
                p.input_zero_point, (x.shape[1], x.shape[2], x.shape[3], p.out_h, p.out_w, p.depth_multiplier,
                                     p.stride_h, p.stride_w, p.dilation_h, p.dilation_w, p.pad_h, p.pad_w),
                rq.rounding, rq.acc_bound)
        p.native_dw = (rq, x.shape[1:], run or False)
    return p.native_dw[2] or None


def eval_depthwise(p: ConvParams, inputs) -> list[np.ndarray]:
    x = np.asarray(inputs[0])
    run = _native_depthwise(p, x)
    if run is not None:
        return [run(x)]
    folded = folded_requant(p)
    if _flat_depthwise(p):
        return [eval_depthwise_flat(p, x, p.requant.apply if folded is None else folded.apply, folded is not None)]
    if _phased_depthwise(p, x.shape[0]):
        return [eval_depthwise_phased(p, x, p.requant.apply if folded is None else folded.apply, folded is not None)]
    if folded is not None:
        return [eval_in_chunks(p, x, _depthwise_input_raw, _depthwise_rows, folded.apply)]
    return [eval_in_chunks(p, x, _depthwise_input, _depthwise_rows)]


register("CONV_2D", prepare_conv, eval_conv, accumulate=accumulate_conv, batch=batch_always)
register("DEPTHWISE_CONV_2D", prepare_depthwise, eval_depthwise, accumulate=accumulate_depthwise, batch=batch_always)
