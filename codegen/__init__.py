"""qsim codegen: int8 TFLite model -> plain C99 firmware, bit-exact with TFLite Micro.

``generate(model, out_dir, name=None, target="host", rounding="double")`` writes
NAME.h / NAME.c / NAME_weights.c, the portable kernels qkernels.c/.h, a
main.c file-in/file-out harness, a Makefile and (for Cortex-M) a linker
script and start-up file.  See :mod:`qsim.codegen.emit`.
"""
from .emit import GenerateResult, c_identifier, generate

__all__ = ["GenerateResult", "c_identifier", "generate"]
