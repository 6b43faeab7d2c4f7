"""Generated C for recurrent / stateful models (SVDF, UNIDIRECTIONAL_SEQUENCE_LSTM) and the int16 edges
they come with (QUANTIZE from int16, SOFTMAX int8 -> int16, int16 / int32 graph I/O): bit-exact with
TensorFlow Lite Micro natively, under ASan/UBSan and on Cortex-M4 in QEMU.

State convention: the variable tensors persist across NAME_invoke calls (as in TFLM), so N consecutive
invocations of the C are compared with TFLM's Python interpreter invoked N times *without* a reset;
NAME_reset() (the harness's RESET argument) must restore a fresh interpreter's answer.  The int16
sigmoid/tanh primitives of qkernels.c are compared with qsim.fixedpoint on every int16 input.
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import require_module, shared_model
from qsim import fixedpoint as fp
from qsim.builder import ModelBuilder, lstm_int8_model
from qsim.codegen import generate
from qsim.codegen.emit import KERNEL_SOURCES
from qsim.loader import load, load_bytes
from test_codegen import build_sanitized, make, need_tool
from test_codegen_cortexm import run_qemu
from test_svdf import add_svdf, svdf_model

KEYWORD = "keyword_scrambled_8bit"
LSTM = "trained_lstm_int8"


# keyword_scrambled's int16 input (scale 0.000625) quantizes to int8 (scale 0.0592, zero point -128):
# [0, 24000] spans the int8 range, anything negative is -128
INPUT_RANGE = {KEYWORD: (0, 24000)}


def random_samples(g, n: int, seed: int, value_range=None) -> list[list[np.ndarray]]:
    """n samples of every graph input over ``value_range`` (default: its type's full range)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        row = []
        for t in (g.tensors[i] for i in g.inputs):
            info = np.iinfo(t.dtype)
            lo, hi = value_range or (info.min, info.max)
            row.append(rng.integers(lo, hi + 1, size=t.shape).astype(t.dtype))
        out.append(row)
    return out


def write_samples(path, samples) -> None:
    """input.bin: each sample's inputs, native bytes, concatenated (the harness's format)."""
    path.write_bytes(b"".join(np.ascontiguousarray(a).tobytes() for s in samples for a in s))


def read_outputs(path, g, n: int) -> list[list[np.ndarray]]:
    raw, pos, out = path.read_bytes(), 0, []
    for _ in range(n):
        row = []
        for t in (g.tensors[i] for i in g.outputs):
            row.append(np.frombuffer(raw[pos:pos + t.nbytes], dtype=t.dtype).reshape(t.shape))
            pos += t.nbytes
        out.append(row)
    assert pos == len(raw), f"output.bin holds {len(raw)} bytes, expected {pos}"
    return out


def tflm_sequence(model, samples, n_outputs: int, reset_each: bool = False) -> list[list[np.ndarray]]:
    """TFLM's outputs for the samples in order, one interpreter, state carried from one invoke to the
    next (``reset_each``: Interpreter.reset() before each)."""
    runtime = require_module("tflite_micro.python.tflite_micro.runtime", "TFLM reference")
    it = (runtime.Interpreter.from_bytes(model) if isinstance(model, (bytes, bytearray))
          else runtime.Interpreter.from_file(str(model)))
    rows = []
    for s in samples:
        if reset_each:
            it.reset()
        for k, a in enumerate(s):
            it.set_input(a, k)
        it.invoke()
        rows.append([np.asarray(it.get_output(k)).copy() for k in range(n_outputs)])
    return rows


def assert_rows_equal(got, want, what: str) -> None:
    assert len(got) == len(want)
    for k, (g_row, w_row) in enumerate(zip(got, want)):
        for j, (a, b) in enumerate(zip(g_row, w_row)):
            a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
            assert a.dtype == b.dtype, f"{what}: sample {k} output {j}: C {a.dtype} vs TFLM {b.dtype}"
            bad = np.flatnonzero(a != b)
            assert bad.size == 0, (f"{what}: sample {k} output {j}: {bad.size} values differ, first at {bad[0]}: "
                                   f"C {a[bad[0]]} vs TFLM {b[bad[0]]}")


def run_exe(build_dir, exe: str, samples, g, *args: str) -> list[list[np.ndarray]]:
    write_samples(build_dir / "input.bin", samples)
    r = subprocess.run([str(build_dir / exe), "input.bin", "output.bin", *args], cwd=build_dir,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return read_outputs(build_dir / "output.bin", g, len(samples))


def build_host(model, build_dir, name: str):
    need_tool("gcc")
    need_tool("make")
    res = generate(model if not isinstance(model, (bytes, bytearray)) else load_bytes(model), build_dir,
                   name=name, force=True)
    make(build_dir, "host")
    return res


def check_persistent_and_reset(model, build_dir, name: str, g, samples, exe: str | None = None,
                               state_shows: bool = True) -> None:
    """The C over the samples in order (state carried) equals TFLM invoked as many times without a
    reset; with RESET=1 each sample equals a fresh TFLM's answer (the last, the first sample again
    after the others, the first answer); ``state_shows``: some carried answer differs from the fresh one."""
    exe = exe or f"{name}_run"
    n_out = len(g.outputs)
    got = run_exe(build_dir, exe, samples, g)
    assert_rows_equal(got, tflm_sequence(model, samples, n_out), f"{name}: {len(samples)} consecutive invocations")
    again = samples + [samples[0]]  # after the others, then reset: the first answer again
    fresh = run_exe(build_dir, exe, again, g, "1", "1")
    assert_rows_equal(fresh, tflm_sequence(model, again, n_out, reset_each=True), f"{name}: reset before each")
    for a, b in zip(fresh[-1], fresh[0]):
        np.testing.assert_array_equal(a, b)
    if state_shows:
        assert any(not np.array_equal(a, b) for gr, fr in zip(got, fresh) for a, b in zip(gr, fr)), \
            "carrying the state changed no answer: the test would not see a lost state"


# ------------------------------------------------------------------ the real models

@pytest.fixture(scope="module")
def real_builds(tmp_path_factory):
    cache = {}

    def get(model: str):
        if model not in cache:
            path = shared_model(model + ".tflite")
            d = tmp_path_factory.mktemp(f"rnn_{model}")
            res = build_host(path, d, model)
            cache[model] = (path, d, load(path), res)
        return cache[model]
    return get


@pytest.mark.parametrize("model, n", [(KEYWORD, 12), (LSTM, 6)])
def test_real_model_native_bit_exact_with_tflm_across_invocations(model, n, real_builds):
    path, d, g, res = real_builds(model)
    samples = random_samples(g, n, seed=7, value_range=INPUT_RANGE.get(model))
    check_persistent_and_reset(path, d, model, g, samples, state_shows=model == LSTM)
    assert res.state_bytes > 0
    if model == KEYWORD:  # int16 input, int32 output (QUANTIZE after the int16 softmax)
        assert g.tensors[g.inputs[0]].dtype == np.int16 and g.tensors[g.outputs[0]].dtype == np.int32
        header = (d / f"{model}.h").read_text()
        assert "const int16_t *input, int32_t *output" in header and f"void {model}_reset(void);" in header


@pytest.mark.parametrize("model", [KEYWORD, LSTM])
def test_real_model_every_op_output_across_invocations(model, real_builds):
    """-DQK_TRACE build: every op's output (state-carrying SVDF / LSTM outputs included) equals TFLM's
    (kPreserveAllTensors, no reset between invokes) over consecutive invocations, and the recurrent ops'
    outputs change from one invocation to the next even for a repeated input (the state is carried).
    keyword_scrambled (scrambled weights) is degenerate: from its first SVDF on, every op answers the same
    for every input (qsim and TFLM agree), so only the LSTM model's recurrent outputs are required to
    move; the builder SVDF models below check the carried state where it shows.)"""
    from test_codegen import tflm_all_tensors
    path, d, g, _ = real_builds(model)
    srcs = ["main.c", f"{model}.c", f"{model}_weights.c", *KERNEL_SOURCES]
    r = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-DQK_TRACE",
                        "-o", "trace_run", *srcs], cwd=d, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    samples = random_samples(g, 3, seed=21, value_range=INPUT_RANGE.get(model))
    samples = samples + [samples[-1]]  # the last input again: the state makes the answer differ
    run_exe(d, "trace_run", samples, g)
    trace = (d / "trace.bin").read_bytes()
    outs = [op.outputs[0] for op in g.operators]
    refs = tflm_all_tensors(path, samples, outs)
    pos, recurrent = 0, {}
    for k in range(len(samples)):
        for op, t in zip(g.operators, outs):
            tensor = g.tensors[t]
            got = np.frombuffer(trace[pos:pos + tensor.nbytes], dtype=tensor.dtype)
            pos += tensor.nbytes
            want = refs[k][t].astype(tensor.dtype)
            bad = np.flatnonzero(got != want)
            assert bad.size == 0, (f"sample {k}, op #{op.index} {op.opcode}: {bad.size} values differ, first at "
                                   f"{bad[0]}: C {got[bad[0]]} vs TFLM {want[bad[0]]}")
            if op.opcode in ("SVDF", "UNIDIRECTIONAL_SEQUENCE_LSTM"):
                recurrent.setdefault(op.index, []).append(got.tobytes())
    assert pos == len(trace)
    for index, rows in recurrent.items():
        print(f"{model} op #{index}: {len(set(rows))} distinct outputs over {len(rows)} invocations")
    if model == LSTM:
        assert all(len(set(rows)) > 1 for rows in recurrent.values())  # not stuck at one answer
        assert any(rows[-1] != rows[-2] for rows in recurrent.values()), "the repeated input gave the same outputs"


@pytest.mark.parametrize("model", [KEYWORD, LSTM])
def test_real_model_sanitizers_clean(model, real_builds):
    path, d, g, _ = real_builds(model)
    exe = build_sanitized(d, model)
    check_persistent_and_reset(path, d, model, g, random_samples(g, 4, seed=11, value_range=INPUT_RANGE.get(model)),
                               exe=exe, state_shows=model == LSTM)


@pytest.mark.parametrize("model", [KEYWORD, LSTM])
def test_real_model_cortex_m4_qemu(model, tmp_path):
    for tool in ("make", "arm-none-eabi-gcc", "qemu-system-arm"):
        need_tool(tool)
    path = shared_model(model + ".tflite")
    g = load(path)
    generate(path, tmp_path, name=model, target="cortex-m4", force=True)
    make(tmp_path)
    samples = random_samples(g, 5, seed=5, value_range=INPUT_RANGE.get(model))
    write_samples(tmp_path / "input.bin", samples)
    run_qemu(tmp_path, f"{model}.elf")
    got = read_outputs(tmp_path / "output.bin", g, len(samples))
    assert_rows_equal(got, tflm_sequence(path, samples, len(g.outputs)), f"{model} on Cortex-M4/QEMU")


# ------------------------------------------------------------------ builder-made single ops

@pytest.mark.parametrize("rank, state, batch, seed", [(1, np.int8, 1, 1), (2, np.int8, 2, 2), (1, np.int16, 1, 3),
                                                     (2, np.int16, 2, 4)])
def test_builder_svdf_bit_exact_with_tflm(rank, state, batch, seed, tmp_path):
    blob = svdf_model(seed, rank=rank, units=3, memory=4, n_in=7, batch=batch, state_dtype=state)
    g = load_bytes(blob)
    build_host(blob, tmp_path, "svdf")
    check_persistent_and_reset(blob, tmp_path, "svdf", g, random_samples(g, 6, seed=seed))


# (n_in, memory, units, rank, state, batch): the x86-64 SSE2 path of qk_svdf takes four filters (and units) at a
# time with chunks of 16 and 8 bytes and a scalar tail.  These hit every chunk / tail mix of the feature dot (n_in
# 1 .. 96) and of the time stage (memory 1 .. 33; int8 chunks of 16 and 8 values, int16 of 8 and 4, each ending
# before the row's newest entry or at it), filter and unit counts with and without a remainder of four (filters
# 1 .. 10), rank 1 and 2, batch 2.
SVDF_EDGES = [(1, 1, 1, 1, np.int8, 1), (7, 2, 2, 2, np.int16, 2), (8, 8, 5, 1, np.int8, 2),
              (15, 9, 3, 2, np.int8, 1), (16, 32, 5, 2, np.int16, 2), (17, 4, 4, 1, np.int16, 1),
              (33, 16, 8, 1, np.int8, 2), (96, 32, 4, 2, np.int8, 1), (24, 5, 7, 1, np.int16, 2),
              (9, 12, 3, 2, np.int16, 1), (31, 17, 6, 1, np.int8, 1), (40, 33, 2, 2, np.int8, 2),
              (12, 24, 4, 1, np.int8, 1), (20, 27, 5, 1, np.int8, 2), (5, 5, 2, 2, np.int8, 1),
              (10, 15, 4, 1, np.int16, 1), (3, 3, 4, 1, np.int16, 2), (11, 1, 4, 1, np.int8, 1),
              (6, 1, 2, 2, np.int16, 1)]


def svdf_edges_model() -> bytes:
    """The SVDF_EDGES layers side by side in one graph (one input and one output each), about half of
    every layer's weights at their type's ends."""
    b = ModelBuilder(description="svdf edges")
    for k, (n_in, memory, units, rank, state, batch) in enumerate(SVDF_EDGES):
        add_svdf(b, 100 + k, rank=rank, units=units, memory=memory, n_in=n_in, batch=batch, state_dtype=state,
                 prefix=f"l{k}_", extreme=True)
    return b.build()


def edge_samples(g, seed: int) -> list[list[np.ndarray]]:
    """Random full-range inputs, then inputs all at the int8 ends (-128 / 127)."""
    rng = np.random.default_rng([seed, 2])
    ends = [[rng.choice(np.array([-128, 127], np.int8), g.tensors[i].shape) for i in g.inputs] for _ in range(3)]
    return random_samples(g, 5, seed) + ends


def test_builder_svdf_chunk_edges_bit_exact_with_tflm(tmp_path):
    """Every chunk / tail / remainder combination of qk_svdf's vector path, large sums: the C (state carried
    across invocations, and with a reset before each) equals TFLM, also under ASan/UBSan."""
    blob = svdf_edges_model()
    g = load_bytes(blob)
    build_host(blob, tmp_path, "svdf")
    samples = edge_samples(g, 21)
    check_persistent_and_reset(blob, tmp_path, "svdf", g, samples)
    check_persistent_and_reset(blob, tmp_path, "svdf", g, samples[:3] + samples[-2:],
                               exe=build_sanitized(tmp_path, "svdf"))


@pytest.mark.parametrize("kw", [dict(), dict(n_batch=2, time_major=True, seed=3),
                                dict(n_batch=2, cell_clip=0.5, hidden_zp=5, seed=4, cell_power=-10),
                                dict(n_time=3, n_input=4, n_cell=6, seed=5, hidden_scale=2 ** -6)])
def test_builder_lstm_bit_exact_with_tflm(kw, tmp_path):
    blob = lstm_int8_model(**kw)
    g = load_bytes(blob)
    build_host(blob, tmp_path, "lstm")
    check_persistent_and_reset(blob, tmp_path, "lstm", g, random_samples(g, 5, seed=9))


def test_stateless_model_reset_is_a_no_op(tmp_path):
    """A model without variable tensors still gets NAME_reset() (empty) and STATE_SIZE 0."""
    from test_codegen import _tiny_model
    g = load_bytes(_tiny_model([("RELU", None, [])]))
    generate(g, tmp_path, name="tiny", force=True)
    assert "#define TINY_STATE_SIZE 0" in (tmp_path / "tiny.h").read_text()
    assert "void tiny_reset(void)" in (tmp_path / "tiny.c").read_text()
    make(tmp_path, "host")


# ------------------------------------------------------------------ C primitives vs qsim.fixedpoint

LUT_INPUTS = [(0, 0), (0, 1), (0, 2), (0, 3), (3, 1), (3, 2), (3, 3), (1000, 10), (20000, 13), (7, 0)]

PRIMITIVES_C = r"""
#include <stdio.h>
#include "qkernels.h"
static const uint16_t table[256] = { %s };
static const int32_t params[][2] = { %s };
int main(void)
{
    FILE *f = fopen("prims.bin", "wb");
    size_t k;
    int32_t x;
    for (k = 0; k < sizeof params / sizeof params[0]; ++k) {
        for (x = -32768; x <= 32767; ++x) {
            int32_t v[2];
            v[0] = qk_logistic_int16(x, params[k][0], params[k][1], table);
            v[1] = qk_tanh_int16(x, params[k][0], params[k][1], table);
            fwrite(v, sizeof v, 1, f);
        }
    }
    fclose(f);
    return 0;
}
"""


@pytest.mark.parametrize("sanitize", [False, True])
def test_int16_sigmoid_tanh_primitives_equal_fixedpoint(sanitize, tmp_path):
    """qk_logistic_int16 / qk_tanh_int16 (qkernels.c) vs qsim.fixedpoint.logistic_int16_lut /
    tanh_int16_lut on every int16 input, for plain, power-of-two and multiplier input scalings
    (the table passed in is fixedpoint's SIGMOID_TABLE_UINT16, as the generator emits it)."""
    need_tool("gcc")
    from qsim.codegen.emit import TEMPLATES
    for f in ("qkernels.c", "qkernels.h"):
        (tmp_path / f).write_text((TEMPLATES / f).read_text())
    (tmp_path / "qk_config.h").write_text("")
    table = ", ".join(str(int(v)) for v in fp.SIGMOID_TABLE_UINT16)
    params = ", ".join(f"{{{m}, {s}}}" for m, s in LUT_INPUTS)
    (tmp_path / "prims.c").write_text(PRIMITIVES_C % (table, params))
    flags = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"] if sanitize else ["-O2"]
    r = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", *flags, "-o", "prims",
                        "prims.c", "qkernels.c"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    if sanitize:
        from test_codegen import sanitizer_build_failed
        sanitizer_build_failed(r)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["./prims"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = np.fromfile(tmp_path / "prims.bin", dtype=np.int32).reshape(len(LUT_INPUTS), 65536, 2)
    x = np.arange(-32768, 32768, dtype=np.int64)
    for k, (m, s) in enumerate(LUT_INPUTS):
        np.testing.assert_array_equal(got[k, :, 0], fp.logistic_int16_lut(x, m, s), f"logistic ({m}, {s})")
        np.testing.assert_array_equal(got[k, :, 1], fp.tanh_int16_lut(x, m, s), f"tanh ({m}, {s})")
    # the saturated branch (255 table steps or more) is reached at the ends with (0, 3), hand-derived:
    # logistic ((2**25 - (0x7FFF << 10) + 2**9 - 1) >> 10) = 1 and ((0x7FFF << 10) + 2**9) >> 10 = 32767
    k = LUT_INPUTS.index((0, 3))
    assert got[k, 0, 0] == 1 and got[k, -1, 0] == 32767


def test_make_check_resets_the_state_per_sample(tmp_path):
    """`make check` compares with qsim's expected.bin, which starts every sample from the reset
    state: the harness resets before each sample there (RESET argument), so a stateful model passes,
    while the same samples run with the state carried differ from expected.bin."""
    import qsim
    need_tool("make")
    need_tool("gcc")
    blob = lstm_int8_model(n_batch=1, seed=6)
    g = load_bytes(blob)
    x = np.stack([s[0][0] for s in random_samples(g, 3, seed=2)])
    qsim.load(blob).codegen(tmp_path, name="lstm", inputs=x, force=True)
    r = subprocess.run(["make", "-s", "-C", str(tmp_path), "check"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    carried = subprocess.run([str(tmp_path / "lstm_run"), "input.bin", "carried.bin"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert carried.returncode == 0
    assert (tmp_path / "carried.bin").read_bytes() != (tmp_path / "expected.bin").read_bytes()


@pytest.mark.parametrize("which", ["svdf8", "svdf16", "svdf_edges", "lstm"])
def test_single_rounding_matches_qsim_single_profile(which, tmp_path):
    """--rounding single (TFLITE_SINGLE_ROUNDING): the C with a reset before each sample equals qsim's
    "single" profile (which starts every sample from the reset state)."""
    from qsim.interpreter import prepare_graph
    need_tool("gcc")
    need_tool("make")
    blob = {"svdf8": lambda: svdf_model(5, rank=2, state_dtype=np.int8),
            "svdf16": lambda: svdf_model(6, rank=1, state_dtype=np.int16),
            "svdf_edges": svdf_edges_model,
            "lstm": lambda: lstm_int8_model(n_batch=2, seed=8)}[which]()
    g = load_bytes(blob)
    generate(g, tmp_path, name="m", rounding="single", force=True)
    make(tmp_path, "host")
    samples = random_samples(g, 5, seed=12)
    got = run_exe(tmp_path, "m_run", samples, g, "1", "1")
    pg = prepare_graph(g, "single")
    want = [[pg.run(s)[t] for t in g.outputs] for s in samples]
    assert_rows_equal(got, want, f"{which}: C --rounding single vs qsim single")


# ------------------------------------------------------------------ the 16x8 LSTM (int16 activations)

# TFLite Micro's 16x8 form: int16 input / hidden / output (zero point 0), int64 biases; LiteRT has no such kernel
# (it refuses the int64 bias: tests/test_lstm.py), so TFLite Micro is the reference.
LSTM16 = dict(activations=np.int16, input_zp=0, hidden_zp=0, input_scale=2 ** -12, hidden_scale=2 ** -14)
LSTM16_CASES = [dict(), dict(n_batch=2, time_major=True, cell_power=-15, seed=3),
                dict(n_batch=3, cell_clip=1.0, weight_scale=0.08, seed=9),
                dict(n_time=3, n_input=4, n_cell=6, seed=5, hidden_scale=2 ** -12, cell_power=-9),
                dict(n_batch=2, seed=7, hidden_scale=2 ** -16)]  # |o * tanh(c)| up to 2**16: h saturates at int16


def lstm16_samples(g, seed: int) -> list[list[np.ndarray]]:
    """Full-range int16 inputs (saturating gates) and moderate ones (|x| < 6000: gates off their ends)."""
    return random_samples(g, 3, seed) + random_samples(g, 3, seed + 100, (-6000, 6000))


@pytest.mark.parametrize("kw", LSTM16_CASES)
def test_builder_lstm_16x8_bit_exact_with_tflm(kw, tmp_path):
    """qk_lstm_s16 (int16 activations, int64 FC accumulators and biases): every output equals TFLite Micro's
    over consecutive invocations (state carried), and after NAME_reset() a fresh interpreter's; int16 API."""
    blob = lstm_int8_model(**{**LSTM16, **kw})
    g = load_bytes(blob)
    res = build_host(blob, tmp_path, "lstm")
    assert res.state_bytes >= 2 * 2 * g.tensors[g.operators[0].inputs[18]].size  # int16 hidden + cell
    header = (tmp_path / "lstm.h").read_text()
    assert "const int16_t *input, int16_t *output" in header and "void lstm_reset(void);" in header
    assert "qk_lstm_s16(" in (tmp_path / "lstm.c").read_text()
    samples = lstm16_samples(g, 9 + kw.get("seed", 0))
    check_persistent_and_reset(blob, tmp_path, "lstm", g, samples)
    if kw.get("hidden_scale") == 2 ** -16:  # the int16 clamp of h is reached, both ends
        out = np.concatenate([r[0].reshape(-1) for r in run_exe(tmp_path, "lstm_run", samples, g, "1", "1")])
        assert out.min() == -32768 and out.max() == 32767


def test_builder_lstm_16x8_sanitizers_clean(tmp_path):
    from test_codegen import build_sanitized
    blob = lstm_int8_model(**LSTM16, **LSTM16_CASES[2])
    g = load_bytes(blob)
    build_host(blob, tmp_path, "lstm")
    check_persistent_and_reset(blob, tmp_path, "lstm", g, lstm16_samples(g, 31), exe=build_sanitized(tmp_path, "lstm"))


def test_builder_lstm_16x8_cortex_m4_qemu(tmp_path):
    for tool in ("make", "arm-none-eabi-gcc", "qemu-system-arm"):
        need_tool(tool)
    blob = lstm_int8_model(**LSTM16, **LSTM16_CASES[1])
    g = load_bytes(blob)
    generate(g, tmp_path, name="lstm", target="cortex-m4", force=True)
    make(tmp_path)
    samples = lstm16_samples(g, 17)
    write_samples(tmp_path / "input.bin", samples)
    run_qemu(tmp_path, "lstm.elf")
    got = read_outputs(tmp_path / "output.bin", g, len(samples))
    assert_rows_equal(got, tflm_sequence(blob, samples, 1), "16x8 LSTM on Cortex-M4/QEMU (state carried)")


def test_builder_lstm_16x8_single_rounding_matches_qsim(tmp_path):
    """--rounding single: the 16x8 LSTM (reset before each sample) equals qsim's "single" profile."""
    from qsim.interpreter import prepare_graph
    need_tool("gcc")
    need_tool("make")
    g = load_bytes(lstm_int8_model(**LSTM16, **LSTM16_CASES[2]))
    generate(g, tmp_path, name="m", rounding="single", force=True)
    make(tmp_path, "host")
    samples = lstm16_samples(g, 12)
    got = run_exe(tmp_path, "m_run", samples, g, "1", "1")
    pg = prepare_graph(g, "single")
    assert_rows_equal(got, [[pg.run(s)[t] for t in g.outputs] for s in samples], "16x8 LSTM: C single vs qsim single")
