/* Our side of the runtime benchmark (bench/bench_runtime.py runs it next to
 * llama.cpp). Uses only the public API, include/lemonpc.h, as a game would.
 *
 *   runtime ttft   OPTIONS   time to first token, persona evaluated vs cached
 *   runtime decode OPTIONS   decode tokens/s, 1..N conversations at once
 *   runtime rss    OPTIONS   peak RSS of N NPCs, each answering one line
 *
 * Options (all modes):
 *   --model PATH        base model GGUF (required)
 *   --threads N         the model's worker threads (default: all CPUs)
 *   --line TEXT         the player's line (default: a question to the NPC)
 *   --max-tokens N      per reply (default 64)
 *   --persona MODE      full, short, none or auto (default full)
 *   --sheet PATH        a character sheet; repeatable: NPC i gets sheet i mod count
 *   --player TEXT       who talks to the NPC; repeatable as --sheet ("" = none)
 *   --place TEXT        where ("" = none)
 * ttft:   --reps N (default 5), --warmup 0|1 (default 1: one NPC answers first, untimed)
 * decode: --conc LIST (default 1,4): one run per count, NPC i in thread i
 * rss:    --adapter PATH, repeatable: one NPC per adapter; or --npcs N without adapters
 *
 * Every reply is greedy. Prints one JSON line on stdout; progress on stderr.
 *
 * ttft: per rep, a freshly loaded NPC answers the line in a new conversation
 * ("uncached": first_token_seconds includes evaluating the persona), then a
 * second conversation of the same NPC answers it ("cached": the persona's KV
 * is copied, only the scene and the line are evaluated).
 *
 * decode: all conversations wait at a barrier at their first streamed text,
 * so that their decoding overlaps from the same instant. Decode steps are the
 * one-token forward passes after the first token: each generated token is
 * evaluated (the conversation keeps it in its cache), except one that
 * completes a stop string. Per conversation: its steps / (its end - its
 * barrier release); aggregate: all steps / (the last end - the release). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "lemonpc.h"

#define MAX_LIST 256

typedef struct opts {
    const char *model;
    int threads;
    const char *line;
    int max_tokens;
    lemonpc_persona persona;
    const char *sheets[MAX_LIST];
    int n_sheets;
    const char *players[MAX_LIST];
    int n_players;
    const char *place;
    int reps, warmup;
    int conc[16];
    int n_conc;
    const char *adapters[MAX_LIST];
    int n_adapters;
    int npcs;
} opts;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static const char *stop_name(lemonpc_stop s) {
    switch (s) {
    case LEMONPC_STOP_END: return "end";
    case LEMONPC_STOP_MAX_TOKENS: return "max_tokens";
    case LEMONPC_STOP_STRING: return "stop_string";
    case LEMONPC_STOP_CONTEXT_FULL: return "context_full";
    case LEMONPC_STOP_CANCELLED: return "cancelled";
    }
    return "?";
}

/* VmRSS / VmHWM of this process in MB (-1 if unreadable). */
static double proc_status_mb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    double v = -1;
    size_t k = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, k) && line[k] == ':') {
            v = atof(line + k + 1) / 1024.0;
            break;
        }
    fclose(f);
    return v;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

static void die(const char *what, const lemonpc_error *err) {
    fprintf(stderr, "runtime: %s: %s (%s)\n", what, err->message, lemonpc_status_name(err->code));
    exit(1);
}

static const char *player_of(const opts *o, int i) {
    if (!o->n_players) return NULL;
    const char *p = o->players[i % o->n_players];
    return p[0] ? p : NULL;
}

static lemonpc_npc *load_npc(lemonpc_model *m, const opts *o, int i, const char *adapter) {
    lemonpc_npc_params np = lemonpc_npc_default_params();
    np.sheet = o->n_sheets ? o->sheets[i % o->n_sheets] : NULL;
    np.persona = o->persona;
    np.adapter = adapter;
    np.sampling.temperature = 0;   /* greedy */
    np.sampling.repeat_penalty = 1;
    np.sampling.max_tokens = o->max_tokens;
    lemonpc_error err;
    lemonpc_npc *n = lemonpc_npc_load(m, &np, &err);
    if (!n) die("lemonpc_npc_load", &err);
    if (lemonpc_npc_warning(n)[0])
        fprintf(stderr, "runtime: NPC %d (%s): %s\n", i, lemonpc_npc_name(n), lemonpc_npc_warning(n));
    return n;
}

