/* qkernels_int16.c: portable C99 int16x8 kernels emitted by `qsim codegen` (see qkernels_int16.h).
 *
 * The arithmetic of TFLite Micro's reference int16 kernels, as qsim's Python kernels state it
 * (qsim/kernels/int16x8.py, elementwise.py, activations.py, quantize.py, shape_ops.py): int64
 * GEMM accumulators, TFLite's int64 MultiplyByQuantizedMultiplier, the int32 one (qk_mbqm, shared
 * with the int8 kernels) for the element-wise ops, int16 clamps.  No in-place execution.
 */
#include "qkernels_int16.h"

#include <string.h>

#define QK_S16_MIN (-32768)
#define QK_S16_MAX 32767

static int32_t qk_clamp64(int64_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : (int32_t)v);
}

/* int64 -> int32 keeping the low 32 bits (TFLite's static_cast<int32_t>, modular on every target). */
static int32_t qk_low32(uint64_t v)
{
    return (int32_t)(uint32_t)(v & 0xFFFFFFFFu);
}

/* Arithmetic right shift of a signed 64-bit value (floor division by 2^s, 0 <= s < 64) without
 * relying on the implementation-defined >> of negative values. */
static int64_t qk_asr64(int64_t v, int s)
{
    return v >= 0 ? v >> s : -(int64_t)((~(uint64_t)v) >> s) - 1;
}

#if defined(QK_SINGLE_ROUNDING)
/* (x * m + 2^(total - 1)) >> total exactly (x * m needs up to 94 bits), total = 31 - shift in [24, 62];
 * returns the low 32 bits.  x = xh * 2^32 + xl (xl unsigned): x * m + round = (xh * m + carry) * 2^32 + low. */
int32_t qk_mbqm64(int64_t x, int32_t multiplier, int shift)
{
    const int total = 31 - shift;
    const uint64_t xl = (uint64_t)x & 0xFFFFFFFFu;
    const int64_t xh = qk_asr64(x, 32);
    const uint64_t lo = xl * (uint64_t)(uint32_t)multiplier + ((uint64_t)1 << (total - 1)); /* < 2^64 */
    const int64_t hi = xh * (int64_t)multiplier + (int64_t)(lo >> 32); /* |.| < 2^63 */
    const uint64_t ll = lo & 0xFFFFFFFFu;
    if (total >= 32) {
        return qk_low32((uint64_t)qk_asr64(hi, total - 32));
    }
    return qk_low32(((uint64_t)hi << (32 - total)) + (ll >> total));
}
#else
/* The Q31 multiplier reduced to Q15 (rounded; 0x7FFF when it would reach 2^15), then one rounding
 * (x * r + 2^(total - 1)) >> total, total = 15 - shift in [8, 46], in wrapping 64-bit arithmetic. */
int32_t qk_mbqm64(int64_t x, int32_t multiplier, int shift)
{
    const int total = 15 - shift;
    const int64_t r = multiplier < 0x7FFF0000 ? qk_asr64((int64_t)multiplier + (1 << 15), 16) : 0x7FFF;
    const uint64_t sum = (uint64_t)x * (uint64_t)r + ((uint64_t)1 << (total - 1));
    return qk_low32((uint64_t)qk_asr64((int64_t)sum, total));
}
#endif

int32_t qk_requantize64(int64_t acc, int64_t bias, int32_t multiplier, int shift, int32_t output_offset,
                        int32_t act_min, int32_t act_max)
{
    const int32_t scaled = qk_mbqm64((int64_t)((uint64_t)acc + (uint64_t)bias), multiplier, shift);
    return qk_clamp64((int64_t)scaled + output_offset, act_min, act_max);
}

static int16_t qk_requant_ch(int64_t acc, const int64_t *bias, const int32_t *multiplier, const int8_t *shift,
                             int32_t oc, int32_t output_offset, int32_t act_min, int32_t act_max)
{
    return (int16_t)qk_requantize64(acc, bias[oc], multiplier[oc], shift[oc], output_offset, act_min, act_max);
}

