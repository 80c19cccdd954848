/* Llama forward pass over a batch of tokens with an f32 or f16 KV cache.
 * Cache layout: k_cache and v_cache[layer][n_head_kv * head_dim][n_ctx_pad],
 * where n_ctx_pad is the capacity allocated so far (it doubles on demand up
 * to the context size, so a short conversation holds little memory); both
 * transposed (llama.cpp keeps V so): a head's attention reads rows of
 * positions, 8 keys per vector, for its scores as for its weighted sum of
 * values (lm_attn_heads). A batch's K and V are projected into scratch and
 * scattered into the cache, rounded to f16 there when the cache is f16
 * (llama.cpp's default: half the memory per position). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/pages.h"
#include "model/adapter.h"
#include "model/llama.h"
#include "tensor/ops.h"
#include "tensor/q4_0x8.h"

#define LM_BATCH 128   /* tokens per forward chunk: bounds scratch, keeps matmuls wide */
/* llama.cpp's default micro-batch. A lone token takes other reduction
 * orders than a batch there (F32 matmuls, attention's weighted sum), so we
 * cut a call into micro-batches of this size as it does and never leave a
 * chunk of one token inside a larger micro-batch: the logits stay equal to
 * its bit for bit whatever the prompt length. */
#define LM_UBATCH 512

enum { LM_SCR_X, LM_SCR_XB, LM_SCR_Q, LM_SCR_ATT, LM_SCR_KB, LM_SCR_HB, LM_SCR_HB2, LM_SCR_POS,
       LM_SCR_SCORES, LM_SCR_AD_T, LM_SCR_AD_Y, LM_SCR_N };

struct lm_ctx {
    const lm_model *m;
    lm_pool *pool;        /* borrowed, or own_pool */
    lm_pool *own_pool;
    int n_ctx, n_past, n_batch;
    int n_ctx_pad;              /* positions allocated: a multiple of LM_ATTN_PAD, grows up to
                                   n_ctx rounded up (the row stride of the caches) */
    lm_dtype kv_type;           /* LM_F32 or LM_F16 */
    size_t kv_esize;            /* bytes per cache element */
    void *k_cache, *v_cache;    /* [n_layer, kv_dim, n_ctx_pad] each, of kv_type (lm_pages) */
    /* Scratch, [n_batch, ...]: nothing in it lives from one lm_eval to the
     * next, so it is allocated (lm_pages) by the first lm_eval that needs it
     * and given back by lm_ctx_trim; scr[] owns it, the names below point
     * into it (NULL while trimmed). */
    void *scr[LM_SCR_N];
    size_t scr_bytes[LM_SCR_N];
    float *x;       /* [B, n_embd] residual stream */
    float *xb;      /* [B, n_embd] normed input / projection output */
    float *q;       /* [B, q_dim] */
    float *att;     /* [B, q_dim] attention output */
    float *kb;      /* [B, kv_dim] the batch's keys until they enter the cache */
    float *hb, *hb2;/* [B, n_ff] */
    int32_t *pos;   /* [B] */
    float *scores;  /* [pool threads, score_row] per-thread attention weights */
    /* LoRA adapter (borrowed) and its scratch: ad_t[B, rank], ad_y[B, ad_max_out] */
    const lm_adapter *ad;
    float ad_mul;         /* scale * alpha / rank */
    int ad_max_out;
    float *ad_t, *ad_y;
    lm_trace_fn trace;    /* optional observer (lm_ctx_set_trace) */
    void *trace_user;
};

static int pad_pos(int n) { return (n + LM_ATTN_PAD - 1) / LM_ATTN_PAD * LM_ATTN_PAD; }

/* Rows of one cache: one per (layer, kv channel). */
static size_t kv_rows(const lm_ctx *c) {
    const lm_llama_config *cfg = &c->m->cfg;
    return (size_t)cfg->n_layer * (size_t)(cfg->n_head_kv * cfg->head_dim);
}

static size_t kv_elems(const lm_ctx *c) { return kv_rows(c) * (size_t)c->n_ctx_pad; }

/* First allocation of a cache, in positions. The transposed layout makes
 * the whole allocation resident at the first position, so it is small (64
 * positions: 1.5 MB for SmolLM2-135M in f16) and doubles as positions fill:
 * an NPC's persona prefix or a short exchange holds a few MB, not the 6 MB
 * of 256 positions. */
#define LM_KV_FIRST 64

