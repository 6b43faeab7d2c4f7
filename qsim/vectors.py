"""Golden test vectors of one GEMM layer (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) for RTL
testbenches: ``qsim vectors`` / :meth:`qsim.Model.vectors`.

Every number comes from qsim's kernels and :mod:`qsim.fixedpoint` (nothing is re-derived here):
the accumulators from the kernel's ``accumulate`` on the layer's input of a real run, the
per-channel tables from the kernel's ``prepare`` (``params.requant``), the expected int8 outputs
from :meth:`qsim.kernels.RequantParams.requantize` under the chosen rounding.

Layout: one *row* per output pixel (CONV/DEPTHWISE: sample, oh, ow in NHWC order; FC: batch
row), one *column* per output channel (the per-channel axis of bias / multiplier / shift).
Written by :meth:`LayerVectors.write` as

* ``vectors.npz``  every array below (read back with :func:`load_vectors`);
* ``vectors.csv``  one line per output element (row-major, channel fastest), columns in
  ``manifest.json``;
* ``*.hex``        ``$readmemh`` files, one value per line, two's complement: per element
  ``acc.hex`` / ``acc_bias.hex`` (8 digits), ``bias.hex`` / ``multiplier.hex`` (8), ``shift.hex``
  (2, 6 significant bits), ``expected.hex`` (2), and ``params.hex``: zero point, act_min, act_max;
* ``tb_vectors.sv`` a self-checking SystemVerilog testbench reading the hex files through a
  valid/ready stream into qsim's ``requant_unit`` (replace the instance with your unit) and
  ``run_tb.sh`` (Verilator);
* ``manifest.json`` model, layer, rounding, shapes and a description of every column / file.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import fixedpoint as fp
from .errors import QsimError

GEMM_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1

# column name -> (hex digits, description); per element (rows x channels) unless noted
COLUMNS = {
    "acc": (8, "int32 accumulator sum((x - x_zp) * (w - w_zp)) before the bias"),
    "acc_bias": (8, "int32 accumulator plus bias (wraps like C int32), the requant input"),
    "bias": (8, "int32 per-channel bias (0 when the layer has none)"),
    "multiplier": (8, "Q31 multiplier M0 (int32), per channel"),
    "shift": (2, "shift, TFLite sign convention (> 0 = left), per channel; 6-bit two's complement in hex"),
    "expected": (2, "expected int8 output clamp(MBQM(acc + bias, M0, shift) + zp, act_min, act_max)"),
}
SCALARS = {"zero_point": "output zero point (int8)", "act_min": "activation minimum (int8)",
           "act_max": "activation maximum (int8)"}


@dataclass
class LayerVectors:
    """One GEMM layer's requantization vectors (int64 arrays; see the module doc for the layout).

    ``acc`` [rows, C] (without bias), ``bias`` / ``multiplier`` / ``shift`` [C], ``zero_point``,
    ``act_min``, ``act_max`` ints, ``expected`` [rows, C] int8 values under ``rounding``.
    ``gemm_a`` / ``gemm_b`` (optional): the GEMM operands, see :func:`layer_vectors`.
    """

    model: str
    layer: str  # the layer's output tensor name
    op_index: int
    opcode: str
    profile: str
    rounding: str
    acc: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    zero_point: int
    act_min: int
    act_max: int
    expected: np.ndarray
    output_shape: tuple = ()
    samples: int = 1
    gemm_a: np.ndarray | None = field(default=None, repr=False)
    gemm_b: np.ndarray | None = field(default=None, repr=False)
    input_zero_point: int = 0
    weight_zero_point: int = 0

    @property
    def rows(self) -> int:
        return self.acc.shape[0]

    @property
    def channels(self) -> int:
        return self.acc.shape[1]

    @property
    def acc_bias(self) -> np.ndarray:
        """acc + bias wrapped to int32 (:func:`qsim.fixedpoint.wrap_int32`), [rows, C]."""
        return fp.wrap_int32(self.acc + self.bias)

    def per_element(self) -> dict[str, np.ndarray]:
        """Every column broadcast to [rows, C] (int64)."""
        shape = self.acc.shape
        b = lambda a: np.broadcast_to(np.asarray(a, dtype=np.int64), shape)  # noqa: E731
        return {"acc": b(self.acc), "acc_bias": b(self.acc_bias), "bias": b(self.bias),
                "multiplier": b(self.multiplier), "shift": b(self.shift), "expected": b(self.expected)}

    def manifest(self) -> dict:
        cols = [{"name": k, "dtype": "int8" if k == "expected" else "int32", "shape": list(self.acc.shape),
                 "per_channel": k in ("bias", "multiplier", "shift"), "hex_file": f"{k}.hex", "hex_digits": d,
                 "description": desc} for k, (d, desc) in COLUMNS.items()]
        doc = {
            "format": "qsim-vectors", "version": FORMAT_VERSION, "model": self.model, "layer": self.layer,
            "op_index": self.op_index, "opcode": self.opcode, "profile": self.profile, "rounding": self.rounding,
            "rows": self.rows, "channels": self.channels, "samples": self.samples,
            "output_shape": list(self.output_shape),
            "layout": "row = output pixel (sample, oh, ow) or FC batch row; column = output channel; "
                      "element files are row-major, channel fastest",
            "zero_point": self.zero_point, "act_min": self.act_min, "act_max": self.act_max,
            "columns": cols,
            "scalars": [{"name": k, "description": d} for k, d in SCALARS.items()],
            "files": {"npz": "vectors.npz", "csv": "vectors.csv", "params_hex": "params.hex (zero_point, act_min, "
                      "act_max, one per line)", "testbench": "tb_vectors.sv", "run": "run_tb.sh"},
            "input_zero_point": self.input_zero_point, "weight_zero_point": self.weight_zero_point,
        }
        if self.gemm_a is not None:
            doc["gemm"] = {
                "a": {"file": "gemm_a.npy", "shape": list(self.gemm_a.shape),
                      "description": "input operand: (x - input_zero_point) per row (im2col window in kh, kw, c "
                                     "order for convolutions; padding 0)"},
                "b": {"file": "gemm_b.npy", "shape": list(self.gemm_b.shape),
                      "description": "weights (w - weight_zero_point): [K, C] for CONV_2D / FULLY_CONNECTED "
                                     "(acc = a @ b); [KH*KW, C] for DEPTHWISE_CONV_2D "
                                     "(acc[:, c] = sum_t a[:, t*C + c] * b[t, c])"}}
        return doc

    def write(self, out_dir: str | Path) -> Path:
        """Write every format (module doc) into ``out_dir`` (created); returns the manifest's path."""
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
            _write_all(self, out)
        except OSError as e:
            raise QsimError(f"cannot write vectors to {out}: {e.strerror or e}") from None
        return out / MANIFEST


