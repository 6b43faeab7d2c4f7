"""Port map: which signals of *your* requantization unit carry what (``ports.toml``).

qsim's stream driver, monitor and regression talk to a DUT only through a :class:`PortMap`, so
any signal names, lane count, field widths, reset polarity and latency work.  Example (the
``examples/my_requant/ports.toml``)::

    lanes = 2              # results per beat
    rounding = "double"    # "double" (TFLite default) | "single" (TFLITE_SINGLE_ROUNDING)
    scheme = "int8"        # optional: "int8" (int32 acc -> int8) | "int16x8" (int64 acc -> int16) | "uint8" (int32 acc -> uint8)
    latency = 3            # optional: cycles from input transfer to output transfer, checked exactly
    [parameters]           # optional HDL parameters for the build
    [clock]
    name = "clk_i"
    [reset]
    name = "rst_ni"
    active_low = true      # default false (active high); reset is sampled on the clock
    [input]                # the stream into the unit; a beat transfers when valid && ready at a rising edge
    valid = "in_valid"
    ready = "in_ready"
    acc = "in_acc"         # lane fields: lane i at bits [i*W +: W] of the signal
    bias = "in_bias"       # optional: without it the driver feeds acc + bias (wrapped to int32) as acc
    multiplier = "in_m0"
    shift = "in_shift"
    zero_point = "cfg_zp"  # per-beat fields: W bits, or lanes*W bits (the value repeated per lane)
    act_min = "cfg_min"
    act_max = "cfg_max"
    [output]
    valid = "out_valid"
    ready = "out_ready"
    data = "out_q"         # lane i at bits [i*W +: W], signed
    [widths]               # optional, bits per lane / per beat; defaults below
    shift = 6

Default widths (:data:`DEFAULT_WIDTHS`): acc/bias/multiplier 32, shift 6, zero_point/act_min/
act_max 8, data 8; scheme "int16x8" (:data:`SCHEME_WIDTHS`): acc/bias 64, zero_point/act_min/
act_max/data 16, and the golden model is :func:`qsim.fixedpoint.requantize_int64`; scheme "uint8"
(the old converter's uint8 layers): the int8 widths, zero_point/act_min/act_max/data unsigned
(0..255), golden :func:`qsim.fixedpoint.requantize`.  Widths are checked against the DUT when the simulation starts
(:meth:`PortMap.check`): a missing signal or a wrong width is a :class:`qsim.errors.QsimError`
naming the signal.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

from ..errors import QsimError
from ..fixedpoint import ROUNDING_MODES

LANE_FIELDS = ("acc", "bias", "multiplier", "shift")
BEAT_FIELDS = ("zero_point", "act_min", "act_max")
DEFAULT_WIDTHS = {"acc": 32, "bias": 32, "multiplier": 32, "shift": 6, "zero_point": 8, "act_min": 8,
                  "act_max": 8, "data": 8}
SCHEME_WIDTHS = {"int8": DEFAULT_WIDTHS,
                 "int16x8": {**DEFAULT_WIDTHS, "acc": 64, "bias": 64, "zero_point": 16, "act_min": 16,
                             "act_max": 16, "data": 16},
                 "uint8": DEFAULT_WIDTHS}
_TOP_KEYS = {"lanes", "rounding", "scheme", "latency", "parameters", "clock", "reset", "input", "output", "widths"}


@dataclass
class PortMap:
    """Signal names and widths of a valid/ready requantization unit (module doc)."""

    lanes: int
    clock: str
    reset: str
    in_valid: str
    in_ready: str
    out_valid: str
    out_ready: str
    data: str
    fields: dict[str, str]  # field name (LANE_FIELDS + BEAT_FIELDS) -> signal name; bias optional
    reset_active_low: bool = False
    rounding: str = "double"
    latency: int | None = None
    widths: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_WIDTHS))
    parameters: dict = field(default_factory=dict)
    source: str = "<port map>"
    scheme: str = "int8"  # "int8" | "int16x8" | "uint8" (qsim.hdl.beats.SCHEMES)

    def width(self, name: str) -> int:
        return self.widths[name]

    def signals(self) -> list[tuple[str, str, int | None]]:
        """(role, signal name, required width or None for 1-bit controls) of every mapped signal."""
        out = [("clock", self.clock, 1), ("reset.name", self.reset, 1), ("input.valid", self.in_valid, 1),
               ("input.ready", self.in_ready, 1), ("output.valid", self.out_valid, 1),
               ("output.ready", self.out_ready, 1), ("output.data", self.data, self.lanes * self.widths["data"])]
        for f, sig in self.fields.items():
            w = self.widths[f] * (self.lanes if f in LANE_FIELDS else 1)
            out.append((f"input.{f}", sig, w))
        return out

    def beat_field_lanes(self, f: str, actual_width: int) -> int:
        """How many copies of per-beat field ``f`` its signal holds (1 or lanes)."""
        return self.lanes if actual_width == self.lanes * self.widths[f] != self.widths[f] else 1

    def check(self, dut, top: str = "the top module") -> None:
        """QsimError naming every signal missing on the cocotb ``dut`` handle or of the wrong width."""
        def width(sig):
            try:
                return len(getattr(dut, sig))
            except AttributeError:
                return None
        self.check_widths(width, top)

    def check_widths(self, width, top: str = "the top module") -> None:
        """QsimError naming every mapped signal for which ``width(name)`` is None (missing) or a
        width the port map does not allow; ``width`` may return -1 for "unknown, not checked"."""
        problems = []
        for role, sig, w in self.signals():
            n = width(sig)
            if n is None:
                problems.append(f"signal '{sig}' ({role}) does not exist on {top}")
                continue
            f = role.split(".", 1)[-1]
            ok = n in (-1, w) or (f in BEAT_FIELDS and n == self.lanes * self.widths[f])
            if not ok:
                want = f"{w}" if f not in BEAT_FIELDS else f"{w} or {self.lanes * self.widths[f]} (one per lane)"
                problems.append(f"signal '{sig}' ({role}) is {n} bits wide, the port map needs {want} "
                                f"(lanes = {self.lanes}, {self.widths.get(f, 1)} bits per lane)")
        if problems:
            raise QsimError(f"port map {self.source} does not match {top}: " + "; ".join(problems) + ".")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "PortMap":
        return cls(**json.loads(text))


def load_ports(path: str | Path) -> PortMap:
    """Read and validate a ports.toml (module doc); QsimError with the problem otherwise."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise QsimError(f"cannot read the port map {p}: {e.strerror or e}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise QsimError(f"the port map {p} is not valid TOML: {e}") from None
    return ports_from_dict(data, str(p))


