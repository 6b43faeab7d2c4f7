"""Functional-simulation speed: qsim next to the reference interpreters, measured in one run.

    python benchmarks/sim_speed.py [--models a,b] [--min-time 1.0] [--repeat 5] [--batch 64] [--clock wall|cpu]
                                   [--cold-build] [--json]

Per model, on the same seeded random int8 input, the median time of:

* ``qsim``: one sample (profile "tflm") on the engine ``Model.run(engine="auto")`` uses for one
  sample once the model is hot: "native" (the model's generated C compiled for the host,
  :mod:`qsim.native_model`: ``NativeModel.run``) when the model is eligible, else "python"
  (``PreparedGraph.run([x], keep_all=False)``); the "engine" column says which.  Included: input
  checks (shape/dtype) and every kernel; excluded: load, ``prepare_graph`` and the native
  engine's one-time C generation + compilation (printed per model as "native build", like the
  references' construction and allocation; ``--cold-build`` builds into a fresh temporary
  cache, so the figure is the full gcc build, else a cached library is reused).
* ``qsim batch/sample``: the batch of ``(--batch,) + shape[1:]`` on both engines,
  ``PreparedGraph.run([xs], keep_all=False)`` (one vectorized pass) and ``NativeModel.run`` (N
  resets + invokes in one call), divided by the batch size; the table shows the faster, the
  engine ``Model.run(engine="auto")`` picks for a batch (it times both on the first batch of a
  size class), and the other is printed below it.  Same inclusions.
* ``LiteRT REF``: LiteRT with ``OpResolverType.BUILTIN_REF`` (TFLite's reference kernels),
  normal memory plan (no preserve-all-tensors): ``set_tensor`` + ``invoke``; the output
  is not read back.  Interpreter construction and ``allocate_tensors`` excluded.
* ``XNNPACK``: LiteRT's default kernels (XNNPACK delegate), same calls.
* ``TFLM``: the TFLite Micro Python runtime with its default interpreter config (not
  kPreserveAllTensors, which ``qsim check`` needs and which is slower): ``set_input`` +
  ``invoke``; construction excluded.  Arena: the model size x 10 + 2x its activation bytes
  + 1 MiB (the size does not change the speed).

Ratios are qsim time / reference time (< 1: qsim faster).  ``batch/REF`` compares the
batched per-sample time with LiteRT REF, or with TFLM where LiteRT refuses the model
(person_detect; keyword_scrambled_8bit, whose int8-state SVDF LiteRT cannot run, is not
given to LiteRT; marked ``*``, qsim/REF too).  Goals (issue 9): batch/REF <= 0.2 on vww_96_int8,
kws_ref_model, pretrainedResnet_quant, person_detect and the MobileNetV2-sized zoo model;
single-sample ad01_int8 <= 3x LiteRT REF; the table's "goal" column names the goal of each
model and "met" whether this run meets it; issue 12 adds single <= 1x and batch <= 0.2x for
seanet conv13, trained_lstm_int8 and keyword_scrambled_8bit.  The peak memory of one batched run of the
MobileNetV2-sized model is measured with ``tracemalloc`` (numpy registers its buffers with
it): the peak of traced Python + numpy allocations during the run, above what was
allocated before it (the weights and prepared tables are not counted).

Timing: every engine runs single-threaded (OPENBLAS_NUM_THREADS=1, XNNPACK 1 thread), in
the same process, interleaved round by round so that all engines of a model see the same
machine load; each figure is the median over the rounds (at least ``--repeat``, default 5;
``--min-time`` seconds per engine).  ``--clock wall`` (default) uses ``time.perf_counter``; ``--clock cpu``
the process CPU time, which on a shared, loaded machine excludes the time other
processes hold the CPU.  The 1-minute load average is printed before and after.
Not a test: it prints figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

# One BLAS thread, set before numpy loads (the references are single-threaded too; on a shared
# 2-core machine OpenBLAS's thread pool slows qsim's small matmuls by orders of magnitude).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qsim.api import Model  # noqa: E402
from qsim.errors import QsimError  # noqa: E402
from qsim.interpreter import prepare_graph  # noqa: E402
from qsim.loader import load_bytes  # noqa: E402
from qsim.report import op_macs  # noqa: E402

SHARED = REPO.parent / "shared" / "models"
MODELS = ["ad01_int8", "hello_world_int8", "kws_ref_model", "micro_speech_quantized", "person_detect",
          "pretrainedResnet_quant", "vww_96_int8",
          "seanet/conv/conv13",  # int16x8: the SEANet conv layer with the most MACs (368,640)
          "trained_lstm_int8",  # UNIDIRECTIONAL_SEQUENCE_LSTM, 28 steps
          "keyword_scrambled_8bit"]  # TFLM's keyword benchmark: 7 SVDF with int8 state
# Models LiteRT must not be given: (reason).  Its SVDF reads an int8 state and weights_time as
# int16, past their buffers (no defined answer; BUILTIN_REF segfaults on keyword_scrambled_8bit,
# measured), so both LiteRT engines are marked refused and the ratios use TFLM (marked *).
NO_LITERT = {"keyword_scrambled_8bit": "int8-state SVDF: LiteRT reads the state as int16 past its buffer "
                                       "(no defined answer; it segfaults)"}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
GROUP_SECONDS = 0.02
# Issues 9 and 12's speed goals: model -> ((ratio measured, its bound), ...).
GOALS = {name: (("batch/REF", 0.2),) for name in ("vww_96_int8", "kws_ref_model", "pretrainedResnet_quant",
                                                "person_detect", "mobilenet_v2_like (zoo)")}
GOALS["ad01_int8"] = (("qsim/REF", 3.0),)
GOALS.update({name: (("qsim/REF", 1.0), ("batch/REF", 0.2))  # issue 12 (recurrent and int16x8 layers)
              for name in ("seanet/conv/conv13", "trained_lstm_int8", "keyword_scrambled_8bit")})


class Refused(Exception):
    """A reference would not load or run the model."""


def median_times(fns: dict, min_time: float, clock, min_reps: int = 5, max_reps: int = 1000) -> dict:
    """Median seconds per call of each function, measured interleaved: every round times one
    group of calls of each function in turn, so that all of them see the same machine load
    (on a shared machine the load drifts within seconds).  Rounds continue until
    ``min_time`` x the number of functions has passed.  Calls shorter than GROUP_SECONDS are
    timed in groups (the median of group means), long enough that the caches warm up again
    after the other engines ran (as for a user running one engine in a loop)."""
    inner = {}
    for k, fn in fns.items():
        fn()  # warm-up
        t0 = clock()
        fn()
        inner[k] = max(1, min(500, int(GROUP_SECONDS / max(clock() - t0, 1e-7))))
    times: dict = {k: [] for k in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_reps and (rounds < min_reps or time.perf_counter() - start < min_time * len(fns)):
        for k, fn in fns.items():
            t0 = clock()
            for _ in range(inner[k]):
                fn()
            times[k].append((clock() - t0) / inner[k])
        rounds += 1
    return {k: statistics.median(v) for k, v in times.items()}


def litert_runner(blob: bytes, reference: bool):
    from ai_edge_litert import interpreter as li
    try:
        if reference:
            it = li.Interpreter(model_content=blob, experimental_op_resolver_type=li.OpResolverType.BUILTIN_REF)
        else:
            it = li.Interpreter(model_content=blob, num_threads=1)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise Refused(" ".join(str(e).split())[:100]) from None
    idx = [d["index"] for d in it.get_input_details()]

    def run(inputs):
        for i, a in zip(idx, inputs):
            it.set_tensor(i, a)
        it.invoke()
    return run


def tflm_runner(blob: bytes, graph):
    from tflite_micro.python.tflite_micro import runtime
    arena = 10 * len(blob) + 2 * sum(t.nbytes for t in graph.tensors if not t.is_const) + (1 << 20)
    try:
        it = runtime.Interpreter.from_bytes(blob, arena_size=arena)  # default config (kAllocationRecording)
    except (ValueError, RuntimeError) as e:
        raise Refused(" ".join(str(e).split())[:100]) from None

    def run(inputs):
        for i, a in enumerate(inputs):
            it.set_input(a, i)
        it.invoke()
    return run


def zoo_models() -> list[tuple[str, bytes]]:
    from qsim import zoo
    return [("mobilenet_v2_like (zoo)", bytes(zoo.mobilenet_v2_like()))]


def batch_inputs(g, n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for t_idx in g.inputs:
        t = g.tensors[t_idx]
        info = np.iinfo(t.dtype)
        out.append(rng.integers(info.min, int(info.max) + 1, size=(n,) + tuple(t.shape[1:])).astype(t.dtype))
    return out


def peak_memory(prep, xs) -> int:
    """tracemalloc peak (bytes) of one run above the memory traced before it."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        prep.run(xs, keep_all=False)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def goal_cells(r: dict) -> list[str]:
    """[goal, met] of a result row: e.g. ["batch/REF <= 0.2x", "yes"]; "-" where issues 9/12 set none.
    Both ratios use the row's base (LiteRT REF, or TFLM where LiteRT refuses the model)."""
    if r["model"] not in GOALS:
        return ["-", "-"]
    goals, mets = [], []
    for which, bound in GOALS[r["model"]]:
        value = r.get("qsim") if which == "qsim/REF" else r.get("qsim_batch_per_sample")
        base = r.get(r["batch_base"])
        goals.append(f"{which} <= {bound:g}x")
        mets.append("-" if value is None or not base else ("yes" if value / base <= bound else "NO"))
    return [", ".join(goals), "/".join(mets)]


