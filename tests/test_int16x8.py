"""int16x8 (int16 activations, zero point 0; int8 weights; int64 bias) on the SEANet layer models.

Goldens: ``../shared/models/seanet/<op>/<op>N_golden_<type>.csv`` were written by the TFLite
(LiteRT) interpreter, so qsim's ``litert`` profile must reproduce each of them exactly, from the
``_input<K>_<type>.csv`` files read through ``--input``'s CSV reader.  The ``tflm`` profile is
checked against TFLite Micro itself (a real reference run) on the same golden inputs, and both
profiles against both references on seeded random inputs.
"""
from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path

import numpy as np
import pytest

import qsim
from conftest import SHARED_MODELS, require_module, skip_or_fail
from qsim.errors import QsimError

# ops whose int16x8 kernels qsim implements (grows with issue 12)
OPS = ["pad", "strided_slice", "quantize", "add", "sub", "leaky_relu", "conv", "transpose_conv"]
# per op: models checked against both references on random inputs (kept small: seconds each)
REF_MODELS = {"pad": ["pad0", "pad5"], "strided_slice": ["strided_slice0", "strided_slice9"],
              "quantize": ["quantize0", "quantize1"], "add": ["add0", "add5"], "sub": ["sub0", "sub3"],
              "leaky_relu": ["leaky_relu0", "leaky_relu3"], "conv": ["conv1", "conv10", "conv21"],
              "transpose_conv": ["transpose_conv0", "transpose_conv3"]}
# the golden inputs on which TFLite Micro's output differs from the (LiteRT) golden file (README of
# ../shared/models): qsim's tflm profile must follow TFLM there, its litert profile the golden file
TFLM_DIFFERS = {"leaky_relu": ["leaky_relu3", "leaky_relu18", "leaky_relu19"]}


def _models(op: str) -> list[Path]:
    d = SHARED_MODELS / "seanet" / op
    files = sorted(d.glob("*.tflite"))
    if not files:
        skip_or_fail(f"{d} holds no models: the SEANet layer models live in ../shared/models/seanet")
    return files


def _golden(model: Path) -> np.ndarray:
    (f,) = glob.glob(str(model.with_suffix("")) + "_golden_*.csv")
    return np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=1)


def _input_file(model: Path) -> str:
    return str(model.with_suffix("")) + "_input0_" + _input0_type(model) + ".csv"


def _input0_type(model: Path) -> str:
    (f,) = glob.glob(str(model.with_suffix("")) + "_input0_*.csv")
    return f.rsplit("_", 1)[1][:-4]


@pytest.mark.parametrize("op", OPS)
def test_seanet_goldens_exact(op):
    """Every model of the op directory reproduces its golden output exactly (profile litert)."""
    for model in _models(op):
        m = qsim.load(model)
        arrays, warnings = m.read_inputs(_input_file(model))
        out = m.run(arrays, profile="litert").outputs
        (y,) = out.values()
        gold = _golden(model)
        assert y.size == gold.size, model.name
        diff = np.count_nonzero(y.ravel().astype(np.int64) != gold)
        assert diff == 0, f"{model.name}: {diff} of {gold.size} elements differ from the golden file"


@pytest.mark.parametrize("op", OPS)
def test_seanet_tflm_on_golden_inputs(op):
    """The tflm profile agrees with TFLite Micro itself on every tensor of the golden inputs."""
    require_module("tflite_micro", "TFLite Micro reference")
    differs = TFLM_DIFFERS.get(op, [])
    models = _models(op)[:2] + [SHARED_MODELS / "seanet" / op / f"{n}.tflite" for n in differs]
    for model in models:
        m = qsim.load(model)
        arrays, _ = m.read_inputs(_input_file(model))
        rep = m.check(inputs=[arrays], reference="tflm")
        assert rep.ok, f"{model.name}: {rep.first_divergence}"
        (y,) = m.run(arrays, profile="tflm").outputs.values()
        diff = np.abs(y.ravel().astype(np.int64) - _golden(model))
        if model.stem in differs:  # TFLM forms the multipliers in double, LiteRT in float32
            assert 1 <= np.count_nonzero(diff) <= 3 and diff.max() == 1, (model.name, diff.max())
        else:
            assert diff.max() == 0, model.name


