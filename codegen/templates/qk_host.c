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
