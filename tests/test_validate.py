"""qsim.validate: one hand-built bad model per rule (real flatbuffers from qsim.builder, bytes
patched in place through qsim.fuzz.locate_fields where the builder cannot write the fault),
each asserting the exact line naming the op/tensor; and zero violations on every valid model
(the shared models, the demo model, the zoo)."""
from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

from qsim import fuzz, ir, zoo
from qsim.builder import ModelBuilder
from qsim.errors import InvalidModelError, QsimError
from qsim.interpreter import prepare_graph
from qsim.loader import load, load_bytes
from qsim.validate import MAX_ACTIVATION_BYTES, MAX_TENSOR_ELEMENTS, validate

from conftest import REPO, SHARED_MODELS

CONV = "op #0 CONV_2D (output 'y')"


def conv_model(opts=None) -> ModelBuilder:
    """x[1,4,4,2] -> CONV_2D(w[3,3,3,2] per-channel, b[3]) -> y[1,4,4,3]; tensors x=0, w=1, b=2, y=3."""
    b = ModelBuilder()
    x = b.add_input("x", (1, 4, 4, 2), np.int8, scale=0.5, zero_point=-1)
    w = b.add_const("w", np.ones((3, 3, 3, 2), np.int8), scale=[0.1, 0.2, 0.3], zero_point=0, axis=0)
    bias = b.add_const("b", np.zeros(3, np.int32), scale=[0.05, 0.1, 0.15], zero_point=0)
    y = b.add_tensor("y", (1, 4, 4, 3), np.int8, scale=0.25, zero_point=2)
    b.add_op("CONV_2D", [x, w, bias], [y], opts or ir.Conv2DOptions(padding="SAME"))
    b.mark_output(y)
    return b


def problems(b: ModelBuilder | bytes) -> list[str]:
    data = b if isinstance(b, bytes) else b.build()
    return validate(load_bytes(data, source="t", validate=False))


def patch(data: bytes, kind: str, value, nth: int = 0, **info) -> bytes:
    """Overwrite the ``nth`` field of ``kind`` (matching ``info``) with ``value``, in place."""
    fields, _ = fuzz.locate_fields(data)
    f = [f for f in fields if f.kind == kind and all(f.info.get(k) == v for k, v in info.items())][nth]
    buf = bytearray(data)
    struct.pack_into(f.fmt, buf, f.pos, fuzz._fit(f.fmt, value))
    return bytes(buf)


def test_valid_conv_model_has_no_problems_and_loads():
    b = conv_model()
    assert problems(b) == []
    load_bytes(b.build())


# ------------------------------------------------------------------ indices

def test_op_input_out_of_range():
    b = conv_model()
    b.ops[0].inputs = (0, 1, 9)
    assert f"{CONV}: input 2 names tensor 9, out of range (the model has 4 tensors)" in problems(b)


def test_minus_one_only_at_optional_inputs():
    b = conv_model()
    b.ops[0].inputs = (0, 1, -1)  # no bias: allowed
    assert problems(b) == []
    b.ops[0].inputs = (0, -1, 2)
    assert (f"{CONV}: input 1 names tensor -1, out of range (the model has 4 tensors, and this input is "
            "not optional)") in problems(b)


def test_op_output_out_of_range():
    b = conv_model()
    b.ops[0].outputs = (7,)
    p = problems(b)
    assert "op #0 CONV_2D: output 0 names tensor 7, out of range (the model has 4 tensors)" in p
    assert "graph output tensor 3 'y' is never produced (no op writes it and it is not a graph input)" in p


def test_graph_inputs_and_outputs_out_of_range():
    b = conv_model()
    b.inputs = [0, 5]
    b.outputs = [-1]
    p = problems(b)
    assert "graph input 1 names tensor 5, out of range (the model has 4 tensors)" in p
    assert "graph output 0 names tensor -1, out of range (the model has 4 tensors)" in p


