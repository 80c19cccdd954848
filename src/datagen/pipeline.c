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
#include "datagen/stats.h"
#include "train/jsonl.h"

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
    lm_jsonl *in = lm_jsonl_open_mem(name, data, len, err);
    if (!in) return -1;
    size_t pl = strlen(prefix);
    json_t *o;
    int got, rc = 0;
    while (rc == 0 && (got = lm_jsonl_next(in, &o, err)) != LM_JSONL_END) {
        if (got != LM_JSONL_OK) {
            rc = -1;
            break;
        }
        int ln = lm_jsonl_line(in);
        const char *id = json_string_value(json_object_get(o, "id"));
        const char *reply = json_string_value(json_object_get(o, "reply"));
        if (!id || !reply) {
            rc = lm_errf(err, "%s:%d: not a runner result line (id and reply expected)", name, ln);
            break;
        }
        char *endp;
        /* strtoull alone would take "q 5", "q+5" and "q-1" (as 2^64 - 1) */
        unsigned long long idx = strncmp(id, prefix, pl) || !isdigit((unsigned char)id[pl])
                                     ? (unsigned long long)-1
                                     : strtoull(id + pl, &endp, 10);
        if (idx != (unsigned long long)-1 && (*endp || endp == id + pl)) idx = (unsigned long long)-1;
        if (idx == (unsigned long long)-1)
            rc = lm_errf(err, "%s:%d: id '%s' is not one of this round's ('%sN')", name, ln, id, prefix);
        else if (idx < n && !replies[idx] && !(replies[idx] = strdup(reply)))
            rc = lm_errf(err, "out of memory");
    }
    lm_jsonl_close(in);
    return rc;
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

