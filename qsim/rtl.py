"""The requantization RTL that ships with qsim (SystemVerilog sources as package data).

The repository's ``rtl/`` folder is the one copy of the RTL; it installs as the data package
``qsim.rtl_src`` (in a wheel and in an editable install alike), so these paths are valid
wherever qsim is installed, not only in a checkout.

* :func:`sources` -> the ``.sv`` files (absolute paths, sorted by name; every module the
  top ``requant_unit`` instantiates is among them), ready for Verilator / yosys / a vendor
  tool, e.g. ``verilator --lint-only --top-module requant_unit $(python -c "import qsim.rtl;
  print(*qsim.rtl.sources())")``.
* :func:`source` -> one file by name (``source("requant_unit.sv")``).
* ``TOP`` = ``"requant_unit"``, the top module (parameters ``LANES``, ``SINGLE_ROUNDING``).
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .errors import QsimError

TOP = "requant_unit"
_PACKAGE = "qsim.rtl_src"


def _folder() -> Path:
    try:
        folder = Path(str(files(_PACKAGE)))
    except ModuleNotFoundError:
        folder = None
    if folder is None or not folder.is_dir():
        raise QsimError(f"qsim's RTL sources (package data {_PACKAGE}) are missing from this installation; "
                        "reinstall qsim (pip install qsim / pip install -e . from a checkout)")
    return folder


def sources() -> list[Path]:
    """Absolute paths of the SystemVerilog sources (``*.sv``), sorted by file name."""
    found = sorted(_folder().glob("*.sv"))
    if not found:
        raise QsimError(f"no .sv files in {_folder()}: qsim's RTL sources are missing; reinstall qsim")
    return found


def source(name: str) -> Path:
    """Absolute path of one RTL source file, e.g. ``source("requant_unit.sv")``.

    The path is returned whether or not the file exists (the caller reports a missing file)."""
    return _folder() / name
