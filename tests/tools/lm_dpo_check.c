/* lm_dpo_check MODEL.gguf REF.gguf
 * Compares the C trainer's DPO (src/train/dpo.c, the functions the training
 * loop calls) with a plain PyTorch implementation of the paper's formula
 * written by tests/torch/test_dpo.py, on B preference pairs:
 *   ref_logp    the reference's (base + adapter ref_lora.*) summed completion
 *               log-likelihood of every sequence (lm_dpo_logps)
 *   logp        the policy's (base + adapter lora.*), from lm_dpo_grad
 *   loss, reward_c, reward_r   the mean DPO loss and each pair's rewards
 *   lora_grad   every LoRA gradient (base frozen)
 *   grad        every parameter gradient of a full run (policy = the base
 *               alone, reference numbers from the file)
 *   dpo_adamw   the losses of AdamW steps on the LoRA, starting at the
 *               reference (so step 0 is log 2 for sigmoid), with the
 *               reference log-likelihoods computed here as the loop does.
 * The pairs go through micro-batches of gc.micro pairs (the last one
 * padded with empty pair slots), each normalised by all B pairs, as
 * gradient accumulation does. Tolerances as lm_gradcheck: log-likelihoods,
 * losses and rewards 1e-4 relative, gradients 1e-3 (max|ours - ref| /
 * max|ref| per tensor). Prints one row per check; exits 1 if any fails,
 * 2 on a usage or input error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/pool.h"
#include "gguf/gguf.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "train/adamw.h"
#include "train/dpo.h"
#include "train/lora.h"
#include "train/train_model.h"

#define TOL_LOSS 1e-4
#define TOL_GRAD 1e-3

typedef struct ref_data {
    gguf_file *f;
    int B, T, micro, rank, steps;
    lm_dpo_kind kind;
    float beta, nll, alpha, lr, wd, clip;
    int32_t *tokens, *targets;  /* [2B * T] */
    uint8_t *mask;
    double *ref_logps, *logps, *rewards_c, *rewards_r, *full_logps, *adamw;
    double loss, full_loss;
} ref_data;

typedef struct ctx {
    const ref_data *r;
    lm_dpo_set *set;            /* the pairs, for lm_dpo_batch_fill */
    lm_dpo_batch b;
    lm_tacts *a;
    lm_pool *pool;
} ctx;

static int fails;

static void row(const char *kind, const char *name, double rel, double tol) {
    int ok = rel <= tol;   /* NaN fails */
    if (!ok) fails++;
    printf("%-10s %-36s %11.3e  %s\n", kind, name, rel, ok ? "ok" : "FAIL");
}

static double rel_vec(const double *a, const double *ref, int n) {
    double md = 0, mr = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs(a[i] - ref[i]);
        if (!(d <= md)) md = d;
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    return mr > 0 ? md / mr : md;
}

static double rel_f32(const float *a, const float *ref, size_t n) {
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= md)) md = d;
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    return mr > 0 ? md / mr : md;
}

static const gguf_kv *arr(const gguf_file *f, const char *key, uint64_t n, lm_err *err) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv || kv->type != GGUF_ARRAY || kv->arr_n != n) {
        lm_errf(err, "%s: key '%s' missing or not an array of %llu", f->path, key, (unsigned long long)n);
        return NULL;
    }
    return kv;
}

static double *arr_f64(const gguf_file *f, const char *key, uint64_t n, lm_err *err) {
    const gguf_kv *kv = arr(f, key, n, err);
    double *x = kv ? calloc(n + 1, sizeof *x) : NULL;
    if (kv && !x) lm_errf(err, "out of memory");
    for (uint64_t i = 0; x && i < n; i++) x[i] = gguf_arr_get_f64(kv, i);
    return x;
}

static int get_f64(const gguf_file *f, const char *key, double *out, lm_err *err) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv || kv->type != GGUF_F64) return lm_errf(err, "%s: key '%s' missing or not f64", f->path, key);
    *out = kv->v.f;
    return 0;
}

