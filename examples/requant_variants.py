"""Every requant arithmetic variant on the demo digit classifier: the README's table.

For each variant of the GEMM layers' requant unit (qsim.fixedpoint.RequantVariant), ``Model.eval``
on the 360 held-out digits gives top-1 accuracy, the change against the reference arithmetic
(TFLite Micro's double rounding, the tflm profile), and how many output elements differ from the
reference and by how much (LSB).  Prints a Markdown table.

    python examples/requant_variants.py
"""
from __future__ import annotations

from pathlib import Path

import qsim

HERE = Path(__file__).resolve().parent
VARIANTS = ("double", "single", "float32", "shift-only", "shift=8", "mult-bits=16", "mult-bits=8", "mult-bits=4",
            "truncate")

m = qsim.load(HERE / "models" / "demo_cnn_int8.tflite")
print("| variant | top-1 | vs double (points) | output elements that differ | max \\|diff\\| LSB |")
print("|---|---:|---:|---:|---:|")
for v in VARIANTS:
    e = m.eval(HERE / "models" / "demo_testset.npz", requant=v)
    r = e.requant
    print(f"| `{v}` | {100 * e.top1:.2f}% | {100 * (e.top1 - r.reference_top1):+.2f} | {r.differ} of {r.elements} "
          f"| {r.max_abs_diff_lsb} |")
