/* lm_logits: our forward pass (optionally with a runtime LoRA adapter) for the oracle tests.
 *
 *   lm_logits MODEL TOKENS [--adapter FILE] [--scale S] [--out FILE]
 *                     [--greedy N] [--steps FILE] [--threads N] [--ctx N]
 *                     [--trace FILE] [--kv f32|f16]
 *   lm_logits MODEL TURN|TURN|... --greedy N [--stop IDS] [--steps FILE] ...
 *
 * TOKENS is a comma-separated id list. Evaluates them in one batch with
 * logits for every position, writes them to FILE as raw little-endian f32
 * [n_tokens, n_vocab], then (with --greedy N) decodes N tokens greedily one
 * at a time (no stop token, so both sides decode exactly N). Prints
 * "n_vocab V" and "greedy id id ..." on stdout. --steps FILE writes the
 * logits each greedy pick was made from, [N, n_vocab] (row 0 = the last
 * prompt row, then one per decoded token). --trace FILE records the
 * prompt batch's named intermediates (lm_ctx_set_trace), each as
 * u32 name length, name, i32 rows, i32 cols, f32 data[rows*cols]. --kv
 * picks the KV cache's element type (f32, the default, or f16).
 *
 * With turns (separated by '|'), a chat as `lemonpc chat` computes it on
 * its cache: each turn's token lists (separated by ';', e.g. the system
 * turn the chat keeps cached apart, then the user's) are evaluated as one
 * batch each on top of what came before, then up to N tokens are decoded
 * greedily one at a time, until a pick is one of --stop's ids (printed, not
 * evaluated: the next turn begins with the reply's end). Prints
 * "greedy ids..." once per turn; --steps gets the logits of every pick,
 * turn after turn. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/adapter.h"
#include "model/llama.h"

static int parse_int(const char *s, const char *what, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "lm_logits: bad %s '%s'\n", what, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static void trace_write(void *user, const char *name, const float *data, int rows, int cols) {
    FILE *f = user;
    uint32_t len = (uint32_t)strlen(name);
    int32_t shape[2] = {rows, cols};
    fwrite(&len, sizeof len, 1, f);
    fwrite(name, 1, len, f);
    fwrite(shape, sizeof shape, 1, f);
    fwrite(data, sizeof(float), (size_t)rows * (size_t)cols, f);
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

/* "1,2,3" -> ids; NULL (after a message) on a malformed list. Stops at '|',
 * ';' or the end; *n gets the count (0 for an empty list). */
static int32_t *parse_ids(const char *s, size_t *n) {
    size_t cap = strlen(s) / 2 + 2;
    int32_t *tok = malloc(sizeof *tok * cap);
    *n = 0;
    if (!tok) { fprintf(stderr, "lm_logits: out of memory\n"); return NULL; }
    for (const char *p = s; *p && *p != '|' && *p != ';';) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX || (*end && *end != ',' && *end != '|' && *end != ';')) {
            fprintf(stderr, "lm_logits: bad token list\n");
            free(tok);
            return NULL;
        }
        tok[(*n)++] = (int32_t)v;
        p = *end == ',' ? end + 1 : end;
    }
    return tok;
}

