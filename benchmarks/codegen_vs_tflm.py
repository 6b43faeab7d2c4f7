"""Benchmark (not a test): `qsim codegen` C vs TFLite Micro vs LiteRT BUILTIN_REF, per shared model.

For each int8 shared model the generated C is built natively with gcc -O2 and timed by
its own harness (main.c, clock() around NAME_invoke, many repetitions); TFLM's Python
runtime (native interpreter underneath) and LiteRT with OpResolverType.BUILTIN_REF are
timed around invoke().  Outputs on the same seeded random inputs are compared bit for bit
with TFLM.  RAM: the generated static arena (graph inputs/outputs live in the caller's
buffers, so "+I/O" adds them for a like-for-like figure) vs TFLM's arena as its
RecordingMicroAllocator reports it (total = head (tensors) + tail (persistent)).

    python benchmarks/codegen_vs_tflm.py [--models a,b] [--repeats N] [--json out.json]

Targets from the issue: >= 3x faster than TFLM, arena <= 0.8x TFLM's, bit-exact.
"""
from __future__ import annotations

import argparse
import contextlib
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


def time_loop(fn, min_seconds: float = 1.0, min_iters: int = 5) -> float:
    """Median-free simple timing: seconds per call over >= min_iters calls and >= min_seconds."""
    fn()  # warm-up
    n, start = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - start < min_seconds:
        fn()
        n += 1
    return (time.perf_counter() - start) / n


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


def bench_c(path: Path, name: str, build: Path, samples, repeats: int):
    res = generate(path, build, name=name, force=True)
    subprocess.run(["make", "-s", "-C", str(build), "host", "OPT=-O2"], check=True, capture_output=True)
    inp, outp = build / "bench_in.bin", build / "bench_out.bin"
    with open(inp, "wb") as f:
        for s in samples:
            f.write(s.tobytes())
    r = subprocess.run([str(build / f"{name}_run"), str(inp), str(outp), str(repeats)], capture_output=True,
                       text=True, check=True)
    us = float(re.search(r"([\d.]+) us per inference", r.stdout).group(1))
    out = np.fromfile(outp, dtype=np.int8).reshape(len(samples), -1)
    return us * 1e-6, out, res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--samples", type=int, default=5, help="seeded random inputs per model")
    ap.add_argument("--repeats", type=int, default=50, help="C harness repetitions per input")
    ap.add_argument("--build-dir", default=str(REPO / "build" / "codegen_bench"))
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        path = MODELS_DIR / f"{name}.tflite"
        g = load(path)
        t = g.tensors[g.inputs[0]]
        rng = np.random.default_rng(7)
        samples = [rng.integers(-128, 128, size=t.shape, dtype=np.int8) for _ in range(args.samples)]
        c_sec, c_out, res = bench_c(path, name, Path(args.build_dir) / name, samples, args.repeats)
        tflm_sec, tflm_out, tflm_total, tflm_head = bench_tflm(path, samples)
        litert_sec, litert_note = bench_litert(path, samples)
        io_bytes = sum(g.tensors[i].nbytes for i in g.inputs) + sum(g.tensors[o].nbytes for o in g.outputs)
        rows.append(dict(model=name, macs=res.total_macs, c_us=c_sec * 1e6, tflm_us=tflm_sec * 1e6,
                         litert_us=None if litert_sec is None else litert_sec * 1e6, litert_note=litert_note,
                         speedup_vs_tflm=tflm_sec / c_sec, arena=res.arena_bytes, arena_plus_io=res.arena_bytes + io_bytes,
                         tflm_arena_total=tflm_total, tflm_arena_head=tflm_head,
                         arena_ratio=res.arena_bytes / tflm_total if tflm_total else None,
                         weights=res.weights_bytes, bit_exact=bool(np.array_equal(c_out, tflm_out))))
    hdr = (f"{'model':<24}{'MACs':>10}{'C us':>10}{'TFLM us':>10}{'LiteRT us':>11}{'x TFLM':>8}"
           f"{'arena':>8}{'+I/O':>8}{'TFLM arena':>11}{'ratio':>7}  bit-exact")
    print(hdr)
    for r in rows:
        lit = f"{r['litert_us']:>11.1f}" if r["litert_us"] is not None else f"{'refused':>11}"
        print(f"{r['model']:<24}{r['macs']:>10}{r['c_us']:>10.1f}{r['tflm_us']:>10.1f}{lit}"
              f"{r['speedup_vs_tflm']:>8.2f}{r['arena']:>8}{r['arena_plus_io']:>8}{r['tflm_arena_total']:>11}"
              f"{r['arena_ratio']:>7.2f}  {'yes' if r['bit_exact'] else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
