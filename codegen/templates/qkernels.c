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

/* x86-64 hosts (SSE2 is part of the x86-64 base): a few hot loops (SVDF, the LSTM host form) use its
 * 128-bit integer instructions; every other target compiles the portable (or Cortex-M DSP) loops. */
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* GCC at -O2 only vectorizes loops whose trip count is a known multiple of the
 * vector width; these kernels' channel loops are not, so allow the dynamic
 * cost model here (GCC only; other compilers ignore this block). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#if defined(__GNUC__)
#define QK_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define QK_ALWAYS_INLINE inline
#endif
#if defined(__GNUC__)
#define QK_LIKELY(c) __builtin_expect(!!(c), 1)
#else
#define QK_LIKELY(c) (c)
#endif
#if defined(__GNUC__) && !defined(__clang__)
#define QK_UNROLL _Pragma("GCC unroll 8")
#else
#define QK_UNROLL
#endif

#if defined(__GNUC__)
#define QK_NOINLINE __attribute__((noinline))
#else
#define QK_NOINLINE
#endif

/* QK_COLD: run rarely (once per inference, edge pixels, rare shifts): optimized for size. */
#if defined(__GNUC__)
#define QK_COLD __attribute__((cold))
#else
#define QK_COLD
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

/* gemmlowp SaturatingRoundingDoublingHighMul: (a*b + nudge) / 2^31 truncated toward zero, nudge
 * 2^30 when a*b >= 0 and 1 - 2^30 below.  Computed as floor((a*b + 2^30) / 2^31), the same value
 * for every input: for a*b >= 0 the numerator is the same and non-negative; for a*b < 0 the
 * truncation of the negative v = a*b + 1 - 2^30 is floor((v + 2^31 - 1) / 2^31), and
 * v + 2^31 - 1 = a*b + 2^30.  (One SMULL, an add and a shift on Cortex-M.) */
static QK_ALWAYS_INLINE int32_t qk_srdhm_inline(int32_t a, int32_t b)
{
    if (a == QK_INT32_MIN && b == QK_INT32_MIN) {
        return QK_INT32_MAX;
    }
    return (int32_t)(((int64_t)a * (int64_t)b + ((int64_t)1 << 30)) >> 31);
}

/* gemmlowp RoundingDivideByPOT: x / 2^exponent, ties away from zero (0 <= exponent <= 31). */
static QK_ALWAYS_INLINE int32_t qk_rdbpot_inline(int32_t x, int exponent)
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
static QK_ALWAYS_INLINE int32_t qk_mbqm_inline(int32_t x, int32_t multiplier, int shift)
{
    const int total_shift = 31 - shift;
    const int64_t round = (int64_t)1 << (total_shift - 1);
    const int64_t result = ((int64_t)x * (int64_t)multiplier + round) >> total_shift;
    return result > QK_INT32_MAX ? QK_INT32_MAX : (result < QK_INT32_MIN ? QK_INT32_MIN : (int32_t)result);
}
#else
/* TFLite's classic MultiplyByQuantizedMultiplier: left shift, SRDHM, rounding right shift. */
static QK_ALWAYS_INLINE int32_t qk_mbqm_inline(int32_t x, int32_t multiplier, int shift)
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

/* clamp(v + output_offset, act_min, act_max) without an add that could wrap (v may be near
 * INT32_MAX): v is clamped to [act_min - output_offset, act_max - output_offset] first (bounds
 * within +-255: the offset and the range are int8), the same integers as the clamp of the
 * exact sum. */
static QK_ALWAYS_INLINE int8_t qk_offset_clamp(int32_t v, int32_t output_offset, int32_t act_min, int32_t act_max)
{
    const int32_t lo = act_min - output_offset, hi = act_max - output_offset;
    return (int8_t)((v < lo ? lo : (v > hi ? hi : v)) + output_offset);
}

/* acc + bias wrapping like int32 (the conversion back from uint32 is modular on every C
 * compiler qsim targets; plain signed addition would be undefined on overflow). */
