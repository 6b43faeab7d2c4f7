"""Input files -> the integer arrays a model's input tensors expect.

Formats (by file extension):

* ``.csv``: comma-separated integers, one line per input, or TFLM's golden
  ``<stem>_input<K>_<type>.csv`` files (:func:`read_csv_inputs`).
* ``.npy``: one array (single-input models).  ``.npz``: one array per input,
  looked up by tensor name, else taken in graph input order (arr_0, arr_1...).
* ``.png``, ``.bmp``, ``.jpg``/``.jpeg``: decoded by Pillow (8-bit gray, RGB,
  RGBA, palette; 16-bit and float images are refused).

Hostile files: sizes are checked before anything is allocated.  An image's
dimensions are read from its header and refused when they exceed Pillow's
decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) or, for ``qsim run``,
differ from the input's; an ``.npz`` member's uncompressed size is read from the
zip directory and its array header (shape, dtype) before its data is
decompressed, and refused when it is larger than the model's inputs could use
(:data:`BYTES_PER_VALUE_MAX` bytes per input value).  Every unreadable file is a
QsimError naming it.

Integer arrays must already be quantized (same dtype as the tensor, or any
integer dtype whose values all fit).  ``float_input=True`` quantizes
real-valued data with the tensor's own scale and zero point
(:func:`qsim.fixedpoint.quantize_affine`, TFLite's rule):
``q = clamp(round_half_away(x / scale) + zero_point)``; data outside the
representable range ``[scale*(qmin-zp), scale*(qmax-zp)]`` (including +-inf)
saturates to qmin/qmax in its own direction and a warning says how many values
did; NaN is an error.

Image convention (``image_mode="shift"``, the default): the image's 8-bit
pixels p (0..255) fill the input's integer range in order: int8 inputs get
``q = p - 128``, uint8 inputs ``q = p``.  The model's input quantization then
defines what the pixel means, e.g. person_detect (scale 2/255, zp -1):
real = (p - 127) * 2/255, about [-1, 1]; vww_96_int8 (scale 1/255, zp -128):
real = p / 255 in [0, 1].

``image_mode="raw"``: the stored bytes are reinterpreted as int8 (two's
complement, q = p for p < 128, p - 256 otherwise), no channel conversion
(palette images give their palette indices).
This is what TFLite Micro's person_detection test does with its BMPs (PIL's
``Image.tobytes()`` memcpy'd into the int8 input), and it is what
../shared/models/person.bmp needs: that file stores int8 pixel values as raw
bytes (its neighbouring pixels differ by 9 on average read as int8, 13 read
as uint8), so only "raw" gives TFLM's own person / no-person answers.
:func:`load_inputs` warns when an image's bytes look stored in the other encoding than
``image_mode`` assumes (:func:`image_mode_warning`: photographs are smooth in their own encoding).
Channels: a 1-channel input gets the luminance (0.299 R + 0.587 G + 0.114 B,
rounded) of a color image; a 3-channel input gets gray images replicated.
Layout: [1, H, W, C] (NHWC), [1, C, H, W] (NCHW) or [1, H, W], see :func:`input_layout`.
``qsim run`` never resizes: the height and width must match the input
(``qsim.data`` center-crops and resizes, through :func:`read_image`).
"""
from __future__ import annotations

import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import fixedpoint as fp
from . import ir
from .interpreter import conform_shape
from .errors import QsimError

IMAGE_EXTS = (".bmp", ".png", ".jpg", ".jpeg")
PIL_FORMATS = ("PNG", "JPEG", "BMP")  # the only decoders Pillow may use on a user's file
BYTES_PER_VALUE_MAX = 8  # widest dtype an input array may use per value (float64 / int64)


@dataclass
class LoadedInputs:
    arrays: list[np.ndarray]  # graph input order, dtype/shape of each input tensor
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ public entry points

IMAGE_MODES = ("shift", "raw")


