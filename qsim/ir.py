"""qsim's intermediate representation: plain dataclasses between the loader and everything else.

Layout conventions follow TFLite: activations NHWC; CONV_2D filters
[out_ch, kh, kw, in_ch]; DEPTHWISE_CONV_2D filters [1, kh, kw, in_ch*multiplier];
FULLY_CONNECTED weights [out_units, in_units].  Per-channel quantization names
its axis (``Quant.axis``, TFLite's quantized_dimension).  Real value =
scale * (q - zero_point).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# TFLite ActivationFunctionType / Padding enums, by name.
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
PADDINGS = {0: "SAME", 1: "VALID"}


@dataclass(frozen=True)
class Quant:
    """Affine quantization: per-tensor (len 1) or per-channel along ``axis``."""

    scale: np.ndarray  # float64 (values as stored, float32 in the file)
    zero_point: np.ndarray  # int64
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    @property
    def scale0(self) -> float:
        return float(self.scale[0])

    @property
    def zp0(self) -> int:
        return int(self.zero_point[0])


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype  # numpy dtype: int8, int16, int32, int64, uint8, float32, bool...
    quant: Quant | None = None
    data: np.ndarray | None = None  # constant contents (read-only view) or None
    is_variable: bool = False
    buffer: int = 0  # index into the model's buffers (0 = the empty sentinel)
    buffer_bytes: int = 0  # bytes its buffer holds; -1: the buffer points past the end of the file

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return math.prod(int(d) for d in self.shape)  # Python ints: no int64 wrap-around on corrupt shapes

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


# ---------------------------------------------------------------- typed op options

@dataclass(frozen=True)
class Conv2DOptions:
    padding: str = "SAME"
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    activation: str = "NONE"


@dataclass(frozen=True)
class DepthwiseConv2DOptions:
    padding: str = "SAME"
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    depth_multiplier: int = 1
    activation: str = "NONE"


@dataclass(frozen=True)
class FullyConnectedOptions:
    activation: str = "NONE"
    keep_num_dims: bool = False
    weights_format: int = 0  # 0 = DEFAULT; shuffled formats are unsupported


@dataclass(frozen=True)
class Pool2DOptions:
    padding: str = "SAME"
    stride_h: int = 1
    stride_w: int = 1
    filter_h: int = 1
    filter_w: int = 1
    activation: str = "NONE"


@dataclass(frozen=True)
class ActivationOptions:
    """ADD / SUB / MUL / DIV: a fused activation (+ ADD/SUB's pot_scale_int16, schema default true)."""

    activation: str = "NONE"
    pot_scale_int16: bool = True  # ADD/SUB int16: LiteRT's power-of-two kernel when every scale is 2**k


@dataclass(frozen=True)
class ConcatenationOptions:
    axis: int = 0
    activation: str = "NONE"


@dataclass(frozen=True)
class ReshapeOptions:
    new_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SoftmaxOptions:
    beta: float = 1.0


@dataclass(frozen=True)
class ReducerOptions:
    keep_dims: bool = False


@dataclass(frozen=True)
class SqueezeOptions:
    squeeze_dims: tuple[int, ...] = ()


@dataclass(frozen=True)
class StridedSliceOptions:
    begin_mask: int = 0
    end_mask: int = 0
    ellipsis_mask: int = 0
    new_axis_mask: int = 0
    shrink_axis_mask: int = 0
    offset: bool = False


@dataclass(frozen=True)
class TransposeConvOptions:
    """TRANSPOSE_CONV: padding of the forward conv it transposes, strides, fused activation."""

    padding: str = "SAME"
    stride_h: int = 1
    stride_w: int = 1
    activation: str = "NONE"


@dataclass(frozen=True)
class LeakyReluOptions:
    alpha: float = 0.0


@dataclass(frozen=True)
class SequenceLSTMOptions:
    """UNIDIRECTIONAL_SEQUENCE_LSTM: cell-gate activation, clips (0 = none), layout.

    ``time_major``: input [time, batch, features] (else [batch, time, features]).
    """

    activation: str = "TANH"
    cell_clip: float = 0.0
    proj_clip: float = 0.0
    time_major: bool = False
    asymmetric_quantize_inputs: bool = False


@dataclass(frozen=True)
class SVDFOptions:
    """SVDF: rank (filters per output unit), fused activation, hybrid-only asymmetric flag."""

    rank: int = 1
    activation: str = "NONE"
    asymmetric_quantize_inputs: bool = False


@dataclass
class Operator:
    index: int
    opcode: str  # TFLite builtin name, e.g. "CONV_2D"; custom ops: "CUSTOM:<name>"
    inputs: tuple[int, ...]  # tensor indices, -1 for an omitted optional input
    outputs: tuple[int, ...]
    options: Any = None  # one of the *Options dataclasses above, or None
    version: int = 1
    opcode_index: int = 0  # index into the model's operator codes, as stored
    intermediates: tuple[int, ...] = ()  # tensor indices of the op's intermediates (LSTM scales), as stored


@dataclass
class Graph:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    name: str = ""
    description: str = ""
    source: str = ""  # file path the graph came from
    metadata: dict = field(default_factory=dict)
    n_buffers: int | None = None  # buffers in the file (None: not loaded from a file)
    n_opcodes: int | None = None  # operator codes in the file

    def tensor(self, i: int) -> Tensor:
        return self.tensors[i]

    def op_inputs(self, op: Operator) -> list[Tensor | None]:
        return [self.tensors[i] if i >= 0 else None for i in op.inputs]

    def op_outputs(self, op: Operator) -> list[Tensor]:
        return [self.tensors[i] for i in op.outputs]
