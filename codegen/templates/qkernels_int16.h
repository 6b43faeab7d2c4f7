/* qkernels_int16.h: portable C99 int16x8 kernels emitted by `qsim codegen` (TFLite's int16x8 scheme).
 *
 * int16 activations (zero point 0), symmetric int8 weights per output channel, int64 bias.
 * Each kernel performs the arithmetic of TFLite Micro's reference int16 kernel; the GEMMs
 * accumulate sum(x * w) in int64 and requantize with TFLite's int64 MultiplyByQuantizedMultiplier
 * (qk_mbqm64: the Q31 multiplier reduced to Q15 and one rounding; with QK_SINGLE_ROUNDING the
 * full Q31 multiplier and one rounding), the same definitions as
 * qsim.fixedpoint.multiply_by_quantized_multiplier_int64 / requantize_int64.
 * Layouts as in qkernels.h (NHWC; CONV_2D / TRANSPOSE_CONV filters [out_c][kh][kw][in_c];
 * DEPTHWISE_CONV_2D [kh][kw][out_c]; FULLY_CONNECTED [out_units][in_units]).
 * Requantization tables: int64 bias[], Q31 multiplier[] (>= 0), shift[] in [-31, 7] (> 0 = left).
 * No in-place execution: the generator never plans an int16 op's output over its input.
 */
#ifndef QKERNELS_INT16_H
#define QKERNELS_INT16_H

#include <stdint.h>

#include "qkernels.h"

/* ---- int64-accumulator fixed point (qsim.fixedpoint.multiply_by_quantized_multiplier_int64) ----
 * double (default): r = (m + 2^15) >> 16 (0x7FFF when m >= 0x7FFF0000), (x * r + 2^(14 - shift)) >> (15 - shift)
 * in wrapping 64-bit arithmetic; QK_SINGLE_ROUNDING: (x * m + 2^(30 - shift)) >> (31 - shift) exactly
 * (a 96-bit product).  The result's conversion to int32 wraps (TFLite's static_cast).  shift in [-31, 7]. */
int32_t qk_mbqm64(int64_t x, int32_t multiplier, int shift);
/* clamp(qk_mbqm64(acc + bias) + output_offset, act_min, act_max); acc + bias wraps like int64. */
int32_t qk_requantize64(int64_t acc, int64_t bias, int32_t multiplier, int shift, int32_t output_offset,
                        int32_t act_min, int32_t act_max);

/* ---- CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (int8's param structs; offsets are 0) ---- */
void qk_conv2d_s16(const qk_conv_params *p, const int16_t *input, const int8_t *filter, const int64_t *bias,
                   const int32_t *multiplier, const int8_t *shift, int16_t *output);
/* DEPTHWISE_CONV_2D takes CONV_2D's params (out_c = in_c * depth_multiplier) and filter [kh][kw][out_c]. */
void qk_depthwise_conv2d_s16(const qk_conv_params *p, int32_t depth_multiplier, const int16_t *input,
                             const int8_t *filter, const int64_t *bias, const int32_t *multiplier,
                             const int8_t *shift, int16_t *output);
void qk_fully_connected_s16(const qk_fc_params *p, const int16_t *input, const int8_t *filter, const int64_t *bias,
                            const int32_t *multiplier, const int8_t *shift, int16_t *output);

/* ---- TRANSPOSE_CONV: each input pixel scattered through the filter into int64 scratch sums over
 * the output (taps outside it skipped), then bias + requantization.  scratch: out elements int64. ---- */
typedef struct {
    int32_t batches, in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t k_h, k_w, stride_h, stride_w, pad_h, pad_w;
    int32_t output_offset, act_min, act_max;
} qk_tconv_params;

void qk_transpose_conv_s16(const qk_tconv_params *p, const int16_t *input, const int8_t *filter,
                           const int64_t *bias, const int32_t *multiplier, const int8_t *shift, int16_t *output,
                           int64_t *scratch);
/* 0 when a runtime output_shape operand holds the expected [4] shape, else 1 (invoke then fails). */
int qk_check_shape4(const int32_t *shape, int32_t d0, int32_t d1, int32_t d2, int32_t d3);

/* ---- ADD / SUB / MUL / MAXIMUM / MINIMUM on int16 (4-D broadcasting, qkernels.h params) ---- */
void qk_add_s16(const qk_add_params *p, const int16_t *in1, const int16_t *in2, int16_t *output);
void qk_mul_s16(const qk_mul_params *p, const int16_t *in1, const int16_t *in2, int16_t *output);
void qk_minmax_s16(const qk_minmax_params *p, const int16_t *in1, const int16_t *in2, int16_t *output);

/* ---- LEAKY_RELU int16: d = x - input_offset; output_offset + MBQM(d, identity or alpha branch), int16 clamp ---- */
typedef struct {
    int32_t size;
    int32_t input_offset, output_offset;
    int32_t multiplier_identity, shift_identity, multiplier_alpha, shift_alpha;
} qk_leaky_relu_params;

void qk_leaky_relu_s16(const qk_leaky_relu_params *p, const int16_t *input, int16_t *output);

