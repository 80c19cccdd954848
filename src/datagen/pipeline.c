/* A generation round (pipeline.h): two runner passes and the output files. */
#include "datagen/pipeline.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/fileio.h"
#include "base/strbuf.h"
#include "datagen/runner.h"

lm_datagen_opts lm_datagen_opts_default(void) {
    lm_datagen_opts o;
    memset(&o, 0, sizeof o);
    o.n = 100;
    o.seed = 42;
    o.mix = lm_qmix_default();
    o.round = 1;
    o.val_frac = 0.1;
    o.test_frac = 0.1;
    o.question_params = lm_teacher_params_default();
    o.answer_params = lm_teacher_params_default();
    return o;
}

/* ---- files ------------------------------------------------------------ */

/* One JSON value as a line (takes the reference). */
static void sb_json_line(lm_sb *b, json_t *o) {
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(o);
    if (!s) { b->oom = true; return; }
    lm_sb_str(b, s);
    lm_sb_add(b, "\n", 1);
    free(s);
}

static int write_sb(const char *dir, const char *name, lm_sb *b, lm_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (b->oom) return lm_errf(err, "%s: out of memory", path);
    return lm_write_file_atomic(path, b->p ? b->p : "", b->len, err);
}

int lm_datagen_results_parse(const char *name, const char *data, size_t len, const char *prefix,
                             char **replies, size_t n, lm_err *err) {
    int ln = 0;
    size_t pl = strlen(prefix);
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(data + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - data) + 1 : len;   /* the line with its '\n' */
        const char *line = data + at;
        size_t n_line = end - at;
        at = end;
        ln++;
        json_error_t je;
        json_t *o = json_loadb(line, n_line, 0, &je);
        const char *id = o ? json_string_value(json_object_get(o, "id")) : NULL;
        const char *reply = o ? json_string_value(json_object_get(o, "reply")) : NULL;
        if (!id || !reply) {
            json_decref(o);
            return lm_errf(err, "%s:%d: not a runner result line (id and reply expected)", name, ln);
        }
        char *endp;
        /* strtoull alone would take "q 5", "q+5" and "q-1" (as 2^64 - 1) */
        unsigned long long idx = strncmp(id, prefix, pl) || !isdigit((unsigned char)id[pl])
                                     ? (unsigned long long)-1
                                     : strtoull(id + pl, &endp, 10);
        if (idx != (unsigned long long)-1 && (*endp || endp == id + pl)) idx = (unsigned long long)-1;
        if (idx == (unsigned long long)-1) {
            lm_errf(err, "%s:%d: id '%s' is not one of this round's ('%sN')", name, ln, id, prefix);
            json_decref(o);
            return -1;
        }
        if (idx < n && !replies[idx] && !(replies[idx] = strdup(reply))) {
            json_decref(o);
            return lm_errf(err, "out of memory");
        }
        json_decref(o);
    }
    return 0;
}

/* Reads a runner result file (none yet: nothing) into replies[]. */
static int read_results(const char *path, const char *prefix, char **replies, size_t n,
                        lm_err *err) {
    char *data;
    size_t len;
    if (lm_read_file(path, &data, &len, true, err)) return -1;
    int rc = lm_datagen_results_parse(path, data, len, prefix, replies, n, err);
    free(data);
    return rc;
}

/* When the teacher answered none of a stage's requests, the run stops with
 * an error naming the first failure instead of writing empty datasets. */
static int nothing_came_back(const char *dir, const char *stage, size_t n, lm_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%ss.failures.jsonl", dir, stage);
    json_t *first = json_load_file(path, JSON_DISABLE_EOF_CHECK, NULL);
    const char *why = json_string_value(json_object_get(first, "error"));
    lm_errf(err, "the teacher answered none of the %zu %s requests (%s%s); no dataset written; "
            "the failures are in %s, and a rerun retries them", n, stage,
            why ? "the first: " : "see the failures file", why ? why : "", path);
    json_decref(first);
    return -1;
}

