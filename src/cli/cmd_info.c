/* `lemonpc info MODEL [--tensors] [--json]`: a GGUF file's metadata (long
 * arrays summarized), tensor totals by type, an architecture summary and,
 * with --tensors, the tensor table. --json prints everything, arrays in
 * full, for scripts and the oracle tests. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "cli/commands.h"
#include "gguf/gguf.h"

#define SUMMARY_ITEMS 3 /* array elements shown before "..." in text mode */

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc info MODEL.gguf [--tensors] [--json]\n\n"
            "Shows a GGUF model's metadata (long arrays summarized), its tensors\n"
            "counted by type, and a summary of the architecture.\n\n"
            "  --tensors  also list every tensor: name, type, shape, bytes, offset\n"
            "  --json     print everything as one JSON object (arrays in full)\n"
            "  -h, --help this text\n");
}

/* ---- value printing -------------------------------------------------- */

/* Writes bytes as the inside of a JSON string: valid UTF-8 is kept, control
 * characters escaped, invalid bytes become U+FFFD. */
static void put_json_bytes(FILE *out, const char *s, uint64_t n) {
    const unsigned char *p = (const unsigned char *)s;
    uint64_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c == '"' || c == '\\') { fprintf(out, "\\%c", c); i++; continue; }
        if (c == '\n') { fputs("\\n", out); i++; continue; }
        if (c == '\t') { fputs("\\t", out); i++; continue; }
        if (c == '\r') { fputs("\\r", out); i++; continue; }
        if (c < 0x20 || c == 0x7f) { fprintf(out, "\\u%04x", c); i++; continue; }
        if (c < 0x80) { fputc((int)c, out); i++; continue; }
        int len = lm_utf8_seq_len(p + i, n - i);
        if (!len) { fputs("\\ufffd", out); i++; continue; }
        fwrite(p + i, 1, (size_t)len, out);
        i += (uint64_t)len;
    }
}

static void put_json_str(FILE *out, const char *s, uint64_t n) {
    fputc('"', out);
    put_json_bytes(out, s, n);
    fputc('"', out);
}

/* Text mode: strings quoted, newlines shown as \n, very long ones cut. */
static void put_text_str(FILE *out, const char *s, uint64_t n) {
    uint64_t shown = n > 120 ? 120 : n;
    fputc('"', out);
    put_json_bytes(out, s, shown);
    fputc('"', out);
    if (shown < n) fprintf(out, "... (%" PRIu64 " bytes)", n);
}

static void put_double(FILE *out, double v, int json, int is_f32) {
    if (v != v || v - v != 0) { /* NaN or inf: JSON has no literal for them */
        fprintf(out, json ? "\"%g\"" : "%g", v);
        return;
    }
    fprintf(out, is_f32 ? "%.9g" : "%.17g", v);
}

static void put_array_elem(FILE *out, const gguf_kv *kv, uint64_t i, int json) {
    switch (kv->arr_type) {
    case GGUF_STRING:
        if (json) put_json_str(out, kv->arr_strs[i].ptr, kv->arr_strs[i].len);
        else put_text_str(out, kv->arr_strs[i].ptr, kv->arr_strs[i].len);
        break;
    case GGUF_F32: case GGUF_F64:
        put_double(out, gguf_arr_get_f64(kv, i), json, kv->arr_type == GGUF_F32);
        break;
    case GGUF_BOOL:
        fputs(gguf_arr_get_i64(kv, i) ? "true" : "false", out);
        break;
    case GGUF_U64:
        fprintf(out, "%" PRIu64, (uint64_t)gguf_arr_get_i64(kv, i));
        break;
    default:
        fprintf(out, "%" PRId64, gguf_arr_get_i64(kv, i));
        break;
    }
}

