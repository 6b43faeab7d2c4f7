"""examples/fixed_ranges.py (worked example of `qsim compare`): the numbers the README quotes are
what the script prints, and the dummy [0, 6] ranges show up where they must: the logits (float
range about [-52, 25]) clip most of their values, the calibrated model clips none."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README_LINES = (
    "calibrated: top-1 int8 98.33% (float 98.61%), agreement 99.72%, output SQNR 40.0 dB",
    "fixed [0,6]: top-1 int8 98.06% (float 98.61%), agreement 99.44%, output SQNR 15.1 dB",
    "logits   SQNR   0.2 dB  clipped 94.97%  float [-52.5, 24.6] vs int8 [0, 6]",
)


def test_fixed_ranges_example():
    r = subprocess.run([sys.executable, str(REPO / "examples" / "fixed_ranges.py")], capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for line in README_LINES:
        assert line in out, (line, out)
        assert line in (REPO / "README.md").read_text(encoding="utf-8")
    cal, fixed = out.split("fixed [0,6]:", 1)
    assert "clipped  0.00%" in cal and "clipped 94.97%" not in cal
    assert "recalibrate the range of op 3 FULLY_CONNECTED 'logits'" in fixed


UNQUANTIZED_LINES = (
    "quantized: top-1 int8 98.33%, float 98.61%, input levels used 17 of 256",
    "cast: top-1 int8 8.06%, float 8.06%, input levels used 2 of 256",
)


def test_unquantized_input_example():
    """examples/unquantized_input.py: the cast data use 2 input levels (0 and 1: the 16 grey levels
    of the digits all round down or to 1), the guard names the mistake and the fix."""
    r = subprocess.run([sys.executable, str(REPO / "examples" / "unquantized_input.py")], capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    for line in UNQUANTIZED_LINES:
        assert line in r.stdout, (line, r.stdout)
        assert line in (REPO / "README.md").read_text(encoding="utf-8")
    quant, cast = r.stdout.split("cast:", 1)
    assert "warning" not in quant and "cast to integers without quantization" in cast
