"""The ``qsim`` command line.

    qsim inspect MODEL [--json]
    qsim run MODEL --input FILE [--float-input] [--image-mode shift|raw] [--profile tflm|litert|single]
             [--top-k K] [--json]
    qsim check MODEL [--input FILE | --random N] [--seed S] [--reference litert|tflm|both]
               [--profile P] [--no-xnnpack] [--json]
    qsim profile ... / qsim codegen ...   (plug-ins, present when their modules are installed)

Exit codes: 0 ok, 1 mismatch or failure found, 2 usage or input error (the
message is printed as ``qsim: error: ...`` without a traceback).  ``--json``
prints exactly one JSON document on stdout; warnings go to stderr.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

# BLAS threads: qsim's matmuls are small; on a loaded machine OpenBLAS's thread pool makes a
# 6x6x128 1x1 conv 500x slower (32 ms vs 0.06 ms measured).  Before numpy loads; env overrides.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from . import inputs as qin  # noqa: E402
from . import report  # noqa: E402
from .errors import MismatchError, QsimError  # noqa: E402
from .loader import load  # noqa: E402
from .profiles import PROFILES  # noqa: E402

PLUGINS = ("qsim.accel.cli", "qsim.codegen.cli")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qsim", description="Bit-exact int8 TFLite simulation and tooling.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("inspect", help="ops, shapes, quantization, MACs and input/output guidance")
    s.add_argument("model")
    s.add_argument("--json", action="store_true", help="print one JSON document")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("run", help="run the model on an input file and print dequantized outputs")
    s.add_argument("model")
    s.add_argument("--input", required=True, metavar="FILE", help=".npy, .npz, .bmp or .png")
    s.add_argument("--float-input", action="store_true",
                   help="the file holds real values: quantize with the model's input scale/zero point")
    s.add_argument("--profile", default="tflm", choices=sorted(PROFILES),
                   help="rounding profile (default: tflm)")
    _image_mode_arg(s)
    s.add_argument("--top-k", type=int, default=5, metavar="K", help="top-k classes per output (default 5)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("check", help="compare every tensor against LiteRT BUILTIN_REF and/or TFLM")
    s.add_argument("model")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--input", metavar="FILE", help=".npy, .npz, .bmp or .png")
    src.add_argument("--random", type=int, metavar="N", help="N seeded random inputs (default 3)")
    s.add_argument("--float-input", action="store_true", help="with --input: quantize real-valued data")
    _image_mode_arg(s)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--reference", default="both", choices=["litert", "tflm", "both"])
    s.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="override the rounding profile (default: each reference's own, litert/tflm)")
    s.add_argument("--no-xnnpack", action="store_true",
                   help="skip the informational LiteRT default-kernel (XNNPACK) comparison")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_check)

    for name in PLUGINS:
        mod = _plugin(name)
        if mod is not None:
            mod.register(sub)
    return p


def _image_mode_arg(s) -> None:
    s.add_argument("--image-mode", default="shift", choices=list(qin.IMAGE_MODES),
                   help="images: 'shift' maps pixel p to int8 p - 128 (default); 'raw' reinterprets the "
                        "stored bytes as int8, as TFLite Micro's person_detection example does")


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

def _emit_json(doc) -> None:
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


def _warn(msgs: list[str]) -> None:
    for m in msgs:
        print(f"qsim: warning: {m}", file=sys.stderr)


def cmd_inspect(args) -> int:
    g = load(args.model)
    s = report.summarize(g)
    if args.json:
        _emit_json(s)
    else:
        print(report.render_summary(s))
    return 0


def cmd_run(args) -> int:
    from .interpreter import prepare_graph

    g = load(args.model)
    prep = prepare_graph(g, args.profile)
    loaded = qin.load_inputs(args.input, g, float_input=args.float_input, image_mode=args.image_mode)
    _warn(loaded.warnings)
    if args.top_k < 0:
        raise QsimError(f"--top-k must be >= 0, got {args.top_k}.")
    values = prep.run(loaded.arrays, keep_all=False)
    outs = [_output_doc(g.tensors[t], values[t], args.top_k) for t in g.outputs]
    if args.json:
        _emit_json({"model": args.model, "input": args.input, "profile": args.profile,
                    "warnings": loaded.warnings, "outputs": outs})
        return 0
    print(f"model: {args.model}  input: {args.input}  profile: {args.profile}")
    for o in outs:
        print(f"\noutput '{o['name']}' {o['dtype']} {o['shape']}"
              + (f" (real = {o['scale']:.6g} * (q - ({o['zero_point']})))" if o["scale"] is not None else ""))
        real = np.asarray(o["real"], dtype=np.float64).ravel()
        q = np.asarray(o["q"]).ravel()
        shown = min(real.size, 64)
        print("  q:    " + " ".join(str(int(v)) for v in q[:shown]) + (" ..." if real.size > shown else ""))
        print("  real: " + " ".join(f"{v:.6g}" for v in real[:shown]) + (" ..." if real.size > shown else ""))
        if o["top_k"]:
            print(f"  top-{len(o['top_k'])}: " + ", ".join(f"[{k['index']}] {k['real']:.6g}" for k in o["top_k"]))
    return 0


def _output_doc(t, q: np.ndarray, k: int) -> dict:
    q = np.asarray(q)
    if t.quant is not None and not t.quant.per_channel:
        scale, zp = t.quant.scale0, t.quant.zp0
        real = scale * (q.astype(np.float64) - zp)
    else:
        scale = zp = None
        real = q.astype(np.float64)
    flat = real.reshape(-1, real.shape[-1]) if real.ndim else real.reshape(1, 1)
    top = []
    if k and flat.shape[0] == 1:  # one row of class scores: ties keep the lower index first
        order = np.argsort(-flat[0], kind="stable")[:k]
        qf = q.reshape(-1)
        top = [{"index": int(i), "real": float(flat[0, i]), "q": int(qf[i])} for i in order]
    return {"name": t.name, "index": t.index, "shape": list(q.shape), "dtype": str(q.dtype),
            "scale": scale, "zero_point": zp, "q": q.tolist(), "real": real.tolist(), "top_k": top}


def cmd_check(args) -> int:
    from . import reference as ref

    model = ref.Model.open(args.model)
    g = model.graph
    warnings: list[str] = []
    if args.input:
        loaded = qin.load_inputs(args.input, g, float_input=args.float_input, image_mode=args.image_mode)
        warnings = loaded.warnings
        input_sets = [loaded.arrays]
        source = args.input
    else:
        if args.float_input:
            raise QsimError("--float-input needs --input FILE.")
        n = 3 if args.random is None else args.random
        if n < 1:
            raise QsimError(f"--random must be at least 1, got {n}.")
        input_sets = qin.random_inputs(g, n, seed=args.seed)
        source = f"{n} random input(s), seed {args.seed}"
    _warn(warnings)
    refs = ("litert", "tflm") if args.reference == "both" else (args.reference,)
    result = ref.check(model, input_sets, references=refs, xnnpack=not args.no_xnnpack, profile=args.profile)
    ran = [c for c in result["comparisons"] if c.refused is None]
    if not ran:
        reasons = "; ".join(c.summary() for c in result["comparisons"])
        raise QsimError(f"nothing was compared: {reasons}. Try --reference tflm.")
    code = 0 if result["ok"] else 1
    if args.json:
        _emit_json({"model": args.model, "inputs": source, "ok": result["ok"], "exit_code": code,
                    "warnings": warnings, "comparisons": result["comparisons"],
                    "xnnpack_vs_reference": result.get("xnnpack")})
        return code
    print(f"model: {args.model}  inputs: {source}")
    for c in result["comparisons"]:
        print()
        print(report.render_comparison(c))
    x = result.get("xnnpack")
    if x is not None:
        print("\ninformational: LiteRT default kernels (XNNPACK) vs LiteRT BUILTIN_REF, graph outputs:")
        if isinstance(x, str):
            print("  " + x)
        else:
            for d in x:
                print(f"  '{d.name}': {d.mismatches} of {d.elements * len(input_sets)} elements differ, "
                      f"max |diff| {d.max_diff} LSB")
    print("\nRESULT: " + ("bit-exact" if code == 0 else "MISMATCH"))
    return code


if __name__ == "__main__":
    sys.exit(main())