/* ---- RELU / RELU6 int16 (multiplier 0 = plain clamp, TFLM's RELU6) ---- */
typedef struct {
    int32_t size;
    int32_t input_offset, output_offset, multiplier, shift, act_min, act_max;
} qk_relu_params;

void qk_relu_s16(const qk_relu_params *p, const int16_t *input, int16_t *output);

/* ---- QUANTIZE between integer types (TFLite's Requantize): int8/int16/int32 elements in and out
 * (in_bytes / out_bytes: 1, 2 or 4), clamp(MBQM(x - input_zero_point) + output_zero_point, out_min, out_max). ---- */
typedef struct {
    int32_t size, in_bytes, out_bytes;
    int32_t input_zero_point, output_zero_point, multiplier, shift, out_min, out_max;
} qk_requant_params;

void qk_requant_elems(const qk_requant_params *p, const void *input, void *output);

/* ---- DEQUANTIZE int8 / int16 (in_bytes 1 or 2) -> float32: output = (float)(x - zero_point) * scale,
 * the generator's only float arithmetic.  TFLite computes float32(double(scale) * (x - zero_point)): that
 * double product is exact (24-bit scale, |x - zero_point| < 2^17), and the float32 product of the two exact
 * float32 operands is that exact product rounded once (IEEE 754, round to nearest): the same bits. ---- */
typedef struct {
    int32_t size, in_bytes, zero_point;
    float scale;
} qk_dequantize_params;

void qk_dequantize(const qk_dequantize_params *p, const void *input, float *output);

/* ---- QUANTIZE float32 -> int8 / int16 (out_bytes 1 or 2): TFLite's AffineQuantize,
 * clamp(int32(round_half_away(x / scale)) + zero_point, out_min, out_max) with a float32 division, exact
 * ties-away rounding, and the references' x86 int cast: |x / scale| >= 2^31, inf and NaN give INT32_MIN; the
 * zero-point add wraps like int32 (qsim.fixedpoint.quantize_affine, overflow "x86"). ---- */
typedef struct {
    int32_t size, out_bytes, zero_point, out_min, out_max;
    float scale;
} qk_quantize_float_params;

void qk_quantize_float(const qk_quantize_float_params *p, const float *input, void *output);

/* ---- TRANSPOSE / STRIDED_SLICE and PAD / PADV2 on int16 elements (params as in qkernels.h) ---- */
void qk_gather_s16(const qk_gather_params *p, const int16_t *input, int16_t *output);
void qk_pad_s16(const qk_pad_params *p, const int16_t *input, int16_t *output);

/* ---- MAX_POOL_2D / AVERAGE_POOL_2D on int16 (average: rounded half away from zero over the in-bounds window) ---- */
void qk_max_pool2d_s16(const qk_pool_params *p, const int16_t *input, int16_t *output);
void qk_average_pool2d_s16(const qk_pool_params *p, const int16_t *input, int16_t *output);

/* ---- LOGISTIC / TANH int16 (reference_integer_ops::Logistic / Tanh int16): the input rescaled
 * (input_multiplier 0: x * (3 << input_left_shift); else (x * input_multiplier + round) >> input_left_shift),
 * then TFLite's interpolated 256-entry sigmoid table lut[] (qsim.fixedpoint.SIGMOID_TABLE_UINT16). ---- */
typedef struct {
    int32_t size, input_multiplier, input_left_shift, is_tanh;
} qk_sigmoid16_params;

void qk_sigmoid_s16(const qk_sigmoid16_params *p, const uint16_t *lut, const int16_t *input, int16_t *output);

/* ---- SOFTMAX int16 -> int16 (reference_ops::SoftmaxInt16), last axis: exp_lut / reciprocal_lut are
 * TFLite's 513-entry interpolated tables built at generation time (qsim's prepare). ---- */
typedef struct {
    int32_t outer, depth, input_multiplier, input_shift;
} qk_softmax16_params;

void qk_softmax_s16(const qk_softmax16_params *p, const int16_t *exp_lut, const int16_t *reciprocal_lut,
                    const int16_t *input, int16_t *output);

/* ---- UNIDIRECTIONAL_SEQUENCE_LSTM, TFLite Micro's 16x8 form: int16 input / hidden state / output (zero
 * point 0), int8 weights, int64 biases; qk_lstm's params, layouts and step (qkernels.h) except that each FC
 * accumulates in int64 and requantizes with qk_requantize64 (per-gate shifts in [-31, 7]) to int16, and h is
 * clamped to int16.  hidden [batches][cells] int16 and cell [batches][cells] int16 updated in place.
 * scratch: 4 * cells int32. ---- */
void qk_lstm_s16(const qk_lstm_params *p, const int16_t *input, const int8_t *w_x, const int8_t *w_h,
                 const int64_t *bias_x, const int64_t *bias_h, const uint16_t *sigmoid_table,
                 int16_t *hidden, int16_t *cell, int16_t *output, int32_t *scratch);

#endif /* QKERNELS_INT16_H */