@pytest.mark.parametrize("name", [n for op in OPS for n in REF_MODELS.get(op, [])])
def test_seanet_random_vs_references(name):
    """Every tensor vs LiteRT BUILTIN_REF and TFLM (each under its own profile), random int16 inputs."""
    require_module("tflite_micro", "TFLite Micro reference")
    require_module("ai_edge_litert", "LiteRT reference")
    op = name.rstrip("0123456789")
    model = SHARED_MODELS / "seanet" / op / f"{name}.tflite"
    if not model.is_file():
        skip_or_fail(f"{model} is absent")
    rep = qsim.load(model).check(inputs=2, reference="both", seed=12)
    assert rep.ok, f"{name}: {rep.first_divergence}"


def test_csv_input_needs_every_input_file(tmp_path):
    """TFLM's per-input CSV files: naming one reads its siblings; a missing sibling is a clear error."""
    model = SHARED_MODELS / "seanet" / "pad" / "pad0.tflite"
    if not model.is_file():
        skip_or_fail(f"{model} is absent")
    m = qsim.load(model)
    src = Path(_input_file(model)).read_text()
    (tmp_path / "x_input0_int32.csv").write_text(src)  # wrong element type in the name
    with pytest.raises(QsimError, match="int16"):
        m.read_inputs(tmp_path / "x_input0_int32.csv")
    (tmp_path / "one.csv").write_text(src + "\n1,2,3\n")  # two lines for a one-input model
    with pytest.raises(QsimError, match="2 non-empty line"):
        m.read_inputs(tmp_path / "one.csv")
    (tmp_path / "ok.csv").write_text(src)
    arrays, _ = m.read_inputs(tmp_path / "ok.csv")
    (a,) = arrays.values() if isinstance(arrays, dict) else arrays
    assert a.dtype == np.int16 and a.size == 640


def test_int16_nonzero_zero_point_refused():
    """int16 activations with a zero point other than 0 are no TFLite scheme: refused, naming the tensor."""
    model = SHARED_MODELS / "seanet" / "pad" / "pad0.tflite"
    if not model.is_file():
        skip_or_fail(f"{model} is absent")
    from qsim.interpreter import prepare_graph
    from qsim.loader import load
    g = load(model)
    t = g.tensors[g.inputs[0]]
    g.tensors[t.index] = dataclasses.replace(t, quant=dataclasses.replace(t.quant, zero_point=np.array([3])))
    with pytest.raises(QsimError, match=r"zero point 3.*requires zero point 0"):
        prepare_graph(g, "tflm")


def test_int16_add_with_an_int8_input_refused():
    """An int16 ADD whose second input is int8 has no TFLite kernel: refused, naming the tensor."""
    from qsim import ir
    from qsim.builder import ModelBuilder
    from qsim.interpreter import prepare_graph
    from qsim.loader import load_bytes
    b = ModelBuilder()
    a = b.add_input("a", (1, 4), np.int16, scale=0.001, zero_point=0)
    c = b.add_input("c8", (1, 4), np.int8, scale=0.1, zero_point=0)
    y = b.add_tensor("y", (1, 4), np.int16, scale=0.002, zero_point=0)
    b.add_op("ADD", [a, c], [y], ir.ActivationOptions())
    b.mark_output(y)
    with pytest.raises(QsimError, match="'c8'"):
        prepare_graph(load_bytes(b.build(), validate=False), "tflm")


