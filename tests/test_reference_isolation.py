"""The reference interpreters run in a child process (qsim.refchild): a reference that crashes or
aborts on a model is a reported refusal naming the signal, never the death of qsim, and a reference
that does not answer in time is stopped and reported the same way.

Goldens: the crashes are the real references' own (TFLM and LiteRT abort on a SOFTMAX row whose sum
of exponentials reaches 512; TFLM dereferences an out-of-range graph output index without checking
it, which LiteRT refuses); the transported tensors are compared with the in-process interpreters'.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import tflite

from conftest import REPO, require_module
from qsim import reference as ref
from qsim.builder import ModelBuilder
from qsim.inputs import random_inputs
from qsim.loader import load_bytes

DEMO = REPO / "examples" / "models" / "demo_cnn_int8.tflite"


@pytest.fixture(autouse=True)
def _references():
    require_module("tflite_micro", "TFLite Micro reference runtime")
    require_module("ai_edge_litert", "LiteRT reference interpreter")


def softmax_model(depth: int) -> bytes:
    b = ModelBuilder(description="softmax")
    x = b.add_input("x", (1, depth), np.int8, scale=0.001, zero_point=0)
    y = b.add_tensor("y", (1, depth), np.int8, scale=1 / 256, zero_point=-128)
    b.add_op("SOFTMAX", [x], [y])
    b.mark_output(y)
    return b.build()


def with_graph_output(blob: bytes, index: int) -> bytes:
    """``blob`` with subgraph 0's first output index replaced (Subgraph.outputs is field 2)."""
    sg = tflite.Model.GetRootAsModel(blob, 0).Subgraphs(0)
    out = bytearray(blob)
    struct.pack_into("<i", out, sg._tab.Vector(sg._tab.Offset(8)), index)
    return bytes(out)


def test_an_abort_in_either_reference_is_reported_with_its_signal():
    """512 equal logits: both references abort (qsim refuses such input itself, so the runners are
    driven directly).  The child dies, the runner raises, and the next runner gets a fresh child."""
    blob = softmax_model(512)
    x = [np.full((1, 512), 7, np.int8)]
    for reference, title in (("tflm", "TFLite Micro"), ("litert", "LiteRT")):
        with pytest.raises(ref.ReferenceCrashed) as e:
            ref.make_runner(reference, blob).run(x, [1])
        assert str(e.value).startswith(f"{title} crashed on this model: SIGABRT"), e.value
        good = softmax_model(8)
        ok = ref.make_runner(reference, good).run([np.arange(8, dtype=np.int8)[None]], [1])[1]
        inproc = ref.make_runner(reference, good, in_process=True).run([np.arange(8, dtype=np.int8)[None]], [1])[1]
        np.testing.assert_array_equal(ok, inproc)


def test_check_reports_a_reference_segfault_and_returns():
    """TFLM reads graph output 0x7FFF0000 of a 2-tensor graph without checking it (SIGSEGV: 8 GiB past
    the tensor table); LiteRT refuses the same bytes.  qsim is given the intact graph (so its own
    load-time checks do not stop the bytes first): check() returns, reporting TFLM's death and
    LiteRT's refusal; nothing matched."""
    good = softmax_model(8)
    model = ref.Model(with_graph_output(good, 0x7FFF0000), load_bytes(good))
    inputs = random_inputs(model.graph, 3, seed=1)
    result = ref.check(model, inputs)
    lit, tflm = result["comparisons"]
    assert tflm.crashed and tflm.refused == "TFLite Micro crashed on this model: SIGSEGV"
    assert tflm.summary() == tflm.refused and tflm.as_dict()["crashed"] is True
    assert not lit.crashed and "Invalid tensor index 2147418112 in outputs" in lit.refused
    assert result["ok"] is False and result["xnnpack"].startswith("LiteRT refused this model")
    # the references are still there for the next check, on the intact model
    result = ref.check(ref.Model.open(good), inputs, xnnpack=False)
    assert result["ok"] and [c.n_inputs for c in result["comparisons"]] == [3, 3]


def test_child_runner_returns_every_tensor_as_the_in_process_one():
    """Transport: every tensor of the demo CNN, dtype, shape and values, for both references."""
    blob = DEMO.read_bytes()
    g = load_bytes(blob)
    x = random_inputs(g, 1, seed=4)[0]
    tensors = [t.index for t in g.tensors if not t.is_const]
    for reference in ("litert", "tflm"):
        child = ref.make_runner(reference, blob, g).run(x, tensors)
        inproc = ref.make_runner(reference, blob, g, in_process=True).run(x, tensors)
        for t in tensors:
            assert child[t].dtype == inproc[t].dtype and child[t].shape == inproc[t].shape
            np.testing.assert_array_equal(child[t], inproc[t])


def test_cli_check_stops_a_reference_that_does_not_answer():
    """QSIM_REFERENCE_TIMEOUT: past it the child is killed and the check says so (exit 2: nothing
    was compared), with no traceback."""
    env = dict(os.environ, QSIM_REFERENCE_TIMEOUT="0.000001")
    r = subprocess.run([sys.executable, "-m", "qsim.cli", "check", str(DEMO), "--random", "1"], cwd=REPO,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "qsim: error: nothing was compared" in r.stderr, r.stderr
    assert r.stderr.count("did not finish within 1e-06 s on this model and was stopped") == 2, r.stderr


def test_cli_check_survives_a_reference_segfault(tmp_path):
    """The same bytes through the CLI: before the references ran out of process this was the death
    of qsim (exit -11, no message).  Now exit 2 and one line; once qsim's loader refuses the
    out-of-range output itself, its own message comes first, still exit 2."""
    bad = tmp_path / "bad_output_index.tflite"
    bad.write_bytes(with_graph_output(softmax_model(8), 0x7FFF0000))
    r = subprocess.run([sys.executable, "-m", "qsim.cli", "check", str(bad), "--random", "1", "--reference", "tflm"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "qsim: error:" in r.stderr, r.stderr
    assert "crashed" not in r.stderr or "TFLite Micro crashed on this model: SIGSEGV" in r.stderr, r.stderr
