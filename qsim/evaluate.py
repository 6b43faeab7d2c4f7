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
    warnings: list[str] = field(default_factory=list)  # the dataset's input-range guard (also among notes)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "outputs"}
        d["samples_per_s"] = self.samples_per_s
        d["outputs"] = [o.to_dict() for o in self.outputs]
        return d

    def render(self) -> str:
        """Plain-text report (what ``qsim eval`` prints)."""
        lines = [f"model: {self.model}", f"data: {self.data}"]
        lines += [f"  note: {n}" for n in self.notes]
        if self.top1 is not None:
            lines.append(f"top-1 accuracy: {100 * self.top1:.2f}% ({self.correct_top1}/{self.samples})")
            lines.append(f"top-{self.top_k} accuracy: {100 * self.top5:.2f}% ({self.correct_top5}/{self.samples})")
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
             progress: bool = False) -> EvalResult:
    """Run ``data`` (up to ``limit`` samples, ``batch_size`` at a time) through ``prepared``, here.

    ``progress``: a tqdm bar on stderr (shown only when stderr is a terminal)."""
    n_total = sample_count(len(data), limit)
    if n_total == 0:
        raise QsimError("the dataset holds no samples to evaluate.")
    t0 = time.perf_counter()
    bar = _progress(n_total, progress)
    try:
        part = eval_range(prepared, data, batch_size, 0, n_total, bar)
    finally:
        bar.close()
    return finish(prepared.graph, data, part, time.perf_counter() - t0)


def evaluate_distributed(model, profile: str, data, client, batch_size: int = 64, limit: int | None = None,
                         progress: bool = False) -> EvalResult:
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
    tasks = [(ref, profile, origin, batch_size, a, b) for a, b in ranges]
    parts = shards.gather(client, _eval_task, tasks, desc="eval", weights=[b - a for a, b in ranges],
                          progress=progress)
    total = EvalPartial.empty(model.graph)
    for p in parts:  # in shard order
        total.absorb(p)
        if data.saturation is not None:
            data.saturation.add(*p.saturated)
    return finish(model.graph, data, total, time.perf_counter() - t0)


def _eval_task(ref, profile: str, origin: dict, batch_size: int, start: int, stop: int) -> "EvalPartial":
    """One shard, on a Dask worker: the model prepared once per worker, the dataset opened from its path."""
    from . import shards
    model = shards.worker_model(ref)
    prepared = model.prepared(profile)
    data = shards.worker_dataset(origin, model.graph)
    return eval_range(prepared, data, batch_size, start, stop)


@dataclass
class EvalPartial:
    """What samples ``start`` .. ``stop`` of a dataset contribute to an :class:`EvalResult`: counts
    and exact sums (:class:`qsim.exactsum.ExactSum`), so merging partials in any grouping gives the
    same figures as one pass.  ``run_seconds`` is timing (not part of the exact result);
    ``saturated``: (high, low) counts of normalized input values that saturated while reading."""

    outputs: list
    samples: int = 0
    correct_top1: int = 0
    correct_top5: int = 0
    top_k: int = TOP_K
    run_seconds: float = 0.0
    saturated: tuple = (0, 0)

    @classmethod
    def empty(cls, g: ir.Graph) -> "EvalPartial":
        return cls([_Accumulator(g.tensors[t]) for t in g.outputs])

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
        return self


def eval_range(prepared: PreparedGraph, data, batch_size: int, start: int, stop: int, bar=None) -> EvalPartial:
    """Samples ``start`` .. ``stop`` of ``data`` (batches of ``batch_size`` from ``start``) through ``prepared``."""
    part = EvalPartial.empty(prepared.graph)
    labelled = data.y is not None
    sat = data.saturation
    sat0 = (sat.hi, sat.lo) if sat is not None else (0, 0)
    for xs, ys in data.batches(batch_size, stop, start=start):
        r0 = time.perf_counter()
        results = _run_chunk(prepared, xs)
        part.run_seconds += time.perf_counter() - r0
        for a, q in zip(part.outputs, results):
            a.add(q)
        if labelled:
            scores = results[0].reshape(len(xs), -1)
            k = part.top_k = min(TOP_K, scores.shape[1])
            order = np.argsort(-scores.astype(np.int64), axis=1, kind="stable")[:, :k]
            part.correct_top1 += int(np.count_nonzero(order[:, 0] == ys))
            part.correct_top5 += int(np.count_nonzero((order == ys[:, None]).any(axis=1)))
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
    return res


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
