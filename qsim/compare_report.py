"""The result of ``qsim compare`` (:func:`qsim.compare.compare`): per-layer rows, model-level figures,
suspect layers and a ranked "what to try" list; text table, JSON and CSV.

Two error views per op: *accumulated* (``sqnr_db``: int8 end to end) and *isolated*
(``iso_sqnr_db``: the int8 op fed with its quantized float inputs).  ``sqnr_drop_db``: a layer's
accumulated SQNR against the lowest of its matched inputs (an SQNR above 50 dB, the ideal of
8-bit rounding, counted as 50).  Suspects: *lowest isolated SQNR*, *most clipping* (float values outside the representable
range plus int8 saturation that no fused activation explains), *fewest levels* (median number
of distinct int8 values per sample).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .compare import QD_COLUMNS, LEVEL_FEW, Matching, write_csv

ISO_LOW = 30.0  # dB: an op whose isolated SQNR is below this is worth a suggestion
NARROW = 0.25  # a float span over the dataset below this fraction of the representable range: recalibrate
FIXED_RANGE = ("SOFTMAX", "LOGISTIC", "TANH")  # output ranges fixed by TFLite's int8 spec: nothing to recalibrate
ME_SQNR_MAX = 100.0  # dB: what the Model Explorer overlay writes for an infinite SQNR (JSON has no inf)
SQNR_CAP = 50.0  # dB: an input's SQNR above this (ideal 8-bit rounding noise, 6.02·8 + 1.76) counts as this
CSV_COLUMNS = ("op_name", "tensor_idx") + QD_COLUMNS + ("scale", "zero_point", "tensor_name") + (
    "float_tensor", "rmse_lsb", "sqnr_db", "sqnr_drop_db", "cosine", "kl", "clip_float", "at_qmin", "at_qmax",
    "saturated_unexplained", "levels_min", "levels_median", "levels_dataset", "float_min", "float_max",
    "repr_min", "repr_max", "iso_sqnr_db", "iso_rmse_lsb", "w_per_channel", "w_levels_min", "w_levels_median",
    "w_channels_few", "w_channels", "w_scale_spread")


def _cap(v):
    return SQNR_CAP if v is None else min(v, SQNR_CAP)


def label(r: dict) -> str:
    """Short name of a row: op index, op type, the first part of the tensor name (40 characters at most)."""
    short = r["tensor_name"].split(";")[0]
    short = short if len(short) <= 40 else "…" + short[-39:]
    return ("input" if r["op_index"] is None else f"op {r['op_index']} {r['op_name']}") + f" '{short}'"


def _few(r: dict) -> bool:
    """Few levels: a median below LEVEL_FEW on a tensor with at least 4·LEVEL_FEW elements per sample."""
    return r["levels_median"] < LEVEL_FEW and r["num_elements"] >= 4 * LEVEL_FEW


def _json_num(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


@dataclass
class CompareReport:
    """int8 model vs float twin over ``n_samples`` samples (see the module doc)."""

    int8_model: str
    float_model: str
    data: str
    n_samples: int
    matching: Matching
    raw_rows: list
    agg: dict
    gq: object
    gf: object
    warnings: list = field(default_factory=list)  # input-range guard (qsim.inputs.range_guard)
    requant: str | None = None  # the int8 side's GEMM requant variant (compare(requant=...)), None = the profile's

    def __post_init__(self):
        rows = [r.figures() for r in self.raw_rows]
        by_tensor = {r["tensor_idx"]: r for r in rows}
        ops = {op.index: op for op in self.gq.operators}
        for r in rows:
            op = ops.get(r["op_index"])
            ins = [by_tensor[t]["sqnr_db"] for t in (op.inputs if op is not None else ()) if t in by_tensor]
            r["sqnr_drop_db"] = (min(_cap(v) for v in ins) - _cap(r["sqnr_db"])) if ins else None
        self.rows = rows

    # -------------------------------------------------------------- model level
    @property
    def model(self) -> dict:
        """Top-1/top-5 of both models (labelled data), top-1 agreement, output SQNR."""
        a, out = self.agg, self.gq.outputs[0]
        lab = a["labelled"]
        row = next((r for r in self.rows if r["tensor_idx"] == out), None)
        return {"samples": self.n_samples, "labelled": lab,
                "top1_float": a["top1_f"] / lab if lab else None, "top5_float": a["top5_f"] / lab if lab else None,
                "top1_int8": a["top1_q"] / lab if lab else None, "top5_int8": a["top5_q"] / lab if lab else None,
                "top1_agreement": a["agree"] / a["n"] if a["n"] else None,
                "output_sqnr_db": None if row is None else row["sqnr_db"]}

    @property
    def suspects(self) -> dict:
        """Row labels (:func:`label`): the lowest isolated SQNR (the op that itself adds the most
        error), the most clipping, the fewest levels (up to 3 each)."""
        comp = [r for r in self.rows if r["op_name"] != "INPUT"]
        iso = sorted((r for r in comp if r["iso_sqnr_db"] is not None), key=lambda r: r["iso_sqnr_db"])[:3]
        clip = sorted((r for r in comp if r["clip_float"] + r["saturated_unexplained"] > 0),
                      key=lambda r: -(r["clip_float"] + r["saturated_unexplained"]))[:3]
        few = sorted((r for r in comp if _few(r)), key=lambda r: r["levels_median"])[:3]
        return {"isolated_sqnr": [label(r) for r in iso], "clipping": [label(r) for r in clip],
                "few_levels": [label(r) for r in few]}

    @property
    def what_to_try(self) -> list[str]:
        """Ranked suggestions derived from the numbers (largest loss first)."""
        items = []  # (score, text)
        ops = {op.index: op for op in self.gq.operators}
        for r in self.rows:
            name = label(r)
            if r["op_name"] == "INPUT":
                if r["clip_float"] > 0.001:
                    items.append((50 + 100 * r["clip_float"], f"the input clips: {100 * r['clip_float']:.2f}% of the "
                                  f"data lies outside [{r['repr_min']:.4g}, {r['repr_max']:.4g}] (data range "
                                  f"[{r['float_min']:.4g}, {r['float_max']:.4g}]); check the preprocessing "
                                  "(normalization) against the input's scale and zero point"))
                continue
            span, rspan = r["float_max"] - r["float_min"], r["repr_max"] - r["repr_min"]
            narrow = rspan > 0 and span < NARROW * rspan  # the data use a small part of the int8 range
            d = None if r["iso_sqnr_db"] is None else ISO_LOW - r["iso_sqnr_db"]
            if d is not None and d > 0 and narrow and r["op_name"] not in FIXED_RANGE:
                items.append((d, f"recalibrate the range of {name}: over the dataset its float values span "
                              f"[{r['float_min']:.4g}, {r['float_max']:.4g}], {100 * span / rspan:.1f}% of the "
                              f"representable [{r['repr_min']:.4g}, {r['repr_max']:.4g}] (a calibration outlier, "
                              f"or a range not from data?), so they fall on {r['levels_median']:g} int8 levels per "
                              f"sample (median) and the op itself reaches only {r['iso_sqnr_db']:.1f} dB SQNR"))
            elif d is not None and d > 0:
                op = ops.get(r["op_index"])
                w = self.gq.tensors[op.inputs[1]] if op is not None and len(op.inputs) > 1 and op.inputs[1] >= 0 else None
                if (op is not None and op.opcode in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D")
                        and w is not None and w.is_const and w.quant is not None and not w.quant.per_channel):
                    items.append((d, f"per-channel weights for {name} (per-tensor now; "
                                  f"isolated SQNR {r['iso_sqnr_db']:.1f} dB)"))
                else:
                    items.append((d, f"keep {name} in int16 activations or float "
                                  f"(on exactly quantized inputs it reaches only {r['iso_sqnr_db']:.1f} dB SQNR; "
                                  f"{r['sqnr_db']:.1f} dB end to end)"))
            clip = r["clip_float"] + r["saturated_unexplained"]
            if clip > 0.001 and r["op_name"] not in FIXED_RANGE:
                items.append((20 * math.log10(1 + 1000 * clip),
                              f"recalibrate the range of {name}: {100 * r['clip_float']:.2f}% of float values fall "
                              f"outside the representable [{r['repr_min']:.4g}, {r['repr_max']:.4g}] (float range "
                              f"[{r['float_min']:.4g}, {r['float_max']:.4g}])"))
            if _few(r):
                why = (f"the float values span [{r['float_min']:.4g}, {r['float_max']:.4g}], "
                       f"{100 * span / rspan:.1f}% of the representable range: recalibrate it"
                       if narrow else "use int16 activations for it")
                items.append((LEVEL_FEW - r["levels_median"],
                              f"{name} uses only {r['levels_median']:g} int8 levels per sample (median; "
                              f"{r['levels_dataset']} over the dataset): {why}"))
            if r.get("w_channels_few"):
                items.append((r["w_channels_few"] / r["w_channels"] * LEVEL_FEW,
                              f"{name}: {r['w_channels_few']} of {r['w_channels']} weight channels use fewer than "
                              f"{LEVEL_FEW} int8 values (min {r['w_levels_min']})"
                              + ("" if r["w_per_channel"] else ": quantize the weights per channel")))
        items.sort(key=lambda t: -t[0])
        return [t for _, t in items[:8]]

    # -------------------------------------------------------------- outputs
    def to_dict(self) -> dict:
        """JSON-ready report (what ``qsim compare --json`` prints)."""
        rows = [{k: _json_num(v) for k, v in r.items()} for r in self.rows]
        return {"int8_model": self.int8_model, "float_model": self.float_model, "requant": self.requant,
                "data": self.data,
                "samples": self.n_samples, "matching": self.matching.as_dict(self.gq, self.gf),
                "layers": rows, "model": {k: _json_num(v) for k, v in self.model.items()},
                "suspects": self.suspects, "what_to_try": self.what_to_try, "warnings": list(self.warnings)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_csv(self, path: str | Path | None = None) -> str:
        """Per-layer CSV: QuantizationDebugger's columns (op_name, tensor_idx, the five statistics,
        scale, zero_point, tensor_name) followed by qsim's."""
        from .api import write_csv_text
        return write_csv_text(write_csv(self.rows, CSV_COLUMNS), path)

    def to_html(self, path: str | Path) -> Path:
        """One self-contained HTML report (:mod:`qsim.compare_html`; needs matplotlib)."""
        from .compare_html import write_html
        return write_html(self, path)

    def model_explorer_data(self, metric: str = "sqnr_db") -> dict:
        """Per-node values for Google's Model Explorer (``ai-edge-model-explorer``), its single-graph
        node-data format (``model_explorer.node_data_builder.GraphNodeData``): ``results`` keyed by the
        int8 model's output tensor names, each ``{"value": v}``; a red-to-green ``gradient`` over the
        values.  ``metric``: a row column (default the accumulated SQNR in dB; infinite values, exact
        tensors, are written as ME_SQNR_MAX).  Load the file in Model Explorer's "node data" panel
        over the int8 model to colour its graph."""
        if not self.rows or metric not in self.rows[0]:
            from .errors import QsimError
            raise QsimError(f"unknown per-layer figure '{metric}' for the Model Explorer overlay; one of: "
                            f"{', '.join(k for k, v in (self.rows[0] if self.rows else {}).items() if not isinstance(v, str))}.")
        results = {}
        for r in self.rows:
            v = r[metric]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                continue
            results[r["tensor_name"]] = {"value": float(min(v, ME_SQNR_MAX)) if math.isinf(v) and v > 0
                                         else float(max(v, -ME_SQNR_MAX)) if math.isinf(v) else v}
        return {"name": f"qsim compare: {metric}", "results": results,
                "gradient": [{"stop": 0, "bgColor": "#d7191c"}, {"stop": 0.5, "bgColor": "#ffffbf"},
                             {"stop": 1, "bgColor": "#1a9641"}]}

    def to_model_explorer(self, path: str | Path, metric: str = "sqnr_db") -> Path:
        """Write :meth:`model_explorer_data` as JSON to ``path``."""
        p = Path(path)
        try:
            p.write_text(json.dumps(self.model_explorer_data(metric), indent=2), encoding="utf-8")
        except OSError as ex:
            from .errors import QsimError
            raise QsimError(f"cannot write the Model Explorer overlay {p}: {ex}") from None
        return p

    def model_lines(self) -> list[str]:
        """The model-level figures as text lines (top-1/top-5, agreement, output SQNR)."""
        md, lines = self.model, []
        if md["labelled"]:
            lines.append(f"top-1 float {100 * md['top1_float']:.2f}%  int8 {100 * md['top1_int8']:.2f}%   "
                         f"top-5 float {100 * md['top5_float']:.2f}%  int8 {100 * md['top5_int8']:.2f}%")
        if md["top1_agreement"] is not None:
            lines.append(f"top-1 agreement int8 vs float: {100 * md['top1_agreement']:.2f}%")
        if md["output_sqnr_db"] is not None:
            lines.append(f"output SQNR: {md['output_sqnr_db']:.1f} dB")
        return lines

    def render(self) -> str:
        """Terminal table in graph order; suspects marked with '<'."""
        sus = self.suspects
        marked = set(sus["isolated_sqnr"][:1] + sus["clipping"][:1] + sus["few_levels"][:1])
        m = self.matching
        lines = [f"int8: {self.int8_model}" + (f" (requant variant {self.requant})" if self.requant else ""),
                 f"float: {self.float_model}",
                 f"data: {self.data} ({self.n_samples} samples)",
                 f"matched {len(m.pairs)} tensors; unmatched int8: {len(m.unmatched_int8)}, "
                 f"unmatched float: {len(m.unmatched_float)}"]
        for name in m.unmatched_int8:
            lines.append(f"  unmatched int8 tensor: {name}")
        for name in m.unmatched_float:
            lines.append(f"  unmatched float tensor: {name}")
        hdr = (f"{'op':>4} {'type':<18} {'tensor':<34} {'SQNR dB':>8} {'drop':>6} {'iso dB':>7} {'RMSE/LSB':>9} {'cos':>7} "
               f"{'clip%':>6} {'sat%':>6} {'lvl min/med/all':>16}  float range vs representable")
        lines += ["", hdr, "-" * len(hdr)]
        for r in self.rows:
            nm = r["tensor_name"] if len(r["tensor_name"]) <= 34 else "…" + r["tensor_name"][-33:]
            drop = "" if r["sqnr_drop_db"] is None else f"{r['sqnr_drop_db']:.1f}"
            iso = "" if r["iso_sqnr_db"] is None else f"{r['iso_sqnr_db']:.1f}"
            cos = "" if r["cosine"] is None else f"{r['cosine']:.4f}"
            rm = "" if r["rmse_lsb"] is None else f"{r['rmse_lsb']:.3f}"
            lv = f"{r['levels_min']}/{r['levels_median']:g}/{r['levels_dataset']}"
            op = "in" if r["op_index"] is None else str(r["op_index"])
            lines.append(f"{op:>4} {r['op_name']:<18} {nm:<34} {r['sqnr_db']:>8.1f} {drop:>6} {iso:>7} {rm:>9} {cos:>7} "
                         f"{100 * r['clip_float']:>6.2f} {100 * r['saturated_unexplained']:>6.2f} {lv:>16}  "
                         f"[{r['float_min']:.3g}, {r['float_max']:.3g}] vs [{r['repr_min']:.3g}, {r['repr_max']:.3g}]"
                         + ("  <" if label(r) in marked else ""))
        lines.append("")
        lines += self.model_lines()
        lines.append("suspects: " + "; ".join(f"{k.replace('_', ' ')}: {', '.join(v) or '-'}" for k, v in sus.items()))
        tries = self.what_to_try
        if tries:
            lines.append("what to try:")
            lines += [f"  {i}. {t}" for i, t in enumerate(tries, 1)]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()
