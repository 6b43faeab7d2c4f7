"""Bit-exact int8 kernels, TFLite's prepare/eval seam made explicit.

Each op registers a :class:`Kernel`:

* ``prepare(op, graph, profile) -> params``: everything TFLite computes in
  Prepare (requant multipliers/shifts via :mod:`qsim.fixedpoint`, LUTs,
  offsets, activation ranges, padding), as a plain dataclass of numpy arrays
  and ints.  Codegen emits these params as C tables; the accelerator model and
  RTL tests reuse them.
* ``eval(params, inputs) -> list[np.ndarray]``: integer-only evaluation on the
  op's input arrays (NHWC), returning one array per op output.

GEMM-like ops (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) also register
``accumulate(params, inputs) -> int64 array`` giving the raw int32 accumulators
(sum of (x - x_zp) * w, *without* bias, channel last) and keep a
``params.requant`` (:class:`RequantParams`), so that
``eval == requant.apply(accumulate(...))``: the seam the accelerator model and
the RTL replay use.

Batches: ``batch(params, op, graph, batched) -> bool`` (optional) says whether ``eval``
computes N samples at once when every input flagged in ``batched`` arrives with the
model's batch dimension 1 replaced by N (shape ``(N,) + shape[1:]``), returning the
samples' outputs in sample-major order (each sample's elements contiguous and in the
single-run order; the interpreter reshapes them to ``(N,) + ...``).  Kernels without
it are run sample by sample in a batched run (see ``qsim.interpreter``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import fixedpoint as fp


@dataclass
class RequantParams:
    """Per-output-channel requantization tables (channel = last axis of the accumulator)."""

    bias: np.ndarray  # int64 [C] (zeros when the op has no bias)
    multiplier: np.ndarray  # int64 [C], Q31 M0
    shift: np.ndarray  # int64 [C], TFLite sign convention (>0 left)
    output_zero_point: int
    act_min: int
    act_max: int
    rounding: str  # "double" | "single"
    acc_bound: int | None = None  # proven bound on |accumulator| (no bias), when the kernel knows one
    variant: Any = None  # fp.RequantVariant whose arithmetic is neither double nor single (with_requant_variant)
    _plan: Any = field(default=None, init=False, repr=False, compare=False)  # see apply()
    _folded: Any = field(default=None, init=False, repr=False, compare=False)  # see folded_plan()
    _native: Any = field(default=None, init=False, repr=False, compare=False)  # see _native_block()

    def requantize(self, acc: np.ndarray, bias=None, act_min: int | None = None, act_max: int | None = None,
                   acc_bound: int | None = None) -> np.ndarray:
        """int64 outputs of this layer's requant stage (:func:`qsim.fixedpoint.requantize`).

        ``bias`` / ``act_min`` / ``act_max`` / ``acc_bound`` default to the layer's own
        (the accelerator datapath adds the bias itself and widens the clamp to count
        saturations).  Double rounding takes fixedpoint's few-pass equivalent.
        """
        bias = self.bias if bias is None else bias
        lo = self.act_min if act_min is None else act_min
        hi = self.act_max if act_max is None else act_max
        if self.variant is not None:
            return fp.requantize_variant(acc, bias, self.multiplier, self.shift, self.output_zero_point, lo, hi,
                                         self.variant)
        if self.rounding == "double":
            return fp.requantize_double_fast(acc, bias, self.multiplier, self.shift, self.output_zero_point, lo, hi,
                                             self.acc_bound if acc_bound is None else acc_bound)
        return fp.requantize(acc, bias, self.multiplier, self.shift, self.output_zero_point, lo, hi, self.rounding)

    def apply(self, acc: np.ndarray, dtype=np.int8) -> np.ndarray:
        """The layer's outputs as ``dtype`` (``acc`` int64, or a float array of exact integers).

        Double rounding with a proven accumulator bound runs fixedpoint's
        :class:`~qsim.fixedpoint.DoubleRequantPlan`, built on the first call from this
        object's fields (treat them as read-only afterwards; ``dataclasses.replace`` makes
        a fresh object with its own plan).
        """
        if self._plan is None:
            plan = self.double_plan()
            self._plan = plan if plan is not None else False
        if self._plan is not False:
            return self._plan.apply(acc, dtype)
        if dtype is np.int8 and np.size(acc) >= fp.native_min_values():
            native = self._native_block()
            if native is not False:
                return native(acc)
        return self.requantize(acc).astype(dtype)

    def plain_arithmetic(self) -> bool:
        """True when this is the profile's own requantization (no variant, no subclass with its own
        ``requantize``): the arithmetic the native C (qsim.native) reproduces."""
        return self.variant is None and type(self).requantize is RequantParams.requantize

    def _native_block(self):
        """:func:`qsim.native.block_requantizer` for this layer when no plan applies (single
        rounding, or no proven bound): the same integers as :meth:`requantize` (int8 outputs);
        False when unavailable or when a subclass / variant has its own arithmetic.  Built once, kept."""
        if self._native is None:
            self._native = False
            if self.plain_arithmetic():
                from .. import native
                self._native = native.block_requantizer(self.bias, self.multiplier, self.shift,
                                                        self.output_zero_point, self.act_min, self.act_max,
                                                        self.rounding, self.acc_bound) or False
        return self._native

    def double_plan(self, bias=None, acc_bound: int | None = None):
        """The :class:`~qsim.fixedpoint.DoubleRequantPlan` equal to :meth:`requantize` for every
        accumulator with |acc| <= ``acc_bound`` (default: the layer's), with ``bias`` (int64 [C])
        in place of the layer's own -- a kernel that folds an input offset into the bias --, or
        None where no plan applies: not double rounding, a subclass with its own requantize, or
        no proof (see :func:`qsim.fixedpoint.plan_requantize_double`)."""
        if self.rounding != "double" or type(self).requantize is not RequantParams.requantize:
            return None
        return fp.plan_requantize_double(self.bias if bias is None else bias, self.multiplier, self.shift,
                                         self.output_zero_point, self.act_min, self.act_max,
                                         self.acc_bound if acc_bound is None else acc_bound)

    def folded_plan(self, input_zero_point: int, colsum: np.ndarray, raw_bound):
        """:meth:`double_plan` for the accumulators of the *uncentred* input: raw = acc +
        input_zero_point * colsum (``colsum[c]`` the sum of output channel c's weights), |raw| <=
        ``raw_bound``, requantized with bias - input_zero_point * colsum (the same integers
        acc + bias; CMSIS-NN's kernel sum), or None.  Built once and kept on this object, so a
        kernel's params whose ``requant`` is replaced (``dataclasses.replace``, a requant
        variant) get the new object's plan, never a stale one."""
        got = self._folded
        if got is None or got[0] is not colsum:
            plan = self.double_plan(self.bias - int(input_zero_point) * np.asarray(colsum, np.int64), raw_bound)
            got = self._folded = (colsum, plan)
        return got[1]


def with_requant_variant(rq: RequantParams, variant) -> RequantParams:
    """``rq``'s layer with the requant arithmetic ``variant`` (:class:`qsim.fixedpoint.RequantVariant`
    or its text) instead of the profile's: a plain RequantParams holding the variant's (M0, shift)
    table (:meth:`~qsim.fixedpoint.RequantVariant.table`).  Variants whose arithmetic is double or
    single rounding keep the ordinary paths (double: the fast plan); the others run
    :func:`qsim.fixedpoint.requantize_variant`.  A shift outside that arithmetic's range is a QsimError.
    """
    v = fp.parse_requant_variant(variant)
    m0, shift = v.table(rq.multiplier, rq.shift)
    arith = v.arithmetic
    fp.check_shift_range(shift, arith if arith in fp.ROUNDING_MODES else "double", f"requant variant {v}: shift")
    return RequantParams(bias=rq.bias, multiplier=m0, shift=shift, output_zero_point=rq.output_zero_point,
                         act_min=rq.act_min, act_max=rq.act_max, rounding=arith, acc_bound=rq.acc_bound,
                         variant=None if arith in fp.ROUNDING_MODES else v)


@dataclass
class Kernel:
    opcode: str
    prepare: Callable[..., Any]
    eval: Callable[[Any, list], list]
    accumulate: Callable[[Any, list], np.ndarray] | None = None
    batch: Callable[[Any, Any, Any, list], bool] | None = None
    int16: bool = False  # the kernel also runs int16x8 (int16 activations, zero point 0); prepare checks the rest
    # eval_for(params) -> the function ``eval`` calls for these params (a kernel dispatching on the
    # params' type resolves it once: the interpreter's run plan binds it); None: ``eval`` itself.
    eval_for: Callable[[Any], Callable[[Any, list], list]] | None = None

    def bound_eval(self, params) -> Callable[[Any, list], list]:
        """The function equal to ``eval`` for ``params`` (see ``eval_for``)."""
        return self.eval if self.eval_for is None else self.eval_for(params)


def batch_always(params, op, graph, batched) -> bool:
    """Batch predicate of kernels that treat axis 0 as a batch already (NHWC conv/pool, FC
    rows) or work element by element: any batched input of model dim 0 == 1 is fine."""
    return True


def batch_same_rank(params, op, graph, batched) -> bool:
    """Batch predicate of broadcasting ops: every batched input has the output's rank and the
    output's dim 0 is 1, so numpy broadcasting lines the batch axis up with axis 0 (a rank-2
    batched input against a rank-3 constant would broadcast the batch axis elsewhere)."""
    out = graph.tensors[op.outputs[0]]
    return bool(out.shape) and out.shape[0] == 1 and all(
        len(graph.tensors[i].shape) == len(out.shape) for i, f in zip(op.inputs, batched) if f)


REGISTRY: dict[str, Kernel] = {}


def register(opcode: str, prepare, eval, accumulate=None, batch=None, int16: bool = False, eval_for=None) -> None:
    REGISTRY[opcode] = Kernel(opcode, prepare, eval, accumulate, batch, int16, eval_for)


def _load_all() -> None:
    # Import kernel modules for their register() side effects.  Each module is
    # optional while the op set grows; a missing one just leaves its ops unregistered.
    import importlib
    for mod in ("conv", "fully_connected", "pooling", "elementwise", "activations", "shape_ops", "quantize",
                "lstm", "svdf", "int16x8", "uint8"):  # int16x8 and uint8 last: they wrap the int8 kernels they extend
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{mod}":
                raise


_load_all()
