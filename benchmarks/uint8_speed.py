"""Simulation speed of an old-converter uint8 (QUANTIZED_UINT8) model next to LiteRT BUILTIN_REF.

    python benchmarks/uint8_speed.py [--min-time 1.0] [--repeat 5] [--batch 32] [--clock wall|cpu] [--json]

The model is written by :func:`qsim.builder.uint8_model` (seeded): a 1x48x48x8 uint8 input through
CONV_2D (16 channels), DEPTHWISE_CONV_2D, CONV_2D, MAX_POOL_2D, AVERAGE_POOL_2D, RESHAPE,
FULLY_CONNECTED (16 units), SOFTMAX.  Figures as ``benchmarks/sim_speed.py`` measures them
(its ``bench_model``: median per inference, engines interleaved; qsim under the ``litert``
profile, TFLite Micro refuses uint8 so its column stays empty).  Not a test: it prints figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sim_speed  # noqa: E402  (sets OPENBLAS_NUM_THREADS=1 before numpy loads)

from qsim.builder import uint8_model  # noqa: E402

OPS = ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED",
       "SOFTMAX"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--clock", choices=sorted(sim_speed.CLOCKS), default="wall")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    blob = uint8_model(OPS, seed=3, shape=(1, 48, 48, 8), channels=16)
    load_before = os.getloadavg()[0]
    r = sim_speed.bench_model("uint8 chain (builder)", blob, args.min_time, args.batch, sim_speed.CLOCKS[args.clock],
                              memory=False, repeat=args.repeat, profile="litert")
    load_after = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"clock": args.clock, "load_before": load_before, "load_after": load_after, "row": r},
                         indent=2))
        return 0
    print(f"uint8 model, {r['macs']:,} MACs; median ms per inference, clock={args.clock}, load average "
          f"{load_before:.1f} before, {load_after:.1f} after on {os.cpu_count()} CPUs")
    print(f"  qsim (profile litert)   {sim_speed.fmt_ms(r['qsim'])}")
    print(f"  qsim batch/sample ({args.batch}) {sim_speed.fmt_ms(r['qsim_batch_per_sample'])}")
    print(f"  LiteRT BUILTIN_REF      {sim_speed.fmt_ms(r['litert_ref'])}   "
          f"qsim/REF {sim_speed.ratio(r['qsim'], r['litert_ref'])}, "
          f"batch/REF {sim_speed.ratio(r['qsim_batch_per_sample'], r['litert_ref'])}")
    for k, v in r.get("refused", {}).items():
        print(f"  {k} refused: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
