"""Stage 1 of the accelerator model: graph -> one :class:`LayerMap` per op (what runs where).

* CONV_2D and FULLY_CONNECTED are im2col GEMMs on the MAC array:
  M = output pixels (batch * OH * OW; FC: batch rows), K = kh*kw*cin (FC: in
  units), N = cout.
* DEPTHWISE_CONV_2D runs as one small GEMM per input channel (M = output
  pixels, K = kh*kw, N = depth multiplier), the way systolic arrays (and
  SCALE-Sim) run it: each channel needs its own input stream, so it cannot
  share the array's input rows with other channels.  The timing stage packs
  channels block-diagonally where the array is tall enough (weight-stationary)
  and otherwise shows the poor utilization as it is.
* Shape-only ops (RESHAPE, SQUEEZE, ...) are free: metadata, no data moves.
* UNIDIRECTIONAL_SEQUENCE_LSTM and SVDF map to several LayerMaps (same ``index``, their
  ``part`` naming each), run back to back -- see :func:`_map_lstm` and :func:`_map_svdf`.
* Everything else (ADD/SUB/MUL, pooling, softmax/logistic, pad/transpose/
  concat, quantize) runs on the vector unit; ``vector_ops`` counts its
  element operations (``VECTOR_COST`` per output element, as data).

Byte counts are activations/weights as stored in DRAM (int8: 1 byte per element; the
int16 activations of int16x8 layers: 2); ``table_bytes`` are the per-channel requant
tables (bias + multiplier int32 + shift int8: 9 bytes per output channel with an int32
bias, 13 with the int64 bias of int16x8 layers) loaded at layer setup.

uint8 GEMM layers (the old converter's QUANTIZED_UINT8: uint8 activations, uint8 weights with
a zero point ``zp_w`` that is often not 128) run the way Arm's Ethos-U does (its compiler's weight codec takes zero-point-corrected
weights, -255..255): the weights are
centred offline, ``w - zp_w``, into 9-bit signed values (-255..255) stored packed at 9 bits
(``weight_bits`` = 9: weight DRAM/SRAM bytes are ``ceil(9 * count / 8)``, :meth:`LayerMap.weight_stream_bytes`)
and multiplied by 8x9-bit PEs; the activations enter as ``q - 128`` (the top bit flipped: free),
and the input zero point folds into the int32 bias offline (``zp_x * sum(w - zp_w)``), as for int8.
No extra MACs, no row-sum unit: the cost is the 9th weight bit (bytes, and the MAC energy x 9/8).

int16x8 GEMM layers (int16 activations, int8 weights) carry ``in_elem_bytes`` /
``out_elem_bytes`` = 2 and 64-bit accumulators (``acc_bytes`` = 8, TFLite's int64); how the
array multiplies them (two 8-bit passes or native 16x8) is the machine's choice
(``HwConfig.int16_mode``, applied in :mod:`qsim.accel.timing`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import ir
from ..errors import UnsupportedModelError

ARRAY_OPS = ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D")
FREE_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
TABLE_BYTES_PER_CHANNEL = 9  # int32 bias + int32 multiplier + int8 shift
UINT8_WEIGHT_BITS = 9  # uint8 weights centred offline, w - zp_w in -255..255 (module doc)
ACC_BYTES_INT8 = 4  # int8 GEMMs: 32-bit accumulator words in the output SRAM
ACC_BYTES_INT16 = 8  # int16x8 GEMMs: 64-bit accumulators (TFLite's int64 acc)

# vector-unit element operations per *output* element (pools: per window tap, see vector_ops())
VECTOR_COST = {
    "ADD": 1, "SUB": 1, "MUL": 1, "MAXIMUM": 1, "MINIMUM": 1, "SQUARED_DIFFERENCE": 2,
    "RELU": 1, "RELU6": 1, "LEAKY_RELU": 1, "HARD_SWISH": 2,
    "LOGISTIC": 2, "TANH": 2,  # LUT / fixed-point polynomial: load + lookup
    "SOFTMAX": 4,  # max pass, exp + sum pass, reciprocal, scale pass
    "MEAN": 1, "SUM": 1,
    "PAD": 1, "PADV2": 1, "TRANSPOSE": 1, "CONCATENATION": 1, "STRIDED_SLICE": 1, "SLICE": 1,
    "QUANTIZE": 1, "DEQUANTIZE": 1, "AVERAGE_POOL_2D": 1, "MAX_POOL_2D": 1,
}


@dataclass
class LayerMap:
    """One op as the machine sees it (units: elements, bytes, MACs)."""

    index: int
    opcode: str
    name: str  # output tensor name
    unit: str  # "array" | "vector" | "free"
    out_shape: tuple[int, ...]
    macs: int = 0  # every step's
    part: str = ""  # which part of a multi-part op (LSTM, SVDF) this is; "" for a one-part op
    # a recurrent GEMM: the M x K x N GEMM below runs `steps` times in sequence (each step needs the
    # previous one's result); the byte counts below are then per step
    steps: int = 1
    # GEMM view (array ops); depthwise: per-channel GEMM repeated `groups` times
    m: int = 0
    k: int = 0
    n: int = 0
    groups: int = 1
    # row geometry for SRAM tiling along output rows (NHWC: one row = OW pixels)
    out_rows: int = 1  # batch * OH (FC: batch)
    pixels_per_row: int = 1  # OW (FC: 1)
    in_rows: int = 1  # batch * padded input height that tiling walks over (FC: batch)
    in_row_bytes: int = 0  # bytes of one input row, all channels (FC: in units)
    row_stride: int = 1
    window_rows: int = 1  # dilated kernel height (FC: 1)
    # DRAM-side sizes
    ifmap_bytes: int = 0
    weight_bytes: int = 0
    output_bytes: int = 0
    table_bytes: int = 0
    vector_ops: int = 0
    # element widths of an array op: input activations, outputs, accumulator words (int16x8: 2, 2, 8)
    in_elem_bytes: int = 1
    out_elem_bytes: int = 1
    acc_bytes: int = ACC_BYTES_INT8
    weight_bits: int = 8  # stored bits per weight of an array op (uint8 layers: 9, centred; module doc)
    # what SCALE-Sim needs to run the same layer (padded input, one stride); None for non-GEMM
    scalesim: dict | None = None

    @property
    def depthwise(self) -> bool:
        return self.opcode == "DEPTHWISE_CONV_2D"

    def weight_stream_bytes(self, count: int) -> int:
        """Bytes of ``count`` weights as stored (packed at ``weight_bits`` bits each)."""
        return packed_bytes(count, self.weight_bits)


def packed_bytes(count: int, bits: int) -> int:
    """Bytes of ``count`` values packed at ``bits`` bits each (rounded up to whole bytes)."""
    return -(-count * bits // 8)


def _size(t: ir.Tensor) -> int:
    return math.prod(t.shape)  # math.prod: ~50x cheaper than np.prod for a 4-tuple


def _nbytes(t: ir.Tensor) -> int:
    return _size(t) * np.dtype(t.dtype).itemsize


def map_graph(g: ir.Graph) -> list[LayerMap]:
    """The LayerMaps of every operator, in execution order: one per op, several (its parts, in
    order) for UNIDIRECTIONAL_SEQUENCE_LSTM and SVDF."""
    out: list[LayerMap] = []
    for op in g.operators:
        if op.opcode in MULTI_PART_OPS and op.outputs:
            out.extend(MULTI_PART_OPS[op.opcode](g, op))
        else:
            out.append(map_op(g, op))
    return out


def map_op(g: ir.Graph, op: ir.Operator) -> LayerMap:
    """The op's LayerMap; a GEMM op whose operand shapes cannot be mapped is an UnsupportedModelError.
    (A multi-part op, LSTM or SVDF, gets one generic vector LayerMap here: :func:`map_graph` maps its parts.)

    (Shapes are checked here, not only in the kernels' ``prepare``: timing alone maps ops whose
    kernels never run.)
    """
    if not op.outputs:
        return LayerMap(index=op.index, opcode=op.opcode, name="", unit="free", out_shape=())
    out = g.tensors[op.outputs[0]]
    base = dict(index=op.index, opcode=op.opcode, name=out.name, out_shape=tuple(out.shape))
    if op.opcode in ARRAY_OPS:
        problem = _gemm_shape_problem(g, op)
        if problem:
            raise UnsupportedModelError(f"op #{op.index} {op.opcode} ('{out.name}') cannot be mapped onto the "
                                        f"MAC array: {problem}.")
        return _map_conv(g, op, base) if op.opcode != "FULLY_CONNECTED" else _map_fc(g, op, base)
    if op.opcode in FREE_OPS:
        return LayerMap(unit="free", **base)
    return _map_vector(g, op, base)


def _gemm_shape_problem(g: ir.Graph, op: ir.Operator) -> str:
    """Why the operands of a CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED do not form a GEMM ('' if they do)."""
    if len(op.inputs) < 2 or op.inputs[0] < 0 or op.inputs[1] < 0:
        return "it needs an input and a filter"
    x, w, out = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    if 0 in (_size(x), _size(w), _size(out)):
        return f"an empty operand (input {list(x.shape)}, filter {list(w.shape)}, output {list(out.shape)})"
    if op.opcode == "FULLY_CONNECTED":
        if len(w.shape) != 2 or w.shape[1] < 1:
            return f"the weights must be 2-D [out_units, in_units], got {list(w.shape)}"
        if _size(x) % w.shape[1]:
            return f"the input's {_size(x)} elements are not a multiple of in_units={w.shape[1]}"
        return ""
    if len(x.shape) != 4 or len(w.shape) != 4 or len(out.shape) != 4 or op.options is None:
        return (f"input, filter and output must be 4-D NHWC, got {list(x.shape)}, {list(w.shape)}, "
                f"{list(out.shape)}")
    if op.opcode == "DEPTHWISE_CONV_2D":
        if w.shape[0] != 1 or out.shape[3] % x.shape[3] or w.shape[3] != out.shape[3]:
            return (f"the filter must be [1, kh, kw, in_ch * multiplier] with in_ch={x.shape[3]}, "
                    f"got {list(w.shape)} for {out.shape[3]} output channels")
    elif w.shape[3] != x.shape[3] or w.shape[0] != out.shape[3]:
        return (f"the filter {list(w.shape)} does not match the input's {x.shape[3]} channels and the output's "
                f"{out.shape[3]} (grouped convolution is not mapped)")
    return ""


def _widths(g: ir.Graph, op: ir.Operator) -> dict:
    """Element widths of a GEMM op: int16 activations make it an int16x8 layer (64-bit accumulators,
    an int64 bias in its tables)."""
    x, w, out = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    bias = g.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    wide = np.dtype(x.dtype).itemsize > 1
    bias_bytes = max(4, np.dtype(bias.dtype).itemsize) if bias is not None else 4
    bits = UINT8_WEIGHT_BITS if np.dtype(w.dtype) == np.uint8 else 8
    return dict(in_elem_bytes=np.dtype(x.dtype).itemsize, out_elem_bytes=np.dtype(out.dtype).itemsize,
                acc_bytes=ACC_BYTES_INT16 if wide else ACC_BYTES_INT8, weight_bits=bits,
                _table=TABLE_BYTES_PER_CHANNEL - 4 + bias_bytes)


def _weight_bytes(w: ir.Tensor, widths: dict) -> int:
    """Stored bytes of the weight tensor at the layer's ``weight_bits``."""
    return packed_bytes(_size(w), widths["weight_bits"])


