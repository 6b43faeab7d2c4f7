"""Worked example for `qsim compare`: float pixels fed unquantized vs quantized.

The demo digit classifier's int8 input has scale 1/255 and zero point -128 (real [0, 1]).  The
held-out digits as real values in [0, 1] are written two ways and compared with the float twin:

  quantized    float32 reals in an .npz: qsim quantizes them with the input's scale and zero
               point, the float model gets the reals;
  cast         the same reals cast to int8 without quantization (every pixel becomes 0 or 1),
               the mistake everybody makes once: both models get the same wrong pixels
               (dequantized: about 0.5), so only accuracy and the input guard show it.

    python examples/unquantized_input.py
"""
from __future__ import annotations

import os
import tempfile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import qsim  # noqa: E402

MODELS = Path(__file__).resolve().parent / "models"
INT8, FLOAT, DATA = MODELS / "demo_cnn_int8.tflite", MODELS / "demo_cnn_float.tflite", MODELS / "demo_testset.npz"


def main() -> int:
    z = np.load(DATA)
    real = ((z["x"].astype(np.float64) + 128) / 255.0).astype(np.float32)  # the digits as reals in [0, 1]
    m = qsim.load(INT8)
    with tempfile.TemporaryDirectory() as tmp:
        for name, x in (("quantized", real), ("cast", real.astype(np.int8))):
            p = Path(tmp) / f"{name}.npz"
            np.savez(p, x=x, y=z["y"])
            rep = m.compare(FLOAT, p)
            md = rep.model
            print(f"{name}: top-1 int8 {100 * md['top1_int8']:.2f}%, float {100 * md['top1_float']:.2f}%, "
                  f"input levels used {rep.rows[0]['levels_dataset']} of 256")
            for w in rep.warnings:
                print(f"    warning: {w}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
