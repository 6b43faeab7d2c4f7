"""qsim sweep (qsim.accel.sweep / grid / plots) and qsim profile --plot.

Every sweep row is checked against an independent run of the same machine through
``Model.profile`` (no sweep caches, no Dask); resume against one uninterrupted run.
The distributed tests share one LocalCluster(n_workers=2, processes=True) (conftest).
"""
from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import qsim
from qsim.accel import config, grid as gridmod, timing
from qsim.accel.profile import time_graph
from qsim.accel.sweep import sweep
from qsim.builder import ModelBuilder
from qsim.errors import QsimError

from conftest import REPO, shared_model

DEMO = REPO / "examples" / "models" / "demo_cnn_int8.tflite"
GRID = {"array": {"rows": [4, 8], "cols": {"start": 4, "stop": 12, "step": 4}, "dataflow": ["ws", "os"]},
        "sram": {"weight_kib": [1, 64]}, "accumulator": {"bits": [32, 14]}}  # 48 points, some infeasible


def _cli(argv, capsys):
    from qsim.cli import main
    rc = main(argv)
    return rc, capsys.readouterr()


def _write_grid(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------- grids

def test_grid_lists_ranges_and_scalars():
    g = gridmod.load_grid({"array": {"rows": {"start": 8, "stop": 32, "step": 8}, "dataflow": "os"},
                           "sram": {"ifmap_kib": {"start": 16, "stop": 256, "mul": 4}},
                           "dram": {"bytes_per_cycle": [4, 8.5]}})
    assert g.paths == ["array.rows", "array.dataflow", "sram.ifmap_kib", "dram.bytes_per_cycle"]
    assert [a.values for a in g.axes] == [(8, 16, 24, 32), ("os",), (16.0, 64.0, 256.0), (4.0, 8.5)]
    assert len(g) == 4 * 1 * 3 * 2 == len(list(g.points()))
    assert list(g.points())[:2] == [(8, "os", 16.0, 4.0), (8, "os", 16.0, 8.5)]  # last field fastest


@pytest.mark.parametrize("text, words", [
    ("[array]\nrowz = [8]\n", "unknown field 'array.rowz'"),
    ("[array]\nrows = []\n", "'array.rows' has an empty list"),
    ("[array]\nrows = ['big']\n", "'array.rows' takes int values"),
    ("[array]\nrows = [8.5]\n", "'array.rows' takes int values"),
    ("[array]\ndataflow = [3]\n", "'array.dataflow' takes str values"),
    ("[array]\nrows = [0, 8]\n", "'array.rows' = 0 is impossible"),
    ("[array]\ndataflow = ['ws', 'diagonal']\n", "'array.dataflow' = 'diagonal' is impossible"),
    ("[accumulator]\nbits = [32, 40]\n", "'accumulator.bits' = 40 is impossible"),
    ("[sram]\nifmap_kib = {start = 64, stop = 16, step = 8}\n", "'sram.ifmap_kib': the range"),
    ("[sram]\nifmap_kib = {start = 16, stop = 64}\n", "'sram.ifmap_kib': a range is"),
    ("[array]\nrows = [8, 8]\n", "'array.rows' lists 8 twice"),
    ("rows = [8]\n", "'rows' is not a preset field"),
    ("", "names no field"),
])
def test_bad_grid_exit_2_names_the_field(tmp_path, capsys, text, words):
    g = _write_grid(tmp_path / "g.toml", text)
    rc, cap = _cli(["sweep", str(DEMO), "--grid", g, "--workers", "0", "--out", str(tmp_path / "s.parquet")], capsys)
    assert rc == 2, cap.err
    assert words in cap.err and cap.err.startswith("qsim: error: ") and "Traceback" not in cap.err
    assert not (tmp_path / "s.parquet").exists()


def test_grid_field_of_every_preset_key():
    """Every key a preset may hold is a grid field (the grid schema is the preset schema)."""
    base = config.load_hw("edge16")
    for (section, key), field in config.TOML_KEYS.items():
        value = getattr(base, field)
        if value is None:
            continue
        g = gridmod.load_grid({section: {key: [value]}}, base)
        assert g.fields == (field,)


# ----------------------------------------------------------------------------- results

def _profile_totals(model, row, values):
    changes = {"rows": row["array.rows"], "cols": row["array.cols"], "dataflow": row["array.dataflow"],
               "weight_sram_kib": row["sram.weight_kib"], "acc_bits": row["accumulator.bits"]}
    return model.profile("edge16", inputs="random" if values else None, events=False, **changes).totals


@pytest.mark.parametrize("values", [None, "random"])
def test_sweep_rows_equal_sequential_profiles(tmp_path, dask_client, values):
    out = tmp_path / "s.parquet"
    res = sweep([DEMO], GRID, out=out, client=dask_client, points_per_task=7, values=values, progress=False)
    t = pq.read_table(out)
    rows = t.to_pylist()
    assert res.complete and res.rows == len(rows) == 48 and res.ran == 48
    assert t.column_names[:7] == ["model", "key", "array.rows", "array.cols", "array.dataflow", "sram.weight_kib",
                                  "accumulator.bits"]
    m = qsim.load(DEMO)
    want_order = list(gridmod.load_grid(GRID).points())
    assert [(r["array.rows"], r["array.cols"], r["array.dataflow"], r["sram.weight_kib"], r["accumulator.bits"])
            for r in rows] == want_order
    infeasible = 0
    for r in rows:
        try:
            want = _profile_totals(m, r, values)
        except QsimError as e:
            assert r["feasible"] is False and r["error"] == str(e)
            infeasible += 1
            continue
        assert r["feasible"] and r["error"] is None
        assert r["pe_count"] == r["array.rows"] * r["array.cols"]
        for k, v in want.items():
            assert r[k] == v, (k, r)
        assert ("acc_overflows" in r) == (values == "random")
    assert 0 < infeasible == res.infeasible < 48  # 1 KiB of weight SRAM does not hold a wide layer's tile
    assert any(r.get("acc_overflows") for r in rows if r["accumulator.bits"] == 14) == (values == "random")


def test_sweep_in_process_equals_distributed(tmp_path, dask_client):
    a = sweep([DEMO], GRID, out=tmp_path / "a.parquet", client=dask_client, points_per_task=5, values=None,
              progress=False)
    b = sweep([DEMO], GRID, out=tmp_path / "b.parquet", workers=0, values=None, progress=False)
    assert pq.read_table(a.out).equals(pq.read_table(b.out))


def test_resume_after_interrupted_sweep_equals_one_run(tmp_path, dask_client):
    kw = dict(client=dask_client, points_per_task=6, values="random", progress=False)
    full = sweep([DEMO], GRID, out=tmp_path / "full.parquet", **kw)
    out = tmp_path / "cut.parquet"
    cut = sweep([DEMO], GRID, out=out, max_tasks=3, **kw)  # stopped after 3 of 8 tasks, as a kill would
    assert not cut.complete and not out.exists() and 0 < cut.ran < 48
    kept = [pq.read_table(f) for f in (tmp_path / "cut.parquet.parts").glob("part-*.parquet")]
    assert 1 <= len(kept) <= 3 and sum(t.num_rows for t in kept) == cut.ran == 18  # finished tasks, written whole
    res = sweep([DEMO], GRID, out=out, resume=True, **{**kw, "points_per_task": 11})
    assert res.complete and res.reused == cut.ran and res.ran == 48 - cut.ran
    assert pq.read_table(out).equals(pq.read_table(full.out))
    assert not (tmp_path / "cut.parquet.parts").exists()
    again = sweep([DEMO], GRID, out=out, resume=True, **kw)  # nothing left to run
    assert again.ran == 0 and pq.read_table(out).equals(pq.read_table(full.out))


def test_sweep_with_data_accuracy_and_outputs_changed(tmp_path):
    m = qsim.load(DEMO)
    d = np.load(REPO / "examples" / "models" / "demo_testset.npz")
    x, y = d["x"][:24], d["y"][:24]
    np.savez(tmp_path / "d.npz", x=x, y=y)
    grid = {"array": {"rows": [8, 16]}, "accumulator": {"bits": [32, 13], "overflow": ["wrap", "saturate"]}}
    res = sweep([DEMO], grid, out=tmp_path / "s.parquet", data=tmp_path / "d.npz", workers=0, progress=False)
    rows = res.table().to_pylist()
    assert len(rows) == 8
    xq = m.dataset(tmp_path / "d.npz").load().x
    exact = m.run(xq).outputs
    (oname, ref), = exact.items()
    want_acc = float(np.mean(np.argmax(ref.reshape(len(xq), -1), axis=1) == y))
    for r in rows:
        assert r["samples"] == 24
        changed = 0
        for i in range(len(xq)):
            p = m.profile("edge16", inputs=xq[i:i + 1], rows=r["array.rows"], acc_bits=r["accumulator.bits"],
                          acc_overflow=r["accumulator.overflow"], events=False)
            out = p.result.values[m.tensor(oname).index]
            changed += int(np.count_nonzero(out.reshape(-1) != ref[i].reshape(-1)))
        assert r["outputs_changed_fraction"] == changed / ref.size
        if r["accumulator.bits"] == 32:
            assert r["outputs_changed_fraction"] == 0 and r["accuracy"] == want_acc
    assert any(r["outputs_changed_fraction"] > 0 for r in rows)  # a 13-bit accumulator changes outputs


# ----------------------------------------------------------------------------- timing-only on any model

def test_no_values_on_a_model_with_an_op_qsim_cannot_compute(tmp_path, capsys):
    b = ModelBuilder(description="rnn")  # RNN: no kernel in qsim (timed on the vector unit)
    x = b.add_input("x", (1, 4), np.int8, scale=0.05, zero_point=0)
    w = b.add_const("w", np.ones((3, 4), np.int8), scale=0.02, zero_point=0)
    y = b.add_tensor("y", (1, 3), np.int8, scale=0.05, zero_point=0)
    b.add_op("RNN", [x, w], [y])
    b.mark_output(y)
    rnn = str(tmp_path / "rnn.tflite")
    Path(rnn).write_bytes(b.build())
    rc, cap = _cli(["profile", rnn], capsys)
    assert rc == 2 and "RNN" in cap.err and "--no-values" not in cap.out
    rc, cap = _cli(["profile", rnn, "--no-values", "--json"], capsys)
    assert rc == 0, cap.err
    g = _write_grid(tmp_path / "g.toml", "[array]\nrows = [8, 16]\n")
    rc, cap = _cli(["sweep", rnn, "--grid", g, "--no-values", "--workers", "0", "--out", str(tmp_path / "s.parquet")],
                   capsys)
    assert rc == 0, cap.err
    rows = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert [r["array.rows"] for r in rows] == [8, 16] and all(r["feasible"] and r["cycles"] > 0 for r in rows)
    rc, cap = _cli(["sweep", rnn, "--grid", g, "--workers", "0", "--out", str(tmp_path / "v.parquet")], capsys)
    assert rc == 2 and "RNN" in cap.err


def test_schedule_reads_only_schedule_fields():
    """time_layer depends on timing.SCHEDULE_FIELDS (+ the resolved requant depth) only: the
    sweep's schedule cache keys on exactly that."""
    read = set()

    class Spy:
        def __init__(self, cfg):
            object.__setattr__(self, "_cfg", cfg)

        def __getattr__(self, name):
            if name == "sram_bytes":  # reads the field named by its argument
                return lambda which: read.add(f"{which}_sram_kib") or self._cfg.sram_bytes(which)
            read.add(name)
            return getattr(self._cfg, name)

    from qsim.accel import mapping
    m = qsim.load(DEMO)
    cfg = config.load_hw("tiny8")
    time_graph(m.graph, Spy(cfg), events=True)
    allowed = set(timing.SCHEDULE_FIELDS) | {"resolved_requant_depth", "macs_per_cycle"}
    # time_graph also prices each layer (energy.layer_energy) from the machine it is given, on
    # every call -- after the cache lookup, so the energy fields need no place in the cache key
    energy_fields = {"energy_mac_pj", "energy_sram_byte_pj", "energy_dram_byte_pj", "energy_requant_pj"}
    assert energy_fields <= read
    read -= energy_fields
    assert read and read <= allowed, read - allowed
    vector = [lm for lm in mapping.map_graph(m.graph) if lm.unit == "vector"]
    assert vector
    read.clear()
    for lm in vector:
        timing.time_layer(lm, Spy(cfg), events=True)
    assert read and read <= set(timing.VECTOR_SCHEDULE_FIELDS), read
    # the tiles cache keys on tiling_key, the energy cache on the schedule key + ENERGY_FIELDS
    from qsim.accel import energy
    array = [lm for lm in mapping.map_graph(m.graph) if lm.unit == "array"]
    for layers, tiling, sched in ((array, timing.ARRAY_TILING_FIELDS, timing.SCHEDULE_FIELDS),
                                  (vector, timing.VECTOR_TILING_FIELDS, timing.VECTOR_SCHEDULE_FIELDS)):
        read.clear()
        for lm in layers:
            timing.layer_tiles(lm, Spy(cfg))
        assert read and read <= set(tiling), read
        read.clear()
        for lm in layers:
            energy.layer_energy(lm, timing.time_layer(lm, cfg), Spy(cfg))
        assert read and read <= set(sched) | set(energy.ENERGY_FIELDS), read


# ----------------------------------------------------------------------------- plots

def test_plots_pareto_html_self_contained_and_roofline(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    g = _write_grid(tmp_path / "g.toml", "[array]\nrows = [4, 8, 16]\ncols = [4, 8]\n[sram]\noutput_kib = [16, 64]\n")
    rc, cap = _cli(["sweep", str(DEMO), "--grid", g, "--no-values", "--workers", "0", "--out",
                    str(tmp_path / "s.parquet"), "--plot", str(tmp_path / "plots")], capsys)
    assert rc == 0, cap.err
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["pareto_dram_bytes.png", "pareto_pe_count.png", "pareto_sram_kib.png"] or \
        (len(pngs) == 3 and any(p.startswith("pareto_energy") for p in pngs))
    for p in pngs:
        assert (tmp_path / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "plots" / "sweep.html").read_text()
    imgs = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(imgs) == 3 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert base64.b64decode(imgs[0].split(",", 1)[1])[:4] == b"\x89PNG"
    assert not re.search(r'(src|href)="(?!data:)', page) and "<script" not in page  # nothing fetched
    roof = tmp_path / "roof.png"
    rc, cap = _cli(["profile", str(DEMO), "--no-values", "--plot", str(roof)], capsys)
    assert rc == 0, cap.err
    assert roof.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pareto_front_by_hand():
    from qsim.accel.plots import pareto_front
    pts = [(64, 5.0, 0), (64, 4.0, 1), (128, 4.5, 2), (128, 3.0, 3), (256, 3.0, 4), (256, 1.0, 5)]
    assert [p[2] for p in pareto_front(pts)] == [1, 3, 5]


def test_fast_forwarded_schedule_equals_tile_by_tile():
    """time_layer without events skips repeated tiles/blocks once the max-plus schedule is in a
    steady state; with events it walks every tile.  Both must give the same figures."""
    import dataclasses
    import random

    from qsim import zoo
    from qsim.accel import mapping
    rng = random.Random(5)
    graphs = [qsim.load(DEMO).graph, qsim.load(zoo.mobilenet_v2_like(input_hw=64, alpha=0.35)).graph]
    names = [f.name for f in dataclasses.fields(timing.LayerTiming) if f.name != "events"]
    base, compared, skipped = config.load_hw("edge16"), 0, 0
    for _ in range(12):
        cfg = base.with_overrides(rows=rng.choice([1, 4, 8, 32]), cols=rng.choice([1, 3, 8, 32]),
                                  dataflow=rng.choice(["ws", "os"]), ifmap_sram_kib=rng.choice([2, 8, 64]),
                                  weight_sram_kib=rng.choice([2, 8, 64]), output_sram_kib=rng.choice([2, 8, 64]),
                                  dram_bytes_per_cycle=rng.choice([0.5, 4, 64]), dram_latency_cycles=rng.choice([0, 50]),
                                  requant_lanes=rng.choice([1, 16]), vector_lanes=rng.choice([1, 16]))
        for g in graphs:
            for lm in mapping.map_graph(g):
                try:
                    slow = timing.time_layer(lm, cfg, events=True)
                except QsimError:
                    skipped += 1
                    continue
                fast = timing.time_layer(lm, cfg, events=False)
                assert [getattr(fast, f) for f in names] == [getattr(slow, f) for f in names], (lm, cfg)
                compared += 1
    assert compared > 300 and skipped > 0


def test_sweep_without_resume_replaces_an_old_file(tmp_path):
    out = tmp_path / "s.parquet"
    sweep([DEMO], {"array": {"rows": [4, 8, 16]}}, out=out, workers=0, values=None, progress=False)
    sweep([DEMO], {"array": {"cols": [4, 8]}}, out=out, workers=0, values=None, progress=False)
    t = pq.read_table(out)
    assert t.num_rows == 2 and "array.rows" not in t.column_names and t.column("array.cols").to_pylist() == [4, 8]


@pytest.mark.parametrize("tensor, shape, words", [
    (1, (16,), "must be 4-D NHWC"),  # a 1-D filter (a fuzz mutant of kws loaded with one)
    (3, (1, 8, 8, 0), "an empty operand"),
    (1, (16, 3, 3, 5), "does not match the input's 3 channels"),
])
def test_timing_only_refuses_unmappable_gemm_shapes_cleanly(tensor, shape, words):
    """Timing alone maps ops whose kernel never prepares: a GEMM op whose shapes are not a GEMM
    is a QsimError naming the op, never an IndexError / ZeroDivisionError."""
    import dataclasses

    from qsim.accel import mapping
    from qsim.errors import UnsupportedModelError
    from test_accel import conv_graph
    g = conv_graph()
    g.tensors[tensor] = dataclasses.replace(g.tensors[tensor], shape=shape)
    with pytest.raises(UnsupportedModelError, match=words) as e:
        mapping.map_graph(g)
    assert "op #0 CONV_2D" in str(e.value)


def test_time_graph_cache_across_machines_equals_no_cache():
    """A sweep keeps layer schedules, SRAM tiles and energies across machines (time_graph's
    cache, keyed by the fields each reads): every layer's figures and the totals must equal
    a run without any cache, on machines that share tiles (same array and SRAM, other DRAM,
    requant, setup or energy figures) and machines that do not."""
    import dataclasses
    import itertools

    from qsim import zoo
    from qsim.accel.profile import map_layers, timing_totals
    graphs = [qsim.load(DEMO).graph, qsim.load(zoo.mobilenet_v2_like(input_hw=64, alpha=0.35)).graph]
    names = [f.name for f in dataclasses.fields(timing.LayerTiming) if f.name != "events"]
    base = config.load_hw("edge16")
    machines = [base.with_overrides(rows=r, cols=8, dram_bytes_per_cycle=bw, dram_latency_cycles=lat,
                                    requant_lanes=lanes, energy_dram_byte_pj=e, layer_setup_cycles=setup)
                for r, bw, lat, lanes, e, setup in itertools.product([8, 16], [1, 16], [0, 100], [1, 16],
                                                                      [100.0, 162.5], [0, 64])]
    for g in graphs:
        maps, cache = map_layers(g), {}
        for _ in range(2):  # the second pass is all cache hits
            for cfg in machines:
                fast = time_graph(g, cfg, events=False, maps=maps, cache=cache)
                slow = time_graph(g, cfg, events=True)
                for a, b in zip(fast, slow):
                    assert [getattr(a.timing, f) for f in names] == [getattr(b.timing, f) for f in names]
                    assert a.energy == b.energy and a.start_cycle == b.start_cycle
                assert timing_totals(fast, cfg) == timing_totals(slow, cfg)
        assert any(k[1][0] == "tiles" for k in cache if isinstance(k[1], tuple) and k[1])


def test_task_sizes_guided_and_fixed():
    from qsim.accel.sweep import MIN_POINTS_PER_TASK, task_sizes
    sizes = task_sizes([5000, 5000], 2, None, [66, 13])
    assert [sum(s) for s in sizes] == [5000, 5000]
    flat = [n for s in sizes for n in s]
    assert flat[0] == 1497  # a quarter of all the work (2 x 2 workers): 395,000 / 4 / 66 = 1496.2
    assert all(n >= MIN_POINTS_PER_TASK for s in sizes for n in s[:-1])
    assert all(a >= b for s in sizes for a, b in zip(s, s[1:]))  # ever smaller within a model
    assert len(flat) < 40  # few tasks for the scheduler
    assert task_sizes([7, 0, 3], 4, 5) == [[5, 2], [], [3]]
    assert min(n for s in task_sizes([5000, 5000], 64, None, [66, 13]) for n in s[:-1]) == 256  # 4 per worker


def test_point_key_is_the_hash_of_its_json_document():
    """Keys are stored in files and matched on --resume: they must stay the documented hash."""
    import hashlib
    import json

    from qsim.accel.sweep import point_key
    base = config.load_hw("edge16")
    paths, vals = ["sram.weight_kib", "array.rows", "array.dataflow"], (64.0, 8, "os")
    doc = ["ab" * 32, base.as_dict(), [["array.dataflow", "os"], ["array.rows", 8], ["sram.weight_kib", 64.0]],
           "timing"]
    want = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:24]
    assert point_key("ab" * 32, base, paths, vals, "timing") == want
