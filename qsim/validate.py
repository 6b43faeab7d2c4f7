"""Whole-model validation, run once at load before any kernel sees the graph.

In the spirit of TFLite's flatbuffer verifier plus its ops' ``Prepare`` checks:
:func:`validate` returns one line per violation (all of them, never just the
first), each naming the op (``op #3 CONV_2D``) or tensor (``tensor 7 'conv1'``)
and what is wrong.  :func:`qsim.loader.load` raises
:class:`qsim.errors.InvalidModelError` when the list is not empty.

What is checked (a model passing all of it may still use ops or types qsim
does not implement: those stay the interpreter's "unsupported" list, exit 2
from ``run`` but exit 0 from ``inspect``):

* indices: every operator's opcode index, tensor indices (-1 only at an
  optional input position), tensor buffer indices, subgraph inputs/outputs;
* arity and operand types of the ops in :data:`OP_RULES` (a table, not code);
* tensors: readable type, non-negative dimensions, buffer size = elements x
  itemsize, at most :data:`MAX_TENSOR_ELEMENTS` elements, activations at most
  :data:`MAX_ACTIVATION_BYTES` in total; quantization: scales finite and > 0,
  zero points within the tensor type's range, as many zero points as scales,
  a per-channel axis inside the shape whose dimension equals the scale count
  (a 1-D tensor with one scale per element may name any axis: person_detect's
  biases carry the filter's axis 3, which TFLite Micro accepts);
* data flow: every consumed tensor is a graph input, a constant, a variable, or
  the output of an *earlier* op (so the graph is acyclic and in order); no
  tensor is written twice; every graph output is produced by an op or is a
  graph input (not a constant);
* options: stride, dilation and filter sizes >= 1, depth multiplier >= 0
  (converters write 0 for "implied by the filter"), known padding and fused
  activation enums, CONCATENATION / SQUEEZE axes inside the rank, finite
  SOFTMAX beta and LEAKY_RELU alpha;
* work bounds: a window op whose padded input or im2col buffer would exceed
  :data:`MAX_SCRATCH_ELEMENTS`, whose window exceeds :data:`MAX_WINDOW_TAPS`
  taps or whose multiply-accumulates exceed :data:`MAX_OP_MACS` is refused
  (a flipped byte in a dilation must not become a multi-GiB allocation).
"""
from __future__ import annotations

import math

import numpy as np

from . import ir
from .errors import InvalidModelError

MAX_TENSOR_ELEMENTS = 1 << 28  # any one tensor
MAX_ACTIVATION_BYTES = 1 << 30  # sum of all non-constant tensors
MAX_SCRATCH_ELEMENTS = 1 << 26  # padded input / im2col of one window op (float64: 512 MiB)
MAX_WINDOW_TAPS = 1 << 16  # filter_h * filter_w of one window op (a 256x256 global pool)
MAX_OP_MACS = 1 << 34  # multiply-accumulates (or window taps x outputs) of one op