static int32_t qk_add_wrap(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

static QK_ALWAYS_INLINE int8_t qk_requant_inline(int32_t acc, int32_t bias, int32_t multiplier, int shift,
                                int32_t output_offset, int32_t act_min, int32_t act_max)
{
    return qk_offset_clamp(qk_mbqm_inline(qk_add_wrap(acc, bias), multiplier, shift), output_offset,
                           act_min, act_max);
}

/* The same result for a right shift of at least 2 (shift <= -2, e = -shift) and a multiplier >= 0
 * (every table qsim generates: QuantizeMultiplier's M0 is in [0, 2^31)), in one SMLAL and a few
 * ALU instructions instead of the three stages.  Derivation (double rounding), for x = acc + bias:
 * s = SRDHM(x, m) = floor((x*m + 2^30) / 2^31) and RoundingDivideByPOT(s, e) =
 * floor((s + 2^(e-1) - [s < 0]) / 2^e).  With m >= 0, s < 0 only when x < 0, and x < 0 with s >= 0
 * means s = 0, which rounds to 0 with either correction; so [s < 0] may be read as [x < 0].
 * Folding the two floors (floor((floor(a / b) + c) / d) = floor((a + c*b) / (b*d)) for integer c):
 *   result = floor((z + 2^(30+e)) / 2^(31+e)),  z = x*m + 2^30 - [x < 0]*2^31 = x*m + (x < 0 ? -2^30 : 2^30),
 *          = (hi + 2^(e-2)) >> (e-1),           hi = floor(z / 2^32), the SMLAL's high word (e >= 2).
 * Single rounding (TFLITE_SINGLE_ROUNDING) is floor((x*m + 2^(30+e)) / 2^(31+e)): the same with z = x*m
 * (|x*m| < 2^62, so it never saturates).  |hi| <= 2^30 + 1: no add here overflows. */
static QK_ALWAYS_INLINE int32_t qk_mbqm_right2(int32_t x, int32_t multiplier, int e)
{
#if defined(QK_SINGLE_ROUNDING)
    const int64_t z = (int64_t)x * multiplier;
#else
    /* x < 0 ? -2^30 : 2^30 without a branch: the sign bit over 2^30 (one ORR, shifted operand) */
    const int32_t nudge = (int32_t)(((uint32_t)x & 0x80000000u) | 0x40000000u);
    const int64_t z = (int64_t)nudge + (int64_t)x * multiplier;
#endif
    const int32_t hi = (int32_t)(z >> 32);
    return (hi + (((int32_t)1 << (e - 1)) >> 1)) >> (e - 1); /* 2^(e-2) as (1 << (e-1)) >> 1: one shift count */
}

#define QK_FAST_SHIFT (-2) /* qk_mbqm_right2 applies to shifts <= this (with a multiplier >= 0) */

/* qk_requant_inline for shift <= QK_FAST_SHIFT and multiplier >= 0. */
static QK_ALWAYS_INLINE int8_t qk_requant_fast(int32_t acc, int32_t bias, int32_t multiplier, int shift,
                                               int32_t output_offset, int32_t act_min, int32_t act_max)
{
    return qk_offset_clamp(qk_mbqm_right2(qk_add_wrap(acc, bias), multiplier, -shift), output_offset, act_min,
                           act_max);
}

int8_t qk_requantize(int32_t acc, int32_t bias, int32_t multiplier, int shift, int32_t output_offset,
                     int32_t act_min, int32_t act_max)
{
    if (multiplier >= 0 && shift <= QK_FAST_SHIFT) {
        return qk_requant_fast(acc, bias, multiplier, shift, output_offset, act_min, act_max);
    }
    return qk_requant_inline(acc, bias, multiplier, shift, output_offset, act_min, act_max);
}

/* Output channel ch of a GEMM op, out of line and in the three stages (any shift): for the general
 * paths, the tails of the fast ones and the rare shifts > QK_FAST_SHIFT (keeps the code small). */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
QK_COLD static int8_t qk_requant_cold(int32_t acc, const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                              int32_t ch, int32_t output_offset, int32_t act_min, int32_t act_max)
{
    return qk_requant_inline(acc, bias[ch], multiplier[ch], shift[ch], output_offset, act_min, act_max);
}

/* The same inlined for the hot loops, with the one-multiply path for shifts <= QK_FAST_SHIFT (the GEMM
 * tables' multipliers are >= 0: codegen refuses others, so no sign test here); the rest through
 * qk_requant_cold. */
static QK_ALWAYS_INLINE int8_t qk_requant_channel(int32_t acc, const int32_t *bias, const int32_t *multiplier,
                                 const int8_t *shift, int32_t ch, int32_t output_offset,
                                 int32_t act_min, int32_t act_max)
{
    const int s = shift[ch];
    if (QK_LIKELY(s <= QK_FAST_SHIFT)) {
        return qk_requant_fast(acc, bias[ch], multiplier[ch], s, output_offset, act_min, act_max);
    }
    return qk_requant_cold(acc, bias, multiplier, shift, ch, output_offset, act_min, act_max);
}

/* Channel ch for two pixels (one load of its table entries): *out0 and *out1 from acc0 and acc1. */
static QK_ALWAYS_INLINE void qk_requant_channel2(int32_t acc0, int32_t acc1, const int32_t *bias,
                                                 const int32_t *multiplier, const int8_t *shift, int32_t ch,
                                                 int32_t output_offset, int32_t act_min, int32_t act_max,
                                                 int8_t *out0, int8_t *out1)
{
    const int s = shift[ch];
    if (QK_LIKELY(s <= QK_FAST_SHIFT)) {
        const int32_t b = bias[ch], m = multiplier[ch];
        *out0 = qk_requant_fast(acc0, b, m, s, output_offset, act_min, act_max);
        *out1 = qk_requant_fast(acc1, b, m, s, output_offset, act_min, act_max);
    } else {
        *out0 = qk_requant_cold(acc0, bias, multiplier, shift, ch, output_offset, act_min, act_max);
        *out1 = qk_requant_cold(acc1, bias, multiplier, shift, ch, output_offset, act_min, act_max);
    }
}

/* ------------------------------------------------- DSP extension (Cortex-M4/M7/M33)
 * With __ARM_FEATURE_DSP (and not -DQK_NO_DSP) the inner products use SMLAD: two 16x16
 * multiply-accumulates per instruction on int8 values sign-extended in pairs by SXTB16 (bytes
 * 0 and 2, then bytes 1 and 3 after a rotation by 8: every byte once, so the sum is the same).
 * Everywhere else the portable C loops below compute the same int32 sums. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && !defined(QK_NO_DSP)
#define QK_USE_DSP 1
#include <arm_acle.h>

/* Four int8 values as one word (an unaligned LDR on these cores). */
static int32_t qk_word(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* SXTB16 of the word rotated right by 8 (bytes 1 and 3), one instruction: GCC does not fold the
 * rotation into __sxtb16's operand by itself. */
static int32_t qk_sxtb16_ror8(int32_t v)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

/* SXTAB16 of a rotated-by-8 word: (a.lo + byte 1, a.hi + byte 3) as two int16 halves. */
static int32_t qk_sxtab16_ror8(int32_t a, int32_t v)
{
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(v));
    return r;
}
#else
#define QK_USE_DSP 0
#endif

/* sum_k a[k] * b[k] over n raw int8 values. */
static int32_t qk_dot_s8(const int8_t *a, const int8_t *b, int32_t n)
{
    int32_t acc = 0, k = n;
#if QK_USE_DSP
    for (; k >= 4; k -= 4, a += 4, b += 4) {
        const int32_t va = qk_word(a), vb = qk_word(b);
        acc = __smlad(__sxtb16(va), __sxtb16(vb), acc);
        acc = __smlad(qk_sxtb16_ror8(va), qk_sxtb16_ror8(vb), acc);
    }
#endif
    for (; k > 0; --k) {
        acc += (int32_t)*a++ * *b++;
    }
    return acc;
}

/* Two rows against one vector: acc[r] = sum_k wr[k] * x[k] (raw int8). */
static void qk_dot_2rows(const int8_t *w0, const int8_t *w1, const int8_t *x, int32_t n, int32_t acc[2])
{
    int32_t a0 = 0, a1 = 0, k = n;
#if QK_USE_DSP
    for (; k >= 4; k -= 4, w0 += 4, w1 += 4, x += 4) {
        const int32_t xv = qk_word(x), u = qk_word(w0), v = qk_word(w1);
        const int32_t xl = __sxtb16(xv), xh = qk_sxtb16_ror8(xv);
        a0 = __smlad(__sxtb16(u), xl, a0);
        a0 = __smlad(qk_sxtb16_ror8(u), xh, a0);
        a1 = __smlad(__sxtb16(v), xl, a1);
        a1 = __smlad(qk_sxtb16_ror8(v), xh, a1);
    }
#endif
    for (; k > 0; --k) {
        const int32_t xk = *x++;
        a0 += *w0++ * xk;
        a1 += *w1++ * xk;
    }
    acc[0] = a0;
    acc[1] = a1;
}

#if !QK_USE_DSP
/* Two rows against two vectors (the portable GEMM micro-kernel): rows w[0..n) and w[n..2n), vectors
 * x[0..n) and x[n..2n); acc = {w0.x0, w1.x0, w0.x1, w1.x1}. */
static void qk_dot_2x2(const int8_t *w, const int8_t *x, int32_t n, int32_t acc[4])
{
    int32_t a00 = 0, a10 = 0, a01 = 0, a11 = 0, k = n;
    for (; k > 0; --k, ++w, ++x) {
        const int32_t xa = x[0], xb = x[n], wa = w[0], wb = w[n];
        a00 += wa * xa;
        a01 += wa * xb;
        a10 += wb * xa;
        a11 += wb * xb;
    }
    acc[0] = a00;
    acc[1] = a10;
    acc[2] = a01;
    acc[3] = a11;
}
#endif

/* ------------------------------------------------------------------ CONV_2D
 * The input offset is folded into the bias at generation time (bias[oc] + input_offset *
 * sum of filter row oc, wrapped to int32), so the GEMM multiplies raw int8 values.  Taps outside
 * the image hold the input zero point (= -input_offset): w * zp + input_offset * w = 0, exactly
 * what TFLM's skipped tap contributes. */

/* n bytes from s to d (any alignment), inline: word copies (memcpy of 4: one LDR/STR where unaligned
 * access exists, bytes elsewhere) then the tail bytes.  For the short rows of the patches (a 3x3
 * filter row on few channels), where a call to memcpy costs more than the copy. */
static QK_ALWAYS_INLINE void qk_copy_short(int8_t *d, const int8_t *s, int32_t n)
{
    for (; n >= 4; n -= 4, d += 4, s += 4) {
        uint32_t v;
        memcpy(&v, s, 4);
        memcpy(d, &v, 4);
    }
    for (; n > 0; --n) {
        *d++ = *s++;
    }
}

/* Patch rows shorter than this are copied inline (qk_copy_short), longer ones with memcpy. */
#define QK_SHORT_ROW 32

/* The int8 patch of output pixel (oy, ox) of one image, [kh][kw][in_c] like the filter rows. */
static QK_ALWAYS_INLINE void qk_conv_patch(const qk_conv_params *p, const int8_t *image, int32_t oy, int32_t ox, int8_t *patch)
{
    /* the fields in locals: the int8 stores below may alias *p, so GCC would reload them */
    const int32_t in_c = p->in_c, k_h = p->k_h, k_w = p->k_w, row_bytes = k_w * in_c;
    const int32_t in_h = p->in_h, in_w = p->in_w, dil_h = p->dil_h, dil_w = p->dil_w;
    const size_t in_row = (size_t)in_w * in_c;
    const int zp = -p->input_offset;
    const int32_t ix0 = ox * p->stride_w - p->pad_w, iy0 = oy * p->stride_h - p->pad_h;
    const int row_inside = dil_w == 1 && ix0 >= 0 && ix0 + k_w <= in_w;
    int32_t ky, kx;
    for (ky = 0; ky < k_h; ++ky, patch += row_bytes) {
        const int32_t iy = iy0 + ky * dil_h;
        const int8_t *row = image + (size_t)iy * in_row;
        if (iy < 0 || iy >= in_h) {
            memset(patch, zp, (size_t)row_bytes);
        } else if (row_inside) { /* whole filter row inside */
            if (row_bytes < QK_SHORT_ROW) {
                qk_copy_short(patch, row + (size_t)ix0 * in_c, row_bytes);
            } else {
                memcpy(patch, row + (size_t)ix0 * in_c, (size_t)row_bytes);
            }
        } else {
            for (kx = 0; kx < k_w; ++kx) {
                const int32_t ix = ix0 + kx * dil_w;
                if (ix < 0 || ix >= in_w) {
                    memset(patch + kx * in_c, zp, (size_t)in_c);
                } else {
                    memcpy(patch + kx * in_c, row + (size_t)ix * in_c, (size_t)in_c);
                }
            }
        }
    }
}

#if QK_USE_DSP
/* ------------------------------------------- CONV_2D GEMM with the DSP extension
 * QK_CONV_COLS pixel columns per tile, each expanded once to int16 (SXTB16) into the scratch, then
 * every output channel's filter row is streamed against all four: a row word is expanded once per
 * tile, the columns' words arrive ready (one LDM per two columns).  Layout of the expanded columns:
 * for each group of four taps g and column j, the two words (x[4g], x[4g+2]) and (x[4g+1], x[4g+3])
 * as int16 pairs (SXTB16 and SXTB16 ROR 8), the pairing of the expanded row word, so each SMLAD
 * meets matching taps.  When depth % 4 = r != 0 (and depth >= 4) a last group holds the column's
 * last four taps with the 4 - r already counted ones zeroed, and the row's last four bytes (inside
 * the row) meet it; with depth < 4 the one group holds taps 0..depth-1 and the rest zeros. */

/* One column c (depth int8 values) -> its words in the expanded tile (o = xs + 2 * column). */
static QK_ALWAYS_INLINE void qk_col_expand(const int8_t *c, int32_t depth, int32_t *o)
{
    const int32_t full = depth >> 2, rest = depth & 3;
    int32_t g;
    for (g = 0; g < full; ++g, c += 4, o += 2 * QK_CONV_COLS) {
        const int32_t v = qk_word(c);
        o[0] = __sxtb16(v);
        o[1] = qk_sxtb16_ror8(v);
    }
    if (rest > 0) {
        uint32_t v = 0;
        if (full > 0) {
            v = (uint32_t)qk_word(c + rest - 4) & (0xFFFFFFFFu << (8 * (4 - rest)));
        } else {
            memcpy(&v, c, (size_t)rest);
        }
        o[0] = __sxtb16((int32_t)v);
        o[1] = qk_sxtb16_ror8((int32_t)v);
    }
}

/* qk_col_expand out of line: for long columns (im2col patches of many taps), where the inline copy
 * costs the caller's loop registers. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void qk_col_expand_call(const int8_t *c, int32_t depth, int32_t *o)
{
    qk_col_expand(c, depth, o);
}

/* One group of four taps of one row against the four columns. */
#define QK_DOT_1X4_GROUP                                  \
    "ldr    %[wv], [%[w]], #4\n\t"                         \
    "sxtb16 %[wl], %[wv]\n\t"                              \
    "sxtb16 %[wv], %[wv], ror #8\n\t"                      \
    "ldm    %[x]!, {%[c0], %[c1], %[c2], %[c3]}\n\t"       \
    "smlad  %[a0], %[wl], %[c0], %[a0]\n\t"                \
    "smlad  %[a0], %[wv], %[c1], %[a0]\n\t"                \
    "smlad  %[a1], %[wl], %[c2], %[a1]\n\t"                \
    "smlad  %[a1], %[wv], %[c3], %[a1]\n\t"                \
    "ldm    %[x]!, {%[c0], %[c1], %[c2], %[c3]}\n\t"       \
    "smlad  %[a2], %[wl], %[c0], %[a2]\n\t"                \
    "smlad  %[a2], %[wv], %[c1], %[a2]\n\t"                \
    "smlad  %[a3], %[wl], %[c2], %[a3]\n\t"                \
    "smlad  %[a3], %[wv], %[c3], %[a3]\n\t"
#define QK_DOT_1X4_OPERANDS                                                                                    \
    [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [w] "+r"(w), [x] "+r"(xs), [wv] "=&r"(wv), \
        [wl] "=&r"(wl), [c0] "=&r"(c0), [c1] "=&r"(c1), [c2] "=&r"(c2), [c3] "=&r"(c3)

/* acc[j] += the taps of `groups` groups of row w against the expanded columns from xs (SMLAD wraps
 * like int32).  In assembly: GCC spills the same C.  The LDM register list must ascend, so c0..c3 are
 * pinned (r7 is left to a frame pointer).  groups >= 1. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void qk_dot_1x4_groups(const int8_t *w, const int32_t *xs, int32_t groups, int32_t acc[QK_CONV_COLS])
{
    register int32_t c0 __asm__("r4"), c1 __asm__("r5"), c2 __asm__("r6"), c3 __asm__("r8");
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3], wv, wl;
    __asm__("1:\n\t" QK_DOT_1X4_GROUP
            "subs   %[g], %[g], #1\n\t"
            "bne    1b\n\t"
            : QK_DOT_1X4_OPERANDS, [g] "+r"(groups)
            :
            : "cc", "memory");
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* acc[j] += sum over the depth taps of row w against column j (expanded in xs); returns w + depth.
 * With depth % 4 = r != 0 the row's last four bytes (inside the row) meet the zero-masked last group. */
static const int8_t *qk_dot_1x4(const int8_t *w, const int32_t *xs, int32_t depth, int32_t acc[QK_CONV_COLS])
{
    const int32_t full = depth >> 2, rest = depth & 3;
    if (full > 0) {
        qk_dot_1x4_groups(w, xs, full, acc);
        if (rest > 0) {
            qk_dot_1x4_groups(w + depth - 4, xs + 2 * QK_CONV_COLS * full, 1, acc);
        }
    } else {
        int32_t k, j;
        for (k = 0; k < rest; ++k) { /* tap k: byte k of the column word, halves (k & 1, k >> 1) */
            const int32_t sh = 16 * (k >> 1);
            for (j = 0; j < QK_CONV_COLS; ++j) {
                const int32_t x = (int16_t)(uint16_t)((uint32_t)xs[2 * j + (k & 1)] >> sh);
                acc[j] = qk_add_wrap(acc[j], w[k] * x);
            }
        }
    }
    return w + depth;
}

/* Output channel oc of n (1..QK_CONV_COLS) pixels (out[oc], out[out_c + oc], ...) from accumulators
 * that hold the bias (the folded one: acc + bias wraps like int32 either way), out of line:
 * qk_requant_cold adds the bias back (wrapping like int32 too). */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
QK_COLD static void qk_cols_requant_cold(const qk_conv_params *p, int32_t n, const int32_t acc[QK_CONV_COLS],
                                 const int32_t *bias, const int32_t *multiplier, const int8_t *shift, int32_t oc,
                                 int8_t *out)
{
    int32_t j;
    for (j = 0; j < n; ++j, out += p->out_c) {
        out[oc] = qk_requant_cold((int32_t)((uint32_t)acc[j] - (uint32_t)bias[oc]), bias, multiplier, shift, oc,
                                  p->output_offset, p->act_min, p->act_max);
    }
}

/* n (1..QK_CONV_COLS) output pixels (out, out + out_c, ...) of the expanded columns, requantized by
 * qk_cols_requant_cold: the tiles qk_conv_cols4_asm does not take (a last tile of fewer pixels, a
 * layer whose depth or activation range it does not handle), so small code before speed.  The
 * accumulators start at the bias. */
static void qk_conv_cols(const qk_conv_params *p, int32_t n, int32_t depth, const int8_t *filter,
                         const int32_t *bias, const int32_t *multiplier, const int8_t *shift, int8_t *out,
                         const int32_t *xs)
{
    int32_t oc;
    for (oc = 0; oc < p->out_c; ++oc) {
        int32_t acc[QK_CONV_COLS];
        acc[0] = acc[1] = acc[2] = acc[3] = bias[oc];
        filter = qk_dot_1x4(filter, xs, depth, acc);
        qk_cols_requant_cold(p, n, acc, bias, multiplier, shift, oc, out);
    }
}

/* One accumulator's requantization in qk_conv_cols4_asm (fixed registers: wl lo, c0 hi, c1 the
 * multiplier, c2 e - 1, c3 the rounding constant 2^(e-2), st the output zero point), result in c0. */
#define QK_REQ_SAT8(a)                                  \
    "and    %[wl], %[" a "], #0x80000000\n\t"           \
    "orr    %[wl], %[wl], #0x40000000\n\t"              \
    "add    %[c0], %[c3], %[" a "], asr #31\n\t"        \
    "smlal  %[wl], %[c0], %[" a "], %[c1]\n\t"          \
    "asr    %[c0], %[c0], %[c2]\n\t"                    \
    "add    %[c0], %[c0], %[st]\n\t"                    \
    "ssat   %[c0], #8, %[c0]\n\t"

/* qk_conv_cols in one assembly loop over the output channels, when the depth has an even number (>= 2)
 * of full groups of four taps (and maybe a partial one) and the activation range is the full int8
 * range (n = QK_CONV_COLS: qk_conv_cols's arguments, so qk_conv_flush sets them up for one call); the
 * loop stops before a channel whose shift is above QK_FAST_SHIFT (its outputs through
 * qk_cols_requant_cold, then it resumes).  The requantization is qk_mbqm_right2, + output_offset,
 * SSAT to int8 (|qk_mbqm_right2| <= 2^30 + 1: the add cannot wrap), with hi's start value
 * (x < 0 ? -1 : 0) and the rounding add 2^(e-2) in one ADD of the constant to the sign (both go to
 * the high word: the same 64-bit sum).  The loop state lives in st[] (the asm keeps its address at
 * [sp] while it needs every register). */
static void qk_conv_cols4_asm(const qk_conv_params *p, int32_t n, int32_t depth, const int8_t *filter,
                              const int32_t *bias, const int32_t *multiplier, const int8_t *shift, int8_t *out,
                              const int32_t *xs)
{
    register int32_t c0 __asm__("r4"), c1 __asm__("r5"), c2 __asm__("r6"), c3 __asm__("r8");
    /* st: 0 bias, 4 multiplier, 8 shift, 12 out, 16 out_c, 20 output_offset, 24 xs, 28 pairs of full
     * groups, 32 end of out, 36 4 - depth % 4 (0: no partial group) */
    intptr_t st[10];
    intptr_t *stp = st;
    int32_t a0, a1, a2, a3, wv, wl, x;
    (void)n; /* QK_CONV_COLS */
    st[0] = (intptr_t)bias;
    st[1] = (intptr_t)multiplier;
    st[2] = (intptr_t)shift;
    st[3] = (intptr_t)out;
    st[4] = p->out_c;
    st[5] = p->output_offset;
    st[6] = (intptr_t)xs;
    st[7] = depth >> 3;
    st[8] = (intptr_t)(out + p->out_c);
    st[9] = (4 - (depth & 3)) & 3;
    for (;;) {
    __asm__ volatile(
        "str    %[st], [sp, #-8]!\n\t"
        "3:\n\t"
        "ldr    %[c0], [%[st], #0]\n\t"
        "ldr    %[a0], [%[c0]], #4\n\t"
        "str    %[c0], [%[st], #0]\n\t"
        "mov    %[a1], %[a0]\n\t"
        "mov    %[a2], %[a0]\n\t"
        "mov    %[a3], %[a0]\n\t"
        "ldr    %[x], [%[st], #24]\n\t"
        "ldr    %[st], [%[st], #28]\n\t"
        "4:\n\t" QK_DOT_1X4_GROUP QK_DOT_1X4_GROUP
        "subs   %[st], %[st], #1\n\t"
        "bne    4b\n\t"
        "ldr    %[st], [sp]\n\t"
        "ldr    %[c0], [%[st], #36]\n\t" /* a partial last group: the row's last four bytes */
        "cbz    %[c0], 6f\n\t"
        "sub    %[w], %[w], %[c0]\n\t"
        QK_DOT_1X4_GROUP
        "6:\n\t"
        "ldr    %[c0], [%[st], #8]\n\t"
        "ldrsb  %[c2], [%[c0]]\n\t"
        "add    %[c1], %[c2], #31\n\t" /* shift in [-31, QK_FAST_SHIFT] */
        "cmp    %[c1], #29\n\t"
        "bhi    5f\n\t"
        "add    %[c0], %[c0], #1\n\t"
        "str    %[c0], [%[st], #8]\n\t"
        "ldr    %[c0], [%[st], #4]\n\t"
        "ldr    %[c1], [%[c0]], #4\n\t"
        "str    %[c0], [%[st], #4]\n\t"
        "mvn    %[c2], %[c2]\n\t"
        "mov    %[c3], #1\n\t"
        "lsl    %[c3], %[c3], %[c2]\n\t"
        "asr    %[c3], %[c3], #1\n\t"
        "ldr    %[x], [%[st], #12]\n\t"
        "ldr    %[wv], [%[st], #16]\n\t"
        "ldr    %[st], [%[st], #20]\n\t"
        QK_REQ_SAT8("a0") "strb   %[c0], [%[x]]\n\t"
        QK_REQ_SAT8("a1") "strb   %[c0], [%[x], %[wv]]\n\t"
        "add    %[x], %[x], %[wv], lsl #1\n\t"
        QK_REQ_SAT8("a2") "strb   %[c0], [%[x]]\n\t"
        QK_REQ_SAT8("a3") "strb   %[c0], [%[x], %[wv]]\n\t"
        "sub    %[x], %[x], %[wv], lsl #1\n\t"
        "ldr    %[st], [sp]\n\t"
        "add    %[x], %[x], #1\n\t"
        "str    %[x], [%[st], #12]\n\t"
        "ldr    %[c0], [%[st], #32]\n\t"
        "cmp    %[x], %[c0]\n\t"
        "bne    3b\n\t"
        "5:\n\t"
        "add    sp, sp, #8\n\t"
        : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [w] "+r"(filter), [x] "=&r"(x),
          [st] "+r"(stp), [wv] "=&r"(wv), [wl] "=&r"(wl), [c0] "=&r"(c0), [c1] "=&r"(c1), [c2] "=&r"(c2),
          [c3] "=&r"(c3)
        :
        : "cc", "memory");
        if (st[3] == st[8]) {
            return;
        }
        /* stopped before requantizing a channel with another shift: its four outputs here */
        {
            const int32_t oc = (int32_t)((const int8_t *)st[2] - shift);
            const int32_t acc[QK_CONV_COLS] = {a0, a1, a2, a3};
            qk_cols_requant_cold(p, QK_CONV_COLS, acc, bias, multiplier, shift, oc, out);
            st[1] += 4;
            st[2] += 1;
            st[3] += 1;
            if (st[3] == st[8]) {
                return;
            }
            stp = st;
        }
    }
}

/* Whether qk_conv_cols4_asm applies to this layer (depth taps per row). */
static int qk_conv_asm_ok(const qk_conv_params *p, int32_t depth, const int8_t *shift)
{
    (void)shift;
    return depth >= 8 && (depth & 4) == 0 && p->act_min == -128 && p->act_max == 127; /* even full groups */
}

/* Expands the n (1..QK_CONV_COLS) columns at cols0 + j * depth into scratch (word aligned: the arena's
 * buffers are 16-byte aligned; cols0 NULL: expanded already, qk_patch_done) and computes their output
 * pixels at out (the columns past n hold stale values: their results are dropped). */
static void qk_conv_flush(const qk_conv_params *p, int32_t n, int32_t depth, const int8_t *cols0,
                          const int8_t *filter, const int32_t *bias, const int32_t *multiplier,
                          const int8_t *shift, int8_t *out, int8_t *scratch, int use_asm)
{
    int32_t *xs = (int32_t *)(void *)scratch;
    int32_t j;
    for (j = 0; j < n && cols0 != NULL; ++j) {
        qk_col_expand(cols0 + (size_t)j * depth, depth, xs + 2 * j);
    }
    /* one call (its arguments set up once): a full tile on the assembly loop when it applies */
    (n == QK_CONV_COLS && use_asm ? qk_conv_cols4_asm : qk_conv_cols)(p, n, depth, filter, bias, multiplier, shift,
                                                                      out, xs);
}

#define QK_TILE_PIXELS QK_CONV_COLS

/* qk_conv2d's patch of pixel j of a tile (one int8 patch after the expanded columns), expanded into
 * its column once made (qk_patch_done); the tile then needs no expansion (qk_tile_patches NULL). */
static int8_t *qk_patch_slot(int8_t *scratch, int32_t depth, int32_t j)
{
    (void)j;
    return scratch + (size_t)((depth + 3) >> 2) * 8 * QK_CONV_COLS;
}

static void qk_patch_done(int8_t *scratch, int32_t depth, int32_t j)
{
    if (depth < QK_SHORT_ROW) {
        qk_col_expand(qk_patch_slot(scratch, depth, j), depth, (int32_t *)(void *)scratch + 2 * j);
    } else {
        qk_col_expand_call(qk_patch_slot(scratch, depth, j), depth, (int32_t *)(void *)scratch + 2 * j);
    }
}

static const int8_t *qk_tile_patches(const int8_t *scratch)
{
    (void)scratch;
    return NULL;
}

/* Column j of a qk_conv2d tile (o = the expanded tile + 2 * j) for output pixel (oy, ox), straight
 * from the image (in_c % 4 == 0): the taps' channels word by word (SXTB16 and SXTB16 ROR 8), a run of
 * adjacent taps inside the image (dilation 1) in one loop, a tap outside the image the input zero
 * point's word (zp4, read in place: step 0) in the same loop. */
static QK_ALWAYS_INLINE void qk_col_direct(const qk_conv_params *p, const int8_t *image, int32_t oy, int32_t ox, int32_t *o)
{
    const int32_t words = p->in_c >> 2, k_w = p->k_w, in_h = p->in_h, in_w = p->in_w, dil_w = p->dil_w;
    const int32_t ix0 = ox * p->stride_w - p->pad_w, iy0 = oy * p->stride_h - p->pad_h;
    const uint32_t zp4 = (uint32_t)(uint8_t)(-p->input_offset) * 0x01010101u;
    int32_t ky, kx, i;
    for (ky = 0; ky < p->k_h; ++ky) {
        const int32_t iy = iy0 + ky * p->dil_h;
        for (kx = 0; kx < k_w;) {
            const int32_t ix = ix0 + kx * dil_w;
            int32_t taps = 1, step = 0;
            const int8_t *s = (const int8_t *)(const void *)&zp4;
            if (iy >= 0 && iy < in_h && ix >= 0 && ix < in_w) {
                s = image + ((size_t)iy * in_w + ix) * (size_t)p->in_c;
                step = 4;
                if (dil_w == 1) { /* the taps up to the row's end or the image's */
                    taps = k_w - kx < in_w - ix ? k_w - kx : in_w - ix;
                }
            }
            for (i = taps * words; i > 0; --i, s += step, o += 2 * QK_CONV_COLS) {
                const int32_t v = qk_word(s);
                o[0] = __sxtb16(v);
                o[1] = qk_sxtb16_ror8(v);
            }
            kx += taps;
        }
    }
}
#else

/* n (1 or 2) output pixels from their patches (depth bytes each) in scratch. */
static void qk_conv_tile(const qk_conv_params *p, int32_t n, const int8_t *filter, const int32_t *bias,
                         const int32_t *multiplier, const int8_t *shift, int8_t *out, const int8_t *patches)
{
    const int32_t depth = p->k_h * p->k_w * p->in_c, out_c = p->out_c;
    const int32_t oo = p->output_offset, lo = p->act_min, hi = p->act_max;
    int32_t oc = 0;
    if (n == QK_CONV_TILE) {
        for (; oc + 2 <= out_c; oc += 2) {
            int32_t acc[4];
            qk_dot_2x2(filter + (size_t)oc * depth, patches, depth, acc);
            qk_requant_channel2(acc[0], acc[2], bias, multiplier, shift, oc, oo, lo, hi, out + oc,
                                out + out_c + oc);
            qk_requant_channel2(acc[1], acc[3], bias, multiplier, shift, oc + 1, oo, lo, hi, out + oc + 1,
                                out + out_c + oc + 1);
        }
    }
    for (; oc < out_c; ++oc) {
        int32_t j;
        for (j = 0; j < n; ++j) {
            const int32_t acc = qk_dot_s8(filter + (size_t)oc * depth, patches + (size_t)j * depth, depth);
            out[j * out_c + oc] = qk_requant_cold(acc, bias, multiplier, shift, oc, oo, lo, hi);
        }
    }
}

#define QK_TILE_PIXELS QK_CONV_TILE

/* qk_conv2d's int8 patches, j after j in scratch. */
static int8_t *qk_patch_slot(int8_t *scratch, int32_t depth, int32_t j)
{
    return scratch + (size_t)j * depth;
}

static void qk_patch_done(int8_t *scratch, int32_t depth, int32_t j)
{
    (void)scratch;
    (void)depth;
    (void)j;
}

static const int8_t *qk_tile_patches(const int8_t *scratch)
{
    return scratch;
}

static int qk_conv_asm_ok(const qk_conv_params *p, int32_t depth, const int8_t *shift)
{
    (void)p;
    (void)depth;
    (void)shift;
    return 0;
}

/* The n pixels' depth-long columns at cols0 + j * depth (copied to scratch unless they are the
 * patches there: so the op may run in place) -> their output pixels at out. */
static void qk_conv_flush(const qk_conv_params *p, int32_t n, int32_t depth, const int8_t *cols0,
                          const int8_t *filter, const int32_t *bias, const int32_t *multiplier,
                          const int8_t *shift, int8_t *out, int8_t *scratch, int use_asm)
{
    (void)use_asm;
    if (cols0 != scratch) {
        memcpy(scratch, cols0, (size_t)(n * depth));
    }
    qk_conv_tile(p, n, filter, bias, multiplier, shift, out, scratch);
}
#endif

void qk_conv2d(const qk_conv_params *p, const int8_t *input, const int8_t *filter,
               const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
               int8_t *output, int8_t *scratch)
{
    const int32_t depth = p->k_h * p->k_w * p->in_c;
    const int use_asm = qk_conv_asm_ok(p, depth, shift);
    const int8_t *patches = qk_tile_patches(scratch);
    const qk_conv_params geo = *p; /* a copy no call sees: the patch stores cannot alias it */
    int32_t b, oy, ox, j = 0;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *image = input + (size_t)b * p->in_h * p->in_w * p->in_c;
        for (oy = 0; oy < p->out_h; ++oy) {
            for (ox = 0; ox < p->out_w; ++ox) {
                /* All reads of a tile happen before its writes (in-place planning relies on it). */
                qk_conv_patch(&geo, image, oy, ox, qk_patch_slot(scratch, depth, j));
                qk_patch_done(scratch, depth, j);
                if (++j == QK_TILE_PIXELS) {
                    qk_conv_flush(p, j, depth, patches, filter, bias, multiplier, shift, output, scratch, use_asm);
                    output += j * p->out_c;
                    j = 0;
                }
            }
        }
        if (j > 0) {
            qk_conv_flush(p, j, depth, patches, filter, bias, multiplier, shift, output, scratch, use_asm);
            output += j * p->out_c;
            j = 0;
        }
    }
}

/* in_c % 4 == 0 with the DSP extension: each tile's columns expanded straight from the image
 * (qk_col_direct; no int8 patches).  Without it, qk_conv2d. */
void qk_conv2d_direct(const qk_conv_params *p, const int8_t *input, const int8_t *filter,
                      const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                      int8_t *output, int8_t *scratch)
{
#if QK_USE_DSP
    const int32_t depth = p->k_h * p->k_w * p->in_c;
    const int use_asm = qk_conv_asm_ok(p, depth, shift);
    int32_t b, oy, ox, j = 0;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *image = input + (size_t)b * p->in_h * p->in_w * p->in_c;
        for (oy = 0; oy < p->out_h; ++oy) {
            for (ox = 0; ox < p->out_w; ++ox) {
                qk_col_direct(p, image, oy, ox, (int32_t *)(void *)scratch + 2 * j);
                if (++j == QK_TILE_PIXELS || (b == p->batches - 1 && oy == p->out_h - 1 && ox == p->out_w - 1)) {
                    qk_conv_flush(p, j, depth, NULL, filter, bias, multiplier, shift, output, scratch, use_asm);
                    output += j * p->out_c;
                    j = 0;
                }
            }
        }
    }
#else
    qk_conv2d(p, input, filter, bias, multiplier, shift, output, scratch);
#endif
}

