/* Llama-family model: config from GGUF metadata, weights used in place from
 * the mapping (any supported dtype, no copies), and the forward pass.
 *
 * lm_model is read-only once loaded and may be shared by any number of
 * lm_ctx (each holds one sequence's KV cache and scratch), so many NPCs
 * can share one base model. A context is used by one thread at a time;
 * the pool passed to it does the parallel work. */
#ifndef LM_MODEL_LLAMA_H
#define LM_MODEL_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/pool.h"
#include "gguf/gguf.h"
#include "tensor/dtype.h"

/* A Llama-family model's settings, read from GGUF by lm_llama_config_read:
 * the one reader the engine (lm_model_from_gguf) and the trainer
 * (lm_tmodel_from_gguf) share, so a file is served and trained as the same
 * function or refused by both with the same message. */
typedef struct lm_llama_config {
    char arch[32];        /* general.architecture ("llama") */
    int n_layer;          /* block_count */
    int n_embd;           /* embedding_length */
    int n_ff;             /* feed_forward_length */
    int n_head;           /* attention.head_count */
    int n_head_kv;        /* attention.head_count_kv (default n_head) */
    int head_dim;         /* n_embd / n_head (attention.key_length/value_length, if
                           * present, must equal it) */
    int n_rot;            /* rope.dimension_count (default head_dim; must equal it) */
    int n_vocab;          /* from token_embd.weight's shape */
    int n_ctx_train;      /* context_length */
    float rope_base;      /* rope.freq_base (default 10000) */
    float rms_eps;        /* attention.layer_norm_rms_epsilon */
    bool tied;            /* no output.weight: the LM head is token_embd */
    /* rope_freqs.weight (Llama 3.x): [head_dim/2] f32 divisors of the rope
     * angles, theta_i = pos * base^(-2i/head_dim) / rope_freqs[i]; NULL
     * without. Points into the file's mapping: valid while it is open. */
    const float *rope_freqs;
} lm_llama_config;

typedef struct lm_weight {   /* a matrix W[n, k] in the mapping (ne[0] = k) */
    const void *data;
    lm_dtype type;
    int n, k;
} lm_weight;

typedef struct lm_llama_layer {
    const float *attn_norm;   /* [n_embd] */
    lm_weight wq;             /* [n_head*head_dim, n_embd] */
    lm_weight wk, wv;         /* [n_head_kv*head_dim, n_embd] */
    lm_weight wo;             /* [n_embd, n_head*head_dim] */
    const float *ffn_norm;    /* [n_embd] */
    lm_weight w_gate, w_up;   /* [n_ff, n_embd] */
    lm_weight w_down;         /* [n_embd, n_ff] */
} lm_llama_layer;

typedef struct lm_model {
    lm_llama_config cfg;
    gguf_file *file;          /* owned when loaded by path; NULL when borrowed */
    const gguf_file *gguf;    /* the file the weights point into */
    lm_weight tok_embd;       /* [n_vocab, n_embd] */
    lm_weight output;         /* [n_vocab, n_embd]; == tok_embd when cfg.tied */
    const float *output_norm; /* [n_embd] */
    lm_llama_layer *layers;   /* [n_layer] */
    float *norm_buf;          /* owned f32 copies of non-f32 norm vectors */
    void *repacked;           /* owned: the Q4_0 weights repacked at load (tensor/q4_0x8.h) */
} lm_model;

/* Opens path and loads the model; the model owns the mapping. */
lm_model *lm_model_load(const char *path, lm_err *err);
/* Loads from an open file the caller keeps open for the model's lifetime. */
lm_model *lm_model_from_gguf(const gguf_file *f, lm_err *err);
void lm_model_free(lm_model *m);

/* Reads and checks the config: every key above, that every tensor is one
 * the llama graph uses (a bias or an extra norm would otherwise be ignored),
 * rope_freqs.weight's shape, type and values, and that nothing the graph
 * does not implement is asked for (rope scaling other than none or factor
 * 1, mixture of experts, attention heads of another width than
 * n_embd/n_head), each refused with a message naming the key or tensor. */
int lm_llama_config_read(const gguf_file *f, lm_llama_config *cfg, lm_err *err);

/* ---- contexts ------------------------------------------------------- */

typedef struct lm_ctx lm_ctx;

typedef enum lm_logits_mode {
    LM_LOGITS_NONE = 0,   /* only fill the KV cache */
    LM_LOGITS_LAST = 1,   /* logits[n_vocab] of the last token */
    LM_LOGITS_ALL = 2,    /* logits[n, n_vocab], one row per token */
} lm_logits_mode;

/* n_ctx <= 0 means min(2048, n_ctx_train); larger than n_ctx_train is an
 * error. pool is borrowed (NULL: the context makes a 1-thread pool). The
 * KV cache holds f32: logits bit-identical to llama.cpp's with its cache
 * in f32 (docs/ENGINE.md). */
