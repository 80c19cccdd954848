/* Direct Preference Optimization (Rafailov et al. 2023) in the C trainer:
 * preference pairs, the DPO loss and its gradient through the SFT backward
 * pass, and the training loop (`lemonpc train --dpo PAIRS.jsonl`).
 *
 * ---- Pairs -----------------------------------------------------------------
 * TRL's preference format, one pair per line (other fields ignored):
 *   {"prompt": [{"role": "system|user|assistant", "content": "..."}, ...],
 *    "chosen": [{"role": "assistant", "content": "..."}],
 *    "rejected": [{"role": "assistant", "content": "..."}]}
 * Plain strings are accepted too: a string prompt is one user message, a
 * string chosen/rejected one assistant message ("prompt": "Who are you?",
 * "chosen": "Brann, smith of Oakvale.", ...), and the forms may be mixed.
 * Without "prompt" (TRL's implicit prompt), chosen and rejected are whole
 * conversations and the prompt is their longest common run of messages.
 * A completion holds one or more messages, all assistant ones. Each side is
 * rendered exactly as SFT renders it (data.h: the model's chat template,
 * SmolLM2's default system turn when the prompt has no system message):
 *   tokens = render(prompt + completion), mask = 1 on the completion's
 *   content tokens and the <|im_end|> closing each of its messages, 0 on
 *   the prompt (its assistant turns too), headers and the "\n" after turns.
 * So both sides start with the same prompt tokens (n_prompt, checked).
 * A pair whose chosen and rejected are the same text is a bad line. Bad
 * lines are skipped or fail the load as for SFT (lm_sft_opts: strict,
 * max_skipped, warn), each message naming "file:line: field: problem".
 *
 * ---- Loss ------------------------------------------------------------------
 * With log pi(y) the sum of the completion tokens' log-probabilities under
 * the policy (sigmoid, ipo) or their mean (sigmoid-norm, ipo: as TRL's
 * IPO), and ref the same under the reference model,
 *   h        = (log pi(c) - ref(c)) - (log pi(r) - ref(r))
 *   sigmoid  : loss = -log sigmoid(beta h)       (the paper's formula)
 *   ipo      : loss = (h - 1 / (2 beta))^2        (Azar et al. 2023)
 *   rewards  : beta (log pi(c) - ref(c)), beta (log pi(r) - ref(r)),
 *              accuracy = [reward_c > reward_r], margin = reward_c - reward_r
 * (TRL's rewards/chosen, rewards/rejected, rewards/accuracies,
 * rewards/margins). With nll = a > 0 (dpo-nll; RPO, Pang et al. 2024,
 * TRL's rpo_alpha) each pair's loss also gets a * (-log pi(c) / |c|), the
 * chosen reply's mean negative log-likelihood per token: pure DPO can lower
 * the chosen reply's likelihood as long as the rejected one falls faster,
 * and a small model then drifts into lists and loops; the NLL term holds
 * the chosen replies where they are. A step's loss is the mean over its
 * pairs.
 *
 * Gradient: d log p(target) / d logits = onehot - softmax, so the loss's
 * gradient on a completion position's logits is the SFT cross-entropy's,
 * (softmax - onehot), times w = -dloss/dlog pi(side) / pairs-in-step (/ the
 * side's completion length for the mean variants): for sigmoid
 * w = +-beta sigmoid(-beta h) / P, + on chosen, - on rejected (the NLL
 * term adds a / (|c| P) on chosen). The trainer
 * passes w as lm_tbatch.weight to the SFT loss and backward (train_model.h),
 * after a forward-only pass for the log-likelihoods.
 *
 * ---- Reference and policy -----------------------------------------------------
 * The reference is the model the run starts from: the base, plus the SFT
 * adapter given as `adapter`. The policy continues that adapter (LoRA runs:
 * the adapter itself is trained further, so the result is again one
 * adapter on the base; without `adapter` a new one, whose B = 0 makes it
 * equal to the base at step 0), or with `full` trains all weights (the
 * adapter merged in first). Since the policy at step 0 *is* the reference,
 * the reference log-likelihoods are those of the starting weights, computed
 * once before the first step for every train and validation pair (without
 * LoRA dropout), kept in memory and in RUN_DIR/ref_logps.bin, so --resume
 * reads them back (the file is keyed by the pairs' tokens and the starting
 * weights; a mismatch on resume is an error, on a fresh run a recompute).
 * No second model is held. At step 0 the margin is exactly 0 and the loss
 * log 2 (without dropout).
 *
 * ---- Batches -----------------------------------------------------------------
 * A micro-batch holds up to `batch` pairs as 2 * batch rows of `seq`
 * tokens: chosen sequences in rows [0, B), the rejected ones of the same
 * pairs in rows [B, 2B), right-padded, one sequence per row (no packing).
 * Rows are cut to the micro-batch's longest side (and the empty rejected
 * rows of a last, partial micro-batch dropped), so a step costs the
 * positions its pairs have, not 2 * batch * seq.
 * Pairs are shuffled per epoch from (seed, epoch); an optimizer step takes
 * grad_accum micro-batches, fewer at an epoch's end, as in SFT. Sequences
 * longer than seq are cut to their first seq tokens; a pair left with no
 * completion token on either side is dropped. */