def test_mbqm_int64_hand_values():
    """TFLite's int64 MultiplyByQuantizedMultiplier: Q31 multiplier reduced to Q15 (round half up,
    0x7FFF from 0x7FFF0000 on), then one rounding half up; single rounding keeps the Q31 multiplier."""
    import qsim.fixedpoint as fp
    x = np.array([6, -6, 5, -5, 1 << 32])  # wider than int32 in, int32 out
    # m0 = 2**30 (0.5) -> reduced 2**14; shift -1: x * 2**14 / 2**16 = x / 4, ties up
    assert fp.multiply_by_quantized_multiplier_int64(x, 1 << 30, -1).tolist() == [2, -1, 1, -1, 1 << 30]
    assert fp.multiply_by_quantized_multiplier_int64(x, 1 << 30, -1, "single").tolist() == [2, -1, 1, -1, 1 << 30]
    # m0 = 2**31 - 1 reduces to 0x7FFF (not 0x8000): 2**16 * 0x7FFF / 2**15 = 65534 (single: 65536 - 1 rounds to 65536)
    assert int(fp.multiply_by_quantized_multiplier_int64(1 << 16, (1 << 31) - 1, 0)) == 65534
    assert int(fp.multiply_by_quantized_multiplier_int64(1 << 16, (1 << 31) - 1, 0, "single")) == 65536
    # m0 = 1518500250 (~ 2**30.5): reduced (m0 + 2**15) >> 16 = 23170
    assert int(fp.multiply_by_quantized_multiplier_int64(1 << 20, 1518500250, -3)) == (1 << 20) * 23170 // (1 << 18) + 0
    with pytest.raises(QsimError, match=r"\[-31, 7\]"):
        fp.multiply_by_quantized_multiplier_int64(x, 1 << 30, 8)


def _conv16_model(w_dtype=np.int8, bias_dtype=np.int64) -> bytes:
    from qsim import ir
    from qsim.builder import ModelBuilder
    b = ModelBuilder()
    x = b.add_input("x", (1, 3, 3, 2), np.int16, scale=0.001, zero_point=0)
    w = b.add_const("w16", np.ones((2, 1, 1, 2), w_dtype), scale=0.01, zero_point=0)
    bias = b.add_const("b", np.zeros(2, bias_dtype), scale=1e-5, zero_point=0)
    y = b.add_tensor("y", (1, 3, 3, 2), np.int16, scale=0.002, zero_point=0)
    b.add_op("CONV_2D", [x, w, bias], [y], ir.Conv2DOptions("VALID", 1, 1, 1, 1, "NONE"))
    b.mark_output(y)
    return b.build()


def test_int16_conv_with_int16_weights_refused():
    """int16 weights: no TFLite kernel defines them; refused naming the tensor and the rule."""
    from qsim.interpreter import prepare_graph
    from qsim.loader import load_bytes
    g = load_bytes(_conv16_model(w_dtype=np.int16))
    with pytest.raises(QsimError, match=r"'w16'.*symmetric int8 weights only"):
        prepare_graph(g, "tflm")
    prepare_graph(load_bytes(_conv16_model()), "tflm")  # the int8-weight twin runs


def test_codegen_and_profile_run_int16_vectors_refuse(tmp_path):
    """An int16x8 conv: the C generator emits it (tests/test_codegen_int16.py checks the C), the
    accelerator model runs it (tests/test_accel_int16.py checks its figures); vectors stay int8."""
    m = qsim.load(_conv16_model())
    assert m.run(np.zeros((1, 3, 3, 2), np.int16)).outputs  # the simulator runs it
    assert m.profile().totals["cycles"] > 0
    res = m.codegen(tmp_path / "fw", name="n")
    assert [l.opcode for l in res.layers] == ["CONV_2D"]
    with pytest.raises(QsimError, match="int16x8"):  # int8 requant vectors (int32 accumulators) only
        m.vectors(0, inputs=1, out_dir=tmp_path / "vec")
    with pytest.raises(QsimError, match=r"requant variants .* int8 \(and uint8\) GEMM layers only"):
        m.run(np.zeros((1, 3, 3, 2), np.int16), requant="shift-only")


