"""Shape and data-movement ops: RESHAPE, SQUEEZE, PAD, PADV2, TRANSPOSE, CONCATENATION, STRIDED_SLICE.

None of these does arithmetic on int8 values: they copy raw quantized bytes, so
input and output must share scale and zero point wherever a reference checks it.
What the references do, established by tests/test_kernels_shape.py:

* RESHAPE / SQUEEZE / TRANSPOSE: raw copy (no requantization even if the
  output quantization differs, in both LiteRT and TFLM).
* PAD / PADV2: raw copy; the fill value is PADV2's constant (a raw int8,
  which both references require to share the output's scale and zero point)
  or, for PAD, the output zero point (real 0.0).  TFLM reads int64 paddings as
  int32 words (profile variant "tflm" for PAD/PADV2 reproduces that).
* CONCATENATION, int8: LiteRT BUILTIN_REF and TFLM both refuse inputs whose
  scale or zero point differs from the output's (no rescaling path for int8),
  so qsim raises QsimError for those too; otherwise a raw concatenation.
* STRIDED_SLICE: LiteRT handles ellipsis_mask, new_axis_mask and offset (and
  more than 5 dimensions) and clamps begin by direction ([0, n] forward,
  [-1, n-1] backward).  TFLM ignores ellipsis/new_axis/offset, supports <= 4-D
  and refuses rank >= 2 outputs with a zero dimension.  Where a reference's
  output size and its copy loop disagree (a shrunk axis with a negative stride
  or past the end, offset sizes that the clamped loop does not fill) the
  result is undefined (unwritten memory, or a crash): qsim refuses those.  The
  profile's ``variant("STRIDED_SLICE")`` picks "tflm" or "litert" behaviour.

Conventions: params come from constant index tensors at prepare time; eval
only moves numpy elements.  int16 activations: only in the ops of INT16_COPY (int16x8 models).

Batches (``qsim.interpreter``): RESHAPE/SQUEEZE keep each sample's elements in
order, so they batch whatever the shapes; PAD, TRANSPOSE, CONCATENATION and
STRIDED_SLICE batch when they leave axis 0 alone (no padding on it, perm[0] == 0,
another concatenation axis with every input batched, a slice that takes all of
axis 0 without shrinking or inserting axes); otherwise a batched run evaluates
them sample by sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import QsimError
from . import batch_always, register

# dtypes the data-movement kernels copy; int16 only in the ops of INT16_COPY (int16x8 models).
COPYABLE = {np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.int32, np.int64, np.float32, np.bool_)}
INT16_COPY = {"PAD", "PADV2", "STRIDED_SLICE", "RESHAPE", "SQUEEZE", "TRANSPOSE", "CONCATENATION"}


# ----------------------------------------------------------------------------- helpers

def _check_copy_types(op, g, data_inputs=(0,)) -> None:
    """Data inputs and the output must have one copyable dtype (int16 only in INT16_COPY ops)."""
    out = g.tensors[op.outputs[0]]
    for i in data_inputs:
        t = g.tensors[op.inputs[i]]
        if op.opcode not in INT16_COPY and np.int16 in (np.dtype(t.dtype), np.dtype(out.dtype)):
            raise QsimError(f"int16 tensors are not supported in {op.opcode} yet (int16x8: "
                            f"{', '.join(sorted(INT16_COPY))}).")
        if np.dtype(t.dtype) not in COPYABLE:
            raise QsimError(f"tensor type {np.dtype(t.dtype).name} is not supported.")
        if np.dtype(t.dtype) != np.dtype(out.dtype):
            raise QsimError(f"input '{t.name}' is {np.dtype(t.dtype).name} but the output is "
                            f"{np.dtype(out.dtype).name}; this op cannot change the type.")


def _const(op, g, pos: int, what: str) -> np.ndarray:
    """The constant contents of input ``pos`` (QsimError if absent or computed at run time)."""
    if pos >= len(op.inputs) or op.inputs[pos] < 0:
        raise QsimError(f"the {what} input is missing.")
    t = g.tensors[op.inputs[pos]]
    if t.data is None:
        raise QsimError(f"the {what} tensor '{t.name}' is computed at run time; qsim needs it "
                        "to be a constant in the model (static shapes only).")
    return np.asarray(t.data)


def _check_shape(op, g, shape) -> tuple[int, ...]:
    out = g.tensors[op.outputs[0]]
    shape = tuple(int(d) for d in shape)
    if shape != tuple(out.shape):
        raise QsimError(f"the op produces shape {list(shape)} but the model declares "
                        f"{list(out.shape)} for its output.")
    return shape


def _same_quant(a, b) -> bool:
    if a.quant is None or b.quant is None:
        return a.quant is None and b.quant is None
    return (np.array_equal(a.quant.scale.astype(np.float32), b.quant.scale.astype(np.float32))
            and np.array_equal(a.quant.zero_point, b.quant.zero_point))


# ----------------------------------------------------------------------------- RESHAPE / SQUEEZE

@dataclass
class ReshapeParams:
    """RESHAPE / SQUEEZE: same elements, new static shape (row-major order kept)."""

    out_shape: tuple[int, ...]


def prepare_reshape(op, g, profile) -> ReshapeParams:
    _check_copy_types(op, g)
    x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if x.size != out.size:
        raise QsimError(f"input shape {list(x.shape)} ({x.size} elements) cannot become "
                        f"{list(out.shape)} ({out.size} elements).")
    return ReshapeParams(tuple(out.shape))


def prepare_squeeze(op, g, profile) -> ReshapeParams:
    _check_copy_types(op, g)
    x = g.tensors[op.inputs[0]]
    dims = op.options.squeeze_dims if op.options is not None else ()
    rank = len(x.shape)
    if dims:
        axes = set()
        for d in dims:
            if not -rank <= d < rank:
                raise QsimError(f"squeeze dimension {d} is out of range for rank {rank}.")
            a = d % rank
            if x.shape[a] != 1:
                raise QsimError(f"cannot squeeze dimension {d} of size {x.shape[a]}.")
            axes.add(a)
    else:
        axes = {i for i, n in enumerate(x.shape) if n == 1}
    shape = [n for i, n in enumerate(x.shape) if i not in axes]
    return ReshapeParams(_check_shape(op, g, shape))


def eval_reshape(p: ReshapeParams, inputs) -> list[np.ndarray]:
    x = np.asarray(inputs[0])
    if x.size == math.prod(p.out_shape):
        return [x.reshape(p.out_shape)]
    return [x.reshape((-1,) + p.out_shape)]  # a batch: the samples stacked on a new axis


# ----------------------------------------------------------------------------- PAD / PADV2

@dataclass
class PadParams:
    """PAD / PADV2: ``pads`` int64 [rank, 2] (before, after) per axis, ``value`` raw fill value."""

    pads: np.ndarray
    value: int | float | bool


def prepare_pad(op, g, profile) -> PadParams:
    _check_copy_types(op, g)
    x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    pads = _const(op, g, 1, "paddings")
    if pads.dtype not in (np.int32, np.int64) or pads.shape != (len(x.shape), 2):
        raise QsimError(f"paddings must be int32/int64 of shape [{len(x.shape)}, 2], got "
                        f"{pads.dtype} {list(pads.shape)}.")
    if pads.dtype == np.int64 and profile.variant(op.opcode, "litert") == "tflm":
        # TFLM reads the paddings buffer as int32 whatever its type: an int64 table is seen as its
        # first 2*rank little-endian 32-bit words (so only all-zero int64 paddings survive its checks).
        pads = np.ascontiguousarray(pads).astype("<i8").view("<i4").reshape(-1)[:pads.size].reshape(pads.shape)
    pads = pads.astype(np.int64)
    if (pads < 0).any():
        raise QsimError(f"negative paddings {pads.tolist()} are not allowed.")
    if op.opcode == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        cv = g.tensors[op.inputs[2]]
        vals = _const(op, g, 2, "constant_values")
        if vals.size != 1:
            raise QsimError(f"constant_values must hold one value, got {vals.size}.")
        if np.dtype(cv.dtype) != np.dtype(out.dtype):
            raise QsimError(f"constant_values is {cv.dtype} but the output is {out.dtype}.")
        if out.quant is not None and not _same_quant(cv, out):
            raise QsimError(f"constant_values '{cv.name}' must share the output's scale and "
                            "zero point (the TFLite kernels copy it raw).")
        value = vals.reshape(-1)[0].item()
    else:
        value = out.quant.zp0 if (out.quant is not None and np.issubdtype(out.dtype, np.integer)) else 0
    _check_shape(op, g, np.asarray(x.shape, np.int64) + pads.sum(axis=1))
    return PadParams(pads, value)


def batch_pad(p: PadParams, op, g, batched) -> bool:
    return p.pads.shape[0] >= 1 and not p.pads[0].any()  # nothing added along the batch axis


def eval_pad(p: PadParams, inputs) -> list[np.ndarray]:
    x = np.asarray(inputs[0])
    return [np.pad(x, [tuple(r) for r in p.pads.tolist()], mode="constant", constant_values=p.value)]


# ----------------------------------------------------------------------------- TRANSPOSE

@dataclass
class TransposeParams:
    perm: tuple[int, ...]  # output axis i takes input axis perm[i]


def prepare_transpose(op, g, profile) -> TransposeParams:
    _check_copy_types(op, g)
    x = g.tensors[op.inputs[0]]
    perm = _const(op, g, 1, "perm").reshape(-1).astype(np.int64)
    rank = len(x.shape)
    if sorted(perm.tolist()) != list(range(rank)):
        raise QsimError(f"perm {perm.tolist()} is not a permutation of the {rank} input axes.")
    _check_shape(op, g, [x.shape[a] for a in perm])
    return TransposeParams(tuple(int(a) for a in perm))


def batch_transpose(p: TransposeParams, op, g, batched) -> bool:
    return len(p.perm) >= 1 and p.perm[0] == 0  # the batch axis stays first


def eval_transpose(p: TransposeParams, inputs) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.transpose(np.asarray(inputs[0]), p.perm))]


# ----------------------------------------------------------------------------- CONCATENATION

@dataclass
class ConcatParams:
    axis: int  # non-negative


def prepare_concat(op, g, profile) -> ConcatParams:
    ins = [i for i in op.inputs if i >= 0]
    _check_copy_types(op, g, data_inputs=range(len(ins)))
    out = g.tensors[op.outputs[0]]
    opts = op.options
    if opts is not None and opts.activation != "NONE":
        raise QsimError(f"a fused {opts.activation} on CONCATENATION is not supported.")
    rank = len(out.shape)
    axis = opts.axis if opts is not None else 0
    if not -rank <= axis < rank:
        raise QsimError(f"axis {axis} is out of range for rank {rank}.")
    axis %= rank
    for i in ins:
        t = g.tensors[i]
        if len(t.shape) != rank or any(a != b for k, (a, b) in enumerate(zip(t.shape, out.shape)) if k != axis):
            raise QsimError(f"input '{t.name}' shape {list(t.shape)} does not fit output "
                            f"{list(out.shape)} along axis {axis}.")
        if (t.quant is not None or out.quant is not None) and not _same_quant(t, out):
            raise QsimError(
                f"input '{t.name}' has scale/zero point "
                f"{t.quant.scale0 if t.quant else None}/{t.quant.zp0 if t.quant else None} but the output has "
                f"{out.quant.scale0 if out.quant else None}/{out.quant.zp0 if out.quant else None}. TFLite's int8 "
                "CONCATENATION (LiteRT and TFLM alike) refuses to rescale (qsim does not simulate uint8 "
                "rescaling either); requantize the inputs first.")
    total = sum(g.tensors[i].shape[axis] for i in ins)
    if total != out.shape[axis]:
        raise QsimError(f"inputs add up to {total} along axis {axis}, output has "
                        f"{out.shape[axis]}.")
    return ConcatParams(axis)


def batch_concat(p: ConcatParams, op, g, batched) -> bool:
    """Along another axis than 0, with every input batched (a constant has batch size 1)."""
    return p.axis != 0 and all(f for i, f in zip(op.inputs, batched) if i >= 0)


def eval_concat(p: ConcatParams, inputs) -> list[np.ndarray]:
    return [np.concatenate([np.asarray(a) for a in inputs if a is not None], axis=p.axis)]


# ----------------------------------------------------------------------------- STRIDED_SLICE

@dataclass
class StridedSliceParams:
    """Per effective axis, the input indices to gather (``np.ix_``), then a reshape.

    ``effective_shape``: input shape with new axes inserted (LiteRT's
    new_axis_mask); ``indices[k]``: int64 positions taken along axis k
    (strides, negative steps and clamping already applied); ``out_shape``:
    the declared output shape (shrunk axes removed).
    """

    effective_shape: tuple[int, ...]
    indices: tuple[np.ndarray, ...]
    out_shape: tuple[int, ...]


def _clamp(v: int, lo: int, hi: int) -> int:
    return hi if v > hi else lo if v < lo else v


def _start_new(begin: int, stride: int, n: int, masked: bool) -> int:
    """StridedSliceStartForAxis: negative wrap, direction-aware clamp, then begin_mask."""
    if masked:
        return 0 if stride > 0 else n - 1
    if begin < 0:
        begin += n
    return _clamp(begin, 0, n) if stride > 0 else _clamp(begin, -1, n - 1)


def _end_new(end: int, start: int, stride: int, n: int, masked: bool, shrink: bool, offset: bool) -> int:
    """StridedSliceEndForAxis: shrink -> start+1; offset adds start; wrap; clamp; end_mask."""
    if shrink:
        return start if start >= n else start + 1
    if offset:
        end += start
    if end < 0:
        end += n
    end = _clamp(end, 0, n) if stride > 0 else _clamp(end, -1, n - 1)
    if masked:
        end = n if stride > 0 else -1
    return end


def _start_old(begin: int, stride: int, n: int, masked: bool) -> int:
    """StartForAxis, which TFLM's output-shape check uses (same values as _start_new for n > 0)."""
    if n == 0:
        return 0
    if masked:
        begin = -(2 ** 31) if stride > 0 else 2 ** 31 - 1
    if begin < 0:
        begin += n
    return _clamp(begin, 0, n) if stride > 0 else _clamp(begin, -1, n - 1)


