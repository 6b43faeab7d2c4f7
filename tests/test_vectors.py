"""qsim vectors / Model.vectors: golden requant vectors of a GEMM layer (qsim/vectors.py).

The expected outputs of every GEMM layer of kws_ref_model are compared with TFLite Micro's
intermediate tensors (the real interpreter, all tensors preserved); the GEMM operands with the
accumulators by plain integer matrix products; the hex / CSV files with the npz by parsing them
back.  (The $readmemh testbench runs under Verilator in hdl_tests/test_hdl_kit.py.)
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import qsim
from conftest import shared_model
from qsim import fixedpoint as fp
from qsim.cli import main
from qsim.errors import QsimError
from qsim.vectors import GEMM_OPS, load_vectors


@pytest.fixture(scope="module")
def kws():
    return qsim.load(shared_model("kws_ref_model.tflite"))


def test_every_gemm_layer_of_kws_reproduces_tflm(kws):
    """Vectors (acc, tables, expected) of each CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED of
    kws_ref_model on 2 random samples: expected == TFLM's int8 output of that layer, exactly, and
    the GEMM operands multiply out to the accumulators."""
    pytest.importorskip("tflite_micro")
    from qsim.refrun import TFLMRunner
    samples = kws.random_inputs(2, seed=5)
    gemms = [op for op in kws.graph.operators if op.opcode in GEMM_OPS]
    assert len(gemms) == 10
    tflm = TFLMRunner(kws.blob, kws.graph)
    outs = [op.outputs[0] for op in gemms]
    ref = [tflm.run(s, outs) for s in samples]
    for op in gemms:
        v = kws.vectors(op.index, inputs=samples, gemm=True)
        want = np.concatenate([np.asarray(r[op.outputs[0]], np.int64).reshape(-1, v.channels) for r in ref])
        assert v.expected.shape == want.shape and v.samples == 2
        assert np.array_equal(v.expected, want), f"op {op.index} {op.opcode}: {np.sum(v.expected != want)} differ"
        assert v.rounding == "double" and v.profile == "tflm"
        a, b = v.gemm_a, v.gemm_b
        if op.opcode == "DEPTHWISE_CONV_2D":
            acc = (a.reshape(v.rows, b.shape[0], v.channels) * b[None]).sum(axis=1)
        else:
            acc = a @ b
        assert np.array_equal(acc, v.acc), op.index
        assert np.array_equal(v.acc_bias, (v.acc + v.bias + 2**31) % 2**32 - 2**31)


def _parse_hex(path, digits):
    vals = np.array([int(line, 16) for line in path.read_text().split()], dtype=np.int64)
    bits = 4 * digits
    return np.where(vals >= 1 << (bits - 1), vals - (1 << bits), vals)


def test_written_files_agree_with_each_other(kws, tmp_path):
    v = kws.vectors("functional_1/dense/BiasAdd", inputs=3, out_dir=tmp_path, seed=2, gemm=True)
    assert v.opcode == "FULLY_CONNECTED" and v.acc.shape == (3, 12)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["op_index"] == 11 and man["rows"] == 3 and man["channels"] == 12
    assert {c["name"] for c in man["columns"]} == {"acc", "acc_bias", "bias", "multiplier", "shift", "expected"}
    el = v.per_element()
    for c in man["columns"]:
        got = _parse_hex(tmp_path / c["hex_file"], c["hex_digits"])
        want = el[c["name"]].reshape(-1)
        if c["name"] == "shift":  # 2 hex digits hold the 6-bit two's complement
            want = want & 0xFF
            got = got & 0xFF
        assert np.array_equal(got, want), c["name"]
    assert _parse_hex(tmp_path / "params.hex", 2).tolist() == [v.zero_point, v.act_min, v.act_max]
    with open(tmp_path / "vectors.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 36
    r = rows[13]  # row 1, channel 1
    assert (int(r["row"]), int(r["channel"])) == (1, 1)
    assert int(r["acc"]) == v.acc[1, 1] and int(r["expected"]) == v.expected[1, 1]
    assert int(r["multiplier"]) == v.multiplier[1] and int(r["zero_point"]) == v.zero_point
    back = load_vectors(tmp_path)
    assert np.array_equal(back.expected, v.expected) and np.array_equal(back.gemm_b, v.gemm_b)
    assert back.layer == v.layer and back.rounding == v.rounding
    # expected is the requant of acc + bias by fixedpoint, whatever the sample
    assert np.array_equal(v.expected, fp.requantize(v.acc, v.bias, v.multiplier, v.shift, v.zero_point,
                                                    v.act_min, v.act_max, "double"))
    assert "requant_unit" in (tmp_path / "tb_vectors.sv").read_text()


def test_rounding_override_and_refusals(kws):
    v = kws.vectors(0, rounding="single")
    assert v.rounding == "single"
    with pytest.raises(QsimError, match="SOFTMAX.*GEMM layers: 0 CONV_2D"):
        kws.vectors(12)
    with pytest.raises(QsimError, match="no layer whose output tensor is named 'nope'"):
        kws.vectors("nope")
    with pytest.raises(QsimError, match="unknown rounding 'banker'"):
        kws.vectors(0, rounding="banker")
    with pytest.raises(QsimError, match="float rescale"):  # LiteRT's FULLY_CONNECTED is not fixed point
        kws.vectors(11, profile="litert")
    assert kws.vectors(11, profile="litert", rounding="double").rounding == "double"  # its Q31 form, on request
    with pytest.raises(QsimError, match="out of range"):
        kws.vectors(99)


def test_cli_vectors(tmp_path, capsys):
    model = str(shared_model("kws_ref_model.tflite"))
    assert main(["vectors", model, "--layer", "1", "--random", "2", "--seed", "3", "-o", str(tmp_path / "v"),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["opcode"] == "DEPTHWISE_CONV_2D" and doc["rows"] == 250
    assert (tmp_path / "v" / "tb_vectors.sv").is_file() and (tmp_path / "v" / "expected.hex").is_file()
    assert main(["vectors", model, "--layer", "12", "-o", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qsim: error: layer 12 is a SOFTMAX") and "Traceback" not in err
