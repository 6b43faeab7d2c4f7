"""`qsim codegen MODEL -o DIR [--name NAME] [--target ...] [--rounding double|single] [--kernels qsim|cmsis-nn]
[--cmsis-nn-dir DIR] [--force] [--inputs FILE]`.

A thin layer over :meth:`qsim.Model.codegen`.  ``--inputs FILE`` also writes input.bin,
expected.bin and expected_trace.bin for the generated Makefile's ``check`` targets.

qsim/cli.py imports this module and calls :func:`register` on its
subparsers; ``handler(args)`` returns the exit code (0 ok; QsimError, i.e.
bad input, propagates and the main CLI maps it to exit 2).
"""
from __future__ import annotations

from .emit import TARGETS


def register(subparsers) -> None:
    s = subparsers.add_parser(
        "codegen", help="generate plain C99 firmware (bit-exact with TFLite Micro) from an int8 .tflite",
        description="Emit NAME.h/NAME.c/NAME_weights.c, qkernels.c/.h, main.c and a Makefile for an int8 "
                    "model: straight-line kernel calls, flash-resident tables, one static arena.")
    s.add_argument("model", help="int8 .tflite file")
    s.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    s.add_argument("--name", default=None, help="C name prefix (default: the model file's stem, sanitized)")
    s.add_argument("--target", default="host", choices=list(TARGETS),
                   help="default make goal and -mcpu (host builds with gcc; cortex-m* with arm-none-eabi-gcc)")
    s.add_argument("--rounding", default="double", choices=["double", "single"],
                   help="double = TFLite Micro's default; single = TFLITE_SINGLE_ROUNDING builds")
    s.add_argument("--kernels", default="qsim", choices=["qsim", "cmsis-nn"],
                   help="qsim = qsim's portable C kernels; cmsis-nn = calls into CMSIS-NN where it has the op "
                        "(bit-exact with `qsim run --profile cmsis-nn`; --rounding double only)")
    s.add_argument("--cmsis-nn-dir", metavar="DIR",
                   help="with --kernels cmsis-nn: your CMSIS-NN checkout (default $CMSIS_NN_DIR); the Makefile's "
                        "CMSIS_NN_DIR defaults to it")
    s.add_argument("--cmsis-core-dir", metavar="DIR",
                   help="with --kernels cmsis-nn: the directory of CMSIS-Core's cmsis_compiler.h (default "
                        "$CMSIS_CORE_DIR, else DIR/../cmsis-core)")
    s.add_argument("--force", action="store_true",
                   help="write into a non-empty output directory (removing the files of an earlier --name)")
    s.add_argument("--inputs", metavar="FILE",
                   help="samples (.npy/.npz/.bmp/.png; an .npy may hold N samples): also write input.bin and "
                        "qsim's expected.bin / expected_trace.bin for `make check`")
    s.add_argument("--float-input", action="store_true", help="with --inputs: quantize real-valued data")
    from qsim.cli import image_mode_arg
    image_mode_arg(s)
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.set_defaults(func=handler)


def handler(args) -> int:
    from qsim.api import load
    from qsim.cli import read_input_file
    m = load(args.model)
    inputs = read_input_file(m, args.inputs, args.float_input, args.image_mode) if args.inputs else None
    result = m.codegen(args.output, name=args.name, target=args.target, rounding=args.rounding,
                       force=args.force, inputs=inputs, kernels=args.kernels, cmsis_nn_dir=args.cmsis_nn_dir,
                       cmsis_core_dir=args.cmsis_core_dir)
    if args.json:
        print((result.out_dir / f"{result.name}_report.json").read_text(), end="")
    else:
        print(result.report_text())
    return 0