#ifndef LM_TRAIN_DPO_H
#define LM_TRAIN_DPO_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "base/pool.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"
#include "train/lora.h"
#include "train/sft.h"
#include "train/train_config.h"
#include "train/train_model.h"

enum { LM_DPO_CHOSEN = 0, LM_DPO_REJECTED = 1 };

typedef struct lm_dpo_pair {
    lm_sft_example seq[2];  /* [LM_DPO_CHOSEN], [LM_DPO_REJECTED]: prompt + completion */
    int n_prompt;           /* leading tokens shared by both (the rendered prompt) */
    int line;               /* 1-based line in the source */
    uint64_t hash;          /* of prompt, chosen and rejected: the split key */
} lm_dpo_pair;

typedef struct lm_dpo_stats {
    long pairs;             /* kept pairs */
    long tokens;            /* both sides, after truncation */
    long trained_tokens;    /* completion tokens scored, both sides */
    long truncated;         /* pairs with a side cut to max_len */
    long dropped;           /* too long (LM_SFT_DROP) or no completion token left */
    long skipped;           /* bad lines */
    int longest;            /* tokens of the longest side before truncation */
} lm_dpo_stats;

typedef struct lm_dpo_set {
    lm_dpo_pair *p;         /* [n], owned */
    int n;
    int32_t pad_id;
    lm_dpo_stats stats;
} lm_dpo_set;

/* opts: max_len/overlong as lm_dpo_fit, strict, max_skipped, warn. */
int lm_dpo_load(const char *path, const lm_tokenizer *t, const lm_sft_opts *opts,
                lm_dpo_set **out, lm_err *err);
int lm_dpo_load_mem(const char *name, const char *buf, size_t len, const lm_tokenizer *t,
                    const lm_sft_opts *opts, lm_dpo_set **out, lm_err *err);
void lm_dpo_set_free(lm_dpo_set *s);
/* Both sides to at most max_len tokens (LM_SFT_TRUNCATE: keep the first
 * max_len; LM_SFT_DROP: drop the pair); pairs left without a completion
 * token on a side are dropped. Updates the stats. */
void lm_dpo_fit(lm_dpo_set *s, int max_len, int policy);
/* Seeded split by pair content, as lm_sft_split (each side gets at least
 * one pair when val_frac > 0 and there are two). Deep copies. */
int lm_dpo_split(const lm_dpo_set *s, double val_frac, uint64_t seed, lm_dpo_set **train,
                 lm_dpo_set **val, lm_err *err);

/* ---- loss ------------------------------------------------------------------ */

typedef struct lm_dpo_terms {
    double loss;
    double reward_c, reward_r;  /* beta (log pi - ref) of chosen, rejected */
    double dc, dr;              /* d loss / d (summed log-likelihood) of chosen, rejected */
} lm_dpo_terms;

/* One pair from the summed completion log-likelihoods of the policy (pc,
 * pr) and the reference (rc, rr) over nc, nr completion tokens; nll the
 * weight of the chosen reply's NLL term (0: plain DPO). */
void lm_dpo_pair_terms(lm_dpo_kind kind, double beta, double nll, double pc, double pr, double rc,
                       double rr, int nc, int nr, lm_dpo_terms *t);

/* Sums over pairs, for metrics (divide by pairs). */
typedef struct lm_dpo_sums {
    double loss, reward_c, reward_r, correct, margin, logp_c, logp_r;
    long pairs, tokens;         /* tokens: real (non-padding) tokens of both sides */
} lm_dpo_sums;

