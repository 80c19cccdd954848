/* Per-sample dataset filters: the filter set (patterns compiled once, sheet
 * n-grams hashed once) and lm_filter_run. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "check/filter.h"

#include <ctype.h>
#include <errno.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/fileio.h"
#include "base/strbuf.h"
#include "base/utf8.h"
#include "check/filter_internal.h"
#include "sheet/sheet.h"

static const char *const filter_names[LM_FILTER_COUNT] = {
    "length", "assistant-speech", "refusal", "stage-direction", "self-intro",
    "restates-sheet", "recites-sheet", "broken-turn", "modern-knowledge", "breaks-character",
    "repetition", "near-duplicate",
};

const char *lm_filter_name(int f) { return f >= 0 && f < LM_FILTER_COUNT ? filter_names[f] : NULL; }

int lm_filter_by_name(const char *name) {
    for (int i = 0; i < LM_FILTER_COUNT; i++)
        if (name && strcmp(name, filter_names[i]) == 0) return i;
    return -1;
}

void lm_filter_config_default(lm_filter_config *c) {
    memset(c, 0, sizeof *c);
    /* A question is one spoken turn: the templates ask for "at most two
     * sentences" and their examples have <= 14 words; 45 words and 3
     * sentences leave room for a greeting without letting a monologue in. */
    c->min_question_words = 3, c->max_question_words = 45, c->max_question_bytes = 300;
    c->max_question_sentences = 3;
    c->min_answer_words = 3, c->max_answer_words = 250, c->max_answer_bytes = 1600;
    c->restate_ngram = 8, c->recite_ngram = 12, c->max_preamble_words = 40;
    c->dup_jaccard = 0.7;
    /* Rhetorical repetition in speech shares <= 5 words ("we shall fight on
     * the ..."); 8 words twice is a loop. The sheets' example answers have
     * distinct-3 >= 0.92, SmolLM2's looping answers 0.64. */
    c->repeat_ngram = 8, c->repeat_min_distinct = 0.8, c->echo_ngram = 10;
}

static int utf8_ok(const char *s) {
    size_t n = strlen(s);
    return lm_utf8_check(s, n) == n;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

static int parse_long(const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

static int config_set(lm_filter_config *c, const char *k, char *v, const char *path, int line,
                      lm_err *err) {
    struct { const char *name; int *ip; size_t *zp; } ints[] = {
        {"min_question_words", &c->min_question_words, NULL},
        {"max_question_words", &c->max_question_words, NULL},
        {"max_question_bytes", NULL, &c->max_question_bytes},
        {"min_answer_words", &c->min_answer_words, NULL},
        {"max_answer_words", &c->max_answer_words, NULL},
        {"max_answer_bytes", NULL, &c->max_answer_bytes},
        {"restate_ngram", &c->restate_ngram, NULL},
        {"recite_ngram", &c->recite_ngram, NULL},
        {"max_preamble_words", &c->max_preamble_words, NULL},
        {"max_question_sentences", &c->max_question_sentences, NULL},
        {"repeat_ngram", &c->repeat_ngram, NULL},
        {"echo_ngram", &c->echo_ngram, NULL},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (strcmp(k, ints[i].name)) continue;
        long x;
        long lo = !strcmp(k, "restate_ngram") || !strcmp(k, "recite_ngram") ? 2 : 0;
        if (parse_long(v, lo, 1000000, &x) || (lo == 0 && strstr(k, "ngram") && x == 1))
            return lm_errf(err, "%s:%d: %s: '%s' is not an integer in [%ld, 1000000]%s", path, line, k,
                           v, lo, lo == 0 && strstr(k, "ngram") ? " other than 1" : "");
        if (ints[i].ip) *ints[i].ip = (int)x;
        else *ints[i].zp = (size_t)x;
        return 0;
    }
    if (strcmp(k, "dup_jaccard") == 0) {
        char *end;
        double x = strtod(v, &end);
        if (end == v || *end || !(x > 0 && x <= 1))
            return lm_errf(err, "%s:%d: dup_jaccard: '%s' is not a number in (0, 1]", path, line, v);
        c->dup_jaccard = x;
        return 0;
    }
    if (strcmp(k, "repeat_min_distinct") == 0) {
        char *end;
        double x = strtod(v, &end);
        if (end == v || *end || !(x >= 0 && x <= 1))
            return lm_errf(err, "%s:%d: repeat_min_distinct: '%s' is not a number in [0, 1]", path, line, v);
        c->repeat_min_distinct = x;
        return 0;
    }
    if (strcmp(k, "disable") == 0) {
        for (char *save = NULL, *t = strtok_r(v, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            int f = lm_filter_by_name(trim(t));
            if (f < 0) {
                char known[512];
                size_t k2 = 0;
                for (int i = 0; i < LM_FILTER_COUNT; i++)
                    k2 += (size_t)snprintf(known + k2, sizeof known - k2, "%s%s", i ? ", " : "", filter_names[i]);
                return lm_errf(err, "%s:%d: disable: unknown filter '%s' (known: %s)", path, line, trim(t), known);
            }
            c->disabled |= 1u << f;
        }
        return 0;
    }
    return lm_errf(err, "%s:%d: unknown key '%s'", path, line, k);
}

int lm_filter_config_parse(lm_filter_config *c, const char *name, const char *text, size_t len,
                           lm_err *err) {
    int line = 0, rc = 0;
    char *buf = NULL;
    for (size_t at = 0; rc == 0 && at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t n = (nl ? (size_t)(nl - text) : len) - at;
        line++;
        /* A NUL would silently end the line for the string functions below. */
        if (memchr(text + at, 0, n)) {
            rc = lm_errf(err, "%s:%d: holds a NUL byte", name, line);
            break;
        }
        char *nb = realloc(buf, n + 1);
        if (!nb) {
            rc = lm_errf(err, "%s:%d: out of memory", name, line);
            break;
        }
        buf = nb;
        memcpy(buf, text + at, n);
        buf[n] = 0;
        at += n + 1;
        char *h = strchr(buf, '#');
        if (h) *h = 0;
        char *s = trim(buf);
        if (!*s) continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = lm_errf(err, "%s:%d: expected 'key = value'", name, line);
            break;
        }
        *eq = 0;
        rc = config_set(c, trim(s), trim(eq + 1), name, line, err);
    }
    free(buf);
    return rc;
}

int lm_filter_config_load(lm_filter_config *c, const char *path, lm_err *err) {
    char *text;
    size_t len;
    if (lm_read_file(path, &text, &len, false, err)) return -1;
    int rc = lm_filter_config_parse(c, path, text, len, err);
    free(text);
    return rc;
}

/* ---- the set ---- */

enum { P_ASSIST, P_REFUSAL, P_STAGE, P_NARRATION, P_SELF_INTRO, P_SUMMARY, P_SPEAKER, P_TAGS,
       P_MODERN, P_BREAKS, P_COUNT };

struct lm_filter_set {
    lm_filter_config cfg;
    char *name; /* character's name, NULL = none */
    pcre2_code *re[P_COUNT];
    uint64_t *restate_h, *recite_h; /* sorted sheet n-gram hashes */
    size_t n_restate, n_recite;
};

/* Appends a phrase as a pattern: literal bytes, spaces match any
 * whitespace, an apostrophe matches ' or U+2019. */
static void sb_literal(lm_sb *b, const char *s) {
    if (isalnum((unsigned char)*s)) lm_sb_str(b, "\\b");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char t[8];
        if (isspace(c)) {
            while (isspace((unsigned char)s[1])) s++;
            lm_sb_str(b, "\\s+");
        } else if (c == '\'') {
            lm_sb_str(b, "(?:'|\\xe2\\x80\\x99)");
        } else if (isalnum(c)) {
            lm_sb_add(b, (const char *)&c, 1);
        } else if (c < 0x80) {
            t[0] = '\\', t[1] = (char)c;
            lm_sb_add(b, t, 2);
        } else {
            snprintf(t, sizeof t, "\\x%02x", c);
            lm_sb_str(b, t);
        }
    }
}

static pcre2_code *compile(const char *pat, uint32_t flags, const char *what, lm_err *err) {
    int ec;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, flags | PCRE2_CASELESS,
                                   &ec, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        lm_errf(err, "filter pattern %s, offset %zu: %s", what, (size_t)off, (char *)msg);
    }
    return re;
}

