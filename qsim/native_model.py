"""The native engine of :meth:`qsim.Model.run`: the whole model's generated C (``qsim codegen``,
target host) compiled for the host and called through ctypes.

The C is the firmware's own (:func:`qsim.codegen.emit.generate`: ``NAME_invoke`` / ``NAME_reset``,
the qkernels), tested bit-exact with TFLite Micro natively and on Cortex-M4, and with qsim's
Python kernels op by op, under the rounding it is built with: ``double`` reproduces profile
``tflm``, ``single`` profile ``single`` (uint8 models: ``litert``, :mod:`qsim.codegen.uint8`).
A small generated entry point runs N samples back to back, each as a fresh interpreter:
``NAME_reset()`` (every variable tensor back to its quantized zero, as
:func:`qsim.interpreter.variable_start_values` and the references do before each sample), then
``NAME_invoke`` on the sample's input bytes, writing its output bytes in place.  Inputs and
outputs are the arrays' own memory: sample k of an input is bytes ``[k * nbytes, (k+1) * nbytes)``
of the C-contiguous ``(N, ...)`` array.

Built once per (model, profile) with ``gcc -std=c99 -O3 -shared -fPIC -fvisibility=hidden`` into
:func:`qsim.native.cache_dir`, keyed by a hash of the generated sources, the flags and the
compiler version (:func:`qsim.native.build_shared`); the qkernels (model-independent) are
compiled once per rounding into cached object files that every model's library links, so a new
model compiles only its own generated files.  ``QSIM_NATIVE=0`` turns it off.  The
library keeps one static arena and state buffer (``NAME_invoke`` is not reentrant): calls on
one library (one file, however many Model objects loaded it) are serialized by its lock.
"""
from __future__ import annotations

import ctypes
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import ir, native
from .errors import QsimError
from .interpreter import batch_shape

NAME = "qsim_model"  # the C identifier of every generated model (one library per model: no clash)
FLAGS = ["-std=c99", "-O3", "-fvisibility=hidden"]  # -O3: measured 1.5-2.5x faster than -O2 on the LSTM and int16 conv
# The generated files the host library is compiled from (the others: main.c, Makefile, linker
# script, startup code, report, are firmware-only).
_SOURCES = [f"{NAME}.c", f"{NAME}_weights.c", "qkernels.c", "qkernels_int16.c", "qsim_batch.c"]
_HEADERS = [f"{NAME}.h", "qkernels.h", "qkernels_int16.h", "qk_config.h"]
_KERNELS = ("qkernels.c", "qkernels_int16.c")  # model-independent: cached object files
# One lock per library file: loading the same path twice (two Model objects of one model) gives
# the same handle, so the same static arena and state.
_LOCKS: dict[str, threading.Lock] = {}


