/* DPO: the loss and its gradient through the SFT backward pass, the
 * reference log-likelihood cache and the training loop (see dpo.h). */
#include "train/dpo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/progress.h"
#include "base/strbuf.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/loop.h"

/* ---- loss -------------------------------------------------------------------- */

/* -log sigmoid(z) and sigmoid(-z) without overflow. */
static double softplus_neg(double z) { return z >= 0 ? log1p(exp(-z)) : -z + log1p(exp(z)); }
static double sigmoid_neg(double z) {
    if (z >= 0) {
        double e = exp(-z);
        return e / (1 + e);
    }
    return 1 / (1 + exp(z));
}

void lm_dpo_pair_terms(lm_dpo_kind kind, double beta, double nll, double pc, double pr, double rc,
                       double rr, int nc, int nr, lm_dpo_terms *t) {
    double kc = 1, kr = 1;   /* d(normalised)/d(sum) */
    if (kind == LM_DPO_IPO || kind == LM_DPO_SIGMOID_NORM) {
        kc = 1.0 / (nc > 0 ? nc : 1);
        kr = 1.0 / (nr > 0 ? nr : 1);
    }
    double lc = kc * (pc - rc), lr = kr * (pr - rr);
    double h = lc - lr, dh;
    if (kind == LM_DPO_IPO) {
        double d = h - 1 / (2 * beta);
        t->loss = d * d;
        dh = 2 * d;
    } else {
        t->loss = softplus_neg(beta * h);
        dh = -beta * sigmoid_neg(beta * h);
    }
    t->reward_c = beta * lc;
    t->reward_r = beta * lr;
    t->dc = dh * kc;
    t->dr = -dh * kr;
    if (nll > 0) {   /* RPO: + nll * the chosen reply's mean negative log-likelihood */
        double n = nc > 0 ? nc : 1;
        t->loss += nll * (-pc / n);
        t->dc -= nll / n;
    }
}

/* ---- batches ------------------------------------------------------------------ */

int lm_dpo_batch_init(lm_dpo_batch *b, int B, int T, lm_err *err) {
    memset(b, 0, sizeof *b);
    if (B <= 0 || T <= 1 || (size_t)2 * B * (size_t)T > (size_t)1 << 30)
        return lm_errf(err, "DPO batch shape %d pairs x %d tokens is invalid", B, T);
    size_t n = (size_t)2 * B * T;
    b->B = B;
    b->T = b->span = T;
    b->rows = 2 * B;
    b->tokens = malloc(n * sizeof *b->tokens);
    b->targets = malloc(n * sizeof *b->targets);
    b->mask = malloc(n);
    b->weight = malloc(n * sizeof *b->weight);
    b->ref = malloc((size_t)2 * B * sizeof *b->ref);
    b->len = malloc((size_t)2 * B * sizeof *b->len);
    if (!b->tokens || !b->targets || !b->mask || !b->weight || !b->ref || !b->len) {
        lm_dpo_batch_free(b);
        return lm_errf(err, "out of memory for a DPO batch");
    }
    return 0;
}

void lm_dpo_batch_free(lm_dpo_batch *b) {
    free(b->tokens);
    free(b->targets);
    free(b->mask);
    free(b->weight);
    free(b->ref);
    free(b->len);
    memset(b, 0, sizeof *b);
}

