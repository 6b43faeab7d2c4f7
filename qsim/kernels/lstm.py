"""UNIDIRECTIONAL_SEQUENCE_LSTM, TFLite's integer 8x8->16 form: int8 input/hidden state/output,
int8 weights, int32 gate biases, int16 cell state with a power-of-two scale.  TFLite Micro also
has a 16x8 form (int16 input/hidden/output, zero point 0, int64 biases and accumulators, the
int64 MultiplyByQuantizedMultiplier): profile ``tflm`` only; LiteRT has no such kernel.

Per time step t, for each gate G in (input, forget, cell, output)::

    pre_G = sat16(FC(x_t, W_xG, b_G) + FC(h, W_hG))      # Q3.12 (scale 2**-12)
    i, f, o = sigmoid(pre_i), sigmoid(pre_f), sigmoid(pre_o)   # Q0.15
    g = tanh(pre_c)                                      # (the op's activation)
    c = sat16(f*c >> 15 + i*g >> (30 + cell_power)); clip to +-cell_clip if set
    h = sat8((o * tanh(c)) * 2**-30 / s_h + zp_h);  output[t] = h

Each FC is an int8 GEMM rescaled by float32(s_x * s_W) / 2**-12 (a Q31 multiplier) into int16.
The two references differ in the non-linearities and the inter-gate products (``profile.variant``):

* ``"tflm"`` (lstm_eval.h): each FC saturates to int16 before the add; sigmoid/tanh are TFLite's
  int16 table functions (:func:`qsim.fixedpoint.logistic_int16_lut` / ``tanh_int16_lut``); the
  products are MultiplyByQuantizedMultiplier with multipliers formed in double (2**-15,
  2**-30 / s_c, 2**-30 / s_h); h = ... + zp of the hidden-state tensor.
* ``"gemmlowp"`` (LiteRT lstm_eval.cc, Integer8x8_16): the recurrent FC adds to the input FC's
  int16 before one saturation; sigmoid/tanh are gemmlowp's int16 fixed point
  (:func:`qsim.fixedpoint.fixed_logistic` / ``fixed_tanh`` with ``bits=16``); f*c and i*g are
  RoundingDivideByPOT by 15 and 30 + cell_power; the hidden multiplier is formed in float32 from
  the op's 5th intermediate tensor, whose zero point is added (measured: builder models with
  hidden zero point 5 match LiteRT only so).

The state (inputs 18: hidden, 19: cell) is read from the op's variable tensors at the start of
the sequence (their stored data or zeros); TFLite Micro's restrictions hold for both profiles:
no CIFG, peephole, projection or layer norm.  Batch-major input [B, T, I] or time-major
[T, B, I] (``time_major``); output [B, T, S] / [T, B, S].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fixedpoint as fp
from ..errors import QsimError
from ..validate import tensor_label
from . import register

GATES = ("input", "forget", "cell", "output")
# TFLite's input indices (lstm_shared.h): weights from x and from h per gate, biases per gate.
_IN_W = {"input": 1, "forget": 2, "cell": 3, "output": 4}
_REC_W = {"input": 5, "forget": 6, "cell": 7, "output": 8}
_BIAS = {"input": 12, "forget": 13, "cell": 14, "output": 15}
_HIDDEN, _CELL = 18, 19
_VARIANTS = ("tflm", "gemmlowp")
GATE_SCALE = 2.0 ** -12  # Q3.12 gate pre-activations


# Column order of the stacked gates inside the kernel (prepare reorders TFLite's i, f, c, o):
# with the cell state kept right after them, [i, f] and [g, c] are two aligned column blocks,
# so i*g and f*c are one multiply.
_ORDER = ("input", "forget", "output", "cell")
# The gate table's domain: xw (int16) + fc_h (int16, or clipped to [-2**16, 2**16 - 1]) lies in
# [-_LUT_HALF, _LUT_HALF); entry v + _LUT_HALF holds the function of sat16(v).
_LUT_HALF = 3 << 15
_LUT_SPAN = 2 * _LUT_HALF
# Single-sample runs look fc_h up in a table over every reachable accumulator (fewer numpy calls
# per time step) when it has at most this many entries (int32); larger LSTMs use the plan.
_FC_H_TABLE_MAX = 1 << 21


@dataclass
class LSTMParams:
    """Everything input-independent, prepared once.  Stacked gate columns in ``_ORDER`` (column
    k*S + j is cell j of gate _ORDER[k]); all integer formulas are :mod:`qsim.fixedpoint` plans."""

    variant: str  # "tflm" | "gemmlowp"
    int16: bool  # 16x8 form (int16 activations, int64 biases and accumulators; TFLM only)
    time_major: bool
    n_cell: int
    w_x: np.ndarray  # float [I, 4S]: the four input weights, transposed, for BLAS (see _blas_weights)
    w_h: np.ndarray  # int64 [S, 4S]: the four recurrent weights, transposed
    w_h_float: np.ndarray  # the same as w_x's float type (BLAS, for batched runs)
    fc_x: fp.Int64RequantPlan  # x @ w_x -> sat16(FC rescale) (bias - zp_x * rowsum(W_x) folded in)
    fc_h: fp.Int64RequantPlan  # h @ w_h -> FC rescale (-zp_h * rowsum(W_h)); tflm: saturated to int16,
    # gemmlowp: to [-2**16, 2**16 - 1] (sat16(a + b) == sat16(a + clip(b, -2**16, 2**16 - 1)) for an int16 a)
    fc_h_table: tuple | None  # (m0, shift, bias, bound) per column: the single-sample table's inputs (_fc_h_table)
    lut_offset: np.ndarray  # [4S] int64: _LUT_HALF (sigmoid gates) or _LUT_HALF + _LUT_SPAN (cell gate)
    gate_lut: np.ndarray  # int32 [2 * _LUT_SPAN]: sigmoid, then the cell gate's function, of sat16(v) for every
    # v = xw + fc_h in [-_LUT_HALF, _LUT_HALF) (the sum's int16 saturation built in: no clip pass)
    # (int32 tables and gate values: half the cache footprint; every product of two Q0.15 / int16
    # values fits int32, and the plans widen to int64 on their first operation)
    products: fp.Int64RequantPlan  # [i*g, f*c] (2S columns) -> sat16 of the scaled products
    cell_lo: int  # the cell state's saturation: +-cell_clip when set, else int16
    cell_hi: int
    cell_tanh: np.ndarray  # int32 [65536]: tanh of the cell state c at index c mod 2**16
    hidden: fp.Int64RequantPlan  # o * tanh(c) -> h (zero point added, saturated to int8/int16)
    fc_h_lookup: tuple | None = None  # (int32 table, float64 [4S] index base): built by _fc_h_table on first use
    product_halves: tuple = ()  # (i*g plan, f*c plan): ``products``' two column blocks as scalar plans
    plans_cf: tuple = ()  # (fc_x, fc_h, products).channels_first(): _eval_plans' [C, B] layout
    single: "SingleStepTables | None" = None  # built by _single_tables on first single-sample use
    consts: "LSTMConsts | None" = None  # the plans' raw constants (qsim codegen's C kernel reads them)


@dataclass
class SingleStepTables:
    """The single-sample time step's tables (:func:`_single_tables`): each requant of the state
    update is one table lookup or one searchsorted in a threshold array
    (:func:`qsim.fixedpoint.monotone_thresholds` of the plan), and no pass adds a constant:

    * the hidden state is carried as u = h - h_base (its threshold count), with a last sentinel
      column that is always 1 and selects ``w_h``'s last row, the fc_h table's index base;
    * the cell state is carried negated, q = -c: the f*c column block of the products is then
      z = f*q = -(f*c), whose requant v = -g(z) with g(z) = -F(-z) non-decreasing, so that with
      n_ig = count(ig_thr <= i*g) and n_fc = count(fc_thr <= z) (each array starting with one
      INT32_MIN sentinel or not, see _single_tables) the new state is q = clip(n_fc - n_ig)."""

    w_h: np.ndarray  # int64 [S + 1, 4S]: the recurrent weights, then the fc_h table's index base
    # (bias, table segment, h_base * colsum(W_h)): u @ w_h is the fc_h table's index
    fc_h: np.ndarray  # int32: the fc_h table (:func:`_fc_h_table`)
    ig_thr: np.ndarray  # int32: thresholds of the i*g requant: F_ig(x) = -32768 + count
    fc_thr: np.ndarray  # int32: [INT32_MIN] + thresholds of g(z) = -F_fc(-z): F_fc(f*c) = 32768 - count
    q_lo: np.ndarray  # int32 0-d: the negated cell state's clip [-cell_hi, -cell_lo] (0-d arrays: the
    q_hi: np.ndarray  # clip ufunc converts a numpy scalar at every call)
    tanh_neg: np.ndarray  # int32 [65536]: tanh of the cell state c = -q at index q mod 2**16
    hidden_thr: np.ndarray  # int32: [INT32_MIN] + thresholds of the hidden requant (the sentinel's 1)
    h_base: int  # h = u + h_base


@dataclass
class LSTMConsts:
    """The integer constants behind the plans of :class:`LSTMParams`, for code generators: stacked
    gate columns in ``_ORDER`` (column k*S + j is cell j of gate _ORDER[k]).  Multipliers are Q31
    M0, shifts TFLite's sign convention (> 0 left); (multiplier, shift) pairs for the products."""

    bias_x: np.ndarray  # int64 [4S]: bias - zp_x * rowsum(W_x)
    bias_h: np.ndarray  # int64 [4S]: -zp_h * rowsum(W_h)
    mult_x: np.ndarray  # int64 [4S] (one value per gate, repeated)
    shift_x: np.ndarray
    mult_h: np.ndarray
    shift_h: np.ndarray
    input_mul: tuple  # i*g -> cell (tflm: MBQM), (0, 0) for gemmlowp
    forget_mul: tuple  # f*c -> cell
    hidden_mul: tuple  # o*tanh(c) -> h
    hidden_zp: int
    cell_tanh_input: tuple  # (multiplier, left_shift) of tanh_int16_lut(c, ...) (tflm)
    activation: str  # the cell gate's function: "TANH" | "SIGMOID"
    rounding: str  # "double" | "single": the MultiplyByQuantizedMultiplier of every plan


