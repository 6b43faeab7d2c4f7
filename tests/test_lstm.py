"""UNIDIRECTIONAL_SEQUENCE_LSTM (integer 8x8->16): bit-exact with TFLite Micro (profile tflm) and
LiteRT BUILTIN_REF (profile litert) on the real MNIST LSTM; the two references' differences;
the int16 sigmoid/tanh primitives; state reset per sample; refusals."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qsim import fixedpoint as fp, ir, loader
from qsim.errors import QsimError
from qsim.interpreter import prepare_graph, unsupported_ops
from tests.conftest import require_module, shared_model

MODEL = "trained_lstm_int8.tflite"
LSTM_OUT, LOGITS, PROBS = 23, 25, 26


def _graph():
    return loader.load(shared_model(MODEL))


def _inputs(n, seed=0):
    return np.random.default_rng(seed).integers(-128, 128, (n, 1, 28, 28)).astype(np.int8)


# ----------------------------------------------------------------- primitives (hand-derived checks)

def test_sigmoid_table_is_sigmoid_of_i_over_24():
    t = fp.SIGMOID_TABLE_UINT16
    exact = 65536.0 / (1.0 + np.exp(-np.arange(256) / 24.0))
    assert t[0] == 32768 and t[-1] == 65535
    assert np.all(np.diff(t) >= 0)
    assert np.max(np.abs(t - np.minimum(exact, 65535))) < 1.2


def test_int16_lut_sigmoid_tanh_track_the_math():
    x = np.arange(-32768, 32768, 7)  # Q3.12
    real = x / 4096.0
    sig = fp.logistic_int16_lut(x) / 32768.0
    tanh = fp.tanh_int16_lut(x) / 32768.0
    assert np.max(np.abs(sig - 1 / (1 + np.exp(-real)))) < 2e-4
    assert np.max(np.abs(tanh - np.tanh(real))) < 4e-4
    assert fp.logistic_int16_lut(0) == 16384 and fp.tanh_int16_lut(0) == 0
    # inputs past the table's 255 steps saturate: tanh to -(2**15 - 1), sigmoid to 2**15 - 1
    assert fp.tanh_int16_lut(-32768) == -32767 and fp.logistic_int16_lut(32767, 0, 1) == 32767


def test_gemmlowp_int16_sigmoid_tanh_track_the_math():
    x = np.arange(-32768, 32768, 7)
    for bits_in in (3, 4):
        real = x / 2.0 ** (15 - bits_in)
        sig = fp.fixed_logistic(x, bits_in, 16) / 32768.0
        tanh = fp.fixed_tanh(x, bits_in, 16) / 32768.0
        assert np.max(np.abs(sig - 1 / (1 + np.exp(-real)))) < 5e-4
        assert np.max(np.abs(tanh - np.tanh(real))) < 1e-3
    assert fp.fixed_logistic(0, 3, 16) == 16384 and fp.fixed_tanh(0, 3, 16) == 0


def test_checked_log2():
    assert fp.checked_log2(2.0 ** -12) == (-12, True)
    assert fp.checked_log2(0.0003)[1] is False


# ----------------------------------------------------------------- the real model

@pytest.mark.parametrize("reference", ["tflm", "litert"])
def test_real_model_bit_exact_every_tensor(reference):
    require_module("ai_edge_litert" if reference == "litert" else "tflite_micro", "reference interpreter")
    from qsim import refrun

    path = shared_model(MODEL)
    g = loader.load(path)
    runner = refrun.open_in_process(reference, path.read_bytes())
    pg = prepare_graph(g, reference)
    produced = [t for op in g.operators for t in op.outputs]
    for x in _inputs(3, seed=7):
        ours = pg.run([x])
        theirs = runner.run([x], produced)
        again = runner.run([x], produced)  # the reference resets its state before each sample
        for t in produced:
            np.testing.assert_array_equal(theirs[t], again[t])
            np.testing.assert_array_equal(ours[t], theirs[t], err_msg=f"tensor {t} vs {reference}")


def test_profiles_differ_on_the_real_model():
    g = _graph()
    x = _inputs(4).reshape(4, 28, 28)
    a = prepare_graph(g, "tflm").run_samples({0: x}, keep_all=True)[LSTM_OUT]
    b = prepare_graph(g, "litert").run_samples({0: x}, keep_all=True)[LSTM_OUT]
    assert np.count_nonzero(a != b) > 0  # table vs gemmlowp non-linearities, double vs single rounding


def test_state_does_not_carry_between_samples():
    pg = prepare_graph(_graph(), "tflm")
    x = _inputs(2)
    first = pg.run([x[0]])[LSTM_OUT]
    pg.run([x[1]])
    np.testing.assert_array_equal(pg.run([x[0]])[LSTM_OUT], first)
    batch = pg.run_batched(x.reshape(2, 28, 28), keep_all=True)[LSTM_OUT]
    np.testing.assert_array_equal(batch[0], first[0])


def test_non_power_of_two_cell_scale_is_refused():
    g = _graph()
    cell = g.tensors[g.operators[0].inputs[19]]
    g.tensors[cell.index] = dataclasses.replace(cell, quant=ir.Quant(np.array([0.0003]), np.array([0])))
    with pytest.raises(QsimError, match=r"(?s)cell state.*tfl.pseudo_qconst1.*not a power of two"):
        prepare_graph(g, "tflm")


def test_int8_only_view_names_the_int16_cell_state():
    problems = unsupported_ops(_graph())  # int8-only view: the int16 cell state is named
    assert len(problems) == 1 and "UNIDIRECTIONAL_SEQUENCE_LSTM" in problems[0] and "int16" in problems[0]
    assert unsupported_ops(_graph(), int16=True) == []


# ----------------------------------------------------------------- the float twin, the CLI

def test_compare_with_float_twin(tmp_path):
    require_module("ai_edge_litert", "the float twin runs in LiteRT")
    import json
    import subprocess
    import sys

    data = tmp_path / "rows.npy"
    np.save(data, np.random.default_rng(0).random((6, 28, 28)).astype(np.float32))
    r = subprocess.run([sys.executable, "-m", "qsim.cli", "compare", str(shared_model(MODEL)),
                        str(shared_model("trained_lstm.tflite")), "--data", str(data), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    lstm = [layer for layer in rep["layers"] if layer["op_name"] == "UNIDIRECTIONAL_SEQUENCE_LSTM"]
    assert len(lstm) == 1 and lstm[0]["float_tensor"] == "tfl.unidirectional_sequence_lstm"
    assert lstm[0]["sqnr_db"] > 30  # an int8 LSTM tracks its float twin (measured 37.7 dB on 8 samples)


@pytest.mark.parametrize("argv, code, text", [
    (["check", "{m}", "--random", "2", "--reference", "both"], 0, "bit-exact"),
    (["codegen", "{m}", "-o", "{tmp}/out"], 0, "UNIDIRECTIONAL_SEQUENCE_LSTM"),  # C: tests/test_codegen_rnn.py
])
def test_cli(tmp_path, argv, code, text):
    import subprocess
    import sys

    if code == 0:
        require_module("tflite_micro", "reference interpreter")
        require_module("ai_edge_litert", "reference interpreter")
    args = [a.format(m=shared_model(MODEL), tmp=tmp_path) for a in argv]
    r = subprocess.run([sys.executable, "-m", "qsim.cli"] + args, capture_output=True, text=True, timeout=300)
    assert r.returncode == code, r.stdout + r.stderr
    assert text in r.stdout + r.stderr
    assert "Traceback" not in r.stderr


# ----------------------------------------------------------------- builder models vs both references

def _builder_case(reference, **kw):
    from qsim import builder, refrun

    blob = builder.lstm_int8_model(**kw)
    g = loader.load_bytes(blob)
    out = g.outputs[0]
    x = np.random.default_rng(kw.get("seed", 0) + 1).integers(-128, 128, g.tensors[g.inputs[0]].shape).astype(np.int8)
    ours = prepare_graph(g, reference).run([x])[out]
    theirs = refrun.open_in_process(reference, blob).run([x], [out])[out]
    np.testing.assert_array_equal(ours, theirs, err_msg=f"{reference} {kw}")


def test_builder_lstm_property_both_references():
    require_module("tflite_micro", "reference interpreter")
    require_module("ai_edge_litert", "reference interpreter")
    from hypothesis import HealthCheck, given, settings, strategies as st

    @settings(max_examples=10, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(n_batch=st.integers(1, 3), n_time=st.integers(1, 5), n_input=st.integers(1, 6),
           n_cell=st.integers(1, 8), time_major=st.booleans(), cell_power=st.integers(-15, -9),
           hidden_zp=st.integers(-20, 20), input_zp=st.integers(-128, 127),
           cell_clip=st.sampled_from([0.0, 0.5, 3.0]), weight_scale=st.sampled_from([0.005, 0.02, 0.08]),
           hidden_scale=st.sampled_from([2 ** -7, 0.00781679, 0.0123]),
           input_scale=st.sampled_from([0.05, 0.00392157]), seed=st.integers(0, 1000))
    def prop(**kw):
        for reference in ("tflm", "litert"):
            _builder_case(reference, **kw)

    prop()


def test_builder_cell_power_below_minus_15_is_tflm_only():
    require_module("tflite_micro", "reference interpreter")
    from qsim import builder

    _builder_case("tflm", cell_power=-16)
    with pytest.raises(QsimError, match=r"2\*\*-16.*\[-15, -9\]"):
        prepare_graph(loader.load_bytes(builder.lstm_int8_model(cell_power=-16)), "litert")


def test_builder_non_power_of_two_cell_scale_exits_2(tmp_path):
    import subprocess
    import sys

    from qsim import builder

    m = tmp_path / "lstm_bad_cell.tflite"
    m.write_bytes(builder.lstm_int8_model(cell_scale=0.0003))
    r = subprocess.run([sys.executable, "-m", "qsim.cli", "run", str(m), "--random", "1"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "c_state" in r.stderr and "not a power of two" in r.stderr


@pytest.mark.parametrize("kw", [dict(), dict(n_batch=2, time_major=True, cell_power=-15, seed=3),
                                dict(n_batch=3, cell_clip=1.0, weight_scale=0.08, seed=9)])
def test_builder_16x8_lstm_tflm_only(kw):
    """TFLite Micro's 16x8 LSTM (int16 activations, int64 biases): bit-exact with TFLM; LiteRT has
    no such kernel (it refuses the int64 bias in prepare) and qsim's litert profile refuses it too."""
    require_module("tflite_micro", "reference interpreter")
    from qsim import builder, refrun

    blob = builder.lstm_int8_model(activations=np.int16, input_zp=0, input_scale=2 ** -12, hidden_scale=2 ** -14,
                                   **kw)
    g = loader.load_bytes(blob)
    out = g.outputs[0]
    x = np.random.default_rng(kw.get("seed", 0)).integers(-6000, 6000, g.tensors[g.inputs[0]].shape).astype(np.int16)
    ours = prepare_graph(g, "tflm").run([x])[out]
    theirs = refrun.open_in_process("tflm", blob).run([x], [out])[out]
    assert ours.dtype == np.int16 and len(np.unique(ours)) > 4
    np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(QsimError, match="16x8 LSTM"):
        prepare_graph(g, "litert")


