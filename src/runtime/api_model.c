/* The public API's model and NPC handles (include/lemonpc.h): loading a base
 * model once, characters on it, and each character's persona prefix,
 * evaluated once and shared by all its conversations. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/api_internal.h"
#include "runtime/generate.h"
#include "runtime/npc_stamp.h"

/* ---- errors ------------------------------------------------------------- */

const char *lemonpc_status_name(lemonpc_status code) {
    switch (code) {
    case LEMONPC_OK: return "ok";
    case LEMONPC_ERR_INVALID: return "invalid argument";
    case LEMONPC_ERR_NOMEM: return "out of memory";
    case LEMONPC_ERR_IO: return "file error";
    case LEMONPC_ERR_FORMAT: return "bad file format";
    case LEMONPC_ERR_MISMATCH: return "saved by another NPC or model";
    case LEMONPC_ERR_CONTEXT_FULL: return "context full";
    case LEMONPC_ERR_CANCELLED: return "cancelled";
    case LEMONPC_ERR_BUSY: return "busy";
    case LEMONPC_ERR_INTERNAL: return "internal error";
    case LEMONPC_ERR_NOT_FOUND: return "not found";
    }
    return "unknown status";
}

const char *lemonpc_version(void) { return LEMONPC_VERSION; }

lemonpc_status lm_api_fail(lemonpc_error *err, lemonpc_status code, const lm_err *e) {
    if (err) {
        err->code = code;
        snprintf(err->message, sizeof err->message, "%s",
                 e && e->msg[0] ? e->msg : lemonpc_status_name(code));
    }
    return code;
}

