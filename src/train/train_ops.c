/* Forward/backward pairs of the non-matmul ops (see train_ops.h). */
#include "train/train_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/train_internal.h"

/* An inlined dot with lm_dot's exact summation order (8 lane sums, fixed
 * tree): the backward's rowsum(P * dP) = dout_t . out_t, one per query. */
static inline __attribute__((always_inline)) float hdot(const float *restrict a,
                                                        const float *restrict b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

void lm_op_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w,
                       int n, int d, float eps) {
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        double ss = 0;
        for (int i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
        float s = (float)(1.0 / sqrt(ss / d + eps));
        rstd[r] = s;
        for (int i = 0; i < d; i++) yr[i] = xr[i] * s * w[i];
    }
}

/* y_i = x_i s w_i with s = (mean x^2 + eps)^-1/2, ds/dx_j = -s^3 x_j / d:
 * dx_j = s w_j dy_j - s^3 x_j / d * sum_i dy_i w_i x_i. */
void lm_op_rmsnorm_apply(float *y, const float *x, const float *rstd, const float *w, int n, int d) {
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        float s = rstd[r];
        for (int i = 0; i < d; i++) yr[i] = xr[i] * s * w[i];
    }
}

void lm_op_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x,
                       const float *w, const float *rstd, int n, int d) {
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d, *dyr = dy + (size_t)r * d;
        float *dxr = dx + (size_t)r * d;
        float s = rstd[r];
        double dot = 0;
        for (int i = 0; i < d; i++) dot += (double)dyr[i] * w[i] * xr[i];
        float c = (float)(dot * s * s * s / d);
        for (int i = 0; i < d; i++) dxr[i] += s * w[i] * dyr[i] - c * xr[i];
        if (dw)
            for (int i = 0; i < d; i++) dw[i] += dyr[i] * xr[i] * s;
    }
}

void lm_op_rope_table(float *cos_t, float *sin_t, int T, int hd, float base,
                      const float *freqs) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        double freq = pow((double)base, -2.0 * i / hd) / (freqs ? (double)freqs[i] : 1.0);
        for (int t = 0; t < T; t++) {
            double a = t * freq;
            cos_t[(size_t)t * half + i] = (float)cos(a);
            sin_t[(size_t)t * half + i] = (float)sin(a);
        }
    }
}

void lm_op_rope(float *x, const float *cos_t, const float *sin_t, const int32_t *pos,
                int B, int T, int n_heads, int hd, int inverse) {
    int half = hd / 2;
    float sgn = inverse ? -1.0f : 1.0f;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t p = (size_t)pos[(size_t)b * T + t];
            const float *c = cos_t + p * half, *s = sin_t + p * half;
            float *row = x + ((size_t)b * T + t) * (size_t)n_heads * hd;
            for (int h = 0; h < n_heads; h++) {
                float *e = row + (size_t)h * hd;
                for (int i = 0; i < half; i++) {
                    float x0 = e[2 * i], x1 = e[2 * i + 1], si = sgn * s[i];
                    e[2 * i] = x0 * c[i] - x1 * si;
                    e[2 * i + 1] = x0 * si + x1 * c[i];
                }
            }
        }
}

typedef struct attn_ctx {
    float *out, *lse, *dq, *dk, *dv;
    const float *dout, *cout, *q, *k, *v, *clse;
    const int32_t *start;
    int B, T, H, Hkv, hd;
    float *scratch;
} attn_ctx;

/* Query rows per block of the forward and the backward. The scores of a
 * key against the block's queries are one vector of ATT_TB lanes (the
 * block's q, and dout, held transposed), so no (query, key) pair needs a
 * horizontal sum, and the backward reads and writes a key's dk and dv rows
 * once per block rather than once per query: per-pair dot products made
 * the backward a quarter of a LoRA step and the forward a twentieth. */
#define ATT_TB 16

size_t lm_op_attn_scratch(int B, int T, int H, int Hkv, int hd) {
    size_t fwd = (size_t)B * H * ATT_TB * ((size_t)T + (size_t)hd);
    size_t bwd = (size_t)B * Hkv * 3 * (size_t)hd * ATT_TB;
    return fwd > bwd ? fwd : bwd;
}

