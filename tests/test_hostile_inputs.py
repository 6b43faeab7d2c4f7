"""Hostile input files (issue 8, item 5): corrupt images, decompression bombs, zip bombs, out-of-range
--float-input values and short/ragged harness input files all end in one clear error (QsimError /
CLI exit 2 / harness exit 2) without a traceback, quickly and without allocating what the file claims.

Every file is written by the test; the expected values are hand-derived."""
from __future__ import annotations

import io
import struct
import subprocess
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from test_cli import assert_input_error, qsim
from qsim import inputs as qin
from qsim import ir
from qsim.builder import ModelBuilder
from qsim.errors import QsimError
from qsim.loader import load_bytes


def image_model(shape=(1, 4, 4, 1)) -> bytes:
    """y = x + x, int8, input `shape` (an image-shaped input for the image readers)."""
    b = ModelBuilder(description="image add")
    x = b.add_input("x", shape, np.int8, scale=0.1, zero_point=0)
    y = b.add_tensor("y", shape, np.int8, scale=0.2, zero_point=0)
    b.add_op("ADD", [x, x], [y])
    b.mark_output(y)
    return b.build()


def assert_refused(r, *needles):
    """CLI exit 2 with exactly one `qsim: error:` paragraph and no traceback."""
    assert_input_error(r, *needles)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def one_paragraph(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    return msg


# ------------------------------------------------------------------ hand-made corrupt files

def chunk(ctype: bytes, data: bytes) -> bytes:
    """A PNG chunk with a correct CRC (so the decoder reaches the content checks)."""
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data) & 0xFFFFFFFF)


SIG = b"\x89PNG\r\n\x1a\n"


def png(w, h, color_type=0, ihdr=None, plte=None, idat=None) -> bytes:
    channels = {0: 1, 2: 3, 3: 1}[color_type]
    if idat is None:
        idat = zlib.compress(b"".join(b"\0" + bytes(w * channels) for _ in range(h)))
    ihdr = ihdr if ihdr is not None else struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    parts = [chunk(b"IHDR", ihdr)] + ([chunk(b"PLTE", plte)] if plte is not None else [])
    return SIG + b"".join(parts) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_bytes() -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)).save(buf, "JPEG")
    return buf.getvalue()


def bmp_header(w, h, bpp=24, data_len=0) -> bytes:
    head = struct.pack("<2sIHHI", b"BM", 54 + data_len, 0, 0, 54)
    return head + struct.pack("<IiiHHIIiiII", 40, w, h, 1, bpp, 0, data_len, 0, 0, 0, 0)


