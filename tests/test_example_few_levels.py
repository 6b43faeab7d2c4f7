"""examples/few_levels.py (worked example (d) of `qsim compare`): one white frame in the calibration
set stretches conv2's range from [0, 12.5] to [0, 609]; `compare` must name conv2 (fewest levels,
lowest isolated SQNR) and say to recalibrate it.  The README quotes the printed lines.

Hand bound on the levels: conv2's float values on the held-out digits stay within [0, 12.53] and the
int8 step is 608.7 / 255 = 2.39 with the zero point at qmin, so a digit's conv2 values round to
q - zp in {0, ..., 5}: at most 6 levels per sample and over the dataset."""
from __future__ import annotations

import re

from test_example_fixed_ranges import run_example

README_LINES = (
    "clean: top-1 int8 99.17% (float 99.17%), output SQNR 40.9 dB",
    "conv2 levels per sample min 66 median 78 (dataset 219), SQNR 41.9 dB (isolated 42.5), float [0, 12.5] vs int8 [0, 12.5]",
    "one outlier: top-1 int8 97.22% (float 99.17%), output SQNR 18.8 dB",
    "conv2 levels per sample min 3 median 4 (dataset 6), SQNR 11.6 dB (isolated 11.6), float [0, 12.5] vs int8 [0, 609]",
)


def test_few_levels_example():
    out = run_example("few_levels.py", README_LINES)
    clean, outlier = out.split("one outlier:", 1)
    lv = [int(v) for v in re.findall(r"levels per sample min (\d+) median (\d+) \(dataset (\d+)\)", outlier)[0]]
    assert lv[1] <= 4 and lv[2] <= 6  # few levels, within the hand bound
    assert "fewest levels [\"op 1 CONV_2D 'conv2'\"]" in outlier
    assert "lowest isolated SQNR [\"op 1 CONV_2D 'conv2'\"]" in outlier
    assert "what to try first: recalibrate the range of op 1 CONV_2D 'conv2'" in outlier
    assert "fewest levels []" in clean and "conv2" not in clean.split("suspects:")[1]
