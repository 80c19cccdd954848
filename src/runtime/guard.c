/* The reply guard (guard.h): the eval checks, read without a question's
 * category, as LEMONPC_CHECK_x bits. */
#include "runtime/guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check/metrics.h"
#include "check/vocab.h"
#include "lemonpc.h"
#include "sheet/sheet.h"

struct lm_guard {
    lm_eval_checker *k;
    lm_vocab *known; /* every word of the sheet and its world */
    unsigned checks;
};

lm_guard *lm_guard_new(const struct lm_character *character, const struct lm_world *world,
                       unsigned checks, lm_err *err) {
    lm_guard *g = calloc(1, sizeof *g);
    if (!g) return lm_errf(err, "out of memory"), NULL;
    g->checks = checks & LEMONPC_CHECK_ALL;
    if (!(g->k = lm_eval_checker_new(character, err))) goto fail;
    if (!(g->known = lm_vocab_new(err))) goto fail;
    /* the sheet and the world as a writer would read them: names, lore,
     * example dialogue */
    char *md = character ? lm_character_to_md(character, err) : NULL;
    if (character && !md) goto fail;
    int rc = lm_vocab_add_text(g->known, md, err);
    free(md);
    if (rc) goto fail;
    md = world ? lm_world_to_md(world, err) : NULL;
    if (world && !md) goto fail;
    rc = lm_vocab_add_text(g->known, md, err);
    free(md);
    if (rc) goto fail;
    return g;
fail:
    lm_guard_free(g);
    return NULL;
}

void lm_guard_free(lm_guard *g) {
    if (!g) return;
    lm_eval_checker_free(g->k);
    lm_vocab_free(g->known);
    free(g);
}

bool lm_guard_line_is_ours(const lm_guard *g, const char *line) {
    if (!line) return false;
    size_t n;
    if (lm_vocab_foreign_name(g->known, line, &n)) return true;
    /* the line read as a reply that brings its own words: modern words,
     * years of our calendar */
    lm_eval_flags lf;
    lm_eval_check(g->k, "", line, "protective", NULL, true, &lf);
    return lf.modern;
}

unsigned lm_guard_check(const lm_guard *g, const char *line, const char *reply,
                        const char *player, bool ended, bool knows) {
    /* "protective" turns on the modern-knowledge check; the voice checks
     * read every category alike */
    lm_eval_flags f;
    lm_eval_check(g->k, line, reply, "protective", player, ended, &f);
    unsigned bad = 0;
    if (f.assistant || f.refusal || f.stage || f.self_intro || f.speaks_for_user || f.breaks)
        bad |= LEMONPC_CHECK_VOICE;
    if (f.modern) bad |= LEMONPC_CHECK_MODERN;
    if (!f.eos) bad |= LEMONPC_CHECK_ENDED;
    if (f.repetition) bad |= LEMONPC_CHECK_LOOP;
    bool ignorant = f.ignorant;
    if (g->checks & (LEMONPC_CHECK_DODGE | LEMONPC_CHECK_IGNORANCE)) {
        /* a line that brings our world's words or names is not about his,
         * whatever lore its other words called up: not knowing is right */
        bool ours = lm_guard_line_is_ours(g, line);
        if (ours && !ignorant) bad |= LEMONPC_CHECK_IGNORANCE;
        if (knows && !ours) {
            lm_eval_check(g->k, line, reply, "in-world", player, ended, &f);
            if (f.dodges) bad |= LEMONPC_CHECK_DODGE;
        }
    }
    return bad & g->checks;
}

static int n_bits(unsigned x) {
    int k = 0;
    for (; x; x &= x - 1) k++;
    return k;
}

void lm_guard_draws_free(lm_guard_draws *ds) {
    for (size_t i = 0; i < ds->n; i++) {
        free(ds->d[i].text);
        free(ds->d[i].tokens);
    }
    free(ds->d);
    *ds = (lm_guard_draws){0};
}

static int draw_one(lm_guard_draw_fn draw, void *ud, lm_guard_draws *ds, lm_err *err) {
    if (ds->n == ds->cap) {
        size_t cap = ds->cap ? ds->cap * 2 : 4;
        lm_guard_draw *d = realloc(ds->d, cap * sizeof *d);
        if (!d) return lm_errf(err, "out of memory");
        ds->d = d;
        ds->cap = cap;
    }
    lm_guard_draw *d = &ds->d[ds->n];
    memset(d, 0, sizeof *d);
    int rc = draw(ud, (int)ds->n, d, err);
    if (rc) {
        free(d->text);
        free(d->tokens);
        return rc;
    }
    ds->n++;
    return 0;
}

