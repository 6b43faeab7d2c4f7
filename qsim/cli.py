"""The ``qsim`` command line: a thin layer over the Python API (:mod:`qsim.api`).

    qsim --version
    qsim inspect MODEL [--json]
    qsim run MODEL (--input FILE | --random N [--seed S]) [--float-input] [--image-mode shift|raw]
             [--profile tflm|litert|single] [--top-k K] [--json]
    qsim check MODEL [--input FILE | --random N] [--seed S] [--reference litert|tflm|both]
               [--profile P] [--no-xnnpack] [--json]
    qsim eval MODEL --data PATH [--labels F] [--limit N] [--batch-size B] [--mean M --std S]
              [--image-mode shift|raw] [--profile P] [--scheduler tcp://HOST:8786 | --workers N] [--json]
    qsim compare INT8 FLOAT --data PATH [--labels F] [--limit N] [--match FILE] [--json] [--csv F] [--report HTML] [--model-explorer JSON]
                 [--scheduler tcp://HOST:8786 | --workers N]
    qsim dump MODEL (--input FILE | --random N) -o TENSORS.npz [--profile P] [--json]
    qsim vectors MODEL --layer N|NAME [--input FILE | --random K] -o DIR [--profile P] [--rounding R] [--gemm]
    qsim hdl-test --top MODULE --sources A.sv ... --ports PORTS.toml [--simulator verilator|icarus] [--vectors DIR]
    qsim profile ... / qsim codegen ...   (plug-ins, present when their modules are installed)

Every subcommand opens the model with :func:`qsim.load` and calls a :class:`qsim.Model`
method.  Exit codes: 0 ok, 1 mismatch or failure found, 2 usage or input error (the
message is printed as ``qsim: error: ...`` without a traceback).  ``--json`` prints
exactly one JSON document on stdout; warnings go to stderr.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

import numpy as np

from . import __version__
from . import inputs as qin
from . import report
from .api import ENGINES, Model, load
from .errors import MismatchError, QsimError
from .profiles import PROFILES

PLUGINS = ("qsim.accel.cli", "qsim.codegen.cli")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qsim", description="Bit-exact int8 TFLite simulation and tooling.")
    p.add_argument("--version", action="version", version=f"qsim {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("inspect", help="ops, shapes, quantization, MACs and input/output guidance")
    s.add_argument("model")
    s.add_argument("--json", action="store_true", help="print one JSON document")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("run", help="run the model on an input file and print dequantized outputs")
    s.add_argument("model")
    _input_args(s, required=True)
    s.add_argument("--profile", default="tflm", choices=sorted(PROFILES),
                   help="rounding profile (default: tflm)")
    requant_arg(s)
    s.add_argument("--top-k", type=int, default=5, metavar="K", help="top-k classes per output (default 5)")
    s.add_argument("--engine", default="auto", choices=list(ENGINES),
                   help="python: qsim's numpy kernels; native: the model's generated C compiled for this "
                        "machine (built once, cached; outputs only, the profile's own arithmetic); auto "
                        "(default): Python for a one-off run (see Model.run)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("check", help="compare every tensor against LiteRT BUILTIN_REF and/or TFLM")
    s.add_argument("model")
    _input_args(s, required=False, random_help="N seeded random inputs (default 3)")
    s.add_argument("--reference", default="both", choices=["litert", "tflm", "both"])
    s.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="override the rounding profile (default: each reference's own, litert/tflm)")
    s.add_argument("--no-xnnpack", action="store_true",
                   help="skip the informational LiteRT default-kernel (XNNPACK) comparison")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("eval", help="run a dataset: top-1/top-5 accuracy, or output statistics without labels")
    s.add_argument("model")
    s.add_argument("--data", required=True, metavar="PATH",
                   help=".npy, .npz (x, y) or a folder with one sub-folder of images per class")
    s.add_argument("--labels", metavar="FILE", help="class names, one per line, in the model's output order")
    s.add_argument("--limit", type=int, metavar="N", help="the first N samples only")
    s.add_argument("--batch-size", type=int, default=64, metavar="B", help="samples per chunk (default 64)")
    s.add_argument("--mean", type=_floats, metavar="M", help="normalize: real = (x - M) / S, then quantize "
                   "(one value or one per channel, comma-separated; e.g. 127.5)")
    s.add_argument("--std", type=_floats, metavar="S", help="see --mean (e.g. 127.5)")
    s.add_argument("--profile", default="tflm", choices=sorted(PROFILES), help="rounding profile (default: tflm)")
    requant_arg(s)
    image_mode_arg(s)
    cluster_args(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("compare", help="int8 model vs its float twin, layer by layer, over a dataset")
    s.add_argument("model", metavar="INT8")
    s.add_argument("float_model", metavar="FLOAT")
    s.add_argument("--data", required=True, metavar="PATH",
                   help=".npy, .npz (x, y) or a folder with one sub-folder of images per class")
    s.add_argument("--labels", metavar="FILE", help="class names, one per line, in the model's output order")
    s.add_argument("--limit", type=int, metavar="N", help="the first N samples only")
    s.add_argument("--match", metavar="FILE", help="JSON {int8 tensor name: float tensor name} overriding the matching")
    s.add_argument("--mean", type=_floats, metavar="M", help="normalize: real = (x - M) / S, then quantize")
    s.add_argument("--std", type=_floats, metavar="S", help="see --mean")
    s.add_argument("--profile", default="tflm", choices=sorted(PROFILES), help="rounding profile (default: tflm)")
    requant_arg(s)
    image_mode_arg(s)
    s.add_argument("--csv", metavar="F", help="also write the per-layer table as CSV (QuantizationDebugger columns)")
    s.add_argument("--report", metavar="HTML", help="also write a self-contained HTML report (needs matplotlib)")
    s.add_argument("--model-explorer", metavar="JSON", dest="model_explorer",
                   help="also write per-node SQNR (dB) keyed by tensor name, Model Explorer's node-data format")
    cluster_args(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("dump", help="write every tensor of one run (inputs and all op outputs) to an .npz, by name")
    s.add_argument("model")
    _input_args(s, required=True)
    s.add_argument("-o", "--output", required=True, metavar="TENSORS.npz", help="the .npz to write")
    s.add_argument("--profile", default="tflm", choices=sorted(PROFILES), help="rounding profile (default: tflm)")
    requant_arg(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_dump)

    s = sub.add_parser("vectors", help="golden requant vectors of one CONV/DEPTHWISE/FC layer for RTL testbenches")
    s.add_argument("model")
    s.add_argument("--layer", required=True, metavar="N|NAME", help="op index or output tensor name")
    _input_args(s, required=False, random_help="N seeded random inputs (default 1)")
    s.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write (created)")
    s.add_argument("--profile", default="tflm", choices=sorted(PROFILES), help="rounding profile (default: tflm)")
    s.add_argument("--rounding", default=None, help="requantize the expected outputs with this rounding "
                   "(default: the profile's for the layer)")
    s.add_argument("--gemm", action="store_true", help="also write the GEMM operands (gemm_a.npy, gemm_b.npy)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_vectors)

    s = sub.add_parser("hdl-test", help="run qsim's requant regression (cocotb) on your own RTL")
    s.add_argument("--top", required=True, metavar="MODULE", help="top-level module of the design under test")
    s.add_argument("--sources", required=True, nargs="+", metavar="FILE", help="SystemVerilog/Verilog sources")
    s.add_argument("--ports", required=True, metavar="PORTS.toml", help="port map (see qsim.hdl.ports)")
    s.add_argument("--simulator", default="verilator", choices=["verilator", "icarus"])
    s.add_argument("--vectors", metavar="DIR", help="a `qsim vectors` folder to replay through the design")
    s.add_argument("--seed", type=int, default=1, help="seed of the random vectors and stalls (default 1)")
    s.add_argument("--random-beats", type=int, default=2000, metavar="B", help="random beats (default 2000)")
    s.add_argument("--keep-build", metavar="DIR", help="build here instead of a temporary folder (kept)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_hdl_test)

    for name in PLUGINS:
        mod = _plugin(name)
        if mod is not None:
            mod.register(sub)
    return p


def requant_arg(s) -> None:
    """``--requant VARIANT``: the GEMM ops' requant arithmetic (qsim.fixedpoint.RequantVariant)."""
    s.add_argument("--requant", metavar="VARIANT",
                   help="what-if requant arithmetic for CONV/DEPTHWISE/FULLY_CONNECTED: double, single, float32, "
                        "shift-only, shift=N, mult-bits=N, truncate; reported against the profile's own "
                        "(default: the profile's own)")