def load_inputs(path: str | Path, g: ir.Graph, float_input: bool = False,
                image_mode: str = "shift") -> LoadedInputs:
    """Read ``path`` and convert it to the graph's input tensors (see module doc)."""
    p = Path(path)
    if not p.is_file():
        raise QsimError(f"input file not found: {p}")
    ext = p.suffix.lower()
    if ext in IMAGE_EXTS:
        if float_input:
            raise QsimError(f"--float-input applies to .npy/.npz real-valued data, not to images ({p.name}); "
                            "images are mapped pixel -> integer directly (int8: q = pixel - 128).")
        if len(g.inputs) != 1:
            raise QsimError(f"{p.name} is an image but the model has {len(g.inputs)} inputs; "
                            "use an .npz with one array per input.")
        if image_mode not in IMAGE_MODES:
            raise QsimError(f"unknown image mode '{image_mode}'; choose one of: {', '.join(IMAGE_MODES)}")
        t = g.tensors[g.inputs[0]]
        hwc = input_layout(t)[1]
        img = read_image(p, image_mode, size=hwc[:2] if hwc else None)
        warn = image_mode_warning(img, image_mode, p.name)
        return LoadedInputs([image_to_input(img, t, p.name, image_mode)], [warn] if warn else [])
    budget = max(g.tensors[t].size for t in g.inputs) * BYTES_PER_VALUE_MAX if g.inputs else 0
    if ext == ".npy":
        raw = [_np_load(p, budget)]
        if len(g.inputs) != 1:
            raise QsimError(f"{p.name} holds one array but the model has {len(g.inputs)} inputs "
                            f"({', '.join(repr(g.tensors[t].name) for t in g.inputs)}); use an .npz.")
    elif ext == ".npz":
        raw = _npz_arrays(p, g, budget)
    elif ext == ".csv":
        raw = read_csv_inputs(p, g)
    else:
        raise QsimError(f"unsupported input file type '{ext or p.name}': use .npy, .npz, .csv, .png, .bmp or .jpg.")
    out = LoadedInputs([])
    for t_idx, a in zip(g.inputs, raw):
        t = g.tensors[t_idx]
        guard = range_guard(a, t, float_input)
        if guard:
            out.warnings.append(guard)
        if float_input:
            q, warn = quantize_real(a, t)
            if warn:
                out.warnings.append(warn)
            out.arrays.append(q)
        else:
            out.arrays.append(coerce_integer(a, t))
    return out


_CSV_INPUT_NAME = re.compile(r"^(?P<stem>.*)_input(?P<k>\d+)_(?P<type>[a-z0-9]+)\.csv$")
_CSV_MAX_BYTES = 1 << 28


