"""The optional native requantization (qsim/native.py, codegen/templates/qk_host.c): the same
bits as qsim.fixedpoint.requantize, and the same model outputs with it on or off.

qsim.fixedpoint.requantize is itself held to a hand-derived golden on these edge rows by
tests/test_edges.py; here the compiled block function (qkernels.c's qk_requantize, built for the
host by gcc, both roundings) must equal it on: every edge row, qk_requantize's fast-form rows
(blocks whose channels all take the fast form run a hoisted branch-free loop), every shift in
SHIFT_RANGE per channel over many rows, and each accumulator dtype.  Then whole shared models,
batched, give identical tensors with QSIM_NATIVE unset and QSIM_NATIVE=0, and the test checks
the native code really ran in the first case and really did not in the second.

The native DEPTHWISE_CONV_2D (qsim.native.depthwise_runner, forced on every layer size) equals the
numpy kernel (QSIM_NATIVE=0) on a table of geometries, TFLite Micro and LiteRT on random layers,
and hand-summed accumulators requantized by fixedpoint on extreme tables.
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


def _every_shift_tables(rng, rounding: str) -> tuple[np.ndarray, np.ndarray]:
    """(shift, M0), one channel per shift of SHIFT_RANGE[rounding], with M0's extremes (and, double
    rounding, negative multipliers: qk_requantize's general form)."""
    lo_s, hi_s = fp.SHIFT_RANGE[rounding]
    shift = np.arange(lo_s, hi_s + 1)
    m0 = rng.integers(0, 1 << 31, shift.size)
    m0[:4] = (INT32_MAX, 1 << 30, 0, 1)
    if rounding == "double":
        m0[5:7] = (INT32_MIN, -12345)
    return shift, m0


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_native_every_shift_per_channel_many_rows_every_dtype(rounding):
    rng = np.random.default_rng(7)
    shift, m0 = _every_shift_tables(rng, rounding)
    c = shift.size
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
    """Every requant plan's native function and every native depthwise runner (None: never asked,
    False: unavailable) in the graph."""
    got = _native_depthwise_states(prepared)
    for op in prepared.ops:
        rq = getattr(op.params, "requant", None)
        if not isinstance(rq, RequantParams):
            continue
        got.append(rq._native)
        for plan in (rq._plan, (rq._folded or (None, None))[1]):
            if isinstance(plan, fp.DoubleRequantPlan):
                got.append(plan._native)
    return got


def _native_depthwise_states(prepared) -> list:
    """Every depthwise layer's native runner (False: unavailable; None: never asked)."""
    return [op.params.native_dw[2] if op.params.native_dw else None for op in prepared.ops
            if op.op.opcode == "DEPTHWISE_CONV_2D"]


def _batched_tensors(name: str, profile: str, xs) -> tuple[dict, list, list]:
    """(every tensor, the native requantization states, the native depthwise states) of a batched run."""
    prepared = prepare_graph(load(shared_model(f"{name}.tflite")), profile)
    return prepared.run(xs, keep_all=True), _native_states(prepared), _native_depthwise_states(prepared)


@pytest.mark.parametrize("name,profile", [("vww_96_int8", "litert"), ("pretrainedResnet_quant", "litert"),
                                          ("vww_96_int8", "single")])
def test_models_same_tensors_with_native_on_and_off(name, profile, monkeypatch):
    g = load(shared_model(f"{name}.tflite"))
    rng = np.random.default_rng(3)
    xs = [rng.integers(-128, 128, (8,) + tuple(g.tensors[t].shape[1:])).astype(g.tensors[t].dtype)
          for t in g.inputs]
    on, on_states, on_dw = _batched_tensors(name, profile, xs)
    monkeypatch.setenv("QSIM_NATIVE", "0")
    off, off_states, _ = _batched_tensors(name, profile, xs)
    assert any(callable(s) for s in on_states), "the native requantization never ran"
    if name == "vww_96_int8":  # its 16- to 256-channel depthwise layers run in C at batch 8
        assert sum(callable(s) for s in on_dw) >= 10, on_dw
    assert not any(callable(s) for s in off_states), "QSIM_NATIVE=0 still ran the native requantization"
    assert set(on) == set(off)
    for t in on:
        np.testing.assert_array_equal(on[t], off[t], err_msg=f"{name} tensor {g.tensors[t].name}")


