/* The run directory and step bookkeeping shared by SFT and DPO (loop.h). */
#include "train/loop.h"
#include "base/fileio.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"

#define EMA_BETA 0.9   /* smoothing of the displayed loss */

void lm_loop_note(void (*info)(void *, const char *), void *ctx, const char *fmt, ...) {
    if (!info) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    info(ctx, buf);
}

int lm_loop_open(lm_loop *L, const lm_train_cfg *cfg, const lm_sft_ctl *ctl, lm_err *err) {
    memset(L, 0, sizeof *L);
    L->cfg = cfg;
    L->ctl = ctl;
    L->st.best_val = -1.0;
    if (lm_mkdir_p(cfg->out, err)) return -1;
    snprintf(L->metrics_path, sizeof L->metrics_path, "%s/metrics.jsonl", cfg->out);
    lm_err e2 = {{0}};
    int have_last = lm_ckpt_find(cfg->out, "last", L->ckdir, sizeof L->ckdir, &e2) == 0;
    if (!ctl->resume && have_last)
        return lm_errf(err, "%s already holds a run (last/): use --resume or another --out", cfg->out);
    if (ctl->resume && !have_last) return lm_errf(err, "--resume: %s", e2.msg);
    return 0;
}

/* last/'s state, weights and optimizer; *lora is replaced by its adapter. */
static int resume(lm_loop *L, lm_tmodel *m, lm_lora **lora, lm_err *err) {
    const lm_train_cfg *cfg = L->cfg;
    lm_train_cfg saved;
    if (lm_ckpt_load_state(L->ckdir, &saved, &L->st, err)) return -1;
    int rank0 = *lora ? (*lora)->rank : 0;
    if (!cfg->full) {
        lm_lora_free(*lora);
        *lora = NULL;
    }
    if (lm_ckpt_load_weights(L->ckdir, cfg->full, m, lora, err)) return -1;
    if (rank0 && *lora && (*lora)->rank != rank0)
        return lm_errf(err, "%s: adapter rank %d, the run's is %d", L->ckdir, (*lora)->rank, rank0);
    L->opt = lm_adamw_new(cfg->full ? m->n_params : (*lora)->n_params, err);
    if (!L->opt || lm_ckpt_load_optim(L->ckdir, L->opt, err)) return -1;
    if (L->opt->step != L->st.step)
        return lm_errf(err, "%s: optim.bin is at step %ld, state.json at %ld", L->ckdir, L->opt->step,
                       L->st.step);
    return 0;
}

int lm_loop_start(lm_loop *L, lm_tmodel *m, lm_lora **lora, lm_err *err) {
    const lm_train_cfg *cfg = L->cfg;
    if (L->ctl->resume) {
        if (resume(L, m, lora, err)) return -1;
    } else if (!(L->opt = lm_adamw_new(cfg->full ? m->n_params : (*lora)->n_params, err))) {
        return -1;
    }
    if (*lora) (*lora)->dropout = cfg->lora_dropout;   /* saved for the PEFT export */
    L->params = cfg->full ? m->params : (*lora)->params;
    L->grads = cfg->full ? m->grads : (*lora)->grads;
    L->tens = cfg->full ? m->tensors : (*lora)->tensors;
    L->n_tens = cfg->full ? m->n_tensors : (*lora)->n_tensors;
    L->n_params = cfg->full ? m->n_params : (*lora)->n_params;

    if (L->ctl->resume) {
        /* Lines past the checkpoint belong to steps that will be redone. */
        if (truncate(L->metrics_path, (off_t)L->st.metrics_bytes) && errno != ENOENT)
            return lm_errno(err, "%s", L->metrics_path);
        L->mf = fopen(L->metrics_path, "a");
    } else {
        L->mf = fopen(L->metrics_path, "w");
    }
    if (!L->mf) return lm_errno(err, "%s", L->metrics_path);
    L->ac = lm_adamw_defaults();
    L->ac.weight_decay = cfg->weight_decay;
    L->ac.grad_clip = cfg->clip;
    return 0;
}

void lm_loop_begin(lm_loop *L, const char *what, long total) {
    L->total = total;
    /* The bar counts this call's steps (so rate and ETA are right after a
     * resume); the run's step/total goes into the text. */
    L->first = L->st.step;
    if (L->ctl->progress) lm_progress_begin(&L->prog, what, total - L->first, "steps");
    else lm_progress_begin_file(&L->prog, NULL, what, total - L->first, "steps");
    L->prog_on = true;
    L->t_call = lm_now_s();
    L->t_base = L->st.seconds;
}

void lm_loop_step_start(lm_loop *L) { L->t0 = lm_now_s(); }

int lm_loop_optimize(lm_loop *L, lm_pool *pool, float lr, double *gnorm, lm_err *err) {
    *gnorm = 0;
    if (lm_adamw_step(pool, L->opt, &L->ac, lr, L->params, L->grads, L->tens, L->n_tens, gnorm, err))
        return lm_err_prefix(err, "step %ld", L->st.step + 1);
    return 0;
}

