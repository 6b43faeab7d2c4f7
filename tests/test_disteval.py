"""Distributed `qsim eval` / `qsim compare` (issue 16) on the shared real LocalCluster (2 worker processes).

The golden is the one-process run of the same API: a distributed run must give the same result bit
for bit (every figure of ``to_dict()``, the rendered report, every per-layer accumulator of compare),
also when a shard's task raises once or its worker is restarted mid-run.  Faults are injected into
the real worker processes (``client.run``) at the dataset reader, the code a shard runs first.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import qsim
from conftest import REPO
from qsim.errors import QsimError
from qsim.exactsum import ExactSum
from qsim.shards import shard_ranges
from test_cli import assert_input_error, qsim as run_cli

MODELS = REPO / "examples" / "models"
INT8, FLOAT, TESTSET = MODELS / "demo_cnn_int8.tflite", MODELS / "demo_cnn_float.tflite", MODELS / "demo_testset.npz"
TIMING = ("seconds", "run_seconds", "samples_per_s")


def _eval_doc(r) -> dict:
    return {k: v for k, v in r.to_dict().items() if k not in TIMING}


def _stats_doc(st) -> dict:
    """Every accumulator of a compare TensorStats, exact values (arrays as lists)."""
    if st is None:
        return None
    d = {k: v for k, v in st.__dict__.items() if k != "exact"}
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


# ------------------------------------------------------------------ exact merging

def test_exact_sum_is_independent_of_order_and_grouping():
    rnd = random.Random(3)
    vals = [rnd.uniform(-1, 1) * 10.0 ** rnd.randint(-30, 30) for _ in range(2000)]
    whole = ExactSum()
    for v in vals:
        whole.add(v)
    parts = [ExactSum() for _ in range(7)]
    shuffled = vals[:]
    rnd.shuffle(shuffled)
    for k, v in enumerate(shuffled):
        parts[k % 7].add(v)
    merged = ExactSum()
    for p in reversed(parts):
        merged.absorb(p)
    assert float(whole) == float(merged) == math.fsum(vals)  # fsum: the correctly rounded exact sum
    assert sum(vals) != math.fsum(vals)  # plain float summation would not be split-independent here
    s = ExactSum(math.inf)
    assert float(s.absorb(ExactSum(1.0))) == math.inf and math.isnan(float(s.absorb(ExactSum(-math.inf))))


def test_shards_are_whole_batches_covering_the_dataset():
    r = shard_ranges(1000, 64, 2)
    assert r[0][0] == 0 and r[-1][1] == 1000 and all(a % 64 == 0 for a, _ in r)
    assert all(b == c for (_, b), (c, _) in zip(r, r[1:])) and len(r) == 8
    assert shard_ranges(10, 64, 16) == [(0, 10)]


# ------------------------------------------------------------------ distributed == one process

def test_eval_distributed_equals_local_labelled_npz(dask_client):
    m = qsim.load(INT8)
    assert len(shard_ranges(360, 16, 2)) > 1
    local = m.eval(TESTSET, batch_size=16)
    dist = m.eval(TESTSET, batch_size=16, client=dask_client)
    assert _eval_doc(dist) == _eval_doc(local)
    assert local.correct_top1 == 354  # the README's figure, one process
    assert dist.render().split("\n")[:-1] == local.render().split("\n")[:-1]  # all but the timing line
    url = m.eval(TESTSET.resolve().as_uri(), batch_size=16, client=dask_client)  # read through fsspec
    assert _eval_doc(url) == _eval_doc(local)


def test_eval_distributed_equals_local_saturating_float_data_and_images(dask_client, tmp_path):
    m = qsim.load(INT8)
    x = np.random.default_rng(5).normal(0.5, 0.6, size=(150, 8, 8, 1)).astype(np.float32)  # some saturate
    np.save(tmp_path / "x.npy", x)
    local = m.eval(tmp_path / "x.npy", batch_size=8)
    dist = m.eval(str(tmp_path / "x.npy"), batch_size=8, client=dask_client)
    assert any("saturated" in n for n in local.notes)
    assert _eval_doc(dist) == _eval_doc(local)

    from PIL import Image
    rng = np.random.default_rng(9)
    for k in range(40):
        d = tmp_path / "imgs" / f"c{k % 10}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 10), np.uint8)).save(d / f"{k}.png")
    local = m.eval(tmp_path / "imgs", batch_size=4, mean=127.5, std=60.0)
    dist = m.eval(tmp_path / "imgs", batch_size=4, mean=127.5, std=60.0, client=dask_client)
    assert local.samples == 40 and _eval_doc(dist) == _eval_doc(local)


def test_compare_distributed_equals_local_every_layer_statistic(dask_client):
    m = qsim.load(INT8)
    kw = dict(limit=60, batch_size=8)
    local = m.compare(FLOAT, TESTSET, **kw)
    dist = m.compare(str(FLOAT), TESTSET.resolve().as_uri(), client=dask_client, **kw)  # a URL, via fsspec
    doc = lambda r: json.dumps({k: v for k, v in r.to_dict().items() if k != "data"}, default=str)  # noqa: E731
    assert doc(dist) == doc(local)
    assert dist.render().replace(TESTSET.resolve().as_uri(), str(TESTSET)) == local.render()
    assert len(local.raw_rows) > 3
    for a, b in zip(local.raw_rows, dist.raw_rows):
        assert _stats_doc(b.st) == _stats_doc(a.st)
        assert _stats_doc(b.iso) == _stats_doc(a.iso)
    assert local.n_samples == 60 and local.raw_rows[0].st.sample.size > 0


# ------------------------------------------------------------------ faults

def _arm(flag: str, mode: str) -> None:
    """In a worker process: the first dataset read on any worker (flag file created atomically) raises
    ("raise") or writes its worker's address and hangs ("hang"); later reads are untouched."""
    import qsim.data as d
    from distributed import get_worker
    orig = getattr(d, "_unfaulted_batches", d._batches)
    d._unfaulted_batches = orig

    def faulty(*a, **k):
        try:
            fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return orig(*a, **k)
        os.write(fd, get_worker().address.encode())
        os.close(fd)
        if mode == "raise":
            raise OSError("injected: the shard's first read failed")
        time.sleep(300)
        return orig(*a, **k)
    d._batches = faulty


