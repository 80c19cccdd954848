/* The model converter (see convert.h). */
#include "model/convert.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/adapter.h"

#define ROWS_PER_TASK 64

uint32_t lm_convert_file_type(lm_dtype t) {
    switch (t) {
    case LM_F16: return 1;
    case LM_Q4_0: return 2;
    case LM_Q4_1: return 3;
    case LM_Q8_0: return 7;
    case LM_BF16: return 32;
    default: return 0;   /* LLAMA_FTYPE_ALL_F32 */
    }
}

static bool writable(lm_dtype t) {
    return t == LM_F32 || t == LM_F16 || t == LM_BF16 || t == LM_Q8_0 || t == LM_Q4_0 ||
           t == LM_Q4_1;
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

typedef struct job {
    const gguf_tensor *t;
    lm_dtype out;
    uint8_t *dst;
    size_t in_row, out_row;
    int64_t n_rows;
    const lm_adapter_pair *pr;   /* NULL: no merge */
    int rank;
    float mul;                   /* scale * alpha / rank */
    float *scratch;              /* [n_threads, 3, ne0]: the row, W, D */
    /* with pr, per row o: <M - W, D> and |D|^2 (lm_merge_report), summed by
     * the caller in row order so the sum does not depend on the threads */
    double *dot, *dsq;           /* [n_rows] */
} job;

static void convert_rows(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks;
    const job *j = ctx;
    const int64_t k = j->t->ne[0];
    float *row = j->scratch + (size_t)thread * 3 * (size_t)k;
    float *w = row + k, *d = w + k;
    const int64_t r0 = (int64_t)task * ROWS_PER_TASK;
    const int64_t r1 = r0 + ROWS_PER_TASK < j->n_rows ? r0 + ROWS_PER_TASK : j->n_rows;
    const uint8_t *src = j->t->data;
    for (int64_t o = r0; o < r1; o++) {
        lm_dequant_row(j->t->type, src + (size_t)o * j->in_row, row, k);
        if (j->pr) {   /* row o of W += mul * B[o, :] A  (A[r, k]) */
            memcpy(w, row, sizeof *w * (size_t)k);
            const float *b = (const float *)j->pr->b + (size_t)o * (size_t)j->rank;
            for (int r = 0; r < j->rank; r++) {
                const float br = j->mul * b[r];
                const float *ar = (const float *)j->pr->a + (size_t)r * (size_t)k;
                for (int64_t c = 0; c < k; c++) row[c] += br * ar[c];
            }
        }
        uint8_t *q = j->dst + (size_t)o * j->out_row;
        lm_quant_row(j->out, row, q, k);
        if (j->pr) {   /* D as added in f32; row becomes M, what was written */
            for (int64_t c = 0; c < k; c++) d[c] = row[c] - w[c];
            lm_dequant_row(j->out, q, row, k);
            double dot = 0, dsq = 0;
            for (int64_t c = 0; c < k; c++) {
                dot += (double)(row[c] - w[c]) * d[c];
                dsq += (double)d[c] * d[c];
            }
            j->dot[o] = dot;
            j->dsq[o] = dsq;
        }
    }
}

/* The type tensor t is stored in; *fallback when rows are not whole blocks. */
static lm_dtype target_type(const gguf_tensor *t, const lm_convert_opts *o, int *fallback) {
    *fallback = 0;
    lm_dtype ty = o->type;
    if (o->kind == LM_CONVERT_MODEL) {
        if (t->n_dims <= 1) return LM_F32;
        if (!strcmp(t->name, "token_embd.weight")) ty = o->embd_type;
    }
    if (lm_dtype_row_bytes(ty, t->ne[0]) == 0) {
        *fallback = 1;
        return LM_F16;
    }
    return ty;
}

int lm_convert_write(const gguf_file *in, const char *out_path, const lm_convert_opts *o,
                     lm_merge_report *rep, lm_err *err) {
    if (rep) *rep = (lm_merge_report){1.0, 0};
    if (!writable(o->type) || !writable(o->embd_type)) {
        const char *n = lm_dtype_name(writable(o->type) ? o->embd_type : o->type);
        return lm_errf(err, "output type %s is not one of f32, f16, bf16, q8_0, q4_0, "
                       "q4_1", n ? n : "?");
    }
    const lm_adapter *a = o->adapter;
    if (a)
        for (int i = 0; i < a->n_layer * LM_ADAPT_N; i++)
            if (a->pairs[i].a && a->pairs[i].type != LM_F32)
                return lm_errf(err, "the adapter's factors must be F32 to be merged");
    int rc = -1;
    gguf_writer *w = gguf_writer_new();
    float *scratch = NULL;
    uint8_t *dst = NULL;
    double *acc = NULL;              /* [2, max_rows]: job.dot, job.dsq */
    double dot = 0, dsq = 0;         /* over every adapted row */
    int n_adapted = 0;
    if (!w) { lm_errf(err, "out of memory"); goto done; }
    if (gguf_copy_kvs(w, in, err) ||
        (o->kind == LM_CONVERT_MODEL &&
         (gguf_set_u32(w, "general.file_type", lm_convert_file_type(o->type), err) ||
          gguf_set_u32(w, "general.quantization_version", 2, err))))
        goto done;
    const int nt = lm_pool_threads(o->pool);
    int64_t max_k = 1, max_rows = 1;
    for (uint64_t i = 0; i < in->n_tensors; i++) {
        const gguf_tensor *t = &in->tensors[i];
        if (t->ne[0] > max_k) max_k = t->ne[0];
        if (pair_for(a, t->name) && t->ne[1] * t->ne[2] * t->ne[3] > max_rows)
            max_rows = t->ne[1] * t->ne[2] * t->ne[3];
    }
    if (!(scratch = malloc((size_t)nt * 3 * (size_t)max_k * sizeof *scratch))) {
        lm_errf(err, "out of memory for %d rows of %" PRId64 " floats", 3 * nt, max_k);
        goto done;
    }
    if (a && !(acc = malloc(2 * (size_t)max_rows * sizeof *acc))) {
        lm_errf(err, "out of memory for the merge report (%" PRId64 " rows)", max_rows);
        goto done;
    }
    for (uint64_t i = 0; i < in->n_tensors; i++) {
        const gguf_tensor *t = &in->tensors[i];
        int fallback;
        job j = {.t = t, .scratch = scratch, .pr = pair_for(a, t->name), .dot = acc,
                 .dsq = acc ? acc + max_rows : NULL};
        j.out = target_type(t, o, &fallback);
        if (!lm_dtype_supported((int)t->type) ||
            !(j.in_row = lm_dtype_row_bytes(t->type, t->ne[0]))) {
            const char *tn = lm_dtype_name((int)t->type);
            lm_errf(err, "%s: tensor '%s' has type %s (%d), which cannot be read (F32, F16, "
                    "BF16, Q8_0, Q4_0, Q4_1)", in->path, t->name, tn ? tn : "unknown",
                    (int)t->type);
            goto done;
        }
        if (j.pr) {
            j.rank = a->rank;
            j.mul = o->adapter_scale * a->alpha / (float)a->rank;
        }
        j.out_row = lm_dtype_row_bytes(j.out, t->ne[0]);
        j.n_rows = t->ne[1] * t->ne[2] * t->ne[3];
        const size_t nbytes = j.out_row * (size_t)j.n_rows;
        free(dst);
        if (!(dst = malloc(nbytes ? nbytes : 1))) {
            lm_errf(err, "%s: out of memory (%zu bytes)", t->name, nbytes);
            goto done;
        }
        j.dst = dst;
        if (t->type == j.out && !j.pr) {
            memcpy(dst, t->data, nbytes);   /* same type: bytes unchanged */
        } else {
            const int64_t tasks = (j.n_rows + ROWS_PER_TASK - 1) / ROWS_PER_TASK;
            lm_pool_run(o->pool, convert_rows, &j, (int)tasks);
        }
        if (j.pr) {
            for (int64_t r = 0; r < j.n_rows; r++) {
                dot += j.dot[r];
                dsq += j.dsq[r];
            }
            n_adapted++;
        }
        if (gguf_add_tensor(w, t->name, j.out, t->n_dims, t->ne, dst, nbytes, err)) goto done;
        if (o->on_tensor) o->on_tensor(o->user, t, j.out, fallback, i + 1, in->n_tensors);
    }
    free(dst);
    dst = NULL;
    const double kept = dsq > 0 ? dot / dsq : 1.0;
    if (rep) *rep = (lm_merge_report){kept, n_adapted};
    if (a && kept < o->min_kept) {
        lm_errf(err, "%s keeps %.0f%% of the adapter's change to the weights (its rounding "
                "step is larger than most of the change, which rounds back to the base); nothing "
                "written", lm_dtype_name(o->type), 100.0 * kept);
        goto done;
    }
    if (gguf_write(w, out_path, err)) goto done;
    rc = 0;
done:
    free(dst);
    free(acc);
    free(scratch);
    gguf_writer_free(w);
    return rc;
}
