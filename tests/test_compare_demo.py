"""The demo's float twin (examples/models/demo_cnn_float.tflite) against its int8 model.

Goldens: the float model's top-1 from LiteRT's own interpreter on the dequantized held-out digits,
the int8 model's top-1 from TFLite Micro's runtime; labels from the test set's ``y``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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


NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def test_cli_image_folder_with_labels_file(tmp_path):
    """`qsim compare --data FOLDER --labels FILE`: the held-out digits as 8-bit PNGs in folders named
    after their classes (sorted name order is not class order: the labels file gives it). Pixels
    p = q + 128 shift back to the int8 samples q, so every figure equals the .npz run's."""
    import json
    from PIL import Image
    from test_cli import qsim as run_cli
    z = np.load(DATA)
    x, y = z["x"][:120], z["y"][:120].astype(np.int64)
    for k, (img, label) in enumerate(zip(x, y)):
        d = tmp_path / "digits" / NAMES[label]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[..., 0].astype(np.int16) + 128).astype(np.uint8), "L").save(d / f"{k:04d}.png")
    (tmp_path / "labels.txt").write_text("\n".join(NAMES) + "\n", encoding="utf-8")
    r = run_cli("compare", INT8, FLOAT, "--data", tmp_path / "digits", "--labels", tmp_path / "labels.txt", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    want = qsim.load(INT8).compare(FLOAT, tmp_path / "d.npz").to_dict()
    assert got["samples"] == 120 and got["model"]["labelled"] == 120
    for k in ("top1_float", "top1_int8", "top5_int8", "top1_agreement", "output_sqnr_db"):
        assert got["model"][k] == pytest.approx(want["model"][k], rel=1e-12), k
    assert got["model"]["top1_int8"] > 0.9  # the labels file's order is the classes' order
