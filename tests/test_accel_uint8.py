"""The accelerator model on uint8 (old converter, QUANTIZED_UINT8) models (issue 12).

The machine runs a uint8 GEMM layer as its int8 twin (:mod:`qsim.accel.mapping`): activations
``q - 128`` (a flipped top bit), weights centred offline to 9-bit signed ``w - zp_w`` stored packed
at 9 bits, 8x9-bit MACs.  Values: equal to the simulator's uint8 kernels and to LiteRT BUILTIN_REF.

Hand-derived figures on a 3x3x2 -> 3x3x2 1x1 CONV_2D (M = 9 pixels, K = 2, N = 2) on edge16
(16x16 weight-stationary): one fold, ``M + 2*rows + cols - 2 = 55`` array cycles (as its int8
form: no extra MACs).  DRAM reads: 4 weights at 9 bits = ceil(36 / 8) = 5 B (int8: 4 B), the
input 18 B, tables 2 channels x 9 B; writes: 18 B.  MAC energy 36 MACs x 0.3 pJ x 9/8.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import qsim
from conftest import REPO, require_module
from qsim import ir
from qsim.builder import ModelBuilder, uint8_model
from qsim.errors import QsimError
from qsim.reference import make_runner

CHAIN = ["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "ADD", "RESHAPE", "FULLY_CONNECTED"]


def _conv(dtype=np.uint8) -> bytes:
    """The hand-derived layer: uint8 weights with zero point 3 (or its int8 form, zero point 0)."""
    b = ModelBuilder()
    zp = 128 if dtype == np.uint8 else 0
    x = b.add_input("x", (1, 3, 3, 2), dtype, scale=0.02, zero_point=zp + 5)
    w_data = np.array([[1, 200], [3, 40]]).reshape(2, 1, 1, 2)
    w = b.add_const("w", w_data if dtype == np.uint8 else w_data - 100, scale=0.01, dtype=dtype,
                    zero_point=3 if dtype == np.uint8 else 0)
    bb = b.add_const("b", np.array([500, -700], np.int32), scale=0.0002, zero_point=0)
    y = b.add_tensor("y", (1, 3, 3, 2), dtype, scale=0.05, zero_point=zp - 10)
    b.add_op("CONV_2D", [x, w, bb], [y], ir.Conv2DOptions("VALID", 1, 1, 1, 1, "RELU"))
    b.mark_output(y)
    return b.build()


def test_cycles_bytes_energy_hand_derived():
    u8 = qsim.load(_conv()).profile(inputs=None).layers[0]
    i8 = qsim.load(_conv(np.int8)).profile(inputs=None).layers[0]
    assert (u8["array_cycles"], i8["array_cycles"]) == (55, 55)
    assert u8["macs"] == i8["macs"] == 36
    assert u8["dram_read_bytes"] == 5 + 18 + 2 * 9 and i8["dram_read_bytes"] == 4 + 18 + 2 * 9
    assert u8["dram_write_bytes"] == i8["dram_write_bytes"] == 18
    assert u8["energy_mac_pj"] == pytest.approx(36 * 0.3 * 9 / 8) and i8["energy_mac_pj"] == pytest.approx(36 * 0.3)


def test_weight_tiles_count_nine_bits():
    """A weight tile holds packed 9-bit weights: tiny8 (8x8 array) tiles an 8 x 8 FULLY_CONNECTED in
    chunks of min(cols, cout) = 8 channels, K * 8 = 64 weights = 72 B, more than half of a
    0.125 KiB weight SRAM (64 B; the int8 form's 64 B would fit), less than half of 0.25 KiB.
    DRAM reads: tables 8 x 9 B, weights 72 B, input 8 B."""
    b = ModelBuilder()
    x = b.add_input("x", (1, 8), np.uint8, scale=0.02, zero_point=128)
    w = b.add_const("w", np.arange(64).reshape(8, 8), scale=0.01, zero_point=7, dtype=np.uint8)
    bb = b.add_const("b", np.zeros(8, np.int32), scale=0.0002, zero_point=0)
    y = b.add_tensor("y", (1, 8), np.uint8, scale=0.05, zero_point=128)
    b.add_op("FULLY_CONNECTED", [x, w, bb], [y], ir.FullyConnectedOptions("NONE"))
    b.mark_output(y)
    m = qsim.load(b.build())
    with pytest.raises(QsimError, match="weights need 72 B per tile"):
        m.profile("tiny8", inputs=None, weight_sram_kib=0.125)
    rep = m.profile("tiny8", inputs=None, weight_sram_kib=0.25).layers[0]
    assert rep["dram_read_bytes"] == 72 + 8 + 8 * 9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_equal_simulator_and_litert(seed):
    require_module("ai_edge_litert", "LiteRT reference")
    blob = uint8_model(CHAIN, seed)
    m = qsim.load(blob)
    rng = np.random.default_rng(seed)
    xs = {i: rng.integers(0, 256, m.graph.tensors[i].shape).astype(np.uint8) for i in m.graph.inputs}
    inputs = [xs[i] for i in m.graph.inputs]
    rep = m.profile("tiny8", inputs=inputs, rounding_profile="litert")
    ref = make_runner("litert", blob, m.graph).run(inputs, list(m.graph.outputs))
    sim_out = m.run(inputs, profile="litert").outputs
    for t in m.graph.outputs:
        got = np.asarray(rep.result.values[t])
        name = m.graph.tensors[t].name
        assert got.dtype == np.uint8
        assert np.array_equal(got, np.asarray(sim_out[name]).reshape(got.shape))
        assert np.array_equal(got, np.asarray(ref[t]).reshape(got.shape))
    tot = rep.totals
    assert tot["acc_overflows"] == 0 and tot["outputs_changed"] == 0 and tot["acc_bits_used"] > 8


def test_uint8_accumulator_is_the_centred_sum():
    """The register holds sum((x - zp_x) * (w - zp_w)) (hand computed for one pixel), and a
    narrow register overflows on it and changes outputs: the statistics are the uint8 layer's own."""
    m = qsim.load(_conv())
    x = np.full((1, 3, 3, 2), 255, np.uint8)
    rep = m.profile(inputs=[x], rounding_profile="litert")
    # filter [out, 1, 1, in]: channel 0 = (1, 200), channel 1 = (3, 40); zp_w 3, zp_x 133
    acc = (255 - 133) * (1 - 3) + (255 - 133) * (200 - 3), (255 - 133) * (3 - 3) + (255 - 133) * (40 - 3)
    v = rep.layers[0]
    assert (v["acc_nobias_min"], v["acc_nobias_max"]) == (min(acc), max(acc))
    # 14 bits hold [-8192, 8191]: channel 1 (4514) fits, channel 0 (23790) overflows at each of 9 pixels
    narrow = m.profile(inputs=[x], rounding_profile="litert", acc_bits=14, acc_bias="requant").totals
    assert narrow["acc_overflows"] == 9 and narrow["outputs_changed"] > 0


def test_fold_check_on_uint8():
    """Weight-stationary fold checks on the centred weights: a 12-bit wrapping register overflows
    more often at the folds than at the end, and (wrap-around being modular) holds the same values."""
    m = qsim.load(uint8_model(["CONV_2D", "RESHAPE", "FULLY_CONNECTED"], 4))
    x = [np.random.default_rng(4).integers(0, 256, m.graph.tensors[m.graph.inputs[0]].shape).astype(np.uint8)]
    kw = dict(inputs=x, rounding_profile="litert", acc_bits=12, acc_bias="accumulator")
    end, fold = (m.profile("tiny8", acc_check=c, **kw) for c in ("end", "fold"))
    assert fold.totals["acc_overflows"] > end.totals["acc_overflows"] > 0
    for t in m.graph.outputs:
        assert np.array_equal(fold.result.values[t], end.result.values[t])


@pytest.mark.parametrize("variant", ["shift-only", "truncate"])
def test_requant_variant_on_uint8(variant):
    """A requant what-if on a uint8 layer: the values are the simulator's under the same variant,
    and the changed outputs are counted against the exact (LiteRT) result."""
    m = qsim.load(_conv())
    x = [np.random.default_rng(4).integers(0, 256, (1, 3, 3, 2)).astype(np.uint8)]
    rep = m.profile(inputs=x, rounding_profile="litert", requant_variant=variant)
    got = rep.result.values[m.graph.outputs[0]]
    want, exact = m.run(x, profile="litert", requant=variant).outputs["y"], m.run(x, profile="litert").outputs["y"]
    assert np.array_equal(got, want)
    assert rep.totals["outputs_changed"] == int(np.count_nonzero(want != exact)) > 0


def test_tflm_profile_refused_by_name():
    m = qsim.load(uint8_model(["CONV_2D"], 0))
    with pytest.raises(QsimError, match=r"--rounding-profile litert.*\n.*CONV_2D"):
        m.profile(inputs="random")
    assert m.profile(inputs=None).totals["cycles"] > 0  # timing alone needs no rounding profile


def test_cli_profile_uint8(tmp_path):
    model = tmp_path / "u8.tflite"
    model.write_bytes(uint8_model(["CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED"], 5))
    g = qsim.load(str(model)).graph
    np.save(tmp_path / "x.npy", np.full(g.tensors[g.inputs[0]].shape, 77, np.uint8))
    run = lambda *a: subprocess.run([sys.executable, "-m", "qsim.cli", "profile", str(model), *a], cwd=REPO,  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    ok = run("--rounding-profile", "litert", "--input", str(tmp_path / "x.npy"), "--json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["totals"]["acc_overflows"] == 0 and doc["totals"]["acc_bits_used"] > 8
    bad = run("--input", str(tmp_path / "x.npy"))
    assert bad.returncode == 2 and "qsim: error:" in bad.stderr and "--rounding-profile litert" in bad.stderr
    assert "Traceback" not in bad.stderr