bool lm_loop_count(lm_loop *L, long tokens, double loss, bool epoch_end) {
    lm_ckpt_state *st = &L->st;
    st->step++;
    L->done_here++;
    st->tokens += tokens;
    st->smooth = EMA_BETA * st->smooth + (1 - EMA_BETA) * loss;
    L->smooth = st->smooth / (1 - pow(EMA_BETA, (double)st->step));   /* bias-corrected */
    double dt = lm_now_s() - L->t0;
    L->tps = dt > 0 ? (double)tokens / dt : 0;
    L->final = st->step == L->total;
    int every = L->cfg->eval_every;
    L->evaluate = epoch_end || L->final || (every > 0 && st->step % every == 0);
    return L->evaluate;
}

int lm_loop_record(lm_loop *L, const lm_tmodel *m, const lm_lora *lora, const lm_loop_line *x,
                   bool *stop, lm_err *err) {
    const lm_train_cfg *cfg = L->cfg;
    lm_ckpt_state *st = &L->st;
    *stop = false;
    if (!isfinite(x->loss))
        return lm_errf(err, "step %ld: loss is %g (diverged; lower --lr?)", st->step, x->loss);
    fprintf(L->mf, "{\"step\": %ld, \"epoch\": %d, \"loss\": %.17g, \"loss_smooth\": %.9g, "
                   "\"lr\": %.9g, \"grad_norm\": %.9g, \"tokens\": %ld, \"tokens_per_s\": %.1f%s",
            st->step, x->epoch + 1, x->loss, L->smooth, (double)x->lr, x->gnorm, x->tokens, L->tps,
            x->extra);
    if (x->val_loss >= 0) fprintf(L->mf, ", \"val_loss\": %.17g%s", x->val_loss, x->val_extra);
    fprintf(L->mf, "}\n");
    if (fflush(L->mf)) return lm_errno(err, "%s", L->metrics_path);
    st->metrics_bytes = ftell(L->mf);
    st->seconds = L->t_base + (lm_now_s() - L->t_call);

    const lm_sft_ctl *ctl = L->ctl;
    *stop = !L->final && ((ctl->stop_after > 0 && L->done_here >= ctl->stop_after) ||
                          (ctl->interrupt && *ctl->interrupt));
    if (x->val_loss >= 0 && (st->best_val < 0 || x->val_loss < st->best_val)) {
        st->best_val = x->val_loss;
        st->best_step = st->step;
        if (lm_ckpt_save(cfg->out, "best", cfg, st, m, lora, L->opt, err)) return -1;
    }
    if (L->evaluate || *stop || (cfg->save_every > 0 && st->step % cfg->save_every == 0))
        if (lm_ckpt_save(cfg->out, "last", cfg, st, m, lora, L->opt, err)) return -1;
    return 0;
}

void lm_loop_progress(lm_loop *L, const char *text) {
    /* evaluation points (epoch ends, eval_every, the last step) are
     * milestones: a plain line each when stderr is not a terminal */
    if (L->evaluate) lm_progress_mark(&L->prog, L->st.step - L->first, text);
    else lm_progress_update(&L->prog, L->st.step - L->first, text);
}

void lm_loop_bad_line(void *ctx, const char *msg) {
    lm_loop_bad_lines *b = ctx;
    if (b->n++ < LM_LOOP_BAD_LINES_SHOWN) lm_loop_note(b->info, b->info_ctx, "skipped: %s", msg);
}

void lm_loop_bad_lines_note(const lm_loop_bad_lines *b, char *buf, size_t cap) {
    if (!b->n) { buf[0] = '\0'; return; }
    if (b->n <= LM_LOOP_BAD_LINES_SHOWN)
        snprintf(buf, cap, "; %ld bad line%s skipped (above)", b->n, b->n == 1 ? "" : "s");
    else
        snprintf(buf, cap, "; %ld bad lines skipped (the first %d above)", b->n, LM_LOOP_BAD_LINES_SHOWN);
}

int lm_loop_finish(lm_loop *L, int rc, lm_sft_report *rep, lm_err *err) {
    if (L->prog_on) lm_progress_end(&L->prog);
    L->prog_on = false;
    rep->steps = L->st.step;
    rep->steps_here = L->done_here;
    rep->total_steps = L->total;
    rep->tokens = L->st.tokens;
    rep->seconds = L->st.seconds;
    rep->best_val = L->st.best_val;
    rep->best_step = L->st.best_step;
    if (L->mf) {
        if (fclose(L->mf) && !rc) rc = lm_errno(err, "%s", L->metrics_path);
        L->mf = NULL;
        char path[LM_TCFG_PATH + 16];
        snprintf(path, sizeof path, "%s/loss.svg", L->cfg->out);
        lm_err pe = {{0}};
        if (!rc && lm_sft_plot_svg(L->metrics_path, path, &pe)) rc = lm_errf(err, "%s", pe.msg);
    }
    lm_adamw_free(L->opt);
    L->opt = NULL;
    return rc;
}
