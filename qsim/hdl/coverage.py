"""Functional coverage of requantization: did the stimulus reach what matters?

Bins (each counts lane results that the DUT accepted):

* ``shift=<k>`` for every k in :data:`qsim.fixedpoint.SHIFT_RANGE` of the rounding mode;
* ``tie_positive`` / ``tie_negative``: an exact tie (x.5) at a rounding step, of either sign
  (double: SaturatingRoundingDoublingHighMul's 64-bit product or RoundingDivideByPOT;
  single: the one 64-bit rounding);
* ``int32_min_x_int32_min``: SRDHM's only overflow, INT32_MIN * INT32_MIN;
* ``saturate_low`` / ``saturate_high``: the value before the clamp is below act_min / above act_max;
* ``zero_point_min`` / ``zero_point_max``: zero point -128 / 127 (scheme "uint8": 0 / 255,
  "int16x8": -32768 / 32767).

Classification calls :mod:`qsim.fixedpoint` (wrap, SRDHM, requantize); nothing is re-derived.
:meth:`RequantCoverage.report` prints hits per bin and the bins never hit.
"""
from __future__ import annotations

import numpy as np

from .. import fixedpoint as fp
from .beats import OUT_RANGE

_WIDE = 1 << 40  # a clamp range no int32 result reaches: requantize() then returns the unclamped value