def _stop_old(end: int, start: int, stride: int, n: int, masked: bool, shrink: bool) -> int:
    if n == 0:
        return 0
    if shrink:
        return start + 1
    if masked:
        end = 2 ** 31 - 1 if stride > 0 else -(2 ** 31)
    if end < 0:
        end += n
    return _clamp(end, 0, n) if stride > 0 else _clamp(end, -1, n - 1)


def _bit(mask: int, i: int) -> bool:
    return bool(mask & (1 << i))


def _effective_spec_litert(o, in_shape, begin, end, strides):
    """LiteRT's BuildStridedSliceParams: expand ellipsis / new axes into a per-axis spec.

    Returns (effective_shape, [(begin, end, stride, begin_masked, end_masked, shrink)]).
    """
    rank, count = len(in_shape), len(begin)
    num_add = sum(1 for i in range(count) if not _bit(o.ellipsis_mask, i) and _bit(o.new_axis_mask, i))
    eff_dims = rank + num_add
    ell_mask = new_mask = 0
    ell_start, expanded = eff_dims, 0
    i = 0
    while i < eff_dims:
        if _bit(o.ellipsis_mask, i):
            ell_start = i
            ell_end = max(i + 1, min(i + 1 + num_add + rank - count, eff_dims))
            expanded = ell_end - ell_start - 1
            while i < ell_end:
                ell_mask |= 1 << i
                i += 1
            continue
        if _bit(o.new_axis_mask, i - expanded):
            new_mask |= 1 << i
        i += 1
    shape, spec = [], []
    added_ell = added_axes = 0
    for i in range(eff_dims):
        if _bit(ell_mask, i):
            added_ell = max(0, i - ell_start)
            shape.append(in_shape[i - added_axes])
            spec.append((0, 0, 1, True, True, False))
        elif _bit(new_mask, i):
            shape.append(1)
            spec.append((0, 1, 1, False, False, False))
            added_axes += 1
        elif i >= count + expanded:
            shape.append(in_shape[i - added_axes])
            spec.append((0, 0, 1, True, True, False))
        else:
            k = i - added_ell
            shape.append(in_shape[i - added_axes])
            spec.append((int(begin[k]), int(end[k]), int(strides[k]), _bit(o.begin_mask, k),
                         _bit(o.end_mask, k), _bit(o.shrink_axis_mask, k)))
    return shape, spec


