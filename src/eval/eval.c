/* `lemonpc eval` (eval.h): question file in, answers and a report out. */
#include "eval/eval.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "base/progress.h"
#include "base/strbuf.h"
#include "datagen/teacher.h"
#include "eval/judge.h"
#include "check/metrics.h"
#include "eval/report.h"
#include "memory/recall.h"
#include "lemonpc.h"
#include "runtime/generate.h"
#include "runtime/guard.h"
#include "sheet/sheet.h"
#include "train/jsonl.h"

void lm_eval_opts_init(lm_eval_opts *o) {
    memset(o, 0, sizeof *o);
    o->persona = LM_PERSONA_SHORT;
    o->max_tokens = 160;
    o->sp = lm_sampler_defaults();
    /* The runtime's sampling for NPCs: a little cooler than llama.cpp's
     * default, and a repetition penalty, which a 135M model needs. */
    o->sp.temp = 0.7f;
    o->sp.repeat_penalty = 1.1f;
    o->sp.seed = 1;
    o->guard_checks = LEMONPC_CHECK_DEFAULT;
}

static const char *str_field(json_t *o, const char *k) {
    return json_string_value(json_object_get(o, k));
}

static char *id_text(json_t *q) {
    json_t *id = json_object_get(q, "id");
    if (json_is_string(id)) return strdup(json_string_value(id));
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(id));
    return strdup(buf);
}

/* "size:mtime" of a file, so a resume notices a model or adapter rebuilt
 * under the same name; NULL for no file. */
