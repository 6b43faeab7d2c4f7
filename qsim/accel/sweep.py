"""``qsim sweep``: a design-space sweep of the accelerator model over a grid, on Dask.

    res = sweep(["kws.tflite"], "grid.toml", hw="edge16", out="sweep.parquet")

Each point (a model x one value per grid field, :mod:`qsim.accel.grid`) is the preset ``hw``
with the point's fields overridden, timed by the accelerator model.  One row per point in one
Parquet file: ``model`` (file name), ``key`` (a stable hash of the model's bytes, the base
machine, the point's values and the values mode), one column per grid field (named by its
path, ``array.rows``), ``feasible``/``error`` (a machine the model does not fit -- an SRAM
smaller than one tile -- is a row with its reason, not a failed sweep), ``pe_count``,
``sram_kib`` (the three buffers together), then every scalar figure of the profile totals
(cycles, latency_ms, mac_utilization_pct, dram_bytes, energy... whatever
:meth:`qsim.accel.profile.PreparedProfile.run` reports).  Values (optional):

* ``values="random"``: one seeded random input through the modelled datapath, as
  ``qsim profile`` does (its datapath totals: accumulator overflows, saturations...);
* ``data=PATH``: every sample of a dataset through the datapath; ``samples``, ``accuracy``
  (top-1 of the first output, with labels), ``outputs_changed_fraction`` (fraction of the graph
  outputs' elements that differ from the reference: qsim's exact TFLite Micro arithmetic,
  profile ``tflm``), and the datapath totals summed over the samples (``*_min``: min,
  ``*bits*`` and ``*_max``: max; ``outputs_changed`` is then the count summed over samples);
* ``values=None`` (``--no-values``): timing only; works for every model qsim can load (ops whose values qsim
  cannot compute are still timed), except float models.

Points are cut into tasks of ``points_per_task`` points of one model; each task runs on a
Dask worker (:mod:`qsim.cluster`), which loads and maps the model once (``worker_cache``) and
caches per-layer schedules and datapath results across points.  Each finished task is
written at once as a part file (``OUT.parts/``); at the end the parts are merged into
``OUT`` in a deterministic order (models as given, grid order) and removed.  ``resume=True``
keeps the rows of an earlier, interrupted or complete, run (``OUT`` and its parts) and runs
only the points whose keys are missing: a sweep killed half way and resumed gives the same
file as one run.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import QsimError
from . import config, grid as gridmod
from .profile import check_profilable, map_layers, prepare_profile

DEFAULT_POINTS_PER_TASK = 250
HEAD = ("model", "key")
DERIVED = ("feasible", "error", "pe_count", "sram_kib")  # after the grid columns, before the totals
SCHEDULE_CACHE_MAX = 5_000  # layer schedules kept per worker and model (a bigger dict measured no faster)
VALUES_CACHE_MAX = 256  # datapath results kept per worker and model
# HwConfig fields the datapath values never depend on (anything else -- rounding, accumulator,
# requant variant -- is treated as value-relevant, so a new field is never wrongly cached)
TIMING_ONLY_FIELDS = frozenset({"name", "description", "rows", "cols", "dataflow", "clock_mhz", "ifmap_sram_kib",
                                "weight_sram_kib", "output_sram_kib", "dram_bytes_per_cycle",
                                "dram_latency_cycles", "requant_lanes", "requant_depth", "vector_lanes",
                                "layer_setup_cycles"})


@dataclass
class SweepResult:
    """What :func:`sweep` did.  ``rows``: the points in the file; ``ran``: computed by this call;
    ``reused``: kept from an earlier run (``resume``); ``complete``: False when stopped early."""

    out: Path
    rows: int
    ran: int
    reused: int
    infeasible: int
    complete: bool = True
    columns: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["out"], d["plots"] = str(self.out), [str(p) for p in self.plots]
        return d

    def table(self):
        """The Parquet file as a pyarrow Table."""
        import pyarrow.parquet as pq
        return pq.read_table(self.out)


# ------------------------------------------------------------------ the worker side

class _ModelState:
    """A model as a worker holds it: graph, mapping, schedule cache, datapath cache."""

    def __init__(self, blob: bytes):
        from ..api import load
        self.model = load(blob, name="model")
        self.maps = map_layers(self.model.graph)
        self.schedules: dict = {}
        self.values: dict = {}
        self.reference: dict = {}


def run_points(blob: bytes, model_sha: str, base: config.HwConfig, fields: tuple[str, ...],
               points: list[tuple[str, tuple]], mode: str, data=None, data_id: str = "") -> list[dict]:
    """One task: rows for ``points`` [(key, values aligned with ``fields``)] of one model.

    ``mode``: "timing", "random" or "data" (``data`` = (x, y or None), ``data_id`` its hash).
    """
    from ..cluster import worker_cache
    st = worker_cache(("sweep", model_sha), lambda: _ModelState(blob))
    g = st.model.graph
    rows = []
    for key, values in points:
        row: dict[str, Any] = {"key": key}
        changes = dict(zip(fields, values))
        try:
            cfg = base.with_overrides(**changes)
            if len(st.schedules) > SCHEDULE_CACHE_MAX:
                st.schedules.clear()
            pp = prepare_profile(g, cfg, events=False, values=False, maps=st.maps, cache=st.schedules)
            totals = pp.run(None).totals
        except QsimError as e:
            row.update(feasible=False, error=str(e))
            rows.append(row)
            continue
        row.update(feasible=True, error=None, pe_count=cfg.rows * cfg.cols,
                   sram_kib=cfg.ifmap_sram_kib + cfg.weight_sram_kib + cfg.output_sram_kib)
        row.update(_scalars(totals))
        if mode != "timing":
            row.update(_point_values(st, pp, cfg, mode, data, data_id))
        rows.append(row)
    return rows


def _scalars(d: dict) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in d.items()
            if isinstance(v, (int, float, bool, str, np.generic))}


def _value_key(cfg: config.HwConfig) -> tuple:
    return tuple((k, v) for k, v in sorted(cfg.as_dict().items()) if k not in TIMING_ONLY_FIELDS)


def _point_values(st: _ModelState, pp, cfg: config.HwConfig, mode: str, data, data_id: str) -> dict:
    vkey = (mode, data_id, _value_key(cfg))
    hit = st.values.get(vkey)
    if hit is not None:
        return hit
    g = st.model.graph
    if mode == "random":
        res = pp.run(st.model.random_inputs(1, 0)[0])
        out = _scalars({k: v for k, v in res.totals.items() if k not in pp.base_totals})
    else:
        x, y = data
        if data_id not in st.reference:  # exact TFLite Micro arithmetic, batched
            r = st.model.prepared("tflm").run_samples({g.inputs[0]: x}, keep_all=False)
            st.reference.clear()
            st.reference[data_id] = [np.asarray(r[t]) for t in g.outputs]
        ref = st.reference[data_id]
        changed = total = correct = 0
        merged: dict = {}
        for i in range(x.shape[0]):
            res = pp.run([x[i:i + 1].reshape(g.tensors[g.inputs[0]].shape)])
            outs = [res.values[t] for t in g.outputs]
            for o, r in zip(outs, ref):
                changed += int(np.count_nonzero(o.reshape(-1) != r[i].reshape(-1)))
                total += o.size
            if y is not None:
                correct += int(np.argmax(outs[0].reshape(-1)) == y[i])  # ties: the lower index
            for k, v in _scalars({k: v for k, v in res.totals.items() if k not in pp.base_totals}).items():
                merged[k] = (min(merged.get(k, v), v) if k.endswith("_min") else
                             max(merged.get(k, v), v) if "bits" in k or k.endswith("_max") else merged.get(k, 0) + v)
        out = {"samples": int(x.shape[0]), "accuracy": correct / x.shape[0] if y is not None else None,
               "outputs_changed_fraction": changed / total if total else 0.0}
        out.update(merged)
    if len(st.values) > VALUES_CACHE_MAX:
        st.values.clear()
    st.values[vkey] = out
    return out


# ------------------------------------------------------------------ the parent side

def _sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def point_key(model_sha: str, base: config.HwConfig, paths: Sequence[str], values: Sequence, mode_id: str) -> str:
    """The stable identity of one point: model bytes, base machine, the point's values, values mode."""
    doc = [model_sha, base.as_dict(), sorted(zip(paths, values)), mode_id]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:24]


