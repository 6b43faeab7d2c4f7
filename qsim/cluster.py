"""Dask plumbing shared by `qsim sweep`, `qsim eval` and `qsim compare` (one implementation).

A run either starts a ``LocalCluster`` on this machine (worker processes, one thread each) or
connects to a running scheduler (``--scheduler tcp://HOST:8786``, see the README for
``dask scheduler`` / ``dask worker``).  Work is cut by the caller into tasks: a plain module-level
function and picklable arguments (paths and small configs, never a whole dataset).
``run_tasks`` submits them, yields ``(index, result)`` as they finish (a tqdm bar on stderr), and
leaves failure handling to Dask: a task whose worker dies is rerun elsewhere, a task that raises
is retried ``retries`` times.  The caller keeps one result per index, so a retried task is never
counted twice.  Per-worker state that is costly to build (a prepared graph) is cached per worker
process with ``worker_cache``.
"""
from __future__ import annotations

import logging
import os
import sys
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from .errors import QsimError

__all__ = ["dask_client", "run_tasks", "share", "worker_cache"]

_CONNECT_TIMEOUT_S = 20
# A local cluster's background work, slowed down: the worker's statistical profiler (a stack
# sample every 10 ms, ~4% of a core per idle worker, more while tasks run) off, the event-loop
# health tick and the system/memory monitors less often.  Measured idle CPU per 10 s on 2 cores:
# worker 0.44 s -> 0.05 s, scheduler + client 0.55 s -> 0.13 s.  Remote workers keep their own
# settings (README: DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False).
# Dask's nannies also start workers with MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's dynamic
# mmap threshold: every large numpy temporary becomes a fresh mmap and its page faults, and qsim runs
# about 2x slower in such a worker (vww_96, batch 64: 0.26 s vs 0.52 s; the zoo MobileNetV2 on 2
# workers, 128 images: 16.4 s vs 27.6 s).  Local clusters unset it (NO_MALLOC_TRIM set to None);
# for `dask worker` see the README.
# worker-saturation 1.0: a worker (one thread) holds one queued task, not ceil(1.1) = 2, so the last
# tasks go to whichever worker frees first (qsim sweep's guided task sizes balance the workers).
NO_MALLOC_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
LOCAL_CONFIG = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "500ms",
                "distributed.admin.system-monitor.interval": "5s",
                "distributed.worker.memory.monitor-interval": "1s",
                "distributed.scheduler.work-stealing-interval": "1s",
                "distributed.scheduler.worker-saturation": 1.0,
                NO_MALLOC_TRIM: None}


def _distributed():
    try:
        import distributed
    except ImportError as e:  # pragma: no cover - dask is a declared dependency
        raise QsimError("distributed runs need dask.distributed: pip install 'dask[distributed]'") from e
    return distributed


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None, client=None,
                connect_timeout: float = _CONNECT_TIMEOUT_S) -> Iterator[Any]:
    """A ``distributed.Client`` for one run, closed (with its local cluster) on exit.

    ``client`` given: used as is and left open (the caller owns it).  ``workers=0``: no
    cluster, yields None (:func:`run_tasks` then runs the tasks in this process).  ``scheduler``
    ("tcp://HOST:8786"): connect to that running cluster (within ``connect_timeout`` seconds).  Otherwise start a ``LocalCluster`` of
    ``workers`` processes (default: this machine's cores), one thread each, no dashboard, with
    ``OPENBLAS_NUM_THREADS=1`` so workers do not oversubscribe the cores.
    """
    if client is not None:
        yield client
        return
    if scheduler is not None and workers is not None:
        raise QsimError("give either --scheduler (a running cluster) or --workers (a local one), not both")
    if workers is not None and workers < 0:
        raise QsimError(f"--workers must be at least 0 (0: in this process, no cluster), got {workers}")
    if workers == 0:
        yield None
        return
    d = _distributed()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if scheduler is not None:
        try:
            c = d.Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError, ValueError) as e:
            raise QsimError(f"cannot reach the Dask scheduler at {scheduler!r} "
                            f"(is `dask scheduler` running there?): {e}") from e
        try:
            yield c
        finally:
            c.close()
        return
    import dask

    n = workers or os.cpu_count() or 1
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # inherited by the workers otherwise (an earlier nanny sets it)
    with dask.config.set(LOCAL_CONFIG):
        cluster = d.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                 dashboard_address=None, silence_logs=logging.ERROR)
        c = d.Client(cluster)
        try:
            yield c
        finally:
            c.close()
            cluster.close()


def share(client, value):
    """``value`` (bytes, an array) copied once to every worker of ``client``; a future tasks take as an argument.

    Each call gets a fresh key (``hash=False``).  With Dask's default content-hash key, sharing the
    same bytes again while the scheduler is still releasing the previous copy (two sweeps of one
    model in a row on one client) reuses a key that is being deleted: tasks then fail with "lost
    dependencies" or wait forever ("Could not find data"), 60 of 60 repeats in a row hung here.
    """
    return client.scatter(value, broadcast=True, hash=False)


def run_tasks(client, fn: Callable, tasks: Sequence[tuple], *, desc: str = "tasks", unit: str = "task",
              progress: bool = True, retries: int = 2, weights: Sequence[int] | None = None
              ) -> Iterator[tuple[int, Any]]:
    """Run ``fn(*tasks[i])`` for each i on the cluster; yield ``(i, result)`` as each finishes.

    Order of completion is arbitrary: callers that need a deterministic result merge by index.
    ``client`` None: the tasks run here, one after the other, in order (no Dask, no retries).
    ``weights`` (e.g. points or samples per task) advance the progress bar; default 1 per task.
    The first task that still fails after ``retries`` retries raises here (a ``QsimError`` raised
    inside a task keeps its message).
    """
    from tqdm import tqdm

    w = list(weights) if weights is not None else [1] * len(tasks)
    futures = {}
    bar = tqdm(total=sum(w), desc=desc, unit=unit, file=sys.stderr, disable=None if progress else True,
               leave=False)
    try:
        if client is None:
            for i, args in enumerate(tasks):
                result = fn(*args)
                bar.update(w[i])
                yield i, result
            return
        d = _distributed()
        for i, args in enumerate(tasks):
            futures[client.submit(fn, *args, retries=retries, pure=False)] = i
        for f in d.as_completed(list(futures)):
            i = futures[f]
            result = f.result()
            bar.update(w[i])
            yield i, result
    finally:
        bar.close()
        for f in futures:
            f.cancel()


_CACHE: "OrderedDict[Any, Any]" = OrderedDict()
_CACHE_SIZE = 16  # a model, its LiteRT twin and a dataset index per run, some per worker thread


def worker_cache(key, factory: Callable[[], Any]):
    """The value ``factory()`` built once per process for ``key`` (a few kept, least recent dropped).

    Inside a Dask worker this makes "prepare the graph once per worker, not per task": tasks pass
    the model path (or bytes' hash) as the key.
    """
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = factory()
    _CACHE[key] = value
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value
