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

/* Writes base + adapter merged into out_path (atomically) in type out
 * (F32, F16, BF16, Q8_0, Q4_0, Q4_1); rows that are not a multiple of the
 * block size fall back to F16 as `lemonpc quantize` does. adapter_path NULL
 * just converts. */
int lm_merge_write(const char *base_path, const char *adapter_path, const char *out_path,
                   lm_dtype out, float scale, lm_err *err);

#endif
