"""FULLY_CONNECTED, int8, bit-exact with TFLite's reference kernels.

Weights [out_units, in_units] (TFLite's DEFAULT format), int8, per-tensor
(optionally with a weight zero point, as reference_integer_ops::FullyConnected
allows) or per-output-channel along axis 0 (zero point 0).  The input may have
any rank: it is flattened to [batch, in_units] with batch = size / in_units.
Output [batch, out_units], or input.shape[:-1] + [out_units] with keep_num_dims.

acc[b, o] = sum_i (x[b, i] - x_zp) * (w[o, i] - w_zp), computed as one BLAS
matmul in float32 or float64, whichever conv.exact_float_dtype proves exact,
then requantized per output unit (fixed point, or LiteRT's double rescale).

Input offset folded into the bias (CMSIS-NN's "kernel sum"): with
colsum[o] = sum_i (w[o, i] - w_zp), acc + bias == raw + (bias - x_zp * colsum) where
raw = sum_i x[b, i] * (w[o, i] - w_zp) is the matmul of the int8 input itself, so eval skips
the x - x_zp pass.  Both sides are the same integers, so the requantized outputs are too,
provided the plan's own proofs hold for raw: |raw| <= 128 * max_o sum_i |w[o, i] - w_zp|
(|x| <= 128), which is at most conv.accumulator_bound's bound for the centred input (so the
weights' float dtype stays exact), and |raw + folded bias| = |acc + bias| (no int32 wrap
where the centred form has none).  Only where fixedpoint.plan_requantize_double proves its
double-rounding plan for (folded bias, raw bound) (conv.folded_requant, from the layer's
current ``requant``); otherwise eval centres the input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fixedpoint as fp
from ..errors import QsimError
from . import RequantParams, batch_always, register
from .conv import (accumulator_bound, bias_values, exact_float_dtype, fold_terms, folded_requant, make_requant,
                   require_int8, weight_scales)


@dataclass
class FloatRescaleRequant(RequantParams):
    """RequantParams whose requant stage rescales by the double-precision real scale.

    Used for profiles whose FULLY_CONNECTED variant is "float_rescale"
    (LiteRT 2.3 BUILTIN_REF).  ``multiplier``/``shift`` still hold
    QuantizeMultiplier's Q31 form of ``real_scale`` for reference, but
    ``rounding`` is "float" and only ``real_scale`` is used.
    """

    real_scale: np.ndarray = None  # float64 [C]

    def requantize(self, acc: np.ndarray, bias=None, act_min: int | None = None, act_max: int | None = None,
                   acc_bound: int | None = None) -> np.ndarray:
        return fp.requantize_float_rescale(acc, self.bias if bias is None else bias, self.real_scale,
                                           self.output_zero_point, self.act_min if act_min is None else act_min,
                                           self.act_max if act_max is None else act_max)


@dataclass
class FullyConnectedParams:
    input_zero_point: int
    in_units: int
    out_units: int
    weights_t: np.ndarray  # float32/float64 (exact, see conv.exact_float_dtype) [in_units, out_units] = (w - w_zp).T
    requant: RequantParams
    colsum: np.ndarray | None = None  # int64 [out_units]: sum_i (w[o, i] - w_zp), see conv.folded_requant
    raw_bound: int | None = None  # bound on |x @ weights_t| for int8 x (see the module docstring)


def fc_shapes(x, w, out, o) -> tuple[int, int]:
    """(out_units, in_units) of a FULLY_CONNECTED, its shapes checked (int8 and int16x8)."""
    if w is None or len(w.shape) != 2:
        raise QsimError("FULLY_CONNECTED needs 2-D [out_units, in_units] weights.")
    out_units, in_units = w.shape
    if in_units == 0 or x.size % in_units != 0:
        raise QsimError(f"input '{x.name}' has {x.size} elements, not a multiple of in_units={in_units}.")
    batch = x.size // in_units
    if o is not None and o.keep_num_dims:
        if x.shape[-1] != in_units:
            raise QsimError(f"keep_num_dims needs the input's last dimension ({x.shape[-1]}) to equal "
                            f"in_units ({in_units}).")
    if out.size != batch * out_units:
        raise QsimError(f"output '{out.name}' has {out.size} elements; the op produces {batch} x {out_units}.")
    return out_units, in_units


def fc_operands(op, graph):
    """(input, weights, bias or None, output, options) of a FULLY_CONNECTED in the DEFAULT weights format."""
    ins = graph.op_inputs(op)
    b = ins[2] if len(ins) > 2 else None
    o = op.options
    if o is not None and o.weights_format != 0:
        raise QsimError("FULLY_CONNECTED with shuffled weights (SHUFFLED4x16INT8) is not supported; "
                        "only the DEFAULT weights format is simulated.")
    return ins[0], ins[1], b, graph.op_outputs(op)[0], o


def prepare_fc(op, graph, profile) -> FullyConnectedParams:
    x, w, b, out, o = fc_operands(op, graph)
    require_int8(x, "input")
    require_int8(out, "output")
    out_units, in_units = fc_shapes(x, w, out, o)
    scales = weight_scales(w, out_units, axis=0, role="weights", per_tensor_zero_point_ok=True)
    w_zp = int(w.quant.zero_point[0]) if not w.quant.per_channel else 0
    w_centered = np.asarray(w.data, dtype=np.int64) - w_zp
    wt = w_centered.astype(exact_float_dtype(w_centered, x.quant.zp0, 1)).T
    activation = o.activation if o is not None else "NONE"
    rq = make_requant(x, scales, out, bias_values(b, out_units), activation, profile.rounding(op.opcode))
    if profile.variant(op.opcode) == "float_rescale":
        real = np.float64(x.quant.scale0) * scales / np.float64(out.quant.scale0)
        rq = FloatRescaleRequant(rq.bias, rq.multiplier, rq.shift, rq.output_zero_point, rq.act_min, rq.act_max,
                                 "float", real_scale=real)
    rq.acc_bound = accumulator_bound(w_centered, x.quant.zp0, 1)
    colsum, raw_bound = fold_terms(w_centered, 1)
    return FullyConnectedParams(x.quant.zp0, in_units, out_units, np.ascontiguousarray(wt), rq,
                                colsum=colsum, raw_bound=raw_bound)


def _fc_float(p: FullyConnectedParams, x) -> np.ndarray:
    """Accumulators as exact integers in the weights' float dtype, [batch, out_units]."""
    xs = np.asarray(x).reshape(-1, p.in_units).astype(p.weights_t.dtype)  # (one ufunc with dtype= is 10x slower)
    xs -= p.input_zero_point
    return xs @ p.weights_t


