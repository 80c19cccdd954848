/* `lemonpc pairs` (pairs.h): prompts in, samples scored, preference pairs out. */
#include "eval/pairs.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "base/fileio.h"
#include "base/progress.h"
#include "base/strbuf.h"
#include "datagen/assemble.h"
#include "check/filter.h"
#include "eval/eval.h"
#include "check/metrics.h"
#include "runtime/generate.h"
#include "sheet/sheet.h"
#include "train/jsonl.h"

int lm_pairs_veto_parse(const char *s) {
    return !strcmp(s, "ignorance") ? LM_VETO_IGNORANCE : !strcmp(s, "checks") ? LM_VETO_CHECKS :
           !strcmp(s, "none") ? LM_VETO_NONE : -1;
}

void lm_pairs_opts_init(lm_pairs_opts *o) {
    memset(o, 0, sizeof *o);
    o->persona = LM_PERSONA_SHORT;
    o->samples = 4;
    o->per_prompt = 1;
    o->max_tokens = 160;
    /* The runtime's NPC sampling (lemonpc_sampling_defaults): the pairs
     * must show the failures the NPC makes when it is played. */
    o->sp = lm_sampler_defaults();
    o->sp.temp = 0.7f;
    o->sp.repeat_penalty = 1.1f;
    o->sp.seed = 1;
}

static const char *str_field(json_t *o, const char *k) {
    return json_string_value(json_object_get(o, k));
}

/* One prompt to make pairs for. */
typedef struct item {
    char *id;
    const char *kind, *asker;     /* borrowed from the loaded JSON (may be NULL) */
    json_t *prompt;               /* messages, owned */
    const char *question;         /* the last user turn (inside prompt) */
    const char *reference;        /* curated or accepted answer, or NULL */
    const char *rejected;         /* datagen's rejected answer, or NULL */
    json_t *rejected_reasons;     /* its reasons (borrowed), with rejected */
    const char *source;           /* "data", "questions", "datagen", "review" */
    bool lore_fixed;              /* the prompt's lorebook block is given (a review's key) */
    uint64_t order;               /* seeded hash: which max_prompts are kept */
} item;

typedef struct items {
    item *v;
    size_t n, cap;
} items;

static void items_free(items *it) {
    for (size_t i = 0; i < it->n; i++) {
        free(it->v[i].id);
        json_decref(it->v[i].prompt);
    }
    free(it->v);
}

static item *items_push(items *it, lm_err *err) {
    if (it->n == it->cap) {
        size_t cap = it->cap ? 2 * it->cap : 64;
        item *v = realloc(it->v, cap * sizeof *v);
        if (!v) { lm_errf(err, "out of memory"); return NULL; }
        it->v = v, it->cap = cap;
    }
    item *x = &it->v[it->n++];
    memset(x, 0, sizeof *x);
    return x;
}

