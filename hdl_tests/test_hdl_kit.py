"""The verification kit on a user's own RTL (qsim.hdl, `qsim hdl-test`, `qsim vectors`' testbench).

* examples/my_requant (another design: other port names, 2 lanes, latency 3, active-low reset)
  passes the standard regression through the CLI, from a foreign working directory;
* three mutants of it (the tie direction of one rounding step flipped, a right shift off by one,
  the clamp missing) are each caught by directed corners, random vectors and the real-layer
  replay: one Verilator build holds the original and the mutants, a plusarg picks one;
* a bad port map (missing signal, wrong width) is exit 2 naming the signal, before any build,
  and also when only the simulation can tell;
* the generated $readmemh testbench of `qsim vectors` passes under Verilator, and fails on a
  corrupted expected value.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hdl_runner import REPO, setup_verilator_env, shared_model, skip_or_fail

EXAMPLE = REPO / "examples" / "my_requant"
SV = EXAMPLE / "my_requant.sv"
PORTS = EXAMPLE / "ports.toml"

# mutant name -> (line of my_requant.sv, its mutated form)
MUTANTS = {
    "rounding_tie_flipped": ("assign neg    = y[31] && (r1 != 0);", "assign neg    = !y[31] && (r1 != 0);"),
    "shift_off_by_one": ("assign rsh = sh[5] ? -sh : 6'd0;", "assign rsh = sh[5] ? -sh - 6'd1 : 6'd0;"),
    "saturation_missing": ("assign c = (v < 34'(lo2)) ? 34'(lo2) : (v > 34'(hi2)) ? 34'(hi2) : v;",
                           "assign c = v;"),
}
CATCHERS = ["directed_corners", "random_backpressure", "real_layer_replay"]


def _qsim(*args, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "qsim.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=1500)


@pytest.fixture(scope="module")
def kws_vectors(tmp_path_factory):
    """`qsim vectors` of kws_ref_model's first CONV_2D (checked against TFLM in tests/test_vectors.py)."""
    import qsim
    out = tmp_path_factory.mktemp("kws_vec")
    qsim.load(shared_model("kws_ref_model.tflite")).vectors(0, inputs=1, seed=4, out_dir=out)
    return out


