/* AdamW (see adamw.h). */
#include "train/adamw.h"

#include <math.h>
#include <stdlib.h>

lm_adamw_cfg lm_adamw_defaults(void) {
    return (lm_adamw_cfg){ .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                           .weight_decay = 0.01f, .grad_clip = 1.0f };
}

lm_adamw *lm_adamw_new(size_t n_params, lm_err *err) {
    lm_adamw *o = calloc(1, sizeof *o);
    if (o) {
        o->n = n_params;
        o->m = calloc(n_params ? n_params : 1, sizeof(float));
        o->v = calloc(n_params ? n_params : 1, sizeof(float));
    }
    if (!o || !o->m || !o->v) {
        lm_adamw_free(o);
        lm_errf(err, "out of memory for AdamW state of %zu parameters", n_params);
        return NULL;
    }
    return o;
}

void lm_adamw_free(lm_adamw *o) {
    if (!o) return;
    free(o->m);
    free(o->v);
    free(o);
}

/* Both passes over the parameters (135M for SmolLM2's full fine-tune) run
 * on the pool in fixed chunks; the norm adds per-chunk double sums in chunk
 * order, so its bits do not depend on the thread count. */
#define CHUNK 65536

static size_t n_chunks(size_t n) { return (n + CHUNK - 1) / CHUNK; }

static double sumsq(const float *g, size_t lo, size_t hi) {
    double s = 0;
    for (size_t i = lo; i < hi; i++) s += (double)g[i] * g[i];
    return s;
}

double lm_grad_norm(const float *g, size_t n) {
    double s = 0;
    for (size_t c = 0; c < n_chunks(n); c++)
        s += sumsq(g, c * CHUNK, (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n);
    return sqrt(s);
}

typedef struct step_ctx {
    const lm_adamw *o;
    float *params, *grads;
    double *partial;                 /* [chunks] */
    const lm_ttensor *tensors;
    int n_tensors;
    double clip;                     /* 1: no clipping */
    float b1, b2, eps, step_size, bc2_sqrt, lr, weight_decay;
} step_ctx;

static void norm_task(void *vctx, int task, int n_tasks, int thread) {
    const step_ctx *c = vctx;
    size_t lo = (size_t)task * CHUNK, hi = lo + CHUNK < c->o->n ? lo + CHUNK : c->o->n;
    c->partial[task] = sumsq(c->grads, lo, hi);
}

static void update_task(void *vctx, int task, int n_tasks, int thread) {
    const step_ctx *c = vctx;
    size_t lo = (size_t)task * CHUNK, hi = lo + CHUNK < c->o->n ? lo + CHUNK : c->o->n;
    float *m = c->o->m, *v = c->o->v, *p = c->params, *g = c->grads;
    float b1 = c->b1, b2 = c->b2;
    if (c->clip != 1.0)
        for (size_t i = lo; i < hi; i++) g[i] = (float)(g[i] * c->clip);
    for (int t = 0; t < c->n_tensors; t++) {
        const lm_ttensor *ts = &c->tensors[t];
        size_t a = ts->offset > lo ? ts->offset : lo;
        size_t b = ts->offset + ts->numel < hi ? ts->offset + ts->numel : hi;
        if (a >= b) continue;
        float decay = lm_ttensor_decays(ts) ? 1.0f - c->lr * c->weight_decay : 1.0f;
        for (size_t i = a; i < b; i++) {
            float gi = g[i];
            float mi = m[i] = b1 * m[i] + (1.0f - b1) * gi;
            float vi = v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
            p[i] = p[i] * decay - c->step_size * mi / (sqrtf(vi) / c->bc2_sqrt + c->eps);
        }
    }
}

int lm_adamw_step(lm_pool *pool, lm_adamw *o, const lm_adamw_cfg *cfg, float lr, float *params,
                  float *grads, const lm_ttensor *tensors, int n_tensors, double *grad_norm,
                  lm_err *err) {
    int chunks = (int)n_chunks(o->n);
    step_ctx c = { .o = o, .params = params, .grads = grads, .tensors = tensors,
                   .n_tensors = n_tensors, .clip = 1.0, .b1 = cfg->beta1, .b2 = cfg->beta2,
                   .eps = cfg->eps, .lr = lr, .weight_decay = cfg->weight_decay };
    c.partial = malloc((size_t)(chunks > 0 ? chunks : 1) * sizeof *c.partial);
    if (!c.partial) return lm_errf(err, "AdamW: out of memory for %d norm partials", chunks);
    lm_pool_run(pool, norm_task, &c, chunks);
    double s = 0;
    for (int i = 0; i < chunks; i++) s += c.partial[i];
    free(c.partial);
    double norm = sqrt(s);
    if (grad_norm) *grad_norm = norm;
    if (cfg->grad_clip > 0) {
        /* torch: coef = max_norm / (norm + 1e-6), applied when below 1 */
        double coef = cfg->grad_clip / (norm + 1e-6);
        if (coef < 1.0) c.clip = coef;
    }
    o->step++;
    double bc1 = 1.0 - pow(cfg->beta1, (double)o->step);
    double bc2 = 1.0 - pow(cfg->beta2, (double)o->step);
    c.step_size = (float)(lr / bc1);
    c.bc2_sqrt = (float)sqrt(bc2);
    lm_pool_run(pool, update_task, &c, chunks);
    return 0;
}

float lm_lr_at(lm_lr_kind kind, float base, long step, long warmup, long total) {
    if (step < warmup) return base * (float)step / (float)(warmup > 0 ? warmup : 1);
    if (kind == LM_LR_CONSTANT) return base;
    long span = total - warmup;
    if (span <= 0) return 0.0f;
    double progress = (double)(step - warmup) / (double)span;
    if (progress > 1.0) progress = 1.0;
    if (kind == LM_LR_LINEAR) return (float)(base * (1.0 - progress));
    return (float)(base * 0.5 * (1.0 + cos(3.141592653589793 * progress)));
}