class RequantCoverage:
    """Hit counts per bin for one rounding mode; :meth:`sample` beats, :meth:`report` at the end."""

    def __init__(self, rounding: str = "double", scheme: str = "int8"):
        lo, hi = fp.SHIFT_RANGE_INT64 if scheme == "int16x8" else fp.SHIFT_RANGE[rounding]
        self.rounding, self.scheme = rounding, scheme
        self.bins: dict[str, int] = {f"shift={k}": 0 for k in range(lo, hi + 1)}
        # int16x8: the Q15 reduction's saturation (M0 >= 0x7FFF0000, double rounding only) takes the
        # place of SRDHM's INT32_MIN * INT32_MIN (the int64 path has no SRDHM)
        special = ("int32_min_x_int32_min",) if scheme != "int16x8" else \
            ("reduced_multiplier_max",) if rounding == "double" else ()
        for name in ("tie_positive", "tie_negative", *special, "saturate_low", "saturate_high",
                     "zero_point_min", "zero_point_max"):
            self.bins[name] = 0

    def sample(self, beats, valid: np.ndarray | None = None) -> None:
        """Count the lane results of :class:`qsim.hdl.beats.Beats` (``valid`` [beats, lanes]: which count)."""
        if len(beats) == 0:
            return
        m = np.ones(beats.acc.shape, bool) if valid is None else np.asarray(valid, bool)
        if self.scheme == "int16x8":
            return self._sample_int16x8(beats, m)
        x = fp.wrap_int32(beats.acc + beats.bias)
        m0, shift = beats.mult, beats.shift
        zp = np.broadcast_to(beats.zp[:, None], x.shape)
        lo = np.broadcast_to(beats.act_min[:, None], x.shape)
        hi = np.broadcast_to(beats.act_max[:, None], x.shape)
        for k in np.unique(shift[m]).tolist():
            key = f"shift={k}"
            if key in self.bins:
                self.bins[key] += int(np.sum(m & (shift == k)))
        pos, neg, ovf = self._ties(x, m0, shift)
        self.bins["tie_positive"] += int(np.sum(m & pos))
        self.bins["tie_negative"] += int(np.sum(m & neg))
        self.bins["int32_min_x_int32_min"] += int(np.sum(m & ovf))
        raw = fp.requantize(beats.acc, beats.bias, m0, shift, zp, -_WIDE, _WIDE, self.rounding)
        self.bins["saturate_low"] += int(np.sum(m & (raw < lo)))
        self.bins["saturate_high"] += int(np.sum(m & (raw > hi)))
        qmin, qmax = OUT_RANGE[self.scheme]
        self.bins["zero_point_min"] += int(np.sum(m & (zp == qmin)))
        self.bins["zero_point_max"] += int(np.sum(m & (zp == qmax)))

    def _sample_int16x8(self, beats, m) -> None:
        """The int16x8 scheme: one rounding step, (x * r) / 2**(15 - shift) with the Q15-reduced r
        (double) or (x * M0) / 2**(31 - shift) (single), in exact Python integers."""
        x = beats.acc + beats.bias
        m0, shift = beats.mult, beats.shift
        qmin, qmax = OUT_RANGE["int16x8"]
        zp = np.broadcast_to(beats.zp[:, None], x.shape)
        for k in np.unique(shift[m]).tolist():
            key = f"shift={k}"
            if key in self.bins:
                self.bins[key] += int(np.sum(m & (shift == k)))
        factor, total = fp.int64_rescale_factor(m0, shift, self.rounding)
        if self.rounding == "double":  # the Q15 reduction saturated (factor 0x7FFF from M0 0x7FFF0000 on)
            self.bins["reduced_multiplier_max"] += int(np.sum(m & (m0 >= 0x7FFF0000)))
        p = x.astype(object) * factor.astype(object)  # exact: |x| < 2**47, |factor| < 2**31
        mod = np.vectorize(lambda v, t: v % (1 << t) == 1 << (t - 1), otypes=[bool])(p, total)
        self.bins["tie_positive"] += int(np.sum(m & mod & (p > 0).astype(bool)))
        self.bins["tie_negative"] += int(np.sum(m & mod & (p < 0).astype(bool)))
        raw = fp.requantize_int64(beats.acc, beats.bias, m0, shift, zp, -_WIDE, _WIDE, self.rounding)
        lo = np.broadcast_to(beats.act_min[:, None], x.shape)
        hi = np.broadcast_to(beats.act_max[:, None], x.shape)
        self.bins["saturate_low"] += int(np.sum(m & (raw < lo)))
        self.bins["saturate_high"] += int(np.sum(m & (raw > hi)))
        self.bins["zero_point_min"] += int(np.sum(m & (zp == qmin)))
        self.bins["zero_point_max"] += int(np.sum(m & (zp == qmax)))

    def _ties(self, x, m0, shift):
        """(positive tie, negative tie, INT32_MIN*INT32_MIN) masks at the rounding step(s)."""
        if self.rounding == "single":
            total = 31 - shift
            p = x * m0  # |x * m0| <= 2**62: exact in int64
            half = np.int64(1) << (total - 1)
            tie = (p & ((np.int64(1) << total) - 1)) == half
            return tie & (p > 0), tie & (p < 0), (x == fp.INT32_MIN) & (m0 == fp.INT32_MIN)
        xl = fp.wrap_int32(x << np.maximum(shift, 0))
        p = xl * m0
        tie1 = (p & ((1 << 31) - 1)) == (1 << 30)  # SRDHM rounds p / 2**31
        y = fp.saturating_rounding_doubling_high_mul(xl, m0)
        right = np.maximum(-shift, 0)
        tie2 = (right > 0) & ((y & ((np.int64(1) << right) - 1)) == ((np.int64(1) << right) >> 1))
        pos = (tie1 & (p > 0)) | (tie2 & (y > 0))
        neg = (tie1 & (p < 0)) | (tie2 & (y < 0))
        return pos, neg, (xl == fp.INT32_MIN) & (m0 == fp.INT32_MIN)

    def merge(self, other: "RequantCoverage") -> None:
        for k, v in other.bins.items():
            self.bins[k] = self.bins.get(k, 0) + v

    def missing(self) -> list[str]:
        """Bins never hit."""
        return [k for k, v in self.bins.items() if v == 0]

    def to_dict(self) -> dict:
        return {"rounding": self.rounding, "scheme": self.scheme, "bins": dict(self.bins), "missing": self.missing(),
                "hit": len(self.bins) - len(self.missing()), "total": len(self.bins)}

    def report(self) -> str:
        """A text table: hits per bin, then the bins never hit."""
        shifts = {k: v for k, v in self.bins.items() if k.startswith("shift=")}
        lines = [f"requant coverage ({self.scheme}, {self.rounding} rounding): {len(self.bins) - len(self.missing())} of "
                 f"{len(self.bins)} bins hit",
                 "  shifts hit: " + " ".join(f"{k[6:]}:{v}" for k, v in shifts.items())]
        lines += [f"  {k:<24} {v}" for k, v in self.bins.items() if k not in shifts]
        miss = self.missing()
        lines.append("  never hit: " + (", ".join(miss) if miss else "none"))
        return "\n".join(lines)