void lm_dpo_batch_fill(lm_dpo_batch *b, const lm_dpo_set *s, const int *idx, int n,
                       const double *ref) {
    int longest = 0;
    for (int k = 0; k < n; k++)
        for (int side = 0; side < 2; side++)
            if (s->p[idx[k]].seq[side].n > longest) longest = s->p[idx[k]].seq[side].n;
    b->span = b->full_rows ? b->T : lm_batch_span(longest > 0 ? longest : 1, b->T);
    b->rows = b->full_rows ? 2 * b->B : b->B + n;
    size_t N = (size_t)2 * b->B * b->span;
    for (size_t i = 0; i < N; i++) b->tokens[i] = b->targets[i] = s->pad_id;
    memset(b->mask, 0, N);
    memset(b->weight, 0, N * sizeof *b->weight);
    b->n_pairs = n;
    b->ntok = 0;
    for (int r = 0; r < 2 * b->B; r++) {
        b->ref[r] = 0;
        b->len[r] = 0;
    }
    for (int k = 0; k < n; k++)
        for (int side = 0; side < 2; side++) {
            const lm_sft_example *e = &s->p[idx[k]].seq[side];
            int row = side * b->B + k;
            size_t o = (size_t)row * b->span;
            for (int t = 0; t < e->n && t < b->span; t++) {
                b->tokens[o + t] = e->tokens[t];
                if (t + 1 < e->n) {
                    b->targets[o + t] = e->tokens[t + 1];
                    b->mask[o + t] = e->mask[t + 1];
                }
            }
            b->len[row] = e->n_trained;
            b->ref[row] = ref ? ref[2 * (size_t)idx[k] + side] : 0;
            b->ntok += e->n;
        }
}

lm_tbatch lm_dpo_tbatch(const lm_dpo_batch *b) {
    return (lm_tbatch){.B = b->rows, .T = b->span, .tokens = b->tokens, .targets = b->targets,
                       .mask = b->mask, .dropout_T = b->T};
}

int lm_dpo_logps(const lm_tmodel *m, const lm_lora *lora, lm_tacts *a, const lm_dpo_batch *b,
                 lm_pool *pool, double *out, lm_err *err) {
    lm_tbatch tb = lm_dpo_tbatch(b);
    if (lm_train_forward(m, lora, a, &tb, pool, err) ||
        lm_train_seq_logprobs(m, a, &tb, pool, out, err))
        return -1;
    return 0;
}

static void add_pair(lm_dpo_sums *s, const lm_dpo_terms *t, double lc, double lr) {
    s->loss += t->loss;
    s->reward_c += t->reward_c;
    s->reward_r += t->reward_r;
    s->correct += t->reward_c > t->reward_r;
    s->margin += t->reward_c - t->reward_r;
    s->logp_c += lc;
    s->logp_r += lr;
    s->pairs++;
}

/* The log-likelihood as the objective sees it (sum or per-token mean). */
static double shown_logp(lm_dpo_kind kind, double sum, int n) {
    return kind == LM_DPO_SIGMOID ? sum : sum / (n > 0 ? n : 1);
}

int lm_dpo_grad(lm_tmodel *m, lm_lora *lora, lm_tacts *a, lm_dpo_batch *b, lm_pool *pool,
                lm_dpo_kind kind, double beta, double nll, long step_pairs, float lora_dropout,
                uint64_t dropout_key, lm_dpo_sums *sums, double *logp, lm_err *err) {
    if (b->n_pairs == 0) return 0;
    if (step_pairs < b->n_pairs)
        return lm_errf(err, "DPO step of %ld pairs, but the batch holds %d", step_pairs, b->n_pairs);
    int B = b->B, T = b->span;
    double *lp = logp ? logp : malloc((size_t)2 * B * sizeof *lp);
    if (!lp) return lm_errf(err, "out of memory");
    lm_tbatch tb = lm_dpo_tbatch(b);
    tb.lora_dropout = lora ? lora_dropout : 0.0f;
    tb.dropout_key = dropout_key;
    int rc = -1;
    if (lm_train_forward(m, lora, a, &tb, pool, err) || lm_train_seq_logprobs(m, a, &tb, pool, lp, err))
        goto done;
    memset(b->weight, 0, (size_t)2 * B * T * sizeof *b->weight);
    for (int k = 0; k < b->n_pairs; k++) {
        lm_dpo_terms t;
        lm_dpo_pair_terms(kind, beta, nll, lp[k], lp[B + k], b->ref[k], b->ref[B + k], b->len[k],
                          b->len[B + k], &t);
        if (!isfinite(t.loss)) {
            lm_errf(err, "DPO loss of pair %d is %g (log-likelihoods %g, %g)", k, t.loss, lp[k], lp[B + k]);
            goto done;
        }
        /* d loss / d logits = -d loss / d log pi * (softmax - onehot) */
        float w[2] = {(float)(-t.dc / (double)step_pairs), (float)(-t.dr / (double)step_pairs)};
        for (int side = 0; side < 2; side++) {
            size_t o = (size_t)(side * B + k) * T;
            for (int i = 0; i < T; i++)
                if (b->mask[o + i]) b->weight[o + i] = w[side];
        }
        if (sums)
            add_pair(sums, &t, shown_logp(kind, lp[k], b->len[k]), shown_logp(kind, lp[B + k], b->len[B + k]));
    }
    if (sums) sums->tokens += b->ntok;
    tb.weight = b->weight;
    tb.loss_norm = 1;
    double unused;
    if (lm_train_loss(m, a, &tb, pool, 1, NULL, &unused, err) ||
        lm_train_backward(m, lora, a, &tb, pool, err))
        goto done;
    rc = 0;
done:
    if (!logp) free(lp);
    return rc;
}

