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
} qk_conv_params;

/* Output pixels computed per tile (one int8 patch each). */
#define QK_CONV_TILE 2

/* The kernels choose no path at run time: `qsim codegen` picks one per layer (tables.py,
 * recorded as the layer's "kernel" in NAME_report.json).  CONV_2D: the bias table holds
 * bias + input_offset * (sum of the filter row), wrapped to int32 (the input offset folded in
 * at generation time), and the kernels multiply raw int8 values.
 * qk_conv2d: any geometry; int8 patches, taps outside the image hold the input zero point.
 * scratch: QK_CONV_TILE * k_h * k_w * in_c bytes. */
void qk_conv2d(const qk_conv_params *p, const int8_t *input, const int8_t *filter,
               const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
               int8_t *output, int8_t *scratch);
/* qk_conv2d_1x1: 1x1 filter, stride 1, no padding: a GEMM over the pixels' channel vectors
 * (no patches).  scratch: QK_CONV_TILE * in_c bytes (each tile's rows, so it may run in place). */
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

/* ---- AVERAGE_POOL_2D / MAX_POOL_2D ---- */
typedef struct {
    int32_t batches, in_h, in_w, channels;
    int32_t out_h, out_w;
    int32_t filter_h, filter_w, stride_h, stride_w, pad_h, pad_w;
    int32_t act_min, act_max;
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

typedef struct {
    qk_broadcast_shape shape;
    int32_t input1_offset, input2_offset;
    int32_t output_offset, output_multiplier, output_shift;
    int32_t act_min, act_max;
} qk_mul_params;

void qk_mul(const qk_mul_params *p, const int8_t *in1, const int8_t *in2, int8_t *output);

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

/* ---- SOFTMAX int8 -> int8 (gemmlowp fixed point, kScaledDiffIntegerBits = 5) ---- */
typedef struct {
    int32_t outer, depth;
    int32_t input_multiplier, input_left_shift, diff_min;
} qk_softmax_params;

void qk_softmax(const qk_softmax_params *p, const int8_t *input, int8_t *output);

/* ---- MEAN over any of 4 (NHWC-padded) axes: TFLite's int8 QuantizedMeanOrSum.
 * multiplier/shift already fold in 1/count; scratch: out_size int32 sums. ---- */
typedef struct {
    int32_t in_dims[4];
    int32_t reduce[4]; /* 1 = axis reduced */
    int32_t out_size, count;
    int32_t input_zero_point, output_zero_point, multiplier, shift;
} qk_mean_params;

void qk_mean(const qk_mean_params *p, const int8_t *input, int8_t *output, int32_t *scratch);

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
