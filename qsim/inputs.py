"""Input files -> the integer arrays a model's input tensors expect.

Formats (by file extension):

* ``.npy``: one array (single-input models).  ``.npz``: one array per input,
  looked up by tensor name, else taken in graph input order (arr_0, arr_1...).
* ``.bmp`` (8-bit palette/grayscale or 24/32-bit uncompressed, read with numpy
  only) and ``.png`` (8-bit gray/RGB/RGBA/palette, non-interlaced, decoded
  with zlib).

Integer arrays must already be quantized (same dtype as the tensor, or any
integer dtype whose values all fit).  ``float_input=True`` quantizes
real-valued data with the tensor's own scale and zero point:
``q = clamp(round_half_away(x / scale) + zero_point)``; data outside the
representable range ``[scale*(qmin-zp), scale*(qmax-zp)]`` is clamped and a
warning says so.

Image convention (``image_mode="shift"``, the default): the image's 8-bit
pixels p (0..255) fill the input's integer range in order: int8 inputs get
``q = p - 128``, uint8 inputs ``q = p``.  The model's input quantization then
defines what the pixel means, e.g. person_detect (scale 2/255, zp -1):
real = (p - 127) * 2/255, about [-1, 1]; vww_96_int8 (scale 1/255, zp -128):
real = p / 255 in [0, 1].

``image_mode="raw"``: the stored bytes are reinterpreted as int8 (two's
complement, q = p for p < 128, p - 256 otherwise), no channel conversion.
This is what TFLite Micro's person_detection test does with its BMPs (PIL's
``Image.tobytes()`` memcpy'd into the int8 input), and it is what
../shared/models/person.bmp needs: that file stores int8 pixel values as raw
bytes (its neighbouring pixels differ by 9 on average read as int8, 13 read
as uint8), so only "raw" gives TFLM's own person / no-person answers.
:func:`load_inputs` warns when an image's bytes look stored in the other encoding than
``image_mode`` assumes (:func:`image_mode_warning`: photographs are smooth in their own encoding).
Channels: a 1-channel input gets the luminance (0.299 R + 0.587 G + 0.114 B,
rounded) of a color image; a 3-channel input gets gray images replicated.
Images are never resized: the height and width must match the input.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import fixedpoint as fp
from . import ir
from .interpreter import conform_shape
from .errors import QsimError

IMAGE_EXTS = (".bmp", ".png")


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
        img = read_bmp(p) if ext == ".bmp" else read_png(p)
        warn = image_mode_warning(img, image_mode, p.name)
        return LoadedInputs([image_to_input(img, g.tensors[g.inputs[0]], p.name, image_mode)], [warn] if warn else [])
    if ext == ".npy":
        raw = [_np_load(p)]
        if len(g.inputs) != 1:
            raise QsimError(f"{p.name} holds one array but the model has {len(g.inputs)} inputs "
                            f"({', '.join(repr(g.tensors[t].name) for t in g.inputs)}); use an .npz.")
    elif ext == ".npz":
        raw = _npz_arrays(p, g)
    else:
        raise QsimError(f"unsupported input file type '{ext or p.name}': use .npy, .npz, .bmp or .png.")
    out = LoadedInputs([])
    for t_idx, a in zip(g.inputs, raw):
        t = g.tensors[t_idx]
        if float_input:
            q, warn = quantize_real(a, t)
            if warn:
                out.warnings.append(warn)
            out.arrays.append(q)
        else:
            out.arrays.append(coerce_integer(a, t))
    return out


def random_inputs(g: ir.Graph, n: int, seed: int = 0) -> list[list[np.ndarray]]:
    """``n`` input sets, uniform over each input dtype's full range, from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(n):
        one = []
        for t_idx in g.inputs:
            t = g.tensors[t_idx]
            if np.issubdtype(t.dtype, np.integer):
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


