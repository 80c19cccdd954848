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
 * "llama", adapter.type "lora", adapter.lora.alpha; F32 tensors as named
 * above. Loading checks every tensor against the base model's shapes; the
 * targets are the projections that have tensors, the rank is that of the
 * first one and must be the same for all. */
int lm_lora_save(const lm_lora *l, const char *path, lm_err *err);
lm_lora *lm_lora_load(const lm_tmodel *m, const char *path, lm_err *err);

#endif
