"""Benchmark (not a test): `qsim sweep` points per second, one process vs a local Dask cluster.

1. Timing-only sweep (``values=None``) of ``--points`` points (default 10,000: half on the
   MobileNetV2-sized zoo model ``qsim.zoo.mobilenet_v2_like()`` (224x224, 300 M MACs), half on
   ``../shared/models/kws_ref_model.tflite``) over a grid of array rows/cols, dataflow, weight and
   ifmap SRAM and DRAM bandwidth on edge16:
   * in one process (``workers=0``: the same tasks, run one after the other, no Dask);
   * on a LocalCluster of ``--workers`` (default 2) processes, timed from the first submit to
     the Parquet file written (cluster start-up printed separately).
   Both write the Parquet file; the two files are checked equal.
   Both write the Parquet file; the two files are checked equal.  CPU seconds are reported per
   process: each worker, the client (this process: the sweep's parent work, the client and the
   local scheduler's threads; its main thread separately) -- on a loaded machine wall times
   say more about the load than about qsim, CPU seconds less so.
2. The scaling estimate for 16 and 64 workers from measured costs: per-point worker CPU (the
   cluster run's worker CPU / points), the parent's serial work (the same sweep resumed on its
   complete file: keys, reading, merging, writing), the client's CPU per task (the rest of its
   main thread's CPU in the cluster run / tasks: submitting, collecting), per-worker start-up (model load + mapping), and the
   scheduler's per-task cost (a burst of no-op tasks on the same cluster); tasks as the sweep
   cuts them for that many workers (guided sizes, ``qsim.accel.sweep.task_sizes``).
3. A sweep with values on kws (``--data``: ``--samples`` seeded random inputs, labels = qsim's
   own top-1 so the exact machine scores 100%) over rows x cols x accumulator bits x overflow:
   points/s on the cluster, and the number of distinct datapath configurations (each runs every
   sample once per worker; points that differ only in timing fields reuse it).

    python benchmarks/sweep_speed.py [--points 10000] [--workers 2] [--per-task N] [--samples 64]
                                     [--skip-values] [--json]

The speed-up goal (issue 11) is >= 1.7x on 2 cores; on a machine shared with other jobs the
cores are not both free and the ratio says more about the load than about qsim.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import qsim  # noqa: E402
from qsim import zoo  # noqa: E402
from qsim.accel import config  # noqa: E402
from qsim.accel.profile import map_layers  # noqa: E402
from qsim.accel.sweep import sweep, task_sizes  # noqa: E402
from qsim.cluster import dask_client  # noqa: E402

KWS = REPO.parent / "shared" / "models" / "kws_ref_model.tflite"
AXES = [("array", "rows", [4, 8, 16, 32, 64]), ("array", "cols", [4, 8, 16, 32, 64]),
        ("array", "dataflow", ["ws", "os"]), ("sram", "weight_kib", [32, 64, 128, 256, 512]),
        ("sram", "ifmap_kib", [32, 64, 128, 256])]


def timing_grid(target: int) -> dict:
    """A grid of about ``target`` points (>= target): the AXES' leading values, then a DRAM
    bandwidth range long enough to reach the target."""
    grid: dict = {}
    n = 1
    for section, key, values in AXES:
        take = min(len(values), max(1, math.ceil(target / n)))
        grid.setdefault(section, {})[key] = values[:take]
        n *= take
    grid["dram"] = {"bytes_per_cycle": {"start": 1, "stop": max(1, math.ceil(target / n)), "step": 1}}
    return grid


def scheduler_cost(client, n: int = 400) -> float:
    """Seconds per task the scheduler adds: a burst of ``n`` no-op tasks, wall / n."""
    from distributed import wait
    client.submit(int, 0, pure=False).result()
    t = time.perf_counter()
    wait([client.submit(int, i, pure=False) for i in range(n)])
    return (time.perf_counter() - t) / n


def estimate(points: int, per_point: float, startup: float, parent: float, per_task: float, workers: int,
             weight: float = 1.0) -> dict:
    """points/s on ``workers`` workers: the parent's serial work, the start-up once per worker,
    then the larger of the workers' share of the points (plus the last, smallest task: the
    imbalance guided sizes leave) and the per-task cost of the scheduler and client (which
    overlaps the workers until it is the bottleneck)."""
    sizes = task_sizes([points], workers, None, [weight])[0]
    compute = points * per_point / workers + min(sizes) * per_point
    wall = parent + startup + max(compute, len(sizes) * per_task)
    return {"workers": workers, "tasks": len(sizes), "largest_task": max(sizes), "seconds": wall,
            "points_per_s": points / wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=10_000, help="timing-only points, both models together")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--per-task", type=int, default=None, help="points per task (default: guided sizes)")
    ap.add_argument("--samples", type=int, default=64, help="kws samples for the sweep with values")
    ap.add_argument("--skip-values", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not KWS.is_file():
        print(f"needs {KWS} (../shared/models)", file=sys.stderr)
        return 2
    out: dict = {"load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
    tmp = Path(tempfile.mkdtemp(prefix="qsim_sweep_bench_"))
    mnv2 = tmp / "mobilenet_v2_like.tflite"
    mnv2.write_bytes(zoo.mobilenet_v2_like())
    models = [str(mnv2), str(KWS)]
    grid = timing_grid(math.ceil(a.points / len(models)))
    gpath = tmp / "grid.json"
    gpath.write_text(json.dumps(grid))
    per_model = math.prod(len(v) if isinstance(v, list) else v["stop"] for s in grid.values() for v in s.values())
    n_points = len(models) * per_model
    out["grid"], out["points"] = grid, n_points

    # per-worker start-up: load + map each model once; a point's weight in task_sizes: the model's op count
    t = time.perf_counter()
    weights = []
    for m in models:
        g = qsim.load(m).graph
        map_layers(g)
        weights.append(len(g.operators))
    startup = time.perf_counter() - t

    def n_tasks(workers: int) -> int:
        return sum(len(s) for s in task_sizes([per_model] * len(models), workers, a.per_task, weights))

    t, c = time.perf_counter(), time.process_time()
    one = sweep(models, grid, out=tmp / "one.parquet", values=None, workers=0, points_per_task=a.per_task,
                progress=False)
    t_one, cpu_one = time.perf_counter() - t, time.process_time() - c
    out["one_process"] = {"seconds": t_one, "cpu_seconds": cpu_one, "points_per_s": n_points / t_one,
                          "infeasible": one.infeasible, "tasks": n_tasks(1)}
    print(f"load average {out['load_average']:.1f} on {out['cpus']} cores; {n_points} points "
          f"({one.infeasible} infeasible); tasks: {n_tasks(1)} in one process, {n_tasks(a.workers)} on "
          f"{a.workers} workers ({'guided sizes' if a.per_task is None else f'{a.per_task} points each'})")
    print(f"one process:      {t_one:8.2f} s  {n_points / t_one:8.1f} points/s "
          f"({1e3 * t_one / n_points:.2f} ms/point wall, {1e3 * cpu_one / n_points:.2f} ms/point CPU)")

    t = time.perf_counter()
    with dask_client(workers=a.workers) as client:
        import importlib
        client.run(importlib.import_module, "qsim.accel.sweep")  # each worker imports qsim once
        t_start = time.perf_counter() - t
        cpu0 = client.run(time.process_time)
        t, c, th = time.perf_counter(), time.process_time(), time.thread_time()
        dist = sweep(models, grid, out=tmp / "dist.parquet", values=None, client=client, points_per_task=a.per_task,
                     progress=False)
        t_dist, cpu_client, cpu_main = time.perf_counter() - t, time.process_time() - c, time.thread_time() - th
        cpu = [v - cpu0[w] for w, v in client.run(time.process_time).items()]
        import pyarrow.parquet as pq
        same = pq.read_table(one.out).equals(pq.read_table(dist.out))
        c = time.process_time()  # the parent's serial work alone: the same sweep resumed on its complete file
        again = sweep(models, grid, out=tmp / "dist.parquet", values=None, client=client, resume=True, progress=False)
        parent = time.process_time() - c
        assert again.ran == 0
        sched = scheduler_cost(client)
        tasks = n_tasks(a.workers)
        client_task = max(0.0, cpu_main - parent) / tasks  # submit + collect; not the event loops' idle ticks
        out["dask"] = {"workers": a.workers, "cluster_start_s": t_start, "seconds": t_dist, "worker_cpu_s": cpu,
                       "client_scheduler_cpu_s": cpu_client, "client_main_thread_cpu_s": cpu_main,
                       "parent_serial_cpu_s": parent, "tasks": tasks, "points_per_s": n_points / t_dist,
                       "speedup": t_one / t_dist, "same_rows": same, "scheduler_s_per_task": sched}
        print(f"dask {a.workers} workers:   {t_dist:8.2f} s  {n_points / t_dist:8.1f} points/s  speed-up "
              f"{t_one / t_dist:.2f}x  (cluster start-up + qsim import {t_start:.1f} s, not counted; rows identical: {same})")
        print(f"CPU: workers {' + '.join(f'{v:.2f}' for v in cpu)} s = {sum(cpu):.2f} s; client + scheduler "
              f"{cpu_client:.2f} s (main thread {cpu_main:.2f} s, of which the parent's serial work {parent:.2f} s); "
              f"one process {cpu_one:.2f} s")
        share = (sum(cpu) + cpu_client) / a.workers
        print(f"on {a.workers} free cores the wall time would be ~{max(max(cpu), share):.2f} s (the busiest worker, "
              f"or all CPU shared by {a.workers} cores), speed-up ~{cpu_one / max(max(cpu), share, 1e-9):.2f}x")
        per_point = sum(cpu) / n_points  # worker CPU, not wall: what a point costs on a core of its own
        per_task = sched + client_task
        print(f"measured: {1e3 * per_point:.2f} ms/point in a worker, worker start-up (load + map both models) "
              f"{startup:.2f} s, parent {parent:.2f} s, scheduler {1e3 * sched:.2f} + client {1e3 * client_task:.2f} "
              f"ms/task")
        out["estimate"] = []
        for n in (n_points, 10 * n_points):
            for w in (a.workers, 16, 64):
                e = estimate(n, per_point, startup, parent * n / n_points, per_task, w, sum(weights) / len(weights))
                out["estimate"].append({"points": n, **e})
                print(f"estimate {n:7d} points, {w:3d} workers: {e['points_per_s']:9.1f} points/s ({e['tasks']} "
                      f"tasks, the largest {e['largest_task']} points, {e['seconds']:.2f} s)")

        if not a.skip_values:
            m = qsim.load(KWS)
            x = np.concatenate([s[0] for s in m.random_inputs(a.samples, seed=1)])
            y = np.argmax(m.run(x).outputs[m.outputs[0].key].reshape(len(x), -1), axis=1)
            np.savez(tmp / "kws_data.npz", x=x, y=y)
            vgrid = {"array": {"rows": [8, 16, 32], "cols": [8, 16, 32]},
                     "accumulator": {"bits": [32, 24, 20, 16], "overflow": ["wrap", "saturate"]}}
            t = time.perf_counter()
            vres = sweep([str(KWS)], vgrid, out=tmp / "values.parquet", data=tmp / "kws_data.npz", client=client,
                         points_per_task=6, progress=False)
            t_val = time.perf_counter() - t
            rows = vres.table().to_pylist()
            acc = {(r["accumulator.bits"], r["accumulator.overflow"]): (r["accuracy"], r["outputs_changed_fraction"]) for r in rows}
            out["values"] = {"points": vres.rows, "samples": a.samples, "datapath_configs": len(acc), "seconds": t_val,
                             "points_per_s": vres.rows / t_val, "accuracy_outputs_changed": {str(k): v for k, v in acc.items()}}
            print(f"values on kws ({a.samples} samples, {len(acc)} datapath configs): {vres.rows} points in "
                  f"{t_val:.2f} s = {vres.rows / t_val:.1f} points/s")
            for k, (ac, ch) in sorted(acc.items(), reverse=True):
                print(f"    acc {k[0]} bits {k[1]:<8}: top-1 vs exact {100 * ac:.1f}%, outputs changed {100 * ch:.2f}%")
    out["load_average_after"] = os.getloadavg()[0]
    shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
