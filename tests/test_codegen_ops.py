"""Generated C kernels, op by op, on single-op models built with qsim.builder: bit-exact with TFLM.

Covers what the shared models do not: strides, dilation, VALID padding,
per-tensor weights, fused activations, depth multipliers, batches, MAX_POOL_2D,
broadcasting ADD / SUB / MUL, and alias ops feeding graph outputs.  Shapes
and quantization parameters are drawn from a fixed seed.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from conftest import require_module
from qsim import ir
from qsim.loader import load_bytes

from qsim.codegen import generate
from test_codegen import (assert_equal, build_sanitized, check_trace, make, need_tool, qsim_outputs, random_samples,
                          run_host, tflm_outputs)

builder = require_module("qsim.builder", "model builder")


def _conv_model(rng, depthwise: bool, padding: str, stride: int, dilation: int, act: str,
                per_channel: bool, mult: int = 1, bias: bool = True) -> bytes:
    b = builder.ModelBuilder(description="codegen conv case")
    h, w, ic = int(rng.integers(5, 12)), int(rng.integers(5, 12)), int(rng.integers(1, 6))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    oc = ic * mult if depthwise else int(rng.integers(1, 9))
    x_scale, x_zp = float(rng.uniform(0.01, 0.1)), int(rng.integers(-20, 20))
    x = b.add_input("x", (1, h, w, ic), np.int8, scale=x_scale, zero_point=x_zp)
    w_shape = (1, kh, kw, oc) if depthwise else (oc, kh, kw, ic)
    wq = rng.integers(-127, 128, size=w_shape, dtype=np.int8)
    scales = rng.uniform(0.002, 0.02, size=oc) if per_channel else np.array([0.01])
    axis = 3 if depthwise else 0
    wt = b.add_const("w", wq, scale=scales, zero_point=np.zeros(scales.size, np.int64), axis=axis)
    bias_scales = x_scale * (scales if per_channel else np.full(oc, scales[0]))
    bt = b.add_const("b", rng.integers(-3000, 3000, size=oc).astype(np.int32), scale=bias_scales,
                     zero_point=np.zeros(oc, np.int64), axis=0) if bias else -1
    eff_kh, eff_kw = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
    if padding == "SAME":
        oh, ow = -(-h // stride), -(-w // stride)
    else:
        oh, ow = (h - eff_kh) // stride + 1, (w - eff_kw) // stride + 1
    y = b.add_tensor("y", (1, oh, ow, oc), np.int8, scale=float(rng.uniform(0.02, 0.2)),
                     zero_point=int(rng.integers(-10, 10)))
    if depthwise:
        opts = ir.DepthwiseConv2DOptions(padding=padding, stride_h=stride, stride_w=stride, dilation_h=dilation,
                                         dilation_w=dilation, depth_multiplier=mult, activation=act)
        b.add_op("DEPTHWISE_CONV_2D", [x, wt, bt], [y], opts)
    else:
        opts = ir.Conv2DOptions(padding=padding, stride_h=stride, stride_w=stride, dilation_h=dilation,
                                dilation_w=dilation, activation=act)
        b.add_op("CONV_2D", [x, wt, bt], [y], opts)
    b.mark_output(y)
    return b.build()


def _fc_model(rng, batches: int, per_channel: bool, act: str, keep_num_dims: bool) -> bytes:
    b = builder.ModelBuilder(description="codegen fc case")
    n_in, n_out = int(rng.integers(3, 40)), int(rng.integers(1, 20))
    x_scale = 0.05
    x = b.add_input("x", (batches, 2, n_in) if keep_num_dims else (batches, n_in), np.int8, scale=x_scale,
                    zero_point=int(rng.integers(-30, 30)))
    scales = rng.uniform(0.002, 0.02, size=n_out) if per_channel else np.array([0.01])
    wt = b.add_const("w", rng.integers(-127, 128, size=(n_out, n_in), dtype=np.int8), scale=scales,
                     zero_point=np.zeros(scales.size, np.int64), axis=0)
    bt = b.add_const("b", rng.integers(-500, 500, size=n_out).astype(np.int32),
                     scale=x_scale * (scales if per_channel else np.full(n_out, scales[0])),
                     zero_point=np.zeros(n_out, np.int64), axis=0)
    y = b.add_tensor("y", (batches, 2, n_out) if keep_num_dims else (batches, n_out), np.int8, scale=0.1,
                     zero_point=3)
    b.add_op("FULLY_CONNECTED", [x, wt, bt], [y], ir.FullyConnectedOptions(activation=act,
                                                                           keep_num_dims=keep_num_dims))
    b.mark_output(y)
    return b.build()


def _pool_model(opcode: str, padding: str, stride: int, fh: int, fw: int, act: str) -> bytes:
    b = builder.ModelBuilder(description="codegen pool case")
    h, w, c = 9, 7, 3
    x = b.add_input("x", (2, h, w, c), np.int8, scale=0.05, zero_point=-4)
    oh = -(-h // stride) if padding == "SAME" else (h - fh) // stride + 1
    ow = -(-w // stride) if padding == "SAME" else (w - fw) // stride + 1
    y = b.add_tensor("y", (2, oh, ow, c), np.int8, scale=0.05, zero_point=-4)
    b.add_op(opcode, [x], [y], ir.Pool2DOptions(padding=padding, stride_h=stride, stride_w=stride,
                                                filter_h=fh, filter_w=fw, activation=act))
    b.mark_output(y)
    return b.build()


def _binary_model(opcode: str, shape1, shape2, act: str, const_second: bool = False) -> bytes:
    b = builder.ModelBuilder(description="codegen binary case")
    out_shape = tuple(np.broadcast_shapes(shape1, shape2))
    raw = opcode in ("MAXIMUM", "MINIMUM")  # compare raw values: one quantization for all three
    q1, q2 = ((0.05, -2), (0.05, -2)) if raw else ((0.07, 5), (0.03, -9))
    x1 = b.add_input("in/one", shape1, np.int8, scale=q1[0], zero_point=q1[1])
    if const_second:
        rng = np.random.default_rng(7)
        x2 = b.add_const("c", rng.integers(-128, 128, size=shape2, dtype=np.int8), scale=q2[0], zero_point=q2[1])
    else:
        x2 = b.add_input("in:two", shape2, np.int8, scale=q2[0], zero_point=q2[1])
    y = b.add_tensor("out", out_shape, np.int8, scale=0.05 if opcode != "MUL" else 0.01, zero_point=-2)
    b.add_op(opcode, [x1, x2], [y], None if raw else ir.ActivationOptions(activation=act))
    b.mark_output(y)
    return b.build()


def _unary_model(opcode: str, in_scale: float, in_zp: int, out_scale: float, out_zp: int, options=None) -> bytes:
    b = builder.ModelBuilder(description="codegen unary case")
    x = b.add_input("x", (1, 5, 5, 3), np.int8, scale=in_scale, zero_point=in_zp)
    y = b.add_tensor("y", (1, 5, 5, 3), np.int8, scale=out_scale, zero_point=out_zp)
    b.add_op(opcode, [x], [y], options)
    b.mark_output(y)
    return b.build()


def _mean_model(shape, axes, keep_dims: bool) -> bytes:
    b = builder.ModelBuilder(description="codegen mean case")
    x = b.add_input("x", shape, np.int8, scale=0.05, zero_point=7)
    out_shape = tuple(1 if i in axes else d for i, d in enumerate(shape)) if keep_dims else \
        tuple(d for i, d in enumerate(shape) if i not in axes)
    y = b.add_tensor("y", out_shape, np.int8, scale=0.03, zero_point=-5)
    b.add_op("MEAN", [x, b.add_const("axes", np.array(axes, np.int32))], [y], ir.ReducerOptions(keep_dims=keep_dims))
    b.mark_output(y)
    return b.build()


def _pad_concat_model() -> bytes:
    """PAD (zero point fill) and PADV2 (constant) feeding a CONCATENATION with a constant block."""
    b = builder.ModelBuilder(description="codegen pad/concat case")
    x = b.add_input("x", (1, 3, 4, 2), np.int8, scale=0.05, zero_point=-6)
    p1 = b.add_tensor("p1", (1, 5, 5, 2), np.int8, scale=0.05, zero_point=-6)
    b.add_op("PAD", [x, b.add_const("pads", np.array([[0, 0], [1, 1], [0, 1], [0, 0]], np.int32))], [p1])
    p2 = b.add_tensor("p2", (1, 5, 5, 3), np.int8, scale=0.05, zero_point=-6)
    cv = b.add_const("cv", np.array([9], np.int8), scale=0.05, zero_point=-6)
    b.add_op("PADV2", [p1, b.add_const("pads2", np.array([[0, 0], [0, 0], [0, 0], [1, 0]], np.int32)), cv], [p2])
    c = b.add_const("blk", np.arange(25, dtype=np.int8).reshape(1, 5, 5, 1), scale=0.05, zero_point=-6)
    y = b.add_tensor("y", (1, 5, 5, 6), np.int8, scale=0.05, zero_point=-6)
    b.add_op("CONCATENATION", [p2, c, p1], [y], ir.ConcatenationOptions(axis=3))
    b.mark_output(y)
    return b.build()


def _transpose_model(shape, perm) -> bytes:
    b = builder.ModelBuilder(description="codegen transpose case")
    x = b.add_input("x", shape, np.int8, scale=0.05, zero_point=2)
    y = b.add_tensor("y", tuple(shape[a] for a in perm), np.int8, scale=0.05, zero_point=2)
    b.add_op("TRANSPOSE", [x, b.add_const("perm", np.array(perm, np.int32))], [y])
    b.mark_output(y)
    return b.build()


def _slice_model(shape, begin, end, strides, expected_shape, opts=None) -> bytes:
    """One STRIDED_SLICE; ``expected_shape`` is hand-derived (numpy slicing of the same spec)."""
    b = builder.ModelBuilder(description="codegen strided slice case")
    x = b.add_input("x", shape, np.int8, scale=0.05, zero_point=3)
    ins = [x] + [b.add_const(n, np.array(v, np.int32)) for n, v in
                 (("begin", begin), ("end", end), ("strides", strides))]
    y = b.add_tensor("y", expected_shape, np.int8, scale=0.05, zero_point=3)
    b.add_op("STRIDED_SLICE", ins, [y], opts or ir.StridedSliceOptions())
    b.mark_output(y)
    return b.build()


def _const_slice_add_model() -> bytes:
    """STRIDED_SLICE of a constant (c[1:2, 6:0:-2] of a 3x8 table: a flash array) added to the input."""
    b = builder.ModelBuilder(description="codegen const slice case")
    x = b.add_input("x", (1, 3), np.int8, scale=0.05, zero_point=3)
    c = b.add_const("table", np.arange(-60, 36, 4, dtype=np.int8).reshape(3, 8), scale=0.05, zero_point=3)
    ins = [c] + [b.add_const(n, np.array(v, np.int32)) for n, v in
                 (("begin", [1, 6]), ("end", [2, 0]), ("strides", [1, -2]))]
    s = b.add_tensor("s", (1, 3), np.int8, scale=0.05, zero_point=3)
    b.add_op("STRIDED_SLICE", ins, [s], ir.StridedSliceOptions())
    y = b.add_tensor("y", (1, 3), np.int8, scale=0.07, zero_point=-1)
    b.add_op("ADD", [x, s], [y], ir.ActivationOptions(activation="NONE"))
    b.mark_output(y)
    return b.build()


# (shape, begin, end, strides, options, numpy spelling of the same slice)
SLICES = {
    "ss_4d_steps": ((1, 6, 7, 5), [0, 1, 0, 1], [1, 6, 7, 5], [1, 2, 3, 2], ir.StridedSliceOptions(),
                    np.s_[0:1, 1:6:2, 0:7:3, 1:5:2]),
    "ss_negative_masks": ((2, 5, 6, 3), [1, -1, 4, 0], [0, 0, 0, 3], [-1, -1, -2, 1],
                          ir.StridedSliceOptions(begin_mask=0b0001, end_mask=0b0110),
                          np.s_[:0:-1, -1::-1, 4::-2, 0:3]),
    "ss_shrink_reverse": ((3, 4, 5), [1, -1, 1], [2, -5, 4], [1, -1, 1],
                          ir.StridedSliceOptions(shrink_axis_mask=0b001), np.s_[1, -1:-5:-1, 1:4]),
    "ss_1d_clamped": ((9,), [20], [-20], [-3], ir.StridedSliceOptions(), np.s_[20:-20:-3]),
    "ss_2d_end_mask": ((4, 7), [-3, 2], [0, 0], [2, 1], ir.StridedSliceOptions(end_mask=0b11), np.s_[-3::2, 2:]),
}


def _reshape_chain_model() -> bytes:
    """FC -> RESHAPE (graph output) and FC -> RESHAPE -> FC: alias planning and the output copy."""
    b = builder.ModelBuilder(description="codegen reshape case")
    rng = np.random.default_rng(3)
    x = b.add_input("x", (1, 2, 6), np.int8, scale=0.05, zero_point=1)
    r = b.add_tensor("r", (1, 12), np.int8, scale=0.05, zero_point=1)
    b.add_op("RESHAPE", [x, b.add_const("s", np.array([1, 12], np.int32))], [r], ir.ReshapeOptions((1, 12)))
    wt = b.add_const("w", rng.integers(-127, 128, size=(8, 12), dtype=np.int8), scale=0.01)
    y = b.add_tensor("y", (1, 8), np.int8, scale=0.05, zero_point=0)
    b.add_op("FULLY_CONNECTED", [r, wt, -1], [y], ir.FullyConnectedOptions())
    z = b.add_tensor("z", (1, 2, 4), np.int8, scale=0.05, zero_point=0)
    b.add_op("RESHAPE", [y, b.add_const("s2", np.array([1, 2, 4], np.int32))], [z], ir.ReshapeOptions((1, 2, 4)))
    b.mark_output(z)
    b.mark_output(y)
    return b.build()


class _Net:
    """Builder helper for a multi-op chain: output scales track the accumulator spread so values stay
    inside the int8 range without saturating everything."""

    def __init__(self, rng):
        self.b = builder.ModelBuilder(description="codegen in-place chain")
        self.rng = rng
        self.n = 0

    def tensor(self, shape, scale, zp=0):
        self.n += 1
        return self.b.add_tensor(f"t{self.n}/act", shape, np.int8, scale=scale, zero_point=zp)

    def conv(self, x, x_scale, shape_in, oc, k, stride=1, dil=1, padding="SAME", depthwise=False, mult=1,
             dw_activation="NONE", out_zp=0):
        _, h, w, ic = shape_in
        eff = (k - 1) * dil + 1
        oh, ow = ((-(-h // stride), -(-w // stride)) if padding == "SAME"
                  else ((h - eff) // stride + 1, (w - eff) // stride + 1))
        oc = ic * mult if depthwise else oc
        wq = self.rng.integers(-127, 128, size=(1, k, k, oc) if depthwise else (oc, k, k, ic), dtype=np.int8)
        ws = self.rng.uniform(0.005, 0.02, size=oc)
        wt = self.b.add_const(f"w{self.n}", wq, scale=ws, zero_point=np.zeros(oc, np.int64),
                              axis=3 if depthwise else 0)
        bt = self.b.add_const(f"b{self.n}", self.rng.integers(-2000, 2000, size=oc).astype(np.int32),
                              scale=x_scale * ws, zero_point=np.zeros(oc, np.int64), axis=0)
        depth = k * k * (1 if depthwise else ic)
        out_scale = float(np.sqrt(depth) * 40 * 73 * x_scale * ws.mean() / 128)
        y = self.tensor((1, oh, ow, oc), out_scale, out_zp)
        if depthwise:
            self.b.add_op("DEPTHWISE_CONV_2D", [x, wt, bt], [y], ir.DepthwiseConv2DOptions(
                padding=padding, stride_h=stride, stride_w=stride, dilation_h=dil, dilation_w=dil,
                depth_multiplier=mult, activation=dw_activation))
        else:
            self.b.add_op("CONV_2D", [x, wt, bt], [y], ir.Conv2DOptions(
                padding=padding, stride_h=stride, stride_w=stride, dilation_h=dil, dilation_w=dil,
                activation="RELU"))
        return y, out_scale, (1, oh, ow, oc)


def _inplace_chain_model() -> bytes:
    """Every op's input dies at that op, so the planner runs them in place (overlap contracts):
    strided, dilated, VALID convs, depth multiplier, pools, a residual ADD, FC and softmax."""
    net = _Net(np.random.default_rng(42))
    b = net.b
    x = b.add_input("x", (1, 12, 12, 3), np.int8, scale=0.05, zero_point=-3)
    t, s, sh = net.conv(x, 0.05, (1, 12, 12, 3), 8, 3)
    t, s, sh = net.conv(t, s, sh, 0, 3, stride=2, depthwise=True)
    t, s, sh = net.conv(t, s, sh, 16, 1)
    p = net.tensor(sh, s, 0)
    b.add_op("MAX_POOL_2D", [t], [p], ir.Pool2DOptions(padding="SAME", filter_h=2, filter_w=2))
    d, ds, dsh = net.conv(p, s, sh, 0, 3, dil=2, depthwise=True, mult=2)
    d2, ds2, dsh2 = net.conv(d, ds, dsh, 16, 1)
    a = net.tensor(dsh2, max(ds2, s), 1)
    b.add_op("ADD", [d2, p], [a], ir.ActivationOptions(activation="RELU"))
    c, cs, csh = net.conv(a, max(ds2, s), dsh2, 8, 3, padding="VALID")
    q = net.tensor((1, 2, 2, 8), cs, 0)
    b.add_op("AVERAGE_POOL_2D", [c], [q], ir.Pool2DOptions(padding="VALID", stride_h=2, stride_w=2,
                                                         filter_h=2, filter_w=2))
    r = net.tensor((1, 32), cs, 0)
    b.add_op("RESHAPE", [q, b.add_const("shape", np.array([1, 32], np.int32))], [r], ir.ReshapeOptions((1, 32)))
    fw = b.add_const("fc_w", net.rng.integers(-127, 128, size=(10, 32), dtype=np.int8), scale=0.01)
    f = net.tensor((1, 10), float(np.sqrt(32) * 20 * 73 * cs * 0.01 / 128), 0)
    b.add_op("FULLY_CONNECTED", [r, fw, -1], [f], ir.FullyConnectedOptions())
    o = b.add_tensor("prob", (1, 10), np.int8, scale=1 / 256, zero_point=-128)
    b.add_op("SOFTMAX", [f], [o], ir.SoftmaxOptions(beta=1.0))
    b.mark_output(o)
    return b.build()


def test_inplace_chain_really_overlaps(tmp_path):
    from qsim.codegen import planner, tables
    from qsim.interpreter import prepare_graph
    g = load_bytes(_inplace_chain_model())
    pg = prepare_graph(g, "tflm")
    plan = planner.plan_memory(g, {}, {pos: tables.overlap_delta(p, g) for pos, p in enumerate(pg.ops)})
    overlapping = [(y, x) for (y, x) in plan.contracts
                   if not (plan.buffers[y].offset + plan.buffers[y].size <= plan.buffers[x].offset
                           or plan.buffers[x].offset + plan.buffers[x].size <= plan.buffers[y].offset)]
    assert len(overlapping) >= 3, plan.contracts  # the bit-exact case below then exercises them


def _cases():
    rng = np.random.default_rng(1234)
    cases = []
    for k, (pad, stride, dil, act, pc) in enumerate([("SAME", 1, 1, "NONE", True), ("VALID", 2, 1, "RELU", True),
                                                     ("SAME", 2, 2, "RELU6", False), ("VALID", 1, 2, "NONE", False),
                                                     ("SAME", 3, 1, "RELU_N1_TO_1", True)]):
        cases.append((f"conv{k}_{pad}_s{stride}_d{dil}_{act}", _conv_model(rng, False, pad, stride, dil, act, pc,
                                                                         bias=k != 3)))
    for k, (pad, stride, dil, mult) in enumerate([("SAME", 1, 1, 1), ("SAME", 2, 1, 8), ("VALID", 1, 2, 3),
                                                  ("SAME", 1, 1, 2)]):
        cases.append((f"dw{k}_{pad}_s{stride}_d{dil}_m{mult}",
                      _conv_model(rng, True, pad, stride, dil, "RELU6" if k % 2 else "NONE", k != 3, mult=mult)))
    for k, (batches, pc, act, knd) in enumerate([(1, False, "NONE", False), (3, True, "RELU", False),
                                                 (2, False, "NONE", True)]):
        cases.append((f"fc{k}_b{batches}", _fc_model(rng, batches, pc, act, knd)))
    for opcode in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        for pad, stride, fh, fw, act in [("SAME", 2, 3, 3, "NONE"), ("VALID", 1, 2, 3, "RELU")]:
            cases.append((f"{opcode.lower()}_{pad}_s{stride}_{fh}x{fw}", _pool_model(opcode, pad, stride, fh, fw, act)))
    for opcode in ("ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM"):
        cases.append((f"{opcode.lower()}_same", _binary_model(opcode, (1, 4, 4, 3), (1, 4, 4, 3), "NONE")))
        cases.append((f"{opcode.lower()}_bcast", _binary_model(opcode, (1, 4, 1, 3), (2, 1, 5, 1), "RELU")))
    cases.append(("add_const_bcast", _binary_model("ADD", (1, 3, 3, 4), (4,), "NONE", const_second=True)))
    cases.append(("reshape_chain", _reshape_chain_model()))
    for opcode, args in [("LOGISTIC", (0.06, -5, 1 / 256, -128, None)), ("TANH", (0.03, 4, 1 / 128, 0, None)),
                         ("RELU", (0.05, -10, 0.04, -128, None)), ("RELU6", (0.05, -10, 0.05, -10, None)),
                         ("LEAKY_RELU", (0.05, 3, 0.04, -20, ir.LeakyReluOptions(alpha=0.2))),
                         ("HARD_SWISH", (0.05, 3, 0.03, -40, None)), ("QUANTIZE", (0.05, 3, 0.11, -7, None))]:
        cases.append((f"lut_{opcode.lower()}", _unary_model(opcode, *args)))
    cases.append(("inplace_chain", _inplace_chain_model()))
    cases.append(("mean_hw_keep", _mean_model((1, 6, 5, 4), [1, 2], True)))
    cases.append(("mean_c", _mean_model((2, 3, 5, 7), [3], False)))
    cases.append(("mean_3d", _mean_model((3, 9, 4), [1], False)))
    cases.append(("pad_concat", _pad_concat_model()))
    cases.append(("transpose_4d", _transpose_model((1, 3, 4, 5), (0, 2, 3, 1))))
    cases.append(("transpose_3d", _transpose_model((2, 3, 4), (2, 0, 1))))
    for case, (shape, begin, end, strides, opts, np_slice) in SLICES.items():
        expected_shape = np.zeros(shape)[np_slice].shape
        cases.append((case, _slice_model(shape, begin, end, strides, expected_shape, opts)))
    cases.append(("ss_const_input", _const_slice_add_model()))
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_op_bit_exact_with_tflm(case, tmp_path):
    need_tool("gcc")
    blob = dict(CASES)[case]
    g = load_bytes(blob)
    generate(g, tmp_path, name="m", force=True)
    make(tmp_path, "host")
    samples = random_samples(g, 6, seed=zlib.crc32(case.encode()))
    got = run_host(tmp_path, "m", samples)
    assert_equal(got, tflm_outputs(blob, samples, len(g.outputs)), f"{case}: C vs TFLM")
    assert_equal(got, qsim_outputs(g, samples, "tflm"), f"{case}: C vs qsim")
    check_trace(tmp_path, "m", g, blob, samples[:2])


@pytest.mark.parametrize("case", sorted(SLICES))
def test_strided_slice_matches_numpy_slicing(case):
    """The slice each case emits, read back through codegen's gather parameters, is numpy's slicing of
    the same spec (hand-written above), so the cases really exercise negative steps, masks and shrink."""
    from qsim.codegen import tables
    from qsim.interpreter import prepare_graph
    shape, *_, np_slice = SLICES[case]
    g = load_bytes(dict(CASES)[case])
    (prepared,) = prepare_graph(g, "tflm").ops
    e = tables.emit_strided_slice(0, prepared, g, "m_op0")
    f = e.struct_fields
    x = np.arange(int(np.prod(shape)), dtype=np.int64)
    d, st = f["out_dims"], f["in_strides"]
    i = np.ix_(*[np.arange(n) for n in d])
    got = x[f["in_offset"] + sum(i[k] * st[k] for k in range(4))].reshape(-1)
    np.testing.assert_array_equal(got, x.reshape(shape)[np_slice].reshape(-1))


def test_strided_slice_axes_hand_derived():
    """x[::-1, 2] of a 3x4 input (begin_mask on axis 0, stride -1; shrink axis 1):
    axis 0 starts at 2 and steps -1 three times, axis 1 takes element 2 once."""
    from qsim.codegen import tables
    from qsim.interpreter import prepare_graph
    blob = _slice_model((3, 4), [0, 2], [0, 3], [-1, 1], (3,),
                        ir.StridedSliceOptions(begin_mask=1, end_mask=1, shrink_axis_mask=2))
    (prepared,) = prepare_graph(load_bytes(blob), "tflm").ops
    assert tables.slice_axes(prepared.params) == [(3, 2, -1, 3), (4, 2, 1, 1)]


def test_strided_slice_ellipsis_new_axis_single_build(tmp_path):
    """--rounding single prepares with qsim's "single" profile, whose STRIDED_SLICE follows LiteRT
    (ellipsis and new axes honoured; TFLM ignores them): x[..., None, 3:0:-1] of a 2x3x4 input,
    bit-exact with LiteRT BUILTIN_REF and qsim."""
    need_tool("gcc")
    li = require_module("ai_edge_litert.interpreter", "LiteRT reference")
    opts = ir.StridedSliceOptions(ellipsis_mask=0b001, new_axis_mask=0b010)
    expected_shape = np.zeros((2, 3, 4))[..., None, 3:0:-1].shape
    blob = _slice_model((2, 3, 4), [0, 0, 3], [0, 0, 0], [1, 1, -1], expected_shape, opts)
    g = load_bytes(blob)
    generate(g, tmp_path, name="m", rounding="single")
    make(tmp_path, "host")
    samples = random_samples(g, 4, seed=31)
    got = run_host(tmp_path, "m", samples)
    it = li.Interpreter(model_content=blob, experimental_op_resolver_type=li.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    want = []
    for (x,) in samples:
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        want.append(it.get_tensor(it.get_output_details()[0]["index"]).reshape(-1))
    assert_equal(got, np.stack(want).astype(np.int8), "ellipsis/new-axis slice: C vs LiteRT")
    assert_equal(got, qsim_outputs(g, samples, "single"), "ellipsis/new-axis slice: C vs qsim single")
    assert_equal(got, np.stack([x[..., None, 3:0:-1].reshape(-1) for (x,) in samples]), "vs numpy")


def test_strided_slice_empty_is_refused(tmp_path):
    """x[3:1] of a 1-D input is empty (TFLM accepts rank-1 empty outputs): a clear generation-time error."""
    from qsim.errors import QsimError
    g = load_bytes(_slice_model((5,), [3], [1], [1], (0,)))
    with pytest.raises(QsimError, match=r"STRIDED_SLICE: tensor '.*' has zero elements \(shape \[0\]\)"):
        generate(g, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["ss_negative_masks", "ss_1d_clamped", "ss_const_input", "add_bcast"])
def test_gather_and_broadcast_sanitizers_clean(case, tmp_path):
    """Reversed slices walk the input backwards from an offset, broadcasts re-read it with zero strides:
    an -fsanitize=address,undefined build (graph input in a global buffer with red zones) reports
    nothing and matches TFLM."""
    need_tool("gcc")
    blob = dict(CASES)[case]
    g = load_bytes(blob)
    generate(g, tmp_path, name="m")
    exe = build_sanitized(tmp_path, "m")
    samples = random_samples(g, 3, seed=zlib.crc32(case.encode()) + 1)
    assert_equal(run_host(tmp_path, "m", samples, exe=exe), tflm_outputs(blob, samples, len(g.outputs)),
                 f"{case}: ASan/UBSan build vs TFLM")
