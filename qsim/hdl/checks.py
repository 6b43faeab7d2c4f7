"""The checks of the standard regression as plain coroutines on a :class:`~qsim.hdl.stream.Harness`,
so that :mod:`qsim.hdl.regression` (any DUT, ``qsim hdl-test``) and qsim's own hdl_tests (its
``requant_unit``) run the same code.  Each raises AssertionError on a failure; cocotb imported.
"""
from __future__ import annotations

import random

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge

from .beats import directed_beats, edge_beats, random_beats, replay_beats
from .stream import Harness, Scoreboard, StreamDriver, StreamMonitor, assert_silent, check, run_stream


async def directed_corners(h: Harness, seed: int, coverage=None, edges: bool = True) -> int:
    """:func:`~qsim.hdl.beats.directed_beats` (+ :func:`~qsim.hdl.beats.edge_beats`), light gaps
    and stalls; returns the number of beats checked."""
    p = h.ports
    sets = [directed_beats(p.lanes, p.rounding, p.scheme)] + ([edge_beats(p.lanes, p.rounding, p.scheme)]
                                                              if edges else [])
    for k, beats in enumerate(sets):
        sb, mon, _ = await run_stream(h, beats, seed + k, gap_prob=0.1, stall_prob=0.1, coverage=coverage)
        check(sb, mon, len(beats))
    return sum(len(b) for b in sets)


async def random_stream(h: Harness, seed: int, beats: int, gap_prob: float = 0.3, stall_prob: float = 0.3,
                        coverage=None):
    """Seeded random beats with valid gaps and ready stalls; no beat faster than the port map's
    latency (when it gives one).  Returns (scoreboard, monitor, driver)."""
    p = h.ports
    b = random_beats(seed, beats, p.lanes, p.rounding, p.scheme)
    sb, mon, drv = await run_stream(h, b, seed, gap_prob=gap_prob, stall_prob=stall_prob, coverage=coverage)
    check(sb, mon, len(b))
    if p.latency is not None:
        assert min(sb.latencies) >= p.latency, f"a beat came out after {min(sb.latencies)} < {p.latency} cycles"
    return sb, mon, drv


async def idle_latency(h: Harness, seed: int) -> int:
    """One beat into an idle unit, from three idle phases: the latency in cycles, the same every
    time and equal to the port map's ``latency`` when it gives one."""
    p = h.ports
    beats = random_beats(seed + 7, 1, p.lanes, p.rounding, p.scheme)
    seen = []
    for gap in range(3):
        sb, mon, _ = await run_stream(h, beats, seed + gap, gap_prob=0.0, stall_prob=0.0)
        check(sb, mon, 1)
        seen += sb.latencies
        await ClockCycles(h.clk, gap + 1)
    assert len(set(seen)) == 1, f"latency differs between idle phases: {seen}"
    if p.latency is not None:
        assert seen[0] == p.latency, f"measured latency {seen[0]} cycles, the port map says {p.latency}"
    return seen[0]


async def reset_mid_stream(h: Harness, seed: int, trials: int = 3, coverage=None) -> None:
    """Reset with a stalled full pipeline (trial 0) and at random moments of a flowing stream:
    nothing stale comes out after it, and the next stream is exact."""
    p = h.ports
    lat = p.latency or 8
    rng = random.Random(seed)
    for trial in range(trials):
        sb = Scoreboard(p.lanes, h.dut._log)
        mon = StreamMonitor(h, sb, seed=seed + trial, stall_prob=1.0 if trial == 0 else 0.3)
        mon_task = cocotb.start_soon(mon.run())
        drv = StreamDriver(h, sb, seed=seed + trial, gap_prob=0.2)
        send = cocotb.start_soon(drv.send(random_beats(seed + 100 + trial, 200, p.lanes, p.rounding, p.scheme)))
        await ClockCycles(h.clk, 3 * lat if trial == 0 else rng.randrange(5, 60))
        drv.stop = True
        h.set_reset(True)
        h.sig(p.in_valid).value = 0
        await ClockCycles(h.clk, 1 + trial % 2)
        await RisingEdge(h.clk)
        h.set_reset(False)
        send.cancel()
        mon_task.cancel()
        assert not sb.errors and not mon.protocol_errors, (sb.errors[:3], mon.protocol_errors[:3])
        sb.flush()
        h.sig(p.out_ready).value = 1
        h.sig(p.in_valid).value = 0
        await assert_silent(h, 2 * lat + 2)
        beats = random_beats(seed + 200 + trial, 50, p.lanes, p.rounding, p.scheme)
        sb2, mon2, _ = await run_stream(h, beats, seed + trial, gap_prob=0.2, stall_prob=0.2, coverage=coverage)
        check(sb2, mon2, len(beats))


async def layer_replay(h: Harness, vectors, seed: int, coverage=None) -> None:
    """A real layer (:class:`qsim.vectors.LayerVectors`) through the unit, against its expected
    int8 outputs, light gaps and stalls."""
    beats, valid = replay_beats(vectors, h.ports.lanes)
    sb, mon, _ = await run_stream(h, beats, seed, gap_prob=0.1, stall_prob=0.1, coverage=coverage, valid=valid)
    check(sb, mon, len(beats))
