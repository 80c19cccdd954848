#include "train/sft.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/pool.h"
#include "gguf/gguf.h"
#include "tensor/ops.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/dpo.h"
#include "train/lora.h"
#include "train/loop.h"

/* One optimizer step's micro-batches, copied out of the batcher (whose
 * arrays are reused by the next call) because loss_norm needs the trained
 * count of all of them before the first backward. */
typedef struct {
    int B, T;               /* this micro-batch's shape (cut to its longest row) */
    int32_t *tokens, *targets, *segments, *pos;
    uint8_t *mask;
} slot;

/* What a run holds from its set-up to its end; run_free releases it
 * whatever step stopped. */
typedef struct {
    const lm_train_cfg *cfg;
    const lm_sft_ctl *ctl;
    lm_tmodel *m;
    lm_lora *lora;          /* NULL in a full fine-tune */
    lm_tacts *acts;
    lm_pool *pool;
    lm_batcher_opts bo;
    lm_batcher *train, *val;
    int val_batches;
    slot *slots;            /* [grad_accum] */
    long total, warm;       /* optimizer steps of the whole run, of them warm-up */
    lm_loop R;              /* run directory, optimizer, metrics, checkpoints */
} sft_run;

/* One optimizer step's outcome, for its log line and checkpoints. */
typedef struct {
    int epoch;              /* of its micro-batches (0-based) */
    bool epoch_end;         /* its last micro-batch ended an epoch */
    long trained, tokens;   /* trained positions, real tokens */
    double loss, gnorm;
    float lr;
} step_out;

static void run_free(sft_run *S) {
    if (S->slots)
        for (int i = 0; i < S->cfg->grad_accum; i++) {
            free(S->slots[i].tokens);
            free(S->slots[i].targets);
            free(S->slots[i].segments);
            free(S->slots[i].pos);
            free(S->slots[i].mask);
        }
    free(S->slots);
    lm_batcher_free(S->train);
    lm_batcher_free(S->val);
    lm_tacts_free(S->acts);
    lm_lora_free(S->lora);
    lm_pool_free(S->pool);
}

/* Mean loss over every trained position of the validation set. */
static int val_loss(sft_run *S, double *out, lm_err *err) {
    double sum = 0;
    long n = 0;
    for (int i = 0; i < S->val_batches; i++) {
        lm_batch b;
        if (lm_batcher_next(S->val, &b, err)) return -1;
        if (!b.n_trained) continue;
        lm_tbatch tb = {.B = b.B, .T = b.T, .tokens = b.tokens, .targets = b.targets,
                        .mask = b.loss_mask, .segments = b.segments, .pos = b.pos};
        double l;
        if (lm_train_forward(S->m, S->lora, S->acts, &tb, S->pool, err) ||
            lm_train_loss(S->m, S->acts, &tb, S->pool, 0, NULL, &l, err))
            return lm_err_prefix(err, "validation");
        sum += l * (double)b.n_trained;
        n += b.n_trained;
    }
    *out = n ? sum / (double)n : 0.0;
    return 0;
}

/* Steps in the whole run, found by replaying the batcher (with packing the
 * batches per epoch depend on each epoch's order). */
static long count_steps(const lm_sft_dataset *ds, const lm_batcher_opts *bo, int epochs, int ga,
                        long *micro_total, lm_err *err) {
    lm_batcher *b = lm_batcher_new(ds, bo, err);
    if (!b) return -1;
    long steps = 0, micro = 0;
    for (int e = 0; e < epochs; e++) {
        int k = 0;
        lm_batch x;
        do {
            if (lm_batcher_next(b, &x, err)) { lm_batcher_free(b); return -1; }
            k++;
        } while (!x.epoch_end);
        steps += (k + ga - 1) / ga;
        micro += k;
    }
    lm_batcher_free(b);
    *micro_total = micro;
    return steps;
}

/* The batchers, the training one replayed to where the checkpoint left
 * it (a fresh run: the start), and the micro-batch slots. */
