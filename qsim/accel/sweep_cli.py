"""``qsim sweep MODELS... --grid grid.toml``: the command line of :func:`qsim.accel.sweep.sweep`.

Registered by :func:`qsim.accel.cli.register`; every flag maps to one argument of ``sweep``.
"""
from __future__ import annotations

import json

from ..errors import QsimError
from . import config


def register(subparsers) -> None:
    s = subparsers.add_parser(
        "sweep", help="design-space sweep of the accelerator model over a grid of preset fields (Dask)",
        description="Time every model on every point of a grid of hardware preset fields (lists or "
                    "ranges, see the README) and write one Parquet row per point. Runs on a local Dask "
                    "cluster of this machine's cores, or on a running one (--scheduler).")
    s.add_argument("models", nargs="+", metavar="MODEL")
    s.add_argument("--grid", required=True, metavar="GRID.toml", help="the fields to sweep, preset layout")
    s.add_argument("--hw", default=config.DEFAULT_PRESET, metavar="PRESET|FILE",
                   help=f"the machine the grid varies (default {config.DEFAULT_PRESET})")
    s.add_argument("--data", metavar="PATH", help="dataset through the datapath per point: accuracy, outputs changed")
    s.add_argument("--labels", metavar="FILE", help="class names for --data, one per line")
    s.add_argument("--no-values", action="store_true", help="timing only (any model qsim can load)")
    s.add_argument("--out", default="sweep.parquet", metavar="FILE", help="the Parquet file (default sweep.parquet)")
    s.add_argument("--resume", action="store_true", help="keep the points already in --out (and its parts)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="tcp://HOST:8786", help="a running Dask scheduler")
    where.add_argument("--workers", type=int, metavar="N",
                       help="local worker processes (default: this machine's cores; 0: in this process)")
    s.add_argument("--points-per-task", type=int, default=None, metavar="N",
                   help="points per Dask task (default: guided, big tasks first, ever smaller ones at the end)")
    s.add_argument("--plot", metavar="DIR", help="also write Pareto plots (PNG) and sweep.html to DIR")
    s.add_argument("--json", action="store_true", help="print one JSON document")
    s.set_defaults(func=handler)


def handler(args) -> int:
    from .sweep import DEFAULT_POINTS_PER_TASK, sweep
    if args.no_values and args.data:
        raise QsimError("--no-values (timing only) and --data (values over a dataset) contradict each other.")
    res = sweep(args.models, args.grid, hw=args.hw, out=args.out, data=args.data, labels=args.labels,
                values=None if args.no_values else "random", resume=args.resume, scheduler=args.scheduler,
                workers=args.workers, points_per_task=args.points_per_task or DEFAULT_POINTS_PER_TASK,
                plot=args.plot)
    if args.json:
        print(json.dumps(res.as_dict(), indent=2))
        return 0
    print(f"{res.rows} points in {res.out} ({res.ran} computed now, {res.reused} from an earlier run"
          f"{f', {res.infeasible} infeasible: the model does not fit that machine' if res.infeasible else ''})")
    for p in res.plots:
        print(f"wrote {p}")
    return 0
