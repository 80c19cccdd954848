/* Byte-level BPE tokenizer: vocabulary tables, special-token partition,
 * encode and decode. The pipeline for lm_tokenize follows llama.cpp:
 *   1. split the input on special-token texts (longest token first);
 *   2. replace invalid UTF-8 in each text fragment (base/utf8.c);
 *   3. pre-tokenize into words (pretok.c);
 *   4. BPE each word on raw bytes (bpe.c). */
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "tokenizer/internal.h"

static size_t slen(const char *const *s, const size_t *lens, int32_t i) {
    return lens ? lens[i] : strlen(s[i]);
}

void lm_tokenizer_free(lm_tokenizer *t) {
    if (!t) return;
    free(t->type);
    free(t->text);
    free(t->text_off);
    free(t->text_len);
    free(t->piece);
    free(t->piece_off);
    free(t->piece_len);
    lm_strmap_free(&t->by_text);
    lm_strmap_free(&t->by_bytes);
    lm_strmap_free(&t->merges);
    free(t->specials);
    lm_pretok_free(t->pre);
    free(t->chat_template);
    free(t->chat_default_system);
    free(t);
}

/* Copies token texts and derives each token's bytes. */
static int load_tokens(lm_tokenizer *t, const lm_tokenizer_spec *s, lm_err *err) {
    int32_t n = s->n_tokens;
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        if (!s->tokens[i]) return lm_errf(err, "tokenizer.ggml.tokens[%d] is NULL", i);
        total += slen(s->tokens, s->token_lens, i);
        if (total > UINT32_MAX / 2) return lm_errf(err, "tokenizer.ggml.tokens: over 2 GB of text");
    }
    t->type = malloc((size_t)n);
    t->text = malloc(total + 1);
    t->text_off = malloc((size_t)n * sizeof *t->text_off);
    t->text_len = malloc((size_t)n * sizeof *t->text_len);
    t->piece = malloc(total + 1);
    t->piece_off = malloc((size_t)n * sizeof *t->piece_off);
    t->piece_len = malloc((size_t)n * sizeof *t->piece_len);
    if (!t->type || !t->text || !t->text_off || !t->text_len || !t->piece || !t->piece_off ||
        !t->piece_len || lm_strmap_init(&t->by_text, (size_t)n) ||
        lm_strmap_init(&t->by_bytes, (size_t)n))
        return lm_errf(err, "out of memory for %d tokens", n);
    size_t off = 0, poff = 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t ty = s->token_types ? s->token_types[i] : LM_TT_NORMAL;
        /* 0 is llama.cpp's "undefined": kept, never produced, renders nothing. */
        if (ty < 0 || ty > LM_TT_BYTE)
            return lm_errf(err, "tokenizer.ggml.token_type[%d] = %d is not a token type (0..6)", i, ty);
        t->type[i] = (uint8_t)ty;
        size_t len = slen(s->tokens, s->token_lens, i);
        memcpy(t->text + off, s->tokens[i], len);
        t->text_off[i] = (uint32_t)off;
        t->text_len[i] = (uint32_t)len;
        if (lm_strmap_put(&t->by_text, t->text + off, len, i, false))
            return lm_errf(err, "out of memory");
        /* Every token whose text is all byte-mapped can come out of BPE, whatever
         * its type (llama.cpp looks words up in one text -> id table). */
        long nb = lm_bytemap_decode(t->text + off, len, t->piece + poff);
        if (nb >= 0 && nb > 0 && lm_strmap_put(&t->by_bytes, t->piece + poff, (size_t)nb, i, false))
            return lm_errf(err, "out of memory");
        bool decoded = nb >= 0 && (ty == LM_TT_NORMAL || ty == LM_TT_BYTE);
        if (!decoded) {
            /* Specials and user-defined tokens render as stored; so does a normal
             * token holding characters outside the byte map (our choice). */
            memcpy(t->piece + poff, t->text + off, len);
            nb = (long)len;
        }
        t->piece_off[i] = (uint32_t)poff;
        t->piece_len[i] = (uint32_t)nb;
        off += len;
        poff += (size_t)nb;
    }
    return 0;
}

