/* qkernels.h: portable C99 int8 kernels emitted by `qsim codegen`.
 *
 * Integer-only implementations of TFLite Micro's reference int8 kernels
 * (same accumulation, same rounding), so the generated firmware is
 * bit-exact with TFLM.  No malloc, no VLAs, no float at run time.
 *
 * Conventions: activations NHWC int8; CONV_2D filters [out_c][kh][kw][in_c];
 * DEPTHWISE_CONV_2D filters [kh][kw][in_c * depth_multiplier];
 * FULLY_CONNECTED weights [out_units][in_units].  Requantization tables are
 * per output channel: multiplier[] is a Q31 M0, shift[] uses TFLite's sign
 * convention (> 0 shifts left).  Offsets are TFLite's: input_offset =
 * -input_zero_point, output_offset = +output_zero_point.
 *
 * Rounding: TFLite's classic double rounding (SRDHM + RoundingDivideByPOT),
 * or one rounding when qk_config.h defines QK_SINGLE_ROUNDING (the
 * TFLITE_SINGLE_ROUNDING build).
 */
#ifndef QKERNELS_H
#define QKERNELS_H

#include <stdint.h>
#include <stddef.h>

#include "qk_config.h"

#if defined(__GNUC__)
#define QK_ALIGN(n) __attribute__((aligned(n)))
#else
#define QK_ALIGN(n)
#endif

/* ---- fixed-point primitives (gemmlowp / TFLite semantics) ---- */
int32_t qk_srdhm(int32_t a, int32_t b);
int32_t qk_rounding_divide_by_pot(int32_t x, int exponent);
int32_t qk_mbqm(int32_t x, int32_t multiplier, int shift);
/* One lane of the requantization unit (rtl/requant_lane.sv, qsim.fixedpoint.requantize):
 * clamp(MBQM(acc + bias, multiplier, shift) + output_offset, act_min, act_max), acc + bias
 * wrapping like int32, the offset add never wrapping; shift in [-31, 31] (single: [-31, 30]). */
int8_t qk_requantize(int32_t acc, int32_t bias, int32_t multiplier, int shift, int32_t output_offset,
                     int32_t act_min, int32_t act_max);

/* ---- CONV_2D (per-channel requantization) ---- */
typedef struct {
    int32_t batches, in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t k_h, k_w;
    int32_t stride_h, stride_w, dil_h, dil_w, pad_h, pad_w;
    int32_t input_offset, output_offset, act_min, act_max;
    int32_t filter_offset; /* qk_conv2d_offsets only (0 elsewhere) */
} qk_conv_params;

/* Output pixels computed per tile: QK_CONV_TILE int8 patches (portable C), QK_CONV_COLS columns
 * expanded to int16 (with the DSP extension). */
#define QK_CONV_TILE 2
#define QK_CONV_COLS 4

/* The kernels choose no path at run time: `qsim codegen` picks one per layer (tables.py,
 * recorded as the layer's "kernel" in NAME_report.json).  CONV_2D: the bias table holds
 * bias + input_offset * (sum of the filter row), wrapped to int32 (the input offset folded in
 * at generation time), and the kernels multiply raw int8 values.
 * qk_conv2d: any geometry; int8 patches, taps outside the image hold the input zero point.
 * scratch (depth = k_h * k_w * in_c): the larger of QK_CONV_TILE * depth bytes (portable C) and, with
 * the DSP extension, 8 * QK_CONV_COLS * ceil(depth / 4) + depth bytes (the expanded columns, one
 * int8 patch; qk_conv2d_direct: no patch); word aligned.  qsim.codegen.tables.conv_scratch_bytes. */
void qk_conv2d(const qk_conv_params *p, const int8_t *input, const int8_t *filter,
               const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
               int8_t *output, int8_t *scratch);
/* qk_conv2d_direct: the same for in_c % 4 == 0 (every group of four taps four channels of one pixel):
 * with the DSP extension the columns are expanded straight from the image (scratch: the expanded
 * columns only); without it, qk_conv2d. */
void qk_conv2d_direct(const qk_conv_params *p, const int8_t *input, const int8_t *filter,
                      const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                      int8_t *output, int8_t *scratch);
