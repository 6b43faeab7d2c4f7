/* qk_host.c: host-only block requantization for the Python simulator (qsim/native.py).
 *
 * Never part of generated firmware (qsim codegen copies qkernels.c/.h, not this file).  It
 * includes qkernels.c itself, so the arithmetic is the firmware's one definition,
 * qk_requantize (double rounding, or single when qk_config.h defines QK_SINGLE_ROUNDING),
 * proven equal to qsim.fixedpoint.requantize by tests/test_edges.py and tests/test_native.py.
 *
 * Layout: acc is [rows][channels] row-major (channel = last axis), out the same in int8;
 * bias, multiplier (Q31 M0) and shift (TFLite sign convention, within
 * qsim.fixedpoint.SHIFT_RANGE) are [channels].  int64 accumulators are converted to int32
 * wrapping modulo 2^32 like fixedpoint.wrap_int32; float ones must hold integers within int32
 * (qsim/native.py passes only those).
 * The zero point and the activation range must be int8 (qk_requantize's output).
 */
#include "qkernels.c"

/* qk_requantize's own dispatch, hoisted out of the row loop: the channels taking its fast form
 * (multiplier >= 0, shift <= QK_FAST_SHIFT) run qk_requant_fast in one branch-free loop, which
 * the compiler vectorizes; that loop gives the other channels (a pruned channel's zero
 * multiplier has shift 0) a placeholder table entry (multiplier 0, shift QK_FAST_SHIFT:
 * defined, discarded), and qk_requantize then overwrites their outputs one by one.  The loop
 * runs over groups of k rows (the tables repeated k times, k * channels >= QK_HOST_GROUP), so
 * that a layer with few channels still fills the vectors; the rows left over run one by one.
 * Rows wider than QK_HOST_MAX_CHANNELS go through qk_requantize value by value. */
#define QK_HOST_MAX_CHANNELS 2048
#define QK_HOST_GROUP 256

#define QK_HOST_ROW(CONVERT, base, width)                                                           \
    for (int32_t j = 0; j < (width); ++j) {                                                         \
        out[(base) + j] = qk_requant_fast(CONVERT(acc[(base) + j]), tb[j], tm[j], (int)ts[j],       \
                                          output_offset, act_min, act_max);                         \
    }                                                                                               \
    for (int32_t k = 0; k < n_slow && slow[k] < (width); ++k) {                                     \
        const int32_t j = slow[k], c = j % channels;                                                \
        out[(base) + j] = qk_requantize(CONVERT(acc[(base) + j]), bias[c], multiplier[c],           \
                                        (int)shift[c], output_offset, act_min, act_max);            \
    }

#define QK_HOST_CHANNEL_LOOP(CONVERT)                                                              \
    int32_t tb[QK_HOST_MAX_CHANNELS], tm[QK_HOST_MAX_CHANNELS], ts[QK_HOST_MAX_CHANNELS];           \
    int32_t slow[QK_HOST_MAX_CHANNELS];                                                             \
    int32_t n_slow = 0;                                                                             \
    if (channels <= 0 || channels > QK_HOST_MAX_CHANNELS) {                                         \
        for (int64_t i = 0; i < rows * (int64_t)channels; ++i) {                                    \
            const int32_t c = (int32_t)(i % channels);                                              \
            out[i] = qk_requantize(CONVERT(acc[i]), bias[c], multiplier[c], (int)shift[c],          \
                                   output_offset, act_min, act_max);                                \
        }                                                                                           \
        return;                                                                                     \
    }                                                                                               \
    const int32_t group = channels < QK_HOST_GROUP ? QK_HOST_GROUP / channels : 1;                  \
    const int32_t width = group * channels;                                                         \
    for (int32_t j = 0; j < width; ++j) {                                                           \
        const int32_t c = j % channels;                                                             \
        const int fast = multiplier[c] >= 0 && shift[c] <= QK_FAST_SHIFT;                           \
        tb[j] = bias[c];                                                                            \
        tm[j] = fast ? multiplier[c] : 0;                                                           \
        ts[j] = fast ? shift[c] : QK_FAST_SHIFT;                                                    \
        if (!fast) {                                                                                \
            slow[n_slow++] = j;                                                                     \
        }                                                                                           \
    }                                                                                               \
    const int64_t groups = rows / group;                                                            \
    for (int64_t g = 0; g < groups; ++g) {                                                          \
        QK_HOST_ROW(CONVERT, g * (int64_t)width, width)                                             \
    }                                                                                               \
    for (int64_t r = groups * group; r < rows; ++r) {                                               \
        QK_HOST_ROW(CONVERT, r * (int64_t)channels, channels)                                       \
    }

#define QK_HOST_SAME(v) (v)
#define QK_HOST_WRAP64(v) ((int32_t)(uint32_t)(uint64_t)(v))
#define QK_HOST_FROM_FLOAT(v) ((int32_t)(v)) /* exact: the caller guarantees integers within int32 */

