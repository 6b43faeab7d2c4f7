"""uint8 (the old converter's QUANTIZED_UINT8) models in the C generator: the int8 twin graph.

The simulator runs a uint8 op as its int8 twin (:mod:`qsim.kernels.uint8`: activations and zero
points moved by -128, i.e. the byte's top bit flipped; weights centred ``w - zp_w``).  The
generator does the same once, for the whole graph, before anything is prepared or emitted:

* every uint8 activation tensor becomes its int8 twin (:func:`qsim.kernels.uint8.int8_twin`), so
  the int8 C kernels run the body unchanged, with the offsets of the twin's zero points;
* a uint8 graph input / output keeps its uint8 type in the generated API: one QUANTIZE op per
  input (uint8 -> twin) and per output (twin -> uint8) is added at the graph's boundary, a
  256-entry table computed by qsim's own QUANTIZE kernel (the byte XOR 0x80);
* uint8 weights (per tensor, zero point ``zp_w``) are centred at generation time, ``w - zp_w``
  (:func:`qsim.kernels.uint8.centred_weights`, zero point 0): when they fit int8 every int8 GEMM
  path takes them as they are (the input offset folded into the bias as for int8 models); when
  they do not (they span at most 256 values), :func:`qsim.codegen.tables.offset_weights` stores
  them as int8 bytes ``w - zp_w - fo`` with a filter offset ``fo``: sum (w' + fo)(x + io) =
  sum w' x + fo * (sum of the zero-point-padded window) + io * (sum of the centred row, folded into
  the bias) -- FULLY_CONNECTED in TFLite's two-offset form (``qk_fully_connected*``), CONV_2D as
  ``qk_conv2d_offsets`` (the int8 patch and dot product of qk_conv2d plus the patch sum times
  ``fo``), DEPTHWISE_CONV_2D on the channel-major depthwise path with ``filter_offset`` set;
* AVERAGE_POOL_2D rounds ties up in uint8 but away from zero in int8: its C pool adds 128 per
  tap (``qk_pool_params.tap_offset``), averaging the raw uint8 sums as qsim's uint8 kernel does.

Everything is then prepared by qsim's kernels under the ``litert`` profile (LiteRT BUILTIN_REF:
TFLite Micro has no uint8 kernels but RESHAPE, DEQUANTIZE and int8 <-> uint8 QUANTIZE), so
FULLY_CONNECTED requantizes by LiteRT's double real scale (``qk_fully_connected_real``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from qsim import fixedpoint as fp
from qsim import ir
from qsim.errors import QsimError
from qsim.kernels.uint8 import GEMM, ConcatRescale, centred_weights, int8_twin, tflm_uint8_refusals
from qsim.validate import op_label

from . import tables

_U8 = np.dtype(np.uint8)
PROFILE = "litert"  # the reference of uint8 models (TFLite Micro refuses their ops)
# Ops whose int8 C kernels compute LiteRT BUILTIN_REF's integers under the litert profile too
# (qsim/profiles.py: the same double rounding; LUT ops are tabulated from the litert kernels;
# FULLY_CONNECTED has its own real-scale kernel).  Others (MUL, SVDF, LSTM, ...) are refused in
# a model that needs LiteRT's profile.
LITERT_C_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "AVERAGE_POOL_2D",
                "MAX_POOL_2D", "SOFTMAX", "CONCATENATION", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE",
                "MEAN", "LOGISTIC", "TANH", "RELU", "RELU6", "LEAKY_RELU", "HARD_SWISH", "QUANTIZE")


@dataclass
class Twin:
    """The int8 twin of a uint8 graph, as the generator runs it.

    ``source``: per op of ``graph``, the index of the original op it is, or None for the boundary
    QUANTIZE ops added at uint8 graph inputs / outputs.  ``u8_outputs``: positions whose original
    output is uint8 (the C holds the twin: the trace flips the top bit back).  ``u8_pools``:
    AVERAGE_POOL_2D positions that average raw uint8 sums."""

    graph: ir.Graph
    source: list
    u8_outputs: frozenset
    u8_pools: frozenset


def has_uint8(g: ir.Graph) -> bool:
    return any(np.dtype(t.dtype) == _U8 for t in g.tensors)


def profile_for(g: ir.Graph, profile: str) -> str:
    """The profile a model is generated under: ``profile`` (TFLite Micro's) unless the model has
    uint8 ops TFLite Micro does not run, then LiteRT BUILTIN_REF's (``litert``)."""
    return PROFILE if has_uint8(g) and tflm_uint8_refusals(g) else profile


def check_profile(g: ir.Graph, rounding: str, kernels: str) -> None:
    """uint8 models are generated with double rounding and qsim's kernels (LiteRT's build)."""
    if profile_for(g, "tflm") != PROFILE:
        return
    if rounding != "double" or kernels != "qsim":
        raise QsimError(f"{g.source or 'the model'} has uint8 ops (old converter, QUANTIZED_UINT8), defined by "
                        "LiteRT BUILTIN_REF's legacy uint8 kernels (double rounding; TFLite Micro and CMSIS-NN have "
                        "no uint8 kernels): generate it with --rounding double --kernels qsim.")


def problems(g: ir.Graph, prepared, profile: str) -> list[str]:
    """What the C cannot run of a uint8 model prepared (original graph) under ``profile``, per op."""
    out = []
    for p in prepared.ops:
        op = p.op
        if profile == PROFILE and op.opcode not in LITERT_C_OPS:
            out.append(f"{op_label(g, op)}: no C kernel computes LiteRT BUILTIN_REF's {op.opcode} (this model "
                       f"needs LiteRT's rounding for its uint8 ops; C kernels for: {', '.join(LITERT_C_OPS)})")
        elif isinstance(p.params, ConcatRescale):
            k = next(k for k, r in enumerate(p.params.rescale) if r is not None)
            name = [t for t in g.op_inputs(op) if t is not None][k].name
            out.append(f"{op_label(g, op)}: uint8 input '{name}' is quantized unlike the "
                       "output, which LiteRT rescales in float32 (ConcatenationWithScaling); the C concatenation "
                       "copies bytes only")
    return out


def twin_graph(g: ir.Graph) -> Twin:
    """The int8 twin graph of a uint8 model (see the module docstring); ops renumbered by position."""
    tensors = list(g.tensors)
    for op in g.operators:
        if op.opcode in GEMM and len(op.inputs) > 1 and op.inputs[1] >= 0:
            w = g.tensors[op.inputs[1]]
            if np.dtype(w.dtype) == _U8:
                tensors[w.index] = centred_weights(op, w)  # w - zp_w (int16 values), zero point 0
    for i, t in enumerate(g.tensors):
        if np.dtype(t.dtype) == _U8 and tensors[i] is t:
            tensors[i] = int8_twin(t)
    ops, source = [], []
    inputs, outputs = list(g.inputs), list(g.outputs)

    def boundary(src: int, dst: int):
        ops.append(ir.Operator(len(ops), "QUANTIZE", (src,), (dst,)))
        source.append(None)

    def uint8_copy(t: ir.Tensor, suffix: str) -> int:
        tensors.append(dataclasses.replace(t, index=len(tensors), name=t.name + suffix))
        return len(tensors) - 1

    for k, i in enumerate(g.inputs):
        if np.dtype(g.tensors[i].dtype) == _U8:
            inputs[k] = uint8_copy(g.tensors[i], "")
            tensors[i] = dataclasses.replace(tensors[i], name=g.tensors[i].name + " (int8 twin)")
            boundary(inputs[k], i)
    u8_outputs, u8_pools = set(), set()
    for op in g.operators:
        if np.dtype(g.tensors[op.outputs[0]].dtype) == _U8:
            u8_outputs.add(len(ops))
            if op.opcode == "AVERAGE_POOL_2D":
                u8_pools.add(len(ops))
        ops.append(dataclasses.replace(op, index=len(ops)))
        source.append(op.index)
    for k, i in enumerate(g.outputs):
        if np.dtype(g.tensors[i].dtype) == _U8:
            outputs[k] = uint8_copy(g.tensors[i], "")
            tensors[i] = dataclasses.replace(tensors[i], name=g.tensors[i].name + " (int8 twin)")
            boundary(i, outputs[k])
    twin = dataclasses.replace(g, tensors=tensors, operators=ops, inputs=inputs, outputs=outputs)
    return Twin(twin, source, frozenset(u8_outputs), frozenset(u8_pools))


def emit_boundary(pos, prepared, g, prefix) -> tables.OpEmit:
    """A boundary QUANTIZE (uint8 graph input -> twin, twin -> uint8 graph output): qk_lut with
    the table of qsim's QUANTIZE kernel (:func:`qsim.codegen.tables.unary_table`), on byte pointers."""
    op = prepared.op
    x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    lut = np.asarray(tables.unary_table(prepared, g)).astype(np.uint8).view(np.int8).astype(np.int64)  # bytes
    return tables.OpEmit(pos, op.opcode, f"uint8 graph boundary '{x.name}' -> '{out.name}' (256-entry table: "
                         "the byte's top bit flipped)",
                         f"qk_lut({prefix}_lut, (const int8_t *)(const void *){{in0}}, (int8_t *)(void *){{out0}}, "
                         f"{out.size});", arrays=[tables.CArray(prefix + "_lut", "int8_t", lut)])


def finish_emit(twin: Twin, emits: list) -> None:
    """uint8 touches on the int8 emits, in place: the uint8 AVERAGE_POOL_2D adds
    ``fp.UINT8_OFFSET`` per tap."""
    for e in emits:
        if e.position in twin.u8_pools:
            e.struct_fields["tap_offset"] = fp.UINT8_OFFSET
            e.comment += " (uint8 rounding: raw sums, ties up)"
