/* Runtime LoRA adapter loading (see adapter.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/adapter.h"
#include "model/convert.h"

static const char *const proj_names[LM_ADAPT_N] = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
};

const char *lm_adapter_proj_name(int p) {
    return p >= 0 && p < LM_ADAPT_N ? proj_names[p] : NULL;
}

const lm_weight *lm_adapter_base_weight(const lm_model *m, int layer, int p) {
    const lm_llama_layer *L = &m->layers[layer];
    switch (p) {
    case LM_ADAPT_Q: return &L->wq;
    case LM_ADAPT_K: return &L->wk;
    case LM_ADAPT_V: return &L->wv;
    case LM_ADAPT_O: return &L->wo;
    case LM_ADAPT_GATE: return &L->w_gate;
    case LM_ADAPT_UP: return &L->w_up;
    default: return &L->w_down;
    }
}

void lm_adapter_free(lm_adapter *a) {
    if (!a) return;
    free(a->pairs);
    free(a->data);
    free(a);
}

/* The next piece of bytes in an owned block, at a 64-byte boundary (F16
 * and F32 pieces share the block). Returns its offset. */
static size_t piece(size_t *off, size_t bytes) {
    size_t at = (*off + 63) & ~(size_t)63;
    *off = at + bytes;
    return at;
}

static size_t elem_bytes(lm_dtype t) { return t == LM_F16 ? sizeof(uint16_t) : sizeof(float); }

/* "blk.N.<proj>.weight.lora_a|b" -> layer, projection, 0 for a / 1 for b. */
static int parse_name(const char *name, int n_layer, int *layer, int *proj, int *is_b) {
    int l, n = 0;
    if (sscanf(name, "blk.%d.%n", &l, &n) != 1 || n == 0 || l < 0 || l >= n_layer) return -1;
    const char *rest = name + n;
    for (int p = 0; p < LM_ADAPT_N; p++) {
        size_t pl = strlen(proj_names[p]);
        if (strncmp(rest, proj_names[p], pl) != 0) continue;
        if (!strcmp(rest + pl, ".weight.lora_a")) *is_b = 0;
        else if (!strcmp(rest + pl, ".weight.lora_b")) *is_b = 1;
        else continue;
        *layer = l; *proj = p;
        return 0;
    }
    return -1;
}

static int check_str(const gguf_file *f, const char *key, const char *want, lm_err *err) {
    char *v = gguf_get_str(f, key, err);
    if (!v) return -1;
    int ok = !strcmp(v, want);
    if (!ok) lm_errf(err, "%s: %s is '%s', expected '%s'", f->path, key, v, want);
    free(v);
    return ok ? 0 : -1;
}

lm_adapter_dims lm_adapter_dims_of(const lm_llama_config *cfg) {
    int q = cfg->n_head * cfg->head_dim, kv = cfg->n_head_kv * cfg->head_dim;
    lm_adapter_dims d = {
        .arch = cfg->arch,
        .n_layer = cfg->n_layer,
        .in = {[LM_ADAPT_Q] = cfg->n_embd, [LM_ADAPT_K] = cfg->n_embd, [LM_ADAPT_V] = cfg->n_embd,
               [LM_ADAPT_O] = q, [LM_ADAPT_GATE] = cfg->n_embd, [LM_ADAPT_UP] = cfg->n_embd,
               [LM_ADAPT_DOWN] = cfg->n_ff},
        .out = {[LM_ADAPT_Q] = q, [LM_ADAPT_K] = kv, [LM_ADAPT_V] = kv,
                [LM_ADAPT_O] = cfg->n_embd, [LM_ADAPT_GATE] = cfg->n_ff, [LM_ADAPT_UP] = cfg->n_ff,
                [LM_ADAPT_DOWN] = cfg->n_embd},
    };
    return d;
}

