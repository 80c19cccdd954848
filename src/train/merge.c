/* LoRA merge and export to GGUF (see merge.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/adapter.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "train/merge.h"

unsigned lm_merge_file_type(lm_dtype t) {
    switch (t) {
    case LM_F16: return 1;
    case LM_Q4_0: return 2;
    case LM_Q4_1: return 3;
    case LM_Q8_0: return 7;
    case LM_BF16: return 32;
    default: return 0;
    }
}

/* The adapter pair (or NULL) that adapts the base tensor called name. */
static const lm_adapter_pair *pair_for(const lm_adapter *a, const char *name) {
    if (!a) return NULL;
    for (int l = 0; l < a->n_layer; l++)
        for (int p = 0; p < LM_ADAPT_N; p++) {
            const lm_adapter_pair *pr = lm_adapter_get(a, l, p);
            if (!pr->a) continue;
            char nm[96];
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, lm_adapter_proj_name(p));
            if (!strcmp(nm, name)) return pr;
        }
    return NULL;
}

int lm_merge_write(const char *base_path, const char *adapter_path, const char *out_path,
                   lm_dtype out, float scale, double min_kept, lm_merge_report *rep,
                   lm_err *err) {
    if (out != LM_F32 && out != LM_F16 && out != LM_BF16 && out != LM_Q8_0 && out != LM_Q4_0 &&
        out != LM_Q4_1)
        return lm_errf(err, "merge: output type %s is not one of f32, f16, bf16, q8_0, q4_0, "
                       "q4_1", lm_dtype_name(out) ? lm_dtype_name(out) : "?");
    int rc = -1;
    lm_model *m = NULL;
    lm_adapter *a = NULL;
    gguf_writer *w = NULL;
    float *row = NULL, *orig = NULL, *back = NULL;
    uint8_t *dst = NULL;
    double dot = 0, delta_sq = 0;   /* <M - W, D> and |D|^2 (lm_merge_report) */
    int n_adapted = 0;
    if (rep) *rep = (lm_merge_report){1.0, 0};
    if (!(m = lm_model_load(base_path, err))) goto done;
    if (adapter_path && (!(a = lm_adapter_load(m, adapter_path, err)) || lm_adapter_to_f32(a, err)))
        goto done;   /* an F16 adapter's values, widened exactly */
    const gguf_file *f = m->gguf;
    if (!(w = gguf_writer_new())) { lm_errf(err, "out of memory"); goto done; }
    if (gguf_copy_kvs(w, f, err) ||
        gguf_set_u32(w, "general.file_type", lm_merge_file_type(out), err))
        goto done;
    if (out == LM_Q8_0 || out == LM_Q4_0 || out == LM_Q4_1)
        if (gguf_set_u32(w, "general.quantization_version", 2, err)) goto done;

    float mul = a ? scale * a->alpha / (float)a->rank : 0.0f;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        lm_dtype ty = t->n_dims == 1 ? LM_F32 : out;
        if (lm_dtype_row_bytes(ty, t->ne[0]) == 0) ty = LM_F16;
        const lm_adapter_pair *pr = pair_for(a, t->name);
        int64_t k = t->ne[0], n_rows = t->ne[1] * t->ne[2] * t->ne[3];
        size_t in_row = lm_dtype_row_bytes(t->type, k), out_row = lm_dtype_row_bytes(ty, k);
        size_t nbytes = out_row * (size_t)n_rows;
        free(dst); free(row); free(orig); free(back);
        dst = malloc(nbytes ? nbytes : 1);
        row = malloc(sizeof(float) * (size_t)k);
        orig = malloc(sizeof(float) * (size_t)k);
        back = malloc(sizeof(float) * (size_t)k);
        if (!dst || !row || !orig || !back) { lm_errf(err, "%s: out of memory (%zu bytes)", t->name, nbytes); goto done; }
        if (t->type == ty && !pr) {
            memcpy(dst, t->data, nbytes);
        } else {
            for (int64_t o = 0; o < n_rows; o++) {
                lm_dequant_row(t->type, (const uint8_t *)t->data + (size_t)o * in_row, row, k);
                if (pr) {   /* row o of W += mul * B[o, :] A  (A[r, k]) */
                    memcpy(orig, row, sizeof(float) * (size_t)k);
                    for (int j = 0; j < a->rank; j++) {
                        float bj = mul * ((const float *)pr->b)[(size_t)o * a->rank + j];
                        const float *aj = (const float *)pr->a + (size_t)j * (size_t)k;
                        for (int64_t c = 0; c < k; c++) row[c] += bj * aj[c];
                    }
                }
                uint8_t *q = dst + (size_t)o * out_row;
                lm_quant_row(ty, row, q, k);
                if (pr) {   /* row becomes M, what was written; orig is W */
                    for (int64_t c = 0; c < k; c++) back[c] = row[c] - orig[c];   /* D */
                    lm_dequant_row(ty, q, row, k);
                    for (int64_t c = 0; c < k; c++) {
                        dot += (double)(row[c] - orig[c]) * back[c];
                        delta_sq += (double)back[c] * back[c];
                    }
                }
            }
        }
        n_adapted += pr != NULL;
        if (gguf_add_tensor(w, t->name, ty, t->n_dims, t->ne, dst, nbytes, err)) goto done;
    }
    double kept = delta_sq > 0 ? dot / delta_sq : 1.0;
    if (rep) *rep = (lm_merge_report){kept, n_adapted};
    if (kept < min_kept) {
        lm_errf(err, "%s keeps %.0f%% of the adapter's change to the weights (its rounding "
                "step is larger than most of the change, which rounds back to the base); nothing "
                "written", lm_dtype_name(out), 100.0 * kept);
        goto done;
    }
    if (gguf_write(w, out_path, err)) goto done;
    rc = 0;
done:
    free(dst); free(row); free(orig); free(back);
    gguf_writer_free(w);
    lm_adapter_free(a);
    lm_model_free(m);
    return rc;
}
