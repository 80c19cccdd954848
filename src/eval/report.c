/* report.json / report.md of one eval, and the comparison of several. */
#include "eval/report.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/strbuf.h"
#include "eval/eval.h"
#include "eval/judge.h"
#include "train/jsonl.h"

static double rate(size_t k, size_t n) { return n ? (double)k / (double)n : 0; }

/* The rates of one set of counts. */
static json_t *counts_json(const lm_eval_counts *c) {
    json_t *o = json_object();
    json_object_set_new(o, "n", json_integer((json_int_t)c->n));
#define R(name, field) json_object_set_new(o, name, json_real(rate(c->field, c->n)));
    R("eos_rate", eos) R("in_character_rate", in_character) R("pass_rate", passed)
    R("assistant_rate", assistant) R("refusal_rate", refusal) R("stage_rate", stage)
    R("self_intro_rate", self_intro) R("speaks_for_user_rate", speaks_for_user)
    R("breaks_rate", breaks) R("modern_rate", modern) R("repetition_rate", repetition)
    R("recital_rate", recital) R("catchphrase_rate", catchphrase)
#undef R
    json_object_set_new(o, "mean_words", json_real(c->n ? c->words / (double)c->n : 0));
    return o;
}

/* One row per metric in the order a reader wants them; "higher" says which
 * way is better (for the picture). */
typedef struct metric {
    const char *key, *title;
    int higher;        /* 1 higher is better, 0 lower, -1 neither */
    int percent;
} metric;

static const metric METRICS[] = {
    {"eos_rate", "ends its turn itself", 1, 1},
    {"in_character_rate", "in character (all questions)", 1, 1},
    {"protective_pass_rate", "protective: in character + ended + honest ignorance", 1, 1},
    {"ignorance_rate_protective", "protective: says it does not know", 1, 1},
    {"dodge_rate_in_world", "in-world: claims not to know, or declines", 0, 1},
    {"adversarial_pass_rate", "adversarial: in character + ended", 1, 1},
    {"recital_rate_off_topic", "recites the sheet on off-topic questions", 0, 1},
    {"assistant_rate", "assistant speech", 0, 1},
    {"refusal_rate", "refusals", 0, 1},
    {"stage_rate", "stage directions", 0, 1},
    {"self_intro_rate", "self-introduction", 0, 1},
    {"speaks_for_user_rate", "speaks for the player", 0, 1},
    {"breaks_rate", "talks of the fiction as fiction", 0, 1},
    {"modern_rate_protective", "explains modern things (protective)", 0, 1},
    {"repetition_rate", "loops (repeated 8-grams, low distinct 3-grams)", 0, 1},
    {"distinct1", "distinct-1 over all answers", 1, 0},
    {"distinct2", "distinct-2 over all answers", 1, 0},
    {"catchphrase_rate", "uses a catchphrase", -1, 1},
    {"mean_words", "mean answer length (words)", -1, 0},
    {"ppl", "perplexity of held-out reference answers", 0, 0},
    {"judge_memorization", "judge: memorization (1-7)", 1, 0},
    {"judge_values", "judge: values (1-7)", 1, 0},
    {"judge_personality", "judge: personality (1-7)", 1, 0},
    {"judge_hallucination", "judge: avoids hallucination (1-7)", 1, 0},
    {"judge_stability", "judge: stability (1-7)", 1, 0},
};
#define N_METRICS (sizeof METRICS / sizeof METRICS[0])

