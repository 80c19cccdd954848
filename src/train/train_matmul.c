/* f32 matmuls for training, the three products a linear layer needs.
 * Each splits its output into disjoint row ranges so pool tasks never
 * write the same memory; results do not depend on the thread count.
 *
 * Kernels are plain loops written so the compiler vectorises them: dot
 * products keep 8 independent partial sums per row (an array the SLP
 * vectoriser maps onto SIMD registers, no -ffast-math reassociation
 * needed), and the axpy-style updates fold 4 rows per pass so each store
 * carries 4 multiply-adds. On x86-64 Linux, target_clones builds an AVX2
 * copy next to the baseline one and the loader picks per CPU. */
#include <stdlib.h>
#include <string.h>

#include "tensor/ops.h"
#include "train/tmm.h"
#include "train/train_internal.h"

/* The blocked GEMM of the kernel set the tensor module runs (LEMONPC_KERNELS,
 * else the widest this CPU has): one decision for inference and training.
 * The scalar set takes the portable loops below. lm_tacts_new checked the
 * set (lm_kernels_check), so lm_kernels_name cannot fail here. */
static int tmm_kind(void) {
    const char *name = lm_kernels_name();
    if (!strcmp(name, "avx512")) return LM_TMM_AVX512;
    if (!strcmp(name, "avx2")) return LM_TMM_AVX2;
    return LM_TMM_NONE;
}

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define LANES 8

ALWAYS_INLINE float dot1(const float *restrict a, const float *restrict b, int n) {
    float acc[LANES] = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* out[k] = x . w_k for 4 rows w_k, sharing the loads of x */
ALWAYS_INLINE void dot4(float out[4], const float *restrict x, const float *restrict w0,
                        const float *restrict w1, const float *restrict w2,
                        const float *restrict w3, int n) {
    float a0[LANES] = {0}, a1[LANES] = {0}, a2[LANES] = {0}, a3[LANES] = {0};
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float xv = x[i + j];
            a0[j] += xv * w0[i + j];
            a1[j] += xv * w1[i + j];
            a2[j] += xv * w2[i + j];
            a3[j] += xv * w3[i + j];
        }
    float *acc[4] = { a0, a1, a2, a3 };
    const float *w[4] = { w0, w1, w2, w3 };
    for (int k = 0; k < 4; k++) {
        float *c = acc[k];
        float s = ((c[0] + c[4]) + (c[1] + c[5])) + ((c[2] + c[6]) + (c[3] + c[7]));
        for (int t = i; t < n; t++) s += x[t] * w[k][t];
        out[k] = s;
    }
}

/* y += c0 x0 + c1 x1 + c2 x2 + c3 x3. Each block of LANES is read into a
 * local before it is stored, so the block vectorises without alias checks
 * (GCC's -O2 cost model refuses loops that would need them). */
ALWAYS_INLINE void axpy4(float *restrict y, float c0, const float *restrict x0, float c1,
                         const float *restrict x1, float c2, const float *restrict x2,
                         float c3, const float *restrict x3, int n) {
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        float t[LANES];
        for (int j = 0; j < LANES; j++)
            t[j] = y[i + j] + ((c0 * x0[i + j] + c1 * x1[i + j]) + (c2 * x2[i + j] + c3 * x3[i + j]));
        for (int j = 0; j < LANES; j++) y[i + j] = t[j];
    }
    for (; i < n; i++) y[i] += ((c0 * x0[i] + c1 * x1[i]) + (c2 * x2[i] + c3 * x3[i]));
}

ALWAYS_INLINE void axpy1(float *restrict y, float c, const float *restrict x, int n) {
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        float t[LANES];
        for (int j = 0; j < LANES; j++) t[j] = y[i + j] + c * x[i + j];
        for (int j = 0; j < LANES; j++) y[i + j] = t[j];
    }
    for (; i < n; i++) y[i] += c * x[i];
}

SIMD_CLONES float lm_dot(const float *a, const float *b, int n) { return dot1(a, b, n); }

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

#define TILE 64 /* rows of W kept hot in L2 while the batch rows stream past */