/* Per-thread attention scratch: the weights of one GQA group of heads. */
static size_t score_row(const lm_ctx *c) {
    const lm_llama_config *cfg = &c->m->cfg;
    return (size_t)(cfg->n_head / cfg->n_head_kv) * (size_t)c->n_ctx_pad;
}

/* Points the scratch names into scr[]. */
static void scratch_bind(lm_ctx *c) {
    c->x = c->scr[LM_SCR_X];
    c->xb = c->scr[LM_SCR_XB];
    c->q = c->scr[LM_SCR_Q];
    c->att = c->scr[LM_SCR_ATT];
    c->kb = c->scr[LM_SCR_KB];
    c->hb = c->scr[LM_SCR_HB];
    c->hb2 = c->scr[LM_SCR_HB2];
    c->pos = c->scr[LM_SCR_POS];
    c->scores = c->scr[LM_SCR_SCORES];
    c->ad_t = c->scr[LM_SCR_AD_T];
    c->ad_y = c->scr[LM_SCR_AD_Y];
}

/* Makes the scratch big enough for a batch of n_batch tokens with the
 * current cache width, pool and adapter. Buffers already big enough are
 * kept; on failure the ones grown so far stay (all still usable). */
static int ensure_scratch(lm_ctx *c, lm_err *err) {
    const lm_llama_config *cfg = &c->m->cfg;
    const size_t B = (size_t)c->n_batch, f = sizeof(float);
    const size_t d = (size_t)cfg->n_embd, ff = (size_t)cfg->n_ff;
    const size_t q_dim = (size_t)cfg->n_head * (size_t)cfg->head_dim;
    const size_t kv_dim = (size_t)cfg->n_head_kv * (size_t)cfg->head_dim;
    size_t need[LM_SCR_N] = {
        [LM_SCR_X] = f * B * d, [LM_SCR_XB] = f * B * d,
        [LM_SCR_Q] = f * B * q_dim, [LM_SCR_ATT] = f * B * q_dim,
        [LM_SCR_KB] = f * B * kv_dim, [LM_SCR_HB] = f * B * ff, [LM_SCR_HB2] = f * B * ff,
        [LM_SCR_POS] = sizeof(int32_t) * B,
        [LM_SCR_SCORES] = f * (size_t)lm_pool_threads(c->pool) * score_row(c),
        [LM_SCR_AD_T] = c->ad ? f * B * (size_t)c->ad->rank : 0,
        [LM_SCR_AD_Y] = c->ad ? f * B * (size_t)c->ad_max_out : 0,
    };
    int rc = 0;
    for (int i = 0; i < LM_SCR_N && rc == 0; i++) {
        if (c->scr_bytes[i] >= need[i]) continue;
        void *p = lm_pages_alloc(need[i]);
        if (!p) {
            rc = lm_errf(err, "out of memory for a %d-token context's scratch (%zu bytes)",
                         c->n_ctx, need[i]);
            break;
        }
        lm_pages_free(c->scr[i], c->scr_bytes[i]);
        c->scr[i] = p;
        c->scr_bytes[i] = need[i];
    }
    scratch_bind(c);
    return rc;
}

void lm_ctx_trim(lm_ctx *c) {
    if (!c) return;
    for (int i = 0; i < LM_SCR_N; i++) {
        lm_pages_free(c->scr[i], c->scr_bytes[i]);
        c->scr[i] = NULL;
        c->scr_bytes[i] = 0;
    }
    scratch_bind(c);
}

size_t lm_ctx_scratch_bytes(const lm_ctx *c) {
    size_t n = 0;
    for (int i = 0; i < LM_SCR_N; i++) n += c->scr_bytes[i];
    return n;
}

lm_ctx *lm_ctx_new(const lm_model *m, int n_ctx, lm_pool *pool, lm_err *err) {
    return lm_ctx_new_kv(m, n_ctx, pool, LM_F32, err);
}