/* sum x[i] * w[i] in int64 (each product fits int32). */
static int64_t qk_dot_s16_s8(const int16_t *x, const int8_t *w, int32_t n)
{
    int64_t acc = 0;
    int32_t i;
    for (i = 0; i < n; ++i) {
        acc += (int32_t)x[i] * w[i];
    }
    return acc;
}

/* ------------------------------------------------------------------ GEMMs */

/* Taps t in [*lo, *hi) of a window along one axis whose input index o * stride - pad + t * dil is
 * inside [0, in) (TFLite skips the others: padding contributes nothing). */
static void qk_taps(int32_t o, int32_t stride, int32_t pad, int32_t dil, int32_t k, int32_t in, int32_t *lo,
                    int32_t *hi)
{
    const int32_t start = o * stride - pad;
    const int32_t t0 = start < 0 ? (-start + dil - 1) / dil : 0;
    const int32_t t1 = in - start <= 0 ? 0 : (in - start + dil - 1) / dil;
    *lo = t0 < k ? t0 : k;
    *hi = t1 < k ? (t1 > *lo ? t1 : *lo) : k;
}

/* CONV_2D (depth_multiplier 0: filter [out_c][kh][kw][in_c], every input channel) or DEPTHWISE_CONV_2D
 * (depth_multiplier >= 1: filter [kh][kw][out_c], output channel oc reads input channel oc / multiplier). */
static void qk_window_s16(const qk_conv_params *p, int32_t depth_multiplier, const int16_t *input,
                          const int8_t *filter, const int64_t *bias, const int32_t *multiplier, const int8_t *shift,
                          int16_t *output)
{
    const int32_t in_c = p->in_c;
    int32_t b, oy, ox, oc, ky, kx, ky0, ky1, kx0, kx1;
    for (b = 0; b < p->batches; ++b) {
        const int16_t *image = input + (size_t)b * p->in_h * p->in_w * in_c;
        for (oy = 0; oy < p->out_h; ++oy) {
            qk_taps(oy, p->stride_h, p->pad_h, p->dil_h, p->k_h, p->in_h, &ky0, &ky1);
            for (ox = 0; ox < p->out_w; ++ox) {
                qk_taps(ox, p->stride_w, p->pad_w, p->dil_w, p->k_w, p->in_w, &kx0, &kx1);
                for (oc = 0; oc < p->out_c; ++oc) {
                    int64_t acc = 0;
                    for (ky = ky0; ky < ky1; ++ky) {
                        const int32_t iy = oy * p->stride_h - p->pad_h + ky * p->dil_h;
                        for (kx = kx0; kx < kx1; ++kx) {
                            const int32_t ix = ox * p->stride_w - p->pad_w + kx * p->dil_w;
                            const int16_t *x = image + ((size_t)iy * p->in_w + ix) * in_c;
                            const size_t tap = (size_t)ky * p->k_w + kx;
                            acc += depth_multiplier == 0
                                       ? qk_dot_s16_s8(x, filter + ((size_t)oc * p->k_h * p->k_w + tap) * in_c, in_c)
                                       : (int32_t)x[oc / depth_multiplier] * filter[tap * p->out_c + oc];
                        }
                    }
                    *output++ = qk_requant_ch(acc, bias, multiplier, shift, oc, p->output_offset, p->act_min,
                                              p->act_max);
                }
            }
        }
    }
}

void qk_conv2d_s16(const qk_conv_params *p, const int16_t *input, const int8_t *filter, const int64_t *bias,
                   const int32_t *multiplier, const int8_t *shift, int16_t *output)
{
    qk_window_s16(p, 0, input, filter, bias, multiplier, shift, output);
}