def test_variable_with_stored_buffer_is_ignored_like_tflm():
    """LiteRT refuses a variable tensor with a buffer and TFLM ignores its data (measured): qsim
    follows TFLM (:func:`qsim.interpreter.variable_start_values`): the run equals the one without it."""
    g = _graph()
    h = g.tensors[g.operators[0].inputs[18]]
    with_data = dataclasses.replace(g, tensors=list(g.tensors))
    with_data.tensors[h.index] = dataclasses.replace(h, data=np.full(h.shape, 40, np.int8))
    x = np.random.default_rng(2).integers(-128, 128, size=g.tensors[g.inputs[0]].shape).astype(np.int8)
    out = g.outputs[0]
    assert np.array_equal(prepare_graph(with_data, "tflm").run([x])[out], prepare_graph(g, "tflm").run([x])[out])
    assert not unsupported_ops(with_data, int16=True)


@pytest.mark.parametrize("reference", ["tflm", "litert"])
def test_real_model_batched_run_bit_exact(reference):
    """A batch of 9 samples in one pass (the recurrent GEMMs then run in float BLAS) against the
    reference run sample by sample: the LSTM output and the probabilities."""
    require_module("ai_edge_litert" if reference == "litert" else "tflite_micro", "reference interpreter")
    from qsim import refrun

    path = shared_model(MODEL)
    runner = refrun.open_in_process(reference, path.read_bytes())
    x = _inputs(9, seed=11)
    ours = prepare_graph(loader.load(path), reference).run_batched(x.reshape(9, 28, 28), keep_all=True)
    for i in range(9):
        theirs = runner.run([x[i]], [LSTM_OUT, PROBS])
        for t in (LSTM_OUT, PROBS):
            np.testing.assert_array_equal(ours[t][i], theirs[t][0], err_msg=f"sample {i} tensor {t} vs {reference}")


