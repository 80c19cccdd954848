/* `lemonpc quantize IN OUT TYPE [--threads N] [--embd TYPE]`: rewrites a
 * GGUF model with every 2-D (or higher) weight in TYPE -- dequantized from
 * whatever it was, requantized with lm_quant_row, so the result matches
 * llama.cpp's reference quantizers bit for bit -- and 1-D tensors (norms)
 * in F32. Metadata is copied; general.file_type is updated. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/pool.h"
#include "base/progress.h"
#include "cli/commands.h"
#include "model/gguf.h"

#define ROWS_PER_TASK 64

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc quantize IN.gguf OUT.gguf TYPE [--threads N] [--embd TYPE]\n\n"
            "Converts every weight matrix of a GGUF model to TYPE, one of\n"
            "  q8_0 q4_0 q4_1 f16 bf16 f32\n"
            "(dequantizing from whatever the input holds). 1-D tensors (norms) are\n"
            "stored as F32. Metadata is copied and general.file_type updated.\n\n"
            "  --threads N  worker threads (default: all CPUs)\n"
            "  --embd TYPE  type for token_embd.weight (default: TYPE); on tied models it\n"
            "               is also the output layer, where q8_0 keeps more quality\n"
            "  -h, --help   this text\n");
}

/* llama.cpp's LLAMA_FTYPE_* ("mostly TYPE") values for general.file_type. */
static uint32_t file_type_of(lm_dtype t) {
    switch (t) {
    case LM_F32: return 0;
    case LM_F16: return 1;
    case LM_Q4_0: return 2;
    case LM_Q4_1: return 3;
    case LM_Q8_0: return 7;
    case LM_BF16: return 32;
    default: return 0;
    }
}

static int parse_type(const char *s, lm_dtype *out) {
    int t = lm_dtype_parse(s);
    if (t < 0 || !lm_dtype_supported(t)) {
        fprintf(stderr, "lemonpc quantize: unknown type '%s' (expected q8_0, q4_0, q4_1, f16, bf16 or f32)\n", s);
        return -1;
    }
    *out = (lm_dtype)t;
    return 0;
}

typedef struct job {
    const gguf_tensor *t;
    lm_dtype out;
    uint8_t *dst;
    size_t in_row, out_row;
    int64_t n_rows;
    float *scratch; /* [n_threads, ne0] */
} job;

static void convert_rows(void *ctx, int task, int n_tasks, int thread) {
    (void)n_tasks;
    const job *j = ctx;
    int64_t ne0 = j->t->ne[0];
    float *tmp = j->scratch + (size_t)thread * (size_t)ne0;
    int64_t r0 = (int64_t)task * ROWS_PER_TASK;
    int64_t r1 = r0 + ROWS_PER_TASK < j->n_rows ? r0 + ROWS_PER_TASK : j->n_rows;
    const uint8_t *src = j->t->data;
    for (int64_t r = r0; r < r1; r++) {
        lm_dequant_row(j->t->type, src + (size_t)r * j->in_row, tmp, ne0);
        lm_quant_row(j->out, tmp, j->dst + (size_t)r * j->out_row, ne0);
    }
}