/* tasks own ranges of o: out[:, o] */
SIMD_CLONES static void fwd_task(void *vctx, int task, int n_tasks, int thread) {
    const mm_ctx *c = vctx;
    int lo, hi, in = c->in;
    range(c->out_dim, task, n_tasks, &lo, &hi);
    for (int o0 = lo; o0 < hi; o0 += TILE) {
        int o1 = o0 + TILE < hi ? o0 + TILE : hi;
        for (int r = 0; r < c->n; r++) {
            const float *x = c->a + (size_t)r * in;
            float *y = c->out + (size_t)r * c->out_dim;
            int o = o0;
            for (; o + 4 <= o1; o += 4) {
                const float *w = c->b + (size_t)o * in;
                float d[4];
                dot4(d, x, w, w + in, w + 2 * (size_t)in, w + 3 * (size_t)in, in);
                for (int k = 0; k < 4; k++) y[o + k] = c->accumulate ? y[o + k] + d[k] : d[k];
            }
            for (; o < o1; o++) {
                float d = dot1(x, c->b + (size_t)o * in, in);
                y[o] = c->accumulate ? y[o] + d : d;
            }
        }
    }
}

void lm_mm_fwd(lm_pool *pool, int bf16, float *out, const float *x, const float *w,
               int n, int in, int out_dim, int accumulate) {
    int k;
    if (bf16 && lm_tmm_bf16(pool, out, out_dim, x, in, 1, w, 1, in, n, out_dim, in, accumulate) == 0)
        return;
    if ((k = tmm_kind()) &&
        lm_tmm(pool, k, out, out_dim, x, in, 1, w, 1, in, n, out_dim, in, accumulate) == 0)
        return;
    mm_ctx c = { out, x, w, n, in, out_dim, accumulate };
    lm_pool_run(pool, fwd_task, &c, n_tasks_for(pool, out_dim));
}

/* tasks own ranges of batch rows: dx[r, :] */
SIMD_CLONES static void bwd_x_task(void *vctx, int task, int n_tasks, int thread) {
    const mm_ctx *c = vctx;
    int lo, hi, in = c->in;
    range(c->n, task, n_tasks, &lo, &hi);
    for (int o0 = 0; o0 < c->out_dim; o0 += TILE) {
        int o1 = o0 + TILE < c->out_dim ? o0 + TILE : c->out_dim;
        for (int r = lo; r < hi; r++) {
            const float *dy = c->a + (size_t)r * c->out_dim;
            float *dx = c->out + (size_t)r * in;
            int o = o0;
            for (; o + 4 <= o1; o += 4) {
                if (dy[o] == 0.0f && dy[o + 1] == 0.0f && dy[o + 2] == 0.0f && dy[o + 3] == 0.0f)
                    continue;   /* masked-out rows of the loss are all zero */
                const float *w = c->b + (size_t)o * in;
                axpy4(dx, dy[o], w, dy[o + 1], w + in, dy[o + 2], w + 2 * (size_t)in,
                      dy[o + 3], w + 3 * (size_t)in, in);
            }
            for (; o < o1; o++) axpy1(dx, dy[o], c->b + (size_t)o * in, in);
        }
    }
}

/* Split over o instead: task p computes part[p] = dy[:, o-range] W[o-range]
 * for every row, reading its slice of W from memory once. */
typedef struct bwdx_part_ctx {
    float *part;            /* [P, n, in] */
    float *dx;              /* [n, in], the destination of the reduction */
    const float *dy, *w;
    int n, in, out_dim, P;
} bwdx_part_ctx;

SIMD_CLONES static void bwd_x_part_task(void *vctx, int task, int n_tasks, int thread) {
    const bwdx_part_ctx *c = vctx;
    int lo, hi, in = c->in;
    range(c->out_dim, task, n_tasks, &lo, &hi);
    float *part = c->part + (size_t)task * c->n * in;
    memset(part, 0, (size_t)c->n * in * sizeof(float));
    for (int o0 = lo; o0 < hi; o0 += TILE) {
        int o1 = o0 + TILE < hi ? o0 + TILE : hi;
        for (int r = 0; r < c->n; r++) {
            const float *dy = c->dy + (size_t)r * c->out_dim;
            float *dx = part + (size_t)r * in;
            int o = o0;
            for (; o + 4 <= o1; o += 4) {
                if (dy[o] == 0.0f && dy[o + 1] == 0.0f && dy[o + 2] == 0.0f && dy[o + 3] == 0.0f)
                    continue;
                const float *w = c->w + (size_t)o * in;
                axpy4(dx, dy[o], w, dy[o + 1], w + in, dy[o + 2], w + 2 * (size_t)in,
                      dy[o + 3], w + 3 * (size_t)in, in);
            }
            for (; o < o1; o++) axpy1(dx, dy[o], c->w + (size_t)o * in, in);
        }
    }
}

