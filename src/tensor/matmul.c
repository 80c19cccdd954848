/* lm_matmul: splits y[m, n] = x[m, k] @ W[n, k]^T into tiles and tasks,
 * quantizes x once per call for quantized W, and picks the kernel set.
 *
 * Decode (m == 1) is memory-bound: tasks are contiguous chunks of W rows,
 * so each weight byte is streamed once. Prompts (m > 1) are compute-bound:
 * tasks are (x rows chunk) x (W rows chunk) blocks small enough that the
 * W chunk stays in L1/L2 while every x tile of the chunk passes over it. */
#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/kernels.h"
#ifdef LM_HAVE_X86_KERNELS
#include <cpuid.h>
#endif
#include "tensor/ops.h"
#include "tensor/q4_0x8.h"

/* ---- kernel set selection ------------------------------------------- */

#ifdef LM_HAVE_X86_KERNELS
/* XCR0, the register state the OS saves and restores on a context switch
 * (XGETBV 0). Inline asm: the _xgetbv intrinsic wants -mxsave. Only called
 * after CPUID said OSXSAVE (else XGETBV faults). */
static uint64_t xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

/* CPUID says what the core implements; XCR0 says whether the OS enabled the
 * registers: a CPU with AVX-512 under an OS (or hypervisor) that does not
 * save zmm/opmask state must not run AVX-512 code. */
typedef struct cpu_feats {
    int avx2; /* AVX2 + FMA + F16C, OS saves ymm */
    int avx512; /* + AVX-512 F/BW/DQ/VL/VNNI/BF16, OS saves opmask and zmm */
} cpu_feats;

static cpu_feats cpu_feats_probe(void) {
    cpu_feats f = {0, 0};
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx || __get_cpuid_max(0, NULL) < 7) return f;
    const uint64_t x = xcr0();
    if ((x & 0x6) != 0x6) return f; /* XMM and YMM state */
    unsigned max7, b7, c7, d7, a71 = 0, b71, c71, d71;
    __cpuid_count(7, 0, max7, b7, c7, d7);
    if (max7 >= 1) __cpuid_count(7, 1, a71, b71, c71, d71);
    f.avx2 = ((b7 >> 5) & 1) && fma && f16c;
    const unsigned need_b7 = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31); /* F DQ BW VL */
    const int vnni = (c7 >> 11) & 1, bf16 = (a71 >> 5) & 1;
    /* XCR0 bits 5-7: opmask, upper halves of zmm0-15, zmm16-31 */
    f.avx512 = f.avx2 && (b7 & need_b7) == need_b7 && vnni && bf16 && (x & 0xe0) == 0xe0;
    return f;
}

/* Probed once (CPUID traps to the hypervisor in a VM: microseconds), then
 * read-only, like g_kernels below. */
static pthread_once_t g_feats_once = PTHREAD_ONCE_INIT;
static cpu_feats g_feats;
static void feats_init(void) { g_feats = cpu_feats_probe(); }
static cpu_feats cpu_feats_read(void) {
    pthread_once(&g_feats_once, feats_init);
    return g_feats;
}
#endif

const lm_kernels *lm_kernels_by_name(const char *name) {
    if (!name) return NULL;
    if (!strcmp(name, "scalar")) return &lm_kernels_scalar;
#ifdef LM_HAVE_X86_KERNELS
    const cpu_feats f = cpu_feats_read();
    if (!strcmp(name, "avx2") && f.avx2) return &lm_kernels_avx2;
    if (!strcmp(name, "avx512") && f.avx512) return &lm_kernels_avx512;
#endif
    return NULL;
}