static int load_ref(ref_data *r, const char *path, lm_err *err) {
    if (!(r->f = gguf_open(path, err))) return -1;
    uint32_t B, T, micro, kind, rank;
    const gguf_kv *aw;
    if (gguf_get_u32(r->f, "gc.B", &B, err) || gguf_get_u32(r->f, "gc.T", &T, err) ||
        gguf_get_u32(r->f, "gc.micro", &micro, err) || gguf_get_u32(r->f, "gc.kind", &kind, err) ||
        gguf_get_u32(r->f, "gc.lora_rank", &rank, err) || gguf_get_f32(r->f, "gc.beta", &r->beta, err) ||
        gguf_get_f32(r->f, "gc.nll", &r->nll, err) ||
        gguf_get_f32(r->f, "gc.lora_alpha", &r->alpha, err) || gguf_get_f32(r->f, "gc.lr", &r->lr, err) ||
        gguf_get_f32(r->f, "gc.weight_decay", &r->wd, err) ||
        gguf_get_f32(r->f, "gc.grad_clip", &r->clip, err) ||
        get_f64(r->f, "gc.loss", &r->loss, err) || get_f64(r->f, "gc.full_loss", &r->full_loss, err))
        return -1;
    if (B == 0 || B > 64 || T < 2 || micro == 0 || micro > B || B * T > 1u << 20 || kind > LM_DPO_SIGMOID_NORM)
        return lm_errf(err, "%s: bad B=%u T=%u micro=%u kind=%u", path, B, T, micro, kind);
    r->B = (int)B; r->T = (int)T; r->micro = (int)micro; r->kind = (lm_dpo_kind)kind; r->rank = (int)rank;
    size_t N = (size_t)2 * B * T;
    const gguf_kv *tk = arr(r->f, "gc.tokens", N, err), *tg = tk ? arr(r->f, "gc.targets", N, err) : NULL;
    const gguf_kv *mk = tg ? arr(r->f, "gc.mask", N, err) : NULL;
    if (!mk) return -1;
    r->tokens = calloc(N, sizeof *r->tokens);
    r->targets = calloc(N, sizeof *r->targets);
    r->mask = calloc(N, 1);
    if (!r->tokens || !r->targets || !r->mask) return lm_errf(err, "out of memory");
    for (size_t i = 0; i < N; i++) {
        r->tokens[i] = (int32_t)gguf_arr_get_i64(tk, i);
        r->targets[i] = (int32_t)gguf_arr_get_i64(tg, i);
        r->mask[i] = (uint8_t)gguf_arr_get_i64(mk, i);
    }
    if (!(r->ref_logps = arr_f64(r->f, "gc.ref_logps", 2 * B, err)) ||
        !(r->logps = arr_f64(r->f, "gc.logps", 2 * B, err)) ||
        !(r->full_logps = arr_f64(r->f, "gc.full_logps", 2 * B, err)) ||
        !(r->rewards_c = arr_f64(r->f, "gc.rewards_c", B, err)) ||
        !(r->rewards_r = arr_f64(r->f, "gc.rewards_r", B, err)))
        return -1;
    if (!(aw = gguf_find_kv(r->f, "gc.adamw_losses")) || aw->type != GGUF_ARRAY)
        return lm_errf(err, "%s: gc.adamw_losses missing", path);
    r->steps = (int)aw->arr_n;
    return (r->adamw = arr_f64(r->f, "gc.adamw_losses", aw->arr_n, err)) ? 0 : -1;
}

static void free_ref(ref_data *r) {
    gguf_close(r->f);
    free(r->tokens); free(r->targets); free(r->mask);
    free(r->ref_logps); free(r->logps); free(r->full_logps); free(r->rewards_c); free(r->rewards_r);
    free(r->adamw);
}

/* The file's rows as a pair set: sequence = the row's tokens up to its
 * last real position, mask (as lm_sft_example: of the token as a target)
 * shifted back from the row's target mask. Rows must be laid out as
 * tokens[t + 1] == targets[t] on real positions, which the test writes. */
static int make_set(const ref_data *r, lm_dpo_set **out, lm_err *err) {
    lm_dpo_set *s = calloc(1, sizeof *s);
    if (!s || !(s->p = calloc((size_t)r->B, sizeof *s->p))) {
        free(s);
        return lm_errf(err, "out of memory");
    }
    s->pad_id = 2;
    s->n = r->B;
    for (int k = 0; k < r->B; k++)
        for (int side = 0; side < 2; side++) {
            const int32_t *tok = r->tokens + (size_t)(side * r->B + k) * r->T;
            const int32_t *tgt = r->targets + (size_t)(side * r->B + k) * r->T;
            const uint8_t *m = r->mask + (size_t)(side * r->B + k) * r->T;
            int n = 0;   /* the sequence: tokens of the row then the last masked target */
            for (int t = 0; t < r->T; t++)
                if (m[t]) n = t + 2;
            lm_sft_example *e = &s->p[k].seq[side];
            e->tokens = calloc((size_t)n, sizeof *e->tokens);
            e->mask = calloc((size_t)n, 1);
            if (!e->tokens || !e->mask) {
                lm_dpo_set_free(s);
                return lm_errf(err, "out of memory");
            }
            e->n = n;
            for (int t = 0; t + 1 < n; t++) {
                e->tokens[t] = tok[t];
                e->tokens[t + 1] = tgt[t];
                e->mask[t + 1] = m[t];
                e->n_trained += m[t];
            }
            if (n > r->T) {
                lm_dpo_set_free(s);
                return lm_errf(err, "pair %d: the completion's last target falls past T", k);
            }
            s->p[k].line = k + 1;
        }
    *out = s;
    return 0;
}