def _csv_lines(p: Path) -> list[str]:
    if p.stat().st_size > _CSV_MAX_BYTES:
        raise QsimError(f"{p.name} is {p.stat().st_size:,} bytes, more than the {_CSV_MAX_BYTES:,} a CSV input may have.")
    try:
        text = p.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise QsimError(f"cannot read {p.name} as a comma-separated text file: {e}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _csv_values(line: str, where: str) -> np.ndarray:
    try:
        return np.array([int(v) for v in line.split(",") if v.strip() != ""], dtype=np.int64)
    except ValueError:
        raise QsimError(f"{where}: the CSV holds a value that is not an integer; CSV inputs are quantized "
                        "integers, comma-separated (TFLite Micro's golden-input format).") from None


def read_csv_inputs(p: Path, g: ir.Graph) -> list[np.ndarray]:
    """Integer inputs from comma-separated text (TFLite Micro's golden files), in graph input order.

    Two layouts: one line per graph input in one file; or TFLM's ``<stem>_input<K>_<type>.csv``,
    one line holding input K's values in row-major order, where naming any one of the files reads
    every ``<stem>_input<K>_*.csv`` (K = 0 .. inputs-1) beside it.  The ``<type>`` part
    (``int16``, ``int32``...) must name the input tensor's element type.  Values go through
    :func:`coerce_integer` (range and shape checks) afterwards.
    """
    lines = _csv_lines(p)
    n = len(g.inputs)
    m = _CSV_INPUT_NAME.match(p.name)
    if m is None or (len(lines) == n and n > 1):
        if len(lines) != n:
            raise QsimError(f"{p.name} has {len(lines)} non-empty line(s) but the model has {n} input(s); a CSV "
                            "input holds one line of comma-separated values per input tensor (or name TFLM's "
                            "'<stem>_input<K>_<type>.csv' files, one per input).")
        return [_csv_values(ln, f"{p.name} line {k + 1}") for k, ln in enumerate(lines)]
    arrays = []
    for k, t_idx in enumerate(g.inputs):
        t = g.tensors[t_idx]
        want = np.dtype(t.dtype).name
        f = p.with_name(f"{m['stem']}_input{k}_{want}.csv")
        if not f.is_file():
            others = sorted(x.name for x in p.parent.glob(f"{m['stem']}_input{k}_*.csv"))
            raise QsimError(f"input {k} '{t.name}' is {want}: expected its values in {f.name} beside {p.name}"
                            + (f", found {', '.join(others)} (another element type)" if others else "") + ".")
        fl = _csv_lines(f)
        if len(fl) != 1:
            raise QsimError(f"{f.name} has {len(fl)} non-empty lines; TFLM's input files hold one line.")
        arrays.append(_csv_values(fl[0], f.name))
    return arrays


def random_inputs(g: ir.Graph, n: int, seed: int = 0) -> list[list[np.ndarray]]:
    """``n`` input sets, uniform over each input dtype's full range, from ``np.random.default_rng(seed)``.

    Exception: a graph input that is a TRANSPOSE_CONV's ``output_shape`` operand (SEANet's layer
    models feed it from outside) gets the shape the model stores for that op's output, the only
    value the op accepts."""
    rng = np.random.default_rng(seed)
    shapes = {op.inputs[0]: np.asarray(g.tensors[op.outputs[0]].shape, np.int64)
              for op in g.operators if op.opcode == "TRANSPOSE_CONV" and op.inputs and op.outputs}
    sets = []
    for _ in range(n):
        one = []
        for t_idx in g.inputs:
            t = g.tensors[t_idx]
            if t_idx in shapes and np.issubdtype(t.dtype, np.integer) and t.size == shapes[t_idx].size:
                one.append(shapes[t_idx].reshape(t.shape).astype(t.dtype))
            elif np.issubdtype(t.dtype, np.integer):
                info = np.iinfo(t.dtype)
                one.append(rng.integers(info.min, int(info.max) + 1, size=t.shape, dtype=np.int64).astype(t.dtype))
            elif np.issubdtype(t.dtype, np.floating):
                one.append(rng.uniform(-1.0, 1.0, size=t.shape).astype(t.dtype))
            elif t.dtype == np.bool_:
                one.append(rng.integers(0, 2, size=t.shape).astype(np.bool_))
            else:
                raise QsimError(f"cannot make random data for input '{t.name}' of type {t.dtype}.")
        sets.append(one)
    return sets


# ------------------------------------------------------------------ conversions

def representable_range(t: ir.Tensor) -> tuple[float, float]:
    """Real range [scale*(qmin-zp), scale*(qmax-zp)] of a per-tensor quantized integer tensor."""
    info = np.iinfo(t.dtype)
    s, zp = t.quant.scale0, t.quant.zp0
    return s * (int(info.min) - zp), s * (int(info.max) - zp)


def range_guard(x: np.ndarray, t: ir.Tensor, as_real: bool) -> str | None:
    """A warning when data ``x`` do not fit the quantization of input ``t``, else None.

    ``as_real``: the data are read as real values (quantized with t's scale and zero point); else
    they are used as already-quantized integers.  Caught: 0..255 pixels fed to an input calibrated
    for a much smaller range (e.g. [0, 1]); already-quantized integers read as real values; uint8
    data for an int8 input; real values cast to integers unquantized (only -1..1 used while the
    zero point lies outside).  The warning states the fix with the model's own scale and zero point
    (real = scale * (q - zero_point))."""
    a = np.asarray(x)
    if (a.size == 0 or t.quant is None or t.quant.per_channel or not np.issubdtype(t.dtype, np.integer)
            or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating))):
        return None
    s, zp = float(t.quant.scale0), int(t.quant.zp0)
    info = np.iinfo(t.dtype)
    lo, hi = representable_range(t)
    rule = f"real = {s:.6g} * (q - ({zp}))"
    where = f"input '{t.name}' ({t.dtype}, scale {s:.6g}, zero point {zp}, represents [{lo:.6g}, {hi:.6g}])"
    if not as_real:
        if a.dtype == np.uint8 and t.dtype == np.int8:
            return (f"{where} is fed uint8 data used as already-quantized int8 values. If they are 0..255 "
                    f"pixels, convert them: int8 q = p - 128 (then {rule}), or give p / 255 as real values "
                    "(.npy float32) so qsim quantizes them with the input's scale and zero point.")
        amin, amax = int(a.min()), int(a.max())
        if amin >= -1 and amax <= 1 and a.size >= 16 and not (amin <= zp <= amax):
            return (f"{where} is fed integers that only take values in [{amin}, {amax}], i.e. at most 3 of "
                    f"{int(info.max) - int(info.min) + 1} levels: they look like real values cast to integers "
                    f"without quantization. Quantize real values x first: q = round(x / {s:.6g}) + ({zp}), or "
                    "give the real values as float32 so qsim quantizes them (--float-input for run).")
        return None
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        return None
    amin, amax = float(a.min()), float(a.max())
    if amin >= lo - s and amax <= hi + s:
        return None
    span = f"the data span [{amin:.6g}, {amax:.6g}]"
    integral = bool(np.all(a == np.round(a)))
    if integral and amin >= info.min and amax <= info.max and amin < 0:
        return (f"{where} is fed real values, but {span} in integers: the data look already quantized. "
                f"Store them as {t.dtype} (they are then used as they are), or dequantize first: {rule}.")
    if amin >= 0 and 1.5 * max(hi, 0) < amax <= 255:
        return (f"{where} is fed real values, but {span}: they look like 0..255 pixels, which saturate. "
                f"Scale them into [{lo:.6g}, {hi:.6g}] first, e.g. real = {lo:.6g} + p * {(hi - lo) / 255:.6g}"
                f" (p / 255 for [0, 1]); if they are already quantized {t.dtype} values, store them as "
                f"{t.dtype} or dequantize: {rule}.")
    if amax - amin > 2 * (hi - lo):
        return (f"{where} is fed real values, but {span}, more than twice the representable range: check "
                f"the data's units (the input was calibrated for [{lo:.6g}, {hi:.6g}]; {rule}).")
    return None


