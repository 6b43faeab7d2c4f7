"""cocotb components for any valid/ready requantization unit, addressed through a
:class:`qsim.hdl.ports.PortMap` (so any signal names, lane count, widths, reset polarity).

* :class:`Harness`: clock, cycle counter, reset, port-map check (a missing signal or wrong width
  is a :class:`qsim.errors.QsimError` naming it);
* :class:`StreamDriver`: pushes :class:`qsim.hdl.beats.Beats` on the input stream, random idle
  cycles (``gap_prob``), data held until accepted; feeds the scoreboard (and coverage) on every
  accepted beat;
* :class:`StreamMonitor`: drives the output ready with random back-pressure (``stall_prob``),
  checks the protocol (data held while stalled, valid not dropped) and hands transfers on;
* :class:`Scoreboard`: in-order comparison with the expected rows (from
  :func:`qsim.fixedpoint.requantize` via Beats, or a ``qsim vectors`` folder via
  :func:`qsim.hdl.beats.replay_beats`), per-beat latency in cycles;
* :func:`run_stream`, :func:`drain`, :func:`check`, :func:`assert_silent`: one stream end to end,
  and the reset check.

Timing: cycle n is the interval after rising edge n (the harness counts edges).  A transfer
sampled at ReadOnly in cycle n happens at edge n + 1; latency = output transfer cycle - input
transfer cycle (qsim's requant_unit: its LATENCY).  cocotb is imported here: use this module
inside a cocotb test.
"""
from __future__ import annotations

import random
from collections import deque

import numpy as np
import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from .. import fixedpoint as fp
from .beats import Beats, pack_lanes, unpack_lanes
from .ports import LANE_FIELDS, PortMap


class Harness:
    """The DUT seen through a port map: clock, cycle count, reset."""

    def __init__(self, dut, ports: PortMap, period_ns: int = 10):
        self.dut, self.ports, self.period_ns = dut, ports, period_ns
        self.cycle = 0
        self._started = False

    def sig(self, name: str):
        return getattr(self.dut, name)

    @property
    def clk(self):
        return self.sig(self.ports.clock)

    async def start(self, reset_cycles: int = 2) -> None:
        """Check the port map, start the clock and the cycle counter, idle inputs, reset."""
        self.ports.check(self.dut, f"top module '{self.dut._name}'")
        if not self._started:
            cocotb.start_soon(Clock(self.clk, self.period_ns, unit="ns").start())
            cocotb.start_soon(self._count())
            self._started = True
        self.idle_inputs()
        self.sig(self.ports.out_ready).value = 0
        await self.reset(reset_cycles)

    async def _count(self) -> None:
        while True:
            await RisingEdge(self.clk)
            self.cycle += 1

    def idle_inputs(self) -> None:
        self.sig(self.ports.in_valid).value = 0
        for sig in self.ports.fields.values():
            self.sig(sig).value = 0

    def set_reset(self, active: bool) -> None:
        self.sig(self.ports.reset).value = int(active != self.ports.reset_active_low)

    def in_reset(self) -> bool:
        return bool(int(self.sig(self.ports.reset).value)) != self.ports.reset_active_low

    async def reset(self, cycles: int = 2) -> None:
        self.set_reset(True)
        await ClockCycles(self.clk, cycles)
        self.set_reset(False)


class Scoreboard:
    """In-order check of output transfers against expected rows (lists of int per lane)."""

    def __init__(self, lanes: int, log, max_errors: int = 10):
        self.lanes, self.log, self.max_errors = lanes, log, max_errors
        self.pending: deque = deque()  # (expected row, input transfer cycle, beat id)
        self.errors: list[str] = []
        self.latencies: list[int] = []
        self.out_cycles: list[int] = []
        self.checked = 0

    def expect(self, row, cycle: int, beat_id) -> None:
        self.pending.append((list(row), cycle, beat_id))

    def observe(self, data: list[int], cycle: int) -> None:
        if not self.pending:
            self._error(f"cycle {cycle}: unexpected output {data} (no beat outstanding)")
            return
        row, in_cycle, beat_id = self.pending.popleft()
        self.latencies.append(cycle - in_cycle)
        self.out_cycles.append(cycle)
        self.checked += 1
        if data != row:
            self._error(f"beat {beat_id}: got {data}, expected {row}")

    def flush(self) -> None:
        """Forget outstanding beats (after a reset nothing of them may come out)."""
        self.pending.clear()

    def _error(self, msg: str) -> None:
        if len(self.errors) < self.max_errors:
            self.log.error(msg)
        self.errors.append(msg)


