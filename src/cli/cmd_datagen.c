/* `lemonpc datagen SHEET_DIR --character NAME --out DIR ...`: one round of
 * dataset generation through a teacher (docs/DATAGEN.md). */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "datagen/pipeline.h"

/* Set by SIGINT/SIGTERM; the runner polls it and stops between writes. A
 * signal handler can reach nothing else. */
static volatile sig_atomic_t g_cancel;

static void on_signal(int sig) {
    (void)sig;
    g_cancel = 1;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc datagen SHEET_DIR --character NAME --out DIR\n"
            "         (--teacher-url URL [--teacher-model NAME] [--api-key-env VAR]\n"
            "          | --teacher-gguf MODEL.gguf) [options]\n\n"
            "Generates a conversation dataset for one character of a sheet folder: N\n"
            "questions written by the teacher in the voice of people of the character's\n"
            "world, then the teacher's in-character answers, filtered. Rerunning the\n"
            "same command continues where it stopped (Ctrl-C is safe).\n\n"
            "  --character NAME    the character (id, file name, full or first name)\n"
            "  --out DIR           output folder: dataset.jsonl, train/validation/test.jsonl,\n"
            "                      rejected.jsonl, stats.md, stats.json, and the teacher journals\n"
            "  --teacher-url URL   OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1\n"
            "  --teacher-model M   the request's \"model\" (default \"default\")\n"
            "  --api-key-env VAR   environment variable holding the API key\n"
            "  --teacher-gguf F    our own engine on a local GGUF model instead\n"
            "  --n N               question requests (default 100)\n"
            "  --kinds SPEC        mix of kinds (default in-world=0.6,off-topic=0.15,\n"
            "                      protective=0.15,adversarial=0.1)\n"
            "  --seed S            seed of every random choice (default 42)\n"
            "  --round R           round number recorded in each sample (default 1)\n"
            "  --templates DIR     prompt templates (default: $LEMONPC_TEMPLATES, else\n"
            "                      datagen/templates next to the executable's ../, else\n"
            "                      ./datagen/templates)\n"
            "  --examples FILE     extra style examples, JSONL {\"messages\": [user, assistant]}\n"
            "                      (e.g. answers promoted in review)\n"
            "  --filters FILE      filter settings (key = value lines, see docs/DATAGEN.md)\n"
            "  --system none|persona  system message in each sample (default none)\n"
            "  --val-frac F        validation share (default 0.1)\n"
            "  --test-frac F       test share (default 0.1)\n"
            "  --max-prompt-bytes N  cap of an answer request's system message (default\n"
            "                      5000, for a 2048-token teacher; 0: no cap)\n"
            "  --max-in-flight N   concurrent teacher requests (HTTP; default 4)\n"
            "  --timeout-ms MS     per request (HTTP; default 120000)\n"
            "  --max-retries N     per request (HTTP; default 4)\n"
            "  --threads N         local teacher threads (default: all CPUs)\n");
}

static int parse_ull(const char *s, unsigned long long hi, unsigned long long *out) {
    char *end;
    errno = 0;
    if (!s || *s == '-') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_frac(const char *s, double *out) {
    char *end;
    double v = s ? strtod(s, &end) : -1;
    if (!s || *end || end == s || !(v >= 0 && v < 1)) return -1;
    *out = v;
    return 0;
}

static int has_templates(const char *dir) {
    char p[PATH_MAX + 32];
    if (snprintf(p, sizeof p, "%s/question_persona.txt", dir) >= (int)sizeof p) return 0;
    return access(p, R_OK) == 0;
}

/* The default template folder, or NULL. */
static const char *find_templates(char *buf, size_t cap) {
    const char *env = getenv("LEMONPC_TEMPLATES");
    if (env && *env) return env;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        static const char *const rel[] = {"/../datagen/templates", "/../share/lemonpc/templates",
                                          "/datagen/templates"};
        for (size_t i = 0; i < 3; i++) {
            if (snprintf(buf, cap, "%s%s", exe, rel[i]) >= (int)cap) continue;
            if (has_templates(buf)) return buf;
        }
    }
    if (has_templates("datagen/templates")) return "datagen/templates";
    return NULL;
}