def _write_all(v: LayerVectors, out: Path) -> None:
    arrays = {k: getattr(v, k) for k in ("acc", "bias", "multiplier", "shift", "expected")}
    arrays.update(acc_bias=v.acc_bias, zero_point=np.int64(v.zero_point), act_min=np.int64(v.act_min),
                  act_max=np.int64(v.act_max))
    if v.gemm_a is not None:
        arrays.update(gemm_a=v.gemm_a, gemm_b=v.gemm_b)
        np.save(out / "gemm_a.npy", v.gemm_a)
        np.save(out / "gemm_b.npy", v.gemm_b)
    np.savez(out / "vectors.npz", **arrays)
    cols = v.per_element()
    flat = {k: a.reshape(-1) for k, a in cols.items()}
    n = v.rows * v.channels
    with open(out / "vectors.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["row", "channel", *COLUMNS, *SCALARS])
        rows = np.repeat(np.arange(v.rows), v.channels)
        chans = np.tile(np.arange(v.channels), v.rows)
        data = np.stack([rows, chans, *(flat[k] for k in COLUMNS)], axis=1)
        scal = [v.zero_point, v.act_min, v.act_max]
        w.writerows(r + scal for r in data.tolist())
    for k, (digits, _) in COLUMNS.items():
        (out / f"{k}.hex").write_text(hex_lines(flat[k], digits), encoding="ascii")
    (out / "params.hex").write_text(hex_lines(np.array([v.zero_point, v.act_min, v.act_max]), 2), encoding="ascii")
    (out / "tb_vectors.sv").write_text(testbench_sv(n, v.channels, v.rounding), encoding="utf-8")
    run = out / "run_tb.sh"
    run.write_text(RUN_SH, encoding="utf-8")
    run.chmod(0o755)
    (out / MANIFEST).write_text(json.dumps(v.manifest(), indent=2) + "\n", encoding="utf-8")


def hex_lines(values: np.ndarray, digits: int) -> str:
    """``$readmemh`` text: one two's-complement value of ``digits`` hex digits per line."""
    mask = (1 << (4 * digits)) - 1
    vals = (np.asarray(values, dtype=np.int64) & mask).tolist()
    return "".join(f"{x:0{digits}x}\n" for x in vals)


def load_vectors(path: str | Path) -> LayerVectors:
    """Read a directory written by :meth:`LayerVectors.write` (or its ``vectors.npz``)."""
    p = Path(path)
    d = p if p.is_dir() else p.parent
    try:
        man = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
        z = np.load(d / "vectors.npz", allow_pickle=False)
        arr = {k: np.asarray(z[k], dtype=np.int64) for k in z.files}
    except (OSError, ValueError, KeyError) as e:
        raise QsimError(f"{d} is not a qsim vectors directory (manifest.json + vectors.npz from `qsim vectors`): "
                        f"{getattr(e, 'strerror', None) or e}") from None
    if man.get("format") != "qsim-vectors":
        raise QsimError(f"{d / MANIFEST} is not a qsim vectors manifest (format {man.get('format')!r}).")
    return LayerVectors(man["model"], man["layer"], man["op_index"], man["opcode"], man["profile"], man["rounding"],
                        arr["acc"], arr["bias"], arr["multiplier"], arr["shift"], int(arr["zero_point"]),
                        int(arr["act_min"]), int(arr["act_max"]), arr["expected"], tuple(man["output_shape"]),
                        man["samples"], arr.get("gemm_a"), arr.get("gemm_b"), man.get("input_zero_point", 0),
                        man.get("weight_zero_point", 0))


# ------------------------------------------------------------------ building them

def find_layer(graph, layer) -> "object":
    """The GEMM operator named by ``layer``: an op index (int or digit string) or the name of its
    output tensor.  QsimError (listing the GEMM layers) otherwise."""
    gemms = [o for o in graph.operators if o.opcode in GEMM_OPS]
    listing = ", ".join(f"{o.index} {o.opcode} '{graph.tensors[o.outputs[0]].name}'" for o in gemms[:12])
    listing += " ..." if len(gemms) > 12 else ""
    op = None
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool) or (
            isinstance(layer, str) and layer.strip().isdigit()):
        i = int(layer)
        if not 0 <= i < len(graph.operators):
            raise QsimError(f"layer {i} is out of range: the model has {len(graph.operators)} ops "
                            f"(GEMM layers: {listing or 'none'}).")
        op = graph.operators[i]
    elif isinstance(layer, str):
        found = [o for o in graph.operators if graph.tensors[o.outputs[0]].name == layer]
        if not found:
            raise QsimError(f"no layer whose output tensor is named '{layer}' (GEMM layers: {listing or 'none'}).")
        op = found[0]
    else:
        raise QsimError(f"a layer is named by its op index (int) or output tensor name (str), got "
                        f"{type(layer).__name__}.")
    if op.opcode not in GEMM_OPS:
        raise QsimError(f"layer {op.index} is a {op.opcode}; vectors are for {', '.join(GEMM_OPS)} layers "
                        f"(GEMM layers: {listing or 'none'}).")
    x = graph.tensors[op.inputs[0]] if op.inputs and op.inputs[0] >= 0 else None
    if x is not None and np.dtype(x.dtype) == np.int16:
        raise QsimError(f"layer {op.index} {op.opcode} is int16x8 (input '{x.name}' is int16); vectors cover int8 "
                        "layers only (int32 accumulators): int16x8 layers have int64 accumulators and another "
                        "requantization, not supported by qsim vectors yet.")
    if x is not None and np.dtype(x.dtype) == np.uint8:
        raise QsimError(f"layer {op.index} {op.opcode} is uint8 (input '{x.name}' is uint8, an old-converter "
                        "QUANTIZED_UINT8 model); vectors cover int8 layers only.")
    return op


