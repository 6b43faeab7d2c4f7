"""Acceptance: every int8 model in ../shared/models is bit-exact on EVERY tensor against
LiteRT BUILTIN_REF (profile "litert") and TFLite Micro (profile "tflm"), on 10 seeded random
inputs each; person_detect classifies the two TFLM test images like TFLM does.

Goldens are the reference interpreters' own tensors, computed in the same run.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from conftest import REPO, require_module, shared_model
from qsim import reference as ref
from qsim.inputs import load_inputs, random_inputs
from qsim.interpreter import prepare_graph
from qsim.report import render_comparison

N_INPUTS = 10
SEED = 20261122

INT8_MODELS = ["ad01_int8", "hello_world_int8", "kws_ref_model", "micro_speech_quantized", "person_detect",
               "pretrainedResnet_quant", "vww_96_int8"]
LITERT_REFUSES = {"person_detect"}  # per-channel bias with quantized_dimension 3


@lru_cache(maxsize=None)
def model(name: str) -> ref.Model:
    return ref.Model.open(shared_model(f"{name}.tflite"))


def _inputs(m: ref.Model):
    return random_inputs(m.graph, N_INPUTS, seed=SEED)


def _assert_bit_exact(c: ref.Comparison, m: ref.Model) -> None:
    assert c.refused is None, c.summary()
    assert c.n_inputs == N_INPUTS
    assert len(c.layers) == sum(len(op.outputs) for op in m.graph.operators)  # every op output compared
    assert c.ok, "\n" + render_comparison(c)


@pytest.mark.parametrize("name", INT8_MODELS)
def test_bit_exact_vs_tflm(name):
    require_module("tflite_micro", "TFLite Micro reference runtime")
    m = model(name)
    c = ref.compare(m, _inputs(m), reference="tflm")
    assert c.profile == "tflm"
    _assert_bit_exact(c, m)


@pytest.mark.parametrize("name", [n for n in INT8_MODELS if n not in LITERT_REFUSES])
def test_bit_exact_vs_litert_builtin_ref(name):
    require_module("ai_edge_litert", "LiteRT reference interpreter")
    m = model(name)
    c = ref.compare(m, _inputs(m), reference="litert")
    assert c.profile == "litert"
    _assert_bit_exact(c, m)


def test_litert_refusal_of_person_detect_is_reported():
    require_module("ai_edge_litert", "LiteRT reference interpreter")
    m = model("person_detect")
    c = ref.compare(m, _inputs(m)[:1], reference="litert")
    assert c.refused is not None and "quantized_dimension must be in range" in c.refused
    assert c.summary().startswith("LiteRT refused this model: ")
    assert not c.ok and c.n_inputs == 0


# person_detect labels (TFLM model_settings): index 0 "notperson", index 1 "person".
@pytest.mark.parametrize("image,label", [("person.bmp", 1), ("no_person.bmp", 0)])
def test_person_detect_images(image, label):
    """TFLM's person_detection test memcpy's the BMP bytes into the int8 input: image_mode="raw"."""
    m = model("person_detect")
    g = m.graph
    x = load_inputs(shared_model(image), g, image_mode="raw").arrays
    ours = prepare_graph(g, "tflm").run(x, keep_all=False)[g.outputs[0]]
    theirs = ref.TFLMRunner(m.blob).run(x, g.outputs)[g.outputs[0]]
    assert np.array_equal(ours, theirs), (ours, theirs)
    assert int(np.argmax(ours.ravel())) == label, ours
    assert ours.ravel()[label] > ours.ravel()[1 - label]


def test_demo_model():
    """The shipped demo model (examples/make_demo_model.py) is bit-exact with both references."""
    m = ref.Model.open(REPO / "examples" / "models" / "demo_cnn_int8.tflite")
    for r in ("tflm", "litert"):
        _assert_bit_exact(ref.compare(m, _inputs(m), reference=r), m)


def test_xnnpack_drift_is_measured_and_informational(monkeypatch):
    """LiteRT's default kernels differ from BUILTIN_REF on pretrainedResnet_quant's logits (measured:
    24 of 100 softmax outputs, up to 32 LSB, on these 10 inputs); check() reports it without failing."""
    require_module("ai_edge_litert", "LiteRT reference interpreter")
    m = model("pretrainedResnet_quant")
    drift = ref.xnnpack_drift(m, _inputs(m))
    assert isinstance(drift, list) and len(drift) == len(m.graph.outputs)
    assert drift[0].opcode == "SOFTMAX" and drift[0].mismatches > 0 and drift[0].max_diff >= 1

    small = model("hello_world_int8")
    fake = [ref.TensorDiff(2, "FULLY_CONNECTED", small.graph.outputs[0], "out", 1, mismatches=5, max_diff=9)]
    monkeypatch.setattr(ref, "xnnpack_drift", lambda *a, **k: fake)
    result = ref.check(small, _inputs(small)[:2])
    assert result["xnnpack"] is fake and result["ok"] is True


def test_person_detect_refused_by_litert_in_check():
    """check() with both references: LiteRT's refusal is reported, TFLM still decides the verdict."""
    m = model("person_detect")
    result = ref.check(m, _inputs(m)[:1], xnnpack=True)
    lit, tflm = result["comparisons"]
    assert lit.refused is not None and tflm.refused is None
    assert isinstance(result["xnnpack"], str) and result["xnnpack"].startswith("LiteRT refused this model")
    assert result["ok"] == tflm.ok
    assert tflm.ok, "\n" + render_comparison(tflm)