/* ---- reference log-likelihoods --------------------------------------------------- */

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

/* A fingerprint of float weights, four lanes so it runs at memory speed. */
static uint64_t hash_floats(uint64_t h, const float *x, size_t n) {
    uint64_t lane[4] = {h, h ^ 1, h ^ 2, h ^ 3};
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++) {
            uint32_t w;
            memcpy(&w, &x[i + k], 4);
            lane[k] = (lane[k] ^ w) * 0x100000001b3ull;
        }
    for (; i < n; i++) {
        uint32_t w;
        memcpy(&w, &x[i], 4);
        lane[0] = (lane[0] ^ w) * 0x100000001b3ull;
    }
    return fnv_bytes(h, lane, sizeof lane);
}

static uint64_t hash_set(uint64_t h, const lm_dpo_set *s) {
    h = fnv_bytes(h, &s->n, sizeof s->n);
    for (int i = 0; i < s->n; i++)
        for (int k = 0; k < 2; k++) {
            const lm_sft_example *e = &s->p[i].seq[k];
            h = fnv_bytes(h, &e->n, sizeof e->n);
            h = fnv_bytes(h, e->tokens, (size_t)e->n * sizeof *e->tokens);
            h = fnv_bytes(h, e->mask, (size_t)e->n);
        }
    return h;
}

/* The reference's key: the starting weights and every scored sequence. */
static uint64_t ref_key(const lm_tmodel *m, const lm_lora *lora0, const lm_dpo_set *tr,
                        const lm_dpo_set *va, int T, int bf16) {
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv_bytes(h, "LMDPOREF", 8);
    h = fnv_bytes(h, &T, sizeof T);
    if (bf16) h = fnv_bytes(h, "bf16", 4);   /* f32 keys stay what they were */
    h = hash_floats(h, m->params, m->n_params);
    if (lora0) {
        h = fnv_bytes(h, &lora0->scale, sizeof lora0->scale);
        h = hash_floats(h, lora0->params, lora0->n_params);
    }
    h = hash_set(h, tr);
    static const lm_dpo_set none = {0};
    return hash_set(h, va ? va : &none);
}

#define REF_MAGIC "LMDPORF1"

/* RUN_DIR/ref_logps.bin: magic, u64 key, u64 n_train, u64 n_val, f64
 * train[2 n_train], f64 val[2 n_val] (host order). 1: read; 0: missing or
 * for another key; -1: unreadable. */