def test_transpose_conv_output_shape_input_must_match():
    """SEANet's TRANSPOSE_CONV reads output_shape from a graph input: a value other than the stored
    output shape (a dynamic shape) is refused, not computed into the wrong layout."""
    model = SHARED_MODELS / "seanet" / "transpose_conv" / "transpose_conv0.tflite"
    if not model.is_file():
        skip_or_fail(f"{model} is absent")
    m = qsim.load(model)
    shape_in, x = m.random_inputs(1, seed=3)[0]
    assert shape_in.tolist() == [1, 3, 12, 64]  # random inputs give the shape operand its only valid value
    with pytest.raises(QsimError, match=r"output_shape input holds \[1, 3, 24, 64\]"):
        m.run([np.array([1, 3, 24, 64], np.int32), x])


# --------------------------------------------------------------------------- TRANSPOSE_CONV built models

def tconv_model(dtype, in_hw, k, stride, padding, oc=3, ic=2, zp_in=0, zp_out=0, bias=True, seed=0, act="NONE"):
    """A one-op TRANSPOSE_CONV model (constant output_shape, per-channel int8 filter): the output
    size is the smallest whose forward conv gives the input size."""
    from qsim import ir
    from qsim.builder import ModelBuilder
    from qsim.kernels.conv import compute_out_size
    rng = np.random.default_rng(seed)
    ih, iw = in_hw
    # output size: the forward conv of the output gives the input
    def out_size(i, kk, s):
        for o in range(1, i * s + kk + 2):
            if compute_out_size(padding, o, kk, s) == i:
                return o
    oh, ow = out_size(ih, k[0], stride[0]), out_size(iw, k[1], stride[1])
    b = ModelBuilder()
    shape = b.add_const("oshape", np.array([1, oh, ow, oc], np.int32))
    w = b.add_const("w", rng.integers(-127, 128, (oc, k[0], k[1], ic)).astype(np.int8),
                    scale=rng.uniform(0.002, 0.02, oc), zero_point=np.zeros(oc, np.int64), axis=0)
    s_in = 0.01 if dtype == np.int8 else 0.0005
    x = b.add_input("x", (1, ih, iw, ic), dtype, scale=s_in, zero_point=zp_in)
    ins = [shape, w, x]
    if bias:
        bdt = np.int32 if dtype == np.int8 else np.int64
        ins.append(b.add_const("bias", rng.integers(-5000, 5000, oc).astype(bdt), scale=1e-5, zero_point=0))
    y = b.add_tensor("y", (1, oh, ow, oc), dtype, scale=0.05 if dtype == np.int8 else 0.003, zero_point=zp_out)
    b.add_op("TRANSPOSE_CONV", ins, [y], ir.TransposeConvOptions(padding, stride[0], stride[1], act), version=3)
    b.mark_output(y)
    return b.build()



@pytest.mark.parametrize("dtype, in_hw, k, stride, padding, oc, ic, zp_in, zp_out, kw", [
    (np.int8, (3, 4), (3, 3), (2, 2), "SAME", 3, 2, -5, 7, {}),
    (np.int8, (2, 5), (3, 4), (1, 2), "VALID", 4, 3, 10, -3, {}),
    (np.int8, (3, 3), (2, 2), (2, 2), "VALID", 2, 5, 3, -100, dict(bias=False, act="RELU")),
    (np.int16, (2, 5), (3, 4), (1, 2), "SAME", 4, 3, 0, 0, dict(act="RELU6")),
])
def test_transpose_conv_built_vs_references(dtype, in_hw, k, stride, padding, oc, ic, zp_in, zp_out, kw):
    """int8 and int16x8 TRANSPOSE_CONV (strides, SAME/VALID, zero points, no bias, fused activation)
    against LiteRT BUILTIN_REF and TFLM, every tensor, random inputs."""
    require_module("tflite_micro", "TFLite Micro reference")
    require_module("ai_edge_litert", "LiteRT reference")
    m = qsim.load(tconv_model(dtype, in_hw, k, stride, padding, oc, ic, zp_in, zp_out, **kw))
    (y,) = m.run(m.random_inputs(1, 5)[0]).outputs.values()
    assert np.unique(y).size > 3  # a layer whose outputs carry information, not one clamped value
    rep = m.check(inputs=2, reference="both", seed=4)
    assert rep.ok and {r["reference"] for r in rep.rows} == {"litert", "tflm"}, rep.first_divergence


