"""qsim.rtl_info reads the requant pipeline depth from rtl/requant_unit.sv (one definition)."""
from __future__ import annotations

import re

import pytest

from qsim import rtl_info
from qsim.errors import QsimError


def test_latency_is_the_localparam_in_the_rtl():
    text = rtl_info.requant_rtl_path().read_text()
    (value,) = re.findall(r"localparam int LATENCY = (\d+);", text)
    assert rtl_info.REQUANT_LATENCY == int(value) >= 1
    assert rtl_info.requant_latency("double") == rtl_info.requant_latency("single") == int(value)


def test_unknown_rounding_mode_is_a_qsim_error():
    with pytest.raises(QsimError, match="unknown rounding mode"):
        rtl_info.requant_latency("nearest")


def test_missing_rtl_file_is_a_clear_qsim_error(tmp_path, monkeypatch):
    monkeypatch.setattr(rtl_info, "requant_rtl_path", lambda: tmp_path / "rtl" / "requant_unit.sv")
    with pytest.raises(QsimError, match="cannot read the requantization RTL"):
        rtl_info.requant_latency()
    with pytest.raises(QsimError):
        rtl_info.REQUANT_LATENCY  # noqa: B018


def test_rtl_without_one_latency_line_is_rejected(tmp_path, monkeypatch):
    p = tmp_path / "requant_unit.sv"
    p.write_text("module requant_unit; localparam int DEPTH = 5; endmodule\n")
    monkeypatch.setattr(rtl_info, "requant_rtl_path", lambda: p)
    with pytest.raises(QsimError, match="exactly one line"):
        rtl_info.requant_latency()


def test_unknown_attribute_still_raises_attribute_error():
    with pytest.raises(AttributeError):
        rtl_info.NO_SUCH_THING  # noqa: B018


def test_rtl_sources_are_the_repositorys_rtl_files():
    """qsim.rtl.sources() (package data) carries exactly the repository's rtl/*.sv, byte for byte."""
    from pathlib import Path

    from qsim import rtl
    repo_rtl = Path(__file__).resolve().parents[1] / "rtl"
    found = rtl.sources()
    assert [p.name for p in found] == sorted(p.name for p in repo_rtl.glob("*.sv")) != []
    assert all(p.is_absolute() and p.read_bytes() == (repo_rtl / p.name).read_bytes() for p in found)
    assert rtl_info.requant_rtl_path() == rtl.source("requant_unit.sv") in found
    assert f"module {rtl.TOP}" in rtl.source("requant_unit.sv").read_text()


def test_missing_rtl_package_data_is_a_clear_qsim_error(monkeypatch):
    from qsim import rtl
    monkeypatch.setattr(rtl, "_PACKAGE", "qsim.no_such_rtl_package")
    with pytest.raises(QsimError, match="RTL sources .* are missing"):
        rtl.sources()