def test_opcode_index_out_of_range():
    b = two_relus()
    b.ops[1].opcode = "RELU6"  # a second operator code, so op #1 stores its opcode index (1)
    data = patch(b.build(), "opcode_index", 7, op=1)
    assert "op #1: opcode index 7 is out of range (the model has 2 operator codes)" in problems(data)


def test_buffer_index_out_of_range():
    data = patch(conv_model().build(), "buffer_index", 40, tensor=1)
    assert "tensor 1 'w': buffer index 40 is out of range (the model has 3 buffers)" in problems(data)


# ------------------------------------------------------------------ arity and types

def test_arity():
    b = conv_model()
    b.ops[0].inputs = (0,)
    b.ops[0].outputs = (3, 3)
    p = problems(b)
    assert f"{CONV}: has 1 input(s); CONV_2D takes 2 to 3" in p
    assert f"{CONV}: has 2 output(s); CONV_2D produces 1" in p


def test_index_operand_type():
    b = ModelBuilder()
    x = b.add_input("x", (1, 6), np.int8, scale=0.1, zero_point=0)
    s = b.add_const("shape", np.array([2, 3], np.int8))
    y = b.add_tensor("y", (2, 3), np.int8, scale=0.1, zero_point=0)
    b.add_op("RESHAPE", [x, s], [y])
    b.mark_output(y)
    assert ("op #0 RESHAPE (output 'y'): input 1 tensor 1 'shape' is int8; RESHAPE needs int32 or int64 there"
            in problems(b))


def test_operands_share_one_type():
    b = ModelBuilder()
    x = b.add_input("x", (1, 4), np.int8, scale=0.1, zero_point=0)
    z = b.add_input("z", (1, 4), np.int16, scale=0.1, zero_point=0)
    y = b.add_tensor("y", (1, 4), np.int8, scale=0.1, zero_point=0)
    b.add_op("ADD", [x, z], [y])
    b.mark_output(y)
    assert ("op #0 ADD (output 'y'): input 1 tensor 1 'z' is int16 but the output is int8; ADD needs one "
            "element type") in problems(b)


def test_unreadable_tensor_type():
    data = patch(conv_model().build(), "tensor_type", 5, tensor=3)  # STRING
    assert ("tensor 3 'y': its element type is one qsim cannot read (string/resource/variant/unknown)"
            in problems(data))


# ------------------------------------------------------------------ shapes, buffers, sizes

def test_negative_dimension():
    b = conv_model()
    b.tensors[3].shape = (1, -4, 4, 3)
    assert "tensor 3 'y': shape [1, -4, 4, 3] has a negative dimension" in problems(b)


def test_shape_disagrees_with_buffer():
    b = conv_model()
    b.tensors[1].shape = (3, 3, 3, 3)
    assert "tensor 1 'w': shape [3, 3, 3, 3] needs 81 bytes of int8 but its buffer 1 holds 54" in problems(b)


def test_tensor_too_large():
    b = conv_model()
    b.tensors[3].shape = (1, 65536, 65536, 3)
    assert (f"tensor 3 'y': shape [1, 65536, 65536, 3] has 12,884,901,888 elements, more than the "
            f"{MAX_TENSOR_ELEMENTS:,} qsim accepts in one tensor") in problems(b)


def test_total_activations_too_large():
    b = ModelBuilder()
    prev = b.add_input("x", (1 << 28,), np.int8, scale=0.1, zero_point=0)
    for k in range(4):
        t = b.add_tensor(f"r{k}", (1 << 28,), np.int8, scale=0.1, zero_point=0)
        b.add_op("RELU", [prev], [t])
        prev = t
    b.mark_output(prev)
    assert (f"the model's activation tensors need {5 << 28:,} bytes in total, more than the "
            f"{MAX_ACTIVATION_BYTES:,} qsim accepts") in problems(b)


# ------------------------------------------------------------------ quantization

@pytest.mark.parametrize("scale, shown", [(0.0, "0"), (-1.0, "-1"), (float("nan"), "nan"), (float("inf"), "inf")])
def test_scale_finite_positive(scale, shown):
    data = patch(conv_model().build(), "scale", scale, tensor=0)
    assert f"tensor 0 'x': quantization scale {shown} (entry 0) is not a finite positive number" in problems(data)


