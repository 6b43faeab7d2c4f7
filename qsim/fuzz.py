"""Seeded .tflite mutator and the crash campaign behind tests/test_fuzz_models.py and
benchmarks/fuzz_campaign.py.

A *case* is (seed, case number) -> one mutant of one seed model, fully
deterministic.  Mutations: raw (bit/byte flips, truncation, splices of another
model's bytes) or structure-aware: scalar fields located through the ``tflite``
package's flatbuffer accessors and overwritten in place with hostile values
(out-of-range tensor/buffer/opcode indices, negative or huge dimensions,
zero/negative/NaN/inf scales, out-of-range zero points and axes, stride 0,
huge dilations and filters, unknown enums, an op reading a tensor a later op
produces, zero operators).  A structure edit that certainly makes the model
invalid marks the case ``must_fail``: such a mutant running to completion is a
*silent run* (a wrong answer), counted as a failure.

Every case goes through load -> prepare_graph -> run (random input) ->
report.summarize/render (of the unvalidated graph, as ``qsim inspect`` does)
-> codegen.generate (C sources only) -> accel profile_graph (edge16, values)
and must end in success or a QsimError.
Cases run in a worker process (``python -m qsim.fuzz worker SEED MODEL...``)
whose address space is capped at its start-up size + :data:`MEMORY_LIMIT`, so
an allocation beyond it fails as a MemoryError (a reported crash) instead of
swapping; numpy RuntimeWarnings are errors.  The parent kills a worker that
does not answer within :data:`HANG_SECONDS` (a hang) and restarts it.
"""
from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MEMORY_LIMIT = 2 << 30  # bytes of address space a case may add to the worker
CASE_SECONDS = 10.0  # a case slower than this is a failure
HANG_SECONDS = 60.0  # a worker silent this long is killed (a hang)

# TFLite schema field numbers (vtable slot = 4 + 2 * field).
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_BUFFER, _TENSOR_QUANT = 0, 1, 2, 4
_Q_SCALE, _Q_ZP, _Q_DIM = 2, 3, 6
_OP_OPCODE, _OP_INPUTS, _OP_OUTPUTS, _OP_OPTIONS = 0, 1, 2, 4
_SG_TENSORS, _SG_INPUTS, _SG_OUTPUTS, _SG_OPERATORS = 0, 1, 2, 3
_INT_TYPES = {9: (-128, 127), 3: (0, 255), 7: (-32768, 32767), 2: (-2**31, 2**31 - 1), 4: (-2**63, 2**63 - 1)}
# builtin option tables: field number -> field kind, per options type (BuiltinOptions union tag)
_OPTION_FIELDS = {
    1: {0: "padding", 1: "stride", 2: "stride", 3: "activation", 4: "dilation", 5: "dilation"},  # Conv2D
    2: {0: "padding", 1: "stride", 2: "stride", 3: "depth_multiplier", 4: "activation", 5: "dilation",
        6: "dilation"},  # DepthwiseConv2D
    5: {0: "padding", 1: "stride", 2: "stride", 3: "filter", 4: "filter", 5: "activation"},  # Pool2D
    10: {0: "concat_axis", 1: "activation"},  # Concatenation
    11: {0: "activation"}, 12: {0: "activation"},  # Add, L2Norm
    8: {0: "activation"},  # FullyConnected (fused activation)
}
_FMT = {"padding": "<B", "activation": "<B", "stride": "<i", "dilation": "<i", "filter": "<i",
        "depth_multiplier": "<i", "concat_axis": "<i"}


@dataclass
class Field:
    """One patchable scalar in the flatbuffer: byte position, struct format, kind and context."""

    pos: int
    fmt: str
    kind: str
    info: dict = field(default_factory=dict)


def _slot(tab, field_no: int) -> int:
    o = tab.Offset(4 + 2 * field_no)
    return o + tab.Pos if o else 0


def _vector(tab, field_no: int) -> tuple[int, int]:
    """(start, length) of a vector field, (0, 0) if absent."""
    o = tab.Offset(4 + 2 * field_no)
    return (tab.Vector(o), tab.VectorLen(o)) if o else (0, 0)