lemonpc_status lm_api_failf(lemonpc_error *err, lemonpc_status code, const char *fmt, ...) {
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

lemonpc_status lm_api_code_of(const lm_err *e, lemonpc_status fallback) {
    if (strstr(e->msg, "out of memory")) return LEMONPC_ERR_NOMEM;
    if (strstr(e->msg, "context full")) return LEMONPC_ERR_CONTEXT_FULL;
    if (strstr(e->msg, "cannot open") || strstr(e->msg, "No such file")) return LEMONPC_ERR_IO;
    return fallback;
}

static void ok(lemonpc_error *err) {
    if (err) { err->code = LEMONPC_OK; err->message[0] = '\0'; }
}

uint64_t lm_api_fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

#define FNV0 0xcbf29ce484222325ULL

/* ---- the model ---------------------------------------------------------- */

lemonpc_model_params lemonpc_model_default_params(void) {
    return (lemonpc_model_params){.threads = 0, .n_ctx = 0, .kv_type = LEMONPC_KV_DEFAULT};
}

void lemonpc_model_free(lemonpc_model *m) {
    if (!m) return;
    if (atomic_load(&m->n_npcs) > 0)
        fprintf(stderr, "lemonpc: lemonpc_model_free with %d NPCs alive: freeing anyway\n",
                atomic_load(&m->n_npcs));
    lm_pool_free(m->pool);
    lm_tokenizer_free(m->tok);
    lm_model_free(m->m);
    free(m);
}

lemonpc_model *lemonpc_model_load(const char *path, const lemonpc_model_params *params,
                                  lemonpc_error *err) {
    if (!path) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_model_load: no path"), NULL;
    lemonpc_model_params p = params ? *params : lemonpc_model_default_params();
    lm_err e = {{0}};
    lemonpc_model *m = calloc(1, sizeof *m);
    if (!m) return lm_api_failf(err, LEMONPC_ERR_NOMEM, "out of memory"), NULL;
    lemonpc_status code = LEMONPC_ERR_FORMAT;
    if (!(m->m = lm_model_load(path, &e))) {
        code = lm_api_code_of(&e, strstr(e.msg, path) && strstr(e.msg, "open") ? LEMONPC_ERR_IO
                                                                                : LEMONPC_ERR_FORMAT);
        goto fail;
    }
    if (!(m->tok = lm_tokenizer_load(m->m->gguf, &e))) {
        lm_err_prefix(&e, "%s", path);
        goto fail;
    }
    if (lm_tokenizer_n_vocab(m->tok) != m->m->cfg.n_vocab) {
        lm_errf(&e, "%s: tokenizer has %d tokens but token_embd.weight has %d rows", path,
                lm_tokenizer_n_vocab(m->tok), m->m->cfg.n_vocab);
        goto fail;
    }
    int ctx_max = m->m->cfg.n_ctx_train;
    m->n_ctx = p.n_ctx > 0 ? p.n_ctx : (ctx_max < 2048 ? ctx_max : 2048);
    if (m->n_ctx > ctx_max) {
        lm_errf(&e, "n_ctx %d exceeds the model's context_length %d", m->n_ctx, ctx_max);
        code = LEMONPC_ERR_INVALID;
        goto fail;
    }
    if (p.kv_type != LEMONPC_KV_DEFAULT && p.kv_type != LEMONPC_KV_F16 &&
        p.kv_type != LEMONPC_KV_F32) {
        lm_errf(&e, "kv_type %d is not a lemonpc_kv_type (DEFAULT, F16 or F32)", (int)p.kv_type);
        code = LEMONPC_ERR_INVALID;
        goto fail;
    }
    m->kv_type = p.kv_type == LEMONPC_KV_F32 ? LM_F32 : LM_F16;
    if (!(m->pool = lm_pool_new(p.threads > 0 ? p.threads : 0, &e))) {
        code = LEMONPC_ERR_INTERNAL;
        goto fail;
    }
    m->eos = lm_tokenizer_eos(m->tok);
    m->im_end = lm_tokenizer_find(m->tok, "<|im_end|>");
    /* The weights' fingerprint: the header (metadata, tensor table) and the
     * last MB of tensor data, with the size: cheap, and any other model or
     * quantisation differs. */
    const gguf_file *g = m->m->gguf;
    size_t head = g->size < (1u << 20) ? g->size : (1u << 20);
    uint64_t h = lm_api_fnv(FNV0, &g->size, sizeof g->size);
    h = lm_api_fnv(h, g->map, head);
    h = lm_api_fnv(h, g->map + g->size - head, head);
    m->fingerprint = h;
    ok(err);
    return m;
fail:
    lm_api_fail(err, code, &e);
    lemonpc_model_free(m);
    return NULL;
}

/* ---- NPCs --------------------------------------------------------------- */

lemonpc_sampling lemonpc_sampling_defaults(void) {
    return (lemonpc_sampling){.temperature = 0.7f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                              .repeat_penalty = 1.1f, .repeat_last_n = 64, .seed = 0,
                              .max_tokens = 160};
}

lemonpc_npc_params lemonpc_npc_default_params(void) {
    return (lemonpc_npc_params){.persona = LEMONPC_PERSONA_AUTO, .adapter_scale = 1.0f,
                                .sampling = lemonpc_sampling_defaults(),
                                .guard = {0, LEMONPC_CHECK_DEFAULT, 0.7f, 1}};
}

void lemonpc_npc_free(lemonpc_npc *n) {
    if (!n) return;
    if (atomic_load(&n->n_convs) > 0)
        fprintf(stderr, "lemonpc: lemonpc_npc_free with %d conversations open: freeing anyway\n",
                atomic_load(&n->n_convs));
    lm_ctx_free(n->pctx);
    free(n->prefix);
    pthread_mutex_destroy(&n->mu);
    for (size_t i = 0; i < n->n_stop; i++) free(n->stop[i]);
    free(n->stop);
    lm_adapter_free(n->adapter);
    lm_guard_free(n->guard);
    free(n->system);
    lm_world_free(n->w);
    lm_character_free(n->ch);
    free(n->name);
    free(n->wid);
    if (n->world) atomic_fetch_sub(&n->world->n_npcs, 1);
    atomic_fetch_sub(&n->model->n_npcs, 1);
    free(n);
}

const char *lemonpc_npc_name(const lemonpc_npc *n) { return n && n->name ? n->name : ""; }
const char *lemonpc_npc_warning(const lemonpc_npc *n) { return n ? n->warning : ""; }

lemonpc_status lemonpc_npc_prepare(lemonpc_npc *n, lemonpc_error *err) {
    if (!n) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_npc_prepare: no NPC");
    lm_err e = {{0}};
    if (lm_api_npc_prefix(n, &e)) return lm_api_fail(err, lm_api_code_of(&e, LEMONPC_ERR_INTERNAL), &e);
    ok(err);
    return LEMONPC_OK;
}

int lemonpc_npc_prefix_tokens(const lemonpc_npc *n) {
    if (!n) return 0;
    pthread_mutex_lock((pthread_mutex_t *)&n->mu);
    int k = n->prefix_ready ? n->n_prefix : 0;
    pthread_mutex_unlock((pthread_mutex_t *)&n->mu);
    return k;
}

int lm_api_sampling_params(const lemonpc_sampling *s, lm_sampler_params *p, lm_err *e) {
    *p = (lm_sampler_params){.temp = s->temperature, .top_k = s->top_k, .top_p = s->top_p,
                             .min_p = s->min_p, .repeat_penalty = s->repeat_penalty,
                             .repeat_last_n = s->repeat_last_n, .seed = s->seed};
    if (lm_sampler_params_check(p, e)) return lm_err_prefix(e, "sampling");
    if (s->top_k < 0) return lm_errf(e, "sampling: top_k must be >= 0, got %d", s->top_k);
    return 0;
}

/* The system turn without a scene: what the NPC's fingerprint covers. */
static char *npc_system(const lemonpc_npc *n, const lm_scene *scene, lm_err *e) {
    if (n->system) {
        char *s = strdup(n->system);
        if (!s) lm_errf(e, "out of memory");
        return s;
    }
    if (!n->ch) return NULL;
    return lm_persona_system(n->ch, n->w, (lm_persona_mode)n->mode, scene, e);
}

lemonpc_npc *lemonpc_npc_load(lemonpc_model *model, const lemonpc_npc_params *params,
                              lemonpc_error *err) {
    if (!model) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_npc_load: no model"), NULL;
    lemonpc_npc_params p = params ? *params : lemonpc_npc_default_params();
    if (p.sheet && p.system)
        return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_npc_load: give a sheet or a "
                            "system turn, not both"), NULL;
    if (p.persona < LEMONPC_PERSONA_AUTO || p.persona > LEMONPC_PERSONA_FULL)
        return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_npc_load: persona %d is not a "
                            "lemonpc_persona", (int)p.persona), NULL;
    if (p.n_stop && !p.stop)
        return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_npc_load: n_stop %zu without "
                            "stop strings", p.n_stop), NULL;
    lm_err e = {{0}};
    lemonpc_status code = LEMONPC_ERR_INVALID;
    lemonpc_npc *n = calloc(1, sizeof *n);
    if (!n) return lm_api_failf(err, LEMONPC_ERR_NOMEM, "out of memory"), NULL;
    n->model = model;
    atomic_fetch_add(&model->n_npcs, 1);
    pthread_mutex_init(&n->mu, NULL);
    n->adapter_scale = p.adapter_scale;
    n->max_tokens = p.sampling.max_tokens;
    if (lm_api_sampling_params(&p.sampling, &n->sp, &e)) goto fail;
    if (p.n_stop) {
        if (!(n->stop = calloc(p.n_stop, sizeof *n->stop))) goto oom;
        for (size_t i = 0; i < p.n_stop; i++) {
            if (!p.stop[i] || !p.stop[i][0]) {
                lm_errf(&e, "lemonpc_npc_load: stop string %zu is empty", i);
                goto fail;
            }
            if (!(n->stop[i] = strdup(p.stop[i]))) goto oom;
            n->n_stop = i + 1;
        }
    }
    if (p.system && !(n->system = strdup(p.system))) goto oom;
    if (p.sheet) {
        code = LEMONPC_ERR_FORMAT;
        if (lm_sheet_load_character(p.sheet, &n->ch, &n->w, &e)) goto fail;
        /* the mode the adapter (or the model) was trained with */
        lm_npc_stamp st = {0};
        if (p.adapter && lm_npc_stamp_read(p.adapter, &st, &e)) { code = LEMONPC_ERR_IO; goto fail; }
        if (!st.present && lm_npc_stamp_read(model->m->gguf->path, &st, &e)) goto fail;
        n->mode = lm_npc_persona_mode(&st, (int)p.persona, n->ch, n->w, n->warning,
                                      sizeof n->warning);
        if (!st.present && p.persona == LEMONPC_PERSONA_AUTO) n->mode = LM_PERSONA_FULL;
        if (!(n->name = strdup(n->ch->name ? n->ch->name : ""))) goto oom;
    }
    if (!n->name && !(n->name = strdup(""))) goto oom;
    if (p.adapter) {
        code = LEMONPC_ERR_FORMAT;
        if (!(n->adapter = lm_adapter_load(model->m, p.adapter, &e))) goto fail;
    }
    if (p.guard.retries < 0 || p.guard.retries > 16 || (p.guard.checks & ~(unsigned)LEMONPC_CHECK_ALL) ||
        !(p.guard.temperature >= 0 && p.guard.temperature <= 4) || p.guard.best_of < 0 ||
        p.guard.best_of > 16) {
        code = LEMONPC_ERR_INVALID;
        lm_errf(&e, "lemonpc_npc_load: guard: retries %d (0 to 16), checks 0x%x (LEMONPC_CHECK_x "
                "bits), temperature %g (0 to 4), best_of %d (0 to 16)", p.guard.retries,
                p.guard.checks, (double)p.guard.temperature, p.guard.best_of);
        goto fail;
    }
    if (p.guard.retries > 0 || p.guard.best_of > 1) {
        unsigned checks = p.guard.checks ? p.guard.checks : LEMONPC_CHECK_DEFAULT;
        if (!(n->guard = lm_guard_new(n->ch, n->w, checks, &e))) goto fail;
        n->guard_retries = p.guard.retries;
        n->guard_best_of = p.guard.best_of > 1 ? p.guard.best_of : 1;
        n->guard_temperature = p.guard.temperature > 0 ? p.guard.temperature : 0.7f;
    }
    /* fingerprint: weights, adapter (its factors and scale), persona text */
    uint64_t h = lm_api_fnv(FNV0, &model->fingerprint, sizeof model->fingerprint);
    if (n->adapter) {
        const lm_adapter *a = n->adapter;
        h = lm_api_fnv(h, &n->adapter_scale, sizeof n->adapter_scale);
        h = lm_api_fnv(h, &a->rank, sizeof a->rank);
        h = lm_api_fnv(h, &a->alpha, sizeof a->alpha);
        for (int l = 0; l < a->n_layer; l++)
            for (int q = 0; q < LM_ADAPT_N; q++) {
                const lm_adapter_pair *pr = lm_adapter_get(a, l, q);
                if (!pr->a) continue;
                h = lm_api_fnv(h, pr->a, lm_dtype_row_bytes(pr->type, (int64_t)a->rank * pr->in));
                h = lm_api_fnv(h, pr->b, lm_dtype_row_bytes(pr->type, (int64_t)a->rank * pr->out));
            }
    }
    char *sys = npc_system(n, NULL, &e);
    if (!sys && e.msg[0]) goto fail;
    if (sys) h = lm_api_fnv(h, sys, strlen(sys) + 1);
    free(sys);
    n->fingerprint = h;
    ok(err);
    return n;