def test_per_channel_scale_entry_named():
    data = patch(conv_model().build(), "scale", float("nan"), nth=2, tensor=1)
    assert "tensor 1 'w': quantization scale nan (entry 2) is not a finite positive number" in problems(data)


@pytest.mark.parametrize("tensor, zp, line", [
    (0, 128, "tensor 0 'x': zero point 128 is outside the int8 range [-128, 127]"),
    (3, -2**63, "tensor 3 'y': zero point -9223372036854775808 is outside the int8 range [-128, 127]"),
    (2, 2**31, "tensor 2 'b': zero point 2147483648 is outside the int32 range [-2147483648, 2147483647]"),
])
def test_zero_point_in_type_range(tensor, zp, line):
    assert line in problems(patch(conv_model().build(), "zero_point", zp, tensor=tensor))


def test_scale_and_zero_point_counts():
    b = conv_model()
    b.tensors[1].zero_point = np.zeros(2, np.int64)
    assert "tensor 1 'w': 3 scale(s) but 2 zero point(s)" in problems(b)


def test_per_channel_axis_and_length():
    b = conv_model()
    b.tensors[1].axis = 5
    assert "tensor 1 'w': per-channel quantization axis 5 is outside its 4-D shape [3, 3, 3, 2]" in problems(b)
    b.tensors[1].axis = 3
    assert "tensor 1 'w': 3 per-channel scales along axis 3, whose dimension is 2" in problems(b)


def test_per_channel_bias_may_name_the_filter_axis():
    """person_detect's biases: 1-D, one scale per element, quantized_dimension 3 (TFLM accepts)."""
    b = conv_model()
    b.tensors[2].axis = 3
    assert problems(b) == []


# ------------------------------------------------------------------ data flow

def two_relus() -> ModelBuilder:
    """x -> RELU -> h -> RELU -> y; tensors x=0, h=1, y=2."""
    b = ModelBuilder()
    x = b.add_input("x", (1, 4), np.int8, scale=0.1, zero_point=0)
    h = b.add_tensor("h", (1, 4), np.int8, scale=0.1, zero_point=0)
    y = b.add_tensor("y", (1, 4), np.int8, scale=0.1, zero_point=0)
    b.add_op("RELU", [x], [h])
    b.add_op("RELU", [h], [y])
    b.mark_output(y)
    return b


def test_reads_tensor_produced_later():
    b = two_relus()
    b.ops[0].inputs = (2,)
    assert ("op #0 RELU (output 'h'): input 0 tensor 2 'y' is read before it exists: which only op #1, later "
            "in the graph, produces") in problems(b)


def test_reads_its_own_output():
    b = two_relus()
    b.ops[1].inputs = (2,)
    assert ("op #1 RELU (output 'y'): input 0 tensor 2 'y' is read before it exists: which this op produces "
            "itself (a cycle)") in problems(b)


def test_reads_tensor_nothing_produces():
    b = two_relus()
    z = b.add_tensor("z", (1, 4), np.int8, scale=0.1, zero_point=0)
    b.ops[1].inputs = (z,)
    assert ("op #1 RELU (output 'y'): input 0 tensor 3 'z' is read before it exists: which no op produces and "
            "which is neither a graph input nor a constant") in problems(b)


def test_tensor_written_twice_and_outputs_of_inputs_or_constants():
    b = two_relus()
    b.ops[1].outputs = (1,)
    assert "op #1 RELU (output 'h'): output 0 tensor 1 'h' is also written by op #0" in problems(b)
    b = two_relus()
    b.ops[0].outputs = (0,)
    assert "op #0 RELU (output 'x'): output 0 tensor 0 'x' is a graph input" in problems(b)
    b = conv_model()
    b.ops[0].outputs = (2,)
    assert f"op #0 CONV_2D (output 'b'): output 0 tensor 2 'b' is a constant (it has data in the file)" in problems(b)


