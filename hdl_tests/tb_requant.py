"""cocotb tests of rtl/requant_unit.sv; run by hdl_tests/test_requant_rtl.py (pytest).

Configuration comes from the environment set by the pytest runner:
RQ_LANES, RQ_ROUNDING ("double" | "single"), RQ_SEED, RQ_VECTORS (random
vectors = lanes x beats), RQ_REPLAY (path of an .npz written by the runner).
"""
from __future__ import annotations

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from qsim import rtl_info
from requant_tb import (CLOCK_NS, Driver, Monitor, Scoreboard, Vectors, directed_vectors, edge_vectors,
                        random_vectors)

LANES = int(os.environ.get("RQ_LANES", "4"))
ROUNDING = os.environ.get("RQ_ROUNDING", "double")
SEED = int(os.environ.get("RQ_SEED", "1234"))
LATENCY = rtl_info.requant_latency(ROUNDING)


async def start(dut) -> None:
    """Clock, idle inputs, two cycles of synchronous reset."""
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.s_valid.value = 0
    dut.m_ready.value = 0
    for name in ("s_acc", "s_bias", "s_mult", "s_shift", "s_zp", "s_act_min", "s_act_max"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0


async def drain(dut, sb: Scoreboard, max_cycles: int = 2000) -> None:
    """Wait until every accepted beat came out (or fail after max_cycles)."""
    for _ in range(max_cycles):
        if not sb.pending:
            break
        await RisingEdge(dut.clk)
    await ClockCycles(dut.clk, LATENCY + 2)  # anything extra would show up as unexpected
    assert not sb.pending, f"{len(sb.pending)} accepted beats never came out"


def check(sb: Scoreboard, mon: Monitor, n_expected: int) -> None:
    assert not mon.protocol_errors, mon.protocol_errors[:5]
    assert not sb.errors, f"{len(sb.errors)} mismatches, first: {sb.errors[:5]}"
    assert sb.checked == n_expected, f"checked {sb.checked} beats, expected {n_expected}"


async def run_stream(dut, vec: Vectors, seed: int, gap_prob: float, stall_prob: float, expected=None):
    sb = Scoreboard(LANES, dut._log)
    mon = Monitor(dut, sb, LANES, seed=seed + 1, stall_prob=stall_prob)
    mon_task = cocotb.start_soon(mon.run())
    drv = Driver(dut, sb, seed=seed, gap_prob=gap_prob)
    await drv.send(vec, expected)
    await drain(dut, sb)
    mon_task.cancel()
    return sb, mon, drv


@cocotb.test()
async def directed_corners(dut):
    """Hand-picked corners (ties of both signs at every shift, INT32_MIN*INT32_MIN, wraps, clamps)."""
    await start(dut)
    vec = directed_vectors(LANES, ROUNDING)
    sb, mon, _ = await run_stream(dut, vec, SEED, gap_prob=0.1, stall_prob=0.1)
    check(sb, mon, len(vec))
    dut._log.info("directed: %d beats, %d lane results exact", len(vec), len(vec) * LANES)


@cocotb.test()
async def random_with_gaps_and_backpressure(dut):
    """Seeded random vectors (RQ_VECTORS results), random valid gaps and random m_ready stalls."""
    await start(dut)
    n = int(os.environ.get("RQ_VECTORS", "100000"))
    vec = random_vectors(SEED, -(-n // LANES), LANES, ROUNDING)
    sb, mon, drv = await run_stream(dut, vec, SEED, gap_prob=0.3, stall_prob=0.3)
    check(sb, mon, len(vec))
    assert sb.latencies and min(sb.latencies) >= LATENCY, f"a beat came out after {min(sb.latencies)} < {LATENCY} cycles"
    dut._log.info("random: %d lane results exact", len(vec) * LANES)


@cocotb.test()
async def latency_matches_rtl_info(dut):
    """One beat into an idle unit: output transfer exactly REQUANT_LATENCY cycles after input."""
    await start(dut)
    vec = random_vectors(SEED + 7, 1, LANES, ROUNDING)
    for gap in range(3):  # the same from any idle phase
        sb, mon, drv = await run_stream(dut, vec, SEED + gap, gap_prob=0.0, stall_prob=0.0)
        check(sb, mon, 1)
        assert sb.latencies == [LATENCY], f"measured latency {sb.latencies}, qsim.rtl_info says {LATENCY}"
        await ClockCycles(dut.clk, gap + 1)
    # the measured number is also what the accelerator model uses by default for this rounding
    from qsim.accel.config import HwConfig
    profile = {"double": "tflm", "single": "single"}[ROUNDING]
    accel_depth = HwConfig(rounding_profile=profile).resolved_requant_depth()
    assert sb.latencies == [accel_depth], f"measured {sb.latencies}, the accel model assumes {accel_depth}"
    dut._log.info("measured latency %d cycles == qsim.rtl_info == accel default (%r)", sb.latencies[0], ROUNDING)


@cocotb.test()
async def edge_cases(dut):
    """The arithmetic edges (requant_tb.edge_rows: int32 overflow of single rounding, both ends of
    the shift range, acc + bias wrap, zero point next to int32's ends).  tests/test_edges.py runs
    the same rows through qsim.fixedpoint, a hand-derived golden and the generated C."""
    await start(dut)
    vec = edge_vectors(LANES, ROUNDING)
    sb, mon, _ = await run_stream(dut, vec, SEED, gap_prob=0.1, stall_prob=0.1)
    check(sb, mon, len(vec))
    dut._log.info("edges: %d beats, %d lane results equal qsim.fixedpoint", len(vec), len(vec) * LANES)


@cocotb.test()
async def full_throughput(dut):
    """No gaps, no back-pressure: one beat (LANES results) accepted and delivered every cycle."""
    await start(dut)
    n = 1000
    vec = random_vectors(SEED + 11, n, LANES, ROUNDING)
    sb, mon, drv = await run_stream(dut, vec, SEED, gap_prob=0.0, stall_prob=0.0)
    check(sb, mon, n)
    acc = drv.accept_cycles
    assert acc[-1] - acc[0] == n - 1, f"{n} beats took {acc[-1] - acc[0] + 1} input cycles"
    out = sb.out_cycles
    assert out[-1] - out[0] == n - 1, f"{n} results took {out[-1] - out[0] + 1} output cycles"
    assert set(sb.latencies) == {LATENCY}, set(sb.latencies)
    dut._log.info("throughput: %d beats in %d cycles (%d lanes/cycle)", n, out[-1] - acc[0] + 1, LANES)


async def assert_silent(dut, cycles: int) -> None:
    for _ in range(cycles):
        await RisingEdge(dut.clk)
        await ReadOnly()
        assert not dut.m_valid.value, "stale beat came out after reset"


@cocotb.test()
async def reset_mid_stream(dut):
    """Reset with a stalled full pipeline and in a flowing stream: nothing stale comes out after it,
    and the next stream is exact."""
    await start(dut)
    rng = random.Random(SEED)
    for trial in range(4):
        # 1) fill the pipeline under back-pressure, or 2) reset at a random moment of a flowing stream
        sb = Scoreboard(LANES, dut._log)
        stall = 1.0 if trial == 0 else 0.3
        mon = Monitor(dut, sb, LANES, seed=SEED + trial, stall_prob=stall)
        mon_task = cocotb.start_soon(mon.run())
        drv = Driver(dut, sb, seed=SEED + trial, gap_prob=0.2)
        send = cocotb.start_soon(drv.send(random_vectors(SEED + 100 + trial, 200, LANES, ROUNDING)))
        await ClockCycles(dut.clk, 3 * LATENCY if trial == 0 else rng.randrange(5, 60))
        drv.stop = True
        dut.rst.value = 1
        dut.s_valid.value = 0
        await ClockCycles(dut.clk, 1 + trial % 2)
        await RisingEdge(dut.clk)
        dut.rst.value = 0
        send.cancel()
        mon_task.cancel()
        assert not sb.errors and not mon.protocol_errors, (sb.errors[:3], mon.protocol_errors[:3])
        sb.flush()
        dut.m_ready.value = 1
        dut.s_valid.value = 0
        await assert_silent(dut, 2 * LATENCY + 2)
        # a fresh stream afterwards comes out exact and complete
        vec = random_vectors(SEED + 200 + trial, 50, LANES, ROUNDING)
        sb2, mon2, _ = await run_stream(dut, vec, SEED + trial, gap_prob=0.2, stall_prob=0.2)
        check(sb2, mon2, len(vec))


@cocotb.test(skip=not os.environ.get("RQ_REPLAY"))
async def real_layer_replay(dut):
    """A real CONV_2D layer's int32 accumulators + per-channel tables through the RTL,
    compared with the reference interpreter's int8 output of that layer."""
    await start(dut)
    d = np.load(os.environ["RQ_REPLAY"])
    acc = d["acc"].astype(np.int64)  # [pixels, C]
    ref = d["ref"].astype(np.int64)  # [pixels, C]
    pixels, c = acc.shape
    cp = -(-c // LANES) * LANES  # channels padded to a multiple of LANES
    pad = lambda a, v=0: np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, cp - c)], constant_values=v)  # noqa: E731
    acc_p, ref_p = pad(acc), pad(ref)
    tab = {k: np.broadcast_to(pad(d[k].astype(np.int64)), (pixels, cp)) for k in ("bias", "mult", "shift")}
    beats = pixels * cp // LANES
    per_beat = lambda a: np.ascontiguousarray(a).reshape(beats, LANES)  # noqa: E731
    scalar = lambda k: np.full(beats, int(d[k]), dtype=np.int64)  # noqa: E731
    # golden for the padded lanes is whatever the model says; real lanes must equal the reference
    vec = Vectors(per_beat(acc_p), per_beat(tab["bias"]), per_beat(tab["mult"]), per_beat(tab["shift"]),
                  scalar("zp"), scalar("act_min"), scalar("act_max"), ROUNDING)
    expected = per_beat(np.where(np.arange(cp) < c, ref_p, vec.expected.reshape(pixels, cp))).tolist()
    sb, mon, _ = await run_stream(dut, vec, SEED, gap_prob=0.1, stall_prob=0.1, expected=expected)
    check(sb, mon, beats)
    dut._log.info("replay %s: %d x %d int8 outputs equal the reference", d["name"], pixels, c)
