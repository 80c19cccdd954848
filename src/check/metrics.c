/* In-character metrics (metrics.h): the dataset filters judge most flags,
 * the rest are small checks of their own. */
#include "check/metrics.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "check/filter.h"
#include "check/vocab.h"
#include "sheet/sheet.h"

struct lm_eval_checker {
    lm_filter_set *fs;
    char *name, *first_name;       /* the character's, for "<name>:" */
    char **terms;                  /* the sheet's proper names, lowercased, sorted */
    size_t n_terms;
    char **catch;                  /* catchphrases, lowercased, quotes and end punctuation off */
    size_t n_catch;
    pcre2_code *speaker;           /* "User:" ... at a line start */
    pcre2_code *ignorance;         /* "never heard", "I do not know", ... */
    pcre2_code *dodge;             /* the same claims, narrowed for in-world answers */
};

/* Words a person of a pre-modern world could only use by explaining modern
 * things (matched as whole words, any case, plural -s allowed). */
static const char *const MODERN_WORDS[] = {
    "atom", "nucleus", "nuclear", "fission", "electron", "electricity", "electric", "battery",
    "internet", "online", "website", "email", "computer", "software", "program", "programming",
    "python", "javascript", "function", "code", "algorithm", "app", "phone", "smartphone",
    "engine", "motor", "petrol", "gasoline", "vaccine", "virus", "bacteria", "germ", "dna",
    "gene", "planet", "orbit", "gravity", "galaxy", "satellite", "rocket", "airplane",
    "aeroplane", "microwave", "wifi", "wi-fi", "metres", "meters", "kilometres", "camera",
    "photo", "photograph", "radio", "television", "laser", "plastic", "reactor", "telescope",
    "network", "password", "car", "train", "uranium", "turbine", "compiler", "browser", NULL,
};

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *lower_dup(const char *s, size_t n) {
    char *o = malloc(n + 1);
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) o[i] = (char)tolower((unsigned char)s[i]);
    o[n] = '\0';
    return o;
}

/* Words common at a sentence start or in titles that are not facts about
 * the character. */
static const char *const NOT_TERMS[] = {
    "the", "this", "that", "these", "those", "there", "their", "they", "then", "when", "what",
    "while", "with", "where", "which", "whose", "unlike", "today", "born", "before", "after",
    "during", "since", "until", "because", "however", "although", "though", "orlando", "lawful",
    "good", "genuine", "justice", "protection", "honesty", "balance", "personal", "duty",
    "ascend", "reform", "create", "prove", "build", "establish", "his", "her", "him", "she",
    NULL,
};

static bool is_not_term(const char *w) {
    for (size_t i = 0; NOT_TERMS[i]; i++)
        if (!strcmp(NOT_TERMS[i], w)) return true;
    return false;
}

/* Adds the capitalised words of >= 4 letters in text to the term list. */
static int collect_terms(lm_eval_checker *k, const char *text, size_t *cap) {
    for (const char *p = text; p && *p;) {
        if (!isalpha((unsigned char)*p)) { p++; continue; }
        const char *s = p;
        while (isalpha((unsigned char)*p)) p++;
        size_t n = (size_t)(p - s);
        if (n < 4 || !isupper((unsigned char)s[0])) continue;
        char *w = lower_dup(s, n);
        if (!w) return -1;
        if (is_not_term(w) || (k->first_name && !strcasecmp(w, k->first_name))) { free(w); continue; }
        if (k->n_terms == *cap) {
            size_t c = *cap ? *cap * 2 : 64;
            char **t = realloc(k->terms, c * sizeof *t);
            if (!t) { free(w); return -1; }
            k->terms = t;
            *cap = c;
        }
        k->terms[k->n_terms++] = w;
    }
    return 0;
}

