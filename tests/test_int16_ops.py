"""More int16x8 ops (issue 12): single-op int16 models written by qsim.builder, bit-exact against
TFLite Micro and LiteRT BUILTIN_REF, each under its own profile, on random int16 inputs."""
from __future__ import annotations

import numpy as np
import pytest

from qsim import ir
from qsim.builder import ModelBuilder
from qsim.errors import QsimError
from qsim.interpreter import prepare_graph
from qsim.loader import load_bytes
from qsim.reference import compare


def single_op(opcode, in_shapes, out_shape, options=None, scales=None, out_scale=0.01, consts=(), out_zp=0,
              out_dtype=np.int16) -> bytes:
    """``opcode`` on int16 graph inputs of ``in_shapes`` (scales ``scales``, zero point 0), followed by
    constant inputs ``consts`` (arrays, no quantization), to an int16 (or ``out_dtype``) output."""
    b = ModelBuilder(description=f"int16 {opcode}")
    scales = scales or [0.01] * len(in_shapes)
    ins = [b.add_input(f"x{k}", s, np.int16, scale=sc, zero_point=0) for k, (s, sc) in enumerate(zip(in_shapes,
                                                                                                     scales))]
    ins += [b.add_const(f"c{k}", c) for k, c in enumerate(consts)]
    y = b.add_tensor("y", out_shape, out_dtype, scale=out_scale, zero_point=out_zp)
    b.add_op(opcode, ins, [y], options)
    b.mark_output(y)
    return b.build()


def random_sets(blob: bytes, n: int, seed: int, lo: int = -32768, hi: int = 32768) -> list:
    g = load_bytes(blob)
    rng = np.random.default_rng(seed)
    return [[rng.integers(lo, hi, g.tensors[i].shape).astype(np.int16) for i in g.inputs] for _ in range(n)]


def assert_both(blob: bytes, sets: list) -> None:
    for reference in ("tflm", "litert"):
        cmp = compare(blob, sets, reference=reference)
        assert cmp.refused is None, f"{reference}: {cmp.refused}"
        assert cmp.ok, cmp.summary()


def output_of(blob: bytes, inputs, profile="tflm") -> np.ndarray:
    g = load_bytes(blob)
    return prepare_graph(g, profile).run(inputs)[g.outputs[0]]


# ------------------------------------------------------------------ data movement

def test_reshape_and_squeeze_int16():
    blob = single_op("RESHAPE", [(1, 4, 6)], (1, 24), ir.ReshapeOptions((1, 24)), consts=[np.array([1, 24], np.int32)])
    assert_both(blob, random_sets(blob, 2, 0))
    blob = single_op("SQUEEZE", [(1, 1, 5)], (1, 5), ir.SqueezeOptions((1,)))
    assert_both(blob, random_sets(blob, 2, 1))


def test_transpose_int16():
    blob = single_op("TRANSPOSE", [(1, 3, 4, 5)], (1, 5, 3, 4), consts=[np.array([0, 3, 1, 2], np.int32)])
    sets = random_sets(blob, 2, 2)
    assert_both(blob, sets)
    assert np.array_equal(output_of(blob, sets[0]), sets[0][0].transpose(0, 3, 1, 2))


def test_concatenation_int16():
    blob = single_op("CONCATENATION", [(1, 2, 3), (1, 2, 4)], (1, 2, 7), ir.ConcatenationOptions(axis=2))
    sets = random_sets(blob, 2, 3)
    assert_both(blob, sets)
    assert np.array_equal(output_of(blob, sets[0]), np.concatenate(sets[0], axis=2))


def test_concatenation_int16_with_different_scales_refused():
    blob = single_op("CONCATENATION", [(1, 2), (1, 2)], (1, 4), ir.ConcatenationOptions(axis=1),
                     scales=[0.01, 0.02])
    with pytest.raises(QsimError, match="x1"):
        prepare_graph(load_bytes(blob), "tflm")


# ------------------------------------------------------------------ pooling