static json_t *file_stamp(const char *path) {
    struct stat st;
    if (!path || stat(path, &st)) return json_null();
    return json_sprintf("%lld:%lld.%09ld", (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                        st.st_mtim.tv_nsec);
}

/* What must match for earlier answers to be kept on resume. */
static json_t *settings_json(const lm_eval_opts *o) {
    json_t *s = json_pack("{s:s, s:s?, s:s?, s:s, s:i, s:b}", "model", o->model, "adapter",
                          o->adapter, "character", o->character, "persona",
                          lm_persona_mode_name((lm_persona_mode)o->persona), "max_tokens",
                          o->max_tokens, "sample", o->sample);
    /* only when off: journals written before the block existed resume */
    if (o->no_lore) json_object_set_new(s, "lore", json_false());
    /* the guard's retries draw from the seed too; only when not the
     * default, so journals written before --seed resume */
    bool guarded = o->guard || o->best_of > 1;
    if (guarded && !o->sample && o->sp.seed != 1)
        json_object_set_new(s, "seed", json_integer((json_int_t)o->sp.seed));
    if (guarded) {
        char names[128];
        json_t *g = json_pack("{s:i, s:s}", "retries", o->guard, "checks",
                              lm_guard_names(o->guard_checks, names, sizeof names));
        /* only when on, so journals written before it resume */
        if (g && o->best_of > 1) json_object_set_new(g, "best_of", json_integer(o->best_of));
        json_object_set_new(s, "guard", g);
    }
    json_object_set_new(s, "files", json_pack("{s:o, s:o, s:o}", "model", file_stamp(o->model),
                                              "adapter", file_stamp(o->adapter), "character",
                                              file_stamp(o->character)));
    if (o->sample)
        json_object_set_new(s, "sampling", json_pack("{s:f, s:i, s:f, s:f, s:f, s:i, s:I}", "temp",
                                                     (double)o->sp.temp, "top_k", o->sp.top_k,
                                                     "top_p", (double)o->sp.top_p, "min_p",
                                                     (double)o->sp.min_p, "repeat_penalty",
                                                     (double)o->sp.repeat_penalty, "repeat_last_n",
                                                     o->sp.repeat_last_n, "seed",
                                                     (json_int_t)o->sp.seed));
    return s;
}

/* The messages of one question: system (persona policy + scene), history,
 * the lorebook block (or NULL) as a system turn, the question, as
 * lemonpc_say renders them. Strings borrowed from q, sys and lore. */
static lm_chat_msg *question_msgs(json_t *q, const char *sys, const char *lore, size_t *n) {
    json_t *h = json_object_get(q, "history");
    size_t nh = json_array_size(h);
    lm_chat_msg *m = calloc(nh + 3, sizeof *m);
    if (!m) return NULL;
    size_t k = 0;
    if (sys) m[k++] = (lm_chat_msg){"system", sys};
    for (size_t i = 0; i < nh; i++) {
        json_t *e = json_array_get(h, i);
        m[k++] = (lm_chat_msg){str_field(e, "role"), str_field(e, "content")};
    }
    if (lore) m[k++] = (lm_chat_msg){"system", lore};
    m[k++] = (lm_chat_msg){"user", str_field(q, "question")};
    *n = k;
    return m;
}

/* The lorebook block for a question (*out NULL: none applies). */
static int question_lore(json_t *q, const lm_character *c, const lm_world *w, const lm_tokenizer *t,
                         char **out, lm_err *err) {
    *out = NULL;
    if (!c && !w) return 0;
    json_t *h = json_object_get(q, "history");
    size_t nh = json_array_size(h);
    const char **turns = malloc((nh + 1) * sizeof *turns);
    if (!turns) return lm_errf(err, "out of memory");
    for (size_t i = 0; i < nh; i++) turns[i] = str_field(json_array_get(h, i), "content") ?: "";
    int rc = lm_recall_lore(c ? &c->lore : NULL, w ? &w->lore : NULL, t, turns, nh,
                            str_field(q, "question") ?: "", out, err);
    free(turns);
    return rc;
}

/* One question's draws (lm_guard_draw_fn): the first greedy or as --sample
 * asks, the others with lm_guard_retry_params seeded by the question's
 * index, as lemonpc_say draws them under the NPC's guard. The guard sees
 * what the runtime sees (the line, the answer, whether a lorebook block was
 * given), never the category. */
typedef struct {
    lm_generator *g;
    const lm_guard *guard;
    const lm_gen_params *gp;
    const lm_chat_msg *msgs;
    size_t nm;
    json_t *q;
    bool knows, rank;
    size_t qi;
} chat_job;

enum { STOP_EOS, STOP_MAX, STOP_CTX, STOP_STRING };
static const char *const STOP_NAMES[] = {"eos", "max_tokens", "context", "stop_string"};

static int draw_answer(void *ud, int attempt, lm_guard_draw *d, lm_err *err) {
    chat_job *j = ud;
    lm_gen_params p = *j->gp;
    if (attempt > 0) p.sp = lm_guard_retry_params(&j->gp->sp, 0.7f, j->qi, attempt);
    p.logp = j->rank;
    lm_gen_info in = {0};
    if (lm_generate_chat(j->g, j->msgs, j->nm, &p, &d->text, &in, err)) return -1;
    lm_str_trim(d->text);
    d->stop = in.hit_max ? STOP_MAX : in.hit_ctx ? STOP_CTX : in.hit_stop ? STOP_STRING : STOP_EOS;
    d->n_gen = in.n_gen;
    d->logp = in.logp;
    d->n_logp = in.n_logp;
    if (j->guard)
        d->failed = lm_guard_check(j->guard, str_field(j->q, "question"), d->text,
                                   str_field(j->q, "asker"), d->stop == STOP_EOS, j->knows);
    return 0;
}

/* The answer scored after the same messages with the lorebook block left
 * out and the line empty (lm_guard_empty_fn), as lemonpc_say scores it. */
static int empty_line_logp(void *ud, const lm_guard_draw *d, double *logp, lm_err *err) {
    chat_job *j = ud;
    lm_chat_msg *m = malloc((j->nm + 1) * sizeof *m);
    if (!m) return lm_errf(err, "out of memory");
    size_t k = 0;
    /* the block is the system turn right before the line */
    for (size_t i = 0; i + 1 < j->nm; i++)
        if (!(j->knows && i + 2 == j->nm)) m[k++] = j->msgs[i];
    m[k++] = (lm_chat_msg){"user", ""};
    m[k++] = (lm_chat_msg){"assistant", d->text};
    double nll = 0;
    int nt = 0;
    int rc = lm_generator_score(j->g, m, k, d->stop == STOP_EOS, &nll, &nt, err);
    free(m);
    *logp = -nll;
    return rc;
}

static json_t *flags_json(const lm_eval_flags *f) {
    json_t *a = json_array();
#define FLAG(x) if (f->x) json_array_append_new(a, json_string(#x));
    FLAG(assistant) FLAG(refusal) FLAG(stage) FLAG(self_intro) FLAG(speaks_for_user) FLAG(breaks)
    FLAG(modern) FLAG(repetition) FLAG(recital) FLAG(catchphrase) FLAG(ignorant)
    FLAG(dodges)
#undef FLAG
    return a;
}

/* Perplexity of the refs' last assistant turns. */
static int score_refs(lm_generator *g, const lm_eval_opts *o, const lm_character *c,
                      const lm_world *w, double *ppl, int *n_conv, lm_err *err) {
    json_t *refs = lm_eval_read_jsonl(o->refs, err);
    if (!refs) return -1;
    double nll = 0;
    long toks = 0;
    int rc = 0;
    size_t i;
    json_t *r;
    lm_progress pr;
    if (!o->quiet) lm_progress_begin(&pr, "perplexity", (int64_t)json_array_size(refs), "convs");
    json_array_foreach(refs, i, r) {
        json_t *msgs = json_object_get(r, "messages");
        size_t n = json_array_size(msgs);
        if (!n) {
            rc = lm_errf(err, "%s:%lld: no \"messages\" array", o->refs,
                         (long long)json_integer_value(json_object_get(r, "_line")));
            break;
        }
        json_t *meta = json_object_get(r, "meta");
        /* The NPC's own system turn replaces the one the file brings (a
         * build's test split carries the persona it was trained with), so
         * every NPC is scored as it is served. Without a sheet the file's
         * system turn stays. */
        bool has_sys = !strcmp(str_field(json_array_get(msgs, 0), "role") ?: "", "system");
        size_t first = has_sys && c ? 1 : 0;
        char *sys = NULL;
        if (c) {
            lm_scene sc = {str_field(meta, "asker"), str_field(meta, "location")};
            sys = lm_persona_system(c, w, (lm_persona_mode)o->persona, &sc, err);
            if (!sys && err->msg[0]) { rc = -1; break; }
        }
        lm_chat_msg *m = calloc(n + 1, sizeof *m);
        size_t k = 0;
        if (!m) { free(sys); rc = lm_errf(err, "out of memory"); break; }
        if (sys) m[k++] = (lm_chat_msg){"system", sys};
        for (size_t j = first; j < n; j++) {
            json_t *e = json_array_get(msgs, j);
            m[k++] = (lm_chat_msg){str_field(e, "role") ?: "", str_field(e, "content") ?: ""};
        }
        while (k > 0 && strcmp(m[k - 1].role, "assistant")) k--;   /* end on the answer */
        double one = 0;
        int nt = 0;
        if (k >= 2) rc = lm_generator_score(g, m, k, true, &one, &nt, err);
        free(m);
        free(sys);
        if (rc) {
            lm_err_prefix(err, "%s:%lld", o->refs, (long long)json_integer_value(json_object_get(r, "_line")));
            break;
        }
        nll += one;
        toks += nt;
        (*n_conv)++;
        if (!o->quiet) lm_progress_update(&pr, (int64_t)i + 1, NULL);
    }
    if (!o->quiet) lm_progress_end(&pr);
    json_decref(refs);
    *ppl = toks ? exp(nll / (double)toks) : 0;
    return rc;
}

/* ---- the judge ---------------------------------------------------------- */

typedef struct judge_ctx {
    FILE *f;                 /* judge.jsonl, appended */
    const char *path;
    json_t *by_id;           /* id -> record */
    json_t *answers;         /* borrowed */
    size_t done;
    lm_progress *pr;
    bool quiet;
} judge_ctx;

static int judge_done(void *ud, const lm_teacher_job *job, const lm_teacher_outcome *out, lm_err *err) {
    judge_ctx *j = ud;
    json_t *a = json_array_get(j->answers, (size_t)(uintptr_t)job->user);
    json_t *rec = json_pack("{s:s, s:s}", "id", str_field(a, "id"), "answer", str_field(a, "answer"));
    int sc[LM_JUDGE_N];
    lm_err perr = {0};
    if (!out->reply) json_object_set_new(rec, "error", json_string(out->error ? out->error : "failed"));
    else if (lm_judge_parse(out->reply, sc, &perr)) json_object_set_new(rec, "error", json_string(perr.msg));
    else {
        json_t *s = json_object();
        for (int d = 0; d < LM_JUDGE_N; d++) json_object_set_new(s, lm_judge_dim_name(d), json_integer(sc[d]));
        json_object_set_new(rec, "scores", s);
    }
    char *line = json_dumps(rec, JSON_COMPACT);
    int bad = !line || fprintf(j->f, "%s\n", line) < 0 || fflush(j->f);
    free(line);
    json_object_set_new(j->by_id, str_field(a, "id"), rec);
    if (bad) return lm_errno(err, "%s: cannot append", j->path), -1;
    if (!j->quiet) lm_progress_update(j->pr, (int64_t)++j->done, NULL);
    return 0;
}

/* "role: text" lines of a question's earlier turns (malloc'd, "" if none). */
static char *history_text(json_t *q) {
    lm_sb b = {0};
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(q, "history"), i, h)
        lm_sb_printf(&b, "%s: %s\n", str_field(h, "role"), str_field(h, "content"));
    return b.oom ? (lm_sb_free(&b), NULL) : b.p ? b.p : strdup("");
}

