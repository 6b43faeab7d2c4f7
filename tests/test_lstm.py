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


def test_codegen_and_accel_refuse_lstm_by_name():
    problems = unsupported_ops(_graph())
    assert any("UNIDIRECTIONAL_SEQUENCE_LSTM" in p and "simulator only" in p for p in problems)
    assert unsupported_ops(_graph(), int16=True) == []
