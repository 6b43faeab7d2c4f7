"""Datasets: files -> quantized samples for a model's (single) input, plus labels and class names.

Sources (``path``):

* ``.npy``: one array ``x`` of samples, no labels.
* ``.npz``: arrays ``x`` and ``y`` (labels, optional), or else the first array is ``x`` and the
  second ``y``.  ``y``: class indices ``[N]`` (or one-hot ``[N, K]``).
* a folder with one sub-folder per class (``DIR/cat/*.png``, ``DIR/dog/*.jpg``; searched
  recursively; PNG, JPEG, BMP): labels from the sub-folder names, classes in sorted name order,
  or in the order of a labels file when one is given.
* any of these at a URL fsspec opens (``s3://``, ``https://``, ``file://``...): a local copy is read
  (:func:`local_copy`).

Sample layout: ``x`` has a leading sample axis in place of the model's batch dimension 1,
``x.shape == (N, *input.shape[1:])`` (a model whose input has no batch dimension 1 keeps its
whole shape per sample).  Array files must already be in the model's layout: samples of
another shape (e.g. NHWC data for an NCHW input) are a QsimError naming the expected one.
Images are decoded by :func:`qsim.inputs.read_image` (Pillow), center-cropped to the
input's aspect ratio and resized (bilinear), and laid out as the input wants: NHWC
``[1, H, W, C]`` or NCHW ``[1, C, H, W]`` is detected from the input shape (C = 1 or 3;
ambiguous shapes are NHWC, TFLite's convention) and reported in ``notes``.

Values:

* ``mean``/``std`` given (the old TFLite converter's ``mean_values``/``std_dev_values``, e.g.
  127.5/127.5; one value or one per channel): ``real = (value - mean) / std``, then quantized
  with the input's own scale and zero point (:func:`qsim.fixedpoint.quantize_affine`,
  out-of-range values saturate and are counted in ``notes``).
* otherwise images follow ``qsim run``'s ``image_mode`` ("shift": int8 q = pixel - 128; "raw":
  the stored bytes as int8, see :mod:`qsim.inputs`), float arrays are real values quantized with
  the input's scale and zero point, and integer arrays are already quantized (they must fit the
  input's dtype).

Labels file (``labels``): UTF-8 text, one class name per line (blank lines ignored), as many
names as the model's first output has classes (its last dimension).

Memory: :func:`open_dataset` reads only directories, zip directories, array headers and the
labels; :meth:`DataStream.batches` decodes ``batch_size`` samples at a time (``.npy`` files are
memory-mapped, ``.npz`` members are decompressed incrementally).  :func:`load_dataset` (or
:meth:`DataStream.load`) holds everything as one :class:`Dataset`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import inputs as qin
from . import ir
from .errors import QsimError

__all__ = ["Dataset", "DataStream", "open_dataset", "load_dataset", "read_labels"]


GUARD_SAMPLES = 256  # samples the input-range guard reads from the start of an array dataset


@dataclass
class Dataset:
    """Samples held in memory.

    ``x``: quantized samples, the input tensor's dtype, shape ``(N, *sample_shape)``;
    ``y``: int64 class indices ``[N]`` or None; ``class_names``: one per model class or None;
    ``notes``: what was decided on the way (layout, normalization, saturation...)."""

    x: np.ndarray
    y: np.ndarray | None = None
    class_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batches(self, batch_size: int = 64, limit: int | None = None,
                start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(x, y) chunks of at most ``batch_size`` samples, the first ``limit`` samples only if given;
        ``start``: the first sample (a shard of the dataset: samples ``start`` .. ``limit``)."""
        return _batches(len(self), limit, batch_size, lambda i, j: self.x[i:j], self.y, start)


