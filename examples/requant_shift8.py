"""A hand-picked ">> 8" requantizer against the real M0 * 2^shift multipliers (issue 10, example c).

A designer who wants to drop the requant multiplier looks at the demo's scales, sees real
multipliers near 2^-9 and wires a plain right shift.  This script measures what that costs on the
shipped demo digit classifier and its float twin over the 360 held-out digits, with qsim's public
requant variants (``requant=`` in ``Model.eval`` / ``Model.run`` / ``Model.compare``):

  double      the real per-channel multipliers, TFLite Micro's arithmetic (the reference)
  shift=8     every GEMM layer rescaled by ">> 8" (M = 2^-8), the hand-picked shift
  shift-only  each channel's multiplier rounded to its nearest power of two (the best shifter)

For each: top-1 accuracy (eval), elements of all op outputs that differ from the reference and
the largest difference in LSB (run, keep="all"), and what ``compare`` against the float twin says:
output SQNR, top-1 agreement, and the SQNR of each GEMM layer.

    python examples/requant_shift8.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import qsim

HERE = Path(__file__).resolve().parent
MODEL = HERE / "models" / "demo_cnn_int8.tflite"
FLOAT = HERE / "models" / "demo_cnn_float.tflite"
TESTSET = HERE / "models" / "demo_testset.npz"
VARIANTS = ("double", "shift=8", "shift-only")

m = qsim.load(MODEL)
x = np.load(TESTSET)["x"]
gemm = [p for p in m.prepared().ops if p.kernel.accumulate is not None]
print(f"model: {MODEL.name}, {len(x)} held-out digits; real requant multipliers M = M0 * 2^(shift-31):")
for p in gemm:
    rq = p.params.requant
    lg = np.log2(rq.multiplier / 2.0 ** 31) + rq.shift
    print(f"  op {p.op.index} {p.op.opcode:<16} log2 M in [{lg.min():.2f}, {lg.max():.2f}]")
print()
print(f"{'variant':<11} {'top-1':>7} {'elements != double':>19} {'max |diff|':>10} {'output SQNR':>11} "
      f"{'agreement':>9}  GEMM layer SQNR dB")
for v in VARIANTS:
    ev = m.eval(TESTSET, requant=None if v == "double" else v)
    run = m.run(x, keep="all", requant=None if v == "double" else v)
    differ, worst = (0, 0) if run.requant is None else (run.requant.differ, run.requant.max_abs_diff_lsb)
    rep = m.compare(FLOAT, TESTSET, requant=None if v == "double" else v)
    mod = rep.model
    layers = {r["op_index"]: r["sqnr_db"] for r in rep.rows}
    per = " ".join(f"{layers[p.op.index]:.1f}" for p in gemm if p.op.index in layers)
    print(f"{v:<11} {100 * ev.top1:6.2f}% {differ:>19} {worst:>10} {mod['output_sqnr_db']:>8.1f} dB "
          f"{100 * mod['top1_agreement']:>8.2f}%  {per}")
