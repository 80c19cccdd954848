/* The review decisions store: dataset loading, the append-only decisions
 * log and its replay, undo, the promoted style examples, export. */
#include "datagen/review.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/strbuf.h"
#include "train/chat_jsonl.h"
#include "train/jsonl.h"

typedef struct {
    lm_review_item pub;
    json_t *obj;   /* the dataset line */
    char *edit;    /* owned; current edit or NULL */
    char *meta_s, *notes_s;
} item;

typedef struct {
    size_t item;   /* SIZE_MAX: an id not in this dataset */
    lm_review_action a;
    char *answer;
} action;

struct lm_review {
    char *dataset, *decisions, *promoted;
    item *items;
    size_t n;
    action *log;
    size_t nlog, caplog;
    FILE *out; /* decisions, append */
};

static const char *const action_names[] = {"accept", "reject", "edit", "promote"};

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

static char *path_with(const char *base, const char *suffix) {
    size_t n = strlen(base), k = strlen(suffix);
    const char *dot = n > 6 && strcmp(base + n - 6, ".jsonl") == 0 ? base + n - 6 : base + n;
    size_t stem = (size_t)(dot - base);
    char *p = malloc(stem + k + 1);
    if (p) memcpy(p, base, stem), memcpy(p + stem, suffix, k + 1);
    return p;
}

/* Last message of role in obj.messages (NULL if none). */
static json_t *last_msg(json_t *obj, const char *role) {
    json_t *msgs = json_object_get(obj, "messages"), *hit = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *r = json_string_value(json_object_get(m, "role"));
        if (r && strcmp(r, role) == 0 && json_is_string(json_object_get(m, "content"))) hit = m;
    }
    return hit;
}

static void fnv_id(const char *q, const char *a, char out[33]) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *p = q; *p; p++) h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
    h = (h ^ 0x1f) * 0x100000001b3ULL;
    for (const char *p = a; *p; p++) h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
    snprintf(out, 33, "%016llx", (unsigned long long)h);
}

static char *notes_text(json_t *meta) {
    static const char *const keys[] = {"filter_notes", "rejected_by", "filters_failed", "reasons", NULL};
    lm_sb b = {0};
    for (const char *const *k = keys; !b.oom && *k; k++) {
        json_t *v = json_object_get(meta, *k);
        json_t *one = json_is_array(v) ? NULL : v;
        size_t cnt = json_is_array(v) ? json_array_size(v) : (v ? 1 : 0);
        for (size_t i = 0; i < cnt; i++) {
            json_t *e = one ? one : json_array_get(v, i);
            const char *fn = json_string_value(json_object_get(e, "filter"));
            const char *fr = json_string_value(json_object_get(e, "reason"));
            char *t = NULL;
            if (fn && fr) { /* the pipeline's {"filter":..., "reason":...} */
                size_t tn0 = strlen(fn) + strlen(fr) + 3;
                if ((t = malloc(tn0))) snprintf(t, tn0, "%s: %s", fn, fr);
            } else {
                t = json_is_string(e) ? strdup(json_string_value(e)) : json_dumps(e, JSON_COMPACT | JSON_ENCODE_ANY);
            }
            if (!t) continue;
            if (b.len) lm_sb_add(&b, "; ", 2);
            lm_sb_str(&b, t);
            free(t);
        }
    }
    return lm_sb_take(&b);
}

static void refold(lm_review *r, size_t i) {
    item *it = &r->items[i];
    free(it->edit);
    it->edit = NULL;
    it->pub.state = LM_REVIEW_UNDECIDED, it->pub.edited = 0, it->pub.promoted = 0;
    for (size_t k = 0; k < r->nlog; k++) {
        const action *a = &r->log[k];
        if (a->item != i) continue;
        switch (a->a) {
        case LM_REVIEW_ACCEPT: it->pub.state = LM_REVIEW_ACCEPTED; break;
        case LM_REVIEW_REJECT: it->pub.state = LM_REVIEW_REJECTED, it->pub.promoted = 0; break;
        case LM_REVIEW_EDIT:
            it->pub.state = LM_REVIEW_ACCEPTED, it->pub.edited = 1;
            free(it->edit);
            it->edit = xstrdup(a->answer);
            break;
        case LM_REVIEW_PROMOTE: it->pub.state = LM_REVIEW_ACCEPTED, it->pub.promoted = 1; break;
        }
    }
    it->pub.answer = it->edit ? it->edit : it->pub.original;
}

