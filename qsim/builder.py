"""Writer of real .tflite flatbuffers (schema v3) from a few Python calls.

Tests and the model zoo use it to make int8 models that LiteRT, TFLite Micro
and qsim's loader all read::

    b = ModelBuilder(description="tiny conv")
    x = b.add_input("x", (1, 8, 8, 3), np.int8, scale=0.05, zero_point=-3)
    w = b.add_const("w", w_q, scale=w_scales, zero_point=np.zeros(16, np.int64), axis=0)
    bias = b.add_const("b", bias_q, scale=0.05 * w_scales, zero_point=0)
    y = b.add_tensor("y", (1, 8, 8, 16), np.int8, scale=0.1, zero_point=5)
    b.add_op("CONV_2D", [x, w, bias], [y], ir.Conv2DOptions(padding="SAME"))
    b.mark_output(y)
    blob = b.build()

Conventions: layouts are TFLite's (NHWC activations, OHWI conv filters,
[1, kh, kw, C*mult] depthwise filters, [out, in] fully-connected weights);
real = scale * (q - zero_point); per-channel quantization along ``axis``
(written as quantized_dimension).  Buffer 0 is the empty sentinel buffer,
every constant gets its own 16-byte-aligned buffer, activations use buffer 0.
Operator-code versions default to what the TFLite converter writes for int8
models (see ``INT8_VERSIONS``); both ``builtin_code`` and
``deprecated_builtin_code`` (= min(code, 127)) are written.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

from . import ir
from .errors import QsimError

OPCODES = {name: code for code, name in BUILTIN_OPCODE2NAME.items()}

# numpy dtype -> TFLite TensorType enum
TENSOR_TYPES = {
    np.dtype(np.float32): 0, np.dtype(np.float16): 1, np.dtype(np.int32): 2, np.dtype(np.uint8): 3,
    np.dtype(np.int64): 4, np.dtype(np.bool_): 6, np.dtype(np.int16): 7, np.dtype(np.int8): 9,
    np.dtype(np.float64): 10, np.dtype(np.uint32): 15, np.dtype(np.uint16): 16,
}

# Operator-code versions the TFLite converter (lite/tools/versioning/op_version.cc)
# assigns when an op reads or writes int8 activations.  Other ops get version 1
# (or MIN_VERSIONS).
# LiteRT's resolvers accept any version in [1, max]; TFLM ignores versions.
INT8_VERSIONS = {
    "ADD": 2, "SUB": 2, "MUL": 2, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4,
    "AVERAGE_POOL_2D": 2, "MAX_POOL_2D": 2, "SOFTMAX": 2, "RESHAPE": 1, "CONCATENATION": 2,
    "MEAN": 2, "SUM": 2, "REDUCE_MAX": 2, "PAD": 2, "PADV2": 2, "TRANSPOSE": 2, "STRIDED_SLICE": 2,
    "SQUEEZE": 1, "QUANTIZE": 2, "DEQUANTIZE": 2, "LEAKY_RELU": 1, "LOGISTIC": 2, "TANH": 2,
    "RELU": 2, "RELU6": 2, "HARD_SWISH": 1, "MAXIMUM": 2, "MINIMUM": 2, "SPLIT": 2, "GATHER": 2,
    "BROADCAST_TO": 2,
}
# Ops whose version 1 is reserved (LiteRT registers them from version 2 on).
MIN_VERSIONS = {"BROADCAST_TO": 2}

# Ops whose converter output always carries an (empty) options table.
EMPTY_OPTIONS = {
    "PAD": "PadOptions", "PADV2": "PadV2Options", "TRANSPOSE": "TransposeOptions",
    "QUANTIZE": "QuantizeOptions", "DEQUANTIZE": "DequantizeOptions",
    "MAXIMUM": "MaximumMinimumOptions", "MINIMUM": "MaximumMinimumOptions",
    "HARD_SWISH": "HardSwishOptions",
}

ACT_CODES = {v: k for k, v in ir.ACTIVATIONS.items()}
PAD_CODES = {v: k for k, v in ir.PADDINGS.items()}


@dataclass
class _TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    axis: int
    data: np.ndarray | None
    variable: bool = False


@dataclass
class _OpSpec:
    opcode: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: object
    version: int
    intermediates: tuple[int, ...] = ()


class ModelBuilder:
    """Accumulate tensors and operators, then ``build()`` one-subgraph .tflite bytes."""

    def __init__(self, description: str = "qsim.builder", name: str = "main"):
        self.description = description
        self.name = name
        self.tensors: list[_TensorSpec] = []
        self.ops: list[_OpSpec] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    # ------------------------------------------------------------ tensors

    def add_tensor(self, name: str, shape, dtype=np.int8, scale=None, zero_point=None, axis: int = 0,
                   variable: bool = False) -> int:
        """An activation (non-constant) tensor; returns its index.  ``variable``: a state tensor
        (is_variable, e.g. an LSTM's hidden and cell state), read and written by its op."""
        t = self._add(name, shape, dtype, scale, zero_point, axis, None)
        self.tensors[t].variable = bool(variable)
        return t

    def add_input(self, name: str, shape, dtype=np.int8, scale=None, zero_point=None, axis: int = 0) -> int:
        """A graph input (in call order); returns its tensor index."""
        t = self._add(name, shape, dtype, scale, zero_point, axis, None)
        self.inputs.append(t)
        return t

    def add_variable(self, name: str, shape, dtype=np.int16, scale=None, zero_point=None, data=None) -> int:
        """A variable tensor (is_variable): state an op reads and updates, e.g. SVDF's
        activation_state.  ``data``: initial contents written to its buffer (TFLite Micro ignores
        them, LiteRT refuses the model; see :func:`qsim.interpreter.variable_start_values`)."""
        arr = None if data is None else np.ascontiguousarray(np.asarray(data, dtype=dtype).reshape(shape))
        t = self._add(name, shape, dtype, scale, zero_point, 0, arr)
        self.tensors[t].variable = True
        return t

    def add_const(self, name: str, array, scale=None, zero_point=None, axis: int = 0, dtype=None) -> int:
        """A constant tensor holding ``array`` (dtype kept unless ``dtype`` given)."""
        a = np.asarray(array)
        if dtype is not None:
            a = a.astype(dtype)
        return self._add(name, a.shape, a.dtype, scale, zero_point, axis, np.ascontiguousarray(a))

    def mark_output(self, t: int) -> None:
        self._check_index(t, "mark_output")
        self.outputs.append(int(t))

    def _add(self, name, shape, dtype, scale, zero_point, axis, data) -> int:
        dt = np.dtype(dtype)
        if dt not in TENSOR_TYPES:
            raise QsimError(f"tensor '{name}': dtype {dt} has no TFLite tensor type.")
        shape = tuple(int(d) for d in shape)
        sc = zp = None
        if scale is not None:
            sc = np.atleast_1d(np.asarray(scale, dtype=np.float64)).ravel()
            zp = np.zeros(sc.size, np.int64) if zero_point is None else \
                np.atleast_1d(np.asarray(zero_point, dtype=np.int64)).ravel()
            if zp.size == 1 and sc.size > 1:
                zp = np.full(sc.size, zp[0], np.int64)
            if zp.size != sc.size:
                raise QsimError(f"tensor '{name}': {sc.size} scales but {zp.size} zero points.")
            if sc.size > 1 and not (0 <= axis < len(shape) and shape[axis] == sc.size):
                raise QsimError(f"tensor '{name}': {sc.size} per-channel scales do not match "
                                f"dimension {axis} of shape {list(shape)}.")
        elif zero_point is not None:
            raise QsimError(f"tensor '{name}': a zero point without a scale.")
        self.tensors.append(_TensorSpec(name, shape, dt, sc, zp, int(axis), data))
        return len(self.tensors) - 1

    def _check_index(self, t: int, where: str) -> None:
        if not (0 <= int(t) < len(self.tensors)):
            raise QsimError(f"{where}: tensor index {t} does not exist ({len(self.tensors)} tensors).")

    # ------------------------------------------------------------ operators

    def add_op(self, opcode: str, inputs, outputs, options=None, version: int | None = None,
               intermediates=()) -> int:
        """Append an operator (graph order = call order); -1 marks an omitted optional input.
        ``intermediates``: tensor indices of the op's intermediates (the integer LSTM's scales)."""
        if opcode not in OPCODES:
            raise QsimError(f"'{opcode}' is not a TFLite builtin operator name.")
        ins = tuple(int(i) for i in inputs)
        outs = tuple(int(o) for o in outputs)
        for i in ins:
            if i != -1:
                self._check_index(i, opcode)
        for o in outs:
            self._check_index(o, opcode)
        if version is None:
            acts = [self.tensors[t] for t in ins + outs if t != -1 and self.tensors[t].data is None]
            int8 = any(t.dtype == np.int8 for t in acts)
            version = INT8_VERSIONS.get(opcode, 1) if int8 else MIN_VERSIONS.get(opcode, 1)
        inter = tuple(int(i) for i in intermediates)
        for i in inter:
            self._check_index(i, opcode)
        self.ops.append(_OpSpec(opcode, ins, outs, options, int(version), inter))
        return len(self.ops) - 1

    # ------------------------------------------------------------ output

    def save(self, path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(self.build())
        return p

    def build(self, force_defaults: bool = False) -> bytes:
        """Serialize to .tflite bytes (identifier 'TFL3', schema version 3).

        ``force_defaults`` writes every scalar field even when it equals the schema default
        (stride 1, padding SAME...), so each one has a place in the file (the fuzzer patches them).
        """
        if not self.outputs:
            raise QsimError("the model has no outputs: call mark_output() first.")
        fb = flatbuffers.Builder(1024 + sum(t.data.nbytes for t in self.tensors if t.data is not None))
        fb.ForceDefaults(force_defaults)
        # buffers: 0 = empty sentinel, then one per constant
        buffer_of, datas = {}, []
        for i, t in enumerate(self.tensors):
            if t.data is not None:
                buffer_of[i] = len(datas) + 1
                datas.append(t.data)
        buf_offsets = [_empty_table(fb, tflite.BufferStart, tflite.BufferEnd)]
        for d in datas:
            vec = _aligned_bytes(fb, d.astype(d.dtype.newbyteorder("<"), copy=False).tobytes())
            tflite.BufferStart(fb)
            tflite.BufferAddData(fb, vec)
            buf_offsets.append(tflite.BufferEnd(fb))

        codes: list[tuple[str, int]] = []
        op_code_index = []
        for op in self.ops:
            key = (op.opcode, op.version)
            if key not in codes:
                codes.append(key)
            op_code_index.append(codes.index(key))
        code_offsets = [_operator_code(fb, name, ver) for name, ver in codes]
        tensor_offsets = [_tensor(fb, t, buffer_of.get(i, 0)) for i, t in enumerate(self.tensors)]
        op_offsets = [_operator(fb, op, idx) for op, idx in zip(self.ops, op_code_index)]

        sg_name = fb.CreateString(self.name)
        tensors_vec = _table_vector(fb, tensor_offsets)
        ops_vec = _table_vector(fb, op_offsets)
        ins_vec = _int_vector(fb, self.inputs, np.int32)
        outs_vec = _int_vector(fb, self.outputs, np.int32)
        tflite.SubGraphStart(fb)
        tflite.SubGraphAddTensors(fb, tensors_vec)
        tflite.SubGraphAddInputs(fb, ins_vec)
        tflite.SubGraphAddOutputs(fb, outs_vec)
        tflite.SubGraphAddOperators(fb, ops_vec)
        tflite.SubGraphAddName(fb, sg_name)
        subgraph = tflite.SubGraphEnd(fb)

        desc = fb.CreateString(self.description)
        codes_vec = _table_vector(fb, code_offsets)
        subgraphs_vec = _table_vector(fb, [subgraph])
        buffers_vec = _table_vector(fb, buf_offsets)
        tflite.ModelStart(fb)
        tflite.ModelAddVersion(fb, 3)
        tflite.ModelAddOperatorCodes(fb, codes_vec)
        tflite.ModelAddSubgraphs(fb, subgraphs_vec)
        tflite.ModelAddDescription(fb, desc)
        tflite.ModelAddBuffers(fb, buffers_vec)
        model = tflite.ModelEnd(fb)
        fb.Finish(model, file_identifier=b"TFL3")
        return bytes(fb.Output())


# ---------------------------------------------------------------- flatbuffer helpers

def _aligned_bytes(fb: flatbuffers.Builder, payload: bytes, alignment: int = 16) -> int:
    """A [ubyte] vector whose first byte is ``alignment``-aligned in the final file."""
    fb.StartVector(1, len(payload), alignment)
    fb.head = fb.head - len(payload)
    fb.Bytes[fb.head:fb.head + len(payload)] = payload
    fb.vectorNumElems = len(payload)
    return fb.EndVector()


def _int_vector(fb: flatbuffers.Builder, values, dtype) -> int:
    return fb.CreateNumpyVector(np.asarray(list(values), dtype=dtype))


def _table_vector(fb: flatbuffers.Builder, offsets: list[int]) -> int:
    fb.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        fb.PrependUOffsetTRelative(off)
    return fb.EndVector()


def _empty_table(fb, start, end) -> int:
    start(fb)
    return end(fb)


def _operator_code(fb: flatbuffers.Builder, name: str, version: int) -> int:
    code = OPCODES[name]
    tflite.OperatorCodeStart(fb)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(fb, min(code, 127))
    tflite.OperatorCodeAddBuiltinCode(fb, code)
    tflite.OperatorCodeAddVersion(fb, version)
    return tflite.OperatorCodeEnd(fb)


def _tensor(fb: flatbuffers.Builder, t: _TensorSpec, buffer: int) -> int:
    quant = None
    if t.scale is not None:
        sc = fb.CreateNumpyVector(t.scale.astype(np.float32))
        zp = fb.CreateNumpyVector(t.zero_point.astype(np.int64))
        tflite.QuantizationParametersStart(fb)
        tflite.QuantizationParametersAddScale(fb, sc)
        tflite.QuantizationParametersAddZeroPoint(fb, zp)
        tflite.QuantizationParametersAddQuantizedDimension(fb, t.axis)
        quant = tflite.QuantizationParametersEnd(fb)
    name = fb.CreateString(t.name)
    shape = _int_vector(fb, t.shape, np.int32)
    tflite.TensorStart(fb)
    tflite.TensorAddShape(fb, shape)
    tflite.TensorAddType(fb, TENSOR_TYPES[t.dtype])
    tflite.TensorAddBuffer(fb, buffer)
    tflite.TensorAddName(fb, name)
    if t.variable:
        tflite.TensorAddIsVariable(fb, True)
    if quant is not None:
        tflite.TensorAddQuantization(fb, quant)
    if t.variable:
        tflite.TensorAddIsVariable(fb, True)
    return tflite.TensorEnd(fb)


def _operator(fb: flatbuffers.Builder, op: _OpSpec, code_index: int) -> int:
    opt_type, opt = _options(fb, op)
    ins = _int_vector(fb, op.inputs, np.int32)
    outs = _int_vector(fb, op.outputs, np.int32)
    inter = _int_vector(fb, op.intermediates, np.int32) if op.intermediates else None
    tflite.OperatorStart(fb)
    tflite.OperatorAddOpcodeIndex(fb, code_index)
    tflite.OperatorAddInputs(fb, ins)
    tflite.OperatorAddOutputs(fb, outs)
    if inter is not None:
        tflite.OperatorAddIntermediates(fb, inter)
    if opt is not None:
        tflite.OperatorAddBuiltinOptionsType(fb, opt_type)
        tflite.OperatorAddBuiltinOptions(fb, opt)
    return tflite.OperatorEnd(fb)


# ---------------------------------------------------------------- option tables

def _act(name: str) -> int:
    if name not in ACT_CODES:
        raise QsimError(f"unknown fused activation '{name}'; one of {sorted(ACT_CODES)}.")
    return ACT_CODES[name]


def _padding(name: str) -> int:
    if name not in PAD_CODES:
        raise QsimError(f"unknown padding '{name}'; use 'SAME' or 'VALID'.")
    return PAD_CODES[name]


def _options(fb: flatbuffers.Builder, op: _OpSpec) -> tuple[int, int | None]:
    """(BuiltinOptions enum, table offset) for the operator, or (0, None)."""
    o, name = op.options, op.opcode
    T = tflite.BuiltinOptions
    if o is None:
        if name in ("ADD", "SUB", "MUL", "DIV", "CONCATENATION", "SOFTMAX", "MEAN", "SUM", "REDUCE_MAX",
                    "REDUCE_MIN", "REDUCE_PROD", "SQUEEZE", "STRIDED_SLICE", "RESHAPE", "LEAKY_RELU",
                    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D",
                    "L2_POOL_2D"):
            o = _DEFAULT_OPTIONS[name]()
        elif name in EMPTY_OPTIONS:
            cls = EMPTY_OPTIONS[name]
            return getattr(T, cls), _empty_table(fb, getattr(tflite, cls + "Start"), getattr(tflite, cls + "End"))
        else:
            return 0, None
    if isinstance(o, ir.Conv2DOptions) and name == "CONV_2D":
        tflite.Conv2DOptionsStart(fb)
        tflite.Conv2DOptionsAddPadding(fb, _padding(o.padding))
        tflite.Conv2DOptionsAddStrideW(fb, o.stride_w)
        tflite.Conv2DOptionsAddStrideH(fb, o.stride_h)
        tflite.Conv2DOptionsAddFusedActivationFunction(fb, _act(o.activation))
        tflite.Conv2DOptionsAddDilationWFactor(fb, o.dilation_w)
        tflite.Conv2DOptionsAddDilationHFactor(fb, o.dilation_h)
        return T.Conv2DOptions, tflite.Conv2DOptionsEnd(fb)
    if isinstance(o, ir.DepthwiseConv2DOptions) and name == "DEPTHWISE_CONV_2D":
        tflite.DepthwiseConv2DOptionsStart(fb)
        tflite.DepthwiseConv2DOptionsAddPadding(fb, _padding(o.padding))
        tflite.DepthwiseConv2DOptionsAddStrideW(fb, o.stride_w)
        tflite.DepthwiseConv2DOptionsAddStrideH(fb, o.stride_h)
        tflite.DepthwiseConv2DOptionsAddDepthMultiplier(fb, o.depth_multiplier)
        tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(fb, _act(o.activation))
        tflite.DepthwiseConv2DOptionsAddDilationWFactor(fb, o.dilation_w)
        tflite.DepthwiseConv2DOptionsAddDilationHFactor(fb, o.dilation_h)
        return T.DepthwiseConv2DOptions, tflite.DepthwiseConv2DOptionsEnd(fb)
    if isinstance(o, ir.FullyConnectedOptions) and name == "FULLY_CONNECTED":
        tflite.FullyConnectedOptionsStart(fb)
        tflite.FullyConnectedOptionsAddFusedActivationFunction(fb, _act(o.activation))
        tflite.FullyConnectedOptionsAddWeightsFormat(fb, o.weights_format)
        tflite.FullyConnectedOptionsAddKeepNumDims(fb, bool(o.keep_num_dims))
        return T.FullyConnectedOptions, tflite.FullyConnectedOptionsEnd(fb)
    if isinstance(o, ir.Pool2DOptions) and name in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"):
        tflite.Pool2DOptionsStart(fb)
        tflite.Pool2DOptionsAddPadding(fb, _padding(o.padding))
        tflite.Pool2DOptionsAddStrideW(fb, o.stride_w)
        tflite.Pool2DOptionsAddStrideH(fb, o.stride_h)
        tflite.Pool2DOptionsAddFilterWidth(fb, o.filter_w)
        tflite.Pool2DOptionsAddFilterHeight(fb, o.filter_h)
        tflite.Pool2DOptionsAddFusedActivationFunction(fb, _act(o.activation))
        return T.Pool2DOptions, tflite.Pool2DOptionsEnd(fb)
    if isinstance(o, ir.ActivationOptions) and name in ("ADD", "SUB", "MUL", "DIV"):
        cls = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions", "DIV": "DivOptions"}[name]
        getattr(tflite, cls + "Start")(fb)
        getattr(tflite, cls + "AddFusedActivationFunction")(fb, _act(o.activation))
        return getattr(T, cls), getattr(tflite, cls + "End")(fb)
    if isinstance(o, ir.ConcatenationOptions) and name == "CONCATENATION":
        tflite.ConcatenationOptionsStart(fb)
        tflite.ConcatenationOptionsAddAxis(fb, o.axis)
        tflite.ConcatenationOptionsAddFusedActivationFunction(fb, _act(o.activation))
        return T.ConcatenationOptions, tflite.ConcatenationOptionsEnd(fb)
    if isinstance(o, ir.ReshapeOptions) and name == "RESHAPE":
        vec = None if o.new_shape is None else _int_vector(fb, o.new_shape, np.int32)
        tflite.ReshapeOptionsStart(fb)
        if vec is not None:
            tflite.ReshapeOptionsAddNewShape(fb, vec)
        return T.ReshapeOptions, tflite.ReshapeOptionsEnd(fb)
    if isinstance(o, ir.SoftmaxOptions) and name == "SOFTMAX":
        tflite.SoftmaxOptionsStart(fb)
        tflite.SoftmaxOptionsAddBeta(fb, o.beta)
        return T.SoftmaxOptions, tflite.SoftmaxOptionsEnd(fb)
    if isinstance(o, ir.ReducerOptions) and name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"):
        tflite.ReducerOptionsStart(fb)
        tflite.ReducerOptionsAddKeepDims(fb, bool(o.keep_dims))
        return T.ReducerOptions, tflite.ReducerOptionsEnd(fb)
    if isinstance(o, ir.SqueezeOptions) and name == "SQUEEZE":
        vec = _int_vector(fb, o.squeeze_dims, np.int32)
        tflite.SqueezeOptionsStart(fb)
        tflite.SqueezeOptionsAddSqueezeDims(fb, vec)
        return T.SqueezeOptions, tflite.SqueezeOptionsEnd(fb)
    if isinstance(o, ir.StridedSliceOptions) and name == "STRIDED_SLICE":
        tflite.StridedSliceOptionsStart(fb)
        tflite.StridedSliceOptionsAddBeginMask(fb, o.begin_mask)
        tflite.StridedSliceOptionsAddEndMask(fb, o.end_mask)
        tflite.StridedSliceOptionsAddEllipsisMask(fb, o.ellipsis_mask)
        tflite.StridedSliceOptionsAddNewAxisMask(fb, o.new_axis_mask)
        tflite.StridedSliceOptionsAddShrinkAxisMask(fb, o.shrink_axis_mask)
        tflite.StridedSliceOptionsAddOffset(fb, bool(o.offset))
        return T.StridedSliceOptions, tflite.StridedSliceOptionsEnd(fb)
    if isinstance(o, ir.TransposeConvOptions) and name == "TRANSPOSE_CONV":
        tflite.TransposeConvOptionsStart(fb)
        tflite.TransposeConvOptionsAddPadding(fb, _padding(o.padding))
        tflite.TransposeConvOptionsAddStrideH(fb, o.stride_h)
        tflite.TransposeConvOptionsAddStrideW(fb, o.stride_w)
        tflite.TransposeConvOptionsAddFusedActivationFunction(fb, _act(o.activation))
        return T.TransposeConvOptions, tflite.TransposeConvOptionsEnd(fb)
    if isinstance(o, ir.SequenceLSTMOptions) and name == "UNIDIRECTIONAL_SEQUENCE_LSTM":
        tflite.UnidirectionalSequenceLSTMOptionsStart(fb)
        tflite.UnidirectionalSequenceLSTMOptionsAddFusedActivationFunction(fb, _act(o.activation))
        tflite.UnidirectionalSequenceLSTMOptionsAddCellClip(fb, o.cell_clip)
        tflite.UnidirectionalSequenceLSTMOptionsAddProjClip(fb, o.proj_clip)
        tflite.UnidirectionalSequenceLSTMOptionsAddTimeMajor(fb, bool(o.time_major))
        tflite.UnidirectionalSequenceLSTMOptionsAddAsymmetricQuantizeInputs(fb, bool(o.asymmetric_quantize_inputs))
        return T.UnidirectionalSequenceLSTMOptions, tflite.UnidirectionalSequenceLSTMOptionsEnd(fb)
    if isinstance(o, ir.SVDFOptions) and name == "SVDF":
        tflite.SVDFOptionsStart(fb)
        tflite.SVDFOptionsAddRank(fb, o.rank)
        tflite.SVDFOptionsAddFusedActivationFunction(fb, _act(o.activation))
        tflite.SVDFOptionsAddAsymmetricQuantizeInputs(fb, bool(o.asymmetric_quantize_inputs))
        return T.SVDFOptions, tflite.SVDFOptionsEnd(fb)
    if isinstance(o, ir.LeakyReluOptions) and name == "LEAKY_RELU":
        tflite.LeakyReluOptionsStart(fb)
        tflite.LeakyReluOptionsAddAlpha(fb, o.alpha)
        return T.LeakyReluOptions, tflite.LeakyReluOptionsEnd(fb)
    raise QsimError(f"{name}: options of type {type(o).__name__} cannot be written for this op.")


_DEFAULT_OPTIONS = {
    "ADD": ir.ActivationOptions, "SUB": ir.ActivationOptions, "MUL": ir.ActivationOptions,
    "DIV": ir.ActivationOptions, "CONCATENATION": ir.ConcatenationOptions, "SOFTMAX": ir.SoftmaxOptions,
    "MEAN": ir.ReducerOptions, "SUM": ir.ReducerOptions, "REDUCE_MAX": ir.ReducerOptions,
    "REDUCE_MIN": ir.ReducerOptions, "REDUCE_PROD": ir.ReducerOptions, "SQUEEZE": ir.SqueezeOptions,
    "STRIDED_SLICE": ir.StridedSliceOptions, "RESHAPE": ir.ReshapeOptions, "LEAKY_RELU": ir.LeakyReluOptions,
    "CONV_2D": ir.Conv2DOptions, "DEPTHWISE_CONV_2D": ir.DepthwiseConv2DOptions,
    "FULLY_CONNECTED": ir.FullyConnectedOptions, "AVERAGE_POOL_2D": ir.Pool2DOptions,
    "MAX_POOL_2D": ir.Pool2DOptions, "L2_POOL_2D": ir.Pool2DOptions, "TRANSPOSE_CONV": ir.TransposeConvOptions,
    "SVDF": ir.SVDFOptions,
}


# ---------------------------------------------------------------- single-op models for tests

def lstm_int8_model(n_batch: int = 1, n_time: int = 4, n_input: int = 3, n_cell: int = 5, *, seed: int = 0,
                    time_major: bool = False, cell_power: int = -11, cell_clip: float = 0.0,
                    input_scale: float = 0.05, input_zp: int = -3, hidden_scale: float = 2 ** -7,
                    hidden_zp: int = 0, weight_scale: float = 0.02, cell_scale: float | None = None,
                    activations=np.int8) -> bytes:
    """A one-op UNIDIRECTIONAL_SEQUENCE_LSTM model in TFLite's integer 8x8->16 form, laid out as
    the converter writes it: int8 input/output/hidden state (variable), int16 cell state (variable,
    scale 2**cell_power unless ``cell_scale``), int8 weights [S, I] / [S, S] (zp 0), int32 biases
    at input_scale * weight_scale, no peephole/projection/layer norm, and five intermediates (four
    float placeholders, the hidden one int8 at the hidden scale/zp) that LiteRT reads.  Batch-major
    input [B, T, I] unless ``time_major`` ([T, B, I]); weights and biases drawn from ``seed``.
    ``activations=np.int16``: TFLite Micro's 16x8 form (int16 input/hidden/output, int64 biases;
    pass zero points 0).
    """
    act = np.dtype(activations)
    bias_type = np.int64 if act == np.int16 else np.int32
    rng = np.random.default_rng(seed)
    b = ModelBuilder(description="qsim lstm")
    shape = (n_time, n_batch, n_input) if time_major else (n_batch, n_time, n_input)
    out_shape = shape[:2] + (n_cell,)
    x = b.add_input("x", shape, act, scale=input_scale, zero_point=input_zp)
    ws = {}
    for kind, cols in (("x", n_input), ("h", n_cell)):
        for g in ("input", "forget", "cell", "output"):
            ws[kind, g] = b.add_const(f"w_{kind}_{g}", rng.integers(-127, 128, (n_cell, cols), dtype=np.int8),
                                      scale=weight_scale, zero_point=0)
    bias_scale = input_scale * weight_scale
    biases = {g: b.add_const(f"b_{g}", rng.integers(-2000, 2000, n_cell).astype(bias_type), scale=bias_scale,
                             zero_point=0) for g in ("input", "forget", "cell", "output")}
    h = b.add_tensor("h_state", (n_batch, n_cell), act, scale=hidden_scale, zero_point=hidden_zp, variable=True)
    c = b.add_tensor("c_state", (n_batch, n_cell), np.int16,
                     scale=2.0 ** cell_power if cell_scale is None else cell_scale, zero_point=0, variable=True)
    inter = [b.add_tensor(f"{g}_intermediate", (0,), np.float32) for g in ("input", "forget", "cell", "output")]
    inter.append(b.add_tensor("effective_hidden_scale_intermediate", (0,), act, scale=hidden_scale,
                              zero_point=hidden_zp))
    y = b.add_tensor("y", out_shape, act, scale=hidden_scale, zero_point=hidden_zp)
    gates = ("input", "forget", "cell", "output")
    ins = ([x] + [ws["x", g] for g in gates] + [ws["h", g] for g in gates] + [-1, -1, -1]
           + [biases[g] for g in gates] + [-1, -1, h, c, -1, -1, -1, -1])
    b.add_op("UNIDIRECTIONAL_SEQUENCE_LSTM", ins, [y],
             ir.SequenceLSTMOptions("TANH", cell_clip, 0.0, time_major), intermediates=inter)
    b.mark_output(y)
    return b.build()


# ---------------------------------------------------------------- uint8 (old converter) models

UINT8_SINGLE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D",
                    "SOFTMAX", "LOGISTIC", "CONCATENATION", "RESHAPE", "QUANTIZE", "DEQUANTIZE")


def _u8_quant(rng: np.random.Generator, lo: float = 0.005, hi: float = 0.2) -> tuple[float, int]:
    """A random uint8 activation (scale, zero point): log-uniform scale, zero point 0..255 (128 often)."""
    scale = float(np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
    return scale, int(128 if rng.random() < 0.3 else rng.integers(0, 256))


def _u8_gemm_operands(b: ModelBuilder, rng, name: str, w_shape, n_out: int, in_scale: float):
    """uint8 weights (per tensor, zero point != 128 more often than not) and the int32 bias of
    scale in_scale * w_scale, zero point 0 -- as the old converter (QUANTIZED_UINT8) wrote them."""
    w_scale = float(np.float32(np.exp(rng.uniform(np.log(0.002), np.log(0.05)))))
    w_zp = int(128 if rng.random() < 0.3 else rng.integers(60, 200))
    w = b.add_const(f"{name}_w", rng.integers(0, 256, w_shape), scale=w_scale, zero_point=w_zp, dtype=np.uint8)
    bias = b.add_const(f"{name}_b", rng.integers(-3000, 3000, n_out), scale=in_scale * w_scale, zero_point=0,
                       dtype=np.int32)
    return w, bias, w_scale


def _u8_out_scale(rng, in_scale: float, w_scale: float, taps: int) -> float:
    """An output scale that keeps a GEMM's outputs inside uint8's range most of the time."""
    return float(np.float32(in_scale * w_scale * 128 * np.sqrt(taps) / 40 * rng.uniform(0.5, 2.0)))


def _out_size(size: int, k: int, stride: int, padding: str, dilation: int = 1) -> int:
    from .kernels.conv import compute_out_size  # TFLite's ComputeOutSize (LiteRT checks the shapes written)
    return compute_out_size(padding, size, k, stride, dilation)


def uint8_op(b: ModelBuilder, rng: np.random.Generator, opcode: str, x: int, name: str,
             channels: int | None = None) -> int:
    """Append one old-converter-style uint8 ``opcode`` reading uint8 tensor ``x`` (NHWC for the
    window ops); returns its output tensor.  Random but valid quantization and options;
    ``channels``: CONV_2D output channels / FULLY_CONNECTED units (None: random, 1..8 / 1..11)."""
    t = b.tensors[x]
    scale, zp = float(t.scale[0]), int(t.zero_point[0])
    act = str(rng.choice(["NONE", "RELU", "RELU6"]))
    n, h, w, c = t.shape if len(t.shape) == 4 else (1, 1, 1, int(np.prod(t.shape)))
    if opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        k, stride, pad = int(rng.integers(1, 4)), int(rng.integers(1, 3)), str(rng.choice(["SAME", "VALID"]))
        k = min(k, h, w)
        dil = 2 if k > 1 and (k - 1) * 2 + 1 <= min(h, w) and rng.random() < 0.25 else 1
        oh, ow = (_out_size(h, k, stride, pad, dil), _out_size(w, k, stride, pad, dil))
        mult = int(rng.integers(1, 3)) if opcode == "DEPTHWISE_CONV_2D" else 1
        oc = c * mult if opcode == "DEPTHWISE_CONV_2D" else channels or int(rng.integers(1, 9))
        shape = (oc, k, k, c) if opcode == "CONV_2D" else (1, k, k, oc)
        wt, bias, ws = _u8_gemm_operands(b, rng, name, shape, oc, scale)
        taps = k * k * (c if opcode == "CONV_2D" else 1)
        y = b.add_tensor(name, (n, oh, ow, oc), np.uint8, _u8_out_scale(rng, scale, ws, taps), int(rng.integers(0, 256)))
        opts = (ir.Conv2DOptions(pad, stride, stride, dil, dil, activation=act) if opcode == "CONV_2D" else
                ir.DepthwiseConv2DOptions(pad, stride, stride, dil, dil, depth_multiplier=mult, activation=act))
        b.add_op(opcode, [x, wt, bias], [y], opts)
        return y
    if opcode == "FULLY_CONNECTED":
        units, depth = channels or int(rng.integers(1, 12)), h * w * c
        wt, bias, ws = _u8_gemm_operands(b, rng, name, (units, depth), units, scale)
        y = b.add_tensor(name, (n, units), np.uint8, _u8_out_scale(rng, scale, ws, depth), int(rng.integers(0, 256)))
        b.add_op(opcode, [x, wt, bias], [y], ir.FullyConnectedOptions(activation=act))
        return y
    if opcode in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        k, stride, pad = int(rng.integers(1, 4)), int(rng.integers(1, 3)), str(rng.choice(["SAME", "VALID"]))
        k = min(k, h, w)
        y = b.add_tensor(name, (n, _out_size(h, k, stride, pad), _out_size(w, k, stride, pad), c), np.uint8, scale, zp)
        b.add_op(opcode, [x], [y], ir.Pool2DOptions(pad, stride, stride, k, k, activation=act))
        return y
    if opcode in ("SOFTMAX", "LOGISTIC"):
        y = b.add_tensor(name, t.shape, np.uint8, 1 / 256, 0)  # what TFLite requires of uint8 outputs
        b.add_op(opcode, [x], [y], ir.SoftmaxOptions(float(rng.choice([1.0, 0.5, 2.0]))) if opcode == "SOFTMAX"
                 else None)
        return y
    if opcode == "ADD":
        s2, z2 = _u8_quant(rng)
        other = b.add_const(f"{name}_c", rng.integers(0, 256, t.shape), s2, z2, dtype=np.uint8) \
            if rng.random() < 0.3 else b.add_input(f"{name}_in", t.shape, np.uint8, s2, z2)
        so, zo = _u8_quant(rng, 0.01, 0.3)
        y = b.add_tensor(name, t.shape, np.uint8, so, zo)
        b.add_op(opcode, [x, other], [y], ir.ActivationOptions(act))
        return y
    if opcode == "CONCATENATION":
        axis = len(t.shape) - 1
        y = b.add_tensor(name, t.shape[:-1] + (2 * t.shape[-1],), np.uint8, scale, zp)
        b.add_op(opcode, [x, x], [y], ir.ConcatenationOptions(axis))
        return y
    if opcode == "RESHAPE":
        y = b.add_tensor(name, (1, int(np.prod(t.shape))), np.uint8, scale, zp)
        b.add_op(opcode, [x], [y], ir.ReshapeOptions((1, int(np.prod(t.shape)))))
        return y
    if opcode == "QUANTIZE":  # uint8 -> int8 (or uint8 with other parameters)
        dt = np.int8 if rng.random() < 0.5 else np.uint8
        so, zo = _u8_quant(rng)
        y = b.add_tensor(name, t.shape, dt, so, zo - 128 if dt == np.int8 else zo)
        b.add_op(opcode, [x], [y])
        return y
    if opcode == "DEQUANTIZE":
        y = b.add_tensor(name, t.shape, np.float32)
        b.add_op(opcode, [x], [y])
        return y
    raise QsimError(f"uint8_op: no uint8 form of {opcode} (choose from {', '.join(UINT8_SINGLE_OPS)}).")


def uint8_model(ops, seed: int = 0, shape=(1, 6, 6, 3), float_input: bool = False,
                channels: int | None = None) -> bytes:
    """An old-converter (QUANTIZED_UINT8) model: a uint8 input of ``shape`` (or a float32 input
    and a QUANTIZE to uint8) feeding ``ops`` in a chain (names from :data:`UINT8_SINGLE_OPS`; an
    op after DEQUANTIZE or an int8 QUANTIZE is not allowed).  Seeded: same seed, same bytes."""
    rng = np.random.default_rng(seed)
    b = ModelBuilder(description=f"qsim uint8 {'+'.join(ops)} seed {seed}")
    scale, zp = _u8_quant(rng, 0.01, 0.1)
    if float_input:
        f = b.add_input("input_f32", shape, np.float32)
        x = b.add_tensor("input", shape, np.uint8, scale, zp)
        b.add_op("QUANTIZE", [f], [x])
    else:
        x = b.add_input("input", shape, np.uint8, scale, zp)
    for k, op in enumerate(ops):
        if np.dtype(b.tensors[x].dtype) != np.uint8:
            raise QsimError(f"uint8_model: {op} follows an op whose output is not uint8.")
        x = uint8_op(b, rng, op, x, f"{op.lower()}_{k}", channels)
    b.mark_output(x)
    return b.build()