def _map_conv(g: ir.Graph, op: ir.Operator, base: dict) -> LayerMap:
    x, w = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
    out = g.tensors[op.outputs[0]]
    o = op.options
    batch, oh, ow, cout = out.shape
    _, h, wid, cin = x.shape
    kh, kw = w.shape[1], w.shape[2]
    ekh = (kh - 1) * o.dilation_h + 1
    ekw = (kw - 1) * o.dilation_w + 1
    pad_h = (oh - 1) * o.stride_h + ekh  # input rows the window walks over (padded)
    pad_w = (ow - 1) * o.stride_w + ekw
    m = batch * oh * ow
    if op.opcode == "DEPTHWISE_CONV_2D":
        mult = cout // cin
        k, n, groups = kh * kw, mult, cin
        macs = m * k * cout
    else:
        k, n, groups = kh * kw * cin, cout, 1
        macs = m * k * n
    sim = None
    if o.stride_h == o.stride_w and o.dilation_h == 1 and o.dilation_w == 1:
        sim = dict(name=f"op{op.index}_{op.opcode.lower()}", ifmap_h=pad_h, ifmap_w=pad_w, filt_h=kh, filt_w=kw,
                   channels=cin if groups == 1 else 1, num_filt=n, stride=o.stride_h, repeat=groups)
    wd = _widths(g, op)
    table = wd.pop("_table")
    return LayerMap(unit="array", macs=macs, m=m, k=k, n=n, groups=groups,
                    out_rows=batch * oh, pixels_per_row=ow, in_rows=batch * pad_h,
                    in_row_bytes=min(wid, pad_w) * cin * wd["in_elem_bytes"], row_stride=o.stride_h, window_rows=ekh,
                    ifmap_bytes=_nbytes(x), weight_bytes=_weight_bytes(w, wd), output_bytes=_nbytes(out),
                    table_bytes=table * cout, scalesim=sim, **wd, **base)


