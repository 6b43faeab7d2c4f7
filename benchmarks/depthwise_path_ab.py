"""A/B of the strided-depthwise path (conv.eval_depthwise_phased) in one process.

    python benchmarks/depthwise_path_ab.py [vww_96_int8|zoo|<model in ../shared/models>] [--batch 64] [--repeat 9]

One seeded random int8 batch through ``PreparedGraph.run([xs], keep_all=False)`` (profile
"tflm"), alternately with the phased path off (``conv._phased_depthwise`` forced False: the
block-diagonal GEMM / tap / einsum paths) and on, interleaved round by round so that both see
the same machine load; process CPU time, median and min over ``--repeat`` rounds, per run and
per sample, plus the per-op medians of the layers the phased path takes.  The outputs of both
variants are checked equal.  Not a test: it prints figures.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batch_op_profile import model_bytes  # noqa: E402
from qsim.interpreter import prepare_graph  # noqa: E402
from qsim.kernels import conv  # noqa: E402
from qsim.loader import load_bytes  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="vww_96_int8")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args(argv)
    pg = prepare_graph(load_bytes(model_bytes(args.model)))
    g = pg.graph
    xs = np.random.default_rng(0).integers(-128, 128, size=(args.batch,) + tuple(g.tensors[g.inputs[0]].shape[1:]),
                                           dtype=np.int8)
    phased = conv._phased_depthwise
    variants = {"off": lambda p, batch: False, "on": phased}
    taken = [k for k, op in enumerate(pg.ops) if isinstance(op.params, conv.ConvParams)
             and op.params.weights.ndim == 3 and phased(op.params, args.batch)]
    totals = {k: [] for k in variants}
    per_op = {k: {i: [] for i in taken} for k in variants}
    outs = {}
    try:
        for _ in range(args.repeat + 1):  # the first round warms up (and is not counted)
            for name, f in variants.items():
                conv._phased_depthwise = f
                last, seen = [time.process_time()], []

                def hook(prepared, ins, o):
                    t = time.process_time()
                    seen.append(t - last[0])
                    last[0] = t
                t0 = time.process_time()
                outs[name] = pg.run([xs], keep_all=False, on_op=hook)
                totals[name].append(time.process_time() - t0)
                for i in taken:
                    per_op[name][i].append(seen[i])
    finally:
        conv._phased_depthwise = phased
    assert all(np.array_equal(outs["off"][t], outs["on"][t]) for t in outs["off"]), "outputs differ"
    print(f"{args.model}, batch {args.batch}, {args.repeat} interleaved rounds, process CPU time; outputs equal")
    for name in variants:
        v = np.asarray(totals[name][1:])
        print(f"  phased {name:3s}: {np.median(v) * 1e3:8.1f} ms per run (min {v.min() * 1e3:.1f}), "
              f"{np.median(v) / args.batch * 1e3:.3f} ms per sample")
    for i in taken:
        a, b = (float(np.median(per_op[n][i][1:])) for n in variants)
        shape = (args.batch,) + tuple(pg.graph.tensors[pg.ops[i].op.inputs[0]].shape[1:])
        print(f"  op {i:3d} input {shape}: off {a * 1e3:.2f} ms, "
              f"on {b * 1e3:.2f} ms ({b / a:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