# --------------------------------------------------------------------------- float32 <-> int16

def _quant_dequant_model(n: int = 64) -> bytes:
    from qsim.builder import ModelBuilder
    b = ModelBuilder()
    x = b.add_input("x", (1, n), np.float32)
    q = b.add_tensor("q16", (1, n), np.int16, scale=0.00037, zero_point=0)
    y = b.add_tensor("y", (1, n), np.float32)
    b.add_op("QUANTIZE", [x], [q])
    b.add_op("DEQUANTIZE", [q], [y])
    b.mark_output(y)
    return b.build()


def test_float_int16_quantize_dequantize_vs_references():
    """float32 -> int16 QUANTIZE (AffineQuantize, int16 clamp) and int16 -> float32 DEQUANTIZE, on
    ordinary values, exact ties, out-of-range values, inf and NaN: both references, every tensor."""
    require_module("tflite_micro", "TFLite Micro reference")
    require_module("ai_edge_litert", "LiteRT reference")
    m = qsim.load(_quant_dequant_model())
    rng = np.random.default_rng(0)
    xs = [[rng.uniform(-14, 14, (1, 64)).astype(np.float32)] for _ in range(2)]
    s = 0.00037
    edge = [0.5 * s, -0.5 * s, 1.5 * s, -2.5 * s, 1e9, -1e9, np.inf, -np.inf, np.nan, 32767.5 * s, -32768.5 * s]
    xs.append([np.array([edge + [0.0] * (64 - len(edge))], np.float32)])
    q = np.asarray(m.run(xs[2][0], keep="all")["q16"])
    assert q.ravel()[9] == 32767 and q.ravel()[10] == -32768  # clamped to int16, not int8
    rep = m.check(inputs=xs, reference="both")
    assert rep.ok and len(rep.rows) == 4, rep.first_divergence


# --------------------------------------------------------------------------- FULLY_CONNECTED

def fc16(per_channel, act="NONE", rows=3, in_u=24, out_u=5, seed=0, bias=True):
    """A one-op int16x8 FULLY_CONNECTED model (int8 weights per tensor or per channel, int64 bias)."""
    from qsim import ir
    from qsim.builder import ModelBuilder
    rng = np.random.default_rng(seed)
    b = ModelBuilder()
    x = b.add_input("x", (rows, in_u), np.int16, scale=0.0004, zero_point=0)
    sc = rng.uniform(0.003, 0.02, out_u) if per_channel else 0.01
    w = b.add_const("w", rng.integers(-127, 128, (out_u, in_u)).astype(np.int8), scale=sc,
                    zero_point=np.zeros(out_u, np.int64) if per_channel else 0, **({"axis": 0} if per_channel else {}))
    ins = [x, w]
    if bias:
        ins.append(b.add_const("b", rng.integers(-20000, 20000, out_u).astype(np.int64), scale=1e-6, zero_point=0))
    y = b.add_tensor("y", (rows, out_u), np.int16, scale=0.002, zero_point=0)
    b.add_op("FULLY_CONNECTED", ins, [y], ir.FullyConnectedOptions(act), version=7)
    b.mark_output(y)
    return b.build()

