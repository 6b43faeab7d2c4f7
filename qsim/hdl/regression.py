"""The standard regression for a valid/ready requantization unit (a cocotb test module).

Run by :mod:`qsim.hdl.runner` (``qsim hdl-test``), configured by the JSON file named in
``QSIM_HDL_CONFIG``: ``ports`` (:class:`qsim.hdl.ports.PortMap` as JSON), ``vectors`` (a
``qsim vectors`` folder or null), ``seed``, ``random_beats``, ``out_dir`` (where the coverage
report and a port-map error are written for the runner).  Tests:

* ``directed_corners``: :func:`qsim.hdl.beats.directed_beats` + the arithmetic edges, light gaps/stalls;
* ``random_backpressure``: seeded random beats, 30 % valid gaps and 30 % ready stalls;
* ``latency``: one beat into an idle unit, from any phase: equal to ``latency`` of the port map
  when given, else the same every time (reported);
* ``reset_mid_stream``: reset with a stalled full pipeline and in a flowing stream; nothing stale
  comes out, the next stream is exact;
* ``real_layer_replay``: the vectors folder's layer (skipped without one), against its expected
  outputs (e.g. TFLM's).

Expected values: :func:`qsim.fixedpoint.requantize` (through :class:`~qsim.hdl.beats.Beats`) or
the vectors file.  Functional coverage (:mod:`qsim.hdl.coverage`) accumulates over the tests.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb

from . import checks
from ..errors import QsimError
from .coverage import RequantCoverage
from .ports import PortMap
from .stream import Harness

PORT_ERROR = "port_map_error.txt"
COVERAGE_JSON = "coverage.json"


def _config() -> dict:
    path = os.environ.get("QSIM_HDL_CONFIG")
    if not path:
        raise RuntimeError("qsim.hdl.regression needs QSIM_HDL_CONFIG (run it with `qsim hdl-test`)")
    return json.loads(Path(path).read_text(encoding="utf-8"))


CFG = _config()
PORTS = PortMap.from_json(json.dumps(CFG["ports"]))
SEED = int(CFG.get("seed", 1))
OUT = Path(CFG["out_dir"])
COVERAGE = RequantCoverage(PORTS.rounding, PORTS.scheme)


async def _start(dut) -> Harness:
    h = Harness(dut, PORTS)
    try:
        await h.start()
    except QsimError as e:
        (OUT / PORT_ERROR).write_text(str(e), encoding="utf-8")
        raise
    return h


def _done(dut) -> None:
    (OUT / COVERAGE_JSON).write_text(json.dumps(COVERAGE.to_dict()), encoding="utf-8")
    dut._log.info("%s", COVERAGE.report())


@cocotb.test()
async def directed_corners(dut):
    """Hand-picked corners (ties of both signs at every shift, INT32_MIN*INT32_MIN, wraps, clamps)
    and the arithmetic edges, with light gaps and stalls."""
    h = await _start(dut)
    await checks.directed_corners(h, SEED, COVERAGE)
    _done(dut)


@cocotb.test()
async def random_backpressure(dut):
    """Seeded random beats with 30 % valid gaps and 30 % ready stalls."""
    h = await _start(dut)
    await checks.random_stream(h, SEED, int(CFG.get("random_beats", 2000)), coverage=COVERAGE)
    _done(dut)


@cocotb.test()
async def latency(dut):
    """One beat into an idle unit: always the same latency, the port map's when it gives one."""
    h = await _start(dut)
    dut._log.info("latency: %d cycles", await checks.idle_latency(h, SEED))


@cocotb.test()
async def reset_mid_stream(dut):
    """Reset with a stalled full pipeline and in a flowing stream: nothing stale comes out after
    it, and the next stream is exact."""
    h = await _start(dut)
    await checks.reset_mid_stream(h, SEED, coverage=COVERAGE)
    _done(dut)


@cocotb.test(skip=not CFG.get("vectors"))
async def real_layer_replay(dut):
    """A real layer's accumulators and per-channel tables (a ``qsim vectors`` folder) through the
    unit, compared with the folder's expected int8 outputs."""
    from ..vectors import load_vectors
    h = await _start(dut)
    v = load_vectors(CFG["vectors"])
    await checks.layer_replay(h, v, SEED, COVERAGE)
    dut._log.info("replay %s op %d: %d x %d int8 outputs equal the vectors' expected values", v.model,
                  v.op_index, v.rows, v.channels)
    _done(dut)
