/* Blind review of two NPCs (blind.h). */
#include "eval/blind.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "base/strbuf.h"
#include "datagen/question.h"
#include "eval/eval.h"
#include "eval/report.h"

static const char *str_of(json_t *o, const char *k) {
    return json_string_value(json_object_get(o, k));
}

/* The NPC's name as its report gives it, else its folder. */
static char *label_of(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/report.json", dir);
    json_t *r = json_load_file(path, 0, NULL);
    const char *l = r ? str_of(r, "label") : NULL;
    char *s = strdup(l ? l : dir);
    json_decref(r);
    return s;
}

/* The questions of dir's report by id (asker, place, earlier turns), or an
 * empty object when the file cannot be read from here. */
static json_t *questions_of(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/report.json", dir);
    json_t *r = json_load_file(path, 0, NULL), *by_id = json_object();
    const char *qf = r ? str_of(r, "questions") : NULL;
    lm_err err = {{0}};
    json_t *qs = qf ? lm_eval_load_questions(qf, &err) : NULL;
    size_t i;
    json_t *q;
    json_array_foreach(qs, i, q) {
        json_t *id = json_object_get(q, "id");
        char buf[32];
        if (json_is_integer(id)) snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(id));
        json_object_set(by_id, json_is_string(id) ? json_string_value(id) : buf, q);
    }
    json_decref(qs);
    json_decref(r);
    return by_id;
}

static json_t *answers_by_id(const char *dir, lm_err *err) {
    json_t *arr = lm_eval_read_answers(dir), *by_id = json_object();
    if (!arr || !by_id) {
        json_decref(arr);
        json_decref(by_id);
        return lm_errf(err, "out of memory"), NULL;
    }
    if (!json_array_size(arr)) {
        json_decref(arr);
        json_decref(by_id);
        return lm_errf(err, "%s/answers.jsonl: no answers (run `lemonpc eval ... --out %s`)", dir,
                       dir), NULL;
    }
    size_t i;
    json_t *a;
    json_array_foreach(arr, i, a) json_object_set(by_id, str_of(a, "id"), a);
    json_decref(arr);
    return by_id;
}

static int write_json(const char *dir, const char *name, json_t *j, lm_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *s = json_dumps(j, JSON_INDENT(2));
    int rc = s ? lm_write_file_atomic(path, s, strlen(s), err) : lm_errf(err, "out of memory");
    free(s);
    return rc;
}

static int write_sb(const char *dir, const char *name, const lm_sb *b, lm_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (b->oom) return lm_errf(err, "out of memory");
    return lm_write_file_atomic(path, b->p ? b->p : "", b->len, err);
}

/* A reply quoted in markdown: each of its lines behind "> ". */
static void quote(lm_sb *b, const char *text) {
    lm_sb_str(b, "> ");
    for (const char *p = text; *p; p++) {
        if (*p == '\n') lm_sb_str(b, "\n> ");
        else lm_sb_add(b, p, 1);
    }
    lm_sb_str(b, "\n\n");
}

