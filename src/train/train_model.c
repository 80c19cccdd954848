/* f32 training weights: layout, GGUF load (any supported type, dequantized),
 * random init for tests, save, and the activation buffers. */
#include "train/train_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/llama.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "train/lora.h"
#include "train/train_internal.h"

/* ---- PRNG ------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void lm_trng_seed(lm_trng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t lm_trng_next(lm_trng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return out;
}

double lm_trng_uniform(lm_trng *r) { return (double)(lm_trng_next(r) >> 11) * 0x1.0p-53; }

double lm_trng_normal(lm_trng *r) {
    double u1 = lm_trng_uniform(r), u2 = lm_trng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

/* ---- layout ---------------------------------------------------------- */

static const char *const layer_names[LM_TW_N] = {
    "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
    "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
};

static void layer_shape(const lm_tconfig *c, int w, int64_t ne[2], int *n_dims) {
    int qd = c->n_heads * c->head_dim, kd = c->n_kv_heads * c->head_dim;
    *n_dims = 2;
    switch (w) {
    case LM_TW_ATTN_NORM: case LM_TW_FFN_NORM: ne[0] = c->dim; ne[1] = 1; *n_dims = 1; break;
    case LM_TW_Q: ne[0] = c->dim; ne[1] = qd; break;
    case LM_TW_K: case LM_TW_V: ne[0] = c->dim; ne[1] = kd; break;
    case LM_TW_O: ne[0] = qd; ne[1] = c->dim; break;
    case LM_TW_GATE: case LM_TW_UP: ne[0] = c->dim; ne[1] = c->ffn_dim; break;
    default: ne[0] = c->ffn_dim; ne[1] = c->dim; break; /* down */
    }
}

static int check_config(const lm_tconfig *c, lm_err *err) {
    if (c->n_vocab <= 0 || c->dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->head_dim <= 0 || c->ffn_dim <= 0)
        return lm_errf(err, "model config: sizes must be positive (vocab %d dim %d layers %d heads %d kv %d head_dim %d ffn %d)",
                       c->n_vocab, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim);
    if (c->n_heads % c->n_kv_heads)
        return lm_errf(err, "model config: head_count %d is not a multiple of head_count_kv %d", c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2)
        return lm_errf(err, "model config: head dim %d is odd (RoPE rotates pairs)", c->head_dim);
    if (!(c->rms_eps > 0) || !(c->rope_base > 0))
        return lm_errf(err, "model config: rms eps %g and rope base %g must be positive", c->rms_eps, c->rope_base);
    return 0;
}

static lm_tmodel *alloc_model(const lm_tconfig *cfg, lm_err *err) {
    if (check_config(cfg, err)) return NULL;
    size_t off = 0;
    lm_tmodel *m = calloc(1, sizeof *m);
    if (!m) { lm_errf(err, "out of memory"); return NULL; }
    m->cfg = *cfg;
    int L = cfg->n_layers;
    m->n_tensors = 2 + L * LM_TW_N + (cfg->tied ? 0 : 1);
    m->tensors = calloc((size_t)m->n_tensors, sizeof *m->tensors);
    m->layer = calloc((size_t)L, sizeof *m->layer);
    if (!m->tensors || !m->layer) goto oom;
    int k = 0;
#define ADD(nm, nd, e0, e1) do { lm_ttensor *t = &m->tensors[k++]; \
        snprintf(t->name, sizeof t->name, "%s", nm); t->n_dims = nd; \
        t->ne[0] = e0; t->ne[1] = e1; t->numel = (size_t)(e0) * (size_t)(e1); \
        t->offset = off; off += t->numel; } while (0)
    ADD("token_embd.weight", 2, cfg->dim, cfg->n_vocab);
    for (int l = 0; l < L; l++)
        for (int w = 0; w < LM_TW_N; w++) {
            char nm[64]; int64_t ne[2]; int nd;
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, layer_names[w]);
            layer_shape(cfg, w, ne, &nd);
            ADD(nm, nd, ne[0], ne[1]);
        }
    ADD("output_norm.weight", 1, cfg->dim, 1);
    if (!cfg->tied) ADD("output.weight", 2, cfg->dim, cfg->n_vocab);