def accumulate_fc(p: FullyConnectedParams, inputs) -> np.ndarray:
    """Raw accumulators int64 [batch, out_units], without bias."""
    return _fc_float(p, inputs[0]).astype(np.int64)


def eval_fc(p: FullyConnectedParams, inputs) -> list[np.ndarray]:
    folded = folded_requant(p)
    if folded is not None:  # the input offset is in the plan's bias (see the module docstring)
        wt = p.weights_t
        return [folded.apply(np.asarray(inputs[0]).reshape(-1, p.in_units).astype(wt.dtype) @ wt)]
    return [p.requant.apply(_fc_float(p, inputs[0]))]


def eval_fc_for(p: FullyConnectedParams):
    """:func:`eval_fc` for these params with its lookups done once (the interpreter binds it in
    its run plan): the folded plan, weights and shapes captured; the same integers.  Params that
    are not ``p`` or whose ``requant`` was replaced since take :func:`eval_fc` itself."""
    folded = folded_requant(p)
    if folded is None:
        return eval_fc
    rq, wt, in_units, apply, passes, ndarray = (p.requant, p.weights_t, p.in_units, folded.apply,
                                                folded.int8_passes, np.ndarray)
    dt, dot = wt.dtype, np.dot

    def bound(q, inputs):
        x = inputs[0]
        if q is not p or q.requant is not rq or x.__class__ is not ndarray:
            return eval_fc(q, inputs)
        # x as the weights' float dtype (exact), then np.dot: BLAS directly, less per-call work
        # than the matmul ufunc (whose own int8 -> float cast is slower still on one sample)
        acc = dot(x.reshape(-1, in_units).astype(dt), wt)
        small = passes.get(acc.shape)  # folded.apply(acc) itself, once it has seen this shape
        return [apply(acc) if small is None else small(acc)]
    return bound


# Batches: the rows of reshape(-1, in_units) are sample-major, so any input/output shape batches.
register("FULLY_CONNECTED", prepare_fc, eval_fc, accumulate=accumulate_fc, batch=batch_always, eval_for=eval_fc_for)
