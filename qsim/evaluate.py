"""Run a whole dataset through a prepared model: top-1/top-5 accuracy, or output statistics.

``evaluate(prepared, data)`` takes a :class:`qsim.interpreter.PreparedGraph` and a
:class:`qsim.data.Dataset` or :class:`qsim.data.DataStream` (anything with ``batches(batch_size,
limit)``, ``__len__``, ``y`` and ``class_names``).  Accuracy (when the data has labels) is on the
first graph output: a sample's prediction is the index of its largest quantized value, ties going
to the lower index (the order ``qsim run`` prints its top-k in); top-5 counts the label among
the 5 largest (top-K when the model has K < 5 classes).  Statistics (always): per output, the
mean / std / min / max of the dequantized values ``scale * (q - zero_point)`` over all samples
and elements, and how often each index was a sample's argmax.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import ir
from .data import sample_count
from .errors import QsimError
from .exactsum import ExactSum
from .interpreter import PreparedGraph

__all__ = ["EvalResult", "EvalPartial", "OutputStats", "evaluate", "evaluate_distributed", "eval_range"]

TOP_K = 5


@dataclass
class OutputStats:
    """Dequantized value statistics of one graph output over the evaluated samples."""

    name: str
    shape: list[int]  # per sample
    mean: float
    std: float
    min: float
    max: float
    argmax_counts: list[int] | None  # per class index; None unless each sample's output is one vector

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class EvalResult:
    """What :func:`evaluate` measured.  Accuracies are fractions in [0, 1] (None without labels)."""

    model: str
    data: str
    samples: int
    seconds: float  # wall time, data loading included
    run_seconds: float  # time inside the model
    top1: float | None = None
    top5: float | None = None
    top_k: int = TOP_K  # the k of "top5" (min(5, classes))
    correct_top1: int = 0
    correct_top5: int = 0
    class_names: list[str] | None = None
    outputs: list[OutputStats] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    requant: "VariantDiff | None" = None  # a requant variant against the reference arithmetic (eval(requant=))
    warnings: list[str] = field(default_factory=list)  # the dataset's input-range guard (also among notes)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("outputs", "requant")}
        d["samples_per_s"] = self.samples_per_s
        d["requant"] = None if self.requant is None else self.requant.to_dict()
        d["outputs"] = [o.to_dict() for o in self.outputs]
        return d

    def render(self) -> str:
        """Plain-text report (what ``qsim eval`` prints)."""
        lines = [f"model: {self.model}", f"data: {self.data}"]
        lines += [f"  note: {n}" for n in self.notes]
        if self.top1 is not None:
            lines.append(f"top-1 accuracy: {100 * self.top1:.2f}% ({self.correct_top1}/{self.samples})")
            lines.append(f"top-{self.top_k} accuracy: {100 * self.top5:.2f}% ({self.correct_top5}/{self.samples})")
        rq = self.requant
        if rq is not None:
            if self.top1 is not None and rq.reference_top1 is not None:
                lines.append(f"reference ({rq.reference}): top-1 {100 * rq.reference_top1:.2f}%, "
                             f"top-{self.top_k} {100 * rq.reference_top5:.2f}%; requant {rq.variant} changes top-1 "
                             f"by {100 * (self.top1 - rq.reference_top1):+.2f} points")
            lines.append(rq.render())
        for o in self.outputs:
            lines.append(f"output '{o.name}' {o.shape}: mean {o.mean:.6g}, std {o.std:.6g}, "
                         f"min {o.min:.6g}, max {o.max:.6g}")
            if o.argmax_counts is not None and self.top1 is None:
                names = self.class_names if self.class_names and len(self.class_names) == len(o.argmax_counts) \
                    else [str(i) for i in range(len(o.argmax_counts))]
                ranked = sorted(range(len(names)), key=lambda i: -o.argmax_counts[i])
                lines.append("  argmax: " + ", ".join(f"{names[i]} {o.argmax_counts[i]}" for i in ranked
                                                      if o.argmax_counts[i]))
        lines.append(f"{self.samples} samples in {self.seconds:.2f} s ({self.samples_per_s:.1f} samples/s; "
                     f"model {self.run_seconds:.2f} s)")
        return "\n".join(lines)


def evaluate(prepared: PreparedGraph, data, batch_size: int = 64, limit: int | None = None,
             progress: bool = False, reference: PreparedGraph | None = None) -> EvalResult:
    """Run ``data`` (up to ``limit`` samples, ``batch_size`` at a time) through ``prepared``, here.

    ``progress``: a tqdm bar on stderr (shown only when stderr is a terminal).
    ``reference``: the same graph under the reference arithmetic (``prepared`` being a requant
    variant of it): run on the same batches, its accuracy and the outputs' differences go to
    ``EvalResult.requant`` (:class:`VariantDiff`)."""
    n_total = sample_count(len(data), limit)
    if n_total == 0:
        raise QsimError("the dataset holds no samples to evaluate.")
    t0 = time.perf_counter()
    bar = _progress(n_total, progress)
    try:
        part = eval_range(prepared, data, batch_size, 0, n_total, bar, reference)
    finally:
        bar.close()
    return finish(prepared.graph, data, part, time.perf_counter() - t0)


def evaluate_distributed(model, profile: str, data, client, batch_size: int = 64, limit: int | None = None,
                         progress: bool = False, requant=None) -> EvalResult:
    """:func:`evaluate` on a Dask cluster: ``data`` (a :class:`qsim.data.DataStream` opened from a path)
    is cut into shards of whole batches (:func:`qsim.shards.shard_ranges`); each task opens the
    dataset from its path, runs its shard through the model prepared once per worker, and returns an
    :class:`EvalPartial`; the partials are merged exactly, so the result equals :func:`evaluate`'s
    (timings aside).  A shard whose worker dies or that raises is rerun; one result per shard."""
    from . import shards
    n_total = sample_count(len(data), limit)
    if n_total == 0:
        raise QsimError("the dataset holds no samples to evaluate.")
    origin = shards.for_run(shards.dataset_origin(data))
    t0 = time.perf_counter()
    ranges = shards.shard_ranges(n_total, batch_size, shards.worker_threads(client))
    ref = shards.model_ref(client, model.blob, model.path)
    tasks = [(ref, profile, origin, batch_size, a, b, requant) for a, b in ranges]
    parts = shards.gather(client, _eval_task, tasks, desc="eval", weights=[b - a for a, b in ranges],
                          progress=progress)
    total = EvalPartial.empty(model.graph)
    for p in parts:  # in shard order
        total.absorb(p)
        if data.saturation is not None:
            data.saturation.add(*p.saturated)
    return finish(model.graph, data, total, time.perf_counter() - t0)


def _eval_task(ref, profile: str, origin: dict, batch_size: int, start: int, stop: int,
               requant=None) -> "EvalPartial":
    """One shard, on a Dask worker: the model prepared once per worker, the dataset opened from its path."""
    from . import shards
    model = shards.worker_model(ref)
    prepared = model.prepared(profile, requant)
    reference = None if prepared.requant is None else model.prepared(profile)
    data = shards.worker_dataset(origin, model.graph)
    return eval_range(prepared, data, batch_size, start, stop, reference=reference)


@dataclass
class EvalPartial:
    """What samples ``start`` .. ``stop`` of a dataset contribute to an :class:`EvalResult`: counts
    and exact sums (:class:`qsim.exactsum.ExactSum`), so merging partials in any grouping gives the
    same figures as one pass.  ``run_seconds`` is timing (not part of the exact result);
    ``saturated``: (high, low) counts of normalized input values that saturated while reading;
    ``diff``, ``reference_top1``/``_top5``: hits and differences of the reference arithmetic when
    the model runs a requant variant (``None`` otherwise)."""

    outputs: list
    samples: int = 0
    correct_top1: int = 0
    correct_top5: int = 0
    top_k: int = TOP_K
    run_seconds: float = 0.0
    saturated: tuple = (0, 0)
    diff: "VariantDiff | None" = None
    reference_top1: int = 0
    reference_top5: int = 0

    @classmethod
    def empty(cls, g: ir.Graph, prepared: PreparedGraph | None = None,
              reference: PreparedGraph | None = None) -> "EvalPartial":
        diff = None if reference is None else VariantDiff(str(prepared.requant), reference_label(reference))
        return cls([_Accumulator(g.tensors[t]) for t in g.outputs], diff=diff)

    def absorb(self, o: "EvalPartial") -> "EvalPartial":
        """Add another partial's samples (in place)."""
        for a, b in zip(self.outputs, o.outputs):
            a.absorb(b)
        self.samples += o.samples
        self.correct_top1 += o.correct_top1
        self.correct_top5 += o.correct_top5
        self.top_k = o.top_k if o.samples else self.top_k
        self.run_seconds += o.run_seconds
        self.saturated = (self.saturated[0] + o.saturated[0], self.saturated[1] + o.saturated[1])
        if o.diff is not None:
            if self.diff is None:
                self.diff = VariantDiff(o.diff.variant, o.diff.reference)
            self.diff.absorb(o.diff)
            self.reference_top1 += o.reference_top1
            self.reference_top5 += o.reference_top5
        return self


