"""Malformed models never crash qsim: seeded mutants (qsim/fuzz.py) of the shared int8 models and
the demo model end in success or a QsimError, never another exception, a silent run of a model
made invalid on purpose, more than 10 s, or more than 2 GiB (the worker's address space is
capped, so such an allocation fails and is reported).  ``QSIM_FUZZ_N`` (default 200) sets the
number of in-process cases; ``benchmarks/fuzz_campaign.py`` runs long campaigns.  A sample also
goes through the real CLI (inspect, run, profile, codegen): exit 0 or 2, no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SHARED_MODELS
from qsim import fuzz
from qsim import inputs as qin
from qsim.errors import QsimError
from qsim.loader import load_bytes

N_CASES = int(os.environ.get("QSIM_FUZZ_N", "200"))
N_CLI = 8


@pytest.fixture(scope="module")
def seed_paths() -> list[str]:
    if not SHARED_MODELS.is_dir() and os.environ.get("CI"):
        pytest.fail(f"{SHARED_MODELS} is absent (CI must fuzz the shared models)")
    return fuzz.seed_models(REPO)


def test_mutants_end_in_success_or_qsim_error(seed_paths):
    res = fuzz.campaign(seed_paths, seed=20261130, cases=range(N_CASES))
    assert res.cases == N_CASES
    assert res.failures == [], res.summary() + "\n" + "\n".join(map(str, res.failures[:20]))
    assert res.max_rss_kib < 2 * 1024 * 1024, res.summary()
    # both outcomes occur: the mutator neither only breaks files beyond reading nor leaves them intact
    assert res.ok > 0 and res.qsim_error > res.ok, res.summary()


def test_mutator_is_deterministic_and_structure_aware(seed_paths):
    models = fuzz.load_seeds(seed_paths)
    a = [fuzz.mutate(models, 7, k) for k in range(40)]
    b = [fuzz.mutate(models, 7, k) for k in range(40)]
    assert [m.data for m in a] == [m.data for m in b]
    assert sum(m.must_fail for m in a) >= 5  # invalid-by-construction edits are among them
    for m in a:  # every must-fail mutant is refused, at load
        if m.must_fail:
            with pytest.raises(QsimError):
                load_bytes(m.data)


def test_memory_cap_catches_a_huge_allocation(tmp_path):
    """The worker's cap is real: a 3 GiB allocation inside a case fails (MemoryError), it does not swap."""
    code = ("import resource, numpy as np; from qsim import fuzz; import sys\n"
            "vm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:'))\n"
            "resource.setrlimit(resource.RLIMIT_AS, (vm + fuzz.MEMORY_LIMIT, vm + fuzz.MEMORY_LIMIT))\n"
            "try:\n    np.ones(3 << 30, np.uint8)\nexcept MemoryError:\n    sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 3, r.stderr


def _input_file(data: bytes, path: Path) -> Path:
    """A random input .npy for the mutant (any small array when the mutant does not load)."""
    try:
        g = load_bytes(data)
        np.save(path, qin.random_inputs(g, 1, seed=0)[0][0] if len(g.inputs) == 1 else np.zeros(1, np.int8))
    except QsimError:
        np.save(path, np.zeros(1, np.int8))
    return path


def test_cli_on_mutants(seed_paths, tmp_path):
    models = fuzz.load_seeds(seed_paths)
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1")
    exits = []
    for k in range(N_CLI):
        m = fuzz.mutate(models, 99, k)
        model = tmp_path / f"m{k}.tflite"
        model.write_bytes(m.data)
        x = _input_file(m.data, tmp_path / f"x{k}.npy")
        for args in (["inspect", str(model)], ["run", str(model), "--input", str(x)],
                     ["profile", str(model), "--no-values"], ["codegen", str(model), "-o", str(tmp_path / f"c{k}")]):
            r = subprocess.run([sys.executable, "-m", "qsim.cli", *args], capture_output=True, text=True, env=env,
                               timeout=120)
            assert "Traceback" not in r.stderr, (m.description, args, r.stderr[-2000:])
            assert r.returncode in (0, 2), (m.description, args, r.returncode, r.stderr[-2000:])
            if r.returncode == 2:
                assert r.stderr.startswith("qsim: error: "), (m.description, args, r.stderr[-500:])
            exits.append(r.returncode)
    assert 2 in exits
