/* Internal to src/tensor: the per-ISA kernel sets behind lm_matmul.
 *
 * A matmul is cut into tiles of MR rows of x times NR rows of W. A tile
 * kernel computes the MR*NR dot products of a full tile; the driver
 * (matmul.c) pads partial tiles (repeating the last W row / float x row,
 * zero rows of quantized x) and drops the extra results. Every tile kernel of a set computes each dot product
 * with the same sequence of operations whatever MR/NR it was built for, so
 * y does not depend on the thread count or on how rows were split over
 * tasks. The avx2 and avx512 sets follow llama.cpp's CPU orders bit for bit
 * (ggml's vec_dot and llamafile's tinyBLAS) for its AVX2 and its AVX-512
 * build, including their one asymmetry: float weights (F32, F16, BF16) are
 * reduced one way for a single token (dec) and another for a batch (gemm);
 * quantized weights give a token the same result alone as in a batch.
 * Different sets differ in the last bits, except avx2 and avx512 on
 * quantized weights, whose orders llama.cpp's two builds share. */
#ifndef LM_TENSOR_KERNELS_H
#define LM_TENSOR_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/pool.h"
#include "tensor/dtype.h"

/* x rows quantized to 8 bit are kept in groups of LM_XQ_GROUP rows (the
 * quantized-weight gemm tiles are exactly one group tall): q[row, k] row by
 * row, and per block of 32 the scales of the group's rows side by side,
 * d[group][block][LM_XQ_GROUP], so a tile loads them with one vector load.
 * d is rounded through f16 as Q8_0/Q8_1 store it; s = d*sum(q) (Q4_1 only,
 * also rounded through f16). */
#define LM_XQ_GROUP 4

/* The rows of x a tile kernel works on. Float-weight kernels read f[i];
 * quantized-weight kernels read row i at q + i*k and its block-b scales at
 * d[b*LM_XQ_GROUP + i], s[b*LM_XQ_GROUP + i] (Q4_1 only), and the exact sum
 * of its block-b q at qsum[b*LM_XQ_GROUP + i] (Q4_0 only: SIMD kernels dot
 * the raw nibbles and subtract 8*qsum instead of recentring each nibble). */
typedef struct lm_xtile {
    const float *f[8];
    const int8_t *q;
    const float *d;
    const float *s;
    const int32_t *qsum;
    const int8_t *qx; /* the set's own form of q (lm_kernels.prep_x), or NULL */
} lm_xtile;

/* Bytes per row of the extra form of x that a set's prep_x writes (k a
 * multiple of 32): 128 per block of 32. */
#define LM_QX_BYTES(k) ((size_t)(k) * 4)

/* out[i*nr + j] = dot(x row i, w[j]) for i < mr, j < nr (the tile's own
 * sizes). w[j] points at a row of k elements in the kernel's weight type. */
typedef void (*lm_tile_fn)(int k, const void *const *w, const lm_xtile *x, float *out);

typedef struct lm_tile {
    lm_tile_fn fn;
    int mr, nr;
} lm_tile;

/* Weight types with kernels, as a dense index. */
enum { LM_WT_F32, LM_WT_F16, LM_WT_BF16, LM_WT_Q8_0, LM_WT_Q4_0, LM_WT_Q4_1, LM_WT_COUNT };

/* Largest head_dim the SIMD attention handles (a key gathered on the
 * stack); larger heads take the scalar kernel. */
#define LM_ATTN_MAX_HD 256

/* Tile sizes never exceed these (the driver's scratch is sized by them). */
#define LM_TILE_MAX_MR 8 /* = size of lm_xtile.f */
#define LM_TILE_MAX_NR 8