static int open_batchers(sft_run *S, const lm_sft_dataset *train, const lm_sft_dataset *val,
                         lm_err *err) {
    if (!(S->train = lm_batcher_new(train, &S->bo, err))) return -1;
    if (val && val->n) {
        lm_batcher_opts vo = S->bo;
        vo.shuffle = false;
        vo.pack = false;
        if (!(S->val = lm_batcher_new(val, &vo, err))) return lm_err_prefix(err, "validation data");
        S->val_batches = lm_batcher_batches_per_epoch(S->val);
    }
    for (long i = 0; i < S->R.st.micro; i++) {
        lm_batch x;
        if (lm_batcher_next(S->train, &x, err)) return -1;
    }
    const int GA = S->cfg->grad_accum;
    if (!(S->slots = calloc((size_t)GA, sizeof *S->slots))) return lm_errf(err, "out of memory");
    size_t bt = (size_t)S->cfg->batch * (size_t)S->cfg->seq;
    for (int i = 0; i < GA; i++) {
        slot *x = &S->slots[i];
        x->tokens = malloc(bt * sizeof(int32_t));
        x->targets = malloc(bt * sizeof(int32_t));
        x->segments = malloc(bt * sizeof(int32_t));
        x->pos = malloc(bt * sizeof(int32_t));
        x->mask = malloc(bt);
        if (!x->tokens || !x->targets || !x->segments || !x->pos || !x->mask)
            return lm_errf(err, "out of memory");
    }
    return 0;
}

/* Set-up or resume: the run directory, the plan (steps, warm-up), the
 * weights and optimizer (fresh, or last/'s on --resume), activations and
 * batchers at the run's position. */
static int setup(sft_run *S, const lm_sft_dataset *train, const lm_sft_dataset *val,
                 lm_err *err) {
    const lm_train_cfg *cfg = S->cfg;
    if (lm_loop_open(&S->R, cfg, S->ctl, err)) return -1;
    /* Batches cut to their longest row: short conversations cost their
     * length, not --seq (dropout_T in step() keeps the masks of full rows). */
    S->bo = (lm_batcher_opts){.B = cfg->batch, .T = cfg->seq, .seed = cfg->seed, .shuffle = true,
                              .pack = cfg->pack != 0, .trim = !S->ctl->full_rows};
    long micro_total;
    S->total = count_steps(train, &S->bo, cfg->epochs, cfg->grad_accum, &micro_total, err);
    if (S->total < 0) return lm_err_prefix(err, "train data");
    S->warm = lm_train_cfg_warmup_steps(cfg, S->total);

    if (!(S->pool = lm_pool_new(cfg->threads, err))) return -1;
    if (cfg->full) {
        if (!S->m->grads && lm_tmodel_alloc_grads(S->m, err)) return -1;
    } else if (!S->ctl->resume) {
        S->lora = lm_lora_new(S->m, cfg->lora_rank, cfg->lora_alpha, cfg->lora_targets, cfg->seed,
                              err);
        if (!S->lora) return -1;
    }
    if (lm_loop_start(&S->R, S->m, &S->lora, err)) return -1;
    S->acts = lm_tacts_new(S->m, S->lora, cfg->batch, cfg->seq, 0, err);
    if (!S->acts ||
        lm_tacts_set_precision(S->acts, cfg->bf16 ? LM_TPREC_BF16 : LM_TPREC_F32, err))
        return -1;
    return open_batchers(S, train, val, err);
}

/* The next step's micro-batches into the slots: grad_accum of them, fewer
 * where the epoch ends. *k: how many. */
static int gather(sft_run *S, step_out *o, int *k, lm_err *err) {
    *k = 0;
    while (*k < S->cfg->grad_accum && !o->epoch_end) {
        lm_batch x;
        if (lm_batcher_next(S->train, &x, err)) return -1;
        slot *sl = &S->slots[*k];
        size_t xt = (size_t)x.B * (size_t)x.T;
        sl->B = x.B;
        sl->T = x.T;
        memcpy(sl->tokens, x.tokens, xt * sizeof(int32_t));
        memcpy(sl->targets, x.targets, xt * sizeof(int32_t));
        memcpy(sl->segments, x.segments, xt * sizeof(int32_t));
        memcpy(sl->pos, x.pos, xt * sizeof(int32_t));
        memcpy(sl->mask, x.loss_mask, xt);
        o->trained += x.n_trained;
        for (int r = 0; r < x.n_rows; r++) o->tokens += x.lengths[r];
        o->epoch = x.epoch;
        o->epoch_end = x.epoch_end;
        (*k)++;
        S->R.st.micro++;
    }
    return 0;
}

