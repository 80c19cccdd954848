/* Llama config from GGUF metadata and weight binding: every tensor is
 * checked for presence, type and shape, then used in place. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/llama.h"
#include "tensor/kernels.h"
#include "tensor/q4_0x8.h"

/* Reads "<arch>.<name>" as u32; required unless opt. */
static int get_u32(const gguf_file *f, const char *arch, const char *name, bool opt,
                   uint32_t *out, lm_err *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    return opt ? gguf_get_u32_opt(f, key, out, err) : gguf_get_u32(f, key, out, err);
}

static int get_f32(const gguf_file *f, const char *arch, const char *name, bool opt,
                   float *out, lm_err *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    return opt ? gguf_get_f32_opt(f, key, out, err) : gguf_get_f32(f, key, out, err);
}

/* Finds name and checks it is [ne0] (ne1 == 0) or [ne0, ne1]. */
static const gguf_tensor *want(const gguf_file *f, const char *name, int64_t ne0,
                               int64_t ne1, lm_err *err) {
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) { lm_errf(err, "%s: missing tensor '%s'", f->path, name); return NULL; }
    int want_dims = ne1 ? 2 : 1;
    bool ok = t->ne[0] == ne0 && t->ne[1] == (ne1 ? ne1 : 1) && t->ne[2] == 1 && t->ne[3] == 1;
    if (!ok) {
        char got[96], exp[64];
        int p = snprintf(got, sizeof got, "[%" PRId64, t->ne[0]);
        for (int d = 1; d < t->n_dims && p < (int)sizeof got; d++)
            p += snprintf(got + p, sizeof got - (size_t)p, ", %" PRId64, t->ne[d]);
        if (p < (int)sizeof got) snprintf(got + p, sizeof got - (size_t)p, "]");
        if (want_dims == 1) snprintf(exp, sizeof exp, "[%" PRId64 "]", ne0);
        else snprintf(exp, sizeof exp, "[%" PRId64 ", %" PRId64 "]", ne0, ne1);
        lm_errf(err, "%s: tensor '%s' has shape %s, expected %s (ggml order, ne[0] first)",
                f->path, name, got, exp);
        return NULL;
    }
    if (!lm_dtype_supported((int)t->type)) {
        const char *tn = lm_dtype_name((int)t->type);
        lm_errf(err, "%s: tensor '%s' has type %s (%d), which is not supported "
                "(F32, F16, BF16, Q8_0, Q4_0, Q4_1)", f->path, name, tn ? tn : "unknown",
                (int)t->type);
        return NULL;
    }
    if (lm_dtype_row_bytes(t->type, ne0) == 0) {
        lm_errf(err, "%s: tensor '%s': row length %" PRId64 " is not a multiple of the %s "
                "block size", f->path, name, ne0, lm_dtype_name((int)t->type));
        return NULL;
    }
    return t;
}

static int bind_weight(const gguf_file *f, const char *name, int n, int k, lm_weight *w,
                       lm_err *err) {
    const gguf_tensor *t = want(f, name, k, n, err);
    if (!t) return -1;
    w->data = t->data;
    w->type = t->type;
    w->n = n;
    w->k = k;
    return 0;
}

/* Norm vectors are used as f32 in place; other dtypes (a converter may have
 * written F16) are dequantized into slot `slot` of m->norm_buf. */
static int bind_norm(lm_model *m, const char *name, int slot, const float **out, lm_err *err) {
    const gguf_file *f = m->gguf;
    int d = m->cfg.n_embd;
    const gguf_tensor *t = want(f, name, d, 0, err);
    if (!t) return -1;
    if (t->type == LM_F32) { *out = t->data; return 0; }
    if (!m->norm_buf) {
        m->norm_buf = malloc(sizeof(float) * (size_t)d * (size_t)(2 * m->cfg.n_layer + 1));
        if (!m->norm_buf) return lm_errf(err, "%s: out of memory for norm weights", f->path);
    }
    float *dst = m->norm_buf + (size_t)slot * (size_t)d;
    lm_dequant_row(t->type, t->data, dst, d);
    *out = dst;
    return 0;
}

static const char *const LAYER_TENSORS[] = {
    "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
    "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
};

/* True for names the llama graph uses; anything else (biases, extra norms)
 * would be silently ignored, giving wrong outputs, so it is refused. */
