"""Stage 4: a ProfileResult as a per-layer text table, CSV rows or a JSON-ready dict."""
from __future__ import annotations

import csv
import io

from .profile import ProfileResult

CSV_FIELDS = ("index", "op", "name", "part", "unit", "shape", "macs", "cycles", "array_cycles", "requant_cycles",
              "vector_cycles", "dram_cycles", "stall_cycles", "utilization_pct", "dram_read_bytes",
              "dram_write_bytes", "bound", "tiles", "energy_pj", "energy_mac_pj", "energy_sram_pj",
              "energy_dram_pj", "energy_requant_pj", "sram_bytes", "acc_min", "acc_max", "acc_nobias_min",
              "acc_nobias_max", "acc_bits_used", "acc_overflows", "output_saturations", "activation_clamps",
              "outputs_changed")


def table(result: ProfileResult) -> str:
    """Human-readable per-layer table plus totals."""
    cfg, tot = result.cfg, result.totals
    head = (f"{'#':>3} {'op':<18} {'shape':<16} {'MACs':>10} {'cycles':>9} {'util%':>6} {'DRAM rd':>9} "
            f"{'DRAM wr':>8} {'bound':<8} {'stalls':>7} {'energy nJ':>9} {'ovf':>5} {'sat':>5} {'relu':>6} "
            f"{'chg':>5} {'acc range (no bias)':>24} {'acc range (+bias)':>24}")
    acc = f"{cfg.acc_bits}-bit acc, {cfg.acc_overflow}, bias in {cfg.acc_bias}, {cfg.acc_check} check"
    variant = "" if cfg.requant_variant == "profile" else f", requant variant {cfg.requant_variant}"
    lines = [f"hardware: {cfg.name}: {cfg.rows}x{cfg.cols} {cfg.dataflow.upper()} @ {cfg.clock_mhz:g} MHz, "
             f"SRAM ifmap/weight/output {cfg.ifmap_sram_kib:g}/{cfg.weight_sram_kib:g}/{cfg.output_sram_kib:g} KiB, "
             f"DRAM {cfg.dram_bytes_per_cycle:g} B/cycle + {cfg.dram_latency_cycles} cycles, requant "
             f"{cfg.requant_lanes} lanes depth {cfg.resolved_requant_depth()} ({cfg.rounding_profile}{variant}, "
             f"{acc}), vector {cfg.vector_lanes} lanes", head, "-" * len(head)]
    for L in result.layers:
        d = L.as_dict()
        shape = "x".join(str(s) for s in d["shape"])
        vals = ("", "", "", "", "", "")
        if L.values is not None:
            v = L.values
            vals = (str(v.overflow_count), str(v.int8_saturations), str(v.activation_clamps), str(v.outputs_changed),
                    f"[{v.acc_nobias_min}, {v.acc_nobias_max}]", f"[{v.acc_min}, {v.acc_max}]")
        nj = f"{d['energy_pj'] / 1e3:9.2f}" if "energy_pj" in d else f"{'':>9}"
        op = d["op"].replace("UNIDIRECTIONAL_SEQUENCE_", "") + (f" {d['part']}" if d["part"] else "")
        lines.append(f"{d['index']:>3} {op[:18]:<18} {shape[:16]:<16} {d['macs']:>10} {d['cycles']:>9} "
                     f"{d['utilization_pct']:>6.1f} {d['dram_read_bytes']:>9} {d['dram_write_bytes']:>8} "
                     f"{d['bound']:<8} {d['stall_cycles']:>7} {nj} {vals[0]:>5} {vals[1]:>5} {vals[2]:>6} "
                     f"{vals[3]:>5} {vals[4]:>24} {vals[5]:>24}")
    lines.append("-" * len(head))
    lines.append(f"total: {tot['cycles']} cycles ({tot['array_cycles']} array, {tot['stall_cycles']} stalled), "
                 f"{tot['latency_ms']:.4f} ms at {cfg.clock_mhz:g} MHz = {tot['inferences_per_s']:.1f} inferences/s, "
                 f"MAC utilization {tot['mac_utilization_pct']:.2f}%, DRAM {tot['dram_bytes']} bytes "
                 f"({tot['dram_read_bytes']} read, {tot['dram_write_bytes']} written)")
    if "energy_pj" in tot:
        lines.append(f"energy: {tot['energy_pj'] / 1e6:.4f} uJ per inference (MACs {tot['energy_mac_pj'] / 1e6:.4f}, "
                     f"SRAM {tot['energy_sram_pj'] / 1e6:.4f}, DRAM {tot['energy_dram_pj'] / 1e6:.4f}, "
                     f"requant {tot['energy_requant_pj'] / 1e6:.4f} uJ; Horowitz 45 nm per-access energies "
                     f"unless the preset says otherwise)")
    if "acc_overflows" in tot:
        lines.append(f"datapath ({result.input or 'values'}): {tot['acc_overflows']} accumulator overflows at "
                     f"{cfg.acc_bits} bits ({acc}); accumulator range [{tot['acc_nobias_min']}, {tot['acc_nobias_max']}] "
                     f"without bias, [{tot['acc_min']}, {tot['acc_max']}] with bias, widest register content "
                     f"{tot['acc_bits_used']} bits; {tot['output_saturations']} outputs saturated at the int8 range, "
                     f"{tot['activation_clamps']} clamped by a fused RELU/RELU6")
        lines.append(f"outputs changed vs the exact result: {tot['outputs_changed']} of {tot['output_elements']} model "
                     f"output elements ({tot['layer_outputs_changed']} layer outputs, each from that layer's own inputs)")
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