def locate_fields(data: bytes) -> tuple[list[Field], dict]:
    """Every mutable scalar of a valid one-subgraph model, and facts about it (tensor count...)."""
    import tflite
    buf = bytearray(data)
    m = tflite.Model.GetRootAsModel(buf, 0)
    sg = m.Subgraphs(0)
    n_t, n_ops, n_buf, n_codes = sg.TensorsLength(), sg.OperatorsLength(), m.BuffersLength(), m.OperatorCodesLength()
    fields: list[Field] = []
    consts = set()
    for i in range(n_t):
        t = sg.Tensors(i)
        tab = t._tab
        start, n = _vector(tab, _TENSOR_SHAPE)
        for k in range(n):
            fields.append(Field(start + 4 * k, "<i", "shape_dim", {"tensor": i}))
        p = _slot(tab, _TENSOR_BUFFER)
        if p:
            fields.append(Field(p, "<I", "buffer_index", {"tensor": i}))
        if t.Buffer() > 0 and m.Buffers(t.Buffer()).DataLength() > 0:
            consts.add(i)
        ttype = int(t.Type())
        p = _slot(tab, _TENSOR_TYPE)
        if p:
            fields.append(Field(p, "<b", "tensor_type", {"tensor": i}))
        q = t.Quantization()
        if q is not None:
            start, n = _vector(q._tab, _Q_SCALE)
            for k in range(n):
                fields.append(Field(start + 4 * k, "<f", "scale", {"tensor": i}))
            start, n = _vector(q._tab, _Q_ZP)
            for k in range(n):
                fields.append(Field(start + 8 * k, "<q", "zero_point", {"tensor": i, "range": _INT_TYPES.get(ttype)}))
            p = _slot(q._tab, _Q_DIM)
            if p:
                fields.append(Field(p, "<i", "quant_axis", {"tensor": i, "per_channel": q.ScaleLength() > 1}))
    producer = {}
    for j in range(n_ops):
        op = sg.Operators(j)
        for v in (op.OutputsAsNumpy() if op.OutputsLength() else []):
            producer.setdefault(int(v), j)
    for j in range(n_ops):
        op = sg.Operators(j)
        tab = op._tab
        p = _slot(tab, _OP_OPCODE)
        if p:
            fields.append(Field(p, "<I", "opcode_index", {"op": j}))
        for fno, kind in ((_OP_INPUTS, "op_input"), (_OP_OUTPUTS, "op_output")):
            start, n = _vector(tab, fno)
            for k in range(n):
                fields.append(Field(start + 4 * k, "<i", kind, {"op": j, "slot": k}))
        opt_type = int(op.BuiltinOptionsType())
        if opt_type in _OPTION_FIELDS and op.BuiltinOptions() is not None:
            ot = op.BuiltinOptions()
            import flatbuffers
            otab = flatbuffers.table.Table(ot.Bytes, ot.Pos)
            for fno, kind in _OPTION_FIELDS[opt_type].items():
                p = _slot(otab, fno)
                if p:
                    fields.append(Field(p, _FMT[kind], kind, {"op": j}))
    for fno, kind in ((_SG_INPUTS, "graph_input"), (_SG_OUTPUTS, "graph_output")):
        start, n = _vector(sg._tab, fno)
        for k in range(n):
            fields.append(Field(start + 4 * k, "<i", kind, {"slot": k}))
    o = sg._tab.Offset(4 + 2 * _SG_OPERATORS)
    if o:
        fields.append(Field(sg._tab.Vector(o) - 4, "<I", "operators_length", {}))
    facts = {"tensors": n_t, "ops": n_ops, "buffers": n_buf, "opcodes": n_codes, "producer": producer,
             "consts": consts, "graph_inputs": [int(v) for v in (sg.InputsAsNumpy() if sg.InputsLength() else [])],
             "graph_outputs": [int(v) for v in (sg.OutputsAsNumpy() if sg.OutputsLength() else [])]}
    return fields, facts


