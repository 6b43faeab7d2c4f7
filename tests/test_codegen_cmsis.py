"""`qsim codegen --kernels cmsis-nn`: generated C calling the real CMSIS-NN (../shared/third_party,
upstream sources, never copied into the repository), bit-exact with `qsim run --profile cmsis-nn`
and with TFLite Micro, natively (CMSIS-NN's portable C path) and on Cortex-M4 under QEMU with
(cortex-m4: its DSP path) and without (cortex-m3) the DSP extension.

The arithmetic claim behind the profile (CMSIS-NN's default build computes TFLM's integers) is
also checked at the source: CMSIS-NN's own requantization primitives, compiled from its headers,
against qsim.fixedpoint on random operands, plus the one place its single-rounding build differs.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import zlib

import numpy as np
import pytest

from conftest import REPO, shared_model, skip_or_fail
from qsim import fixedpoint as fp
from qsim import ir
from qsim.errors import QsimError
from qsim.interpreter import prepare_graph
from qsim.loader import load, load_bytes

from qsim.codegen import generate
from test_codegen import (MODELS, assert_equal, image_samples, make, need_tool, qsim_outputs, random_samples,
                          sanitizer_build_failed, tflm_outputs, write_samples)
from test_codegen_ops import CASES, builder

THIRD_PARTY = REPO.parent / "shared" / "third_party"
CMSIS_OPS = {"CONV_2D": "arm_convolve_wrapper_s8(", "DEPTHWISE_CONV_2D": "arm_depthwise_conv_wrapper_s8(",
             "FULLY_CONNECTED": "arm_fully_connected_wrapper_s8(", "AVERAGE_POOL_2D": "arm_avgpool_s8(",
             "MAX_POOL_2D": "arm_max_pool_s8(", "SOFTMAX": "arm_softmax_s8("}


@pytest.fixture(scope="module")
def cmsis_dir():
    d = THIRD_PARTY / "cmsis-nn"
    if not (d / "Include" / "arm_nnfunctions.h").is_file():
        skip_or_fail(f"{d} is absent: the upstream CMSIS-NN copy lives beside the repository in ../shared/third_party")
    return d


@pytest.fixture(scope="module")
def cmsis_make():
    """`make` in a generated directory, reusing the CMSIS-NN libraries (cmsis_nn_host.a,
    cmsis_nn_<mcpu>.a) an earlier build of this module compiled: the library is the same
    for every model, only its compile time would repeat."""
    libs = {}

    def run(d, *goals, **variables):
        for name, path in libs.items():
            if not (d / name).exists():
                shutil.copyfile(path, d / name)
        make(d, *goals, **variables)
        for f in d.glob("cmsis_nn_*.a"):
            libs.setdefault(f.name, f)
    return run


def _generate(model, d, cmsis_dir, samples, **kw):
    """generate(kernels="cmsis-nn") plus what `make check` compares: input.bin, and qsim's outputs
    (expected.bin) and every op's output (expected_trace.bin) under `--profile cmsis-nn`."""
    g = model if isinstance(model, ir.Graph) else (load_bytes(model) if isinstance(model, bytes) else load(model))
    res = generate(g, d, name="m", kernels="cmsis-nn", cmsis_nn_dir=cmsis_dir, force=True, **kw)
    write_samples(d / "input.bin", samples)
    pg = prepare_graph(g, "cmsis-nn")
    runs = [pg.run(s, keep_all=True) for s in samples]
    (d / "expected.bin").write_bytes(b"".join(np.ascontiguousarray(r[t]).tobytes() for r in runs for t in g.outputs))
    (d / "expected_trace.bin").write_bytes(b"".join(np.ascontiguousarray(r[op.outputs[0]]).tobytes()
                                                    for r in runs for op in g.operators))
    return res


def _assert_calls_cmsis(d, g: ir.Graph) -> None:
    """Each op CMSIS-NN implements for these operands is a call of its function in m.c."""
    text = (d / "m.c").read_text()
    for opcode, fn in CMSIS_OPS.items():
        n = sum(op.opcode == opcode for op in g.operators)
        assert text.count(fn) == n, f"{opcode}: {n} op(s) but {text.count(fn)} {fn} call(s)"