typedef struct lm_kernels {
    const char *name;
    /* Quantizes one row x[k] (k a multiple of 32) to 8 bit: q[k], the
     * scale of block b in d[b*stride], and s[b*stride] / qsum[b*stride]
     * when they are not NULL.
     * Round-to-nearest-even with id = 127/amax, as ggml's SIMD
     * quantize_row_q8_0/q8_1 do; every set writes bit-identical output. */
    void (*quant_x)(const float *x, int k, int8_t *q, float *d, float *s, int32_t *qsum,
                    int stride);
    /* F16 / BF16 weights: x is rounded to f16 / bf16 before the tiles see
     * it (llama.cpp converts activations to those weights' vec_dot type) */
    int f16_x, bf16_x;
    /* Optional, per weight type: a gemm tile that reads x in another form
     * than q (a layout that saves it work on every W tile) gets it from
     * prep_x, run once per row after quant_x: q[k] in, LM_QX_BYTES(k)
     * bytes out, at xtile.qx + i*LM_QX_BYTES(k) for row i of the tile. */
    void (*prep_x[LM_WT_COUNT])(const int8_t *q, int k, int8_t *qx);
    lm_tile dec[LM_WT_COUNT];  /* for m == 1: mr == 1 */
    lm_tile gemm[LM_WT_COUNT]; /* for m > 1; quantized types: mr == LM_XQ_GROUP */
    /* lm_softmax, lm_swiglu, lm_attn_heads (ops.h) */
    void (*softmax)(float *x, int n);
    void (*swiglu)(float *out, const float *gate, const float *up, int n);
    void (*attn_heads)(float *out, const float *q, int n_q, const void *Kt, const void *Vt,
                       lm_dtype kv_type, size_t stride, int n_keys, int head_dim, float scale,
                       int single, float *scores);
} lm_kernels;

extern const lm_kernels lm_kernels_scalar;
#if defined(__x86_64__) || defined(__i386__)
#define LM_HAVE_X86_KERNELS 1
extern const lm_kernels lm_kernels_avx2;
extern const lm_kernels lm_kernels_avx512;
/* The avx2 set's activation quantizer, which the avx512 set shares (every
 * set writes the same bytes; a wider one would gain nothing measurable). */
void lm_avx2_quant_x(const float *x, int k, int8_t *q, float *d, float *s, int32_t *qsum,
                     int stride);
#endif

/* Kernel set by name ("scalar", "avx2", "avx512"), or NULL if unknown or
 * the CPU lacks the instructions. Tests and benchmarks use it to try every
 * set. */
const lm_kernels *lm_kernels_by_name(const char *name);

/* The set that name (LEMONPC_KERNELS's value) asks for: NULL or "" is the
 * best set this CPU runs (avx512, avx2, scalar in that order); a name that
 * is unknown, or a set the CPU (or the OS: AVX-512 state not enabled in
 * XCR0) lacks, is an error that names the sets this machine has. Pure: reads
 * the CPU, nothing else. */
int lm_kernels_select(const char *name, const lm_kernels **out, lm_err *err);

/* The set lm_matmul and the ops use: picked once (pthread_once) by
 * lm_kernels_select(getenv("LEMONPC_KERNELS")); NULL when that failed.
 * lm_kernels_check says why; the model loader calls it, so the CLI and the
 * public API report a bad LEMONPC_KERNELS at load instead of running
 * another set than the one asked for. */
const lm_kernels *lm_kernels_default(void);
int lm_kernels_check(lm_err *err);

/* lm_kernels_default() for the compute paths, which cannot fail: a NULL
 * set there means compute was called without a loaded model (the loader
 * checks), with a bad LEMONPC_KERNELS: prints why and aborts. */
const lm_kernels *lm_kernels_run(void);

/* lm_matmul with an explicit kernel set. */
void lm_matmul_with(const lm_kernels *ks, lm_pool *pool, float *y, const float *x,
                    const void *W, lm_dtype wtype, int m, int n, int k);

/* lm_matmul_multi with an explicit kernel set. */
void lm_matmul_multi_with(const lm_kernels *ks, lm_pool *pool, int count, float *const *ys,
                          const void *const *Ws, const int *ns, lm_dtype wtype, const float *x,
                          int m, int k);

/* Portable softmax / swiglu (ops.c): the scalar set's, and the reference
 * the SIMD ones are tested against. */
void lm_softmax_scalar(float *x, int n);
void lm_swiglu_scalar(float *out, const float *gate, const float *up, int n);

/* Scratch for a matmul's converted x (all: bytes for its m rows, one: for
 * one row): the caller's stack buffer when all rows fit, else the heap; if
 * the heap says no, the stack a row at a time. Returns the rows per pass
 * (0: not even one row fits) and sets *buf, to free when it is not stack. */
int lm_mm_scratch(size_t all, size_t one, int m, unsigned char *stack, size_t cap,
                  unsigned char **buf);
/* y = NaN for every part: what a matmul that could not run leaves, loudly. */
void lm_mm_fill_nan(int count, float *const *ys, const int *ns, int m);

/* Scalar helpers shared by the sets. */
float lm_round_f16(float f); /* f rounded to the nearest f16, back as f32 */

#endif
