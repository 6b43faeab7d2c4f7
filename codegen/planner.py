"""Static memory planner for the generated firmware: tensor lifetimes -> arena offsets.

Every non-constant tensor lives in one of three places:

* ``input``:  the caller's input pointer (graph inputs; never copied),
* ``output``: the caller's output pointer (graph outputs are written in place),
* ``arena``:  a byte offset into one static ``int8_t`` arena.

Alias ops (RESHAPE, SQUEEZE, EXPAND_DIMS: same bytes, new shape) are planned
in place: their output joins their input's buffer, unless that would make a
graph output share storage with something else (then the C code copies).

Arena placement is TFLite Micro's greedy-by-size strategy: buffers sorted by
size (largest first), each put at the lowest 16-byte-aligned offset that does
not overlap any already placed buffer whose lifetime (first to last op index,
inclusive) intersects its own.  Per-op scratch buffers (im2col patch,
depthwise accumulators) are buffers that live for one op only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from qsim import ir

ALIGN = 16
ALIAS_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")


@dataclass
class Buffer:
    """One storage region: the tensors (or the scratch) that share it."""

    key: str  # "t<index>" of the group's root tensor, or "s<op position>" for scratch
    size: int  # bytes
    first: int  # first op position that writes or reads it
    last: int  # last op position that reads it (inclusive)
    kind: str = "arena"  # "arena" | "input" | "output"
    io_index: int = -1  # position among graph inputs / outputs
    offset: int = -1  # arena byte offset


@dataclass
class MemoryPlan:
    arena_size: int
    buffers: dict[str, Buffer]
    tensor_buffer: dict[int, str]  # tensor index -> buffer key
    scratch_buffer: dict[int, str] = field(default_factory=dict)  # op position -> buffer key
    aliased_ops: set[int] = field(default_factory=set)  # op positions planned in place (no copy)

    def placement(self, tensor_index: int) -> Buffer:
        return self.buffers[self.tensor_buffer[tensor_index]]


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _find(parent: dict[int, int], t: int) -> int:
    while parent[t] != t:
        parent[t] = parent[parent[t]]
        t = parent[t]
    return t


def _alias_groups(g: ir.Graph) -> tuple[dict[int, int], set[int]]:
    """Union tensors joined by alias ops; returns (tensor -> root, op positions aliased)."""
    parent = {t.index: t.index for t in g.tensors if not t.is_const}
    aliased = set()
    outputs = set(g.outputs)
    for pos, op in enumerate(g.operators):
        if op.opcode not in ALIAS_OPS:
            continue
        src, dst = op.inputs[0], op.outputs[0]
        if src not in parent or dst in outputs:
            continue  # constant source or graph output destination: copy instead
        rs, rd = _find(parent, src), _find(parent, dst)
        if rs != rd:
            parent[rd] = rs
        aliased.add(pos)
    return {t: _find(parent, t) for t in parent}, aliased


def _lifetimes(g: ir.Graph, root: dict[int, int]) -> dict[int, list[int]]:
    """Group root -> [first, last] op positions (graph inputs from 0, outputs to the end)."""
    n = len(g.operators)
    life: dict[int, list[int]] = {}

    def touch(t: int, pos: int) -> None:
        r = root[t]
        span = life.setdefault(r, [pos, pos])
        span[0], span[1] = min(span[0], pos), max(span[1], pos)

    for t in g.inputs:
        touch(t, 0)
    for pos, op in enumerate(g.operators):
        for t in op.inputs:
            if t >= 0 and t in root:
                touch(t, pos)
        for t in op.outputs:
            touch(t, pos)
    for t in g.outputs:
        touch(t, n - 1)
    return life


def greedy_by_size(buffers: list[Buffer]) -> int:
    """Assign ``offset`` to each arena buffer (TFLM GreedyMemoryPlanner order); return arena bytes."""
    placed: list[Buffer] = []
    order = sorted(buffers, key=lambda b: (-b.size, b.first, b.key))
    for b in order:
        conflicts = sorted((p for p in placed if p.first <= b.last and b.first <= p.last),
                           key=lambda p: p.offset)
        offset = 0
        for p in conflicts:
            if offset + b.size <= p.offset:
                break
            offset = max(offset, _align(p.offset + p.size))
        b.offset = offset
        placed.append(b)
    return max((_align(b.offset + b.size) for b in placed), default=0)


def plan_memory(g: ir.Graph, scratch_bytes: dict[int, int]) -> MemoryPlan:
    """Plan every non-constant tensor and the per-op scratch (op position -> bytes)."""
    root, aliased = _alias_groups(g)
    life = _lifetimes(g, root)
    buffers: dict[str, Buffer] = {}
    tensor_buffer: dict[int, str] = {}
    for t, r in root.items():
        if r not in life:
            continue  # never used
        key = f"t{r}"
        tensor_buffer[t] = key
        b = buffers.get(key)
        size = g.tensors[t].nbytes
        if b is None:
            buffers[key] = Buffer(key, size, life[r][0], life[r][1])
        else:
            b.size = max(b.size, size)
    for pos, t in enumerate(g.inputs):
        b = buffers[tensor_buffer[t]]
        b.kind, b.io_index = "input", pos
    for pos, t in enumerate(g.outputs):
        b = buffers[tensor_buffer[t]]
        if b.kind == "arena":
            b.kind, b.io_index = "output", pos
    scratch_buffer = {}
    for pos, nbytes in scratch_bytes.items():
        if nbytes > 0:
            key = f"s{pos}"
            buffers[key] = Buffer(key, nbytes, pos, pos)
            scratch_buffer[pos] = key
    arena = greedy_by_size([b for b in buffers.values() if b.kind == "arena"])
    return MemoryPlan(arena, buffers, tensor_buffer, scratch_buffer, aliased)