static uint64_t fnv(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static uint64_t mix(uint64_t x) {   /* splitmix64's finaliser */
    x ^= x >> 30, x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27, x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static json_t *msg(const char *role, const char *content) {
    return json_pack("{s:s, s:s}", "role", role, "content", content);
}

/* Everything the sources need to build prompts. */
typedef struct src_ctx {
    const lm_pairs_opts *o;
    const lm_character *c;
    const lm_world *w;
    json_t *keep;   /* loaded files, kept alive for borrowed strings */
} src_ctx;

/* The persona policy's system turn for a prompt that has none (NULL: no
 * sheet or mode none without a scene). */
static int add_system(const src_ctx *s, json_t *prompt, const char *asker, const char *location,
                      lm_err *err) {
    if (!s->c) return 0;
    lm_scene sc = {asker, location};
    char *sys = lm_persona_system(s->c, s->w, (lm_persona_mode)s->o->persona, &sc, err);
    if (!sys) return err->msg[0] ? -1 : 0;
    json_array_insert_new(prompt, 0, msg("system", sys));
    free(sys);
    return 0;
}

static char *line_id(const char *path, json_t *line) {
    char buf[4200];
    snprintf(buf, sizeof buf, "%s:%lld", path, (long long)json_integer_value(json_object_get(line, "_line")));
    return strdup(buf);
}

/* Conversations: the prompt up to the last user turn (with all_turns,
 * each user turn that a reply follows), the reply after it the reference. */
static int load_data(src_ctx *s, const char *path, items *it, lm_err *err) {
    json_t *a = lm_eval_read_jsonl(path, err);
    if (!a) return -1;
    json_array_append_new(s->keep, a);
    size_t i;
    json_t *conv;
    json_array_foreach(a, i, conv) {
        json_t *msgs = json_object_get(conv, "messages"), *meta = json_object_get(conv, "meta");
        long long line = (long long)json_integer_value(json_object_get(conv, "_line"));
        size_t n = json_array_size(msgs), last = n;
        for (size_t j = 0; j < n; j++) {
            json_t *m = json_array_get(msgs, j);
            if (!str_field(m, "role") || !str_field(m, "content"))
                return lm_errf(err, "%s:%lld: message %zu: wants string \"role\" and \"content\"", path,
                               line, j);
            if (!strcmp(str_field(m, "role"), "user")) last = j;
        }
        if (last == n) return lm_errf(err, "%s:%lld: no user turn in \"messages\"", path, line);
        for (size_t u = s->o->all_turns ? 0 : last, turn = 0; u <= last; u++) {
            if (strcmp(str_field(json_array_get(msgs, u), "role"), "user")) continue;
            json_t *next = json_array_get(msgs, u + 1);
            bool replied = next && !strcmp(str_field(next, "role"), "assistant");
            turn++;
            if (u != last && !replied) continue;
            item *x = items_push(it, err);
            if (!x) return -1;
            x->source = "data";
            x->kind = str_field(meta, "kind");
            x->asker = str_field(meta, "asker");
            char *base = str_field(meta, "id") ? strdup(str_field(meta, "id")) : line_id(path, conv);
            if (base && s->o->all_turns) {
                char *id = malloc(strlen(base) + 24);
                if (id) sprintf(id, "%s#%zu", base, turn);
                free(base);
                base = id;
            }
            x->id = base;
            x->prompt = json_array();
            if (!x->id || !x->prompt) return lm_errf(err, "out of memory");
            for (size_t j = 0; j <= u; j++) {
                json_t *m = json_array_get(msgs, j);
                json_array_append_new(x->prompt, msg(str_field(m, "role"), str_field(m, "content")));
            }
            if (replied) x->reference = str_field(next, "content");
            if (strcmp(str_field(json_array_get(msgs, 0), "role"), "system") &&
                add_system(s, x->prompt, x->asker, str_field(meta, "location"), err))
                return -1;
            x->question = str_field(json_array_get(msgs, u), "content");
        }
    }
    return 0;
}

/* Question files (the eval's format): no reference. */
static int load_questions(src_ctx *s, const char *path, items *it, lm_err *err) {
    json_t *a = lm_eval_load_questions(path, err);
    if (!a) return -1;
    json_array_append_new(s->keep, a);
    size_t i;
    json_t *q;
    json_array_foreach(a, i, q) {
        item *x = items_push(it, err);
        if (!x) return -1;
        x->source = "questions";
        x->kind = str_field(q, "category");
        x->asker = str_field(q, "asker");
        json_t *id = json_object_get(q, "id");
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(id));
        x->id = strdup(json_is_string(id) ? json_string_value(id) : buf);
        x->prompt = json_array();
        if (!x->id || !x->prompt) return lm_errf(err, "out of memory");
        size_t j;
        json_t *h;
        json_array_foreach(json_object_get(q, "history"), j, h)
            json_array_append_new(x->prompt, msg(str_field(h, "role"), str_field(h, "content")));
        json_array_append_new(x->prompt, msg("user", str_field(q, "question")));
        if (add_system(s, x->prompt, x->asker, str_field(q, "location"), err)) return -1;
        x->question = str_field(q, "question");
    }
    return 0;
}

/* Lowercase letters and digits only: the same question written twice. */
static char *norm(const char *t) {
    char *o = malloc(strlen(t) + 1), *p = o;
    if (!o) return NULL;
    for (; *t; t++) {
        unsigned char ch = (unsigned char)*t;
        if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch >= 0x80) *p++ = (char)ch;
        else if (ch >= 'A' && ch <= 'Z') *p++ = (char)(ch - 'A' + 'a');
    }
    *p = '\0';
    return o;
}

static void add_reason(json_t *a, const char *r);

/* A datagen folder: every rejected answer, and the accepted answer to the
 * same question as its chosen side when there is one. */
/* Blind reviews with verdicts: for each line two NPCs answered apart, the
 * reply readers preferred (and none preferred the other way) is the
 * reference, the other the rejected side. Lines are known by the question
 * id the review's key gives, so reviews of the same pair of NPCs meet. */
