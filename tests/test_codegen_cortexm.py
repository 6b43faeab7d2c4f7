"""Generated firmware on Cortex-M4: arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb, run under
qemu-system-arm -M mps2-an386 with semihosting; outputs bit-exact with TFLite Micro.

Needs the Debian packages gcc-arm-none-eabi, libnewlib-arm-none-eabi and
qemu-system-arm (.ci/run installs them); outside CI the tests skip when they
are absent.  Flash (.text + .rodata) and RAM (.data + .bss) come from
arm-none-eabi-size; the stack high-water mark of NAME_invoke from the harness's stack
painting (-DQK_STACK_PAINT).
"""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from conftest import shared_model
from qsim.loader import load

from codegen import generate
from test_codegen import assert_equal, image_samples, make, need_tool, random_samples, tflm_outputs, write_samples

# model -> number of seeded random inputs (QEMU runs VWW at ~0.1 s per inference on these machines)
CORTEX_M_MODELS = {"ad01_int8": 10, "hello_world_int8": 10, "kws_ref_model": 10, "micro_speech_quantized": 10,
                   "person_detect": 10, "pretrainedResnet_quant": 10, "vww_96_int8": 10}


def elf_sizes(elf) -> dict[str, int]:
    """Section sizes from `arm-none-eabi-size -A`."""
    out = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        m = re.match(r"^(\.\S+)\s+(\d+)\s+\d+", line)
        if m:
            sizes[m.group(1)] = int(m.group(2))
    return sizes


def run_qemu(build_dir, elf: str, timeout: int = 600, machine: str = "mps2-an386") -> str:
    r = subprocess.run(["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none",
                        "-semihosting-config", "enable=on,target=native", "-kernel", elf],
                       cwd=build_dir, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0 and "done" in r.stdout, f"QEMU run failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.mark.parametrize("model", sorted(CORTEX_M_MODELS))
def test_cortex_m4_qemu_bit_exact_with_tflm(model, tmp_path):
    for tool in ("make", "arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"):
        need_tool(tool)
    path = shared_model(model + ".tflite")
    g = load(path)
    res = generate(path, tmp_path, name=model, target="cortex-m4", force=True)
    make(tmp_path)  # default goal of --target cortex-m4: the .elf
    elf = tmp_path / f"{model}.elf"
    assert elf.is_file()
    samples = random_samples(g, CORTEX_M_MODELS[model], seed=99) + image_samples(g)
    write_samples(tmp_path / "input.bin", samples)
    stdout = run_qemu(tmp_path, elf.name)
    got = np.fromfile(tmp_path / "output.bin", dtype=np.int8).reshape(len(samples), -1)
    assert_equal(got, tflm_outputs(path, samples, len(g.outputs)), f"{model} on Cortex-M4/QEMU vs TFLM")
    s = elf_sizes(elf)
    flash = s.get(".text", 0) + s.get(".rodata", 0)
    ram = s.get(".data", 0) + s.get(".bss", 0)
    stack = int(re.search(r"stack used (\d+) bytes", stdout).group(1))
    assert 0 < stack < 4096  # straight-line calls, no big locals: a few hundred bytes
    print(f"{model}: flash (.text+.rodata) {flash} B, RAM (.data+.bss+stack) {ram + stack} B "
          f"(arena {res.arena_bytes} B, stack {stack} B); {stdout.strip().splitlines()[0]}")
    assert flash >= res.weights_bytes  # the tables live in flash...
    assert ram >= res.arena_bytes  # ...the arena in RAM
    assert ram < res.arena_bytes + 64 * 1024  # and nothing large besides it (I/O buffers, libc)


@pytest.mark.parametrize("target,machine", [("cortex-m7", "mps2-an500"), ("cortex-m33", "mps2-an505")])
def test_cortex_m7_m33_qemu_bit_exact_with_tflm(target, machine, tmp_path):
    """The other targets: their own -mcpu and memory map (AN505 boots Secure from 0x10000000)."""
    for tool in ("make", "arm-none-eabi-gcc", "qemu-system-arm"):
        need_tool(tool)
    path = shared_model("kws_ref_model.tflite")
    g = load(path)
    generate(path, tmp_path, name="kws", target=target)
    assert f"MCPU ?= {target}" in (tmp_path / "Makefile").read_text()
    make(tmp_path)
    samples = random_samples(g, 3, seed=5)
    write_samples(tmp_path / "input.bin", samples)
    run_qemu(tmp_path, "kws.elf", machine=machine)
    got = np.fromfile(tmp_path / "output.bin", dtype=np.int8).reshape(len(samples), -1)
    assert_equal(got, tflm_outputs(path, samples), f"kws on {target}/QEMU {machine} vs TFLM")
