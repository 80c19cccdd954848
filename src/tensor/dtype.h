/* Element types of weights, with the numeric ids GGUF/ggml use on disk,
 * and the block layouts of the quantized ones (blocks of 32 elements). */
#ifndef LM_TENSOR_DTYPE_H
#define LM_TENSOR_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum lm_dtype {
    LM_F32 = 0,
    LM_F16 = 1,
    LM_Q4_0 = 2,
    LM_Q4_1 = 3,
    LM_Q8_0 = 8,
    LM_Q8_1 = 9, /* activations only (never stored in a model we write) */
    LM_BF16 = 30,
} lm_dtype;

#define LM_QK 32 /* elements per quantized block */

typedef struct { uint16_t d; int8_t q[LM_QK]; } lm_block_q8_0;              /* 34 B */
typedef struct { uint16_t d; uint8_t q[LM_QK / 2]; } lm_block_q4_0;         /* 18 B: (nib-8)*d, elem j low nibble of q[j], j+16 high */
typedef struct { uint16_t d, m; uint8_t q[LM_QK / 2]; } lm_block_q4_1;      /* 20 B: nib*d + m */
typedef struct { uint16_t d, s; int8_t q[LM_QK]; } lm_block_q8_1;           /* 36 B: s = d * sum(q), for Q4_1 dots */

/* Name as GGUF tools print it ("F32", "Q8_0", ...); NULL for unknown ids. */
const char *lm_dtype_name(int type);
/* Parses "f32", "Q8_0", "q4_1", ... ; returns -1 if unknown. */
int lm_dtype_parse(const char *name);
/* 1 if we can load weights of this id. */
int lm_dtype_supported(int type);
/* Elements per block (1 for float types) and bytes per block. */
size_t lm_dtype_block_elems(lm_dtype t);
size_t lm_dtype_block_bytes(lm_dtype t);
/* Bytes of a row of n elements; 0 if n is not a multiple of the block size. */
size_t lm_dtype_row_bytes(lm_dtype t, int64_t n);

float lm_f16_to_f32(uint16_t h);
uint16_t lm_f32_to_f16(float f);   /* round to nearest even */
float lm_bf16_to_f32(uint16_t h);
uint16_t lm_f32_to_bf16(float f);  /* round to nearest even, NaN kept */

/* Row conversion; n must be a multiple of lm_dtype_block_elems(t). The
 * quantizers round the way ggml's reference quantizers do, so a tensor we
 * quantize is bit-identical to one llama.cpp's quantize tool would write. */
void lm_dequant_row(lm_dtype t, const void *src, float *dst, int64_t n);
void lm_quant_row(lm_dtype t, const float *src, void *dst, int64_t n);

#endif
