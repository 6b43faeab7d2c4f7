"""qsim.builder writes .tflite files that qsim's loader, LiteRT (BUILTIN_REF) and TFLM all read."""
from __future__ import annotations

import numpy as np
import pytest
import tflite

from qsim import ir
from qsim.builder import ModelBuilder
from qsim.errors import QsimError
from qsim.loader import load, load_bytes

from conftest import require_module

Q = dict(scale=0.05, zero_point=-3)


def _every_option_model():
    """One model touching every option table the loader reads (plus empty-option ops)."""
    rng = np.random.default_rng(1)
    b = ModelBuilder(description="every option")
    x = b.add_input("x", (1, 8, 8, 4), np.int8, **Q)
    ws = rng.uniform(0.005, 0.02, 8)
    w = b.add_const("w", rng.integers(-127, 128, (8, 3, 3, 4), dtype=np.int8), scale=ws,
                    zero_point=np.zeros(8, np.int64), axis=0)
    bias = b.add_const("b", rng.integers(-500, 500, 8).astype(np.int32), scale=ws * 0.05, zero_point=0)
    c = b.add_tensor("conv", (1, 4, 4, 8), np.int8, scale=0.1, zero_point=2)
    b.add_op("CONV_2D", [x, w, bias], [c], ir.Conv2DOptions("SAME", 2, 2, 1, 1, "RELU6"))
    dws = rng.uniform(0.005, 0.02, 8)
    dw = b.add_const("dw", rng.integers(-127, 128, (1, 3, 3, 8), dtype=np.int8), scale=dws,
                     zero_point=np.zeros(8, np.int64), axis=3)
    dwb = b.add_const("dwb", rng.integers(-500, 500, 8).astype(np.int32), scale=dws * 0.1, zero_point=0, axis=0)
    d = b.add_tensor("dw_out", (1, 2, 2, 8), np.int8, scale=0.1, zero_point=-1)
    b.add_op("DEPTHWISE_CONV_2D", [c, dw, dwb], [d], ir.DepthwiseConv2DOptions("VALID", 1, 1, 1, 1, 1, "RELU"))
    p = b.add_tensor("pool", (1, 2, 2, 8), np.int8, scale=0.1, zero_point=-1)
    b.add_op("AVERAGE_POOL_2D", [d], [p], ir.Pool2DOptions("SAME", 1, 1, 2, 2, "NONE"))
    mp = b.add_tensor("maxpool", (1, 2, 2, 8), np.int8, scale=0.1, zero_point=-1)
    b.add_op("MAX_POOL_2D", [p], [mp], ir.Pool2DOptions("SAME", 1, 1, 3, 3, "NONE"))
    a = b.add_tensor("add", (1, 2, 2, 8), np.int8, scale=0.2, zero_point=0)
    b.add_op("ADD", [d, mp], [a], ir.ActivationOptions("RELU"))
    s = b.add_tensor("sub", (1, 2, 2, 8), np.int8, scale=0.2, zero_point=0)
    b.add_op("SUB", [a, p], [s], ir.ActivationOptions("NONE"))
    m = b.add_tensor("mul", (1, 2, 2, 8), np.int8, scale=0.3, zero_point=0)
    b.add_op("MUL", [s, a], [m], ir.ActivationOptions("NONE"))
    lr = b.add_tensor("leaky", (1, 2, 2, 8), np.int8, scale=0.2, zero_point=0)
    b.add_op("LEAKY_RELU", [m], [lr], ir.LeakyReluOptions(0.25))
    cat = b.add_tensor("cat", (1, 2, 2, 16), np.int8, scale=0.2, zero_point=0)
    b.add_op("CONCATENATION", [lr, s], [cat], ir.ConcatenationOptions(3, "NONE"))
    pads = b.add_const("pads", np.array([[0, 0], [1, 0], [0, 1], [0, 0]], np.int32))
    padv = b.add_const("pad_value", np.array([7], np.int8), scale=0.2, zero_point=0)
    pd = b.add_tensor("padv2", (1, 3, 3, 16), np.int8, scale=0.2, zero_point=0)
    b.add_op("PADV2", [cat, pads, padv], [pd])
    perm = b.add_const("perm", np.array([0, 2, 1, 3], np.int32))
    tr = b.add_tensor("transpose", (1, 3, 3, 16), np.int8, scale=0.2, zero_point=0)
    b.add_op("TRANSPOSE", [pd, perm], [tr])
    begin = b.add_const("begin", np.array([0, 2, 0, 0], np.int32))
    end = b.add_const("end", np.array([1, 0, 3, 16], np.int32))
    strides = b.add_const("strides", np.array([1, -1, 2, 1], np.int32))
    ss = b.add_tensor("slice", (1, 2, 2, 16), np.int8, scale=0.2, zero_point=0)
    b.add_op("STRIDED_SLICE", [tr, begin, end, strides], [ss],
             ir.StridedSliceOptions(begin_mask=0, end_mask=4, shrink_axis_mask=0, new_axis_mask=0,
                                    ellipsis_mask=0, offset=False))
    axes = b.add_const("axes", np.array([1, 2], np.int32))
    mean = b.add_tensor("mean", (1, 1, 1, 16), np.int8, scale=0.2, zero_point=0)
    b.add_op("MEAN", [tr, axes], [mean], ir.ReducerOptions(keep_dims=True))
    sq = b.add_tensor("squeeze", (1, 16), np.int8, scale=0.2, zero_point=0)
    b.add_op("SQUEEZE", [mean], [sq], ir.SqueezeOptions((1, 2)))
    fw = b.add_const("fc_w", rng.integers(-127, 128, (10, 16), dtype=np.int8), scale=0.01, zero_point=0)
    fb = b.add_const("fc_b", rng.integers(-100, 100, 10).astype(np.int32), scale=0.002, zero_point=0)
    fc = b.add_tensor("fc", (1, 10), np.int8, scale=0.1, zero_point=0)
    b.add_op("FULLY_CONNECTED", [sq, fw, fb], [fc], ir.FullyConnectedOptions("NONE", False, 0))
    shape = b.add_const("shape", np.array([1, 10], np.int32))
    rs = b.add_tensor("reshape", (1, 10), np.int8, scale=0.1, zero_point=0)
    b.add_op("RESHAPE", [fc, shape], [rs], ir.ReshapeOptions((1, 10)))
    sm = b.add_tensor("softmax", (1, 10), np.int8, scale=1 / 256, zero_point=-128)
    b.add_op("SOFTMAX", [rs], [sm], ir.SoftmaxOptions(1.0))
    bshape = b.add_const("bshape", np.array([3, 10], np.int32))
    bc = b.add_tensor("broadcast", (3, 10), np.int8, scale=1 / 256, zero_point=-128)
    b.add_op("BROADCAST_TO", [sm, bshape], [bc])  # builtin code 130 > 127
    fl = b.add_tensor("deq", (3, 10), np.float32)
    b.add_op("DEQUANTIZE", [bc], [fl])
    rq = b.add_tensor("requant", (3, 10), np.int8, scale=0.01, zero_point=1)
    b.add_op("QUANTIZE", [fl], [rq])
    b.mark_output(rq)
    b.mark_output(ss)
    return b