int lm_guard_draw_all(int best_of, int retries, lm_guard_draw_fn draw, lm_guard_empty_fn empty,
                      void *ud, lm_guard_draws *ds, size_t *chosen, lm_err *err) {
    *chosen = 0;
    if (best_of < 1) best_of = 1;
    if (retries < 0) retries = 0;
    int fewest = 0;
    for (int a = 0; a < best_of + retries; a++) {
        if (draw_one(draw, ud, ds, err)) return -1;
        int f = n_bits(ds->d[ds->n - 1].failed);
        if (a == 0 || f < fewest) fewest = f;
        if (a + 1 >= best_of && fewest == 0) break;
    }
    bool have = false, rank = best_of > 1 && empty;
    size_t tied = 0;
    for (size_t i = 0; i < ds->n; i++) tied += n_bits(ds->d[i].failed) == fewest;
    for (size_t i = 0; i < ds->n; i++) {
        lm_guard_draw *d = &ds->d[i];
        if (n_bits(d->failed) != fewest) continue;
        if (rank && tied > 1) {
            double lp0;
            if (empty(ud, d, &lp0, err)) return -1;
            d->relevance = (d->logp - lp0) / (d->n_logp > 0 ? d->n_logp : 1);
        }
        if (!have || d->relevance > ds->d[*chosen].relevance) *chosen = i;
        have = true;
    }
    return 0;
}

static const struct { const char *name; unsigned bit; } NAMES[] = {
    {"voice", LEMONPC_CHECK_VOICE}, {"modern", LEMONPC_CHECK_MODERN},
    {"ended", LEMONPC_CHECK_ENDED}, {"loop", LEMONPC_CHECK_LOOP},
    {"dodge", LEMONPC_CHECK_DODGE}, {"ignorance", LEMONPC_CHECK_IGNORANCE},
};
#define N_NAMES (sizeof NAMES / sizeof NAMES[0])

char *lm_guard_names(unsigned checks, char *buf, size_t cap) {
    size_t len = 0;
    if (cap) buf[0] = '\0';
    for (size_t i = 0; i < N_NAMES && cap; i++) {
        if (!(checks & NAMES[i].bit)) continue;
        int w = snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", NAMES[i].name);
        if (w < 0 || (size_t)w >= cap - len) break;
        len += (size_t)w;
    }
    return buf;
}

long lm_guard_parse(const char *list, lm_err *err) {
    unsigned bits = 0;
    for (const char *p = list; p && *p;) {
        while (*p == ',' || *p == ' ') p++;
        size_t n = strcspn(p, ", ");
        if (!n) break;
        bool found = false;
        if (n == 7 && !strncmp(p, "default", n)) { bits |= LEMONPC_CHECK_DEFAULT; found = true; }
        if (n == 3 && !strncmp(p, "all", n)) { bits |= LEMONPC_CHECK_ALL; found = true; }
        for (size_t i = 0; i < N_NAMES && !found; i++)
            if (strlen(NAMES[i].name) == n && !strncmp(p, NAMES[i].name, n)) {
                bits |= NAMES[i].bit;
                found = true;
            }
        if (!found)
            return lm_errf(err, "unknown check '%.*s' (voice, modern, ended, loop, dodge, ignorance, "
                           "default, all)", (int)n, p);
        p += n;
    }
    return (long)bits;
}

static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

lm_sampler_params lm_guard_retry_params(const lm_sampler_params *sp, float temperature,
                                        uint64_t turn, int attempt) {
    lm_sampler_params r = *sp;
    if (!(r.temp > 0)) {
        /* a greedy NPC would give the same reply again: its retries sample
         * as the runtime does by default */
        r.temp = temperature > 0 ? temperature : 0.7f;
        r.top_k = 40;
        r.top_p = 0.95f;
        r.min_p = 0.05f;
    }
    r.seed = mix(sp->seed ^ mix(turn + 0x9e3779b97f4a7c15ull * (uint64_t)attempt));
    return r;
}
