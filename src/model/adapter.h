/* Runtime LoRA adapters: llama.cpp's adapter GGUF loaded against a base
 * model and applied per context without merging, so many NPCs can share one
 * base lm_model, each context with its own adapter (lm_ctx_set_adapter).
 * For an adapted projection W[out, in]: y = W x + s * (alpha/r) * B (A x),
 * A[r, in], B[out, r]. A pair stored in F16 in the file stays F16 in
 * memory (half the bytes: 4.9 MB instead of 9.8 for rank 8 on all seven
 * projections of SmolLM2-135M) and is applied as llama.cpp applies an F16
 * adapter (the activations rounded to f16, F16 matmul orders); any other
 * type is widened to F32.
 *
 * File facts (as llama.cpp reads them): general.type "adapter",
 * general.architecture of the base, adapter.type "lora", adapter.lora.alpha
 * (f32; absent or 0 means alpha = r); tensors "blk.N.<proj>.weight.lora_a"
 * ne = [in, r] and ".lora_b" ne = [r, out], any float or quantized type we
 * read. Q/K lora_b rows are in GGUF (permuted) order like the base. */
#ifndef LM_MODEL_ADAPTER_H
#define LM_MODEL_ADAPTER_H

#include "base/err.h"
#include "gguf/gguf.h"
#include "model/llama.h"

enum { LM_ADAPT_Q, LM_ADAPT_K, LM_ADAPT_V, LM_ADAPT_O,
       LM_ADAPT_GATE, LM_ADAPT_UP, LM_ADAPT_DOWN, LM_ADAPT_N };

typedef struct lm_adapter_pair {
    const void *a;   /* [rank, in] of type, or NULL when the projection has no adapter */
    const void *b;   /* [out, rank] of type */
    lm_dtype type;   /* LM_F32 or LM_F16 (both halves) */
    int in, out;
} lm_adapter_pair;

typedef struct lm_adapter {
    char arch[32];
    int n_layer, rank;
    float alpha;
    float dropout;               /* adapter.lora.dropout (written by lemonpc
                                  * train; 0 if absent): training metadata
                                  * for the PEFT export, unused at run time */
    unsigned targets;            /* bit LM_ADAPT_*: present in some layer */
    int n_pairs;
    lm_adapter_pair *pairs;      /* [n_layer * LM_ADAPT_N], layer-major */
    void *data;                  /* owned storage of every a and b */
    size_t data_bytes;
} lm_adapter;

/* GGUF projection name ("attn_q", ..., "ffn_down") of LM_ADAPT_*. */
const char *lm_adapter_proj_name(int p);
/* The base weight a projection adapts. */
const lm_weight *lm_adapter_base_weight(const lm_model *m, int layer, int p);
static inline const lm_adapter_pair *lm_adapter_get(const lm_adapter *a, int layer, int p) {
    return &a->pairs[layer * LM_ADAPT_N + p];
}

/* What an adapter is checked against: the base's architecture, layer
 * count and the W[out, in] shape of each projection. The runtime takes
 * them from a loaded lm_model, the trainer from its own model's settings,
 * so both read adapters with the one reader below. */
typedef struct lm_adapter_dims {
    const char *arch;
    int n_layer;
    int in[LM_ADAPT_N], out[LM_ADAPT_N];
} lm_adapter_dims;

/* The dims of a Llama model with these settings. */
lm_adapter_dims lm_adapter_dims_of(const lm_llama_config *cfg);

/* Reads and checks an adapter against dims: types, architecture, that every
 * tensor is a lora_a/lora_b of a base projection, pairs complete, shapes
 * matching the base weight, one rank. Errors name the file and tensor. */
lm_adapter *lm_adapter_read(const gguf_file *f, const lm_adapter_dims *dims, lm_err *err);
/* The same against a loaded base model. */
lm_adapter *lm_adapter_load(const lm_model *base, const char *path, lm_err *err);
lm_adapter *lm_adapter_from_gguf(const lm_model *base, const gguf_file *f, lm_err *err);
void lm_adapter_free(lm_adapter *a);
/* Widens every F16 pair to F32 (exactly), for code that reads the factors
 * as floats (merge, PEFT export). The run-time numbers then change to those
 * of an F32 adapter with the same values. */
int lm_adapter_to_f32(lm_adapter *a, lm_err *err);
/* Bytes of the factors in memory. */
static inline size_t lm_adapter_bytes(const lm_adapter *a) { return a->data_bytes; }

/* Copies the adapter GGUF at src to dst (every kv and tensor; dst may be
 * src) with its LoRA tensors in type, LM_F32 or LM_F16 (rounded to nearest
 * even, as llama.cpp's converters do): an F16 adapter takes half the disk
 * and half the memory, and llama.cpp loads it too. Written by the model
 * converter (convert.h, LM_CONVERT_ADAPTER). */
int lm_adapter_convert(const char *src, const char *dst, lm_dtype type, lm_err *err);

#endif
