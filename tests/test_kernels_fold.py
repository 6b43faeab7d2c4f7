"""Speed shortcuts of the GEMM kernels against the plain definition, on worst-case values.

FULLY_CONNECTED folds the input zero point into the bias (CMSIS-NN's kernel sum: eval
multiplies the int8 input itself and requantizes with bias - x_zp * colsum(w - w_zp)).  The
plain definition here is Python/numpy int64 arithmetic: acc = (x - x_zp) @ (w - w_zp).T, then
fixedpoint.requantize (the one implementation of the rounding), with the layer's own prepared
multipliers.  Hypothesis draws weights, zero points, biases and inputs with their extremes
(all -128 / all 127 inputs, |w - w_zp| = 255 with a weight zero point, input zero points
-128 / 127, int32 bias limits).
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qsim import fixedpoint as fp
from qsim import ir
from qsim.builder import ModelBuilder
from qsim.kernels import REGISTRY
from qsim.loader import load, load_bytes
from qsim.profiles import get_profile

from conftest import shared_model

INT32_MAX = 2**31 - 1


def _int8_array(draw, shape):
    kind = draw(st.sampled_from(["random", "min", "max", "edges"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "min":
        return np.full(shape, -128, np.int8)
    if kind == "max":
        return np.full(shape, 127, np.int8)
    if kind == "edges":
        return rng.choice(np.array([-128, 127], np.int8), size=shape)
    return rng.integers(-128, 128, size=shape).astype(np.int8)


@st.composite
def fc_case(draw):
    rows = draw(st.integers(1, 4))
    k = draw(st.sampled_from([1, 3, 16, 300, 1500]))
    units = draw(st.integers(1, 9))
    per_channel = draw(st.booleans())
    w = _int8_array(draw, (units, k))
    if per_channel:
        w = np.maximum(w, -127)  # per-channel int8 weights are symmetric in TFLite
    w_zp = 0 if per_channel else draw(st.sampled_from([0, -128, 127, 5]))
    x_zp = draw(st.sampled_from([-128, 127, 0, -7]))
    x = _int8_array(draw, (rows, k))
    bias = draw(st.sampled_from(["none", "small", "max", "min"]))
    gain = draw(st.sampled_from([1e-3, 0.05, 1.0, 30.0]))
    act = draw(st.sampled_from(["NONE", "RELU", "RELU6"]))
    out_zp = draw(st.sampled_from([-128, 0, 17, 127]))
    return rows, k, units, per_channel, w, w_zp, x_zp, x, bias, gain, act, out_zp


def _fc_graph(rows, k, units, per_channel, w, w_zp, x_zp, bias_kind, gain, act, out_zp):
    in_scale = 0.02
    b = ModelBuilder(description="fc fold")
    x = b.add_input("x", (rows, k), np.int8, scale=in_scale, zero_point=x_zp)
    ws = np.linspace(0.004, 0.02, units) if per_channel else np.array([0.01])
    wt = b.add_const("w", w, scale=ws, zero_point=np.full(ws.size, w_zp, np.int64), axis=0)
    ins = [x, wt]
    if bias_kind != "none":
        values = {"small": np.arange(units) * 37 - 50, "max": np.full(units, INT32_MAX),
                  "min": np.full(units, -INT32_MAX - 1)}[bias_kind]
        bws = np.resize(ws, units)
        ins.append(b.add_const("b", values.astype(np.int32), scale=in_scale * bws,
                               zero_point=np.zeros(units, np.int64), axis=0))
    out_scale = in_scale * float(ws.max()) * np.sqrt(k) * 40 * gain
    y = b.add_tensor("y", (rows, units), np.int8, scale=out_scale, zero_point=out_zp)
    b.add_op("FULLY_CONNECTED", ins, [y], ir.FullyConnectedOptions(activation=act))
    b.mark_output(y)
    return load_bytes(b.build())


def _plain_fc(params, x, w, x_zp, w_zp):
    acc = (x.astype(np.int64) - x_zp) @ (w.astype(np.int64) - w_zp).T
    rq = params.requant
    if rq.rounding == "float":  # LiteRT's FULLY_CONNECTED rescales by the real scale
        return fp.requantize_float_rescale(acc, rq.bias, rq.real_scale, rq.output_zero_point, rq.act_min,
                                           rq.act_max).astype(np.int8)
    return fp.requantize(acc, rq.bias, rq.multiplier, rq.shift, rq.output_zero_point, rq.act_min, rq.act_max,
                         rq.rounding).astype(np.int8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fc_case(), st.sampled_from(["tflm", "litert"]))
def test_fc_eval_equals_plain_definition(case, profile):
    """eval (folded input offset where the plan is proven, else centred) == the int64 definition."""
    rows, k, units, per_channel, w, w_zp, x_zp, x, bias, gain, act, out_zp = case
    g = _fc_graph(rows, k, units, per_channel, w, w_zp, x_zp, bias, gain, act, out_zp)
    op = g.operators[0]
    kern = REGISTRY["FULLY_CONNECTED"]
    params = kern.prepare(op, g, get_profile(profile))
    got = kern.eval(params, [x] + [None] * (len(op.inputs) - 1))[0]
    np.testing.assert_array_equal(got.reshape(rows, units), _plain_fc(params, x, w, x_zp, w_zp))


def test_fc_fold_is_used_on_real_layers_and_on_extremes():
    """The folded path really runs (ad01's ten layers, and a 1500-input layer with a weight zero
    point at every extreme), so the property test above exercises it."""
    g = load(shared_model("ad01_int8.tflite"))
    kern = REGISTRY["FULLY_CONNECTED"]
    assert all(kern.prepare(op, g, get_profile("tflm")).folded is not None for op in g.operators)
    w = np.full((3, 1500), -128, np.int8)  # w - w_zp = -255 with w_zp = 127
    g = _fc_graph(2, 1500, 3, False, w, 127, -128, "small", 1.0, "NONE", 0)
    params = kern.prepare(g.operators[0], g, get_profile("tflm"))
    assert params.folded is not None
    for v in (-128, 127):
        x = np.full((2, 1500), v, np.int8)
        np.testing.assert_array_equal(kern.eval(params, [x, None, None])[0], _plain_fc(params, x, w, -128, 127))