static int load_reviews(src_ctx *s, items *it, lm_err *err) {
    json_t *votes = json_object();   /* id \x1f text1 \x1f text2 (sorted) -> [item, +1 / -1 sum] */
    char path[4200];
    int rc = 0;
    if (!votes) return lm_errf(err, "out of memory");
    for (size_t r = 0; rc == 0 && r < s->o->n_reviews; r++) {
        const char *dir = s->o->reviews[r];
        snprintf(path, sizeof path, "%s/key.json", dir);
        json_error_t je;
        json_t *key = json_load_file(path, 0, &je);
        if (!key) { rc = lm_errf(err, "%s: %s", path, je.text); break; }
        json_array_append_new(s->keep, key);
        snprintf(path, sizeof path, "%s/items.jsonl", dir);
        json_t *its = lm_eval_read_jsonl(path, err);
        if (!its) { rc = -1; break; }
        json_array_append_new(s->keep, its);
        snprintf(path, sizeof path, "%s/verdicts.jsonl", dir);
        json_t *vs = lm_eval_read_jsonl(path, err);
        if (!vs) { rc = -1; break; }
        json_array_append_new(s->keep, vs);
        size_t i;
        json_t *v;
        json_array_foreach(vs, i, v) {
            json_int_t k = json_integer_value(json_object_get(v, "item"));
            json_t *x = json_array_get(its, (size_t)k - 1), *kx = json_array_get(json_object_get(key, "items"), (size_t)k - 1);
            const char *b = json_string_value(json_object_get(v, "better"));
            char num[8];
            if (json_is_integer(json_object_get(v, "better")))
                snprintf(num, sizeof num, "%lld", (long long)json_integer_value(json_object_get(v, "better"))), b = num;
            if (k < 1 || !x || !kx || json_integer_value(json_object_get(x, "item")) != k) {
                rc = lm_errf(err, "%s:%lld: no item %lld in %s/items.jsonl and key.json", path,
                             (long long)json_integer_value(json_object_get(v, "_line")), (long long)k, dir);
                break;
            }
            if (!b || (strcmp(b, "1") && strcmp(b, "2"))) continue;   /* a tie: no vote */
            const char *r1 = str_field(x, "reply_1"), *r2 = str_field(x, "reply_2");
            const char *id = str_field(kx, "id");
            if (!r1 || !r2 || !id) {
                rc = lm_errf(err, "%s: item %lld lacks its replies or its question id", dir, (long long)k);
                break;
            }
            bool swap = strcmp(r1, r2) > 0;
            lm_sb kb = {0};
            lm_sb_printf(&kb, "%s\x1f%s\x1f%s", id, swap ? r2 : r1, swap ? r1 : r2);
            if (kb.oom) { lm_sb_free(&kb); rc = lm_errf(err, "out of memory"); break; }
            json_t *e = json_object_get(votes, kb.p);
            if (!e) {
                e = json_pack("[O, O, i]", x, kx, 0);
                json_object_set_new(votes, kb.p, e);
            }
            lm_sb_free(&kb);
            /* + for the sorted first text */
            int vote = (!strcmp(b, "1")) != swap ? 1 : -1;
            json_array_set_new(e, 2, json_integer(json_integer_value(json_array_get(e, 2)) + vote));
        }
    }
    const char *k;
    json_t *e, *per_id = json_object();   /* question id -> pairs made for it */
    if (!per_id) rc = lm_errf(err, "out of memory");
    json_object_foreach(votes, k, e) {
        if (rc) break;
        json_int_t sum = json_integer_value(json_array_get(e, 2));
        json_t *x = json_array_get(e, 0), *kx = json_array_get(e, 1);
        /* kept when more readers preferred one reply than the other */
        if (sum == 0) continue;
        const char *r1 = str_field(x, "reply_1"), *r2 = str_field(x, "reply_2");
        bool swap = strcmp(r1, r2) > 0;
        const char *first = swap ? r2 : r1, *second = swap ? r1 : r2;
        item *y = items_push(it, err);
        if (!y) { rc = -1; break; }
        json_array_append(s->keep, x);
        json_array_append(s->keep, kx);
        y->source = "review";
        y->kind = str_field(kx, "category");
        y->asker = str_field(x, "asker");
        /* reviews of other pairs of NPCs on the same lines give a line
         * several pairs: the second and later are "ID~2", "ID~3", ... */
        const char *qid = str_field(kx, "id");
        json_int_t seen_n = json_integer_value(json_object_get(per_id, qid)) + 1;
        json_object_set_new(per_id, qid, json_integer(seen_n));
        if (seen_n == 1) y->id = strdup(qid);
        else {
            lm_sb ib = {0};
            lm_sb_printf(&ib, "%s~%lld", qid, (long long)seen_n);
            y->id = ib.oom ? NULL : ib.p;
            if (!y->id) lm_sb_free(&ib);
        }
        y->prompt = json_array();
        if (!y->id || !y->prompt) { rc = lm_errf(err, "out of memory"); break; }
        size_t j;
        json_t *m;
        json_array_foreach(json_object_get(x, "history"), j, m)
            if (str_field(m, "role") && str_field(m, "content"))
                json_array_append_new(y->prompt, msg(str_field(m, "role"), str_field(m, "content")));
        y->question = str_field(x, "line");
        if (!y->question) { rc = lm_errf(err, "review item for %s has no line", y->id); break; }
        json_array_append_new(y->prompt, msg("user", y->question));
        if ((rc = add_system(s, y->prompt, y->asker, str_field(x, "location"), err))) break;
        /* the block the replies were made with, as the key recorded it */
        json_t *lore = json_object_get(kx, "lore");
        if (json_is_string(lore))
            json_array_insert_new(y->prompt, json_array_size(y->prompt) - 1,
                                  msg("system", json_string_value(lore)));
        y->lore_fixed = json_is_string(lore) || json_is_null(lore);
        y->reference = sum > 0 ? first : second;
        y->rejected = sum > 0 ? second : first;
        json_t *why = json_pack("[s]", "reader");
        json_array_append_new(s->keep, why);
        y->rejected_reasons = why;
    }
    json_decref(per_id);
    json_decref(votes);
    return rc;
}