void qk_conv2d_1x1(const qk_conv_params *p, const int8_t *input, const int8_t *filter,
                   const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                   int8_t *output, int8_t *scratch)
{
    const int32_t npix = p->batches * p->in_h * p->in_w, in_c = p->in_c;
    const int use_asm = qk_conv_asm_ok(p, in_c, shift);
    int32_t p0;
    for (p0 = 0; p0 < npix; p0 += QK_TILE_PIXELS) {
        const int32_t n = npix - p0 < QK_TILE_PIXELS ? npix - p0 : QK_TILE_PIXELS;
        /* every read of the tile's input rows precedes its writes (in place) */
        qk_conv_flush(p, n, in_c, input + (size_t)p0 * in_c, filter, bias, multiplier, shift,
                      output + (size_t)p0 * p->out_c, scratch, use_asm);
    }
}

/* -------------------------------------------------------- DEPTHWISE_CONV_2D */

static void qk_dw_tap(const qk_dwconv_params *p, const int8_t *restrict src, const int8_t *restrict w,
                      int32_t *restrict acc)
{
    const int32_t dm = p->depth_multiplier;
    int32_t c, m;
    const int32_t offset = p->input_offset, in_c = p->in_c;
    for (c = 0; c < in_c; ++c) {
        const int32_t v = src[c] + offset;
        for (m = 0; m < dm; ++m) {
            acc[c * dm + m] += (int32_t)w[c * dm + m] * v;
        }
    }
}

/* Few output channels (e.g. one input channel times a depth multiplier): the filter
 * is stored channel-major ([out_c][kh][kw], p->channel_major) and each output is one
 * dot product over the pixel's zero-point-padded window of its input channel (the
 * input offset folded into the bias, as for CONV_2D). */
