"""The accelerator datapath as hardware builds it (issue 11): where the bias goes, overflow per fold
or at the end, outputs changed vs the exact result, activation clamps apart from int8 saturation,
energy per layer, preset paths, and requant variants through the API and the CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_model
from qsim import fixedpoint as fp
from qsim.accel import config, datapath
from qsim.api import load
from qsim.errors import QsimError
from qsim.kernels import RequantParams

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "models" / "demo_cnn_int8.tflite"
TESTSET = REPO / "examples" / "models" / "demo_testset.npz"


def _rq(bias, act=(-128, 127), real=2.0 ** -8):
    m0, sh = fp.quantize_multiplier(real)
    c = len(bias)
    return RequantParams(np.asarray(bias, np.int64), np.full(c, m0, np.int64), np.full(c, sh, np.int64), 0,
                         act[0], act[1], "double")


def _exact(rq, acc):
    return fp.requantize(acc, rq.bias, rq.multiplier, rq.shift, rq.output_zero_point, rq.act_min, rq.act_max)


def test_bias_in_the_requant_unit_is_never_an_accumulator_overflow():
    acc = np.array([[1000, -2000], [30000, -30000]], np.int64)
    rq = _rq([1 << 30, -(1 << 30)])  # int32 biases of +-2^30 (dead channels of vww_96)
    unit = datapath.Accumulator(bits=16, bias="requant")
    out, st = datapath.requant_unit(acc.copy(), rq, unit=unit)
    assert st.overflow_count == 0 and st.outputs_changed == 0
    assert np.array_equal(out, _exact(rq, acc))
    assert (st.acc_nobias_min, st.acc_nobias_max, st.acc_bits_used) == (-30000, 30000, 16)
    assert st.acc_min == int((acc + rq.bias).min()) and st.acc_max == int((acc + rq.bias).max())
    # preloaded into the same 16-bit register, the bias itself overflows every element
    out_a, st_a = datapath.requant_unit(acc.copy(), rq, unit=datapath.Accumulator(bits=16, bias="accumulator"))
    assert st_a.overflow_count == 4 and st_a.acc_bits_used == 32


def test_fold_check_sees_partial_sums_the_end_check_does_not():
    # three folds, 16-bit register: 30000 + 30000 overflows, the final sum 10000 does not
    parts = [np.array([[30000]], np.int64), np.array([[30000]], np.int64), np.array([[-50000]], np.int64)]
    acc = sum(parts)
    rq = _rq([0], real=1.0 / 1024)
    end = datapath.Accumulator(16, "saturate", "requant", "end", 1)
    fold = datapath.Accumulator(16, "saturate", "requant", "fold", 1)
    _, st_end = datapath.requant_unit(acc.copy(), rq, unit=end)
    out_f, st_f = datapath.requant_unit(acc.copy(), rq, unit=fold, folds=iter(parts))
    assert st_end.overflow_count == 0 and st_f.overflow_count == 1
    assert out_f[0, 0] == -17 and st_f.outputs_changed == 1  # saturated at 32767 first: (32767 - 50000) / 1024 = -16.8
    # wrapping: the same final value (modular), but the fold check counts the excursion
    out_w, st_w = datapath.requant_unit(acc.copy(), rq, unit=datapath.Accumulator(16, "wrap", "requant", "fold", 1),
                                        folds=iter(parts))
    assert st_w.overflow_count == 1 and out_w[0, 0] == 10 and st_w.outputs_changed == 0


def test_activation_clamps_are_counted_apart_from_int8_saturation():
    rq = _rq([0, 0], act=(-128, 127), real=1.0)
    acc = np.array([[-500, 10], [300, -129]], np.int64)
    _, st = datapath.requant_unit(acc.copy(), rq, sides=(True, False))  # RELU with zero point -128
    assert (st.activation_clamps, st.int8_saturations, st.saturation_count) == (2, 1, 3)
    _, st = datapath.requant_unit(acc.copy(), rq)  # no fused activation: all three are int8 saturation
    assert (st.activation_clamps, st.int8_saturations) == (0, 3)


def test_fold_partials_sum_to_the_accumulator():
    from qsim.interpreter import prepare_graph
    m = load(DEMO)
    prep = prepare_graph(m.graph, "tflm")
    vals = prep.run(m.random_inputs(1, 3)[0], keep_all=True)
    seen = 0
    for p in prep.ops:
        if p.kernel.accumulate is None:
            continue
        ins = [vals[i] if i in vals else m.graph.tensors[i].data for i in p.op.inputs]
        parts = list(datapath.fold_partials(p, ins, 5))
        assert len(parts) > 1
        assert np.array_equal(sum(parts), p.kernel.accumulate(p.params, ins)), p.op.opcode
        seen += 1
    assert seen == 3


@pytest.mark.parametrize("hw", [dict(acc_bits=12), dict(acc_bits=14, acc_overflow="saturate", acc_check="fold"),
                                dict(requant="shift-only"), dict(acc_bits=16, acc_bias="accumulator", requant="truncate")])
def test_outputs_changed_equals_a_direct_comparison_with_the_exact_run(hw):
    m = load(DEMO)
    x = m.random_inputs(1, 11)[0]
    p = m.profile("edge16", inputs=x, **hw)
    exact = m.run(x, keep="all")
    res = p.result
    out = m.graph.outputs[0]
    assert p.totals["outputs_changed"] == int(np.count_nonzero(res.values[out].reshape(-1) != exact[out].reshape(-1)))
    # per layer: against the exact requantization of that layer's own inputs (the kernel's eval)
    ref = m.prepared("tflm")
    changed = 0
    for op in ref.ops:
        if op.kernel.accumulate is None:
            continue
        ins = [res.values[i] if i in res.values else m.graph.tensors[i].data for i in op.op.inputs]
        want = op.kernel.eval(op.params, ins)[0].reshape(-1)
        v = next(L.values for L in res.layers if L.map.index == op.op.index)
        assert v.outputs_changed == int(np.count_nonzero(res.values[op.op.outputs[0]].reshape(-1) != want))
        changed += v.outputs_changed
    assert changed > 0 and p.totals["layer_outputs_changed"] == changed


def test_default_machine_stays_exact_and_counts_nothing_changed():
    m = load(DEMO)
    x = m.random_inputs(1, 2)[0]
    p = m.profile("edge16", inputs=x)
    assert p.totals["outputs_changed"] == p.totals["layer_outputs_changed"] == p.totals["acc_overflows"] == 0
    assert np.array_equal(p.result.values[m.graph.outputs[0]], m.run(x)[m.outputs[0].name])


def test_energy_of_the_demo_fully_connected_layer_by_hand():
    m = load(DEMO)
    p = m.profile("edge16", inputs=None)
    fc = next(L for L in p.layers if L["op"] == "FULLY_CONNECTED")
    # 1x256 @ 256x10 on 16x16 weight-stationary: 16 K folds, 1 column fold
    dma = fc["dram_read_bytes"] + fc["dram_write_bytes"]
    sram = dma + 1 * 256 * 1 + 256 * 10 + 4 * 1 * 10 * (2 * 16 - 1) + 1 * 10
    assert fc["sram_bytes"] == sram
    assert fc["energy_mac_pj"] == pytest.approx(2560 * 0.3)
    assert fc["energy_sram_pj"] == pytest.approx(sram * 3.4)
    assert fc["energy_dram_pj"] == pytest.approx(dma * 162.5)
    assert fc["energy_requant_pj"] == pytest.approx(10 * 3.3)
    assert fc["energy_pj"] == pytest.approx(sum(fc[f"energy_{c}_pj"] for c in ("mac", "sram", "dram", "requant")))
    assert p.totals["energy_pj"] == pytest.approx(sum(L.get("energy_pj", 0) for L in p.layers))
    only_macs = m.profile("edge16", inputs=None, **{"energy.sram_byte_pj": 0, "energy.dram_byte_pj": 0,
                                                    "energy.requant_pj": 0, "energy.mac_pj": 1})
    assert only_macs.totals["energy_pj"] == pytest.approx(p.totals["macs"])


def test_preset_paths_reach_every_field_and_bad_values_name_it():
    base = config.load_hw("edge16")
    for path, field in config.TOML_KEYS.items():
        assert config.field_for_path(".".join(path)) == field
    cfg = base.with_overrides(**{"requant.variant": "mult-bits=12", "accumulator.bits": 20,
                                 "accumulator.bias": "accumulator", "accumulator.check": "fold"})
    assert (cfg.requant_variant, cfg.acc_bits, cfg.acc_bias, cfg.acc_check) == ("mult-bits=12", 20, "accumulator", "fold")
    assert str(cfg.variant) == "mult-bits=12"
    for change, named in [({"requant.variant": "half"}, "requant.variant"),
                          ({"accumulator.bias": "adder"}, "accumulator.bias"),
                          ({"accumulator.check": "never"}, "accumulator.check"),
                          ({"energy.mac_pj": -1}, "energy.mac_pj"), ({"energy.dram_byte_pj": "x"}, "energy.dram_byte_pj"),
                          ({"accumulator.nope": 1}, "accumulator.nope")]:
        with pytest.raises(QsimError, match=named.replace(".", r"\.")):
            base.with_overrides(**change)
    legacy = config.from_toml_dict({"requant": {"acc_bits": 24, "overflow": "saturate"}})
    assert (legacy.acc_bits, legacy.acc_overflow) == (24, "saturate")


def test_run_and_eval_report_a_variant_against_the_reference():
    m = load(DEMO)
    data = np.load(TESTSET)
    x, y = data["x"][:120], data["y"][:120]
    r = m.run(x, requant="shift=8", keep="all")
    ref = m.run(x, keep="all")
    diffs = [np.abs(r.values[t].astype(np.int64) - ref.values[t]) for t in ref.values if t not in m.graph.inputs]
    assert r.requant.differ == sum(int(np.count_nonzero(d)) for d in diffs) > 0
    assert r.requant.max_abs_diff_lsb == max(int(d.max()) for d in diffs)
    assert m.run(x, requant="double").requant.differ == 0
    e = m.eval(TESTSET, requant="shift-only", limit=120)
    base = m.eval(TESTSET, limit=120)
    assert e.requant.reference_top1 == base.top1
    own = m.run(x, requant="shift-only").outputs["probabilities"]
    assert e.top1 == pytest.approx(float(np.mean(own.argmax(1) == y)))


def test_cli_requant_flags():
    env_py = [sys.executable, "-m", "qsim.cli"]
    r = subprocess.run(env_py + ["eval", str(DEMO), "--data", str(TESTSET), "--requant", "shift-only", "--limit", "60"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "reference (tflm profile" in r.stdout and "requant shift-only vs" in r.stdout
    r = subprocess.run(env_py + ["profile", str(DEMO), "--requant", "mult-bits=0"], capture_output=True, text=True)
    assert r.returncode == 2 and "requant.variant" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(env_py + ["run", str(DEMO), "--random", "1", "--requant", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown requant variant" in r.stderr


def test_vww_bias_in_requant_unit_no_phantom_overflows():
    """The issue's observation: vww_96 at 24 bits counted +-2^30 int32 biases as overflows."""
    m = load(shared_model("vww_96_int8.tflite"))
    x = m.random_inputs(1, 0)[0]
    p = m.profile("edge16", inputs=x, acc_bits=20)
    assert p.totals["acc_overflows"] == 0 and p.totals["outputs_changed"] == 0
    assert p.totals["acc_max"] >= 1 << 30 > p.totals["acc_nobias_max"]
    pre = m.profile("edge16", inputs=x, acc_bits=24, acc_bias="accumulator")
    assert pre.totals["acc_overflows"] > 0  # a preloaded bias of 2^30 does not fit 24 bits