static lemonpc_conversation *open_conv(lemonpc_npc *n, const opts *o, int i) {
    lemonpc_error err;
    const char *place = o->place && o->place[0] ? o->place : NULL;
    lemonpc_conversation *c = lemonpc_conversation_open(n, player_of(o, i), place, &err);
    if (!c) die("lemonpc_conversation_open", &err);
    return c;
}

static void say(lemonpc_conversation *c, const char *line, lemonpc_stream_fn fn, void *user,
                lemonpc_reply_info *info) {
    lemonpc_error err;
    if (lemonpc_say(c, line, fn, user, NULL, info, &err) != LEMONPC_OK) die("lemonpc_say", &err);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double *s = malloc(sizeof *s * (size_t)n);
    if (!s) return 0;
    memcpy(s, v, sizeof *s * (size_t)n);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double r = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return r;
}

static void print_list(FILE *f, const char *key, const double *v, int n, double scale) {
    fprintf(f, "\"%s\": [", key);
    for (int i = 0; i < n; i++) fprintf(f, "%s%.6f", i ? ", " : "", v[i] * scale);
    fprintf(f, "]");
}

/* ---- ttft ------------------------------------------------------------------ */

static int run_ttft(lemonpc_model *m, const opts *o) {
    int reps = o->reps > 0 ? o->reps : 1;
    double *unc = calloc((size_t)reps, sizeof *unc), *cac = calloc((size_t)reps, sizeof *cac);
    if (!unc || !cac) { fprintf(stderr, "runtime: out of memory\n"); return 1; }
    int prefix = 0, n_total = 0, n_unc = 0, n_cac = 0, reused = 0;
    double load_s = 0;
    for (int r = -(o->warmup ? 1 : 0); r < reps; r++) {
        double a = now_s();
        lemonpc_npc *n = load_npc(m, o, 0, NULL);
        double b = now_s();
        lemonpc_conversation *c1 = open_conv(n, o, 0);
        lemonpc_reply_info i1, i2;
        say(c1, o->line, NULL, NULL, &i1);
        lemonpc_conversation *c2 = open_conv(n, o, 0);
        say(c2, o->line, NULL, NULL, &i2);
        if (r >= 0) {
            unc[r] = i1.first_token_seconds;
            cac[r] = i2.first_token_seconds;
            load_s += b - a;
        }
        prefix = lemonpc_npc_prefix_tokens(n);
        n_total = i1.n_prompt + i1.n_reused;
        n_unc = i1.n_prompt;
        n_cac = i2.n_prompt;
        reused = i2.n_reused;
        fprintf(stderr, "  ttft %s: uncached %.1f ms (%d tokens), cached %.1f ms (%d tokens, %d reused)\n",
                r < 0 ? "warm-up" : "rep", i1.first_token_seconds * 1e3, i1.n_prompt,
                i2.first_token_seconds * 1e3, i2.n_prompt, i2.n_reused);
        lemonpc_conversation_close(c2);
        lemonpc_conversation_close(c1);
        lemonpc_npc_free(n);
    }
    printf("{\"mode\": \"ttft\", \"threads\": %d, \"reps\": %d, \"prefix_tokens\": %d, "
           "\"prompt_tokens\": %d, \"uncached_evaluated\": %d, \"cached_evaluated\": %d, "
           "\"cached_reused\": %d, \"npc_load_s\": %.6f, ",
           o->threads, reps, prefix, n_total, n_unc, n_cac, reused, load_s / reps);
    print_list(stdout, "uncached_s", unc, reps, 1);
    printf(", ");
    print_list(stdout, "cached_s", cac, reps, 1);
    printf(", \"uncached_median_s\": %.6f, \"cached_median_s\": %.6f, \"peak_rss_mb\": %.1f}\n",
           median(unc, reps), median(cac, reps), peak_rss_mb());
    free(unc);
    free(cac);
    return 0;
}