/* task = (b, h): the rows of one head of one sequence, ATT_TB queries at
 * a time: the block's scores against every key it sees ([key][ATT_TB]),
 * softmax per query, then each query's output 16 columns at a time. */
SIMD_CLONES_V4 static void attn_fwd_task(void *vctx, int task, int n_tasks, int thread) {
    const attn_ctx *c = vctx;
    int b = task / c->H, h = task % c->H, g = h / (c->H / c->Hkv);
    int T = c->T, hd = c->hd, qs = c->H * hd, ks = c->Hkv * hd;
    float scale = 1.0f / sqrtf((float)hd);
    /* sc [T][ATT_TB]: scores, then probabilities; qt [hd][ATT_TB]: q transposed */
    float *sc = c->scratch + (size_t)task * ATT_TB * ((size_t)T + (size_t)hd);
    float *qt = sc + (size_t)ATT_TB * T;
    for (int t0 = 0; t0 < T; t0 += ATT_TB) {
        int nb = T - t0 < ATT_TB ? T - t0 : ATT_TB, smin = t0;
        int lo[ATT_TB], hi[ATT_TB];
        for (int tt = 0; tt < ATT_TB; tt++) {
            size_t nt = (size_t)b * T + t0 + tt;
            if (tt >= nb) {   /* past the row: no key is valid */
                for (int i = 0; i < hd; i++) qt[i * ATT_TB + tt] = 0.0f;
                lo[tt] = 1, hi[tt] = 0;
                continue;
            }
            const float *qr = c->q + nt * qs + (size_t)h * hd;
            for (int i = 0; i < hd; i++) qt[i * ATT_TB + tt] = qr[i];
            lo[tt] = c->start[nt], hi[tt] = t0 + tt;
            if (lo[tt] < smin) smin = lo[tt];
        }
        float mx[ATT_TB];
        for (int tt = 0; tt < ATT_TB; tt++) mx[tt] = -INFINITY;
        for (int s = smin; s < t0 + nb; s++) {
            const float *restrict ksv = c->k + ((size_t)b * T + s) * ks + (size_t)g * hd;
            float acc[ATT_TB] = {0};
            for (int i = 0; i < hd; i++) {
                const float kv = ksv[i];
                const float *restrict qi = qt + i * ATT_TB;
                for (int tt = 0; tt < ATT_TB; tt++) acc[tt] = fmaf(qi[tt], kv, acc[tt]);
            }
            float *restrict ss = sc + (size_t)s * ATT_TB;
            for (int tt = 0; tt < ATT_TB; tt++) {
                ss[tt] = acc[tt] * scale;
                if (s >= lo[tt] && s <= hi[tt] && ss[tt] > mx[tt]) mx[tt] = ss[tt];
            }
        }
        double sum[ATT_TB] = {0};
        for (int s = smin; s < t0 + nb; s++) {
            float *restrict ss = sc + (size_t)s * ATT_TB;
            for (int tt = 0; tt < ATT_TB; tt++) {
                ss[tt] = s >= lo[tt] && s <= hi[tt] ? expf(ss[tt] - mx[tt]) : 0.0f;
                sum[tt] += ss[tt];
            }
        }
        for (int tt = 0; tt < nb; tt++) {
            size_t nt = (size_t)b * T + t0 + tt;
            float inv = (float)(1.0 / sum[tt]);
            float *restrict o = c->out + nt * qs + (size_t)h * hd;
            const float *vb = c->v + (size_t)g * hd;
            int i = 0;
            for (; i + 16 <= hd; i += 16) {
                float acc[16] = {0};
                for (int s = lo[tt]; s <= hi[tt]; s++) {
                    const float w = sc[(size_t)s * ATT_TB + tt];
                    const float *restrict vr = vb + ((size_t)b * T + s) * ks + i;
                    for (int j = 0; j < 16; j++) acc[j] = fmaf(w, vr[j], acc[j]);
                }
                for (int j = 0; j < 16; j++) o[i + j] = acc[j] * inv;
            }
            for (; i < hd; i++) {
                float acc = 0.0f;
                for (int s = lo[tt]; s <= hi[tt]; s++)
                    acc = fmaf(sc[(size_t)s * ATT_TB + tt], vb[((size_t)b * T + s) * ks + i], acc);
                o[i] = acc * inv;
            }
            c->lse[nt * c->H + h] = mx[tt] + (float)log(sum[tt]);
        }
    }
}