def image_mode_arg(s) -> None:
    """``--image-mode``: every subcommand that reads image files takes it."""
    s.add_argument("--image-mode", default="shift", choices=list(qin.IMAGE_MODES),
                   help="images: 'shift' maps pixel p to int8 p - 128 (default); 'raw' reinterprets the "
                        "stored bytes as int8, as TFLite Micro's person_detection example does")


def cluster_args(s) -> None:
    """``--scheduler`` / ``--workers``: run on a Dask cluster (:mod:`qsim.cluster`, :mod:`qsim.shards`)."""
    g = s.add_mutually_exclusive_group()
    g.add_argument("--scheduler", metavar="ADDR", help="a running Dask scheduler, e.g. tcp://HOST:8786; the workers "
                   "read the data from the same path (shared filesystem) or URL")
    g.add_argument("--workers", type=int, metavar="N", help="start a local Dask cluster of N worker processes")


def _cluster(args) -> dict:
    return {"scheduler": args.scheduler, "workers": args.workers}


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def _input_args(s, required: bool, random_help: str = "N seeded random inputs") -> None:
    src = s.add_mutually_exclusive_group(required=required)
    src.add_argument("--input", metavar="FILE", help=".npy, .npz, .csv (TFLM golden inputs), .bmp or .png")
    src.add_argument("--random", type=int, metavar="N", help=random_help)
    s.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    s.add_argument("--float-input", action="store_true",
                   help="with --input: the file holds real values; quantize with the model's input scale/zero point")
    image_mode_arg(s)


