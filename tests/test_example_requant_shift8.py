"""examples/requant_shift8.py: its printed numbers reproduced independently.

The ">> 8" row is recomputed the way a user would patch it by hand: every GEMM layer's
multiplier table replaced by TFLite's own QuantizeMultiplier(2^-8), run through the ordinary
double-rounding kernels, no requant variant involved.
"""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from qsim import fixedpoint as fp
from qsim.interpreter import prepare_graph
from qsim.loader import load

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"


def _rows(stdout: str) -> dict:
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"^(double|shift=8|shift-only)\s+([\d.]+)%\s+(\d+)\s+(\d+)\s+(-?[\d.]+) dB\s+([\d.]+)%\s+(.*)$", line)
        if m:
            rows[m[1]] = (float(m[2]), int(m[3]), int(m[4]), float(m[5]), float(m[6]), [float(v) for v in m[7].split()])
    return rows


def _hand_shift8(g):
    prep = prepare_graph(g, "tflm")
    m0, sh = fp.quantize_multiplier(2.0 ** -8)
    for p in prep.ops:
        rq = getattr(p.params, "requant", None)
        if p.kernel.accumulate is not None and rq is not None:
            p.params = dataclasses.replace(p.params, requant=dataclasses.replace(
                rq, multiplier=np.full_like(rq.multiplier, m0), shift=np.full_like(rq.shift, sh)))
    return prep


def test_requant_shift8_example_numbers():
    r = subprocess.run([sys.executable, str(REPO / "examples" / "requant_shift8.py")], capture_output=True, text=True,
                       cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = _rows(r.stdout)
    assert set(rows) == {"double", "shift=8", "shift-only"}, r.stdout
    g = load(MODELS / "demo_cnn_int8.tflite")
    data = np.load(MODELS / "demo_testset.npz")
    x, y = data["x"], data["y"]
    inp, out = g.inputs[0], g.outputs[0]
    ref = prepare_graph(g, "tflm").run_samples({inp: x}, keep_all=True)
    hand = _hand_shift8(g).run_samples({inp: x}, keep_all=True)
    top1 = lambda v: round(100 * float(np.mean(v[out].argmax(1) == y)), 2)  # noqa: E731
    assert rows["double"][:3] == (top1(ref), 0, 0) and rows["double"][0] == 98.33  # the README's TFLM-exact figure
    diffs = [np.abs(hand[t].astype(np.int64) - ref[t]) for t in ref if t != inp]
    assert rows["shift=8"][:3] == (top1(hand), sum(int(np.count_nonzero(d)) for d in diffs), max(int(d.max()) for d in diffs))
    # the nearest power of two per channel is closer to the float model than one hand-picked shift
    assert rows["shift-only"][3] > rows["shift=8"][3] and rows["double"][3] > rows["shift-only"][3]
    assert min(rows["shift=8"][5]) < 1.0 < min(rows["double"][5])  # the layers' own SQNR collapses


def test_requant_variants_example_reproduces_the_readme_table():
    r = subprocess.run([sys.executable, str(REPO / "examples" / "requant_variants.py")], capture_output=True,
                       text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) == 9 and rows[0] == "| `double` | 98.33% | +0.00 | 0 of 3600 | 0 |"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert all(row in readme for row in rows), [row for row in rows if row not in readme]
    g = load(MODELS / "demo_cnn_int8.tflite")
    data = np.load(MODELS / "demo_testset.npz")
    x, out = data["x"], g.outputs[0]
    ref = prepare_graph(g, "tflm").run_samples({g.inputs[0]: x})[out]
    hand = _hand_shift8(g).run_samples({g.inputs[0]: x})[out]
    d = np.abs(hand.astype(np.int64) - ref)
    top1 = 100 * float(np.mean(hand.argmax(1) == data["y"]))
    shift8 = next(row for row in rows if row.startswith("| `shift=8`"))
    assert shift8.startswith(f"| `shift=8` | {top1:.2f}% |") and f"| {int(np.count_nonzero(d))} of {d.size} | {int(d.max())} |" in shift8