/* x86-64 GCC: an AVX2 clone besides the baseline one, picked at load time (ifunc); the loops
 * above vectorize with AVX2's 32x32->64 multiply and per-lane shifts, not with SSE2. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define QK_HOST_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QK_HOST_CLONES
#endif

#define QK_HOST_BLOCK(NAME, TYPE, CONVERT)                                                          \
    QK_HOST_CLONES void NAME(const TYPE *restrict acc, int64_t rows, int32_t channels,              \
                             const int32_t *bias, const int32_t *multiplier, const int32_t *shift,  \
                             int32_t output_offset, int32_t act_min, int32_t act_max,               \
                             int8_t *restrict out)                                                  \
    {                                                                                               \
        QK_HOST_CHANNEL_LOOP(CONVERT)                                                               \
    }

QK_HOST_BLOCK(qk_host_requant_i32, int32_t, QK_HOST_SAME)
QK_HOST_BLOCK(qk_host_requant_i64, int64_t, QK_HOST_WRAP64)
QK_HOST_BLOCK(qk_host_requant_f32, float, QK_HOST_FROM_FLOAT)
QK_HOST_BLOCK(qk_host_requant_f64, double, QK_HOST_FROM_FLOAT)

/* ------------------------------------------------------------------ DEPTHWISE_CONV_2D, batched
 * qsim/native.py's depthwise runner: the generic firmware kernel qk_depthwise_conv2d's sums
 * (qk_dw_tap over the taps inside the image, TFLM skips the others; filter as TFLite stores it,
 * [kh][kw][out_c], out_c = in_c * depth_multiplier) for a block of output rows at a time,
 * then the block through qk_host_requant_i32 (qk_requantize, hoisted as above).  Measured on
 * x86-64 against the firmware's own loops run over the batch (qk_depthwise_conv3x3 / _dm1 /
 * qk_depthwise_conv2d, ~2x / 3.5x / 7x slower than this on the zoo MobileNetV2 at batch 64:
 * their four-channel groups and per-value requantization do not vectorize here): the row form
 * lets qk_dw_tap's channel loop vectorize (depth multiplier 1 as a constant) and the
 * requantization run on whole blocks.  Accumulators must stay within int32 (the caller's
 * bound): then every summation order gives the same sums. */

/* Accumulators of output row oy of one image, [out_w][out_c] int32 at acc; dm > 0: p's depth
 * multiplier as a constant (qk_dw_tap inlined on a params copy). */
static QK_ALWAYS_INLINE void qk_host_dw_row(const qk_dwconv_params *p, const int32_t dm, const int8_t *image,
                                            const int8_t *filter, int32_t oy, int32_t *restrict acc)
{
    qk_dwconv_params q = *p;
    int32_t ky, kx, ox;
    if (dm > 0) {
        q.depth_multiplier = dm;
    }
    for (ox = 0; ox < q.out_w * q.out_c; ++ox) {
        acc[ox] = 0;
    }
    for (ky = 0; ky < q.k_h; ++ky) {
        const int32_t iy = oy * q.stride_h - q.pad_h + ky * q.dil_h;
        if (iy < 0 || iy >= q.in_h) {
            continue;
        }
        for (kx = 0; kx < q.k_w; ++kx) {
            const int8_t *w = filter + ((size_t)ky * q.k_w + kx) * q.out_c;
            const int32_t ix0 = kx * q.dil_w - q.pad_w; /* the input column of output column 0 */
            /* the output columns whose tap is inside the image: 0 <= ox * stride + ix0 < in_w */
            const int32_t ox0 = ix0 >= 0 ? 0 : (-ix0 + q.stride_w - 1) / q.stride_w;
            const int32_t span = q.in_w - ix0, ox1 = span <= 0 ? 0 : (span + q.stride_w - 1) / q.stride_w;
            const int32_t end = ox1 < q.out_w ? ox1 : q.out_w;
            for (ox = ox0; ox < end; ++ox) {
                qk_dw_tap(&q, image + ((size_t)iy * q.in_w + (ox * q.stride_w + ix0)) * q.in_c, w,
                          acc + (size_t)ox * q.out_c);
            }
        }
    }
}

/* Rows [r0, r1) of the batch's out_h rows per image (row r: image r / out_h, row r % out_h). */
QK_HOST_CLONES static void qk_host_dw_rows(const qk_dwconv_params *p, const int8_t *input, const int8_t *filter,
                                           int64_t r0, int64_t r1, int32_t *acc)
{
    const size_t image = (size_t)p->in_h * p->in_w * p->in_c, row = (size_t)p->out_w * p->out_c;
    int64_t r;
    for (r = r0; r < r1; ++r, acc += row) {
        const int8_t *x = input + (size_t)(r / p->out_h) * image;
        if (p->depth_multiplier == 1) {
            qk_host_dw_row(p, 1, x, filter, (int32_t)(r % p->out_h), acc);
        } else {
            qk_host_dw_row(p, 0, x, filter, (int32_t)(r % p->out_h), acc);
        }
    }
}

/* The batch's outputs [batches][out_h][out_w][out_c] int8; scratch: block_rows * out_w * out_c
 * int32 (block_rows >= 1: output rows summed, then requantized, at a time).  bias / multiplier
 * (Q31 M0) / shift (TFLite sign convention, within qsim.fixedpoint.SHIFT_RANGE): [out_c];
 * input_offset = -(input zero point); output zero point and activation range int8. */