lm_ctx *lm_ctx_new_kv(const lm_model *m, int n_ctx, lm_pool *pool, lm_dtype kv_type,
                      lm_err *err) {
    const lm_llama_config *cfg = &m->cfg;
    if (kv_type != LM_F32 && kv_type != LM_F16) {
        const char *name = lm_dtype_name(kv_type);
        lm_errf(err, "KV cache type %s (%d) is not supported: F32 or F16",
                name ? name : "unknown", (int)kv_type);
        return NULL;
    }
    if (n_ctx <= 0) n_ctx = cfg->n_ctx_train < 2048 ? cfg->n_ctx_train : 2048;
    if (n_ctx > cfg->n_ctx_train) {
        lm_errf(err, "context size %d exceeds the model's context_length %d", n_ctx,
                cfg->n_ctx_train);
        return NULL;
    }
    lm_ctx *c = calloc(1, sizeof *c);
    if (!c) { lm_errf(err, "out of memory"); return NULL; }
    c->m = m;
    c->kv_type = kv_type;
    c->kv_esize = kv_type == LM_F16 ? sizeof(uint16_t) : sizeof(float);
    c->n_ctx = n_ctx;
    c->n_ctx_pad = pad_pos(n_ctx < LM_KV_FIRST ? n_ctx : LM_KV_FIRST);
    c->n_batch = n_ctx < LM_BATCH ? n_ctx : LM_BATCH;
    /* a 1-thread pool runs tasks inline (no threads): the fallback for NULL */
    c->own_pool = lm_pool_new(1, err);
    if (!c->own_pool) { free(c); return NULL; }
    c->pool = pool ? pool : c->own_pool;
    /* Each (layer, channel) row of the transposed cache is touched by the
     * first position, so the first allocation is resident whole: it is
     * kept small and grows (ensure_kv). The scratch waits for lm_eval. */
    c->k_cache = lm_pages_alloc(kv_elems(c) * c->kv_esize);
    c->v_cache = lm_pages_alloc(kv_elems(c) * c->kv_esize);
    if (!c->k_cache || !c->v_cache) {
        lm_errf(err, "out of memory for a %d-token context (KV cache of %d positions, %zu KB)",
                n_ctx, c->n_ctx_pad, (2 * kv_elems(c)) * c->kv_esize >> 10);
        lm_ctx_free(c);
        return NULL;
    }
    return c;
}

void lm_ctx_free(lm_ctx *c) {
    if (!c) return;
    lm_pages_free(c->k_cache, kv_elems(c) * c->kv_esize);
    lm_pages_free(c->v_cache, kv_elems(c) * c->kv_esize);
    lm_ctx_trim(c);
    lm_pool_free(c->own_pool);
    free(c);
}

int lm_ctx_n_past(const lm_ctx *c) { return c->n_past; }
int lm_ctx_n_ctx(const lm_ctx *c) { return c->n_ctx; }
const lm_model *lm_ctx_model(const lm_ctx *c) { return c->m; }
lm_dtype lm_ctx_kv_type(const lm_ctx *c) { return c->kv_type; }
size_t lm_ctx_kv_bytes(const lm_ctx *c) {
    return 2 * kv_rows(c) * (size_t)pad_pos(c->n_ctx) * c->kv_esize;
}

/* Row r of a cache with row stride n_pad (positions), as bytes. */
static char *kv_row(const lm_ctx *c, void *cache, size_t r, int n_pad) {
    return (char *)cache + r * (size_t)n_pad * c->kv_esize;
}

/* Moves the first n_keep positions of every row of both caches into k, v
 * (rows of n_pad positions), giving the old pages back as it goes: growing
 * a cache then holds about one copy of it, not two (the old and the new
 * cache side by side were the peak of a long reply's resident memory). */
static void kv_move(lm_ctx *c, void *k, void *v, int n_pad, int n_keep) {
    size_t rows = kv_rows(c), es = c->kv_esize, old_row = (size_t)c->n_ctx_pad * es;
    size_t rel = 0;
    for (size_t r = 0; r < rows; r++) {
        memcpy(kv_row(c, k, r, n_pad), kv_row(c, c->k_cache, r, c->n_ctx_pad), es * (size_t)n_keep);
        memcpy(kv_row(c, v, r, n_pad), kv_row(c, c->v_cache, r, c->n_ctx_pad), es * (size_t)n_keep);
        size_t done = (r + 1) * old_row;
        if (done - rel >= ((size_t)1 << 18) || r + 1 == rows) {   /* every 256 KB */
            lm_pages_release(c->k_cache, rel, done);
            rel = lm_pages_release(c->v_cache, rel, done);
        }
    }
    lm_pages_free(c->k_cache, kv_elems(c) * es);
    lm_pages_free(c->v_cache, kv_elems(c) * es);
    c->k_cache = k;
    c->v_cache = v;
    c->n_ctx_pad = n_pad;
}

