/* The public API's conversations (include/lemonpc.h): one NPC and one
 * player, the turns so far and their KV cache. A reply evaluates only what
 * the cache lacks: the prompt is rendered whole, compared token by token
 * with what the cache holds (or, for a fresh cache, with the NPC's shared
 * persona prefix, copied in), and only the rest is evaluated. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/pages.h"
#include "runtime/api_internal.h"
#include "runtime/generate.h"
#include "runtime/stream.h"

int lm_api_turns_push(lm_turns *t, const char *role, const char *content, const int32_t *tk,
                      size_t ntk) {
    if (t->n == t->cap) {
        size_t c = t->cap ? t->cap * 2 : 16;
        lm_chat_msg *q = realloc(t->m, c * sizeof *q);
        if (!q) return -1;
        t->m = q;
        lm_tok_span *r = realloc(t->tk, c * sizeof *r);
        if (!r) return -1;
        t->tk = r;
        t->cap = c;
    }
    char *dup = strdup(content);
    int32_t *tdup = tk ? malloc(ntk ? ntk * sizeof *tdup : 1) : NULL;
    if (!dup || (tk && !tdup)) { free(dup); free(tdup); return -1; }
    if (tk) memcpy(tdup, tk, ntk * sizeof *tdup);
    t->tk[t->n] = (lm_tok_span){tdup, tk ? ntk : 0};
    t->m[t->n++] = (lm_chat_msg){!strcmp(role, "user") ? "user" : "assistant", dup};
    return 0;
}

static void turns_pop(lm_turns *t) {
    if (!t->n) return;
    t->n--;
    free((char *)t->m[t->n].content);
    free((int32_t *)t->tk[t->n].p);
}

void lm_api_turns_clear(lm_turns *t) {
    while (t->n) turns_pop(t);
}

int lm_api_toks_reserve(lemonpc_conversation *c, size_t n) {
    if (n <= c->cap_toks) return 0;
    size_t cap = c->cap_toks ? c->cap_toks : 256;
    while (cap < n) cap *= 2;
    int32_t *q = realloc(c->toks, cap * sizeof *q);
    if (!q) return -1;
    c->toks = q;
    c->cap_toks = cap;
    return 0;
}

/* An idle conversation holds its cache, tokens and turns, not the working
 * memory of a reply: the logits row lives only during a reply, and the
 * context's batch scratch and the sampler's candidates (whose PRNG and
 * history stay) are given back when it ends. */
static size_t logits_bytes(const lemonpc_conversation *c) {
    return sizeof(float) * (size_t)c->npc->model->m->cfg.n_vocab;
}

static int reply_begin(lemonpc_conversation *c, lm_err *e) {
    if (!c->logits && !(c->logits = lm_pages_alloc(logits_bytes(c))))
        return lm_errf(e, "out of memory for the logits row");
    return 0;
}

static void reply_end(lemonpc_conversation *c) {
    lm_pages_free(c->logits, logits_bytes(c));
    c->logits = NULL;
    lm_ctx_trim(c->ctx);
    lm_sampler_trim(c->smp);
}

void lemonpc_conversation_close(lemonpc_conversation *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_stop; i++) free(c->stop[i]);
    free(c->stop);
    lm_pages_free(c->logits, logits_bytes(c));
    lm_sampler_free(c->smp);
    lm_ctx_free(c->ctx);
    free(c->toks);
    lm_api_turns_clear(&c->turns);
    free(c->turns.m);
    free(c->turns.tk);
    free(c->system);
    free(c->memory);
    free(c->who);
    free(c->player);
    free(c->place);
    atomic_fetch_sub(&c->npc->n_convs, 1);
    free(c);
}

/* Stop strings of a conversation: the NPC's, and the player's name as the
 * start of a line (the NPC must not write the player's part), and for a
 * character a plain "User:" line, which the base model writes when it runs
 * on. */
static int conv_stops(lemonpc_conversation *c) {
    const lemonpc_npc *n = c->npc;
    char who[160] = "";
    if (c->who) snprintf(who, sizeof who, "\n%s:", c->who);
    const char *extra[] = {who, n->ch ? "\nUser:" : "", n->ch ? "\nuser:" : ""};
    c->stop = calloc(n->n_stop + 3, sizeof *c->stop);
    if (!c->stop) return -1;
    for (size_t i = 0; i < n->n_stop; i++)
        if (!(c->stop[c->n_stop++] = strdup(n->stop[i]))) return -1;
    for (size_t i = 0; i < 3; i++)
        if (extra[i][0] && !(c->stop[c->n_stop++] = strdup(extra[i]))) return -1;
    c->n_stop_base = c->n_stop;
    return 0;
}

