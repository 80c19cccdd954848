/* lm_gradcheck MODEL.gguf REF.gguf
 * Compares the C trainer with a PyTorch reference written by
 * tests/torch/test_gradcheck.py: logits and loss, every parameter gradient,
 * every LoRA gradient (LoRA on all seven projections), and the losses of 10
 * AdamW steps, both full and LoRA; when the reference has gc.drop_p, the
 * LoRA loss, logits, gradients and AdamW losses again with LoRA dropout
 * (masks keyed as the SFT loop keys them). Prints one row per tensor with the
 * relative error max|ours - ref| / max|ref|; exits 1 if any exceeds its
 * tolerance, 2 on a usage or input error. gc.bf16 = 1: every pass runs with
 * --precision bf16 (the reference rounded its matmul inputs alike).
 * lm_gradcheck --kernel-sets lists the kernel sets this machine runs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/pool.h"
#include "gguf/gguf.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "train/adamw.h"
#include "train/lora.h"
#include "train/train_model.h"

#define TOL_LOGITS 1e-4
#define TOL_LOSS 1e-4
#define TOL_GRAD 1e-3
/* --precision bf16 against a reference that rounds the same matmul inputs
 * (gc.bf16): tensors compare by ||ours - ref|| / ||ref||. An input a hair
 * apart in f32 and float64 can round to neighbouring bf16 values (a step of
 * 2^-8), and each such step feeds every matmul after it, so the two sides
 * drift apart by about sqrt(d) * 2^-9 after d matmuls in series: on the
 * test's 3-layer model the logits (7 in series) stay within 1.5e-3, the
 * gradients (about 14) within 6e-3 (measured), against 6.4e-3 to 7.3e-3
 * between bf16 and float64 logits (test_gradcheck.py checks that gap, so
 * the logits tell a bf16 run from an f32 one). */
#define TOL_BF16_GRAD 2e-2
#define TOL_BF16_LOGITS 2.5e-3
#define TOL_BF16_LOSS 2e-3
static int l2_mode;   /* gc.bf16 */
#define TOLG (l2_mode ? TOL_BF16_GRAD : TOL_GRAD)
#define TOLLG (l2_mode ? TOL_BF16_LOGITS : TOL_LOGITS)
#define TOLLS (l2_mode ? TOL_BF16_LOSS : TOL_LOSS)
#define LOSS_CHUNK 5   /* odd, so chunks straddle sequence boundaries */

typedef struct ref_data {
    gguf_file *f;
    lm_tbatch batch;
    int32_t *tokens, *targets, *lens, *segments, *pos;
    uint8_t *mask, *valid;  /* valid: rows whose logits the reference computed */
    int rank, steps;
    float alpha, lr, wd, clip;
    double loss, lora_loss, *adamw, *lora_adamw;
    uint32_t bf16;          /* gc.bf16 (optional): every pass with --precision bf16 */
    /* LoRA dropout case (optional: gc.drop_p present) */
    float drop_p;
    uint64_t drop_seed, drop_step, drop_micro;
    double drop_loss, *drop_adamw;
} ref_data;

static int fails;

static const gguf_kv *need_kv(const gguf_file *f, const char *key, gguf_type t, uint64_t n, lm_err *err) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) { lm_errf(err, "%s: key '%s' missing", f->path, key); return NULL; }
    if (kv->type != t || (t == GGUF_ARRAY && n && kv->arr_n != n)) {
        lm_errf(err, "%s: key '%s' has the wrong type or length", f->path, key);
        return NULL;
    }
    return kv;
}

static double need_f64(const gguf_file *f, const char *key, lm_err *err, int *bad) {
    const gguf_kv *kv = need_kv(f, key, GGUF_F64, 0, err);
    if (!kv) { *bad = 1; return 0; }
    return kv->v.f;
}