static int load_datagen(src_ctx *s, const char *dir, items *it, lm_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/rejected.jsonl", dir);
    json_t *rej = lm_eval_read_jsonl(path, err);
    if (!rej) return -1;
    json_array_append_new(s->keep, rej);
    snprintf(path, sizeof path, "%s/dataset.jsonl", dir);
    json_t *acc = lm_eval_read_jsonl(path, err);
    if (!acc) return -1;
    json_array_append_new(s->keep, acc);
    json_t *by_q = json_object();   /* normalised question -> accepted answer */
    size_t i;
    json_t *e;
    json_array_foreach(acc, i, e) {
        json_t *msgs = json_object_get(e, "messages");
        const char *q = NULL, *a = NULL;
        size_t j;
        json_t *m;
        json_array_foreach(msgs, j, m) {
            const char *role = str_field(m, "role") ?: "";
            if (!strcmp(role, "user")) q = str_field(m, "content");
            else if (!strcmp(role, "assistant") && q && !a) a = str_field(m, "content");
        }
        char *k = q && a ? norm(q) : NULL;
        if (k && !json_object_get(by_q, k)) json_object_set_new(by_q, k, json_string(a));
        free(k);
    }
    int rc = 0;
    json_array_foreach(rej, i, e) {
        if (strcmp(str_field(e, "stage") ?: "", "answer") || !str_field(e, "question") ||
            !str_field(e, "answer"))
            continue;   /* a rejected question has no answer to learn against */
        item *x = items_push(it, err);
        if (!x) { rc = -1; break; }
        x->source = "datagen";
        x->kind = str_field(e, "kind");
        x->asker = str_field(e, "asker");
        char id[64];
        snprintf(id, sizeof id, "datagen:%lld", (long long)json_integer_value(json_object_get(e, "index")));
        x->id = strdup(id);
        x->prompt = json_array();
        if (!x->id || !x->prompt) { rc = lm_errf(err, "out of memory"); break; }
        x->question = str_field(e, "question");
        json_array_append_new(x->prompt, msg("user", x->question));
        if ((rc = add_system(s, x->prompt, x->asker, NULL, err))) break;
        x->rejected = str_field(e, "answer");
        /* its reasons by filter name, as the samples' */
        json_t *why = json_array();
        size_t j;
        json_t *r;
        json_array_foreach(json_object_get(e, "reasons"), j, r)
            if (str_field(r, "filter")) add_reason(why, str_field(r, "filter"));
        json_array_append_new(s->keep, why);
        x->rejected_reasons = why;
        char *k = norm(x->question);
        json_t *a = k ? json_object_get(by_q, k) : NULL;
        free(k);
        /* The string lives in by_q; keep it alive with the loaded files. */
        if (a) { json_array_append(s->keep, a); x->reference = json_string_value(a); }
    }
    json_decref(by_q);
    return rc;
}

static bool kind_wanted(const char *kinds, const char *kind) {
    if (!kinds) return true;
    const char *k = kind ? kind : "in-world";
    size_t n = strlen(k);
    for (const char *p = kinds; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && !strncmp(p, k, n)) return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

static int cmp_order(const void *a, const void *b) {
    uint64_t x = (*(item *const *)a)->order, y = (*(item *const *)b)->order;
    return x < y ? -1 : x > y;
}

/* ---- scoring ---------------------------------------------------------- */

typedef struct scorer {
    lm_filter_set *fs;
    lm_eval_checker *k;
    const char *name;
} scorer;

static void add_reason(json_t *a, const char *r) {
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e) if (!strcmp(json_string_value(e), r)) return;
    json_array_append_new(a, json_string(r));
}

/* The reasons answer fails (an empty array: it passes). The filters'
 * question-side failures (the question restates the sheet, ...) are the
 * prompt's, not the answer's, and are left out. */
static json_t *score(const scorer *s, const item *x, const char *answer, bool eos) {
    json_t *why = json_array();
    lm_filter_sample fx = {x->question, NULL, x->kind, s->name, x->asker, 0, 0};
    lm_filter_result rq, ra;
    lm_filter_run(s->fs, &fx, &rq);
    fx.answer = answer;
    fx.truncated = !eos;
    lm_filter_run(s->fs, &fx, &ra);
    for (size_t i = 0; i < ra.n_notes; i++)
        if (!(rq.failed & (1u << ra.notes[i].filter))) add_reason(why, lm_filter_name(ra.notes[i].filter));
    lm_eval_flags f;
    const char *cat = x->kind ? x->kind : "in-world";
    lm_eval_check(s->k, x->question, answer, cat, x->asker, eos, &f);
    /* the eval's checks under the filters' names where they are the same */
    if (f.assistant) add_reason(why, "assistant-speech");
    if (f.refusal) add_reason(why, "refusal");
    if (f.stage) add_reason(why, "stage-direction");
    if (f.self_intro) add_reason(why, "self-intro");
    if (f.breaks) add_reason(why, "breaks-character");
    if (f.modern) add_reason(why, "modern-knowledge");
    if (f.repetition) add_reason(why, "repetition");
    if (f.recital) add_reason(why, "recites-sheet");
    if (f.speaks_for_user) add_reason(why, "speaks-for-player");
    if (f.dodges) add_reason(why, "dodges-in-world");
    if (!f.eos) add_reason(why, "no-end-of-turn");
    if (lm_eval_category(cat) == LM_EVAL_CAT_PROTECTIVE && !f.ignorant)
        add_reason(why, "no-honest-ignorance");
    return why;
}

