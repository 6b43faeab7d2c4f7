"""Requantization test beats for valid/ready requant units (numpy only; no cocotb needed).

A *beat* is what one input transfer carries: per lane an int32 accumulator, bias, Q31 multiplier
M0 and shift (TFLite sign convention, > 0 = left), and per beat the output zero point and the
activation range.  :class:`Beats` holds a batch of them with their golden int8 outputs from
:func:`qsim.fixedpoint.requantize` (never re-derived here).

* :func:`directed_beats`: hand-picked corners (ties of both signs at every shift,
  INT32_MIN*INT32_MIN, wraps, clamps and zero points at both ends);
* :func:`random_beats`: seeded random beats mixing full-range, realistic and special values;
* :func:`edge_rows` / :func:`edge_beats`: the arithmetic edges shared with tests/test_edges.py;
* :func:`replay_beats`: a real layer's vectors (:mod:`qsim.vectors`) packed ``lanes`` per beat.

Two schemes (``scheme``): ``"int8"`` (int32 accumulator, int8 output: :func:`qsim.fixedpoint.requantize`)
and ``"int16x8"`` (int16 activations x int8 weights: int64 accumulator and bias, int16 output,
:func:`qsim.fixedpoint.requantize_int64`; shifts in ``SHIFT_RANGE_INT64``; accumulators kept within
TFLite's assumed ``|acc + bias| < 2**47``), and ``"uint8"`` (the old converter's QUANTIZED_UINT8
layers: int32 accumulator, uint8 output, zero point and activation range in [0, 255]; golden the same
:func:`qsim.fixedpoint.requantize`, whose zero-point add and clamp follow the rounding).  The uint8
directed, edge and random stimulus is the int8 scheme's with the zero point and both bounds moved
by +128 (:func:`_as_uint8_rows`): every int8 corner lands on its uint8 twin, the zero points 0 and
255 and bounds >= 128 included (what a sign-extending unit gets wrong).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fixedpoint as fp

INT32_MIN, INT32_MAX = fp.INT32_MIN, fp.INT32_MAX
SCHEMES = ("int8", "int16x8", "uint8")
OUT_RANGE = {"int8": (-128, 127), "int16x8": (-32768, 32767), "uint8": (0, 255)}  # output / zero point / act range

@dataclass
class Beats:
    """``acc``, ``bias``, ``mult``, ``shift``: int64 [beats, lanes]; ``zp``, ``act_min``,
    ``act_max``: int64 [beats]; ``expected``: int64 [beats, lanes] (int8 values; int16 for the
    ``"int16x8"`` scheme, whose acc/bias are int64; uint8 for ``"uint8"``)."""

    acc: np.ndarray
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    zp: np.ndarray
    act_min: np.ndarray
    act_max: np.ndarray
    rounding: str
    expected: np.ndarray | None = None
    scheme: str = "int8"

    def __post_init__(self):
        if self.expected is None:
            rq = fp.requantize_int64 if self.scheme == "int16x8" else fp.requantize  # int8, uint8
            self.expected = rq(self.acc, self.bias, self.mult, self.shift, self.zp[:, None],
                               self.act_min[:, None], self.act_max[:, None], rounding=self.rounding)

    def __len__(self) -> int:
        return len(self.acc)

    @property
    def lanes(self) -> int:
        return self.acc.shape[1]

    def take(self, idx) -> "Beats":
        """The beats at ``idx`` (a slice or index array), with their expected values."""
        return Beats(self.acc[idx], self.bias[idx], self.mult[idx], self.shift[idx], self.zp[idx],
                     self.act_min[idx], self.act_max[idx], self.rounding, self.expected[idx], self.scheme)

    def field(self, name: str) -> np.ndarray:
        """A port-map field's values: [beats, lanes] for acc/bias/multiplier/shift, [beats] for
        zero_point/act_min/act_max."""
        return getattr(self, FIELD_ATTR[name])


# port-map field name -> Beats attribute
FIELD_ATTR = {"acc": "acc", "bias": "bias", "multiplier": "mult", "shift": "shift", "zero_point": "zp",
              "act_min": "act_min", "act_max": "act_max"}


def pack_lanes(values, width: int) -> int:
    """Signed per-lane values -> one unsigned bus value, lane i at bits [i*width +: width]."""
    mask = (1 << width) - 1
    return sum((int(v) & mask) << (i * width) for i, v in enumerate(values))


def unpack_lanes(word: int, lanes: int, width: int = 8, signed: bool = True) -> list[int]:
    """One unsigned bus value -> ``lanes`` values of ``width`` bits (lane i at [i*width +: width]),
    two's complement (``signed``) or unsigned (the uint8 scheme)."""
    mask, sign = (1 << width) - 1, (1 << (width - 1)) if signed else 0
    out = []
    for i in range(lanes):
        v = (word >> (width * i)) & mask
        out.append(v - (1 << width) if v & sign else v)
    return out