int lm_kernels_select(const char *name, const lm_kernels **out, lm_err *err) {
    static const char *const all[] = {"avx512", "avx2", "scalar"};
    enum { N_ALL = sizeof all / sizeof all[0] };
    *out = NULL;
    if (!name || !*name) {
        for (int i = 0; i < N_ALL && !*out; i++) *out = lm_kernels_by_name(all[i]);
        return 0;
    }
    if ((*out = lm_kernels_by_name(name)) != NULL) return 0;
    char have[64] = "";
    for (int i = 0; i < N_ALL; i++)
        if (lm_kernels_by_name(all[i]))
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%s", *have ? ", " : "", all[i]);
    int known = 0;
    for (int i = 0; i < N_ALL; i++) known |= !strcmp(name, all[i]);
    if (!known)
        return lm_errf(err, "LEMONPC_KERNELS=%s: unknown kernel set (known: avx512, avx2, scalar; "
                            "this machine runs: %s)", name, have);
    return lm_errf(err, "LEMONPC_KERNELS=%s: this CPU (or its OS) does not support the %s kernel "
                        "set%s; this machine runs: %s", name, name,
                   !strcmp(name, "avx512")
                       ? " (it needs AVX-512 F, BW, DQ, VL, VNNI and BF16, with the zmm and opmask "
                         "state enabled by the OS)"
                       : !strcmp(name, "avx2") ? " (it needs AVX2, FMA and F16C)" : "",
                   have);
}

/* Written once under pthread_once, read-only afterwards (with g_feats, the
 * only statics that are not constants). NULL when LEMONPC_KERNELS names no set this
 * machine runs (lm_kernels_check says why). */
static pthread_once_t g_kernels_once = PTHREAD_ONCE_INIT;
static const lm_kernels *g_kernels;

static void kernels_init(void) { lm_kernels_select(getenv("LEMONPC_KERNELS"), &g_kernels, NULL); }

const lm_kernels *lm_kernels_default(void) {
    pthread_once(&g_kernels_once, kernels_init);
    return g_kernels;
}

int lm_kernels_check(lm_err *err) {
    if (lm_kernels_default()) return 0;
    /* the message again from the same (pure) selection */
    const lm_kernels *ks;
    if (lm_kernels_select(getenv("LEMONPC_KERNELS"), &ks, err) == 0)
        return lm_errf(err, "LEMONPC_KERNELS changed after the kernel set was picked");
    return -1;
}

const lm_kernels *lm_kernels_run(void) {
    const lm_kernels *ks = lm_kernels_default();
    if (!ks) {
        lm_err e = {{0}};
        lm_kernels_check(&e);
        fprintf(stderr, "lemonpc: %s\n", e.msg);
        abort();
    }
    return ks;
}

/* ---- driver ---------------------------------------------------------- */

static int weight_index(lm_dtype t) {
    switch (t) {
    case LM_F32: return LM_WT_F32;
    case LM_F16: return LM_WT_F16;
    case LM_BF16: return LM_WT_BF16;
    case LM_Q8_0: return LM_WT_Q8_0;
    case LM_Q4_0: return LM_WT_Q4_0;
    case LM_Q4_1: return LM_WT_Q4_1;
    case LM_Q8_1: break;
    }
    return -1;
}

/* One W of a job: its tasks are numbered [task0, task0 + tasks_n * tasks_m). */
typedef struct mm_part {
    float *y;           /* [m, n] */
    const char *W;      /* [n, k] in wtype */
    int n;
    int nc, tasks_n;    /* rows of W per task, tasks along n */
    int task0;
} mm_part;

typedef struct mm_job {
    const lm_kernels *ks;
    lm_tile tile;
    mm_part part[LM_MATMUL_MAX_PARTS];
    int n_parts;
    const float *x;     /* [m, k] */
    size_t wrow;        /* bytes per W row */
    int m, k;
    int quant;          /* x goes through quant_x */
    int8_t *xq;         /* [m_pad, k], m_pad = m rounded up to LM_XQ_GROUP */
    float *xd, *xs;     /* [m_pad/G, k/32, G] (see kernels.h); xs NULL unless Q4_1 */
    int32_t *xsum;      /* same layout; NULL unless Q4_0 */
    /* the gemm tile's own form of x (ks->prep_x), [m_pad, LM_QX_BYTES(k)]; NULL if none */
    void (*prep)(const int8_t *q, int k, int8_t *qx);
    int8_t *xqx;
    int mc;             /* rows of x per task */
} mm_job;

static size_t scale_index(int row, int nb) {
    return (size_t)(row / LM_XQ_GROUP) * nb * LM_XQ_GROUP + row % LM_XQ_GROUP;
}