/* "(?:p1)|(?:p2)|..." of a NULL-terminated pattern list. */
static void sb_alternatives(lm_sb *b, const char *const *pats) {
    for (const char *const *p = pats; *p; p++) {
        if (p != pats) lm_sb_str(b, "|");
        lm_sb_str(b, "(?:"), lm_sb_str(b, *p), lm_sb_str(b, ")");
    }
}

#define PHRASE_MAX 1022   /* bytes of one phrase, as a line */

int lm_filter_phrases_add(lm_sb *b, const char *name, const char *text, size_t len, lm_err *err) {
    int ln = 0;
    char line[PHRASE_MAX + 1];
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t n = (nl ? (size_t)(nl - text) : len) - at;
        ln++;
        if (n > PHRASE_MAX)
            return lm_errf(err, "%s:%d: phrase longer than %d bytes", name, ln, PHRASE_MAX);
        if (memchr(text + at, 0, n)) return lm_errf(err, "%s:%d: phrase holds a NUL byte", name, ln);
        memcpy(line, text + at, n);
        line[n] = 0;
        at += n + 1;
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        if (!utf8_ok(s)) return lm_errf(err, "%s:%d: phrase is not valid UTF-8", name, ln);
        lm_sb_str(b, "|"), sb_literal(b, s);
    }
    return 0;
}

/* Assistant phrases: the built-in list and patterns plus the writer's file. */
static int build_assist(lm_sb *b, const char *path, lm_err *err) {
    lm_sb_str(b, "(?:");
    for (const char *const *p = lm_filter_assistant_phrases; *p; p++) {
        sb_literal(b, *p);
        lm_sb_str(b, "|");
    }
    sb_alternatives(b, lm_filter_assistant_patterns);
    if (path) {
        char *text;
        size_t len;
        if (lm_read_file(path, &text, &len, false, err)) return -1;
        int rc = lm_filter_phrases_add(b, path, text, len, err);
        free(text);
        if (rc) return -1;
    }
    lm_sb_str(b, ")");
    return 0;
}

