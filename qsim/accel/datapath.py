"""Values through the modelled datapath: accumulators at the configured width, then the requant unit.

For every GEMM op (a kernel with ``accumulate`` and ``params.requant``):

1. the array produces the raw accumulators (the kernel's ``accumulate``:
   sum of (x - x_zp) * w, no bias, channel last);
2. the accumulator register is ``acc_bits`` wide (:class:`Accumulator`).  The bias is either
   preloaded into it (``bias="accumulator"``: the register holds bias + sum) or added by the
   requant unit in 32 bits (``bias="requant"``: the register holds the sum only).  The width is
   checked on the final sum (``check="end"``) or each time a fold's partial sums are added into
   the register (``check="fold"``: weight-stationary folds of ``rows`` reduction elements, in K
   order; output-stationary arrays keep the whole reduction in the PE, so fold == end; the
   adders inside one fold are assumed wide enough).  A value outside
   [-2**(acc_bits-1), 2**(acc_bits-1) - 1] wraps (two's complement) or saturates, and the
   output element is counted once as an overflow.  With wrapping, an end check and a fold check
   hold the same final value (wrap-around is modular) but count differently.
3. the requant unit applies the layer's RequantParams (:func:`qsim.fixedpoint.requantize`, or
   the requant variant chosen with the preset's ``requant.variant``) with its output clamp
   widened by one step on each side, [act_min - 1, act_max + 1]: a value lands outside
   [act_min, act_max] exactly when the real clamp hits it.  Clamps on a side where the fused
   activation (RELU, RELU6, RELU_N1_TO_1) sets the bound are counted as ``activation_clamps``,
   the others (the int8 range itself) as ``int8_saturations``.
4. ``outputs_changed``: output elements that differ from the exact result of the same layer
   inputs (the rounding profile's own requantization of the exact int32 accumulator plus bias,
   i.e. what the references compute).  Computed only when something could differ (a requant
   variant, or an overflow); otherwise 0 by construction.

With the default 32-bit wrapping accumulator and no variant this is exactly the kernel's
``eval`` (requantize wraps acc + bias to int32 the same way), so the profiled run stays
bit-exact with the functional run and the references.
Other ops (element-wise, pooling, ..., and UNIDIRECTIONAL_SEQUENCE_LSTM and SVDF, whose
internal accumulators are not modelled) run their kernel's ``eval`` unchanged.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from .. import fixedpoint as fp
from ..interpreter import PreparedGraph, check_inputs
from ..kernels import RequantParams
from ..kernels.uint8 import Uint8Params, twin_inputs

_MIN, _MAX = np.minimum.reduce, np.maximum.reduce  # whole-array reductions, less call overhead than .min()


@dataclass(frozen=True)
class Accumulator:
    """The accumulator register (module doc): width, overflow behaviour, where the bias goes,
    where the width is checked, and the K fold size (None: no folds, the end check only)."""

    bits: int = 32
    overflow: str = "wrap"  # "wrap" | "saturate"
    bias: str = "accumulator"  # "accumulator" | "requant"
    check: str = "end"  # "end" | "fold"
    fold: int | None = None  # reduction elements per fold (weight-stationary: rows)

    @property
    def limits(self) -> tuple[int, int]:
        return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1


@dataclass
class LayerValues:
    """Per-layer datapath statistics (GEMM ops only)."""

    acc_min: int = 0  # range of acc + bias (before wrap/saturation)
    acc_max: int = 0
    acc_bits_used: int = 0  # signed width the register needs (acc + bias, or acc alone with bias in requant)
    overflow_count: int = 0  # output elements whose register overflowed (at the end, or at any fold)
    int8_saturations: int = 0  # outputs clamped at the output type's range (no fused activation bound there)
    activation_clamps: int = 0  # outputs clamped by a fused RELU / RELU6 / RELU_N1_TO_1 bound
    outputs: int = 0
    acc_nobias_min: int = 0  # range of the accumulator without the bias
    acc_nobias_max: int = 0
    outputs_changed: int = 0  # outputs that differ from the exact result of the same layer inputs

    @property
    def saturation_count(self) -> int:
        """Every clamped output (activation clamps + int8 saturations)."""
        return self.int8_saturations + self.activation_clamps


def signed_bits(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding every value in [lo, hi]."""
    need = max(int(hi).bit_length(), int(-lo - 1).bit_length() if lo < 0 else 0)
    return need + 1