void qk_depthwise_conv2d_s16(const qk_conv_params *p, int32_t depth_multiplier, const int16_t *input,
                             const int8_t *filter, const int64_t *bias, const int32_t *multiplier,
                             const int8_t *shift, int16_t *output)
{
    qk_window_s16(p, depth_multiplier, input, filter, bias, multiplier, shift, output);
}

void qk_fully_connected_s16(const qk_fc_params *p, const int16_t *input, const int8_t *filter, const int64_t *bias,
                            const int32_t *multiplier, const int8_t *shift, int16_t *output)
{
    int32_t b, o;
    for (b = 0; b < p->batches; ++b) {
        const int16_t *x = input + (size_t)b * p->in_units;
        for (o = 0; o < p->out_units; ++o) {
            const int64_t acc = qk_dot_s16_s8(x, filter + (size_t)o * p->in_units, p->in_units);
            *output++ = qk_requant_ch(acc, bias, multiplier, shift, o, p->output_offset, p->act_min, p->act_max);
        }
    }
}

void qk_transpose_conv_s16(const qk_tconv_params *p, const int16_t *input, const int8_t *filter,
                           const int64_t *bias, const int32_t *multiplier, const int8_t *shift, int16_t *output,
                           int64_t *scratch)
{
    const size_t out_size = (size_t)p->batches * p->out_h * p->out_w * p->out_c;
    const int32_t in_c = p->in_c, out_c = p->out_c;
    int32_t b, iy, ix, ky, kx, oc;
    size_t i;
    for (i = 0; i < out_size; ++i) {
        scratch[i] = 0;
    }
    for (b = 0; b < p->batches; ++b) {
        for (iy = 0; iy < p->in_h; ++iy) {
            for (ix = 0; ix < p->in_w; ++ix) {
                const int16_t *x = input + (((size_t)b * p->in_h + iy) * p->in_w + ix) * in_c;
                for (ky = 0; ky < p->k_h; ++ky) {
                    const int32_t oy = iy * p->stride_h - p->pad_h + ky;
                    if (oy < 0 || oy >= p->out_h) {
                        continue;
                    }
                    for (kx = 0; kx < p->k_w; ++kx) {
                        const int32_t ox = ix * p->stride_w - p->pad_w + kx;
                        int64_t *acc;
                        if (ox < 0 || ox >= p->out_w) {
                            continue;
                        }
                        acc = scratch + (((size_t)b * p->out_h + oy) * p->out_w + ox) * out_c;
                        for (oc = 0; oc < out_c; ++oc) {
                            acc[oc] += qk_dot_s16_s8(x, filter + (((size_t)oc * p->k_h + ky) * p->k_w + kx) * in_c,
                                                     in_c);
                        }
                    }
                }
            }
        }
    }
    for (i = 0; i < out_size; ++i) {
        output[i] = qk_requant_ch(scratch[i], bias, multiplier, shift, (int32_t)(i % (size_t)out_c),
                                  p->output_offset, p->act_min, p->act_max);
    }
}

int qk_check_shape4(const int32_t *shape, int32_t d0, int32_t d1, int32_t d2, int32_t d3)
{
    return !(shape[0] == d0 && shape[1] == d1 && shape[2] == d2 && shape[3] == d3);
}

/* ---------------------------------------------------------- element-wise */