def _hostile(f: Field, facts: dict, rng: np.random.Generator) -> tuple[int | float, bool]:
    """A hostile value for field ``f`` and whether it certainly makes the model invalid."""
    k, n_t = f.kind, facts["tensors"]
    pick = lambda vals: vals[int(rng.integers(len(vals)))]  # noqa: E731
    if k in ("op_input", "op_output", "graph_input", "graph_output"):
        if k == "op_input" and rng.random() < 0.35:
            later = [t for t, j in facts["producer"].items() if j >= f.info["op"]
                     and t not in facts["consts"] and t not in facts["graph_inputs"]]
            if later:  # an op reading a tensor whose first producer is this op or a later one
                return pick(later), True
        v = pick([n_t, n_t + 7, 2**31 - 1, -2, -2**31, int(rng.integers(0, max(n_t, 1)))])
        return v, (v >= n_t or v < -1)
    if k == "buffer_index":
        v = pick([facts["buffers"], facts["buffers"] + 100, 2**32 - 1, int(rng.integers(0, max(facts["buffers"], 1)))])
        return v, v >= facts["buffers"]
    if k == "opcode_index":
        v = pick([facts["opcodes"], 2**32 - 1, int(rng.integers(0, max(facts["opcodes"], 1)))])
        return v, v >= facts["opcodes"]
    if k == "shape_dim":
        v = pick([-1, -2**31, 0, 1 << 30, 2**31 - 1, 524288, int(rng.integers(0, 300))])
        return v, v < 0
    if k == "scale":
        v = pick([0.0, -1.0, float("nan"), float("inf"), float("-inf"), 1e-45, 3e38, -1.1e25,
                  float(rng.uniform(1e-6, 10))])
        return v, not (np.isfinite(v) and v > 0)
    if k == "zero_point":
        lo, hi = f.info["range"] or (-2**63, 2**63 - 1)
        v = pick([-2**63, 2**63 - 1, lo - 1, hi + 1, 128, -129, 255, 256, int(rng.integers(-200, 300))])
        return v, f.info["range"] is not None and not lo <= v <= hi
    if k == "quant_axis":
        return pick([-1, 4, 100, 2**31 - 1, 1, 0]), False
    if k == "tensor_type":
        return int(rng.integers(-1, 20)), False
    if k in ("stride", "dilation", "filter"):
        v = pick([0, -1, -2**31, 524288, 1 << 20, 2**31 - 1, int(rng.integers(1, 5))])
        return v, v < 1
    if k == "depth_multiplier":
        v = pick([-1, 0, 1000, 2**31 - 1, 2])
        return v, v < 0
    if k == "padding":
        v = pick([2, 7, 255, 0, 1])
        return v, v > 1
    if k == "activation":
        v = pick([6, 9, 255, 0, 1, 3, 4, 5])
        return v, v > 5
    if k == "concat_axis":
        return pick([-100, 100, 2**31 - 1, -2**31, 0, -1]), False
    if k == "operators_length":
        out_produced = any(t not in facts["graph_inputs"] and t not in facts["consts"] for t in facts["graph_outputs"])
        return 0, out_produced  # zero operators
    raise AssertionError(k)


_OPTION_KINDS = {"stride", "dilation", "filter", "depth_multiplier", "padding", "activation"}
# Edits that can make another edit's fault disappear (the op is gone, now reads other options, the
# tensor has another type...): with one of these in the same case, that fault no longer certainly
# makes the model invalid.
_UNDOES = {k: {"operators_length", "opcode_index"} for k in _OPTION_KINDS}
_UNDOES.update({"op_input": {"operators_length", "op_output"}, "op_output": {"operators_length"},
                "opcode_index": {"operators_length"}, "operators_length": {"graph_input", "graph_output"},
                "zero_point": {"tensor_type"}})


@dataclass
class Mutant:
    data: bytes
    description: str
    must_fail: bool = False