def accumulate_to_width(total: np.ndarray, acc_bits: int, overflow: str,
                        seen: tuple[int, int] | None = None) -> tuple[np.ndarray, int]:
    """(value held by an acc_bits register, overflow count) for int64 sums ``total``.

    ``seen``: (min, max) of ``total`` when already known: nothing is counted or copied
    when that range fits the register.
    """
    held, mask = _to_width(total, acc_bits, overflow, seen)
    return held, 0 if mask is None else int(np.count_nonzero(mask))


def _to_width(total: np.ndarray, acc_bits: int, overflow: str, seen=None):
    """(held values, boolean mask of the overflowed elements or None when none did)."""
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    if seen is not None and lo <= seen[0] and seen[1] <= hi:
        return total, None
    mask = (total < lo) | (total > hi)
    if not mask.any():
        return total, None
    if overflow == "saturate":
        return np.clip(total, lo, hi), mask
    span = 1 << acc_bits
    return ((total - lo) & (span - 1)) + lo, mask


def clamp_counting(values: np.ndarray, act_min: int, act_max: int) -> tuple[int, int]:
    """Clamp int64 ``values`` to [act_min, act_max] in place; returns (how many were below, above).

    One compare + count per side; a side is clamped only when something lies beyond it.
    """
    below = int(np.count_nonzero(values < act_min))
    if below:
        np.maximum(values, act_min, out=values)
    above = int(np.count_nonzero(values > act_max))
    if above:
        np.minimum(values, act_max, out=values)
    return below, above


def activation_sides(op, graph) -> tuple[bool, bool]:
    """(lower, upper): whether the GEMM op's fused activation sets that clamp bound (RELU's real 0,
    RELU6's 0 and 6, RELU_N1_TO_1's -1 and 1, quantized as
    :func:`qsim.fixedpoint.quantized_activation_range` does and inside the output type's range)."""
    act = getattr(op.options, "activation", "NONE") or "NONE"
    out = graph.tensors[op.outputs[0]]
    if out.quant is None or act not in ("RELU", "RELU6", "RELU_N1_TO_1"):
        return False, False
    info = np.iinfo(out.dtype)
    return _sides(act, float(out.quant.scale0), int(out.quant.zp0), int(info.min), int(info.max))


@functools.lru_cache(maxsize=4096)
def _sides(act: str, scale: float, zp: int, qmin: int, qmax: int) -> tuple[bool, bool]:
    lo_real = {"RELU": 0.0, "RELU6": 0.0, "RELU_N1_TO_1": -1.0}.get(act)
    hi_real = {"RELU6": 6.0, "RELU_N1_TO_1": 1.0}.get(act)
    return (lo_real is not None and fp.quantize_float_to_int(lo_real, scale, zp) >= qmin,
            hi_real is not None and fp.quantize_float_to_int(hi_real, scale, zp) <= qmax)


