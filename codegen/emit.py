"""The C generator: int8 .tflite -> NAME.h, NAME.c, NAME_weights.c, qkernels.c/.h, main.c, Makefile.

Pipeline: load the model, reject every op the C kernels or qsim cannot run
(all at once), prepare the graph with qsim's kernels under the rounding
profile ("tflm" = double rounding, "single" = TFLITE_SINGLE_ROUNDING), turn
each prepared op into an :class:`codegen.tables.OpEmit`, plan the arena
(:mod:`qsim.codegen.planner`), render the templates and write the directory.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import jinja2
import numpy as np

from qsim import ir
from qsim.errors import QsimError, UnsupportedModelError
from qsim.interpreter import check_quantized, prepare_graph, unsupported_ops, variable_start_values
from qsim.kernels.activations import softmax_abort_message, softmax_abort_row_length
from qsim.loader import load
from qsim.validate import op_label, raise_if_invalid
from qsim.report import op_macs

from . import cmsis_nn, int16, planner, tables, uint8

TEMPLATES = Path(str(files("qsim.codegen") / "templates"))  # package data: .j2/.c/.h, startup, linker
KERNEL_SOURCES = ("qkernels.c", "qkernels_int16.c")  # the C files a generated model links (Makefile SRCS)
STATIC_FILES = ("qkernels.c", "qkernels.h", "qkernels_int16.c", "qkernels_int16.h", "startup_cm.c")
ROUNDING_PROFILES = {"double": "tflm", "single": "single"}
ROUNDING_DOC = {"double": "TFLite's classic SRDHM + RoundingDivideByPOT, as TFLite Micro by default",
                "single": "TFLITE_SINGLE_ROUNDING: one rounding, half up"}
# --target -> (-mcpu for the Cortex-M build, QEMU machine, default make goal, code origin, RAM origin)
# (MPS2/AN386 and AN500: code at 0, RAM at 0x20000000; AN505 boots Secure: code 0x10000000, RAM 0x38000000)
TARGETS = {
    "host": ("cortex-m4", "mps2-an386", "host", "0x00000000", "0x20000000"),
    "cortex-m4": ("cortex-m4", "mps2-an386", "cortex-m", "0x00000000", "0x20000000"),
    "cortex-m7": ("cortex-m7", "mps2-an500", "cortex-m", "0x00000000", "0x20000000"),
    "cortex-m33": ("cortex-m33", "mps2-an505", "cortex-m", "0x10000000", "0x38000000"),
}
# Graph input/output element types the generated API passes (int16/int32: int16x8 models).
GRAPH_IO_DTYPES = (np.dtype(np.int8), np.dtype(np.int16), np.dtype(np.int32))
C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern float for goto
if inline int long register restrict return short signed sizeof static struct switch typedef union unsigned
void volatile while _Bool _Complex _Imaginary main""".split())


@dataclass
class LayerReport:
    position: int
    opcode: str
    output: str
    macs: int
    scratch_bytes: int
    kernel: str = ""  # specialized C path chosen at generation time (tables.KERNEL_PATHS), "" = the op's only one


@dataclass
class GenerateResult:
    out_dir: Path
    name: str
    files: list[Path]
    arena_bytes: int
    weights_bytes: int
    total_macs: int
    layers: list[LayerReport] = field(default_factory=list)
    check_samples: int = 0  # samples in input.bin / expected.bin (Model.codegen(inputs=...)), 0 = none
    kernels: str = "qsim"  # "qsim" | "cmsis-nn" (generate(kernels=...))
    state_bytes: int = 0  # NAME_state: variable tensors persisting across NAME_invoke calls

    def report_text(self) -> str:
        lines = [f"qsim codegen: {self.name} -> {self.out_dir}",
                 f"  arena:   {self.arena_bytes} bytes (static, planned greedy-by-size; I/O in caller buffers)",
                 f"  weights: {self.weights_bytes} bytes (const tables, flash)",
                 *([f"  state:   {self.state_bytes} bytes (variable tensors, persist across invocations; "
                    f"{self.name}_reset() restores them)"] if self.state_bytes else []),
                 f"  MACs:    {self.total_macs} per inference",
                 *([f"  kernels: CMSIS-NN where it has the op, qsim's elsewhere (= qsim run --profile cmsis-nn)"]
                   if self.kernels == "cmsis-nn" else []),
                 "  per layer:"]
        for l in self.layers:
            lines.append(f"    #{l.position:<3} {l.opcode:<20} {l.macs:>12} MACs  {l.kernel:<16} -> {l.output}")
        if self.check_samples:
            lines.append(f"  check:   {self.check_samples} sample(s) in input.bin, qsim's expected.bin and "
                         f"expected_trace.bin: make -C {self.out_dir} check")
        return "\n".join(lines)


