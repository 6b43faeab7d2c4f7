"""Verification components for rtl/requant_unit.sv (cocotb 2.x).

* :class:`Vectors`: a batch of beats (per-lane acc/bias/M0/shift, per-beat
  zp/act range) and its golden int8 output from :func:`qsim.fixedpoint.requantize`
  (the testbench never re-implements the arithmetic).
* :class:`Driver`: pushes beats on the s_* valid/ready stream, with optional
  random idle cycles, holding data stable until accepted.
* :class:`Monitor`: drives m_ready (optionally random back-pressure), checks the
  output stream protocol (data held while stalled) and reports transfers.
* :class:`Scoreboard`: in-order comparison of transfers with the golden values,
  per-beat latency in cycles.

Timing convention: cycle n is the interval after rising edge n; a transfer
sampled (at ReadOnly) in cycle n happens at edge n + 1.  Latency = output
transfer cycle - input transfer cycle.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

import numpy as np

from qsim import fixedpoint as fp

INT32_MIN, INT32_MAX = fp.INT32_MIN, fp.INT32_MAX
CLOCK_NS = 10


# --------------------------------------------------------------------------- vectors

@dataclass
class Vectors:
    """``acc``, ``bias``, ``mult``, ``shift``: int64 [beats, lanes]; ``zp``, ``act_min``,
    ``act_max``: int64 [beats]; ``expected``: int64 [beats, lanes] (int8 values)."""

    acc: np.ndarray
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    zp: np.ndarray
    act_min: np.ndarray
    act_max: np.ndarray
    rounding: str
    expected: np.ndarray | None = None

    def __post_init__(self):
        if self.expected is None:
            self.expected = fp.requantize(self.acc, self.bias, self.mult, self.shift, self.zp[:, None],
                                          self.act_min[:, None], self.act_max[:, None], self.rounding)

    def __len__(self) -> int:
        return len(self.acc)

    @property
    def lanes(self) -> int:
        return self.acc.shape[1]

    def packed(self) -> list[tuple[int, ...]]:
        """Per beat: (s_acc, s_bias, s_mult, s_shift, s_zp, s_act_min, s_act_max) as unsigned ints."""
        acc, bias, mult = (_pack(a, 32) for a in (self.acc, self.bias, self.mult))
        shift = _pack(self.shift, 6)
        zp, lo, hi = ((v & 0xFF).tolist() for v in (self.zp, self.act_min, self.act_max))
        return list(zip(acc, bias, mult, shift, zp, lo, hi))


def _pack(a: np.ndarray, width: int) -> list[int]:
    """[beats, lanes] signed values -> one unsigned int per beat, lane i at bits [i*width +: width]."""
    mask = (1 << width) - 1
    rows = (np.asarray(a, dtype=np.int64) & mask).tolist()
    return [sum(v << (i * width) for i, v in enumerate(row)) for row in rows]


def unpack_int8(word: int, lanes: int) -> list[int]:
    out = []
    for i in range(lanes):
        v = (word >> (8 * i)) & 0xFF
        out.append(v - 256 if v & 0x80 else v)
    return out


def shift_range(rounding: str) -> tuple[int, int]:
    """Shift values the RTL supports: qsim.fixedpoint.SHIFT_RANGE (single rounding caps at 30)."""
    return fp.SHIFT_RANGE[rounding]


def edge_rows(rounding: str) -> dict[str, np.ndarray]:
    """The arithmetic edges (qsim.fixedpoint's module docstring), as rows (acc, bias, M0, shift,
    zp, act_min, act_max) per edge name.  tests/test_edges.py runs the same rows through
    qsim.fixedpoint, the generated C (qk_requantize / qk_mbqm) and a hand-derived golden;
    the cocotb test ``edge_cases`` runs them through the RTL.

    * ``mbqm_beyond_int32``: x * M for M >= 1 at and past the int32 boundary (single rounding:
      saturates; 2**32 + small is where truncation would give a small wrong value);
    * ``shift_extremes``: both ends of SHIFT_RANGE with odd/even/extreme x;
    * ``bias_wrap``: acc + bias overflowing int32 (wraps);
    * ``zero_point_no_wrap``: MBQM results next to INT32_MAX / INT32_MIN plus a zero point
      of the other sign would overflow int32 if the add wrapped (it does not).
    """
    lo, hi = shift_range(rounding)
    full, narrow = (-128, 127), (-20, 30)
    beyond = []
    for shift in sorted({1, 2, 12, 20, hi}):
        for m0 in (1 << 30, (1 << 30) + 1, INT32_MAX):
            # with M0 = 2^30 the product is x * 2^(shift - 1): boundary at x = +-2^(32 - shift)
            edge = 1 << (32 - shift)
            xs = {edge - 1, edge, edge + 1, 2 * edge, 2 * edge + 1, 1 << 20, INT32_MAX, INT32_MIN, 3}
            xs |= {-x for x in xs if -x >= INT32_MIN}
            for x in sorted(x for x in xs if INT32_MIN <= x <= INT32_MAX):
                for zp, (a, b) in ((0, full), (-128, full), (127, full), (5, narrow)):
                    beyond.append((x, 0, m0, shift, zp, a, b))
    extremes = []
    for shift in (lo, lo + 1, hi - 1, hi):
        for m0 in (1 << 30, INT32_MAX, INT32_MIN, 1):
            for x in (1, -1, 2, 3, -3, 0x40000001, INT32_MAX, INT32_MIN, INT32_MIN + 1, 1 << 30):
                extremes.append((x, 0, m0, shift, -3, *full))
    bias_wrap = [(a, b, m0, s, 0, *full)
                 for a, b in ((INT32_MAX, 1), (INT32_MAX, INT32_MAX), (INT32_MIN, -1), (INT32_MIN, INT32_MIN),
                              (1 << 30, 1 << 30), (-(1 << 30) - 1, -(1 << 30)), (2_000_000_000, 500_000_000))
                 for m0, s in ((1 << 30, -20), (INT32_MAX, 0), (1 << 30, -31))]
    no_wrap = [(x, 0, m0, s, zp, *act)
               for x in (INT32_MAX, INT32_MAX - 1, INT32_MIN, INT32_MIN + 1)
               for m0, s in ((INT32_MAX, 0), (INT32_MIN, 0), ((1 << 30) + 1, 1), (INT32_MAX, min(hi, 30)))
               for zp in (127, -128, 1, -1)
               for act in (full, (-128, -128), (127, 127))]
    as_array = lambda rows: np.array(rows, dtype=np.int64)  # noqa: E731
    return {"mbqm_beyond_int32": as_array(beyond), "shift_extremes": as_array(extremes),
            "bias_wrap": as_array(bias_wrap), "zero_point_no_wrap": as_array(no_wrap)}


def edge_vectors(lanes: int, rounding: str) -> Vectors:
    """All :func:`edge_rows` as beats of ``lanes`` lanes (golden: qsim.fixedpoint.requantize)."""
    return _group_rows(np.concatenate(list(edge_rows(rounding).values())), lanes, rounding)


def random_vectors(seed: int, beats: int, lanes: int, rounding: str) -> Vectors:
    """Seeded random beats mixing full-range, realistic and special values."""
    rng = np.random.default_rng(seed)
    n = (beats, lanes)
    specials = np.array([INT32_MIN, INT32_MIN + 1, -(1 << 30), -2, -1, 0, 1, 2, 1 << 30, INT32_MAX - 1, INT32_MAX])

    def mix(choices, probs):
        pick = rng.choice(len(choices), size=n, p=probs)
        out = np.zeros(n, dtype=np.int64)
        for k, c in enumerate(choices):
            out[pick == k] = c[pick == k]
        return out

    full = lambda: rng.integers(INT32_MIN, INT32_MAX, size=n, endpoint=True)  # noqa: E731
    acc = mix([full(), rng.integers(-(1 << 16), 1 << 16, size=n), rng.choice(specials, size=n),
               rng.integers(-4096, 4096, size=n) << rng.integers(0, 20, size=n)], [0.35, 0.3, 0.1, 0.25])
    bias = mix([full(), rng.integers(-(1 << 14), 1 << 14, size=n), rng.choice(specials, size=n)], [0.3, 0.6, 0.1])
    mult = mix([rng.integers(1 << 30, 1 << 31, size=n), full(),
                rng.choice(np.array([0, 1, INT32_MIN, INT32_MAX, 1 << 30, (1 << 30) + 1]), size=n)],
               [0.6, 0.25, 0.15])
    lo, hi = shift_range(rounding)
    shift = mix([rng.integers(lo, hi, size=n, endpoint=True), rng.integers(-12, 2, size=n, endpoint=True)],
                [0.6, 0.4])
    zp = rng.integers(-128, 127, size=beats, endpoint=True)
    a, b = rng.integers(-128, 127, size=beats, endpoint=True), rng.integers(-128, 127, size=beats, endpoint=True)
    full_range = rng.random(beats) < 0.6
    act_min = np.where(full_range, -128, np.minimum(a, b))
    act_max = np.where(full_range, 127, np.maximum(a, b))
    return Vectors(acc, bias, mult, shift, zp, act_min, act_max, rounding)


def directed_vectors(lanes: int, rounding: str) -> Vectors:
    """Hand-picked corners, LANES per beat (rows sharing zp/act range grouped, zero-padded).

    * for every supported shift, x = +-(2k+1)*2^j (k in {0,1}, j in 0..30) with
      M0 in {2^30, 2^30+1, INT32_MAX, INT32_MIN}: with M0 = 2^30 each shift meets
      exact ties (x.5) of both signs at the SRDHM / RoundingDivideByPOT / single
      rounding step
    * SaturatingRoundingDoublingHighMul's INT32_MIN * INT32_MIN (also reached
      through a wrapping bias add and through a wrapping left shift)
    * int32 wrap of acc + bias, left shifts that wrap, M0 = 0 and 1
    * zero point / activation clamps at both ends, results far outside int32
      (single rounding with shift 30)
    """
    lo, hi = shift_range(rounding)
    rows = []  # (acc, bias, mult, shift, zp, act_min, act_max)
    full = (0, -128, 127)
    for shift in range(lo, hi + 1):
        for m0 in ((1 << 30), (1 << 30) + 1, INT32_MAX, INT32_MIN):
            for j in range(0, 31):
                for k in (0, 1):
                    for sign in (1, -1):
                        x = sign * (2 * k + 1) * (1 << j)
                        if INT32_MIN <= x <= INT32_MAX:
                            rows.append((x, 0, m0, shift, *full))
            # ties straddling a zero point, values near the clamps
            for x in (INT32_MIN, INT32_MIN + 1, -3, -1, 0, 1, 3, INT32_MAX):
                rows.append((x, 0, m0, shift, 5, -128, 127))
                rows.append((x, 0, m0, shift, -128, -128, 127))
                rows.append((x, 0, m0, shift, 127, -128, 127))
    for shift in (0, -1, -31, 1, hi):
        rows += [(INT32_MIN, 0, INT32_MIN, shift, *full),
                 (INT32_MAX, 1, INT32_MIN, shift, *full),     # acc + bias wraps to INT32_MIN
                 (INT32_MIN, -1, INT32_MIN, shift, *full),    # wraps to INT32_MAX
                 (INT32_MAX, INT32_MAX, INT32_MAX, shift, *full),
                 (INT32_MIN, INT32_MIN, INT32_MAX, shift, *full),
                 (1 << 30, 1 << 30, INT32_MIN, shift, *full),  # sum = 2^31 wraps to INT32_MIN
                 (12345, -12345, INT32_MAX, shift, *full),
                 (777, 0, 0, shift, 17, -128, 127),             # M0 = 0 -> zp
                 (INT32_MAX, 0, 1, shift, *full)]
    # shift -31: no positive int32 x, M0 make x*M0/2^62 an exact tie, but double rounding
    # still meets one at RoundingDivideByPOT(SRDHM(x, M0) = +-2^30, 31)
    rows += [(x, 0, INT32_MAX, -31, *full) for x in ((1 << 30) + 1, -(1 << 30) - 1)]
    if rounding == "double":
        for left in range(0, 32):  # left shift wraps like C int32 arithmetic
            for x in (1, -1, 3, 0x12345678, -0x12345678, INT32_MAX, INT32_MIN, 0x40000001):
                rows.append((x, 0, INT32_MAX, left, *full))
                rows.append((x, 0, INT32_MIN, left, *full))
    for act in ((-128, 127), (0, 127), (-128, 0), (-10, 10), (6, 6), (-128, -128), (127, 127)):
        for x in (-1000, -129, -128, -1, 0, 1, 127, 128, 1000, INT32_MIN, INT32_MAX):
            for zp in (-128, -1, 0, 1, 127):
                rows.append((x, 0, INT32_MAX, 0, zp, *act))
    return _group_rows(np.array(rows, dtype=np.int64), lanes, rounding)


def _group_rows(r: np.ndarray, lanes: int, rounding: str) -> Vectors:
    """Rows (acc, bias, M0, shift, zp, act_min, act_max) -> beats; rows sharing the per-beat
    fields (zp, act_min, act_max) are packed LANES per beat, in order, zero-padded."""
    beats = []
    by_side: dict[tuple, list] = {}
    for row in r.tolist():
        by_side.setdefault(tuple(row[4:7]), []).append(row)
    for side, rows in by_side.items():
        while len(rows) % lanes:
            rows.append([0, 0, 0, 0, *side])
        beats += [rows[i:i + lanes] for i in range(0, len(rows), lanes)]
    b = np.array(beats, dtype=np.int64)  # [beats, lanes, 7]
    return Vectors(b[:, :, 0], b[:, :, 1], b[:, :, 2], b[:, :, 3], b[:, 0, 4], b[:, 0, 5], b[:, 0, 6], rounding)


# --------------------------------------------------------------------------- components

def cycle_now() -> int:
    from cocotb.utils import get_sim_time
    return int(get_sim_time(unit="ns")) // CLOCK_NS


class Scoreboard:
    """In-order check of output transfers against the expected rows."""

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


class Driver:
    """Input stream driver: beats in order, idle cycles with probability ``gap_prob``."""

    def __init__(self, dut, scoreboard: Scoreboard | None, seed: int = 0, gap_prob: float = 0.0):
        self.dut, self.sb = dut, scoreboard
        self.rng = random.Random(seed)
        self.gap_prob = gap_prob
        self.accept_cycles: list[int] = []
        self.stop = False

    def idle(self) -> None:
        self.dut.s_valid.value = 0

    async def send(self, vec: Vectors, expected=None) -> None:
        from cocotb.triggers import ReadOnly, RisingEdge
        dut = self.dut
        words = vec.packed()
        expected = vec.expected.tolist() if expected is None else expected
        i = 0
        presenting = False
        while i < len(words) and not self.stop:
            await RisingEdge(dut.clk)
            if self.stop:
                break
            if not presenting:
                if self.rng.random() < self.gap_prob:
                    dut.s_valid.value = 0
                else:
                    acc, bias, mult, shift, zp, lo, hi = words[i]
                    dut.s_acc.value, dut.s_bias.value, dut.s_mult.value = acc, bias, mult
                    dut.s_shift.value, dut.s_zp.value = shift, zp
                    dut.s_act_min.value, dut.s_act_max.value = lo, hi
                    dut.s_valid.value = 1
                    presenting = True
            await ReadOnly()
            if presenting and dut.s_ready.value and not dut.rst.value:
                c = cycle_now()
                self.accept_cycles.append(c)
                if self.sb is not None:
                    self.sb.expect(expected[i], c, i)
                i += 1
                presenting = False
        await RisingEdge(dut.clk)
        dut.s_valid.value = 0


class Monitor:
    """Output stream monitor; drives m_ready low with probability ``stall_prob``."""

    def __init__(self, dut, scoreboard: Scoreboard, lanes: int, seed: int = 1, stall_prob: float = 0.0):
        self.dut, self.sb, self.lanes = dut, scoreboard, lanes
        self.rng = random.Random(seed)
        self.stall_prob = stall_prob
        self.valid_cycles: list[int] = []  # cycles where m_valid was high (any ready)
        self.protocol_errors: list[str] = []

    async def run(self) -> None:
        from cocotb.triggers import ReadOnly, RisingEdge
        dut = self.dut
        held = None  # data presented but not taken last cycle: must stay
        while True:
            await RisingEdge(dut.clk)
            dut.m_ready.value = 0 if self.rng.random() < self.stall_prob else 1
            await ReadOnly()
            if dut.rst.value:
                held = None
                continue
            if not dut.m_valid.value:
                if held is not None:
                    self.protocol_errors.append(f"cycle {cycle_now()}: m_valid dropped before transfer")
                held = None
                continue
            c = cycle_now()
            self.valid_cycles.append(c)
            word = dut.m_data.value.to_unsigned()
            if held is not None and word != held:
                self.protocol_errors.append(f"cycle {c}: m_data changed while stalled")
            if dut.m_ready.value:
                self.sb.observe(unpack_int8(word, self.lanes), c)
                held = None
            else:
                held = word
