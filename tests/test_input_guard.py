"""Input guard (qsim.inputs.range_guard): data whose range does not fit the input's quantization
get a warning with the fix in the model's own scale and zero point, in run, eval and compare.

The demo model's input: int8, scale 1/255, zero point -128 (represents [0, 1])."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import qsim
from qsim.inputs import range_guard

EX = Path(__file__).resolve().parents[1] / "examples" / "models"
INT8, FLOAT, DATA = EX / "demo_cnn_int8.tflite", EX / "demo_cnn_float.tflite", EX / "demo_testset.npz"


@pytest.fixture(scope="module")
def demo():
    m = qsim.load(INT8)
    z = np.load(DATA)
    return m, m.graph.tensors[m.graph.inputs[0]], z["x"][:40], z["y"][:40]


def _real(x):
    return ((x.astype(np.float64) + 128) / 255.0).astype(np.float32)  # exact [0, 1] reals


def test_guard_cases(demo):
    _, t, x, _ = demo
    assert range_guard(_real(x), t, True) is None
    assert range_guard(x, t, False) is None
    px = range_guard(_real(x) * 255, t, True)
    assert "0..255 pixels" in px and "p / 255" in px and "0.00392157" in px and "-128" in px
    q = range_guard(x.astype(np.float32), t, True)
    assert "already quantized" in q and "real = 0.00392157 * (q - (-128))" in q
    u8 = range_guard(np.clip(x.astype(np.int16) + 128, 0, 127).astype(np.uint8), t, False)
    assert "uint8" in u8 and "q = p - 128" in u8
    cast = range_guard(_real(x).astype(np.int8), t, False)  # [0, 1] reals cast, not quantized: 0s and 1s
    assert "cast to integers" in cast and "q = round(x / 0.00392157) + (-128)" in cast
    assert range_guard(np.where(x > 0, 127, -128).astype(np.int8), t, False) is None  # a binary image, quantized
    assert range_guard(_real(x) * 1.001, t, True) is None  # a hair above 1: saturation, not a units mistake


def test_guard_in_run_eval_compare(demo, tmp_path):
    m, _, x, y = demo
    np.save(tmp_path / "px.npy", _real(x[:1]) * 255)
    _, warns = m.read_inputs(tmp_path / "px.npy", float_input=True)
    assert any("0..255 pixels" in w for w in warns)
    np.savez(tmp_path / "px.npz", x=_real(x) * 255, y=y)
    ds = m.dataset(tmp_path / "px.npz")
    assert len(ds.warnings) == 1 and "0..255 pixels" in ds.warnings[0]
    res = m.eval(tmp_path / "px.npz")
    assert any("0..255 pixels" in n for n in res.notes)
    rep = m.compare(FLOAT, tmp_path / "px.npz", limit=8)
    assert any("0..255 pixels" in w for w in rep.warnings) and rep.to_dict()["warnings"] == rep.warnings
    np.savez(tmp_path / "ok.npz", x=_real(x), y=y)
    assert m.dataset(tmp_path / "ok.npz").warnings == []
    assert m.compare(FLOAT, tmp_path / "ok.npz", limit=8).warnings == []


def test_guard_cli_stderr(demo, tmp_path):
    from test_cli import qsim as run_cli
    _, _, x, y = demo
    np.savez(tmp_path / "u8.npz", x=np.clip(x.astype(np.int16) + 128, 0, 127).astype(np.uint8), y=y)
    r = run_cli("eval", str(INT8), "--data", str(tmp_path / "u8.npz"), "--json")
    assert r.returncode == 0 and "qsim: warning:" in r.stderr and "q = p - 128" in r.stderr