void lm_eval_checker_free(lm_eval_checker *k) {
    if (!k) return;
    lm_filter_set_free(k->fs);
    for (size_t i = 0; i < k->n_terms; i++) free(k->terms[i]);
    for (size_t i = 0; i < k->n_catch; i++) free(k->catch[i]);
    free(k->terms);
    free(k->catch);
    free(k->name);
    free(k->first_name);
    pcre2_code_free(k->speaker);
    pcre2_code_free(k->ignorance);
    pcre2_code_free(k->dodge);
    free(k);
}

lm_eval_checker *lm_eval_checker_new(const lm_character *c, lm_err *err) {
    lm_eval_checker *k = calloc(1, sizeof *k);
    if (!k) return lm_errf(err, "out of memory"), NULL;
    lm_filter_config cfg;
    lm_filter_config_default(&cfg);
    /* Answers only: the question-side filters and the length limits of a
     * dataset say nothing about a model's reply. */
    cfg.disabled = (1u << LM_FILTER_LENGTH) | (1u << LM_FILTER_RESTATE) | (1u << LM_FILTER_DUP);
    if (!(k->fs = lm_filter_set_new(&cfg, c, err))) goto fail;
    if (c && c->name) {
        if (!(k->name = strdup(c->name))) goto oom;
        size_t n = strcspn(c->name, " ");
        if (!(k->first_name = lower_dup(c->name, n))) goto oom;
        size_t cap = 0;
        const char *texts[] = {c->backstory, c->knowledge_limits};
        for (size_t i = 0; i < 2; i++)
            if (collect_terms(k, texts[i], &cap)) goto oom;
        for (size_t i = 0; i < c->values.n; i++)
            if (collect_terms(k, c->values.v[i], &cap)) goto oom;
        for (size_t i = 0; i < c->objectives.n; i++)
            if (collect_terms(k, c->objectives.v[i], &cap)) goto oom;
        for (size_t i = 0; i < c->n_opinions; i++)
            if (collect_terms(k, c->opinions[i].title, &cap) ||
                collect_terms(k, c->opinions[i].text, &cap))
                goto oom;
        k->n_terms = lm_words_sort_unique(k->terms, k->n_terms);
        if (c->catchphrases.n && !(k->catch = calloc(c->catchphrases.n, sizeof *k->catch))) goto oom;
        for (size_t i = 0; i < c->catchphrases.n; i++) {
            const char *s = c->catchphrases.v[i];
            while (*s == '"' || *s == ' ') s++;
            size_t n2 = strlen(s);
            while (n2 && strchr("\".!? ", s[n2 - 1])) n2--;
            if (n2 < 8) continue;   /* too short to tell from ordinary speech */
            if (!(k->catch[k->n_catch] = lower_dup(s, n2))) goto oom;
            k->n_catch++;
        }
    }
    int ec;
    PCRE2_SIZE eo;
    k->speaker = pcre2_compile(
        (PCRE2_SPTR) "(?:^|\\n)\\s*(?:\\*\\*)?(?:user|player|you|traveller|traveler|human|stranger|"
                     "\\{\\{user\\}\\})(?:\\*\\*)?\\s*:|<\\|im_start\\|>|<\\|im_end\\|>",
        PCRE2_ZERO_TERMINATED, PCRE2_CASELESS, &ec, &eo, NULL);
    if (!k->speaker) { lm_errf(err, "eval: speaker pattern does not compile"); goto fail; }
    k->ignorance = pcre2_compile(
        (PCRE2_SPTR) "\\b(?:do\\s+not|don'?t|cannot|can'?t|could\\s+not|couldn'?t)\\s+(?:know|say|tell|"
                     "understand|follow|read|make\\s+sense)\\b|\\bnever\\s+(?:heard|seen|read|known|met|"
                     "used|been\\s+(?:to|taught|told))\\b|\\bno\\s+(?:idea|notion|such|record|word)\\b|"
                     "\\bnot\\s+a\\s+word\\b|\\b(?:unfamiliar|strange|foreign|unknown)\\b|"
                     "\\bknow\\s+(?:nothing|little|not)\\b|\\bmeans?\\s+nothing\\s+to\\s+me\\b|"
                     "\\bwhat\\s+(?:is|are)\\s+(?:a|an|this|that|these|those)\\b|"
                     "\\A\\W*(?:\\w+\\W+){0,3}\\w+\\?",
        PCRE2_ZERO_TERMINATED, PCRE2_CASELESS, &ec, &eo, NULL);
    if (!k->ignorance) { lm_errf(err, "eval: ignorance pattern does not compile"); goto fail; }
    /* Narrower than the protective pattern: an in-world answer may well call
     * something strange or ask a question back; what it should not do is
     * disclaim knowledge of its own world or decline to answer. */
    k->dodge = pcre2_compile(
        (PCRE2_SPTR) "\\b(?:do\\s+not|don'?t|cannot|can'?t|could\\s+not|couldn'?t)\\s+(?:know|say|tell|"
                     "imagine|remember)\\b|\\bnever\\s+(?:heard|seen|known)\\b|\\bno\\s+idea\\b|"
                     "\\bknow\\s+nothing\\b|\\brather\\s+not\\s+(?:say|tell|know|answer|speak)\\b",
        PCRE2_ZERO_TERMINATED, PCRE2_CASELESS, &ec, &eo, NULL);
    if (!k->dodge) { lm_errf(err, "eval: dodge pattern does not compile"); goto fail; }
    return k;
oom:
    lm_errf(err, "out of memory");
fail:
    lm_eval_checker_free(k);
    return NULL;
}