#undef ADD
    m->n_params = off;
    m->params = calloc(off, sizeof(float));
    if (!m->params) goto oom;
    m->tok_embd = m->params;
    for (int l = 0; l < L; l++)
        for (int w = 0; w < LM_TW_N; w++)
            m->layer[l][w] = m->params + m->tensors[1 + l * LM_TW_N + w].offset;
    m->out_norm = m->params + m->tensors[1 + L * LM_TW_N].offset;
    m->lm_head = cfg->tied ? m->tok_embd : m->params + m->tensors[2 + L * LM_TW_N].offset;
    return m;
oom:
    lm_tmodel_free(m);
    lm_errf(err, "out of memory for a model of %zu parameters", off);
    return NULL;
}

void lm_tmodel_free(lm_tmodel *m) {
    if (!m) return;
    free(m->tensors);
    free(m->layer);
    free(m->params);
    free(m->grads);
    free(m->rope_freqs);
    free(m);
}

int lm_tmodel_alloc_grads(lm_tmodel *m, lm_err *err) {
    if (m->grads) return 0;
    m->grads = calloc(m->n_params, sizeof(float));
    if (!m->grads) return lm_errf(err, "out of memory for %zu gradients", m->n_params);
    return 0;
}

void lm_tmodel_zero_grads(lm_tmodel *m) {
    if (m->grads) memset(m->grads, 0, m->n_params * sizeof(float));
}