/* out[i] = f(in1[...], in2[...]) over the 4-D broadcast walk of qk_broadcast_shape. */
#define QK_BROADCAST4_S16(shape, in1, in2, output, EXPR)                                                  \
    do {                                                                                                   \
        const int32_t *d_ = (shape)->out_dims, *s1_ = (shape)->in1_strides, *s2_ = (shape)->in2_strides;  \
        int32_t i0_, i1_, i2_, i3_;                                                                        \
        int16_t *o_ = (output);                                                                            \
        for (i0_ = 0; i0_ < d_[0]; ++i0_) {                                                                \
            for (i1_ = 0; i1_ < d_[1]; ++i1_) {                                                            \
                for (i2_ = 0; i2_ < d_[2]; ++i2_) {                                                        \
                    const int16_t *a_ = (in1) + i0_ * s1_[0] + i1_ * s1_[1] + i2_ * s1_[2];                \
                    const int16_t *b_ = (in2) + i0_ * s2_[0] + i1_ * s2_[1] + i2_ * s2_[2];                \
                    for (i3_ = 0; i3_ < d_[3]; ++i3_) {                                                    \
                        const int32_t a = a_[i3_ * s1_[3]], b = b_[i3_ * s2_[3]];                         \
                        *o_++ = (int16_t)(EXPR);                                                           \
                    }                                                                                      \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
    } while (0)

void qk_add_s16(const qk_add_params *p, const int16_t *in1, const int16_t *in2, int16_t *output)
{
    QK_BROADCAST4_S16(&p->shape, in1, in2, output,
                      qk_clamp64((int64_t)qk_add_raw(p, a, b) + p->output_offset, p->act_min, p->act_max));
}

void qk_mul_s16(const qk_mul_params *p, const int16_t *in1, const int16_t *in2, int16_t *output)
{
    QK_BROADCAST4_S16(&p->shape, in1, in2, output,
                      qk_clamp64((int64_t)qk_mul_raw(p, a, b) + p->output_offset, p->act_min, p->act_max));
}

void qk_minmax_s16(const qk_minmax_params *p, const int16_t *in1, const int16_t *in2, int16_t *output)
{
    const int take_max = p->take_max != 0;
    QK_BROADCAST4_S16(&p->shape, in1, in2, output, take_max ? (a > b ? a : b) : (a < b ? a : b));
}

void qk_leaky_relu_s16(const qk_leaky_relu_params *p, const int16_t *input, int16_t *output)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t d = input[i] - p->input_offset;
        const int32_t v = d >= 0 ? qk_mbqm(d, p->multiplier_identity, p->shift_identity)
                                 : qk_mbqm(d, p->multiplier_alpha, p->shift_alpha);
        output[i] = (int16_t)qk_clamp64((int64_t)v + p->output_offset, QK_S16_MIN, QK_S16_MAX);
    }
}

void qk_relu_s16(const qk_relu_params *p, const int16_t *input, int16_t *output)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int64_t v = p->multiplier == 0 ? (int64_t)input[i]
                          : (int64_t)p->output_offset + qk_mbqm(input[i] - p->input_offset, p->multiplier, p->shift);
        output[i] = (int16_t)qk_clamp64(v, p->act_min, p->act_max);
    }
}

static int64_t qk_load_elem(const void *base, int32_t bytes, int32_t i)
{
    return bytes == 1 ? ((const int8_t *)base)[i] : bytes == 2 ? ((const int16_t *)base)[i] : ((const int32_t *)base)[i];
}

void qk_requant_elems(const qk_requant_params *p, const void *input, void *output)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        /* x - zp as int32 (the generator refuses an int32 input with a zero point: no wrap here) */
        const int32_t d = (int32_t)(qk_load_elem(input, p->in_bytes, i) - p->input_zero_point);
        const int32_t v = qk_clamp64((int64_t)qk_mbqm(d, p->multiplier, p->shift) + p->output_zero_point,
                                     p->out_min, p->out_max);
        if (p->out_bytes == 1) {
            ((int8_t *)output)[i] = (int8_t)v;
        } else if (p->out_bytes == 2) {
            ((int16_t *)output)[i] = (int16_t)v;
        } else {
            ((int32_t *)output)[i] = v;
        }
    }
}

void qk_dequantize(const qk_dequantize_params *p, const void *input, float *output)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        output[i] = (float)(int32_t)(qk_load_elem(input, p->in_bytes, i) - p->zero_point) * p->scale;
    }
}

/* round half away from zero (qk_round_half_away: a float is exact as a double), then x86's float -> int32
 * cast (INT32_MIN out of range or NaN). */