def _scale(t) -> float:
    return float(t.quant.scale0) if t is not None and t.quant is not None else 0.0


def _check(op, graph, problems: list) -> None:
    ins = graph.op_inputs(op)
    if len(ins) != 24 or len(op.outputs) != 1:
        problems.append(f"UNIDIRECTIONAL_SEQUENCE_LSTM needs 24 inputs and 1 output, got {len(ins)} and "
                        f"{len(op.outputs)}")
        return
    absent = [i for i in list(range(1, 9)) + list(range(12, 16)) if ins[i] is None]
    if any(i in (1, 5, 12) for i in absent):
        problems.append("CIFG LSTM (no input gate) is not supported: TFLite Micro requires the input-gate "
                        "weights and bias (inputs 1, 5, 12)")
    if absent:
        problems.append(f"LSTM input(s) {absent} are omitted; the eight gate weights (1-8) and four gate biases "
                        "(12-15) are required")
        return
    for idx, what in ((9, "peephole"), (10, "peephole"), (11, "peephole"), (16, "projection"),
                      (17, "projection"), (20, "layer norm"), (21, "layer norm"), (22, "layer norm"),
                      (23, "layer norm")):
        if ins[idx] is not None:
            problems.append(f"{what} LSTM (input {idx}, {tensor_label(graph, op.inputs[idx])}) is not supported; "
                            "TFLite Micro runs the plain LSTM only")
            break
    x, out, h, c = ins[0], graph.tensors[op.outputs[0]], ins[_HIDDEN], ins[_CELL]
    if x is None or h is None or c is None:
        problems.append("the input, hidden state (18) and cell state (19) are required")
        return
    act = x.dtype
    if not (act in (np.int8, np.int16) and out.dtype == act and h.dtype == act and c.dtype == np.int16):
        problems.append(f"qsim runs TFLite's integer LSTM: int8 (or int16) input, output and hidden state of one type "
                        f"and an int16 cell state; got input {x.dtype}, output {out.dtype}, hidden {h.dtype}, "
                        f"cell {c.dtype}")
        return
    bias_type = np.int32 if act == np.int8 else np.int64
    for i in list(_IN_W.values()) + list(_REC_W.values()):
        t = ins[i]
        if t is not None and (t.dtype != np.int8 or not t.is_const or t.quant is None or t.quant.per_channel
                              or t.quant.zp0 != 0):
            problems.append(f"LSTM weights {tensor_label(graph, op.inputs[i])} must be constant int8, per-tensor, "
                            "zero point 0")
    for i in _BIAS.values():
        t = ins[i]
        if t is not None and (t.dtype != bias_type or not t.is_const):
            problems.append(f"LSTM gate bias {tensor_label(graph, op.inputs[i])} must be constant "
                            f"{np.dtype(bias_type).name} with {act.name} activations")
    for t, i in ((x, 0), (h, _HIDDEN), (c, _CELL), (out, op.outputs[0])):
        if t.quant is None:
            problems.append(f"LSTM tensor {tensor_label(graph, t.index)} has no quantization parameters")
    if c.quant is not None:
        power, exact = fp.checked_log2(c.quant.scale0)
        if not exact:
            problems.append(f"the cell state {tensor_label(graph, op.inputs[_CELL])} has scale {c.quant.scale0:.9g}, "
                            "not a power of two: TFLite's integer LSTM requires a cell-state scale 2**k (it feeds "
                            "tanh by shifts); requantize the model with a power-of-two cell-state range")
        elif power > -9:
            problems.append(f"the cell state {tensor_label(graph, op.inputs[_CELL])} has scale 2**{power}; TFLite's "
                            "integer LSTM requires 2**-9 or finer")
    o = op.options
    if o is not None and o.activation not in ("TANH", "SIGMOID"):
        problems.append(f"LSTM cell-gate activation {o.activation} is not supported (TANH or SIGMOID)")
    if len(x.shape) != 3:
        problems.append(f"LSTM input must be 3-D ([batch, time, features] or time-major), got {list(x.shape)}")
        return
    if problems:
        return
    _check_shapes(op, graph, ins, x, out, h, c, problems)


