// requant_unit.sv -- LANES-wide, TFLite-exact int32 -> int8 requantization unit
// (OUT16 = 1: int64 -> int16, the int16x8 scheme; OUT_UNSIGNED = 1: int32 -> uint8, the old
// converter's uint8 layers, zp/act_min/act_max/m_data unsigned; see requant_lane.sv).
//
// Per lane and per beat:
//   out = clamp(MultiplyByQuantizedMultiplier(acc + bias, M0, shift) + zp, act_min, act_max)
// with TFLite's default double rounding (SINGLE_ROUNDING = 0) or the
// TFLITE_SINGLE_ROUNDING variant (SINGLE_ROUNDING = 1); the arithmetic is in
// requant_lane.sv and its golden model is qsim.fixedpoint.requantize.
//
// Ports (lane i occupies bits [i*W +: W] of each packed bus):
//   s_acc, s_bias, s_mult : int32 accumulator, per-channel bias, Q31 M0
//   s_shift               : signed 6-bit, TFLite convention (> 0 = left shift);
//                           valid range [-31, 31] double, [-31, 30] single
//   s_zp, s_act_min/max   : int8 output zero point and activation range,
//                           shared by the lanes, carried along with the beat
//                           (OUT_UNSIGNED: uint8, 0..255)
//   m_data                : int8 results (OUT_UNSIGNED: uint8)
//
// Streaming valid/ready (AXI-stream rules): a beat transfers on a rising edge
// where valid and ready are both high.  Every stage holds at most one beat and
// loads when it is empty or its successor loads (bubbles collapse), so
// s_ready = m_ready || any stage empty.  Without back-pressure the unit
// accepts and delivers one beat (LANES results) per cycle.
// Reset is synchronous, active high, and clears every valid bit: no beat
// accepted before reset is ever delivered after it.
//
// LATENCY is the number of register stages: a beat accepted at rising edge t
// is presented on m_data/m_valid right after edge t + LATENCY - 1, i.e. can
// transfer at edge t + LATENCY.  qsim.rtl_info reads this line.
module requant_unit #(
    parameter int LANES = 4,
    parameter bit SINGLE_ROUNDING = 1'b0,
    parameter bit OUT16 = 1'b0,           // 1: int16x8 mode (64-bit acc/bias, int16 out; requant_lane.sv)
    parameter bit OUT_UNSIGNED = 1'b0,    // 1: unsigned zp/act range/out (OUT16 = 0: uint8, 0..255)
    localparam int AW = OUT16 ? 64 : 32,  // accumulator / bias width per lane
    localparam int OW = OUT16 ? 16 : 8    // output / zero point / activation range width
) (
    input  logic                 clk,
    input  logic                 rst,
    // input stream
    input  logic                 s_valid,
    output logic                 s_ready,
    input  logic [LANES*AW-1:0]  s_acc,
    input  logic [LANES*AW-1:0]  s_bias,
    input  logic [LANES*32-1:0]  s_mult,
    input  logic [LANES*6-1:0]   s_shift,
    input  logic [OW-1:0]        s_zp,
    input  logic [OW-1:0]        s_act_min,
    input  logic [OW-1:0]        s_act_max,
    // output stream
    output logic                 m_valid,
    input  logic                 m_ready,
    output logic [LANES*OW-1:0]  m_data
);
  localparam int LATENCY = 5;

  // ---- handshake: vld[k] = stage k+1 holds a beat; en[k] = stage k+1 loads
  logic [LATENCY-1:0] vld, en;
  for (genvar k = 0; k < LATENCY; k++) begin : g_en
    assign en[k] = m_ready || !(&vld[LATENCY-1:k]);
  end

  always_ff @(posedge clk) begin
    if (rst) begin
      vld <= '0;
    end else begin
      if (en[0]) vld[0] <= s_valid;
      for (int k = 1; k < LATENCY; k++) begin
        if (en[k]) vld[k] <= vld[k-1];
      end
    end
  end

  assign s_ready = en[0];
  assign m_valid = vld[LATENCY-1];

  // ---- per-beat sideband {zp, act_min, act_max} travelling with stages 1..4
  // (a flat vector: side[k*24 +: 24] belongs to stage k+1)
  localparam int SW = 3 * OW;
  logic [(LATENCY-1)*SW-1:0] side;
  always_ff @(posedge clk) begin
    if (en[0]) side[0 +: SW] <= {s_zp, s_act_min, s_act_max};
    for (int k = 1; k < LATENCY - 1; k++) begin
      if (en[k]) side[k*SW +: SW] <= side[(k-1)*SW +: SW];
    end
  end
  logic [SW-1:0] side_s4;  // aligned with the lanes' stage-4 registers
  assign side_s4 = side[(LATENCY-2)*SW +: SW];

  // ---- lanes
  for (genvar i = 0; i < LANES; i++) begin : g_lane
    requant_lane #(.SINGLE_ROUNDING(SINGLE_ROUNDING), .OUT16(OUT16), .OUT_UNSIGNED(OUT_UNSIGNED)) u_lane (
        .clk    (clk),
        .en     (en),
        .acc    (s_acc[i*AW +: AW]),
        .bias   (s_bias[i*AW +: AW]),
        .mult   (s_mult[i*32 +: 32]),
        .shift  (s_shift[i*6 +: 6]),
        .zp     (side_s4[2*OW +: OW]),
        .act_min(side_s4[OW +: OW]),
        .act_max(side_s4[0 +: OW]),
        .out    (m_data[i*OW +: OW])
    );
  end
endmodule