/* qk_conv2d_1x1: 1x1 filter, stride 1, no padding: a GEMM over the pixels' channel vectors
 * (no patches).  scratch: the larger of QK_CONV_TILE * in_c (each tile's rows) and, with the DSP
 * extension, 8 * QK_CONV_COLS * ceil(in_c / 4) bytes; every read of a tile precedes its writes (in place). */
void qk_conv2d_1x1(const qk_conv_params *p, const int8_t *input, const int8_t *filter,
                   const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                   int8_t *output, int8_t *scratch);

/* ---- DEPTHWISE_CONV_2D (per-channel requantization, depth multiplier) ---- */
typedef struct {
    int32_t batches, in_h, in_w, in_c;
    int32_t out_h, out_w, out_c; /* out_c = in_c * depth_multiplier */
    int32_t depth_multiplier;
    int32_t k_h, k_w;
    int32_t stride_h, stride_w, dil_h, dil_w, pad_h, pad_w;
    int32_t input_offset, output_offset, act_min, act_max;
    int32_t channel_major; /* 1: filter stored [out_c][kh][kw] (few output channels) */
    int32_t filter_offset; /* channel_major only: weights stored w - filter_offset (uint8 models; 0 elsewhere) */
} qk_dwconv_params;

/* Any geometry.  scratch: out_c int32 accumulators, then (channel_major) k_h * k_w * in_c int8
 * patch values; channel_major layers get the input offset folded into their bias (as CONV_2D). */
void qk_depthwise_conv2d(const qk_dwconv_params *p, const int8_t *input, const int8_t *filter,
                         const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                         int8_t *output, int32_t *scratch);
/* Depth multiplier 1, no dilation (any k, stride, padding): four channels per pass with the
 * accumulators in registers; qk_depthwise_conv3x3 is the same for a 3x3 filter (constant taps).
 * No scratch (the argument is unused). */
void qk_depthwise_conv2d_dm1(const qk_dwconv_params *p, const int8_t *input, const int8_t *filter,
                             const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                             int8_t *output, int32_t *scratch);
void qk_depthwise_conv3x3(const qk_dwconv_params *p, const int8_t *input, const int8_t *filter,
                          const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                          int8_t *output, int32_t *scratch);
/* The same for an activation range of all of int8 (act_min -128, act_max 127) and every shift <= -2
 * (a right shift of at least 2): the requantization in one multiply and the clamp one saturation
 * (chosen at generation time; a layer outside these conditions must not call it). */
void qk_depthwise_conv3x3_sat(const qk_dwconv_params *p, const int8_t *input, const int8_t *filter,
                              const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                              int8_t *output, int32_t *scratch);

/* ---- FULLY_CONNECTED (per-tensor tables repeated, or per-channel) ---- */
typedef struct {
    int32_t batches, in_units, out_units;
    int32_t input_offset, filter_offset, output_offset, act_min, act_max;
} qk_fc_params;

/* Output units are written while the input row is still being read: never in place.
 * qk_fully_connected: TFLite's form, sum (w + filter_offset) * (x + input_offset) (weights with a
 * zero point).  qk_fully_connected_folded: filter_offset 0, the bias table holds bias +
 * input_offset * (sum of the weight row) wrapped to int32, raw int8 dot products. */
void qk_fully_connected(const qk_fc_params *p, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                        int8_t *output);
void qk_fully_connected_folded(const qk_fc_params *p, const int8_t *input, const int8_t *filter,
                               const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                               int8_t *output);
/* The same for per-tensor weights: multiplier and shift hold one entry, for every output unit. */
void qk_fully_connected_folded_pt(const qk_fc_params *p, const int8_t *input, const int8_t *filter,
                                  const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                                  int8_t *output);
/* std::round of a double in [-2^62, 2^62]: nearest integer, ties away from zero (LiteRT's real-scale
 * FULLY_CONNECTED, the float QUANTIZE of qkernels_int16.c). */
int64_t qk_round_half_away(double r);

/* LiteRT BUILTIN_REF's FULLY_CONNECTED (its int8 and legacy uint8 forms): the same sums as
 * qk_fully_connected, requantized by the double real scale instead of a Q31 multiplier:
 * clamp(round_half_away(double(int32(acc + bias[o])) * real_scale[o]) + output_offset, act_min, act_max)
 * (qsim.fixedpoint.requantize_float_rescale; IEEE double, no libm). */