static json_t *metrics_json(const lm_eval_summary *s) {
    const lm_eval_tally *t = s->tally;
    json_t *m = counts_json(&t->all);
    json_object_set_new(m, "protective_pass_rate",
                        json_real(rate(t->cat[LM_EVAL_CAT_PROTECTIVE].passed, t->cat[LM_EVAL_CAT_PROTECTIVE].n)));
    json_object_set_new(m, "adversarial_pass_rate",
                        json_real(rate(t->cat[LM_EVAL_CAT_ADVERSARIAL].passed, t->cat[LM_EVAL_CAT_ADVERSARIAL].n)));
    json_object_set_new(m, "recital_rate_off_topic",
                        json_real(rate(t->cat[LM_EVAL_CAT_OFF_TOPIC].recital, t->cat[LM_EVAL_CAT_OFF_TOPIC].n)));
    json_object_set_new(m, "ignorance_rate_protective",
                        json_real(rate(t->cat[LM_EVAL_CAT_PROTECTIVE].ignorant, t->cat[LM_EVAL_CAT_PROTECTIVE].n)));
    json_object_set_new(m, "dodge_rate_in_world",
                        json_real(rate(t->cat[LM_EVAL_CAT_IN_WORLD].dodges, t->cat[LM_EVAL_CAT_IN_WORLD].n)));
    json_object_set_new(m, "modern_rate_protective",
                        json_real(rate(t->cat[LM_EVAL_CAT_PROTECTIVE].modern, t->cat[LM_EVAL_CAT_PROTECTIVE].n)));
    json_object_set_new(m, "distinct1", json_real(s->distinct1));
    json_object_set_new(m, "distinct2", json_real(s->distinct2));
    if (s->n_refs) json_object_set_new(m, "ppl", json_real(s->ppl));
    for (int d = 0; s->judge_n && d < LM_JUDGE_N; d++) {
        char k[64];
        snprintf(k, sizeof k, "judge_%s", lm_judge_dim_name(d));
        json_object_set_new(m, k, json_real(s->judge_mean[d]));
    }
    return m;
}

static void put_value(lm_sb *b, json_t *v, const metric *mt) {
    if (!json_is_number(v)) { lm_sb_str(b, " -- |"); return; }
    double x = json_number_value(v);
    if (mt->percent) lm_sb_printf(b, " %.0f%% |", 100 * x);
    else if (!strcmp(mt->key, "ppl") || !strcmp(mt->key, "mean_words")) lm_sb_printf(b, " %.1f |", x);
    else if (!strncmp(mt->key, "judge_", 6)) lm_sb_printf(b, " %.2f |", x);
    else lm_sb_printf(b, " %.3f |", x);
}

/* Text for a markdown table cell: one line, no pipes. */
static void put_cell(lm_sb *b, const char *s, size_t max) {
    size_t n = 0;
    for (const char *p = s ? s : ""; *p && n < max; p++, n++)
        lm_sb_add(b, *p == '\n' ? " " : *p == '|' ? "/" : p, 1);
    if (s && strlen(s) > max) lm_sb_str(b, "...");
}

json_t *lm_eval_read_answers(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/answers.jsonl", dir);
    json_t *arr = json_array();
    lm_err err = {{0}};
    /* no file yet is no answers; a line that is not an answer (a torn
     * last line) is skipped: the run that resumes rewrites it */
    lm_jsonl *in = arr && access(path, F_OK) == 0 ? lm_jsonl_open(path, &err) : NULL;
    json_t *a;
    int got;
    while (in && (got = lm_jsonl_next(in, &a, &err)) != LM_JSONL_END)
        if (got == LM_JSONL_OK && json_is_string(json_object_get(a, "id")) && json_array_append(arr, a)) {
            json_decref(arr);
            arr = NULL;
            break;
        }
    lm_jsonl_close(in);
    return arr;
}

/* A path as a reader of a committed report can follow it: relative to the
 * working directory (the repository, for `make orlando`) when under it,
 * "~/..." under $HOME, else the file's name alone: a machine's own folders
 * (/work/exp/...) mean nothing to anyone else. */
char *lm_eval_shown_path(const char *p) {
    char cwd[4096];
    const char *home = getenv("HOME");
    lm_sb b = {0};
    size_t n;
    if (p[0] != '/') lm_sb_str(&b, p);
    else if (getcwd(cwd, sizeof cwd) && (n = strlen(cwd)) > 1 && !strncmp(p, cwd, n) && p[n] == '/')
        lm_sb_str(&b, p + n + 1);
    else if (home && (n = strlen(home)) > 1 && !strncmp(p, home, n) && p[n] == '/')
        lm_sb_printf(&b, "~/%s", p + n + 1);
    else
        lm_sb_str(&b, strrchr(p, '/') + 1);
    if (b.oom) lm_sb_free(&b);
    return b.p;
}