static int run_segments(const char *model_path, const char *segs, const char *stop_arg, int n_greedy,
                        const char *steps_path, int threads, int n_ctx, lm_dtype kv_type) {
    size_t n_stop = 0, total = 0;
    int32_t *stop = parse_ids(stop_arg, &n_stop);
    if (!stop) return 2;
    for (const char *p = segs; p; p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL) total++;
    lm_err err = {0};
    int rc = 1;
    lm_model *m = lm_model_load(model_path, &err);
    lm_pool *pool = m ? lm_pool_new(threads, &err) : NULL;
    lm_ctx *c = pool ? lm_ctx_new_kv(m, n_ctx ? n_ctx : 2048, pool, kv_type, &err) : NULL;
    int V = m ? m->cfg.n_vocab : 0;
    float *row = c ? malloc(sizeof(float) * (size_t)V) : NULL;
    FILE *sf = NULL;
    int32_t *tok = NULL;
    if (!row) goto done;
    if (steps_path && !(sf = fopen(steps_path, "wb"))) {
        snprintf(err.msg, sizeof err.msg, "%s: cannot open", steps_path);
        goto done;
    }
    printf("n_vocab %d\n", V);
    const char *p = segs;
    for (size_t s = 0; s < total; s++, p = strchr(p, '|') ? strchr(p, '|') + 1 : p) {
        for (;;) { /* the turn's batches */
            size_t n = 0;
            free(tok);
            if (!(tok = parse_ids(p, &n))) { rc = 2; goto done; }
            if (n == 0) { snprintf(err.msg, sizeof err.msg, "turn %zu: an empty batch", s); goto done; }
            if (lm_eval(c, tok, (int)n, LM_LOGITS_LAST, row, &err)) goto done;
            const char *q = p + strcspn(p, "|;");
            if (*q != ';') break;
            p = q + 1;
        }
        printf("greedy");
        for (int i = 0; i < n_greedy; i++) {
            int32_t next = argmax(row, V);
            if (sf && fwrite(row, sizeof(float), (size_t)V, sf) != (size_t)V) {
                snprintf(err.msg, sizeof err.msg, "%s: cannot write", steps_path);
                goto done;
            }
            printf(" %d", next);
            int is_stop = 0;
            for (size_t k = 0; k < n_stop; k++) is_stop |= stop[k] == next;
            if (is_stop || i + 1 == n_greedy) break;
            if (lm_eval(c, &next, 1, LM_LOGITS_LAST, row, &err)) goto done;
        }
        printf("\n");
    }
    if (sf) {
        int bad = fclose(sf);
        sf = NULL;
        if (bad) { snprintf(err.msg, sizeof err.msg, "%s: cannot write", steps_path); goto done; }
    }
    rc = 0;
done:
    if (rc == 1) fprintf(stderr, "lm_logits: %s\n", err.msg);
    if (sf) fclose(sf);
    free(tok);
    free(stop);
    free(row);
    lm_ctx_free(c);
    lm_pool_free(pool);
    lm_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: lm_logits MODEL TOKENS [--adapter F] [--scale S] [--out FILE] [--greedy N] "
                        "[--threads N] [--ctx N] [--kv f32|f16]\n");
        return 2;
    }
    const char *model_path = argv[1], *tok_arg = argv[2], *out_path = NULL, *adapter = NULL;
    const char *trace_path = NULL, *steps_path = NULL, *stop_arg = "";
    float scale = 1.0f;
    int n_greedy = 0, threads = 1, n_ctx = 0;
    lm_dtype kv_type = LM_F32;
    for (int i = 3; i < argc; i++) {
        if (i + 1 >= argc) { fprintf(stderr, "lm_logits: %s needs a value\n", argv[i]); return 2; }
        if (!strcmp(argv[i], "--out")) out_path = argv[++i];
        else if (!strcmp(argv[i], "--adapter")) adapter = argv[++i];
        else if (!strcmp(argv[i], "--trace")) trace_path = argv[++i];
        else if (!strcmp(argv[i], "--steps")) steps_path = argv[++i];
        else if (!strcmp(argv[i], "--stop")) stop_arg = argv[++i];
        else if (!strcmp(argv[i], "--scale")) scale = (float)atof(argv[++i]);
        else if (!strcmp(argv[i], "--kv")) {
            const char *t = argv[++i];
            if (!strcmp(t, "f32")) kv_type = LM_F32;
            else if (!strcmp(t, "f16")) kv_type = LM_F16;
            else { fprintf(stderr, "lm_logits: bad --kv '%s' (f32 or f16)\n", t); return 2; }
        }
        else if (!strcmp(argv[i], "--greedy")) { if (parse_int(argv[++i], "--greedy", 0, 1 << 20, &n_greedy)) return 2; }
        else if (!strcmp(argv[i], "--threads")) { if (parse_int(argv[++i], "--threads", 1, 256, &threads)) return 2; }
        else if (!strcmp(argv[i], "--ctx")) { if (parse_int(argv[++i], "--ctx", 1, 1 << 24, &n_ctx)) return 2; }
        else { fprintf(stderr, "lm_logits: unknown option %s\n", argv[i]); return 2; }
    }

    if (strpbrk(tok_arg, "|;")) {
        if (out_path || trace_path || adapter || n_greedy < 1) {
            fprintf(stderr, "lm_logits: segments take --greedy N, and no --out, --trace or --adapter\n");
            return 2;
        }
        return run_segments(model_path, tok_arg, stop_arg, n_greedy, steps_path, threads, n_ctx,
                            kv_type);
    }
    size_t n = 0;
    int32_t *tok = parse_ids(tok_arg, &n);
    if (!tok) return 2;
    if (n == 0) { fprintf(stderr, "lm_logits: no tokens\n"); free(tok); return 2; }

    lm_err err = {0};
    int rc = 1;
    lm_model *m = lm_model_load(model_path, &err);
    lm_pool *pool = m ? lm_pool_new(threads, &err) : NULL;
    lm_ctx *c = pool ? lm_ctx_new_kv(m, n_ctx ? n_ctx : (int)n + n_greedy, pool, kv_type, &err)
                     : NULL;
    lm_adapter *ad = c && adapter ? lm_adapter_load(m, adapter, &err) : NULL;
    int V = m ? m->cfg.n_vocab : 0;
    float *logits = NULL;
    if (!c || (adapter && (!ad || lm_ctx_set_adapter(c, ad, scale, &err)))) goto done;
    if (!(logits = malloc(sizeof(float) * n * (size_t)V))) goto done;
    FILE *tf = NULL;
    if (trace_path) {
        if (!(tf = fopen(trace_path, "wb"))) {
            snprintf(err.msg, sizeof err.msg, "%s: cannot open", trace_path);
            goto done;
        }
        lm_ctx_set_trace(c, trace_write, tf);
    }
    int ev = lm_eval(c, tok, (int)n, LM_LOGITS_ALL, logits, &err);
    lm_ctx_set_trace(c, NULL, NULL);
    if (tf && fclose(tf)) {
        snprintf(err.msg, sizeof err.msg, "%s: cannot write", trace_path);
        goto done;
    }
    if (ev) goto done;
    printf("n_vocab %d\n", V);
    if (out_path) {
        FILE *f = fopen(out_path, "wb");
        if (!f || fwrite(logits, sizeof(float) * (size_t)V, n, f) != n || fclose(f)) {
            snprintf(err.msg, sizeof err.msg, "%s: cannot write logits", out_path);
            goto done;
        }
    }
    if (n_greedy > 0) {
        FILE *sf = NULL;
        if (steps_path && !(sf = fopen(steps_path, "wb"))) {
            snprintf(err.msg, sizeof err.msg, "%s: cannot open", steps_path);
            goto done;
        }
        const float *row = logits + (n - 1) * (size_t)V;
        int32_t next = argmax(row, V);
        printf("greedy");
        int ok = 1;
        for (int i = 0; i < n_greedy; i++) {
            if (sf && fwrite(row, sizeof(float), (size_t)V, sf) != (size_t)V) ok = 0;
            printf(" %d", next);
            if (i + 1 == n_greedy) break;
            if (lm_eval(c, &next, 1, LM_LOGITS_LAST, logits, &err)) {
                if (sf) fclose(sf);
                goto done;
            }
            row = logits;
            next = argmax(row, V);
        }
        printf("\n");
        if (sf && (fclose(sf) || !ok)) {
            snprintf(err.msg, sizeof err.msg, "%s: cannot write", steps_path);
            goto done;
        }
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "lm_logits: %s\n", err.msg);
    free(logits);
    free(tok);
    lm_ctx_free(c);
    lm_adapter_free(ad);
    lm_pool_free(pool);
    lm_model_free(m);
    return rc;
}