def _check_shapes(op, graph, ins, x, out, h, c, problems: list) -> None:
    """TFLite's ValidateTensorSize: weights [S, I] / [S, S], biases [S], states of B*S elements,
    output [.., .., S] with the input's first two dimensions."""
    time_major = bool(op.options.time_major) if op.options is not None else False
    n_batch = x.shape[1] if time_major else x.shape[0]
    n_in = x.shape[2]
    wf = ins[_IN_W["forget"]]
    n_cell = wf.shape[0] if len(wf.shape) == 2 else -1
    for g in GATES:
        for idx, want in ((_IN_W[g], (n_cell, n_in)), (_REC_W[g], (n_cell, n_cell)), (_BIAS[g], (n_cell,))):
            if tuple(ins[idx].shape) != want:
                problems.append(f"LSTM {g}-gate tensor {tensor_label(graph, op.inputs[idx])} has shape "
                                f"{list(ins[idx].shape)}, expected {list(want)} (cells {n_cell}, input {n_in})")
    for t, name in ((h, "hidden state"), (c, "cell state")):
        if t.size != n_batch * n_cell:
            problems.append(f"LSTM {name} {tensor_label(graph, t.index)} has {t.size} elements, expected "
                            f"batch {n_batch} x cells {n_cell}")
    if tuple(out.shape) != (x.shape[0], x.shape[1], n_cell):
        problems.append(f"LSTM output {tensor_label(graph, out.index)} has shape {list(out.shape)}, expected "
                        f"{[x.shape[0], x.shape[1], n_cell]}")