@dataclass
class DataStream:
    """A dataset read lazily: labels and names now, samples batch by batch (:meth:`batches`)."""

    source: str
    n: int
    sample_shape: tuple[int, ...]
    dtype: np.dtype
    read: Callable[[int, int], np.ndarray]  # (start, stop) -> quantized x rows
    y: np.ndarray | None = None
    class_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # input-range guard (:func:`qsim.inputs.range_guard`)
    # how to open it again elsewhere (a Dask worker): open_dataset's arguments, the path absolute; None
    # for streams not opened from a path
    origin: dict | None = None
    saturation: "_Saturation | None" = None  # counts of normalized values that saturated (``notes``)

    def __len__(self) -> int:
        return self.n

    def batches(self, batch_size: int = 64, limit: int | None = None,
                start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(x, y) chunks of at most ``batch_size`` samples, decoded when reached; ``start``: the first
        sample (a shard: samples ``start`` .. ``limit``; batches still start at ``start``)."""
        return _batches(self.n, limit, batch_size, self.read, self.y, start)

    def load(self, limit: int | None = None) -> Dataset:
        """Everything (or the first ``limit`` samples) in memory."""
        n = sample_count(self.n, limit)
        x = self.read(0, n) if n else np.zeros((0,) + self.sample_shape, self.dtype)
        y = None if self.y is None else self.y[:n]
        return Dataset(x, y, self.class_names, self.notes, self.source)


def load_dataset(path: str | Path, g: ir.Graph, labels: str | Path | None = None, mean=None, std=None,
                 image_mode: str = "shift", limit: int | None = None) -> Dataset:
    """:func:`open_dataset` then :meth:`DataStream.load`."""
    return open_dataset(path, g, labels, mean, std, image_mode).load(limit)


def open_dataset(path: str | Path, g: ir.Graph, labels: str | Path | None = None, mean=None, std=None,
                 image_mode: str = "shift") -> DataStream:
    """Index a dataset for graph ``g``'s input (see the module doc); nothing is decoded yet.
    ``path`` may be a URL fsspec opens (``s3://``, ``gs://``, ``https://``, ``file://``...): read from a
    local copy (:func:`local_copy`)."""
    p = local_copy(path) if is_url(path) else Path(path)
    if len(g.inputs) != 1:
        raise QsimError(f"datasets feed single-input models; this model has {len(g.inputs)} inputs.")
    if image_mode not in qin.IMAGE_MODES:
        raise QsimError(f"unknown image mode '{image_mode}'; choose one of: {', '.join(qin.IMAGE_MODES)}")
    t = g.tensors[g.inputs[0]]
    n_classes = _n_classes(g)
    names = read_labels(labels, n_classes) if labels is not None else None
    norm = _normalization(mean, std)
    ds = _open(p, t, names, n_classes, norm, image_mode)
    ds.origin = origin(path, labels, mean, std, image_mode)
    return ds


def origin(path, labels=None, mean=None, std=None, image_mode: str = "shift") -> dict:
    """:func:`open_dataset`'s arguments with the paths made absolute: what a Dask worker needs to open
    the same dataset from a shared filesystem (plain, picklable values)."""
    def absolute(v):
        return None if v is None else str(v) if is_url(v) else os.path.abspath(v)

    def plain(v):
        return None if v is None else np.asarray(v, np.float64).tolist()
    return {"path": absolute(path), "labels": absolute(labels), "mean": plain(mean), "std": plain(std),
            "image_mode": image_mode}


def is_url(path) -> bool:
    """True for a URL (``scheme://...``), which :func:`local_copy` reads through fsspec."""
    return isinstance(path, str) and "://" in path


def local_copy(url: str) -> Path:
    """A local copy of the file or folder at ``url`` (any protocol fsspec and its plug-ins open),
    downloaded once per machine into ``$TMPDIR/qsim-data/`` (keyed by the URL, its size and its
    modification time when the store reports them) and reused; a URL that cannot be read is a
    QsimError naming it."""
    import hashlib
    import shutil
    import tempfile
    import threading
    try:
        import fsspec
        fs, rpath = fsspec.core.url_to_fs(url)
        info = fs.info(rpath)
    except ImportError as e:
        raise QsimError(f"cannot read the dataset {url}: {e} (install the fsspec plug-in for that protocol, "
                        "e.g. s3fs or gcsfs)") from None
    except Exception as e:
        raise QsimError(f"cannot read the dataset {url}: {type(e).__name__}: {e}") from None
    stamp = [str(info.get(k)) for k in ("size", "mtime", "LastModified", "ETag", "etag", "updated") if k in info]
    digest = hashlib.sha256("\n".join([url] + stamp).encode()).hexdigest()[:20]
    name = rpath.rstrip("/").rsplit("/", 1)[-1] or "data"
    dest = Path(tempfile.gettempdir()) / "qsim-data" / digest
    if not (dest / name).exists():
        part = dest.with_name(f"{digest}.{os.getpid()}.{threading.get_ident()}.part")
        shutil.rmtree(part, ignore_errors=True)
        try:
            part.mkdir(parents=True)
            fs.get(rpath, str(part / name), recursive=info.get("type") == "directory")
        except Exception as e:
            shutil.rmtree(part, ignore_errors=True)
            raise QsimError(f"cannot read the dataset {url}: {type(e).__name__}: {e}") from None
        try:
            part.rename(dest)  # atomic: another process that got there first keeps its copy
        except OSError:
            shutil.rmtree(part, ignore_errors=True)
    return dest / name


def _open(p: Path, t: ir.Tensor, names, n_classes, norm, image_mode) -> DataStream:
    if p.is_dir():
        return _image_folder(p, t, names, n_classes, norm, image_mode)
    if not p.is_file():
        raise QsimError(f"dataset not found: {p}")
    ext = p.suffix.lower()
    if ext == ".npy":
        try:
            x = np.load(p, mmap_mode="r", allow_pickle=False)
        except Exception as e:
            raise QsimError(f"cannot read {p.name} as a NumPy .npy file: {e}") from None
        if not isinstance(x, np.ndarray):
            raise QsimError(f"{p.name} is not a single .npy array.")
        return _arrays(p.name, x.shape, x.dtype, lambda i, j: np.asarray(x[i:j]), None, t, names, n_classes, norm)
    if ext == ".npz":
        return _npz(p, t, names, n_classes, norm)
    raise QsimError(f"unsupported dataset '{p.name}': give an .npy, an .npz or a folder of class sub-folders "
                    "of images.")


def read_labels(path: str | Path, n_classes: int | None = None) -> list[str]:
    """Class names, one per line (UTF-8, blank lines ignored); ``n_classes``: the number required."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QsimError(f"labels file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise QsimError(f"cannot read labels file {p.name} as UTF-8 text: {e}") from None
    names = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not names:
        raise QsimError(f"labels file {p.name} names no classes (one class name per line).")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise QsimError(f"labels file {p.name} names {', '.join(repr(d) for d in dup)} more than once.")
    if n_classes is not None and len(names) != n_classes:
        raise QsimError(f"labels file {p.name} names {len(names)} classes but the model's output has "
                        f"{n_classes}; give one class name per line, in the model's output order.")
    return names


# ------------------------------------------------------------------ arrays

def _npz(p: Path, t: ir.Tensor, names, n_classes, norm) -> DataStream:
    members = qin.npz_members(p)
    keys = list(members)
    if "x" in members:
        xk, yk = "x", ("y" if "y" in members else None)
    else:
        xk, yk = keys[0], (keys[1] if len(keys) > 1 else None)
    mx = members[xk]
    y = None
    if yk is not None:
        my = members[yk]
        n = mx.shape[0] if mx.shape else 1
        budget = max(n, 1) * max(n_classes, 1) * qin.BYTES_PER_VALUE_MAX  # one-hot float64 at most
        if max(my.nbytes, my.info.file_size) > budget + 65536:
            raise QsimError(f"{p.name}: labels '{yk}' would need {max(my.nbytes, my.info.file_size)} bytes for {n} "
                            "samples; refusing to read them.")
        y = qin.read_npz_member(p, my)
    ds = _arrays(p.name, mx.shape, mx.dtype, qin.NpzRows(p, mx).read, y, t, names, n_classes, norm)
    ds.notes.insert(0, f"{p.name}: samples from array '{xk}'" + (f", labels from '{yk}'" if yk else ", no labels"))
    return ds


def _arrays(what: str, shape, dtype, read_raw, y, t: ir.Tensor, names, n_classes, norm) -> DataStream:
    """Samples from an array of shape ``shape`` read by ``read_raw(start, stop)``."""
    shape = tuple(shape)
    if not shape:
        raise QsimError(f"{what} holds a scalar, not samples.")
    n, sample = shape[0], shape[1:]
    want = _sample_shape(t)
    _check_sample_shape(what, sample, want, t)
    dtype = np.dtype(dtype)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise QsimError(f"{what} holds {dtype} data; datasets must be numeric.")
    layout = qin.input_layout(t)[0]
    if norm is not None:
        notes = [f"{what}: real = (x - mean) / std with mean {_fmt(norm[0])}, std {_fmt(norm[1])}, {_quantized_by(t)}"]
    elif np.issubdtype(dtype, np.floating):
        notes = [f"{what}: {dtype} data read as real values, {_quantized_by(t)}"]
    else:
        notes = [f"{what}: {dtype} data used as already quantized {t.dtype}"]
    saturated = _Saturation(notes, what, t)
    warns = []
    if norm is None and n:  # the guard looks at the first samples only (GUARD_SAMPLES)
        w = qin.range_guard(np.asarray(read_raw(0, min(n, GUARD_SAMPLES))), t, np.issubdtype(dtype, np.floating))
        if w:
            warns.append(f"{what}: {w}")
            notes.append(f"warning: {what}: {w}")

    def read(i: int, j: int) -> np.ndarray:
        raw = np.asarray(read_raw(i, j)).reshape((j - i,) + want)
        if norm is None and not np.issubdtype(dtype, np.floating):
            return qin.coerce_dtype(raw, t)
        real = raw.astype(np.float64)
        if norm is not None:
            real = (real - _channel_shaped(norm[0], layout, want)) / _channel_shaped(norm[1], layout, want)
        q, hi, lo = qin.quantize_values(real, t)
        saturated.add(hi, lo)
        return q

    return DataStream(what, n, want, t.dtype, read, _labels(what, y, n, n_classes), names, notes, warns,
                      saturation=saturated)


def _check_sample_shape(what: str, sample: tuple, want: tuple, t: ir.Tensor) -> None:
    """Samples must have the input's per-sample shape up to size-1 dimensions, or be flat."""
    size = int(np.prod(want, dtype=np.int64))
    if sample == want or ([d for d in sample if d != 1] == [d for d in want if d != 1]) or \
            (len(sample) == 1 and sample[0] == size):
        return
    layout, hwc, _ = qin.input_layout(t)
    expect = f"samples of shape {list(want)}"
    if layout in ("NHWC", "NCHW"):
        h, w, c = hwc
        expect += f" ({layout}: " + ("[H, W, C]" if layout == "NHWC" else "[C, H, W]") + ")"
        other = (c, h, w) if layout == "NHWC" else (h, w, c)
        if tuple(sample) == other and other != want:
            perm = "(0, 3, 1, 2)" if layout == "NCHW" else "(0, 2, 3, 1)"
            theirs = "NHWC" if layout == "NCHW" else "NCHW"
            raise QsimError(f"{what} holds {theirs} samples of shape {list(sample)} but input '{t.name}' "
                            f"{list(t.shape)} expects {expect}: wrong layout; transpose the data, e.g. "
                            f"x.transpose{perm}.")
    raise QsimError(f"{what} holds samples of shape {list(sample)} ({int(np.prod(sample, dtype=np.int64))} "
                    f"values) but input '{t.name}' {list(t.shape)} expects {expect}, with the samples along the "
                    "first axis.")


def _labels(what: str, y, n: int, n_classes: int) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[0] == n and y.shape[1] == n_classes and n_classes > 1:
        y = np.argmax(y, axis=1)  # one-hot
    y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1 or y.shape[0] != n:
        raise QsimError(f"{what}: the labels have shape {list(y.shape)}, expected [{n}] (one class index per "
                        f"sample) or one-hot [{n}, {n_classes}].")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(y == np.round(y)):
            raise QsimError(f"{what}: the labels must be integer class indices, got {y.dtype} values.")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise QsimError(f"{what}: labels range over [{y.min()}, {y.max()}] but the model's output has "
                        f"{n_classes} classes (0..{n_classes - 1}).")
    return y


# ------------------------------------------------------------------ image folders

def _image_folder(root: Path, t: ir.Tensor, names, n_classes, norm, image_mode) -> DataStream:
    layout, hwc, note = qin.input_layout(t)
    if layout is None:
        raise QsimError(f"{root.name}/ is a folder of images but {note}; images feed [1, H, W, C] (NHWC) or "
                        "[1, C, H, W] (NCHW) inputs.")
    if not np.issubdtype(t.dtype, np.integer) or (norm is None and t.dtype not in (np.int8, np.uint8)):
        raise QsimError(f"images feed int8/uint8 inputs (or quantized ones with --mean/--std); input '{t.name}' "
                        f"is {t.dtype}.")
    if norm is not None and image_mode == "raw":
        raise QsimError("--mean/--std normalize pixel values; they do not apply to --image-mode raw, whose "
                        "bytes are already int8 values.")
    h, w, c = hwc
    if c not in (1, 3):
        raise QsimError(f"{root.name}/ holds images but {note}: images give 1 (gray) or 3 (RGB) channels.")
    if norm is not None and any(v.size not in (1, c) for v in norm):
        raise QsimError(f"--mean/--std take one value or {c} (one per channel of input '{t.name}'); got "
                        f"{norm[0].size} and {norm[1].size}.")
    hidden = lambda q: q.name.startswith(".")  # noqa: E731
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not hidden(d))
    loose = sorted(f.name for f in root.iterdir() if f.is_file() and f.suffix.lower() in qin.IMAGE_EXTS)
    if not classes:
        what = f"holds {len(loose)} image(s) but no" if loose else "has no"
        raise QsimError(f"{root} {what} class sub-folders: a dataset folder needs one sub-folder per class "
                        f"(e.g. {root.name}/cat/1.png, {root.name}/dog/2.jpg).")
    if loose:
        raise QsimError(f"{root} has images outside the class sub-folders ({', '.join(loose[:3])}"
                        f"{', ...' if len(loose) > 3 else ''}); they belong to no class: move them into one.")
    notes = [note]
    if names is None:
        if len(classes) != n_classes:
            raise QsimError(f"{root} has {len(classes)} class sub-folder(s) ({', '.join(classes[:6])}"
                            f"{', ...' if len(classes) > 6 else ''}) but the model's output has {n_classes} "
                            "classes; give --labels FILE with the model's class names in output order.")
        index = {name: k for k, name in enumerate(classes)}
        notes.append(f"classes from the {len(classes)} sub-folder names, in sorted order")
    else:
        unknown = [c_ for c_ in classes if c_ not in names]
        if unknown:
            raise QsimError(f"{root}: sub-folder(s) {', '.join(repr(u) for u in unknown[:6])} are not class names "
                            "in the labels file; name each sub-folder after its class.")
        index = {name: k for k, name in enumerate(names)}
        missing = [n_ for n_ in names if n_ not in classes]
        if missing:
            notes.append(f"{len(missing)} of {len(names)} classes have no sub-folder "
                         f"({', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''})")
    files, labels = [], []
    for cls in classes:
        found = sorted(f for f in (root / cls).rglob("*")
                       if f.is_file() and f.suffix.lower() in qin.IMAGE_EXTS and not hidden(f))
        if not found:
            raise QsimError(f"class folder {root.name}/{cls}/ holds no PNG, JPEG or BMP images.")
        files += found
        labels += [index[cls]] * len(found)
    if norm is not None:
        notes.append(f"pixels normalized: real = (p - mean) / std with mean {_fmt(norm[0])}, std {_fmt(norm[1])}, "
                     + _quantized_by(t))
    else:
        notes.append(f"pixels mapped by --image-mode {image_mode} (no --mean/--std)")
    want = _sample_shape(t)
    saturated = _Saturation(notes, root.name, t)

    def read(i: int, j: int) -> np.ndarray:
        out = np.empty((j - i,) + want, t.dtype)
        for k, f in enumerate(files[i:j]):
            img = qin.read_image(f, image_mode, size=(h, w), resize=True)
            what = f"{f.parent.name}/{f.name}"
            if norm is None:
                out[k] = qin.image_to_input(img, t, what, image_mode).reshape(want)
            else:
                real = (qin.match_channels(img, c, what) - np.asarray(norm[0])) / np.asarray(norm[1])
                q, hi, lo = qin.quantize_values(real, t)
                saturated.add(hi, lo)
                out[k] = qin.to_layout(q, layout).reshape(want)
        return out

    return DataStream(str(root), len(files), want, t.dtype, read, np.array(labels, np.int64),
                      names if names is not None else classes, notes, saturation=saturated)


# ------------------------------------------------------------------ helpers

def _sample_shape(t: ir.Tensor) -> tuple[int, ...]:
    s = tuple(int(d) for d in t.shape)
    return s[1:] if s and s[0] == 1 else s


def _n_classes(g: ir.Graph) -> int:
    """Classes of the first output: its last dimension."""
    s = g.tensors[g.outputs[0]].shape
    return int(s[-1]) if s else 1


def _quantized_by(t: ir.Tensor) -> str:
    if t.quant is None or t.quant.per_channel or not np.issubdtype(t.dtype, np.integer):
        raise QsimError(f"real-valued data needs a per-tensor quantized integer input; input '{t.name}' is "
                        f"{t.dtype}" + (" quantized per channel." if t.quant is not None else " without quantization."))
    return f"quantized with the input's scale {t.quant.scale0:.6g} and zero point {t.quant.zp0}"


def _normalization(mean, std):
    if mean is None and std is None:
        return None
    mean = np.atleast_1d(np.asarray(0.0 if mean is None else mean, np.float64))
    std = np.atleast_1d(np.asarray(1.0 if std is None else std, np.float64))
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise QsimError(f"--mean must be finite and --std finite and > 0; got mean {_fmt(mean)}, std {_fmt(std)}.")
    return mean, std


def _channel_shaped(v: np.ndarray, layout: str | None, want: tuple) -> np.ndarray:
    """A per-channel mean/std broadcast over samples of shape ``want`` (channel axis by layout)."""
    if v.size == 1:
        return v.reshape(())
    if layout == "NCHW":
        return v.reshape((-1, 1, 1))
    if layout == "NHWC" and want and want[-1] == v.size:
        return v
    raise QsimError(f"{v.size} mean/std values given, but the input's samples {list(want)} have no channel "
                    "axis of that size; give one value.")


class _Saturation:
    """One running note in ``notes`` counting the normalized values that saturated."""

    def __init__(self, notes: list[str], what: str, t: ir.Tensor):
        self.notes, self.what, self.info = notes, what, np.iinfo(t.dtype)
        self.hi = self.lo = 0
        self.at: int | None = None

    def add(self, hi: int, lo: int) -> None:
        if not (hi or lo):
            return
        self.hi, self.lo = self.hi + hi, self.lo + lo
        msg = (f"{self.what}: {self.hi + self.lo} value(s) fell outside the input's representable range and "
               f"saturated ({self.hi} to {int(self.info.max)}, {self.lo} to {int(self.info.min)}): check the "
               "mean/std and the data's units")
        if self.at is None:
            self.at = len(self.notes)
            self.notes.append(msg)
        else:
            self.notes[self.at] = msg


def sample_count(n: int, limit: int | None) -> int:
    """How many of ``n`` samples ``limit`` (None: all; must be >= 1) selects."""
    if limit is None:
        return n
    if limit < 1:
        raise QsimError(f"--limit must be at least 1, got {limit}.")
    return min(n, limit)


def _batches(n: int, limit: int | None, batch_size: int, read, y,
             start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    n = sample_count(n, limit)  # checked now, not at the first next()
    if batch_size < 1:
        raise QsimError(f"the batch size must be at least 1, got {batch_size}.")

    def gen():
        for i in range(start, n, batch_size):
            j = min(i + batch_size, n)
            yield read(i, j), (None if y is None else y[i:j])
    return gen()


def _fmt(v) -> str:
    v = np.atleast_1d(v)
    return ", ".join(f"{x:g}" for x in v)