static int32_t qk_round_to_int32(float r)
{
    if (!(r >= -2147483648.0f && r < 2147483648.0f)) {
        return (int32_t)(-2147483647 - 1);
    }
    return (int32_t)qk_round_half_away((double)r);
}

void qk_quantize_float(const qk_quantize_float_params *p, const float *input, void *output)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t q = (int32_t)((uint32_t)qk_round_to_int32(input[i] / p->scale) + (uint32_t)p->zero_point);
        const int32_t v = q < p->out_min ? p->out_min : (q > p->out_max ? p->out_max : q);
        if (p->out_bytes == 1) {
            ((int8_t *)output)[i] = (int8_t)v;
        } else {
            ((int16_t *)output)[i] = (int16_t)v;
        }
    }
}

/* --------------------------------------------------------- recurrent */

/* Two weight rows against one int16 vector: acc[r] = sum x[i] * wr[i] in int64 (one load of x serves both). */
static void qk_dot2_s16_s8(const int16_t *x, const int8_t *w0, const int8_t *w1, int32_t n, int64_t acc[2])
{
    int64_t a0 = 0, a1 = 0;
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t xi = x[i];
        a0 += xi * w0[i];
        a1 += xi * w1[i];
    }
    acc[0] = a0;
    acc[1] = a1;
}

/* sat16(FC_x + FC_h) of one cell of the 16x8 form, from the two int64 accumulators. */
static int32_t qk_lstm_pre16(int64_t ax, int64_t ah, int64_t bx, int64_t bh, int32_t mx, int32_t sx, int32_t mh,
                             int32_t sh)
{
    const int32_t fx = qk_requantize64(ax, bx, mx, sx, 0, QK_S16_MIN, QK_S16_MAX);
    const int32_t fh = qk_requantize64(ah, bh, mh, sh, 0, QK_S16_MIN, QK_S16_MAX);
    return qk_clamp64((int64_t)fx + fh, QK_S16_MIN, QK_S16_MAX);
}

/* Gate k's pre-activations of the 16x8 form: pre[j] = sat16(FC_x[j] + FC_h[j]), two weight rows per pass. */
static void qk_lstm_pre_s16(const qk_lstm_params *p, int32_t k, const int16_t *x, const int16_t *h, const int8_t *w_x,
                            const int8_t *w_h, const int64_t *bias_x, const int64_t *bias_h, int32_t *pre)
{
    QK_LSTM_GATE_START(p, k, w_x, w_h, bias_x, bias_h);
    for (; j + 1 < S; j += 2, wx += 2 * I, wh += 2 * S) {
        int64_t ax[2], ah[2];
        qk_dot2_s16_s8(x, wx, wx + I, I, ax);
        qk_dot2_s16_s8(h, wh, wh + S, S, ah);
        pre[j] = qk_lstm_pre16(ax[0], ah[0], bias_x[j], bias_h[j], mx, sx, mh, sh);
        pre[j + 1] = qk_lstm_pre16(ax[1], ah[1], bias_x[j + 1], bias_h[j + 1], mx, sx, mh, sh);
    }
    if (j < S) {
        pre[j] = qk_lstm_pre16(qk_dot_s16_s8(x, wx, I), qk_dot_s16_s8(h, wh, S), bias_x[j], bias_h[j], mx, sx, mh, sh);
    }
}

void qk_lstm_s16(const qk_lstm_params *p, const int16_t *input, const int8_t *w_x, const int8_t *w_h,
                 const int64_t *bias_x, const int64_t *bias_h, const uint16_t *sigmoid_table,
                 int16_t *hidden, int16_t *cell, int16_t *output, int32_t *scratch)
{
    QK_LSTM_STEPS(p, int16_t, input, hidden, cell, output, scratch, sigmoid_table, QK_S16_MIN, QK_S16_MAX,
                  qk_lstm_pre_s16(p, k_, x_, h_, w_x, w_h, bias_x, bias_h, pre_));
}

