#include "runtime/generate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/strbuf.h"
#include "base/utf8.h"
#include "model/adapter.h"
#include "runtime/stream.h"

struct lm_generator {
    lm_model *model;
    lm_adapter *adapter;
    lm_tokenizer *tok;
    lm_pool *pool;
    lm_ctx *ctx;
    float *logits;     /* [n_vocab] */
    int32_t eos, im_end;
    char path[256];
    /* the prompt whose tokens but the last the cache holds, from the last
     * score (n_scored 0: none; a generation clears it) */
    int32_t *scored;
    size_t n_scored;
};

double lm_token_logp(const float *l, int n_vocab, int32_t token) {
    float mx = l[0];
    for (int v = 1; v < n_vocab; v++) mx = l[v] > mx ? l[v] : mx;
    double sum = 0;
    for (int v = 0; v < n_vocab; v++) sum += exp((double)(l[v] - mx));
    return (double)l[token] - (double)mx - log(sum);
}

void lm_generator_free(lm_generator *g) {
    if (!g) return;
    free(g->scored);
    free(g->logits);
    lm_ctx_free(g->ctx);
    lm_adapter_free(g->adapter);
    lm_pool_free(g->pool);
    lm_tokenizer_free(g->tok);
    lm_model_free(g->model);
    free(g);
}

int lm_generator_set_adapter(lm_generator *g, const char *path, float scale, lm_err *err) {
    lm_adapter *a = NULL;
    if (path && !(a = lm_adapter_load(g->model, path, err))) return -1;
    if (lm_ctx_set_adapter(g->ctx, a, scale, err)) {
        lm_adapter_free(a);
        return -1;
    }
    lm_adapter_free(g->adapter);
    g->adapter = a;
    g->n_scored = 0;
    return 0;
}

lm_generator *lm_generator_open(const char *model_path, int n_ctx, int threads, lm_err *err) {
    lm_generator *g = calloc(1, sizeof *g);
    if (!g) return lm_errf(err, "out of memory"), NULL;
    snprintf(g->path, sizeof g->path, "%s", model_path);
    g->model = lm_model_load(model_path, err);
    if (!g->model) goto fail;
    g->tok = lm_tokenizer_load(g->model->gguf, err);
    if (!g->tok) { lm_err_prefix(err, "%s", model_path); goto fail; }
    if (lm_tokenizer_n_vocab(g->tok) != g->model->cfg.n_vocab) {
        lm_errf(err, "%s: tokenizer has %d tokens but token_embd.weight has %d rows", model_path,
                lm_tokenizer_n_vocab(g->tok), g->model->cfg.n_vocab);
        goto fail;
    }
    g->pool = lm_pool_new(threads > 0 ? threads : 0, err);
    if (!g->pool) goto fail;
    g->ctx = lm_ctx_new(g->model, n_ctx, g->pool, err);
    if (!g->ctx) { lm_err_prefix(err, "%s", model_path); goto fail; }
    g->logits = malloc(sizeof(float) * (size_t)g->model->cfg.n_vocab);
    if (!g->logits) { lm_errf(err, "out of memory"); goto fail; }
    g->eos = lm_tokenizer_eos(g->tok);
    g->im_end = lm_tokenizer_find(g->tok, "<|im_end|>");
    return g;
fail:
    lm_generator_free(g);
    return NULL;
}

const lm_tokenizer *lm_generator_tokenizer(const lm_generator *g) { return g->tok; }

/* ---- prompt ----------------------------------------------------------- */

typedef struct ibuf { int32_t *p; size_t n, cap; } ibuf;

static int ibuf_put(ibuf *b, const int32_t *ids, size_t k, lm_err *err) {
    if (b->n + k > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + k) c *= 2;
        int32_t *q = realloc(b->p, c * sizeof *q);
        if (!q) return lm_errf(err, "out of memory");
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, ids, k * sizeof *ids);
    b->n += k;
    return 0;
}