/* ---- decode ---------------------------------------------------------------- */

typedef struct barrier {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int total, arrived;
    double release;
    int timed_out;
} barrier;

/* Waits until every conversation has arrived (at most 300 s: a stuck one
 * must not hang the benchmark; the run is then flagged). */
static double barrier_arrive(barrier *b) {
    pthread_mutex_lock(&b->mu);
    if (++b->arrived == b->total) {
        b->release = now_s();
        pthread_cond_broadcast(&b->cv);
    } else {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 300;
        while (b->arrived < b->total) {
            if (pthread_cond_timedwait(&b->cv, &b->mu, &until) == ETIMEDOUT) {
                b->timed_out = 1;
                break;
            }
        }
    }
    pthread_mutex_unlock(&b->mu);
    return now_s();
}

typedef struct conv_job {
    const opts *o;
    lemonpc_npc *npc;
    int index;
    barrier *bar;
    int arrived_in_stream;   /* reached the barrier at its first text */
    double t_leave, t_end;
    lemonpc_reply_info info;
    pthread_t th;
} conv_job;

static int on_text(void *user, const char *text, size_t len) {
    conv_job *j = user;
    if (!j->arrived_in_stream && len > 0) {
        j->arrived_in_stream = 1;
        j->t_leave = barrier_arrive(j->bar);
    }
    return 0;
}

/* One-token forward passes after the first token (see the top). */
static int decode_steps(const conv_job *j) {
    if (!j->arrived_in_stream) return 0;
    return j->info.n_generated - (j->info.stop == LEMONPC_STOP_STRING ? 1 : 0);
}

static void *conv_thread(void *arg) {
    conv_job *j = arg;
    lemonpc_conversation *c = open_conv(j->npc, j->o, j->index);
    say(c, j->o->line, on_text, j, &j->info);
    j->t_end = now_s();
    if (!j->arrived_in_stream) j->t_leave = barrier_arrive(j->bar);   /* no text: must not block the rest */
    lemonpc_conversation_close(c);
    return NULL;
}

