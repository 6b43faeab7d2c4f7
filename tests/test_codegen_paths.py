"""The specialized C kernel paths (codegen.tables.KERNEL_PATHS): chosen at generation time for the
layers they apply to, and bit-exact with TFLite Micro through each of them -- natively, under
ASan/UBSan, and on Cortex-M under QEMU with the DSP extension (Cortex-M4: SMLAD/SXTB16), without it
(-DQK_NO_DSP on the M4) and on cores that have none (cortex-m3, cortex-m0plus on the AN385 board),
where the portable C fallback must be what is compiled (checked in the object code).
"""
from __future__ import annotations

import subprocess
import zlib

import numpy as np
import pytest

from conftest import require_module, shared_model
from qsim import ir
from qsim.interpreter import prepare_graph
from qsim.loader import load, load_bytes
from qsim.errors import QsimError

from qsim.codegen import generate, tables
from test_codegen import assert_equal, build_sanitized, make, need_tool, random_samples, run_host, tflm_outputs, \
    write_samples

builder = require_module("qsim.builder", "model builder")
from test_codegen_ops import _Net  # noqa: E402


def expected_path(g: ir.Graph, op) -> str:
    """The path each layer must get, from the model's own geometry (not from codegen)."""
    if op.opcode == "CONV_2D":
        w = g.tensors[op.inputs[1]]
        o = op.options
        pointwise = w.shape[1:3] == (1, 1) and (o.stride_h, o.stride_w) == (1, 1)
        if pointwise:
            return "conv_1x1"
        return "conv_direct" if int(w.shape[3]) % 4 == 0 else "conv_im2col"  # in_c % 4 == 0: no int8 patches
    if op.opcode == "DEPTHWISE_CONV_2D":
        w = g.tensors[op.inputs[1]]
        o = op.options
        out_c = int(w.shape[3])
        if out_c == o.depth_multiplier:  # one input channel
            return "dw_as_conv"
        if o.depth_multiplier == 1 and (o.dilation_h, o.dilation_w) == (1, 1) and out_c >= 4:
            if tuple(w.shape[1:3]) != (3, 3):
                return "dw_dm1"
            return "dw_3x3_sat" if _act_range_all_int8(g, op) and _right_shifts_at_least_2(g, op) else "dw_3x3"
        return "dw_channel_major" if out_c <= tables.DW_FEW_CHANNELS else "dw_generic"
    if op.opcode == "FULLY_CONNECTED":
        w = g.tensors[op.inputs[1]]
        zp = 0 if w.quant is None or w.quant.per_channel else w.quant.zp0
        if zp != 0:
            return "fc_offsets"
        scales = np.asarray(w.quant.scale).reshape(-1)  # one scale: one multiplier and shift for every unit
        return "fc_folded" if np.unique(scales).size > 1 else "fc_folded_pt"
    return ""


def _act_range_all_int8(g: ir.Graph, op) -> bool:
    """Whether the op's fused activation clamps its int8 output to all of [-128, 127] (TFLite's
    CalculateActivationRangeQuantized: RELU from the zero point up, RELU6 up to zp + round(6 / scale),
    RELU_N1_TO_1 from zp + round(-1 / scale) to zp + round(1 / scale), each within int8)."""
    y = g.tensors[op.outputs[0]]
    zp, scale = y.quant.zp0, float(np.asarray(y.quant.scale).reshape(-1)[0])
    act = op.options.activation
    lo = {"NONE": -128, "RELU": zp, "RELU6": zp, "RELU_N1_TO_1": zp + round(-1 / scale)}[act]
    hi = {"NONE": 127, "RELU": 127, "RELU6": zp + round(6 / scale), "RELU_N1_TO_1": zp + round(1 / scale)}[act]
    return lo <= -128 and hi >= 127


