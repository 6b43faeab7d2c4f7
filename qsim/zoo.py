"""Deterministic synthetic int8 models, written with :mod:`qsim.builder`.

* :func:`mobilenet_v2_like` - a MobileNetV2-shaped network (conv stem,
  inverted residual blocks: expand 1x1 CONV_2D + RELU6, 3x3 DEPTHWISE_CONV_2D
  + RELU6, project 1x1 CONV_2D, ADD residuals; final 1x1 conv,
  AVERAGE_POOL_2D, RESHAPE, FULLY_CONNECTED, SOFTMAX).  224x224x3, alpha 1.0:
  ~300 M MACs, ~3.5 M int8 weights.
* :func:`small_cnn` - the demo's 8x8x1 digit classifier (two convs, FC,
  softmax), from given float weights (examples/make_demo_model.py trains them
  on scikit-learn's digits) or from seeded random ones.

How the int8 model is made (post-training quantization, done here in numpy):
weights are symmetric int8 per output channel (CONV_2D axis 0, DEPTHWISE axis
3) or per tensor (FULLY_CONNECTED); biases int32 with scale
in_scale * w_scale; every activation gets an asymmetric int8 scale/zero point
covering the range a float forward pass (with the *dequantized* weights) sees
on a calibration batch, always including 0.  Activation layouts are NHWC.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import fixedpoint as fp
from . import ir
from .builder import ModelBuilder

INT8_MIN, INT8_MAX = -128, 127


# ---------------------------------------------------------------------------- quantization helpers

def activation_quant(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero_point) covering [min(lo, 0), max(hi, 0)] (0.0 exactly representable)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = (hi - lo) / 255.0
    zp = int(np.clip(round(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX))
    return scale, zp


def quantize_per_channel(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights in [-127, 127] per slice along ``axis``: (q, scales float64)."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.max(np.abs(w), axis=other)
    scales = np.where(amax > 0, amax / 127.0, 1e-8).astype(np.float32).astype(np.float64)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scales.reshape(shape)), -127, 127).astype(np.int8)
    return q, scales


def quantize_per_tensor(w: np.ndarray) -> tuple[np.ndarray, float]:
    amax = float(np.max(np.abs(w))) or 1e-8
    scale = float(np.float32(amax / 127.0))
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale


# ---------------------------------------------------------------------------- float reference ops (NHWC)

def same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
    """TFLite SAME padding: (output size, leading pad)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return out, total // 2


