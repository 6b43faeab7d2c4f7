"""Bad model files and input files give a QsimError with a clear message (in-process checks),
and the input readers (BMP, PNG, .npy/.npz, --float-input quantization) decode hand-made files
to hand-derived values.  Hostile input files: tests/test_hostile_inputs.py."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from conftest import shared_model
from qsim import inputs as qin
from qsim import ir
from qsim.errors import QsimError, UnsupportedModelError
from qsim.interpreter import prepare_graph
from qsim.loader import load, load_bytes


# ------------------------------------------------------------------ malformed model files

def test_missing_file(tmp_path):
    with pytest.raises(QsimError, match="not found"):
        load(tmp_path / "nope.tflite")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.tflite"
    p.write_bytes(b"")
    with pytest.raises(QsimError, match="not a TensorFlow Lite model"):
        load(p)


def test_random_bytes():
    blob = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(QsimError, match="not a TensorFlow Lite model"):
        load_bytes(blob)


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_with_tflite_identifier(seed):
    """Garbage behind a valid 'TFL3' identifier: the parser's failure becomes a QsimError."""
    body = np.random.default_rng(seed).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    with pytest.raises(QsimError):
        g = load_bytes(body[:4] + b"TFL3" + body[8:], source="junk.tflite")
        prepare_graph(g, "tflm")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_model(keep):
    blob = shared_model("kws_ref_model.tflite").read_bytes()
    cut = blob[: int(len(blob) * keep)]
    with pytest.raises(QsimError) as e:
        g = load_bytes(cut, source="cut.tflite")
        prepare_graph(g, "tflm")  # a truncation the parser tolerates must still not run silently
    assert "cut.tflite" in str(e.value) or "truncated" in str(e.value) or "corrupt" in str(e.value)


def test_float_model_refused():
    g = load(shared_model("ad01_fp32.tflite"))
    with pytest.raises(UnsupportedModelError, match="float model") as e:
        prepare_graph(g, "tflm")
    assert "FULLY_CONNECTED" in str(e.value)


def unsupported_model() -> bytes:
    """FC (supported) between three ops qsim rejects: two RNN and one bidirectional LSTM."""
    from qsim.builder import ModelBuilder

    b = ModelBuilder(description="unsupported ops")
    x = b.add_input("x", (1, 4), np.int8, scale=0.1, zero_point=0)
    a = b.add_tensor("svdf_a", (1, 4), np.int8, scale=0.1, zero_point=0)
    b.add_op("RNN", [x], [a])
    w = b.add_const("w", np.ones((4, 4), np.int8), scale=0.01, zero_point=0)
    f = b.add_tensor("fc", (1, 4), np.int8, scale=0.1, zero_point=0)
    b.add_op("FULLY_CONNECTED", [a, w, -1], [f], ir.FullyConnectedOptions())
    c = b.add_tensor("svdf_b", (1, 4), np.int8, scale=0.1, zero_point=0)
    b.add_op("RNN", [f], [c])
    d = b.add_tensor("lstm_out", (1, 4), np.int8, scale=0.1, zero_point=0)
    b.add_op("BIDIRECTIONAL_SEQUENCE_LSTM", [c], [d])
    b.mark_output(d)
    return b.build()


def test_unsupported_ops_all_listed():
    g = load_bytes(unsupported_model(), source="bad_ops.tflite")
    with pytest.raises(UnsupportedModelError) as e:
        prepare_graph(g, "tflm")
    msg = str(e.value)
    assert "3 op(s)" in msg
    for where in ("op #0 RNN", "op #2 RNN", "op #3 BIDIRECTIONAL_SEQUENCE_LSTM", "svdf_a", "lstm_out"):
        assert where in msg
    assert "FULLY_CONNECTED" not in msg


# ------------------------------------------------------------------ input conversion

def _tensor(shape=(1, 4), dtype=np.int8, scale=0.5, zp=-3):
    q = ir.Quant(np.array([scale]), np.array([zp], np.int64))
    return ir.Tensor(0, "x", tuple(shape), np.dtype(dtype), q)


def test_quantize_real_rounds_half_away_and_clamps():
    t = _tensor()
    q, warn = qin.quantize_real(np.array([1.25, -0.25, 100.0, -0.75]), t)
    # x/0.5 = 2.5 -> 3, -0.5 -> -1, 200 -> clamp, -1.5 -> -2; then + zp (-3)
    assert q.dtype == np.int8 and q.tolist() == [[0, -4, 127, -5]]
    assert warn is not None and "1 of 4 values" in warn and "[-62.5, 65]" in warn