def quantize_real(x: np.ndarray, t: ir.Tensor) -> tuple[np.ndarray, str | None]:
    """Real values -> t's integer type, TFLite's QUANTIZE rule (round half away from zero, clamp).

    Returns (array, warning or None); the warning reports data outside the representable range.
    """
    if t.quant is None or not np.issubdtype(t.dtype, np.integer):
        raise QsimError(f"--float-input needs a quantized integer input, but '{t.name}' is {t.dtype} "
                        "without quantization parameters.")
    if t.quant.per_channel:
        raise QsimError(f"input '{t.name}' is quantized per channel; --float-input supports per-tensor inputs.")
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise QsimError(f"--float-input data for '{t.name}' must be numeric, got {a.dtype}.")
    a = conform_shape(a.astype(np.float64), t)
    if not np.all(np.isfinite(a)):
        raise QsimError(f"--float-input data for '{t.name}' contains NaN or infinity.")
    info = np.iinfo(t.dtype)
    lo, hi = representable_range(t)
    warn = None
    n_out = int(np.count_nonzero((a < lo) | (a > hi)))
    if n_out:
        warn = (f"input '{t.name}': {n_out} of {a.size} values lie outside the range the model's input "
                f"quantization can represent, [{lo:.6g}, {hi:.6g}] (scale {t.quant.scale0:.6g}, zero point "
                f"{t.quant.zp0}); the data spans [{a.min():.6g}, {a.max():.6g}]. They were clamped, so the "
                "result may not be meaningful: check that the data uses the units the model was trained on.")
    q = fp.quantize_affine(a, t.quant.scale0, t.quant.zp0, int(info.min), int(info.max)).astype(t.dtype)
    return q, warn


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
    """uint8 [H, W, C] pixels -> an NHWC int8/uint8 input (conventions "shift"/"raw" in the module doc)."""
    if t.dtype not in (np.dtype(np.int8), np.dtype(np.uint8)):
        raise QsimError(f"{what}: image files feed int8/uint8 inputs, but '{t.name}' is {t.dtype}; "
                        "give an .npy instead.")
    if len(t.shape) != 4 or t.shape[0] != 1:
        raise QsimError(f"{what}: image files feed [1, H, W, C] inputs, but '{t.name}' has shape "
                        f"{list(t.shape)}; give an .npy instead.")
    _, h, w, c = t.shape
    if img.shape[:2] != (h, w):
        raise QsimError(f"{what} is {img.shape[1]}x{img.shape[0]} pixels but input '{t.name}' expects "
                        f"{w}x{h}; qsim does not resize images: resize it first.")
    if mode == "raw":
        if img.shape[2] != c:
            raise QsimError(f"{what} has {img.shape[2]} channels but input '{t.name}' expects {c}; "
                            "raw image mode does no channel conversion.")
        return np.ascontiguousarray(img).view(t.dtype)[None].copy()
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if c == 1 and img.shape[2] == 3:
        lum = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        img = np.floor(lum + 0.5).clip(0, 255).astype(np.uint8)[:, :, None]
    elif c == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] != c:
        raise QsimError(f"{what} has {img.shape[2]} channels but input '{t.name}' expects {c}.")
    if t.dtype == np.int8:
        return (img.astype(np.int16) - 128).astype(np.int8)[None]
    return img.astype(np.uint8)[None]


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

def _np_load(p: Path) -> np.ndarray:
    try:
        a = np.load(p, allow_pickle=False)
    except Exception as e:
        raise QsimError(f"cannot read {p.name} as a NumPy .npy file: {e}") from None
    if not isinstance(a, np.ndarray):
        raise QsimError(f"{p.name} is not a single .npy array (it looks like an .npz archive).")
    return a


def _npz_arrays(p: Path, g: ir.Graph) -> list[np.ndarray]:
    try:
        z = np.load(p, allow_pickle=False)
        arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise QsimError(f"cannot read {p.name} as a NumPy .npz archive: {e}") from None
    names = [g.tensors[t].name for t in g.inputs]
    if all(n in arrays for n in names):
        return [arrays[n] for n in names]
    if len(arrays) != len(names):
        raise QsimError(f"{p.name} holds {len(arrays)} array(s) ({', '.join(arrays) or 'none'}) but the model "
                        f"has {len(names)} input(s) ({', '.join(repr(n) for n in names)}); name the arrays "
                        "after the inputs or give them in input order.")
    return list(arrays.values())


