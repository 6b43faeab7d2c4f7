"""qsim.hdl's simulator-free parts: port map parsing and checks, coverage bins, beat packing and the
layer replay packing (the cocotb parts run in hdl_tests/test_hdl_kit.py)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from qsim.errors import QsimError
from qsim.hdl.beats import Beats, directed_beats, pack_lanes, replay_beats, unpack_lanes
from qsim.hdl.coverage import RequantCoverage
from qsim.hdl.ports import load_ports, ports_from_dict, qsim_requant_ports
from conftest import REPO

EXAMPLE_PORTS = REPO / "examples" / "my_requant" / "ports.toml"


def test_example_port_map_and_width_check():
    p = load_ports(EXAMPLE_PORTS)
    assert (p.lanes, p.latency, p.reset_active_low, p.fields["multiplier"]) == (2, 3, True, "in_m0")
    widths = {"clk_i": 1, "rst_ni": 1, "in_valid": 1, "in_ready": 1, "in_acc": 64, "in_bias": 64, "in_m0": 64,
              "in_shift": 12, "cfg_zp": 16, "cfg_min": 8, "cfg_max": 8, "out_valid": 1, "out_ready": 1, "out_q": 16}
    p.check_widths(widths.get)  # cfg_zp at 16 bits = one zero point per lane: allowed
    with pytest.raises(QsimError) as e:
        p.check_widths({**widths, "in_acc": 32, "out_q": None}.get, "module 'x'")
    msg = str(e.value)
    assert "signal 'in_acc' (input.acc) is 32 bits wide, the port map needs 64" in msg
    assert "signal 'out_q' (output.data) does not exist on module 'x'" in msg


@pytest.mark.parametrize("doc,match", [
    ({"lanes": 0}, "lanes must be an integer"),
    ({"colour": 1}, "unknown key"),
    ({"lanes": 1, "clock": {"name": "c"}}, r"\[input\] acc = \"<signal name>\" is missing"),
    ({"rounding": "banker"}, "rounding must be one of"),
    ({"latency": 0}, "latency must be a positive integer"),
])
def test_bad_port_maps_are_clear_errors(doc, match):
    with pytest.raises(QsimError, match=match):
        ports_from_dict(doc, "t.toml")


def test_bad_toml_file(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("lanes = [")
    with pytest.raises(QsimError, match="not valid TOML"):
        load_ports(f)
    with pytest.raises(QsimError, match="cannot read the port map"):
        load_ports(tmp_path / "none.toml")


def test_pack_unpack_lanes():
    assert pack_lanes([-1, 2], 8) == 0x02FF
    assert unpack_lanes(0x02FF, 2, 8) == [-1, 2]
    assert unpack_lanes(pack_lanes([-32, 31, 0], 6), 3, 6) == [-32, 31, 0]


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_directed_beats_hit_every_coverage_bin(rounding):
    cov = RequantCoverage(rounding)
    cov.sample(directed_beats(2, rounding))
    assert cov.missing() == [], cov.report()
    assert "never hit: none" in cov.report()


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_int16x8_directed_and_edge_beats_hit_every_coverage_bin(rounding):
    from qsim.hdl.beats import edge_beats
    cov = RequantCoverage(rounding, "int16x8")
    cov.sample(directed_beats(4, rounding, "int16x8"))
    cov.sample(edge_beats(4, rounding, "int16x8"))
    assert cov.missing() == [], cov.report()
    assert {f"shift={k}" for k in range(-31, 8)} <= set(cov.bins) and "shift=8" not in cov.bins


def test_int16x8_scheme_port_map_widths_and_golden():
    """scheme = "int16x8": 64-bit acc/bias and 16-bit zp/range/data by default, the int64 golden."""
    from qsim import fixedpoint as fp
    from qsim.hdl.beats import random_beats
    p = qsim_requant_ports(2, "double", "int16x8")
    assert (p.scheme, p.widths["acc"], p.widths["bias"], p.widths["data"], p.widths["zero_point"]) == \
        ("int16x8", 64, 64, 16, 16)
    assert p.parameters["OUT16"] == 1 and qsim_requant_ports(2).parameters["OUT16"] == 0
    with pytest.raises(QsimError, match="scheme must be one of"):
        ports_from_dict({"scheme": "int4"}, "t.toml")
    b = random_beats(5, 300, 2, "double", "int16x8")
    assert np.all(np.abs(b.acc + b.bias) < fp.INT64_ACC_LIMIT) and b.expected.min() >= -32768
    # a hand-derived row: acc 1000, bias 0, M0 = 2**30 (r = 2**14), shift -3: 1000 * 2**14 / 2**18 = 62.5 -> 63
    one = np.array([[1000]])
    row = Beats(one, one * 0, one * 0 + (1 << 30), one * 0 - 3, np.array([0]), np.array([-32768]),
                np.array([32767]), "double", scheme="int16x8")
    assert row.expected.tolist() == [[63]]


def test_coverage_reports_what_was_not_hit():
    cov = RequantCoverage("double")
    one = np.array([[5]])
    cov.sample(Beats(one, one * 0, one * (1 << 30), one * 0 - 1, np.array([0]), np.array([-128]), np.array([127]),
                     "double"))
    assert cov.bins["shift=-1"] == 1 and cov.bins["tie_positive"] == 1  # 5 * 2^30 / 2^31 = 2.5 at RDBP by 1
    assert "shift=3" in cov.missing() and "int32_min_x_int32_min" in cov.missing()
    assert "never hit:" in cov.report() and "saturate_high" in cov.report()


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_tie_bins_agree_with_exact_arithmetic(rounding):
    """Single rounding: a tie is x * M0 * 2^(shift - 31) with a fractional part of exactly 1/2 (exact
    rationals, independent of the classifier); double: a tie of that product also is one."""
    b = directed_beats(1, rounding)
    keep = (b.bias[:, 0] == 0) & (np.abs(b.acc[:, 0]) << np.maximum(b.shift[:, 0], 0) < (1 << 31))
    b = b.take(np.nonzero(keep)[0][::23])  # no int32 wrap on the way; a spread-out sample
    ties = 0
    for i in range(len(b)):
        one = b.take(slice(i, i + 1))
        cov = RequantCoverage(rounding)
        cov.sample(one)
        x, m, s = int(one.acc[0, 0]), int(one.mult[0, 0]), int(one.shift[0, 0])
        exact = Fraction(x * m) * Fraction(2) ** (s - 31)
        if exact.denominator == 2:
            ties += 1
            assert cov.bins["tie_positive" if exact > 0 else "tie_negative"] == 1, (x, m, s)
        elif rounding == "single":
            assert cov.bins["tie_positive"] + cov.bins["tie_negative"] == 0, (x, m, s)
    assert ties >= 5, f"only {ties} exact ties among the sampled beats"


def test_replay_beats_pad_channels_to_lanes():
    import qsim
    m = qsim.load(REPO / "examples" / "models" / "demo_cnn_int8.tflite")
    v = m.vectors(0, inputs=1)
    beats, valid = replay_beats(v, 3)
    c = v.channels
    cp = -(-c // 3) * 3
    assert beats.expected.size == v.rows * cp and valid.sum() == v.expected.size
    assert np.array_equal(beats.expected.reshape(v.rows, cp)[:, :c], v.expected)
    assert np.array_equal(beats.acc.reshape(v.rows, cp)[:, :c], v.acc)
    assert np.array_equal(beats.mult.reshape(v.rows, cp)[0, :c], v.multiplier)


def test_qsim_requant_ports_latency_is_rtl_info():
    from qsim import rtl_info
    p = qsim_requant_ports(4, "single")
    assert p.latency == rtl_info.requant_latency("single") and p.parameters == {"LANES": 4, "SINGLE_ROUNDING": 1, "OUT16": 0}


# ----------------------------------------------------------------------------- uint8 scheme (OUT_UNSIGNED)

@pytest.mark.parametrize("rounding", ["double", "single"])
def test_uint8_scheme_beats_coverage_and_port_map(rounding):
    """scheme = "uint8": the int8 widths, OUT_UNSIGNED = 1 on qsim's unit, zero points and bounds in
    [0, 255] (0 and 255 and bounds >= 128 among the directed ones: what a sign-extending unit gets
    wrong), goldens in [0, 255], every coverage bin hit by the directed + edge beats."""
    from qsim.hdl.beats import edge_beats, random_beats
    p = qsim_requant_ports(4, rounding, "uint8")
    assert (p.scheme, p.widths["data"], p.widths["zero_point"], p.widths["acc"]) == ("uint8", 8, 8, 32)
    assert p.parameters["OUT_UNSIGNED"] == 1 and "OUT_UNSIGNED" not in qsim_requant_ports(4, rounding).parameters
    d, e, r = directed_beats(4, rounding, "uint8"), edge_beats(4, rounding, "uint8"), random_beats(3, 500, 4, rounding, "uint8")
    for b in (d, e, r):
        assert b.scheme == "uint8" and b.expected.min() >= 0 and b.expected.max() <= 255
        assert b.zp.min() >= 0 and b.zp.max() <= 255 and b.act_min.min() >= 0 and b.act_max.max() <= 255
    assert {0, 255} <= set(d.zp.tolist()) and (d.act_min >= 128).any() and (d.expected >= 128).any()
    cov = RequantCoverage(rounding, "uint8")
    cov.sample(d)
    cov.sample(e)
    assert cov.missing() == [], cov.report()
    assert cov.bins["zero_point_min"] > 0 and cov.bins["zero_point_max"] > 0


def test_uint8_golden_hand_derived():
    """acc 1000, bias 0, M0 = 2**30 (x 0.5), shift -3: 1000 / 16 = 62.5 -> 63 (double and single
    round this tie away from zero / up alike), + zero point 200 = 263 -> clamped to 255; with
    zero point 100: 163 (above int8's range: the uint8 bus reads it unsigned)."""
    one = np.array([[1000]])
    for zp, want in ((200, 255), (100, 163)):
        for rounding in ("double", "single"):
            b = Beats(one, one * 0, one * 0 + (1 << 30), one * 0 - 3, np.array([zp]), np.array([0]), np.array([255]),
                      rounding, scheme="uint8")
            assert b.expected.tolist() == [[want]]
    assert unpack_lanes(pack_lanes([163, 5], 8), 2, 8, signed=False) == [163, 5]
    assert unpack_lanes(pack_lanes([163, 5], 8), 2, 8) == [163 - 256, 5]


def test_uint8_scheme_refuses_int8_vectors(tmp_path):
    from qsim.hdl.runner import check_vectors
    with pytest.raises(QsimError, match="writes int8 layers.*scheme is uint8"):
        check_vectors(tmp_path, qsim_requant_ports(2, "double", "uint8"))