static int load_ref(ref_data *r, const char *path, lm_err *err) {
    r->f = gguf_open(path, err);
    if (!r->f) return -1;
    uint32_t B, T, rank;
    if (gguf_get_u32(r->f, "gc.B", &B, err) || gguf_get_u32(r->f, "gc.T", &T, err) ||
        gguf_get_u32(r->f, "gc.lora_rank", &rank, err) ||
        gguf_get_f32(r->f, "gc.lora_alpha", &r->alpha, err) ||
        gguf_get_f32(r->f, "gc.lr", &r->lr, err) ||
        gguf_get_f32(r->f, "gc.weight_decay", &r->wd, err) ||
        gguf_get_f32(r->f, "gc.grad_clip", &r->clip, err))
        return -1;
    if (B == 0 || T == 0 || B * T > 1u << 20) return lm_errf(err, "%s: bad B=%u T=%u", path, B, T);
    size_t N = (size_t)B * T;
    const gguf_kv *tk = need_kv(r->f, "gc.tokens", GGUF_ARRAY, N, err);
    const gguf_kv *tg = tk ? need_kv(r->f, "gc.targets", GGUF_ARRAY, N, err) : NULL;
    const gguf_kv *mk = tg ? need_kv(r->f, "gc.mask", GGUF_ARRAY, N, err) : NULL;
    const gguf_kv *ln = mk ? need_kv(r->f, "gc.lens", GGUF_ARRAY, B, err) : NULL;
    const gguf_kv *aw = ln ? need_kv(r->f, "gc.adamw_losses", GGUF_ARRAY, 0, err) : NULL;
    const gguf_kv *lw = aw ? need_kv(r->f, "gc.lora_adamw_losses", GGUF_ARRAY, aw->arr_n, err) : NULL;
    if (!lw) return -1;
    int bad = 0;
    r->loss = need_f64(r->f, "gc.loss", err, &bad);
    if (!bad) r->lora_loss = need_f64(r->f, "gc.lora_loss", err, &bad);
    if (bad) return -1;
    r->rank = (int)rank;
    r->steps = (int)aw->arr_n;
    r->tokens = calloc(N, sizeof *r->tokens);
    r->targets = calloc(N, sizeof *r->targets);
    r->mask = calloc(N, 1);
    r->lens = calloc(B, sizeof *r->lens);
    r->adamw = calloc((size_t)r->steps + 1, sizeof(double));
    r->lora_adamw = calloc((size_t)r->steps + 1, sizeof(double));
    if (!r->tokens || !r->targets || !r->mask || !r->lens || !r->adamw || !r->lora_adamw)
        return lm_errf(err, "out of memory");
    for (size_t i = 0; i < N; i++) {
        r->tokens[i] = (int32_t)gguf_arr_get_i64(tk, i);
        r->targets[i] = (int32_t)gguf_arr_get_i64(tg, i);
        r->mask[i] = (uint8_t)gguf_arr_get_i64(mk, i);
    }
    for (uint32_t b = 0; b < B; b++) r->lens[b] = (int32_t)gguf_arr_get_i64(ln, b);
    for (int s = 0; s < r->steps; s++) {
        r->adamw[s] = gguf_arr_get_f64(aw, (uint64_t)s);
        r->lora_adamw[s] = gguf_arr_get_f64(lw, (uint64_t)s);
    }
    /* packed rows (optional): segment ids, RoPE positions, and which
     * positions hold real tokens (else: the first lens[b] of each row) */
    r->valid = calloc(N, 1);
    if (!r->valid) return lm_errf(err, "out of memory");
    const gguf_kv *sg = gguf_find_kv(r->f, "gc.segments"), *ps = gguf_find_kv(r->f, "gc.pos");
    const gguf_kv *vd = gguf_find_kv(r->f, "gc.valid");
    if ((sg && sg->arr_n != N) || (ps && ps->arr_n != N) || (vd && vd->arr_n != N))
        return lm_errf(err, "%s: gc.segments/gc.pos/gc.valid must have %zu elements", path, N);
    if (sg && !(r->segments = calloc(N, sizeof(int32_t)))) return lm_errf(err, "out of memory");
    if (ps && !(r->pos = calloc(N, sizeof(int32_t)))) return lm_errf(err, "out of memory");
    for (size_t i = 0; i < N; i++) {
        if (sg) r->segments[i] = (int32_t)gguf_arr_get_i64(sg, i);
        if (ps) r->pos[i] = (int32_t)gguf_arr_get_i64(ps, i);
        r->valid[i] = vd ? (uint8_t)gguf_arr_get_i64(vd, i) : (uint8_t)((int)(i % T) < r->lens[i / T]);
    }
    r->batch = (lm_tbatch){ .B = (int)B, .T = (int)T, .tokens = r->tokens, .targets = r->targets,
                            .mask = r->mask, .segments = r->segments, .pos = r->pos };
    if (gguf_get_u32_opt(r->f, "gc.bf16", &r->bf16, err) < 0) return -1;
    l2_mode = r->bf16 != 0;
    if (!gguf_find_kv(r->f, "gc.drop_p")) return 0;
    const gguf_kv *sd = need_kv(r->f, "gc.drop_seed", GGUF_U64, 0, err);
    const gguf_kv *st = sd ? need_kv(r->f, "gc.drop_step", GGUF_U64, 0, err) : NULL;
    const gguf_kv *mi = st ? need_kv(r->f, "gc.drop_micro", GGUF_U64, 0, err) : NULL;
    const gguf_kv *dw = mi ? need_kv(r->f, "gc.drop_adamw_losses", GGUF_ARRAY, aw->arr_n, err) : NULL;
    if (!dw || gguf_get_f32(r->f, "gc.drop_p", &r->drop_p, err)) return -1;
    r->drop_loss = need_f64(r->f, "gc.drop_loss", err, &bad);
    if (bad) return -1;
    r->drop_seed = sd->v.u;
    r->drop_step = st->v.u;
    r->drop_micro = mi->v.u;
    if (!(r->drop_adamw = calloc((size_t)r->steps + 1, sizeof(double)))) return lm_errf(err, "out of memory");
    for (int s = 0; s < r->steps; s++) r->drop_adamw[s] = gguf_arr_get_f64(dw, (uint64_t)s);
    return 0;
}

