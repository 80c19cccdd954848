/* Merging a LoRA adapter into its base: W' = W + scale * alpha/r * B A for
 * every adapted projection (dequantized to f32, merged, requantized with
 * lm_quant_row), every other matrix converted to the requested type, 1-D
 * tensors (norms) kept F32; the base's metadata is copied with
 * general.file_type updated. The result loads in llama.cpp as a plain model. */
#ifndef LM_TRAIN_MERGE_H
#define LM_TRAIN_MERGE_H

#include "base/err.h"
#include "tensor/dtype.h"

/* llama.cpp's LLAMA_FTYPE_* value ("mostly TYPE") for general.file_type. */
unsigned lm_merge_file_type(lm_dtype t);

/* How much of the adapter's change a merge wrote: over every adapted
 * matrix, with D = scale * alpha/r * B A and M the merged weights as written
 * (rounded to the output type), kept = <M - W, D> / |D|^2. 1 when D is
 * written whole (F32); near 0 when the output type's rounding step is larger
 * than D, which then mostly rounds back to W (Q4_1 on a small fine-tune). */
typedef struct lm_merge_report {
    double kept;
    int n_adapted;     /* matrices the adapter changed */
} lm_merge_report;

/* Writes base + adapter merged into out_path (atomically) in type out
 * (F32, F16, BF16, Q8_0, Q4_0, Q4_1); rows that are not a multiple of the
 * block size fall back to F16 as `lemonpc quantize` does. adapter_path NULL
 * just converts. When the merge keeps less than min_kept of the adapter's
 * change (see lm_merge_report; 0: any), nothing is written and it fails
 * saying how much was kept. rep may be NULL. */
int lm_merge_write(const char *base_path, const char *adapter_path, const char *out_path,
                   lm_dtype out, float scale, double min_kept, lm_merge_report *rep,
                   lm_err *err);

#endif