/* One optimizer step: its micro-batches' gradients accumulated, then one
 * AdamW update at the schedule's learning rate. */
static int step(sft_run *S, step_out *o, lm_err *err) {
    const lm_train_cfg *cfg = S->cfg;
    lm_loop *R = &S->R;
    memset(o, 0, sizeof *o);
    lm_loop_step_start(R);
    int k;
    if (gather(S, o, &k, err)) return -1;
    memset(R->grads, 0, R->n_params * sizeof(float));
    for (int i = 0; i < k && o->trained; i++) {
        slot *sl = &S->slots[i];
        lm_tbatch b = {.B = sl->B, .T = sl->T, .tokens = sl->tokens, .targets = sl->targets,
                       .mask = sl->mask, .segments = sl->segments, .pos = sl->pos,
                       .loss_norm = o->trained, .dropout_T = cfg->seq};
        if (!cfg->full) {   /* masks keyed by (seed, step, micro): same on --resume */
            b.lora_dropout = cfg->lora_dropout;
            b.dropout_key = lm_lora_dropout_key(cfg->seed, (uint64_t)R->st.step, (uint64_t)i);
        }
        double li;
        if (lm_train_grad(S->m, S->lora, S->acts, &b, S->pool, &li, err))
            return lm_err_prefix(err, "step %ld", R->st.step + 1);
        o->loss += li;
    }
    o->lr = lm_lr_at(cfg->schedule, cfg->lr, R->st.step, S->warm, S->total);
    return lm_loop_optimize(R, S->pool, o->lr, &o->gnorm, err);
}

/* Log and checkpoint the step just taken: the validation loss at
 * evaluation points, the metrics line, best/ and last/, the progress
 * line. *stop: ctl asked to stop here. */
static int record(sft_run *S, const step_out *o, lm_sft_report *rep, bool *stop, lm_err *err) {
    lm_loop *R = &S->R;
    double vl = -1;
    if (lm_loop_count(R, o->tokens, o->loss, o->epoch_end) && S->val && val_loss(S, &vl, err))
        return -1;
    lm_loop_line line = {.epoch = o->epoch, .loss = o->loss, .gnorm = o->gnorm, .lr = o->lr,
                         .tokens = o->tokens, .extra = "", .val_loss = vl, .val_extra = ""};
    if (lm_loop_record(R, S->m, S->lora, &line, stop, err)) return -1;

    char extra[160];
    snprintf(extra, sizeof extra, "step %ld/%ld  epoch %d/%d  loss %.4f  lr %.2e  %.0f tok/s",
             R->st.step, S->total, o->epoch + 1, S->cfg->epochs, R->smooth, (double)o->lr, R->tps);
    if (vl >= 0) {
        size_t n = strlen(extra);
        snprintf(extra + n, sizeof extra - n, "  val %.4f", vl);
    }
    lm_loop_progress(R, extra);
    rep->last_loss = o->loss;
    return 0;
}

int lm_sft_train(const lm_train_cfg *cfg, lm_tmodel *m, const lm_sft_dataset *train,
                 const lm_sft_dataset *val, const lm_sft_ctl *ctl, lm_sft_report *rep, lm_err *err) {
    memset(rep, 0, sizeof *rep);
    rep->best_val = -1.0;
    sft_run S = {.cfg = cfg, .ctl = ctl, .m = m};
    int rc = setup(&S, train, val, err);
    if (!rc) {
        lm_loop_begin(&S.R, "train", S.total);
        while (S.R.st.step < S.total) {
            step_out o;
            bool stop;
            if (step(&S, &o, err) || record(&S, &o, rep, &stop, err)) { rc = -1; break; }
            if (stop) { rep->stopped = 1; break; }
        }
    }
    /* one exit for every outcome: after a set-up that failed before
     * lm_loop_start it finds nothing to close and reports the empty state */
    rc = lm_loop_finish(&S.R, rc, rep, err);
    run_free(&S);
    return rc;
}

