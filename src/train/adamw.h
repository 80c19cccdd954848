/* AdamW with decoupled weight decay and bias correction, step for step the
 * update torch.optim.AdamW makes, plus global-norm gradient clipping (as
 * torch.nn.utils.clip_grad_norm_) and learning-rate schedules (as the
 * transformers get_*_schedule_with_warmup helpers). */
#ifndef LM_TRAIN_ADAMW_H
#define LM_TRAIN_ADAMW_H

#include <stddef.h>

#include "base/err.h"
#include "base/pool.h"
#include "train/train_model.h"

typedef struct lm_adamw_cfg {
    float beta1, beta2, eps, weight_decay;
    float grad_clip;            /* max global L2 norm; <= 0: no clipping */
} lm_adamw_cfg;

/* beta1 0.9, beta2 0.999, eps 1e-8, weight decay 0.01, clip 1.0 */
lm_adamw_cfg lm_adamw_defaults(void);

typedef struct lm_adamw {
    size_t n;
    float *m, *v;               /* [n] first/second moments, owned */
    long step;
} lm_adamw;

lm_adamw *lm_adamw_new(size_t n_params, lm_err *err);
void lm_adamw_free(lm_adamw *o);

/* Global L2 norm of g [n], accumulated in double. */
double lm_grad_norm(const float *g, size_t n);

/* One update of params [n] from grads [n] (clipped in place first), split
 * over the pool (NULL: this thread) with the same bits for any thread
 * count. The tensor table says which ranges decay (lm_ttensor_decays).
 * Returns the gradient norm before clipping in *grad_norm if non-NULL. -1:
 * out of memory, nothing changed. */
int lm_adamw_step(lm_pool *pool, lm_adamw *o, const lm_adamw_cfg *cfg, float lr, float *params,
                  float *grads, const lm_ttensor *tensors, int n_tensors, double *grad_norm,
                  lm_err *err);

typedef enum { LM_LR_CONSTANT, LM_LR_LINEAR, LM_LR_COSINE } lm_lr_kind;

/* Learning rate for 0-based step: linear warmup from 0 over `warmup`
 * steps, then constant, linear decay to 0 at `total`, or cosine to 0. */
float lm_lr_at(lm_lr_kind kind, float base, long step, long warmup, long total);

#endif