def _map_fc(g: ir.Graph, op: ir.Operator, base: dict) -> LayerMap:
    x, w = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
    out = g.tensors[op.outputs[0]]
    n, k = w.shape
    m = _size(x) // k
    sim = dict(name=f"op{op.index}_fully_connected", ifmap_h=m, ifmap_w=1, filt_h=1, filt_w=1,
               channels=k, num_filt=n, stride=1, repeat=1)
    wd = _widths(g, op)
    table = wd.pop("_table")
    return LayerMap(unit="array", macs=m * k * n, m=m, k=k, n=n, out_rows=m, pixels_per_row=1,
                    in_rows=m, in_row_bytes=k * wd["in_elem_bytes"], row_stride=1, window_rows=1,
                    ifmap_bytes=_nbytes(x), weight_bytes=_weight_bytes(w, wd), output_bytes=_nbytes(out),
                    table_bytes=table * n, scalesim=sim, **wd, **base)


# LSTM (integer 8x8->16 form, qsim/kernels/lstm.py): vector-unit element operations per cell,
# per batch row and time step, after the two GEMMs' requant units have produced the int16
# gate pre-activations of the step:
LSTM_STEP_COST = {
    "gate pre-activation add + int16 saturation (4 gates)": 4,
    "gate non-linearities, LUT load + lookup (3 sigmoids, 1 tanh)": 8,
    "i*g and f*c: multiply + rescale": 4,
    "cell state: add + clip": 2,
    "tanh(cell), LUT load + lookup": 2,
    "hidden state: o*tanh(c) multiply + requant to int8": 2,
}
# SVDF (qsim/kernels/svdf.py) on the vector unit, per batch row: per filter, its new state column
# written (1) and its memory_size time-weight taps (1 fused multiply-accumulate each) and one
# rank-reduction add (1); per output unit, the bias add and the requant (2).
SVDF_FILTER_COST = 2  # + memory_size: state column write + rank-reduction add
SVDF_UNIT_COST = 2