/* dx[r] += part[0][r] + part[1][r] + ... in a fixed order */
SIMD_CLONES static void bwd_x_reduce_task(void *vctx, int task, int n_tasks, int thread) {
    const bwdx_part_ctx *c = vctx;
    float *dx = c->dx;
    int lo, hi;
    range(c->n, task, n_tasks, &lo, &hi);
    for (int r = lo; r < hi; r++)
        for (int p = 0; p < c->P; p++)
            axpy1(dx + (size_t)r * c->in, 1.0f, c->part + ((size_t)p * c->n + r) * c->in, c->in);
}

/* A W of more than this many elements is streamed from memory, not cache:
 * the LM head (49152 x 576). */
#define BIG_W (4u << 20)
#define PARTS 8   /* fixed, so results do not depend on the thread count */

void lm_mm_bwd_x(lm_pool *pool, int bf16, float *dx, const float *dy, const float *w,
                 int n, int in, int out_dim) {
    int k;
    if (bf16 && lm_tmm_bf16(pool, dx, in, dy, out_dim, 1, w, in, 1, n, in, out_dim, 1) == 0)
        return;
    if ((k = tmm_kind()) && lm_tmm(pool, k, dx, in, dy, out_dim, 1, w, in, 1, n, in, out_dim, 1) == 0)
        return;
    if ((size_t)out_dim * in > BIG_W && n <= 512) {
        float *part = malloc((size_t)PARTS * n * in * sizeof(float));
        if (part) {
            bwdx_part_ctx c = { part, dx, dy, w, n, in, out_dim, PARTS };
            lm_pool_run(pool, bwd_x_part_task, &c, PARTS);
            lm_pool_run(pool, bwd_x_reduce_task, &c, n_tasks_for(pool, n));
            free(part);
            return;
        }
        /* out of memory: the row-split path below needs no scratch */
    }
    mm_ctx c = { dx, dy, w, n, in, out_dim, 1 };
    lm_pool_run(pool, bwd_x_task, &c, n_tasks_for(pool, n));
}

/* tasks own ranges of o: dw[o, :] */
SIMD_CLONES static void bwd_w_task(void *vctx, int task, int n_tasks, int thread) {
    const mm_ctx *c = vctx;
    int lo, hi, in = c->in, od = c->out_dim;
    range(od, task, n_tasks, &lo, &hi);
    for (int o = lo; o < hi; o++) {
        float *dw = c->out + (size_t)o * in;
        const float *dy = c->a + o;   /* dy[r * od] */
        int r = 0;
        for (; r + 4 <= c->n; r += 4) {
            float d0 = dy[(size_t)r * od], d1 = dy[(size_t)(r + 1) * od];
            float d2 = dy[(size_t)(r + 2) * od], d3 = dy[(size_t)(r + 3) * od];
            if (d0 == 0.0f && d1 == 0.0f && d2 == 0.0f && d3 == 0.0f) continue;
            const float *x = c->b + (size_t)r * in;
            axpy4(dw, d0, x, d1, x + in, d2, x + 2 * (size_t)in, d3, x + 3 * (size_t)in, in);
        }
        for (; r < c->n; r++) axpy1(dw, dy[(size_t)r * od], c->b + (size_t)r * in, in);
    }
}

void lm_mm_bwd_w(lm_pool *pool, int bf16, float *dw, const float *dy, const float *x,
                 int n, int in, int out_dim) {
    int k;
    if (bf16 && lm_tmm_bf16(pool, dw, in, dy, 1, out_dim, x, in, 1, out_dim, in, n, 1) == 0)
        return;
    if ((k = tmm_kind()) && lm_tmm(pool, k, dw, in, dy, 1, out_dim, x, in, 1, out_dim, in, n, 1) == 0)
        return;
    mm_ctx c = { dw, dy, x, n, in, out_dim, 1 };
    lm_pool_run(pool, bwd_w_task, &c, n_tasks_for(pool, out_dim));
}
