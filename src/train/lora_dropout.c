/* LoRA dropout masks (see lora.h): counter-based, so that a mask is a pure
 * function of its key and element index. */
#include "train/lora.h"

#include <string.h>

#include "tensor/ops.h"
#include "train/train_internal.h"

#define GOLDEN 0x9E3779B97F4A7C15ull

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t at(uint64_t h, uint64_t i) { return mix64(h + (i + 1) * GOLDEN); }

uint64_t lm_lora_dropout_key(uint64_t seed, uint64_t step, uint64_t micro) {
    return at(at(seed, step), micro);
}

uint64_t lm_lora_dropout_pkey(uint64_t key, int layer, int target) {
    return at(key, (uint64_t)layer * LM_LORA_N + (uint64_t)target);
}

typedef struct {
    float *out;
    const float *x;
    int N, in, acc, simd;
    int T, key_T;           /* row n's mask is that of row (n / T) * key_T + n % T */
    uint64_t pkey;
    uint32_t thresh;
    float scale;
} drop_job;

/* One row, e = its first element's index. Half a splitmix64 word per
 * element (the hash is most of dropout's cost): an odd e takes the low half
 * of the word it shares with the row before, then whole words, then maybe
 * a high half. acc is a constant where this is inlined. */
static inline void drop_row(float *restrict o, const float *restrict x, int in, uint64_t e,
                            uint64_t pkey, uint32_t thresh, float scale, int acc) {
#define PUT(i, u) do { float v_ = (uint32_t)(u) >= thresh ? x[i] * scale : 0.0f; \
                       o[i] = acc ? o[i] + v_ : v_; } while (0)
    int i = 0;
    if (e & 1) { PUT(0, at(pkey, e >> 1)); i = 1; }
    uint64_t c = pkey + (((e + (uint64_t)i) >> 1) + 1) * GOLDEN;   /* mix64(c) = at(pkey, word) */
    for (; i + 1 < in; i += 2, c += GOLDEN) {
        uint64_t w = mix64(c);
        PUT(i, w >> 32);
        PUT(i + 1, w);
    }
    if (i < in) PUT(i, mix64(c) >> 32);
#undef PUT
}

#if defined(__x86_64__)
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2")))

/* a * k mod 2^64 per lane (AVX2 has no 64-bit multiply): the low product
 * plus the two cross products shifted up. */
AVX2 static inline __m256i mul64(__m256i a, uint64_t k) {
    __m256i klo = _mm256_set1_epi64x((long long)(k & 0xffffffffu));
    __m256i khi = _mm256_set1_epi64x((long long)(k >> 32));
    __m256i lo = _mm256_mul_epu32(a, klo);
    __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), klo),
                                     _mm256_mul_epu32(a, khi));
    return _mm256_add_epi64(lo, _mm256_slli_epi64(cross, 32));
}

AVX2 static inline __m256i mix64x4(__m256i z) {
    z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), 0xBF58476D1CE4E5B9ull);
    z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), 0x94D049BB133111EBull);
    return _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
}

/* drop_row, 4 words = 8 elements at a time; the same bits as the scalar
 * code (same integer hash, same f32 multiply and add). */
