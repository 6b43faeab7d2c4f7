"""`qsim codegen` on int16x8 models (int16 activations, zero point 0; int8 per-channel weights; int64 bias).

* The C int64 fixed point (qkernels_int16.c ``qk_mbqm64`` / ``qk_requantize64``, both roundings) equals
  ``qsim.fixedpoint.multiply_by_quantized_multiplier_int64`` / ``requantize_int64`` on the same edge rows.
* Every SEANet layer model (../shared/models/seanet) generated, built with gcc and run on its golden
  input reproduces the golden file (the LiteRT interpreter's output) exactly; where TFLite Micro differs
  from the golden file (leaky_relu3/18/19, README of ../shared/models) it equals TFLite Micro's own output.
* Single-op int16x8 models written by qsim.builder, one per supported op, equal TFLite Micro on seeded
  random inputs, built with -fsanitize=address,undefined.
* SEANet conv + add (+ transpose_conv) on Cortex-M4 under QEMU equal TFLite Micro.
* int16 ops without a C kernel are refused by name, all at once.
"""
from __future__ import annotations

import glob
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_MODELS, require_module, skip_or_fail
from qsim import fixedpoint as fp
from qsim import ir
from qsim.codegen import generate
from qsim.errors import QsimError
from qsim.interpreter import prepare_graph
from qsim.loader import load, load_bytes
from test_codegen import make, need_tool, sanitizer_build_failed
from test_codegen_cortexm import run_qemu
from test_int16_ops import random_sets, single_op
from test_int16x8 import TFLM_DIFFERS, _golden, dw16, fc16, tconv_model

TEMPLATES = Path(__file__).resolve().parents[1] / "codegen" / "templates"
SEANET_OPS = ["add", "conv", "leaky_relu", "pad", "quantize", "strided_slice", "sub", "transpose_conv"]
WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
DTYPES = {"int8": np.int8, "int16": np.int16, "int32": np.int32}