lemonpc_conversation *lm_api_conv_new(lemonpc_npc *n, const char *player, const char *place,
                                      lm_err *e) {
    lemonpc_conversation *c = calloc(1, sizeof *c);
    if (!c) return lm_errf(e, "out of memory"), NULL;
    c->npc = n;
    atomic_fetch_add(&n->n_convs, 1);
    atomic_init(&c->cancel, false);
    atomic_flag_clear(&c->busy);
    lemonpc_model *m = n->model;
    if ((player && !(c->player = strdup(player))) || (place && !(c->place = strdup(place))))
        goto oom;
    if (player) {
        /* "Mira, a young acolyte" -> "Mira" */
        size_t k = strcspn(player, ",(");
        while (k && player[k - 1] == ' ') k--;
        if (k > 0 && k < 100 && !(c->who = strndup(player, k))) goto oom;
    }
    if (n->system) {
        if (!(c->system = strdup(n->system))) goto oom;
    } else if (n->ch) {
        lm_scene sc = {player, place};
        c->system = lm_persona_system(n->ch, n->w, (lm_persona_mode)n->mode, &sc, e);
        if (!c->system && e->msg[0]) goto fail;
    }
    if (conv_stops(c)) goto oom;
    if (!(c->ctx = lm_ctx_new_kv(m->m, m->n_ctx, m->pool, m->kv_type, e))) goto fail;
    if (n->adapter && lm_ctx_set_adapter(c->ctx, n->adapter, n->adapter_scale, e)) goto fail;
    c->sp = n->sp;
    c->max_tokens = n->max_tokens;
    if (!(c->smp = lm_sampler_new(&n->sp, m->m->cfg.n_vocab, e))) goto fail;
    return c;
oom:
    lm_errf(e, "out of memory");
fail:
    lemonpc_conversation_close(c);
    return NULL;
}

lemonpc_conversation *lemonpc_conversation_open(lemonpc_npc *n, const char *player,
                                                const char *place, lemonpc_error *err) {
    if (!n) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_conversation_open: no NPC"), NULL;
    lm_err e = {{0}};
    lemonpc_conversation *c = lm_api_conv_new(n, player, place, &e);
    if (!c) return lm_api_fail(err, lm_api_code_of(&e, LEMONPC_ERR_INTERNAL), &e), NULL;
    if (err) { err->code = LEMONPC_OK; err->message[0] = '\0'; }
    return c;
}

void lemonpc_conversation_cancel(lemonpc_conversation *c) {
    if (c) atomic_store(&c->cancel, true);
}

int lemonpc_conversation_n_turns(const lemonpc_conversation *c) { return c ? (int)c->turns.n : 0; }

const char *lemonpc_conversation_turn(const lemonpc_conversation *c, int i, const char **role) {
    if (!c || i < 0 || (size_t)i >= c->turns.n) return NULL;
    if (role) *role = c->turns.m[i].role;
    return c->turns.m[i].content;
}

int lemonpc_conversation_n_cached(const lemonpc_conversation *c) {
    return c ? (int)c->n_toks : 0;
}

void lemonpc_string_free(char *s) { free(s); }

lemonpc_status lemonpc_conversation_reset(lemonpc_conversation *c, lemonpc_error *err) {
    if (!c) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_conversation_reset: NULL");
    if (atomic_flag_test_and_set(&c->busy))
        return lm_api_failf(err, LEMONPC_ERR_BUSY, "the conversation is in use by another thread");
    lm_api_turns_clear(&c->turns);
    lm_ctx_truncate(c->ctx, 0);
    c->n_toks = 0;
    free(c->memory);
    c->memory = NULL;
    atomic_flag_clear(&c->busy);
    if (err) { err->code = LEMONPC_OK; err->message[0] = '\0'; }
    return LEMONPC_OK;
}

/* ---- a reply -------------------------------------------------------------- */

typedef struct say_job {
    lemonpc_conversation *c;
    lm_stream st;
    bool cancelled;
    lemonpc_stream_fn on_text;
    void *user;
} say_job;

static int emit_text(void *ud, const char *text, size_t n) {
    say_job *j = ud;
    return j->on_text ? j->on_text(j->user, text, n) : 0;
}

static int on_piece(void *ud, const char *piece, size_t n, lm_err *e) {
    say_job *j = ud;
    if (atomic_load(&j->c->cancel)) { j->cancelled = true; return lm_errf(e, "cancelled"); }
    if (lm_stream_push(&j->st, piece, n, e)) {
        j->cancelled = j->st.cancelled;
        return -1;
    }
    return 0;
}

static int on_token(void *ud, int32_t tk, lm_err *e) {
    say_job *j = ud;
    lemonpc_conversation *c = j->c;
    if (lm_api_toks_reserve(c, c->n_toks + 1)) return lm_errf(e, "out of memory");
    c->toks[c->n_toks++] = tk;
    return 0;
}

