/* f32 matmuls for training, the three products a linear layer needs.
 * Each splits its output into disjoint row ranges so pool tasks never
 * write the same memory; results do not depend on the thread count.
 * Inner loops use GNU vector extensions of 4 lanes (16 bytes: the baseline
 * x86-64/arm64 SIMD width, so no ABI change across targets); the compiler
 * maps them to whatever SIMD it targets. Correctness first, speed later. */
#include <string.h>

#include "train/train_internal.h"

typedef float v4f __attribute__((vector_size(16)));

static inline v4f load4(const float *p) { v4f v; memcpy(&v, p, sizeof v); return v; }
static inline void store4(float *p, v4f v) { memcpy(p, &v, sizeof v); }

float lm_dot(const float *a, const float *b, int n) {
    v4f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 += load4(a + i) * load4(b + i);
        s1 += load4(a + i + 4) * load4(b + i + 4);
        s2 += load4(a + i + 8) * load4(b + i + 8);
        s3 += load4(a + i + 12) * load4(b + i + 12);
    }
    for (; i + 4 <= n; i += 4) s0 += load4(a + i) * load4(b + i);
    v4f s4 = (s0 + s1) + (s2 + s3);
    float s = (s4[0] + s4[2]) + (s4[1] + s4[3]);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* y[i] += alpha * x[i] */
static inline void axpy(float *y, float alpha, const float *x, int n) {
    v4f va = {alpha, alpha, alpha, alpha};
    int i = 0;
    for (; i + 4 <= n; i += 4) store4(y + i, load4(y + i) + va * load4(x + i));
    for (; i < n; i++) y[i] += alpha * x[i];
}

typedef struct mm_ctx {
    float *out;
    const float *a, *b;
    int n, in, out_dim, accumulate;
} mm_ctx;

static void range(int total, int task, int n_tasks, int *lo, int *hi) {
    *lo = (int)((int64_t)total * task / n_tasks);
    *hi = (int)((int64_t)total * (task + 1) / n_tasks);
}

static int n_tasks_for(lm_pool *pool, int rows) {
    int t = lm_pool_threads(pool) * 4;
    return t < rows ? t : (rows > 0 ? rows : 1);
}

#define TILE 64 /* rows of W kept hot while the batch rows stream past */

/* tasks own ranges of o: out[:, o] */
static void fwd_task(void *vctx, int task, int n_tasks, int thread) {
    const mm_ctx *c = vctx;
    int lo, hi;
    range(c->out_dim, task, n_tasks, &lo, &hi);
    for (int o0 = lo; o0 < hi; o0 += TILE) {
        int o1 = o0 + TILE < hi ? o0 + TILE : hi;
        for (int r = 0; r < c->n; r++) {
            const float *x = c->a + (size_t)r * c->in;
            float *y = c->out + (size_t)r * c->out_dim;
            for (int o = o0; o < o1; o++) {
                float d = lm_dot(x, c->b + (size_t)o * c->in, c->in);
                y[o] = c->accumulate ? y[o] + d : d;
            }
        }
    }
}

void lm_mm_fwd(lm_pool *pool, float *out, const float *x, const float *w,
               int n, int in, int out_dim, int accumulate) {
    mm_ctx c = { out, x, w, n, in, out_dim, accumulate };
    lm_pool_run(pool, fwd_task, &c, n_tasks_for(pool, out_dim));
}

/* tasks own ranges of batch rows: dx[r, :] */
static void bwd_x_task(void *vctx, int task, int n_tasks, int thread) {
    const mm_ctx *c = vctx;
    int lo, hi;
    range(c->n, task, n_tasks, &lo, &hi);
    for (int o0 = 0; o0 < c->out_dim; o0 += TILE) {
        int o1 = o0 + TILE < c->out_dim ? o0 + TILE : c->out_dim;
        for (int r = lo; r < hi; r++) {
            const float *dy = c->a + (size_t)r * c->out_dim;
            float *dx = c->out + (size_t)r * c->in;
            for (int o = o0; o < o1; o++)
                if (dy[o] != 0.0f) axpy(dx, dy[o], c->b + (size_t)o * c->in, c->in);
        }
    }
}

void lm_mm_bwd_x(lm_pool *pool, float *dx, const float *dy, const float *w,
                 int n, int in, int out_dim) {
    mm_ctx c = { dx, dy, w, n, in, out_dim, 1 };
    lm_pool_run(pool, bwd_x_task, &c, n_tasks_for(pool, n));
}

/* tasks own ranges of o: dw[o, :] */
static void bwd_w_task(void *vctx, int task, int n_tasks, int thread) {
    const mm_ctx *c = vctx;
    int lo, hi;
    range(c->out_dim, task, n_tasks, &lo, &hi);
    for (int o0 = lo; o0 < hi; o0 += TILE) {
        int o1 = o0 + TILE < hi ? o0 + TILE : hi;
        for (int r = 0; r < c->n; r++) {
            const float *dy = c->a + (size_t)r * c->out_dim;
            const float *x = c->b + (size_t)r * c->in;
            for (int o = o0; o < o1; o++)
                if (dy[o] != 0.0f) axpy(c->out + (size_t)o * c->in, dy[o], x, c->in);
        }
    }
}

void lm_mm_bwd_w(lm_pool *pool, float *dw, const float *dy, const float *x,
                 int n, int in, int out_dim) {
    mm_ctx c = { dw, dy, x, n, in, out_dim, 1 };
    lm_pool_run(pool, bwd_w_task, &c, n_tasks_for(pool, out_dim));
}