static lm_dtype target_type(const gguf_tensor *t, lm_dtype want, lm_dtype embd, int *fallback) {
    *fallback = 0;
    if (t->n_dims == 1) return LM_F32;
    lm_dtype ty = strcmp(t->name, "token_embd.weight") ? want : embd;
    if (lm_dtype_row_bytes(ty, t->ne[0]) == 0) {
        *fallback = 1;
        return LM_F16;
    }
    return ty;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int quantize(const char *in, const char *out, lm_dtype want, lm_dtype embd, int threads) {
    lm_err err;
    int rc = 1;
    double t0 = now_s();
    gguf_file *f = gguf_open(in, &err);
    gguf_writer *w = NULL;
    lm_pool *pool = NULL;
    float *scratch = NULL;
    uint8_t *dst = NULL;
    if (!f) goto fail;
    if (!(w = gguf_writer_new())) { lm_errf(&err, "out of memory"); goto fail; }
    if (!(pool = lm_pool_new(threads, &err))) goto fail;
    int nt = lm_pool_threads(pool);
    if (gguf_copy_kvs(w, f, &err) || gguf_set_u32(w, "general.file_type", file_type_of(want), &err)) goto fail;
    if (want != LM_F32 && want != LM_F16 && want != LM_BF16 && !gguf_find_kv(f, "general.quantization_version") &&
        gguf_set_u32(w, "general.quantization_version", 2, &err))
        goto fail;

    int64_t max_ne0 = 1;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].ne[0] > max_ne0) max_ne0 = f->tensors[i].ne[0];
    scratch = malloc((size_t)nt * (size_t)max_ne0 * sizeof *scratch);
    if (!scratch) { lm_errf(&err, "out of memory for %d rows of %" PRId64 " floats", nt, max_ne0); goto fail; }

    int count[64] = {0};
    lm_progress p;
    lm_progress_begin(&p, "quantize", (int64_t)f->n_tensors, "tensors");
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        int fallback;
        job j = {.t = t, .scratch = scratch};
        j.out = target_type(t, want, embd, &fallback);
        if (fallback)
            fprintf(stderr, "\nlemonpc quantize: %s: row length %" PRId64 " is not a multiple of %zu, stored as F16\n",
                    t->name, t->ne[0], lm_dtype_block_elems(want));
        j.in_row = lm_dtype_row_bytes(t->type, t->ne[0]);
        j.out_row = lm_dtype_row_bytes(j.out, t->ne[0]);
        j.n_rows = t->ne[1] * t->ne[2] * t->ne[3];
        size_t nbytes = j.out_row * (size_t)j.n_rows;
        free(dst);
        if (!(dst = malloc(nbytes ? nbytes : 1))) { lm_errf(&err, "%s: out of memory (%zu bytes)", t->name, nbytes); goto fail; }
        j.dst = dst;
        if (t->type == j.out) {
            memcpy(dst, t->data, nbytes); /* same type: bytes unchanged */
        } else {
            int64_t tasks = (j.n_rows + ROWS_PER_TASK - 1) / ROWS_PER_TASK;
            lm_pool_run(pool, convert_rows, &j, (int)tasks);
        }
        if (gguf_add_tensor(w, t->name, j.out, t->n_dims, t->ne, dst, nbytes, &err)) goto fail;
        count[(unsigned)j.out % 64]++;
        lm_progress_update(&p, (int64_t)i + 1, t->name);
    }
    lm_progress_end(&p);
    free(dst);
    dst = NULL;
    if (gguf_write(w, out, &err)) goto fail;

    gguf_file *g = gguf_open(out, &err); /* re-read: proves the output loads */
    if (!g) goto fail;
    printf("%s: %" PRIu64 " tensors (", out, g->n_tensors);
    for (int ty = 0, first = 1; ty < 64; ty++)
        if (count[ty]) { printf("%s%d %s", first ? "" : ", ", count[ty], lm_dtype_name(ty)); first = 0; }
    printf("), %.2f MB -> %.2f MB in %.1f s\n", (double)f->size / 1e6, (double)g->size / 1e6, now_s() - t0);
    gguf_close(g);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "lemonpc quantize: %s\n", err.msg);
    free(dst);
    free(scratch);
    lm_pool_free(pool);
    gguf_writer_free(w);
    gguf_close(f);
    return rc;
}

int cmd_quantize(int argc, char **argv) {
    const char *pos[3];
    int npos = 0, threads = 0;
    const char *embd_s = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--threads") || !strcmp(a, "-t")) {
            char *end;
            if (i + 1 >= argc) { fprintf(stderr, "lemonpc quantize: %s needs a number\n", a); return 2; }
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 1 || v > 1024) {
                fprintf(stderr, "lemonpc quantize: --threads '%s': expected a number from 1 to 1024\n", argv[i]);
                return 2;
            }
            threads = (int)v;
        } else if (!strcmp(a, "--embd")) {
            if (i + 1 >= argc) { fprintf(stderr, "lemonpc quantize: --embd needs a type\n"); return 2; }
            embd_s = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "lemonpc quantize: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (npos == 3) {
            fprintf(stderr, "lemonpc quantize: unexpected argument '%s'\n", a);
            usage(stderr);
            return 2;
        } else {
            pos[npos++] = a;
        }
    }
    if (npos != 3) { usage(stderr); return 2; }
    lm_dtype want, embd;
    if (parse_type(pos[2], &want)) return 2;
    embd = want;
    if (embd_s && parse_type(embd_s, &embd)) return 2;
    if (!strcmp(pos[0], pos[1])) {
        fprintf(stderr, "lemonpc quantize: input and output are the same file '%s'\n", pos[0]);
        return 2;
    }
    return quantize(pos[0], pos[1], want, embd, threads);
}