@pytest.mark.parametrize("model", sorted(MODELS))
def test_shared_model_host_bit_exact(model, cmsis_dir, cmsis_make, tmp_path):
    """Native build (CMSIS-NN's portable C): outputs and every op's output equal qsim's cmsis-nn
    profile (make check), and the outputs equal TFLite Micro's."""
    need_tool("gcc")
    path = shared_model(model + ".tflite")
    g = load(path)
    samples = random_samples(g, 3, seed=zlib.crc32(model.encode())) + image_samples(g)
    _generate(path, tmp_path, cmsis_dir, samples)
    _assert_calls_cmsis(tmp_path, g)
    cmsis_make(tmp_path, "check")  # output.bin and trace.bin vs qsim --profile cmsis-nn, byte for byte
    got = np.fromfile(tmp_path / "output.bin", dtype=np.int8).reshape(len(samples), -1)
    assert_equal(got, tflm_outputs(path, samples, len(g.outputs)), f"{model} CMSIS-NN C vs TFLM")


def _softmax_model(shape, scale: float, zp: int, beta: float) -> bytes:
    b = builder.ModelBuilder(description="cmsis softmax case")
    x = b.add_input("x", shape, np.int8, scale=scale, zero_point=zp)
    y = b.add_tensor("y", shape, np.int8, scale=1 / 256, zero_point=-128)
    b.add_op("SOFTMAX", [x], [y], ir.SoftmaxOptions(beta=beta))
    b.mark_output(y)
    return b.build()


OP_CASES = [(name, blob) for name, blob in CASES
            if re.match(r"(conv|dw|fc|average_pool|max_pool|add_|mul_|sub_same|inplace_chain)", name)]
OP_CASES += [("softmax_rows", _softmax_model((3, 10), 0.07, 5, 1.0)),
             ("softmax_4d_beta", _softmax_model((1, 2, 3, 40), 0.2, -3, 0.6))]


@pytest.mark.parametrize("case", [c[0] for c in OP_CASES])
def test_single_op_host_bit_exact(case, cmsis_dir, cmsis_make, tmp_path):
    """Strides, dilation, padding, depth multipliers, batches, per-tensor / per-channel weights,
    fused activations, pooling windows, softmax rows; broadcasting ADD/MUL and SUB fall back to
    qsim's kernels in the same build."""
    need_tool("gcc")
    blob = dict(OP_CASES)[case]
    g = load_bytes(blob)
    samples = random_samples(g, 6, seed=zlib.crc32(case.encode()))
    _generate(blob, tmp_path, cmsis_dir, samples)
    _assert_calls_cmsis(tmp_path, g)
    cmsis_make(tmp_path, "check")
    got = np.fromfile(tmp_path / "output.bin", dtype=np.int8).reshape(len(samples), -1)
    assert_equal(got, qsim_outputs(g, samples, "cmsis-nn"), f"{case}: CMSIS-NN C vs qsim cmsis-nn")
    assert_equal(got, tflm_outputs(blob, samples, len(g.outputs)), f"{case}: CMSIS-NN C vs TFLM")


