"""The optional native requantization (qsim/native.py, codegen/templates/qk_host.c): the same
bits as qsim.fixedpoint.requantize, and the same model outputs with it on or off.

qsim.fixedpoint.requantize is itself held to a hand-derived golden on these edge rows by
tests/test_edges.py; here the compiled block function (qkernels.c's qk_requantize, built for the
host by gcc, both roundings) must equal it on: every edge row, qk_requantize's fast-form rows
(blocks whose channels all take the fast form run a hoisted branch-free loop), every shift in
SHIFT_RANGE per channel over many rows, and each accumulator dtype.  Then whole shared models,
batched, give identical tensors with QSIM_NATIVE unset and QSIM_NATIVE=0, and the test checks
the native code really ran in the first case and really did not in the second.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_model
from qsim import fixedpoint as fp
from qsim import native
from qsim.hdl.beats import edge_rows
from qsim.interpreter import prepare_graph
from qsim.kernels import RequantParams
from qsim.loader import load
from test_codegen import need_tool
from test_edges import fast_path_rows

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ROUNDINGS = ("double", "single")


@pytest.fixture(autouse=True)
def _native_on(monkeypatch, tmp_path_factory):
    need_tool("gcc")
    monkeypatch.delenv("QSIM_NATIVE", raising=False)
    monkeypatch.setenv("QSIM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "qsim_cache"))


def _int8_groups(rows: np.ndarray):
    """Rows (acc, bias, M0, shift, zp, lo, hi) grouped by their int8 (zp, lo, hi)."""
    keep = (rows[:, 4] >= -128) & (rows[:, 4] <= 127) & (rows[:, 5] >= -128) & (rows[:, 6] <= 127)
    rows = rows[keep]
    for key in sorted({tuple(r) for r in rows[:, 4:].tolist()}):
        yield key, rows[np.all(rows[:, 4:] == key, axis=1)]


def _as_channels(rows: np.ndarray, rounding: str) -> tuple[np.ndarray, np.ndarray]:
    """One block row whose channel c is row c (its own bias, M0, shift): native vs fixedpoint."""
    (zp, lo, hi) = rows[0, 4:].tolist()
    acc, bias, m0, shift = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    f = native.block_requantizer(bias, m0, shift, zp, lo, hi, rounding)
    assert f is not None
    want = fp.requantize(acc, bias, m0, shift, zp, lo, hi, rounding)
    got_64 = f(acc[None, :].astype(np.int64))[0]
    got_32 = f(acc[None, :].astype(np.int32))[0]
    np.testing.assert_array_equal(got_64, got_32)
    return got_64, want


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_native_equals_fixedpoint_on_every_edge_row(rounding):
    sources = dict(edge_rows(rounding), fast_path=fast_path_rows(rounding))
    checked = fast_blocks = 0
    for name, rows in sources.items():
        for key, group in _int8_groups(np.asarray(rows, np.int64)):
            got, want = _as_channels(group, rounding)
            bad = np.flatnonzero(got != want)
            assert bad.size == 0, f"{name} {rounding} zp/lo/hi {key}: {bad.size} rows differ, first " \
                                  f"{group[bad[0]].tolist()}: native {got[bad[0]]}, fixedpoint {want[bad[0]]}"
            checked += len(group)
            fast_blocks += bool(np.all((group[:, 2] >= 0) & (group[:, 3] <= -2)))
    assert checked > 3000 and fast_blocks >= 3  # the hoisted fast loop ran on whole blocks too


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_native_every_shift_per_channel_many_rows_every_dtype(rounding):
    rng = np.random.default_rng(7)
    lo_s, hi_s = fp.SHIFT_RANGE[rounding]
    shift = np.arange(lo_s, hi_s + 1)
    c = shift.size
    m0 = rng.integers(0, 1 << 31, c)
    m0[:4] = (INT32_MAX, 1 << 30, 0, 1)
    if rounding == "double":
        m0[5:7] = (INT32_MIN, -12345)  # negative multipliers: qk_requantize's general form
    bias = rng.integers(INT32_MIN, INT32_MAX, c, endpoint=True)
    bias[::3] = 0
    acc = rng.integers(INT32_MIN, INT32_MAX, (301, c), endpoint=True)  # rows left over after k-row groups
    acc[:20] = rng.integers(-300, 300, (20, c))
    acc[20:24] = np.array([INT32_MIN, INT32_MAX, -1, 0])[:, None]
    # ties of the final rounding for the right shifts: x * M0 / 2^(31+e) at k + 1/2
    e = np.maximum(-shift, 0)
    for k, row in enumerate(range(30, 40)):
        target = ((k - 5) * 2 + 1) * (2.0 ** (30 + e))
        acc[row] = np.clip(np.round(target / np.maximum(m0, 1)), INT32_MIN, INT32_MAX).astype(np.int64) - bias
    acc = fp.wrap_int32(acc)
    for zp, lo, hi in ((0, -128, 127), (-7, -128, 127), (5, 5, 30)):
        want = fp.requantize(acc, bias, m0, shift, zp, lo, hi, rounding)
        f = native.block_requantizer(bias, m0, shift, zp, lo, hi, rounding, acc_bound=INT32_MAX)
        for dtype in (np.int64, np.int32, np.float64):
            np.testing.assert_array_equal(f(acc.astype(dtype)), want, err_msg=f"{rounding} {dtype} {zp}")
        small = acc[:20]  # float32 holds these exactly
        np.testing.assert_array_equal(f(small.astype(np.float32)), want[:20])
        # an int64 accumulator beyond int32 wraps like fixedpoint's acc + bias
        wide = acc + (np.int64(1) << 33) * rng.integers(-3, 4, acc.shape)
        np.testing.assert_array_equal(f(wide), fp.requantize(wide, bias, m0, shift, zp, lo, hi, rounding))
    # wider than qk_host.c's tables (QK_HOST_MAX_CHANNELS = 2048): value by value, same bits
    wide_c = np.tile(np.arange(c), 40)[:2100]
    f = native.block_requantizer(bias[wide_c], m0[wide_c], shift[wide_c], -7, -128, 127, rounding)
    np.testing.assert_array_equal(f(acc[:3, wide_c]),
                                  fp.requantize(acc[:3, wide_c], bias[wide_c], m0[wide_c], shift[wide_c], -7, -128,
                                                127, rounding))
    # one table for every channel (scalars): any block width
    g = native.block_requantizer(17, 1 << 30, -3, 1, -128, 127, rounding)
    np.testing.assert_array_equal(g(acc[:, :7]), fp.requantize(acc[:, :7], 17, 1 << 30, -3, 1, -128, 127, rounding))


def test_native_refuses_what_it_does_not_implement(monkeypatch):
    ok = dict(bias=[0, 1], m0=[1 << 30, 1 << 30], shift=[-3, -3], output_zero_point=0, act_min=-128, act_max=127)
    assert native.available("double") and native.block_requantizer(**ok) is not None
    for bad in (dict(output_zero_point=200), dict(act_min=-32768), dict(shift=[-3, 32]), dict(m0=[1 << 31, 1]),
                dict(shift=[-32, 0])):
        assert native.block_requantizer(**dict(ok, **bad)) is None, bad
    assert native.block_requantizer(**dict(ok, shift=[-3, 31]), rounding="single") is None  # single: <= 30
    monkeypatch.setenv("QSIM_NATIVE", "0")
    assert not native.available("double") and native.block_requantizer(**ok) is None


# ------------------------------------------------------------------ whole models: native on == off

def _native_states(prepared) -> list:
    """Every requant plan's native function (None: never asked, False: unavailable) in the graph."""
    got = []
    for op in prepared.ops:
        rq = getattr(op.params, "requant", None)
        if not isinstance(rq, RequantParams):
            continue
        got.append(rq._native)
        for plan in (rq._plan, (rq._folded or (None, None))[1]):
            if isinstance(plan, fp.DoubleRequantPlan):
                got.append(plan._native)
    return got


