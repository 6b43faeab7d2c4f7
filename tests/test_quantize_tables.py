"""QUANTIZE (integer requantization) and DEQUANTIZE (per tensor) look int8 / int16 inputs up in
tables built in prepare: the lookup equals the arithmetic (the same inputs as int64, which eval
computes directly) on every value of the input type, and single-op models match both references."""
from __future__ import annotations

import numpy as np
import pytest

from qsim.kernels import quantize as qk
from qsim.kernels.quantize import DequantizeParams, QuantizeParams

from test_kernels_elementwise import assert_bitexact, unary_model


def every(dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.arange(info.min, info.max + 1, dtype=dtype)


@pytest.mark.parametrize("in_dtype,out_range", [(np.int8, (-128, 127)), (np.int16, (-32768, 32767)),
                                                (np.int16, (-128, 127)), (np.int8, (-32768, 32767))])
@pytest.mark.parametrize("m,shift,zps,rounding", [(1518500250, -3, (5, -7), "double"), (1073741824, 2, (-128, 0), "single"),
                                                  (2147483647, 0, (127, 100), "double"), (1900000000, -6, (0, 3), "single")])
def test_requant_table_equals_arithmetic(in_dtype, out_range, m, shift, zps, rounding):
    p = QuantizeParams("requant", np.zeros(0, np.float32), np.zeros(0, np.int64), 0, zps[0], zps[1], m, shift,
                       rounding, *out_range)
    qk._tabulated(p, in_dtype)
    x = every(in_dtype)
    x = np.stack([x, x[::-1]]).reshape(2, 1, -1)
    looked_up = qk.eval_quantize(p, [x])[0]
    computed = qk.eval_quantize(p, [x.astype(np.int64)])[0]  # no table for int64: the arithmetic
    assert looked_up.dtype == computed.dtype and looked_up.shape == x.shape
    np.testing.assert_array_equal(looked_up, computed)
    assert len(np.unique(looked_up)) > 2  # not a constant
    strided = x[:, :, ::3]  # a view: the lookup reads its bits in place
    np.testing.assert_array_equal(qk.eval_quantize(p, [strided])[0], computed[:, :, ::3])


@pytest.mark.parametrize("in_dtype", [np.int8, np.int16])
@pytest.mark.parametrize("scale,zp", [(0.0123, -5), (1e-6, 0), (3.5, 127)])
def test_dequantize_table_equals_arithmetic(in_dtype, scale, zp):
    p = DequantizeParams(np.array([np.float32(scale)], np.float64), np.array([zp], np.int64), 0)
    p.table = qk._integer_table(in_dtype, lambda v: qk._dequantize(p, v))
    x = every(in_dtype).reshape(1, -1)
    looked_up = qk.eval_dequantize(p, [x])[0]
    computed = qk.eval_dequantize(p, [x.astype(np.int64)])[0]
    assert looked_up.dtype == np.float32
    np.testing.assert_array_equal(looked_up.view(np.uint32), computed.view(np.uint32))
    assert qk.eval_dequantize(p, [np.asarray(np.int8(3)).astype(in_dtype)])[0].shape == ()  # 0-d stays 0-d


def test_quantize_and_dequantize_models_match_both_references():
    x = every(np.int8).reshape(1, 256)
    assert_bitexact(unary_model("QUANTIZE", (1, 256), (0.05, 3), (0.0371, -11)), [x])
    assert_bitexact(unary_model("DEQUANTIZE", (1, 256), (0.0371, -11), None, out_dtype=np.float32), [x])