def prepare_lstm(op, graph, profile) -> LSTMParams:
    problems: list[str] = []
    _check(op, graph, problems)
    if problems:
        raise QsimError("; ".join(problems))
    ins = graph.op_inputs(op)
    opts = op.options
    variant = profile.variant("UNIDIRECTIONAL_SEQUENCE_LSTM", "tflm")
    if variant not in _VARIANTS:
        raise QsimError(f"unknown LSTM variant '{variant}' in profile {profile.name}")
    rounding = profile.rounding("UNIDIRECTIONAL_SEQUENCE_LSTM")
    int16 = ins[0].dtype == np.int16
    if int16 and variant != "tflm":
        raise QsimError(f"the 16x8 LSTM (int16 activations) runs in TFLite Micro only; LiteRT's integer LSTM takes "
                        f"int8 activations (profile {profile.name}: use --profile tflm / --reference tflm)")
    single = rounding == "single"
    x, h, c = ins[0], ins[_HIDDEN], ins[_CELL]
    n_cell = ins[_IN_W["forget"]].shape[0]
    s_x, s_h = np.float32(_scale(x)), np.float32(_scale(h))
    act_bound = 1 << 15 if int16 else 1 << 7  # |x|, |h| <= 2**15 / 2**7
    cols = {k: [] for k in ("w_x", "w_h", "bias_x", "bias_h", "m_x", "shift_x", "m_h", "shift_h")}
    for g in _ORDER:
        w_x = ins[_IN_W[g]].data.astype(np.int64)
        w_h = ins[_REC_W[g]].data.astype(np.int64)
        bias = ins[_BIAS[g]].data.astype(np.int64)
        # float32(s * s_w) / 2**-12: both references form the product in float (exact POT division)
        m_x, sh_x = fp.quantize_multiplier(float(np.float32(s_x * np.float32(_scale(ins[_IN_W[g]])))) / GATE_SCALE,
                                           single)
        m_h, sh_h = fp.quantize_multiplier(float(np.float32(s_h * np.float32(_scale(ins[_REC_W[g]])))) / GATE_SCALE,
                                           single)
        for k, v in (("w_x", w_x), ("w_h", w_h), ("bias_x", bias - x.quant.zp0 * w_x.sum(axis=1)),
                     ("bias_h", -h.quant.zp0 * w_h.sum(axis=1)), ("m_x", [m_x] * n_cell),
                     ("shift_x", [sh_x] * n_cell), ("m_h", [m_h] * n_cell), ("shift_h", [sh_h] * n_cell)):
            cols[k].append(np.asarray(v, np.int64))
    st = {k: np.concatenate(v) for k, v in cols.items()}
    sat16 = (-32768, 32767)
    # |x @ W^T| <= act_bound * sum|W| per row: the bound the plans' closed forms are proven for
    fc_x = fp.plan_multiply_by_quantized_multiplier(st["m_x"], st["shift_x"], rounding, st["bias_x"], 0, *sat16,
                                                    act_bound * np.abs(st["w_x"]).sum(axis=1), int16)
    fc_h_range = sat16 if variant == "tflm" else (-(1 << 16), (1 << 16) - 1)
    h_bound = act_bound * np.abs(st["w_h"]).sum(axis=1)
    fc_h = fp.plan_multiply_by_quantized_multiplier(st["m_h"], st["shift_h"], rounding, st["bias_h"], 0,
                                                    *fc_h_range, h_bound, int16)
    fc_h_table = None if int16 else (st["m_h"], st["shift_h"], st["bias_h"], h_bound, rounding, fc_h_range)
    power, _ = fp.checked_log2(c.quant.scale0)
    s_c = c.quant.scale0
    clip_f = float(opts.cell_clip) if opts is not None else 0.0
    if variant == "tflm":
        clip = int(min(max(clip_f / s_c, -32768.0), 32767.0)) if clip_f > 0 else 0
        forget_mul = fp.quantize_multiplier(2.0 ** -15 * s_c / s_c, single)
        input_mul = fp.quantize_multiplier(2.0 ** -30 / s_c, single)
        hidden_mul = fp.quantize_multiplier(2.0 ** -30 / float(s_h), single)
        hidden_zp = h.quant.zp0
    else:
        clip = int(min(max(np.float32(clip_f) / np.float32(s_c), np.float32(-32768.0)), np.float32(32767.0))) \
            if clip_f > 0 else 0
        forget_mul = input_mul = (0, 0)
        if not -15 <= power:
            raise QsimError(f"the cell state {tensor_label(graph, op.inputs[_CELL])} has scale 2**{power}; LiteRT's "
                            "integer LSTM takes tanh of the cell state in gemmlowp Q(15 + k) with 0..6 integer "
                            "bits, so k must be in [-15, -9] (TFLite Micro, profile tflm, accepts it)")
        inter = [graph.tensors[i] for i in op.intermediates if 0 <= i < len(graph.tensors)]
        if len(inter) != 5 or inter[4].quant is None:
            raise QsimError("LiteRT's integer LSTM reads the hidden scale from the op's 5th intermediate tensor; "
                            f"this op has {len(op.intermediates)} intermediate(s)"
                            + ("" if len(inter) != 5 else " and the 5th has no quantization"))
        s_hid = np.float32(inter[4].quant.scale0)
        two15 = np.float32(2.0 ** -15)
        hidden_mul = fp.quantize_multiplier(float(np.float32(np.float32(two15 / s_hid) * two15)), single)
        hidden_zp = inter[4].quant.zp0
    activation = opts.activation if opts is not None else "TANH"
    q = np.arange(-32768, 32768, dtype=np.int64)
    if variant == "tflm":
        sigmoid, tanh = fp.logistic_int16_lut(q), fp.tanh_int16_lut(q)
        shift = 12 + power  # (15 + power) - 3 integer bits of the table input
        cell_tanh_input = (3, -shift) if shift < 0 else (0, shift)
        cell_tanh = fp.tanh_int16_lut(q, *cell_tanh_input)
    else:
        sigmoid, tanh = fp.fixed_logistic(q, 3, 16), fp.fixed_tanh(q, 3, 16)
        cell_tanh = fp.fixed_tanh(q, 15 + power, 16)
    n = n_cell
    # i*g and f*c (Q0.15 x Q0.15 / Q0.15 x cell): |product| <= 2**30
    if variant == "tflm":  # MultiplyByQuantizedMultiplier, each saturated to int16
        products = fp.plan_multiply_by_quantized_multiplier([input_mul[0]] * n + [forget_mul[0]] * n,
                                                            [input_mul[1]] * n + [forget_mul[1]] * n, rounding,
                                                            0, 0, *sat16, 1 << 30)
        halves = tuple(fp.plan_multiply_by_quantized_multiplier(*mul, rounding, 0, 0, *sat16, 1 << 30)
                       for mul in (input_mul, forget_mul))
    else:  # RoundingDivideByPOT by 30 + cell_power and by 15
        products = fp.plan_rounding_divide_by_pot([30 + power] * n + [15] * n, *sat16, 1 << 30)
        halves = tuple(fp.plan_rounding_divide_by_pot([e], *sat16, 1 << 30) for e in (30 + power, 15))
    out_range = sat16 if int16 else (-128, 127)
    hidden = fp.plan_multiply_by_quantized_multiplier(*hidden_mul, rounding, 0, hidden_zp, *out_range, 1 << 30)
    offset = np.repeat(_LUT_HALF + _LUT_SPAN * np.array([g == "cell" for g in _ORDER], np.int64), n)
    sat = np.clip(np.arange(-_LUT_HALF, _LUT_HALF), -32768, 32767) + 32768  # entry v: the table value of sat16(v)
    consts = LSTMConsts(st["bias_x"], st["bias_h"], st["m_x"], st["shift_x"], st["m_h"], st["shift_h"],
                        tuple(input_mul), tuple(forget_mul), tuple(hidden_mul), int(hidden_zp),
                        cell_tanh_input if variant == "tflm" else (0, 0), activation, rounding)
    return LSTMParams(variant, int16, bool(opts.time_major) if opts is not None else False, n_cell,
                      _blas_weights(st["w_x"], act_bound), np.ascontiguousarray(st["w_h"].T),
                      _blas_weights(st["w_h"], act_bound), fc_x, fc_h, fc_h_table, offset,
                      np.concatenate([np.asarray(sigmoid)[sat],
                                      np.asarray(sigmoid if activation == "SIGMOID" else tanh)[sat]]).astype(np.int32),
                      products,
                      -clip if clip > 0 else -32768, clip if clip > 0 else 32767,
                      np.roll(np.asarray(cell_tanh, np.int32), 32768), hidden, product_halves=halves,
                      plans_cf=tuple(plan.channels_first() for plan in (fc_x, fc_h, products)), consts=consts)


