// requant_lane.sv -- datapath of one lane of requant_unit (see requant_unit.sv).
//
// Computes TFLite's requantization of one int32 accumulator:
//   out = clamp(MultiplyByQuantizedMultiplier(acc + bias, M0, shift) + zp, act_min, act_max)
// in five registered stages.  Stage k's register loads when en[k-1] is high;
// the handshake logic lives in requant_unit.  Data registers are not reset
// (valid bits in requant_unit are), so a bubble may carry garbage harmlessly.
//
// Conventions (identical to qsim.fixedpoint and the generated C's qk_requantize;
// tests/test_edges.py and hdl_tests' edge_cases run all three on the same vectors):
//   * acc + bias wraps like C int32 arithmetic (TFLite's int32 add as compilers run it).
//   * M0 is a Q31 int32; shift > 0 is a left shift (multiplier > 1).
//   * SINGLE_ROUNDING = 0: TFLite's default double rounding
//       x << max(shift,0) (wraps), SaturatingRoundingDoublingHighMul by M0
//       (INT32_MIN*INT32_MIN saturates to INT32_MAX), RoundingDivideByPOT by
//       max(-shift,0) (ties away from zero).  Valid shift: [-31, 31].
//   * SINGLE_ROUNDING = 1: TFLITE_SINGLE_ROUNDING,
//       (x * M0 + 2^(30-shift)) >>> (31-shift) in 64 bits.  Valid shift: [-31, 30].
//       A result outside int32 saturates to int32.  TFLite only DCHECKs it (a
//       debug build aborts, a release build truncates: a wrong answer); a
//       hardware requantizer saturates, and qsim.fixedpoint and the C do too.
//   * Valid shifts are qsim.fixedpoint.SHIFT_RANGE: the 6-bit port could carry
//     -32 (not a QuantizeMultiplier output), and qsim refuses at prepare any
//     multiplier needing more (>= 2^31), so no other value ever arrives here.
//   * the zero-point add is 33 bits wide (never wraps); the clamp is
//     max(., act_min) then min(., act_max), as TFLite does.
//
// OUT16 = 1: the int16x8 output mode (int16 activations x int8 weights: TFLite's int64
// accumulator, MultiplyByQuantizedMultiplier(int64 x, M0, shift), int16 output;
// qsim.fixedpoint.requantize_int64).  acc and bias are 64 bits (AW), zp/act_min/act_max/out
// 16 bits (OW); valid shift [-31, 7]; TFLite assumes |acc + bias| < 2^47.
//   * SINGLE_ROUNDING = 0: M0 reduced to Q15, r = (M0 + 2^15) >> 16 (0x7FFF when
//       M0 >= 0x7FFF0000), then (x * r + 2^(14 - shift)) >>> (15 - shift), the product and the
//       rounding add in 64 bits (wrapping like C int64).
//   * SINGLE_ROUNDING = 1: (x * M0 + 2^(30 - shift)) >>> (31 - shift), exact (96-bit product).
//   In both, acc + bias adds in 64 bits and the result's low 32 bits are kept (the references'
//   static_cast<int32_t>), then the zero point and the clamp as in the int8 mode.
//
// OUT_UNSIGNED = 1: unsigned output (uint8 with OUT16 = 0, the old converter's QUANTIZED_UINT8
// layers): zp, act_min, act_max and out are unsigned OW-bit values (uint8: 0..255), zero-extended
// into the 33-bit zero-point add and clamp; the arithmetic before it is the signed mode's (the
// golden is the same qsim.fixedpoint.requantize with zp and bounds in [0, 255]).
module requant_lane #(
    parameter bit SINGLE_ROUNDING = 1'b0,
    parameter bit OUT16 = 1'b0,
    parameter bit OUT_UNSIGNED = 1'b0,
    localparam int AW = OUT16 ? 64 : 32,  // accumulator / bias width
    localparam int OW = OUT16 ? 16 : 8    // output, zero point and activation range width
) (
    input  logic                 clk,
    input  logic [4:0]           en,       // en[k]: stage k+1 register loads
    input  logic signed [AW-1:0] acc,
    input  logic signed [AW-1:0] bias,
    input  logic signed [31:0]   mult,     // Q31 M0
    input  logic signed [5:0]    shift,    // TFLite sign convention: > 0 means left
    input  logic signed [OW-1:0] zp,       // sideband aligned with stage 4
    input  logic signed [OW-1:0] act_min,  // sideband aligned with stage 4
    input  logic signed [OW-1:0] act_max,  // sideband aligned with stage 4
    output logic signed [OW-1:0] out       // stage 5 register
);
  localparam logic signed [31:0] I32_MIN = 32'sh8000_0000;
  localparam logic signed [31:0] I32_MAX = 32'sh7fff_ffff;

  // Stage 4 result (int32), common to every mode.
  logic signed [31:0] s4_x;

  if (OUT16 || SINGLE_ROUNDING) begin : g_one_rounding
    // One rounding of one product, (x * f + 2^(total-1)) >>> total, PW bits wide:
    //   int8, single:     x 32 bits, f = M0,             total 31 - shift, PW 64 (exact);
    //                     a result outside int32 saturates
    //   int16x8, double:  x 64 bits, f = M0 in Q15 (r), total 15 - shift, PW 64 (wraps like C int64)
    //   int16x8, single:  x 64 bits, f = M0,             total 31 - shift, PW 96 (exact)
    //   int16x8 keeps the low 32 bits of the result (the references' static_cast<int32_t>).
    localparam bit REDUCE = OUT16 && !SINGLE_ROUNDING;
    localparam int PW = (OUT16 && SINGLE_ROUNDING) ? 96 : 64;

    // ---- stage 1: bias add (AW bits, wraps), factor, total right shift
    logic signed [AW-1:0] s1_x;
    logic signed [32:0]   s1_f;  // M0, or r = (M0 + 2^15) >>> 16 (0x7FFF from M0 >= 0x7FFF0000) in 17 bits
    logic        [5:0]    s1_total;
    always_ff @(posedge clk) begin
      if (en[0]) begin
        s1_x <= acc + bias;
        if (REDUCE) begin
          s1_f     <= (mult < 32'sh7fff_0000) ? ((33'(mult) + 33'sd32768) >>> 16) : 33'sh0_7fff;
          s1_total <= 6'd15 - shift;
        end else begin
          s1_f     <= 33'(mult);
          s1_total <= 6'd31 - shift;
        end
      end
    end

    // ---- stage 2: the product, PW bits
    logic signed [PW-1:0] s2_p;
    logic        [5:0]    s2_total;
    always_ff @(posedge clk) begin
      if (en[1]) begin
        s2_p     <= PW'(s1_x) * PW'(s1_f);
        s2_total <= s1_total;
      end
    end

    // ---- stage 3: add the rounding constant 2^(total-1)
    logic signed [PW-1:0] s3_p;
    logic        [5:0]    s3_total;
    always_ff @(posedge clk) begin
      if (en[2]) begin
        s3_p     <= s2_p + (PW'(1) <<< (s2_total - 6'd1));
        s3_total <= s2_total;
      end
    end

    // ---- stage 4: arithmetic right shift; int8: saturate to int32, int16x8: keep the low 32 bits
    logic signed [PW-1:0] q;
    assign q = s3_p >>> s3_total;
    always_ff @(posedge clk) begin
      if (en[3]) begin
        if (!OUT16 && q > PW'(I32_MAX)) s4_x <= I32_MAX;
        else if (!OUT16 && q < PW'(I32_MIN)) s4_x <= I32_MIN;
        else s4_x <= q[31:0];
      end
    end
  end else begin : g_double
    // ---- stage 1: bias add (wraps), left shift (wraps), right-shift amount
    logic signed [31:0] sum;
    logic        [4:0]  left;
    assign sum  = acc + bias;
    assign left = shift[5] ? 5'd0 : shift[4:0];
    logic signed [31:0] s1_x, s1_m;
    logic        [4:0]  s1_right;
    always_ff @(posedge clk) begin
      if (en[0]) begin
        s1_x     <= sum <<< left;
        s1_m     <= mult;
        s1_right <= shift[5] ? 5'(-shift) : 5'd0;
      end
    end

    // ---- stage 2: 32x32 -> 64-bit signed product, INT32_MIN*INT32_MIN flag
    logic signed [63:0] s2_p;
    logic               s2_ovf;
    logic        [4:0]  s2_right;
    always_ff @(posedge clk) begin
      if (en[1]) begin
        s2_p     <= 64'(s1_x) * 64'(s1_m);
        s2_ovf   <= (s1_x == I32_MIN) && (s1_m == I32_MIN);
        s2_right <= s1_right;
      end
    end

    // ---- stage 3: SaturatingRoundingDoublingHighMul
    // gemmlowp adds nudge = p >= 0 ? 2^30 : 1 - 2^30 and divides by 2^31
    // truncating toward zero.  For p < 0 the nudged value is negative, and
    // truncation of (p + 1 - 2^30) equals floor(p + 1 - 2^30 + 2^31 - 1), so
    // both signs reduce to floor((p + 2^30) / 2^31): one adder, no sign mux.
    /* verilator lint_off UNUSEDSIGNAL */
    logic signed [63:0] nudged;  // only bits [62:31] are the result
    /* verilator lint_on UNUSEDSIGNAL */
    assign nudged = s2_p + 64'sd1073741824;
    logic signed [31:0] s3_x;
    logic        [4:0]  s3_right;
    always_ff @(posedge clk) begin
      if (en[2]) begin
        s3_x     <= s2_ovf ? I32_MAX : nudged[62:31];
        s3_right <= s2_right;
      end
    end

    // ---- stage 4: RoundingDivideByPOT (ties away from zero)
    logic        [31:0] mask, remainder, threshold;
    logic signed [31:0] shifted;
    assign mask      = (32'd1 << s3_right) - 32'd1;
    assign remainder = s3_x & mask;
    assign threshold = (mask >> 1) + {31'd0, s3_x[31]};
    assign shifted   = s3_x >>> s3_right;
    always_ff @(posedge clk) begin
      if (en[3]) s4_x <= shifted + ((remainder > threshold) ? 32'sd1 : 32'sd0);
    end
  end

  // ---- stage 5: zero point (33-bit, no wrap), clamp to [act_min, act_max]
  // (sideband widened to 33 bits: sign-extended, or zero-extended when OUT_UNSIGNED)
  logic signed [32:0] zp_w, min_w, max_w;
  assign zp_w  = OUT_UNSIGNED ? $signed({{(33 - OW){1'b0}}, zp})      : 33'(zp);
  assign min_w = OUT_UNSIGNED ? $signed({{(33 - OW){1'b0}}, act_min}) : 33'(act_min);
  assign max_w = OUT_UNSIGNED ? $signed({{(33 - OW){1'b0}}, act_max}) : 33'(act_max);
  logic signed [32:0] with_zp, lo_clamped, hi_clamped;
  assign with_zp    = 33'(s4_x) + zp_w;
  assign lo_clamped = (with_zp < min_w) ? min_w : with_zp;
  assign hi_clamped = (lo_clamped > max_w) ? max_w : lo_clamped;
  always_ff @(posedge clk) begin
    if (en[4]) out <= hi_clamped[OW-1:0];
  end

  /* verilator lint_off UNUSEDSIGNAL */
  logic unused_hi;  // hi_clamped is within [act_min, act_max]: OW bits
  /* verilator lint_on UNUSEDSIGNAL */
  assign unused_hi = ^hi_clamped[32:OW];
endmodule