def _gemm_part(base: dict, part: str, m: int, k: int, n: int, steps: int, in_bytes: int, acc: int,
               out_bytes: int) -> LayerMap:
    """An FC-like GEMM part of an LSTM / SVDF (int8 weights [N, K]; bytes per step)."""
    return LayerMap(unit="array", part=part, steps=steps, macs=steps * m * k * n, m=m, k=k, n=n,
                    out_rows=m, pixels_per_row=1, in_rows=m, in_row_bytes=k * in_bytes,
                    ifmap_bytes=m * k * in_bytes, weight_bytes=k * n, output_bytes=m * n * out_bytes,
                    table_bytes=TABLE_BYTES_PER_CHANNEL * n, in_elem_bytes=in_bytes, out_elem_bytes=out_bytes,
                    acc_bytes=acc, **base)


def _map_lstm(g: ir.Graph, op: ir.Operator) -> list[LayerMap]:
    """UNIDIRECTIONAL_SEQUENCE_LSTM, input x [B, T, I] (time-major: [T, B, I]), S cells, 4 gates:

    1. "input GEMM": every time step's input FCs at once, M = B*T, K = I, N = 4S (int8 weights;
       outputs: int16 Q3.12 pre-activations through the requant unit);
    2. "recurrent GEMM": per step, M = B, K = S, N = 4S, ``steps`` = T dependent GEMMs (each
       needs the previous step's hidden state);
    3. "cell update": the vector unit's :data:`LSTM_STEP_COST` per cell, batch row and step.

    The parts run one after the other (the per-step vector work is summed into part 3, not
    interleaved with the steps: a machine without overlap between array and vector unit takes
    the same time).  int16x8 LSTMs: int16 activations, 64-bit accumulators."""
    x = g.tensors[op.inputs[0]]
    out = g.tensors[op.outputs[0]]
    w_rec = g.tensors[op.inputs[6]] if len(op.inputs) > 6 and op.inputs[6] >= 0 else None
    if len(x.shape) != 3 or w_rec is None or len(w_rec.shape) != 2:
        raise UnsupportedModelError(f"op #{op.index} {op.opcode} ('{out.name}') cannot be mapped: input "
                                    f"{list(x.shape)} is not [batch, time, features] or has no recurrent weights.")
    time_major = bool(getattr(op.options, "time_major", False))
    t_steps, batch = (x.shape[0], x.shape[1]) if time_major else (x.shape[1], x.shape[0])
    n_in, s = x.shape[2], w_rec.shape[0]
    el = np.dtype(x.dtype).itemsize
    acc = ACC_BYTES_INT16 if el > 1 else ACC_BYTES_INT8
    base = dict(index=op.index, opcode=op.opcode, name=out.name, out_shape=tuple(out.shape))
    cost = sum(LSTM_STEP_COST.values())
    cell = LayerMap(unit="vector", part="cell update", vector_ops=cost * batch * t_steps * s,
                    ifmap_bytes=2 * 4 * s * batch * t_steps * 2 + batch * s * 2,  # both GEMMs' int16 gates, c
                    output_bytes=_nbytes(out), **base)
    return [_gemm_part(base, "input GEMM", batch * t_steps, n_in, 4 * s, 1, el, acc, 2),
            _gemm_part(base, "recurrent GEMM", batch, s, 4 * s, t_steps, el, acc, 2), cell]