static int add_sheet_text(uint64_t **v, size_t *n, const char *text, int ngram) {
    if (!text || !*text) return 0;
    size_t k;
    uint64_t *h = lm_ftext_shingles(text, strlen(text), ngram, &k);
    if (!h) return 0; /* no words */
    /* a piece shorter than ngram words gives one short hash that could never
     * match a full n-gram: harmless, but keep only real n-grams */
    size_t nw;
    free(lm_ftext_words(text, strlen(text), &nw));
    if (nw < (size_t)ngram) {
        free(h);
        return 0;
    }
    uint64_t *nv = realloc(*v, (*n + k) * sizeof *nv);
    if (!nv) {
        free(h);
        return -1;
    }
    memcpy(nv + *n, h, k * sizeof *h);
    *v = nv, *n += k;
    free(h);
    return 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int sheet_hashes(const lm_character *c, int ngram, uint64_t **out, size_t *n) {
    *out = NULL, *n = 0;
    int rc = add_sheet_text(out, n, c->backstory, ngram);
    for (size_t i = 0; rc == 0 && i < c->n_opinions; i++) rc = add_sheet_text(out, n, c->opinions[i].text, ngram);
    for (size_t i = 0; rc == 0 && i < c->values.n; i++) rc = add_sheet_text(out, n, c->values.v[i], ngram);
    for (size_t i = 0; rc == 0 && i < c->objectives.n; i++)
        rc = add_sheet_text(out, n, c->objectives.v[i], ngram);
    rc = rc ? rc : add_sheet_text(out, n, c->scenario, ngram);
    if (rc == 0 && *n) qsort(*out, *n, sizeof **out, cmp_u64);
    return rc;
}

/* Narrative verbs a teacher writes about the speaker ("Orlando smiles"). */
#define NARRATIVE_VERBS                                                                           \
    "smiles|smiled|laughs|laughed|sighs|sighed|nods|nodded|says|said|replies|replied|answers|"   \
    "answered|responds|responded|chuckles|chuckled|grins|grinned|pauses|paused|looks|looked|"     \
    "leans|leaned|frowns|frowned|bows|bowed|shrugs|shrugged|speaks|spoke|turns|turned|raises|"    \
    "raised|smirks|winks|considers|hesitates|hesitated|gestures|gestured|clears|folds|crosses|"   \
    "stands|sits|glances|glanced|whispers|whispered|exclaims|exclaimed|muses|mused"

lm_filter_set *lm_filter_set_new(const lm_filter_config *cfg, const lm_character *c, lm_err *err) {
    lm_filter_set *s = calloc(1, sizeof *s);
    if (!s) {
        lm_errf(err, "filter set: out of memory");
        return NULL;
    }
    if (cfg) s->cfg = *cfg;
    else lm_filter_config_default(&s->cfg);
    s->cfg.phrases_path = NULL; /* borrowed: not kept past this call */
    if (s->cfg.restate_ngram < 2 || s->cfg.recite_ngram < 2 || !(s->cfg.dup_jaccard > 0 && s->cfg.dup_jaccard <= 1) ||
        s->cfg.repeat_ngram < 0 || s->cfg.repeat_ngram == 1 || s->cfg.echo_ngram < 0 || s->cfg.echo_ngram == 1 ||
        !(s->cfg.repeat_min_distinct >= 0 && s->cfg.repeat_min_distinct <= 1)) {
        lm_errf(err, "filter config: restate_ngram and recite_ngram must be >= 2, repeat_ngram and echo_ngram "
                "0 or >= 2, dup_jaccard in (0, 1], repeat_min_distinct in [0, 1]");
        goto fail;
    }
    lm_sb b = {0};
    if (build_assist(&b, cfg ? cfg->phrases_path : NULL, err)) {
        lm_sb_free(&b);
        goto fail;
    }
    if (b.oom) {
        lm_sb_free(&b);
        lm_errf(err, "filter set: out of memory");
        goto fail;
    }
    s->re[P_ASSIST] = compile(b.p, 0, "assistant-speech", err);
    lm_sb_free(&b);
    if (!s->re[P_ASSIST]) goto fail;

    lm_sb r = {0}, m = {0}, k = {0};
    sb_alternatives(&r, lm_filter_refusal_patterns);
    sb_alternatives(&m, lm_filter_modern_patterns);
    sb_alternatives(&k, lm_filter_breaks_patterns);
    if (r.oom || m.oom || k.oom) {
        lm_sb_free(&r), lm_sb_free(&m), lm_sb_free(&k);
        lm_errf(err, "filter set: out of memory");
        goto fail;
    }
    s->re[P_REFUSAL] = compile(r.p, 0, "refusal", err);
    s->re[P_MODERN] = s->re[P_REFUSAL] ? compile(m.p, 0, "modern-knowledge", err) : NULL;
    s->re[P_BREAKS] = s->re[P_MODERN] ? compile(k.p, 0, "breaks-character", err) : NULL;
    lm_sb_free(&r), lm_sb_free(&m), lm_sb_free(&k);
    if (!s->re[P_BREAKS]) goto fail;

    /* Name-dependent patterns capture the name-like word; lm_filter_run
     * compares it with the sample's character, so one set serves any name. */
    static const struct { int id; uint32_t flags; const char *pat; } fixed[] = {
        {P_STAGE, 0,
         "(?:(?:^|[.!?\\n]\\s*)\\*[^*\\n]{1,80}\\*|\\*[^*\\n]{1,80}\\*\\s*(?:$|\\n)|"
         "\\*[^*\\s]+\\s[^*\\n]{1,80}\\*|\\*(?:" NARRATIVE_VERBS "|smiling|laughing|sighing|nodding|"
         "grinning|winking|coughs|giggles|blushes)\\*|"
         "[(\\[][^()\\[\\]\\n]{0,60}?\\b(?:" NARRATIVE_VERBS "|smiling|laughing|sighing|nodding|"
         "coughs|giggles|blushes|pause|laughter|sigh|softly|quietly|warmly)\\b[^()\\[\\]\\n]{0,60}[)\\]]|"
         /* "(to the lady)", "(aside)": whom a line is said to (SmolLM2 writes them) */
         "[(\\[]\\s*(?:to\\s+(?:the|him|her|them|his|himself|herself|everyone)|aside|turning|"
         "looking|whisper(?:s|ing)?)\\b[^()\\[\\]\\n]{0,60}[)\\]])"},
        {P_NARRATION, PCRE2_MULTILINE,
         "^[ \\t\"]*((?:\\p{L}|[\\x80-\\xff])[^\\s,.!?:;\"]*)(?:\\s+[A-Z][^\\s,.!?:;\"]*)?\\s+"
         "(?:\\w+ly\\s+)?(?:" NARRATIVE_VERBS ")\\b"},
        {P_SELF_INTRO, 0,
         "^[\\s\"'*]*(?:(?:greetings|hello|hail|well\\s+met|ah|good\\s+(?:morning|day|evening)|"
         "welcome)\\b[^.!?\\n]{0,40}?[,.!]\\s*)?(?:(?:I\\s+am|I'm|I\\xe2\\x80\\x99m)\\s+(?:sir\\s+|"
         "lord\\s+|lady\\s+|ser\\s+|dame\\s+)?([^\\s,.!?;:]+)|(my\\s+name\\s+is|they\\s+call\\s+me|"
         "I\\s+am\\s+called|I\\s+go\\s+by)\\b|as\\s+(?:sir\\s+|lord\\s+|lady\\s+)?([^\\s,.!?;:]+)"
         "(?:\\s+[^\\s,.!?;:]+)?\\s*,|([^\\s,.!?;:]+)\\s+here\\b)"},
        {P_SUMMARY, 0,
         "^[\\s\"'*]*([^\\s.,!?;:]+(?:\\s+[^\\s.,!?;:]+)?)\\s*(?:\\.\\.\\.|\\xe2\\x80\\xa6|\\.(?=\\s))"},
        {P_SPEAKER, PCRE2_MULTILINE,
         "^[ \\t\"'*>]*(user|player|human|assistant|system|narrator|"
         "(?:\\p{Lu}|[\\x80-\\xff])[^\\s:,.!?\"]{0,30}(?:\\s+(?:\\p{Lu}|[\\x80-\\xff])[^\\s:,.!?\"]{0,30}){0,2})"
         "[ \\t]*:|\\{\\{\\s*(?:user|char)\\s*\\}\\}"},
        {P_TAGS, PCRE2_MULTILINE,
         "<\\|[^|>\\s]{1,30}\\|>|</?s>|\\[/?INST\\]|<<\\s*/?SYS\\s*>>|\\b(?:im_start|im_end|endoftext|"
         "eot_id|start_header_id|end_header_id)\\b|<\\s*/?\\s*(?:user|assistant|system|bot)\\s*>|"
         "^#{2,}\\s*(?:instruction|response|input)\\b"},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (!(s->re[fixed[i].id] = compile(fixed[i].pat, fixed[i].flags, filter_names[LM_FILTER_STAGE], err)))
            goto fail;
    if (c) {
        if (c->name && !(s->name = strdup(c->name))) goto oom;
        if (sheet_hashes(c, s->cfg.restate_ngram, &s->restate_h, &s->n_restate)) goto oom;
        if (sheet_hashes(c, s->cfg.recite_ngram, &s->recite_h, &s->n_recite)) goto oom;
    }
    return s;
oom:
    lm_errf(err, "filter set: out of memory");
fail:
    lm_filter_set_free(s);
    return NULL;
}

void lm_filter_set_free(lm_filter_set *s) {
    if (!s) return;
    for (int i = 0; i < P_COUNT; i++) pcre2_code_free(s->re[i]);
    free(s->name), free(s->restate_h), free(s->recite_h);
    free(s);
}

/* ---- running ---- */

static void note(lm_filter_result *r, int f, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(lm_filter_result *r, int f, const char *fmt, ...) {
    r->pass = 0;
    if (r->failed & (1u << f)) { /* second reason of the same filter: append */
        for (size_t i = 0; i < r->n_notes; i++) {
            if (r->notes[i].filter != f) continue;
            size_t n = strlen(r->notes[i].reason);
            if (n + 3 < LM_FILTER_REASON_MAX) {
                memcpy(r->notes[i].reason + n, "; ", 3);
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(r->notes[i].reason + n + 2, LM_FILTER_REASON_MAX - n - 2, fmt, ap);
                va_end(ap);
            }
            return;
        }
    }
    r->failed |= 1u << f;
    lm_filter_note *n = &r->notes[r->n_notes++];
    n->filter = f;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n->reason, sizeof n->reason, fmt, ap);
    va_end(ap);
}

/* A quotable excerpt: at most max bytes, whitespace folded, cut on a UTF-8
 * boundary, "..." when cut. */
static const char *excerpt(const char *s, size_t n, char *buf, size_t cap) {
    size_t max = cap > 8 ? cap - 4 : 0, k = 0, i = 0;
    for (; i < n && k < max; i++) {
        char ch = s[i];
        buf[k++] = (ch == '\n' || ch == '\r' || ch == '\t') ? ' ' : ch;
    }
    if (i < n) {
        while (k > 0 && ((unsigned char)buf[k - 1] & 0xC0) == 0x80) k--;
        if (k > 0 && (unsigned char)buf[k - 1] >= 0xC0) k--;
        memcpy(buf + k, "...", 3), k += 3;
    }
    buf[k] = 0;
    return buf;
}

typedef struct {
    size_t start, end;      /* whole match */
    size_t gs[5], ge[5];    /* groups 1..4, gs == ge == SIZE_MAX when unset */
} match_t;

static int find(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t off, match_t *m) {
    size_t len = strlen(s);
    if (off > len) return 0;
    int rc = pcre2_match(re, (PCRE2_SPTR)s, len, off, 0, md, NULL);
    if (rc < 0) return 0;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    m->start = ov[0], m->end = ov[1];
    for (int g = 1; g < 5; g++) {
        if (g < rc && ov[2 * g] != PCRE2_UNSET) m->gs[g] = ov[2 * g], m->ge[g] = ov[2 * g + 1];
        else m->gs[g] = m->ge[g] = (size_t)-1;
    }
    return 1;
}

static int ieq(const char *a, size_t an, const char *b, size_t bn) {
    return an == bn && strncasecmp(a, b, an) == 0;
}

/* tok names the person called name: the whole name, or one of its words of
 * 3+ letters that is not a particle ("Orlando", "Marlo"; not "of", "the"). */
static int names(const char *name, const char *tok, size_t tn) {
    if (!name || !*name || !tn) return 0;
    size_t nn = strlen(name);
    const char *comma = strchr(name, ',');
    if (comma) nn = (size_t)(comma - name); /* "Elena Solwind, royal historian" */
    while (nn && isspace((unsigned char)name[nn - 1])) nn--;
    if (ieq(name, nn, tok, tn)) return 1;
    static const char *const particles[] = {"the", "von", "van", "del", "der", "des", "sir", "lady", "lord", NULL};
    size_t nw;
    lm_fspan *w = lm_ftext_words(name, nn, &nw);
    int hit = 0;
    for (size_t i = 0; i < nw && !hit; i++) {
        if (w[i].len < 3) continue;
        int part = 0;
        for (const char *const *p = particles; *p; p++) part |= ieq(name + w[i].off, w[i].len, *p, strlen(*p));
        hit = !part && ieq(name + w[i].off, w[i].len, tok, tn);
    }
    free(w);
    return hit;
}

static int is_blank(const char *s) {
    for (; *s; s++)
        if (!isspace((unsigned char)*s)) return 0;
    return 1;
}

/* Ends like a finished sentence: . ! ? closing quotes/brackets, an ellipsis,
 * a dash (speech broken off on purpose), or * ~. */
static int finished(const char *s) {
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) n--;
    if (!n) return 0;
    unsigned char c = (unsigned char)s[n - 1];
    if (strchr(".!?\"')]*~", c)) return 1;
    if (n >= 3 && (unsigned char)s[n - 3] == 0xE2 && (unsigned char)s[n - 2] == 0x80)
        return c == 0x9D || c == 0x99 || c == 0xA6 || c == 0x94 || c == 0x93; /* ” ’ … — – */
    if (n >= 2 && (unsigned char)s[n - 2] == 0xC2) return c == 0xBB; /* » */
    return 0;
}

/* Ends in an ellipsis ("..." or U+2026), closing quotes and brackets
 * aside: the speaker trailed off. Inside a turn that is speech ("The
 * wine... well."); at its end the turn never ended, and a model trained on
 * it learns to stop without finishing. */
static int trails_off(const char *s) {
    size_t n = strlen(s);
    for (;;) {
        while (n && isspace((unsigned char)s[n - 1])) n--;
        if (n && strchr("\"')]", s[n - 1])) { n--; continue; }
        if (n >= 3 && (unsigned char)s[n - 3] == 0xE2 && (unsigned char)s[n - 2] == 0x80 &&
            ((unsigned char)s[n - 1] == 0x9D || (unsigned char)s[n - 1] == 0x99)) { n -= 3; continue; }
        if (n >= 2 && (unsigned char)s[n - 2] == 0xC2 && (unsigned char)s[n - 1] == 0xBB) { n -= 2; continue; }
        break;
    }
    return n >= 3 && (!memcmp(s + n - 3, "...", 3) || !memcmp(s + n - 3, "\xE2\x80\xA6", 3));
}

static size_t count_bytes(const char *s, const char *what) {
    size_t k = 0, wn = strlen(what);
    for (const char *p = s; (p = strstr(p, what)); p += wn) k++;
    return k;
}

static void check_length(const lm_filter_set *s, const char *role, const char *t, int minw, int maxw,
                         size_t maxb, lm_filter_result *r) {
    size_t w = lm_ftext_count_words(t), b = strlen(t);
    if ((int)w < minw) note(r, LM_FILTER_LENGTH, "%s has %zu words (min %d)", role, w, minw);
    else if (maxw > 0 && w > (size_t)maxw) note(r, LM_FILTER_LENGTH, "%s has %zu words (max %d)", role, w, maxw);
    if (maxb > 0 && b > maxb) note(r, LM_FILTER_LENGTH, "%s has %zu bytes (max %zu)", role, b, maxb);
    (void)s;
}

static void check_broken(const lm_filter_set *s, pcre2_match_data *md, const char *role, const char *t,
                         int truncated, const char *asker, const char *name, lm_filter_result *r) {
    char ex[64];
    if (is_blank(t)) {
        note(r, LM_FILTER_BROKEN, "%s is empty", role);
        return;
    }
    match_t m;
    if (find(s->re[P_TAGS], md, t, 0, &m))
        note(r, LM_FILTER_BROKEN, "%s contains special token or role tag '%s'", role,
             excerpt(t + m.start, m.end - m.start, ex, 40));
    for (size_t off = 0; find(s->re[P_SPEAKER], md, t, off, &m); off = m.end) {
        if (m.gs[1] == (size_t)-1) { /* {{user}} / {{char}} */
            note(r, LM_FILTER_BROKEN, "%s contains placeholder '%s'", role, excerpt(t + m.start, m.end - m.start, ex, 40));
            break;
        }
        const char *lab = t + m.gs[1];
        size_t ln = m.ge[1] - m.gs[1];
        static const char *const generic[] = {"user", "player", "human", "assistant", "system", "narrator", NULL};
        int hit = 0;
        for (const char *const *g = generic; *g; g++) hit |= ieq(lab, ln, *g, strlen(*g));
        hit = hit || names(asker, lab, ln) || names(name, lab, ln);
        if (hit) {
            note(r, LM_FILTER_BROKEN, "%s speaks as '%s:' (a turn of its own)", role, excerpt(lab, ln, ex, 40));
            break;
        }
        if (m.end == off) break;
    }
    size_t dq = count_bytes(t, "\"");
    if (dq % 2) note(r, LM_FILTER_BROKEN, "%s has unbalanced double quotes (%zu)", role, dq);
    size_t lq = count_bytes(t, "\xE2\x80\x9C"), rq = count_bytes(t, "\xE2\x80\x9D");
    if (lq != rq) note(r, LM_FILTER_BROKEN, "%s has unbalanced curly quotes (%zu open, %zu close)", role, lq, rq);
    if (truncated) note(r, LM_FILTER_BROKEN, "%s was cut at the token limit", role);
    else if (!finished(t)) {
        size_t n = strlen(t);
        while (n && isspace((unsigned char)t[n - 1])) n--;
        size_t from = n > 24 ? n - 24 : 0;
        while (from > 0 && ((unsigned char)t[from] & 0xC0) == 0x80) from--;
        note(r, LM_FILTER_BROKEN, "%s ends mid-sentence: '...%s'", role, excerpt(t + from, n - from, ex, 40));
    } else if (!strcmp(role, "answer") && trails_off(t)) {
        /* a question may trail off ("I was wondering..."): the player's turn is not trained */
        size_t n = strlen(t);
        while (n && isspace((unsigned char)t[n - 1])) n--;
        size_t from = n > 24 ? n - 24 : 0;
        while (from > 0 && ((unsigned char)t[from] & 0xC0) == 0x80) from--;
        note(r, LM_FILTER_BROKEN, "%s trails off: '...%s'", role, excerpt(t + from, n - from, ex, 40));
    }
}

/* Longest run of consecutive words shared with the sheet (n-gram hits);
 * returns the shared word count (0: none) and the excerpt span. */
static size_t sheet_overlap(const char *t, const uint64_t *sh, size_t nsh, int n, size_t *so, size_t *se) {
    if (!nsh) return 0;
    size_t nw;
    lm_fspan *w = lm_ftext_words(t, strlen(t), &nw);
    if (!w || nw < (size_t)n) {
        free(w);
        return 0;
    }
    uint64_t *wh = malloc(nw * sizeof *wh);
    if (!wh) {
        free(w);
        return 0;
    }
    for (size_t i = 0; i < nw; i++) wh[i] = lm_ftext_word_hash(t + w[i].off, w[i].len);
    size_t best = 0, run = 0, best_i = 0;
    for (size_t i = 0; i + (size_t)n <= nw; i++) {
        if (lm_ftext_has_hash(sh, nsh, lm_ftext_ngram_hash(wh, i, (size_t)n))) {
            run++;
            if (run > best) best = run, best_i = i + 1 - run;
        } else {
            run = 0;
        }
    }
    size_t words = best ? best + (size_t)n - 1 : 0;
    if (words) *so = w[best_i].off, *se = w[best_i + words - 1].off + w[best_i + words - 1].len;
    free(w), free(wh);
    return words;
}

/* The question opens "<Name>... <statement>." (the name, then talk about
 * the character before any question): the prototype's Gemma habit.
 * "Orlando. What brings you here?" is an address, not a summary. */
static int summary_opening(const char *name, const char *q, const match_t *m) {
    size_t nw;
    lm_fspan *w = lm_ftext_words(q + m->gs[1], m->ge[1] - m->gs[1], &nw);
    int hit = 0;
    for (size_t i = 0; i < nw && !hit; i++) hit = names(name, q + m->gs[1] + w[i].off, w[i].len);
    free(w);
    if (!hit) return 0;
    const char *p = q + m->end;
    p += strcspn(p, ".!?");
    return *p && *p != '?';
}

/* Words before the sentence holding the first '?'. */
static size_t preamble_words(const char *q) {
    const char *qm = strchr(q, '?');
    if (!qm) return 0;
    const char *p = qm;
    while (p > q && !strchr(".!\n", p[-1])) p--;
    size_t n = 0;
    int in = 0;
    for (const char *c = q; c < p; c++) {
        int sp = isspace((unsigned char)*c);
        if (!sp && !in) n++;
        in = !sp;
    }
    return n;
}

static int ellipsis_at(const char *p) {
    return (unsigned char)p[0] == 0xE2 && (unsigned char)p[1] == 0x80 && (unsigned char)p[2] == 0xA6;
}

/* Sentences of a spoken turn. A sentence ends at a run of . ! ? or an
 * ellipsis (and any closing quotes or brackets) followed by the end or by
 * spaces and a word that does not start lowercase: "Well... perhaps not."
 * is one sentence, "3.5" none. */
static size_t count_sentences(const char *t) {
    size_t n = 0;
    int open = 0; /* text since the last sentence end */
    const char *p = t;
    while (*p) {
        if (*p != '.' && *p != '!' && *p != '?' && !ellipsis_at(p)) {
            if (!isspace((unsigned char)*p)) open = 1;
            p++;
            continue;
        }
        while (*p == '.' || *p == '!' || *p == '?' || ellipsis_at(p)) p += ellipsis_at(p) ? 3 : 1;
        for (;;) { /* closing quotes and brackets: " ' ) ] ” ’ */
            if (*p && strchr("\"')]", *p)) p++;
            else if ((unsigned char)p[0] == 0xE2 && (unsigned char)p[1] == 0x80 &&
                     ((unsigned char)p[2] == 0x9D || (unsigned char)p[2] == 0x99)) p += 3;
            else break;
        }
        const char *q = p;
        while (isspace((unsigned char)*q)) q++;
        if (!*q || (q > p && !islower((unsigned char)*q))) {
            n += (size_t)open;
            open = 0;
        }
        p = q;
    }
    return n + (size_t)open;
}

static int contains_ci(const char *hay, const char *needle, size_t n) {
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0) return 1;
    return 0;
}