/* Makes room for positions [0, need): reallocates both caches with a wider
 * row stride and moves the cached positions over. Fails changing nothing. */
static int ensure_kv(lm_ctx *c, int need, lm_err *err) {
    if (need <= c->n_ctx_pad) return 0;
    int cap = c->n_ctx_pad, full = pad_pos(c->n_ctx);
    while (cap < need) cap *= 2;
    cap = pad_pos(cap);
    if (cap > full) cap = full;
    size_t rows = kv_rows(c), es = c->kv_esize, bytes = rows * (size_t)cap * es;
    void *k = lm_pages_alloc(bytes);
    void *v = lm_pages_alloc(bytes);
    if (!k || !v) {
        lm_pages_free(k, bytes); lm_pages_free(v, bytes);
        return lm_errf(err, "out of memory growing the KV cache to %d positions (%zu MB)", cap,
                       2 * bytes >> 20);
    }
    kv_move(c, k, v, cap, c->n_past);   /* the attention scratch follows at the next lm_eval */
    return 0;
}

int lm_ctx_compact(lm_ctx *c, lm_err *err) {
    int n = c->n_past;
    if (n == 0 || n == c->n_ctx_pad) return 0;
    size_t rows = kv_rows(c), es = c->kv_esize, bytes = rows * (size_t)n * es;
    void *k = lm_pages_alloc(bytes);
    void *v = lm_pages_alloc(bytes);
    if (!k || !v) {
        lm_pages_free(k, bytes); lm_pages_free(v, bytes);
        return lm_errf(err, "out of memory compacting the KV cache to %d positions", n);
    }
    kv_move(c, k, v, n, n);   /* n: not a multiple of LM_ATTN_PAD; lm_eval grows it back first */
    return 0;
}

int lm_ctx_reserve(lm_ctx *c, int n, lm_err *err) {
    return ensure_kv(c, n < c->n_ctx ? n : c->n_ctx, err);
}

int lm_ctx_copy_prefix(lm_ctx *dst, const lm_ctx *src, int n, lm_err *err) {
    if (dst->m != src->m) return lm_errf(err, "copy_prefix: the contexts use different models");
    if (dst->kv_type != src->kv_type)
        return lm_errf(err, "copy_prefix: the source caches %s and the destination %s",
                       lm_dtype_name(src->kv_type), lm_dtype_name(dst->kv_type));
    if (n < 0 || n > src->n_past || n > dst->n_ctx)
        return lm_errf(err, "copy_prefix: %d positions asked, the source holds %d and the "
                       "destination takes %d", n, src->n_past, dst->n_ctx);
    if (ensure_kv(dst, n, err)) return -1;
    size_t rows = kv_rows(dst), bytes = dst->kv_esize * (size_t)n;
    for (size_t r = 0; r < rows; r++) {
        memcpy(kv_row(dst, dst->k_cache, r, dst->n_ctx_pad),
               kv_row(src, src->k_cache, r, src->n_ctx_pad), bytes);
        memcpy(kv_row(dst, dst->v_cache, r, dst->n_ctx_pad),
               kv_row(src, src->v_cache, r, src->n_ctx_pad), bytes);
    }
    dst->n_past = n;
    return 0;
}

size_t lm_ctx_state_bytes(const lm_ctx *c) { return kv_rows(c) * (size_t)c->n_past * c->kv_esize; }

void lm_ctx_state_get(const lm_ctx *c, void *k, void *v) {
    size_t rows = kv_rows(c), row = (size_t)c->n_past * c->kv_esize;
    for (size_t r = 0; r < rows; r++) {
        memcpy((char *)k + r * row, kv_row(c, c->k_cache, r, c->n_ctx_pad), row);
        memcpy((char *)v + r * row, kv_row(c, c->v_cache, r, c->n_ctx_pad), row);
    }
}

int lm_ctx_state_set(lm_ctx *c, const void *k, const void *v, int n_past, lm_err *err) {
    if (n_past < 0 || n_past > c->n_ctx)
        return lm_errf(err, "state of %d positions does not fit a %d-token context", n_past,
                       c->n_ctx);
    if (ensure_kv(c, n_past, err)) return -1;
    size_t rows = kv_rows(c), row = (size_t)n_past * c->kv_esize;
    for (size_t r = 0; r < rows; r++) {
        memcpy(kv_row(c, c->k_cache, r, c->n_ctx_pad), (const char *)k + r * row, row);
        memcpy(kv_row(c, c->v_cache, r, c->n_ctx_pad), (const char *)v + r * row, row);
    }
    c->n_past = n_past;
    return 0;
}