def test_example_passes_standard_regression(kws_vectors, tmp_path):
    """`qsim hdl-test --json` on examples/my_requant: every test passes, every coverage bin is hit,
    stdout is exactly one JSON document (the simulator's log goes to stderr), nothing is written
    into the working directory."""
    import json
    setup_verilator_env()
    r = _qsim("hdl-test", "--top", "my_requant", "--sources", str(SV), "--ports", str(PORTS),
              "--vectors", str(kws_vectors), "--random-beats", "1000", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["tests"] == {t: "pass" for t in ("directed_corners", "random_backpressure", "latency",
                                                               "reset_mid_stream", "real_layer_replay")}, doc
    assert doc["coverage"]["missing"] == [] and doc["coverage"]["total"] == 70, doc["coverage"]
    assert "real_layer_replay passed" in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written into the working directory
    assert not Path(doc["build_dir"]).exists()  # the temporary build is removed


def test_example_passes_under_icarus_too(kws_vectors, tmp_path):
    """The same regression with `--simulator icarus` (Icarus Verilog from the OS: .ci/run installs
    it): the harness's clock needs a finer precision than Icarus's default 1 s, which the runner
    gives a design without `timescale (1ns/1ps)."""
    import json
    import shutil
    if shutil.which("iverilog") is None:
        skip_or_fail("iverilog is not installed (apt-get install iverilog)")
    r = _qsim("hdl-test", "--top", "my_requant", "--sources", str(SV), "--ports", str(PORTS), "--simulator", "icarus",
              "--vectors", str(kws_vectors), "--random-beats", "500", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["ok"] and set(doc["tests"].values()) == {"pass"} and len(doc["tests"]) == 5, doc
    assert doc["coverage"]["missing"] == [], doc["coverage"]


def _variants_wrapper(folder: Path) -> list[Path]:
    """my_requant.sv, one renamed mutated copy per MUTANTS entry, and `my_requant_variants`: the
    same ports, the instance chosen at run time by +VARIANT=<k> (0: the original)."""
    text = SV.read_text()
    files = [SV]
    names = ["my_requant"]
    for k, (name, (old, new)) in enumerate(MUTANTS.items(), start=1):
        assert text.count(old) == 1, f"mutation site of {name} not found once in {SV}"
        mod = f"my_requant_m{k}"
        p = folder / f"{mod}.sv"
        p.write_text(text.replace(old, new).replace("module my_requant (", f"module {mod} ("))
        files.append(p)
        names.append(mod)
    n = len(names)
    inst = []
    for k, mod in enumerate(names):
        inst.append(f"""  {mod} u{k} (.clk_i(clk_i), .rst_ni(rst_ni), .in_valid(in_valid && sel == {k}), .in_ready(rdy[{k}]),
      .in_acc(in_acc), .in_bias(in_bias), .in_m0(in_m0), .in_shift(in_shift), .cfg_zp(cfg_zp),
      .cfg_min(cfg_min), .cfg_max(cfg_max), .out_valid(vld[{k}]), .out_ready(out_ready && sel == {k}), .out_q(q[{k}]));""")
    wrapper = folder / "my_requant_variants.sv"
    wrapper.write_text(f"""module my_requant_variants (
    input logic clk_i, input logic rst_ni, input logic in_valid, output logic in_ready,
    input logic [63:0] in_acc, input logic [63:0] in_bias, input logic [63:0] in_m0, input logic [11:0] in_shift,
    input logic [7:0] cfg_zp, input logic [7:0] cfg_min, input logic [7:0] cfg_max,
    output logic out_valid, input logic out_ready, output logic [15:0] out_q);
  int sel;
  initial if (!$value$plusargs("VARIANT=%d", sel)) sel = 0;
  logic [{n - 1}:0] rdy, vld;
  logic [15:0] q[{n}];
{chr(10).join(inst)}
  assign in_ready = rdy[sel];
  assign out_valid = vld[sel];
  assign out_q = q[sel];
endmodule
""")
    return files + [wrapper]


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    from qsim.hdl import runner
    setup_verilator_env()
    folder = tmp_path_factory.mktemp("variants")
    b = runner.build("my_requant_variants", _variants_wrapper(folder), PORTS)
    yield b
    b.cleanup()


def test_mutants_are_caught_by_directed_random_and_replay(variants, kws_vectors):
    ok = variants.run(vectors=kws_vectors, random_beats=1000, tests=CATCHERS, plusargs=["+VARIANT=0"])
    assert ok.tests == {t: "pass" for t in CATCHERS}, ok.tests  # the wrapper itself is sound
    for k, name in enumerate(MUTANTS, start=1):
        r = variants.run(vectors=kws_vectors, random_beats=1000, tests=CATCHERS, plusargs=[f"+VARIANT={k}"])
        assert r.tests == {t: "fail" for t in CATCHERS}, (name, r.tests)
        assert not r.ok


def test_bad_port_map_is_exit_2_naming_the_signal(tmp_path):
    text = PORTS.read_text()
    missing = tmp_path / "missing.toml"
    missing.write_text(text.replace('multiplier = "in_m0"', 'multiplier = "in_mult"'))
    r = _qsim("hdl-test", "--top", "my_requant", "--sources", str(SV), "--ports", str(missing), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "signal 'in_mult' (input.multiplier) does not exist on module 'my_requant'" in r.stderr
    wide = tmp_path / "wide.toml"
    wide.write_text(text + '\n[widths]\nshift = 8\n')
    r = _qsim("hdl-test", "--top", "my_requant", "--sources", str(SV), "--ports", str(wide), cwd=tmp_path)
    assert r.returncode == 2 and "signal 'in_shift' (input.shift) is 12 bits wide, the port map needs 16" in r.stderr
    r = _qsim("hdl-test", "--top", "my_requant", "--sources", str(tmp_path / "nope.sv"), "--ports", str(PORTS),
              cwd=tmp_path)
    assert r.returncode == 2 and "nope.sv does not exist" in r.stderr


def test_bad_port_map_width_under_icarus_is_exit_2_before_the_build(tmp_path):
    """Icarus gets the same width check before building (the ports are read with Verilator's dump)."""
    wide = tmp_path / "wide.toml"
    wide.write_text(PORTS.read_text() + '\n[widths]\nshift = 8\n')
    r = _qsim("hdl-test", "--top", "my_requant", "--sources", str(SV), "--ports", str(wide), "--simulator", "icarus",
              cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "signal 'in_shift' (input.shift) is 12 bits wide, the port map needs 16" in r.stderr


def test_port_map_checked_in_simulation_too(variants):
    """A signal only the running simulation can look up (the check cocotb makes on the DUT handle)."""
    from qsim.errors import QsimError
    fields = dict(variants.ports.fields, bias="in_bias_typo")
    bad = dataclasses.replace(variants, ports=dataclasses.replace(variants.ports, fields=fields))
    with pytest.raises(QsimError, match="signal 'in_bias_typo' \\(input.bias\\) does not exist"):
        bad.run(tests=["latency"])


def test_generated_readmemh_testbench_runs_under_verilator(kws_vectors, tmp_path):
    """tb_vectors.sv + qsim's requant_unit: PASS; the same binary on a copy whose expected.hex has one
    value changed: FAIL (exit != 0)."""
    import qsim.rtl
    root = setup_verilator_env()
    work = tmp_path / "vec"
    shutil.copytree(kws_vectors, work)
    cmd = [str(root / "bin" / "verilator"), "--binary", "--timing", "-CFLAGS", "-fcoroutines", "-Wno-fatal",
           "-Wno-lint", "-Wno-style", "--top-module", "tb_vectors", "-Mdir", "obj_tb", "tb_vectors.sv",
           *map(str, qsim.rtl.sources())]
    b = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1200)
    assert b.returncode == 0, b.stderr[-2000:]
    exe = work / "obj_tb" / "Vtb_vectors"
    r = subprocess.run([str(exe)], cwd=work, capture_output=True, text=True, timeout=300)
    n = len((work / "expected.hex").read_text().split())
    assert r.returncode == 0 and f"QSIM VECTORS PASS {n}" in r.stdout, r.stdout[-1000:]
    bad = tmp_path / "bad"
    shutil.copytree(work, bad, ignore=shutil.ignore_patterns("obj_tb"))
    lines = (bad / "expected.hex").read_text().split()
    lines[7] = f"{(int(lines[7], 16) + 1) & 0xFF:02x}"
    (bad / "expected.hex").write_text("\n".join(lines) + "\n")
    r = subprocess.run([str(exe)], cwd=bad, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "QSIM VECTORS FAIL 1" in r.stdout, r.stdout[-1000:]
    assert "mismatch at element 7" in r.stdout


def _own_unit_scheme_passes(tmp_path, scheme: str, param: str) -> str:
    """Run `qsim hdl-test` on qsim's own unit built with ``param`` = 1 under a ports.toml of
    ``scheme``: it must pass and hit every coverage bin of the scheme.  Returns the ports.toml text."""
    import json
    setup_verilator_env()
    text = (f'lanes = 2\nrounding = "double"\nscheme = "{scheme}"\nlatency = 5\n[parameters]\nLANES = 2\n'
            f'{param} = 1\n[clock]\nname = "clk"\n[reset]\nname = "rst"\n'
            '[input]\nvalid = "s_valid"\nready = "s_ready"\nacc = "s_acc"\nbias = "s_bias"\nmultiplier = "s_mult"\n'
            'shift = "s_shift"\nzero_point = "s_zp"\nact_min = "s_act_min"\nact_max = "s_act_max"\n'
            '[output]\nvalid = "m_valid"\nready = "m_ready"\ndata = "m_data"\n')
    ports = tmp_path / f"p_{scheme}.toml"
    ports.write_text(text)
    r = _qsim("hdl-test", "--top", "requant_unit", "--sources", *_own_sources(), "--ports", str(ports),
              "--random-beats", "1000", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["tests"]["directed_corners"] == "pass" and doc["tests"]["random_backpressure"] == "pass"
    assert doc["coverage"]["missing"] == [] and doc["coverage"]["scheme"] == scheme, doc["coverage"]
    return text


def _own_sources() -> list[str]:
    from qsim import rtl
    return [str(p) for p in rtl.sources()]


def test_hdl_test_int16x8_scheme_on_qsim_requant_unit(tmp_path):
    """`scheme = "int16x8"` in a ports.toml: `qsim hdl-test` runs the standard regression on qsim's
    own unit built with OUT16 = 1 (64-bit acc/bias, int16 out) and hits every int16x8 coverage bin;
    the same unit built as int8 fails the width check before any build."""
    text = _own_unit_scheme_passes(tmp_path, "int16x8", "OUT16")
    int8 = tmp_path / "p8.toml"
    int8.write_text(text.replace("OUT16 = 1", "OUT16 = 0"))
    r = _qsim("hdl-test", "--top", "requant_unit", "--sources", *_own_sources(), "--ports", str(int8), cwd=tmp_path)
    assert r.returncode == 2 and "signal 's_acc' (input.acc) is 64 bits wide, the port map needs 128" in r.stderr, \
        r.stderr


def test_hdl_test_uint8_scheme_on_qsim_requant_unit(tmp_path):
    """`scheme = "uint8"` in a ports.toml: `qsim hdl-test` passes qsim's own unit built with
    OUT_UNSIGNED = 1 and hits every uint8 coverage bin; the same unit built signed (OUT_UNSIGNED = 0,
    the sideband sign-extended) fails the uint8 regression (exit 1): the uint8 beats catch it."""
    import json
    text = _own_unit_scheme_passes(tmp_path, "uint8", "OUT_UNSIGNED")
    signed = tmp_path / "ps.toml"
    signed.write_text(text.replace("OUT_UNSIGNED = 1", "OUT_UNSIGNED = 0"))
    r = _qsim("hdl-test", "--top", "requant_unit", "--sources", *_own_sources(), "--ports", str(signed),
              "--random-beats", "300", "--json", cwd=tmp_path)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["tests"]["directed_corners"] == "fail" and doc["tests"]["random_backpressure"] == "fail", doc["tests"]
