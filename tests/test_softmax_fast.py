"""SOFTMAX's fast eval (exp tables zeroed below diff_min, row reciprocals on Python ints for few
rows) against TFLite's reference_ops::Softmax written out loop by loop, and the Python int path of
fixedpoint's reciprocal chain against its int64 array path; single-op models against LiteRT and
TFLite Micro on both sides of the row-count switch (activations.SOFTMAX_SCALAR_ROWS)."""
from __future__ import annotations

import numpy as np
import pytest

from qsim import fixedpoint as fp
from qsim import ir
from qsim.kernels import activations as act

from test_kernels_elementwise import assert_bitexact, unary_model

ACC_BITS = act.SOFTMAX_ACCUMULATION_INTEGER_BITS


def written_out_softmax(x: np.ndarray, p: act.SoftmaxParams) -> np.ndarray:
    """reference_ops::Softmax (int8 in) as TFLite's two loops over a row: entries with
    ``diff >= diff_min`` are rescaled, exp'd and summed (int32 FixedPoint adds wrap); the sum's
    reciprocal (the int64 array form of get_reciprocal) scales each such entry's exp, the others
    output the minimum.  No tables, no zeroed exponentials."""
    bits = p.output_bits
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    out = np.empty(x.shape, dtype=np.int64)
    rows = x.reshape(-1, x.shape[-1]).astype(np.int64)
    for r, row in enumerate(rows):
        diff = row - row.max()
        live = diff >= p.diff_min
        scaled = fp.multiply_by_quantized_multiplier_greater_than_one(diff, p.input_multiplier, p.input_left_shift,
                                                                      p.rounding)
        exp_q0 = fp.exp_on_negative_values(scaled, act.SOFTMAX_SCALED_DIFF_INTEGER_BITS)
        total = 0
        for e, alive in zip(fp.rescale_fixed(exp_q0, 0, ACC_BITS), live):
            if alive:
                total = int(fp.wrap_int32(total + int(e)))
        recip, nbits = fp.get_reciprocal(np.array([total]), ACC_BITS)
        y = fp.rounding_divide_by_pot(fp.saturating_rounding_doubling_high_mul(recip[0], exp_q0),
                                      int(nbits[0]) + 31 - bits) + lo
        out.reshape(-1, x.shape[-1])[r] = np.where(live, np.clip(y, lo, hi), lo)
    return out


# (input scale, beta): diff_min beyond -255 (no cutoff) down to a cutoff a few steps below the
# maximum (large scale * beta), the smallest product TFLite accepts, and rounding variants
SCALES_BETAS = [(0.0004, 1.0), (0.004, 0.3), (0.05, 1.0), (0.1, 2.0), (0.5, 1.0), (1.0, 4.0), (2.0, 8.0),
                (1.0, 100.0), (0.002, 0.01)]


@pytest.mark.parametrize("rounding", ["double", "single"])
@pytest.mark.parametrize("output_bits", [8, 16])
@pytest.mark.parametrize("scale,beta", SCALES_BETAS)
def test_table_path_equals_written_out_softmax(scale, beta, output_bits, rounding):
    m, left = fp.preprocess_softmax_scaling(beta, scale, act.SOFTMAX_SCALED_DIFF_INTEGER_BITS,
                                            single_rounding=rounding == "single")
    diff_min = -fp.calculate_input_radius(act.SOFTMAX_SCALED_DIFF_INTEGER_BITS, left)
    p = act.SoftmaxParams(m, left, diff_min, rounding, output_bits)
    # every difference 0..-255 in one row (-128 and 127 present), a row with 2 values, constant rows,
    # random rows; 1 and 5 rows take the Python int reciprocals, 40 rows the int64 arrays
    rng = np.random.default_rng(int(scale * 1e4) + output_bits)
    base = rng.integers(-128, 128, (40, 256)).astype(np.int8)
    base[0] = np.arange(-128, 128)
    base[1] = rng.permutation(np.arange(-128, 128))
    base[2] = np.where(np.arange(256) % 3, 127, -128)
    base[3] = -128
    base[4] = 5
    for rows in (1, 5, act.SOFTMAX_SCALAR_ROWS, act.SOFTMAX_SCALAR_ROWS + 1, 40):
        x = base[:rows, :200] if rows > 1 else base[:1]  # 200 entries: sums stay below the abort threshold
        np.testing.assert_array_equal(act.eval_softmax(p, [x])[0], written_out_softmax(x, p),
                                      err_msg=f"{rows} row(s), diff_min {diff_min}")
    x = base[:3, :200].reshape(3, 1, 200)  # leading axes
    np.testing.assert_array_equal(act.eval_softmax(p, [x])[0], written_out_softmax(x, p))