def test_graph_outputs_must_be_computed():
    b = two_relus()
    b.ops = []  # zero operators
    assert "graph output tensor 2 'y' is never produced (no op writes it and it is not a graph input)" in problems(b)
    b = conv_model()
    b.outputs = [1]
    assert ("graph output tensor 1 'w' is a constant; qsim needs every output computed by an op (or passed "
            "through from a graph input)") in problems(b)


def test_graph_output_that_is_only_a_variable_tensor_is_not_produced():
    """Fuzz case (seed 11, case 5883, trained_lstm_int8 with zero operators): a variable tensor
    (LSTM state) may be read by ops, but as a graph output nothing computes it."""
    b = two_relus()
    b.ops = []
    g = load_bytes(b.build(), source="t", validate=False)
    g.tensors[2].is_variable = True
    assert "graph output tensor 2 'y' is never produced (no op writes it and it is not a graph input)" in validate(g)


def test_graph_input_must_not_be_constant():
    b = conv_model()
    b.inputs = [0, 1]
    assert "graph input tensor 1 'w' is a constant (it has data in the file)" in problems(b)


# ------------------------------------------------------------------ options

@pytest.mark.parametrize("field", ["stride_h", "stride_w", "dilation_h", "dilation_w"])
def test_conv_stride_and_dilation_at_least_one(field):
    opts = ir.Conv2DOptions(padding="SAME", **{field: 0})
    assert f"{CONV}: {field} is 0; it must be >= 1" in problems(conv_model(opts))


def pool_model(opts: ir.Pool2DOptions) -> ModelBuilder:
    b = ModelBuilder()
    x = b.add_input("x", (1, 8, 8, 2), np.int8, scale=0.1, zero_point=0)
    y = b.add_tensor("y", (1, 4, 4, 2), np.int8, scale=0.1, zero_point=0)
    b.add_op("MAX_POOL_2D", [x], [y], opts)
    b.mark_output(y)
    return b


def test_pool_filter_at_least_one():
    p = problems(pool_model(ir.Pool2DOptions("VALID", 2, 2, 0, 2)))
    assert "op #0 MAX_POOL_2D (output 'y'): filter_h is 0; it must be >= 1" in p


def test_unknown_padding_and_activation_enums():
    data = conv_model(ir.Conv2DOptions(padding="VALID", activation="RELU")).build()
    data = patch(patch(data, "padding", 7), "activation", 9)
    p = problems(data)
    assert f"{CONV}: padding UNKNOWN_7 is not SAME or VALID" in p
    assert f"{CONV}: fused activation UNKNOWN_9 is not a TFLite activation" in p


def depthwise_model(opts: ir.DepthwiseConv2DOptions, hw=4, k=(3, 3), c=2) -> ModelBuilder:
    b = ModelBuilder()
    x = b.add_input("x", (1, hw, hw, c), np.int8, scale=0.5, zero_point=0)
    w = b.add_const("w", np.ones((1, k[0], k[1], c), np.int8), scale=0.1, zero_point=0)
    y = b.add_tensor("y", (1, hw, hw, c), np.int8, scale=0.5, zero_point=0)
    b.add_op("DEPTHWISE_CONV_2D", [x, w], [y], opts)
    b.mark_output(y)
    return b


def test_depth_multiplier_not_negative():
    p = problems(depthwise_model(ir.DepthwiseConv2DOptions(depth_multiplier=-1)))
    assert "op #0 DEPTHWISE_CONV_2D (output 'y'): depth_multiplier is -1; it must be >= 0" in p
    assert problems(depthwise_model(ir.DepthwiseConv2DOptions(depth_multiplier=0))) == []


def test_concatenation_axis_in_rank():
    b = ModelBuilder()
    x = b.add_input("x", (1, 4), np.int8, scale=0.1, zero_point=0)
    y = b.add_tensor("y", (2, 4), np.int8, scale=0.1, zero_point=0)
    b.add_op("CONCATENATION", [x, x], [y], ir.ConcatenationOptions(axis=3))
    b.mark_output(y)
    assert "op #0 CONCATENATION (output 'y'): axis 3 is outside the output's rank 2" in problems(b)