static void quant_task(void *ctx, int task, int n_tasks, int thread) {
    (void)thread;
    mm_job *j = ctx;
    int r0 = (int)((long)j->m * task / n_tasks), r1 = (int)((long)j->m * (task + 1) / n_tasks);
    int nb = j->k / LM_QK;
    for (int r = r0; r < r1; r++)
        j->ks->quant_x(j->x + (size_t)r * j->k, j->k, j->xq + (size_t)r * j->k,
                       j->xd + scale_index(r, nb), j->xs ? j->xs + scale_index(r, nb) : NULL,
                       j->xsum ? j->xsum + scale_index(r, nb) : NULL, LM_XQ_GROUP);
    if (j->prep)
        for (int r = r0; r < r1; r++)
            j->prep(j->xq + (size_t)r * j->k, j->k, j->xqx + (size_t)r * LM_QX_BYTES(j->k));
}

static void mm_task(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks;
    (void)thread;
    const mm_job *j = ctx;
    const int mr = j->tile.mr, nr = j->tile.nr, k = j->k, nb = k / LM_QK;
    int pi = j->n_parts - 1;
    while (task < j->part[pi].task0) pi--;
    const mm_part *P = &j->part[pi];
    task -= P->task0;
    const int tn = task % P->tasks_n, tm = task / P->tasks_n;
    const int n0 = tn * P->nc, n1 = n0 + P->nc < P->n ? n0 + P->nc : P->n;
    const int m0 = tm * j->mc, m1 = m0 + j->mc < j->m ? m0 + j->mc : j->m;
    lm_xtile xt = {{NULL}, NULL, NULL, NULL, NULL, NULL};
    const void *wr[LM_TILE_MAX_NR];
    float out[LM_TILE_MAX_MR * LM_TILE_MAX_NR];
    for (int i0 = m0; i0 < m1; i0 += mr) {
        const int mi = m1 - i0 < mr ? m1 - i0 : mr;
        if (j->quant) {
            /* rows past m are the zero padding of the group */
            xt.q = j->xq + (size_t)i0 * k;
            xt.d = j->xd + scale_index(i0, nb);
            xt.s = j->xs ? j->xs + scale_index(i0, nb) : NULL;
            xt.qsum = j->xsum ? j->xsum + scale_index(i0, nb) : NULL;
            xt.qx = j->xqx ? j->xqx + (size_t)i0 * LM_QX_BYTES(k) : NULL;
        } else {
            /* rows past the end repeat the last one; their results are dropped */
            for (int i = 0; i < mr; i++) xt.f[i] = j->x + (size_t)(i0 + (i < mi ? i : mi - 1)) * k;
        }
        for (int j0 = n0; j0 < n1; j0 += nr) {
            const int nj = n1 - j0 < nr ? n1 - j0 : nr;
            for (int c = 0; c < nr; c++) wr[c] = P->W + (size_t)(j0 + (c < nj ? c : nj - 1)) * j->wrow;
            j->tile.fn(k, wr, &xt, out);
            for (int i = 0; i < mi; i++)
                memcpy(P->y + (size_t)(i0 + i) * P->n + j0, out + i * nr, (size_t)nj * sizeof(float));
        }
    }
}

static int round_up(int v, int to) { return (v + to - 1) / to * to; }

/* Runs the tiles of rows [0, m) of x, whose 8-bit form (if any) is in
 * xq/xd/xs, against every part, in one pool dispatch. */
static void run_tiles(mm_job *j, lm_pool *pool) {
    const int threads = lm_pool_threads(pool);
    int n_all = 0;
    for (int p = 0; p < j->n_parts; p++) n_all += j->part[p].n;
    int nc = 0;
    if (j->m == 1) {
        /* ~8 tasks per thread: enough to even out a thread that is slowed
         * down, few enough that claiming them costs nothing. */
        j->mc = 1;
        nc = round_up((n_all + threads * 8 - 1) / (threads * 8), j->tile.nr * 4);
    } else {
        j->mc = round_up(64, j->tile.mr);
        nc = round_up(32, j->tile.nr);
        /* Few W rows and one chunk of x: cut x finer so all threads work. */
        if (threads > 1 && (n_all + nc - 1) / nc < threads * 2)
            j->mc = round_up((j->m + threads * 2 - 1) / (threads * 2), j->tile.mr);
    }
    const int tasks_m = (j->m + j->mc - 1) / j->mc;
    int tasks = 0;
    for (int p = 0; p < j->n_parts; p++) {
        mm_part *P = &j->part[p];
        P->nc = nc;
        P->tasks_n = (P->n + nc - 1) / nc;
        P->task0 = tasks;
        tasks += P->tasks_n * tasks_m;
    }
    lm_pool_run(pool, mm_task, j, tasks);
}

