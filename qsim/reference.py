"""Compare qsim against the real reference interpreters, tensor by tensor.

Two references, each with its own rounding profile (:mod:`qsim.profiles`):

* ``"litert"``: the LiteRT interpreter (ai-edge-litert) with
  ``OpResolverType.BUILTIN_REF`` (TFLite's reference kernels) and
  ``experimental_preserve_all_tensors=True`` so every intermediate survives.
* ``"tflm"``: the TensorFlow Lite Micro Python runtime with
  ``InterpreterConfig.kPreserveAllTensors``; intermediates via
  ``GetTensor(index, 0)``.

Both use the same tensor indices as qsim's IR (they read the same
flatbuffer), so a comparison is a walk over qsim's ops in execution order:
for every op output, count differing elements and the largest absolute
difference in integer steps (LSB).  The first op with a difference is the
"first divergent op", the place to look.

A reference may refuse a model (LiteRT 2.3 rejects per-channel biases with
``quantized_dimension`` 3, e.g. person_detect.tflite).  That is reported as
``refused`` with the reference's own reason; it is not a qsim failure.

LiteRT's default (optimized, XNNPACK) kernels are measured too, against the
reference, on graph outputs only: informational, never a failure.

The references run in a child process (:mod:`qsim.refchild`: one, reused for
every input set and reference of a check, and replaced after a crash): a
reference that crashes or aborts on a model (TFLM reading a corrupt flatbuffer,
both on a SOFTMAX row whose sum of exponentials reaches 512) is reported as
``refused`` with ``crashed`` set, e.g. "TFLite Micro crashed on this model:
SIGSEGV", and qsim carries on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import ir
from .errors import QsimError, UndefinedInReferenceError
from .interpreter import PreparedGraph, check_inputs, prepare_graph
from .kernels.uint8 import tflm_uint8_refusals
from .loader import load_bytes, read_model_file
from .refchild import ChildRunner, start as start_children
from .refrun import (LiteRTRunner, ReferenceCrashed, ReferenceRefused, TFLMRunner,  # noqa: F401 - re-exported
                     _first_sentence, _quiet_stderr, open_in_process, tflm_arena_bytes)

REFERENCES = ("litert", "tflm")
REFERENCE_TITLES = {"litert": "LiteRT BUILTIN_REF", "tflm": "TFLite Micro", "xnnpack": "LiteRT default (XNNPACK)"}


# ------------------------------------------------------------------ model source

@dataclass
class Model:
    """A model as bytes plus its parsed graph (bytes feed the references, the graph feeds qsim)."""

    blob: bytes
    graph: ir.Graph
    path: str | None = None

    @classmethod
    def open(cls, model: "str | Path | bytes | Model", source: str = "<bytes>", validate: bool = True) -> "Model":
        """From a path, from bytes (``source`` names them in messages), or an existing Model.
        ``validate=False`` keeps an invalid graph (:mod:`qsim.validate`) for inspection."""
        if isinstance(model, Model):
            return model
        if isinstance(model, (bytes, bytearray)):
            return cls(bytes(model), load_bytes(bytes(model), source=source, validate=validate), None)
        blob = read_model_file(model)  # read once: the bytes feed the references, the graph qsim
        return cls(blob, load_bytes(blob, source=str(model), validate=validate), str(model))


# ------------------------------------------------------------------ reference runners

def make_runner(reference: str, blob: bytes, graph: ir.Graph | None = None, in_process: bool = False,
                wait: bool = True):
    """Runner for "litert" (BUILTIN_REF), "xnnpack" (LiteRT default kernels) or "tflm".

    By default the reference runs in its child process (:class:`qsim.refchild.ChildRunner`): a
    crash or abort in it raises ReferenceCrashed instead of killing this process.
    ``in_process=True`` gives the plain in-process runner (:mod:`qsim.refrun`; e.g. for timing
    the interpreter alone).  Both have ``run(inputs, tensors) -> {tensor index: array}``.
    ``wait=False`` (child only): return while the child loads the model; a refusal surfaces at
    the first ``ready()`` / ``run()``.
    """
    if reference not in REFERENCE_TITLES:
        raise QsimError(f"unknown reference '{reference}'; choose one of: litert, tflm, both")
    arena = tflm_arena_bytes(blob, graph) if reference == "tflm" else None
    if in_process:
        return open_in_process(reference, blob, arena)
    return ChildRunner(reference, blob, arena, wait=wait)


# ------------------------------------------------------------------ comparison

@dataclass
class TensorDiff:
    """One op output compared over all inputs: mismatching elements and max |diff| in LSB."""

    op_index: int
    opcode: str
    tensor_index: int
    name: str
    elements: int  # per inference
    mismatches: int = 0  # summed over all inferences
    max_diff: int = 0

    def add(self, ours: np.ndarray, theirs: np.ndarray) -> None:
        a = np.asarray(ours)
        b = np.asarray(theirs)
        if b.size == a.size and b.shape != a.shape:
            b = b.reshape(a.shape)
        if b.shape != a.shape:
            self.mismatches += a.size
            self.max_diff = max(self.max_diff, 1 << 32)  # shape disagreement: maximal
            return
        if np.issubdtype(a.dtype, np.floating) or np.issubdtype(b.dtype, np.floating):
            d = np.abs(a.astype(np.float64) - b.astype(np.float64))
            bad = ~((a == b) | (np.isnan(a.astype(np.float64)) & np.isnan(b.astype(np.float64))))
            self.mismatches += int(bad.sum())
            if bad.any():
                self.max_diff = max(self.max_diff, int(np.ceil(np.nanmax(np.where(bad, d, 0)))) or 1)
            return
        d = np.abs(a.astype(np.int64) - b.astype(np.int64))
        self.mismatches += int(np.count_nonzero(d))
        if d.size:
            self.max_diff = max(self.max_diff, int(d.max()))

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def as_dict(self) -> dict:
        return {"op_index": self.op_index, "op": self.opcode, "tensor_index": self.tensor_index,
                "tensor": self.name, "elements": self.elements, "mismatches": self.mismatches,
                "max_diff_lsb": self.max_diff}


@dataclass
class Comparison:
    """qsim (under ``profile``) vs one reference over ``n_inputs`` inferences."""

    reference: str
    profile: str
    n_inputs: int = 0
    layers: list[TensorDiff] = field(default_factory=list)
    refused: str | None = None  # the reference's reason when it would not run the model
    crashed: bool = False  # ``refused`` is the reference's death ("TFLite Micro crashed on this model: SIGSEGV")

    @property
    def ok(self) -> bool:
        """True when the reference ran and every tensor matched."""
        return self.refused is None and all(t.ok for t in self.layers)

    @property
    def total_mismatches(self) -> int:
        return sum(t.mismatches for t in self.layers)

    @property
    def first_divergent(self) -> TensorDiff | None:
        return next((t for t in self.layers if not t.ok), None)

    def summary(self) -> str:
        title = REFERENCE_TITLES.get(self.reference, self.reference)
        if self.crashed:
            return self.refused
        if self.refused is not None:
            who = {"litert": "LiteRT", "xnnpack": "LiteRT", "tflm": "TFLM"}.get(self.reference, title)
            if self.refused.startswith("not compared:"):  # qsim's judgement, not the reference's
                return f"{who} (profile '{self.profile}') {self.refused}"
            return f"{who} refused this model: {self.refused}"
        if self.ok:
            return (f"{title} (profile '{self.profile}'): all {len(self.layers)} op output tensors "
                    f"bit-exact on {self.n_inputs} input(s)")
        f = self.first_divergent
        bad = sum(1 for t in self.layers if not t.ok)
        return (f"{title} (profile '{self.profile}'): {bad} of {len(self.layers)} tensors differ "
                f"({self.total_mismatches} elements); first divergent op: #{f.op_index} {f.opcode} "
                f"-> '{f.name}' ({f.mismatches} mismatches, max |diff| {f.max_diff} LSB)")

    def as_dict(self) -> dict:
        f = self.first_divergent
        return {"reference": self.reference, "profile": self.profile, "inputs": self.n_inputs,
                "refused": self.refused, "crashed": self.crashed, "ok": self.ok, "total_mismatches": self.total_mismatches,
                "first_divergent": None if f is None else f.as_dict(),
                "layers": [t.as_dict() for t in self.layers]}


def op_output_tensors(g: ir.Graph) -> list[tuple[ir.Operator, int]]:
    """(op, output tensor index) in execution order: what the comparison walks."""
    return [(op, t) for op in g.operators for t in op.outputs if t >= 0]


def compare(model, inputs_list: list, reference: str = "tflm", profile: str | None = None,
            prepared: PreparedGraph | None = None) -> Comparison:
    """Run qsim and ``reference`` on each input set and compare every op output tensor.

    ``inputs_list``: a list of input sets, each a list of arrays in graph input
    order (or one array for single-input graphs).  ``profile`` defaults to the
    reference's own name ("litert" or "tflm").  Raises QsimError when qsim
    cannot run the model or an input is malformed; a reference that refuses the
    model gives ``Comparison.refused`` instead.
    """
    m = Model.open(model)
    g = m.graph
    profile = profile or reference
    cmp = Comparison(reference=reference, profile=profile)
    targets = op_output_tensors(g)
    cmp.layers = [TensorDiff(op.index, op.opcode, t, g.tensors[t].name, g.tensors[t].size) for op, t in targets]
    runner = make_runner(reference, m.blob, g, wait=False)  # loads the model in its child while qsim prepares
    wanted = [t for _, t in targets]
    no_uint8 = tflm_uint8_refusals(g) if reference == "tflm" else []
    try:
        if no_uint8 and inputs_list:  # TFLM first: its refusal of the uint8 ops is the expected answer
            runner.submit([_ordered_inputs(g, inputs_list[0])], wanted)[0].get()
        try:
            try:
                prep = prepared if prepared is not None and prepared.profile.name == profile else \
                    prepare_graph(g, profile)
            except UndefinedInReferenceError as e:  # nothing to compare with: say so, like a refusal
                runner.close()
                cmp.refused = f"not compared: {e}"
                return cmp
            input_sets = [_ordered_inputs(g, inputs) for inputs in inputs_list]
            pending = runner.submit(input_sets, wanted)  # the reference computes while qsim does
            for arrays, reply in zip(input_sets, pending):
                ours = prep.run(arrays, keep_all=True)
                theirs = reply.get()
                for diff in cmp.layers:
                    diff.add(ours[diff.tensor_index], theirs[diff.tensor_index])
                cmp.n_inputs += 1
        except QsimError:
            runner.ready()  # the reference first: its refusal is news even when qsim cannot run the model either
            raise
    except ReferenceRefused as e:
        cmp.refused, cmp.crashed = str(e), isinstance(e, ReferenceCrashed)
        if no_uint8 and not cmp.crashed:
            cmp.refused = (f"TFLite Micro has no uint8 kernel for {len(no_uint8)} op(s) of this old-converter "
                           f"(QUANTIZED_UINT8) model: {'; '.join(no_uint8[:4])}{'; ...' if len(no_uint8) > 4 else ''}. "
                           f"Its own words: {e}")
        cmp.n_inputs = 0
    return cmp


def _ordered_inputs(g: ir.Graph, inputs) -> list[np.ndarray]:
    checked = check_inputs(g, inputs)
    return [np.ascontiguousarray(checked[t]) for t in g.inputs]


def xnnpack_drift(model, inputs_list: list) -> list[TensorDiff] | str:
    """LiteRT default kernels vs BUILTIN_REF on graph outputs (informational).

    Returns one TensorDiff per graph output, or a string saying why it could not be measured.
    """
    m = Model.open(model)
    g = m.graph
    producer = {t: op for op in g.operators for t in op.outputs}
    diffs = []
    for t in g.outputs:
        op = producer.get(t)
        diffs.append(TensorDiff(op.index if op else -1, op.opcode if op else "INPUT", t, g.tensors[t].name,
                                g.tensors[t].size))
    input_sets = [_ordered_inputs(g, inputs) for inputs in inputs_list]
    try:
        ref = make_runner("litert", m.blob)
        fast = make_runner("xnnpack", m.blob)
    except ReferenceCrashed as e:
        return str(e)
    except ReferenceRefused as e:
        return f"LiteRT refused this model: {e}"
    try:
        for a, b in zip(ref.submit(input_sets, g.outputs), fast.submit(input_sets, g.outputs)):
            a, b = a.get(), b.get()
            for d in diffs:
                d.add(b[d.tensor_index], a[d.tensor_index])
    except ReferenceCrashed as e:
        return str(e)
    except ReferenceRefused as e:
        return f"LiteRT failed on this model: {e}"
    return diffs


def check(model, inputs_list: list, references=REFERENCES, xnnpack: bool = True,
          profile: str | None = None) -> dict:
    """Compare against each reference under its own profile (or ``profile`` for all); returns a report dict.

    ``report["ok"]`` is True when every reference that ran matched on every
    tensor and at least one reference ran.
    """
    m = Model.open(model)
    start_children(references)  # the children's start-up overlaps qsim's own work
    results = [compare(m, inputs_list, reference=r, profile=profile) for r in references]
    report = {"model": m.path or "<bytes>", "inputs": len(inputs_list),
              "comparisons": results,
              "ok": any(c.refused is None for c in results) and all(c.ok for c in results if c.refused is None)}
    if xnnpack and "litert" in references:
        report["xnnpack"] = xnnpack_drift(m, inputs_list)
    return report
