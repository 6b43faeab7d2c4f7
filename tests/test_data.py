"""qsim.data loaders and `qsim eval` on files the tests write.

The models are built with qsim.builder: an identity RESHAPE to [1, K] makes the output equal the
quantized input, so every expected value (pixels, layout, normalization, argmax, accuracy) is
derived by hand from the pixels written.  The demo digits' accuracy is checked against a
sample-by-sample loop through the interpreter."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from qsim import data as qdata
from qsim import ir
from qsim.builder import ModelBuilder
from qsim.errors import QsimError
from qsim.evaluate import evaluate
from qsim.interpreter import prepare_graph
from qsim.loader import load, load_bytes
from test_cli import assert_input_error, qsim

DEMO = REPO / "examples" / "models"


def flat_model(shape, scale=1 / 255, zp=-128):
    """input `shape` -> RESHAPE -> output [1, size]: class k's score is input value k (row-major)."""
    n = int(np.prod(shape))
    b = ModelBuilder(description="identity classifier")
    x = b.add_input("x", shape, np.int8, scale=scale, zero_point=zp)
    s = b.add_const("shape", np.array([1, n], np.int32))
    y = b.add_tensor("y", (1, n), np.int8, scale=scale, zero_point=zp)
    b.add_op("RESHAPE", [x, s], [y], ir.ReshapeOptions((1, n)))
    b.mark_output(y)
    return b.build()


def save_model(tmp_path, blob, name="m.tflite"):
    p = tmp_path / name
    p.write_bytes(blob)
    return p


def save_img(path, pixels: np.ndarray, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze(-1) if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels).save(path, **kw)


def one_hot_pixel(k: int, hw=(2, 2), value=200) -> np.ndarray:
    img = np.zeros(hw, np.uint8)
    img.flat[k] = value
    return img


def assert_one_paragraph(r, *needles):
    assert_input_error(r, *needles)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def in_process(capsys):
    """`qsim ARGS` through qsim.cli.main in this process (any exception other than QsimError escapes
    and fails the test): returns a CompletedProcess-like result for assert_one_paragraph."""
    from types import SimpleNamespace
    from qsim.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return run


# ------------------------------------------------------------------ arrays

def test_npz_x_y_and_first_two_arrays(tmp_path):
    g = load_bytes(flat_model((1, 2, 2, 1)))
    x = np.arange(3 * 4, dtype=np.int8).reshape(3, 2, 2, 1)
    y = np.array([3, 3, 1], np.int64)
    np.savez(tmp_path / "named.npz", y=y, x=x)  # names win over order
    np.savez(tmp_path / "positional.npz", x, y)
    np.savez(tmp_path / "onehot.npz", x=x, y=np.eye(4, dtype=np.float32)[y])
    for f in ("named.npz", "positional.npz", "onehot.npz"):
        d = qdata.load_dataset(tmp_path / f, g)
        assert d.x.dtype == np.int8 and d.x.shape == (3, 2, 2, 1) and np.array_equal(d.x, x), f
        assert d.y.tolist() == [3, 3, 1], f
    # flat samples and samples with the batch dimension are accepted, reshaped to [N, 2, 2, 1]
    np.save(tmp_path / "flat.npy", x.reshape(3, 4))
    np.save(tmp_path / "batched.npy", x.reshape(3, 1, 2, 2, 1))
    for f in ("flat.npy", "batched.npy"):
        d = qdata.load_dataset(tmp_path / f, g)
        assert np.array_equal(d.x, x) and d.y is None


def test_float_arrays_are_quantized_and_mean_std_applies(tmp_path):
    """scale 1/128, zp 0.  Float data: q = round(x * 128).  --mean/--std 127.5 on pixels:
    (p - 127.5) / 127.5 * 128 -> p=0: -128, p=128: 0.50196 -> 1 (0.5/127.5*128), p=255: 128 -> saturates 127."""
    g = load_bytes(flat_model((1, 3), scale=1 / 128, zp=0))
    np.save(tmp_path / "real.npy", np.array([[0.5, -0.25, 2.0]], np.float32))
    d = qdata.load_dataset(tmp_path / "real.npy", g)
    assert d.x.tolist() == [[64, -32, 127]]
    assert any("real values" in n for n in d.notes) and any("saturated (1 to 127, 0 to -128)" in n for n in d.notes)
    np.save(tmp_path / "px.npy", np.array([[0, 128, 255]], np.uint8))
    d = qdata.load_dataset(tmp_path / "px.npy", g, mean=127.5, std=127.5)
    assert d.x.tolist() == [[-128, 1, 127]]
    with pytest.raises(QsimError, match="does not fit"):  # uint8 pixels are not int8 values
        qdata.load_dataset(tmp_path / "px.npy", g)


