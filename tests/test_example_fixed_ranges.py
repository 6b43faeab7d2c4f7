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


def run_example(script: str, lines) -> str:
    """Run examples/<script>; every one of ``lines`` must be in its output and in the README. Its stdout."""
    r = subprocess.run([sys.executable, str(REPO / "examples" / script)], capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for line in lines:
        assert line in r.stdout, (line, r.stdout)
        assert line in readme, line
    return r.stdout


def test_fixed_ranges_example():
    out = run_example("fixed_ranges.py", README_LINES)
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
    quant, cast = run_example("unquantized_input.py", UNQUANTIZED_LINES).split("cast:", 1)
    assert "warning" not in quant and "cast to integers without quantization" in cast
