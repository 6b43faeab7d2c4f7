"""Rounding profiles: which arithmetic variant each reference interpreter uses, per op, as data.

TFLite Micro and LiteRT's reference kernels are not bit-identical everywhere.
A profile names, per op, the rounding of MultiplyByQuantizedMultiplier
("double" = TFLite's classic SRDHM + RoundingDivideByPOT, "single" =
TFLITE_SINGLE_ROUNDING) and, where the two references run a different
algorithm for the same op, which variant.  Every entry is established by the
differential tests in tests/test_reference_*.py, not by assumption.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import QsimError


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    default_rounding: str = "double"
    rounding_per_op: dict[str, str] = field(default_factory=dict)
    variant_per_op: dict[str, str] = field(default_factory=dict)  # op -> algorithm variant name

    def rounding(self, opcode: str) -> str:
        return self.rounding_per_op.get(opcode, self.default_rounding)

    def variant(self, opcode: str, default: str = "reference") -> str:
        return self.variant_per_op.get(opcode, default)


PROFILES: dict[str, Profile] = {
    "tflm": Profile(
        name="tflm",
        description="TensorFlow Lite Micro (tflite-micro Python runtime): TFLite's classic double rounding everywhere.",
        default_rounding="double",
    ),
    "litert": Profile(
        name="litert",
        description="LiteRT interpreter with OpResolverType.BUILTIN_REF (ai-edge-litert 2.3).",
        default_rounding="double",
        rounding_per_op={"FULLY_CONNECTED": "single"},
    ),
    "single": Profile(
        name="single",
        description="TFLITE_SINGLE_ROUNDING build: single rounding in every op.",
        default_rounding="single",
    ),
}


def get_profile(name: str | Profile) -> Profile:
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise QsimError(f"unknown rounding profile '{name}'; choose one of: {', '.join(PROFILES)}") from None