def read_input_file(m: Model, path: str, float_input: bool = False, image_mode: str = "shift") -> dict:
    """``--input FILE`` -> {input key: array} (:meth:`qsim.Model.read_inputs`; warnings printed to stderr)."""
    arrays, warnings = m.read_inputs(path, float_input=float_input, image_mode=image_mode)
    warn(warnings)
    return arrays


def _inputs_from_args(m: Model, args, default_random: int | None = None):
    """(samples for Model.run/check, a description, warnings) from --input / --random / --seed."""
    if args.input:
        arrays, warnings = m.read_inputs(args.input, float_input=args.float_input, image_mode=args.image_mode)
        return arrays, args.input, warnings
    if args.float_input:
        raise QsimError("--float-input needs --input FILE.")
    n = default_random if args.random is None else args.random
    if n < 1:
        raise QsimError(f"--random must be at least 1, got {n}.")
    return m.random_inputs(n, args.seed), f"{n} random input(s), seed {args.seed}", []


def _plugin(name: str):
    """Import a plug-in CLI module; None only when that module (or its package) does not exist."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name in (name, name.rsplit(".", 1)[0]):
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: usage error (2) or --help (0)
        return int(e.code or 0)
    try:
        return int(args.func(args) or 0)
    except QsimError as e:
        print(f"qsim: error: {e}", file=sys.stderr)
        return 2
    except MismatchError as e:
        print(f"qsim: mismatch: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and closed early: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# ------------------------------------------------------------------ subcommands

def emit_json(doc) -> None:
    """Print one JSON document (numpy scalars/arrays and objects with as_dict() allowed)."""
    print(json.dumps(doc, indent=2, default=_json_default))


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "as_dict"):
        return o.as_dict()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def warn(msgs: list[str]) -> None:
    """Print warnings to stderr as ``qsim: warning: ...``."""
    for m in msgs:
        print(f"qsim: warning: {m}", file=sys.stderr)


def cmd_inspect(args) -> int:
    m = load(args.model, validate=False)  # an invalid model is shown with its problems, then exit 2
    s = m.summary()
    if args.json:
        emit_json(s)
    else:
        print(report.render_summary(s))
    if s["invalid"]:
        print(f"qsim: error: {args.model} is not a valid TFLite model: {len(s['invalid'])} problem(s), "
              "listed above.", file=sys.stderr)
        return 2
    return 0


def cmd_run(args) -> int:
    m = load(args.model)
    m.prepared(args.profile, args.requant)  # unsupported ops are reported before any input problem
    x, source, warnings = _inputs_from_args(m, args)
    warn(warnings)
    if args.top_k < 0:
        raise QsimError(f"--top-k must be >= 0, got {args.top_k}.")
    res = m.run(x, profile=args.profile, requant=args.requant, engine=args.engine)
    docs = [res.output_docs(args.top_k)] if res.batch is None else res.output_docs(args.top_k)
    if args.json:
        doc = {"model": args.model, "input": source, "profile": args.profile, "engine": res.engine,
               "warnings": warnings}
        if res.requant is not None:
            doc["requant"] = res.requant.to_dict()
        if res.batch is None:
            doc["outputs"] = docs[0]
        else:
            doc["samples"] = [{"sample": i, "outputs": d} for i, d in enumerate(docs)]
        emit_json(doc)
        return 0
    print(f"model: {args.model}  input: {source}  profile: {args.profile}  engine: {res.engine}")
    if res.requant is not None:
        print(res.requant.render())
    for i, outs in enumerate(docs):
        if res.batch is not None:
            print(f"\nsample {i}:")
        for o in outs:
            _print_output(o)
    return 0


def _print_output(o: dict) -> None:
    print(f"\noutput '{o['name']}' {o['dtype']} {o['shape']}"
          + (f" (real = {o['scale']:.6g} * (q - ({o['zero_point']})))" if o["scale"] is not None else ""))
    real = np.asarray(o["real"], dtype=np.float64).ravel()
    q = np.asarray(o["q"]).ravel()
    shown = min(real.size, 64)
    print("  q:    " + " ".join(str(int(v)) for v in q[:shown]) + (" ..." if real.size > shown else ""))
    print("  real: " + " ".join(f"{v:.6g}" for v in real[:shown]) + (" ..." if real.size > shown else ""))
    if o["top_k"]:
        print(f"  top-{len(o['top_k'])}: " + ", ".join(f"[{k['index']}] {k['real']:.6g}" for k in o["top_k"]))


def cmd_check(args) -> int:
    m = load(args.model)
    if args.input:
        x, _, warnings = _inputs_from_args(m, args)
    else:
        x, _, warnings = _inputs_from_args(m, args, default_random=3)
        x = len(x)
    warn(warnings)
    rep = m.check(x, reference=args.reference, profile=args.profile, seed=args.seed, xnnpack=not args.no_xnnpack)
    if args.input:
        rep.inputs = args.input
    rep.warnings = warnings
    code = 0 if rep.ok else 1
    if args.json:
        emit_json(rep.to_dict())
    else:
        print(rep)
    return code


def cmd_eval(args) -> int:
    m = load(args.model)
    res = m.eval(args.data, labels=args.labels, mean=args.mean, std=args.std, image_mode=args.image_mode,
                 profile=args.profile, batch_size=args.batch_size, limit=args.limit, progress=True,
                 requant=args.requant, **_cluster(args))
    if args.json:  # the text report lists them among its notes
        warn(res.warnings)
        emit_json(res.to_dict())
    else:
        print(res.render())
    return 0


def cmd_compare(args) -> int:
    m = load(args.model)
    rep = m.compare(args.float_model, args.data, labels=args.labels, limit=args.limit, match=args.match,
                    profile=args.profile, mean=args.mean, std=args.std, image_mode=args.image_mode,
                    requant=args.requant, progress=True, **_cluster(args))
    warn(rep.warnings)
    if args.csv:
        rep.to_csv(args.csv)
    if args.report:
        rep.to_html(args.report)
    if args.model_explorer:
        rep.to_model_explorer(args.model_explorer)
    if args.json:
        emit_json(rep.to_dict())
    else:
        print(rep.render())
    return 0


def cmd_dump(args) -> int:
    m = load(args.model)
    m.prepared(args.profile, args.requant)
    x, source, warnings = _inputs_from_args(m, args)
    warn(warnings)
    res = m.run(x, profile=args.profile, keep="all", requant=args.requant)
    path = res.save(args.output)
    tensors = [{"key": k, "index": m.tensor(k).index, "shape": list(v.shape), "dtype": str(v.dtype)}
               for k, v in res.tensors.items()]
    if args.json:
        emit_json({"model": args.model, "input": source, "profile": args.profile, "output": str(path),
                   "warnings": warnings, "tensors": tensors,
                   "requant": None if res.requant is None else res.requant.to_dict()})
    else:
        print(f"wrote {len(tensors)} tensors ({source}, profile {args.profile}) to {path}, keyed by tensor name"
              + (f"; a leading axis of {res.batch} samples" if res.batch is not None else ""))
        if res.requant is not None:
            print(res.requant.render())
    return 0


def cmd_vectors(args) -> int:
    m = load(args.model)
    m.prepared(args.profile)
    if args.input:
        x, source, warnings = _inputs_from_args(m, args)
    else:
        x, source, warnings = _inputs_from_args(m, args, default_random=1)
    warn(warnings)
    v = m.vectors(args.layer, inputs=x, out_dir=args.output, profile=args.profile, rounding=args.rounding,
                  gemm=args.gemm)
    doc = {"model": args.model, "input": source, "output": args.output, **{
        k: v.manifest()[k] for k in ("layer", "op_index", "opcode", "profile", "rounding", "rows", "channels")}}
    if args.json:
        emit_json(doc)
    else:
        print(f"wrote {v.rows} x {v.channels} requant vectors of op {v.op_index} {v.opcode} ({source}, "
              f"profile {v.profile}, {v.rounding} rounding) to {args.output}: vectors.npz, vectors.csv, *.hex, "
              "tb_vectors.sv (run_tb.sh), manifest.json")
    return 0


def cmd_hdl_test(args) -> int:
    from .hdl import runner  # cocotb is imported only here: the rest of qsim works without it
    res = runner.hdl_test(top=args.top, sources=args.sources, ports=args.ports, simulator=args.simulator,
                          vectors=args.vectors, seed=args.seed, random_beats=args.random_beats,
                          build_dir=args.keep_build)
    if args.json:
        emit_json(res.as_dict())
    else:
        print(res.render())
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