def _as_uint8_rows(rows: np.ndarray) -> np.ndarray:
    """int8-scheme rows (acc, bias, M0, shift, zp, act_min, act_max) as uint8 stimulus: zero point
    and bounds + 128 (the uint8 twin of every int8 row; the golden is recomputed, not shifted)."""
    out = np.array(rows, dtype=np.int64, copy=True)
    out[:, 4:7] += 128
    return out


def shift_range(rounding: str, scheme: str = "int8") -> tuple[int, int]:
    """Shift values the RTL supports: qsim.fixedpoint.SHIFT_RANGE (single rounding caps at 30);
    the int16x8 scheme: SHIFT_RANGE_INT64 (TFLite's [-31, 7])."""
    return fp.SHIFT_RANGE_INT64 if scheme == "int16x8" else fp.SHIFT_RANGE[rounding]


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


def edge_rows_int16x8(rounding: str) -> dict[str, np.ndarray]:
    """The int16x8 scheme's edges as rows (acc, bias, M0, shift, zp, act_min, act_max):

    * ``reduced_multiplier``: double rounding reduces M0 to Q15 with ``(M0 + 2**15) >> 16``, saturated
      to 0x7FFF from 0x7FFF0000 on: M0 around that boundary and around a Q15 rounding tie;
    * ``shift_extremes``: shifts -31 and 7 with x at +-(2**47 - 1) and small odd values;
    * ``beyond_int32``: results past int32, whose low 32 bits are kept (the references' cast);
    * ``bias_64``: acc + bias carrying out of 32 bits (no int32 wrap: 64-bit add).
    """
    lo, hi = fp.SHIFT_RANGE_INT64
    big = fp.INT64_ACC_LIMIT - 1
    full = OUT_RANGE["int16x8"]
    reduced = [(x, 0, m0, s, 0, *full)
               for m0 in (0x7FFEFFFF, 0x7FFF0000, 0x7FFF0001, INT32_MAX, 0x7FFE8000, 0x7FFE7FFF, 0x40008000, 0x40007FFF)
               for s in (-15, 0, 3)
               for x in (1, -1, 3, -3, 12345, -12345, 1 << 20, -(1 << 20) - 1)]
    extremes = [(x, 0, m0, s, 0, *full)
                for s in (lo, lo + 1, hi - 1, hi)
                for m0 in (1 << 30, INT32_MAX, 1, 0x7FFF0000)
                for x in (1, -1, 3, -3, big, -big, 1 << 46, -(1 << 46), (1 << 40) + 1, -(1 << 40) - 1)]
    beyond = [(x, 0, m0, s, zp, *act)
              for s in (0, 4, 7)
              for m0 in (1 << 30, INT32_MAX)
              for x in (1 << 31, -(1 << 31) - 1, 1 << 40, -(1 << 40), big, -big)
              for zp, act in ((0, full), (-7, (-100, 100)), (32767, full), (-32768, full))]
    bias = [(a, b, m0, s, 0, *full)
            for a, b in ((INT32_MAX, 1), (INT32_MIN, -1), (INT32_MAX, INT32_MAX), (1 << 46, (1 << 46) - 1),
                         (-(1 << 46), -(1 << 46) + 1), (5, -(1 << 35)))
            for m0, s in ((1 << 30, -20), (INT32_MAX, -31), (1 << 30, 0))]
    as_array = lambda rows: np.array(rows, dtype=np.int64)  # noqa: E731
    return {"reduced_multiplier": as_array(reduced), "shift_extremes": as_array(extremes),
            "beyond_int32": as_array(beyond), "bias_64": as_array(bias)}