static int log_push(lm_review *r, size_t i, lm_review_action a, const char *answer) {
    if (r->nlog == r->caplog) {
        size_t nc = r->caplog ? r->caplog * 2 : 64;
        action *nl = realloc(r->log, nc * sizeof *nl);
        if (!nl) return -1;
        r->log = nl, r->caplog = nc;
    }
    char *dup = NULL;
    if (answer && !(dup = strdup(answer))) return -1;
    r->log[r->nlog++] = (action){i, a, dup};
    return 0;
}

static long find_id(const lm_review *r, const char *id) {
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->items[i].pub.id, id) == 0) return (long)i;
    return -1;
}

/* The dataset's samples, each kept whole to be written back; a bad line
 * is an error (its place named): a sample skipped here would vanish from
 * the reviewed export. */
static int load_dataset(lm_review *r, lm_err *err) {
    lm_chat_jsonl_opts ro = {.strict = true, .need = LM_CHAT_NEED_USER | LM_CHAT_NEED_ASSISTANT};
    lm_chat_jsonl *in = lm_chat_jsonl_open(r->dataset, &ro, err);
    if (!in) return -1;
    lm_chat_line l;
    int rc;
    while ((rc = lm_chat_jsonl_next(in, &l, err)) == LM_JSONL_OK) {
        if (r->n % 256 == 0) {
            item *ni = realloc(r->items, (r->n + 256) * sizeof *ni);
            if (!ni) {
                rc = lm_errf(err, "%s: out of memory", r->dataset);
                break;
            }
            r->items = ni;
        }
        item *it = &r->items[r->n];
        memset(it, 0, sizeof *it);
        it->obj = json_incref(l.root);
        it->pub.line = l.line;
        it->pub.question = l.msgs[lm_chat_last(&l, "user")].content;
        it->pub.original = it->pub.answer = l.msgs[lm_chat_last(&l, "assistant")].content;
        json_t *meta = json_object_get(l.root, "meta");
        const char *mid = json_string_value(json_object_get(meta, "id"));
        if (mid && strlen(mid) < sizeof it->pub.id) snprintf(it->pub.id, sizeof it->pub.id, "%s", mid);
        else fnv_id(it->pub.question, it->pub.original, it->pub.id);
        /* the same sample twice gets a distinct id, so each is decided */
        for (int k = 2; find_id(r, it->pub.id) >= 0; k++) {
            char base[17] = {0};
            memcpy(base, it->pub.id, strnlen(it->pub.id, 16));
            snprintf(it->pub.id, sizeof it->pub.id, "%s-%d", base, k);
        }
        it->meta_s = meta ? json_dumps(meta, JSON_COMPACT) : strdup("{}");
        it->notes_s = notes_text(meta);
        it->pub.meta = it->meta_s ? it->meta_s : "{}";
        it->pub.notes = it->notes_s ? it->notes_s : "";
        r->n++;
    }
    lm_chat_jsonl_close(in);
    return rc < 0 ? -1 : 0;
}