@pytest.mark.parametrize("case", [c[0] for c in OP_CASES if re.match(r"(conv|dw|fc|average|max|softmax)", c[0])])
def test_single_op_cortex_m4_dsp_bit_exact(case, cmsis_dir, cmsis_make, tmp_path):
    """The same cases through CMSIS-NN's DSP code (-mcpu=cortex-m4: SMLAD mat-mult kernels, the
    depthwise 3x3 and multiplier-1 paths, the buffered average pool) under QEMU: outputs equal
    qsim's cmsis-nn profile."""
    for tool in ("make", "arm-none-eabi-gcc", "qemu-system-arm"):
        need_tool(tool)
    blob = dict(OP_CASES)[case]
    g = load_bytes(blob)
    samples = random_samples(g, 3, seed=zlib.crc32(case.encode()) + 1)
    _generate(blob, tmp_path, cmsis_dir, samples, target="cortex-m4")
    cmsis_make(tmp_path, "m.elf", "qk_check")
    r = subprocess.run(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none",
                        "-semihosting-config", "enable=on,target=native", "-kernel", "m.elf"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr
    got = np.fromfile(tmp_path / "output.bin", dtype=np.int8).reshape(len(samples), -1)
    assert_equal(got, qsim_outputs(g, samples, "cmsis-nn"), f"{case}: CMSIS-NN DSP build vs qsim cmsis-nn")


@pytest.mark.parametrize("target,mcpu", [("cortex-m4", "cortex-m4"), ("cortex-m4", "cortex-m3"),
                                         ("cortex-m7", "cortex-m7"), ("cortex-m33", "cortex-m33")])
def test_cortex_m_qemu_with_and_without_dsp(target, mcpu, cmsis_dir, cmsis_make, tmp_path):
    """kws_ref_model (conv, depthwise, average pool, FC, softmax through CMSIS-NN) under QEMU: on the
    MPS2-AN386 board -mcpu=cortex-m4 compiles CMSIS-NN's DSP path (ARM_MATH_DSP, SMLAD) and
    -mcpu=cortex-m3 its portable C; M7 (AN500) and M33 (AN505) their DSP paths.  Outputs and every
    op's output equal qsim's cmsis-nn profile, outputs equal TFLM."""
    for tool in ("make", "arm-none-eabi-gcc", "qemu-system-arm"):
        need_tool(tool)
    path = shared_model("kws_ref_model.tflite")
    g = load(path)
    samples = random_samples(g, 3, seed=41)
    _generate(path, tmp_path, cmsis_dir, samples, target=target)
    cmsis_make(tmp_path, "check-qemu", MCPU=mcpu)
    got = np.fromfile(tmp_path / "output.bin", dtype=np.int8).reshape(len(samples), -1)
    assert_equal(got, tflm_outputs(path, samples), f"kws CMSIS-NN on {mcpu}/QEMU vs TFLM")
    nm = subprocess.run(["arm-none-eabi-nm", str(tmp_path / "m.elf")], capture_output=True, text=True).stdout
    assert "arm_convolve_wrapper_s8" in nm and "qk_conv2d" not in nm  # CMSIS-NN ran the convolutions


def test_sanitizers_clean(cmsis_dir, tmp_path):
    """kws_ref_model (conv, depthwise, average pool, FC, softmax through CMSIS-NN) built with
    -fsanitize=address,undefined, the CMSIS-NN library included: no report, outputs equal qsim's
    cmsis-nn profile.  CMSIS-NN's own sources left-shift negative values (arm_nn_exp_on_negative_values,
    arm_nn_mult_by_power_of_two: undefined in C99, two's complement on every compiler it targets),
    so its library is built without the shift-base check; everything else is checked."""
    need_tool("gcc")
    path = shared_model("kws_ref_model.tflite")
    g = load(path)
    samples = random_samples(g, 2, seed=9)
    _generate(path, tmp_path, cmsis_dir, samples)
    san = "-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all"
    r = subprocess.run(["make", "-s", "-C", str(tmp_path), "m_run", f"CFLAGS={san}",
                        f"CMSIS_NN_CFLAGS={san} -fno-sanitize=shift-base", "LDFLAGS=-fsanitize=address,undefined"],
                       capture_output=True, text=True, timeout=900)
    sanitizer_build_failed(r)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["./m_run", "input.bin", "output.bin"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and "runtime error" not in r.stderr, r.stdout + r.stderr
    got = np.fromfile(tmp_path / "output.bin", dtype=np.int8).reshape(len(samples), -1)
    assert_equal(got, qsim_outputs(g, samples, "cmsis-nn"), "kws CMSIS-NN ASan/UBSan build vs qsim cmsis-nn")


def test_scratch_guard_refuses_a_short_buffer(cmsis_dir, cmsis_make, tmp_path):
    """The generated call asks the target's own arm_*_get_buffer_size before running: a reservation
    edited below it makes NAME_invoke return -(op position + 1) and the harness exit 4, instead of
    CMSIS-NN writing past its scratch."""
    need_tool("gcc")
    path = shared_model("kws_ref_model.tflite")
    g = load(path)
    samples = random_samples(g, 1, seed=3)
    res = _generate(path, tmp_path, cmsis_dir, samples)
    # op 0 is a 10x4 CONV_2D on one input channel: CMSIS-NN's im2col scratch is two columns of
    # 10*4*1 = 40 int16 values (padded to a multiple of 4), 160 bytes, on the portable and DSP paths;
    # op 1, a 3x3 depthwise with padding 1, runs arm_depthwise_conv_3x3_s8, which needs none (the
    # arena still gives it 4 bytes so the context pointer is not NULL).
    assert (res.layers[0].opcode, res.layers[0].scratch_bytes) == ("CONV_2D", 2 * 40 * 2)
    assert (res.layers[1].opcode, res.layers[1].scratch_bytes) == ("DEPTHWISE_CONV_2D", 4)
    c = tmp_path / "m.c"
    text = c.read_text()
    old = f"_get_buffer_size(&cp, &id, &fd, &od) > {res.layers[0].scratch_bytes}) return -1;"
    assert text.count(old) == 1
    c.write_text(text.replace(old, "_get_buffer_size(&cp, &id, &fd, &od) > 0) return -1;"))
    cmsis_make(tmp_path, "host")
    r = subprocess.run(["./m_run", "input.bin", "output.bin"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 4 and "m_invoke returned -1" in r.stdout, r.stdout + r.stderr


# ------------------------------------------------------------------ CMSIS-NN's arithmetic at the source

PRIMITIVES_C = r"""
#include <stdio.h>
#include "arm_nnsupportfunctions.h"
/* stdin: lines "x m shift"; stdout: arm_nn_requantize, arm_nn_doubling_high_mult(x, m),
 * arm_nn_divide_by_power_of_two(x, -shift) (when shift <= 0) */
int main(void)
{
    long x, m, s;
    while (scanf("%ld %ld %ld", &x, &m, &s) == 3) {
        printf("%ld %ld %ld\n", (long)arm_nn_requantize((int32_t)x, (int32_t)m, (int32_t)s),
               (long)arm_nn_doubling_high_mult((int32_t)x, (int32_t)m),
               s <= 0 ? (long)arm_nn_divide_by_power_of_two((int32_t)x, (int32_t)-s) : 0L);
    }
    return 0;
}
"""


def _primitives(cmsis_dir, tmp_path, rows, *defines) -> np.ndarray:
    cc = need_tool("gcc")
    src = tmp_path / "prim.c"
    src.write_text(PRIMITIVES_C)
    exe = tmp_path / ("prim" + "".join(defines).replace("-D", "_"))
    core = THIRD_PARTY / "cmsis-core"
    subprocess.run([cc, "-O2", *defines, f"-I{cmsis_dir / 'Include'}", f"-I{core}", "-o", str(exe), str(src)],
                   check=True, capture_output=True)
    text = "\n".join(f"{x} {m} {s}" for x, m, s in rows) + "\n"
    out = subprocess.run([str(exe)], input=text, capture_output=True, text=True, check=True).stdout
    return np.array([[int(v) for v in line.split()] for line in out.splitlines()], dtype=np.int64)


def _operands(n: int = 4000) -> np.ndarray:
    """(x, M0, shift) in the ranges TFLite's requantization uses, x * 2^max(shift,0) within int32,
    plus exact ties (x a multiple of a power of two) where rounding rules show."""
    rng = np.random.default_rng(7)
    shift = rng.integers(-31, 8, n)
    m = rng.integers(1 << 30, (1 << 31) - 1, n)
    m[: n // 4] = (1 << 30) + (rng.integers(0, 1 << 10, n // 4) << 20)  # low bits zero: ties
    lim = (1 << 31) >> np.maximum(shift, 0)
    x = (rng.random(n) * 2 * lim - lim).astype(np.int64)
    x[n // 2: 3 * n // 4] &= ~np.int64(0xFFFF)
    return np.stack([x, m, shift], axis=1)


def test_default_build_requantization_is_tflms(cmsis_dir, tmp_path):
    """arm_nn_requantize (default build) == qsim.fixedpoint's double-rounding MultiplyByQuantizedMultiplier,
    arm_nn_doubling_high_mult == SaturatingRoundingDoublingHighMul (incl. INT32_MIN * INT32_MIN, which
    arm_nn_requantize, given only positive multipliers, does not saturate),
    arm_nn_divide_by_power_of_two == RoundingDivideByPOT, on random and tie operands."""
    rows = _operands()
    rows = np.concatenate([rows, [[-(1 << 31), -(1 << 31), 0], [-(1 << 31), 1 << 30, -1], [-3, 1 << 30, -1]]])
    got = _primitives(cmsis_dir, tmp_path, rows)
    x, m, s = rows.T
    valid = m > 0  # a requantization multiplier M0 is positive: arm_nn_requantize does not saturate
    assert got[~valid, 0].tolist() == [-(1 << 31)]  # INT32_MIN * INT32_MIN (SRDHM's one saturating case)
    assert_equal(got[valid, 0], fp.multiply_by_quantized_multiplier(x[valid], m[valid], s[valid], "double"),
                 "arm_nn_requantize vs double")
    assert_equal(got[:, 1], fp.saturating_rounding_doubling_high_mul(x, m), "arm_nn_doubling_high_mult vs SRDHM")
    right = s <= 0
    assert_equal(got[right, 2], fp.rounding_divide_by_pot(x[right], -s[right]), "divide_by_power_of_two vs RDBPOT")


def test_single_rounding_build_differs_only_out_of_range(cmsis_dir, tmp_path):
    """CMSIS_NN_USE_SINGLE_ROUNDING: equal to qsim's single rounding on in-range operands, but a
    result beyond int32 is truncated to int32 (it wraps) where qsim's `single` saturates, the reason
    --kernels cmsis-nn refuses --rounding single.  Designed case: x = 2^30, M0 = 2^30, shift 2
    (x * M0 * 2^2 / 2^31 = 2^31)."""
    rows = _operands()
    rows = rows[rows[:, 2] <= 30]
    rows = np.concatenate([rows, [[1 << 30, 1 << 30, 2]]])
    got = _primitives(cmsis_dir, tmp_path, rows, "-DCMSIS_NN_USE_SINGLE_ROUNDING")[:, 0]
    x, m, s = rows.T
    want = fp.multiply_by_quantized_multiplier(x, m, s, "single")
    assert_equal(got[:-1], want[:-1], "single-rounding arm_nn_requantize vs qsim single (in range)")
    assert (got[-1], want[-1]) == (-(1 << 31), (1 << 31) - 1)


# ------------------------------------------------------------------ errors

def test_bad_requests_are_clear_errors(cmsis_dir, tmp_path, capsys, monkeypatch):
    path = shared_model("hello_world_int8.tflite")
    with pytest.raises(QsimError, match="--rounding double only"):
        generate(path, tmp_path / "a", kernels="cmsis-nn", rounding="single", cmsis_nn_dir=cmsis_dir)
    monkeypatch.delenv("CMSIS_NN_DIR", raising=False)
    with pytest.raises(QsimError, match="needs a CMSIS-NN checkout"):
        generate(path, tmp_path / "b", kernels="cmsis-nn")
    with pytest.raises(QsimError, match="not a CMSIS-NN checkout"):
        generate(path, tmp_path / "c", kernels="cmsis-nn", cmsis_nn_dir=tmp_path)
    with pytest.raises(QsimError, match="unknown kernels"):
        generate(path, tmp_path / "d", kernels="cmsis")
    from qsim.cli import main
    assert main(["codegen", str(path), "-o", str(tmp_path / "e"), "--kernels", "cmsis-nn",
                 "--cmsis-nn-dir", str(tmp_path)]) == 2
    assert "qsim: error:" in capsys.readouterr().err
    assert main(["codegen", str(path), "-o", str(tmp_path / "g"), "--kernels", "cmsis-nn",
                 "--cmsis-nn-dir", str(cmsis_dir)]) == 0
    assert "kernels: CMSIS-NN" in capsys.readouterr().out
    monkeypatch.setenv("CMSIS_NN_DIR", str(cmsis_dir))  # the environment variable is the default
    res = generate(path, tmp_path / "f", kernels="cmsis-nn")
    assert f"CMSIS_NN_DIR ?= {cmsis_dir.resolve()}" in (tmp_path / "f" / "Makefile").read_text()
    assert not (tmp_path / "f" / "cmsis_nn.c").exists() and res.name == "hello_world_int8"