def mutate(models: list[tuple[str, bytes]], seed: int, case: int) -> Mutant:
    """The deterministic mutant number ``case`` of campaign ``seed``."""
    rng = np.random.default_rng([seed, case])
    name, data = models[int(rng.integers(len(models)))]
    buf = bytearray(data)
    r = rng.random()
    if r < 0.15:
        n = int(rng.integers(1, 9))
        for _ in range(n):
            p = int(rng.integers(len(buf)))
            buf[p] = buf[p] ^ (1 << int(rng.integers(8))) if rng.random() < 0.5 else int(rng.integers(256))
        return Mutant(bytes(buf), f"{name}: {n} byte flip(s)")
    if r < 0.22:
        n = int(rng.integers(0, len(buf)))
        return Mutant(bytes(buf[:n]), f"{name}: truncated to {n} bytes")
    if r < 0.30:
        _, other = models[int(rng.integers(len(models)))]
        size = int(rng.integers(1, 65))
        src = int(rng.integers(0, max(len(other) - size, 1)))
        dst = int(rng.integers(0, max(len(buf) - size, 1)))
        buf[dst:dst + size] = other[src:src + size]
        return Mutant(bytes(buf), f"{name}: {size} bytes spliced at {dst}")
    fields, facts = locate_fields(data)
    by_kind: dict[str, list[int]] = {}
    for k, f in enumerate(fields):
        by_kind.setdefault(f.kind, []).append(k)
    kinds = sorted(by_kind)  # a kind first (uniformly), then one of its fields: rare kinds get their share
    chosen = {int(rng.choice(by_kind[kinds[int(rng.integers(len(kinds)))]])) for _ in range(int(rng.integers(1, 4)))}
    must_fail, what = False, []
    kinds_edited = {fields[int(ci)].kind for ci in chosen}
    for ci in chosen:
        f = fields[int(ci)]
        v, invalid = _hostile(f, facts, rng)
        struct.pack_into(f.fmt, buf, f.pos, _fit(f.fmt, v))
        must_fail |= invalid and not (kinds_edited & _UNDOES.get(f.kind, set()))
        what.append(f"{f.kind}{f.info if f.info.get('op', f.info.get('tensor')) is not None else ''}={v}")
    return Mutant(bytes(buf), f"{name}: " + ", ".join(what), must_fail)


def _fit(fmt: str, v):
    """Wrap an int into the field's width (e.g. -1 into a uint32 is 0xFFFFFFFF)."""
    if fmt in ("<f",):
        return float(v)
    bits = struct.calcsize(fmt) * 8
    v = int(v) & ((1 << bits) - 1)
    if fmt[1].islower() and v >= 1 << (bits - 1):
        v -= 1 << bits
    return v


# ------------------------------------------------------------------ one case

def run_case(m: Mutant, tmp: Path) -> dict:
    """load -> prepare -> run -> summarize -> codegen on one mutant; the outcome as a dict."""
    import shutil
    import traceback
    import warnings

    from .codegen.emit import generate
    from qsim.accel.config import load_hw
    from qsim.accel.profile import profile_graph
    from qsim import inputs as qin, report
    from qsim.errors import QsimError
    from qsim.interpreter import prepare_graph
    from qsim.loader import load_bytes

    t0 = time.perf_counter()
    outcome, error, ran = "ok", "", False
    model = tmp / "m.tflite"
    model.write_bytes(m.data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            try:  # inspect's path: never raises but QsimError for unreadable files
                g0 = load_bytes(m.data, source="mutant", validate=False)
                report.render_summary(report.summarize(g0))
            except QsimError:
                pass
            g = load_bytes(m.data, source="mutant")
            prep = prepare_graph(g, "tflm")
            x = qin.random_inputs(g, 1, seed=0)[0]
            prep.run(x, keep_all=False)
            ran = True
            out = tmp / "c"
            shutil.rmtree(out, ignore_errors=True)
            generate(str(model), out, name="net", force=True)
            profile_graph(g, load_hw(), x, prepared=prep)
    except QsimError as e:
        outcome, error = "qsim", str(e).splitlines()[0][:200]
    except BaseException as e:  # noqa: BLE001 - the point is to catch every other exception
        if isinstance(e, KeyboardInterrupt):
            raise
        tb = traceback.extract_tb(e.__traceback__)
        site = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
        outcome, error = "other", f"{type(e).__name__} at {site}: {str(e)[:200]}"
    secs = time.perf_counter() - t0
    silent = m.must_fail and ran
    return {"outcome": outcome, "error": error, "secs": secs, "silent": silent, "must_fail": m.must_fail,
            "desc": m.description,
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def _worker(seed: int, paths: list[str]) -> None:
    import tempfile
    models = load_seeds(paths)
    from .codegen import emit  # noqa: F401  (import everything before capping the address space)
    import qsim.accel.profile  # noqa: F401
    import qsim.interpreter  # noqa: F401
    import qsim.report  # noqa: F401
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + MEMORY_LIMIT, vm + MEMORY_LIMIT))
    with tempfile.TemporaryDirectory() as d:
        for line in sys.stdin:
            case = int(line)
            res = run_case(mutate(models, seed, case), Path(d))
            res["case"] = case
            print(json.dumps(res), flush=True)