oom:
    lm_errf(&e, "out of memory");
    code = LEMONPC_ERR_NOMEM;
fail:
    lm_api_fail(err, lm_api_code_of(&e, code), &e);
    lemonpc_npc_free(n);
    return NULL;
}

/* The tokens every conversation of n starts with, whoever it talks with:
 * the common start of two prompts that differ in scene and player line
 * (the system turn up to its scene lines, with the template's pieces). */
static int prefix_tokens(lemonpc_npc *n, lm_err *e) {
    const lm_tokenizer *t = n->model->tok;
    int32_t *tk[2] = {NULL, NULL};
    size_t nt[2] = {0, 0};
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        lm_scene sc = {i ? "B" : "A", i ? "B" : "A"};
        char *sys = npc_system(n, &sc, e);
        if (!sys && e->msg[0]) { rc = -1; break; }
        lm_chat_msg m[2] = {{"system", sys}, {"user", i ? "b" : "a"}};
        rc = lm_generate_prompt(t, sys ? m : m + 1, sys ? 2 : 1, &tk[i], &nt[i], e);
        free(sys);
    }
    if (rc == 0) {
        size_t k = 0;
        while (k < nt[0] && k < nt[1] && tk[0][k] == tk[1][k]) k++;
        n->prefix = tk[0];
        n->n_prefix = (int)k;
        tk[0] = NULL;
    }
    free(tk[0]);
    free(tk[1]);
    return rc;
}

