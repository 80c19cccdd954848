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

double lm_grad_norm(const float *g, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return sqrt(s);
}

void lm_adamw_step(lm_adamw *o, const lm_adamw_cfg *cfg, float lr, float *params, float *grads,
                   const lm_ttensor *tensors, int n_tensors, double *grad_norm) {
    double norm = lm_grad_norm(grads, o->n);
    if (grad_norm) *grad_norm = norm;
    if (cfg->grad_clip > 0) {
        /* torch: coef = max_norm / (norm + 1e-6), applied when below 1 */
        double coef = cfg->grad_clip / (norm + 1e-6);
        if (coef < 1.0)
            for (size_t i = 0; i < o->n; i++) grads[i] = (float)(grads[i] * coef);
    }
    o->step++;
    double bc1 = 1.0 - pow(cfg->beta1, (double)o->step);
    double bc2 = 1.0 - pow(cfg->beta2, (double)o->step);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float b1 = cfg->beta1, b2 = cfg->beta2;
    for (int t = 0; t < n_tensors; t++) {
        const lm_ttensor *ts = &tensors[t];
        float decay = lm_ttensor_decays(ts) ? 1.0f - lr * cfg->weight_decay : 1.0f;
        for (size_t i = ts->offset; i < ts->offset + ts->numel; i++) {
            float g = grads[i];
            float m = o->m[i] = b1 * o->m[i] + (1.0f - b1) * g;
            float v = o->v[i] = b2 * o->v[i] + (1.0f - b2) * g * g;
            params[i] = params[i] * decay - step_size * m / (sqrtf(v) / bc2_sqrt + cfg->eps);
        }
    }
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
