"""Benchmark (not a test): `qsim codegen` C vs TFLite Micro vs LiteRT BUILTIN_REF, per shared model.

Time per inference, measured the same way for every engine: this process's CPU time
(time.process_time; the wall-time ratio is printed too, "x wall") over a Python loop that
calls one native function per inference on an input already in place --
the generated NAME_invoke through ctypes (the generated C built with gcc -O2 as a shared
library), TFLM's Interpreter.invoke (pybind11) and LiteRT's invoke (BUILTIN_REF kernels).
Included: the inference, the one Python->native call (its cost is measured on an empty C
function through ctypes and printed: "call us"), and for the generated C the copy of the
outputs into the caller's buffer.  Not included: setting inputs and reading outputs for
TFLM/LiteRT, interpreter construction/AllocateTensors, process start-up.  TFLM runs with its
default configuration (kAllocationRecording, not kPreserveAllTensors).  The generated C's own
harness time (main.c: clock(), i.e. process CPU time, in a C loop without Python) is printed
too ("harness"), for reference only; the ratio "x TFLM" uses the like-for-like figures.

RAM, like for like: the generated code's static arena plus its graph inputs/outputs (which
live in the caller's buffers, so "+I/O" adds them) against
  * TFLM's arena head: its non-persistent tensor memory (activations incl. graph inputs and
    outputs, plus scratch buffers) -- the same things, "ratio head";
  * TFLM's arena total = head + tail, the tail being persistent interpreter data (eval
    tensors, node/registration structs, per-op data such as per-channel multipliers) --
    "ratio total".  The generated code keeps its per-op parameters as const tables in flash
    and has no interpreter structures, so that ratio is every byte of RAM each needs, stack
    excluded on both sides.
TFLM's figures are what its RecordingMicroAllocator reports.  Outputs on the same seeded
random inputs are compared bit for bit with TFLM.

    python benchmarks/codegen_vs_tflm.py [--models a,b] [--repeats N] [--json out.json]

Targets from the issue: >= 3x faster than TFLM, arena <= 0.8x TFLM's, bit-exact.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qsim.codegen import generate  # noqa: E402
from qsim.codegen.emit import KERNEL_SOURCES  # noqa: E402
from qsim.loader import load  # noqa: E402

MODELS_DIR = REPO.parent / "shared" / "models"
MODELS = ["ad01_int8", "hello_world_int8", "kws_ref_model", "micro_speech_quantized", "person_detect",
          "pretrainedResnet_quant", "vww_96_int8"]


@contextlib.contextmanager
def capture_fd2():
    """Capture what native code writes to file descriptor 2 (TFLM's allocation report)."""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        box = {}
        try:
            yield box
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            box["text"] = tmp.read().decode(errors="replace")


def time_loop(fn, min_seconds: float = 1.0, min_iters: int = 5) -> tuple[float, float]:
    """(wall, CPU) seconds per call of ``fn`` over >= min_iters calls and >= min_seconds of wall
    time, after one warm-up call.  CPU = this process's CPU time (time.process_time), which, like
    main.c's clock(), does not grow when a loaded machine schedules other processes."""
    fn()  # warm-up
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while n < min_iters or time.perf_counter() - start < min_seconds:
        fn()
        n += 1
    return (time.perf_counter() - start) / n, (time.process_time() - cpu) / n


def bench_tflm(path: Path, samples):
    from tflite_micro.python.tflite_micro import runtime
    it = runtime.Interpreter.from_file(str(path))
    outs = []
    for s in samples:
        it.set_input(s, 0)
        it.invoke()
        outs.append(np.asarray(it.get_output(0)).reshape(-1).copy())
    with capture_fd2() as box:
        it.print_allocations()
    total = re.search(r"Arena allocation total (\d+)", box["text"])
    head = re.search(r"Arena allocation head (\d+)", box["text"])
    it.set_input(samples[0], 0)
    sec = time_loop(it.invoke)
    return sec, np.stack(outs), int(total.group(1)) if total else None, int(head.group(1)) if head else None


def bench_litert(path: Path, samples):
    try:
        from ai_edge_litert import interpreter as li
        it = li.Interpreter(model_path=str(path), experimental_op_resolver_type=li.OpResolverType.BUILTIN_REF)
        it.allocate_tensors()
    except Exception as e:  # LiteRT refuses person_detect (per-channel bias on axis 3)
        return None, f"refused: {str(e).splitlines()[0][:80]}"
    idx = it.get_input_details()[0]["index"]
    it.set_tensor(idx, samples[0])
    return time_loop(it.invoke), ""


NOP_C = "void qbench_nop(void);\nvoid qbench_nop(void) {}\n"


def _shared_lib(build: Path, name: str, sources: list[str]) -> ctypes.CDLL:
    """gcc -O2 (the harness's OPT) as a shared library, loaded with ctypes."""
    so = build / f"lib{name}.so"
    subprocess.run(["gcc", "-O2", "-std=c99", "-shared", "-fPIC", "-o", str(so), *sources], cwd=build,
                   check=True, capture_output=True)
    return ctypes.CDLL(str(so))


def call_overhead(build: Path) -> float:
    """Seconds per ctypes call of an empty C function from a Python loop (the timing's own cost)."""
    build.mkdir(parents=True, exist_ok=True)
    (build / "qbench_nop.c").write_text(NOP_C)
    nop = _shared_lib(build, "qbench_nop", ["qbench_nop.c"]).qbench_nop
    nop.restype, nop.argtypes = None, []
    return time_loop(lambda: nop())


def bench_c(path: Path, name: str, build: Path, g, samples, repeats: int):
    """The generated C: its own harness (clock(), C loop) and NAME_invoke through ctypes, timed like
    TFLM's invoke.  Returns (ctypes s/inference, harness s/inference, outputs via ctypes, outputs via
    the harness, codegen result)."""
    res = generate(path, build, name=name, force=True)
    subprocess.run(["make", "-s", "-C", str(build), "host", "OPT=-O2"], check=True, capture_output=True)
    inp, outp = build / "bench_in.bin", build / "bench_out.bin"
    with open(inp, "wb") as f:
        for s in samples:
            f.write(s.tobytes())
    r = subprocess.run([str(build / f"{name}_run"), str(inp), str(outp), str(repeats)], capture_output=True,
                       text=True, check=True)
    harness_us = float(re.search(r"([\d.]+) us per inference", r.stdout).group(1))
    harness_out = np.fromfile(outp, dtype=np.int8).reshape(len(samples), -1)

    lib = _shared_lib(build, name, [f"{name}.c", f"{name}_weights.c", *KERNEL_SOURCES])
    ins = [np.zeros(g.tensors[t].shape, g.tensors[t].dtype) for t in g.inputs]
    outs = [np.zeros(g.tensors[t].shape, g.tensors[t].dtype) for t in g.outputs]
    invoke = getattr(lib, f"{name}_invoke")
    invoke.restype, invoke.argtypes = ctypes.c_int, [ctypes.c_void_p] * (len(ins) + len(outs))
    args = [ctypes.c_void_p(a.ctypes.data) for a in ins + outs]
    got = []
    for s in samples:
        ins[0][...] = s
        if invoke(*args) != 0:
            raise RuntimeError(f"{name}_invoke failed")
        got.append(outs[0].reshape(-1).copy())
    ins[0][...] = samples[0]
    sec = time_loop(lambda: invoke(*args))
    return sec, harness_us * 1e-6, np.stack(got), harness_out, res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--samples", type=int, default=5, help="seeded random inputs per model")
    ap.add_argument("--repeats", type=int, default=50, help="C harness repetitions per input")
    ap.add_argument("--build-dir", default=str(REPO / "build" / "codegen_bench"))
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    call_s = call_overhead(Path(args.build_dir) / "_nop")
    rows = []
    for name in args.models.split(","):
        path = MODELS_DIR / f"{name}.tflite"
        g = load(path)
        t = g.tensors[g.inputs[0]]
        rng = np.random.default_rng(7)
        samples = [rng.integers(-128, 128, size=t.shape, dtype=np.int8) for _ in range(args.samples)]
        c_sec, harness_sec, c_out, harness_out, res = bench_c(path, name, Path(args.build_dir) / name, g, samples,
                                                              args.repeats)
        tflm_sec, tflm_out, tflm_total, tflm_head = bench_tflm(path, samples)
        litert_sec, litert_note = bench_litert(path, samples)
        io_bytes = sum(g.tensors[i].nbytes for i in g.inputs) + sum(g.tensors[o].nbytes for o in g.outputs)
        c_ram = res.arena_bytes + io_bytes
        rows.append(dict(model=name, macs=res.total_macs, c_us=c_sec[1] * 1e6, tflm_us=tflm_sec[1] * 1e6,
                         litert_us=None if litert_sec is None else litert_sec[1] * 1e6, litert_note=litert_note,
                         c_wall_us=c_sec[0] * 1e6, tflm_wall_us=tflm_sec[0] * 1e6,
                         litert_wall_us=None if litert_sec is None else litert_sec[0] * 1e6,
                         speedup_vs_tflm=tflm_sec[1] / c_sec[1], speedup_vs_tflm_wall=tflm_sec[0] / c_sec[0],
                         call_overhead_us=call_s[1] * 1e6,
                         c_harness_clock_us=harness_sec * 1e6,
                         arena=res.arena_bytes, arena_plus_io=c_ram,
                         tflm_arena_total=tflm_total, tflm_arena_head=tflm_head,
                         arena_ratio_head=c_ram / tflm_head if tflm_head else None,
                         arena_ratio_total=c_ram / tflm_total if tflm_total else None,
                         weights=res.weights_bytes,
                         bit_exact=bool(np.array_equal(c_out, tflm_out) and np.array_equal(harness_out, tflm_out))))
    print("time: us per inference from a Python loop, one native call each (C via ctypes, TFLM/LiteRT via their "
          "bindings; inputs already set, outputs not read; 'call us' = that call's own cost), as process CPU time;")
    print("'x wall' = the same ratio from wall time (time.perf_counter), which a loaded machine inflates.")
    print("C harness: main.c's clock() (CPU time) in a C loop, for reference only. RAM: C arena + graph I/O vs "
          "TFLM arena head (activations+I/O+scratch) and total (head + persistent tail); stack excluded.")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared machine: times are noisy)")
    hdr = (f"{'model':<24}{'MACs':>10}{'C us':>10}{'TFLM us':>10}{'LiteRT us':>11}{'x TFLM':>8}{'x wall':>8}{'call us':>8}"
           f"{'harness':>9}{'arena':>8}{'+I/O':>8}{'TFLM head':>10}{'TFLM tot':>9}{'r head':>7}{'r tot':>7}  bit-exact")
    print(hdr)
    for r in rows:
        lit = f"{r['litert_us']:>11.1f}" if r["litert_us"] is not None else f"{'refused':>11}"
        print(f"{r['model']:<24}{r['macs']:>10}{r['c_us']:>10.1f}{r['tflm_us']:>10.1f}{lit}"
              f"{r['speedup_vs_tflm']:>8.2f}{r['speedup_vs_tflm_wall']:>8.2f}{r['call_overhead_us']:>8.2f}{r['c_harness_clock_us']:>9.1f}"
              f"{r['arena']:>8}{r['arena_plus_io']:>8}{r['tflm_arena_head']:>10}{r['tflm_arena_total']:>9}"
              f"{r['arena_ratio_head']:>7.2f}{r['arena_ratio_total']:>7.2f}  {'yes' if r['bit_exact'] else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