# ------------------------------------------------------------------ native DEPTHWISE_CONV_2D

# (name, depthwise_model params): strides 1-2, SAME/VALID, depth multiplier 1 and > 1 (one input
# channel too), dilation, 3x3 and other filters, per-tensor and per-channel, every fused activation,
# left shifts (gain 3000), batches 1 and N.
_DW_BASE = dict(n=1, h=9, w=8, cin=16, mult=1, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1, padding="SAME",
                per_channel=True, bias=True, act="NONE", gain=1)
DW_CASES = {
    "3x3 s1 same per-channel": {},
    "3x3 s2 valid per-tensor relu6 batch": dict(sh=2, sw=2, padding="VALID", per_channel=False, act="RELU6", n=5),
    "3x3 s2x1 same relu": dict(sh=2, act="RELU", n=3),
    "5x3 s1 valid no bias": dict(kh=5, kw=3, padding="VALID", bias=False),
    "1x4 s1x2 same n1_to_1": dict(kh=1, kw=4, sw=2, act="RELU_N1_TO_1", n=2),
    "3x3 dilation 2 same": dict(dh=2, dw=2, h=11, w=10, n=2),
    "2x3 dilation 3x1 s2 valid": dict(kh=2, kw=3, dh=3, sh=2, h=12, w=9, padding="VALID"),
    "3x3 x2 multiplier relu6 batch": dict(cin=6, mult=2, act="RELU6", n=4),
    "4x4 x3 multiplier s2 same": dict(cin=5, mult=3, kh=4, kw=4, sh=2, sw=2, h=11, w=11),
    "one input channel x8": dict(cin=1, mult=8, sh=2, sw=2, n=3),
    "odd channels left shift": dict(cin=19, gain=3000, n=2),
    "3x3 s3 same per-tensor left shift": dict(sh=3, sw=3, h=13, w=10, per_channel=False, gain=3000, n=2),
}


def _force_native_depthwise(monkeypatch):
    from qsim.kernels import conv
    monkeypatch.setattr(conv, "NATIVE_DEPTHWISE_MIN_VALUES", 0)
    monkeypatch.setattr(conv, "NATIVE_DEPTHWISE_MIN_CHANNELS", 0)


def _dw_run(blob: bytes, profile: str, x: np.ndarray):
    """(output, whether the native depthwise ran) of a one-op depthwise model."""
    from qsim.loader import load_bytes
    g = load_bytes(blob)
    prepared = prepare_graph(g, profile)
    out = prepared.run([x], keep_all=False)[g.outputs[0]]
    params = prepared.ops[0].params
    return out, bool(params.native_dw and params.native_dw[2])