@dataclass
class _Model:
    path: str
    name: str
    blob: bytes
    sha: str
    data: Any = None  # (x, y) for mode "data"
    data_id: str = ""


def _open_models(models: Sequence, mode: str, data, labels) -> list[_Model]:
    from ..api import load
    if not models:
        raise QsimError("give at least one model to sweep.")
    out = []
    for spec in models:
        m = load(spec)
        check_profilable(m.graph, values=mode != "timing")
        name = Path(m.path).name if m.path else m.source
        mm = _Model(str(spec), name, m.blob, _sha(m.blob))
        if mode == "data":
            ds = m.dataset(data, labels=labels).load()
            if len(ds) == 0:
                raise QsimError(f"the dataset {data} holds no samples.")
            mm.data = (np.ascontiguousarray(ds.x), ds.y)
            h = hashlib.sha256(ds.x.tobytes())
            if ds.y is not None:
                h.update(np.asarray(ds.y, np.int64).tobytes())
            mm.data_id = "data:" + h.hexdigest()
        out.append(mm)
    names = [m.name for m in out]
    for m in out:
        if names.count(m.name) > 1:
            m.name = m.path  # two files of one name: the paths tell them apart
    return out


def sweep(models: Sequence, grid, hw: Any = config.DEFAULT_PRESET, out: "str | Path" = "sweep.parquet",
          data: "str | Path | None" = None, labels: "str | Path | None" = None, values: str | None = "random",
          resume: bool = False, scheduler: str | None = None, workers: int | None = None, client=None,
          points_per_task: int = DEFAULT_POINTS_PER_TASK, progress: bool = True, plot: "str | Path | None" = None,
          max_tasks: int | None = None) -> SweepResult:
    """Sweep ``models`` (paths or bytes) over ``grid`` (a grid file, its dict, or a Grid) on ``hw``.

    ``values``: "random" (one seeded random input through the datapath, as ``Model.profile``)
    or None (timing only); ``data`` (+ ``labels``): a dataset through the datapath instead.
    ``scheduler`` / ``workers`` / ``client``: where it runs (:func:`qsim.cluster.dask_client`;
    ``workers=0``: in this process).  ``plot``: also write the Pareto plots to that folder.
    ``max_tasks``: stop after that many tasks (the parts stay for ``resume``; the file is not
    written), as an interrupted run would.
    """
    import pyarrow.parquet as pq
    from ..cluster import dask_client, run_tasks

    if values not in (None, "random"):
        raise QsimError(f"values must be None (timing only) or 'random', got {values!r}.")
    if data is not None and values is None:
        raise QsimError("--data runs a dataset through the datapath; --no-values (timing only) contradicts it.")
    if labels is not None and data is None:
        raise QsimError("--labels needs --data.")
    if not isinstance(points_per_task, int) or points_per_task < 1:
        raise QsimError(f"points per task must be a positive integer, got {points_per_task!r}.")
    mode = "data" if data is not None else ("random" if values == "random" else "timing")
    base = hw if isinstance(hw, config.HwConfig) else config.load_hw(hw)
    g = grid if isinstance(grid, gridmod.Grid) else gridmod.load_grid(grid, base)
    mods = _open_models(models, mode, data, labels)
    out = Path(out)
    parts = out.with_name(out.name + ".parts")
    if not resume:
        shutil.rmtree(parts, ignore_errors=True)
    done = _done_keys(out, parts) if resume else {}

    paths, fields = g.paths, g.fields
    front = (*HEAD, *paths, *DERIVED)
    order: dict[str, tuple[int, int]] = {}
    todo: list[list[tuple[str, tuple]]] = [[] for _ in mods]
    grid_cols: dict[str, dict] = {}
    vkeys = [repr(_value_key(_point_cfg(base, paths, fields, vals))) for vals in g.points()]
    for mi, m in enumerate(mods):
        mode_id = m.data_id or mode
        for pi, vals in enumerate(g.points()):
            key = point_key(m.sha, base, paths, vals, mode_id)
            order[key] = (mi, pi)
            grid_cols[key] = {"model": m.name, "key": key, **dict(zip(paths, vals))}
            if key not in done:
                todo[mi].append((key, vals))
        if mode != "timing":  # a task's points share few datapath configurations (computed once per worker)
            todo[mi].sort(key=lambda kv: vkeys[order[kv[0]][1]])
    tasks, weights = [], []
    n_new = sum(len(t) for t in todo)
    try:
        with (dask_client(scheduler, workers, client) if n_new else dask_client(workers=0)) as c:
            for mi, m in enumerate(mods):
                if not todo[mi]:
                    continue
                blob = m.blob if c is None else c.scatter(m.blob, broadcast=True)
                dat = m.data if c is None or m.data is None else c.scatter(m.data, broadcast=True)
                for s in range(0, len(todo[mi]), points_per_task):
                    chunk = todo[mi][s:s + points_per_task]
                    tasks.append((blob, m.sha, base, fields, chunk, mode, dat, m.data_id))
                    weights.append(len(chunk))
            try:
                parts.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise QsimError(f"cannot create {parts} next to --out: {e.strerror or e}") from None
            finished = points_done = 0
            for _, rows in run_tasks(c, run_points, tasks, desc="sweep", unit="point", progress=progress,
                                     weights=weights):
                _write_part(parts, [{**grid_cols[r["key"]], **r} for r in rows], front)
                finished += 1
                points_done += len(rows)
                if max_tasks is not None and finished >= max_tasks:
                    return SweepResult(out, len(done) + points_done, points_done, len(done), 0, complete=False)
    except KeyboardInterrupt:
        raise QsimError(f"interrupted; the finished points are kept in {parts}: run again with --resume.") from None
    rows = _read_rows(out if resume else None, parts)  # without --resume an old file is replaced, not merged
    rows.sort(key=lambda r: (order.get(r["key"], (len(mods), 0)), r["model"], r["key"]))
    table = _table(rows, front)
    tmp = out.with_name(out.name + ".tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    except OSError as e:
        raise QsimError(f"cannot write {out}: {e.strerror or e}; the points are kept in {parts} (--resume).") from None
    shutil.rmtree(parts, ignore_errors=True)
    infeasible = sum(1 for r in rows if not r.get("feasible"))
    res = SweepResult(out, len(rows), n_new, len(rows) - n_new, infeasible, True, table.column_names)
    if plot is not None:
        from .plots import pareto_report
        res.plots = pareto_report(table, plot)
    return res


def _point_cfg(base: config.HwConfig, paths, fields, vals) -> config.HwConfig:
    """The machine of one point; a combination of values that is impossible names the fields."""
    try:
        return base.with_overrides(**dict(zip(fields, vals)))
    except QsimError as e:
        point = ", ".join(f"{p} = {v!r}" for p, v in zip(paths, vals))
        raise QsimError(f"grid point ({point}) is impossible: {e}") from None


def _write_part(parts: Path, rows: list[dict], front: Sequence[str]) -> None:
    import pyarrow.parquet as pq
    name = hashlib.sha256("".join(r["key"] for r in rows).encode()).hexdigest()[:20]
    tmp = parts / f".{name}.tmp"
    pq.write_table(_table(rows, front), tmp)
    os.replace(tmp, parts / f"part-{name}.parquet")  # a killed run leaves whole parts only


def _read_rows(out: Path | None, parts: Path) -> list[dict]:
    """Rows of ``out`` (when given) and of every readable part, one per key (None values dropped)."""
    import pyarrow.parquet as pq
    files = ([out] if out is not None and out.is_file() else []) + (sorted(parts.glob("part-*.parquet")) if parts.is_dir() else [])
    rows: dict[str, dict] = {}
    for f in files:
        try:
            t = pq.read_table(f)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            if f == out:
                raise QsimError(f"cannot read {out} to resume: {e}") from None
            continue
        if "key" not in t.column_names:
            raise QsimError(f"{f} is not a qsim sweep file (no 'key' column).")
        for r in t.to_pylist():
            rows.setdefault(r["key"], {k: v for k, v in r.items() if v is not None})
    return list(rows.values())


def _done_keys(out: Path, parts: Path) -> dict:
    return {r["key"]: True for r in _read_rows(out, parts)}


def _table(rows: list[dict], front: Sequence[str]):
    """Rows -> a pyarrow Table: the ``front`` columns, then the others in first-seen order
    (deterministic for sorted rows)."""
    import pyarrow as pa
    cols: dict[str, None] = dict.fromkeys(front)
    for r in rows:
        for k in r:
            cols.setdefault(k, None)
    return pa.Table.from_pylist([{k: r.get(k) for k in cols} for r in rows])
