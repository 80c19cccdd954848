/* Dataset filters: reject generated question/answer pairs a small model
 * should not learn from, and say why.
 *
 *     lm_filter_config cfg;
 *     lm_filter_config_default(&cfg);               // optional: lm_filter_config_load
 *     lm_filter_set *fs = lm_filter_set_new(&cfg, character, &err);   // character may be NULL
 *     lm_dedup *dd = lm_dedup_new(&cfg, &err);
 *     for each sample x:
 *         lm_filter_result r;
 *         lm_filter_run(fs, &x, &r);                // per-sample filters
 *         if (r.pass) lm_dedup_check(dd, &x, &r);    // near-duplicates of the accepted set
 *         if (r.pass) { lm_dedup_add(dd, &x); keep x; meta.filters_passed = lm_filter_passed_json... }
 *         else for each r.notes[i]: log lm_filter_name(r.notes[i].filter), r.notes[i].reason
 *     lm_dedup_free(dd); lm_filter_set_free(fs);
 *
 * The question can be screened before its answer exists: a sample with
 * answer == NULL runs only the question-side filters (length of the
 * question, restating the sheet, broken question, breaks-character,
 * repetition within the question, question near-duplicates).
 *
 * Filters (names are stable: they appear in meta.filters_passed, in the
 * rejected file and in reports):
 *   length            question/answer too short or too long (words, bytes);
 *                     a question of more than cfg.max_question_sentences
 *                     sentences (one spoken turn, not a monologue)
 *   assistant-speech  "as an AI", "language model", "I hope this helps", ...:
 *                     a built-in list plus one phrase per line from
 *                     cfg.phrases_path (case-insensitive, '#' comments),
 *                     and patterns for the assistant's reflexes: "how can I
 *                     help you", "what can I do to help you", "here's another
 *                     way of asking", "I'll give you another example" (see
 *                     lm_filter_assistant_patterns in filter_text.c for what
 *                     is left to the character, e.g. "What can I do for you?")
 *   refusal           moralising refusals and offers of help ("I can't help
 *                     with that", "Is there anything else", "let me know if")
 *   stage-direction   *smiles*, (laughs), [sighs], or a line opening with
 *                     narration about the character ("Orlando smiles and says")
 *   self-intro        the answer opens with "I am <name>", "My name is",
 *                     "As <name>," or "<name> here"
 *   restates-sheet    the question shares >= cfg.restate_ngram consecutive
 *                     words with the sheet (backstory, opinions, values,
 *                     objectives), or opens with a summary of the character
 *                     ("<Name>... a name well-known ...") or with more than
 *                     cfg.max_preamble_words words before the sentence that
 *                     asks: the prototype's main failure
 *   recites-sheet     the answer shares >= cfg.recite_ngram consecutive
 *                     words with the sheet
 *   broken-turn       empty; speaking for the user ("User:", "Player:",
 *                     "{{user}}", "<asker>:"); role tags; special tokens
 *                     (<|im_end|>, <|endoftext|>, [INST], <s>); unbalanced
 *                     double quotes; cut at max tokens (sample.truncated or
 *                     no final punctuation); not valid UTF-8
 *   modern-knowledge  protective questions only: the answer explains modern
 *                     technology with confidence ("a smartphone works by",
 *                     "the internet is", "electricity is"): a heuristic list,
 *                     see lm_filter_modern_patterns in filter_text.c
 *   breaks-character  talk about the fiction as fiction: "in the context of
 *                     your story", "the next part of the text", "role-play",
 *                     "fictional", "as a character", "I'm a person in a
 *                     story". A phrase the question itself used is allowed in
 *                     the answer ("Role-play? I know not the word."), and an
 *                     adversarial question may attack the fiction on purpose
 *                     (see lm_filter_breaks_patterns in filter_text.c)
 *   repetition        degenerate self-repetition: a word n-gram of
 *                     cfg.repeat_ngram words occurring twice in one text; in
 *                     a text of >= 30 words, distinct word 3-grams / all
 *                     3-grams below cfg.repeat_min_distinct; an answer
 *                     sharing >= cfg.echo_ngram consecutive words with its
 *                     question (parroting)
 *   near-duplicate    exact duplicate after normalisation (case, punctuation,
 *                     spaces) or Jaccard similarity of word-3-gram shingle
 *                     sets >= cfg.dup_jaccard against an accepted sample
 *                     (questions against questions, answers against answers)
 *
 * All patterns are compiled once per lm_filter_set (PCRE2); a set is
 * read-only after creation and may be shared by threads. lm_dedup is
 * stateful and not thread-safe. */
#ifndef LM_CHECK_FILTER_H
#define LM_CHECK_FILTER_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

struct lm_character;

enum {
    LM_FILTER_LENGTH = 0,
    LM_FILTER_ASSISTANT,
    LM_FILTER_REFUSAL,
    LM_FILTER_STAGE,
    LM_FILTER_SELF_INTRO,
    LM_FILTER_RESTATE,
    LM_FILTER_RECITE,
    LM_FILTER_BROKEN,
    LM_FILTER_MODERN,
    LM_FILTER_BREAKS,
    LM_FILTER_REPEAT,
    LM_FILTER_DUP,
    LM_FILTER_COUNT
};