def test_quantize_real_in_range_no_warning():
    q, warn = qin.quantize_real(np.array([[-62.5, 0.0, 65.0, 1.0]], np.float32), _tensor())
    assert warn is None and q.tolist() == [[-128, -3, 127, -1]]


def test_coerce_integer_rules():
    t = _tensor()
    assert qin.coerce_integer(np.array([1, 2, 3, 4], np.int64), t).dtype == np.int8  # fits, batch added
    with pytest.raises(QsimError, match="does not fit"):
        qin.coerce_integer(np.array([[1, 2, 3, 400]]), t)
    with pytest.raises(QsimError, match="--float-input"):
        qin.coerce_integer(np.zeros((1, 4), np.float32), t)
    with pytest.raises(QsimError, match=r"shape \[1, 4\]"):
        qin.coerce_integer(np.zeros((1, 5), np.int8), t)
    with pytest.raises(QsimError, match=r"shape \[1, 4\]"):
        qin.coerce_integer(np.zeros((2, 2), np.int8), t)  # same size, different layout
    img = _tensor((1, 3, 2, 1))
    assert qin.coerce_integer(np.arange(6, dtype=np.int8).reshape(3, 2), img).shape == (1, 3, 2, 1)


def test_image_to_input_int8_is_pixel_minus_128():
    t = _tensor((1, 2, 2, 1))
    img = np.array([[0, 128], [255, 7]], np.uint8)[:, :, None]
    assert qin.image_to_input(img, t)[0, :, :, 0].tolist() == [[-128, 0], [127, -121]]
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)  # luminance 0.299*255 = 76.2 -> 76
    assert qin.image_to_input(rgb, t)[0, 0, 0, 0] == 76 - 128
    with pytest.raises(QsimError, match="does not resize"):
        qin.image_to_input(np.zeros((3, 2, 1), np.uint8), t)


def _bmp24(pixels: np.ndarray) -> bytes:
    """Hand-written 24-bit bottom-up BMP with 4-byte row padding."""
    h, w, _ = pixels.shape
    row = (w * 3 + 3) // 4 * 4
    body = b"".join(pixels[y, :, ::-1].tobytes().ljust(row, b"\0") for y in range(h - 1, -1, -1))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(body), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(body), 2835, 2835, 0, 0)
    return header + info + body


def _bmp8_gray(pixels: np.ndarray, top_down=False) -> bytes:
    h, w = pixels.shape
    row = (w + 3) // 4 * 4
    order = range(h) if top_down else range(h - 1, -1, -1)
    body = b"".join(pixels[y].tobytes().ljust(row, b"\0") for y in order)
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    off = 54 + len(palette)
    header = struct.pack("<2sIHHI", b"BM", off + len(body), 0, 0, off)
    info = struct.pack("<IiiHHIIiiII", 40, w, -h if top_down else h, 1, 8, 0, len(body), 0, 0, 256, 0)
    return header + info + palette + body


def test_read_bmp_24bit(tmp_path):
    px = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3) * 3
    p = tmp_path / "c.bmp"
    p.write_bytes(_bmp24(px))
    assert np.array_equal(qin.read_image(p), px)


@pytest.mark.parametrize("top_down", [False, True])
def test_read_bmp_8bit_gray(tmp_path, top_down):
    px = np.array([[1, 2, 3], [250, 251, 252]], np.uint8)
    p = tmp_path / "g.bmp"
    p.write_bytes(_bmp8_gray(px, top_down))
    out = qin.read_image(p)
    assert out.shape == (2, 3, 1) and np.array_equal(out[:, :, 0], px)


def test_read_bmp_rejects_garbage(tmp_path):
    p = tmp_path / "x.bmp"
    p.write_bytes(b"BM" + b"\0" * 10)
    with pytest.raises(QsimError, match="BMP"):
        qin.read_image(p)
    p.write_bytes(_bmp24(np.zeros((4, 4, 3), np.uint8))[:70])
    with pytest.raises(QsimError, match="truncated"):
        qin.read_image(p)


def test_person_bmp_matches_its_raw_bytes():
    """person.bmp is 8-bit, bottom-up, identity gray palette: pixel = stored byte."""
    p = shared_model("person.bmp")
    data = p.read_bytes()
    off = struct.unpack_from("<I", data, 10)[0]
    img = qin.read_image(p, "raw")
    assert img.shape == (96, 96, 1)
    raw = np.frombuffer(data, np.uint8, count=96 * 96, offset=off).reshape(96, 96)
    assert np.array_equal(img[:, :, 0], raw[::-1])