/* First breaks-character match in t whose text the other turn (allowed,
 * may be NULL) does not contain: echoing the asker's own word is fine. */
static int breaks_at(const pcre2_code *re, pcre2_match_data *md, const char *t, const char *allowed, match_t *m) {
    for (size_t off = 0; find(re, md, t, off, m); off = m->end > off ? m->end : off + 1)
        if (!allowed || !contains_ci(allowed, t + m->start, m->end - m->start)) return 1;
    return 0;
}

typedef struct {
    uint64_t h;
    size_t i;
} ngram_at;

static int cmp_ngram_at(const void *a, const void *b) {
    const ngram_at *x = a, *y = b;
    if (x->h != y->h) return (x->h > y->h) - (x->h < y->h);
    return (x->i > y->i) - (x->i < y->i);
}

/* Word n-grams of wh[nw]: the number of distinct ones, and the most
 * frequent one (first in the text among equals) as its first word index and
 * count. Returns the number of n-grams, 0 when too short or out of memory. */
static size_t ngram_counts(const uint64_t *wh, size_t nw, size_t n, size_t *distinct, size_t *best_i,
                           size_t *best_count) {
    *distinct = 0, *best_i = 0, *best_count = 0;
    if (n == 0 || nw < n) return 0;
    size_t ng = nw - n + 1;
    ngram_at *v = malloc(ng * sizeof *v);
    if (!v) return 0;
    for (size_t i = 0; i < ng; i++) v[i].h = lm_ftext_ngram_hash(wh, i, n), v[i].i = i;
    qsort(v, ng, sizeof *v, cmp_ngram_at);
    for (size_t i = 0, j; i < ng; i = j) {
        for (j = i + 1; j < ng && v[j].h == v[i].h;) j++;
        (*distinct)++;
        size_t cnt = j - i;
        if (cnt > *best_count || (cnt == *best_count && v[i].i < *best_i)) *best_count = cnt, *best_i = v[i].i;
    }
    free(v);
    return ng;
}

