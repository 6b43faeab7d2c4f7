"""Benchmark (not a test): a model's generated host C, this tree's kernels against a git revision's, timed
alternately in the same minute (the machine's speed drifts by up to 1.5x from one minute to the next).

    python benchmarks/host_c_ab.py [--model keyword_scrambled_8bit] [--base main] [--pairs 8]   # ~30 s

The model's C is generated once (``target="host"``, rounding double, as the native engine builds it) and
compiled twice with ``gcc -std=c99 -O3`` (no -march: SSE2 only on x86-64): with this tree's
codegen/templates kernel sources (qkernels.c/.h, qkernels_int16.c/.h) and with the same files from
``--base``.  Both run the generated harness (``NAME_run``, process CPU time by clock()) on the same random
inputs, state carried from one invocation to the next; their outputs must be byte-identical (else exit 1).
Printed: the least microseconds per inference of each over the pairs, and their ratio.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qsim.codegen import emit  # noqa: E402
from qsim.loader import load  # noqa: E402

KERNELS = ("qkernels.c", "qkernels.h", "qkernels_int16.c", "qkernels_int16.h")


def build(d: Path, name: str) -> Path:
    srcs = ["main.c", f"{name}.c", f"{name}_weights.c", "qkernels.c", "qkernels_int16.c"]
    subprocess.run(["gcc", "-std=c99", "-O3", "-I.", "-o", f"{name}_run", *srcs], cwd=d, check=True)
    return d / f"{name}_run"


def run(exe: Path, repeats: int) -> float:
    r = subprocess.run([str(exe), "input.bin", "output.bin", str(repeats)], cwd=exe.parent, check=True,
                       capture_output=True, text=True)
    return float(re.search(r"([0-9.]+) us per inference", r.stdout).group(1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="keyword_scrambled_8bit")
    ap.add_argument("--base", default="main", help="git revision whose kernel sources are the 'base' build")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=200, help="invocations of each sample per run")
    a = ap.parse_args()
    g = load(REPO.parent / "shared" / "models" / f"{a.model}.tflite")
    with tempfile.TemporaryDirectory() as tmp:
        new, base = Path(tmp) / "new", Path(tmp) / "base"
        emit.generate(g, new, name="m", target="host", rounding="double", force=True)
        subprocess.run(["cp", "-r", str(new), str(base)], check=True)
        for f in KERNELS:
            src = subprocess.run(["git", "show", f"{a.base}:codegen/templates/{f}"], cwd=REPO, check=True,
                                 capture_output=True).stdout
            (base / f).write_bytes(src)
        rng = np.random.default_rng(0)
        raw = b"".join(rng.integers(np.iinfo(t.dtype).min, np.iinfo(t.dtype).max + 1, t.shape).astype(t.dtype)
                       .tobytes() for _ in range(a.samples) for t in (g.tensors[i] for i in g.inputs))
        exes = {}
        for label, d in (("base", base), ("new", new)):
            (d / "input.bin").write_bytes(raw)
            exes[label] = build(d, "m")
        best = {label: float("inf") for label in exes}
        for _ in range(a.pairs):
            for label in exes:
                best[label] = min(best[label], run(exes[label], a.repeats))
        same = (base / "output.bin").read_bytes() == (new / "output.bin").read_bytes()
    print(f"{a.model}: us per inference (least of {a.pairs} alternating runs, {a.samples} samples x {a.repeats}, "
          f"load {os.getloadavg()[0]:.1f}): base ({a.base}) {best['base']:.3f}, new {best['new']:.3f}, "
          f"ratio {best['base'] / best['new']:.2f}; outputs {'identical' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
