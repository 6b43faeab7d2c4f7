"""qsim: bit-exact int8 TFLite simulation, an accelerator cycle model and a C firmware generator.

``import qsim`` is the API (see :mod:`qsim.api`)::

    m = qsim.load("model.tflite")
    r = m.run(m.inputs[0].quantize(x))
    r.top_k(3); m.check(inputs=3).ok; m.profile(hw="edge16").totals; m.codegen("out/")
    qsim.sweep(["model.tflite"], "grid.toml", hw="edge16", out="sweep.parquet")
"""
from __future__ import annotations

import os as _os

# BLAS threads: qsim's matmuls are small; on a loaded machine OpenBLAS's thread pool makes a
# 6x6x128 1x1 conv 500x slower (32 ms vs 0.06 ms measured).  Before numpy loads; env overrides.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")


def _version() -> str:
    """The installed distribution's version, else the one in the source tree's pyproject.toml."""
    from importlib import metadata
    from pathlib import Path
    try:
        return metadata.version("qsim")
    except metadata.PackageNotFoundError:
        pass
    import re
    try:
        text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return "0+unknown"
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    return m.group(1) if m else "0+unknown"


__version__ = _version()

from .api import CheckReport, Model, ProfileReport, RunResult, TensorInfo, TopK, load  # noqa: E402
from .errors import QsimError  # noqa: E402


def sweep(models, grid, hw="edge16", out="sweep.parquet", **options):
    """A design-space sweep of the accelerator model: every model on every point of ``grid``
    (a TOML file of preset fields with lists/ranges of values), one Parquet row per point, on
    Dask.  Returns :class:`qsim.accel.sweep.SweepResult`; options and columns:
    :func:`qsim.accel.sweep.sweep` (``data=``, ``labels=``, ``values=None`` for timing only,
    ``resume=``, ``scheduler=``, ``workers=``, ``plot=``)."""
    from .accel.sweep import sweep as _sweep
    return _sweep(models, grid, hw=hw, out=out, **options)


__all__ = ["__version__", "load", "Model", "TensorInfo", "RunResult", "TopK", "CheckReport", "ProfileReport",
           "QsimError", "sweep"]