/* The prompt of the conversation with its turns from `first` on, and the
 * recalled block (or NULL) as a system turn just before the last (the
 * player's line): earlier turns stay as the cache holds them. */
static int render(lemonpc_conversation *c, size_t first, const char *block, int32_t **toks,
                  size_t *n, lm_err *e) {
    size_t nm = c->turns.n - first + (c->system ? 1 : 0) + (block ? 1 : 0);
    lm_chat_msg *m = malloc(nm * sizeof *m);
    lm_tok_span *pre = calloc(nm, sizeof *pre);
    if (!m || !pre) { free(m); free(pre); return lm_errf(e, "out of memory"); }
    size_t k = 0;
    if (c->system) m[k++] = (lm_chat_msg){"system", c->system};
    for (size_t i = first; i < c->turns.n; i++) {
        if (block && i + 1 == c->turns.n) m[k++] = (lm_chat_msg){"system", block};
        pre[k] = c->turns.tk[i];
        m[k++] = c->turns.m[i];
    }
    int rc = lm_generate_prompt_pre(c->npc->model->tok, m, pre, nm, toks, n, e);
    free(m);
    free(pre);
    return rc;
}

static size_t common(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    size_t k = 0;
    while (k < na && k < nb && a[k] == b[k]) k++;
    return k;
}

/* Fills the cache with prompt[0, n): keeps what it has in common with it,
 * or takes the NPC's persona prefix when that shares more, and evaluates
 * the rest in slices (a cancel is seen between them). */
static int load_prompt(lemonpc_conversation *c, const int32_t *p, size_t n, bool *cancelled,
                       lemonpc_reply_info *info, lm_err *e) {
    lemonpc_npc *npc = c->npc;
    size_t k = common(p, n, c->toks, c->n_toks);
    size_t kp = npc->pctx ? common(p, n, npc->prefix, (size_t)npc->n_prefix) : 0;
    if (kp > k) {
        if (lm_ctx_copy_prefix(c->ctx, npc->pctx, (int)kp, e)) return -1;
        if (lm_api_toks_reserve(c, kp)) return lm_errf(e, "out of memory");
        memcpy(c->toks, p, kp * sizeof *p);
        c->n_toks = k = kp;
    }
    if (k == n) k = n - 1;   /* the last token is evaluated again for its logits */
    lm_ctx_truncate(c->ctx, (int)k);
    c->n_toks = k;
    info->n_reused = (int)k;
    info->n_prompt = (int)(n - k);
    if (lm_api_toks_reserve(c, n)) return lm_errf(e, "out of memory");
    const size_t slice = 64;
    while (k < n) {
        if (atomic_load(&c->cancel)) { *cancelled = true; return lm_errf(e, "cancelled"); }
        size_t b = n - k < slice ? n - k : slice;
        if (n - k - b == 1 && b > 2) b--;   /* never a lone last token (lm_eval's rule) */
        bool last = k + b == n;
        if (lm_eval(c->ctx, p + k, (int)b, last ? LM_LOGITS_LAST : LM_LOGITS_NONE,
                    last ? c->logits : NULL, e))
            return -1;
        memcpy(c->toks + k, p + k, b * sizeof *p);
        k += b;
        c->n_toks = k;
    }
    return 0;
}

/* Evaluates prompt p[0, n) into the cache and generates the reply: *text
 * the reply (malloc'd), *same whether the sampled tokens [*r0, *r1) of
 * c->toks spell it; logp, when not NULL, gets the reply's log-probability
 * (lm_gen_info.logp, n_logp). Returns a status; e says why on failure. */