/* The whole step over micro-batches of c->r->micro pairs: gradients
 * accumulate (zeroed here), logp [2B] in the file's row order. */
static int dpo_step(ctx *c, lm_tmodel *m, lm_lora *lora, const double *ref, double *logp,
                    lm_dpo_sums *sums, lm_err *err) {
    const ref_data *r = c->r;
    if (lora) lm_lora_zero_grads(lora);
    else lm_tmodel_zero_grads(m);
    memset(sums, 0, sizeof *sums);
    double lp[2 * 64];
    int idx[64];
    for (int at = 0; at < r->B; at += r->micro) {
        int n = r->B - at < r->micro ? r->B - at : r->micro;
        for (int k = 0; k < n; k++) idx[k] = at + k;
        lm_dpo_batch_fill(&c->b, c->set, idx, n, ref);
        if (lm_dpo_grad(m, lora, c->a, &c->b, c->pool, r->kind, r->beta, r->nll, r->B, 0.0f, 0, sums, lp, err))
            return -1;
        for (int k = 0; k < n; k++) {
            logp[at + k] = lp[k];
            logp[r->B + at + k] = lp[r->micro + k];
        }
    }
    return 0;
}

static int set_lora(const ref_data *r, lm_lora *lora, const char *prefix, lm_err *err) {
    for (int i = 0; i < lora->n_tensors; i++) {
        char nm[160];
        const lm_ttensor *t = &lora->tensors[i];
        snprintf(nm, sizeof nm, "%s%s", prefix, t->name);
        const gguf_tensor *g = gguf_find_tensor(r->f, nm);
        if (!g || g->type != LM_F32 || g->nbytes != t->numel * sizeof(float))
            return lm_errf(err, "%s: reference tensor '%s' missing or mis-sized", r->f->path, nm);
        memcpy(lora->params + t->offset, g->data, g->nbytes);
    }
    return 0;
}

static int compare_tensor(const gguf_file *f, const char *kind, const char *prefix,
                          const lm_ttensor *t, const float *ours, lm_err *err) {
    char nm[160];
    snprintf(nm, sizeof nm, "%s%s", prefix, t->name);
    const gguf_tensor *g = gguf_find_tensor(f, nm);
    if (!g || g->type != LM_F32 || g->nbytes != t->numel * sizeof(float))
        return lm_errf(err, "%s: reference tensor '%s' missing or mis-sized", f->path, nm);
    row(kind, t->name, rel_f32(ours, g->data, t->numel), TOL_GRAD);
    return 0;
}

static void scalar(const char *kind, double ours, double ref) {
    char nm[120];
    snprintf(nm, sizeof nm, "(ours %.9f ref %.9f)", ours, ref);
    row(kind, nm, fabs(ours - ref) / fabs(ref), TOL_LOSS);
}