/* Scores a journal's samples again from their text and stop: the reasons
 * written with them are what the checks of that day said, and a resume
 * under newer checks (a new filter, a narrower pattern) must judge them as a
 * fresh run would. */
static void rescore(const scorer *s, const item *x, json_t *samples) {
    size_t i;
    json_t *e;
    json_array_foreach(samples, i, e)
        json_object_set_new(e, "reasons", score(s, x, str_field(e, "text"), !strcmp(str_field(e, "stop"), "eos")));
}

/* ---- one prompt --------------------------------------------------------- */

static json_t *pair_json(const item *x, const char *chosen, const char *chosen_from,
                         const char *rejected, json_t *reasons) {
    json_t *meta = json_pack("{s:s, s:s?, s:s, s:s, s:O}", "id", x->id, "kind", x->kind, "source",
                             x->source, "chosen_from", chosen_from, "rejected_reasons", reasons);
    return json_pack("{s:O, s:[o], s:[o], s:o}", "prompt", x->prompt, "chosen",
                     msg("assistant", chosen), "rejected", msg("assistant", rejected), "meta", meta);
}

static int cmp_reasons(const void *a, const void *b) {
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    size_t nx = json_array_size(json_object_get(x, "reasons")),
           ny = json_array_size(json_object_get(y, "reasons"));
    if (nx != ny) return nx > ny ? -1 : 1;
    /* stable: the earlier sample first */
    json_int_t ix = json_integer_value(json_object_get(x, "i")), iy = json_integer_value(json_object_get(y, "i"));
    return ix < iy ? -1 : ix > iy;
}

/* Drops from why the reasons in excused. */
static void excuse(json_t *why, json_t *excused) {
    for (size_t i = json_array_size(why); i-- > 0;) {
        size_t j;
        json_t *e;
        json_array_foreach(excused, j, e)
            if (json_equal(e, json_array_get(why, i))) { json_array_remove(why, i); break; }
    }
}

/* The pairs of one prompt from its record's samples. The writer's reference
 * sets the bar: a check it fails itself (a follow-up turn of a protective
 * conversation that needs no "I do not know", a line that names the sheet's
 * places on purpose) is not held against the samples either. */
static json_t *make_pairs(const lm_pairs_opts *o, const scorer *s, const item *x, json_t *samples,
                          lm_pairs_stats *st, json_t **vetoed) {
    *vetoed = NULL;
    json_t *pairs = json_array(), *excused = x->reference ? score(s, x, x->reference, true) : json_array();
    const char *chosen = NULL, *from = NULL;
    if (x->reference && !o->chosen_from_samples) chosen = x->reference, from = "reference";
    size_t i, n_fail = 0;
    json_t *e;
    json_array_foreach(samples, i, e) {
        excuse(json_object_get(e, "reasons"), excused);
        if (json_array_size(json_object_get(e, "reasons"))) n_fail++;
        else if (!chosen) chosen = str_field(e, "text"), from = "sample";
    }
    if (!chosen && x->reference) chosen = x->reference, from = "reference";
    /* the reference's reasons are the chosen side's when it is chosen */
    json_t *chosen_why = chosen && chosen == x->reference ? excused : NULL;
    if (!chosen_why) json_decref(excused);
    if (x->rejected) {
        if (!chosen) { st->no_chosen++; return pairs; }
        if (o->veto != LM_VETO_NONE) {
            /* what the chosen reply fails that the rejected one does not
             * (a reader's text has no stop: both count as ended) */
            json_t *worse = chosen_why ? chosen_why : score(s, x, chosen, true);
            json_t *rej = score(s, x, x->rejected, true);
            chosen_why = NULL;
            excuse(worse, rej);
            json_decref(rej);
            /* readers' choices only: datagen's chosen side passed the
             * dataset filters, which ask protective lines for ignorance */
            if (o->veto == LM_VETO_IGNORANCE && !strcmp(x->source, "review")) {
                /* the in-world dodge pattern, whatever the line's kind */
                lm_eval_flags fc, fr;
                lm_eval_check(s->k, x->question, chosen, "in-world", x->asker, true, &fc);
                lm_eval_check(s->k, x->question, x->rejected, "in-world", x->asker, true, &fr);
                if (fc.dodges && !fr.dodges) add_reason(worse, "claims-ignorance");
            }
            if (json_array_size(worse)) {
                st->vetoed++;
                *vetoed = worse;
                return pairs;
            }
            json_decref(worse);
        }
        json_decref(chosen_why);
        json_array_append_new(pairs, pair_json(x, chosen, from, x->rejected, x->rejected_reasons));
        return pairs;
    }
    json_decref(chosen_why);
    /* self-play (SPIN): against the writer's reply, any of the NPC's own
     * answers is the rejected side, failing ones first */
    bool spin = o->self_play && from && !strcmp(from, "reference");
    size_t n_rej = spin ? json_array_size(samples) : n_fail;
    if (!n_rej) { if (!n_fail) st->all_passed++; return pairs; }
    if (!chosen) { st->no_chosen++; return pairs; }
    json_t **fail = calloc(n_rej, sizeof *fail);
    if (!fail) return pairs;
    size_t k = 0;
    json_array_foreach(samples, i, e)
        if (spin || json_array_size(json_object_get(e, "reasons"))) fail[k++] = e;
    qsort(fail, n_rej, sizeof *fail, cmp_reasons);
    for (k = 0; k < n_rej && (int)json_array_size(pairs) < o->per_prompt; k++) {
        const char *t = str_field(fail[k], "text");
        bool dup = !strcmp(t, chosen);
        for (size_t j = 0; j < k && !dup; j++) dup = !strcmp(t, str_field(fail[j], "text"));
        if (!dup)
            json_array_append_new(pairs, pair_json(x, chosen, from, t, json_object_get(fail[k], "reasons")));
    }
    free(fail);
    return pairs;
}