static void reject(lm_sb *rej, lm_dg_counter *why, const lm_qspec *sp, const char *stage,
                   const char *q, const char *a, const char *filter, const char *reason,
                   const lm_filter_result *r) {
    json_t *reasons = r ? reasons_json(r) : json_pack("[{s:s, s:s}]", "filter", filter, "reason", reason);
    if (r)
        for (size_t i = 0; i < r->n_notes; i++)
            lm_dg_count(why, lm_filter_name(r->notes[i].filter));
    else
        lm_dg_count(why, filter);
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


/* What a round holds from its set-up to its files; the steps below fill
 * it in order and round_free releases it whatever step stopped. */
typedef struct {
    lm_teacher *t;
    const lm_character *c;
    const lm_datagen_opts *o;
    lm_datagen_summary *s;
    lm_qgen *qg;
    lm_agen *ag;
    lm_filter_set *fs;
    lm_dedup *dq, *da;          /* near-duplicates among kept questions / answers */
    char *persona;              /* the samples' system message, or NULL */
    /* spec[i]: request i's spec, drawn once (a pure function of the seed
     * and i) and read by every step after. */
    lm_qspec *spec;
    lm_request_list ql, al;
    char **qreply, **areply;    /* [n] the teacher's replies, NULL where none came back */
    char **question;            /* [n] the cleaned question, NULL where it was rejected */
    const char **kept_q, **kept_a;   /* [n_kept] borrowed from question[] / areply[] */
    size_t n_kept;
    lm_sb all, split[3], rej, stats_json, stats_md;
    lm_dg_counter by_kind, by_asker, by_loc, by_emotion, why, asked;
    char qpath[4096], apath[4096];
} round_st;

static void round_free(round_st *R) {
    size_t n = R->o->n;
    for (size_t i = 0; i < sizeof R->split / sizeof R->split[0]; i++) lm_sb_free(&R->split[i]);
    lm_sb_free(&R->all);
    lm_sb_free(&R->rej);
    lm_sb_free(&R->stats_json);
    lm_sb_free(&R->stats_md);
    lm_dg_counter_free(&R->by_kind);
    lm_dg_counter_free(&R->by_asker);
    lm_dg_counter_free(&R->by_loc);
    lm_dg_counter_free(&R->by_emotion);
    lm_dg_counter_free(&R->why);
    lm_dg_counter_free(&R->asked);
    free(R->kept_q);
    free(R->kept_a);
    free_strs(R->qreply, n);
    free_strs(R->areply, n);
    free_strs(R->question, n);
    free(R->spec);
    free(R->persona);
    lm_request_list_free(&R->ql);
    lm_request_list_free(&R->al);
    lm_dedup_free(R->dq);
    lm_dedup_free(R->da);
    lm_filter_set_free(R->fs);
    lm_agen_free(R->ag);
    lm_qgen_free(R->qg);
}

/* The generators, filters and persona of the round, and every request's
 * spec. */
static int round_setup(round_st *R, const lm_world *w, const lm_prompt_set *tpl, lm_err *err) {
    const lm_datagen_opts *o = R->o;
    snprintf(R->qpath, sizeof R->qpath, "%s/questions.jsonl", o->out_dir);
    snprintf(R->apath, sizeof R->apath, "%s/answers.jsonl", o->out_dir);
    lm_filter_config fcfg;
    if (o->filters) fcfg = *o->filters;
    else lm_filter_config_default(&fcfg);
    if (!(R->qg = lm_qgen_new(R->c, w, tpl, &o->mix, o->seed, err))) return -1;
    size_t budget = o->max_prompt_bytes ? o->max_prompt_bytes : 5000;
    if (budget == SIZE_MAX) budget = 0;
    if (!(R->ag = lm_agen_new(R->c, w, tpl, o->promoted, o->n_promoted, o->max_style_examples,
                              budget, err)))
        return -1;
    if (!(R->fs = lm_filter_set_new(&fcfg, R->c, err))) return -1;
    if (!(R->dq = lm_dedup_new(&fcfg, err)) || !(R->da = lm_dedup_new(&fcfg, err))) return -1;
    if (o->system == LM_DG_SYSTEM_PERSONA) {
        lm_persona_opts po = {o->persona_max_bytes ? o->persona_max_bytes : 4000, 1, 0, NULL};
        if (!(R->persona = lm_persona_prompt(R->c, w, &po, err))) return -1;
    }
    /* n + 1: calloc(0) may return NULL */
    R->spec = calloc(o->n + 1, sizeof *R->spec);
    R->qreply = calloc(o->n + 1, sizeof *R->qreply);
    R->areply = calloc(o->n + 1, sizeof *R->areply);
    R->question = calloc(o->n + 1, sizeof *R->question);
    R->kept_q = calloc(o->n + 1, sizeof *R->kept_q);
    R->kept_a = calloc(o->n + 1, sizeof *R->kept_a);
    if (!R->spec || !R->qreply || !R->areply || !R->question || !R->kept_q || !R->kept_a)
        return lm_errf(err, "out of memory");
    for (size_t i = 0; i < o->n; i++) lm_qgen_draw(R->qg, i, &R->spec[i]);
    return 0;
}

/* Sends one stage's requests through the runner, whose journal at path
 * holds what earlier runs got (those are not asked again), then reads
 * every reply of the journal into replies[]. Stopped by o->cancel:
 * s->cancelled, nothing read. */
static int ask(round_st *R, const lm_request_list *l, const char *path, const char *prefix,
               const char *stage, char **replies, lm_err *err) {
    lm_runner_opts ro = lm_runner_opts_default();
    ro.out_path = path;
    ro.progress = R->o->progress;
    ro.cancel = R->o->cancel;
    lm_runner_summary rs;
    if (lm_runner_run(R->t, l, &ro, &rs, err)) return lm_err_prefix(err, "%s", stage);
    if (rs.cancelled) {
        R->s->cancelled = true;
        return 0;
    }
    return read_results(path, prefix, replies, R->o->n, err);
}

/* Request i's question request: the spec rendered by the templates. */
static int add_question_request(round_st *R, size_t i, lm_err *err) {
    const lm_qspec *sp = &R->spec[i];
    char *sys = NULL, *user = NULL, *meta = lm_qspec_meta_json(sp), id[32];
    if (!meta || lm_qgen_messages(R->qg, sp, &sys, &user, err)) {
        free(meta);
        return meta ? -1 : lm_errf(err, "out of memory");
    }
    snprintf(id, sizeof id, "q%zu", i);
    lm_chat_msg m[2] = {{"system", sys}, {"user", user}};
    lm_teacher_params p = with_defaults(R->o->question_params, 0.9f, 160, sp->seed, Q_STOP, 1);
    int r = lm_request_list_add(&R->ql, id, m, 2, &p, meta, err);
    free(sys);
    free(user);
    free(meta);
    return r;
}

/* The answer request for kept question i: the character's system message
 * for this asker and situation, the question as the user's turn. */
static int add_answer_request(round_st *R, size_t i, lm_err *err) {
    const lm_qspec *sp = &R->spec[i];
    char *sys = lm_agen_system(R->ag, sp, err), id[32], meta[64];
    if (!sys) return -1;
    snprintf(id, sizeof id, "a%zu", i);
    snprintf(meta, sizeof meta, "{\"question_id\":\"q%zu\"}", i);
    lm_chat_msg m[2] = {{"system", sys}, {"user", R->question[i]}};
    lm_teacher_params p =
        with_defaults(R->o->answer_params, 0.7f, 320, lm_dg_mix(sp->seed, 1), A_STOP, 2);
    int r = lm_request_list_add(&R->al, id, m, 2, &p, meta, err);
    free(sys);
    return r;
}

/* Screens one teacher reply, a question (q NULL) or the answer to
 * question q, the same way for both: cleaned (a reply with no usable turn
 * is a broken turn), then the filters, then near-duplicates of the
 * stage's kept texts. Kept: 1, *out the cleaned text (malloc'd), *fr what
 * passed. Rejected: 0, recorded in rejected.jsonl and counted, *out NULL.
 * -1 on error. */
static int screen(round_st *R, const lm_qspec *sp, const char *q, const char *raw, char **out,
                  lm_filter_result *fr, lm_err *err) {
    bool answer = q != NULL;
    const char *stage = answer ? "answer" : "question";
    size_t *rejected = answer ? &R->s->a_rejected : &R->s->q_rejected;
    lm_dedup *dd = answer ? R->da : R->dq;
    char why_buf[128];
    char *text = answer ? lm_answer_clean(raw, R->c->name, sp->asker->name, why_buf, sizeof why_buf)
                        : lm_question_clean(raw, sp->asker->name, why_buf, sizeof why_buf);
    *out = NULL;
    if (!text) {
        (*rejected)++;
        reject(&R->rej, &R->why, sp, stage, answer ? q : raw, answer ? raw : NULL, "broken-turn",
               why_buf, NULL);
        return 0;
    }
    lm_filter_sample x = {answer ? q : text, answer ? text : NULL, lm_qkind_name(sp->kind),
                          R->c->name, sp->asker->name, 0, 0};
    lm_filter_run(R->fs, &x, fr);
    if (fr->pass) lm_dedup_check(dd, &x, fr);
    if (!fr->pass) {
        (*rejected)++;
        reject(&R->rej, &R->why, sp, stage, x.question, x.answer, NULL, NULL, fr);
        free(text);
        return 0;
    }
    if (lm_dedup_add(dd, &x, err) < 0) { free(text); return -1; }
    *out = text;
    return 1;
}

/* Pass 1: every question asked, screened, and the kept ones turned into
 * answer requests. */
static int questions(round_st *R, lm_err *err) {
    size_t n = R->o->n;
    for (size_t i = 0; i < n; i++) {
        lm_dg_count(&R->asked, lm_qkind_name(R->spec[i].kind));
        if (add_question_request(R, i, err)) return -1;
    }
    if (ask(R, &R->ql, R->qpath, "q", "questions", R->qreply, err)) return -1;
    if (R->s->cancelled) return 0;
    for (size_t i = 0; i < n; i++) {
        if (!R->qreply[i]) { R->s->q_failed++; continue; }
        R->s->q_ok++;
        lm_filter_result fr;
        int r = screen(R, &R->spec[i], NULL, R->qreply[i], &R->question[i], &fr, err);
        if (r < 0) return -1;
        if (r && add_answer_request(R, i, err)) return -1;
    }
    if (n && !R->s->q_ok) return nothing_came_back(R->o->out_dir, "question", n, err);
    return 0;
}

/* A kept sample's line in dataset.jsonl and its split's file, and the
 * statistics of what was kept. */
static int emit(round_st *R, size_t i, const char *ans, const lm_filter_result *fr, lm_err *err) {
    const lm_datagen_opts *o = R->o;
    const lm_qspec *sp = &R->spec[i];
    lm_datagen_summary *s = R->s;
    json_t *passed = json_array();
    unsigned ok = fr->checked & ~fr->failed;
    for (int f = 0; f < LM_FILTER_COUNT; f++)
        if (ok & (1u << f)) json_array_append_new(passed, json_string(lm_filter_name(f)));
    char seed[32], idbuf[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)sp->seed);
    snprintf(idbuf, sizeof idbuf, "r%d-%zu", o->round, i);
    json_t *msgs = json_array();
    if (R->persona)
        json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content", R->persona));
    json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", R->question[i]));
    json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "assistant", "content", ans));
    json_t *meta = json_pack(
        "{s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s?, s:s?, s:s, s:s, s:i, s:o}", "id",
        idbuf, "index", (json_int_t)i, "asker", sp->asker->name, "asker_role", sp->asker->role,
        "emotion", sp->emotion, "location", sp->location, "reason", sp->reason, "familiarity",
        sp->familiarity, "kind", lm_qkind_name(sp->kind), "topic_type", sp->topic_type, "topic",
        sp->topic, "teacher", lm_teacher_name(R->t), "seed", seed, "round", o->round,
        "filters_passed", passed);
    json_t *line = json_pack("{s:o, s:o}", "messages", msgs, "meta", meta);
    if (!line) return lm_errf(err, "sample %zu: cannot build JSON (bad UTF-8?)", i);
    json_incref(line);
    sb_json_line(&R->all, line);
    int sp_i = split_of(o->seed, i, o->val_frac, o->test_frac);
    sb_json_line(&R->split[sp_i], line);
    (*(sp_i == 0 ? &s->train : sp_i == 1 ? &s->validation : &s->test))++;
    lm_dg_count(&R->by_kind, lm_qkind_name(sp->kind));
    lm_dg_count(&R->by_asker, sp->asker->name);
    lm_dg_count(&R->by_loc, sp->location);
    lm_dg_count(&R->by_emotion, sp->emotion);
    return 0;
}

