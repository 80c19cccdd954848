/* JSONL conversations -> lm_sft_dataset (format and bad-line policy in data.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/fileio.h"
#include "train/data.h"

lm_sft_opts lm_sft_opts_default(void) {
    return (lm_sft_opts){.max_len = 0, .overlong = LM_SFT_TRUNCATE, .strict = false,
                         .max_skipped = 100, .warn = NULL, .warn_ctx = NULL};
}

/* Field names of the two accepted shapes. */
typedef struct shape {
    const char *list, *role, *content;
    const char *names[3];   /* accepted role spellings -> system, user, assistant */
    const char *alias[3];
    const char *expect;
} shape;

static const shape OPENAI = {"messages", "role", "content",
                             {"system", "user", "assistant"}, {NULL, NULL, NULL},
                             "system/user/assistant"};
static const shape SHAREGPT = {"conversations", "from", "value",
                               {"system", "human", "gpt"}, {NULL, "user", "assistant"},
                               "system/human/gpt"};
static const char *const ROLES[3] = {"system", "user", "assistant"};

/* Parses one line into msgs (pointing into the json tree). Returns the
 * count, or -1 with err set to "field: problem". */
static int parse_conv(json_t *root, lm_chat_msg **msgs, lm_err *err) {
    *msgs = NULL;
    if (!json_is_object(root)) return lm_errf(err, "expected a JSON object per line");
    const shape *sh = &OPENAI;
    json_t *list = json_object_get(root, "messages");
    if (!list && json_object_get(root, "conversations")) {
        sh = &SHAREGPT;
        list = json_object_get(root, "conversations");
    }
    if (!list) return lm_errf(err, "no \"messages\" (or ShareGPT \"conversations\") field");
    if (!json_is_array(list)) return lm_errf(err, "%s: expected an array", sh->list);
    size_t n = json_array_size(list);
    if (n == 0) return lm_errf(err, "%s: empty", sh->list);
    if (n > 1u << 20) return lm_errf(err, "%s: %zu messages is too many", sh->list, n);
    lm_chat_msg *m = calloc(n, sizeof *m);
    if (!m) return lm_errf(err, "out of memory");
    int assistants = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(list, i);
        if (!json_is_object(o)) {
            free(m);
            return lm_errf(err, "%s[%zu]: expected an object", sh->list, i);
        }
        json_t *r = json_object_get(o, sh->role), *c = json_object_get(o, sh->content);
        if (!json_is_string(r)) {
            free(m);
            return lm_errf(err, "%s[%zu].%s: %s", sh->list, i, sh->role,
                           r ? "expected a string" : "missing");
        }
        const char *rs = json_string_value(r);
        int k = -1;
        for (int j = 0; j < 3; j++)
            if (!strcmp(rs, sh->names[j]) || (sh->alias[j] && !strcmp(rs, sh->alias[j]))) k = j;
        if (k < 0) {
            lm_errf(err, "%s[%zu].%s: expected one of %s, got '%.64s'", sh->list, i, sh->role,
                    sh->expect, rs);
            free(m);
            return -1;
        }
        if (!json_is_string(c)) {
            free(m);
            return lm_errf(err, "%s[%zu].%s: %s", sh->list, i, sh->content,
                           c ? "expected a string" : "missing");
        }
        /* jansson keeps \u0000 out unless asked, but say so plainly if a
         * string ever holds one: rendering works on C strings. */
        if (strlen(json_string_value(c)) != json_string_length(c)) {
            free(m);
            return lm_errf(err, "%s[%zu].%s: contains a NUL character", sh->list, i, sh->content);
        }
        m[i] = (lm_chat_msg){ROLES[k], json_string_value(c)};
        assistants += k == 2;
    }
    if (!assistants) {
        free(m);
        return lm_errf(err, "%s: no assistant message, nothing to train", sh->list);
    }
    *msgs = m;
    return (int)n;
}

/* ---- JSONL lines (shared with dpo_data.c) ---------------------------------- */

static int each_mem(const char *buf, size_t len, lm_jsonl_line_fn fn, void *ctx, lm_err *err) {
    int lineno = 0;
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(buf + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - buf) : len;
        if (fn(ctx, buf + at, end - at, ++lineno, err)) return -1;
        at = end + 1;
    }
    return 0;
}