static int load_merges(lm_tokenizer *t, const lm_tokenizer_spec *s, lm_err *err) {
    if (lm_strmap_init(&t->merges, (size_t)s->n_merges)) return lm_errf(err, "out of memory");
    size_t cap = 0;
    uint8_t *key = NULL;
    for (int32_t i = 0; i < s->n_merges; i++) {
        const char *m = s->merges[i];
        if (!m) { free(key); return lm_errf(err, "tokenizer.ggml.merges[%d] is NULL", i); }
        size_t len = slen(s->merges, s->merge_lens, i);
        /* The separator is the first space after the first byte (llama.cpp). */
        const char *sp = len > 1 ? memchr(m + 1, ' ', len - 1) : NULL;
        if (!sp) {
            free(key);
            return lm_errf(err, "tokenizer.ggml.merges[%d] = '%.*s' is not two tokens separated by a space",
                           i, (int)(len > 64 ? 64 : len), m);
        }
        size_t ll = (size_t)(sp - m), lr = len - ll - 1;
        if (4 + len > cap) {
            cap = 4 + len + 64;
            uint8_t *q = realloc(key, cap);
            if (!q) { free(key); return lm_errf(err, "out of memory"); }
            key = q;
        }
        long dl = lm_bytemap_decode(m, ll, key + 4);
        long dr = dl < 0 ? -1 : lm_bytemap_decode(sp + 1, lr, key + 4 + dl);
        /* A side outside the byte map can never occur in a word: skip it. */
        if (dl <= 0 || dr <= 0) continue;
        uint32_t l32 = (uint32_t)dl;
        memcpy(key, &l32, 4);
        /* Duplicates keep their first (lowest) rank, as llama.cpp does. */
        if (lm_strmap_put(&t->merges, key, 4 + (size_t)dl + (size_t)dr, i, true)) {
            free(key);
            return lm_errf(err, "out of memory");
        }
    }
    free(key);
    return 0;
}

static int cmp_special(const void *a, const void *b, void *ctx) {
    const lm_tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->text_len[x] != t->text_len[y]) return t->text_len[x] > t->text_len[y] ? -1 : 1;
    return (x > y) - (x < y);
}

static int load_specials(lm_tokenizer *t, lm_err *err) {
    t->specials = malloc((size_t)t->n_vocab * sizeof *t->specials);
    if (!t->specials) return lm_errf(err, "out of memory");
    for (int32_t i = 0; i < t->n_vocab; i++) {
        int ty = t->type[i];
        if ((ty == LM_TT_CONTROL || ty == LM_TT_USER_DEFINED || ty == LM_TT_UNKNOWN) && t->text_len[i] > 0)
            t->specials[t->n_specials++] = i;
    }
    /* Longest first, so "<|im_start|>" wins over any shorter special inside it. */
    qsort_r(t->specials, (size_t)t->n_specials, sizeof *t->specials, cmp_special, t);
    return 0;
}

static int check_id(int32_t id, int32_t n, const char *what, lm_err *err) {
    if (id < -1 || id >= n)
        return lm_errf(err, "%s = %d is outside the vocabulary (%d tokens)", what, id, n);
    return 0;
}

lm_tokenizer *lm_tokenizer_new(const lm_tokenizer_spec *s, lm_err *err) {
    if (!s->model || strcmp(s->model, "gpt2") != 0) {
        lm_errf(err, "tokenizer.ggml.model = '%s' is not supported (only 'gpt2', byte-level BPE)",
                s->model ? s->model : "(missing)");
        return NULL;
    }
    if (!s->pre) {
        lm_errf(err, "tokenizer.ggml.pre is missing: refusing to guess how this model splits text");
        return NULL;
    }
    if (s->n_tokens <= 0 || !s->tokens) {
        lm_errf(err, "tokenizer.ggml.tokens is empty");
        return NULL;
    }
    if (s->n_merges < 0 || (s->n_merges > 0 && !s->merges)) {
        lm_errf(err, "tokenizer.ggml.merges is missing");
        return NULL;
    }
    lm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) { lm_errf(err, "out of memory"); return NULL; }
    t->n_vocab = s->n_tokens;
    t->bos = s->bos; t->eos = s->eos; t->unk = s->unk; t->pad = s->pad;
    if (check_id(s->bos, s->n_tokens, "tokenizer.ggml.bos_token_id", err) ||
        check_id(s->eos, s->n_tokens, "tokenizer.ggml.eos_token_id", err) ||
        check_id(s->unk, s->n_tokens, "tokenizer.ggml.unknown_token_id", err) ||
        check_id(s->pad, s->n_tokens, "tokenizer.ggml.padding_token_id", err) ||
        !(t->pre = lm_pretok_new(s->pre, err)) ||
        load_tokens(t, s, err) || load_merges(t, s, err) || load_specials(t, err))
        goto fail;
    if (s->chat_template) {
        t->chat_template = strdup(s->chat_template);
        if (!t->chat_template) { lm_errf(err, "out of memory"); goto fail; }
        if (lm_chat_parse_template(t->chat_template, &t->chat_default_system, err)) goto fail;
    }
    return t;
