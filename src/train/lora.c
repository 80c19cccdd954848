/* LoRA adapter parameters (see lora.h). */
#include "train/lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "model/adapter.h"
#include "tensor/dtype.h"
#include "train/train_internal.h"

static const int base_index[LM_LORA_N] = {
    LM_TW_Q, LM_TW_K, LM_TW_V, LM_TW_O, LM_TW_GATE, LM_TW_UP, LM_TW_DOWN,
};
static const char *const target_names[LM_LORA_N] = { "q", "k", "v", "o", "gate", "up", "down" };

/* targets are named and read as the runtime's adapter projections */
_Static_assert((int)LM_LORA_N == (int)LM_ADAPT_N && (int)LM_LORA_Q == (int)LM_ADAPT_Q &&
               (int)LM_LORA_O == (int)LM_ADAPT_O && (int)LM_LORA_DOWN == (int)LM_ADAPT_DOWN,
               "lm_lora targets are the adapter's projections, in the same order");

int lm_lora_base_index(int target) { return base_index[target]; }

int lm_lora_parse_targets(const char *csv, unsigned *out, lm_err *err) {
    unsigned mask = 0;
    const char *p = csv;
    while (*p) {
        size_t n = strcspn(p, ",");
        int found = 0;
        if (n == 3 && !strncmp(p, "all", 3)) { mask |= LM_LORA_ALL; found = 1; }
        for (int t = 0; t < LM_LORA_N && !found; t++)
            if (strlen(target_names[t]) == n && !strncmp(p, target_names[t], n)) {
                mask |= 1u << t;
                found = 1;
            }
        if (!found)
            return lm_errf(err, "LoRA targets '%s': unknown target '%.*s' (use q,k,v,o,gate,up,down or all)",
                           csv, (int)n, p);
        p += n;
        if (*p == ',') p++;
    }
    if (!mask) return lm_errf(err, "LoRA targets '%s': empty", csv);
    *out = mask;
    return 0;
}

lm_lora *lm_lora_new(const lm_tmodel *m, int rank, float alpha, unsigned targets,
                     uint64_t seed, lm_err *err) {
    const lm_tconfig *c = &m->cfg;
    if (rank <= 0 || rank > c->dim) {
        lm_errf(err, "LoRA rank %d out of range 1..%d", rank, c->dim);
        return NULL;
    }
    if (!(targets & LM_LORA_ALL) || (targets & ~LM_LORA_ALL)) {
        lm_errf(err, "LoRA targets mask 0x%x is invalid", targets);
        return NULL;
    }
    lm_lora *l = calloc(1, sizeof *l);
    if (!l) { lm_errf(err, "out of memory"); return NULL; }
    int L = c->n_layers, per = __builtin_popcount(targets);
    l->rank = rank; l->n_layers = L; l->alpha = alpha; l->scale = alpha / (float)rank;
    l->targets = targets;
    l->n_tensors = 2 * per * L;
    l->tensors = calloc((size_t)l->n_tensors, sizeof *l->tensors);
    l->a = calloc((size_t)L, sizeof *l->a);
    l->b = calloc((size_t)L, sizeof *l->b);
    if (!l->tensors || !l->a || !l->b) goto oom;
    size_t off = 0;
    int k = 0;
    for (int i = 0; i < L; i++)
        for (int t = 0; t < LM_LORA_N; t++) {
            if (!(targets & (1u << t))) continue;
            const lm_ttensor *bt = &m->tensors[1 + i * LM_TW_N + base_index[t]];
            int64_t in = bt->ne[0], out = bt->ne[1];
            for (int ab = 0; ab < 2; ab++) {
                lm_ttensor *x = &l->tensors[k++];
                snprintf(x->name, sizeof x->name, "blk.%d.%s.weight.lora_%c", i, lm_adapter_proj_name(t), ab ? 'b' : 'a');
                x->n_dims = 2;
                x->ne[0] = ab ? rank : in;
                x->ne[1] = ab ? out : rank;
                x->numel = (size_t)rank * (size_t)(ab ? out : in);
                x->offset = off;
                off += x->numel;
            }
        }
    l->n_params = off;
    l->params = calloc(off, sizeof(float));
    l->grads = calloc(off, sizeof(float));
    if (!l->params || !l->grads) goto oom;
    lm_trng r;
    lm_trng_seed(&r, seed);
    k = 0;
    for (int i = 0; i < L; i++)
        for (int t = 0; t < LM_LORA_N; t++) {
            if (!(targets & (1u << t))) continue;
            const lm_ttensor *ta = &l->tensors[k++], *tb = &l->tensors[k++];
            l->a[i][t] = l->params + ta->offset;
            l->b[i][t] = l->params + tb->offset;
            double bound = 1.0 / sqrt((double)ta->ne[0]);
            for (size_t j = 0; j < ta->numel; j++)
                l->a[i][t][j] = (float)((2.0 * lm_trng_uniform(&r) - 1.0) * bound);
        }
    return l;
oom:
    lm_lora_free(l);
    lm_errf(err, "out of memory for LoRA adapters");
    return NULL;
}

