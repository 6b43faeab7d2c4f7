"""Batched execution: N samples in one ``PreparedGraph.run`` equal N single runs, bit for bit,
on every tensor (keep_all=True).

The single-sample path is what the reference tests (test_kernels_*.py,
test_reference_models.py) hold bit-exact against LiteRT and TFLM; here the
batched path must reproduce it exactly.  Models: every shared int8 model qsim
runs, the demo CNN, and one-op models written with qsim.builder covering every
kernel, including the ops whose batch axis needs care (MEAN over axis 0,
TRANSPOSE/STRIDED_SLICE/CONCATENATION/PAD touching axis 0, broadcasts against a
constant of another rank, 1-D SOFTMAX rows, a RESHAPE dropping the batch
dimension, ops on constants only).  Each one-op model also states which batch
mode ("vector" = one pass, "loop" = per sample, "once" = constant) the
interpreter must pick, so a silent fallback to the loop is a failure.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qsim import ir
from qsim.builder import ModelBuilder
from qsim.errors import QsimError
from qsim.interpreter import batch_shape, prepare_graph
from qsim.loader import load, load_bytes

from conftest import shared_model

SETTINGS = settings(max_examples=4, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SHARED = ["vww_96_int8", "kws_ref_model", "pretrainedResnet_quant", "person_detect", "ad01_int8",
          "hello_world_int8", "micro_speech_quantized"]
DEMO = Path(__file__).resolve().parents[1] / "examples" / "models" / "demo_cnn_int8.tflite"
Q = dict(scale=0.05, zero_point=-3)


# ------------------------------------------------------------------ the property

def random_batch(g: ir.Graph, n: int, seed: int) -> list[np.ndarray]:
    """One (n,) + shape[1:] array per graph input, over the input dtype's full range."""
    rng = np.random.default_rng(seed)
    out = []
    for t_idx in g.inputs:
        t = g.tensors[t_idx]
        shape = (n,) + tuple(t.shape[1:])
        if np.issubdtype(t.dtype, np.floating):
            out.append(rng.normal(0, 3, shape).astype(t.dtype))
        else:
            out.append(rng.integers(-128, 128, shape).astype(t.dtype))
    return out


def assert_batch_equals_singles(prepared, n: int, seed: int) -> None:
    g = prepared.graph
    xs = random_batch(g, n, seed)
    batched = prepared.run(xs, keep_all=True)
    singles = [prepared.run([x[k:k + 1] for x in xs], keep_all=True) for k in range(n)]
    assert set(batched) == set(singles[0])
    for t, arr in batched.items():
        shape = tuple(g.tensors[t].shape)
        if n == 1:  # a single sample keeps today's behaviour: the model's own shapes
            assert arr.shape == shape, g.tensors[t].name
        else:
            assert arr.shape == batch_shape(shape, n), g.tensors[t].name
        for k in range(n):
            one = singles[k][t]
            assert one.shape == shape and arr.dtype == one.dtype
            np.testing.assert_array_equal(arr.reshape((n,) + shape)[k], one,
                                          err_msg=f"sample {k} of {n}, tensor '{g.tensors[t].name}'")
    outs = prepared.run(xs, keep_all=False)
    assert set(outs) == set(g.outputs)
    for t in g.outputs:
        np.testing.assert_array_equal(outs[t], batched[t])


# ------------------------------------------------------------------ real models

@lru_cache(maxsize=None)
def _prepared_shared(name: str):
    return prepare_graph(load(shared_model(f"{name}.tflite")), "tflm")


@pytest.mark.parametrize("name", SHARED)
@SETTINGS
@given(n=st.integers(1, 8), seed=st.integers(0, 2 ** 16))
def test_shared_model_batch_equals_single_runs(name, n, seed):
    assert_batch_equals_singles(_prepared_shared(name), n, seed)


@pytest.mark.parametrize("name", SHARED + ["demo"])
def test_real_models_run_every_op_vectorized(name):
    prepared = prepare_graph(load(DEMO), "tflm") if name == "demo" else _prepared_shared(name)
    assert {mode for _, _, mode in prepared.batch_plan()} == {"vector"}


@SETTINGS
@given(n=st.integers(1, 8), seed=st.integers(0, 2 ** 16), profile=st.sampled_from(["tflm", "litert"]))
def test_demo_model_batch_equals_single_runs(n, seed, profile):
    assert_batch_equals_singles(prepare_graph(load(DEMO), profile), n, seed)


# ------------------------------------------------------------------ one-op models

