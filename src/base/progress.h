/* A one-line progress display for long work (quantize, training, datagen):
 *
 *     lm_progress p;
 *     lm_progress_begin(&p, "quantize", n_tensors, "tensors");
 *     for (i = 0; i < n; i++) { ...; lm_progress_update(&p, i + 1, name); }
 *     lm_progress_end(&p);
 *
 * draws   quantize  120/272 tensors  44%  31.2 tensors/s  ETA 0:05  blk.12.ffn_up.weight
 * on stderr, redrawn in place (\r) at most ~10 times a second, and a final
 * line with the elapsed time on lm_progress_end. When stderr is not a
 * terminal the bar is not drawn (logs and pipes stay clean); only the
 * milestones (lm_progress_mark) print there, one plain line each.
 * All state lives in the struct; one struct is driven from one thread. */
#ifndef LM_BASE_PROGRESS_H
#define LM_BASE_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef struct lm_progress {
    FILE *out;          /* NULL: silent */
    FILE *log;          /* no bar drawn: where lm_progress_mark's lines go (NULL: none) */
    char label[32];
    char unit[24];
    int64_t total;      /* <= 0: unknown (no percentage or ETA) */
    int64_t done;
    double t_start;     /* seconds, monotonic clock */
    double t_drawn;     /* last redraw */
    int width;          /* length of the last line drawn, to blank leftovers */
    double (*now)(void); /* the clock in seconds; NULL: the monotonic clock */
} lm_progress;

/* label and unit are copied (truncated to fit); unit may be NULL ("steps"). */
void lm_progress_begin(lm_progress *p, const char *label, int64_t total, const char *unit);
/* Same, drawing to `out` whether or not it is a terminal (NULL: silent);
 * for tests and for callers that want progress in a log anyway. */
void lm_progress_begin_file(lm_progress *p, FILE *out, const char *label, int64_t total,
                            const char *unit);
/* Same, reading the time from now() (NULL: the monotonic clock): a test
 * seam, so the rate limit and the times drawn can be checked exactly. */
void lm_progress_begin_clock(lm_progress *p, FILE *out, const char *label, int64_t total,
                             const char *unit, double (*now)(void));
/* done: units finished so far; extra: short text shown after the numbers
 * (current tensor name, loss, ...), may be NULL. Cheap when not redrawing. */
void lm_progress_update(lm_progress *p, int64_t done, const char *extra);
/* A milestone (an evaluation, an epoch's end): redrawn now on a bar; with
 * no bar, one plain line to p->log (stderr when lm_progress_begin found it
 * is not a terminal), so a long run piped to a file says how it goes. */
void lm_progress_mark(lm_progress *p, int64_t done, const char *extra);
/* Draws the final state with the elapsed time and ends the line. */
void lm_progress_end(lm_progress *p);

#endif
