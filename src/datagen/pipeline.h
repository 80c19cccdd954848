/* One dataset generation round (docs/DATAGEN.md):
 *
 *   N question specs (question.h) -> teacher (runner) -> clean + question
 *   filters -> answer requests (answer.h) -> teacher (runner) -> clean +
 *   filters + near-duplicates -> dataset, split, rejected list, statistics.
 *
 * Files in out_dir:
 *   run.json                    the round's parameters; a rerun must match
 *                               them (n may grow)
 *   questions.jsonl, answers.jsonl (+ .failures.jsonl)
 *                               the runner's journals: a rerun resumes here
 *   dataset.jsonl               every accepted sample
 *   train.jsonl, validation.jsonl, test.jsonl   its split
 *   rejected.jsonl              every rejected sample with its reasons
 *   stats.json, stats.md        counts, diversity, rejection reasons
 * The last seven are rewritten whole (temp file + rename) at the end of a
 * round that was not cancelled.
 *
 * A sample line:
 *   {"messages": [{"role": "system", ...}?, {"role": "user", ...},
 *                 {"role": "assistant", ...}],
 *    "meta": {"id", "index", "asker", "asker_role", "emotion", "location",
 *             "reason", "familiarity", "kind", "topic_type", "topic",
 *             "teacher", "seed", "round", "filters_passed": [...]}}
 * The system message is there only with LM_DG_SYSTEM_PERSONA: the
 * character's persona prompt (lm_persona_prompt, at most
 * persona_max_bytes), for training a model that is also prompted with it. */
#ifndef LM_DATAGEN_PIPELINE_H
#define LM_DATAGEN_PIPELINE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "datagen/answer.h"
#include "check/filter.h"
#include "datagen/prompt.h"
#include "datagen/question.h"
#include "datagen/stats.h"
#include "datagen/teacher.h"
#include "sheet/sheet.h"

typedef enum { LM_DG_SYSTEM_NONE = 0, LM_DG_SYSTEM_PERSONA = 1 } lm_dg_system;

typedef struct lm_datagen_opts {
    const char *out_dir;        /* created if missing */
    size_t n;                   /* question requests */
    uint64_t seed;
    lm_qmix mix;
    int round;                  /* recorded in meta; >= 1 */
    lm_dg_system system;
    size_t persona_max_bytes;   /* 0: 4000 */
    double val_frac, test_frac; /* split by a seeded hash of the index */
    const lm_style_example *promoted;   /* style examples from review */
    size_t n_promoted;
    size_t max_style_examples;  /* per answer request; 0: 8 */
    /* Answer system message budget in bytes, so that it, the question and
     * the answer fit a 2048-token teacher (SmolLM2, llama.cpp defaults):
     * 0 = 5000 (~1400 tokens); SIZE_MAX = no limit. */
    size_t max_prompt_bytes;
    const lm_filter_config *filters;    /* NULL: defaults */
    /* Unset fields take: questions temperature 0.9, max_tokens 160, stop
     * "\n\n"; answers 0.7, 320, stop "\nUser:" and "\n**User". The seed is
     * always the request's own (qspec.seed, and a mix of it for answers). */
    lm_teacher_params question_params;
    lm_teacher_params answer_params;
    bool progress;
    const volatile sig_atomic_t *cancel;
} lm_datagen_opts;

/* n 100, seed 42, default mix, round 1, no system message, val/test 0.1. */
lm_datagen_opts lm_datagen_opts_default(void);

typedef struct lm_datagen_summary {
    size_t requested;
    size_t q_ok, q_failed, q_rejected;   /* teacher replies / failures / filtered out */
    size_t a_ok, a_failed, a_rejected;
    size_t kept, train, validation, test;
    bool cancelled;                      /* stopped before the dataset was written */
} lm_datagen_summary;

int lm_datagen_run(lm_teacher *t, const lm_character *c, const lm_world *w,
                   const lm_prompt_set *tpl, const lm_datagen_opts *o, lm_datagen_summary *s,
                   lm_err *err);

/* The resume step of a round (exposed for tests and the fuzzer): reads a
 * runner result file's text into replies[index] by its "<prefix><index>"
 * ids (an index >= n, or one already set, is passed over); an id of
 * another shape fails (the file belongs to another round). Errors name
 * name:line. */
int lm_datagen_results_parse(const char *name, const char *data, size_t len, const char *prefix,
                             char **replies, size_t n, lm_err *err);

#endif