_clip = fp.clip_ufunc


def _blas_weights(w: np.ndarray, act_bound: int) -> np.ndarray:
    """[N, K] int64 weights -> [K, N] float32 when every GEMM sum act * w (|act| <= act_bound)
    is below 2**24 (float32 holds it exactly, and BLAS's sgemm is twice dgemm), else float64
    (exact below 2**53: always, for int8 weights and int16 activations)."""
    exact32 = act_bound * int(np.abs(w).sum(axis=1).max(initial=0)) < (1 << 24)
    return np.ascontiguousarray(w.T.astype(np.float32 if exact32 else np.float64))


def eval_lstm(p: LSTMParams, inputs) -> list[np.ndarray]:
    """Per time step t, on B rows with the stacked gate columns (``_ORDER``)::

        pre = xw[t] + FC_h(h)                 # xw: all steps' input FCs, computed up front
        [i, f, o, g] = gate_lut[pre]          # one lookup for the four non-linearities (and sat16)
        c = clip(sat16(i*g scaled) + sat16(f*c scaled))
        h = out[t] = requant(o * tanh(c))

    B < 4 rows (a single sample) run :func:`_eval_single` (every requant a lookup) when its tables
    exist (int8 activations, a small enough FC_h table); else, and for batches, every requant is
    its plan (:func:`_eval_plans`: on many rows a pass is cheaper than a lookup in a large table).
    The input FCs do not depend on the state: all time steps in one 2-D GEMM (exact in float).
    """
    x = np.asarray(inputs[0])
    n_t, n_b = (x.shape[0], x.shape[1]) if p.time_major else (x.shape[1], x.shape[0])
    x2 = x.reshape(-1, x.shape[2])  # rows in the input's own layout
    tables = _single_tables(p) if n_b < 4 else None
    if tables is None:
        out = _eval_plans(p, x2, inputs, n_t, n_b)
    else:
        xw = np.matmul(x2, p.w_x).astype(np.int64)
        xw = p.fc_x.apply(xw, out=xw).astype(np.int32).reshape(x.shape[0], x.shape[1], 4 * p.n_cell)
        out = _eval_single(p, tables, xw if p.time_major else xw.transpose(1, 0, 2), inputs, n_t, n_b)
    return [out if p.time_major else out.transpose(1, 0, 2)]