def _disarm() -> None:
    import qsim.data as d
    if hasattr(d, "_unfaulted_batches"):
        d._batches = d._unfaulted_batches


@pytest.fixture
def faults(dask_client):
    def arm(flag, mode):
        dask_client.run(_arm, str(flag), mode)
    yield arm
    dask_client.run(_disarm)


def test_a_shard_that_raises_once_is_retried_with_the_identical_result(dask_client, faults, tmp_path):
    m = qsim.load(INT8)
    local = m.eval(TESTSET, batch_size=16)
    flag = tmp_path / "failed"
    faults(flag, "raise")
    dist = m.eval(TESTSET, batch_size=16, client=dask_client)
    assert flag.read_text().startswith("tcp://")  # the fault did fire
    assert _eval_doc(dist) == _eval_doc(local)


def test_a_worker_restarted_mid_run_gives_the_identical_result(dask_client, faults, tmp_path):
    m = qsim.load(INT8)
    local = m.compare(FLOAT, TESTSET, limit=48, batch_size=8)
    flag = tmp_path / "hung"
    faults(flag, "hang")
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(m.compare, FLOAT, TESTSET, limit=48, batch_size=8, client=dask_client)
        t0 = time.monotonic()
        while not (flag.exists() and flag.read_text()):
            assert time.monotonic() - t0 < 60 and not fut.done(), "no shard started"
            time.sleep(0.05)
        addr = flag.read_text()
        assert not fut.done()  # mid-run: one shard hangs on that worker
        dask_client.restart_workers([addr])
        dist = fut.result(timeout=120)
    assert json.dumps(dist.to_dict(), default=str) == json.dumps(local.to_dict(), default=str)
    for a, b in zip(local.raw_rows, dist.raw_rows):
        assert _stats_doc(b.st) == _stats_doc(a.st)


# ------------------------------------------------------------------ errors

def test_a_dataset_the_workers_cannot_read_is_a_clear_error(dask_client, tmp_path):
    m = qsim.load(INT8)
    p = tmp_path / "gone.npz"
    p.write_bytes(TESTSET.read_bytes())
    ds = m.dataset(p)  # the client could read it; the workers will not find it
    p.unlink()
    with pytest.raises(QsimError, match=r"the Dask worker tcp://\S+ cannot read the dataset .*gone\.npz"):
        m.eval(ds, client=dask_client)


def test_in_memory_data_cannot_be_distributed(dask_client):
    m = qsim.load(INT8)
    ds = m.dataset(TESTSET).load(limit=10)
    with pytest.raises(QsimError, match="from its path"):
        m.eval(ds, client=dask_client)


def _cli(capsys, *args) -> tuple[int, str, str]:
    """The real CLI entry point, in this process (no interpreter start-up per call)."""
    from qsim.cli import main
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_scheduler_json_equals_local_and_unreadable_path_exits_2(dask_client, tmp_path, capsys):
    addr = dask_client.scheduler.address
    code_d, out_d, err_d = _cli(capsys, "eval", INT8, "--data", TESTSET, "--batch-size", "32", "--scheduler", addr,
                                "--json")
    code_l, out_l, _ = _cli(capsys, "eval", INT8, "--data", TESTSET, "--batch-size", "32", "--json")
    assert code_d == 0 == code_l, err_d
    strip = lambda d: {k: v for k, v in d.items() if k not in TIMING}  # noqa: E731
    assert strip(json.loads(out_d)) == strip(json.loads(out_l))
    missing = tmp_path / "nowhere" / "x.npz"
    for cmd, where in ((["eval", INT8], str(missing)), (["compare", INT8, FLOAT], str(missing)),
                       (["eval", INT8], missing.as_uri())):
        code, _, err = _cli(capsys, *cmd, "--data", where, "--scheduler", addr)
        assert code == 2 and err.startswith("qsim: error:") and where in err and "Traceback" not in err
    # a URL only this process can read (fsspec's in-memory store): the client opens it, the workers cannot
    import fsspec
    with fsspec.open("memory://only-the-client/x.npz", "wb") as f:
        f.write(TESTSET.read_bytes())
    code, _, err = _cli(capsys, "eval", INT8, "--data", "memory://only-the-client/x.npz", "--scheduler", addr)
    assert code == 2 and "Traceback" not in err, err
    assert re.search(r"the Dask worker tcp://\S+ cannot read the dataset memory://only-the-client/x\.npz", err), err
    # through the installed entry point too: exit 2, the path named
    assert_input_error(run_cli("eval", INT8, "--data", missing, "--workers", "2"), str(missing))
