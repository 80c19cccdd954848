/* Curated (+ teacher) conversations -> filtered, split, persona-prefixed
 * training files (assemble.h). */
#include "datagen/assemble.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "base/fileio.h"
#include "check/filter.h"
#include "memory/recall.h"
#include "sheet/sheet.h"
#include "train/chat_jsonl.h"

static const char *KINDS[4] = {"in-world", "off-topic", "protective", "adversarial"};

static const char *sfield(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static uint64_t fnv1a(const char *s, uint64_t h) {
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Checks the shape a curated line must have beyond the reader's message
 * check: an optional system turn first, then user and assistant
 * alternating, ending with the assistant. */
static int check_conv(const lm_chat_line *l, lm_err *err) {
    const char *prev = NULL;
    for (size_t i = 0; i < l->n; i++) {
        const char *r = l->msgs[i].role;
        if (!strcmp(r, "system")) {
            if (i) return lm_errf(err, "messages[%zu]: a system turn only comes first", i);
            continue;
        }
        if (prev && !strcmp(prev, r)) return lm_errf(err, "messages[%zu]: two %s turns in a row", i, r);
        if (!prev && strcmp(r, "user")) return lm_errf(err, "messages[%zu]: the first turn is the user's", i);
        prev = r;
    }
    if (!prev || strcmp(prev, "assistant")) return lm_errf(err, "the last turn must be the assistant's");
    json_t *meta = json_object_get(l->root, "meta");
    if (meta && !json_is_object(meta)) return lm_errf(err, "\"meta\": expected an object");
    const char *kind = sfield(meta, "kind");
    if (kind) {
        int ok = 0;
        for (int k = 0; k < 4; k++) ok |= !strcmp(kind, KINDS[k]);
        if (!ok) return lm_errf(err, "meta.kind '%.40s': expected in-world, off-topic, protective or adversarial", kind);
    }
    return 0;
}

/* Runs the filters over every user/assistant pair; 1 if all pass. The
 * reasons of the first failing pair go to why. */
static int screen(const lm_filter_set *fs, json_t *o, char *why, size_t cap) {
    json_t *msgs = json_object_get(o, "messages"), *meta = json_object_get(o, "meta");
    json_t *asker = json_object_get(meta, "asker");
    const char *q = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *r = sfield(m, "role");
        if (!strcmp(r, "user")) { q = sfield(m, "content"); continue; }
        if (strcmp(r, "assistant") || !q) continue;
        lm_filter_sample x = {q, sfield(m, "content"), sfield(meta, "kind"), NULL,
                              json_is_string(asker) ? json_string_value(asker) : sfield(asker, "name"),
                              0, 0};
        lm_filter_result fr;
        if (!lm_filter_run(fs, &x, &fr)) {
            char reasons[1024];
            snprintf(why, cap, "turn %zu: %s", i, lm_filter_reasons(&fr, reasons, sizeof reasons));
            return 0;
        }
    }
    return 1;
}

/* First user line and first assistant line, for near-duplicates. */
static lm_filter_sample first_pair(json_t *o) {
    lm_filter_sample x = {0};
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(o, "messages"), i, m) {
        const char *r = sfield(m, "role");
        if (!x.question && !strcmp(r, "user")) x.question = sfield(m, "content");
        else if (x.question && !x.answer && !strcmp(r, "assistant")) x.answer = sfield(m, "content");
    }
    x.kind = sfield(json_object_get(o, "meta"), "kind");
    return x;
}

typedef struct outs {
    FILE *f[5];
    char path[5][4096];
} outs;

enum { O_TRAIN, O_VAL, O_TEST, O_REJ, O_TQ };
static const char *const OUT_NAMES[5] = {"train.jsonl", "val.jsonl", "test.jsonl", "rejected.jsonl",
                                         "test_questions.jsonl"};

int lm_assemble_add_lore(json_t *msgs, const lm_character *c, const lm_world *w,
                         const lm_tokenizer *t, lm_err *err) {
    size_t n = json_array_size(msgs), last = n;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(sfield(json_array_get(msgs, i), "role") ?: "", "user")) last = i;
    if (last == n) return 0;
    json_t *prev = last ? json_array_get(msgs, last - 1) : NULL;
    if (prev && !strcmp(sfield(prev, "role") ?: "", "system") &&
        !strncmp(sfield(prev, "content") ?: "", LM_RECALL_HEADING, strlen(LM_RECALL_HEADING)))
        return 0;
    const char **turns = malloc((n + 1) * sizeof *turns);
    if (!turns) return lm_errf(err, "out of memory");
    size_t nt = 0;
    for (size_t i = 0; i < last; i++) {
        json_t *m = json_array_get(msgs, i);
        if (strcmp(sfield(m, "role") ?: "", "system")) turns[nt++] = sfield(m, "content") ?: "";
    }
    char *block = NULL;
    int rc = lm_recall_lore(c ? &c->lore : NULL, w ? &w->lore : NULL, t, turns, nt,
                            sfield(json_array_get(msgs, last), "content") ?: "", &block, err);
    free(turns);
    if (rc) return -1;
    if (!block) return 0;
    rc = json_array_insert_new(msgs, last, json_pack("{s:s, s:s}", "role", "system", "content", block));
    free(block);
    if (rc) return lm_errf(err, "out of memory");
    return 1;
}

