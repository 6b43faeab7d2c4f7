"""The demo's float twin (examples/models/demo_cnn_float.tflite) against its int8 model.

Goldens: the float model's top-1 from LiteRT's own interpreter on the dequantized held-out digits,
the int8 model's top-1 from TFLite Micro's runtime; labels from the test set's ``y``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import qsim
from qsim import loader

EX = Path(__file__).resolve().parents[1] / "examples" / "models"
INT8, FLOAT, DATA = EX / "demo_cnn_int8.tflite", EX / "demo_cnn_float.tflite", EX / "demo_testset.npz"


def _litert_float_top1(x: np.ndarray) -> np.ndarray:
    from ai_edge_litert import interpreter as li
    it = li.Interpreter(model_path=str(FLOAT))
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    out = []
    for xi in x:
        it.set_tensor(i, xi[None].astype(np.float32))
        it.invoke()
        out.append(int(np.argmax(it.get_tensor(o))))
    return np.array(out)


def _tflm_int8_top1(x: np.ndarray) -> np.ndarray:
    from tflite_micro.python.tflite_micro import runtime
    it = runtime.Interpreter.from_bytes(INT8.read_bytes(), arena_size=64 * 1024)
    out = []
    for xi in x:
        it.set_input(xi[None], 0)
        it.invoke()
        out.append(int(np.argmax(it.get_output(0))))
    return np.array(out)


def test_demo_twin_is_float_with_same_names():
    gq, gf = loader.load(INT8), loader.load(FLOAT, validate=False)
    assert all(gf.tensors[o].dtype == np.float32 for op in gf.operators for o in op.outputs)
    assert [op.opcode for op in gf.operators] == [op.opcode for op in gq.operators]


def test_demo_compare_accuracy_and_matching():
    z = np.load(DATA)
    x, y = z["x"], z["y"].astype(np.int64)
    real = ((x.astype(np.float64) + 128) / 255.0).astype(np.float32)  # input scale 1/255, zero point -128
    f1, q1 = _litert_float_top1(real), _tflm_int8_top1(x)
    rep = qsim.load(INT8).compare(FLOAT, DATA)
    md = rep.model
    assert rep.to_dict()["samples"] == len(y) == 360
    assert md["top1_float"] == np.mean(f1 == y)
    assert md["top1_int8"] == np.mean(q1 == y)
    assert md["top1_agreement"] == np.mean(f1 == q1)
    assert md["top1_float"] > 0.95 and md["top1_int8"] > 0.95
    gq = loader.load(INT8)
    compute = {gq.tensors[o].name for op in gq.operators for o in op.outputs}
    matched = {r["tensor_name"] for r in rep.to_dict()["layers"]}
    assert compute <= matched
    assert rep.to_dict()["matching"]["unmatched_int8"] == []