def layer_vectors(prepared, op, values: dict, model: str, rounding: str | None = None,
                  gemm: bool = False) -> LayerVectors:
    """Vectors of GEMM ``op`` of a :class:`qsim.interpreter.PreparedGraph` given a run's tensor
    ``values`` ({index: array}, batched with a leading axis of samples).

    ``rounding``: None = the profile's own for this op; otherwise a name in
    :data:`qsim.fixedpoint.ROUNDING_MODES` (the multipliers/shifts are prepared by the profile,
    the expected outputs requantized with this rounding).  ``gemm``: also the GEMM operands."""
    from .kernels import RequantParams
    from .kernels import conv as kconv
    p = next(s for s in prepared.ops if s.op.index == op.index)
    rq = p.params.requant
    if rounding is not None:
        if rounding not in fp.ROUNDING_MODES:
            raise QsimError(f"unknown rounding {rounding!r}; choose one of: {', '.join(fp.ROUNDING_MODES)}.")
        fp.check_shift_range(rq.shift, rounding, "this layer's shift")
        rq = RequantParams(rq.bias, rq.multiplier, rq.shift, rq.output_zero_point, rq.act_min, rq.act_max, rounding)
    if rq.rounding not in fp.ROUNDING_MODES:
        raise QsimError(f"under profile '{prepared.profile.name}' {op.opcode} does not requantize with a Q31 "
                        f"multiplier (rounding '{rq.rounding}': a float rescale), so it has no integer requant "
                        "vectors; choose profile tflm or single, or pass rounding=double|single.")
    g = prepared.graph
    x = np.asarray(values[op.inputs[0]])
    out_t = g.tensors[op.outputs[0]]
    consts = [g.tensors[i].data if i >= 0 else None for i in op.inputs[1:]]
    acc = np.asarray(p.kernel.accumulate(p.params, [x, *consts]), dtype=np.int64)
    c = acc.shape[-1]
    acc = acc.reshape(-1, c)
    expected = rq.requantize(acc).astype(np.int64)
    samples = acc.size // max(1, out_t.size)
    w = g.tensors[op.inputs[1]]
    w_zp = int(w.quant.zero_point[0]) if op.opcode == "FULLY_CONNECTED" and not w.quant.per_channel else 0
    v = LayerVectors(model, out_t.name, op.index, op.opcode, prepared.profile.name, rq.rounding, acc,
                     np.asarray(rq.bias, np.int64).copy(), np.asarray(rq.multiplier, np.int64).copy(),
                     np.asarray(rq.shift, np.int64).copy(), int(rq.output_zero_point), int(rq.act_min),
                     int(rq.act_max), expected, tuple(out_t.shape), max(samples, 1),
                     input_zero_point=int(g.tensors[op.inputs[0]].quant.zp0), weight_zero_point=w_zp)
    if gemm:
        wd = np.asarray(w.data, dtype=np.int64) - w_zp
        if op.opcode == "FULLY_CONNECTED":
            v.gemm_a = x.reshape(-1, wd.shape[1]).astype(np.int64) - v.input_zero_point
            v.gemm_b = np.ascontiguousarray(wd.T)
        else:
            v.gemm_a = kconv.gemm_operands(p.params, x)
            kh, kw = p.params.kernel_h, p.params.kernel_w
            v.gemm_b = (wd.reshape(kh * kw, c) if op.opcode == "DEPTHWISE_CONV_2D"
                        else wd.transpose(1, 2, 3, 0).reshape(-1, c))
    return v


