"""SVDF (int8 input, int16 or int8 state) and SOFTMAX int8 -> int16 / int16 -> int16: bit-exact
against TFLite Micro and LiteRT BUILTIN_REF, each under its own profile; variable tensors start
every run afresh."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import shared_model
from qsim import ir
from qsim.builder import ModelBuilder
from qsim.errors import QsimError, UndefinedInReferenceError
from qsim.interpreter import prepare_graph, unsupported_ops, variable_start_values
from qsim.loader import load, load_bytes
from qsim.reference import compare

KEYWORD = "keyword_scrambled_8bit.tflite"


def svdf_model(seed: int, rank: int = 1, units: int = 4, memory: int = 5, n_in: int = 6, batch: int = 1,
               state_dtype=np.int16, wf_dtype=np.int8, bias: bool = True, state_data: bool = False) -> bytes:
    """One SVDF layer (activation RELU, which LiteRT requires) with random weights: input -> output."""
    b = ModelBuilder(description="svdf")
    add_svdf(b, seed, rank=rank, units=units, memory=memory, n_in=n_in, batch=batch, state_dtype=state_dtype,
             wf_dtype=wf_dtype, bias=bias, state_data=state_data)
    return b.build()


def add_svdf(b: ModelBuilder, seed: int, rank: int = 1, units: int = 4, memory: int = 5, n_in: int = 6,
             batch: int = 1, state_dtype=np.int16, wf_dtype=np.int8, bias: bool = True, state_data: bool = False,
             prefix: str = "", extreme: bool = False) -> None:
    """Adds one SVDF layer to ``b``: a graph input [batch, n_in] -> a graph output [batch, units], random
    weights, tensor names prefixed by ``prefix``.  ``extreme``: about half the weights (feature and time)
    at their type's ends (-128 / 127, -32768 / 32767) and an int16 state's scale 50 times finer (its
    entries saturate often), so the sums are large (the int16 time sums wrap) and int16 products
    reach (-32768)^2."""
    rng = np.random.default_rng(seed)
    filters = units * rank
    s_in, s_wf, s_wt = 0.05, 0.01 + 0.01 * rng.random(), 0.002 + 0.002 * rng.random()
    if np.dtype(state_dtype) == np.int16:
        s_state = s_in * s_wf * (2.0 + 6.0 * rng.random())  # feature sums reach a few thousand state LSB
        s_out = s_state * s_wt * (3e5 + 1e6 * rng.random())  # outputs spread over the int8 range
    else:  # int8 state: feature values around the int8 range, some saturating
        s_state = s_in * s_wf * (60.0 + 60.0 * rng.random())
        s_out = s_state * s_wt * (100 + 200 * rng.random())
    if extreme and np.dtype(state_dtype) == np.int16:
        s_state *= 0.02

    def weights(shape, lim, dtype):
        w = rng.integers(-lim, lim + 1, shape)
        if extreme:
            info = np.iinfo(dtype)
            w = np.where(rng.random(shape) < 0.5, rng.choice([info.min, info.max], shape), w)
        return w.astype(dtype)

    x = b.add_input(prefix + "x", (batch, n_in), np.int8, scale=s_in, zero_point=int(rng.integers(-20, 20)))
    wlim = 127 if np.dtype(wf_dtype) == np.int8 else 2000
    wf = b.add_const(prefix + "weights_feature", weights((filters, n_in), wlim, wf_dtype), scale=s_wf, zero_point=0)
    tlim = 20000 if np.dtype(state_dtype) == np.int16 else 127
    wt = b.add_const(prefix + "weights_time", weights((filters, memory), tlim, state_dtype), scale=s_wt,
                     zero_point=0)
    bb = b.add_const(prefix + "bias", rng.integers(-5000, 5000, units).astype(np.int32), scale=s_state * s_wt,
                     zero_point=0) if bias else -1
    zp_state = 0 if np.dtype(state_dtype) == np.int16 else -7
    data = np.random.default_rng([seed, 1]).integers(-99, 99, (batch, filters * memory)) if state_data else None
    state = b.add_variable(prefix + "state", (batch, filters * memory), state_dtype, scale=s_state,
                           zero_point=zp_state, data=data)
    y = b.add_tensor(prefix + "y", (batch, units), np.int8, scale=s_out, zero_point=int(rng.integers(-10, 10)))
    b.add_op("SVDF", [x, wf, wt, bb, state], [y], ir.SVDFOptions(rank=rank, activation="RELU"))
    b.mark_output(y)


def random_inputs(blob: bytes, n: int, seed: int) -> list:
    g = load_bytes(blob)
    rng = np.random.default_rng(seed)
    t = g.tensors[g.inputs[0]]
    info = np.iinfo(t.dtype)
    return [[rng.integers(info.min, info.max + 1, t.shape).astype(t.dtype)] for _ in range(n)]


# ------------------------------------------------------------------ the keyword benchmark model

def test_keyword_model_bit_exact_against_tflm():
    blob = shared_model(KEYWORD).read_bytes()
    cmp = compare(blob, random_inputs(blob, 3, seed=1), reference="tflm")
    assert cmp.refused is None and cmp.n_inputs == 3
    assert cmp.ok, cmp.summary()
    assert [t.opcode for t in cmp.layers].count("SVDF") == 7 and cmp.layers[13].opcode == "SOFTMAX"


def test_keyword_model_litert_has_no_defined_answer():
    """Its SVDF state and weights_time are int8: LiteRT reads them as int16, so under the litert
    profile qsim refuses that comparison (named, every SVDF op listed) instead of matching garbage."""
    blob = shared_model(KEYWORD).read_bytes()
    with pytest.raises(UndefinedInReferenceError, match=r"(?s)7 op\(s\).*activation_state \(tensor 4 ''\).*int8.*LiteRT"):
        prepare_graph(load_bytes(blob), "litert")
    cmp = compare(blob, random_inputs(blob, 1, seed=0), reference="litert")
    assert cmp.refused.startswith("not compared:") and not cmp.ok and "int16" in cmp.summary()


def test_keyword_model_state_starts_at_its_zero_point():
    g = load(shared_model(KEYWORD))
    start = variable_start_values(g)
    assert len(start) == 7
    for i, a in start.items():
        assert g.tensors[i].is_variable and a.dtype == np.int8 and (a == g.tensors[i].quant.zp0).all()
        assert not a.flags.writeable


def test_int8_only_view_names_the_int16_ops_the_simulator_runs_all():
    g = load(shared_model(KEYWORD))
    problems = unsupported_ops(g)  # int8-only view: the int16 input QUANTIZE, SOFTMAX and output QUANTIZE
    assert [p.split()[1] for p in problems] == ["#0", "#13", "#14"] and all("int16" in p for p in problems)
    assert not [p for p in unsupported_ops(g, int16=True)]  # the simulator runs all of it


# ------------------------------------------------------------------ single-op models vs both references

@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 10_000), rank=st.sampled_from([1, 2]), memory=st.integers(1, 6),
       batch=st.sampled_from([1, 2]))
def test_svdf_int16_state_matches_both_references(seed, rank, memory, batch):
    blob = svdf_model(seed, rank=rank, memory=memory, batch=batch)
    inputs = random_inputs(blob, 3, seed)
    for reference in ("tflm", "litert"):
        cmp = compare(blob, inputs, reference=reference)
        assert cmp.refused is None, cmp.refused
        assert cmp.ok, cmp.summary()
    ours = prepare_graph(load_bytes(blob), "tflm").run(inputs[0])
    y = ours[load_bytes(blob).outputs[0]]
    assert y.dtype == np.int8 and y.shape == (batch, 4)


def test_svdf_outputs_are_not_trivial():
    """The single-op models exercise the arithmetic: outputs spread over many int8 values."""
    blob = svdf_model(3, rank=2)
    prep = prepare_graph(load_bytes(blob), "tflm")
    ys = np.concatenate([prep.run(x)[prep.graph.outputs[0]].ravel() for x in random_inputs(blob, 20, 3)])
    assert len(np.unique(ys)) > 10


def test_svdf_int8_state_matches_tflm_and_is_refused_under_litert():
    """int8 state with zero point -7: TFLite Micro (as installed) adds the zero point after the int8
    clamp, wrapping: its newest state column holds 120 (= 127 - 7) for a saturated positive feature
    value and 121 (-128 - 7 wrapped) for a negative one, never the clamp bounds; qsim matches its
    outputs, which the other order ("before_clamp") does not."""
    from qsim.reference import make_runner
    blob = svdf_model(11, rank=2, state_dtype=np.int8)
    g = load_bytes(blob)
    inputs = random_inputs(blob, 3, 11)
    cmp = compare(blob, inputs, reference="tflm")
    assert cmp.ok, cmp.summary()
    state = next(t for t in g.tensors if t.is_variable)
    newest = make_runner("tflm", blob, g).run(inputs[0], [state.index])[state.index].reshape(-1, 5)[:, -1]
    assert 120 in newest.tolist() and not {127, -128} & set(newest.tolist())
    import dataclasses
    from qsim.profiles import PROFILES
    before = dataclasses.replace(PROFILES["tflm"], variant_per_op={**PROFILES["tflm"].variant_per_op,
                                                                   "SVDF_STATE_ZP": "before_clamp"})
    assert not compare(blob, inputs, reference="tflm", profile=before).ok
    ys = np.concatenate([prepare_graph(g, "tflm").run(x)[g.outputs[0]].ravel() for x in inputs])
    assert len(np.unique(ys)) > 4
    with pytest.raises(UndefinedInReferenceError, match="state"):
        prepare_graph(load_bytes(blob), "litert")


def test_state_does_not_carry_between_runs():
    """The same input twice gives the same output, in qsim and in both reference runners (reset)."""
    from qsim.reference import make_runner
    blob = svdf_model(5, memory=4)
    g = load_bytes(blob)
    x = random_inputs(blob, 1, 5)[0]
    prep = prepare_graph(g, "tflm")
    first = prep.run(x)[g.outputs[0]]
    assert np.array_equal(prep.run(x)[g.outputs[0]], first)
    for reference in ("tflm", "litert"):
        r = make_runner(reference, blob, g)
        a, b = (r.run(x, [g.outputs[0]])[g.outputs[0]] for _ in range(2))
        assert np.array_equal(a, b) and np.array_equal(a.reshape(first.shape), first)


def test_stored_state_data_is_ignored_like_tflm():
    """A variable tensor with buffer data: TFLite Micro ignores the data (its answer is the one of
    the same model without it), LiteRT refuses the model; qsim follows TFLM."""
    with_data, without = svdf_model(21, memory=4, state_data=True), svdf_model(21, memory=4)
    g = load_bytes(with_data)
    state = next(t for t in g.tensors if t.is_variable)
    assert state.data is not None and state.data.any()
    inputs = random_inputs(with_data, 3, 21)
    cmp = compare(with_data, inputs, reference="tflm")
    assert cmp.ok, cmp.summary()
    gw = load_bytes(without)
    for x in inputs:
        assert np.array_equal(prepare_graph(g, "tflm").run(x)[g.outputs[0]],
                              prepare_graph(gw, "tflm").run(x)[gw.outputs[0]])
    assert "variable tensor with buffer" in compare(with_data, inputs, reference="litert").refused


def test_batched_run_equals_single_runs():
    blob = svdf_model(8, rank=2)
    g = load_bytes(blob)
    prep = prepare_graph(g, "tflm")
    xs = [x[0] for x in random_inputs(blob, 5, 8)]
    batched = prep.run(np.concatenate(xs))[g.outputs[0]]
    single = np.concatenate([prep.run(x)[g.outputs[0]] for x in xs])
    assert np.array_equal(batched, single)


@pytest.mark.parametrize("n_in,dtype", [(6, np.float32), (2500, np.float64)])
def test_table_path_matches_tflm_with_float32_and_float64_gemm(n_in, dtype):
    """The table path's x @ wf runs in float32 while its sums stay below 2**24 and in float64
    past it (2500 int8 inputs): both bit-exact with TFLite Micro, one sample and a batch."""
    blob = svdf_model(30 + n_in, n_in=n_in, state_dtype=np.int8)
    g = load_bytes(blob)
    inputs = random_inputs(blob, 4, 30)
    cmp = compare(blob, inputs, reference="tflm")
    assert cmp.ok, cmp.summary()
    prep = prepare_graph(g, "tflm")
    p = prep.ops[0].params
    single = np.concatenate([prep.run(x)[g.outputs[0]] for x in inputs])
    assert p.feature_weights.dtype == dtype and p.kept_cache[2] is not None  # the table path ran
    assert np.array_equal(prep.run(np.concatenate([x[0] for x in inputs]))[g.outputs[0]], single)
    assert len(np.unique(single)) > 3


def test_int16_weights_feature_refused_naming_the_tensor():
    g = load_bytes(svdf_model(1, wf_dtype=np.int16))
    with pytest.raises(QsimError, match=r"weights_feature \(tensor 1 'weights_feature'\) is int16"):
        prepare_graph(g, "tflm")


def test_int16_weights_time_with_int8_state_refused():
    blob = svdf_model(2, state_dtype=np.int8)
    g = load_bytes(blob)
    wt = next(t for t in g.tensors if t.name == "weights_time")
    g.tensors[wt.index] = ir.Tensor(wt.index, wt.name, wt.shape, np.dtype(np.int16), wt.quant,
                                    wt.data.astype(np.int16), buffer=wt.buffer, buffer_bytes=wt.data.size * 2)
    with pytest.raises(QsimError, match=r"weights_time \(tensor 2 'weights_time'\) is int16"):
        prepare_graph(g, "tflm")


def test_cli_check_on_a_bad_svdf_exits_2(tmp_path):
    import subprocess
    import sys
    p = tmp_path / "bad_svdf.tflite"
    p.write_bytes(svdf_model(1, wf_dtype=np.int16))
    r = subprocess.run([sys.executable, "-m", "qsim.cli", "run", str(p), "--random", "1"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "qsim: error:" in r.stderr and "weights_feature" in r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------ SOFTMAX int8 -> int16

def softmax16_model(beta: float, depth: int, scale: float) -> bytes:
    b = ModelBuilder(description="softmax int8->int16")
    x = b.add_input("x", (2, depth), np.int8, scale=scale, zero_point=3)
    y = b.add_tensor("y", (2, depth), np.int16, scale=1.0 / 65536, zero_point=-32768)
    b.add_op("SOFTMAX", [x], [y], ir.SoftmaxOptions(beta=beta))
    b.mark_output(y)
    return b.build()


@pytest.mark.parametrize("beta,depth,scale", [(1.0, 2, 0.07), (1.0, 10, 0.1), (0.5, 33, 0.02)])
def test_softmax_int8_to_int16_matches_both_references(beta, depth, scale):
    blob = softmax16_model(beta, depth, scale)
    inputs = random_inputs(blob, 4, depth)
    for reference in ("tflm", "litert"):
        cmp = compare(blob, inputs, reference=reference)
        assert cmp.refused is None and cmp.ok, cmp.summary()
    g = load_bytes(blob)
    y = prepare_graph(g, "tflm").run(inputs[0])[g.outputs[0]]
    assert y.dtype == np.int16 and len(np.unique(y)) > 2


def tie_model() -> tuple[bytes, np.ndarray]:
    """An SVDF whose output accumulators are its biases (input = zero point: the feature column and
    the time sums are 0) and sit on exact rounding ties of the double-formed multiplier: with
    s_state == s_out = a and s_wt = 3 * 2**-20, double(a) * s_wt / a is exactly 0.75 * 2**-18, the
    float32-formed ratio is not, and acc = m * 2**19 (m odd) lands SRDHM on odd * 2**17, a tie of
    the 18-bit rounding shift, that the float32 multiplier moves below it.  Returns the model and
    the biases (hand-derived: outputs are round-half-away(1.5 * m) under the double multiplier)."""
    a, s_wt = 0.0052332645282149315, 3 / 1048576  # a: a float32 where the two ratios differ
    m = np.arange(17, 84, 2)
    acc = (np.concatenate([m, -m]) << 19).astype(np.int32)
    units = acc.size
    b = ModelBuilder(description="svdf ties")
    x = b.add_input("x", (1, 4), np.int8, scale=0.05, zero_point=0)
    wf = b.add_const("wf", np.ones((units, 4), np.int8), scale=0.01, zero_point=0)
    wt = b.add_const("wt", np.ones((units, 2), np.int16), scale=s_wt, zero_point=0)
    bias = b.add_const("bias", acc, scale=a * s_wt, zero_point=0)
    st = b.add_variable("state", (1, units * 2), np.int16, scale=a, zero_point=0)
    y = b.add_tensor("y", (1, units), np.int8, scale=a, zero_point=0)
    b.add_op("SVDF", [x, wf, wt, bias, st], [y], ir.SVDFOptions(rank=1, activation="RELU"))
    b.mark_output(y)
    return b.build(), acc


def test_svdf_effective_scale_is_formed_per_reference():
    """TFLite Micro (as built) forms the effective scales in double, LiteRT 2.3 in float32: on exact
    ties the two give different outputs, each reference matches its own profile and not the other."""
    import dataclasses
    from qsim.profiles import PROFILES
    blob, acc = tie_model()
    g = load_bytes(blob)
    x = [np.zeros((1, 4), np.int8)]
    m = np.abs(acc.astype(np.int64)) >> 19
    half_away = np.sign(acc) * ((3 * m + 1) // 2)  # 1.5 * m rounded half away from zero
    ours = {}
    for name in ("tflm", "litert"):
        ours[name] = prepare_graph(g, name).run(x)[g.outputs[0]].ravel()
        cmp = compare(blob, [x], reference=name)
        assert cmp.ok, cmp.summary()
    assert np.array_equal(ours["tflm"], np.clip(half_away, -128, 127))
    assert (ours["tflm"] != ours["litert"]).sum() > 10  # the test can tell the variants apart
    swapped = dataclasses.replace(PROFILES["litert"], variant_per_op={**PROFILES["litert"].variant_per_op,
                                                                      "SVDF_SCALE": "double"})
    assert not compare(blob, [x], reference="litert", profile=swapped).ok


# ------------------------------------------------------------------ SOFTMAX int16 -> int16

def softmax_int16_model(n: int, depth: int, scale: float, beta: float = 1.0) -> bytes:
    b = ModelBuilder(description="softmax int16")
    x = b.add_input("x", (n, depth), np.int16, scale=scale, zero_point=0)
    y = b.add_tensor("y", (n, depth), np.int16, scale=1.0 / 32768, zero_point=0)
    b.add_op("SOFTMAX", [x], [y], ir.SoftmaxOptions(beta=beta))
    b.mark_output(y)
    return b.build()


@pytest.mark.parametrize("scale,beta,depth", [(0.001, 1.0, 10), (0.0003, 0.7, 33)])
def test_softmax_int16_matches_both_references(scale, beta, depth):
    blob = softmax_int16_model(4, depth, scale, beta)
    rng = np.random.default_rng(depth)
    inputs = [[rng.integers(-32768, 32768, (4, depth)).astype(np.int16)] for _ in range(4)]
    inputs += [[rng.integers(-3000, 3000, (4, depth)).astype(np.int16)] for _ in range(4)]
    for reference in ("tflm", "litert"):
        cmp = compare(blob, inputs, reference=reference)
        assert cmp.refused is None and cmp.ok, cmp.summary()


def test_softmax_int16_tables_per_reference():
    """TFLite Micro builds the exp and 1/(1+x) tables in float32, LiteRT in double: two entries of
    the reciprocal table differ.  Rows whose sum of exps interpolates through them (searched with
    qsim's own two variants) tell the references apart: each matches its profile, not the other."""
    from qsim.kernels.activations import eval_softmax16, softmax16_luts
    f32, dbl = softmax16_luts("float32"), softmax16_luts("double")
    assert (f32[0] == dbl[0]).all() and (f32[1] != dbl[1]).sum() == 2
    n, depth = 32, 4
    blob = softmax_int16_model(n, depth, 0.0005)
    g = load_bytes(blob)
    p_tflm, p_litert = (prepare_graph(g, name).ops[0].params for name in ("tflm", "litert"))
    rng, rows = np.random.default_rng(1), []
    while len(rows) < n:
        x = rng.integers(-20000, 0, (n, depth)).astype(np.int16)
        x[:, 0] = 0
        differ = (eval_softmax16(p_tflm, [x])[0] != eval_softmax16(p_litert, [x])[0]).any(axis=1)
        rows.extend(x[differ])
    x = [np.stack(rows[:n])]
    assert (eval_softmax16(p_tflm, x)[0] != eval_softmax16(p_litert, x)[0]).sum() >= n
    for reference in ("tflm", "litert"):
        assert compare(blob, [x], reference=reference).ok
    assert not compare(blob, [x], reference="litert", profile="tflm").ok
    assert not compare(blob, [x], reference="tflm", profile="litert").ok


def test_cli_codegen_generates_an_int8_svdf(tmp_path):
    """An all-int8 SVDF model (int8 state): the C generator takes it (bit-exactness of the C:
    tests/test_codegen_rnn.py); the simulator runs it, and so does the accelerator model (through the
    simulator's kernel, tests/test_accel_rnn.py)."""
    import subprocess
    import sys
    p = tmp_path / "svdf8.tflite"
    p.write_bytes(svdf_model(4, state_dtype=np.int8))
    r = subprocess.run([sys.executable, "-m", "qsim.cli", "codegen", str(p), "-o", str(tmp_path / "gen")],
                       capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "#0   SVDF" in r.stdout and "state:" in r.stdout and (tmp_path / "gen" / "svdf8.c").is_file()
    for cmd in (["run", str(p), "--random", "1"], ["profile", str(p)]):
        r = subprocess.run([sys.executable, "-m", "qsim.cli", *cmd], capture_output=True, text=True)
        assert r.returncode == 0, (cmd, r.stderr)


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("state_dtype,profile", [(np.int16, "tflm"), (np.int16, "litert"), (np.int8, "tflm")])
def test_eval_on_a_nonzero_state_equals_the_definition(state_dtype, profile, rank):
    """Every run starts from the reset state, so the references never see a non-trivial kept
    part; the kernel's split of step 3 (kept columns apart, cached for a read-only state) is checked
    against the module docstring's steps 1-5 written out with the general fixedpoint functions;
    rank 1 with a read-only state runs the table path (tables built from the general steps)."""
    from qsim import fixedpoint as fp
    from qsim.kernels.svdf import eval_svdf
    g = load_bytes(svdf_model(7, rank=rank, memory=4, batch=2, state_dtype=state_dtype))
    prep = prepare_graph(g, profile)
    p = prep.ops[0].params
    info = np.iinfo(state_dtype)
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (2, 6)).astype(np.int8)
    x[0, :] = 127  # a saturated feature value (both clamp bounds reached somewhere)
    x[1, :] = -128
    filters = 4 * rank
    state = rng.integers(info.min, info.max + 1, (2, filters * 4)).astype(state_dtype)
    ins = [x] + [t.data if t is not None else None for t in g.op_inputs(g.operators[0])[1:4]] + [state]
    wf, wt = ins[1].astype(np.int64), ins[2].astype(np.int64)
    dot = (x.astype(np.int64) - p.input_zero_point) @ wf.T
    a = fp.multiply_by_quantized_multiplier(fp.wrap_int32(dot), p.m1, p.s1, p.rounding)
    zp = p.state_zero_point
    a = fp.wrap_bits(np.clip(a, info.min, info.max) + zp, 8 * np.dtype(state_dtype).itemsize)
    mem = state.astype(np.int64).reshape(2, filters, 4)
    mem = np.concatenate([mem[:, :, 1:] if profile == "tflm" else mem[:, :, :-1], a[:, :, None]], axis=2)
    t = fp.wrap_int32(((mem - zp) * wt).sum(axis=2))
    acc = fp.wrap_int32(t.reshape(2, 4, rank).sum(axis=2) + ins[3].astype(np.int64))
    want = np.clip(fp.multiply_by_quantized_multiplier(acc, p.m2, p.s2, p.rounding) + p.output_zero_point, -128, 127)
    assert np.array_equal(eval_svdf(p, ins)[0], want)
    state.flags.writeable = False  # cached kept part: the same answer twice, and a new array is not confused with it
    assert np.array_equal(eval_svdf(p, ins)[0], want) and np.array_equal(eval_svdf(p, ins)[0], want)
    other = np.roll(state, 1, axis=1)
    assert not np.array_equal(eval_svdf(p, ins[:4] + [other])[0], want)
    if rank == 1:  # the table path ran (and stays off for the writable state above)
        assert p.feature_table is not None and p.kept_cache[2] is not None
        many = rng.integers(-128, 128, (200, 6)).astype(np.int8)  # state rows broadcast: 2 x 100 samples
        for k in range(0, 200, 2):
            assert np.array_equal(eval_svdf(p, [many[k:k + 2]] + ins[1:])[0],
                                  eval_svdf(p, [many[k:k + 2]] + ins[1:4] + [state.copy()])[0])