static int replay(lm_review *r, lm_err *err) {
    if (access(r->decisions, F_OK) != 0) return errno == ENOENT ? 0 : lm_errno(err, "%s", r->decisions);
    lm_jsonl *in = lm_jsonl_open(r->decisions, err);
    if (!in) return -1;
    size_t good = 0;   /* bytes up to the end of the last good decision */
    int rc = 0, got;
    json_t *o;
    while (rc == 0 && (got = lm_jsonl_next(in, &o, err)) != LM_JSONL_END) {
        const char *act = json_string_value(json_object_get(o, "action"));
        const char *id = json_string_value(json_object_get(o, "id"));
        const char *ans = json_string_value(json_object_get(o, "answer"));
        int a = -1;
        for (int k = 0; act && k < 4; k++)
            if (strcmp(act, action_names[k]) == 0) a = k;
        int undo = act && strcmp(act, "undo") == 0;
        if (got != LM_JSONL_OK || (!undo && (a < 0 || !id || (a == LM_REVIEW_EDIT && !ans)))) {
            if (lm_jsonl_torn(in)) break; /* a crash mid-write: drop the fragment */
            if (got == LM_JSONL_OK)
                lm_errf(err, "%s:%d: expected {\"id\":..., \"action\":\"accept|reject|edit|promote\"} or "
                        "{\"action\":\"undo\"}", r->decisions, lm_jsonl_line(in));
            rc = -1;
            break;
        }
        if (undo) {
            if (r->nlog) {
                action *l = &r->log[--r->nlog];
                free(l->answer);
            }
        } else {
            long i = find_id(r, id);
            if (log_push(r, i < 0 ? SIZE_MAX : (size_t)i, (lm_review_action)a, ans))
                rc = lm_errf(err, "%s: out of memory", r->decisions);
        }
        good = lm_jsonl_offset(in);
    }
    lm_jsonl_close(in);
    if (rc) return rc;
    if (truncate(r->decisions, (off_t)good)) return lm_errno(err, "%s: truncating a cut-short last line", r->decisions);
    for (size_t i = 0; i < r->n; i++) refold(r, i);
    return 0;
}

lm_review *lm_review_open(const char *dataset, const char *decisions, lm_err *err) {
    lm_review *r = calloc(1, sizeof *r);
    if (!r) {
        lm_errf(err, "review: out of memory");
        return NULL;
    }
    r->dataset = strdup(dataset);
    r->decisions = decisions ? strdup(decisions) : path_with(dataset, ".decisions.jsonl");
    r->promoted = path_with(dataset, ".promoted.jsonl");
    if (!r->dataset || !r->decisions || !r->promoted) {
        lm_errf(err, "review: out of memory");
        goto fail;
    }
    if (load_dataset(r, err) || replay(r, err)) goto fail;
    r->out = fopen(r->decisions, "a");
    if (!r->out) {
        lm_errno(err, "%s", r->decisions);
        goto fail;
    }
    return r;
fail:
    lm_review_close(r);
    return NULL;
}

void lm_review_close(lm_review *r) {
    if (!r) return;
    if (r->out) fclose(r->out);
    for (size_t i = 0; i < r->n; i++) {
        json_decref(r->items[i].obj);
        free(r->items[i].edit), free(r->items[i].meta_s), free(r->items[i].notes_s);
    }
    for (size_t k = 0; k < r->nlog; k++) free(r->log[k].answer);
    free(r->items), free(r->log), free(r->dataset), free(r->decisions), free(r->promoted);
    free(r);
}

size_t lm_review_count(const lm_review *r) { return r->n; }
const lm_review_item *lm_review_get(const lm_review *r, size_t i) { return i < r->n ? &r->items[i].pub : NULL; }
const char *lm_review_decisions_path(const lm_review *r) { return r->decisions; }
const char *lm_review_promoted_path(const lm_review *r) { return r->promoted; }

long lm_review_next_undecided(const lm_review *r, size_t from) {
    for (size_t k = 0; k < r->n; k++) {
        size_t i = (from + k) % r->n;
        if (r->items[i].pub.state == LM_REVIEW_UNDECIDED) return (long)i;
    }
    return -1;
}

static int append(lm_review *r, json_t *o, lm_err *err) {
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) return lm_errf(err, "%s: out of memory", r->decisions);
    int bad = fprintf(r->out, "%s\n", s) < 0 || fflush(r->out) || fsync(fileno(r->out));
    free(s);
    return bad ? lm_errno(err, "%s: writing a decision", r->decisions) : 0;
}