def _png(pixels: np.ndarray, color_type: int, filters) -> bytes:
    """Hand-made 8-bit PNG; rows filtered with the given PNG filter types (0-4)."""
    h, w = pixels.shape[:2]
    bpp = pixels.shape[2]
    raw = b""
    prev = np.zeros(w * bpp, np.int32)
    for y in range(h):
        cur = pixels[y].reshape(-1).astype(np.int32)
        f = filters[y % len(filters)]
        out = np.zeros_like(cur)
        for x in range(cur.size):
            a = cur[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 0:
                pred = 0
            elif f == 1:
                pred = a
            elif f == 2:
                pred = b
            elif f == 3:
                pred = (a + b) // 2
            else:
                p_ = a + b - c
                pa, pb, pc = abs(p_ - a), abs(p_ - b), abs(p_ - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            out[x] = (cur[x] - pred) & 0xFF
        raw += bytes([f]) + out.astype(np.uint8).tobytes()
        prev = cur

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("color_type,channels", [(0, 1), (2, 3), (6, 4)])
def test_read_png_all_filters(tmp_path, color_type, channels):
    rng = np.random.default_rng(3)
    px = rng.integers(0, 256, (5, 7, channels), dtype=np.uint8)
    p = tmp_path / "i.png"
    p.write_bytes(_png(px, color_type, [0, 1, 2, 3, 4]))
    out = qin.read_image(p)
    expect = px[:, :, :3] if channels == 4 else px
    assert np.array_equal(out, expect)


def test_read_png_rejects_16bit(tmp_path):
    from PIL import Image
    p = tmp_path / "i.png"
    Image.fromarray(np.full((2, 2), 40000, np.uint16)).save(p)  # 16-bit gray PNG
    with pytest.raises(QsimError, match="16-bit"):
        qin.read_image(p)


def test_npz_by_name_and_count(tmp_path):
    from qsim.builder import ModelBuilder

    mb = ModelBuilder()
    x = mb.add_input("x", (1, 4), np.int8, scale=0.1, zero_point=0)
    y = mb.add_input("y", (1, 4), np.int8, scale=0.1, zero_point=0)
    z = mb.add_tensor("z", (1, 4), np.int8, scale=0.2, zero_point=0)
    mb.add_op("ADD", [x, y], [z])
    mb.mark_output(z)
    g = load_bytes(mb.build())
    p = tmp_path / "in.npz"
    np.savez(p, y=np.full((1, 4), 2, np.int8), x=np.full((1, 4), 1, np.int8))
    arrays = qin.load_inputs(p, g).arrays
    assert arrays[0].tolist() == [[1] * 4] and arrays[1].tolist() == [[2] * 4]
    np.savez(p, only=np.zeros((1, 4), np.int8))
    with pytest.raises(QsimError, match="2 input"):
        qin.load_inputs(p, g)


def test_random_inputs_deterministic_and_full_range():
    g = load(shared_model("hello_world_int8.tflite"))
    a = qin.random_inputs(g, 300, seed=7)
    b = qin.random_inputs(g, 300, seed=7)
    va = np.array([s[0] for s in a]).ravel()
    assert np.array_equal(va, np.array([s[0] for s in b]).ravel())
    assert va.dtype == np.int8 and va.min() < -100 and va.max() > 100


def test_api_refuses_a_same_size_array_of_another_layout():
    """run() must not silently reshape a [10, 49] array into kws's [1, 49, 10, 1] input (that would
    reorder the data); size-1 dims and flat data are still accepted."""
    from qsim.errors import QsimError
    from qsim.interpreter import run
    g = load(shared_model("kws_ref_model.tflite"))
    out = g.outputs[0]
    x = np.random.default_rng(0).integers(-128, 128, (1, 49, 10, 1)).astype(np.int8)
    with pytest.raises(QsimError, match=r"must have shape \[1, 49, 10, 1\]"):
        run(g, [x.reshape(10, 49)])
    want = run(g, [x])[out]
    assert np.array_equal(run(g, [x.reshape(49, 10)])[out], want)   # only size-1 dims differ
    assert np.array_equal(run(g, [x.reshape(-1)])[out], want)       # flat data
