"""Shared fixtures.  ``../shared/models`` holds real published models; a user's clone may not
have it, so tests that need it skip with a reason, except under CI (CI=true), where a missing
model directory is a failure, not a skip."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "models"


def skip_or_fail(msg: str) -> None:
    """Something a test needs is missing: skip with the reason locally, fail under CI=true."""
    if os.environ.get("CI"):
        pytest.fail(msg + " (CI must not skip this test)")
    pytest.skip(msg)


def shared_model(name: str) -> Path:
    """Path of a model in ../shared/models, or skip (fail under CI) when it is absent."""
    p = SHARED_MODELS / name
    if not p.is_file():
        skip_or_fail(f"{p} is absent: the real models live beside the repository in ../shared/models")
    return p


def require_module(name: str, why: str):
    """Import a module the test needs, or skip outside CI / fail inside CI."""
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        skip_or_fail(f"{name} is not installed ({why}); `make test` installs it")


@pytest.fixture
def shared_models_dir() -> Path:
    if not SHARED_MODELS.is_dir():
        skip_or_fail(f"{SHARED_MODELS} is absent")
    return SHARED_MODELS


@pytest.fixture(scope="session")
def dask_client():
    """One real ``LocalCluster(n_workers=2, processes=True)`` shared by every distributed test."""
    from qsim.cluster import dask_client as _client

    with _client(workers=2) as c:
        yield c