/* ---- batches ---------------------------------------------------------------- */

typedef struct lm_dpo_batch {
    int B, T;                   /* capacity: pairs per batch; 2B rows of at most T */
    bool full_rows;             /* lay out rows of T, not of the longest side (tests, benches) */
    int n_pairs;                /* pairs present: rows k and B + k for k < n_pairs */
    int span;                   /* positions per row of this batch: lm_batch_span of its
                                 * longest side (T with full_rows) */
    int rows;                   /* rows computed: B + n_pairs (the rest are empty; 2B
                                 * with full_rows) */
    int32_t *tokens, *targets;  /* [2B * span] */
    uint8_t *mask;              /* [2B * span] completion positions (as targets) */
    float *weight;              /* [2B * span] filled by lm_dpo_grad */
    double *ref;                /* [2B] reference log-likelihood sums per row */
    int *len;                   /* [2B] completion tokens per row */
    long ntok;                  /* real tokens */
} lm_dpo_batch;

int lm_dpo_batch_init(lm_dpo_batch *b, int B, int T, lm_err *err);
void lm_dpo_batch_free(lm_dpo_batch *b);
/* Lays out pairs s->p[idx[0..n)) (n <= B; every side at most T tokens)
 * with their reference log-likelihoods ref[2 * pair + side] (NULL: 0), in
 * rows cut to the longest side: padding is inert (no real position attends
 * to it, the loss never counts it), so the cut changes no result, only the
 * cost. */
void lm_dpo_batch_fill(lm_dpo_batch *b, const lm_dpo_set *s, const int *idx, int n,
                       const double *ref);
/* The batch as the trainer's lm_tbatch: b->rows rows of b->span, LoRA
 * dropout keyed by rows of T (the masks of the full layout). */
lm_tbatch lm_dpo_tbatch(const lm_dpo_batch *b);

/* Forward only: out[2B] the summed completion log-likelihood of each row
 * (rows past b->rows are not written; a acts for 2B x T; lora may be NULL;
 * no dropout). */
int lm_dpo_logps(const lm_tmodel *m, const lm_lora *lora, lm_tacts *a, const lm_dpo_batch *b,
                 lm_pool *pool, double *out, lm_err *err);

/* One micro-batch of a training step: forward (LoRA dropout p with key, as
 * in SFT), the pairs' log-likelihoods and DPO terms against b->ref, the
 * weights, then the SFT loss gradient and backward with them. Gradients
 * accumulate into m->grads / lora->grads (zero them per step); the loss
 * is the mean over step_pairs pairs (all micro-batches of the step). Adds
 * this batch's pairs to *sums (may be NULL); logp (may be NULL) gets the
 * rows' log-likelihoods [2B]. */
int lm_dpo_grad(lm_tmodel *m, lm_lora *lora, lm_tacts *a, lm_dpo_batch *b, lm_pool *pool,
                lm_dpo_kind kind, double beta, double nll, long step_pairs, float lora_dropout,
                uint64_t dropout_key, lm_dpo_sums *sums, double *logp, lm_err *err);

/* ---- the loop ----------------------------------------------------------------- */

/* A DPO run, as lm_sft_train for SFT (checkpoints, --resume, stop_after,
 * interrupt, progress, RUN_DIR/metrics.jsonl with the DPO metrics,
 * loss.svg). m: the base model, with init (may be NULL) the adapter the
 * run starts from (not taken over; merged into m for a full run). The
 * best checkpoint is the one with the lowest validation DPO loss. */
int lm_dpo_train(const lm_train_cfg *cfg, lm_tmodel *m, const lm_lora *init,
                 const lm_dpo_set *train, const lm_dpo_set *val, const lm_sft_ctl *ctl,
                 lm_sft_report *rep, void (*info)(void *ctx, const char *line), void *info_ctx,
                 lm_err *err);

/* From files, after lm_sft_run has settled cfg (resume) and loaded the
 * model and tokenizer: pairs from cfg->dpo (+ cfg->val or a split), the
 * adapter from cfg->adapter. */
int lm_dpo_run(lm_train_cfg *cfg, const lm_sft_ctl *ctl, lm_tmodel *m, const lm_tokenizer *tok,
               lm_sft_report *rep, void (*info)(void *ctx, const char *line), void *info_ctx,
               lm_err *err);

#endif
