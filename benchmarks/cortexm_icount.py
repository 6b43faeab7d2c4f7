"""Benchmark: instructions per inference of the generated C on Cortex-M, deterministic, under QEMU.

Each model is generated with `qsim codegen --target cortex-m4` (or m7 / m33), linked with a small
bench main (below) and run under ``qemu-system-arm -M mps2-an386 -icount shift=0``: with
``-icount shift=0`` QEMU's virtual clock advances exactly 1 ns per executed instruction, and
SysTick, clocked from the core clock (CLKSOURCE = 1, 25 MHz on the MPS2 boards), then ticks once
per 40 instructions.  Reading SysTick before and after ``NAME_invoke`` gives the instruction count
of one inference, to 40 instructions, identical on every run and machine (the script runs each
build twice and refuses to report a count that differs).  With ``--per-layer`` a second build with
``-DQK_PROFILE`` reads SysTick after every op (the count per op, profiling calls included).

Instructions are not cycles: a Cortex-M4 takes 1 cycle for most ALU/MAC instructions, 2 for a
load (1 when pipelined), 2-4 for a taken branch.  The published MLPerf Tiny figures are cycles
(ms at 120 MHz x 120e6); the comparison is indicative, not like for like.

Every build compiles and links in one step with ``-O2 -flto`` (the generated Makefile's
ARM_CFLAGS): link-time optimization specializes the kernels to the constant parameters of the
layers that call them and drops the code paths no layer takes.

Flash and RAM are what the model adds to the image: the same bench linked without the
``NAME_invoke`` call (``-DQK_BENCH_EMPTY``: --gc-sections drops the model) is subtracted.  Flash =
.text + .rodata + .data (code, kernels, weights, tables); RAM = .data + .bss (the arena and
per-op state; the I/O buffers are in both builds, the stack is not counted).

    python benchmarks/cortexm_icount.py [--models ad01_int8,kws_ref_model,...] [--targets cortex-m4,cortex-m7]
        [--kernels qsim|cmsis-nn] [--per-layer] [--json out.json] [--write-baseline]

``--write-baseline`` stores the instruction counts in benchmarks/cortexm_icount_baseline.json,
the regression guard of tests/test_cortexm_icount.py (fails when a model gets > 2% slower).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO.parent / "shared" / "models"
BASELINE = REPO / "benchmarks" / "cortexm_icount_baseline.json"
MODELS = {  # name -> model file
    "ad01_int8": MODELS_DIR / "ad01_int8.tflite",
    "kws_ref_model": MODELS_DIR / "kws_ref_model.tflite",
    "vww_96_int8": MODELS_DIR / "vww_96_int8.tflite",
    "pretrainedResnet_quant": MODELS_DIR / "pretrainedResnet_quant.tflite",
    "person_detect": MODELS_DIR / "person_detect.tflite",
    "demo": REPO / "examples" / "models" / "demo_cnn_int8.tflite",
    # stateful (SVDF / LSTM; int16 input and int32 output for keyword_scrambled): one invocation from the reset state
    "keyword_scrambled_8bit": MODELS_DIR / "keyword_scrambled_8bit.tflite",
    "trained_lstm_int8": MODELS_DIR / "trained_lstm_int8.tflite",
}
# MLPerf Tiny v1.0 closed division, STM32 Nucleo-L4R5ZI (Cortex-M4 @ 120 MHz), X-CUBE-AI: latency in ms
# as quoted in issue #13 (AD / KWS / VWW / IC), as cycles = ms * 120e3.  The issue gives no TFLM figures.
XCUBE_MS = {"ad01_int8": 6.9, "kws_ref_model": 63.0, "vww_96_int8": 119.0, "pretrainedResnet_quant": 214.0}
XCUBE_CYCLES = {"ad01_int8": 0.83e6, "kws_ref_model": 7.6e6, "vww_96_int8": 14.3e6, "pretrainedResnet_quant": 25.7e6}
# target -> (-mcpu, QEMU machine); the boards' memory maps are codegen's (qsim.codegen.emit.TARGETS)
TARGETS = {"cortex-m4": ("cortex-m4", "mps2-an386"), "cortex-m7": ("cortex-m7", "mps2-an500"),
           "cortex-m33": ("cortex-m33", "mps2-an505"),
           # no DSP extension (the portable fallback): ARMv7-M / ARMv6-M code on the Cortex-M3 board
           "cortex-m3": ("cortex-m3", "mps2-an385"), "cortex-m0plus": ("cortex-m0plus", "mps2-an385")}
CODEGEN_TARGET = {"cortex-m3": "cortex-m4", "cortex-m0plus": "cortex-m4"}  # same memory map as AN386
TICK_INSNS = 40  # instructions per SysTick tick: 25 MHz core clock, 1 ns per instruction
WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]

BENCH_MAIN = r"""/* bench_main.c: SysTick instruction count of one {name}_invoke (benchmarks/cortexm_icount.py). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "{name}.h"
#include "qkernels.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_COUNTFLAG 0x10000u

static const int8_t input_data[{in_total}] = {{
{input_text}
}};
static int8_t in_buf[{in_total}] QK_ALIGN(16);
static int8_t out_buf[{out_total}] QK_ALIGN(16);

#if defined(QK_PROFILE)
static uint32_t prof_ticks[{n_ops}];
static uint32_t prof_last;

void qk_profile(int32_t op_position)
{{
    const uint32_t now = SYST_CVR;
    if (op_position >= 0) {{
        prof_ticks[op_position] += prof_last - now;
    }}
    prof_last = SYST_CVR;
}}
#endif

int main(void)
{{
    uint32_t start, end, flags;
    unsigned i;
    memcpy(in_buf, input_data, sizeof in_buf);
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0u;
    SYST_CSR = 0x5u; /* ENABLE | CLKSOURCE = core clock, no interrupt */
    while (SYST_CVR == 0u) {{ /* until the first reload from RVR */
    }}
    (void)SYST_CSR;  /* clears COUNTFLAG */
    start = SYST_CVR;