static void qk_dw_few_channels(const qk_dwconv_params *p, const int8_t *input, const int8_t *filter,
                               int32_t b, int32_t oy, int32_t ox, int32_t *acc, int8_t *patch)
{
    const int32_t taps = p->k_h * p->k_w;
    const int8_t zp = (int8_t)(-p->input_offset);
    int32_t ky, kx, c, m, oc = 0;
    for (c = 0; c < p->in_c; ++c) {
        int8_t *pc = patch + (size_t)c * taps;
        for (ky = 0; ky < p->k_h; ++ky) {
            const int32_t iy = oy * p->stride_h - p->pad_h + ky * p->dil_h;
            for (kx = 0; kx < p->k_w; ++kx) {
                const int32_t ix = ox * p->stride_w - p->pad_w + kx * p->dil_w;
                pc[ky * p->k_w + kx] = (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) ? zp :
                    input[(((size_t)b * p->in_h + iy) * p->in_w + ix) * p->in_c + c];
            }
        }
        int32_t corr = 0; /* filter_offset * (sum of the padded window): uint8 weights stored w - fo */
        if (p->filter_offset != 0) {
            int32_t t;
            for (t = 0; t < taps; ++t) {
                corr += pc[t];
            }
            corr *= p->filter_offset;
        }
        for (m = 0; m < p->depth_multiplier; ++m, ++oc) {
            acc[oc] = qk_dot_s8(filter + (size_t)oc * taps, pc, taps) + corr;
        }
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
                    qk_dw_few_channels(p, input, filter, b, oy, ox, scratch, (int8_t *)(scratch + p->out_c));
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
                    out[oc] = qk_requant_cold(scratch[oc], bias, multiplier, shift, oc, p->output_offset,
                                                 p->act_min, p->act_max);
                }
            }
        }
    }
}


/* One tap of four channels: acc[j] += f[j] * (s[j] + off).  (DSP: off2 holds off in both
 * int16 halves; SXTAB16 adds it to bytes 0/2 and, rotated, 1/3 - sums within +-255.) */
static QK_ALWAYS_INLINE void qk_dw_tap4(const int8_t *s, const int8_t *f, int32_t off, int32_t off2, int32_t acc[4])
{
#if QK_USE_DSP
    const int32_t xv = qk_word(s), wv = qk_word(f);
    const int32_t xl = __sxtab16(off2, xv), xh = qk_sxtab16_ror8(off2, xv);
    const int32_t wl = __sxtb16(wv), wh = qk_sxtb16_ror8(wv);
    (void)off;
    acc[0] = __smlabb(wl, xl, acc[0]);
    acc[2] = __smlatt(wl, xl, acc[2]);
    acc[1] = __smlabb(wh, xh, acc[1]);
    acc[3] = __smlatt(wh, xh, acc[3]);
#else
    (void)off2;
    acc[0] += f[0] * (s[0] + off);
    acc[1] += f[1] * (s[1] + off);
    acc[2] += f[2] * (s[2] + off);
    acc[3] += f[3] * (s[3] + off);
#endif
}

/* n (2 or 3, a constant at each call) taps of one filter row for four channels:
 * acc[j] += sum_{kx < n} fw[4 kx + j] * (s[kx ch + j] + off) (fw: the group's weights of these taps,
 * one word per tap).  DSP: in assembly, as qk_dw_tap4 n times with the loads addressed off one base
 * (GCC's schedule of the unrolled C keeps more values live than the registers and spills). */
static QK_ALWAYS_INLINE void qk_dw_row(const int8_t *s, int32_t ch, const int8_t *fw, int32_t off, int32_t off2,
                                       int32_t acc[4], const int n)
{
#if QK_USE_DSP
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3], x, w, xl, wl;
    (void)off;
#define QK_DW_TAP_ASM \
    "sxtab16 %[xl], %[off2], %[x]\n\t" \
    "sxtab16 %[x], %[off2], %[x], ror #8\n\t" \
    "sxtb16  %[wl], %[w]\n\t" \
    "sxtb16  %[w], %[w], ror #8\n\t" \
    "smlabb  %[a0], %[wl], %[xl], %[a0]\n\t" \
    "smlatt  %[a2], %[wl], %[xl], %[a2]\n\t" \
    "smlabb  %[a1], %[w], %[x], %[a1]\n\t" \
    "smlatt  %[a3], %[w], %[x], %[a3]\n\t"
#define QK_DW_TAPS_OUT [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [x] "=&r"(x), [w] "=&r"(w), \
                       [xl] "=&r"(xl), [wl] "=&r"(wl)
#define QK_DW_TAPS_IN [s] "r"(s), [ch] "r"(ch), [fw] "r"(fw), [off2] "r"(off2)
#define QK_DW_TAPS_01 /* taps 0 and 1: s[0..3] and s[ch..ch+3] */ \
    "ldr     %[x], [%[s]]\n\t" \
    "ldr     %[w], [%[fw]]\n\t" \
    QK_DW_TAP_ASM \
    "ldr     %[x], [%[s], %[ch]]\n\t" \
    "ldr     %[w], [%[fw], #4]\n\t" \
    QK_DW_TAP_ASM
    if (n == 3) {
        __asm__(QK_DW_TAPS_01
                "ldr     %[x], [%[s], %[ch], lsl #1]\n\t"
                "ldr     %[w], [%[fw], #8]\n\t"
                QK_DW_TAP_ASM
                : QK_DW_TAPS_OUT : QK_DW_TAPS_IN : "memory");
    } else {
        __asm__(QK_DW_TAPS_01 : QK_DW_TAPS_OUT : QK_DW_TAPS_IN : "memory");
    }
#undef QK_DW_TAPS_01
#undef QK_DW_TAPS_IN
#undef QK_DW_TAP_ASM
#undef QK_DW_TAPS_OUT
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
#else
    int32_t kx;
    for (kx = 0; kx < n; ++kx) {
        qk_dw_tap4(s + (size_t)kx * ch, fw + 4 * kx, off, off2, acc);
    }
#endif
}

/* Depth multiplier 1, no dilation, k_h x k_w taps (3x3 has its own path: qk_depthwise_conv3x3).  The filter
 * is stored group-major at generation time (codegen/tables.py ``dw_group_major``): for each group
 * of four channels its k_h * k_w taps of four weights ([in_c / 4][kh][kw][4]: one word per tap,
 * the group's taps contiguous), then the in_c % 4 remaining channels as [kh][kw][in_c % 4] (the
 * same bytes in another order).  Four channels at a time with their accumulators in registers,
 * over the taps inside the image (TFLM skips the others; the input offset is added per tap); a
 * window wholly inside the image runs the tap loop with constant trip counts.  Writes each group
 * of four outputs once the group's reads are done: the output of channel c never lands on an
 * input byte still to be read (channel order is monotone), so the window overlap contract holds. */
static QK_ALWAYS_INLINE void qk_dw_dm1(const qk_dwconv_params *p, const int8_t *input, const int8_t *filter,
                                       const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                                       int8_t *output, const int32_t k_h, const int32_t k_w)
{
    const int32_t ch = p->in_c, off = p->input_offset, oo = p->output_offset, lo = p->act_min, hi = p->act_max;
    const int32_t ch4 = ch & ~3, rem = ch - ch4, taps = k_h * k_w;
    const int8_t *const ftail = filter + (size_t)ch4 * taps;
    const size_t row = (size_t)p->in_w * ch;
    const int32_t off2 = (int32_t)(((uint32_t)off & 0xFFFFu) | ((uint32_t)off << 16));
    int32_t b, oy, ox, ky, kx, c;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *image = input + (size_t)b * p->in_h * row;
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_h;
            const int32_t ky0 = iy0 < 0 ? -iy0 : 0, ky1 = p->in_h - iy0 < k_h ? p->in_h - iy0 : k_h;
            for (ox = 0; ox < p->out_w; ++ox, output += ch) {
                const int32_t ix0 = ox * p->stride_w - p->pad_w;
                const int32_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = p->in_w - ix0 < k_w ? p->in_w - ix0 : k_w;
                const int interior = ky0 == 0 && ky1 == k_h && kx0 == 0 && kx1 == k_w;
                const int8_t *f = filter;
                for (c = 0; c < ch4; c += 4, f += 4 * taps) {
                    int32_t acc[4] = {0, 0, 0, 0};
                    if (interior) { /* constant trip counts: the taps unroll */
                        const int8_t *src = image + (size_t)iy0 * row + (size_t)ix0 * ch + c;
                        const int8_t *fw = f;
                        for (ky = 0; ky < k_h; ++ky, src += row) {
                            QK_UNROLL
                            for (kx = 0; kx < k_w; ++kx, fw += 4) {
                                qk_dw_tap4(src + (size_t)kx * ch, fw, off, off2, acc);
                            }
                        }
                    } else {
                        for (ky = ky0; ky < ky1; ++ky) {
                            const int8_t *src = image + (size_t)(iy0 + ky) * row + c;
                            const int8_t *fw = f + (size_t)ky * k_w * 4;
                            for (kx = kx0; kx < kx1; ++kx) {
                                qk_dw_tap4(src + (size_t)(ix0 + kx) * ch, fw + (size_t)kx * 4, off, off2, acc);
                            }
                        }
                    }
                    output[c] = qk_requant_channel(acc[0], bias, multiplier, shift, c, oo, lo, hi);
                    output[c + 1] = qk_requant_channel(acc[1], bias, multiplier, shift, c + 1, oo, lo, hi);
                    output[c + 2] = qk_requant_channel(acc[2], bias, multiplier, shift, c + 2, oo, lo, hi);
                    output[c + 3] = qk_requant_channel(acc[3], bias, multiplier, shift, c + 3, oo, lo, hi);
                }
                for (; c < ch; ++c) {
                    int32_t acc = 0;
                    for (ky = ky0; ky < ky1; ++ky) {
                        for (kx = kx0; kx < kx1; ++kx) {
                            acc += ftail[((size_t)ky * k_w + kx) * rem + (c - ch4)]
                                   * (image[(size_t)(iy0 + ky) * row + (size_t)(ix0 + kx) * ch + c] + off);
                        }
                    }
                    output[c] = qk_requant_cold(acc, bias, multiplier, shift, c, oo, lo, hi);
                }
            }
        }
    }
}

void qk_depthwise_conv2d_dm1(const qk_dwconv_params *p, const int8_t *input, const int8_t *filter,
                             const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                             int8_t *output, int32_t *scratch)
{
    (void)scratch;
    qk_dw_dm1(p, input, filter, bias, multiplier, shift, output, p->k_h, p->k_w);
}

/* int8 saturation of v (SSAT on cores with the saturation instructions). */
static QK_ALWAYS_INLINE int32_t qk_sat_s8(int32_t v)
{
#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT && !defined(QK_NO_DSP)
    int32_t r;
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(v));
    return r;
#else
    return qk_clamp(v, -128, 127);
#endif
}

/* Channel j of a depthwise group in one multiply (qk_mbqm_right2) for a layer whose activation range
 * is all of int8 and whose four shifts are <= QK_FAST_SHIFT (see qk_dw3x3_pixel): the
 * value before the zero point is within +-2^29 (e >= 2), so adding the output offset cannot wrap and
 * the clamp to [-128, 127] is one saturation. */
static QK_ALWAYS_INLINE int8_t qk_dw_requant_sat(int32_t acc, const int32_t *bias, const int32_t *multiplier,
                                                 const int8_t *shift, int32_t j, int32_t oo)
{
    return (int8_t)qk_sat_s8(qk_mbqm_right2(qk_add_wrap(acc, bias[j]), multiplier[j], -shift[j]) + oo);
}

/* Channels [c0, ch) of one 3x3 output pixel one at a time (the ch % 4 tail channels, and windows of one
 * column), arguments as qk_dw3x3_pixel; the group-major filter read at its channel's place. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
QK_COLD static void qk_dw3x3_scalar(const qk_dwconv_params *p, const int8_t *src, const int8_t *filter, const int32_t *bias,
                            const int32_t *multiplier, const int8_t *shift, int8_t *out, int32_t ky0, int32_t ky1,
                            int32_t kx0, int32_t kx1, int32_t c0)
{
    const int32_t ch = p->in_c, ch4 = ch & ~3, rem = ch - ch4, off = p->input_offset;
    const size_t row = (size_t)p->in_w * ch;
    int32_t c, ky, kx;
    for (c = c0; c < ch; ++c) {
        /* channel c's weight of tap t: filter[base + t * step] */
        const int32_t base = c < ch4 ? (c & ~3) * 9 + (c & 3) : ch4 * 9 + (c - ch4), step = c < ch4 ? 4 : rem;
        int32_t acc = 0;
        for (ky = ky0; ky < ky1; ++ky) {
            for (kx = kx0; kx < kx1; ++kx) {
                acc += filter[base + (ky * 3 + kx) * step]
                       * (src[(size_t)(ky - ky0) * row + (size_t)(kx - kx0) * ch + c] + off);
            }
        }
        out[c] = qk_requant_cold(acc, bias, multiplier, shift, c, p->output_offset, p->act_min, p->act_max);
    }
}

/* Whether the four shifts at sh are all <= QK_FAST_SHIFT (-2).  Shifts are within [-31, 31], so
 * s + 1 fits an int8 and s <= -2 exactly when s + 1 is negative: one SADD8 and a mask with DSP. */
static QK_ALWAYS_INLINE int qk_shift4_fast(const int8_t *sh)
{
#if QK_USE_DSP
    return ((uint32_t)__sadd8(qk_word(sh), 0x01010101) & 0x80808080u) == 0x80808080u;
#else
    return (sh[0] <= QK_FAST_SHIFT) & (sh[1] <= QK_FAST_SHIFT) & (sh[2] <= QK_FAST_SHIFT) & (sh[3] <= QK_FAST_SHIFT);
#endif
}

/* The four outputs of a group (channels at bias, multiplier, shift, out) in the three stages (any
 * shift, any activation range); the accumulators by value, so the caller's stay in registers. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
QK_COLD static void qk_dw_group_cold(int32_t a0, int32_t a1, int32_t a2, int32_t a3, const qk_dwconv_params *p,
                             const int32_t *bias, const int32_t *multiplier, const int8_t *shift, int8_t *out)
{
    const int32_t acc[4] = {a0, a1, a2, a3};
    int32_t k;
    for (k = 0; k < 4; ++k) {
        out[k] = qk_requant_cold(acc[k], bias, multiplier, shift, k, p->output_offset, p->act_min, p->act_max);
    }
}

/* One output pixel of a 3x3 depth-multiplier-1 depthwise: the window's rows [ky0, ky1) and columns
 * [kx0, kx1) inside the image (TFLM skips the others), src = the input at (ky0, kx0), channel 0.
 * Filter group-major (as qk_dw_dm1).  Out of line with few live values, so the group loop keeps its
 * pointers and the accumulators in registers; rows of 3 (or 2) taps run qk_dw_row.  sat (a constant:
 * qk_depthwise_conv3x3_sat, whose layers have the activation range all of int8 and every shift
 * <= QK_FAST_SHIFT, checked at generation time): every group through qk_dw_requant_sat (the row
 * loop is not unrolled: 256 B less code for 0.4% more instructions on vww).  Otherwise
 * (qk_depthwise_conv3x3, any layer; smaller code) a group takes
 * qk_dw_requant_sat when the range is all of int8 and its four shifts are <= QK_FAST_SHIFT, else
 * qk_dw_group_cold.  Every window has at least one row inside the image (the output size and
 * padding rules guarantee it). */
