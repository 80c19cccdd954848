/* Preference pairs: TRL's DPO JSONL -> token sequences with completion
 * masks (format in dpo.h), fitting to max_len and the seeded split. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "train/chat_jsonl.h"
#include "train/dpo.h"

/* A message list, pointing into the JSON tree. */
typedef struct msgs {
    lm_chat_msg *m;
    size_t n;
} msgs;

/* v: a string (one message of role `role`) or an array of {"role",
 * "content"} objects. */
static int parse_msgs(json_t *v, const char *field, const char *role, msgs *out, lm_err *err) {
    out->m = NULL;
    out->n = 0;
    if (json_is_string(v)) {
        if (strlen(json_string_value(v)) != json_string_length(v))
            return lm_errf(err, "%s: contains a NUL character", field);
        if (!(out->m = calloc(1, sizeof *out->m))) return lm_errf(err, "out of memory");
        out->m[0] = (lm_chat_msg){role, json_string_value(v)};
        out->n = 1;
        return 0;
    }
    if (!json_is_array(v))
        return lm_errf(err, "%s: expected a string or an array of messages", field);
    int n = lm_chat_parse_messages(v, field, &out->m, err);
    if (n < 0) return -1;
    out->n = (size_t)n;
    return 0;
}

static int same_msg(const lm_chat_msg *a, const lm_chat_msg *b) {
    return !strcmp(a->role, b->role) && !strcmp(a->content, b->content);
}

static int completion_ok(const msgs *c, size_t from, const char *field, lm_err *err) {
    if (c->n <= from) return lm_errf(err, "%s: nothing after the prompt", field);
    for (size_t i = from; i < c->n; i++)
        if (strcmp(c->m[i].role, "assistant"))
            return lm_errf(err, "%s[%zu].role: a completion holds assistant messages, got '%s'",
                           field, i, c->m[i].role);
    return 0;
}

/* The line's prompt and two completions (pointing into root). */
typedef struct parsed {
    msgs prompt, side[2];
    size_t from[2];          /* first completion message of side[k] (implicit prompt) */
    int implicit;            /* prompt is side[0].m[0..from[0]) */
} parsed;

static void parsed_free(parsed *p) {
    if (!p->implicit) free(p->prompt.m);
    free(p->side[0].m);
    free(p->side[1].m);
    memset(p, 0, sizeof *p);
}

static int parse_pair(json_t *root, parsed *p, lm_err *err) {
    memset(p, 0, sizeof *p);
    if (!json_is_object(root)) return lm_errf(err, "expected a JSON object per line");
    static const char *const names[2] = {"chosen", "rejected"};
    json_t *pv = json_object_get(root, "prompt");
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(root, names[k]);
        if (!v) {
            parsed_free(p);
            return lm_errf(err, "%s: missing", names[k]);
        }
        if (!pv && !json_is_array(v)) {
            parsed_free(p);
            return lm_errf(err, "no \"prompt\": chosen and rejected must then be whole "
                                "conversations (arrays of messages)");
        }
        if (parse_msgs(v, names[k], "assistant", &p->side[k], err)) {
            parsed_free(p);
            return -1;
        }
    }
    if (pv) {
        if (parse_msgs(pv, "prompt", "user", &p->prompt, err)) {
            parsed_free(p);
            return -1;
        }
    } else {
        /* TRL's implicit prompt: the longest common run of leading messages */
        size_t k = 0;
        while (k < p->side[0].n && k < p->side[1].n && same_msg(&p->side[0].m[k], &p->side[1].m[k])) k++;
        if (k == 0) {
            parsed_free(p);
            return lm_errf(err, "no \"prompt\", and chosen and rejected share no leading message");
        }
        p->implicit = 1;
        p->prompt.m = p->side[0].m;
        p->prompt.n = k;
        p->from[0] = p->from[1] = k;
    }
    for (int k = 0; k < 2; k++)
        if (completion_ok(&p->side[k], p->from[k], names[k], err)) {
            parsed_free(p);
            return -1;
        }
    size_t nc = p->side[0].n - p->from[0], nr = p->side[1].n - p->from[1];
    int same = nc == nr;
    for (size_t i = 0; same && i < nc; i++)
        same = same_msg(&p->side[0].m[p->from[0] + i], &p->side[1].m[p->from[1] + i]);
    if (same) {
        parsed_free(p);
        return lm_errf(err, "chosen and rejected are the same completion: nothing to prefer");
    }
    return 0;
}