static void show_path_of(json_t *set, const char *key) {
    const char *p = json_string_value(json_object_get(set, key));
    char *s = p ? lm_eval_shown_path(p) : NULL;
    if (s) json_object_set_new(set, key, json_string(s));
    free(s);
}

static const char *label_of(json_t *report) {
    const char *l = json_string_value(json_object_get(report, "label"));
    return l ? l : "npc";
}

int lm_eval_write_report(const char *dir, const lm_eval_summary *s, json_t *answers, lm_err *err) {
    json_t *r = json_object();
    json_t *set = s->settings;
    char lab[512];
    if (s->label) snprintf(lab, sizeof lab, "%s", s->label);
    else snprintf(lab, sizeof lab, "%s%s%s, persona %s",
                  json_string_value(json_object_get(set, "model")),
                  json_is_string(json_object_get(set, "adapter")) ? " + " : "",
                  json_is_string(json_object_get(set, "adapter")) ? json_string_value(json_object_get(set, "adapter")) : "",
                  json_string_value(json_object_get(set, "persona")));
    json_object_set_new(r, "label", json_string(lab));
    json_object_set(r, "settings", set);
    json_object_set_new(r, "questions", json_string(s->questions));
    if (s->refs) json_object_set_new(r, "refs", json_string(s->refs));
    json_object_set_new(r, "n_refs", json_integer(s->n_refs));
    json_object_set_new(r, "seconds", json_real(s->seconds));
    if (s->judge)
        json_object_set_new(r, "judge", json_pack("{s:s, s:i, s:i}", "name", s->judge, "scored", s->judge_n,
                                                  "failed", s->judge_failed));
    if (s->guard || s->best_of > 1) {
        json_t *g = json_pack("{s:i, s:I, s:I, s:f}", "retries", s->guard, "retried",
                              (json_int_t)s->guard_retried, "still_failing",
                              (json_int_t)s->guard_failing, "mean_attempts",
                              s->guard_mean_attempts);
        if (g && s->best_of > 1) json_object_set_new(g, "best_of", json_integer(s->best_of));
        json_object_set_new(r, "guard", g);
    }
    json_t *metrics = metrics_json(s);
    json_object_set_new(r, "metrics", metrics);
    json_t *cats = json_object();
    for (int c = 0; c < LM_EVAL_NCAT; c++)
        if (s->tally->cat[c].n)
            json_object_set_new(cats, lm_eval_category_name(c), counts_json(&s->tally->cat[c]));
    json_object_set_new(r, "categories", cats);

    char path[4096];
    snprintf(path, sizeof path, "%s/report.json", dir);
    char *js = json_dumps(r, JSON_INDENT(2));
    int rc = js ? lm_write_file_atomic(path, js, strlen(js), err) : lm_errf(err, "out of memory");
    free(js);
    if (rc) { json_decref(r); return -1; }

    lm_sb b = {0};
    lm_sb_printf(&b, "# Evaluation: %s\n\n", lab);
    lm_sb_printf(&b, "Questions: `%s` (%zu), greedy: %s, %.0f s.", s->questions, s->tally->all.n,
                 json_is_true(json_object_get(set, "sample")) ? "no (runtime sampling)" : "yes",
                 s->seconds);
    if (s->refs) lm_sb_printf(&b, " Reference answers: `%s` (%d conversations).", s->refs, s->n_refs);
    if (s->judge)
        lm_sb_printf(&b, " Judge: `%s` (%d answers scored, %d failed).", s->judge, s->judge_n,
                     s->judge_failed);
    if (s->best_of > 1)
        lm_sb_printf(&b, " Reply guard: best of %d draws by relevance to the line, then up to %d "
                     "retries (checks: %s); %.2f draws per answer, %zu given though no draw "
                     "passed.", s->best_of, s->guard,
                     json_string_value(json_object_get(json_object_get(set, "guard"), "checks")),
                     s->guard_mean_attempts, s->guard_failing);
    else if (s->guard)
        lm_sb_printf(&b, " Reply guard: up to %d retries (checks: %s); %zu of %zu answers drawn "
                     "again, %.2f draws per answer, %zu given though no draw passed.", s->guard,
                     json_string_value(json_object_get(json_object_get(set, "guard"), "checks")),
                     s->guard_retried, s->tally->all.n, s->guard_mean_attempts, s->guard_failing);
    lm_sb_str(&b, "\n\n| metric | value |\n|---|---|\n");
    for (size_t i = 0; i < N_METRICS; i++) {
        json_t *v = json_object_get(metrics, METRICS[i].key);
        if (!v) continue;
        lm_sb_printf(&b, "| %s |", METRICS[i].title);
        put_value(&b, v, &METRICS[i]);
        lm_sb_str(&b, "\n");
    }
    lm_sb_str(&b, "\n| category | n | ends turn | in character | passes | words | recital |\n|---|---|---|---|---|---|---|\n");
    for (int c = 0; c < LM_EVAL_NCAT; c++) {
        const lm_eval_counts *k = &s->tally->cat[c];
        if (!k->n) continue;
        lm_sb_printf(&b, "| %s | %zu | %.0f%% | %.0f%% | %.0f%% | %.1f | %.0f%% |\n", lm_eval_category_name(c),
                     k->n, 100 * rate(k->eos, k->n), 100 * rate(k->in_character, k->n),
                     100 * rate(k->passed, k->n), k->words / (double)k->n, 100 * rate(k->recital, k->n));
    }
    lm_sb_str(&b, "\n## Answers\n\nFlags name what the metrics found in each answer (see src/eval/metrics.h).\n\n");
    size_t i;
    json_t *a;
    json_array_foreach(answers, i, a) {
        lm_sb_printf(&b, "**%s** (%s) %s\n\n> ", json_string_value(json_object_get(a, "id")),
                     json_string_value(json_object_get(a, "category")),
                     json_string_value(json_object_get(a, "question")));
        put_cell(&b, json_string_value(json_object_get(a, "answer")), 2000);
        const char *stop = json_string_value(json_object_get(a, "stop"));
        lm_sb_printf(&b, "\n\n%s", stop && strcmp(stop, "eos") ? "stopped: " : "");
        if (stop && strcmp(stop, "eos")) lm_sb_printf(&b, "%s ", stop);
        json_t *fl = json_object_get(a, "flags");
        size_t j;
        json_t *f;
        json_array_foreach(fl, j, f) lm_sb_printf(&b, "`%s` ", json_string_value(f));
        /* under a guard: how many draws it took, what the given one still fails */
        json_int_t drawn = json_integer_value(json_object_get(a, "attempts"));
        const char *gf = json_string_value(json_object_get(a, "guard_failed"));
        if (drawn > 1) lm_sb_printf(&b, "(guard: drawn %lld times%s%s) ", (long long)drawn,
                                    gf ? "; still fails " : "", gf ? gf : "");
        json_t *jd = json_object_get(a, "judge");
        if (json_is_object(jd)) {
            lm_sb_str(&b, "judge:");
            for (int d = 0; d < LM_JUDGE_N; d++)
                lm_sb_printf(&b, " %s %lld", lm_judge_dim_name(d),
                             (long long)json_integer_value(json_object_get(jd, lm_judge_dim_name(d))));
        }
        lm_sb_str(&b, "\n\n");
    }
    snprintf(path, sizeof path, "%s/report.md", dir);
    rc = b.oom ? lm_errf(err, "out of memory") : lm_write_file_atomic(path, b.p, b.len, err);
    lm_sb_free(&b);
    json_decref(r);
    return rc;
}

