"""`qsim codegen`: generated C (gcc, and arm-none-eabi-gcc under QEMU) is bit-exact with TFLite Micro.

Goldens come from the TFLite Micro Python runtime (and qsim's own "tflm" /
"single" profiles, which are themselves checked against the references by the
kernel tests); nothing is compared with codegen's own output.  Every shared
int8 model is generated, compiled warning-free (-std=c99 -Wall -Wextra
-Werror -pedantic) at -O2 and with -fsanitize=address,undefined, and run on
seeded random inputs plus the real images.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import require_module, shared_model, skip_or_fail
from qsim import ir
from qsim.errors import QsimError
from qsim.interpreter import prepare_graph
from qsim.loader import load

from qsim.codegen import c_identifier, generate
from qsim.codegen import planner
from qsim.codegen.emit import KERNEL_SOURCES

# Shared int8 models: (file, number of seeded random inputs).
MODELS = {
    "ad01_int8": 10,
    "hello_world_int8": 10,
    "kws_ref_model": 10,
    "micro_speech_quantized": 10,
    "person_detect": 10,
    "pretrainedResnet_quant": 10,
    "vww_96_int8": 10,
}
IMAGES = ("person.bmp", "no_person.bmp")
SEED = 20261122


# ------------------------------------------------------------------ helpers

def need_tool(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        skip_or_fail(f"{tool} is not installed (needed to build/run generated firmware); .ci/run installs it")
    return path


def sanitizer_build_failed(r: subprocess.CompletedProcess) -> None:
    """After a -fsanitize=address,undefined gcc run: skip (fail under CI) when only the sanitizer
    runtimes are missing; any other failure is left to the caller's assert."""
    if r.returncode != 0 and "sanitizer" in r.stderr.lower() and "cannot find" in r.stderr.lower():
        skip_or_fail("the sanitizer runtimes (libasan/libubsan) are not installed")


def make(build_dir: Path, *goals: str, **variables: str) -> None:
    args = ["make", "-s", "-C", str(build_dir), *goals] + [f"{k}={v}" for k, v in variables.items()]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"make {' '.join(goals)} failed:\n{r.stdout}\n{r.stderr}"
    assert "warning" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr


def run_host(build_dir: Path, name: str, samples: list[list[np.ndarray]], exe: str | None = None) -> np.ndarray:
    """Run the native harness on samples (each: list of input arrays); returns [N, out_total] int8."""
    exe = exe or f"{name}_run"
    inp, outp = build_dir / "input.bin", build_dir / "output.bin"
    write_samples(inp, samples)
    r = subprocess.run([str(build_dir / exe), str(inp), str(outp)], capture_output=True, text=True,
                       timeout=600, cwd=build_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    return np.fromfile(outp, dtype=np.int8).reshape(len(samples), -1)


def write_samples(path: Path, samples) -> None:
    with open(path, "wb") as f:
        for s in samples:
            for a in s:
                f.write(np.ascontiguousarray(a, dtype=np.int8).tobytes())


def tflm_outputs(model, samples, n_outputs: int = 1) -> np.ndarray:
    """Graph outputs from the TFLite Micro Python runtime, concatenated per sample."""
    runtime = require_module("tflite_micro.python.tflite_micro.runtime", "TFLM reference")
    it = (runtime.Interpreter.from_bytes(model) if isinstance(model, (bytes, bytearray))
          else runtime.Interpreter.from_file(str(model)))
    rows = []
    for s in samples:
        for k, a in enumerate(s):
            it.set_input(a, k)
        it.invoke()
        outs = [np.asarray(it.get_output(k)).reshape(-1) for k in range(n_outputs)]
        rows.append(np.concatenate(outs).astype(np.int8))
    return np.stack(rows)


def qsim_outputs(g: ir.Graph, samples, profile: str) -> np.ndarray:
    pg = prepare_graph(g, profile)
    rows = []
    for s in samples:
        res = pg.run(s, keep_all=False)
        rows.append(np.concatenate([res[t].reshape(-1) for t in g.outputs]).astype(np.int8))
    return np.stack(rows)


def random_samples(g: ir.Graph, n: int, seed: int = SEED) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.integers(-128, 128, size=g.tensors[t].shape, dtype=np.int8) for t in g.inputs]
            for _ in range(n)]