static int ibuf_tokenize(ibuf *b, const lm_tokenizer *t, const char *s, size_t len,
                         bool special, lm_err *err) {
    if (len == 0) return 0;
    int32_t *ids;
    size_t k;
    if (lm_tokenize(t, s, len, special, &ids, &k, err)) return -1;
    int rc = ibuf_put(b, ids, k, err);
    free(ids);
    return rc;
}

#define MARK_FMT "\x1e" "lm-content-%zu" "\x1e"

int lm_generate_prompt(const lm_tokenizer *t, const lm_chat_msg *msgs, size_t n,
                       int32_t **out, size_t *n_out, lm_err *err) {
    return lm_generate_prompt_pre(t, msgs, NULL, n, out, n_out, err);
}

int lm_generate_prompt_pre(const lm_tokenizer *t, const lm_chat_msg *msgs,
                           const lm_tok_span *pre, size_t n, int32_t **out, size_t *n_out,
                           lm_err *err) {
    *out = NULL;
    *n_out = 0;
    if (n == 0) return lm_errf(err, "no messages");
    /* Render the template around markers, then tokenize template pieces with
     * special tokens and each content as plain text, so that text in a
     * message can never open or close a turn. */
    lm_chat_msg *m = calloc(n, sizeof *m);
    char (*marks)[48] = calloc(n, sizeof *marks);
    if (!m || !marks) { free(m); free(marks); return lm_errf(err, "out of memory"); }
    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        bool ok = r && *r && msgs[i].content;
        for (const char *c = r; ok && *c; c++)
            ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_' || *c == '-' ||
                 (*c >= '0' && *c <= '9');
        if (!ok) {
            free(m);
            free(marks);
            return lm_errf(err, "message %zu: %s", i, !msgs[i].content ? "no content" :
                           "role must be a word of letters, digits, '_' or '-'");
        }
        snprintf(marks[i], sizeof marks[i], MARK_FMT, i);
        m[i].role = r;
        m[i].content = marks[i];
    }
    char *s = lm_chat_render(t, m, n, true, err);
    free(m);
    if (!s) { free(marks); return -1; }
    ibuf b = {0};
    const char *pos = s;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *hit = strstr(pos, marks[i]);
        if (!hit) { rc = lm_errf(err, "message %zu: the chat template dropped it", i); break; }
        rc = ibuf_tokenize(&b, t, pos, (size_t)(hit - pos), true, err);
        if (rc == 0 && pre && pre[i].p)
            rc = ibuf_put(&b, pre[i].p, pre[i].n, err);
        else if (rc == 0)
            rc = ibuf_tokenize(&b, t, msgs[i].content, strlen(msgs[i].content), false, err);
        if (rc) lm_err_prefix(err, "message %zu", i);
        pos = hit + strlen(marks[i]);
    }
    if (rc == 0) rc = ibuf_tokenize(&b, t, pos, strlen(pos), true, err);
    free(s);
    free(marks);
    if (rc) { free(b.p); return -1; }
    *out = b.p;
    *n_out = b.n;
    return 0;
}

/* ---- decoding --------------------------------------------------------- */

/* Earliest stop string found at or after `from`: its offset, or -1. */
static long find_stop(const lm_sb *b, size_t from, const lm_gen_params *p) {
    long best = -1;
    for (size_t i = 0; i < p->n_stop; i++) {
        size_t k = strlen(p->stop[i]);
        if (k == 0 || b->len < k) continue;
        for (size_t j = from; j + k <= b->len; j++)
            if (!memcmp(b->p + j, p->stop[i], k)) {
                if (best < 0 || (long)j < best) best = (long)j;
                break;
            }
    }
    return best;
}

