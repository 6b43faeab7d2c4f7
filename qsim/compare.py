"""``qsim compare``: an int8 model against its float twin, layer by layer, over a dataset.

The float twin runs in LiteRT's reference kernels with every intermediate tensor kept
(:class:`qsim.refrun.LiteRTRunner`); the int8 side is qsim itself (``keep_all``).  Data come
from :func:`qsim.data.open_dataset` (quantized with the int8 input's scale / zero point);
the float model gets the original real values for floating ``.npy``/``.npz`` data, and
the dequantized samples otherwise (integer arrays, images).

Matching (:func:`match_tensors`): an explicit ``match`` ({int8 name: float name}) first, then
equal names (same shape), then graph structure: the compute ops of both graphs (QUANTIZE /
DEQUANTIZE dropped; a float op followed by a RELU/RELU6/RELU_N1_TO_1 that alone consumes it
folded into one, as the converter fuses it) aligned by longest common subsequence of
(op type, output shape).

Statistics per matched tensor (:class:`TensorStats`) are kept in exactly mergeable
accumulators (counts, sums and sums of squares as exact sums of the per-batch values, min/max,
per-sample level counts, the set of levels used), so any split of the dataset into whole batches
(the shards of a Dask run, :mod:`qsim.shards`) gives the same numbers, bit for bit.  Conventions:
``diff = dequantized int8 - float`` (TFLite's NumericVerify sign), real = scale * (q - zp);
the five QuantizationDebugger statistics (num_elements, stddev, mean_error, max_abs_error,
mean_squared_error) are TensorFlow's definitions (numpy over one sample's diffs) averaged
over samples, as ``tf.lite.experimental.QuantizationDebugger`` aggregates them.
"""
from __future__ import annotations

import csv
import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import fixedpoint as fp
from . import ir
from .errors import QsimError
from .exactsum import ExactSum

WRAPPERS = ("QUANTIZE", "DEQUANTIZE")
ACT_OPS = {"RELU": "RELU", "RELU6": "RELU6", "RELU_N1_TO_1": "RELU_N1_TO_1"}
QD_COLUMNS = ("num_elements", "stddev", "mean_error", "max_abs_error", "mean_squared_error")
EXACT = ("s_diff", "s_diff2", "s_x2", "s_d2", "s_xd", "kl_sum")  # TensorStats' float sums (and qd)
SAMPLE_MAX = 4096  # float values kept per tensor for the report's histograms (a uniform sample)
CHUNK = 131072  # values per chunk of the statistics' element-wise work (2 float64 buffers of 1 MiB: fewer calls)
LEVEL_FEW = 16  # a median of fewer distinct int8 values per sample is reported as "few levels"


# ------------------------------------------------------------------ matching

@dataclass
class _Node:
    """A compute op for alignment: opcode, the tensor that carries its result, fused activation."""

    opcode: str
    out: int
    act: str
    shape: tuple


def _is_float_graph(g: ir.Graph) -> bool:
    comp = [op for op in g.operators if op.opcode not in WRAPPERS]
    return bool(comp) and all(g.tensors[op.outputs[0]].dtype == np.float32 for op in comp)


def _is_int_graph(g: ir.Graph) -> bool:
    comp = [op for op in g.operators if op.opcode not in WRAPPERS]
    return bool(comp) and all(np.issubdtype(g.tensors[op.outputs[0]].dtype, np.integer) for op in comp)


def _act(op: ir.Operator) -> str:
    return getattr(op.options, "activation", None) or "NONE"


def _nodes(g: ir.Graph, fold_acts: bool) -> list[_Node]:
    """Compute ops in execution order, wrappers dropped, separate activations folded when asked."""
    consumers: dict[int, list[ir.Operator]] = {}
    for op in g.operators:
        for t in op.inputs:
            consumers.setdefault(t, []).append(op)
    nodes, folded = [], set()
    for op in g.operators:
        if op.opcode in WRAPPERS or op.index in folded:
            continue
        out, act = op.outputs[0], _act(op)
        nxt = consumers.get(out, [])
        if fold_acts and act == "NONE" and len(nxt) == 1 and nxt[0].opcode in ACT_OPS and out not in g.outputs:
            folded.add(nxt[0].index)
            out, act = nxt[0].outputs[0], ACT_OPS[nxt[0].opcode]
        nodes.append(_Node(op.opcode, out, act, tuple(g.tensors[out].shape)))
    return nodes


