"""Three mistakes people make with int8 models, and what each one costs, measured.

Runs the shipped demo digit classifier (examples/models/demo_cnn_int8.tflite) on its
360 held-out digits (examples/models/demo_testset.npz) four ways:

  right        int8 inputs quantized with the model's own scale/zero point, qsim's
               TFLM profile: bit-exact with TFLite Micro.
  no-quantize  the real pixel values (0..1) fed straight into the int8 input, the
               step everybody forgets: q = round(x / scale) + zero_point.
  shift-by-8   every CONV_2D / FULLY_CONNECTED requantization replaced by a hand-picked
               ">> 8" instead of its real per-channel multipliers M0 * 2^shift (qsim's
               public requant variant "shift=8", ``Model.prepared(requant=...)``; see
               examples/requant_shift8.py for what compare says about it).  On this
               small model accuracy barely moves; every tensor after the first conv is
               nonetheless different from what TFLite computes, which is how a model
               that "works" here collapses on the next one.
  wrong-round  single rounding (TFLITE_SINGLE_ROUNDING) where TFLM rounds twice:
               accuracy barely moves, yet the tensors are no longer TFLM's.

For each it prints accuracy and, against the TFLM reference on the first images,
how many op-output elements differ and the first op that diverges.  A reference
comparison cannot see the no-quantize mistake (TFLM gets the same wrong input):
only the accuracy and `qsim run --float-input` / `qsim inspect`'s guidance do.

    python examples/common_mistakes.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import qsim
from qsim.reference import make_runner, op_output_tensors

HERE = Path(__file__).resolve().parent
MODEL = HERE / "models" / "demo_cnn_int8.tflite"
TESTSET = HERE / "models" / "demo_testset.npz"


def accuracy(prepared, images) -> float:
    out = prepared.graph.outputs[0]
    preds = [int(np.argmax(prepared.run([img[None]], keep_all=False)[out])) for img in images]
    return float(np.mean(np.array(preds) == labels))


def divergence(prepared, images, runner) -> tuple[int, str]:
    """Elements differing from TFLM over all op outputs, and the first op that differs."""
    g = prepared.graph
    targets = op_output_tensors(g)
    total, first = 0, "-"
    for img in images:
        ours = prepared.run([img[None]], keep_all=True)
        theirs = runner.run([img[None]], [t for _, t in targets])
        for op, t in targets:
            n = int(np.sum(ours[t].astype(np.int64) != np.asarray(theirs[t]).reshape(ours[t].shape)))
            total += n
            if n and first == "-":
                first = f"op #{op.index} {op.opcode} ('{g.tensors[t].name}')"
    return total, first


model = qsim.load(MODEL)
g = model.graph
data = np.load(TESTSET)
images, labels = data["x"], data["y"].astype(np.int64)
x_t = g.tensors[g.inputs[0]]
scale, zp = x_t.quant.scale0, x_t.quant.zp0
real_pixels = scale * (images.astype(np.float64) - zp)  # what the user actually has: values in [0, 1]

right = model.prepared("tflm")

# Mistake 2: a ">> 8" requantizer (M = 2^-8) in every GEMM layer instead of its real multipliers.
shift8 = model.prepared("tflm", requant="shift=8")
rq = right.ops[0].params.requant
real_m = rq.multiplier / 2.0 ** 31 * 2.0 ** rq.shift.astype(np.float64)

cases = [
    ("right", right, images),
    ("no-quantize", right, np.round(real_pixels).astype(np.int8)),
    ("shift-by-8", shift8, images),
    ("wrong-round", model.prepared("single"), images),
]

tflm = make_runner("tflm", MODEL.read_bytes(), g)
print(f"model: {MODEL.name}; {len(images)} held-out digits; input q = round(x / {scale:.6g}) + ({zp})")
print(f"first CONV_2D's real multipliers span {real_m.min():.3g}..{real_m.max():.3g}; '>> 8' means {2**-8:.3g}\n")
print(f"{'case':<12} {'accuracy':>8}  {'elements != TFLM (20 imgs)':>27}  first divergent op")
for name, prep, imgs in cases:
    acc = accuracy(prep, imgs)
    n, first = divergence(prep, imgs[:20], tflm)
    print(f"{name:<12} {acc:8.2%}  {n:>27}  {first}")