void qk_fully_connected_real(const qk_fc_params *p, const int8_t *input, const int8_t *filter,
                             const int32_t *bias, const double *real_scale, int8_t *output);

/* CONV_2D with a filter offset (uint8 models whose centred weights w - zp_w leave int8, stored as
 * the int8 bytes w - zp_w - filter_offset; the fast paths multiply int8 weights only, SXTB16 on the
 * DSP path): per output pixel the zero-point-padded int8 patch (as qk_conv2d, in scratch: k_h * k_w *
 * in_c bytes), then per channel the raw dot product plus filter_offset * (sum of the patch); the bias
 * table holds bias + input_offset * (sum of the centred filter row), wrapped to int32.  The patch is
 * read before the pixel's outputs are written (in place as the depthwise kernels). */
void qk_conv2d_offsets(const qk_conv_params *p, const int8_t *input, const int8_t *filter,
                       const int32_t *bias, const int32_t *multiplier, const int8_t *shift, int8_t *output,
                       int8_t *scratch);

/* ---- AVERAGE_POOL_2D / MAX_POOL_2D ---- */
typedef struct {
    int32_t batches, in_h, in_w, channels;
    int32_t out_h, out_w;
    int32_t filter_h, filter_w, stride_h, stride_w, pad_h, pad_w;
    int32_t act_min, act_max;
    /* AVERAGE_POOL_2D of a uint8 model run as its int8 twin (q - 128): each tap adds tap_offset (128)
     * so the window sums are the raw uint8 ones (>= 0: half away from zero = uint8's ties up), and
     * tap_offset is subtracted from the average before the clamp.  0 for int8 / int16. */
    int32_t tap_offset;
} qk_pool_params;

void qk_average_pool2d(const qk_pool_params *p, const int8_t *input, int8_t *output);
void qk_max_pool2d(const qk_pool_params *p, const int8_t *input, int8_t *output);

/* ---- ADD / SUB / MUL / MAXIMUM / MINIMUM with 4-D NHWC broadcasting ----
 * The shared geometry: in1_strides / in2_strides are the element strides of
 * each input over the 4-D output shape out_dims (0 along a broadcast dimension). */
typedef struct {
    int32_t out_dims[4];
    int32_t in1_strides[4], in2_strides[4];
} qk_broadcast_shape;

typedef struct {
    qk_broadcast_shape shape;
    int32_t sign; /* +1 ADD, -1 SUB (scaled input 2 is subtracted) */
    int32_t left_shift;
    int32_t input1_offset, input1_multiplier, input1_shift;
    int32_t input2_offset, input2_multiplier, input2_shift;
    int32_t output_offset, output_multiplier, output_shift;
    int32_t act_min, act_max;
} qk_add_params;

void qk_add(const qk_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *output);
/* One ADD/SUB element before the output offset and clamp (the int8 and int16 kernels share it). */
int32_t qk_add_raw(const qk_add_params *p, int32_t a, int32_t b);

typedef struct {
    qk_broadcast_shape shape;
    int32_t input1_offset, input2_offset;
    int32_t output_offset, output_multiplier, output_shift;
    int32_t act_min, act_max;
} qk_mul_params;

void qk_mul(const qk_mul_params *p, const int8_t *in1, const int8_t *in2, int8_t *output);
/* One MUL element before the output offset and clamp (the int8 and int16 kernels share it). */
int32_t qk_mul_raw(const qk_mul_params *p, int32_t a, int32_t b);

/* MAXIMUM (take_max = 1) / MINIMUM of the raw int8 values (same quantization). */
typedef struct {
    qk_broadcast_shape shape;
    int32_t take_max;
} qk_minmax_params;

void qk_minmax(const qk_minmax_params *p, const int8_t *in1, const int8_t *in2, int8_t *output);

/* ---- TRANSPOSE / STRIDED_SLICE: 4-D strided gather.  The output, row-major over
 * out_dims, is output[i0][i1][i2][i3] = input[in_offset + i0*in_strides[0] + ... + i3*in_strides[3]]
 * (elements; a stride may be negative: reversed slice).  TRANSPOSE: in_strides[i] is the input
 * stride of the axis that becomes output axis i, in_offset 0.  STRIDED_SLICE: in_strides are the
 * input strides times the slice steps, in_offset the first element taken. ---- */