void lm_lora_free(lm_lora *l) {
    if (!l) return;
    free(l->tensors);
    free(l->a);
    free(l->b);
    free(l->params);
    free(l->grads);
    free(l);
}

void lm_lora_zero_grads(lm_lora *l) { memset(l->grads, 0, l->n_params * sizeof(float)); }

const lm_ttensor *lm_lora_find(const lm_lora *l, const char *name) {
    for (int i = 0; i < l->n_tensors; i++)
        if (!strcmp(l->tensors[i].name, name)) return &l->tensors[i];
    return NULL;
}

int lm_lora_save(const lm_lora *l, const char *path, lm_err *err) {
    gguf_writer *w = gguf_writer_new();
    if (!w) return lm_errf(err, "out of memory");
    int rc = gguf_set_str(w, "general.architecture", "llama", err) ||
             gguf_set_str(w, "general.type", "adapter", err) ||
             gguf_set_str(w, "adapter.type", "lora", err) ||
             gguf_set_f32(w, "adapter.lora.alpha", l->alpha, err);
    /* ours, not llama.cpp's (which ignores it): only for the PEFT export's
     * lora_dropout; absent means 0, so adapters trained without dropout
     * are written as before */
    if (!rc && l->dropout > 0) rc = gguf_set_f32(w, "adapter.lora.dropout", l->dropout, err);
    for (int i = 0; !rc && i < l->n_tensors; i++) {
        const lm_ttensor *t = &l->tensors[i];
        rc = gguf_add_tensor(w, t->name, LM_F32, 2, t->ne, l->params + t->offset,
                             t->numel * sizeof(float), err);
    }
    if (!rc) rc = gguf_write(w, path, err);
    gguf_writer_free(w);
    return rc ? -1 : 0;
}

/* Reads with the runtime's adapter reader (model/adapter.h), so a file the
 * trainer continues from (DPO after SFT, a resumed run) is checked exactly
 * as a game loading it is, then widened to f32 (F16 factors, lemonpc build
 * --adapter-type f16, widen exactly) and laid out as lm_lora. The trainer
 * also needs the same targets on every layer. */
static lm_lora *load_from(const lm_tmodel *m, const gguf_file *f, lm_err *err) {
    const lm_tconfig *c = &m->cfg;
    lm_adapter_dims d = {.arch = "llama", .n_layer = c->n_layers};
    int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    const int in[LM_LORA_N] = {c->dim, c->dim, c->dim, q, c->dim, c->dim, c->ffn_dim};
    const int out[LM_LORA_N] = {q, kv, kv, c->dim, c->ffn_dim, c->ffn_dim, c->dim};
    memcpy(d.in, in, sizeof in);
    memcpy(d.out, out, sizeof out);
    lm_adapter *a = lm_adapter_read(f, &d, err);
    if (!a) return NULL;
    lm_lora *lo = NULL;
    if (lm_adapter_to_f32(a, err)) goto done;
    for (int l = 0; l < c->n_layers; l++)
        for (int t = 0; t < LM_LORA_N; t++)
            if (!lm_adapter_get(a, l, t)->a != !(a->targets & (1u << t))) {
                lm_errf(err, "%s: tensor 'blk.%d.%s.weight.lora_a' missing (every layer needs the "
                        "same targets)", f->path, l, lm_adapter_proj_name(t));
                goto done;
            }
    if (!(lo = lm_lora_new(m, a->rank, a->alpha, a->targets, 0, err))) {
        lm_err_prefix(err, "%s", f->path);
        goto done;
    }
    lo->dropout = a->dropout;
    for (int l = 0; l < c->n_layers; l++)
        for (int t = 0; t < LM_LORA_N; t++) {
            const lm_adapter_pair *p = lm_adapter_get(a, l, t);
            if (!p->a) continue;
            memcpy(lo->a[l][t], p->a, sizeof(float) * (size_t)a->rank * (size_t)p->in);
            memcpy(lo->b[l][t], p->b, sizeof(float) * (size_t)a->rank * (size_t)p->out);
        }
done:
    lm_adapter_free(a);
    return lo;
}

lm_lora *lm_lora_load(const lm_tmodel *m, const char *path, lm_err *err) {
    gguf_file *f = gguf_open(path, err);
    if (!f) return NULL;
    lm_lora *l = load_from(m, f, err);
    gguf_close(f);
    return l;
}
