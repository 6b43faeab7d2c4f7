"""`import qsim` as a user would: load, run, check, profile and codegen through `qsim.*` only.

Goldens: TFLite Micro's outputs and preserved tensors (the reference interpreter), the
reference comparison's own verdict, and hand-derived quantization arithmetic.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import qsim
from conftest import REPO, require_module, shared_model
from qsim import QsimError

DEMO = REPO / "examples" / "models" / "demo_cnn_int8.tflite"
INT8_MODELS = ["ad01_int8.tflite", "hello_world_int8.tflite", "kws_ref_model.tflite",
               "micro_speech_quantized.tflite", "person_detect.tflite", "pretrainedResnet_quant.tflite",
               "vww_96_int8.tflite"]


def tflm_tensors(blob: bytes, samples, tensors) -> list[dict[int, np.ndarray]]:
    """TFLite Micro, every tensor preserved: the golden for runs, dumps and expected.bin."""
    require_module("tflite_micro", "TFLite Micro is the golden")
    from qsim.reference import TFLMRunner
    r = TFLMRunner(blob)
    return [r.run(s, tensors) for s in samples]


@pytest.mark.parametrize("name", INT8_MODELS)
def test_round_trip_every_shared_int8_model(name, tmp_path):
    path = shared_model(name)
    m = qsim.load(path)
    x = m.random_inputs(2, seed=7)
    gold = tflm_tensors(m.blob, x, m.graph.outputs)
    out = m.outputs[0]
    # run: one sample by array, by {name: array}, by {index: array}; a list of 2 samples batched
    single = m.run(x[0][0])
    assert np.array_equal(single[out.name], gold[0][out.index].reshape(out.shape))
    assert np.array_equal(m.run({m.inputs[0].name: x[0][0]})[out.index], single[out.name])
    assert np.array_equal(m.run({m.inputs[0].index: x[0][0]}).outputs[out.key], single[out.name])
    batch = m.run(x)
    assert batch.batch == 2
    for k in range(2):
        assert np.array_equal(batch[out.name][k].reshape(-1), gold[k][out.index].reshape(-1))
    # check: one random input, both references (LiteRT refuses person_detect: reported, TFLM still decides)
    rep = m.check(inputs=1, reference="both")
    assert rep.ok and rep.first_divergence is None and rep.n_inputs == 1
    assert {r["reference"] for r in rep.rows} >= {"tflm"}
    assert len([r for r in rep.rows if r["reference"] == "tflm"]) == sum(len(op.outputs) for op in m.graph.operators)
    assert json.loads(json.dumps(rep.to_dict()))["ok"] is True
    # profile: per-layer records and totals agree, CSV has one row per layer
    prof = m.profile(hw="edge16", events=False)
    assert len(prof.layers) == len(m.graph.operators)
    assert prof.totals["cycles"] == sum(L["cycles"] for L in prof.layers) > 0
    assert len(prof.to_csv().splitlines()) == len(prof.layers) + 1
    assert json.loads(prof.to_json())["totals"]["cycles"] == prof.totals["cycles"]
    # codegen (not compiled here): expected.bin holds TFLM's outputs for the given samples
    res = m.codegen(tmp_path / "fw", name="net", inputs=x)
    assert (tmp_path / "fw" / "net.c").is_file() and (tmp_path / "fw" / "qk_check.c").is_file()
    expected = np.frombuffer((tmp_path / "fw" / "expected.bin").read_bytes(), np.int8).reshape(2, -1)
    for k in range(2):
        assert np.array_equal(expected[k], np.concatenate([gold[k][t].reshape(-1) for t in m.graph.outputs]))
    assert (tmp_path / "fw" / "input.bin").read_bytes() == b"".join(a.tobytes() for s in x for a in s)
    assert res.name == "net"


def test_tensor_info_quantization_by_hand():
    m = qsim.load(DEMO)
    t = m.inputs[0]
    assert (t.name, t.shape, t.dtype, t.zero_point) == ("image", (1, 8, 8, 1), np.dtype(np.int8), -128)
    assert t.scale == pytest.approx(1 / 255, rel=1e-6)
    # q = clamp(round_half_away(x / s) + zp): 0 -> -128, 1.0 -> 127, 2.0 -> clamped 127, -1 -> clamped -128,
    # 0.1 / (1/255) = 25.5, but in float32 0.1f / 0.003921569f = 25.499998 -> 25 -> -103 (TFLite divides in
    # float32); 0.3f / 0.003921569f = 76.5 exactly -> half away from zero: 77 -> -51
    assert t.quantize(np.array([0.0, 1.0, 2.0, -1.0, 0.1, 0.3])).tolist() == [-128, 127, 127, -128, -103, -51]
    assert t.quantize(np.zeros(3)).dtype == np.int8
    assert t.dequantize(np.array([-128, 127], np.int8)) == pytest.approx([0.0, 1.0], abs=1e-6)
    # per-channel weights: real[c] = scale[c] * (q - zp[c]) along the quantized axis
    w = next(x for x in m.tensors if x.is_const and x.per_channel)
    q = m.graph.tensors[w.index].data
    real = w.dequantize(q)
    c = min(2, w.scales.size - 1)
    sl = [slice(None)] * q.ndim
    sl[w.axis] = c
    assert np.allclose(real[tuple(sl)], w.scales[c] * (q[tuple(sl)].astype(np.float64) - w.zero_points[c]))
    assert w.scale is None and w.zero_point is None
    with pytest.raises(QsimError, match="quantized per channel"):
        w.dequantize(q.reshape(-1))


def test_run_result_keys_topk_and_batches():
    m = qsim.load(DEMO)
    data = np.load(REPO / "examples" / "models" / "demo_testset.npz")
    xs = data["x"][:6]
    out = m.outputs[0]
    single = [m.run(x) for x in xs]
    r = m.run(xs, batch_size=4)  # [N, 8, 8, 1] batched array, in chunks of 4
    assert r.batch == 6 and r[out.name].shape == (6, 10)
    for k in range(6):
        assert np.array_equal(r[out.name][k], single[k][out.name][0])
        assert np.array_equal(r.sample(k)[out.index], single[k][out.index])
    assert np.array_equal(m.run(list(xs))[out.name], r[out.name])
    assert np.array_equal(m.run(xs.astype(np.int64))[out.name], r[out.name])  # integers that fit int8 are cast
    assert np.array_equal(m.run(xs[:, None])[out.name], r[out.name])  # [N, 1, 8, 8, 1]: a stack of samples
    # top-k: the highest dequantized scores, ties broken by the lower index
    top = single[0].top_k(3)
    deq = single[0].dequantized()[out.name][0]
    assert [t.index for t in top] == list(np.argsort(-deq, kind="stable")[:3])
    assert top[0].real == pytest.approx(deq.max()) and top[0].q == int(single[0][out.name][0].max())
    assert [t[0].index for t in r.top_k(1)] == [s.top_k(1)[0].index for s in single]
    # keep="all": every op output, keyed by name
    full = m.run(xs[0], keep="all")
    assert set(full.tensors) == {m.tensors[i].key for i in [m.graph.inputs[0]]
                                 + [t for op in m.graph.operators for t in op.outputs]}
    with pytest.raises(QsimError, match="keep='all'"):
        single[0]["conv2"]


def test_duplicate_tensor_names_are_refused_by_name_but_work_by_index():
    from qsim.builder import ModelBuilder
    b = ModelBuilder(description="dup")
    x = b.add_input("x", (1, 4), np.int8, scale=0.5, zero_point=0)
    h = b.add_tensor("same", (1, 4), np.int8, scale=0.5, zero_point=0)
    y = b.add_tensor("same", (1, 4), np.int8, scale=0.5, zero_point=0)
    b.add_op("RELU", [x], [h])
    b.add_op("RELU", [h], [y])
    b.mark_output(y)
    m = qsim.load(b.build(), name="dup.tflite")
    with pytest.raises(QsimError, match=r"'same' is used by 2 tensors \(indices \[1, 2\]\)"):
        m.tensor("same")
    r = m.run(np.array([[-3, -1, 0, 5]], np.int8), keep="all")
    assert r[2].tolist() == [[0, 0, 0, 5]] and r["same#2"].tolist() == [[0, 0, 0, 5]]
    assert set(r.outputs) == {"same#2"}


@pytest.mark.parametrize("call, words", [
    (lambda m: m.run(np.zeros((1, 8, 8, 2), np.int8)), "shape [1, 8, 8, 1]"),
    (lambda m: m.run(np.zeros((1, 8, 8, 1), np.float32)), "quantize it first"),
    (lambda m: m.run({"nope": np.zeros((1, 8, 8, 1), np.int8)}), "no tensor named 'nope'"),
    (lambda m: m.run({"probabilities": np.zeros((1, 10), np.int8)}), "not an input"),
    (lambda m: m.run([]), "empty list"),
    (lambda m: m.run(np.full((1, 8, 8, 1), 128)), "does not fit"),
    (lambda m: m.run([np.zeros((1, 8, 8, 1), np.int8), np.zeros((2, 8, 8, 1), np.int8)]), "element 1 of the list holds 2"),
    (lambda m: m.run(np.zeros((1, 8, 8, 1), np.int8), keep="some"), "keep must be"),
    (lambda m: m.run(np.zeros((1, 8, 8, 1), np.int8), batch_size=0), "batch_size"),
    (lambda m: m.run(np.zeros((1, 8, 8, 1), np.int8), profile="fastest"), "fastest"),
    (lambda m: m.run(np.zeros((1, 8, 8, 1), np.int8)).top_k(-1), "top-k"),
    (lambda m: m.tensor(999), "out of range"),
    (lambda m: m.check(reference="onnx"), "unknown reference"),
    (lambda m: m.check(inputs=0), "at least 1"),
    (lambda m: m.profile(hw="nosuch"), "unknown hardware preset"),
    (lambda m: m.profile(rows=0), "at least"),
    (lambda m: m.profile(banana=3), "unknown hardware field"),
    (lambda m: m.outputs[0].quantize(np.array([np.nan])), "NaN"),
    (lambda m: m.codegen("/tmp/never", rounding="triple", inputs=np.zeros((1, 8, 8, 1), np.int8)), "rounding"),
])
def test_bad_api_input_raises_qsim_error(call, words):
    m = qsim.load(DEMO)
    with pytest.raises(QsimError, match=None) as e:
        call(m)
    assert words in str(e.value), str(e.value)


@pytest.mark.parametrize("bad, words", [(123, "path or the bytes"), (b"junk", "not a TensorFlow Lite model"),
                                        ("/no/such/model.tflite", "not found")])
def test_bad_load_raises_qsim_error(bad, words):
    with pytest.raises(QsimError, match=words):
        qsim.load(bad)


def test_version_and_all():
    import re
    text = (REPO / "pyproject.toml").read_text()
    assert qsim.__version__ == re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)
    assert set(qsim.__all__) >= {"load", "Model", "TensorInfo", "RunResult", "CheckReport", "ProfileReport"}
    for name in qsim.__all__:
        if name != "__version__":
            assert getattr(qsim, name).__doc__, name
    r = subprocess.run([sys.executable, "-m", "qsim.cli", "--version"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == f"qsim {qsim.__version__}"


def test_profile_report_exports(tmp_path):
    m = qsim.load(DEMO)
    p = m.profile(hw="tiny8", array="4x4", sram_kib=8, acc_bits=20)
    assert (p.hw.rows, p.hw.cols, p.hw.ifmap_sram_kib, p.hw.acc_bits) == (4, 4, 8, 20)
    assert "acc_overflows" in p.totals  # values went through the datapath (a random input)
    doc = json.loads(p.trace(tmp_path / "t.json").read_text())
    assert sum(e["args"]["cycles"] for e in doc["traceEvents"] if e.get("cat") == "layer") == p.totals["cycles"]
    p.to_csv(tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text().startswith("index,op,name")
    assert "acc_overflows" not in m.profile(inputs=None).totals


# ------------------------------------------------------------------ the CLI over the API

def cli(capsys, *args):
    """`qsim ARGS` in process (tests/test_cli.py runs the console script as a subprocess)."""
    from types import SimpleNamespace

    from qsim.cli import main
    capsys.readouterr()
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return SimpleNamespace(returncode=rc, stdout=cap.out, stderr=cap.err)


def test_dump_writes_every_tensor_by_name(tmp_path, capsys):
    """`qsim dump`: the input and every op output, keyed by tensor name, equal to TFLM's preserved tensors."""
    model = shared_model("kws_ref_model.tflite")
    m = qsim.load(model)
    x = m.random_inputs(1, seed=3)[0]
    np.save(tmp_path / "x.npy", x[0])
    r = cli(capsys, "dump", model, "--input", tmp_path / "x.npy", "-o", tmp_path / "t.npz", "--json")
    assert r.returncode == 0, r.stderr
    produced = [t for op in m.graph.operators for t in op.outputs]
    gold = tflm_tensors(m.blob, [x], produced)[0]
    z = np.load(tmp_path / "t.npz")
    assert set(z.files) == {m.tensors[t].name for t in produced + list(m.graph.inputs)}
    for t in produced:
        assert np.array_equal(z[m.tensors[t].name].reshape(-1), gold[t].reshape(-1)), m.tensors[t].name
    assert len(json.loads(r.stdout)["tensors"]) == len(z.files)
    r = cli(capsys, "dump", model, "-o", tmp_path / "t.npz")  # neither --input nor --random
    assert r.returncode == 2 and "one of the arguments --input --random is required" in r.stderr