static void free_ref(ref_data *r) {
    gguf_close(r->f);
    free(r->tokens); free(r->targets); free(r->mask); free(r->lens);
    free(r->segments); free(r->pos); free(r->valid);
    free(r->adamw); free(r->lora_adamw); free(r->drop_adamw);
}

static void row(const char *kind, const char *name, double rel, double tol) {
    int ok = rel <= tol;   /* NaN fails */
    if (!ok) fails++;
    printf("%-10s %-36s %11.3e  %s\n", kind, name, rel, ok ? "ok" : "FAIL");
}

/* max|a - ref| / max|ref| over n floats; row_ok(i) limits which rows count. */
static double rel_err(const float *a, const float *ref, size_t n) {
    if (l2_mode) {
        double dd = 0, rr = 0;
        for (size_t i = 0; i < n; i++) {
            double d = (double)a[i] - ref[i];
            dd += d * d;
            rr += (double)ref[i] * ref[i];
        }
        return rr > 0 ? sqrt(dd / rr) : sqrt(dd);
    }
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= md)) md = d;
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    return mr > 0 ? md / mr : md;
}

static int compare_tensor(const gguf_file *f, const char *kind, const char *prefix,
                          const lm_ttensor *t, const float *ours, lm_err *err) {
    char nm[160];
    snprintf(nm, sizeof nm, "%s%s", prefix, t->name);
    const gguf_tensor *g = gguf_find_tensor(f, nm);
    if (!g) return lm_errf(err, "%s: reference tensor '%s' missing", f->path, nm);
    if (g->type != LM_F32 || g->nbytes != t->numel * sizeof(float))
        return lm_errf(err, "%s: reference tensor '%s' is not F32 of %zu elements", f->path, nm, t->numel);
    row(kind, t->name, rel_err(ours, g->data, t->numel), TOLG);
    return 0;
}

