/* Saving and restoring a conversation (lemonpc_conversation_save/_restore).
 *
 * File layout, little-endian, v2:
 *   "LMPCCONV" u32 version=2 u32 kv_type (the KV cache's element type, GGUF
 *                                       ids: 0 F32, 1 F16; v1 wrote 0: f32)
 *   u64 NPC fingerprint (weights + adapter + persona)
 *   str player, str place            (str: u32 length, 0xFFFFFFFF = none, bytes)
 *   u32 n_turns, n_turns x (u8 role: 0 user 1 assistant, str content,
 *                           u32 n or 0xFFFFFFFF, i32 sampled tokens[n])
 *   u64 rng[4]                       (the sampler's draws go on where they were)
 *   u32 n_tokens, i32 tokens[n]      (what the KV cache holds)
 *   u32 rows, K[rows, n], V[rows, n] (elements of kv_type: the cache as it is,
 *                                      so a restored conversation goes on exactly)
 *   u64 FNV-1a of every byte above
 * The whole file is checked before anything is used, so a truncated or
 * altered one is refused; it is written to a temporary file in the same
 * folder, synced and renamed over the old one, so a crash mid-save leaves the
 * previous save whole. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/strbuf.h"
#include "runtime/api_internal.h"

#define MAGIC "LMPCCONV"
#define VERSION 2u
#define FNV0 0xcbf29ce484222325ULL
#define NO_STR 0xFFFFFFFFu

typedef struct wbuf {
    FILE *f;
    uint64_t h;
    bool bad;
} wbuf;

static void put(wbuf *w, const void *p, size_t n) {
    if (w->bad || n == 0) return;
    w->h = lm_api_fnv(w->h, p, n);
    if (fwrite(p, 1, n, w->f) != n) w->bad = true;
}

static void put_u32(wbuf *w, uint32_t v) { put(w, &v, 4); }

static void put_str(wbuf *w, const char *s) {
    if (!s) { put_u32(w, NO_STR); return; }
    size_t n = strlen(s);
    put_u32(w, (uint32_t)n);
    put(w, s, n);
}

static int write_all(const lemonpc_conversation *c, FILE *f, lm_err *e) {
    wbuf w = {f, FNV0, false};
    put(&w, MAGIC, 8);
    put_u32(&w, VERSION);
    lm_dtype kt = lm_ctx_kv_type(c->ctx);
    put_u32(&w, (uint32_t)kt);
    put(&w, &c->npc->fingerprint, 8);
    put_str(&w, c->player);
    put_str(&w, c->place);
    put_u32(&w, (uint32_t)c->turns.n);
    for (size_t i = 0; i < c->turns.n; i++) {
        uint8_t role = strcmp(c->turns.m[i].role, "user") != 0;
        put(&w, &role, 1);
        put_str(&w, c->turns.m[i].content);
        const lm_tok_span *sp = &c->turns.tk[i];
        put_u32(&w, sp->p ? (uint32_t)sp->n : NO_STR);
        if (sp->p) put(&w, sp->p, sp->n * sizeof *sp->p);
    }
    uint64_t rng[4];
    lm_sampler_rng_get(c->smp, rng);
    put(&w, rng, sizeof rng);
    put_u32(&w, (uint32_t)c->n_toks);
    put(&w, c->toks, c->n_toks * sizeof *c->toks);
    size_t nb = lm_ctx_state_bytes(c->ctx);
    void *k = malloc(nb ? nb : 1), *v = malloc(nb ? nb : 1);
    if (!k || !v) { free(k); free(v); return lm_errf(e, "out of memory"); }
    lm_ctx_state_get(c->ctx, k, v);
    put_u32(&w, c->n_toks ? (uint32_t)(nb / (c->n_toks * lm_dtype_row_bytes(kt, 1))) : 0);
    put(&w, k, nb);
    put(&w, v, nb);
    free(k);
    free(v);
    uint64_t h = w.h;
    put(&w, &h, 8);
    if (w.bad) return lm_errno(e, "write");
    return 0;
}

lemonpc_status lemonpc_conversation_save(lemonpc_conversation *c, const char *path,
                                         lemonpc_error *err) {
    if (!c || !path) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_conversation_save: "
                                         "%s is NULL", !c ? "the conversation" : "the path");
    if (atomic_flag_test_and_set(&c->busy))
        return lm_api_failf(err, LEMONPC_ERR_BUSY, "the conversation is in use by another thread");
    lm_err e = {{0}};
    lemonpc_status code = LEMONPC_ERR_IO;
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    char *dir = strdup(path);
    FILE *f = NULL;
    int fd = -1;
    if (!tmp || !dir) { code = LEMONPC_ERR_NOMEM; lm_errf(&e, "out of memory"); goto done; }
    snprintf(tmp, n + 16, "%s.tmp.XXXXXX", path);
    if ((fd = mkstemp(tmp)) < 0) { lm_errno(&e, "%s: cannot create a temporary file", path); goto done; }
    if (!(f = fdopen(fd, "wb"))) { lm_errno(&e, "%s", tmp); close(fd); unlink(tmp); goto done; }
    int rc = write_all(c, f, &e);
    if (rc == 0 && (fflush(f) || fsync(fileno(f)))) rc = lm_errno(&e, "sync");
    if (fclose(f) && rc == 0) rc = lm_errno(&e, "close");
    if (rc == 0 && rename(tmp, path)) rc = lm_errno(&e, "rename to %s", path);
    if (rc) {
        unlink(tmp);
        lm_err_prefix(&e, "%s", path);
        if (strstr(e.msg, "out of memory")) code = LEMONPC_ERR_NOMEM;
        goto done;
    }
    /* the rename itself survives a crash once the folder is synced */
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    code = LEMONPC_OK;
done:
    free(tmp);
    free(dir);
    atomic_flag_clear(&c->busy);
    if (code == LEMONPC_OK) {
        if (err) { err->code = LEMONPC_OK; err->message[0] = '\0'; }
        return code;
    }
    return lm_api_fail(err, code, &e);
}

