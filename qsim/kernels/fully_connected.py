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

Chains (single-sample runs, :func:`fc_chain`): consecutive layers whose intermediate tensors
nobody else reads run as one step; a fused-RELU layer hands the next GEMM its outputs minus
act_min as floats (no int8 tensor built), the next layer's bias absorbing act_min
(:func:`chain_plan`, proven by fixedpoint like the fold above).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from .. import fixedpoint as fp
from .. import native
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
    staged = None  # qsim.native.gemm_requant_runner on this layer, built on first use (False: unavailable)

    def bound(q, inputs):
        nonlocal staged
        x = inputs[0]
        if q is not p or q.requant is not rq or x.__class__ is not ndarray:
            return eval_fc(q, inputs)
        if staged is None:
            staged = native.gemm_requant_runner(wt, folded.native_requantizer()) or False
        if staged is not False:  # measured 2.5x faster than the numpy passes at 1 and 64 rows of 64 -> 16
            y = staged(x)
            if y is not None:
                return [y]
        # x as the weights' float dtype (exact), then np.dot: BLAS directly, less per-call work
        # than the matmul ufunc (whose own int8 -> float cast is slower still on one sample)
        acc = dot(x.reshape(-1, in_units).astype(dt), wt)
        small = passes.get(acc.shape)  # folded.apply(acc) itself, once it has seen this shape
        return [apply(acc) if small is None else small(acc)]
    return bound


def chain_plan(prev_plan, p: FullyConnectedParams):
    """The requant plan of int8 FULLY_CONNECTED ``p`` fed by a layer whose own plan ``prev_plan``
    is a "float_relu" :class:`~qsim.fixedpoint.DoubleRequantPlan` with int8 outputs, taking that
    layer's outputs minus its act_min, ``xf = x - a`` (integers 0..span, span = act_max - a;
    :meth:`~qsim.fixedpoint.DoubleRequantPlan.relu_offset_pass`), or None.

    With x = xf + a: sum_i (x_i - x_zp) w_i + bias = sum_i xf_i w_i + bias + (a - x_zp) * colsum,
    the same integers, so requantize(acc, bias) (a function of acc + bias) equals the plan for the
    accumulators sum_i xf_i w_i with the bias bias + (a - x_zp) * colsum, whose every partial sum
    is bounded by span * sum_i |w_i| per channel (= span * raw_bound / 128, see conv.fold_terms):
    fixedpoint.plan_requantize_double proves its plan for that bound (else None), and the float
    weights stay exact when that bound is below 2**24 (float32) or 2**53 (float64)."""
    if type(p) is not FullyConnectedParams or p.colsum is None or not isinstance(prev_plan, fp.DoubleRequantPlan) \
            or not prev_plan.int8_relu:
        return None
    span, a = prev_plan.act_max - prev_plan.act_min, prev_plan.act_min
    bound = np.asarray(p.raw_bound, np.int64) // 128 * span
    if bound.max(initial=0) >= (1 << (24 if p.weights_t.dtype == np.float32 else 53)):
        return None
    return p.requant.double_plan(p.requant.bias + (a - int(p.input_zero_point)) * np.asarray(p.colsum, np.int64),
                                 bound)


def fc_chain(ps: list):
    """One eval for a chain of int8 FULLY_CONNECTED layers, each reading only the previous one's
    output (a single-sample run's lean loop: the intermediate tensors are not kept), or None when
    fewer than two of ``ps`` (from the first) chain: ``(params tuple, eval, count)``, the eval
    covering ``ps[:count]``.  Between chained layers the int8 output is never built: each layer
    hands ``x - act_min`` as the next GEMM's float input (:func:`chain_plan`: the same integers),
    three numpy passes fewer per layer.  Params whose ``requant`` was replaced after this was
    built take each layer's own eval."""
    first = folded_requant(ps[0]) if type(ps[0]) is FullyConnectedParams else None
    if first is None:
        return None
    plans = [first]
    for prev, p in zip(ps, ps[1:]):
        got = chain_plan(plans[-1], p) if p.in_units == getattr(prev, "out_units", None) else None
        if got is None:
            break
        plans.append(got)
    if len(plans) < 2:
        return None
    ps = tuple(ps[:len(plans)])
    rqs = tuple(p.requant for p in ps)
    layers = [(p.in_units, p.weights_t, p.weights_t.dtype, plan) for p, plan in zip(ps, plans)]
    passes: dict = {}  # row count -> [(weights, pass)] (the per-shape closures)
    dot, ndarray, requant_of = np.dot, np.ndarray, operator.attrgetter("requant")

    def build(rows: int):
        """Per layer (weights, pass) for ``rows`` rows (each layer's in_units is the previous
        one's out_units: the rows stay); the last layer's pass is its int8 apply."""
        got = [(wt, plan.relu_offset_pass((rows, wt.shape[1]), nxt[2]))
               for (_, wt, _, plan), nxt in zip(layers, layers[1:])]
        return got + [(layers[-1][1], layers[-1][3].apply)]

    def chain(qs, inputs):
        x = inputs[0]
        if x.__class__ is not ndarray or len(qs) != len(ps) or any(map(operator.is_not, map(requant_of, qs), rqs)):
            for q in qs:  # each layer's own eval (see eval_fc_for)
                x = eval_fc(q, [x])[0]
            return [x]
        xf = x.reshape(-1, layers[0][0]).astype(layers[0][2])
        steps = passes.get(xf.shape[0])
        if steps is None:
            steps = passes[xf.shape[0]] = build(xf.shape[0])
        for wt, step in steps:
            xf = step(dot(xf, wt))
        return [xf]
    return ps, chain, len(ps)


# Batches: the rows of reshape(-1, in_units) are sample-major, so any input/output shape batches.
register("FULLY_CONNECTED", prepare_fc, eval_fc, accumulate=accumulate_fc, batch=batch_always, eval_for=eval_fc_for)
