/* Known words and foreign names (vocab.h). The words are kept sorted and
 * searched by bisection: a sheet and its world are a few thousand words,
 * added once when an NPC loads. */
#include "check/vocab.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct lm_vocab {
    char **w; /* lower case, sorted, unique once lm_vocab_add_text returns */
    size_t n, cap;
};

/* Capitalised words of ordinary speech that a sheet need not hold: how a
 * child names its parents, and words that answer or exclaim. */
static const char *const COMMON[] = {
    "mam", "mama", "mum", "mummy", "mom", "mommy", "papa", "pa", "ma", "da", "dad", "daddy",
    "gran", "granny", "grandma", "grandpa", "nan", "okay", "ok", "oh", "ah", "aye", "nay",
    "yes", "no", "please", "thanks", "hey", "well", NULL,
};

/* Titles a name follows in a world of lords and priests: "Lord Dunmore",
 * "Brother Jerold", "Goodman Hart" name someone of his world that the
 * writer never wrote down. Our world's titles (Mr, Dr, President) are not
 * here. */
static const char *const TITLES[] = {
    "lord", "lady", "sir", "dame", "king", "queen", "prince", "princess", "duke", "duchess",
    "count", "countess", "earl", "baron", "baroness", "brother", "sister", "father", "mother",
    "master", "mistress", "captain", "marshal", "commander", "sergeant", "magistrate", "squire",
    "bishop", "abbot", "abbess", "goodman", "goodwife", "gammer", "gaffer", "aunt", "auntie",
    "uncle", "cousin", "old", "young", "little", NULL,
};

/* A letter of a word: ASCII letters, and every byte of a non-ASCII UTF-8
 * character (names such as "Zoë" stay whole). */
static bool letter(unsigned char c) {
    return isalpha(c) || c >= 0x80;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

lm_vocab *lm_vocab_new(lm_err *err) {
    lm_vocab *v = calloc(1, sizeof *v);
    if (!v) return lm_errf(err, "out of memory"), NULL;
    return v;
}

void lm_vocab_free(lm_vocab *v) {
    if (!v) return;
    for (size_t i = 0; i < v->n; i++) free(v->w[i]);
    free(v->w);
    free(v);
}

static int push(lm_vocab *v, const char *s, size_t n, lm_err *err) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 256;
        char **w = realloc(v->w, cap * sizeof *w);
        if (!w) return lm_errf(err, "out of memory"), -1;
        v->w = w;
        v->cap = cap;
    }
    char *o = malloc(n + 1);
    if (!o) return lm_errf(err, "out of memory"), -1;
    for (size_t i = 0; i < n; i++) o[i] = (char)tolower((unsigned char)s[i]);
    o[n] = '\0';
    v->w[v->n++] = o;
    return 0;
}

int lm_vocab_add_text(lm_vocab *v, const char *text, lm_err *err) {
    for (const char *p = text ? text : ""; *p;) {
        if (!letter((unsigned char)*p)) { p++; continue; }
        const char *s = p;
        while (letter((unsigned char)*p)) p++;
        if (push(v, s, (size_t)(p - s), err)) return -1;
    }
    v->n = lm_words_sort_unique(v->w, v->n);
    return 0;
}

size_t lm_words_sort_unique(char **w, size_t n) {
    if (!n) return 0; /* qsort of no array: w may still be NULL */
    qsort(w, n, sizeof *w, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (u && !strcmp(w[u - 1], w[i])) { free(w[i]); continue; }
        w[u++] = w[i];
    }
    return u;
}

static bool in_list(const char *const *list, const char *low) {
    for (size_t i = 0; list[i]; i++)
        if (!strcmp(list[i], low)) return true;
    return false;
}

/* Whether the word before s (spaces skipped) is one of TITLES. */
static bool after_title(const char *line, const char *s) {
    const char *e = s;
    while (e > line && isspace((unsigned char)e[-1])) e--;
    const char *b = e;
    while (b > line && letter((unsigned char)b[-1])) b--;
    size_t n = (size_t)(e - b);
    char low[16];
    if (!n || n >= sizeof low) return false;
    for (size_t i = 0; i < n; i++) low[i] = (char)tolower((unsigned char)b[i]);
    low[n] = '\0';
    return in_list(TITLES, low);
}

/* Whether the lower-case word low is known. */
static bool has_low(const lm_vocab *v, const char *low) {
    return v && v->n && bsearch(&low, v->w, v->n, sizeof *v->w, cmp_str) != NULL;
}

int lm_vocab_has(const lm_vocab *v, const char *s, size_t n) {
    char buf[64];
    if (n >= sizeof buf) return 0; /* no sheet word is this long */
    for (size_t i = 0; i < n; i++) buf[i] = (char)tolower((unsigned char)s[i]);
    buf[n] = '\0';
    return has_low(v, buf);
}

/* Whether the word at p opens a sentence or a quotation: what comes before
 * it, spaces skipped, is the line's start or one of . ! ? : ; " ' ( or a
 * dash, or a non-ASCII quotation mark. */
static bool opens(const char *line, const char *p) {
    const char *q = p;
    while (q > line && isspace((unsigned char)q[-1])) q--;
    if (q == line) return true;
    unsigned char c = (unsigned char)q[-1];
    return strchr(".!?:;\"'(-", c) != NULL || c >= 0x80;
}

const char *lm_vocab_foreign_name(const lm_vocab *v, const char *line, size_t *n) {
    for (const char *p = line ? line : ""; *p;) {
        if (!letter((unsigned char)*p)) { p++; continue; }
        const char *s = p;
        while (letter((unsigned char)*p)) p++;
        size_t len = (size_t)(p - s);
        /* "I", "I'm"; a word that ends in an apostrophe's tail ("Sol's")
         * is taken without it, as lm_vocab_add_text takes it */
        if (len < 2 || !isupper((unsigned char)*s) || opens(line, s)) continue;
        char low[64];
        if (len >= sizeof low) continue;
        for (size_t i = 0; i < len; i++) low[i] = (char)tolower((unsigned char)s[i]);
        low[len] = '\0';
        if (in_list(COMMON, low) || in_list(TITLES, low) || has_low(v, low) ||
            after_title(line, s))
            continue;
        *n = len;
        return s;
    }
    return NULL;
}