static lemonpc_status reply_to(lemonpc_conversation *c, const int32_t *p, size_t n,
                               lm_sampler *smp, const lm_sampler_params *sp,
                               lemonpc_stream_fn on_text, void *user, char **text, bool *same,
                               size_t *r0, size_t *r1, lemonpc_reply_info *info, double t0,
                               lm_gen_info *logp, lm_err *e) {
    lemonpc_npc *npc = c->npc;
    lemonpc_model *m = npc->model;
    *text = NULL;
    *same = false;
    info->attempts = 1;
    say_job j = {.c = c, .on_text = on_text, .user = user};
    lm_stream_init(&j.st, (const char *const *)c->stop, c->n_stop, emit_text, &j);
    lemonpc_status code = LEMONPC_ERR_INTERNAL;
    double tp = lm_now_s();
    if (reply_begin(c, e) || load_prompt(c, p, n, &j.cancelled, info, e)) goto fail;
    info->prompt_seconds = lm_now_s() - tp;
    /* the repetition penalty looks back over the conversation's last tokens */
    lm_sampler_reset(smp);
    size_t back = sp->repeat_last_n > 0 ? (size_t)sp->repeat_last_n : 0;
    for (size_t i = c->n_toks > back ? c->n_toks - back : 0; i < c->n_toks; i++)
        lm_sampler_accept(smp, c->toks[i]);
    lm_gen_params gp = {.sp = *sp, .max_tokens = c->max_tokens,
                        .stop = (const char *const *)c->stop, .n_stop = c->n_stop,
                        .logp = logp != NULL};
    lm_decoder d = {c->ctx, m->tok, smp, c->logits, m->eos, m->im_end, true, on_piece, &j,
                    on_token};
    lm_gen_info gi = {0};
    *r0 = c->n_toks;
    int rc = lm_decode(&d, &gp, NULL, &gi, e);
    *r1 = c->n_toks;
    c->n_toks = (size_t)lm_ctx_n_past(c->ctx);   /* the stop token is not in the cache */
    if (gi.first_token_at > 0) info->first_token_seconds = gi.first_token_at - t0;
    info->n_generated = gi.n_gen;
    if (logp) *logp = gi;
    if (rc) goto fail;
    if (lm_stream_finish(&j.st, e)) { j.cancelled = j.st.cancelled; goto fail; }
    info->stop = j.st.stopped || gi.hit_stop ? LEMONPC_STOP_STRING
               : gi.hit_ctx ? LEMONPC_STOP_CONTEXT_FULL
               : gi.hit_max ? LEMONPC_STOP_MAX_TOKENS : LEMONPC_STOP_END;
    if (!(*text = lm_stream_take(&j.st))) {
        code = LEMONPC_ERR_NOMEM;
        lm_errf(e, "out of memory");
        goto fail;
    }
    /* do the sampled tokens spell the reply? then a later prompt can carry
     * them and match the cache up to the reply's end */
    *same = *r1 == c->n_toks;
    if (*same) {
        lm_sb spelled = {0};
        char piece[256];
        for (size_t i = *r0; i < *r1; i++) {
            int nb = lm_token_bytes(m->tok, c->toks[i], false, piece, sizeof piece);
            if (nb > 0) lm_sb_add(&spelled, piece, (size_t)(nb < 256 ? nb : 256));
        }
        *same = !spelled.oom && spelled.len == strlen(*text) &&
                (spelled.len == 0 || !memcmp(spelled.p, *text, spelled.len));
        lm_sb_free(&spelled);
    }
    lm_stream_free(&j.st);
    reply_end(c);
    return LEMONPC_OK;
fail:
    if (j.cancelled || atomic_load(&c->cancel)) {
        code = LEMONPC_ERR_CANCELLED;
        info->stop = LEMONPC_STOP_CANCELLED;
        lm_errf(e, "the reply was cancelled");
    }
    c->n_toks = (size_t)lm_ctx_n_past(c->ctx);
    lm_stream_free(&j.st);
    reply_end(c);
    return lm_api_code_of(e, code);
}

/* log p(r[0, nr), then the end token when end | prompt p[0, n)) in c's
 * cache: the prompt as load_prompt fills it, then the reply's rows in
 * slices, the cache and c->toks kept in step. */
static int score_in_cache(lemonpc_conversation *c, const int32_t *p, size_t n, const int32_t *r,
                          size_t nr, bool end, double *logp, lm_err *e) {
    const lemonpc_model *m = c->npc->model;
    const int V = m->m->cfg.n_vocab;
    const int32_t stop = m->im_end >= 0 ? m->im_end : m->eos;
    enum { SLICE = 16 };
    *logp = 0;
    if (n + nr > (size_t)m->n_ctx)
        return lm_errf(e, "guard: a reply of %zu tokens after %zu does not fit the %d-token "
                       "context", nr, n, m->n_ctx);
    bool cancelled = false;
    lemonpc_reply_info tmp = {0};
    float *rows = NULL;
    int rc = -1;
    if (reply_begin(c, e) || load_prompt(c, p, n, &cancelled, &tmp, e)) goto done;
    if (nr == 0) {
        *logp = end ? lm_token_logp(c->logits, V, stop) : 0;
        rc = 0;
        goto done;
    }
    *logp = lm_token_logp(c->logits, V, r[0]);
    if (!(rows = malloc((size_t)SLICE * (size_t)V * sizeof *rows)) ||
        lm_api_toks_reserve(c, n + nr)) {
        lm_errf(e, "out of memory");
        goto done;
    }
    /* row i predicts r[i + 1], the last the end token */
    for (size_t k = 0; k < nr; k += SLICE) {
        size_t b = nr - k < SLICE ? nr - k : SLICE;
        if (lm_eval(c->ctx, r + k, (int)b, LM_LOGITS_ALL, rows, e)) goto done;
        memcpy(c->toks + c->n_toks, r + k, b * sizeof *r);
        c->n_toks += b;
        for (size_t i = 0; i < b; i++) {
            if (k + i + 1 < nr) *logp += lm_token_logp(rows + i * (size_t)V, V, r[k + i + 1]);
            else if (end) *logp += lm_token_logp(rows + i * (size_t)V, V, stop);
        }
    }
    rc = 0;
done:
    free(rows);
    reply_end(c);
    return rc;
}

