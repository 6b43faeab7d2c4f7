"""uint8 (the old converter's QUANTIZED_UINT8) models: every tensor bit-exact with LiteRT BUILTIN_REF.

Models come from :func:`qsim.builder.uint8_model` (uint8 activations, uint8 weights with zero
points that are often not 128, int32 bias of scale s_in * s_w); goldens are LiteRT's own runs
(``Model.check(reference="litert")``).  TFLite Micro has no uint8 kernels for most ops: the table
qsim reports its refusal from (:func:`qsim.kernels.uint8.tflm_has_uint8_kernel`) is measured here
against the tflite-micro runtime itself.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qsim
from conftest import REPO, require_module
from qsim import ir
from qsim.builder import UINT8_SINGLE_OPS, ModelBuilder, uint8_model
from qsim.errors import QsimError

PROPS = dict(max_examples=12, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
CHAIN_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION", "LOGISTIC")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "qsim.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def _litert_ok(blob: bytes, seed: int, n: int = 3) -> None:
    rep = qsim.load(blob).check(inputs=n, reference="litert", seed=seed)
    assert rep.ok, rep.comparisons[0].summary()


@pytest.fixture(scope="module", autouse=True)
def _litert():
    require_module("ai_edge_litert", "LiteRT reference")


@pytest.mark.parametrize("op", UINT8_SINGLE_OPS)
@settings(**dict(PROPS, max_examples=4))
@given(seed=st.integers(0, 10_000))
def test_single_op_bit_exact_with_litert(op, seed):
    """Each uint8 op, random quantization/options/weights (weight zero points 128 or not)."""
    _litert_ok(uint8_model([op], seed), seed)


@pytest.mark.parametrize("src", [np.int8, np.uint8])
def test_requantizing_quantize_into_uint8(src):
    """QUANTIZE int8 -> uint8 and uint8 -> uint8 (LiteRT's Requantize), including the pure +128 shift."""
    for k, (s_in, z_in, s_out, z_out) in enumerate([(0.05, 3, 0.07, 140), (0.1, -128, 0.1, 0), (0.02, 10, 0.3, 7)]):
        b = ModelBuilder()
        x = b.add_input("x", (1, 16), src, scale=s_in, zero_point=z_in + (128 if src == np.uint8 else 0))
        y = b.add_tensor("y", (1, 16), np.uint8, scale=s_out, zero_point=z_out)
        b.add_op("QUANTIZE", [x], [y])
        b.mark_output(y)
        _litert_ok(b.build(), k, n=4)


@settings(**PROPS)
@given(chain=st.lists(st.sampled_from(CHAIN_OPS), min_size=2, max_size=4), seed=st.integers(0, 10_000),
       tail=st.sampled_from(["SOFTMAX", "DEQUANTIZE", "QUANTIZE", "LOGISTIC"]), float_input=st.booleans())
def test_multi_op_bit_exact_with_litert(chain, seed, tail, float_input):
    """Small chains ending in RESHAPE + FULLY_CONNECTED + a tail op; every intermediate tensor compared."""
    _litert_ok(uint8_model(chain + ["RESHAPE", "FULLY_CONNECTED", tail], seed, float_input=float_input), seed)


def _tie_fc() -> bytes:
    """FULLY_CONNECTED whose real multiplier is exactly 0.5 (scales 0.5 * 0.5 / 0.5): odd
    accumulators are exact ties, which fixed-point and round-half-away rescaling settle differently."""
    rng = np.random.default_rng(1)
    b = ModelBuilder()
    x = b.add_input("x", (1, 4), np.uint8, scale=0.5, zero_point=128)
    w = b.add_const("w", rng.integers(120, 140, (8, 4)), scale=0.5, zero_point=130, dtype=np.uint8)
    bias = b.add_const("b", np.zeros(8), scale=0.25, zero_point=0, dtype=np.int32)
    y = b.add_tensor("y", (1, 8), np.uint8, scale=0.5, zero_point=128)
    b.add_op("FULLY_CONNECTED", [x, w, bias], [y], ir.FullyConnectedOptions())
    b.mark_output(y)
    return b.build()


def test_fully_connected_exact_ties_follow_litert():
    """LiteRT's uint8 FULLY_CONNECTED rounds exact ties as its int8 one does (double real scale,
    ties away from zero): qsim's litert profile matches it; single rounding (ties up) would not."""
    m = qsim.load(_tie_fc())
    xs = np.random.default_rng(2).integers(110, 146, (40, 4)).astype(np.uint8)
    rep = m.check(inputs=list(xs[:, None, :]), reference="litert")
    assert rep.ok, rep.comparisons[0].summary()
    ours = m.run(xs, profile="litert").outputs["y"]
    single = m.run(xs, profile="single").outputs["y"]
    assert np.count_nonzero(ours != single) > 10  # the model does hit ties: the check above can fail


def _convert(opcode: str, src, dst) -> bytes:
    """One QUANTIZE / DEQUANTIZE between ``src`` and ``dst`` (float32, int8 or uint8)."""
    b = ModelBuilder()
    q = {np.int8: dict(scale=0.05, zero_point=3), np.uint8: dict(scale=0.07, zero_point=131), np.float32: {}}
    x = b.add_input("x", (1, 64), src, **q[src])
    y = b.add_tensor("y", (1, 64), dst, **q[dst])
    b.add_op(opcode, [x], [y])
    b.mark_output(y)
    return b.build()


CONVERSIONS = [("QUANTIZE", np.float32, np.uint8), ("QUANTIZE", np.int8, np.uint8), ("QUANTIZE", np.uint8, np.uint8),
               ("QUANTIZE", np.uint8, np.int8), ("DEQUANTIZE", np.uint8, np.float32)]


def test_tflm_uint8_support_is_as_recorded():
    """TFLite Micro runs a uint8 op iff tflm_has_uint8_kernel says so (what the refusal names), and
    where it runs one, qsim's tflm profile matches it on every tensor."""
    require_module("tflite_micro", "TFLite Micro reference")
    from qsim.kernels.uint8 import tflm_has_uint8_kernel
    from qsim.reference import ReferenceRefused, make_runner
    blobs = [uint8_model([op], 5) for op in UINT8_SINGLE_OPS] + [_convert(*c) for c in CONVERSIONS]
    for blob in blobs:
        m = qsim.load(blob)
        op = m.graph.operators[-1]
        sample = m.random_inputs(1, 0)[0]
        try:
            runner = make_runner("tflm", m.blob, m.graph)
            runner.submit([list(sample) if isinstance(sample, (list, tuple)) else [sample]],
                          [m.graph.outputs[0]])[0].get()
            ran = True
        except ReferenceRefused:
            ran = False
        assert ran == tflm_has_uint8_kernel(op, m.graph), [m.graph.tensors[i].dtype for i in op.inputs + op.outputs]
        if ran:
            rep = m.check(inputs=3, reference="tflm")
            assert rep.ok, rep.comparisons[0].summary()


def test_check_both_reports_tflm_refusal(tmp_path):
    """`qsim check --reference both`: LiteRT compared, TFLM's refusal named (op and uint8), exit 0."""
    p = tmp_path / "u8.tflite"
    p.write_bytes(uint8_model(["CONV_2D", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"], 7))
    r = _cli("check", p, "--reference", "both", "--random", "2", "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    by_ref = {c["reference"]: c for c in doc["comparisons"]}
    assert by_ref["litert"]["ok"] and by_ref["litert"]["refused"] is None
    refusal = by_ref["tflm"]["refused"]
    assert "TFLite Micro has no uint8 kernel" in refusal and "op #0 CONV_2D" in refusal, refusal
    text = _cli("check", p, "--reference", "both", "--random", "1")
    assert text.returncode == 0 and "TFLM refused this model: TFLite Micro has no uint8 kernel" in text.stdout


def test_tflm_profile_refuses_uint8_by_name():
    m = qsim.load(uint8_model(["CONV_2D"], 3))
    with pytest.raises(QsimError, match="TFLite Micro has no uint8 CONV_2D kernel.*--profile litert"):
        m.run(m.random_inputs(1, 0)[0], profile="tflm")
    m2 = qsim.load(_convert("QUANTIZE", np.int8, np.uint8))  # a uint8 op TFLM does run
    m2.run(m2.random_inputs(1, 0)[0], profile="tflm")
    m3 = qsim.load(_convert("QUANTIZE", np.float32, np.uint8))  # ... and one it refuses
    with pytest.raises(QsimError, match="TFLite Micro has no uint8 QUANTIZE kernel"):
        m3.run(np.zeros((1, 64), np.float32), profile="tflm")


def _mixed(weights_dtype, act_dtype) -> bytes:
    b = ModelBuilder()
    x = b.add_input("x", (1, 4, 4, 2), act_dtype, scale=0.05, zero_point=0 if act_dtype == np.int8 else 128)
    w = b.add_const("w_mixed", np.full((3, 1, 1, 2), 7), scale=0.02, zero_point=100 if weights_dtype == np.uint8
                    else 0, dtype=weights_dtype)
    bias = b.add_const("b", np.zeros(3), scale=0.001, zero_point=0, dtype=np.int32)
    y = b.add_tensor("y", (1, 4, 4, 3), act_dtype, scale=0.1, zero_point=0 if act_dtype == np.int8 else 128)
    b.add_op("CONV_2D", [x, w, bias], [y], ir.Conv2DOptions())
    b.mark_output(y)
    return b.build()


def test_mixed_types_are_refused_naming_the_tensor(tmp_path):
    for wd, ad, name in ((np.uint8, np.int8, "w_mixed"), (np.int8, np.uint8, "w_mixed")):
        m = qsim.load(_mixed(wd, ad))
        with pytest.raises(QsimError, match=f"filter '{name}' is {np.dtype(wd).name} but input 'x' is "
                                            f"{np.dtype(ad).name}.*uint8"):
            m.prepared("litert")
    p = tmp_path / "mixed.tflite"
    p.write_bytes(_mixed(np.uint8, np.int8))
    r = _cli("run", p, "--random", "1", "--profile", "litert")
    assert r.returncode == 2 and "qsim: error:" in r.stderr and "'w_mixed'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_vectors_refuse_uint8_by_name_profile_needs_litert(tmp_path):
    """vectors refuse uint8 layers by name; profile's values need the litert rounding profile (TFLM
    defines none; tests/test_accel_uint8.py covers the values).  codegen generates them
    (tests/test_codegen_uint8.py)."""
    m = qsim.load(uint8_model(["CONV_2D", "RESHAPE", "FULLY_CONNECTED"], 4))
    with pytest.raises(QsimError, match=r"'tflm' rounding profile defines no values.*--rounding-profile litert"):
        m.profile()
    with pytest.raises(QsimError, match="layer 0 CONV_2D is uint8.*int8 layers only"):
        m.vectors(0, profile="litert")
    timing = m.profile(inputs=None)  # timing only: the array cost of a uint8 layer is an int8 layer's
    assert [L["op"] for L in timing.layers] == ["CONV_2D", "RESHAPE", "FULLY_CONNECTED"]
    assert timing.layers[0]["cycles"] > 0


def test_inputs_quantized_with_the_uint8_inputs_own_parameters(tmp_path):
    """Real data -> uint8 with the input's scale/zero point; mean/std 128/128 images give q = pixel
    for an input of scale 1/128, zero point 128 (the old converter's mean/std), and the 127.5
    form follows TFLite's QUANTIZE rule computed here by hand."""
    from PIL import Image

    from qsim.data import load_dataset
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 4, 4, 3)).astype(np.uint8)
    root = tmp_path / "imgs"
    for k, p in enumerate(pixels):  # one class per image (the model's output has 3 "classes")
        (root / "abc"[k]).mkdir(parents=True)
        Image.fromarray(p).save(root / "abc"[k] / f"{k}.png")
    for scale, mean in ((1 / 128, 128.0), (1 / 127.5, 127.5)):
        b = ModelBuilder()
        x = b.add_input("x", (1, 4, 4, 3), np.uint8, scale=scale, zero_point=128)
        y = b.add_tensor("y", (1, 4, 4, 3), np.uint8, scale=scale, zero_point=128)
        b.add_op("MAX_POOL_2D", [x], [y], ir.Pool2DOptions(filter_h=1, filter_w=1))
        b.mark_output(y)
        m = qsim.load(b.build())
        ds = load_dataset(root, m.graph, mean=mean, std=mean)
        s32 = np.float32(scale)
        real = (pixels.astype(np.float64) - mean) / mean  # TFLite's QUANTIZE rule on float32 real values:
        r = (real.astype(np.float32) / s32).astype(np.float64)  # float32 division, ties away from zero
        want = np.clip(np.sign(r) * np.floor(np.abs(r) + 0.5) + 128, 0, 255).astype(np.uint8)
        assert ds.x.dtype == np.uint8
        np.testing.assert_array_equal(ds.x.reshape(pixels.shape), want)
        if mean == 128.0:
            np.testing.assert_array_equal(want, pixels)
        v = np.array([-1.0, 0.0, 0.5, 2.0])
        q = m.inputs[0].quantize(v)
        r = (v.astype(np.float32) / s32).astype(np.float64)
        assert q.dtype == np.uint8
        assert q.tolist() == np.clip(np.sign(r) * np.floor(np.abs(r) + 0.5) + 128, 0, 255).astype(int).tolist()
        assert q[-1] == 255 and q[1] == 128  # 2.0 saturates at uint8's top, 0.0 is the zero point


def _concat(seed: int, tie: bool = False) -> bytes:
    """uint8 CONCATENATION of differently quantized inputs (LiteRT rescales them: ConcatenationWithScaling);
    ``tie``: s_in / s_out = 0.5 with zero points 129 -> 128, so every odd q - 129 lands on an exact .5."""
    rng = np.random.default_rng(seed)
    sc = (lambda: 0.5) if tie else (lambda: float(rng.uniform(0.01, 0.2)))
    zp = (lambda: 129) if tie else (lambda: int(rng.integers(0, 256)))
    b = ModelBuilder()
    x1 = b.add_input("x1", (1, 3, 3, 2), np.uint8, scale=sc(), zero_point=zp())
    x2 = b.add_input("x2", (1, 3, 3, 3), np.uint8, scale=sc(), zero_point=zp())
    y = b.add_tensor("y", (1, 3, 3, 5), np.uint8, scale=1.0 if tie else sc(), zero_point=128 if tie else zp())
    b.add_op("CONCATENATION", [x1, x2], [y], ir.ConcatenationOptions(axis=3))
    b.mark_output(y)
    return b.build()


def test_concatenation_with_rescaling_bit_exact():
    for seed in range(6):
        _litert_ok(_concat(seed), seed, n=5)
    m = qsim.load(_concat(0, tie=True))
    _litert_ok(m.blob, 0, n=5)
    x = np.arange(0, 18, dtype=np.uint8).reshape(1, 3, 3, 2) + 120  # q - 129 in [-9, 8]: ties half the time
    got = m.run([x, np.full((1, 3, 3, 3), 129, np.uint8)], profile="litert").outputs["y"][..., :2]
    d = (x.astype(int) - 129) / 2
    np.testing.assert_array_equal(got, np.sign(d) * np.floor(np.abs(d) + 0.5) + 128)  # ties away from zero


def test_batched_run_equals_single_runs():
    """A batch through the uint8 ops (vectorized where the int8 kernel batches) = one sample at a time."""
    for blob in (uint8_model(["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "CONCATENATION", "LOGISTIC",
                              "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"], 21), _concat(3)):
        m = qsim.load(blob)
        samples = m.random_inputs(4, 1)
        batch = {t.name: np.concatenate([s[k] for s in samples]) for k, t in enumerate(m.inputs)}
        out = m.outputs[0].name
        got = m.run(batch, profile="litert").outputs[out]
        want = np.concatenate([m.run(list(s), profile="litert").outputs[out] for s in samples])
        np.testing.assert_array_equal(got.reshape(want.shape), want)


def test_uint8_mutants_end_in_success_or_qsim_error():
    """Seeded mutants (qsim.fuzz.mutate) of two uint8 models through load -> prepare (litert) -> run:
    each ends in a result or a QsimError, never another exception or a RuntimeWarning."""
    import warnings

    from qsim import fuzz
    from qsim import inputs as qin
    from qsim.interpreter import prepare_graph
    from qsim.loader import load_bytes
    seeds = [("u8a", uint8_model(["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "CONCATENATION", "RESHAPE",
                                  "FULLY_CONNECTED", "SOFTMAX"], 2)),
             ("u8b", uint8_model(["ADD", "MAX_POOL_2D", "LOGISTIC", "QUANTIZE"], 9, float_input=True))]
    ok = refused = 0
    for k in range(400):
        m = fuzz.mutate(seeds, 5, k)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)
                g = load_bytes(m.data, source="mutant")
                prepare_graph(g, "litert").run(qin.random_inputs(g, 1, seed=0)[0], keep_all=False)
            ok += 1
        except QsimError:
            refused += 1
    assert ok > 5 and refused > ok, (ok, refused)  # both outcomes occur


def test_int8_model_with_uint8_interface_checks_against_both(tmp_path):
    """The new converter's inference_input/output_type=uint8: QUANTIZE uint8 -> int8, an int8 body,
    QUANTIZE int8 -> uint8.  Both references run it; every tensor matches each one."""
    require_module("tflite_micro", "TFLite Micro reference")
    rng = np.random.default_rng(4)
    b = ModelBuilder()
    xu = b.add_input("x_u8", (1, 5, 5, 3), np.uint8, scale=0.02, zero_point=128)
    x = b.add_tensor("x_i8", (1, 5, 5, 3), np.int8, scale=0.02, zero_point=0)
    b.add_op("QUANTIZE", [xu], [x])
    ws = rng.uniform(0.005, 0.02, 4)
    w = b.add_const("w", rng.integers(-127, 128, (4, 3, 3, 3)), scale=ws, zero_point=np.zeros(4, np.int64), axis=0,
                    dtype=np.int8)
    bias = b.add_const("b", rng.integers(-500, 500, 4), scale=0.02 * ws, zero_point=np.zeros(4, np.int64),
                       dtype=np.int32)
    y = b.add_tensor("y_i8", (1, 5, 5, 4), np.int8, scale=0.1, zero_point=-7)
    b.add_op("CONV_2D", [x, w, bias], [y], ir.Conv2DOptions(padding="SAME", activation="RELU"))
    yu = b.add_tensor("y_u8", (1, 5, 5, 4), np.uint8, scale=0.1, zero_point=121)
    b.add_op("QUANTIZE", [y], [yu])
    b.mark_output(yu)
    m = qsim.load(b.build())
    rep = m.check(inputs=4, reference="both")
    assert rep.ok and all(c.refused is None for c in rep.comparisons), [c.summary() for c in rep.comparisons]
    # the accelerator model runs it (int8 array; the interface QUANTIZEs through their kernels) and its
    # values are the simulator's (tflm profile) ...
    x = m.random_inputs(1, 3)[0]
    prof = m.profile(inputs=[x])
    want = m.run(x, profile="tflm").outputs["y_u8"]
    np.testing.assert_array_equal(np.asarray(prof.result.values[m.outputs[0].index]).reshape(want.shape), want)
    # ... and the C generator's (uint8 graph I/O through boundary tables; TFLM's profile, which runs
    # this model): the C equals qsim's tflm-profile tensors, which equal both references (above)
    if shutil.which("gcc") and shutil.which("make"):
        res = m.codegen(tmp_path / "c", name="m", inputs=np.stack([s[0] for s in m.random_inputs(3, 5)]))
        assert res.check_samples == 3
        r = subprocess.run(["make", "-s", "-C", str(tmp_path / "c"), "check"], capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