def eval_range(prepared: PreparedGraph, data, batch_size: int, start: int, stop: int, bar=None,
               reference: PreparedGraph | None = None) -> EvalPartial:
    """Samples ``start`` .. ``stop`` of ``data`` (batches of ``batch_size`` from ``start``) through
    ``prepared`` (and ``reference``, the reference arithmetic of a requant variant, on the same batches)."""
    part = EvalPartial.empty(prepared.graph, prepared, reference)
    labelled = data.y is not None
    sat = data.saturation
    sat0 = (sat.hi, sat.lo) if sat is not None else (0, 0)
    for xs, ys in data.batches(batch_size, stop, start=start):
        r0 = time.perf_counter()
        results = _run_chunk(prepared, xs)
        part.run_seconds += time.perf_counter() - r0
        if reference is not None:
            theirs = _run_chunk(reference, xs)
            for a, b in zip(results, theirs):
                part.diff.add(a, b)
            if labelled:
                h1, h5, _ = _hits(theirs[0], ys)
                part.reference_top1 += h1
                part.reference_top5 += h5
        for a, q in zip(part.outputs, results):
            a.add(q)
        if labelled:
            h1, h5, part.top_k = _hits(results[0], ys)
            part.correct_top1 += h1
            part.correct_top5 += h5
        part.samples += len(xs)
        if bar is not None:
            bar.update(len(xs))
    if sat is not None:
        part.saturated = (sat.hi - sat0[0], sat.lo - sat0[1])
    return part


