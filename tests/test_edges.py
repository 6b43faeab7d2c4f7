"""Arithmetic edges: one defined behaviour each, the same bits in Python, the generated C and the RTL.

The decisions (qsim/fixedpoint.py's module docstring, README "Arithmetic edges"):
single-rounding results beyond int32 saturate; shifts outside ``fp.SHIFT_RANGE`` are refused
at prepare (and by codegen); acc + bias wraps, the zero-point add does not; SOFTMAX rows long
enough to reach the references' abort are refused by codegen with run's message.

Every requant edge row (qsim/hdl/beats.py ``edge_rows``, also driven through the RTL by the
cocotb test ``edge_cases``) is computed three ways here and must agree bit for bit:
a hand-derived golden in Python big integers (gemmlowp's and TFLite's formulas written out
directly, not qsim's code), qsim.fixedpoint, and qkernels.c's ``qk_mbqm`` / ``qk_requantize``
compiled by gcc with -fsanitize=address,undefined (any report aborts the run).
"""
from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from qsim import fixedpoint as fp
from qsim import ir
from qsim.errors import QsimError
from qsim.interpreter import prepare_graph
from qsim.kernels.activations import prepare_softmax, softmax_abort_message, softmax_abort_row_length
from qsim.loader import load_bytes
from qsim.profiles import get_profile

from qsim.codegen import generate
from qsim.codegen.emit import TEMPLATES, _config_header
from test_codegen import need_tool, sanitizer_build_failed

from qsim.hdl.beats import edge_rows  # (the rows the cocotb tests drive through the RTL)

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ROUNDINGS = ("double", "single")


# ------------------------------------------------------------------ hand-derived golden (big integers)

def wrap32(v: int) -> int:
    return (v + (1 << 31)) % (1 << 32) - (1 << 31)