@pytest.mark.parametrize("output_bits", [8, 16])
@pytest.mark.parametrize("scale,beta", SCALES_BETAS[::2] + [(1.0, 100.0)])
def test_pair_table_equals_written_out_softmax(scale, beta, output_bits):
    """Rows of two entries (a table of the entries' difference): every difference -255..255, the
    int8 extremes, equal entries and random pairs, against the loop-by-loop softmax."""
    m, left = fp.preprocess_softmax_scaling(beta, scale, act.SOFTMAX_SCALED_DIFF_INTEGER_BITS)
    p = act.SoftmaxParams(m, left, -fp.calculate_input_radius(act.SOFTMAX_SCALED_DIFF_INTEGER_BITS, left), "double",
                          output_bits)
    e = np.arange(-255, 256)
    rng = np.random.default_rng(output_bits)
    pairs = np.concatenate([np.stack([np.maximum(e, 0) - 128, np.maximum(-e, 0) - 128], 1)[::-1],
                            np.stack([127 - np.maximum(-e, 0), 127 - np.maximum(e, 0)], 1),
                            [[-128, 127], [127, -128], [0, 0], [127, 127], [-128, -128]],
                            rng.integers(-128, 128, (300, 2))]).astype(np.int8)
    got = act.eval_softmax(p, [pairs.reshape(-1, 1, 2)])[0]
    assert got.dtype == (np.int8 if output_bits == 8 else np.int16) and got.shape == (len(pairs), 1, 2)
    np.testing.assert_array_equal(got.reshape(-1, 2), written_out_softmax(pairs, p))


def test_cutoff_cases_are_exercised():
    """SCALES_BETAS covers diff_min inside [-255, 0] (entries cut off) and beyond it (none cut)."""
    mins = [-fp.calculate_input_radius(act.SOFTMAX_SCALED_DIFF_INTEGER_BITS,
                                       fp.preprocess_softmax_scaling(b, s, act.SOFTMAX_SCALED_DIFF_INTEGER_BITS)[1])
            for s, b in SCALES_BETAS]
    assert min(mins) < -255 and max(mins) > -32


def test_reciprocal_python_int_path_equals_int64_arrays():
    rng = np.random.default_rng(7)
    xs = np.concatenate([rng.integers(1, 2 ** 31, 3000), [1, 2, 3, (1 << 19) - 1, 1 << 19, (1 << 19) + 1,
                                                          (1 << 28) - 1, 1 << 28, 1 << 30, (1 << 31) - 1]])
    xs = np.concatenate([xs, [(1 << k) + d for k in range(31) for d in (-1, 0, 1) if 0 < (1 << k) + d < 1 << 31]])
    for digits in (0, 5, ACC_BITS, 31):
        raw, nbits = fp.get_reciprocal(xs, digits)
        for i, v in enumerate(xs.tolist()):
            r, n = fp.get_reciprocal(v, digits)
            assert type(r) is int and type(n) is int
            assert (r, n) == (int(raw[i]), int(nbits[i])), (v, digits)