def finish(g: ir.Graph, data, part: EvalPartial, seconds: float) -> EvalResult:
    """The :class:`EvalResult` of a whole dataset's (merged) partial."""
    n = part.samples
    res = EvalResult(g.source or "model", getattr(data, "source", ""), n, seconds, part.run_seconds,
                     top_k=part.top_k, class_names=data.class_names, outputs=[a.stats() for a in part.outputs],
                     notes=list(data.notes), warnings=list(getattr(data, "warnings", [])))
    if data.y is not None:
        c1, c5 = part.correct_top1, part.correct_top5
        res.top1, res.top5, res.correct_top1, res.correct_top5 = c1 / n, c5 / n, c1, c5
    if part.diff is not None:
        if data.y is not None:
            part.diff.reference_top1, part.diff.reference_top5 = part.reference_top1 / n, part.reference_top5 / n
        res.requant = part.diff
    return res


def _hits(scores: np.ndarray, ys: np.ndarray) -> tuple[int, int, int]:
    """(top-1 hits, top-k hits, k) of one batch of class scores (ties: the lower class index)."""
    scores = scores.reshape(len(ys), -1)
    k = min(TOP_K, scores.shape[1])
    order = np.argsort(-scores.astype(np.int64), axis=1, kind="stable")[:, :k]
    return (int(np.count_nonzero(order[:, 0] == ys)), int(np.count_nonzero((order == ys[:, None]).any(axis=1))), k)


def reference_label(prepared: PreparedGraph) -> str:
    """How the reference arithmetic is named in reports: the rounding profile's own."""
    return f"{prepared.profile.name} profile ({prepared.profile.default_rounding} rounding)"