/* "length", "assistant-speech", ... ; NULL when out of range. */
const char *lm_filter_name(int filter);
/* The filter named name, or -1. */
int lm_filter_by_name(const char *name);

typedef struct lm_filter_config {
    int min_question_words, max_question_words;   /* 3, 45 */
    size_t max_question_bytes;                    /* 300 */
    int max_question_sentences;                   /* 3; 0 = no limit */
    int min_answer_words, max_answer_words;       /* 3, 250 */
    size_t max_answer_bytes;                      /* 1600 */
    int restate_ngram;      /* question vs sheet, consecutive words: 8 */
    int recite_ngram;       /* answer vs sheet, consecutive words: 12 */
    int max_preamble_words; /* question: words before the sentence that asks: 40 */
    double dup_jaccard;     /* near-duplicate threshold in (0, 1]: 0.7 */
    int repeat_ngram;       /* an n-gram of this many words twice in one text: 8; 0 = off */
    double repeat_min_distinct; /* distinct word 3-grams / all, texts of >= 30 words: 0.8; 0 = off */
    int echo_ngram;         /* answer vs its question, consecutive words: 10; 0 = off */
    const char *phrases_path; /* extra assistant-speech phrases; NULL = none (borrowed) */
    unsigned disabled;      /* bit (1u << LM_FILTER_x) set: that filter is skipped */
} lm_filter_config;

void lm_filter_config_default(lm_filter_config *c);
/* Reads `key = value` lines over the current values ('#' comments):
 * min_question_words, max_question_words, max_question_bytes,
 * max_question_sentences, min_answer_words, max_answer_words,
 * max_answer_bytes, restate_ngram, recite_ngram, max_preamble_words,
 * dup_jaccard, repeat_ngram, repeat_min_distinct, echo_ngram,
 * disable = name[, name...]. phrases_path is
 * not read from the file (it would have to outlive it). Errors name
 * path:line. */
int lm_filter_config_load(lm_filter_config *c, const char *path, lm_err *err);
/* The same from a config file's text (len bytes, need not be
 * NUL-terminated; name stands for the path in messages). */
int lm_filter_config_parse(lm_filter_config *c, const char *name, const char *text, size_t len,
                           lm_err *err);

/* One sample as the filters see it; all borrowed. */
typedef struct lm_filter_sample {
    const char *question;   /* NULL or "" = broken */
    const char *answer;     /* NULL = screen the question only */
    const char *kind;       /* "in-world", "off-topic", "protective", "adversarial"; NULL = in-world */
    const char *character;  /* NULL: the set's character name, if any */
    const char *asker;      /* asker's name, for "<asker>:" in the answer; NULL = none */
    int truncated;          /* the teacher stopped at max_tokens (finish_reason "length") */
    int answer_only;        /* judge the answer alone: no question-side filter fails the
                               sample (an NPC's reply is checked, not the player's line) */
} lm_filter_sample;

#define LM_FILTER_REASON_MAX 200

typedef struct {
    int filter;                         /* LM_FILTER_x */
    char reason[LM_FILTER_REASON_MAX];  /* "answer contains 'as an AI'" */
} lm_filter_note;

typedef struct lm_filter_result {
    int pass;               /* 1: no filter failed */
    unsigned checked;       /* bit per filter that ran */
    unsigned failed;        /* bit per filter that failed */
    lm_filter_note notes[LM_FILTER_COUNT]; /* one per failed filter, filter order */
    size_t n_notes;
} lm_filter_result;

typedef struct lm_filter_set lm_filter_set;

/* character (may be NULL) gives the name for self-intro/stage-direction and
 * the sheet text for the overlap filters; it is copied, not kept. */
lm_filter_set *lm_filter_set_new(const lm_filter_config *cfg, const struct lm_character *character,
                                 lm_err *err);
void lm_filter_set_free(lm_filter_set *s);

/* Runs every enabled per-sample filter (not near-duplicate) and fills r.
 * Returns r->pass. Never fails: bad input (NULL, non-UTF-8) is a failed
 * broken-turn filter. */
int lm_filter_run(const lm_filter_set *s, const lm_filter_sample *x, lm_filter_result *r);

/* "filter: reason; filter: reason" of r's notes into buf (always
 * NUL-terminated); returns buf. */
char *lm_filter_reasons(const lm_filter_result *r, char *buf, size_t cap);

/* Near-duplicates against the samples added so far. */
typedef struct lm_dedup lm_dedup;

lm_dedup *lm_dedup_new(const lm_filter_config *cfg, lm_err *err);
void lm_dedup_free(lm_dedup *d);
/* Compares x's question (and answer, when non-NULL) with the accepted ones;
 * on a match marks near-duplicate failed in r (reason names the index of
 * the earlier sample and the similarity). Returns r->pass. Does not add. */
int lm_dedup_check(const lm_dedup *d, const lm_filter_sample *x, lm_filter_result *r);
/* Remembers x (question and answer) as accepted; returns its index, -1 on
 * out of memory. */
long lm_dedup_add(lm_dedup *d, const lm_filter_sample *x, lm_err *err);
size_t lm_dedup_count(const lm_dedup *d);

#endif
