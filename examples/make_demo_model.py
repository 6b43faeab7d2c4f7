"""Train the demo digit classifier in numpy and write it as an int8 .tflite.

Writes (committed, so the demo needs neither TensorFlow nor scikit-learn):
  examples/models/demo_cnn_int8.tflite   the int8 model (qsim.zoo.small_cnn)
  examples/models/demo_cnn_float.tflite  its float32 twin, the same trained weights
                                         (qsim.zoo.small_cnn_float_model), for `qsim compare`
  examples/models/demo_input.npy         one int8 test image, shape [1, 8, 8, 1]
  examples/models/demo_testset.npz       the held-out int8 images (x) and labels (y)

Data: scikit-learn's bundled 8x8 handwritten digits (1797 images, 16 grey
levels); pixels / 16 -> real [0, 1] -> int8 with scale 1/255, zero point -128.
Model: CONV_2D 3x3 (8, RELU) -> CONV_2D 3x3 stride 2 (16, RELU) -> FC 10 ->
SOFTMAX, trained with Adam on cross-entropy for a few seconds, then quantized
post-training by qsim.zoo (per-channel int8 weights, calibrated activations).

Regenerate: pip install scikit-learn && python examples/make_demo_model.py
The float training's summation order depends on the BLAS thread count, so the
script pins one BLAS thread: the same machine type then writes the same bytes.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS: reproducible training
os.environ.setdefault("OMP_NUM_THREADS", "1")
from pathlib import Path

import numpy as np

from qsim import zoo
from qsim.interpreter import prepare_graph
from qsim.loader import load_bytes

OUT = Path(__file__).resolve().parent / "models"
SEED = 0


# ------------------------------------------------------------------ im2col conv with gradients

def _gather_index(size: int, k: int, stride: int) -> tuple[np.ndarray, int]:
    out, pad = zoo.same_padding(size, k, stride)
    return (np.arange(out)[:, None] * stride + np.arange(k)[None, :]), pad


class Conv:
    """SAME conv layer (NHWC, weights [O, k, k, C]) with forward/backward through im2col."""

    def __init__(self, in_hw: int, k: int, stride: int):
        self.k, self.stride = k, stride
        self.idx, self.pad = _gather_index(in_hw, k, stride)
        self.out_hw = self.idx.shape[0]
        self.padded = (self.out_hw - 1) * stride + k

    def forward(self, x, w, b):
        n, h, _, c = x.shape
        xp = np.zeros((n, self.padded, self.padded, c), np.float32)
        xp[:, self.pad:self.pad + h, self.pad:self.pad + h] = x[:, :self.padded - self.pad, :self.padded - self.pad]
        i = self.idx
        patches = xp[:, i[:, None, :, None], i[None, :, None, :], :]  # N, OH, OW, k, k, C
        self.cache = (x.shape, patches)
        p2 = patches.reshape(-1, self.k * self.k * c)
        return (p2 @ w.reshape(len(w), -1).T + b).reshape(n, self.out_hw, self.out_hw, len(w))

    def backward(self, dy, w):
        (n, h, _, c), patches = self.cache
        dy2 = dy.reshape(-1, dy.shape[-1])
        p2 = patches.reshape(len(dy2), -1)
        dw = (dy2.T @ p2).reshape(w.shape)
        db = dy2.sum(axis=0)
        dp = (dy2 @ w.reshape(len(w), -1)).reshape(patches.shape)
        dxp = np.zeros((n, self.padded, self.padded, c), np.float32)
        span = (self.out_hw - 1) * self.stride + 1
        for a in range(self.k):  # col2im: scatter-add each kernel tap's patch gradient
            for b in range(self.k):
                dxp[:, a:a + span:self.stride, b:b + span:self.stride] += dp[:, :, :, a, b]
        dx = dxp[:, self.pad:self.pad + h, self.pad:self.pad + h]
        return dx, dw, db


def train(x, y, epochs: int = 20, batch: int = 64, lr: float = 0.01):
    """Adam on softmax cross-entropy; returns float weights named as in zoo.SMALL_CNN_SHAPES."""
    rng = np.random.default_rng(SEED)
    p = {k: (rng.normal(0, np.sqrt(2.0 / np.prod(s[1:])), s) if k.startswith("w") else np.zeros(s))
         .astype(np.float32) for k, s in zoo.SMALL_CNN_SHAPES.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    c1, c2 = Conv(8, 3, 1), Conv(8, 3, 2)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for s in range(0, len(x), batch):
            xb, yb = x[order[s:s + batch]], y[order[s:s + batch]]
            z1 = c1.forward(xb, p["w1"], p["b1"])
            h1 = np.maximum(z1, 0)
            z2 = c2.forward(h1, p["w2"], p["b2"])
            h2 = np.maximum(z2, 0)
            flat = h2.reshape(len(xb), -1)
            logits = flat @ p["w3"].T + p["b3"]
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            prob = e / e.sum(axis=1, keepdims=True)
            dlog = prob
            dlog[np.arange(len(yb)), yb] -= 1
            dlog /= len(yb)
            g = {"w3": dlog.T @ flat, "b3": dlog.sum(axis=0)}
            dh2 = (dlog @ p["w3"]).reshape(h2.shape) * (z2 > 0)
            dh1, g["w2"], g["b2"] = c2.backward(dh2, p["w2"])
            _, g["w1"], g["b1"] = c1.backward(dh1 * (z1 > 0), p["w1"])
            step += 1
            for k in p:
                m[k] = 0.9 * m[k] + 0.1 * g[k]
                v2[k] = 0.999 * v2[k] + 0.001 * g[k] ** 2
                p[k] -= lr * (m[k] / (1 - 0.9 ** step)) / (np.sqrt(v2[k] / (1 - 0.999 ** step)) + 1e-8)
    return p


def main() -> int:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("scikit-learn is needed to regenerate the demo model: pip install scikit-learn", file=sys.stderr)
        return 2
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    test, tr = order[:360], order[360:]
    weights = train(x[tr], y[tr])
    float_acc = float(np.mean(np.argmax(zoo.small_cnn_float(x[test], weights), axis=1) == y[test]))
    blob = zoo.small_cnn(weights, calib=x[tr][:512], seed=SEED)
    g = load_bytes(blob)
    xq = zoo.quantize_input(x[test], **zoo.SMALL_CNN_INPUT)
    prepared = prepare_graph(g, "tflm")
    preds = [int(np.argmax(prepared.run([xi[None]], keep_all=False)[g.outputs[0]])) for xi in xq]
    int8_acc = float(np.mean(np.array(preds) == y[test]))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "demo_cnn_int8.tflite").write_bytes(blob)
    (OUT / "demo_cnn_float.tflite").write_bytes(zoo.small_cnn_float_model(weights))
    np.save(OUT / "demo_input.npy", xq[:1])
    np.savez_compressed(OUT / "demo_testset.npz", x=xq, y=y[test].astype(np.int8))
    print(f"float accuracy {float_acc:.4f}, int8 accuracy (qsim, tflm profile) {int8_acc:.4f} on "
          f"{len(test)} held-out digits; model {len(blob)} bytes; demo_input.npy label {int(y[test][0])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