static const char *stop_name(const lm_gen_info *in) {
    return in->hit_max ? "max_tokens" : in->hit_ctx ? "context" : in->hit_stop ? "stop_string" : "eos";
}

/* Samples for x (none when both sides are known already). */
static json_t *sample(const lm_pairs_opts *o, const scorer *s, lm_generator *g, const item *x,
                      lm_err *err) {
    json_t *out = json_array();
    if (x->rejected && x->reference) return out;
    size_t nm = json_array_size(x->prompt);
    lm_chat_msg *m = calloc(nm, sizeof *m);
    if (!m) { json_decref(out); lm_errf(err, "out of memory"); return NULL; }
    for (size_t i = 0; i < nm; i++) {
        json_t *e = json_array_get(x->prompt, i);
        m[i] = (lm_chat_msg){str_field(e, "role"), str_field(e, "content")};
    }
    uint64_t h = fnv(x->id);
    for (int j = 0; j < o->samples; j++) {
        lm_gen_params gp = {.sp = o->sp, .max_tokens = o->max_tokens};
        gp.sp.seed = mix(o->sp.seed ^ mix(h + (uint64_t)j));
        char *reply = NULL;
        lm_gen_info info = {0};
        if (lm_generate_chat(g, m, nm, &gp, &reply, &info, err)) {
            lm_err_prefix(err, "prompt %s, sample %d", x->id, j);
            json_decref(out);
            out = NULL;
            break;
        }
        lm_str_trim(reply);
        bool eos = !strcmp(stop_name(&info), "eos");
        json_array_append_new(out, json_pack("{s:i, s:s, s:s, s:o}", "i", j, "text", reply, "stop",
                                             stop_name(&info), "reasons", score(s, x, reply, eos)));
        free(reply);
    }
    free(m);
    return out;
}

/* ---- the run ------------------------------------------------------------ */

/* A journal record as this code wrote it: an id, and samples each with an
 * index, a text, a stop and reasons that are strings. Anything else (a
 * damaged or hand-edited file) is dropped, and its prompt sampled again. */
static bool record_ok(json_t *r) {
    json_t *ss = json_object_get(r, "samples");
    if (!str_field(r, "id") || !json_is_array(ss)) return false;
    size_t i, j;
    json_t *e, *why;
    json_array_foreach(ss, i, e) {
        if (!json_is_integer(json_object_get(e, "i")) || !str_field(e, "text") || !str_field(e, "stop") ||
            !json_is_array(json_object_get(e, "reasons")))
            return false;
        json_array_foreach(json_object_get(e, "reasons"), j, why) if (!json_is_string(why)) return false;
    }
    return true;
}

/* A file as the journal names it: its real path and "size:mtime", so the
 * same file named another way matches and a rebuilt adapter does not. */
static json_t *file_id(const char *path) {
    if (!path) return json_null();
    char real[PATH_MAX];
    struct stat st;
    if (!realpath(path, real) || stat(real, &st)) return json_string(path);
    return json_sprintf("%s@%lld:%lld.%09ld", real, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                        st.st_mtim.tv_nsec);
}