@pytest.mark.parametrize("reference", ["tflm", "litert"])
def test_single_sample_fc_h_table_equals_the_plan(reference):
    """Single-sample runs look the recurrent FC's requant up in a table (filled by the plan over every
    reachable accumulator) and the products' and hidden requants up by searchsorted in threshold
    arrays (lstm.SingleStepTables); with the table disabled the same run takes the plan path (int64
    matmul, every requant by its plan).  Both give the same every-tensor values on the real model
    (the table path is also the one the reference comparisons above run)."""
    g = _graph()
    prep = prepare_graph(g, reference)
    p = prep.ops[0].params
    x = _inputs(3, seed=5)
    with_table = [prep.run([x[i]]) for i in range(3)]
    assert p.fc_h_lookup is not None and p.fc_h_lookup[0].size > 1000  # the table path ran
    assert p.single is not None and p.single.ig_thr.size == 65535  # and the threshold arrays
    plain = prepare_graph(g, reference)
    plain.ops[0].params.fc_h_table = None  # no table: the plan
    for i in range(3):
        got = plain.run([x[i]])
        assert plain.ops[0].params.fc_h_lookup is None and plain.ops[0].params.single is None
        for t in (LSTM_OUT, PROBS):
            np.testing.assert_array_equal(got[t], with_table[i][t])
