"""Hardware description of the modelled int8 accelerator: one flat dataclass, presets in TOML.

Units: sizes in KiB (1024 bytes), bandwidth in bytes per clock cycle, latencies
and costs in clock cycles, the clock in MHz.  Every field can be set by a
preset file, then overridden one by one (``with_overrides``, the CLI's flags).

Presets live in ``qsim/presets/<name>.toml`` with sections::

    [array]    rows, cols, dataflow ("ws" | "os"), clock_mhz, int16 ("two-pass" | "native": how int16x8
               layers run: two passes of the 8x8 multipliers, or native 16x8 multipliers)
    [sram]     ifmap_kib, weight_kib, output_kib          (each double buffered)
    [dram]     bytes_per_cycle, latency_cycles
    [requant]  lanes, depth (omit: the RTL's pipeline depth), profile, variant
    [accumulator] bits, overflow ("wrap" | "saturate"), bias ("accumulator" | "requant"),
               check ("end" | "fold")
    [energy]   mac_pj, sram_byte_pj, dram_byte_pj, requant_pj   (picojoules per access)
    [vector]   lanes
    [layer]    setup_cycles

``TOML_KEYS`` maps each dotted preset path (``requant.variant``, ``accumulator.bits``...) to its
HwConfig field (:func:`field_for_path`, :data:`FIELD_PATHS` the other way); the older keys
``requant.acc_bits`` / ``requant.overflow`` are still read (``LEGACY_TOML_KEYS``).
"""
from __future__ import annotations

import dataclasses
from importlib.resources import files
from dataclasses import dataclass, fields
from pathlib import Path

from .. import fixedpoint as fp
from ..errors import QsimError
from ..profiles import PROFILES

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PRESET_DIR = Path(str(files("qsim") / "presets"))  # package data: qsim/presets/*.toml
DEFAULT_PRESET = "edge16"
DATAFLOWS = ("ws", "os")
INT16_MODES = ("two-pass", "native")  # int16 activations x int8 weights on the array (array.int16)
OVERFLOW_MODES = ("wrap", "saturate")
BIAS_PLACES = ("accumulator", "requant")  # where the bias is added: preloaded into the accumulator, or in the requant unit
CHECK_POINTS = ("end", "fold")  # where the accumulator register's width applies: final sum only, or every K fold
PROFILE_VARIANT = "profile"  # requant_variant: the rounding profile's own arithmetic per op

# TOML section.key -> HwConfig field
TOML_KEYS = {
    ("array", "rows"): "rows", ("array", "cols"): "cols", ("array", "dataflow"): "dataflow",
    ("array", "clock_mhz"): "clock_mhz", ("array", "int16"): "int16_mode",
    ("sram", "ifmap_kib"): "ifmap_sram_kib", ("sram", "weight_kib"): "weight_sram_kib",
    ("sram", "output_kib"): "output_sram_kib",
    ("dram", "bytes_per_cycle"): "dram_bytes_per_cycle", ("dram", "latency_cycles"): "dram_latency_cycles",
    ("requant", "lanes"): "requant_lanes", ("requant", "depth"): "requant_depth",
    ("requant", "profile"): "rounding_profile", ("requant", "variant"): "requant_variant",
    ("accumulator", "bits"): "acc_bits", ("accumulator", "overflow"): "acc_overflow",
    ("accumulator", "bias"): "acc_bias", ("accumulator", "check"): "acc_check",
    ("energy", "mac_pj"): "energy_mac_pj", ("energy", "sram_byte_pj"): "energy_sram_byte_pj",
    ("energy", "dram_byte_pj"): "energy_dram_byte_pj", ("energy", "requant_pj"): "energy_requant_pj",
    ("vector", "lanes"): "vector_lanes",
    ("layer", "setup_cycles"): "layer_setup_cycles",
}
LEGACY_TOML_KEYS = {("requant", "acc_bits"): "acc_bits", ("requant", "overflow"): "acc_overflow"}
FIELD_PATHS = {f: f"{s}.{k}" for (s, k), f in TOML_KEYS.items()}  # HwConfig field -> dotted preset path


def field_for_path(path: str) -> str:
    """A dotted preset path (``"requant.variant"``) or a HwConfig field name -> the field name;
    QsimError naming it when it is neither."""
    if path in _FIELD_TYPES:
        return path
    section, _, key = str(path).partition(".")
    f = TOML_KEYS.get((section, key)) or LEGACY_TOML_KEYS.get((section, key))
    if f is None:
        raise QsimError(f"unknown hardware field {path!r}; known preset paths: {', '.join(FIELD_PATHS.values())}.")
    return f