static bool known_tensor(const char *name, int n_layer) {
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "output_norm.weight") ||
        !strcmp(name, "output.weight") || !strcmp(name, "rope_freqs.weight"))
        return true;
    int layer, used = 0;
    char part[32];
    if (sscanf(name, "blk.%d.%31[a-z_].weight%n", &layer, part, &used) != 2 ||
        name[used] != '\0' || layer < 0 || layer >= n_layer)
        return false;
    char canon[96];
    snprintf(canon, sizeof canon, "blk.%d.%s.weight", layer, part);
    if (strcmp(canon, name)) return false;   /* e.g. "blk.01." */
    for (size_t i = 0; i < sizeof LAYER_TENSORS / sizeof LAYER_TENSORS[0]; i++)
        if (!strcmp(part, LAYER_TENSORS[i])) return true;
    return false;
}

/* Refuses what the graph would silently compute otherwise: rope scaling
 * (llama.cpp's rope.scaling.type defaults to linear; a factor of 0 or 1 is
 * no scaling), mixture of experts, heads of another width. */
static int check_unsupported(const gguf_file *f, const lm_llama_config *c, lm_err *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", c->arch);
    char *type = NULL;
    if (gguf_find_kv(f, key) && !(type = gguf_get_str(f, key, err))) return -1;
    float factor = 0.0f;
    if (get_f32(f, c->arch, "rope.scaling.factor", true, &factor, err) ||
        (factor == 0.0f && get_f32(f, c->arch, "rope.scale_linear", true, &factor, err))) {
        free(type);
        return -1;
    }
    bool plain = !type || !strcmp(type, "none") || !strcmp(type, "linear");
    if (!plain || !(factor == 0.0f || factor == 1.0f)) {
        lm_errf(err, "%s: rope scaling '%s' with factor %g is not supported (only none, or "
                "a factor of 1; Llama 3.x's scaling in rope_freqs.weight is)", f->path,
                type ? type : "linear", (double)factor);
        free(type);
        return -1;
    }
    free(type);
    uint32_t experts = 0, key_len = (uint32_t)c->head_dim, val_len = (uint32_t)c->head_dim;
    if (get_u32(f, c->arch, "expert_count", true, &experts, err) ||
        get_u32(f, c->arch, "attention.key_length", true, &key_len, err) ||
        get_u32(f, c->arch, "attention.value_length", true, &val_len, err))
        return -1;
    if (experts > 0)
        return lm_errf(err, "%s: %s.expert_count is %" PRIu32 ": mixture-of-experts models "
                       "are not supported", f->path, c->arch, experts);
    if (key_len != (uint32_t)c->head_dim || val_len != (uint32_t)c->head_dim)
        return lm_errf(err, "%s: %s.attention.key_length %" PRIu32 " / value_length %" PRIu32
                       " differ from embedding_length / head_count = %d (not supported)",
                       f->path, c->arch, key_len, val_len, c->head_dim);
    return 0;
}