void lm_op_attn_fwd(lm_pool *pool, float *out, float *lse, const float *q, const float *k,
                    const float *v, const int32_t *start, int B, int T, int H, int Hkv, int hd,
                    float *scratch) {
    attn_ctx c = { .out = out, .lse = lse, .q = q, .k = k, .v = v, .start = start, .B = B, .T = T,
                   .H = H, .Hkv = Hkv, .hd = hd, .scratch = scratch };
    lm_pool_run(pool, attn_fwd_task, &c, B * H);
}

/* dk_s += sum_tt ds[tt] q_tt, dv_s += sum_tt p[tt] o_tt over the block's
 * nb queries (rows of stride rs), 16 columns at a time so both stay in
 * registers across the block. */
static inline __attribute__((always_inline)) void kv_update(float *restrict dks, float *restrict dvs,
                                                            const float *restrict q,
                                                            const float *restrict o, size_t rs,
                                                            const float *ds, const float *p, int nb,
                                                            int hd) {
    int i = 0;
    for (; i + 16 <= hd; i += 16) {
        float ak[16], av[16];
        for (int j = 0; j < 16; j++) { ak[j] = dks[i + j]; av[j] = dvs[i + j]; }
        for (int tt = 0; tt < nb; tt++) {
            const float *qr = q + tt * rs + i, *orow = o + tt * rs + i;
            for (int j = 0; j < 16; j++) {
                ak[j] = fmaf(ds[tt], qr[j], ak[j]);
                av[j] = fmaf(p[tt], orow[j], av[j]);
            }
        }
        for (int j = 0; j < 16; j++) { dks[i + j] = ak[j]; dvs[i + j] = av[j]; }
    }
    for (; i < hd; i++)
        for (int tt = 0; tt < nb; tt++) {
            dks[i] += ds[tt] * q[tt * rs + i];
            dvs[i] += p[tt] * o[tt * rs + i];
        }
}

/* task = (b, kv head g): owns dk, dv of that group and dq of its q heads.
 * With P = softmax(S), dS = P * (dP - rowsum(P * dP)) and
 * rowsum(P * dP) = dout_t . out_t. Queries go in blocks of ATT_TB; each
 * key s the block sees gives the block's scores, P, dP and dS as vectors
 * over its queries. */
