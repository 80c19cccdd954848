/* Merging a LoRA adapter into its base: W' = W + scale * alpha/r * B A for
 * every adapted projection, written by the model converter (model/convert.h)
 * that `lemonpc quantize` uses too: every other matrix converted to the
 * requested type, 1-D tensors (norms) F32, the base's metadata copied with
 * general.file_type and general.quantization_version set. The result loads
 * in llama.cpp as a plain model. */
#ifndef LM_TRAIN_MERGE_H
#define LM_TRAIN_MERGE_H

#include "base/err.h"
#include "base/pool.h"
#include "model/convert.h"
#include "tensor/dtype.h"

/* Writes base + adapter merged into out_path (atomically) in type out
 * (F32, F16, BF16, Q8_0, Q4_0, Q4_1), on pool (NULL: one thread); rows that
 * are not a multiple of the block size fall back to F16 as `lemonpc
 * quantize` does. adapter_path NULL just converts. When the merge keeps less
 * than min_kept of the adapter's change (lm_merge_report in model/convert.h;
 * 0: any), nothing is written and it fails saying how much was kept. rep
 * may be NULL. */
int lm_merge_write(const char *base_path, const char *adapter_path, const char *out_path,
                   lm_dtype out, float scale, double min_kept, lm_merge_report *rep,
                   lm_pool *pool, lm_err *err);

#endif