def _gemm(b, x, opcode, shape_in, rng):
    """CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED variants on input ``x``."""
    if opcode == "CONV_2D":
        w = b.add_const("w", rng.integers(-127, 128, (6, 3, 3, shape_in[-1])).astype(np.int8),
                        scale=rng.uniform(0.005, 0.02, 6), zero_point=np.zeros(6, np.int64), axis=0)
        bias = b.add_const("b", rng.integers(-3000, 3000, 6).astype(np.int32), scale=np.full(6, 1e-4),
                           zero_point=np.zeros(6, np.int64))
        y = b.add_tensor("y", (1, 3, 4, 6), np.int8, scale=0.4, zero_point=5)
        b.add_op("CONV_2D", [x, w, bias], [y], ir.Conv2DOptions(padding="SAME", stride_h=2, stride_w=2,
                                                                activation="RELU6"))
        return y
    if opcode == "DEPTHWISE_CONV_2D":
        c = shape_in[-1] * 2
        w = b.add_const("w", rng.integers(-127, 128, (1, 3, 3, c)).astype(np.int8),
                        scale=rng.uniform(0.005, 0.02, c), zero_point=np.zeros(c, np.int64), axis=3)
        y = b.add_tensor("y", (1, 6, 8, c), np.int8, scale=0.1, zero_point=-7)
        b.add_op("DEPTHWISE_CONV_2D", [x, w], [y], ir.DepthwiseConv2DOptions(
            padding="SAME", dilation_h=2, dilation_w=1, depth_multiplier=2))
        return y
    raise AssertionError(opcode)


def _fc(b, x, rows, in_units, keep, rng):
    w = b.add_const("w", rng.integers(-127, 128, (5, in_units)).astype(np.int8), scale=0.01, zero_point=0)
    shape = (1, rows, 5) if keep else (rows, 5)
    y = b.add_tensor("y", shape, np.int8, scale=0.3, zero_point=2)
    b.add_op("FULLY_CONNECTED", [x, w, -1], [y], ir.FullyConnectedOptions(keep_num_dims=keep))
    return y


