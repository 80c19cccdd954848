/* Run checkpoints: RUN_DIR/last/ and RUN_DIR/best/, each a directory of
 *   adapter.gguf   LoRA runs: llama.cpp adapter GGUF (lm_lora_save)
 *   model.gguf     full runs: the f32 weights (lm_tmodel_save)
 *   optim.bin      AdamW m, v and step (format below)
 *   state.json     the loop's position and the run's config; written last
 * A checkpoint is built in RUN_DIR/.NAME.tmp-XXXXXX, every file fsynced,
 * then swapped in with one atomic rename (renameat2 RENAME_EXCHANGE; where
 * the file system lacks it, NAME is moved to NAME.old first and loading
 * falls back to NAME.old). A crash at any point leaves either the old or
 * the new checkpoint whole, plus maybe a temp directory that is ignored
 * and cleaned by the next save.
 *
 * optim.bin: "LMADAMW1", u64 n, i64 step, f32 m[n], f32 v[n] (little-endian
 * host order; checked by size on load). */
#ifndef LM_TRAIN_CHECKPOINT_H
#define LM_TRAIN_CHECKPOINT_H

#include "base/err.h"
#include "train/adamw.h"
#include "train/lora.h"
#include "train/train_config.h"
#include "train/train_model.h"

typedef struct lm_ckpt_state {
    long step;              /* optimizer steps done */
    long micro;             /* micro-batches taken from the train batcher */
    long tokens;            /* real (non-padding) tokens trained on */
    double seconds;         /* training wall time so far */
    double smooth;          /* smoothed train loss (display only) */
    double best_val;        /* < 0: no validation loss yet */
    long best_step;
    long metrics_bytes;     /* metrics.jsonl size when this was saved */
} lm_ckpt_state;

/* Writes RUN_DIR/NAME atomically. lora NULL: a full run (model saved). */
int lm_ckpt_save(const char *run_dir, const char *name, const lm_train_cfg *cfg,
                 const lm_ckpt_state *st, const lm_tmodel *m, const lm_lora *lora,
                 const lm_adamw *opt, lm_err *err);
/* Finds RUN_DIR/NAME (or NAME.old): writes its path into dir[cap]. */
int lm_ckpt_find(const char *run_dir, const char *name, char *dir, size_t cap, lm_err *err);
/* Reads state.json of a checkpoint directory. */
int lm_ckpt_load_state(const char *dir, lm_train_cfg *cfg, lm_ckpt_state *st, lm_err *err);
/* The same from state.json's text (len bytes; path names it in messages). */
int lm_ckpt_parse_state(const char *path, const char *text, size_t len, lm_train_cfg *cfg,
                        lm_ckpt_state *st, lm_err *err);
/* Loads weights into m (full: model.gguf replaces m's params; LoRA: *lora
 * gets the adapter, freed by the caller). */
int lm_ckpt_load_weights(const char *dir, int full, lm_tmodel *m, lm_lora **lora, lm_err *err);
/* Loads the optimizer moments and step into opt (sized for the run). */
int lm_ckpt_load_optim(const char *dir, lm_adamw *opt, lm_err *err);
/* The same from optim.bin's bytes (path names it in messages). */
int lm_ckpt_parse_optim(const char *path, const void *bytes, size_t len, lm_adamw *opt, lm_err *err);

#endif