int lm_blind_write(const char *dir_a, const char *dir_b, const char *out, uint64_t seed,
                   lm_err *err) {
    int rc = -1;
    json_t *a = NULL, *b = NULL, *qs = NULL, *keys = json_array();
    json_t *same = json_object();
    char *la = label_of(dir_a), *lb = label_of(dir_b);
    const char **ids = NULL;
    lm_sb jl = {0}, md = {0};
    if (!keys || !same || !la || !lb) { lm_errf(err, "out of memory"); goto done; }
    if (!(a = answers_by_id(dir_a, err)) || !(b = answers_by_id(dir_b, err))) goto done;
    qs = questions_of(dir_a);
    /* the same questions on both sides, else the review compares nothing */
    const char *id;
    json_t *x;
    json_object_foreach(b, id, x)
        if (!json_object_get(a, id)) {
            lm_errf(err, "%s answers question %s, %s does not", dir_b, id, dir_a);
            goto done;
        }
    size_t n = 0, n_same = 0;
    if (!(ids = calloc(json_object_size(a) + 1, sizeof *ids))) { lm_errf(err, "out of memory"); goto done; }
    json_object_foreach(a, id, x) {
        json_t *y = json_object_get(b, id);
        if (!y) {
            lm_errf(err, "%s answers question %s, %s does not", dir_a, id, dir_b);
            goto done;
        }
        const char *ta = str_of(x, "answer"), *tb = str_of(y, "answer");
        if (ta && tb && strcmp(ta, tb)) {
            ids[n++] = id;
            continue;
        }
        /* the same reply from both: a tie no reader need see */
        const char *cat = str_of(x, "category") ? str_of(x, "category") : "in-world";
        json_object_set_new(same, cat, json_integer(json_integer_value(json_object_get(same, cat)) + 1));
        n_same++;
    }
    /* ids in the answers' own order are sorted by id (jansson keeps insertion
     * order only by chance): sort, then shuffle by the seed */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(ids[j - 1], ids[j]) > 0; j--) {
            const char *t = ids[j - 1];
            ids[j - 1] = ids[j];
            ids[j] = t;
        }
    uint64_t st = seed;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(lm_dg_next(&st) % i);
        const char *t = ids[i - 1];
        ids[i - 1] = ids[j];
        ids[j] = t;
    }
    lm_sb_printf(&md, "# Blind review: which reply is the better line?\n\n"
                      "%zu pairs of replies to the same line, by two NPCs, in an order and on "
                      "sides drawn at random (%zu lines both answered alike are left out). For "
                      "each, say which is the better line for the character to say, or tie. "
                      "Write one line per item to verdicts.jsonl in this folder: "
                      "`{\"item\": 1, \"better\": \"1\"}` (\"1\", \"2\" or \"tie\"), then "
                      "`lemonpc eval --unblind` on this folder. Do not open key.json before.\n\n",
                 n, n_same);
    for (size_t i = 0; i < n; i++) {
        json_t *x1 = json_object_get(a, ids[i]), *y1 = json_object_get(b, ids[i]);
        json_t *q = json_object_get(qs, ids[i]);
        bool flip = lm_dg_next(&st) & 1;
        json_t *r1 = flip ? y1 : x1, *r2 = flip ? x1 : y1;
        json_t *it = json_pack("{s:I, s:s*, s:s*, s:s*, s:O*, s:s, s:s}", "item", (json_int_t)(i + 1),
                               "line", str_of(x1, "question"), "asker", str_of(q, "asker"),
                               "location", str_of(q, "location"), "history",
                               json_object_get(q, "history"), "reply_1", str_of(r1, "answer"),
                               "reply_2", str_of(r2, "answer"));
        json_t *k = json_pack("{s:I, s:s, s:s, s:s}", "item", (json_int_t)(i + 1), "id", ids[i],
                              "category", str_of(x1, "category") ? str_of(x1, "category") : "in-world",
                              "reply_1", flip ? "b" : "a");
        /* The lorebook block both replies were made with (null: none), so
         * that preference pairs from this review (lemonpc pairs --review)
         * train on the prompt the replies answered; left out where the two
         * evals gave different blocks. */
        const char *lx = str_of(x1, "lore"), *ly = str_of(y1, "lore");
        if (k && (lx && ly ? !strcmp(lx, ly) : !lx && !ly))
            json_object_set_new(k, "lore", lx ? json_string(lx) : json_null());
        char *line = it ? json_dumps(it, JSON_COMPACT) : NULL;
        if (!it || !k || !line || json_array_append_new(keys, k)) {
            json_decref(it);
            free(line);
            lm_errf(err, "out of memory");
            goto done;
        }
        lm_sb_printf(&jl, "%s\n", line);
        free(line);
        lm_sb_printf(&md, "## %zu\n\n", i + 1);
        if (str_of(q, "asker") || str_of(q, "location"))
            lm_sb_printf(&md, "*%s%s%s*\n\n", str_of(q, "asker") ? str_of(q, "asker") : "",
                         str_of(q, "asker") && str_of(q, "location") ? ", " : "",
                         str_of(q, "location") ? str_of(q, "location") : "");
        size_t h;
        json_t *turn;
        json_array_foreach(json_object_get(q, "history"), h, turn)
            lm_sb_printf(&md, "%s: %s\n\n",
                         !strcmp(str_of(turn, "role") ? str_of(turn, "role") : "", "user") ? "Player" : "NPC",
                         str_of(turn, "content") ? str_of(turn, "content") : "");
        lm_sb_printf(&md, "**Line:** %s\n\n**1.**\n\n", str_of(x1, "question") ? str_of(x1, "question") : "");
        quote(&md, str_of(r1, "answer"));
        lm_sb_str(&md, "**2.**\n\n");
        quote(&md, str_of(r2, "answer"));
        json_decref(it);
    }
    char *sa = lm_eval_shown_path(dir_a), *sb = lm_eval_shown_path(dir_b);
    json_t *key = sa && sb ? json_pack("{s:s, s:s, s:[s, s], s:I, s:I, s:O, s:O}", "a", la, "b",
                                       lb, "dirs", sa, sb, "seed", (json_int_t)seed, "same",
                                       (json_int_t)n_same, "same_by_category", same, "items", keys)
                           : NULL;
    free(sa);
    free(sb);
    if (!key) { lm_errf(err, "out of memory"); goto done; }
    if (lm_mkdir_p(out, err) || write_sb(out, "items.jsonl", &jl, err) ||
        write_sb(out, "items.md", &md, err) || write_json(out, "key.json", key, err)) {
        json_decref(key);
        goto done;
    }
    json_decref(key);
    rc = 0;