def ports_from_dict(data: dict, source: str = "<port map>") -> PortMap:
    """A :class:`PortMap` from the TOML document's dict (module doc)."""
    def need(table: str, key: str) -> str:
        t = data.get(table)
        if not isinstance(t, dict) or not isinstance(t.get(key), str) or not t[key]:
            raise QsimError(f"port map {source}: [{table}] {key} = \"<signal name>\" is missing.")
        return t[key]

    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise QsimError(f"port map {source}: unknown key(s) {unknown}; expected {sorted(_TOP_KEYS)}.")
    lanes = data.get("lanes", 1)
    if not isinstance(lanes, int) or isinstance(lanes, bool) or not 1 <= lanes <= 256:
        raise QsimError(f"port map {source}: lanes must be an integer in [1, 256], got {lanes!r}.")
    rounding = data.get("rounding", "double")
    if rounding not in ROUNDING_MODES:
        raise QsimError(f"port map {source}: rounding must be one of {list(ROUNDING_MODES)}, got {rounding!r}.")
    scheme = data.get("scheme", "int8")
    if scheme not in SCHEME_WIDTHS:
        raise QsimError(f"port map {source}: scheme must be one of {list(SCHEME_WIDTHS)}, got {scheme!r}.")
    latency = data.get("latency")
    if latency is not None and (not isinstance(latency, int) or isinstance(latency, bool) or latency < 1):
        raise QsimError(f"port map {source}: latency must be a positive integer (cycles), got {latency!r}.")
    inp = data.get("input", {})
    known_in = {"valid", "ready", *LANE_FIELDS, *BEAT_FIELDS}
    if not isinstance(inp, dict) or set(inp) - known_in:
        raise QsimError(f"port map {source}: [input] has unknown key(s) {sorted(set(inp) - known_in)}; "
                        f"expected {sorted(known_in)}.")
    fields_ = {f: need("input", f) for f in LANE_FIELDS + BEAT_FIELDS if f != "bias"}
    if "bias" in inp:
        fields_["bias"] = need("input", "bias")
    widths = dict(SCHEME_WIDTHS[scheme])
    for k, w in data.get("widths", {}).items():
        if k not in DEFAULT_WIDTHS:
            raise QsimError(f"port map {source}: [widths] {k} is not a field; expected {sorted(DEFAULT_WIDTHS)}.")
        if not isinstance(w, int) or isinstance(w, bool) or not 1 <= w <= 64:
            raise QsimError(f"port map {source}: [widths] {k} must be an integer in [1, 64], got {w!r}.")
        widths[k] = w
    low = data.get("reset", {}).get("active_low", False) if isinstance(data.get("reset"), dict) else False
    params = data.get("parameters", {})
    if not isinstance(params, dict):
        raise QsimError(f"port map {source}: [parameters] must be a table of name = value.")
    return PortMap(lanes=lanes, clock=need("clock", "name"), reset=need("reset", "name"),
                   in_valid=need("input", "valid"), in_ready=need("input", "ready"),
                   out_valid=need("output", "valid"), out_ready=need("output", "ready"),
                   data=need("output", "data"), fields=fields_, reset_active_low=bool(low), rounding=rounding,
                   latency=latency, widths=widths, parameters=params, source=source, scheme=scheme)


def qsim_requant_ports(lanes: int = 4, rounding: str = "double", scheme: str = "int8") -> PortMap:
    """The port map of qsim's own ``rtl/requant_unit.sv`` (parameters LANES, SINGLE_ROUNDING,
    OUT16 = the int16x8 scheme, OUT_UNSIGNED = the uint8 scheme)."""
    from .. import rtl_info
    return ports_from_dict({
        "lanes": lanes, "rounding": rounding, "scheme": scheme, "latency": rtl_info.requant_latency(rounding),
        "parameters": {"LANES": lanes, "SINGLE_ROUNDING": int(rounding == "single"),
                       "OUT16": int(scheme == "int16x8"), **({"OUT_UNSIGNED": 1} if scheme == "uint8" else {})},
        "clock": {"name": "clk"}, "reset": {"name": "rst"},
        "input": {"valid": "s_valid", "ready": "s_ready", "acc": "s_acc", "bias": "s_bias", "multiplier": "s_mult",
                  "shift": "s_shift", "zero_point": "s_zp", "act_min": "s_act_min", "act_max": "s_act_max"},
        "output": {"valid": "m_valid", "ready": "m_ready", "data": "m_data"}}, "qsim requant_unit")
