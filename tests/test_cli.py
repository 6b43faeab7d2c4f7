"""The `qsim` command line, run as a subprocess: exit codes (0 ok, 1 mismatch, 2 bad input),
one-paragraph errors without tracebacks, one JSON document with --json."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, shared_model

ENV_TIMEOUT = 300


def qsim(*args):
    """Run `python -m qsim.cli ARGS`; returns CompletedProcess (text)."""
    r = subprocess.run([sys.executable, "-m", "qsim.cli", *map(str, args)], cwd=REPO, capture_output=True,
                       text=True, timeout=ENV_TIMEOUT)
    return r


def assert_input_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    assert "qsim: error:" in r.stderr or "usage:" in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


# ------------------------------------------------------------------ bad model files

def test_missing_model(tmp_path):
    assert_input_error(qsim("inspect", tmp_path / "none.tflite"), "not found")


def test_empty_model(tmp_path):
    p = tmp_path / "empty.tflite"
    p.write_bytes(b"")
    assert_input_error(qsim("run", p, "--input", p), "not a TensorFlow Lite model")


def test_random_bytes_model(tmp_path):
    p = tmp_path / "r.tflite"
    blob = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    p.write_bytes(blob[:4] + b"TFL3" + blob[8:])
    assert_input_error(qsim("inspect", p))


def test_truncated_model(tmp_path):
    p = tmp_path / "t.tflite"
    p.write_bytes(shared_model("kws_ref_model.tflite").read_bytes()[:5000])
    assert_input_error(qsim("check", p, "--random", 1))


def test_float_model(tmp_path):
    m = shared_model("ad01_fp32.tflite")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 640), np.float32))
    assert_input_error(qsim("run", m, "--input", x), "float model", "FULLY_CONNECTED")
    r = qsim("inspect", m)  # inspect describes it and says why it cannot be simulated
    assert r.returncode == 0 and "NOT SIMULATABLE" in r.stdout


def test_unsupported_ops_listed_everywhere(tmp_path):
    from test_loader import unsupported_model

    p = tmp_path / "bad_ops.tflite"
    p.write_bytes(unsupported_model())
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 4), np.int8))
    r = qsim("run", p, "--input", x)
    assert_input_error(r, "3 op(s)", "op #0 RNN", "op #2 RNN", "op #3 BIDIRECTIONAL_SEQUENCE_LSTM")
    r = qsim("inspect", p, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["unsupported"]) == 3 and [o["op"] for o in doc["ops"]][1] == "FULLY_CONNECTED"


# ------------------------------------------------------------------ bad inputs

def test_wrong_input_shape(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 639), np.int8))
    assert_input_error(qsim("run", shared_model("ad01_int8.tflite"), "--input", x), "[1, 640]")


def test_wrong_input_dtype_hints_float_input(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 640), np.float32))
    assert_input_error(qsim("run", shared_model("ad01_int8.tflite"), "--input", x), "int8", "--float-input")


def test_input_file_missing_and_unknown_type(tmp_path):
    m = shared_model("hello_world_int8.tflite")
    assert_input_error(qsim("run", m, "--input", tmp_path / "nope.npy"), "not found")
    t = tmp_path / "x.txt"
    t.write_text("1 2 3")
    assert_input_error(qsim("run", m, "--input", t), ".npy")


def test_unknown_profile_and_usage_errors():
    m = shared_model("hello_world_int8.tflite")
    r = qsim("run", m, "--input", "x.npy", "--profile", "fastest")
    assert_input_error(r, "fastest")
    assert_input_error(qsim("check", m, "--reference", "onnx"))
    assert_input_error(qsim())
    assert_input_error(qsim("frobnicate"))


def test_float_input_out_of_range_warns(tmp_path):
    """hello_world input: scale 0.0244801, zp -128 -> representable [0, 6.24]; 7.0 is clamped, warned."""
    m = shared_model("hello_world_int8.tflite")
    x = tmp_path / "x.npy"
    np.save(x, np.array([[7.0]], np.float32))
    r = qsim("run", m, "--input", x, "--float-input", "--json")
    assert r.returncode == 0, r.stderr
    assert "qsim: warning:" in r.stderr and "outside the range" in r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["warnings"]) == 1
    np.save(x, np.array([[1.5]], np.float32))
    r = qsim("run", m, "--input", x, "--float-input")
    assert r.returncode == 0 and "warning" not in r.stderr
    # +1e10 saturates to 127 (not C's out-of-range cast, -128): same outputs as the int8 input 127
    np.save(x, np.array([[1e10]], np.float64))
    r = qsim("run", m, "--input", x, "--float-input", "--json")
    assert r.returncode == 0 and "saturated (1 to 127, 0 to -128)" in r.stderr, r.stderr
    q = tmp_path / "q.npy"
    np.save(q, np.array([[127]], np.int8))
    want = json.loads(qsim("run", m, "--input", q, "--json").stdout)["outputs"][0]["q"]
    assert json.loads(r.stdout)["outputs"][0]["q"] == want
    np.save(x, np.array([[np.nan]], np.float32))
    assert_input_error(qsim("run", m, "--input", x, "--float-input"), "NaN")


# ------------------------------------------------------------------ normal use

def test_inspect_text_and_json():
    m = shared_model("kws_ref_model.tflite")
    r = qsim("inspect", m)
    assert r.returncode == 0, r.stderr
    assert "input 'input_1' expects int8" in r.stdout and "q = round(x / 0.584703) + (83)" in r.stdout
    r = qsim("inspect", m, "--json")
    doc = json.loads(r.stdout)
    # MACs by hand: first CONV_2D is 10x4 filter, 1 in-channel, 64 out on a 25x5 output = 320000
    assert doc["ops"][0]["op"] == "CONV_2D" and doc["ops"][0]["macs"] == 25 * 5 * 64 * 10 * 4
    assert doc["total_macs"] == sum(o["macs"] for o in doc["ops"])
    w = doc["ops"][0]["params"][0]["quant"]
    assert w["per_channel"] and w["count"] == 64


def test_run_prints_dequantized_and_topk(tmp_path):
    """hello_world (sine): q input of x=1.5 -> compare qsim's run to TFLM's output, dequantized."""
    from qsim.loader import load
    from qsim.reference import TFLMRunner

    m = shared_model("hello_world_int8.tflite")
    g = load(m)
    x = tmp_path / "x.npy"
    q_in = np.array([[-67]], np.int8)
    np.save(x, q_in)
    r = qsim("run", m, "--input", x, "--json", "--top-k", 1)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    out_t = g.tensors[g.outputs[0]]
    ref_q = TFLMRunner(m.read_bytes()).run([q_in], g.outputs)[g.outputs[0]]
    assert doc["outputs"][0]["q"] == ref_q.tolist()
    expect_real = out_t.quant.scale0 * (int(ref_q.ravel()[0]) - out_t.quant.zp0)
    assert doc["outputs"][0]["real"][0][0] == pytest.approx(expect_real, rel=1e-12)
    assert doc["outputs"][0]["top_k"][0]["index"] == 0


def test_check_exit_codes():
    m = shared_model("ad01_int8.tflite")
    r = qsim("check", m, "--random", 2, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and [c["reference"] for c in doc["comparisons"]] == ["litert", "tflm"]
    assert all(c["profile"] == c["reference"] for c in doc["comparisons"])
    # Forcing the wrong rounding profile against TFLM must be caught (ad01: 1 LSB in FC layers).
    r = qsim("check", m, "--random", 2, "--reference", "tflm", "--profile", "litert")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "first divergent op: #" in r.stdout and "MISMATCH" in r.stdout


def test_check_litert_refuses_person_detect():
    m = shared_model("person_detect.tflite")
    r = qsim("check", m, "--random", 1, "--reference", "litert")
    assert_input_error(r, "LiteRT refused this model: quantized_dimension must be in range")


def test_help_lists_commands():
    r = qsim("--help")
    assert r.returncode == 0
    for c in ("inspect", "run", "check"):
        assert c in r.stdout


def test_console_script_installed():
    """`qsim` is the console script pyproject.toml declares (qsim.cli:main)."""
    import os
    import shutil
    from pathlib import Path

    exe = Path(sys.executable).parent / "qsim"
    if not exe.is_file():
        exe = shutil.which("qsim")
    if not exe:
        if os.environ.get("CI"):
            pytest.fail("the qsim console script is not installed (pip install -e .)")
        pytest.skip("the qsim console script is not installed (pip install -e .)")
    r = subprocess.run([str(exe), "inspect", shared_model("hello_world_int8.tflite"), "--json"],
                       capture_output=True, text=True, timeout=ENV_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ops"][0]["op"] == "FULLY_CONNECTED"


def test_plugin_subcommands_are_registered(monkeypatch):
    """A plug-in module's register(subparsers) adds a subcommand whose handler's int is the exit code."""
    import types

    from qsim import cli

    calls = []

    def register(sub):
        p = sub.add_parser("fakeprof", help="test plug-in")
        p.add_argument("model")
        p.set_defaults(func=lambda args: calls.append(args.model) or 7)

    fake = types.ModuleType("qsim.accel.cli")
    fake.register = register
    monkeypatch.setitem(sys.modules, "qsim.accel.cli", fake)
    assert cli.main(["fakeprof", "m.tflite"]) == 7 and calls == ["m.tflite"]


def test_plugin_absence_is_tolerated_but_broken_plugin_is_not(monkeypatch):
    from qsim import cli

    assert cli._plugin("qsim.no_such_pkg.cli") is None
    assert cli._plugin("no_such_top_level.cli") is None

    def import_with_missing_dependency(name):
        raise ModuleNotFoundError("No module named 'scalesim'", name="scalesim")

    monkeypatch.setattr(cli.importlib, "import_module", import_with_missing_dependency)
    with pytest.raises(ModuleNotFoundError):  # a plug-in's own broken import must surface
        cli._plugin("qsim.accel.cli")


def test_run_image_through_cli():
    """person.bmp -> person_detect (raw bytes as int8, as TFLM's example): 'person' (index 1) wins."""
    m = shared_model("person_detect.tflite")
    r = qsim("run", m, "--input", shared_model("person.bmp"), "--image-mode", "raw", "--top-k", 2, "--json")
    assert r.returncode == 0, r.stderr
    top = json.loads(r.stdout)["outputs"][0]["top_k"]
    assert [t["index"] for t in top] == [1, 0] and top[0]["real"] > 0.5
    r = qsim("run", m, "--input", shared_model("person.bmp"), "--float-input")
    assert_input_error(r, "--float-input applies to .npy/.npz")


def test_run_engine_native_equals_python_and_refusals_exit_2(tmp_path):
    """`qsim run --engine native` runs the model's C and prints the same outputs as --engine python
    (a batch of 5 keyword-model samples); a native run that cannot be (a requant variant) exits 2
    naming the reason."""
    m = shared_model("keyword_scrambled_8bit.tflite")
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(2).integers(-32768, 32768, (5, 96)).astype(np.int16))
    docs = {}
    for engine in ("python", "native"):
        r = qsim("run", m, "--input", x, "--engine", engine, "--json")
        assert r.returncode == 0, r.stderr
        docs[engine] = json.loads(r.stdout)
        assert docs[engine]["engine"] == engine
    assert [s["outputs"] for s in docs["native"]["samples"]] == [s["outputs"] for s in docs["python"]["samples"]]
    assert len(docs["native"]["samples"]) == 5
    r = qsim("run", m, "--input", x, "--engine", "native")
    assert r.returncode == 0 and "engine: native" in r.stdout, r.stderr
    assert_input_error(qsim("run", m, "--input", x, "--engine", "native", "--requant", "shift=8"), "engine='native'",
                       "requant")
    assert_input_error(qsim("run", m, "--input", x, "--engine", "gpu"), "invalid choice")