typedef struct {
    int32_t out_dims[4];
    int32_t in_strides[4];
    int32_t in_offset;
} qk_gather_params;

void qk_gather(const qk_gather_params *p, const int8_t *input, int8_t *output);
/* The gather's body for any element type (qk_gather: int8, qk_gather_s16: int16); signed offsets,
 * so a reversed slice walks backwards (every index formed is in bounds). */
#define QK_GATHER4(p, input, output)                                                                       \
    do {                                                                                                   \
        const int32_t *d_ = (p)->out_dims, *s_ = (p)->in_strides;                                          \
        int32_t i0_, i1_, i2_, i3_;                                                                        \
        for (i0_ = 0; i0_ < d_[0]; ++i0_) {                                                                \
            for (i1_ = 0; i1_ < d_[1]; ++i1_) {                                                            \
                for (i2_ = 0; i2_ < d_[2]; ++i2_) {                                                        \
                    const ptrdiff_t base_ = (ptrdiff_t)(p)->in_offset + (ptrdiff_t)i0_ * s_[0]             \
                                            + (ptrdiff_t)i1_ * s_[1] + (ptrdiff_t)i2_ * s_[2];             \
                    for (i3_ = 0; i3_ < d_[3]; ++i3_) {                                                    \
                        *(output)++ = (input)[base_ + (ptrdiff_t)i3_ * s_[3]];                             \
                    }                                                                                      \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
    } while (0)

/* ---- SOFTMAX int8 -> int8 (gemmlowp fixed point, kScaledDiffIntegerBits = 5) ---- */
typedef struct {
    int32_t outer, depth;
    int32_t input_multiplier, input_left_shift, diff_min;
} qk_softmax_params;

void qk_softmax(const qk_softmax_params *p, const int8_t *input, int8_t *output);

/* ---- SOFTMAX int8 -> int16 (the same algorithm, 16-bit output: scale 1/65536, zero point -32768) ---- */
void qk_softmax_s8_s16(const qk_softmax_params *p, const int8_t *input, int16_t *output);

/* ---- state models ----
 * Variable tensors (SVDF activation_state, LSTM hidden and cell state) live in the generated
 * NAME_state buffer and persist across NAME_invoke calls; the kernels below read and update
 * them in place. */

/* ---- SVDF, TFLite Micro's integer form (int8 input/output, int8 or int16 state and
 * weights_time).  Per batch row: the state's rows (one per filter, memory entries, newest
 * last) shift left by one; the newest entry is MBQM(sum wf * (x - zp_in), m1, s1), clamped
 * to the state type, then + state_zp wrapped to the state type (zp_after_clamp; else + zp
 * before the clamp); t[f] = sum wt[f] * (state[f] - state_zp) wrapping like int32;
 * out[u] = clamp(MBQM(bias[u] + sum_r t[u*rank + r], m2, s2) + output_offset, -128, 127).
 * feature_bias[f] = -zp_in * sum(wf[f]) and time_bias[f] = -state_zp * sum(wt[f]) (int32,
 * folded at generation time).  scratch: filters int32. ---- */
typedef struct {
    int32_t batches, n_in, filters, memory, rank, units;
    int32_t m1, s1, m2, s2;
    int32_t state_min, state_max, state_zp, output_offset, zp_after_clamp, state_bits;
} qk_svdf_params;

void qk_svdf(const qk_svdf_params *p, const int8_t *input, const int8_t *weights_feature,
             const int32_t *feature_bias, const void *weights_time, const int32_t *time_bias,
             const int32_t *bias, void *state, int8_t *output, int32_t *scratch);

/* ---- int16 sigmoid / tanh by TFLite's 256-entry table (reference_integer_ops::Logistic / Tanh
 * int16, = qsim.fixedpoint.logistic_int16_lut / tanh_int16_lut): input x scaled to x * (3 <<
 * left_shift) when multiplier == 0, else (x * multiplier + 2^(left_shift-1)) >> left_shift;
 * table: qsim.fixedpoint.SIGMOID_TABLE_UINT16; result in Q0.15. ---- */
int32_t qk_logistic_int16(int32_t x, int32_t multiplier, int32_t left_shift, const uint16_t *table);
int32_t qk_tanh_int16(int32_t x, int32_t multiplier, int32_t left_shift, const uint16_t *table);

/* ---- UNIDIRECTIONAL_SEQUENCE_LSTM, TFLite Micro's integer 8x8->16 form (no CIFG, peephole,
 * projection or layer norm).  Gates in the order input, forget, output, cell (qsim's stacked
 * order): w_x [4][cells][n_in], w_h [4][cells][cells] int8; bias_x = bias - zp_x * rowsum(w_x),
 * bias_h = -zp_h * rowsum(w_h) (int32 [4][cells]); per gate multipliers/shifts.  Per step:
 * pre = sat16(sat16(FC_x) + sat16(FC_h)); i, f, o = sigmoid(pre); g = tanh (or sigmoid);
 * c = clamp(sat16(MBQM(i*g, input_mul)) + sat16(MBQM(f*c, forget_mul)), cell_min, cell_max);
 * h = out = clamp(MBQM(o * tanh(c), hidden_mul) + hidden_zp, -128, 127).
 * hidden [batches][cells] int8 and cell [batches][cells] int16 are updated in place.
 * scratch: 4 * cells int32. ---- */
typedef struct {
    int32_t batches, steps, n_in, cells, time_major, cell_gate_sigmoid;
    int32_t mult_x[4], shift_x[4], mult_h[4], shift_h[4];
    int32_t input_mul, input_shift, forget_mul, forget_shift, hidden_mul, hidden_shift, hidden_zp;
    int32_t cell_min, cell_max, cell_tanh_multiplier, cell_tanh_left_shift;
} qk_lstm_params;

void qk_lstm(const qk_lstm_params *p, const int8_t *input, const int8_t *w_x, const int8_t *w_h,
             const int32_t *bias_x, const int32_t *bias_h, const uint16_t *sigmoid_table,
             int8_t *hidden, int16_t *cell, int8_t *output, int32_t *scratch);
/* The same LSTM with the weights stored as column pairs of all four gates' rows, wt_x [n_in / 2][4 * cells][2]
 * and wt_h [cells / 2][4 * cells][2] (element [k / 2][r][k % 2] = row r's weight k; an odd count ends with a
 * pair padded with a zero weight): the host form (the generator's target "host"), whose row-contiguous
 * loops run without per-row tails (SSE2: pmaddwd); bit-identical results.  scratch: 8 * cells int32. */
void qk_lstm_t(const qk_lstm_params *p, const int8_t *input, const int8_t *wt_x, const int8_t *wt_h,
               const int32_t *bias_x, const int32_t *bias_h, const uint16_t *sigmoid_table,
               int8_t *hidden, int16_t *cell, int8_t *output, int32_t *scratch);
/* The step's parts shared with the 16x8 form (qk_lstm_s16, qkernels_int16.h): qk_lstm_activate replaces
 * gate k's cells v[cells] (each sat16(fc_x + fc_h) of two int16 FC results) by their activations (tanh for
 * the cell gate unless cell_gate_sigmoid, else sigmoid; Q0.15); qk_lstm_update takes the four gates' activations
 * in gates[4][cells], updates cell[cells] and leaves h = clamp(MBQM(o * tanh(c), hidden_mul) + hidden_zp,
 * hidden_min, hidden_max) in gates[2][cells] (the output gate's row). */
void qk_lstm_activate(const qk_lstm_params *p, int32_t k, int32_t *v, const uint16_t *sigmoid_table);
void qk_lstm_update(const qk_lstm_params *p, const uint16_t *sigmoid_table, int32_t *gates, int16_t *cell,
                    int32_t hidden_min, int32_t hidden_max);

/* The start of a GATE_PRE function (qk_lstm's, qk_lstm_s16's) for gate k: S = cells, I = n_in, the gate's
 * multipliers / shifts mx, sx (input FC), mh, sh (recurrent FC), its first weight rows wx [S][I] and
 * wh [S][S], bias_x / bias_h advanced to its rows, and the row counter j = 0. */
#define QK_LSTM_GATE_START(p, k, w_x, w_h, bias_x, bias_h)                                                     \
    const int32_t S = (p)->cells, I = (p)->n_in;                                                               \
    const int32_t mx = (p)->mult_x[k], sx = (p)->shift_x[k], mh = (p)->mult_h[k], sh = (p)->shift_h[k];        \
    const int8_t *wx = (w_x) + (size_t)(k) * S * I, *wh = (w_h) + (size_t)(k) * S * S;                         \
    int32_t j = 0;                                                                                             \
    (bias_x) += (size_t)(k) * S;                                                                               \
    (bias_h) += (size_t)(k) * S

/* The LSTM's loop over steps and batch rows for either activation type (qk_lstm: int8, qk_lstm_s16: int16):
 * per gate k_ the statement GATE_PRE (of k_, x_: the step's input row, h_: the row's hidden state, pre_:
 * scratch + k_ * cells) leaves pre_[j] = sat16(FC_x[j] + FC_h[j]) (the gate's two int16 FC results for
 * cell j), then qk_lstm_activate; then qk_lstm_update; its h is the new hidden state and the step's output
 * row. */
#define QK_LSTM_STEPS(p, type, input, hidden, cell, output, scratch, table, h_min, h_max, GATE_PRE)             \
    do {                                                                                                       \
        const int32_t S_ = (p)->cells, I_ = (p)->n_in;                                                         \
        int32_t t_, b_, k_, j_;                                                                                \
        for (t_ = 0; t_ < (p)->steps; ++t_) {                                                                  \
            for (b_ = 0; b_ < (p)->batches; ++b_) {                                                            \
                const size_t row_ = (p)->time_major ? (size_t)t_ * (p)->batches + b_                           \
                                                    : (size_t)b_ * (p)->steps + t_;                            \
                const type *x_ = (input) + row_ * I_;                                                          \
                type *h_ = (hidden) + (size_t)b_ * S_;                                                         \
                for (k_ = 0; k_ < 4; ++k_) {                                                                   \
                    int32_t *pre_ = (scratch) + (size_t)k_ * S_;                                               \
                    GATE_PRE;                                                                                  \
                    qk_lstm_activate((p), k_, pre_, (table));                                                  \
                }                                                                                              \
                qk_lstm_update((p), (table), (scratch), (cell) + (size_t)b_ * S_, (h_min), (h_max));           \
                for (j_ = 0; j_ < S_; ++j_) {                                                                  \
                    h_[j_] = (type)(scratch)[2 * S_ + j_];                                                     \
                    (output)[row_ * S_ + j_] = h_[j_];                                                         \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
    } while (0)

/* ---- MEAN over any of 4 (NHWC-padded) axes: TFLite's int8 QuantizedMeanOrSum.
 * multiplier/shift already fold in 1/count; scratch: out_size int32 sums. ---- */
typedef struct {
    int32_t in_dims[4];
    int32_t reduce[4]; /* 1 = axis reduced */
    int32_t out_size, count;
    int32_t input_zero_point, output_zero_point, multiplier, shift;
    int32_t elem_bytes; /* 1: int8, 2: int16 */
} qk_mean_params;

/* input and output: elem_bytes 1 (int8) or 2 (int16, the int16x8 MEAN), clamped to that type. */
void qk_mean(const qk_mean_params *p, const void *input, void *output, int32_t *scratch);

/* ---- PAD / PADV2 (4-D, raw fill value) ---- */
typedef struct {
    int32_t in_dims[4], out_dims[4], before[4];
    int32_t value;
} qk_pad_params;

void qk_pad(const qk_pad_params *p, const int8_t *input, int8_t *output);

/* ---- CONCATENATION: one input's [outer][inner] block into the output's rows of out_inner ---- */
void qk_concat_part(const int8_t *input, int8_t *output, int32_t outer, int32_t inner, int32_t out_inner);

/* ---- element-wise unary op as a 256-entry table: out = lut[in + 128] ---- */
void qk_lut(const int8_t *lut, const int8_t *input, int8_t *output, int32_t n);

/* ---- tracing: with -DQK_TRACE, NAME_invoke calls qk_trace() after every op with
 * that op's output bytes; the application (main.c) defines it. ---- */
void qk_trace(int32_t op_position, const int8_t *data, int32_t nbytes);

/* ---- profiling: with -DQK_PROFILE, NAME_invoke calls qk_profile(-1) on entry and
 * qk_profile(position) after every op; the application defines it (e.g. reading a
 * cycle counter: benchmarks/cortexm_icount.py reads SysTick). ---- */
void qk_profile(int32_t op_position);

/* ---- RESHAPE between distinct buffers ---- */
void qk_copy(const int8_t *input, int8_t *output, int32_t n);

#endif /* QKERNELS_H */