def _lcs(a: list, b: list) -> list[tuple[int, int]]:
    """Index pairs of a longest common subsequence of two key lists."""
    n, m = len(a), len(b)
    L = np.zeros((n + 1, m + 1), np.int32)
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            L[i, j] = L[i + 1, j + 1] + 1 if a[i] == b[j] else max(L[i + 1, j], L[i, j + 1])
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        if a[i] == b[j]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif L[i + 1, j] >= L[i, j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def _input_behind(g: ir.Graph, t: int) -> int:
    """The tensor a QUANTIZE/DEQUANTIZE chain starts from (graph input behind an input wrapper)."""
    prod = {o: op for op in g.operators for o in op.outputs}
    while t in prod and prod[t].opcode in WRAPPERS:
        t = prod[t].inputs[0]
    return t


@dataclass
class Matching:
    """int8 tensor index -> float tensor index, how each pair was found, and what stayed unmatched."""

    pairs: dict[int, int]
    how: dict[int, str]  # "override", "name", "structure", "input"
    unmatched_int8: list[str]
    unmatched_float: list[str]

    def as_dict(self, gq: ir.Graph, gf: ir.Graph) -> dict:
        return {"matched": len(self.pairs),
                "pairs": [{"int8": gq.tensors[q].name, "float": gf.tensors[f].name, "how": self.how[q]}
                          for q, f in self.pairs.items()],
                "unmatched_int8": self.unmatched_int8, "unmatched_float": self.unmatched_float}


def match_tensors(gq: ir.Graph, gf: ir.Graph, match: dict | None = None) -> Matching:
    """Pair each int8 compute-op output (and the graph input) with a float tensor (module doc)."""
    nq, nf = _nodes(gq, False), _nodes(gf, True)
    fnames: dict[str, list[int]] = {}
    for t in gf.tensors:
        if not t.is_const:
            fnames.setdefault(t.name, []).append(t.index)
    pairs: dict[int, int] = {}
    how: dict[int, str] = {}
    qi, fi = gq.inputs[0], gf.inputs[0]
    q_in = [n.out for n in nq]
    for qname, fname in (match or {}).items():
        qs = [t.index for t in gq.tensors if t.name == qname and not t.is_const]
        fs = fnames.get(fname, [])
        if not qs or not fs:
            missing = f"int8 tensor '{qname}'" if not qs else f"float tensor '{fname}'"
            raise QsimError(f"the match override names {missing}, which is not an activation tensor of that model.")
        pairs[qs[0]], how[qs[0]] = fs[0], "override"
    # the graph input, behind a QUANTIZE wrapper of the int8 model if it has one
    qin = next((n for n in [qi] + [op.outputs[0] for op in gq.operators if op.opcode == "QUANTIZE"
                                   and _input_behind(gq, op.outputs[0]) == qi]
                if np.issubdtype(gq.tensors[n].dtype, np.integer)), None)
    if qin is not None and qin not in pairs:
        pairs[qin], how[qin] = _input_behind(gf, fi), "input"
    used = set(pairs.values())
    for n in nq:
        if n.out in pairs:
            continue
        cand = [f for f in fnames.get(gq.tensors[n.out].name, []) if f not in used
                and tuple(gf.tensors[f].shape) == n.shape]
        if cand:
            pairs[n.out], how[n.out] = cand[0], "name"
            used.add(cand[0])
    left_q = [n for n in nq if n.out not in pairs]
    left_f = [n for n in nf if n.out not in used]
    for i, j in _lcs([(n.opcode, n.shape) for n in left_q], [(n.opcode, n.shape) for n in left_f]):
        pairs[left_q[i].out], how[left_q[i].out] = left_f[j].out, "structure"
        used.add(left_f[j].out)
    order = {t: k for k, t in enumerate([qin] + q_in)}
    pairs = dict(sorted(pairs.items(), key=lambda kv: order.get(kv[0], len(order))))
    return Matching(pairs, how, [gq.tensors[t].name for t in q_in if t not in pairs],
                    [gf.tensors[n.out].name for n in nf if n.out not in used])


# ------------------------------------------------------------------ statistics

@dataclass
class TensorStats:
    """Exactly mergeable accumulators for one matched tensor pair (see the module doc for units)."""

    n_samples: int = 0
    n: int = 0  # elements over all samples
    s_diff: float = 0.0
    s_diff2: float = 0.0
    s_x2: float = 0.0  # float signal power
    s_d2: float = 0.0  # dequantized power
    s_xd: float = 0.0
    x_min: float = np.inf
    x_max: float = -np.inf
    clipped: int = 0  # float values more than half a step outside the representable range
    at_qmin: int = 0
    at_qmax: int = 0
    levels: list = field(default_factory=list)  # distinct int8 values, per sample
    level_set: np.ndarray | None = None  # bool per integer value qmin..qmax: used at least once
    qd: np.ndarray = field(default_factory=lambda: np.zeros(5))  # sums over samples of the 5 QD metrics
    kl_sum: float = 0.0
    kl_rows: int = 0
    # a bounded uniform sample of the float values over the dataset (for the HTML report's histograms):
    # each value drawn gets a uniform random key, the SAMPLE_MAX smallest keys are kept
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    sample_keys: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # the float values of the dataset's first sample (a uniform subset of SAMPLE_MAX when larger, taken by
    # settle(): add() keeps them all) and the number of distinct int8 values on it: the one-sample histogram
    first: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    first_levels: int = 0
    seed_offset: int = 0  # elements of the dataset before the first one added here (seeds the sample)
    exact: dict = field(default_factory=dict)  # EXACT field -> ExactSum (qd: a list of 5), kept by absorb()

    @classmethod
    def of_batch(cls, q: np.ndarray, x: np.ndarray, *args, offset: int = 0, **kw) -> "TensorStats":
        """The stats of one batch (:meth:`add` into fresh stats); ``offset``: the dataset's elements
        before this batch.  Batches' stats :meth:`absorb`-ed in any grouping give the same figures."""
        st = cls(seed_offset=offset)
        st.add(q, x, *args, **kw)
        return st

    def add(self, q: np.ndarray, x: np.ndarray, scale: float, zp: int, qmin: int, qmax: int,
            probs: bool, full: bool = True, x2: float | None = None,
            e2: float | None = None, iso: tuple | None = None) -> tuple[float, float]:
        """One batch: ``q`` int8 values and ``x`` float values (float32 or float64), both [N, ...].
        ``full=False`` keeps only the sums behind SQNR and RMSE (``n``, ``s_diff2``, ``s_x2``): what the
        isolated view reports.  Returns the batch's (Σx², Σdiff²), diff = d - x; ``x2``, ``e2``: those
        sums when the caller has them (what this method returned for the same ``x``, for the same
        ``q`` and ``x``; ``e2`` only with ``full=False``), else computed.  ``iso`` = (stats, q'): also
        what ``stats.add(q', x, ..., full=False, x2=<Σx² of x>)`` would add, in the same pass over ``x``
        (the isolated view: other integers, the same float values; with ``full`` only).

        All sums are float64.  The element-wise work runs in cache-sized chunks of whole samples
        (CHUNK elements), so its passes read cache, not memory.  The sums over the dequantized values
        alone come from the integer level counts: ``s_d2`` = scale²·Σ(q - zp)² (an exact integer sum),
        and ``s_xd`` = (Σd² + Σx² - Σdiff²) / 2 (diff = d - x; every term a sum of squares)."""
        q = np.asarray(q)
        x32 = np.asarray(x)
        nb = q.shape[0]
        ne = q.size // nb if nb else 0
        is_first = self.n_samples == 0
        self.n_samples += nb
        self.n += q.size
        if iso is not None:
            iso[0].n_samples += nb
            iso[0].n += q.size
        if not q.size:
            return 0.0, 0.0
        if not full and x2 is not None and e2 is not None:
            self.s_x2 += x2
            self.s_diff2 += e2
            return x2, e2
        qf, xf = q.reshape(nb, ne), x32.reshape(nb, ne)
        rows = max(1, CHUNK // ne)
        m = min(rows, nb) * ne
        dbuf, xbuf = _buffers(m)
        ones = np.ones(ne)
        s_x2 = s_e2 = si_e2 = 0.0
        qi = None if iso is None else np.asarray(iso[1]).reshape(nb, ne)
        lo, hi = scale * (qmin - zp - 0.5), scale * (qmax - zp + 0.5)
        if full:  # the histogram sample: SAMPLE_MAX positions drawn here, their values read chunk by chunk
            rng = np.random.default_rng(self.seed_offset + self.n)  # deterministic: by the elements before
            pick = rng.integers(0, q.size, min(SAMPLE_MAX, q.size))
            picked = np.empty(pick.size) if x2 is None else xf.ravel()[pick]
        per, ext = [], []  # per chunk: row sums, sums of squares, max, min, sums of squared deviations; x range
        for r0 in range(0, nb, rows):
            qc, xc = qf[r0:r0 + rows], xf[r0:r0 + rows]
            shape = qc.shape
            D, X = (b[:qc.size].reshape(shape) for b in (dbuf, xbuf))
            E = D  # d, then diff = d - x in place
            _dequant_into(qc, scale, zp, D)  # scale * (q - zp), float64
            if x2 is None:
                np.copyto(X, xc)  # float64
                fx = X.ravel()
                s_x2 += float(fx @ fx)
                if full:  # min, max and the values clipped (compared in float64), on the chunk in cache
                    cmin, cmax = fx.min(), fx.max()
                    clip = np.count_nonzero(fx < lo) + np.count_nonzero(fx > hi) if cmin < lo or cmax > hi else 0
                    ext.append((cmin, cmax, clip))
                    a = r0 * ne
                    sel = (pick >= a) & (pick < a + fx.size)
                    picked[sel] = fx[pick[sel] - a]
                np.subtract(D, X, out=E)  # diff
            else:
                np.subtract(D, xc, out=E)  # diff (x converted to float64 on the fly)
            if not full:
                fe = E.ravel()
                s_e2 += float(fe @ fe)
                continue
            rs = E @ ones  # np.average(e, axis=1) * ne (a BLAS sum): TensorFlow's five metrics, per sample
            e2 = _row_dots(E)  # np.average(e * e, axis=1) * ne
            mx, mn = E.max(axis=1), E.min(axis=1)  # np.abs(e).max(axis=1) = max(mx, -mn)
            E -= (rs / ne)[:, None]
            dev2 = _row_dots(E)  # np.std(e, axis=1)**2 * ne
            per.append((rs, e2, mx, mn, dev2))
            if qi is not None:  # the isolated view's diff on the same chunk of x (D is free again)
                _dequant_into(qi[r0:r0 + rows], scale, zp, D)
                np.subtract(D, X if x2 is None else xc, out=D)
                fe = D.ravel()
                si_e2 += float(fe @ fe)
        s_x2 = s_x2 if x2 is None else x2
        self.s_x2 += s_x2
        if qi is not None:
            iso[0].s_x2 += s_x2
            iso[0].s_diff2 += si_e2
        if not full:
            self.s_diff2 += s_e2
            return s_x2, s_e2
        rs, e2, mx, mn, dev2 = (np.concatenate(c) for c in zip(*per))
        s_e2 = float(e2.sum())
        self.s_diff2 += s_e2
        self.s_diff += float(rs.sum())
        self.qd += [ne * nb, np.sqrt(dev2 / ne).sum(), (rs / ne).sum(), np.maximum(mx, -mn).sum(), (e2 / ne).sum()]
        if ext:
            cmin, cmax, clip = zip(*ext)
            bmin, bmax = float(np.min(cmin)), float(np.max(cmax))  # NaN when any value is
        else:  # x2 given: no float64 copy of x was made
            bmin, bmax = float(x32.min()), float(x32.max())
            clip = [((x32 < np.float64(lo)) | (x32 > np.float64(hi))).sum()]  # compared in float64
        self.x_min, self.x_max = min(self.x_min, bmin), max(self.x_max, bmax)
        if bmin < lo or bmax > hi:  # else nothing is clipped (nor with a NaN anywhere)
            self.clipped += int(sum(clip))
        if self.level_set is None:
            self.level_set = np.zeros(qmax - qmin + 1, bool)
        counts = _level_counts(qf, qmin, qmax)
        k = np.arange(qmin, qmax + 1, dtype=np.int64) - zp
        s_d2 = scale * scale * float(counts.sum(0) @ (k * k))  # sum of d^2: an exact integer sum, scaled
        self.s_d2 += s_d2
        self.s_xd += (s_d2 + s_x2 - s_e2) / 2  # sum of x·d
        self.at_qmin += int(counts[:, 0].sum())
        self.at_qmax += int(counts[:, -1].sum())
        used = counts > 0
        self.levels += used.sum(1).tolist()
        self.level_set |= used.any(0)
        if is_first:  # all of them: settle() takes the subset (once, not per batch)
            self.first, self.first_levels = x32[0].ravel().astype(np.float32), int(used[0].sum())
        self._keep(picked.astype(np.float32), rng.random(pick.size))
        if probs:
            p = np.asarray(x32, np.float64).reshape(-1, x32.shape[-1])
            d = np.empty(q.shape)
            _dequant_into(q, scale, zp, d)
            r = np.clip(d.reshape(-1, x32.shape[-1]), 1e-12, None)
            pp = np.clip(p, 1e-12, None)
            self.kl_sum += float(np.where(p > 0, p * np.log(pp / r), 0.0).sum())
            self.kl_rows += p.shape[0]
        return s_x2, s_e2

    def _keep(self, values: np.ndarray, keys: np.ndarray) -> None:
        v, k = np.concatenate([self.sample, values]), np.concatenate([self.sample_keys, keys])
        if v.size > SAMPLE_MAX:
            keep = np.argpartition(k, SAMPLE_MAX)[:SAMPLE_MAX]
            v, k = v[keep], k[keep]
        self.sample, self.sample_keys = v, k

    def merge(self, o: "TensorStats") -> "TensorStats":
        """The statistics of both datasets together (a new object)."""
        return TensorStats().absorb(self).absorb(o)

    def _exact(self, f: str):
        """The exact running sum behind float field ``f`` (from its value when :meth:`add` made it)."""
        if f not in self.exact:
            self.exact[f] = [ExactSum(v) for v in self.qd] if f == "qd" else ExactSum(getattr(self, f))
        return self.exact[f]

    def absorb(self, o: "TensorStats", settle: bool = True) -> "TensorStats":
        """Add ``o``'s dataset to this one, in place; returns self.  Exact: counts add, min/max and
        level sets combine, float sums are kept as :class:`qsim.exactsum.ExactSum` (so ``o`` must be
        one :meth:`add` into fresh stats or itself built by absorb), per-sample levels are appended
        (absorb in dataset order) and the histogram sample keeps the smallest keys, sorted by key.
        ``settle=False`` (many absorbs in a row): the histogram sample is only pooled (trimmed now and
        then); :meth:`settle` once after the last gives the same sample as settling every time."""
        if self.n_samples == 0 and o.n_samples:  # the dataset's first sample is o's
            self.first, self.first_levels = o.first, o.first_levels
        for f in ("n_samples", "n", "clipped", "at_qmin", "at_qmax", "kl_rows"):
            setattr(self, f, getattr(self, f) + getattr(o, f))
        for f in EXACT:
            setattr(self, f, float(self._exact(f).absorb(o._exact(f))))
        self.qd = np.array([float(e.absorb(oe)) for e, oe in zip(self._exact("qd"), o._exact("qd"))])
        self.x_min, self.x_max = min(self.x_min, o.x_min), max(self.x_max, o.x_max)
        self.levels.extend(o.levels)
        if o.level_set is not None:
            self.level_set = o.level_set.copy() if self.level_set is None else self.level_set | o.level_set
        if not settle:
            self.sample = np.concatenate([self.sample, o.sample])
            self.sample_keys = np.concatenate([self.sample_keys, o.sample_keys])
            if self.sample.size > 8 * SAMPLE_MAX:
                self._keep(self.sample[:0], self.sample_keys[:0])
            return self
        self._keep(o.sample, o.sample_keys)
        return self.settle()

    def settle(self) -> "TensorStats":
        """The histogram sample trimmed to the SAMPLE_MAX smallest keys and sorted by (key, value), as
        :meth:`absorb` leaves it (after absorbs with ``settle=False``), and the first sample's values cut
        to their uniform subset of SAMPLE_MAX; returns self."""
        self._keep(self.sample[:0], self.sample_keys[:0])
        order = np.lexsort((self.sample, self.sample_keys))
        self.sample, self.sample_keys = self.sample[order], self.sample_keys[order]
        if self.first.size > SAMPLE_MAX:
            v = self.first
            self.first = v[np.sort(np.random.default_rng(0).choice(v.size, SAMPLE_MAX, replace=False))]
        return self


_BUFS = threading.local()  # per thread (Dask workers run shards in threads)


def _buffers(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Two float64 work buffers of ``m`` values, up to CHUNK kept per thread and reused (a fresh MiB-sized
    array per call costs page faults and the kernel's zeroing of its pages); larger ones (one sample
    above CHUNK values) are fresh."""
    if m > CHUNK:
        return np.empty(m), np.empty(m)
    b = getattr(_BUFS, "b", None)
    if b is None:
        b = _BUFS.b = (np.empty(CHUNK), np.empty(CHUNK))
    return b[0][:m], b[1][:m]


def _row_dots(a: np.ndarray) -> np.ndarray:
    """Sum of squares of each row of a 2-D float64 array: one BLAS dot per long row, einsum over
    many short ones (fewer calls)."""
    if a.shape[1] >= 2048:
        return np.array([float(r @ r) for r in a])
    return np.einsum("ij,ij->i", a, a)


def _dequant_into(q: np.ndarray, scale: float, zp: int, out: np.ndarray) -> None:
    """``out[...] = scale * (q - zp)`` in float64 (``q - zp`` exact, then one product per element)."""
    np.copyto(out, q)
    np.subtract(out, zp, out=out)
    np.multiply(out, scale, out=out)


def _level_counts(q: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """[N, qmax - qmin + 1] counts of each integer value per row of ``q`` [N, M]."""
    nb, nl = q.shape[0], qmax - qmin + 1
    if q.dtype == np.int8 and (qmin, qmax) == (-128, 127) and q.shape[1] >= 4096:
        # long rows: per row on the bytes (value v at v mod 256); short ones: one bincount for all rows
        c = np.stack([np.bincount(row, minlength=256) for row in q.view(np.uint8)]) if nb else np.zeros((0, 256), int)
        return np.roll(c, 128, axis=1)
    flat = q.astype(np.intp)
    flat += (nl * np.arange(nb, dtype=np.intp) - qmin)[:, None]
    return np.bincount(flat.ravel(), minlength=nb * nl).reshape(nb, nl)


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """10·log10(signal / noise); inf when the noise is zero."""
    if noise_power == 0:
        return float("inf")
    if signal_power == 0:
        return float("-inf")
    return float(10 * np.log10(signal_power / noise_power))


@dataclass
class LayerRow:
    """One matched tensor's figures (what the table, JSON and CSV show)."""

    op_index: int | None
    op_name: str
    tensor_idx: int
    tensor_name: str
    float_name: str
    scale: float
    zero_point: int
    qmin: int
    qmax: int
    act: str
    st: TensorStats  # accumulated: int8 end to end
    iso: TensorStats | None = None  # isolated: the op on quantized float inputs (None: not available)
    weights: dict = field(default_factory=dict)  # weight_figures() of the producing op

    def figures(self) -> dict:
        st, n = self.st, max(self.st.n, 1)
        ns = max(st.n_samples, 1)
        rep = (self.scale * (self.qmin - self.zero_point), self.scale * (self.qmax - self.zero_point))
        qd = dict(zip(QD_COLUMNS, (st.qd / ns).tolist()))
        qd["num_elements"] = int(round(qd["num_elements"]))
        lv = np.asarray(st.levels) if st.levels else np.zeros(1)
        # qmin/qmax hits are not clamps when that bound is the real value 0 (zero point at the bound:
        # the float data were >= 0, e.g. after a ReLU) or the fused activation's own limit
        act_lo, act_hi = (fp.quantized_activation_range(self.act, self.scale, self.zero_point, self.qmin, self.qmax)
                          if self.act in ACT_OPS else (None, None))
        low_act = self.zero_point == self.qmin or (act_lo is not None and act_lo <= self.qmin)
        high_act = self.zero_point == self.qmax or (self.act in ("RELU6", "RELU_N1_TO_1") and act_hi >= self.qmax)
        sat_unexplained = (0 if low_act else st.at_qmin) + (0 if high_act else st.at_qmax)
        return {
            "op_index": self.op_index, "op_name": self.op_name, "tensor_idx": self.tensor_idx,
            "tensor_name": self.tensor_name, "float_tensor": self.float_name, **qd,
            "scale": self.scale, "zero_point": self.zero_point,
            "rmse_lsb": float(np.sqrt(st.s_diff2 / n) / self.scale) if self.scale else None,
            "sqnr_db": sqnr_db(st.s_x2, st.s_diff2),
            "cosine": float(st.s_xd / np.sqrt(st.s_x2 * st.s_d2)) if st.s_x2 > 0 and st.s_d2 > 0 else None,
            "kl": st.kl_sum / st.kl_rows if st.kl_rows else None,
            "clip_float": st.clipped / n,
            "at_qmin": st.at_qmin / n, "at_qmax": st.at_qmax / n,
            "qmin_explained": low_act, "qmax_explained": high_act,
            "saturated_unexplained": sat_unexplained / n,
            "levels_min": int(lv.min()), "levels_median": float(np.median(lv)),
            "levels_dataset": int(st.level_set.sum()) if st.level_set is not None else 0,
            "float_min": st.x_min, "float_max": st.x_max, "repr_min": rep[0], "repr_max": rep[1],
            "fused_activation": self.act,
            "iso_sqnr_db": None if self.iso is None else sqnr_db(self.iso.s_x2, self.iso.s_diff2),
            "iso_rmse_lsb": None if self.iso is None or not self.scale else
            float(np.sqrt(self.iso.s_diff2 / max(self.iso.n, 1)) / self.scale),
            **self.weights,
        }


WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def weight_figures(g: ir.Graph, op: ir.Operator | None) -> dict:
    """Per output channel of an op's int8 weights: distinct values used (min / median over channels;
    ``w_channels_few``: channels of at least 4·LEVEL_FEW weights that use fewer than LEVEL_FEW values —
    a 3x3x1 kernel cannot use more than 9) and the spread of the per-channel scales (max / min);
    empty for ops without constant integer weights."""
    if op is None or op.opcode not in WEIGHT_OPS:
        return {}
    w = g.tensors[op.inputs[1]]
    if not w.is_const or w.quant is None or w.data is None or not np.issubdtype(w.dtype, np.integer):
        return {}
    axis = int(w.quant.axis) if w.quant.per_channel else (3 if op.opcode == "DEPTHWISE_CONV_2D" else 0)
    per = np.sort(np.moveaxis(np.asarray(w.data), axis, 0).reshape(w.shape[axis], -1), axis=1)
    lv = 1 + (np.diff(per, axis=1) != 0).sum(1)  # distinct values per channel
    sc = np.asarray(w.quant.scale, np.float64)
    return {"w_per_channel": bool(w.quant.per_channel), "w_levels_min": int(lv.min()),
            "w_levels_median": float(np.median(lv)),
            "w_channels_few": int((lv < LEVEL_FEW).sum()) if per.shape[1] >= 4 * LEVEL_FEW else 0,
            "w_channels": int(lv.size),
            "w_scale_spread": float(sc.max() / sc.min()) if sc.min() > 0 else None}


# ------------------------------------------------------------------ the isolated view

def isolated_outputs(pg, model, vals: dict, fq: dict, n: int, exact=()) -> dict[int, np.ndarray]:
    """Each int8 op evaluated on the *quantized float* values of its inputs (the error the op itself
    adds): {int8 output tensor: [n, ...] integers} for every op whose activation inputs all have
    a matched float tensor (``fq``: int8 tensor index -> float values in the batched layout of
    ``vals``, qsim's accumulated run).  Inputs that are not quantized (a float graph input before
    its QUANTIZE) take qsim's own values.  Batched as :meth:`PreparedGraph.run` runs ops.

    ``exact``: int8 tensors whose float values are known to quantize to qsim's own values (``vals``),
    used as they are; an op whose every input is then qsim's own gets qsim's own output (the same
    integer op on the same integers: ``out[t] is vals[t]``), without running it again."""
    from .interpreter import _per_sample, batch_shape
    g = pg.graph
    out: dict[int, np.ndarray] = {}
    quantized = {i: vals[i] for i in exact}  # each float tensor quantized once (an ADD's residual input is read twice)
    for s in pg._batch_steps():
        if s.mode == "once":
            continue
        ins = []
        for i, c, live in s.inputs:
            if not live:
                ins.append(c)
            elif g.tensors[i].quant is None or not np.issubdtype(g.tensors[i].dtype, np.integer):
                ins.append(vals[i])
            elif i in fq:
                if i not in quantized:
                    quantized[i] = model.tensors[i].quantize(fq[i])
                ins.append(quantized[i])
            else:
                break
        else:
            t, dtype, shape = s.outputs[0]
            if t in vals and all(a is vals[i] for a, (i, c, live) in zip(ins, s.inputs) if live):
                out[t] = vals[t]
                continue
            outs = _per_sample(g, s, ins, set(vals), n) if s.mode == "loop" else s.eval(s.prepared.params, ins)
            out[t] = np.asarray(outs[0]).astype(dtype, copy=False).reshape(batch_shape(shape, n))
    return out


# ------------------------------------------------------------------ the comparison

def _load_arrays(path: Path):
    """(x, the open .npz or None) of an .npy (memory-mapped) or .npz dataset (``x``, else the first array)."""
    if path.suffix.lower() == ".npz":
        z = np.load(path, allow_pickle=False)
        return (z["x"] if "x" in z.files else z[z.files[0]]), z
    return np.load(path, mmap_mode="r", allow_pickle=False), None


def _real_reader(path: Path, n_expected: int):
    """(start, stop) -> the original real values of a floating .npy/.npz dataset, else None."""
    if path.suffix.lower() not in (".npy", ".npz"):
        return None
    try:
        x, _ = _load_arrays(path)
    except Exception:
        return None
    if not np.issubdtype(x.dtype, np.floating) or x.shape[0] != n_expected:
        return None
    return lambda i, j: np.asarray(x[i:j], np.float32)


def _float_input_stream(path: Path, t: ir.Tensor, labels):
    """A dataset for an int8 model whose graph input is float32: real-valued .npy/.npz samples, fed
    as they are to both models (the model's own QUANTIZE op quantizes them for qsim)."""
    from .data import DataStream, read_labels
    try:
        x, z = _load_arrays(path)
    except Exception as e:
        raise QsimError(f"the int8 model's input '{t.name}' is float32, so the data must be real values in an "
                        f".npy or .npz file; cannot read {path.name}: {e}") from None
    want = tuple(t.shape[1:]) if t.shape and t.shape[0] == 1 else tuple(t.shape)
    if not np.issubdtype(x.dtype, np.floating) or tuple(x.shape[1:]) != want:
        raise QsimError(f"{path.name} holds {x.dtype} samples of shape {list(x.shape[1:])}; input '{t.name}' "
                        f"expects float samples of shape {list(want)}, with the samples along the first axis.")
    y = None
    if z is not None:
        yk = "y" if "y" in z.files else (z.files[1] if len(z.files) > 1 and "x" not in z.files else None)
        if yk is not None:
            y = np.asarray(z[yk])
            y = (y.argmax(1) if y.ndim == 2 else y.reshape(-1)).astype(np.int64)
    names = read_labels(labels) if labels is not None else None
    return DataStream(path.name, int(x.shape[0]), want, np.dtype(np.float32),
                      lambda i, j: np.asarray(x[i:j], np.float32), y, names)


def compare(model, float_model, data, labels=None, limit: int | None = None, match=None,
            batch_size: int = 32, profile: str = "tflm", mean=None, std=None, image_mode: str = "shift",
            requant=None, client=None, progress: bool = False):
    """The comparison behind :meth:`qsim.Model.compare`; returns a :class:`CompareReport`.

    ``requant``: the int8 side runs a requant arithmetic variant for its GEMM ops.
    ``client``: a ``distributed.Client``; the dataset (a path) is then cut into shards of whole
    batches that the workers read and compare (:func:`_compare_task`), and the per-shard statistics
    merge exactly (:meth:`TensorStats.absorb`) into the same report as a one-process run."""
    from . import loader
    from .data import sample_count
    gq = model.graph
    if _is_float_graph(gq):
        raise QsimError(f"{model.source} (given as the INT8 model) is a float model: its compute ops run in "
                        "FLOAT32. Give the int8 model first and its float twin second.")
    if isinstance(float_model, (str, Path)):
        p = Path(float_model)
        if not p.is_file():
            raise QsimError(f"float model file not found: {p}")
        fblob, fsrc = p.read_bytes(), str(p)
    elif isinstance(float_model, (bytes, bytearray)):
        fblob, fsrc = bytes(float_model), "<float bytes>"
    else:
        fblob, fsrc = float_model.blob, float_model.source
    gf = loader.load_bytes(fblob, source=fsrc, validate=False)
    if not _is_float_graph(gf):
        raise QsimError(f"{fsrc} (given as the FLOAT model) is not a float model: its compute ops produce "
                        "integer tensors. Give the int8 model first and its float32 twin second.")
    if len(gq.inputs) != 1 or len(gf.inputs) != 1:
        raise QsimError("compare takes single-input models; "
                        f"these have {len(gq.inputs)} and {len(gf.inputs)} inputs.")
    sq, sf = tuple(gq.tensors[gq.inputs[0]].shape), tuple(gf.tensors[gf.inputs[0]].shape)
    if sq != sf:
        raise QsimError(f"the models are not twins: the int8 model's input has shape {list(sq)}, the float "
                        f"model's {list(sf)}. Compare an int8 model with the float model it was converted from.")
    if isinstance(match, (str, Path)):
        try:
            match = json.loads(Path(match).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise QsimError(f"cannot read the match file {match} as JSON: {e}") from None
    if match is not None and not (isinstance(match, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                                 for k, v in match.items())):
        raise QsimError("match must be a JSON object {int8 tensor name: float tensor name}.")
    m = match_tensors(gq, gf, match)
    ds, real = _open_data(model, data, labels, mean, std, image_mode)
    fr = _float_runner(fblob, fsrc)
    pg = model.prepared(profile, requant)  # unsupported ops and bad variants are reported here, before any work
    producer = {o: op for op in gq.operators for o in op.outputs}
    rows = []
    for tq, tf in m.pairs.items():
        t = gq.tensors[tq]
        if t.quant is None or t.quant.per_channel:
            continue
        info = np.iinfo(t.dtype)
        op = producer.get(tq)
        act = _act(op) if op is not None else "NONE"
        if op is not None and op.opcode in ACT_OPS:
            act = ACT_OPS[op.opcode]
        rows.append(LayerRow(None if op is None else op.index, "INPUT" if op is None else op.opcode, tq, t.name,
                             gf.tensors[tf].name, float(t.quant.scale0), int(t.quant.zp0), int(info.min),
                             int(info.max), act, TensorStats(), weights=weight_figures(gq, op)))
    n = sample_count(len(ds), limit)
    if client is None:
        parts = [_compare_range(model, gf, fr, m, rows, ds, real, profile, batch_size, 0, n, requant)]
    else:
        from . import shards
        from .data import origin
        if not isinstance(data, (str, Path)):
            raise QsimError("a distributed compare reads the dataset on the workers from its path: give the path.")
        ranges = shards.shard_ranges(n, batch_size, shards.worker_threads(client))
        refs = (shards.model_ref(client, model.blob, model.path), shards.model_ref(client, fblob, fsrc))
        where = shards.for_run(origin(data, labels, mean, std, image_mode))
        tasks = [(*refs, fsrc, profile, where, m, rows, batch_size, a, b, requant) for a, b in ranges]
        parts = shards.gather(client, _compare_task, tasks, desc="compare", weights=[b - a for a, b in ranges],
                              progress=progress)
    agg = dict.fromkeys(("top1_f", "top5_f", "top1_q", "top5_q", "agree", "n", "labelled"), 0)
    for k, r in enumerate(rows):  # merged in shard order
        r.st, r.iso = TensorStats(), None
        for stats, _, _ in parts:
            st, iso = stats[k]
            r.st.absorb(st)
            if iso is not None:
                r.iso = (r.iso or TensorStats()).absorb(iso)
    for _, a, _ in parts:
        for key in agg:
            agg[key] += a[key]
    start = sum(c for _, _, c in parts)
    if start == 0:
        raise QsimError(f"the dataset {data} holds no samples to compare.")
    from .compare_report import CompareReport
    return CompareReport(model.source, fsrc, str(data), start, m, rows, agg, gq, gf,
                         list(getattr(ds, "warnings", [])), None if pg.requant is None else str(pg.requant))


def _open_data(model, data, labels, mean, std, image_mode):
    """(dataset, reader of the original real values or None) for the int8 model's input (module doc)."""
    from .data import is_url, local_copy
    gq = model.graph
    tin = gq.tensors[gq.inputs[0]]
    data = local_copy(data) if is_url(data) else data  # a URL fsspec opens: a local copy
    if isinstance(data, (str, Path)) and np.issubdtype(tin.dtype, np.floating):
        ds = _float_input_stream(Path(data), tin, labels)  # an int8 model behind a float input (QUANTIZE)
        real = ds.read
    else:
        ds = model.dataset(data, labels=labels, mean=mean, std=std, image_mode=image_mode) \
            if isinstance(data, (str, Path)) else data
        real = _real_reader(Path(data), len(ds)) if isinstance(data, (str, Path)) and mean is None else None
    return ds, real


def _float_runner(fblob: bytes, fsrc: str):
    """LiteRT BUILTIN_REF on the float model, every tensor kept."""
    from .refrun import LiteRTRunner, ReferenceRefused
    try:
        return LiteRTRunner(fblob, reference=True)
    except ReferenceRefused as e:
        raise QsimError(f"LiteRT cannot run the float model {fsrc}: {e}") from None


def _compare_task(qref, fref, fsrc: str, profile: str, where: dict, m: Matching, rows: list, batch_size: int,
                  start: int, stop: int, requant=None):
    """One shard on a Dask worker: the int8 model (prepared once per worker) and the float model's
    LiteRT interpreter (one per worker thread) from the cache, the dataset opened from its path."""
    from . import loader, shards
    from .cluster import worker_cache
    model = shards.worker_model(qref)

    def float_side():
        blob = shards.worker_blob(fref)
        return loader.load_bytes(blob, source=fsrc, validate=False), _float_runner(blob, fsrc)
    gf, fr = worker_cache(shards.thread_key("litert", fref[0]), float_side)
    ds, real = shards.worker_dataset(where, model.graph, lambda path, labels, mean, std, image_mode: _open_data(
        model, path, labels, mean, std, image_mode))
    return _compare_range(model, gf, fr, m, rows, ds, real, profile, batch_size, start, stop, requant)


def _compare_range(model, gf, fr, m: Matching, rows: list, ds, real, profile: str, batch_size: int,
                   start: int, stop: int, requant=None):
    """Samples ``start`` .. ``stop`` of ``ds`` (batches of ``batch_size`` from ``start``) through both
    models: ([(accumulated, isolated or None) TensorStats per row of ``rows``], the model-level
    counts, samples).  Each batch is one :meth:`TensorStats.add` into fresh stats, absorbed exactly."""
    from .refrun import ReferenceRefused
    gq = model.graph
    pg = model.prepared(profile, requant)
    qinfo = model.inputs[0]
    fin = gf.tensors[gf.inputs[0]]
    rows = [LayerRow(r.op_index, r.op_name, r.tensor_idx, r.tensor_name, r.float_name, r.scale, r.zero_point,
                     r.qmin, r.qmax, r.act, TensorStats()) for r in rows]
    out_q, out_f = gq.outputs[0], gf.outputs[0]
    agg = {"top1_f": 0, "top5_f": 0, "top1_q": 0, "top5_q": 0, "agree": 0, "n": 0, "labelled": 0}
    first = start
    for x, y in ds.batches(batch_size, stop, start=start):
        nb = x.shape[0]
        vals = pg.run_samples({gq.inputs[0]: x}, keep_all=True)
        xf_dequantized = False
        if real is not None:
            xf = real(start, start + nb)
        elif np.issubdtype(fin.dtype, np.floating) and np.issubdtype(x.dtype, np.integer):
            xf = qinfo.dequantize(x).astype(np.float32)
            xf_dequantized = qinfo.scale is not None
        else:
            xf = x.astype(fin.dtype)
        at = start  # the batch's first sample in the dataset (seeds the histogram sample)
        start += nb
        want = [r.tensor_idx for r in rows]
        fv: dict[int, np.ndarray] = {}  # float tensor -> [nb, ...], filled sample by sample
        for k in range(nb):
            try:
                res = fr.run([xf[k].reshape(fin.shape)], [m.pairs[t] for t in want] + [out_f], copy=False)
            except ReferenceRefused as e:
                raise QsimError(f"LiteRT failed on the float model: {e}") from None
            for t, v in res.items():
                if t not in fv:
                    fv[t] = np.empty((nb,) + v.shape, v.dtype)
                fv[t][k] = v
        fq = {r.tensor_idx: fv[m.pairs[r.tensor_idx]].reshape(vals[r.tensor_idx].shape) for r in rows}
        # data given as integers: the float input is their dequantized values, which quantize back to
        # them exactly (|q - zp| <= 65535, two float32 roundings: an error below 0.02 of a step)
        exact = (gq.inputs[0],) if xf_dequantized and gq.inputs[0] in fq else ()
        iso = isolated_outputs(pg, model, vals, fq, nb, exact)
        for r in rows:
            args = (r.scale, r.zero_point, r.qmin, r.qmax, r.op_name == "SOFTMAX")
            xr = fq[r.tensor_idx]
            offset = at * (vals[r.tensor_idx].size // nb)  # elements before this batch
            st = TensorStats(seed_offset=offset)  # this batch alone, absorbed exactly
            it = TensorStats(seed_offset=offset) if r.tensor_idx in iso else None
            same = it is not None and iso[r.tensor_idx] is vals[r.tensor_idx]  # the op's own inputs: its own output
            # the isolated view's sums in the same pass over the float values, unless it is the accumulated one
            x2, e2 = st.add(vals[r.tensor_idx], xr, *args,
                            iso=None if it is None or same else (it, iso[r.tensor_idx]))
            r.st.absorb(st, settle=False)
            if it is not None:
                if same:
                    it.add(iso[r.tensor_idx], xr, *args, full=False, x2=x2, e2=e2)
                r.iso = (r.iso or TensorStats()).absorb(it)
        # model level: first output, last axis = classes
        qo = vals[out_q].reshape(nb, -1)
        fo = fv[out_f].reshape(nb, -1)
        if qo.shape[1] > 1 and qo.shape == fo.shape:
            oq = model.tensor(out_q)
            dq = oq.dequantize(qo) if oq.scale is not None else qo.astype(np.float64)
            tq5 = np.argsort(-dq, axis=1, kind="stable")[:, :5]
            tf5 = np.argsort(-fo, axis=1, kind="stable")[:, :5]
            agg["agree"] += int((tq5[:, 0] == tf5[:, 0]).sum())
            agg["n"] += nb
            if y is not None:
                yy = np.asarray(y).reshape(-1)
                agg["labelled"] += nb
                agg["top1_f"] += int((tf5[:, 0] == yy).sum())
                agg["top1_q"] += int((tq5[:, 0] == yy).sum())
                agg["top5_f"] += int((tf5 == yy[:, None]).any(1).sum())
                agg["top5_q"] += int((tq5 == yy[:, None]).any(1).sum())
    return [(r.st.settle(), r.iso) for r in rows], agg, start - first


def write_csv(rows: list[dict], columns) -> str:
    """CSV text of row dicts (QuantizationDebugger's column names first)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, list(columns), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()