def c_div(a: int, b: int) -> int:
    """C integer division: truncation toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def golden_mbqm(x: int, m0: int, shift: int, rounding: str) -> int:
    if rounding == "single":  # TFLITE_SINGLE_ROUNDING, then the chosen int32 saturation
        total = 31 - shift
        r = (x * m0 + (1 << (total - 1))) >> total  # Python >> on ints is floor: exact
        return max(INT32_MIN, min(INT32_MAX, r))
    a = wrap32(x * (1 << max(shift, 0)))  # x * (1 << left) in int32, wrapping
    if a == INT32_MIN and m0 == INT32_MIN:
        high = INT32_MAX
    else:  # gemmlowp SaturatingRoundingDoublingHighMul: nudge, then C division by 2^31
        ab = a * m0
        high = c_div(ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30)), 1 << 31)
    q = Fraction(high, 1 << max(-shift, 0))  # RoundingDivideByPOT: nearest, ties away from zero
    r = abs(q).numerator // abs(q).denominator
    if abs(q) - r >= Fraction(1, 2):
        r += 1
    return r if q >= 0 else -r


def golden_requant(acc, bias, m0, shift, zp, lo, hi, rounding) -> int:
    return max(lo, min(hi, golden_mbqm(wrap32(acc + bias), m0, shift, rounding) + zp))


# ------------------------------------------------------------------ ADD / SUB: qk_add_raw's rescales (qk_mbqm_add)

def add_rows(rounding: str) -> list[tuple]:
    """Rows (sign, left_shift, off1, m1, s1, off2, m2, s2, m_out, s_out, a, b) reaching each branch of
    qkernels.c's qk_mbqm_add (the one-multiply path for shifts <= -2, the shift-0 path, the general
    qk_mbqm for shift -1, left shifts and negative multipliers) on int8 (left shift 20, offsets
    -128..127) and int16 (left shift 15, offsets 0) operands at their extremes and at random.  Rows
    whose scaled sum leaves int32 (undefined in C, never produced by TFLite's prepare) are dropped."""
    rng = np.random.default_rng(21)
    lo, hi = fp.SHIFT_RANGE[rounding]
    mults = [0, 1, 1 << 30, (1 << 30) + 1, INT32_MAX, -(1 << 30), *rng.integers(1 << 30, 1 << 31, 3).tolist()]
    in_shifts = [lo, -30, -20, -12, -3, -2, -1, 0]
    out_shifts = [lo, -25, -19, -18, -11, -4, -2, -1, 0, 1, 3, min(hi, 12)]
    rows = []
    for ls, vals, offs in ((20, [-128, -127, -1, 0, 1, 126, 127], [-128, -5, 0, 1, 127]),
                           (15, [-32768, -32767, -1, 0, 1, 32766, 32767], [0])):
        for _ in range(1500):
            sign = int(rng.choice([1, -1]))
            o1, o2 = (int(rng.choice(offs)) for _ in range(2))
            m1, m2, mo = (int(rng.choice(mults)) for _ in range(3))
            s1, s2 = (int(rng.choice(in_shifts)) for _ in range(2))
            so = int(rng.choice(out_shifts))
            a, b = (int(rng.choice(vals)) if rng.random() < 0.5 else int(rng.integers(vals[0], vals[-1] + 1))
                    for _ in range(2))
            rows.append((sign, ls, o1, m1, s1, o2, m2, s2, mo, so, a, b))
    return rows


def golden_add_raw(row, rounding: str):
    """TFLite's ADD/SUB element before the output offset, from golden_mbqm; None when the scaled
    sum overflows int32."""
    sign, ls, o1, m1, s1, o2, m2, s2, mo, so, a, b = row
    y1 = golden_mbqm(wrap32((a + o1) << ls), m1, s1, rounding)
    y2 = golden_mbqm(wrap32((b + o2) << ls), m2, s2, rounding)
    raw = y1 + sign * y2
    if not INT32_MIN <= raw <= INT32_MAX or not INT32_MIN <= y1 <= INT32_MAX or not INT32_MIN <= y2 <= INT32_MAX:
        return None
    out = golden_mbqm(raw, mo, so, rounding)
    return out if INT32_MIN <= out <= INT32_MAX else None


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_add_rescale_in_c_equals_the_hand_derived_golden_and_python(rounding, c_harness):
    from qsim.kernels.elementwise import AddSubParams, add_sub_arithmetic

    rows, want = [], []
    for row in add_rows(rounding):
        g = golden_add_raw(row, rounding)
        if g is not None:
            rows.append(row)
            want.append(g)
    assert len(rows) > 2000
    shifts = {r[4] for r in rows} | {r[7] for r in rows} | {r[9] for r in rows}
    assert {-2, -1, 0} <= shifts and min(shifts) == fp.SHIFT_RANGE[rounding][0] and max(shifts) > 0
    c_out = [int(v) for v in run_c(c_harness(rounding), "".join("A " + " ".join(map(str, r)) + "\n" for r in rows))]
    r = np.array(rows, dtype=np.int64).T  # every parameter as a column: one vectorized call
    py = add_sub_arithmetic(AddSubParams(sign=r[0], left_shift=r[1], input1_offset=r[2], input1_multiplier=r[3],
                                         input1_shift=r[4], input2_offset=r[5], input2_multiplier=r[6],
                                         input2_shift=r[7], output_offset=0, output_multiplier=r[8],
                                         output_shift=r[9], act_min=INT32_MIN, act_max=INT32_MAX,
                                         rounding=rounding, out_shape=()), r[10], r[11]).tolist()
    for name, got in (("C qk_add_raw", c_out), ("python add_sub_arithmetic", py)):
        bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
        assert not bad, f"{rounding} {name}: {len(bad)} rows differ, first {rows[bad[0]]}: got {got[bad[0]]}, " \
                        f"golden {want[bad[0]]}"


# ------------------------------------------------------------------ the C side: qkernels.c + a tiny harness

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "qkernels.h"
/* stdin lines: "R acc bias m0 shift zp act_min act_max" -> "mbqm int8"
 *              "S outer depth multiplier left_shift diff_min v..." -> the int8 outputs
 *              "A sign left_shift off1 m1 s1 off2 m2 s2 m_out s_out a b" -> qk_add_raw (ADD/SUB, no offset) */
int main(void)
{
    char kind;
    while (scanf(" %c", &kind) == 1) {
        if (kind == 'R') {
            long acc, bias, m0, zp, lo, hi;
            int shift;
            if (scanf("%ld %ld %ld %d %ld %ld %ld", &acc, &bias, &m0, &shift, &zp, &lo, &hi) != 7) return 2;
            printf("%ld %d\n", (long)qk_mbqm((int32_t)(acc + bias), (int32_t)m0, shift),
                   (int)qk_requantize((int32_t)acc, (int32_t)bias, (int32_t)m0, shift, (int32_t)zp,
                                      (int32_t)lo, (int32_t)hi));
        } else if (kind == 'A') {
            qk_add_params p;
            long v[12];
            int k;
            for (k = 0; k < 12; ++k) {
                if (scanf("%ld", &v[k]) != 1) return 2;
            }
            p.sign = (int32_t)v[0]; p.left_shift = (int32_t)v[1];
            p.input1_offset = (int32_t)v[2]; p.input1_multiplier = (int32_t)v[3]; p.input1_shift = (int32_t)v[4];
            p.input2_offset = (int32_t)v[5]; p.input2_multiplier = (int32_t)v[6]; p.input2_shift = (int32_t)v[7];
            p.output_multiplier = (int32_t)v[8]; p.output_shift = (int32_t)v[9];
            p.output_offset = 0; p.act_min = INT32_MIN; p.act_max = INT32_MAX;
            printf("%ld\n", (long)qk_add_raw(&p, (int32_t)v[10], (int32_t)v[11]));
        } else if (kind == 'S') {
            qk_softmax_params p;
            long outer, depth, mult, left, dmin, i, v;
            int8_t *in, *out;
            if (scanf("%ld %ld %ld %ld %ld", &outer, &depth, &mult, &left, &dmin) != 5) return 2;
            p.outer = (int32_t)outer; p.depth = (int32_t)depth; p.input_multiplier = (int32_t)mult;
            p.input_left_shift = (int32_t)left; p.diff_min = (int32_t)dmin;
            in = malloc((size_t)(outer * depth)); out = malloc((size_t)(outer * depth));
            if (in == NULL || out == NULL) return 3;
            for (i = 0; i < outer * depth; ++i) {
                if (scanf("%ld", &v) != 1) return 2;
                in[i] = (int8_t)v;
            }
            qk_softmax(&p, in, out);
            for (i = 0; i < outer * depth; ++i) printf("%d ", (int)out[i]);
            printf("\n");
            free(in); free(out);
        } else {
            return 2;
        }
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def c_harness(tmp_path_factory):
    """rounding -> path of the harness built against qkernels.c under ASan + UBSan."""
    need_tool("gcc")
    built = {}

    def get(rounding: str) -> Path:
        if rounding not in built:
            d = tmp_path_factory.mktemp(f"edges_{rounding}")
            (d / "qk_config.h").write_text(_config_header(rounding))
            (d / "harness.c").write_text(HARNESS)
            cmd = ["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-I", str(d), "-I", str(TEMPLATES),
                   "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-o", str(d / "harness"),
                   str(d / "harness.c"), str(TEMPLATES / "qkernels.c")]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            sanitizer_build_failed(r)
            assert r.returncode == 0, r.stderr
            built[rounding] = d / "harness"
        return built[rounding]
    return get


def run_c(exe: Path, text: str) -> list[str]:
    r = subprocess.run([str(exe)], input=text, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "runtime error" not in r.stderr, r.stderr[-3000:]
    return r.stdout.splitlines()


def c_requant(exe: Path, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lines = run_c(exe, "".join("R " + " ".join(map(str, row)) + "\n" for row in rows.tolist()))
    assert len(lines) == len(rows)
    out = np.array([[int(v) for v in line.split()] for line in lines], dtype=np.int64)
    return out[:, 0], out[:, 1]


# ------------------------------------------------------------------ requant edges: golden == Python == C

@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("edge", ["mbqm_beyond_int32", "shift_extremes", "bias_wrap", "zero_point_no_wrap"])
def test_edge_rows_same_bits_in_golden_python_and_c(edge, rounding, c_harness):
    rows = edge_rows(rounding)[edge]
    acc, bias, m0, shift, zp, lo, hi = rows.T
    want_mbqm = np.array([golden_mbqm(wrap32(a + b), m, s, rounding)
                          for a, b, m, s in zip(*(v.tolist() for v in (acc, bias, m0, shift)))])
    want = np.array([golden_requant(*row, rounding) for row in rows.tolist()])
    py_mbqm = fp.multiply_by_quantized_multiplier(fp.wrap_int32(acc + bias), m0, shift, rounding)
    py = fp.requantize(acc, bias, m0, shift, zp, lo, hi, rounding)
    c_mbqm, c_out = c_requant(c_harness(rounding), rows)
    for name, got, ref in (("python MBQM", py_mbqm, want_mbqm), ("python requant", py, want),
                           ("C qk_mbqm", c_mbqm, want_mbqm), ("C qk_requantize", c_out, want)):
        bad = np.flatnonzero(np.asarray(got) != ref)
        assert bad.size == 0, f"{edge}/{rounding} {name}: {bad.size} rows differ, first {rows[bad[0]].tolist()}: " \
                              f"got {np.asarray(got)[bad[0]]}, golden {ref[bad[0]]}"


def test_single_rounding_overflow_saturates_instead_of_truncating():
    """The issue's case, derived by hand: x * M0 / 2^(31 - shift) = 2^30 * 2^30 / 2^29 = 2^31 does not
    fit in int32: saturation gives INT32_MAX (int8 127), truncation would have given INT32_MIN (-128)."""
    assert int(fp.multiply_by_quantized_multiplier_single(1 << 30, 1 << 30, 2)) == INT32_MAX
    assert int(fp.multiply_by_quantized_multiplier_single(-(1 << 30) - 1, 1 << 30, 2)) == INT32_MIN
    assert int(fp.multiply_by_quantized_multiplier_single(1 << 20, 1 << 30, 13)) == INT32_MAX  # 2^32 -> not 0
    assert int(fp.requantize(1 << 20, 0, 1 << 30, 13, 0, -128, 127, "single")) == 127
    rows = edge_rows("single")["mbqm_beyond_int32"]
    beyond = [r for r in rows.tolist() if abs(r[0] * r[2]) >> (31 - r[3]) > INT32_MAX]
    assert len(beyond) > 100  # the edge set really leaves int32


def test_edge_rows_cover_what_they_claim():
    for rounding in ROUNDINGS:
        e = edge_rows(rounding)
        lo, hi = fp.SHIFT_RANGE[rounding]
        assert {lo, hi} <= set(e["shift_extremes"][:, 3].tolist())
        assert all(not INT32_MIN <= a + b <= INT32_MAX for a, b in e["bias_wrap"][:, :2].tolist())
        zp_rows = e["zero_point_no_wrap"].tolist()
        assert any(not INT32_MIN <= golden_mbqm(a, m, s, rounding) + z <= INT32_MAX
                   for a, _, m, s, z, _, _ in zp_rows)


# ------------------------------------------------------------------ shifts outside SHIFT_RANGE: refused at prepare

def _fc_model(in_scale: float, w_scale: float, out_scale: float) -> bytes:
    from qsim.builder import ModelBuilder
    b = ModelBuilder("edge: huge requant multiplier")
    x = b.add_input("x", (1, 4), np.int8, scale=in_scale, zero_point=0)
    w = b.add_const("w", np.ones((2, 4), np.int8), scale=w_scale, zero_point=0)
    y = b.add_tensor("y", (1, 2), np.int8, scale=out_scale, zero_point=0)
    b.add_op("FULLY_CONNECTED", [x, w, -1], [y], ir.FullyConnectedOptions())
    b.mark_output(y)
    return b.build()


def test_quantize_multiplier_refuses_shifts_beyond_the_range_every_consumer_supports():
    assert fp.quantize_multiplier(2.0 ** 31 * 0.99) == (round(0.99 * 2 ** 31), 31)  # the last valid shift
    with pytest.raises(QsimError, match=r"shift 32 is outside \[-31, 31\]"):
        fp.quantize_multiplier(2.0 ** 31)
    assert fp.quantize_multiplier(2.0 ** 40, single_rounding=True) == (INT32_MAX, 30)  # TFLite saturates
    assert fp.quantize_multiplier(2.0 ** -40) == (0, 0)  # and flushes: never below -31
    with pytest.raises(QsimError, match="outside"):
        fp.check_shift_range([0, 31], "single")


def test_model_with_huge_multiplier_is_refused_naming_the_op_by_run_and_codegen(tmp_path):
    g = load_bytes(_fc_model(1e6, 1e4, 1e-6))  # M = 1e16 >= 2^31
    with pytest.raises(QsimError, match=r"FULLY_CONNECTED \(output 'y'\).*shift \d+ is outside \[-31, 31\]"):
        prepare_graph(g, "tflm")
    with pytest.raises(QsimError, match=r"FULLY_CONNECTED \(output 'y'\).*outside \[-31, 31\]"):
        generate(g, tmp_path / "c", name="m")
    assert not (tmp_path / "c").exists()
    prepare_graph(g, "single")  # TFLITE_SINGLE_ROUNDING's QuantizeMultiplier saturates it: runs


def test_cli_run_refuses_huge_multiplier_with_exit_2(tmp_path):
    path = tmp_path / "huge.tflite"
    path.write_bytes(_fc_model(1e6, 1e4, 1e-6))
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.int8))
    r = subprocess.run([sys.executable, "-m", "qsim.cli", "run", str(path), "--input", str(tmp_path / "x.npy")],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "outside [-31, 31]" in r.stderr, r.stderr


# ------------------------------------------------------------------ SOFTMAX rows that can reach the abort threshold

def _softmax_model(depth: int, in_scale: float = 0.1) -> bytes:
    from qsim.builder import ModelBuilder
    b = ModelBuilder("edge: softmax row")
    x = b.add_input("logits", (1, depth), np.int8, scale=in_scale, zero_point=0)
    y = b.add_tensor("prob", (1, depth), np.int8, scale=1 / 256, zero_point=-128)
    b.add_op("SOFTMAX", [x], [y], ir.SoftmaxOptions(beta=1.0))
    b.mark_output(y)
    return b.build()


def test_softmax_abort_row_length_is_512():
    """Hand-derived: exp(0) in Q12.19 is 2^19, the abort sum 2^28 (512.0): 512 entries."""
    assert softmax_abort_row_length() == 512


def test_codegen_refuses_softmax_rows_that_can_abort_with_runs_message(tmp_path):
    g = load_bytes(_softmax_model(512))
    pg = prepare_graph(g, "tflm")
    with pytest.raises(QsimError) as run_err:
        pg.run([np.zeros((1, 512), np.int8)])
    with pytest.raises(QsimError) as gen_err:
        generate(g, tmp_path / "c", name="m")
    message = softmax_abort_message(512)
    assert message in str(run_err.value) and message in str(gen_err.value)
    generate(load_bytes(_softmax_model(511)), tmp_path / "ok", name="m")  # one shorter: generated


@pytest.mark.parametrize("rounding,profile", [("double", "tflm"), ("single", "single")])
def test_softmax_longest_row_same_bits_in_python_c_and_tflm(rounding, profile, c_harness):
    """511 entries at the maximum (the largest sum that runs), plus mixed rows: qsim == qk_softmax
    (UBSan clean) and, for the double-rounding profile, == TFLite Micro."""
    blob = _softmax_model(511)
    g = load_bytes(blob)
    rng = np.random.default_rng(7)
    rows = [np.full(511, 17, np.int8), np.full(511, -128, np.int8),
            np.where(np.arange(511) < 500, 127, -128).astype(np.int8), rng.integers(-128, 128, 511).astype(np.int8)]
    pg = prepare_graph(g, profile)
    py = np.stack([pg.run([r[None]], keep_all=False)[g.outputs[0]].reshape(-1) for r in rows]).astype(np.int64)
    p = prepare_softmax(g.operators[0], g, get_profile(profile))
    text = f"S {len(rows)} 511 {p.input_multiplier} {p.input_left_shift} {p.diff_min} " \
           + " ".join(str(v) for r in rows for v in r.tolist()) + "\n"
    c = np.array([int(v) for v in run_c(c_harness(rounding), text)[0].split()], np.int64).reshape(len(rows), 511)
    assert np.array_equal(c, py), np.argwhere(c != py)[:5]
    if rounding == "double":
        from test_codegen import tflm_outputs
        ref = tflm_outputs(blob, [[r[None]] for r in rows]).astype(np.int64)
        assert np.array_equal(py, ref), np.argwhere(py != ref)[:5]


# ------------------------------------------------------------------ the GEMM kernels' one-multiply requantization

def fast_path_rows(rounding: str) -> np.ndarray:
    """Rows (acc, bias, M0, shift, zp, act_min, act_max) for qkernels.c's qk_mbqm_right2 (shift <= -2,
    M0 >= 0: the fast requantization of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED): for every
    right shift, accumulators whose SRDHM lands on and next to a RoundingDivideByPOT tie (both signs,
    so the int8 result is in range and the rounding is visible), the int32 extremes, and the x < 0,
    SRDHM = 0 case the derivation singles out (x = -1, M0 = 2^30)."""
    rng = np.random.default_rng(13)
    lo_shift = fp.SHIFT_RANGE[rounding][0]
    rows = []
    for shift in range(lo_shift, -1):
        e = -shift
        for m0 in (0, 1, 1 << 30, (1 << 30) + 1, INT32_MAX, int(rng.integers(1 << 30, 1 << 31))):
            xs = {INT32_MIN, INT32_MIN + 1, INT32_MAX, INT32_MAX - 1, -1, 0, 1, -2, 2}
            if m0:
                for k in (-3, -1, 0, 1, 2):
                    target = k * (1 << e) + (1 << (e - 1))  # a tie of the division by 2^e
                    centre = target * (1 << 31) // m0
                    xs |= {c for c in range(centre - 3, centre + 4) if INT32_MIN <= c <= INT32_MAX}
            for x in sorted(xs):
                for zp, lo, hi in ((0, -128, 127), (-7, -128, 127), (5, -20, 30)):
                    rows.append((x, 0, m0, shift, zp, lo, hi))
    # bias wrap feeding the fast path
    rows += [(INT32_MAX, 5, 1 << 30, -3, 0, -128, 127), (INT32_MIN, -5, INT32_MAX, -2, 0, -128, 127)]
    return np.array(rows, dtype=np.int64)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_fast_requant_path_equals_the_hand_derived_golden(rounding, c_harness):
    rows = fast_path_rows(rounding)
    acc, bias, m0, shift, zp, lo, hi = rows.T
    want = np.array([golden_requant(*row, rounding) for row in rows.tolist()])
    raw = np.array([golden_mbqm(wrap32(a + b), m, s, rounding) for a, b, m, s in rows[:, :4].tolist()])
    assert np.count_nonzero(np.abs(raw) <= 100) > 1000  # most rows' results are in int8 range, not clamped
    py = fp.requantize(acc, bias, m0, shift, zp, lo, hi, rounding)
    _, c_out = c_requant(c_harness(rounding), rows)  # qk_requantize takes the fast path for these rows
    for name, got in (("python requant", py), ("C qk_requantize (fast path)", c_out)):
        bad = np.flatnonzero(np.asarray(got) != want)
        assert bad.size == 0, f"{rounding} {name}: {bad.size} rows differ, first {rows[bad[0]].tolist()}: " \
                              f"got {np.asarray(got)[bad[0]]}, golden {want[bad[0]]}"