def one_op_models():
    """{name: (tflite bytes, expected batch modes per op)}."""
    rng = np.random.default_rng(7)
    models = {}

    def model(name, modes, in_shapes, build, in_dtype=np.int8):
        b = ModelBuilder(description=name)
        xs = [b.add_input(f"x{i}", s, in_dtype, **({} if in_dtype == np.float32 else Q))
              for i, s in enumerate(in_shapes)]
        b.mark_output(build(b, *xs))
        models[name] = (b.build(), modes)

    def t(b, name, shape, dtype=np.int8, **q):
        return b.add_tensor(name, shape, dtype, **(q or Q))

    def unary(opcode, options=None, out_q=None, shape=(1, 3, 5)):
        def build(b, x):
            y = t(b, "y", shape, **(out_q or Q))
            b.add_op(opcode, [x], [y], options)
            return y
        model(opcode, ["vector"], [shape], build)

    for opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        model(opcode, ["vector"], [(1, 6, 8, 3)], lambda b, x, o=opcode: _gemm(b, x, o, (1, 6, 8, 3), rng))
    def tconv(b, x):
        shape = b.add_const("oshape", np.array([1, 7, 9, 2], np.int32))
        w = b.add_const("w", rng.integers(-127, 128, (2, 3, 3, 3)).astype(np.int8), scale=0.01, zero_point=0)
        y = t(b, "y", (1, 7, 9, 2))
        b.add_op("TRANSPOSE_CONV", [shape, w, x], [y], ir.TransposeConvOptions("SAME", 2, 2), version=3)
        return y
    model("TRANSPOSE_CONV", ["vector"], [(1, 4, 5, 3)], tconv)
    model("FC 2-D", ["vector"], [(1, 12)], lambda b, x: _fc(b, x, 1, 12, False, rng))
    model("FC rows, no keep_num_dims (output [3, 5])", ["vector"], [(1, 3, 8)],
          lambda b, x: _fc(b, x, 3, 8, False, rng))
    model("FC keep_num_dims", ["vector"], [(1, 3, 8)], lambda b, x: _fc(b, x, 3, 8, True, rng))
    for opcode in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        def pool(b, x, o=opcode):
            y = t(b, "y", (1, 3, 3, 4))
            b.add_op(o, [x], [y], ir.Pool2DOptions(padding="SAME", stride_h=2, stride_w=2, filter_h=3, filter_w=2))
            return y
        model(opcode, ["vector"], [(1, 5, 6, 4)], pool)
    for axes, keep, out_shape, mode in (([1, 2], True, (1, 1, 1, 4), "vector"), ([2], False, (1, 3, 4), "vector"),
                                        ([0, 2], False, (3, 4), "loop"), ([-4], True, (1, 3, 5, 4), "loop")):
        def mean(b, x, axes=axes, keep=keep, out_shape=out_shape):
            y = t(b, "y", out_shape, scale=0.03, zero_point=1)
            b.add_op("MEAN", [x, b.add_const("axes", np.array(axes, np.int32))], [y], ir.ReducerOptions(keep))
            return y
        model(f"MEAN {axes} keep={keep}", [mode], [(1, 3, 5, 4)], mean)
    for opcode in ("ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM"):
        opts = ir.ActivationOptions("NONE") if opcode in ("ADD", "SUB", "MUL") else None
        qo = Q if opcode in ("MAXIMUM", "MINIMUM") else dict(scale=0.08, zero_point=4)

        def both(b, x0, x1, o=opcode, opts=opts, qo=qo):
            y = t(b, "y", (1, 3, 4), **qo)
            b.add_op(o, [x0, x1], [y], opts)
            return y

        def const_same_rank(b, x0, o=opcode, opts=opts, qo=qo):
            c = b.add_const("c", rng.integers(-128, 128, (1, 1, 4)).astype(np.int8), **Q)
            y = t(b, "y", (1, 3, 4), **qo)
            b.add_op(o, [c, x0], [y], opts)
            return y

        def const_higher_rank(b, x0, o=opcode, opts=opts, qo=qo):
            c = b.add_const("c", rng.integers(-128, 128, (1, 1, 4)).astype(np.int8), **Q)
            y = t(b, "y", (1, 1, 4), **qo)  # [1, 4] against [1, 1, 4]: numpy would put a batch on axis 1
            b.add_op(o, [x0, c], [y], opts)
            return y

        model(f"{opcode} two batched inputs", ["vector"], [(1, 3, 4), (1, 3, 4)], both)
        model(f"{opcode} batched + constant", ["vector"], [(1, 3, 4)], const_same_rank)
        model(f"{opcode} batched + higher-rank constant", ["loop"], [(1, 4)], const_higher_rank)

    def const_only(b, x):
        c1 = b.add_const("c1", rng.integers(-128, 128, (1, 4)).astype(np.int8), **Q)
        c2 = b.add_const("c2", rng.integers(-128, 128, (1, 4)).astype(np.int8), **Q)
        s = t(b, "s", (1, 4), scale=0.1, zero_point=0)
        b.add_op("ADD", [c1, c2], [s], ir.ActivationOptions("NONE"))
        y = t(b, "y", (1, 4), scale=0.1, zero_point=0)
        b.add_op("MUL", [x, s], [y], ir.ActivationOptions("NONE"))
        return y
    model("ADD of constants then MUL", ["once", "vector"], [(1, 4)], const_only)

    unary("SOFTMAX", ir.SoftmaxOptions(beta=1.0), dict(scale=1 / 256, zero_point=-128))
    unary("LOGISTIC", None, dict(scale=1 / 256, zero_point=-128))
    unary("TANH", None, dict(scale=1 / 128, zero_point=0))
    unary("RELU", None, dict(scale=0.04, zero_point=-128))
    unary("RELU6", None, dict(scale=0.03, zero_point=-128))
    unary("LEAKY_RELU", ir.LeakyReluOptions(alpha=0.2), dict(scale=0.04, zero_point=-20))
    unary("HARD_SWISH", None, dict(scale=0.04, zero_point=-40))

    def softmax_1d(b, x):
        r = t(b, "r", (5,))
        b.add_op("RESHAPE", [x, b.add_const("shape", np.array([5], np.int32))], [r], ir.ReshapeOptions((5,)))
        y = t(b, "y", (5,), scale=1 / 256, zero_point=-128)
        b.add_op("SOFTMAX", [r], [y], ir.SoftmaxOptions(beta=1.0))
        return y
    model("RESHAPE dropping the batch dim, 1-D SOFTMAX", ["vector", "loop"], [(1, 5)], softmax_1d)

    def quantize(b, x):
        q = t(b, "q", (1, 2, 4), scale=0.05, zero_point=3)
        b.add_op("QUANTIZE", [x], [q])
        r = t(b, "r", (1, 2, 4), scale=0.02, zero_point=-9)
        b.add_op("QUANTIZE", [q], [r])
        y = b.add_tensor("y", (1, 2, 4), np.float32)
        b.add_op("DEQUANTIZE", [r], [y])
        return y
    model("QUANTIZE float, QUANTIZE int8, DEQUANTIZE", ["vector"] * 3, [(1, 2, 4)], quantize, in_dtype=np.float32)

    def squeeze(b, x, dims, out_shape):
        y = t(b, "y", out_shape)
        b.add_op("SQUEEZE", [x], [y], ir.SqueezeOptions(dims))
        r = t(b, "r", out_shape, scale=0.04, zero_point=-128)
        b.add_op("RELU", [y], [r])  # consumes a tensor with or without its batch dim
        return r
    model("SQUEEZE axis 2 then RELU", ["vector", "vector"], [(1, 3, 1)], lambda b, x: squeeze(b, x, (2,), (1, 3)))
    model("SQUEEZE axis 0 then RELU", ["vector", "loop"], [(1, 3, 1)], lambda b, x: squeeze(b, x, (0,), (3, 1)))

    for pads, mode, opcode in (([[0, 0], [1, 2], [0, 1]], "vector", "PAD"), ([[1, 0], [0, 1], [0, 0]], "loop", "PAD"),
                               ([[0, 0], [2, 0], [1, 1]], "vector", "PADV2")):
        def pad(b, x, pads=pads, opcode=opcode):
            p = np.array(pads, np.int32)
            ins = [x, b.add_const("pads", p)]
            if opcode == "PADV2":
                ins.append(b.add_const("v", np.array([9], np.int8), **Q))
            y = t(b, "y", tuple(np.array((1, 3, 4)) + p.sum(axis=1)))
            b.add_op(opcode, ins, [y])
            return y
        model(f"{opcode} {pads}", [mode], [(1, 3, 4)], pad)

    for perm, mode in (((0, 2, 1), "vector"), ((2, 1, 0), "loop"), ((1, 0, 2), "loop")):
        def transpose(b, x, perm=perm):
            y = t(b, "y", tuple((1, 3, 4)[a] for a in perm))
            b.add_op("TRANSPOSE", [x, b.add_const("perm", np.array(perm, np.int32))], [y])
            return y
        model(f"TRANSPOSE {perm}", [mode], [(1, 3, 4)], transpose)

    def concat(b, x0, x1, axis=1, out=(1, 5, 2)):
        y = t(b, "y", out)
        b.add_op("CONCATENATION", [x0, x1], [y], ir.ConcatenationOptions(axis))
        return y
    model("CONCATENATION axis 1", ["vector"], [(1, 2, 2), (1, 3, 2)], concat)
    model("CONCATENATION axis -1", ["vector"], [(1, 3, 2), (1, 3, 1)],
          lambda b, x0, x1: concat(b, x0, x1, -1, (1, 3, 3)))
    model("CONCATENATION axis 0", ["loop"], [(1, 3, 2), (1, 3, 2)],
          lambda b, x0, x1: concat(b, x0, x1, 0, (2, 3, 2)))

    def concat_const(b, x):
        c = b.add_const("c", rng.integers(-128, 128, (1, 1, 2)).astype(np.int8), **Q)
        return concat(b, x, c, 1, (1, 4, 2))
    model("CONCATENATION with a constant", ["loop"], [(1, 3, 2)], concat_const)

    for begin, end, strides, opts, out_shape, mode in (
            ([0, 1, 0], [1, 4, 5], [1, 2, 1], ir.StridedSliceOptions(), (1, 2, 5), "vector"),
            ([0, 3, 4], [1, 0, 0], [1, -1, -2], ir.StridedSliceOptions(end_mask=6), (1, 4, 3), "vector"),
            ([0, 1, 0], [1, 3, 5], [1, 1, 1], ir.StridedSliceOptions(shrink_axis_mask=1), (2, 5), "loop"),
            ([0, 1, 0], [1, 2, 5], [1, 1, 1], ir.StridedSliceOptions(shrink_axis_mask=2), (1, 5), "loop")):
        def ss(b, x, begin=begin, end=end, strides=strides, opts=opts, out_shape=out_shape):
            ins = [x] + [b.add_const(k, np.array(v, np.int32)) for k, v in (("begin", begin), ("end", end),
                                                                               ("strides", strides))]
            y = t(b, "y", out_shape)
            b.add_op("STRIDED_SLICE", ins, [y], opts)
            return y
        model(f"STRIDED_SLICE {begin}:{end}:{strides} {opts}", [mode], [(1, 4, 5)], ss)

    def svdf(b, x):  # rank 2, int16 state: every sample starts from the same reset state
        wf = b.add_const("wf", rng.integers(-127, 128, (6, 5)).astype(np.int8), scale=0.01, zero_point=0)
        wt = b.add_const("wt", rng.integers(-3000, 3000, (6, 4)).astype(np.int16), scale=0.002, zero_point=0)
        bias = b.add_const("bias", rng.integers(-500, 500, 3).astype(np.int32), scale=0.002 * 0.004, zero_point=0)
        state = b.add_variable("state", (1, 24), np.int16, scale=0.004, zero_point=0)
        y = t(b, "y", (1, 3))
        b.add_op("SVDF", [x, wf, wt, bias, state], [y], ir.SVDFOptions(rank=2, activation="RELU"))
        return y
    model("SVDF rank 2", ["vector"], [(1, 5)], svdf)
    # Batch-major: N samples are N rows of one sequence run (float BLAS GEMMs from 4 rows on).
    # Hidden zero point 5 and a cell clip exercise the folded constants.
    from qsim import builder
    models["UNIDIRECTIONAL_SEQUENCE_LSTM"] = (
        builder.lstm_int8_model(n_time=3, n_input=4, n_cell=5, hidden_zp=5, cell_clip=0.5, seed=1), ["vector"])
    return models


