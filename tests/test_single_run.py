"""The single-sample run loop (PreparedGraph.run with each op's eval bound once, Kernel.eval_for)
against the kernels' own eval called op by op, and its guard against params changed after the
plan was built."""
from __future__ import annotations

import numpy as np

from conftest import shared_model
from qsim.interpreter import prepare_graph
from qsim.kernels import with_requant_variant
from qsim.loader import load_bytes


def _ad01():
    return load_bytes(shared_model("ad01_int8.tflite").read_bytes(), source="ad01_int8")


def _samples(g, n: int, seed: int = 3) -> list[np.ndarray]:
    t = g.tensors[g.inputs[0]]
    rng = np.random.default_rng(seed)
    xs = [rng.integers(-128, 128, size=t.shape).astype(t.dtype) for _ in range(n)]
    xs[0][:] = -128  # the extremes of the input range
    xs[1][:] = 127
    return xs


def _op_by_op(prep, x) -> dict[int, np.ndarray]:
    """Every tensor, each op evaluated with its kernel's (unbound) eval in graph order."""
    g = prep.graph
    values = {g.inputs[0]: x}
    for p in prep.ops:
        ins = [None if i < 0 else values[i] if i in values else g.tensors[i].data for i in p.op.inputs]
        for t, arr in zip(p.op.outputs, p.kernel.eval(p.params, ins)):
            values[t] = np.asarray(arr).astype(g.tensors[t].dtype).reshape(g.tensors[t].shape)
    return values


def test_bound_run_equals_kernel_eval_op_by_op():
    """Every FULLY_CONNECTED of ad01 (fused RELU and plain), repeated single runs (the per-shape
    requant passes are built on the first and reused), keep_all and graph outputs only, list,
    array and dict inputs: the same tensors as the kernels' eval op by op."""
    g = _ad01()
    prep = prepare_graph(g, "tflm")
    out = g.outputs[0]
    for x in _samples(g, 6):
        want = _op_by_op(prep, x)
        got_all = prep.run([x])
        assert set(got_all) == set(want)
        for t, a in want.items():
            assert got_all[t].dtype == a.dtype and np.array_equal(got_all[t], a), g.tensors[t].name
        for inputs in ([x], x, {g.inputs[0]: x}):
            got = prep.run(inputs, keep_all=False)
            assert list(got) == [out] and np.array_equal(got[out], want[out])


def test_bound_run_follows_a_replaced_requant():
    """Replacing an op's ``params.requant`` after runs (the plan's bound evals captured the old
    one) is honoured: the outputs equal a fresh prepare with that requant variant, and differ
    from the profile's own on some input (so the check can fail)."""
    g = _ad01()
    prep = prepare_graph(g, "tflm")
    xs = _samples(g, 8)
    before = [prep.run([x], keep_all=False)[g.outputs[0]] for x in xs]
    for p in prep.ops:
        p.params.requant = with_requant_variant(p.params.requant, "shift-only")
    fresh = prepare_graph(g, "tflm", requant="shift-only")
    after = [prep.run([x], keep_all=False)[g.outputs[0]] for x in xs]
    for x, a in zip(xs, after):
        assert np.array_equal(a, fresh.run([x], keep_all=False)[g.outputs[0]])
    assert any(not np.array_equal(a, b) for a, b in zip(after, before))


def test_run_plan_binds_the_fully_connected_closure():
    """The registry's FULLY_CONNECTED is the int8 kernel wrapped by the int16x8 and uint8
    dispatchers; both must hand the int8 kernel's ``eval_for`` through, so that the run plan
    binds eval_fc_for's closure (a lost hand-through fell back to the generic eval: 1.6x slower
    single runs of ad01, with the same outputs)."""
    prep = prepare_graph(_ad01(), "tflm")
    for s in prep._steps():
        assert s.eval is not s.prepared.kernel.eval
        assert s.eval.__qualname__.startswith("eval_fc_for."), s.eval.__qualname__


