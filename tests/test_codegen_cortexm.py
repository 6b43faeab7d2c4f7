"""Generated firmware on Cortex-M4: arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb, run under
qemu-system-arm -M mps2-an386 with semihosting; outputs bit-exact with TFLite Micro.

Needs the Debian packages gcc-arm-none-eabi, libnewlib-arm-none-eabi and
qemu-system-arm (.ci/run installs them); outside CI the tests skip when they
are absent.  Flash (.text + .rodata) and RAM (.data + .bss) come from
arm-none-eabi-size; the stack high-water mark of NAME_invoke from the harness's stack
painting (-DQK_STACK_PAINT).  QEMU's ELF loader writes each segment at its load address,
so with .data loaded in flash every run here depends on the start-up's .data copy
(removing it makes them fail: checked by test_flash_image_only_boots_and_needs_the_data_copy).
"""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from conftest import shared_model
from qsim.loader import load

from qsim.codegen import generate
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


def qemu(build_dir, image: str, timeout: int = 600, machine: str = "mps2-an386") -> subprocess.CompletedProcess:
    """Boot ``image`` (an ELF, or a raw flash image) on the board; semihosting files are build_dir's."""
    return subprocess.run(["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none",
                           "-semihosting-config", "enable=on,target=native", "-kernel", image],
                          cwd=build_dir, capture_output=True, text=True, timeout=timeout)


def run_qemu(build_dir, elf: str, timeout: int = 600, machine: str = "mps2-an386") -> str:
    r = qemu(build_dir, elf, timeout, machine)
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


# ------------------------------------------------------------------ start-up: .data from flash