def test_run_random_n(tmp_path, capsys):
    """`qsim run --random N`: N samples, each the TFLM output for the same seeded input."""
    model = shared_model("hello_world_int8.tflite")
    r = cli(capsys, "run", model, "--random", 3, "--seed", 5, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    m = qsim.load(model)
    xs = m.random_inputs(3, seed=5)
    gold = tflm_tensors(m.blob, xs, m.graph.outputs)
    assert [s["outputs"][0]["q"] for s in doc["samples"]] == [g[m.graph.outputs[0]].tolist() for g in gold]
    r = cli(capsys, "run", model, "--random", 2)
    assert r.returncode == 0 and r.stdout.count("sample ") == 2
    assert cli(capsys, "run", model, "--random", 0).returncode == 2


def test_image_mode_warning_on_real_and_synthetic_images():
    from qsim.inputs import image_mode_warning, read_image
    person = read_image(shared_model("person.bmp"), "raw")  # int8 values stored as bytes (TFLM's test image)
    no_person = read_image(shared_model("no_person.bmp"), "raw")  # ordinary 0..255 pixels
    assert "--image-mode raw" in image_mode_warning(person, "shift", "person.bmp")
    assert image_mode_warning(person, "raw") is None
    assert image_mode_warning(no_person, "shift") is None
    assert "--image-mode shift" in image_mode_warning(no_person, "raw")
    # a smooth uint8 ramp across 127/128: smooth as uint8, a 255 jump as int8
    ramp = np.tile(np.arange(100, 164, dtype=np.uint8), (16, 1))[:, :, None]
    assert image_mode_warning(ramp, "shift") is None and image_mode_warning(ramp, "raw") is not None
    flat = np.full((16, 16, 1), 7, np.uint8)  # nothing to judge: no warning either way
    assert image_mode_warning(flat, "shift") is None and image_mode_warning(flat, "raw") is None


def test_image_mode_accepted_and_warned_by_subcommands(tmp_path, capsys):
    model, img = shared_model("person_detect.tflite"), shared_model("person.bmp")
    r = cli(capsys, "run", model, "--input", img, "--json")
    assert r.returncode == 0 and "qsim: warning: person.bmp: its bytes look like int8" in r.stderr
    r = cli(capsys, "run", model, "--input", img, "--image-mode", "raw", "--json")
    assert r.returncode == 0 and "warning" not in r.stderr
    r = cli(capsys, "profile", model, "--input", img, "--image-mode", "raw", "--json")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert json.loads(r.stdout)["input"] == str(img)
    r = cli(capsys, "dump", model, "--input", img, "--image-mode", "raw", "-o", tmp_path / "d.npz")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    r = cli(capsys, "codegen", model, "-o", tmp_path / "fw", "--inputs", img, "--image-mode", "raw")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert (tmp_path / "fw" / "input.bin").read_bytes() == qsim.load(model).read_inputs(img, image_mode="raw")[0]["input"].tobytes()


def test_codegen_force_removes_an_earlier_names_files(tmp_path, capsys):
    model = shared_model("hello_world_int8.tflite")
    out = tmp_path / "fw"
    assert cli(capsys, "codegen", model, "-o", out, "--name", "old").returncode == 0
    (out / "notes.txt").write_text("user file")
    (out / "expected.bin").write_bytes(b"stale")
    r = cli(capsys, "codegen", model, "-o", out, "--name", "new", "--force")
    assert r.returncode == 0, r.stderr
    names = {p.name for p in out.iterdir()}
    assert not {"old.h", "old.c", "old_weights.c", "old_report.json"} & names
    assert {"new.h", "new.c", "new_weights.c", "new_report.json", "notes.txt"} <= names
    assert "expected.bin" not in names  # qsim's expectations for an earlier generation are stale too


def test_multi_input_model_samples_by_name_list_and_batch():
    from qsim.builder import ModelBuilder
    b = ModelBuilder(description="two inputs")
    a = b.add_input("a", (1, 6), np.int8, scale=0.5, zero_point=3)
    c = b.add_input("b", (1, 6), np.int8, scale=0.25, zero_point=-2)
    y = b.add_tensor("sum", (1, 6), np.int8, scale=0.75, zero_point=1)
    b.add_op("ADD", [a, c], [y])
    b.mark_output(y)
    m = qsim.load(b.build(), name="add2.tflite")
    samples = m.random_inputs(3, seed=11)
    gold = [g[y].reshape(-1) for g in tflm_tensors(m.blob, samples, [y])]
    for k, (xa, xb) in enumerate(samples):
        assert np.array_equal(m.run({"a": xa, "b": xb})["sum"][0], gold[k])
        assert np.array_equal(m.run([xa, xb])["sum"][0], gold[k])  # one sample, arrays in input order
    batched = m.run(samples)  # a list of samples, each [a, b]
    assert batched.batch == 3 and np.array_equal(batched["sum"], np.stack(gold))
    stacked = m.run({"a": np.concatenate([s[0] for s in samples]), "b": np.concatenate([s[1] for s in samples])})
    assert np.array_equal(stacked["sum"], np.stack(gold))
    with pytest.raises(QsimError, match="missing input"):
        m.run({"a": samples[0][0]})
    with pytest.raises(QsimError, match="has 2 inputs"):
        m.run(samples[0][0])
    with pytest.raises(QsimError, match="different numbers of samples"):
        m.run({"a": np.zeros((2, 6), np.int8), "b": np.zeros((3, 6), np.int8)})


def test_run_input_file_with_n_samples(tmp_path, capsys):
    """An .npy of N samples (leading batch axis): `qsim run` prints each, equal to TFLM's outputs."""
    x = np.load(REPO / "examples" / "models" / "demo_testset.npz")["x"][:4]
    np.save(tmp_path / "x4.npy", x)
    r = cli(capsys, "run", DEMO, "--input", tmp_path / "x4.npy", "--json", "--top-k", 1)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    m = qsim.load(DEMO)
    gold = tflm_tensors(m.blob, [[s[None]] for s in x], m.graph.outputs)
    assert [s["outputs"][0]["q"] for s in doc["samples"]] == [g[m.graph.outputs[0]].tolist() for g in gold]