def _gcc(cwd: Path, out: str, srcs, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(["gcc", *WARN, *flags, "-o", out, *srcs], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def _run(build_dir: Path, exe: str, samples, out_dtype) -> np.ndarray:
    """Run the harness on samples (each a list of input arrays, written in their own dtype)."""
    with open(build_dir / "input.bin", "wb") as f:
        for s in samples:
            for a in s:
                f.write(np.ascontiguousarray(a).tobytes())
    r = subprocess.run([str(build_dir / exe), "input.bin", "output.bin"], cwd=build_dir, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return np.fromfile(build_dir / "output.bin", dtype=out_dtype).reshape(len(samples), -1)


def _tflm(model, samples) -> np.ndarray:
    """Graph output 0 of TFLite Micro's Python runtime, per sample (its own dtype)."""
    runtime = require_module("tflite_micro.python.tflite_micro.runtime", "TFLM reference")
    arena = 16 << 20  # transpose_conv needs more than the default
    it = (runtime.Interpreter.from_bytes(model, arena_size=arena) if isinstance(model, (bytes, bytearray))
          else runtime.Interpreter.from_file(str(model), arena_size=arena))
    rows = []
    for s in samples:
        for k, a in enumerate(s):
            it.set_input(a, k)
        it.invoke()
        rows.append(np.asarray(it.get_output(0)).reshape(-1).copy())
    return np.stack(rows)


def _assert_equal(got, want, what):
    diff = np.flatnonzero(np.asarray(got).ravel() != np.asarray(want).ravel())
    assert np.asarray(got).size == np.asarray(want).size, f"{what}: sizes {np.asarray(got).size} vs {np.asarray(want).size}"
    assert diff.size == 0, (f"{what}: {diff.size} elements differ, first at {diff[0]}: C {np.asarray(got).ravel()[diff[0]]}"
                            f" vs {np.asarray(want).ravel()[diff[0]]}")


# ------------------------------------------------------------------ int64 fixed point, C vs fixedpoint.py

MBQM64_HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "qkernels_int16.h"
int main(void)
{
    long long x, b, m;
    int s, zp, lo, hi;
    while (scanf("%lld %lld %lld %d %d %d %d", &x, &b, &m, &s, &zp, &lo, &hi) == 7) {
        printf("%ld %ld\n", (long)qk_mbqm64((int64_t)x, (int32_t)m, s),
               (long)qk_requantize64((int64_t)x, (int64_t)b, (int32_t)m, s, zp, lo, hi));
    }
    return 0;
}
"""


def _mbqm64_rows(rounding: str) -> np.ndarray:
    """(x, bias, m0, shift, zp, act_min, act_max) rows: every shift of [-31, 7], multipliers at the Q15
    reduction's edges (0x7FFF0000 and around it, 2^30, 2^31 - 1), exact rounding ties, large |x|, random."""
    rng = np.random.default_rng(12)
    lo, hi = fp.SHIFT_RANGE_INT64
    big = (1 << 62) if rounding == "double" else (1 << 55)  # single: the exact result stays inside int64
    mults = [0, 1, 1 << 30, 0x7FFEFFFF, 0x7FFF0000, 0x7FFF7FFF, 0x7FFF8000, (1 << 31) - 1, 1518500250, 32768, 32767]
    xs = [0, 1, -1, 2, -2, (1 << 47) - 1, -(1 << 47), big, -big, (1 << 31) - 1, -(1 << 31), 123456789012]
    rows = []
    for s in range(lo, hi + 1):
        for m in mults:
            factor, total = (int(v) for v in fp.int64_rescale_factor(m, s, rounding))
            ties = [(k << (total - 1)) // max(factor, 1) for k in (1, -1, 3, -3)] if factor else []
            for x in xs + ties + [int(v) for v in rng.integers(-(1 << 40), 1 << 40, 4)]:
                rows.append((x, int(rng.integers(-(1 << 40), 1 << 40)), m, s, int(rng.integers(-5, 5)), -32768, 32767))
    return np.array(rows, dtype=np.int64)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_c_int64_fixed_point_equals_fixedpoint_py(rounding, tmp_path):
    need_tool("gcc")
    for f in ("qkernels.h", "qkernels.c", "qkernels_int16.h", "qkernels_int16.c"):
        (tmp_path / f).write_text((TEMPLATES / f).read_text())
    (tmp_path / "qk_config.h").write_text("#define QK_SINGLE_ROUNDING 1\n" if rounding == "single" else "\n")
    (tmp_path / "h.c").write_text(MBQM64_HARNESS)
    r = _gcc(tmp_path, "h", ["h.c", "qkernels.c", "qkernels_int16.c"], "-O1", "-fsanitize=undefined", "-fno-sanitize-recover=all")
    sanitizer_build_failed(r)
    assert r.returncode == 0, r.stderr
    rows = _mbqm64_rows(rounding)
    inp = "\n".join(" ".join(str(int(v)) for v in row) for row in rows) + "\n"
    out = subprocess.run([str(tmp_path / "h")], input=inp, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    got = np.array([[int(v) for v in line.split()] for line in out.stdout.splitlines()], dtype=np.int64)
    x, b, m, s, zp, amin, amax = rows.T
    want_m = fp.multiply_by_quantized_multiplier_int64(x, m, s, rounding)
    # the C adds acc + bias wrapping like int64 (|x + b| stays inside int64 for these rows)
    want_r = fp.requantize_int64(x, b, m, s, zp, amin, amax, rounding)
    assert got.shape == (len(rows), 2)
    _assert_equal(got[:, 0], want_m, f"qk_mbqm64 ({rounding}) vs fixedpoint.multiply_by_quantized_multiplier_int64")
    _assert_equal(got[:, 1], want_r, f"qk_requantize64 ({rounding}) vs fixedpoint.requantize_int64")
    assert len(np.unique(want_r)) > 100  # the rows exercise more than the clamp


# ------------------------------------------------------------------ SEANet goldens

SANITIZE = ("-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all")


def _kernel_objects(d: Path, flags) -> list[str]:
    """qkernels.c / qkernels_int16.c compiled once with ``flags`` (double rounding) into ``d``."""
    need_tool("gcc")
    for f in ("qkernels.h", "qkernels.c", "qkernels_int16.h", "qkernels_int16.c"):
        (d / f).write_text((TEMPLATES / f).read_text())
    (d / "qk_config.h").write_text("\n")
    for src in ("qkernels.c", "qkernels_int16.c"):
        r = subprocess.run(["gcc", *WARN, *flags, "-c", src], cwd=d, capture_output=True, text=True, timeout=600)
        sanitizer_build_failed(r)
        assert r.returncode == 0, r.stderr
    return [str(d / "qkernels.o"), str(d / "qkernels_int16.o")]


@pytest.fixture(scope="module")
def sanitized_objects(tmp_path_factory):
    """The kernels under ASan/UBSan, linked into every SEANet and single-op build."""
    return _kernel_objects(tmp_path_factory.mktemp("qk_asan"), SANITIZE)


def _csv_inputs(model: Path) -> list[np.ndarray]:
    g = load(model)
    arrays = []
    for k, t in enumerate(g.inputs):
        (f,) = glob.glob(str(model.with_suffix("")) + f"_input{k}_*.csv")
        dtype = DTYPES[f.rsplit("_", 1)[1][:-4]]
        arrays.append(np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=1).astype(dtype).reshape(g.tensors[t].shape))
    return arrays


def _seanet_models(op: str) -> list[Path]:
    files = sorted((SHARED_MODELS / "seanet" / op).glob("*.tflite"))
    if not files:
        skip_or_fail("../shared/models/seanet holds no models")
    return files


@pytest.mark.parametrize("op", SEANET_OPS)
def test_seanet_goldens_in_c(op, sanitized_objects, tmp_path):
    """Each model of the op folder, built with ASan/UBSan: generated C on its golden input == the golden file (TFLM where
    TFLM differs from it, checked against TFLite Micro itself) and == qsim's tflm profile."""
    for model in _seanet_models(op):
        d = tmp_path / model.stem
        g = load(model)
        res = generate(model, d, name=model.stem)
        assert res.layers[0].opcode == g.operators[0].opcode
        srcs = ["main.c", f"{model.stem}.c", f"{model.stem}_weights.c", *sanitized_objects]
        r = _gcc(d, "run", srcs, *SANITIZE)
        assert r.returncode == 0, f"{model.name}: {r.stderr}"
        x = _csv_inputs(model)
        out_dtype = g.tensors[g.outputs[0]].dtype
        got = _run(d, "run", [x], out_dtype)
        mine = prepare_graph(g, "tflm").run(x)[g.outputs[0]]
        _assert_equal(got, mine, f"{model.name}: C vs qsim tflm")
        if model.stem in TFLM_DIFFERS.get(op, []):
            assert np.count_nonzero(got.ravel() != _golden(model)) > 0  # TFLM's known 1-LSB difference
            _assert_equal(got, _tflm(model, [x]), f"{model.name}: C vs TFLite Micro")
        else:
            _assert_equal(got, _golden(model), f"{model.name}: C vs golden file")


# ------------------------------------------------------------------ single-op models vs TFLM, ASan/UBSan

def _single_op_models() -> dict[str, bytes]:
    A = ir.ActivationOptions
    m = {}
    m["FULLY_CONNECTED"] = fc16(per_channel=True, rows=4)
    m["FULLY_CONNECTED_relu"] = fc16(per_channel=False, act="RELU", bias=False)
    m["DEPTHWISE_CONV_2D"] = dw16()
    m["DEPTHWISE_CONV_2D_m2_s2"] = dw16(mult=2, stride=2, padding="VALID")
    m["TRANSPOSE_CONV"] = tconv_model(np.int16, (2, 5), (3, 4), (1, 2), "SAME", 4, 3, act="RELU6")
    m["MUL"] = single_op("MUL", [(1, 4, 5), (1, 1, 5)], (1, 4, 5), A("NONE"), scales=[0.01, 0.01], out_scale=0.3)
    m["MAXIMUM"] = single_op("MAXIMUM", [(1, 3, 4), (1, 3, 4)], (1, 3, 4), scales=[0.01, 0.01], out_scale=0.01)
    m["MINIMUM"] = single_op("MINIMUM", [(1, 3, 4), (1, 1, 4)], (1, 3, 4), scales=[0.01, 0.01], out_scale=0.01)
    m["ADD_broadcast"] = single_op("ADD", [(1, 3, 4), (1, 1, 4)], (1, 3, 4), A("RELU"), scales=[0.01, 0.003],
                                   out_scale=0.02)
    pool = ir.Pool2DOptions(padding="SAME", stride_h=2, stride_w=2, filter_h=3, filter_w=3, activation="NONE")
    m["MAX_POOL_2D"] = single_op("MAX_POOL_2D", [(1, 7, 7, 3)], (1, 4, 4, 3), pool, scales=[0.001], out_scale=0.001)
    m["AVERAGE_POOL_2D"] = single_op("AVERAGE_POOL_2D", [(1, 7, 7, 3)], (1, 4, 4, 3), pool, scales=[0.001],
                                     out_scale=0.001)
    m["RESHAPE"] = single_op("RESHAPE", [(1, 4, 6)], (1, 24), ir.ReshapeOptions((1, 24)),
                             consts=[np.array([1, 24], np.int32)])
    m["CONCATENATION"] = single_op("CONCATENATION", [(1, 2, 3), (1, 2, 5)], (1, 2, 8),
                                   ir.ConcatenationOptions(axis=2), scales=[0.01, 0.01], out_scale=0.01)
    m["TRANSPOSE"] = single_op("TRANSPOSE", [(1, 3, 4, 5)], (1, 5, 3, 4), consts=[np.array([0, 3, 1, 2], np.int32)])
    m["MEAN"] = single_op("MEAN", [(1, 4, 6, 3)], (1, 1, 1, 3), ir.ReducerOptions(True), scales=[0.001],
                          out_scale=0.0007, consts=[np.array([1, 2], np.int32)])
    m["SOFTMAX"] = single_op("SOFTMAX", [(1, 6, 40)], (1, 6, 40), ir.SoftmaxOptions(1.0), scales=[0.0004],
                             out_scale=1 / 32768)
    m["RELU6"] = single_op("RELU6", [(1, 8, 8)], (1, 8, 8), scales=[0.0007], out_scale=0.0003)
    m["LOGISTIC"] = single_op("LOGISTIC", [(1, 16, 64)], (1, 16, 64), scales=[0.0003], out_scale=2.0 ** -15)
    m["TANH"] = single_op("TANH", [(1, 16, 64)], (1, 16, 64), scales=[2.0 ** -12], out_scale=2.0 ** -15)
    m["QUANTIZE_int16_int8"] = single_op("QUANTIZE", [(1, 40)], (1, 40), scales=[0.001], out_scale=0.1, out_zp=3,
                                         out_dtype=np.int8)
    return m


SINGLE_OPS = _single_op_models()


@pytest.mark.parametrize("name", sorted(SINGLE_OPS))
def test_single_op_int16_vs_tflm_sanitized(name, sanitized_objects, tmp_path):
    """Generated C (gcc -O1 -fsanitize=address,undefined) == TFLite Micro == qsim tflm on random inputs."""
    blob = SINGLE_OPS[name]
    g = load_bytes(blob)
    generate(g, tmp_path, name="m")
    srcs = ["main.c", "m.c", "m_weights.c", *sanitized_objects]
    r = _gcc(tmp_path, "m_asan", srcs, *SANITIZE)
    sanitizer_build_failed(r)
    assert r.returncode == 0, r.stderr
    sets = random_sets(blob, 3, 5) + random_sets(blob, 1, 6, -3000, 3000)
    out_dtype = g.tensors[g.outputs[0]].dtype
    got = _run(tmp_path, "m_asan", sets, out_dtype)
    _assert_equal(got, _tflm(blob, sets), f"{name}: C vs TFLite Micro")
    pg = prepare_graph(g, "tflm")
    want = np.stack([pg.run(s)[g.outputs[0]].reshape(-1) for s in sets])
    _assert_equal(got, want, f"{name}: C vs qsim tflm")
    assert len(np.unique(got)) > 3  # not a constant output


def test_transpose_conv_runtime_shape_checked(tmp_path):
    """A runtime output_shape input that differs from the stored shape: invoke fails (exit 4), no output."""
    need_tool("gcc")
    (model,) = [p for p in _seanet_models("transpose_conv") if p.stem == "transpose_conv0"]
    g = load(model)
    generate(g, tmp_path, name="m")
    make(tmp_path, "host")
    good, x = _csv_inputs(model)
    _run(tmp_path, "m_run", [[good, x]], np.int16)
    with open(tmp_path / "input.bin", "wb") as f:
        f.write((good + 1).tobytes() + x.tobytes())
    r = subprocess.run([str(tmp_path / "m_run"), "input.bin", "output.bin"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 4, r.stdout + r.stderr


# ------------------------------------------------------------------ make check, Cortex-M4 under QEMU

def test_make_check_int16(tmp_path):
    """`--inputs`: input.bin / expected.bin / expected_trace.bin in int16 bytes; `make check` passes."""
    need_tool("make")
    import qsim
    model = SHARED_MODELS / "seanet" / "conv" / "conv1.tflite"
    if not model.is_file():
        skip_or_fail("../shared/models/seanet holds no models")
    m = qsim.load(model)
    m.codegen(tmp_path, name="c1", inputs=m.random_inputs(2, 4))
    assert (tmp_path / "expected.bin").stat().st_size == 2 * m.graph.tensors[m.graph.outputs[0]].nbytes
    make(tmp_path, "check")


@pytest.mark.parametrize("model", ["conv/conv1", "add/add0", "transpose_conv/transpose_conv0"])
def test_seanet_cortex_m4_qemu_vs_tflm(model, tmp_path):
    for tool in ("make", "arm-none-eabi-gcc", "qemu-system-arm"):
        need_tool(tool)
    path = SHARED_MODELS / "seanet" / f"{model}.tflite"
    if not path.is_file():
        skip_or_fail("../shared/models/seanet holds no models")
    g = load(path)
    name = path.stem
    generate(path, tmp_path, name=name, target="cortex-m4")
    make(tmp_path)
    samples = [_csv_inputs(path)]
    rng = np.random.default_rng(7)
    for _ in range(2):  # plus random inputs of each input's dtype (a runtime output_shape keeps its value)
        samples.append([a if a.dtype == np.int32 and a.size == 4 else
                        rng.integers(np.iinfo(a.dtype).min, np.iinfo(a.dtype).max, a.shape, endpoint=True).astype(a.dtype)
                        for a in samples[0]])
    with open(tmp_path / "input.bin", "wb") as f:
        for s in samples:
            for a in s:
                f.write(a.tobytes())
    run_qemu(tmp_path, f"{name}.elf")
    got = np.fromfile(tmp_path / "output.bin", dtype=g.tensors[g.outputs[0]].dtype).reshape(len(samples), -1)
    _assert_equal(got, _tflm(path, samples), f"{model} on Cortex-M4/QEMU vs TFLite Micro")


# ------------------------------------------------------------------ refusals

def _dequantize_chain() -> bytes:
    """int16 MEAN -> SOFTMAX, each DEQUANTIZEd to a float32 graph output."""
    from qsim.builder import ModelBuilder
    b = ModelBuilder(description="int16 dequantize")
    x = b.add_input("x", (1, 4, 8), np.int16, scale=0.001, zero_point=0)
    y = b.add_tensor("y", (1, 8), np.int16, scale=0.001, zero_point=0)
    b.add_op("MEAN", [x, b.add_const("axes", np.array([1], np.int32))], [y], ir.ReducerOptions(False))
    z = b.add_tensor("z", (1, 8), np.int16, scale=1 / 32768, zero_point=0)
    b.add_op("SOFTMAX", [y], [z], ir.SoftmaxOptions(1.0))
    for k, src in enumerate((y, z)):
        f = b.add_tensor(f"f{k}", (1, 8), np.float32)
        b.add_op("DEQUANTIZE", [src], [f])
        b.mark_output(f)
    return b.build()


def _dequantize_all_values(dtype) -> tuple[bytes, np.ndarray]:
    """DEQUANTIZE of every value of ``dtype`` (one sample), a scale with a full 24-bit mantissa and a
    zero point; and that sample."""
    from qsim.builder import ModelBuilder
    info = np.iinfo(dtype)
    values = np.arange(info.min, info.max + 1).astype(dtype).reshape(1, -1)
    b = ModelBuilder(description="dequantize all")
    x = b.add_input("x", values.shape, dtype, scale=0.0123456789, zero_point=17 if dtype == np.int16 else -5)
    f = b.add_tensor("f", values.shape, np.float32)
    b.add_op("DEQUANTIZE", [x], [f])
    b.mark_output(f)
    return b.build(), values


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).reshape(-1)


def test_dequantize_to_float_outputs_vs_tflm_sanitized(sanitized_objects, tmp_path):
    """DEQUANTIZE int16 (after int16 MEAN / SOFTMAX) and int8 / int16 over every input value -> float32
    graph outputs: the C's float32 bits (ASan/UBSan build) == TFLite Micro's == qsim tflm."""
    blob = _dequantize_chain()
    g = load_bytes(blob)
    generate(g, tmp_path / "chain", name="m")
    assert "const int16_t *input, float *output0, float *output1" in (tmp_path / "chain" / "m.h").read_text()
    r = _gcc(tmp_path / "chain", "m_asan", ["main.c", "m.c", "m_weights.c", *sanitized_objects], *SANITIZE)
    assert r.returncode == 0, r.stderr
    sets = random_sets(blob, 3, 5) + random_sets(blob, 1, 6, -3000, 3000)
    got = _run(tmp_path / "chain", "m_asan", sets, np.float32)  # [sample][f0 | f1]
    runtime = require_module("tflite_micro.python.tflite_micro.runtime", "TFLM reference")
    it = runtime.Interpreter.from_bytes(blob)
    pg = prepare_graph(g, "tflm")
    for k, s in enumerate(sets):
        it.set_input(s[0], 0)
        it.invoke()
        want = np.concatenate([np.asarray(it.get_output(j)).reshape(-1) for j in range(2)])
        mine = pg.run(s)
        _assert_equal(_bits(got[k]), _bits(want), f"sample {k}: C vs TFLite Micro")
        _assert_equal(_bits(got[k]), _bits(np.concatenate([mine[t].reshape(-1) for t in g.outputs])),
                      f"sample {k}: C vs qsim")
    for dtype in (np.int8, np.int16):
        blob, values = _dequantize_all_values(dtype)
        d = tmp_path / np.dtype(dtype).name
        generate(load_bytes(blob), d, name="m")
        r = _gcc(d, "m_asan", ["main.c", "m.c", "m_weights.c", *sanitized_objects], *SANITIZE)
        assert r.returncode == 0, r.stderr
        got = _run(d, "m_asan", [[values]], np.float32)
        _assert_equal(_bits(got), _bits(_tflm(blob, [[values]])), f"{np.dtype(dtype).name} every value: C vs TFLM")
        assert len(np.unique(got)) == values.size  # every input value its own float


def test_dequantize_cortex_m4_qemu(tmp_path):
    """int16 DEQUANTIZE of every int16 value on Cortex-M4 (soft-float multiply) in QEMU == TFLite Micro, bit for bit."""
    for tool in ("make", "arm-none-eabi-gcc", "qemu-system-arm"):
        need_tool(tool)
    blob, values = _dequantize_all_values(np.int16)
    generate(load_bytes(blob), tmp_path, name="dq", target="cortex-m4")
    make(tmp_path)
    (tmp_path / "input.bin").write_bytes(values.tobytes())
    run_qemu(tmp_path, "dq.elf")
    got = np.fromfile(tmp_path / "output.bin", dtype=np.float32)
    _assert_equal(_bits(got), _bits(_tflm(blob, [[values]])), "int16 DEQUANTIZE on Cortex-M4/QEMU vs TFLite Micro")


def _float_edge_model(out_dtype, scale: float, zp: int, n: int) -> bytes:
    """float32 input -> QUANTIZE -> q (graph output) -> DEQUANTIZE -> float32 graph output."""
    from qsim.builder import ModelBuilder
    b = ModelBuilder(description="float edges")
    x = b.add_input("x", (1, n), np.float32)
    q = b.add_tensor("q", (1, n), out_dtype, scale=scale, zero_point=zp)
    b.add_op("QUANTIZE", [x], [q])
    f = b.add_tensor("f", (1, n), np.float32)
    b.add_op("DEQUANTIZE", [q], [f])
    b.mark_output(q)
    b.mark_output(f)
    return b.build()


def _hostile_floats(scale: float, n: int, seed: int) -> np.ndarray:
    """Exact ties (k + 1/2) * scale, their float neighbours, values past the output range and past 2^31 * scale,
    +-inf, NaN, -0.0, subnormals, random; n of them (float32)."""
    rng = np.random.default_rng(seed)
    k = np.arange(-40, 40, dtype=np.float64)
    ties = ((k + 0.5) * scale).astype(np.float32)
    special = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 1e-45, -1e-45, 1e-40, 3e38, -3e38,
                        2.0 ** 31 * scale, -(2.0 ** 31) * scale, 2.0 ** 32 * scale, 1e9, -1e9, 70000 * scale,
                        -70000 * scale, 0.49999997 * scale, -0.49999997 * scale], np.float32)
    rand = rng.uniform(-40000 * scale, 40000 * scale, n).astype(np.float32)
    v = np.concatenate([special, ties, np.nextafter(ties, np.float32(np.inf)),
                        np.nextafter(ties, np.float32(-np.inf)), rand])[:n]
    return v.reshape(1, n)


FLOAT_EDGES = [(np.int16, 0.25, -3), (np.int16, 0.0123456789, 0), (np.int8, 0.0123456789, 5), (np.int8, 0.5, -128)]


def _float_edge_rows(model, x) -> list:
    from test_codegen_rnn import tflm_sequence
    return tflm_sequence(model, [[x]], 2)


@pytest.mark.parametrize("dtype, scale, zp", FLOAT_EDGES)
def test_float_quantize_and_dequantize_vs_tflm_sanitized(dtype, scale, zp, sanitized_objects, tmp_path):
    """A float32 graph input through QUANTIZE (int8 / int16: ties, out-of-range, inf, NaN, subnormals; the
    references' x86 int cast and wrapping zero-point add) and back through DEQUANTIZE: the C's integer output
    and float32 bits (ASan/UBSan) == TFLite Micro's == qsim tflm (== LiteRT's, where it runs the model)."""
    from test_codegen_rnn import read_outputs, write_samples
    n = 512
    blob = _float_edge_model(dtype, scale, zp, n)
    g = load_bytes(blob)
    generate(g, tmp_path, name="m")
    assert f"const float *input, {'int16_t' if dtype == np.int16 else 'int8_t'} *output0, float *output1" in \
        (tmp_path / "m.h").read_text()
    r = _gcc(tmp_path, "m_asan", ["main.c", "m.c", "m_weights.c", *sanitized_objects], *SANITIZE)
    assert r.returncode == 0, r.stderr
    x = _hostile_floats(scale, n, 3)
    write_samples(tmp_path / "input.bin", [[x]])
    r = subprocess.run(["./m_asan", "input.bin", "output.bin"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    (q, f), = read_outputs(tmp_path / "output.bin", g, 1)
    (tq, tf), = _float_edge_rows(blob, x)
    _assert_equal(q, tq, "QUANTIZE: C vs TFLite Micro")
    _assert_equal(_bits(f), _bits(tf), "DEQUANTIZE: C vs TFLite Micro")
    mine = prepare_graph(g, "tflm").run([x])
    _assert_equal(q, mine[g.outputs[0]], "QUANTIZE: C vs qsim")
    from qsim import refrun
    require_module("ai_edge_litert", "LiteRT reference")
    try:  # LiteRT BUILTIN_REF, where it runs the model: the same answers (per-tensor edges)
        lt = refrun.open_in_process("litert", blob).run([x], list(g.outputs))
    except refrun.ReferenceRefused as e:  # LiteRT's int16 DEQUANTIZE takes zero point 0 only
        assert dtype == np.int16 and zp != 0 and "zero_point" in str(e)
    else:
        _assert_equal(q, lt[g.outputs[0]], "QUANTIZE: C vs LiteRT")
        _assert_equal(_bits(f), _bits(lt[g.outputs[1]]), "DEQUANTIZE: C vs LiteRT")
    info = np.iinfo(dtype)
    assert q.min() == info.min and q.max() == info.max and len(np.unique(q)) > 30


def test_float_edges_cortex_m4_qemu(tmp_path):
    """The same float edges on Cortex-M4 (soft-float division and multiply) in QEMU == TFLite Micro on x86."""
    from test_codegen_rnn import read_outputs, write_samples
    for tool in ("make", "arm-none-eabi-gcc", "qemu-system-arm"):
        need_tool(tool)
    dtype, scale, zp = FLOAT_EDGES[0]
    blob = _float_edge_model(dtype, scale, zp, 512)
    g = load_bytes(blob)
    generate(g, tmp_path, name="fe", target="cortex-m4")
    make(tmp_path)
    x = _hostile_floats(scale, 512, 4)
    write_samples(tmp_path / "input.bin", [[x]])
    run_qemu(tmp_path, "fe.elf")
    (q, f), = read_outputs(tmp_path / "output.bin", g, 1)
    (tq, tf), = _float_edge_rows(blob, x)
    _assert_equal(q, tq, "QUANTIZE on Cortex-M4 vs TFLite Micro")
    _assert_equal(_bits(f), _bits(tf), "DEQUANTIZE on Cortex-M4 vs TFLite Micro")


def test_float_consumers_refused_by_name(tmp_path):
    """The C computes float32 only at the graph's edges: a float32 input read by QUANTIZE, a DEQUANTIZE's
    float32 graph output.  An op reading a DEQUANTIZE's output or a float32 input otherwise is named, with
    the float32 graph I/O that leaves, all at once; nothing is written."""
    from qsim.builder import ModelBuilder
    b = ModelBuilder(description="float refusals")
    x = b.add_input("x", (1, 8), np.float32)
    q = b.add_tensor("q", (1, 8), np.int16, scale=0.001, zero_point=0)
    b.add_op("QUANTIZE", [x], [q])
    q2 = b.add_tensor("q2", (1, 8), np.int16, scale=0.001, zero_point=0)
    b.add_op("RELU", [q], [q2])
    f = b.add_tensor("f", (1, 8), np.float32)
    b.add_op("DEQUANTIZE", [q2], [f])
    r = b.add_tensor("r", (1, 8), np.float32)
    b.add_op("RESHAPE", [f, b.add_const("shape", np.array([1, 8], np.int32))], [r], ir.ReshapeOptions((1, 8)))
    b.mark_output(r)
    x2 = b.add_tensor("x2", (1, 8), np.float32)
    b.add_op("RESHAPE", [x, b.add_const("shape2", np.array([1, 8], np.int32))], [x2], ir.ReshapeOptions((1, 8)))
    b.mark_output(x2)
    g = load_bytes(b.build())
    with pytest.raises(QsimError) as e:
        generate(g, tmp_path / "out")
    msg = str(e.value)
    for needle in ("5 problem(s)", "op #3 RESHAPE: reads the float32 output 'f' of a DEQUANTIZE",
                   "op #4 RESHAPE: reads the float32 graph input 'x'", "graph input 'x' is float32",
                   "graph output 'r' is float32", "graph output 'x2' is float32"):
        assert needle in msg, msg
    assert "op #0" not in msg and "op #2" not in msg
    assert not (tmp_path / "out").exists()
