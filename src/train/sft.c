#include "train/sft.h"

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

typedef struct {
    const lm_train_cfg *cfg;
    lm_tmodel *m;
    lm_lora *lora;
    lm_tacts *acts;
    lm_pool *pool;
    lm_batcher *val;
    int val_batches;
} loop;

/* Mean loss over every trained position of the validation set. */
static int val_loss(loop *L, double *out, lm_err *err) {
    double sum = 0;
    long n = 0;
    for (int i = 0; i < L->val_batches; i++) {
        lm_batch b;
        if (lm_batcher_next(L->val, &b, err)) return -1;
        if (!b.n_trained) continue;
        lm_tbatch tb = {.B = b.B, .T = b.T, .tokens = b.tokens, .targets = b.targets,
                        .mask = b.loss_mask, .segments = b.segments, .pos = b.pos};
        double l;
        if (lm_train_forward(L->m, L->lora, L->acts, &tb, L->pool, err) ||
            lm_train_loss(L->m, L->acts, &tb, L->pool, 0, NULL, &l, err))
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

int lm_sft_train(const lm_train_cfg *cfg, lm_tmodel *m, const lm_sft_dataset *train,
                 const lm_sft_dataset *val, const lm_sft_ctl *ctl, lm_sft_report *rep, lm_err *err) {
    const int B = cfg->batch, T = cfg->seq, GA = cfg->grad_accum;
    loop L = {.cfg = cfg, .m = m};
    lm_loop R;
    lm_batcher *tb = NULL;
    slot *slots = NULL;
    int rc = -1;
    memset(rep, 0, sizeof *rep);
    rep->best_val = -1.0;

    if (lm_loop_open(&R, cfg, ctl, err)) return -1;
    /* Batches cut to their longest row: short conversations cost their
     * length, not --seq (dropout_T below keeps the masks of full rows). */
    lm_batcher_opts bo = {.B = B, .T = T, .seed = cfg->seed, .shuffle = true, .pack = cfg->pack != 0,
                          .trim = !ctl->full_rows};
    long micro_total;
    long total = count_steps(train, &bo, cfg->epochs, GA, &micro_total, err);
    if (total < 0) return lm_err_prefix(err, "train data");
    long warm = lm_train_cfg_warmup_steps(cfg, total);

    L.pool = lm_pool_new(cfg->threads, err);
    if (!L.pool) return -1;
    if (cfg->full) {
        if (!m->grads && lm_tmodel_alloc_grads(m, err)) goto done;
    } else if (!ctl->resume) {
        L.lora = lm_lora_new(m, cfg->lora_rank, cfg->lora_alpha, cfg->lora_targets, cfg->seed, err);
        if (!L.lora) goto done;
    }
    if (lm_loop_start(&R, m, &L.lora, err)) goto done;

    L.acts = lm_tacts_new(m, L.lora, B, T, 0, err);
    if (!L.acts || lm_tacts_set_precision(L.acts, cfg->bf16 ? LM_TPREC_BF16 : LM_TPREC_F32, err)) goto done;
    tb = lm_batcher_new(train, &bo, err);
    if (!tb) goto done;
    if (val && val->n) {
        lm_batcher_opts vo = bo;
        vo.shuffle = false;
        vo.pack = false;
        L.val = lm_batcher_new(val, &vo, err);
        if (!L.val) { lm_err_prefix(err, "validation data"); goto done; }
        L.val_batches = lm_batcher_batches_per_epoch(L.val);
    }
    /* Replay the batcher to where the checkpoint left it. */
    for (long i = 0; i < R.st.micro; i++) {
        lm_batch x;
        if (lm_batcher_next(tb, &x, err)) goto done;
    }

    slots = calloc((size_t)GA, sizeof *slots);
    if (!slots) { lm_errf(err, "out of memory"); goto done; }
    size_t bt = (size_t)B * (size_t)T;
    for (int i = 0; i < GA; i++) {
        slots[i].tokens = malloc(bt * sizeof(int32_t));
        slots[i].targets = malloc(bt * sizeof(int32_t));
        slots[i].segments = malloc(bt * sizeof(int32_t));
        slots[i].pos = malloc(bt * sizeof(int32_t));
        slots[i].mask = malloc(bt);
        if (!slots[i].tokens || !slots[i].targets || !slots[i].segments || !slots[i].pos || !slots[i].mask) {
            lm_errf(err, "out of memory");
            goto done;
        }
    }

    lm_loop_begin(&R, "train", total);
    while (R.st.step < total) {
        lm_loop_step_start(&R);
        int k = 0, epoch = 0, epoch_end = 0;
        long trained = 0, ntok = 0;
        while (k < GA && !epoch_end) {
            lm_batch x;
            if (lm_batcher_next(tb, &x, err)) goto done;
            size_t xt = (size_t)x.B * (size_t)x.T;
            slots[k].B = x.B;
            slots[k].T = x.T;
            memcpy(slots[k].tokens, x.tokens, xt * sizeof(int32_t));
            memcpy(slots[k].targets, x.targets, xt * sizeof(int32_t));
            memcpy(slots[k].segments, x.segments, xt * sizeof(int32_t));
            memcpy(slots[k].pos, x.pos, xt * sizeof(int32_t));
            memcpy(slots[k].mask, x.loss_mask, xt);
            trained += x.n_trained;
            for (int r = 0; r < x.n_rows; r++) ntok += x.lengths[r];
            epoch = x.epoch;
            epoch_end = x.epoch_end;
            k++;
            R.st.micro++;
        }
        memset(R.grads, 0, R.n_params * sizeof(float));
        double loss = 0;
        for (int i = 0; i < k && trained; i++) {
            lm_tbatch b = {.B = slots[i].B, .T = slots[i].T, .tokens = slots[i].tokens,
                           .targets = slots[i].targets, .mask = slots[i].mask,
                           .segments = slots[i].segments, .pos = slots[i].pos, .loss_norm = trained,
                           .dropout_T = T};
            if (!cfg->full) {   /* masks keyed by (seed, step, micro): same on --resume */
                b.lora_dropout = cfg->lora_dropout;
                b.dropout_key = lm_lora_dropout_key(cfg->seed, (uint64_t)R.st.step, (uint64_t)i);
            }
            double li;
            if (lm_train_grad(m, L.lora, L.acts, &b, L.pool, &li, err)) {
                lm_err_prefix(err, "step %ld", R.st.step + 1);
                goto done;
            }
            loss += li;
        }
        float lr = lm_lr_at(cfg->schedule, cfg->lr, R.st.step, warm, total);
        double gnorm;
        if (lm_loop_optimize(&R, L.pool, lr, &gnorm, err)) goto done;
        double vl = -1;
        if (lm_loop_count(&R, ntok, loss, epoch_end) && L.val && val_loss(&L, &vl, err)) goto done;
        lm_loop_line line = {.epoch = epoch, .loss = loss, .gnorm = gnorm, .lr = lr, .tokens = ntok,
                             .extra = "", .val_loss = vl, .val_extra = ""};
        bool stop;
        if (lm_loop_record(&R, m, L.lora, &line, &stop, err)) goto done;

        char extra[160];
        snprintf(extra, sizeof extra, "step %ld/%ld  epoch %d/%d  loss %.4f  lr %.2e  %.0f tok/s",
                 R.st.step, total, epoch + 1, cfg->epochs, R.smooth, (double)lr, R.tps);
        if (vl >= 0) {
            size_t n = strlen(extra);
            snprintf(extra + n, sizeof extra - n, "  val %.4f", vl);
        }
        lm_loop_progress(&R, extra);
        rep->last_loss = loss;
        if (stop) { rep->stopped = 1; break; }
    }
    rc = 0;
done:
    rc = lm_loop_finish(&R, rc, rep, err);
    if (slots)
        for (int i = 0; i < GA; i++) {
            free(slots[i].tokens);
            free(slots[i].targets);
            free(slots[i].segments);
            free(slots[i].pos);
            free(slots[i].mask);
        }
    free(slots);
    lm_batcher_free(tb);
    lm_batcher_free(L.val);
    lm_tacts_free(L.acts);
    lm_lora_free(L.lora);
    lm_pool_free(L.pool);
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
