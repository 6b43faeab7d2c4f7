"""Energy per layer: access counts of the mapped, timed layer times the preset's per-access energies.

Units: picojoules (pJ); per-access energies from ``HwConfig.energy_*`` (defaults and their source,
Horowitz ISSCC 2014 at 45 nm, in ``qsim/presets/*.toml``).  Four components:

* ``mac``: every multiply-accumulate of an array layer (``LayerMap.macs``) x ``energy_mac_pj``; an
  int16x8 MAC counts twice (two 8x8 passes, or a 16x8 multiplier of about twice the 8x8 one's
  energy and a 64-bit accumulate); a uint8 MAC 9/8 (an 8x9-bit multiplier: the weights centred
  to 9 bits, :mod:`qsim.accel.mapping`), its weights 9 bits in the buffers;
* ``sram``: bytes moved through the on-chip buffers x ``energy_sram_byte_pj``:
  - DMA: every DRAM byte read is written into a buffer, every byte written is read from one;
  - array, per GEMM (x ``groups``, x ``steps`` of a recurrent GEMM), folds as in :mod:`qsim.accel.timing`: the input operand is
    streamed once per column fold (``M*K*ceil(N/cols)``); weights are read once per fold
    (weight-stationary: ``K*N``) or once per row fold (output-stationary: ``K*N*ceil(M/rows)``);
    weight-stationary partial sums go through the output buffer as accumulator words (4 bytes;
    int16x8: 8), written every K fold and read back every fold after the first
    (``4*M*N*(2*ceil(K/rows) - 1)``); the outputs are written once (``M*N`` elements);
    int16 activations and outputs count 2 bytes per element;
  - vector layers: their input and output tensors read/written once (``ifmap_bytes + output_bytes``);
* ``dram``: ``dram_read_bytes + dram_write_bytes`` of the layer's timing x ``energy_dram_byte_pj``;
* ``requant``: every output of an array or vector layer through the requant unit (or the vector
  unit's rescale) x ``energy_requant_pj``.

"Free" layers (reshapes) cost nothing.  Leakage, clock tree and control are not modelled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .config import HwConfig
from .mapping import LayerMap
from .timing import LayerTiming


# The HwConfig fields layer_energy reads besides the array's shape and dataflow (rows, cols, dataflow)
ENERGY_FIELDS = ("energy_mac_pj", "energy_sram_byte_pj", "energy_dram_byte_pj", "energy_requant_pj")


@dataclass
class LayerEnergy:
    """Energy of one layer in picojoules, by component, and the SRAM bytes it was computed from."""

    mac_pj: float = 0.0
    sram_pj: float = 0.0
    dram_pj: float = 0.0
    requant_pj: float = 0.0
    sram_bytes: int = 0

    @property
    def total_pj(self) -> float:
        return self.mac_pj + self.sram_pj + self.dram_pj + self.requant_pj


def sram_bytes(lm: LayerMap, lt: LayerTiming, cfg: HwConfig) -> int:
    """Bytes read or written in the on-chip buffers by one layer (module doc)."""
    if lm.unit == "free":
        return 0
    dma = lt.dram_read_bytes + lt.dram_write_bytes
    if lm.unit != "array":
        return dma + lm.ifmap_bytes + lm.output_bytes
    m, k, n = lm.m, lm.k, lm.n
    col_folds = math.ceil(n / cfg.cols)
    if cfg.dataflow == "ws":
        k_folds = math.ceil(k / cfg.rows)
        per_group = (m * k * col_folds * lm.in_elem_bytes + lm.weight_stream_bytes(k * n) + lm.acc_bytes * m * n * (2 * k_folds - 1)
                     + m * n * lm.out_elem_bytes)
    else:
        per_group = (m * k * col_folds * lm.in_elem_bytes + lm.weight_stream_bytes(k * n) * math.ceil(m / cfg.rows)
                     + m * n * lm.out_elem_bytes)
    return dma + lm.groups * lm.steps * per_group


def output_elements(lm: LayerMap) -> int:
    """Values through the requant unit (array) or the vector unit's rescale: the op's output
    elements, or for a part of a multi-part op (LSTM, SVDF) the part's own outputs (an array
    part: M x N per step)."""
    if lm.part and lm.unit == "array":
        return lm.m * lm.n * lm.steps
    return math.prod(lm.out_shape) if lm.out_shape else 1


def mac_energy_factor(lm: LayerMap) -> float:
    """An array op's MAC energy in units of ``mac_pj`` (one 8x8-bit MAC): 2 for int16x8 layers
    (two passes, or a 16x8 multiplier), 9/8 for uint8 layers (8x9-bit: the centred 9-bit weights)."""
    return (2.0 if lm.in_elem_bytes == 2 else 1.0) * lm.weight_bits / 8


def layer_energy(lm: LayerMap, lt: LayerTiming, cfg: HwConfig) -> LayerEnergy:
    """The layer's energy by component (module doc)."""
    if lm.unit == "free":
        return LayerEnergy()
    sb = sram_bytes(lm, lt, cfg)
    mac_pj = lm.macs * cfg.energy_mac_pj * mac_energy_factor(lm) if lm.unit == "array" else 0.0
    return LayerEnergy(mac_pj=mac_pj,
                       sram_pj=sb * cfg.energy_sram_byte_pj,
                       dram_pj=(lt.dram_read_bytes + lt.dram_write_bytes) * cfg.energy_dram_byte_pj,
                       requant_pj=output_elements(lm) * cfg.energy_requant_pj, sram_bytes=sb)