static json_t *settings_json(const lm_pairs_opts *o) {
    json_t *s = json_pack("{s:o, s:o, s:o, s:s, s:i, s:i, s:f, s:i, s:f, s:f, s:f, s:i, s:I, s:b}", "model",
                     file_id(o->model), "adapter", file_id(o->adapter), "character",
                     file_id(o->character), "persona",
                     lm_persona_mode_name((lm_persona_mode)o->persona), "samples", o->samples,
                     "max_tokens", o->max_tokens, "temp", (double)o->sp.temp, "top_k", o->sp.top_k,
                     "top_p", (double)o->sp.top_p, "min_p", (double)o->sp.min_p, "repeat_penalty",
                     (double)o->sp.repeat_penalty, "repeat_last_n", o->sp.repeat_last_n, "seed",
                     (json_int_t)o->sp.seed, "all_turns", o->all_turns);
    /* only when off: journals written before the block existed resume */
    if (s && o->no_lore) json_object_set_new(s, "lore", json_false());
    return s;
}

/* The journal's records by id. A journal made under other settings is
 * never thrown away silently (it may hold hours of samples): unless
 * restart, that is an error naming what differs. A torn last line is
 * dropped. NULL on error. */
static json_t *read_journal(const char *path, json_t *settings, bool restart, lm_err *err) {
    json_t *done = json_object();
    if (!done || access(path, F_OK) != 0) return done;
    lm_jsonl *in = lm_jsonl_open(path, err);
    if (!in) { json_decref(done); return NULL; }
    lm_err skip = {{0}};   /* a torn or foreign line is dropped: its sample is made again */
    json_t *j;
    int got;
    for (bool first = true; (got = lm_jsonl_next(in, &j, &skip)) != LM_JSONL_END; first = false) {
        if (first) {
            json_t *old = got == LM_JSONL_OK ? json_object_get(j, "settings") : NULL;
            if (!json_equal(old, settings) && !restart) {
                char diff[512] = "";
                const char *k;
                json_t *v;
                json_object_foreach(settings, k, v)
                    if (!json_equal(v, json_object_get(old, k))) {
                        size_t l = strlen(diff);
                        snprintf(diff + l, sizeof diff - l, "%s%s", l ? ", " : "", k);
                    }
                lm_errf(err, "%s holds samples made with other settings (%s differ%s): run with the "
                             "same settings to resume it, or give --restart to discard it",
                        path, diff[0] ? diff : "not a journal", diff[0] && strchr(diff, ',') ? "" : "s");
                json_decref(done);
                done = NULL;
                break;
            }
            if (restart) break;
            continue;
        }
        if (got == LM_JSONL_OK && record_ok(j)) json_object_set(done, str_field(j, "id"), j);
    }
    lm_jsonl_close(in);
    return done;
}

static int append_line(FILE *f, json_t *j, const char *path, lm_err *err) {
    char *s = json_dumps(j, JSON_COMPACT);
    int bad = !s || fprintf(f, "%s\n", s) < 0 || fflush(f);
    free(s);
    return bad ? lm_errno(err, "%s: cannot append", path) : 0;
}

