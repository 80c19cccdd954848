/* The eval report: report.json (numbers) and report.md (numbers and the
 * answers a reader should look at), and the side-by-side comparison of
 * several reports (compare.md, compare.svg). */
#ifndef LM_EVAL_REPORT_H
#define LM_EVAL_REPORT_H

#include <jansson.h>

#include "base/err.h"
#include "check/metrics.h"

typedef struct lm_eval_summary {
    const char *label;          /* NULL: from the settings */
    json_t *settings;           /* borrowed */
    const char *questions, *refs;
    const lm_eval_tally *tally;
    double distinct1, distinct2;
    double ppl;                 /* 0: no refs */
    int n_refs;
    double seconds;
    const char *judge;          /* the judge's name, NULL: none */
    int judge_n, judge_failed;  /* answers scored, answers the judge failed on */
    double judge_mean[5];       /* per dimension (judge.h), over judge_n */
    int guard;                  /* the reply guard's retries, 0: none */
    int best_of;                /* its draws to choose from (<= 1: none) */
    size_t guard_retried;       /* answers drawn more than once */
    size_t guard_failing;       /* answers given though no draw passed */
    double guard_mean_attempts;
} lm_eval_summary;

/* DIR/answers.jsonl as an array of answer objects with an "id", in file
 * order; a torn or foreign line is skipped (an eval killed mid-write).
 * An empty array when the file is missing; NULL on out of memory. */
json_t *lm_eval_read_answers(const char *dir);
/* A path as a reader of a committed report can follow it (malloc'd, NULL
 * when out of memory): relative to the working directory when under it,
 * "~/..." under $HOME, else the file's name alone. */
char *lm_eval_shown_path(const char *p);

int lm_eval_write_report(const char *dir, const lm_eval_summary *s, json_t *answers, lm_err *err);

#endif
