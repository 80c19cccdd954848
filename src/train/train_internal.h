/* Shared inside src/train: the activation layout, f32 matmul helpers and a
 * small seeded PRNG. Not part of any public interface. */
#ifndef LM_TRAIN_INTERNAL_H
#define LM_TRAIN_INTERNAL_H

#include <stdint.h>

#include "base/pool.h"
#include "train/train_ops.h"
#include "train/lora.h"
#include "train/train_model.h"

/* Marks a loop-heavy function for an AVX2/FMA copy next to the baseline
 * one (target_clones: the loader picks per CPU), on x86-64 Linux. Not
 * under ThreadSanitizer: the clones' ifunc resolvers run while the program
 * is being loaded, before the TSan runtime is up, and `lemonpc` built with
 * -fsanitize=thread died there at start-up (make tsan-serve). */
#if defined(__x86_64__) && defined(__linux__) && defined(__has_attribute) && \
    !defined(__SANITIZE_THREAD__)
#if __has_attribute(target_clones)
#define SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
/* The same with an AVX-512 copy, for loops whose every lane runs its own
 * fma chain (attention): any clone with FMA gives the same bits. */
#define SIMD_CLONES_V4 __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
#endif
#ifndef SIMD_CLONES
#define SIMD_CLONES
#define SIMD_CLONES_V4
#endif

struct lm_tacts {
    int B, T, N;                /* the shape of the batch forward last took */
    int cap_B, cap_T;           /* the shape the buffers are sized for */
    int loss_chunk, rank;       /* rank: LoRA rank or 0 */
    int bf16;                   /* matmul precision (lm_tacts_set_precision) */
    float *buf;                 /* one owned allocation */
    size_t n_floats;
    /* per layer, all [N, width]; res has L+1 entries (res[0] = embeddings) */
    float **res, **ln1, **rstd1, **q, **k, **v, **lse, **atty, **res_mid;
    float **ln2, **rstd2, **gate, **up, **hmul;
                                /* ln1, ln2, hmul: one buffer for all layers,
                                 * recomputed by backward */
    float **lxa;                /* [L * LM_LORA_N] x @ A^T, [N, rank], or NULL */
    float *lnf, *rstdf;         /* final norm output [N, dim], [N] */
    /* backward scratch */
    float *dres, *dlnf, *dln, *dq, *dk, *dv, *datty, *dgate, *dup, *dhmul, *dxa, *tmp;
    float *logits;              /* [loss_chunk, n_vocab] */
    float *lx, *ldx;            /* [loss_chunk, dim]: gathered rows of lnf and their grads */
    int *lrows;                 /* [loss_chunk]: which rows were gathered */
    float *att_scratch;         /* lm_op_attn_scratch floats */
    float *rope_cos, *rope_sin; /* [T, head_dim / 2] */
    int32_t *tpos, *tstart;     /* [N]: RoPE position; first attended position in the row */
};

/* bf16: the inputs rounded to bf16, products summed in f32 (lm_tmm_bf16;
 * f32 if that cannot run: out of memory). */
/* out[n, o] (+)= sum_i x[n, i] * w[o, i]   -- y = x W^T */
void lm_mm_fwd(lm_pool *pool, int bf16, float *out, const float *x, const float *w,
               int n, int in, int out_dim, int accumulate);
/* dx[n, i] += sum_o dy[n, o] * w[o, i]     -- dx += dy W */
void lm_mm_bwd_x(lm_pool *pool, int bf16, float *dx, const float *dy, const float *w,
                 int n, int in, int out_dim);
/* dw[o, i] += sum_n dy[n, o] * x[n, i]     -- dW += dy^T x */
void lm_mm_bwd_w(lm_pool *pool, int bf16, float *dw, const float *dy, const float *x,
                 int n, int in, int out_dim);
float lm_dot(const float *a, const float *b, int n);

/* splitmix64-seeded xoshiro256**: reproducible across platforms. */
typedef struct lm_trng { uint64_t s[4]; } lm_trng;
void lm_trng_seed(lm_trng *r, uint64_t seed);
uint64_t lm_trng_next(lm_trng *r);
double lm_trng_uniform(lm_trng *r);   /* [0, 1) with 53 bits */
double lm_trng_normal(lm_trng *r);

/* lm_lora_dropout_apply_rows (T <= 0: lm_lora_dropout_apply) with the
 * AVX2 kernel allowed or not (tests check that both give the same bits). */
void lm_lora_dropout_apply_isa(lm_pool *pool, float *out, const float *x, int N, int in, float p,
                               uint64_t pkey, int acc, int T, int key_T, int allow_simd);

/* Gradient buffer matching a parameter pointer of the model (NULL when the
 * model has no gradients). */
static inline float *lm_tgrad(const lm_tmodel *m, const float *p) {
    return m->grads ? m->grads + (p - m->params) : NULL;
}

#endif
