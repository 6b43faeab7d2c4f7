"""Where a batched run spends its time, op by op.

    python benchmarks/batch_op_profile.py vww_96_int8 [--batch 64] [--repeat 3] [--top 25] [--clock cpu|wall]
    python benchmarks/batch_op_profile.py zoo --batch 16

One seeded random int8 batch ``(--batch,) + input shape[1:]`` through
``PreparedGraph.run([xs], keep_all=False)`` (profile "tflm"), timed per op through run()'s
``on_op`` hook: an op's time is the clock between the previous hook call (or the run's start)
and its own, i.e. its kernel plus the interpreter's bookkeeping for it.  Per op the median
over ``--repeat`` runs (after one warm-up run); printed: the total per sample, the time per op
type, and the ``--top`` slowest ops with their input / output shapes (filter shape and stride
for convolutions).  ``--clock cpu`` (default) is the process CPU time, steadier on a loaded
machine than ``wall``.  Model names are files in ../shared/models (without .tflite) or ``zoo``
(qsim.zoo.mobilenet_v2_like()).  ``--requant`` also times the requantization inside the
kernels (every ``DoubleRequantPlan.apply`` / ``finish`` call, wrapped for the timed runs) and
prints its share of the run per plan kind, with the time per output value.  Not a test: it
prints figures.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qsim.interpreter import prepare_graph  # noqa: E402
from qsim.loader import load_bytes  # noqa: E402

SHARED = REPO.parent / "shared" / "models"
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def model_bytes(name: str) -> bytes:
    if name == "zoo":
        from qsim import zoo
        return bytes(zoo.mobilenet_v2_like())
    return (SHARED / f"{name}.tflite").read_bytes()


def _time_requant(clock) -> list:
    """Wrap fixedpoint.DoubleRequantPlan.apply / finish to add each call's time and output count
    to the last Counter of the returned list (keys (kind, "s") and (kind, "n"))."""
    from qsim import fixedpoint as fp
    runs: list = []
    apply, finish = fp.DoubleRequantPlan.apply, fp.DoubleRequantPlan.finish

    def note(kind, t0, size):
        if runs:
            runs[-1][(kind, "s")] += clock() - t0
            runs[-1][(kind, "n")] += size

    def timed_apply(self, acc, *a, **k):
        t0 = clock()
        got = apply(self, acc, *a, **k)
        note(self.kind, t0, np.size(acc))
        return got

    def timed_finish(self, z, *a, **k):
        t0 = clock()
        got = finish(self, z, *a, **k)
        note(self.kind + " (finish of a fused GEMM)", t0, np.size(z))
        return got
    fp.DoubleRequantPlan.apply, fp.DoubleRequantPlan.finish = timed_apply, timed_finish
    return runs


def _print_requant(runs: list, totals: list) -> None:
    """The requantization's share of the run (the run with the median total), per plan kind."""
    k = int(np.argsort(totals)[len(totals) // 2])
    got, total = runs[k], totals[k]
    spent = sum(v for (_, what), v in got.items() if what == "s")
    print(f"requantization: {spent * 1e3:.2f} ms, {100 * spent / total:.1f}% of the run")
    for kind in sorted({kd for kd, _ in got}, key=lambda kd: -got[(kd, "s")]):
        s, n = got[(kind, "s")], got[(kind, "n")]
        print(f"  {kind:38s} {s * 1e3:8.2f} ms  {n:>11,d} values  {s / max(n, 1) * 1e9:6.2f} ns/value")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    ap.add_argument("--requant", action="store_true", help="also time the requantization plans' calls")
    args = ap.parse_args(argv)
    clock = CLOCKS[args.clock]
    pg = prepare_graph(load_bytes(model_bytes(args.model)))
    g = pg.graph
    shape = tuple(g.tensors[g.inputs[0]].shape[1:])
    xs = np.random.default_rng(0).integers(-128, 128, size=(args.batch,) + shape, dtype=np.int8)
    pg.run([xs], keep_all=False)
    requant = _time_requant(clock) if args.requant else None
    per_op: dict[int, list] = collections.defaultdict(list)
    totals = []
    for _ in range(args.repeat):
        last = [clock()]
        seen = []

        def hook(prepared, ins, outs):
            t = clock()
            seen.append((prepared, ins, outs, t - last[0]))
            last[0] = t

        if requant is not None:
            requant.append(collections.Counter())
        t0 = clock()
        pg.run([xs], keep_all=False, on_op=hook)
        totals.append(clock() - t0)
        for k, rec in enumerate(seen):
            per_op[k].append(rec)
    total = float(np.median(totals))
    print(f"{args.model}, batch {args.batch}, clock {args.clock}: {total * 1e3:.1f} ms per run, "
          f"{total / args.batch * 1e3:.3f} ms per sample")
    rows = []
    for k, recs in per_op.items():
        prepared, ins, outs, _ = recs[0]
        dt = float(np.median([r[3] for r in recs]))
        desc = ""
        if prepared.op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            desc = f"filter {tuple(np.shape(ins[1]))} stride {prepared.op.options.stride_h}"
        rows.append((dt, k, prepared.op.opcode, tuple(np.shape(ins[0])), tuple(np.shape(outs[0])), desc))
    by_type: dict[str, float] = collections.defaultdict(float)
    for r in rows:
        by_type[r[2]] += r[0]
    ops_total = sum(by_type.values()) or 1.0
    for opcode, t in sorted(by_type.items(), key=lambda kv: -kv[1]):
        print(f"  {opcode:24s} {t * 1e3:9.2f} ms  {100 * t / ops_total:5.1f}%")
    if requant is not None:
        _print_requant(requant, totals)
    print(f"slowest {args.top} ops:")
    for dt, k, opcode, s_in, s_out, desc in sorted(rows, reverse=True)[:args.top]:
        print(f"  {dt * 1e3:8.2f} ms  op {k:3d} {opcode:20s} {str(s_in):22s} -> {str(s_out):22s} {desc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