class StreamDriver:
    """Input stream driver: beats in order, idle cycles with probability ``gap_prob``.

    Without a bias port in the port map, acc + bias (wrapped to int32 by
    :func:`qsim.fixedpoint.wrap_int32`, as the unit would; the int16x8 scheme's 64-bit sum as it
    is) is driven on the acc field."""

    def __init__(self, h: Harness, scoreboard: Scoreboard | None = None, seed: int = 0, gap_prob: float = 0.0):
        self.h, self.sb = h, scoreboard
        self.rng = random.Random(seed)
        self.gap_prob = gap_prob
        self.accept_cycles: list[int] = []
        self.accepted: list[int] = []  # beat indices, in order
        self.stop = False

    def words(self, beats: Beats) -> list[list[tuple[object, int]]]:
        """Per beat: [(signal handle, unsigned value)] for every mapped input field."""
        p = self.h.ports
        cols = []
        for f, sig in p.fields.items():
            h = self.h.sig(sig)
            w = p.width(f)
            if f in LANE_FIELDS:
                vals = beats.field(f)
                if f == "acc" and "bias" not in p.fields:
                    vals = beats.acc + beats.bias if beats.scheme == "int16x8" else fp.wrap_int32(beats.acc + beats.bias)
                cols.append((h, [pack_lanes(r, w) for r in np.asarray(vals).tolist()]))
            else:
                copies = p.beat_field_lanes(f, len(h))
                cols.append((h, [pack_lanes([v] * copies, w) for v in beats.field(f).tolist()]))
        return [[(h, vals[i]) for h, vals in cols] for i in range(len(beats))]

    async def send(self, beats: Beats, expected=None) -> None:
        """Drive every beat; ``expected`` rows default to ``beats.expected``."""
        h = self.h
        valid, ready = h.sig(h.ports.in_valid), h.sig(h.ports.in_ready)
        words = self.words(beats)
        expected = beats.expected.tolist() if expected is None else expected
        i, presenting = 0, False
        while i < len(words) and not self.stop:
            await RisingEdge(h.clk)
            if self.stop:
                break
            if not presenting:
                if self.rng.random() < self.gap_prob:
                    valid.value = 0
                else:
                    for sig, v in words[i]:
                        sig.value = v
                    valid.value = 1
                    presenting = True
            await ReadOnly()
            if presenting and ready.value and not h.in_reset():
                self.accept_cycles.append(h.cycle)
                self.accepted.append(i)
                if self.sb is not None:
                    self.sb.expect(expected[i], h.cycle, i)
                i += 1
                presenting = False
        await RisingEdge(h.clk)
        valid.value = 0


class StreamMonitor:
    """Output stream monitor; drives the output ready low with probability ``stall_prob``."""

    def __init__(self, h: Harness, scoreboard: Scoreboard, seed: int = 1, stall_prob: float = 0.0):
        self.h, self.sb = h, scoreboard
        self.rng = random.Random(seed)
        self.stall_prob = stall_prob
        self.valid_cycles: list[int] = []
        self.protocol_errors: list[str] = []

    async def run(self) -> None:
        h, p = self.h, self.h.ports
        valid, ready, data = h.sig(p.out_valid), h.sig(p.out_ready), h.sig(p.data)
        held = None  # data presented but not taken last cycle: must stay
        while True:
            await RisingEdge(h.clk)
            ready.value = 0 if self.rng.random() < self.stall_prob else 1
            await ReadOnly()
            if h.in_reset():
                held = None
                continue
            if not valid.value:
                if held is not None:
                    self.protocol_errors.append(f"cycle {h.cycle}: {p.out_valid} dropped before transfer")
                held = None
                continue
            self.valid_cycles.append(h.cycle)
            if not data.value.is_resolvable:
                self.protocol_errors.append(f"cycle {h.cycle}: {p.data} has X/Z bits while {p.out_valid} is high")
                word = 0
            else:
                word = data.value.to_unsigned()
            if held is not None and word != held:
                self.protocol_errors.append(f"cycle {h.cycle}: {p.data} changed while stalled")
            if ready.value:
                self.sb.observe(unpack_lanes(word, p.lanes, p.width("data"), signed=p.scheme != "uint8"), h.cycle)
                held = None
            else:
                held = word


async def drain(h: Harness, sb: Scoreboard, latency_hint: int = 8, max_cycles: int = 5000) -> None:
    """Wait until every accepted beat came out (or fail after ``max_cycles``), then a few more cycles
    in which anything extra would show up as unexpected."""
    for _ in range(max_cycles):
        if not sb.pending:
            break
        await RisingEdge(h.clk)
    await ClockCycles(h.clk, latency_hint + 2)
    assert not sb.pending, f"{len(sb.pending)} accepted beats never came out within {max_cycles} cycles"


def check(sb: Scoreboard, mon: StreamMonitor, n_expected: int) -> None:
    assert not mon.protocol_errors, mon.protocol_errors[:5]
    assert not sb.errors, f"{len(sb.errors)} mismatches, first: {sb.errors[:5]}"
    assert sb.checked == n_expected, f"checked {sb.checked} beats, expected {n_expected}"


async def run_stream(h: Harness, beats: Beats, seed: int, gap_prob: float, stall_prob: float, expected=None,
                     coverage=None, valid=None):
    """Drive ``beats`` through the DUT with gaps and back-pressure until all came out.
    Returns (scoreboard, monitor, driver); ``coverage`` (:class:`qsim.hdl.coverage.RequantCoverage`)
    samples the accepted beats (``valid`` [beats, lanes]: the lanes that count)."""
    sb = Scoreboard(h.ports.lanes, h.dut._log)
    mon = StreamMonitor(h, sb, seed=seed + 1, stall_prob=stall_prob)
    mon_task = cocotb.start_soon(mon.run())
    drv = StreamDriver(h, sb, seed=seed, gap_prob=gap_prob)
    await drv.send(beats, expected)
    await drain(h, sb, h.ports.latency or 8)
    mon_task.cancel()
    if coverage is not None:
        idx = np.array(drv.accepted, dtype=np.int64)
        coverage.sample(beats.take(idx), None if valid is None else np.asarray(valid)[idx])
    return sb, mon, drv


async def assert_silent(h: Harness, cycles: int) -> None:
    """The output valid stays low for ``cycles`` cycles (after a reset: nothing stale comes out)."""
    valid = h.sig(h.ports.out_valid)
    for _ in range(cycles):
        await RisingEdge(h.clk)
        await ReadOnly()
        assert not valid.value, f"a stale beat came out after reset ({h.ports.out_valid} high)"
