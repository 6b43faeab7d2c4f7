"""SVDF, full-integer form: int8 input and weights_feature, int16 (or, TFLite Micro only, int8)
weights_time and activation_state, int32 bias, int8 output.

Shapes (TFLite's): input [B, I], weights_feature [F, I], weights_time [F, M], bias [U]
(U = F / rank), activation_state [B, F * M] (a variable tensor: row f of a sample holds the
filter's last M activations, newest last), output [B, U].  One invocation:

1. feature: ``a[b, f] = MBQM(sum_i wf[f, i] * (x[b, i] - zp_in), m1, s1)`` clamped to the
   state type's range, then ``+ zp_state`` wrapped to the state type: the newest state column.
   (TFLite Micro as installed, measured on int8 state: a saturated 127 with zero point -7 is
   stored as 120, -128 wraps to 121; profile variant "SVDF_STATE_ZP" = "after_clamp".  Newer
   TFLite Micro sources add the zero point before the clamp, "before_clamp".  LiteRT's int16
   state has zero point 0, where both agree.)
2. memory: the state with that column appended.  TFLite Micro shifts every row left first
   and writes the column last ("shift_first"); LiteRT overwrites the last column and shifts
   after the op ("shift_after"), so its memory keeps the oldest column instead.  From a
   reset state (what every qsim run and every reference sample starts from) both give the
   same memory; they differ only on stored initial state;
3. time: ``t[b, f] = sum_m wt[f, m] * (mem[b, f, m] - zp_state)`` (int32, wrapping);
4. ``acc[b, u] = bias[u] + sum_r t[b, u * rank + r]`` (int32, wrapping);
5. output ``clamp(MBQM(acc, m2, s2) + zp_out, -128, 127)``.  The fused activation is not
   applied by either reference (LiteRT requires it to be RELU and then ignores it).

``(m1, s1)`` and ``(m2, s2)`` come from QuantizeMultiplier of s_in * s_wf / s_state and
s_state * s_wt / s_out, formed in float32 then widened (profile variant "SVDF_SCALE" =
"float32": LiteRT 2.3) or in double ("double": the TFLite Micro build measured, although its
source writes the product of float32 scales); measured on models whose accumulators sit on
exact rounding ties (tests/test_svdf.py).  MBQM is
:func:`qsim.fixedpoint.multiply_by_quantized_multiplier` with the profile's rounding.
The op's state update is not written back: state never outlives a run
(:func:`qsim.interpreter.variable_start_values`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fixedpoint as fp
from ..errors import QsimError, UndefinedInReferenceError
from . import register
from .elementwise import mul_real_multiplier


@dataclass
class SVDFParams:
    rank: int
    units: int
    memory: int
    input_zero_point: int
    state_zero_point: int  # added before the feature clamp and subtracted in the time sum
    output_zero_point: int
    state_min: int  # the state type's range (int16 or int8)
    state_max: int
    weights_feature: np.ndarray  # float64 [I, F] (exact: |sum| < 2**53)
    weights_time: np.ndarray  # int64 [F, M]
    bias: np.ndarray  # int64 [U] (zeros without a bias)
    m1: int
    s1: int
    m2: int
    s2: int
    rounding: str
    shift_first: bool  # TFLite Micro's memory (see the module docstring); False: LiteRT's
    state_dtype: np.dtype
    zero_point_after_clamp: bool = True  # step 1's order (profile variant "SVDF_STATE_ZP")

    @property
    def state_bits(self) -> int:
        return 8 * self.state_dtype.itemsize


def _name(t) -> str:
    return f"(tensor {t.index} '{t.name}')"


def _role(t, role: str, types: tuple, why: str) -> None:
    if t is None:
        raise QsimError(f"SVDF: the {role} tensor is missing.")
    if np.dtype(t.dtype) not in [np.dtype(d) for d in types]:
        names = " or ".join(np.dtype(d).name for d in types)
        raise QsimError(f"SVDF: {role} {_name(t)} is {np.dtype(t.dtype).name}; the integer SVDF needs {names} "
                        f"there ({why}).")
    if t.quant is None or t.quant.per_channel:
        raise QsimError(f"SVDF: {role} {_name(t)} needs one (per-tensor) scale and zero point.")


def prepare_svdf(op, graph, profile) -> SVDFParams:
    ins = graph.op_inputs(op)
    if len(ins) != 5 or len(op.outputs) != 1:
        raise QsimError(f"SVDF takes 5 inputs (input, weights_feature, weights_time, bias, activation_state) "
                        f"and 1 output; this one has {len(ins)} and {len(op.outputs)}.")
    x, wf, wt, b, state = ins
    out = graph.op_outputs(op)[0]
    ref = "TFLite Micro and LiteRT"
    _role(x, "input", (np.int8,), f"{ref}: hybrid and float SVDF are not simulated")
    _role(wf, "weights_feature", (np.int8,), f"{ref} define no other integer form")
    _role(out, "output", (np.int8,), f"{ref} define no other integer form")
    _role(state, "activation_state", (np.int16, np.int8), "int8 only in TFLite Micro")
    _role(wt, "weights_time", (np.dtype(state.dtype),), "the activation_state's type")
    if not state.is_variable:
        raise QsimError(f"SVDF: activation_state {_name(state)} must be a variable tensor (is_variable).")
    for t, role in ((wf, "weights_feature"), (wt, "weights_time")):
        if not t.is_const:
            raise QsimError(f"SVDF: {role} {_name(t)} must be a constant tensor.")
    int8_state = np.dtype(state.dtype) == np.int8
    if int8_state and profile.variant("SVDF_INT8_STATE", "ok") != "ok":
        raise UndefinedInReferenceError(
                        f"SVDF: activation_state {_name(state)} and weights_time {_name(wt)} are int8. TFLite "
                        f"Micro defines this form; under profile '{profile.name}' the reference (LiteRT) reads "
                        "them as int16, past the end of their buffers, so it has no defined answer to simulate.")
    if not int8_state and state.quant.zp0 != 0:
        raise QsimError(f"SVDF: int16 activation_state {_name(state)} has zero point {state.quant.zp0}; "
                        "TFLite's int16 state is symmetric (zero point 0).")
    if wf.quant.zp0 != 0 or wt.quant.zp0 != 0:
        raise QsimError("SVDF: weights_feature and weights_time must be symmetric (zero point 0).")
    rank = int(getattr(op.options, "rank", 0) or 0) if op.options is not None else 0
    if len(x.shape) != 2 or len(wf.shape) != 2 or len(wt.shape) != 2 or len(state.shape) != 2 \
            or len(out.shape) != 2:
        raise QsimError("SVDF: input, weights_feature, weights_time, activation_state and output must be 2-D.")
    batch, n_in = x.shape
    filters, memory = wt.shape
    if rank < 1 or filters % rank:
        raise QsimError(f"SVDF: rank {rank} must be >= 1 and divide the {filters} filters.")
    units = filters // rank
    if tuple(wf.shape) != (filters, n_in) or tuple(state.shape) != (batch, filters * memory) \
            or tuple(out.shape) != (batch, units) or memory < 1:
        raise QsimError(f"SVDF: shapes disagree: input {list(x.shape)}, weights_feature {list(wf.shape)}, "
                        f"weights_time {list(wt.shape)}, activation_state {list(state.shape)}, output "
                        f"{list(out.shape)} (want [F, I], [F, M], [B, F*M], [B, F/rank]).")
    if b is None:
        bias = np.zeros(units, np.int64)
    else:
        _role(b, "bias", (np.int32,), f"{ref}")
        if not b.is_const or tuple(b.shape) != (units,):
            raise QsimError(f"SVDF: bias {_name(b)} must be a constant int32 [{units}].")
        bias = np.asarray(b.data, np.int64)
    variant = profile.variant("SVDF_SCALE", "double")
    s_state = state.quant.scale0
    try:
        m1, s1 = fp.quantize_multiplier(mul_real_multiplier(x.quant.scale0, wf.quant.scale0, s_state, variant))
        m2, s2 = fp.quantize_multiplier(mul_real_multiplier(s_state, wt.quant.scale0, out.quant.scale0, variant))
    except (ValueError, QsimError) as e:
        raise QsimError(f"SVDF: an effective scale cannot be quantized ({e}).") from None
    info = np.iinfo(state.dtype)
    return SVDFParams(rank, units, memory, x.quant.zp0, state.quant.zp0 if int8_state else 0, out.quant.zp0,
                      int(info.min), int(info.max),
                      np.ascontiguousarray(np.asarray(wf.data, np.float64).T), np.asarray(wt.data, np.int64),
                      bias, m1, s1, m2, s2, profile.rounding("SVDF"),
                      profile.variant("SVDF", "shift_first") == "shift_first", np.dtype(state.dtype),
                      profile.variant("SVDF_STATE_ZP", "after_clamp") == "after_clamp")


def eval_svdf(p: SVDFParams, inputs) -> list[np.ndarray]:
    """Integer-only; inputs (x [N, I], ..., state [B, F*M]); a batch N of samples whose model
    batch is 1 shares the one start state (never written)."""
    x = np.asarray(inputs[0]).astype(np.float64)
    n = x.shape[0]
    filters = p.weights_time.shape[0]
    state = np.asarray(inputs[4]).astype(np.int64).reshape(-1, filters, p.memory)
    if state.shape[0] != n:
        state = np.broadcast_to(state, (n, filters, p.memory))
    dot = ((x - p.input_zero_point) @ p.weights_feature).astype(np.int64)  # [N, F]; |dot| < 2**31
    newest = fp.multiply_by_quantized_multiplier(fp.wrap_int32(dot), p.m1, p.s1, p.rounding)
    if p.zero_point_after_clamp:
        newest = fp.wrap_bits(np.clip(newest, p.state_min, p.state_max) + p.state_zero_point, p.state_bits)
    else:
        newest = np.clip(newest + p.state_zero_point, p.state_min, p.state_max)
    kept = state[:, :, 1:] if p.shift_first else state[:, :, :-1]
    mem = np.concatenate([kept, newest[:, :, None]], axis=2) - p.state_zero_point
    t = fp.wrap_int32(np.einsum("nfm,fm->nf", mem, p.weights_time))
    acc = fp.wrap_int32(t.reshape(n, p.units, p.rank).sum(axis=2) + p.bias)
    y = fp.multiply_by_quantized_multiplier(acc, p.m2, p.s2, p.rounding) + p.output_zero_point
    return [np.clip(y, -128, 127).astype(np.int8)]


def _batch(params, op, graph, batched) -> bool:
    return not batched[4]  # the state is never batched (it is not computed from the inputs)


register("SVDF", prepare_svdf, eval_svdf, batch=_batch, int16=True)
