"""Chrome / Perfetto trace-event JSON of a profile: DMA, array, requant, vector activity over time.

Format: the Trace Event Format's JSON object form, ``{"traceEvents": [...]}``
with complete events (``"ph": "X"``); ``ts`` and ``dur`` are microseconds at
the configured clock.  One process (the accelerator), one thread per unit
(control, dma, array, requant, vector), plus one "layers" thread with a span
per layer.  Open in chrome://tracing or ui.perfetto.dev.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import QsimError
from .profile import ProfileResult

LANES = ("layers", "control", "dma", "array", "requant", "vector")


def trace_events(result: ProfileResult) -> list[dict]:
    us = 1.0 / result.cfg.clock_mhz  # microseconds per cycle
    tid = {name: i + 1 for i, name in enumerate(LANES)}
    ev = [{"name": "process_name", "ph": "M", "pid": 1, "tid": 0,
           "args": {"name": f"qsim accelerator ({result.cfg.name})"}}]
    ev += [{"name": "thread_name", "ph": "M", "pid": 1, "tid": tid[n], "args": {"name": n}} for n in LANES]
    for L in result.layers:
        if L.timing.cycles == 0:
            continue
        base = L.start_cycle
        label = f"#{L.map.index} {L.map.opcode}" + (f" {L.map.part}" if L.map.part else "")
        ev.append({"name": label, "cat": "layer", "ph": "X", "pid": 1, "tid": tid["layers"],
                   "ts": base * us, "dur": L.timing.cycles * us,
                   "args": {"cycles": L.timing.cycles, "bound": L.timing.bound, "macs": L.map.macs,
                            "output": L.map.name}})
        for lane, what, start, dur, *extra in L.timing.events:
            if dur <= 0:
                continue
            e = {"name": f"{label} {what}", "cat": lane, "ph": "X", "pid": 1, "tid": tid[lane],
                 "ts": (base + start) * us, "dur": dur * us}
            e["args"] = {"cycles": dur, **(extra[0] if extra else {})}
            ev.append(e)
    return ev


def write_trace(result: ProfileResult, path: str | Path) -> None:
    doc = {"traceEvents": trace_events(result), "displayTimeUnit": "ns",
           "otherData": {"model": result.source, "hardware": result.cfg.name,
                         "clock_mhz": result.cfg.clock_mhz, "total_cycles": result.totals.get("cycles")}}
    try:
        Path(path).write_text(json.dumps(doc), encoding="utf-8")
    except OSError as e:
        raise QsimError(f"cannot write the trace to {path}: {e.strerror or e}") from None
