"""Cycle-approximate model of an int8 systolic MAC-array accelerator (``qsim profile``).

A Vela-like pipeline, one module per stage, plain dataclasses in between:

    config.HwConfig (presets in qsim/presets/*.toml)
    graph --mapping.map_graph--> [LayerMap] (one per op; LSTM / SVDF: one per GEMM or vector part)
          --timing.time_layer--> [LayerTiming]
          --energy.layer_energy--> [LayerEnergy] (pJ: MACs, SRAM, DRAM, requant)
          --datapath.run_values--> values + [LayerValues]      (profile.profile_graph ties them;
          profile.prepare_profile times a graph once, then .run(inputs) adds values per input)
          --> report (table / CSV / JSON), trace (Chrome/Perfetto trace events)

Validation against SCALE-Sim v3 (tests/test_accel_scalesim.py, benchmarks/profile_speed.py):
qsim's array cycles use the same fold model as SCALE-Sim (OS: folds x (K + R + C - 2);
WS: folds x (M + 2R + C - 2); folds never overlap) and agree to within one cycle per
layer: SCALE-Sim's "Total Cycles" is one lower because it reports the index of the
cycle in which the last output is written, qsim the number of cycles the folds occupy.
Where qsim departs from SCALE-Sim on purpose: SRAM tiling (a layer whose operands do
not fit the double-buffered SRAM halves is split into tiles, and each weight-stationary
tile reloads its weights), block-diagonal packing of depthwise channels on tall WS
arrays (SCALE-Sim runs one conv per channel), DRAM modelled as one port with a fixed
latency per access, and the requant / vector units, which SCALE-Sim does not model.
SCALE-Sim streams a whole layer through the array whatever its SRAM size (a small SRAM
only adds stall cycles), so at equal 64 KiB buffers qsim's tiled array cycles are higher
where a layer does not fit: pretrainedResnet_quant 16x16 OS +0.02%, WS +1.5%;
vww_96_int8 OS +1.5%, WS +5.1% (row tiles that are not a multiple of the array rows
leave partial folds; each WS tile pays the weight load and fill/drain again).
"""
