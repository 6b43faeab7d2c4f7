"""qsim's array cycle model against SCALE-Sim v3 (same array, same dataflow, SRAM big enough not to stall).

Requirement: qsim's compute (array) cycles within 5% of SCALE-Sim's per layer,
on CONV_2D / FULLY_CONNECTED layers of two shared models, both dataflows.

Finding (documented, asserted): with the fold model of qsim/accel/timing.py
the two agree to the cycle except that SCALE-Sim's "Total Cycles" is exactly
one cycle lower per layer: it reports the cycle index at which the last output
is written, qsim counts the cycles the folds occupy.  Both keep SCALE-Sim's
convention that folds do not overlap (each drains before the next starts).

SCALE-Sim runs in its own virtualenv (numpy < 2); qsim.accel.scalesim_ref creates
it when missing (pip), so this test never skips.  A few layers only: SCALE-Sim
takes seconds per layer.
"""
from __future__ import annotations

import pytest

from qsim.accel import config, mapping, scalesim_ref, timing
from qsim.loader import load

from conftest import shared_model

# (model, op indices): CONV_2D 3x3 s1/s2, 1x1 s2, and the FULLY_CONNECTED head
LAYERS = {
    "pretrainedResnet_quant.tflite": [0, 4, 6, 9, 14],
    "vww_96_int8.tflite": [2, 12, 24, 29],
}


def _layers():
    out = []
    for name, ops in LAYERS.items():
        g = load(shared_model(name))
        maps = mapping.map_graph(g)
        for i in ops:
            assert maps[i].opcode in ("CONV_2D", "FULLY_CONNECTED"), (name, i, maps[i].opcode)
            out.append((name, maps[i]))
    return out


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_compute_cycles_within_5pct_of_scalesim(dataflow):
    layers = _layers()
    ref = scalesim_ref.run([L for _, L in layers], 16, 16, dataflow, sram_kib=1024)
    assert len(ref["layers"]) == len(layers)
    cfg = config.HwConfig(rows=16, cols=16, dataflow=dataflow, ifmap_sram_kib=4096, weight_sram_kib=4096,
                          output_sram_kib=4096, requant_depth=5)
    for (name, L), r in zip(layers, ref["layers"]):
        assert r["stall_cycles"] == 0, (name, L.index, "SCALE-Sim stalled: the comparison needs no stalls")
        ours = timing.time_layer(L, cfg)
        assert ours.tiles == 1  # whole layer resident, like SCALE-Sim's no-stall run
        theirs = r["compute_cycles"]
        assert abs(ours.array_cycles - theirs) <= 0.05 * theirs, (name, L.index, ours.array_cycles, theirs)
        assert ours.array_cycles - theirs == 1, (name, L.index, ours.array_cycles, theirs)


# Whole-model SCALE-Sim 3.0.0 compute cycles measured on this project's machine (16x16, 64 KiB SRAMs,
# no stalls; depthwise layers split by SCALE-Sim into one conv per channel): from the issue text.
WHOLE_MODEL = {("pretrainedResnet_quant.tflite", "os"): 58_996, ("pretrainedResnet_quant.tflite", "ws"): 63_130,
               ("vww_96_int8.tflite", "os"): 297_783, ("vww_96_int8.tflite", "ws"): 210_567}


@pytest.mark.parametrize("name, dataflow", sorted(WHOLE_MODEL))
def test_whole_model_array_cycles_match_recorded_scalesim_totals(name, dataflow):
    g = load(shared_model(name))
    cfg = config.HwConfig(rows=16, cols=16, dataflow=dataflow, ifmap_sram_kib=4096, weight_sram_kib=4096,
                          output_sram_kib=4096, requant_depth=5)
    layers = [L for L in mapping.map_graph(g) if L.unit == "array"]
    ours = sum(timing.time_layer(L, cfg).array_cycles for L in layers)
    scalesim_layers = sum(L.groups for L in layers)  # SCALE-Sim: one layer per depthwise channel
    theirs = WHOLE_MODEL[(name, dataflow)]
    assert abs(ours - theirs) <= 0.05 * theirs
    assert ours - theirs == scalesim_layers  # the one-cycle-per-layer reporting offset, nothing else