/* --------------------------------------------------------- data movement */

void qk_gather_s16(const qk_gather_params *p, const int16_t *input, int16_t *output)
{
    QK_GATHER4(p, input, output);
}

void qk_pad_s16(const qk_pad_params *p, const int16_t *input, int16_t *output)
{
    const int32_t *id = p->in_dims, *od = p->out_dims, *b = p->before;
    int32_t o0, o1, o2, o3;
    for (o0 = 0; o0 < od[0]; ++o0) {
        const int32_t i0 = o0 - b[0];
        for (o1 = 0; o1 < od[1]; ++o1) {
            const int32_t i1 = o1 - b[1];
            for (o2 = 0; o2 < od[2]; ++o2) {
                const int32_t i2 = o2 - b[2];
                const int inside = i0 >= 0 && i0 < id[0] && i1 >= 0 && i1 < id[1] && i2 >= 0 && i2 < id[2];
                for (o3 = 0; o3 < od[3]; ++o3) {
                    const int32_t i3 = o3 - b[3];
                    *output++ = (inside && i3 >= 0 && i3 < id[3])
                                    ? input[(((size_t)i0 * id[1] + i1) * id[2] + i2) * id[3] + i3]
                                    : (int16_t)p->value;
                }
            }
        }
    }
}

/* --------------------------------------------------------------- pooling */

static void qk_pool_s16(const qk_pool_params *p, const int16_t *input, int16_t *output, int is_max)
{
    int32_t b, oy, ox, c, ky, kx;
    for (b = 0; b < p->batches; ++b) {
        for (oy = 0; oy < p->out_h; ++oy) {
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t y0 = oy * p->stride_h - p->pad_h, x0 = ox * p->stride_w - p->pad_w;
                const int32_t ky0 = y0 < 0 ? -y0 : 0, kx0 = x0 < 0 ? -x0 : 0;
                const int32_t ky1 = p->in_h - y0 < p->filter_h ? p->in_h - y0 : p->filter_h;
                const int32_t kx1 = p->in_w - x0 < p->filter_w ? p->in_w - x0 : p->filter_w;
                for (c = 0; c < p->channels; ++c) {
                    int32_t acc = is_max ? QK_S16_MIN : 0, count = 0, v;
                    for (ky = ky0; ky < ky1; ++ky) {
                        for (kx = kx0; kx < kx1; ++kx) {
                            const int32_t x = input[(((size_t)b * p->in_h + y0 + ky) * p->in_w + x0 + kx)
                                                    * p->channels + c];
                            acc = is_max ? (x > acc ? x : acc) : acc + x;
                            ++count;
                        }
                    }
                    if (is_max || count == 0) {
                        v = acc;
                    } else { /* rounded half away from zero */
                        v = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    }
                    *output++ = (int16_t)qk_clamp64(v, p->act_min, p->act_max);
                }
            }
        }
    }
}

void qk_max_pool2d_s16(const qk_pool_params *p, const int16_t *input, int16_t *output)
{
    qk_pool_s16(p, input, output, 1);
}

void qk_average_pool2d_s16(const qk_pool_params *p, const int16_t *input, int16_t *output)
{
    qk_pool_s16(p, input, output, 0);
}

/* ------------------------------------------------------- LOGISTIC / TANH
 * qsim.fixedpoint.logistic_int16_lut / tanh_int16_lut: v = x * (3 << left_shift) (multiplier 0)
 * or (x * multiplier + round) >> left_shift; |v| indexes the table lut[] with 9 (logistic) or 8
 * (tanh) fractional bits, interpolated; saturates beyond 255 steps. */
