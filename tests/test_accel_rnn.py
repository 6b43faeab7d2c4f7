"""The accelerator model on recurrent / stateful ops: UNIDIRECTIONAL_SEQUENCE_LSTM and SVDF mapped as
GEMMs on the MAC array plus vector-unit work, and profiled with values through their kernels.

Expected array cycles are derived by hand from timing.gemm_cycles' formula (SCALE-Sim's):

* weight-stationary (tiny8: 8x8): folds = ceil(K/8) * ceil(N/8), each M + 2*8 + 8 - 2 = M + 22 cycles;
* output-stationary (8x8): folds = ceil(M/8) * ceil(N/8), each K + 8 + 8 - 2 = K + 14 cycles.
"""
from __future__ import annotations

import numpy as np
import pytest

import qsim
from qsim import ir
from qsim.accel import config, mapping
from qsim.accel.profile import prepare_profile, profile_graph
from qsim.builder import ModelBuilder, lstm_int8_model
from qsim.errors import UnsupportedModelError

from conftest import shared_model

TINY = config.load_hw("tiny8")  # 8x8 weight-stationary, 32/32/16 KiB SRAM


def _lstm(time_major=False):
    # B = 2, T = 3, I = 5, S = 6: 4 gates -> N = 24
    return qsim.load(lstm_int8_model(n_batch=2, n_time=3, n_input=5, n_cell=6, time_major=time_major, seed=3))


def _svdf():
    """SVDF: input [1, 5], F = 6 filters of memory 4, rank 2 -> 3 units, int16 state."""
    rng = np.random.default_rng(7)
    b = ModelBuilder(description="svdf")
    x = b.add_input("x", (1, 5), np.int8, scale=0.05, zero_point=-2)
    wf = b.add_const("wf", rng.integers(-127, 128, (6, 5)).astype(np.int8), scale=0.01, zero_point=0)
    wt = b.add_const("wt", rng.integers(-3000, 3000, (6, 4)).astype(np.int16), scale=0.002, zero_point=0)
    bias = b.add_const("bias", rng.integers(-500, 500, 3).astype(np.int32), scale=0.002 * 0.004, zero_point=0)
    state = b.add_variable("state", (1, 24), np.int16, scale=0.004, zero_point=0)
    y = b.add_tensor("y", (1, 3), np.int8, scale=0.05, zero_point=1)
    b.add_op("SVDF", [x, wf, wt, bias, state], [y], ir.SVDFOptions(rank=2, activation="RELU"))
    b.mark_output(y)
    return qsim.load(b.build())


