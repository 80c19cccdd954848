/* Rewriting a GGUF model with its weights in another type: the one
 * converter behind `lemonpc quantize`, `lemonpc merge` (train/merge.h) and
 * an adapter's F16/F32 conversion (lm_adapter_convert), so they write the
 * same file for the same input.
 *
 * Every tensor of two or more dimensions becomes the requested type
 * (token_embd.weight its own): dequantized from whatever the file holds,
 * optionally merged with a LoRA adapter, and requantized with lm_quant_row,
 * which matches llama.cpp's reference quantizers bit for bit. A tensor
 * already in its target type and not adapted is copied byte for byte (no
 * lossy requantization); rows that are not whole blocks of the type fall
 * back to F16; 1-D tensors (norms, rope_freqs) are stored F32. The metadata
 * is copied with general.file_type set to the type and
 * general.quantization_version to 2 (the block formats lm_quant_row writes),
 * as llama.cpp's quantizer sets both. Rows are converted in parallel on the
 * given pool; each row's bytes do not depend on the thread count.
 *
 * A LoRA adapter (LM_CONVERT_ADAPTER, lm_adapter_convert) goes through the
 * same loop with another rule: every tensor in the requested type and the
 * metadata copied unchanged (general.file_type describes a model's weights,
 * not an adapter's factors).
 *
 * A merge also measures how much of the adapter's change it wrote (see
 * lm_merge_report) and, below a threshold, refuses before anything is
 * written: a fine-tune's change is often smaller than a 4-bit type's
 * rounding step and would round back to the base. */
#ifndef LM_MODEL_CONVERT_H
#define LM_MODEL_CONVERT_H

#include <stdint.h>

#include "base/err.h"
#include "base/pool.h"
#include "gguf/gguf.h"
#include "tensor/dtype.h"

struct lm_adapter;

/* How much of the adapter's change a merge wrote: over every adapted
 * matrix, with W the base weights, D = scale * alpha/r * B A (as added to W
 * in f32) and M the merged weights as written (rounded to the output type),
 * kept = <M - W, D> / |D|^2. 1 when D is written whole (F32) or is zero;
 * near 0 when the output type's rounding step is larger than D, which then
 * mostly rounds back to W (Q4_1 on a small fine-tune). Summed row by row in
 * row order, so it does not depend on the thread count either. */
typedef struct lm_merge_report {
    double kept;
    int n_adapted;     /* matrices the adapter changed */
} lm_merge_report;

/* What the input file is, which decides each tensor's type and the kvs. */
typedef enum lm_convert_kind {
    LM_CONVERT_MODEL,     /* 1-D tensors F32, token_embd.weight in embd_type,
                           * general.file_type and quantization_version set */
    LM_CONVERT_ADAPTER,   /* every tensor in type; every kv as it is */
} lm_convert_kind;

typedef struct lm_convert_opts {
    lm_convert_kind kind;
    lm_dtype type;        /* F32, F16, BF16, Q8_0, Q4_0 or Q4_1 */
    lm_dtype embd_type;   /* token_embd.weight's (set it to type for the same) */
    /* Merged into the weights it adapts, W += scale * alpha/r * B A; NULL
     * for none. Its pairs must be F32 (lm_adapter_to_f32) and it must have
     * been loaded against the model of the input file. */
    const struct lm_adapter *adapter;
    float adapter_scale;
    /* With an adapter: fail, writing nothing, when the merge keeps less than
     * this share of its change (lm_merge_report.kept); 0: write any merge. */
    double min_kept;
    lm_pool *pool;        /* borrowed; NULL: the calling thread alone */
    /* Called on the calling thread after each tensor is converted (progress,
     * notes): out is the type it was stored in, fallback 1 when that is F16
     * because its rows are not whole blocks of the type asked for. NULL:
     * nothing is reported. */
    void (*on_tensor)(void *user, const gguf_tensor *t, lm_dtype out, int fallback,
                      uint64_t done, uint64_t total);
    void *user;
} lm_convert_opts;

/* llama.cpp's LLAMA_FTYPE_* ("mostly TYPE") value of general.file_type. */
uint32_t lm_convert_file_type(lm_dtype t);

/* Writes in, converted as o says, to out_path (atomically: gguf_write).
 * Fails, writing nothing, on an unsupported type, a tensor that cannot be
 * read (errors name the tensor) or a merge that keeps less than o->min_kept
 * of the adapter's change (the error says how much it kept). rep (may be
 * NULL) gets the merge's report, also when it was refused ({1, 0} without an
 * adapter or before the tensors were converted). */
int lm_convert_write(const gguf_file *in, const char *out_path, const lm_convert_opts *o,
                     lm_merge_report *rep, lm_err *err);

#endif
