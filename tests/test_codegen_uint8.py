"""`qsim codegen` on uint8 (old converter QUANTIZED_UINT8) models: the generated C equals LiteRT BUILTIN_REF.

TFLite Micro has no uint8 kernels for these ops, so the goldens are LiteRT BUILTIN_REF's own runs
(every op output read back with experimental_preserve_all_tensors), never qsim's.

* Every uint8 op of ``qsim.builder.UINT8_SINGLE_OPS`` the C runs, as a single-op model from
  ``qsim.builder.uint8_model`` at fixed seeds (chosen so that centred weights that fit int8 and
  weights that need a filter offset both occur: the kernel paths are asserted), built with
  -fsanitize=address,undefined and -DQK_TRACE: graph outputs AND every op's output equal LiteRT's.
* AVERAGE_POOL_2D on an exact tie with a negative int8-twin sum (uint8 rounds it up, int8 would
  round it away from zero), and a FULLY_CONNECTED with exact real-scale ties (LiteRT's std::round).
* A conv -> depthwise -> average pool -> reshape -> FC -> softmax model (and a second chain with
  ADD, MAX_POOL_2D, CONCATENATION, LOGISTIC, QUANTIZE to int8): native -O2 via the generated
  Makefile, traced op by op, ``make check`` against qsim's expected files, and on Cortex-M4 under QEMU.
* Refusals name the op / tensor: DEQUANTIZE's float output, --rounding single, --kernels cmsis-nn,
  a CONCATENATION LiteRT rescales in float32.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import qsim
from conftest import require_module
from qsim.builder import ModelBuilder, uint8_model
from qsim.codegen import generate
from qsim.codegen.emit import KERNEL_SOURCES
from qsim import ir
from qsim.errors import QsimError
from qsim.loader import load_bytes
from test_codegen import make, need_tool, sanitizer_build_failed
from test_codegen_cortexm import run_qemu

WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
SANITIZE = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
# (op, seed, the kernel path the seed's layer must take: "" = the op's only C path)
SINGLE = [("CONV_2D", 1, "conv_offsets"), ("CONV_2D", 2, "conv_im2col"), ("CONV_2D", 0, "conv_1x1"),
          ("DEPTHWISE_CONV_2D", 1, "dw_offsets"), ("DEPTHWISE_CONV_2D", 0, "dw_channel_major"),
          ("FULLY_CONNECTED", 0, "fc_real"), ("FULLY_CONNECTED", 3, "fc_real"),
          ("ADD", 0, ""), ("ADD", 1, ""), ("AVERAGE_POOL_2D", 0, ""), ("AVERAGE_POOL_2D", 1, ""),
          ("MAX_POOL_2D", 0, ""), ("SOFTMAX", 0, ""), ("SOFTMAX", 1, ""), ("LOGISTIC", 0, ""),
          ("CONCATENATION", 0, ""), ("RESHAPE", 0, ""), ("QUANTIZE", 0, ""), ("QUANTIZE", 1, "")]
CHAIN = ["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
CHAIN2 = ["ADD", "MAX_POOL_2D", "CONCATENATION", "CONV_2D", "LOGISTIC", "QUANTIZE"]


@pytest.fixture(scope="module", autouse=True)
def _tools():
    require_module("ai_edge_litert", "LiteRT reference")
    need_tool("gcc")
    need_tool("make")


def _samples(g: ir.Graph, n: int, seed: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, 256, g.tensors[t].shape).astype(g.tensors[t].dtype) for t in g.inputs]
            for _ in range(n)]


def _write(path: Path, samples) -> None:
    path.write_bytes(b"".join(np.ascontiguousarray(a).tobytes() for s in samples for a in s))


def _litert(blob: bytes, samples, tensors) -> list[dict[int, np.ndarray]]:
    from qsim.refrun import LiteRTRunner
    runner = LiteRTRunner(blob)
    return [runner.run(s, tensors) for s in samples]


def _bytes(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def _compare(d: Path, g: ir.Graph, blob: bytes, samples, trace: bool) -> None:
    """output.bin (and trace.bin: every op's output, op order) vs LiteRT BUILTIN_REF, byte for byte."""
    outs = [op.outputs[0] for op in g.operators]
    refs = _litert(blob, samples, list(g.outputs) + outs)
    got = np.fromfile(d / "output.bin", np.uint8).reshape(len(samples), -1)
    for k, ref in enumerate(refs):
        want = np.concatenate([_bytes(ref[t]) for t in g.outputs])
        diff = np.flatnonzero(got[k] != want)
        assert diff.size == 0, f"sample {k}: output byte {diff[0]}: C {got[k][diff[0]]} vs LiteRT {want[diff[0]]}"
    if not trace:
        return
    tr = np.fromfile(d / "trace.bin", np.uint8)
    sizes = [g.tensors[t].nbytes for t in outs]
    assert tr.size == len(samples) * sum(sizes)
    pos = 0
    for k, ref in enumerate(refs):
        for op, t, n in zip(g.operators, outs, sizes):
            mine, want = tr[pos:pos + n], _bytes(ref[t])
            pos += n
            diff = np.flatnonzero(mine != want)
            assert diff.size == 0, (f"sample {k}, op #{op.index} {op.opcode} -> '{g.tensors[t].name}': byte "
                                    f"{diff[0]}: C {mine[diff[0]]} vs LiteRT {want[diff[0]]}")


@pytest.fixture(scope="module")
def kernel_objects(tmp_path_factory) -> Path:
    """qkernels.c / qkernels_int16.c compiled once with the sanitizers (they do not depend on the model)."""
    d = tmp_path_factory.mktemp("qk_asan")
    generate(load_bytes(uint8_model(["RESHAPE"], 0)), d, name="k")
    for src in KERNEL_SOURCES:
        r = subprocess.run(["gcc", *WARN, *SANITIZE, "-c", src], cwd=d, capture_output=True, text=True, timeout=600)
        sanitizer_build_failed(r)
        assert r.returncode == 0, r.stderr
    return d


def _sanitized_trace_run(blob: bytes, d: Path, objs: Path, samples, kernel: str | None = None):
    g = load_bytes(blob)
    res = generate(g, d, name="m")
    if kernel is not None:
        assert [l.kernel for l in res.layers if l.kernel or l.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D",
                "FULLY_CONNECTED")] == [kernel], [(l.opcode, l.kernel) for l in res.layers]
    objects = [str(objs / (Path(s).stem + ".o")) for s in KERNEL_SOURCES]
    r = subprocess.run(["gcc", *WARN, *SANITIZE, "-DQK_TRACE", "-o", "m_asan", "main.c", "m.c", "m_weights.c",
                        *objects], cwd=d, capture_output=True, text=True, timeout=600)
    sanitizer_build_failed(r)
    assert r.returncode == 0, r.stderr
    _write(d / "input.bin", samples)
    r = subprocess.run(["./m_asan", "input.bin", "output.bin"], cwd=d, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    _compare(d, g, blob, samples, trace=True)
    return res


@pytest.mark.parametrize("op,seed,kernel", SINGLE, ids=[f"{o}-{s}" for o, s, _ in SINGLE])
def test_single_op_equals_litert_sanitized_and_traced(op, seed, kernel, tmp_path, kernel_objects):
    blob = uint8_model([op], seed)
    g = load_bytes(blob)
    _sanitized_trace_run(blob, tmp_path, kernel_objects, _samples(g, 3, seed),
                         kernel if op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") else None)


def test_average_pool_tie_rounds_up_as_uint8(tmp_path, kernel_objects):
    """Window (0, 1): uint8 averages 0.5 up to 1; the int8 twin's -255/2 would round away to -128 (uint8 0)."""
    b = ModelBuilder()
    x = b.add_input("x", (1, 1, 6, 1), np.uint8, scale=0.1, zero_point=7)
    y = b.add_tensor("y", (1, 1, 3, 1), np.uint8, scale=0.1, zero_point=7)
    b.add_op("AVERAGE_POOL_2D", [x], [y], ir.Pool2DOptions("VALID", 2, 2, 1, 2))
    b.mark_output(y)
    blob = b.build()
    samples = [[np.array([0, 1, 2, 3, 100, 101], np.uint8).reshape(1, 1, 6, 1)]]
    ref = _litert(blob, samples, [y])
    assert _bytes(ref[0][y]).tolist() == [1, 3, 101]  # ties up: the case this test is about
    _sanitized_trace_run(blob, tmp_path, kernel_objects, samples)


def test_fully_connected_exact_ties_round_as_litert(tmp_path, kernel_objects):
    """Real scale exactly 0.5: odd accumulators are ties, which LiteRT's std::round sends away from zero."""
    rng = np.random.default_rng(1)
    b = ModelBuilder()
    x = b.add_input("x", (1, 4), np.uint8, scale=0.5, zero_point=128)
    w = b.add_const("w", rng.integers(0, 256, (8, 4)), scale=0.5, zero_point=130, dtype=np.uint8)
    bias = b.add_const("b", rng.integers(-9, 9, 8), scale=0.25, zero_point=0, dtype=np.int32)
    y = b.add_tensor("y", (1, 8), np.uint8, scale=0.5, zero_point=128)
    b.add_op("FULLY_CONNECTED", [x, w, bias], [y], ir.FullyConnectedOptions())
    b.mark_output(y)
    blob = b.build()
    g = load_bytes(blob)
    _sanitized_trace_run(blob, tmp_path, kernel_objects, _samples(g, 6, 5), "fc_real")


def test_multi_op_native_trace_and_make_check(tmp_path):
    """conv -> dw -> avgpool -> FC -> softmax: the generated Makefile's -O2 and -DQK_TRACE builds,
    `make check` on qsim's expected files, and every op output vs LiteRT's."""
    blob = uint8_model(CHAIN, 4, shape=(1, 8, 8, 3))
    g = load_bytes(blob)
    samples = _samples(g, 3, 3)
    res = qsim.load(blob).codegen(tmp_path, name="m", inputs=np.stack([s[0] for s in samples]))
    assert res.check_samples == 3
    # centred weights inside int8 (conv) and outside (depthwise: filter offset), LiteRT's real-scale FC
    assert {l.kernel for l in res.layers} >= {"conv_im2col", "dw_offsets", "fc_real"}, [l.kernel for l in res.layers]
    make(tmp_path, "check")  # output.bin and trace.bin equal qsim's (litert profile) expectations
    _compare(tmp_path, g, blob, samples, trace=True)  # ... and LiteRT's own tensors


def test_second_chain_sanitized_and_traced(tmp_path, kernel_objects):
    """ADD (second uint8 input) -> max pool -> concatenation -> conv (planned out of place) -> logistic -> QUANTIZE."""
    blob = uint8_model(CHAIN2, 4, shape=(1, 8, 8, 3))
    _sanitized_trace_run(blob, tmp_path, kernel_objects, _samples(load_bytes(blob), 3, 4))


def test_cortex_m4_qemu_equals_litert(tmp_path):
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        need_tool(tool)
    blob = uint8_model(CHAIN, 4, shape=(1, 8, 8, 3))  # conv_im2col: the DSP (SXTB16/SMLAD) path on the M4
    g = load_bytes(blob)
    generate(g, tmp_path, name="m", target="cortex-m4")
    make(tmp_path)
    samples = _samples(g, 3, 7)
    _write(tmp_path / "input.bin", samples)
    run_qemu(tmp_path, "m.elf")
    _compare(tmp_path, g, blob, samples, trace=False)


def _refusal(blob_or_graph, tmp_path, **kw) -> str:
    with pytest.raises(QsimError) as e:
        generate(blob_or_graph, tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()  # refused before anything is written
    return str(e.value)


def test_refusals_name_the_op_and_tensor(tmp_path):
    msg = _refusal(load_bytes(uint8_model(["DEQUANTIZE"], 0)), tmp_path)
    assert "DEQUANTIZE" in msg and "dequantize_0" in msg and "float32" in msg
    conv = load_bytes(uint8_model(["CONV_2D"], 0))
    assert "--rounding double --kernels qsim" in _refusal(conv, tmp_path, rounding="single")
    assert "--rounding double --kernels qsim" in _refusal(conv, tmp_path, kernels="cmsis-nn")
    b = ModelBuilder()
    x1 = b.add_input("a", (1, 4), np.uint8, scale=0.1, zero_point=3)
    x2 = b.add_input("b", (1, 4), np.uint8, scale=0.2, zero_point=9)
    y = b.add_tensor("cat", (1, 8), np.uint8, scale=0.1, zero_point=3)
    b.add_op("CONCATENATION", [x1, x2], [y], ir.ConcatenationOptions(1))
    b.mark_output(y)
    msg = _refusal(load_bytes(b.build()), tmp_path)
    assert "op #0 CONCATENATION" in msg and "'b'" in msg and "float32" in msg