static int each_file(const char *path, lm_jsonl_line_fn fn, void *ctx, lm_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return lm_errno(err, "%s", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t k;
    int lineno = 0, rc = 0;
    errno = 0;
    while (rc == 0 && (k = getline(&line, &cap, f)) >= 0) rc = fn(ctx, line, (size_t)k, ++lineno, err);
    if (rc == 0 && ferror(f)) rc = lm_errno(err, "%s: read error after line %d", path, lineno);
    free(line);
    fclose(f);
    return rc ? -1 : 0;
}

int lm_jsonl_each(const char *path, const char *buf, size_t len, lm_jsonl_line_fn fn, void *ctx,
                  lm_err *err) {
    return path ? each_file(path, fn, ctx, err) : each_mem(buf, len, fn, ctx, err);
}

int lm_jsonl_parse_line(const char *line, size_t len, json_t **root, lm_err *e) {
    *root = NULL;
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n')) i++;
    if (i == len) return 1;
    json_error_t je;
    if (!(*root = json_loadb(line, lm_line_len(line, len), 0, &je)))
        return lm_errf(e, "invalid JSON at column %d: %s", je.column, je.text);
    return 0;
}

int lm_jsonl_bad_line(const lm_sft_opts *opts, const char *name, long *skipped, const lm_err *e,
                      lm_err *err) {
    if (opts->strict) return lm_errf(err, "%s", e->msg);
    (*skipped)++;
    if (opts->max_skipped >= 0 && *skipped > opts->max_skipped)
        return lm_errf(err, "%s: more than %ld bad lines, giving up; the last: %s", name,
                       opts->max_skipped, e->msg);
    if (opts->warn) opts->warn(opts->warn_ctx, e->msg);
    return 0;
}

int32_t lm_sft_pad_id(const lm_tokenizer *t) {
    int32_t pad = lm_tokenizer_eos(t);
    if (pad < 0) pad = lm_tokenizer_find(t, "<|im_end|>");
    return pad < 0 ? 0 : pad;
}

/* ---- the SFT loader -------------------------------------------------------- */

typedef struct loader {
    const char *name;
    const lm_tokenizer *tok;
    lm_sft_opts opts;
    lm_sft_dataset *ds;
    int cap;
} loader;

/* 0: line kept or skipped; -1: the load fails (err set). */
static int take_line(void *ctx, const char *line, size_t len, int lineno, lm_err *err) {
    loader *L = ctx;
    lm_err e = {{0}};
    json_t *root;
    int blank = lm_jsonl_parse_line(line, len, &root, &e);
    if (blank > 0) return 0;
    lm_chat_msg *msgs = NULL;
    int n = -1, merges = 0;
    lm_sft_example ex = {0};
    if (root) n = parse_conv(root, &msgs, &e);
    int rc = n < 0 ? -1 : lm_sft_render(L->tok, msgs, (size_t)n, &ex, &merges, &e);
    if (rc == 0 && L->ds->n == L->cap) {
        int cap = L->cap ? L->cap * 2 : 64;
        lm_sft_example *p = realloc(L->ds->ex, (size_t)cap * sizeof *p);
        if (!p) {
            lm_sft_example_free(&ex);
            free(msgs);
            json_decref(root);
            return lm_errf(err, "%s:%d: out of memory", L->name, lineno);
        }
        L->ds->ex = p;
        L->cap = cap;
    }
    if (rc == 0) {
        ex.line = lineno;
        L->ds->ex[L->ds->n++] = ex;
        L->ds->stats.messages += n;
        for (int k = 0; k < n; k++) L->ds->stats.assistant_turns += !strcmp(msgs[k].role, "assistant");
        L->ds->stats.header_merges += merges;
    }
    free(msgs);
    json_decref(root);
    if (rc == 0) return 0;
    lm_err_prefix(&e, "%s:%d", L->name, lineno);
    return lm_jsonl_bad_line(&L->opts, L->name, &L->ds->stats.skipped, &e, err);
}

/* Reads path, or buf[0..len) when path is NULL (name in messages). */
static int load(const char *name, const char *path, const char *buf, size_t len,
                const lm_tokenizer *t, const lm_sft_opts *opts, lm_sft_dataset **out, lm_err *err) {
    *out = NULL;
    loader L = {.name = name, .tok = t, .opts = opts ? *opts : lm_sft_opts_default()};
    if (!(L.ds = calloc(1, sizeof *L.ds))) return lm_errf(err, "out of memory");
    L.ds->pad_id = lm_sft_pad_id(t);
    if (lm_jsonl_each(path, buf, len, take_line, &L, err)) {
        lm_sft_dataset_free(L.ds);
        return -1;
    }
    lm_sft_dataset *ds = L.ds;
    for (int i = 0; i < ds->n; i++)
        if (ds->ex[i].n > ds->stats.longest) ds->stats.longest = ds->ex[i].n;
    if (L.opts.max_len > 0) lm_sft_dataset_fit(ds, L.opts.max_len, L.opts.overlong);
    lm_sft_dataset_recount(ds);
    if (ds->n == 0) {
        lm_errf(err, "%s: no usable conversation (%ld bad lines skipped, %ld dropped)", name,
                ds->stats.skipped, ds->stats.dropped);
        lm_sft_dataset_free(ds);
        return -1;
    }
    *out = ds;
    return 0;
}

int lm_sft_dataset_load_mem(const char *name, const char *buf, size_t len, const lm_tokenizer *t,
                            const lm_sft_opts *opts, lm_sft_dataset **out, lm_err *err) {
    return load(name, NULL, buf, len, t, opts, out, err);
}

int lm_sft_dataset_load(const char *path, const lm_tokenizer *t, const lm_sft_opts *opts,
                        lm_sft_dataset **out, lm_err *err) {
    return load(path, path, NULL, 0, t, opts, out, err);
}

void lm_sft_dataset_free(lm_sft_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n; i++) lm_sft_example_free(&ds->ex[i]);
    free(ds->ex);
    free(ds);
}