@pytest.mark.parametrize("name", DW_CASES)
def test_native_depthwise_equals_numpy_and_tflm(name, monkeypatch):
    """Native depthwise (forced on every size) == the numpy kernel (QSIM_NATIVE=0) bit for bit,
    both roundings, and == TFLite Micro itself (the reference interpreter's output)."""
    from test_kernels_gemm import depthwise_model, reference_outputs
    _force_native_depthwise(monkeypatch)
    p = dict(_DW_BASE, **DW_CASES[name])
    rng = np.random.default_rng(abs(hash(name)) % (1 << 32))
    blob = depthwise_model(p, rng)
    x = rng.integers(-128, 128, (p["n"], p["h"], p["w"], p["cin"])).astype(np.int8)
    for profile in ("tflm", "single"):
        on, ran = _dw_run(blob, profile, x)
        assert ran, f"{name} {profile}: the native depthwise did not run"
        monkeypatch.setenv("QSIM_NATIVE", "0")
        off, ran_off = _dw_run(blob, profile, x)
        monkeypatch.delenv("QSIM_NATIVE")
        assert not ran_off, "QSIM_NATIVE=0 still ran the native depthwise"
        np.testing.assert_array_equal(on, off, err_msg=f"{name} {profile}")
        if profile == "tflm":
            from qsim.loader import load_bytes
            g = load_bytes(blob)
            y = g.operators[0].outputs[0]
            ref = np.asarray(reference_outputs(blob, "tflm", x, [y])[y]).reshape(on.shape)
            np.testing.assert_array_equal(on, ref, err_msg=f"{name}: native vs TFLite Micro")


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_native_depthwise_extreme_tables(rounding):
    """depthwise_runner with every shift of SHIFT_RANGE, extreme M0 (0, 1, 2^30, INT32_MAX, negative) and bias
    (int32 ends: acc + bias wraps) == hand-summed int64 accumulators requantized by fixedpoint."""
    rng = np.random.default_rng(11)
    shift, m0 = _every_shift_tables(rng, rounding)
    c = shift.size
    bias = rng.integers(-3000, 3000, c)
    bias[4:8] = (INT32_MIN, INT32_MAX, INT32_MAX - 100, INT32_MIN + 100)
    n, h, wd, kh, kw, zp = 3, 7, 6, 3, 2, -37
    w = rng.integers(-128, 128, (kh, kw, c))
    x = rng.integers(-128, 128, (n, h, wd, c)).astype(np.int8)
    # stride 2, SAME-like padding 1/0, dilation (1, 2): out 4 x 3
    sh, sw, dh, dwl, ph, pw = 2, 2, 1, 2, 1, 0
    oh, ow = 4, 3
    xp = np.zeros((n, h + 2 * ph + kh, wd + 2 * pw + kw * dwl, c), np.int64)
    xp[:, ph:ph + h, pw:pw + wd] = x.astype(np.int64) - zp  # taps outside the image: 0 (TFLM skips them)
    acc = np.zeros((n, oh, ow, c), np.int64)
    for i in range(kh):
        for j in range(kw):
            acc += xp[:, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dwl:j * dwl + (ow - 1) * sw + 1:sw] * w[i, j]
    for zp_out, lo, hi in ((0, -128, 127), (-7, -128, 127), (5, 5, 30)):
        want = fp.requantize(acc, bias, m0, shift, zp_out, lo, hi, rounding)
        run = native.depthwise_runner(w, bias, m0, shift, zp_out, lo, hi, zp,
                                      (h, wd, c, oh, ow, 1, sh, sw, dh, dwl, ph, pw), rounding,
                                      acc_bound=int(np.abs(w).sum(axis=(0, 1)).max()) * 256)
        assert run is not None
        np.testing.assert_array_equal(run(x), want, err_msg=f"{rounding} {zp_out} {lo} {hi}")
        np.testing.assert_array_equal(run(x[1:2]), want[1:2])


def test_native_depthwise_refuses_what_it_does_not_take(monkeypatch):
    ok = dict(filter_values=np.ones((3, 3, 4)), bias=[0] * 4, m0=[1 << 30] * 4, shift=[-3] * 4, output_zero_point=0,
              act_min=-128, act_max=127, input_zero_point=3, geometry=(5, 5, 4, 5, 5, 1, 1, 1, 1, 1, 1, 1),
              acc_bound=10000)
    assert native.depthwise_runner(**ok) is not None
    for bad in (dict(filter_values=np.full((3, 3, 4), 200)), dict(input_zero_point=128), dict(acc_bound=None),
                dict(acc_bound=1 << 31), dict(shift=[-3, -3, -3, 40]), dict(output_zero_point=300),
                dict(geometry=(5, 5, 3, 5, 5, 1, 1, 1, 1, 1, 1, 1)), dict(bias=[0] * 3)):
        assert native.depthwise_runner(**dict(ok, **bad)) is None, bad
    monkeypatch.setenv("QSIM_NATIVE", "0")
    assert native.depthwise_runner(**ok) is None


