"""The newcomer's examples run and show what they claim (goldens: the demo's held-out labels and TFLM)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import require_module

REPO = Path(__file__).resolve().parents[1]


def test_common_mistakes_example():
    require_module("tflite_micro", "the example compares against TFLite Micro")
    r = subprocess.run([sys.executable, str(REPO / "examples" / "common_mistakes.py")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = {m.group(1): (float(m.group(2)), int(m.group(3)))
            for m in re.finditer(r"^(\S+)\s+([\d.]+)%\s+(\d+)", r.stdout, re.M)}
    assert set(rows) == {"right", "no-quantize", "shift-by-8", "wrong-round"}, r.stdout
    assert rows["right"][0] >= 95.0 and rows["right"][1] == 0       # accurate and bit-exact with TFLM
    assert rows["no-quantize"][0] < 50.0                             # unquantized input collapses accuracy
    assert rows["shift-by-8"][1] > 0 and rows["wrong-round"][1] > 0  # both visibly diverge from TFLM


def test_firmware_roundtrip_example(tmp_path):
    """Generated C on the 360 held-out digits: bit-exact with qsim's TFLM profile, accurate on the labels.
    The output directory is given relative to the working directory, as `make demo` does."""
    r = subprocess.run([sys.executable, str(REPO / "examples" / "firmware_roundtrip.py"), "build/fw"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"accuracy ([\d.]+)%, (\d+) of (\d+) output bytes differ", r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) >= 95.0 and int(m.group(2)) == 0 and int(m.group(3)) == 3600


def test_python_api_example(tmp_path):
    """examples/python_api.py: every API call on the demo model; accuracy from the held-out labels,
    `check` from the reference interpreters, `make check` from the generated firmware."""
    require_module("tflite_micro", "the example compares against TFLite Micro")
    r = subprocess.run([sys.executable, str(REPO / "examples" / "python_api.py"), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "quantize(dequantize(x)) == x: True" in r.stdout
    acc = float(re.search(r"batch of 360: accuracy ([\d.]+)%", r.stdout).group(1))
    assert acc >= 95.0
    assert "check: ok True, first divergence None" in r.stdout
    assert re.search(r"profile: \d+ cycles", r.stdout) and (tmp_path / "out" / "trace.json").is_file()
    if shutil.which("gcc"):
        assert "make check: passed" in r.stdout and "all 200 bytes bit-exact with qsim" in r.stdout
    assert "QsimError as expected: input 'image' must be int8" in r.stdout
    assert r.stdout.rstrip().endswith("all steps agree")
