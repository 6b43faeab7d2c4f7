"""Functional int8 interpreter: prepare every op once, then evaluate the graph in order.

``prepare_graph`` does all validation up front (every unsupported op and type
is collected and reported in one error) and calls each kernel's prepare;
``PreparedGraph.run`` is integer-only and returns every tensor it produced.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import fixedpoint as fp, ir
from .errors import QsimError, UndefinedInReferenceError, UnsupportedModelError
from .kernels import REGISTRY, Kernel, RequantParams, with_requant_variant
from .kernels.uint8 import Uint8Params
from .profiles import Profile, get_profile
from .validate import op_label, raise_if_invalid, tensor_label

OUT_OF_SCOPE = {
    "LSTM": "LSTM is out of scope (recurrent, int16 cell state)",
    "BIDIRECTIONAL_SEQUENCE_LSTM": "LSTM is out of scope (recurrent, int16 cell state)",
}
# Ops whose kernels read an int16 activation's zero point themselves (SOFTMAX's int16 output has
# zero point -32768 by TFLite's rule; QUANTIZE / DEQUANTIZE subtract the input's): the generic
# "int16 means zero point 0" check of unsupported_ops does not apply to them.
INT16_ZERO_POINT_OPS = {"SOFTMAX", "QUANTIZE", "DEQUANTIZE"}
@dataclass
class PreparedOp:
    op: ir.Operator
    kernel: Kernel
    params: Any


@dataclass
class _Step:
    """One op of a run plan: where each input comes from and what each output must look like."""

    prepared: PreparedOp
    eval: Callable
    inputs: list  # per op input: (tensor index, constant array or None, read from the run's values?)
    outputs: list  # per op output: (tensor index, dtype, model shape)
    frees: tuple  # tensors no later op reads (dropped when keep_all is False)
    mode: str = "vector"  # batched runs only: "vector" | "loop" | "once" (see PreparedGraph.run)


@dataclass
class PreparedGraph:
    """A graph whose kernels are prepared: :meth:`run` evaluates it, one sample or a batch.

    Batch convention: a graph input whose model shape starts with a batch dimension of 1,
    ``(1, d1, ...)``, also accepts an array ``(N, d1, ...)``: N samples evaluated in one
    vectorized pass, bit-exact with N single runs.  Inside the graph every tensor that
    depends on the inputs then has shape ``(N,) + shape[1:]`` when its model shape starts
    with 1, else ``(N,) + shape`` (the N per-sample tensors stacked).
    """

    graph: ir.Graph
    profile: Profile
    ops: list[PreparedOp]
    requant: Any = None  # fp.RequantVariant of the GEMM ops' requant stage; None = the profile's own
    _plan: list | None = field(default=None, init=False, repr=False)
    _batch_plan: list | None = field(default=None, init=False, repr=False)
    _fast: tuple | None = field(default=None, init=False, repr=False)  # the single-sample loop's steps, see run
    _lean: tuple | None = field(default=None, init=False, repr=False)  # the same for _run_lean
    _lean_batches: dict | None = field(default=None, init=False, repr=False)  # batch size -> steps, see _batch_lean
    _input_specs: tuple | None = field(default=None, init=False, repr=False)  # see _exact_inputs
    _state_start: dict | None = field(default=None, init=False, repr=False)  # see state_start

    @property
    def state_start(self) -> dict[int, np.ndarray]:
        """:func:`variable_start_values` of the graph (read-only arrays), computed once."""
        if self._state_start is None:
            self._state_start = variable_start_values(self.graph)
        return self._state_start

    def run(self, inputs, keep_all: bool = True,
            on_op: Callable[[PreparedOp, list, list], None] | None = None) -> dict[int, np.ndarray]:
        """Evaluate.  ``inputs``: list (graph input order), one array, or {tensor index: array}.

        Returns {tensor index: array} for graph outputs, or every produced tensor (and the
        inputs) when ``keep_all``.  ``on_op(prepared, in_arrays, out_arrays)`` is called after
        each op (the accelerator model uses it).

        Batches: give every graph input as ``(N,) + shape[1:]`` (its model shape is
        ``(1,) + shape[1:]``; all inputs the same N) to evaluate N samples at once.  The
        result then holds, per tensor, the N samples' values stacked on a new leading axis,
        with a model batch dimension of 1 merged into it: a ``(1, 10)`` output comes back as
        ``(N, 10)``, a ``(10,)`` one as ``(N, 10)``.  ``on_op`` then sees the batched arrays.
        An array equal to the model shape is one sample, evaluated and shaped exactly as
        without batching (use :meth:`run_batched` for a uniform ``(N, ...)`` result).
        GEMMs, element-wise ops, pooling and shape ops run over the whole batch in one pass;
        an op whose semantics touch the batch axis (a MEAN over axis 0, a CONCATENATION or
        TRANSPOSE moving axis 0, ...) runs sample by sample (see ``_batch_mode``).  A model
        whose input dimension 0 is not 1 keeps requiring its exact shape.
        """
        values = self._exact_inputs(inputs)
        if values is None:
            arrays, n = check_batch_inputs(self.graph, inputs)
            if n is not None:
                return self._run_batch(arrays, n, keep_all, on_op)
            values = dict(arrays)
        fast = self._fast
        if fast is None:
            self._steps()
            fast = self._fast
        if on_op is None and not keep_all:
            return self._run_lean(values)
        # The run loop: per op, its bound eval and params, where its inputs come from, the
        # model dtype/shape of each output, and the tensors to drop after it (see _build_plan).
        for ev, params, template, live, outputs, frees, prepared in fast:
            ins = _run_step(ev, params, template, live, outputs, values)
            if on_op is not None:
                on_op(prepared, ins, [values[t] for t, _, _ in outputs])
            if not keep_all:
                for t in frees:
                    del values[t]
        if keep_all:
            return values
        return {t: values[t] for t in self.graph.outputs}

    def _run_lean(self, values: dict[int, np.ndarray], lean: tuple | None = None) -> dict[int, np.ndarray]:
        """run(..., keep_all=False, on_op=None) on one sample (``values``: the graph inputs): the
        same steps as run's loop, with the common op -- one input read from the run's values,
        one output -- unpacked from a flat tuple (see _steps).  A single run of a small model
        is dominated by such per-op Python work.  ``lean``: the steps of a batch instead (see
        _batch_lean)."""
        ndarray = np.ndarray
        for ev, params, template, k, i, t, dtype, shape, frees in self._lean if lean is None else lean:
            if k < 0:  # the general step: ``i`` holds run's (live, outputs) of it
                _run_step(ev, params, template, i[0], i[1], values)
            else:
                ins = template.copy()
                ins[k] = values[i]
                arr = ev(params, ins)[0]
                if arr.__class__ is not ndarray or (arr.dtype is not dtype and arr.dtype != dtype) or \
                        arr.shape != shape:
                    arr = np.asarray(arr).astype(dtype, copy=False).reshape(shape)
                values[t] = arr
            for t in frees:
                del values[t]
        return {t: values[t] for t in self.graph.outputs}

    def _exact_inputs(self, inputs) -> dict[int, np.ndarray] | None:
        """{tensor index: array} when ``inputs`` (a list/tuple in graph input order, or one array)
        holds ndarrays of exactly the model's shapes and dtypes -- what :func:`check_batch_inputs`
        returns for them, without its general checks; None for anything else (then the caller
        runs those checks)."""
        specs = self._input_specs
        if specs is None:
            specs = self._input_specs = tuple((t, np.dtype(self.graph.tensors[t].dtype),
                                               tuple(self.graph.tensors[t].shape)) for t in self.graph.inputs)
        if inputs.__class__ is np.ndarray:
            inputs = (inputs,)
        elif inputs.__class__ is not list and inputs.__class__ is not tuple:
            return None
        if len(inputs) != len(specs):
            return None
        values = {}
        for (t, dtype, shape), a in zip(specs, inputs):
            if a.__class__ is not np.ndarray or a.shape != shape or a.dtype != dtype:
                return None
            values[t] = a
        return values

    def run_batched(self, inputs, batch_size: int = 64, keep_all: bool = False,
                    on_op: Callable[[PreparedOp, list, list], None] | None = None) -> dict[int, np.ndarray]:
        """:meth:`run` over a batch ``(N,) + shape[1:]`` in chunks of at most ``batch_size`` samples.

        Memory stays bounded by one chunk's tensors; the chunks' results are concatenated
        along axis 0.  Always returns the batched layout ``(N, ...)`` (see :meth:`run`), also
        for N = 1 and for a single model-shaped sample.
        """
        if int(batch_size) < 1:
            raise QsimError(f"batch_size must be at least 1, got {batch_size}.")
        arrays, n = check_batch_inputs(self.graph, inputs)
        if n is None:  # one sample given in the model's own shape
            arrays, n = {t: a.reshape((1,) + a.shape[1:]) for t, a in arrays.items()}, 1
        step = int(batch_size)
        parts = [self._run_batch({t: a[s:s + step] for t, a in arrays.items()}, min(step, n - s), keep_all, on_op)
                 for s in range(0, n, step)]
        if len(parts) == 1:
            return parts[0]
        return {t: np.concatenate([p[t] for p in parts], axis=0) for t in parts[0]}

    def run_samples(self, batch: dict[int, np.ndarray], keep_all: bool = False) -> dict[int, np.ndarray]:
        """N samples stacked on a new leading axis ({input index: (N,) + sample shape}) -> {tensor
        index: (N, ...)} in the layout of :func:`batch_shape`, for any model: when every input has
        a model batch dimension of 1 (sample shape ``(1,) + rest`` given as ``(N,) + rest``) in
        one vectorized pass; otherwise (an input whose dimension 0 is not 1, given as
        ``(N,) + shape``) sample by sample."""
        g = self.graph
        n = next(iter(batch.values())).shape[0]
        if all(has_batch1(g.tensors[t]) for t in batch):
            return self.run_batched(batch, batch_size=max(n, 1), keep_all=keep_all)
        runs = [self.run({t: a[k] for t, a in batch.items()}, keep_all=keep_all) for k in range(n)]
        return {t: np.stack([r[t] for r in runs]).reshape(batch_shape(g.tensors[t].shape, n)) for t in runs[0]}

    def batch_plan(self) -> list[tuple[int, str, str]]:
        """(op index, opcode, mode) per op of a batched run: "vector" (one pass over the whole
        batch), "loop" (sample by sample: the op's semantics touch the batch axis) or "once"
        (no input depends on the samples: computed once and repeated)."""
        return [(s.prepared.op.index, s.prepared.op.opcode, s.mode) for s in self._batch_steps()]

    # ------------------------------------------------------------------ plans

    def _steps(self) -> list[_Step]:
        """The run plan, built once: constant inputs resolved, output dtypes/shapes and the
        last reader of every tensor known, so that run() does no per-op lookups."""
        if self._plan is None:
            self._plan = _build_plan(self.graph, self.ops, self.state_start)
            self._fast = tuple(_fast_step(s, tuple(s.outputs)) for s in self._plan)
            lean = [_lean_step(*f[:6]) for f in self._fast]
            self._lean = _fuse_fc_chains(lean, self._plan, set(self.graph.outputs))
        return self._plan

    def _batch_lean(self, n: int) -> tuple | None:
        """_run_lean's flat steps for a batch of ``n`` (output shapes :func:`batch_shape`), built once
        per n (the last few kept), when every op runs "vector" (one pass over the batch); None
        otherwise (then _run_batch's general loop runs)."""
        cache = self._lean_batches
        if cache is None:
            cache = self._lean_batches = {}
        got = cache.get(n)
        if got is None:
            steps = self._batch_steps()
            if any(s.mode != "vector" for s in steps):
                got = False
            else:
                got = tuple(_lean_step(*_fast_step(s, tuple((t, dtype, batch_shape(shape, n))
                                                            for t, dtype, shape in s.outputs))[:6]) for s in steps)
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            cache[n] = got
        return got or None

    def _batch_steps(self) -> list[_Step]:
        if self._batch_plan is None:
            g = self.graph
            steps = [_Step(s.prepared, s.eval, s.inputs, s.outputs, s.frees) for s in self._steps()]
            batched = set(g.inputs)
            for s in steps:
                s.mode = _batch_mode(g, s, batched)
                if s.mode != "once":
                    batched.update(t for t, _, _ in s.outputs)
            self._batch_plan = steps
        return self._batch_plan

    def _run_batch(self, arrays: dict[int, np.ndarray], n: int, keep_all: bool, on_op) -> dict[int, np.ndarray]:
        """N samples at once; ``arrays`` hold ``(n,) + shape[1:]`` per graph input."""
        g = self.graph
        if on_op is None and not keep_all:
            lean = self._batch_lean(n)
            if lean is not None:
                return self._run_lean(dict(arrays), lean)
        values: dict[int, np.ndarray] = dict(arrays)
        batched = set(arrays)
        for s in self._batch_steps():
            ins = [values[i] if live else c for i, c, live in s.inputs]
            if s.mode == "loop":
                outs = _per_sample(g, s, ins, batched, n)
            else:
                outs = s.eval(s.prepared.params, ins)
            for (t, dtype, shape), arr in zip(s.outputs, outs):
                arr = np.asarray(arr).astype(dtype, copy=False)
                values[t] = arr.reshape(shape if s.mode == "once" else batch_shape(shape, n))
                if s.mode != "once":
                    batched.add(t)
            if on_op is not None:
                on_op(s.prepared, ins, [values[t] for t, _, _ in s.outputs])
            if not keep_all:
                for t in s.frees:
                    del values[t]
        keep = values if keep_all else {t: values[t] for t in g.outputs}
        # Tensors that do not depend on the inputs (ops on constants only) were computed once:
        # repeat them so that every returned array has the batched layout.
        return {t: a if t in batched else
                np.broadcast_to(a[None], (n,) + a.shape).reshape(batch_shape(g.tensors[t].shape, n))
                for t, a in keep.items()}


def _fast_step(s: _Step, outputs: tuple) -> tuple:
    """run's loop entry of step ``s``: (eval, params, input template with the constants in place,
    live inputs ((position, tensor index), ...), ``outputs`` ((tensor, dtype, shape), ...), tensors
    freed after it, the PreparedOp)."""
    return (s.eval, s.prepared.params, [None if live else c for _, c, live in s.inputs],
            tuple((k, i) for k, (i, _, live) in enumerate(s.inputs) if live), outputs, s.frees, s.prepared)


def _lean_step(ev, params, template: list, live: tuple, outputs: tuple, frees) -> tuple:
    """_run_lean's flat entry of a step: the common op (one live input, one output) unpacked as
    (ev, params, template, position, input tensor, output tensor, dtype, shape, frees), any other
    with position -1 and (live, outputs) in the input tensor's place."""
    if len(live) == 1 and len(outputs) == 1:
        return (ev, params, template, live[0][0], live[0][1]) + outputs[0] + (frees,)
    return ev, params, template, -1, (live, outputs), None, None, None, frees


def _fuse_fc_chains(lean: list, plan: list[_Step], outputs: set) -> tuple:
    """``lean`` (the lean loop's steps, see _steps) with each run of FULLY_CONNECTED steps that
    read only the previous step's output -- a tensor no other op reads and not a graph output --
    replaced by one step evaluating them together (:func:`qsim.kernels.fully_connected.fc_chain`,
    where it proves the chain: the intermediate int8 tensors are never built)."""
    from .kernels.fully_connected import fc_chain

    def fc(m: int) -> bool:
        return plan[m].prepared.op.opcode == "FULLY_CONNECTED" and lean[m][3] == 0

    def links(m: int) -> bool:  # step m reads step m-1's output, and only it does
        a, b = lean[m - 1], lean[m]
        return fc(m) and b[4] == a[5] and a[5] in b[8] and a[5] not in outputs
    out, j = [], 0
    while j < len(lean):
        end = j + 1
        while fc(j) and end < len(lean) and links(end):
            end += 1
        got = fc_chain([plan[m].prepared.params for m in range(j, end)]) if end - j > 1 else None
        if got is None:
            out.append(lean[j])
            j += 1
            continue
        ps, ev, count = got
        members = lean[j:j + count]
        inner = {m[5] for m in members[:-1]}  # never stored in the run's values
        first, last = members[0], members[-1]
        out.append((ev, ps, first[2], first[3], first[4], last[5], last[6], last[7],
                    tuple(f for m in members for f in m[8] if f not in inner)))
        j += count
    return tuple(out)


def _run_step(ev, params, template: list, live: tuple, outputs: tuple, values: dict) -> list:
    """One op of a single-sample run: its inputs (``template``, the constant inputs in place,
    with the produced tensors ``live`` = ((position, tensor index), ...) read from ``values``),
    ``ev``, and its outputs stored in ``values`` with their model dtype/shape; returns the inputs."""
    ins = template.copy()
    for k, i in live:
        ins[k] = values[i]
    outs = ev(params, ins)
    ndarray = np.ndarray
    for (t, dtype, shape), arr in zip(outputs, outs):
        if arr.__class__ is not ndarray or arr.dtype != dtype or arr.shape != shape:
            arr = np.asarray(arr).astype(dtype, copy=False).reshape(shape)
        values[t] = arr
    return ins


def has_batch1(t: ir.Tensor) -> bool:
    return bool(t.shape) and t.shape[0] == 1


def batch_shape(shape, n: int) -> tuple[int, ...]:
    """Shape of a batched tensor of model shape ``shape``: (n,) + shape[1:] when shape[0] == 1,
    else (n,) + shape (the samples stacked on a new axis)."""
    shape = tuple(shape)
    return (n,) + shape[1:] if shape and shape[0] == 1 else (n,) + shape


def _batch_mode(g: ir.Graph, s: _Step, batched: set[int]) -> str:
    """How a batched run evaluates this op: "once" (no input depends on the samples: computed
    once, like a constant), "vector" (one pass over the whole batch) or "loop" (sample by sample).

    "vector" needs every batched input to carry the model batch dimension of 1 (so the batch
    rides on axis 0, which the kernels already treat as a batch) and the kernel's own
    ``batch`` predicate to accept the op; anything else -- a kernel without a predicate, a
    MEAN over axis 0, a TRANSPOSE or STRIDED_SLICE touching axis 0, a CONCATENATION along axis
    0, an element-wise op that would broadcast the batch axis against a constant -- falls back
    to the per-sample loop, which is correct for any op at the cost of N kernel calls.
    """
    flags = [live and i in batched for i, _, live in s.inputs]
    if not any(flags):
        return "once"
    merged = all(len(g.tensors[i].shape) >= 1 and g.tensors[i].shape[0] == 1
                 for (i, _, _), f in zip(s.inputs, flags) if f)
    k = s.prepared.kernel
    if merged and k.batch is not None and k.batch(s.prepared.params, s.prepared.op, g, flags):
        return "vector"
    return "loop"


def _per_sample(g: ir.Graph, s: _Step, ins: list, batched: set[int], n: int) -> list[np.ndarray]:
    """Evaluate one op sample by sample; outputs stacked as (n,) + model shape."""
    views = [a.reshape((n,) + tuple(g.tensors[i].shape)) if live and i in batched else None
             for (i, _, live), a in zip(s.inputs, ins)]
    results = []
    for k in range(n):
        outs = s.eval(s.prepared.params, [a if v is None else v[k] for a, v in zip(ins, views)])
        results.append([np.asarray(o).astype(dtype, copy=False).reshape(shape)
                        for (_, dtype, shape), o in zip(s.outputs, outs)])
    return [np.stack(col) for col in zip(*results)]


def variable_start_values(g: ir.Graph) -> dict[int, np.ndarray]:
    """{tensor index: value} of every variable tensor (``Tensor.is_variable``, e.g. SVDF's
    activation_state) at the start of *every* run, read-only: state never carries from one run
    or sample to the next (the reference runners reset their variables before each sample).

    The value is the quantized zero: the zero point for int8 and 0 for every other type, what
    LiteRT's and TFLite Micro's ResetVariableTensors write.  Buffer data stored for a variable
    tensor is ignored, as TFLite Micro ignores it (measured: its outputs equal those of the model
    without the data; LiteRT refuses such a model, "a variable tensor with buffer ... not
    supported").  A variable tensor read by more than one op is refused: one op's update would
    have to reach the next within a run, which qsim does not model."""
    readers: dict[int, list[int]] = {}
    for op in g.operators:
        for i in set(op.inputs):
            if 0 <= i < len(g.tensors) and g.tensors[i].is_variable:
                readers.setdefault(i, []).append(op.index)
    out = {}
    for i, ops in readers.items():
        t = g.tensors[i]
        if len(ops) > 1:
            raise QsimError(f"{tensor_label(g, i)} is a variable tensor read by ops {ops}; qsim models state "
                            "read and updated by a single op only.")
        zp = t.quant.zp0 if t.quant is not None and np.dtype(t.dtype) == np.int8 and t.quant.zero_point.size else 0
        a = np.full(t.shape, zp, dtype=t.dtype)
        a.flags.writeable = False
        out[i] = a
    return out


def _build_plan(g: ir.Graph, ops: list[PreparedOp], start: dict[int, np.ndarray]) -> list[_Step]:
    produced = set(g.inputs)
    steps = []
    for p in ops:
        ins = []
        for i in p.op.inputs:
            if i < 0:
                ins.append((i, None, False))  # absent optional input: passed as None
                continue
            t = g.tensors[i]
            if t.is_variable and i not in produced:
                ins.append((i, start[i], False))  # read-only: a kernel returns new state, never writes it
            elif i in produced:
                ins.append((i, None, True))
            elif t.data is not None:
                ins.append((i, t.data, False))
            else:
                # qsim.validate refuses such graphs; never compute on a missing value
                raise QsimError(f"{op_label(g, p.op)} reads {tensor_label(g, i)}, which has no value at this "
                                "point (not a graph input, a constant, or an earlier op's output).")
        outs = [(t, np.dtype(g.tensors[t].dtype), tuple(g.tensors[t].shape)) for t in p.op.outputs]
        produced.update(p.op.outputs)
        steps.append(_Step(p, p.kernel.bound_eval(p.params), ins, outs, ()))
    # Last reader of each produced tensor: free it right after (graph outputs are kept).
    last: dict[int, int] = {}
    for k, s in enumerate(steps):
        for i, _, live in s.inputs:
            if live:
                last[i] = k
    for k, s in enumerate(steps):
        s.frees = tuple(sorted({i for i, _, live in s.inputs if live and last[i] == k and i not in g.outputs}))
    return steps


# Ops whose int16 form neither reference defines (measured with built single-op models): refused with
# that reason rather than "not supported yet".
INT16_UNDEFINED = {
    "HARD_SWISH": "neither TFLite Micro nor LiteRT runs HARD_SWISH on int16 (TFLM fails to invoke; LiteRT: "
                  "\"Only float32, uint8 and int8 are supported\"), so there is no reference answer to match; "
                  "keep HARD_SWISH int8 (QUANTIZE around it)",
}


def unsupported_ops(g: ir.Graph, int16: bool = False, uint8: bool | None = None) -> list[str]:
    """One line per op qsim cannot run, with its index, output tensor and reason.

    ``int16``: accept int16 activations (zero point 0) in the ops whose kernels have an int16x8
    path (the simulator: :func:`prepare_graph`, ``qsim inspect``; the C generator asks so too and
    checks its own int16 forms, :func:`qsim.codegen.tables.int16_without_c_kernel`).  False (the
    default) lists every op touching an int16 activation, by name.  ``uint8`` (default: as
    ``int16``): accept the old converter's uint8 ops (:mod:`qsim.kernels.uint8`); False lists every
    op with a uint8 tensor except the QUANTIZE / DEQUANTIZE of a uint8 model interface (int8 body;
    the accelerator model runs their kernels).  The C generator passes ``uint8=True`` for uint8
    models and runs them as their int8 twin graph (:mod:`qsim.codegen.uint8`)."""
    from .kernels.uint8 import UINT8_OPS, uint8_tensors
    uint8 = int16 if uint8 is None else uint8
    problems, uint8_ops = [], []
    for op in g.operators:
        where = op_label(g, op)
        u8 = uint8_tensors(op, g) if op.opcode in REGISTRY else []
        if op.opcode in OUT_OF_SCOPE:
            problems.append(f"{where}: {OUT_OF_SCOPE[op.opcode]}")
        elif op.opcode not in REGISTRY:
            problems.append(f"{where}: op not implemented by qsim")
        elif u8 and not uint8 and op.opcode not in ("QUANTIZE", "DEQUANTIZE"):
            uint8_ops.append(f"{where} '{u8[0].name}'")
        elif u8 and op.opcode not in UINT8_OPS:
            problems.append(f"{where}: uint8 tensor '{u8[0].name}': qsim's uint8 ops are "
                            f"{', '.join(sorted(UINT8_OPS))}")
        else:
            for t in g.op_inputs(op) + g.op_outputs(op):
                if t is None or t.dtype != np.int16 or t.is_const:
                    continue
                if not int16:
                    problems.append(f"{where}: int16 activations ('{t.name}') are not supported (int8 only)")
                    break
                if op.opcode in INT16_UNDEFINED:
                    problems.append(f"{where}: int16 activations ('{t.name}'): {INT16_UNDEFINED[op.opcode]}")
                    break
                if not REGISTRY[op.opcode].int16:
                    problems.append(f"{where}: int16 activations ('{t.name}') are not supported for {op.opcode} "
                                    f"yet (int16x8 ops: {', '.join(sorted(k for k, v in REGISTRY.items() if v.int16))})")
                    break
                if t.quant is not None and np.any(t.quant.zero_point != 0) and op.opcode not in INT16_ZERO_POINT_OPS:
                    problems.append(f"{where}: int16 tensor '{t.name}' has zero point "
                                    f"{int(t.quant.zero_point[t.quant.zero_point != 0][0])}; TFLite's int16x8 "
                                    "scheme requires zero point 0 on int16 activations")
                    break
    if uint8_ops:
        problems.append(f"this is an old-converter uint8 (QUANTIZED_UINT8) model: {len(uint8_ops)} op(s) have uint8 "
                        f"tensors ({'; '.join(uint8_ops[:3])}{'; ...' if len(uint8_ops) > 3 else ''}). The accelerator "
                        "datapath's values and the RTL vectors are int8 only; the simulator runs it (qsim run/check "
                        "--profile litert), `qsim codegen` generates it and `qsim profile --no-values` times it (the array's cost "
                        "is int8's: the offsets fold into the bias). For the rest, re-convert the model with "
                        "full-integer int8 quantization")
    return problems


def check_quantized(g: ir.Graph) -> None:
    """A float-only model (float inputs and no quantized compute) is not what qsim simulates."""
    float_compute = [op for op in g.operators if op.opcode not in ("QUANTIZE", "DEQUANTIZE")
                     and any(t.dtype == np.float32 and not t.is_const for t in g.op_outputs(op))]
    if float_compute and len(float_compute) == len([o for o in g.operators if o.opcode not in ("QUANTIZE", "DEQUANTIZE")]):
        names = sorted({op.opcode for op in float_compute})
        raise UnsupportedModelError(
            f"{g.source or 'this model'} is a float model: all {len(float_compute)} compute ops "
            f"({', '.join(names)}) run in FLOAT32. qsim simulates int8 integer inference; convert the model "
            "with full-integer post-training quantization (TFLiteConverter with "
            "optimizations=[tf.lite.Optimize.DEFAULT], a representative_dataset and "
            "target_spec.supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS_INT8]) and load the int8 file.")


def prepare_graph(g: ir.Graph, profile: str | Profile = "tflm", requant=None) -> PreparedGraph:
    """Validate (:func:`qsim.validate.raise_if_invalid`: graphs built in memory skip the loader),
    refuse float models and unsupported ops (all listed), then prepare every op.

    ``requant``: a requant arithmetic variant (:func:`qsim.fixedpoint.parse_requant_variant`:
    "double", "single", "float32", "shift-only", "shift=N", "mult-bits=N", "truncate") for the
    requant stage of every GEMM op (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED); the other ops
    keep the profile's arithmetic.  None: the profile's own."""
    prof = get_profile(profile)
    variant = None if requant is None else fp.parse_requant_variant(requant)
    raise_if_invalid(g)
    check_quantized(g)
    problems = unsupported_ops(g, int16=True)
    prepared = []
    undefined = 0  # problems that are the profile reference's undefined cases (not qsim's gaps)
    if not problems:
        for op in g.operators:
            k = REGISTRY[op.opcode]
            try:
                params = k.prepare(op, g, prof)
            except QsimError as e:
                problems.append(f"{op_label(g, op)}: {e}")
                undefined += isinstance(e, UndefinedInReferenceError)
                continue
            twin = params.inner if isinstance(params, Uint8Params) else params  # a uint8 layer's int8 twin
            rq = getattr(twin, "requant", None)
            if variant is not None and k.accumulate is not None and not isinstance(rq, RequantParams):
                problems.append(f"{op_label(g, op)}: requant variants ({variant}) cover int8 (and uint8) GEMM "
                                "layers only; this layer is int16x8 (int64 accumulators)")
                continue
            if variant is not None and k.accumulate is not None and isinstance(rq, RequantParams):
                try:
                    twin_v = dataclasses.replace(twin, requant=with_requant_variant(rq, variant))
                    params = dataclasses.replace(params, inner=twin_v) if twin is not params else twin_v
                except QsimError as e:
                    raise QsimError(f"{op_label(g, op)}: {e}") from None
            prepared.append(PreparedOp(op, k, params))
    if problems:
        undefined_only = undefined == len(problems)  # every problem is the reference's, none qsim's
        what = (f"op(s) qsim cannot run under profile '{prof.name}' (its reference has no defined answer)"
                if undefined_only else "op(s) qsim cannot run")
        raise (UndefinedInReferenceError if undefined_only else UnsupportedModelError)(
            f"{g.source or 'the model'} uses {len(problems)} {what}:\n  - " + "\n  - ".join(problems))
    return PreparedGraph(g, prof, prepared, variant)


def conform_shape(a: np.ndarray, t: ir.Tensor) -> np.ndarray:
    """``a`` reshaped to ``t.shape`` when only size-1 dimensions differ (batch, channel) or the
    data is flat (1-D, same size); any other shape is an error, never a silent reshape that
    would reorder the data (a [10, 49] array is not a [1, 49, 10, 1] input)."""
    if tuple(a.shape) == tuple(t.shape):
        return a
    squeeze = [d for d in a.shape if d != 1]
    if a.size == t.size and (squeeze == [d for d in t.shape if d != 1] or a.ndim == 1):
        return a.reshape(t.shape)
    raise QsimError(f"input '{t.name}' must have shape {list(t.shape)} ({t.size} values), got an array of "
                    f"shape {list(a.shape)} ({a.size} values).")


def _input_items(g: ir.Graph, inputs) -> dict:
    """User inputs as {graph input tensor index: value} (list in graph input order, one array, or a dict)."""
    if isinstance(inputs, dict):
        items = inputs
    else:
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if len(inputs) != len(g.inputs):
            raise QsimError(f"the model has {len(g.inputs)} input(s) but {len(inputs)} were given.")
        items = dict(zip(g.inputs, inputs))
    for t_idx in g.inputs:
        if t_idx not in items:
            raise QsimError(f"missing input for tensor {t_idx} '{g.tensors[t_idx].name}'.")
    return items


def _check_dtype(t: ir.Tensor, a: np.ndarray) -> np.ndarray:
    if a.dtype != t.dtype:
        hint = ""
        if t.quant is not None and np.issubdtype(a.dtype, np.floating):
            hint = (f" The data looks real-valued: quantize it first, q = round(x / {t.quant.scale0:.6g})"
                    f" + {t.quant.zp0} (qsim run --float-input does this).")
        raise QsimError(f"input '{t.name}' must be {t.dtype}, got {a.dtype}.{hint}")
    return a


def check_inputs(g: ir.Graph, inputs) -> dict[int, np.ndarray]:
    """Validate user inputs against the graph's input tensors (count, shape, dtype)."""
    return _conformed(g, _input_items(g, inputs))


def _conformed(g: ir.Graph, items: dict) -> dict[int, np.ndarray]:
    return {t_idx: _check_dtype(g.tensors[t_idx], conform_shape(np.asarray(items[t_idx]), g.tensors[t_idx]))
            for t_idx in g.inputs}


def is_batch_of(a: np.ndarray, t: ir.Tensor) -> bool:
    """True when ``a`` is ``(N,) + shape[1:]`` with N != 1 for an input of model shape ``(1,) + shape[1:]``."""
    shape = tuple(t.shape)
    return (len(shape) >= 1 and shape[0] == 1 and a.ndim == len(shape) and a.shape[0] != 1
            and tuple(a.shape[1:]) == shape[1:])


def check_batch_inputs(g: ir.Graph, inputs) -> tuple[dict[int, np.ndarray], int | None]:
    """:func:`check_inputs`, also accepting batches: ({index: array}, N), N None for one sample.

    A batch gives every graph input as ``(N,) + shape[1:]`` where the model has
    ``(1,) + shape[1:]``, all with the same N >= 2 (or N = 0 refused).  Anything else goes
    through :func:`check_inputs` (one sample; its shape rules and messages).
    """
    items = _input_items(g, inputs)
    arrays = {t: np.asarray(items[t]) for t in g.inputs}
    batched = {t: is_batch_of(a, g.tensors[t]) for t, a in arrays.items()}
    if not any(batched.values()):
        return _conformed(g, arrays), None
    sizes = {t: a.shape[0] for t, a in arrays.items() if batched[t]}
    n = next(iter(sizes.values()))
    if not all(batched.values()) or len(set(sizes.values())) > 1:
        desc = ", ".join(f"'{g.tensors[t].name}' {list(a.shape)} (model {list(g.tensors[t].shape)})"
                         for t, a in arrays.items())
        raise QsimError(f"a batch must give every input with the same leading batch size N in place of the model's "
                        f"batch dimension 1; got {desc}.")
    if n == 0:
        raise QsimError("the batch is empty (0 samples).")
    return {t: _check_dtype(g.tensors[t], a) for t, a in arrays.items()}, n


def run(g: ir.Graph, inputs, profile: str | Profile = "tflm", keep_all: bool = True) -> dict[int, np.ndarray]:
    return prepare_graph(g, profile).run(inputs, keep_all=keep_all)