SIMD_CLONES_V4 static void attn_bwd_task(void *vctx, int task, int n_tasks, int thread) {
    const attn_ctx *c = vctx;
    int b = task / c->Hkv, g = task % c->Hkv, rep = c->H / c->Hkv;
    int T = c->T, hd = c->hd, qs = c->H * hd, ks = c->Hkv * hd;
    float scale = 1.0f / sqrtf((float)hd);
    /* qt, ot: the block's q and dout transposed [hd][ATT_TB]; dqt its dq */
    float *qt = c->scratch + (size_t)task * 3 * hd * ATT_TB, *ot = qt + (size_t)hd * ATT_TB;
    float *dqt = ot + (size_t)hd * ATT_TB;
    for (int s = 0; s < T; s++) {
        size_t ns = (size_t)b * T + s;
        memset(c->dk + ns * ks + (size_t)g * hd, 0, (size_t)hd * sizeof(float));
        memset(c->dv + ns * ks + (size_t)g * hd, 0, (size_t)hd * sizeof(float));
    }
    for (int h = g * rep; h < (g + 1) * rep; h++)
        for (int t0 = 0; t0 < T; t0 += ATT_TB) {
            int nb = T - t0 < ATT_TB ? T - t0 : ATT_TB, smin = t0;
            float lse[ATT_TB], D[ATT_TB];
            int lo[ATT_TB], hi[ATT_TB];
            for (int tt = 0; tt < ATT_TB; tt++) {
                size_t nt = (size_t)b * T + t0 + tt;
                if (tt >= nb) {   /* past the row: no key is valid */
                    for (int i = 0; i < hd; i++) qt[i * ATT_TB + tt] = ot[i * ATT_TB + tt] = 0.0f;
                    lse[tt] = D[tt] = 0.0f, lo[tt] = 1, hi[tt] = 0;
                    continue;
                }
                const float *qr = c->q + nt * qs + (size_t)h * hd, *dr = c->dout + nt * qs + (size_t)h * hd;
                for (int i = 0; i < hd; i++) qt[i * ATT_TB + tt] = qr[i], ot[i * ATT_TB + tt] = dr[i];
                lse[tt] = c->clse[nt * c->H + h];
                D[tt] = hdot(dr, c->cout + nt * qs + (size_t)h * hd, hd);
                lo[tt] = c->start[nt], hi[tt] = t0 + tt;
                if (lo[tt] < smin) smin = lo[tt];
            }
            memset(dqt, 0, (size_t)hd * ATT_TB * sizeof(float));
            const float *qb = c->q + ((size_t)b * T + t0) * qs + (size_t)h * hd;
            const float *ob = c->dout + ((size_t)b * T + t0) * qs + (size_t)h * hd;
            for (int s = smin; s < t0 + nb; s++) {
                size_t ns = (size_t)b * T + s;
                const float *restrict ksv = c->k + ns * ks + (size_t)g * hd;
                const float *restrict vs = c->v + ns * ks + (size_t)g * hd;
                float sc[ATT_TB] = {0}, dp[ATT_TB] = {0}, p[ATT_TB], ds[ATT_TB];
                for (int i = 0; i < hd; i++) {
                    const float kv = ksv[i], vv = vs[i];
                    const float *restrict qi = qt + i * ATT_TB, *restrict oi = ot + i * ATT_TB;
                    for (int tt = 0; tt < ATT_TB; tt++) {
                        sc[tt] = fmaf(qi[tt], kv, sc[tt]);
                        dp[tt] = fmaf(oi[tt], vv, dp[tt]);
                    }
                }
                int any = 0;
                for (int tt = 0; tt < ATT_TB; tt++) {
                    int ok = s >= lo[tt] && s <= hi[tt];
                    p[tt] = ok ? expf(sc[tt] * scale - lse[tt]) : 0.0f;
                    ds[tt] = p[tt] * (dp[tt] - D[tt]) * scale;
                    any |= ok;
                }
                if (!any) continue;
                for (int i = 0; i < hd; i++) {
                    float *restrict di = dqt + i * ATT_TB;
                    const float kv = ksv[i];
                    for (int tt = 0; tt < ATT_TB; tt++) di[tt] = fmaf(ds[tt], kv, di[tt]);
                }
                kv_update(c->dk + ns * ks + (size_t)g * hd, c->dv + ns * ks + (size_t)g * hd, qb, ob,
                          (size_t)qs, ds, p, nb, hd);
            }
            for (int tt = 0; tt < nb; tt++) {
                float *dq = c->dq + ((size_t)b * T + t0 + tt) * qs + (size_t)h * hd;
                for (int i = 0; i < hd; i++) dq[i] = dqt[i * ATT_TB + tt];
            }
        }
}

void lm_op_attn_bwd(lm_pool *pool, float *dq, float *dk, float *dv, const float *dout,
                    const float *out, const float *lse, const float *q, const float *k,
                    const float *v, const int32_t *start, int B, int T, int H, int Hkv, int hd,
                    float *scratch) {
    attn_ctx c = { .dq = dq, .dk = dk, .dv = dv, .dout = dout, .cout = out, .clse = lse,
                   .q = q, .k = k, .v = v, .start = start, .B = B, .T = T, .H = H, .Hkv = Hkv, .hd = hd,
                   .scratch = scratch };
    lm_pool_run(pool, attn_bwd_task, &c, B * Hkv);
}

/* Elementwise ops split into fixed chunks, so the bits never depend on
 * the thread count (each element is computed alone anyway). */
#define EW_CHUNK 16384

typedef struct swiglu_ctx {
    float *h, *dgate, *dup;
    const float *gate, *up, *dh;
    size_t n;
} swiglu_ctx;

static void chunk_range(size_t n, int task, size_t *lo, size_t *hi) {
    *lo = (size_t)task * EW_CHUNK;
    *hi = *lo + EW_CHUNK < n ? *lo + EW_CHUNK : n;
}