static int put_line(FILE *f, json_t *o, lm_err *err) {
    char *s = json_dumps(o, JSON_COMPACT);
    int rc = s && fprintf(f, "%s\n", s) > 0 ? 0 : lm_errf(err, "cannot write a line (disk full?)");
    free(s);
    return rc;
}

/* The test conversation as an eval question (eval.h's format). */
static json_t *as_question(json_t *conv, const char *id) {
    json_t *msgs = json_object_get(conv, "messages"), *meta = json_object_get(conv, "meta");
    size_t n = json_array_size(msgs), last_user = 0;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(sfield(json_array_get(msgs, i), "role"), "user")) last_user = i;
    json_t *hist = json_array();
    for (size_t i = 0; i < last_user; i++) {
        json_t *m = json_array_get(msgs, i);
        if (strcmp(sfield(m, "role"), "system")) json_array_append(hist, m);
    }
    json_t *q = json_pack("{s:s, s:s, s:s}", "id", id, "question",
                          sfield(json_array_get(msgs, last_user), "content"), "category",
                          sfield(meta, "kind") ? sfield(meta, "kind") : "in-world");
    if (sfield(meta, "asker")) json_object_set(q, "asker", json_object_get(meta, "asker"));
    if (sfield(meta, "location")) json_object_set(q, "location", json_object_get(meta, "location"));
    if (json_array_size(hist)) json_object_set(q, "history", hist);
    json_decref(hist);
    return q;
}

/* One input file through the filters, the dedup store and the split. */
static int take_file(const char *path, bool curated, const lm_assemble_opts *o,
                     const lm_character *c, const lm_world *w, const lm_filter_set *fs,
                     lm_dedup *dd, outs *out, lm_assemble_stats *st, lm_err *err) {
    /* strict: a curated file is the writer's, and a line of it silently
     * lost would be a hole in the character */
    lm_chat_jsonl_opts ro = {.strict = true};
    lm_chat_jsonl *in = lm_chat_jsonl_open(path, &ro, err);
    if (!in) return -1;
    int rc = 0, got;
    lm_chat_line l;
    while (rc == 0 && (got = lm_chat_jsonl_next(in, &l, err)) != LM_JSONL_END) {
        json_t *conv = l.root;
        size_t line = (size_t)l.line;
        if (got < 0 || check_conv(&l, err)) {
            if (got >= 0) lm_err_prefix(err, "%s:%zu", path, line);
            rc = -1;
            break;
        }
        st->read++;
        json_t *meta = json_object_get(conv, "meta");
        if (!meta) json_object_set_new(conv, "meta", meta = json_object());
        json_object_set_new(meta, "source", json_sprintf("%s:%zu", path, line));
        json_object_set_new(meta, "origin", json_string(curated ? "curated" : "teacher"));
        char why[1200];
        lm_filter_sample x = first_pair(conv);
        lm_filter_result fr = {.pass = 1};   /* lm_dedup_check only clears it */
        int pass = screen(fs, conv, why, sizeof why);
        if (pass && lm_dedup_check(dd, &x, &fr) == 0) {
            char reasons[1024];
            snprintf(why, sizeof why, "%s", lm_filter_reasons(&fr, reasons, sizeof reasons));
            pass = 0;
            st->duplicates++;
        }
        if (!pass) {
            st->rejected++;
            json_object_set_new(meta, "rejected", json_string(why));
            rc = put_line(out->f[O_REJ], conv, err);
            continue;
        }
        if (lm_dedup_add(dd, &x, err) < 0) { rc = -1; break; }
        /* The split: a hash of the seed and the id, stable as data grows. */
        char key[64];
        snprintf(key, sizeof key, "%llu:", (unsigned long long)o->seed);
        const char *id = sfield(meta, "id");
        uint64_t h = fnv1a(key, 1469598103934665603ull);
        if (id) h = fnv1a(id, h);
        else {
            char *s = json_dumps(json_object_get(conv, "messages"), JSON_COMPACT);
            h = fnv1a(s ? s : "", h);
            free(s);
        }
        int b = (int)(h % 100);
        int which = b < o->val_pct ? O_VAL : b < o->val_pct + o->test_pct ? O_TEST : O_TRAIN;
        /* the persona policy's system turn, unless the line brings one */
        json_t *msgs = json_object_get(conv, "messages");
        if (strcmp(sfield(json_array_get(msgs, 0), "role"), "system")) {
            lm_scene sc = {sfield(meta, "asker"), sfield(meta, "location")};
            char *sys = lm_persona_system(c, w, (lm_persona_mode)o->persona, &sc, err);
            if (!sys && err->msg[0]) { rc = -1; break; }
            if (sys) json_array_insert_new(msgs, 0, json_pack("{s:s, s:s}", "role", "system", "content", sys));
            free(sys);
        }
        if (o->tok) {
            int added = lm_assemble_add_lore(msgs, c, w, o->tok, err);
            if (added < 0) { rc = -1; break; }
            st->with_lore += (size_t)added;
        }
        size_t users = 0, i;
        json_t *m;
        json_array_foreach(msgs, i, m) users += !strcmp(sfield(m, "role"), "user");
        st->multi_turn += users > 1;
        const char *kind = sfield(meta, "kind");
        for (int kk = 0; kk < 4; kk++) st->per_kind[kk] += kind ? !strcmp(kind, KINDS[kk]) : kk == 0;
        rc = put_line(out->f[which], conv, err);
        if (which == O_TRAIN) st->train++;
        else if (which == O_VAL) st->val++;
        else {
            st->test++;
            char qid[128];
            snprintf(qid, sizeof qid, "%s", id ? id : "");
            if (!id) snprintf(qid, sizeof qid, "test-%zu", st->test);
            json_t *q = as_question(conv, qid);
            if (rc == 0) rc = put_line(out->f[O_TQ], q, err);
            json_decref(q);
        }
    }
    lm_chat_jsonl_close(in);
    return rc;
}

