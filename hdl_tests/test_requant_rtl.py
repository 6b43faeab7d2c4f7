"""RTL verification of rtl/requant_unit.sv: cocotb on Verilator, golden model qsim.fixedpoint.

Each test runs one cocotb test (hdl_tests/tb_requant.py) on a configuration built once per
session (LANES=4, double or single rounding).
"""
from __future__ import annotations

import subprocess

import pytest

from conftest import SOURCES, verilator_cmd

ROUNDINGS = ["double", "single"]
LANES = 4
SEED = 20240601


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_lint_wall_clean(rounding):
    """verilator --lint-only -Wall reports nothing, in both rounding modes."""
    cmd = verilator_cmd("--lint-only", "-Wall", "--top-module", "requant_unit",
                        f"-GSINGLE_ROUNDING={int(rounding == 'single')}", f"-GLANES={LANES}",
                        *map(str, SOURCES))
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and "%Warning" not in r.stderr and "%Error" not in r.stderr, r.stderr


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_directed_corners(rtl, rounding):
    rtl(LANES, rounding).run("directed_corners", RQ_SEED=SEED)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_random_100k_with_gaps_and_backpressure(rtl, rounding):
    rtl(LANES, rounding).run("random_with_gaps_and_backpressure", RQ_SEED=SEED, RQ_VECTORS=100_000)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_latency_equals_rtl_info(rtl, rounding):
    rtl(LANES, rounding).run("latency_matches_rtl_info", RQ_SEED=SEED)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_full_throughput(rtl, rounding):
    rtl(LANES, rounding).run("full_throughput", RQ_SEED=SEED)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_reset_mid_stream(rtl, rounding):
    rtl(LANES, rounding).run("reset_mid_stream", RQ_SEED=SEED)