/* ---- comparison ----------------------------------------------------------- */

/* twelve colours: a comparison of up to twelve NPCs has no two alike */
static const char *const PALETTE[] = {"#9e9e9e", "#e6a23c", "#409eff", "#67c23a", "#f56c6c",
                                      "#8e44ad", "#16a085", "#34495e", "#d35400", "#c71585",
                                      "#1abc9c", "#7f8c8d"};
#define N_PALETTE (sizeof PALETTE / sizeof PALETTE[0])

static void svg_text(lm_sb *b, const char *s) {
    for (const char *p = s; *p; p++) {
        if (*p == '<') lm_sb_str(b, "&lt;");
        else if (*p == '>') lm_sb_str(b, "&gt;");
        else if (*p == '&') lm_sb_str(b, "&amp;");
        else lm_sb_add(b, p, 1);
    }
}

/* Grouped bars of the percentage metrics where a direction is better;
 * "lower is better" metrics are drawn as they are, with the title saying so. */
static char *compare_svg(json_t *const *reps, int n) {
    int groups = 0;
    for (size_t i = 0; i < N_METRICS; i++) groups += METRICS[i].percent && METRICS[i].higher >= 0;
    /* per metric: its title on a line, then one bar per NPC under it */
    int left = 20, rowh = 30 + 14 * n, top = 24 + 18 * n;
    int width = 760, height = top + groups * rowh + 10, full = width - left - 60;
    lm_sb b = {0};
    lm_sb_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                     "font-family=\"sans-serif\" font-size=\"12\">\n"
                     "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", width, height);
    for (int k = 0; k < n; k++) {
        lm_sb_printf(&b, "<rect x=\"10\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"28\" y=\"%d\">",
                     10 + 18 * k, PALETTE[k % N_PALETTE], 21 + 18 * k);
        svg_text(&b, label_of(reps[k]));
        lm_sb_str(&b, "</text>\n");
    }
    int g = 0;
    for (size_t i = 0; i < N_METRICS; i++) {
        const metric *mt = &METRICS[i];
        if (!mt->percent || mt->higher < 0) continue;
        int y0 = top + g * rowh;
        lm_sb_printf(&b, "<text x=\"10\" y=\"%d\" font-weight=\"bold\">", y0 + 16);
        svg_text(&b, mt->title);
        lm_sb_printf(&b, "</text><text x=\"%d\" y=\"%d\" text-anchor=\"end\" fill=\"#777\">%s is better</text>\n",
                     width - 10, y0 + 16, mt->higher ? "higher" : "lower");
        for (int k = 0; k < n; k++) {
            json_t *v = json_object_get(json_object_get(reps[k], "metrics"), mt->key);
            double x = json_is_number(v) ? json_number_value(v) : 0;
            int bw = (int)(x * full);
            lm_sb_printf(&b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"12\" fill=\"%s\"/>"
                             "<text x=\"%d\" y=\"%d\" font-size=\"10\">%.0f%%</text>\n",
                         left, y0 + 22 + 14 * k, bw > 0 ? bw : 1, PALETTE[k % N_PALETTE], left + bw + 4,
                         y0 + 32 + 14 * k, 100 * x);
        }
        g++;
    }
    lm_sb_str(&b, "</svg>\n");
    return lm_sb_take(&b);
}

