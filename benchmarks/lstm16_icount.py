"""Benchmark: Cortex-M4 instructions of one invocation of a builder LSTM in both integer forms.

A one-op UNIDIRECTIONAL_SEQUENCE_LSTM of trained_lstm_int8's shape (28 steps, 28 inputs, 20 cells,
batch 1; ``qsim.builder.lstm_int8_model``), generated in TFLite Micro's 8x8->16 form (``qk_lstm``) and
16x8 form (``qk_lstm_s16``: int16 activations, int64 FC accumulators), measured as
benchmarks/cortexm_icount.py measures (QEMU ``-icount shift=0``, SysTick, 40-instruction resolution,
from the reset state; flash / RAM the model adds to the image).

    python benchmarks/lstm16_icount.py        # ~35 s
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cortexm_icount import measure, tools_missing  # noqa: E402

from qsim.builder import lstm_int8_model  # noqa: E402

DIMS = dict(n_time=28, n_input=28, n_cell=20)
FORMS = {"8x8->16": {}, "16x8": dict(activations=np.int16, input_zp=0, hidden_zp=0, input_scale=2 ** -12,
                                      hidden_scale=2 ** -14)}


def main() -> int:
    missing = tools_missing()
    if missing:
        print(f"missing tools: {', '.join(missing)}")
        return 1
    print("form      instructions     MACs   flash     RAM  (Cortex-M4, one invocation)")
    for label, kw in FORMS.items():
        with tempfile.TemporaryDirectory() as d:
            model = Path(d) / "lstm.tflite"
            model.write_bytes(lstm_int8_model(**DIMS, **kw))
            r = measure(model, Path(d) / "build")
            print(f"{label:<9} {r['instructions']:>12} {r['macs']:>8} {r['flash']:>7} {r['ram']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
