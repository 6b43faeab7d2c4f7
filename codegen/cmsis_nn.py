"""The optional CMSIS-NN backend of `qsim codegen --kernels cmsis-nn`.

Ops CMSIS-NN implements for int8 (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
MAX_POOL_2D, AVERAGE_POOL_2D, SOFTMAX, and ADD / MUL on same-shape operands)
become calls of its wrapper functions; every other op keeps qsim's own kernel
(:mod:`qsim.codegen.tables`).  The tables are the same ones the qsim kernels
get: weights in TFLite's layouts, bias and the per-channel Q31 multiplier /
shift (> 0 = left) from qsim's prepared params (``tables._requant_arrays``),
the shift widened to the ``int32_t`` CMSIS-NN reads.

Scratch buffers.  CMSIS-NN sizes each call's scratch with ``*_get_buffer_size``
functions whose answer depends on the *target* (``ARM_MATH_DSP``: Cortex-M4/M7/
M33; none: host, Cortex-M0+/M3; ``ARM_MATH_MVEI``: Helium).  At generation time
a small host program is compiled against the user's CMSIS-NN (``Include/`` and
the ``*_get_buffer_sizes_s8.c`` sources) and prints, per op, what the portable
function and its ``_dsp`` twin return; the arena reserves the larger (at least
4 bytes, so the context pointer is never NULL).  Because a build for another
feature set (Helium) may need more, each generated call first asks the target's
own ``*_get_buffer_size`` and, if the reservation is short, ``NAME_invoke``
returns ``-(op position + 1)`` instead of overrunning the arena; a CMSIS-NN
argument error returns ``op position + 1``.  Calling the real functions (rather
than re-deriving their formulas here) keeps the sizes right for whichever
CMSIS-NN version the user points at.

Arithmetic: CMSIS-NN's int8 kernels, in its default (double rounding) build, compute TFLite
Micro's reference integers (profile ``cmsis-nn``).  ``--rounding single`` is refused: CMSIS-NN's
CMSIS_NN_USE_SINGLE_ROUNDING truncates an out-of-range 64-bit requantized value to int32 (as a
release TFLITE_SINGLE_ROUNDING build does) where qsim's ``single`` profile and qkernels saturate.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qsim import ir
from qsim.errors import QsimError

from . import tables

KERNELS = ("qsim", "cmsis-nn")
PROFILE = "cmsis-nn"  # the `qsim run --profile` the generated C reproduces
SIZE_MARK = "@CMSIS_SCRATCH@"  # replaced by the reserved scratch bytes once the sizes are known
MIN_SCRATCH = 4
SIZER_SOURCES = ("ConvolutionFunctions/arm_convolve_get_buffer_sizes_s8.c",
                 "ConvolutionFunctions/arm_depthwise_conv_get_buffer_sizes_s8.c",
                 "FullyConnectedFunctions/arm_fully_connected_get_buffer_sizes_s8.c",
                 "PoolingFunctions/arm_avgpool_get_buffer_sizes_s8.c")


@dataclass
class SizeQuery:
    """How one generated call sizes its scratch: the C declarations of its argument structs (the
    same text as in NAME.c) and the ``arm_*_get_buffer_size(...)`` expression over them."""

    declarations: list[str]
    call: str  # e.g. "arm_convolve_wrapper_s8_get_buffer_size(&cp, &id, &fd, &od)"

    def dsp_call(self) -> str:
        """The same query of the ``_dsp`` variant (what a Cortex-M4/M7/M33 build answers)."""
        fn, args = self.call.split("(", 1)
        return f"{fn}_dsp({args}"


@dataclass
class CmsisOp:
    """A CMSIS-NN call for one op: its :class:`tables.OpEmit` (``call`` still holding SIZE_MARK
    where the reserved scratch bytes go) and, when CMSIS-NN sizes a scratch for it, the query."""

    emit: tables.OpEmit
    query: SizeQuery | None = None


@dataclass
class CmsisDirs:
    """Where the user's CMSIS-NN checkout (``Include/``, ``Source/``) and the CMSIS-Core
    compiler headers (``cmsis_compiler.h``; None: on the compiler's include path) are."""

    nn: Path
    core: Path | None


def find_dirs(cmsis_nn_dir=None, cmsis_core_dir=None) -> CmsisDirs:
    """Resolve the CMSIS-NN directory (argument, else $CMSIS_NN_DIR) and the CMSIS-Core include
    directory (argument, else $CMSIS_CORE_DIR, else a ``cmsis-core`` folder beside CMSIS-NN)."""
    raw = cmsis_nn_dir or os.environ.get("CMSIS_NN_DIR")
    if not raw:
        raise QsimError("--kernels cmsis-nn needs a CMSIS-NN checkout: pass --cmsis-nn-dir DIR (or set "
                        "CMSIS_NN_DIR), the directory holding CMSIS-NN's Include/ and Source/ "
                        "(git clone https://github.com/ARM-software/CMSIS-NN).")
    nn = Path(raw).expanduser().resolve()
    if not (nn / "Include" / "arm_nnfunctions.h").is_file() or not (nn / "Source").is_dir():
        raise QsimError(f"{nn} is not a CMSIS-NN checkout: Include/arm_nnfunctions.h or Source/ is missing; "
                        "pass the directory that holds both (--cmsis-nn-dir / CMSIS_NN_DIR).")
    raw_core = cmsis_core_dir or os.environ.get("CMSIS_CORE_DIR")
    core = Path(raw_core).expanduser().resolve() if raw_core else nn.parent / "cmsis-core"
    if not (core / "cmsis_compiler.h").is_file():
        if raw_core:
            raise QsimError(f"{core} does not hold CMSIS-Core's cmsis_compiler.h (--cmsis-core-dir / CMSIS_CORE_DIR).")
        core = None
    return CmsisDirs(nn, core)


# ------------------------------------------------------------------ C text

def _tile(h: int, w: int) -> dict:
    return {"w": int(w), "h": int(h)}


def _struct(ctype: str, name: str, fields: dict) -> str:
    from .emit import _field_text  # one initializer writer for both backends
    return f"static const {ctype} {name} = {_field_text(fields)};"


def _dims(name: str, n, h, w, c) -> str:
    return _struct("cmsis_nn_dims", name, dict(n=int(n), h=int(h), w=int(w), c=int(c)))


def _block(lines: list[str], call: str, pos: int, query: SizeQuery | None = None) -> str:
    """A C block: static const argument structs, the scratch check of ``query``, the checked call.
    ``@in0@``-style markers become emit.py's ``{in0}`` placeholders; other braces are escaped."""
    body = list(lines)
    if query:
        body.append(f"if ({query.call} > {SIZE_MARK}) return -{pos + 1}; /* scratch too small for this target */")
    body.append(f"if ({call} != ARM_CMSIS_NN_SUCCESS) return {pos + 1};")
    text = "{\n        " + "\n        ".join(body) + "\n    }"
    text = text.replace("{", "{{").replace("}", "}}")
    for key in ("in0", "in1", "out0", "scratch"):
        text = text.replace(f"@{key}@", "{" + key + "}")
    return text


def _ctx_line() -> str:
    return f"cmsis_nn_context ctx; ctx.buf = @scratch@; ctx.size = {SIZE_MARK};"


# ------------------------------------------------------------------ ops

def _int8(g: ir.Graph, *idxs) -> bool:
    return all(np.dtype(g.tensors[t].dtype) == np.int8 for t in idxs)


def _requant(prefix: str, rq, channels: int, opcode: str) -> list[tables.CArray]:
    bias, mult, shift = tables._requant_arrays(prefix, rq, channels, opcode)
    return [bias, mult, tables.CArray(shift.name, "int32_t", shift.values)]


def emit_conv(pos, prepared, g, prefix) -> CmsisOp | None:
    op, p, rq, x, w, out = tables._gemm_operands(prepared, g)
    if not _int8(g, op.inputs[0], op.outputs[0]) or (w.quant is not None and np.any(np.asarray(w.quant.zero_point) != 0)):
        return None
    depthwise = op.opcode == "DEPTHWISE_CONV_2D"
    n, h, wd, c = x.shape
    arrays = [tables._weights(prefix, w)] + _requant(prefix, rq, p.out_channels, op.opcode)
    conv = dict(input_offset=-p.input_zero_point, output_offset=rq.output_zero_point)
    if depthwise:
        conv["ch_mult"] = p.depth_multiplier
    conv.update(stride=_tile(p.stride_h, p.stride_w), padding=_tile(p.pad_h, p.pad_w),
                dilation=_tile(p.dilation_h, p.dilation_w), activation={"min": rq.act_min, "max": rq.act_max})
    ptype, fn = (("cmsis_nn_dw_conv_params", "arm_depthwise_conv_wrapper_s8") if depthwise
                 else ("cmsis_nn_conv_params", "arm_convolve_wrapper_s8"))
    fdims = (1, p.kernel_h, p.kernel_w, p.out_channels) if depthwise else (p.out_channels, p.kernel_h, p.kernel_w, c)
    lines = [_struct(ptype, "cp", conv), _dims("id", n, h, wd, c), _dims("fd", *fdims),
             _dims("bd", 1, 1, 1, p.out_channels), _dims("od", n, p.out_h, p.out_w, p.out_channels),
             f"const cmsis_nn_per_channel_quant_params qp = {{(int32_t *){prefix}_mult, (int32_t *){prefix}_shift}};",
             _ctx_line()]
    call = f"{fn}(&ctx, &cp, &qp, &id, @in0@, &fd, {prefix}_w, &bd, {prefix}_bias, &od, @out0@)"
    q = SizeQuery(lines[:5], f"{fn}_get_buffer_size(&cp, &id, &fd, &od)")
    return CmsisOp(tables.OpEmit(pos, op.opcode, f"{op.opcode} {p.kernel_h}x{p.kernel_w} (CMSIS-NN {fn}) -> "
                                 f"'{out.name}'", _block(lines, call, pos, q), arrays=arrays), q)


def emit_fully_connected(pos, prepared, g, prefix) -> CmsisOp | None:
    op, p, rq, x, w, out = tables._gemm_operands(prepared, g)
    if not _int8(g, op.inputs[0], op.outputs[0]):
        return None
    per_channel = bool(w.quant is not None and w.quant.per_channel)
    w_zp = 0 if w.quant is None or per_channel else w.quant.zp0
    if w_zp != 0:
        return None  # CMSIS-NN requires filter_offset 0
    batches = x.size // p.in_units
    arrays = [tables._weights(prefix, w)] + _requant(prefix, rq, p.out_units, op.opcode)
    fc = dict(input_offset=-p.input_zero_point, filter_offset=0, output_offset=rq.output_zero_point,
              activation={"min": rq.act_min, "max": rq.act_max})
    lines = [_struct("cmsis_nn_fc_params", "fp", fc), _dims("id", batches, 1, 1, p.in_units),
             _dims("fd", p.in_units, 1, 1, p.out_units), _dims("bd", 1, 1, 1, p.out_units),
             _dims("od", batches, 1, 1, p.out_units),
             f"const cmsis_nn_quant_params qp = {{(int32_t *){prefix}_mult, (int32_t *){prefix}_shift, {int(per_channel)}}};",
             _ctx_line()]
    call = f"arm_fully_connected_wrapper_s8(&ctx, &fp, &qp, &id, @in0@, &fd, {prefix}_w, &bd, {prefix}_bias, &od, @out0@)"
    q = SizeQuery(lines[2:3], "arm_fully_connected_s8_get_buffer_size(&fd)")
    return CmsisOp(tables.OpEmit(pos, op.opcode, f"FULLY_CONNECTED {p.in_units}->{p.out_units} (CMSIS-NN) -> "
                                 f"'{out.name}'", _block(lines, call, pos, q), arrays=arrays), q)


def emit_pool(pos, prepared, g, prefix) -> CmsisOp | None:
    op, p = prepared.op, prepared.params
    x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if not _int8(g, op.inputs[0], op.outputs[0]) or len(x.shape) != 4:
        return None
    n, h, wd, c = x.shape
    avg = op.opcode == "AVERAGE_POOL_2D"
    fn = "arm_avgpool_s8" if avg else "arm_max_pool_s8"
    pool = dict(stride=_tile(p.stride_h, p.stride_w), padding=_tile(p.pad_h, p.pad_w),
                activation={"min": p.act_min, "max": p.act_max})
    lines = [_struct("cmsis_nn_pool_params", "pp", pool), _dims("id", n, h, wd, c),
             _dims("fd", 1, p.filter_h, p.filter_w, 1), _dims("od", n, p.out_h, p.out_w, c), _ctx_line()]
    call = f"{fn}(&ctx, &pp, &id, @in0@, &fd, &od, @out0@)"
    q = SizeQuery([], f"arm_avgpool_s8_get_buffer_size({int(p.out_w)}, {int(c)})") if avg else None
    return CmsisOp(tables.OpEmit(pos, op.opcode, f"{op.opcode} {p.filter_h}x{p.filter_w} (CMSIS-NN {fn}) -> "
                                 f"'{out.name}'", _block(lines, call, pos, q)), q)


def emit_softmax(pos, prepared, g, prefix) -> CmsisOp | None:
    op, p = prepared.op, prepared.params
    x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if not _int8(g, op.inputs[0], op.outputs[0]):
        return None
    depth = int(x.shape[-1]) if x.shape else 1
    call = (f"arm_softmax_s8(@in0@, {x.size // max(depth, 1)}, {depth}, {int(p.input_multiplier)}, "
            f"{int(p.input_left_shift)}, {int(p.diff_min)}, @out0@);")
    text = call.replace("@in0@", "{in0}").replace("@out0@", "{out0}")  # returns void: nothing to check
    return CmsisOp(tables.OpEmit(pos, op.opcode, f"SOFTMAX (CMSIS-NN arm_softmax_s8) -> '{out.name}'", text))


def emit_add_mul(pos, prepared, g, prefix) -> CmsisOp | None:
    op, p = prepared.op, prepared.params
    ins = list(op.inputs[:2])
    out = g.tensors[op.outputs[0]]
    if (len(ins) != 2 or min(ins) < 0 or not _int8(g, *ins, op.outputs[0])
            or any(tuple(g.tensors[t].shape) != tuple(out.shape) for t in ins)):
        return None  # broadcasting: qsim's kernel

    def f(*names):
        return ", ".join(str(v) for v in tables._param_ints(p, op.opcode, *names).values())
    act = f(*tables.ACT_RANGE)
    shifts = ("input1_shift", "input2_shift", "output_shift") if op.opcode == "ADD" else ("output_shift",)
    tables._mbqm_shifts(list(tables._param_ints(p, op.opcode, *shifts).values()), p.rounding, op.opcode)
    if op.opcode == "ADD":
        if int(getattr(p, "sign", 1)) != 1:
            return None
        call = (f"arm_elementwise_add_s8(@in0@, @in1@, {f('input1_offset', 'input1_multiplier', 'input1_shift')}, "
                f"{f('input2_offset', 'input2_multiplier', 'input2_shift', 'left_shift')}, @out0@, "
                f"{f('output_offset', 'output_multiplier', 'output_shift')}, {act}, {out.size})")
    else:
        call = (f"arm_elementwise_mul_s8(@in0@, @in1@, {f('input1_offset', 'input2_offset')}, @out0@, "
                f"{f('output_offset', 'output_multiplier', 'output_shift')}, {act}, {out.size})")
    return CmsisOp(tables.OpEmit(pos, op.opcode, f"{op.opcode} (CMSIS-NN) -> '{out.name}'", _block([], call, pos)))


EMITTERS = {"CONV_2D": emit_conv, "DEPTHWISE_CONV_2D": emit_conv, "FULLY_CONNECTED": emit_fully_connected,
            "MAX_POOL_2D": emit_pool, "AVERAGE_POOL_2D": emit_pool, "SOFTMAX": emit_softmax,
            "ADD": emit_add_mul, "MUL": emit_add_mul}


def emit_op(pos, prepared, g, prefix) -> CmsisOp | None:
    """The CMSIS-NN call for this prepared op, or None when qsim's own kernel must run it."""
    fn = EMITTERS.get(prepared.op.opcode)
    return fn(pos, prepared, g, prefix) if fn else None


def overlap_delta(prepared, g, cmsis: bool) -> list[tuple[int, int]]:
    """In-place contracts (``tables.overlap_delta``) hold for qsim's kernels' read/write order; of
    the CMSIS-NN calls (``cmsis``) only the element-wise ones (SOFTMAX rows, ADD, MUL: each element
    read before it is written) keep them, the window and matrix kernels get separate buffers."""
    if cmsis and prepared.op.opcode not in ("SOFTMAX", "ADD", "MUL"):
        return []
    return tables.overlap_delta(prepared, g)


def make_context(dirs: CmsisDirs) -> dict:
    """Template values of the generated Makefile's CMSIS-NN part (Makefile_cmsis.j2)."""
    return dict(nn_dir=str(dirs.nn), core_dir=str(dirs.core) if dirs.core else "")


# ------------------------------------------------------------------ scratch sizes

def _sizer_source(queries: list[SizeQuery]) -> str:
    """A host C program printing, per query, the portable and the ``_dsp`` answer."""
    lines = ['#include <stdio.h>', '#include "arm_nnfunctions.h"', "", "int main(void)", "{"]
    for q in queries:
        lines += ["    {"] + [f"        {d}" for d in q.declarations]
        lines.append(f'        printf("%ld %ld\\n", (long){q.call}, (long){q.dsp_call()});')
        lines.append("    }")
    lines += ["    return 0;", "}", ""]
    return "\n".join(lines)


def buffer_sizes(dirs: CmsisDirs, queries: list[SizeQuery]) -> list[int]:
    """Per query, max(portable, DSP) bytes CMSIS-NN's own *_get_buffer_size functions return
    (a host program compiled against ``dirs`` with the host C compiler, $CC or gcc)."""
    if not queries:
        return []
    cc = os.environ.get("HOST_CC") or os.environ.get("CC") or "gcc"
    if shutil.which(cc) is None:
        raise QsimError(f"--kernels cmsis-nn sizes CMSIS-NN's scratch buffers by compiling a small host program "
                        f"with '{cc}', which is not installed (set CC or install gcc).")
    inc = [f"-I{dirs.nn / 'Include'}"] + ([f"-I{dirs.core}"] if dirs.core else [])
    with tempfile.TemporaryDirectory(prefix="qsim_cmsis_sizer_") as tmp:
        src = Path(tmp) / "sizer.c"
        src.write_text(_sizer_source(queries))
        exe = Path(tmp) / "sizer"
        srcs = [str(dirs.nn / "Source" / s) for s in SIZER_SOURCES]
        r = subprocess.run([cc, "-O1", "-o", str(exe), str(src), *srcs, *inc], capture_output=True, text=True)
        if r.returncode != 0:
            raise QsimError(f"could not build the CMSIS-NN buffer-size program against {dirs.nn} "
                            f"(is it a CMSIS-NN checkout of 2023 or later?):\n{r.stderr.strip()[:2000]}")
        out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    rows = [line.split() for line in out.stdout.splitlines()]
    if out.returncode != 0 or len(rows) != len(queries):
        raise QsimError(f"the CMSIS-NN buffer-size program failed ({out.returncode}): {out.stderr.strip()[:500]}")
    return [max(int(a), int(b)) for a, b in rows]


def finish(ops: list[CmsisOp], dirs: CmsisDirs) -> None:
    """Size every CMSIS-NN call's scratch with the real functions and write the reservation (bytes,
    >= MIN_SCRATCH) into its call text and ``scratch_bytes``."""
    queried = [op for op in ops if op.query is not None]
    sizes = dict(zip((id(op) for op in queried), buffer_sizes(dirs, [op.query for op in queried])))
    for op in ops:
        if SIZE_MARK in op.emit.call:
            op.emit.scratch_bytes = max(MIN_SCRATCH, sizes.get(id(op), 0))
            op.emit.call = op.emit.call.replace(SIZE_MARK, str(op.emit.scratch_bytes))
