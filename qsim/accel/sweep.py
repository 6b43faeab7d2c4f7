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

Points are cut into tasks of one model (:func:`task_sizes`: guided by default -- big tasks
first, ever smaller ones at the end, so the scheduler sees few tasks and the workers finish
together; or ``points_per_task`` each).  A task is a plain argument tuple (the grid, the
points' numbers and keys as numpy arrays); it runs on a Dask worker (:mod:`qsim.cluster`),
which loads and maps the model once (``worker_cache``) and keeps per-layer schedules, SRAM
tiles, energies and datapath results across points, and returns its rows as columns (a
pyarrow Table built on the worker).  Finished tasks are written together as one part file
(``OUT.parts/``) at most every :data:`PART_SECONDS` (and when the sweep stops); at the end
the tables are merged into ``OUT`` in a deterministic order (models as given, grid order) and
the parts removed.  ``resume=True`` keeps the rows of an earlier, interrupted or complete, run
(``OUT`` and its parts) and runs only the points whose keys are missing: a sweep killed half
way and resumed gives the same file as one run (a kill loses the tasks finished since the
last part).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import QsimError
from . import config, grid as gridmod
from .profile import check_profilable, map_layers, prepare_profile

DEFAULT_POINTS_PER_TASK = None  # None: guided task sizes (:func:`task_sizes`)
# guided tasks are never smaller than this, nor than 4 points per worker: a task costs a few ms of
# scheduler and client time, and W workers finishing tiny tasks at once would queue at the scheduler
MIN_POINTS_PER_TASK = 50
PART_SECONDS = 5.0  # finished tasks are written as one part file at most this often (and at the end/stop)
HEAD = ("model", "key")
DERIVED = ("feasible", "error", "pe_count", "sram_kib")  # after the grid columns, before the totals
SCHEDULE_CACHE_MAX = 20_000  # layer schedules, tiles and energies kept per worker and model
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

    def profile(self, cfg: config.HwConfig):
        """The model timed on ``cfg`` (a PreparedProfile; QsimError when it does not fit), with
        the schedules, tiles and energies of earlier machines reused (:func:`time_graph`'s cache).
        The parent checked the model once (``check_profilable``), so it is not checked per point."""
        if len(self.schedules) > SCHEDULE_CACHE_MAX:
            self.schedules.clear()
        return prepare_profile(self.model.graph, cfg, events=False, values=False, maps=self.maps,
                               cache=self.schedules, checked=True)


def run_points(blob: bytes, model_sha: str, name: str, base: config.HwConfig, grid: gridmod.Grid,
               index: np.ndarray, keys: np.ndarray, mode: str, data=None, data_id: str = ""):
    """One task: the points numbered ``index`` (positions in ``grid.points()``, an int array;
    ``keys`` their :func:`point_key`) of one model, as a pyarrow Table in columns: ``model``
    (``name``), ``key``, the grid fields, :data:`DERIVED`, then the totals (and values) in
    first-seen order.  Built here from per-column lists (pyarrow infers the types as from rows),
    so the parent only writes it.

    ``mode``: "timing", "random" or "data" (``data`` = (x, y or None), ``data_id`` its hash).
    A combination of grid values that makes an impossible machine fails the task (QsimError).
    """
    import pyarrow as pa
    from ..cluster import worker_cache
    st = worker_cache(("sweep", model_sha), lambda: _ModelState(blob))
    n = len(index)
    axes = grid.columns(index)
    paths, fields = grid.paths, grid.fields
    cols: dict[str, list] = {"model": [name] * n, "key": [str(k) for k in keys], **dict(zip(paths, axes)),
                             "feasible": [True] * n, "error": [None] * n, "pe_count": [None] * n,
                             "sram_kib": [None] * n}
    for i in range(n):
        cfg = _point_cfg(base, paths, fields, [a[i] for a in axes])
        try:
            pp = st.profile(cfg)
        except QsimError as e:
            cols["feasible"][i], cols["error"][i] = False, str(e)
            continue
        cols["pe_count"][i] = cfg.rows * cfg.cols
        cols["sram_kib"][i] = cfg.ifmap_sram_kib + cfg.weight_sram_kib + cfg.output_sram_kib
        row = _scalars(pp.base_totals)
        if mode != "timing":
            row.update(_point_values(st, pp, cfg, mode, data, data_id))
        for k, v in row.items():
            col = cols.get(k)
            if col is None:
                col = cols[k] = [None] * n
            col[i] = v
    return pa.table(cols)


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
    return _keyer(model_sha, base, paths, mode_id)(values)


def _keyer(model_sha: str, base: config.HwConfig, paths: Sequence[str], mode_id: str):
    """``values -> point_key(model_sha, base, paths, values, mode_id)``: the hash of the JSON text of
    ``[model_sha, base.as_dict(), sorted(zip(paths, values)), mode_id]`` (sorted keys), with the
    parts that do not depend on the point encoded once."""
    dumps = json.JSONEncoder(sort_keys=True, default=str).encode
    head = (dumps([model_sha, base.as_dict()])[:-1] + ", ").encode()
    tail = (", " + dumps(mode_id) + "]").encode()
    perm = sorted(range(len(paths)), key=lambda i: paths[i])  # paths are distinct: sorting pairs sorts paths
    spaths = [paths[i] for i in perm]

    def key(values: Sequence) -> str:
        pairs = dumps([[p, values[i]] for p, i in zip(spaths, perm)])
        return hashlib.sha256(head + pairs.encode() + tail).hexdigest()[:24]
    return key


@dataclass
class _Model:
    path: str
    name: str
    blob: bytes
    sha: str
    data: Any = None  # (x, y) for mode "data"
    data_id: str = ""
    weight: float = 1.0  # a point's cost relative to other models' (task_sizes): the number of ops


def _open_models(models: Sequence, mode: str, data, labels) -> list[_Model]:
    from ..api import load
    if not models:
        raise QsimError("give at least one model to sweep.")
    out = []
    for spec in models:
        m = load(spec)
        check_profilable(m.graph, values=mode != "timing")
        name = Path(m.path).name if m.path else m.source
        mm = _Model(str(spec), name, m.blob, _sha(m.blob), weight=max(1, len(m.graph.operators)))
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
          points_per_task: int | None = DEFAULT_POINTS_PER_TASK, progress: bool = True, plot: "str | Path | None" = None,
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
    from ..cluster import dask_client, run_tasks, share

    if values not in (None, "random"):
        raise QsimError(f"values must be None (timing only) or 'random', got {values!r}.")
    if data is not None and values is None:
        raise QsimError("--data runs a dataset through the datapath; --no-values (timing only) contradicts it.")
    if labels is not None and data is None:
        raise QsimError("--labels needs --data.")
    if points_per_task is not None and (not isinstance(points_per_task, int) or points_per_task < 1):
        raise QsimError(f"points per task must be a positive integer, got {points_per_task!r}.")
    mode = "data" if data is not None else ("random" if values == "random" else "timing")
    base = hw if isinstance(hw, config.HwConfig) else config.load_hw(hw)
    g = grid if isinstance(grid, gridmod.Grid) else gridmod.load_grid(grid, base)
    mods = _open_models(models, mode, data, labels)
    out = Path(out)
    parts = out.with_name(out.name + ".parts")
    if not resume:
        shutil.rmtree(parts, ignore_errors=True)
    kept = _read_tables(out, parts) if resume else []  # rows of an earlier run: the file first, then its parts
    done = {k for t in kept for k in t.column("key").to_pylist()}

    paths, fields = g.paths, g.fields
    front = (*HEAD, *paths, *DERIVED)
    order: dict[str, tuple[int, int]] = {}
    todo: list[tuple[np.ndarray, np.ndarray]] = []  # per model: (point numbers, keys) still to run
    vkeys = None
    if mode != "timing":  # a task's points share few datapath configurations (computed once per worker)
        vkeys = [repr(_value_key(_point_cfg(base, paths, fields, vals))) for vals in g.points()]
    for mi, m in enumerate(mods):
        key = _keyer(m.sha, base, paths, m.data_id or mode)
        keys = [key(vals) for vals in g.points()]
        order.update((k, (mi, pi)) for pi, k in enumerate(keys))
        index = [pi for pi, k in enumerate(keys) if k not in done]
        if vkeys is not None:
            index.sort(key=vkeys.__getitem__)
        todo.append((np.asarray(index, dtype=np.int64), np.asarray([keys[pi] for pi in index])))
    n_new = sum(len(t[0]) for t in todo)
    fresh: list = []  # the tables of this run's tasks
    try:
        with (dask_client(scheduler, workers, client) if n_new else dask_client(workers=0)) as c:
            n_workers = 1 if c is None else max(1, sum(c.nthreads().values()))
            sizes = task_sizes([len(t[0]) for t in todo], n_workers, points_per_task, [m.weight for m in mods])
            tasks, weights = [], []
            for mi, m in enumerate(mods):
                if not sizes[mi]:
                    continue
                blob = m.blob if c is None else share(c, m.blob)
                dat = m.data if c is None or m.data is None else share(c, m.data)
                index, keys = todo[mi]
                s = 0
                for size in sizes[mi]:
                    tasks.append((blob, m.sha, m.name, base, g, index[s:s + size], keys[s:s + size], mode, dat,
                                  m.data_id))
                    weights.append(size)
                    s += size
            try:
                parts.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise QsimError(f"cannot create {parts} next to --out: {e.strerror or e}") from None
            finished = points_done = written = 0
            last_write = time.monotonic()
            try:
                for _, t in run_tasks(c, run_points, tasks, desc="sweep", unit="point", progress=progress,
                                      weights=weights):
                    fresh.append(t)
                    finished += 1
                    points_done += t.num_rows
                    if max_tasks is not None and finished >= max_tasks:
                        _write_part(parts, fresh[written:])
                        return SweepResult(out, len(done) + points_done, points_done, len(done), 0, complete=False)
                    if time.monotonic() - last_write >= PART_SECONDS and finished < len(tasks):
                        _write_part(parts, fresh[written:])  # a killed run keeps whole parts only
                        written, last_write = len(fresh), time.monotonic()
            except KeyboardInterrupt:
                _write_part(parts, fresh[written:])
                raise
    except KeyboardInterrupt:
        raise QsimError(f"interrupted; the finished points are kept in {parts}: run again with --resume.") from None
    table = _merge(kept + fresh, front, lambda key, model: (order.get(key, (len(mods), 0)), model, key))
    tmp = out.with_name(out.name + ".tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    except OSError as e:
        try:
            _write_part(parts, fresh[written:])
        except OSError:
            pass
        raise QsimError(f"cannot write {out}: {e.strerror or e}; the points are kept in {parts} (--resume).") from None
    shutil.rmtree(parts, ignore_errors=True)
    infeasible = table.num_rows - sum(bool(v) for v in table.column("feasible").to_pylist())
    res = SweepResult(out, table.num_rows, n_new, table.num_rows - n_new, infeasible, True, table.column_names)
    if plot is not None:
        from .plots import pareto_report
        res.plots = pareto_report(table, plot)
    return res


def task_sizes(points: Sequence[int], workers: int, per_task: int | None = None,
               weights: Sequence[float] | None = None) -> list[list[int]]:
    """Points per task for each model's ``points`` still to run (tasks hold points of one model).

    ``per_task`` given: tasks of that many points.  None: guided sizes -- each task takes
    1/(2 x workers) of the work not yet handed out (all models together, in order; a model's
    point weighs ``weights[m]``, default 1), at least :data:`MIN_POINTS_PER_TASK` and 4 x
    workers points: big tasks first, so the scheduler sees few tasks, and ever smaller ones at
    the end, so the workers finish together.
    """
    w = list(weights) if weights is not None else [1.0] * len(points)
    least = max(MIN_POINTS_PER_TASK, 4 * workers)
    left = sum(n * wi for n, wi in zip(points, w))
    out = []
    for n, wi in zip(points, w):
        sizes: list[int] = []
        while n > 0:
            size = min(n, per_task or max(least, math.ceil(left / (2 * workers) / wi)))
            sizes.append(size)
            n -= size
            left -= size * wi
        out.append(sizes)
    return out


def _point_cfg(base: config.HwConfig, paths, fields, vals) -> config.HwConfig:
    """The machine of one point; a combination of values that is impossible names the fields."""
    try:
        return base.with_overrides(**dict(zip(fields, vals)))
    except QsimError as e:
        point = ", ".join(f"{p} = {v!r}" for p, v in zip(paths, vals))
        raise QsimError(f"grid point ({point}) is impossible: {e}") from None


def _write_part(parts: Path, tables: list) -> None:
    """Finished tasks' tables -> one part file, named by its keys (written whole, then renamed)."""
    import pyarrow.parquet as pq
    if not tables:
        return
    t = _concat(tables)
    name = hashlib.sha256("".join(t.column("key").to_pylist()).encode()).hexdigest()[:20]
    tmp = parts / f".{name}.tmp"
    pq.write_table(t, tmp)
    os.replace(tmp, parts / f"part-{name}.parquet")  # a killed run leaves whole parts only


def _read_tables(out: Path, parts: Path) -> list:
    """``out`` (when it exists) and every readable part file, as tables (the file first)."""
    import pyarrow.parquet as pq
    files = ([out] if out.is_file() else []) + (sorted(parts.glob("part-*.parquet")) if parts.is_dir() else [])
    tables = []
    for f in files:
        try:
            t = pq.read_table(f)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            if f == out:
                raise QsimError(f"cannot read {out} to resume: {e}") from None
            continue
        if "key" not in t.column_names:
            raise QsimError(f"{f} is not a qsim sweep file (no 'key' column).")
        tables.append(t)
    return tables


def _concat(tables: list):
    """Tables of the sweep's columns (some may lack some) -> one; a column typed int in one
    and float in another becomes float, one of nulls only takes the other's type."""
    import pyarrow as pa
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")


def _merge(tables: list, front: Sequence[str], sort_key):
    """The sweep's tables -> the file's table: one row per key (the first one seen), rows sorted
    by ``sort_key(key, model)``, the ``front`` columns, then the others ordered by the first row
    that holds a value in them (ties: the tables' column order); columns without a value are
    left out.  That is the table pyarrow builds from the sorted rows as dicts without their
    None values (``Table.from_pylist``), without building the dicts."""
    import pyarrow as pa
    t = _concat(tables)
    keys, models = t.column("key").to_pylist(), t.column("model").to_pylist()
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    rows = sorted(first.values(), key=lambda i: sort_key(keys[i], models[i]))
    t = t.take(pa.array(rows, type=pa.int64()))
    n = t.num_rows
    where = {}
    for pos, name in enumerate(t.column_names):
        if name in front:
            continue
        valid = np.flatnonzero(t.column(name).is_valid().to_numpy(zero_copy_only=False)) if n else []
        if len(valid):
            where[name] = (int(valid[0]), pos)
    names = list(front) + sorted(where, key=where.__getitem__)
    return pa.table({c: t.column(c) if c in t.column_names else pa.nulls(n) for c in names}).combine_chunks()
