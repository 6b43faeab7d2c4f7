"""RTL verification of rtl/requant_unit.sv: cocotb on Verilator, golden model qsim.fixedpoint.

Each test runs one cocotb test (hdl_tests/tb_requant.py) on a configuration built once per
session (LANES=4, double or single rounding).
"""
from __future__ import annotations

import subprocess

import pytest

from hdl_runner import SOURCES, count_results, rtl_build, shared_model, skip_or_fail, verilator_cmd

# No conftest.py here on purpose: tests/ modules do `from conftest import ...`, and a second
# conftest module would shadow theirs when both folders are collected in one pytest run.

ROUNDINGS = ["double", "single"]
LANES = 4
SEED = 20240601


@pytest.fixture(scope="module")
def rtl():
    """Factory ``rtl(lanes, rounding) -> RtlBuild``; each configuration is built once per session."""
    return rtl_build


@pytest.mark.parametrize("out16,unsigned", [(0, 0), (1, 0), (0, 1)], ids=["int8", "int16x8", "uint8"])
@pytest.mark.parametrize("lanes", [1, LANES])
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_lint_wall_clean(rounding, lanes, out16, unsigned):
    """verilator --lint-only -Wall reports nothing, in both rounding modes and every output mode."""
    cmd = verilator_cmd("--lint-only", "-Wall", "--top-module", "requant_unit",
                        f"-GSINGLE_ROUNDING={int(rounding == 'single')}", f"-GLANES={lanes}", f"-GOUT16={out16}",
                        f"-GOUT_UNSIGNED={unsigned}", *map(str, SOURCES))
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and "%Warning" not in r.stderr and "%Error" not in r.stderr, r.stderr


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_directed_corners(rtl, rounding):
    rtl(LANES, rounding).run("directed_corners", RQ_SEED=SEED)


def test_directed_corners_three_lanes(rtl):
    """LANES is a real parameter: an odd lane count (3) packs and computes the same corners."""
    rtl(3, "single").run("directed_corners", RQ_SEED=SEED)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_random_100k_with_gaps_and_backpressure(rtl, rounding):
    rtl(LANES, rounding).run("random_with_gaps_and_backpressure", RQ_SEED=SEED, RQ_VECTORS=100_000)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_latency_equals_rtl_info(rtl, rounding):
    rtl(LANES, rounding).run("latency_matches_rtl_info", RQ_SEED=SEED)


@pytest.mark.parametrize("profile,rounding", [("tflm", "double"), ("single", "single")])
def test_hardware_model_uses_the_rtl_latency(profile, rounding):
    """The accelerator model's default requant depth is the RTL's LATENCY (via qsim.rtl_info), the
    number test_latency_equals_rtl_info measures on the simulated RTL."""
    from qsim import rtl_info
    from qsim.accel.config import HwConfig
    assert HwConfig(rounding_profile=profile).resolved_requant_depth() == rtl_info.requant_latency(rounding)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_edge_cases_same_bits_as_python(rtl, rounding):
    """The arithmetic edges through the RTL (the rows tests/test_edges.py checks in Python and C)."""
    rtl(LANES, rounding).run("edge_cases", RQ_SEED=SEED)


def test_count_results_counts_skipped_tests_as_not_run(tmp_path):
    """The runner's count: a skipped cocotb test is not a run one (so it cannot pass silently)."""
    xml = tmp_path / "r.xml"
    xml.write_text('<testsuites><testsuite name="s">'
                   '<testcase name="a"/><testcase name="b"><skipped/></testcase>'
                   '<testcase name="c"><failure message="x"/></testcase></testsuite></testsuites>')
    assert count_results(xml) == (2, 1, 1)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_full_throughput(rtl, rounding):
    rtl(LANES, rounding).run("full_throughput", RQ_SEED=SEED)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_reset_mid_stream(rtl, rounding):
    rtl(LANES, rounding).run("reset_mid_stream", RQ_SEED=SEED)


def _replay_vectors(model_path, layer: int, seed: int):
    """``qsim vectors`` of GEMM layer ``layer`` (op index) of a model on one seeded random input,
    with the expected outputs replaced by TFLM's int8 output of that layer (tflite-micro with all
    tensors preserved, :class:`qsim.refrun.TFLMRunner`) after checking qsim's equal them."""
    import numpy as np

    import qsim
    from qsim.refrun import TFLMRunner

    m = qsim.load(model_path)
    x = m.random_inputs(1, seed)[0]
    v = m.vectors(layer, inputs=x, profile="tflm")
    op = m.graph.operators[v.op_index]
    ref = TFLMRunner(m.blob, m.graph).run(x, [op.outputs[0]])[op.outputs[0]]
    ref = np.asarray(ref, dtype=np.int64).reshape(v.expected.shape)
    assert np.array_equal(ref, v.expected), f"qsim's vectors differ from TFLM on {model_path.name} op {layer}"
    v.expected = ref
    return v


@pytest.mark.parametrize("model,layer", [("kws_ref_model.tflite", 0), ("kws_ref_model.tflite", 2),
                                         ("person_detect.tflite", 2)],
                         ids=["kws_first_conv", "kws_pointwise_conv", "person_detect_first_conv"])