ONE_OP = one_op_models()


@pytest.mark.parametrize("name", sorted(ONE_OP))
@SETTINGS
@given(n=st.integers(1, 8), seed=st.integers(0, 2 ** 16))
def test_one_op_model_batch_equals_single_runs(name, n, seed):
    blob, modes = ONE_OP[name]
    g = load_bytes(blob)
    for profile in ("tflm", "litert"):
        prepared = prepare_graph(g, profile)
        assert [mode for _, _, mode in prepared.batch_plan()] == modes
        assert_batch_equals_singles(prepared, n, seed)


def test_one_op_models_cover_every_kernel():
    from qsim.kernels import REGISTRY
    used = {op.opcode for blob, _ in ONE_OP.values() for op in load_bytes(blob).operators}
    assert used == set(REGISTRY)


# ------------------------------------------------------------------ conventions and errors

def _prepared_fc():
    return prepare_graph(load_bytes(ONE_OP["FC rows, no keep_num_dims (output [3, 5])"][0]), "tflm")


def test_single_sample_keeps_model_shapes_and_on_op():
    prepared = _prepared_fc()
    g = prepared.graph
    x = random_batch(g, 1, 0)[0]
    seen = []
    out = prepared.run([x], keep_all=False, on_op=lambda p, ins, outs: seen.append((p.op.opcode, outs[0].shape)))
    assert out[g.outputs[0]].shape == (3, 5)  # the model's own output shape, as before batching
    assert seen == [("FULLY_CONNECTED", (3, 5))]


