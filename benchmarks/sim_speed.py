"""Functional-simulation speed: qsim next to the reference interpreters, measured in one run.

    python benchmarks/sim_speed.py [--models a,b] [--min-time 1.0] [--json]

Per model: median wall time of one inference (inputs set + invoke; qsim:
``PreparedGraph.run(keep_all=False)`` after a one-time prepare) for qsim
(profile "tflm"), LiteRT with BUILTIN_REF kernels, LiteRT default kernels
(XNNPACK delegate) and TFLite Micro, all on the same seeded random input.
Ratios are qsim time / other time (< 1: qsim faster).  Includes the
MobileNetV2-sized model from ``qsim.zoo.mobilenet_v2_like()`` when that module
exists.  Not a test: it prints figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# One BLAS thread, set before numpy loads (the references are single-threaded too; on a shared
# 2-core machine OpenBLAS's thread pool slows qsim's small matmuls by orders of magnitude).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qsim import reference as ref  # noqa: E402
from qsim.errors import QsimError  # noqa: E402
from qsim.inputs import random_inputs  # noqa: E402
from qsim.interpreter import prepare_graph  # noqa: E402

SHARED = REPO.parent / "shared" / "models"
MODELS = ["ad01_int8", "hello_world_int8", "kws_ref_model", "micro_speech_quantized", "person_detect",
          "pretrainedResnet_quant", "vww_96_int8"]


def median_time(fn, min_time: float, min_reps: int = 3, max_reps: int = 1000) -> float:
    """Median seconds per call over enough repetitions to fill ``min_time`` (after one warm-up)."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def zoo_models() -> list[tuple[str, bytes]]:
    import importlib
    try:
        zoo = importlib.import_module("qsim.zoo")
    except ModuleNotFoundError as e:
        if e.name == "qsim.zoo":
            return []
        raise
    out = zoo.mobilenet_v2_like()
    if hasattr(out, "build"):
        out = out.build()
    if isinstance(out, (str, Path)):
        out = Path(out).read_bytes()
    return [("mobilenet_v2_like (zoo)", bytes(out))]


def bench_model(name: str, blob: bytes, min_time: float) -> dict:
    m = ref.Model.open(blob, source=name)
    g = m.graph
    x = random_inputs(g, 1, seed=1)[0]
    row: dict = {"model": name, "macs": None}
    from qsim.report import op_macs
    row["macs"] = sum(op_macs(g, op) for op in g.operators)
    try:
        prep = prepare_graph(g, "tflm")
        row["qsim"] = median_time(lambda: prep.run(x, keep_all=False), min_time)
    except QsimError as e:
        row["qsim"] = None
        row["note"] = str(e).splitlines()[0]
    for key, kind in (("litert_ref", "litert_plain"), ("xnnpack", "xnnpack"), ("tflm", "tflm")):
        try:
            if kind == "litert_plain":
                runner = _plain_builtin_ref(blob)
            else:
                runner = ref.make_runner(kind, blob)
            row[key] = median_time(lambda: runner.run(x, []), min_time)
        except ref.ReferenceRefused as e:
            row[key] = None
            row.setdefault("refused", {})[key] = str(e)[:80]
    return row


def _plain_builtin_ref(blob: bytes):
    """BUILTIN_REF without experimental_preserve_all_tensors (the interpreter's normal memory plan)."""
    from ai_edge_litert import interpreter as li

    class Runner(ref.LiteRTRunner):
        def __init__(self, blob):
            try:
                with ref._quiet_stderr():
                    self.it = li.Interpreter(model_content=blob,
                                             experimental_op_resolver_type=li.OpResolverType.BUILTIN_REF)
                    self.it.allocate_tensors()
            except (ValueError, RuntimeError) as e:
                raise ref.ReferenceRefused(ref._first_sentence(str(e))) from None
            self.input_indices = [d["index"] for d in self.it.get_input_details()]
            self.output_indices = [d["index"] for d in self.it.get_output_details()]

    return Runner(blob)


def fmt_ms(v) -> str:
    return "-" if v is None else f"{v * 1e3:.3f}"


def ratio(a, b) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated subset of " + ",".join(MODELS) + ",zoo")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of repetitions per engine (default 1)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    wanted = args.models.split(",") if args.models else MODELS + ["zoo"]
    jobs = [(n, (SHARED / f"{n}.tflite").read_bytes()) for n in wanted if n in MODELS and (SHARED / f"{n}.tflite").is_file()]
    if "zoo" in wanted:
        jobs += zoo_models()
    rows = []
    for name, blob in jobs:
        rows.append(bench_model(name, blob, args.min_time))
        print(f"measured {name}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from qsim.report import table
    body = [[r["model"], f"{r['macs']:,}", fmt_ms(r["qsim"]), fmt_ms(r["litert_ref"]), fmt_ms(r["xnnpack"]),
             fmt_ms(r["tflm"]), ratio(r["qsim"], r["litert_ref"]), ratio(r["qsim"], r["xnnpack"]),
             ratio(r["qsim"], r["tflm"])] for r in rows]
    print("median ms per inference (qsim profile tflm; ratios = qsim time / other; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')})")
    print(table(["model", "MACs", "qsim", "LiteRT REF", "XNNPACK", "TFLM", "qsim/REF", "qsim/XNNPACK", "qsim/TFLM"],
                body, align="lrrrrrrrr"))
    for r in rows:
        if r.get("note"):
            print(f"note: {r['model']}: qsim: {r['note']}")
        for k, v in r.get("refused", {}).items():
            print(f"note: {r['model']}: {k} refused: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