void lm_ctx_truncate(lm_ctx *c, int n_past) {
    if (n_past < 0) n_past = 0;
    if (n_past < c->n_past) c->n_past = n_past;
}

void lm_ctx_set_pool(lm_ctx *c, lm_pool *pool) {
    c->pool = pool ? pool : c->own_pool;
}

int lm_ctx_set_adapter(lm_ctx *c, const lm_adapter *a, float scale, lm_err *err) {
    if (!a) { c->ad = NULL; return 0; }
    const lm_llama_config *cfg = &c->m->cfg;
    if (a->n_layer != cfg->n_layer || strcmp(a->arch, cfg->arch) != 0)
        return lm_errf(err, "adapter for a %d-layer '%s' model set on a %d-layer '%s' model",
                       a->n_layer, a->arch, cfg->n_layer, cfg->arch);
    int max_out = 0;
    for (int l = 0; l < a->n_layer; l++)
        for (int p = 0; p < LM_ADAPT_N; p++) {
            const lm_adapter_pair *pr = lm_adapter_get(a, l, p);
            if (!pr->a) continue;
            const lm_weight *w = lm_adapter_base_weight(c->m, l, p);
            if (pr->in != w->k || pr->out != w->n)
                return lm_errf(err, "adapter 'blk.%d.%s' is [%d, %d] but the model's weight is "
                               "[%d, %d]", l, lm_adapter_proj_name(p), pr->out, pr->in, w->n,
                               w->k);
            if (pr->out > max_out) max_out = pr->out;
        }
    c->ad = a;   /* its scratch is sized by the next lm_eval */
    c->ad_max_out = max_out ? max_out : 1;
    c->ad_mul = scale * a->alpha / (float)a->rank;
    return 0;
}

void lm_ctx_set_trace(lm_ctx *c, lm_trace_fn fn, void *user) {
    c->trace = fn;
    c->trace_user = user;
}

/* Reports data[rows, cols] as "<what>-<layer>" (layer < 0: no suffix). */
static void trace(const lm_ctx *c, const char *what, int layer, const float *data, int rows,
                  int cols) {
    if (!c->trace) return;
    char name[64];
    if (layer >= 0) snprintf(name, sizeof name, "%s-%d", what, layer);
    else snprintf(name, sizeof name, "%s", what);
    c->trace(c->trace_user, name, data, rows, cols);
}

/* y[B, n] += mul * (x[B, k] A^T) B^T, after the base matmul of projection p. */
static void lora_add(lm_ctx *c, float *y, const float *x, int l, int p, int B) {
    const lm_adapter_pair *pr = lm_adapter_get(c->ad, l, p);
    if (!pr->a) return;
    int r = c->ad->rank;
    /* an F16 pair: x and then t rounded to f16 by lm_matmul, as llama.cpp's
     * mul_mat converts them for F16 weights */
    lm_matmul(c->pool, c->ad_t, x, pr->a, pr->type, B, r, pr->in);
    lm_matmul(c->pool, c->ad_y, c->ad_t, pr->b, pr->type, B, pr->out, r);
    size_t n = (size_t)B * (size_t)pr->out;
    for (size_t i = 0; i < n; i++) y[i] += c->ad_mul * c->ad_y[i];
}

typedef struct {
    lm_ctx *c;
    int layer, n_tokens, p0;
} attn_job;

/* One task = one (token, KV head): causal attention of the token's query
 * heads that share the KV head over cache positions [0, p0 + t]. */
static void attn_task(void *arg, int task, int n_tasks, int thread) {
    (void)n_tasks;
    const attn_job *j = arg;
    lm_ctx *c = j->c;
    const lm_llama_config *cfg = &c->m->cfg;
    int hd = cfg->head_dim, nkv = cfg->n_head_kv, g = cfg->n_head / nkv;
    int kv_dim = nkv * hd;
    int t = task / nkv, kvh = task % nkv;
    size_t head_off = ((size_t)j->layer * (size_t)kv_dim + (size_t)kvh * hd) * (size_t)c->n_ctx_pad;
    size_t q_off = ((size_t)t * cfg->n_head + (size_t)kvh * g) * hd;
    lm_attn_heads(c->att + q_off, c->q + q_off, g, (const char *)c->k_cache + head_off * c->kv_esize,
                  (const char *)c->v_cache + head_off * c->kv_esize, c->kv_type,
                  (size_t)c->n_ctx_pad, j->p0 + t + 1, hd, 1.0f / sqrtf((float)hd),
                  j->n_tokens == 1, c->scores + (size_t)thread * score_row(c));
}

