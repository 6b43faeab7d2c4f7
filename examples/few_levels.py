"""Worked example for `qsim compare`: a layer whose activations fall on a few int8 levels.

The demo digit classifier (examples/models/demo_cnn_float.tflite, trained float weights) gets one
conv2 channel (channel 8, the one the logits lean on least) replaced by a "blank frame" detector:
it answers 0 on every digit and about 600 on an all-white (overexposed) 8x8 frame; the logits
ignore it (its FC weights are zero), so the float model classifies digits as before.  qsim's own
quantizer (qsim.zoo.small_cnn) calibrates two int8 models from the float weights:

  clean        calibration set: the first 180 held-out digits;
  one outlier  the same 180 digits plus ONE white frame.  conv2's per-tensor activation range is
               set by that frame: [0, ~600] instead of [0, ~12.5], a step of ~2.4, so on a digit
               conv2's values (at most ~12.5) fall on 2 to 6 int8 levels.

Both models (and the float twin) are written into a temporary directory and compared with the
float twin on the 360 held-out digits; the script prints top-1, conv2's levels per sample and its
SQNR, what `compare` names as suspects and what it says to try first.

    python examples/few_levels.py
"""
from __future__ import annotations

import os
import tempfile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import qsim  # noqa: E402
from qsim import zoo  # noqa: E402
from fixed_ranges import DATA, float_weights  # noqa: E402  (the demo's trained float weights)

CHANNEL = 8  # conv2 channel turned into the detector
GAIN, THRESHOLD = 6000.0, 0.9  # detector: GAIN * (match - THRESHOLD), match 1.0 on a white frame, <= 0.85 on digits


def with_detector(w: dict) -> dict:
    """The float weights with conv2's CHANNEL answering GAIN·(m − THRESHOLD) (RELU), where m is the
    3x3x8 conv1 patch projected on conv1's response to a white frame (m = 1 there), and unused by
    the logits."""
    w = {k: v.copy() for k, v in w.items()}
    white = np.ones((1, 8, 8, 1), np.float32)
    h1 = np.maximum(zoo.conv2d_float(white, w["w1"], w["b1"], 1), 0)[0, 3:6, 3:6, :]  # interior patch [3,3,8]
    w["w2"][CHANNEL] = GAIN * h1 / np.sum(h1 * h1)
    w["b2"][CHANNEL] = -GAIN * THRESHOLD
    w["w3"].reshape(10, 4, 4, 16)[..., CHANNEL] = 0.0  # flatten order (h, w, c): the logits ignore it
    return w


def main() -> int:
    w = with_detector(float_weights())
    x = np.load(DATA)["x"]
    digits = ((x[:180].astype(np.float64) + 128) / 255.0).astype(np.float32)  # input scale 1/255, zp -128
    white = np.ones((1, 8, 8, 1), np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        fpath = Path(tmp) / "float.tflite"
        fpath.write_bytes(zoo.small_cnn_float_model(w))
        for name, calib in (("clean", digits), ("one outlier", np.concatenate([digits, white]))):
            qpath = Path(tmp) / f"{name.replace(' ', '_')}.tflite"
            qpath.write_bytes(zoo.small_cnn(w, calib=calib, seed=0))
            rep = qsim.load(qpath).compare(fpath, DATA)
            md = rep.model
            c2 = next(r for r in rep.rows if r["tensor_name"] == "conv2")
            print(f"{name}: top-1 int8 {100 * md['top1_int8']:.2f}% (float {100 * md['top1_float']:.2f}%), "
                  f"output SQNR {md['output_sqnr_db']:.1f} dB")
            print(f"    conv2 levels per sample min {c2['levels_min']} median {c2['levels_median']:g} "
                  f"(dataset {c2['levels_dataset']}), SQNR {c2['sqnr_db']:.1f} dB (isolated {c2['iso_sqnr_db']:.1f}), "
                  f"float [{c2['float_min']:.3g}, {c2['float_max']:.3g}] vs int8 [{c2['repr_min']:.3g}, "
                  f"{c2['repr_max']:.3g}]")
            sus = rep.suspects
            print(f"    suspects: fewest levels {sus['few_levels'][:1]}, lowest isolated SQNR {sus['isolated_sqnr'][:1]}")
            if rep.what_to_try:
                print(f"    what to try first: {rep.what_to_try[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