const lm_ttensor *lm_tmodel_find(const lm_tmodel *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

int lm_ttensor_decays(const lm_ttensor *t) { return t->n_dims == 2; }

lm_tmodel *lm_tmodel_new_random(const lm_tconfig *cfg, uint64_t seed, float std, lm_err *err) {
    lm_tmodel *m = alloc_model(cfg, err);
    if (!m) return NULL;
    lm_trng r;
    lm_trng_seed(&r, seed);
    for (int i = 0; i < m->n_tensors; i++) {
        const lm_ttensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        for (size_t j = 0; j < t->numel; j++)
            p[j] = t->n_dims == 1 ? 1.0f + 0.1f * (float)lm_trng_normal(&r)
                                  : std * (float)lm_trng_normal(&r);
    }
    return m;
}

/* ---- GGUF ------------------------------------------------------------ */

lm_tmodel *lm_tmodel_from_gguf(const gguf_file *f, lm_err *err) {
    lm_llama_config lc;
    if (lm_llama_config_read(f, &lc, err)) return NULL;
    lm_tconfig cfg = {
        .n_vocab = lc.n_vocab, .dim = lc.n_embd, .n_layers = lc.n_layer,
        .n_heads = lc.n_head, .n_kv_heads = lc.n_head_kv, .head_dim = lc.head_dim,
        .ffn_dim = lc.n_ff, .rope_base = lc.rope_base, .rms_eps = lc.rms_eps,
        .tied = lc.tied, .n_ctx = lc.n_ctx_train,
    };
    lm_tmodel *m = alloc_model(&cfg, err);
    if (!m) { lm_err_prefix(err, "%s", f->path); return NULL; }
    if (lc.rope_freqs) {
        size_t n = (size_t)lc.head_dim / 2;
        if (!(m->rope_freqs = malloc(n * sizeof(float)))) {
            lm_errf(err, "out of memory");
            goto fail;
        }
        memcpy(m->rope_freqs, lc.rope_freqs, n * sizeof(float));
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const lm_ttensor *t = &m->tensors[i];
        const gguf_tensor *g = gguf_find_tensor(f, t->name);
        if (!g) { lm_errf(err, "%s: tensor '%s' missing", f->path, t->name); goto fail; }
        if (g->ne[0] != t->ne[0] || g->ne[1] != t->ne[1] || g->ne[2] != 1 || g->ne[3] != 1) {
            lm_errf(err, "%s: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]",
                    f->path, t->name, (long long)g->ne[0], (long long)g->ne[1], (long long)g->ne[2],
                    (long long)g->ne[3], (long long)t->ne[0], (long long)t->ne[1]);
            goto fail;
        }
        if (!lm_dtype_supported((int)g->type) || g->type == LM_Q8_1) {
            lm_errf(err, "%s: tensor '%s' has unsupported type %d", f->path, t->name, (int)g->type);
            goto fail;
        }
        size_t rb = lm_dtype_row_bytes(g->type, t->ne[0]);
        if (!rb || rb * (size_t)t->ne[1] > g->nbytes) {
            lm_errf(err, "%s: tensor '%s': %lld-element rows do not fit type %s blocks",
                    f->path, t->name, (long long)t->ne[0], lm_dtype_name((int)g->type));
            goto fail;
        }
        for (int64_t r = 0; r < t->ne[1]; r++)
            lm_dequant_row(g->type, (const uint8_t *)g->data + (size_t)r * rb,
                           m->params + t->offset + (size_t)r * (size_t)t->ne[0], t->ne[0]);
    }
    return m;
fail:
    lm_tmodel_free(m);
    return NULL;
}

lm_tmodel *lm_tmodel_load(const char *path, lm_err *err) {
    gguf_file *f = gguf_open(path, err);
    if (!f) return NULL;
    lm_tmodel *m = lm_tmodel_from_gguf(f, err);
    gguf_close(f);
    return m;
}

int lm_tmodel_save(const lm_tmodel *m, const char *path, const char *base, lm_err *err) {
    const lm_tconfig *c = &m->cfg;
    gguf_writer *w = gguf_writer_new();
    if (!w) return lm_errf(err, "out of memory");
    int rc;
    lm_err ignored = {{0}};
    /* A base that cannot be read now (moved during a long run) must not
     * cost the checkpoint: the weights are then saved with cfg's values. */
    gguf_file *f = base ? gguf_open(base, &ignored) : NULL;
    if (f) {
        /* The base's metadata (tokenizer, chat template, context length,
         * architecture) makes the file a model our runtime and llama.cpp
         * load as it is; a full fine-tune changes weights, not shapes. */
        rc = gguf_copy_kvs(w, f, err) ||
             gguf_set_u32(w, "general.file_type", 0 /* LLAMA_FTYPE_ALL_F32 */, err);
        gguf_close(f);
        if (rc) lm_err_prefix(err, "%s: metadata from %s", path, base);
    } else
        rc = gguf_set_str(w, "general.architecture", "llama", err) ||
             gguf_set_u32(w, "llama.embedding_length", (uint32_t)c->dim, err) ||
             gguf_set_u32(w, "llama.block_count", (uint32_t)c->n_layers, err) ||
             gguf_set_u32(w, "llama.feed_forward_length", (uint32_t)c->ffn_dim, err) ||
             gguf_set_u32(w, "llama.attention.head_count", (uint32_t)c->n_heads, err) ||
             gguf_set_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads, err) ||
             gguf_set_u32(w, "llama.attention.key_length", (uint32_t)c->head_dim, err) ||
             gguf_set_u32(w, "llama.attention.value_length", (uint32_t)c->head_dim, err) ||
             gguf_set_u32(w, "llama.rope.dimension_count", (uint32_t)c->head_dim, err) ||
             gguf_set_u32(w, "llama.vocab_size", (uint32_t)c->n_vocab, err) ||
             gguf_set_u32(w, "llama.context_length", (uint32_t)(c->n_ctx > 0 ? c->n_ctx : 2048),
                          err) ||
             gguf_set_f32(w, "llama.rope.freq_base", c->rope_base, err) ||
             gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", c->rms_eps, err);
    for (int i = 0; !rc && i < m->n_tensors; i++) {
        const lm_ttensor *t = &m->tensors[i];
        rc = gguf_add_tensor(w, t->name, LM_F32, t->n_dims, t->ne, m->params + t->offset,
                             t->numel * sizeof(float), err);
    }
    if (!rc && m->rope_freqs) {
        const int64_t ne[2] = {c->head_dim / 2, 1};
        rc = gguf_add_tensor(w, "rope_freqs.weight", LM_F32, 1, ne, m->rope_freqs,
                             (size_t)ne[0] * sizeof(float), err);
    }
    if (!rc) rc = gguf_write(w, path, err);
    gguf_writer_free(w);
    return rc ? -1 : 0;
}

