"""Facts about the requantization RTL that the Python side must agree with.

The one definition of the requant pipeline depth is ``localparam int LATENCY``
in ``rtl/requant_unit.sv`` (installed as package data, see :mod:`qsim.rtl`);
this module reads it from there, so the
accelerator model's default requant depth and the RTL cannot drift apart
(``hdl_tests`` checks that the simulated RTL shows exactly this latency).

* ``REQUANT_LATENCY``: pipeline depth in clock cycles (register stages from
  an accepted input beat to the cycle its result can transfer), default
  (double) rounding.  Read lazily: a missing RTL file raises
  :class:`qsim.errors.QsimError` on first use, not at import.
* :func:`requant_latency(rounding)`: the same for a rounding mode name; the
  unit has the same depth in both modes.
* :func:`requant_rtl_path`: the installed requant_unit.sv.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from . import rtl
from .errors import QsimError
from .fixedpoint import ROUNDING_MODES

_LATENCY_RE = re.compile(r"^\s*localparam\s+int\s+LATENCY\s*=\s*(\d+)\s*;", re.MULTILINE)


def requant_rtl_path() -> Path:
    """Path of requant_unit.sv in qsim's installed RTL sources (:func:`qsim.rtl.source`)."""
    return rtl.source("requant_unit.sv")


@lru_cache(maxsize=None)
def _read_latency(path: Path) -> int:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise QsimError(
            f"cannot read the requantization RTL at {path} ({e.strerror or e}); the requant pipeline "
            "depth is defined there (localparam int LATENCY) and the file ships inside the qsim "
            "package (qsim.rtl.sources()): reinstall qsim"
        ) from None
    found = _LATENCY_RE.findall(text)
    if len(found) != 1:
        raise QsimError(
            f"{path} must define exactly one line 'localparam int LATENCY = <cycles>;' "
            f"(found {len(found)}); it is the one definition of the requant pipeline depth"
        )
    return int(found[0])


def requant_latency(rounding: str = "double") -> int:
    """Requant pipeline depth in cycles for a rounding mode ("double" | "single")."""
    if rounding not in ROUNDING_MODES:
        raise QsimError(f"unknown rounding mode {rounding!r}; expected one of {ROUNDING_MODES}")
    return _read_latency(requant_rtl_path())


def __getattr__(name: str):
    if name == "REQUANT_LATENCY":
        return requant_latency("double")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