void qk_host_depthwise(int32_t batches, int32_t in_h, int32_t in_w, int32_t in_c, int32_t out_h, int32_t out_w,
                       int32_t depth_multiplier, int32_t k_h, int32_t k_w, int32_t stride_h, int32_t stride_w,
                       int32_t dil_h, int32_t dil_w, int32_t pad_h, int32_t pad_w, int32_t input_offset,
                       int32_t output_offset, int32_t act_min, int32_t act_max, const int8_t *input,
                       const int8_t *filter, const int32_t *bias, const int32_t *multiplier, const int32_t *shift,
                       int8_t *output, int32_t *scratch, int32_t block_rows)
{
    qk_dwconv_params p;
    const int64_t rows = (int64_t)batches * out_h;
    const size_t row = (size_t)out_w * in_c * depth_multiplier;
    int64_t r0;
    p.batches = batches;
    p.in_h = in_h;
    p.in_w = in_w;
    p.in_c = in_c;
    p.out_h = out_h;
    p.out_w = out_w;
    p.out_c = in_c * depth_multiplier;
    p.depth_multiplier = depth_multiplier;
    p.k_h = k_h;
    p.k_w = k_w;
    p.stride_h = stride_h;
    p.stride_w = stride_w;
    p.dil_h = dil_h;
    p.dil_w = dil_w;
    p.pad_h = pad_h;
    p.pad_w = pad_w;
    p.input_offset = input_offset;
    p.output_offset = output_offset;
    p.act_min = act_min;
    p.act_max = act_max;
    p.channel_major = 0;
    p.filter_offset = 0;
    for (r0 = 0; r0 < rows; r0 += block_rows) {
        const int64_t r1 = r0 + block_rows < rows ? r0 + block_rows : rows;
        qk_host_dw_rows(&p, input, filter, r0, r1, scratch);
        qk_host_requant_i32(scratch, (r1 - r0) * out_w, p.out_c, bias, multiplier, shift, output_offset, act_min,
                            act_max, output + (size_t)r0 * row);
    }
}

/* ------------------------------------------------------------------ SVDF table path, batched
 * qsim/kernels/svdf.py's table path (rank 1, a read-only start state) after its float GEMM
 * v = x @ wf (numpy/BLAS, exact integers): out[r][f] = y_table[row][f][table[clip(v[r][f] +
 * shift[f])]] with row = 0 when the start state has one row (rows == 1), else r.  v + shift is
 * an exact integer below 2^24 in float32 (the caller's bound, svdf._plan_table), as numpy's
 * float32 add computes it; the index is clipped to [0, table_len) as numpy's take(mode="clip")
 * does.  table: the step-1 window (j of every reachable v), uint8 or uint16; y_table: int8
 * [rows][filters][width]. */
#define QK_HOST_SVDF_LOOKUP(NAME, TABLE)                                                             \
    void NAME(const float *restrict v, int64_t n, int32_t filters, int32_t rows, const float *shift,  \
              const TABLE *table, int64_t table_len, const int8_t *y_table, int32_t width,            \
              int8_t *restrict out)                                                                   \
    {                                                                                                 \
        const float last = (float)(table_len - 1);                                                    \
        for (int64_t r = 0; r < n; ++r) {                                                             \
            const int8_t *y = y_table + (rows == 1 ? 0 : r) * (int64_t)filters * width;               \
            for (int32_t f = 0; f < filters; ++f, y += width) {                                       \
                const float s = v[r * filters + f] + shift[f];                                        \
                const int64_t i = s <= 0.0f ? 0 : (s >= last ? table_len - 1 : (int64_t)s);           \
                out[r * filters + f] = y[table[i]];                                                   \
            }                                                                                         \
        }                                                                                             \
    }

QK_HOST_SVDF_LOOKUP(qk_host_svdf_lookup_u8, uint8_t)
QK_HOST_SVDF_LOOKUP(qk_host_svdf_lookup_u16, uint16_t)

#if defined(__SSE2__)
/* Test hook (tests/test_native.py): qk_svdf's four-lane MBQM, qk_mbqm_right2_x4, on x[0..n) (n a
 * multiple of 4) with one multiplier >= 0 and shift <= QK_FAST_SHIFT, the constants formed as
 * qk_svdf forms them, so that it is held to qsim.fixedpoint on the same edge values as qk_mbqm. */
void qk_host_mbqm_x4(const int32_t *x, int64_t n, int32_t multiplier, int32_t shift, int32_t *out)
{
    const __m128i m = _mm_set1_epi32(multiplier), round = _mm_set1_epi32(((int32_t)1 << (-shift - 1)) >> 1);
    const __m128i count = _mm_cvtsi32_si128(-shift - 1);
    for (int64_t i = 0; i + 4 <= n; i += 4) {
        _mm_storeu_si128((__m128i *)(void *)(out + i),
                         qk_mbqm_right2_x4(_mm_loadu_si128((const __m128i *)(const void *)(x + i)), m, round, count));
    }
}
#endif