def _eval_plans(p: LSTMParams, x2, inputs, n_t: int, n_b: int) -> np.ndarray:
    """The time steps with every requant by its plan (batches, 16x8, no fc_h table), channels
    first: every array is [C, B] (gate columns as rows, one value of each per-channel constant per
    row: faster passes than one per column, see ``Int64RequantPlan.channels_first``).  ``x2``: the
    input's rows [rows, I] in its own layout; output [T, B, S]."""
    s = p.n_cell
    fc_x, fc_h, products = p.plans_cf
    xw = np.matmul(p.w_x.T, x2.T).astype(np.int64)  # [4S, rows]
    xw = fc_x.apply(xw, out=xw)
    xw += p.lut_offset[:, None]  # pre-activation + offset = index into gate_lut
    xw = xw.reshape(4 * s, n_t, n_b) if p.time_major else xw.reshape(4 * s, n_b, n_t).transpose(0, 2, 1)
    g = np.empty((5 * s, n_b), np.int32)  # [i, f, o, g, c]: gates of this step, then the cell state
    g[4 * s:] = _state(inputs[_CELL], n_b, s).T
    g4, g_if, g_gc, g_o, cell = g[:4 * s], g[:2 * s], g[3 * s:], g[2 * s:3 * s], g[4 * s:]
    hs = np.empty((n_t, s, n_b), np.int64)
    # work arrays, reused by every step (a fresh array per operation costs more than the operation)
    acc, tmp4 = np.empty((4 * s, n_b), np.int64), np.empty((4 * s, n_b), np.int64)
    prod32, prod, tmp2 = np.empty((2 * s, n_b), np.int32), np.empty((2 * s, n_b), np.int64), np.empty((2 * s, n_b),
                                                                                                    np.int64)
    th, tmp1 = np.empty((s, n_b), np.int32), np.empty((s, n_b), np.int64)
    blas = n_b >= 4  # int64 matmul is a plain loop: BLAS in float (exact, see _blas_weights)
    if blas:
        w = p.w_h_float.T
        h_f, acc_f = np.empty((s, n_b), w.dtype), np.empty((4 * s, n_b), w.dtype)
        np.copyto(h_f, _state(inputs[_HIDDEN], n_b, s).T, casting="unsafe")  # exact: |h| <= 2**15
    else:
        w, h = p.w_h.T, np.empty((s, n_b), np.int64)
        h[...] = _state(inputs[_HIDDEN], n_b, s).T
    for t in range(n_t):
        if blas:
            np.matmul(w, h_f, out=acc_f)
            np.copyto(acc, acc_f, casting="unsafe")  # exact integers
        else:
            np.matmul(w, h, out=acc)
        pre = fc_h.apply(acc, out=acc, tmp=tmp4)
        pre += xw[:, t]
        p.gate_lut.take(pre, out=g4, mode="clip")  # in range (see _LUT_HALF)
        np.multiply(g_if, g_gc, out=prod32)  # [i*g, f*c]
        products.apply(prod32, out=prod, tmp=tmp2)
        np.add(prod[:s], prod[s:], out=cell)
        _clip(cell, p.cell_lo, p.cell_hi, out=cell)
        p.cell_tanh.take(cell, out=th, mode="wrap")  # index c mod 2**16
        th *= g_o
        h = p.hidden.apply(th, out=hs[t], tmp=tmp1)
        if blas:
            np.copyto(h_f, h, casting="unsafe")
    return hs.transpose(0, 2, 1).astype(np.int16 if p.int16 else np.int8)


