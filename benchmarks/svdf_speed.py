"""Benchmark (not a test): qsim on TFLM's keyword benchmark model (7 SVDF, int16 in/out) next to
TFLite Micro, in one process.

    python benchmarks/svdf_speed.py [MODEL] [--repeat N]

Median wall time (time.perf_counter) of: qsim one sample (``PreparedGraph.run([x],
keep_all=False)``, profile "tflm"), qsim batched (64 samples in one run, per sample), and the TFLite
Micro runner qsim's check uses (kPreserveAllTensors, variables reset before each invoke).
Construction and prepare excluded.  One BLAS thread.  The 1-minute load average is printed.
LiteRT is not timed: its SVDF reads this model's int8 state as int16 (no defined answer) and
its default kernels crash on it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qsim import refrun  # noqa: E402
from qsim.interpreter import prepare_graph  # noqa: E402
from qsim.loader import load  # noqa: E402


def median_time(f, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=str(REPO.parent / "shared" / "models" / "keyword_scrambled_8bit.tflite"))
    ap.add_argument("--repeat", type=int, default=300)
    args = ap.parse_args()
    g = load(args.model)
    prep = prepare_graph(g, "tflm")
    t = g.tensors[g.inputs[0]]
    info = np.iinfo(t.dtype)
    rng = np.random.default_rng(0)
    x = rng.integers(info.min, info.max + 1, t.shape).astype(t.dtype)
    xs = rng.integers(info.min, info.max + 1, (64,) + tuple(t.shape[1:])).astype(t.dtype)
    tflm = refrun.TFLMRunner(Path(args.model).read_bytes(), graph=g)
    print(f"load average {os.getloadavg()[0]:.2f}")
    single = median_time(lambda: prep.run([x], keep_all=False), args.repeat)
    batch = median_time(lambda: prep.run([xs], keep_all=False), max(args.repeat // 6, 5)) / 64
    ref = median_time(lambda: tflm.run([x], []), args.repeat)
    print(f"qsim one sample      {1e6 * single:10.1f} us")
    print(f"qsim batch of 64     {1e6 * batch:10.1f} us/sample")
    print(f"TFLite Micro         {1e6 * ref:10.1f} us (preserve-all, reset + invoke)")
    print(f"load average {os.getloadavg()[0]:.2f}")
    sys.stdout.flush()
    os._exit(0)  # the TFLM runtime's teardown is not needed


if __name__ == "__main__":
    main()