/* k, v[B, kv_dim] into the transposed caches of layer l at positions p0..
 * An f16 cache stores them rounded to nearest even, as llama.cpp's copy
 * into its f16 cache (ggml_cpu_fp32_to_fp16) does. */
static void store_kv(lm_ctx *c, int l, const float *k, const float *v, int B, int p0) {
    int kv_dim = c->m->cfg.n_head_kv * c->m->cfg.head_dim;
    size_t off = (size_t)l * (size_t)kv_dim * (size_t)c->n_ctx_pad + (size_t)p0;
    size_t np = (size_t)c->n_ctx_pad;
    if (c->kv_type == LM_F16) {
        uint16_t *kt = (uint16_t *)c->k_cache + off, *vt = (uint16_t *)c->v_cache + off;
        for (int i = 0; i < kv_dim; i++)
            for (int t = 0; t < B; t++) {
                kt[(size_t)i * np + t] = lm_f32_to_f16(k[(size_t)t * kv_dim + i]);
                vt[(size_t)i * np + t] = lm_f32_to_f16(v[(size_t)t * kv_dim + i]);
            }
        return;
    }
    float *kt = (float *)c->k_cache + off, *vt = (float *)c->v_cache + off;
    for (int i = 0; i < kv_dim; i++)
        for (int t = 0; t < B; t++) {
            kt[(size_t)i * np + t] = k[(size_t)t * kv_dim + i];
            vt[(size_t)i * np + t] = v[(size_t)t * kv_dim + i];
        }
}

/* ---- row-parallel element-wise steps --------------------------------
 * Per row (token) exactly what the serial loops computed, so the numbers do
 * not change; on the pool they stop being the serial part of a prompt
 * (~5% of one core's time, twice that share on two). */

typedef struct row_job {
    lm_ctx *c;
    int B, layer;
    const float *add;   /* rows to add into the residual x first, or NULL */
    const float *norm;  /* RMSNorm weight: xb = norm(x), or NULL */
} row_job;

/* Tasks cover contiguous row ranges; rows run independently. */
static void row_range(int task, int n_tasks, int B, int *r0, int *r1) {
    *r0 = (int)((long)B * task / n_tasks);
    *r1 = (int)((long)B * (task + 1) / n_tasks);
}

static int row_tasks(const lm_ctx *c, int B) {
    int n = 4 * lm_pool_threads(c->pool);
    return n < B ? n : B;
}

static void add_norm_task(void *arg, int task, int n_tasks, int thread) {
    (void)thread;
    const row_job *j = arg;
    const lm_llama_config *cfg = &j->c->m->cfg;
    size_t d = (size_t)cfg->n_embd;
    int r0, r1;
    row_range(task, n_tasks, j->B, &r0, &r1);
    float *x = j->c->x + (size_t)r0 * d;
    if (j->add)
        for (size_t i = 0; i < (size_t)(r1 - r0) * d; i++) x[i] += j->add[(size_t)r0 * d + i];
    if (j->norm) lm_rmsnorm(j->c->xb + (size_t)r0 * d, x, j->norm, r1 - r0, (int)d, cfg->rms_eps);
}

/* x[B, d] += add (if any), then xb = rmsnorm(x) * norm (if any). */
static void add_norm(lm_ctx *c, const float *add, const float *norm, int B) {
    row_job j = {c, B, 0, add, norm};
    lm_pool_run(c->pool, add_norm_task, &j, row_tasks(c, B));
}

static void rope_task(void *arg, int task, int n_tasks, int thread) {
    (void)thread;
    const row_job *j = arg;
    lm_ctx *c = j->c;
    const lm_model *m = c->m;
    const lm_llama_config *cfg = &m->cfg;
    int hd = cfg->head_dim, kv_dim = cfg->n_head_kv * hd, r0, r1;
    row_range(task, n_tasks, j->B, &r0, &r1);
    float *q = c->q + (size_t)r0 * (size_t)(cfg->n_head * hd);
    float *k = c->kb + (size_t)r0 * (size_t)kv_dim;
    const int32_t *pos = c->pos + r0;
    lm_rope(q, r1 - r0, cfg->n_head, hd, pos, cfg->rope_base, cfg->rope_freqs);
    lm_rope(k, r1 - r0, cfg->n_head_kv, hd, pos, cfg->rope_base, cfg->rope_freqs);
}

