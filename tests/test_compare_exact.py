"""`qsim compare`'s isolated view on an exactly representable model gives exactly zero error.

The pair (built with qsim's builder; float32 twin with the same tensor names):

    x [1,4,4,2] --CONV_2D 3x3 SAME + RELU--> conv --MAX_POOL_2D 2x2/2--> pool --+
    x --MAX_POOL_2D 2x2/2--> xpool -------------------------------------------ADD--> sum --RESHAPE--> flat
    flat, flat --ADD--> twice

Why every op is exact (hand derivation, scales are powers of two, all zero points 0):

* data: x = k/4 with k in [-4, 4], on the input grid (scale 2^-2), so quantize(x) = 4x exactly;
* CONV_2D: weights w = j/2, j in {-1, 0, 1} (scale 2^-1), bias on 2^-3 (= s_in·s_w, so its int32 is
  exact); the accumulator's real value is a multiple of 2^-3 with |value| <= 18·(1·0.5) + 1 < 15.9,
  so it lies on the output grid (scale 2^-3) without clamping; the requantizer's multiplier is
  s_in·s_w / s_out = 1 (M0 = 2^30, shift 1: the rounding doubling high multiply of 2·acc by 2^30
  returns acc exactly). The float conv adds dyadic numbers of a few bits: exact in float32.
* MAX_POOL_2D, RESHAPE: pick or move values, output quantization = input quantization.
* ADD (pool, scale 2^-3, + xpool, scale 2^-2 -> sum, scale 2^-3): TFLite's int8 ADD shifts each input
  left by 20 and scales it by s_i / (2·max s) (1/4 and 1/2: multiplications by powers of two of a
  multiple of 2^20, exact), then the sum by 2·max s / (2^20·s_out) = 2^-18, a division by a power of
  two of a multiple of 2^18: exact; the real sum p + 2^-2·k' is on the 2^-3 grid and below 15.9.
* ADD (flat + flat -> twice, scale 2^-2): 2·flat is a multiple of 2^-2 (flat is on 2^-3), |2·flat| <= 31.75
  (|flat| <= 10.4 here), so it is on the output grid; input multipliers 1/2, the output's a power of
  two again (2^-20): exact.
The non-exact contrast gives ``sum`` (and ``flat``) the output scale 2^-2 instead: an odd multiple of
2^-3 then falls between two levels and rounds.
"""
from __future__ import annotations

import numpy as np
import pytest

import qsim
from qsim import ir
from qsim.builder import ModelBuilder

RNG = np.random.default_rng(11)
W = RNG.integers(-1, 2, size=(2, 3, 3, 2)) * 0.5  # [O, kh, kw, I], on the 2^-1 grid
B = np.array([0.375, -0.25])  # on the 2^-3 grid


def _pair(d, sum_scale: float):
    """(int8 path, float path); ``sum_scale``: the ADD's output scale (2^-3 exact, 2^-2 not)."""
    paths = []
    for kind in ("int8", "float"):
        b = ModelBuilder(f"exact {kind}")
        q = kind == "int8"

        def t(name, shape, scale, inp=False):
            dt = np.int8 if q else np.float32
            kw = dict(scale=scale, zero_point=0) if q else {}
            return (b.add_input if inp else b.add_tensor)(name, shape, dt, **kw)

        x = t("x", (1, 4, 4, 2), 0.25, inp=True)
        w = b.add_const("w", (W / 0.5).astype(np.int8), scale=0.5, zero_point=0) if q else \
            b.add_const("w", W.astype(np.float32))
        bias = b.add_const("b", (B / 0.125).astype(np.int32), scale=0.125, zero_point=0) if q else \
            b.add_const("b", B.astype(np.float32))
        v = {} if q else {"version": 1}
        conv = t("conv", (1, 4, 4, 2), 0.125)
        b.add_op("CONV_2D", [x, w, bias], [conv], ir.Conv2DOptions("SAME", 1, 1, 1, 1, "RELU"), **v)
        pool = t("pool", (1, 2, 2, 2), 0.125)
        b.add_op("MAX_POOL_2D", [conv], [pool], ir.Pool2DOptions("VALID", 2, 2, 2, 2), **v)
        xpool = t("xpool", (1, 2, 2, 2), 0.25)
        b.add_op("MAX_POOL_2D", [x], [xpool], ir.Pool2DOptions("VALID", 2, 2, 2, 2), **v)
        s = t("sum", (1, 2, 2, 2), sum_scale)
        b.add_op("ADD", [pool, xpool], [s], ir.ActivationOptions("NONE"), **v)
        flat = t("flat", (1, 8), sum_scale)
        b.add_op("RESHAPE", [s, b.add_const("shape", np.array([1, 8], np.int32))], [flat],
                 ir.ReshapeOptions((1, 8)), **v)
        tw = t("twice", (1, 8), 0.25)
        b.add_op("ADD", [flat, flat], [tw], ir.ActivationOptions("NONE"), **v)
        b.mark_output(tw)
        paths.append(b.save(d / f"{kind}_{sum_scale}.tflite"))
    return paths


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("exact")
    x = RNG.integers(-4, 5, size=(24, 4, 4, 2)) * 0.25  # on the input grid, within [-1, 1]
    np.save(d / "x.npy", x.astype(np.float32))
    return d


def _rows(d, sum_scale):
    q, f = _pair(d, sum_scale)
    rep = qsim.load(q).compare(f, d / "x.npy", batch_size=7)
    return {r.tensor_name: r for r in rep.raw_rows}, {r["tensor_name"]: r for r in rep.rows}


def test_isolated_view_of_exact_model_is_zero(data):
    raw, rows = _rows(data, 0.125)
    assert set(raw) == {"x", "conv", "pool", "xpool", "sum", "flat", "twice"}
    for name in ("conv", "pool", "xpool", "sum", "flat", "twice"):
        iso = raw[name].iso
        assert iso is not None and iso.n_samples == 24, name  # every op has its isolated view
        assert iso.s_diff2 == 0.0 and iso.s_x2 > 0, (name, iso.s_diff2)
        assert rows[name]["iso_sqnr_db"] == float("inf") and rows[name]["iso_rmse_lsb"] == 0.0
        assert raw[name].st.s_diff2 == 0.0  # exact end to end as well
    assert rows["conv"]["levels_dataset"] > 8  # the data exercise the conv (not all zeros after RELU)


def test_non_exact_op_has_nonzero_isolated_error(data):
    """``sum`` on the coarser 2^-2 grid: its ADD rounds odd multiples of 2^-3 (isolated error > 0, at
    most half a step); the ops before it stay exact."""
    raw, rows = _rows(data, 0.25)
    for name in ("conv", "pool", "xpool"):
        assert raw[name].iso.s_diff2 == 0.0, name
    iso = raw["sum"].iso
    assert iso.s_diff2 > 0 and np.isfinite(rows["sum"]["iso_sqnr_db"])
    assert rows["sum"]["max_abs_error"] <= 0.125 + 1e-12  # half of the 2^-2 step
