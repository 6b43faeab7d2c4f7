/* qkernels.c: portable C99 int8 kernels emitted by `qsim codegen` (see qkernels.h).
 *
 * Each kernel performs the arithmetic of TFLite Micro's reference int8 kernel
 * (tensorflow/lite/kernels/internal/reference/integer_ops/...): the same
 * int32 accumulation, the same MultiplyByQuantizedMultiplier rounding, the
 * same clamping.  Loop order differs where it makes the code faster; integer
 * sums are order independent, so the results are bit-identical.
 */
#include "qkernels.h"

#include <string.h>

/* GCC at -O2 only vectorizes loops whose trip count is a known multiple of the
 * vector width; these kernels' channel loops are not, so allow the dynamic
 * cost model here (GCC only; other compilers ignore this block). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#define QK_INT32_MIN (-2147483647 - 1)
#define QK_INT32_MAX 2147483647

static int32_t qk_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* Two's-complement left shift without signed-overflow UB (wraps like int32). */
static int32_t qk_shl_wrap(int32_t x, int s)
{
    return (int32_t)((uint32_t)x << s);
}

/* gemmlowp SaturatingRoundingDoublingHighMul: high 32 bits of 2*a*b, ties away from zero. */
static int32_t qk_srdhm_inline(int32_t a, int32_t b)
{
    int64_t ab, nudge;
    if (a == QK_INT32_MIN && b == QK_INT32_MIN) {
        return QK_INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? (int64_t)(1 << 30) : (int64_t)(1 - (1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* gemmlowp RoundingDivideByPOT: x / 2^exponent, ties away from zero (0 <= exponent <= 31). */
static int32_t qk_rdbpot_inline(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t qk_srdhm(int32_t a, int32_t b)
{
    return qk_srdhm_inline(a, b);
}

int32_t qk_rounding_divide_by_pot(int32_t x, int exponent)
{
    return qk_rdbpot_inline(x, exponent);
}

/* Arithmetic edges (one behaviour each, the same in qsim.fixedpoint and rtl/requant_lane.sv):
 * - shift: [-31, 31] double, [-31, 30] single (qsim.fixedpoint.SHIFT_RANGE); qsim refuses any
 *   other value at generation time, so the shifts below never reach 32 bits (undefined in C);
 * - single rounding: a result outside int32 saturates (TFLite only DCHECKs it: its release
 *   build truncates to int32, a wrong sign/size; a hardware requantizer saturates);
 * - acc + bias and the double-rounding left shift wrap like int32 (through uint32: defined);
 * - the zero-point add before the activation clamp is done in 64 bits (never wraps). */
#if defined(QK_SINGLE_ROUNDING)
/* TFLITE_SINGLE_ROUNDING MultiplyByQuantizedMultiplier: one rounding, half up, saturated to int32. */
static int32_t qk_mbqm_inline(int32_t x, int32_t multiplier, int shift)
{
    const int total_shift = 31 - shift;
    const int64_t round = (int64_t)1 << (total_shift - 1);
    const int64_t result = ((int64_t)x * (int64_t)multiplier + round) >> total_shift;
    return result > QK_INT32_MAX ? QK_INT32_MAX : (result < QK_INT32_MIN ? QK_INT32_MIN : (int32_t)result);
}
#else
/* TFLite's classic MultiplyByQuantizedMultiplier: left shift, SRDHM, rounding right shift. */
static int32_t qk_mbqm_inline(int32_t x, int32_t multiplier, int shift)
{
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    return qk_rdbpot_inline(qk_srdhm_inline(qk_shl_wrap(x, left), multiplier), right);
}
#endif

int32_t qk_mbqm(int32_t x, int32_t multiplier, int shift)
{
    return qk_mbqm_inline(x, multiplier, shift);
}

/* clamp(v + output_offset, act_min, act_max) with the add in 64 bits: v may be near INT32_MAX. */
static int8_t qk_offset_clamp(int32_t v, int32_t output_offset, int32_t act_min, int32_t act_max)
{
    const int64_t w = (int64_t)v + output_offset;
    return (int8_t)(w < act_min ? act_min : (w > act_max ? act_max : w));
}

/* acc + bias wrapping like int32 (the conversion back from uint32 is modular on every C
 * compiler qsim targets; plain signed addition would be undefined on overflow). */
static int32_t qk_add_wrap(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

static int8_t qk_requant_inline(int32_t acc, int32_t bias, int32_t multiplier, int shift,
                                int32_t output_offset, int32_t act_min, int32_t act_max)
{
    return qk_offset_clamp(qk_mbqm_inline(qk_add_wrap(acc, bias), multiplier, shift), output_offset,
                           act_min, act_max);
}

int8_t qk_requantize(int32_t acc, int32_t bias, int32_t multiplier, int shift, int32_t output_offset,
                     int32_t act_min, int32_t act_max)
{
    return qk_requant_inline(acc, bias, multiplier, shift, output_offset, act_min, act_max);
}

/* Output channel ch of a GEMM op: add its bias (if any), requantize with its table entries. */
static int8_t qk_requant_channel(int32_t acc, const int32_t *bias, const int32_t *multiplier,
                                 const int8_t *shift, int32_t ch, int32_t output_offset,
                                 int32_t act_min, int32_t act_max)
{
    return qk_requant_inline(acc, bias != NULL ? bias[ch] : 0, multiplier[ch], shift[ch], output_offset,
                             act_min, act_max);
}

/* ------------------------------------------------------------------ CONV_2D */

static void qk_conv_patch(const qk_conv_params *p, const int8_t *input, int32_t b, int32_t oy,
                          int32_t ox, int16_t *patch)
{
    const int32_t in_c = p->in_c;
    int32_t ky, kx, c;
    for (ky = 0; ky < p->k_h; ++ky) {
        const int32_t iy = oy * p->stride_h - p->pad_h + ky * p->dil_h;
        for (kx = 0; kx < p->k_w; ++kx) {
            const int32_t ix = ox * p->stride_w - p->pad_w + kx * p->dil_w;
            if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) {
                for (c = 0; c < in_c; ++c) {
                    patch[c] = 0; /* outside the image: TFLM skips the tap */
                }
            } else {
                const int8_t *src = input + (((size_t)b * p->in_h + iy) * p->in_w + ix) * in_c;
                for (c = 0; c < in_c; ++c) {
                    patch[c] = (int16_t)(src[c] + p->input_offset);
                }
            }
            patch += in_c;
        }
    }
}

static int32_t qk_dot(const int8_t *w, const int16_t *x, int32_t n)
{
    int32_t acc = 0;
    int32_t k;
    for (k = 0; k < n; ++k) {
        acc += (int32_t)w[k] * x[k];
    }
    return acc;
}

/* Four pixels x two output channels: acc[j][c] = dot(filter row oc + c, patch j). */
static void qk_tile4x2(const int8_t *w0, const int8_t *w1, const int16_t *x, int32_t depth, int32_t acc[4][2])
{
    const int16_t *x0 = x, *x1 = x + depth, *x2 = x + 2 * depth, *x3 = x + 3 * depth;
    int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0, a20 = 0, a21 = 0, a30 = 0, a31 = 0;
    int32_t k;
    for (k = 0; k < depth; ++k) {
        const int32_t f0 = w0[k], f1 = w1[k];
        const int32_t v0 = x0[k], v1 = x1[k], v2 = x2[k], v3 = x3[k];
        a00 += f0 * v0;
        a01 += f1 * v0;
        a10 += f0 * v1;
        a11 += f1 * v1;
        a20 += f0 * v2;
        a21 += f1 * v2;
        a30 += f0 * v3;
        a31 += f1 * v3;
    }
    acc[0][0] = a00;
    acc[0][1] = a01;
    acc[1][0] = a10;
    acc[1][1] = a11;
    acc[2][0] = a20;
    acc[2][1] = a21;
    acc[3][0] = a30;
    acc[3][1] = a31;
}

static int8_t qk_conv_out(const qk_conv_params *p, int32_t acc, const int32_t *bias, const int32_t *multiplier,
                          const int8_t *shift, int32_t oc)
{
    return qk_requant_channel(acc, bias, multiplier, shift, oc, p->output_offset, p->act_min, p->act_max);
}

/* Output pixels p0 .. p0 + n - 1 (row-major within one image) from their patches in scratch. */
static void qk_conv_pixels(const qk_conv_params *p, int32_t n, const int8_t *filter, const int32_t *bias,
                           const int32_t *multiplier, const int8_t *shift, int8_t *out, const int16_t *patches)
{
    const int32_t depth = p->k_h * p->k_w * p->in_c;
    const int32_t out_c = p->out_c;
    int32_t oc = 0, j;
    if (n == QK_CONV_TILE) {
        for (; oc + 2 <= out_c; oc += 2) {
            int32_t acc[4][2];
            qk_tile4x2(filter + (size_t)oc * depth, filter + (size_t)(oc + 1) * depth, patches, depth, acc);
            for (j = 0; j < 4; ++j) {
                out[j * out_c + oc] = qk_conv_out(p, acc[j][0], bias, multiplier, shift, oc);
                out[j * out_c + oc + 1] = qk_conv_out(p, acc[j][1], bias, multiplier, shift, oc + 1);
            }
        }
    }
    for (; oc < out_c; ++oc) {
        for (j = 0; j < n; ++j) {
            const int32_t acc = qk_dot(filter + (size_t)oc * depth, patches + (size_t)j * depth, depth);
            out[j * out_c + oc] = qk_conv_out(p, acc, bias, multiplier, shift, oc);
        }
    }
}

void qk_conv2d(const qk_conv_params *p, const int8_t *input, const int8_t *filter,
               const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
               int8_t *output, int16_t *scratch)
{
    const int32_t depth = p->k_h * p->k_w * p->in_c;
    const int32_t npix = p->out_h * p->out_w;
    int32_t b, p0, j;
    for (b = 0; b < p->batches; ++b) {
        for (p0 = 0; p0 < npix; p0 += QK_CONV_TILE) {
            const int32_t n = npix - p0 < QK_CONV_TILE ? npix - p0 : QK_CONV_TILE;
            /* All reads of the tile happen before any of its writes (in-place planning relies on it). */
            for (j = 0; j < n; ++j) {
                qk_conv_patch(p, input, b, (p0 + j) / p->out_w, (p0 + j) % p->out_w, scratch + (size_t)j * depth);
            }
            qk_conv_pixels(p, n, filter, bias, multiplier, shift,
                           output + ((size_t)b * npix + p0) * p->out_c, scratch);
        }
    }
}

/* -------------------------------------------------------- DEPTHWISE_CONV_2D */

static void qk_dw_tap(const qk_dwconv_params *p, const int8_t *restrict src, const int8_t *restrict w,
                      int32_t *restrict acc)
{
    const int32_t dm = p->depth_multiplier;
    int32_t c, m;
    const int32_t offset = p->input_offset, in_c = p->in_c;
    if (dm == 1) {
        for (c = 0; c < in_c; ++c) {
            acc[c] += (int32_t)w[c] * (src[c] + offset);
        }
        return;
    }
    for (c = 0; c < in_c; ++c) {
        const int32_t v = src[c] + offset;
        for (m = 0; m < dm; ++m) {
            acc[c * dm + m] += (int32_t)w[c * dm + m] * v;
        }
    }
}

/* Few output channels (e.g. one input channel times a depth multiplier): the filter
 * is stored channel-major ([out_c][kh][kw], p->channel_major) and each output is one
 * dot product over the pixel's zero-padded, offset window of its input channel. */
static void qk_dw_few_channels(const qk_dwconv_params *p, const int8_t *input, const int8_t *filter,
                               int32_t b, int32_t oy, int32_t ox, int32_t *acc, int16_t *patch)
{
    const int32_t taps = p->k_h * p->k_w;
    int32_t ky, kx, c, oc;
    for (c = 0; c < p->in_c; ++c) {
        int16_t *pc = patch + (size_t)c * taps;
        for (ky = 0; ky < p->k_h; ++ky) {
            const int32_t iy = oy * p->stride_h - p->pad_h + ky * p->dil_h;
            for (kx = 0; kx < p->k_w; ++kx) {
                const int32_t ix = ox * p->stride_w - p->pad_w + kx * p->dil_w;
                pc[ky * p->k_w + kx] = (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) ? 0 :
                    (int16_t)(input[(((size_t)b * p->in_h + iy) * p->in_w + ix) * p->in_c + c] + p->input_offset);
            }
        }
    }
    for (oc = 0; oc < p->out_c; ++oc) {
        acc[oc] = qk_dot(filter + (size_t)oc * taps, patch + (size_t)(oc / p->depth_multiplier) * taps, taps);
    }
}

void qk_depthwise_conv2d(const qk_dwconv_params *p, const int8_t *input, const int8_t *filter,
                         const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                         int8_t *output, int32_t *scratch)
{
    const int few_channels = p->channel_major;
    int32_t b, oy, ox, ky, kx, oc;
    for (b = 0; b < p->batches; ++b) {
        for (oy = 0; oy < p->out_h; ++oy) {
            for (ox = 0; ox < p->out_w; ++ox) {
                int8_t *out = output + (((size_t)b * p->out_h + oy) * p->out_w + ox) * p->out_c;
                if (few_channels) {
                    qk_dw_few_channels(p, input, filter, b, oy, ox, scratch, (int16_t *)(scratch + p->out_c));
                } else {
                    for (oc = 0; oc < p->out_c; ++oc) {
                        scratch[oc] = 0;
                    }
                    for (ky = 0; ky < p->k_h; ++ky) {
                        const int32_t iy = oy * p->stride_h - p->pad_h + ky * p->dil_h;
                        if (iy < 0 || iy >= p->in_h) {
                            continue;
                        }
                        for (kx = 0; kx < p->k_w; ++kx) {
                            const int32_t ix = ox * p->stride_w - p->pad_w + kx * p->dil_w;
                            if (ix < 0 || ix >= p->in_w) {
                                continue;
                            }
                            qk_dw_tap(p, input + (((size_t)b * p->in_h + iy) * p->in_w + ix) * p->in_c,
                                      filter + ((size_t)ky * p->k_w + kx) * p->out_c, scratch);
                        }
                    }
                }
                /* every read of this pixel's window is done: now write it (in-place planning relies on it) */
                for (oc = 0; oc < p->out_c; ++oc) {
                    out[oc] = qk_requant_channel(scratch[oc], bias, multiplier, shift, oc, p->output_offset,
                                                 p->act_min, p->act_max);
                }
            }
        }
    }
}

/* ---------------------------------------------------------- FULLY_CONNECTED */

/* sum_i w[i] * (x[i] + input_offset) computed as sum(w*x) + input_offset * sum(w):
 * the same int32 value (integer sums are exact), with 8-bit products the
 * vectorizer handles well. */
static int32_t qk_fc_dot(const int8_t *restrict w, const int8_t *restrict x, int32_t n, int32_t input_offset)
{
    int32_t acc = 0, wsum = 0;
    int32_t i;
    for (i = 0; i < n; ++i) {
        acc += (int32_t)w[i] * x[i];
        wsum += w[i];
    }
    return acc + input_offset * wsum;
}

void qk_fully_connected(const qk_fc_params *p, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                        int8_t *output)
{
    int32_t b, o, i;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = input + (size_t)b * p->in_units;
        for (o = 0; o < p->out_units; ++o) {
            const int8_t *w = filter + (size_t)o * p->in_units;
            int32_t acc;
            if (p->filter_offset == 0) {
                acc = qk_fc_dot(w, x, p->in_units, p->input_offset);
            } else {
                acc = 0;
                for (i = 0; i < p->in_units; ++i) {
                    acc += (w[i] + p->filter_offset) * (x[i] + p->input_offset);
                }
            }
            output[(size_t)b * p->out_units + o] =
                qk_requant_channel(acc, bias, multiplier, shift, o, p->output_offset, p->act_min, p->act_max);
        }
    }
}

/* ----------------------------------------------------------------- POOLING */

static int32_t qk_max_i32(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

static int32_t qk_min_i32(int32_t a, int32_t b)
{
    return a < b ? a : b;
}

static void qk_pool(const qk_pool_params *p, const int8_t *input, int8_t *output, int is_max)
{
    int32_t b, oy, ox, c, fy, fx;
    for (b = 0; b < p->batches; ++b) {
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_h;
            const int32_t fy0 = qk_max_i32(0, -y0);
            const int32_t fy1 = qk_min_i32(p->filter_h, p->in_h - y0);
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_w;
                const int32_t fx0 = qk_max_i32(0, -x0);
                const int32_t fx1 = qk_min_i32(p->filter_w, p->in_w - x0);
                int8_t *out = output + (((size_t)b * p->out_h + oy) * p->out_w + ox) * p->channels;
                for (c = 0; c < p->channels; ++c) {
                    int32_t acc = is_max ? -128 : 0;
                    int32_t count = 0;
                    for (fy = fy0; fy < fy1; ++fy) {
                        for (fx = fx0; fx < fx1; ++fx) {
                            const int32_t v = input[(((size_t)b * p->in_h + y0 + fy) * p->in_w + x0 + fx)
                                                    * p->channels + c];
                            acc = is_max ? qk_max_i32(acc, v) : acc + v;
                            ++count;
                        }
                    }
                    if (!is_max && count > 0) {
                        /* TFLite's rounding average: half away from zero. */
                        acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    }
                    out[c] = (int8_t)qk_clamp(acc, p->act_min, p->act_max);
                }
            }
        }
    }
}

void qk_average_pool2d(const qk_pool_params *p, const int8_t *input, int8_t *output)
{
    qk_pool(p, input, output, 0);
}

void qk_max_pool2d(const qk_pool_params *p, const int8_t *input, int8_t *output)
{
    qk_pool(p, input, output, 1);
}

/* ------------------------------------------------------------ ADD / SUB / MUL */

/* One output row of a broadcasting binary op: out[i] = f(a[i * sa], b[i * sb]), i < n
 * (each element's two reads come before its write: in-place planning relies on it). */
typedef void (*qk_binary_row)(const void *params, const int8_t *a, int32_t sa, const int8_t *b, int32_t sb,
                              int8_t *out, int32_t n);

/* The 4-D broadcast walk shared by ADD/SUB, MUL and MAXIMUM/MINIMUM: out_dims[0..2] rows of
 * out_dims[3] elements, each input advancing by its own element strides (0: broadcast). */
static void qk_broadcast4(const qk_broadcast_shape *shape, const int8_t *in1, const int8_t *in2, int8_t *output,
                          qk_binary_row row, const void *params)
{
    const int32_t *d = shape->out_dims, *s1 = shape->in1_strides, *s2 = shape->in2_strides;
    int32_t i0, i1, i2;
    for (i0 = 0; i0 < d[0]; ++i0) {
        for (i1 = 0; i1 < d[1]; ++i1) {
            for (i2 = 0; i2 < d[2]; ++i2) {
                row(params, in1 + i0 * s1[0] + i1 * s1[1] + i2 * s1[2], s1[3],
                    in2 + i0 * s2[0] + i1 * s2[1] + i2 * s2[2], s2[3], output, d[3]);
                output += d[3];
            }
        }
    }
}

static int8_t qk_add_one(const qk_add_params *p, int32_t a, int32_t b)
{
    const int32_t x1 = qk_shl_wrap(p->input1_offset + a, p->left_shift);
    const int32_t x2 = qk_shl_wrap(p->input2_offset + b, p->left_shift);
    const int32_t s1 = qk_mbqm(x1, p->input1_multiplier, p->input1_shift);
    const int32_t s2 = qk_mbqm(x2, p->input2_multiplier, p->input2_shift);
    const int32_t raw = qk_mbqm(p->sign >= 0 ? s1 + s2 : s1 - s2, p->output_multiplier, p->output_shift);
    return qk_offset_clamp(raw, p->output_offset, p->act_min, p->act_max);
}

static void qk_add_row(const void *params, const int8_t *a, int32_t sa, const int8_t *b, int32_t sb,
                       int8_t *out, int32_t n)
{
    const qk_add_params *p = (const qk_add_params *)params;
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = qk_add_one(p, a[i * sa], b[i * sb]);
    }
}

void qk_add(const qk_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *output)
{
    qk_broadcast4(&p->shape, in1, in2, output, qk_add_row, p);
}

static void qk_mul_row(const void *params, const int8_t *a, int32_t sa, const int8_t *b, int32_t sb,
                       int8_t *out, int32_t n)
{
    const qk_mul_params *p = (const qk_mul_params *)params;
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t prod = (p->input1_offset + a[i * sa]) * (p->input2_offset + b[i * sb]);
        const int32_t raw = qk_mbqm(prod, p->output_multiplier, p->output_shift);
        out[i] = qk_offset_clamp(raw, p->output_offset, p->act_min, p->act_max);
    }
}

void qk_mul(const qk_mul_params *p, const int8_t *in1, const int8_t *in2, int8_t *output)
{
    qk_broadcast4(&p->shape, in1, in2, output, qk_mul_row, p);
}

static void qk_minmax_row(const void *params, const int8_t *a, int32_t sa, const int8_t *b, int32_t sb,
                          int8_t *out, int32_t n)
{
    const int take_max = ((const qk_minmax_params *)params)->take_max != 0;
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int8_t x = a[i * sa], y = b[i * sb];
        out[i] = take_max ? (x > y ? x : y) : (x < y ? x : y);
    }
}

