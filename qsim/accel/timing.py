"""Stage 2 of the accelerator model: LayerMap + HwConfig -> tiles -> a cycle schedule per layer.

Array (GEMM) cycles per fold follow the systolic-array model SCALE-Sim uses,
so the two agree by construction on compute cycles (tests/test_accel_scalesim.py):

* output-stationary: a fold is R output pixels x C output channels; it takes
  ``K`` cycles of streaming plus ``R-1`` fill (skew) and ``C-1`` drain
  cycles.  Folds = ceil(M/R) * ceil(N/C).
* weight-stationary: a fold is R reduction rows x C output channels; ``R``
  cycles to load the weights, ``M`` cycles of streaming, ``R-1`` fill (skew)
  and ``C-1`` drain.  Folds = ceil(K/R) * ceil(N/C).
  Folds do not overlap (outputs drain before the next fold starts), as in
  SCALE-Sim.

SRAM tiling (double buffered: each buffer is two halves, one being filled by
DMA while the other is used): a tile is a chunk of output rows x a chunk of
output channels such that its weights fit half the weight buffer, its input
window half the ifmap buffer and its int32 accumulators half the output
buffer.  Tiles run in order ``for channel chunk: for row chunk``; the weight
chunk is loaded once per channel chunk, the input once when it fits whole.

The schedule is a fixed-order max-plus recurrence (so more bandwidth can only
move events earlier, and fewer requant lanes only later):

* one DRAM port serves, in order, the layer's requant tables, then
  L0, L1, S0, L2, S1, ... (L = tile load, S = tile store); an access costs
  ``dram_latency_cycles + ceil(bytes / dram_bytes_per_cycle)``;
* load(t) may start once compute(t-2) has freed its buffer half;
* compute(t) starts when load(t) is done, compute(t-1) is done and store(t-2)
  has freed its output half; it lasts max(array cycles, requant cycles): the
  requant unit (``lanes`` outputs/cycle) consumes outputs as the array drains;
* store(t) starts ``requant_depth`` cycles after compute(t) ends.

Vector-unit layers use the same recurrence with ``ceil(ops / vector_lanes)``
compute per tile.  Every array/vector layer starts with ``layer_setup_cycles``
(descriptor decode) before its first DMA.  Layers run back to back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

from ..errors import QsimError
from .config import HwConfig
from .mapping import LayerMap

ACC_BYTES = 4  # accumulators are held as 32-bit words in the output SRAM

# The HwConfig fields the schedule reads (besides resolved_requant_depth()); a layer's timing
# is a function of its geometry and schedule_key(cfg) only (tests/test_sweep.py checks it).
SCHEDULE_FIELDS = ("rows", "cols", "dataflow", "ifmap_sram_kib", "weight_sram_kib", "output_sram_kib",
                   "dram_bytes_per_cycle", "dram_latency_cycles", "requant_lanes", "vector_lanes",
                   "layer_setup_cycles")


def schedule_key(cfg: HwConfig) -> tuple:
    """Everything of ``cfg`` that :func:`time_layer` depends on (a cache key)."""
    return tuple(getattr(cfg, f) for f in SCHEDULE_FIELDS) + (cfg.resolved_requant_depth(),)


@dataclass
class Tile:
    load_bytes: int
    compute_cycles: int  # array (or vector) busy cycles
    stream_cycles: int  # array cycles spent streaming operands (the rest is fill/drain/weight load)
    outputs: int  # values through the requant unit
    store_bytes: int


@dataclass
class LayerTiming:
    """Cycle figures of one layer (all in clock cycles, relative to the layer's start)."""

    cycles: int = 0
    setup_cycles: int = 0
    array_cycles: int = 0  # MAC-array busy cycles (SCALE-Sim's "compute cycles")
    stream_cycles: int = 0
    fill_drain_cycles: int = 0
    requant_cycles: int = 0
    vector_cycles: int = 0
    dram_cycles: int = 0
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    stall_cycles: int = 0  # compute engine idle, waiting for DMA, after setup
    bound: str = "none"
    tiles: int = 0
    tile_rows: int = 0
    tile_channels: int = 0
    utilization: float = 0.0  # MACs / (cycles * rows * cols)
    events: list = field(default_factory=list)  # (lane, label, start, duration[, args dict])


# ----------------------------------------------------------------------------- array cycles

@lru_cache(maxsize=4096)
def gemm_cycles(m: int, k: int, n: int, rows: int, cols: int, dataflow: str) -> tuple[int, int]:
    """(cycles, streaming cycles) of an M x K x N GEMM folded onto a rows x cols array."""
    if m <= 0 or k <= 0 or n <= 0:
        return 0, 0
    if dataflow == "os":
        folds = math.ceil(m / rows) * math.ceil(n / cols)
        return folds * (k + rows + cols - 2), folds * k
    folds = math.ceil(k / rows) * math.ceil(n / cols)
    return folds * (m + 2 * rows + cols - 2), folds * m


@lru_cache(maxsize=4096)
def depthwise_cycles(m: int, k: int, mult: int, channels: int, rows: int, cols: int,
                     dataflow: str) -> tuple[int, int]:
    """Depthwise: one M x K x mult GEMM per channel.

    Weight-stationary arrays pack ``g = min(rows // K, cols // mult)`` channels
    block-diagonally in one fold (channel c's K taps on its own rows and its
    own columns); output-stationary arrays cannot share an input row between
    channels, so each channel is its own fold set.
    """
    if dataflow == "ws" and k <= rows and mult <= cols:
        g = max(1, min(rows // k, cols // mult))
        folds = math.ceil(channels / g)
        return folds * (m + 2 * rows + cols - 2), folds * m
    c, s = gemm_cycles(m, k, mult, rows, cols, dataflow)
    return channels * c, channels * s


# ----------------------------------------------------------------------------- tiling

def _input_rows(L: LayerMap, out_rows: int) -> int:
    return min(L.in_rows, (out_rows - 1) * L.row_stride + L.window_rows)


def _input_density(L: LayerMap) -> float:
    """Stored bytes per walked byte (< 1 when the walk covers padding rows/cols)."""
    walked = L.in_rows * L.in_row_bytes
    return min(1.0, L.ifmap_bytes / walked) if walked else 1.0


def choose_tile(L: LayerMap, cfg: HwConfig) -> tuple[int, int]:
    """(output rows, output channels) per SRAM tile; QsimError when not even one tile fits."""
    cout = L.n * L.groups
    unit = L.n if L.depthwise else min(cfg.cols, cout)  # channel granularity
    if_half = cfg.sram_bytes("ifmap") // 2
    w_half = cfg.sram_bytes("weight") // 2
    o_half = cfg.sram_bytes("output") // 2
    need_w = L.k * unit
    need_o = L.pixels_per_row * unit * ACC_BYTES
    ch_frac = unit / cout if L.depthwise else 1.0
    need_i = math.ceil(_input_rows(L, 1) * L.in_row_bytes * ch_frac)
    short = []
    if need_w > w_half:
        short.append(f"weights need {need_w} B per tile (K={L.k} x {unit} channels) but half the weight SRAM is {w_half} B")
    if need_i > if_half:
        short.append(f"one output row's input window needs {need_i} B but half the ifmap SRAM is {if_half} B")
    if need_o > o_half:
        short.append(f"one output row's int32 accumulators need {need_o} B but half the output SRAM is {o_half} B")
    if short:
        raise QsimError(f"SRAM smaller than one tile for op #{L.index} {L.opcode} ('{L.name}'): "
                        + "; ".join(short) + ". Increase the SRAM sizes (--sram-kib / --ifmap-sram-kib / "
                        "--weight-sram-kib / --output-sram-kib) or use a smaller array.")
    nc = min(cout, (w_half // L.k) // unit * unit)
    nc = min(nc, max(unit, (o_half // (L.pixels_per_row * ACC_BYTES)) // unit * unit))
    ch_frac = nc / cout if L.depthwise else 1.0
    per_row_in = L.in_row_bytes * ch_frac
    r_in = int((if_half / per_row_in - L.window_rows) // L.row_stride) + 1 if per_row_in else L.out_rows
    r_out = o_half // (L.pixels_per_row * nc * ACC_BYTES)
    r = max(1, min(L.out_rows, r_in, r_out))
    return r, nc


def array_tiles(L: LayerMap, cfg: HwConfig) -> tuple[list[Tile], int, int]:
    r, nc = choose_tile(L, cfg)
    cout = L.n * L.groups
    density = _input_density(L)
    whole_input = r >= L.out_rows and not L.depthwise
    tiles = []
    for c0 in range(0, cout, nc):
        cn = min(nc, cout - c0)
        ch_frac = cn / cout if L.depthwise else 1.0
        for r0 in range(0, L.out_rows, r):
            rn = min(r, L.out_rows - r0)
            m = rn * L.pixels_per_row
            load = L.k * cn if r0 == 0 else 0
            if not (whole_input and c0 > 0):
                load += math.ceil(_input_rows(L, rn) * L.in_row_bytes * ch_frac * density)
            if L.depthwise:
                cyc, stream = depthwise_cycles(m, L.k, L.n, cn // L.n, cfg.rows, cfg.cols, cfg.dataflow)
            else:
                cyc, stream = gemm_cycles(m, L.k, cn, cfg.rows, cfg.cols, cfg.dataflow)
            tiles.append(Tile(load, cyc, stream, m * cn, m * cn))
    return tiles, r, nc


def vector_tiles(L: LayerMap, cfg: HwConfig) -> list[Tile]:
    n = max(1, math.ceil((L.ifmap_bytes + L.weight_bytes) / (cfg.sram_bytes("ifmap") // 2)),
            math.ceil(L.output_bytes / (cfg.sram_bytes("output") // 2)))
    tiles = []
    for i in range(n):
        share = lambda total: total * (i + 1) // n - total * i // n  # noqa: E731 - exact integer split
        ops = share(L.vector_ops)
        tiles.append(Tile(share(L.ifmap_bytes + L.weight_bytes), math.ceil(ops / cfg.vector_lanes), 0, 0,
                          share(L.output_bytes)))
    return tiles


# ----------------------------------------------------------------------------- schedule

def time_layer(L: LayerMap, cfg: HwConfig, events: bool = True) -> LayerTiming:
    """Schedule one layer; see the module docstring for the recurrence.

    ``events``: also record (lane, label, start, duration, details) spans for the trace.
    """
    if L.unit == "free":
        return LayerTiming(bound="none")
    lt = LayerTiming(setup_cycles=cfg.layer_setup_cycles)
    is_array = L.unit == "array"
    if is_array:
        tiles, lt.tile_rows, lt.tile_channels = array_tiles(L, cfg)
        depth = cfg.resolved_requant_depth()
        lanes = cfg.requant_lanes
    else:
        tiles, depth, lanes = vector_tiles(L, cfg), 0, 0
    lat, bw = cfg.dram_latency_cycles, cfg.dram_bytes_per_cycle
    t0 = cfg.layer_setup_cycles
    ev = lt.events if events else None
    port = t0  # the DRAM port is free from this cycle on
    dram_busy = 0
    if is_array and L.table_bytes:
        d = lat + math.ceil(L.table_bytes / bw)
        port += d
        dram_busy += d
        if ev is not None:
            ev.append(("dma", "requant tables", t0, d))
    n = len(tiles)
    comp_end = [0] * n
    store_end = [0] * n
    # load(t) is issued on the port in order L0, L1, S0, L2, S1, ...; ready once compute(t-2) is done
    b = tiles[0].load_bytes
    d = lat + math.ceil(b / bw) if b > 0 else 0
    next_load_end = port + d
    if ev is not None and d:
        ev.append(("dma", "load tile 0", port, d))
    port = next_load_end
    dram_busy += d
    prev_comp = t0
    stalls = requant_busy = 0
    end = t0
    engine = "array" if is_array else "vector"
    for t in range(n):
        tile = tiles[t]
        load_end_t = next_load_end
        if t + 1 < n:
            ready = comp_end[t - 1] if t >= 1 else t0
            b = tiles[t + 1].load_bytes
            d = lat + math.ceil(b / bw) if b > 0 else 0
            start_l = port if port > ready else ready
            next_load_end = port = start_l + d
            dram_busy += d
            if ev is not None and d:
                ev.append(("dma", f"load tile {t + 1}", start_l, d))
        start = load_end_t if load_end_t > prev_comp else prev_comp
        if t >= 2 and store_end[t - 2] > start:
            start = store_end[t - 2]
        stalls += start - prev_comp
        rq = -(-tile.outputs // lanes) if is_array else 0
        cc = tile.compute_cycles
        prev_comp = comp_end[t] = start + (cc if cc > rq else rq)
        requant_busy += rq
        ready = prev_comp + depth
        b = tile.store_bytes
        d = lat + math.ceil(b / bw) if b > 0 else 0
        start_s = port if port > ready else ready
        store_end[t] = port = start_s + d
        dram_busy += d
        if ready > end:
            end = ready
        if ev is not None:
            if is_array:
                detail = {"stream_cycles": tile.stream_cycles, "fill_drain_cycles": cc - tile.stream_cycles,
                          "outputs": tile.outputs}
            else:
                detail = {"ops": cc * cfg.vector_lanes}
            ev.append((engine, f"tile {t}", start, cc, detail))
            if rq:
                ev.append(("requant", f"tile {t}", start, rq + depth))
            if d:
                ev.append(("dma", f"store tile {t}", start_s, d))
    if ev is not None:
        ev.insert(0, ("control", "setup", 0, t0))
    lt.cycles = max(end, port)
    lt.tiles = n
    lt.stall_cycles = stalls
    lt.requant_cycles = requant_busy
    lt.dram_cycles = dram_busy
    busy = sum(t.compute_cycles for t in tiles)
    lt.dram_read_bytes = sum(t.load_bytes for t in tiles) + (L.table_bytes if is_array else 0)
    lt.dram_write_bytes = sum(t.store_bytes for t in tiles)
    if is_array:
        lt.array_cycles = busy
        lt.stream_cycles = sum(t.stream_cycles for t in tiles)
        lt.fill_drain_cycles = busy - lt.stream_cycles
        lt.utilization = L.macs / (lt.cycles * cfg.macs_per_cycle) if lt.cycles else 0.0
        loads = {"compute": busy, "requant": requant_busy, "memory": dram_busy}
    else:
        lt.vector_cycles = busy
        loads = {"vector": busy, "memory": dram_busy}
    lt.bound = max(loads, key=loads.__getitem__)
    return lt
