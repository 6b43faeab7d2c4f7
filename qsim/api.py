"""qsim's Python API: ``qsim.load(path) -> Model``, and everything a Model can do.

    import qsim
    m = qsim.load("model.tflite")                    # or qsim.load(blob_bytes)
    m.inputs[0].shape, m.inputs[0].scale              # TensorInfo: name, index, shape, dtype, quantization
    x = m.inputs[0].quantize(real_values)            # real -> int8 with the tensor's own scale / zero point
    r = m.run(x)                                     # RunResult, keyed by tensor name (or index)
    r.outputs, r.dequantized(), r.top_k(3)
    r = m.run([x0, x1, x2])                          # a list of samples (or an [N, ...] array): batched result
    m.check(inputs=5, reference="both").ok           # every tensor vs LiteRT BUILTIN_REF and TFLite Micro
    m.profile(hw="edge16", rows=32, cols=32)         # the accelerator model: per-layer records, totals
    m.codegen("out/", name="net", inputs=x)          # C99 firmware (+ input.bin / expected.bin for `make check`)

Conventions.  Tensors are NHWC as in the .tflite file; real = scale * (q - zero_point),
per channel along ``TensorInfo.axis``.  A *sample* is one input set: an array (single-input
models), a ``{name or index: array}`` dict, or a list/tuple of arrays in graph input order.
``Model.run`` takes one sample, a list of samples, or arrays with a leading batch axis of N
in place of the model's batch dimension 1; a batched result carries that leading axis N.
Results and inputs are keyed by tensor name; a name that several tensors share is refused
(say which, and give the index); ``TensorInfo.key`` is the name, or ``"name#index"`` for
such duplicates.  Every bad input raises :class:`qsim.errors.QsimError`.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

from . import fixedpoint as fp
from . import inputs as qin
from . import ir
from . import reference as ref
from .errors import QsimError
from .interpreter import PreparedGraph, conform_shape, has_batch1, prepare_graph
from .profiles import get_profile

__all__ = ["load", "Model", "TensorInfo", "RunResult", "TopK", "CheckReport", "ProfileReport"]

Key = Union[str, int]
KEEP = ("outputs", "all")
ENGINES = ("auto", "python", "native")
# engine="auto" runs natively from the HOT_RUNS-th run of a Model (per profile) it would run
# natively on: the one-time build (C generation + gcc: measured ~5 s for the first model, which
# also compiles the qkernels objects, 0.3-1.5 s per further model, 0.1-0.5 s from the cache, at load
# ~3.7 on 2 CPUs) is then amortized, and a model run a few times never pays it.
HOT_RUNS = 32



# ------------------------------------------------------------------ tensors

@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the model: identity, shape, type and affine quantization.

    ``scales`` / ``zero_points`` hold one value (per tensor) or one per channel along
    ``axis`` (TFLite's quantized_dimension); ``scale`` / ``zero_point`` are the single
    per-tensor values (None when per channel or unquantized).  Real = scale * (q - zero_point).
    """

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scales: np.ndarray | None
    zero_points: np.ndarray | None
    axis: int | None
    is_const: bool
    key: str  # the name, or "name#index" when other tensors share the name

    @classmethod
    def of(cls, t: ir.Tensor, key: str) -> "TensorInfo":
        """The TensorInfo of an IR tensor."""
        q = t.quant
        return cls(t.name, t.index, tuple(t.shape), np.dtype(t.dtype),
                   None if q is None else np.asarray(q.scale, np.float64),
                   None if q is None else np.asarray(q.zero_point, np.int64),
                   None if q is None else int(q.axis), t.is_const, key)

    @property
    def per_channel(self) -> bool:
        """True when quantized with one scale per channel along ``axis``."""
        return self.scales is not None and self.scales.size > 1

    @property
    def scale(self) -> float | None:
        """The per-tensor scale (None when per channel or unquantized)."""
        return None if self.scales is None or self.per_channel else float(self.scales[0])

    @property
    def zero_point(self) -> int | None:
        """The per-tensor zero point (None when per channel or unquantized)."""
        return None if self.zero_points is None or self.per_channel else int(self.zero_points[0])

    def _broadcast(self, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Per-tensor values as a scalar; per-channel ones shaped to broadcast along ``axis`` of an
        array of ``shape`` (the tensor's shape, or one with a leading batch axis)."""
        if values.size == 1:
            return values.reshape(())
        ax = self.axis - len(self.shape) + len(shape)
        if ax < 0 or shape[ax] != values.size:
            raise QsimError(f"tensor '{self.name}' is quantized per channel ({values.size} channels along axis "
                            f"{self.axis} of {list(self.shape)}); an array of shape {list(shape)} does not match.")
        out = [1] * len(shape)
        out[ax] = values.size
        return values.reshape(out)

    def _need_quant(self, what: str) -> None:
        if self.scales is None or not np.issubdtype(self.dtype, np.integer):
            raise QsimError(f"tensor '{self.name}' ({self.dtype}) has no quantization parameters; "
                            f"there is nothing to {what}.")

    def quantize(self, x) -> np.ndarray:
        """Real values -> this tensor's integer type: TFLite's QUANTIZE rule
        (:func:`qsim.fixedpoint.quantize_affine`: round half away from zero, clamp to the dtype)."""
        self._need_quant("quantize with")
        a = np.asarray(x)
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise QsimError(f"cannot quantize {a.dtype} data for '{self.name}': give numbers.")
        if not np.all(np.isfinite(a)):
            raise QsimError(f"data to quantize for '{self.name}' contains NaN or infinity.")
        info = np.iinfo(self.dtype)
        return fp.quantize_affine(a, self._broadcast(self.scales, a.shape), self._broadcast(self.zero_points, a.shape),
                                  int(info.min), int(info.max), dtype=self.dtype)

    def dequantize(self, q) -> np.ndarray:
        """Integers -> real values (float64): scale * (q - zero_point)."""
        self._need_quant("dequantize with")
        a = np.asarray(q)
        if not np.issubdtype(a.dtype, np.integer):
            raise QsimError(f"dequantize expects integers for '{self.name}', got {a.dtype}.")
        return (self._broadcast(self.scales, a.shape)
                * (a.astype(np.float64) - self._broadcast(self.zero_points, a.shape)))

    def as_dict(self) -> dict:
        """JSON-ready description."""
        return {"name": self.name, "index": self.index, "shape": list(self.shape), "dtype": str(self.dtype),
                "scale": self.scale, "zero_point": self.zero_point,
                "scales": None if self.scales is None else self.scales.tolist(),
                "zero_points": None if self.zero_points is None else self.zero_points.tolist(), "axis": self.axis}


# ------------------------------------------------------------------ results

@dataclass(frozen=True)
class TopK:
    """One of the k largest entries of a row of class scores."""

    index: int  # class index in the last axis
    real: float  # dequantized score
    q: int  # the integer

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {"index": self.index, "real": self.real, "q": self.q}


def _real(info: TensorInfo, q: np.ndarray) -> np.ndarray:
    """Dequantized values of a per-tensor quantized tensor, else the values as float64."""
    if info.scale is not None:
        return info.dequantize(q)
    return np.asarray(q).astype(np.float64)


def _top_k_row(real: np.ndarray, q: np.ndarray, k: int) -> list[TopK]:
    """The k largest of one row of class scores; ties keep the lower index first."""
    order = np.argsort(-real, kind="stable")[:k]
    return [TopK(int(i), float(real[i]), int(q[i])) for i in order]


@dataclass
class RunResult:
    """Tensors of one run, keyed by tensor name (``result["name"]``; an index works too).

    ``batch`` is None for a single sample (arrays have the tensors' shapes) or N for a
    batched run (arrays have a leading axis of N in place of the batch dimension 1).
    """

    model: "Model"
    values: dict[int, np.ndarray]  # tensor index -> integers
    profile: str
    batch: int | None = None
    requant: Any = None  # run(requant=...): qsim.evaluate.VariantDiff against the profile's own arithmetic
    engine: str = "python"  # the engine that ran it: "python" or "native" (Model.run's engine=)

    def __getitem__(self, key: Key) -> np.ndarray:
        t = self.model.tensor(key)
        if t.index not in self.values:
            raise QsimError(f"tensor '{t.name}' was not kept by this run; run with keep='all'.")
        return self.values[t.index]

    def __contains__(self, key: Key) -> bool:
        try:
            return self.model.tensor(key).index in self.values
        except QsimError:
            return False

    @property
    def outputs(self) -> dict[str, np.ndarray]:
        """Graph outputs, {key: integer array}, in graph output order."""
        return {t.key: self.values[t.index] for t in self.model.outputs}

    @property
    def tensors(self) -> dict[str, np.ndarray]:
        """Every tensor this run kept (the outputs, or inputs and all op outputs with keep='all')."""
        return {self.model.tensors[i].key: v for i, v in sorted(self.values.items())}

    def dequantized(self, which: str = "outputs") -> dict[str, np.ndarray]:
        """Real values (float64) of the outputs (``which="outputs"``) or of every kept tensor ("all");
        tensors without per-tensor quantization are returned as float64 values unchanged."""
        if which not in KEEP:
            raise QsimError(f"dequantized(which=...) takes 'outputs' or 'all', got {which!r}.")
        keys = [t.index for t in self.model.outputs] if which == "outputs" else sorted(self.values)
        return {self.model.tensors[i].key: _real(self.model.tensors[i], self.values[i]) for i in keys}

    def top_k(self, k: int = 5, output: Key | None = None) -> list:
        """The k largest scores of an output (default: the first) whose values are one row of classes.

        A single sample gives a list of :class:`TopK`; a batched run one such list per sample.
        An output with more than one row per sample (not class scores) gives [].
        """
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
            raise QsimError(f"top-k must be an integer >= 0, got {k!r}.")
        info = self.model.outputs[0] if output is None else self.model.tensor(output)
        q = np.asarray(self[info.index])
        rows = [q] if self.batch is None else list(q)
        out = []
        for row in rows:
            real = _real(info, row)
            flat = real.reshape(-1, real.shape[-1]) if real.ndim else real.reshape(1, 1)
            out.append(_top_k_row(flat[0], np.asarray(row).reshape(-1), int(k)) if k and flat.shape[0] == 1 else [])
        return out[0] if self.batch is None else out

    def output_docs(self, k: int = 5) -> list:
        """Per graph output: name, index, shape, dtype, scale, zero point, q, real and top-k
        (what ``qsim run --json`` prints); a batched run gives one such list per sample."""
        if self.batch is not None:
            return [self.sample(i).output_docs(k) for i in range(self.batch)]
        docs = []
        for info in self.model.outputs:
            q = np.asarray(self.values[info.index])
            docs.append({"name": info.name, "index": info.index, "shape": list(q.shape), "dtype": str(q.dtype),
                         "scale": info.scale, "zero_point": info.zero_point, "q": q.tolist(),
                         "real": _real(info, q).tolist(),
                         "top_k": [t.as_dict() for t in self.top_k(k, info.index)]})
        return docs

    def sample(self, i: int) -> "RunResult":
        """Sample ``i`` of a batched result, as a single-sample result."""
        if self.batch is None:
            if i != 0:
                raise QsimError(f"this result holds one sample; sample({i}) does not exist.")
            return self
        if not 0 <= i < self.batch:
            raise QsimError(f"sample {i} out of range: the batch holds {self.batch}.")
        vals = {t: v[i:i + 1].reshape(self.model.graph.tensors[t].shape) for t, v in self.values.items()}
        return RunResult(self.model, vals, self.profile, None)

    def save(self, path: str | Path) -> Path:
        """Write every kept tensor to an .npz archive, one array per tensor key (name)."""
        p = Path(path)
        try:
            with open(p, "wb") as f:
                np.savez(f, **self.tensors)
        except OSError as e:
            raise QsimError(f"cannot write {p}: {e.strerror or e}") from None
        return p


@dataclass
class CheckReport:
    """qsim vs the reference interpreters over ``n_inputs`` inferences (from :func:`qsim.reference.check`).

    ``comparisons``: one :class:`qsim.reference.Comparison` per reference (per-op rows in
    ``.layers``); ``xnnpack``: LiteRT's default kernels vs BUILTIN_REF on the outputs
    (informational), or a reason string, or None when not measured.
    """

    model: str
    inputs: str  # where the inputs came from
    n_inputs: int
    comparisons: list
    ok: bool
    xnnpack: Any = None
    warnings: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[dict]:
        """Per reference and op output tensor: mismatching elements and max |diff| (LSB)."""
        return [{"reference": c.reference, "profile": c.profile, **d.as_dict()}
                for c in self.comparisons if c.refused is None for d in c.layers]

    @property
    def first_divergence(self) -> dict | None:
        """The first op output (in execution order, first reference first) that differs, or None."""
        return next((r for r in self.rows if r["mismatches"]), None)

    def to_dict(self) -> dict:
        """JSON-ready report (what ``qsim check --json`` prints)."""
        return {"model": self.model, "inputs": self.inputs, "ok": self.ok, "exit_code": 0 if self.ok else 1,
                "warnings": self.warnings, "comparisons": [c.as_dict() for c in self.comparisons],
                "first_divergence": self.first_divergence,
                "xnnpack_vs_reference": (self.xnnpack if self.xnnpack is None or isinstance(self.xnnpack, str)
                                         else [d.as_dict() for d in self.xnnpack])}

    def __str__(self) -> str:
        from . import report
        lines = [f"model: {self.model}  inputs: {self.inputs}"]
        for c in self.comparisons:
            lines += ["", report.render_comparison(c)]
        x = self.xnnpack
        if x is not None:
            lines.append("\ninformational: LiteRT default kernels (XNNPACK) vs LiteRT BUILTIN_REF, graph outputs:")
            if isinstance(x, str):
                lines.append("  " + x)
            else:
                lines += [f"  '{d.name}': {d.mismatches} of {d.elements * self.n_inputs} elements differ, "
                          f"max |diff| {d.max_diff} LSB" for d in x]
        lines.append("\nRESULT: " + ("bit-exact" if self.ok else "MISMATCH"))
        return "\n".join(lines)


@dataclass
class ProfileReport:
    """The accelerator model's estimate (:class:`qsim.accel.profile.ProfileResult` in ``result``).

    ``layers``: one record per op (cycles, utilization, DRAM bytes, bound, accumulator
    range...); ``totals``: whole-model figures.  Cycles at ``result.cfg.clock_mhz``.
    """

    result: Any

    @property
    def layers(self) -> list[dict]:
        """Per-layer records (dicts, the JSON/CSV fields)."""
        return [L.as_dict() for L in self.result.layers]

    @property
    def totals(self) -> dict:
        """Whole-model totals: cycles, latency_ms, MAC utilization, DRAM bytes, datapath statistics."""
        return self.result.totals

    @property
    def hw(self):
        """The :class:`qsim.accel.config.HwConfig` that was modelled."""
        return self.result.cfg

    def to_json(self, indent: int | None = 2) -> str:
        """One JSON document: model, input, hardware, totals, layers."""
        return json.dumps(self.result.as_dict(), indent=indent)

    def to_csv(self, path: str | Path | None = None) -> str:
        """The per-layer table as CSV text (also written to ``path`` when given)."""
        from .accel import report
        return write_csv_text(report.csv_text(self.result), path)

    def trace(self, path: str | Path) -> Path:
        """Write a Chrome/Perfetto trace-event JSON file (open in ui.perfetto.dev)."""
        from .accel import trace
        if not any(L.timing.events for L in self.result.layers) and self.totals.get("cycles"):
            raise QsimError("this profile was made without trace events; call profile(..., events=True).")
        trace.write_trace(self.result, path)
        return Path(path)

    def roofline(self, path: str | Path) -> Path:
        """Write each MAC-array layer on a roofline (PNG, needs matplotlib): MACs per DRAM byte vs
        achieved MACs per cycle, under the array's compute roof and the DRAM roof."""
        from .accel.plots import roofline
        return roofline(self.result, path)

    def to_pandas(self):
        """The per-layer records as a pandas DataFrame (needs pandas installed)."""
        try:
            import pandas as pd
        except ImportError:
            raise QsimError("to_pandas() needs pandas (pip install pandas); to_csv() and layers need nothing.") from None
        return pd.DataFrame(self.layers)

    def __str__(self) -> str:
        from .accel import report
        return report.table(self.result)


def write_csv_text(text: str, path: str | Path | None) -> str:
    """Write CSV ``text`` to ``path`` (when given, UTF-8) and return it; an unwritable path is a QsimError."""
    if path is not None:
        try:
            Path(path).write_text(text, encoding="utf-8")
        except OSError as e:
            raise QsimError(f"cannot write CSV to {path}: {e.strerror or e}") from None
    return text


# ------------------------------------------------------------------ the model

def load(model: "str | Path | bytes | bytearray | Model", name: str | None = None,
         validate: bool = True) -> "Model":
    """Open a .tflite model from a path or from bytes (``name`` labels bytes in messages).

    Loading parses the file and validates the whole model (:mod:`qsim.validate`: indices,
    arity, shapes, quantization, data flow, options), raising :class:`qsim.errors.InvalidModelError`
    with every violation; ``validate=False`` keeps an invalid model for :meth:`Model.summary`
    (every other method validates again before it runs).  Ops are prepared on first use
    (``run``/``check``/``profile``/``codegen``), so models with unsupported ops can still be inspected.
    """
    if isinstance(model, Model):
        return model
    if isinstance(model, memoryview):
        model = bytes(model)
    if not isinstance(model, (str, Path, bytes, bytearray)):
        raise QsimError(f"qsim.load expects a path or the bytes of a .tflite file, got {type(model).__name__}.")
    m = ref.Model.open(model, source=name or "<bytes>", validate=validate)
    return Model(m.blob, m.graph, m.path)


class Model:
    """A loaded int8 TFLite model: its tensors, and run / check / profile / codegen.

    Prepared graphs (multipliers, shifts, LUTs) are built once per rounding profile and cached.
    """

    def __init__(self, blob: bytes, graph: ir.Graph, path: str | None = None):
        self.blob = blob
        self.graph = graph
        self.path = path
        counts = Counter(t.name for t in graph.tensors)
        self.tensors: list[TensorInfo] = [
            TensorInfo.of(t, t.name if counts[t.name] == 1 else f"{t.name}#{t.index}") for t in graph.tensors]
        self._by_key = {t.key: t for t in self.tensors}
        self._dup = {n for n, c in counts.items() if c > 1}
        self._prepared: dict[str, PreparedGraph] = {}
        self._native: dict[str, Any] = {}  # profile -> native_model.NativeModel | QsimError (why not)
        self._auto_runs: dict[str, int] = {}  # profile -> runs auto could give native so far (see _engine)
        self._batch_native: dict[tuple, bool] = {}  # (profile, N.bit_length()) -> native measured faster

    def __repr__(self) -> str:
        return (f"<qsim.Model {self.source}: {len(self.graph.operators)} ops, inputs "
                f"{[(t.name, list(t.shape), str(t.dtype)) for t in self.inputs]}>")

    @property
    def source(self) -> str:
        """The file path, or the name given to the bytes."""
        return self.path or self.graph.source or "<bytes>"

    @property
    def inputs(self) -> list[TensorInfo]:
        """The graph inputs, in order."""
        return [self.tensors[i] for i in self.graph.inputs]

    @property
    def outputs(self) -> list[TensorInfo]:
        """The graph outputs, in order."""
        return [self.tensors[i] for i in self.graph.outputs]

    def tensor(self, key: Key) -> TensorInfo:
        """A tensor by name (or ``TensorInfo.key``) or by index."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if not 0 <= int(key) < len(self.tensors):
                raise QsimError(f"tensor index {key} out of range: the model has {len(self.tensors)} tensors.")
            return self.tensors[int(key)]
        if isinstance(key, TensorInfo):
            return self.tensors[key.index]
        if not isinstance(key, str):
            raise QsimError(f"a tensor is named by its name (str) or index (int), got {type(key).__name__}.")
        if key in self._dup:
            idx = [t.index for t in self.tensors if t.name == key]
            raise QsimError(f"tensor name '{key}' is used by {len(idx)} tensors (indices {idx}); "
                            f"name one by its index or key ('{key}#{idx[0]}').")
        if key not in self._by_key:
            names = ", ".join(repr(t.name) for t in self.inputs + self.outputs)
            raise QsimError(f"no tensor named '{key}' in {self.source} (inputs and outputs: {names}).")
        return self._by_key[key]

    def summary(self) -> dict:
        """What ``qsim inspect`` shows, as a dict (:func:`qsim.report.summarize`): ops, tensors,
        quantization, MACs, unsupported ops, and ``"invalid"``: the validation problems."""
        from . import report
        return report.summarize(self.graph)

    def prepared(self, profile: str = "tflm", requant=None) -> PreparedGraph:
        """The graph prepared under a rounding profile (tflm, litert, single); cached.

        ``requant``: a requant arithmetic variant for the GEMM ops (CONV_2D, DEPTHWISE_CONV_2D,
        FULLY_CONNECTED): "double", "single", "float32", "shift-only", "shift=N", "mult-bits=N",
        "truncate" (:class:`qsim.fixedpoint.RequantVariant`); None = the profile's own arithmetic."""
        name = get_profile(profile).name
        variant = None if requant is None else fp.parse_requant_variant(requant)
        key = name if variant is None else f"{name}+{variant}"
        if key not in self._prepared:
            self._prepared[key] = prepare_graph(self.graph, name, variant)
        return self._prepared[key]

    # -------------------------------------------------------------- inputs

    def random_inputs(self, n: int = 1, seed: int = 0) -> list[list[np.ndarray]]:
        """``n`` samples uniform over each input dtype's range (``np.random.default_rng(seed)``)."""
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise QsimError(f"the number of random inputs must be at least 1, got {n!r}.")
        return qin.random_inputs(self.graph, int(n), seed=seed)

    def read_inputs(self, path: str | Path, float_input: bool = False,
                    image_mode: str = "shift") -> tuple[dict[str, np.ndarray], list[str]]:
        """Read samples from a file (.npy/.npz/.bmp/.png, see :mod:`qsim.inputs`).

        Returns ({input key: array}, warnings), which :meth:`run`, :meth:`check`,
        :meth:`profile` and :meth:`codegen` take.  An .npy whose array has a leading batch
        axis of N (in place of the input's batch dimension 1) holds N samples; the array
        keeps that axis.
        """
        p = Path(path)
        keys = [t.key for t in self.inputs]
        if p.suffix.lower() == ".npy" and len(self.graph.inputs) == 1 and p.is_file():
            t = self.graph.tensors[self.graph.inputs[0]]
            try:
                a = np.load(p, allow_pickle=False)
            except Exception:
                a = None  # load_inputs below reports it
            if isinstance(a, np.ndarray) and _batch_axis(a, t) and a.shape[0] != 1:
                guard = [w for w in [qin.range_guard(a, t, float_input)] if w]
                if float_input:
                    q = [qin.quantize_real(s, t) for s in a.reshape(a.shape[0], *t.shape)]
                    return {keys[0]: np.concatenate([s for s, _ in q])}, guard + sorted({w for _, w in q if w})
                return ({keys[0]: np.concatenate([qin.coerce_integer(s, t) for s in a.reshape(a.shape[0], *t.shape)])},
                        guard)
        loaded = qin.load_inputs(p, self.graph, float_input=float_input, image_mode=image_mode)
        return dict(zip(keys, loaded.arrays)), loaded.warnings

    def _batch(self, x) -> tuple[dict[int, np.ndarray], bool]:
        """Any accepted input form -> ({input index: [N, ...] array}, batched)."""
        g = self.graph
        if isinstance(x, (list, tuple)):
            if not x:
                raise QsimError("no input given: an empty list.")
            one_sample = len(g.inputs) > 1 and len(x) == len(g.inputs) and all(
                isinstance(a, np.ndarray) for a in x)
            if not one_sample:  # a list of samples
                samples = []
                for k, s in enumerate(x):
                    one, batched = self._sample(s)
                    if batched:
                        raise QsimError(f"element {k} of the list holds {next(iter(one.values())).shape[0]} "
                                        "samples; a list holds one sample per element (or pass one array "
                                        "with a leading batch axis).")
                    samples.append(one)
                return {t: np.concatenate([s[t] for s in samples]) for t in g.inputs}, True
        return self._sample(x)

    def _sample(self, x) -> tuple[dict[int, np.ndarray], bool]:
        """One sample (an array, {key: array} or arrays in input order; arrays may carry a batch axis)."""
        g = self.graph
        if isinstance(x, Mapping):
            items = {self.tensor(k).index: v for k, v in x.items()}
            extra = [self.tensors[i].name for i in items if i not in g.inputs]
            if extra:
                raise QsimError(f"{', '.join(map(repr, extra))} is not an input of the model; inputs: "
                                f"{', '.join(repr(t.name) for t in self.inputs)}.")
        elif isinstance(x, (list, tuple)):
            if len(x) != len(g.inputs):
                raise QsimError(f"a sample given as a list holds one array per input: the model has "
                                f"{len(g.inputs)} input(s), the list {len(x)}.")
            items = dict(zip(g.inputs, x))
        else:
            if len(g.inputs) != 1:
                raise QsimError(f"the model has {len(g.inputs)} inputs ({', '.join(repr(t.name) for t in self.inputs)}); "
                                "give a {name: array} dict or a list of arrays in that order.")
            items = {g.inputs[0]: x}
        missing = [self.tensors[i].name for i in g.inputs if i not in items]
        if missing:
            raise QsimError(f"missing input(s) {', '.join(map(repr, missing))}.")
        out, batched = {}, False
        for i in g.inputs:
            t = g.tensors[i]
            try:
                a = np.asarray(items[i])
            except ValueError as e:
                raise QsimError(f"input '{t.name}' is not a rectangular array: {e}") from None
            if a.dtype == object:
                raise QsimError(f"input '{t.name}' must be a numeric array, got {type(items[i]).__name__}.")
            if np.issubdtype(a.dtype, np.floating) and np.issubdtype(t.dtype, np.integer) and t.quant is not None:
                k = list(g.inputs).index(i)
                raise QsimError(f"input '{t.name}' must be {np.dtype(t.dtype)}, got {a.dtype} data. It looks "
                                f"real-valued: quantize it first with model.inputs[{k}].quantize(x) (scale "
                                f"{t.quant.scale0:.6g}, zero point {t.quant.zp0}).")
            if np.issubdtype(a.dtype, np.integer):
                a = qin.coerce_dtype(a, t)  # e.g. int64 values that all fit int8
            if _batch_axis(a, t):
                a = a.reshape(a.shape[0], *t.shape[1:]) if a.ndim > len(t.shape) else a
                batched = batched or a.shape[0] != 1
            else:
                a = conform_shape(a, t)
                a = a if has_batch1(t) else a[None]
            out[i] = a
        sizes = {a.shape[0] for a in out.values()}
        if len(sizes) > 1:
            raise QsimError(f"the inputs hold different numbers of samples ({sorted(sizes)}).")
        if 0 in sizes:
            raise QsimError("no input given: a batch of 0 samples.")
        return out, batched

    def _samples(self, x) -> list[list[np.ndarray]]:
        """Any accepted input form -> a list of samples, each a list of arrays in graph input order."""
        batch, _ = self._batch(x)
        n = next(iter(batch.values())).shape[0]
        return [[np.ascontiguousarray(batch[t][k:k + 1]).reshape(self.graph.tensors[t].shape) for t in self.graph.inputs]
                for k in range(n)]

    # -------------------------------------------------------------- run

    def run(self, x, profile: str = "tflm", keep: str = "outputs", batch_size: int | None = None,
            requant=None, engine: str = "auto") -> RunResult:
        """Run the integer graph under a rounding ``profile`` ("tflm", "litert", "single").

        ``x``: one sample, a list of samples, or arrays with a leading batch axis (module doc);
        integers of the inputs' dtype (quantize real data with ``model.inputs[k].quantize``).
        ``keep``: "outputs" or "all" (the inputs and every op output too).  ``batch_size``:
        evaluate at most that many samples at a time (bounds memory on large batches).
        ``requant``: a requant arithmetic variant for the GEMM ops (:meth:`prepared`); the run is
        then repeated under the profile's own arithmetic and ``RunResult.requant`` says how many
        kept elements differ and by how much (:class:`qsim.evaluate.VariantDiff`).

        ``engine``: "python" (qsim's numpy kernels), "native" (the model's generated C compiled
        for the host, :mod:`qsim.native_model`: same bits, no per-op Python overhead) or "auto".
        "native" needs ``keep="outputs"``, no ``requant``, a profile the C reproduces (tflm;
        single; litert for uint8 models), a model the C generator accepts, a C compiler and
        ``QSIM_NATIVE`` not 0; otherwise it raises QsimError saying which is missing.  "auto"
        runs natively when "native" could and this Model has already made :data:`HOT_RUNS` (32)
        such runs under the profile (or :meth:`native` was called: then at once), else in
        Python; a batch of N > 1 samples goes to whichever engine was faster on the first such
        batch of its size class (N.bit_length(): that batch runs on both engines and is timed).
        Measured (ms per sample, CPU clock, load ~3.9 on 2 CPUs, python / native, -O3): one
        sample: trained_lstm_int8 1.41 / 0.12, keyword_scrambled_8bit 0.24 / 0.028, ad01_int8
        0.21 / 0.045, hello_world_int8 0.098 / 0.009, seanet conv13 (int16x8) 0.29 / 0.16,
        kws_ref_model 1.9 / 0.93, vww_96_int8 5.3 / 3.2 (native wins every one); batches of 64
        (numpy vectorizes over the batch, BLAS): kws_ref_model 0.50 / 0.86, vww_96_int8 1.74 /
        3.04, keyword_scrambled_8bit 0.011 / 0.019, conv13 0.051 / 0.138, ad01_int8 0.024 / 0.057
        (numpy wins), trained_lstm_int8 0.102 / 0.078 (its numpy kernel steps through time in
        Python), micro_speech_quantized 0.69 / 0.13 (numpy's depthwise path) (native wins).  Both
        engines give the same bits (tests/test_native_model.py); ``RunResult.engine`` says which ran.
        """
        if keep not in KEEP:
            raise QsimError(f"keep must be 'outputs' or 'all', got {keep!r}.")
        if engine not in ENGINES:
            raise QsimError(f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}.")
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise QsimError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
        batch, batched = self._batch(x)
        n = next(iter(batch.values())).shape[0]
        name = get_profile(profile).name
        if engine != "python":
            native = self._engine(engine, name, keep, requant, n)
            key = (name, n.bit_length())  # batches of similar size: one measured choice
            measure = engine == "auto" and n > 1 and native is not None and key not in self._batch_native
            if engine == "auto" and n > 1 and not measure and not self._batch_native.get(key, False):
                native = None
            start = time.perf_counter()
            values = None if native is None else native.run(batch, n)
            if measure and values is not None:  # time the Python engine once on the same batch
                took = time.perf_counter() - start
                prep = self.prepared(profile)
                prep._batch_steps()  # its one-time batch plan is not part of the comparison
                start = time.perf_counter()
                self._run_prepared(prep, batch, batched, keep, batch_size)
                self._batch_native[key] = took < time.perf_counter() - start
            if values is not None:
                if not batched:
                    values = {t: v.reshape(self.graph.tensors[t].shape) for t, v in values.items()}
                return RunResult(self, values, name, n if batched else None, engine="native")
        prep = self.prepared(profile, requant)
        if engine == "native":  # the native engine declined these inputs: the Python engine's checks say why
            self._run_prepared(prep, batch, batched, keep, batch_size)
            raise QsimError("engine='native': the inputs' dtypes or sizes are not the model's "
                            "(the Python engine accepts them: use engine='python').")
        values = self._run_prepared(prep, batch, batched, keep, batch_size)
        res = RunResult(self, values, prep.profile.name, n if batched else None)
        if prep.requant is not None:
            from .evaluate import VariantDiff, reference_label
            base = self.prepared(profile)
            theirs = self._run_prepared(base, batch, batched, keep, batch_size)
            res.requant = VariantDiff(str(prep.requant), reference_label(base))
            for t in values:
                if t not in self.graph.inputs:
                    res.requant.add(values[t], theirs[t])
        return res

    def native(self, profile: str = "tflm"):
        """The model's C compiled for the host under ``profile`` (:class:`qsim.native_model.NativeModel`,
        ``.build_seconds``: the one-time generation + compilation, or cache look-up), built on the
        first call and kept; QsimError (kept too) saying why when the native engine cannot run it.
        After this call ``run(engine="auto")`` runs single samples natively at once."""
        from . import native_model
        name = get_profile(profile).name
        native_model.check_enabled()  # QSIM_NATIVE is read at each call
        if name not in self._native:
            try:
                self._native[name] = native_model.build(self.graph, name)
            except QsimError as e:
                self._native[name] = e
        got = self._native[name]
        if isinstance(got, QsimError):
            raise QsimError(str(got))
        return got

    def _engine(self, engine: str, profile: str, keep: str, requant, n: int):
        """The NativeModel ``run`` uses, or None (Python); QsimError when ``engine="native"`` cannot be."""
        from . import native as qnative
        if engine == "native":
            if keep != "outputs":
                raise QsimError("engine='native' returns the graph outputs only (the C keeps no other "
                                "tensor); use keep='outputs', or engine='python' for keep='all'.")
            if requant is not None:
                raise QsimError("engine='native' runs the profile's own arithmetic; a requant variant "
                                "needs engine='python'.")
            return self.native(profile)
        if keep != "outputs" or requant is not None or not qnative.enabled():
            return None
        if profile not in self._native:
            runs = self._auto_runs[profile] = self._auto_runs.get(profile, 0) + 1
            if runs < HOT_RUNS:
                return None
        try:
            return self.native(profile)
        except QsimError:
            return None

    def _run_prepared(self, prep: PreparedGraph, batch: dict, batched: bool, keep: str,
                      batch_size: int | None) -> dict[int, np.ndarray]:
        n = next(iter(batch.values())).shape[0]
        step = n if batch_size is None else int(batch_size)
        chunks = [prep.run_samples({t: a[s:s + step] for t, a in batch.items()}, keep == "all")
                  for s in range(0, n, step)]
        values = {t: np.concatenate([c[t] for c in chunks]) if len(chunks) > 1 else chunks[0][t] for t in chunks[0]}
        if not batched:
            values = {t: v.reshape(self.graph.tensors[t].shape) for t, v in values.items()}
        return values

    # -------------------------------------------------------------- check

    def check(self, inputs=None, reference: str = "both", profile: str | None = None, seed: int = 0,
              xnnpack: bool = False) -> CheckReport:
        """Compare every op output against LiteRT BUILTIN_REF ("litert"), TFLite Micro ("tflm") or "both".

        ``inputs``: samples as :meth:`run` takes them, an int N (N seeded random samples) or None
        (3 random samples).  ``profile``: None uses each reference's own rounding profile.
        ``xnnpack``: also measure LiteRT's default kernels (informational).  Raises QsimError
        when no reference could run the model (each one's reason in the message).
        """
        refs = {"both": ref.REFERENCES, "litert": ("litert",), "tflm": ("tflm",)}.get(reference)
        if refs is None:
            raise QsimError(f"unknown reference '{reference}'; choose one of: litert, tflm, both")
        if profile is not None:
            get_profile(profile)
        if inputs is None or (isinstance(inputs, (int, np.integer)) and not isinstance(inputs, bool)):
            n = 3 if inputs is None else int(inputs)
            sets = self.random_inputs(n, seed)
            source = f"{n} random input(s), seed {seed}"
        else:
            sets = self._samples(inputs)
            source = f"{len(sets)} given input(s)"
        m = ref.Model(self.blob, self.graph, self.path)
        result = ref.check(m, sets, references=refs, xnnpack=xnnpack, profile=profile)
        if not any(c.refused is None for c in result["comparisons"]):
            reasons = "; ".join(c.summary() for c in result["comparisons"])
            raise QsimError(f"nothing was compared: {reasons}." + (" Try --reference tflm." if "tflm" not in refs else ""))
        return CheckReport(self.source, source, len(sets), result["comparisons"], bool(result["ok"]),
                           result.get("xnnpack"))

    # -------------------------------------------------------------- datasets

    def dataset(self, path: str | Path, labels: str | Path | None = None, mean=None, std=None,
                image_mode: str = "shift"):
        """Open a dataset for this model's input (:func:`qsim.data.open_dataset`): ``.npy``,
        ``.npz`` (x, y), or a folder of class sub-folders of images; ``labels`` a labels.txt;
        ``mean``/``std`` normalize real pixels, real = (x - mean) / std, before quantization with
        the input's own scale and zero point.  Nothing is decoded until it is iterated."""
        from .data import open_dataset
        return open_dataset(path, self.graph, labels=labels, mean=mean, std=std, image_mode=image_mode)

    def eval(self, data, labels: str | Path | None = None, profile: str = "tflm", batch_size: int = 64,
             limit: int | None = None, mean=None, std=None, image_mode: str = "shift", progress: bool = False,
             requant=None, client=None, workers: int | None = None, scheduler: str | None = None):
        """Run a whole dataset (a path as :meth:`dataset` takes it, or an opened dataset) batched:
        top-1/top-5 accuracy when it has labels, per-output statistics otherwise.
        ``requant``: a requant arithmetic variant for the GEMM ops (:meth:`prepared`); the profile's
        own arithmetic runs on the same batches and ``EvalResult.requant`` holds its accuracy and
        the outputs' differences.  Returns :class:`qsim.evaluate.EvalResult` (``.to_dict()``, ``.render()``).

        Distributed (:mod:`qsim.shards`): ``client`` (a ``distributed.Client``), ``scheduler``
        ("tcp://HOST:8786", a running cluster) or ``workers`` (N local worker processes) cut the
        dataset into shards of whole batches that workers read from its path; the result is the same,
        bit for bit, as the one-process run (timings aside)."""
        from .evaluate import evaluate, evaluate_distributed
        if batch_size < 1:
            raise QsimError(f"batch_size must be at least 1, got {batch_size}.")
        if isinstance(data, (str, Path)):
            data = self.dataset(data, labels=labels, mean=mean, std=std, image_mode=image_mode)
        prep = self.prepared(profile, requant)  # unsupported ops are reported here, before any worker starts
        if client is None and workers is None and scheduler is None:
            return evaluate(prep, data, batch_size=batch_size, limit=limit, progress=progress,
                            reference=None if prep.requant is None else self.prepared(profile))
        from .cluster import dask_client
        with dask_client(scheduler, workers, client) as c:
            return evaluate_distributed(self, profile, data, c, batch_size=batch_size, limit=limit, progress=progress,
                                        requant=requant)

    def compare(self, float_model, data, labels: str | Path | None = None, limit: int | None = None,
                match=None, batch_size: int = 32, profile: str = "tflm", mean=None, std=None,
                image_mode: str = "shift", requant=None, client=None, workers: int | None = None,
                scheduler: str | None = None, progress: bool = False):
        """This int8 model against its float twin (a path, bytes) over a dataset, layer by layer
        (:mod:`qsim.compare`): the float model runs in LiteRT with every tensor kept, this one in
        qsim.  ``match``: {int8 tensor name: float tensor name} (or a JSON file) overriding the
        automatic matching.  ``requant``: run the int8 side with a requant arithmetic variant
        for its GEMM ops (:meth:`prepared`).  ``client`` / ``scheduler`` / ``workers``: on a Dask
        cluster, as :meth:`eval` (``data`` must then be a path); the same report bit for bit.
        Returns :class:`qsim.compare_report.CompareReport`."""
        from .compare import compare
        if batch_size < 1:
            raise QsimError(f"batch_size must be at least 1, got {batch_size}.")
        kw = dict(labels=labels, limit=limit, match=match, batch_size=batch_size, profile=profile, mean=mean,
                  std=std, image_mode=image_mode, requant=requant)
        if client is None and workers is None and scheduler is None:
            return compare(self, float_model, data, **kw)
        from .cluster import dask_client
        with dask_client(scheduler, workers, client) as c:
            return compare(self, float_model, data, client=c, progress=progress, **kw)

    # -------------------------------------------------------------- profile

    def profile(self, hw: Any = "edge16", inputs: Any = "random", seed: int = 0, events: bool = True,
                **overrides) -> ProfileReport:
        """The cycle-approximate accelerator model (:mod:`qsim.accel`) on hardware ``hw``.

        ``hw``: a preset name (tiny8, edge16, big32), a .toml path or a HwConfig.  ``overrides``:
        any HwConfig field (``rows=32, cols=32, dataflow="os", acc_bits=24``...), plus
        ``array="RxC"``, ``sram_kib=`` (all three SRAM buffers) and ``requant=`` (the GEMM requant
        variant, HwConfig ``requant_variant``, preset ``requant.variant``).  ``inputs``: "random" (one
        sample from ``seed``), a sample as :meth:`run` takes it, or None (timing only, no values
        through the datapath).  ``events``: keep the spans :meth:`ProfileReport.trace` writes.
        """
        from .accel import config
        from .accel.profile import prepare_profile
        cfg = hw if isinstance(hw, config.HwConfig) else config.load_hw(hw)
        changes = dict(overrides)
        if changes.get("array") is not None:
            changes["rows"], changes["cols"] = config.parse_array(changes.pop("array"))
        changes.pop("array", None)
        sram = changes.pop("sram_kib", None)
        if sram is not None:
            changes.update(ifmap_sram_kib=sram, weight_sram_kib=sram, output_sram_kib=sram)
        requant = changes.pop("requant", None)
        if requant is not None:
            changes["requant_variant"] = str(requant)
        cfg = cfg.with_overrides(**changes) if changes else cfg
        key = cfg.rounding_profile if cfg.variant is None else f"{cfg.rounding_profile}+{cfg.variant}"
        cached = self._prepared.get(key)  # the keys of prepared()
        pp = prepare_profile(self.graph, cfg, cached, events=events, values=inputs is not None)
        values = None
        label = ""
        if isinstance(inputs, str) and inputs == "random":
            values, label = self.random_inputs(1, seed)[0], f"random (seed {seed})"
        elif inputs is not None:
            samples = self._samples(inputs)
            if len(samples) != 1:
                raise QsimError(f"profile takes one input sample, got {len(samples)}.")
            values, label = samples[0], "given input"
        result = pp.run(values)
        if pp.prepared is not None:
            self._prepared.setdefault(key, pp.prepared)
        result.input = label
        return ProfileReport(result)

    # -------------------------------------------------------------- codegen

    def vectors(self, layer, inputs=1, out_dir: str | Path | None = None, profile: str = "tflm",
                rounding: str | None = None, seed: int = 0, gemm: bool = False):
        """Golden requantization vectors of one GEMM layer (:mod:`qsim.vectors`, ``qsim vectors``).

        ``layer``: op index or output tensor name of a CONV_2D / DEPTHWISE_CONV_2D /
        FULLY_CONNECTED.  ``inputs``: samples as :meth:`run` takes them, or an int K for K seeded
        random samples (``seed``).  ``profile`` prepares the multipliers / shifts; ``rounding``
        (None = the profile's, or a :data:`qsim.fixedpoint.ROUNDING_MODES` name) requantizes the
        expected outputs.  ``gemm``: also the GEMM operands.  With ``out_dir``, every format is
        written there (npz, CSV, $readmemh hex, tb_vectors.sv, manifest.json).
        Returns a :class:`qsim.vectors.LayerVectors`.
        """
        from . import vectors as vec
        op = vec.find_layer(self.graph, layer)
        if isinstance(inputs, (int, np.integer)) and not isinstance(inputs, bool):
            inputs = self.random_inputs(int(inputs), seed)
        batch, _ = self._batch(inputs)
        prep = self.prepared(profile)
        values = prep.run_samples(batch, True)
        v = vec.layer_vectors(prep, op, values, self.source, rounding=rounding, gemm=gemm)
        if out_dir is not None:
            v.write(out_dir)
        return v

    def codegen(self, out_dir: str | Path, name: str | None = None, target: str = "host",
                rounding: str = "double", force: bool = False, inputs=None, kernels: str = "qsim",
                cmsis_nn_dir=None, cmsis_core_dir=None):
        """Generate C99 firmware (:mod:`codegen`) into ``out_dir``; returns its GenerateResult.

        ``rounding``: "double" (TFLite Micro's default) or "single" (TFLITE_SINGLE_ROUNDING).
        ``kernels``: "qsim" (qsim's own C kernels) or "cmsis-nn" (calls into the CMSIS-NN checkout
        at ``cmsis_nn_dir``, default $CMSIS_NN_DIR, where it has the op; the C then reproduces
        ``profile="cmsis-nn"``; ``rounding="double"`` only).
        ``inputs`` (samples as :meth:`run` takes them): also write ``input.bin`` (the samples'
        input bytes back to back), ``expected.bin`` (qsim's outputs for them under the matching
        rounding profile) and ``expected_trace.bin`` (every op's output, in op order, per
        sample), which the generated Makefile's ``check`` / ``check-qemu`` targets compare with
        the C program's ``output.bin`` / ``trace.bin``.
        """
        from .codegen import emit  # the one import of the generator package
        batch = None
        profile = emit.model_profile(self.graph, rounding, kernels)
        if inputs is not None:
            batch, _ = self._batch(inputs)
        result = emit.generate(self.graph, out_dir, name=name, target=target, rounding=rounding, force=force,
                               kernels=kernels, cmsis_nn_dir=cmsis_nn_dir, cmsis_core_dir=cmsis_core_dir)
        if batch is not None:
            g = self.graph
            vals = self.prepared(profile).run_samples(batch, True)
            n = next(iter(batch.values())).shape[0]
            files = {"input.bin": g.inputs, "expected.bin": g.outputs,
                     "expected_trace.bin": [op.outputs[0] for op in g.operators]}
            for fname, tensors in files.items():
                blob = b"".join(np.ascontiguousarray(vals[t][k]).tobytes() for k in range(n) for t in tensors)
                (result.out_dir / fname).write_bytes(blob)
                result.files.append(result.out_dir / fname)
            result.check_samples = n
        return result


def _batch_axis(a: np.ndarray, t: ir.Tensor) -> bool:
    """True when ``a`` is [N, *t.shape[1:]] (or [N, *t.shape]) for a tensor whose batch dimension is 1."""
    s = tuple(t.shape)
    if not s or s[0] != 1:
        return False
    return (a.ndim == len(s) and tuple(a.shape[1:]) == s[1:]) or (a.ndim == len(s) + 1 and tuple(a.shape[1:]) == s)
