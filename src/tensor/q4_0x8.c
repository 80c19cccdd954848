/* Q4_0 x8 repacking, the portable tiles, and the matmul driver for
 * repacked weights (see q4_0x8.h).
 *
 * Driver: x is quantized once per call (rows split over the pool), then
 * tasks run tiles. Decode (m == 1) is memory-bound: a task is a run of
 * whole row groups, streamed once. Prompts are compute-bound: a task is
 * (x rows chunk) x (row groups chunk), small enough that the W chunk stays
 * in L1/L2 while the chunk's x tiles pass over it. */
#include "tensor/q4_0x8.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/kernels.h"
#include "tensor/ops.h"

size_t lm_q4x8_bytes(int n, int k) {
    if (n <= 0 || k <= 0 || n % 8 || k % LM_QK) return 0;
    return (size_t)(n / 8) * (size_t)(k / LM_QK) * sizeof(lm_block_q4_0x8);
}

void lm_q4x8_repack(const void *src, int n, int k, void *dst) {
    const lm_block_q4_0 *in = src;
    lm_block_q4_0x8 *out = dst;
    const int nb = k / LM_QK;
    for (int g = 0; g < n / 8; g++)
        for (int b = 0; b < nb; b++, out++) {
            for (int r = 0; r < 8; r++) {
                const lm_block_q4_0 *blk = in + (size_t)(8 * g + r) * nb + b;
                out->d[r] = blk->d;
                for (int c = 0; c < 4; c++) memcpy(out->q + 32 * c + 4 * r, blk->q + 4 * c, 4);
            }
        }
}

void lm_q4x8_dequant_row(const void *W, int row, int k, float *out) {
    const int nb = k / LM_QK, r = row % 8;
    const lm_block_q4_0x8 *blk = (const lm_block_q4_0x8 *)W + (size_t)(row / 8) * nb;
    for (int b = 0; b < nb; b++, out += LM_QK) {
        const float d = lm_f16_to_f32(blk[b].d[r]);
        for (int c = 0; c < 4; c++)
            for (int e = 0; e < 4; e++) {
                const int v = blk[b].q[32 * c + 4 * r + e];
                out[4 * c + e] = (float)((v & 0x0f) - 8) * d;
                out[16 + 4 * c + e] = (float)((v >> 4) - 8) * d;
            }
    }
}

/* ---- portable tiles -------------------------------------------------- */

/* The scalar kernel set's Q4_0 arithmetic (matmul_scalar.c dot_q4_0):
 * acc += (float)isum * (dw * dx), no fma, so a repacked matrix gives that
 * set's numbers bit for bit. */
static void tile_scalar(int nb, const lm_block_q4_0x8 *w, const lm_q4x8_x *x, float *y,
                        size_t ldy, int rows) {
    for (int i = 0; i < rows; i++) {
        const int8_t *xq = x->q + (size_t)i * x->q_stride;
        const float *xd = x->d + (size_t)i * x->s_stride;
        for (int r = 0; r < 8; r++) {
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                const uint8_t *q = w[b].q;
                const int8_t *xb = xq + b * LM_QK;
                int isum = 0;
                for (int c = 0; c < 4; c++)
                    for (int e = 0; e < 4; e++) {
                        const int v = q[32 * c + 4 * r + e];
                        isum += ((v & 0x0f) - 8) * xb[4 * c + e];
                        isum += ((v >> 4) - 8) * xb[16 + 4 * c + e];
                    }
                const float scale = lm_f16_to_f32(w[b].d[r]) * xd[b];
                acc += (float)isum * scale;
            }
            y[(size_t)i * ldy + r] = acc;
        }
    }
}

static void scalar_row1(int nb, const lm_block_q4_0x8 *w, const lm_q4x8_x *x, float *y,
                        size_t ldy) {
    tile_scalar(nb, w, x, y, ldy, 1);
}