/* ---- reading ---------------------------------------------------------- */

typedef struct rbuf {
    const uint8_t *p;
    size_t n, at;
    bool bad;
} rbuf;

static const void *get(rbuf *r, size_t n) {
    if (r->bad || n > r->n - r->at) { r->bad = true; return NULL; }
    const void *q = r->p + r->at;
    r->at += n;
    return q;
}

static uint32_t get_u32(rbuf *r) {
    const void *q = get(r, 4);
    uint32_t v = 0;
    if (q) memcpy(&v, q, 4);
    return v;
}

/* A string copy (*out NULL for "none"); -1 when out of memory or past the end. */
static int get_str(rbuf *r, char **out) {
    *out = NULL;
    uint32_t n = get_u32(r);
    if (r->bad) return -1;
    if (n == NO_STR) return 0;
    const char *s = get(r, n);
    if (!s) return -1;
    if (memchr(s, 0, n)) { r->bad = true; return -1; }
    if (!(*out = malloc((size_t)n + 1))) return -1;
    memcpy(*out, s, n);
    (*out)[n] = '\0';
    return 0;
}

static uint8_t *read_file(const char *path, size_t *n, lm_err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return lm_errno(e, "%s: cannot open", path), NULL;
    struct stat st;
    if (fstat(fileno(f), &st) || st.st_size < 0) {
        lm_errno(e, "%s", path);
        fclose(f);
        return NULL;
    }
    *n = (size_t)st.st_size;
    uint8_t *b = malloc(*n ? *n : 1);
    if (!b) { fclose(f); return lm_errf(e, "out of memory reading %s", path), NULL; }
    if (fread(b, 1, *n, f) != *n) {
        lm_errno(e, "%s: read", path);
        free(b);
        fclose(f);
        return NULL;
    }
    fclose(f);
    return b;
}

lemonpc_conversation *lemonpc_conversation_restore(lemonpc_npc *npc, const char *path,
                                                   lemonpc_error *err) {
    if (!npc || !path) return lm_api_failf(err, LEMONPC_ERR_INVALID, "lemonpc_conversation_"
                                           "restore: %s is NULL", !npc ? "the NPC" : "the path"),
                              NULL;
    lm_err e = {{0}};
    size_t size = 0;
    uint8_t *buf = read_file(path, &size, &e);
    if (!buf) return lm_api_fail(err, lm_api_code_of(&e, LEMONPC_ERR_IO), &e), NULL;
    return lm_api_conv_from_bytes(npc, buf, size, path, err);
}

int lm_api_conv_to_bytes(const lemonpc_conversation *c, void **out, size_t *n, lm_err *e) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return lm_errf(e, "out of memory");
    int rc = write_all(c, f, e);
    if (fclose(f) && rc == 0) rc = lm_errf(e, "out of memory");
    if (rc) { free(buf); return -1; }
    *out = buf;
    *n = len;
    return 0;
}