/* run.json: the parameters a journal was made with. */
static int check_run_file(const char *dir, const lm_character *c, const lm_datagen_opts *o,
                          lm_err *err) {
    char path[4096], mix[256], seed[32];
    snprintf(path, sizeof path, "%s/run.json", dir);
    lm_qmix_format(&o->mix, mix, sizeof mix);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    json_t *want = json_pack("{s:s, s:s, s:s, s:i, s:s}", "character", c->name ? c->name : "",
                             "seed", seed, "kinds", mix, "round", o->round, "system",
                             o->system == LM_DG_SYSTEM_PERSONA ? "persona" : "none");
    if (!want) return lm_errf(err, "out of memory");
    json_error_t je;
    json_t *have = json_load_file(path, 0, &je);
    if (have) {
        const char *keys[] = {"character", "seed", "kinds", "system"};
        for (size_t i = 0; i < 4; i++) {
            const char *a = json_string_value(json_object_get(have, keys[i]));
            const char *b = json_string_value(json_object_get(want, keys[i]));
            if (!a || strcmp(a, b)) {
                lm_errf(err, "%s: this folder holds a round made with %s '%s', not '%s'; "
                             "rerun with the same options or use another --out",
                        path, keys[i], a ? a : "(missing)", b);
                json_decref(have);
                json_decref(want);
                return -1;
            }
        }
        json_decref(have);
        json_decref(want);
        return 0;
    }
    if (access(path, F_OK) == 0) {
        lm_errf(err, "%s:%d: %s", path, je.line, je.text);
        json_decref(want);
        return -1;
    }
    char *s = json_dumps(want, JSON_INDENT(2));
    json_decref(want);
    if (!s) return lm_errf(err, "out of memory");
    size_t l = strlen(s);
    s[l] = '\n';
    int rc = lm_write_file_atomic(path, s, l + 1, err);
    free(s);
    return rc;
}

/* ---- statistics ------------------------------------------------------- */

typedef struct {
    char **k;
    size_t *v;
    size_t n;
} counter;

static void count(counter *c, const char *key) {
    if (!key) key = "(none)";
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->k[i], key)) { c->v[i]++; return; }
    char **nk = realloc(c->k, (c->n + 1) * sizeof *nk);
    if (nk) c->k = nk;
    size_t *nv = realloc(c->v, (c->n + 1) * sizeof *nv);
    if (nv) c->v = nv;
    char *d = strdup(key);
    if (!nk || !nv || !d) { free(d); return; }  /* statistics only: drop the key */
    c->k[c->n] = d;
    c->v[c->n++] = 1;
}

static void counter_free(counter *c) {
    for (size_t i = 0; i < c->n; i++) free(c->k[i]);
    free(c->k);
    free(c->v);
}

/* Most frequent first, then by name. */
static void counter_sort(counter *c) {
    for (size_t i = 1; i < c->n; i++)
        for (size_t j = i; j > 0 && (c->v[j] > c->v[j - 1] ||
                                     (c->v[j] == c->v[j - 1] && strcmp(c->k[j], c->k[j - 1]) < 0));
             j--) {
            char *tk = c->k[j]; c->k[j] = c->k[j - 1]; c->k[j - 1] = tk;
            size_t tv = c->v[j]; c->v[j] = c->v[j - 1]; c->v[j - 1] = tv;
        }
}

static json_t *counter_json(const counter *c) {
    json_t *o = json_object();
    for (size_t i = 0; i < c->n; i++) json_object_set_new(o, c->k[i], json_integer((json_int_t)c->v[i]));
    return o;
}

static void counter_md(lm_sb *b, const char *title, const counter *c, size_t total) {
    lm_sb_printf(b, "\n## %s\n\n| %s | count | share |\n| --- | ---: | ---: |\n", title, title);
    for (size_t i = 0; i < c->n; i++)
        lm_sb_printf(b, "| %s | %zu | %.1f%% |\n", c->k[i], c->v[i],
                  total ? 100.0 * (double)c->v[i] / (double)total : 0.0);
    if (!c->n) lm_sb_str(b, "| (none) | 0 | |\n");
}