int lm_decode(const lm_decoder *d, const lm_gen_params *p, lm_sb *text, lm_gen_info *info,
              lm_err *err) {
    /* stop strings are looked for in the text, so keep one if the caller does not */
    lm_sb own = {0};
    if (!text && p->n_stop) text = &own;
    size_t max_stop = 0;
    for (size_t i = 0; i < p->n_stop; i++)
        if (strlen(p->stop[i]) > max_stop) max_stop = strlen(p->stop[i]);
    int n_ctx = lm_ctx_n_ctx(d->ctx), rc = 0;
    char piece[256];
    for (int i = 0; rc == 0; i++) {
        if (p->max_tokens > 0 && i >= p->max_tokens) { info->hit_max = true; break; }
        int32_t tk = lm_sampler_sample(d->smp, d->logits);
        if (tk < 0) { rc = lm_errf(err, "out of memory for the sampler's candidates"); break; }
        if (i == 0) info->first_token_at = lm_now_s();
        if (p->logp) {
            info->logp += lm_token_logp(d->logits, lm_ctx_model(d->ctx)->cfg.n_vocab, tk);
            info->n_logp++;
        }
        if (tk == d->eos || tk == d->im_end || lm_tokenizer_is_control(d->tok, tk)) break;
        lm_sampler_accept(d->smp, tk);
        info->n_gen++;
        if (d->on_token && d->on_token(d->ud, tk, err)) { rc = -1; break; }
        int nb = lm_token_bytes(d->tok, tk, false, piece, sizeof piece);
        if (nb > (int)sizeof piece) nb = (int)sizeof piece;   /* no real token is this long */
        if (nb > 0 && d->on_piece && d->on_piece(d->ud, piece, (size_t)nb, err)) { rc = -1; break; }
        if (text) {
            size_t before = text->len;
            if (nb > 0) lm_sb_add(text, piece, (size_t)nb);
            if (text->oom) { rc = lm_errf(err, "out of memory"); break; }
            if (max_stop) {
                size_t from = before >= max_stop ? before - max_stop + 1 : 0;
                long at = find_stop(text, from, p);
                if (at >= 0) {
                    text->len = (size_t)at, text->p[at] = '\0';
                    info->hit_stop = true;
                    break;
                }
            }
        }
        bool last = p->max_tokens > 0 && i + 1 == p->max_tokens;
        if (last && !d->eval_last) { info->hit_max = true; break; }
        if (lm_ctx_n_past(d->ctx) >= n_ctx) { info->hit_ctx = true; break; }
        rc = lm_eval(d->ctx, &tk, 1, last ? LM_LOGITS_NONE : LM_LOGITS_LAST, d->logits, err);
    }
    lm_sb_free(&own);
    return rc;
}

int lm_generate_chat(lm_generator *g, const lm_chat_msg *msgs, size_t n,
                     const lm_gen_params *p, char **reply, lm_gen_info *info, lm_err *err) {
    *reply = NULL;
    lm_gen_info dummy;
    if (!info) info = &dummy;
    memset(info, 0, sizeof *info);
    int32_t *prompt;
    size_t n_prompt;
    if (lm_generate_prompt(g->tok, msgs, n, &prompt, &n_prompt, err)) return -1;
    int n_ctx = lm_ctx_n_ctx(g->ctx);
    if (n_prompt + 1 > (size_t)n_ctx) {
        free(prompt);
        return lm_errf(err, "prompt of %zu tokens does not fit the %d-token context", n_prompt, n_ctx);
    }
    lm_sampler *smp = lm_sampler_new(&p->sp, g->model->cfg.n_vocab, err);
    if (!smp) { free(prompt); return -1; }
    lm_ctx_truncate(g->ctx, 0);
    g->n_scored = 0;
    info->n_prompt = (int)n_prompt;
    int rc = lm_eval(g->ctx, prompt, (int)n_prompt, LM_LOGITS_LAST, g->logits, err);
    for (size_t i = 0; rc == 0 && i < n_prompt; i++) lm_sampler_accept(smp, prompt[i]);
    free(prompt);
    lm_sb text = {0};
    if (rc == 0) {
        lm_decoder d = {g->ctx, g->tok, smp, g->logits, g->eos, g->im_end, true, NULL, NULL, NULL};
        rc = lm_decode(&d, p, &text, info, err);
    }
    lm_sampler_free(smp);
    if (rc == 0) {
        *reply = lm_utf8_clean(text.p ? text.p : "", text.len, LM_UTF8_NO_NUL | LM_UTF8_DROP_TAIL, NULL);
        if (!*reply) rc = lm_errf(err, "out of memory");
    }
    lm_sb_free(&text);
    return rc;
}

