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
from qsim.kernels.conv import folded_requant
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
    assert all(folded_requant(kern.prepare(op, g, get_profile("tflm"))) is not None for op in g.operators)
    w = np.full((3, 1500), -128, np.int8)  # w - w_zp = -255 with w_zp = 127
    g = _fc_graph(2, 1500, 3, False, w, 127, -128, "small", 1.0, "NONE", 0)
    params = kern.prepare(g.operators[0], g, get_profile("tflm"))
    assert folded_requant(params) is not None
    for v in (-128, 127):
        x = np.full((2, 1500), v, np.int8)
        np.testing.assert_array_equal(kern.eval(params, [x, None, None])[0], _plain_fc(params, x, w, -128, 127))


def test_a_replaced_requant_gets_its_own_folded_plan():
    """params with a replaced ``requant`` (dataclasses.replace, as a requant variant does) requantize
    with the new one: the folded plan lives on the RequantParams object, never a stale copy."""
    import dataclasses
    w = np.random.default_rng(3).integers(-127, 128, (5, 40)).astype(np.int8)
    g = _fc_graph(3, 40, 5, True, w, 0, -7, "small", 1.0, "NONE", 0)
    kern = REGISTRY["FULLY_CONNECTED"]
    params = kern.prepare(g.operators[0], g, get_profile("tflm"))
    x = np.random.default_rng(4).integers(-128, 128, (3, 40)).astype(np.int8)
    before = kern.eval(params, [x, None, None])[0]
    rq2 = dataclasses.replace(params.requant, multiplier=params.requant.multiplier // 3, output_zero_point=5)
    params2 = dataclasses.replace(params, requant=rq2)
    assert folded_requant(params2) is not None and folded_requant(params2) is not folded_requant(params)
    got = kern.eval(params2, [x, None, None])[0]
    np.testing.assert_array_equal(got, _plain_fc(params2, x, w, -7, 0))
    assert not np.array_equal(got, before)


# ------------------------------------------------------------------ CONV_2D / DEPTHWISE_CONV_2D

@st.composite
def conv_case(draw):
    depthwise = draw(st.booleans())
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, dil = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    h = draw(st.integers((kh - 1) * dil + 1, 9))
    w = draw(st.integers((kw - 1) * dil + 1, 9))
    cin = draw(st.sampled_from([1, 3, 8]))
    mult = draw(st.sampled_from([1, 2])) if depthwise else 1
    cout = cin * mult if depthwise else draw(st.sampled_from([1, 4, 9]))
    wshape = (1, kh, kw, cout) if depthwise else (cout, kh, kw, cin)
    wq = np.maximum(_int8_array(draw, wshape), -127)  # symmetric per-channel weights
    x = _int8_array(draw, (2, h, w, cin))
    x_zp = draw(st.sampled_from([-128, 127, 0, -7]))
    bias = draw(st.sampled_from(["none", "small", "max", "min"]))
    gain = draw(st.sampled_from([1e-3, 0.05, 1.0, 30.0]))
    act = draw(st.sampled_from(["NONE", "RELU", "RELU6"]))
    out_zp = draw(st.sampled_from([-128, 0, 17, 127]))
    einsum = draw(st.booleans())
    return depthwise, kh, kw, stride, dil, padding, h, w, cin, mult, cout, wq, x, x_zp, bias, gain, act, out_zp, einsum


def _out_size(padding, size, k, stride, dil):
    eff = (k - 1) * dil + 1
    return (size + stride - 1) // stride if padding == "SAME" else (size - eff + stride) // stride


def _plain_conv_acc(x, x_zp, wq, depthwise, mult, stride, dil, padding, oh, ow):
    """sum over in-bounds taps of (x - zp) * w, int64, written from the definition: the centred
    input zero-padded (TFLite's leading padding total // 2), one tap at a time."""
    n, h, w, cin = x.shape
    kh, kw = wq.shape[1], wq.shape[2]
    pad_h = max(((oh - 1) * stride + (kh - 1) * dil + 1 - h) // 2, 0) if padding == "SAME" else 0
    pad_w = max(((ow - 1) * stride + (kw - 1) * dil + 1 - w) // 2, 0) if padding == "SAME" else 0
    big = 3 * (kh + kw) * dil + h + w
    xp = np.zeros((n, big, big, cin), np.int64)
    xp[:, pad_h:pad_h + h, pad_w:pad_w + w] = x.astype(np.int64) - x_zp
    if depthwise:
        xp = np.repeat(xp, mult, axis=3)
    acc = 0
    for i in range(kh):
        for j in range(kw):
            win = xp[:, i * dil:i * dil + (oh - 1) * stride + 1:stride, j * dil:j * dil + (ow - 1) * stride + 1:stride]
            acc = acc + (win * wq[0, i, j].astype(np.int64) if depthwise else win @ wq[:, i, j, :].astype(np.int64).T)
    return acc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_case(), st.sampled_from(["tflm", "litert"]))
def test_conv_eval_equals_plain_definition(case, profile):
    """CONV_2D / DEPTHWISE_CONV_2D eval (zero-point-padded input, folded bias; depthwise by taps,
    einsum or block-diagonal GEMM) == fixedpoint.requantize of the int64 definition."""
    (depthwise, kh, kw, stride, dil, padding, h, w, cin, mult, cout, wq, x, x_zp, bias_kind, gain, act,
     out_zp, einsum) = case
    oh, ow = _out_size(padding, h, kh, stride, dil), _out_size(padding, w, kw, stride, dil)
    in_scale = 0.02
    ws = np.linspace(0.004, 0.02, cout)
    b = ModelBuilder(description="conv fold")
    xt = b.add_input("x", (1, h, w, cin), np.int8, scale=in_scale, zero_point=x_zp)
    wt = b.add_const("w", wq, scale=ws, zero_point=np.zeros(cout, np.int64), axis=3 if depthwise else 0)
    ins = [xt, wt]
    if bias_kind != "none":
        values = {"small": np.arange(cout) * 37 - 50, "max": np.full(cout, INT32_MAX),
                  "min": np.full(cout, -INT32_MAX - 1)}[bias_kind]
        ins.append(b.add_const("b", values.astype(np.int32), scale=in_scale * ws,
                               zero_point=np.zeros(cout, np.int64), axis=0))
    out_scale = in_scale * float(ws.max()) * np.sqrt(kh * kw * (1 if depthwise else cin)) * 40 * gain
    y = b.add_tensor("y", (1, oh, ow, cout), np.int8, scale=out_scale, zero_point=out_zp)
    if depthwise:
        opts = ir.DepthwiseConv2DOptions(padding=padding, stride_h=stride, stride_w=stride, dilation_h=dil,
                                         dilation_w=dil, depth_multiplier=mult, activation=act)
    else:
        opts = ir.Conv2DOptions(padding=padding, stride_h=stride, stride_w=stride, dilation_h=dil, dilation_w=dil,
                                activation=act)
    opcode = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
    b.add_op(opcode, ins, [y], opts)
    b.mark_output(y)
    g = load_bytes(b.build())
    op = g.operators[0]
    kern = REGISTRY[opcode]
    params = kern.prepare(op, g, get_profile(profile))
    params.einsum = einsum and depthwise and params.dense_weights is None
    acc = _plain_conv_acc(x, x_zp, wq, depthwise, mult, stride, dil, padding, oh, ow)
    rq = params.requant
    want = fp.requantize(acc, rq.bias, rq.multiplier, rq.shift, rq.output_zero_point, rq.act_min, rq.act_max,
                         rq.rounding).astype(np.int8)
    np.testing.assert_array_equal(kern.eval(params, [x] + [None] * (len(op.inputs) - 1))[0], want)
    np.testing.assert_array_equal(kern.accumulate(params, [x] + [None] * (len(op.inputs) - 1)), acc)


def test_conv_fold_is_used_on_real_layers():
    """Every CONV_2D / DEPTHWISE_CONV_2D of vww and ResNet runs the folded path (so the property
    test above exercises it)."""
    for name in ("vww_96_int8.tflite", "pretrainedResnet_quant.tflite"):
        g = load(shared_model(name))
        for op in g.operators:
            if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                assert folded_requant(REGISTRY[op.opcode].prepare(op, g, get_profile("tflm"))) is not None, (name, op.index)


# ------------------------------------------------------------------ SOFTMAX exponential tables

@settings(max_examples=100, deadline=None)
@given(st.floats(0.001, 2.0), st.sampled_from([0.01, 0.1, 1.0, 4.0]), st.sampled_from(["double", "single"]),
       st.integers(0, 2**32 - 1))
def test_softmax_tables_equal_the_fixed_point_exp(scale, beta, rounding, seed):
    """eval's table lookup of exp(q - max) == the fixed-point arithmetic on every row, including
    rows holding every difference -255..0 (values -128 and 127 together)."""
    from qsim.kernels import activations as act
    m, left = fp.preprocess_softmax_scaling(beta, scale, act.SOFTMAX_SCALED_DIFF_INTEGER_BITS,
                                            single_rounding=rounding == "single")
    p = act.SoftmaxParams(m, left, -fp.calculate_input_radius(act.SOFTMAX_SCALED_DIFF_INTEGER_BITS, left), rounding)
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (6, 256)).astype(np.int8)
    x[0] = np.arange(-128, 128)  # every difference to the maximum once
    x[1] = np.where(np.arange(256) % 2, 127, -128)
    x[2] = -128
    # the same values as int16 take the untabulated arithmetic (tables are for int8 only)
    np.testing.assert_array_equal(act.eval_softmax(p, [x])[0], act.eval_softmax(p, [x.astype(np.int16)])[0])
    p.rounding = "single" if rounding == "double" else "double"  # a changed field rebuilds the tables
    np.testing.assert_array_equal(act.eval_softmax(p, [x])[0], act.eval_softmax(p, [x.astype(np.int16)])[0])