# Operand kinds: "x" any tensor, "i" an integer index tensor (int32/int64, e.g. axes, paddings, shape).
# inputs: (min, max or None, kinds by position (last repeats), positions where -1 = omitted is allowed)
# outputs: (min, max).  same_type: every non-index input and the output share one element type.
_CONV = dict(inputs=(2, 3, "xxx", {2}), outputs=(1, 1), same_type=False)
_UNARY = dict(inputs=(1, 1, "x", set()), outputs=(1, 1), same_type=True)
_BINARY = dict(inputs=(2, 2, "xx", set()), outputs=(1, 1), same_type=True)
_REDUCE = dict(inputs=(2, 2, "xi", set()), outputs=(1, 1), same_type=True)
OP_RULES: dict[str, dict] = {
    "CONV_2D": _CONV, "DEPTHWISE_CONV_2D": _CONV, "FULLY_CONNECTED": _CONV,
    "AVERAGE_POOL_2D": _UNARY, "MAX_POOL_2D": _UNARY, "L2_POOL_2D": _UNARY,
    "MEAN": _REDUCE, "SUM": _REDUCE, "REDUCE_MAX": _REDUCE, "REDUCE_MIN": _REDUCE, "REDUCE_PROD": _REDUCE,
    "ADD": _BINARY, "SUB": _BINARY, "MUL": _BINARY, "DIV": _BINARY, "MAXIMUM": _BINARY, "MINIMUM": _BINARY,
    "LOGISTIC": _UNARY, "TANH": _UNARY, "RELU": _UNARY, "RELU6": _UNARY, "RELU_N1_TO_1": _UNARY,
    "LEAKY_RELU": _UNARY, "HARD_SWISH": _UNARY, "SQUEEZE": _UNARY,
    "SOFTMAX": dict(inputs=(1, 1, "x", set()), outputs=(1, 1), same_type=False),  # int8 -> int8 | int16
    "QUANTIZE": dict(inputs=(1, 1, "x", set()), outputs=(1, 1), same_type=False),
    "DEQUANTIZE": dict(inputs=(1, 1, "x", set()), outputs=(1, 1), same_type=False),
    "RESHAPE": dict(inputs=(1, 2, "xi", {1}), outputs=(1, 1), same_type=True),
    "PAD": dict(inputs=(2, 2, "xi", set()), outputs=(1, 1), same_type=True),
    "PADV2": dict(inputs=(2, 3, "xix", {2}), outputs=(1, 1), same_type=True),
    "TRANSPOSE": dict(inputs=(2, 2, "xi", set()), outputs=(1, 1), same_type=True),
    "CONCATENATION": dict(inputs=(1, None, "x", set()), outputs=(1, 1), same_type=True),
    "STRIDED_SLICE": dict(inputs=(4, 4, "xiii", set()), outputs=(1, 1), same_type=True),
}
_INDEX_TYPES = (np.dtype(np.int32), np.dtype(np.int64))


def validate(g: ir.Graph) -> list[str]:
    """Every violation of the model's structural rules, one line each (empty: valid)."""
    problems: list[str] = []
    _check_tensors(g, problems)
    _check_graph_io(g, problems)
    for op in g.operators:
        _check_op(g, op, problems)
    _check_dataflow(g, problems)
    return problems


def raise_if_invalid(g: ir.Graph) -> None:
    """Raise :class:`InvalidModelError` listing every violation :func:`validate` finds."""
    problems = validate(g)
    if problems:
        raise InvalidModelError(
            f"{g.source or 'the model'} is not a valid TFLite model ({len(problems)} problem(s)); it was "
            "probably corrupted or written by a broken exporter. Re-export it or copy it again:\n  - "
            + "\n  - ".join(problems), problems)


# ------------------------------------------------------------------ naming

def tensor_label(g: ir.Graph, i: int) -> str:
    """``tensor 7 'conv1'`` (or just ``tensor 7`` when the index is out of range)."""
    return f"tensor {i} '{g.tensors[i].name}'" if 0 <= i < len(g.tensors) else f"tensor {i}"


def op_label(g: ir.Graph, op: ir.Operator) -> str:
    """``op #3 CONV_2D (output 'conv1')``, safe on any operator."""
    outs = [t for t in op.outputs if 0 <= t < len(g.tensors)]
    return f"op #{op.index} {op.opcode}" + (f" (output '{g.tensors[outs[0]].name}')" if outs else "")


# ------------------------------------------------------------------ tensors

def _dtype_range(dt: np.dtype) -> tuple[int, int] | None:
    return (int(np.iinfo(dt).min), int(np.iinfo(dt).max)) if np.issubdtype(dt, np.integer) else None