def bench_model(name: str, blob: bytes, min_time: float, batch: int, clock, memory: bool,
                repeat: int = 5, profile: str = "tflm") -> dict:
    g = load_bytes(blob, source=name)
    xs = batch_inputs(g, batch)
    one = [x[:1] for x in xs]
    row: dict = {"model": name, "macs": sum(op_macs(g, op) for op in g.operators), "batch": batch}
    fns = {}
    try:
        prep = prepare_graph(g, profile)
        fns["qsim"] = lambda: prep.run(one, keep_all=False)
        row["engine"], row["batch_engine"], row["native_build_s"] = "python", "python", None
        try:
            model = Model(blob, g)
            native = model.native(profile)
            row["engine"], row["native_build_s"] = "native", native.build_seconds
            batch1 = dict(zip(g.inputs, one))
            if native.run(batch1, 1) is None:
                raise QsimError("the benchmark's one-sample input is not the model's input size")
            fns["qsim"] = lambda: native.run(batch1, 1)
            batch_all = dict(zip(g.inputs, xs))
            fns["native_batch"] = lambda: native.run(batch_all, batch)
        except QsimError as e:
            row["native_note"] = " ".join(str(e).split())[:160]
        fns["qsim_batch"] = lambda: prep.run(xs, keep_all=False)
        if memory:
            row["peak_bytes_batch"] = peak_memory(prep, xs)
    except QsimError as e:
        row["qsim"] = row["qsim_batch_per_sample"] = None
        row["note"] = str(e).splitlines()[0]
    makers = {"litert_ref": lambda: litert_runner(blob, True), "xnnpack": lambda: litert_runner(blob, False),
              "tflm": lambda: tflm_runner(blob, g)}
    for key, make in makers.items():
        if key != "tflm" and name in NO_LITERT:
            row[key] = None
            row.setdefault("refused", {})[key] = NO_LITERT[name]
            continue
        try:
            run = make()
            run(one)
            fns[key] = (lambda r: lambda: r(one))(run)
        except Refused as e:
            row[key] = None
            row.setdefault("refused", {})[key] = str(e)
    row.update(median_times(fns, min_time, clock, min_reps=repeat))
    if "qsim_batch" in row:
        row["qsim_batch_per_sample"] = row.pop("qsim_batch") / batch
    if "native_batch" in row:  # auto runs a batch on the engine measured faster on it
        row["python_batch_per_sample"] = row["qsim_batch_per_sample"]
        row["native_batch_per_sample"] = row.pop("native_batch") / batch
        if row["native_batch_per_sample"] < row["python_batch_per_sample"]:
            row["batch_engine"], row["qsim_batch_per_sample"] = "native", row["native_batch_per_sample"]
    base_key = "litert_ref" if row.get("litert_ref") else "tflm"
    row["batch_base"] = base_key
    return row


