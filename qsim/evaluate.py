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
from .interpreter import PreparedGraph

__all__ = ["EvalResult", "OutputStats", "evaluate"]

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
    """Run ``data`` (up to ``limit`` samples, ``batch_size`` at a time) through ``prepared``.

    ``progress``: a tqdm bar on stderr (shown only when stderr is a terminal).
    ``reference``: the same graph under the reference arithmetic (``prepared`` being a requant
    variant of it): run on the same batches, its accuracy and the outputs' differences go to
    ``EvalResult.requant`` (:class:`VariantDiff`)."""
    g = prepared.graph
    n_total = sample_count(len(data), limit)
    if n_total == 0:
        raise QsimError("the dataset holds no samples to evaluate.")
    labelled = data.y is not None
    outs = [g.tensors[t] for t in g.outputs]
    acc = [_Accumulator(t) for t in outs]
    c1 = c5 = n = 0
    k = TOP_K
    run_s = 0.0
    t0 = time.perf_counter()
    bar = _progress(n_total, progress)
    diff = None if reference is None else VariantDiff(str(prepared.requant), reference_label(reference))
    r1 = r5 = 0
    try:
        for xs, ys in data.batches(batch_size, limit):
            r0 = time.perf_counter()
            results = _run_chunk(prepared, xs)
            run_s += time.perf_counter() - r0
            if diff is not None:
                theirs = _run_chunk(reference, xs)
                for a, b in zip(results, theirs):
                    diff.add(a, b)
                if labelled:
                    h1, h5, _ = _hits(theirs[0], ys)
                    r1, r5 = r1 + h1, r5 + h5
            for a, q in zip(acc, results):
                a.add(q)
            if labelled:
                h1, h5, k = _hits(results[0], ys)
                c1, c5 = c1 + h1, c5 + h5
            n += len(xs)
            bar.update(len(xs))
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    res = EvalResult(g.source or "model", getattr(data, "source", ""), n, seconds, run_s, top_k=k,
                     class_names=data.class_names, outputs=[a.stats() for a in acc], notes=list(data.notes))
    if labelled:
        res.top1, res.top5, res.correct_top1, res.correct_top5 = c1 / n, c5 / n, c1, c5
    if diff is not None:
        if labelled:
            diff.reference_top1, diff.reference_top5 = r1 / n, r5 / n
        res.requant = diff
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
    """Running sums for one output's :class:`OutputStats` (float64, exact enough for int8 data)."""

    def __init__(self, t: ir.Tensor):
        self.t = t
        q = t.quant
        self.scale, self.zp = (q.scale0, q.zp0) if q is not None and not q.per_channel else (1.0, 0)
        self.n = 0
        self.s = self.s2 = 0.0
        self.lo, self.hi = np.inf, -np.inf
        self.counts: np.ndarray | None = None
        self.sample_shape: list[int] = []

    def add(self, q: np.ndarray) -> None:
        real = self.scale * (q.astype(np.float64) - self.zp)
        self.sample_shape = list(q.shape[1:])
        self.n += real.size
        self.s += float(real.sum())
        self.s2 += float((real * real).sum())
        if real.size:
            self.lo, self.hi = min(self.lo, float(real.min())), max(self.hi, float(real.max()))
        flat = q.reshape(q.shape[0], -1)
        vector = max(self.sample_shape, default=1) == flat.shape[1]  # one row of scores per sample
        if vector and flat.shape[1] > 0:
            winners = np.argmax(flat, axis=1)  # first maximum: ties to the lower index
            c = np.bincount(winners, minlength=flat.shape[1])
            self.counts = c if self.counts is None else self.counts + c

    def stats(self) -> OutputStats:
        mean = self.s / self.n if self.n else 0.0
        var = max(self.s2 / self.n - mean * mean, 0.0) if self.n else 0.0
        return OutputStats(self.t.name, self.sample_shape, mean, var ** 0.5, self.lo, self.hi,
                           None if self.counts is None else [int(c) for c in self.counts])


def _progress(total: int, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="sample", file=sys.stderr, disable=None if show else True,
                leave=False, dynamic_ncols=True)