/* Pass 2: every kept question's answer asked, screened and emitted. */
static int answers(round_st *R, lm_err *err) {
    lm_datagen_summary *s = R->s;
    if (ask(R, &R->al, R->apath, "a", "answers", R->areply, err)) return -1;
    if (s->cancelled) return 0;
    for (size_t i = 0; i < R->o->n; i++) {
        if (!R->question[i]) continue;
        if (!R->areply[i]) { s->a_failed++; continue; }
        s->a_ok++;
        lm_filter_result fr;
        char *ans;
        int r = screen(R, &R->spec[i], R->question[i], R->areply[i], &ans, &fr, err);
        if (r < 0) return -1;
        if (!r) continue;
        free(R->areply[i]);
        R->areply[i] = ans;      /* areply now holds the kept answer */
        R->kept_q[R->n_kept] = R->question[i];
        R->kept_a[R->n_kept++] = ans;
        if (emit(R, i, ans, &fr, err)) return -1;
    }
    s->kept = R->n_kept;
    if (R->al.n && !s->a_ok) return nothing_came_back(R->o->out_dir, "answer", R->al.n, err);
    return 0;
}

/* stats.json and stats.md: counts, diversity, and what was asked, kept
 * and rejected by kind, asker, location, emotion and reason. */
static int report(round_st *R, lm_err *err) {
    const lm_datagen_opts *o = R->o;
    const lm_datagen_summary *s = R->s;
    const lm_character *c = R->c;
    size_t n_kept = R->n_kept;
    double dq1 = lm_distinct_n(R->kept_q, n_kept, 1), dq2 = lm_distinct_n(R->kept_q, n_kept, 2);
    double da1 = lm_distinct_n(R->kept_a, n_kept, 1), da2 = lm_distinct_n(R->kept_a, n_kept, 2);
    lm_dg_counter *cs[] = {&R->asked,  &R->by_kind,    &R->by_asker,
                           &R->by_loc, &R->by_emotion, &R->why};
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) lm_dg_counter_sort(cs[i]);
    char mix[256], seedtxt[32];
    lm_qmix_format(&o->mix, mix, sizeof mix);
    snprintf(seedtxt, sizeof seedtxt, "%llu", (unsigned long long)o->seed);
    json_t *stats = json_pack(
        "{s:s, s:s, s:s, s:i, s:s, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I},"
        " s:o, s:o, s:o, s:o, s:o, s:o, s:{s:f, s:f, s:f, s:f}}",
        "character", c->name ? c->name : "", "teacher", lm_teacher_name(R->t), "seed", seedtxt,
        "round", o->round, "kinds", mix, "counts", "requested", (json_int_t)s->requested,
        "questions", (json_int_t)s->q_ok, "question_failures", (json_int_t)s->q_failed,
        "questions_rejected", (json_int_t)s->q_rejected, "answers", (json_int_t)s->a_ok,
        "answer_failures", (json_int_t)s->a_failed, "answers_rejected", (json_int_t)s->a_rejected,
        "kept", (json_int_t)s->kept, "train", (json_int_t)s->train, "validation",
        (json_int_t)s->validation, "test", (json_int_t)s->test,
        "requested_by_kind", lm_dg_counter_json(&R->asked),
        "kind", lm_dg_counter_json(&R->by_kind),
        "asker", lm_dg_counter_json(&R->by_asker),
        "location", lm_dg_counter_json(&R->by_loc),
        "emotion", lm_dg_counter_json(&R->by_emotion),
        "rejections", lm_dg_counter_json(&R->why), "diversity",
        "question_distinct_1", dq1, "question_distinct_2", dq2, "answer_distinct_1", da1,
        "answer_distinct_2", da2);
    if (!stats) return lm_errf(err, "out of memory");
    char *sj = json_dumps(stats, JSON_INDENT(2));
    json_decref(stats);
    if (!sj) return lm_errf(err, "out of memory");
    lm_sb_str(&R->stats_json, sj);
    lm_sb_str(&R->stats_json, "\n");
    free(sj);

    lm_sb *md = &R->stats_md;
    lm_sb_printf(md, "# Dataset round %d: %s\n\nTeacher `%s`, seed %s, kinds %s.\n\n", o->round,
                 c->name ? c->name : "", lm_teacher_name(R->t), seedtxt, mix);
    lm_sb_printf(md, "| | count |\n| --- | ---: |\n| requested | %zu |\n| questions received | %zu |\n"
                     "| question failures (teacher) | %zu |\n| questions rejected | %zu |\n"
                     "| answers received | %zu |\n| answer failures (teacher) | %zu |\n"
                     "| answers rejected | %zu |\n| **kept** | **%zu** |\n"
                     "| train / validation / test | %zu / %zu / %zu |\n",
                 s->requested, s->q_ok, s->q_failed, s->q_rejected, s->a_ok, s->a_failed,
                 s->a_rejected, s->kept, s->train, s->validation, s->test);
    lm_sb_printf(md, "\n## Diversity (distinct-n: distinct word n-grams / all n-grams)\n\n"
                     "| | distinct-1 | distinct-2 |\n| --- | ---: | ---: |\n"
                     "| questions | %.3f | %.3f |\n| answers | %.3f | %.3f |\n",
                 dq1, dq2, da1, da2);
    lm_dg_counter_md(md, "requested kind", &R->asked, s->requested);
    lm_dg_counter_md(md, "kind", &R->by_kind, s->kept);
    lm_dg_counter_md(md, "asker", &R->by_asker, s->kept);
    lm_dg_counter_md(md, "location", &R->by_loc, s->kept);
    lm_dg_counter_md(md, "emotion", &R->by_emotion, s->kept);
    size_t n_rej = 0;
    for (size_t i = 0; i < R->why.n; i++) n_rej += R->why.v[i];
    lm_dg_counter_md(md, "rejection reason", &R->why, n_rej);
    lm_sb_str(md, "\nEach rejected sample, with its reasons, is in rejected.jsonl; teacher failures "
                  "are in questions.failures.jsonl and answers.failures.jsonl (a rerun retries them).\n");
    return 0;
}

