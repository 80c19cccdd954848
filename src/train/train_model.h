/* The training side of a Llama-family model: f32 master weights in one
 * flat buffer (gradients, AdamW moments share its layout), the activations
 * a backward pass needs, and the forward/loss/backward entry points.
 *
 * Weights are kept in GGUF layout: matrices are W[out, in] row-major (the
 * GGUF row length ne[0] is `in`), and the Q/K rows carry the HF->GGUF
 * permutation, so RoPE here rotates adjacent pairs (2i, 2i+1) by
 * pos * base^(-2i/head_dim) -- the same function as HF's rotate-half on the
 * un-permuted weights.
 *
 * Batches are B rows of T tokens. A row holds one right-padded sequence:
 * causal attention means a padding position can never influence an earlier
 * real one, so padding needs no attention mask, only exclusion from the
 * loss, which the per-position mask does. Or a row packs several sequences
 * (segments): then each position attends only inside its own segment, and
 * RoPE uses the position inside the segment. */
#ifndef LM_TRAIN_MODEL_H
#define LM_TRAIN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/pool.h"
#include "gguf/gguf.h"

typedef struct lm_tconfig {
    int n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim;
    float rope_base, rms_eps;
    int tied;               /* 1: token_embd is also the LM head */
    int n_ctx;              /* context_length (0: 2048 when saved without a base) */
} lm_tconfig;

/* Per-layer tensors, in this order inside the flat buffer. */
enum {
    LM_TW_ATTN_NORM, LM_TW_Q, LM_TW_K, LM_TW_V, LM_TW_O,
    LM_TW_FFN_NORM, LM_TW_GATE, LM_TW_UP, LM_TW_DOWN, LM_TW_N
};

typedef struct lm_ttensor {
    char name[64];          /* GGUF name, e.g. "blk.3.attn_q.weight" */
    int n_dims;             /* 1 or 2 */
    int64_t ne[2];          /* ggml order: ne[0] = row length (in) */
    size_t offset, numel;   /* into the flat buffers, in floats */
} lm_ttensor;

typedef struct lm_tmodel {
    lm_tconfig cfg;
    int n_tensors;
    lm_ttensor *tensors;    /* token_embd, blk.*, output_norm, [output] */
    size_t n_params;
    float *params;          /* [n_params], owned */
    float *grads;           /* [n_params] or NULL (frozen, e.g. LoRA) */
    /* views into params */
    float *tok_embd;        /* [n_vocab, dim] */
    float *out_norm;        /* [dim] */
    float *lm_head;         /* [n_vocab, dim]: tok_embd when tied */
    float *(*layer)[LM_TW_N]; /* layer[l][LM_TW_*] */
    /* [head_dim/2] rope angle divisors (Llama 3.x rope_freqs.weight), owned,
     * or NULL: constants of the model, applied in forward and backward,
     * saved with it, never trained */
    float *rope_freqs;
} lm_tmodel;

/* Loads any supported weight type, dequantized to f32. The settings are
 * the engine's (lm_llama_config_read, model/llama.h): what the engine
 * serves is trained as it is served, what it refuses is refused here. */
lm_tmodel *lm_tmodel_from_gguf(const gguf_file *f, lm_err *err);
lm_tmodel *lm_tmodel_load(const char *path, lm_err *err);
/* Random model for tests: N(0, std) matrices, norms 1 + N(0, 0.1). */
lm_tmodel *lm_tmodel_new_random(const lm_tconfig *cfg, uint64_t seed, float std, lm_err *err);
void lm_tmodel_free(lm_tmodel *m);
int lm_tmodel_alloc_grads(lm_tmodel *m, lm_err *err);
void lm_tmodel_zero_grads(lm_tmodel *m);
const lm_ttensor *lm_tmodel_find(const lm_tmodel *m, const char *name);
/* 1 for tensors AdamW should decay (matrices), 0 for norm weights. */
int lm_ttensor_decays(const lm_ttensor *t);
/* Writes the f32 weights as a GGUF. base (a GGUF path, may be NULL): copy
 * its metadata (tokenizer, template, ...) so the file runs as a model;
 * NULL or unreadable: only the architecture values from cfg (arch "llama"). */
int lm_tmodel_save(const lm_tmodel *m, const char *path, const char *base, lm_err *err);