/* One lemonpc_say under the NPC's guard: the draws (lm_guard_draw_fn) and
 * their scores with the line left out (lm_guard_empty_fn). */
typedef struct {
    lemonpc_conversation *c;
    const char *line;
    bool knows;
    const int32_t *p, *pe;   /* the prompt; with the line empty and no block */
    size_t n, ne;
    double t0;
    lemonpc_reply_info *info, first;
    lemonpc_status code;
} guard_job;

static int draw_reply(void *ud, int attempt, lm_guard_draw *d, lm_err *e) {
    guard_job *j = ud;
    lemonpc_conversation *c = j->c;
    lemonpc_npc *npc = c->npc;
    lm_sampler *rs = NULL;
    lm_sampler_params rp = c->sp;
    if (attempt > 0) {
        rp = lm_guard_retry_params(&c->sp, npc->guard_temperature, c->turns.n, attempt);
        if (!(rs = lm_sampler_new(&rp, npc->model->m->cfg.n_vocab, e))) {
            j->code = LEMONPC_ERR_NOMEM;
            return -1;
        }
    }
    lemonpc_reply_info ai = {0};
    lm_gen_info gi = {0};
    bool same = false;
    size_t r0 = 0, r1 = 0;
    j->code = reply_to(c, j->p, j->n, rs ? rs : c->smp, &rp, NULL, NULL, &d->text, &same, &r0,
                       &r1, &ai, j->t0, j->pe ? &gi : NULL, e);
    lm_sampler_free(rs);
    if (j->code != LEMONPC_OK) return -1;
    if (attempt == 0) j->first = ai;
    j->info->n_generated += ai.n_generated;
    d->stop = (int)ai.stop;
    d->n_gen = ai.n_generated;
    d->logp = gi.logp;
    d->n_logp = gi.n_logp;
    if (same) {
        if (!(d->tokens = malloc((r1 - r0 + 1) * sizeof *d->tokens))) {
            j->code = LEMONPC_ERR_NOMEM;
            return lm_errf(e, "out of memory");
        }
        memcpy(d->tokens, c->toks + r0, (r1 - r0) * sizeof *d->tokens);
        d->n_tokens = r1 - r0;
    }
    d->failed = lm_guard_check(npc->guard, j->line, d->text, c->who, ai.stop == LEMONPC_STOP_END,
                               j->knows);
    return 0;
}

static int empty_reply(void *ud, const lm_guard_draw *d, double *logp, lm_err *e) {
    guard_job *j = ud;
    int32_t *own = NULL;
    size_t n_own = 0;
    if (!d->tokens && lm_tokenize(j->c->npc->model->tok, d->text, strlen(d->text), false, &own,
                                  &n_own, e)) {
        j->code = LEMONPC_ERR_NOMEM;
        return -1;
    }
    int rc = score_in_cache(j->c, j->pe, j->ne, d->tokens ? d->tokens : own,
                            d->tokens ? d->n_tokens : n_own, d->stop == LEMONPC_STOP_END, logp, e);
    free(own);
    if (rc) j->code = atomic_load(&j->c->cancel) ? LEMONPC_ERR_CANCELLED : LEMONPC_ERR_INTERNAL;
    return rc;
}

/* reply_to under the NPC's guard (guard.h, lm_guard_draw_all): the first
 * draw with the conversation's sampler, the others with their own. pe, when
 * not NULL, is the prompt with the line empty and no block, by which the
 * best of several draws is chosen. Nothing is streamed until the reply is
 * chosen. *tk (malloc'd, or NULL when they do not spell it) gets the chosen
 * reply's sampled tokens, which the turn keeps: the cache holds the last
 * draw or score, and the next prompt, carrying the chosen one's tokens,
 * re-evaluates from where they part. */
