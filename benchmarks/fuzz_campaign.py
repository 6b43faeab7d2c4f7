"""Long malformed-model campaign: N seeded mutants of the shared int8 models and the demo model
through load -> prepare -> run -> inspect summary -> codegen (see qsim/fuzz.py).

    python benchmarks/fuzz_campaign.py [--cases 10000] [--seed 1] [--start 0]

Prints: cases, ok, QsimError, other exceptions, silent runs of invalid models, slow cases
(> 10 s), hangs, the slowest case and the worker's peak RSS (its address space is capped at
start-up size + 2 GiB, so a larger allocation shows up as an "other exception"), then every
failure with its case number (reproduce one: ``qsim.fuzz.mutate(models, seed, case)``).
Exit 1 if any failure.

Measured (2 processes, ``--seed 3 --cases 5000 --start 0`` and ``--start 5000``, 2-core shared
machine, ~400 s wall each): 10,000 cases: 1,336 ran, 8,664 QsimError, 0 other exceptions, 0 silent
runs (of 5,457 invalid by construction), 0 slow, 0 hangs; slowest case 1.1 s; worker peak RSS 69 MiB.
Before qsim.validate, 300 cases of the same mutator gave 27 other exceptions and 28 silent runs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qsim import fuzz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0, help="first case number")
    a = ap.parse_args()
    paths = fuzz.seed_models(ROOT)
    print(f"{len(paths)} seed models: {', '.join(Path(p).name for p in paths)}", flush=True)
    t0 = time.time()
    res = fuzz.campaign(paths, a.seed, range(a.start, a.start + a.cases),
                        progress=lambda r: print(f"  ... {r.summary()}", flush=True))
    print(f"seed {a.seed}, cases {a.start}..{a.start + a.cases - 1}: {res.summary()}; "
          f"{time.time() - t0:.0f} s wall")
    for kind, items in (("other exception", res.other), ("silent run", res.silent), ("slow", res.slow),
                        ("hang", res.hangs)):
        for case, err, desc in items:
            print(f"{kind}: case {case}: {err} [{desc}]")
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