def _section_table(elf) -> dict[str, tuple[int, int, int]]:
    """name -> (size, VMA, LMA) from `arm-none-eabi-objdump -h`."""
    out = subprocess.run(["arm-none-eabi-objdump", "-h", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    table = {}
    for line in out.splitlines():
        m = re.match(r"^\s*\d+\s+(\.\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s", line)
        if m:
            table[m.group(1)] = (int(m.group(2), 16), int(m.group(3), 16), int(m.group(4), 16))
    return table


def _symbols(elf) -> dict[str, int]:
    out = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    return {parts[2]: int(parts[0], 16) for parts in (line.split() for line in out.splitlines()) if len(parts) == 3}


def _build_hello(tmp_path, target: str = "cortex-m4"):
    for tool in ("make", "arm-none-eabi-gcc", "arm-none-eabi-objdump", "arm-none-eabi-nm", "arm-none-eabi-objcopy"):
        need_tool(tool)
    path = shared_model("hello_world_int8.tflite")
    generate(path, tmp_path, name="hw", target=target)
    make(tmp_path)
    return path, tmp_path / "hw.elf"


@pytest.mark.parametrize("target,flash,ram", [("cortex-m4", 0x00000000, 0x20000000),
                                              ("cortex-m33", 0x10000000, 0x38000000)])
def test_data_is_loaded_in_flash_and_runs_in_ram(target, flash, ram, tmp_path):
    """.data's load address (LMA) is in flash, its run address (VMA) in RAM; the linker script exports
    both for the start-up copy, plus newlib's __bss_start__/__bss_end__ around .bss; Reset is the
    start-up handler that copies .data and zeroes .bss (not crt0's _start, which only zeroes .bss)."""
    _, elf = _build_hello(tmp_path, target)
    sec, sym = _section_table(elf), _symbols(elf)
    size, vma, lma = sec[".data"]
    assert size > 0  # newlib's own initialized data and the harness self-check word
    in_flash = lambda a: flash <= a < flash + (4 << 20)  # noqa: E731
    in_ram = lambda a: ram <= a < ram + (4 << 20)  # noqa: E731
    assert in_flash(lma) and in_ram(vma), f".data VMA {vma:#x} LMA {lma:#x}"
    text_size, text_vma, _ = sec[".text"]
    assert lma >= text_vma + text_size  # after the code and constants, not overlapping them
    assert (sym["__data_load__"], sym["__data_start__"], sym["__data_end__"]) == (lma, vma, vma + size)
    assert lma % 4 == 0 and vma % 4 == 0 and size % 4 == 0  # the reset handler copies words
    assert vma <= sym["qk_data_check"] < vma + size  # the harness self-check word is in .data
    bss_size, bss_vma, _ = sec[".bss"]
    assert (sym["__bss_start__"], sym["__bss_end__"]) == (bss_vma, bss_vma + bss_size)
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", ".text", str(elf), str(tmp_path / "text.bin")],
                   check=True)
    initial_sp, reset = np.fromfile(tmp_path / "text.bin", dtype="<u4", count=2)  # the vector table
    assert initial_sp == sym["__stack_top"] == ram + (4 << 20)
    assert reset == sym["qk_reset_handler"] | 1  # Thumb bit


def test_flash_image_only_boots_and_needs_the_data_copy(tmp_path):
    """Boot from the raw flash image (objcopy -O binary: what a programmer writes to flash; RAM
    starts empty): bit-exact with TFLM.  The same program with the start-up's .data copy removed
    fails (newlib's initialized data and the harness self-check word are wrong), as an ELF with
    .data at a flash LMA does too: the copy is what the runs above depend on."""
    need_tool("qemu-system-arm")
    path, elf = _build_hello(tmp_path)
    g = load(path)
    samples = random_samples(g, 5, seed=11)
    write_samples(tmp_path / "input.bin", samples)
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", elf.name, "hw.bin"], cwd=tmp_path, check=True)
    image_size = (tmp_path / "hw.bin").stat().st_size
    sec = _section_table(elf)
    assert image_size == sec[".data"][2] + sec[".data"][0]  # code, constants, then .data's initial values
    r = qemu(tmp_path, "hw.bin")
    assert r.returncode == 0 and "done" in r.stdout, f"flash-image boot failed:\n{r.stdout}\n{r.stderr}"
    got = np.fromfile(tmp_path / "output.bin", dtype=np.int8).reshape(len(samples), -1)
    assert_equal(got, tflm_outputs(path, samples), "hello_world from the flash image vs TFLM")

    startup = tmp_path / "startup_cm.c"
    text = startup.read_text()
    call = "    qk_copy_data(); /* .data: flash (load address) -> RAM (run address) */\n"
    assert text.count(call) == 1
    startup.write_text(text.replace(call, "    (void)qk_copy_data; /* disabled by the test */\n"))
    make(tmp_path)
    (tmp_path / "output.bin").unlink()
    for image in ("hw.elf", "hw.bin"):
        if image == "hw.bin":
            subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "hw.elf", "hw.bin"], cwd=tmp_path, check=True)
        r = qemu(tmp_path, image)
        assert "done" not in r.stdout, f"{image}: ran correctly without the .data copy:\n{r.stdout}"


def test_strided_slice_on_cortex_m4_qemu(tmp_path):
    """The strided gather (negative steps, masks) built with arm-none-eabi-gcc, run under QEMU: bit-exact
    with TFLM."""
    for tool in ("make", "arm-none-eabi-gcc", "qemu-system-arm"):
        need_tool(tool)
    from qsim.loader import load_bytes
    from test_codegen_ops import CASES
    blob = dict(CASES)["ss_negative_masks"]
    g = load_bytes(blob)
    generate(g, tmp_path, name="ss", target="cortex-m4")
    make(tmp_path)
    samples = random_samples(g, 3, seed=8)
    write_samples(tmp_path / "input.bin", samples)
    run_qemu(tmp_path, "ss.elf")
    got = np.fromfile(tmp_path / "output.bin", dtype=np.int8).reshape(len(samples), -1)
    assert_equal(got, tflm_outputs(blob, samples), "strided slice on Cortex-M4/QEMU vs TFLM")