/* ---- activations ----------------------------------------------------- */

lm_tacts *lm_tacts_new(const lm_tmodel *m, const lm_lora *lora, int B, int T,
                       int loss_chunk, lm_err *err) {
    const lm_tconfig *c = &m->cfg;
    /* Every training matmul runs the kernel set LEMONPC_KERNELS picks: a
     * value this machine cannot honour fails here, before any compute. */
    if (lm_kernels_check(err)) return NULL;
    if (B <= 0 || T <= 0 || (int64_t)B * T > (1 << 24)) {
        lm_errf(err, "activations: bad batch shape B=%d T=%d", B, T);
        return NULL;
    }
    if (lora && lora->n_layers != c->n_layers) {
        lm_errf(err, "activations: LoRA has %d layers, model %d", lora->n_layers, c->n_layers);
        return NULL;
    }
    lm_tacts *a = calloc(1, sizeof *a);
    if (!a) { lm_errf(err, "out of memory"); return NULL; }
    int L = c->n_layers, N = B * T;
    a->B = a->cap_B = B; a->T = a->cap_T = T; a->N = N;
    /* Default 256 rows: [256, 49152] logits are 50 MB for SmolLM2, and
     * fewer chunks mean fewer read-modify-write passes over the LM head's
     * gradient (113 MB each) and fewer packings of its weight. */
    if (loss_chunk <= 0) loss_chunk = LM_LOSS_CHUNK_DEFAULT;
    a->loss_chunk = loss_chunk < N ? loss_chunk : N;
    a->rank = lora ? lora->rank : 0;
    size_t D = (size_t)c->dim, Q = (size_t)c->n_heads * c->head_dim,
           K = (size_t)c->n_kv_heads * c->head_dim, F = (size_t)c->ffn_dim, n = (size_t)N;
    size_t r = (size_t)a->rank, H = (size_t)c->n_heads;
    /* ln1, ln2 and hmul are one buffer each, shared by all layers: backward
     * recomputes them (from res, rstd; gate, up) bit for bit, which saves
     * about 30% of the activations. */
    size_t per_layer = n * (1 + Q + 2 * K + H /*lse*/ + Q /*atty*/ + D /*res_mid*/ +
                            1 + 2 * F) + (lora ? LM_LORA_N * n * r : 0);
    size_t wmax = F > Q ? F : Q;
    wmax = wmax > D ? wmax : D;
    size_t total = (size_t)(L + 1) * n * D + (size_t)L * per_layer + n * (2 * D + F) + n * D + n +
                   n * (2 * D + D + Q + 2 * K + Q + 3 * F + r + wmax) +
                   (size_t)a->loss_chunk * ((size_t)c->n_vocab + 2 * D) +
                   lm_op_attn_scratch(B, T, (int)H, c->n_kv_heads, c->head_dim) +
                   (size_t)T * (size_t)c->head_dim;
    a->n_floats = total;
    a->buf = calloc(total, sizeof(float));
    float ***lists[] = { &a->res, &a->ln1, &a->rstd1, &a->q, &a->k, &a->v, &a->lse, &a->atty,
                         &a->res_mid, &a->ln2, &a->rstd2, &a->gate, &a->up, &a->hmul };
    int ok = a->buf != NULL;
    for (size_t i = 0; ok && i < sizeof lists / sizeof *lists; i++)
        ok = (*lists[i] = calloc((size_t)L + 1, sizeof(float *))) != NULL;
    if (ok && lora) ok = (a->lxa = calloc((size_t)L * LM_LORA_N, sizeof(float *))) != NULL;
    if (ok) ok = (a->lrows = calloc((size_t)a->loss_chunk, sizeof(int))) != NULL;
    if (ok) ok = (a->tpos = calloc(n, sizeof(int32_t))) != NULL;
    if (ok) ok = (a->tstart = calloc(n, sizeof(int32_t))) != NULL;
    if (!ok) {
        lm_tacts_free(a);
        lm_errf(err, "out of memory for activations (%zu MB)", total * 4 >> 20);
        return NULL;
    }
    float *p = a->buf;
#define TAKE(cnt) (p += (cnt), p - (cnt))
    for (int l = 0; l <= L; l++) a->res[l] = TAKE(n * D);
    float *ln1 = TAKE(n * D), *ln2 = TAKE(n * D), *hmul = TAKE(n * F);
    for (int l = 0; l < L; l++) {
        a->ln1[l] = ln1; a->rstd1[l] = TAKE(n); a->q[l] = TAKE(n * Q);
        a->k[l] = TAKE(n * K); a->v[l] = TAKE(n * K); a->lse[l] = TAKE(n * H);
        a->atty[l] = TAKE(n * Q); a->res_mid[l] = TAKE(n * D); a->ln2[l] = ln2;
        a->rstd2[l] = TAKE(n); a->gate[l] = TAKE(n * F); a->up[l] = TAKE(n * F);
        a->hmul[l] = hmul;
        if (lora)
            for (int t = 0; t < LM_LORA_N; t++) a->lxa[l * LM_LORA_N + t] = TAKE(n * r);
    }
    a->lnf = TAKE(n * D); a->rstdf = TAKE(n);
    a->dres = TAKE(n * D); a->dlnf = TAKE(n * D); a->dln = TAKE(n * D);
    a->dq = TAKE(n * Q); a->dk = TAKE(n * K); a->dv = TAKE(n * K); a->datty = TAKE(n * Q);
    a->dgate = TAKE(n * F); a->dup = TAKE(n * F); a->dhmul = TAKE(n * F);
    a->dxa = TAKE(n * r); a->tmp = TAKE(n * wmax);
    a->logits = TAKE((size_t)a->loss_chunk * (size_t)c->n_vocab);
    a->lx = TAKE((size_t)a->loss_chunk * D);
    a->ldx = TAKE((size_t)a->loss_chunk * D);
    a->att_scratch = TAKE(lm_op_attn_scratch(B, T, (int)H, c->n_kv_heads, c->head_dim));
    a->rope_cos = TAKE((size_t)T * (size_t)(c->head_dim / 2));
    a->rope_sin = TAKE((size_t)T * (size_t)(c->head_dim / 2));
#undef TAKE
    lm_op_rope_table(a->rope_cos, a->rope_sin, T, c->head_dim, c->rope_base, m->rope_freqs);
    return a;
}