static int run_decode(lemonpc_model *m, const opts *o) {
    int max_conc = 0;
    for (int k = 0; k < o->n_conc; k++)
        if (o->conc[k] > max_conc) max_conc = o->conc[k];
    lemonpc_npc **npcs = calloc((size_t)max_conc, sizeof *npcs);
    conv_job *jobs = calloc((size_t)max_conc, sizeof *jobs);
    if (!npcs || !jobs) { fprintf(stderr, "runtime: out of memory\n"); return 1; }
    for (int i = 0; i < max_conc; i++) npcs[i] = load_npc(m, o, i, NULL);
    printf("{\"mode\": \"decode\", \"threads\": %d, \"max_tokens\": %d, \"runs\": [", o->threads,
           o->max_tokens);
    for (int k = 0; k < o->n_conc; k++) {
        int n = o->conc[k];
        barrier bar = {.total = n};
        pthread_mutex_init(&bar.mu, NULL);
        pthread_cond_init(&bar.cv, NULL);
        for (int i = 0; i < n; i++) {
            jobs[i] = (conv_job){.o = o, .npc = npcs[i], .index = i, .bar = &bar};
            if (pthread_create(&jobs[i].th, NULL, conv_thread, &jobs[i])) {
                fprintf(stderr, "runtime: pthread_create failed\n");
                return 1;
            }
        }
        for (int i = 0; i < n; i++) pthread_join(jobs[i].th, NULL);
        double last_end = 0;
        long tokens = 0;
        for (int i = 0; i < n; i++) {
            if (jobs[i].t_end > last_end) last_end = jobs[i].t_end;
            tokens += decode_steps(&jobs[i]);
        }
        double wall = last_end - bar.release;
        printf("%s{\"conc\": %d, \"aggregate_tps\": %.3f, \"decode_wall_s\": %.4f, "
               "\"barrier_timed_out\": %s, \"convs\": [", k ? ", " : "", n,
               wall > 0 ? tokens / wall : 0, wall, bar.timed_out ? "true" : "false");
        for (int i = 0; i < n; i++) {
            const conv_job *j = &jobs[i];
            double d = j->t_end - j->t_leave;
            int nt = decode_steps(j);
            printf("%s{\"npc\": %d, \"name\": ", i ? ", " : "", i);
            json_str(stdout, lemonpc_npc_name(j->npc));
            printf(", \"n_prompt\": %d, \"n_reused\": %d, \"n_generated\": %d, \"stop\": \"%s\", "
                   "\"first_token_s\": %.4f, \"decode_steps\": %d, \"decode_s\": %.4f, "
                   "\"decode_tps\": %.3f}",
                   j->info.n_prompt, j->info.n_reused, j->info.n_generated,
                   stop_name(j->info.stop), j->info.first_token_seconds, nt, d,
                   d > 0 ? nt / d : 0);
        }
        printf("]}");
        fprintf(stderr, "  decode %d conversation(s): %.1f tokens/s aggregate\n", n,
                wall > 0 ? tokens / wall : 0);
        pthread_cond_destroy(&bar.cv);
        pthread_mutex_destroy(&bar.mu);
    }
    printf("], \"prefix_tokens\": [");
    for (int i = 0; i < max_conc; i++)
        printf("%s%d", i ? ", " : "", lemonpc_npc_prefix_tokens(npcs[i]));
    printf("], \"peak_rss_mb\": %.1f}\n", peak_rss_mb());
    for (int i = 0; i < max_conc; i++) lemonpc_npc_free(npcs[i]);
    free(npcs);
    free(jobs);
    return 0;
}

/* ---- rss ------------------------------------------------------------------- */

static int run_rss(lemonpc_model *m, const opts *o, double model_rss) {
    int n = o->n_adapters ? o->n_adapters : o->npcs;
    if (n <= 0) { fprintf(stderr, "runtime rss: give --adapter (one per NPC) or --npcs N\n"); return 2; }
    lemonpc_npc **npcs = calloc((size_t)n, sizeof *npcs);
    lemonpc_conversation **convs = calloc((size_t)n, sizeof *convs);
    if (!npcs || !convs) { fprintf(stderr, "runtime: out of memory\n"); return 1; }
    long gen = 0, cached = 0, prefix = 0;
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        npcs[i] = load_npc(m, o, i, o->n_adapters ? o->adapters[i] : NULL);
        convs[i] = open_conv(npcs[i], o, i);
        lemonpc_reply_info info;
        say(convs[i], o->line, NULL, NULL, &info);
        gen += info.n_generated;
        cached += lemonpc_conversation_n_cached(convs[i]);
        prefix += lemonpc_npc_prefix_tokens(npcs[i]);
    }
    double secs = now_s() - t0;
    /* everything alive: n NPCs, each with a conversation that has answered */
    printf("{\"mode\": \"rss\", \"n_npcs\": %d, \"adapters\": %s, \"threads\": %d, "
           "\"model_rss_mb\": %.1f, \"rss_mb\": %.1f, \"peak_rss_mb\": %.1f, "
           "\"prefix_tokens_total\": %ld, \"cached_tokens_total\": %ld, \"generated_total\": %ld, "
           "\"seconds\": %.3f}\n",
           n, o->n_adapters ? "true" : "false", o->threads, model_rss, proc_status_mb("VmRSS"),
           peak_rss_mb(), prefix, cached, gen, secs);
    fprintf(stderr, "  rss %d NPC(s): peak %.1f MB\n", n, peak_rss_mb());
    for (int i = 0; i < n; i++) lemonpc_conversation_close(convs[i]);
    for (int i = 0; i < n; i++) lemonpc_npc_free(npcs[i]);
    free(convs);
    free(npcs);
    return 0;
}

/* ---- main ------------------------------------------------------------------ */