static bool pattern_hit(const pcre2_code *re, const char *s) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) return false;
    int rc = pcre2_match(re, (PCRE2_SPTR)s, PCRE2_ZERO_TERMINATED, 0, 0, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

/* "<asker's first word>:" at a line start: the asker's own line. */
static bool asker_line(const char *answer, const char *asker) {
    if (!asker || !asker[0]) return false;
    size_t n = 0;
    while (asker[n] && (isalnum((unsigned char)asker[n]) || (unsigned char)asker[n] >= 0x80)) n++;
    if (n < 2) return false;
    for (const char *p = answer; p; p = strchr(p, '\n')) {
        while (*p == '\n' || *p == ' ') p++;
        if (!strncasecmp(p, asker, n) && p[n] == ':') return true;
    }
    return false;
}

/* Distinct sheet terms in s that q (may be NULL) does not hold. */
static size_t count_terms(const lm_eval_checker *k, const char *s, const char *q) {
    size_t hits = 0;
    if (!k->n_terms) return 0;   /* no sheet: nothing to recite (and bsearch wants an array) */
    char seen[64][32];
    size_t n_seen = 0;
    for (const char *p = s; *p;) {
        if (!isalpha((unsigned char)*p)) { p++; continue; }
        const char *w0 = p;
        while (isalpha((unsigned char)*p)) p++;
        size_t n = (size_t)(p - w0);
        if (n < 4 || n >= 32) continue;
        char w[32];
        for (size_t i = 0; i < n; i++) w[i] = (char)tolower((unsigned char)w0[i]);
        w[n] = '\0';
        const char *key = w;
        if (!bsearch(&key, k->terms, k->n_terms, sizeof *k->terms, cmp_str)) continue;
        if (q && strcasestr(q, w)) continue;
        bool dup = false;
        for (size_t i = 0; i < n_seen && !dup; i++) dup = !strcmp(seen[i], w);
        if (dup) continue;
        if (n_seen < 64) memcpy(seen[n_seen++], w, n + 1);
        hits++;
    }
    return hits;
}

/* Whether the whole word w (or w + "s") is in s. */
static bool has_word(const char *s, const char *w) {
    size_t n = strlen(w);
    for (const char *p = s; (p = strcasestr(p, w)); p += n) {
        bool start = p == s || !isalnum((unsigned char)p[-1]);
        const char *e = p + n;
        if (*e == 's' || *e == 'S') e++;
        if (start && !isalnum((unsigned char)*e)) return true;
    }
    return false;
}

/* A modern word in the answer that the question did not bring (even as a
 * part of a word: "A smart phone?" echoes "smartphone"). */
static bool introduces_modern(const char *answer, const char *question) {
    for (size_t i = 0; MODERN_WORDS[i]; i++)
        if (has_word(answer, MODERN_WORDS[i]) && !(question && strcasestr(question, MODERN_WORDS[i])))
            return true;
    return false;
}

/* A year of our calendar (1000 to 2099, four digits standing alone) that
 * the question did not bring: "John Adams, who served from 1774 to 1825" is
 * our history told with confidence, though no modern word is in it.
 * Luminara counts no years this way; a world that does would need its own
 * rule. */
static bool introduces_year(const char *answer, const char *question) {
    for (const char *p = answer; *p; p++) {
        if (!isdigit((unsigned char)*p) || (p > answer && (isdigit((unsigned char)p[-1]) || p[-1] == ',' ||
                                                           p[-1] == '.')))
            continue;
        size_t n = 0;
        while (isdigit((unsigned char)p[n])) n++;
        bool year = n == 4 && (p[0] == '1' || (p[0] == '2' && p[1] == '0')) &&
                    !(p[4] == ',' && isdigit((unsigned char)p[5])) && !(p[4] == '.' && isdigit((unsigned char)p[5]));
        if (year) {
            char y[5] = {p[0], p[1], p[2], p[3], 0};
            if (!(question && strstr(question, y))) return true;
        }
        p += n - 1;
    }
    return false;
}

void lm_eval_check(const lm_eval_checker *k, const char *question, const char *answer,
                   const char *category, const char *asker, bool eos, lm_eval_flags *f) {
    memset(f, 0, sizeof *f);
    if (!answer) answer = "";
    int cat = lm_eval_category(category);
    f->eos = eos;
    for (const char *p = answer; *p;) {
        while (*p && isspace((unsigned char)*p)) p++;
        if (!*p) break;
        f->words++;
        while (*p && !isspace((unsigned char)*p)) p++;
    }
    static const char *const KIND[] = {"in-world", "off-topic", "protective", "adversarial"};
    /* the answer is judged, not the question: "question talks about the
     * fiction" says nothing of the NPC */
    lm_filter_sample x = {question ? question : "", answer, KIND[cat], NULL, asker, 0, 1};
    lm_filter_result r;
    lm_filter_run(k->fs, &x, &r);
    unsigned bad = r.failed;
    /* code or markdown (backticks, fenced blocks) is the assistant's output,
     * never a person's speech */
    f->assistant = (bad & (1u << LM_FILTER_ASSISTANT)) || strchr(answer, '`');
    f->refusal = bad & (1u << LM_FILTER_REFUSAL);
    f->stage = bad & (1u << LM_FILTER_STAGE);
    f->self_intro = bad & (1u << LM_FILTER_SELF_INTRO);
    f->breaks = bad & (1u << LM_FILTER_BREAKS);
    f->modern = cat == LM_EVAL_CAT_PROTECTIVE &&
                ((bad & (1u << LM_FILTER_MODERN)) || introduces_modern(answer, question) ||
                 introduces_year(answer, question));
    f->ignorant = cat == LM_EVAL_CAT_PROTECTIVE && pattern_hit(k->ignorance, answer);
    f->dodges = cat == LM_EVAL_CAT_IN_WORLD && pattern_hit(k->dodge, answer);
    f->repetition = bad & (1u << LM_FILTER_REPEAT);
    f->speaks_for_user = pattern_hit(k->speaker, answer) || asker_line(answer, asker);
    if (cat == LM_EVAL_CAT_OFF_TOPIC)
        f->recital = (bad & (1u << LM_FILTER_RECITE)) || count_terms(k, answer, question) >= 3;
    for (size_t i = 0; i < k->n_catch && !f->catchphrase; i++)
        f->catchphrase = strcasestr(answer, k->catch[i]) != NULL;
    f->in_character = !(f->assistant || f->refusal || f->stage || f->self_intro ||
                        f->speaks_for_user || f->breaks || f->modern);
}

static const char *const CAT_NAMES[LM_EVAL_NCAT] = {"in-world", "off-topic", "protective",
                                                    "adversarial"};

int lm_eval_category(const char *name) {
    for (int i = 0; name && i < LM_EVAL_NCAT; i++)
        if (!strcmp(name, CAT_NAMES[i])) return i;
    return LM_EVAL_CAT_IN_WORLD;
}

const char *lm_eval_category_name(int cat) {
    return cat >= 0 && cat < LM_EVAL_NCAT ? CAT_NAMES[cat] : NULL;
}

static void count(lm_eval_counts *c, const lm_eval_flags *f, bool pass) {
    c->n++;
    c->eos += f->eos;
    c->assistant += f->assistant;
    c->refusal += f->refusal;
    c->stage += f->stage;
    c->self_intro += f->self_intro;
    c->speaks_for_user += f->speaks_for_user;
    c->breaks += f->breaks;
    c->modern += f->modern;
    c->repetition += f->repetition;
    c->recital += f->recital;
    c->catchphrase += f->catchphrase;
    c->ignorant += f->ignorant;
    c->dodges += f->dodges;
    c->in_character += f->in_character;
    c->passed += pass;
    c->words += f->words;
}

void lm_eval_tally_add(lm_eval_tally *t, const lm_eval_flags *f, const char *category) {
    bool pass = f->in_character && f->eos &&
                (lm_eval_category(category) != LM_EVAL_CAT_PROTECTIVE || f->ignorant);
    count(&t->all, f, pass);
    count(&t->cat[lm_eval_category(category)], f, pass);
}

/* FNV-1a of n lowercased words starting at w[i]. */
static uint64_t ngram_hash(char *const *w, size_t i, int n) {
    uint64_t h = 1469598103934665603ull;
    for (int j = 0; j < n; j++) {
        for (const char *p = w[i + (size_t)j]; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
        h = (h ^ 0x20) * 1099511628211ull;
    }
    return h;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

double lm_eval_distinct(const char *const *texts, size_t n_texts, int n) {
    uint64_t *h = NULL;
    size_t nh = 0, cap = 0;
    for (size_t t = 0; t < n_texts; t++) {
        const char *s = texts[t] ? texts[t] : "";
        char *words[512];
        size_t nw = 0;
        for (const char *p = s; *p && nw < 512;) {
            if (!isalnum((unsigned char)*p) && *p != '\'') { p++; continue; }
            const char *w0 = p;
            while (isalnum((unsigned char)*p) || *p == '\'') p++;
            words[nw] = lower_dup(w0, (size_t)(p - w0));
            if (!words[nw]) break;
            nw++;
        }
        for (size_t i = 0; n > 0 && i + (size_t)n <= nw; i++) {
            if (nh == cap) {
                cap = cap ? cap * 2 : 1024;
                uint64_t *q = realloc(h, cap * sizeof *q);
                if (!q) { free(h); h = NULL; nh = cap = 0; break; }
                h = q;
            }
            if (h) h[nh++] = ngram_hash(words, i, n);
        }
        for (size_t i = 0; i < nw; i++) free(words[i]);
    }
    if (!nh) { free(h); return 0; }
    qsort(h, nh, sizeof *h, cmp_u64);
    size_t u = 1;
    for (size_t i = 1; i < nh; i++) u += h[i] != h[i - 1];
    free(h);
    return (double)u / (double)nh;
}