def image_samples(g: ir.Graph) -> list[list[np.ndarray]]:
    """The real 96x96 images, for models with a [1, 96, 96, C] input (qsim's image conventions)."""
    from qsim.inputs import load_inputs
    t = g.tensors[g.inputs[0]]
    if len(g.inputs) != 1 or tuple(t.shape[:3]) != (1, 96, 96):
        return []
    return [load_inputs(shared_model(img), g).arrays for img in IMAGES]


def tflm_all_tensors(model, samples, tensor_indices) -> list[dict[int, np.ndarray]]:
    """Every requested tensor after invoke, from TFLM with kPreserveAllTensors."""
    runtime = require_module("tflite_micro.python.tflite_micro.runtime", "TFLM reference")
    cfg = runtime.InterpreterConfig.kPreserveAllTensors
    arena = 4 << 20  # preserving every tensor needs more than TFLM's default arena for tiny models
    it = (runtime.Interpreter.from_bytes(model, arena_size=arena, intrepreter_config=cfg)
          if isinstance(model, (bytes, bytearray))
          else runtime.Interpreter.from_file(str(model), arena_size=arena, intrepreter_config=cfg))
    res = []
    for s in samples:
        for k, a in enumerate(s):
            it.set_input(a, k)
        it.invoke()
        res.append({t: np.asarray(it.GetTensor(t, 0)["tensor_data"]).reshape(-1).copy() for t in tensor_indices})
    return res


def check_trace(build_dir: Path, name: str, g: ir.Graph, model, samples) -> None:
    """Build with -DQK_TRACE and compare EVERY op output (in-place buffers included) with TFLM and qsim."""
    srcs = ["main.c", f"{name}.c", f"{name}_weights.c", *KERNEL_SOURCES]
    r = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-DQK_TRACE",
                        "-o", "trace_run", *srcs], cwd=build_dir, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    run_host(build_dir, name, samples, exe="trace_run")
    trace = np.fromfile(build_dir / "trace.bin", dtype=np.int8)
    outs = [op.outputs[0] for op in g.operators]
    sizes = [g.tensors[t].size for t in outs]
    assert trace.size == len(samples) * sum(sizes)
    refs = tflm_all_tensors(model, samples, outs)
    pg = prepare_graph(g, "tflm")
    pos = 0
    for k, s in enumerate(samples):
        mine = pg.run(s, keep_all=True)
        for op, t, n in zip(g.operators, outs, sizes):
            got = trace[pos:pos + n]
            pos += n
            where = f"sample {k}, op #{op.index} {op.opcode} -> '{g.tensors[t].name}'"
            assert_equal(got[None], refs[k][t].astype(np.int8)[None], f"{where}: C vs TFLM")
            assert_equal(got[None], mine[t].reshape(-1).astype(np.int8)[None], f"{where}: C vs qsim")


def build_sanitized(build_dir: Path, name: str) -> str:
    """Build the harness with -fsanitize=address,undefined (any report aborts the run); returns the exe name."""
    exe = f"{name}_asan"
    srcs = ["main.c", f"{name}.c", f"{name}_weights.c", *KERNEL_SOURCES]
    r = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-g",
                        "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-o", exe, *srcs],
                       cwd=build_dir, capture_output=True, text=True, timeout=600)
    sanitizer_build_failed(r)
    assert r.returncode == 0, r.stderr
    return exe


def assert_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    diff = np.argwhere(got != want)
    assert diff.size == 0, (f"{what}: {len(diff)} differing values, first at sample/index {diff[0].tolist()}: "
                            f"C {got[tuple(diff[0])]} vs reference {want[tuple(diff[0])]}")


# ------------------------------------------------------------------ shared models on the host

