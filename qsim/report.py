"""Plain-text tables and the model summary behind ``qsim inspect``.

Everything here returns strings or JSON-ready dicts; the CLI prints them.
MACs count multiply-accumulates of the GEMM-like ops only (CONV_2D,
DEPTHWISE_CONV_2D, FULLY_CONNECTED, and the gate GEMMs of UNIDIRECTIONAL_SEQUENCE_LSTM), per
inference, batch included.
"""
from __future__ import annotations

import numpy as np

from . import ir
from .errors import QsimError
from .interpreter import check_quantized, unsupported_ops
from .validate import validate


def table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """Fixed-width text table; ``align`` per column: 'l' or 'r' (default: numbers right)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if align is None:
        align = "".join("r" if rows and all(isinstance(r[i], (int, np.integer)) for r in rows) else "l"
                        for i in range(len(headers)))

    def fmt(r):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells])


# ------------------------------------------------------------------ quantization text

def quant_text(q: ir.Quant | None) -> str:
    """'s=0.0039 zp=-128' or, per channel, 'per-channel(axis 0, 16 scales 0.001..0.02, zp 0)'."""
    if q is None:
        return "-"
    if not q.per_channel:
        return f"s={q.scale0:.6g} zp={q.zp0}"
    zps = np.unique(q.zero_point)
    zp = str(int(zps[0])) if zps.size == 1 else f"{int(zps.min())}..{int(zps.max())}"
    return (f"per-channel(axis {q.axis}, {q.scale.size} scales "
            f"{q.scale.min():.3g}..{q.scale.max():.3g}, zp {zp})")


def quant_dict(q: ir.Quant | None) -> dict | None:
    if q is None:
        return None
    if not q.per_channel:
        return {"scale": q.scale0, "zero_point": q.zp0}
    return {"per_channel": True, "axis": q.axis, "count": int(q.scale.size),
            "scale_min": float(q.scale.min()), "scale_max": float(q.scale.max()),
            "zero_point_min": int(q.zero_point.min()), "zero_point_max": int(q.zero_point.max())}


def input_guidance(t: ir.Tensor) -> str:
    """How a user must encode data for input ``t``."""
    if t.quant is None or not np.issubdtype(t.dtype, np.integer) or t.quant.per_channel:
        return f"input '{t.name}' expects {t.dtype} values of shape {list(t.shape)} (not quantized per tensor)."
    info = np.iinfo(t.dtype)
    s, zp = t.quant.scale0, t.quant.zp0
    lo, hi = s * (int(info.min) - zp), s * (int(info.max) - zp)
    return (f"input '{t.name}' expects {t.dtype} {list(t.shape)}: q = round(x / {s:.6g}) + ({zp}), "
            f"clamped to [{info.min}, {info.max}], i.e. real range [{lo:.4g}, {hi:.4g}]"
            + (f"; image files: pixel p -> q = p - 128 (real = {s:.6g} * (p - 128 - ({zp}))), or with "
               "--image-mode raw the stored bytes as int8 (TFLM's person_detection example)"
               if t.dtype == np.int8 and _image_like(t.shape) else "")
            + ".")


def _image_like(shape) -> bool:
    """[1, H, W, 1|3] with H, W >= 16: plausibly an image input."""
    return len(shape) == 4 and shape[0] == 1 and shape[3] in (1, 3) and min(shape[1], shape[2]) >= 16


def output_guidance(t: ir.Tensor) -> str:
    if t.quant is None or t.quant.per_channel:
        return f"output '{t.name}' is {t.dtype} {list(t.shape)} (used as is)."
    s, zp = t.quant.scale0, t.quant.zp0
    info = np.iinfo(t.dtype) if np.issubdtype(t.dtype, np.integer) else None
    rng = f", real range [{s * (int(info.min) - zp):.4g}, {s * (int(info.max) - zp):.4g}]" if info else ""
    return f"output '{t.name}' is {t.dtype} {list(t.shape)}: real = {s:.6g} * (q - ({zp})){rng}."


# ------------------------------------------------------------------ model summary

def op_macs(g: ir.Graph, op: ir.Operator) -> int:
    """Multiply-accumulates of one inference of ``op`` (0 for non-GEMM ops)."""
    n = len(g.tensors)
    if not op.outputs or len(op.inputs) < 2 or not 0 <= op.inputs[1] < n or not 0 <= op.outputs[0] < n:
        return 0
    out = g.tensors[op.outputs[0]]
    w = g.tensors[op.inputs[1]]
    if op.opcode == "CONV_2D" and len(w.shape) == 4:
        return out.size * w.shape[1] * w.shape[2] * w.shape[3]
    if op.opcode == "DEPTHWISE_CONV_2D" and len(w.shape) == 4:
        return out.size * w.shape[1] * w.shape[2]
    if op.opcode == "FULLY_CONNECTED" and len(w.shape) == 2:
        return out.size * w.shape[1]
    if op.opcode == "UNIDIRECTIONAL_SEQUENCE_LSTM" and len(w.shape) == 2:
        # every step and row: four gates of [S, I] (input) and [S, S] (recurrent) weights
        return out.size * 4 * (w.shape[1] + w.shape[0])
    return 0


def summarize(g: ir.Graph) -> dict:
    """Everything ``qsim inspect`` shows, as a JSON-ready dict.

    Safe on a graph loaded with ``validate=False``: ``invalid`` lists what
    :func:`qsim.validate.validate` finds; out-of-range tensor indices show as
    ``<tensor N: out of range>`` and the float/unsupported analyses, which
    need a valid graph, are skipped (None / empty) for an invalid one.
    """
    invalid = validate(g)
    ops = []
    for op in g.operators:
        ins = [_tensor_ref(g, i) for i in op.inputs if i != -1]
        ops.append({
            "index": op.index, "op": op.opcode, "version": op.version,
            "inputs": [d for d, t in ins if t is None or not t.is_const],
            "params": [d for d, t in ins[1:] if t is not None and t.is_const],
            "outputs": [d for d, _ in (_tensor_ref(g, i) for i in op.outputs)],
            "macs": op_macs(g, op),
        })
    float_model = None
    if not invalid:
        try:
            check_quantized(g)
        except QsimError as e:
            float_model = str(e)
    counts: dict[str, int] = {}
    for op in g.operators:
        counts[op.opcode] = counts.get(op.opcode, 0) + 1
    io_in = [t for t in g.inputs if 0 <= t < len(g.tensors)]
    io_out = [t for t in g.outputs if 0 <= t < len(g.tensors)]
    return {
        "model": g.source, "description": g.description,
        "inputs": [_tensor_ref(g, t)[0] for t in g.inputs],
        "outputs": [_tensor_ref(g, t)[0] for t in g.outputs],
        "op_counts": counts, "ops": ops, "total_macs": sum(o["macs"] for o in ops),
        "guidance": [input_guidance(g.tensors[t]) for t in io_in] + [output_guidance(g.tensors[t]) for t in io_out],
        "float_model": float_model,
        "unsupported": [] if invalid else unsupported_ops(g, int16=True),
        "invalid": invalid,
        "parameter_bytes": int(sum(t.nbytes for t in g.tensors if t.is_const)),
    }


def _tensor_ref(g: ir.Graph, i: int) -> tuple[dict, ir.Tensor | None]:
    """(JSON dict, tensor) for tensor index ``i``; a placeholder dict and None when out of range."""
    if 0 <= i < len(g.tensors):
        return _tensor_dict(g.tensors[i]), g.tensors[i]
    return {"index": i, "name": f"<tensor {i}: out of range>", "shape": [], "dtype": "-", "quant": None,
            "quant_text": "-"}, None


def _tensor_dict(t: ir.Tensor) -> dict:
    return {"index": t.index, "name": t.name, "shape": list(t.shape), "dtype": str(t.dtype),
            "quant": quant_dict(t.quant), "quant_text": quant_text(t.quant)}


def render_summary(s: dict) -> str:
    """Human-readable text of :func:`summarize`'s dict."""
    lines = [f"model: {s['model']}"]
    if s["description"]:
        lines.append(f"description: {s['description']}")
    lines.append("ops: " + ", ".join(f"{k} x{v}" for k, v in s["op_counts"].items()))
    lines.append(f"parameters: {s['parameter_bytes']} bytes; total MACs per inference: {s['total_macs']:,}")
    lines.append("")
    rows = []
    for o in s["ops"]:
        out = o["outputs"][0] if o["outputs"] else {"name": "-", "shape": [], "dtype": "-", "quant_text": "-"}
        inq = o["inputs"][0]["quant_text"] if o["inputs"] else "-"
        wq = "; ".join(p["quant_text"] for p in o["params"][:1]) or "-"
        rows.append([o["index"], o["op"], out["name"][:40], "x".join(map(str, out["shape"])), out["dtype"],
                     inq, wq, out["quant_text"], o["macs"]])
    lines.append(table(["#", "op", "output", "shape", "dtype", "input q", "weights q", "output q", "MACs"], rows,
                       align="rllllllllr"))
    lines.append("")
    lines.extend(s["guidance"])
    if s["float_model"]:
        lines.append("")
        lines.append("NOT SIMULATABLE: " + s["float_model"])
    if s.get("invalid"):
        lines.append("")
        lines.append(f"INVALID MODEL ({len(s['invalid'])} problem(s)):")
        lines.extend("  - " + u for u in s["invalid"])
    elif s["unsupported"]:
        lines.append("")
        lines.append(f"unsupported by qsim ({len(s['unsupported'])} op(s)):")
        lines.extend("  - " + u for u in s["unsupported"])
    elif not s["float_model"]:
        lines.append("")
        lines.append("all ops are supported by qsim.")
    return "\n".join(lines)


def render_comparison(c) -> str:
    """Per-layer table of a :class:`qsim.reference.Comparison`."""
    head = c.summary()
    if c.refused is not None or not c.layers:
        return head
    rows = [[d.op_index, d.opcode, d.name[:48], d.elements, d.mismatches, d.max_diff] for d in c.layers]
    n = f"mismatches/{c.n_inputs} runs" if c.n_inputs > 1 else "mismatches"
    return head + "\n" + table(["#", "op", "output tensor", "elements", n, "max|diff| LSB"], rows,
                               align="rllrrr")