static int compare_logits(const ref_data *r, const char *name, const float *ours, int V, lm_err *err) {
    const gguf_tensor *g = gguf_find_tensor(r->f, name);
    size_t N = (size_t)r->batch.B * r->batch.T;
    if (!g || g->type != LM_F32 || g->nbytes != N * V * sizeof(float))
        return lm_errf(err, "%s: reference tensor '%s' missing or mis-sized", r->f->path, name);
    const float *ref = g->data;
    double md = 0, mr = 0, dd = 0, rr = 0;
    for (size_t n = 0; n < N; n++) {
        if (!r->valid[n]) continue;   /* padding rows are not compared */
        for (int j = 0; j < V; j++) {
                size_t i = n * V + j;
                double d = fabs((double)ours[i] - ref[i]);
                if (!(d <= md)) md = d;
                if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
                dd += d * d;
                rr += (double)ref[i] * ref[i];
        }
    }
    if (l2_mode) row("logits", name, rr > 0 ? sqrt(dd / rr) : sqrt(dd), TOLLG);
    else row("logits", name, mr > 0 ? md / mr : md, TOL_LOGITS);
    return 0;
}

/* Adapter back to the reference's initial values (lora.* tensors). */
static int reset_lora(const ref_data *r, lm_lora *lora, lm_err *err) {
    for (int i = 0; i < lora->n_tensors; i++) {
        char nm[160];
        const lm_ttensor *t = &lora->tensors[i];
        snprintf(nm, sizeof nm, "lora.%s", t->name);
        const gguf_tensor *g = gguf_find_tensor(r->f, nm);
        if (!g || g->type != LM_F32 || g->nbytes != t->numel * sizeof(float))
            return lm_errf(err, "%s: reference tensor '%s' missing or mis-sized", r->f->path, nm);
        memcpy(lora->params + t->offset, g->data, g->nbytes);
    }
    return 0;
}

/* LoRA with dropout: loss, logits and LoRA gradients on the masks of
 * (seed, step, micro), then AdamW steps s = 0.. on the masks of (seed, s,
 * 0), as the SFT loop keys them. */
static int run_dropout(lm_tmodel *m, lm_lora *lora, lm_tacts *a, const ref_data *r, float *logits,
                       lm_pool *pool, lm_err *err) {
    lm_tbatch b = r->batch;
    b.lora_dropout = r->drop_p;
    b.dropout_key = lm_lora_dropout_key(r->drop_seed, r->drop_step, r->drop_micro);
    double loss, eval_loss;
    if (reset_lora(r, lora, err)) return -1;
    lm_lora_zero_grads(lora);
    if (lm_train_forward(m, lora, a, &b, pool, err) ||
        lm_train_loss(m, a, &b, pool, 0, logits, &eval_loss, err) ||
        lm_train_grad(m, lora, a, &b, pool, &loss, err))
        return -1;
    if (eval_loss != loss)
        return lm_errf(err, "dropout: forward-only loss %.9g differs from training loss %.9g", eval_loss, loss);
    printf("drop_loss  %-36s %11.3e  %s   (ours %.9f ref %.9f, p %g)\n", "",
           fabs(loss - r->drop_loss) / fabs(r->drop_loss),
           fabs(loss - r->drop_loss) <= TOLLS * fabs(r->drop_loss) ? "ok" : (fails++, "FAIL"), loss,
           r->drop_loss, (double)r->drop_p);
    if (compare_logits(r, "drop_logits", logits, m->cfg.n_vocab, err)) return -1;
    for (int i = 0; i < lora->n_tensors; i++)
        if (compare_tensor(r->f, "drop_grad", "drop_grad.", &lora->tensors[i],
                           lora->grads + lora->tensors[i].offset, err))
            return -1;
    lm_adamw_cfg oc = { .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                        .weight_decay = r->wd, .grad_clip = r->clip };
    if (reset_lora(r, lora, err)) return -1;
    lm_adamw *opt = lm_adamw_new(lora->n_params, err);
    if (!opt) return -1;
    for (int s = 0; s < r->steps; s++) {
        b.dropout_key = lm_lora_dropout_key(r->drop_seed, (uint64_t)s, 0);
        lm_lora_zero_grads(lora);
        if (lm_train_grad(m, lora, a, &b, pool, &loss, err)) { lm_adamw_free(opt); return -1; }
        if (lm_adamw_step(pool, opt, &oc, r->lr, lora->params, lora->grads, lora->tensors, lora->n_tensors, NULL, err)) { lm_adamw_free(opt); return -1; }
        char nm[400];
        snprintf(nm, sizeof nm, "step %d (ours %.7f)", s, loss);
        row("drop_adamw", nm, fabs(loss - r->drop_adamw[s]) / fabs(r->drop_adamw[s]), TOLLS);
    }
    lm_adamw_free(opt);
    return 0;
}

