/* A round's statistics (pipeline.h, stats.json and stats.md). */
#ifndef LM_DATAGEN_STATS_H
#define LM_DATAGEN_STATS_H

#include <jansson.h>
#include <stddef.h>

#include "base/strbuf.h"

/* How often each key was seen. Zero-initialised is empty. */
typedef struct lm_dg_counter {
    char **k;
    size_t *v;
    size_t n;
} lm_dg_counter;

/* One more of key (NULL: "(none)"). Statistics only: out of memory drops
 * the key rather than failing the round. */
void lm_dg_count(lm_dg_counter *c, const char *key);
void lm_dg_counter_free(lm_dg_counter *c);
/* Most frequent first, then by name. */
void lm_dg_counter_sort(lm_dg_counter *c);
/* {key: count, ...} (a new reference). */
json_t *lm_dg_counter_json(const lm_dg_counter *c);
/* "## title" and a table of key, count and share of total. */
void lm_dg_counter_md(lm_sb *b, const char *title, const lm_dg_counter *c, size_t total);

/* distinct-n of a set of texts: distinct word n-grams / all n-grams
 * (lowercased words; 0 when there are none). */
double lm_distinct_n(const char *const *texts, size_t n_texts, int n);

#endif
