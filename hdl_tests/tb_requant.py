"""cocotb tests of rtl/requant_unit.sv; run by hdl_tests/test_requant_rtl.py (pytest).

Built on qsim's installed verification kit (:mod:`qsim.hdl`): the same harness, driver, monitor,
scoreboard, beats and checks that ``qsim hdl-test`` runs on a user's unit, through the port map
of qsim's own unit (:func:`qsim.hdl.ports.qsim_requant_ports`).

Configuration comes from the environment set by the pytest runner:
RQ_LANES, RQ_ROUNDING ("double" | "single"), RQ_SCHEME ("int8" | "int16x8": OUT16 | "uint8": OUT_UNSIGNED), RQ_SEED, RQ_VECTORS (random
vectors = lanes x beats), RQ_REPLAY (a ``qsim vectors`` folder written by the runner).
"""
from __future__ import annotations

import os

import cocotb

from qsim import rtl_info
from qsim.hdl import checks
from qsim.hdl.beats import edge_beats, random_beats
from qsim.hdl.ports import qsim_requant_ports
from qsim.hdl.stream import Harness, check, run_stream

LANES = int(os.environ.get("RQ_LANES", "4"))
ROUNDING = os.environ.get("RQ_ROUNDING", "double")
SCHEME = os.environ.get("RQ_SCHEME", "int8")
SEED = int(os.environ.get("RQ_SEED", "1234"))
LATENCY = rtl_info.requant_latency(ROUNDING)
PORTS = qsim_requant_ports(LANES, ROUNDING, SCHEME)  # its latency is rtl_info's: every stream checks against it


async def start(dut) -> Harness:
    h = Harness(dut, PORTS)
    await h.start()
    return h


@cocotb.test()
async def directed_corners(dut):
    """Hand-picked corners (ties of both signs at every shift, INT32_MIN*INT32_MIN, wraps, clamps)."""
    h = await start(dut)
    n = await checks.directed_corners(h, SEED, edges=False)
    dut._log.info("directed: %d beats, %d lane results exact", n, n * LANES)


@cocotb.test()
async def random_with_gaps_and_backpressure(dut):
    """Seeded random vectors (RQ_VECTORS results), random valid gaps and random m_ready stalls."""
    h = await start(dut)
    n = int(os.environ.get("RQ_VECTORS", "100000"))
    await checks.random_stream(h, SEED, -(-n // LANES))
    dut._log.info("random: %d lane results exact", -(-n // LANES) * LANES)


@cocotb.test()
async def latency_matches_rtl_info(dut):
    """One beat into an idle unit: output transfer exactly REQUANT_LATENCY cycles after input, which
    is also the accelerator model's default requant depth."""
    h = await start(dut)
    measured = await checks.idle_latency(h, SEED)  # == PORTS.latency == rtl_info's, or it fails
    from qsim.accel.config import HwConfig
    profile = {"double": "tflm", "single": "single"}[ROUNDING]
    accel_depth = HwConfig(rounding_profile=profile).resolved_requant_depth()
    assert measured == accel_depth, f"measured {measured}, the accel model assumes {accel_depth}"
    dut._log.info("measured latency %d cycles == qsim.rtl_info == accel default (%r)", measured, ROUNDING)


@cocotb.test()
async def edge_cases(dut):
    """The arithmetic edges (qsim.hdl.beats.edge_rows: int32 overflow of single rounding, both ends
    of the shift range, acc + bias wrap, zero point next to int32's ends).  tests/test_edges.py runs
    the same rows through qsim.fixedpoint, a hand-derived golden and the generated C."""
    h = await start(dut)
    vec = edge_beats(LANES, ROUNDING, SCHEME)
    sb, mon, _ = await run_stream(h, vec, SEED, gap_prob=0.1, stall_prob=0.1)
    check(sb, mon, len(vec))
    dut._log.info("edges: %d beats, %d lane results equal qsim.fixedpoint", len(vec), len(vec) * LANES)


@cocotb.test()
async def full_throughput(dut):
    """No gaps, no back-pressure: one beat (LANES results) accepted and delivered every cycle."""
    h = await start(dut)
    n = 1000
    vec = random_beats(SEED + 11, n, LANES, ROUNDING, SCHEME)
    sb, mon, drv = await run_stream(h, vec, SEED, gap_prob=0.0, stall_prob=0.0)
    check(sb, mon, n)
    acc = drv.accept_cycles
    assert acc[-1] - acc[0] == n - 1, f"{n} beats took {acc[-1] - acc[0] + 1} input cycles"
    out = sb.out_cycles
    assert out[-1] - out[0] == n - 1, f"{n} results took {out[-1] - out[0] + 1} output cycles"
    assert set(sb.latencies) == {LATENCY}, set(sb.latencies)
    dut._log.info("throughput: %d beats in %d cycles (%d lanes/cycle)", n, out[-1] - acc[0] + 1, LANES)


@cocotb.test()
async def reset_mid_stream(dut):
    """Reset with a stalled full pipeline and in a flowing stream: nothing stale comes out after it,
    and the next stream is exact."""
    h = await start(dut)
    await checks.reset_mid_stream(h, SEED, trials=4)


@cocotb.test(skip=not os.environ.get("RQ_REPLAY"))
async def real_layer_replay(dut):
    """A real layer's int32 accumulators + per-channel tables through the RTL, compared with the
    reference interpreter's int8 output of that layer (the folder's expected values)."""
    from qsim.vectors import load_vectors
    h = await start(dut)
    v = load_vectors(os.environ["RQ_REPLAY"])
    await checks.layer_replay(h, v, SEED)
    dut._log.info("replay %s op %d: %d x %d int8 outputs equal the reference", v.model, v.op_index, v.rows,
                  v.channels)