@pytest.mark.parametrize("name,reference,profile,first_op", [
    ("kws_ref_model", "tflm", "single", "CONV_2D"),  # conv requant: both references use double rounding
    ("ad01_int8", "tflm", "litert", "FULLY_CONNECTED"),  # TFLM's FC: double; LiteRT's: float rescale
])
def test_wrong_profile_is_caught(name, reference, profile, first_op):
    """The comparison has teeth: simulating with the other reference's rounding diverges, and the
    first divergent op is named."""
    m = model(name)
    c = ref.compare(m, _inputs(m)[:3], reference=reference, profile=profile)
    assert not c.ok and c.refused is None
    f = c.first_divergent
    assert f.opcode == first_op and all(d.ok for d in c.layers[:c.layers.index(f)])
    assert f.max_diff >= 1 and "first divergent op: #" in c.summary()


def test_tensor_diff_counts():
    d = ref.TensorDiff(3, "ADD", 7, "t", 4)
    d.add(np.array([1, -128, 5, 127], np.int8), np.array([1, 127, 4, 127], np.int8))
    assert (d.mismatches, d.max_diff) == (2, 255)
    d.add(np.zeros((1, 4), np.int8), np.zeros(4, np.int8))  # same elements, reference shape flattened
    assert (d.mismatches, d.max_diff) == (2, 255) and not d.ok
    e = ref.TensorDiff(0, "X", 0, "t", 4)
    e.add(np.zeros(4, np.int8), np.zeros(5, np.int8))  # different element counts: all mismatched
    assert e.mismatches == 4 and not e.ok


def test_tflm_runner_sizes_arena_for_large_activations():
    """1.2 kB of model, 2 x 64 KiB of activations: TFLM's default arena (10x the file) is too small;
    the runner sizes it from the graph so the comparison runs instead of a bogus refusal."""
    from qsim import ir
    from qsim.builder import ModelBuilder

    rng = np.random.default_rng(5)
    b = ModelBuilder(description="small weights, large activations")
    x = b.add_input("x", (1, 64, 64, 16), np.int8, scale=0.05, zero_point=-3)
    w = b.add_const("w", rng.integers(-127, 128, (16, 1, 1, 16)).astype(np.int8), scale=np.full(16, 0.01),
                    zero_point=np.zeros(16, np.int64), axis=0)
    y = b.add_tensor("y", (1, 64, 64, 16), np.int8, scale=0.1, zero_point=0)
    b.add_op("CONV_2D", [x, w, -1], [y], ir.Conv2DOptions(padding="SAME"))
    z = b.add_tensor("z", (1, 64, 64, 16), np.int8, scale=0.1, zero_point=0)
    b.add_op("CONV_2D", [y, w, -1], [z], ir.Conv2DOptions(padding="SAME"))
    b.mark_output(z)
    m = ref.Model.open(b.build())
    c = ref.compare(m, random_inputs(m.graph, 2, seed=3), reference="tflm")
    assert c.refused is None, c.summary()
    assert c.ok, "\n" + render_comparison(c)