static void put_value(FILE *out, const gguf_kv *kv, int json) {
    switch (kv->type) {
    case GGUF_STRING:
        if (json) put_json_str(out, kv->v.s.ptr, kv->v.s.len);
        else put_text_str(out, kv->v.s.ptr, kv->v.s.len);
        return;
    case GGUF_BOOL: fputs(kv->v.b ? "true" : "false", out); return;
    case GGUF_F32: case GGUF_F64: put_double(out, kv->v.f, json, kv->type == GGUF_F32); return;
    case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64: fprintf(out, "%" PRId64, kv->v.i); return;
    case GGUF_ARRAY: {
        uint64_t n = kv->arr_n, shown = json || n <= SUMMARY_ITEMS + 1 ? n : SUMMARY_ITEMS;
        if (!json) fprintf(out, "[%s x %" PRIu64 "] ", gguf_type_name(kv->arr_type), n);
        fputc('[', out);
        for (uint64_t i = 0; i < shown; i++) {
            if (i) fputs(", ", out);
            put_array_elem(out, kv, i, json);
        }
        if (shown < n) fputs(", ...", out);
        fputc(']', out);
        return;
    }
    default: fprintf(out, "%" PRIu64, kv->v.u); return;
    }
}

/* ---- totals ---------------------------------------------------------- */

typedef struct type_total { int count; int64_t elems; uint64_t bytes; } type_total;

static int64_t n_elems(const gguf_tensor *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }

static void shape_str(char *buf, size_t cap, const gguf_tensor *t) {
    size_t n = 0;
    buf[0] = '\0';
    for (int d = 0; d < t->n_dims && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, d ? ", %" PRId64 : "%" PRId64, t->ne[d]);
}

/* Architecture keys are "<arch>.<field>"; prints the ones present. */
static void print_arch(FILE *out, const gguf_file *f) {
    lm_err err;
    char *arch = gguf_get_str(f, "general.architecture", &err);
    if (!arch) { fprintf(out, "architecture: (general.architecture missing)\n"); return; }
    static const struct { const char *field, *label; } F[] = {
        {"block_count", "layers"}, {"embedding_length", "hidden"}, {"feed_forward_length", "ffn"},
        {"attention.head_count", "heads"}, {"attention.head_count_kv", "kv heads"},
        {"rope.dimension_count", "rope dims"}, {"vocab_size", "vocab"}, {"context_length", "context"},
    };
    fprintf(out, "architecture: %s", arch);
    char key[128];
    for (size_t i = 0; i < sizeof F / sizeof F[0]; i++) {
        snprintf(key, sizeof key, "%s.%s", arch, F[i].field);
        uint32_t v;
        if (gguf_find_kv(f, key) && !gguf_get_u32(f, key, &v, &err)) fprintf(out, ", %s %u", F[i].label, v);
    }
    float x;
    snprintf(key, sizeof key, "%s.rope.freq_base", arch);
    if (gguf_find_kv(f, key) && !gguf_get_f32(f, key, &x, &err)) fprintf(out, ", rope base %g", x);
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    if (gguf_find_kv(f, key) && !gguf_get_f32(f, key, &x, &err)) fprintf(out, ", rms eps %g", x);
    if (gguf_find_tensor(f, "token_embd.weight"))
        fprintf(out, gguf_find_tensor(f, "output.weight") ? ", separate output.weight" : ", tied embeddings");
    fputc('\n', out);
    free(arch);
}

