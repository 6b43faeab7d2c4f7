"""``qsim profile MODEL [--hw PRESET|FILE] [options]``: the accelerator model on the command line.

Registered into qsim's CLI by :func:`register`.  Bad configurations raise
QsimError (exit 2).  Values go through the modelled datapath on one input
(``--input FILE``, or a seeded random input) unless ``--no-values``.
The work is :meth:`qsim.Model.profile`; this module maps flags to its arguments.
"""
from __future__ import annotations

import sys

from ..api import load
from ..errors import QsimError
from ..profiles import PROFILES
from . import config

# CLI flag -> HwConfig field (each flag overrides the preset)
FIELD_FLAGS = {
    "dataflow": "dataflow", "clock_mhz": "clock_mhz",
    "ifmap_sram_kib": "ifmap_sram_kib", "weight_sram_kib": "weight_sram_kib",
    "output_sram_kib": "output_sram_kib", "dram_bytes_per_cycle": "dram_bytes_per_cycle",
    "dram_latency": "dram_latency_cycles", "requant_lanes": "requant_lanes", "requant_depth": "requant_depth",
    "rounding_profile": "rounding_profile", "requant": "requant_variant", "acc_bits": "acc_bits",
    "acc_overflow": "acc_overflow", "acc_bias": "acc_bias", "acc_check": "acc_check",
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
    s.add_argument("--requant", metavar="VARIANT",
                   help="GEMM requant arithmetic (preset requant.variant): profile (default), double, single, "
                        "float32, shift-only, shift=N, mult-bits=N, truncate")
    s.add_argument("--acc-bits", type=int, help="accumulator register width (accumulator.bits)")
    s.add_argument("--acc-overflow", choices=config.OVERFLOW_MODES, help="accumulator.overflow")
    s.add_argument("--acc-bias", choices=config.BIAS_PLACES,
                   help="where the bias is added: preloaded in the accumulator, or in the requant unit")
    s.add_argument("--acc-check", choices=config.CHECK_POINTS,
                   help="where the accumulator width applies: the final sum, or every K fold")
    s.add_argument("--vector-lanes", type=int)
    s.add_argument("--setup-cycles", type=int, help="fixed per-layer setup cost")
    s.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any hardware field by name (repeatable)")
    s.add_argument("--input", metavar="FILE", help="input for the values (.npy/.npz/.bmp/.png)")
    s.add_argument("--float-input", action="store_true", help="with --input: quantize real-valued data")
    from ..cli import image_mode_arg
    image_mode_arg(s)
    s.add_argument("--seed", type=int, default=0, help="seed of the random input when no --input (default 0)")
    s.add_argument("--no-values", action="store_true", help="timing only, skip the datapath values")
    s.add_argument("--json", action="store_true", help="print one JSON document")
    s.add_argument("--csv", metavar="FILE", help="write the per-layer table as CSV ('-' = stdout)")
    s.add_argument("--trace", metavar="OUT.json", help="write a Chrome/Perfetto trace-event file")
    s.add_argument("--plot", metavar="ROOFLINE.png", help="write each layer on a roofline (needs matplotlib)")
    s.set_defaults(func=handler)
    from . import sweep_cli
    sweep_cli.register(subparsers)


def overrides_from_args(args) -> dict:
    """The hardware flags and ``--set FIELD=VALUE`` items as :meth:`qsim.Model.profile` overrides."""
    changes = {}
    if args.array:
        changes["array"] = args.array
    if args.sram_kib is not None:
        changes["sram_kib"] = args.sram_kib
    for flag, fieldname in FIELD_FLAGS.items():
        v = getattr(args, flag, None)
        if v is not None:
            changes[fieldname] = v
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise QsimError(f"--set expects FIELD=VALUE, got {item!r}.")
        key = key.strip()
        key = config.field_for_path(key if "." in key else key.replace("-", "_"))  # a field or a preset path
        changes[key] = value.strip()
    return changes


def handler(args) -> int:
    if args.json and args.csv == "-":
        raise QsimError("--json and --csv - both write to stdout; give --csv a file name.")
    m = load(args.model)
    inputs = None if args.no_values else "random"
    if args.input and not args.no_values:
        from ..cli import read_input_file
        inputs = read_input_file(m, args.input, args.float_input, args.image_mode)
    rep = m.profile(args.hw, inputs=inputs, seed=args.seed, events=bool(args.trace), **overrides_from_args(args))
    if inputs is not None and args.input:
        rep.result.input = args.input
    if args.trace:
        rep.trace(args.trace)
    if args.plot:
        rep.roofline(args.plot)
    if args.csv:
        text = rep.to_csv(None if args.csv == "-" else args.csv)
        if args.csv == "-":
            sys.stdout.write(text)
    if args.json:
        print(rep.to_json())
    elif args.csv != "-":
        print(rep)
    return 0
