"""Generic-gate synthesis of rtl/requant_unit.sv with yosys; prints cells per lane.

Usage: python hdl_tests/synth_report.py [--lanes 4] [--rounding double single]
(`make synth`).  Synthesizes LANES=1 and LANES=N (flattened, yosys's internal
gate library), so cells per lane = (cells(N) - cells(1)) / (N - 1) and the
shared handshake/sideband logic = cells(1) - cells per lane.  Needs yosys on
PATH (Debian: apt-get install yosys).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from qsim import rtl

SOURCES = rtl.sources()


def synth_stats(lanes: int, rounding: str) -> dict[str, int]:
    """Cell counts by type (plus 'total' and 'flops') of one flattened configuration."""
    if shutil.which("yosys") is None:
        raise SystemExit("yosys not found on PATH (Debian: apt-get install yosys)")
    with tempfile.TemporaryDirectory() as tmp:
        stat = Path(tmp) / "stat.txt"
        script = (f"read_verilog -sv {' '.join(map(str, SOURCES))}; "
                  f"chparam -set LANES {lanes} -set SINGLE_ROUNDING {int(rounding == 'single')} requant_unit; "
                  f"synth -top requant_unit -flatten; tee -q -o {stat} stat")
        subprocess.run(["yosys", "-q", "-p", script], check=True)
        text = stat.read_text()
    cells = {m[0]: int(m[1]) for m in re.findall(r"^\s+(\$\S+)\s+(\d+)\s*$", text, re.MULTILINE)}
    cells["total"] = int(re.search(r"Number of cells:\s+(\d+)", text).group(1))
    cells["flops"] = sum(v for k, v in cells.items() if "DFF" in k)
    return cells


def per_lane(lanes: int, rounding: str) -> dict[str, float]:
    one, many = synth_stats(1, rounding), synth_stats(lanes, rounding)
    lane_cells = (many["total"] - one["total"]) / (lanes - 1)
    lane_flops = (many["flops"] - one["flops"]) / (lanes - 1)
    return {"lanes": lanes, "total": many["total"], "flops": many["flops"], "cells_per_lane": lane_cells,
            "flops_per_lane": lane_flops, "shared_cells": one["total"] - lane_cells}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", type=int, default=4)
    ap.add_argument("--rounding", nargs="+", default=["double", "single"], choices=["double", "single"])
    a = ap.parse_args(argv)
    if a.lanes < 2:
        ap.error("--lanes must be >= 2 (cells per lane is a difference of two builds)")
    print(f"{'rounding':8} {'LANES':>5} {'cells':>7} {'flops':>6} {'cells/lane':>10} {'flops/lane':>10} {'shared':>7}")
    for r in a.rounding:
        s = per_lane(a.lanes, r)
        print(f"{r:8} {s['lanes']:>5} {s['total']:>7} {s['flops']:>6} {s['cells_per_lane']:>10.0f} "
              f"{s['flops_per_lane']:>10.0f} {s['shared_cells']:>7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