def test_streaming_batches_and_limit(tmp_path):
    g = load_bytes(flat_model((1, 4)))
    x = np.arange(40, dtype=np.int8).reshape(10, 4)
    np.savez_compressed(tmp_path / "d.npz", x=x, y=np.arange(10) % 4)
    s = qdata.open_dataset(tmp_path / "d.npz", g)
    assert len(s) == 10
    chunks = list(s.batches(batch_size=4, limit=9))
    assert [len(c[0]) for c in chunks] == [4, 4, 1]
    assert np.array_equal(np.concatenate([c[0] for c in chunks]), x[:9])
    assert np.concatenate([c[1] for c in chunks]).tolist() == (np.arange(9) % 4).tolist()
    assert np.array_equal(s.load(limit=3).x, x[:3])


# ------------------------------------------------------------------ image folders

def test_image_folder_gray_model_with_png_bmp_jpeg(tmp_path):
    """Classes from sorted folder names; RGB images -> luminance for a 1-channel input; 'shift': q = p - 128."""
    root = tmp_path / "imgs"
    save_img(root / "b_one" / "x.png", one_hot_pixel(1))
    save_img(root / "a_zero" / "y.bmp", one_hot_pixel(0))
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[1, 1] = (0, 255, 0)  # luminance round(0.587 * 255) = 150
    save_img(root / "d_three" / "z.png", rgb)
    save_img(root / "c_two" / "w.jpg", np.full((2, 2), 90, np.uint8), quality=100)
    g = load_bytes(flat_model((1, 2, 2, 1)))
    d = qdata.load_dataset(root, g)
    assert d.class_names == ["a_zero", "b_one", "c_two", "d_three"] and d.y.tolist() == [0, 1, 2, 3]
    assert d.x.shape == (4, 2, 2, 1)
    assert d.x[0].ravel().tolist() == [200 - 128, -128, -128, -128]
    assert d.x[1].ravel().tolist() == [-128, 200 - 128, -128, -128]
    assert np.abs(d.x[2].astype(int) - (90 - 128)).max() <= 1  # JPEG
    assert d.x[3].ravel().tolist() == [-128, -128, -128, 150 - 128]
    assert any("NHWC" in n for n in d.notes)


def test_nchw_input_layout_detected(tmp_path):
    """[1, 3, 2, 2]: C = 3 first -> NCHW; x[n, c, h, w] = pixel[h, w, c] - 128."""
    rgb = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3) * 20
    save_img(tmp_path / "imgs" / "only" / "a.png", rgb)
    g = load_bytes(flat_model((1, 3, 2, 2)))
    names = tmp_path / "labels.txt"
    names.write_text("\n".join(f"class{i}" for i in range(12)) + "\n\n")
    (tmp_path / "imgs" / "class5").mkdir()
    (tmp_path / "imgs" / "only").rename(tmp_path / "imgs" / "class5" / "sub")  # nested: searched recursively
    d = qdata.load_dataset(tmp_path / "imgs", g, labels=names)
    assert d.x.shape == (1, 3, 2, 2) and d.y.tolist() == [5]
    want = rgb.astype(np.int16).transpose(2, 0, 1) - 128
    assert np.array_equal(d.x[0], want)
    assert any("NCHW" in n for n in d.notes)
    # qsim run's loader lays an image out the same way (one implementation)
    from qsim.inputs import load_inputs
    x = load_inputs(tmp_path / "imgs" / "class5" / "sub" / "a.png", g).arrays[0]
    assert x.shape == (1, 3, 2, 2) and np.array_equal(x[0], want)
    # a gray image is replicated over the 3 channels
    save_img(tmp_path / "imgs" / "class5" / "g.png", np.full((2, 2), 7, np.uint8))
    d = qdata.load_dataset(tmp_path / "imgs", g, labels=names)
    assert d.x[0].ravel().tolist() == [7 - 128] * 12