/* Bytes of 8-bit activations for m rows: q, d and s (or qsum) for m padded
 * to a group, and the gemm tile's own form when it has one (prep). */
static size_t xq_bytes(int m, int k, int prep) {
    size_t rows = (size_t)round_up(m, LM_XQ_GROUP);
    return rows * (size_t)k + rows * (size_t)(k / LM_QK) * 2 * sizeof(float) +
           (prep ? rows * LM_QX_BYTES(k) : 0);
}

void lm_mm_fill_nan(int count, float *const *ys, const int *ns, int m) {
    for (int p = 0; p < count; p++)
        for (size_t i = 0; i < (size_t)m * (size_t)ns[p]; i++) ys[p][i] = NAN;
}

int lm_mm_scratch(size_t all, size_t one, int m, unsigned char *stack, size_t cap,
                  unsigned char **buf) {
    *buf = stack;
    if (all <= cap) return m;
    if ((*buf = malloc(all)) != NULL) return m;
    *buf = stack;
    return one <= cap ? 1 : 0;
}

/* F16 / BF16 weights with a set that wants x in their type (ks->f16_x,
 * bf16_x): the tiles get x rounded to it (kept as floats). */
static void run_rounded_x(mm_job *j, lm_pool *pool, int wi, int count, float *const *ys,
                          const int *ns) {
    const float *x = j->x;
    const int m = j->m, k = j->k;
    _Alignas(64) unsigned char stack[16384];
    unsigned char *mem;
    const size_t row = sizeof(float) * (size_t)k;
    const int rows_per_pass = lm_mm_scratch(row * (size_t)m, row, m, stack, sizeof stack, &mem);
    if (!rows_per_pass) {
        lm_mm_fill_nan(count, ys, ns, m);
        return;
    }
    float *buf = (float *)mem;
    for (int r0 = 0; r0 < m; r0 += rows_per_pass) {
        const int rows = m - r0 < rows_per_pass ? m - r0 : rows_per_pass;
        const float *xr = x + (size_t)r0 * k;
        for (size_t i = 0; i < (size_t)rows * (size_t)k; i++)
            buf[i] = wi == LM_WT_F16 ? lm_round_f16(xr[i]) : lm_bf16_to_f32(lm_f32_to_bf16(xr[i]));
        j->x = buf;
        j->m = rows;
        j->tile = rows == 1 ? j->ks->dec[wi] : j->ks->gemm[wi];
        for (int p = 0, q = 0; p < count; p++)
            if (ns[p] > 0) j->part[q++].y = ys[p] + (size_t)r0 * ns[p];
        run_tiles(j, pool);
    }
    if (mem != stack) free(mem);
}

