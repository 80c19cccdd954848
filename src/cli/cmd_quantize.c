/* `lemonpc quantize IN OUT TYPE [--threads N] [--embd TYPE]`: the model
 * converter (model/convert.h, which `lemonpc merge` uses too) without an
 * adapter; this file parses the arguments and reports progress, the F16
 * fallbacks and the tensor counts of the file written. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/pool.h"
#include "base/progress.h"
#include "cli/commands.h"
#include "model/convert.h"
#include "gguf/gguf.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc quantize IN.gguf OUT.gguf TYPE [--threads N] [--embd TYPE]\n\n"
            "Converts every weight matrix of a GGUF model to TYPE, one of\n"
            "  q8_0 q4_0 q4_1 f16 bf16 f32\n"
            "(dequantizing from whatever the input holds). 1-D tensors (norms) are\n"
            "stored as F32, a matrix already TYPE is copied unchanged. Metadata is\n"
            "copied, general.file_type and general.quantization_version set.\n\n"
            "  --threads N  worker threads (default: all CPUs)\n"
            "  --embd TYPE  type for token_embd.weight (default: TYPE); on tied models it\n"
            "               is also the output layer, where q8_0 keeps more quality\n"
            "  -h, --help   this text\n");
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

typedef struct report {
    lm_progress p;
    lm_dtype want, embd;
    int count[64];   /* tensors written per type */
} report;

static void on_tensor(void *user, const gguf_tensor *t, lm_dtype out, int fallback,
                      uint64_t done, uint64_t total) {
    (void)total;
    report *r = user;
    if (fallback)
        fprintf(stderr, "\nlemonpc quantize: %s: row length %" PRId64 " is not a multiple of "
                "%zu, stored as F16\n", t->name, t->ne[0],
                lm_dtype_block_elems(strcmp(t->name, "token_embd.weight") ? r->want : r->embd));
    r->count[(unsigned)out % 64]++;
    lm_progress_update(&r->p, (int64_t)done, t->name);
}

static int quantize(const char *in, const char *out, lm_dtype want, lm_dtype embd, int threads) {
    lm_err err;
    int rc = 1;
    double t0 = lm_now_s();
    gguf_file *f = gguf_open(in, &err);
    lm_pool *pool = NULL;
    if (!f) goto fail;
    if (!(pool = lm_pool_new(threads, &err))) goto fail;
    report r = {.want = want, .embd = embd};
    lm_convert_opts o = {.type = want, .embd_type = embd, .pool = pool, .on_tensor = on_tensor,
                         .user = &r};
    lm_progress_begin(&r.p, "quantize", (int64_t)f->n_tensors, "tensors");
    int crc = lm_convert_write(f, out, &o, NULL, &err);
    lm_progress_end(&r.p);
    if (crc) goto fail;

    gguf_file *g = gguf_open(out, &err); /* re-read: proves the output loads */
    if (!g) goto fail;
    printf("%s: %" PRIu64 " tensors (", out, g->n_tensors);
    for (int ty = 0, first = 1; ty < 64; ty++)
        if (r.count[ty]) { printf("%s%d %s", first ? "" : ", ", r.count[ty], lm_dtype_name(ty)); first = 0; }
    printf("), %.2f MB -> %.2f MB in %.1f s\n", (double)f->size / 1e6, (double)g->size / 1e6, lm_now_s() - t0);
    gguf_close(g);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "lemonpc quantize: %s\n", err.msg);
    lm_pool_free(pool);
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
