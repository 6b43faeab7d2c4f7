"""Design-space grids for ``qsim sweep``: preset fields -> lists of values -> points.

A grid file is TOML laid out like a preset (``qsim/presets/*.toml``): every key is a preset
field named by its section and key, and holds the values to sweep::

    [array]
    rows = [8, 16, 32]                         # a list
    cols = {start = 8, stop = 32, step = 8}    # a range, stop included: 8, 16, 24, 32
    dataflow = ["ws", "os"]
    [sram]
    ifmap_kib = {start = 16, stop = 256, mul = 2}   # geometric: 16, 32, ..., 256
    [dram]
    bytes_per_cycle = 16                       # one value: fixed for every point

(``array.rows = [8, 16]`` at the top level is the same TOML.)  Points are the Cartesian
product, the last field varying fastest.  The fields are the preset schema itself
(:func:`qsim.accel.config.preset_paths`): any field a preset may set can be swept.  Every
problem -- an unknown field, an empty list, a value of the wrong type, a value that makes an
impossible machine -- is a QsimError naming the field.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import QsimError
from . import config

MAX_VALUES = 100_000  # per field
MAX_POINTS = 10_000_000  # per grid
RANGE_KEYS = {"start", "stop", "step", "mul"}


@dataclass(frozen=True)
class Axis:
    path: str  # "array.rows"
    field: str  # HwConfig field ("rows")
    values: tuple  # coerced to the field's type, in the order given


@dataclass(frozen=True)
class Grid:
    """The swept fields, in file order; :meth:`points` enumerates their product."""

    axes: tuple[Axis, ...]

    @property
    def paths(self) -> list[str]:
        return [a.path for a in self.axes]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(a.field for a in self.axes)

    def __len__(self) -> int:
        return math.prod(len(a.values) for a in self.axes)

    def points(self) -> Iterator[tuple]:
        """Each point's values, aligned with :attr:`axes` (last axis fastest)."""
        return itertools.product(*(a.values for a in self.axes))

    def columns(self, index) -> list[list]:
        """The values of the points numbered ``index`` (positions in :meth:`points`, an int
        array), one list per axis: ``columns(i)[a][j]`` is axis ``a``'s value at point ``i[j]``."""
        import numpy as np
        digits = np.unravel_index(np.asarray(index, dtype=np.int64), [len(a.values) for a in self.axes])
        return [[a.values[d] for d in ds.tolist()] for a, ds in zip(self.axes, digits)]


def load_grid(spec: "str | Path | dict", base: config.HwConfig | None = None) -> Grid:
    """A grid file (or its already parsed dict) -> validated :class:`Grid` (on machine ``base``)."""
    if isinstance(spec, dict):
        data, where = spec, "the grid"
    else:
        data = config.read_toml(Path(spec), "grid file")
        where = f"grid file {spec}"
    base = base or config.HwConfig()
    known = config.preset_paths()
    axes = []
    for section, body in data.items():
        if not isinstance(body, dict):
            raise QsimError(f"{where}: '{section}' is not a preset field; name fields by section and key "
                            f"(e.g. [array] rows = [8, 16]). Fields: {', '.join(known)}.")
        for key, spec_ in body.items():
            path = f"{section}.{key}"
            if path not in known:
                raise QsimError(f"{where}: unknown field '{path}'; preset fields: {', '.join(known)}.")
            axes.append(_axis(path, known[path], spec_, base))
    if not axes:
        raise QsimError(f"{where} names no field to sweep; e.g. [array] rows = [8, 16, 32].")
    grid = Grid(tuple(axes))
    if len(grid) > MAX_POINTS:
        raise QsimError(f"{where} has {len(grid)} points, more than {MAX_POINTS}; sweep fewer values.")
    return grid


def _axis(path: str, field: str, spec: Any, base: config.HwConfig) -> Axis:
    if isinstance(spec, dict):
        raw = _range(path, spec)
    elif isinstance(spec, list):
        raw = spec
    else:
        raw = [spec]
    if not raw:
        raise QsimError(f"grid field '{path}' has an empty list of values; give at least one.")
    values = []
    for v in raw:
        v = _typed(path, field, v)
        try:
            base.with_overrides(**{field: v})
        except QsimError as e:
            raise QsimError(f"grid field '{path}' = {v!r} is impossible: {e}") from None
        if v in values:
            raise QsimError(f"grid field '{path}' lists {v!r} twice.")
        values.append(v)
    return Axis(path, field, tuple(values))


def _typed(path: str, field: str, v: Any):
    """``v`` as the field's type (int, float, str, bool), or a QsimError naming the field."""
    t = config.field_type(field)
    kind = t.split("|")[0].strip()
    ok = {"int": isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, float) and v.is_integer()),
          "float": isinstance(v, (int, float)) and not isinstance(v, bool),
          "bool": isinstance(v, bool), "str": isinstance(v, str)}.get(kind, not isinstance(v, (list, dict)))
    if not ok:
        raise QsimError(f"grid field '{path}' takes {kind} values, got {v!r} ({type(v).__name__}).")
    return {"int": int, "float": float}.get(kind, lambda x: x)(v)


def _range(path: str, spec: dict) -> list:
    """{start, stop, step} (arithmetic) or {start, stop, mul} (geometric), stop included."""
    extra = sorted(set(spec) - RANGE_KEYS)
    if extra or "start" not in spec or "stop" not in spec or ("step" in spec) == ("mul" in spec):
        raise QsimError(f"grid field '{path}': a range is {{start = A, stop = B, step = S}} or "
                        f"{{start = A, stop = B, mul = M}} (stop included), got {spec!r}.")
    nums = {k: v for k, v in spec.items()}
    for k, v in nums.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise QsimError(f"grid field '{path}': range {k} must be a number, got {v!r}.")
    start, stop = nums["start"], nums["stop"]
    integral = all(isinstance(v, int) for v in nums.values())
    out = []
    if "step" in nums:
        step = nums["step"]
        if step <= 0:
            raise QsimError(f"grid field '{path}': range step must be > 0, got {step!r}.")
        n = int(math.floor((stop - start) / step + 1e-9)) + 1 if stop >= start else 0
        if n > MAX_VALUES:
            raise QsimError(f"grid field '{path}': the range has {n} values, more than {MAX_VALUES}.")
        out = [start + i * step if integral else round(start + i * step, 12) for i in range(n)]
    else:
        mul = nums["mul"]
        if mul <= 1 or start <= 0:
            raise QsimError(f"grid field '{path}': a geometric range needs start > 0 and mul > 1, got {spec!r}.")
        v = start
        while v <= stop * (1 + 1e-12):
            out.append(v if integral else round(v, 12))
            v = v * mul
            if len(out) > MAX_VALUES:
                raise QsimError(f"grid field '{path}': the range has more than {MAX_VALUES} values.")
    if not out:
        raise QsimError(f"grid field '{path}': the range {spec!r} holds no value (stop < start).")
    return out