void qk_sigmoid_s16(const qk_sigmoid16_params *p, const uint16_t *lut, const int16_t *input, int16_t *output)
{
    const int frac = p->is_tanh ? 8 : 9;
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int64_t x = input[i];
        int64_t v, abs_v, hi, idx, ua, ub, r;
        if (p->input_multiplier == 0) {
            v = x * ((int64_t)3 << p->input_left_shift);
        } else {
            v = qk_asr64(x * p->input_multiplier + (p->input_left_shift > 0 ? (int64_t)1 << (p->input_left_shift - 1) : 0),
                         p->input_left_shift);
        }
        abs_v = v < 0 ? -v : v;
        hi = abs_v >> frac;
        idx = hi < 254 ? hi : 254;
        ua = lut[idx];
        ub = lut[idx + 1];
        r = ua * ((int64_t)1 << frac) + (abs_v & (((int64_t)1 << frac) - 1)) * (ub - ua);
        if (p->is_tanh) {
            if (hi >= 255) {
                r = (int64_t)0xFFFF << 8;
            }
            r = v >= 0 ? r - ((int64_t)1 << 23) + (1 << 7) : -r + ((int64_t)1 << 23) + (1 << 7) - 1;
            output[i] = (int16_t)qk_asr64(r, 8);
        } else {
            if (hi >= 255) {
                r = (int64_t)0x7FFF << 10;
            }
            r = v >= 0 ? r + (1 << 9) : ((int64_t)1 << 25) - r + (1 << 9) - 1;
            output[i] = (int16_t)qk_asr64(r, 10);
        }
    }
}

/* ------------------------------------------------------------ SOFTMAX int16
 * qsim.kernels.activations.eval_softmax16 / fixedpoint.int16_lut_lookup. */

/* TFLite's interpolating int16 table lookup: entry 256 + (v >> 7) plus (slope * (v & 127) + 64) >> 7,
 * the sum wrapped to int16. */
static int32_t qk_lut16_lookup(const int16_t *lut, int32_t v)
{
    const int32_t index = (v + 32768) >> 7; /* = 256 + floor(v / 128), v in int16 */
    const int32_t base = lut[index];
    const int32_t delta = (int32_t)qk_asr64((int64_t)(lut[index + 1] - base) * (int32_t)((uint32_t)v & 0x7Fu) + 64, 7);
    return (int16_t)(uint16_t)(uint32_t)(base + delta);
}

void qk_softmax_s16(const qk_softmax16_params *p, const int16_t *exp_lut, const int16_t *reciprocal_lut,
                    const int16_t *input, int16_t *output)
{
    int32_t o, i;
    for (o = 0; o < p->outer; ++o, input += p->depth, output += p->depth) {
        int32_t max = QK_S16_MIN, clz = 0, right, recip;
        uint32_t total = 0;
        int64_t shifted;
        for (i = 0; i < p->depth; ++i) {
            max = input[i] > max ? input[i] : max;
        }
        for (i = 0; i < p->depth; ++i) {
            const int32_t scaled = qk_mbqm(input[i] - max, p->input_multiplier, p->input_shift);
            const int32_t e = qk_lut16_lookup(exp_lut, qk_clamp64((int64_t)scaled + 32767, QK_S16_MIN, QK_S16_MAX));
            output[i] = (int16_t)e; /* the row's exps, kept in the output until the sum is known */
            total += (uint32_t)e;
        }
        /* the sum is in [1, 2^31): the maximum's exp alone is positive and rows are short enough (prepare) */
        while (clz < 32 && (total & (0x80000000u >> clz)) == 0) {
            ++clz;
        }
        shifted = (((int64_t)total << (clz - 1)) + (1 << 13)) >> 14;
        recip = qk_lut16_lookup(reciprocal_lut, qk_clamp64(shifted - (1 << 15) - (1 << 16), QK_S16_MIN, QK_S16_MAX));
        right = 31 - clz;
        for (i = 0; i < p->depth; ++i) {
            const int64_t y = qk_asr64((int64_t)output[i] * recip + ((int64_t)1 << (right - 1)), right);
            output[i] = (int16_t)qk_clamp64(y, 0, QK_S16_MAX);
        }
    }
}