static int n_chunks(size_t n) { return (int)((n + EW_CHUNK - 1) / EW_CHUNK); }

static void swiglu_fwd_task(void *vctx, int task, int n_tasks, int thread) {
    const swiglu_ctx *c = vctx;
    size_t lo, hi;
    chunk_range(c->n, task, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        float g = c->gate[i];
        c->h[i] = g / (1.0f + expf(-g)) * c->up[i];
    }
}

void lm_op_swiglu_fwd(lm_pool *pool, float *h, const float *gate, const float *up, size_t n) {
    swiglu_ctx c = { .h = h, .gate = gate, .up = up, .n = n };
    lm_pool_run(pool, swiglu_fwd_task, &c, n_chunks(n));
}

/* silu(g) = g sig(g); silu'(g) = sig(g) (1 + g (1 - sig(g))). */
static void swiglu_bwd_task(void *vctx, int task, int n_tasks, int thread) {
    const swiglu_ctx *c = vctx;
    size_t lo, hi;
    chunk_range(c->n, task, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        float g = c->gate[i], sg = 1.0f / (1.0f + expf(-g));
        c->dup[i] = c->dh[i] * g * sg;
        c->dgate[i] = c->dh[i] * c->up[i] * sg * (1.0f + g * (1.0f - sg));
    }
}

void lm_op_swiglu_bwd(lm_pool *pool, float *dgate, float *dup, const float *dh, const float *gate,
                      const float *up, size_t n) {
    swiglu_ctx c = { .dgate = dgate, .dup = dup, .gate = gate, .up = up, .dh = dh, .n = n };
    lm_pool_run(pool, swiglu_bwd_task, &c, n_chunks(n));
}

typedef struct xent_ctx {
    float *z;
    double *loss;            /* [rows] */
    const int *pos;
    const int32_t *targets;
    const uint8_t *mask;
    const float *weight;     /* [positions] or NULL */
    int V, want_grad;
    float scale;
} xent_ctx;

/* One row per task: the LM head's V = 49152 exponentials are the bulk of
 * the loss, and were the last serial part of a training step. exp(z - max)
 * is computed once and kept for the gradient. */
static void xent_task(void *vctx, int r, int n_tasks, int thread) {
    const xent_ctx *c = vctx;
    float *z = c->z + (size_t)r * c->V;
    int p = c->pos[r];
    c->loss[r] = 0;
    if (!c->mask[p]) {
        if (c->want_grad) memset(z, 0, (size_t)c->V * sizeof(float));
        return;
    }
    int tgt = c->targets[p];
    float mx = z[0];
    for (int j = 1; j < c->V; j++) mx = z[j] > mx ? z[j] : mx;
    float zt = z[tgt];
    double sum = 0;
    if (c->want_grad)
        for (int j = 0; j < c->V; j++) sum += z[j] = expf(z[j] - mx);
    else
        for (int j = 0; j < c->V; j++) sum += expf(z[j] - mx);
    c->loss[r] = (double)mx + log(sum) - (double)zt;
    if (c->want_grad) {
        /* d(mean nll)/dz = (softmax - onehot) * scale (* the position's weight) */
        float s = c->weight ? c->scale * c->weight[p] : c->scale;
        float k = (float)(1.0 / sum) * s;
        for (int j = 0; j < c->V; j++) z[j] *= k;
        z[tgt] -= s;
    }
}

int lm_op_xent(lm_pool *pool, float *z, int rows, int V, const int *pos, const int32_t *targets,
               const uint8_t *mask, const float *weight, float scale, int want_grad, double *sum,
               double *nll) {
    double *loss = malloc((size_t)(rows > 0 ? rows : 1) * sizeof *loss);
    if (!loss) return -1;
    xent_ctx c = { z, loss, pos, targets, mask, weight, V, want_grad, scale };
    lm_pool_run(pool, xent_task, &c, rows);
    for (int r = 0; r < rows; r++)
        if (!weight) *sum += loss[r];
        else if (mask[pos[r]]) *sum += (double)weight[pos[r]] * loss[r];
    if (nll) memcpy(nll, loss, (size_t)rows * sizeof *nll);
    free(loss);
    return 0;
}
