"""Model -> C -> native binary -> the same answers, on the demo's 360 held-out digits.

    python examples/firmware_roundtrip.py [OUT_DIR]

Generates plain C for examples/models/demo_cnn_int8.tflite with `qsim codegen`'s
Python API, builds the host harness with the generated Makefile (gcc), feeds it all
test digits in one file, and compares every output byte with qsim's TFLM profile
(bit-exact is the requirement) and the labels (accuracy).  Exit code 1 on any
difference.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from qsim.codegen import generate
from qsim.interpreter import prepare_graph
from qsim.loader import load

HERE = Path(__file__).resolve().parent
MODEL = HERE / "models" / "demo_cnn_int8.tflite"

out_dir = (Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent / "build" / "firmware_demo").resolve()
data = np.load(HERE / "models" / "demo_testset.npz")
images, labels = data["x"], data["y"].astype(np.int64)

generate(MODEL, out_dir, name="digits", force=True)
subprocess.run(["make", "-s", "-C", str(out_dir), "host"], check=True)
(out_dir / "input.bin").write_bytes(images.astype(np.int8).tobytes())
subprocess.run([str(out_dir / "digits_run"), "input.bin", "output.bin"], cwd=out_dir, check=True,
               stdout=subprocess.DEVNULL)
c_out = np.frombuffer((out_dir / "output.bin").read_bytes(), dtype=np.int8).reshape(len(images), -1)

g = load(MODEL)
prep = prepare_graph(g, "tflm")
py_out = np.stack([prep.run([img[None]], keep_all=False)[g.outputs[0]].reshape(-1) for img in images])

differ = int(np.sum(c_out != py_out))
acc = float(np.mean(np.argmax(c_out, axis=1) == labels))
print(f"generated C in {out_dir}: {len(images)} digits, accuracy {acc:.2%}, "
      f"{differ} of {c_out.size} output bytes differ from qsim (TFLM profile)")
sys.exit(1 if differ else 0)