def prepare_strided_slice(op, g, profile) -> StridedSliceParams:
    _check_copy_types(op, g)
    x = g.tensors[op.inputs[0]]
    o = op.options
    begin = _const(op, g, 1, "begin").reshape(-1)
    end = _const(op, g, 2, "end").reshape(-1)
    strides = _const(op, g, 3, "strides").reshape(-1)
    for name, v in (("begin", begin), ("end", end), ("strides", strides)):
        if v.dtype != np.int32:
            raise QsimError(f"{name} must be int32 (TFLite's only index type), got {v.dtype}.")
    if not (begin.size == end.size == strides.size):
        raise QsimError(f"begin, end and strides differ in length "
                        f"({begin.size}, {end.size}, {strides.size}).")
    if (strides == 0).any():
        raise QsimError("a stride is 0.")
    if profile.variant("STRIDED_SLICE", "litert") == "tflm":
        return _prepare_ss_tflm(op, g, x, o, begin, end, strides)
    return _prepare_ss_litert(op, g, x, o, begin, end, strides)


def _prepare_ss_litert(op, g, x, o, begin, end, strides) -> StridedSliceParams:
    # (LiteRT 2.3 has no 5-D limit any more: 6-D and 7-D inputs and new axes beyond 5-D run.)
    shape, spec = _effective_spec_litert(o, x.shape, begin, end, strides)
    if o.offset and end.size < len(shape):
        raise QsimError(f"with offset=True LiteRT sizes each of the {len(shape)} effective axes "
                        f"from end[axis], but end has only {end.size} entries (it reads past the vector): the "
                        "result is undefined, qsim refuses it.")
    indices, out_shape, problems = [], [], []
    for k, (b, e, s, bm, em, sh) in enumerate(spec):
        n = shape[k]
        start = _start_new(b, s, n, bm)
        stop = _end_new(e, start, s, n, em, sh, bool(o.offset))
        idx = np.arange(start, stop, s, dtype=np.int64)
        indices.append(idx)
        if sh:
            if idx.size != 1:
                problems.append(f"shrink axis {k} selects {idx.size} elements (begin {start} of {n}, stride {s})")
            continue
        # LiteRT sizes the output with ceil((end - begin) / stride), or ceil(end / stride) with offset.
        span = int(end[k]) if o.offset else stop - start
        dim = max(0, math.ceil(np.float32(span) / np.float32(s)))
        if dim != idx.size:
            problems.append(f"axis {k} is sized {dim} but {idx.size} elements are copied into it")
        out_shape.append(dim)
    _refuse_undefined(op, g, "LiteRT", problems, out_shape, indices)
    return StridedSliceParams(tuple(shape), tuple(indices), _check_shape(op, g, out_shape))