def _right_shifts_at_least_2(g: ir.Graph, op) -> bool:
    """Whether every channel's requantization shift is <= -2 (TFLite's QuantizeMultiplier: the real
    scale in_scale * w_scale / out_scale = q * 2^shift with q in [0.5, 1), shift + 1 when q rounds
    to 2^31 / 2^31), i.e. every effective scale below 1/4 once rounded."""
    x, w, y = (g.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    scales = float(np.asarray(x.quant.scale).reshape(-1)[0]) * np.asarray(w.quant.scale, np.float64).reshape(-1) \
        / float(np.asarray(y.quant.scale).reshape(-1)[0])
    shifts = []
    for sc in scales:
        q, e = np.frexp(sc)
        shifts.append(int(e) + (1 if round(float(q) * 2**31) == 2**31 else 0))
    return max(shifts) <= -2


def _single(rng, shape, oc, k, stride=1, dil=1, padding="SAME", depthwise=False, mult=1, dw_activation="NONE",
            out_zp=0) -> bytes:
    net = _Net(rng)
    x = net.b.add_input("x", shape, np.int8, scale=0.05, zero_point=-7)
    y, _, _ = net.conv(x, 0.05, shape, oc, k, stride=stride, dil=dil, padding=padding, depthwise=depthwise, mult=mult,
                       dw_activation=dw_activation, out_zp=out_zp)
    net.b.mark_output(y)
    return net.b.build()


def _fc(rng, batches, n_in, n_out, per_channel=False) -> bytes:
    b = builder.ModelBuilder(description="fc path case")
    x = b.add_input("x", (batches, n_in), np.int8, scale=0.05, zero_point=11)
    w_scale = 0.01 * (1 + np.arange(n_out) / n_out) if per_channel else 0.01
    wt = b.add_const("w", rng.integers(-127, 128, size=(n_out, n_in), dtype=np.int8), scale=w_scale,
                     zero_point=np.zeros(n_out, np.int64) if per_channel else None)
    bt = b.add_const("b", rng.integers(-900, 900, size=n_out).astype(np.int32),
                     scale=0.05 * w_scale, zero_point=np.zeros(n_out, np.int64) if per_channel else None)
    y = b.add_tensor("y", (batches, n_out), np.int8, scale=0.08, zero_point=-3)
    b.add_op("FULLY_CONNECTED", [x, wt, bt], [y], ir.FullyConnectedOptions(activation="RELU"))
    b.mark_output(y)
    return b.build()


def _pool_pad(rng) -> bytes:
    """PAD (row-wise) -> MAX_POOL_2D and AVERAGE_POOL_2D with 40 channels (more than one channel chunk)."""
    b = builder.ModelBuilder(description="pool/pad path case")
    x = b.add_input("x", (1, 5, 6, 40), np.int8, scale=0.05, zero_point=-3)
    p = b.add_tensor("p", (1, 7, 9, 40), np.int8, scale=0.05, zero_point=-3)
    b.add_op("PAD", [x, b.add_const("pads", np.array([[0, 0], [1, 1], [2, 1], [0, 0]], np.int32))], [p])
    m = b.add_tensor("m", (1, 4, 5, 40), np.int8, scale=0.05, zero_point=-3)
    b.add_op("MAX_POOL_2D", [p], [m], ir.Pool2DOptions(padding="SAME", stride_h=2, stride_w=2, filter_h=3,
                                                       filter_w=3))
    a = b.add_tensor("a", (1, 3, 4, 40), np.int8, scale=0.05, zero_point=-3)
    b.add_op("AVERAGE_POOL_2D", [m], [a], ir.Pool2DOptions(padding="VALID", filter_h=2, filter_w=2,
                                                           activation="RELU"))
    b.mark_output(a)
    return b.build()


def _mixed_shifts(rng) -> bytes:
    """CONV_2D 1x1 -> DEPTHWISE_CONV_2D 3x3 whose per-channel weight scales span 100x, so the
    requantization shifts run from -4 to +3: channels on qkernels.c's one-multiply path (shift <= -2)
    next to channels on the general three-stage path, in the same 2x2 tile and depthwise group."""
    b = builder.ModelBuilder(description="mixed requant shifts")
    x = b.add_input("x", (1, 5, 6, 8), np.int8, scale=0.05, zero_point=-7)
    ws = np.geomspace(0.0005, 0.05, 6)
    wt = b.add_const("w1", rng.integers(-127, 128, size=(6, 1, 1, 8), dtype=np.int8), scale=ws,
                     zero_point=np.zeros(6, np.int64), axis=0)
    bt = b.add_const("b1", rng.integers(-300, 300, size=6).astype(np.int32), scale=0.05 * ws,
                     zero_point=np.zeros(6, np.int64), axis=0)
    y = b.add_tensor("y", (1, 5, 6, 6), np.int8, scale=0.05 * 0.004, zero_point=3)
    b.add_op("CONV_2D", [x, wt, bt], [y], ir.Conv2DOptions(padding="SAME", activation="NONE"))
    ws2 = np.geomspace(0.0005, 0.05, 6)[::-1].copy()
    wt2 = b.add_const("w2", rng.integers(-127, 128, size=(1, 3, 3, 6), dtype=np.int8), scale=ws2,
                      zero_point=np.zeros(6, np.int64), axis=3)
    bt2 = b.add_const("b2", rng.integers(-300, 300, size=6).astype(np.int32), scale=0.05 * 0.004 * ws2,
                      zero_point=np.zeros(6, np.int64), axis=0)
    z = b.add_tensor("z", (1, 5, 6, 6), np.int8, scale=0.05 * 0.004 * 0.01, zero_point=-5)
    b.add_op("DEPTHWISE_CONV_2D", [y, wt2, bt2], [z], ir.DepthwiseConv2DOptions(padding="SAME", depth_multiplier=1))
    b.mark_output(z)
    return b.build()


def _conv_full_range(rng, shape, oc, k, stride=1) -> bytes:
    """CONV_2D with no activation and a nonzero output zero point: the full int8 range, so qkernels.c's
    DSP paths requantize with SSAT (the RELU cases above clamp at the zero point: the general path)."""
    b = builder.ModelBuilder(description="full-range conv path case")
    _, h, w, ic = shape
    x = b.add_input("x", shape, np.int8, scale=0.05, zero_point=-7)
    ws = rng.uniform(0.005, 0.02, size=oc)
    wt = b.add_const("w", rng.integers(-127, 128, size=(oc, k, k, ic), dtype=np.int8), scale=ws,
                     zero_point=np.zeros(oc, np.int64), axis=0)
    bt = b.add_const("b", rng.integers(-2000, 2000, size=oc).astype(np.int32), scale=0.05 * ws,
                     zero_point=np.zeros(oc, np.int64), axis=0)
    out_scale = float(np.sqrt(k * k * ic) * 40 * 73 * 0.05 * ws.mean() / 128)
    y = b.add_tensor("y", (1, -(-h // stride), -(-w // stride), oc), np.int8, scale=out_scale, zero_point=5)
    b.add_op("CONV_2D", [x, wt, bt], [y], ir.Conv2DOptions(padding="SAME", stride_h=stride, stride_w=stride,
                                                           activation="NONE"))
    b.mark_output(y)
    return b.build()


def _cases():
    rng = np.random.default_rng(2026)
    return {
        "conv_1x1": _single(rng, (1, 5, 7, 12), 10, 1),  # odd out_c: the 2x2 tile's tail channel
        "conv_1x1_s2_im2col": _single(rng, (1, 6, 6, 8), 6, 1, stride=2),
        "conv_3x3_same_im2col": _single(rng, (1, 7, 5, 3), 5, 3),
        "conv_3x3_dil2_valid": _single(rng, (1, 9, 9, 4), 4, 3, dil=2, padding="VALID"),
        "dw_3x3_s1": _single(rng, (1, 6, 7, 10), 0, 3, depthwise=True),  # 10 channels: groups of 4 + tail
        "dw_3x3_s2": _single(rng, (1, 9, 8, 8), 0, 3, stride=2, depthwise=True),
        "dw_3x3_s2_valid": _single(rng, (1, 9, 8, 4), 0, 3, stride=2, padding="VALID", depthwise=True),
        # a narrower activation range (the clamp after the saturation): RELU from zp -20, RELU6;
        # odd sizes, one-pixel-wide image (windows of one column), channels 4k + 1..3
        "dw_3x3_relu": _single(rng, (1, 5, 7, 7), 0, 3, depthwise=True, dw_activation="RELU", out_zp=-20),
        "dw_3x3_relu6_s2": _single(rng, (1, 7, 5, 13), 0, 3, stride=2, depthwise=True, dw_activation="RELU6",
                                   out_zp=-128),
        "dw_3x3_narrow": _single(rng, (1, 5, 1, 6), 0, 3, depthwise=True),
        "dw_3x3_s2_odd_relu": _single(rng, (1, 3, 9, 5), 0, 3, stride=2, depthwise=True, dw_activation="RELU",
                                      out_zp=-128),
        "dw_5x5_dm1": _single(rng, (1, 8, 8, 6), 0, 5, depthwise=True),
        "dw_channel_major": _single(rng, (1, 6, 6, 2), 0, 3, depthwise=True, mult=3),
        "dw_generic_dm2": _single(rng, (1, 6, 6, 6), 0, 3, depthwise=True, mult=2),
        "dw_generic_dil2": _single(rng, (1, 9, 9, 12), 0, 3, dil=2, depthwise=True),
        "fc_batch1": _fc(rng, 1, 37, 9),
        "fc_batch3": _fc(rng, 3, 20, 4),
        "fc_per_channel": _fc(rng, 2, 21, 7, per_channel=True),
        "pool_pad": _pool_pad(rng),
        "mixed_shifts": _mixed_shifts(rng),
        "dw_one_channel_s2": _single(rng, (1, 9, 8, 1), 0, 3, stride=2, depthwise=True, mult=8),  # person_detect's #0
        "dw_one_channel_dil2": _single(rng, (1, 9, 9, 1), 0, 3, dil=2, depthwise=True, mult=3),
        # full int8 range: the DSP 4-pixel tiles' SSAT requantization; 15 pixels: a last tile of 3
        "conv_1x1_full_c16": _conv_full_range(rng, (1, 3, 5, 16), 7, 1),  # depth % 8 == 0: the assembly loop
        "conv_1x1_full_c12": _conv_full_range(rng, (1, 3, 5, 12), 6, 1),  # an odd group of four taps
        "conv_1x1_full_c2": _conv_full_range(rng, (1, 3, 5, 2), 4, 1),  # depth < 4
        "conv_3x3_full_c3_s2": _conv_full_range(rng, (1, 7, 6, 3), 5, 3, stride=2),  # depth 27: a partial group
    }


CASES = _cases()
# case -> the path its first layer must take
CASE_PATH = {"conv_1x1": "conv_1x1", "conv_1x1_s2_im2col": "conv_direct", "conv_3x3_same_im2col": "conv_im2col",
             "conv_3x3_dil2_valid": "conv_direct", "dw_3x3_s1": "dw_3x3_sat", "dw_3x3_s2": "dw_3x3_sat",
             "dw_3x3_s2_valid": "dw_3x3_sat", "dw_3x3_relu": "dw_3x3", "dw_3x3_relu6_s2": "dw_3x3",
             "dw_3x3_narrow": "dw_3x3_sat", "dw_3x3_s2_odd_relu": "dw_3x3_sat", "dw_5x5_dm1": "dw_dm1", "dw_channel_major": "dw_channel_major",
             "dw_generic_dm2": "dw_generic", "dw_generic_dil2": "dw_generic", "fc_batch1": "fc_folded_pt",
             "fc_batch3": "fc_folded_pt", "fc_per_channel": "fc_folded", "pool_pad": "", "mixed_shifts": "conv_1x1",
             "dw_one_channel_s2": "dw_as_conv", "dw_one_channel_dil2": "dw_as_conv",
             "conv_1x1_full_c16": "conv_1x1", "conv_1x1_full_c12": "conv_1x1", "conv_1x1_full_c2": "conv_1x1",
             "conv_3x3_full_c3_s2": "conv_im2col"}


def test_fold_input_offset_hand_derived():
    """bias + input_offset * row sum, wrapped like int32: [10, -5] + 3 * [1 + 2, 3 - 4] = [19, -8];
    INT32_MAX + 1 * 1 wraps to INT32_MIN (the C adds it with the same wrap)."""
    b = tables.CArray("b", "int32_t", np.array([10, -5], np.int64))
    tables.fold_input_offset(b, np.array([[1, 2], [3, -4]]), 3)
    assert b.values.tolist() == [19, -8]
    b = tables.CArray("b", "int32_t", np.array([2**31 - 1], np.int64))
    tables.fold_input_offset(b, np.array([[1]]), 1)
    assert b.values.tolist() == [-2**31]


def test_negative_multiplier_refused():
    """The GEMM kernels' one-multiply requantization assumes M0 >= 0 (QuantizeMultiplier's range):
    a table with a negative M0 is refused at generation, with a message, instead of miscomputed."""
    from types import SimpleNamespace
    rq = SimpleNamespace(bias=[0, 0], multiplier=[1 << 30, -5], shift=[-3, -3], rounding="double")
    with pytest.raises(QsimError, match="negative requantization multiplier"):
        tables._requant_arrays("op0", rq, 2, "CONV_2D")
    ok = tables._requant_arrays("op0", SimpleNamespace(bias=[0], multiplier=[0], shift=[-3], rounding="double"),
                                2, "CONV_2D")
    assert ok[1].values.tolist() == [0, 0]


def test_dw_3x3_one_kernel_per_image(tmp_path):
    """A model with a full-range 3x3 depthwise (dw_3x3_sat alone) and a RELU one with its zero point
    at -20 (a narrower range: dw_3x3): both layers run qk_depthwise_conv3x3, the other is not called."""
    net = _Net(np.random.default_rng(7))
    shape = (1, 6, 5, 8)
    x = net.b.add_input("x", shape, np.int8, scale=0.05, zero_point=-7)
    y, ys, _ = net.conv(x, 0.05, shape, 0, 3, depthwise=True)
    z, _, _ = net.conv(y, ys, shape, 0, 3, depthwise=True, dw_activation="RELU", out_zp=-20)
    net.b.mark_output(z)
    g = load_bytes(net.b.build())
    assert [expected_path(g, op) for op in g.operators] == ["dw_3x3_sat", "dw_3x3"]
    res = generate(g, tmp_path, name="m")
    assert [l.kernel for l in res.layers] == ["dw_3x3", "dw_3x3"]
    src = (tmp_path / "m.c").read_text()
    assert "qk_depthwise_conv3x3(" in src and "qk_depthwise_conv3x3_sat(" not in src


def test_dw_group_major_hand_derived():
    """2 taps x 6 channels [[0..5], [10..15]]: the group of channels 0-3 tap by tap (0 1 2 3, 10 11 12 13),
    then the 2 remaining channels tap by tap (4 5, 14 15)."""
    w = np.array([[0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15]])
    assert tables.dw_group_major(w.reshape(-1), 2, 6).tolist() == [0, 1, 2, 3, 10, 11, 12, 13, 4, 5, 14, 15]
    assert tables.dw_group_major(np.arange(8), 1, 8).tolist() == list(range(8))  # one tap: unchanged


@pytest.mark.parametrize("case", sorted(CASES))
def test_case_takes_its_path(case, tmp_path):
    g = load_bytes(CASES[case])
    res = generate(g, tmp_path, name="m")
    assert res.layers[0].kernel == CASE_PATH[case]
    assert res.layers[0].kernel == expected_path(g, g.operators[0])


@pytest.mark.parametrize("model", ["kws_ref_model", "vww_96_int8", "person_detect", "pretrainedResnet_quant",
                                   "ad01_int8"])
def test_shared_models_layers_take_their_paths(model, tmp_path):
    """Every GEMM layer of the shared models gets the path its geometry calls for (recorded in the
    report), and the fast paths really occur (1x1 convs, 3x3 depthwise, folded FC)."""
    path = shared_model(model + ".tflite")
    g = load(path)
    res = generate(path, tmp_path, name="m")
    report = {l.position: l.kernel for l in res.layers}
    want_paths = [expected_path(g, op) for op in g.operators]
    if "dw_3x3" in want_paths:  # one 3x3 depthwise kernel per image (tables.unify_dw_3x3)
        want_paths = ["dw_3x3" if k == "dw_3x3_sat" else k for k in want_paths]
    for pos, op in enumerate(g.operators):
        assert report[pos] == want_paths[pos], f"op #{pos} {op.opcode}"
    used = set(report.values())
    want = {"kws_ref_model": {"conv_1x1", "dw_3x3_sat", "conv_im2col"},
            "vww_96_int8": {"conv_1x1", "dw_3x3_sat", "conv_im2col"},
            "person_detect": {"conv_1x1", "dw_3x3", "dw_as_conv"},  # op 1 has a shift of -1: dw_3x3 throughout  # its first layer: one input channel
            "pretrainedResnet_quant": {"conv_im2col", "conv_direct"},  # its 1x1 convs have stride 2
            "ad01_int8": {"fc_folded_pt"}}[model]
    assert want <= used, used


@pytest.mark.parametrize("case", sorted(CASES))
def test_case_bit_exact_native_and_sanitized(case, tmp_path):
    need_tool("gcc")
    blob = CASES[case]
    g = load_bytes(blob)
    generate(g, tmp_path, name="m")
    make(tmp_path, "host")
    samples = random_samples(g, 6, seed=zlib.crc32(case.encode()))
    want = tflm_outputs(blob, samples, len(g.outputs))
    assert_equal(run_host(tmp_path, "m", samples), want, f"{case}: C vs TFLM")
    exe = build_sanitized(tmp_path, "m")
    assert_equal(run_host(tmp_path, "m", samples, exe=exe), want, f"{case}: ASan/UBSan build vs TFLM")


# (-mcpu, extra CFLAGS, QEMU machine, DSP instructions expected in the image)
ARM_VARIANTS = {"m4_dsp": ("cortex-m4", "", "mps2-an386", True),
                "m4_nodsp": ("cortex-m4", "-DQK_NO_DSP", "mps2-an386", False),
                "m3": ("cortex-m3", "", "mps2-an385", False),
                "m0plus": ("cortex-m0plus", "", "mps2-an385", False)}


def _arm_run(build, name: str, variant: str, samples, gemm: bool = True) -> np.ndarray:
    """Build ``variant`` (ARM_VARIANTS), check that qkernels' DSP path is in the image exactly when the
    core has DSP and the model has a GEMM layer (``gemm``), run it under QEMU; returns the outputs."""
    mcpu, extra, machine, dsp = ARM_VARIANTS[variant]
    flags = f"-O2 -mcpu={mcpu} -mthumb -ffunction-sections -fdata-sections -DQK_STACK_PAINT {extra}".strip()
    make(build, "cortex-m", MCPU=mcpu, ARM_CFLAGS=flags)
    elf = build / f"{name}.elf"
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True, check=True).stdout
    # SXTB16 comes only from qkernels' DSP path (the compiler may pick SMLABB for plain C on an M4 itself)
    assert ("sxtb16" in dis) == (dsp and gemm), f"{variant}: qkernels' DSP path {'missing' if dsp else 'compiled'}"
    write_samples(build / "input.bin", samples)
    r = subprocess.run(["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none", "-semihosting-config",
                        "enable=on,target=native", "-kernel", elf.name], cwd=build, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and "done" in r.stdout, f"{variant}: QEMU run failed:\n{r.stdout}\n{r.stderr}"
    (elf).unlink()
    return np.fromfile(build / "output.bin", dtype=np.int8).reshape(len(samples), -1)


def _need_arm():
    for tool in ("make", "arm-none-eabi-gcc", "arm-none-eabi-objdump", "qemu-system-arm"):
        need_tool(tool)


@pytest.mark.parametrize("case", sorted(CASES))
def test_case_bit_exact_on_cortex_m_with_and_without_dsp(case, tmp_path):
    _need_arm()
    blob = CASES[case]
    g = load_bytes(blob)
    generate(g, tmp_path, name="m", target="cortex-m4")
    samples = random_samples(g, 4, seed=zlib.crc32(case.encode()) + 3)
    want = tflm_outputs(blob, samples, len(g.outputs))
    for variant in ARM_VARIANTS:
        assert_equal(_arm_run(tmp_path, "m", variant, samples, gemm=CASE_PATH[case] != ""), want,
                     f"{case} on {variant} vs TFLM")


@pytest.mark.parametrize("model", ["kws_ref_model", "ad01_int8"])
def test_shared_model_on_cortex_m_without_dsp(model, tmp_path):
    """A whole shared model through the portable fallback on the M4 (-DQK_NO_DSP), the M3 and the M0+
    (the DSP build of every shared model runs in test_codegen_cortexm.py)."""
    _need_arm()
    path = shared_model(model + ".tflite")
    g = load(path)
    generate(path, tmp_path, name="m", target="cortex-m4")
    samples = random_samples(g, 3, seed=77)
    want = tflm_outputs(path, samples)
    for variant in ("m4_nodsp", "m3", "m0plus"):
        assert_equal(_arm_run(tmp_path, "m", variant, samples), want, f"{model} on {variant} vs TFLM")


def test_dsp_and_fallback_agree_with_qsim_on_edges(tmp_path):
    """Inputs at the int8 extremes (all -128, all 127) through the 1x1 and 3x3 depthwise paths: the DSP
    sign extensions and the offset-in-halfword adds (SXTAB16) at their limits, vs qsim and TFLM."""
    _need_arm()
    blob = CASES["dw_3x3_s1"]
    g = load_bytes(blob)
    generate(g, tmp_path, name="m", target="cortex-m4")
    shape = g.tensors[g.inputs[0]].shape
    samples = [[np.full(shape, v, np.int8)] for v in (-128, 127, 0)]
    want = tflm_outputs(blob, samples)
    pg = prepare_graph(g, "tflm")
    mine = np.stack([pg.run(s, keep_all=False)[g.outputs[0]].reshape(-1) for s in samples]).astype(np.int8)
    assert_equal(mine, want, "qsim vs TFLM")
    for variant in ("m4_dsp", "m4_nodsp"):
        assert_equal(_arm_run(tmp_path, "m", variant, samples), want, f"edges on {variant} vs TFLM")