def test_images_are_center_cropped_and_resized(tmp_path):
    """A 4x2 (w x h) image for a 2x2 input: the central 2x2 columns are kept (bilinear resize of
    2x2 to 2x2 is the identity); an 8x8 image of one gray level stays that level."""
    wide = np.array([[1, 50, 60, 9], [2, 70, 80, 9]], np.uint8)
    save_img(tmp_path / "i" / "k" / "w.png", wide)
    save_img(tmp_path / "i" / "k" / "big.png", np.full((8, 8), 33, np.uint8))
    names = tmp_path / "l.txt"
    names.write_text("a\nb\nc\nk\n")
    d = qdata.load_dataset(tmp_path / "i", load_bytes(flat_model((1, 2, 2, 1))), labels=names)
    assert d.x[0].ravel().tolist() == [33 - 128] * 4  # big.png sorts first
    assert d.x[1].ravel().tolist() == [50 - 128, 60 - 128, 70 - 128, 80 - 128]


# ------------------------------------------------------------------ qsim eval

def test_eval_demo_digits_equals_sample_by_sample_accuracy():
    """examples/models: 354 of 360 held-out digits right (98.33%, README), batched or not."""
    model, data = DEMO / "demo_cnn_int8.tflite", DEMO / "demo_testset.npz"
    g = load(model)
    prep = prepare_graph(g, "tflm")
    z = np.load(data)
    correct = 0
    for x, y in zip(z["x"], z["y"]):
        out = prep.run([x[None]], keep_all=False)[g.outputs[0]].ravel()
        correct += int(np.argmax(out) == y)
    assert correct == 354
    first100 = sum(int(np.argmax(prep.run([x[None]], keep_all=False)[g.outputs[0]]) == y)
                   for x, y in zip(z["x"][:100], z["y"][:100]))
    res = evaluate(prep, qdata.open_dataset(data, g), batch_size=64)
    assert (res.samples, res.correct_top1, res.top1) == (360, correct, correct / 360)
    assert res.correct_top5 >= correct and "top-1 accuracy: 98.33% (354/360)" in res.render()
    r = qsim("eval", model, "--data", data, "--json", "--batch-size", 7, "--limit", 100)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["samples"] == 100 and doc["correct_top1"] == first100 and doc["samples_per_s"] > 0


def test_eval_image_folder_accuracy_and_class_names(tmp_path):
    """Class k's images have their brightest pixel at k (identity model: predicted k); one of the
    four is filed under the wrong class -> 75% top-1, 100% top-4 (K = 4 < 5 classes)."""
    root = tmp_path / "imgs"
    for k, name in enumerate(["cat", "dog", "eel", "fox"]):
        save_img(root / name / "good.png", one_hot_pixel(k))
    save_img(root / "cat" / "wrong.png", one_hot_pixel(2))
    model = save_model(tmp_path, flat_model((1, 2, 2, 1)))
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\neel\nfox\n")
    r = qsim("eval", model, "--data", root, "--labels", labels, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["correct_top1"], doc["samples"], doc["top_k"], doc["top5"]) == (4, 5, 4, 1.0)
    assert doc["class_names"] == ["cat", "dog", "eel", "fox"]