static QK_ALWAYS_INLINE void qk_dw3x3_pixel(const qk_dwconv_params *p, const int8_t *src, const int8_t *filter,
                                            const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                                            int8_t *out, int32_t ky0, int32_t ky1, int32_t kx0, int32_t kx1,
                                            const int sat)
{
    const int32_t ch = p->in_c, ch4 = ch & ~3, nrows = ky1 - ky0, ncols = kx1 - kx0, off = p->input_offset;
    const int32_t off2 = (int32_t)(((uint32_t)off & 0xFFFFu) | ((uint32_t)off << 16));
    const int32_t oo = p->output_offset;
    const int full = sat || (p->act_min == -128 && p->act_max == 127);
    const size_t row = (size_t)p->in_w * ch;
    const int8_t *f = filter + 12 * ky0 + 4 * kx0;
    const int32_t groups_end = ncols >= 2 ? ch4 : 0;
    int32_t c, k;
    for (c = 0; c < groups_end; c += 4, src += 4, f += 36) {
        int32_t acc[4] = {0, 0, 0, 0};
        const int8_t *s = src, *fw = f;
        if (ncols == 3) {
            for (k = 0; k < nrows; ++k, s += row, fw += 12) {
                qk_dw_row(s, ch, fw, off, off2, acc, 3);
            }
        } else {
            for (k = 0; k < nrows; ++k, s += row, fw += 12) {
                qk_dw_row(s, ch, fw, off, off2, acc, 2);
            }
        }
        if (sat || QK_LIKELY(full && qk_shift4_fast(shift + c))) {
            out[c] = qk_dw_requant_sat(acc[0], bias, multiplier, shift, c, oo);
            out[c + 1] = qk_dw_requant_sat(acc[1], bias, multiplier, shift, c + 1, oo);
            out[c + 2] = qk_dw_requant_sat(acc[2], bias, multiplier, shift, c + 2, oo);
            out[c + 3] = qk_dw_requant_sat(acc[3], bias, multiplier, shift, c + 3, oo);
        } else { /* any other group: the three stages, out of line */
            qk_dw_group_cold(acc[0], acc[1], acc[2], acc[3], p, bias + c, multiplier + c, shift + c, out + c);
        }
    }
    if (c < ch) { /* the ch % 4 tail channels (or all of them: a window of one column) */
        qk_dw3x3_scalar(p, src - c, filter, bias, multiplier, shift, out, ky0, ky1, kx0, kx1, c);
    }
}

static QK_NOINLINE void qk_dw3x3_pixel_sat(const qk_dwconv_params *p, const int8_t *src, const int8_t *filter,
                                           const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                                           int8_t *out, int32_t ky0, int32_t ky1, int32_t kx0, int32_t kx1)
{
    qk_dw3x3_pixel(p, src, filter, bias, multiplier, shift, out, ky0, ky1, kx0, kx1, 1);
}

static QK_NOINLINE void qk_dw3x3_pixel_any(const qk_dwconv_params *p, const int8_t *src, const int8_t *filter,
                                           const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                                           int8_t *out, int32_t ky0, int32_t ky1, int32_t kx0, int32_t kx1)
{
    qk_dw3x3_pixel(p, src, filter, bias, multiplier, shift, out, ky0, ky1, kx0, kx1, 0);
}

/* 3x3, depth multiplier 1, no dilation, any stride and padding: per output row the window's rows
 * inside the image once, per pixel its columns, then qk_dw3x3_pixel over the channel groups.  Each
 * pixel's outputs are written after its reads, channel group by group (in-place contract as qk_dw_dm1). */
static QK_ALWAYS_INLINE void qk_dw3x3(const qk_dwconv_params *p, const int8_t *input, const int8_t *filter,
                                      const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                                      int8_t *output, const int sat)
{
    const int32_t ch = p->in_c;
    const size_t row = (size_t)p->in_w * ch;
    int32_t b, oy, ox;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *image = input + (size_t)b * p->in_h * row;
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_h;
            const int32_t ky0 = iy0 < 0 ? -iy0 : 0, ky1 = p->in_h - iy0 < 3 ? p->in_h - iy0 : 3;
            const int8_t *rows = image + (size_t)(iy0 + ky0) * row;
            int32_t ix0 = -p->pad_w;
            for (ox = 0; ox < p->out_w; ++ox, ix0 += p->stride_w, output += ch) {
                const int32_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = p->in_w - ix0 < 3 ? p->in_w - ix0 : 3;
                (sat ? qk_dw3x3_pixel_sat : qk_dw3x3_pixel_any)(p, rows + (size_t)(ix0 + kx0) * ch, filter, bias,
                                                                multiplier, shift, output, ky0, ky1, kx0, kx1);
            }
        }
    }
}

void qk_depthwise_conv3x3(const qk_dwconv_params *p, const int8_t *input, const int8_t *filter,
                          const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                          int8_t *output, int32_t *scratch)
{
    (void)scratch;
    qk_dw3x3(p, input, filter, bias, multiplier, shift, output, 0);
}

void qk_depthwise_conv3x3_sat(const qk_dwconv_params *p, const int8_t *input, const int8_t *filter,
                              const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                              int8_t *output, int32_t *scratch)
{
    (void)scratch;
    qk_dw3x3(p, input, filter, bias, multiplier, shift, output, 1);
}

/* ---------------------------------------------------------- FULLY_CONNECTED */

/* TFLite's general form: sum (w + filter_offset) * (x + input_offset), the bias as given
 * (used only when the weights have a zero point). */
/* sum (w[i] + filter_offset) * (x[i] + input_offset) over one weight row: TFLite's two-offset form. */
static int32_t qk_fc_offsets_dot(const qk_fc_params *p, const int8_t *w, const int8_t *x)
{
    int32_t acc = 0, i;
    for (i = 0; i < p->in_units; ++i) {
        acc += (w[i] + p->filter_offset) * (x[i] + p->input_offset);
    }
    return acc;
}

void qk_fully_connected(const qk_fc_params *p, const int8_t *input, const int8_t *filter,
                        const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                        int8_t *output)
{
    int32_t b, o;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = input + (size_t)b * p->in_units;
        for (o = 0; o < p->out_units; ++o) {
            const int32_t acc = qk_fc_offsets_dot(p, filter + (size_t)o * p->in_units, x);
            output[(size_t)b * p->out_units + o] =
                qk_requant_cold(acc, bias, multiplier, shift, o, p->output_offset, p->act_min, p->act_max);
        }
    }
}

void qk_conv2d_offsets(const qk_conv_params *p, const int8_t *input, const int8_t *filter,
                       const int32_t *bias, const int32_t *multiplier, const int8_t *shift, int8_t *output,
                       int8_t *scratch)
{
    const int32_t depth = p->k_h * p->k_w * p->in_c;
    int32_t b, oy, ox, oc, k;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *image = input + (size_t)b * p->in_h * p->in_w * p->in_c;
        for (oy = 0; oy < p->out_h; ++oy) {
            for (ox = 0; ox < p->out_w; ++ox) {
                int32_t corr = 0;
                qk_conv_patch(p, image, oy, ox, scratch);
                for (k = 0; k < depth; ++k) {
                    corr += scratch[k];
                }
                corr *= p->filter_offset;
                for (oc = 0; oc < p->out_c; ++oc) {
                    *output++ = qk_requant_channel(qk_dot_s8(filter + (size_t)oc * depth, scratch, depth) + corr,
                                                   bias, multiplier, shift, oc, p->output_offset, p->act_min,
                                                   p->act_max);
                }
            }
        }
    }
}

/* std::round of a double in [-2^62, 2^62]: nearest integer, ties away from zero (r - trunc(r) is exact). */
int64_t qk_round_half_away(double r)
{
    int64_t t = (int64_t)r;
    const double frac = r - (double)t;
    if (frac >= 0.5) {
        ++t;
    } else if (frac <= -0.5) {
        --t;
    }
    return t;
}

void qk_fully_connected_real(const qk_fc_params *p, const int8_t *input, const int8_t *filter,
                             const int32_t *bias, const double *real_scale, int8_t *output)
{
    int32_t b, o;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = input + (size_t)b * p->in_units;
        for (o = 0; o < p->out_units; ++o) {
            const int32_t acc = qk_fc_offsets_dot(p, filter + (size_t)o * p->in_units, x);
            const int32_t sum = (int32_t)(uint32_t)((uint32_t)acc + (uint32_t)bias[o]); /* int32 wrap */
            double r = (double)sum * real_scale[o];
            int64_t v;
            r = r > 4611686018427387904.0 ? 4611686018427387904.0 : r < -4611686018427387904.0 ? -4611686018427387904.0 : r;
            v = qk_round_half_away(r);
            v = (v > QK_INT32_MAX ? QK_INT32_MAX : v < QK_INT32_MIN ? QK_INT32_MIN : v) + p->output_offset;
            output[(size_t)b * p->out_units + o] = (int8_t)(v < p->act_min ? p->act_min : v > p->act_max ? p->act_max : v);
        }
    }
}

/* Symmetric weights (filter_offset 0): the input offset is folded into the bias at generation
 * time (bias[o] + input_offset * sum_i w[o][i]), so each output is a raw int8 dot product;
 * two output rows share each load of the input.  shared (a constant): multiplier[0] and shift[0]
 * serve every unit (per-tensor weights; the tables hold one entry), else entry o is unit o's. */
static QK_ALWAYS_INLINE void qk_fc_folded(const qk_fc_params *p, const int8_t *input, const int8_t *filter,
                                          const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                                          int8_t *output, const int shared)
{
    const int32_t n = p->in_units, oo = p->output_offset, lo = p->act_min, hi = p->act_max;
    const int32_t m = multiplier[0], s = shift[0];
    int32_t b, o;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = input + (size_t)b * n;
        int8_t *y = output + (size_t)b * p->out_units;
        for (o = 0; o + 2 <= p->out_units; o += 2) {
            int32_t acc[2];
            qk_dot_2rows(filter + (size_t)o * n, filter + (size_t)(o + 1) * n, x, n, acc);
            if (shared) {
                if (QK_LIKELY(s <= QK_FAST_SHIFT)) {
                    y[o] = qk_requant_fast(acc[0], bias[o], m, s, oo, lo, hi);
                    y[o + 1] = qk_requant_fast(acc[1], bias[o + 1], m, s, oo, lo, hi);
                } else {
                    y[o] = qk_requant_cold(acc[0], bias + o, multiplier, shift, 0, oo, lo, hi);
                    y[o + 1] = qk_requant_cold(acc[1], bias + o + 1, multiplier, shift, 0, oo, lo, hi);
                }
            } else {
                y[o] = qk_requant_channel(acc[0], bias, multiplier, shift, o, oo, lo, hi);
                y[o + 1] = qk_requant_channel(acc[1], bias, multiplier, shift, o + 1, oo, lo, hi);
            }
        }
        if (o < p->out_units) {
            y[o] = qk_requant_cold(qk_dot_s8(filter + (size_t)o * n, x, n), bias + o, multiplier + (shared ? 0 : o),
                                   shift + (shared ? 0 : o), 0, oo, lo, hi);
        }
    }
}

void qk_fully_connected_folded(const qk_fc_params *p, const int8_t *input, const int8_t *filter,
                               const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                               int8_t *output)
{
    qk_fc_folded(p, input, filter, bias, multiplier, shift, output, 0);
}

