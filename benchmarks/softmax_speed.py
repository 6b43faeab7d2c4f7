"""Benchmark (not a test): single-op SOFTMAX / QUANTIZE / DEQUANTIZE models, qsim next to LiteRT
BUILTIN_REF and TFLite Micro (issues 9 / 12: these ops' single-sample cost).

    python benchmarks/softmax_speed.py [--min-time 0.3] [--repeat 5] [--clock wall|cpu]

Each model is one op built with qsim.builder (shapes and quantization below); figures as
``benchmarks/sim_speed.py`` measures them (its ``bench_model``: median ms per inference, engines
interleaved, qsim profile "tflm", batch of 64 per sample).  About 20 s.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sim_speed  # noqa: E402  (sets OPENBLAS_NUM_THREADS=1 before numpy loads)

import numpy as np  # noqa: E402

from qsim import ir  # noqa: E402
from qsim.builder import ModelBuilder  # noqa: E402


def one_op(opcode, shape, in_dtype, q_in, out_dtype, q_out, options=None) -> bytes:
    b = ModelBuilder(description=f"{opcode} speed")
    x = b.add_input("x", shape, in_dtype, scale=q_in[0], zero_point=q_in[1])
    y = b.add_tensor("y", shape, out_dtype, scale=q_out[0], zero_point=q_out[1]) if q_out else \
        b.add_tensor("y", shape, out_dtype)
    b.add_op(opcode, [x], [y], options)
    b.mark_output(y)
    return b.build()


SOFTMAX = ir.SoftmaxOptions(beta=1.0)
MODELS = {
    "SOFTMAX int8 (1, 12)": lambda: one_op("SOFTMAX", (1, 12), np.int8, (0.1, 3), np.int8, (1 / 256, -128), SOFTMAX),
    "SOFTMAX int8->int16 (1, 12)": lambda: one_op("SOFTMAX", (1, 12), np.int8, (0.1, 3), np.int16,
                                                  (1 / 65536, -32768), SOFTMAX),
    "SOFTMAX int16 (1, 12)": lambda: one_op("SOFTMAX", (1, 12), np.int16, (0.0005, 0), np.int16, (1 / 32768, 0),
                                            SOFTMAX),
    "SOFTMAX int8 (1, 1000)": lambda: one_op("SOFTMAX", (1, 1000), np.int8, (0.1, 3), np.int8, (1 / 256, -128),
                                             SOFTMAX),
    "QUANTIZE int8->int8 (1, 256)": lambda: one_op("QUANTIZE", (1, 256), np.int8, (0.05, 3), np.int8, (0.0371, -11)),
    "DEQUANTIZE int8 (1, 256)": lambda: one_op("DEQUANTIZE", (1, 256), np.int8, (0.0371, -11), np.float32, None),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--clock", choices=sorted(sim_speed.CLOCKS), default="wall")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    print(f"us per inference, clock={args.clock}, qsim profile tflm, batch 64 per sample")
    print(f"{'model':30s} {'qsim':>8s} {'batch/s':>8s} {'REF':>8s} {'TFLM':>8s} {'qsim/REF':>9s} {'qsim/TFLM':>9s}")
    for name, build in MODELS.items():
        r = sim_speed.bench_model(name, build(), args.min_time, 64, sim_speed.CLOCKS[args.clock], memory=False,
                                  repeat=args.repeat)
        us = {k: (1e6 * r[k] if r.get(k) else None) for k in ("qsim", "qsim_batch_per_sample", "litert_ref", "tflm")}
        cells = [f"{v:8.1f}" if v else f"{'-':>8s}" for v in us.values()]
        ratios = [f"{us['qsim'] / us[k]:8.2f}x" if us[k] and us["qsim"] else f"{'-':>9s}" for k in ("litert_ref", "tflm")]
        print(f"{name:30s} " + " ".join(cells + ratios))
    print(f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
