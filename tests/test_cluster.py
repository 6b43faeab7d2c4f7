"""qsim.cluster: the Dask plumbing under sweep / eval / compare, on a real LocalCluster."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from qsim.cluster import dask_client, run_tasks, share, worker_cache
from qsim.errors import QsimError


def _square_and_pid(i: int) -> tuple[int, int]:
    return i * i, os.getpid()


def _fail_once(flag: str, i: int) -> int:
    p = Path(flag)
    if i == 3 and not p.exists():
        p.write_text("failed once")
        raise RuntimeError("transient failure")
    return i + 100


_BUILDS = []


def _cached_value(key: str) -> tuple[int, int]:
    v = worker_cache(key, lambda: (_BUILDS.append(key) or len(_BUILDS), os.getpid()))
    return v[0], os.getpid()


def test_run_tasks_results_by_index_on_two_worker_processes(dask_client):
    got = dict(run_tasks(dask_client, _square_and_pid, [(i,) for i in range(20)], progress=False))
    assert {i: v[0] for i, v in got.items()} == {i: i * i for i in range(20)}
    assert os.getpid() not in {v[1] for v in got.values()}  # computed in worker processes


def test_a_task_that_raises_once_is_retried_and_counted_once(dask_client, tmp_path):
    flag = str(tmp_path / "flag")
    got = list(run_tasks(dask_client, _fail_once, [(flag, i) for i in range(6)], progress=False))
    assert sorted(i for i, _ in got) == list(range(6))
    assert dict(got) == {i: i + 100 for i in range(6)}
    assert Path(flag).read_text() == "failed once"


def test_task_failing_past_its_retries_raises(dask_client, tmp_path):
    with pytest.raises(RuntimeError, match="transient"):
        list(run_tasks(dask_client, _fail_once, [(str(tmp_path / "f"), 3)], progress=False, retries=0))


def test_worker_cache_builds_once_per_process(dask_client):
    got = [v for _, v in run_tasks(dask_client, _cached_value, [("k",)] * 12, progress=False)]
    per_pid = {}
    for builds, pid in got:
        per_pid.setdefault(pid, set()).add(builds)
    assert all(s == {1} for s in per_pid.values())  # first and only build in each worker


def _length(b: bytes) -> int:
    return len(b)


def test_sharing_the_same_bytes_again_right_after_release_never_loses_them(dask_client):
    # Two sweeps of one model in a row share the same bytes twice.  With a content-hash key the second
    # copy reuses a key the scheduler is still deleting: tasks failed with "lost dependencies" (CI,
    # tests/test_sweep.py) or waited forever.  Each repeat here releases its copy and shares it again.
    blob = bytes(range(256)) * 400
    for _ in range(30):
        ref = share(dask_client, blob)
        futures = [dask_client.submit(_length, ref, pure=False) for _ in range(4)]
        assert [f.result(timeout=30) for f in futures] == [len(blob)] * 4
        del ref, futures


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(QsimError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"):
        with dask_client(scheduler="tcp://127.0.0.1:9", connect_timeout=2):
            pass


def test_scheduler_and_workers_together_is_a_usage_error():
    with pytest.raises(QsimError, match="not both"):
        with dask_client(scheduler="tcp://127.0.0.1:9", workers=2):
            pass