/* One row at a time, as ggml_vec_swiglu_f32 runs over each row: a SIMD
 * kernel's groups of 8 then start at every row, whatever n_ff is. */
static void swiglu_task(void *arg, int task, int n_tasks, int thread) {
    (void)thread;
    const row_job *j = arg;
    size_t ff = (size_t)j->c->m->cfg.n_ff;
    int r0, r1;
    row_range(task, n_tasks, j->B, &r0, &r1);
    for (int r = r0; r < r1; r++)
        lm_swiglu(j->c->hb + r * ff, j->c->hb + r * ff, j->c->hb2 + r * ff, (int)ff);
}

/* ys[p][B, ws[p]->n] = x[B, k] @ ws[p]^T: one pool dispatch and one
 * quantization of x when the weights share a type (Q/K/V, gate/up), which
 * cuts the per-token dispatches of decode by a third. */
static void proj_multi(lm_pool *pool, int count, float *const *ys, const lm_weight *const *ws,
                       const float *x, int B) {
    int same = 1;
    for (int p = 1; p < count; p++)
        same &= ws[p]->type == ws[0]->type && ws[p]->k == ws[0]->k;
    if (same && count <= LM_MATMUL_MAX_PARTS) {
        const void *W[LM_MATMUL_MAX_PARTS];
        int n[LM_MATMUL_MAX_PARTS];
        for (int p = 0; p < count; p++) { W[p] = ws[p]->data; n[p] = ws[p]->n; }
        lm_matmul_multi(pool, count, ys, W, n, ws[0]->type, x, B, ws[0]->k);
        return;
    }
    for (int p = 0; p < count; p++)
        lm_matmul(pool, ys[p], x, ws[p]->data, ws[p]->type, B, ws[p]->n, ws[p]->k);
}

/* Forward of B <= n_batch tokens at positions n_past..; leaves the final
 * residual stream in c->x. */
static void forward_chunk(lm_ctx *c, const int32_t *tokens, int B) {
    const lm_model *m = c->m;
    const lm_llama_config *cfg = &m->cfg;
    int d = cfg->n_embd, hd = cfg->head_dim, ff = cfg->n_ff;
    int q_dim = cfg->n_head * hd, kv_dim = cfg->n_head_kv * hd;
    int p0 = c->n_past;
    size_t row_bytes = lm_dtype_row_bytes(m->tok_embd.type, d);
    for (int t = 0; t < B; t++) {
        if (m->tok_embd.type == LM_Q4_0_X8) /* tied and repacked (llama_load.c) */
            lm_q4x8_dequant_row(m->tok_embd.data, tokens[t], d, c->x + (size_t)t * d);
        else
            lm_dequant_row(m->tok_embd.type,
                           (const uint8_t *)m->tok_embd.data + (size_t)tokens[t] * row_bytes,
                           c->x + (size_t)t * d, d);
        c->pos[t] = p0 + t;
    }
    for (int l = 0; l < cfg->n_layer; l++) {
        const lm_llama_layer *L = &m->layers[l];
        float *k = c->kb;     /* [B, kv_dim] until store_kv */
        float *v = c->att;    /* [B, kv_dim] until store_kv; att is free till then */

        add_norm(c, NULL, L->attn_norm, B);
        trace(c, "attn_norm", l, c->xb, B, d);
        {
            float *ys[3] = {c->q, k, v};
            const lm_weight *ws[3] = {&L->wq, &L->wk, &L->wv};
            proj_multi(c->pool, 3, ys, ws, c->xb, B);
        }
        if (c->ad) {
            lora_add(c, c->q, c->xb, l, LM_ADAPT_Q, B);
            lora_add(c, k, c->xb, l, LM_ADAPT_K, B);
            lora_add(c, v, c->xb, l, LM_ADAPT_V, B);
        }
        {
            row_job rj = {c, B, l, NULL, NULL};
            lm_pool_run(c->pool, rope_task, &rj, row_tasks(c, B));
        }
        trace(c, "Qcur", l, c->q, B, q_dim);
        trace(c, "Kcur", l, k, B, kv_dim);
        trace(c, "Vcur", l, v, B, kv_dim);
        store_kv(c, l, k, v, B, p0);
        attn_job job = {c, l, B, p0};
        lm_pool_run(c->pool, attn_task, &job, B * cfg->n_head_kv);
        trace(c, "kqv_out", l, c->att, B, q_dim);
        lm_matmul(c->pool, c->xb, c->att, L->wo.data, L->wo.type, B, d, q_dim);
        if (c->ad) lora_add(c, c->xb, c->att, l, LM_ADAPT_O, B);
        trace(c, "attn_out", l, c->xb, B, d);
        add_norm(c, c->xb, L->ffn_norm, B);
        trace(c, "ffn_inp", l, c->x, B, d);
        trace(c, "ffn_norm", l, c->xb, B, d);
        {
            float *ys[2] = {c->hb, c->hb2};
            const lm_weight *ws[2] = {&L->w_gate, &L->w_up};
            proj_multi(c->pool, 2, ys, ws, c->xb, B);
        }
        if (c->ad) {
            lora_add(c, c->hb, c->xb, l, LM_ADAPT_GATE, B);
            lora_add(c, c->hb2, c->xb, l, LM_ADAPT_UP, B);
        }
        trace(c, "ffn_gate", l, c->hb, B, ff);
        trace(c, "ffn_up", l, c->hb2, B, ff);
        {
            row_job sj = {c, B, l, NULL, NULL};
            lm_pool_run(c->pool, swiglu_task, &sj, row_tasks(c, B));
        }
        trace(c, "ffn_swiglu", l, c->hb, B, ff);
        lm_matmul(c->pool, c->xb, c->hb, L->w_down.data, L->w_down.type, B, d, ff);
        if (c->ad) lora_add(c, c->xb, c->hb, l, LM_ADAPT_DOWN, B);
        trace(c, "ffn_out", l, c->xb, B, d);
        add_norm(c, c->xb, NULL, B);
        trace(c, "l_out", l, c->x, B, d);
    }
}

