"""Benchmark (not a test): the cost of `qsim compare` next to the bare cost of its two runs.

On vww_96 (../shared/models/vww_96_int8.tflite and vww_96_float.tflite) with N seeded random
int8 samples (default 200, ``np.random.default_rng(0)``), in one process:

* bare = LiteRT's float interpreter (BUILTIN_REF kernels, ``experimental_preserve_all_tensors``),
  one invoke per sample reading every matched float tensor, plus qsim's int8 run of the same
  samples batched with every tensor kept (``PreparedGraph.run_samples(keep_all=True)``);
* compare = ``Model.compare(float_model, data)`` on the same samples (matching, both runs, the
  isolated view, all statistics).

Target (issue 10): compare / bare <= 1.5.  Each contender runs ``--repeat`` times alternately;
medians of wall time and of the process's CPU time are reported (on a shared, loaded machine the
CPU-time ratio is the stable one).

    python benchmarks/compare_speed.py [--samples 200] [--repeat 3] [--shared ../shared/models]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import qsim  # noqa: E402
from qsim.compare import match_tensors  # noqa: E402
from qsim.loader import load_bytes  # noqa: E402
from qsim.refrun import LiteRTRunner  # noqa: E402


def bare(m, fblob: bytes, x: np.ndarray, want: list[int], batch: int = 32) -> None:
    pg = m.prepared("tflm")
    gq, gf = m.graph, load_bytes(fblob, validate=False)
    fr = LiteRTRunner(fblob, reference=True)
    qin = m.inputs[0]
    fin = gf.tensors[gf.inputs[0]]
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        pg.run_samples({gq.inputs[0]: xb}, keep_all=True)
        xf = qin.dequantize(xb).astype(np.float32)
        for k in range(len(xb)):
            fr.run([xf[k].reshape(fin.shape)], want)


def timed(f) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of f(); the CPU time is the figure to trust on a
    loaded machine (the wall time also counts the time other processes held the cores)."""
    w, c = time.perf_counter(), time.process_time()
    f()
    return time.perf_counter() - w, time.process_time() - c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "models"))
    a = ap.parse_args()
    d = Path(a.shared)
    qi, fl = d / "vww_96_int8.tflite", d / "vww_96_float.tflite"
    if not qi.is_file() or not fl.is_file():
        print(f"vww_96 models not found under {d}", file=sys.stderr)
        return 2
    m = qsim.load(qi)
    t = m.graph.tensors[m.graph.inputs[0]]
    x = np.random.default_rng(0).integers(-128, 128, size=(a.samples,) + tuple(t.shape[1:]), dtype=np.int64)
    x = x.astype(t.dtype)
    fblob = fl.read_bytes()
    gf = load_bytes(fblob, validate=False)
    mt = match_tensors(m.graph, gf)
    want = sorted(set(mt.pairs.values())) + [gf.outputs[0]]
    tb, tc = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "x.npy"
        np.save(data, x)
        for _ in range(a.repeat):
            tb.append(timed(lambda: bare(m, fblob, x, want)))
            tc.append(timed(lambda: m.compare(fl, data)))
    for k, what in ((0, "wall"), (1, "CPU")):
        b, c = statistics.median(t[k] for t in tb), statistics.median(t[k] for t in tc)
        print(f"vww_96, {a.samples} samples, {a.repeat} rounds (medians, {what} time): bare LiteRT float (all "
              f"tensors kept) + qsim int8 {b:.2f} s; qsim compare {c:.2f} s; overhead {c / b:.2f}x (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