int lm_api_npc_prefix(lemonpc_npc *n, lm_err *e) {
    pthread_mutex_lock(&n->mu);
    int rc = 0;
    if (!n->prefix_ready) {
        rc = prefix_tokens(n, e);
        if (rc == 0 && n->n_prefix > 0) {
            lemonpc_model *m = n->model;
            int cap = n->n_prefix < m->n_ctx ? n->n_prefix : m->n_ctx;
            n->n_prefix = cap;
            n->pctx = lm_ctx_new_kv(m->m, cap, m->pool, m->kv_type, e);
            rc = n->pctx ? 0 : -1;
            if (rc == 0 && n->adapter)
                rc = lm_ctx_set_adapter(n->pctx, n->adapter, n->adapter_scale, e);
            if (rc == 0) rc = lm_eval(n->pctx, n->prefix, cap, LM_LOGITS_NONE, NULL, e);
            /* from now on only its cache is read (copied into conversations):
             * no scratch, and the cache no bigger than the prefix (if memory
             * for the smaller copy cannot be had, the bigger one stays) */
            if (rc == 0) {
                lm_ctx_trim(n->pctx);
                lm_err ignored;
                lm_ctx_compact(n->pctx, &ignored);
            }
            if (rc) {
                lm_ctx_free(n->pctx);
                n->pctx = NULL;
            }
        }
        if (rc) {
            free(n->prefix);
            n->prefix = NULL;
            n->n_prefix = 0;
        } else {
            n->prefix_ready = true;
        }
    }
    pthread_mutex_unlock(&n->mu);
    return rc;
}
