"""uint8 (the old converter's QUANTIZED_UINT8) kernels, on LiteRT BUILTIN_REF's legacy uint8 paths.

Old-converter models carry per-tensor asymmetric uint8 activations *and* uint8 weights with
their own zero point (often not 128), with an int32 bias of scale ``s_in * s_w`` and zero point
0.  TFLite's legacy uint8 reference kernels (reference_ops::Conv / DepthwiseConv /
FullyConnected / Add / AveragePool / MaxPool / Softmax, and the Logistic lookup table LiteRT
builds in Prepare) compute, with ``input_offset = -zp_in``, ``filter_offset = -zp_w`` and
``output_offset = zp_out``:

    acc = sum((x + input_offset) * (w + filter_offset)) + bias               (int32)
    out = clamp(MBQM(acc, M0, shift) + output_offset, act_min, act_max)       (uint8 range 0..255)

with (M0, shift) from QuantizeMultiplier of ``s_in * s_w / s_out`` and the profile's rounding of
MultiplyByQuantizedMultiplier (double rounding in LiteRT's default build; for shifts <= 0 the
legacy MultiplyByQuantizedMultiplierSmallerThanOneExp is the same integers).

The integer math is the int8 kernels': every one of these formulas works on differences
``q - zp``, adds the output zero point *after* rounding and clamps to the type's range.  Moving
every uint8 value, zero point and clamp bound down by 128 (:func:`qsim.fixedpoint.uint8_to_int8`)
leaves all of it unchanged, so this module does not duplicate any kernel: ``prepare`` builds
the op's int8 twin (activations shifted by -128, zero points by -128; uint8 weights *centred*,
``w - zp_w``, as zero-point-0 weights of magnitude <= 255, which the int8 GEMM kernels' exact
float-matmul bounds cover) and calls the int8 ``prepare``; ``eval`` flips the top bit of each
uint8 input, runs the int8 ``eval`` and flips the outputs back.

One exception: AVERAGE_POOL_2D rounds ``(sum + count/2) / count`` (ties up) in uint8 but
half away from zero in int8, which differs for negative sums -- so its uint8 form averages the
raw uint8 values (sums >= 0, where the two roundings agree), reusing the int8 window sums.

RESHAPE and CONCATENATION copy bytes and take uint8 natively (shape_ops); a uint8 CONCATENATION
of differently quantized inputs is LiteRT's ConcatenationWithScaling, a float32 affine rescale
of each such input (:func:`qsim.fixedpoint.rescale_float32`, :class:`ConcatRescale` below).

TFLite Micro has no uint8 kernels for these ops (measured with the tflite-micro Python runtime:
it refuses every one of them except RESHAPE, DEQUANTIZE and QUANTIZE int8 <-> uint8, see
:func:`tflm_has_uint8_kernel`),
so under a TFLM-based profile the uint8 ops it refuses raise a QsimError naming the op.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import fixedpoint as fp
from .. import ir
from ..errors import QsimError
from . import REGISTRY, Kernel
from .pooling import average_pool

# ops with a uint8 kernel here (the rest of UINT8_OPS copy uint8 natively)
WRAPPED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D",
           "SOFTMAX", "LOGISTIC", "QUANTIZE", "DEQUANTIZE")
UINT8_OPS = WRAPPED + ("CONCATENATION", "RESHAPE")
GEMM = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
# uint8 ops TFLite Micro runs (measured: tests/test_uint8.py); it refuses the others' uint8 forms.
# QUANTIZE only between int8 and uint8 (float32 -> uint8 and uint8 -> uint8 are refused).
TFLM_UINT8_OPS = ("RESHAPE", "QUANTIZE", "DEQUANTIZE")
_U8 = np.dtype(np.uint8)


def uint8_tensors(op: ir.Operator, graph: ir.Graph) -> list[ir.Tensor]:
    """The op's uint8 tensors (activations, constants and weights alike)."""
    return [t for t in graph.op_inputs(op) + graph.op_outputs(op) if t is not None and np.dtype(t.dtype) == _U8]