def _map_svdf(g: ir.Graph, op: ir.Operator) -> list[LayerMap]:
    """SVDF, input [B, I], F filters of memory M, U = F / rank units, state [B, F*M]:

    1. "feature GEMM": M = B, K = I, N = F on the array (int8 weights; outputs: state-type
       values through the requant unit);
    2. "time filter": the vector unit's time-weight dot products over each filter's memory, the
       rank reduction, bias and requant (:data:`SVDF_FILTER_COST`, :data:`SVDF_UNIT_COST`).
       The memory is a ring buffer: only the new column is written."""
    x, wf, wt = (g.tensors[op.inputs[i]] for i in range(3))
    out = g.tensors[op.outputs[0]]
    if len(x.shape) != 2 or len(wf.shape) != 2 or len(wt.shape) != 2:
        raise UnsupportedModelError(f"op #{op.index} {op.opcode} ('{out.name}') cannot be mapped: input "
                                    f"{list(x.shape)}, weights_feature {list(wf.shape)} and weights_time "
                                    f"{list(wt.shape)} must be 2-D.")
    batch, n_in = x.shape
    filters, memory = wt.shape
    units = _size(out) // batch if batch else 0
    st = np.dtype(wt.dtype).itemsize  # the state has the time weights' type
    base = dict(index=op.index, opcode=op.opcode, name=out.name, out_shape=tuple(out.shape))
    bias = g.tensors[op.inputs[3]] if len(op.inputs) > 3 and op.inputs[3] >= 0 else None
    time = LayerMap(unit="vector", part="time filter",
                    vector_ops=batch * filters * (memory + SVDF_FILTER_COST) + batch * units * SVDF_UNIT_COST,
                    ifmap_bytes=batch * filters * memory * st,
                    weight_bytes=_nbytes(wt) + (_nbytes(bias) if bias is not None else 0),
                    output_bytes=_nbytes(out) + batch * filters * st, **base)
    return [_gemm_part(base, "feature GEMM", batch, n_in, filters, 1, np.dtype(x.dtype).itemsize,
                       ACC_BYTES_INT8, st), time]


MULTI_PART_OPS = {"UNIDIRECTIONAL_SEQUENCE_LSTM": _map_lstm, "SVDF": _map_svdf}


def _map_vector(g: ir.Graph, op: ir.Operator, base: dict) -> LayerMap:
    ins = [g.tensors[i] for i in op.inputs if i >= 0]
    outs = [g.tensors[i] for i in op.outputs]
    act_in = [t for t in ins if not t.is_const]
    const_in = [t for t in ins if t.is_const]
    return LayerMap(unit="vector", vector_ops=vector_ops(op, g),
                    ifmap_bytes=sum(_nbytes(t) for t in act_in),
                    weight_bytes=sum(_nbytes(t) for t in const_in),
                    output_bytes=sum(_nbytes(t) for t in outs), **base)


def vector_ops(op: ir.Operator, g: ir.Graph) -> int:
    """Element operations the vector unit performs for ``op`` (pools: one per window tap)."""
    out_elems = sum(_size(g.tensors[i]) for i in op.outputs)
    cost = VECTOR_COST.get(op.opcode, 1)
    if op.opcode in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"):
        cost = op.options.filter_h * op.options.filter_w
    if op.opcode in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"):
        return sum(_size(g.tensors[i]) for i in op.inputs[:1])
    return out_elems * cost
