"""Exact sums of float64 values, so statistics merged from shards of a dataset do not depend on the split.

Every finite float64 is an integer multiple of 2**-1074 (the smallest subnormal).  :class:`ExactSum`
keeps a running sum as that integer (a Python int, a few hundred bits), so additions and merges in any
order or grouping give the same total; ``float()`` rounds it once, to nearest (CPython's int / int
true division is correctly rounded).  Non-finite terms are summed apart in float arithmetic, where
inf + -inf = nan and nan absorbs everything in any order.  Cost: about a microsecond per term, meant
for per-batch partial sums (``float(a.sum())``), not per element.
"""
from __future__ import annotations

import math

__all__ = ["ExactSum"]

_EXP = 1074  # 2**-1074: the unit every finite float64 is an integer multiple of
_ONE = 1 << _EXP


class ExactSum:
    """A sum of float64 terms kept exactly; ``float(s)`` is the correctly rounded total."""

    __slots__ = ("units", "special")

    def __init__(self, value: float = 0.0):
        self.units = 0  # the finite terms' sum, in units of 2**-1074
        self.special: float | None = None  # the sum of the non-finite terms, None when there were none
        if value:
            self.add(value)

    def add(self, value: float) -> "ExactSum":
        """Add one term (in place); returns self."""
        v = float(value)
        if math.isfinite(v):
            num, den = v.as_integer_ratio()  # den = 2**k, k <= 1074
            self.units += num << (_EXP + 1 - den.bit_length())
        else:
            self.special = v if self.special is None else self.special + v
        return self

    def absorb(self, other: "ExactSum") -> "ExactSum":
        """Add another sum's terms (in place); returns self."""
        self.units += other.units
        if other.special is not None:
            self.special = other.special if self.special is None else self.special + other.special
        return self

    def __float__(self) -> float:
        if self.special is not None:
            return self.special
        try:
            return self.units / _ONE
        except OverflowError:
            return math.inf if self.units > 0 else -math.inf

    def __getstate__(self):
        return self.units, self.special

    def __setstate__(self, state):
        self.units, self.special = state

    def __repr__(self) -> str:
        return f"ExactSum({float(self)!r})"