def _random_inputs(g, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in g.inputs:
        t = g.tensors[i]
        info = np.iinfo(t.dtype)
        out.append(rng.integers(info.min, info.max + 1, t.shape).astype(t.dtype))
    return out


def _layers(g, cfg):
    return [L for L in profile_graph(g, cfg).layers]


@pytest.mark.parametrize("time_major", [False, True])
def test_lstm_maps_to_two_gemms_and_the_cell_update(time_major):
    g = _lstm(time_major).graph
    inp, rec, cell = mapping.map_graph(g)
    assert [p.part for p in (inp, rec, cell)] == ["input GEMM", "recurrent GEMM", "cell update"]
    assert {p.index for p in (inp, rec, cell)} == {0}
    assert (inp.unit, inp.m, inp.k, inp.n, inp.steps) == ("array", 6, 5, 24, 1)  # M = B*T
    assert (rec.unit, rec.m, rec.k, rec.n, rec.steps) == ("array", 2, 6, 24, 3)  # per step, T steps
    assert inp.macs == 6 * 5 * 24 and rec.macs == 3 * 2 * 6 * 24
    assert cell.unit == "vector" and cell.vector_ops == 22 * 2 * 3 * 6  # 22 ops per cell, row and step
    L = _layers(g, TINY)
    # ws 8x8: input GEMM 1 * 3 folds of 6 + 22; recurrent GEMM 3 steps of 1 * 3 folds of 2 + 22
    assert [x.timing.array_cycles for x in L] == [3 * 28, 3 * 3 * 24, 0]
    assert L[2].timing.vector_cycles == 792 // 8  # 8 vector lanes
    # the recurrent weights (24 x 6 int8) fit the weight SRAM: loaded once; each step loads its hidden state
    assert L[1].timing.dram_read_bytes == 9 * 24 + 24 * 6 + 3 * 2 * 6
    assert L[1].timing.tiles == 3
    os_ = _layers(g, TINY.with_overrides(dataflow="os"))
    # os 8x8: input GEMM ceil(6/8)*3 folds of 5 + 14; recurrent 3 steps of ceil(2/8)*3 folds of 6 + 14
    assert [x.timing.array_cycles for x in os_] == [3 * 19, 3 * 3 * 20, 0]


def test_lstm_recurrent_weights_reloaded_each_step_when_they_do_not_fit():
    """Half the weight SRAM (1 KiB / 2 = 512 B) holds K=40 x 8 channels (320 B), not all 4*40 = 160:
    every step reloads its 20 weight chunks (its 40-byte hidden state once, on its first chunk)."""
    g = qsim.load(lstm_int8_model(n_batch=1, n_time=2, n_input=4, n_cell=40)).graph
    cfg = TINY.with_overrides(weight_sram_kib=1)
    rec = _layers(g, cfg)[1]
    assert rec.map.steps == 2 and rec.map.n == 160
    # per step ceil(40/8) * ceil(160/8) = 100 folds of 1 + 22 cycles
    assert rec.timing.array_cycles == 2 * 100 * 23
    assert rec.timing.dram_read_bytes == 9 * 160 + 2 * (40 * 160 + 40)  # tables, then per step weights + h
    assert rec.timing.tiles == 2 * 20


def test_svdf_maps_the_feature_gemm_on_the_array():
    g = _svdf().graph
    feat, time = mapping.map_graph(g)
    assert (feat.part, feat.unit, feat.m, feat.k, feat.n, feat.macs) == ("feature GEMM", "array", 1, 5, 6, 30)
    assert feat.out_elem_bytes == 2  # int16 state values
    # per filter: 4 taps + state column write + rank add; per unit: bias + requant
    assert (time.part, time.unit, time.vector_ops) == ("time filter", "vector", 6 * (4 + 2) + 3 * 2)
    L = _layers(g, TINY)
    assert L[0].timing.array_cycles == 1 * (1 + 22)  # ws: ceil(5/8) * ceil(6/8) folds of M + 22
    assert L[1].timing.vector_cycles == 42 // 8 + 1


@pytest.mark.parametrize("build", [_lstm, _svdf])
def test_values_equal_the_simulator(build):
    m = build()
    x = _random_inputs(m.graph)
    for cfg in (TINY, config.load_hw("tiny8").with_overrides(rounding_profile="litert")):
        res = profile_graph(m.graph, cfg, x)
        ref = m.run(x[0], profile=cfg.rounding_profile)
        for t in m.graph.outputs:
            np.testing.assert_array_equal(res.values[t], ref.values[t])
        assert all(L.values is None for L in res.layers)  # internal accumulators are not modelled
        assert res.totals["cycles"] > 0 and res.totals["outputs_changed"] == 0


def test_an_op_qsim_cannot_compute_is_still_refused_with_values():
    b = ModelBuilder(description="rnn")
    x = b.add_input("x", (1, 4), np.int8, scale=0.05, zero_point=0)
    w = b.add_const("w", np.ones((3, 4), np.int8), scale=0.02, zero_point=0)
    y = b.add_tensor("y", (1, 3), np.int8, scale=0.05, zero_point=0)
    b.add_op("RNN", [x, w], [y])
    b.mark_output(y)
    g = qsim.load(b.build()).graph
    assert prepare_profile(g, TINY, values=False).run().totals["cycles"] > 0
    with pytest.raises(UnsupportedModelError, match="RNN"):
        profile_graph(g, TINY, [np.zeros((1, 4), np.int8)])


@pytest.mark.parametrize("name", ["trained_lstm_int8.tflite", "keyword_scrambled_8bit.tflite"])
def test_real_models_profile_with_and_without_values(name):
    m = qsim.load(shared_model(name))
    timed = prepare_profile(m.graph, TINY, values=False).run()
    parts = {L.map.part for L in timed.layers}
    assert ("recurrent GEMM" in parts) if "lstm" in name else ("time filter" in parts)
    x = _random_inputs(m.graph, seed=1)
    res = profile_graph(m.graph, TINY, x)
    assert res.totals["cycles"] == timed.totals["cycles"] > 0
    ref = m.run(x[0], profile=TINY.rounding_profile)
    for t in m.graph.outputs:
        np.testing.assert_array_equal(res.values[t], ref.values[t])


def test_sweep_cache_times_the_recurrent_parts_like_a_plain_profile():
    """The sweep's schedule/tiling caches (keyed on geometry incl. ``steps``) give each machine the
    timing a fresh profile gives it."""
    from qsim.accel.profile import map_layers, time_graph
    g = _lstm().graph
    maps, cache = map_layers(g), {}
    for cfg in (TINY, TINY.with_overrides(rows=16), TINY.with_overrides(dram_bytes_per_cycle=1), TINY):
        cached = time_graph(g, cfg, events=False, maps=maps, cache=cache)
        fresh = time_graph(g, cfg)
        assert [L.timing.cycles for L in cached] == [L.timing.cycles for L in fresh]
        assert [L.timing.dram_read_bytes for L in cached] == [L.timing.dram_read_bytes for L in fresh]


@pytest.mark.parametrize("values", [False, True])
def test_cli_sweep_on_the_real_lstm(tmp_path, capsys, values):
    import pyarrow.parquet as pq

    from qsim.cli import main
    lstm = str(shared_model("trained_lstm_int8.tflite"))
    grid = tmp_path / "g.toml"
    grid.write_text("[array]\nrows = [8, 16]\n", encoding="utf-8")
    rc = main(["sweep", lstm, "--grid", str(grid), "--workers", "0", "--out", str(tmp_path / "s.parquet")]
              + ([] if values else ["--no-values"]))
    assert rc == 0, capsys.readouterr().err
    rows = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert [r["array.rows"] for r in rows] == [8, 16] and all(r["feasible"] and r["cycles"] > 0 for r in rows)
    assert rows[0]["cycles"] > rows[1]["cycles"]  # K = 20: 2 row folds per step instead of 3


def test_int16x8_lstm_takes_two_array_passes_and_keeps_the_simulator_values():
    """TFLite Micro's 16x8 LSTM: int16 activations (64-bit accumulators), so on tiny8's 8x8-bit
    array (int16 two-pass) every GEMM runs twice."""
    m = qsim.load(lstm_int8_model(n_batch=1, n_time=3, n_input=4, n_cell=5, activations=np.int16, input_zp=0,
                                  hidden_zp=0))
    x = _random_inputs(m.graph, seed=2)
    res = profile_graph(m.graph, TINY, x)
    inp, rec, _ = res.layers
    assert (inp.map.in_elem_bytes, inp.map.acc_bytes, rec.map.acc_bytes) == (2, 8, 8)
    # ws: input GEMM M=3, K=4, N=20: 3 folds of 3 + 22; recurrent M=1, K=5, N=20: 3 steps of 3 folds of 1 + 22
    assert (inp.timing.array_cycles, rec.timing.array_cycles) == (2 * 3 * 25, 2 * 3 * 3 * 23)
    np.testing.assert_array_equal(res.values[m.graph.outputs[0]], m.run(x[0]).values[m.graph.outputs[0]])