def requant_unit(acc: np.ndarray, rq: RequantParams, acc_bits: int = 32,
                 overflow: str = "wrap", reuse_acc: bool = False, *, unit: Accumulator | None = None,
                 folds=None, exact: RequantParams | None = None,
                 sides: tuple[bool, bool] = (False, False)) -> tuple[np.ndarray, LayerValues]:
    """Raw accumulators (int64, channel last) -> (int64 outputs, statistics).

    ``unit``: the accumulator register (default: ``acc_bits`` wide, ``overflow``, bias preloaded,
    end check).  ``folds``: with ``unit.check == "fold"``, an iterable of the partial sums of each
    K fold (int64, shaped like ``acc``, summing to it); None checks the final sum only.
    ``exact``: the reference RequantParams (the profile's own, no variant) that
    ``outputs_changed`` compares with; None when ``rq`` is it.  ``sides``: which clamp bounds a
    fused activation sets (:func:`activation_sides`).
    ``reuse_acc``: ``acc`` is a scratch int64 array the caller no longer needs.

    Work beyond the plain requantization: the bias add, a min and a max of the sums with and
    without bias (the range statistics; they also tell whether any sum overflows the register,
    and only then are overflows counted) and one compare + count per side of the outputs.
    """
    unit = unit or Accumulator(acc_bits, overflow)
    bias = rq.bias if isinstance(rq.bias, np.ndarray) and rq.bias.dtype == np.int64 else \
        np.asarray(rq.bias, dtype=np.int64)
    acc = np.asarray(acc, dtype=np.int64)
    nb = (int(_MIN(acc, None)), int(_MAX(acc, None))) if acc.size else (0, 0)
    in_acc = unit.bias == "accumulator"
    if reuse_acc and acc.flags.writeable and folds is None:
        total = np.add(acc, bias, out=acc)  # acc itself is not read again (total - bias recovers it)
    else:
        total = acc + bias
    lo, hi = (int(_MIN(total, None)), int(_MAX(total, None))) if total.size else (0, 0)
    seen = (lo, hi) if in_acc else nb  # the range the register must hold
    if folds is not None:
        held, mask = _through_folds(np.broadcast_to(bias, acc.shape) if in_acc else None, folds, unit, acc.shape)
    elif in_acc:
        held, mask = _to_width(total, unit.bits, unit.overflow, seen)
    else:
        lim = unit.limits
        held, mask = (None, None) if lim[0] <= nb[0] and nb[1] <= lim[1] else \
            _to_width(total - bias, unit.bits, unit.overflow)
    over = 0 if mask is None else int(np.count_nonzero(mask))
    # held fits acc_bits <= 32, or (32-bit wrap) requantize's own int32 wrap of held (+ bias) is
    # exactly the 32-bit adder's wrap.
    wide = (np.int64(rq.act_min - 1), np.int64(rq.act_max + 1))  # one step beyond: marks every saturation
    if in_acc or over:
        bound = max(-seen[0], seen[1]) if not over else 1 << (unit.bits - 1)  # |held| <= bound: fp skips its wrap scan
        marked = rq.requantize(held, bias=0 if in_acc else bias, act_min=wide[0], act_max=wide[1], acc_bound=bound)
    else:  # the register held acc exactly: the requant unit's int32 acc + bias is total
        marked = rq.requantize(total, bias=0, act_min=wide[0], act_max=wide[1], acc_bound=max(-lo, hi))
    below, above = clamp_counting(marked, rq.act_min, rq.act_max)  # fp.saturate, in place, counted
    act = (below if sides[0] else 0) + (above if sides[1] else 0)
    changed = 0
    if exact is not None or over:  # the exact result: int32 acc + bias, the profile's own requantization
        ref = (exact or rq).requantize(total, bias=0, acc_bound=max(-lo, hi))
        changed = int(np.count_nonzero(marked != ref))
    return marked, LayerValues(lo, hi, signed_bits(*seen), over, below + above - act, act, int(total.size),
                               nb[0], nb[1], changed)


def _through_folds(start, folds, unit: Accumulator, shape):
    """The register after adding each fold's partial sums (``start``: the preloaded bias or None),
    checked after the preload and after every fold: (held values, overflow mask or None)."""
    mask = None
    running = np.zeros(shape, np.int64) if start is None else np.array(start, dtype=np.int64)
    if start is not None:
        running, mask = _to_width(running, unit.bits, unit.overflow)
    for part in folds:
        running = running + part
        running, m = _to_width(running, unit.bits, unit.overflow)
        if m is not None:
            mask = m if mask is None else (mask | m)
    return running, mask


def fold_partials(p, ins, fold: int, params=None):
    """Partial accumulators of each K fold of ``fold`` reduction elements (K order: the weights'
    rows, kh, kw, in-channel), computed by the kernel's ``accumulate`` on weights zeroed outside
    the fold (exact: the products are the same integers).  CONV_2D ([K, OC] weights),
    DEPTHWISE_CONV_2D ([kh, kw, OC]: K = kh*kw per channel) and FULLY_CONNECTED ([K, N]).
    ``params``: the kernel params to use (a uint8 layer's int8 twin), default ``p.params``."""
    params = p.params if params is None else params
    name = "weights_t" if hasattr(params, "weights_t") else "weights"
    w = getattr(params, name)
    flat = w.reshape(-1, w.shape[-1])
    extra = {"dense_weights": None, "weight_rows": None} if hasattr(params, "dense_weights") else {}
    for k0 in range(0, flat.shape[0], fold):
        part = np.zeros_like(flat)
        part[k0:k0 + fold] = flat[k0:k0 + fold]
        yield p.kernel.accumulate(dataclasses.replace(params, **{name: part.reshape(w.shape)}, **extra), ins)