# ------------------------------------------------------------------ the SystemVerilog testbench

RUN_SH = """#!/bin/sh
# Build and run tb_vectors.sv with Verilator (5.x).  Pass your unit's sources (default: qsim's
# requant RTL, located with python -c "import qsim.rtl; print(*qsim.rtl.sources())").
set -e
cd "$(dirname "$0")"
SRCS="$*"
[ -n "$SRCS" ] || SRCS=$(python -c "import qsim.rtl; print(*qsim.rtl.sources())")
verilator --binary --timing -CFLAGS -fcoroutines -Wno-fatal -Wno-lint -Wno-style --top-module tb_vectors -Mdir obj_tb tb_vectors.sv $SRCS
./obj_tb/Vtb_vectors
"""


def testbench_sv(n: int, channels: int, rounding: str) -> str:
    """tb_vectors.sv: reads the hex files, streams ``n`` elements (one lane) into requant_unit with
    random valid gaps and ready stalls, compares each result with expected.hex and ends with
    ``QSIM VECTORS PASS <n>`` or ``QSIM VECTORS FAIL <mismatches>`` ($fatal)."""
    single = int(rounding == "single")
    return f"""// tb_vectors.sv -- generated by `qsim vectors`: self-checking replay of the hex files in this folder.
// One lane per beat through a valid/ready requantizer; replace the instance `dut` with your unit
// (keep the stream: a beat transfers when valid && ready on a rising clock edge).
// Rounding of these vectors: {rounding} (SINGLE_ROUNDING = {single}).
module tb_vectors;
  localparam int N = {n};  // elements: rows x {channels} channels, channel fastest
  logic [31:0] acc_m[N], bias_m[N], mult_m[N];
  logic [7:0]  shift_m[N], exp_m[N], params_m[3];
  logic clk = 0, rst = 1;
  logic s_valid = 0, s_ready, m_valid, m_ready = 0;
  logic [31:0] s_acc, s_bias, s_mult;
  logic [5:0]  s_shift;
  logic [7:0]  m_data;
  int sent = 0, got = 0, errors = 0, cycles = 0;

  always #5 clk = ~clk;

  requant_unit #(.LANES(1), .SINGLE_ROUNDING({single})) dut (
      .clk(clk), .rst(rst), .s_valid(s_valid), .s_ready(s_ready), .s_acc(s_acc), .s_bias(s_bias),
      .s_mult(s_mult), .s_shift(s_shift), .s_zp(params_m[0]), .s_act_min(params_m[1]),
      .s_act_max(params_m[2]), .m_valid(m_valid), .m_ready(m_ready), .m_data(m_data));

  initial begin
    $readmemh("acc.hex", acc_m);
    $readmemh("bias.hex", bias_m);
    $readmemh("multiplier.hex", mult_m);
    $readmemh("shift.hex", shift_m);
    $readmemh("expected.hex", exp_m);
    $readmemh("params.hex", params_m);
    repeat (3) @(posedge clk);
    rst <= 0;
  end

  // driver: present element `sent`, with a random idle cycle now and then; hold it until accepted
  always @(posedge clk) begin : drive
    int nxt;
    if (!rst) begin
      nxt = sent + ((s_valid && s_ready) ? 1 : 0);
      sent <= nxt;
      if (!s_valid || s_ready) begin
        if (nxt < N && ($urandom % 8 != 0)) begin
          s_valid <= 1;
          s_acc <= acc_m[nxt]; s_bias <= bias_m[nxt]; s_mult <= mult_m[nxt]; s_shift <= shift_m[nxt][5:0];
        end else s_valid <= 0;
      end
    end
  end

  // monitor: random back-pressure, compare in order
  always @(posedge clk) begin
    if (!rst) begin
      cycles <= cycles + 1;
      if (m_valid && m_ready) begin
        if (m_data !== exp_m[got]) begin
          errors <= errors + 1;
          if (errors < 10) $display("mismatch at element %0d (row %0d, channel %0d): got %0d expected %0d",
                                    got, got / {channels}, got % {channels}, $signed(m_data), $signed(exp_m[got]));
        end
        got <= got + 1;
      end
      m_ready <= ($urandom % 4 != 0);
      if (got == N) begin
        if (errors == 0) $display("QSIM VECTORS PASS %0d", N);
        else $display("QSIM VECTORS FAIL %0d", errors);
        if (errors != 0) $fatal(1, "mismatches");
        $finish;
      end
      if (cycles > 20 * N + 1000) $fatal(1, "timeout: %0d of %0d results", got, N);
    end
  end
endmodule
"""
