// my_requant.sv -- an example "user" requantization unit for `qsim hdl-test`, written
// independently of qsim's rtl/requant_unit.sv: other port names, 2 lanes, active-low reset,
// a 3-stage pipeline that stalls as a whole (no bubble collapsing), another formulation of
// the rounding.  Per lane (TFLite's default double rounding):
//   out = clamp(MultiplyByQuantizedMultiplier(acc + bias, m0, shift) + zp, lo, hi)
// Latency 3: a beat accepted at rising edge t can transfer out at edge t + 3.
module my_requant (
    input  logic        clk_i,
    input  logic        rst_ni,
    input  logic        in_valid,
    output logic        in_ready,
    input  logic [63:0] in_acc,    // lane i at [i*32 +: 32]
    input  logic [63:0] in_bias,
    input  logic [63:0] in_m0,     // Q31 multiplier
    input  logic [11:0] in_shift,  // lane i at [i*6 +: 6], > 0 = left
    input  logic [7:0]  cfg_zp,
    input  logic [7:0]  cfg_min,
    input  logic [7:0]  cfg_max,
    output logic        out_valid,
    input  logic        out_ready,
    output logic [15:0] out_q      // lane i at [i*8 +: 8]
);
  localparam int L = 2;
  logic [2:0] vld;                 // stage 1..3 full
  logic advance;                   // the whole pipeline moves
  assign advance   = !vld[2] || out_ready;
  assign in_ready  = advance;
  assign out_valid = vld[2];

  always_ff @(posedge clk_i) begin
    if (!rst_ni) vld <= '0;
    else if (advance) vld <= {vld[1:0], in_valid};
  end

  // per-beat sideband through stages 1 and 2
  logic signed [7:0] zp1, lo1, hi1, zp2, lo2, hi2;
  always_ff @(posedge clk_i) begin
    if (advance) begin
      {zp1, lo1, hi1} <= {cfg_zp, cfg_min, cfg_max};
      {zp2, lo2, hi2} <= {zp1, lo1, hi1};
    end
  end

  for (genvar i = 0; i < L; i++) begin : g_lane
    // ---- stage 1: acc + bias (wraps), left shift (wraps), 64-bit product
    logic signed [31:0] x, xl, m;
    logic signed [5:0]  sh;
    logic        [5:0]  lsh, rsh;
    assign x   = in_acc[i*32 +: 32] + in_bias[i*32 +: 32];
    assign m   = in_m0[i*32 +: 32];
    assign sh  = in_shift[i*6 +: 6];
    assign lsh = sh[5] ? 6'd0 : sh;
    assign rsh = sh[5] ? -sh : 6'd0;
    assign xl  = x << lsh;
    logic signed [63:0] p1;
    logic               ovf1;
    logic        [5:0]  r1;
    always_ff @(posedge clk_i) begin
      if (advance) begin
        p1   <= 64'(xl) * 64'(m);
        ovf1 <= (xl == 32'sh8000_0000) && (m == 32'sh8000_0000);
        r1   <= rsh;
      end
    end

    // ---- stage 2: SaturatingRoundingDoublingHighMul (nudge, divide truncating toward zero),
    //      then RoundingDivideByPOT as floor((y + 2^(r-1) - [y < 0]) / 2^r)
    logic signed [63:0] nudged, q;
    logic signed [31:0] y;
    logic signed [33:0] half, yn;
    logic               neg;
    assign nudged = p1 + (p1 >= 0 ? 64'sd1073741824 : 64'sd1 - 64'sd1073741824);
    assign q      = nudged / 64'sd2147483648;
    assign y      = ovf1 ? 32'sh7fff_ffff : q[31:0];
    assign neg    = y[31] && (r1 != 0);
    assign half   = (r1 == 0) ? 34'sd0 : (34'sd1 <<< (r1 - 6'd1));
    assign yn     = 34'(y) + half - (neg ? 34'sd1 : 34'sd0);
    logic signed [31:0] s2;
    always_ff @(posedge clk_i) begin
      if (advance) s2 <= 32'(yn >>> r1);
    end

    // ---- stage 3: zero point (no wrap) and clamp
    logic signed [33:0] v;
    assign v = 34'(s2) + 34'(zp2);
    logic signed [33:0] c;
    assign c = (v < 34'(lo2)) ? 34'(lo2) : (v > 34'(hi2)) ? 34'(hi2) : v;
    always_ff @(posedge clk_i) begin
      if (advance) out_q[i*8 +: 8] <= c[7:0];
    end
  end
endmodule