fail:
    lm_tokenizer_free(t);
    return NULL;
}

/* ---- loading from GGUF ---------------------------------------------------- */

static char *kv_str(const gguf_file *f, const char *key, bool required, lm_err *err, bool *bad) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) {
        if (required) { lm_errf(err, "key '%s' missing", key); *bad = true; }
        return NULL;
    }
    if (kv->type != GGUF_STRING) {
        lm_errf(err, "key '%s' has type %s, expected string", key, gguf_type_name(kv->type));
        *bad = true;
        return NULL;
    }
    char *s = malloc(kv->v.s.len + 1);
    if (!s) { lm_errf(err, "out of memory"); *bad = true; return NULL; }
    memcpy(s, kv->v.s.ptr, kv->v.s.len);
    s[kv->v.s.len] = '\0';
    return s;
}

static const gguf_kv *kv_str_array(const gguf_file *f, const char *key, lm_err *err) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) { lm_errf(err, "key '%s' missing", key); return NULL; }
    if (kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING) {
        lm_errf(err, "key '%s' has type %s, expected an array of strings", key,
                kv->type == GGUF_ARRAY ? "array of non-strings" : gguf_type_name(kv->type));
        return NULL;
    }
    if (kv->arr_n > INT32_MAX) { lm_errf(err, "key '%s' has %llu entries", key, (unsigned long long)kv->arr_n); return NULL; }
    return kv;
}

static int opt_id(const gguf_file *f, const char *key, int32_t *out, lm_err *err) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    /* Some converters write "no such token" as a negative i32. */
    if (kv && (kv->type == GGUF_I8 || kv->type == GGUF_I16 || kv->type == GGUF_I32 ||
               kv->type == GGUF_I64) && kv->v.i < 0) {
        *out = -1;
        return 0;
    }
    uint32_t v = UINT32_MAX;
    if (gguf_get_u32_opt(f, key, &v, err)) return -1;
    *out = v == UINT32_MAX ? -1 : (v > INT32_MAX ? INT32_MAX : (int32_t)v);
    return 0;
}