static void print_text(FILE *out, const gguf_file *f, int tensors) {
    type_total tot[64] = {{0}};
    int64_t all_elems = 0;
    uint64_t all_bytes = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        type_total *tt = &tot[(unsigned)t->type % 64];
        tt->count++;
        tt->elems += n_elems(t);
        tt->bytes += t->nbytes;
        all_elems += n_elems(t);
        all_bytes += t->nbytes;
    }
    fprintf(out, "file: %s (%zu bytes), GGUF v%u, alignment %zu, tensor data at offset %zu\n",
            f->path, f->size, f->version, f->alignment, f->data_offset);
    print_arch(out, f);
    fprintf(out, "tensors: %" PRIu64 ", %" PRId64 " parameters, %.2f MB", f->n_tensors, all_elems,
            (double)all_bytes / 1e6);
    if (all_elems) fprintf(out, " (%.2f bits/parameter)", 8.0 * (double)all_bytes / (double)all_elems);
    fputc('\n', out);
    for (int ty = 0; ty < 64; ty++) {
        if (!tot[ty].count) continue;
        fprintf(out, "  %-5s %4d tensors  %11" PRId64 " parameters  %8.2f MB\n", lm_dtype_name(ty),
                tot[ty].count, tot[ty].elems, (double)tot[ty].bytes / 1e6);
    }
    fprintf(out, "metadata: %" PRIu64 " keys\n", f->n_kv);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        fprintf(out, "  %s (%s) = ", kv->key, gguf_type_name(kv->type));
        put_value(out, kv, 0);
        fputc('\n', out);
    }
    if (!tensors) return;
    fprintf(out, "%-34s %-5s %-22s %12s %12s\n", "tensor", "type", "shape (ne)", "bytes", "offset");
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        char shape[96];
        shape_str(shape, sizeof shape, t);
        fprintf(out, "%-34s %-5s %-22s %12zu %12" PRIu64 "\n", t->name, lm_dtype_name(t->type), shape,
                t->nbytes, t->offset);
    }
}

static void print_json(FILE *out, const gguf_file *f) {
    fputs("{\"path\": ", out);
    put_json_str(out, f->path, strlen(f->path));
    fprintf(out, ", \"size\": %zu, \"version\": %u, \"alignment\": %zu, \"data_offset\": %zu,\n",
            f->size, f->version, f->alignment, f->data_offset);
    fputs(" \"metadata\": [\n", out);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        fputs("  {\"key\": ", out);
        put_json_str(out, kv->key, strlen(kv->key));
        fprintf(out, ", \"type\": \"%s\"", gguf_type_name(kv->type));
        if (kv->type == GGUF_ARRAY)
            fprintf(out, ", \"elem_type\": \"%s\", \"count\": %" PRIu64, gguf_type_name(kv->arr_type), kv->arr_n);
        fputs(", \"value\": ", out);
        put_value(out, kv, 1);
        fputs(i + 1 < f->n_kv ? "},\n" : "}\n", out);
    }
    fputs(" ],\n \"tensors\": [\n", out);
    int64_t all_elems = 0;
    uint64_t all_bytes = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        char shape[96];
        shape_str(shape, sizeof shape, t);
        fputs("  {\"name\": ", out);
        put_json_str(out, t->name, strlen(t->name));
        fprintf(out, ", \"type\": \"%s\", \"type_id\": %d, \"shape\": [%s], \"offset\": %" PRIu64
                     ", \"nbytes\": %zu, \"n_elements\": %" PRId64 "}%s\n",
                lm_dtype_name(t->type), (int)t->type, shape, t->offset, t->nbytes, n_elems(t),
                i + 1 < f->n_tensors ? "," : "");
        all_elems += n_elems(t);
        all_bytes += t->nbytes;
    }
    fprintf(out, " ],\n \"n_tensors\": %" PRIu64 ", \"n_elements\": %" PRId64 ", \"tensor_bytes\": %" PRIu64 "}\n",
            f->n_tensors, all_elems, all_bytes);
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    int tensors = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(stdout); return 0; }
        if (!strcmp(argv[i], "--tensors")) tensors = 1;
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "lemonpc info: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (path) {
            fprintf(stderr, "lemonpc info: one model at a time ('%s' and '%s' given)\n", path, argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) { usage(stderr); return 2; }
    lm_err err;
    gguf_file *f = gguf_open(path, &err);
    if (!f) { fprintf(stderr, "lemonpc info: %s\n", err.msg); return 1; }
    if (json) print_json(stdout, f);
    else print_text(stdout, f, tensors);
    gguf_close(f);
    if (fflush(stdout)) { perror("lemonpc info: writing output"); return 1; }
    return 0;
}