int lm_eval(lm_ctx *c, const int32_t *tokens, int n, lm_logits_mode mode, float *logits,
            lm_err *err) {
    const lm_model *m = c->m;
    const lm_llama_config *cfg = &m->cfg;
    if (n <= 0) return lm_errf(err, "lm_eval: no tokens to evaluate (n = %d)", n);
    if (mode != LM_LOGITS_NONE && !logits)
        return lm_errf(err, "lm_eval: logits buffer is NULL");
    if (n > c->n_ctx - c->n_past)
        return lm_errf(err, "context full: %d tokens in the cache + %d new > context size %d",
                       c->n_past, n, c->n_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= cfg->n_vocab)
            return lm_errf(err, "lm_eval: token %d at index %d is outside the vocabulary [0, %d)",
                           tokens[i], i, cfg->n_vocab);
    if (ensure_kv(c, c->n_past + n, err) || ensure_scratch(c, err)) return -1;

    int d = cfg->n_embd;
    for (int done = 0, ub_end = 0; done < n;) {
        if (done == ub_end) ub_end = done + (n - done < LM_UBATCH ? n - done : LM_UBATCH);
        int left = ub_end - done;
        int B = left < c->n_batch ? left : c->n_batch;
        if (left - B == 1 && B > 2) B--;
        forward_chunk(c, tokens + done, B);
        c->n_past += B;
        done += B;
        if (mode == LM_LOGITS_ALL) {
            /* LM head for every row of the chunk, straight into the caller's buffer */
            lm_rmsnorm(c->xb, c->x, m->output_norm, B, d, cfg->rms_eps);
            trace(c, "result_norm", -1, c->xb, B, d);
            lm_matmul(c->pool, logits + (size_t)(done - B) * (size_t)cfg->n_vocab, c->xb,
                      m->output.data, m->output.type, B, cfg->n_vocab, d);
            trace(c, "result_output", -1, logits + (size_t)(done - B) * (size_t)cfg->n_vocab, B,
                  cfg->n_vocab);
        } else if (mode == LM_LOGITS_LAST && done == n) {
            /* only the last row: the head is the largest matmul of the model */
            const float *last = c->x + (size_t)(B - 1) * d;
            lm_rmsnorm(c->xb, last, m->output_norm, 1, d, cfg->rms_eps);
            lm_matmul(c->pool, logits, c->xb, m->output.data, m->output.type, 1,
                      cfg->n_vocab, d);
        }
    }
    return 0;
}
