"""Values through the modelled datapath: accumulators at the configured width, then the requant unit.

For every GEMM op (a kernel with ``accumulate`` and ``params.requant``):

1. the array produces the raw accumulators (the kernel's ``accumulate``:
   sum of (x - x_zp) * w, no bias, channel last);
2. the bias is added in an ``acc_bits``-wide register.  A sum outside
   [-2**(acc_bits-1), 2**(acc_bits-1) - 1] is counted as an overflow and
   wrapped (two's complement, what a plain adder does) or saturated, as
   configured.  Only the final sum is checked: with wrapping, intermediate
   partial-sum wrap-around is harmless when the final value fits; with
   saturation the model assumes the array saturates only at the end.
3. the requant unit applies :func:`qsim.fixedpoint.requantize` (the one
   source of truth, rounding from the rounding profile: "double" or "single";
   "float" = :func:`qsim.fixedpoint.requantize_float_rescale`, what LiteRT's
   reference FULLY_CONNECTED does) with its output clamp widened by one step
   on each side, [act_min - 1, act_max + 1]: a value lands outside
   [act_min, act_max] exactly when the real clamp saturates it, where it is
   counted (saturations) and then clamped.

With the default 32-bit wrapping accumulator this is exactly the kernel's
``eval`` (requantize wraps acc + bias to int32 the same way), so the profiled
run stays bit-exact with the functional run and the references.
Other ops run their kernel's ``eval`` unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..interpreter import PreparedGraph, check_inputs
from ..kernels import RequantParams

_MIN, _MAX = np.minimum.reduce, np.maximum.reduce  # whole-array reductions, less call overhead than .min()


@dataclass
class LayerValues:
    """Per-layer datapath statistics (GEMM ops only)."""

    acc_min: int = 0  # range of acc + bias actually produced (before wrap/saturation)
    acc_max: int = 0
    acc_bits_used: int = 0  # signed width needed for that range
    overflow_count: int = 0  # sums outside the configured accumulator width
    saturation_count: int = 0  # outputs clamped at act_min / act_max
    outputs: int = 0


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
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    if seen is not None and lo <= seen[0] and seen[1] <= hi:
        return total, 0
    over = int(np.count_nonzero(total < lo)) + int(np.count_nonzero(total > hi))
    if not over:
        return total, 0
    if overflow == "saturate":
        return np.clip(total, lo, hi), over
    span = 1 << acc_bits
    return ((total - lo) & (span - 1)) + lo, over


def clamp_counting(values: np.ndarray, act_min: int, act_max: int) -> int:
    """Clamp int64 ``values`` to [act_min, act_max] in place; returns how many were outside.

    One compare + count per side; a side is clamped only when something lies beyond it.
    """
    below = int(np.count_nonzero(values < act_min))
    if below:
        np.maximum(values, act_min, out=values)
    above = int(np.count_nonzero(values > act_max))
    if above:
        np.minimum(values, act_max, out=values)
    return below + above


def requant_unit(acc: np.ndarray, rq: RequantParams, acc_bits: int = 32,
                 overflow: str = "wrap", reuse_acc: bool = False) -> tuple[np.ndarray, LayerValues]:
    """Raw accumulators (int64, channel last) -> (int64 outputs, statistics).

    ``reuse_acc``: ``acc`` is a scratch int64 array the caller no longer needs (the bias
    is added in place).

    Work beyond the plain requantization: the bias add, one min and one max of the sums
    (the range statistics; they also tell whether any sum overflows the register, and
    only then are overflows counted) and one compare + count per side of the outputs
    (a side is clamped only when it saturates).
    """
    bias = rq.bias if isinstance(rq.bias, np.ndarray) and rq.bias.dtype == np.int64 else \
        np.asarray(rq.bias, dtype=np.int64)
    if reuse_acc and isinstance(acc, np.ndarray) and acc.dtype == np.int64 and acc.flags.writeable:
        total = np.add(acc, bias, out=acc)
    else:
        total = np.asarray(acc, dtype=np.int64) + bias
    lo, hi = (int(_MIN(total, None)), int(_MAX(total, None))) if total.size else (0, 0)
    held, over = accumulate_to_width(total, acc_bits, overflow, (lo, hi))
    # held fits acc_bits <= 32, or (default 32-bit wrap) requantize's own int32 wrap of
    # held + 0 is exactly the 32-bit adder's wrap: the bias is already in.
    wide = (np.int64(rq.act_min - 1), np.int64(rq.act_max + 1))  # one step beyond: marks every saturation
    bound = max(-lo, hi) if not over else 1 << (acc_bits - 1)  # |held| <= bound: fp skips its wrap scan
    marked = rq.requantize(held, bias=0, act_min=wide[0], act_max=wide[1], acc_bound=bound)
    sat = clamp_counting(marked, rq.act_min, rq.act_max)  # fp.saturate, in place, counted
    return marked, LayerValues(lo, hi, signed_bits(lo, hi), over, sat, int(total.size))


def run_values(prepared: PreparedGraph, inputs, acc_bits: int = 32, overflow: str = "wrap"
               ) -> tuple[dict[int, np.ndarray], dict[int, LayerValues]]:
    """Run the graph with GEMM ops through the modelled datapath.

    Returns ({tensor index: array} for every produced tensor and the inputs,
    {op index: LayerValues} for the GEMM ops).
    """
    g = prepared.graph
    values: dict[int, np.ndarray] = dict(check_inputs(g, inputs))
    stats: dict[int, LayerValues] = {}
    for p in prepared.ops:
        ins = [None if i < 0 else (values[i] if i in values else g.tensors[i].data) for i in p.op.inputs]
        rq = getattr(p.params, "requant", None)
        if p.kernel.accumulate is not None and isinstance(rq, RequantParams):
            out, st = requant_unit(p.kernel.accumulate(p.params, ins), rq, acc_bits, overflow, reuse_acc=True)
            stats[p.op.index] = st
            outs = [out]
        else:
            outs = p.kernel.eval(p.params, ins)
        for t, arr in zip(p.op.outputs, outs):
            tensor = g.tensors[t]
            values[t] = np.asarray(arr).astype(tensor.dtype, copy=False).reshape(tensor.shape)
    return values, stats