AVX2 static void drop_row_avx2(float *restrict o, const float *restrict x, int in, uint64_t e,
                               uint64_t pkey, uint32_t thresh, float scale, int acc) {
    int i = 0;
    if (e & 1) {
        float v = (uint32_t)at(pkey, e >> 1) >= thresh ? x[0] * scale : 0.0f;
        o[0] = acc ? o[0] + v : v;
        i = 1;
    }
    uint64_t c = pkey + (((e + (uint64_t)i) >> 1) + 1) * GOLDEN;
    __m256i cv = _mm256_add_epi64(_mm256_set1_epi64x((long long)c),
                                  _mm256_set_epi64x((long long)(3 * GOLDEN), (long long)(2 * GOLDEN),
                                                    (long long)GOLDEN, 0));
    const __m256i step = _mm256_set1_epi64x((long long)(4 * GOLDEN));
    const __m256i tv = _mm256_set1_epi32((int)thresh);
    const __m256 sv = _mm256_set1_ps(scale);
    for (; i + 8 <= in; i += 8, c += 4 * GOLDEN) {
        /* lanes hold words [lo32, hi32]; elements take hi then lo */
        __m256i u = _mm256_shuffle_epi32(mix64x4(cv), _MM_SHUFFLE(2, 3, 0, 1));
        cv = _mm256_add_epi64(cv, step);
        __m256 keep = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_max_epu32(u, tv), u));
        __m256 v = _mm256_and_ps(keep, _mm256_mul_ps(_mm256_loadu_ps(x + i), sv));
        if (acc) v = _mm256_add_ps(_mm256_loadu_ps(o + i), v);
        _mm256_storeu_ps(o + i, v);
    }
    for (; i < in; i += 2, c += GOLDEN) {
        uint64_t w = mix64(c);
        float v = (uint32_t)(w >> 32) >= thresh ? x[i] * scale : 0.0f;
        o[i] = acc ? o[i] + v : v;
        if (i + 1 < in) {
            v = (uint32_t)w >= thresh ? x[i + 1] * scale : 0.0f;
            o[i + 1] = acc ? o[i + 1] + v : v;
        }
    }
}
#endif

static void drop_rows(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    const drop_job *j = ctx;
    int n0 = (int)((int64_t)j->N * task / n_tasks), n1 = (int)((int64_t)j->N * (task + 1) / n_tasks);
    for (int n = n0; n < n1; n++) {
        size_t o = (size_t)n * (size_t)j->in;
        uint64_t kn = (uint64_t)(n / j->T) * (uint64_t)j->key_T + (uint64_t)(n % j->T);
        uint64_t e = kn * (uint64_t)j->in;
#if defined(__x86_64__)
        if (j->simd) {
            drop_row_avx2(j->out + o, j->x + o, j->in, e, j->pkey, j->thresh, j->scale, j->acc);
            continue;
        }
#endif
        if (j->acc) drop_row(j->out + o, j->x + o, j->in, e, j->pkey, j->thresh, j->scale, 1);
        else drop_row(j->out + o, j->x + o, j->in, e, j->pkey, j->thresh, j->scale, 0);
    }
}

void lm_lora_dropout_apply_isa(lm_pool *pool, float *out, const float *x, int N, int in, float p,
                               uint64_t pkey, int acc, int T, int key_T, int allow_simd) {
    /* p < 1 as f32, so p * 2^32 (exact in double) floors below 2^32 */
    drop_job j = {.out = out, .x = x, .N = N, .in = in, .acc = acc, .pkey = pkey,
                  .T = T > 0 ? T : (N > 0 ? N : 1), .key_T = T > 0 ? key_T : (N > 0 ? N : 1),
                  .thresh = (uint32_t)((double)p * 4294967296.0),
                  .scale = (float)(1.0 / (1.0 - (double)p))};
#if defined(__x86_64__)
    /* the AVX2 rows unless the scalar kernel set was asked for (same bits) */
    j.simd = allow_simd && __builtin_cpu_supports("avx2") && strcmp(lm_kernels_name(), "scalar");
#else
    (void)allow_simd;
#endif
    int tasks = 4 * lm_pool_threads(pool);
    if (tasks > N) tasks = N;
    if (tasks > 0) lm_pool_run(pool, drop_rows, &j, tasks);
}

void lm_lora_dropout_apply(lm_pool *pool, float *out, const float *x, int N, int in, float p,
                           uint64_t pkey, int acc) {
    lm_lora_dropout_apply_isa(pool, out, x, N, in, p, pkey, acc, 0, 0, 1);
}

void lm_lora_dropout_apply_rows(lm_pool *pool, float *out, const float *x, int N, int in, float p,
                                uint64_t pkey, int acc, int T, int key_T) {
    lm_lora_dropout_apply_isa(pool, out, x, N, in, p, pkey, acc, T, key_T, 1);
}