def quantize_real(x: np.ndarray, t: ir.Tensor) -> tuple[np.ndarray, str | None]:
    """Real values -> t's integer type, TFLite's QUANTIZE rule (round half away from zero, saturate).

    Returns (array, warning or None); the warning counts the values outside the representable range,
    which saturate to the type's min/max in their own direction.  NaN is a QsimError.
    """
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise QsimError(f"--float-input data for '{t.name}' must be numeric, got {a.dtype}.")
    q, n_hi, n_lo = quantize_values(conform_shape(a, t), t)
    warn = None
    if n_hi or n_lo:
        a = a.astype(np.float64)
        lo, hi = representable_range(t)
        info = np.iinfo(t.dtype)
        warn = (f"input '{t.name}': {n_hi + n_lo} of {a.size} values lie outside the range the model's input "
                f"quantization can represent, [{lo:.6g}, {hi:.6g}] (scale {t.quant.scale0:.6g}, zero point "
                f"{t.quant.zp0}); the data spans [{a.min():.6g}, {a.max():.6g}]. They were saturated "
                f"({n_hi} to {int(info.max)}, {n_lo} to {int(info.min)}), so the result may not be meaningful: "
                "check that the data uses the units the model was trained on.")
    return q, warn


def quantize_values(x: np.ndarray, t: ir.Tensor) -> tuple[np.ndarray, int, int]:
    """Real values (any shape) -> t's integer dtype with t's per-tensor scale and zero point
    (:func:`qsim.fixedpoint.quantize_affine`).  Returns (q, n_above, n_below): how many values lay
    above / below the representable range and saturated.  NaN is a QsimError."""
    if t.quant is None or not np.issubdtype(t.dtype, np.integer):
        raise QsimError(f"real-valued data needs a quantized integer input, but '{t.name}' is {t.dtype} "
                        "without quantization parameters.")
    if t.quant.per_channel:
        raise QsimError(f"input '{t.name}' is quantized per channel; real-valued data can only be quantized for "
                        "per-tensor inputs.")
    a = np.asarray(x, np.float64)
    n_nan = int(np.count_nonzero(np.isnan(a)))
    if n_nan:
        raise QsimError(f"the real-valued data for '{t.name}' contains {n_nan} NaN value(s) of {a.size}; NaN has "
                        "no quantized value: fix or drop those samples first.")
    info = np.iinfo(t.dtype)
    lo, hi = representable_range(t)
    q = fp.quantize_affine(a, t.quant.scale0, t.quant.zp0, int(info.min), int(info.max)).astype(t.dtype)
    return q, int(np.count_nonzero(a > hi)), int(np.count_nonzero(a < lo))