void lm_matmul_multi_with(const lm_kernels *ks, lm_pool *pool, int count, float *const *ys,
                          const void *const *Ws, const int *ns, lm_dtype wtype, const float *x,
                          int m, int k) {
    if (m <= 0 || count <= 0) return;
    if (wtype == LM_Q4_0_X8) { /* repacked at load: its own tiles and driver */
        lm_q4x8_matmul_multi(ks, pool, count, ys, Ws, ns, x, m, k);
        return;
    }
    const int wi = weight_index(wtype);
    const size_t wrow = lm_dtype_row_bytes(wtype, k);
    assert(wi >= 0 && wrow > 0 && "lm_matmul: weight type/row length checked by the loader");
    assert(count <= LM_MATMUL_MAX_PARTS);
    if (wi < 0 || wrow == 0 || count > LM_MATMUL_MAX_PARTS) {
        /* Unreachable for validated models; NaNs make the misuse loud. */
        lm_mm_fill_nan(count, ys, ns, m);
        return;
    }
    mm_job j = {
        .ks = ks, .tile = m == 1 ? ks->dec[wi] : ks->gemm[wi],
        .x = x, .wrow = wrow, .m = m, .k = k,
        .quant = wi >= LM_WT_Q8_0,
    };
    for (int p = 0; p < count; p++) {
        if (ns[p] <= 0) continue;
        j.part[j.n_parts++] = (mm_part){.y = ys[p], .W = Ws[p], .n = ns[p]};
    }
    if (j.n_parts == 0) return;
    const int round_x = (wi == LM_WT_F16 && ks->f16_x) || (wi == LM_WT_BF16 && ks->bf16_x);
    if (!j.quant && !round_x) {
        run_tiles(&j, pool);
        return;
    }
    if (!j.quant) {
        run_rounded_x(&j, pool, wi, count, ys, ns);
        return;
    }
    assert(ks->gemm[wi].mr == LM_XQ_GROUP && ks->dec[wi].mr == 1);
    /* x in 8 bit: on the stack for decode-sized calls, else on the heap; if
     * the heap says no, one row at a time through the stack buffer (same
     * numbers: decode and batch tiles compute each dot product alike). */
    _Alignas(64) unsigned char stack[16384];
    unsigned char *buf;
    /* a single row takes the dec tile, which reads q alone */
    const int rows_per_pass = lm_mm_scratch(xq_bytes(m, k, m > 1 && ks->prep_x[wi]), xq_bytes(1, k, 0), m,
                                            stack, sizeof stack, &buf);
    if (!rows_per_pass) {
        lm_mm_fill_nan(count, ys, ns, m);
        return;
    }
    const int nb = k / LM_QK;
    for (int r0 = 0; r0 < m; r0 += rows_per_pass) {
        const int rows = m - r0 < rows_per_pass ? m - r0 : rows_per_pass;
        const size_t pad = (size_t)round_up(rows, LM_XQ_GROUP);
        j.m = rows;
        j.x = x + (size_t)r0 * k;
        for (int p = 0, q = 0; p < count; p++)
            if (ns[p] > 0) j.part[q++].y = ys[p] + (size_t)r0 * ns[p];
        j.tile = rows == 1 ? ks->dec[wi] : ks->gemm[wi];
        j.xd = (float *)buf;
        /* the second per-block array is s for Q4_1, qsum for Q4_0 */
        j.xs = wi == LM_WT_Q4_1 ? j.xd + pad * nb : NULL;
        j.xsum = wi == LM_WT_Q4_0 ? (int32_t *)(j.xd + pad * nb) : NULL;
        j.xq = (int8_t *)(j.xd + pad * nb * 2);
        j.prep = rows > 1 ? ks->prep_x[wi] : NULL;
        j.xqx = j.prep ? j.xq + pad * (size_t)k : NULL;
        /* padding rows of a batch: zeros, so their (dropped) dot products
         * are finite; decode tiles read row 0 only */
        for (size_t r = (size_t)rows; rows > 1 && r < pad; r++) {
            memset(j.xq + r * k, 0, (size_t)k);
            if (j.prep) j.prep(j.xq + r * k, k, j.xqx + r * LM_QX_BYTES(k));
            for (int b = 0; b < nb; b++) {
                j.xd[scale_index((int)r, nb) + (size_t)b * LM_XQ_GROUP] = 0.0f;
                if (j.xs) j.xs[scale_index((int)r, nb) + (size_t)b * LM_XQ_GROUP] = 0.0f;
                if (j.xsum) j.xsum[scale_index((int)r, nb) + (size_t)b * LM_XQ_GROUP] = 0;
            }
        }
        if (rows == 1)
            ks->quant_x(j.x, k, j.xq, j.xd, j.xs, j.xsum, LM_XQ_GROUP);
        else
            lm_pool_run(pool, quant_task, &j, rows < lm_pool_threads(pool) * 4 ? rows : lm_pool_threads(pool) * 4);
        run_tiles(&j, pool);
    }
    if (buf != stack) free(buf);
}

void lm_matmul_with(const lm_kernels *ks, lm_pool *pool, float *y, const float *x,
                    const void *W, lm_dtype wtype, int m, int n, int k) {
    lm_matmul_multi_with(ks, pool, 1, &y, &W, &n, wtype, x, m, k);
}

void lm_matmul_multi(lm_pool *pool, int count, float *const *ys, const void *const *Ws,
                     const int *ns, lm_dtype wtype, const float *x, int m, int k) {
    lm_matmul_multi_with(lm_kernels_run(), pool, count, ys, Ws, ns, wtype, x, m, k);
}

void lm_matmul(lm_pool *pool, float *y, const float *x, const void *W, lm_dtype wtype, int m,
               int n, int k) {
    lm_matmul_with(lm_kernels_run(), pool, y, x, W, wtype, m, n, k);
}