@dataclass
class NativeModel:
    """A model's compiled C.  ``inputs`` / ``outputs``: (tensor index, dtype, model shape, bytes per
    sample) in graph order; ``build_seconds``: wall time of generation + compilation (or of the
    cache look-up when the library was already built)."""

    path: Path
    profile: str
    rounding: str
    inputs: list
    outputs: list
    build_seconds: float
    _fn: object = field(repr=False, default=None)
    guards: list = field(default_factory=list)  # (graph input index, the value it must hold), see _guards
    _lock: threading.Lock = field(repr=False, default_factory=threading.Lock)  # the library's (_LOCKS)
    _stage: tuple | None = field(repr=False, default=None)  # one sample's buffers, see _one

    def run(self, batch: dict[int, np.ndarray], n: int) -> dict[int, np.ndarray] | None:
        """``batch``: {input tensor index: (N, ...) array} as :meth:`qsim.Model.run` holds it ->
        {output tensor index: array in :func:`qsim.interpreter.batch_shape` layout}; None when an
        input's dtype or size is not the model's, or an input the C takes as a constant holds
        another value (the Python path then checks and reports it)."""
        for t, want in self.guards:
            if not np.array_equal(np.asarray(batch[t]).reshape(n, -1), np.broadcast_to(want, (n, want.size))):
                return None
        if n == 1:
            return self._one(batch)
        ins = []
        for t, dtype, _, nbytes in self.inputs:
            a = batch[t]
            if a.dtype != dtype or a.nbytes != n * nbytes:
                return None
            ins.append(np.ascontiguousarray(a))
        outs = {t: np.empty(batch_shape(shape, n), dtype) for t, dtype, shape, _ in self.outputs}
        io = (ctypes.c_void_p * (len(ins) + len(outs)))(*(a.ctypes.data for a in ins + list(outs.values())))
        with self._lock:
            self._fn(n, ctypes.addressof(io))
        return outs

    def _one(self, batch: dict[int, np.ndarray]) -> dict[int, np.ndarray] | None:
        """One sample through fixed staging buffers whose addresses are taken once (numpy's
        ``.ctypes.data`` costs microseconds per array, as much as a small model's whole run)."""
        for t, dtype, _, nbytes in self.inputs:
            a = batch[t]
            if a.dtype != dtype or a.nbytes != nbytes:
                return None
        with self._lock:  # the staging buffers are shared: fill, call and read under the lock
            if self._stage is None:
                ins = [np.empty(nbytes // dtype.itemsize, dtype) for _, dtype, _, nbytes in self.inputs]
                outs = [np.empty(batch_shape(shape, 1), dtype) for _, dtype, shape, _ in self.outputs]
                io = (ctypes.c_void_p * (len(ins) + len(outs)))(*(a.ctypes.data for a in ins + outs))
                self._stage = (ins, outs, io, ctypes.addressof(io))
            ins, outs, _, address = self._stage
            for (t, _, _, _), buf in zip(self.inputs, ins):
                buf[:] = batch[t].reshape(-1)
            self._fn(1, address)
            return {t: o.copy() for (t, _, _, _), o in zip(self.outputs, outs)}


def _entry_point(g: ir.Graph) -> str:
    """C of ``qsim_batch(n, io)``: N samples, each reset + invoke on its slice of the caller's buffers
    (``io``: the inputs' then the outputs' addresses, graph order)."""
    from .codegen.tables import c_type
    args = []
    for role, idxs, const in (("in", g.inputs, "const "), ("out", g.outputs, "")):  # io: inputs, then outputs
        for k, t in enumerate(idxs):
            tensor = g.tensors[t]
            ct = c_type(tensor.dtype)
            slot = k if role == "in" else len(g.inputs) + k
            args.append(f"({const}{ct} *)({const}void *)(({const}char *)io[{slot}] + k * {tensor.nbytes})")
    call = f",\n            ".join(args)
    return (f"/* qsim_batch.c: the native engine's entry point (generated by qsim.native_model). */\n"
            f'#include "{NAME}.h"\n\n'
            "__attribute__((visibility(\"default\")))\n"
            "int qsim_batch(int64_t n, void *const *io)\n{\n"
            "    int64_t k;\n"
            "    for (k = 0; k < n; ++k) {\n"
            f"        {NAME}_reset();\n"
            f"        {NAME}_invoke({call});\n"
            "    }\n    return 0;\n}\n")


def _guards(g: ir.Graph) -> list:
    """(graph input, value) for inputs the C reads as the constant the model stores: a
    TRANSPOSE_CONV's output_shape given as a graph input (SEANet's) is ignored by the C kernel, which
    computes the stored output shape, while the Python kernel refuses any other value; the native
    engine leaves such a sample to Python.  QsimError for an output_shape computed by another op."""
    out = []
    for op in g.operators:
        if op.opcode == "TRANSPOSE_CONV" and op.inputs and op.inputs[0] >= 0 and not g.tensors[op.inputs[0]].is_const:
            t = op.inputs[0]
            if t not in g.inputs:
                raise QsimError(f"op #{op.index} TRANSPOSE_CONV reads its output_shape from '{g.tensors[t].name}', "
                                "computed at run time; the C takes the stored output shape, so the native engine "
                                "cannot check it. Use engine='python'.")
            out.append((t, np.asarray(g.tensors[op.outputs[0]].shape, np.int64)))
    return out


def rounding_for(g: ir.Graph, profile: str) -> str:
    """The codegen rounding whose C reproduces ``profile`` for ``g``; QsimError when none does."""
    from .codegen import emit
    for rounding in emit.ROUNDING_PROFILES:
        try:
            if emit.model_profile(g, rounding) == profile:
                return rounding
        except QsimError:
            continue
    raise QsimError(f"the native engine runs the generated C, which reproduces profiles "
                    f"{', '.join(sorted(set(emit.ROUNDING_PROFILES.values())))} (uint8 models: litert), "
                    f"not '{profile}' for this model; use engine='python'.")


def check_enabled() -> None:
    """QsimError when the environment turns the native engine off (``QSIM_NATIVE=0``)."""
    if not native.enabled():
        raise QsimError("the native engine is turned off (QSIM_NATIVE=0); use engine='python'.")


def build(g: ir.Graph, profile: str) -> NativeModel:
    """Generate, compile (or find in the cache) and load ``g``'s C for ``profile``; QsimError with
    the reason when the native engine cannot run it (turned off, no compiler, a profile or an op
    the C generator does not support, a failed build)."""
    check_enabled()
    if native._compiler() is None:
        raise QsimError("the native engine needs a C compiler (gcc, or $CC) and none was found; "
                        "use engine='python'.")
    try:
        from .codegen import emit
    except ImportError as e:
        raise QsimError(f"the native engine needs qsim.codegen (jinja2): {e}; use engine='python'.") from None
    start = time.perf_counter()
    rounding = rounding_for(g, profile)
    guards = _guards(g)
    with tempfile.TemporaryDirectory() as d:
        try:
            emit.generate(g, d, name=NAME, target="host", rounding=rounding, force=True)
        except QsimError as e:
            raise QsimError(f"the native engine runs the generated C, and the C generator refuses this "
                            f"model: {e}") from None
        except Exception as e:  # a generator failure must not break a run the Python engine can do
            raise QsimError(f"the native engine runs the generated C, and the C generator failed on this "
                            f"model ({type(e).__name__}: {e}); use engine='python'.") from None
        files = {n: (Path(d) / n).read_bytes() for n in _SOURCES[:-1] + _HEADERS}
    files["qsim_batch.c"] = _entry_point(g)
    headers = {n: files[n] for n in _HEADERS if n != f"{NAME}.h"}
    objects = []
    for src in _KERNELS:  # the kernels: compiled once per (rounding, sources), shared by every model
        objects.append(native.build_shared(f"{Path(src).stem}_{rounding}", {src: files.pop(src), **headers},
                                           [src], FLAGS, compile_only=True))
    path = None if None in objects else native.build_shared(
        f"model_{rounding}", files, [n for n in _SOURCES if n not in _KERNELS], FLAGS, tuple(objects))
    if path is None:
        raise QsimError("the native engine could not compile the model's generated C (run "
                        "`qsim codegen` and `make` to see the compiler's message); use engine='python'.")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise QsimError(f"the native engine could not load {path}: {e}; use engine='python'.") from None
    fn = lib.qsim_batch
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int64, ctypes.c_void_p]
    io = [[(t, np.dtype(g.tensors[t].dtype), tuple(g.tensors[t].shape), g.tensors[t].nbytes) for t in idxs]
          for idxs in (g.inputs, g.outputs)]
    lock = _LOCKS.setdefault(str(path), threading.Lock())
    return NativeModel(path, profile, rounding, io[0], io[1], time.perf_counter() - start, fn, guards, lock)