@pytest.mark.parametrize("kw", [dict(per_channel=False), dict(per_channel=True),
                                dict(per_channel=False, act="RELU", bias=False)])
def test_fc16_vs_references(kw):
    """int16x8 FULLY_CONNECTED: TFLM = int64 fixed-point requantization, LiteRT BUILTIN_REF = the double
    real-scale rescale of the int64 acc + bias (profile variant float_rescale, as for int8)."""
    require_module("tflite_micro", "TFLite Micro reference")
    require_module("ai_edge_litert", "LiteRT reference")
    m = qsim.load(fc16(rows=48, **kw))
    (y,) = m.run(m.random_inputs(1, 2)[0]).outputs.values()
    assert np.unique(y).size > 20
    rep = m.check(inputs=3, reference="both", seed=9)
    assert rep.ok and {r["reference"] for r in rep.rows} == {"litert", "tflm"}, rep.first_divergence
    # the two references' arithmetic differs: the profiles must not coincide on this model
    x = m.random_inputs(1, 9)[0]
    (a,) = m.run(x, profile="tflm").outputs.values()
    (b,) = m.run(x, profile="litert").outputs.values()
    assert np.count_nonzero(a != b) > 0


# --------------------------------------------------------------------------- DEPTHWISE_CONV_2D

def dw16(mult=1, stride=1, padding="SAME", dil=1, act="NONE", ic=3, hw=(6, 7), k=(3, 3), seed=0):
    """A one-op int16x8 DEPTHWISE_CONV_2D model (per-channel int8 filter along axis 3, int64 bias)."""
    from qsim import ir
    from qsim.builder import ModelBuilder
    from qsim.kernels.conv import compute_out_size
    rng = np.random.default_rng(seed)
    oc = ic * mult
    b = ModelBuilder()
    x = b.add_input("x", (1, hw[0], hw[1], ic), np.int16, scale=0.0005, zero_point=0)
    w = b.add_const("w", rng.integers(-127, 128, (1, k[0], k[1], oc)).astype(np.int8),
                    scale=rng.uniform(0.003, 0.02, oc), zero_point=np.zeros(oc, np.int64), axis=3)
    bias = b.add_const("b", rng.integers(-20000, 20000, oc).astype(np.int64), scale=1e-6, zero_point=0)
    oh = compute_out_size(padding, hw[0], k[0], stride, dil); ow = compute_out_size(padding, hw[1], k[1], stride, dil)
    y = b.add_tensor("y", (1, oh, ow, oc), np.int16, scale=0.004, zero_point=0)
    b.add_op("DEPTHWISE_CONV_2D", [x, w, bias], [y], ir.DepthwiseConv2DOptions(padding, stride, stride, dil, dil, mult, act), version=6)
    b.mark_output(y)
    return b.build()

@pytest.mark.parametrize("kw", [dict(), dict(mult=2, stride=2),
                                dict(padding="VALID", dil=2, act="RELU", k=(2, 3))])
def test_depthwise16_vs_references(kw):
    """int16x8 DEPTHWISE_CONV_2D (depth multiplier, stride, dilation, VALID, RELU) vs both references."""
    require_module("tflite_micro", "TFLite Micro reference")
    require_module("ai_edge_litert", "LiteRT reference")
    m = qsim.load(dw16(**kw))
    (y,) = m.run(m.random_inputs(1, 2)[0]).outputs.values()
    assert np.unique(y).size > 20
    rep = m.check(inputs=3, reference="both", seed=5)
    assert rep.ok and {r["reference"] for r in rep.rows} == {"litert", "tflm"}, rep.first_divergence