def _check_tensors(g: ir.Graph, problems: list[str]) -> None:
    act_bytes = 0
    for t in g.tensors:
        where = tensor_label(g, t.index)
        if np.dtype(t.dtype) == np.dtype(np.void):
            problems.append(f"{where}: its element type is one qsim cannot read (string/resource/variant/unknown)")
        if any(d < 0 for d in t.shape):
            problems.append(f"{where}: shape {list(t.shape)} has a negative dimension")
            continue
        n = t.size
        if n > MAX_TENSOR_ELEMENTS:
            problems.append(f"{where}: shape {list(t.shape)} has {n:,} elements, more than the "
                            f"{MAX_TENSOR_ELEMENTS:,} qsim accepts in one tensor")
        if g.n_buffers is not None and not 0 <= t.buffer < g.n_buffers:
            problems.append(f"{where}: buffer index {t.buffer} is out of range (the model has {g.n_buffers} buffers)")
        elif t.buffer_bytes < 0:
            problems.append(f"{where}: its buffer {t.buffer} points past the end of the file (truncated file)")
        elif t.buffer_bytes > 0 and t.data is None and np.dtype(t.dtype).itemsize:
            problems.append(f"{where}: shape {list(t.shape)} needs {n * np.dtype(t.dtype).itemsize:,} bytes of "
                            f"{np.dtype(t.dtype).name} but its buffer {t.buffer} holds {t.buffer_bytes:,}")
        if not t.is_const and n <= MAX_TENSOR_ELEMENTS:
            act_bytes += n * np.dtype(t.dtype).itemsize
        _check_quant(t, where, problems)
    if act_bytes > MAX_ACTIVATION_BYTES:
        problems.append(f"the model's activation tensors need {act_bytes:,} bytes in total, more than the "
                        f"{MAX_ACTIVATION_BYTES:,} qsim accepts")


def _check_quant(t: ir.Tensor, where: str, problems: list[str]) -> None:
    q = t.quant
    if q is None:
        return
    scale = np.asarray(q.scale, dtype=np.float64)
    bad = ~(np.isfinite(scale) & (scale > 0))
    if bad.any():
        problems.append(f"{where}: quantization scale {float(scale[bad][0]):.6g} (entry {int(np.argmax(bad))}) "
                        "is not a finite positive number")
    if q.zero_point.size != scale.size:
        problems.append(f"{where}: {scale.size} scale(s) but {q.zero_point.size} zero point(s)")
    rng = _dtype_range(np.dtype(t.dtype)) if np.dtype(t.dtype) != np.dtype(np.void) else None
    if rng is not None and q.zero_point.size:
        zp = q.zero_point
        out = (zp < rng[0]) | (zp > rng[1])
        if out.any():
            problems.append(f"{where}: zero point {int(zp[out][0])} is outside the {np.dtype(t.dtype).name} "
                            f"range [{rng[0]}, {rng[1]}]")
    if scale.size > 1:
        if len(t.shape) == 1 and t.shape[0] == scale.size:
            pass  # a 1-D per-channel tensor (a bias) whose axis names the filter's: TFLM reads it so
        elif not 0 <= q.axis < len(t.shape):
            problems.append(f"{where}: per-channel quantization axis {q.axis} is outside its "
                            f"{len(t.shape)}-D shape {list(t.shape)}")
        elif t.shape[q.axis] != scale.size:
            problems.append(f"{where}: {scale.size} per-channel scales along axis {q.axis}, whose dimension "
                            f"is {t.shape[q.axis]}")


# ------------------------------------------------------------------ graph inputs/outputs

def _check_graph_io(g: ir.Graph, problems: list[str]) -> None:
    n = len(g.tensors)
    for role, idxs in (("input", g.inputs), ("output", g.outputs)):
        for k, i in enumerate(idxs):
            if not 0 <= i < n:
                problems.append(f"graph {role} {k} names tensor {i}, out of range (the model has {n} tensors)")
        if len(set(idxs)) != len(idxs):
            problems.append(f"graph {role}s {list(idxs)} name a tensor twice")
    for i in g.inputs:
        if 0 <= i < n and g.tensors[i].is_const:
            problems.append(f"graph input {tensor_label(g, i)} is a constant (it has data in the file)")


# ------------------------------------------------------------------ operators

