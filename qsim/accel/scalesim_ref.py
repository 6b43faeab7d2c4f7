"""Run SCALE-Sim v3 (the field's systolic-array cycle reference) on qsim's GEMM layers, for validation.

SCALE-Sim 3.0.0 crashes with numpy 2.x, so it lives in its own virtualenv
(numpy < 2) and runs as a subprocess through ``scalesim_driver.py``.  The
environment is ``$QSIM_SCALESIM_VENV`` (the Makefile sets it to the checkout's
``.venv-scalesim``), else ``$XDG_CACHE_HOME/qsim/venv-scalesim`` (default
``~/.cache/qsim/venv-scalesim``: never inside the installed package).
:func:`ensure_venv` creates it when it is missing (the same commands as the
Makefile's)::

    python3 -m venv $QSIM_SCALESIM_VENV
    $QSIM_SCALESIM_VENV/bin/pip install scalesim==3.0.0 "numpy<2"
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

from ..errors import QsimError
from .mapping import LayerMap

_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
VENV = Path(os.environ.get("QSIM_SCALESIM_VENV") or _CACHE / "qsim" / "venv-scalesim")
DRIVER = Path(str(files("qsim.accel") / "scalesim_driver.py"))  # run by the SCALE-Sim venv's python
PACKAGES = ("scalesim==3.0.0", "numpy<2")


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _has_scalesim(py: Path) -> bool:
    return py.is_file() and subprocess.run([str(py), "-c", "import scalesim.scale_sim"],
                                           capture_output=True).returncode == 0


def ensure_venv() -> Path:
    """Python of SCALE-Sim's virtualenv, creating it (venv + pip) when absent.

    Serialized with a lock file in the temp directory, so parallel test workers build it once.
    """
    py = venv_python()
    if _has_scalesim(py):
        return py
    with open(Path(tempfile.gettempdir()) / "qsim-venv-scalesim.lock", "w") as lock:
        try:
            import fcntl
            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        if _has_scalesim(py):
            return py
        return _create_venv(py)


def _create_venv(py: Path) -> Path:
    steps = [[sys.executable, "-m", "venv", str(VENV)],
             [str(py), "-m", "pip", "install", "--quiet", *PACKAGES]]
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise QsimError(f"could not set up SCALE-Sim's environment ({' '.join(cmd)} failed): "
                            f"{(r.stderr or r.stdout).strip()[-800:]}")
    if not _has_scalesim(py):
        raise QsimError(f"SCALE-Sim is still not importable from {py} after installing {', '.join(PACKAGES)}.")
    return py


def scalesim_layers(layers: list[LayerMap]) -> list[dict]:
    """SCALE-Sim topology rows for GEMM layers (padded input, one stride); depthwise not accepted."""
    out = []
    for L in layers:
        if L.scalesim is None or L.groups != 1:
            raise QsimError(f"op #{L.index} {L.opcode} has no SCALE-Sim equivalent "
                            "(depthwise, dilated, or unequal strides).")
        out.append({k: v for k, v in L.scalesim.items() if k != "repeat"})
    return out


def run(layers: list[LayerMap], rows: int, cols: int, dataflow: str, sram_kib: int = 1024,
        timeout: float = 600) -> dict:
    """SCALE-Sim's per-layer report for ``layers`` ({"layers": [...], "seconds": wall})."""
    py = ensure_venv()
    req = {"rows": rows, "cols": cols, "dataflow": dataflow, "sram_kib": sram_kib,
           "layers": scalesim_layers(layers)}
    r = subprocess.run([str(py), str(DRIVER), "-"], input=json.dumps(req), capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise QsimError(f"SCALE-Sim failed (exit {r.returncode}): {r.stderr.strip()[-1500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])