def test_eval_statistics_without_labels(tmp_path):
    """No labels: dequantized statistics and the argmax histogram, with class names from --labels.
    scale 1/255 (stored as float32), zp -128: real = (q + 128) / 255, so -128 -> 0 and 127 -> 1."""
    x = np.full((3, 4), -128, np.int8)
    x[0, 2] = x[1, 2] = 127   # argmax 2 twice
    x[2, 0] = -1              # argmax 0 once (real 127/255)
    np.save(tmp_path / "x.npy", x)
    model = save_model(tmp_path, flat_model((1, 4)))
    labels = tmp_path / "labels.txt"
    labels.write_text("w\nx\ny\nz\n")
    r = qsim("eval", model, "--data", tmp_path / "x.npy", "--labels", labels, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["top1"] is None
    o = doc["outputs"][0]
    real = (x.astype(np.float64) + 128) / 255
    assert o["argmax_counts"] == [1, 0, 2, 0]
    assert o["mean"] == pytest.approx(real.mean()) and o["std"] == pytest.approx(real.std())
    assert o["min"] == 0.0 and o["max"] == pytest.approx(1.0, rel=1e-6)
    r = qsim("eval", model, "--data", tmp_path / "x.npy", "--labels", labels)
    assert r.returncode == 0 and "argmax: y 2, w 1" in r.stdout


# ------------------------------------------------------------------ bad inputs: exit 2, one paragraph

def test_bad_datasets_exit_2(tmp_path, capsys):
    """In process through qsim.cli.main (fast); test_eval_image_folder_accuracy_and_class_names and the
    first case here go through a real subprocess."""
    nchw = save_model(tmp_path, flat_model((1, 3, 4, 4)), "nchw.tflite")
    gray = save_model(tmp_path, flat_model((1, 2, 2, 1)), "gray.tflite")
    np.savez(tmp_path / "nhwc.npz", x=np.zeros((5, 4, 4, 3), np.int8), y=np.zeros(5, np.int64))
    assert_one_paragraph(qsim("eval", nchw, "--data", tmp_path / "nhwc.npz"),
                         "wrong layout", "[3, 4, 4]", "NCHW", "x.transpose(0, 3, 1, 2)")
    qsim_ = in_process(capsys)
    np.save(tmp_path / "size.npy", np.zeros((5, 3, 3, 1), np.int8))
    assert_one_paragraph(qsim_("eval", gray, "--data", tmp_path / "size.npy"), "[2, 2, 1]", "[3, 3, 1]")

    flat = tmp_path / "flat"
    save_img(flat / "a.png", one_hot_pixel(0))
    assert_one_paragraph(qsim_("eval", gray, "--data", flat), "no class sub-folders")
    assert_one_paragraph(qsim_("eval", gray, "--data", tmp_path / "nope"), "not found")

    folders = tmp_path / "folders"
    for k in range(4):
        save_img(folders / f"c{k}" / "i.png", one_hot_pixel(k))
    (folders / "c2" / "i.png").unlink()
    (folders / "c2" / "notes.txt").write_text("no images here")
    assert_one_paragraph(qsim_("eval", gray, "--data", folders), "c2/ holds no PNG, JPEG or BMP images")
    save_img(folders / "c2" / "i.png", one_hot_pixel(2))
    (folders / "c3" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(40))
    assert_one_paragraph(qsim_("eval", gray, "--data", folders), "broken.jpg")
    (folders / "c3" / "broken.jpg").unlink()

    labels = tmp_path / "labels.txt"
    labels.write_text("c0\nc1\nc2\n")
    assert_one_paragraph(qsim_("eval", gray, "--data", folders, "--labels", labels),
                         "names 3 classes but the model's output has 4")
    labels.write_text("c0\nc1\nc2\nother\n")
    assert_one_paragraph(qsim_("eval", gray, "--data", folders, "--labels", labels), "'c3'")
    (folders / "c3" / "i.png").unlink()
    (folders / "c3").rmdir()
    assert_one_paragraph(qsim_("eval", gray, "--data", folders), "3 class sub-folder(s)", "--labels")
    np.savez(tmp_path / "y5.npz", x=np.zeros((2, 2, 2, 1), np.int8), y=np.array([0, 4]))
    assert_one_paragraph(qsim_("eval", gray, "--data", tmp_path / "y5.npz"), "4 classes")
    assert_one_paragraph(qsim_("eval", gray, "--data", folders, "--image-mode", "raw", "--mean", "127.5"), "raw")
    assert_one_paragraph(qsim_("eval", gray, "--data", folders, "--mean", "1,2,3", "--std", "2"), "one value or 1")
    np.savez(tmp_path / "ok.npz", x=np.zeros((2, 2, 2, 1), np.int8), y=np.array([0, 3]))
    assert_one_paragraph(qsim_("eval", gray, "--data", tmp_path / "ok.npz", "--limit", "0"), "--limit")


def test_eval_person_detect_raw_image_folder(tmp_path):
    """TFLM's own test images in a class folder layout, --image-mode raw (their bytes are int8):
    person_detect answers both right (labels: TFLM's model_settings order)."""
    import shutil
    from conftest import shared_model

    root = tmp_path / "pd"
    for cls, img in (("person", "person.bmp"), ("notperson", "no_person.bmp")):
        (root / cls).mkdir(parents=True)
        shutil.copy(shared_model(img), root / cls / img)
    labels = tmp_path / "labels.txt"
    labels.write_text("notperson\nperson\n")
    g = load(shared_model("person_detect.tflite"))
    data = qdata.open_dataset(root, g, labels=labels, image_mode="raw")
    assert data.y.tolist() == [0, 1] and any("NHWC" in n for n in data.notes)
    res = evaluate(prepare_graph(g, "tflm"), data, batch_size=1)
    assert (res.samples, res.correct_top1) == (2, 2), res.render()