def coerce_integer(a: np.ndarray, t: ir.Tensor) -> np.ndarray:
    """An already-quantized array -> t's dtype and shape, refusing lossy conversions."""
    return conform_shape(coerce_dtype(a, t), t)


def coerce_dtype(a: np.ndarray, t: ir.Tensor) -> np.ndarray:
    """An already-quantized array (any shape) -> t's dtype: another integer dtype whose values all
    fit is cast; real-valued or out-of-range data is refused."""
    a = np.asarray(a)
    if a.dtype != t.dtype:
        if np.issubdtype(a.dtype, np.floating):
            hint = ""
            if t.quant is not None:
                hint = (f" It looks real-valued: pass --float-input to quantize it with the model's input "
                        f"scale {t.quant.scale0:.6g} and zero point {t.quant.zp0}.")
            raise QsimError(f"input '{t.name}' must be {t.dtype}, got {a.dtype} data.{hint}")
        if not np.issubdtype(a.dtype, np.integer) or not np.issubdtype(t.dtype, np.integer):
            raise QsimError(f"input '{t.name}' must be {t.dtype}, got {a.dtype} data.")
        info = np.iinfo(t.dtype)
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise QsimError(f"input '{t.name}' must be {t.dtype} (range [{info.min}, {info.max}]); the "
                            f"{a.dtype} data spans [{a.min()}, {a.max()}] and does not fit.")
        a = a.astype(t.dtype)
    return a


def image_to_input(img: np.ndarray, t: ir.Tensor, what: str = "image", mode: str = "shift") -> np.ndarray:
    """uint8 [H, W, C] pixels -> an int8/uint8 input in t's layout (NHWC, NCHW or NHW: see
    :func:`input_layout`), by the conventions "shift"/"raw" in the module doc."""
    if t.dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
        raise QsimError(f"{what}: image files feed int8/uint8 inputs, but '{t.name}' is {t.dtype}; "
                        "give an .npy instead.")
    layout, hwc, note = input_layout(t)
    if layout is None:
        raise QsimError(f"{what}: image files feed [1, H, W, C] or [1, C, H, W] inputs, but {note}; "
                        "give an .npy instead.")
    h, w, c = hwc
    if img.shape[:2] != (h, w):
        raise QsimError(f"{what} is {img.shape[1]}x{img.shape[0]} pixels but input '{t.name}' expects "
                        f"{w}x{h}; qsim does not resize images: resize it first.")
    if mode == "raw":
        if img.shape[2] != c:
            raise QsimError(f"{what} has {img.shape[2]} channels but input '{t.name}' expects {c}; "
                            "raw image mode does no channel conversion.")
        q = np.ascontiguousarray(img).view(t.dtype)
    else:
        img = match_channels(img, c, what)
        q = (img.astype(np.int16) - 128).astype(np.int8) if t.dtype == np.int8 else img.astype(np.uint8)
    return to_layout(q, layout)[None].copy()


def input_layout(t: ir.Tensor) -> tuple[str | None, tuple[int, int, int] | None, str]:
    """(layout, (H, W, C), note) of an image-shaped input: "NHWC" for [1, H, W, C], "NCHW" for
    [1, C, H, W] (C = 1 or 3 decides; both or neither -> NHWC, TFLite's convention), "NHW" for
    [1, H, W] (gray); (None, None, reason) when the input cannot take an image."""
    s = tuple(t.shape)
    if len(s) == 3 and s[0] == 1:
        return "NHW", (s[1], s[2], 1), f"input '{t.name}' {list(s)} read as NHW (one gray channel)"
    if len(s) != 4 or s[0] != 1:
        return None, None, f"input '{t.name}' has shape {list(s)}, not [1, H, W, C] or [1, C, H, W]"
    last, second = s[3] in (1, 3), s[1] in (1, 3)
    if second and not last:
        return "NCHW", (s[2], s[3], s[1]), f"input '{t.name}' {list(s)} read as NCHW [1, C, H, W] (C = {s[1]})"
    why = "ambiguous, TFLite's convention" if second else f"C = {s[3]}"
    return "NHWC", (s[1], s[2], s[3]), f"input '{t.name}' {list(s)} read as NHWC [1, H, W, C] ({why})"