static lemonpc_status guarded_reply(lemonpc_conversation *c, const char *line, bool knows,
                                    const int32_t *p, size_t n, const int32_t *pe, size_t ne,
                                    lemonpc_stream_fn on_text, void *user, char **text,
                                    int32_t **tk, size_t *ntk, lemonpc_reply_info *info, double t0,
                                    lm_err *e) {
    lemonpc_npc *npc = c->npc;
    *tk = NULL;
    *ntk = 0;
    guard_job j = {c, line, knows, p, pe, n, ne, t0, info, {0}, LEMONPC_OK};
    lm_guard_draws ds = {0};
    size_t ci = 0;
    if (lm_guard_draw_all(npc->guard_best_of, npc->guard_retries, draw_reply,
                          pe ? empty_reply : NULL, &j, &ds, &ci, e)) {
        lemonpc_status code = j.code != LEMONPC_OK ? j.code : LEMONPC_ERR_NOMEM;
        if (code == LEMONPC_ERR_CANCELLED) info->stop = LEMONPC_STOP_CANCELLED;
        lm_guard_draws_free(&ds);
        return code;
    }
    lm_guard_draw *best = &ds.d[ci];
    info->attempts = (int)ds.n;
    info->stop = (lemonpc_stop)best->stop;
    info->n_prompt = j.first.n_prompt;
    info->n_reused = j.first.n_reused;
    info->prompt_seconds = j.first.prompt_seconds;
    info->failed_checks = best->failed;
    info->relevance = best->relevance;
    *tk = best->tokens;
    *ntk = best->n_tokens;
    *text = best->text;
    best->tokens = NULL;
    best->text = NULL;
    lm_guard_draws_free(&ds);
    /* the player sees the reply only now: its first token is here */
    info->first_token_seconds = lm_now_s() - t0;
    if (on_text && (*text)[0] && on_text(user, *text, strlen(*text))) {
        free(*text);
        *text = NULL;
        free(*tk);
        *tk = NULL;
        info->stop = LEMONPC_STOP_CANCELLED;
        lm_errf(e, "the reply was cancelled");
        return LEMONPC_ERR_CANCELLED;
    }
    return LEMONPC_OK;
}

static void done_ok(lemonpc_error *err) {
    if (err) { err->code = LEMONPC_OK; err->message[0] = '\0'; }
}

lemonpc_status lemonpc_say(lemonpc_conversation *c, const char *line, lemonpc_stream_fn on_text,
                           void *user, char **reply, lemonpc_reply_info *info_out,
                           lemonpc_error *err) {
    if (reply) *reply = NULL;
    lemonpc_reply_info info = {0};
    if (info_out) *info_out = info;
    if (!c || !line) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_say: %s is NULL",
                                         !c ? "the conversation" : "the line");
    if (atomic_flag_test_and_set(&c->busy))
        return lm_api_failf(err, LEMONPC_ERR_BUSY, "the conversation is in use by another thread");
    atomic_store(&c->cancel, false);
    double t0 = lm_now_s();
    lm_err e = {{0}};
    lemonpc_status code = LEMONPC_ERR_INTERNAL;
    lemonpc_npc *npc = c->npc;
    lemonpc_model *m = npc->model;
    int32_t *p = NULL, *pe = NULL;
    char *text = NULL, *block = NULL;
    int32_t *kept = NULL;    /* the reply's sampled tokens, when they spell it */
    size_t n = 0, ne = 0, first = 0, r0 = 0, r1 = 0, n_kept = 0;
    bool pushed = false, same = false;
    if (lm_api_npc_prefix(npc, &e)) goto fail;
    if (lm_api_recall(c, line, &block, &e)) goto fail;
    if (lm_api_turns_push(&c->turns, "user", line, NULL, 0)) goto oom;
    pushed = true;
    /* Room for the reply; the oldest exchanges leave the prompt until the
     * rest fits (the persona never does). */
    int reserve = c->max_tokens > 0 ? c->max_tokens : m->n_ctx / 4;
    if (reserve > m->n_ctx / 2) reserve = m->n_ctx / 2;
    for (;;) {
        if (render(c, first, block, &p, &n, &e)) { code = LEMONPC_ERR_INVALID; goto fail; }
        if (n + (size_t)reserve <= (size_t)m->n_ctx || first + 1 >= c->turns.n) break;
        free(p);
        p = NULL;
        first += 2;
        info.n_dropped_turns += 2;
    }
    if (n + 1 > (size_t)m->n_ctx) {
        code = LEMONPC_ERR_CONTEXT_FULL;
        lm_errf(&e, "context full: the prompt needs %zu tokens, the context holds %d", n,
                m->n_ctx);
        goto fail;
    }
    if (npc->guard) {
        /* the best of several draws is the one most about the line: each is
         * scored again with the line left empty and no block */
        if (npc->guard_best_of > 1) {
            lm_chat_msg *said = &c->turns.m[c->turns.n - 1];
            const char *keep = said->content;
            said->content = "";
            int rr = render(c, first, NULL, &pe, &ne, &e);
            said->content = keep;
            if (rr) { code = LEMONPC_ERR_INVALID; goto fail; }
        }
        code = guarded_reply(c, line, block != NULL, p, n, pe, ne, on_text, user, &text, &kept,
                             &n_kept, &info, t0, &e);
    } else {
        code = reply_to(c, p, n, c->smp, &c->sp, on_text, user, &text, &same, &r0, &r1, &info,
                        t0, NULL, &e);
        if (code == LEMONPC_OK && same && !(kept = malloc((r1 - r0 + 1) * sizeof *kept))) goto oom;
        if (kept) memcpy(kept, c->toks + r0, (r1 - r0) * sizeof *kept), n_kept = r1 - r0;
    }
    if (code != LEMONPC_OK) goto fail;
    if (lm_api_turns_push(&c->turns, "assistant", text, kept, n_kept)) goto oom;
    /* the exchange is committed to the world before the call returns */
    if (lm_api_record(c, line, text, &e)) {
        turns_pop(&c->turns);
        code = LEMONPC_ERR_IO;
        goto fail;
    }
    free(c->memory);
    c->memory = block;
    block = NULL;
    if (reply) *reply = text;
    else free(text);
    free(kept);
    free(p);
    free(pe);
    info.total_seconds = lm_now_s() - t0;
    if (info_out) *info_out = info;
    done_ok(err);
    atomic_flag_clear(&c->busy);
    return LEMONPC_OK;