def edge_beats(lanes: int, rounding: str, scheme: str = "int8") -> Beats:
    """All :func:`edge_rows` (int16x8: :func:`edge_rows_int16x8`; uint8: the int8 rows moved by
    :func:`_as_uint8_rows`) as beats of ``lanes`` lanes (golden: qsim.fixedpoint)."""
    rows = edge_rows_int16x8(rounding) if scheme == "int16x8" else edge_rows(rounding)
    r = np.concatenate(list(rows.values()))
    return _group_rows(_as_uint8_rows(r) if scheme == "uint8" else r, lanes, rounding, scheme)


def _mixer(rng, n):
    """``mix(choices, probs)``: per element of shape ``n``, the value of a randomly picked choice array."""
    def mix(choices, probs):
        pick = rng.choice(len(choices), size=n, p=probs)
        out = np.zeros(n, dtype=np.int64)
        for k, c in enumerate(choices):
            out[pick == k] = c[pick == k]
        return out
    return mix


def random_beats(seed: int, beats: int, lanes: int, rounding: str, scheme: str = "int8") -> Beats:
    """Seeded random beats mixing full-range, realistic and special values."""
    if scheme == "int16x8":
        return _random_beats_int16x8(seed, beats, lanes, rounding)
    rng = np.random.default_rng(seed)
    n = (beats, lanes)
    specials = np.array([INT32_MIN, INT32_MIN + 1, -(1 << 30), -2, -1, 0, 1, 2, 1 << 30, INT32_MAX - 1, INT32_MAX])
    mix = _mixer(rng, n)

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
    qmin, qmax = OUT_RANGE[scheme]  # int8, or uint8
    zp = rng.integers(qmin, qmax, size=beats, endpoint=True)
    a, b = rng.integers(qmin, qmax, size=beats, endpoint=True), rng.integers(qmin, qmax, size=beats, endpoint=True)
    full_range = rng.random(beats) < 0.6
    act_min = np.where(full_range, qmin, np.minimum(a, b))
    act_max = np.where(full_range, qmax, np.maximum(a, b))
    return Beats(acc, bias, mult, shift, zp, act_min, act_max, rounding, scheme=scheme)


def _random_beats_int16x8(seed: int, beats: int, lanes: int, rounding: str) -> Beats:
    """Random int16x8 beats: |acc + bias| < 2**47 (TFLite's assumption), shifts in [-31, 7],
    multipliers mostly in [2**30, 2**31) with the Q15-reduction boundary, int16 zero points/ranges."""
    rng = np.random.default_rng(seed)
    n = (beats, lanes)
    half = fp.INT64_ACC_LIMIT // 2  # acc and bias each within +-2**46: their sum stays within 2**47
    mix = _mixer(rng, n)

    specials = np.array([-half + 1, -(1 << 31), -1, 0, 1, 1 << 31, half - 1])
    acc = mix([rng.integers(-half + 1, half, size=n), rng.integers(-(1 << 24), 1 << 24, size=n),
               rng.integers(-32768 * 127, 32768 * 127, size=n) * rng.integers(1, 64, size=n),
               rng.choice(specials, size=n)], [0.3, 0.3, 0.3, 0.1])
    bias = mix([rng.integers(-half + 1, half, size=n), rng.integers(-(1 << 20), 1 << 20, size=n),
                np.zeros(n, np.int64)], [0.2, 0.6, 0.2])
    mult = mix([rng.integers(1 << 30, 1 << 31, size=n), rng.integers(0x7FFE0000, 1 << 31, size=n),
                rng.choice(np.array([0, 1, 1 << 30, 0x7FFF0000, 0x7FFEFFFF, INT32_MAX]), size=n)],
               [0.7, 0.15, 0.15])
    lo, hi = fp.SHIFT_RANGE_INT64
    shift = mix([rng.integers(lo, hi, size=n, endpoint=True), rng.integers(-20, 0, size=n, endpoint=True)],
                [0.6, 0.4])
    qmin, qmax = OUT_RANGE["int16x8"]
    zp = np.where(rng.random(beats) < 0.7, 0, rng.integers(qmin, qmax, size=beats, endpoint=True))
    a, b = rng.integers(qmin, qmax, size=beats, endpoint=True), rng.integers(qmin, qmax, size=beats, endpoint=True)
    full_range = rng.random(beats) < 0.6
    act_min = np.where(full_range, qmin, np.minimum(a, b))
    act_max = np.where(full_range, qmax, np.maximum(a, b))
    return Beats(acc, bias, mult, shift, zp, act_min, act_max, rounding, scheme="int16x8")