static uint64_t hash_ngram(const uint64_t *w, int n) {
    uint64_t h = 0x84222325CBF29CE4ull;
    for (int i = 0; i < n; i++) h = (h ^ w[i]) * 0x100000001B3ull + (uint64_t)i;
    return h;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

double lm_distinct_n(const char *const *texts, size_t n_texts, int n) {
    if (n < 1 || n > 8) return 0;
    uint64_t *grams = NULL;
    size_t ng = 0, cap = 0;
    for (size_t t = 0; t < n_texts; t++) {
        const char *s = texts[t];
        uint64_t win[8];
        int have = 0;
        while (s && *s) {
            /* A word: letters, digits, apostrophes and any non-ASCII byte. */
            while (*s && !(isalnum((unsigned char)*s) || (unsigned char)*s >= 0x80)) s++;
            if (!*s) break;
            uint64_t h = 0xCBF29CE484222325ull;
            while (*s && (isalnum((unsigned char)*s) || *s == '\'' || (unsigned char)*s >= 0x80)) {
                h = (h ^ (uint64_t)tolower((unsigned char)*s)) * 0x100000001B3ull;
                s++;
            }
            if (have == n) { memmove(win, win + 1, (size_t)(n - 1) * sizeof *win); have--; }
            win[have++] = h;
            if (have == n) {
                if (ng == cap) {
                    cap = cap ? cap * 2 : 1024;
                    uint64_t *nv = realloc(grams, cap * sizeof *nv);
                    if (!nv) { free(grams); return 0; }
                    grams = nv;
                }
                grams[ng++] = hash_ngram(win, n);
            }
        }
    }
    if (!ng) { free(grams); return 0; }
    qsort(grams, ng, sizeof *grams, cmp_u64);
    size_t distinct = 1;
    for (size_t i = 1; i < ng; i++) distinct += grams[i] != grams[i - 1];
    free(grams);
    return (double)distinct / (double)ng;
}

/* ---- style examples --------------------------------------------------- */

void lm_style_examples_free(lm_style_example *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free((char *)v[i].question);
        free((char *)v[i].answer);
    }
    free(v);
}

int lm_style_examples_load(const char *path, lm_style_example **out, size_t *n_out, lm_err *err) {
    *out = NULL;
    *n_out = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return lm_errno(err, "%s", path);
    char *line = NULL;
    size_t cap = 0, n = 0;
    ssize_t len;
    int ln = 0, rc = 0;
    lm_style_example *v = NULL;
    while ((len = getline(&line, &cap, f)) > 0) {
        ln++;
        size_t k = 0;
        while (k < (size_t)len && isspace((unsigned char)line[k])) k++;
        if (k == (size_t)len) continue;
        json_error_t je;
        json_t *o = json_loadb(line, lm_line_len(line, (size_t)len), 0, &je);
        if (!o) { rc = lm_errf(err, "%s:%d:%d: %s", path, ln, je.column, je.text); break; }
        json_t *msgs = json_object_get(o, "messages");
        const char *q = NULL, *a = NULL;
        for (size_t i = 0; json_is_array(msgs) && i < json_array_size(msgs); i++) {
            json_t *m = json_array_get(msgs, i);
            const char *role = json_string_value(json_object_get(m, "role"));
            const char *content = json_string_value(json_object_get(m, "content"));
            if (!role || !content) continue;
            if (!strcmp(role, "user")) { q = content; a = NULL; }
            else if (!strcmp(role, "assistant") && q) a = content;
        }
        if (!q || !a) {
            json_decref(o);
            rc = lm_errf(err, "%s:%d: messages: a user message followed by an assistant message expected",
                         path, ln);
            break;
        }
        lm_style_example *nv = realloc(v, (n + 1) * sizeof *nv);
        if (!nv) { json_decref(o); rc = lm_errf(err, "out of memory"); break; }
        v = nv;
        v[n].question = strdup(q);
        v[n].answer = strdup(a);
        n++;
        json_decref(o);
        if (!v[n - 1].question || !v[n - 1].answer) { rc = lm_errf(err, "out of memory"); break; }
    }
    free(line);
    fclose(f);
    if (rc) { lm_style_examples_free(v, n); return -1; }
    *out = v;
    *n_out = n;
    return 0;
}

/* ---- the round -------------------------------------------------------- */

/* Default stops: a question is one paragraph (a small teacher rambles on
 * after it, slowly); an answer ends where the teacher starts writing the
 * other side of the dialogue. */
static const char *const Q_STOP[] = {"\n\n"};
static const char *const A_STOP[] = {"\nUser:", "\n**User"};

static lm_teacher_params with_defaults(lm_teacher_params p, float temp, int max_tokens,
                                       uint64_t seed, const char *const *stop, size_t n_stop) {
    if (p.temperature < 0) p.temperature = temp;
    if (p.max_tokens <= 0) p.max_tokens = max_tokens;
    if (!p.n_stop) {
        p.stop = stop;
        p.n_stop = n_stop;
    }
    p.has_seed = true;
    p.seed = seed;
    return p;
}