static int ref_read(const char *path, uint64_t key, double *tr, long ntr, double *va, long nva,
                    lm_err *err) {
    char *data = NULL;
    size_t len = 0;
    if (lm_read_file(path, &data, &len, true, err)) return -1;
    if (!data) return 0;
    int rc = 0;
    uint64_t hdr[3];
    size_t want = 8 + sizeof hdr + (size_t)(2 * (ntr + nva)) * sizeof(double);
    if (len < 8 + sizeof hdr || memcmp(data, REF_MAGIC, 8)) {
        rc = lm_errf(err, "%s: not a reference log-likelihood file (bad header)", path);
        goto done;
    }
    memcpy(hdr, data + 8, sizeof hdr);
    if (hdr[0] != key || hdr[1] != (uint64_t)ntr || hdr[2] != (uint64_t)nva) goto done;
    if (len != want) {
        rc = lm_errf(err, "%s: %zu bytes, expected %zu", path, len, want);
        goto done;
    }
    memcpy(tr, data + 8 + sizeof hdr, (size_t)(2 * ntr) * sizeof(double));
    memcpy(va, data + 8 + sizeof hdr + (size_t)(2 * ntr) * sizeof(double), (size_t)(2 * nva) * sizeof(double));
    rc = 1;
done:
    free(data);
    return rc;
}

static int ref_write(const char *path, uint64_t key, const double *tr, long ntr, const double *va,
                     long nva, lm_err *err) {
    size_t len = 8 + 3 * sizeof(uint64_t) + (size_t)(2 * (ntr + nva)) * sizeof(double);
    char *buf = malloc(len);
    if (!buf) return lm_errf(err, "out of memory");
    uint64_t hdr[3] = {key, (uint64_t)ntr, (uint64_t)nva};
    memcpy(buf, REF_MAGIC, 8);
    memcpy(buf + 8, hdr, sizeof hdr);
    memcpy(buf + 8 + sizeof hdr, tr, (size_t)(2 * ntr) * sizeof(double));
    if (nva) memcpy(buf + 8 + sizeof hdr + (size_t)(2 * ntr) * sizeof(double), va, (size_t)(2 * nva) * sizeof(double));
    int rc = lm_write_file_atomic(path, buf, len, err);
    free(buf);
    return rc;
}

/* out[2 i + side] for every pair of s, in batches of b->B. */
static int ref_compute(const lm_tmodel *m, const lm_lora *lora, lm_tacts *a, lm_dpo_batch *b,
                       lm_pool *pool, const lm_dpo_set *s, double *out, lm_progress *prog,
                       long *done, lm_err *err) {
    int *idx = malloc((size_t)b->B * sizeof *idx);
    double *lp = malloc((size_t)2 * b->B * sizeof *lp);
    int rc = 0;
    if (!idx || !lp) rc = lm_errf(err, "out of memory");
    for (int i = 0; rc == 0 && i < s->n; i += b->B) {
        int n = s->n - i < b->B ? s->n - i : b->B;
        for (int k = 0; k < n; k++) idx[k] = i + k;
        lm_dpo_batch_fill(b, s, idx, n, NULL);
        if (lm_dpo_logps(m, lora, a, b, pool, lp, err)) {
            rc = lm_err_prefix(err, "reference log-likelihoods, pair from line %d", s->p[i].line);
            break;
        }
        for (int k = 0; k < n; k++) {
            out[2 * (size_t)(i + k)] = lp[k];
            out[2 * (size_t)(i + k) + 1] = lp[b->B + k];
        }
        *done += n;
        lm_progress_update(prog, *done, NULL);
    }
    free(idx);
    free(lp);
    return rc;
}

/* ---- the loop ------------------------------------------------------------------------ */

/* W += scale * B A for every adapted projection (a full run from an adapter). */
static int merge_into(lm_tmodel *m, const lm_lora *l, lm_err *err) {
    for (int layer = 0; layer < l->n_layers; layer++)
        for (int t = 0; t < LM_LORA_N; t++) {
            const float *A = l->a[layer][t], *Bm = l->b[layer][t];
            if (!A) continue;
            float *W = m->layer[layer][lm_lora_base_index(t)];
            const lm_ttensor *wt = NULL;
            for (int i = 0; i < m->n_tensors && !wt; i++)
                if (m->params + m->tensors[i].offset == W) wt = &m->tensors[i];
            if (!wt) return lm_errf(err, "merge: no base tensor for layer %d target %d", layer, t);
            int in = (int)wt->ne[0], out = (int)wt->ne[1], r = l->rank;
            for (int o = 0; o < out; o++)
                for (int k = 0; k < r; k++) {
                    float s = l->scale * Bm[(size_t)o * r + k];
                    if (s == 0) continue;
                    const float *ar = A + (size_t)k * in;
                    float *wr = W + (size_t)o * in;
                    for (int i = 0; i < in; i++) wr[i] += s * ar[i];
                }
        }
    return 0;
}