def tflm_has_uint8_kernel(op: ir.Operator, graph: ir.Graph) -> bool:
    """Whether TFLite Micro runs this op's uint8 form (:data:`TFLM_UINT8_OPS`; QUANTIZE only
    int8 <-> uint8)."""
    if op.opcode == "QUANTIZE":
        kinds = {np.dtype(t.dtype) for t in graph.op_inputs(op)[:1] + graph.op_outputs(op) if t is not None}
        return kinds == {np.dtype(np.int8), _U8}
    return op.opcode in TFLM_UINT8_OPS


def tflm_uint8_refusals(graph: ir.Graph) -> list[str]:
    """One line per op with a uint8 tensor that TFLite Micro has no uint8 kernel for."""
    from ..validate import op_label
    return [f"{op_label(graph, op)} ('{uint8_tensors(op, graph)[0].name}' is uint8)" for op in graph.operators
            if uint8_tensors(op, graph) and not tflm_has_uint8_kernel(op, graph)]


def int8_twin(t: ir.Tensor) -> ir.Tensor:
    """The int8 tensor with ``t``'s real values: q - 128, zero point - 128 (constants shifted too)."""
    q = t.quant
    quant = None if q is None else ir.Quant(q.scale, q.zero_point - fp.UINT8_OFFSET, q.axis)
    data = None if t.data is None else fp.uint8_to_int8(t.data)
    return dataclasses.replace(t, dtype=np.dtype(np.int8), quant=quant, data=data)


def centred_weights(op: ir.Operator, w: ir.Tensor) -> ir.Tensor:
    """uint8 weights as the zero-point-0 "int8" weights ``w - zp_w`` (int16 values, |v| <= 255)."""
    if not w.is_const:
        raise QsimError(f"{op.opcode}: the filter '{w.name}' must be a constant tensor.")
    if w.quant is None or w.quant.scale.size != 1:
        raise QsimError(f"{op.opcode}: uint8 filter '{w.name}' must be quantized per tensor (one scale and zero "
                        "point); TFLite's uint8 kernels have no per-channel form (per-channel weights are int8).")
    data = np.asarray(w.data, np.int16) - np.int16(w.quant.zp0)
    return dataclasses.replace(w, dtype=np.dtype(np.int8), data=data,
                               quant=ir.Quant(w.quant.scale, np.zeros(1, np.int64), w.quant.axis))


def _check_mix(op: ir.Operator, graph: ir.Graph) -> None:
    """QsimError naming the tensor when the op mixes uint8 with a type no TFLite kernel pairs it with."""
    ins, outs = graph.op_inputs(op), graph.op_outputs(op)
    if op.opcode == "QUANTIZE":
        for t in ins[:1] + outs:
            if np.dtype(t.dtype) not in (np.dtype(np.float32), np.dtype(np.int8), _U8):
                raise QsimError(f"QUANTIZE: '{t.name}' is {np.dtype(t.dtype).name}; TFLite's uint8 QUANTIZE "
                                "converts between float32, int8 and uint8 only.")
        return
    if op.opcode == "DEQUANTIZE":
        if np.dtype(outs[0].dtype) != np.float32:
            raise QsimError(f"DEQUANTIZE: output '{outs[0].name}' is {np.dtype(outs[0].dtype).name}; TFLite "
                            "dequantizes uint8 to float32.")
        return
    if op.opcode in GEMM and len(ins) > 1 and ins[0] is not None and ins[1] is not None:
        x, w = ins[0], ins[1]
        if (np.dtype(x.dtype) == _U8) != (np.dtype(w.dtype) == _U8):
            raise QsimError(f"{op.opcode}: filter '{w.name}' is {np.dtype(w.dtype).name} but input '{x.name}' is "
                            f"{np.dtype(x.dtype).name}: TFLite's uint8 (QUANTIZED_UINT8) {op.opcode} needs uint8 "
                            "input, filter and output, and its int8 kernels int8 activations with symmetric int8 "
                            "weights; no TFLite kernel defines this mix.")
    roles = (["input", "filter", "bias"] if op.opcode in GEMM else [f"input {k}" for k in range(len(ins))])
    named = [(r, t) for r, t in zip(roles, ins) if t is not None] + [("output", outs[0])]
    for role, t in named:
        want = np.dtype(np.int32) if role == "bias" else _U8
        if np.dtype(t.dtype) != want:
            what = ("an int32 bias (scale input_scale * filter_scale, zero point 0)" if role == "bias"
                    else "uint8 input, filter and output" if op.opcode in GEMM else "every tensor uint8")
            raise QsimError(f"{op.opcode}: {role} '{t.name}' is {np.dtype(t.dtype).name} in a uint8 op: TFLite's "
                            f"uint8 (QUANTIZED_UINT8) {op.opcode} needs {what}; no TFLite kernel defines this "
                            "mix (int8 models have int8 activations and symmetric int8 weights).")
        if role != "bias" and (t.quant is None or t.quant.scale.size != 1):
            raise QsimError(f"{op.opcode}: uint8 {role} '{t.name}' needs one scale and zero point (TFLite's "
                            "uint8 activations are quantized per tensor).")


