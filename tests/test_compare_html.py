"""`qsim compare --report`: the HTML file parses, has its sections, and its embedded images are PNGs;
the bounded float sample behind the histograms stays bounded and holds real float values."""
from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import qsim
from qsim.compare import SAMPLE_MAX, TensorStats

EX = Path(__file__).resolve().parents[1] / "examples" / "models"
INT8, FLOAT, DATA = EX / "demo_cnn_int8.tflite", EX / "demo_cnn_float.tflite", EX / "demo_testset.npz"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.imgs, self.h2 = [], [], []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.imgs.append(a["src"])
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


@pytest.fixture(scope="module")
def report():
    return qsim.load(INT8).compare(FLOAT, DATA, limit=64)


def test_html_report_sections_and_pngs(report, tmp_path):
    pytest.importorskip("matplotlib")
    p = report.to_html(tmp_path / "r.html")
    c = _Collect()
    c.feed(p.read_text(encoding="utf-8"))
    assert {"model", "sqnr", "worst", "suspects", "what-to-try", "layers"} <= set(c.ids)
    assert len(c.imgs) == 1 + 4  # the SQNR chart and the 4 worst of the 5 compute layers
    for src in c.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)


def test_cli_report(tmp_path):
    pytest.importorskip("matplotlib")
    from test_cli import qsim as run_cli
    out = tmp_path / "r.html"
    r = run_cli("compare", INT8, FLOAT, "--data", DATA, "--limit", "16", "--report", out)
    assert r.returncode == 0, r.stderr
    assert out.read_text(encoding="utf-8").count("data:image/png;base64,") == 5


def test_float_sample_bounded_and_drawn_from_data():
    st = TensorStats()
    rng = np.random.default_rng(3)
    xs = []
    for _ in range(6):
        x = rng.normal(size=(32, 1000)).astype(np.float32)
        q = np.clip(np.round(x / 0.05), -128, 127).astype(np.int8)
        st.add(q, x, 0.05, 0, -128, 127, False)
        xs.append(x)
    allv = np.concatenate([x.ravel() for x in xs])
    assert st.sample.size == SAMPLE_MAX
    assert np.isin(st.sample, allv).all()
    assert abs(st.sample.std() - 1) < 0.1  # a uniform sample of N(0, 1) values


def test_missing_matplotlib_is_a_qsim_error(report, tmp_path, monkeypatch):
    import sys
    from qsim.errors import QsimError
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(QsimError, match=r"pip install qsim\[report\]"):
        report.to_html(tmp_path / "r.html")


def test_model_explorer_overlay_accepted_by_its_package(report, tmp_path):
    """The overlay loads into Model Explorer's own GraphNodeData (dacite, strict: no unknown keys) and
    serializes back to the same JSON; values keyed by the int8 model's tensor names."""
    import json
    ndb = pytest.importorskip("model_explorer.node_data_builder")
    dacite = pytest.importorskip("dacite")
    from test_cli import qsim as run_cli
    out = tmp_path / "overlay.json"
    r = run_cli("compare", INT8, FLOAT, "--data", DATA, "--limit", "8", "--model-explorer", out)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    gnd = dacite.from_dict(ndb.GraphNodeData, data, config=dacite.Config(strict=True))
    assert all(isinstance(v, ndb.NodeDataResult) for v in gnd.results.values())
    names = {t.name for t in qsim.load(INT8).graph.tensors if not t.is_const}
    assert set(gnd.results) == names  # every activation tensor of the demo is matched and has a value
    back = json.loads(gnd.to_json_string())
    assert back["results"] == data["results"] and back["gradient"] == data["gradient"]
    rows8 = {r_["tensor_name"]: r_["sqnr_db"] for r_ in qsim.load(INT8).compare(FLOAT, DATA, limit=8).rows}
    assert gnd.results["logits"].value == pytest.approx(rows8["logits"])