def test_real_layer_replay(rtl, model, layer):
    """A real CONV_2D layer: qsim accumulators + per-channel tables through the RTL == TFLM's int8
    output of that layer (person_detect is the per-channel-bias model LiteRT refuses)."""
    v = _replay_vectors(shared_model(model), layer, seed=SEED)
    b = rtl(LANES, v.rounding)
    folder = b.build_dir / f"replay_{model.split('.')[0]}_op{layer}"
    v.write(folder)
    b.run("real_layer_replay", RQ_SEED=SEED, RQ_REPLAY=folder)


def test_yosys_synth_reports_cells_per_lane():
    """`make synth` flow: yosys synthesizes the unit and the lane count scales the cells (skipped
    without yosys, an optional Debian package; under CI=true a missing yosys fails)."""
    import shutil
    if shutil.which("yosys") is None:
        skip_or_fail("yosys is not installed (optional: apt-get install yosys; .ci/run installs it)")
    from synth_report import per_lane
    s = per_lane(2, "double")
    assert s["cells_per_lane"] > 1000 and s["flops_per_lane"] > 100 and s["shared_cells"] >= 0, s


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_directed_set_covers_every_shift_ties_and_srdhm_overflow(rounding):
    """The directed vectors really contain what directed_corners claims (checked with exact
    rational arithmetic, not with the model under test)."""
    from fractions import Fraction

    from qsim.hdl.beats import INT32_MIN, directed_beats, shift_range
    v = directed_beats(LANES, rounding)
    acc, bias, m0, sh = (a.reshape(-1).tolist() for a in (v.acc, v.bias, v.mult, v.shift))
    lo, hi = shift_range(rounding)
    assert set(sh) >= set(range(lo, hi + 1))
    for s in range(lo, min(hi, 30) + 1):  # at shift 31, x << 31 is 0 or INT32_MIN: no ties exist
        signs = set()
        for x, b, m, k in zip(acc, bias, m0, sh):
            if k == s and b == 0 and abs(x) << max(s, 0) < 2**31:  # no int32 wrap on the way
                exact = Fraction(x * m) * Fraction(2) ** (s - 31)  # the real product x * M
                if exact.denominator == 2:  # exact tie
                    signs.add(exact > 0)
        assert signs == {True, False}, f"shift {s}: ties of signs {signs} only"
    if rounding == "double":  # ... so the intermediate tie RDBP(+-2^30, 31) is in the set
        from qsim.fixedpoint import saturating_rounding_doubling_high_mul as srdhm
        ys = {int(srdhm(x, m)) for x, m, k in zip(acc, m0, sh) if k == -31}
        assert {1 << 30, -(1 << 30)} <= ys
    pairs = set(zip([(a + b + 2**31) % 2**32 - 2**31 for a, b in zip(acc, bias)], m0))
    assert (INT32_MIN, INT32_MIN) in pairs


# ----------------------------------------------------------------------------- int16x8 output mode (OUT16)

@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_int16x8_mode_directed_random_edges_latency_reset(rtl, rounding):
    """OUT16 = 1 (int64 accumulator and bias, int16 output; golden qsim.fixedpoint.requantize_int64):
    the directed ties at every shift in [-31, 7], 20,000 random results with gaps and back-pressure,
    the int16x8 edges, the latency (the same 5 stages) and reset mid-stream, on one build."""
    _mode_suite(rtl(LANES, rounding, "int16x8"))


def _mode_suite(b) -> None:
    """An output mode's checks on one build: directed corners, 20,000 random results with gaps and
    back-pressure, the mode's edges, the latency and reset mid-stream."""
    b.run("directed_corners", RQ_SEED=SEED)
    b.run("random_with_gaps_and_backpressure", RQ_SEED=SEED, RQ_VECTORS=20_000)
    b.run("edge_cases", RQ_SEED=SEED)
    b.run("latency_matches_rtl_info", RQ_SEED=SEED)
    b.run("reset_mid_stream", RQ_SEED=SEED)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_int16x8_directed_set_covers_every_shift_ties(rounding):
    """The int16x8 directed vectors contain exact ties of both signs at every shift in [-31, 7]
    (exact rational arithmetic, the Q15 reduction written out by hand, not the model under test)."""
    from fractions import Fraction

    from qsim.hdl.beats import directed_beats
    v = directed_beats(LANES, rounding, "int16x8")
    acc, bias, m0, sh = (a.reshape(-1).tolist() for a in (v.acc, v.bias, v.mult, v.shift))
    assert set(sh) >= set(range(-31, 8))
    for s in range(-31, 8):
        signs = set()
        for x, b, m, k in zip(acc, bias, m0, sh):
            if k != s or b != 0:
                continue
            if rounding == "double":
                r = 0x7FFF if m >= 0x7FFF0000 else (m + 2**15) // 2**16
                exact = Fraction(x * r, 2 ** (15 - s))
            else:
                exact = Fraction(x * m, 2 ** (31 - s))
            if exact.denominator == 2:
                signs.add(exact > 0)
        assert signs == {True, False}, f"shift {s}: ties of signs {signs} only"


# ----------------------------------------------------------------------------- uint8 output mode (OUT_UNSIGNED)

@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_uint8_mode_directed_random_edges_latency_reset(rtl, rounding):
    """OUT_UNSIGNED = 1 (int32 accumulator, uint8 zero point / bounds / output, 0..255; golden
    qsim.fixedpoint.requantize): the int8 directed corners and edges moved to uint8 zero points
    and bounds (0, 255 and bounds >= 128 among them), 20,000 random results with gaps and
    back-pressure, the latency (the same 5 stages) and reset mid-stream, on one build."""
    _mode_suite(rtl(LANES, rounding, "uint8"))
