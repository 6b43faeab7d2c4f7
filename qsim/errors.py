"""User-facing errors.  The CLI turns these into one paragraph and an exit code.

Exit codes: 0 ok, 1 mismatch/failure found, 2 usage or input error.
"""


class QsimError(Exception):
    """Bad input or an impossible request: printed without a traceback, exit 2."""

    exit_code = 2


class UnsupportedModelError(QsimError):
    """The model uses ops or types qsim does not implement (all listed at once)."""


class UndefinedInReferenceError(UnsupportedModelError):
    """The profile's reference has no defined answer for this model (e.g. LiteRT's SVDF reading int8
    state as int16): ``qsim check`` reports that reference as not compared, with this reason."""


class MismatchError(Exception):
    """A comparison found a difference: exit 1."""

    exit_code = 1


class InvalidModelError(QsimError):
    """The model file breaks the TFLite schema or its ops' rules (every violation listed, one per line)."""

    def __init__(self, message: str, violations: list[str]):
        super().__init__(message)
        self.violations = list(violations)