lm_tokenizer *lm_tokenizer_load(const gguf_file *f, lm_err *err) {
    lm_tokenizer *t = NULL;
    bool bad = false;
    const char **toks = NULL, **merges = NULL;
    size_t *tok_lens = NULL, *merge_lens = NULL;
    int32_t *types = NULL;
    char *model = kv_str(f, "tokenizer.ggml.model", true, err, &bad);
    char *pre = bad ? NULL : kv_str(f, "tokenizer.ggml.pre", false, err, &bad);
    char *tmpl = bad ? NULL : kv_str(f, "tokenizer.chat_template", false, err, &bad);
    if (bad) goto done;
    if (strcmp(model, "gpt2") != 0) {
        lm_errf(err, "tokenizer.ggml.model = '%s' is not supported (only 'gpt2', byte-level BPE)", model);
        goto done;
    }
    const gguf_kv *tk = kv_str_array(f, "tokenizer.ggml.tokens", err);
    if (!tk) goto done;
    const gguf_kv *mk = kv_str_array(f, "tokenizer.ggml.merges", err);
    if (!mk) goto done;
    lm_tokenizer_spec s = {.model = model, .pre = pre, .chat_template = tmpl,
                           .n_tokens = (int32_t)tk->arr_n, .n_merges = (int32_t)mk->arr_n};
    toks = malloc((tk->arr_n + 1) * sizeof *toks);
    tok_lens = malloc((tk->arr_n + 1) * sizeof *tok_lens);
    merges = malloc((mk->arr_n + 1) * sizeof *merges);
    merge_lens = malloc((mk->arr_n + 1) * sizeof *merge_lens);
    if (!toks || !tok_lens || !merges || !merge_lens) { lm_errf(err, "out of memory"); goto done; }
    for (uint64_t i = 0; i < tk->arr_n; i++) { toks[i] = tk->arr_strs[i].ptr; tok_lens[i] = tk->arr_strs[i].len; }
    for (uint64_t i = 0; i < mk->arr_n; i++) { merges[i] = mk->arr_strs[i].ptr; merge_lens[i] = mk->arr_strs[i].len; }
    s.tokens = toks; s.token_lens = tok_lens; s.merges = merges; s.merge_lens = merge_lens;
    const gguf_kv *ty = gguf_find_kv(f, "tokenizer.ggml.token_type");
    if (ty) {
        if (ty->type != GGUF_ARRAY || (ty->arr_type != GGUF_I32 && ty->arr_type != GGUF_U32)) {
            lm_errf(err, "key 'tokenizer.ggml.token_type' has type %s, expected an array of i32",
                    ty->type == GGUF_ARRAY ? gguf_type_name(ty->arr_type) : gguf_type_name(ty->type));
            goto done;
        }
        if (ty->arr_n < tk->arr_n) {
            lm_errf(err, "tokenizer.ggml.token_type has %llu entries for %llu tokens",
                    (unsigned long long)ty->arr_n, (unsigned long long)tk->arr_n);
            goto done;
        }
        types = malloc((tk->arr_n + 1) * sizeof *types);
        if (!types) { lm_errf(err, "out of memory"); goto done; }
        const uint8_t *p = ty->arr_data;
        for (uint64_t i = 0; i < tk->arr_n; i++) {
            uint32_t v = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                         (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
            types[i] = (int32_t)v;
        }
        s.token_types = types;
    }
    if (opt_id(f, "tokenizer.ggml.bos_token_id", &s.bos, err) ||
        opt_id(f, "tokenizer.ggml.eos_token_id", &s.eos, err) ||
        opt_id(f, "tokenizer.ggml.unknown_token_id", &s.unk, err) ||
        opt_id(f, "tokenizer.ggml.padding_token_id", &s.pad, err))
        goto done;
    t = lm_tokenizer_new(&s, err);
done:
    if (!t) lm_err_prefix(err, "%s", f->path ? f->path : "(gguf)");
    free(model); free(pre); free(tmpl);
    free(toks); free(tok_lens); free(merges); free(merge_lens); free(types);
    return t;
}

/* ---- queries ------------------------------------------------------------- */

int32_t lm_tokenizer_n_vocab(const lm_tokenizer *t) { return t->n_vocab; }
int32_t lm_tokenizer_bos(const lm_tokenizer *t) { return t->bos; }
int32_t lm_tokenizer_eos(const lm_tokenizer *t) { return t->eos; }

int32_t lm_tokenizer_find(const lm_tokenizer *t, const char *text) {
    return lm_strmap_get(&t->by_text, text, strlen(text));
}

bool lm_tokenizer_is_control(const lm_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab) return false;
    return t->type[id] == LM_TT_CONTROL || t->type[id] == LM_TT_UNKNOWN;
}

/* ---- encode -------------------------------------------------------------- */

typedef struct frag {
    int32_t id;          /* >= 0: a special token; -1: text[off, off+len) */
    size_t off, len;
} frag;

typedef struct frag_vec { frag *v; size_t n, cap; } frag_vec;

static int frag_push(frag_vec *f, frag x) {
    if (f->n == f->cap) {
        size_t c = f->cap ? f->cap * 2 : 16;
        frag *q = realloc(f->v, c * sizeof *q);
        if (!q) return -1;
        f->v = q;
        f->cap = c;
    }
    f->v[f->n++] = x;
    return 0;
}

/* llama.cpp's partition: for each special token, longest first, cut every
 * remaining text fragment at each (leftmost, non-overlapping) occurrence. */
static int partition(const lm_tokenizer *t, const char *text, size_t len, bool parse_special,
                     frag_vec *out) {
    frag_vec cur = {0}, nxt = {0};
    if (len && frag_push(&cur, (frag){-1, 0, len})) return -1;
    for (int32_t k = 0; k < t->n_specials; k++) {
        int32_t id = t->specials[k];
        int ty = t->type[id];
        /* Without parse_special only user-defined tokens are split out. */
        if (!parse_special && (ty == LM_TT_CONTROL || ty == LM_TT_UNKNOWN)) continue;
        const char *st = t->text + t->text_off[id];
        size_t sl = t->text_len[id];
        nxt.n = 0;
        for (size_t i = 0; i < cur.n; i++) {
            frag f = cur.v[i];
            if (f.id >= 0 || f.len < sl) {
                if (frag_push(&nxt, f)) goto oom;
                continue;
            }
            size_t pos = f.off, end = f.off + f.len;
            for (;;) {
                const char *m = memmem(text + pos, end - pos, st, sl);
                if (!m) break;
                size_t at = (size_t)(m - text);
                if (at > pos && frag_push(&nxt, (frag){-1, pos, at - pos})) goto oom;
                if (frag_push(&nxt, (frag){id, 0, 0})) goto oom;
                pos = at + sl;
            }
            if (pos < end && frag_push(&nxt, (frag){-1, pos, end - pos})) goto oom;
        }
        frag_vec tmp = cur; cur = nxt; nxt = tmp;
    }
    free(nxt.v);
    *out = cur;
    return 0;
oom:
    free(cur.v);
    free(nxt.v);
    return -1;
}