# ------------------------------------------------------------------ campaign driver

SEED_MODELS = ["ad01_int8", "hello_world_int8", "keyword_scrambled_8bit", "kws_ref_model", "micro_speech_quantized",
               "person_detect", "pretrainedResnet_quant", "trained_lstm_int8", "vww_96_int8"]


def options_model() -> bytes:
    """A valid int8 model written with every default field stored (qsim.builder, force_defaults), so
    that dilations, concatenation axes, paddings... exist in the file to be mutated (the published
    models omit fields equal to their defaults).  CONV_2D -> DEPTHWISE (dilation 2) -> MAX_POOL ->
    CONCATENATION -> RESHAPE -> FULLY_CONNECTED -> SOFTMAX."""
    from . import ir
    from .builder import ModelBuilder
    rng = np.random.default_rng(0)
    b = ModelBuilder(description="qsim.fuzz options model")
    x = b.add_input("x", (1, 8, 8, 2), np.int8, scale=0.05, zero_point=0)
    w1 = b.add_const("w1", rng.integers(-127, 128, (4, 3, 3, 2)).astype(np.int8), scale=[0.01, 0.02, 0.01, 0.03],
                     zero_point=0, axis=0)
    b1 = b.add_const("b1", rng.integers(-500, 500, 4).astype(np.int32), scale=[5e-4, 1e-3, 5e-4, 1.5e-3], zero_point=0)
    y1 = b.add_tensor("y1", (1, 8, 8, 4), np.int8, scale=0.1, zero_point=-3)
    b.add_op("CONV_2D", [x, w1, b1], [y1], ir.Conv2DOptions(padding="SAME", activation="RELU"))
    w2 = b.add_const("w2", rng.integers(-127, 128, (1, 3, 3, 4)).astype(np.int8), scale=0.02, zero_point=0)
    y2 = b.add_tensor("y2", (1, 8, 8, 4), np.int8, scale=0.1, zero_point=-3)
    b.add_op("DEPTHWISE_CONV_2D", [y1, w2, -1], [y2], ir.DepthwiseConv2DOptions(dilation_h=2, dilation_w=2,
                                                                                 depth_multiplier=1))
    y3 = b.add_tensor("y3", (1, 4, 4, 4), np.int8, scale=0.1, zero_point=-3)
    b.add_op("MAX_POOL_2D", [y2], [y3], ir.Pool2DOptions("VALID", 2, 2, 2, 2))
    y4 = b.add_tensor("y4", (1, 4, 4, 8), np.int8, scale=0.1, zero_point=-3)
    b.add_op("CONCATENATION", [y3, y3], [y4], ir.ConcatenationOptions(axis=3))
    shape = b.add_const("shape", np.array([1, 128], np.int32))
    y5 = b.add_tensor("y5", (1, 128), np.int8, scale=0.1, zero_point=-3)
    b.add_op("RESHAPE", [y4, shape], [y5], ir.ReshapeOptions((1, 128)))
    w3 = b.add_const("w3", rng.integers(-127, 128, (10, 128)).astype(np.int8), scale=0.01, zero_point=0)
    b3 = b.add_const("b3", rng.integers(-500, 500, 10).astype(np.int32), scale=1e-3, zero_point=0)
    y6 = b.add_tensor("y6", (1, 10), np.int8, scale=0.2, zero_point=0)
    b.add_op("FULLY_CONNECTED", [y5, w3, b3], [y6], ir.FullyConnectedOptions())
    y7 = b.add_tensor("y7", (1, 10), np.int8, scale=1 / 256, zero_point=-128)
    b.add_op("SOFTMAX", [y6], [y7], ir.SoftmaxOptions(1.0))
    b.mark_output(y7)
    return b.build(force_defaults=True)