CORRUPT = {
    # IHDR of 12 bytes instead of 13 (was a struct.error in the hand-written reader)
    "ihdr12.png": png(4, 4, ihdr=struct.pack(">IIBBBB", 4, 4, 8, 0, 0, 0)),
    # palette image whose PLTE is 5 bytes (not a multiple of 3) and one whose PLTE is too short for its indices
    "plte5.png": png(4, 4, color_type=3, plte=b"\1\2\3\4\5"),
    "plte_short.png": png(4, 4, color_type=3, plte=b"\0\0\0",
                          idat=zlib.compress(b"".join(b"\0" + bytes([200] * 4) for _ in range(4)))),
    "idat_garbage.png": png(4, 4, idat=b"this is not zlib data"),
    "truncated.png": png(4, 4)[:45],
    "no_chunks.png": SIG,
    "truncated.jpg": jpeg_bytes()[:200],
    "garbage.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
    "truncated.bmp": bmp_header(4, 4, data_len=48) + bytes(10),
    "bad_bpp.bmp": bmp_header(4, 4, bpp=7, data_len=16) + bytes(16),
    "text.png": b"hello, I am a text file with a .png name\n",
}


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_image_is_one_qsim_error(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(CORRUPT[name])
    for mode in qin.IMAGE_MODES:
        with pytest.raises(QsimError) as e:
            qin.read_image(p, mode)
        assert name in one_paragraph(e)


def test_corrupt_images_through_the_cli(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(image_model())
    for name in ("ihdr12.png", "plte5.png", "truncated.jpg", "truncated.bmp"):
        p = tmp_path / name
        p.write_bytes(CORRUPT[name])
        assert_refused(qsim("run", model, "--input", p), name)


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path):
    """A PNG whose IHDR claims 60000x60000 (3.6 G pixels) with a few bytes of data: refused from the header,
    without allocating the image (was a MemoryError / multi-GB allocation)."""
    p = tmp_path / "bomb.png"
    p.write_bytes(png(60000, 60000, idat=zlib.compress(b"\0" * 100)))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(QsimError, match="decompression-bomb limit") as e:
            qin.read_image(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2.0
    assert peak < 8 << 20, peak
    one_paragraph(e)
    # just over Pillow's limit but under its hard 2x error: still refused (not a warning)
    from PIL import Image
    side = int(Image.MAX_IMAGE_PIXELS ** 0.5) + 10
    p.write_bytes(png(side, side, idat=zlib.compress(b"\0" * 100)))
    with pytest.raises(QsimError, match="decompression-bomb limit"):
        qin.read_image(p)


def test_wrong_size_image_refused_from_its_header(tmp_path):
    """qsim run never resizes: a 4000x4000 PNG for a 4x4 input is refused before it is decoded."""
    p = tmp_path / "big.png"
    p.write_bytes(png(4000, 4000, idat=b"x"))  # pixel data would not even decompress
    g = load_bytes(image_model())
    with pytest.raises(QsimError, match="4000x4000 pixels but the model's input expects 4x4"):
        qin.load_inputs(p, g)


def test_images_decode_gray_rgb_palette_jpeg(tmp_path):
    from PIL import Image
    rgb = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) * 5
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert np.array_equal(qin.read_image(tmp_path / "c.png"), rgb)
    gray = Image.fromarray(rgb[:, :, 0]).convert("P")  # palette of grays -> one channel
    gray.save(tmp_path / "p.png")
    assert np.array_equal(qin.read_image(tmp_path / "p.png")[:, :, 0], rgb[:, :, 0])
    Image.fromarray(np.full((4, 4), 77, np.uint8)).save(tmp_path / "g.jpg", quality=95)
    out = qin.read_image(tmp_path / "g.jpg")
    assert out.shape == (4, 4, 1) and np.abs(out.astype(int) - 77).max() <= 1
    g = load_bytes(image_model())
    x = qin.load_inputs(tmp_path / "g.jpg", g).arrays[0]  # 'shift': q = p - 128
    assert x.shape == (1, 4, 4, 1) and np.abs(x.astype(int) + 51).max() <= 1


# ------------------------------------------------------------------ .npz zip bombs

def zero_bomb(path, nbytes: int, name: str = "x") -> None:
    """An .npz whose member is a float64 .npy of `nbytes` zero bytes, deflated (about 1000:1)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (nbytes // 8,)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open(name + ".npy", "w", force_zip64=True) as f:
        f.write(header.getvalue())
        block = bytes(1 << 20)
        for _ in range(nbytes >> 20):
            f.write(block)


def test_npz_zip_bomb_refused_before_decompression(tmp_path):
    """A 128 MiB member (compressed to ~130 KB) for a model needing 16 values: refused from the zip
    directory and the array header, with almost nothing decompressed or allocated."""
    p = tmp_path / "bomb.npz"
    zero_bomb(p, 128 << 20)
    assert p.stat().st_size < 1 << 20
    g = load_bytes(image_model())
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(QsimError, match="refusing to read it") as e:
            qin.load_inputs(p, g, float_input=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0
    assert peak < 8 << 20, peak
    assert "bomb.npz" in one_paragraph(e) and "16 values" in str(e.value)
    model = tmp_path / "m.tflite"
    model.write_bytes(image_model())
    assert_refused(qsim("run", model, "--input", p), "refusing to read it")


def test_npz_member_claiming_4gib_is_refused(tmp_path):
    """A crafted archive: the zip directory says the member is ~4 GiB, its .npy header agrees; only a
    few bytes exist.  The claim alone is refused (no decompression, no allocation)."""
    header = io.BytesIO()
    n = 500_000_000  # 4.0e9 bytes of float64
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
    body = header.getvalue() + bytes(16)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("x.npy", body)
    blob = bytearray(buf.getvalue())
    claim = len(header.getvalue()) + 8 * n
    assert claim < 0xFFFFFFFF
    cd = blob.index(b"PK\x01\x02")
    struct.pack_into("<I", blob, cd + 24, claim)  # central directory: uncompressed size
    struct.pack_into("<I", blob, 22, claim)       # local header: uncompressed size
    p = tmp_path / "claim.npz"
    p.write_bytes(bytes(blob))
    assert zipfile.ZipFile(p).infolist()[0].file_size == claim
    g = load_bytes(image_model())
    with pytest.raises(QsimError, match="refusing to read it") as e:
        qin.load_inputs(p, g)
    assert "3814.7 MiB" in one_paragraph(e)


def test_npz_header_larger_than_member_is_corrupt(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (1, 4, 4, 1)})
    p = tmp_path / "short.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x.npy", header.getvalue() + bytes(8))  # 1 of 16 values
    with pytest.raises(QsimError, match="corrupt"):
        qin.load_inputs(p, load_bytes(image_model()), float_input=True)


def test_npy_header_claiming_huge_shape(tmp_path):
    p = tmp_path / "huge.npy"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 12,)})
    p.write_bytes(header.getvalue() + bytes(64))
    with pytest.raises(QsimError) as e:
        qin.load_inputs(p, load_bytes(image_model()), float_input=True)
    one_paragraph(e)


# ------------------------------------------------------------------ --float-input saturation

def _tensor(scale=0.5, zp=-3):
    return ir.Tensor(0, "x", (1, 6), np.dtype(np.int8), ir.Quant(np.array([scale]), np.array([zp], np.int64)))


def test_float_input_saturates_in_the_right_direction():
    """|x/scale| >= 2^31 used to take C's int cast (INT32_MIN) and become -128 even for +1e10."""
    x = np.array([1e10, -1e10, 3.5e38, -3.5e38, np.inf, 1.25])
    q, warn = qin.quantize_real(x, _tensor())
    assert q.tolist() == [[127, -128, 127, -128, 127, 0]]  # 1.25/0.5 = 2.5 -> 3, -3 -> 0
    assert "5 of 6 values" in warn and "saturated (3 to 127, 2 to -128)" in warn


def test_float_input_nan_is_an_error():
    with pytest.raises(QsimError, match="2 NaN value"):
        qin.quantize_real(np.array([0.0, np.nan, 1.0, np.nan, 0.0, 0.0]), _tensor())


# ------------------------------------------------------------------ generated harness: input file size

def test_harness_refuses_short_and_ragged_input_files_under_asan(tmp_path):
    from test_codegen import build_sanitized, need_tool
    from qsim.codegen import generate

    need_tool("gcc")
    model = tmp_path / "m.tflite"
    model.write_bytes(image_model((1, 2, 3, 1)))  # one sample = 6 bytes
    d = tmp_path / "c"
    generate(model, d, name="m", force=True)
    exe = d / build_sanitized(d, "m")

    def run(data: bytes):
        (d / "in.bin").write_bytes(data)
        (d / "out.bin").unlink(missing_ok=True)
        return subprocess.run([str(exe), "in.bin", "out.bin"], cwd=d, capture_output=True, text=True, timeout=60)

    sample = np.array([1, -2, 3, -4, 60, -60], np.int8).tobytes()
    r = run(sample * 2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 sample(s)" in r.stdout
    # y = x + x requantized from scale 0.1 to 0.2: y = x exactly (the ADD kernel's own output for x + x)
    assert (d / "out.bin").read_bytes() == sample * 2
    for data, needle in [(b"", "holds 0 bytes"), (sample[:5], "holds 5 bytes"),
                         (sample + sample[:3], "holds 9 bytes")]:
        r = run(data)
        assert r.returncode == 2, (len(data), r.returncode, r.stdout, r.stderr)
        assert needle in r.stderr and "one sample is 6 bytes" in r.stderr, r.stderr
        assert "ERROR: AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr
        assert not (d / "out.bin").exists()  # refused before anything is written
