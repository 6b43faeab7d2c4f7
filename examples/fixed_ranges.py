"""Worked example for `qsim compare`: dummy fixed activation ranges vs calibrated ones.

The demo digit classifier's float twin (examples/models/demo_cnn_float.tflite) holds the trained
float weights.  qsim's own quantizer (qsim.zoo.small_cnn) turns them into two int8 models:

  calibrated   each activation's range from a calibration pass (the first 180 held-out digits);
  fixed [0,6]  every conv/FC activation given the range [0, 6] (a placeholder people leave in).

Both are compared layer by layer with the float twin on all 360 held-out digits, and the
script prints, for each, top-1 accuracy, output SQNR and the per-layer accumulated SQNR and
clipping that `qsim compare` reports, then what `compare` names as suspects for the fixed one.

    python examples/fixed_ranges.py
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import qsim  # noqa: E402
from qsim import loader, zoo  # noqa: E402

MODELS = Path(__file__).resolve().parent / "models"
FLOAT, DATA = MODELS / "demo_cnn_float.tflite", MODELS / "demo_testset.npz"
NAMES = {"conv1_w": "w1", "conv1_b": "b1", "conv2_w": "w2", "conv2_b": "b2", "logits_w": "w3", "logits_b": "b3"}


def float_weights() -> dict:
    g = loader.load(FLOAT, validate=False)
    return {NAMES[t.name]: np.asarray(t.data, np.float32) for t in g.tensors if t.name in NAMES}


def main() -> int:
    w = float_weights()
    x = np.load(DATA)["x"]
    calib = ((x[:180].astype(np.float64) + 128) / 255.0).astype(np.float32)  # input scale 1/255, zp -128
    results = {}
    for name, fixed in (("calibrated", None), ("fixed [0,6]", (0.0, 6.0))):
        blob = zoo.small_cnn(w, calib=calib, seed=0, fixed_range=fixed)
        rep = qsim.load(blob).compare(FLOAT, DATA)
        results[name] = rep
        md = rep.model
        print(f"{name}: top-1 int8 {100 * md['top1_int8']:.2f}% (float {100 * md['top1_float']:.2f}%), "
              f"agreement {100 * md['top1_agreement']:.2f}%, output SQNR {md['output_sqnr_db']:.1f} dB")
        for r in rep.rows:
            if r["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
                print(f"    {r['tensor_name']:<8} SQNR {r['sqnr_db']:5.1f} dB  clipped {100 * r['clip_float']:5.2f}%  "
                      f"float [{r['float_min']:.3g}, {r['float_max']:.3g}] vs int8 "
                      f"[{r['repr_min']:.3g}, {r['repr_max']:.3g}]")
    print("fixed [0,6], what compare says to try first:")
    for t in results["fixed [0,6]"].what_to_try[:3]:
        print(f"    - {t}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
