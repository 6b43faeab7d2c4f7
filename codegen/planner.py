"""Static memory planner for the generated firmware: tensor lifetimes -> arena offsets.

Every non-constant tensor lives in one of three places:

* ``input``:  the caller's input pointer (graph inputs; never copied),
* ``output``: the caller's output pointer (graph outputs are written in place),
* ``arena``:  a byte offset into one static ``int8_t`` arena.

Variable tensors (SVDF / LSTM state) are not planned here: they persist across invocations
in the generated ``NAME_state`` buffer (:func:`qsim.codegen.emit.plan_state`).

Alias ops (RESHAPE, SQUEEZE, EXPAND_DIMS: same bytes, new shape) are planned
in place: their output joins their input's buffer, unless that would make a
graph output share storage with something else (then the C code copies).

Arena placement is TFLite Micro's greedy-by-size strategy: buffers sorted by
size (largest first), each put at the lowest 16-byte-aligned offset that does
not overlap any already placed buffer whose lifetime (first to last op index,
inclusive) intersects its own.  Per-op scratch buffers (im2col patch,
depthwise accumulators) are buffers that live for one op only.

In-place ops: when op i reads X for the last time and produces Y, and its C
kernel finishes reading each step's input before writing that step's output
(see ``qsim.codegen.tables.overlap_delta``), Y may overlap X provided Y starts at
least ``delta`` bytes below X (``offset(Y) <= offset(X) - delta``).  Such a
pair is an *overlap contract*; the greedy search then accepts that overlap
besides the usual disjoint placements (delta 0 = fully in place).
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
    contracts: dict[tuple[str, str], int] = field(default_factory=dict)  # (output, input) key -> delta

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
    parent = {t.index: t.index for t in g.tensors if not t.is_const and not t.is_variable}  # state: NAME_state
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


def _compatible(b: Buffer, off: int, p: Buffer, contracts: dict[tuple[str, str], int]) -> bool:
    """May ``b`` sit at ``off`` while ``p`` (live at the same time) sits at ``p.offset``?"""
    if off + b.size <= p.offset or p.offset + p.size <= off:
        return True
    d = contracts.get((b.key, p.key))  # b is the output written over input p
    if d is not None and off <= p.offset - d:
        return True
    d = contracts.get((p.key, b.key))  # p is the output written over input b
    return d is not None and p.offset <= off - d


ORDERS = {
    "size, first use": lambda b: (-b.size, b.first, b.key),  # TFLM's GreedyMemoryPlanner
    "size, last use": lambda b: (-b.size, -b.first, b.key),  # lets an in-place output go first
    "first use": lambda b: (b.first, -b.size, b.key),
}


def greedy_by_size(buffers: list[Buffer], contracts: dict[tuple[str, str], int] | None = None,
                   order_key=ORDERS["size, first use"], lookahead: bool = False) -> int:
    """Assign ``offset`` to each arena buffer in ``order_key`` order (default TFLM's: largest
    first); each goes to the lowest aligned offset compatible with the placed buffers it
    shares time with.  Returns arena bytes.

    ``contracts``: {(output key, input key): delta} overlaps allowed when
    offset(output) <= offset(input) - delta (see the module doc).  ``lookahead``: when
    placing one side of a contract, prefer offsets that leave the other side room to
    overlap it.
    """
    contracts = contracts or {}
    by_key = {b.key: b for b in buffers}
    placed: list[Buffer] = []
    done: set[str] = set()
    order = sorted(buffers, key=order_key)

    def live_with(b):
        return [p for p in placed if p.first <= b.last and b.first <= p.last]

    def fits(b, off, conflicts):
        return off >= 0 and all(_compatible(b, off, p, contracts) for p in conflicts)

    for b in order:
        conflicts = live_with(b)
        candidates = {0} | {_align(p.offset + p.size) for p in conflicts}
        for p in conflicts:
            if (b.key, p.key) in contracts and p.offset - contracts[(b.key, p.key)] >= 0:
                candidates.add((p.offset - contracts[(b.key, p.key)]) // ALIGN * ALIGN)
            if (p.key, b.key) in contracts:
                candidates.add(_align(p.offset + contracts[(p.key, b.key)]))
        # Look ahead for an unplaced contract partner: leave it room to overlap b.
        partner = None
        for (yk, xk), d in (contracts.items() if lookahead else ()):
            if xk == b.key and yk not in done and yk in by_key:  # b is the input: output goes d below
                partner = (by_key[yk], lambda off, d=d: (off - d) // ALIGN * ALIGN, d)
            elif yk == b.key and xk not in done and xk in by_key:  # b is the output: input goes d above
                partner = (by_key[xk], lambda off, d=d: _align(off + d), -d)
        chosen = None
        if partner is not None:
            other, where, d = partner
            other_conf = live_with(other)
            extra = {_align(p.offset + p.size) + max(d, 0) for p in other_conf}
            for off in sorted(candidates | extra):
                if fits(b, off, conflicts) and fits(other, where(off), other_conf):
                    chosen = off
                    break
        if chosen is None:
            chosen = next(off for off in sorted(candidates) if fits(b, off, conflicts))
        b.offset = chosen
        placed.append(b)
        done.add(b.key)
    return max((_align(b.offset + b.size) for b in placed), default=0)


def plan_memory(g: ir.Graph, scratch_bytes: dict[int, int],
                overlaps: dict[int, list[tuple[int, int]]] | None = None) -> MemoryPlan:
    """Plan every non-constant tensor and the per-op scratch (op position -> bytes).

    ``overlaps``: op position -> [(input tensor index, delta)] the op's kernel
    can run in place over (see the module doc); applied only where that input
    dies at the op and both buffers are in the arena.
    """
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
    contracts = {}
    for pos, pairs in (overlaps or {}).items():
        y = buffers.get(tensor_buffer.get(g.operators[pos].outputs[0], ""))
        for t, delta in pairs:
            x = buffers.get(tensor_buffer.get(t, ""))
            if (x is not None and y is not None and x is not y and x.kind == "arena" and y.kind == "arena"
                    and x.last == pos and y.first == pos):
                contracts[(y.key, x.key)] = int(delta)
                break  # one overlapped input per op
    arena_buffers = [b for b in buffers.values() if b.kind == "arena"]
    best = None
    for key, lookahead in [(k, la) for la in (False, True) for k in ORDERS.values()]:
        size = greedy_by_size(arena_buffers, contracts, key, lookahead)  # keep the smallest
        if best is None or size < best[0]:
            best = (size, {b.key: b.offset for b in arena_buffers})
    arena = best[0] if best else 0
    for b in arena_buffers:
        b.offset = best[1][b.key]
    return MemoryPlan(arena, buffers, tensor_buffer, scratch_buffer, aliased, contracts)