def _check_op(g: ir.Graph, op: ir.Operator, problems: list[str]) -> None:
    where = op_label(g, op)
    n = len(g.tensors)
    if g.n_opcodes is not None and not 0 <= op.opcode_index < g.n_opcodes:
        problems.append(f"op #{op.index}: opcode index {op.opcode_index} is out of range "
                        f"(the model has {g.n_opcodes} operator codes)")
        return
    rule = OP_RULES.get(op.opcode)
    optional = rule["inputs"][3] if rule else set()
    indices_ok = True
    for k, i in enumerate(op.inputs):
        if i == -1 and (k in optional or rule is None):
            continue
        if not 0 <= i < n:
            problems.append(f"{where}: input {k} names tensor {i}, out of range (the model has {n} tensors"
                            + (", and this input is not optional)" if i == -1 else ")"))
            indices_ok = False
    for k, i in enumerate(op.outputs):
        if not 0 <= i < n:
            problems.append(f"{where}: output {k} names tensor {i}, out of range (the model has {n} tensors)")
            indices_ok = False
    if rule is None:
        return
    lo, hi, kinds, _ = rule["inputs"]
    if len(op.inputs) < lo or (hi is not None and len(op.inputs) > hi):
        want = f"{lo}" if lo == hi else (f"{lo} to {hi}" if hi is not None else f"at least {lo}")
        problems.append(f"{where}: has {len(op.inputs)} input(s); {op.opcode} takes {want}")
        indices_ok = False
    olo, ohi = rule["outputs"]
    if not olo <= len(op.outputs) <= ohi:
        problems.append(f"{where}: has {len(op.outputs)} output(s); {op.opcode} produces "
                        + (f"{olo}" if olo == ohi else f"{olo} to {ohi}"))
        indices_ok = False
    if not indices_ok:
        return
    ins = g.op_inputs(op)
    out = g.tensors[op.outputs[0]]
    for k, t in enumerate(ins):
        kind = kinds[min(k, len(kinds) - 1)]
        if t is not None and kind == "i" and np.dtype(t.dtype) not in _INDEX_TYPES:
            problems.append(f"{where}: input {k} {tensor_label(g, t.index)} is {np.dtype(t.dtype).name}; "
                            f"{op.opcode} needs int32 or int64 there")
    if rule["same_type"]:
        for k, t in enumerate(ins):
            if t is not None and kinds[min(k, len(kinds) - 1)] == "x" and np.dtype(t.dtype) != np.dtype(out.dtype):
                problems.append(f"{where}: input {k} {tensor_label(g, t.index)} is {np.dtype(t.dtype).name} but "
                                f"the output is {np.dtype(out.dtype).name}; {op.opcode} needs one element type")
    _check_options(g, op, where, ins, out, problems)


def _check_options(g, op, where, ins, out, problems) -> None:
    o = op.options
    if o is None:
        return
    for name in ("stride_h", "stride_w", "dilation_h", "dilation_w", "filter_h", "filter_w"):
        v = getattr(o, name, None)
        if v is not None and v < 1:
            problems.append(f"{where}: {name} is {v}; it must be >= 1")
    if getattr(o, "depth_multiplier", 0) < 0:
        problems.append(f"{where}: depth_multiplier is {o.depth_multiplier}; it must be >= 0")
    if getattr(o, "padding", "SAME") not in ir.PADDINGS.values():
        problems.append(f"{where}: padding {o.padding} is not SAME or VALID")
    if getattr(o, "activation", "NONE") not in ir.ACTIVATIONS.values():
        problems.append(f"{where}: fused activation {o.activation} is not a TFLite activation")
    if isinstance(o, ir.ConcatenationOptions) and not -len(out.shape) <= o.axis < max(len(out.shape), 1):
        problems.append(f"{where}: axis {o.axis} is outside the output's rank {len(out.shape)}")
    if isinstance(o, ir.SqueezeOptions) and ins[0] is not None:
        r = len(ins[0].shape)
        bad = [d for d in o.squeeze_dims if not -r <= d < r]
        if bad:
            problems.append(f"{where}: squeeze dims {bad} are outside the input's rank {r}")
    if isinstance(o, ir.SoftmaxOptions) and not math.isfinite(o.beta):
        problems.append(f"{where}: beta {o.beta} is not finite")
    if isinstance(o, ir.LeakyReluOptions) and not math.isfinite(o.alpha):
        problems.append(f"{where}: alpha {o.alpha} is not finite")
    if isinstance(o, ir.FullyConnectedOptions) and o.weights_format not in (0, 1):
        problems.append(f"{where}: weights_format {o.weights_format} is not a TFLite format")
    _check_work(op, where, ins, out, problems)