def read_bmp(path: str | Path) -> np.ndarray:
    """Uncompressed BMP (1/4/8-bit palette, 24-bit BGR, 32-bit BGRX) -> uint8 [H, W, C], top row first.

    C is 1 when a palette image's palette is gray, else 3.
    """
    p = Path(path)
    data = p.read_bytes()
    bad = f"{p.name} is not a readable BMP file"
    if len(data) < 54 or data[:2] != b"BM":
        raise QsimError(f"{bad}: it does not start with the 'BM' signature.")
    pix_off, = struct.unpack_from("<I", data, 10)
    hdr_size, = struct.unpack_from("<I", data, 14)
    if hdr_size < 40:
        raise QsimError(f"{bad}: OS/2 BMP headers ({hdr_size} bytes) are not supported.")
    width, height, planes, bpp, compression = struct.unpack_from("<iiHHI", data, 18)
    colors_used, = struct.unpack_from("<I", data, 46)
    if compression not in (0, 3) or (compression == 3 and bpp not in (32,)):
        raise QsimError(f"{bad}: compressed BMPs (compression={compression}) are not supported; "
                        "save it uncompressed.")
    if bpp not in (1, 4, 8, 24, 32) or width <= 0 or height == 0:
        raise QsimError(f"{bad}: {bpp} bits per pixel, {width}x{height} is not supported.")
    top_down = height < 0
    h, w = abs(height), width
    row = ((bpp * w + 31) // 32) * 4
    if pix_off + row * h > len(data):
        raise QsimError(f"{bad}: the pixel data is truncated ({len(data)} bytes, need {pix_off + row * h}).")
    rows = np.frombuffer(data, np.uint8, count=row * h, offset=pix_off).reshape(h, row)
    if not top_down:
        rows = rows[::-1]
    if bpp == 24:
        return rows[:, :w * 3].reshape(h, w, 3)[:, :, ::-1].copy()
    if bpp == 32:
        return rows[:, :w * 4].reshape(h, w, 4)[:, :, 2::-1].copy()
    n_colors = colors_used or (1 << bpp)
    pal_off = 14 + hdr_size
    if pal_off + 4 * n_colors > len(data):
        raise QsimError(f"{bad}: the palette is truncated.")
    palette = np.frombuffer(data, np.uint8, count=4 * n_colors, offset=pal_off).reshape(n_colors, 4)[:, 2::-1]
    idx = np.unpackbits(rows, axis=1).reshape(h, -1, bpp) if bpp < 8 else rows[:, :, None]
    if bpp < 8:
        weights = (1 << np.arange(bpp - 1, -1, -1)).astype(np.uint8)
        idx = (idx * weights).sum(axis=2)[:, :w]
    else:
        idx = idx[:, :w, 0]
    if idx.max(initial=0) >= n_colors:
        raise QsimError(f"{bad}: a pixel refers to palette entry {int(idx.max())} of {n_colors}.")
    rgb = palette[idx]
    if np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]):
        return rgb[..., :1].copy()
    return rgb.copy()


def read_png(path: str | Path) -> np.ndarray:
    """8-bit non-interlaced PNG (gray, gray+alpha, RGB, RGBA, palette) -> uint8 [H, W, C] (alpha dropped)."""
    p = Path(path)
    data = p.read_bytes()
    bad = f"{p.name} is not a readable PNG file"
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise QsimError(f"{bad}: it does not start with the PNG signature.")
    pos, idat, ihdr, plte = 8, [], None, None
    while pos + 8 <= len(data):
        length, ctype = struct.unpack_from(">I4s", data, pos)
        chunk = data[pos + 8:pos + 8 + length]
        if len(chunk) != length:
            raise QsimError(f"{bad}: chunk {ctype!r} is truncated.")
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif ctype == b"PLTE":
            plte = np.frombuffer(chunk, np.uint8).reshape(-1, 3)
        elif ctype == b"IDAT":
            idat.append(chunk)
        elif ctype == b"IEND":
            break
        pos += 12 + length
    if ihdr is None or not idat:
        raise QsimError(f"{bad}: no IHDR or IDAT chunk.")
    w, h, depth, ctype, _, _, interlace = ihdr
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(ctype)
    if depth != 8 or channels is None or interlace:
        raise QsimError(f"{bad}: only 8-bit, non-interlaced PNGs are supported (this one: bit depth {depth}, "
                        f"color type {ctype}, interlace {interlace}); convert it or use a 24-bit BMP.")
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    except zlib.error as e:
        raise QsimError(f"{bad}: its image data does not decompress ({e}).") from None
    stride = w * channels
    if raw.size != h * (stride + 1):
        raise QsimError(f"{bad}: image data has {raw.size} bytes, expected {h * (stride + 1)}.")
    img = _png_unfilter(raw.reshape(h, stride + 1), channels, bad).reshape(h, w, channels)
    if ctype == 3:
        if plte is None:
            raise QsimError(f"{bad}: palette image without a PLTE chunk.")
        img = plte[img[:, :, 0]]
    if img.shape[2] in (2, 4):
        img = img[:, :, :-1]
    return np.ascontiguousarray(img)


def _png_unfilter(rows: np.ndarray, bpp: int, bad: str) -> np.ndarray:
    """Undo PNG's per-row filters (None, Sub, Up, Average, Paeth); bpp = bytes per pixel."""
    h, n = rows.shape[0], rows.shape[1] - 1
    out = np.zeros((h, n), np.uint8)
    prev = np.zeros(n, np.int32)
    for y in range(h):
        f, line = int(rows[y, 0]), rows[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) & 0xFF
        elif f in (1, 3, 4):
            cur = np.zeros(n, np.int32)
            for x in range(n):  # sequential dependency along the row
                a = cur[x - bpp] if x >= bpp else 0
                b = prev[x]
                if f == 1:
                    pred = a
                elif f == 3:
                    pred = (a + b) >> 1
                else:
                    c = prev[x - bpp] if x >= bpp else 0
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (line[x] + pred) & 0xFF
        else:
            raise QsimError(f"{bad}: unknown row filter {f}.")
        out[y] = cur
        prev = cur
    return out