int lm_pairs_run(const lm_pairs_opts *o, lm_pairs_stats *st, lm_err *err) {
    memset(st, 0, sizeof *st);
    int rc = -1;
    lm_character *c = NULL;
    lm_world *w = NULL;
    scorer s = {0};
    items it = {0};
    item **todo = NULL;
    lm_generator *g = NULL;
    FILE *jf = NULL;
    json_t *settings = settings_json(o), *done = NULL, *all = json_array();
    src_ctx sx = {o, NULL, NULL, json_array()};
    char jpath[4200], tmp[4300];

    if (o->samples < 1 || o->per_prompt < 1) { lm_errf(err, "samples and pairs per prompt must be >= 1"); goto out; }
    if (!o->n_data && !o->n_questions && !o->datagen && !o->n_reviews) {
        lm_errf(err, "no prompts: give conversations, questions, a datagen folder or a review");
        goto out;
    }
    if (o->character && lm_sheet_load_character(o->character, &c, &w, err)) goto out;
    sx.c = c, sx.w = w;
    lm_filter_config fc;
    lm_filter_config_default(&fc);
    if (!(s.fs = lm_filter_set_new(&fc, c, err)) || !(s.k = lm_eval_checker_new(c, err))) goto out;
    s.name = c ? c->name : NULL;
    for (size_t i = 0; i < o->n_data; i++)
        if (load_data(&sx, o->data[i], &it, err)) goto out;
    for (size_t i = 0; i < o->n_questions; i++)
        if (load_questions(&sx, o->questions[i], &it, err)) goto out;
    if (o->datagen && load_datagen(&sx, o->datagen, &it, err)) goto out;
    if (o->n_reviews && load_reviews(&sx, &it, err)) goto out;
    if (!o->no_lore && c) {
        gguf_file *mf = gguf_open(o->model, err);
        lm_tokenizer *tok = mf ? lm_tokenizer_load(mf, err) : NULL;
        gguf_close(mf);
        if (!tok) goto out;
        int lr = 0;
        for (size_t i = 0; lr == 0 && i < it.n; i++)
            if (!it.v[i].lore_fixed) lr = lm_assemble_add_lore(it.v[i].prompt, c, w, tok, err) < 0 ? -1 : 0;
        lm_tokenizer_free(tok);
        if (lr) goto out;
    }

    /* kinds, then a seeded choice of max_prompts, processed in file order */
    todo = calloc(it.n ? it.n : 1, sizeof *todo);
    if (!todo) { lm_errf(err, "out of memory"); goto out; }
    size_t n = 0;
    json_t *seen = json_object();
    for (size_t i = 0; i < it.n; i++) {
        item *x = &it.v[i];
        if (!kind_wanted(o->kinds, x->kind)) continue;
        if (json_object_get(seen, x->id)) {
            json_decref(seen);
            lm_errf(err, "prompt id '%s' appears twice (ids name the journal's records)", x->id);
            goto out;
        }
        json_object_set_new(seen, x->id, json_true());
        x->order = mix(o->sp.seed ^ fnv(x->id));
        todo[n++] = x;
    }
    json_decref(seen);
    if (o->max_prompts > 0 && n > (size_t)o->max_prompts) {
        qsort(todo, n, sizeof *todo, cmp_order);
        n = (size_t)o->max_prompts;
        for (size_t i = 0; i < n; i++) todo[i]->order = (uint64_t)(todo[i] - it.v);
        qsort(todo, n, sizeof *todo, cmp_order);
    }
    st->prompts = n;

    snprintf(jpath, sizeof jpath, "%s.samples.jsonl", o->out);
    if (!(done = read_journal(jpath, settings, o->restart, err))) goto out;
    /* Rewrite the journal with the kept records only (a torn tail goes). */
    snprintf(tmp, sizeof tmp, "%s.tmp", jpath);
    if (!(jf = fopen(tmp, "w"))) { lm_errno(err, "%s", tmp); goto out; }
    json_t *hdr = json_pack("{s:O}", "settings", settings);
    int wr = append_line(jf, hdr, tmp, err);
    json_decref(hdr);
    if (wr) goto out;
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_object_get(done, todo[i]->id);
        if (r && append_line(jf, r, tmp, err)) goto out;
    }
    if (rename(tmp, jpath)) { lm_errno(err, "%s", jpath); goto out; }

    lm_progress pr;
    if (!o->quiet) lm_progress_begin(&pr, "pairs", (int64_t)n, "prompts");
    for (size_t i = 0; i < n; i++) {
        item *x = todo[i];
        json_t *r = json_object_get(done, x->id), *samples;
        if (r) {
            st->resumed++;
            samples = json_incref(json_object_get(r, "samples"));
            rescore(&s, x, samples);
        } else {
            bool need = !(x->rejected && x->reference);
            if (need && !g) {
                if (!(g = lm_generator_open(o->model, 0, o->threads, err))) goto out;
                if (o->adapter && lm_generator_set_adapter(g, o->adapter, 1.0f, err)) goto out;
            }
            if (!(samples = sample(o, &s, g, x, err))) goto out;
        }
        /* pairs are made again from the samples, so a resume under new
         * filters or a new reference still gets them right */
        json_t *vetoed;
        json_t *p = make_pairs(o, &s, x, samples, st, &vetoed);
        size_t j;
        json_t *e;
        json_array_foreach(samples, j, e) {
            st->samples++;
            if (json_array_size(json_object_get(e, "reasons"))) st->failing++;
        }
        if (!r) {
            json_t *rec = json_pack("{s:s, s:s?, s:O, s:O, s:O*}", "id", x->id, "kind", x->kind, "samples",
                                    samples, "pairs", p, "vetoed", vetoed);
            wr = append_line(jf, rec, jpath, err);
            json_decref(rec);
            if (wr) { json_decref(samples); json_decref(p); json_decref(vetoed); goto out; }
        }
        json_array_extend(all, p);
        json_decref(p);
        json_decref(vetoed);
        json_decref(samples);
        if (!o->quiet) {
            char extra[64];
            snprintf(extra, sizeof extra, "%zu pairs", json_array_size(all));
            lm_progress_update(&pr, (int64_t)i + 1, extra);
        }
    }
    if (!o->quiet) lm_progress_end(&pr);
    st->pairs = json_array_size(all);

    lm_sb sb = {0};
    size_t i;
    json_t *p;
    json_array_foreach(all, i, p) {
        char *line = json_dumps(p, JSON_COMPACT);
        if (line) lm_sb_printf(&sb, "%s\n", line);
        else sb.oom = true;
        free(line);
    }
    wr = sb.oom ? lm_errf(err, "out of memory") : lm_write_file_atomic(o->out, sb.p ? sb.p : "", sb.len, err);
    lm_sb_free(&sb);
    if (!wr) rc = 0;
out:
    if (jf) fclose(jf);
    lm_generator_free(g);
    free(todo);
    items_free(&it);
    json_decref(all);
    json_decref(done);
    json_decref(settings);
    json_decref(sx.keep);
    lm_filter_set_free(s.fs);
    lm_eval_checker_free(s.k);
    lm_world_free(w);
    lm_character_free(c);
    return rc;
}