/* Scores every answer the judge has not scored yet (judge.jsonl keeps the
 * others, keyed by id and the answer's text); sets the means on sum. */
static int judge_answers(const lm_eval_opts *o, const lm_character *c, const lm_world *w, json_t *qs,
                         json_t *answers, lm_eval_summary *sum, lm_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/judge.jsonl", o->out);
    const char *name = lm_teacher_name(o->judge);
    judge_ctx j = {.path = path, .by_id = json_object(), .answers = answers, .quiet = o->quiet};
    /* earlier scores by the same judge, of the same answers; a torn or
     * foreign line is skipped (that answer is scored again) */
    lm_err skip = {{0}};
    lm_jsonl *in = access(path, F_OK) == 0 ? lm_jsonl_open(path, &skip) : NULL;
    json_t *rec;
    int got;
    for (bool first = true; in && (got = lm_jsonl_next(in, &rec, &skip)) != LM_JSONL_END; first = false) {
        if (first && (got != LM_JSONL_OK || strcmp(str_field(rec, "judge") ?: "", name))) break;
        if (!first && got == LM_JSONL_OK && str_field(rec, "id") && json_object_get(rec, "scores"))
            json_object_set(j.by_id, str_field(rec, "id"), rec);
    }
    lm_jsonl_close(in);
    size_t i;
    json_t *e;
    int rc = -1;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    lm_teacher_job *jobs = calloc(json_array_size(answers) + 1, sizeof *jobs);
    lm_chat_msg *msgs = calloc(2 * json_array_size(answers) + 1, sizeof *msgs);
    char *profile = c ? lm_persona_system(c, w, LM_PERSONA_FULL, NULL, err) : NULL;
    size_t n = 0;
    lm_teacher_params tp = lm_teacher_params_default();
    tp.temperature = 0;
    tp.max_tokens = 200;
    if (!jobs || !msgs || (c && !profile)) { if (!err->msg[0]) lm_errf(err, "out of memory"); goto out; }
    if (!(j.f = fopen(tmp, "w"))) { lm_errno(err, "%s", tmp); goto out; }
    json_t *hdr = json_pack("{s:s}", "judge", name);
    char *hs = hdr ? json_dumps(hdr, JSON_COMPACT) : NULL;
    json_decref(hdr);
    if (!hs) { lm_errf(err, "out of memory"); goto out; }
    fprintf(j.f, "%s\n", hs);
    free(hs);
    json_array_foreach(answers, i, e) {
        json_t *r = json_object_get(j.by_id, str_field(e, "id"));
        if (r && !strcmp(str_field(r, "answer") ?: "", str_field(e, "answer") ?: "")) {
            char *kept = json_dumps(r, JSON_COMPACT);
            if (kept) fprintf(j.f, "%s\n", kept);
            free(kept);
            continue;
        }
        json_object_del(j.by_id, str_field(e, "id"));
        json_t *q = json_array_get(qs, i);
        char *hist = history_text(q);
        char *prompt = hist ? lm_judge_prompt(profile, str_field(q, "asker"), str_field(q, "location"), hist,
                                              str_field(e, "question"), str_field(e, "answer"))
                            : NULL;
        free(hist);
        if (!prompt) { lm_errf(err, "out of memory"); goto out; }
        msgs[2 * n] = (lm_chat_msg){"system", lm_judge_system()};
        msgs[2 * n + 1] = (lm_chat_msg){"user", prompt};
        jobs[n] = (lm_teacher_job){str_field(e, "id"), &msgs[2 * n], 2, &tp, (void *)(uintptr_t)i};
        n++;
    }
    if (fflush(j.f) || rename(tmp, path)) { lm_errno(err, "%s", path); goto out; }
    lm_progress pr;
    j.pr = &pr;
    if (!o->quiet) lm_progress_begin(&pr, "judge", (int64_t)n, "answers");
    int br = n ? lm_teacher_run_batch(o->judge, jobs, n, judge_done, &j, NULL, err) : 0;
    if (!o->quiet) lm_progress_end(&pr);
    if (br) { lm_err_prefix(err, "judge %s", name); goto out; }
    /* the means over the answers it scored; an answer it failed on is counted apart */
    double tot[LM_JUDGE_N] = {0};
    json_array_foreach(answers, i, e) {
        json_t *r = json_object_get(j.by_id, str_field(e, "id")), *s = json_object_get(r, "scores");
        if (!s) { sum->judge_failed++; continue; }
        for (int d = 0; d < LM_JUDGE_N; d++) tot[d] += (double)json_integer_value(json_object_get(s, lm_judge_dim_name(d)));
        json_object_set(e, "judge", s);
        sum->judge_n++;
    }
    for (int d = 0; d < LM_JUDGE_N; d++) sum->judge_mean[d] = sum->judge_n ? tot[d] / sum->judge_n : 0;
    sum->judge = name;
    rc = 0;
out:
    for (size_t k = 0; k < n; k++) free((char *)msgs[2 * k + 1].content);
    if (j.f) fclose(j.f);
    free(jobs);
    free(msgs);
    free(profile);
    json_decref(j.by_id);
    return rc;
}