lm_adapter *lm_adapter_read(const gguf_file *f, const lm_adapter_dims *d, lm_err *err) {
    if (check_str(f, "general.type", "adapter", err) ||
        check_str(f, "adapter.type", "lora", err))
        return NULL;
    char *arch = gguf_get_str(f, "general.architecture", err);
    if (!arch) return NULL;
    if (strcmp(arch, d->arch) != 0) {
        lm_errf(err, "%s: general.architecture is '%s' but the base model is '%s'", f->path,
                arch, d->arch);
        free(arch);
        return NULL;
    }
    free(arch);
    float alpha = 0.0f;
    if (gguf_get_f32_opt(f, "adapter.lora.alpha", &alpha, err)) return NULL;
    if (!(alpha >= 0.0f && alpha < 1e6f)) {
        lm_errf(err, "%s: adapter.lora.alpha %g out of range", f->path, (double)alpha);
        return NULL;
    }
    float dropout = 0.0f;   /* ours (lemonpc train), for the PEFT export only */
    if (gguf_get_f32_opt(f, "adapter.lora.dropout", &dropout, err)) return NULL;
    if (!(dropout >= 0.0f && dropout < 1.0f)) {
        lm_errf(err, "%s: adapter.lora.dropout %g outside [0, 1)", f->path, (double)dropout);
        return NULL;
    }

    lm_adapter *a = calloc(1, sizeof *a);
    if (!a) { lm_errf(err, "out of memory"); return NULL; }
    snprintf(a->arch, sizeof a->arch, "%s", d->arch);
    a->n_layer = d->n_layer;
    a->pairs = calloc((size_t)d->n_layer * LM_ADAPT_N, sizeof *a->pairs);
    /* which tensor fills each slot, [n_layer * N][2], to find duplicates and gaps */
    const gguf_tensor **slot = calloc((size_t)d->n_layer * LM_ADAPT_N * 2, sizeof *slot);
    if (!a->pairs || !slot) { lm_errf(err, "out of memory"); goto fail; }

    /* Pass 1: every tensor must be one half of a pair on a base projection,
     * its shape matching the base weight; rank from the first one. */
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        int l, p, is_b;
        if (parse_name(t->name, d->n_layer, &l, &p, &is_b)) {
            lm_errf(err, "%s: tensor '%s' is not a lora_a/lora_b of a projection of this "
                    "base model (blk.0..%d.{attn_q,attn_k,attn_v,attn_output,ffn_gate,"
                    "ffn_up,ffn_down}.weight.lora_a|b)", f->path, t->name, d->n_layer - 1);
            goto fail;
        }
        int64_t r = is_b ? t->ne[0] : t->ne[1];
        int64_t want0 = is_b ? r : d->in[p], want1 = is_b ? d->out[p] : r;
        if (t->n_dims != 2 || t->ne[0] != want0 || t->ne[1] != want1 || r <= 0 || r > 4096) {
            lm_errf(err, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld] "
                    "for a base weight of [%d, %d] (ne order)", f->path, t->name,
                    (long long)t->ne[0], (long long)t->ne[1], (long long)want0,
                    (long long)want1, d->in[p], d->out[p]);
            goto fail;
        }
        if (!a->rank) a->rank = (int)r;
        if (r != a->rank) {
            lm_errf(err, "%s: tensor '%s' has rank %lld but earlier tensors have rank %d",
                    f->path, t->name, (long long)r, a->rank);
            goto fail;
        }
        if (!lm_dtype_supported(t->type) || lm_dtype_row_bytes(t->type, t->ne[0]) == 0) {
            lm_errf(err, "%s: tensor '%s' has type %s that cannot be read with rows of %lld",
                    f->path, t->name, lm_dtype_name(t->type) ? lm_dtype_name(t->type) : "?",
                    (long long)t->ne[0]);
            goto fail;
        }
        const gguf_tensor **s = &slot[((size_t)l * LM_ADAPT_N + p) * 2 + is_b];
        if (*s) { lm_errf(err, "%s: tensor '%s' appears twice", f->path, t->name); goto fail; }
        *s = t;
    }
    if (!a->rank) { lm_errf(err, "%s: the adapter has no LoRA tensors", f->path); goto fail; }
    a->alpha = alpha > 0.0f ? alpha : (float)a->rank;
    a->dropout = dropout;

    /* Pass 2: pairs complete; the bytes they take (a pair whose halves are
     * both F16 stays F16, any other is widened to F32). */
    size_t total = 0;
    for (int l = 0; l < d->n_layer; l++) {
        for (int p = 0; p < LM_ADAPT_N; p++) {
            const gguf_tensor *ta = slot[((size_t)l * LM_ADAPT_N + p) * 2];
            const gguf_tensor *tb = slot[((size_t)l * LM_ADAPT_N + p) * 2 + 1];
            if (!ta && !tb) continue;
            if (!ta || !tb) {
                lm_errf(err, "%s: tensor 'blk.%d.%s.weight.lora_%c' is missing (its pair "
                        "'%s' is present)", f->path, l, proj_names[p], ta ? 'b' : 'a',
                        (ta ? ta : tb)->name);
                goto fail;
            }
            lm_dtype ty = ta->type == LM_F16 && tb->type == LM_F16 ? LM_F16 : LM_F32;
            piece(&total, elem_bytes(ty) * (size_t)ta->ne[0] * (size_t)ta->ne[1]);
            piece(&total, elem_bytes(ty) * (size_t)tb->ne[0] * (size_t)tb->ne[1]);
        }
    }
    a->data = malloc(total ? total : 1);
    if (!a->data) { lm_errf(err, "out of memory for the adapter (%zu bytes)", total); goto fail; }
    a->data_bytes = total;
    size_t off = 0;
    for (int l = 0; l < d->n_layer; l++) {
        for (int p = 0; p < LM_ADAPT_N; p++) {
            const gguf_tensor *ta = slot[((size_t)l * LM_ADAPT_N + p) * 2];
            const gguf_tensor *tb = slot[((size_t)l * LM_ADAPT_N + p) * 2 + 1];
            if (!ta) continue;
            lm_adapter_pair *pr = &a->pairs[l * LM_ADAPT_N + p];
            pr->type = ta->type == LM_F16 && tb->type == LM_F16 ? LM_F16 : LM_F32;
            const gguf_tensor *ts[2] = {ta, tb};
            const void **outs[2] = {&pr->a, &pr->b};
            for (int h = 0; h < 2; h++) {
                const gguf_tensor *t = ts[h];
                size_t n = (size_t)t->ne[0] * (size_t)t->ne[1];
                char *dst = (char *)a->data + piece(&off, elem_bytes(pr->type) * n);
                *outs[h] = dst;
                if (pr->type == LM_F16) {   /* as it is: llama.cpp computes with it so */
                    memcpy(dst, t->data, sizeof(uint16_t) * n);
                    continue;
                }
                size_t rb = lm_dtype_row_bytes(t->type, t->ne[0]);
                for (int64_t row = 0; row < t->ne[1]; row++)
                    lm_dequant_row(t->type, (const uint8_t *)t->data + (size_t)row * rb,
                                   (float *)dst + (size_t)row * (size_t)t->ne[0], t->ne[0]);
            }
            pr->in = (int)ta->ne[0];
            pr->out = (int)tb->ne[1];
            a->targets |= 1u << p;
            a->n_pairs++;
        }
    }
    free(slot);
    return a;
