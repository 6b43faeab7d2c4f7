"""Functional int8 interpreter: prepare every op once, then evaluate the graph in order.

``prepare_graph`` does all validation up front (every unsupported op and type
is collected and reported in one error) and calls each kernel's prepare;
``PreparedGraph.run`` is integer-only and returns every tensor it produced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import ir
from .errors import QsimError, UnsupportedModelError
from .kernels import REGISTRY, Kernel
from .profiles import Profile, get_profile
from .validate import op_label, raise_if_invalid, tensor_label

OUT_OF_SCOPE = {
    "LSTM": "LSTM is out of scope (recurrent, int16 cell state)",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "LSTM is out of scope (recurrent, int16 cell state)",
    "BIDIRECTIONAL_SEQUENCE_LSTM": "LSTM is out of scope (recurrent, int16 cell state)",
    "SVDF": "SVDF is out of scope (int16 state)",
}


@dataclass
class PreparedOp:
    op: ir.Operator
    kernel: Kernel
    params: Any


@dataclass
class PreparedGraph:
    graph: ir.Graph
    profile: Profile
    ops: list[PreparedOp]

    def run(self, inputs, keep_all: bool = True,
            on_op: Callable[[PreparedOp, list, list], None] | None = None) -> dict[int, np.ndarray]:
        """Evaluate.  ``inputs``: list (graph input order) or {tensor index: array}.

        Returns {tensor index: array} for graph outputs, or every produced
        tensor (and the inputs) when ``keep_all``.  ``on_op(prepared, in_arrays,
        out_arrays)`` is called after each op (used by the accelerator model).
        """
        g = self.graph
        values: dict[int, np.ndarray] = dict(check_inputs(g, inputs))
        consumers_left = _consumer_counts(g) if not keep_all else None
        for p in self.ops:
            ins = [None if i < 0 else (values[i] if i in values else g.tensors[i].data) for i in p.op.inputs]
            for i, a in zip(p.op.inputs, ins):
                if a is None and i >= 0:  # qsim.validate refuses such graphs; never compute on a missing value
                    raise QsimError(f"{op_label(g, p.op)} reads {tensor_label(g, i)}, which has no value at this "
                                    "point (not a graph input, a constant, or an earlier op's output).")
            outs = p.kernel.eval(p.params, ins)
            for t, arr in zip(p.op.outputs, outs):
                tensor = g.tensors[t]
                values[t] = np.asarray(arr).astype(tensor.dtype, copy=False).reshape(tensor.shape)
            if on_op is not None:
                on_op(p, ins, [values[t] for t in p.op.outputs])
            if consumers_left is not None:
                for i in p.op.inputs:
                    if i in consumers_left:
                        consumers_left[i] -= 1
                        if consumers_left[i] == 0 and i not in g.outputs:
                            values.pop(i, None)
        if keep_all:
            return values
        return {t: values[t] for t in g.outputs}


def _consumer_counts(g: ir.Graph) -> dict[int, int]:
    counts: dict[int, int] = {}
    for op in g.operators:
        for i in op.inputs:
            if i >= 0 and not g.tensors[i].is_const:
                counts[i] = counts.get(i, 0) + 1
    return counts


def unsupported_ops(g: ir.Graph) -> list[str]:
    """One line per op qsim cannot run, with its index, output tensor and reason."""
    problems = []
    for op in g.operators:
        where = op_label(g, op)
        if op.opcode in OUT_OF_SCOPE:
            problems.append(f"{where}: {OUT_OF_SCOPE[op.opcode]}")
        elif op.opcode not in REGISTRY:
            problems.append(f"{where}: op not implemented by qsim")
        else:
            for t in g.op_inputs(op) + g.op_outputs(op):
                if t is not None and t.dtype == np.int16 and not t.is_const:
                    problems.append(f"{where}: int16 activations ('{t.name}') are not supported (int8 only)")
                    break
    return problems


def check_quantized(g: ir.Graph) -> None:
    """A float-only model (float inputs and no quantized compute) is not what qsim simulates."""
    float_compute = [op for op in g.operators if op.opcode not in ("QUANTIZE", "DEQUANTIZE")
                     and any(t.dtype == np.float32 and not t.is_const for t in g.op_outputs(op))]
    if float_compute and len(float_compute) == len([o for o in g.operators if o.opcode not in ("QUANTIZE", "DEQUANTIZE")]):
        names = sorted({op.opcode for op in float_compute})
        raise UnsupportedModelError(
            f"{g.source or 'this model'} is a float model: all {len(float_compute)} compute ops "
            f"({', '.join(names)}) run in FLOAT32. qsim simulates int8 integer inference; convert the model "
            "with full-integer post-training quantization (TFLiteConverter with "
            "optimizations=[tf.lite.Optimize.DEFAULT], a representative_dataset and "
            "target_spec.supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS_INT8]) and load the int8 file.")


def prepare_graph(g: ir.Graph, profile: str | Profile = "tflm") -> PreparedGraph:
    """Validate (:func:`qsim.validate.raise_if_invalid`: graphs built in memory skip the loader),
    refuse float models and unsupported ops (all listed), then prepare every op."""
    prof = get_profile(profile)
    raise_if_invalid(g)
    check_quantized(g)
    problems = unsupported_ops(g)
    prepared = []
    if not problems:
        for op in g.operators:
            k = REGISTRY[op.opcode]
            try:
                prepared.append(PreparedOp(op, k, k.prepare(op, g, prof)))
            except QsimError as e:
                problems.append(f"{op_label(g, op)}: {e}")
    if problems:
        raise UnsupportedModelError(
            f"{g.source or 'the model'} uses {len(problems)} op(s) qsim cannot run:\n  - "
            + "\n  - ".join(problems))
    return PreparedGraph(g, prof, prepared)


def conform_shape(a: np.ndarray, t: ir.Tensor) -> np.ndarray:
    """``a`` reshaped to ``t.shape`` when only size-1 dimensions differ (batch, channel) or the
    data is flat (1-D, same size); any other shape is an error, never a silent reshape that
    would reorder the data (a [10, 49] array is not a [1, 49, 10, 1] input)."""
    if tuple(a.shape) == tuple(t.shape):
        return a
    squeeze = [d for d in a.shape if d != 1]
    if a.size == t.size and (squeeze == [d for d in t.shape if d != 1] or a.ndim == 1):
        return a.reshape(t.shape)
    raise QsimError(f"input '{t.name}' must have shape {list(t.shape)} ({t.size} values), got an array of "
                    f"shape {list(a.shape)} ({a.size} values).")


def check_inputs(g: ir.Graph, inputs) -> dict[int, np.ndarray]:
    """Validate user inputs against the graph's input tensors (count, shape, dtype)."""
    if isinstance(inputs, dict):
        items = inputs
    else:
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if len(inputs) != len(g.inputs):
            raise QsimError(f"the model has {len(g.inputs)} input(s) but {len(inputs)} were given.")
        items = dict(zip(g.inputs, inputs))
    out = {}
    for t_idx in g.inputs:
        if t_idx not in items:
            raise QsimError(f"missing input for tensor {t_idx} '{g.tensors[t_idx].name}'.")
        t = g.tensors[t_idx]
        a = conform_shape(np.asarray(items[t_idx]), t)
        if a.dtype != t.dtype:
            hint = ""
            if t.quant is not None and np.issubdtype(a.dtype, np.floating):
                hint = (f" The data looks real-valued: quantize it first, q = round(x / {t.quant.scale0:.6g})"
                        f" + {t.quant.zp0} (qsim run --float-input does this).")
            raise QsimError(f"input '{t.name}' must be {t.dtype}, got {a.dtype}.{hint}")
        out[t_idx] = a
    return out


def run(g: ir.Graph, inputs, profile: str | Profile = "tflm", keep_all: bool = True) -> dict[int, np.ndarray]:
    return prepare_graph(g, profile).run(inputs, keep_all=keep_all)