int cmd_datagen(int argc, char **argv) {
    const char *sheet_dir = NULL, *character = NULL, *out = NULL, *url = NULL, *model = NULL;
    const char *key_env = NULL, *gguf = NULL, *templates = NULL, *examples = NULL, *filters = NULL;
    lm_datagen_opts o = lm_datagen_opts_default();
    unsigned long long v, in_flight = 0, timeout_ms = 0, threads = 0;
    long long retries = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (a[0] != '-') {
            if (sheet_dir) { fprintf(stderr, "lemonpc datagen: unexpected argument '%s'\n", a); return 2; }
            sheet_dir = a;
            continue;
        }
        if (!val) { fprintf(stderr, "lemonpc datagen: %s needs a value (see --help)\n", a); return 2; }
        i++;
        if (!strcmp(a, "--character")) character = val;
        else if (!strcmp(a, "--out")) out = val;
        else if (!strcmp(a, "--teacher-url")) url = val;
        else if (!strcmp(a, "--teacher-model")) model = val;
        else if (!strcmp(a, "--api-key-env")) key_env = val;
        else if (!strcmp(a, "--teacher-gguf")) gguf = val;
        else if (!strcmp(a, "--templates")) templates = val;
        else if (!strcmp(a, "--examples")) examples = val;
        else if (!strcmp(a, "--filters")) filters = val;
        else if (!strcmp(a, "--n")) { bad = parse_ull(val, 10000000, &v) || !v; o.n = (size_t)v; }
        else if (!strcmp(a, "--seed")) { bad = parse_ull(val, ~0ull, &v); o.seed = v; }
        else if (!strcmp(a, "--round")) { bad = parse_ull(val, 1000000, &v) || !v; o.round = (int)v; }
        else if (!strcmp(a, "--max-prompt-bytes")) {
            bad = parse_ull(val, 1ull << 30, &v);
            o.max_prompt_bytes = v ? (size_t)v : SIZE_MAX;
        } else if (!strcmp(a, "--max-in-flight")) bad = parse_ull(val, 256, &in_flight) || !in_flight;
        else if (!strcmp(a, "--timeout-ms")) bad = parse_ull(val, 86400000, &timeout_ms) || !timeout_ms;
        else if (!strcmp(a, "--threads")) bad = parse_ull(val, 1024, &threads);
        else if (!strcmp(a, "--max-retries")) { bad = parse_ull(val, 100, &v); retries = (long long)v; }
        else if (!strcmp(a, "--val-frac")) bad = parse_frac(val, &o.val_frac);
        else if (!strcmp(a, "--test-frac")) bad = parse_frac(val, &o.test_frac);
        else if (!strcmp(a, "--system")) {
            if (!strcmp(val, "none")) o.system = LM_DG_SYSTEM_NONE;
            else if (!strcmp(val, "persona")) o.system = LM_DG_SYSTEM_PERSONA;
            else bad = 1;
        } else if (!strcmp(a, "--kinds")) {
            lm_err e = {{0}};
            if (lm_qmix_parse(val, &o.mix, &e)) { fprintf(stderr, "lemonpc datagen: %s\n", e.msg); return 2; }
        } else {
            fprintf(stderr, "lemonpc datagen: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (bad) { fprintf(stderr, "lemonpc datagen: bad value for %s: '%s'\n", a, val); return 2; }
    }
    if (!sheet_dir || !character || !out) {
        fprintf(stderr, "lemonpc datagen: SHEET_DIR, --character and --out are required (see --help)\n");
        return 2;
    }
    if (!!url == !!gguf) {
        fprintf(stderr, "lemonpc datagen: give exactly one teacher: --teacher-url or --teacher-gguf\n");
        return 2;
    }
    char tbuf[PATH_MAX];
    if (!templates && !(templates = find_templates(tbuf, sizeof tbuf))) {
        fprintf(stderr, "lemonpc datagen: no prompt templates found; pass --templates DIR "
                        "(the repository's datagen/templates)\n");
        return 1;
    }

    int rc = 1;
    lm_err err = {{0}};
    lm_diags d = {0};
    lm_sheet_dir *sd = lm_sheet_dir_load(sheet_dir, &d);
    lm_prompt_set *tpl = NULL;
    lm_teacher *t = NULL;
    lm_style_example *promoted = NULL;
    size_t n_promoted = 0;
    lm_filter_config fcfg;
    lm_filter_config_default(&fcfg);
    if (!sd || lm_diags_count(&d, LM_DIAG_ERROR)) {
        lm_diags_sort(&d);
        for (size_t i = 0; i < d.n; i++)
            if (d.v[i].level == LM_DIAG_ERROR)
                fprintf(stderr, "%s:%d: error: %s\n", d.v[i].file, d.v[i].line, d.v[i].msg);
        fprintf(stderr, "lemonpc datagen: %s has errors; `lemonpc check %s` lists them all\n",
                sheet_dir, sheet_dir);
        goto done;
    }
    const lm_character *c = lm_sheet_find(sd, character);
    if (!c) {
        fprintf(stderr, "lemonpc datagen: no character '%s' in %s (have:", character, sheet_dir);
        for (size_t i = 0; i < sd->n_chars; i++) fprintf(stderr, " '%s'", sd->chars[i]->name);
        fprintf(stderr, ")\n");
        goto done;
    }
    if (!(tpl = lm_prompt_set_load(templates, &err))) goto fail;
    if (examples && lm_style_examples_load(examples, &promoted, &n_promoted, &err)) goto fail;
    if (filters && lm_filter_config_load(&fcfg, filters, &err)) goto fail;
    o.promoted = promoted;
    o.n_promoted = n_promoted;
    o.filters = &fcfg;
    if (url) {
        lm_teacher_http_config hc = lm_teacher_http_config_default();
        hc.base_url = url;
        hc.model = model;
        hc.api_key_env = key_env;
        hc.seed = o.seed;
        if (in_flight) hc.max_in_flight = (int)in_flight;
        if (timeout_ms) hc.timeout_ms = (long)timeout_ms;
        if (retries >= 0) hc.max_retries = (int)retries;
        t = lm_teacher_http_new(&hc, &err);
    } else {
        lm_teacher_local_config lc = {gguf, 0, (int)threads, o.seed};
        t = lm_teacher_local_new(&lc, &err);
    }
    if (!t) goto fail;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;   /* a second Ctrl-C kills at once; the journals stay valid */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    o.out_dir = out;
    o.cancel = &g_cancel;
    o.progress = true;
    fprintf(stderr, "lemonpc datagen: %s, %zu questions, teacher %s, templates %s\n", c->name, o.n,
            lm_teacher_name(t), templates);
    lm_datagen_summary s;
    if (lm_datagen_run(t, c, sd->world, tpl, &o, &s, &err)) goto fail;
    if (s.cancelled) {
        fprintf(stderr, "lemonpc datagen: stopped; rerun the same command to continue\n");
        rc = 130;
        goto done;
    }
    printf("questions: %zu received, %zu teacher failures, %zu rejected\n", s.q_ok, s.q_failed,
           s.q_rejected);
    printf("answers:   %zu received, %zu teacher failures, %zu rejected\n", s.a_ok, s.a_failed,
           s.a_rejected);
    printf("kept %zu samples (train %zu, validation %zu, test %zu) in %s; report: %s/stats.md\n",
           s.kept, s.train, s.validation, s.test, out, out);
    if (s.q_failed || s.a_failed)
        printf("teacher failures are listed in %s/*.failures.jsonl; rerun to retry them\n", out);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "lemonpc datagen: %s\n", err.msg);
done:
    lm_teacher_free(t);
    lm_style_examples_free(promoted, n_promoted);
    lm_prompt_set_free(tpl);
    lm_sheet_dir_free(sd);
    lm_diags_free(&d);
    return rc;
}