def fmt_ms(v) -> str:
    return "-" if v is None else f"{v * 1e3:.3f}"


def ratio(a, b) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated subset of " + ",".join(MODELS) + ",zoo")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of rounds per engine (default 1)")
    ap.add_argument("--repeat", type=int, default=5, help="at least this many interleaved rounds (default 5)")
    ap.add_argument("--batch", type=int, default=64, help="batch size of the batched qsim run (default 64)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall (default) or process CPU time")
    ap.add_argument("--cold-build", action="store_true",
                    help="build the native engine into a fresh temporary cache (full gcc build time)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.cold_build:
        import atexit
        import shutil
        import tempfile
        os.environ["QSIM_CACHE_DIR"] = tempfile.mkdtemp(prefix="qsim_sim_speed_cache_")
        atexit.register(shutil.rmtree, os.environ["QSIM_CACHE_DIR"], True)
    wanted = args.models.split(",") if args.models else MODELS + ["zoo"]
    jobs = [(n, (SHARED / f"{n}.tflite").read_bytes()) for n in wanted
            if n in MODELS and (SHARED / f"{n}.tflite").is_file()]
    if "zoo" in wanted:
        jobs += zoo_models()
    load_before = os.getloadavg()[0]
    rows = []
    for name, blob in jobs:
        rows.append(bench_model(name, blob, args.min_time, args.batch, CLOCKS[args.clock], memory="zoo" in name,
                                repeat=args.repeat))
        print(f"measured {name}", file=sys.stderr)
    load_after = os.getloadavg()[0]
    for r in rows:
        r["goal"], r["goal_met"] = goal_cells(r)
    if args.json:
        print(json.dumps({"clock": args.clock, "load_before": load_before, "load_after": load_after, "rows": rows},
                         indent=2))
        return 0
    from qsim.report import table
    body = []
    for r in rows:
        base = r.get(r["batch_base"])
        mark = "*" if r["batch_base"] == "tflm" else ""
        body.append([r["model"], f"{r['macs']:,}", f"{r.get('engine', '-')}/{r.get('batch_engine', '-')}", fmt_ms(r["qsim"]), fmt_ms(r["qsim_batch_per_sample"]),
                     fmt_ms(r["litert_ref"]), fmt_ms(r["xnnpack"]), fmt_ms(r["tflm"]),
                     ratio(r["qsim"], base) + mark, ratio(r["qsim_batch_per_sample"], base) + mark,
                     ratio(r["qsim"], r["tflm"]), r["goal"], r["goal_met"]])
    print(f"median ms per inference, clock={args.clock} (qsim profile tflm; batch = {args.batch} samples in one run, "
          f"per sample; ratios = qsim time / other; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}; "
          f"load average {load_before:.1f} before, {load_after:.1f} after on {os.cpu_count()} CPUs)")
    print(table(["model", "MACs", "engine 1/batch", "qsim", f"qsim batch/sample", "LiteRT REF", "XNNPACK", "TFLM", "qsim/REF",
                 "batch/REF", "qsim/TFLM", "goal (issues 9, 12)", "met"], body, align="lrlrrrrrrrrll"))
    if any(r["batch_base"] == "tflm" for r in rows):
        print("* LiteRT refuses this model (or is not given it, see NO_LITERT): qsim/REF and batch/REF compare with "
              "TFLM instead.")
    for r in rows:
        if r.get("native_build_s") is not None:
            print(f"native build of {r['model']}: {r['native_build_s']:.2f} s, one-time, excluded from the figures "
                  f"(C generation + {'gcc' if args.cold_build else 'gcc or a cached library'})"
                  + (f"; batch per sample: python {fmt_ms(r['python_batch_per_sample'])} ms, native "
                     f"{fmt_ms(r['native_batch_per_sample'])} ms" if r.get("native_batch_per_sample") is not None
                     else ""))
        if r.get("native_note"):
            print(f"note: {r['model']}: qsim single sample in Python: {r['native_note']}")
        if r.get("peak_bytes_batch") is not None:
            print(f"peak memory of one batch-{args.batch} run of {r['model']}: "
                  f"{r['peak_bytes_batch'] / 2**20:.1f} MiB (tracemalloc peak above the prepared model)")
        if r.get("note"):
            print(f"note: {r['model']}: qsim: {r['note']}")
        for k, v in r.get("refused", {}).items():
            print(f"note: {r['model']}: {k} refused: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
