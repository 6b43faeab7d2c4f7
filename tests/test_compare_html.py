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
        self.ids, self.imgs, self.h2, self.alts = [], [], [], []
        self.h3: list[tuple[str, list[str]]] = []  # (heading, alts of the images under it)
        self._in_h2 = self._in_h3 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.imgs.append(a["src"])
            self.alts.append(a.get("alt", ""))
            if self.h3:
                self.h3[-1][1].append(a.get("alt", ""))
        self._in_h2 = tag == "h2"
        self._in_h3 = tag == "h3"
        if tag == "h2" and self.h3:
            self.h3.append(("", []))  # images after the worst-layer section belong to no layer

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False
        if self._in_h3:
            self.h3.append((data, []))
            self._in_h3 = False


@pytest.fixture(scope="module")
def report():
    return qsim.load(INT8).compare(FLOAT, DATA, limit=64)


def test_html_report_sections_and_pngs(report, tmp_path):
    pytest.importorskip("matplotlib")
    p = report.to_html(tmp_path / "r.html")
    c = _Collect()
    c.feed(p.read_text(encoding="utf-8"))
    assert {"model", "sqnr", "worst", "suspects", "what-to-try", "layers"} <= set(c.ids)
    assert len(c.imgs) == 1 + 2 * 4  # the SQNR chart; the 4 worst of the 5 compute layers, two histograms each
    for src in c.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    layers = [(h, alts) for h, alts in c.h3 if h]
    assert len(layers) == 4
    for h, alts in layers:  # per worst layer: the whole dataset and one sample
        name = h.split("'")[1]
        assert alts == [f"histogram (whole dataset) {name}", f"histogram (one sample) {name}"], (h, alts)


def test_one_sample_values_are_the_first_sample(report):
    """The one-sample histogram's data: the float twin's values on sample 0 (LiteRT's own interpreter,
    its reference kernels, the input dequantized), and the int8 levels on it (qsim's run of sample 0)."""
    from ai_edge_litert import interpreter as li
    x = np.load(DATA)["x"][:1]
    it = li.Interpreter(model_path=str(FLOAT), experimental_preserve_all_tensors=True,
                        experimental_op_resolver_type=li.OpResolverType.BUILTIN_REF)  # compare's float kernels
    it.allocate_tensors()
    m = qsim.load(INT8)
    real = (m.inputs[0].scale * (x.astype(np.float64) - m.inputs[0].zero_point)).astype(np.float32)  # int8 -> real
    it.set_tensor(it.get_input_details()[0]["index"], real)
    it.invoke()
    ftensors = {d["name"]: d["index"] for d in it.get_tensor_details()}
    q = m.run(x, keep="all")
    for raw in report.raw_rows:
        if raw.tensor_name in ("conv2", "logits"):
            want = it.get_tensor(ftensors[raw.float_name]).ravel()
            assert raw.st.first.size == want.size and np.array_equal(raw.st.first, want)
            assert raw.st.first_levels == len(np.unique(q[raw.tensor_name]))


def test_cli_report(tmp_path):
    pytest.importorskip("matplotlib")
    from test_cli import qsim as run_cli
    out = tmp_path / "r.html"
    r = run_cli("compare", INT8, FLOAT, "--data", DATA, "--limit", "16", "--report", out)
    assert r.returncode == 0, r.stderr
    assert out.read_text(encoding="utf-8").count("data:image/png;base64,") == 1 + 2 * 4


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
