"""Time the generated C of the SEANet int16x8 layer models (host build, gcc -O2).

    python benchmarks/codegen_int16_speed.py [--repeats N] [--models DIR]

For each op folder of ../shared/models/seanet, its first model: `qsim codegen`, `make host`, run the
golden input N times (default 200) and print the harness's microseconds per inference, with the
arena and weights bytes.  Figures depend on the machine's load: rerun on a quiet machine to compare.
"""
from __future__ import annotations

import argparse
import glob
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from qsim.codegen import generate
from qsim.loader import load

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"int8": np.int8, "int16": np.int16, "int32": np.int32}


def golden_input(model: Path) -> bytes:
    g = load(model)
    blob = b""
    for k, t in enumerate(g.inputs):
        (f,) = glob.glob(str(model.with_suffix("")) + f"_input{k}_*.csv")
        a = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=1).astype(DTYPES[f.rsplit("_", 1)[1][:-4]])
        blob += a.reshape(g.tensors[t].shape).tobytes()
    return blob


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--models", default=str(ROOT.parent / "shared" / "models" / "seanet"))
    args = ap.parse_args()
    print(f"{'model':<18} {'us/inference':>13} {'arena B':>9} {'weights B':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for op_dir in sorted(Path(args.models).iterdir()):
            models = sorted(op_dir.glob("*0.tflite")) or sorted(op_dir.glob("*.tflite"))
            if not models:
                continue
            model = models[0]
            d = Path(tmp) / model.stem
            res = generate(model, d, name=model.stem)
            subprocess.run(["make", "-s", "-C", str(d), "host"], check=True, capture_output=True)
            (d / "input.bin").write_bytes(golden_input(model))
            out = subprocess.run([str(d / f"{model.stem}_run"), "input.bin", "output.bin", str(args.repeats)],
                                 cwd=d, check=True, capture_output=True, text=True).stdout
            us = float(re.search(r"([\d.]+) us per inference", out).group(1))
            print(f"{model.stem:<18} {us:>13.1f} {res.arena_bytes:>9} {res.weights_bytes:>10}")


if __name__ == "__main__":
    main()
