"""Reader: .tflite flatbuffer -> qsim IR (``qsim.ir.Graph``).

Parses with the ``tflite`` package's generated flatbuffer accessors.  A file
that cannot be read at all (truncated, random bytes, wrong identifier, more
than one subgraph) raises :class:`qsim.errors.QsimError` with a plain
explanation.  Everything that can be read is kept as stored (out-of-range
indices, shapes that disagree with their buffers, bad scales...) and then
checked as a whole by :func:`qsim.validate.validate`; ``load`` raises
:class:`qsim.errors.InvalidModelError` listing every violation, unless called
with ``validate=False`` (``qsim inspect`` shows such a model and its list).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

from . import ir
from .errors import QsimError

# TFLite TensorType enum -> numpy dtype (None: no numpy equivalent qsim handles)
TENSOR_TYPES = {
    0: np.dtype(np.float32), 1: np.dtype(np.float16), 2: np.dtype(np.int32), 3: np.dtype(np.uint8),
    4: np.dtype(np.int64), 5: None, 6: np.dtype(np.bool_), 7: np.dtype(np.int16), 8: np.dtype(np.complex64),
    9: np.dtype(np.int8), 10: np.dtype(np.float64), 15: np.dtype(np.uint32), 16: np.dtype(np.uint16),
}
TENSOR_TYPE_NAMES = {0: "FLOAT32", 1: "FLOAT16", 2: "INT32", 3: "UINT8", 4: "INT64", 5: "STRING", 6: "BOOL",
                     7: "INT16", 8: "COMPLEX64", 9: "INT8", 10: "FLOAT64", 11: "COMPLEX128", 12: "UINT64",
                     13: "RESOURCE", 14: "VARIANT", 15: "UINT32", 16: "UINT16", 17: "INT4"}


def load(path: str | Path, validate: bool = True) -> ir.Graph:
    """Read a .tflite file into a Graph.  Raises QsimError on any unreadable or (with
    ``validate``) invalid input; ``validate=False`` returns an unchecked Graph, which only
    :func:`qsim.validate.validate` and :func:`qsim.report.summarize` may be given."""
    return load_bytes(read_model_file(path), source=str(path), validate=validate)


def read_model_file(path: str | Path) -> bytes:
    """The bytes of a model file; a missing or unreadable file is a QsimError."""
    p = Path(path)
    if not p.is_file():
        raise QsimError(f"model file not found: {p}")
    try:
        return p.read_bytes()
    except OSError as e:
        raise QsimError(f"cannot read model file {p}: {e.strerror}") from None


def load_bytes(data: bytes, source: str = "<bytes>", validate: bool = True) -> ir.Graph:
    """:func:`load` for bytes in memory."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise QsimError(
            f"{source} is not a TensorFlow Lite model: a .tflite flatbuffer carries the identifier "
            f"'TFL3' at byte 4 and this file ({len(data)} bytes) does not. Check that the file is a "
            "complete .tflite export, not a SavedModel, .h5, or a partial download.")
    try:
        g = _parse(bytearray(data), source)
    except QsimError:
        raise
    except Exception as e:  # flatbuffer accessors fail with struct/index errors on corrupt data
        raise QsimError(
            f"{source} is a corrupt or truncated TFLite flatbuffer ({len(data)} bytes): reading it "
            f"failed with {type(e).__name__}: {e}. Re-export the model or copy the file again.") from None
    if validate:
        from .validate import raise_if_invalid
        raise_if_invalid(g)
    return g