def load_seeds(paths: list[str]) -> list[tuple[str, bytes]]:
    """(name, bytes) of the seed model files, plus :func:`options_model`."""
    return [(Path(p).name, Path(p).read_bytes()) for p in paths] + [("options_model", options_model())]


def seed_models(repo: Path) -> list[str]:
    """The shared int8 models present in ``repo``/../shared/models, then the demo model
    (the campaign adds :func:`options_model`)."""
    shared = Path(repo).resolve().parent / "shared" / "models"
    paths = [str(shared / f"{n}.tflite") for n in SEED_MODELS if (shared / f"{n}.tflite").is_file()]
    return paths + [str(Path(repo) / "examples" / "models" / "demo_cnn_int8.tflite")]


@dataclass
class Campaign:
    cases: int = 0
    ok: int = 0
    qsim_error: int = 0
    must_fail: int = 0  # mutants invalid by construction (each must end in QsimError)
    other: list = field(default_factory=list)  # (case, error, description)
    silent: list = field(default_factory=list)
    slow: list = field(default_factory=list)
    hangs: list = field(default_factory=list)
    max_secs: float = 0.0
    max_rss_kib: int = 0

    @property
    def failures(self) -> list:
        return self.other + self.silent + self.slow + self.hangs

    def summary(self) -> str:
        return (f"cases {self.cases}: ok {self.ok}, QsimError {self.qsim_error}, other exceptions "
                f"{len(self.other)}, silent runs of invalid models {len(self.silent)} (of {self.must_fail} invalid "
                f"by construction), slow (>{CASE_SECONDS:g} s) "
                f"{len(self.slow)}, hangs {len(self.hangs)}; slowest case {self.max_secs:.2f} s, "
                f"worker max RSS {self.max_rss_kib / 1024:.0f} MiB")


def campaign(paths: list[str], seed: int, cases, env: dict | None = None, progress=None) -> Campaign:
    """Run ``cases`` (an iterable of case numbers) through worker processes; restart after a hang."""
    import select
    res = Campaign()
    todo = list(cases)
    env = dict(os.environ if env is None else env, OPENBLAS_NUM_THREADS="1")
    while todo:
        w = subprocess.Popen([sys.executable, "-m", "qsim.fuzz", "worker", str(seed), *paths],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        try:
            while todo:
                case = todo[0]
                w.stdin.write(f"{case}\n")
                w.stdin.flush()
                ready, _, _ = select.select([w.stdout], [], [], HANG_SECONDS + (30 if res.cases == 0 else 0))
                line = w.stdout.readline() if ready else ""
                todo.pop(0)
                res.cases += 1
                if not line:
                    res.hangs.append((case, "no answer (hang or worker died)", ""))
                    break
                r = json.loads(line)
                res.max_secs = max(res.max_secs, r["secs"])
                res.max_rss_kib = max(res.max_rss_kib, r["maxrss_kib"])
                if r["outcome"] == "ok":
                    res.ok += 1
                elif r["outcome"] == "qsim":
                    res.qsim_error += 1
                else:
                    res.other.append((case, r["error"], r["desc"]))
                res.must_fail += r["must_fail"]
                if r["silent"]:
                    res.silent.append((case, "invalid model ran", r["desc"]))
                if r["secs"] > CASE_SECONDS:
                    res.slow.append((case, f"{r['secs']:.1f} s", r["desc"]))
                if progress and res.cases % 500 == 0:
                    progress(res)
        finally:
            w.kill()
            w.wait()
    return res


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "worker":
    _worker(int(sys.argv[2]), sys.argv[3:])