def _directed_rows_int16x8(rounding: str) -> list[tuple]:
    """Exact ties of both signs at every shift in [-31, 7] at the one rounding step, clamps and
    zero points at both int16 ends, M0 = 0 and the Q15-reduction boundary."""
    lo, hi = fp.SHIFT_RANGE_INT64
    qmin, qmax = OUT_RANGE["int16x8"]
    full = (0, qmin, qmax)
    rows = []
    # double: x * r / 2**(15 - shift) with r = 2**14 (M0 = 2**30) is x * 2**(shift - 1): ties at x odd
    # (shift 0), and x = +-(2k+1) * 2**j reach ties at every shift (single: M0 = 2**30, same numbers)
    for shift in range(lo, hi + 1):
        for m0 in (1 << 30, (1 << 30) + (1 << 15), INT32_MAX, 0x7FFF0000):
            for j in range(0, 46):
                for k in (0, 1):
                    for sign in (1, -1):
                        x = sign * (2 * k + 1) * (1 << j)
                        if abs(x) < fp.INT64_ACC_LIMIT:
                            rows.append((x, 0, m0, shift, *full))
        for x in (-fp.INT64_ACC_LIMIT + 1, -3, -1, 0, 1, 3, fp.INT64_ACC_LIMIT - 1):
            for zp in (5, qmin, qmax):
                rows.append((x, 0, 1 << 30, shift, zp, qmin, qmax))
        rows.append((777, 0, 0, shift, 17, qmin, qmax))  # M0 = 0 -> zp
    for act in ((qmin, qmax), (0, qmax), (qmin, 0), (-10, 10), (6, 6), (qmin, qmin), (qmax, qmax)):
        for x in (-100000, -32769, -32768, -1, 0, 1, 32767, 32768, 100000):
            for zp in (qmin, -1, 0, 1, qmax):
                rows.append((x, 0, 1 << 30, 1, zp, *act))  # M = 1: x itself, then zp and clamp
    return rows


def directed_beats(lanes: int, rounding: str, scheme: str = "int8") -> Beats:
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

    ``scheme`` "int16x8": :func:`_directed_rows_int16x8` instead; "uint8": these rows moved by
    :func:`_as_uint8_rows`.
    """
    if scheme == "int16x8":
        return _group_rows(np.array(_directed_rows_int16x8(rounding), dtype=np.int64), lanes, rounding, scheme)
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
    r = np.array(rows, dtype=np.int64)
    return _group_rows(_as_uint8_rows(r) if scheme == "uint8" else r, lanes, rounding, scheme)


def _group_rows(r: np.ndarray, lanes: int, rounding: str, scheme: str = "int8") -> Beats:
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
    return Beats(b[:, :, 0], b[:, :, 1], b[:, :, 2], b[:, :, 3], b[:, 0, 4], b[:, 0, 5], b[:, 0, 6], rounding,
                 scheme=scheme)


def replay_beats(v, lanes: int) -> tuple[Beats, np.ndarray]:
    """A :class:`qsim.vectors.LayerVectors` as beats of ``lanes`` lanes, channels padded to a
    multiple of ``lanes`` (padding lanes: acc 0, the channel-0 tables).  Returns (beats, valid)
    where ``valid`` [beats, lanes] marks real channels; their expected values are the vectors'
    own ``expected`` (the file's golden, e.g. checked against TFLM), padding lanes fixedpoint's."""
    rows, c = v.acc.shape
    cp = -(-c // lanes) * lanes
    pad = lambda a: np.pad(np.asarray(a, np.int64), [(0, 0)] * (np.ndim(a) - 1) + [(0, cp - c)])  # noqa: E731
    tab = {k: np.broadcast_to(pad(getattr(v, k)), (rows, cp)) for k in ("bias", "multiplier", "shift")}
    n = rows * cp // lanes
    per_beat = lambda a: np.ascontiguousarray(a).reshape(n, lanes)  # noqa: E731
    scalar = lambda x: np.full(n, int(x), dtype=np.int64)  # noqa: E731
    b = Beats(per_beat(pad(v.acc)), per_beat(tab["bias"]), per_beat(tab["multiplier"]), per_beat(tab["shift"]),
              scalar(v.zero_point), scalar(v.act_min), scalar(v.act_max), v.rounding)
    real = np.broadcast_to(np.arange(cp) < c, (rows, cp))
    b.expected = per_beat(np.where(real, pad(v.expected), b.expected.reshape(rows, cp)))
    return b, per_beat(real)