int lm_tokenize(const lm_tokenizer *t, const char *text, size_t len, bool parse_special,
                int32_t **out, size_t *n_out, lm_err *err) {
    *out = NULL;
    *n_out = 0;
    if (!text && len) return lm_errf(err, "lm_tokenize: NULL text");
    frag_vec frags = {0};
    lm_span *spans = NULL;
    size_t n_spans = 0, cap_spans = 0, cap_ids = 0, n_ids = 0;
    int32_t *ids = NULL;
    char *clean = NULL;
    lm_bpe_ws *ws = lm_bpe_ws_new();
    int rc = -1;
    if (!ws || partition(t, text, len, parse_special, &frags)) { lm_errf(err, "out of memory"); goto done; }
    /* Always hand back a buffer, so callers free without checking n. */
    cap_ids = len / 2 + 16;
    ids = malloc(cap_ids * sizeof *ids);
    if (!ids) { lm_errf(err, "out of memory"); goto done; }
    for (size_t i = 0; i < frags.n; i++) {
        frag f = frags.v[i];
        if (f.id >= 0) {
            if (n_ids == cap_ids) {
                int32_t *q = realloc(ids, (cap_ids *= 2) * sizeof *q);
                if (!q) { lm_errf(err, "out of memory"); goto done; }
                ids = q;
            }
            ids[n_ids++] = f.id;
            continue;
        }
        size_t n_clean;
        free(clean);
        clean = NULL;
        clean = lm_utf8_clean(text + f.off, f.len, 0, &n_clean);
        if (!clean) { lm_errf(err, "out of memory"); goto done; }
        n_spans = 0;
        if (lm_pretok_split(t->pre, clean, n_clean, &spans, &n_spans, &cap_spans, err)) goto done;
        for (size_t s = 0; s < n_spans; s++)
            if (lm_bpe_word(t, ws, (const uint8_t *)clean + spans[s].off, spans[s].len, &ids, &n_ids, &cap_ids)) {
                lm_errf(err, "out of memory");
                goto done;
            }
    }
    *out = ids;
    *n_out = n_ids;
    ids = NULL;
    rc = 0;
done:
    free(ids);
    free(clean);
    free(spans);
    free(frags.v);
    lm_bpe_ws_free(ws);
    return rc;
}

/* ---- decode -------------------------------------------------------------- */

/* Bytes a token renders as, per llama.cpp's rules for BPE vocabularies. */
static size_t piece_of(const lm_tokenizer *t, int32_t id, bool render_special, const uint8_t **p) {
    int ty = t->type[id];
    if ((ty == LM_TT_CONTROL || ty == LM_TT_UNKNOWN) && !render_special) return 0;
    if (ty == LM_TT_UNUSED || ty == 0) return 0;
    *p = t->piece + t->piece_off[id];
    return t->piece_len[id];
}

int lm_token_bytes(const lm_tokenizer *t, int32_t id, bool render_special, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab) return -1;
    const uint8_t *p = NULL;
    size_t n = piece_of(t, id, render_special, &p);
    if (n && buf) memcpy(buf, p, n < cap ? n : cap);
    return (int)n;
}

char *lm_detokenize(const lm_tokenizer *t, const int32_t *ids, size_t n, bool render_special,
                    lm_err *err) {
    size_t len;
    return lm_detokenize_n(t, ids, n, render_special, &len, err);
}

char *lm_detokenize_n(const lm_tokenizer *t, const int32_t *ids, size_t n, bool render_special,
                      size_t *len_out, lm_err *err) {
    *len_out = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) {
            lm_errf(err, "token id %d at position %zu is outside the vocabulary (%d tokens)",
                    ids[i], i, t->n_vocab);
            return NULL;
        }
        const uint8_t *p;
        total += piece_of(t, ids[i], render_special, &p);
    }
    char *s = malloc(total + 1);
    if (!s) { lm_errf(err, "out of memory"); return NULL; }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = NULL;
        size_t k = piece_of(t, ids[i], render_special, &p);
        if (k) memcpy(s + o, p, k);
        o += k;
    }
    s[o] = '\0';
    *len_out = o;
    return s;
}