/* Degenerate self-repetition of one text: an n-gram of cfg.repeat_ngram
 * words twice, or too few distinct word 3-grams. */
static void check_repeat(const lm_filter_set *s, const char *role, const char *t, lm_filter_result *r) {
    const lm_filter_config *c = &s->cfg;
    size_t nw;
    lm_fspan *w = lm_ftext_words(t, strlen(t), &nw);
    uint64_t *wh = w ? malloc(nw * sizeof *wh) : NULL;
    if (!wh) {
        free(w);
        return;
    }
    for (size_t i = 0; i < nw; i++) wh[i] = lm_ftext_word_hash(t + w[i].off, w[i].len);
    size_t distinct, bi, bc;
    char ex[64];
    if (c->repeat_ngram > 0 && ngram_counts(wh, nw, (size_t)c->repeat_ngram, &distinct, &bi, &bc) && bc >= 2) {
        size_t end = bi + (size_t)c->repeat_ngram - 1;
        note(r, LM_FILTER_REPEAT, "%s says the same %d words %zu times: '%s'", role, c->repeat_ngram, bc,
             excerpt(t + w[bi].off, w[end].off + w[end].len - w[bi].off, ex, 60));
    }
    size_t ng = nw >= 30 ? ngram_counts(wh, nw, 3, &distinct, &bi, &bc) : 0;
    if (c->repeat_min_distinct > 0 && ng && (double)distinct / (double)ng < c->repeat_min_distinct)
        note(r, LM_FILTER_REPEAT, "%s has %.2f distinct word 3-grams (min %.2f)", role,
             (double)distinct / (double)ng, c->repeat_min_distinct);
    free(w), free(wh);
}