/* ---- from files ----------------------------------------------------------- */

int lm_sft_run(lm_train_cfg *cfg, const lm_sft_ctl *ctl, lm_sft_report *rep,
               void (*info)(void *ctx, const char *line), void *info_ctx, lm_err *err) {
    if (ctl->resume) {
        char dir[LM_TCFG_PATH + 64];
        lm_train_cfg saved;
        lm_ckpt_state st;
        if (lm_ckpt_find(cfg->out, "last", dir, sizeof dir, err) ||
            lm_ckpt_load_state(dir, &saved, &st, err))
            return lm_err_prefix(err, "--resume");
        int threads = cfg->threads;
        char out[LM_TCFG_PATH];
        memcpy(out, cfg->out, sizeof out);
        *cfg = saved;
        memcpy(cfg->out, out, sizeof out);   /* the run may have been moved */
        if (threads) cfg->threads = threads;
        lm_loop_note(info, info_ctx, "resuming %s at step %ld", cfg->out, st.step);
    }
    if (lm_train_cfg_finish(cfg, err)) return -1;
    if (lm_tprec_check(cfg->bf16 ? LM_TPREC_BF16 : LM_TPREC_F32, err)) return -1;
    lm_loop_note(info, info_ctx, "kernels: %s, matmuls in %s (LEMONPC_KERNELS=avx512|avx2|scalar "
                 "forces a set)", lm_kernels_name(), cfg->bf16 ? "bf16 (f32 sums)" : "f32");
    gguf_file *f = gguf_open(cfg->model, err);
    if (!f) return -1;
    lm_tokenizer *tok = lm_tokenizer_load(f, err);
    lm_tmodel *m = tok ? lm_tmodel_from_gguf(f, err) : NULL;
    gguf_close(f);
    lm_sft_dataset *all = NULL, *tr = NULL, *va = NULL;
    int rc = -1;
    if (!m) goto done;
    if (cfg->dpo[0]) {
        rc = lm_dpo_run(cfg, ctl, m, tok, rep, info, info_ctx, err);
        goto done;
    }
    lm_sft_opts so = lm_sft_opts_default();
    lm_loop_bad_lines bad = {info, info_ctx, 0};
    so.warn = lm_loop_bad_line;
    so.warn_ctx = &bad;
    if (lm_sft_dataset_load(cfg->data, tok, &so, &all, err)) goto done;
    if (cfg->val[0]) {
        tr = all;
        all = NULL;
        if (lm_sft_dataset_load(cfg->val, tok, &so, &va, err)) goto done;
    } else if (cfg->val_frac > 0) {
        if (lm_sft_split(all, cfg->val_frac, cfg->seed, &tr, &va, err)) goto done;
    } else {
        tr = all;
        all = NULL;
    }
    lm_sft_dataset_fit(tr, cfg->seq, LM_SFT_TRUNCATE);
    if (va) lm_sft_dataset_fit(va, cfg->seq, LM_SFT_TRUNCATE);
    if (tr->n == 0) { lm_errf(err, "%s: no conversation left to train on", cfg->data); goto done; }
    char bad_note[96];
    lm_loop_bad_lines_note(&bad, bad_note, sizeof bad_note);
    lm_loop_note(info, info_ctx, "train: %d conversations, %ld tokens (%ld trained, %ld truncated)%s",
         tr->n, tr->stats.tokens, tr->stats.trained_tokens, tr->stats.truncated, bad_note);
    if (va) lm_loop_note(info, info_ctx, "validation: %d conversations, %ld tokens", va->n, va->stats.tokens);
    else lm_loop_note(info, info_ctx, "validation: none (give --val or --val-frac for a best checkpoint)");
    rc = lm_sft_train(cfg, m, tr, va, ctl, rep, err);
done:
    lm_sft_dataset_free(all);
    lm_sft_dataset_free(tr);
    lm_sft_dataset_free(va);
    lm_tmodel_free(m);
    lm_tokenizer_free(tok);
    return rc;
}