static void scalar_rowsN(int nb, const lm_block_q4_0x8 *w, const lm_q4x8_x *x, float *y,
                         size_t ldy) {
    tile_scalar(nb, w, x, y, ldy, LM_Q4X8_MR);
}

static const lm_q4x8_tiles tiles_scalar = {scalar_row1, scalar_rowsN, NULL};

/* ---- driver ---------------------------------------------------------- */

typedef struct q4x8_part {
    float *y;                 /* [m, n] */
    const lm_block_q4_0x8 *W; /* n/8 groups of nb blocks */
    int n;
    int groups_per_task, tasks_n, task0;
} q4x8_part;

typedef struct q4x8_job {
    const lm_kernels *ks;
    const lm_q4x8_tiles *tiles;
    q4x8_part part[LM_MATMUL_MAX_PARTS];
    int n_parts;
    const float *x; /* [m, k] */
    int m, k, mc;   /* mc: x rows per task */
    lm_q4x8_x xq;   /* x in 8 bit, row by row */
} q4x8_job;

static void quant_task(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    q4x8_job *j = ctx;
    const int r0 = (int)((long)j->m * task / n_tasks), r1 = (int)((long)j->m * (task + 1) / n_tasks);
    for (int r = r0; r < r1; r++)
        j->ks->quant_x(j->x + (size_t)r * j->k, j->k, (int8_t *)j->xq.q + (size_t)r * j->xq.q_stride,
                       (float *)j->xq.d + (size_t)r * j->xq.s_stride, NULL,
                       (int32_t *)j->xq.qsum + (size_t)r * j->xq.s_stride, 1);
}

static void mm_task(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks;
    (void)thread;
    const q4x8_job *j = ctx;
    int pi = j->n_parts - 1;
    while (task < j->part[pi].task0) pi--;
    const q4x8_part *P = &j->part[pi];
    task -= P->task0;
    const int nb = j->k / LM_QK, groups = P->n / 8;
    const int g0 = task % P->tasks_n * P->groups_per_task;
    const int g1 = g0 + P->groups_per_task < groups ? g0 + P->groups_per_task : groups;
    const int m0 = task / P->tasks_n * j->mc, m1 = m0 + j->mc < j->m ? m0 + j->mc : j->m;
    for (int i0 = m0; i0 < m1; i0 += LM_Q4X8_MR) {
        const int rows = m1 - i0 < LM_Q4X8_MR ? m1 - i0 : LM_Q4X8_MR;
        lm_q4x8_x xt = j->xq;
        for (int i = 0; i < rows; i += rows == LM_Q4X8_MR ? LM_Q4X8_MR : 1) {
            xt.q = j->xq.q + (size_t)(i0 + i) * j->xq.q_stride;
            xt.d = j->xq.d + (size_t)(i0 + i) * j->xq.s_stride;
            xt.qsum = j->xq.qsum + (size_t)(i0 + i) * j->xq.s_stride;
            const lm_q4x8_tile_fn fn = rows == LM_Q4X8_MR ? j->tiles->rowsN : j->tiles->row1;
            const lm_q4x8_tile_fn fn16 = rows == LM_Q4X8_MR ? j->tiles->rowsN_16 : NULL;
            for (int g = g0; g < g1;) {
                const int two = fn16 && g + 1 < g1;
                (two ? fn16 : fn)(nb, P->W + (size_t)g * nb, &xt, P->y + (size_t)(i0 + i) * P->n + 8 * g,
                                  (size_t)P->n);
                g += two ? 2 : 1;
            }
        }
    }
}