void qk_minmax(const qk_minmax_params *p, const int8_t *in1, const int8_t *in2, int8_t *output)
{
    qk_broadcast4(&p->shape, in1, in2, output, qk_minmax_row, p);
}

void qk_gather(const qk_gather_params *p, const int8_t *input, int8_t *output)
{
    int32_t i0, i1, i2, i3;
    const int32_t *d = p->out_dims, *s = p->in_strides;
    for (i0 = 0; i0 < d[0]; ++i0) {
        for (i1 = 0; i1 < d[1]; ++i1) {
            for (i2 = 0; i2 < d[2]; ++i2) {
                /* signed offsets: a reversed slice walks backwards (every index formed is in bounds) */
                const int8_t *src = input + p->in_offset + (ptrdiff_t)i0 * s[0] + (ptrdiff_t)i1 * s[1]
                                    + (ptrdiff_t)i2 * s[2];
                for (i3 = 0; i3 < d[3]; ++i3) {
                    *output++ = src[(ptrdiff_t)i3 * s[3]];
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ SOFTMAX
 * gemmlowp fixed point on int32 raw values.  F<n> means n integer bits. */

/* SaturatingRoundingMultiplyByPOT<e> for e > 0: saturating left shift. */
static int32_t qk_sat_shl(int32_t x, int e)
{
    const int32_t threshold = (int32_t)(((uint32_t)1 << (31 - e)) - 1);
    if (x > threshold) {
        return QK_INT32_MAX;
    }
    if (x < -threshold) {
        return QK_INT32_MIN;
    }
    return qk_shl_wrap(x, e);
}

/* exp(a) for a in [-1/4, 0), F0 in and out (Taylor series around -1/8). */
static int32_t qk_exp_quarter(int32_t a)
{
    const int32_t constant_term = 1895147668;  /* exp(-1/8) */
    const int32_t one_third = 715827883;
    const int32_t x = a + (1 << 28);
    const int32_t x2 = qk_srdhm(x, x);
    const int32_t x3 = qk_srdhm(x2, x);
    const int32_t x4 = qk_srdhm(x2, x2);
    const int32_t x4_over_4 = qk_rounding_divide_by_pot(x4, 2);
    const int32_t poly = qk_rounding_divide_by_pot(qk_srdhm(x4_over_4 + x3, one_third) + x2, 1);
    return constant_term + qk_srdhm(constant_term, x + poly);
}

/* exp(a) for a <= 0: a is F5 (26 fractional bits), result F0. */
static int32_t qk_exp_on_negative_values(int32_t a)
{
    static const int32_t barrel[7] = {1672461947, 1302514674, 790015084, 290630308,
                                      39332535, 720401, 242};
    const int32_t one_quarter = 1 << 24;
    const int32_t a_mod_minus_quarter = (a & (one_quarter - 1)) - one_quarter;
    const int32_t remainder = a_mod_minus_quarter - a;
    int32_t result = qk_exp_quarter(qk_sat_shl(a_mod_minus_quarter, 5));
    int k;
    for (k = 0; k < 7; ++k) {
        if (remainder & ((int32_t)1 << (24 + k))) { /* bit 26 + exponent, exponent = -2..4 */
            result = qk_srdhm(result, barrel[k]);
        }
    }
    return a == 0 ? QK_INT32_MAX : result;
}

/* 1 / (1 + a) for a in [0, 1): F0 in, F0 out (Newton-Raphson, 3 steps). */
static int32_t qk_one_over_one_plus_x(int32_t a)
{
    const int64_t sum = (int64_t)a + QK_INT32_MAX;
    const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    int32_t x = 1515870810 + qk_srdhm(half_denominator, -1010580540); /* 48/17 - 32/17 d, F2 */
    int i;
    for (i = 0; i < 3; ++i) {
        const int32_t one_minus = (1 << 29) - qk_srdhm(half_denominator, x);
        x = x + qk_sat_shl(qk_srdhm(x, one_minus), 2);
    }
    return qk_sat_shl(x, 1);
}

static int qk_clz32(uint32_t x)
{
    int n = 0;
    if (x == 0) {
        return 32;
    }
    while ((x & 0x80000000u) == 0) {
        x <<= 1;
        ++n;
    }
    return n;
}

void qk_softmax(const qk_softmax_params *p, const int8_t *input, int8_t *output)
{
    int32_t i, c;
    for (i = 0; i < p->outer; ++i) {
        const int8_t *x = input + (size_t)i * p->depth;
        int8_t *y = output + (size_t)i * p->depth;
        int32_t max_in_row = -128, sum_of_exps = 0, shifted_scale;
        int headroom_plus_one, num_bits_over_unit;
        for (c = 0; c < p->depth; ++c) {
            max_in_row = qk_max_i32(max_in_row, x[c]);
        }
        for (c = 0; c < p->depth; ++c) {
            const int32_t diff = x[c] - max_in_row;
            if (diff >= p->diff_min) {
                const int32_t scaled = qk_mbqm(diff, p->input_multiplier, p->input_left_shift);
                sum_of_exps += qk_rounding_divide_by_pot(qk_exp_on_negative_values(scaled), 12);
            }
        }
        headroom_plus_one = qk_clz32((uint32_t)sum_of_exps);
        num_bits_over_unit = 12 - headroom_plus_one;
        shifted_scale = qk_one_over_one_plus_x(
            (int32_t)(((uint32_t)sum_of_exps << headroom_plus_one) - 0x80000000u));
        for (c = 0; c < p->depth; ++c) {
            const int32_t diff = x[c] - max_in_row;
            if (diff >= p->diff_min) {
                const int32_t scaled = qk_mbqm(diff, p->input_multiplier, p->input_left_shift);
                const int32_t e = qk_exp_on_negative_values(scaled);
                const int32_t unsat = qk_rounding_divide_by_pot(qk_srdhm(shifted_scale, e),
                                                                num_bits_over_unit + 31 - 8);
                y[c] = (int8_t)qk_clamp(unsat - 128, -128, 127);
            } else {
                y[c] = -128;
            }
        }
    }
}

void qk_mean(const qk_mean_params *p, const int8_t *input, int8_t *output, int32_t *scratch)
{
    const int32_t *d = p->in_dims, *r = p->reduce;
    const int32_t od1 = r[1] ? 1 : d[1], od2 = r[2] ? 1 : d[2], od3 = r[3] ? 1 : d[3];
    int32_t i0, i1, i2, i3, o;
    size_t idx = 0;
    for (o = 0; o < p->out_size; ++o) {
        scratch[o] = 0;
    }
    for (i0 = 0; i0 < d[0]; ++i0) {
        for (i1 = 0; i1 < d[1]; ++i1) {
            for (i2 = 0; i2 < d[2]; ++i2) {
                const int32_t base = (((r[0] ? 0 : i0) * od1 + (r[1] ? 0 : i1)) * od2 + (r[2] ? 0 : i2)) * od3;
                for (i3 = 0; i3 < d[3]; ++i3) {
                    scratch[base + (r[3] ? 0 : i3)] += input[idx++];
                }
            }
        }
    }
    for (o = 0; o < p->out_size; ++o) {
        /* sum - zp * count wraps like int32, as the reference's int32 arithmetic does */
        const int32_t shifted = (int32_t)((uint32_t)scratch[o] - (uint32_t)p->input_zero_point * (uint32_t)p->count);
        output[o] = qk_offset_clamp(qk_mbqm_inline(shifted, p->multiplier, p->shift), p->output_zero_point,
                                    -128, 127);
    }
}

void qk_pad(const qk_pad_params *p, const int8_t *input, int8_t *output)
{
    const int32_t *id = p->in_dims, *od = p->out_dims, *b = p->before;
    int32_t o0, o1, o2, o3;
    for (o0 = 0; o0 < od[0]; ++o0) {
        const int32_t i0 = o0 - b[0];
        for (o1 = 0; o1 < od[1]; ++o1) {
            const int32_t i1 = o1 - b[1];
            for (o2 = 0; o2 < od[2]; ++o2) {
                const int32_t i2 = o2 - b[2];
                const int row_in = i0 >= 0 && i0 < id[0] && i1 >= 0 && i1 < id[1] && i2 >= 0 && i2 < id[2];
                for (o3 = 0; o3 < od[3]; ++o3) {
                    const int32_t i3 = o3 - b[3];
                    *output++ = (row_in && i3 >= 0 && i3 < id[3])
                        ? input[(((size_t)i0 * id[1] + i1) * id[2] + i2) * id[3] + i3]
                        : (int8_t)p->value;
                }
            }
        }
    }
}

void qk_concat_part(const int8_t *input, int8_t *output, int32_t outer, int32_t inner, int32_t out_inner)
{
    int32_t o;
    for (o = 0; o < outer; ++o) {
        memcpy(output + (size_t)o * out_inner, input + (size_t)o * inner, (size_t)inner);
    }
}

void qk_lut(const int8_t *lut, const int8_t *input, int8_t *output, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        output[i] = lut[input[i] + 128];
    }
}

void qk_copy(const int8_t *input, int8_t *output, int32_t n)
{
    if (input != output) {
        memmove(output, input, (size_t)n);
    }
}