lemonpc_conversation *lm_api_conv_from_bytes(lemonpc_npc *npc, uint8_t *buf, size_t size,
                                             const char *path, lemonpc_error *err) {
    lm_err e = {{0}};
    lemonpc_status code = LEMONPC_ERR_FORMAT;
    lemonpc_conversation *c = NULL;
    char *player = NULL, *place = NULL, *text = NULL;
    uint64_t want, got;
    rbuf r = {buf, size, 0, false};
    if (size < 8 + 8 + 8 + 8 || memcmp(buf, MAGIC, 8)) {
        lm_errf(&e, "%s: not a LeMoNPC conversation save", path);
        goto fail;
    }
    memcpy(&want, buf + size - 8, 8);
    if ((got = lm_api_fnv(FNV0, buf, size - 8)) != want) {
        lm_errf(&e, "%s: damaged or truncated (checksum %016llx, expected %016llx)", path,
                (unsigned long long)got, (unsigned long long)want);
        goto fail;
    }
    r.n = size - 8;
    get(&r, 8);
    uint32_t version = get_u32(&r);
    uint32_t kv_type = get_u32(&r);   /* v1: always 0, f32 */
    if (version != VERSION && version != 1) {
        lm_errf(&e, "%s: save format version %u, this library reads 1 and %u", path, version,
                VERSION);
        goto fail;
    }
    /* the cache is restored as saved, not converted: f16 -> f32 would go on
     * from other numbers than the saved conversation's, f32 -> f16 loses bits */
    if (kv_type != (uint32_t)npc->model->kv_type) {
        const char *saved = kv_type <= LM_F16 ? lm_dtype_name((int)kv_type) : NULL;
        code = LEMONPC_ERR_MISMATCH;
        lm_errf(&e, "%s: saved with a %s KV cache but this model's conversations cache %s "
                "(lemonpc_model_params.kv_type): load the model with the save's KV type",
                path, saved ? saved : "unknown", lm_dtype_name(npc->model->kv_type));
        goto fail;
    }
    const size_t esize = lm_dtype_row_bytes(npc->model->kv_type, 1);
    uint64_t fp;
    memcpy(&fp, get(&r, 8), 8);
    if (fp != npc->fingerprint) {
        code = LEMONPC_ERR_MISMATCH;
        lm_errf(&e, "%s: saved by another NPC (its model, adapter or persona differ from "
                "'%s')", path, npc->name);
        goto fail;
    }
    if (get_str(&r, &player) || get_str(&r, &place)) goto bad;
    if (!(c = lm_api_conv_new(npc, player, place, &e))) {
        code = lm_api_code_of(&e, LEMONPC_ERR_INTERNAL);
        goto fail;
    }
    uint32_t nt = get_u32(&r);
    for (uint32_t i = 0; i < nt && !r.bad; i++) {
        const uint8_t *role = get(&r, 1);
        if (!role || *role > 1 || get_str(&r, &text) || !text) goto bad;
        uint32_t ntk = get_u32(&r);
        const uint8_t *tk = ntk == NO_STR ? NULL : get(&r, (size_t)ntk * 4);
        if (r.bad || (ntk != NO_STR && !*role)) goto bad;
        int32_t *tki = NULL;
        if (tk) {
            if (!(tki = malloc(ntk ? (size_t)ntk * 4 : 1))) goto oom;
            memcpy(tki, tk, (size_t)ntk * 4);
            for (uint32_t q = 0; q < ntk; q++)
                if (tki[q] < 0 || tki[q] >= npc->model->m->cfg.n_vocab) { free(tki); goto bad; }
        }
        int prc = lm_api_turns_push(&c->turns, *role ? "assistant" : "user", text, tki,
                                    tk ? ntk : 0);
        free(tki);
        if (prc) goto oom;
        free(text);
        text = NULL;
    }
    const void *rng = get(&r, 32);
    if (!rng) goto bad;
    uint64_t st[4];
    memcpy(st, rng, 32);
    lm_sampler_rng_set(c->smp, st);
    uint32_t n = get_u32(&r);
    const void *toks = get(&r, (size_t)n * 4);
    uint32_t rows = get_u32(&r);
    if (r.bad) goto bad;
    size_t nb = (size_t)rows * n * esize;
    const lm_llama_config *cfg = &npc->model->m->cfg;
    if (n && rows != (uint32_t)(cfg->n_layer * cfg->n_head_kv * cfg->head_dim)) goto bad;
    if (n > (uint32_t)npc->model->n_ctx) {
        code = LEMONPC_ERR_CONTEXT_FULL;
        lm_errf(&e, "%s: %u cached tokens do not fit this model's %d-token context", path, n,
                npc->model->n_ctx);
        goto fail;
    }
    const void *k = get(&r, nb), *v = get(&r, nb);
    if (r.bad || r.at != r.n) goto bad;
    for (uint32_t i = 0; i < n; i++) {
        int32_t t;
        memcpy(&t, (const uint8_t *)toks + 4 * (size_t)i, 4);
        if (t < 0 || t >= cfg->n_vocab) goto bad;
    }
    if (lm_api_toks_reserve(c, n)) goto oom;
    if (n) memcpy(c->toks, toks, (size_t)n * 4);   /* toks is NULL for an empty cache */
    /* byte copies: the arrays may sit at any offset in the file */
    int rc = lm_ctx_state_set(c->ctx, k, v, (int)n, &e);
    if (rc) { code = lm_api_code_of(&e, LEMONPC_ERR_INTERNAL); goto fail; }
    c->n_toks = n;
    free(player);
    free(place);
    free(buf);
    if (err) { err->code = LEMONPC_OK; err->message[0] = '\0'; }
    return c;
bad:
    lm_errf(&e, "%s: damaged (a field at byte %zu is out of range)", path, r.at);
    goto fail;
oom:
    code = LEMONPC_ERR_NOMEM;
    lm_errf(&e, "out of memory restoring %s", path);
fail:
    free(text);
    free(player);
    free(place);
    lemonpc_conversation_close(c);
    free(buf);
    lm_api_fail(err, code, &e);
    return NULL;
}