@dataclass
class Uint8Params:
    """A uint8 op prepared as its int8 twin: ``inner`` the int8 kernel's params, ``shift_in`` /
    ``shift_out`` which inputs/outputs are uint8 (flipped into / out of the int8 domain),
    ``replace`` inputs given by position instead of the graph's (the centred weights)."""

    inner: Any
    inner_eval: Callable
    shift_in: tuple[bool, ...]
    shift_out: tuple[bool, ...]
    replace: dict[int, np.ndarray]


def _twin_graph(op: ir.Operator, graph: ir.Graph) -> ir.Graph:
    """A graph whose tensors are ``graph``'s with this op's uint8 tensors replaced by their int8
    twins (weights centred); only the op's own tensors differ."""
    tensors = list(graph.tensors)
    for pos, i in enumerate(op.inputs):
        if i < 0 or np.dtype(tensors[i].dtype) != _U8:
            continue
        if op.opcode in GEMM and pos == 1:
            tensors[i] = centred_weights(op, tensors[i])
        else:
            tensors[i] = int8_twin(tensors[i])
    for i in op.outputs:
        if np.dtype(tensors[i].dtype) == _U8:
            tensors[i] = int8_twin(tensors[i])
    return dataclasses.replace(graph, tensors=tensors)


def _uint8_prepare(base: Kernel):
    def prepare(op, graph, profile):
        _check_mix(op, graph)
        if profile.name in ("tflm", "cmsis-nn") and not tflm_has_uint8_kernel(op, graph):
            raise QsimError(f"{op.opcode} with uint8 tensors: TFLite Micro has no uint8 {op.opcode} kernel (it "
                            "refuses this model), so the '{}' profile defines no result; run it under --profile "
                            "litert (LiteRT BUILTIN_REF's uint8 kernels).".format(profile.name))
        twin = _twin_graph(op, graph)
        try:
            inner = base.prepare(op, twin, profile)
        except QsimError as e:
            raise QsimError(f"{e} (qsim checks a uint8 op as its int8 twin: the int8 values and zero points named "
                            "here are the uint8 ones minus 128, e.g. zero point -128 is uint8's 0)") from None
        shift_in = tuple(i >= 0 and np.dtype(graph.tensors[i].dtype) == _U8 for i in op.inputs)
        shift_out = tuple(np.dtype(graph.tensors[i].dtype) == _U8 for i in op.outputs)
        replace = {}
        if op.opcode in GEMM:
            replace[1] = twin.tensors[op.inputs[1]].data
            shift_in = (shift_in[0], False) + shift_in[2:]
        if op.opcode == "AVERAGE_POOL_2D":  # raw uint8 sums (see the module docstring)
            inner = dataclasses.replace(inner, act_min=inner.act_min + fp.UINT8_OFFSET,
                                        act_max=inner.act_max + fp.UINT8_OFFSET)
            return Uint8Params(inner, _eval_average_pool_u8, (False,), (False,), {})
        return Uint8Params(inner, base.eval, shift_in, shift_out, replace)
    return prepare


def _eval_average_pool_u8(p, inputs) -> list[np.ndarray]:
    """AVERAGE_POOL_2D on raw uint8: sums >= 0, rounded (sum + count//2) // count (as TFLite's uint8)."""
    return [average_pool(p, np.asarray(inputs[0]), max_abs=255).astype(np.uint8)]


def twin_inputs(p: Uint8Params, inputs) -> list:
    """The op's inputs in its int8 twin's domain: uint8 activations as ``q - 128``, the GEMM
    weights replaced by the centred ``w - zp_w`` (what ``p.inner`` was prepared for)."""
    return [p.replace[k] if k in p.replace else fp.uint8_to_int8(a) if s and a is not None else a
            for k, (a, s) in enumerate(zip(inputs, p.shift_in))]