int lm_eval_compare(const char *const *dirs, int n, const char *out, lm_err *err) {
    if (n < 1) return lm_errf(err, "compare: no report folders");
    json_t **reps = calloc((size_t)n, sizeof *reps);
    json_t **ans = calloc((size_t)n, sizeof *ans), **order = calloc((size_t)n, sizeof *order);
    int rc = -1;
    char path[4096];
    lm_sb b = {0};
    char *svg = NULL;
    if (!reps || !ans || !order) { lm_errf(err, "out of memory"); goto done; }
    for (int k = 0; k < n; k++) {
        json_error_t je;
        snprintf(path, sizeof path, "%s/report.json", dirs[k]);
        if (!(reps[k] = json_load_file(path, 0, &je))) {
            lm_errf(err, "%s: %s (run `lemonpc eval ... --out %s` first)", path, je.text, dirs[k]);
            goto done;
        }
        /* by id, for the side-by-side answers */
        if (!(order[k] = lm_eval_read_answers(dirs[k]))) { lm_errf(err, "out of memory"); goto done; }
        ans[k] = json_object();
        size_t i;
        json_t *a;
        json_array_foreach(order[k], i, a) json_object_set(ans[k], json_string_value(json_object_get(a, "id")), a);
    }
    if (lm_mkdir_p(out, err)) goto done;
    lm_sb_str(&b, "# NPCs side by side\n\n| metric |");
    for (int k = 0; k < n; k++) lm_sb_printf(&b, " %s |", label_of(reps[k]));
    lm_sb_str(&b, "\n|---|");
    for (int k = 0; k < n; k++) lm_sb_str(&b, "---|");
    lm_sb_str(&b, "\n");
    for (size_t i = 0; i < N_METRICS; i++) {
        /* a row no report has (the judge's, without a judge) is left out */
        bool any = false;
        for (int k = 0; k < n; k++) any |= json_object_get(json_object_get(reps[k], "metrics"), METRICS[i].key) != NULL;
        if (!any) continue;
        lm_sb_printf(&b, "| %s |", METRICS[i].title);
        for (int k = 0; k < n; k++)
            put_value(&b, json_object_get(json_object_get(reps[k], "metrics"), METRICS[i].key), &METRICS[i]);
        lm_sb_str(&b, "\n");
    }
    lm_sb_str(&b, "\n| run | questions | settings |\n|---|---|---|\n");
    for (int k = 0; k < n; k++) {
        json_t *set = json_deep_copy(json_object_get(reps[k], "settings"));
        json_object_del(set, "files");   /* stamps for resuming, noise to a reader */
        const char *paths[] = {"model", "adapter", "character"};
        for (size_t i = 0; i < 3; i++) show_path_of(set, paths[i]);
        char *s = json_dumps(set, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(set);
        const char *qp = json_string_value(json_object_get(reps[k], "questions"));
        char *q = qp ? lm_eval_shown_path(qp) : NULL;
        lm_sb_printf(&b, "| %s | `%s` | `%s` |\n", label_of(reps[k]), q ? q : "", s ? s : "");
        free(q);
        free(s);
    }
    /* Every question with each NPC's answer, in the first report's order. */
    lm_sb_str(&b, "\n## Answers\n\n");
    size_t qi;
    json_t *a;
    json_array_foreach(order[0], qi, a) {
        const char *id = json_string_value(json_object_get(a, "id"));
        lm_sb_printf(&b, "### %s (%s)\n\n%s\n\n", id, json_string_value(json_object_get(a, "category")),
                     json_string_value(json_object_get(a, "question")));
        for (int k = 0; k < n; k++) {
            json_t *x = json_object_get(ans[k], id);
            lm_sb_printf(&b, "- **%s**: ", label_of(reps[k]));
            put_cell(&b, x ? json_string_value(json_object_get(x, "answer")) : "(not answered)", 600);
            size_t j;
            json_t *fl;
            json_array_foreach(json_object_get(x, "flags"), j, fl) lm_sb_printf(&b, " `%s`", json_string_value(fl));
            const char *stop = json_string_value(json_object_get(x, "stop"));
            if (stop && strcmp(stop, "eos")) lm_sb_printf(&b, " (stopped: %s)", stop);
            lm_sb_str(&b, "\n");
        }
        lm_sb_str(&b, "\n");
    }
    snprintf(path, sizeof path, "%s/compare.md", out);
    if (b.oom) { lm_errf(err, "out of memory"); goto done; }
    if (lm_write_file_atomic(path, b.p, b.len, err)) goto done;
    if (!(svg = compare_svg(reps, n))) { lm_errf(err, "out of memory"); goto done; }
    snprintf(path, sizeof path, "%s/compare.svg", out);
    if (lm_write_file_atomic(path, svg, strlen(svg), err)) goto done;
    rc = 0;
done:
    for (int k = 0; reps && k < n; k++) json_decref(reps[k]);
    for (int k = 0; ans && k < n; k++) json_decref(ans[k]);
    for (int k = 0; order && k < n; k++) json_decref(order[k]);
    free(reps);
    free(ans);
    free(order);
    free(svg);
    lm_sb_free(&b);
    return rc;
}