@pytest.fixture(scope="module")
def host_builds(tmp_path_factory):
    """Generate + build each shared model once (lazily), keyed by model name."""
    need_tool("gcc")
    need_tool("make")
    cache: dict[str, tuple[Path, ir.Graph]] = {}

    def get(model: str):
        if model not in cache:
            path = shared_model(model + ".tflite")
            d = tmp_path_factory.mktemp(f"cg_{model}")
            generate(path, d, name=model, force=True)
            make(d, "host")
            cache[model] = (d, load(path))
        return cache[model]
    return get


@pytest.mark.parametrize("model", sorted(MODELS))
def test_host_bit_exact_with_tflm_and_qsim(model, host_builds):
    d, g = host_builds(model)
    samples = random_samples(g, MODELS[model]) + image_samples(g)
    got = run_host(d, model, samples)
    assert_equal(got, tflm_outputs(shared_model(model + ".tflite"), samples), f"{model} C vs TFLM")
    assert_equal(got, qsim_outputs(g, samples, "tflm"), f"{model} C vs qsim tflm profile")
    check_trace(d, model, g, shared_model(model + ".tflite"), samples[:2] + samples[len(samples) - 1:])


@pytest.mark.parametrize("model", sorted(MODELS))
def test_sanitizers_clean(model, host_builds, tmp_path):
    """-fsanitize=address,undefined build: no report, same outputs as TFLM."""
    d, g = host_builds(model)
    exe = build_sanitized(d, model)
    samples = random_samples(g, 2, seed=SEED + 1)
    got = run_host(d, model, samples, exe=exe)
    assert_equal(got, tflm_outputs(shared_model(model + ".tflite"), samples), f"{model} ASan/UBSan build vs TFLM")


@pytest.mark.parametrize("model", ["ad01_int8", "kws_ref_model", "pretrainedResnet_quant"])
def test_single_rounding_matches_qsim_single_profile(model, tmp_path):
    need_tool("gcc")
    path = shared_model(model + ".tflite")
    g = load(path)
    generate(path, tmp_path, name=model, rounding="single", force=True)
    assert "QK_SINGLE_ROUNDING" in (tmp_path / "qk_config.h").read_text()
    make(tmp_path, "host")
    samples = random_samples(g, 10, seed=SEED + 2)
    got = run_host(tmp_path, model, samples)
    assert_equal(got, qsim_outputs(g, samples, "single"), f"{model} single-rounding C vs qsim single")