int lm_tprec_check(lm_tprec p, lm_err *err) {
    if (lm_kernels_check(err)) return -1;
    if (p == LM_TPREC_BF16 && strcmp(lm_kernels_name(), "avx512"))
        return lm_errf(err, "precision bf16 needs the avx512 kernel set (AVX-512 BF16's vdpbf16ps), "
                            "but this run has the %s set%s; f32 precision runs on every set", lm_kernels_name(),
                       lm_kernels_by_name("avx512") ? " (LEMONPC_KERNELS)" : ": this CPU lacks AVX-512 BF16");
    return 0;
}

int lm_tacts_set_precision(lm_tacts *a, lm_tprec p, lm_err *err) {
    if (lm_tprec_check(p, err)) return -1;
    a->bf16 = p == LM_TPREC_BF16;
    return 0;
}

void lm_tacts_free(lm_tacts *a) {
    if (!a) return;
    free(a->buf);
    float **lists[] = { a->res, a->ln1, a->rstd1, a->q, a->k, a->v, a->lse, a->atty,
                        a->res_mid, a->ln2, a->rstd2, a->gate, a->up, a->hmul, a->lxa };
    for (size_t i = 0; i < sizeof lists / sizeof *lists; i++) free(lists[i]);
    free(a->lrows);
    free(a->tpos);
    free(a->tstart);
    free(a);
}

size_t lm_tacts_bytes(const lm_tacts *a) { return a->n_floats * sizeof(float); }