fail:
    free(slot);
    lm_adapter_free(a);
    return NULL;
}

lm_adapter *lm_adapter_from_gguf(const lm_model *base, const gguf_file *f, lm_err *err) {
    lm_adapter_dims d = lm_adapter_dims_of(&base->cfg);
    return lm_adapter_read(f, &d, err);
}

int lm_adapter_to_f32(lm_adapter *a, lm_err *err) {
    size_t total = 0;
    int any = 0;
    for (int i = 0; i < a->n_layer * LM_ADAPT_N; i++) {
        const lm_adapter_pair *pr = &a->pairs[i];
        if (!pr->a) continue;
        any |= pr->type == LM_F16;
        piece(&total, sizeof(float) * (size_t)a->rank * (size_t)pr->in);
        piece(&total, sizeof(float) * (size_t)a->rank * (size_t)pr->out);
    }
    if (!any) return 0;
    void *data = malloc(total ? total : 1);
    if (!data) return lm_errf(err, "out of memory widening the adapter to f32 (%zu bytes)", total);
    size_t off = 0;
    for (int i = 0; i < a->n_layer * LM_ADAPT_N; i++) {
        lm_adapter_pair *pr = &a->pairs[i];
        if (!pr->a) continue;
        const void **halves[2] = {&pr->a, &pr->b};
        size_t ns[2] = {(size_t)a->rank * (size_t)pr->in, (size_t)a->rank * (size_t)pr->out};
        for (int h = 0; h < 2; h++) {
            float *dst = (float *)((char *)data + piece(&off, sizeof(float) * ns[h]));
            if (pr->type == LM_F16) {
                const uint16_t *src = *halves[h];
                for (size_t e = 0; e < ns[h]; e++) dst[e] = lm_f16_to_f32(src[e]);
            } else {
                memcpy(dst, *halves[h], sizeof(float) * ns[h]);
            }
            *halves[h] = dst;
        }
        pr->type = LM_F32;
    }
    free(a->data);
    a->data = data;
    a->data_bytes = total;
    return 0;
}

int lm_adapter_convert(const char *src, const char *dst, lm_dtype type, lm_err *err) {
    /* the converter would write any type it writes; an adapter is kept to
     * the two our runtime applies as llama.cpp does (adapter.h) */
    if (type != LM_F32 && type != LM_F16) {
        const char *name = lm_dtype_name(type);
        return lm_errf(err, "%s: an adapter is written in F32 or F16, not %s", dst,
                       name ? name : "an unknown type");
    }
    gguf_file *f = gguf_open(src, err);
    if (!f) return -1;
    lm_convert_opts o = {.kind = LM_CONVERT_ADAPTER, .type = type, .embd_type = type};
    int rc = check_str(f, "general.type", "adapter", err) ||
             lm_convert_write(f, dst, &o, NULL, err);
    gguf_close(f);
    return rc ? -1 : 0;
}

lm_adapter *lm_adapter_load(const lm_model *base, const char *path, lm_err *err) {
    gguf_file *f = gguf_open(path, err);
    if (!f) return NULL;
    lm_adapter *a = lm_adapter_from_gguf(base, f, err);
    gguf_close(f);
    return a;
}
