/* The small per-token operations of the forward pass, written to round the
 * way ggml's CPU backend does (llama.cpp is our oracle): sums of squares
 * and softmax denominators in double, rope angles built by repeated
 * multiplication in float. They cost little next to the matmuls. */
#include <math.h>

#include "tensor/kernels.h"
#include "tensor/ops.h"

const char *lm_kernels_name(void) { return lm_kernels_run()->name; }

void lm_attn_heads(float *out, const float *q, int n_q, const void *Kt, const void *Vt,
                   lm_dtype kv_type, size_t stride, int n_keys, int head_dim, float scale,
                   int single, float *scores) {
    lm_kernels_run()->attn_heads(out, q, n_q, Kt, Vt, kv_type, stride, n_keys, head_dim,
                                     scale, single, scores);
}

void lm_rmsnorm(float *out, const float *x, const float *w, int m, int d, float eps) {
    for (int r = 0; r < m; r++, x += d, out += d) {
        double sum = 0.0;
        for (int i = 0; i < d; i++) sum += (double)(x[i] * x[i]);
        /* ggml: mean in float, eps inside the square root, then x*scale
         * and only then the weight (a separate ggml_mul). */
        const float mean = (float)(sum / d);
        const float scale = 1.0f / sqrtf(mean + eps);
        for (int i = 0; i < d; i++) {
            const float v = x[i] * scale;
            out[i] = v * w[i];
        }
    }
}

/* Largest head_dim we keep the cos/sin table on the stack for. */
#define ROPE_MAX_DIM 1024

void lm_rope(float *q, int n_tokens, int n_heads, int head_dim, const int32_t *pos, float base,
             const float *freqs) {
    const int half = head_dim / 2;
    /* ggml: theta_scale = base^(-2/n_dims), theta_0 = pos, theta_{i+1} =
     * theta_i * theta_scale, all float; cos/sin of each through cosf/sinf,
     * of theta_i / freqs[i] where there are divisors (ggml_rope_cache_init;
     * its rope_yarn multiplies by freq_scale and mscale, both 1 here). */
    const float theta_scale = powf(base, -2.0f / (float)head_dim);
    float cs[ROPE_MAX_DIM / 2][2];
    for (int t = 0; t < n_tokens; t++) {
        float theta = (float)pos[t];
        for (int i = 0; i < half; i++) {
            if (i < ROPE_MAX_DIM / 2) {
                const float a = freqs ? theta / freqs[i] : theta;
                cs[i][0] = cosf(a);
                cs[i][1] = sinf(a);
            }
            theta *= theta_scale;
        }
        for (int h = 0; h < n_heads; h++) {
            float *v = q + ((size_t)t * n_heads + h) * head_dim;
            float th = (float)pos[t];
            for (int i = 0; i < half; i++) {
                float c, s;
                if (i < ROPE_MAX_DIM / 2) {
                    c = cs[i][0];
                    s = cs[i][1];
                } else { /* absurdly wide heads: recompute, same values */
                    const float a = freqs ? th / freqs[i] : th;
                    c = cosf(a);
                    s = sinf(a);
                }
                th *= theta_scale;
                const float x0 = v[2 * i], x1 = v[2 * i + 1];
                /* one product rounded, the other fused, as llama.cpp's
                 * build of ggml's rotate_pairs computes it (fmaddsub) */
                v[2 * i] = fmaf(x0, c, -(x1 * s));
                v[2 * i + 1] = fmaf(x0, s, x1 * c);
            }
        }
    }
}

void lm_softmax_scalar(float *x, int n) {
    if (n <= 0) return;
    float max = -INFINITY;
    for (int i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        const float e = expf(x[i] - max);
        x[i] = e;
        sum += (double)e;
    }
    const float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void lm_swiglu_scalar(float *out, const float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) {
        const float g = gate[i];
        const float silu = g / (1.0f + expf(-g));
        out[i] = silu * up[i];
    }
}

void lm_softmax(float *x, int n) { lm_kernels_run()->softmax(x, n); }

void lm_swiglu(float *out, const float *gate, const float *up, int n) {
    lm_kernels_run()->swiglu(out, gate, up, n);
}