/* One side: render(prompt + completion), the prompt's tokens masked off. */
static int render_side(const lm_tokenizer *t, const parsed *p, int k, const lm_sft_example *pe,
                       lm_sft_example *ex, lm_err *err) {
    size_t nc = p->side[k].n - p->from[k], n = p->prompt.n + nc;
    lm_chat_msg *all = malloc(n * sizeof *all);
    if (!all) return lm_errf(err, "out of memory");
    memcpy(all, p->prompt.m, p->prompt.n * sizeof *all);
    memcpy(all + p->prompt.n, p->side[k].m + p->from[k], nc * sizeof *all);
    int rc = lm_sft_render(t, all, n, ex, NULL, err);
    free(all);
    if (rc) return lm_err_prefix(err, "%s", k ? "rejected" : "chosen");
    if (ex->n <= pe->n || memcmp(ex->tokens, pe->tokens, (size_t)pe->n * sizeof *ex->tokens)) {
        lm_sft_example_free(ex);
        return lm_errf(err, "%s: the prompt renders to other tokens before the completion",
                       k ? "rejected" : "chosen");
    }
    memset(ex->mask, 0, (size_t)pe->n);
    ex->n_trained = 0;
    for (int i = 1; i < ex->n; i++) ex->n_trained += ex->mask[i];
    return 0;
}

static int render_pair(const lm_tokenizer *t, const parsed *p, lm_dpo_pair *out, lm_err *err) {
    memset(out, 0, sizeof *out);
    lm_sft_example pe;
    if (lm_sft_render(t, p->prompt.m, p->prompt.n, &pe, NULL, err))
        return lm_err_prefix(err, "prompt");
    int rc = 0;
    for (int k = 0; k < 2 && rc == 0; k++) rc = render_side(t, p, k, &pe, &out->seq[k], err);
    if (rc) {
        lm_sft_example_free(&out->seq[0]);
        lm_sft_example_free(&out->seq[1]);
    } else {
        out->n_prompt = pe.n;
        out->hash = out->seq[0].hash * 0x100000001b3ull ^ out->seq[1].hash;
    }
    lm_sft_example_free(&pe);
    return rc;
}

static void recount(lm_dpo_set *s) {
    lm_dpo_stats *st = &s->stats;
    st->pairs = s->n;
    st->tokens = st->trained_tokens = 0;
    for (int i = 0; i < s->n; i++)
        for (int k = 0; k < 2; k++) {
            st->tokens += s->p[i].seq[k].n;
            st->trained_tokens += s->p[i].seq[k].n_trained;
        }
}

typedef struct loader {
    const char *name;
    const lm_tokenizer *tok;
    lm_sft_opts opts;
    lm_dpo_set *s;
    int cap;
} loader;

/* A line's object into the set: 0 kept, 1 a bad line (e set), -1 the load
 * fails (err set). */
static int take_line(loader *L, json_t *root, int lineno, lm_err *e, lm_err *err) {
    parsed p = {0};
    lm_dpo_pair pair;
    int rc = -1;
    if (parse_pair(root, &p, e) == 0) {
        rc = render_pair(L->tok, &p, &pair, e);
        parsed_free(&p);
    }
    if (rc) {
        lm_err_prefix(e, "%s:%d", L->name, lineno);
        return 1;
    }
    if (L->s->n == L->cap) {
        int cap = L->cap ? L->cap * 2 : 64;
        lm_dpo_pair *np = realloc(L->s->p, (size_t)cap * sizeof *np);
        if (!np) {
            lm_sft_example_free(&pair.seq[0]);
            lm_sft_example_free(&pair.seq[1]);
            return lm_errf(err, "%s:%d: out of memory", L->name, lineno);
        }
        L->s->p = np;
        L->cap = cap;
    }
    pair.line = pair.seq[0].line = pair.seq[1].line = lineno;
    L->s->p[L->s->n++] = pair;
    return 0;
}

/* Every line of r (closed here) into L's set, under L's bad-line policy. */
static int take_all(loader *L, lm_jsonl *r, lm_err *err) {
    if (!r) return -1;
    json_t *root;
    lm_err e = {{0}};
    int rc, fail = 0;
    while (!fail && (rc = lm_jsonl_next(r, &root, &e)) != LM_JSONL_END) {
        int bad = rc == LM_JSONL_OK ? take_line(L, root, lm_jsonl_line(r), &e, err) : 1;
        if (bad < 0 || (bad && lm_jsonl_bad_line(&L->opts, L->name, &L->s->stats.skipped, &e, err)))
            fail = 1;
    }
    lm_jsonl_close(r);
    return fail ? -1 : 0;
}

