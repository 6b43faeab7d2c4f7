"""`qsim compare`: int8 model vs its float twin.

Statistics are checked against a direct numpy computation on a hand-made pair (a float32
FULLY_CONNECTED -> RELU -> SOFTMAX model written by qsim's builder, and its int8 twin with the
RELU fused); the float golden is numpy float64 math, the int8 values qsim's own run (checked
bit-exact against the references elsewhere).  Matching is checked on the shared twins.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import qsim
from conftest import shared_model
from test_cli import assert_input_error, qsim as run_cli
from qsim import ir, loader
from qsim.builder import ModelBuilder
from qsim.compare import match_tensors

RNG = np.random.default_rng(7)
W = (RNG.normal(size=(3, 4)) * 0.6).astype(np.float32)
B = (RNG.normal(size=3) * 0.1).astype(np.float32)
S_IN, S_W, S_FC = 1 / 127, float(np.abs(W).max() / 127), 0.002  # FC range [0, 0.51]: some clipping


def _float_model(path):
    b = ModelBuilder("float twin")
    x = b.add_input("x", (1, 4), np.float32)
    w = b.add_const("w", W)
    bias = b.add_const("b", B)
    fc = b.add_tensor("fc_raw", (1, 3), np.float32)
    b.add_op("FULLY_CONNECTED", [x, w, bias], [fc], ir.FullyConnectedOptions("NONE", False, 0), version=1)
    r = b.add_tensor("relu_out", (1, 3), np.float32)
    b.add_op("RELU", [fc], [r], version=1)
    p = b.add_tensor("probs", (1, 3), np.float32)
    b.add_op("SOFTMAX", [r], [p], ir.SoftmaxOptions(1.0), version=1)
    b.mark_output(p)
    return b.save(path)


def _int8_model(path):
    b = ModelBuilder("int8 twin")
    x = b.add_input("x_int8", (1, 4), np.int8, scale=S_IN, zero_point=0)
    wq = np.clip(np.round(W / S_W), -127, 127).astype(np.int8)
    w = b.add_const("w_q", wq, scale=S_W, zero_point=0)
    bias = b.add_const("b_q", np.round(B / (S_IN * S_W)).astype(np.int32), scale=S_IN * S_W, zero_point=0)
    fc = b.add_tensor("dense_relu", (1, 3), np.int8, scale=S_FC, zero_point=-128)
    b.add_op("FULLY_CONNECTED", [x, w, bias], [fc], ir.FullyConnectedOptions("RELU", False, 0))
    p = b.add_tensor("probs_int8", (1, 3), np.int8, scale=1 / 256, zero_point=-128)
    b.add_op("SOFTMAX", [fc], [p], ir.SoftmaxOptions(1.0))
    b.mark_output(p)
    return b.save(path)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    x = RNG.uniform(-1.1, 1.1, size=(7, 4)).astype(np.float32)  # a few inputs beyond [-1, 1]: input clipping
    y = RNG.integers(0, 3, size=7)
    np.savez(d / "data.npz", x=x, y=y)
    return _int8_model(d / "q.tflite"), _float_model(d / "f.tflite"), d / "data.npz", x, y


def _expected(q, f, scale, zp, qmin=-128, qmax=127):
    """The statistics by their definitions, straight numpy over [N, ...] arrays."""
    d = scale * (q.astype(np.float64) - zp)
    diff = d - f
    per = [diff[k].ravel() for k in range(len(diff))]
    lv = [len(np.unique(q[k])) for k in range(len(q))]
    lo, hi = scale * (qmin - zp - 0.5), scale * (qmax - zp + 0.5)
    return {
        # TensorFlow's QuantizationDebugger: per sample, then the mean over samples
        "num_elements": np.mean([e.size for e in per]), "stddev": np.mean([np.std(e) for e in per]),
        "mean_error": np.mean([np.average(e) for e in per]),
        "max_abs_error": np.mean([np.max(np.abs(e)) for e in per]),
        "mean_squared_error": np.mean([np.average(e ** 2) for e in per]),
        "rmse_lsb": np.sqrt(np.mean(diff ** 2)) / scale,
        "sqnr_db": 10 * np.log10(np.sum(f ** 2) / np.sum(diff ** 2)),
        "cosine": np.sum(f * d) / np.sqrt(np.sum(f ** 2) * np.sum(d ** 2)),
        "clip_float": np.mean((f < lo) | (f > hi)),
        "at_qmin": np.mean(q == qmin), "at_qmax": np.mean(q == qmax),
        "levels_min": min(lv), "levels_median": np.median(lv), "levels_dataset": len(np.unique(q)),
        "float_min": f.min(), "float_max": f.max(),
    }


def test_statistics_equal_numpy_definitions(pair):
    qpath, fpath, data, x, y = pair
    m = qsim.load(qpath)
    rep = m.compare(fpath, data, batch_size=3)  # 3 batches: the accumulators merge
    rows = {r["tensor_name"]: r for r in rep.to_dict()["layers"]}
    assert [r["float_tensor"] for r in rep.rows] == ["x", "relu_out", "probs"]  # RELU folded into the int8 FC
    xq = m.inputs[0].quantize(x)
    run = m.run(xq, keep="all")
    f_fc = np.maximum(x.astype(np.float64) @ W.T.astype(np.float64) + B, 0)
    e = np.exp(f_fc - f_fc.max(1, keepdims=True))
    f_p = e / e.sum(1, keepdims=True)
    cases = [("x_int8", xq, x.astype(np.float64), S_IN, 0), ("dense_relu", run["dense_relu"], f_fc, S_FC, -128),
             ("probs_int8", run["probs_int8"], f_p, 1 / 256, -128)]
    for name, q, f, scale, zp in cases:
        want, got = _expected(q, f, scale, zp), rows[name]
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=2e-4, abs=1e-6), (name, k, got[k], v)
    assert rows["x_int8"]["clip_float"] > 0 and rows["dense_relu"]["clip_float"] > 0
    # isolated view: the FC reads the graph input, whose quantized float values are the int8 input itself
    assert rows["dense_relu"]["iso_sqnr_db"] == rows["dense_relu"]["sqnr_db"] and rows["x_int8"]["iso_sqnr_db"] is None
    assert rows["probs_int8"]["iso_sqnr_db"] is not None
    # zero point at qmin: int8 values at qmin are the real value 0, not clamps
    assert rows["dense_relu"]["qmin_explained"] and not rows["dense_relu"]["qmax_explained"]
    qp = rows["probs_int8"]
    dq = (run["probs_int8"].astype(np.float64) + 128) / 256
    kl = np.mean(np.sum(f_p * np.log(f_p / np.clip(dq, 1e-12, None)), axis=1))
    assert qp["kl"] == pytest.approx(kl, rel=1e-3)
    # model level: top-1 of both against the labels, agreement
    top_f, top_q = f_p.argmax(1), dq.argmax(1)
    md = rep.model
    assert md["top1_float"] == pytest.approx(np.mean(top_f == y)) and md["top1_int8"] == pytest.approx(np.mean(top_q == y))
    assert md["top1_agreement"] == pytest.approx(np.mean(top_f == top_q)) and md["top5_float"] == 1.0
    # the same numbers in one batch (exactly mergeable accumulators, up to float summation order)
    one = {r["tensor_name"]: r for r in m.compare(fpath, data, batch_size=64).rows}
    for name, r in one.items():
        for k in ("levels_min", "levels_median", "levels_dataset", "clip_float", "at_qmin", "num_elements"):
            assert r[k] == rows[name][k]
        assert r["sqnr_db"] == pytest.approx(rows[name]["sqnr_db"], rel=1e-12)
    csv_head = rep.to_csv().splitlines()[0].split(",")
    assert csv_head[:10] == ["op_name", "tensor_idx", "num_elements", "stddev", "mean_error", "max_abs_error",
                             "mean_squared_error", "scale", "zero_point", "tensor_name"]
    assert "what to try" in rep.render() or rep.what_to_try == []


def test_cli_json_csv_and_match_override(pair, tmp_path):
    qpath, fpath, data, _, _ = pair
    mfile = tmp_path / "m.json"
    mfile.write_text(json.dumps({"dense_relu": "fc_raw"}))  # pair the FC with the pre-ReLU float tensor instead
    r = run_cli("compare", qpath, fpath, "--data", data, "--match", mfile, "--json", "--csv", tmp_path / "o.csv")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    pairs = {p["int8"]: (p["float"], p["how"]) for p in doc["matching"]["pairs"]}
    assert pairs["dense_relu"] == ("fc_raw", "override") and pairs["probs_int8"][0] == "probs"
    assert doc["matching"]["unmatched_float"] == ["relu_out"]
    assert (tmp_path / "o.csv").read_text().startswith("op_name,tensor_idx,num_elements,stddev")


PAIRS = [("vww_96_int8", "vww_96_float"), ("kws_ref_model", "kws_ref_model_float32"),
         ("pretrainedResnet_quant", "pretrainedResnet"), ("ad01_int8", "ad01_fp32"),
         ("hello_world_int8", "hello_world_float")]


@pytest.mark.parametrize("q,f", PAIRS)
def test_matching_on_shared_twins(q, f):
    gq = loader.load(shared_model(q + ".tflite"))
    gf = loader.load(shared_model(f + ".tflite"), validate=False)
    m = match_tensors(gq, gf)
    compute = [op for op in gq.operators if op.opcode not in ("QUANTIZE", "DEQUANTIZE")]
    assert m.unmatched_int8 == [] and m.unmatched_float == []
    prod_f = {o: op for op in gf.operators for o in op.outputs}
    for op in compute:
        t = op.outputs[0]
        assert t in m.pairs, gq.tensors[t].name
        ft = m.pairs[t]
        assert gf.tensors[ft].shape == gq.tensors[t].shape and prod_f[ft].opcode == op.opcode
        assert prod_f[ft].index == op.index  # these twins keep the converter's op order


def test_bad_inputs_exit_2(pair, tmp_path):
    qpath, fpath, data, _, _ = pair
    assert_input_error(run_cli("compare", fpath, fpath, "--data", data), "is a float model")
    assert_input_error(run_cli("compare", qpath, qpath, "--data", data), "is not a float model")
    np.save(tmp_path / "bad.npy", np.zeros((2, 5), np.float32))
    assert_input_error(run_cli("compare", qpath, fpath, "--data", tmp_path / "bad.npy"), "expects samples of shape")
    other = tmp_path / "other.tflite"
    b = ModelBuilder("other")
    xi = b.add_input("x", (1, 5), np.float32)
    yo = b.add_tensor("y", (1, 5), np.float32)
    b.add_op("RELU", [xi], [yo], version=1)
    b.mark_output(yo)
    b.save(other)
    r = run_cli("compare", qpath, other, "--data", data)
    assert_input_error(r, "not twins")
    assert len(r.stderr.strip().splitlines()) == 1  # one paragraph


def test_int8_model_with_float_interface(tmp_path):
    """An int8 model behind QUANTIZE/DEQUANTIZE wrappers takes the real values itself."""
    b = ModelBuilder("wrapped")
    x = b.add_input("x", (1, 4), np.float32)
    xq = b.add_tensor("xq", (1, 4), np.int8, scale=1 / 127, zero_point=0)
    b.add_op("QUANTIZE", [x], [xq])
    y = b.add_tensor("y", (1, 4), np.int8, scale=1 / 127, zero_point=0)
    b.add_op("RELU", [xq], [y])
    yf = b.add_tensor("yf", (1, 4), np.float32)
    b.add_op("DEQUANTIZE", [y], [yf])
    b.mark_output(yf)
    b.save(tmp_path / "q.tflite")
    b = ModelBuilder("float")
    xi = b.add_input("x", (1, 4), np.float32)
    yo = b.add_tensor("y", (1, 4), np.float32)
    b.add_op("RELU", [xi], [yo], version=1)
    b.mark_output(yo)
    b.save(tmp_path / "f.tflite")
    data = RNG.uniform(-1, 1, (5, 4)).astype(np.float32)
    np.save(tmp_path / "d.npy", data)
    rep = qsim.load(tmp_path / "q.tflite").compare(tmp_path / "f.tflite", tmp_path / "d.npy")
    rows = {r["tensor_name"]: r for r in rep.rows}
    assert rows["xq"]["float_tensor"] == "x" and rows["y"]["float_tensor"] == "y"
    q = np.clip(np.round(data * 127), -128, 127)  # QUANTIZE: round half away from zero (no ties here)
    want = _expected(np.maximum(q, 0).astype(np.int8), np.maximum(data, 0).astype(np.float64), 1 / 127, 0)
    assert rows["y"]["sqnr_db"] == pytest.approx(want["sqnr_db"], rel=1e-4)
    assert rows["y"]["levels_dataset"] == want["levels_dataset"]


def test_tensor_stats_merge_equals_one_pass():
    """TensorStats.merge of two halves of a dataset gives the one-pass figures: counts, levels, the
    first sample (of the first half), sums up to summation order."""
    from qsim.compare import LayerRow, TensorStats
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 6, 7)).astype(np.float32) * 3
    q = np.clip(np.round(x / 0.02) - 5, -128, 127).astype(np.int8)
    args = (0.02, -5, -128, 127, False)
    one, a, b = TensorStats(), TensorStats(), TensorStats()
    one.add(q, x, *args)
    a.add(q[:4], x[:4], *args)
    b.add(q[4:], x[4:], *args)
    m = a.merge(b)
    for f in ("n_samples", "n", "clipped", "at_qmin", "at_qmax", "levels", "x_min", "x_max", "first_levels"):
        assert getattr(m, f) == getattr(one, f), f
    assert np.array_equal(m.level_set, one.level_set) and np.array_equal(m.first, one.first)
    assert np.array_equal(m.first, x[0].ravel())
    for f in ("s_diff", "s_diff2", "s_x2", "s_d2", "s_xd"):
        assert getattr(m, f) == pytest.approx(getattr(one, f), rel=1e-12), f
    assert m.qd == pytest.approx(one.qd, rel=1e-12)
    row = lambda st: LayerRow(0, "CONV_2D", 0, "t", "t", 0.02, -5, -128, 127, "NONE", st).figures()  # noqa: E731
    fm, fo = row(m), row(one)
    assert fm["levels_median"] == fo["levels_median"] and fm["sqnr_db"] == pytest.approx(fo["sqnr_db"], rel=1e-12)
    assert TensorStats().merge(a).first.size == a.first.size  # an empty left part keeps the right's first sample


def test_tensor_stats_one_pass_views_and_lazy_settle_equal_separate_adds():
    """The isolated view's sums taken in the accumulated view's pass (``add(iso=...)``) equal a separate
    ``full=False`` add, and absorbs that settle once at the end (``settle=False``, then ``settle()``)
    leave every field as settling each time, bit for bit (rows above CHUNK values included)."""
    from qsim.compare import CHUNK, SAMPLE_MAX, TensorStats
    rng = np.random.default_rng(5)
    for shape in ((3, CHUNK + 5), (40, 33), (9, 3000)):
        x = (rng.normal(size=shape) * 2).astype(np.float32)
        x[0, :2] = [50, -50]  # clipped at both ends
        q = np.clip(np.round(x / 0.03) + 4, -128, 127).astype(np.int8)
        q2 = np.clip(q.astype(int) + rng.integers(-1, 2, size=shape), -128, 127).astype(np.int8)
        args = (0.03, 4, -128, 127, False)
        eager, eager_iso, lazy, lazy_iso = TensorStats(), TensorStats(), TensorStats(), TensorStats()
        for part in np.array_split(np.arange(shape[0]), 3):
            if not part.size:
                continue
            off = int(part[0]) * shape[1]
            a, ai, b, bi = (TensorStats(seed_offset=off) for _ in range(4))
            x2, _ = a.add(q[part], x[part], *args)
            ai.add(q2[part], x[part], *args, full=False, x2=x2)
            b.add(q[part], x[part], *args, iso=(bi, q2[part]))
            eager.absorb(a)
            eager_iso.absorb(ai)
            lazy.absorb(b, settle=False)
            lazy_iso.absorb(bi, settle=False)
        lazy.settle()
        lazy_iso.settle()
        assert eager.sample.size == min(SAMPLE_MAX, q.size) and eager.clipped >= 2
        for want, got in ((eager, lazy), (eager_iso, lazy_iso)):
            for f, v in vars(want).items():
                if f != "exact":
                    w = getattr(got, f)
                    assert (np.array_equal(v, w) if isinstance(v, (np.ndarray, list)) else v == w), f


def test_integer_data_isolated_view_shortcut(pair, tmp_path):
    """Integer data: the float model gets their dequantized values, which quantize back to them
    exactly, so the isolated view feeds the ops reading the graph input qsim's own values and
    takes their own outputs (not run again).  Checked: the round trip on every int8 value, the
    shortcut's outputs equal to a run of every op on the quantized float values, and the op on
    the input having the same isolated and accumulated figures."""
    from qsim.compare import isolated_outputs
    qpath, fpath, _, x, _ = pair
    m = qsim.load(qpath)
    qi = m.inputs[0]
    allq = np.arange(-128, 128).astype(np.int8)
    assert np.array_equal(qi.quantize(qi.dequantize(allq).astype(np.float32)), allq)
    xq = qi.quantize(x)
    np.save(tmp_path / "xq.npy", xq)
    rows = {r["tensor_name"]: r for r in m.compare(fpath, tmp_path / "xq.npy").rows}
    assert rows["dense_relu"]["iso_sqnr_db"] == rows["dense_relu"]["sqnr_db"]
    assert rows["dense_relu"]["iso_rmse_lsb"] == rows["dense_relu"]["rmse_lsb"]
    pg = m.prepared("tflm")
    gq = m.graph
    vals = pg.run_samples({gq.inputs[0]: xq}, keep_all=True)
    tin, tfc = gq.inputs[0], next(t.index for t in gq.tensors if t.name == "dense_relu")
    fq = {tin: qi.dequantize(xq).astype(np.float32), tfc: _uniform(vals[tfc].shape)}
    slow = isolated_outputs(pg, m, vals, fq, len(xq))
    fast = isolated_outputs(pg, m, vals, fq, len(xq), exact=(tin,))
    assert fast.keys() == slow.keys() and fast[tfc] is vals[tfc]
    for t in slow:
        assert np.array_equal(fast[t], slow[t]), t


def _uniform(shape):
    return np.random.default_rng(3).uniform(0, 0.5, size=shape).astype(np.float32)
