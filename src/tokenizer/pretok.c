/* Pre-tokenizers: an ordered list of regexes, as llama.cpp applies them.
 * Each regex splits every piece left by the previous one; both its matches
 * and the text between matches become pieces. PCRE2 (UTF + UCP, JIT when
 * available) supplies \p{L}, \p{N} and White_Space; llama.cpp's \s is the
 * Unicode White_Space property (it includes U+0085), so \s and \S are
 * written as \p{White_Space} and \P{White_Space} here. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

#define MAX_STAGES 4

/* GPT-2's regex: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (llama.cpp lists it without the final \s+ but its hand-written matcher
 * behaves as if it were there; a lone whitespace before a non-space would
 * otherwise be an unmatched gap, which becomes a piece anyway). */
#define RE_GPT2 \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\p{White_Space}\\p{L}\\p{N}]+" \
    "|\\p{White_Space}+(?!\\P{White_Space})|\\p{White_Space}+"

typedef struct pretok_def {
    const char *name;
    const char *stages[MAX_STAGES];
} pretok_def;

static const pretok_def DEFS[] = {
    /* smollm: every number character alone first, then GPT-2. */
    {"smollm", {"\\p{N}", RE_GPT2, NULL}},
    {"gpt2", {RE_GPT2, NULL}},
};

struct lm_pretok {
    const pretok_def *def;
    pcre2_code *code[MAX_STAGES];
    int n_stages;
};

void lm_pretok_free(lm_pretok *p) {
    if (!p) return;
    for (int i = 0; i < p->n_stages; i++) pcre2_code_free(p->code[i]);
    free(p);
}

lm_pretok *lm_pretok_new(const char *name, lm_err *err) {
    const pretok_def *def = NULL;
    for (size_t i = 0; i < sizeof DEFS / sizeof DEFS[0]; i++)
        if (!strcmp(DEFS[i].name, name)) def = &DEFS[i];
    if (!def) {
        lm_errf(err, "tokenizer.ggml.pre = '%s' is not supported (known: smollm, gpt2); "
                     "refusing to guess how this model splits text", name);
        return NULL;
    }
    lm_pretok *p = calloc(1, sizeof *p);
    if (!p) { lm_errf(err, "out of memory"); return NULL; }
    p->def = def;
    for (int i = 0; i < MAX_STAGES && def->stages[i]; i++) {
        int ec;
        PCRE2_SIZE eoff;
        pcre2_code *c = pcre2_compile((PCRE2_SPTR)def->stages[i], PCRE2_ZERO_TERMINATED,
                                      PCRE2_UTF | PCRE2_UCP, &ec, &eoff, NULL);
        if (!c) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(ec, msg, sizeof msg);
            lm_errf(err, "pre-tokenizer '%s': regex %d at offset %zu: %s", name, i,
                    (size_t)eoff, (const char *)msg);
            lm_pretok_free(p);
            return NULL;
        }
        /* JIT is an optimisation: without it pcre2_match interprets. */
        (void)pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);
        p->code[p->n_stages++] = c;
    }
    return p;
}

const char *lm_pretok_name(const lm_pretok *p) { return p->def->name; }

static int push(lm_span **v, size_t *n, size_t *cap, size_t off, size_t len, lm_err *err) {
    if (len == 0) return 0;
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        lm_span *q = realloc(*v, c * sizeof *q);
        if (!q) return lm_errf(err, "out of memory");
        *v = q;
        *cap = c;
    }
    (*v)[(*n)++] = (lm_span){off, len};
    return 0;
}

/* Splits text[off, off+len) with one regex, appending pieces to out. */
static int split_one(pcre2_code *code, pcre2_match_data *md, const char *text, size_t off,
                     size_t len, lm_span **out, size_t *n, size_t *cap, lm_err *err) {
    PCRE2_SPTR subj = (PCRE2_SPTR)(text + off);
    size_t pos = 0, gap = 0;
    while (pos < len) {
        int rc = pcre2_match(code, subj, len, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return lm_errf(err, "pre-tokenizer: match failed at byte %zu: %s", off + pos,
                           (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t s = ov[0], e = ov[1];
        if (e <= s) {
            /* None of our patterns matches empty; step one character if one did. */
            e = s + 1;
            while (e < len && ((uint8_t)text[off + e] & 0xC0) == 0x80) e++;
        }
        if (push(out, n, cap, off + gap, s - gap, err)) return -1;
        if (push(out, n, cap, off + s, e - s, err)) return -1;
        pos = gap = e;
    }
    return push(out, n, cap, off + gap, len - gap, err);
}

int lm_pretok_split(const lm_pretok *p, const char *text, size_t len, lm_span **spans,
                    size_t *n, size_t *cap, lm_err *err) {
    if (len == 0) return 0;
    /* Match data per call keeps a shared tokenizer safe across threads. */
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    if (!md) return lm_errf(err, "out of memory");
    lm_span *cur = NULL, *next = NULL;
    size_t n_cur = 0, cap_cur = 0, n_next = 0, cap_next = 0;
    int rc = push(&cur, &n_cur, &cap_cur, 0, len, err);
    for (int st = 0; rc == 0 && st < p->n_stages; st++) {
        n_next = 0;
        for (size_t i = 0; rc == 0 && i < n_cur; i++)
            rc = split_one(p->code[st], md, text, cur[i].off, cur[i].len, &next, &n_next,
                           &cap_next, err);
        lm_span *t = cur; cur = next; next = t;
        size_t tc = cap_cur; cap_cur = cap_next; cap_next = tc;
        n_cur = n_next;
    }
    for (size_t i = 0; rc == 0 && i < n_cur; i++)
        rc = push(spans, n, cap, cur[i].off, cur[i].len, err);
    free(cur);
    free(next);
    pcre2_match_data_free(md);
    return rc;
}