def _check_work(op, where, ins, out, problems) -> None:
    """Window ops: bound the padded input, im2col buffer, taps and MACs the kernel would need."""
    o = op.options
    if not isinstance(o, (ir.Conv2DOptions, ir.DepthwiseConv2DOptions, ir.Pool2DOptions)):
        return
    x = ins[0]
    if x is None or len(x.shape) != 4 or min(o.stride_h, o.stride_w) < 1 or o.padding not in ir.PADDINGS.values():
        return
    dil_h, dil_w = getattr(o, "dilation_h", 1), getattr(o, "dilation_w", 1)
    if min(dil_h, dil_w) < 1:
        return
    if isinstance(o, ir.Pool2DOptions):
        k_h, k_w, per_tap = o.filter_h, o.filter_w, 1
    else:
        w = ins[1]
        if w is None or len(w.shape) != 4:
            return
        k_h, k_w = w.shape[1], w.shape[2]
        per_tap = w.shape[3] if op.opcode == "CONV_2D" else 1
    if min(k_h, k_w) < 1:
        return
    n, h, wd, c = x.shape
    taps = k_h * k_w
    eff_h, eff_w = (k_h - 1) * dil_h + 1, (k_w - 1) * dil_w + 1
    padded = n * max(h + eff_h, 1) * max(wd + eff_w, 1) * c
    out_n = out.size
    macs = out_n * taps * per_tap
    im2col = (out_n // max(out.shape[-1], 1) if out.shape else 1) * taps * per_tap if op.opcode == "CONV_2D" else 0
    if taps > MAX_WINDOW_TAPS:
        problems.append(f"{where}: a {k_h}x{k_w} window has {taps:,} taps, more than the {MAX_WINDOW_TAPS:,} "
                        "qsim accepts")
    elif max(padded, im2col) > MAX_SCRATCH_ELEMENTS:
        problems.append(f"{where}: the {k_h}x{k_w} window (dilation {dil_h}x{dil_w}) on a {list(x.shape)} input "
                        f"needs a {max(padded, im2col):,}-element scratch buffer, more than the "
                        f"{MAX_SCRATCH_ELEMENTS:,} qsim accepts")
    elif macs > MAX_OP_MACS:
        problems.append(f"{where}: {macs:,} multiply-accumulates, more than the {MAX_OP_MACS:,} qsim accepts "
                        "in one op")


# ------------------------------------------------------------------ data flow

def _check_dataflow(g: ir.Graph, problems: list[str]) -> None:
    n = len(g.tensors)
    producer: dict[int, int] = {}
    for op in g.operators:
        for t in op.outputs:
            if 0 <= t < n:
                producer.setdefault(t, op.index)
    available = {i for i in g.inputs if 0 <= i < n}
    available |= {t.index for t in g.tensors if t.is_const or t.is_variable}
    for op in g.operators:
        where = op_label(g, op)
        for k, i in enumerate(op.inputs):
            if not 0 <= i < n or i in available:
                continue
            p = producer.get(i)
            why = ("which no op produces and which is neither a graph input nor a constant" if p is None else
                   "which this op produces itself (a cycle)" if p == op.index else
                   f"which only op #{p}, later in the graph, produces" if p > op.index else
                   "which is not available here")
            problems.append(f"{where}: input {k} {tensor_label(g, i)} is read before it exists: {why}")
        for k, t in enumerate(op.outputs):
            if not 0 <= t < n:
                continue
            tt = g.tensors[t]
            if tt.is_const:
                problems.append(f"{where}: output {k} {tensor_label(g, t)} is a constant (it has data in the file)")
            elif t in g.inputs:
                problems.append(f"{where}: output {k} {tensor_label(g, t)} is a graph input")
            elif producer.get(t) != op.index or t in op.outputs[:k]:
                problems.append(f"{where}: output {k} {tensor_label(g, t)} is also written by op #{producer[t]}")
            available.add(t)
    for i in g.outputs:
        if 0 <= i < n and g.tensors[i].is_const:
            problems.append(f"graph output {tensor_label(g, i)} is a constant; qsim needs every output computed "
                            "by an op (or passed through from a graph input)")
        elif 0 <= i < n and i not in producer and i not in g.inputs:  # a variable tensor is not an output
            problems.append(f"graph output {tensor_label(g, i)} is never produced (no op writes it and it is "
                            "not a graph input)")