@pytest.mark.parametrize("opcode", ["MAX_POOL_2D", "AVERAGE_POOL_2D"])
@pytest.mark.parametrize("padding,activation", [("SAME", "NONE"), ("VALID", "RELU6")])
def test_pooling_int16(opcode, padding, activation):
    o = ir.Pool2DOptions(padding=padding, stride_h=2, stride_w=2, filter_h=3, filter_w=3, activation=activation)
    out = (1, 4, 4, 3) if padding == "SAME" else (1, 3, 3, 3)
    blob = single_op(opcode, [(1, 7, 7, 3)], out, o, scales=[0.001], out_scale=0.001)
    sets = random_sets(blob, 3, 4) + random_sets(blob, 2, 5, -9000, 9000)
    assert_both(blob, sets)
    y = output_of(blob, sets[-1])  # a small-range input: no saturation at the RELU6 bound
    assert y.dtype == np.int16 and len(np.unique(y)) > 5


# ------------------------------------------------------------------ activations

@pytest.mark.parametrize("opcode", ["RELU", "RELU6"])
@pytest.mark.parametrize("s_in,s_out", [(0.001, 0.001), (0.0007, 0.0003), (0.0003, 0.0011)])
def test_relu_int16(opcode, s_in, s_out):
    blob = single_op(opcode, [(1, 8, 8)], (1, 8, 8), scales=[s_in], out_scale=s_out)
    sets = random_sets(blob, 2, 6) + random_sets(blob, 2, 7, -2000, 2000)
    assert_both(blob, sets)
    y = output_of(blob, sets[-1])  # small inputs: below the RELU6 bound, many distinct outputs
    assert y.min() >= 0 and len(np.unique(y)) > 10


# ------------------------------------------------------------------ binary ops

@pytest.mark.parametrize("scales,out_scale,activation", [((0.01, 0.02), 0.5, "NONE"), ((0.003, 0.0007), 0.02, "RELU"),
                                                         ((0.001, 0.001), 0.00003, "RELU6")])
def test_mul_int16(scales, out_scale, activation):
    blob = single_op("MUL", [(1, 6, 5), (1, 6, 5)], (1, 6, 5), ir.ActivationOptions(activation), scales=list(scales),
                     out_scale=out_scale)
    sets = random_sets(blob, 3, 8) + random_sets(blob, 2, 9, -300, 300)
    assert_both(blob, sets)
    assert len(np.unique(np.concatenate([output_of(blob, x).ravel() for x in sets]))) > 10


def test_mul_int16_broadcast():
    blob = single_op("MUL", [(1, 4, 5), (1, 1, 5)], (1, 4, 5), ir.ActivationOptions(), scales=[0.01, 0.01],
                     out_scale=0.3)
    assert_both(blob, random_sets(blob, 3, 10))


@pytest.mark.parametrize("opcode", ["MAXIMUM", "MINIMUM"])
def test_maximum_minimum_int16(opcode):
    blob = single_op(opcode, [(1, 3, 4), (1, 3, 4)], (1, 3, 4), scales=[0.01, 0.01], out_scale=0.01)
    sets = random_sets(blob, 2, 11)
    assert_both(blob, sets)
    f = np.maximum if opcode == "MAXIMUM" else np.minimum
    assert np.array_equal(output_of(blob, sets[0]), f(*sets[0]))


# ------------------------------------------------------------------ LOGISTIC / TANH

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16).reshape(1, 256, 256)


def check_both(blob: bytes, sets: list) -> None:
    """``qsim.load(blob).check`` against both references: each must run and agree bit for bit."""
    import qsim
    report = qsim.load(blob).check(inputs=sets, reference="both")
    assert all(c.refused is None for c in report.comparisons), [c.summary() for c in report.comparisons]
    assert report.ok, [c.summary() for c in report.comparisons]


@pytest.mark.parametrize("opcode", ["LOGISTIC", "TANH"])
@pytest.mark.parametrize("s_in", [2.0 ** -12, 2.0 ** -11, 2.0 ** -10, 0.0003, 0.00071, 0.01])
def test_logistic_tanh_int16_every_input(opcode, s_in):
    """All 65536 int16 inputs, power-of-two scales (2**-12 the table's own; 2**-11 a second power-of-two
    case for TANH, a multiplier for LOGISTIC) and non-power-of-two ones."""
    blob = single_op(opcode, [ALL_INT16.shape], ALL_INT16.shape, scales=[s_in], out_scale=2.0 ** -15)
    check_both(blob, [[ALL_INT16]])
    y = output_of(blob, [ALL_INT16]).astype(np.int64).ravel()
    x = ALL_INT16.astype(np.float64).ravel() * s_in
    want = 1 / (1 + np.exp(-x)) if opcode == "LOGISTIC" else np.tanh(x)
    assert np.abs(y / 32768.0 - want).max() < 2e-3  # the table's accuracy: the math is the function
    assert np.all(np.diff(y) >= 0)  # monotone


