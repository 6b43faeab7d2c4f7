"""The accelerator model on int16x8 layers (issue 12): int16 activations as a machine choice.

Hand-derived figures on a 3x3x2 -> 3x3x2 1x1 CONV_2D (M=9 pixels, K=2, N=2) on edge16 (16x16
weight-stationary): one fold, ``M + 2*rows + cols - 2 = 55`` array cycles per pass
(:func:`qsim.accel.timing.gemm_cycles`); "two-pass" streams the int16 operand twice (110),
"native" 16x8 multipliers once (55, like the int8 twin).  DRAM: weights 4 B, the int16 input
18 x 2 B, tables 2 channels x (8 B int64 bias + 4 B multiplier + 1 B shift); output 18 x 2 B.
"""
from __future__ import annotations

import numpy as np
import pytest

import qsim
from qsim import ir
from qsim.builder import ModelBuilder
from qsim.errors import QsimError


def _conv(act=np.int16, bias=np.int64) -> bytes:
    b = ModelBuilder()
    x = b.add_input("x", (1, 3, 3, 2), act, scale=0.001, zero_point=0)
    w = b.add_const("w", np.array([[1, -2], [3, 4]], np.int8).reshape(2, 1, 1, 2), scale=0.01, zero_point=0)
    bb = b.add_const("b", np.array([5, -7], bias), scale=1e-5, zero_point=0)
    y = b.add_tensor("y", (1, 3, 3, 2), act, scale=0.002, zero_point=0)
    b.add_op("CONV_2D", [x, w, bb], [y], ir.Conv2DOptions("VALID", 1, 1, 1, 1, "NONE"))
    b.mark_output(y)
    return b.build()


def test_two_pass_and_native_cycles_bytes_energy_hand_derived():
    m16, m8 = qsim.load(_conv()), qsim.load(_conv(np.int8, np.int32))
    two = m16.profile(inputs=None).layers[0]
    native = m16.profile(inputs=None, int16_mode="native").layers[0]
    int8 = m8.profile(inputs=None).layers[0]
    assert (two["array_cycles"], native["array_cycles"], int8["array_cycles"]) == (110, 55, 55)
    assert two["dram_read_bytes"] == 4 + 18 * 2 + 2 * 13 == native["dram_read_bytes"]
    assert int8["dram_read_bytes"] == 4 + 18 + 2 * 9
    assert (two["dram_write_bytes"], int8["dram_write_bytes"]) == (36, 18)
    assert two["energy_mac_pj"] == pytest.approx(36 * 0.3 * 2) and int8["energy_mac_pj"] == pytest.approx(36 * 0.3)


def test_int16_mode_from_a_preset_file_and_sweepable_path(tmp_path):
    hw = tmp_path / "n16.toml"
    hw.write_text('[array]\nrows = 16\ncols = 16\nint16 = "native"\n')
    m = qsim.load(_conv())
    assert m.profile(hw=str(hw), inputs=None).layers[0]["array_cycles"] == 55
    assert m.profile(inputs=None, **{"array.int16": "native"}).layers[0]["array_cycles"] == 55


def test_values_through_the_model_equal_the_simulator():
    """With inputs the int16x8 layer's values come from the int16x8 kernels: equal to Model.run."""
    m = qsim.load(_conv())
    x = np.random.default_rng(3).integers(-32768, 32768, size=(1, 3, 3, 2)).astype(np.int16)
    rep = m.profile(inputs=x)
    got = rep.result.values[m.graph.outputs[0]]
    assert np.array_equal(got, m.run(x).outputs["y"])


def test_bad_int16_mode_is_a_clear_error():
    with pytest.raises(QsimError, match=r"int16_mode \(array.int16\) must be 'two-pass' or 'native'"):
        qsim.load(_conv()).profile(inputs=None, int16_mode="fast")