def test_native_depthwise_random_layers_match_references(monkeypatch):
    """Random depthwise layers (test_kernels_gemm's strategy: any window, stride, dilation, padding,
    depth multiplier, activation, left shifts, batch 1-2) with the native depthwise forced on every
    size == LiteRT BUILTIN_REF and TFLite Micro, each under its own profile."""
    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis import strategies as st
    from test_kernels_gemm import assert_bitexact, depthwise_model, depthwise_params
    _force_native_depthwise(monkeypatch)

    @seed(20261130)
    @settings(derandomize=True, max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(depthwise_params(), st.integers(0, 2**32 - 1))
    def check(p, s):
        rng = np.random.default_rng(s)
        assert_bitexact(depthwise_model(p, rng), rng)
    check()


# ------------------------------------------------------------------ staged runners: SVDF lookups, FC GEMM

def _svdf_lookup_want(x, wf, shift, table, y_table, width, rows) -> np.ndarray:
    """numpy's table path (qsim/kernels/svdf.py eval_svdf): float32 GEMM, float32 index sum cast to
    intp, take(mode="clip"), per-(row, filter) offsets, take."""
    n, filters = x.shape[0], wf.shape[1]
    v = np.dot(x.astype(np.float32), wf)
    index = np.add(v, shift, out=np.empty(v.shape, np.intp), casting="unsafe")
    offsets = np.arange(rows * filters, dtype=np.int64).reshape(rows, filters) * width
    return y_table.take(np.add(table.take(index, mode="clip"), offsets))


@pytest.mark.parametrize("table_dtype,width", [(np.uint8, 256), (np.uint16, 3000)])
@pytest.mark.parametrize("rows", [1, 3])
def test_svdf_lookup_runner_equals_numpy_take_with_clip(table_dtype, width, rows):
    """qk_host_svdf_lookup == numpy's lookups, including indices clipped at both ends of the window,
    one start-state row shared by every sample or one per sample; batch sizes cycling through
    more than STAGED_SIZES staging buffers never alter an array returned before."""
    rng = np.random.default_rng(11)
    n_in, filters, length = 9, 7, 5000
    wf = rng.integers(-127, 128, (n_in, filters)).astype(np.float32)
    shift = rng.integers(-1000, length + 1000, filters).astype(np.float32)  # some sums fall outside [0, length)
    table = np.sort(rng.integers(0, width, length)).astype(table_dtype)
    y_table = rng.integers(-128, 128, rows * filters * width).astype(np.int8)
    run = native.svdf_lookup_runner(wf, shift, table, y_table, width, rows)
    assert run is not None
    kept = []
    sizes = [rows] if rows > 1 else [1, 64, 3, 5, 2, 7, 64, 1]
    for k, n in enumerate(sizes * 2):
        x = rng.integers(-128, 128, (n, n_in)).astype(np.int8)
        x[0] = 127 * np.sign(wf[:, k % filters])  # the largest sum of one filter: past the window's end
        want = _svdf_lookup_want(x, wf, shift, table, y_table, width, rows)
        v = x.astype(np.float32) @ wf + shift
        clipped = (v < 0).any(), (v >= length).any()
        got = run(x)
        np.testing.assert_array_equal(got, want, err_msg=f"n={n} clipped low/high {clipped}")
        kept.append((got, want))
    for got, want in kept:
        np.testing.assert_array_equal(got, want)
    if rows > 1:
        assert run(np.zeros((rows + 1, n_in), np.int8)) is None  # a batch that is not the state's rows
    assert native.svdf_lookup_runner(wf, shift, table.astype(np.int64), y_table, width, rows) is None
    assert native.svdf_lookup_runner(wf.astype(np.float64), shift, table, y_table, width, rows) is None
    big = np.zeros((native.STAGED_MAX_VALUES // n_in + 1, n_in), np.int8)
    assert rows > 1 or run(big) is None  # over the staging limit: the caller's numpy path


def test_svdf_lookup_runner_clips_like_numpy_at_both_ends():
    """Every index below 0 takes the window's first entry and every one past it the last, as
    numpy's take(mode="clip") does."""
    wf = np.array([[1.0, -1.0]], np.float32)
    shift = np.array([2.0, 2.0], np.float32)
    table = np.array([0, 1, 2, 3], np.uint8)
    y_table = np.arange(8, dtype=np.int8) * 3  # filter f, index j -> 3 * (4f + j)
    run = native.svdf_lookup_runner(wf, shift, table, y_table, 4, 1)
    x = np.array([[-128], [-3], [-2], [-1], [0], [1], [2], [127]], np.int8)
    got = run(x)
    want = _svdf_lookup_want(x, wf, shift, table, y_table, 4, 1)
    np.testing.assert_array_equal(got, want)
    # hand-derived: v = x + 2 (filter 0) and -x + 2 (filter 1), clipped to [0, 3]
    hand = np.stack([np.clip(x[:, 0].astype(int) + 2, 0, 3) * 3, (4 + np.clip(-x[:, 0].astype(int) + 2, 0, 3)) * 3],
                    axis=1)
    np.testing.assert_array_equal(got, hand)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_gemm_requant_runner_equals_fixedpoint(rounding):
    """gemm_requant_runner(x) == fixedpoint.requantize(x @ w) (int64 sums) for per-channel tables over
    every shift of SHIFT_RANGE and one shared table; contiguous or strided x; batch sizes cycling
    through more than STAGED_SIZES buffers; larger than STAGED_MAX_VALUES: None."""
    rng = np.random.default_rng(5)
    shift, m0 = _every_shift_tables(rng, rounding)
    out_units, in_units = shift.size, 40
    w = rng.integers(-127, 128, (in_units, out_units))
    w[:, 0] = 127  # the largest sums
    bias = rng.integers(-(1 << 20), 1 << 20, out_units)
    bound = int(128 * np.abs(w).sum(axis=0).max())
    for tables in ((bias, m0, shift), (17, 1 << 30, -9)):
        for zp, lo, hi in ((0, -128, 127), (-7, -128, 127), (5, 5, 30)):
            requant = native.block_requantizer(*tables, zp, lo, hi, rounding, acc_bound=bound)
            run = native.gemm_requant_runner(w.astype(np.float32), requant)
            assert run is not None
            kept = []
            for n in (1, 64, 3, 2, 5, 9, 1):
                x = rng.integers(-128, 128, (n, 2 * in_units)).astype(np.int8)[:, ::2]  # strided
                x[0] = 127 * np.sign(w[:, 0])
                want = fp.requantize(x.astype(np.int64) @ w, *tables, zp, lo, hi, rounding)
                got = run(x)
                np.testing.assert_array_equal(got, want, err_msg=f"{rounding} n={n} zp={zp}")
                kept.append((got, want))
            for got, want in kept:
                np.testing.assert_array_equal(got, want)
            assert run(np.zeros((native.STAGED_MAX_VALUES // in_units + 1, in_units), np.int8)) is None
    unbounded = native.block_requantizer(bias, m0, shift, 0, -128, 127, rounding)  # takes no float sums
    assert native.gemm_requant_runner(w.astype(np.float32), unbounded) is None


def test_staged_runners_from_threads():
    """Two threads on one staged runner: each call's result is its own input's."""
    import threading
    rng = np.random.default_rng(9)
    w = rng.integers(-127, 128, (16, 8))
    run = native.gemm_requant_runner(w.astype(np.float32),
                                     native.block_requantizer(0, 1 << 30, -10, 0, -128, 127, acc_bound=1 << 20))
    errors = []

    def work(seed):
        r = np.random.default_rng(seed)
        for _ in range(300):
            x = r.integers(-128, 128, (int(r.integers(1, 6)), 16)).astype(np.int8)
            if not np.array_equal(run(x), fp.requantize(x.astype(np.int64) @ w, 0, 1 << 30, -10, 0, -128, 127)):
                errors.append(seed)
    threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _svdf_runners(prepared) -> list:
    """Each SVDF layer's native lookup runner (None: none built)."""
    return [op.params.kept_cache[2][2] if op.params.kept_cache and op.params.kept_cache[2] else None
            for op in prepared.ops if op.op.opcode == "SVDF"]


def test_keyword_model_same_tensors_with_native_on_and_off(monkeypatch):
    """TFLM's keyword benchmark (7 SVDF layers, 5 FULLY_CONNECTED), batched: every tensor identical
    with the staged native runners and with QSIM_NATIVE=0 (numpy), and both really ran."""
    g = load(shared_model("keyword_scrambled_8bit.tflite"))
    rng = np.random.default_rng(4)
    xs = [rng.integers(-32768, 32768, (16, 96)).astype(np.int16)]
    runs = []
    real = native.gemm_requant_runner

    def counting(*a):
        got = real(*a)
        runs.append(got)
        return got
    monkeypatch.setattr(native, "gemm_requant_runner", counting)
    on = prepare_graph(g, "tflm")
    on_tensors = on.run(xs, keep_all=True)
    assert all(callable(r) for r in _svdf_runners(on)) and len(_svdf_runners(on)) == 7
    assert len(runs) == 5 and all(callable(r) for r in runs)  # every FULLY_CONNECTED staged
    monkeypatch.setenv("QSIM_NATIVE", "0")
    runs.clear()
    off = prepare_graph(g, "tflm")
    off_tensors = off.run(xs, keep_all=True)
    assert not any(_svdf_runners(off)) and not any(runs)
    assert set(on_tensors) == set(off_tensors)
    for t in on_tensors:
        np.testing.assert_array_equal(on_tensors[t], off_tensors[t], err_msg=g.tensors[t].name)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_svdf_four_lane_mbqm_equals_fixedpoint_on_edges(rounding):
    """qkernels.c's qk_mbqm_right2_x4 (qk_svdf's SSE2 path: MBQM through an unsigned 32x32->64
    multiply and a sign correction) == fixedpoint.multiply_by_quantized_multiplier for every shift
    it takes (QK_FAST_SHIFT = -2 down to SHIFT_RANGE's end), the edge rows' accumulators and
    multipliers, int32's ends and the rounding ties of each shift."""
    import ctypes
    import platform
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("qk_mbqm_right2_x4 is the x86-64 (SSE2) path")
    f = ctypes.CDLL(str(native._build(rounding))).qk_host_mbqm_x4
    f.restype = None
    f.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p]
    rows = np.concatenate(list(edge_rows(rounding).values()))
    rng = np.random.default_rng(13)
    xs = np.concatenate([fp.wrap_int32(rows[:, 0]), [INT32_MIN, INT32_MAX, INT32_MIN + 1, -1, 0, 1],
                         rng.integers(INT32_MIN, INT32_MAX, 200, endpoint=True)]).astype(np.int64)
    m0s = np.unique(np.concatenate([rows[:, 2][(rows[:, 2] >= 0) & (rows[:, 2] <= INT32_MAX)],
                                    [0, 1, 1 << 30, INT32_MAX, 1518500250]]))
    checked = 0
    for shift in range(fp.SHIFT_RANGE[rounding][0], -1):
        for m0 in m0s:
            ties = ((np.arange(-6, 6) * 2 + 1) * (2.0 ** (30 - shift)) / max(int(m0), 1)).round()
            x = np.concatenate([xs, np.clip(ties, INT32_MIN, INT32_MAX)]).astype(np.int32)
            x = np.concatenate([x, np.zeros(-x.size % 4, np.int32)])
            out = np.empty_like(x)
            f(x.ctypes.data, x.size, int(m0), shift, out.ctypes.data)
            want = fp.multiply_by_quantized_multiplier(x.astype(np.int64), int(m0), shift, rounding)
            np.testing.assert_array_equal(out, want, err_msg=f"{rounding} shift {shift} M0 {m0}")
            checked += x.size
    assert checked > 50_000
