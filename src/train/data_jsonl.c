/* JSONL conversations -> lm_sft_dataset (format and bad-line policy in data.h). */
#include <stdlib.h>
#include <string.h>

#include "train/chat_jsonl.h"
#include "train/data.h"

lm_sft_opts lm_sft_opts_default(void) {
    return (lm_sft_opts){.max_len = 0, .overlong = LM_SFT_TRUNCATE, .strict = false,
                         .max_skipped = 100, .warn = NULL, .warn_ctx = NULL};
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

/* A read line into the dataset: 0 kept, 1 a bad line (e set), -1 the
 * load fails (err set). */
static int take_line(loader *L, const lm_chat_line *l, lm_err *e, lm_err *err) {
    lm_sft_example ex = {0};
    int merges = 0;
    if (lm_sft_render(L->tok, l->msgs, l->n, &ex, &merges, e)) {
        lm_err_prefix(e, "%s:%d", L->name, l->line);
        return 1;
    }
    if (L->ds->n == L->cap) {
        int cap = L->cap ? L->cap * 2 : 64;
        lm_sft_example *p = realloc(L->ds->ex, (size_t)cap * sizeof *p);
        if (!p) {
            lm_sft_example_free(&ex);
            return lm_errf(err, "%s:%d: out of memory", L->name, l->line);
        }
        L->ds->ex = p;
        L->cap = cap;
    }
    ex.line = l->line;
    L->ds->ex[L->ds->n++] = ex;
    L->ds->stats.messages += (long)l->n;
    for (size_t k = 0; k < l->n; k++) L->ds->stats.assistant_turns += !strcmp(l->msgs[k].role, "assistant");
    L->ds->stats.header_merges += merges;
    return 0;
}

/* Every line of r (closed here) into L's dataset, under L's bad-line policy. */
static int take_all(loader *L, lm_chat_jsonl *r, lm_err *err) {
    if (!r) return -1;
    lm_chat_line l;
    lm_err e = {{0}};
    int rc, fail = 0;
    while (!fail && (rc = lm_chat_jsonl_next(r, &l, &e)) != LM_JSONL_END) {
        int bad = rc == LM_JSONL_OK ? take_line(L, &l, &e, err) : 1;
        if (bad < 0 || (bad && lm_jsonl_bad_line(&L->opts, L->name, &L->ds->stats.skipped, &e, err)))
            fail = 1;
    }
    lm_chat_jsonl_close(r);
    return fail ? -1 : 0;
}

/* Reads path, or buf[0..len) when path is NULL (name in messages). */
static int load(const char *name, const char *path, const char *buf, size_t len,
                const lm_tokenizer *t, const lm_sft_opts *opts, lm_sft_dataset **out, lm_err *err) {
    *out = NULL;
    loader L = {.name = name, .tok = t, .opts = opts ? *opts : lm_sft_opts_default()};
    if (!(L.ds = calloc(1, sizeof *L.ds))) return lm_errf(err, "out of memory");
    L.ds->pad_id = lm_sft_pad_id(t);
    /* lenient here: lm_jsonl_bad_line applies the trainer's policy to bad
     * lines and to lines that fail to render alike */
    lm_chat_jsonl_opts ro = {.strict = false, .sharegpt = true, .need = LM_CHAT_NEED_ASSISTANT};
    lm_chat_jsonl *r = path ? lm_chat_jsonl_open(path, &ro, err) : lm_chat_jsonl_open_mem(name, buf, len, &ro, err);
    if (take_all(&L, r, err)) {
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