oom:
    lm_errf(&e, "out of memory");
    code = LEMONPC_ERR_NOMEM;
fail:
    if (pushed) turns_pop(&c->turns);
    free(block);
    free(text);
    free(kept);
    free(p);
    free(pe);
    info.total_seconds = lm_now_s() - t0;
    if (info_out) *info_out = info;
    atomic_flag_clear(&c->busy);
    return lm_api_fail(err, code, &e);
}

/* A raw completion of prompt in c's cache (lemonpc_complete and
 * lemonpc_conversation_complete): c's turns are not touched. */
static lemonpc_status complete_in(lemonpc_conversation *c, const char *prompt,
                                  lemonpc_stream_fn on_text, void *user, char **reply,
                                  lemonpc_reply_info *info, double t0, lm_err *e) {
    lemonpc_npc *npc = c->npc;
    lemonpc_status code = LEMONPC_ERR_INTERNAL;
    int32_t *p = NULL;
    char *text = NULL;
    size_t n = 0, r0, r1;
    bool same;
    if (lm_api_npc_prefix(npc, e)) goto fail;
    if (lm_tokenize(npc->model->tok, prompt, strlen(prompt), true, &p, &n, e)) {
        code = LEMONPC_ERR_INVALID;
        goto fail;
    }
    if (n == 0) {
        code = LEMONPC_ERR_INVALID;
        lm_errf(e, "lemonpc_complete: empty prompt");
        goto fail;
    }
    if (n + 1 > (size_t)npc->model->n_ctx) {
        code = LEMONPC_ERR_CONTEXT_FULL;
        lm_errf(e, "context full: the prompt needs %zu tokens, the context holds %d", n,
                npc->model->n_ctx);
        goto fail;
    }
    code = reply_to(c, p, n, c->smp, &c->sp, on_text, user, &text, &same, &r0, &r1, info, t0, NULL,
                    e);
    if (code != LEMONPC_OK) goto fail;
    if (reply) *reply = text;
    else free(text);
    free(p);
    return LEMONPC_OK;
fail:
    free(p);
    return lm_api_code_of(e, code);
}

lemonpc_status lemonpc_complete(lemonpc_npc *npc, const char *prompt, lemonpc_stream_fn on_text,
                                void *user, char **reply, lemonpc_reply_info *info_out,
                                lemonpc_error *err) {
    if (reply) *reply = NULL;
    lemonpc_reply_info info = {0};
    if (info_out) *info_out = info;
    if (!npc || !prompt) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_complete: %s is "
                                             "NULL", !npc ? "the NPC" : "the prompt");
    double t0 = lm_now_s();
    lm_err e = {{0}};
    lemonpc_status code = LEMONPC_ERR_INTERNAL;
    lemonpc_conversation *c = lm_api_conv_new(npc, NULL, NULL, &e);
    if (c) code = complete_in(c, prompt, on_text, user, reply, &info, t0, &e);
    else code = lm_api_code_of(&e, code);
    lemonpc_conversation_close(c);
    info.total_seconds = lm_now_s() - t0;
    if (info_out) *info_out = info;
    if (code != LEMONPC_OK) return lm_api_fail(err, code, &e);
    done_ok(err);
    return LEMONPC_OK;
}

lemonpc_status lemonpc_conversation_complete(lemonpc_conversation *c, const char *prompt,
                                             lemonpc_stream_fn on_text, void *user, char **reply,
                                             lemonpc_reply_info *info_out, lemonpc_error *err) {
    if (reply) *reply = NULL;
    lemonpc_reply_info info = {0};
    if (info_out) *info_out = info;
    if (!c || !prompt) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_conversation_"
                                           "complete: %s is NULL",
                                           !c ? "the conversation" : "the prompt");
    if (atomic_flag_test_and_set(&c->busy))
        return lm_api_failf(err, LEMONPC_ERR_BUSY, "the conversation is in use by another thread");
    atomic_store(&c->cancel, false);
    double t0 = lm_now_s();
    lm_err e = {{0}};
    lemonpc_status code = complete_in(c, prompt, on_text, user, reply, &info, t0, &e);
    info.total_seconds = lm_now_s() - t0;
    if (info_out) *info_out = info;
    atomic_flag_clear(&c->busy);
    if (code != LEMONPC_OK) return lm_api_fail(err, code, &e);
    done_ok(err);
    return LEMONPC_OK;
}

