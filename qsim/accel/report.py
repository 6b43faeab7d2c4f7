"""Stage 4: a ProfileResult as a per-layer text table, CSV rows or a JSON-ready dict."""
from __future__ import annotations

import csv
import io

from .profile import ProfileResult

CSV_FIELDS = ("index", "op", "name", "unit", "shape", "macs", "cycles", "array_cycles", "requant_cycles",
              "vector_cycles", "dram_cycles", "stall_cycles", "utilization_pct", "dram_read_bytes",
              "dram_write_bytes", "bound", "tiles", "acc_min", "acc_max", "acc_bits_used", "acc_overflows",
              "output_saturations")


def table(result: ProfileResult) -> str:
    """Human-readable per-layer table plus totals."""
    cfg, tot = result.cfg, result.totals
    head = (f"{'#':>3} {'op':<18} {'shape':<16} {'MACs':>10} {'cycles':>9} {'util%':>6} {'DRAM rd':>9} "
            f"{'DRAM wr':>8} {'bound':<8} {'stalls':>7} {'ovf':>5} {'sat':>6} {'acc range':>24}")
    lines = [f"hardware: {cfg.name}: {cfg.rows}x{cfg.cols} {cfg.dataflow.upper()} @ {cfg.clock_mhz:g} MHz, "
             f"SRAM ifmap/weight/output {cfg.ifmap_sram_kib:g}/{cfg.weight_sram_kib:g}/{cfg.output_sram_kib:g} KiB, "
             f"DRAM {cfg.dram_bytes_per_cycle:g} B/cycle + {cfg.dram_latency_cycles} cycles, requant "
             f"{cfg.requant_lanes} lanes depth {cfg.resolved_requant_depth()} ({cfg.rounding_profile}, "
             f"{cfg.acc_bits}-bit acc, {cfg.acc_overflow}), vector {cfg.vector_lanes} lanes", head,
             "-" * len(head)]
    for L in result.layers:
        d = L.as_dict()
        shape = "x".join(str(s) for s in d["shape"])
        vals = ("", "", "")
        if L.values is not None:
            v = L.values
            vals = (str(v.overflow_count), str(v.saturation_count), f"[{v.acc_min}, {v.acc_max}]")
        lines.append(f"{d['index']:>3} {d['op'][:18]:<18} {shape[:16]:<16} {d['macs']:>10} {d['cycles']:>9} "
                     f"{d['utilization_pct']:>6.1f} {d['dram_read_bytes']:>9} {d['dram_write_bytes']:>8} "
                     f"{d['bound']:<8} {d['stall_cycles']:>7} {vals[0]:>5} {vals[1]:>6} {vals[2]:>24}")
    lines.append("-" * len(head))
    lines.append(f"total: {tot['cycles']} cycles ({tot['array_cycles']} array, {tot['stall_cycles']} stalled), "
                 f"{tot['latency_ms']:.4f} ms at {cfg.clock_mhz:g} MHz = {tot['inferences_per_s']:.1f} inferences/s, "
                 f"MAC utilization {tot['mac_utilization_pct']:.2f}%, DRAM {tot['dram_bytes']} bytes "
                 f"({tot['dram_read_bytes']} read, {tot['dram_write_bytes']} written)")
    if "acc_overflows" in tot:
        lines.append(f"datapath ({result.input or 'values'}): {tot['acc_overflows']} accumulator overflows at {cfg.acc_bits} bits, "
                     f"{tot['output_saturations']} saturated outputs, widest accumulator used "
                     f"{tot['acc_bits_used']} bits")
    return "\n".join(lines)


def csv_text(result: ProfileResult) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for L in result.layers:
        d = L.as_dict()
        d["shape"] = "x".join(str(s) for s in d["shape"])
        w.writerow(d)
    return buf.getvalue()
