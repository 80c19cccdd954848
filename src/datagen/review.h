/* Human review of a generated dataset: the decisions store and its logic
 * (the terminal UI is review_tui.c, the command cmd_review.c).
 *
 * Decisions are appended to a JSONL file, one line per key press, and
 * flushed at once, so a crash or `q` loses nothing:
 *
 *   {"id":"9f0c...","action":"accept"}
 *   {"id":"...","action":"reject"}
 *   {"id":"...","action":"edit","answer":"the writer's new answer"}
 *   {"id":"...","action":"promote"}
 *   {"action":"undo"}            cancels the latest action not yet undone
 *
 * A sample's id is meta.id when the line has one, else the first 16 hex
 * digits of FNV-1a-64 over question "\x1f" answer (the original answer:
 * edits do not change it). Replaying the file gives each sample's state;
 * the review resumes at the first undecided sample. Edit and promote
 * both accept the sample; promote also makes its (edited) answer a style
 * example.
 *
 * Promoted samples are the answer prompts' style examples for the next
 * generation round. They are rewritten (atomically) to
 * DATASET.promoted.jsonl after every promote or undo, one sample per line
 * in the common chat format:
 *   {"messages":[{"role":"user","content":Q},{"role":"assistant","content":A}],
 *    "meta":{...the sample's meta..., "id":ID, "review":"promoted"}}
 *
 * Export writes the accepted samples (original line, the answer replaced
 * when edited, meta.review = "accepted" | "edited" | "promoted"). */
#ifndef LM_DATAGEN_REVIEW_H
#define LM_DATAGEN_REVIEW_H

#include <stddef.h>

#include "base/err.h"

typedef enum {
    LM_REVIEW_UNDECIDED = 0,
    LM_REVIEW_ACCEPTED,
    LM_REVIEW_REJECTED,
} lm_review_state;

typedef enum {
    LM_REVIEW_ACCEPT = 0,
    LM_REVIEW_REJECT,
    LM_REVIEW_EDIT,
    LM_REVIEW_PROMOTE,
} lm_review_action;

typedef struct {
    char id[33];
    const char *question;   /* last user turn */
    const char *answer;     /* current answer: the edit when edited */
    const char *original;   /* the dataset's answer */
    const char *meta;       /* meta as compact JSON ("{}" when none) */
    const char *notes;      /* meta.filter_notes, rejected_by, filters_failed, reasons as text; "" */
    lm_review_state state;
    int edited, promoted;
    int line;               /* 1-based line in the dataset */
} lm_review_item;

typedef struct lm_review lm_review;

/* Loads the dataset and replays decisions (NULL: DATASET.decisions.jsonl;
 * a missing file is an empty one). A cut-short last line (a crash mid-
 * write) is ignored; any other bad line is an error naming path:line. */
lm_review *lm_review_open(const char *dataset, const char *decisions, lm_err *err);
void lm_review_close(lm_review *r);

size_t lm_review_count(const lm_review *r);
const lm_review_item *lm_review_get(const lm_review *r, size_t i);
/* First undecided sample at or after from, wrapping around; -1 if none. */
long lm_review_next_undecided(const lm_review *r, size_t from);

/* Records an action on sample i and appends it to the decisions file
 * (answer: the new text for LM_REVIEW_EDIT, else NULL). */
int lm_review_decide(lm_review *r, size_t i, lm_review_action a, const char *answer, lm_err *err);
/* Undoes the latest action; *which gets its sample (-1: nothing to undo). */
int lm_review_undo(lm_review *r, long *which, lm_err *err);

typedef struct {
    size_t total, accepted, rejected, edited, promoted, undecided;
} lm_review_counts;
lm_review_counts lm_review_tally(const lm_review *r);

const char *lm_review_decisions_path(const lm_review *r);
const char *lm_review_promoted_path(const lm_review *r);
/* Writes the accepted samples to path; returns how many via *n. */
int lm_review_export(const lm_review *r, const char *path, size_t *n, lm_err *err);

/* The terminal UI (review_tui.c): needs a TTY on stdin/stdout. editor:
 * NULL = $VISUAL, $EDITOR, then vi. Returns 0 on quit, -1 on error. */
int lm_review_tui(lm_review *r, const char *editor, lm_err *err);

#endif