def conv2d_float(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """SAME-padded conv: x [N,H,W,C], w [O,kh,kw,C] -> [N,OH,OW,O] (float32 via im2col)."""
    n, h, wd, c = x.shape
    o, kh, kw, _ = w.shape
    oh, ph = same_padding(h, kh, stride)
    ow, pw = same_padding(wd, kw, stride)
    xp = np.zeros((n, (oh - 1) * stride + kh, (ow - 1) * stride + kw, c), np.float32)
    hh, ww = min(h, xp.shape[1] - ph), min(wd, xp.shape[2] - pw)
    xp[:, ph:ph + hh, pw:pw + ww] = x[:, :hh, :ww]
    cols = [xp[:, i:i + (oh - 1) * stride + 1:stride, j:j + (ow - 1) * stride + 1:stride]
            for i in range(kh) for j in range(kw)]
    patches = np.stack(cols, axis=3).reshape(n * oh * ow, kh * kw * c)
    return (patches @ w.reshape(o, -1).T + b).reshape(n, oh, ow, o).astype(np.float32)


def depthwise_float(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """SAME-padded depthwise conv, multiplier 1: x [N,H,W,C], w [1,kh,kw,C]."""
    n, h, wd, c = x.shape
    _, kh, kw, _ = w.shape
    oh, ph = same_padding(h, kh, stride)
    ow, pw = same_padding(wd, kw, stride)
    xp = np.zeros((n, (oh - 1) * stride + kh, (ow - 1) * stride + kw, c), np.float32)
    hh, ww = min(h, xp.shape[1] - ph), min(wd, xp.shape[2] - pw)
    xp[:, ph:ph + hh, pw:pw + ww] = x[:, :hh, :ww]
    out = np.zeros((n, oh, ow, c), np.float32) + b
    for i in range(kh):
        for j in range(kw):
            out += xp[:, i:i + (oh - 1) * stride + 1:stride, j:j + (ow - 1) * stride + 1:stride] * w[0, i, j]
    return out


def _activate(y: np.ndarray, act: str) -> np.ndarray:
    if act == "RELU":
        return np.maximum(y, 0)
    if act == "RELU6":
        return np.clip(y, 0, 6)
    return y


# ---------------------------------------------------------------------------- network writer

@dataclass
class Act:
    """An activation: tensor index in the builder, its float calibration values, its quantization."""

    index: int
    value: np.ndarray  # float32 calibration batch, NHWC (or [N, units])
    scale: float
    zero_point: int


class QuantNet:
    """Build an int8 graph and its float calibration forward pass side by side."""

    def __init__(self, description: str, rng: np.random.Generator):
        self.b = ModelBuilder(description=description)
        self.rng = rng
        self.n = 0
        self.fixed_range: tuple[float, float] | None = None  # every computed activation: this range, not calibrated

    def _name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}_{self.n}"

    def _out(self, kind: str, value: np.ndarray, quant=None, name: str | None = None) -> Act:
        lo, hi = self.fixed_range if self.fixed_range is not None else (value.min(), value.max())
        scale, zp = quant if quant is not None else activation_quant(lo, hi)
        shape = (1,) + value.shape[1:]
        idx = self.b.add_tensor(name or self._name(kind), shape, np.int8, scale=scale, zero_point=zp)
        return Act(idx, value, scale, zp)

    def input(self, name: str, calib: np.ndarray, scale: float, zero_point: int) -> Act:
        idx = self.b.add_input(name, (1,) + calib.shape[1:], np.int8, scale=scale, zero_point=zero_point)
        # the calibration pass sees the input as the int8 model will: quantized then dequantized
        q = quantize_input(calib, scale, zero_point).astype(np.float64)
        return Act(idx, ((q - zero_point) * scale).astype(np.float32), scale, zero_point)

    def _bias(self, b: np.ndarray, x: Act, w_scales) -> int:
        bscale = x.scale * np.asarray(w_scales, np.float64)
        q = np.clip(np.round(b / bscale), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
        return self.b.add_const(self._name("bias"), q, scale=bscale, zero_point=np.zeros(bscale.size, np.int64))

    def conv(self, x: Act, w: np.ndarray, b: np.ndarray, stride: int = 1, act: str = "NONE",
             name: str | None = None) -> Act:
        """CONV_2D SAME, w float [O, kh, kw, I], per-channel int8."""
        wq, ws = quantize_per_channel(w, 0)
        wi = self.b.add_const(self._name("conv_w"), wq, scale=ws, zero_point=np.zeros(ws.size, np.int64), axis=0)
        bi = self._bias(b, x, ws)
        wd = wq.astype(np.float32) * ws.reshape(-1, 1, 1, 1).astype(np.float32)
        y = self._out("conv", _activate(conv2d_float(x.value, wd, b, stride), act), name=name)
        self.b.add_op("CONV_2D", [x.index, wi, bi], [y.index],
                      ir.Conv2DOptions("SAME", stride, stride, 1, 1, act))
        return y

    def depthwise(self, x: Act, w: np.ndarray, b: np.ndarray, stride: int = 1, act: str = "NONE") -> Act:
        """DEPTHWISE_CONV_2D SAME, multiplier 1, w float [1, kh, kw, C], per-channel int8 (axis 3)."""
        wq, ws = quantize_per_channel(w, 3)
        wi = self.b.add_const(self._name("dw_w"), wq, scale=ws, zero_point=np.zeros(ws.size, np.int64), axis=3)
        bi = self._bias(b, x, ws)
        wd = wq.astype(np.float32) * ws.reshape(1, 1, 1, -1).astype(np.float32)
        y = self._out("dwconv", _activate(depthwise_float(x.value, wd, b, stride), act))
        self.b.add_op("DEPTHWISE_CONV_2D", [x.index, wi, bi], [y.index],
                      ir.DepthwiseConv2DOptions("SAME", stride, stride, 1, 1, 1, act))
        return y

    def add(self, a: Act, c: Act) -> Act:
        y = self._out("add", a.value + c.value)
        self.b.add_op("ADD", [a.index, c.index], [y.index], ir.ActivationOptions("NONE"))
        return y

    def global_avg_pool(self, x: Act) -> Act:
        """AVERAGE_POOL_2D over the whole HxW (VALID); keeps the input's quantization (TFLite requires it)."""
        h, w = x.value.shape[1:3]
        y = self._out("avgpool", x.value.mean(axis=(1, 2), keepdims=True), quant=(x.scale, x.zero_point))
        self.b.add_op("AVERAGE_POOL_2D", [x.index], [y.index], ir.Pool2DOptions("VALID", 1, 1, h, w, "NONE"))
        return y

    def flatten(self, x: Act, name: str | None = None) -> Act:
        units = int(np.prod(x.value.shape[1:]))
        shape = self.b.add_const(self._name("shape"), np.array([1, units], np.int32))
        y = self._out("flatten", x.value.reshape(len(x.value), units), quant=(x.scale, x.zero_point), name=name)
        self.b.add_op("RESHAPE", [x.index, shape], [y.index], ir.ReshapeOptions((1, units)))
        return y

    def fully_connected(self, x: Act, w: np.ndarray, b: np.ndarray, act: str = "NONE",
                        name: str | None = None) -> Act:
        """FULLY_CONNECTED, w float [out, in], per-tensor int8."""
        wq, ws = quantize_per_tensor(w)
        wi = self.b.add_const(self._name("fc_w"), wq, scale=ws, zero_point=0)
        bi = self._bias(b, x, [ws])
        y = self._out("fc", _activate(x.value @ (wq.astype(np.float32) * np.float32(ws)).T + b, act), name=name)
        self.b.add_op("FULLY_CONNECTED", [x.index, wi, bi], [y.index], ir.FullyConnectedOptions(act))
        return y

    def softmax(self, x: Act, name: str | None = None) -> Act:
        e = np.exp(x.value - x.value.max(axis=-1, keepdims=True))
        y = self._out("softmax", e / e.sum(axis=-1, keepdims=True), quant=(1.0 / 256.0, -128), name=name)
        self.b.add_op("SOFTMAX", [x.index], [y.index], ir.SoftmaxOptions(1.0))
        return y

    def finish(self, y: Act) -> bytes:
        self.b.mark_output(y.index)
        return self.b.build()


# ---------------------------------------------------------------------------- random weights

def _he(rng, shape, fan_in: int, gain: float = 2.0) -> np.ndarray:
    """He-normal float32 weights: std sqrt(gain / fan_in)."""
    return rng.normal(0.0, np.sqrt(gain / fan_in), size=shape).astype(np.float32)


def _fold_batch_norm(rng, pre: np.ndarray, w: np.ndarray, b: np.ndarray, axis: int, act: str):
    """Fold a batch norm with random gamma/beta into (w, b), like a trained net's exported conv.

    ``pre``: the layer's float pre-activation on the calibration batch with
    (w, b).  Each output channel is normalised to mean beta, std gamma
    (gamma ~ U(0.4, 1.6); beta ~ N(0.5, 0.5) before a RELU6, N(0, 0.2)
    otherwise), which keeps activations in range as batch norm does.
    """
    c = pre.shape[-1]
    flat = pre.reshape(-1, c)
    mean, std = flat.mean(axis=0), flat.std(axis=0) + 1e-6
    gamma = rng.uniform(0.4, 1.6, size=c).astype(np.float32)
    beta = (rng.normal(0.5, 0.5, size=c) if act != "NONE" else rng.normal(0.0, 0.2, size=c)).astype(np.float32)
    k = gamma / std
    shape = [1] * w.ndim
    shape[axis] = -1
    return (w * k.reshape(shape)).astype(np.float32), ((b - mean) * k + beta).astype(np.float32)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


# MobileNetV2 inverted residual settings: (expansion t, output channels c, repeats n, first stride s)
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2_like(input_hw: int = 224, alpha: float = 1.0, num_classes: int = 1000, seed: int = 0,
                      calib_batch: int = 2) -> bytes:
    """An int8 MobileNetV2-shaped .tflite (bytes), deterministic for a given seed.

    Input [1, input_hw, input_hw, 3] int8 (scale 1/128, zero point 0: real
    values in [-1, 1)); output [1, num_classes] int8 softmax (scale 1/256,
    zero point -128).  Weights are seeded He-normal with a folded random batch
    norm per channel (plausible per-channel scales, activations kept in
    range); activation scales are calibrated on ``calib_batch`` seeded
    uniform inputs.
    """
    rng = np.random.default_rng(seed)
    net = QuantNet(f"qsim.zoo.mobilenet_v2_like(input_hw={input_hw}, alpha={alpha}, seed={seed})", rng)
    calib = rng.uniform(-1.0, 1.0, size=(calib_batch, input_hw, input_hw, 3)).astype(np.float32)
    x = net.input("input", calib, 1.0 / 128.0, 0)

    def conv(x, cout, k, stride, act):
        cin = x.value.shape[-1]
        w = _he(rng, (cout, k, k, cin), k * k * cin, 2.0 if act != "NONE" else 1.0)
        b = np.zeros(cout, np.float32)
        w, b = _fold_batch_norm(rng, conv2d_float(x.value, w, b, stride), w, b, 0, act)
        return net.conv(x, w, b, stride, act)

    def depthwise(x, stride):
        c = x.value.shape[-1]
        w = _he(rng, (1, 3, 3, c), 9)
        b = np.zeros(c, np.float32)
        w, b = _fold_batch_norm(rng, depthwise_float(x.value, w, b, stride), w, b, 3, "RELU6")
        return net.depthwise(x, w, b, stride, "RELU6")

    x = conv(x, _make_divisible(32 * alpha), 3, 2, "RELU6")
    for t, c, n, s in MOBILENET_V2_BLOCKS:
        cout = _make_divisible(c * alpha)
        for i in range(n):
            stride = s if i == 0 else 1
            cin = x.value.shape[-1]
            h = conv(x, cin * t, 1, 1, "RELU6") if t != 1 else x
            h = depthwise(h, stride)
            h = conv(h, cout, 1, 1, "NONE")
            x = net.add(x, h) if stride == 1 and cin == cout else h
    x = conv(x, _make_divisible(1280 * max(1.0, alpha)), 1, 1, "RELU6")
    x = net.flatten(net.global_avg_pool(x))
    units = x.value.shape[-1]
    w = _he(rng, (num_classes, units), units, 1.0)
    # spread the logits (std ~4 on the calibration batch) so the softmax is peaked, as in a trained net
    w *= np.float32(4.0 / max(float(np.std(x.value @ w.T)), 1e-6))
    logits = net.fully_connected(x, w, rng.normal(0.0, 0.1, size=num_classes).astype(np.float32))
    return net.finish(net.softmax(logits))


# ---------------------------------------------------------------------------- the demo CNN

SMALL_CNN_SHAPES = {"w1": (8, 3, 3, 1), "b1": (8,), "w2": (16, 3, 3, 8), "b2": (16,),
                    "w3": (10, 256), "b3": (10,)}
SMALL_CNN_INPUT = dict(scale=1.0 / 255.0, zero_point=-128)  # real pixel intensity in [0, 1]


def small_cnn_float(x: np.ndarray, weights: dict) -> np.ndarray:
    """Float forward of the demo CNN: x [N, 8, 8, 1] in [0, 1] -> logits [N, 10]."""
    h = np.maximum(conv2d_float(x, weights["w1"], weights["b1"], 1), 0)
    h = np.maximum(conv2d_float(h, weights["w2"], weights["b2"], 2), 0)
    return h.reshape(len(h), -1) @ weights["w3"].T + weights["b3"]


def small_cnn(weights: dict | None = None, calib: np.ndarray | None = None, seed: int = 0,
              fixed_range: tuple[float, float] | None = None) -> bytes:
    """The demo's int8 digit classifier (.tflite bytes).

    Graph: input [1, 8, 8, 1] int8 (scale 1/255, zero point -128) ->
    CONV_2D 3x3 (8, RELU) -> CONV_2D 3x3 stride 2 (16, RELU) -> RESHAPE
    [1, 256] -> FULLY_CONNECTED 10 -> SOFTMAX.  ``weights``: float arrays
    named as in SMALL_CNN_SHAPES (e.g. trained by examples/make_demo_model.py);
    None gives seeded random ones.  ``calib``: float inputs [N, 8, 8, 1] in
    [0, 1] for the activation ranges (default: 64 seeded random images).  ``fixed_range``: give
    every conv/FC activation this real range instead of the calibrated one (e.g. (0, 6): the
    "dummy ranges" mistake; the softmax keeps TFLite's fixed 1/256).
    """
    rng = np.random.default_rng(seed)
    if weights is None:
        weights = {k: (_he(rng, s, int(np.prod(s[1:]))) if k.startswith("w")
                       else rng.normal(0, 0.05, size=s).astype(np.float32)) for k, s in SMALL_CNN_SHAPES.items()}
    for k, s in SMALL_CNN_SHAPES.items():
        if tuple(np.shape(weights[k])) != s:
            raise ValueError(f"small_cnn weight {k} must have shape {s}, got {np.shape(weights[k])}")
    if calib is None:
        calib = rng.uniform(0, 1, size=(64, 8, 8, 1)).astype(np.float32)
    net = QuantNet("qsim demo: 8x8 digit classifier (int8)", rng)
    net.fixed_range = fixed_range
    x = net.input("image", calib.astype(np.float32), **SMALL_CNN_INPUT)
    h = net.conv(x, weights["w1"], weights["b1"], 1, "RELU", name="conv1")
    h = net.conv(h, weights["w2"], weights["b2"], 2, "RELU", name="conv2")
    logits = net.fully_connected(net.flatten(h, name="flatten"), weights["w3"], weights["b3"], name="logits")
    return net.finish(net.softmax(logits, name="probabilities"))


def small_cnn_float_model(weights: dict) -> bytes:
    """The demo CNN's float32 twin (.tflite bytes): the graph of :func:`small_cnn` with float weights
    and activations, RELU fused into the convs, and the same tensor names, so ``qsim compare`` matches
    the two by name.  Input: real pixel intensity in [0, 1], [1, 8, 8, 1] NHWC."""
    for k, s in SMALL_CNN_SHAPES.items():
        if tuple(np.shape(weights[k])) != s:
            raise ValueError(f"small_cnn weight {k} must have shape {s}, got {np.shape(weights[k])}")
    w = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    b = ModelBuilder(description="qsim demo: 8x8 digit classifier (float32 twin)")
    f32 = np.float32
    x = b.add_input("image", (1, 8, 8, 1), f32)
    h1 = b.add_tensor("conv1", (1, 8, 8, 8), f32)
    b.add_op("CONV_2D", [x, b.add_const("conv1_w", w["w1"]), b.add_const("conv1_b", w["b1"])], [h1],
             ir.Conv2DOptions("SAME", 1, 1, 1, 1, "RELU"))
    h2 = b.add_tensor("conv2", (1, 4, 4, 16), f32)
    b.add_op("CONV_2D", [h1, b.add_const("conv2_w", w["w2"]), b.add_const("conv2_b", w["b2"])], [h2],
             ir.Conv2DOptions("SAME", 2, 2, 1, 1, "RELU"))
    fl = b.add_tensor("flatten", (1, 256), f32)
    b.add_op("RESHAPE", [h2, b.add_const("flatten_shape", np.array([1, 256], np.int32))], [fl],
             ir.ReshapeOptions((1, 256)))
    lg = b.add_tensor("logits", (1, 10), f32)
    b.add_op("FULLY_CONNECTED", [fl, b.add_const("logits_w", w["w3"]), b.add_const("logits_b", w["b3"])], [lg],
             ir.FullyConnectedOptions("NONE"))
    pr = b.add_tensor("probabilities", (1, 10), f32)
    b.add_op("SOFTMAX", [lg], [pr], ir.SoftmaxOptions(1.0))
    b.mark_output(pr)
    return b.build()


def quantize_input(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Real values -> int8 exactly as TFLite's QUANTIZE would (:func:`qsim.fixedpoint.quantize_affine`)."""
    return fp.quantize_affine(x, scale, zero_point).astype(np.int8)


def count_macs(graph: ir.Graph) -> int:
    """Multiply-accumulates of one inference (:func:`qsim.report.op_macs` summed over the ops)."""
    from .report import op_macs
    return sum(op_macs(graph, op) for op in graph.operators)