def _refuse_undefined(op, g, who: str, problems: list[str], out_shape, indices) -> None:
    """Refuse when the reference's output size and its copy loop disagree.

    Fewer copied elements than the output holds leaves some unwritten; more
    overruns the output buffer (LiteRT can crash).  Both empty is fine.
    """
    size = int(np.prod(out_shape, dtype=np.int64))
    copied = int(np.prod([i.size for i in indices], dtype=np.int64))
    if problems and (size > 0 or copied > size):
        raise QsimError(f"{'; '.join(problems)}, so {who} leaves output elements unwritten or "
                        "writes past them: the result is undefined, qsim refuses it.")


def _prepare_ss_tflm(op, g, x, o, begin, end, strides) -> StridedSliceParams:
    rank = len(x.shape)
    if rank > 4:
        raise QsimError("TFLM's STRIDED_SLICE supports at most 4-D inputs.")
    if begin.size != rank:
        raise QsimError(f"TFLM needs begin/end/strides with one entry per input axis "
                        f"({rank}), got {begin.size}.")
    indices, out_shape, problems = [], [], []
    for k in range(rank):
        n, b, e, s = x.shape[k], int(begin[k]), int(end[k]), int(strides[k])
        bm, em, sh = _bit(o.begin_mask, k), _bit(o.end_mask, k), _bit(o.shrink_axis_mask, k)
        # TFLM ignores ellipsis_mask, new_axis_mask and offset (it never reads them).
        start = _start_new(b, s, n, bm)
        idx = np.arange(start, _end_new(e, start, s, n, em, sh, False), s, dtype=np.int64)
        indices.append(idx)
        if sh:
            if idx.size != 1:
                problems.append(f"shrink axis {k} selects {idx.size} elements (begin {start} of {n}, stride {s})")
            continue
        ostart = _start_old(b, s, n, bm)
        ostop = _stop_old(e, ostart, s, n, em, sh)
        dim = max(0, math.ceil(np.float32(ostop - ostart) / np.float32(s)))
        if dim != idx.size:
            problems.append(f"axis {k} is checked as size {dim} but {idx.size} elements are copied into it")
        out_shape.append(dim)
    if 0 in out_shape and len(out_shape) > 1:
        raise QsimError(f"the slice is empty (shape {out_shape}); TFLM treats a tensor of rank "
                        ">= 2 with a zero dimension as dynamic and refuses the model.")
    _refuse_undefined(op, g, "TFLM", problems, out_shape, indices)
    return StridedSliceParams(tuple(x.shape), tuple(indices), _check_shape(op, g, out_shape))