def _parse(buf: bytearray, source: str) -> ir.Graph:
    model = tflite.Model.GetRootAsModel(buf, 0)
    n_sub = model.SubgraphsLength()
    if n_sub != 1:
        raise QsimError(f"{source} has {n_sub} subgraphs; qsim supports models with exactly one "
                        "subgraph (no control flow ops such as WHILE/IF/CALL_ONCE).")
    opcodes = [_opcode_name(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    sg = model.Subgraphs(0)
    nbuf = model.BuffersLength()
    tensors = [_tensor(model, sg.Tensors(i), i, buf, nbuf) for i in range(sg.TensorsLength())]
    operators = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        idx = int(op.OpcodeIndex())
        # an out-of-range opcode index is kept (qsim.validate reports it)
        name, version = opcodes[idx] if idx < len(opcodes) else (f"INVALID_OPCODE_{idx}", 0)
        ins = tuple(int(v) for v in _vec(op.InputsAsNumpy()))
        outs = tuple(int(v) for v in _vec(op.OutputsAsNumpy()))
        inter = () if op.IntermediatesIsNone() else tuple(int(v) for v in _vec(op.IntermediatesAsNumpy()))
        operators.append(ir.Operator(i, name, ins, outs, _options(name, op), version, opcode_index=idx,
                                     intermediates=inter))
    inputs = [int(v) for v in _vec(sg.InputsAsNumpy())]
    outputs = [int(v) for v in _vec(sg.OutputsAsNumpy())]
    desc = model.Description()
    return ir.Graph(tensors=tensors, operators=operators, inputs=inputs, outputs=outputs,
                    name=(sg.Name() or b"").decode("utf-8", "replace"),
                    description=(desc or b"").decode("utf-8", "replace"), source=source,
                    n_buffers=nbuf, n_opcodes=len(opcodes))


def _vec(v) -> np.ndarray:
    # The generated accessors return the int 0 for an absent vector.
    return v if isinstance(v, np.ndarray) else np.zeros(0, dtype=np.int32)


def _opcode_name(oc) -> tuple[str, int]:
    # TFLite: the real code is max(builtin_code, deprecated_builtin_code) (schema v3a).
    code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
    if code == 32:  # CUSTOM
        custom = oc.CustomCode()
        return "CUSTOM:" + (custom.decode("utf-8", "replace") if custom else "?"), int(oc.Version())
    return BUILTIN_OPCODE2NAME.get(code, f"UNKNOWN_BUILTIN_{code}"), int(oc.Version())


def _tensor(model, t, index: int, buf: bytearray, nbuf: int) -> ir.Tensor:
    ttype = int(t.Type())
    dtype = TENSOR_TYPES.get(ttype)
    shape = tuple(int(d) for d in _vec(t.ShapeAsNumpy()))
    name = (t.Name() or b"").decode("utf-8", "replace")
    quant = None
    q = t.Quantization()
    if q is not None and q.ScaleLength() > 0:
        scale = np.asarray(_vec(q.ScaleAsNumpy()), dtype=np.float64)
        zp = np.asarray(_vec(q.ZeroPointAsNumpy()), dtype=np.int64)
        if zp.size == 0:
            zp = np.zeros_like(scale, dtype=np.int64)
        quant = ir.Quant(scale=scale, zero_point=zp, axis=int(q.QuantizedDimension()))
    # A buffer that is out of range, points past the file or disagrees with the shape leaves
    # data None; buffer/buffer_bytes keep what was stored for qsim.validate to report.
    data = None
    b = int(t.Buffer())
    nbytes = 0
    if 0 < b < nbuf:
        raw = _buffer_bytes(model.Buffers(b), buf)
        nbytes = -1 if raw is None else int(raw.size)
        if raw is not None and raw.size and dtype is not None and dtype.itemsize:
            n = math.prod(shape) if all(d >= 0 for d in shape) else -1
            if raw.size == n * dtype.itemsize:
                arr = np.frombuffer(raw.tobytes(), dtype=dtype.newbyteorder("<"))
                data = arr.reshape(shape).astype(dtype, copy=False)
                data.flags.writeable = False
    return ir.Tensor(index=index, name=name, shape=shape,
                     dtype=dtype if dtype is not None else np.dtype(np.void),
                     quant=quant, data=data, is_variable=bool(t.IsVariable()), buffer=b, buffer_bytes=nbytes)


def _buffer_bytes(b, buf: bytearray):
    """The buffer's bytes (uint8), an empty array when it has none, None when it points past the file."""
    off, size = int(b.Offset()), int(b.Size())
    if off > 1:  # large models keep buffers after the flatbuffer (offset/size fields)
        if off + size > len(buf):
            return None
        return np.frombuffer(bytes(buf[off:off + size]), dtype=np.uint8)
    d = b.DataAsNumpy()
    return d if isinstance(d, np.ndarray) else np.zeros(0, dtype=np.uint8)


# ------------------------------------------------------------------ typed options

def _table(op, cls):
    t = op.BuiltinOptions()
    if t is None:
        return None
    o = cls()
    o.Init(t.Bytes, t.Pos)
    return o


def _act(v) -> str:
    return ir.ACTIVATIONS.get(int(v), f"UNKNOWN_{int(v)}")


def _pad(v) -> str:
    return ir.PADDINGS.get(int(v), f"UNKNOWN_{int(v)}")


def _options(name: str, op):
    if name == "UNIDIRECTIONAL_SEQUENCE_LSTM":
        o = _table(op, tflite.UnidirectionalSequenceLSTMOptions)
        return ir.SequenceLSTMOptions() if o is None else ir.SequenceLSTMOptions(
            _act(o.FusedActivationFunction()), float(o.CellClip()), float(o.ProjClip()), bool(o.TimeMajor()),
            bool(o.AsymmetricQuantizeInputs()))
    if name == "CONV_2D":
        o = _table(op, tflite.Conv2DOptions)
        return ir.Conv2DOptions() if o is None else ir.Conv2DOptions(
            _pad(o.Padding()), o.StrideH(), o.StrideW(), o.DilationHFactor(), o.DilationWFactor(),
            _act(o.FusedActivationFunction()))
    if name == "DEPTHWISE_CONV_2D":
        o = _table(op, tflite.DepthwiseConv2DOptions)
        return ir.DepthwiseConv2DOptions() if o is None else ir.DepthwiseConv2DOptions(
            _pad(o.Padding()), o.StrideH(), o.StrideW(), o.DilationHFactor(), o.DilationWFactor(),
            o.DepthMultiplier(), _act(o.FusedActivationFunction()))
    if name == "FULLY_CONNECTED":
        o = _table(op, tflite.FullyConnectedOptions)
        return ir.FullyConnectedOptions() if o is None else ir.FullyConnectedOptions(
            _act(o.FusedActivationFunction()), bool(o.KeepNumDims()), int(o.WeightsFormat()))
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"):
        o = _table(op, tflite.Pool2DOptions)
        return ir.Pool2DOptions() if o is None else ir.Pool2DOptions(
            _pad(o.Padding()), o.StrideH(), o.StrideW(), o.FilterHeight(), o.FilterWidth(),
            _act(o.FusedActivationFunction()))
    if name in ("ADD", "SUB", "MUL", "DIV"):
        cls = {"ADD": tflite.AddOptions, "SUB": tflite.SubOptions, "MUL": tflite.MulOptions,
               "DIV": tflite.DivOptions}[name]
        o = _table(op, cls)
        if o is None:
            return ir.ActivationOptions()
        pot = bool(o.PotScaleInt16()) if name in ("ADD", "SUB") else True
        return ir.ActivationOptions(_act(o.FusedActivationFunction()), pot)
    if name == "CONCATENATION":
        o = _table(op, tflite.ConcatenationOptions)
        return ir.ConcatenationOptions() if o is None else ir.ConcatenationOptions(
            o.Axis(), _act(o.FusedActivationFunction()))
    if name == "RESHAPE":
        o = _table(op, tflite.ReshapeOptions)
        if o is None or o.NewShapeLength() == 0:
            return ir.ReshapeOptions(None)
        return ir.ReshapeOptions(tuple(int(v) for v in o.NewShapeAsNumpy()))
    if name == "SVDF":
        o = _table(op, tflite.SVDFOptions)
        return ir.SVDFOptions() if o is None else ir.SVDFOptions(
            int(o.Rank()), _act(o.FusedActivationFunction()), bool(o.AsymmetricQuantizeInputs()))
    if name == "SOFTMAX":
        o = _table(op, tflite.SoftmaxOptions)
        return ir.SoftmaxOptions() if o is None else ir.SoftmaxOptions(float(o.Beta()))
    if name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"):
        o = _table(op, tflite.ReducerOptions)
        return ir.ReducerOptions() if o is None else ir.ReducerOptions(bool(o.KeepDims()))
    if name == "SQUEEZE":
        o = _table(op, tflite.SqueezeOptions)
        if o is None or o.SqueezeDimsLength() == 0:
            return ir.SqueezeOptions(())
        return ir.SqueezeOptions(tuple(int(v) for v in o.SqueezeDimsAsNumpy()))
    if name == "STRIDED_SLICE":
        o = _table(op, tflite.StridedSliceOptions)
        return ir.StridedSliceOptions() if o is None else ir.StridedSliceOptions(
            o.BeginMask(), o.EndMask(), o.EllipsisMask(), o.NewAxisMask(), o.ShrinkAxisMask(),
            bool(o.Offset()))
    if name == "TRANSPOSE_CONV":
        o = _table(op, tflite.TransposeConvOptions)
        return ir.TransposeConvOptions() if o is None else ir.TransposeConvOptions(
            _pad(o.Padding()), o.StrideH(), o.StrideW(), _act(o.FusedActivationFunction()))
    if name == "LEAKY_RELU":
        o = _table(op, tflite.LeakyReluOptions)
        return ir.LeakyReluOptions() if o is None else ir.LeakyReluOptions(float(o.Alpha()))
    return None
