"""Run SCALE-Sim v3 on a list of conv/GEMM layers and print its per-layer cycle counts as JSON.

Standalone on purpose: it runs inside SCALE-Sim's own virtualenv
(``.venv-scalesim``, numpy < 2: SCALE-Sim 3.0.0 crashes with numpy 2.x), so it
imports nothing from qsim.  qsim's tests and benchmark call it as a subprocess::

    .venv-scalesim/bin/python qsim/accel/scalesim_driver.py request.json

``request.json``::

    {"rows": 16, "cols": 16, "dataflow": "os", "sram_kib": 64,
     "layers": [{"name": "conv1", "ifmap_h": 34, "ifmap_w": 34, "filt_h": 3, "filt_w": 3,
                 "channels": 3, "num_filt": 16, "stride": 1}, ...]}

Inputs are given *padded* (SCALE-Sim's topology has no padding column) with a
single stride (its CSV has one stride column).  Output (stdout, one JSON
object): ``{"layers": [{"name", "compute_cycles", "stall_cycles",
"overall_cycles", "mapping_efficiency", "compute_util"}], "seconds": wall, "run_seconds": wall}``:
``seconds`` from after SCALE-Sim's import to the report read back (configuration files,
simulation, report), ``run_seconds`` around ``run_scale`` alone (the simulation; the
report files are written inside it).
``compute_cycles`` is SCALE-Sim's "Total Cycles" column (array cycles
including stalls; stalls are 0 when the SRAMs hold the working set).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """[general]
run_name = qsim_check

[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : {sram_kib}
FilterSramSzkB : {sram_kib}
OfmapSramSzkB : {sram_kib}
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Bandwidth : 10
Dataflow : {dataflow}
ReadRequestBuffer : 32
WriteRequestBuffer : 32

[layout]
IfmapCustomLayout : False
IfmapSRAMBankBandwidth : 10
IfmapSRAMBankNum : 10
IfmapSRAMBankPort : 2
FilterCustomLayout : False
FilterSRAMBankBandwidth : 10
FilterSRAMBankNum : 10
FilterSRAMBankPort : 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : CALC
UseRamulatorTrace : False
"""

TOPO_HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n"
LAYOUT_HEADER = ("Layer name, IFMAP H factor, IFMAP W factor, Filter H factor, Filter W factor, Channel factor, "
                 "Num filter factor, IFMAP intraline order x3, IFMAP interline order x3, Filter intraline order x4, "
                 "Filter interline order x4,\n")


def write_inputs(req: dict, d: Path) -> tuple[Path, Path, Path]:
    """Write scale.cfg, topology.csv (trailing comma per row) and layout.csv (default layout) into ``d``."""
    cfg = d / "scale.cfg"
    cfg.write_text(CONFIG.format(rows=req["rows"], cols=req["cols"], sram_kib=req["sram_kib"],
                                 dataflow=req["dataflow"]))
    topo = d / "topology.csv"
    layout = d / "layout.csv"
    trows, lrows = [TOPO_HEADER], [LAYOUT_HEADER]
    for L in req["layers"]:
        name = L["name"].replace(",", "_").replace("DP", "dp")  # 'DP' in a name means depthwise to SCALE-Sim
        trows.append(f"{name}, {L['ifmap_h']}, {L['ifmap_w']}, {L['filt_h']}, {L['filt_w']}, "
                     f"{L['channels']}, {L['num_filt']}, {L['stride']},\n")
        lrows.append(f"{name}, 1, 1, 1, 1, 1, 1, 0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3,\n")
    topo.write_text("".join(trows))
    layout.write_text("".join(lrows))
    return cfg, topo, layout


def run(req: dict) -> dict:
    from scalesim.scale_sim import scalesim

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qsim-scalesim-") as tmp:
        d = Path(tmp)
        cfg, topo, layout = write_inputs(req, d)
        sim = scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=str(topo),
                       layout=str(layout), input_type_gemm=False)
        t_run = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            sim.run_scale(top_path=str(d / "out"))
        run_seconds = time.perf_counter() - t_run
        report = next((d / "out").rglob("COMPUTE_REPORT.csv"))
        layers = []
        with report.open() as f:
            for row in csv.reader(f):
                if not row or not row[0].strip().isdigit():
                    continue
                v = [c.strip() for c in row]
                layers.append({"layer_id": int(v[0]), "overall_cycles": float(v[1]), "compute_cycles": float(v[2]),
                               "stall_cycles": float(v[3]), "overall_util": float(v[4]),
                               "mapping_efficiency": float(v[5]), "compute_util": float(v[6])})
    for L, r in zip(req["layers"], layers):
        r["name"] = L["name"]
    return {"layers": layers, "seconds": time.perf_counter() - t0, "run_seconds": run_seconds}


def main(argv: list[str]) -> int:
    req = json.loads(Path(argv[1]).read_text()) if len(argv) > 1 and argv[1] != "-" else json.load(sys.stdin)
    json.dump(run(req), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