int lm_llama_config_read(const gguf_file *f, lm_llama_config *cfg, lm_err *err) {
    memset(cfg, 0, sizeof *cfg);
    char *arch = gguf_get_str(f, "general.architecture", err);
    if (!arch) return -1;
    /* Only "llama" is accepted: other architectures differ in ways a shape
     * check cannot see (biases, norms, rope variants). */
    if (strcmp(arch, "llama") != 0) {
        lm_errf(err, "%s: general.architecture is '%s'; only 'llama' is supported",
                f->path, arch);
        free(arch);
        return -1;
    }
    snprintf(cfg->arch, sizeof cfg->arch, "%s", arch);
    free(arch);

    uint32_t n_layer, n_embd, n_ff, n_head, n_head_kv, n_ctx, n_rot = 0;
    float eps, base = 10000.0f;
    if (get_u32(f, cfg->arch, "block_count", false, &n_layer, err) ||
        get_u32(f, cfg->arch, "embedding_length", false, &n_embd, err) ||
        get_u32(f, cfg->arch, "feed_forward_length", false, &n_ff, err) ||
        get_u32(f, cfg->arch, "attention.head_count", false, &n_head, err) ||
        get_u32(f, cfg->arch, "context_length", false, &n_ctx, err) ||
        get_f32(f, cfg->arch, "attention.layer_norm_rms_epsilon", false, &eps, err) ||
        get_f32(f, cfg->arch, "rope.freq_base", true, &base, err))
        return -1;
    n_head_kv = n_head;
    if (get_u32(f, cfg->arch, "attention.head_count_kv", true, &n_head_kv, err)) return -1;

    /* Bounds keep every later size computation far from int overflow. */
    const uint32_t big = 1u << 20;
    if (n_layer == 0 || n_layer > 4096 || n_embd == 0 || n_embd > big || n_ff == 0 ||
        n_ff > big || n_head == 0 || n_head > n_embd || n_ctx == 0 || n_ctx > (1u << 24))
        return lm_errf(err, "%s: implausible llama config (block_count %" PRIu32
                       ", embedding_length %" PRIu32 ", feed_forward_length %" PRIu32
                       ", head_count %" PRIu32 ", context_length %" PRIu32 ")",
                       f->path, n_layer, n_embd, n_ff, n_head, n_ctx);
    if (n_embd % n_head)
        return lm_errf(err, "%s: embedding_length %" PRIu32 " is not a multiple of "
                       "head_count %" PRIu32, f->path, n_embd, n_head);
    if (n_head_kv == 0 || n_head % n_head_kv)
        return lm_errf(err, "%s: head_count %" PRIu32 " is not a multiple of "
                       "head_count_kv %" PRIu32, f->path, n_head, n_head_kv);
    uint32_t head_dim = n_embd / n_head;
    if (head_dim % 2)
        return lm_errf(err, "%s: head dimension %" PRIu32 " is odd; rope needs pairs",
                       f->path, head_dim);
    n_rot = head_dim;
    if (get_u32(f, cfg->arch, "rope.dimension_count", true, &n_rot, err)) return -1;
    if (n_rot != head_dim)
        return lm_errf(err, "%s: %s.rope.dimension_count %" PRIu32 " differs from the "
                       "head dimension %" PRIu32 " (partial rope is not supported)",
                       f->path, cfg->arch, n_rot, head_dim);
    if (!(eps > 0.0f && eps < 1.0f))
        return lm_errf(err, "%s: %s.attention.layer_norm_rms_epsilon %g out of range",
                       f->path, cfg->arch, (double)eps);
    if (!(base > 0.0f))
        return lm_errf(err, "%s: %s.rope.freq_base %g must be positive", f->path, cfg->arch,
                       (double)base);

    cfg->n_layer = (int)n_layer;
    cfg->n_embd = (int)n_embd;
    cfg->n_ff = (int)n_ff;
    cfg->n_head = (int)n_head;
    cfg->n_head_kv = (int)n_head_kv;
    cfg->head_dim = (int)head_dim;
    cfg->n_rot = (int)n_rot;
    cfg->n_ctx_train = (int)n_ctx;
    cfg->rope_base = base;
    cfg->rms_eps = eps;

    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    if (!emb) return lm_errf(err, "%s: missing tensor 'token_embd.weight'", f->path);
    if (emb->ne[1] <= 0 || emb->ne[1] > (1 << 24))
        return lm_errf(err, "%s: tensor 'token_embd.weight' has implausible vocab size %" PRId64,
                       f->path, emb->ne[1]);
    cfg->n_vocab = (int)emb->ne[1];
    cfg->tied = gguf_find_tensor(f, "output.weight") == NULL;
    if (check_unsupported(f, cfg, err)) return -1;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (!known_tensor(f->tensors[i].name, cfg->n_layer))
            return lm_errf(err, "%s: unexpected tensor '%s' for a %d-layer llama model "
                           "(not supported: it would be ignored)", f->path,
                           f->tensors[i].name, cfg->n_layer);
    if (gguf_find_tensor(f, "rope_freqs.weight")) {
        const gguf_tensor *t = want(f, "rope_freqs.weight", cfg->head_dim / 2, 0, err);
        if (!t) return -1;
        if (t->type != LM_F32)
            return lm_errf(err, "%s: tensor 'rope_freqs.weight' has type %s, expected F32",
                           f->path, lm_dtype_name((int)t->type));
        const float *fr = t->data;
        for (int i = 0; i < cfg->head_dim / 2; i++)
            if (!(fr[i] > 0.0f && fr[i] < INFINITY))
                return lm_errf(err, "%s: tensor 'rope_freqs.weight' element %d is %g; the "
                               "divisors must be positive and finite", f->path, i,
                               (double)fr[i]);
        cfg->rope_freqs = fr;
    }
    return 0;
}

/* Q4_0 matrices with a multiple of 8 rows (all of SmolLM2's, the output
 * layer included) are repacked into one owned buffer
 * for the faster kernels (tensor/q4_0x8.h; same numbers). The mapped
 * originals' pages are released as they are copied, so the weights are
 * resident once, not twice. LEMONPC_REPACK=0 keeps them in place (for
 * comparisons). */