typedef struct vloop {
    const lm_tmodel *m;
    const lm_lora *lora;
    lm_tacts *a;
    lm_dpo_batch *b;
    lm_pool *pool;
    const lm_dpo_set *val;
    const double *ref;
    lm_dpo_kind kind;
    double beta, nll;
} vloop;

static int validate(const vloop *V, lm_dpo_sums *s, lm_err *err) {
    memset(s, 0, sizeof *s);
    int B = V->b->B;
    int *idx = malloc((size_t)B * sizeof *idx);
    double *lp = malloc((size_t)2 * B * sizeof *lp);
    int rc = 0;
    if (!idx || !lp) rc = lm_errf(err, "out of memory");
    for (int i = 0; rc == 0 && i < V->val->n; i += B) {
        int n = V->val->n - i < B ? V->val->n - i : B;
        for (int k = 0; k < n; k++) idx[k] = i + k;
        lm_dpo_batch_fill(V->b, V->val, idx, n, V->ref);
        if (lm_dpo_logps(V->m, V->lora, V->a, V->b, V->pool, lp, err)) {
            rc = lm_err_prefix(err, "validation");
            break;
        }
        for (int k = 0; k < n; k++) {
            lm_dpo_terms t;
            lm_dpo_pair_terms(V->kind, V->beta, V->nll, lp[k], lp[B + k], V->b->ref[k], V->b->ref[B + k],
                              V->b->len[k], V->b->len[B + k], &t);
            add_pair(s, &t, shown_logp(V->kind, lp[k], V->b->len[k]),
                     shown_logp(V->kind, lp[B + k], V->b->len[B + k]));
        }
        s->tokens += V->b->ntok;
    }
    free(idx);
    free(lp);
    return rc;
}

/* The sums' metrics fields (TRL's names), as ", \"key\": value" pairs. */
static void put_sums(lm_sb *b, const char *prefix, const lm_dpo_sums *s) {
    double n = s->pairs ? (double)s->pairs : 1;
    lm_sb_printf(b, ", \"%srewards/chosen\": %.9g, \"%srewards/rejected\": %.9g, "
               "\"%srewards/accuracies\": %.9g, \"%srewards/margins\": %.9g, "
               "\"%slogps/chosen\": %.9g, \"%slogps/rejected\": %.9g",
            prefix, s->reward_c / n, prefix, s->reward_r / n, prefix, s->correct / n, prefix,
            s->margin / n, prefix, s->logp_c / n, prefix, s->logp_r / n);
}