typedef struct lm_tbatch {
    int B, T;
    const int32_t *tokens;  /* [B*T] inputs */
    const int32_t *targets; /* [B*T] next tokens (the caller shifts) */
    const uint8_t *mask;    /* [B*T] 1: position counts in the loss */
    /* Packing (both optional): segments [B*T] ids, equal and contiguous
     * within a sequence (any value on padding); pos [B*T] RoPE positions.
     * segments NULL: one sequence per row. pos NULL: the position inside
     * the segment (t when unpacked). The same batch must be passed to
     * forward, loss and backward. */
    const int32_t *segments;
    const int32_t *pos;
    /* The loss is sum(nll over masked positions) / loss_norm; 0 means this
     * batch's masked count (a plain mean). For gradient accumulation set it
     * to the masked count of all micro-batches of one optimizer step, so
     * their summed gradients equal those of the whole batch. */
    long loss_norm;
    /* Per-position loss weights (optional, [B*T]): position i's nll counts
     * weight[i] times, in the loss and its gradient (NULL: once). Negative
     * weights are allowed: DPO (dpo.h) trains a sequence's log-likelihood
     * up or down this way, reusing this backward pass. */
    const float *weight;
    /* LoRA dropout of a training pass (see lora.h): p in [0, 1), 0 (the
     * default) for none, as in validation; the masks come from dropout_key
     * (lm_lora_dropout_key of run seed, step, micro-batch). */
    float lora_dropout;
    uint64_t dropout_key;
    /* The row length the dropout masks are keyed by (lora.h), 0: T. A
     * batch cut to its longest row (T < --seq) passes --seq here, so its
     * masks are those of the full-length batch. */
    int dropout_T;
} lm_tbatch;

struct lm_lora;

/* Saved activations for batches of up to B rows of up to T positions; all
 * [N = B*T, ...] row-major. lm_train_forward takes the shape of its batch
 * (any B' <= B, T' <= T: a batch cut to its longest row costs B' T'
 * positions, not B T); loss and backward must get that same batch. */
typedef struct lm_tacts lm_tacts;

/* loss_chunk: tokens per chunk of the fused LM-head + cross-entropy
 * (<= 0 picks LM_LOSS_CHUNK_DEFAULT); the [chunk, n_vocab] logits are the
 * only vocab-wide buffer. lora may be NULL. */
#define LM_LOSS_CHUNK_DEFAULT 256
lm_tacts *lm_tacts_new(const lm_tmodel *m, const struct lm_lora *lora, int B, int T,
                       int loss_chunk, lm_err *err);
void lm_tacts_free(lm_tacts *a);
/* Precision of the matmuls run with these activations (f32 by default).
 * bf16: every linear layer's three products (and the LM head's) take their
 * inputs rounded to bf16 and sum in f32 (vdpbf16ps); master weights,
 * gradients, optimizer state and all other ops stay f32. bf16 needs the
 * avx512 kernel set (AVX-512 BF16): elsewhere an error that says so, not a
 * slower emulation. */
typedef enum { LM_TPREC_F32, LM_TPREC_BF16 } lm_tprec;
int lm_tacts_set_precision(lm_tacts *a, lm_tprec p, lm_err *err);
/* The same check alone: 0 if this run can compute in p. */
int lm_tprec_check(lm_tprec p, lm_err *err);
size_t lm_tacts_bytes(const lm_tacts *a);

/* Forward through the final norm, saving what backward needs. */
int lm_train_forward(const lm_tmodel *m, const struct lm_lora *lora, lm_tacts *a,
                     const lm_tbatch *b, lm_pool *pool, lm_err *err);
/* Cross-entropy over masked positions (mean, or see loss_norm and weight), fused with
 * the LM head, one chunk of tokens at a time. With want_grad it also produces d(final norm
 * output) in the activations and accumulates the LM-head gradient (when
 * m->grads). logits_out [B*T, n_vocab] is optional (tests only). With no
 * masked position the loss is 0 and so is every gradient. */
int lm_train_loss(const lm_tmodel *m, lm_tacts *a, const lm_tbatch *b, lm_pool *pool,
                  int want_grad, float *logits_out, double *loss, lm_err *err);
/* Per-row log-likelihoods, forward only (after lm_train_forward):
 * out[r] = sum of log p(targets[t]) over the masked positions t of row r,
 * in position order (out [B]; 0 for a row with no masked position). The
 * LM head runs on masked rows only; weight and loss_norm are ignored. */
int lm_train_seq_logprobs(const lm_tmodel *m, lm_tacts *a, const lm_tbatch *b, lm_pool *pool,
                          double *out, lm_err *err);
/* Backward from the d(final norm output) lm_train_loss left. Accumulates
 * into m->grads (if allocated) and lora grads (if lora). */
int lm_train_backward(lm_tmodel *m, struct lm_lora *lora, lm_tacts *a,
                      const lm_tbatch *b, lm_pool *pool, lm_err *err);
/* forward + loss + backward. Gradients accumulate: zero them first. */
int lm_train_grad(lm_tmodel *m, struct lm_lora *lora, lm_tacts *a, const lm_tbatch *b,
                  lm_pool *pool, double *loss, lm_err *err);

#endif
