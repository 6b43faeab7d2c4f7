"""The reference interpreters, in this process: LiteRT (BUILTIN_REF or its default XNNPACK kernels)
and the TensorFlow Lite Micro Python runtime.

Light on purpose (numpy and :mod:`qsim.errors` only; the reference libraries are imported on first
use): :mod:`qsim.refchild` runs these classes in a child process, and a child that must import all
of qsim would start slowly.  :func:`qsim.reference.make_runner` gives the isolated version, which
is what ``qsim check`` uses: a reference that crashes or aborts on a model must not take qsim down.
Use these classes directly only on models known to be well formed (tests, benchmarks).
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from .errors import QsimError


class ReferenceRefused(Exception):
    """A reference interpreter would not load or run the model (its reason in ``args[0]``)."""


class ReferenceCrashed(ReferenceRefused):
    """The reference's process died (a signal or an exit) or stopped answering; ``args[0]`` is the
    whole sentence, e.g. "TFLite Micro crashed on this model: SIGSEGV"."""


QUIET = True  # False in qsim.refchild's child, whose stderr is kept to explain a crash


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C++ log lines (e.g. "INFO: Created TensorFlow Lite XNNPACK delegate") on fd 2."""
    if not QUIET:
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _first_sentence(msg: str) -> str:
    """LiteRT repeats its complaint per tensor; keep the first statement and count the rest."""
    msg = " ".join(str(msg).split())
    cut = msg.find(".Tensor ")
    if cut < 0:
        return msg
    head = msg[:cut + 1]
    n = msg.count("has invalid quantization parameters")
    return f"{head} ({n} tensor(s) have invalid quantization parameters)" if n else head


class LiteRTRunner:
    """LiteRT interpreter.  ``reference=True``: BUILTIN_REF kernels, all tensors kept;
    ``reference=False``: the default optimized kernels (XNNPACK delegate), outputs only."""

    def __init__(self, blob: bytes, reference: bool = True):
        try:
            from ai_edge_litert import interpreter as li
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise QsimError("the LiteRT interpreter is not installed (pip install ai-edge-litert); "
                            "it is needed to compare against LiteRT.") from e
        self.reference = reference
        try:
            with _quiet_stderr():
                if reference:
                    self.it = li.Interpreter(model_content=blob,
                                             experimental_op_resolver_type=li.OpResolverType.BUILTIN_REF,
                                             experimental_preserve_all_tensors=True)
                else:
                    self.it = li.Interpreter(model_content=blob)
                self.it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ReferenceRefused(_first_sentence(str(e))) from None
        self.input_indices = [d["index"] for d in self.it.get_input_details()]
        self.output_indices = [d["index"] for d in self.it.get_output_details()]

    def run(self, inputs: list[np.ndarray], tensors, copy: bool = True) -> dict[int, np.ndarray]:
        """Set inputs (graph input order), invoke, return {index: copy} for ``tensors``
        (``copy=False``: the arrays LiteRT's get_tensor returns, valid until the next invoke).
        Variable tensors (state) are reset first: no state carries from one sample to the next."""
        self.it.reset_all_variables()
        for idx, a in zip(self.input_indices, inputs):
            self.it.set_tensor(idx, a)
        try:
            self.it.reset_all_variables()  # state (LSTM/SVDF) starts from scratch for every sample, as in qsim
            self.it.invoke()
        except (ValueError, RuntimeError) as e:
            raise ReferenceRefused(_first_sentence(str(e))) from None
        if not copy:
            return {t: self.it.get_tensor(t) for t in tensors}
        return {t: np.array(self.it.get_tensor(t)) for t in tensors}


class TFLMRunner:
    """TensorFlow Lite Micro Python runtime with every tensor preserved.

    ``arena_size``: bytes for TFLM's arena; by default :func:`tflm_arena_bytes` (which parses the
    model with qsim's loader unless ``graph`` is given)."""

    def __init__(self, blob: bytes, graph=None, arena_size: int | None = None):
        try:
            from tflite_micro.python.tflite_micro import runtime
        except ImportError as e:  # pragma: no cover
            raise QsimError("the TFLite Micro runtime is not installed (pip install tflite-micro); "
                            "it is needed to compare against TFLM.") from e
        if arena_size is None:
            arena_size = tflm_arena_bytes(blob, graph)
        try:
            with _quiet_stderr():
                self.it = runtime.Interpreter.from_bytes(
                    blob, arena_size=arena_size,
                    intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
        except (ValueError, RuntimeError) as e:
            raise ReferenceRefused(_first_sentence(str(e))) from None

    def run(self, inputs: list[np.ndarray], tensors) -> dict[int, np.ndarray]:
        """Set inputs, invoke, return {index: copy} for ``tensors``; variable tensors (state) are
        reset first (``Interpreter.reset()``): no state carries from one sample to the next."""
        try:
            with _quiet_stderr():
                self.it.reset()  # variable tensors (LSTM/SVDF state) back to their initial values, as in qsim
        except (ValueError, RuntimeError) as e:
            raise ReferenceRefused(_first_sentence(str(e))) from None
        for i, a in enumerate(inputs):
            self.it.set_input(a, i)
        try:
            with _quiet_stderr():
                self.it.invoke()
        except (ValueError, RuntimeError) as e:
            raise ReferenceRefused(_first_sentence(str(e))) from None
        return {t: np.array(self.it.GetTensor(t, 0)["tensor_data"]) for t in tensors}


def tflm_arena_bytes(blob: bytes, graph=None) -> int:
    """Arena for TFLM with every tensor preserved: the runtime's own default (10x the model
    size) fails on models with small weights and large activations, so add twice the bytes
    of all non-constant tensors plus 1 MiB of slack for scratch buffers."""
    if graph is None:
        from .loader import load_bytes
        graph = load_bytes(blob)
    activations = sum(t.nbytes for t in graph.tensors if not t.is_const)
    return 10 * len(blob) + 2 * activations + (1 << 20)


def open_in_process(reference: str, blob: bytes, arena_size: int | None = None):
    """The in-process runner for "litert" (BUILTIN_REF), "xnnpack" (LiteRT default) or "tflm"."""
    if reference == "litert":
        return LiteRTRunner(blob, reference=True)
    if reference == "xnnpack":
        return LiteRTRunner(blob, reference=False)
    if reference == "tflm":
        return TFLMRunner(blob, arena_size=arena_size)
    raise QsimError(f"unknown reference '{reference}'; choose one of: litert, tflm, both")