def _fold_needed(rq: RequantParams, unit: Accumulator, k: int) -> bool:
    """Whether a fold check can differ from the end check: several folds, and no proof
    (the kernel's bound on every partial sum, plus the bias when preloaded) that none overflows."""
    if unit.check != "fold" or unit.fold is None or k <= unit.fold:
        return False
    if rq.acc_bound is None:
        return True
    b = np.asarray(rq.bias, dtype=np.int64)
    worst = rq.acc_bound + (int(np.abs(b).max()) if unit.bias == "accumulator" and b.size else 0)
    return worst > unit.limits[1]


def gemm_sides(prepared: PreparedGraph) -> dict[int, tuple[bool, bool]]:
    """:func:`activation_sides` of every GEMM op, by op index (computed once per prepared graph)."""
    return {p.op.index: activation_sides(p.op, prepared.graph) for p in prepared.ops if p.kernel.accumulate is not None}


def run_values(prepared: PreparedGraph, inputs, acc_bits: int = 32, overflow: str = "wrap",
               unit: Accumulator | None = None, reference: PreparedGraph | None = None,
               sides: dict[int, tuple[bool, bool]] | None = None
               ) -> tuple[dict[int, np.ndarray], dict[int, LayerValues]]:
    """Run the graph with GEMM ops through the modelled datapath.

    ``unit``: the accumulator register (default ``acc_bits`` wide, ``overflow``, bias preloaded,
    end check).  ``reference``: the same graph prepared without a requant variant, whose
    RequantParams the per-layer ``outputs_changed`` compares with (None: ``prepared`` has no variant).
    ``sides``: :func:`gemm_sides` of ``prepared`` when already known.
    Returns ({tensor index: array} for every produced tensor and the inputs,
    {op index: LayerValues} for the GEMM ops).
    """
    unit = unit or Accumulator(acc_bits, overflow)
    g = prepared.graph
    sides = gemm_sides(prepared) if sides is None else sides
    exact_rq = {} if reference is None else {p.op.index: getattr(_twin(p.params), "requant", None)
                                             for p in reference.ops}
    values: dict[int, np.ndarray] = dict(check_inputs(g, inputs))
    start = prepared.state_start  # state (SVDF, LSTM) starts from its reset value every run
    stats: dict[int, LayerValues] = {}
    for p in prepared.ops:
        ins = [None if i < 0 else values[i] if i in values else start[i] if i in start else g.tensors[i].data
               for i in p.op.inputs]
        params = _twin(p.params)
        rq = getattr(params, "requant", None)
        if p.kernel.accumulate is not None and isinstance(rq, RequantParams):
            u8 = params is not p.params
            if u8:  # a uint8 layer: its int8 twin (activations q - 128, weights centred w - zp_w)
                ins = twin_inputs(p.params, ins)
            acc = p.kernel.accumulate(params, ins)
            fold = unit.check == "fold" and _fold_needed(rq, unit, _reduction_size(params))
            folds = fold_partials(p, ins, unit.fold, params) if fold else None
            out, st = requant_unit(acc, rq, reuse_acc=True, unit=unit, folds=folds,
                                   exact=exact_rq.get(p.op.index), sides=sides[p.op.index])
            stats[p.op.index] = st
            outs = [fp.int8_to_uint8(out) if u8 else out]
        else:
            outs = p.kernel.eval(p.params, ins)
        for t, arr in zip(p.op.outputs, outs):
            tensor = g.tensors[t]
            values[t] = np.asarray(arr).astype(tensor.dtype, copy=False).reshape(tensor.shape)
    return values, stats


def _reduction_size(params) -> int:
    """K of a GEMM op (its kernel params): the rows of its weight matrix (depthwise: kh*kw)."""
    w = getattr(params, "weights_t", None)
    if w is None:
        w = params.weights
    return int(np.prod(w.shape[:-1]))


def _twin(params):
    """A uint8 layer's int8-twin params (:class:`qsim.kernels.uint8.Uint8Params`: the machine runs
    uint8 activations as ``q - 128``, free, and weights centred offline, ``w - zp_w``, 9-bit
    signed); any other op's params unchanged."""
    return params.inner if isinstance(params, Uint8Params) else params