def test_lean_loop_on_two_input_ops_equals_tflm():
    """run(keep_all=False) without on_op takes the lean loop (_run_lean), whose general branch
    serves the ops reading more than one produced tensor (pretrainedResnet_quant's residual
    ADDs): its outputs equal TFLite Micro's and the keep_all loop's."""
    from qsim import reference as ref
    from qsim.inputs import random_inputs
    from conftest import require_module
    require_module("tflite_micro", "TFLite Micro reference runtime")
    m = ref.Model.open(shared_model("pretrainedResnet_quant.tflite"))
    g = m.graph
    prep = prepare_graph(g, "tflm")
    prep._steps()  # builds the lean plan
    assert any(s[3] < 0 for s in prep._lean) and any(s[3] >= 0 for s in prep._lean)  # both branches run
    tflm = ref.TFLMRunner(m.blob)
    for x in random_inputs(g, 2, seed=11):
        got = prep.run(x, keep_all=False)
        full = prep.run(x)
        want = tflm.run(x, g.outputs)
        assert list(got) == list(g.outputs)
        for t in g.outputs:
            assert np.array_equal(got[t], want[t]) and np.array_equal(got[t], full[t])


def _fc_chain_model(rows: int, acts: list, seed: int) -> bytes:
    """rows x units FULLY_CONNECTED layers in a chain (activation per layer, random per-tensor or
    per-channel weights, biases, scales and zero points; RELU outputs with zero point -128 and not)."""
    from qsim import ir
    from qsim.builder import ModelBuilder
    rng = np.random.default_rng(seed)
    b = ModelBuilder(description="fc chain")
    units = [int(u) for u in rng.integers(3, 40, len(acts) + 1)]
    scale = float(rng.uniform(0.01, 0.1))
    x = b.add_input("x", (rows, units[0]), np.int8, scale=scale, zero_point=int(rng.integers(-128, 128)))
    for k, act in enumerate(acts):
        n_in, n_out = units[k], units[k + 1]
        per_channel = bool(k % 2)
        ws = rng.uniform(0.002, 0.02, n_out if per_channel else 1)
        w = b.add_const(f"w{k}", rng.integers(-127, 128, (n_out, n_in)).astype(np.int8), scale=ws,
                        zero_point=np.zeros(ws.size, np.int64), axis=0)
        bias = b.add_const(f"b{k}", rng.integers(-3000, 3000, n_out).astype(np.int32),
                           scale=scale * ws, zero_point=np.zeros(ws.size, np.int64), axis=0)
        scale = float(scale * ws.mean() * np.sqrt(n_in) * 128 / 100 * rng.uniform(0.5, 2))
        zp = -128 if act != "NONE" and k % 3 != 2 else int(rng.integers(-60, 60))
        y = b.add_tensor(f"y{k}", (rows, n_out), np.int8, scale=scale, zero_point=zp)
        b.add_op("FULLY_CONNECTED", [x, w, bias], [y], ir.FullyConnectedOptions(activation=act))
        x = y
    b.mark_output(x)
    return b.build()


def test_fully_connected_chain_equals_tflm():
    """The lean loop runs chains of FULLY_CONNECTED layers as one step (fc_chain: a fused-RELU
    layer hands its output minus act_min to the next GEMM, the int8 tensor never built): its
    outputs equal TFLite Micro's, on models of 1 and 3 rows, with RELU / RELU6 / NONE layers (a
    NONE layer ends a chain) and RELU outputs of zero point -128 and others, on random and extreme inputs."""
    from conftest import require_module
    from qsim import reference as ref
    require_module("tflite_micro", "TFLite Micro reference runtime")
    fused = 0
    for seed, (rows, acts) in enumerate([(1, ["RELU", "RELU", "RELU6", "RELU", "NONE", "RELU", "RELU"]),
                                         (3, ["RELU6", "RELU", "NONE", "RELU", "RELU", "RELU"]),
                                         (1, ["RELU", "NONE", "RELU", "RELU6", "RELU", "RELU6"])]):
        blob = _fc_chain_model(rows, acts, seed)
        g = load_bytes(blob)
        prep = prepare_graph(g, "tflm")
        prep._steps()
        chained = [s for s in prep._lean if s[0].__qualname__.startswith("fc_chain.")]
        assert chained and len(prep._lean) >= 2  # chains formed, and broken after the NONE layer
        fused += sum(len(s[1]) for s in chained)
        tflm = ref.TFLMRunner(blob)
        out = g.outputs[0]
        for x in _samples(g, 12, seed=seed):
            want = tflm.run([x], g.outputs)[out]
            assert np.array_equal(prep.run([x], keep_all=False)[out], want)
            assert np.array_equal(prep.run([x])[out], want)
    assert fused >= 8