done:
    free(ids);
    free(la);
    free(lb);
    lm_sb_free(&jl);
    lm_sb_free(&md);
    json_decref(a);
    json_decref(b);
    json_decref(qs);
    json_decref(keys);
    json_decref(same);
    return rc;
}

double lm_sign_test_p(int wins_a, int wins_b) {
    int n = wins_a + wins_b, k = wins_a < wins_b ? wins_a : wins_b;
    if (n <= 0) return 1;
    /* sum of C(n, i) / 2^n for i <= k, in logs: n may be in the thousands */
    double tail = 0;
    for (int i = 0; i <= k; i++)
        tail += exp(lgamma(n + 1.0) - lgamma(i + 1.0) - lgamma(n - i + 1.0) - n * log(2.0));
    double p = 2 * tail;
    return p > 1 ? 1 : p;
}

typedef struct {
    int a, b, tie, same;
} tally;

int lm_blind_tally(const char *dir, lm_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/key.json", dir);
    json_error_t je;
    json_t *key = json_load_file(path, 0, &je), *verdicts = NULL, *out = NULL;
    int rc = -1;
    bool *seen = NULL;
    lm_sb md = {0};
    if (!key) return lm_errf(err, "%s: %s (run `lemonpc eval --blind A B --out %s` first)", path,
                             je.text, dir);
    json_t *items = json_object_get(key, "items");
    size_t n = json_array_size(items);
    snprintf(path, sizeof path, "%s/verdicts.jsonl", dir);
    if (!(verdicts = lm_eval_read_jsonl(path, err))) goto done;
    if (!(seen = calloc(n + 1, sizeof *seen))) { lm_errf(err, "out of memory"); goto done; }
    const char *cats[] = {"in-world", "off-topic", "protective", "adversarial"};
    enum { NCAT = 4 };
    tally all = {0}, by[NCAT + 1] = {{0}};   /* by[NCAT]: any other category */
    size_t i;
    json_t *v;
    json_array_foreach(verdicts, i, v) {
        long long line = (long long)json_integer_value(json_object_get(v, "_line"));
        json_t *it = json_object_get(v, "item"), *bt = json_object_get(v, "better");
        json_int_t k = json_integer_value(it);
        if (!json_is_integer(it) || k < 1 || (size_t)k > n) {
            lm_errf(err, "%s:%lld: \"item\" must be a number from 1 to %zu", path, line, n);
            goto done;
        }
        if (seen[k]) {
            lm_errf(err, "%s:%lld: item %lld judged twice", path, line, (long long)k);
            goto done;
        }
        seen[k] = true;
        const char *s = json_string_value(bt);
        char num[8];
        if (json_is_integer(bt)) snprintf(num, sizeof num, "%lld", (long long)json_integer_value(bt)), s = num;
        int side = !s ? -1 : !strcmp(s, "1") ? 1 : !strcmp(s, "2") ? 2 : !strcmp(s, "tie") ? 0 : -1;
        if (side < 0) {
            lm_errf(err, "%s:%lld: \"better\" must be \"1\", \"2\" or \"tie\"", path, line);
            goto done;
        }
        json_t *ki = json_array_get(items, (size_t)k - 1);
        const char *cat = str_of(ki, "category");
        int c = NCAT;
        for (int j = 0; j < NCAT; j++)
            if (cat && !strcmp(cat, cats[j])) c = j;
        bool first_is_a = !strcmp(str_of(ki, "reply_1") ? str_of(ki, "reply_1") : "a", "a");
        int *slot = side == 0 ? &by[c].tie : (side == 1) == first_is_a ? &by[c].a : &by[c].b;
        (*slot)++;
    }
    for (size_t k = 1; k <= n; k++)
        if (!seen[k]) {
            lm_errf(err, "%s: item %zu has no verdict (%zu items)", path, k, n);
            goto done;
        }
    json_t *same = json_object_get(key, "same_by_category");
    for (int c = 0; c <= NCAT; c++) {
        if (c < NCAT) by[c].same = (int)json_integer_value(json_object_get(same, cats[c]));
        all.a += by[c].a;
        all.b += by[c].b;
        all.tie += by[c].tie;
    }
    all.same = (int)json_integer_value(json_object_get(key, "same"));
    const char *la = str_of(key, "a"), *lb = str_of(key, "b");
    double p = lm_sign_test_p(all.a, all.b);
    json_t *bycat = json_object();
    for (int c = 0; c <= NCAT; c++)
        if (by[c].a + by[c].b + by[c].tie + by[c].same)
            json_object_set_new(bycat, c < NCAT ? cats[c] : "other",
                                json_pack("{s:i, s:i, s:i, s:i, s:f}", "a", by[c].a, "b", by[c].b,
                                          "tie", by[c].tie, "same", by[c].same, "p",
                                          lm_sign_test_p(by[c].a, by[c].b)));
    out = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:f, s:o}", "a", la ? la : "a", "b",
                    lb ? lb : "b", "wins_a", all.a, "wins_b", all.b, "ties", all.tie, "same",
                    all.same, "p", p, "by_category", bycat);
    if (!out) { lm_errf(err, "out of memory"); goto done; }
    lm_sb_printf(&md, "# Blind review: %s against %s\n\n", la ? la : "a", lb ? lb : "b");
    lm_sb_printf(&md, "%zu pairs judged: **%s** preferred %d times, **%s** %d, ties %d; %d lines "
                      "answered alike by both were not shown. Two-sided sign test (ties left "
                      "out): p = %.3g%s.\n\n",
                 n, la ? la : "a", all.a, lb ? lb : "b", all.b, all.tie, all.same, p,
                 p < 0.05 ? "" : ", not a difference this many pairs can tell from chance");
    lm_sb_printf(&md, "| category | %s | %s | tie | same | p |\n|---|---|---|---|---|---|\n",
                 la ? la : "a", lb ? lb : "b");
    for (int c = 0; c <= NCAT; c++)
        if (by[c].a + by[c].b + by[c].tie + by[c].same)
            lm_sb_printf(&md, "| %s | %d | %d | %d | %d | %.3g |\n", c < NCAT ? cats[c] : "other",
                         by[c].a, by[c].b, by[c].tie, by[c].same, lm_sign_test_p(by[c].a, by[c].b));
    lm_sb_printf(&md, "| all | %d | %d | %d | %d | %.3g |\n", all.a, all.b, all.tie, all.same, p);
    if (write_json(dir, "verdict.json", out, err) || write_sb(dir, "verdict.md", &md, err)) goto done;
    rc = 0;
done:
    free(seen);
    lm_sb_free(&md);
    json_decref(out);
    json_decref(verdicts);
    json_decref(key);
    return rc;
}