static int repack_q4_0(lm_model *m, lm_err *err) {
    const char *env = getenv("LEMONPC_REPACK");
    if (env && !strcmp(env, "0")) return 0;
    /* the matrices lm_matmul multiplies by */
    const int count = 7 * m->cfg.n_layer + 1;
    lm_weight **ws = malloc(sizeof *ws * (size_t)count);
    if (!ws) return lm_errf(err, "%s: out of memory", m->gguf->path);
    int n = 0;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        lm_llama_layer *L = &m->layers[l];
        lm_weight *lw[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++) ws[n++] = lw[i];
    }
    ws[n++] = &m->output;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (ws[i]->type == LM_Q4_0) total += lm_q4x8_bytes(ws[i]->n, ws[i]->k);
    void *buf = NULL;
    if (total && posix_memalign(&buf, 64, total)) {
        free(ws);
        return lm_errf(err, "%s: out of memory repacking %zu bytes of Q4_0 weights",
                       m->gguf->path, total);
    }
    m->repacked = buf;
    unsigned char *dst = buf;
    for (int i = 0; i < n; i++) {
        lm_weight *w = ws[i];
        const size_t bytes = w->type == LM_Q4_0 ? lm_q4x8_bytes(w->n, w->k) : 0;
        if (!bytes) continue;
        /* a slice of rows at a time, released once copied: the originals
         * are never all resident next to the copy */
        const size_t row = lm_dtype_row_bytes(LM_Q4_0, w->k);
        const int slice = 256;
        for (int r = 0; r < w->n; r += slice) {
            const int rows = w->n - r < slice ? w->n - r : slice;
            const unsigned char *src = (const unsigned char *)w->data + (size_t)r * row;
            lm_q4x8_repack(src, rows, w->k, dst + (size_t)r * row);
            gguf_release(m->gguf, src, (size_t)rows * row);
        }
        w->data = dst;
        w->type = LM_Q4_0_X8;
        dst += bytes;
    }
    free(ws);
    /* Tied: the lookup reads the repacked copy too. Reading token_embd in
     * place would fault in 64 KiB around each looked-up row (the kernel's
     * fault-around), ~16 MB for a 512-token prompt, beside the copy. */
    if (m->cfg.tied && m->output.type == LM_Q4_0_X8) m->tok_embd = m->output;
    return 0;
}

lm_model *lm_model_from_gguf(const gguf_file *f, lm_err *err) {
    /* a LEMONPC_KERNELS this machine cannot honour fails here, where every
     * caller (CLI, public API, tools) reports errors, not in the forward pass */
    if (lm_kernels_check(err)) return NULL;
    lm_model *m = calloc(1, sizeof *m);
    if (!m) { lm_errf(err, "%s: out of memory", f->path); return NULL; }
    m->gguf = f;
    if (lm_llama_config_read(f, &m->cfg, err)) goto fail;
    const lm_llama_config *c = &m->cfg;

    int q_dim = c->n_head * c->head_dim, kv_dim = c->n_head_kv * c->head_dim;
    if (bind_weight(f, "token_embd.weight", c->n_vocab, c->n_embd, &m->tok_embd, err) ||
        bind_norm(m, "output_norm.weight", 2 * c->n_layer, &m->output_norm, err))
        goto fail;
    if (c->tied) m->output = m->tok_embd;
    else if (bind_weight(f, "output.weight", c->n_vocab, c->n_embd, &m->output, err)) goto fail;

    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) { lm_errf(err, "%s: out of memory", f->path); goto fail; }
    for (int l = 0; l < c->n_layer; l++) {
        lm_llama_layer *L = &m->layers[l];
        char nm[9][64];
        for (int i = 0; i < 9; i++) snprintf(nm[i], sizeof nm[i], "blk.%d.%s.weight", l, LAYER_TENSORS[i]);
        if (bind_norm(m, nm[0], 2 * l, &L->attn_norm, err) ||
            bind_weight(f, nm[1], q_dim, c->n_embd, &L->wq, err) ||
            bind_weight(f, nm[2], kv_dim, c->n_embd, &L->wk, err) ||
            bind_weight(f, nm[3], kv_dim, c->n_embd, &L->wv, err) ||
            bind_weight(f, nm[4], c->n_embd, q_dim, &L->wo, err) ||
            bind_norm(m, nm[5], 2 * l + 1, &L->ffn_norm, err) ||
            bind_weight(f, nm[6], c->n_ff, c->n_embd, &L->w_gate, err) ||
            bind_weight(f, nm[7], c->n_ff, c->n_embd, &L->w_up, err) ||
            bind_weight(f, nm[8], c->n_embd, c->n_ff, &L->w_down, err))
            goto fail;
    }
    if (repack_q4_0(m, err)) goto fail;
    return m;
fail:
    lm_model_free(m);
    return NULL;
}

lm_model *lm_model_load(const char *path, lm_err *err) {
    gguf_file *f = gguf_open(path, err);
    if (!f) return NULL;
    lm_model *m = lm_model_from_gguf(f, err);
    if (!m) { gguf_close(f); return NULL; }
    m->file = f;
    return m;
}

void lm_model_free(lm_model *m) {
    if (!m) return;
    free(m->layers);
    free(m->norm_buf);
    free(m->repacked);
    gguf_close(m->file);
    free(m);
}