/* The accepted sample as it leaves review: its line, the edit applied. */
static json_t *reviewed(const item *it, const char *label) {
    json_t *o = json_deep_copy(it->obj);
    if (!o) return NULL;
    if (it->edit) json_object_set_new(last_msg(o, "assistant"), "content", json_string(it->edit));
    json_t *meta = json_object_get(o, "meta");
    if (!json_is_object(meta)) {
        meta = json_object();
        json_object_set_new(o, "meta", meta);
    }
    json_object_set_new(meta, "review", json_string(label));
    return o;
}

static int write_samples(const lm_review *r, const char *path, int promoted_only, size_t *count, lm_err *err) {
    lm_sb b = {0};
    size_t k = 0;
    for (size_t i = 0; i < r->n && !b.oom; i++) {
        const item *it = &r->items[i];
        if (it->pub.state != LM_REVIEW_ACCEPTED || (promoted_only && !it->pub.promoted)) continue;
        json_t *o = reviewed(it, it->pub.promoted ? "promoted" : it->pub.edited ? "edited" : "accepted");
        if (promoted_only && o) json_object_set_new(json_object_get(o, "meta"), "id", json_string(it->pub.id));
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (s) lm_sb_printf(&b, "%s\n", s);
        else b.oom = true;
        free(s);
        k++;
    }
    if (b.oom) {
        lm_sb_free(&b);
        return lm_errf(err, "%s: out of memory", path);
    }
    int rc = lm_write_file_atomic(path, b.p ? b.p : "", b.len, err);
    lm_sb_free(&b);
    if (rc) return -1;
    if (count) *count = k;
    return 0;
}

int lm_review_decide(lm_review *r, size_t i, lm_review_action a, const char *answer, lm_err *err) {
    if (i >= r->n) return lm_errf(err, "review: no sample %zu (have %zu)", i, r->n);
    if ((unsigned)a > LM_REVIEW_PROMOTE) return lm_errf(err, "review: unknown action %d", (int)a);
    if (a == LM_REVIEW_EDIT && !answer) return lm_errf(err, "review: edit without an answer");
    json_t *o = json_pack("{s:s, s:s}", "id", r->items[i].pub.id, "action", action_names[a]);
    if (o && a == LM_REVIEW_EDIT) json_object_set_new(o, "answer", json_string(answer));
    if (!o || append(r, o, err)) return o ? -1 : lm_errf(err, "review: out of memory");
    if (log_push(r, i, a, a == LM_REVIEW_EDIT ? answer : NULL)) return lm_errf(err, "review: out of memory");
    int was_promoted = r->items[i].pub.promoted;
    refold(r, i);
    if (a == LM_REVIEW_PROMOTE || was_promoted || (a == LM_REVIEW_EDIT && r->items[i].pub.promoted))
        return write_samples(r, r->promoted, 1, NULL, err);
    return 0;
}

int lm_review_undo(lm_review *r, long *which, lm_err *err) {
    *which = -1;
    if (!r->nlog) return 0;
    json_t *o = json_pack("{s:s}", "action", "undo");
    if (!o || append(r, o, err)) return o ? -1 : lm_errf(err, "review: out of memory");
    action *l = &r->log[--r->nlog];
    size_t i = l->item;
    free(l->answer);
    if (i == SIZE_MAX) return 0;
    int was_promoted = r->items[i].pub.promoted;
    refold(r, i);
    *which = (long)i;
    if (was_promoted || r->items[i].pub.promoted) return write_samples(r, r->promoted, 1, NULL, err);
    return 0;
}

lm_review_counts lm_review_tally(const lm_review *r) {
    lm_review_counts c = {0};
    c.total = r->n;
    for (size_t i = 0; i < r->n; i++) {
        const lm_review_item *it = &r->items[i].pub;
        c.accepted += it->state == LM_REVIEW_ACCEPTED;
        c.rejected += it->state == LM_REVIEW_REJECTED;
        c.undecided += it->state == LM_REVIEW_UNDECIDED;
        c.edited += it->state == LM_REVIEW_ACCEPTED && it->edited;
        c.promoted += it->state == LM_REVIEW_ACCEPTED && it->promoted;
    }
    return c;
}

int lm_review_export(const lm_review *r, const char *path, size_t *n, lm_err *err) {
    return write_samples(r, path, 0, n, err);
}
