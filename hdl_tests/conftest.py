"""pytest fixtures for the RTL tests (helpers live in hdl_runner.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # hdl_runner / requant_tb are imported by module name
    sys.path.insert(0, str(HERE))

from hdl_runner import rtl_build  # noqa: E402


@pytest.fixture(scope="session")
def rtl():
    """Factory ``rtl(lanes, rounding) -> RtlBuild``; each configuration is built once per session."""
    return rtl_build
