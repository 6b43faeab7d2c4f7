"""qsim's Python API, every call once, on the shipped demo model (8x8 digits CNN).

    python examples/python_api.py [OUT_DIR]

Load, inspect the tensors, quantize real data, run one sample and a batch, read the
result by tensor name, compare every tensor with the reference interpreters, profile
the accelerator model, generate C firmware and (when gcc is installed) run its
`make check` against qsim's expected outputs.  Exit code 1 if any step disagrees.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import qsim

HERE = Path(__file__).resolve().parent
MODEL = HERE / "models" / "demo_cnn_int8.tflite"
out_dir = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="qsim_api_"))
failures = []

# --- load and look at the tensors
m = qsim.load(MODEL)  # a path or the bytes of a .tflite file
print(f"qsim {qsim.__version__}: {m}")
inp, out = m.inputs[0], m.outputs[0]
print(f"input  '{inp.name}' #{inp.index} {list(inp.shape)} {inp.dtype}: real = {inp.scale:.6g} * (q - ({inp.zero_point}))")
print(f"output '{out.name}' #{out.index} {list(out.shape)} {out.dtype}: real = {out.scale:.6g} * (q - ({out.zero_point}))")

# --- real data -> the model's integers (TFLite's QUANTIZE rule), and back
data = np.load(HERE / "models" / "demo_testset.npz")
images, labels = data["x"], data["y"].astype(np.int64)
real = inp.dequantize(images)  # pixels in [0, 1]
q = inp.quantize(real)
print(f"quantize(dequantize(x)) == x: {np.array_equal(q, images)}")
if not np.array_equal(q, images):
    failures.append("quantize round trip")

# --- one sample: results by tensor name (or index), dequantized, top-k
r = m.run(q[0])
print(f"run: '{out.name}' = {r[out.name].tolist()}  (the same by index: {np.array_equal(r[out.index], r[out.name])})")
print(f"dequantized: {np.round(r.dequantized()[out.name], 3).tolist()}")
print("top-3: " + ", ".join(f"[{t.index}] {t.real:.3f}" for t in r.top_k(3)) + f"  (label {labels[0]})")

# --- a batch: an [N, 8, 8, 1] array (a list of samples works too), chunked by batch_size
rb = m.run(q, batch_size=128)
pred = rb[out.name].argmax(axis=1)
acc = float(np.mean(pred == labels))
print(f"batch of {rb.batch}: accuracy {acc:.2%}")
if acc < 0.95:
    failures.append("accuracy")

# --- a what-if requant arithmetic for the GEMM layers (here: every multiplier rounded to 8 bits),
#     reported against the reference arithmetic on the same samples
rv = m.run(q, requant="mult-bits=8")
print(f"requant: {rv.requant.render()}")
ev = m.eval(HERE / "models" / "demo_testset.npz", requant="shift-only")
print(f"requant: eval shift-only top-1 {ev.top1:.2%} vs reference {ev.requant.reference_top1:.2%}")
if m.run(q, requant="double").requant.differ != 0:
    failures.append("requant double != tflm")

# --- every tensor of one run, by name (what `qsim dump` writes)
full = m.run(q[0], keep="all")
print("all tensors: " + ", ".join(f"{k} {list(v.shape)}" for k, v in full.tensors.items()))

# --- every tensor against LiteRT BUILTIN_REF and TFLite Micro, each under its own rounding profile
try:
    rep = m.check(inputs=3, reference="both")
    print(f"check: ok {rep.ok}, first divergence {rep.first_divergence}, {len(rep.rows)} per-op rows")
    if not rep.ok:
        failures.append("check")
except qsim.QsimError as e:  # the reference interpreters are optional extras (pip install qsim[ref])
    print(f"check: skipped ({e})")

# --- the accelerator model: a preset plus any field override
p = m.profile(hw="edge16", rows=8, cols=8)
t = p.totals
print(f"profile: {t['cycles']} cycles, {t['latency_ms']:.4f} ms, MAC utilization {t['mac_utilization_pct']:.1f}%, "
      f"{len(p.layers)} layers, {t['energy_pj'] / 1e6:.3f} uJ")
# ... a narrower accumulator with the bias preloaded into it, any preset path as an override
pn = m.profile(hw="edge16", acc_bits=16, **{"accumulator.bias": "accumulator", "accumulator.check": "fold"})
print(f"profile: 16-bit accumulator: {pn.totals['acc_overflows']} overflows, "
      f"{pn.totals['outputs_changed']} of {pn.totals['output_elements']} outputs changed vs the exact result")
out_dir.mkdir(parents=True, exist_ok=True)
p.to_csv(out_dir / "profile.csv")
p.trace(out_dir / "trace.json")
print(f"profile: CSV {out_dir / 'profile.csv'}, Perfetto trace {out_dir / 'trace.json'}")
try:
    print(f"profile: as a pandas DataFrame, {p.to_pandas().shape[0]} rows")
except qsim.QsimError as e:  # pandas is optional
    print(f"profile: to_pandas skipped ({e})")

# --- golden requant vectors of the first GEMM layer for an RTL testbench (npz, CSV, $readmemh, SV bench)
v = m.vectors(0, inputs=q[:2], out_dir=out_dir / "vectors")
print(f"vectors: op {v.op_index} {v.opcode}, {v.rows} x {v.channels} accumulators, {v.rounding} rounding "
      f"-> {out_dir / 'vectors'}")

try:
    print(f"profile: roofline -> {p.roofline(out_dir / 'roofline.png')}")
except qsim.QsimError as e:  # matplotlib is optional
    print(f"profile: roofline skipped ({e})")

# --- a design-space sweep: 2 x 2 machines, timing only, in this process (workers=None: a local Dask cluster)
sw = qsim.sweep([MODEL], {"array": {"rows": [8, 16], "cols": [8, 16]}}, hw="edge16",
                out=out_dir / "sweep.parquet", values=None, workers=0, progress=False)
rows = sw.table().to_pylist()
best = min(rows, key=lambda r: r["cycles"])
print(f"sweep: {sw.rows} points in {sw.out}; fastest {best['array.rows']}x{best['array.cols']}: {best['cycles']} cycles")
if [r["cycles"] for r in rows] != [m.profile("edge16", inputs=None, rows=r["array.rows"], cols=r["array.cols"]).totals["cycles"]
                                   for r in rows]:
    failures.append("sweep")

# --- C firmware for the model, with qsim's expected outputs for 20 digits; `make check` compares
g = m.codegen(out_dir / "firmware", name="digits", inputs=q[:20], force=True)
print(f"codegen: {g.name}, arena {g.arena_bytes} bytes, weights {g.weights_bytes} bytes -> {g.out_dir}")
if shutil.which("gcc") and shutil.which("make"):
    mk = subprocess.run(["make", "-s", "-C", str(g.out_dir), "check"], capture_output=True, text=True)
    print("make check: " + ("passed" if mk.returncode == 0 else "FAILED") + "\n  "
          + "\n  ".join(line for line in mk.stdout.splitlines() if line.startswith("qk_check")))
    if mk.returncode != 0:
        failures.append("make check")
else:
    print("make check: skipped (gcc/make not installed)")

# --- bad input is a QsimError with a one-paragraph message, never a wrong answer
try:
    m.run(real[0])
except qsim.QsimError as e:
    print(f"QsimError as expected: {e}")

print("FAILED: " + ", ".join(failures) if failures else "all steps agree")
sys.exit(1 if failures else 0)