def test_report_and_tables(tmp_path):
    """Header API, flash tables, arena within TFLM's budget, per-layer MACs."""
    path = shared_model("kws_ref_model.tflite")
    g = load(path)
    res = generate(path, tmp_path, name="kws", force=True)
    h = (tmp_path / "kws.h").read_text()
    assert "int kws_invoke(const int8_t *input, int8_t *output);" in h
    assert "#define KWS_INPUT0_SIZE 490" in h and "#define KWS_OUTPUT0_SIZE 12" in h
    assert f"#define KWS_ARENA_SIZE {res.arena_bytes}" in h
    w = (tmp_path / "kws_weights.c").read_text()
    assert "const int32_t kws_op0_mult[" in w and "const int8_t kws_op0_shift[" in w
    # MACs: first CONV_2D of KWS is 10x4 over a 49x10x1 input, stride 2 -> 25x5x64 outputs.
    conv0 = g.operators[0]
    w_t = g.tensors[conv0.inputs[1]]
    out_t = g.tensors[conv0.outputs[0]]
    assert res.layers[0].macs == int(np.prod(out_t.shape)) * int(np.prod(w_t.shape[1:]))
    assert res.total_macs == sum(l.macs for l in res.layers)
    assert 0 < res.arena_bytes <= 0.8 * 24272  # TFLM's arena for this model on x86-64
    assert res.weights_bytes >= sum(g.tensors[op.inputs[1]].nbytes for op in g.operators
                                    if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"))


# ------------------------------------------------------------------ planner

@pytest.mark.parametrize("model", sorted(MODELS))
def test_planner_never_overlaps_live_buffers(model):
    """Buffers live at the same time never share bytes, except an in-place pair whose output
    starts at least its kernel's delta below the input it overwrites."""
    from qsim.codegen import tables
    g = load(shared_model(model + ".tflite"))
    pg = prepare_graph(g, "tflm")
    overlaps = {pos: tables.overlap_delta(p, g) for pos, p in enumerate(pg.ops)}
    plan = planner.plan_memory(g, {0: 100}, overlaps)
    arena = [b for b in plan.buffers.values() if b.kind == "arena"]
    for i, a in enumerate(arena):
        assert a.offset % planner.ALIGN == 0 and a.offset + a.size <= plan.arena_size
        for b in arena[i + 1:]:
            if a.first <= b.last and b.first <= a.last and not (a.offset + a.size <= b.offset
                                                                 or b.offset + b.size <= a.offset):
                out, inp = (a, b) if (a.key, b.key) in plan.contracts else (b, a)
                delta = plan.contracts.get((out.key, inp.key))
                assert delta is not None, f"{a} and {b} overlap while both live"
                assert out.offset <= inp.offset - delta and inp.last == out.first
    # Graph I/O is never in the arena.
    assert all(plan.placement(t).kind == "input" for t in g.inputs)
    assert all(plan.placement(t).kind == "output" for t in g.outputs)


def test_window_overlap_delta_hand_example():
    """3x3 SAME stride-1 conv over a 4x4x2 map writing 2 channels: output pixel p may only
    overwrite input bytes no later step reads; the first row-above window starts at pixel
    (oy-1)*4 + (ox-1), so the output must trail the input by one row plus one pixel."""
    from qsim.codegen.tables import _window_delta
    # step p writes bytes [0, 2(p+1)); steps >= p+1 read from pixel max(oy-1,0)*4 + max(ox-1,0) on.
    # Worst case p = 4 (oy=1, ox=0 done): writes end at 10, step 5 (oy=1, ox=1) reads from pixel 0 -> 10.
    assert _window_delta((1, 4, 4, 2), (1, 4, 4, 2), 1, 1, 1, 1, False) == 10
    # 1x1 conv (no padding): step p+1 reads pixel p+1 only -> in place with no offset.
    assert _window_delta((1, 4, 4, 2), (1, 4, 4, 2), 1, 1, 0, 0, False) == 0


def test_greedy_by_size_hand_example():
    B = planner.Buffer
    bufs = [B("a", 100, 0, 1), B("b", 50, 1, 2), B("c", 100, 2, 3), B("d", 10, 0, 3)]
    size = planner.greedy_by_size(bufs)
    off = {b.key: b.offset for b in bufs}
    # largest first: a at 0; c (disjoint from a in time) reuses 0; b after a/c at 112; d after b at 176.
    assert off == {"a": 0, "c": 0, "b": 112, "d": 176}
    assert size == 192


# ------------------------------------------------------------------ names and errors

def test_c_identifier_sanitizes_and_uniquifies():
    taken: set[str] = set()
    assert c_identifier("model/conv 1;BiasAdd", taken) == "model_conv_1_BiasAdd"
    assert c_identifier("model/conv 1:BiasAdd", taken) == "model_conv_1_BiasAdd_2"
    assert c_identifier("3d-net") == "m_3d_net"
    assert c_identifier("int") == "m_int"
    assert c_identifier("__x") == "x"
    assert c_identifier("Ünïcode") == "n_code"


def _tiny_model(opcodes, with_int16=False) -> bytes:
    builder = require_module("qsim.builder", "model builder")
    b = builder.ModelBuilder(description="codegen error test")
    x = b.add_input("x", (1, 4), np.int8, scale=0.1, zero_point=0)
    prev = x
    for k, (opc, opts, extra) in enumerate(opcodes):
        y = b.add_tensor(f"y{k}", (1, 4), np.int8, scale=0.1, zero_point=0)
        b.add_op(opc, [prev] + [b.add_const(f"c{k}_{j}", a) for j, a in enumerate(extra)], [y], opts)
        prev = y
    if with_int16:  # int8 -> int16 QUANTIZE, then an int16 DEQUANTIZE to a float32 output (both in C)
        z = b.add_tensor("z16", (1, 4), np.int16, scale=1 / 32768, zero_point=0)
        b.add_op("QUANTIZE", [prev], [z])
        f = b.add_tensor("f32", (1, 4), np.float32)
        b.add_op("DEQUANTIZE", [z], [f])
        prev = f
    b.mark_output(prev)
    return b.build()


def test_unsupported_ops_all_named_at_generation_time(tmp_path):
    """EXP / NEG: qsim has no kernel; DEQUANTIZE to int8: not float32.  One error names them all; the
    int16 DEQUANTIZE to a float32 graph output (op #4) has a C kernel and is not named."""
    from qsim.loader import load_bytes
    g = load_bytes(_tiny_model([("EXP", None, []), ("NEG", None, []), ("DEQUANTIZE", None, [])],
                               with_int16=True))
    with pytest.raises(QsimError) as e:
        generate(g, tmp_path / "out")
    msg = str(e.value)
    for needle in ("op #0 EXP", "op #1 NEG", "op #2 DEQUANTIZE (output 'y2'): the output is int8", "3 problem(s)"):
        assert needle in msg, msg
    assert "op #4" not in msg and "f32" not in msg
    assert not (tmp_path / "out").exists()  # nothing written


def test_output_directory_errors(tmp_path):
    path = shared_model("hello_world_int8.tflite")
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(QsimError, match="not a directory"):
        generate(path, f)
    with pytest.raises(QsimError, match="cannot create output directory"):
        generate(path, f / "sub")
    d = tmp_path / "full"
    d.mkdir()
    (d / "keep.txt").write_text("user file")
    with pytest.raises(QsimError, match="not empty"):
        generate(path, d)
    generate(path, d, force=True)
    assert (d / "keep.txt").read_text() == "user file"


def test_cli_exit_codes(tmp_path, capsys):
    from qsim.cli import main
    path = shared_model("hello_world_int8.tflite")
    assert main(["codegen", str(path), "-o", str(tmp_path / "ok"), "--name", "3 hello-world"]) == 0
    out = capsys.readouterr().out
    assert "arena" in out and (tmp_path / "ok" / "m_3_hello_world.h").is_file()
    need_tool("gcc")
    make(tmp_path / "ok", "host")  # the sanitized name compiles warning-free
    assert (tmp_path / "ok" / "m_3_hello_world_run").is_file()
    assert main(["codegen", str(path), "-o", str(tmp_path / "ok")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["codegen", str(tmp_path / "missing.tflite"), "-o", str(tmp_path / "x")]) == 2
    capsys.readouterr()
    assert main(["codegen", str(shared_model("kws_ref_model_float32.tflite")), "-o", str(tmp_path / "f")]) == 2
    assert "float model" in capsys.readouterr().err and not (tmp_path / "f").exists()


def test_zero_size_tensor_is_refused_at_generation_time(tmp_path):
    """C has no zero-length arrays: a tensor with a zero dimension is named in the error, nothing is written."""
    from qsim import ir
    from qsim.builder import ModelBuilder
    b = ModelBuilder(description="zero-size")
    x = b.add_input("x", (1, 4), np.int8, scale=0.1, zero_point=0)
    e = b.add_input("empty", (1, 0), np.int8, scale=0.1, zero_point=0)
    y = b.add_tensor("y", (1, 4), np.int8, scale=0.1, zero_point=0)
    b.add_op("CONCATENATION", [x, e], [y], ir.ConcatenationOptions(axis=1))
    b.mark_output(y)
    model = tmp_path / "zero.tflite"
    model.write_bytes(b.build())
    out = tmp_path / "out"
    with pytest.raises(QsimError, match="'empty' has zero elements"):
        generate(model, out)
    assert not out.exists() or not any(out.iterdir())
