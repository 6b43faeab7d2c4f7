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
from .. import native
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
    # Prepared for eval (everything input-independent; None: built by __post_init__):
    feature: fp.Int64RequantPlan | None = None  # x @ wf -> step 1's clamped value (zp_in folded into its bias)
    output: fp.Int64RequantPlan | None = None  # rank sum -> step 5's int8 value (bias, zp_out folded in)
    time_zp: np.ndarray | None = None  # int64 [F]: zp_state * sum_m wt[f, m] (step 3's zero point, factored out)
    wraps: bool = True  # False: every int32 sum of steps 1, 3, 4 is proven inside int32 (no wrap pass)
    kept_cache: tuple | None = None  # (read-only state array, its _kept_part, its _output_table): once per start state
    # The table path (rank 1, no wraps; see eval_svdf): step 1 as a table of v = x @ wf + dot_bias
    # (monotone in v), giving j = clamped value - its least reachable value; None: not built
    feature_table: np.ndarray | None = None  # [window] (smallest unsigned type): j at v = window start + index
    feature_weights: np.ndarray | None = None  # [I, F] wf as float32 where exact (see _plan_table), else float64
    feature_shift: np.ndarray | None = None  # [F] (its dtype): dot_bias - window start (x @ wf + it = the index)
    feature_values: np.ndarray | None = None  # int64 [W]: the clamped values j = 0 .. W - 1 stand for

    def __post_init__(self):
        if self.feature is None:
            self._plan()

    def _plan(self) -> None:
        """Step 1: ``dot = x @ wf - zp_in * sum(wf)``, |x| <= 128, so |x @ wf| <= 128 * sum|wf|;
        steps 3-4: |mem - zp_state| <= span = max(state_max - zp, zp - state_min), so |acc - bias| <= rank * span *
        max_f sum|wt[f]|.  When both sums (with the biases) stay inside int32 the int32 wraps
        are the identity and the plans get these bounds (their closed forms are proven for them);
        otherwise the wraps are applied and the plans take their general form."""
        wf = self.weights_feature  # [I, F] float64 (exact integers)
        abs_wf = np.abs(wf).sum(axis=0).astype(np.int64)
        dot_bias = -self.input_zero_point * wf.sum(axis=0).astype(np.int64)
        span = max(self.state_max - self.state_zero_point, self.state_zero_point - self.state_min)  # |mem - zp|
        t_bound = self.rank * span * int(np.abs(self.weights_time).sum(axis=1).max(initial=0))
        self.wraps = (int((128 * abs_wf + np.abs(dot_bias)).max(initial=0)) > fp.INT32_MAX
                      or t_bound + int(np.abs(self.bias).max(initial=0)) > fp.INT32_MAX)
        if self.zero_point_after_clamp:  # clamp, then + zp wrapped (eval)
            zp, lo, hi = 0, self.state_min, self.state_max
        else:
            zp, lo, hi = self.state_zero_point, self.state_min, self.state_max
        if self.wraps:  # the sums are wrapped in eval; the plans take the wrapped int32 as is
            self.feature = fp.plan_multiply_by_quantized_multiplier(self.m1, self.s1, self.rounding, 0, zp, lo, hi)
            self.output = fp.plan_multiply_by_quantized_multiplier(self.m2, self.s2, self.rounding, 0,
                                                                   self.output_zero_point, -128, 127)
        else:
            self.feature = fp.plan_multiply_by_quantized_multiplier(self.m1, self.s1, self.rounding, dot_bias, zp,
                                                                    lo, hi, 128 * abs_wf)
            self.output = fp.plan_multiply_by_quantized_multiplier(self.m2, self.s2, self.rounding, self.bias,
                                                                   self.output_zero_point, -128, 127, t_bound)
        self.time_zp = self.state_zero_point * self.weights_time.sum(axis=1)
        if not self.wraps and self.rank == 1:
            self._plan_table(zp, lo, hi, dot_bias, 128 * abs_wf)

    def _plan_table(self, zp: int, lo: int, hi: int, dot_bias: np.ndarray, dot_bound: np.ndarray) -> None:
        """Step 1 as a table over ``v = x @ wf + dot_bias`` (per-tensor multiplier: one function of v,
        monotone non-decreasing, see :func:`qsim.fixedpoint.monotone_window_table`), built from
        the requantization's definition; skipped when the window is too wide."""
        step1 = fp.plan_multiply_by_quantized_multiplier(self.m1, self.s1, self.rounding, 0, zp, lo, hi)
        win = fp.monotone_window_table(step1.apply, int((dot_bias - dot_bound).min(initial=0)),
                                       int((dot_bias + dot_bound).max(initial=0)), _TABLE_MAX)
        if win is None:
            return
        k_min = int(win.table[0])
        width = int(win.table[-1]) - k_min + 1
        self.feature_table = (win.table - k_min).astype(np.uint8 if width <= 256 else np.uint16 if width <= 65536
                                                         else np.int64)  # small: cache-friendly
        shift = dot_bias - win.start
        # float32 when every partial sum of x @ wf and the index sum stay below 2**24 (exact integers)
        f32 = int(dot_bound.max(initial=0)) + int(np.abs(shift).max(initial=0)) < 1 << 24
        dtype = np.float32 if f32 else np.float64
        self.feature_weights = self.weights_feature.astype(dtype)
        self.feature_shift = shift.astype(dtype)
        self.feature_values = np.arange(k_min, int(win.table[-1]) + 1, dtype=np.int64)

    @property
    def state_bits(self) -> int:
        return 8 * self.state_dtype.itemsize


