/* What an SFT run (sft.c) and a DPO run (dpo.c) share around their steps:
 * the run directory (a run already there without --resume is refused),
 * resuming from last/, the optimizer and what it updates, metrics.jsonl,
 * the end of each optimizer step (smoothed loss, evaluation points, the
 * metrics line, best/ and last/ checkpoints, stop requests) and the
 * report. Inside src/train only.
 *
 *   lm_loop L;
 *   lm_loop_open(&L, cfg, ctl, err);           // before anything is computed
 *   ... the LoRA to start from (or none for a full run / a resume) ...
 *   lm_loop_start(&L, m, &lora, err);          // resume or fresh; metrics.jsonl
 *   lm_loop_begin(&L, "train", total);
 *   while (L.st.step < total) {
 *       lm_loop_step_start(&L);
 *       memset(L.grads, ...); gradients ...;
 *       lm_loop_optimize(&L, pool, lr, &gnorm, err);
 *       if (lm_loop_count(&L, tokens, loss, epoch_end)) validation ...;
 *       lm_loop_record(&L, m, lora, &line, &stop, err);
 *       lm_loop_progress(&L, "... text ...");
 *   }
 *   rc = lm_loop_finish(&L, rc, rep, err);
 */
#ifndef LM_TRAIN_LOOP_H
#define LM_TRAIN_LOOP_H

#include <stdbool.h>
#include <stdio.h>

#include "base/err.h"
#include "base/pool.h"
#include "base/progress.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/lora.h"
#include "train/sft.h"
#include "train/train_config.h"
#include "train/train_model.h"

typedef struct lm_loop {
    const lm_train_cfg *cfg;
    const lm_sft_ctl *ctl;
    char ckdir[LM_TCFG_PATH + 64];          /* the checkpoint a resume reads */
    char metrics_path[LM_TCFG_PATH + 32];
    FILE *mf;
    lm_adamw *opt;
    lm_adamw_cfg ac;
    lm_ckpt_state st;
    /* what the optimizer updates: the model's weights (full) or the adapter's */
    float *params, *grads;
    const lm_ttensor *tens;
    int n_tens;
    size_t n_params;
    long total, first, done_here;
    double t_call, t_base, t0;
    /* of the last lm_loop_count */
    double smooth, tps;
    bool final, evaluate;
    lm_progress prog;
    bool prog_on;
} lm_loop;

/* Creates cfg->out if needed and checks it against ctl->resume (a run
 * there needs --resume; --resume needs one). */
int lm_loop_open(lm_loop *L, const lm_train_cfg *cfg, const lm_sft_ctl *ctl, lm_err *err);
/* Fresh run: a new optimizer for m's weights (full) or *lora. Resume: the
 * state, weights (*lora, whatever it held, is replaced by last/'s adapter,
 * which must have its rank) and optimizer of last/. Then opens
 * metrics.jsonl (cut back to the checkpoint's length on resume). */
int lm_loop_start(lm_loop *L, lm_tmodel *m, lm_lora **lora, lm_err *err);
/* Starts the progress bar ("what", steps of this call) and the clocks. */
void lm_loop_begin(lm_loop *L, const char *what, long total);
void lm_loop_step_start(lm_loop *L);
/* One AdamW update of L->params from L->grads; errors name the step. */
int lm_loop_optimize(lm_loop *L, lm_pool *pool, float lr, double *gnorm, lm_err *err);
/* Counts the step just taken (step, tokens, smoothed loss, tokens/s) and
 * returns whether it is an evaluation point (epoch end, last step or
 * every eval_every steps). */
bool lm_loop_count(lm_loop *L, long tokens, double loss, bool epoch_end);

typedef struct lm_loop_line {
    int epoch;                  /* 0-based */
    double loss, gnorm;
    float lr;
    long tokens;
    const char *extra;          /* more ", \"key\": value" fields, or "" */
    double val_loss;            /* < 0: none this step */
    const char *val_extra;      /* fields after val_loss, or "" */
} lm_loop_line;

/* Refuses a loss that is not finite, appends the step's metrics line,
 * saves best/ on a new best validation loss and last/ at evaluation
 * points, every save_every steps and before stopping, and sets *stop when
 * ctl asks to stop (stop_after steps of this call, or *interrupt) before
 * the last step. */
int lm_loop_record(lm_loop *L, const lm_tmodel *m, const lm_lora *lora, const lm_loop_line *line,
                   bool *stop, lm_err *err);
void lm_loop_progress(lm_loop *L, const char *text);
/* Ends the bar, fills rep's common fields, closes metrics.jsonl and (when
 * rc is 0) draws loss.svg; frees the optimizer. Returns rc, or -1 if one of
 * those failed. */
int lm_loop_finish(lm_loop *L, int rc, lm_sft_report *rep, lm_err *err);

/* info(ctx, formatted line) when info is set. */
void lm_loop_note(void (*info)(void *, const char *), void *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Bad dataset lines of a run: each reported through the run's info
 * callback as it is skipped (the first LM_LOOP_BAD_LINES_SHOWN, with file
 * and line), and counted. Set lm_sft_opts.warn = lm_loop_bad_line and
 * warn_ctx = &b; lm_loop_bad_lines_note writes "; N bad lines skipped
 * (...)" for the dataset summary ("" for none). */
enum { LM_LOOP_BAD_LINES_SHOWN = 10 };
typedef struct lm_loop_bad_lines {
    void (*info)(void *ctx, const char *line);
    void *info_ctx;
    long n;
} lm_loop_bad_lines;
void lm_loop_bad_line(void *ctx, const char *msg);
void lm_loop_bad_lines_note(const lm_loop_bad_lines *b, char *buf, size_t cap);

#endif