static int run(const char *model_path, ref_data *r, lm_pool *pool, lm_err *err) {
    int rc = -1;
    lm_tmodel *m = NULL;
    lm_lora *lora = NULL;
    lm_tacts *a = NULL;
    lm_adamw *opt = NULL;
    float *logits = NULL;
    const lm_tbatch *b = &r->batch;
    double loss;

    /* 1. full-parameter gradients */
    if (!(m = lm_tmodel_load(model_path, err)) || lm_tmodel_alloc_grads(m, err)) goto done;
    int V = m->cfg.n_vocab;
    size_t N = (size_t)b->B * b->T;
    if (!(logits = malloc(N * V * sizeof(float)))) { lm_errf(err, "out of memory"); goto done; }
    if (!(a = lm_tacts_new(m, NULL, b->B, b->T, LOSS_CHUNK, err)) ||
        lm_tacts_set_precision(a, r->bf16 ? LM_TPREC_BF16 : LM_TPREC_F32, err))
        goto done;
    /* logits of every row from an eval pass; gradients from the training
     * path, which sends only masked rows through the LM head */
    double eval_loss;
    if (lm_train_forward(m, NULL, a, b, pool, err) ||
        lm_train_loss(m, a, b, pool, 0, logits, &eval_loss, err) ||
        lm_train_grad(m, NULL, a, b, pool, &loss, err))
        goto done;
    if (eval_loss != loss) {
        lm_errf(err, "eval loss %.9g differs from training loss %.9g", eval_loss, loss);
        goto done;
    }
    printf("%-10s %-36s %11s\n", "kind", "tensor", "max rel err");
    printf("loss       %-36s %11.3e  %s   (ours %.9f ref %.9f)\n", "", fabs(loss - r->loss) / fabs(r->loss),
           fabs(loss - r->loss) <= TOLLS * fabs(r->loss) ? "ok" : (fails++, "FAIL"), loss, r->loss);
    if (compare_logits(r, "logits", logits, V, err)) goto done;
    for (int i = 0; i < m->n_tensors; i++)
        if (compare_tensor(r->f, "grad", "grad.", &m->tensors[i], m->grads + m->tensors[i].offset, err))
            goto done;

    /* 2. LoRA gradients, base frozen */
    free(m->grads);
    m->grads = NULL;
    if (!(lora = lm_lora_new(m, r->rank, r->alpha, LM_LORA_ALL, 1, err))) goto done;
    for (int i = 0; i < lora->n_tensors; i++) {
        char nm[160];
        const lm_ttensor *t = &lora->tensors[i];
        snprintf(nm, sizeof nm, "lora.%s", t->name);
        const gguf_tensor *g = gguf_find_tensor(r->f, nm);
        if (!g || g->type != LM_F32 || g->nbytes != t->numel * sizeof(float)) {
            lm_errf(err, "%s: reference tensor '%s' missing or mis-sized", r->f->path, nm);
            goto done;
        }
        memcpy(lora->params + t->offset, g->data, g->nbytes);
    }
    lm_tacts_free(a);
    if (!(a = lm_tacts_new(m, lora, b->B, b->T, LOSS_CHUNK, err)) ||
        lm_tacts_set_precision(a, r->bf16 ? LM_TPREC_BF16 : LM_TPREC_F32, err))
        goto done;
    if (lm_train_forward(m, lora, a, b, pool, err) ||
        lm_train_loss(m, a, b, pool, 0, logits, &eval_loss, err) ||
        lm_train_grad(m, lora, a, b, pool, &loss, err))
        goto done;
    printf("lora_loss  %-36s %11.3e  %s   (ours %.9f ref %.9f)\n", "", fabs(loss - r->lora_loss) / fabs(r->lora_loss),
           fabs(loss - r->lora_loss) <= TOLLS * fabs(r->lora_loss) ? "ok" : (fails++, "FAIL"), loss, r->lora_loss);
    if (compare_logits(r, "lora_logits", logits, V, err)) goto done;
    for (int i = 0; i < lora->n_tensors; i++)
        if (compare_tensor(r->f, "lora_grad", "lora_grad.", &lora->tensors[i],
                           lora->grads + lora->tensors[i].offset, err))
            goto done;

    /* 2b. the same with LoRA dropout */
    if (r->drop_adamw && run_dropout(m, lora, a, r, logits, pool, err)) goto done;

    /* 3. AdamW, LoRA (model still frozen, adapter back at its initial values) */
    lm_adamw_cfg oc = { .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                        .weight_decay = r->wd, .grad_clip = r->clip };
    for (int i = 0; i < lora->n_tensors; i++) {
        char nm[160];
        snprintf(nm, sizeof nm, "lora.%s", lora->tensors[i].name);
        const gguf_tensor *g = gguf_find_tensor(r->f, nm);
        memcpy(lora->params + lora->tensors[i].offset, g->data, g->nbytes);
    }
    if (!(opt = lm_adamw_new(lora->n_params, err))) goto done;
    for (int s = 0; s < r->steps; s++) {
        lm_lora_zero_grads(lora);
        if (lm_train_grad(m, lora, a, b, pool, &loss, err)) goto done;
        if (lm_adamw_step(pool, opt, &oc, r->lr, lora->params, lora->grads, lora->tensors, lora->n_tensors, NULL, err)) goto done;
        char nm[400];
        snprintf(nm, sizeof nm, "step %d (ours %.7f)", s, loss);
        row("lora_adamw", nm, fabs(loss - r->lora_adamw[s]) / fabs(r->lora_adamw[s]), TOLLS);
    }
    lm_adamw_free(opt);
    opt = NULL;

    /* 4. AdamW, full parameters, from the original weights */
    lm_tmodel_free(m);
    lm_tacts_free(a);
    a = NULL;
    if (!(m = lm_tmodel_load(model_path, err)) || lm_tmodel_alloc_grads(m, err)) goto done;
    if (!(a = lm_tacts_new(m, NULL, b->B, b->T, LOSS_CHUNK, err)) ||
        lm_tacts_set_precision(a, r->bf16 ? LM_TPREC_BF16 : LM_TPREC_F32, err))
        goto done;
    if (!(opt = lm_adamw_new(m->n_params, err))) goto done;
    for (int s = 0; s < r->steps; s++) {
        lm_tmodel_zero_grads(m);
        if (lm_train_grad(m, NULL, a, b, pool, &loss, err)) goto done;
        if (lm_adamw_step(pool, opt, &oc, r->lr, m->params, m->grads, m->tensors, m->n_tensors, NULL, err)) goto done;
        char nm[400];
        snprintf(nm, sizeof nm, "step %d (ours %.7f)", s, loss);
        row("adamw", nm, fabs(loss - r->adamw[s]) / fabs(r->adamw[s]), TOLLS);
    }
    rc = 0;
done:
    lm_adamw_free(opt);
    lm_tacts_free(a);
    lm_lora_free(lora);
    lm_tmodel_free(m);
    free(logits);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--kernel-sets")) {   /* the sets this machine runs */
        static const char *const names[] = {"avx512", "avx2", "scalar"};
        for (size_t i = 0; i < sizeof names / sizeof *names; i++)
            if (lm_kernels_by_name(names[i])) printf("%s\n", names[i]);
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.gguf REF.gguf\n", argv[0]);
        return 2;
    }
    lm_err err = {{0}};
    if (lm_kernels_check(&err)) {
        fprintf(stderr, "%s: %s\n", argv[0], err.msg);
        return 2;
    }
    printf("kernels: %s\n", lm_kernels_name());
    ref_data r = {0};
    lm_pool *pool = NULL;
    int rc = 2;
    if (load_ref(&r, argv[2], &err) == 0 && (pool = lm_pool_new(2, &err)) &&
        run(argv[1], &r, pool, &err) == 0) {
        printf("%s\n", fails ? "FAILED" : "ALL OK");
        rc = fails ? 1 : 0;
    } else {
        fprintf(stderr, "lm_gradcheck: %s\n", err.msg);
    }
    lm_pool_free(pool);
    free_ref(&r);
    return rc;
}