int lm_filter_run(const lm_filter_set *s, const lm_filter_sample *x, lm_filter_result *r) {
    memset(r, 0, sizeof *r);
    r->pass = 1;
    const lm_filter_config *c = &s->cfg;
    const char *q = x && x->question ? x->question : "";
    const char *a = x ? x->answer : NULL;
    const char *name = x && x->character ? x->character : s->name;
    const char *asker = x ? x->asker : NULL;
    const char *kind = x && x->kind ? x->kind : "in-world";
    char ex[80];
#define ON(f) (!(c->disabled & (1u << (f))) && (r->checked |= 1u << (f)))

    /* Non-UTF-8 text is broken and cannot be reasoned about further. */
    int bad_q = !utf8_ok(q), bad_a = a && !utf8_ok(a);
    if (bad_q || bad_a) {
        r->checked |= 1u << LM_FILTER_BROKEN;
        note(r, LM_FILTER_BROKEN, "%s is not valid UTF-8", bad_q ? "question" : "answer");
        return r->pass;
    }
    pcre2_match_data *md = pcre2_match_data_create(8, NULL);
    if (!md) {
        r->checked |= 1u << LM_FILTER_BROKEN;
        note(r, LM_FILTER_BROKEN, "out of memory while filtering");
        return r->pass;
    }
    match_t m;
    if (ON(LM_FILTER_LENGTH)) {
        check_length(s, "question", q, c->min_question_words, c->max_question_words, c->max_question_bytes, r);
        size_t ns = count_sentences(q);
        if (c->max_question_sentences > 0 && ns > (size_t)c->max_question_sentences)
            note(r, LM_FILTER_LENGTH, "question has %zu sentences (max %d)", ns, c->max_question_sentences);
        if (a) check_length(s, "answer", a, c->min_answer_words, c->max_answer_words, c->max_answer_bytes, r);
    }
    const int ask = !(x && x->answer_only && a);   /* question-side filters run */
    if (ON(LM_FILTER_BROKEN)) {
        if (ask) check_broken(s, md, "question", q, a ? 0 : x && x->truncated, NULL, NULL, r);
        if (a) check_broken(s, md, "answer", a, x->truncated, asker, name, r);
    }
    if (ON(LM_FILTER_RESTATE)) {
        size_t so, se, k = sheet_overlap(q, s->restate_h, s->n_restate, c->restate_ngram, &so, &se);
        if (k) note(r, LM_FILTER_RESTATE, "question shares %zu consecutive words with the sheet: '%s'", k,
                    excerpt(q + so, se - so, ex, 60));
        if (find(s->re[P_SUMMARY], md, q, 0, &m) && summary_opening(name, q, &m))
            note(r, LM_FILTER_RESTATE, "question opens with a summary of the character: '%s'",
                 excerpt(q + m.start, m.end - m.start, ex, 60));
        size_t pw = preamble_words(q);
        if (c->max_preamble_words > 0 && pw > (size_t)c->max_preamble_words)
            note(r, LM_FILTER_RESTATE, "question has %zu words of preamble before asking (max %d)", pw,
                 c->max_preamble_words);
    }
    /* An adversarial asker attacks the fiction on purpose ("you are just a
     * character in a game"); the answer must not follow. */
    if (ask && strcmp(kind, "adversarial") != 0 && ON(LM_FILTER_BREAKS) &&
        breaks_at(s->re[P_BREAKS], md, q, NULL, &m))
        note(r, LM_FILTER_BREAKS, "question talks about the fiction: '%s'", excerpt(q + m.start, m.end - m.start, ex, 60));
    if (ask && ON(LM_FILTER_REPEAT)) check_repeat(s, "question", q, r);
    if (!a) goto done;
    if (ON(LM_FILTER_ASSISTANT) && find(s->re[P_ASSIST], md, a, 0, &m))
        note(r, LM_FILTER_ASSISTANT, "answer contains '%s'", excerpt(a + m.start, m.end - m.start, ex, 60));
    if (ON(LM_FILTER_REFUSAL) && find(s->re[P_REFUSAL], md, a, 0, &m))
        note(r, LM_FILTER_REFUSAL, "answer contains '%s'", excerpt(a + m.start, m.end - m.start, ex, 60));
    if (ON(LM_FILTER_STAGE)) {
        if (find(s->re[P_STAGE], md, a, 0, &m)) {
            size_t st = m.start;
            while (st < m.end && strchr(".!?\n \t", a[st])) st++; /* the context the match began at */
            note(r, LM_FILTER_STAGE, "answer contains stage direction '%s'", excerpt(a + st, m.end - st, ex, 60));
        } else {
            for (size_t off = 0; find(s->re[P_NARRATION], md, a, off, &m); off = m.end) {
                const char *w = a + m.gs[1];
                size_t wn = m.ge[1] - m.gs[1];
                if (names(name, w, wn) || ieq(w, wn, "he", 2) || ieq(w, wn, "she", 3)) {
                    note(r, LM_FILTER_STAGE, "answer narrates: '%s'", excerpt(a + m.start, m.end - m.start, ex, 60));
                    break;
                }
                if (m.end == off) break;
            }
        }
    }
    if (ON(LM_FILTER_SELF_INTRO) && find(s->re[P_SELF_INTRO], md, a, 0, &m)) {
        int hit = m.gs[2] != (size_t)-1; /* "my name is": any name */
        for (int g = 1; g <= 4 && !hit; g += (g == 1 ? 2 : 1))
            if (m.gs[g] != (size_t)-1) hit = names(name, a + m.gs[g], m.ge[g] - m.gs[g]);
        if (hit) note(r, LM_FILTER_SELF_INTRO, "answer introduces the character: '%s'",
                      excerpt(a + m.start, m.end - m.start, ex, 60));
    }
    if (ON(LM_FILTER_RECITE)) {
        size_t so, se, k = sheet_overlap(a, s->recite_h, s->n_recite, c->recite_ngram, &so, &se);
        if (k) note(r, LM_FILTER_RECITE, "answer shares %zu consecutive words with the sheet: '%s'", k,
                    excerpt(a + so, se - so, ex, 60));
    }
    if (strcmp(kind, "protective") == 0 && ON(LM_FILTER_MODERN) && find(s->re[P_MODERN], md, a, 0, &m))
        note(r, LM_FILTER_MODERN, "protective answer explains modern technology: '%s'",
             excerpt(a + m.start, m.end - m.start, ex, 60));
    if (ON(LM_FILTER_BREAKS) && breaks_at(s->re[P_BREAKS], md, a, q, &m))
        note(r, LM_FILTER_BREAKS, "answer talks about the fiction: '%s'", excerpt(a + m.start, m.end - m.start, ex, 60));
    if (ON(LM_FILTER_REPEAT)) {
        check_repeat(s, "answer", a, r);
        size_t nqh = 0, so, se;
        uint64_t *qh = c->echo_ngram > 0 ? lm_ftext_shingles(q, strlen(q), c->echo_ngram, &nqh) : NULL;
        size_t k = qh ? sheet_overlap(a, qh, nqh, c->echo_ngram, &so, &se) : 0;
        free(qh);
        if (k) note(r, LM_FILTER_REPEAT, "answer repeats %zu consecutive words of the question: '%s'", k,
                    excerpt(a + so, se - so, ex, 60));
    }
done:
#undef ON
    pcre2_match_data_free(md);
    return r->pass;
}

char *lm_filter_reasons(const lm_filter_result *r, char *buf, size_t cap) {
    if (!cap) return buf;
    buf[0] = 0;
    size_t k = 0;
    for (size_t i = 0; i < r->n_notes && k + 1 < cap; i++) {
        int n = snprintf(buf + k, cap - k, "%s%s: %s", i ? "; " : "", lm_filter_name(r->notes[i].filter),
                         r->notes[i].reason);
        if (n < 0) break;
        k += (size_t)n;
    }
    return buf;
}