@pytest.fixture(scope="module")
def built():
    b = _every_option_model()
    return b, b.build()


def test_round_trip_tensors_ops_options(built):
    b, blob = built
    g = load_bytes(blob)
    assert g.description == "every option"
    assert g.inputs == b.inputs and g.outputs == b.outputs
    assert len(g.tensors) == len(b.tensors)
    for spec, t in zip(b.tensors, g.tensors):
        assert t.name == spec.name and t.shape == spec.shape and t.dtype == spec.dtype
        if spec.scale is None:
            assert t.quant is None
        else:
            np.testing.assert_array_equal(t.quant.scale, spec.scale.astype(np.float32))
            np.testing.assert_array_equal(t.quant.zero_point, spec.zero_point)
            assert t.quant.axis == spec.axis
        if spec.data is None:
            assert t.data is None
        else:
            np.testing.assert_array_equal(t.data, spec.data)
    assert [op.opcode for op in g.operators] == [op.opcode for op in b.ops]
    for spec, op in zip(b.ops, g.operators):
        assert op.inputs == spec.inputs and op.outputs == spec.outputs
        if spec.options is not None:
            assert op.options == spec.options, spec.opcode
    versions = {op.opcode: op.version for op in g.operators}
    assert versions["CONV_2D"] == 3 and versions["FULLY_CONNECTED"] == 4 and versions["DEQUANTIZE"] == 2