/* Reads path, or buf[0..len) when path is NULL (name in messages). */
static int load(const char *name, const char *path, const char *buf, size_t len,
                const lm_tokenizer *t, const lm_sft_opts *opts, lm_dpo_set **out, lm_err *err) {
    *out = NULL;
    loader L = {.name = name, .tok = t, .opts = opts ? *opts : lm_sft_opts_default()};
    if (!(L.s = calloc(1, sizeof *L.s))) return lm_errf(err, "out of memory");
    L.s->pad_id = lm_sft_pad_id(t);
    lm_jsonl *r = path ? lm_jsonl_open(path, err) : lm_jsonl_open_mem(name, buf, len, err);
    if (take_all(&L, r, err)) {
        lm_dpo_set_free(L.s);
        return -1;
    }
    lm_dpo_set *s = L.s;
    for (int i = 0; i < s->n; i++)
        for (int k = 0; k < 2; k++)
            if (s->p[i].seq[k].n > s->stats.longest) s->stats.longest = s->p[i].seq[k].n;
    if (L.opts.max_len > 0) lm_dpo_fit(s, L.opts.max_len, L.opts.overlong);
    recount(s);
    if (s->n == 0) {
        lm_errf(err, "%s: no usable pair (%ld bad lines skipped, %ld dropped)", name,
                s->stats.skipped, s->stats.dropped);
        lm_dpo_set_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

int lm_dpo_load_mem(const char *name, const char *buf, size_t len, const lm_tokenizer *t,
                    const lm_sft_opts *opts, lm_dpo_set **out, lm_err *err) {
    return load(name, NULL, buf, len, t, opts, out, err);
}

int lm_dpo_load(const char *path, const lm_tokenizer *t, const lm_sft_opts *opts, lm_dpo_set **out,
                lm_err *err) {
    return load(path, path, NULL, 0, t, opts, out, err);
}

static void pair_free(lm_dpo_pair *p) {
    lm_sft_example_free(&p->seq[0]);
    lm_sft_example_free(&p->seq[1]);
}

void lm_dpo_set_free(lm_dpo_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) pair_free(&s->p[i]);
    free(s->p);
    free(s);
}

void lm_dpo_fit(lm_dpo_set *s, int max_len, int policy) {
    if (max_len <= 0) return;
    int kept = 0;
    for (int i = 0; i < s->n; i++) {
        lm_dpo_pair *p = &s->p[i];
        int cut = 0, empty = 0;
        for (int k = 0; k < 2; k++) {
            lm_sft_example *e = &p->seq[k];
            if (e->n <= max_len) continue;
            cut = 1;
            if (policy == LM_SFT_DROP) continue;
            e->n = max_len;
            e->truncated = true;
            e->n_trained = 0;
            for (int j = 1; j < e->n; j++) e->n_trained += e->mask[j];
        }
        for (int k = 0; k < 2; k++) empty |= p->seq[k].n_trained == 0;
        if ((cut && policy == LM_SFT_DROP) || empty) {
            s->stats.dropped++;
            pair_free(p);
            continue;
        }
        s->stats.truncated += cut;
        s->p[kept++] = *p;
    }
    s->n = kept;
    recount(s);
}

/* ---- split (the rule of lm_sft_split) -------------------------------------- */

static lm_dpo_set *copy_some(const lm_dpo_set *s, const uint8_t *side, uint8_t want, lm_err *err) {
    lm_dpo_set *o = calloc(1, sizeof *o);
    if (!o) goto oom;
    o->pad_id = s->pad_id;
    o->stats.longest = s->stats.longest;
    int n = 0;
    for (int i = 0; i < s->n; i++) n += side[i] == want;
    if (!(o->p = calloc(n ? (size_t)n : 1, sizeof *o->p))) goto oom;
    for (int i = 0; i < s->n; i++) {
        if (side[i] != want) continue;
        lm_dpo_pair *c = &o->p[o->n];
        *c = s->p[i];
        memset(c->seq, 0, sizeof c->seq);
        o->n++;
        for (int k = 0; k < 2; k++)
            if (lm_sft_example_copy(&c->seq[k], &s->p[i].seq[k])) goto oom;
    }
    recount(o);
    return o;
oom:
    lm_dpo_set_free(o);
    lm_errf(err, "out of memory");
    return NULL;
}

static uint64_t pair_hash(const void *set, int i) { return ((const lm_dpo_set *)set)->p[i].hash; }

int lm_dpo_split(const lm_dpo_set *s, double val_frac, uint64_t seed, lm_dpo_set **train,
                 lm_dpo_set **val, lm_err *err) {
    *train = *val = NULL;
    uint8_t *side = lm_sft_split_sides(s, s->n, pair_hash, val_frac, seed, err);
    if (!side) return -1;
    *train = copy_some(s, side, 0, err);
    *val = *train ? copy_some(s, side, 1, err) : NULL;
    free(side);
    if (!*val) {
        lm_dpo_set_free(*train);
        *train = NULL;
        return -1;
    }
    return 0;
}