def test_scalar_fixedpoint_primitives_equal_arrays():
    """The primitives the Python int path runs, on int32 edges and random values."""
    rng = np.random.default_rng(3)
    edge = [fp.INT32_MIN, fp.INT32_MIN + 1, -(1 << 30), -1, 0, 1, (1 << 30) - 1, 1 << 30, fp.INT32_MAX]
    a = np.array(edge + rng.integers(fp.INT32_MIN, fp.INT32_MAX, 400, endpoint=True).tolist(), dtype=np.int64)
    b = np.roll(a, 7)
    srdhm = fp.saturating_rounding_doubling_high_mul(a[:, None], a[None, :])
    half = fp.rounding_half_sum(a, b)
    for i, (u, v) in enumerate(zip(a.tolist(), b.tolist())):
        assert fp.rounding_half_sum(u, v) == half[i]
        assert fp.wrap_int32(u + v) == fp.wrap_int32(a[i] + b[i])
        for e in (0, 1, 2, 5, 31):
            assert fp.rounding_divide_by_pot(u, e) == fp.rounding_divide_by_pot(a[i:i + 1], e)[0]
        for e in (-3, 0, 1, 2, 4):
            assert fp.saturating_rounding_multiply_by_pot(u, e) == fp.saturating_rounding_multiply_by_pot(a[i:i + 1], e)[0]
        assert fp.count_leading_zeros_u32(u) == fp.count_leading_zeros_u32(a[i:i + 1])[0]
    for i in range(0, len(a), 13):
        for j in range(0, len(a), 11):
            assert fp.saturating_rounding_doubling_high_mul(int(a[i]), int(a[j])) == srdhm[i, j]
    with pytest.raises(ValueError):
        fp.rounding_divide_by_pot(5, 32)


@pytest.mark.parametrize("shape", [(1, 10), (act.SOFTMAX_SCALAR_ROWS, 10), (1, act.SOFTMAX_SCALAR_ROWS + 1, 7),
                                   (3, 256), (1, 2), (5, 2)])
@pytest.mark.parametrize("scale,beta", [(0.05, 1.0), (1.0, 4.0), (0.0004, 1.0)])
def test_softmax_models_match_both_references(shape, scale, beta):
    rng = np.random.default_rng(shape[-1])
    x = rng.integers(-128, 128, shape).astype(np.int8)
    x.reshape(-1, shape[-1])[0, :2] = (-128, 127)
    for out_dtype, q_out in ((np.int8, (1 / 256, -128)), (np.int16, (1 / 65536, -32768))):
        blob = unary_model("SOFTMAX", shape, (scale, 3), q_out, ir.SoftmaxOptions(beta=beta), out_dtype=out_dtype)
        assert_bitexact(blob, [x])


@pytest.mark.parametrize("profile", ["tflm", "litert"])
@pytest.mark.parametrize("scale,beta", [(0.0005, 1.0), (0.00003, 1.0), (0.01, 2.0)])
def test_int16_diff_table_equals_the_arithmetic(profile, scale, beta):
    """int16 -> int16: the prepared exp-by-difference table (every diff -65535..0) == the rescale and
    interpolating lookup eval runs on a non-int16 array of the same values."""
    from qsim.interpreter import prepare_graph
    from qsim.loader import load_bytes
    from test_svdf import softmax_int16_model
    p = prepare_graph(load_bytes(softmax_int16_model(4, 256, scale, beta)), profile).ops[0].params
    assert p.exp_by_diff is not None and p.exp_by_diff.shape == (65536,)
    x = np.random.default_rng(2).integers(-32768, 32768, (4, 256)).astype(np.int16)
    x[0, :2] = (-32768, 32767)  # diff -65535
    x[1] = np.linspace(-32768, 32767, 256).astype(np.int16)
    x[2] = 0
    looked_up = act.eval_softmax(p, [x])[0]
    np.testing.assert_array_equal(looked_up, act.eval_softmax(p, [x.astype(np.int32)])[0])
    np.testing.assert_array_equal(p.exp_by_diff, act.softmax16_exps(p, np.arange(-65535, 1)))
    assert len(np.unique(looked_up)) > 3