int lm_assemble(const lm_assemble_opts *o, const lm_character *c, const lm_world *w,
                lm_assemble_stats *st, lm_err *err) {
    memset(st, 0, sizeof *st);
    if (o->n_files + o->n_extra == 0) return lm_errf(err, "dataset: no conversation files");
    if (o->test_pct < 0 || o->val_pct < 0 || o->test_pct + o->val_pct >= 100)
        return lm_errf(err, "dataset: test and validation shares must leave some training data");
    if (mkdir(o->out, 0777) && errno != EEXIST) return lm_errno(err, "%s: cannot create the folder", o->out);
    lm_filter_config cfg;
    lm_filter_config_default(&cfg);
    lm_filter_set *fs = lm_filter_set_new(&cfg, c, err);
    lm_dedup *dd = fs ? lm_dedup_new(&cfg, err) : NULL;
    outs out = {0};
    int rc = fs && dd ? 0 : -1;
    for (int i = 0; rc == 0 && i < 5; i++) {
        snprintf(out.path[i], sizeof out.path[i], "%s/%s.tmp", o->out, OUT_NAMES[i]);
        if (!(out.f[i] = fopen(out.path[i], "w"))) rc = lm_errno(err, "%s", out.path[i]);
    }
    for (size_t i = 0; rc == 0 && i < o->n_files; i++)
        rc = take_file(o->files[i], true, o, c, w, fs, dd, &out, st, err);
    for (size_t i = 0; rc == 0 && i < o->n_extra; i++)
        rc = take_file(o->extra[i], false, o, c, w, fs, dd, &out, st, err);
    if (rc == 0 && st->train == 0) rc = lm_errf(err, "dataset: no conversation passed the filters (see %s/rejected.jsonl)", o->out);
    /* all files or none: each is renamed into place only when all are whole */
    for (int i = 0; i < 5; i++) {
        if (!out.f[i]) continue;
        int bad = fflush(out.f[i]) || fsync(fileno(out.f[i]));
        bad |= fclose(out.f[i]) != 0;
        out.f[i] = NULL;
        if (bad && rc == 0) rc = lm_errno(err, "%s", out.path[i]);
    }
    for (int i = 0; i < 5; i++) {
        char final[4096];
        snprintf(final, sizeof final, "%s/%s", o->out, OUT_NAMES[i]);
        if (rc == 0 && rename(out.path[i], final)) rc = lm_errno(err, "%s", final);
        if (rc) unlink(out.path[i]);
    }
    if (rc == 0) {
        json_t *js = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I}, s:s, s:I}",
                               "read", (json_int_t)st->read, "rejected", (json_int_t)st->rejected,
                               "duplicates", (json_int_t)st->duplicates, "train", (json_int_t)st->train,
                               "val", (json_int_t)st->val, "test", (json_int_t)st->test,
                               "multi_turn", (json_int_t)st->multi_turn, "kinds", KINDS[0],
                               (json_int_t)st->per_kind[0], KINDS[1], (json_int_t)st->per_kind[1], KINDS[2],
                               (json_int_t)st->per_kind[2], KINDS[3], (json_int_t)st->per_kind[3],
                               "persona", lm_persona_mode_name((lm_persona_mode)o->persona), "seed",
                               (json_int_t)o->seed);
        /* null without a tokenizer: no block was looked for */
        if (js) json_object_set_new(js, "with_lore", o->tok ? json_integer((json_int_t)st->with_lore) : json_null());
        char *s = json_dumps(js, JSON_INDENT(2));
        char p[4096];
        snprintf(p, sizeof p, "%s/stats.json", o->out);
        rc = s ? lm_write_file_atomic(p, s, strlen(s), err) : lm_errf(err, "out of memory");
        free(s);
        json_decref(js);
    }
    lm_dedup_free(dd);
    lm_filter_set_free(fs);
    return rc;
}