_TABLE_MAX = 1 << 20  # entries of a step-1 window or an output table (larger: the general path)


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
    batch is 1 shares the one start state (never written).

    Step 3 is split by linearity: ``t = sum_m<M-1 wt[:, m] * kept[m] + wt[:, -1] * newest -
    zp_state * sum_m wt`` (int64, exact), the kept columns' part computed on the state's own
    rows (one row for a whole batch).

    Table path (rank 1, no int32 wrap reachable, a read-only start state): step 1 is a table of
    ``v = x @ wf + dot_bias`` (exact integers: float32 below 2**24, else float64; see
    _plan_table) giving the newest column's index j among its W reachable values, and steps 2-5
    per filter a function of that one value: a table [B, F, W] of their results for every j,
    built once per start state by the general steps below.  Output = ``table[b, f, j]``: a
    handful of numpy calls per op, or (float32 GEMM, W small enough for a uint8/uint16 window,
    the native path available) the GEMM by BLAS and the lookups in one C call
    (:func:`qsim.native.svdf_lookup_runner`: the same index arithmetic and clip)."""
    x = np.asarray(inputs[0])
    if p.feature_table is not None:
        cached = p.kept_cache  # (the lookup of _output_table, inline: the common case of every run)
        out = cached[2] if cached is not None and cached[0] is inputs[4] else _output_table(p, np.asarray(inputs[4]))
        if out is not None:
            y_table, offsets, run = out
            y = run(x) if run is not None else None  # the lookups in C (qsim.native.svdf_lookup_runner)
            if y is not None:
                return [y]
            v = np.dot(x.astype(p.feature_weights.dtype), p.feature_weights)  # np.dot: less per-call work than matmul
            index = np.add(v, p.feature_shift, out=np.empty(v.shape, np.intp), casting="unsafe")  # exact integers
            return [y_table.take(np.add(p.feature_table.take(index, mode="clip"), offsets))]
    n = x.shape[0]
    filters, memory = p.weights_time.shape
    dot = np.empty((n, filters), np.int64)
    np.copyto(dot, x.astype(np.float64) @ p.weights_feature, casting="unsafe")  # exact: |dot| < 2**53
    if p.wraps:
        dot = fp.wrap_int32(dot - p.input_zero_point * p.weights_feature.sum(axis=0).astype(np.int64))
    newest = _stored(p, p.feature.apply(dot, out=dot))
    t = _steps_3_to_5(p, newest, _kept_part(p, np.asarray(inputs[4])) if memory > 1 else None)
    return [t.astype(np.int8)]


def _stored(p: SVDFParams, clamped: np.ndarray) -> np.ndarray:
    """Step 1's stored value from its clamped one (the zero point added after the clamp, wrapped)."""
    if p.zero_point_after_clamp and p.state_zero_point:
        return fp.wrap_bits(clamped + p.state_zero_point, p.state_bits)
    return clamped


def _steps_3_to_5(p: SVDFParams, newest: np.ndarray, kept) -> np.ndarray:
    """Steps 3-5 (int64 result) from the newest column ``newest`` [..., F] (stored values, int64)
    and the kept columns' part ``kept`` ([B or 1, F], broadcasting against it; None for memory 1)."""
    t = newest * p.weights_time[:, -1]
    t -= p.time_zp
    if kept is not None:
        t += kept
    if p.rank > 1:
        t = t.reshape(t.shape[:-1] + (p.units, p.rank)).sum(axis=-1)
    if p.wraps:
        t = fp.wrap_int32(t + p.bias)  # = the int32 wraps of each sum (wrapping is modular)
    return p.output.apply(t, out=t)


def _kept_part(p: SVDFParams, state: np.ndarray) -> np.ndarray:
    """``sum_m<M-1 wt[f, m] * kept[b, f, m]`` [B, F] (int64) of the state's kept columns; a
    read-only state (the run's start value, the same array every run) is computed once."""
    cached = p.kept_cache
    if cached is not None and cached[0] is state:
        return cached[1]
    filters, memory = p.weights_time.shape
    mem = state.reshape(-1, filters, memory)
    part = np.einsum("bfm,fm->bf", mem[:, :, 1:] if p.shift_first else mem[:, :, :-1], p.weights_time[:, :-1])
    if not state.flags.writeable:
        p.kept_cache = (state, part, None)
    return part


def _output_table(p: SVDFParams, state: np.ndarray) -> tuple | None:
    """The table path's (output table int8 [B * F * W], index offsets int64 [B, F], its native runner
    or None) for a read-only
    start state, built once from :func:`_steps_3_to_5` on every reachable newest value; None for
    a writable state or a table over ``_TABLE_MAX`` entries (then the general path runs)."""
    cached = p.kept_cache
    if cached is not None and cached[0] is state and cached[2] is not None:
        return cached[2]
    if state.flags.writeable:
        return None
    filters, memory = p.weights_time.shape
    rows = state.size // (filters * memory)
    width = p.feature_values.size
    if rows * filters * width > _TABLE_MAX:
        return None
    kept = _kept_part(p, state) if memory > 1 else None
    newest = np.broadcast_to(_stored(p, p.feature_values)[:, None, None], (width, rows, filters))
    y = _steps_3_to_5(p, newest, kept)  # [W, B, F]
    table = np.ascontiguousarray(y.transpose(1, 2, 0)).astype(np.int8).reshape(-1)
    offsets = np.arange(rows * filters, dtype=np.int64).reshape(rows, filters) * width
    run = native.svdf_lookup_runner(p.feature_weights, p.feature_shift, p.feature_table, table, width, rows)
    p.kept_cache = (state, kept, (table, offsets, run))
    return p.kept_cache[2]


def _batch(params, op, graph, batched) -> bool:
    return not batched[4]  # the state is never batched (it is not computed from the inputs)


register("SVDF", prepare_svdf, eval_svdf, batch=_batch, int16=True)
