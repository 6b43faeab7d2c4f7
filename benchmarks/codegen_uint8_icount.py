"""Benchmark: instructions per inference of a generated uint8 (QUANTIZED_UINT8) model on Cortex-M4 (QEMU).

The model is written by ``qsim.builder.uint8_model`` (seeded: the same bytes on every run): a small
MobileNet-style uint8 chain on a 32x32x3 input, conv -> depthwise -> conv -> depthwise -> average
pool -> FC -> softmax, uint8 weights with zero points often not 128, so its layers take both the
int8 paths (centred weights inside int8) and the two-offset paths (conv_offsets / dw_offsets).
Counting as ``benchmarks/cortexm_icount.py`` does (``-icount shift=0``, SysTick, 40-instruction
resolution, two identical runs), per layer with ``--per-layer``.

    python benchmarks/codegen_uint8_icount.py [--per-layer] [--seed N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

CHAIN = ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "RESHAPE",
         "FULLY_CONNECTED", "SOFTMAX"]


def main(argv=None) -> int:
    from cortexm_icount import measure
    from qsim.builder import uint8_model
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--per-layer", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "uint8_chain.tflite"
        model.write_bytes(uint8_model(CHAIN, args.seed, shape=(1, 32, 32, 3), channels=16))
        build = Path(tmp) / "build"
        build.mkdir()
        r = measure(model, build, "cortex-m4", per_layer=args.per_layer)
    print(f"uint8 chain (seed {args.seed}, 32x32x3): {r['instructions']} instructions on Cortex-M4, {r['macs']} MACs "
          f"({r['instructions'] / max(r['macs'], 1):.2f} per MAC), flash {r['flash']} B, RAM {r['ram']} B "
          f"(arena {r['arena']} B)")
    for pos, opcode, n in r.get("layers", []):
        print(f"  #{pos:<3} {opcode:<20} {r['kernel_paths'].get(pos, ''):<16} {n:>10} instructions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