def to_layout(hwc: np.ndarray, layout: str) -> np.ndarray:
    """[H, W, C] -> [C, H, W] for "NCHW", [H, W] for "NHW", unchanged for "NHWC"."""
    if layout == "NCHW":
        return hwc.transpose(2, 0, 1)
    return hwc[:, :, 0] if layout == "NHW" else hwc


def match_channels(img: np.ndarray, c: int, what: str = "image") -> np.ndarray:
    """uint8 [H, W, C'] pixels -> [H, W, c]: alpha dropped, color -> luminance
    (0.299 R + 0.587 G + 0.114 B, rounded half up) for c = 1, gray replicated for c = 3."""
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if c == 1 and img.shape[2] == 3:
        lum = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.floor(lum + 0.5).clip(0, 255).astype(np.uint8)[:, :, None]
    if c == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] != c:
        raise QsimError(f"{what} has {img.shape[2]} channels but the model's input expects {c}.")
    return img


def neighbour_roughness(img: np.ndarray) -> tuple[float, float]:
    """Mean |difference| of vertically and horizontally adjacent pixels, with the bytes read
    as uint8 and as int8.  Photographs are smooth in the encoding they were stored in: a
    uint8 image read as int8 jumps by ~256 wherever it crosses 127/128, an int8 one read as
    uint8 wherever it crosses -1/0."""
    u = img.astype(np.int16)
    s = np.ascontiguousarray(img).view(np.int8).astype(np.int16)

    def rough(a: np.ndarray) -> float:
        return float(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()) / 2

    return rough(u), rough(s)


# the other reading must be this much smoother before the chosen image mode is called into doubt
IMAGE_MODE_RATIO = 0.8


def image_mode_warning(img: np.ndarray, mode: str, what: str = "image") -> str | None:
    """A warning when the pixels look stored in the other encoding than ``mode`` assumes, else None.

    Measured: ../shared/models/person.bmp (int8 values stored as bytes) is rougher read as
    uint8 (13.3) than as int8 (9.6); no_person.bmp (ordinary pixels) the other way round
    (14.4 vs 35.6).  Images too small to judge (< 4x4) get no warning.
    """
    if img.ndim != 3 or img.shape[0] < 4 or img.shape[1] < 4:
        return None
    as_uint8, as_int8 = neighbour_roughness(img)
    if mode == "shift" and as_int8 < IMAGE_MODE_RATIO * as_uint8:
        return (f"{what}: its bytes look like int8 values stored raw (adjacent pixels differ by {as_int8:.1f} "
                f"on average read as int8, {as_uint8:.1f} read as uint8), but --image-mode shift treats them "
                "as 0..255 pixels; if the file was written from int8 data (as TFLite Micro's person.bmp is), "
                "pass --image-mode raw.")
    if mode == "raw" and as_uint8 < IMAGE_MODE_RATIO * as_int8:
        return (f"{what}: its bytes look like ordinary 0..255 pixels (adjacent pixels differ by {as_uint8:.1f} "
                f"on average read as uint8, {as_int8:.1f} read as int8), but --image-mode raw reinterprets "
                "them as int8; unless the file stores int8 data, use --image-mode shift (the default).")
    return None


# ------------------------------------------------------------------ file readers

