"""Plots of the accelerator model (matplotlib, Agg backend; ``pip install qsim[report]``).

* :func:`roofline` (``qsim profile --plot roofline.png``): each MAC-array layer at its
  arithmetic intensity (MACs per DRAM byte, reads + writes) and achieved MACs per cycle, under
  the array's compute roof (rows x cols MACs/cycle) and the DRAM roof (intensity x
  dram_bytes_per_cycle).  Vector-unit and free layers do no MACs and are left out.
* :func:`pareto_report` (``qsim sweep --plot DIR``): latency against PE count, SRAM (KiB, the
  three buffers) and energy (the first ``energy*`` column; DRAM bytes when the rows have no
  energy figure), every feasible point per model with its Pareto front (no other point is
  both faster and smaller), as PNGs and one self-contained ``sweep.html`` (images embedded).
"""
from __future__ import annotations

import html
from pathlib import Path

from ..compare_html import _img, _plt, _png
from ..errors import QsimError


def roofline(result, path: "str | Path") -> Path:
    """Write the roofline PNG of a :class:`qsim.accel.profile.ProfileResult` to ``path``."""
    plt = _plt()
    cfg = result.cfg
    pts = []
    for L in result.layers:
        t = L.timing
        nbytes = t.dram_read_bytes + t.dram_write_bytes
        if L.map.unit == "array" and L.map.macs and t.cycles and nbytes:
            pts.append((L.map.index, L.map.opcode, L.map.macs / nbytes, L.map.macs / t.cycles))
    if not pts:
        raise QsimError("no MAC-array layer to draw on a roofline (the model has no CONV/FC/DEPTHWISE op).")
    peak, bw = cfg.macs_per_cycle, cfg.dram_bytes_per_cycle
    xs = [p[2] for p in pts]
    lo, hi = min(xs + [peak / bw]) / 4, max(xs + [peak / bw]) * 4
    fig, ax = plt.subplots(figsize=(7, 4.5))
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(grid, [min(peak, x * bw) for x in grid], "k-", lw=1.5, label="roof")
    ax.axhline(peak, color="tab:red", ls=":", lw=1, label=f"compute roof {peak} MACs/cycle ({cfg.rows}x{cfg.cols})")
    ax.plot(grid, [x * bw for x in grid], color="tab:blue", ls=":", lw=1, label=f"DRAM roof {bw:g} B/cycle")
    for kind, marker in (("CONV_2D", "o"), ("DEPTHWISE_CONV_2D", "^"), ("FULLY_CONNECTED", "s")):
        sel = [p for p in pts if p[1] == kind]
        if sel:
            ax.scatter([p[2] for p in sel], [p[3] for p in sel], marker=marker, s=22, label=kind, zorder=3)
    for idx, _, x, y in pts:
        ax.annotate(str(idx), (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(top=peak * 2)
    ax.set_xlabel("arithmetic intensity (MACs per DRAM byte)")
    ax.set_ylabel("achieved MACs per cycle")
    ax.set_title(f"{Path(result.source).name or 'model'} on {cfg.name}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    out = Path(path)
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def pareto_front(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """The (x, latency, row) points no other point beats on both (ties: the first kept), by x."""
    front, best = [], float("inf")
    for p in sorted(points, key=lambda p: (p[0], p[1], p[2])):
        if p[1] < best:
            front.append(p)
            best = p[1]
    return front


def _axes(columns: list[str]) -> list[tuple[str, str]]:
    energy = next((c for c in columns if c.startswith("energy")), None)
    third = (energy, f"energy ({energy})") if energy else ("dram_bytes", "DRAM bytes (no energy figure in the rows)")
    return [("pe_count", "PE count (rows x cols)"), ("sram_kib", "SRAM (KiB, ifmap + weight + output)"), third]


def pareto_report(table, out_dir: "str | Path") -> list[Path]:
    """Pareto PNGs (latency vs PE count / SRAM / energy) and ``sweep.html`` for a sweep table."""
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in table.to_pylist() if r.get("feasible")]
    if not rows:
        raise QsimError("no feasible point to plot: every machine of the grid was too small for the models.")
    grid_cols = [c for c in table.column_names[2:table.column_names.index("feasible")]]
    models = list(dict.fromkeys(r["model"] for r in rows))
    written, sections = [], []
    for col, label in _axes(table.column_names):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        fronts = []
        for m in models:
            pts = [(r[col], r["latency_ms"], i) for i, r in enumerate(rows) if r["model"] == m and r.get(col) is not None]
            if not pts:
                continue
            sc = ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=8, alpha=0.35)
            front = pareto_front(pts)
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color=sc.get_facecolor()[0],
                    lw=1.5, label=f"{m} ({len(front)} on the front)")
            fronts += [(m, p) for p in front]
        ax.set_xlabel(label)
        ax.set_ylabel("latency (ms)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        name = f"pareto_{col}.png"
        fig.savefig(out / name, format="png", dpi=100, bbox_inches="tight")
        b64 = _png(fig, plt)
        written.append(out / name)
        head = "".join(f"<th>{html.escape(c)}</th>" for c in ["model", *grid_cols, col, "latency_ms"])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in
                                        [m, *(rows[p[2]].get(c) for c in grid_cols), p[0], f"{p[1]:.6g}"]) + "</tr>"
                       for m, p in fronts)
        sections.append(f"<h2>latency vs {html.escape(label)}</h2>{_img(b64, name)}"
                        f"<table><tr>{head}</tr>{body}</table>")
    doc = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>qsim sweep</title><style>"
           "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px;margin:1em 0}"
           "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
           f"<h1>qsim sweep: {len(rows)} feasible points, {len(models)} model(s)</h1>"
           "<p>Each point is one machine of the grid; the line is the Pareto front (no other point is both "
           "faster and smaller). The tables list the front's points.</p>" + "".join(sections) + "</body></html>")
    page = out / "sweep.html"
    page.write_text(doc, encoding="utf-8")
    return written + [page]