lemonpc_status lemonpc_conversation_set_turns(lemonpc_conversation *c, const lemonpc_turn *turns,
                                              size_t n, lemonpc_error *err) {
    if (!c || (n && !turns))
        return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_conversation_set_turns: %s is NULL",
                            !c ? "the conversation" : "turns");
    for (size_t i = 0; i < n; i++) {
        if (!turns[i].role || (strcmp(turns[i].role, "user") && strcmp(turns[i].role, "assistant")))
            return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_conversation_set_turns: turn "
                                "%zu: role must be \"user\" or \"assistant\", got %s%s%s", i,
                                turns[i].role ? "\"" : "", turns[i].role ? turns[i].role : "NULL",
                                turns[i].role ? "\"" : "");
        if (!turns[i].text)
            return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_conversation_set_turns: turn "
                                "%zu has no text", i);
    }
    if (atomic_flag_test_and_set(&c->busy))
        return lm_api_failf(err, LEMONPC_ERR_BUSY, "the conversation is in use by another thread");
    lm_turns t = {0};
    for (size_t i = 0; i < n; i++) {
        const lm_tok_span *keep = NULL;
        if (i < c->turns.n && !strcmp(c->turns.m[i].role, turns[i].role) &&
            !strcmp(c->turns.m[i].content, turns[i].text))
            keep = &c->turns.tk[i];
        if (lm_api_turns_push(&t, turns[i].role, turns[i].text, keep ? keep->p : NULL,
                              keep ? keep->n : 0)) {
            lm_api_turns_clear(&t);
            free(t.m);
            free(t.tk);
            atomic_flag_clear(&c->busy);
            return lm_api_failf(err, LEMONPC_ERR_NOMEM, "out of memory");
        }
    }
    lm_api_turns_clear(&c->turns);
    free(c->turns.m);
    free(c->turns.tk);
    c->turns = t;
    atomic_flag_clear(&c->busy);
    done_ok(err);
    return LEMONPC_OK;
}

lemonpc_status lemonpc_conversation_set_sampling(lemonpc_conversation *c,
                                                 const lemonpc_sampling *sampling,
                                                 const char *const *stop, size_t n_stop,
                                                 lemonpc_error *err) {
    if (!c) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_conversation_set_sampling: "
                                "the conversation is NULL");
    if (n_stop && !stop)
        return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_conversation_set_sampling: %zu "
                            "stop strings without strings", n_stop);
    for (size_t i = 0; i < n_stop; i++)
        if (!stop[i] || !stop[i][0])
            return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_conversation_set_sampling: "
                                "stop string %zu is %s", i, stop[i] ? "empty" : "NULL");
    lemonpc_npc *npc = c->npc;
    lm_err e = {{0}};
    lm_sampler_params sp = npc->sp;
    int max_tokens = npc->max_tokens;
    if (sampling) {
        if (lm_api_sampling_params(sampling, &sp, &e)) return lm_api_fail(err, LEMONPC_ERR_INVALID, &e);
        max_tokens = sampling->max_tokens;
    }
    lm_sampler *smp = lm_sampler_new(&sp, npc->model->m->cfg.n_vocab, &e);
    if (!smp) return lm_api_fail(err, lm_api_code_of(&e, LEMONPC_ERR_INVALID), &e);
    if (atomic_flag_test_and_set(&c->busy)) {
        lm_sampler_free(smp);
        return lm_api_failf(err, LEMONPC_ERR_BUSY, "the conversation is in use by another thread");
    }
    for (size_t i = c->n_stop_base; i < c->n_stop; i++) free(c->stop[i]);
    c->n_stop = c->n_stop_base;
    char **st = realloc(c->stop, (c->n_stop_base + n_stop + 1) * sizeof *st);
    if (!st) {
        lm_sampler_free(smp);
        atomic_flag_clear(&c->busy);
        return lm_api_failf(err, LEMONPC_ERR_NOMEM, "out of memory");
    }
    c->stop = st;
    size_t k = c->n_stop_base;
    for (size_t i = 0; i < n_stop; i++)
        if ((c->stop[k] = strdup(stop[i]))) k++;
    c->n_stop = k;
    lm_sampler_free(c->smp);
    c->smp = smp;
    c->sp = sp;
    c->max_tokens = max_tokens;
    atomic_flag_clear(&c->busy);
    if (k != c->n_stop_base + n_stop)
        return lm_api_failf(err, LEMONPC_ERR_NOMEM, "out of memory");
    done_ok(err);
    return LEMONPC_OK;
}