#if !defined(QK_BENCH_EMPTY)
    {name}_invoke({call_args});
#endif
    end = SYST_CVR;
    flags = SYST_CSR;
    if (flags & SYST_COUNTFLAG) {{
        printf("bench: SysTick wrapped (more than 2^24 ticks): count invalid\n");
        return 1;
    }}
    printf("ticks %lu\n", (unsigned long)(start - end));
#if defined(QK_PROFILE)
    for (i = 0; i < {n_ops}u; ++i) {{
        printf("op %u %lu\n", i, (unsigned long)prof_ticks[i]);
    }}
#else
    (void)i;
#endif
    for (i = 0; i < sizeof out_buf; ++i) {{
        printf("%d%c", out_buf[i], i + 1 < sizeof out_buf ? ',' : '\n');
    }}
    return 0;
}}
"""


def tools_missing() -> list[str]:
    return [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm") if shutil.which(t) is None]


def bench_input(g) -> np.ndarray:
    """The benchmark's input bytes: seeded random bytes over every graph input (int8: random int8
    values; int16 / int32 inputs: their native bytes), concatenated."""
    rng = np.random.default_rng(7)
    return np.concatenate([rng.integers(-128, 128, size=g.tensors[t].nbytes, dtype=np.int8) for t in g.inputs])


def _sizes(elf: Path) -> dict[str, int]:
    out = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    return {m.group(1): int(m.group(2)) for m in (re.match(r"^(\.\S+)\s+(\d+)\s", ln) for ln in out.splitlines()) if m}


def _cmsis_lib(build: Path, mcpu: str) -> list[str]:
    """Build the user's CMSIS-NN for ``mcpu`` with the generated Makefile's own rule (-O2, as the
    model); return the compile/link flags the bench needs (include paths, the library last)."""
    r = subprocess.run(["make", "-s", f"cmsis_nn_{mcpu}.a", f"MCPU={mcpu}"], cwd=build, capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building CMSIS-NN for {mcpu} failed:\n{r.stdout}\n{r.stderr}")
    from qsim.codegen.cmsis_nn import find_dirs
    d = find_dirs()
    return [f"-I{d.nn / 'Include'}", *([f"-I{d.core}"] if d.core else []), f"cmsis_nn_{mcpu}.a"]


def _link(build: Path, name: str, mcpu: str, out: str, extra: list[str], dsp: bool,
          libs: list[str] | None = None) -> Path:
    from qsim.codegen.emit import KERNEL_SOURCES
    srcs = ["bench_main.c", f"{name}.c", f"{name}_weights.c", *KERNEL_SOURCES, "startup_cm.c", *(libs or [])]
    flags = ["-O2", "-flto", f"-mcpu={mcpu}", "-mthumb", "-ffunction-sections", "-fdata-sections"]
    if not dsp:
        flags.append("-DQK_NO_DSP")
    r = subprocess.run(["arm-none-eabi-gcc", *WARN, *flags, *extra, "-o", out, *srcs, "--specs=rdimon.specs",
                        "-T", "cortex_m.ld", "-Wl,--gc-sections"], cwd=build, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"arm-none-eabi-gcc failed for {name} ({mcpu}):\n{r.stderr}")
    return build / out


def _qemu(build: Path, elf: Path, machine: str, timeout: int = 900) -> str:
    r = subprocess.run(["qemu-system-arm", "-M", machine, "-icount", "shift=0", "-nographic", "-monitor", "none",
                        "-semihosting-config", "enable=on,target=native", "-kernel", elf.name],
                       cwd=build, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0 or "ticks" not in r.stdout:
        raise RuntimeError(f"QEMU run of {elf.name} on {machine} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def measure(model, build: Path, target: str = "cortex-m4", kernels: str = "qsim", per_layer: bool = False,
            dsp: bool = True, runs: int = 2) -> dict:
    """Instructions of one inference of ``model`` (a .tflite path) on ``target`` under QEMU.

    Returns dict(instructions, macs, flash, ram, arena, outputs, layers=[(position, opcode,
    instructions)] when ``per_layer``).  Raises RuntimeError when two runs disagree."""
    from qsim.codegen import generate
    from qsim.loader import load
    mcpu, machine = TARGETS[target]
    g = load(model)
    name = "net"
    res = generate(model, build, name=name, target=CODEGEN_TARGET.get(target, target), force=True, kernels=kernels)
    libs = _cmsis_lib(build, mcpu) if kernels == "cmsis-nn" else []
    x = bench_input(g)
    from qsim.codegen.tables import c_pointer
    in_sizes = [g.tensors[t].nbytes for t in g.inputs]  # bytes
    out_sizes = [g.tensors[t].nbytes for t in g.outputs]
    call_args = ", ".join([c_pointer(f"in_buf + {sum(in_sizes[:k])}", g.tensors[t].dtype, const=True)
                           for k, t in enumerate(g.inputs)]
                          + [c_pointer(f"out_buf + {sum(out_sizes[:k])}", g.tensors[t].dtype)
                             for k, t in enumerate(g.outputs)])
    rows = [", ".join(str(int(v)) for v in x[i:i + 24]) for i in range(0, x.size, 24)]
    (build / "bench_main.c").write_text(BENCH_MAIN.format(
        name=name, in_total=x.size, out_total=sum(out_sizes), input_text=",\n".join("    " + r for r in rows),
        n_ops=len(res.layers), call_args=call_args))  # layers: the generated ops (uint8 models: + boundary tables)
    elf = _link(build, name, mcpu, "bench.elf", [], dsp, libs)
    empty = _link(build, name, mcpu, "bench_empty.elf", ["-DQK_BENCH_EMPTY"], dsp, libs)
    outs = [_qemu(build, elf, machine) for _ in range(runs)]
    if len(set(outs)) != 1:
        raise RuntimeError(f"{model}: instruction counts differ between identical runs:\n" + "\n".join(outs))
    ticks = int(re.search(r"ticks (\d+)", outs[0]).group(1))
    outputs = [int(v) for v in outs[0].strip().splitlines()[-1].split(",")]
    full, base = _sizes(elf), _sizes(empty)
    sec = lambda s, names: sum(s.get(n, 0) for n in names)  # noqa: E731
    result = dict(instructions=ticks * TICK_INSNS, macs=res.total_macs, arena=res.arena_bytes,
                  flash=sec(full, (".text", ".rodata", ".data")) - sec(base, (".text", ".rodata", ".data")),
                  ram=sec(full, (".data", ".bss")) - sec(base, (".data", ".bss")), outputs=outputs)
    if per_layer:
        prof = _link(build, name, mcpu, "bench_prof.elf", ["-DQK_PROFILE"], dsp, libs)
        text = _qemu(build, prof, machine)
        ticks_per_op = {int(a): int(b) for a, b in re.findall(r"^op (\d+) (\d+)$", text, re.M)}
        result["layers"] = [(l.position, l.opcode, ticks_per_op.get(l.position, 0) * TICK_INSNS) for l in res.layers]
        layer_info = getattr(res, "layers", [])
        result["kernel_paths"] = {l.position: getattr(l, "kernel", "") for l in layer_info}
    return result


def _fmt_m(v) -> str:
    return f"{v / 1e6:.3f} M" if v is not None else "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--targets", default="cortex-m4", help=f"comma-separated, of {', '.join(TARGETS)}")
    ap.add_argument("--kernels", default="qsim", choices=["qsim", "cmsis-nn"])
    ap.add_argument("--cmsis-nn-dir", default=None,
                    help="CMSIS-NN checkout for --kernels cmsis-nn (default $CMSIS_NN_DIR, else "
                         "../shared/third_party/cmsis-nn beside the repository)")
    ap.add_argument("--no-dsp", action="store_true", help="build with -DQK_NO_DSP (the portable C fallback)")
    ap.add_argument("--per-layer", action="store_true", help="also a -DQK_PROFILE build: instructions per op")
    ap.add_argument("--build-dir", default=None, help="keep the builds here (default: a temporary directory)")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    ap.add_argument("--write-baseline", action="store_true",
                    help=f"store the counts as the regression baseline ({BASELINE.relative_to(REPO)})")
    args = ap.parse_args(argv)
    if args.kernels == "cmsis-nn" and not os.environ.get("CMSIS_NN_DIR"):
        nn = Path(args.cmsis_nn_dir) if args.cmsis_nn_dir else REPO.parent / "shared" / "third_party" / "cmsis-nn"
        os.environ["CMSIS_NN_DIR"] = str(nn.resolve())
        core = nn.parent / "cmsis-core"
        if core.is_dir():
            os.environ.setdefault("CMSIS_CORE_DIR", str(core.resolve()))
    missing = tools_missing()
    if missing:
        print(f"cortexm_icount: needs {', '.join(missing)} (Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi "
              "qemu-system-arm)", file=sys.stderr)
        return 2
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        print(f"cortexm_icount: unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}",
              file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory(prefix="cortexm_icount_") as tmp:
        root = Path(args.build_dir or tmp)
        for target in args.targets.split(","):
            for m in models:
                if not MODELS[m].is_file():
                    print(f"cortexm_icount: {MODELS[m]} is absent; skipped", file=sys.stderr)
                    continue
                d = root / f"{target}_{args.kernels}_{m}"
                d.mkdir(parents=True, exist_ok=True)
                results[(target, m)] = measure(MODELS[m], d, target, args.kernels, args.per_layer,
                                               dsp=not args.no_dsp)
    print(f"instructions per inference under qemu-system-arm -icount shift=0 (SysTick, {TICK_INSNS}-instruction "
          f"resolution; identical over 2 runs), kernels {args.kernels}{' (no DSP)' if args.no_dsp else ''}; "
          "X-CUBE-AI: MLPerf Tiny Cortex-M4 @ 120 MHz cycles (issue #13); flash/RAM: bytes the model adds to the image")
    print(f"{'target':<14}{'model':<24}{'instructions':>14}{'MACs':>11}{'insn/MAC':>9}{'X-CUBE-AI':>12}"
          f"{'ratio':>7}{'flash':>9}{'RAM':>8}")
    for (target, m), r in results.items():
        xc = XCUBE_CYCLES.get(m)
        ratio = f"{r['instructions'] / xc:>7.2f}" if xc else f"{'-':>7}"
        print(f"{target:<14}{m:<24}{r['instructions']:>14}{r['macs']:>11}{r['instructions'] / r['macs']:>9.2f}"
              f"{_fmt_m(xc):>12}{ratio}{r['flash']:>9}{r['ram']:>8}")
    if args.per_layer:
        for (target, m), r in results.items():
            print(f"\n{target} {m}: per op (QK_PROFILE build; profiling calls included)")
            for pos, opcode, n in r["layers"]:
                path = r["kernel_paths"].get(pos, "")
                print(f"  #{pos:<3} {opcode:<20} {path:<22} {n:>12}  {100 * n / max(r['instructions'], 1):5.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{t}/{m}": r for (t, m), r in results.items()}, indent=2) + "\n")
    if args.write_baseline:
        base = json.loads(BASELINE.read_text()) if BASELINE.is_file() else {}
        for (target, m), r in results.items():
            key = f"{target}/{args.kernels}" + ("/nodsp" if args.no_dsp else "")
            base.setdefault(key, {})[m] = r["instructions"]
        BASELINE.write_text(json.dumps(base, indent=2, sort_keys=True) + "\n")
        print(f"baseline written: {BASELINE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
