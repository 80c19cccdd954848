/* LoRA adapters on the seven Llama projections: y = W x + (alpha/r) B (A x),
 * A[r, in], B[out, r]. Initialised as PEFT does: A ~ U(-1/sqrt(in),
 * 1/sqrt(in)) (kaiming-uniform with a = sqrt(5)), B = 0, so a new adapter
 * leaves the model unchanged. Tensors are named as llama.cpp's adapter GGUF
 * expects ("blk.N.attn_q.weight.lora_a", ne = [in, r]; ".lora_b", ne =
 * [r, out]); since the base is in GGUF layout, Q/K lora_b rows carry the
 * GGUF permutation too. */
#ifndef LM_TRAIN_LORA_H
#define LM_TRAIN_LORA_H

#include <stdint.h>

#include "base/err.h"
#include "train/train_model.h"

enum { LM_LORA_Q, LM_LORA_K, LM_LORA_V, LM_LORA_O,
       LM_LORA_GATE, LM_LORA_UP, LM_LORA_DOWN, LM_LORA_N };
#define LM_LORA_ALL ((1u << LM_LORA_N) - 1)

typedef struct lm_lora {
    int rank, n_layers;
    float alpha, scale;         /* scale = alpha / rank */
    float dropout;              /* the dropout it is trained with (0 from
                                 * lm_lora_new): metadata saved for the PEFT
                                 * export; the masks use lm_tbatch's value */
    unsigned targets;           /* bit LM_LORA_* set: adapter present */
    int n_tensors;
    lm_ttensor *tensors;        /* a then b per target, layer-major */
    size_t n_params;
    float *params, *grads;      /* [n_params] each, owned */
    float *(*a)[LM_LORA_N];     /* a[l][p]: [rank, in] or NULL */
    float *(*b)[LM_LORA_N];     /* b[l][p]: [out, rank] or NULL */
} lm_lora;

/* Base tensor index (LM_TW_*) a LoRA target adapts. */
int lm_lora_base_index(int target);
/* "q,k,v,o,gate,up,down" or "all" -> bitmask. */
int lm_lora_parse_targets(const char *csv, unsigned *out, lm_err *err);

lm_lora *lm_lora_new(const lm_tmodel *m, int rank, float alpha, unsigned targets,
                     uint64_t seed, lm_err *err);
void lm_lora_free(lm_lora *l);
void lm_lora_zero_grads(lm_lora *l);
const lm_ttensor *lm_lora_find(const lm_lora *l, const char *name);

/* llama.cpp's LoRA adapter GGUF: general.type "adapter", general.architecture
 * "llama", adapter.type "lora", adapter.lora.alpha; saved as F32 tensors
 * named as above. Loading is the runtime's reader (lm_adapter_read, so the
 * trainer accepts and refuses what a game does), any type it reads widened
 * to f32; the targets are the projections that have tensors, the same on
 * every layer, the rank one for all. */
int lm_lora_save(const lm_lora *l, const char *path, lm_err *err);
lm_lora *lm_lora_load(const lm_tmodel *m, const char *path, lm_err *err);

/* LoRA dropout (PEFT's lora_dropout): in a training pass the input of every
 * adapter's A is dropout(x) = x * m / (1 - p), the kept elements (m = 1)
 * drawn with probability 1 - p, one independent mask per (layer,
 * projection) like PEFT's one nn.Dropout per adapted module -- q, k and v
 * get different masks on the same input. The base path W x sees x itself.
 *
 * A mask is a pure function (no RNG state), so backward regenerates it,
 * any thread count or order gives the same one, and a resumed run the same
 * ones as an uninterrupted run. With G = 0x9E3779B97F4A7C15,
 * mix = splitmix64's finaliser and at(h, i) = mix(h + (i + 1) G) (the i-th
 * output of splitmix64 seeded with h), all mod 2^64:
 *   key  = at(at(seed, step), micro)          run seed, 0-based optimizer
 *                                             step, micro-batch in the step
 *   pkey = at(key, layer * LM_LORA_N + target)
 *   e    = n * in + i                         element [n, i] of x[N, in]
 *   w    = at(pkey, e / 2)                    one 64-bit word per two elements
 *   u    = e even ? w >> 32 : w & 0xffffffff
 *   kept = u >= floor(p * 2^32)               p as the f32 value
 * n is the row of the B*T batch (b * T + t, padding included), T being the
 * configured row length (--seq) even where a batch is computed only to its
 * longest row (lm_tbatch.dropout_T): trimming changes no mask. */
uint64_t lm_lora_dropout_key(uint64_t seed, uint64_t step, uint64_t micro);
uint64_t lm_lora_dropout_pkey(uint64_t key, int layer, int target);
/* out[N, in] = x * m / (1 - p), or with acc: out += x * m / (1 - p).
 * p in (0, 1); rows split over pool (may be NULL). */
void lm_lora_dropout_apply(lm_pool *pool, float *out, const float *x, int N, int in, float p,
                           uint64_t pkey, int acc);
/* The same for x [N, in] holding rows of T positions cut from rows of key_T
 * (T <= key_T): row n gets the mask of row (n / T) * key_T + n % T. */
void lm_lora_dropout_apply_rows(lm_pool *pool, float *out, const float *x, int N, int in, float p,
                                uint64_t pkey, int acc, int T, int key_T);

#endif