static int run(const char *model_path, const ref_data *r, lm_pool *pool, lm_err *err) {
    ctx c = {.r = r, .pool = pool};
    lm_tmodel *m = NULL;
    lm_lora *lora = NULL;
    lm_adamw *opt = NULL;
    int rc = -1, B = r->B;
    double *lp = calloc((size_t)4 * B, sizeof *lp), *ref_c = lp + 2 * B;
    lm_dpo_sums s;
    if (!lp) return lm_errf(err, "out of memory");
    if (r->micro > 64) { lm_errf(err, "micro %d > 64", r->micro); goto done; }
    if (make_set(r, &c.set, err) || lm_dpo_batch_init(&c.b, r->micro, r->T, err)) goto done;
    if (!(m = lm_tmodel_load(model_path, err))) goto done;
    if (!(lora = lm_lora_new(m, r->rank, r->alpha, LM_LORA_ALL, 1, err))) goto done;
    if (!(c.a = lm_tacts_new(m, lora, 2 * r->micro, r->T, 5, err))) goto done;
    printf("%-10s %-36s %11s\n", "kind", "what", "max rel err");

    /* 1. the reference's log-likelihoods, as the loop computes them */
    if (set_lora(r, lora, "ref_lora.", err)) goto done;
    for (int at = 0; at < B; at += r->micro) {
        int n = B - at < r->micro ? B - at : r->micro, idx[64];
        double x[128];
        for (int k = 0; k < n; k++) idx[k] = at + k;
        lm_dpo_batch_fill(&c.b, c.set, idx, n, NULL);
        if (lm_dpo_logps(m, lora, c.a, &c.b, pool, x, err)) goto done;
        for (int k = 0; k < n; k++) {
            ref_c[at + k] = x[k];
            ref_c[B + at + k] = x[r->micro + k];
        }
    }
    row("ref_logp", "every sequence", rel_vec(ref_c, r->ref_logps, 2 * B), TOL_LOSS);

    /* 2. the policy adapter: log-likelihoods, loss, rewards, LoRA gradients */
    double *refp = malloc((size_t)2 * B * sizeof *refp), rc_[64], rr_[64];
    if (!refp) { lm_errf(err, "out of memory"); goto done; }
    for (int k = 0; k < B; k++) {   /* the set's order: ref[2 pair + side] */
        refp[2 * k] = r->ref_logps[k];
        refp[2 * k + 1] = r->ref_logps[B + k];
    }
    if (set_lora(r, lora, "lora.", err) || dpo_step(&c, m, lora, refp, lp, &s, err)) {
        free(refp);
        goto done;
    }
    row("logp", "every sequence", rel_vec(lp, r->logps, 2 * B), TOL_LOSS);
    scalar("loss", s.loss / B, r->loss);
    for (int k = 0; k < B && k < 64; k++) {
        lm_dpo_terms t;
        lm_dpo_pair_terms(r->kind, r->beta, r->nll, lp[k], lp[B + k], r->ref_logps[k], r->ref_logps[B + k],
                          c.set->p[k].seq[0].n_trained, c.set->p[k].seq[1].n_trained, &t);
        rc_[k] = t.reward_c;
        rr_[k] = t.reward_r;
    }
    row("reward_c", "every pair", rel_vec(rc_, r->rewards_c, B), TOL_LOSS);
    row("reward_r", "every pair", rel_vec(rr_, r->rewards_r, B), TOL_LOSS);
    printf("           (sums: rewards/chosen %.6f rejected %.6f accuracy %.3f margin %.6f)\n",
           s.reward_c / B, s.reward_r / B, s.correct / B, s.margin / B);
    for (int i = 0; i < lora->n_tensors; i++)
        if (compare_tensor(r->f, "lora_grad", "lora_grad.", &lora->tensors[i],
                           lora->grads + lora->tensors[i].offset, err)) {
            free(refp);
            goto done;
        }

    /* 3. AdamW on the LoRA from the reference adapter, the reference
     * log-likelihoods being ours (ref_c), as in a run */
    for (int k = 0; k < B; k++) {
        refp[2 * k] = ref_c[k];
        refp[2 * k + 1] = ref_c[B + k];
    }
    lm_adamw_cfg oc = {.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = r->wd,
                       .grad_clip = r->clip};
    if (set_lora(r, lora, "ref_lora.", err) || !(opt = lm_adamw_new(lora->n_params, err))) {
        free(refp);
        goto done;
    }
    for (int st = 0; st < r->steps; st++) {
        if (dpo_step(&c, m, lora, refp, lp, &s, err) ||
            lm_adamw_step(pool, opt, &oc, r->lr, lora->params, lora->grads, lora->tensors,
                          lora->n_tensors, NULL, err)) {
            free(refp);
            goto done;
        }
        char nm[200];
        snprintf(nm, sizeof nm, "step %d (ours %.7f acc %.2f margin %.4f)", st, s.loss / B,
                 s.correct / B, s.margin / B);
        row("dpo_adamw", nm, fabs(s.loss / B - r->adamw[st]) / fabs(r->adamw[st]), TOL_LOSS);
    }

    /* 4. full run: the base alone as the policy, every parameter's gradient */
    lm_lora_free(lora);
    lora = NULL;
    lm_tacts_free(c.a);
    if (!(c.a = lm_tacts_new(m, NULL, 2 * r->micro, r->T, 5, err)) || lm_tmodel_alloc_grads(m, err)) {
        free(refp);
        goto done;
    }
    for (int k = 0; k < B; k++) {
        refp[2 * k] = r->ref_logps[k];
        refp[2 * k + 1] = r->ref_logps[B + k];
    }
    int bad = dpo_step(&c, m, NULL, refp, lp, &s, err);
    free(refp);
    if (bad) goto done;
    row("full_logp", "every sequence", rel_vec(lp, r->full_logps, 2 * B), TOL_LOSS);
    scalar("full_loss", s.loss / B, r->full_loss);
    for (int i = 0; i < m->n_tensors; i++)
        if (compare_tensor(r->f, "grad", "grad.", &m->tensors[i], m->grads + m->tensors[i].offset, err))
            goto done;
    rc = 0;
done:
    lm_adamw_free(opt);
    lm_tacts_free(c.a);
    lm_dpo_batch_free(&c.b);
    lm_dpo_set_free(c.set);
    lm_lora_free(lora);
    lm_tmodel_free(m);
    free(lp);
    return rc;
}

int main(int argc, char **argv) {
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
        fprintf(stderr, "lm_dpo_check: %s\n", err.msg);
    }
    lm_pool_free(pool);
    free_ref(&r);
    return rc;
}