lm_ctx *lm_ctx_new(const lm_model *m, int n_ctx, lm_pool *pool, lm_err *err);
/* The same with the cache's element type: LM_F32, or LM_F16 (llama.cpp's
 * default; half the memory, logits bit-identical to llama.cpp's with an f16
 * cache). Any other type is an error. */
lm_ctx *lm_ctx_new_kv(const lm_model *m, int n_ctx, lm_pool *pool, lm_dtype kv_type,
                      lm_err *err);
void lm_ctx_free(lm_ctx *c);

/* Evaluates tokens[0..n) at positions n_past .. n_past+n-1, appends their
 * keys/values to the cache and writes logits as mode asks (logits may be
 * NULL with LM_LOGITS_NONE). Fails, changing nothing, if the cache would
 * overflow or a token id is out of range. Long inputs are processed in
 * batches of the context's batch size. */
int lm_eval(lm_ctx *c, const int32_t *tokens, int n, lm_logits_mode mode,
            float *logits, lm_err *err);

int lm_ctx_n_past(const lm_ctx *c);
int lm_ctx_n_ctx(const lm_ctx *c);
const lm_model *lm_ctx_model(const lm_ctx *c);
/* Forgets positions >= n_past (e.g. 0 to start over, or to drop an
 * unanswered turn). n_past above the current position is clamped. */
void lm_ctx_truncate(lm_ctx *c, int n_past);
/* Gives back the context's batch scratch (the activations of up to 128
 * tokens, ~3 MB for SmolLM2-135M with an adapter): the next lm_eval
 * allocates it again. The cache and the position are kept, and the logits
 * are the same either way. For contexts that sit idle between replies
 * (many NPCs' conversations); the scratch is otherwise kept, so that a
 * token-by-token decode does not allocate per token. */
void lm_ctx_trim(lm_ctx *c);
/* Bytes of scratch the context holds now (0 once trimmed). */
size_t lm_ctx_scratch_bytes(const lm_ctx *c);
/* Switches the borrowed pool (NULL: back to the context's 1-thread one). */
void lm_ctx_set_pool(lm_ctx *c, lm_pool *pool);
/* Applies a LoRA adapter (model/adapter.h; borrowed, must outlive its use)
 * to this context's later evaluations: each adapted projection adds
 * scale * alpha/r * B (A x). NULL removes it. Switching mid-sequence leaves
 * the cached positions as they were computed. */
struct lm_adapter;
int lm_ctx_set_adapter(lm_ctx *c, const struct lm_adapter *a, float scale, lm_err *err);
/* Allocates the cache for n positions now (clamped to n_ctx) instead of as
 * they fill: no allocation, and no move of the cached rows, mid-sequence up
 * to there. The logits are the same either way. */
int lm_ctx_reserve(lm_ctx *c, int n, lm_err *err);
/* Reallocates the cache to hold exactly the cached positions (no room to
 * grow, no padding): for a context that is only read from once filled, such
 * as an NPC's persona prefix copied into its conversations. A later lm_eval
 * grows it again; the logits are the same either way. Fails changing
 * nothing. */
int lm_ctx_compact(lm_ctx *c, lm_err *err);
/* The cache's element type (LM_F32 or LM_F16). */
lm_dtype lm_ctx_kv_type(const lm_ctx *c);
/* Bytes of the KV cache at full size (for memory budgets); the cache is
 * allocated as positions fill, doubling from 64 up to n_ctx. */
size_t lm_ctx_kv_bytes(const lm_ctx *c);
/* Makes dst hold src's first n cached positions (same model, same cache
 * type), replacing what dst held: a persona evaluated once, shared by
 * every conversation. */
int lm_ctx_copy_prefix(lm_ctx *dst, const lm_ctx *src, int n, lm_err *err);
/* The cache as data, for saving a conversation: K and V of positions
 * [0, n_past) as [n_layer * kv_dim, n_past] elements of lm_ctx_kv_type each
 * (f32, or f16 bits as uint16), lm_ctx_state_bytes bytes per array. _set
 * replaces the cache with such arrays, which must be of this context's
 * type (the caller records the type beside them). */
size_t lm_ctx_state_bytes(const lm_ctx *c);
void lm_ctx_state_get(const lm_ctx *c, void *k, void *v);
int lm_ctx_state_set(lm_ctx *c, const void *k, const void *v, int n_past, lm_err *err);

/* Observer of lm_eval's intermediates, for debugging and for comparing
 * them one by one with llama.cpp's (its graph callback uses the same
 * names: "attn_norm-3", "Qcur-3", "ffn_out-3", "result_output", ...).
 * data is [rows, cols] row-major: one row per token of the batch; it is
 * valid only during the call. NULL fn turns tracing off. */
typedef void (*lm_trace_fn)(void *user, const char *name, const float *data, int rows,
                            int cols);
void lm_ctx_set_trace(lm_ctx *c, lm_trace_fn fn, void *user);

#endif