# ------------------------------------------------------------------ names

def c_identifier(text: str, taken: set[str] | None = None) -> str:
    """A valid C identifier from any model name; unique within ``taken`` (updated)."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", text.encode("ascii", "replace").decode("ascii"))
    s = re.sub(r"_+", "_", s).strip("_") or "model"
    if s[0].isdigit():
        s = "m_" + s
    if s in C_KEYWORDS or s.startswith("qk_") or re.match(r"_[A-Z_]", s):
        s = "m_" + s
    if taken is not None:
        base, k = s, 2
        while s in taken:
            s = f"{base}_{k}"
            k += 1
        taken.add(s)
    return s


def c_string(text: str) -> str:
    """``text`` as the inside of a C string literal (printable ASCII; others as octal escapes)."""
    out = []
    for ch in text.encode("utf-8"):
        c = chr(ch)
        out.append("\\" + c if c in '"\\?' else c if 32 <= ch < 127 else f"\\{ch:03o}")
    return "".join(out)


def c_comment(text: str) -> str:
    """Text safe inside a C block comment (ASCII, no comment delimiters)."""
    s = text.encode("ascii", "replace").decode("ascii")
    return s.replace("*/", "* /").replace("/*", "/ *").replace("\n", " ")


def _c_int(v: int) -> str:
    v = int(v)
    if v == -(1 << 63):
        return "(-9223372036854775807LL - 1)"
    return "(-2147483647 - 1)" if v == -(1 << 31) else str(v)


def _array_text(values: np.ndarray, per_line: int = 16) -> str:
    """C initializers: integers, or (float arrays: the double tables) C99 hex floats, exact."""
    a = np.asarray(values).reshape(-1)
    vals = [float(v).hex() for v in a] if a.dtype.kind == "f" else [_c_int(v) for v in a]
    rows = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
    return ",\n".join("    " + r for r in rows) if rows else "    0"


def _field_text(v) -> str:
    """A C initializer: an int, a brace list, or (a dict, for a nested struct) designated members."""
    if isinstance(v, dict):
        return "{" + ", ".join(f".{k} = {_field_text(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "{" + ", ".join(_c_int(x) for x in v) + "}"
    if isinstance(v, float):  # a float32 value: C99 hex literal, exact
        return float(np.float32(v)).hex() + "f"
    return _c_int(v)


# ------------------------------------------------------------------ validation

def check_supported(g: ir.Graph, uint8_profile: str | None = None) -> None:
    """Every problem at once: qsim's unsupported ops, ops without a C kernel, non-int8 graph I/O
    (a float model gets qsim's own explanation first).  ``uint8_profile``: the model has uint8
    tensors, generated under that profile (:mod:`qsim.codegen.uint8`); None: uint8 ops refused."""
    check_quantized(g)
    u8 = uint8_profile is not None
    problems = list(unsupported_ops(g, int16=True, uint8=u8))  # int16x8: qsim's own rules; C kernels below
    flagged = {int(m.group(1)) for m in (re.match(r"op #(\d+)", p) for p in problems) if m}
    for op in g.operators:
        out = g.tensors[op.outputs[0]].name if op.outputs else "?"
        if op.index in flagged:
            continue
        if int16.is_int16_op(op, g):
            if op.opcode not in int16.C_SUPPORTED_INT16:
                t16 = tables.int16_without_c_kernel(op, g)
                problems.append(f"op #{op.index} {op.opcode} (output '{out}'): int16 tensor '{t16.name}' has no C "
                                f"kernel (no int16x8 C kernel in qsim codegen for {op.opcode}; "
                                f"int16x8 supported: {', '.join(int16.C_SUPPORTED_INT16)}; other int16 forms: "
                                f"{tables.C_INT16_FORMS})")
        elif op.opcode not in tables.C_SUPPORTED:
            problems.append(f"op #{op.index} {op.opcode} (output '{out}'): no C kernel in qsim codegen "
                            f"(supported: {', '.join(tables.C_SUPPORTED)})")
    for op in g.operators:
        for t in op.inputs + op.outputs:
            if t >= 0 and not g.tensors[t].is_const and g.tensors[t].size == 0:
                problems.append(f"op #{op.index} {op.opcode}: tensor '{g.tensors[t].name}' has zero elements "
                                f"(shape {list(g.tensors[t].shape)}); C has no zero-length arrays")
                break
    abort_row = softmax_abort_row_length()
    for op in g.operators:  # the C kernel cannot refuse a row at run time: refuse the shape here
        if op.opcode == "SOFTMAX" and op.inputs and op.inputs[0] >= 0 and op.index not in flagged \
                and not int16.is_int16_op(op, g):  # int16 rows: prepare_softmax16 bounds them
            shape = g.tensors[op.inputs[0]].shape
            if len(shape) and int(shape[-1]) >= abort_row:
                problems.append(f"op #{op.index} SOFTMAX (output '{g.tensors[op.outputs[0]].name}'): "
                                + softmax_abort_message(int(shape[-1])))
    dequantized = set()  # float32 tensors the C computes: DEQUANTIZE outputs (graph outputs only)
    for op in g.operators:
        if u8 and op.opcode in ("DEQUANTIZE", "QUANTIZE") and op.index not in flagged and any(
                np.dtype(g.tensors[t].dtype) == np.float32 for t in op.inputs + op.outputs if t >= 0):
            problems.append(f"op #{op.index} {op.opcode} (output '{g.tensors[op.outputs[0]].name}'): float32 "
                            "graph edges are generated for int8/int16 models only, not for uint8 models")
        elif op.opcode == "DEQUANTIZE" and op.index not in flagged:
            out = g.tensors[op.outputs[0]]
            if np.dtype(out.dtype) != np.float32:
                problems.append(f"op #{op.index} DEQUANTIZE (output '{out.name}'): the output is "
                                f"{np.dtype(out.dtype).name}; DEQUANTIZE produces float32")
            else:
                dequantized.add(op.outputs[0])
    for op in g.operators:
        for t in (t for t in op.inputs if t in dequantized):
            problems.append(f"op #{op.index} {op.opcode}: reads the float32 output '{g.tensors[t].name}' of a "
                            "DEQUANTIZE; the generated C computes float32 only as a graph output")
    quantized = set()  # float32 graph inputs read by QUANTIZE ops only (qk_quantize_float)
    for t in g.inputs:
        if np.dtype(g.tensors[t].dtype) == np.float32 and t not in g.outputs:
            readers = [op for op in g.operators if t in op.inputs]
            if readers and all(op.opcode == "QUANTIZE" for op in readers) and not u8:
                quantized.add(t)
            else:
                problems.extend(f"op #{op.index} {op.opcode}: reads the float32 graph input '{g.tensors[t].name}'; "
                                "the generated C reads a float32 input only through QUANTIZE"
                                for op in readers if op.opcode != "QUANTIZE" and op.index not in flagged)
    io_dtypes = GRAPH_IO_DTYPES + ((np.dtype(np.uint8),) if u8 else ())
    for role, idxs in (("input", g.inputs), ("output", g.outputs)):
        for t in idxs:
            tensor = g.tensors[t]
            if (role == "output" and t in dequantized) or (role == "input" and t in quantized):
                continue
            if np.dtype(tensor.dtype) not in io_dtypes:
                problems.append(f"graph {role} '{tensor.name}' is {np.dtype(tensor.dtype).name}; the generated "
                                f"API takes {', '.join(d.name for d in io_dtypes)} tensors only (and float32 "
                                "outputs of DEQUANTIZE, float32 inputs read by QUANTIZE)")
    if u8 and not problems:  # qsim's uint8 checks (prepare names the tensor), then the C's own limits
        problems += uint8.problems(g, prepare_graph(g, uint8_profile), uint8_profile)
    def order(line: str):
        m = re.match(r"op #(\d+)", line)
        return (0, int(m.group(1))) if m else (1, 0)
    problems.sort(key=order)
    if problems:
        raise UnsupportedModelError(
            f"{g.source or 'the model'}: cannot generate C, {len(problems)} problem(s):\n  - "
            + "\n  - ".join(problems))


def prepare_output_dir(out_dir: Path, force: bool) -> None:
    """Create ``out_dir``; refuse a file, a non-empty directory (unless ``force``) or no write access."""
    if out_dir.exists() and not out_dir.is_dir():
        raise QsimError(f"output path {out_dir} exists and is not a directory; choose another -o DIR.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise QsimError(f"output directory {out_dir} exists and is not empty; pass --force to overwrite "
                        "the generated files in it, or choose another -o DIR.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise QsimError(f"cannot create output directory {out_dir}: {e.strerror}.") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise QsimError(f"output directory {out_dir} is not writable.")


# per-name files `qsim codegen` (and the Makefile) write; NAME replaced by the --name of that run
NAMED_FILES = ("NAME.h", "NAME.c", "NAME_weights.c", "NAME_report.json", "NAME_run", "NAME_trace", "NAME.elf",
               "NAME_trace.elf")
# expectations qsim wrote for an earlier model (rewritten when --inputs is given again)
EXPECTATION_FILES = ("expected.bin", "expected_trace.bin")


def remove_stale(out_dir: Path, name: str) -> list[Path]:
    """Remove what an earlier generation into ``out_dir`` left that this one does not overwrite:
    the per-name files of another ``--name`` (found through its NAME_report.json) and qsim's
    expectation files.  Other files (a user's, input.bin, outputs) stay.  Returns what was removed."""
    removed = []
    old_names = set()
    for rep in out_dir.glob("*_report.json"):
        try:
            old = json.loads(rep.read_text()).get("name")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(old, str) and old != name and rep.name == f"{old}_report.json":
            old_names.add(old)
    candidates = [f.replace("NAME", old) for old in sorted(old_names) for f in NAMED_FILES] + list(EXPECTATION_FILES)
    for fname in candidates:
        p = out_dir / fname
        if p.is_file():
            p.unlink()
            removed.append(p)
    return removed


# ------------------------------------------------------------------ generation

def _io_info(g: ir.Graph, idxs) -> list[dict]:
    out = []
    for t in idxs:
        tensor = g.tensors[t]
        q = tensor.quant
        out.append(dict(comment=c_comment(tensor.name), shape=list(tensor.shape), size=tensor.size,
                        nbytes=tensor.nbytes, dtype=np.dtype(tensor.dtype).name, ctype=tables.c_type(tensor.dtype),
                        scale=f"{q.scale0:.9g}f" if q is not None else "1.0f",
                        zero_point=q.zp0 if q is not None else 0))
    return out


@dataclass
class StateSlot:
    """One variable tensor in NAME_state: byte offset (16-aligned), bytes, reset byte value."""

    tensor: int
    offset: int
    nbytes: int
    fill: int  # the byte memset writes: the reset value (int8 zero point, else 0)
    comment: str


def plan_state(g: ir.Graph) -> tuple[list[StateSlot], int]:
    """Lay out every variable tensor (qsim.interpreter.variable_start_values) in the persistent
    NAME_state buffer; returns (slots, bytes).  Reset values are the quantized zero."""
    slots, off = [], 0
    for t, value in sorted(variable_start_values(g).items()):
        tensor = g.tensors[t]
        v = int(np.asarray(value).reshape(-1)[0]) if value.size else 0
        if np.dtype(tensor.dtype).itemsize != 1 and v != 0:
            raise QsimError(f"variable tensor '{tensor.name}' resets to {v}; only 0 (or an int8 zero point) "
                            "has a C reset.")
        slots.append(StateSlot(t, off, tensor.nbytes, v & 0xFF,
                               c_comment(f"'{tensor.name}' {np.dtype(tensor.dtype).name} {list(tensor.shape)}, "
                                         f"reset to {v}")))
        off += (tensor.nbytes + planner.ALIGN - 1) // planner.ALIGN * planner.ALIGN
    return slots, off


def _pointer(g: ir.Graph, plan: planner.MemoryPlan, t: int, name: str, in_names, out_names,
             const_arrays: dict[int, str], state: dict[int, int] | None = None) -> str:
    tensor = g.tensors[t]
    if tensor.is_const:
        return const_arrays.get(t, "0")  # weights are passed by name, not as operands
    if state is not None and t in state:
        return f"({name}_state + {state[t]})"
    b = plan.placement(t)
    if b.kind == "input":
        return in_names[b.io_index]
    if b.kind == "output":
        return out_names[b.io_index]
    return tables.c_pointer(f"{name}_arena + {b.offset}" if np.dtype(tensor.dtype) != np.int8
                            else f"({name}_arena + {b.offset})", tensor.dtype)


def profile_name(rounding: str, kernels: str = "qsim") -> str:
    """The `qsim run --profile` the generated C reproduces for this --rounding and --kernels."""
    if rounding not in ROUNDING_PROFILES:
        raise QsimError(f"unknown rounding '{rounding}'; choose double (TFLM default) or single.")
    if kernels not in cmsis_nn.KERNELS:
        raise QsimError(f"unknown kernels '{kernels}'; choose one of: {', '.join(cmsis_nn.KERNELS)}.")
    if kernels == "cmsis-nn" and rounding != "double":
        raise QsimError("--kernels cmsis-nn supports --rounding double only (TFLite Micro's and CMSIS-NN's "
                        "default): CMSIS-NN's CMSIS_NN_USE_SINGLE_ROUNDING build truncates an out-of-range "
                        "requantized value to int32 where qsim's single-rounding kernels saturate, so no qsim "
                        "profile would describe the mixed build.")
    return cmsis_nn.PROFILE if kernels == "cmsis-nn" else ROUNDING_PROFILES[rounding]


def model_profile(g: ir.Graph, rounding: str, kernels: str = "qsim") -> str:
    """The `qsim run --profile` the C generated for ``g`` reproduces: :func:`profile_name`'s, or
    ``litert`` for a model with uint8 ops TFLite Micro does not run (:mod:`qsim.codegen.uint8`)."""
    return uint8.profile_for(g, profile_name(rounding, kernels))


def generate(model, out_dir, name: str | None = None, target: str = "host", rounding: str = "double",
             force: bool = False, kernels: str = "qsim", cmsis_nn_dir=None, cmsis_core_dir=None) -> GenerateResult:
    """Generate the C sources for ``model`` (path or ir.Graph) into ``out_dir``.

    ``kernels``: "qsim" (the portable qkernels) or "cmsis-nn" (calls into the user's CMSIS-NN at
    ``cmsis_nn_dir``, default $CMSIS_NN_DIR, where it has the op; :mod:`qsim.codegen.cmsis_nn`)."""
    profile = profile_name(rounding, kernels)
    if target not in TARGETS:
        raise QsimError(f"unknown target '{target}'; choose one of: {', '.join(TARGETS)}.")
    if rounding not in ROUNDING_PROFILES:
        raise QsimError(f"unknown rounding '{rounding}'; choose double (TFLM default) or single.")
    g = model if isinstance(model, ir.Graph) else load(model)  # load() validates
    if isinstance(model, ir.Graph):
        raise_if_invalid(g)
    source = g.source or "model"
    name = c_identifier(name or Path(source).stem or "model")
    out_dir = Path(out_dir)
    twin, source_graph = None, g  # source_graph: the model's own ops (trace and check labels)
    if uint8.has_uint8(g):  # run as the int8 twin graph (codegen/uint8.py)
        uint8.check_profile(g, rounding, kernels)
        profile = model_profile(g, rounding, kernels)
        check_supported(g, profile)
        twin = uint8.twin_graph(g)
        g = twin.graph
    else:
        check_supported(g)
    dirs = cmsis_nn.find_dirs(cmsis_nn_dir, cmsis_core_dir) if kernels == "cmsis-nn" else None
    prepared = prepare_graph(g, profile)
    emits, cmsis_ops = [], {}  # op position -> cmsis_nn.CmsisOp
    for pos, p in enumerate(prepared.ops):
        boundary = twin is not None and twin.source[pos] is None  # a uint8 graph input/output table
        c = (cmsis_nn.emit_op(pos, p, g, f"{name}_op{pos}") if dirs and not boundary
             and not int16.has_int16_tensor(p.op, g) else None)
        if c is not None:
            cmsis_ops[pos], e = c, c.emit
        else:  # qsim's own kernel
            _check_op_rounding(p, rounding, g)
            emitters = int16.EMITTERS if int16.is_int16_op(p.op, g) else tables.EMITTERS
            e = (uint8.emit_boundary if boundary else emitters[p.op.opcode])(pos, p, g, f"{name}_op{pos}")
        e.prefix = f"{name}_op{pos}"
        e.macs = op_macs(g, p.op)
        emits.append(e)
    tables.unify_dw_3x3(emits)
    if target == "host":
        tables.lstm_host_form(emits)
    if twin is not None:
        uint8.finish_emit(twin, emits)
    if dirs:
        cmsis_nn.finish(list(cmsis_ops.values()), dirs)
    plan = planner.plan_memory(g, {e.position: e.scratch_bytes for e in emits},
                               {pos: cmsis_nn.overlap_delta(p, g, pos in cmsis_ops) for pos, p in enumerate(prepared.ops)})
    prepare_output_dir(out_dir, force)

    arrays = [a for e in emits for a in e.arrays]
    const_arrays: dict[int, str] = {}
    for e, p in zip(emits, prepared.ops):
        if p.op.opcode in tables.CONST_DATA_INPUTS:
            positions = tables.CONST_DATA_INPUTS[p.op.opcode]
            for t in (i for k, i in enumerate(p.op.inputs) if i >= 0 and (positions is None or k in positions)):
                tensor = g.tensors[t]
                if tensor.is_const and t not in const_arrays:
                    if np.dtype(tensor.dtype) != np.dtype(g.tensors[p.op.outputs[0]].dtype):
                        raise QsimError(f"constant operand '{tensor.name}' of {p.op.opcode} must have the "
                                        "output's element type.")
                    const_arrays[t] = f"{name}_const{t}"
                    arrays.append(tables.CArray(const_arrays[t], tables.c_type(tensor.dtype),
                                                np.asarray(tensor.data, np.int64).reshape(-1)))
    single_in = len(g.inputs) == 1
    single_out = len(g.outputs) == 1
    in_names = ["input"] if single_in else [f"input{k}" for k in range(len(g.inputs))]
    out_names = ["output"] if single_out else [f"output{k}" for k in range(len(g.outputs))]
    in_types = [tables.c_type(g.tensors[t].dtype) for t in g.inputs]
    out_types = [tables.c_type(g.tensors[t].dtype) for t in g.outputs]
    signature = ", ".join([f"const {c} *{n}" for c, n in zip(in_types, in_names)]
                          + [f"{c} *{n}" for c, n in zip(out_types, out_names)])
    state_slots, state_bytes = plan_state(g)
    state_at = {s.tensor: s.offset for s in state_slots}

    ops_ctx = []
    for e, p in zip(emits, prepared.ops):
        ptr = lambda t: _pointer(g, plan, t, name, in_names, out_names, const_arrays, state_at)  # noqa: E731
        subs = {f"in{k}": ptr(t) for k, t in enumerate(t for t in p.op.inputs if t >= 0)}
        subs.update({f"at{k}": ptr(t) for k, t in enumerate(p.op.inputs) if t >= 0})  # by operand position
        subs["out0"] = ptr(p.op.outputs[0])
        subs["scratch"] = (f"({name}_arena + {plan.buffers[plan.scratch_buffer[e.position]].offset})"
                           if e.position in plan.scratch_buffer else "0")
        if e.position in plan.aliased_ops:
            call = "/* planned in place: same bytes, new shape */"
        else:
            call = e.call.format(**subs)
        trace = ("" if twin is not None and twin.source[e.position] is None  # uint8 boundary: not a model op
                 else "qk_trace_uint8" if twin is not None and e.position in twin.u8_outputs else "qk_trace")
        ops_ctx.append(dict(position=e.position, comment=c_comment(e.comment), struct_type=e.struct_type,
                            prefix=e.prefix, fields=[(k, _field_text(v)) for k, v in e.struct_fields.items()],
                            macs=e.macs, c_call=call, out_ptr=subs["out0"], trace=trace,
                            out_bytes=g.tensors[p.op.outputs[0]].nbytes))
    final_copies = []
    for k, t in enumerate(g.outputs):
        b = plan.placement(t)
        if not (b.kind == "output" and b.io_index == k):
            src = _pointer(g, plan, t, name, in_names, out_names, const_arrays)
            final_copies.append(tables.byte_copy(src, out_names[k], g.tensors[t].nbytes))

    weights_bytes = sum(a.nbytes for a in arrays)
    total_macs = sum(e.macs for e in emits)
    in_info, out_info = _io_info(g, g.inputs), _io_info(g, g.outputs)
    in_total = sum(i["nbytes"] for i in in_info)  # bytes of one sample (main.c's byte buffers)
    out_total = sum(o["nbytes"] for o in out_info)
    call_args = ", ".join(
        [tables.c_pointer(f"in_buf + {sum(i['nbytes'] for i in in_info[:k])}", in_info[k]["dtype"], const=True)
         for k in range(len(in_info))]
        + [tables.c_pointer(f"out_buf + {sum(o['nbytes'] for o in out_info[:k])}", out_info[k]["dtype"])
           for k in range(len(out_info))])
    mcpu, machine, goal, flash_origin, ram_origin = TARGETS[target]
    ctx = dict(name=name, NAME=name.upper(), source=c_comment(Path(source).name), rounding=rounding,
               rounding_doc=ROUNDING_DOC[rounding], inputs=in_info, outputs=out_info,
               arena_size=plan.arena_size, arena_alloc=max(plan.arena_size, 16), weights_size=weights_bytes,
               total_macs=total_macs, signature=signature, param_names=in_names + out_names,
               arrays=[dict(name=a.name, ctype=a.ctype, count=int(a.values.size), text=_array_text(a.values))
                       for a in arrays],
               ops=ops_ctx, final_copies=final_copies, kernels=kernels,
               cmsis=cmsis_nn.make_context(dirs) if dirs else None, in_total=in_total, out_total=out_total,
               call_args=call_args, target=target, state=[vars(x) for x in state_slots],
               state_size=state_bytes, state_alloc=max(state_bytes, 16), mcpu=mcpu, qemu_machine=machine, default_goal=goal,
               flash_origin=flash_origin, ram_origin=ram_origin,
               check_outputs=[dict(label=c_string(f"output {k} '{g.tensors[t].name}'"), nbytes=g.tensors[t].nbytes)
                              for k, t in enumerate(g.outputs)],
               trace_uint8_bytes=max([o["out_bytes"] for o in ops_ctx if o["trace"] == "qk_trace_uint8"], default=0),
               check_ops=[dict(label=c_string(f"op #{op.index} {op.opcode} -> '{source_graph.tensors[op.outputs[0]].name}'"),
                               nbytes=source_graph.tensors[op.outputs[0]].nbytes) for op in source_graph.operators])
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    rendered = {
        f"{name}.h": env.get_template("model.h.j2").render(**ctx),
        f"{name}.c": env.get_template("model_cmsis.c.j2" if dirs else "model.c.j2").render(**ctx),
        f"{name}_weights.c": env.get_template("weights.c.j2").render(**ctx),
        "main.c": env.get_template("main.c.j2").render(**ctx),
        "Makefile": env.get_template("Makefile.j2").render(**ctx),
        "qk_config.h": _config_header(rounding),
        "cortex_m.ld": env.get_template("cortex_m.ld.j2").render(**ctx),
        "qk_check.c": env.get_template("qk_check.c.j2").render(**ctx),
    }
    remove_stale(out_dir, name)
    files = []
    for fname, text in rendered.items():
        (out_dir / fname).write_text(text)
        files.append(out_dir / fname)
    for fname in STATIC_FILES:
        shutil.copyfile(TEMPLATES / fname, out_dir / fname)
        files.append(out_dir / fname)
    layers = [LayerReport(e.position, e.opcode, g.tensors[p.op.outputs[0]].name, e.macs, e.scratch_bytes,
                          e.kernel) for e, p in zip(emits, prepared.ops)]
    result = GenerateResult(out_dir, name, files, plan.arena_size, weights_bytes, total_macs, layers,
                            kernels=kernels, state_bytes=state_bytes)
    report = dict(name=name, source=source, rounding=rounding, kernels=kernels, profile=profile, target=target,
                  arena_bytes=plan.arena_size, state_bytes=state_bytes,
                  weights_bytes=weights_bytes, total_macs=total_macs,
                  layers=[vars(l) for l in layers])
    (out_dir / f"{name}_report.json").write_text(json.dumps(report, indent=2) + "\n")
    files.append(out_dir / f"{name}_report.json")
    return result


def _check_op_rounding(prepared, rounding: str, g: ir.Graph) -> None:
    """The C kernels use one rounding for the whole build: every op's prepared rounding must match."""
    if prepared.op.opcode in tables.UNARY_LUT_OPS and not int16.is_int16_op(prepared.op, g):
        return  # tabulated from the Python kernel itself: no C rounding involved
    if getattr(getattr(prepared.params, "requant", None), "rounding", None) == "float":
        return  # LiteRT's real-scale FULLY_CONNECTED (uint8 models): qk_fully_connected_real
    params = prepared.params
    rq = getattr(params, "requant", None) or getattr(getattr(params, "conv", None), "requant", None) or params
    op_rounding = getattr(rq, "rounding", None)
    if op_rounding is not None and op_rounding != rounding:
        raise QsimError(f"op #{prepared.op.index} {prepared.op.opcode} was prepared with '{op_rounding}' "
                        f"requantization but the C build uses '{rounding}' rounding throughout.")


def _config_header(rounding: str) -> str:
    define = "#define QK_SINGLE_ROUNDING 1\n" if rounding == "single" else ""
    return ("/* qk_config.h: build configuration of the qkernels (generated by `qsim codegen`).\n"
            f" * Rounding: {rounding} ({ROUNDING_DOC[rounding]}). */\n"
            "#ifndef QK_CONFIG_H\n#define QK_CONFIG_H\n" + define + "#endif /* QK_CONFIG_H */\n")
