"""The native engine of Model.run (qsim/native_model.py): the model's generated C compiled with
the host gcc and called through ctypes.

Goldens: qsim's Python engine (itself tested bit-exact against TFLite Micro and LiteRT in
tests/test_reference_models.py and friends), and TFLite Micro directly on trained_lstm_int8.
Every comparison is bit for bit, on seeded random inputs, one sample and N > 1 distinct
samples in one call (the C resets its LSTM/SVDF state before each sample, as the Python engine
starts each sample from the reset state: a missing reset would carry state into sample 2).
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import qsim
from qsim import api, builder, ir
from qsim.errors import QsimError

from conftest import shared_model

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="the native engine needs gcc")

REAL = ["trained_lstm_int8", "keyword_scrambled_8bit", "ad01_int8", "hello_world_int8", "seanet/conv/conv13"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """One build cache for the whole session (a real gcc build per model, reused by every test)."""
    monkeypatch.setenv("QSIM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "qsim_native_cache"))
    monkeypatch.delenv("QSIM_NATIVE", raising=False)


def _same(a: qsim.RunResult, b: qsim.RunResult) -> None:
    assert a.engine == "native" and b.engine == "python"
    assert list(a.outputs) == list(b.outputs)
    for k in b.outputs:
        assert a.outputs[k].dtype == b.outputs[k].dtype and a.outputs[k].shape == b.outputs[k].shape, k
        np.testing.assert_array_equal(a.outputs[k], b.outputs[k], err_msg=k)


def _inputs(m: qsim.Model, n: int, seed: int, profile: str, distinct: bool = True) -> list:
    """n seeded samples: uniform over each input's range, or (when those saturate the outputs to
    one value) over narrower ranges around 0, the first whose outputs differ between samples.
    ``distinct=False``: a model whose outputs never differ (keyword_scrambled_8bit: scrambled
    weights saturate every layer) gets the uniform samples."""
    rng = np.random.default_rng(seed)
    candidates = [m.random_inputs(n, seed=seed)]
    for r in (1024, 64, 8):
        candidates.append([[np.clip(rng.integers(-r, r + 1, t.shape), *_bounds(t.dtype)).astype(t.dtype)
                            for t in m.inputs] for _ in range(n)])
    for xs in candidates:
        outs = m.run(xs, profile=profile, engine="python").outputs.values()
        if any(len(np.unique(o.reshape(n, -1), axis=0)) > 1 for o in outs):
            return xs
    if not distinct:
        return candidates[0]
    pytest.fail(f"{m.source}: no input set gives distinct outputs")


def _bounds(dtype):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    return max(info.min, -1e6), min(info.max, 1e6)


def _check_both_ways(m: qsim.Model, n: int = 5, profile: str = "tflm", seed: int = 7) -> None:
    xs = _inputs(m, n, seed, profile, distinct="keyword_scrambled" not in m.source)
    batched_py = m.run(xs, profile=profile, engine="python")
    _same(m.run(xs, profile=profile, engine="native"), batched_py)
    x1 = {t.key: a for t, a in zip(m.inputs, xs[1])}  # one sample, the model's own shapes
    one = m.run(x1, profile=profile, engine="native")
    _same(one, m.run(x1, profile=profile, engine="python"))
    assert one.batch is None and batched_py.batch == n


@pytest.mark.parametrize("name", REAL)
def test_real_models_native_equals_python(name):
    _check_both_ways(qsim.load(shared_model(f"{name}.tflite")))


@pytest.mark.parametrize("name", ["trained_lstm_int8", "keyword_scrambled_8bit"])
def test_single_rounding_profile(name):
    _check_both_ways(qsim.load(shared_model(f"{name}.tflite")), n=3, profile="single")


def _two_in_two_out() -> bytes:
    """ADD of two int8 inputs -> 'sum', MAX_POOL_2D of it -> 'pool'; both graph outputs ('pool' first)."""
    b = builder.ModelBuilder(description="native engine: two inputs, two outputs")
    x = b.add_input("x", (1, 4, 4, 3), np.int8, scale=0.05, zero_point=-3)
    y = b.add_input("y", (1, 4, 4, 3), np.int8, scale=0.04, zero_point=5)
    s = b.add_tensor("sum", (1, 4, 4, 3), np.int8, scale=0.08, zero_point=1)
    b.add_op("ADD", [x, y], [s])
    p = b.add_tensor("pool", (1, 2, 2, 3), np.int8, scale=0.08, zero_point=1)
    b.add_op("MAX_POOL_2D", [s], [p], ir.Pool2DOptions(padding="VALID", stride_h=2, stride_w=2, filter_h=2, filter_w=2))
    b.mark_output(p)
    b.mark_output(s)
    return b.build()


@pytest.mark.parametrize("make", [
    _two_in_two_out,
    lambda: builder.lstm_int8_model(n_batch=1, n_time=6, n_input=3, n_cell=5, seed=3),
    lambda: builder.lstm_int8_model(n_batch=2, n_time=4, n_input=3, n_cell=4, seed=1),  # input dim 0 = 2
    lambda: builder.uint8_model(["CONV_2D", "AVERAGE_POOL_2D"], seed=2),  # uint8 I/O, profile litert
], ids=["add_pool_2in_2out", "lstm", "lstm_batch2", "uint8_conv"])
def test_builder_models_native_equals_python(make):
    m = qsim.load(make())
    profile = "litert" if "uint8" in m.graph.description else "tflm"
    _check_both_ways(m, n=4, profile=profile)


def test_native_against_tflm_reference():
    """The native engine against TFLite Micro itself (not via qsim's Python kernels)."""
    from conftest import require_module
    require_module("tflite_micro", "TFLite Micro reference interpreter")
    from qsim import refrun
    path = shared_model("trained_lstm_int8.tflite")
    m = qsim.load(path)
    runner = refrun.open_in_process("tflm", path.read_bytes())
    samples = m.random_inputs(3, seed=11)
    got = m.run(samples, engine="native")
    out = m.graph.outputs[0]
    for k, s in enumerate(samples):
        theirs = runner.run(s, [out])[out]
        np.testing.assert_array_equal(got.values[out][k], theirs.reshape(got.values[out][k].shape))


def test_auto_picks_native_for_the_lstm_once_hot():
    m = qsim.load(shared_model("trained_lstm_int8.tflite"))
    x = m.random_inputs(1, seed=0)[0]
    engines = [m.run(x).engine for _ in range(api.HOT_RUNS + 1)]
    assert engines[0] == "python" and engines[-1] == "native"
    m2 = qsim.load(shared_model("trained_lstm_int8.tflite"))
    assert m2.native().build_seconds >= 0
    assert m2.run(x).engine == "native"  # built explicitly: auto uses it from the first run


def test_auto_batches_go_to_the_engine_measured_faster():
    """The first batch of a size class runs on both engines (timed); later ones on the faster."""
    m = qsim.load(shared_model("keyword_scrambled_8bit.tflite"))
    m.native()
    xs = m.random_inputs(8, seed=1)
    first = m.run(xs)
    assert first.engine == "native" and list(m._batch_native) == [("tflm", 4)]
    want = "native" if m._batch_native[("tflm", 4)] else "python"
    again = m.run(m.random_inputs(12, seed=2))  # 12: the same size class as 8 (bit_length 4)
    assert again.engine == want
    _same(first, m.run(xs, engine="python"))
    assert m.run(m.random_inputs(1)[0]).engine == "native"


def test_qsim_native_0_keeps_python(monkeypatch):
    m = qsim.load(shared_model("hello_world_int8.tflite"))
    x = m.random_inputs(1)[0]
    m.native()  # built while on: QSIM_NATIVE=0 still wins (read at each run)
    monkeypatch.setenv("QSIM_NATIVE", "0")
    assert all(m.run(x).engine == "python" for _ in range(api.HOT_RUNS + 1))
    with pytest.raises(QsimError, match="QSIM_NATIVE=0"):
        m.run(x, engine="native")
    monkeypatch.setenv("QSIM_NATIVE", "1")
    assert m.run(x).engine == "native"


def test_native_refusals_are_clear():
    m = qsim.load(shared_model("hello_world_int8.tflite"))
    x = m.random_inputs(1)[0]
    with pytest.raises(QsimError, match="keep='outputs'"):
        m.run(x, engine="native", keep="all")
    with pytest.raises(QsimError, match="not 'litert'"):
        m.run(x, engine="native", profile="litert")
    with pytest.raises(QsimError, match="requant variant"):
        m.run(x, engine="native", requant="single")
    with pytest.raises(QsimError, match="engine must be"):
        m.run(x, engine="c")
    assert m.run(x, keep="all").engine == "python"


def test_generator_refusal_is_a_qsim_error_and_auto_stays_python():
    """An int8 TRANSPOSE_CONV runs in qsim but has no C kernel (codegen's C_SUPPORTED has the int16x8
    one only): native refuses with the generator's reason, auto stays on Python."""
    rng = np.random.default_rng(0)
    b = builder.ModelBuilder(description="int8 TRANSPOSE_CONV: no C kernel")
    x = b.add_input("x", (1, 4, 5, 3), np.int8, scale=0.05, zero_point=-3)
    shape = b.add_const("oshape", np.array([1, 7, 9, 2], np.int32))
    w = b.add_const("w", rng.integers(-127, 128, (2, 3, 3, 3)).astype(np.int8), scale=0.01, zero_point=0)
    y = b.add_tensor("y", (1, 7, 9, 2), np.int8, scale=0.05, zero_point=-3)
    b.add_op("TRANSPOSE_CONV", [shape, w, x], [y], ir.TransposeConvOptions("SAME", 2, 2), version=3)
    b.mark_output(y)
    m = qsim.load(b.build())
    x = m.random_inputs(1)[0]
    with pytest.raises(QsimError, match="(?s)C generator refuses.*TRANSPOSE_CONV"):
        m.run(x, engine="native")
    assert all(m.run(x).engine == "python" for _ in range(api.HOT_RUNS + 1))


def test_threads_share_one_library_safely():
    """NAME_invoke is not reentrant (one static arena and state): calls from threads are serialized."""
    from concurrent.futures import ThreadPoolExecutor
    m = qsim.load(builder.lstm_int8_model(n_batch=1, n_time=6, n_input=3, n_cell=5, seed=5))
    xs = _inputs(m, 16, 3, "tflm")
    want = [m.run(x, engine="python").outputs for x in xs]
    twin = qsim.load(m.blob)  # a second Model of the same bytes loads the same library (same static arena)
    assert twin.native().path == m.native().path
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda kx: (m if kx[0] % 2 else twin).run(kx[1], engine="native").outputs,
                            enumerate(xs * 24)))  # unlocked: 5 of 5 runs mismatch
    for k, g in enumerate(got):
        for key in g:
            np.testing.assert_array_equal(g[key], want[k % len(xs)][key])


def test_transpose_conv_output_shape_input_is_checked():
    """SEANet's TRANSPOSE_CONV takes output_shape from a graph input, which the C ignores: a sample
    with another value is refused as the Python engine refuses it (tests/test_int16x8.py), never
    computed into the stored shape."""
    m = qsim.load(shared_model("seanet/transpose_conv/transpose_conv0.tflite"))
    shape_in, x = m.random_inputs(1, seed=3)[0]
    _same(m.run([shape_in, x], engine="native"), m.run([shape_in, x], engine="python"))
    with pytest.raises(QsimError, match=r"output_shape input holds \[1, 3, 24, 64\]"):
        m.run([np.array([1, 3, 24, 64], np.int32), x], engine="native")
    bad = [[shape_in, x], [np.array([1, 3, 24, 64], np.int32), x]]
    with pytest.raises(QsimError, match=r"output_shape input holds"):
        m.run(bad, engine="native")