static int usage(void) {
    fprintf(stderr, "usage: runtime ttft|decode|rss --model PATH [options] (see bench/runtime.c)\n");
    return 2;
}

static int parse_persona(const char *s, lemonpc_persona *p) {
    if (!strcmp(s, "full")) *p = LEMONPC_PERSONA_FULL;
    else if (!strcmp(s, "short")) *p = LEMONPC_PERSONA_SHORT;
    else if (!strcmp(s, "none")) *p = LEMONPC_PERSONA_NONE;
    else if (!strcmp(s, "auto")) *p = LEMONPC_PERSONA_AUTO;
    else return -1;
    return 0;
}

static int parse_int(const char *s, int *v) {
    char *end;
    long x = strtol(s, &end, 10);
    if (end == s || *end) return -1;
    *v = (int)x;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    const char *mode = argv[1];
    opts o = {.threads = 0, .line = "Who are the Unblessed, and what do you think of them?",
              .max_tokens = 64, .persona = LEMONPC_PERSONA_FULL, .reps = 5, .warmup = 1,
              .conc = {1, 4}, .n_conc = 2};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) { fprintf(stderr, "runtime: %s needs a value\n", a); return 2; }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--model")) o.model = v;
        else if (!strcmp(a, "--threads")) bad = parse_int(v, &o.threads);
        else if (!strcmp(a, "--line")) o.line = v;
        else if (!strcmp(a, "--max-tokens")) bad = parse_int(v, &o.max_tokens);
        else if (!strcmp(a, "--persona")) bad = parse_persona(v, &o.persona);
        else if (!strcmp(a, "--place")) o.place = v;
        else if (!strcmp(a, "--reps")) bad = parse_int(v, &o.reps);
        else if (!strcmp(a, "--warmup")) bad = parse_int(v, &o.warmup);
        else if (!strcmp(a, "--npcs")) bad = parse_int(v, &o.npcs);
        else if (!strcmp(a, "--sheet") || !strcmp(a, "--player") || !strcmp(a, "--adapter")) {
            const char **list = a[2] == 's' ? o.sheets : a[2] == 'p' ? o.players : o.adapters;
            int *n = a[2] == 's' ? &o.n_sheets : a[2] == 'p' ? &o.n_players : &o.n_adapters;
            if (*n == MAX_LIST) { fprintf(stderr, "runtime: at most %d of %s\n", MAX_LIST, a); return 2; }
            list[(*n)++] = v;
        } else if (!strcmp(a, "--conc")) {
            o.n_conc = 0;
            for (const char *p = v; *p && !bad;) {
                char *end;
                long x = strtol(p, &end, 10);
                if (end == p || x < 1 || x > MAX_LIST || o.n_conc == 16) bad = 1;
                else o.conc[o.n_conc++] = (int)x;
                p = *end == ',' ? end + 1 : end;
                if (*end && *end != ',') bad = 1;
            }
            if (!o.n_conc) bad = 1;
        } else {
            fprintf(stderr, "runtime: unknown option %s\n", a);
            return usage();
        }
        if (bad) { fprintf(stderr, "runtime: bad value for %s: '%s'\n", a, v); return 2; }
    }
    if (!o.model) { fprintf(stderr, "runtime: --model is required\n"); return usage(); }
    if (strcmp(mode, "ttft") && strcmp(mode, "decode") && strcmp(mode, "rss")) return usage();

    lemonpc_model_params mp = lemonpc_model_default_params();
    mp.threads = o.threads;
    lemonpc_error err;
    double t0 = now_s();
    lemonpc_model *m = lemonpc_model_load(o.model, &mp, &err);
    if (!m) die(o.model, &err);
    fprintf(stderr, "runtime %s: model loaded in %.2f s\n", mode, now_s() - t0);
    double model_rss = proc_status_mb("VmRSS");
    int rc = !strcmp(mode, "ttft") ? run_ttft(m, &o)
           : !strcmp(mode, "decode") ? run_decode(m, &o)
           : run_rss(m, &o, model_rss);
    lemonpc_model_free(m);
    return rc;
}
