/* LoRA dropout masks (see lora.h): counter-based, so that a mask is a pure
 * function of its key and element index. */
#include "train/lora.h"

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
    int N, in, acc;
    uint64_t pkey, thresh;
    float scale;
} drop_job;

static void drop_rows(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    const drop_job *j = ctx;
    int n0 = (int)((int64_t)j->N * task / n_tasks), n1 = (int)((int64_t)j->N * (task + 1) / n_tasks);
    for (int n = n0; n < n1; n++) {
        size_t base = (size_t)n * (size_t)j->in;
        uint64_t c = j->pkey + ((uint64_t)base + 1) * GOLDEN;   /* at(pkey, base) = mix64(c) */
        const float *x = j->x + base;
        float *o = j->out + base;
        for (int i = 0; i < j->in; i++, c += GOLDEN) {
            float v = (mix64(c) >> 32) >= j->thresh ? x[i] * j->scale : 0.0f;
            o[i] = j->acc ? o[i] + v : v;
        }
    }
}

void lm_lora_dropout_apply(lm_pool *pool, float *out, const float *x, int N, int in, float p,
                           uint64_t pkey, int acc) {
    /* p < 1 as f32, so p * 2^32 (exact in double) floors below 2^32 */
    drop_job j = {.out = out, .x = x, .N = N, .in = in, .acc = acc, .pkey = pkey,
                  .thresh = (uint64_t)((double)p * 4294967296.0),
                  .scale = (float)(1.0 / (1.0 - (double)p))};
    int tasks = 4 * lm_pool_threads(pool);
    if (tasks > N) tasks = N;
    if (tasks > 0) lm_pool_run(pool, drop_rows, &j, tasks);
}
