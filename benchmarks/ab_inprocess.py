"""A/B of the batched run between a git revision and the working tree, in one process.

    python benchmarks/ab_inprocess.py [--base HEAD~1] [--models vww_96_int8,zoo] [--rounds 15]
                                      [--batch 64] [--zoo-batch 16] [--clock cpu|wall]

The simulator package of ``--base`` (``git archive <rev> qsim codegen``) is unpacked into a temporary
directory as the package ``qsim_base`` (qsim's modules import each other relatively, so the
copy is self-contained; codegen/ as qsim_base/codegen, for the native C) and imported next to
the working tree's ``qsim``.  A base whose qsim/native.py looks its C templates up as
``qsim.codegen`` (before 2026-11-30) gets that lookup pointed at ``qsim_base.codegen``, so
each version compiles its own qk_host.c.  Per model, both
prepare the graph, the batched outputs of the two are compared (they must be identical: a
speed change never changes a result), then ``--rounds`` rounds each time one batched
``PreparedGraph.run([xs], keep_all=False)`` per version, the order alternating round by round.
Printed per model: the fastest run of each version (ms per sample) and the median over the
rounds of the paired ratio new / base -- the figure to read on a shared, loaded machine, where
two separate processes (or two ``sim_speed.py`` runs) see different loads and a few per cent
of change drowns in the noise.  Its own noise, from A/A runs (``--base HEAD`` on a clean tree) at
load average 7 on 2 CPUs: 0.89-1.31 with 5 rounds, 0.96-1.01 with 15 -- so use 15 or more
rounds and read a ratio within about 0.95-1.05 as no change.  Model names are files in ../shared/models (without .tflite) or
``zoo`` (qsim.zoo.mobilenet_v2_like(), batch ``--zoo-batch``).  Not a test: it prints figures.
"""
from __future__ import annotations

import argparse
import importlib
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from batch_op_profile import CLOCKS, REPO, model_bytes  # noqa: E402  (sets the BLAS threads to 1)
import numpy as np  # noqa: E402

DEFAULT_MODELS = "pretrainedResnet_quant,vww_96_int8,kws_ref_model,person_detect,zoo"


def unpack_base(rev: str, into: Path) -> None:
    """``git archive`` of ``rev``'s qsim/ unpacked as ``into``/qsim_base, and its codegen/ as
    qsim_base/codegen (installed as ``qsim.codegen``: the native C, qsim/native.py, is built from
    its templates; without it the base would run with no native code at all)."""
    blob = subprocess.run(["git", "-C", str(REPO), "archive", rev, "qsim", "codegen"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for m in tar.getmembers():
            m.name = "qsim_base" + m.name[len("qsim"):] if m.name.startswith("qsim") else "qsim_base/" + m.name
            if sys.version_info >= (3, 12):
                tar.extract(m, into, filter="data")
            else:
                tar.extract(m, into)
    native = into / "qsim_base" / "native.py"  # an older base looks its templates up as "qsim.codegen": its own
    if native.is_file():
        native.write_text(native.read_text().replace('find_spec("qsim.codegen")', 'find_spec("qsim_base.codegen")'))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD", help="git revision to compare with (default HEAD)")
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--zoo-batch", type=int, default=16)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    args = ap.parse_args(argv)
    clock = CLOCKS[args.clock]
    with tempfile.TemporaryDirectory() as tmp:
        unpack_base(args.base, Path(tmp))
        sys.path.insert(0, tmp)
        versions = {}
        for pkg in ("qsim_base", "qsim"):
            versions[pkg] = (importlib.import_module(pkg + ".interpreter"), importlib.import_module(pkg + ".loader"))
        print(f"base {args.base} vs working tree {REPO}; clock {args.clock}; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
        for name in args.models.split(","):
            n = args.zoo_batch if name == "zoo" else args.batch
            blob = model_bytes(name)
            graphs = {pkg: interp.prepare_graph(loader.load_bytes(blob)) for pkg, (interp, loader) in versions.items()}
            g = graphs["qsim"].graph
            t = g.tensors[g.inputs[0]]
            info = np.iinfo(t.dtype)  # the model's input type over its whole range (int8, int16 for keyword_scrambled)
            xs = np.random.default_rng(0).integers(info.min, int(info.max) + 1, size=(n,) + tuple(t.shape[1:])) \
                .astype(t.dtype)
            outs = {pkg: pg.run([xs], keep_all=False) for pkg, pg in graphs.items()}  # also the warm-up run
            same = all(np.array_equal(outs["qsim_base"][t], outs["qsim"][t]) for t in outs["qsim"])
            times: dict[str, list] = {pkg: [] for pkg in graphs}
            for r in range(args.rounds):
                for pkg in (("qsim_base", "qsim") if r % 2 == 0 else ("qsim", "qsim_base")):
                    t0 = clock()
                    graphs[pkg].run([xs], keep_all=False)
                    times[pkg].append(clock() - t0)
            ratio = statistics.median(a / b for a, b in zip(times["qsim"], times["qsim_base"]))
            print(f"{name:24s} batch {n:3d}: base {min(times['qsim_base']) / n * 1e3:8.3f}  new "
                  f"{min(times['qsim']) / n * 1e3:8.3f} ms/sample (fastest)  new/base {ratio:.3f} (median of "
                  f"{args.rounds} pairs){'' if same else '  OUTPUTS DIFFER'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
