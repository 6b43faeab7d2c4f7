"""Benchmark (not a test): `qsim eval` samples/s in one process and on a local Dask cluster of 1 and 2 workers.

Data: a synthetic image folder of ``--images`` JPEGs (default 2,000; smooth seeded random RGB images,
256x256 for the zoo model, 128x128 for vww_96, 10 (zoo) or 2 (vww) class sub-folders; decoded, center-cropped and
resized by the workers like any `qsim eval` dataset).  Models: ``qsim.zoo.mobilenet_v2_like()``
(224x224x3, ~300 M MACs, the MobileNetV2-sized model) and ``../shared/models/vww_96_int8.tflite``.

For each model: ``Model.eval(folder, batch_size=64)`` in this process, then on a ``LocalCluster`` of
1 and of 2 worker processes (one thread each; cluster start-up excluded, reported apart; model load
and prepare on each worker included, as a user of a fresh cluster pays it).  Each distributed result
is checked equal to the one-process one (accuracy and output statistics).  Then the costs behind a
projection: the scheduler's round trip per task (empty tasks through ``qsim.cluster.run_tasks``), the
cost once per worker (loading and preparing the model, opening the dataset: workers keep both for the
run), the client's merge per shard, and the time per sample; from those the projected speed-up on 16 and 64 workers for 2,000 and 50,000 images.

    python benchmarks/eval_scaling.py                   # 2,000 images, both models (long: see --images)
    python benchmarks/eval_scaling.py --images 200      # a quick run
    python benchmarks/eval_scaling.py --models vww --repeat 3   # vww_96 only, 3 interleaved rounds, medians

The goal (issue 16): 2 workers >= 1.8x one process on a 2-core machine that is otherwise idle; a
loaded machine (other jobs on the cores) cannot show it, so the load average is printed with the figures.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import qsim  # noqa: E402
from qsim.cluster import dask_client, run_tasks  # noqa: E402
from qsim.shards import SHARDS_PER_WORKER, shard_ranges  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BATCH = 64


def make_folder(root: Path, n: int, size: int, classes: int = 10, seed: int = 0) -> Path:
    """``n`` seeded smooth random RGB JPEGs of ``size`` x ``size`` in ``classes`` sub-folders class0, ..."""
    from PIL import Image
    if root.is_dir() and sum(1 for _ in root.rglob("*.jpg")) == n:
        return root
    shutil.rmtree(root, ignore_errors=True)  # another --images count: start over
    rng = np.random.default_rng(seed)
    for k in range(n):
        d = root / f"class{k % classes}"
        d.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8))
        small.resize((size, size), Image.BILINEAR).save(d / f"{k:05d}.jpg", quality=90)
    return root


def _noop(i: int) -> int:
    return i


def scheduler_overhead(client, n: int = 50) -> float:
    """Seconds per empty task through run_tasks (submit, schedule, run, result back), ``n`` tasks."""
    list(run_tasks(client, _noop, [(i,) for i in range(20)], progress=False))  # warm
    t0 = time.perf_counter()
    list(run_tasks(client, _noop, [(i,) for i in range(n)], progress=False))
    return (time.perf_counter() - t0) / n


def shard_fixed_cost(m, folder: Path, labels: Path) -> tuple[float, float]:
    """(seconds to open the dataset on a worker, seconds to merge one shard's partial on the client)."""
    from qsim.evaluate import EvalPartial, eval_range
    t0 = time.perf_counter()
    ds = m.dataset(folder, labels=labels)
    t_open = time.perf_counter() - t0
    part = eval_range(m.prepared("tflm"), ds, BATCH, 0, min(BATCH, len(ds)))
    total = EvalPartial.empty(m.graph)
    t0 = time.perf_counter()
    for _ in range(20):
        total.absorb(part)
    return t_open, (time.perf_counter() - t0) / 20


def same(a, b) -> bool:
    strip = lambda d: {k: v for k, v in d.items() if k not in ("seconds", "run_seconds", "samples_per_s")}  # noqa: E731
    return strip(a.to_dict()) == strip(b.to_dict())


def projection(n: int, workers: int, t_sample: float, t_prepare: float, t_task: float) -> tuple[float, int]:
    """Projected wall seconds of a W-worker run of n images, and its shard count: every worker loads
    and prepares the model and lists the dataset once (``t_prepare``), shards (SHARDS_PER_WORKER per worker, whole batches) run in
    ceil(shards / W) rounds of (shard samples x seconds per sample + fixed cost per task), and the
    scheduler and client handle the shards one after another (t_task each, overlapped with the work
    except for the last round)."""
    ranges = shard_ranges(n, BATCH, workers)
    per = max(b - a for a, b in ranges)
    rounds = math.ceil(len(ranges) / workers)
    return t_prepare + rounds * (per * t_sample + t_task) + t_task * min(len(ranges), workers), len(ranges)


def run_model(name: str, path: str, folder: Path, labels: Path, clusters: dict, results: list, repeat: int) -> None:
    m = qsim.load(path)
    print(f"\n== {name}: {m.inputs[0].shape} input, {len(list(folder.rglob('*.jpg')))} images, batch {BATCH}",
          flush=True)
    t0 = time.perf_counter()
    qsim.load(path).prepared("tflm")
    t_prepare = time.perf_counter() - t0
    times: dict = {"one process": []}
    times.update({w: [] for w in clusters})
    local = None
    for r in range(repeat):  # contenders interleaved: the machine's load drifts
        t0 = time.perf_counter()
        res = qsim.load(path).eval(folder, labels=labels, batch_size=BATCH)  # a fresh model: prepare included
        times["one process"].append(time.perf_counter() - t0)
        local = local or res
        for w, client in clusters.items():
            t0 = time.perf_counter()
            dist = m.eval(folder, labels=labels, batch_size=BATCH, client=client)
            times[w].append(time.perf_counter() - t0)
            if not same(local, dist):
                print(f"  MISMATCH: {w} worker(s) differ from the one-process result", file=sys.stderr)
        print(f"  round {r + 1}: " + ", ".join(f"{k if isinstance(k, str) else f'{k} worker(s)'} {v[-1]:.2f} s"
                                          for k, v in times.items()), flush=True)
    n = local.samples
    t_local = statistics.median(times["one process"])
    print(f"one process      : {t_local:8.2f} s  {n / t_local:8.2f} samples/s  (median of {repeat})", flush=True)
    row = {"model": name, "images": n, "one_process_s": t_local, "prepare_s": t_prepare}
    for w in clusters:
        t = statistics.median(times[w])
        print(f"Dask {w} worker(s) : {t:8.2f} s  {n / t:8.2f} samples/s  speed-up {t_local / t:5.2f}x  "
              f"({len(shard_ranges(n, BATCH, w))} shards; identical to one process: checked)", flush=True)
        row[f"workers_{w}_s"] = t
    t_open, t_merge = shard_fixed_cost(m, folder, labels)
    row.update(t_open=t_open, t_merge=t_merge, t_sample=t_local / n)
    results.append(row)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000, help="images in the synthetic folder (default 2000)")
    ap.add_argument("--models", default="zoo,vww", help="comma-separated: zoo (MobileNetV2-sized), vww (vww_96)")
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "models"), help="the real models' folder")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the three contenders, interleaved; medians "
                    "(default 1)")
    ap.add_argument("--dir", help="where to write the images and the zoo model (default: a temporary folder)")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} (before)")
    tmp = tempfile.TemporaryDirectory() if args.dir is None else None
    root = Path(args.dir or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    models = [s.strip() for s in args.models.split(",") if s.strip()]
    results: list[dict] = []
    t0 = time.perf_counter()
    c1 = dask_client(workers=1)
    c2 = dask_client(workers=2)
    clusters = {1: c1.__enter__(), 2: c2.__enter__()}
    print(f"clusters of 1 and 2 workers started in {time.perf_counter() - t0:.1f} s (not in the figures below)")
    try:
        overhead = {w: scheduler_overhead(c) for w, c in clusters.items()}
        print("scheduler round trip per empty task: " + ", ".join(f"{1e3 * v:.2f} ms ({w} worker(s))"
                                                                  for w, v in overhead.items()))
        if "zoo" in models:
            from qsim.zoo import mobilenet_v2_like
            zoo = root / "mobilenet_v2_like.tflite"
            if not zoo.is_file():
                zoo.write_bytes(mobilenet_v2_like())
            folder = make_folder(root / "images256", args.images, 256)
            labels = root / "labels1000.txt"
            labels.write_text("".join(f"class{k}\n" for k in range(1000)))
            run_model("mobilenet_v2_like (zoo)", str(zoo), folder, labels, clusters, results, args.repeat)
        if "vww" in models:
            vww = Path(args.shared) / "vww_96_int8.tflite"
            if not vww.is_file():
                print(f"\n{vww} is absent: vww_96 skipped")
            else:
                folder = make_folder(root / "images128", args.images, 128, classes=2)
                labels = root / "labels2.txt"
                labels.write_text("".join(f"class{k}\n" for k in range(2)))
                run_model("vww_96_int8", str(vww), folder, labels, clusters, results, args.repeat)
    finally:
        for c in (c2, c1):
            c.__exit__(None, None, None)
    t_task = overhead[2]
    print("\nprojection (same per-sample cost per worker, one thread each; T(W) = prepare + rounds x "
          "(shard samples x s/sample + per-task cost) + scheduler/client cost of the last round):")
    for r in results:
        fixed = t_task + r["t_merge"]
        once = r["prepare_s"] + r["t_open"]
        print(f"  {r['model']}: {1e3 * r['t_sample']:.1f} ms/sample in one process; once per worker: model "
              f"load+prepare {r['prepare_s']:.2f} s + dataset open {1e3 * r['t_open']:.1f} ms; per task "
              f"{1e3 * fixed:.1f} ms (scheduler {1e3 * t_task:.2f} + client merge {1e3 * r['t_merge']:.2f})")
        for n in (r["images"], 50_000):
            seq = n * r["t_sample"]
            parts = []
            for w in (16, 64):
                t, shards = projection(n, w, r["t_sample"], once, fixed)
                parts.append(f"{w} workers {t:8.1f} s ({seq / t:5.1f}x, {shards} shards)")
            print(f"    {n:6d} images: one process {seq:8.1f} s; " + "; ".join(parts))
    load1 = os.getloadavg()
    print(f"\nload average {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} (after); "
          f"total {time.perf_counter() - t0:.0f} s")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
