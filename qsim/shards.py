"""Datasets cut into shards for ``qsim eval`` / ``qsim compare`` on a Dask cluster (:mod:`qsim.cluster`).

A shard is a range of samples made of whole batches, the batches starting where a one-process run
starts them (multiples of the batch size), so every per-batch statistic is computed on the same
samples either way; the partial results are merged exactly (:mod:`qsim.exactsum`) in shard order.
A task receives small picklable values only: a model reference (its file path, or its bytes scattered
once to the workers, with their SHA-256 as the cache key), the dataset's ``origin`` (the path and
the arguments it was opened with, :func:`qsim.data.origin`) and its sample range; it opens the
dataset itself (a shared filesystem or a URL fsspec can open) and reads only its shard.
"""
from __future__ import annotations

import hashlib
import math
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

from .cluster import run_tasks, share, worker_cache
from .errors import QsimError

__all__ = ["SHARDS_PER_WORKER", "shard_ranges", "worker_threads", "model_ref", "worker_blob", "worker_model",
           "dataset_origin", "for_run", "worker_dataset", "gather", "thread_key"]

SHARDS_PER_WORKER = 4  # shards per worker thread: load balance and a small loss when a worker dies


def shard_ranges(n: int, batch_size: int, workers: int, per_worker: int = SHARDS_PER_WORKER) -> list[tuple[int, int]]:
    """[start, stop) sample ranges covering 0 .. n, each made of whole batches of ``batch_size``
    (the last one possibly short), about ``per_worker`` shards per worker thread (never more
    shards than batches)."""
    batches = math.ceil(n / batch_size)
    shards = max(1, min(batches, max(1, workers) * per_worker))
    per = math.ceil(batches / shards) * batch_size  # samples per shard
    return [(a, min(n, a + per)) for a in range(0, n, per)]


def worker_threads(client) -> int:
    """Worker threads the scheduler knows now (at least 1)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # pragma: no cover - a scheduler that does not answer: shard for one worker
        return 1


def _digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def model_ref(client, blob: bytes, path: str | None = None) -> tuple:
    """What tasks receive for a model: ``(sha256, absolute path, None)`` when it came from a file (each
    worker reads it and checks the digest), else ``(sha256, None, future)`` with the bytes scattered
    once to every worker (Dask hands the task the bytes)."""
    key = _digest(blob)
    if path is not None and os.path.isfile(path):
        return key, os.path.abspath(path), None
    return key, None, share(client, bytes(blob))


def worker_blob(ref: tuple) -> bytes:
    """The model bytes a :func:`model_ref` names, on a worker (the file read and its digest checked)."""
    key, path, blob = ref
    if path is None:
        return blob
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise QsimError(f"the Dask worker {_address()} cannot read the model file {path}: {e.strerror or e}. "
                        "Put models and data on a filesystem every worker mounts at the same path.") from None
    if _digest(data) != key:
        raise QsimError(f"the model file {path} on the Dask worker {_address()} differs from the one this run "
                        "loaded (another version at the same path?).")
    return data


def worker_model(ref: tuple):
    """The :class:`qsim.Model` of a :func:`model_ref`, loaded once per worker process (and kept)."""
    from .api import load

    def build():
        return load(worker_blob(ref), name=ref[1] or "<bytes>")
    return worker_cache(("model", ref[0]), build)


def thread_key(*key) -> tuple:
    """A :func:`qsim.cluster.worker_cache` key for state one thread must not share (a LiteRT
    interpreter): workers started with several threads get one per thread."""
    return key + (threading.get_ident(),)


def dataset_origin(data) -> dict:
    """How workers open ``data`` again: its ``origin`` (:func:`qsim.data.open_dataset` records it)."""
    origin = getattr(data, "origin", None)
    if origin is None:
        raise QsimError("a distributed run reads the dataset on the workers from its path: give the path "
                        "(or a dataset opened with Model.dataset), not samples in memory.")
    return origin


def for_run(origin: dict) -> dict:
    """``origin`` tagged with a fresh run id: workers open the dataset once per run (and thread) and
    keep it for that run's next shards (a folder of 50,000 images is listed once, not per shard)."""
    return {**origin, "run": uuid.uuid4().hex}


def worker_dataset(origin: dict, g, open_fn: Callable | None = None):
    """The dataset ``origin`` names, opened on a worker for graph ``g`` (``open_fn(**origin)`` when
    given, else :func:`qsim.data.open_dataset`), kept per run and thread when ``origin`` carries a
    run id (:func:`for_run`); an unreadable path is a QsimError naming it."""
    from .data import open_dataset
    args = {k: v for k, v in origin.items() if k != "run"}

    def build():
        if open_fn is not None:
            return open_fn(**args)
        return open_dataset(args["path"], g, args["labels"], args["mean"], args["std"], args["image_mode"])
    try:
        if origin.get("run") is None:
            return build()
        return worker_cache(thread_key("data", origin["run"]), build)
    except QsimError as e:
        raise QsimError(f"the Dask worker {_address()} cannot read the dataset {origin['path']}: {e} "
                        "(workers open the dataset themselves: give a path every worker can read, on a "
                        "shared filesystem, or a URL)") from None


def gather(client, fn: Callable, tasks: Sequence[tuple], *, desc: str, weights: Sequence[int],
           progress: bool = False, retries: int = 2) -> list[Any]:
    """``fn(*task)`` for every task on the cluster (:func:`qsim.cluster.run_tasks`: a progress bar in
    samples, retries, reruns after a lost worker); the results in task order, one per task."""
    got: dict[int, Any] = {}
    for i, r in run_tasks(client, fn, tasks, desc=desc, unit="sample", weights=weights, progress=progress,
                          retries=retries):
        got.setdefault(i, r)  # a shard counts once
    missing = [i for i in range(len(tasks)) if i not in got]
    if missing:  # pragma: no cover - run_tasks raises first
        raise QsimError(f"shards {missing} returned no result.")
    return [got[i] for i in range(len(tasks))]


def _address() -> str:
    try:
        from distributed import get_worker
        return get_worker().address
    except Exception:
        return "(not in a worker)"
