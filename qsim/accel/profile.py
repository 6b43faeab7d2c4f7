"""The accelerator model's pipeline: graph -> mapping -> timing (+ values) -> a performance estimate.

    result = profile_graph(graph, cfg, inputs)        # inputs None: timing only
    pp = prepare_profile(graph, cfg)                  # timing once per (graph, machine) ...
    result = pp.run(inputs)                           # ... then values for each input

Stages, each a module with plain data between them:
:mod:`mapping` (LayerMap per op) -> :mod:`timing` (LayerTiming per op) ->
:mod:`datapath` (values and LayerValues per GEMM op) -> :class:`ProfileResult`.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .. import ir
from ..errors import UnsupportedModelError
from ..interpreter import PreparedGraph, check_quantized, op_label, prepare_graph, unsupported_ops
from . import datapath, energy, mapping, timing
from .config import HwConfig


@dataclass
class LayerReport:
    map: mapping.LayerMap
    timing: timing.LayerTiming
    values: datapath.LayerValues | None = None
    start_cycle: int = 0
    energy: energy.LayerEnergy | None = None

    def as_dict(self) -> dict:
        m, t = self.map, self.timing
        d = {"index": m.index, "op": m.opcode, "part": m.part, "name": m.name, "unit": m.unit, "shape": list(m.out_shape),
             "macs": m.macs, "gemm_mkn": [m.m, m.k, m.n] if m.unit == "array" else None,
             "groups": m.groups, "steps": m.steps, "start_cycle": self.start_cycle, "cycles": t.cycles,
             "array_cycles": t.array_cycles, "stream_cycles": t.stream_cycles,
             "fill_drain_cycles": t.fill_drain_cycles, "requant_cycles": t.requant_cycles,
             "vector_cycles": t.vector_cycles, "dram_cycles": t.dram_cycles, "setup_cycles": t.setup_cycles,
             "stall_cycles": t.stall_cycles, "utilization_pct": round(100 * t.utilization, 3),
             "dram_read_bytes": t.dram_read_bytes, "dram_write_bytes": t.dram_write_bytes,
             "bound": t.bound, "tiles": t.tiles, "tile_rows": t.tile_rows, "tile_channels": t.tile_channels}
        e = self.energy
        if e is not None:
            d.update(energy_pj=e.total_pj, energy_mac_pj=e.mac_pj, energy_sram_pj=e.sram_pj,
                     energy_dram_pj=e.dram_pj, energy_requant_pj=e.requant_pj, sram_bytes=e.sram_bytes)
        v = self.values
        if v is not None:
            d.update(acc_min=v.acc_min, acc_max=v.acc_max, acc_nobias_min=v.acc_nobias_min,
                     acc_nobias_max=v.acc_nobias_max, acc_bits_used=v.acc_bits_used,
                     acc_overflows=v.overflow_count, output_saturations=v.int8_saturations,
                     activation_clamps=v.activation_clamps, outputs_changed=v.outputs_changed)
        return d


@dataclass
class ProfileResult:
    cfg: HwConfig
    layers: list[LayerReport]
    values: dict[int, np.ndarray] | None = None
    source: str = ""
    totals: dict = field(default_factory=dict)
    input: str = ""  # where the values came from (file name, "random (seed N)"), "" = timing only

    def as_dict(self) -> dict:
        return {"model": self.source, "input": self.input or None, "hardware": self.cfg.as_dict(),
                "totals": self.totals,
                "layers": [L.as_dict() for L in self.layers]}


# LayerMap fields the schedule depends on (all but the op's identity)
_GEOMETRY = tuple(f.name for f in dataclasses.fields(mapping.LayerMap) if f.name not in ("index", "name", "part", "scalesim"))


def geometry_key(lm: mapping.LayerMap) -> tuple:
    """What the schedule of ``lm`` depends on (all LayerMap fields but the op's identity)."""
    return tuple(getattr(lm, f) for f in _GEOMETRY)


def time_graph(g: ir.Graph, cfg: HwConfig, events: bool = True,
               maps: list[tuple[mapping.LayerMap, tuple]] | None = None,
               cache: dict | None = None) -> list[LayerReport]:
    """Mapping + timing for every op, layers back to back (``events``: keep trace spans).

    A layer with the same geometry as an earlier one (repeated blocks) gets a copy of its
    timing instead of a second schedule: the schedule is a function of the geometry and
    the machine only (trace spans are relative to the layer's start).  ``maps``: the
    graph's ``(LayerMap, geometry_key)`` pairs when already computed (:func:`map_layers`;
    they do not depend on the machine, a sweep maps a graph once).  ``cache``: a dict kept
    across calls (timing without events only), by geometry and the machine's fields each
    result reads: layer timings by :func:`timing.schedule_key` of the layer's unit (machines
    differing only in clock, rounding, accumulator...; for vector layers also the array, are
    scheduled once), SRAM tiles by :func:`timing.tiling_key` (machines differing only in DRAM,
    requant or setup figures share them), energies by the schedule key and the energy fields.
    The cached timing and energy objects are shared by every result: read-only.
    """
    reports, clock = [], 0
    if cache is None or events:
        known: dict = {}
        for lm, key in (map_layers(g) if maps is None else maps):
            lt = known.get(key)
            lt = copy.copy(lt) if lt is not None else known.setdefault(key, timing.time_layer(lm, cfg, events))
            reports.append(LayerReport(lm, lt, start_cycle=clock, energy=energy.layer_energy(lm, lt, cfg)))
            clock += lt.cycles
        return reports
    units = ("array", "vector", "free")
    skeys = {u: timing.schedule_key(cfg, u) for u in units}
    tkeys = {u: ("tiles", timing.tiling_key(cfg, u)) for u in units}
    efields = ("energy", *(getattr(cfg, f) for f in energy.ENERGY_FIELDS))
    for lm, key in (map_layers(g) if maps is None else maps):
        skey = (key, skeys[lm.unit])
        lt = cache.get(skey)
        if lt is None:
            tkey = (key, tkeys[lm.unit])
            tiles = cache.get(tkey)
            if tiles is None and lm.unit != "free":
                tiles = cache[tkey] = timing.layer_tiles(lm, cfg)
            lt = cache[skey] = timing.time_layer(lm, cfg, events, tiles)
        ekey = (skey, efields)
        le = cache.get(ekey)
        if le is None:
            le = cache[ekey] = energy.layer_energy(lm, lt, cfg)
        reports.append(LayerReport(lm, lt, start_cycle=clock, energy=le))
        clock += lt.cycles
    return reports


def map_layers(g: ir.Graph) -> list[tuple[mapping.LayerMap, tuple]]:
    """``(LayerMap, geometry_key)`` of every op, in execution order (machine independent)."""
    return [(lm, geometry_key(lm)) for lm in mapping.map_graph(g)]


def timing_totals(layers: list[LayerReport], cfg: HwConfig) -> dict:
    """Whole-model figures from the layers' mapping and timing (independent of the values).

    One pass over the layers (a sweep calls this per machine); every sum adds the layers in
    order from 0, as ``sum()`` would."""
    cycles = array_cycles = stalls = macs = rd = wr = 0
    for L in layers:
        t = L.timing
        cycles += t.cycles
        array_cycles += t.array_cycles
        stalls += t.stall_cycles
        macs += L.map.macs
        rd += t.dram_read_bytes
        wr += t.dram_write_bytes
    seconds = cycles / (cfg.clock_mhz * 1e6)
    return {"cycles": cycles, "array_cycles": array_cycles, "stall_cycles": stalls, "macs": macs,
            "latency_ms": seconds * 1e3, "inferences_per_s": (1.0 / seconds) if seconds else 0.0,
            "mac_utilization_pct": 100.0 * macs / (cycles * cfg.macs_per_cycle) if cycles else 0.0,
            "dram_read_bytes": rd, "dram_write_bytes": wr, "dram_bytes": rd + wr, **energy_totals(layers)}


def energy_totals(layers: list[LayerReport]) -> dict:
    """Energy per inference in picojoules, in total and by component (:mod:`qsim.accel.energy`)."""
    total = mac = sram = dram = requant = sram_bytes = 0
    for L in layers:
        e = L.energy
        if e is None:
            continue
        total += e.total_pj
        mac += e.mac_pj
        sram += e.sram_pj
        dram += e.dram_pj
        requant += e.requant_pj
        sram_bytes += e.sram_bytes
    return {"energy_pj": total, "energy_mac_pj": mac, "energy_sram_pj": sram, "energy_dram_pj": dram,
            "energy_requant_pj": requant, "sram_bytes": sram_bytes}


def value_totals(vals: list[datapath.LayerValues]) -> dict:
    """Whole-model datapath statistics ({} when no values were computed)."""
    if not vals:
        return {}
    return {"acc_overflows": sum(v.overflow_count for v in vals),
            "output_saturations": sum(v.int8_saturations for v in vals),
            "activation_clamps": sum(v.activation_clamps for v in vals),
            "layer_outputs_changed": sum(v.outputs_changed for v in vals),
            "acc_bits_used": max(v.acc_bits_used for v in vals),
            "acc_min": min(v.acc_min for v in vals), "acc_max": max(v.acc_max for v in vals),
            "acc_nobias_min": min(v.acc_nobias_min for v in vals),
            "acc_nobias_max": max(v.acc_nobias_max for v in vals)}


def totals(layers: list[LayerReport], cfg: HwConfig) -> dict:
    out = timing_totals(layers, cfg)
    out.update(value_totals([L.values for L in layers if L.values is not None]))
    return out


def check_profilable(g: ir.Graph, values: bool = True) -> None:
    """QsimError unless ``g`` is an int8 model whose every op qsim can run (``values``).

    Timing only (``values`` False) needs the mapping alone: an op qsim cannot compute
    (an int16 op without an int16x8 kernel, an unknown op) is timed (on the vector unit
    when it is not a GEMM); a float model is still refused (an integer machine).  int16x8
    layers get their values from the int16x8 kernels (64-bit accumulators, TFLite's int64
    requant); the accumulator register model and its statistics cover the int8 GEMM layers
    (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) only.  UNIDIRECTIONAL_SEQUENCE_LSTM and SVDF
    are timed as their GEMM + vector parts (:mod:`qsim.accel.mapping`) and get their values from
    their simulator kernels: their internal accumulators are not modelled (no statistics).
    uint8 (old converter) layers run as their int8 twins with weights centred offline to 9-bit
    signed (:func:`qsim.accel.datapath.run_values`, :mod:`qsim.accel.mapping`); their values are
    defined by LiteRT BUILTIN_REF only (:func:`check_uint8_profile`).
    """
    check_quantized(g)  # an integer machine: a float model is refused even for timing only
    if not values:
        return
    # values need every op's kernel (int16x8 layers run on the array; LSTM and SVDF through
    # their kernels' eval, datapath.run_values)
    problems = unsupported_ops(g, int16=True, uint8=True)
    if problems:
        raise UnsupportedModelError(f"{g.source or 'the model'} uses {len(problems)} op(s) whose values the "
                                    "accelerator model cannot compute (--no-values times the layers without "
                                    "them):\n  - " + "\n  - ".join(problems))


def check_uint8_profile(g: ir.Graph, rounding_profile: str) -> None:
    """UnsupportedModelError when ``g`` has uint8 ops whose values the rounding profile leaves
    undefined: TFLite Micro (profiles ``tflm``, ``cmsis-nn``) has no uint8 kernels for them, so
    only LiteRT BUILTIN_REF (``litert``) or a what-if rounding (``single``) defines them."""
    from ..kernels.uint8 import tflm_uint8_refusals
    if rounding_profile not in ("tflm", "cmsis-nn"):
        return
    refused = tflm_uint8_refusals(g)
    if refused:
        raise UnsupportedModelError(
            f"{g.source or 'the model'} has {len(refused)} uint8 op(s) (the old converter's QUANTIZED_UINT8) that "
            f"TFLite Micro has no kernel for, so the '{rounding_profile}' rounding profile defines no values for "
            "them; profile it with LiteRT BUILTIN_REF's arithmetic: --rounding-profile litert (preset "
            "requant.profile = \"litert\"), or --no-values for timing only:\n  - " + "\n  - ".join(refused))


@dataclass
class PreparedProfile:
    """A graph made ready to profile on one machine: validated, mapped and timed once.

    The timing does not depend on the values, so it is computed here once per
    (graph, machine) and shared by every :meth:`run`, which only pushes values
    through the modelled datapath (like :class:`qsim.interpreter.PreparedGraph`
    for the functional run).  The layers' ``map`` / ``timing`` objects are shared
    between the results of every run: treat them as read-only.
    """

    graph: ir.Graph
    cfg: HwConfig
    timed: list[LayerReport]  # mapping + timing, no values
    base_totals: dict  # timing_totals() of the layers
    prepared: PreparedGraph | None = None  # kernels prepared with cfg.rounding_profile and cfg.variant (first use)
    reference: PreparedGraph | None = None  # the same without the requant variant (the exact result)
    sides: dict | None = None  # datapath.gemm_sides of the GEMM ops (first use)

    def run(self, inputs=None) -> ProfileResult:
        """The profile; with ``inputs`` (as PreparedGraph.run takes them) also the values and their statistics."""
        g, cfg = self.graph, self.cfg
        if inputs is None:
            layers = [LayerReport(L.map, L.timing, None, L.start_cycle, L.energy) for L in self.timed]
            return ProfileResult(cfg, layers, None, g.source, dict(self.base_totals))
        if self.prepared is None:
            check_profilable(g)
            check_uint8_profile(g, cfg.rounding_profile)
            self.prepared = prepare_graph(g, cfg.rounding_profile, cfg.variant)
        if cfg.variant is not None and self.reference is None:
            self.reference = prepare_graph(g, cfg.rounding_profile)
        if self.sides is None:
            self.sides = datapath.gemm_sides(self.prepared)
        values, stats = datapath.run_values(self.prepared, inputs, unit=accumulator(cfg), reference=self.reference,
                                            sides=self.sides)
        layers = [LayerReport(L.map, L.timing, stats.get(L.map.index), L.start_cycle, L.energy) for L in self.timed]
        out = dict(self.base_totals)
        out.update(value_totals([v for v in (L.values for L in layers) if v is not None]))
        out.update(self._outputs_changed(inputs, values, out))
        return ProfileResult(cfg, layers, values, g.source, out)

    def _outputs_changed(self, inputs, values, tot) -> dict:
        """Graph output elements that differ from the exact run (the profile's own arithmetic,
        int32 accumulators): run only when a variant or an overflow could have changed them."""
        g = self.graph
        n = sum(int(np.asarray(values[t]).size) for t in g.outputs)
        if self.reference is None and not tot.get("acc_overflows"):
            return {"outputs_changed": 0, "output_elements": n}
        exact = (self.reference or self.prepared).run(inputs, keep_all=False)
        changed = sum(int(np.count_nonzero(np.asarray(values[t]).reshape(-1) != np.asarray(exact[t]).reshape(-1)))
                      for t in g.outputs)
        return {"outputs_changed": changed, "output_elements": n}


def accumulator(cfg: HwConfig) -> datapath.Accumulator:
    """The machine's accumulator register (:class:`qsim.accel.datapath.Accumulator`); K folds of
    ``rows`` reduction elements on a weight-stationary array, none on an output-stationary one."""
    return datapath.Accumulator(cfg.acc_bits, cfg.acc_overflow, cfg.acc_bias, cfg.acc_check,
                                cfg.rows if cfg.dataflow == "ws" else None)


def prepare_profile(g: ir.Graph, cfg: HwConfig, prepared: PreparedGraph | None = None,
                    events: bool = True, values: bool = True,
                    maps: list[tuple[mapping.LayerMap, tuple]] | None = None,
                    cache: dict | None = None, checked: bool = False) -> PreparedProfile:
    """Validate, map and time ``g`` on ``cfg`` once; :meth:`PreparedProfile.run` then adds values.

    ``prepared``: an already prepared graph, reused when its profile is ``cfg.rounding_profile`` and
    its requant variant ``cfg.variant`` (else the kernels are prepared again on the first run with inputs).
    ``events``: record the per-tile spans a trace needs (off saves time when no trace is written).
    ``values`` False: timing only, so ops qsim cannot compute are accepted (a later ``run``
    with inputs refuses them).  ``maps``, ``cache``: see :func:`time_graph`.  ``checked``: the
    caller already ran :func:`check_profilable` on ``g`` (a sweep, once per model, not per machine).
    """
    if not checked:
        check_profilable(g, values)
    layers = time_graph(g, cfg, events, maps, cache)
    if prepared is not None and (prepared.profile.name != cfg.rounding_profile or prepared.requant != cfg.variant):
        prepared = None
    return PreparedProfile(g, cfg, layers, timing_totals(layers, cfg), prepared)


def profile_graph(g: ir.Graph, cfg: HwConfig, inputs=None, prepared: PreparedGraph | None = None,
                  events: bool = True) -> ProfileResult:
    """Timing for every layer; with ``inputs`` also the values through the modelled datapath.

    ``prepared``: reuse an already prepared graph (used when its profile is ``cfg.rounding_profile``).
    ``events``: record the per-tile spans a trace needs (off saves time when no trace is written).
    To profile many inputs on one machine, :func:`prepare_profile` once and ``run`` each input.
    """
    return prepare_profile(g, cfg, prepared, events).run(inputs)