@dataclass
class VariantDiff:
    """Outputs under a requant variant against the reference arithmetic's, on the same inputs.

    ``max_abs_diff_lsb``: the largest |integer difference| (steps of the output's scale);
    ``reference_top1``/``reference_top5``: the reference's accuracy (eval with labels), to set
    next to the variant's own.
    """

    variant: str
    reference: str
    elements: int = 0
    differ: int = 0
    max_abs_diff_lsb: int = 0
    reference_top1: float | None = None
    reference_top5: float | None = None

    def add(self, ours, theirs) -> None:
        a = np.asarray(ours, np.int64)
        d = np.abs(a - np.asarray(theirs, np.int64).reshape(a.shape))
        self.elements += int(d.size)
        self.differ += int(np.count_nonzero(d))
        self.max_abs_diff_lsb = max(self.max_abs_diff_lsb, int(d.max()) if d.size else 0)

    def absorb(self, o: "VariantDiff") -> None:
        """Add another shard's counts (exact: integers and a maximum)."""
        self.elements += o.elements
        self.differ += o.differ
        self.max_abs_diff_lsb = max(self.max_abs_diff_lsb, o.max_abs_diff_lsb)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def render(self) -> str:
        pct = 100.0 * self.differ / self.elements if self.elements else 0.0
        return (f"requant {self.variant} vs {self.reference}: {self.differ} of {self.elements} output elements "
                f"differ ({pct:.2f}%), max |diff| {self.max_abs_diff_lsb} LSB")


def _run_chunk(prepared: PreparedGraph, xs: np.ndarray) -> list[np.ndarray]:
    """Samples ``xs`` (a leading sample axis, see :mod:`qsim.data`) -> each graph output with the
    same leading axis (:meth:`PreparedGraph.run_samples`: one vectorized pass)."""
    g = prepared.graph
    res = prepared.run_samples({g.inputs[0]: xs}, keep_all=False)
    return [res[t] for t in g.outputs]


class _Accumulator:
    """Running sums for one output's :class:`OutputStats`: exact sums of the per-batch float64 sums
    (:class:`qsim.exactsum.ExactSum`), min/max and argmax counts, so merges give the same figures."""

    def __init__(self, t: ir.Tensor):
        self.name = t.name
        q = t.quant
        self.scale, self.zp = (q.scale0, q.zp0) if q is not None and not q.per_channel else (1.0, 0)
        self.n = 0
        self.s, self.s2 = ExactSum(), ExactSum()
        self.lo, self.hi = np.inf, -np.inf
        self.counts: np.ndarray | None = None
        self.sample_shape: list[int] = []

    def add(self, q: np.ndarray) -> None:
        real = self.scale * (q.astype(np.float64) - self.zp)
        self.sample_shape = list(q.shape[1:])
        self.n += real.size
        self.s.add(float(real.sum()))
        self.s2.add(float((real * real).sum()))
        if real.size:
            self.lo, self.hi = min(self.lo, float(real.min())), max(self.hi, float(real.max()))
        flat = q.reshape(q.shape[0], -1)
        vector = max(self.sample_shape, default=1) == flat.shape[1]  # one row of scores per sample
        if vector and flat.shape[1] > 0:
            winners = np.argmax(flat, axis=1)  # first maximum: ties to the lower index
            self._count(np.bincount(winners, minlength=flat.shape[1]))

    def _count(self, c: np.ndarray | None) -> None:
        if c is not None:
            self.counts = c.copy() if self.counts is None else self.counts + c

    def absorb(self, o: "_Accumulator") -> None:
        """Add another accumulator's values (in place)."""
        self.n += o.n
        self.s.absorb(o.s)
        self.s2.absorb(o.s2)
        self.lo, self.hi = min(self.lo, o.lo), max(self.hi, o.hi)
        self._count(o.counts)
        self.sample_shape = o.sample_shape or self.sample_shape

    def stats(self) -> OutputStats:
        s, s2 = float(self.s), float(self.s2)
        mean = s / self.n if self.n else 0.0
        var = max(s2 / self.n - mean * mean, 0.0) if self.n else 0.0
        return OutputStats(self.name, self.sample_shape, mean, var ** 0.5, self.lo, self.hi,
                           None if self.counts is None else [int(c) for c in self.counts])


def _progress(total: int, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="sample", file=sys.stderr, disable=None if show else True,
                leave=False, dynamic_ncols=True)