def batch_strided_slice(p: StridedSliceParams, op, g, batched) -> bool:
    """Batched when axis 0 is the input's own (no new axis inserted), kept (not shrunk) and
    taken whole (index [0] of its size 1): then the batch axis is simply carried along."""
    x = g.tensors[op.inputs[0]]
    return (tuple(p.effective_shape) == tuple(x.shape) and len(p.out_shape) == len(p.effective_shape) >= 1
            and p.indices[0].tolist() == [0])


def eval_strided_slice(p: StridedSliceParams, inputs) -> list[np.ndarray]:
    x = np.asarray(inputs[0])
    per_sample = math.prod(p.effective_shape)
    if x.size == per_sample:
        return [x.reshape(p.effective_shape)[np.ix_(*p.indices)].reshape(p.out_shape)]
    n = x.size // per_sample  # a batch (batch_strided_slice): axis 0 carries the N samples
    x = x.reshape((n,) + tuple(p.effective_shape[1:]))
    return [x[np.ix_(np.arange(n), *p.indices[1:])].reshape((n,) + tuple(p.out_shape[1:]))]


register("RESHAPE", prepare_reshape, eval_reshape, batch=batch_always, int16=True)
register("SQUEEZE", prepare_squeeze, eval_reshape, batch=batch_always, int16=True)
register("PAD", prepare_pad, eval_pad, batch=batch_pad, int16=True)
register("PADV2", prepare_pad, eval_pad, batch=batch_pad, int16=True)
register("TRANSPOSE", prepare_transpose, eval_transpose, batch=batch_transpose, int16=True)
register("CONCATENATION", prepare_concat, eval_concat, batch=batch_concat, int16=True)
register("STRIDED_SLICE", prepare_strided_slice, eval_strided_slice, batch=batch_strided_slice, int16=True)