void qk_fully_connected_folded_pt(const qk_fc_params *p, const int8_t *input, const int8_t *filter,
                                  const int32_t *bias, const int32_t *multiplier, const int8_t *shift,
                                  int8_t *output)
{
    qk_fc_folded(p, input, filter, bias, multiplier, shift, output, 1);
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

#define QK_POOL_CHUNK 32 /* channels per pass: their running max / sum stay in a small local array */

/* Channel-innermost pooling: for each output pixel and chunk of channels, the window's taps are
 * walked once, each tap reading the chunk's contiguous channels (no strided loads).  Each chunk's
 * outputs are written after its reads (the pooling overlap contract: same_step). */
QK_COLD static void qk_pool(const qk_pool_params *p, const int8_t *input, int8_t *output, int is_max)
{
    const int32_t ch = p->channels;
    const size_t row = (size_t)p->in_w * ch;
    int32_t b, oy, ox, c0, c, fy, fx;
    int32_t acc[QK_POOL_CHUNK];
    for (b = 0; b < p->batches; ++b) {
        const int8_t *image = input + (size_t)b * p->in_h * row;
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_h;
            const int32_t fy0 = qk_max_i32(0, -y0);
            const int32_t fy1 = qk_min_i32(p->filter_h, p->in_h - y0);
            for (ox = 0; ox < p->out_w; ++ox, output += ch) {
                const int32_t x0 = ox * p->stride_w - p->pad_w;
                const int32_t fx0 = qk_max_i32(0, -x0);
                const int32_t fx1 = qk_min_i32(p->filter_w, p->in_w - x0);
                const int32_t count = (fy1 - fy0) * (fx1 - fx0);
                for (c0 = 0; c0 < ch; c0 += QK_POOL_CHUNK) {
                    const int32_t n = ch - c0 < QK_POOL_CHUNK ? ch - c0 : QK_POOL_CHUNK;
                    for (c = 0; c < n; ++c) {
                        acc[c] = is_max ? -128 : count * p->tap_offset;
                    }
                    for (fy = fy0; fy < fy1; ++fy) {
                        const int8_t *src = image + (size_t)(y0 + fy) * row + (size_t)(x0 + fx0) * ch + c0;
                        for (fx = fx0; fx < fx1; ++fx, src += ch) {
                            if (is_max) {
                                for (c = 0; c < n; ++c) {
                                    acc[c] = qk_max_i32(acc[c], src[c]);
                                }
                            } else {
                                for (c = 0; c < n; ++c) {
                                    acc[c] += src[c];
                                }
                            }
                        }
                    }
                    for (c = 0; c < n; ++c) {
                        int32_t v = acc[c];
                        if (!is_max && count > 0) {
                            /* TFLite's rounding average: half away from zero (one division per output). */
                            v = (v > 0 ? (v + count / 2) / count : (v - count / 2) / count) - p->tap_offset;
                        }
                        output[c0 + c] = (int8_t)qk_clamp(v, p->act_min, p->act_max);
                    }
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

/* qk_mbqm_inline in one multiply where it can: a multiplier >= 0 (TFLite's ADD tables: every
 * multiplier below one) with a shift <= QK_FAST_SHIFT (qk_mbqm_right2) or 0: for shift 0 both
 * roundings are floor((x*m + 2^30) / 2^31) (SRDHM without its INT32_MIN * INT32_MIN case, m >= 0;
 * single rounding cannot saturate: |x*m| <= 2^31 * (2^31 - 1)).  Any other pair through qk_mbqm.
 * Out of line: one copy for ADD's three rescales (smaller, and no slower on Cortex-M4). */
static QK_NOINLINE int32_t qk_mbqm_add(int32_t x, int32_t multiplier, int shift)
{
    if (QK_LIKELY(multiplier >= 0)) {
        if (shift <= QK_FAST_SHIFT) {
            return qk_mbqm_right2(x, multiplier, -shift);
        }
        if (shift == 0) {
            return (int32_t)(((int64_t)x * multiplier + ((int64_t)1 << 30)) >> 31);
        }
    }
    return qk_mbqm(x, multiplier, shift);
}

/* TFLite's quantized ADD / SUB of one element pair before the output offset: both inputs offset,
 * shifted left, rescaled to the common scale, added (or subtracted), rescaled to the output
 * (the int8 and int16 kernels; int16: left_shift 15). */
static QK_ALWAYS_INLINE int32_t qk_add_inline(const qk_add_params *p, int32_t a, int32_t b)
{
    const int32_t s1 = qk_mbqm_add(qk_shl_wrap(p->input1_offset + a, p->left_shift), p->input1_multiplier,
                                   p->input1_shift);
    const int32_t s2 = qk_mbqm_add(qk_shl_wrap(p->input2_offset + b, p->left_shift), p->input2_multiplier,
                                   p->input2_shift);
    return qk_mbqm_add(p->sign >= 0 ? s1 + s2 : s1 - s2, p->output_multiplier, p->output_shift);
}

int32_t qk_add_raw(const qk_add_params *p, int32_t a, int32_t b)
{
    return qk_add_inline(p, a, b);
}

static void qk_add_row(const void *params, const int8_t *a, int32_t sa, const int8_t *b, int32_t sb,
                       int8_t *out, int32_t n)
{
    const qk_add_params q = *(const qk_add_params *)params; /* a local copy: int8 stores cannot alias it */
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = qk_offset_clamp(qk_add_inline(&q, a[i * sa], b[i * sb]), q.output_offset, q.act_min, q.act_max);
    }
}

void qk_add(const qk_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *output)
{
    qk_broadcast4(&p->shape, in1, in2, output, qk_add_row, p);
}

/* MUL before the output offset: (a + offset1) * (b + offset2) rescaled (int8 and int16 kernels). */
int32_t qk_mul_raw(const qk_mul_params *p, int32_t a, int32_t b)
{
    return qk_mbqm_inline((p->input1_offset + a) * (p->input2_offset + b), p->output_multiplier, p->output_shift);
}

static void qk_mul_row(const void *params, const int8_t *a, int32_t sa, const int8_t *b, int32_t sb,
                       int8_t *out, int32_t n)
{
    const qk_mul_params *p = (const qk_mul_params *)params;
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = qk_offset_clamp(qk_mul_raw(p, a[i * sa], b[i * sb]), p->output_offset, p->act_min, p->act_max);
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
    QK_GATHER4(p, input, output);
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
QK_COLD static int32_t qk_exp_on_negative_values(int32_t a)
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
QK_COLD static int32_t qk_one_over_one_plus_x(int32_t a)
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

/* The int8 softmax with a 16-bit (y16 set) or 8-bit (y8 set) output: out_bits in the final shift
 * and the output range [-2^(bits-1), 2^(bits-1) - 1] (the output zero point is its minimum). */
QK_COLD static void qk_softmax_rows(const qk_softmax_params *p, const int8_t *input, int8_t *y8, int16_t *y16)
{
    const int bits = y16 != NULL ? 16 : 8;
    const int32_t lo = y16 != NULL ? -32768 : -128, hi = y16 != NULL ? 32767 : 127;
    int32_t i, c;
    for (i = 0; i < p->outer; ++i) {
        const int8_t *x = input + (size_t)i * p->depth;
        const size_t row = (size_t)i * p->depth;
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
            int32_t v = lo;
            if (diff >= p->diff_min) {
                const int32_t scaled = qk_mbqm(diff, p->input_multiplier, p->input_left_shift);
                const int32_t e = qk_exp_on_negative_values(scaled);
                const int32_t unsat = qk_rounding_divide_by_pot(qk_srdhm(shifted_scale, e),
                                                                num_bits_over_unit + 31 - bits);
                v = qk_clamp(unsat + lo, lo, hi);
            }
            if (y16 != NULL) {
                y16[row + (size_t)c] = (int16_t)v;
            } else {
                y8[row + (size_t)c] = (int8_t)v;
            }
        }
    }
}

void qk_softmax(const qk_softmax_params *p, const int8_t *input, int8_t *output)
{
    qk_softmax_rows(p, input, output, NULL);
}

void qk_softmax_s8_s16(const qk_softmax_params *p, const int8_t *input, int16_t *output)
{
    qk_softmax_rows(p, input, NULL, output);
}

/* clamp(v + offset, lo, hi) with the add in 64 bits (v may be near INT32_MAX). */
static int32_t qk_clamp_offset64(int32_t v, int32_t offset, int32_t lo, int32_t hi)
{
    const int64_t s = (int64_t)v + offset;
    return (int32_t)(s < lo ? lo : (s > hi ? hi : s));
}

/* v wrapped to a signed `bits`-bit integer (8 or 16), without implementation-defined conversions. */
static int32_t qk_wrap_bits(int32_t v, int bits)
{
    const uint32_t mask = (1u << bits) - 1u, sign = 1u << (bits - 1);
    const uint32_t u = ((uint32_t)v + sign) & mask;
    return (int32_t)u - (int32_t)sign;
}

/* MBQM (qk_mbqm) of the recurrent kernels, whose multipliers and shifts are per tensor or per gate (the
 * same branch for a whole loop): qk_mbqm_right2 where it applies, else the three stages out of line
 * (keeps the code small). */
static QK_ALWAYS_INLINE int32_t qk_mbqm_rnn(int32_t x, int32_t multiplier, int shift)
{
    return (multiplier >= 0 && shift <= QK_FAST_SHIFT) ? qk_mbqm_right2(x, multiplier, -shift)
                                                       : qk_mbqm(x, multiplier, shift);
}

#if defined(__SSE2__)
/* Four rows' dot products at a time for SVDF on x86-64 (SSE2), the same wrapped int32 sums as the scalar
 * loops: the values are sign-extended to int16 (unpack with itself, arithmetic shift right by 8: SSE2 has no
 * pmovsx) and multiplied by pmaddwd, which adds two int16 x int16 products into one int32 lane.  For int8
 * values each product is within [-16256, 16384], so the pair sums are exact; for int16 the one pair that does
 * not fit, (-32768)^2 * 2 = 2^31, comes out as -2^31, the same value mod 2^32.  The lanes are then summed
 * with wrapping adds (paddd) and the four rows' lanes folded by qk_hsum4: every step is exact mod 2^32, and
 * the scalar loops' sums (uint32, or int32 far below overflow for int8 x int8) are the same values mod 2^32,
 * so the int32 results are identical. */

/* int8 lanes 0..7 (lo) and 8..15 (hi) of v sign-extended to int16 */
static QK_ALWAYS_INLINE __m128i qk_s8lo(__m128i v)
{
    return _mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8);
}

static QK_ALWAYS_INLINE __m128i qk_s8hi(__m128i v)
{
    return _mm_srai_epi16(_mm_unpackhi_epi8(v, v), 8);
}

static QK_ALWAYS_INLINE __m128i qk_load16(const void *p)
{
    return _mm_loadu_si128((const __m128i *)p);
}

static QK_ALWAYS_INLINE __m128i qk_load8(const void *p)
{
    return _mm_loadl_epi64((const __m128i *)p);
}

/* {sum of a0's lanes, ... a3's lanes} (wrapping): a 4 x 4 transpose folded into adds. */
static QK_ALWAYS_INLINE __m128i qk_hsum4(__m128i a0, __m128i a1, __m128i a2, __m128i a3)
{
    const __m128i s01 = _mm_add_epi32(_mm_unpacklo_epi32(a0, a1), _mm_unpackhi_epi32(a0, a1));
    const __m128i s23 = _mm_add_epi32(_mm_unpacklo_epi32(a2, a3), _mm_unpackhi_epi32(a2, a3));
    return _mm_add_epi32(_mm_unpacklo_epi64(s01, s23), _mm_unpackhi_epi64(s01, s23));
}

/* acc + the pmaddwd pair sums of w and x: 16 int8 values (qk_madd16_s8), the 8 in the low half (qk_madd8_s8), int16
 * values (qk_madd_s16; 4 in the low half: the high half zero). */
static QK_ALWAYS_INLINE __m128i qk_madd16_s8(__m128i acc, __m128i w, __m128i x)
{
    const __m128i lo = _mm_madd_epi16(qk_s8lo(w), qk_s8lo(x)), hi = _mm_madd_epi16(qk_s8hi(w), qk_s8hi(x));
    return _mm_add_epi32(acc, _mm_add_epi32(lo, hi));
}

static QK_ALWAYS_INLINE __m128i qk_madd8_s8(__m128i acc, __m128i w, __m128i x)
{
    return _mm_add_epi32(acc, _mm_madd_epi16(qk_s8lo(w), qk_s8lo(x)));
}

static QK_ALWAYS_INLINE __m128i qk_madd_s16(__m128i acc, __m128i w, __m128i x)
{
    return _mm_add_epi32(acc, _mm_madd_epi16(w, x));
}

/* {sum_k w[r * n + k] * x[k] : r < 4} (k < n; int8 w and x, sums wrapping like int32): SVDF's feature stage, the
 * x loads and extensions shared by the four rows. */
static QK_ALWAYS_INLINE __m128i qk_dot4_s8(const int8_t *w, const int8_t *x, int32_t n)
{
    const int8_t *w1 = w + n, *w2 = w1 + n, *w3 = w2 + n;
    __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
    int32_t k = 0;
    for (; k + 16 <= n; k += 16) {
        const __m128i xv = qk_load16(x + k);
        a0 = qk_madd16_s8(a0, qk_load16(w + k), xv);
        a1 = qk_madd16_s8(a1, qk_load16(w1 + k), xv);
        a2 = qk_madd16_s8(a2, qk_load16(w2 + k), xv);
        a3 = qk_madd16_s8(a3, qk_load16(w3 + k), xv);
    }
    if (k + 8 <= n) {
        const __m128i xv = qk_load8(x + k);
        a0 = qk_madd8_s8(a0, qk_load8(w + k), xv);
        a1 = qk_madd8_s8(a1, qk_load8(w1 + k), xv);
        a2 = qk_madd8_s8(a2, qk_load8(w2 + k), xv);
        a3 = qk_madd8_s8(a3, qk_load8(w3 + k), xv);
        k += 8;
    }
    if (k < n) { /* the tail's sums in lane 0 (not through memory: a wide load of narrow stores stalls) */
        int32_t t0 = 0, t1 = 0, t2 = 0, t3 = 0;
        for (; k < n; ++k) {
            t0 += w[k] * x[k];
            t1 += w1[k] * x[k];
            t2 += w2[k] * x[k];
            t3 += w3[k] * x[k];
        }
        a0 = _mm_add_epi32(a0, _mm_cvtsi32_si128(t0));
        a1 = _mm_add_epi32(a1, _mm_cvtsi32_si128(t1));
        a2 = _mm_add_epi32(a2, _mm_cvtsi32_si128(t2));
        a3 = _mm_add_epi32(a3, _mm_cvtsi32_si128(t3));
    }
    return qk_hsum4(a0, a1, a2, a3);
}

/* SVDF's push and time stage for four filters' state rows s [4][M] in one pass (the memmove of QK_SVDF_PUSH
 * followed by wide loads of what it just stored would stall on store forwarding): each row shifts left by one
 * entry in place, its newest entry (newest[r], a value of type T) last, and the result is {wt[r] . (new row r)}
 * (weights_time wt [4][M], wrapping like int32).  Chunks of 16 bytes, then one of 8, then single entries, the
 * four rows side by side: a chunk ending before the row's last entry is the row read one entry further on; the
 * chunk ending at it is read in place, moved down one entry in the register and given the newest entry on top,
 * so every load stays in its row and sees only entries not yet written. */
#define QK_SVDF_SHIFT_DOT4(NAME, T, MASK, MADD16, MADD8)                                                       \
    static QK_ALWAYS_INLINE __m128i NAME(const T *wt, T *s, int32_t M, const int32_t *newest)                  \
    {                                                                                                          \
        const int32_t n16 = 16 / (int32_t)sizeof(T), n8 = 8 / (int32_t)sizeof(T);                              \
        __m128i a[4], v;                                                                                       \
        int32_t k = 0, r;                                                                                      \
        for (r = 0; r < 4; ++r) {                                                                              \
            a[r] = _mm_setzero_si128();                                                                        \
        }                                                                                                      \
        for (; k + n16 < M; k += n16) {                                                                        \
            for (r = 0; r < 4; ++r) {                                                                          \
                T *sr = s + (size_t)r * M + k;                                                                 \
                v = qk_load16(sr + 1);                                                                         \
                _mm_storeu_si128((__m128i *)(void *)sr, v);                                                    \
                a[r] = MADD16(a[r], qk_load16(wt + (size_t)r * M + k), v);                                     \
            }                                                                                                  \
        }                                                                                                      \
        if (k + n16 == M) {                                                                                    \
            for (r = 0; r < 4; ++r) {                                                                          \
                T *sr = s + (size_t)r * M + k;                                                                 \
                v = _mm_or_si128(_mm_srli_si128(qk_load16(sr), sizeof(T)),                                     \
                                 _mm_slli_si128(_mm_cvtsi32_si128(newest[r] & (MASK)), 16 - sizeof(T)));       \
                _mm_storeu_si128((__m128i *)(void *)sr, v);                                                    \
                a[r] = MADD16(a[r], qk_load16(wt + (size_t)r * M + k), v);                                     \
            }                                                                                                  \
            k = M;                                                                                             \
        } else if (k + n8 < M) {                                                                               \
            for (r = 0; r < 4; ++r) {                                                                          \
                T *sr = s + (size_t)r * M + k;                                                                 \
                v = qk_load8(sr + 1);                                                                          \
                _mm_storel_epi64((__m128i *)(void *)sr, v);                                                    \
                a[r] = MADD8(a[r], qk_load8(wt + (size_t)r * M + k), v);                                       \
            }                                                                                                  \
            k += n8;                                                                                           \
        } else if (k + n8 == M) {                                                                              \
            for (r = 0; r < 4; ++r) {                                                                          \
                T *sr = s + (size_t)r * M + k;                                                                 \
                v = _mm_or_si128(_mm_srli_epi64(qk_load8(sr), 8 * sizeof(T)),                                  \
                                 _mm_slli_epi64(_mm_cvtsi32_si128(newest[r] & (MASK)), 64 - 8 * sizeof(T)));   \
                _mm_storel_epi64((__m128i *)(void *)sr, v);                                                    \
                a[r] = MADD8(a[r], qk_load8(wt + (size_t)r * M + k), v);                                       \
            }                                                                                                  \
            k = M;                                                                                             \
        }                                                                                                      \
        if (k < M) { /* the tail's sums into lane 0 (not through memory: a wide load of narrow stores stalls) */ \
            for (r = 0; r < 4; ++r) {                                                                          \
                T *sr = s + (size_t)r * M;                                                                     \
                const T *wr = wt + (size_t)r * M;                                                              \
                uint32_t tail = 0;                                                                             \
                int32_t j;                                                                                     \
                for (j = k; j < M; ++j) {                                                                      \
                    const int32_t e = j + 1 < M ? sr[j + 1] : newest[r];                                       \
                    sr[j] = (T)e;                                                                              \
                    tail += (uint32_t)(wr[j] * e);                                                             \
                }                                                                                              \
                a[r] = _mm_add_epi32(a[r], _mm_cvtsi32_si128((int32_t)tail));                                  \
            }                                                                                                  \
        }                                                                                                      \
        return qk_hsum4(a[0], a[1], a[2], a[3]);                                                               \
    }
QK_SVDF_SHIFT_DOT4(qk_svdf_shift_dot4_s8, int8_t, 0xff, qk_madd16_s8, qk_madd8_s8)
QK_SVDF_SHIFT_DOT4(qk_svdf_shift_dot4_s16, int16_t, 0xffff, qk_madd_s16, qk_madd_s16)
#undef QK_SVDF_SHIFT_DOT4

/* qk_mbqm_right2 on four lanes (a multiplier >= 0, e = -shift >= 2): round = 2^(e-2), count = e - 1.  SSE2
 * multiplies unsigned 32 x 32 -> 64 bits only (pmuludq, lanes 0 and 2), so with xu = x mod 2^32 (= x + 2^32
 * when x < 0) and the nudge's bits read unsigned (nu = 2^30, or 3 * 2^30 = -2^30 + 2^32 when x < 0):
 * z = x*m + nudge = (xu*m + nu) - [x < 0] * (m + 1) * 2^32, where P = xu*m + nu < 2^63 + 2^32 is exact in 64
 * unsigned bits; hence hi = floor(z / 2^32) = (P >> 32) - [x < 0] * (m + 1), computed mod 2^32 and exact
 * since |hi| <= 2^30 + 1.  Single rounding: z = x*m, the same with nu = 0 and m for m + 1.  The last step,
 * (hi + round) >> count, is qk_mbqm_right2's.  m, round and count must be the same in every lane (pmuludq
 * reads m's lanes 0 and 2 for all four products; SVDF's multipliers are per tensor). */
static QK_ALWAYS_INLINE __m128i qk_mbqm_right2_x4(__m128i x, __m128i m, __m128i round, __m128i count)
{
    const __m128i even = _mm_set_epi32(0, -1, 0, -1), neg = _mm_srai_epi32(x, 31);
#if defined(QK_SINGLE_ROUNDING)
    const __m128i pe = _mm_mul_epu32(x, m), po = _mm_mul_epu32(_mm_srli_epi64(x, 32), m);
    const __m128i corr = _mm_and_si128(neg, m);
#else
    const __m128i nu = _mm_or_si128(_mm_and_si128(x, _mm_set1_epi32(QK_INT32_MIN)), _mm_set1_epi32(0x40000000));
    const __m128i pe = _mm_add_epi64(_mm_mul_epu32(x, m), _mm_and_si128(nu, even));
    const __m128i po = _mm_add_epi64(_mm_mul_epu32(_mm_srli_epi64(x, 32), m), _mm_srli_epi64(nu, 32));
    const __m128i corr = _mm_and_si128(neg, _mm_add_epi32(m, _mm_set1_epi32(1)));
#endif
    const __m128i hi = _mm_or_si128(_mm_srli_epi64(pe, 32), _mm_andnot_si128(even, po));
    return _mm_sra_epi32(_mm_add_epi32(_mm_sub_epi32(hi, corr), round), count);
}

/* clamp(v, lo, hi) on four int32 lanes (SSE2 has no pminsd / pmaxsd) */
static QK_ALWAYS_INLINE __m128i qk_clamp_x4(__m128i v, __m128i lo, __m128i hi)
{
    const __m128i above = _mm_cmpgt_epi32(v, hi);
    __m128i below;
    v = _mm_or_si128(_mm_and_si128(above, hi), _mm_andnot_si128(above, v));
    below = _mm_cmpgt_epi32(lo, v);
    return _mm_or_si128(_mm_and_si128(below, lo), _mm_andnot_si128(below, v));
}

#endif

/* The time dot products t[f] = time_bias[f] + sum_m wt[f][m] * s[f][m] (wrapping like int32) of one batch
 * row's state s [filters][memory], into t[filters], from filter `first` on; T: the state / weights_time
 * type. */
#define QK_SVDF_TIME(T, p, state_row, weights_time, time_bias, t, first)                                        \
    do {                                                                                                       \
        const T *s_ = (const T *)(state_row) + (size_t)(first) * (p)->memory;                                  \
        const T *w_ = (const T *)(weights_time) + (size_t)(first) * (p)->memory;                               \
        int32_t f_, m_;                                                                                        \
        for (f_ = (first); f_ < (p)->filters; ++f_, s_ += (p)->memory, w_ += (p)->memory) {                    \
            uint32_t acc_ = (uint32_t)(time_bias)[f_];                                                         \
            for (m_ = 0; m_ < (p)->memory; ++m_) {                                                             \
                acc_ += (uint32_t)((int32_t)w_[m_] * s_[m_]);                                                  \
            }                                                                                                  \
            (t)[f_] = (int32_t)acc_;                                                                           \
        }                                                                                                      \
    } while (0)

/* One batch row's state [filters][memory] shifted left by one entry (TFLite Micro's memory: each filter's
 * row loses its oldest entry), the newest entries new[filters] last in each row, from filter `first` on: one
 * move of the whole block (each row's last slot takes the next row's first entry, then its newest value). */
#define QK_SVDF_PUSH(T, p, state_row, newest, first)                                                           \
    do {                                                                                                       \
        T *s_ = (T *)(state_row) + (size_t)(first) * (p)->memory;                                              \
        const int32_t len_ = ((p)->filters - (first)) * (p)->memory;                                           \
        int32_t f_;                                                                                            \
        memmove(s_, s_ + 1, (size_t)(len_ - 1) * sizeof(T));                                                   \
        for (f_ = (first); f_ < (p)->filters; ++f_) {                                                          \
            s_[(size_t)(f_ - (first)) * (p)->memory + (p)->memory - 1] = (T)(newest)[f_];                      \
        }                                                                                                      \
    } while (0)

/* The newest state entry of a filter from its feature sum acc (= dot + feature_bias): MBQM(acc, m1, s1),
 * clamped to the state type, + state_zp wrapped to it (zp_after_clamp; else + state_zp before the clamp). */
static QK_ALWAYS_INLINE int32_t qk_svdf_newest(const qk_svdf_params *p, int32_t acc)
{
    const int32_t v = qk_mbqm_rnn(acc, p->m1, p->s1);
    return p->zp_after_clamp ? qk_wrap_bits(qk_clamp(v, p->state_min, p->state_max) + p->state_zp, p->state_bits)
                             : qk_clamp_offset64(v, p->state_zp, p->state_min, p->state_max);
}

void qk_svdf(const qk_svdf_params *params, const int8_t *input, const int8_t *weights_feature,
             const int32_t *feature_bias, const void *weights_time, const int32_t *time_bias,
             const int32_t *bias, void *state, int8_t *output, int32_t *scratch)
{
    /* a local copy: the compiler then knows the stores to output and state leave the parameters alone */
    const qk_svdf_params q = *params, *p = &q;
    const int32_t row_len = p->filters * p->memory;
    int32_t b, f, u, r, f4 = 0;
#if defined(__SSE2__)
    /* Four filters (units) at a time, the MBQMs too where qk_mbqm_rnn takes qk_mbqm_right2 (fast1, fast2).
     * The newest entries (TFLite Micro's order, the zero point after the clamp: the only one codegen emits;
     * the other goes through qk_svdf_newest): wrap(clamp(v, lo, hi) + state_zp), the wrap to the state's bits
     * as a shift left then arithmetic right by 32 - bits (= qk_wrap_bits). */
    const int fast1 = p->zp_after_clamp && p->m1 >= 0 && p->s1 <= QK_FAST_SHIFT;
    const int fast2 = p->m2 >= 0 && p->s2 <= QK_FAST_SHIFT;
    const __m128i m1 = _mm_set1_epi32(p->m1), round1 = _mm_set1_epi32(fast1 ? ((int32_t)1 << (-p->s1 - 1)) >> 1 : 0);
    const __m128i count1 = _mm_cvtsi32_si128(fast1 ? -p->s1 - 1 : 0);
    const __m128i clo = _mm_set1_epi32(p->state_min), chi = _mm_set1_epi32(p->state_max);
    const __m128i zp = _mm_set1_epi32(p->state_zp), wrap = _mm_cvtsi32_si128(32 - p->state_bits);
    const __m128i m2 = _mm_set1_epi32(p->m2), round2 = _mm_set1_epi32(fast2 ? ((int32_t)1 << (-p->s2 - 1)) >> 1 : 0);
    const __m128i count2 = _mm_cvtsi32_si128(fast2 ? -p->s2 - 1 : 0);
    const __m128i off = _mm_set1_epi32(p->output_offset);
    const int32_t u4 = fast2 ? p->units & ~3 : 0;
    f4 = p->filters & ~3;
#endif
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = input + (size_t)b * p->n_in;
        const int8_t *w = weights_feature;
        int8_t *out = output + (size_t)b * p->units;
        /* the newest state entries, in scratch[filters] */
        f = 0;
#if defined(__SSE2__)
        for (; f < f4; f += 4, w += 4 * (size_t)p->n_in) {
            const __m128i acc = _mm_add_epi32(qk_dot4_s8(w, x, p->n_in), qk_load16(feature_bias + f));
            if (fast1) {
                const __m128i v = _mm_add_epi32(qk_clamp_x4(qk_mbqm_right2_x4(acc, m1, round1, count1), clo, chi), zp);
                _mm_storeu_si128((__m128i *)(void *)(scratch + f), _mm_sra_epi32(_mm_sll_epi32(v, wrap), wrap));
            } else {
                int32_t i;
                _mm_storeu_si128((__m128i *)(void *)(scratch + f), acc);
                for (i = f; i < f + 4; ++i) {
                    scratch[i] = qk_svdf_newest(p, scratch[i]);
                }
            }
        }
#endif
        for (; f < p->filters; ++f, w += p->n_in) {
            scratch[f] = qk_svdf_newest(p, qk_add_wrap(qk_dot_s8(w, x, p->n_in), feature_bias[f]));
        }
        if (p->state_bits == 8) {
            int8_t *s = (int8_t *)state + (size_t)b * row_len;
#if defined(__SSE2__)
            for (f = 0; f < f4; f += 4) {
                const size_t o = (size_t)f * p->memory;
                const __m128i t =
                    qk_svdf_shift_dot4_s8((const int8_t *)weights_time + o, s + o, p->memory, scratch + f);
                _mm_storeu_si128((__m128i *)(void *)(scratch + f), _mm_add_epi32(t, qk_load16(time_bias + f)));
            }
            if (f4 < p->filters) /* the rest as below */
#endif
            QK_SVDF_PUSH(int8_t, p, s, scratch, f4);
            QK_SVDF_TIME(int8_t, p, s, weights_time, time_bias, scratch, f4);
        } else {
            int16_t *s = (int16_t *)state + (size_t)b * row_len;
#if defined(__SSE2__)
            for (f = 0; f < f4; f += 4) {
                const size_t o = (size_t)f * p->memory;
                const __m128i t =
                    qk_svdf_shift_dot4_s16((const int16_t *)weights_time + o, s + o, p->memory, scratch + f);
                _mm_storeu_si128((__m128i *)(void *)(scratch + f), _mm_add_epi32(t, qk_load16(time_bias + f)));
            }
            if (f4 < p->filters)
#endif
            QK_SVDF_PUSH(int16_t, p, s, scratch, f4);
            QK_SVDF_TIME(int16_t, p, s, weights_time, time_bias, scratch, f4);
        }
        u = 0;
#if defined(__SSE2__)
        if (p->rank > 1) { /* the rank sums in place: unit u < u4 reads entries >= u and writes entry u */
            for (u = 0; u < u4; ++u) {
                uint32_t acc = (uint32_t)scratch[u * p->rank];
                for (r = 1; r < p->rank; ++r) {
                    acc += (uint32_t)scratch[u * p->rank + r];
                }
                scratch[u] = (int32_t)acc;
            }
        }
        for (u = 0; u < u4; u += 4) {
            const __m128i acc = _mm_add_epi32(qk_load16(bias + u), qk_load16(scratch + u));
            /* |qk_mbqm_right2| <= 2^30 + 1, so + output_offset does not wrap, and the two saturating packs
             * (to int16, then int8) are the clamp to [-128, 127] */
            const __m128i v = _mm_add_epi32(qk_mbqm_right2_x4(acc, m2, round2, count2), off);
            const __m128i v16 = _mm_packs_epi32(v, v), v8 = _mm_packs_epi16(v16, v16);
            const int32_t bytes = _mm_cvtsi128_si32(v8);
            memcpy(out + u, &bytes, 4);
        }
#endif
        for (; u < p->units; ++u) {
            uint32_t acc = (uint32_t)bias[u];
            for (r = 0; r < p->rank; ++r) {
                acc += (uint32_t)scratch[u * p->rank + r];
            }
            out[u] = (int8_t)qk_clamp_offset64(qk_mbqm_rnn((int32_t)acc, p->m2, p->s2), p->output_offset, -128, 127);
        }
    }
}

/* TFLite's int16 table input: x * (3 << left_shift) (multiplier 0) or (x * multiplier + round) >> left_shift. */
static int32_t qk_lut_input(int32_t x, int32_t multiplier, int32_t left_shift)
{
    if (multiplier == 0) {
        return (int32_t)((int64_t)x * (3 << left_shift));
    }
    return (int32_t)(((int64_t)x * multiplier + (left_shift > 0 ? (int64_t)1 << (left_shift - 1) : 0)) >> left_shift);
}

/* Linear interpolation in the sigmoid table at |v| / 2^frac_bits, or `saturated` when |v| is 255
 * table steps or more. */
static int32_t qk_lut_interp(int32_t v, int frac_bits, const uint16_t *table, int32_t saturated)
{
    const int32_t abs_v = v < 0 ? -v : v;
    const int32_t hi = abs_v >> frac_bits;
    const int32_t idx = hi < 254 ? hi : 254;
    const int32_t ua = table[idx], ub = table[idx + 1];
    return hi >= 255 ? saturated : ua * (1 << frac_bits) + (abs_v & ((1 << frac_bits) - 1)) * (ub - ua);
}

/* arithmetic right shifts of possibly negative values, as TFLite (and qsim.fixedpoint) compute them */
static QK_ALWAYS_INLINE int32_t qk_logistic16(int32_t x, int32_t multiplier, int32_t left_shift,
                                              const uint16_t *table)
{
    const int32_t v = qk_lut_input(x, multiplier, left_shift);
    const int32_t r = qk_lut_interp(v, 9, table, 0x7FFF << 10);
    return v >= 0 ? (r + (1 << 9)) >> 10 : ((1 << 25) - r + (1 << 9) - 1) >> 10;
}

int32_t qk_logistic_int16(int32_t x, int32_t multiplier, int32_t left_shift, const uint16_t *table)
{
    return qk_logistic16(x, multiplier, left_shift, table);
}

static QK_ALWAYS_INLINE int32_t qk_tanh16(int32_t x, int32_t multiplier, int32_t left_shift, const uint16_t *table)
{
    const int32_t v = qk_lut_input(x, multiplier, left_shift);
    const int32_t r = qk_lut_interp(v, 8, table, 0xFFFF << 8);
    return v >= 0 ? (r - (1 << 23) + (1 << 7)) >> 8 : (-r + (1 << 23) + (1 << 7) - 1) >> 8;
}

int32_t qk_tanh_int16(int32_t x, int32_t multiplier, int32_t left_shift, const uint16_t *table)
{
    return qk_tanh16(x, multiplier, left_shift, table);
}

/* One gate's activations in place, the gate's test hoisted out of the loop (the pre-activations are
 * int16 values: the table inputs are x * 3, multiplier 0, no shift). */
void qk_lstm_activate(const qk_lstm_params *p, int32_t k, int32_t *v, const uint16_t *sigmoid_table)
{
    const int32_t S = p->cells;
    int32_t j;
    if (k == 3 && !p->cell_gate_sigmoid) {
        for (j = 0; j < S; ++j) {
            v[j] = qk_tanh16(v[j], 0, 0, sigmoid_table);
        }
    } else {
        for (j = 0; j < S; ++j) {
            v[j] = qk_logistic16(v[j], 0, 0, sigmoid_table);
        }
    }
}

void qk_lstm_update(const qk_lstm_params *p, const uint16_t *sigmoid_table, int32_t *gates, int16_t *cell,
                    int32_t hidden_min, int32_t hidden_max)
{
    const int32_t S = p->cells;
    int32_t j;
    for (j = 0; j < S; ++j) {
        const int32_t ig = qk_clamp(qk_mbqm_rnn(gates[j] * gates[3 * S + j], p->input_mul, p->input_shift),
                                    -32768, 32767);
        const int32_t fc = qk_clamp(qk_mbqm_rnn(gates[S + j] * cell[j], p->forget_mul, p->forget_shift),
                                    -32768, 32767);
        const int32_t cn = qk_clamp(ig + fc, p->cell_min, p->cell_max);
        const int32_t th = qk_tanh_int16(cn, p->cell_tanh_multiplier, p->cell_tanh_left_shift, sigmoid_table);
        cell[j] = (int16_t)cn;
        gates[2 * S + j] = qk_clamp_offset64(qk_mbqm_rnn(gates[2 * S + j] * th, p->hidden_mul, p->hidden_shift),
                                             p->hidden_zp, hidden_min, hidden_max);
    }
}

/* sat16 of an FC result: MBQM(acc + bias) clamped to int16. */
static QK_ALWAYS_INLINE int32_t qk_lstm_fc16(int32_t acc, int32_t bias, int32_t multiplier, int shift)
{
    return qk_clamp(qk_mbqm_rnn(qk_add_wrap(acc, bias), multiplier, shift), -32768, 32767);
}

/* Gate k's pre-activations pre[j] = sat16(FC_x[j] + FC_h[j]) for the step's input row x and hidden state h:
 * two weight rows per pass (one load of x / h serves both). */
static void qk_lstm_pre(const qk_lstm_params *p, int32_t k, const int8_t *x, const int8_t *h, const int8_t *w_x,
                        const int8_t *w_h, const int32_t *bias_x, const int32_t *bias_h, int32_t *pre)
{
    QK_LSTM_GATE_START(p, k, w_x, w_h, bias_x, bias_h);
    for (; j + 1 < S; j += 2, wx += 2 * I, wh += 2 * S) {
        int32_t ax[2], ah[2], r;
        qk_dot_2rows(wx, wx + I, x, I, ax);
        qk_dot_2rows(wh, wh + S, h, S, ah);
        for (r = 0; r < 2; ++r) {
            pre[j + r] = qk_clamp(qk_lstm_fc16(ax[r], bias_x[j + r], mx, sx) + qk_lstm_fc16(ah[r], bias_h[j + r], mh, sh),
                                  -32768, 32767);
        }
    }
    if (j < S) {
        pre[j] = qk_clamp(qk_lstm_fc16(qk_dot_s8(wx, x, I), bias_x[j], mx, sx) +
                              qk_lstm_fc16(qk_dot_s8(wh, h, S), bias_h[j], mh, sh),
                          -32768, 32767);
    }
}

void qk_lstm(const qk_lstm_params *p, const int8_t *input, const int8_t *w_x, const int8_t *w_h,
             const int32_t *bias_x, const int32_t *bias_h, const uint16_t *sigmoid_table,
             int8_t *hidden, int16_t *cell, int8_t *output, int32_t *scratch)
{
    QK_LSTM_STEPS(p, int8_t, input, hidden, cell, output, scratch, sigmoid_table, -128, 127,
                  qk_lstm_pre(p, k_, x_, h_, w_x, w_h, bias_x, bias_h, pre_));
}

/* acc[r] = sum_k w[r][k] * x[k] for the R rows of a weight matrix stored as column pairs, wt [n / 2][R][2]
 * (wt[k / 2][r][k % 2] = w[r][k]; n odd: a last pair padded with a zero weight): the loops run over
 * contiguous rows, without horizontal sums or per-row tails; with SSE2 (x86-64 hosts) one pmaddwd sums
 * four rows' two products (int8 weights sign-extended to int16; the sums are exact, so the same as the
 * portable loop's). */
static void qk_gemv_pairs(const int8_t *restrict wt, const int8_t *restrict x, int32_t n, int32_t R,
                          int32_t *restrict acc)
{
    int32_t k, r;
    for (r = 0; r < R; ++r) {
        acc[r] = 0;
    }
    for (k = 0; k < n; k += 2, wt += 2 * R) {
        const int32_t x0 = x[k], x1 = k + 1 < n ? x[k + 1] : 0;
        r = 0;
#if defined(__SSE2__)
        {
            const __m128i xv = _mm_set1_epi32((int32_t)(((uint32_t)x1 << 16) | (uint16_t)x0));
            for (; r + 8 <= R; r += 8) {
                const __m128i w = _mm_loadu_si128((const __m128i *)(const void *)(wt + 2 * r));
                const __m128i lo = _mm_srai_epi16(_mm_unpacklo_epi8(w, w), 8);
                const __m128i hi = _mm_srai_epi16(_mm_unpackhi_epi8(w, w), 8);
                __m128i *a = (__m128i *)(void *)(acc + r);
                _mm_storeu_si128(a, _mm_add_epi32(_mm_loadu_si128(a), _mm_madd_epi16(lo, xv)));
                _mm_storeu_si128(a + 1, _mm_add_epi32(_mm_loadu_si128(a + 1), _mm_madd_epi16(hi, xv)));
            }
        }
#endif
        for (; r < R; ++r) {
            acc[r] += wt[2 * r] * x0 + wt[2 * r + 1] * x1;
        }
    }
}

/* All four gates' pre-activations pre[4][cells] = sat16(FC_x + FC_h) of one step at once (qk_lstm_t's
 * GATE_PRE): the same sums and roundings as qk_lstm_pre; acc: 4 * cells int32. */
static void qk_lstm_pre_t(const qk_lstm_params *p, const int8_t *x, const int8_t *h, const int8_t *wt_x,
                          const int8_t *wt_h, const int32_t *bias_x, const int32_t *bias_h, int32_t *pre,
                          int32_t *acc)
{
    const int32_t S = p->cells, R = 4 * S;
    int32_t k, j;
    qk_gemv_pairs(wt_x, x, p->n_in, R, pre);
    qk_gemv_pairs(wt_h, h, S, R, acc);
    for (k = 0; k < 4; ++k) {
        const int32_t mx = p->mult_x[k], sx = p->shift_x[k], mh = p->mult_h[k], sh = p->shift_h[k];
        for (j = k * S; j < (k + 1) * S; ++j) {
            pre[j] = qk_clamp(qk_lstm_fc16(pre[j], bias_x[j], mx, sx) + qk_lstm_fc16(acc[j], bias_h[j], mh, sh),
                              -32768, 32767);
        }
    }
}

void qk_lstm_t(const qk_lstm_params *p, const int8_t *input, const int8_t *wt_x, const int8_t *wt_h,
               const int32_t *bias_x, const int32_t *bias_h, const uint16_t *sigmoid_table,
               int8_t *hidden, int16_t *cell, int8_t *output, int32_t *scratch)
{
    int32_t *acc = scratch + 4 * (size_t)p->cells;
    QK_LSTM_STEPS(p, int8_t, input, hidden, cell, output, scratch, sigmoid_table, -128, 127,
                  if (k_ == 0) qk_lstm_pre_t(p, x_, h_, wt_x, wt_h, bias_x, bias_h, scratch, acc));
}

void qk_mean(const qk_mean_params *p, const void *input, void *output, int32_t *scratch)
{
    const int32_t *d = p->in_dims, *r = p->reduce;
    const int32_t od1 = r[1] ? 1 : d[1], od2 = r[2] ? 1 : d[2], od3 = r[3] ? 1 : d[3];
    const int32_t zp = p->output_zero_point;
    const int32_t lo = p->elem_bytes == 2 ? -32768 : -128, hi = p->elem_bytes == 2 ? 32767 : 127;
    int32_t i0, i1, i2, i3, o;
    size_t idx = 0;
    for (o = 0; o < p->out_size; ++o) {
        scratch[o] = 0;
    }
    for (i0 = 0; i0 < d[0]; ++i0) {
        for (i1 = 0; i1 < d[1]; ++i1) {
            for (i2 = 0; i2 < d[2]; ++i2) {
                const int32_t base = (((r[0] ? 0 : i0) * od1 + (r[1] ? 0 : i1)) * od2 + (r[2] ? 0 : i2)) * od3;
                for (i3 = 0; i3 < d[3]; ++i3, ++idx) {
                    const int32_t x = p->elem_bytes == 2 ? ((const int16_t *)input)[idx] : ((const int8_t *)input)[idx];
                    int32_t *acc = &scratch[base + (r[3] ? 0 : i3)];
                    *acc = (int32_t)((uint32_t)*acc + (uint32_t)x); /* the int32 sum wraps, as qsim's wrap_int32 */
                }
            }
        }
    }
    for (o = 0; o < p->out_size; ++o) {
        /* sum - zp * count wraps like int32, as the reference's int32 arithmetic does; the output
         * offset is added after clamping to [lo - zp, hi - zp] (no int32 overflow) */
        const int32_t shifted = (int32_t)((uint32_t)scratch[o] - (uint32_t)p->input_zero_point * (uint32_t)p->count);
        const int32_t v = qk_clamp(qk_mbqm_inline(shifted, p->multiplier, p->shift), lo - zp, hi - zp) + zp;
        if (p->elem_bytes == 2) {
            ((int16_t *)output)[o] = (int16_t)v;
        } else {
            ((int8_t *)output)[o] = (int8_t)v;
        }
    }
}

/* Row-wise: each innermost output row is the fill value (memset) or, when its outer indices are
 * inside the input, fill + the input row (memcpy) + fill. */
void qk_pad(const qk_pad_params *p, const int8_t *input, int8_t *output)
{
    const int32_t *id = p->in_dims, *od = p->out_dims, *b = p->before;
    const int fill = (int8_t)p->value;
    const size_t before3 = (size_t)b[3], inner = (size_t)id[3], after3 = (size_t)(od[3] - b[3] - id[3]);
    int32_t o0, o1, o2;
    for (o0 = 0; o0 < od[0]; ++o0) {
        const int32_t i0 = o0 - b[0];
        for (o1 = 0; o1 < od[1]; ++o1) {
            const int32_t i1 = o1 - b[1];
            for (o2 = 0; o2 < od[2]; ++o2, output += od[3]) {
                const int32_t i2 = o2 - b[2];
                if (i0 >= 0 && i0 < id[0] && i1 >= 0 && i1 < id[1] && i2 >= 0 && i2 < id[2]) {
                    memset(output, fill, before3);
                    memcpy(output + before3, input + (((size_t)i0 * id[1] + i1) * id[2] + i2) * inner, inner);
                    memset(output + before3 + inner, fill, after3);
                } else {
                    memset(output, fill, (size_t)od[3]);
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