def test_squeeze_dims_in_rank():
    b = ModelBuilder()
    x = b.add_input("x", (1, 4), np.int8, scale=0.1, zero_point=0)
    y = b.add_tensor("y", (4,), np.int8, scale=0.1, zero_point=0)
    b.add_op("SQUEEZE", [x], [y], ir.SqueezeOptions((0, 2)))
    b.mark_output(y)
    assert "op #0 SQUEEZE (output 'y'): squeeze dims [2] are outside the input's rank 2" in problems(b)


def test_softmax_beta_and_leaky_alpha_finite():
    b = ModelBuilder()
    x = b.add_input("x", (1, 4), np.int8, scale=0.1, zero_point=0)
    h = b.add_tensor("h", (1, 4), np.int8, scale=1 / 256, zero_point=-128)
    y = b.add_tensor("y", (1, 4), np.int8, scale=0.1, zero_point=0)
    b.add_op("SOFTMAX", [x], [h], ir.SoftmaxOptions(beta=float("nan")))
    b.add_op("LEAKY_RELU", [h], [y], ir.LeakyReluOptions(alpha=float("inf")))
    b.mark_output(y)
    p = problems(b)
    assert "op #0 SOFTMAX (output 'h'): beta nan is not finite" in p
    assert "op #1 LEAKY_RELU (output 'y'): alpha inf is not finite" in p


# ------------------------------------------------------------------ work bounds

def test_huge_dilation_refused_before_allocation():
    """The issue's case: one flipped byte made a dilation 524288 and `qsim run` allocated 6.8 GB."""
    p = problems(depthwise_model(ir.DepthwiseConv2DOptions(dilation_h=524288), hw=16, c=8))
    padded = (16 + (3 - 1) * 524288 + 1) * (16 + 3) * 8  # rows x cols x channels the kernel would zero-pad
    assert [x for x in p if "scratch" in x] == [
        "op #0 DEPTHWISE_CONV_2D (output 'y'): the 3x3 window (dilation 524288x1) on a [1, 16, 16, 8] input "
        f"needs a {padded:,}-element scratch buffer, more than the 67,108,864 qsim accepts"]


def test_huge_pool_window_refused():
    p = problems(pool_model(ir.Pool2DOptions("SAME", 2, 2, 1024, 1024)))
    assert ("op #0 MAX_POOL_2D (output 'y'): a 1024x1024 window has 1,048,576 taps, more than the 65,536 qsim "
            "accepts") in p


def test_conv_im2col_bound():
    b = ModelBuilder()
    x = b.add_input("x", (1, 256, 256, 128), np.int8, scale=0.5, zero_point=0)
    w = b.add_const("w", np.ones((8, 3, 3, 128), np.int8), scale=0.1, zero_point=0)
    y = b.add_tensor("y", (1, 256, 256, 8), np.int8, scale=0.5, zero_point=0)
    b.add_op("CONV_2D", [x, w], [y], ir.Conv2DOptions(padding="SAME"))
    b.mark_output(y)
    assert ("op #0 CONV_2D (output 'y'): the 3x3 window (dilation 1x1) on a [1, 256, 256, 128] input needs a "
            f"{256 * 256 * 9 * 128:,}-element scratch buffer, more than the 67,108,864 qsim accepts") in problems(b)


# ------------------------------------------------------------------ all at once, and the entry points

def test_all_violations_listed_and_load_raises():
    b = two_relus()
    b.ops[0].inputs = (2,)
    b.tensors[1].scale = np.array([float("nan")])
    b.tensors[2].zero_point = np.array([300])
    data = b.build()
    p = problems(data)
    assert len(p) == 3
    with pytest.raises(InvalidModelError) as e:
        load_bytes(data, source="bad.tflite")
    assert e.value.violations == p
    assert str(e.value).startswith("bad.tflite is not a valid TFLite model (3 problem(s))")
    assert all(f"\n  - {line}" in str(e.value) for line in p)