int lm_dpo_train(const lm_train_cfg *cfg, lm_tmodel *m, const lm_lora *init,
                 const lm_dpo_set *train, const lm_dpo_set *val, const lm_sft_ctl *ctl,
                 lm_sft_report *rep, void (*info)(void *ctx, const char *line), void *info_ctx,
                 lm_err *err) {
    const int B = cfg->batch, T = cfg->seq, GA = cfg->grad_accum;
    lm_loop R;
    lm_pool *pool = NULL;
    lm_lora *lora = NULL;
    lm_tacts *acts = NULL;
    lm_dpo_batch batch = {0};
    double *ref_tr = NULL, *ref_va = NULL;
    int *order = NULL, order_epoch = -1, rc = -1, ref_prog = 0;
    lm_progress prog;
    lm_sb fields = {0}, vfields = {0};
    lm_dpo_sums last = {0}, vlast = {0};
    memset(rep, 0, sizeof *rep);
    rep->best_val = -1.0;
    rep->dpo = 1;

    if (!train || train->n == 0) return lm_errf(err, "DPO: no training pair");
    for (int i = 0; i < train->n; i++)
        for (int k = 0; k < 2; k++)
            if (train->p[i].seq[k].n > T)
                return lm_errf(err, "DPO: pair from line %d has %d tokens, more than seq %d "
                                    "(fit the pairs first)", train->p[i].line, train->p[i].seq[k].n, T);
    for (int i = 0; val && i < val->n; i++)
        for (int k = 0; k < 2; k++)
            if (val->p[i].seq[k].n > T)
                return lm_errf(err, "DPO: validation pair from line %d has %d tokens, more than seq %d",
                               val->p[i].line, val->p[i].seq[k].n, T);
    if (lm_loop_open(&R, cfg, ctl, err)) return -1;

    const int mpe = (train->n + B - 1) / B;            /* micro-batches per epoch */
    const long total = (long)cfg->epochs * ((mpe + GA - 1) / GA);
    const long warm = lm_train_cfg_warmup_steps(cfg, total);
    int nva = val ? val->n : 0;

    if (!(pool = lm_pool_new(cfg->threads, err))) return -1;
    /* The policy at step 0, which is the reference. */
    if (cfg->full) {
        if (init && merge_into(m, init, err)) goto done;
        if (!m->grads && lm_tmodel_alloc_grads(m, err)) goto done;
    } else if (init) {
        if (!(lora = lm_lora_new(m, init->rank, init->alpha, init->targets, cfg->seed, err))) goto done;
        memcpy(lora->params, init->params, lora->n_params * sizeof(float));
    } else if (!(lora = lm_lora_new(m, cfg->lora_rank, cfg->lora_alpha, cfg->lora_targets, cfg->seed, err))) {
        goto done;
    }
    if (!(acts = lm_tacts_new(m, lora, 2 * B, T, 0, err)) ||
        lm_tacts_set_precision(acts, cfg->bf16 ? LM_TPREC_BF16 : LM_TPREC_F32, err) ||
        lm_dpo_batch_init(&batch, B, T, err))
        goto done;
    batch.full_rows = ctl->full_rows != 0;
    ref_tr = malloc((size_t)2 * train->n * sizeof *ref_tr);
    ref_va = malloc((size_t)(2 * nva + 1) * sizeof *ref_va);
    order = malloc((size_t)train->n * sizeof *order);
    if (!ref_tr || !ref_va || !order) { lm_errf(err, "out of memory"); goto done; }

    uint64_t key = ref_key(m, lora, train, val, T, cfg->bf16);
    char ref_path[LM_TCFG_PATH + 32];
    snprintf(ref_path, sizeof ref_path, "%s/ref_logps.bin", cfg->out);
    int got = ref_read(ref_path, key, ref_tr, train->n, ref_va, nva, err);
    if (got < 0) goto done;
    if (!got && ctl->resume && access(ref_path, F_OK) == 0) {
        lm_errf(err, "%s: made for other pairs or other starting weights than this run's "
                     "(did %s, the model or the adapter change since the run started?)",
                ref_path, cfg->dpo[0] ? cfg->dpo : "the data");
        goto done;
    }
    rep->ref_cached = got;
    if (got) {
        lm_loop_note(info, info_ctx, "reference log-likelihoods: read from %s", ref_path);
    } else {
        if (ctl->progress) lm_progress_begin(&prog, "reference", train->n + nva, "pairs");
        else lm_progress_begin_file(&prog, NULL, "reference", train->n + nva, "pairs");
        ref_prog = 1;
        long n_done = 0;
        if (ref_compute(m, lora, acts, &batch, pool, train, ref_tr, &prog, &n_done, err) ||
            (val && ref_compute(m, lora, acts, &batch, pool, val, ref_va, &prog, &n_done, err)))
            goto done;
        lm_progress_end(&prog);
        ref_prog = 0;
        if (ref_write(ref_path, key, ref_tr, train->n, ref_va, nva, err)) goto done;
        lm_loop_note(info, info_ctx, "reference log-likelihoods: %d pairs, saved in %s", train->n + nva, ref_path);
    }

    if (lm_loop_start(&R, m, &lora, err)) goto done;
    vloop V = {.m = m, .lora = lora, .a = acts, .b = &batch, .pool = pool, .val = val,
               .ref = ref_va, .kind = cfg->dpo_loss, .beta = cfg->dpo_beta,
               .nll = cfg->dpo_nll};
    lm_loop_begin(&R, "dpo", total);

    while (R.st.step < total) {
        lm_loop_step_start(&R);
        int epoch = (int)(R.st.micro / mpe), j0 = (int)(R.st.micro % mpe);
        int k = mpe - j0 < GA ? mpe - j0 : GA;
        long P = (long)((j0 + k) * B < train->n ? (j0 + k) * B : train->n) - (long)j0 * B;
        if (epoch != order_epoch) {
            lm_sft_epoch_order(order, train->n, cfg->seed, epoch);
            order_epoch = epoch;
        }
        memset(R.grads, 0, R.n_params * sizeof(float));
        lm_dpo_sums s = {0};
        for (int i = 0; i < k; i++) {
            int at = (j0 + i) * B, n = train->n - at < B ? train->n - at : B;
            lm_dpo_batch_fill(&batch, train, order + at, n, ref_tr);
            uint64_t dkey = lm_lora_dropout_key(cfg->seed, (uint64_t)R.st.step, (uint64_t)i);
            if (lm_dpo_grad(m, lora, acts, &batch, pool, cfg->dpo_loss, cfg->dpo_beta, cfg->dpo_nll, P,
                            cfg->full ? 0.0f : cfg->lora_dropout, dkey, &s, NULL, err)) {
                lm_err_prefix(err, "step %ld", R.st.step + 1);
                goto done;
            }
        }
        R.st.micro += k;
        int epoch_end = j0 + k == mpe;
        double loss = s.loss / (double)P;
        float lr = lm_lr_at(cfg->schedule, cfg->lr, R.st.step, warm, total);
        double gnorm;
        if (lm_loop_optimize(&R, pool, lr, &gnorm, err)) goto done;
        last = s;
        double vl = -1;
        if (lm_loop_count(&R, s.tokens, loss, epoch_end) && nva) {
            if (validate(&V, &vlast, err)) goto done;
            vl = vlast.loss / (double)vlast.pairs;
        }
        lm_sb_free(&fields);
        lm_sb_free(&vfields);
        lm_sb_printf(&fields, ", \"pairs\": %ld", P);
        put_sums(&fields, "", &s);
        put_sums(&vfields, "val_", &vlast);
        if (fields.oom || vfields.oom) { lm_errf(err, "out of memory"); goto done; }
        lm_loop_line line = {.epoch = epoch, .loss = loss, .gnorm = gnorm, .lr = lr, .tokens = s.tokens,
                             .extra = fields.p, .val_loss = vl, .val_extra = vfields.p};
        bool stop;
        if (lm_loop_record(&R, m, lora, &line, &stop, err)) goto done;

        char extra[200];
        snprintf(extra, sizeof extra, "step %ld/%ld  epoch %d/%d  loss %.4f  acc %.2f  margin %.3f  lr %.2e  %.0f tok/s",
                 R.st.step, total, epoch + 1, cfg->epochs, R.smooth, s.correct / (double)P,
                 s.margin / (double)P, (double)lr, R.tps);
        if (vl >= 0) {
            size_t n = strlen(extra);
            snprintf(extra + n, sizeof extra - n, "  val %.4f acc %.2f", vl,
                     vlast.correct / (double)vlast.pairs);
        }
        lm_loop_progress(&R, extra);
        rep->last_loss = loss;
        if (stop) { rep->stopped = 1; break; }
    }
    rc = 0;
done:
    if (ref_prog) lm_progress_end(&prog);
    rc = lm_loop_finish(&R, rc, rep, err);
    {
        const lm_dpo_sums *r = vlast.pairs ? &vlast : &last;
        if (r->pairs) {
            rep->reward_acc = r->correct / (double)r->pairs;
            rep->reward_margin = r->margin / (double)r->pairs;
        }
    }
    lm_sb_free(&fields);
    lm_sb_free(&vfields);
    free(order);
    free(ref_tr);
    free(ref_va);
    lm_dpo_batch_free(&batch);
    lm_tacts_free(acts);
    lm_lora_free(lora);
    lm_pool_free(pool);
    return rc;
}

