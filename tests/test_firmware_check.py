"""The firmware loop closed: `qsim codegen --inputs FILE` writes input.bin / expected.bin /
expected_trace.bin and the generated Makefile's `check` (gcc) and `check-qemu` (Cortex-M4
under QEMU) targets compare the C program's output.bin and -DQK_TRACE trace.bin with them.

Golden: expected.bin must equal TFLite Micro's outputs; a corrupted expectation must fail
with the first divergent op named."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import qsim
from conftest import REPO, require_module
from test_codegen import need_tool

DEMO = REPO / "examples" / "models" / "demo_cnn_int8.tflite"


def make(d, goal):
    return subprocess.run(["make", "-s", "-C", str(d), goal], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    need_tool("gcc")
    d = tmp_path_factory.mktemp("fw")
    x = np.load(REPO / "examples" / "models" / "demo_testset.npz")["x"][:12]
    np.save(d / "digits.npy", x)
    r = subprocess.run([sys.executable, "-m", "qsim.cli", "codegen", str(DEMO), "-o", str(d / "out"), "--name",
                        "digits", "--inputs", str(d / "digits.npy")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return d / "out", x


def test_expected_bin_is_tflm_output(firmware):
    require_module("tflite_micro", "TFLite Micro is the golden")
    from qsim.reference import TFLMRunner
    out, x = firmware
    assert (out / "input.bin").read_bytes() == x.astype(np.int8).tobytes()
    m = qsim.load(DEMO)
    runner = TFLMRunner(m.blob)
    gold = b"".join(runner.run([s[None]], m.graph.outputs)[m.graph.outputs[0]].tobytes() for s in x)
    assert (out / "expected.bin").read_bytes() == gold


def test_make_check_passes_then_names_the_first_divergent_op(firmware):
    out, x = firmware
    r = make(out, "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "qk_check: outputs: 12 sample(s), all 120 bytes bit-exact with qsim" in r.stdout
    assert "qk_check: op trace: 12 sample(s)" in r.stdout
    assert "warning" not in (r.stdout + r.stderr).lower()
    # flip one byte of op #2's expected output in sample 5: the check must fail and name that op
    g = qsim.load(DEMO).graph
    sizes = [g.tensors[op.outputs[0]].nbytes for op in g.operators]
    trace = bytearray((out / "expected_trace.bin").read_bytes())
    pos = 5 * sum(sizes) + sizes[0] + sizes[1] + 3
    trace[pos] ^= 0x01
    (out / "expected_trace.bin").write_bytes(bytes(trace))
    try:
        r = make(out, "check")
        assert r.returncode != 0
        op2 = g.operators[2]
        assert (f"first divergence at sample 5, op #2 {op2.opcode} -> '{g.tensors[op2.outputs[0]].name}', byte 3"
                in r.stdout), r.stdout
    finally:
        trace[pos] ^= 0x01
        (out / "expected_trace.bin").write_bytes(bytes(trace))


def test_make_check_qemu_on_cortex_m4(firmware):
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        need_tool(tool)
    out, _ = firmware
    r = make(out, "check-qemu")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "qk_check: outputs: 12 sample(s), all 120 bytes bit-exact with qsim" in r.stdout
    assert "qk_check: op trace: 12 sample(s)" in r.stdout


def test_make_check_without_inputs_says_how(tmp_path):
    need_tool("gcc")
    qsim.load(DEMO).codegen(tmp_path / "o", name="d")
    r = make(tmp_path / "o", "check")
    assert r.returncode != 0 and "--inputs FILE" in r.stdout


def test_c_string_escapes_tensor_names():
    """Tensor names go into qk_check.c as string literals: quotes, backslashes, '?' (trigraphs) and
    non-ASCII bytes are escaped (UTF-8 bytes as octal)."""
    from qsim.codegen.emit import c_string
    assert c_string('a"b\\c??=') == 'a\\"b\\\\c\\?\\?='
    assert c_string("é") == "\\303\\251"