@dataclass(frozen=True)
class HwConfig:
    """The machine.  ``requant_depth`` None means "the RTL's depth" (qsim.rtl_info)."""

    name: str = "custom"
    description: str = ""
    rows: int = 16
    cols: int = 16
    dataflow: str = "ws"  # "ws" weight-stationary | "os" output-stationary
    clock_mhz: float = 500.0
    int16_mode: str = "two-pass"  # int16x8 GEMM layers: "two-pass" (2 passes of 8x8 MACs) | "native" (16x8 MACs)
    ifmap_sram_kib: float = 64.0
    weight_sram_kib: float = 64.0
    output_sram_kib: float = 64.0
    dram_bytes_per_cycle: float = 8.0
    dram_latency_cycles: int = 100
    requant_lanes: int = 16
    requant_depth: int | None = None
    rounding_profile: str = "tflm"  # qsim.profiles name: tflm (double), single, litert (per op)
    requant_variant: str = PROFILE_VARIANT  # GEMM requant arithmetic (fixedpoint.parse_requant_variant) or "profile"
    acc_bits: int = 32
    acc_overflow: str = "wrap"  # what the accumulator does past acc_bits: "wrap" | "saturate"
    acc_bias: str = "requant"  # where the bias is added: "accumulator" (preloaded) | "requant" (the requant unit, 32 bits)
    acc_check: str = "end"  # where acc_bits applies: "end" (final sum) | "fold" (after every K fold, weight-stationary)
    # Energy per access in picojoules (defaults: Horowitz, ISSCC 2014, 45 nm; see qsim/presets/edge16.toml)
    energy_mac_pj: float = 0.3  # one 8-bit multiply + 32-bit accumulate
    energy_sram_byte_pj: float = 3.4  # one byte read or written in an on-chip SRAM buffer
    energy_dram_byte_pj: float = 162.5  # one byte read or written in DRAM
    energy_requant_pj: float = 3.3  # one output through the requant unit (or one vector-unit output)
    vector_lanes: int = 16
    layer_setup_cycles: int = 64

    @property
    def variant(self):
        """The GEMM requant variant (fixedpoint.RequantVariant), None = the rounding profile's own."""
        return None if self.requant_variant == PROFILE_VARIANT else fp.parse_requant_variant(self.requant_variant)

    @property
    def macs_per_cycle(self) -> int:
        return self.rows * self.cols

    def sram_bytes(self, which: str) -> int:
        """Whole buffer in bytes (``which``: ifmap | weight | output); half of it is one tile slot."""
        return int(getattr(self, f"{which}_sram_kib") * 1024)

    def resolved_requant_depth(self) -> int:
        """Requant pipeline depth in cycles: the configured one, else the RTL's (rtl/requant_unit.sv)."""
        if self.requant_depth is not None:
            return int(self.requant_depth)
        rounding = _profile_rounding(self.rounding_profile)
        if rounding not in _RTL_DEPTH:  # read the SV source once per process
            from .. import rtl_info
            _RTL_DEPTH[rounding] = int(rtl_info.requant_latency(rounding))
        return _RTL_DEPTH[rounding]

    def with_overrides(self, **changes) -> "HwConfig":
        """A copy with fields replaced (None values ignored), validated.  Keys are field names or
        dotted preset paths (``**{"requant.variant": "shift-only"}``)."""
        known = _FIELD_TYPES  # every field name (built once, below the class)
        changes = {field_for_path(k) if "." in k else k: v for k, v in changes.items()}
        bad = sorted(k for k in changes if k not in known)
        if bad:
            raise QsimError(f"unknown hardware field(s) {', '.join(bad)}; known fields: {', '.join(sorted(known))}.")
        cfg = dataclasses.replace(self, **{k: _coerce(k, v) for k, v in changes.items() if v is not None})
        validate(cfg)
        if cfg.variant is not None and cfg.requant_variant != str(cfg.variant):  # canonical text ("Shift=8" -> "shift=8")
            cfg = dataclasses.replace(cfg, requant_variant=str(cfg.variant))
        return cfg

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["requant_depth"] = self.resolved_requant_depth()
        return d


_RTL_DEPTH: dict[str, int] = {}


def _profile_rounding(profile: str) -> str:
    return PROFILES[profile].default_rounding if profile in PROFILES else "double"


_FIELD_TYPES = {f.name: f.type for f in fields(HwConfig)}


def _coerce(name: str, value):
    """Convert a string/number to the field's type, with a clear error."""
    t = field_type(name)
    try:
        if t.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value, 0)
        if t.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        where = f" ({FIELD_PATHS[name]})" if name in FIELD_PATHS else ""
        raise QsimError(f"hardware field '{name}'{where} must be a number ({t}), got {value!r}.") from None