@pytest.mark.parametrize("opcode", ["LOGISTIC", "TANH"])
@pytest.mark.parametrize("out_scale,out_zp", [(1.0 / 256, 0), (2.0 ** -15, 5), (0.0001, 0)])
def test_logistic_tanh_int16_bad_output_refused(opcode, out_scale, out_zp):
    blob = single_op(opcode, [(1, 8)], (1, 8), scales=[2.0 ** -12], out_scale=out_scale, out_zp=out_zp)
    for profile in ("tflm", "litert"):
        with pytest.raises(QsimError, match="'y'"):
            prepare_graph(load_bytes(blob), profile)
    sets = [[np.arange(-4, 4, dtype=np.int16).reshape(1, 8) * 1000]]
    for reference in ("tflm", "litert"):  # the references refuse it too
        assert compare(blob, sets, reference=reference).refused is not None


@pytest.mark.parametrize("opcode", ["LOGISTIC", "TANH"])
def test_logistic_tanh_int16_near_power_of_two_output(opcode):
    """Output scale 2**-15 * 1.0004: within CheckedLog2's tolerance, so TFLite Micro runs it (and TANH in
    LiteRT); LiteRT's LOGISTIC demands exactly 1/32768 and refuses it, as qsim does under that profile."""
    blob = single_op(opcode, [(1, 64)], (1, 64), scales=[0.0005], out_scale=2.0 ** -15 * 1.0004)
    sets = random_sets(blob, 2, 12)
    cmp = compare(blob, sets, reference="tflm")
    assert cmp.refused is None and cmp.ok, cmp.summary()
    cmp = compare(blob, sets, reference="litert")
    if opcode == "TANH":
        assert cmp.refused is None and cmp.ok, cmp.summary()
    else:
        assert cmp.refused is not None
        with pytest.raises(QsimError, match="exactly 1/32768"):
            prepare_graph(load_bytes(blob), "litert")


# ------------------------------------------------------------------ MEAN

@pytest.mark.parametrize("shape,axes,keep,out_shape", [((1, 8, 6, 4), [1, 2], True, (1, 1, 1, 4)),
                                                       ((2, 5, 7), [2], False, (2, 5)),
                                                       ((1, 9, 4), [-1, 1], True, (1, 1, 1))])
@pytest.mark.parametrize("s_in,s_out", [(0.001, 0.001), (0.001, 0.0003), (0.0007, 0.002)])
def test_mean_int16(shape, axes, keep, out_shape, s_in, s_out):
    """QuantizedMeanOrSum on int16 (both references): the int8 formula with the int16 clamp."""
    blob = single_op("MEAN", [shape], out_shape, ir.ReducerOptions(keep_dims=keep), scales=[s_in], out_scale=s_out,
                     consts=[np.array(axes, np.int32)])
    sets = random_sets(blob, 2, 13) + random_sets(blob, 1, 14, -3000, 3000)
    check_both(blob, sets)
    if s_in == s_out:  # equal scales: the mean of the raw values, to within 1 (1/count is folded, truncated,
        x = sets[-1][0].astype(np.float64)  # into the multiplier)
        want = x.mean(axis=tuple(a % len(shape) for a in axes), keepdims=keep).reshape(out_shape)
        assert np.abs(output_of(blob, sets[-1]) - want).max() < 1


def test_mean_int16_to_int8_refused():
    blob = single_op("MEAN", [(1, 4, 3)], (1, 3), ir.ReducerOptions(keep_dims=False), scales=[0.001],
                     consts=[np.array([1], np.int32)], out_dtype=np.int8)
    with pytest.raises(QsimError, match="'y'"):
        prepare_graph(load_bytes(blob), "tflm")


def test_hard_swish_int16_is_refused_as_undefined_in_both_references():
    blob = single_op("HARD_SWISH", [(1, 8)], (1, 8), scales=[0.001], out_scale=0.001)
    with pytest.raises(QsimError, match="neither TFLite Micro nor LiteRT"):
        prepare_graph(load_bytes(blob), "tflm")
    from qsim.reference import make_runner
    from qsim.refrun import ReferenceRefused
    g = load_bytes(blob)
    for reference in ("tflm", "litert"):  # the reason stated: each reference refuses it
        with pytest.raises(ReferenceRefused):
            make_runner(reference, blob).run([np.zeros((1, 8), np.int16)], g.outputs)
