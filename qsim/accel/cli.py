"""``qsim profile MODEL [--hw PRESET|FILE] [options]``: the accelerator model on the command line.

Registered into qsim's CLI by :func:`register`.  Bad configurations raise
QsimError (exit 2).  Values go through the modelled datapath on one input
(``--input FILE``, or a seeded random input) unless ``--no-values``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import QsimError
from ..loader import load
from ..profiles import PROFILES
from . import config, report, trace
from .profile import profile_graph

# CLI flag -> HwConfig field (each flag overrides the preset)
FIELD_FLAGS = {
    "dataflow": "dataflow", "clock_mhz": "clock_mhz",
    "ifmap_sram_kib": "ifmap_sram_kib", "weight_sram_kib": "weight_sram_kib",
    "output_sram_kib": "output_sram_kib", "dram_bytes_per_cycle": "dram_bytes_per_cycle",
    "dram_latency": "dram_latency_cycles", "requant_lanes": "requant_lanes", "requant_depth": "requant_depth",
    "rounding_profile": "rounding_profile", "acc_bits": "acc_bits", "acc_overflow": "acc_overflow",
    "vector_lanes": "vector_lanes", "setup_cycles": "layer_setup_cycles",
}


def register(subparsers) -> None:
    s = subparsers.add_parser(
        "profile", help="cycle-approximate int8 MAC-array accelerator estimate (+ values through its datapath)",
        description="Map the model onto a systolic MAC array, time it per layer and run its values "
                    f"through the modelled datapath. Presets: {', '.join(config.preset_names())}.")
    s.add_argument("model")
    s.add_argument("--hw", default=config.DEFAULT_PRESET, metavar="PRESET|FILE",
                   help=f"hardware preset name or .toml file (default {config.DEFAULT_PRESET})")
    s.add_argument("--array", metavar="RxC", help="array size, e.g. 32x32")
    s.add_argument("--dataflow", choices=config.DATAFLOWS)
    s.add_argument("--clock-mhz", type=float)
    s.add_argument("--sram-kib", type=float, help="set all three SRAM buffers (KiB each)")
    s.add_argument("--ifmap-sram-kib", type=float)
    s.add_argument("--weight-sram-kib", type=float)
    s.add_argument("--output-sram-kib", type=float)
    s.add_argument("--dram-bytes-per-cycle", type=float)
    s.add_argument("--dram-latency", type=int, metavar="CYCLES")
    s.add_argument("--requant-lanes", type=int)
    s.add_argument("--requant-depth", type=int, metavar="CYCLES", help="default: the RTL's pipeline depth")
    s.add_argument("--rounding-profile", choices=sorted(PROFILES), help="tflm (double), single, litert (per op)")
    s.add_argument("--acc-bits", type=int)
    s.add_argument("--acc-overflow", choices=config.OVERFLOW_MODES)
    s.add_argument("--vector-lanes", type=int)
    s.add_argument("--setup-cycles", type=int, help="fixed per-layer setup cost")
    s.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any hardware field by name (repeatable)")
    s.add_argument("--input", metavar="FILE", help="input for the values (.npy/.npz/.bmp/.png)")
    s.add_argument("--float-input", action="store_true", help="with --input: quantize real-valued data")
    s.add_argument("--seed", type=int, default=0, help="seed of the random input when no --input (default 0)")
    s.add_argument("--no-values", action="store_true", help="timing only, skip the datapath values")
    s.add_argument("--json", action="store_true", help="print one JSON document")
    s.add_argument("--csv", metavar="FILE", help="write the per-layer table as CSV ('-' = stdout)")
    s.add_argument("--trace", metavar="OUT.json", help="write a Chrome/Perfetto trace-event file")
    s.set_defaults(func=handler)


def hw_from_args(args) -> config.HwConfig:
    cfg = config.load_hw(args.hw)
    changes = {}
    if args.array:
        changes["rows"], changes["cols"] = config.parse_array(args.array)
    if args.sram_kib is not None:
        changes.update(ifmap_sram_kib=args.sram_kib, weight_sram_kib=args.sram_kib, output_sram_kib=args.sram_kib)
    for flag, fieldname in FIELD_FLAGS.items():
        v = getattr(args, flag, None)
        if v is not None:
            changes[fieldname] = v
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise QsimError(f"--set expects FIELD=VALUE, got {item!r}.")
        changes[key.strip().replace("-", "_")] = value.strip()
    return cfg.with_overrides(**changes) if changes else cfg


def _inputs(args, g):
    if args.no_values:
        return None
    from .. import inputs as qin
    if args.input:
        loaded = qin.load_inputs(args.input, g, args.float_input)
        for w in loaded.warnings:
            print(f"qsim: warning: {w}", file=sys.stderr)
        return loaded.arrays
    return qin.random_inputs(g, 1, args.seed)[0]


def handler(args) -> int:
    if args.json and args.csv == "-":
        raise QsimError("--json and --csv - both write to stdout; give --csv a file name.")
    cfg = hw_from_args(args)
    g = load(args.model)
    result = profile_graph(g, cfg, _inputs(args, g), events=bool(args.trace))
    if not args.no_values:
        result.input = args.input or f"random (seed {args.seed})"
    if args.trace:
        trace.write_trace(result, args.trace)
    if args.csv:
        text = report.csv_text(result)
        if args.csv == "-":
            sys.stdout.write(text)
        else:
            try:
                Path(args.csv).write_text(text, encoding="utf-8")
            except OSError as e:
                raise QsimError(f"cannot write CSV to {args.csv}: {e.strerror or e}") from None
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    elif args.csv != "-":
        print(report.table(result))
    return 0