def read_image(path: str | Path, mode: str = "shift", size: tuple[int, int] | None = None,
               resize: bool = False) -> np.ndarray:
    """PNG / JPEG / BMP -> uint8 [H, W, C] pixels, top row first, decoded by Pillow.

    ``mode="shift"``: C is 1 for gray images (and palette images whose colors are all gray),
    3 for color (alpha dropped).  ``mode="raw"``: the stored bytes as Pillow holds them (palette
    indices for palette images), no conversion.  ``size=(H, W)``: the size wanted; with
    ``resize=False`` another size is refused from the header, before decoding; with
    ``resize=True`` the image is center-cropped to the wanted aspect ratio, then resized
    (bilinear).  Dimensions beyond Pillow's decompression-bomb limit are refused before decoding.
    """
    from PIL import Image, ImageOps

    p = Path(path)
    bad = f"{p.name} is not a readable PNG/JPEG/BMP image"
    limit = Image.MAX_IMAGE_PIXELS or 89478485
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(p, formats=PIL_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise QsimError(f"{p.name}: its header claims more pixels than the decompression-bomb limit "
                        f"({limit} pixels); refusing to decode it.") from None
    except Exception as e:  # Pillow's own errors (UnidentifiedImageError, SyntaxError, struct.error...)
        raise QsimError(f"{bad}: {e}") from None
    with im:
        w, h = im.size
        if w <= 0 or h <= 0 or w * h > limit:
            raise QsimError(f"{p.name}: its header claims {w}x{h} pixels, beyond the decompression-bomb limit "
                            f"of {limit} pixels; refusing to decode it.")
        if size is not None and not resize and (h, w) != tuple(size):
            raise QsimError(f"{p.name} is {w}x{h} pixels but the model's input expects {size[1]}x{size[0]}; "
                            "qsim run does not resize images: resize it first (qsim eval / qsim.data do).")
        if im.mode not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
            raise QsimError(f"{bad}: pixel mode {im.mode} (16-bit or float samples) is not supported; "
                            "save it as an 8-bit gray or RGB image.")
        try:
            im.load()
            if im.mode in ("P", "PA"):
                _check_palette(im, bad)
            if mode == "raw":
                if im.mode not in ("L", "P", "RGB", "RGBA"):
                    raise QsimError(f"{p.name}: raw image mode needs 8-bit L, P, RGB or RGBA pixels, not {im.mode}.")
                out = im
            elif im.mode in ("1", "L", "LA"):
                out = im.convert("L")
            else:
                out = im.convert("RGB")
            if size is not None and out.size != (size[1], size[0]):
                if mode == "raw":
                    raise QsimError(f"{p.name} is {w}x{h} pixels but {size[1]}x{size[0]} are needed; raw image "
                                    "mode stores int8 values as bytes, which cannot be resized: resize it first.")
                out = ImageOps.fit(out, (size[1], size[0]), method=Image.Resampling.BILINEAR)
            a = np.asarray(out, dtype=np.uint8)
        except QsimError:
            raise
        except Exception as e:  # truncated or corrupt pixel data
            raise QsimError(f"{bad}: its pixel data is corrupt or truncated ({e}).") from None
    if a.ndim == 2:
        a = a[:, :, None]
    if mode != "raw" and im.mode in ("P", "PA") and np.all(a[..., :1] == a):
        a = a[..., :1]  # gray palette
    return np.ascontiguousarray(a)


def _check_palette(im, bad: str) -> None:
    """A palette image must have whole palette entries and no index beyond them (Pillow would
    silently map such pixels to black; the PNG and BMP specs make them errors)."""
    pal = im.palette
    raw = bytes(pal.palette) if pal is not None else b""
    width = len(pal.mode) if pal is not None else 3
    n = len(raw) // width
    if n == 0 or len(raw) % width:
        raise QsimError(f"{bad}: its palette holds {len(raw)} bytes, not a whole number of {width}-byte colors.")
    top = int(np.asarray(im.getchannel(0) if im.mode == "PA" else im).max(initial=0))
    if top >= n:
        raise QsimError(f"{bad}: a pixel refers to palette entry {top} of {n}.")


def _check_budget(what: str, nbytes: int, budget: int) -> None:
    if nbytes > budget:
        raise QsimError(f"{what} would need {nbytes} bytes ({nbytes / 2**20:.1f} MiB) but the model's inputs "
                        f"hold at most {budget // BYTES_PER_VALUE_MAX} values ({budget} bytes as float64); "
                        "refusing to read it.")


def _np_load(p: Path, budget: int | None = None) -> np.ndarray:
    """One .npy array; memory-mapped first, so a header claiming a huge shape allocates nothing."""
    try:
        a = np.load(p, allow_pickle=False, mmap_mode="r")
    except Exception as e:
        raise QsimError(f"cannot read {p.name} as a NumPy .npy file: {e}") from None
    if not isinstance(a, np.ndarray):
        raise QsimError(f"{p.name} is not a single .npy array (it looks like an .npz archive).")
    if budget is not None:
        _check_budget(p.name, a.nbytes, budget)
    return np.array(a)


@dataclass
class NpzMember:
    """One ``.npy`` array inside an ``.npz``, known from the zip directory and its header only."""

    key: str  # array name (member name without ".npy")
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    header_bytes: int  # offset of the data in the uncompressed member

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize


def npz_members(p: Path) -> dict[str, NpzMember]:
    """An .npz's arrays, in archive order, from the zip directory and each member's .npy header
    (only the first bytes of each member are decompressed).  A member whose header claims more
    data than the zip directory says it holds is refused."""
    try:
        zf = zipfile.ZipFile(p)
    except Exception as e:
        raise QsimError(f"cannot read {p.name} as a NumPy .npz archive: {e}") from None
    out = {}
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[:-4]
            try:
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read_header(f)
                    header = f.tell()
            except Exception as e:
                raise QsimError(f"cannot read {p.name} as a NumPy .npz archive: member '{info.filename}': {e}") from None
            if dtype.hasobject:
                raise QsimError(f"{p.name}: array '{key}' holds Python objects (pickles); qsim reads numeric "
                                "arrays only.")
            if any(int(d) < 0 for d in shape):
                raise QsimError(f"{p.name}: array '{key}' claims the negative shape {list(shape)}: the archive is corrupt.")
            m = NpzMember(key, info, tuple(int(d) for d in shape), dtype, bool(fortran), header)
            if header + m.nbytes > info.file_size:
                raise QsimError(f"{p.name}: array '{key}' claims shape {list(m.shape)} {dtype} ({m.nbytes} bytes) "
                                f"but its member holds {info.file_size} bytes: the archive is corrupt.")
            out[key] = m
    if not out:
        raise QsimError(f"{p.name} holds no .npy arrays.")
    return out


def read_npz_member(p: Path, m: NpzMember, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows [start, stop) along axis 0 of an .npz member (all of it by default), decompressing only
    up to the last row read.  Checked against the header, so it never allocates more than
    ``(stop - start)`` rows."""
    with NpzRows(p, m) as rows:
        return rows.read(start, stop)


class NpzRows:
    """Reads an .npz member's rows in order, keeping the decompressor open between calls, so
    reading a large member batch by batch decompresses it once (a read that goes backwards
    starts again from the beginning).  Use as a context manager or call :meth:`close`."""

    def __init__(self, p: Path, m: NpzMember):
        self.p, self.m = p, m
        self.n = m.shape[0] if m.shape else 1
        self.row = m.nbytes // self.n if self.n else 0
        self._zf = self._f = None
        self._pos = 0  # next row the open stream will deliver

    def __enter__(self) -> "NpzRows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for h in (self._f, self._zf):
            if h is not None:
                h.close()
        self._zf = self._f = None

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        m, p = self.m, self.p
        stop = self.n if stop is None else min(stop, self.n)
        count = max(stop - start, 0)
        try:
            if self._f is None or start < self._pos:
                self.close()
                self._zf = zipfile.ZipFile(p)
                self._f = self._zf.open(m.info)
                self._pos = 0
                if m.fortran_order or not m.shape:  # not row-contiguous: read it whole (size checked)
                    a = np.lib.format.read_array(self._f, allow_pickle=False)
                    self.close()
                    return a[start:stop] if m.shape else a
                self._f.seek(m.header_bytes)
            if start > self._pos:
                self._f.seek((start - self._pos) * self.row, 1)
            buf = np.empty(count * self.row, np.uint8)
            got = self._f.readinto(memoryview(buf))
            self._pos = stop
        except QsimError:
            raise
        except Exception as e:
            self.close()
            raise QsimError(f"cannot read array '{m.key}' of {p.name}: {e}") from None
        if got != buf.size:
            self.close()
            raise QsimError(f"{p.name}: array '{m.key}' is truncated.")
        if stop >= self.n:
            self.close()
        return buf.view(m.dtype).reshape((count,) + m.shape[1:])


def _npz_arrays(p: Path, g: ir.Graph, budget: int) -> list[np.ndarray]:
    members = npz_members(p)
    for m in members.values():
        _check_budget(f"array '{m.key}' of {p.name} (uncompressed size {m.info.file_size} bytes)",
                      max(m.nbytes, m.info.file_size - m.header_bytes), budget)
    names = [g.tensors[t].name for t in g.inputs]
    if all(n in members for n in names):
        return [read_npz_member(p, members[n]) for n in names]
    if len(members) != len(names):
        raise QsimError(f"{p.name} holds {len(members)} array(s) ({', '.join(members) or 'none'}) but the model "
                        f"has {len(names)} input(s) ({', '.join(repr(n) for n in names)}); name the arrays "
                        "after the inputs or give them in input order.")
    return [read_npz_member(p, m) for m in members.values()]
