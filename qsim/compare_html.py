"""``qsim compare --report report.html``: one self-contained HTML file (PNG images embedded as
base64) with the per-layer SQNR chart (accumulated and isolated, dB, graph order), histograms of
the float activations of the worst layers with the int8 grid (the real values scale·(q − zp)) and
the clip range [scale·(qmin − zp), scale·(qmax − zp)] drawn over them, twice: over the whole dataset
(a uniform sample of at most :data:`qsim.compare.SAMPLE_MAX` float values per tensor) and on one
sample (the dataset's first; at most SAMPLE_MAX of its values), the model-level
figures, suspects, "what to try" and the per-layer table.  Needs matplotlib (``pip install
qsim[report]``), used with its Agg backend."""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np

from .errors import QsimError

WORST = 4  # layers shown as histograms
GRID_MAX = 64  # int8 grid lines drawn individually up to this many levels in view


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise QsimError("the HTML report needs matplotlib: pip install qsim[report] "
                        "(or pip install matplotlib).") from None
    return plt


def _png(fig, plt) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _num(v, fmt="{:.1f}"):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else (
        str(v) if isinstance(v, float) and math.isinf(v) else fmt.format(v))


def sqnr_chart(rep, plt) -> str:
    rows = rep.rows
    xs = np.arange(len(rows))
    cap = lambda v: np.nan if v is None else min(v, 80.0)  # noqa: E731 (inf: an exact tensor, drawn at 80)
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(rows) + 2), 3.2))
    ax.plot(xs, [cap(r["sqnr_db"]) for r in rows], "o-", label="accumulated (int8 end to end)")
    ax.plot(xs, [cap(r["iso_sqnr_db"]) for r in rows], "s--", label="isolated (op on quantized float inputs)")
    ax.set_xticks(xs)
    ax.set_xticklabels(["in" if r["op_index"] is None else str(r["op_index"]) for r in rows], fontsize=7)
    ax.set_xlabel("op index (graph order)")
    ax.set_ylabel("SQNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig, plt)


def worst_rows(rep) -> list[int]:
    """Indices into rep.rows of up to WORST compute layers: lowest isolated (else accumulated) SQNR."""
    comp = [i for i, r in enumerate(rep.rows) if r["op_name"] != "INPUT"]
    key = lambda i: (rep.rows[i]["iso_sqnr_db"] if rep.rows[i]["iso_sqnr_db"] is not None  # noqa: E731
                     else rep.rows[i]["sqnr_db"])
    return sorted(comp, key=key)[:WORST]


def histogram(rep, i: int, plt, one_sample: bool = False) -> str:
    """PNG (base64) of row i's float values over the whole dataset (the bounded uniform sample), or on
    the dataset's first sample (``one_sample``), with the int8 grid and the clip range over them."""
    r, raw = rep.rows[i], rep.raw_rows[i]
    v = (raw.st.first if one_sample else raw.st.sample).astype(np.float64)
    lo, hi = r["repr_min"], r["repr_max"]
    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    if v.size:
        a, b = min(v.min(), lo), max(v.max(), hi)
        what = (f"sample 0: {v.size} float values, {raw.st.first_levels} int8 levels" if one_sample
                else f"whole dataset: {v.size} float values sampled")
        ax.hist(v, bins=100, range=(a, b) if b > a else None, color="tab:orange" if one_sample else "tab:blue",
                alpha=0.8, label=what)
    ax.axvspan(lo, hi, color="tab:green", alpha=0.08, label="representable (clip) range")
    for edge in (lo, hi):
        ax.axvline(edge, color="tab:red", lw=1.2)
    n_lv = raw.qmax - raw.qmin + 1
    if n_lv <= GRID_MAX:
        for q in range(raw.qmin, raw.qmax + 1):
            ax.axvline(r["scale"] * (q - r["zero_point"]), color="grey", lw=0.4, alpha=0.6)
        grid = "every int8 level drawn"
    else:
        vmin, vmax = (v.min(), v.max()) if v.size else (lo, hi)
        qs = np.arange(raw.qmin, raw.qmax + 1)
        reals = r["scale"] * (qs - r["zero_point"])
        in_view = reals[(reals >= vmin) & (reals <= vmax)]
        step = max(1, int(np.ceil(in_view.size / GRID_MAX)))
        for x in in_view[::step]:
            ax.axvline(x, color="grey", lw=0.4, alpha=0.6)
        grid = "int8 grid" + (f" (every {step}th level)" if step > 1 else "")
    ax.set_title(f"{r['op_name']} '{r['tensor_name'][:50]}': {grid}, scale {r['scale']:.4g}, "
                 f"zero point {r['zero_point']}", fontsize=8)
    ax.set_xlabel("real value")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    return _png(fig, plt)


def write_html(rep, path: str | Path) -> Path:
    """Write the report (see the module doc) to ``path``; returns the path."""
    plt = _plt()
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>qsim compare</title>",
             "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td.l{text-align:left}</style>",
             "</head><body>", "<h1>qsim compare: int8 vs float, layer by layer</h1>",
             f"<p>int8 model: {e(rep.int8_model)}<br>float model: {e(rep.float_model)}<br>"
             f"data: {e(rep.data)} ({rep.n_samples} samples)</p>"]
    parts.append("<h2 id='model'>Model</h2><ul>")
    parts += [f"<li>{e(line)}</li>" for line in rep.model_lines()]
    parts.append("</ul>")
    for w in rep.warnings:
        parts.append(f"<p><b>warning:</b> {e(w)}</p>")
    parts.append("<h2 id='sqnr'>Per-layer SQNR</h2>" + _img(sqnr_chart(rep, plt), "per-layer SQNR"))
    parts.append("<h2 id='worst'>Worst layers: float activations against the int8 grid</h2>"
                 "<p>Per layer, two histograms: a uniform sample of the float values over the whole dataset, "
                 "and the float values of one sample (the dataset's first); red: the representable (clip) "
                 "range, grey: the real values of the int8 levels.</p>")
    for i in worst_rows(rep):
        r = rep.rows[i]
        parts.append(f"<h3>{e(r['op_name'])} '{e(r['tensor_name'])}': accumulated {_num(r['sqnr_db'])} dB, "
                     f"isolated {_num(r['iso_sqnr_db'])} dB, {r['levels_dataset']} int8 levels used over the "
                     f"dataset, {rep.raw_rows[i].st.first_levels} on sample 0</h3>")
        parts.append(_img(histogram(rep, i, plt), f"histogram (whole dataset) {r['tensor_name']}"))
        parts.append(_img(histogram(rep, i, plt, one_sample=True), f"histogram (one sample) {r['tensor_name']}"))
    sus = rep.suspects
    parts.append("<h2 id='suspects'>Suspects</h2><ul>")
    for k, v in sus.items():
        parts.append(f"<li>{e(k.replace('_', ' '))}: {e(', '.join(v) or '-')}</li>")
    parts.append("</ul><h2 id='what-to-try'>What to try</h2><ol>")
    parts += [f"<li>{e(t)}</li>" for t in rep.what_to_try]
    parts.append("</ol><h2 id='layers'>Layers</h2><table><tr>")
    cols = ("op_index", "op_name", "tensor_name", "sqnr_db", "iso_sqnr_db", "rmse_lsb", "cosine", "clip_float",
            "saturated_unexplained", "levels_min", "levels_median", "levels_dataset", "float_min", "float_max",
            "repr_min", "repr_max")
    parts.append("".join(f"<th>{c}</th>" for c in cols) + "</tr>")
    for r in rep.rows:
        cells = []
        for c in cols:
            v = r.get(c)
            txt = e(str(v)) if isinstance(v, str) or v is None else _num(v, "{:.4g}")
            cells.append(f"<td class='l'>{txt}</td>" if isinstance(v, str) else f"<td>{txt}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></body></html>")
    p = Path(path)
    try:
        p.write_text("\n".join(parts), encoding="utf-8")
    except OSError as ex:
        raise QsimError(f"cannot write the report {p}: {ex}") from None
    return p