int lm_eval_run(const lm_eval_opts *o, lm_err *err) {
    double t0 = lm_now_s();
    int rc = -1;
    json_t *qs = NULL, *settings = settings_json(o), *done = json_object();
    lm_character *c = NULL;
    lm_world *w = NULL;
    lm_generator *g = NULL;
    lm_eval_checker *k = NULL;
    lm_guard *guard = NULL;
    FILE *af = NULL;
    char path[4096], tmp[4096];
    json_t *answers = json_array();

    if (lm_mkdir_p(o->out, err)) goto done;
    if (!(qs = lm_eval_load_questions(o->questions, err))) goto done;
    size_t i;
    json_t *q;
    if (o->character && lm_sheet_load_character(o->character, &c, &w, err)) goto done;
    if (!(k = lm_eval_checker_new(c, err))) goto done;
    if ((o->guard > 0 || o->best_of > 1) && !(guard = lm_guard_new(c, w, o->guard_checks, err)))
        goto done;

    /* Resume: keep earlier answers made under the same settings. */
    snprintf(path, sizeof path, "%s/settings.json", o->out);
    json_t *old = json_load_file(path, 0, NULL);
    bool same = old && json_equal(old, settings);
    json_decref(old);
    snprintf(path, sizeof path, "%s/answers.jsonl", o->out);
    if (same) {
        json_t *kept = lm_eval_read_answers(o->out);
        size_t k2;
        json_t *a;
        json_array_foreach(kept, k2, a) json_object_set(done, str_field(a, "id"), a);
        json_decref(kept);
        /* a rerun that finds every answer made reports the time they took,
         * not its own few milliseconds */
        snprintf(path, sizeof path, "%s/report.json", o->out);
        json_t *rep = json_load_file(path, 0, NULL);
        if (json_object_size(done) == json_array_size(qs))
            t0 -= json_number_value(json_object_get(rep, "seconds"));
        json_decref(rep);
        snprintf(path, sizeof path, "%s/answers.jsonl", o->out);
    } else {
        char *s = json_dumps(settings, JSON_INDENT(2) | JSON_SORT_KEYS);
        snprintf(tmp, sizeof tmp, "%s/settings.json", o->out);
        int wr = s ? lm_write_file_atomic(tmp, s, strlen(s), err) : lm_errf(err, "out of memory");
        free(s);
        if (wr) goto done;
    }
    /* Rewrite answers.jsonl with the kept lines only (a torn tail goes). */
    snprintf(tmp, sizeof tmp, "%s/answers.jsonl.tmp", o->out);
    if (!(af = fopen(tmp, "w"))) { lm_errno(err, "%s", tmp); goto done; }
    size_t n_todo = 0;
    json_array_foreach(qs, i, q) {
        char *id = id_text(q);
        json_t *a = id ? json_object_get(done, id) : NULL;
        if (a) {
            char *s = json_dumps(a, JSON_COMPACT);
            if (s) fprintf(af, "%s\n", s);
            free(s);
        } else n_todo++;
        free(id);
    }
    if (fflush(af) || rename(tmp, path)) { lm_errno(err, "%s", path); goto done; }

    if (n_todo || o->refs) {
        if (!(g = lm_generator_open(o->model, 0, o->threads, err))) goto done;
        if (o->adapter && lm_generator_set_adapter(g, o->adapter, 1.0f, err)) goto done;
    }
    lm_gen_params gp = {.sp = o->sp, .max_tokens = o->max_tokens};
    if (!o->sample) gp.sp.temp = 0;
    lm_progress pr;
    if (!o->quiet) lm_progress_begin(&pr, "eval", (int64_t)json_array_size(qs), "answers");
    size_t n_done = 0;
    json_array_foreach(qs, i, q) {
        char *id = id_text(q);
        if (!id) { lm_errf(err, "out of memory"); goto done; }
        json_t *a = json_object_get(done, id);
        if (a) {
            json_array_append(answers, a);
            free(id);
            if (!o->quiet) lm_progress_update(&pr, (int64_t)++n_done, NULL);
            continue;
        }
        lm_scene sc = {str_field(q, "asker"), str_field(q, "location")};
        char *sys = c ? lm_persona_system(c, w, (lm_persona_mode)o->persona, &sc, err) : NULL;
        if (!sys && err->msg[0]) { free(id); goto done; }
        char *lore = NULL;
        if (!o->no_lore && question_lore(q, c, w, lm_generator_tokenizer(g), &lore, err)) {
            free(sys);
            free(id);
            goto done;
        }
        size_t nm = 0;
        lm_chat_msg *msgs = question_msgs(q, sys, lore, &nm);
        chat_job job = {g, guard, &gp, msgs, nm, q, lore != NULL, o->best_of > 1, i};
        lm_guard_draws ds = {0};
        size_t ci = 0;
        int gr = msgs ? lm_guard_draw_all(o->best_of, guard ? o->guard : 0, draw_answer,
                                          empty_line_logp, &job, &ds, &ci, err)
                      : lm_errf(err, "out of memory");
        free(msgs);
        free(sys);
        if (gr) {
            lm_guard_draws_free(&ds);
            lm_err_prefix(err, "%s: question %s", o->questions, id);
            free(lore);
            free(id);
            goto done;
        }
        const lm_guard_draw *ch = &ds.d[ci];
        const char *reply = ch->text;
        int attempts = (int)ds.n;
        unsigned failed = ch->failed;
        const char *cat = str_field(q, "category") ?: "in-world";
        lm_eval_flags f;
        lm_eval_check(k, str_field(q, "question"), reply, cat, str_field(q, "asker"),
                      ch->stop == STOP_EOS, &f);
        a = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:o}", "id", id, "category", cat,
                      "question", str_field(q, "question"), "answer", reply, "stop",
                      STOP_NAMES[ch->stop], "tokens", ch->n_gen, "flags", flags_json(&f));
        /* what the lorebook put before the question, for a reader of the answers */
        if (a && lore) json_object_set_new(a, "lore", json_string(lore));
        if (a && guard) {
            char names[128];
            json_object_set_new(a, "attempts", json_integer(attempts));
            if (failed)
                json_object_set_new(a, "guard_failed",
                                    json_string(lm_guard_names(failed, names, sizeof names)));
            /* with best_of, every draw, for a reader of the choice */
            json_t *dj = o->best_of > 1 ? json_array() : NULL;
            for (size_t di = 0; dj && di < ds.n; di++) {
                json_t *e = json_pack("{s:s, s:s, s:f}", "answer", ds.d[di].text, "failed",
                                      lm_guard_names(ds.d[di].failed, names, sizeof names),
                                      "relevance", ds.d[di].relevance);
                if (e && di == ci) json_object_set_new(e, "chosen", json_true());
                json_array_append_new(dj, e);
            }
            if (dj) json_object_set_new(a, "draws", dj);
        }
        free(lore);
        lm_guard_draws_free(&ds);
        free(id);
        char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
        if (!s || fprintf(af, "%s\n", s) < 0 || fflush(af)) {
            free(s);
            json_decref(a);
            lm_errno(err, "%s: cannot append", path);
            goto done;
        }
        free(s);
        json_array_append_new(answers, a);
        if (!o->quiet) lm_progress_update(&pr, (int64_t)++n_done, str_field(a, "id"));
    }
    if (!o->quiet) lm_progress_end(&pr);

    double ppl = 0;
    int n_ref = 0;
    if (o->refs && score_refs(g, o, c, w, &ppl, &n_ref, err)) goto done;

    /* Tally: the flags are recomputed from the text, so a report always
     * matches the current metrics even for answers kept from a resume. */
    lm_eval_tally t = {0};
    size_t na = json_array_size(answers), guard_retried = 0, guard_failing = 0;
    double guard_attempts = 0;
    const char **texts = calloc(na ? na : 1, sizeof *texts);
    if (!texts) { lm_errf(err, "out of memory"); goto done; }
    json_t *a;
    json_array_foreach(answers, i, a) {
        json_t *qq = json_array_get(qs, i);
        lm_eval_flags f;
        lm_eval_check(k, str_field(a, "question"), str_field(a, "answer"), str_field(a, "category"),
                      str_field(qq, "asker"), !strcmp(str_field(a, "stop") ?: "", "eos"), &f);
        lm_eval_tally_add(&t, &f, str_field(a, "category"));
        json_object_set_new(a, "flags", flags_json(&f));
        json_object_del(a, "judge");   /* set again below by this run's judge, if any */
        texts[i] = str_field(a, "answer");
        json_int_t at = json_integer_value(json_object_get(a, "attempts"));
        guard_attempts += at > 0 ? (double)at : 1;
        guard_retried += at > 1;
        guard_failing += json_object_get(a, "guard_failed") != NULL;
    }
    lm_eval_summary sum = {
        .label = o->label, .settings = settings, .questions = o->questions, .refs = o->refs,
        .tally = &t, .distinct1 = lm_eval_distinct(texts, na, 1),
        .distinct2 = lm_eval_distinct(texts, na, 2), .ppl = ppl, .n_refs = n_ref,
        .guard = o->guard, .best_of = o->best_of, .guard_retried = guard_retried, .guard_failing = guard_failing,
        .guard_mean_attempts = na ? guard_attempts / (double)na : 0,
    };
    free(texts);
    if (o->judge && judge_answers(o, c, w, qs, answers, &sum, err)) goto done;
    sum.seconds = lm_now_s() - t0;
    /* answers.jsonl with the flags of the current metrics (and the judge's scores) */
    fclose(af);
    af = NULL;
    lm_sb all = {0};
    json_array_foreach(answers, i, a) {
        char *line = json_dumps(a, JSON_COMPACT);
        if (line) lm_sb_printf(&all, "%s\n", line);
        else all.oom = true;
        free(line);
    }
    int wr = all.oom ? lm_errf(err, "out of memory") : lm_write_file_atomic(path, all.p ? all.p : "", all.len, err);
    lm_sb_free(&all);
    if (wr) goto done;
    rc = lm_eval_write_report(o->out, &sum, answers, err);
done:
    if (af) fclose(af);
    json_decref(answers);
    json_decref(done);
    json_decref(settings);
    json_decref(qs);
    lm_generator_free(g);
    lm_eval_checker_free(k);
    lm_guard_free(guard);
    lm_world_free(w);
    lm_character_free(c);
    return rc;
}
