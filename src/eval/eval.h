/* `lemonpc eval`: an NPC (a model, an optional adapter, a character sheet
 * under a persona mode) answers a question file; the answers are checked
 * (metrics.h) and summed up in a report.
 *
 * Question file (JSONL): {"id", "question", "category", "asker", "location",
 * "history": [{"role","content"}...]} (all but id and question optional).
 * Reference file (JSONL chat conversations, e.g. a dataset's test split):
 * the perplexity of their assistant turns under the NPC.
 *
 * The output folder holds answers.jsonl (id, category, question, answer,
 * stop: "eos" | "max_tokens" | "context" | "stop_string", tokens, flags),
 * report.json and report.md. answers.jsonl is appended one line at a time
 * and flushed, so a killed eval resumes where it stopped (ids already
 * answered under the same settings are kept).
 *
 * With a judge, every answer is also scored 1-7 on Character-LLM's five
 * dimensions (judge.h): DIR/judge.jsonl keeps each score (or the judge's
 * failure) with the answer it scored, so a resumed eval asks again only
 * for answers it has no score for; the means go in the report. */
#ifndef LM_EVAL_EVAL_H
#define LM_EVAL_EVAL_H

#include <stdbool.h>

#include "base/err.h"
#include "model/sampler.h"

typedef struct lm_eval_opts {
    const char *label;       /* the NPC's name in reports; NULL: derived */
    const char *model;       /* GGUF */
    const char *adapter;     /* LoRA GGUF or NULL */
    const char *character;   /* sheet .md or NULL (no persona) */
    int persona;             /* lm_persona_mode */
    bool no_lore;            /* without the lorebook block lemonpc_say puts before the
                              * player's line (memory/recall.h): on by default, so the
                              * answers are those a game gets */
    const char *questions;   /* JSONL */
    const char *refs;        /* JSONL conversations or NULL */
    const char *out;         /* folder */
    int max_tokens;          /* per answer (default 160) */
    bool sample;             /* the runtime's default sampling instead of greedy */
    lm_sampler_params sp;    /* used when sample */
    int threads;
    int guard;               /* the reply guard's retries (runtime/guard.h), 0: off */
    int best_of;             /* the guard's draws to choose from (lemonpc_guard.best_of) */
    unsigned guard_checks;   /* LEMONPC_CHECK_x bits */
    bool quiet;              /* no progress line */
    struct lm_teacher *judge; /* an LLM judge (judge.h) or NULL; borrowed */
} lm_eval_opts;

void lm_eval_opts_init(lm_eval_opts *o);

/* The question file as a JSON array of checked question objects (each with
 * "_line"), or NULL with an error naming path:line. Caller json_decref's. */
struct json_t;
struct json_t *lm_eval_load_questions(const char *path, lm_err *err);
/* A JSONL file as an array of objects, each with "_line"; blank lines
 * skipped, any other bad line an error naming path:line. */
struct json_t *lm_eval_read_jsonl(const char *path, lm_err *err);
int lm_eval_run(const lm_eval_opts *o, lm_err *err);

/* Side by side: each dirs[i] holds a report.json; writes compare.md and
 * compare.svg into out. */
int lm_eval_compare(const char *const *dirs, int n, const char *out, lm_err *err);

#endif
