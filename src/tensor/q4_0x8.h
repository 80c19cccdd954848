/* Q4_0 weights repacked 8 rows at a time, for lm_matmul.
 *
 * A Q4_0 matrix W[n, k] (n a multiple of 8) is regrouped at model load into
 * n/8 groups of 8 rows; group g holds k/32 blocks lm_block_q4_0x8, block b
 * carrying block b of rows 8g..8g+7. Inside a block the nibbles are laid
 * out so that one 32-byte load gives 4 consecutive elements of each of the
 * 8 rows, one row per 32-bit lane:
 *
 *   q[32c + 4r + e] = byte 4c+e of row r's Q4_0 block (c < 4, r < 8, e < 4)
 *
 * so its low nibble is element 4c+e of row r and its high nibble element
 * 16+4c+e. A multiply-add against 4 bytes of x broadcast to every lane then
 * leaves each row's partial dot product in its own lane, and a block's 8
 * dot products come out as one vector with no horizontal sums (the cost the
 * row-major Q4_0 kernels pay per block). The idea is llama.cpp's
 * block_q4_0x8 (ggml-cpu/repack.cpp); the byte order here is our own.
 *
 * Arithmetic: each output is, as in llama.cpp's repacked AVX2 kernels and
 * in our row-major Q4_0 kernels, acc = fma((float)isum_b, dw_b * dx_b, acc)
 * over blocks b in order, isum_b the exact integer dot product of the
 * block; x is quantized by the kernel set's quant_x (the Q8_0 rounding
 * llama.cpp uses). So a repacked matrix gives bit for bit the y of the
 * original Q4_0 one, with any kernel set, thread count or batch size. */
#ifndef LM_TENSOR_Q4_0X8_H
#define LM_TENSOR_Q4_0X8_H

#include <stddef.h>
#include <stdint.h>

#include "base/pool.h"
#include "tensor/dtype.h"

typedef struct {
    uint16_t d[8];            /* f16 scale of each row's block */
    uint8_t q[8 * LM_QK / 2]; /* 128 B, order above */
} lm_block_q4_0x8;            /* 144 B: the same bytes as 8 Q4_0 blocks */

/* The weight type lm_matmul / lm_matmul_multi take for a repacked matrix.
 * It lives only in memory (never in a file, never a GGUF id), which is why
 * it is not one of lm_dtype's listed values: only lm_matmul accepts it. */
#define LM_Q4_0_X8 ((lm_dtype)0x4008)

/* Bytes of W[n, k] repacked: the same as in Q4_0. 0 if n % 8 or k % 32. */
size_t lm_q4x8_bytes(int n, int k);

/* dst = src W[n, k] (Q4_0 rows) repacked; n % 8 == 0, k % 32 == 0. */
void lm_q4x8_repack(const void *src, int n, int k, void *dst);

/* out[k] = row `row` of a repacked W[n, k], dequantized exactly as
 * lm_dequant_row(LM_Q4_0) would the original row (the embedding lookup of
 * a tied model reads the repacked output layer). */
void lm_q4x8_dequant_row(const void *W, int row, int k, float *out);

/* lm_matmul_multi_with for LM_Q4_0_X8 weights (called by it): ys[p][m,
 * ns[p]] = x[m, k] @ Ws[p]^T, every ns[p] a multiple of 8. ks picks the
 * activation quantizer and, scalar or not, the tile code. */
struct lm_kernels;
void lm_q4x8_matmul_multi(const struct lm_kernels *ks, lm_pool *pool, int count,
                          float *const *ys, const void *const *Ws, const int *ns,
                          const float *x, int m, int k);

/* ---- internal: tile kernels (q4_0x8.c scalar, q4_0x8_avx2.c, _avx512.c) */

/* The rows of quantized x a tile reads: row i's q at q + i*q_stride, its
 * block-b scale and exact sum of q at d[i*s_stride + b], qsum[...]. */
typedef struct lm_q4x8_x {
    const int8_t *q;
    const float *d;
    const int32_t *qsum;
    size_t q_stride, s_stride;
} lm_q4x8_x;

/* y[i*ldy + r] = dot(x row i, W row 8g + r) for i < rows, r < 8, where w
 * is group g's first block; nb = k/32. rows is 1 or LM_Q4X8_MR. */
typedef void (*lm_q4x8_tile_fn)(int nb, const lm_block_q4_0x8 *w, const lm_q4x8_x *x,
                                float *y, size_t ldy);

#define LM_Q4X8_MR 4 /* x rows per batch tile */

typedef struct lm_q4x8_tiles {
    lm_q4x8_tile_fn row1;  /* rows == 1 */
    lm_q4x8_tile_fn rowsN; /* rows == LM_Q4X8_MR */
    /* Optional: rowsN over two consecutive groups, g at w and g+1 at
     * w + nb (y[i*ldy + r] for r < 16), for a set whose registers hold 16
     * rows' sums at once; NULL where there is none. */
    lm_q4x8_tile_fn rowsN_16;
} lm_q4x8_tiles;

#if defined(__x86_64__) || defined(__i386__)
extern const lm_q4x8_tiles lm_q4x8_tiles_avx2;
extern const lm_q4x8_tiles lm_q4x8_tiles_avx512;
#endif

#endif