def _eval_single(p: LSTMParams, k: SingleStepTables, xw, inputs, n_t: int, n_b: int) -> np.ndarray:
    """The time steps of a run of B < 4 rows, 12 numpy calls each (see :class:`SingleStepTables`)::

        pre = fc_h[u @ w_h] + xw[t];  [i, f, o, g] = gate_lut[pre]
        q = clip(count(fc_thr <= f*q) - count(ig_thr <= i*g), q_lo, q_hi)     # q = -c
        u = count(hidden_thr <= [o * tanh_neg[q], INT32_MIN])                 # h = u + h_base
    """
    s = p.n_cell
    xw32 = xw  # [T, B, 4S] int32 (fc_x): + fc_h table value = index into gate_lut
    g = np.empty((n_b, 5 * s), np.int32)  # [i, f, o, g, q]
    np.negative(_state(inputs[_CELL], n_b, s), out=g[:, 4 * s:], casting="unsafe")
    g4, g_o, q = g[:, :4 * s], g[:, 2 * s:3 * s], g[:, 4 * s:]
    prod = np.empty((n_b, 2 * s), np.int32)
    prod_ig, prod_fc = prod[:, :s], prod[:, s:]
    g_if, g_gq = g[:, :2 * s], g[:, 3 * s:]
    th = np.empty((n_b, s + 1), np.int32)
    th[:, s] = fp.INT32_MIN  # the sentinel column: count 1
    th_s = th[:, :s]
    u = np.empty((n_b, s + 1), np.int64)
    np.subtract(_state(inputs[_HIDDEN], n_b, s), k.h_base, out=u[:, :s])
    u[:, s] = 1
    acc, pre = np.empty((n_b, 4 * s), np.int64), np.empty((n_b, 4 * s), np.int32)
    dot, add, multiply, subtract, clip = np.dot, np.add, np.multiply, np.subtract, _clip
    w_h, fc_h, gate_lut, tanh_neg = k.w_h, k.fc_h, p.gate_lut, k.tanh_neg
    ig_thr, fc_thr, hidden_thr, q_lo, q_hi = k.ig_thr, k.fc_thr, k.hidden_thr, k.q_lo, k.q_hi
    hs = []
    # positional arguments throughout: keyword parsing costs as much as a pass over 80 values
    for t in range(n_t):
        dot(u, w_h, acc)
        fc_h.take(acc, None, pre, "clip")  # in range: clip mode is the fast path
        add(pre, xw32[t], pre)
        gate_lut.take(pre, None, g4, "clip")
        multiply(g_if, g_gq, prod)  # [i*g, f*q], |.| <= 2**30
        subtract(fc_thr.searchsorted(prod_fc, "right"), ig_thr.searchsorted(prod_ig, "right"), q)
        clip(q, q_lo, q_hi, q)
        tanh_neg.take(q, None, th_s, "wrap")  # index q mod 2**16
        multiply(th_s, g_o, th_s)  # |o * tanh(c)| <= 2**30
        u = hidden_thr.searchsorted(th, "right")
        hs.append(u)
    h = np.array(hs)[:, :, :s]  # [T, B, S]
    return np.add(h, k.h_base, out=np.empty(h.shape, np.int16 if p.int16 else np.int8), casting="unsafe")


