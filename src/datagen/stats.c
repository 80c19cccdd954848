/* A round's statistics (pipeline.h): counts by key, most frequent first,
 * as JSON and as a markdown table, and distinct-n. */
#include "datagen/stats.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void lm_dg_count(lm_dg_counter *c, const char *key) {
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

void lm_dg_counter_free(lm_dg_counter *c) {
    for (size_t i = 0; i < c->n; i++) free(c->k[i]);
    free(c->k);
    free(c->v);
}

void lm_dg_counter_sort(lm_dg_counter *c) {
    for (size_t i = 1; i < c->n; i++)
        for (size_t j = i; j > 0 && (c->v[j] > c->v[j - 1] ||
                                     (c->v[j] == c->v[j - 1] && strcmp(c->k[j], c->k[j - 1]) < 0));
             j--) {
            char *tk = c->k[j]; c->k[j] = c->k[j - 1]; c->k[j - 1] = tk;
            size_t tv = c->v[j]; c->v[j] = c->v[j - 1]; c->v[j - 1] = tv;
        }
}

json_t *lm_dg_counter_json(const lm_dg_counter *c) {
    json_t *o = json_object();
    for (size_t i = 0; i < c->n; i++) json_object_set_new(o, c->k[i], json_integer((json_int_t)c->v[i]));
    return o;
}

void lm_dg_counter_md(lm_sb *b, const char *title, const lm_dg_counter *c, size_t total) {
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
