"""User-facing errors.  The CLI turns these into one paragraph and an exit code.

Exit codes: 0 ok, 1 mismatch/failure found, 2 usage or input error.
"""


class QsimError(Exception):
    """Bad input or an impossible request: printed without a traceback, exit 2."""

    exit_code = 2


class UnsupportedModelError(QsimError):
    """The model uses ops or types qsim does not implement (all listed at once)."""


class ReferenceDefectError(QsimError):
    """qsim will not model a reference's known defect under that reference's profile (e.g. LiteRT
    reading an int32 bias of an int16x8 conv as int64).  ``qsim check`` reports that reference as not
    checked and goes on with the others; elsewhere it is a plain QsimError (exit 2)."""


class MismatchError(Exception):
    """A comparison found a difference: exit 1."""

    exit_code = 1


class InvalidModelError(QsimError):
    """The model file breaks the TFLite schema or its ops' rules (every violation listed, one per line)."""

    def __init__(self, message: str, violations: list[str]):
        super().__init__(message)
        self.violations = list(violations)