def _single_tables(p: LSTMParams) -> SingleStepTables | None:
    """:class:`SingleStepTables` of ``p`` (built on first use, kept in ``p.single``), or None when
    the fc_h table does not exist (16x8, or too large) or a plan is not in its closed form (the
    thresholds need a monotone requant: no reachable int32 wrap)."""
    if p.single is not None:
        return p.single
    lookup = _fc_h_table(p)
    if lookup is None or p.hidden.generic is not None or len(p.product_halves) != 2 \
            or any(h.generic is not None for h in p.product_halves):
        return None
    dom = 1 << 30  # |i*g|, |f*c|, |o*tanh(c)| <= 2**15 * 2**15
    sentinel = np.array([fp.INT32_MIN], np.int64)

    def thresholds(f, lo, hi):
        return fp.monotone_thresholds(lambda x: f(x.reshape(-1, 1)).reshape(-1), -dom, dom, lo, hi)
    ig_plan, fc_plan = p.product_halves
    ig_thr = thresholds(ig_plan.apply, -32768, 32767)  # F_ig(x) = -32768 + count
    # g(z) = -F_fc(-z) in [-32767, 32768]: g = -32767 + count = -32768 + count with the sentinel
    fc_thr = np.concatenate([sentinel, thresholds(lambda z: -fc_plan.apply(-z), -32767, 32768)])
    # so F_ig + F_fc = count_ig - count_fc = c, and q = -c = count_fc - count_ig
    out_lo, out_hi = (-32768, 32767) if p.int16 else (-128, 127)
    hidden_thr = np.concatenate([sentinel, thresholds(p.hidden.apply, out_lo, out_hi)])
    h_base = out_lo - 1  # u = 1 + count: h = out_lo + count = u + h_base
    base = lookup[1].astype(np.int64) + h_base * p.w_h.sum(axis=0)
    q = np.arange(65536, dtype=np.int64)  # index q mod 2**16 of q in [-32767, 32768]: c = -q
    c = -np.where(q > 32768, q - 65536, q)
    p.single = SingleStepTables(np.ascontiguousarray(np.vstack([p.w_h, base[None]])), lookup[0],
                                ig_thr.astype(np.int32), fc_thr.astype(np.int32),
                                np.array(-p.cell_hi, np.int32), np.array(-p.cell_lo, np.int32),
                                p.cell_tanh[c & 0xFFFF], hidden_thr.astype(np.int32), h_base)
    return p.single


def _fc_h_table(p: LSTMParams) -> tuple | None:
    """(table int32, base float64 [4S]) with ``table[acc + base[k]] == FC_h(acc)[k] + lut_offset[k]``
    (the gate table's offset folded in) for every reachable accumulator |acc| <= bound[k] of
    column k, or None when the table would exceed _FC_H_TABLE_MAX entries.  One segment per
    distinct (M0, shift, offset) (a gate), over u = acc + bias in [-r, r], r = max(bound + |bias|)
    of its columns, filled by the plan (:func:`qsim.fixedpoint.plan_multiply_by_quantized_multiplier`)
    applied to every u; built on first use and kept in ``p.fc_h_lookup``."""
    if p.fc_h_lookup is not None or p.fc_h_table is None:
        return p.fc_h_lookup
    m0, shift, bias, bound, rounding, (lo, hi) = p.fc_h_table
    cols = list(zip(m0.tolist(), shift.tolist(), p.lut_offset.tolist()))
    keys = sorted(set(cols))
    reach = {k: 0 for k in keys}
    for key, b, r in zip(cols, bias.tolist(), np.asarray(bound).tolist()):
        reach[key] = max(reach[key], int(r) + abs(int(b)))
    if sum(2 * r + 1 for r in reach.values()) > _FC_H_TABLE_MAX:
        p.fc_h_table = None  # too large: the plan it is, and no second look
        return None
    parts, start = [], {}
    n = 0
    for k in keys:
        r = reach[k]
        u = np.arange(-r, r + 1, dtype=np.int64)
        parts.append(fp.plan_multiply_by_quantized_multiplier(k[0], k[1], rounding, 0, 0, lo, hi, r).apply(u) + k[2])
        start[k] = n + r  # index of u = 0
        n += 2 * r + 1
    base = np.array([start[key] + b for key, b in zip(cols, bias.tolist())], np.float64)
    p.fc_h_lookup = (np.concatenate(parts).astype(np.int32), base)
    return p.fc_h_lookup


def _state(a, n_b: int, n_cell: int) -> np.ndarray:
    """Initial state, int64 [B, S] or [1, S]: a one-row state is shared by every row of a batched
    run (the callers write it into their [B, S] / [S, B] buffers, which broadcasts it)."""
    a = np.asarray(a).astype(np.int64)
    return a.reshape(1, n_cell) if a.size == n_cell else a.reshape(n_b, n_cell)


def batch_lstm(p: LSTMParams, op, graph, batched) -> bool:
    """Batch-major with a model batch of 1: N samples are N independent rows of one sequence
    run (the state starts from its initial value in each); time-major runs sample by sample."""
    return not p.time_major and batched[0] and not any(batched[1:])


register("UNIDIRECTIONAL_SEQUENCE_LSTM", prepare_lstm, eval_lstm, batch=batch_lstm, int16=True)