static void run_tiles(q4x8_job *j, lm_pool *pool) {
    const int threads = lm_pool_threads(pool);
    int groups_all = 0;
    for (int p = 0; p < j->n_parts; p++) groups_all += j->part[p].n / 8;
    int gpt;
    if (j->m == 1) {
        /* ~8 tasks per thread: evens out a slowed-down thread at no cost */
        j->mc = 1;
        gpt = (groups_all + threads * 8 - 1) / (threads * 8);
        gpt = gpt < 4 ? 4 : gpt;
    } else {
        j->mc = 64;
        gpt = 4;
        /* Few W rows and one chunk of x: cut x finer so all threads work. */
        if (threads > 1 && (groups_all + gpt - 1) / gpt < threads * 2) {
            const int per = (j->m + threads * 2 - 1) / (threads * 2);
            j->mc = (per + LM_Q4X8_MR - 1) / LM_Q4X8_MR * LM_Q4X8_MR;
        }
    }
    const int tasks_m = (j->m + j->mc - 1) / j->mc;
    int tasks = 0;
    for (int p = 0; p < j->n_parts; p++) {
        q4x8_part *P = &j->part[p];
        P->groups_per_task = gpt;
        P->tasks_n = (P->n / 8 + gpt - 1) / gpt;
        P->task0 = tasks;
        tasks += P->tasks_n * tasks_m;
    }
    lm_pool_run(pool, mm_task, j, tasks);
}

static size_t xq_bytes(int rows, int k) {
    /* d and qsum first (4-byte aligned), then q */
    return (size_t)rows * ((size_t)(k / LM_QK) * 8 + (size_t)k);
}

void lm_q4x8_matmul_multi(const lm_kernels *ks, lm_pool *pool, int count, float *const *ys,
                          const void *const *Ws, const int *ns, const float *x, int m, int k) {
    if (m <= 0 || count <= 0) return;
    assert(count <= LM_MATMUL_MAX_PARTS && k % LM_QK == 0);
    q4x8_job j = {.ks = ks, .tiles = &tiles_scalar, .x = x, .m = m, .k = k};
#ifdef LM_HAVE_X86_KERNELS
    /* the tiles of the caller's set (a set is only handed out where the CPU
     * runs it: lm_kernels_by_name / lm_kernels_default checked) */
    if (ks == &lm_kernels_avx2) j.tiles = &lm_q4x8_tiles_avx2;
    else if (ks == &lm_kernels_avx512) j.tiles = &lm_q4x8_tiles_avx512;
#endif
    for (int p = 0; p < count; p++) {
        if (ns[p] <= 0) continue;
        assert(ns[p] % 8 == 0);
        j.part[j.n_parts++] = (q4x8_part){.y = ys[p], .W = Ws[p], .n = ns[p] / 8 * 8};
    }
    if (j.n_parts == 0) return;
    /* x in 8 bit: on the stack for decode, else on the heap; if the heap
     * says no, a row at a time through the stack (same numbers: every tile
     * shape computes each output alike). */
    _Alignas(64) unsigned char stack[16384];
    unsigned char *buf;
    const int rows_per_pass = lm_mm_scratch(xq_bytes(m, k), xq_bytes(1, k), m, stack, sizeof stack, &buf);
    if (!rows_per_pass) {
        lm_mm_fill_nan(count, ys, ns, m);
        return;
    }
    const int nb = k / LM_QK;
    for (int r0 = 0; r0 < m; r0 += rows_per_pass) {
        const int rows = m - r0 < rows_per_pass ? m - r0 : rows_per_pass;
        j.m = rows;
        j.x = x + (size_t)r0 * k;
        for (int p = 0, q = 0; p < count; p++)
            if (ns[p] > 0) j.part[q++].y = ys[p] + (size_t)r0 * ns[p];
        j.xq = (lm_q4x8_x){
            .d = (const float *)buf,
            .qsum = (const int32_t *)(buf + (size_t)rows * nb * sizeof(float)),
            .q = (const int8_t *)(buf + (size_t)rows * nb * 8),
            .q_stride = (size_t)k,
            .s_stride = (size_t)nb,
        };
        const int threads = lm_pool_threads(pool);
        if (rows == 1)
            quant_task(&j, 0, 1, 0);
        else
            lm_pool_run(pool, quant_task, &j, rows < threads * 4 ? rows : threads * 4);
        run_tiles(&j, pool);
    }
    if (buf != stack) free(buf);
}