static void free_strs(char **v, size_t n) {
    for (size_t i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

static json_t *reasons_json(const lm_filter_result *r) {
    json_t *a = json_array();
    for (size_t i = 0; i < r->n_notes; i++)
        json_array_append_new(a, json_pack("{s:s, s:s}", "filter",
                                           lm_filter_name(r->notes[i].filter), "reason",
                                           r->notes[i].reason));
    return a;
}

static void reject(lm_sb *rej, counter *why, const lm_qspec *sp, const char *stage,
                   const char *q, const char *a, const char *filter, const char *reason,
                   const lm_filter_result *r) {
    json_t *reasons = r ? reasons_json(r) : json_pack("[{s:s, s:s}]", "filter", filter, "reason", reason);
    if (r)
        for (size_t i = 0; i < r->n_notes; i++) count(why, lm_filter_name(r->notes[i].filter));
    else
        count(why, filter);
    sb_json_line(rej, json_pack("{s:I, s:s, s:s, s:s?, s:s?, s:s, s:o}", "index", (json_int_t)sp->index,
                                "stage", stage, "kind", lm_qkind_name(sp->kind), "question", q,
                                "answer", a, "asker", sp->asker->name, "reasons", reasons));
}

/* The split of sample `index`: a seeded hash, so adding samples never
 * moves the old ones. 0 train, 1 validation, 2 test. */
static int split_of(uint64_t seed, size_t index, double val, double test) {
    uint64_t h = lm_dg_mix(seed ^ 0x5EED5EED5EEDull, index);
    double u = (double)(h >> 11) * 0x1.0p-53;
    return u < test ? 2 : u < test + val ? 1 : 0;
}

int lm_datagen_run(lm_teacher *t, const lm_character *c, const lm_world *w,
                   const lm_prompt_set *tpl, const lm_datagen_opts *o, lm_datagen_summary *s,
                   lm_err *err) {
    memset(s, 0, sizeof *s);
    s->requested = o->n;
    if (!o->out_dir || !*o->out_dir) return lm_errf(err, "no output folder");
    if (o->round < 1) return lm_errf(err, "round must be >= 1, got %d", o->round);
    if (!(o->val_frac >= 0 && o->test_frac >= 0 && o->val_frac + o->test_frac < 1))
        return lm_errf(err, "validation (%g) and test (%g) fractions must be >= 0 and sum below 1",
                       o->val_frac, o->test_frac);
    if (lm_mkdir_p(o->out_dir, err)) return -1;
    if (check_run_file(o->out_dir, c, o, err)) return -1;

    int rc = -1;
    lm_qgen *qg = NULL;
    lm_agen *ag = NULL;
    lm_filter_set *fs = NULL;
    lm_dedup *dq = NULL, *da = NULL;
    lm_request_list ql = {0}, al = {0};
    char **qreply = NULL, **areply = NULL, **question = NULL, *persona = NULL;
    lm_sb all = {0}, split[3] = {{0}}, rej = {0}, md = {0};
    counter by_kind = {0}, by_asker = {0}, by_loc = {0}, by_emotion = {0}, why = {0}, asked = {0};
    const char **kept_q = NULL, **kept_a = NULL;
    json_t *stats = NULL;
    char qpath[4096], apath[4096];
    snprintf(qpath, sizeof qpath, "%s/questions.jsonl", o->out_dir);
    snprintf(apath, sizeof apath, "%s/answers.jsonl", o->out_dir);

    lm_filter_config fcfg;
    if (o->filters) fcfg = *o->filters;
    else lm_filter_config_default(&fcfg);
    if (!(qg = lm_qgen_new(c, w, tpl, &o->mix, o->seed, err))) goto done;
    size_t budget = o->max_prompt_bytes ? o->max_prompt_bytes : 5000;
    if (budget == SIZE_MAX) budget = 0;
    if (!(ag = lm_agen_new(c, w, tpl, o->promoted, o->n_promoted, o->max_style_examples, budget,
                           err)))
        goto done;
    if (!(fs = lm_filter_set_new(&fcfg, c, err))) goto done;
    if (!(dq = lm_dedup_new(&fcfg, err)) || !(da = lm_dedup_new(&fcfg, err))) goto done;
    if (o->system == LM_DG_SYSTEM_PERSONA) {
        lm_persona_opts po = {o->persona_max_bytes ? o->persona_max_bytes : 4000, 1, 0, NULL};
        if (!(persona = lm_persona_prompt(c, w, &po, err))) goto done;
    }
    qreply = calloc(o->n + 1, sizeof *qreply);
    areply = calloc(o->n + 1, sizeof *areply);
    question = calloc(o->n + 1, sizeof *question);
    kept_q = calloc(o->n + 1, sizeof *kept_q);
    kept_a = calloc(o->n + 1, sizeof *kept_a);
    if (!qreply || !areply || !question || !kept_q || !kept_a) { lm_errf(err, "out of memory"); goto done; }

    /* Pass 1: questions. */
    for (size_t i = 0; i < o->n; i++) {
        lm_qspec sp;
        lm_qgen_draw(qg, i, &sp);
        count(&asked, lm_qkind_name(sp.kind));
        char *sys = NULL, *user = NULL, *meta = lm_qspec_meta_json(&sp), id[32];
        if (!meta || lm_qgen_messages(qg, &sp, &sys, &user, err)) {
            free(meta);
            if (!meta) lm_errf(err, "out of memory");
            goto done;
        }
        snprintf(id, sizeof id, "q%zu", i);
        lm_chat_msg m[2] = {{"system", sys}, {"user", user}};
        lm_teacher_params p = with_defaults(o->question_params, 0.9f, 160, sp.seed, Q_STOP, 1);
        int r = lm_request_list_add(&ql, id, m, 2, &p, meta, err);
        free(sys);
        free(user);
        free(meta);
        if (r) goto done;
    }
    lm_runner_opts ro = lm_runner_opts_default();
    ro.out_path = qpath;
    ro.progress = o->progress;
    ro.cancel = o->cancel;
    lm_runner_summary rs;
    if (lm_runner_run(t, &ql, &ro, &rs, err)) { lm_err_prefix(err, "questions"); goto done; }
    if (rs.cancelled) { s->cancelled = true; rc = 0; goto done; }
    if (read_results(qpath, "q", qreply, o->n, err)) goto done;

    /* Clean and screen the questions, then build the answer requests. */
    for (size_t i = 0; i < o->n; i++) {
        lm_qspec sp;
        lm_qgen_draw(qg, i, &sp);
        if (!qreply[i]) { s->q_failed++; continue; }
        s->q_ok++;
        char why_buf[128];
        question[i] = lm_question_clean(qreply[i], sp.asker->name, why_buf, sizeof why_buf);
        if (!question[i]) {
            s->q_rejected++;
            reject(&rej, &why, &sp, "question", qreply[i], NULL, "broken-turn", why_buf, NULL);
            continue;
        }
        lm_filter_sample x = {question[i], NULL, lm_qkind_name(sp.kind), c->name, sp.asker->name, 0};
        lm_filter_result fr;
        lm_filter_run(fs, &x, &fr);
        if (fr.pass) lm_dedup_check(dq, &x, &fr);
        if (!fr.pass) {
            s->q_rejected++;
            reject(&rej, &why, &sp, "question", question[i], NULL, NULL, NULL, &fr);
            free(question[i]);
            question[i] = NULL;
            continue;
        }
        if (lm_dedup_add(dq, &x, err) < 0) goto done;
        char *sys = lm_agen_system(ag, &sp, err), id[32], meta[64];
        if (!sys) goto done;
        snprintf(id, sizeof id, "a%zu", i);
        snprintf(meta, sizeof meta, "{\"question_id\":\"q%zu\"}", i);
        lm_chat_msg m[2] = {{"system", sys}, {"user", question[i]}};
        lm_teacher_params p = with_defaults(o->answer_params, 0.7f, 320, lm_dg_mix(sp.seed, 1), A_STOP, 2);
        int r = lm_request_list_add(&al, id, m, 2, &p, meta, err);
        free(sys);
        if (r) goto done;
    }

    if (o->n && !s->q_ok) { nothing_came_back(o->out_dir, "question", o->n, err); goto done; }

    /* Pass 2: answers. */
    ro.out_path = apath;
    if (lm_runner_run(t, &al, &ro, &rs, err)) { lm_err_prefix(err, "answers"); goto done; }
    if (rs.cancelled) { s->cancelled = true; rc = 0; goto done; }
    if (read_results(apath, "a", areply, o->n, err)) goto done;

    size_t n_kept = 0;
    for (size_t i = 0; i < o->n; i++) {
        if (!question[i]) continue;
        lm_qspec sp;
        lm_qgen_draw(qg, i, &sp);
        if (!areply[i]) { s->a_failed++; continue; }
        s->a_ok++;
        char why_buf[128];
        char *ans = lm_answer_clean(areply[i], c->name, sp.asker->name, why_buf, sizeof why_buf);
        if (!ans) {
            s->a_rejected++;
            reject(&rej, &why, &sp, "answer", question[i], areply[i], "broken-turn", why_buf, NULL);
            continue;
        }
        lm_filter_sample x = {question[i], ans, lm_qkind_name(sp.kind), c->name, sp.asker->name, 0};
        lm_filter_result fr;
        lm_filter_run(fs, &x, &fr);
        if (fr.pass) lm_dedup_check(da, &x, &fr);
        if (!fr.pass) {
            s->a_rejected++;
            reject(&rej, &why, &sp, "answer", question[i], ans, NULL, NULL, &fr);
            free(ans);
            continue;
        }
        if (lm_dedup_add(da, &x, err) < 0) { free(ans); goto done; }
        free(areply[i]);
        areply[i] = ans;      /* areply now holds the kept answer */
        kept_q[n_kept] = question[i];
        kept_a[n_kept++] = ans;

        json_t *passed = json_array();
        unsigned ok = fr.checked & ~fr.failed;
        for (int f = 0; f < LM_FILTER_COUNT; f++)
            if (ok & (1u << f)) json_array_append_new(passed, json_string(lm_filter_name(f)));
        char seed[32], idbuf[32];
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)sp.seed);
        snprintf(idbuf, sizeof idbuf, "r%d-%zu", o->round, i);
        json_t *msgs = json_array();
        if (persona) json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content", persona));
        json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", question[i]));
        json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "assistant", "content", ans));
        json_t *meta = json_pack(
            "{s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s?, s:s?, s:s, s:s, s:i, s:o}", "id",
            idbuf, "index", (json_int_t)i, "asker", sp.asker->name, "asker_role", sp.asker->role,
            "emotion", sp.emotion, "location", sp.location, "reason", sp.reason, "familiarity",
            sp.familiarity, "kind", lm_qkind_name(sp.kind), "topic_type", sp.topic_type, "topic",
            sp.topic, "teacher", lm_teacher_name(t), "seed", seed, "round", o->round,
            "filters_passed", passed);
        json_t *line = json_pack("{s:o, s:o}", "messages", msgs, "meta", meta);
        if (!line) { lm_errf(err, "sample %zu: cannot build JSON (bad UTF-8?)", i); goto done; }
        json_incref(line);
        sb_json_line(&all, line);
        int sp_i = split_of(o->seed, i, o->val_frac, o->test_frac);
        sb_json_line(&split[sp_i], line);
        (*(sp_i == 0 ? &s->train : sp_i == 1 ? &s->validation : &s->test))++;
        count(&by_kind, lm_qkind_name(sp.kind));
        count(&by_asker, sp.asker->name);
        count(&by_loc, sp.location);
        count(&by_emotion, sp.emotion);
    }
    s->kept = n_kept;
    if (al.n && !s->a_ok) { nothing_came_back(o->out_dir, "answer", al.n, err); goto done; }

    /* Statistics. */
    double dq1 = lm_distinct_n(kept_q, n_kept, 1), dq2 = lm_distinct_n(kept_q, n_kept, 2);
    double da1 = lm_distinct_n(kept_a, n_kept, 1), da2 = lm_distinct_n(kept_a, n_kept, 2);
    counter *cs[] = {&asked, &by_kind, &by_asker, &by_loc, &by_emotion, &why};
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) counter_sort(cs[i]);
    char mix[256], seedtxt[32];
    lm_qmix_format(&o->mix, mix, sizeof mix);
    snprintf(seedtxt, sizeof seedtxt, "%llu", (unsigned long long)o->seed);
    stats = json_pack(
        "{s:s, s:s, s:s, s:i, s:s, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I},"
        " s:o, s:o, s:o, s:o, s:o, s:o, s:{s:f, s:f, s:f, s:f}}",
        "character", c->name ? c->name : "", "teacher", lm_teacher_name(t), "seed", seedtxt,
        "round", o->round, "kinds", mix, "counts", "requested", (json_int_t)s->requested,
        "questions", (json_int_t)s->q_ok, "question_failures", (json_int_t)s->q_failed,
        "questions_rejected", (json_int_t)s->q_rejected, "answers", (json_int_t)s->a_ok,
        "answer_failures", (json_int_t)s->a_failed, "answers_rejected", (json_int_t)s->a_rejected,
        "kept", (json_int_t)s->kept, "train", (json_int_t)s->train, "validation",
        (json_int_t)s->validation, "test", (json_int_t)s->test, "requested_by_kind",
        counter_json(&asked), "kind", counter_json(&by_kind), "asker", counter_json(&by_asker),
        "location", counter_json(&by_loc), "emotion", counter_json(&by_emotion),
        "rejections", counter_json(&why), "diversity", "question_distinct_1", dq1,
        "question_distinct_2", dq2, "answer_distinct_1", da1, "answer_distinct_2", da2);
    if (!stats) { lm_errf(err, "out of memory"); goto done; }
    char *sj = json_dumps(stats, JSON_INDENT(2));
    if (!sj) { lm_errf(err, "out of memory"); goto done; }
    lm_sb js = {0};
    lm_sb_str(&js, sj);
    lm_sb_str(&js, "\n");
    free(sj);

    lm_sb_printf(&md, "# Dataset round %d: %s\n\nTeacher `%s`, seed %s, kinds %s.\n\n", o->round,
              c->name ? c->name : "", lm_teacher_name(t), seedtxt, mix);
    lm_sb_printf(&md, "| | count |\n| --- | ---: |\n| requested | %zu |\n| questions received | %zu |\n"
                   "| question failures (teacher) | %zu |\n| questions rejected | %zu |\n"
                   "| answers received | %zu |\n| answer failures (teacher) | %zu |\n"
                   "| answers rejected | %zu |\n| **kept** | **%zu** |\n"
                   "| train / validation / test | %zu / %zu / %zu |\n",
              s->requested, s->q_ok, s->q_failed, s->q_rejected, s->a_ok, s->a_failed,
              s->a_rejected, s->kept, s->train, s->validation, s->test);
    lm_sb_printf(&md, "\n## Diversity (distinct-n: distinct word n-grams / all n-grams)\n\n"
                   "| | distinct-1 | distinct-2 |\n| --- | ---: | ---: |\n"
                   "| questions | %.3f | %.3f |\n| answers | %.3f | %.3f |\n",
              dq1, dq2, da1, da2);
    counter_md(&md, "requested kind", &asked, s->requested);
    counter_md(&md, "kind", &by_kind, s->kept);
    counter_md(&md, "asker", &by_asker, s->kept);
    counter_md(&md, "location", &by_loc, s->kept);
    counter_md(&md, "emotion", &by_emotion, s->kept);
    size_t n_rej = 0;
    for (size_t i = 0; i < why.n; i++) n_rej += why.v[i];
    counter_md(&md, "rejection reason", &why, n_rej);
    lm_sb_str(&md, "\nEach rejected sample, with its reasons, is in rejected.jsonl; teacher failures "
                "are in questions.failures.jsonl and answers.failures.jsonl (a rerun retries them).\n");

    if (write_sb(o->out_dir, "dataset.jsonl", &all, err) ||
        write_sb(o->out_dir, "train.jsonl", &split[0], err) ||
        write_sb(o->out_dir, "validation.jsonl", &split[1], err) ||
        write_sb(o->out_dir, "test.jsonl", &split[2], err) ||
        write_sb(o->out_dir, "rejected.jsonl", &rej, err) ||
        write_sb(o->out_dir, "stats.json", &js, err) || write_sb(o->out_dir, "stats.md", &md, err)) {
        lm_sb_free(&js);
        goto done;
    }
    lm_sb_free(&js);
    rc = 0;
done:
    json_decref(stats);
    for (size_t i = 0; i < sizeof split / sizeof split[0]; i++) lm_sb_free(&split[i]);
    lm_sb_free(&all);
    lm_sb_free(&rej);
    lm_sb_free(&md);
    counter_free(&by_kind);
    counter_free(&by_asker);
    counter_free(&by_loc);
    counter_free(&by_emotion);
    counter_free(&why);
    counter_free(&asked);
    free(kept_q);
    free(kept_a);
    free_strs(qreply, o->n);
    free_strs(areply, o->n);
    free_strs(question, o->n);
    free(persona);
    lm_request_list_free(&ql);
    lm_request_list_free(&al);
    lm_dedup_free(dq);
    lm_dedup_free(da);
    lm_filter_set_free(fs);
    lm_agen_free(ag);
    lm_qgen_free(qg);
    return rc;
}