def test_run_batched_chunks_equal_one_batch():
    prepared = _prepared_fc()
    g = prepared.graph
    xs = random_batch(g, 10, 1)
    whole = prepared.run(xs, keep_all=True)
    for size in (1, 3, 10, 64):
        chunked = prepared.run_batched(xs, batch_size=size, keep_all=True)
        assert set(chunked) == set(whole)
        for t in whole:
            np.testing.assert_array_equal(chunked[t], whole[t])
    one = prepared.run_batched([xs[0][:1]], batch_size=4)  # a single sample in the batched layout
    assert one[g.outputs[0]].shape == (1, 3, 5)
    np.testing.assert_array_equal(one[g.outputs[0]][0], whole[g.outputs[0]][0])


def test_bad_batches_are_clear_errors():
    blob, _ = ONE_OP["ADD two batched inputs"]
    prepared = prepare_graph(load_bytes(blob), "tflm")
    a, b = random_batch(prepared.graph, 4, 0)
    with pytest.raises(QsimError, match="same leading batch size"):
        prepared.run([a, b[:3]])
    with pytest.raises(QsimError, match="same leading batch size"):
        prepared.run([a, b[:1]])
    with pytest.raises(QsimError, match="must have shape"):
        prepared.run([a[:, :2], b[:, :2]])
    with pytest.raises(QsimError, match="empty"):
        prepared.run([a[:0], b[:0]])
    with pytest.raises(QsimError, match="int8"):
        prepared.run([a.astype(np.int16), b])
    with pytest.raises(QsimError, match="batch_size"):
        prepared.run_batched([a, b], batch_size=0)


def test_model_without_unit_batch_dim_requires_its_exact_shape():
    b = ModelBuilder()
    x = b.add_input("x", (2, 3), np.int8, **Q)
    y = b.add_tensor("y", (2, 3), np.int8, scale=0.04, zero_point=-128)
    b.add_op("RELU", [x], [y])
    b.mark_output(y)
    prepared = prepare_graph(load_bytes(b.build()), "tflm")
    with pytest.raises(QsimError, match="must have shape"):
        prepared.run([np.zeros((4, 3), np.int8)])
    assert prepared.run([np.zeros((2, 3), np.int8)])[b.outputs[0]].shape == (2, 3)