def eval_uint8(p: Uint8Params, inputs) -> list[np.ndarray]:
    outs = p.inner_eval(p.inner, twin_inputs(p, inputs))
    return [fp.int8_to_uint8(o) if s else o for o, s in zip(outs, p.shift_out)]


def _dispatching(base: Kernel) -> Kernel:
    """``base`` for ops without uint8 tensors; the uint8 twin path for the others."""
    u8_prepare = _uint8_prepare(base)

    def prepare(op, graph, profile):
        return u8_prepare(op, graph, profile) if uint8_tensors(op, graph) else base.prepare(op, graph, profile)

    def eval_(p, inputs):
        return eval_uint8(p, inputs) if isinstance(p, Uint8Params) else base.eval(p, inputs)

    batch = None
    if base.batch is not None:
        def batch(p, op, graph, batched):
            return base.batch(p.inner if isinstance(p, Uint8Params) else p, op, graph, batched)
    accumulate = None
    if base.accumulate is not None:
        def accumulate(p, inputs):
            if isinstance(p, Uint8Params):
                raise QsimError(f"{base.opcode}: the accumulator seam of the RTL vectors covers int8 layers "
                                "only; this layer is uint8 (the accelerator model runs it as its int8 twin: "
                                "qsim.accel.datapath.run_values).")
            return base.accumulate(p, inputs)

    def eval_for(p):  # the base kernel's bound eval (run plans) kept for int8 params
        return eval_uint8 if isinstance(p, Uint8Params) else base.bound_eval(p)
    return Kernel(base.opcode, prepare, eval_, accumulate, batch, base.int16, eval_for)


for _name in WRAPPED:
    REGISTRY[_name] = _dispatching(REGISTRY[_name])


@dataclass
class ConcatRescale:
    """uint8 CONCATENATION of differently quantized inputs (LiteRT's ConcatenationWithScaling):
    per input, (s_in, s_out) and zero points, or None where it equals the output's (a copy)."""

    axis: int
    rescale: list  # per input: ((s_in, s_out), zp_in, zp_out) or None


def _prepare_concat_u8(base_prepare):
    def prepare(op, graph, profile):
        ins = [t for t in graph.op_inputs(op) if t is not None]
        out = graph.op_outputs(op)[0]
        same = lambda t: (t.quant is not None and out.quant is not None and t.quant.zp0 == out.quant.zp0  # noqa: E731
                          and np.float32(t.quant.scale0) == np.float32(out.quant.scale0))
        if not uint8_tensors(op, graph) or all(same(t) for t in ins):
            return base_prepare(op, graph, profile)
        _check_mix(op, graph)
        if profile.name in ("tflm", "cmsis-nn"):
            raise QsimError("CONCATENATION with uint8 tensors: TFLite Micro has no uint8 CONCATENATION kernel; "
                            "run it under --profile litert.")
        p = base_prepare(op, _requantized_like(op, graph, out), profile)  # shapes and axis
        return ConcatRescale(p.axis, [None if same(t) else ((t.quant.scale0, out.quant.scale0), t.quant.zp0,
                                                            out.quant.zp0) for t in ins])
    return prepare


def _requantized_like(op, graph, out):
    """``graph`` with the op's inputs carrying the output's quantization (for the shape checks)."""
    tensors = list(graph.tensors)
    for i in op.inputs:
        if i >= 0:
            tensors[i] = dataclasses.replace(tensors[i], quant=out.quant)
    return dataclasses.replace(graph, tensors=tensors)


def _eval_concat(base_eval):
    def eval_(p, inputs):
        if not isinstance(p, ConcatRescale):
            return base_eval(p, inputs)
        parts = [np.asarray(a) if r is None else fp.rescale_float32(a, r[0], r[1], r[2], 0, 255).astype(np.uint8)
                 for a, r in zip([a for a in inputs if a is not None], p.rescale)]
        return [np.concatenate(parts, axis=p.axis)]
    return eval_


_base = REGISTRY["CONCATENATION"]
REGISTRY["CONCATENATION"] = Kernel("CONCATENATION", _prepare_concat_u8(_base.prepare), _eval_concat(_base.eval),
                                   _base.accumulate, _base.batch, _base.int16)  # batch: reads p.axis only
