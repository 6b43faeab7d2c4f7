"""Optional native block requantization and DEPTHWISE_CONV_2D: the firmware's own C (qkernels.c's
``qk_requantize`` and depthwise tap ``qk_dw_tap``) compiled for the host and called through ctypes.

:func:`depthwise_runner` runs a whole batch of an int8 depthwise layer in C (qk_host.c's
``qk_host_depthwise``: qk_depthwise_conv2d's sums, a few output rows at a time, then the block
requantization below), used by qsim/kernels/conv.py's eval for large layers.

``codegen/templates/qk_host.c`` includes qkernels.c and loops ``qk_requantize`` over a
``[rows, channels]`` block (channel = last axis, per-channel bias / Q31 M0 / shift, int8 zero
point and activation range, int8 outputs).  The formula is written once, in C, and checked
equal to :func:`qsim.fixedpoint.requantize` (tests/test_edges.py, tests/test_native.py), so
using it changes no output bit; it only replaces the numpy passes of a large block.

The library is built with the system ``gcc -O3 -shared -fPIC`` (x86-64: with an AVX2 clone of
each loop, chosen at load time) (``$CC`` overrides the
compiler) once per (sources, rounding, compiler version) into ``$QSIM_CACHE_DIR`` (default
``$XDG_CACHE_HOME/qsim`` or ``~/.cache/qsim``); the build writes a temporary file and renames
it into place, so parallel processes (Dask workers) may race safely.  ``QSIM_NATIVE=0`` turns
it off; without a compiler, or when the build fails, :func:`block_requantizer` returns None
and callers keep their numpy path.  Results are identical either way.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from .fixedpoint import INT32_MAX, INT32_MIN, SHIFT_RANGE

# Below this many values a block stays on numpy: the ctypes call (two pointer look-ups and the
# argument conversions: ~6 us on a loaded machine) costs about as much as the numpy passes of a
# small layer (fixedpoint.DoubleRequantPlan's per-shape closures; measured at load 7, 64
# channels: 2048 values 7.9 us native vs 8.2 (fused RELU) / 12.9 us (no RELU) numpy, 1024 values
# 6.9 vs 6.1 / 9.1 us).
MIN_VALUES = 2048

_ACC_KINDS = {np.dtype(np.int32): "i32", np.dtype(np.int64): "i64",
              np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_libs: dict = {}  # rounding -> {acc kind: ctypes function} | None (build failed / no compiler)


def enabled() -> bool:
    """False when the environment says ``QSIM_NATIVE=0`` (read at each call)."""
    return os.environ.get("QSIM_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    got = os.environ.get("QSIM_CACHE_DIR")
    if got:
        return Path(got)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qsim"


def _templates() -> Path:
    spec = importlib.util.find_spec(f"{__package__}.codegen")  # the folder only: no jinja2 import
    return Path(list(spec.submodule_search_locations)[0]) / "templates"


def _compiler() -> tuple[str, str] | None:
    """(compiler path, its version text) or None."""
    cc = shutil.which(os.environ.get("CC") or "gcc")
    if cc is None:
        return None
    try:
        r = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return (cc, r.stdout) if r.returncode == 0 else None


def build_shared(stem: str, files: dict[str, bytes | str], sources: list[str], flags: list[str],
                 objects: tuple[Path, ...] = (), compile_only: bool = False) -> Path | None:
    """A shared library compiled from ``files`` ({file name: text}, written side by side into one
    directory; ``sources``: the names among them given to the compiler) and linked with the
    ``objects`` (paths of earlier ``compile_only`` builds) by ``CC <flags> -shared -fPIC``, or
    (``compile_only``: one source) an object file ``CC <flags> -fPIC -c``.  Cached as
    ``cache_dir()/<stem>_<hash>.so`` (``.o``), the hash over every file's name and text, the
    flags, the objects' paths (which hold their own hashes) and the compiler's path and version.
    An existing file is reused; a new one is written to a temporary file and renamed into place
    (atomic, so parallel processes may race).  None without a compiler or when the build fails."""
    cc = _compiler()
    if cc is None:
        return None
    blobs = {n: (t.encode() if isinstance(t, str) else bytes(t)) for n, t in files.items()}
    digest = hashlib.sha256()
    for part in (cc[0], cc[1], *flags, *sources, *map(str, objects)):
        digest.update(part.encode() + b"\0")
    for n in sorted(blobs):
        digest.update(n.encode() + b"\0" + blobs[n] + b"\0")
    target = cache_dir() / f"{stem}_{digest.hexdigest()[:16]}{'.o' if compile_only else '.so'}"
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as d:
            for n, b in blobs.items():
                (Path(d) / n).write_bytes(b)
            tmp = Path(d) / target.name
            kind = ["-c"] if compile_only else ["-shared"]
            r = subprocess.run([cc[0], *flags, *kind, "-fPIC", "-I", d, "-o", str(tmp),
                                *(str(Path(d) / n) for n in sources), *map(str, objects)],
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0 or not tmp.exists():
                return None
            os.replace(tmp, target)  # atomic: a racing process renames an identical file
    except (OSError, subprocess.SubprocessError):
        return None
    return target


def _build(rounding: str) -> Path | None:
    """The shared library for ``rounding``, built into the cache unless already there; None on failure."""
    try:
        from .codegen.emit import _config_header  # the one qk_config.h generator (codegen's)
        tdir = _templates()
    except (ImportError, AttributeError, TypeError, IndexError):  # a copy of qsim without qsim.codegen
        return None
    files = {name: (tdir / name).read_bytes() for name in ("qk_host.c", "qkernels.c", "qkernels.h")}
    files["qk_config.h"] = _config_header(rounding)
    return build_shared(f"qk_host_{rounding}", files, ["qk_host.c"], ["-std=c99", "-O3"])


def _functions(rounding: str):
    if rounding not in _libs:
        path = _build(rounding)
        funcs = None
        if path is not None:
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:
                lib = None
            if lib is not None:
                funcs = {}
                for kind in _ACC_KINDS.values():
                    f = getattr(lib, f"qk_host_requant_{kind}")
                    f.restype = None
                    f.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p,
                                  ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32,
                                  ctypes.c_int32, ctypes.c_void_p]
                    funcs[kind] = f
                f = lib.qk_host_depthwise
                f.restype = None
                f.argtypes = [ctypes.c_int32] * 19 + [ctypes.c_void_p] * 7 + [ctypes.c_int32]
                funcs["depthwise"] = f
                for kind in ("u8", "u16"):
                    f = getattr(lib, f"qk_host_svdf_lookup_{kind}")
                    f.restype = None
                    f.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p,
                                  ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p]
                    funcs[f"svdf_{kind}"] = f
        _libs[rounding] = funcs
    return _libs[rounding]


def available(rounding: str = "double") -> bool:
    """Whether the native requantization runs here (enabled, compiled and loaded) for ``rounding``."""
    return rounding in SHIFT_RANGE and enabled() and _functions(rounding) is not None


def _requant_tables(bias, m0, shift, output_zero_point: int, act_min: int, act_max: int, rounding: str):
    """(bias, M0, shift) as int64 vectors of one common length (1 or the channel count), or None
    when qk_requantize does not take them (M0 / bias not int32, a shift outside
    ``SHIFT_RANGE[rounding]``, a zero point or activation range outside int8, lengths that do not
    broadcast) or the native path is off or unavailable."""
    zp, lo, hi = int(output_zero_point), int(act_min), int(act_max)
    if not (-128 <= zp <= 127 and -128 <= lo <= hi <= 127) or not available(rounding):
        return None
    tables = [np.asarray(v, np.int64).reshape(-1) for v in (0 if bias is None else bias, m0, shift)]
    smin, smax = SHIFT_RANGE[rounding]
    if any(t.size == 0 for t in tables) or np.any(tables[1] < INT32_MIN) or np.any(tables[1] > INT32_MAX) \
            or np.any(tables[2] < smin) or np.any(tables[2] > smax) or np.any(tables[0] < INT32_MIN) \
            or np.any(tables[0] > INT32_MAX):
        return None
    n = max(t.size for t in tables)
    if any(t.size not in (1, n) for t in tables):
        return None
    return tuple(np.broadcast_to(t, (n,)) for t in tables)


def block_requantizer(bias, m0, shift, output_zero_point: int, act_min: int, act_max: int,
                      rounding: str = "double", acc_bound: int | None = None):
    """A function ``acc -> int8 array`` equal to ``fixedpoint.requantize(acc, bias, m0, shift,
    output_zero_point, act_min, act_max, rounding).astype(np.int8)`` for accumulators of dtype
    int32/int64 (wrapping like int32, as requantize does) or float32/float64 holding integers,
    channel = last axis (``bias``/``m0``/``shift``: [C] or scalars; ``bias`` may
    be None).  None when the native path is off or unavailable, or the tables are outside what
    qk_requantize takes (M0 not int32, a shift outside ``SHIFT_RANGE[rounding]``, a zero point or
    activation range outside int8): then the caller keeps its numpy path.  Float accumulators
    go to C as they are only when ``acc_bound`` (a proven bound on |acc|) is within int32, else
    they are converted to int64 first (one numpy pass; the C float->int32 conversion is
    undefined beyond int32)."""
    tables = _requant_tables(bias, m0, shift, output_zero_point, act_min, act_max, rounding)
    if tables is None:
        return None
    zp, lo, hi = int(output_zero_point), int(act_min), int(act_max)
    uniform = all(np.all(t == t[0]) for t in tables)
    width = 1 if uniform else tables[0].size
    b, m, s = (np.ascontiguousarray(t[:width], np.int32) for t in tables)
    pointers = tuple(a.ctypes.data for a in (b, m, s))
    funcs = _functions(rounding)
    kinds = {dt: funcs[k] for dt, k in _ACC_KINDS.items()
             if k[0] == "i" or (acc_bound is not None and int(acc_bound) <= INT32_MAX)}

    def requant(acc: np.ndarray) -> np.ndarray:
        acc = np.ascontiguousarray(acc)
        f = kinds.get(acc.dtype)
        if f is None:
            acc = acc.astype(np.int64)
            f = kinds[acc.dtype]
        if width > 1 and (acc.ndim == 0 or acc.shape[-1] != width):
            raise ValueError(f"native requantization: {width} channels, accumulator shape {acc.shape}")
        out = np.empty(acc.shape, np.int8)
        f(acc.ctypes.data, acc.size // width, width, pointers[0], pointers[1], pointers[2], zp, lo, hi,
          out.ctypes.data)
        return out

    def into(acc_address: int, dtype: np.dtype, values: int, out_address: int) -> None:
        """The same between buffers the caller keeps, given by address (no per-call pointer
        look-ups): ``values`` accumulators of ``dtype`` (one of ``requant.takes``), a whole
        number of rows of ``width`` channels, into as many int8 outputs."""
        kinds[dtype](acc_address, values // width, width, pointers[0], pointers[1], pointers[2], zp, lo, hi,
                     out_address)
    requant.tables = (b, m, s)  # keeps the tables alive with the closure (pointers above)
    requant.into, requant.takes, requant.width = into, frozenset(kinds), width
    return requant


STAGED_SIZES = 4  # batch sizes a staged runner keeps buffers for (the most recent ones)
STAGED_MAX_VALUES = 1 << 16  # a batch whose input has more values runs unstaged (memory kept small)


def _staged_gemm(weights: np.ndarray, finish):
    """A function ``x -> int8 [N, O]`` (None for an ``x`` of over STAGED_MAX_VALUES values): the int8
    batch ``x`` [N, I] copied into a staging buffer as ``weights``' float dtype (exact), ``x @
    weights`` [I, O] by one BLAS call into a second one, then ``finish(n, acc_address,
    out_address)`` (a C call writing the int8 [N, O] outputs) and the outputs copied out.  The
    buffers of the last STAGED_SIZES batch sizes are kept with their addresses, taken once (numpy's
    ``.ctypes.data`` costs microseconds per array, as much as the C call's work on a small block);
    a lock is held from filling them to copying the result out."""
    in_units, out_units = weights.shape
    dtype, stages, lock, copyto, dot = weights.dtype, {}, threading.Lock(), np.copyto, np.dot

    def run(x: np.ndarray) -> np.ndarray | None:
        if x.size > STAGED_MAX_VALUES:
            return None
        x = x.reshape(-1, in_units)
        n = x.shape[0]
        with lock:
            stage = stages.get(n)
            if stage is None:
                if len(stages) >= STAGED_SIZES:
                    stages.pop(next(iter(stages)))
                xs, acc, out = np.empty((n, in_units), dtype), np.empty((n, out_units), dtype), \
                    np.empty((n, out_units), np.int8)
                stage = stages[n] = (xs, acc, out, acc.ctypes.data, out.ctypes.data)
            xs, acc, out, acc_address, out_address = stage
            copyto(xs, x, casting="unsafe")  # int8 -> float: exact
            dot(xs, weights, out=acc)
            finish(n, acc_address, out_address)
            return out.copy()
    return run


def gemm_requant_runner(weights_t: np.ndarray, requant):
    """A function ``x -> int8 [N, O]`` equal to ``requant(x @ weights_t)`` for an int8 batch ``x``
    [N, I] (None for an ``x`` of over STAGED_MAX_VALUES values): FULLY_CONNECTED with the input offset folded into the requantization's bias.
    ``weights_t``: [I, O] float32/float64 holding integers, exact for every sum (the caller's
    bound); ``requant``: a :func:`block_requantizer` of O channels (or one) that takes that float
    dtype.  Per call: x copied into a staging buffer as floats, one BLAS call into another, one C
    call requantizing it into a third, and one copy out, where numpy's requantization of a small
    block takes about ten passes.  None when ``requant`` does not take the GEMM's dtype."""
    wt = np.ascontiguousarray(weights_t)
    if wt.ndim != 2 or wt.dtype not in (np.float32, np.float64) or requant is None \
            or wt.dtype not in requant.takes or requant.width not in (1, wt.shape[1]):
        return None
    into, dtype, values = requant.into, wt.dtype, wt.shape[1]
    run = _staged_gemm(wt, lambda n, acc_address, out_address: into(acc_address, dtype, n * values, out_address))
    run.tables = (wt, requant)
    return run


def svdf_lookup_runner(weights: np.ndarray, shift: np.ndarray, table: np.ndarray, y_table: np.ndarray,
                       width: int, rows: int):
    """A function ``x -> int8 [N, F]`` (None for an ``x`` of over STAGED_MAX_VALUES values, or whose
    batch N is not ``rows`` when ``rows > 1``) running the SVDF table path of :func:`qsim.kernels.svdf.eval_svdf`:
    ``v = x @ weights`` by BLAS into a staging buffer, then ``qk_host_svdf_lookup``:
    ``y_table[row, f, table[clip(v + shift[f])]]`` (row 0 when ``rows == 1``, else the sample's
    row).  ``weights`` [I, F] and ``shift`` [F] float32 with every sum an exact integer below
    2**24 (svdf._plan_table's bound); ``table``: uint8/uint16 [L]; ``y_table``: int8 [rows * F *
    width].  None when the native path is off or unavailable or the operands are outside that."""
    funcs = _functions("double") if available("double") else None  # no rounding here: any build
    table = np.asarray(table)
    kind = {np.dtype(np.uint8): "u8", np.dtype(np.uint16): "u16"}.get(table.dtype)
    if funcs is None or kind is None or np.asarray(weights).dtype != np.float32 \
            or np.asarray(shift).dtype != np.float32 or np.asarray(y_table).dtype != np.int8:
        return None
    wf, sh, tab, yt = (np.ascontiguousarray(a) for a in (weights, shift, table, y_table))
    filters = wf.shape[1]
    if sh.shape != (filters,) or yt.size != rows * filters * width or tab.size == 0:
        return None
    f = funcs[f"svdf_{kind}"]
    fixed = (filters, rows, sh.ctypes.data, tab.ctypes.data, tab.size, yt.ctypes.data, width)
    gemm = _staged_gemm(wf, lambda n, v_address, out_address: f(v_address, n, *fixed, out_address))

    def run(x: np.ndarray) -> np.ndarray | None:
        return None if rows != 1 and x.shape[0] != rows else gemm(x)
    run.tables = (wf, sh, tab, yt)
    return run


# Output values per block of the native depthwise (int32 sums in scratch, then requantized): a few
# output rows at a time, so the sums are still in cache when the block is requantized.
DEPTHWISE_BLOCK = 1 << 14


def depthwise_runner(filter_values, bias, m0, shift, output_zero_point: int, act_min: int, act_max: int,
                     input_zero_point: int, geometry: tuple, rounding: str = "double",
                     acc_bound: int | None = None):
    """A function ``x -> int8 [N, OH, OW, C*M]`` running DEPTHWISE_CONV_2D on an int8 NHWC batch
    ``x`` [N, H, W, C] in C (qk_host.c's ``qk_host_depthwise``: the firmware's generic depthwise
    sums, qk_dw_tap, over the taps inside the image as TFLM does, then qk_requantize per channel),
    equal to TFLite's reference kernel and so to the numpy kernel (qsim/kernels/conv.py).

    ``filter_values``: the filter [KH, KW, C*M] (output channel ``c * M + m``), integers within
    int8; ``bias``/``m0``/``shift``: per output channel or scalars, as :func:`block_requantizer`;
    ``geometry``: (in_h, in_w, in_c, out_h, out_w, depth_multiplier, stride_h, stride_w, dilation_h,
    dilation_w, pad_h, pad_w), pads leading (top/left).  ``acc_bound``: a proven bound on |sum|
    (no bias), which must be within int32 (the C sums in int32).  None when the native path is
    off or unavailable or the layer is outside what the C takes (see :func:`block_requantizer`;
    weights or input zero point outside int8, no bound within int32)."""
    w = np.asarray(filter_values)
    ih, iw, ic, oh, ow, dm, sh, sw, dh, dw, ph, pw = (int(v) for v in geometry)
    oc = ic * dm
    if acc_bound is None or int(acc_bound) > INT32_MAX or not -128 <= int(input_zero_point) <= 127 \
            or w.ndim != 3 or w.shape[2] != oc or w.size == 0 or np.any(w < -128) or np.any(w > 127) \
            or min(ih, iw, ic, oh, ow, dm, sh, sw, dh, dw) < 1 or ph < 0 or pw < 0:
        return None
    tables = _requant_tables(bias, m0, shift, output_zero_point, act_min, act_max, rounding)
    if tables is None or tables[0].size not in (1, oc):
        return None
    b, m, s = (np.ascontiguousarray(np.broadcast_to(t, (oc,)), np.int32) for t in tables)
    kh, kw = w.shape[:2]
    filt = np.ascontiguousarray(w, np.int8)
    block_rows = max(1, DEPTHWISE_BLOCK // (ow * oc))
    fixed = (kh, kw, sh, sw, dh, dw, ph, pw, -int(input_zero_point), int(output_zero_point), int(act_min),
             int(act_max))
    f = _functions(rounding)["depthwise"]

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.int8)
        if x.ndim != 4 or x.shape[1:] != (ih, iw, ic):
            raise ValueError(f"native depthwise: input shape {x.shape}, expected [N, {ih}, {iw}, {ic}]")
        n = x.shape[0]
        out = np.empty((n, oh, ow, oc), np.int8)
        if n == 0:
            return out
        rows = min(block_rows, n * oh)
        scratch = np.empty(rows * ow * oc, np.int32)
        f(n, ih, iw, ic, oh, ow, dm, *fixed, x.ctypes.data, filt.ctypes.data, b.ctypes.data, m.ctypes.data,
          s.ctypes.data, out.ctypes.data, scratch.ctypes.data, rows)
        return out
    run.tables = (filt, b, m, s)
    return run
