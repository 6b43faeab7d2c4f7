"""CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D, MAX_POOL_2D, MEAN vs the references.

Every property test builds a single-op int8 .tflite with qsim.builder, runs it
through LiteRT (BUILTIN_REF) and TFLite Micro with all tensors preserved, and
requires qsim's output to be bit-identical to each reference under that
reference's own rounding profile.  Goldens come only from the references or
from hand-computed Python-int arithmetic.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from qsim import ir
from qsim.builder import ModelBuilder
from qsim.errors import QsimError
from qsim.interpreter import prepare_graph
from qsim.kernels import REGISTRY
from qsim.loader import load, load_bytes
from qsim.profiles import get_profile
from qsim.reference import make_runner

from conftest import shared_model

ACTS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
REFS = ("litert", "tflm")
PROPERTY = settings(derandomize=True, max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------ model generators

def _out_size(padding, size, k, stride, dil):
    eff = (k - 1) * dil + 1
    return (size + stride - 1) // stride if padding == "SAME" else (size + stride - eff) // stride


def _acc_scale(rng, in_scale, w_scales, taps, gain=1):
    """An output scale that keeps typical accumulators inside int8 (with some saturation).

    ``gain`` > 1 shrinks it so the real multiplier exceeds 1 (TFLite's left-shift path).
    """
    spread = np.sqrt(taps) * 74.0 * 60.0 * in_scale * float(np.mean(w_scales))
    return float(spread / 45.0 * rng.uniform(0.4, 2.5) / gain)


def _weights(rng, shape, n_ch, axis, per_channel):
    w = rng.integers(-127, 128, size=shape).astype(np.int8)
    scales = rng.uniform(0.002, 0.03, size=n_ch) if per_channel else np.array([rng.uniform(0.002, 0.03)])
    return w, scales


def _bias(b, rng, in_scale, w_scales, n, use_bias):
    if not use_bias:
        return None
    vals = rng.integers(-6000, 6000, size=n).astype(np.int32)
    scale = in_scale * w_scales  # one scale for per-tensor weights, n for per-channel
    return b.add_const("bias", vals, scale=scale, zero_point=np.zeros(scale.size, np.int64), axis=0)


def conv_model(p: dict, rng) -> bytes:
    n, h, w, cin, cout = p["n"], p["h"], p["w"], p["cin"], p["cout"]
    oh = _out_size(p["padding"], h, p["kh"], p["sh"], p["dh"])
    ow = _out_size(p["padding"], w, p["kw"], p["sw"], p["dw"])
    in_scale = rng.uniform(0.005, 0.1)
    b = ModelBuilder(description="conv test")
    x = b.add_input("x", (n, h, w, cin), np.int8, scale=in_scale, zero_point=int(rng.integers(-128, 128)))
    wq, ws = _weights(rng, (cout, p["kh"], p["kw"], cin), cout, 0, p["per_channel"])
    wt = b.add_const("w", wq, scale=ws, zero_point=np.zeros(ws.size, np.int64), axis=0)
    bias = _bias(b, rng, in_scale, ws, cout, p["bias"])
    out_scale = _acc_scale(rng, in_scale, ws, p["kh"] * p["kw"] * cin, p.get("gain", 1))
    y = b.add_tensor("y", (n, oh, ow, cout), np.int8, scale=out_scale, zero_point=int(rng.integers(-30, 30)))
    b.add_op("CONV_2D", [x, wt] + ([] if bias is None else [bias]), [y], ir.Conv2DOptions(
        padding=p["padding"], stride_h=p["sh"], stride_w=p["sw"], dilation_h=p["dh"], dilation_w=p["dw"],
        activation=p["act"]))
    b.mark_output(y)
    return b.build()


def depthwise_model(p: dict, rng) -> bytes:
    n, h, w, cin, mult = p["n"], p["h"], p["w"], p["cin"], p["mult"]
    cout = cin * mult
    oh = _out_size(p["padding"], h, p["kh"], p["sh"], p["dh"])
    ow = _out_size(p["padding"], w, p["kw"], p["sw"], p["dw"])
    in_scale = rng.uniform(0.005, 0.1)
    b = ModelBuilder(description="depthwise test")
    x = b.add_input("x", (n, h, w, cin), np.int8, scale=in_scale, zero_point=int(rng.integers(-128, 128)))
    wq, ws = _weights(rng, (1, p["kh"], p["kw"], cout), cout, 3, p["per_channel"])
    wt = b.add_const("w", wq, scale=ws, zero_point=np.zeros(ws.size, np.int64), axis=3)
    bias = _bias(b, rng, in_scale, ws, cout, p["bias"])
    out_scale = _acc_scale(rng, in_scale, ws, p["kh"] * p["kw"], p.get("gain", 1))
    y = b.add_tensor("y", (n, oh, ow, cout), np.int8, scale=out_scale, zero_point=int(rng.integers(-30, 30)))
    b.add_op("DEPTHWISE_CONV_2D", [x, wt] + ([] if bias is None else [bias]), [y], ir.DepthwiseConv2DOptions(
        padding=p["padding"], stride_h=p["sh"], stride_w=p["sw"], dilation_h=p["dh"], dilation_w=p["dw"],
        depth_multiplier=mult, activation=p["act"]))
    b.mark_output(y)
    return b.build()


def fc_model(p: dict, rng) -> bytes:
    in_shape, units = tuple(p["in_shape"]), p["units"]
    in_units = in_shape[-1] if p["keep_num_dims"] else p["in_units"]
    total = int(np.prod(in_shape))
    if not p["keep_num_dims"]:
        in_units = next(d for d in (in_units, in_shape[-1], total) if total % d == 0)
    in_scale = rng.uniform(0.005, 0.1)
    b = ModelBuilder(description="fully connected test")
    x = b.add_input("x", in_shape, np.int8, scale=in_scale, zero_point=int(rng.integers(-128, 128)))
    wq, ws = _weights(rng, (units, in_units), units, 0, p["per_channel"])
    wt = b.add_const("w", wq, scale=ws, zero_point=np.zeros(ws.size, np.int64), axis=0)
    bias = _bias(b, rng, in_scale, ws, units, p["bias"])
    out_scale = _acc_scale(rng, in_scale, ws, in_units, p.get("gain", 1))
    out_shape = in_shape[:-1] + (units,) if p["keep_num_dims"] else (total // in_units, units)
    y = b.add_tensor("y", out_shape, np.int8, scale=out_scale, zero_point=int(rng.integers(-30, 30)))
    b.add_op("FULLY_CONNECTED", [x, wt, -1 if bias is None else bias], [y],
             ir.FullyConnectedOptions(activation=p["act"], keep_num_dims=p["keep_num_dims"]))
    b.mark_output(y)
    return b.build()


def pool_model(p: dict, rng) -> bytes:
    n, h, w, c = p["n"], p["h"], p["w"], p["c"]
    oh = _out_size(p["padding"], h, p["fh"], p["sh"], 1)
    ow = _out_size(p["padding"], w, p["fw"], p["sw"], 1)
    scale, zp = rng.uniform(0.01, 0.2), int(rng.integers(-100, 100))
    b = ModelBuilder(description="pool test")
    x = b.add_input("x", (n, h, w, c), np.int8, scale=scale, zero_point=zp)
    y = b.add_tensor("y", (n, oh, ow, c), np.int8, scale=scale, zero_point=zp)
    b.add_op(p["op"], [x], [y], ir.Pool2DOptions(padding=p["padding"], stride_h=p["sh"], stride_w=p["sw"],
                                                 filter_h=p["fh"], filter_w=p["fw"], activation=p["act"]))
    b.mark_output(y)
    return b.build()


def mean_model(p: dict, rng) -> bytes:
    shape, axes, keep = tuple(p["shape"]), list(p["axes"]), p["keep_dims"]
    rank = len(shape)
    norm = sorted({a % rank for a in axes})
    out_shape = tuple(1 if i in norm else d for i, d in enumerate(shape)) if keep else \
        tuple(d for i, d in enumerate(shape) if i not in norm)
    in_scale, in_zp = rng.uniform(0.01, 0.2), int(rng.integers(-100, 100))
    if p["same_qparams"]:
        out_scale, out_zp = in_scale, in_zp
    else:
        out_scale, out_zp = in_scale * rng.uniform(0.3, 3.0), int(rng.integers(-60, 60))
    b = ModelBuilder(description="mean test")
    x = b.add_input("x", shape, np.int8, scale=in_scale, zero_point=in_zp)
    ax = b.add_const("axis", np.array(axes, np.int32))
    y = b.add_tensor("y", out_shape, np.int8, scale=out_scale, zero_point=out_zp)
    b.add_op("MEAN", [x, ax], [y], ir.ReducerOptions(keep_dims=keep))
    b.mark_output(y)
    return b.build()


# ------------------------------------------------------------------ comparison

def reference_outputs(blob: bytes, reference: str, x: np.ndarray, tensors) -> dict[int, np.ndarray]:
    """Run one reference ("litert" BUILTIN_REF or "tflm") with every tensor preserved."""
    return make_runner(reference, blob).run([x], tensors)


def assert_bitexact(blob: bytes, rng, refs=REFS) -> None:
    """qsim == each reference (under its own profile) on every op output, for one random input."""
    g = load_bytes(blob)
    t_in = g.tensors[g.inputs[0]]
    x = rng.integers(-128, 128, size=t_in.shape).astype(np.int8)
    outs = [t for op in g.operators for t in op.outputs]
    for ref in refs:
        theirs = reference_outputs(blob, ref, x, outs)
        ours = prepare_graph(g, ref).run([x], keep_all=True)
        for t in outs:
            a, r = ours[t], np.asarray(theirs[t]).reshape(ours[t].shape)
            if not np.array_equal(a, r):
                d = np.abs(a.astype(np.int64) - r.astype(np.int64))
                raise AssertionError(f"{ref}: tensor {t} '{g.tensors[t].name}' differs in {(d > 0).sum()}/{d.size} "
                                     f"elements, max {d.max()} LSB")


# ------------------------------------------------------------------ strategies

GAINS = st.sampled_from([1, 1, 1, 1, 3000])  # 3000: real multiplier > 1 (left shift)


def _window(draw, max_hw=11):
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = draw(st.integers((kh - 1) * dh + 1, max_hw + (kh - 1) * dh))
    w = draw(st.integers((kw - 1) * dw + 1, max_hw + (kw - 1) * dw))
    return dict(padding=padding, kh=kh, kw=kw, dh=dh, dw=dw, sh=sh, sw=sw, h=h, w=w)


@st.composite
def conv_params(draw):
    p = _window(draw)
    p.update(n=draw(st.integers(1, 2)), cin=draw(st.integers(1, 6)), cout=draw(st.integers(1, 8)),
             per_channel=draw(st.booleans()), bias=draw(st.booleans()), act=draw(st.sampled_from(ACTS)),
             gain=draw(GAINS))
    return p


@st.composite
def depthwise_params(draw):
    p = _window(draw)
    p.update(n=draw(st.integers(1, 2)), cin=draw(st.integers(1, 6)), mult=draw(st.integers(1, 3)),
             per_channel=draw(st.booleans()), bias=draw(st.booleans()), act=draw(st.sampled_from(ACTS)),
             gain=draw(GAINS))
    return p


@st.composite
def fc_params(draw):
    shape = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    return dict(in_shape=shape, units=draw(st.integers(1, 12)), in_units=draw(st.integers(1, 24)),
                keep_num_dims=draw(st.booleans()), per_channel=draw(st.booleans()), bias=draw(st.booleans()),
                act=draw(st.sampled_from(ACTS)), gain=draw(GAINS))


@st.composite
def pool_params(draw):
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    fh, fw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return dict(op=draw(st.sampled_from(["AVERAGE_POOL_2D", "MAX_POOL_2D"])), padding=padding, fh=fh, fw=fw,
                sh=draw(st.integers(1, 3)), sw=draw(st.integers(1, 3)), h=draw(st.integers(fh, 10)),
                w=draw(st.integers(fw, 10)), n=draw(st.integers(1, 2)), c=draw(st.integers(1, 5)),
                act=draw(st.sampled_from(ACTS)))


@st.composite
def mean_params(draw):
    if draw(st.integers(0, 3)) == 0:  # the special 4-D path: keep_dims, axes {1, 2}
        shape = [draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(1, 6))]
        axes = draw(st.sampled_from([[1, 2], [2, 1], [-3, -2], [2, -3]]))
        return dict(shape=shape, axes=axes, keep_dims=True, same_qparams=draw(st.booleans()))
    rank = draw(st.integers(1, 4))
    shape = draw(st.lists(st.integers(1, 7), min_size=rank, max_size=rank))
    axes = draw(st.lists(st.integers(-rank, rank - 1), min_size=1, max_size=rank, unique=True))
    return dict(shape=shape, axes=axes, keep_dims=draw(st.booleans()), same_qparams=draw(st.booleans()))


# ------------------------------------------------------------------ property tests (both references)

def _needs_litert_bias(p) -> tuple[str, ...]:
    """LiteRT 2.3 refuses int8 CONV_2D without a bias (conv.cc 'has_bias was not true'); TFLM runs it."""
    return REFS if p["bias"] else ("tflm",)


@seed(20261122)
@PROPERTY
@given(conv_params(), st.integers(0, 2**32 - 1))
def test_conv2d_matches_references(p, s):
    rng = np.random.default_rng(s)
    assert_bitexact(conv_model(p, rng), rng, refs=_needs_litert_bias(p))


@seed(20261123)
@PROPERTY
@given(depthwise_params(), st.integers(0, 2**32 - 1))
def test_depthwise_conv2d_matches_references(p, s):
    rng = np.random.default_rng(s)
    assert_bitexact(depthwise_model(p, rng), rng)


@st.composite
def flat_depthwise_params(draw):
    """Stride-1 depthwise layers that conv.eval_depthwise_flat evaluates (at most 3x3 taps, so
    no block-diagonal GEMM), a batch of 1..5 and that path's block / tile / requant choices."""
    p = _window(draw, max_hw=9)
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    p.update(kh=kh, kw=kw, sh=1, sw=1, h=max(p["h"], (kh - 1) * p["dh"] + 1), w=max(p["w"], (kw - 1) * p["dw"] + 1),
             n=draw(st.integers(1, 5)), cin=draw(st.integers(1, 6)), mult=draw(st.integers(1, 3)),
             per_channel=draw(st.booleans()), bias=draw(st.booleans()), act=draw(st.sampled_from(ACTS)),
             gain=draw(GAINS))
    knobs = dict(CHUNK_ELEMENTS=draw(st.sampled_from([5, 40, 100, 1 << 16])),
                 FLAT_TILE=draw(st.sampled_from([1, 8, 4096])), GRID_REQUANT_MAX=draw(st.sampled_from([0.0, 100.0])))
    return p, knobs


@seed(20261130)
@settings(PROPERTY, max_examples=60)
@given(flat_depthwise_params(), st.integers(0, 2**32 - 1))
def test_flat_depthwise_matches_references(pk, s):
    """conv.eval_depthwise_flat (stride 1 on the padded input's flat layout, padding rows and
    columns computed and dropped) == LiteRT BUILTIN_REF and TFLM on a batch of 1..5 samples, in
    blocks of several samples, one sample or a few output rows (conv.CHUNK_ELEMENTS), einsum rows
    of one or many channel groups (conv.FLAT_TILE), requantizing the whole grid or only the outputs
    (conv.GRID_REQUANT_MAX); depth multipliers 1..3, dilations, SAME / VALID."""
    from qsim.kernels import conv
    _depthwise_bitexact_on_path(pk, s, conv._flat_depthwise)


def _depthwise_bitexact_on_path(pk, s, on_path) -> None:
    """assert_bitexact on the depthwise model of ``pk`` = (params, {conv module constant: value}),
    with those constants set, after checking that ``on_path(prepared params)`` holds."""
    from qsim.kernels import conv
    p, knobs = pk
    rng = np.random.default_rng(s)
    blob = depthwise_model(p, rng)
    g = load_bytes(blob)
    op = g.operators[0]
    with pytest.MonkeyPatch.context() as mp:
        for name, value in knobs.items():
            mp.setattr(conv, name, value)
        params = REGISTRY["DEPTHWISE_CONV_2D"].prepare(op, g, get_profile("tflm"))
        assert on_path(params)
        assert_bitexact(blob, rng)


@st.composite
def phased_depthwise_params(draw):
    """Strided depthwise layers that conv.eval_depthwise_phased evaluates (no dilation, depth
    multiplier 1, a batch of 2..5), with its block and tile choices."""
    p = _window(draw, max_hw=9)
    sh, sw = draw(st.sampled_from([(2, 2), (2, 1), (1, 2), (3, 3), (3, 2)]))
    p.update(dh=1, dw=1, sh=sh, sw=sw, h=max(p["h"], p["kh"]), w=max(p["w"], p["kw"]),
             n=draw(st.integers(2, 5)), cin=draw(st.integers(1, 6)), mult=1,
             per_channel=draw(st.booleans()), bias=draw(st.booleans()), act=draw(st.sampled_from(ACTS)),
             gain=draw(GAINS))
    knobs = dict(CHUNK_ELEMENTS=draw(st.sampled_from([5, 40, 100, 1 << 16])), FLAT_TILE=draw(st.sampled_from([1, 8, 4096])))
    return p, knobs


@seed(20261201)
@settings(PROPERTY, max_examples=50)
@given(phased_depthwise_params(), st.integers(0, 2**32 - 1))
def test_phased_depthwise_matches_references(pk, s):
    """conv.eval_depthwise_phased (strides 1..3 per axis, one above 1; the padded input split
    into phase images, taps past the kernel as zero weights, grid positions past the output
    computed and dropped) == LiteRT BUILTIN_REF and TFLM on a batch of 2..5 samples, in blocks
    of one or several samples (conv.CHUNK_ELEMENTS), einsum rows of one or many channel groups
    (conv.FLAT_TILE); kernels 1..4 x 1..4, SAME / VALID."""
    from qsim.kernels import conv
    n = pk[0]["n"]
    _depthwise_bitexact_on_path(pk, s, lambda q: conv._phased_depthwise(q, n) and not conv._flat_depthwise(q))


@seed(20261124)
@PROPERTY
@given(fc_params(), st.integers(0, 2**32 - 1))
def test_fully_connected_matches_references(p, s):
    rng = np.random.default_rng(s)
    assert_bitexact(fc_model(p, rng), rng)


@seed(20261125)
@PROPERTY
@given(pool_params(), st.integers(0, 2**32 - 1))
def test_pooling_matches_references(p, s):
    rng = np.random.default_rng(s)
    assert_bitexact(pool_model(p, rng), rng)


@seed(20261126)
@PROPERTY
@given(mean_params(), st.integers(0, 2**32 - 1))
def test_mean_matches_references(p, s):
    rng = np.random.default_rng(s)
    assert_bitexact(mean_model(p, rng), rng)


def test_litert_refuses_int8_conv_without_bias_and_tflm_runs_it():
    rng = np.random.default_rng(3)
    p = dict(padding="SAME", kh=3, kw=3, dh=1, dw=1, sh=1, sw=1, h=6, w=6, n=1, cin=2, cout=3,
             per_channel=True, bias=False, act="NONE")
    blob = conv_model(p, rng)
    from qsim.reference import ReferenceRefused
    with pytest.raises(ReferenceRefused, match="has_bias"):
        make_runner("litert", blob)
    assert_bitexact(blob, rng, refs=("tflm",))


# ------------------------------------------------------------------ rounding findings (discriminating cases)

def tie_model(opcode: str, per_channel: bool, rng) -> bytes:
    """Scales with power-of-two real multipliers (1/4 .. 1/32), so many accumulators land on exact .5 ties.

    On such values double rounding (SRDHM then RoundingDivideByPOT), single rounding
    (round half up) and float rescale (round half away from zero) all disagree somewhere.
    """
    c = 4
    w_scales = np.array([0.5, 1.0, 2.0, 0.25]) if per_channel else np.array([0.5])
    zp = np.zeros(w_scales.size, np.int64)
    b = ModelBuilder(description="rounding ties")
    if opcode == "FULLY_CONNECTED":
        x = b.add_input("x", (64, 16), np.int8, scale=0.5, zero_point=0)
        w = b.add_const("w", rng.integers(-3, 4, (c, 16)).astype(np.int8), scale=w_scales, zero_point=zp, axis=0)
        y = b.add_tensor("y", (64, c), np.int8, scale=4.0, zero_point=0)
        opts = ir.FullyConnectedOptions()
    elif opcode == "CONV_2D":
        x = b.add_input("x", (1, 16, 16, 3), np.int8, scale=0.5, zero_point=0)
        w = b.add_const("w", rng.integers(-3, 4, (c, 1, 1, 3)).astype(np.int8), scale=w_scales, zero_point=zp, axis=0)
        y = b.add_tensor("y", (1, 16, 16, c), np.int8, scale=4.0, zero_point=0)
        opts = ir.Conv2DOptions()
    else:
        x = b.add_input("x", (1, 16, 16, c), np.int8, scale=0.5, zero_point=0)
        w = b.add_const("w", rng.integers(-3, 4, (1, 1, 1, c)).astype(np.int8), scale=w_scales, zero_point=zp, axis=3)
        y = b.add_tensor("y", (1, 16, 16, c), np.int8, scale=4.0, zero_point=0)
        opts = ir.DepthwiseConv2DOptions()
    bias = b.add_const("b", rng.integers(-5, 5, c).astype(np.int32), scale=0.5 * w_scales, zero_point=zp, axis=0)
    b.add_op(opcode, [x, w, bias], [y], opts)
    b.mark_output(y)
    return b.build()


def _variant_outputs(blob, x):
    from qsim.profiles import Profile
    g = load_bytes(blob)
    t = g.operators[0].outputs[0]
    variants = {
        "double": Profile("double", "", "double"),
        "single": Profile("single", "", "single"),
        "float_rescale": Profile("float", "", "double", variant_per_op={"FULLY_CONNECTED": "float_rescale"}),
    }
    return t, {k: prepare_graph(g, v).run([x])[t] for k, v in variants.items()}


# which algorithm each reference runs, per op and weight quantization (the finding recorded in qsim/profiles.py)
EXPECTED_ALGORITHM = {
    ("CONV_2D", "litert"): "double", ("CONV_2D", "tflm"): "double",
    ("DEPTHWISE_CONV_2D", "litert"): "double", ("DEPTHWISE_CONV_2D", "tflm"): "double",
    ("FULLY_CONNECTED", "litert"): "float_rescale", ("FULLY_CONNECTED", "tflm"): "double",
}


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("opcode", ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"])
def test_rounding_algorithm_per_reference(opcode, per_channel):
    rng = np.random.default_rng(1)
    blob = tie_model(opcode, per_channel, rng)
    x = rng.integers(-20, 20, size=load_bytes(blob).tensors[0].shape).astype(np.int8)
    t, ours = _variant_outputs(blob, x)
    if opcode != "FULLY_CONNECTED":
        ours.pop("float_rescale")  # the variant only exists for FULLY_CONNECTED
    for ref in REFS:
        theirs = np.asarray(reference_outputs(blob, ref, x, [t])[t]).reshape(ours["double"].shape)
        expected = EXPECTED_ALGORITHM[(opcode, ref)]
        assert np.array_equal(ours[expected], theirs), f"{ref} no longer runs {expected} rounding for {opcode}"
        for name, arr in ours.items():
            if name != expected:  # the case really discriminates between the algorithms
                assert not np.array_equal(arr, theirs), f"{name} also matches {ref}: the tie case is too weak"
        prof_out = prepare_graph(load_bytes(blob), ref).run([x])[t]
        assert np.array_equal(prof_out, theirs)


def test_litert_fc_rescales_by_the_unquantized_double_scale():
    """in_scale * w_scale = 0.5 - 2**-47 exactly; QuantizeMultiplier rounds that to M0 = 2**30 (0.5).

    Hand-derived: the true products x * (0.5 - 2**-47) for x = 1, 3, 5, -1, -3, -5 round to
    0, 1, 2, 0, -1, -2 (never a tie); TFLite's fixed point with the rounded 0.5 gives
    SRDHM ties upward: 1, 2, 3, 0, -1, -2.  LiteRT must give the former, TFLM the latter.
    """
    in_s, w_s = float(np.float32(1 - 2**-23)), float(np.float32(0.5 + 2**-24))
    assert in_s * w_s == 0.5 - 2**-47
    b = ModelBuilder(description="fc scale precision")
    x = b.add_input("x", (1, 6), np.int8, scale=in_s, zero_point=0)
    w = b.add_const("w", np.eye(6, dtype=np.int8), scale=w_s, zero_point=0)
    y = b.add_tensor("y", (1, 6), np.int8, scale=1.0, zero_point=0)
    b.add_op("FULLY_CONNECTED", [x, w, -1], [y], ir.FullyConnectedOptions())
    b.mark_output(y)
    blob = b.build()
    xv = np.array([[1, 3, 5, -1, -3, -5]], np.int8)
    expected = {"litert": [0, 1, 2, 0, -1, -2], "tflm": [1, 2, 3, 0, -1, -2]}
    g = load_bytes(blob)
    for ref, want in expected.items():
        assert reference_outputs(blob, ref, xv, [y])[y].ravel().tolist() == want
        assert prepare_graph(g, ref).run([xv])[y].ravel().tolist() == want


# ------------------------------------------------------------------ hand-derived cases

def _srdhm(a: int, b: int) -> int:
    """Python-int SaturatingRoundingDoublingHighMul (C semantics), independent of qsim.fixedpoint."""
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    q = abs(ab + nudge) >> 31
    return q if ab + nudge >= 0 else -q


def _rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    rem, thr = x & mask, (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


def test_hand_derived_1x1_conv():
    """1x1 conv, 2 input channels -> 1 output, per-tensor scales chosen so M = 0.75 exactly.

    in_scale 0.5, w_scale 0.375, out_scale 0.25: M = 0.75 = 0.75 * 2**0 -> M0 = 0.75 * 2**31
    = 1610612736, shift 0.  Pixel (x0, x1) = (10, -7), x_zp = 2, w = (3, -5), bias = 4:
    acc = (10-2)*3 + (-7-2)*(-5) + 4 = 24 + 45 + 4 = 73; 73 * 0.75 = 54.75 -> 55; + out_zp (-3) = 52.
    Pixel (-128, 127): acc = (-130)*3 + (125)*(-5) + 4 = -390 - 625 + 4 = -1011 -> -758.25 -> -758,
    + (-3) = -761 -> clamped to -128.  Pixel (2, 3): acc = 0 + 1*(-5) + 4 = -1 -> -0.75 -> -1 -> -4.
    """
    m0 = 1610612736
    for acc, want in ((73, 55), (-1011, -758), (-1, -1)):
        assert _rdbpot(_srdhm(acc, m0), 0) == want  # the hand arithmetic agrees with TFLite's formula
    b = ModelBuilder(description="hand 1x1 conv")
    x = b.add_input("x", (1, 1, 3, 2), np.int8, scale=0.5, zero_point=2)
    w = b.add_const("w", np.array([3, -5], np.int8).reshape(1, 1, 1, 2), scale=0.375, zero_point=0)
    bias = b.add_const("b", np.array([4], np.int32), scale=0.1875, zero_point=0)
    y = b.add_tensor("y", (1, 1, 3, 1), np.int8, scale=0.25, zero_point=-3)
    b.add_op("CONV_2D", [x, w, bias], [y], ir.Conv2DOptions(padding="VALID"))
    b.mark_output(y)
    blob = b.build()
    xv = np.array([10, -7, -128, 127, 2, 3], np.int8).reshape(1, 1, 3, 2)
    want = [52, -128, -4]
    for prof in ("tflm", "litert", "single"):
        assert prepare_graph(load_bytes(blob), prof).run([xv])[y].ravel().tolist() == want
    for ref in REFS:
        assert reference_outputs(blob, ref, xv, [y])[y].ravel().tolist() == want


def test_hand_derived_average_pool_rounding():
    """2x2 average pool, VALID: sums 5 -> (5+2)//4 = 1; -6 -> -(6+2)//4 = -2; -2 -> -(2+2)//4 = -1; 2 -> 1."""
    b = ModelBuilder(description="hand avgpool")
    x = b.add_input("x", (1, 2, 8, 1), np.int8, scale=0.1, zero_point=0)
    y = b.add_tensor("y", (1, 1, 4, 1), np.int8, scale=0.1, zero_point=0)
    b.add_op("AVERAGE_POOL_2D", [x], [y], ir.Pool2DOptions(padding="VALID", stride_h=2, stride_w=2,
                                                           filter_h=2, filter_w=2))
    b.mark_output(y)
    blob = b.build()
    xv = np.array([[2, 1, -3, -3, -1, -1, 1, 1], [1, 1, 0, 0, 0, 0, 0, 0]], np.int8).reshape(1, 2, 8, 1)
    want = [1, -2, -1, 1]
    assert prepare_graph(load_bytes(blob), "tflm").run([xv])[y].ravel().tolist() == want
    for ref in REFS:
        assert reference_outputs(blob, ref, xv, [y])[y].ravel().tolist() == want


def test_pool_window_sums_match_direct_sum():
    """pooling.window_sums (two 0/1 matmuls for large windows, one pass per tap for small ones) ==
    a direct Python-int sum over each window's in-bounds cells, for windows up to 9x7 (global
    pools included), both paddings and strides 1-3."""
    from qsim.kernels import pooling
    from qsim.kernels.conv import compute_out_size, compute_padding
    rng = np.random.default_rng(5)
    for trial in range(60):
        fh, fw = int(rng.integers(1, 10)), int(rng.integers(1, 8))
        h, w = int(rng.integers(fh, 14)), int(rng.integers(fw, 12))
        if trial % 5 == 0:
            fh, fw = h, w  # a global pool
        sh, sw, padding = int(rng.integers(1, 4)), int(rng.integers(1, 4)), ["SAME", "VALID"][trial % 2]
        oh, ow = compute_out_size(padding, h, fh, sh), compute_out_size(padding, w, fw, sw)
        ph, pw = compute_padding(sh, 1, h, fh, oh), compute_padding(sw, 1, w, fw, ow)
        p = pooling.PoolParams(fh, fw, sh, sw, ph, pw, oh, ow, np.ones((oh, ow), np.int64), -128, 127)
        x = rng.integers(-128, 128, (2, h, w, 3)).astype(np.int8)
        want = np.zeros((2, oh, ow, 3), np.int64)
        for i in range(oh):
            for j in range(ow):
                r0, c0 = i * sh - ph, j * sw - pw
                win = x[:, max(r0, 0):max(r0 + fh, 0), max(c0, 0):max(c0 + fw, 0)].astype(np.int64)
                want[:, i, j] = win.sum(axis=(1, 2))
        np.testing.assert_array_equal(pooling.window_sums(p, x), want, err_msg=f"trial {trial}")


# ------------------------------------------------------------------ the accumulate seam

def _naive_conv_acc(x, w, x_zp, stride, dil, pad):
    """Direct 7-loop convolution with Python ints (independent of qsim's im2col)."""
    n, h, wd, c = x.shape
    oc, kh, kw, _ = w.shape
    oh = (h + 2 * pad - (kh - 1) * dil - 1) // stride + 1
    ow = (wd + 2 * pad - (kw - 1) * dil - 1) // stride + 1
    acc = np.zeros((n, oh, ow, oc), np.int64)
    for b_ in range(n):
        for i in range(oh):
            for j in range(ow):
                for o in range(oc):
                    s = 0
                    for u in range(kh):
                        for v in range(kw):
                            yy, xx = i * stride - pad + u * dil, j * stride - pad + v * dil
                            if 0 <= yy < h and 0 <= xx < wd:
                                for k in range(c):
                                    s += (int(x[b_, yy, xx, k]) - x_zp) * int(w[o, u, v, k])
                    acc[b_, i, j, o] = s
    return acc


def test_accumulate_seam_conv_dw_fc():
    rng = np.random.default_rng(7)
    p = dict(padding="SAME", kh=3, kw=3, dh=2, dw=2, sh=2, sw=2, h=7, w=7, n=1, cin=3, cout=4,
             per_channel=True, bias=True, act="RELU")
    blobs = {
        "CONV_2D": conv_model(p, rng),
        "DEPTHWISE_CONV_2D": depthwise_model(dict(p, mult=2), rng),
        "FULLY_CONNECTED": fc_model(dict(in_shape=[2, 3, 5], units=7, in_units=15, keep_num_dims=False,
                                         per_channel=True, bias=True, act="RELU6"), rng),
    }
    for opcode, blob in blobs.items():
        g = load_bytes(blob)
        op = g.operators[0]
        x = rng.integers(-128, 128, size=g.tensors[op.inputs[0]].shape).astype(np.int8)
        ins = [x] + [None if i < 0 else g.tensors[i].data for i in op.inputs[1:]]
        for prof in ("tflm", "litert"):
            k = REGISTRY[opcode]
            params = k.prepare(op, g, get_profile(prof))
            acc = k.accumulate(params, ins)
            assert acc.dtype == np.int64
            out = k.eval(params, ins)[0]
            assert np.array_equal(params.requant.apply(acc), out)
            assert acc.shape[-1] == params.requant.multiplier.size
    # CONV_2D accumulators against a direct loop: SAME, k=3, dilation 2 -> effective 5, stride 2, 7 -> 4, pad 2
    g = load_bytes(blobs["CONV_2D"])
    op = g.operators[0]
    x = rng.integers(-128, 128, size=(1, 7, 7, 3)).astype(np.int8)
    params = REGISTRY["CONV_2D"].prepare(op, g, get_profile("tflm"))
    acc = REGISTRY["CONV_2D"].accumulate(params, [x, g.tensors[op.inputs[1]].data])
    want = _naive_conv_acc(x, g.tensors[op.inputs[1]].data, g.tensors[op.inputs[0]].quant.zp0, 2, 2, 2)
    assert np.array_equal(acc, want)


@pytest.mark.parametrize("chunk", [5, 40, 100, 1 << 16])
@pytest.mark.parametrize("dense_max,einsum,flat_max", [(0, False, 0), (16, False, 0), (0, True, 0), (0, False, 64)])
def test_conv_blocks_equal_whole_layer(monkeypatch, chunk, dense_max, einsum, flat_max):
    """CONV_2D / DEPTHWISE_CONV_2D eval in blocks (several samples, one sample, or a few output
    rows of one sample per block, by conv.CHUNK_ELEMENTS), depthwise by taps, as a
    block-diagonal GEMM (conv.DENSE_DEPTHWISE_MAX_CHANNELS), as one einsum (params.einsum) or
    on the flat layout (conv.FLAT_DEPTHWISE_MAX_CHANNELS, conv.eval_depthwise_flat)
    == fixedpoint.requantize of the whole layer's accumulators from the direct loop (the plain
    definition), on a batch of 3."""
    from qsim import fixedpoint as fp
    from qsim.kernels import conv
    monkeypatch.setattr(conv, "CHUNK_ELEMENTS", chunk)
    monkeypatch.setattr(conv, "FLAT_DEPTHWISE_MAX_CHANNELS", flat_max)
    rng = np.random.default_rng(8)
    p = dict(padding="SAME", kh=3, kw=3, dh=1, dw=1, sh=1, sw=1, h=9, w=7, n=1, cin=3, cout=4,
             per_channel=True, bias=True, act="RELU6")
    monkeypatch.setattr(conv, "DENSE_DEPTHWISE_MAX_CHANNELS", dense_max)
    dw = dict(p, mult=2, kh=4, padding="VALID")  # 4x3 taps: the block-diagonal GEMM applies when allowed
    for opcode, blob in (("CONV_2D", conv_model(p, rng)), ("DEPTHWISE_CONV_2D", depthwise_model(dw, rng))):
        g = load_bytes(blob)
        op = g.operators[0]
        x = rng.integers(-128, 128, size=(3,) + tuple(g.tensors[op.inputs[0]].shape[1:])).astype(np.int8)
        ins = [x] + [None if i < 0 else g.tensors[i].data for i in op.inputs[1:]]
        k = REGISTRY[opcode]
        params = k.prepare(op, g, get_profile("tflm"))
        assert (params.dense_weights is not None) == (opcode == "DEPTHWISE_CONV_2D" and dense_max > 0)
        if opcode == "DEPTHWISE_CONV_2D":
            assert conv._flat_depthwise(params) == (flat_max > 0)
        params.einsum = einsum and opcode == "DEPTHWISE_CONV_2D"
        w = g.tensors[op.inputs[1]].data
        if opcode == "DEPTHWISE_CONV_2D":  # as a conv whose output channel c reads input channel c // 2
            xin = np.repeat(x, 2, axis=3).astype(np.int64)
            xin[..., :] -= g.tensors[op.inputs[0]].quant.zp0
            wd = np.zeros((6, 4, 3, 6), np.int64)
            wd[np.arange(6), :, :, np.arange(6)] = w[0].transpose(2, 0, 1)
            acc = _naive_conv_acc(xin, wd, 0, 1, 1, 0)
        else:
            acc = _naive_conv_acc(x, w, g.tensors[op.inputs[0]].quant.zp0, 1, 1, 1)
        rq = params.requant
        want = fp.requantize(acc, rq.bias, rq.multiplier, rq.shift, rq.output_zero_point,
                             rq.act_min, rq.act_max, rq.rounding)
        np.testing.assert_array_equal(k.eval(params, ins)[0], want.astype(np.int8), err_msg=opcode)


@pytest.mark.parametrize("chunk", [5, 40, 1 << 16])
@pytest.mark.parametrize("profile", ["tflm", "single"])
def test_pointwise_conv_blocks_equal_whole_layer(monkeypatch, chunk, profile):
    """A 1x1 stride-1 CONV_2D on a batch as one pixel matrix cut in blocks across samples
    (conv.eval_pointwise; "tflm": the folded requant plan's affine map inside the float64 GEMM,
    "single": the centred input and single rounding) == fixedpoint.requantize of the direct loop's accumulators, on a batch of 3."""
    from qsim import fixedpoint as fp
    from qsim.kernels import conv
    monkeypatch.setattr(conv, "CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(9)
    p = dict(padding="VALID", kh=1, kw=1, dh=1, dw=1, sh=1, sw=1, h=5, w=7, n=1, cin=6, cout=9,
             per_channel=True, bias=True, act="RELU")
    g = load_bytes(conv_model(p, rng))
    op = g.operators[0]
    x = rng.integers(-128, 128, size=(3, 5, 7, 6)).astype(np.int8)
    k = REGISTRY["CONV_2D"]
    params = k.prepare(op, g, get_profile(profile))
    assert (conv.folded_requant(params) is not None) == (profile == "tflm")
    if profile == "tflm":  # 6 input channels, a fused RELU: the requant folded into the GEMM
        assert conv._affine_gemm(params, conv.folded_requant(params).apply) is not None
    acc = _naive_conv_acc(x, g.tensors[op.inputs[1]].data, g.tensors[op.inputs[0]].quant.zp0, 1, 1, 0)
    rq = params.requant
    want = fp.requantize(acc, rq.bias, rq.multiplier, rq.shift, rq.output_zero_point, rq.act_min, rq.act_max,
                         rq.rounding)
    got = k.eval(params, [x, g.tensors[op.inputs[1]].data, g.tensors[op.inputs[2]].data])[0]
    assert got.shape == (3, 5, 7, 9)
    np.testing.assert_array_equal(got, want.astype(np.int8))


@pytest.mark.parametrize("native", ["0", "1"])
def test_pointwise_affine_gemm_exact_on_extremes(native, monkeypatch):
    """The pointwise GEMM with the requant folded in (conv.eval_pointwise) on the largest
    accumulators int8 allows (every input -128 or 127, every weight +-127, 32 input channels) and
    a bias: == fixedpoint.requantize of the int64 definition, for output scales that put those
    extremes inside, at and beyond the clamp (multipliers from 2**-12 to about 1).  With
    QSIM_NATIVE=0 the fused GEMM runs; with the native requantization (where gcc builds it) these
    large blocks take the plain float32 GEMM and the native requantization instead."""
    monkeypatch.setenv("QSIM_NATIVE", native)
    from qsim import fixedpoint as fp
    from qsim.kernels import conv
    rng = np.random.default_rng(12)
    c_in, c_out = 32, 5
    wq = np.where(rng.random((c_out, 1, 1, c_in)) < 0.8, 127, -127).astype(np.int8)
    wq[0] = 127
    for out_scale in (0.001, 0.3, 40.0):
        b = ModelBuilder(description="pointwise extremes")
        x = b.add_input("x", (1, 2, 3, c_in), np.int8, scale=0.02, zero_point=-128)
        ws = np.full(c_out, 0.01)
        w = b.add_const("w", wq, scale=ws, zero_point=np.zeros(c_out, np.int64), axis=0)
        bias = b.add_const("b", rng.integers(-20000, 20000, c_out).astype(np.int32), scale=ws * 0.02,
                           zero_point=np.zeros(c_out, np.int64), axis=0)
        y = b.add_tensor("y", (1, 2, 3, c_out), np.int8, scale=out_scale, zero_point=-128)
        b.add_op("CONV_2D", [x, w, bias], [y], ir.Conv2DOptions(padding="VALID", activation="RELU"))
        b.mark_output(y)
        g = load_bytes(b.build())
        op = g.operators[0]
        xv = np.where(rng.random((50, 2, 3, c_in)) < 0.5, -128, 127).astype(np.int8)
        xv[0], xv[1] = -128, 127
        # and many random pixels: outputs within float32-sized errors of a rounding step occur
        xv = np.concatenate([xv, rng.integers(-128, 128, (10000, 2, 3, c_in)).astype(np.int8)])
        k = REGISTRY["CONV_2D"]
        params = k.prepare(op, g, get_profile("tflm"))
        assert conv._affine_gemm(params, conv.folded_requant(params).apply) is not None
        if native == "0":
            assert not conv.folded_requant(params).native_available()  # the fused path runs
        acc = np.einsum("nhwc,oc->nhwo", xv.astype(np.int64) + 128, wq[:, 0, 0].astype(np.int64))
        rq = params.requant
        want = fp.requantize(acc, rq.bias, rq.multiplier, rq.shift, rq.output_zero_point, rq.act_min,
                             rq.act_max, rq.rounding)
        assert len(np.unique(want)) > 2 or out_scale != 40.0
        got = k.eval(params, [xv, None, None])[0]
        np.testing.assert_array_equal(got, want.astype(np.int8), err_msg=str(out_scale))


# ------------------------------------------------------------------ real models, op by op

def _per_op_check(path, reference, kinds=("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
                                          "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN")) -> int:
    """Feed each of our ops the reference's own inputs; require the reference's own output."""
    blob = path.read_bytes()
    g = load(path)
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, size=g.tensors[g.inputs[0]].shape).astype(np.int8)
    ops = [op for op in g.operators if op.opcode in kinds]
    wanted = sorted({i for op in ops for i in op.inputs + op.outputs if i >= 0 and not g.tensors[i].is_const})
    ref = reference_outputs(blob, reference, x, wanted)
    prof = get_profile(reference)
    for op in ops:
        k = REGISTRY[op.opcode]
        params = k.prepare(op, g, prof)
        ins = [None if i < 0 else (g.tensors[i].data if g.tensors[i].is_const else ref[i]) for i in op.inputs]
        out = k.eval(params, ins)[0]
        theirs = ref[op.outputs[0]]
        assert np.array_equal(np.asarray(out).reshape(theirs.shape), theirs), \
            f"{path.name} op #{op.index} {op.opcode} differs from {reference}"
    return len(ops)


@pytest.mark.parametrize("name", ["kws_ref_model.tflite", "vww_96_int8.tflite", "pretrainedResnet_quant.tflite",
                                  "ad01_int8.tflite", "micro_speech_quantized.tflite"])
def test_real_model_ops_match_both_references(name):
    path = shared_model(name)
    for ref in REFS:
        assert _per_op_check(path, ref) > 0


def test_person_detect_ops_match_tflm():
    """LiteRT refuses person_detect (bias quantized_dimension 3); qsim ignores bias scales and matches TFLM."""
    assert _per_op_check(shared_model("person_detect.tflite"), "tflm") == 29


# ------------------------------------------------------------------ bad input -> QsimError

def _fc_graph(**changes):
    b = ModelBuilder(description="bad fc")
    dtype = changes.get("dtype", np.int8)
    x = b.add_input("x", (1, 4), dtype, scale=0.1, zero_point=0)
    w = b.add_const("w", np.ones((2, 4), np.int8), scale=0.1, zero_point=0)
    y = b.add_tensor("y", (1, 2), changes.get("out_dtype", dtype), scale=0.1, zero_point=0)
    b.add_op("FULLY_CONNECTED", [x, w, -1], [y],
             ir.FullyConnectedOptions(weights_format=changes.get("weights_format", 0)))
    b.mark_output(y)
    return load_bytes(b.build())


def test_int16_activations_are_rejected_with_a_message():
    """int16 in, int8 out: no TFLite kernel (int16x8 FC itself runs: tests/test_int16x8.py)."""
    g = _fc_graph(dtype=np.int16, out_dtype=np.int8)
    with pytest.raises(QsimError, match="int16"):
        REGISTRY["FULLY_CONNECTED"].prepare(g.operators[0], g, get_profile("tflm"))
    with pytest.raises(QsimError, match="int16"):
        prepare_graph(g, "tflm")


def test_shuffled_fc_weights_are_rejected():
    g = _fc_graph(weights_format=1)
    with pytest.raises(QsimError, match="shuffled"):
        prepare_graph(g, "tflm")


def test_conv_with_weight_zero_point_or_runtime_weights_is_rejected():
    b = ModelBuilder(description="bad conv")
    x = b.add_input("x", (1, 4, 4, 2), np.int8, scale=0.1, zero_point=0)
    w = b.add_const("w", np.ones((3, 1, 1, 2), np.int8), scale=0.1, zero_point=5)
    bias = b.add_const("b", np.zeros(3, np.int32), scale=0.01, zero_point=0)
    y = b.add_tensor("y", (1, 4, 4, 3), np.int8, scale=0.1, zero_point=0)
    b.add_op("CONV_2D", [x, w, bias], [y], ir.Conv2DOptions())
    b.mark_output(y)
    with pytest.raises(QsimError, match="zero point"):
        prepare_graph(load_bytes(b.build()), "tflm")
    b = ModelBuilder(description="runtime weights")
    x = b.add_input("x", (1, 4, 4, 2), np.int8, scale=0.1, zero_point=0)
    w = b.add_input("w", (3, 1, 1, 2), np.int8, scale=0.1, zero_point=0)
    y = b.add_tensor("y", (1, 4, 4, 3), np.int8, scale=0.1, zero_point=0)
    b.add_op("CONV_2D", [x, w], [y], ir.Conv2DOptions())
    b.mark_output(y)
    with pytest.raises(QsimError, match="constant"):
        prepare_graph(load_bytes(b.build()), "tflm")


# ------------------------------------------------------------------ the fast requantizer

def test_requantize_double_fast_equals_requantize():
    """The few-pass double-rounding requantizer the conv/fc kernels use == fixedpoint.requantize."""
    from qsim import fixedpoint as fp
    rng = np.random.default_rng(2026)
    edges = np.array([2**31 - 1, -2**31, 0, 1, -1, 2**30, -2**30, -(2**30) - 1, 2**31, -2**31 - 1, 3, -3])
    for trial in range(300):
        c = int(rng.integers(1, 6))
        m0 = rng.integers(0, 2**31, c)
        m0[rng.random(c) < 0.3] = 1 << 30  # exact ties
        shift = rng.integers(-31, 8, c) if trial % 3 else rng.integers(-12, 1, c)
        acc = rng.integers(-2**33, 2**33, (120, c))  # includes int32 wrap-around of acc + bias
        acc[:50] = rng.integers(-3000, 3000, (50, c))
        acc[50:50 + edges.size] = edges[:, None]
        bias = rng.integers(-2**31, 2**31, c)
        zp = int(rng.integers(-128, 128))
        lo, hi = (-128, 127) if trial % 2 else (-2**31, 2**31 - 1)
        want = fp.requantize(acc, bias, m0, shift, zp, lo, hi, "double")
        got = fp.requantize_double_fast(acc, bias, m0, shift, zp, lo, hi)
        assert np.array_equal(got, want), (m0, shift, bias, zp)


@pytest.mark.parametrize("opcode", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
def test_pool_with_different_in_out_quantization_is_rejected(opcode):
    """TFLM refuses it, LiteRT ignores the output scale; qsim says why instead of guessing."""
    b = ModelBuilder(description="pool rescale")
    x = b.add_input("x", (1, 4, 4, 2), np.int8, scale=0.1, zero_point=3)
    y = b.add_tensor("y", (1, 2, 2, 2), np.int8, scale=0.3, zero_point=-5)
    b.add_op(opcode, [x], [y], ir.Pool2DOptions(padding="VALID", stride_h=2, stride_w=2, filter_h=2, filter_w=2))
    b.mark_output(y)
    with pytest.raises(QsimError, match="quantized differently"):
        prepare_graph(load_bytes(b.build()), "litert")


def test_large_reductions_switch_to_float64_and_stay_exact():
    """3x3x300 taps of |w| = 127 push partial sums past 2**24: float32 would round, so the kernel must
    pick float64.  Extreme inputs (all -128 with zero point 127 -> x - zp = -255) maximise every product."""
    rng = np.random.default_rng(9)
    b = ModelBuilder(description="big reduction")
    x = b.add_input("x", (1, 5, 5, 300), np.int8, scale=0.02, zero_point=127)
    wq = np.where(rng.random((4, 3, 3, 300)) < 0.9, 127, -127).astype(np.int8)
    ws = np.full(4, 0.01)
    w = b.add_const("w", wq, scale=ws, zero_point=np.zeros(4, np.int64), axis=0)
    bias = b.add_const("b", rng.integers(-1000, 1000, 4).astype(np.int32), scale=0.02 * ws,
                       zero_point=np.zeros(4, np.int64), axis=0)
    y = b.add_tensor("y", (1, 5, 5, 4), np.int8, scale=4000.0, zero_point=0)
    b.add_op("CONV_2D", [x, w, bias], [y], ir.Conv2DOptions(padding="SAME"))
    b.mark_output(y)
    blob = b.build()
    g = load_bytes(blob)
    params = REGISTRY["CONV_2D"].prepare(g.operators[0], g, get_profile("tflm"))
    assert params.weights.dtype == np.float64
    xv = np.full((1, 5, 5, 300), -128, np.int8)
    xv[0, 2, 2, :7] = 100
    acc = REGISTRY["CONV_2D"].accumulate(params, [xv])
    centre = int(sum((int(v) - 127) * int(wv) for v, wv in zip(xv[0, 1:4, 1:4, :].ravel(),
                                                                   wq[0].ravel())))
    assert acc[0, 2, 2, 0] == centre and abs(centre) > 2**24
    for ref in REFS:
        theirs = reference_outputs(blob, ref, xv, [y])[y]
        assert np.array_equal(prepare_graph(g, ref).run([xv])[y], theirs)


@pytest.mark.parametrize("kernel", [3, 23])
def test_depthwise_paths_exact_on_extreme_inputs(kernel):
    """Every depthwise path (taps, einsum, block-diagonal GEMM) == the direct loop at the worst
    extremes: x - zp = -255 everywhere but a few +227 pixels, |w| = 127, 64 channels.  A 3x3
    kernel keeps float32 (bound 9 * 255 * 127 < 2**24); 23x23 taps push the bound past 2**24
    so the weights must be float64 -- a float32 sum would round there."""
    from qsim.kernels import conv
    rng = np.random.default_rng(12)
    c, hw = 64, kernel + 2
    b = ModelBuilder(description="depthwise extremes")
    x = b.add_input("x", (1, hw, hw, c), np.int8, scale=0.02, zero_point=127)
    wq = np.where(rng.random((1, kernel, kernel, c)) < 0.9, 127, -127).astype(np.int8)
    wq[..., 0] = 127  # channel 0: every product -255 * 127, the largest sum
    ws = np.full(c, 0.01)
    w = b.add_const("w", wq, scale=ws, zero_point=np.zeros(c, np.int64), axis=3)
    y = b.add_tensor("y", (1, hw, hw, c), np.int8, scale=4000.0, zero_point=0)
    b.add_op("DEPTHWISE_CONV_2D", [x, w], [y], ir.DepthwiseConv2DOptions(padding="SAME", depth_multiplier=1))
    b.mark_output(y)
    g = load_bytes(b.build())
    op = g.operators[0]
    xv = np.full((2, hw, hw, c), -128, np.int8)
    xv[1, hw // 2, hw // 2, :5] = 100
    pad = (kernel - 1) // 2  # the plain definition in int64: zero-padded (x - zp) times each tap
    xp = np.zeros((2, hw + 2 * pad, hw + 2 * pad, c), np.int64)
    xp[:, pad:pad + hw, pad:pad + hw] = xv.astype(np.int64) - 127
    want = sum(xp[:, u:u + hw, v:v + hw] * wq[0, u, v].astype(np.int64)
               for u in range(kernel) for v in range(kernel))
    assert (np.abs(want).max() > 2**24) == (kernel == 23)
    k = REGISTRY["DEPTHWISE_CONV_2D"]
    for path in ("taps", "einsum", "dense"):
        params = k.prepare(op, g, get_profile("tflm"))
        assert params.weights.dtype == (np.float64 if kernel == 23 else np.float32)
        params.einsum = path == "einsum"
        if path == "dense":
            dense = np.zeros((kernel, kernel, c, c), params.weights.dtype)
            dense[:, :, np.arange(c), np.arange(c)] = params.weights
            params.dense_weights = dense.reshape(-1, c)
        else:
            params.dense_weights = None
        assert np.array_equal(k.accumulate(params, [xv, None]), want), path


def test_mean_rounding_is_double_in_both_references():
    """MEAN over 4 elements with equal scales folds to M' = 2**30, shift' = -1 (divide by 4): sums
    like -2, -6, 2 are exact ties where double and single rounding disagree."""
    from qsim.profiles import Profile
    b = ModelBuilder(description="mean ties")
    x = b.add_input("x", (1, 64, 4), np.int8, scale=0.05, zero_point=0)
    ax = b.add_const("axis", np.array([2], np.int32))
    y = b.add_tensor("y", (1, 64), np.int8, scale=0.05, zero_point=0)
    b.add_op("MEAN", [x, ax], [y], ir.ReducerOptions(keep_dims=False))
    b.mark_output(y)
    blob = b.build()
    g = load_bytes(blob)
    params = REGISTRY["MEAN"].prepare(g.operators[0], g, get_profile("tflm"))
    assert (params.multiplier, params.shift) == (1 << 30, -1)
    xv = np.random.default_rng(4).integers(-3, 4, (1, 64, 4)).astype(np.int8)
    double = prepare_graph(g, Profile("d", "", "double")).run([xv])[y]
    single = prepare_graph(g, Profile("s", "", "single")).run([xv])[y]
    assert not np.array_equal(double, single)
    for ref in REFS:
        theirs = reference_outputs(blob, ref, xv, [y])[y]
        assert np.array_equal(double, theirs) and np.array_equal(prepare_graph(g, ref).run([xv])[y], theirs)


def test_requantize_double_fast_with_a_proven_accumulator_bound():
    """With acc_bound (the kernels' static |acc| bound) the wrap check is skipped; results must not change,
    including large zero points and right shifts beyond the zero-point folding limit."""
    from qsim import fixedpoint as fp
    rng = np.random.default_rng(7)
    for trial in range(200):
        c = int(rng.integers(1, 6))
        m0 = rng.integers(0, 2**31, c)
        shift = rng.integers(-31, 4, c)
        bound = int(rng.integers(1, 2**30))
        acc = rng.integers(-bound, bound + 1, (200, c))
        bias = rng.integers(-(2**31 - 1 - bound), 2**31 - bound, c)
        zp = int(rng.integers(-128, 128)) if trial % 4 else int(rng.integers(-2**20, 2**20))
        lo, hi = (-128, 127) if trial % 2 else (-2**31, 2**31 - 1)
        want = fp.requantize(acc, bias, m0, shift, zp, lo, hi, "double")
        got = fp.requantize_double_fast(acc, bias, m0, shift, zp, lo, hi, acc_bound=bound)
        assert np.array_equal(got, want), (m0, shift, bias, zp)


def test_accumulator_bound_holds_on_extreme_inputs():
    """The prepared acc_bound really bounds the accumulator (all inputs at the worst extreme)."""
    g = load(shared_model("kws_ref_model.tflite"))
    prep = prepare_graph(g, "tflm")
    for p in prep.ops:
        if p.kernel.accumulate is None:
            continue
        t_in = g.tensors[p.op.inputs[0]]
        for v in (-128, 127):
            acc = p.kernel.accumulate(p.params, [np.full(t_in.shape, v, np.int8)] + [None] * (len(p.op.inputs) - 1))
            assert np.abs(acc).max() <= p.params.requant.acc_bound
