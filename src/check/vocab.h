/* The words a character's world knows, and the names a player's line
 * brings from elsewhere.
 *
 *     lm_vocab *v = lm_vocab_new(&err);
 *     lm_vocab_add_text(v, sheet_markdown, &err);   // every word, any case
 *     lm_vocab_add_text(v, world_markdown, &err);
 *     size_t n;
 *     const char *name = lm_vocab_foreign_name(v, "Ever been to New York?", &n);
 *     // name -> "York", n = 4 ("New" is in the sheet: "a new law")
 *
 * A foreign name is a capitalised word inside a sentence (not its first
 * word, not after a colon or a quote, not after a title: "Lord Dunmore")
 * that no text added here holds, in any case: "Napoleon", "Sydney",
 * "Beatles", "SQL". A game's world names its
 * people and places, so a name it never wrote is, more often than not, one
 * of ours: on Orlando's 160 held-out questions it finds one in 19 of the 48
 * about our world and in none of the 40 about his. What it cannot see:
 * names at a sentence's start, and our world's things in lower case
 * ("a washing machine"), which check/metrics.c's modern words cover in
 * part. */
#ifndef LM_CHECK_VOCAB_H
#define LM_CHECK_VOCAB_H

#include <stddef.h>

#include "base/err.h"

typedef struct lm_vocab lm_vocab;

lm_vocab *lm_vocab_new(lm_err *err);
void lm_vocab_free(lm_vocab *v);

/* Adds every word of text (letters, lower-cased; "Sol's" adds "sol").
 * 0, or -1 with err set (out of memory). */
int lm_vocab_add_text(lm_vocab *v, const char *text, lm_err *err);

/* Sorts w[0..n) and frees the repeats; the number of words left. The
 * metrics' sheet terms go through it too. */
size_t lm_words_sort_unique(char **w, size_t n);

/* Whether the word s[0..n) is known, in any case. */
int lm_vocab_has(const lm_vocab *v, const char *s, size_t n);

/* The first foreign name of line (a pointer into it, its length in *n), or
 * NULL when it brings none. */
const char *lm_vocab_foreign_name(const lm_vocab *v, const char *line, size_t *n);

#endif