/* The round's seven files, each whole (temp file + rename). */
static int write_files(round_st *R, lm_err *err) {
    const struct {
        const char *name;
        lm_sb *b;
    } f[] = {{"dataset.jsonl", &R->all},       {"train.jsonl", &R->split[0]},
             {"validation.jsonl", &R->split[1]}, {"test.jsonl", &R->split[2]},
             {"rejected.jsonl", &R->rej},      {"stats.json", &R->stats_json},
             {"stats.md", &R->stats_md}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (write_sb(R->o->out_dir, f[i].name, f[i].b, err)) return -1;
    return 0;
}

/* The options, and run.json against the folder's earlier runs. */
static int check_opts(const lm_character *c, const lm_datagen_opts *o, lm_err *err) {
    if (!o->out_dir || !*o->out_dir) return lm_errf(err, "no output folder");
    if (o->round < 1) return lm_errf(err, "round must be >= 1, got %d", o->round);
    if (!(o->val_frac >= 0 && o->test_frac >= 0 && o->val_frac + o->test_frac < 1))
        return lm_errf(err, "validation (%g) and test (%g) fractions must be >= 0 and sum below 1",
                       o->val_frac, o->test_frac);
    if (lm_mkdir_p(o->out_dir, err)) return -1;
    return check_run_file(o->out_dir, c, o, err);
}

int lm_datagen_run(lm_teacher *t, const lm_character *c, const lm_world *w,
                   const lm_prompt_set *tpl, const lm_datagen_opts *o, lm_datagen_summary *s,
                   lm_err *err) {
    memset(s, 0, sizeof *s);
    s->requested = o->n;
    if (check_opts(c, o, err)) return -1;
    round_st R = {.t = t, .c = c, .o = o, .s = s};
    int rc = round_setup(&R, w, tpl, err);
    if (!rc) rc = questions(&R, err);
    /* a cancelled round stops here, its journals kept for the rerun */
    if (!rc && !s->cancelled) rc = answers(&R, err);
    if (!rc && !s->cancelled) rc = report(&R, err);
    if (!rc && !s->cancelled) rc = write_files(&R, err);
    round_free(&R);
    return rc;
}
