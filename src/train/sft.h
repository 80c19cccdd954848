/* The SFT loop: batches from lm_batcher, forward/backward (train_model.h),
 * gradient accumulation, AdamW with the LR schedule, validation loss every
 * epoch and every eval-every steps, checkpoints RUN_DIR/last and
 * RUN_DIR/best (checkpoint.h), RUN_DIR/metrics.jsonl (one line per
 * optimizer step) and RUN_DIR/loss.svg.
 *
 * One optimizer step takes grad_accum micro-batches, fewer at the end of an
 * epoch (an epoch never shares a step with the next). Its loss is the mean
 * over all trained positions of those micro-batches (loss_norm), so
 * accumulating k batches of B equals one batch of k*B.
 *
 * Determinism: with the same config and thread count a run is bit-for-bit
 * reproducible, and a run resumed from RUN_DIR/last continues exactly as
 * the uninterrupted one would (weights, moments and step restored; the
 * batcher is replayed to the saved position from its seed). */
#ifndef LM_TRAIN_SFT_H
#define LM_TRAIN_SFT_H

#include <signal.h>
#include <stdio.h>

#include "base/err.h"
#include "train/data.h"
#include "train/train_config.h"
#include "train/train_model.h"

typedef struct lm_sft_report {
    long steps, total_steps;    /* optimizer steps done (whole run) / planned */
    long steps_here;            /* of them, done by this call (0: a finished run resumed) */
    long tokens;                /* real tokens trained on (whole run) */
    double seconds;             /* training time (whole run) */
    double last_loss;           /* loss of the last step */
    double best_val;            /* < 0: never validated */
    long best_step;
    int stopped;                /* 1: stop_after ended this call before the run's end */
    /* DPO runs (dpo.h): the reward accuracy and margin of the last
     * validation (without validation data: of the last step), and whether
     * the reference log-likelihoods came from RUN_DIR/ref_logps.bin. */
    int dpo, ref_cached;
    double reward_acc, reward_margin;
} lm_sft_report;

typedef struct lm_sft_ctl {
    int resume;                 /* continue from RUN_DIR/last */
    long stop_after;            /* > 0: stop after this many steps of this call (last saved) */
    int progress;               /* 1: progress line on stderr when it is a terminal */
    /* Polled after each step (may be NULL): nonzero stops the run after
     * saving last/, e.g. set by the CLI's SIGINT/SIGTERM handler. */
    const volatile sig_atomic_t *interrupt;
    /* 1: compute every row of a batch at cfg->seq positions, as the trainer
     * did before it cut batches to their longest row (the same results,
     * slower; tests and benchmarks compare the two). */
    int full_rows;
} lm_sft_ctl;

/* cfg finished (lm_train_cfg_finish); m the base model (a full run trains
 * it in place); train/val fitted to cfg->seq (val may be NULL or empty). */
int lm_sft_train(const lm_train_cfg *cfg, lm_tmodel *m, const lm_sft_dataset *train,
                 const lm_sft_dataset *val, const lm_sft_ctl *ctl, lm_sft_report *rep, lm_err *err);

/* The whole run from files: the model and its tokenizer from cfg->model,
 * data from cfg->data (+ cfg->val or a val_frac split), or with cfg->dpo
 * a DPO run on those pairs (lm_dpo_run). With ctl->resume,
 * cfg->out names the run and the rest of cfg is replaced by the
 * checkpoint's config (threads kept if set). info (may be NULL) gets
 * one-line notes on the data (printed by the CLI). */
int lm_sft_run(lm_train_cfg *cfg, const lm_sft_ctl *ctl, lm_sft_report *rep,
               void (*info)(void *ctx, const char *line), void *info_ctx, lm_err *err);

/* RUN_DIR/loss.svg from RUN_DIR/metrics.jsonl (plot_svg.c). */
int lm_sft_plot_svg(const char *metrics_path, const char *svg_path, lm_err *err);

#endif