def test_prepare_graph_refuses_an_invalid_in_memory_graph():
    g = load_bytes(two_relus().build())
    g.operators[0].inputs = (2,)
    with pytest.raises(InvalidModelError, match="read before it exists"):
        prepare_graph(g)


def test_run_never_feeds_a_missing_value():
    """Defence behind the validator: a graph edited after prepare still cannot compute on None."""
    g = load_bytes(two_relus().build())
    prep = prepare_graph(g)
    g.operators[1].inputs = (2,)
    with pytest.raises(QsimError, match=r"reads tensor 2 'y', which has no value at this point"):
        prep.run([np.zeros((1, 4), np.int8)])


def test_codegen_refuses_an_invalid_graph(tmp_path):
    from qsim.codegen.emit import generate
    g = load_bytes(two_relus().build())
    g.outputs = [1, 1]
    with pytest.raises(InvalidModelError, match=r"graph outputs \[1, 1\] name a tensor twice"):
        generate(g, tmp_path / "c")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(patch(two_relus().build(), "op_input", 2, op=0))
    with pytest.raises(InvalidModelError):
        generate(bad, tmp_path / "c2")


def test_cli_inspect_shows_invalid_model_and_exits_2(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(patch(conv_model().build(), "scale", float("nan"), tensor=0))
    r = subprocess.run([sys.executable, "-m", "qsim.cli", "inspect", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "CONV_2D" in r.stdout  # the model is shown
    assert "INVALID MODEL (1 problem(s)):" in r.stdout
    assert "  - tensor 0 'x': quantization scale nan (entry 0) is not a finite positive number" in r.stdout
    r = subprocess.run([sys.executable, "-m", "qsim.cli", "inspect", "--json", str(bad)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and '"invalid": [' in r.stdout
    ok = tmp_path / "ok.tflite"
    ok.write_bytes(conv_model().build())
    r = subprocess.run([sys.executable, "-m", "qsim.cli", "inspect", str(ok)], capture_output=True, text=True)
    assert r.returncode == 0 and "INVALID" not in r.stdout


# ------------------------------------------------------------------ valid models: zero violations

def _valid_models():
    shared = sorted(SHARED_MODELS.glob("*.tflite")) + sorted(SHARED_MODELS.glob("seanet/*/*.tflite"))
    return shared + [REPO / "examples" / "models" / "demo_cnn_int8.tflite"]


def test_valid_models_have_no_violations(shared_models_dir):
    checked = 0
    for p in _valid_models():
        try:
            g = load(p, validate=False)
        except QsimError as e:  # several subgraphs (control flow): refused by the reader, not a violation
            assert "subgraphs" in str(e), (p, e)
            continue
        assert validate(g) == [], p
        checked += 1
    assert checked >= 20


def test_zoo_models_have_no_violations():
    assert validate(load_bytes(zoo.small_cnn(), validate=False)) == []
    assert validate(load_bytes(zoo.mobilenet_v2_like(), validate=False)) == []


def test_summarize_is_safe_on_an_invalid_graph():
    """`qsim inspect`'s report renders a graph with out-of-range indices instead of crashing."""
    from qsim import report
    b = conv_model()
    b.ops[0].inputs = (0, 9, 2)
    b.outputs = [3, 12]
    s = report.summarize(load_bytes(b.build(), source="t", validate=False))
    assert "graph output 1 names tensor 12, out of range (the model has 4 tensors)" in s["invalid"]
    assert s["outputs"][1]["name"] == "<tensor 12: out of range>"
    assert s["ops"][0]["inputs"][1]["name"] == "<tensor 9: out of range>"
    assert s["unsupported"] == [] and s["float_model"] is None
    text = report.render_summary(s)
    assert f"INVALID MODEL ({len(s['invalid'])} problem(s)):" in text
