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

A recurrent GEMM (LSTM, ``LayerMap.steps``) is its per-step GEMM's tiles once per step, in
sequence (:func:`array_tiles`).  Vector-unit layers use the same recurrence with ``ceil(ops / vector_lanes)``
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

# accumulator words in the output SRAM: LayerMap.acc_bytes (4: int32; int16x8 layers 8: int64)

# The HwConfig fields the schedule reads (besides resolved_requant_depth()); a layer's timing
# is a function of its geometry and schedule_key(cfg) only (tests/test_sweep.py checks it).
SCHEDULE_FIELDS = ("rows", "cols", "dataflow", "int16_mode", "ifmap_sram_kib", "weight_sram_kib", "output_sram_kib",
                   "dram_bytes_per_cycle", "dram_latency_cycles", "requant_lanes", "vector_lanes",
                   "layer_setup_cycles")


# ... and the fields a vector-unit layer's schedule reads (a subset: no array, weights or requant)
VECTOR_SCHEDULE_FIELDS = ("ifmap_sram_kib", "output_sram_kib", "dram_bytes_per_cycle", "dram_latency_cycles",
                          "vector_lanes", "layer_setup_cycles")


# ... and the fields a layer's SRAM tiles (array_tiles / vector_tiles) read: a subset of the above,
# so machines differing only in DRAM, requant or setup figures share one tiling
ARRAY_TILING_FIELDS = ("rows", "cols", "dataflow", "ifmap_sram_kib", "weight_sram_kib", "output_sram_kib")
VECTOR_TILING_FIELDS = ("ifmap_sram_kib", "output_sram_kib", "vector_lanes")


def tiling_key(cfg: HwConfig, unit: str = "array") -> tuple:
    """Everything of ``cfg`` that :func:`layer_tiles` depends on for a layer on ``unit`` (a cache key)."""
    if unit == "free":
        return ()
    return tuple(getattr(cfg, f) for f in (VECTOR_TILING_FIELDS if unit == "vector" else ARRAY_TILING_FIELDS))


def schedule_key(cfg: HwConfig, unit: str = "array") -> tuple:
    """Everything of ``cfg`` that :func:`time_layer` depends on for a layer on ``unit`` (a cache key)."""
    if unit == "free":
        return ()
    if unit == "vector":
        return tuple(getattr(cfg, f) for f in VECTOR_SCHEDULE_FIELDS)
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