def _batched_tensors(name: str, profile: str, xs) -> tuple[dict, list]:
    prepared = prepare_graph(load(shared_model(f"{name}.tflite")), profile)
    return prepared.run(xs, keep_all=True), _native_states(prepared)


@pytest.mark.parametrize("name,profile", [("vww_96_int8", "litert"), ("pretrainedResnet_quant", "litert"),
                                          ("vww_96_int8", "single")])
def test_models_same_tensors_with_native_on_and_off(name, profile, monkeypatch):
    g = load(shared_model(f"{name}.tflite"))
    rng = np.random.default_rng(3)
    xs = [rng.integers(-128, 128, (8,) + tuple(g.tensors[t].shape[1:])).astype(g.tensors[t].dtype)
          for t in g.inputs]
    on, on_states = _batched_tensors(name, profile, xs)
    monkeypatch.setenv("QSIM_NATIVE", "0")
    off, off_states = _batched_tensors(name, profile, xs)
    assert any(callable(s) for s in on_states), "the native requantization never ran"
    assert not any(callable(s) for s in off_states), "QSIM_NATIVE=0 still ran the native requantization"
    assert set(on) == set(off)
    for t in on:
        np.testing.assert_array_equal(on[t], off[t], err_msg=f"{name} tensor {g.tensors[t].name}")