def test_cli_runs_golden_csv_and_refuses_bad_csv(tmp_path):
    """`qsim run MODEL --input <stem>_input1_int16.csv --profile litert --json`: exit 0, the golden
    output; a CSV with a non-integer value: exit 2, one clear line, no traceback."""
    import json
    import subprocess
    import sys
    from conftest import REPO
    model = SHARED_MODELS / "seanet" / "transpose_conv" / "transpose_conv1.tflite"
    if not model.is_file():
        skip_or_fail(f"{model} is absent")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "qsim.cli", *map(str, args)], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
    csv = str(model.with_suffix("")) + "_input1_int16.csv"  # naming input 1 reads input 0 beside it
    r = cli("run", model, "--input", csv, "--profile", "litert", "--json")
    assert r.returncode == 0, r.stderr
    (out,) = json.loads(r.stdout)["outputs"]
    q = np.asarray(out["q"], dtype=np.int64).ravel()
    assert np.array_equal(q, _golden(model))
    bad = tmp_path / "bad_input0_int32.csv"
    bad.write_text("1,3,x,32\n")
    (tmp_path / "bad_input1_int16.csv").write_text(Path(csv).read_text())
    r = cli("run", model, "--input", bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not an integer" in r.stderr, r.stderr


def test_int32_bias_in_int16x8_conv_per_reference(tmp_path):
    """TFLM reads an int32 bias of an int16x8 conv correctly (qsim agrees); LiteRT reads it as int64
    (its outputs are garbage): refused under the litert profile, and the check reports it."""
    require_module("tflite_micro", "TFLite Micro reference")
    m = qsim.load(_conv16_model(bias_dtype=np.int32))
    rep = m.check(inputs=2, reference="tflm")
    assert rep.ok, rep.first_divergence
    with pytest.raises(QsimError, match="reads such a bias as int64"):
        m.run(np.zeros((1, 3, 3, 2), np.int16), profile="litert")
    # --reference both: TFLM is checked, LiteRT is reported as not compared (not a stop, not a pass)
    require_module("ai_edge_litert", "LiteRT reference")
    rep = m.check(inputs=2, reference="both")
    by_ref = {c.reference: c for c in rep.comparisons}
    assert by_ref["tflm"].ok and by_ref["tflm"].n_inputs == 2
    assert by_ref["litert"].refused.startswith("not compared:") and not by_ref["litert"].ok
    assert "LiteRT" in by_ref["litert"].summary() and "not compared" in by_ref["litert"].summary()
    import subprocess
    import sys
    path = tmp_path / "conv16_int32_bias.tflite"
    path.write_bytes(m.blob)
    r = subprocess.run([sys.executable, "-m", "qsim.cli", "check", str(path), "--reference", "both", "--random", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "not compared" in r.stdout and "reads such a bias as int64" in r.stdout, r.stdout


@pytest.mark.parametrize("din, dout, s_in, zp_in, s_out, zp_out", [
    (np.int16, np.int16, 0.0007, 0, 0.0003, 0), (np.int16, np.int16, 0.0003, 0, 0.0011, 0),
    (np.int8, np.int16, 0.02, -3, 0.0005, 0), (np.int16, np.int8, 0.0005, 0, 0.07, 5)])
def test_integer_requantize_quantize_vs_references(din, dout, s_in, zp_in, s_out, zp_out):
    """QUANTIZE int16 -> int16 (up and down in scale), int8 -> int16, int16 -> int8 vs both references."""
    require_module("tflite_micro", "TFLite Micro reference")
    require_module("ai_edge_litert", "LiteRT reference")
    from qsim.builder import ModelBuilder
    b = ModelBuilder()
    x = b.add_input("x", (1, 300), din, scale=s_in, zero_point=zp_in)
    y = b.add_tensor("y", (1, 300), dout, scale=s_out, zero_point=zp_out)
    b.add_op("QUANTIZE", [x], [y])
    b.mark_output(y)
    rep = qsim.load(b.build()).check(inputs=3, reference="both")
    assert rep.ok and {r["reference"] for r in rep.rows} == {"litert", "tflm"}, rep.first_divergence