def validate(cfg: HwConfig) -> None:
    """Reject impossible machines with one clear message listing every problem."""
    p = []
    if cfg.rows < 1 or cfg.cols < 1:
        p.append(f"the MAC array must have at least 1x1 PEs, got {cfg.rows}x{cfg.cols}")
    if cfg.dataflow not in DATAFLOWS:
        p.append(f"dataflow must be 'ws' (weight-stationary) or 'os' (output-stationary), got {cfg.dataflow!r}")
    if cfg.int16_mode not in INT16_MODES:
        p.append(f"int16_mode (array.int16) must be 'two-pass' or 'native', got {cfg.int16_mode!r}")
    if cfg.clock_mhz <= 0:
        p.append(f"clock_mhz must be > 0, got {cfg.clock_mhz}")
    for which in ("ifmap", "weight", "output"):
        if getattr(cfg, f"{which}_sram_kib") <= 0:
            p.append(f"{which}_sram_kib must be > 0, got {getattr(cfg, f'{which}_sram_kib')}")
    if cfg.dram_bytes_per_cycle <= 0:
        p.append(f"dram_bytes_per_cycle must be > 0, got {cfg.dram_bytes_per_cycle}")
    if cfg.dram_latency_cycles < 0:
        p.append(f"dram_latency_cycles must be >= 0, got {cfg.dram_latency_cycles}")
    if cfg.requant_lanes < 1:
        p.append(f"requant_lanes must be >= 1, got {cfg.requant_lanes}")
    if cfg.requant_depth is not None and cfg.requant_depth < 0:
        p.append(f"requant_depth must be >= 0, got {cfg.requant_depth}")
    if cfg.rounding_profile not in PROFILES:
        p.append(f"rounding profile must be one of {', '.join(PROFILES)}, got {cfg.rounding_profile!r}")
    if not 8 <= cfg.acc_bits <= 32:
        p.append(f"acc_bits (accumulator.bits) must be between 8 and 32, got {cfg.acc_bits}")
    if cfg.acc_overflow not in OVERFLOW_MODES:
        p.append(f"acc_overflow (accumulator.overflow) must be 'wrap' or 'saturate', got {cfg.acc_overflow!r}")
    if cfg.acc_bias not in BIAS_PLACES:
        p.append(f"acc_bias (accumulator.bias) must be 'accumulator' or 'requant', got {cfg.acc_bias!r}")
    if cfg.acc_check not in CHECK_POINTS:
        p.append(f"acc_check (accumulator.check) must be 'end' or 'fold', got {cfg.acc_check!r}")
    if cfg.requant_variant != PROFILE_VARIANT:
        try:
            fp.parse_requant_variant(cfg.requant_variant)
        except QsimError as e:
            p.append(f"requant_variant (requant.variant): {str(e).rstrip('.')}, or 'profile'")
    for f in ("energy_mac_pj", "energy_sram_byte_pj", "energy_dram_byte_pj", "energy_requant_pj"):
        if not getattr(cfg, f) >= 0:
            p.append(f"{f} ({FIELD_PATHS[f]}) must be >= 0 picojoules, got {getattr(cfg, f)}")
    if cfg.vector_lanes < 1:
        p.append(f"vector_lanes must be >= 1, got {cfg.vector_lanes}")
    if cfg.layer_setup_cycles < 0:
        p.append(f"layer_setup_cycles must be >= 0, got {cfg.layer_setup_cycles}")
    if p:
        raise QsimError(f"invalid hardware configuration '{cfg.name}': " + "; ".join(p) + ".")


def preset_paths() -> dict[str, str]:
    """Every preset field as its dotted TOML path (``"array.rows"``) -> the HwConfig field it sets."""
    return {f"{section}.{key}": name for (section, key), name in TOML_KEYS.items()}


def field_type(name: str) -> str:
    """The HwConfig field's annotation as text (``"int"``, ``"float"``, ``"str"``, ``"int | None"``)."""
    return str(_FIELD_TYPES[name])


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_hw(spec: str | Path | None = None) -> HwConfig:
    """A preset name (``edge16``) or a path to a TOML file -> validated HwConfig."""
    spec = DEFAULT_PRESET if spec is None else spec
    path = Path(spec)
    if not (path.suffix == ".toml" or path.is_file()):
        path = PRESET_DIR / f"{spec}.toml"
        if not path.is_file():
            raise QsimError(f"unknown hardware preset '{spec}'; presets: {', '.join(preset_names())} "
                            "(or give the path of a .toml file).")
    return from_toml_dict(read_toml(path, "hardware file"), default_name=path.stem)


def read_toml(path: Path, what: str) -> dict:
    """A TOML file as a dict; a missing or unreadable file is a QsimError naming ``what`` it is."""
    if not path.is_file():
        raise QsimError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise QsimError(f"cannot read {what} {path}: {e}") from None


def from_toml_dict(data: dict, default_name: str = "custom") -> HwConfig:
    changes: dict = {"name": data.get("name", default_name), "description": data.get("description", "")}
    unknown = []
    for section, body in data.items():
        if section in ("name", "description"):
            continue
        if not isinstance(body, dict):
            unknown.append(section)
            continue
        for key, value in body.items():
            field = TOML_KEYS.get((section, key)) or LEGACY_TOML_KEYS.get((section, key))
            if field is None:
                unknown.append(f"{section}.{key}")
            else:
                changes[field] = value
    if unknown:
        raise QsimError(f"unknown key(s) in hardware file: {', '.join(unknown)}; known: "
                        + ", ".join(f"{s}.{k}" for s, k in TOML_KEYS) + ".")
    return HwConfig().with_overrides(**changes)


def parse_array(text: str) -> tuple[int, int]:
    """'32x32' -> (32, 32)."""
    try:
        r, c = text.lower().split("x")
        return int(r), int(c)
    except ValueError:
        raise QsimError(f"--array must look like ROWSxCOLS (e.g. 32x32), got {text!r}.") from None