def test_raw_flatbuffer_fields(built):
    _, blob = built
    m = tflite.Model.GetRootAsModel(bytearray(blob), 0)
    assert m.Version() == 3 and blob[4:8] == b"TFL3"
    assert m.Buffers(0).DataLength() == 0
    codes = {max(m.OperatorCodes(i).BuiltinCode(), m.OperatorCodes(i).DeprecatedBuiltinCode()):
             (m.OperatorCodes(i).BuiltinCode(), m.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(m.OperatorCodesLength())}
    assert codes[130] == (130, 127)  # BROADCAST_TO: deprecated code saturates at 127
    assert codes[3] == (3, 3)
    sg = m.Subgraphs(0)
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        if t.Buffer() > 0:
            buf = m.Buffers(t.Buffer())
            start = buf._tab.Vector(buf._tab.Offset(4))
            assert start % 16 == 0, "constant data must be 16-byte aligned"
    names = {sg.Operators(i).BuiltinOptionsType() for i in range(sg.OperatorsLength())}
    assert tflite.BuiltinOptions.PadV2Options in names and tflite.BuiltinOptions.TransposeOptions in names


def _reference_outputs(blob, x, outputs):
    li = require_module("ai_edge_litert.interpreter", "LiteRT reference interpreter")
    it = li.Interpreter(model_content=blob, experimental_op_resolver_type=li.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    lite = [it.get_tensor(t) for t in outputs]
    runtime = require_module("tflite_micro.python.tflite_micro.runtime", "TFLM reference interpreter")
    tm = runtime.Interpreter.from_bytes(blob)
    tm.set_input(x, 0)
    tm.invoke()
    micro = [tm.get_output(i) for i in range(len(outputs))]
    return lite, micro


def test_built_model_runs_in_litert_and_tflm(built):
    b, blob = built
    x = np.random.default_rng(2).integers(-128, 128, (1, 8, 8, 4), dtype=np.int8)
    lite, micro = _reference_outputs(blob, x, b.outputs)
    for t, a, c in zip(b.outputs, lite, micro):
        assert a.shape == b.tensors[t].shape and c.shape == b.tensors[t].shape
        assert a.dtype == np.int8 and c.dtype == np.int8
    # the broadcast rows are identical copies of the softmax row, in both runtimes
    assert (lite[0] == lite[0][0]).all() and (micro[0] == micro[0][0]).all()


def test_reshape_without_options_and_strided_slice_offset(tmp_path):
    b = ModelBuilder()
    x = b.add_input("x", (2, 6), np.int8, scale=0.1, zero_point=0)
    shape = b.add_const("shape", np.array([3, 4], np.int32))
    r = b.add_tensor("r", (3, 4), np.int8, scale=0.1, zero_point=0)
    b.add_op("RESHAPE", [x, shape], [r])
    begin = b.add_const("begin", np.array([1, 1], np.int32))
    size = b.add_const("size", np.array([2, 2], np.int32))
    strides = b.add_const("strides", np.array([1, 1], np.int32))
    s = b.add_tensor("s", (2, 2), np.int8, scale=0.1, zero_point=0)
    b.add_op("STRIDED_SLICE", [r, begin, size, strides], [s], ir.StridedSliceOptions(offset=True))
    b.mark_output(s)
    path = b.save(tmp_path / "m.tflite")
    g = load(path)
    assert g.operators[0].options == ir.ReshapeOptions(None)
    assert g.operators[1].options.offset is True
    x_val = np.arange(12, dtype=np.int8).reshape(2, 6)
    li = require_module("ai_edge_litert.interpreter", "LiteRT reference interpreter")
    it = li.Interpreter(model_content=path.read_bytes(), experimental_op_resolver_type=li.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    it.set_tensor(x, x_val)
    it.invoke()
    expected = np.arange(12, dtype=np.int8).reshape(3, 4)[1:3, 1:3]  # offset: end = begin + size
    np.testing.assert_array_equal(it.get_tensor(s), expected)
    # (TFLM ignores the offset flag; tests/test_kernels_shape.py pins that down.)


@pytest.mark.parametrize("call", [
    lambda b: b.add_op("NOT_AN_OP", [0], [0]),
    lambda b: b.add_op("ADD", [0, 5], [0]),
    lambda b: b.add_tensor("t", (1, 4), np.int8, scale=[0.1, 0.2, 0.3], zero_point=0, axis=1),
    lambda b: b.add_tensor("t", (1, 4), np.complex128),
    lambda b: b.add_tensor("t", (1, 4), np.int8, zero_point=3),
    lambda b: b.add_op("CONV_2D", [0], [0], ir.SoftmaxOptions()),
    lambda b: b.add_op("CONV_2D", [0], [0], ir.Conv2DOptions(padding="FULL")) or b.mark_output(0) or b.build(),
    lambda b: ModelBuilder().build(),
])
def test_bad_calls_raise_qsim_error(call):
    b = ModelBuilder()
    b.add_input("x", (1, 4), np.int8, scale=0.1, zero_point=0)
    with pytest.raises(QsimError):
        call(b)
        b.mark_output(0)
        b.build()


# --------------------------------------------------------------------------- qsim.zoo models

from pathlib import Path  # noqa: E402

from qsim import zoo  # noqa: E402
from qsim.interpreter import prepare_graph  # noqa: E402

from test_kernels_shape import check_against_references  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "examples" / "models"


class _Blob:
    """Adapter: check_against_references takes anything with build()."""

    def __init__(self, blob: bytes):
        self.blob = blob

    def build(self) -> bytes:
        return self.blob


def test_demo_model_is_small_and_bit_exact_with_both_references():
    blob = (DEMO / "demo_cnn_int8.tflite").read_bytes()
    assert len(blob) < 200_000
    g = load_bytes(blob)
    assert [op.opcode for op in g.operators] == ["CONV_2D", "CONV_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    x = np.load(DEMO / "demo_input.npy")
    assert x.shape == (1, 8, 8, 1) and x.dtype == np.int8
    test = np.load(DEMO / "demo_testset.npz")
    ran = check_against_references(_Blob(blob), [x])
    assert ran == {"litert": True, "tflm": True}
    for xi in test["x"][:8]:  # every intermediate tensor, a few more digits
        check_against_references(_Blob(blob), [xi[None]])


def test_demo_model_classifies_held_out_digits():
    """Labels are scikit-learn's ground truth (stored beside the model), not anything qsim produced."""
    blob = (DEMO / "demo_cnn_int8.tflite").read_bytes()
    g = load_bytes(blob)
    test = np.load(DEMO / "demo_testset.npz")
    prepared = prepare_graph(g, "tflm")
    preds = np.array([np.argmax(prepared.run([xi[None]], keep_all=False)[g.outputs[0]]) for xi in test["x"]])
    assert len(preds) == 360
    assert np.mean(preds == test["y"]) > 0.95


def test_small_cnn_random_is_deterministic_and_runs():
    a, b = zoo.small_cnn(seed=3), zoo.small_cnn(seed=3)
    assert a == b and a != zoo.small_cnn(seed=4)
    x = np.random.default_rng(0).integers(-128, 128, (1, 8, 8, 1), dtype=np.int8)
    assert check_against_references(_Blob(a), [x]) == {"litert": True, "tflm": True}


def _assert_not_saturated(g, values):
    for op in g.operators:
        t = g.tensors[op.outputs[0]]
        v = values[op.outputs[0]]
        assert np.unique(v).size > 1 or v.size == 1, f"{t.name} is constant"
        assert np.mean(v == 127) < 0.15, f"{t.name} saturates at +127"
        if op.opcode not in ("SOFTMAX",):
            assert np.mean(v == -128) < 0.75, f"{t.name} sits at -128"


def test_mobilenet_v2_like_224_shape_macs_and_bit_exact():
    blob = zoo.mobilenet_v2_like()
    assert blob == zoo.mobilenet_v2_like()  # deterministic
    g = load_bytes(blob)
    ops = [op.opcode for op in g.operators]
    assert ops[0] == "CONV_2D" and ops[-4:] == ["AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    assert ops.count("DEPTHWISE_CONV_2D") == 17 and ops.count("ADD") == 10
    assert g.tensors[g.inputs[0]].shape == (1, 224, 224, 3)
    assert g.tensors[g.outputs[0]].shape == (1, 1000)
    macs = zoo.count_macs(g)
    assert 280e6 < macs < 320e6, macs  # MobileNetV2 1.0/224 is ~300 M MACs
    x = zoo.quantize_input(np.random.default_rng(7).uniform(-1, 1, (1, 224, 224, 3)), 1 / 128, 0)
    assert check_against_references(_Blob(blob), [x]) == {"litert": True, "tflm": True}
    values = prepare_graph(g, "tflm").run([x])
    _assert_not_saturated(g, values)
    probs = values[g.outputs[0]].astype(np.int64) + 128
    assert probs.max() > 8  # a peaked softmax, not 1000 zeros


def test_mobilenet_v2_like_small_variant():
    blob = zoo.mobilenet_v2_like(input_hw=96, alpha=0.35, num_classes=10, seed=1)
    g = load_bytes(blob)
    assert g.tensors[g.inputs[0]].shape == (1, 96, 96, 3) and g.tensors[g.outputs[0]].shape == (1, 10)
    x = zoo.quantize_input(np.random.default_rng(8).uniform(-1, 1, (1, 96, 96, 3)), 1 / 128, 0)
    assert check_against_references(_Blob(blob), [x]) == {"litert": True, "tflm": True}
    _assert_not_saturated(g, prepare_graph(g, "litert").run([x]))


def test_explicit_version_and_float_default_versions():
    b = ModelBuilder()
    x = b.add_input("x", (1, 4), np.int8, scale=0.1, zero_point=0)
    y = b.add_tensor("y", (1, 4), np.int8, scale=0.1, zero_point=0)
    b.add_op("ADD", [x, x], [y], version=1)
    f = b.add_tensor("f", (1, 4), np.float32)
    b.add_op("DEQUANTIZE", [y], [f])
    g2 = b.add_tensor("g", (1, 4), np.float32)
    b.add_op("ADD", [f, f], [g2])
    b.mark_output(g2)
    g = load_bytes(b.build())
    assert [(op.opcode, op.version) for op in g.operators] == [("ADD", 1), ("DEQUANTIZE", 2), ("ADD", 1)]