/* ---- from files ------------------------------------------------------------------------ */

int lm_dpo_run(lm_train_cfg *cfg, const lm_sft_ctl *ctl, lm_tmodel *m, const lm_tokenizer *tok,
               lm_sft_report *rep, void (*info)(void *ctx, const char *line), void *info_ctx,
               lm_err *err) {
    lm_dpo_set *all = NULL, *tr = NULL, *va = NULL;
    lm_lora *init = NULL;
    int rc = -1;
    lm_sft_opts so = lm_sft_opts_default();
    lm_loop_bad_lines bad = {info, info_ctx, 0};
    so.warn = lm_loop_bad_line;
    so.warn_ctx = &bad;
    if (lm_dpo_load(cfg->dpo, tok, &so, &all, err)) goto done;
    if (cfg->val[0]) {
        tr = all;
        all = NULL;
        if (lm_dpo_load(cfg->val, tok, &so, &va, err)) goto done;
    } else if (cfg->val_frac > 0) {
        if (lm_dpo_split(all, cfg->val_frac, cfg->seed, &tr, &va, err)) goto done;
    } else {
        tr = all;
        all = NULL;
    }
    lm_dpo_fit(tr, cfg->seq, LM_SFT_TRUNCATE);
    if (va) lm_dpo_fit(va, cfg->seq, LM_SFT_TRUNCATE);
    if (tr->n == 0) { lm_errf(err, "%s: no pair left to train on", cfg->dpo); goto done; }
    char bad_note[96];
    lm_loop_bad_lines_note(&bad, bad_note, sizeof bad_note);
    lm_loop_note(info, info_ctx, "pairs: %d, %ld tokens (%ld scored; %ld pairs truncated to %d, %ld dropped)%s",
         tr->n, tr->stats.tokens, tr->stats.trained_tokens, tr->stats.truncated, cfg->seq,
         tr->stats.dropped, bad_note);
    if (va) lm_loop_note(info, info_ctx, "validation: %d pairs", va->n);
    else lm_loop_note(info, info_ctx, "validation: none (give --val or --val-frac for a best checkpoint)");
    if (cfg->adapter[0]) {
        if (!(init = lm_lora_load(m, cfg->adapter, err))) goto done;
        if (!cfg->full) {   /* the adapter's shape is the run's */
            cfg->lora_rank = init->rank;
            cfg->lora_alpha = init->alpha;
            cfg->lora_targets = init->targets;
        }
        lm_loop_note(info, info_ctx, "reference and start: %s + %s (rank %d)%s", cfg->model, cfg->adapter,
             init->rank, cfg->full ? ", merged for the full run" : "; the policy continues it");
    } else {
        lm_loop_note(info, info_ctx, "reference and start: %s%s", cfg->model,
             cfg->full ? "" : "; the policy is a new LoRA");
    }
    lm_loop_note(info, info_ctx, "DPO: loss %s, beta %g%s", cfg->dpo_loss == LM_DPO_IPO ? "ipo" :
         cfg->dpo_loss == LM_DPO_SIGMOID_NORM ? "sigmoid-norm" : "sigmoid", (double)cfg->dpo_beta,
         cfg->dpo_nll > 0 ? ", + the chosen replies' NLL (dpo-nll)" : "");
    rc = lm_dpo_train(cfg, m, init, tr, va, ctl, rep, info, info_ctx, err);
done:
    lm_lora_free(init);
    lm_dpo_set_free(all);
    lm_dpo_set_free(tr);
    lm_dpo_set_free(va);
    return rc;
}