def array_passes(L: LayerMap, cfg: HwConfig) -> int:
    """Passes of the operands through the array: 2 for an int16x8 layer on an 8x8-bit array
    (``int16_mode`` "two-pass": the int16 activation as a signed high byte and an unsigned low byte,
    acc = 256 * acc_hi + acc_lo, each a full GEMM), else 1 (int8, or native 16x8 multipliers)."""
    return 2 if L.in_elem_bytes == 2 and cfg.int16_mode == "two-pass" else 1


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
    need_w = L.weight_stream_bytes(L.k * unit)
    need_o = L.pixels_per_row * unit * L.acc_bytes
    ch_frac = unit / cout if L.depthwise else 1.0
    need_i = math.ceil(_input_rows(L, 1) * L.in_row_bytes * ch_frac)
    short = []
    if need_w > w_half:
        short.append(f"weights need {need_w} B per tile (K={L.k} x {unit} channels) but half the weight SRAM is {w_half} B")
    if need_i > if_half:
        short.append(f"one output row's input window needs {need_i} B but half the ifmap SRAM is {if_half} B")
    if need_o > o_half:
        short.append(f"one output row's {8 * L.acc_bytes}-bit accumulators need {need_o} B but half the output SRAM "
                     f"is {o_half} B")
    if short:
        raise QsimError(f"SRAM smaller than one tile for op #{L.index} {L.opcode} ('{L.name}'): "
                        + "; ".join(short) + ". Increase the SRAM sizes (--sram-kib / --ifmap-sram-kib / "
                        "--weight-sram-kib / --output-sram-kib) or use a smaller array.")
    nc = min(cout, (w_half * 8 // (L.k * L.weight_bits)) // unit * unit)
    nc = min(nc, max(unit, (o_half // (L.pixels_per_row * L.acc_bytes)) // unit * unit))
    ch_frac = nc / cout if L.depthwise else 1.0
    per_row_in = L.in_row_bytes * ch_frac
    r_in = int((if_half / per_row_in - L.window_rows) // L.row_stride) + 1 if per_row_in else L.out_rows
    r_out = o_half // (L.pixels_per_row * nc * L.acc_bytes)
    r = max(1, min(L.out_rows, r_in, r_out))
    return r, nc


Runs = list  # [(Tile, count)]: identical consecutive tiles, one Tile object
Segments = list  # [(Runs, repeat)]: a block of runs repeated (channel chunks), in execution order


def array_tiles(L: LayerMap, cfg: HwConfig) -> tuple[Segments, int, int]:
    """(the tiles as segments, output rows, output channels per tile).

    Order: ``for channel chunk: for row chunk``.  A channel chunk is a block of runs: its
    first row tile also loads the weights, then the other full row tiles, then a shorter
    last row tile; the chunks after the first repeat one block (the last may be narrower).
    A recurrent GEMM (``L.steps`` > 1) repeats that ``for step:``, loading each step's input
    anew; its weights are loaded once when one channel chunk holds them all, else every step.
    """
    r, nc = choose_tile(L, cfg)
    passes = array_passes(L, cfg)
    cout = L.n * L.groups
    density = _input_density(L)
    whole_input = r >= L.out_rows and not L.depthwise
    memo: dict = {}

    def tile(rn: int, cn: int, load_weights: bool, reuse_input: bool) -> Tile:
        key = (rn, cn, load_weights, reuse_input)
        t = memo.get(key)
        if t is None:
            m = rn * L.pixels_per_row
            load = L.weight_stream_bytes(L.k * cn) if load_weights else 0
            if not reuse_input:
                ch_frac = cn / cout if L.depthwise else 1.0
                load += math.ceil(_input_rows(L, rn) * L.in_row_bytes * ch_frac * density)
            if L.depthwise:
                cyc, stream = depthwise_cycles(m, L.k, L.n, cn // L.n, cfg.rows, cfg.cols, cfg.dataflow)
            else:
                cyc, stream = gemm_cycles(m, L.k, cn, cfg.rows, cfg.cols, cfg.dataflow)
            t = memo[key] = Tile(load, cyc * passes, stream * passes, m * cn, m * cn * L.out_elem_bytes)
        return t

    full_rows, last_rows = divmod(L.out_rows, r)
    full_ch, last_ch = divmod(cout, nc)

    def block(cn: int, later: bool, weights: bool = True) -> Runs:
        reuse = whole_input and later  # the whole input is already on chip from the first chunk
        runs: Runs = []
        for t, k in ((tile(r, cn, weights, reuse), 1), (tile(r, cn, False, reuse), full_rows - 1),
                     (tile(last_rows, cn, False, reuse), 1 if last_rows else 0)):
            if k > 0:
                if runs and runs[-1][0] is t:
                    runs[-1] = (t, runs[-1][1] + k)
                else:
                    runs.append((t, k))
        return runs

    segments: Segments = [(block(nc, False), 1)]
    if full_ch > 1:
        segments.append((block(nc, True), full_ch - 1))
    if last_ch:
        segments.append((block(last_ch, True), 1))
    if L.steps > 1:  # a recurrent GEMM: each step's input is new (the previous step's result)
        if len(segments) == 1:  # one channel chunk: the weights stay on chip after the first step
            segments.append((block(nc, False, weights=False), L.steps - 1))
        else:
            segments = segments * L.steps
    return segments, r, nc


def vector_tiles(L: LayerMap, cfg: HwConfig) -> Segments:
    """The vector unit's tiles (an exact integer split of the work) as one segment."""
    n = max(1, math.ceil((L.ifmap_bytes + L.weight_bytes) / (cfg.sram_bytes("ifmap") // 2)),
            math.ceil(L.output_bytes / (cfg.sram_bytes("output") // 2)))
    runs: Runs = []
    memo: dict = {}
    for i in range(n):
        share = lambda total: total * (i + 1) // n - total * i // n  # noqa: E731 - exact integer split
        key = (share(L.ifmap_bytes + L.weight_bytes), math.ceil(share(L.vector_ops) / cfg.vector_lanes),
               share(L.output_bytes))
        t = memo.get(key)
        if t is None:
            t = memo[key] = Tile(key[0], key[1], 0, 0, key[2])
        if runs and runs[-1][0] is t:
            runs[-1] = (t, runs[-1][1] + 1)
        else:
            runs.append((t, 1))
    return [(runs, 1)]


# ----------------------------------------------------------------------------- schedule

def _uniform(state: tuple, last: tuple | None):
    """The common shift of every clock from ``last`` to ``state``, else None."""
    if last is None:
        return None
    delta = state[0] - last[0]
    return delta if all(x - y == delta for x, y in zip(state, last)) else None


def layer_tiles(L: LayerMap, cfg: HwConfig) -> tuple[Segments, int, int]:
    """The tiles :func:`time_layer` schedules: ``(segments, output rows, output channels)`` per
    tile (array layers, :func:`array_tiles`; rows/channels 0 on the vector unit).  A function of
    the layer's geometry and :func:`tiling_key` only; QsimError when not one tile fits."""
    if L.unit == "array":
        return array_tiles(L, cfg)
    return vector_tiles(L, cfg), 0, 0


def time_layer(L: LayerMap, cfg: HwConfig, events: bool = True, tiles: tuple | None = None) -> LayerTiming:
    """Schedule one layer; see the module docstring for the recurrence.

    ``events``: also record (lane, label, start, duration, details) spans for the trace.
    Without events, repeated work whose schedule has reached a steady state is
    fast-forwarded: the recurrence is max-plus (translation invariant), so once every clock
    of its state has moved by the same amount over one tile (or one repeated channel-chunk
    block), each further identical tile (block) moves the state by that amount again and
    adds the same stall, DRAM and requant cycles.  Exact, not an approximation
    (tests/test_sweep.py compares it with the tile-by-tile schedule).  ``tiles``: the layer's
    :func:`layer_tiles` on ``cfg`` when already computed (a sweep keeps them across machines
    of one :func:`tiling_key`).
    """
    if L.unit == "free":
        return LayerTiming(bound="none")
    lt = LayerTiming(setup_cycles=cfg.layer_setup_cycles)
    is_array = L.unit == "array"
    segments, lt.tile_rows, lt.tile_channels = layer_tiles(L, cfg) if tiles is None else tiles
    if is_array:
        depth = cfg.resolved_requant_depth()
        lanes = cfg.requant_lanes
    else:
        depth, lanes = 0, 0
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
    # load(t) is issued on the port in order L0, L1, S0, L2, S1, ...; ready once compute(t-2) is done
    b = segments[0][0][0][0].load_bytes
    d = lat + math.ceil(b / bw) if b > 0 else 0
    next_load_end = port + d
    if ev is not None and d:
        ev.append(("dma", "load tile 0", port, d))
    port = next_load_end
    dram_busy += d
    prev_comp = t0  # compute(t-1) end (t0 before the first tile)
    s1 = s2 = 0  # store(t-1) end, store(t-2) end (0: no constraint, every start is >= t0 >= 0)
    stalls = requant_busy = 0
    end = t0
    engine = "array" if is_array else "vector"
    t = 0  # tile index
    n_seg = len(segments)
    for si, (runs, repeat) in enumerate(segments):
        after_seg = segments[si + 1][0][0][0] if si + 1 < n_seg else None  # first tile after this segment
        rep, last_block = 0, None
        while rep < repeat:
            block_start = (stalls, requant_busy, dram_busy)
            after_block = runs[0][0] if rep + 1 < repeat else after_seg
            for ri, (tile, count) in enumerate(runs):
                after_run = runs[ri + 1][0] if ri + 1 < len(runs) else after_block
                rq = -(-tile.outputs // lanes) if is_array else 0
                cc = tile.compute_cycles
                busy = cc if cc > rq else rq
                b = tile.store_bytes
                d_store = lat + math.ceil(b / bw) if b > 0 else 0
                off, last = 0, None
                while off < count:
                    nxt = tile if off + 1 < count else after_run
                    load_end_t = next_load_end
                    step_dram = d_store
                    if nxt is not None:
                        b = nxt.load_bytes
                        d = lat + math.ceil(b / bw) if b > 0 else 0
                        start_l = port if port > prev_comp else prev_comp  # ready once compute(t-1) is done
                        next_load_end = port = start_l + d
                        step_dram += d
                        if ev is not None and d:
                            ev.append(("dma", f"load tile {t + 1}", start_l, d))
                    start = load_end_t if load_end_t > prev_comp else prev_comp
                    if s2 > start:
                        start = s2
                    stall = start - prev_comp
                    prev_comp = start + busy
                    ready = prev_comp + depth
                    start_s = port if port > ready else ready
                    s2, s1 = s1, start_s + d_store
                    port = s1
                    if ready > end:
                        end = ready
                    stalls += stall
                    requant_busy += rq
                    dram_busy += step_dram
                    if ev is not None:
                        if is_array:
                            detail = {"stream_cycles": tile.stream_cycles,
                                      "fill_drain_cycles": cc - tile.stream_cycles, "outputs": tile.outputs}
                        else:
                            detail = {"ops": cc * cfg.vector_lanes}
                        ev.append((engine, f"tile {t}", start, cc, detail))
                        if rq:
                            ev.append(("requant", f"tile {t}", start, rq + depth))
                        if d_store:
                            ev.append(("dma", f"store tile {t}", start_s, d_store))
                    elif off + 2 < count:  # tiles t+1 and t+2 are this tile too: step t+1 repeats step t
                        state = (next_load_end, port, prev_comp, s1, s2, end)
                        delta = _uniform(state, last)
                        if delta is not None:
                            skip = count - off - 2  # steps t+1 .. t+skip repeat step t
                            next_load_end, port, prev_comp, s1, s2, end = (x + skip * delta for x in state)
                            stalls += skip * stall
                            requant_busy += skip * rq
                            dram_busy += skip * step_dram
                            t += skip
                            off += skip
                            state = None
                        last = state
                    t += 1
                    off += 1
            rep += 1
            if ev is None and rep + 1 < repeat:  # blocks rep .. repeat-2 repeat block rep-1 (same lookahead)
                state = (next_load_end, port, prev_comp, s1, s2, end)
                delta = _uniform(state, last_block)
                if delta is not None:
                    skip = repeat - 1 - rep
                    inc = (stalls - block_start[0], requant_busy - block_start[1], dram_busy - block_start[2])
                    next_load_end, port, prev_comp, s1, s2, end = (x + skip * delta for x in state)
                    stalls += skip * inc[0]
                    requant_busy += skip * inc[1]
                    dram_busy += skip * inc[2]
                    t += skip * sum(k for _, k in runs)
                    rep += skip
                    state = None
                last_block = state
    if ev is not None:
        ev.insert(0, ("control", "setup", 0, t0))
    lt.cycles = max(end, port)
    lt.tiles = t
    lt.stall_cycles = stalls
    lt.requant_cycles = requant_busy
    lt.dram_cycles = dram_busy
    busy = loaded = stored = streamed = 0
    for runs, rpt in segments:
        for tl, k in runs:
            busy += tl.compute_cycles * k * rpt
            loaded += tl.load_bytes * k * rpt
            stored += tl.store_bytes * k * rpt
            streamed += tl.stream_cycles * k * rpt
    lt.dram_read_bytes = loaded + (L.table_bytes if is_array else 0)
    lt.dram_write_bytes = stored
    if is_array:
        lt.array_cycles = busy
        lt.stream_cycles = streamed
        lt.fill_drain_cycles = busy - lt.stream_cycles
        lt.utilization = L.macs / (lt.cycles * cfg.macs_per_cycle) if lt.cycles else 0.0
        loads = {"compute": busy, "requant": requant_busy, "memory": dram_busy}
    else:
        lt.vector_cycles = busy
        loads = {"vector": busy, "memory": dram_busy}
    lt.bound = max(loads, key=loads.__getitem__)
    return lt
