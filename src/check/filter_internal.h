/* Text helpers shared by the filters and the near-duplicate store. A "word"
 * here is a maximal run of ASCII letters/digits or non-ASCII bytes, compared
 * lowercased: punctuation, case and spacing never make two texts differ. */
#ifndef LM_CHECK_FILTER_INTERNAL_H
#define LM_CHECK_FILTER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t off, len;
} lm_fspan;

/* Word spans of s[0..len); *n gets the count. Caller frees; NULL (and
 * *n = 0) for no words or out of memory. */
lm_fspan *lm_ftext_words(const char *s, size_t len, size_t *n);
uint64_t lm_ftext_word_hash(const char *s, size_t len);
/* Hash of words [i, i+n) given their per-word hashes wh[]. */
uint64_t lm_ftext_ngram_hash(const uint64_t *wh, size_t i, size_t n);
/* Sorted, unique hashes of all word n-grams of s (texts shorter than n
 * words give one hash of all their words); *count gets the size. Caller
 * frees; NULL with *count = 0 for a text without words. */
uint64_t *lm_ftext_shingles(const char *s, size_t len, int n, size_t *count);
int lm_ftext_has_hash(const uint64_t *sorted, size_t n, uint64_t h);
/* Whitespace-separated tokens. */
size_t lm_ftext_count_words(const char *s);

struct lm_sb;
struct lm_err;
/* Appends "|<pattern>" to b for each phrase of a phrases file's text (one
 * phrase a line, '#' comments, at most 1022 bytes, UTF-8, no NUL): what
 * cfg.phrases_path adds to the assistant-speech pattern. Errors name
 * name:line. */
int lm_filter_phrases_add(struct lm_sb *b, const char *name, const char *text, size_t len,
                          struct lm_err *err);

/* Built-in pattern tables (filter_text.c): NULL-terminated. */
extern const char *const lm_filter_assistant_phrases[];
extern const char *const lm_filter_assistant_patterns[];
extern const char *const lm_filter_breaks_patterns[];
extern const char *const lm_filter_refusal_patterns[];
extern const char *const lm_filter_modern_patterns[];

#endif