int lm_generator_score(lm_generator *g, const lm_chat_msg *msgs, size_t n, bool closed, double *nll,
                       int *n_tokens, lm_err *err) {
    *nll = 0;
    *n_tokens = 0;
    if (n < 2 || strcmp(msgs[n - 1].role, "assistant"))
        return lm_errf(err, "score: the last message must be an assistant turn after others");
    int32_t *prompt;
    size_t n_prompt;
    if (lm_generate_prompt(g->tok, msgs, n - 1, &prompt, &n_prompt, err)) return -1;
    int32_t *ans;
    size_t n_ans;
    const char *text = msgs[n - 1].content;
    if (lm_tokenize(g->tok, text, strlen(text), false, &ans, &n_ans, err)) {
        free(prompt);
        return -1;
    }
    size_t total = n_prompt + n_ans + 1;
    int32_t *all = malloc(total * sizeof *all);
    float *logits = NULL;
    int rc = 0;
    int V = g->model->cfg.n_vocab;
    if (!all) { rc = lm_errf(err, "out of memory"); goto done; }
    memcpy(all, prompt, n_prompt * sizeof *all);
    memcpy(all + n_prompt, ans, n_ans * sizeof *all);
    all[total - 1] = g->im_end >= 0 ? g->im_end : g->eos;
    if (total > (size_t)lm_ctx_n_ctx(g->ctx)) {
        rc = lm_errf(err, "score: %zu tokens do not fit the %d-token context", total,
                     lm_ctx_n_ctx(g->ctx));
        goto done;
    }
    /* logits of the rows that predict the answer: from the prompt's last
     * token to the answer's last. */
    size_t rows = n_ans + 1;
    logits = malloc(rows * (size_t)V * sizeof *logits);
    if (!logits) { rc = lm_errf(err, "out of memory"); goto done; }
    /* the cache holds this prompt's first n_prompt - 1 tokens from the last
     * score: they were evaluated in the same one call as here */
    bool held = g->n_scored == n_prompt && !memcmp(g->scored, prompt, n_prompt * sizeof *prompt) &&
                lm_ctx_n_past(g->ctx) >= (int)n_prompt - 1;
    g->n_scored = 0;
    if (held) lm_ctx_truncate(g->ctx, (int)n_prompt - 1);
    else {
        lm_ctx_truncate(g->ctx, 0);
        rc = lm_eval(g->ctx, all, (int)(n_prompt - 1), LM_LOGITS_NONE, NULL, err);
    }
    if (rc == 0)
        rc = lm_eval(g->ctx, all + n_prompt - 1, (int)rows, LM_LOGITS_ALL, logits, err);
    /* the last row predicts the closing token */
    size_t scored = closed ? rows : rows - 1;
    for (size_t r = 0; rc == 0 && r < scored; r++)
        *nll -= lm_token_logp(logits + r * (size_t)V, V, all[n_prompt + r]);
    if (rc == 0) {
        int32_t *keep = realloc(g->scored, n_prompt * sizeof *keep);
        if (keep) {
            memcpy(keep, prompt, n_prompt * sizeof *keep);
            g->scored = keep;
            g->n_scored = n_prompt;
        }
    }
    if (rc == 0) *n_tokens = (int)scored;
done:
    free(logits);
    free(all);
    free(ans);
    free(prompt);
    return rc;
}
