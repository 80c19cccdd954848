/* Near-duplicate store: exact match after normalisation, and Jaccard
 * similarity of word-3-gram shingle sets. MinHash signatures with LSH
 * banding find candidates in ~constant time per sample; the candidates'
 * exact Jaccard decides, so the estimate's noise never rejects a sample. */
#include "check/filter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check/filter_internal.h"

#define SHINGLE_N 3
#define BANDS 20
#define ROWS 3 /* at J = 0.7 a pair becomes a candidate with p = 1-(1-0.7^3)^20 > 0.999 */
#define NSIG (BANDS * ROWS)

typedef struct {
    uint64_t *sh; /* sorted unique shingles */
    size_t n;
    uint64_t exact;
} item;

typedef struct {
    uint64_t key;
    uint32_t item;
    int32_t next;
} bucket_entry;

typedef struct {
    item *items;
    size_t n, cap;
    int32_t *head; /* [nhead] index into ent, -1 = empty */
    size_t nhead;
    bucket_entry *ent;
    size_t nent, capent;
} store;

struct lm_dedup {
    double thr;
    store q, a;
    uint64_t seeds[NSIG];
};

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

lm_dedup *lm_dedup_new(const lm_filter_config *cfg, lm_err *err) {
    lm_dedup *d = calloc(1, sizeof *d);
    if (!d) {
        lm_errf(err, "dedup: out of memory");
        return NULL;
    }
    lm_filter_config def;
    lm_filter_config_default(&def);
    d->thr = cfg && cfg->dup_jaccard > 0 && cfg->dup_jaccard <= 1 ? cfg->dup_jaccard : def.dup_jaccard;
    for (int i = 0; i < NSIG; i++) d->seeds[i] = mix64(0x5eed0000ULL + (uint64_t)i);
    return d;
}

static void store_free(store *s) {
    for (size_t i = 0; i < s->n; i++) free(s->items[i].sh);
    free(s->items), free(s->head), free(s->ent);
}

void lm_dedup_free(lm_dedup *d) {
    if (!d) return;
    store_free(&d->q), store_free(&d->a);
    free(d);
}

size_t lm_dedup_count(const lm_dedup *d) { return d->q.n; }

/* Normalised text: its words, lowercased, joined. */
static uint64_t exact_hash(const char *s) {
    size_t nw;
    lm_fspan *w = lm_ftext_words(s, strlen(s), &nw);
    uint64_t h = 0x243f6a8885a308d3ULL;
    for (size_t i = 0; i < nw; i++) h = mix64(h ^ lm_ftext_word_hash(s + w[i].off, w[i].len));
    free(w);
    return h;
}

/* Band keys of a shingle set: keys[b] for b < BANDS. */
static void band_keys(const lm_dedup *d, const uint64_t *sh, size_t n, uint64_t *keys) {
    uint64_t sig[NSIG];
    for (int k = 0; k < NSIG; k++) {
        uint64_t m = UINT64_MAX;
        for (size_t i = 0; i < n; i++) {
            uint64_t h = mix64(sh[i] ^ d->seeds[k]);
            if (h < m) m = h;
        }
        sig[k] = m;
    }
    for (int b = 0; b < BANDS; b++) {
        uint64_t h = mix64(0xba9d0000ULL + (uint64_t)b);
        for (int r = 0; r < ROWS; r++) h = mix64(h ^ sig[b * ROWS + r]);
        keys[b] = h;
    }
}

static double jaccard(const item *x, const uint64_t *sh, size_t n) {
    size_t i = 0, j = 0, inter = 0;
    while (i < x->n && j < n) {
        if (x->sh[i] < sh[j]) i++;
        else if (x->sh[i] > sh[j]) j++;
        else inter++, i++, j++;
    }
    size_t uni = x->n + n - inter;
    return uni ? (double)inter / (double)uni : 1.0;
}

/* Best match of text in s: index (or -1), similarity, exact or not. */
static long store_find(const lm_dedup *d, const store *s, const char *text, double *sim, int *exact) {
    *sim = 0, *exact = 0;
    if (!s->n) return -1;
    uint64_t ex = exact_hash(text);
    size_t n;
    uint64_t *sh = lm_ftext_shingles(text, strlen(text), SHINGLE_N, &n);
    uint64_t keys[BANDS + 1];
    keys[BANDS] = ex ^ 0xe7acULL;
    int nk = BANDS + 1;
    if (sh) band_keys(d, sh, n, keys);
    else nk = 0, keys[0] = keys[BANDS], nk = 1;
    long best = -1;
    double bs = 0;
    for (int k = 0; k < nk; k++) {
        uint64_t key = keys[sh ? k : 0];
        for (int32_t e = s->head[key % s->nhead]; e >= 0; e = s->ent[e].next) {
            if (s->ent[e].key != key) continue;
            const item *it = &s->items[s->ent[e].item];
            if (it->exact == ex) {
                *sim = 1, *exact = 1;
                free(sh);
                return (long)s->ent[e].item;
            }
            double j = sh ? jaccard(it, sh, n) : 0;
            if (j > bs || (j == bs && best >= 0 && (long)s->ent[e].item < best)) bs = j, best = (long)s->ent[e].item;
        }
    }
    free(sh);
    if (best >= 0 && bs >= d->thr) {
        *sim = bs;
        return best;
    }
    return -1;
}

static int store_put_key(store *s, uint64_t key, uint32_t idx) {
    if (s->nent + 1 > s->nhead * 2 || !s->nhead) { /* grow and rehash */
        size_t nh = s->nhead ? s->nhead * 4 : 1024;
        int32_t *h = malloc(nh * sizeof *h);
        if (!h) return -1;
        for (size_t i = 0; i < nh; i++) h[i] = -1;
        for (size_t e = 0; e < s->nent; e++) {
            size_t b = s->ent[e].key % nh;
            s->ent[e].next = h[b];
            h[b] = (int32_t)e;
        }
        free(s->head);
        s->head = h, s->nhead = nh;
    }
    if (s->nent == s->capent) {
        size_t nc = s->capent ? s->capent * 2 : 1024;
        if (nc > INT32_MAX) return -1;
        bucket_entry *ne = realloc(s->ent, nc * sizeof *ne);
        if (!ne) return -1;
        s->ent = ne, s->capent = nc;
    }
    size_t b = key % s->nhead;
    s->ent[s->nent] = (bucket_entry){key, idx, s->head[b]};
    s->head[b] = (int32_t)s->nent++;
    return 0;
}

static int store_add(const lm_dedup *d, store *s, const char *text) {
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 256;
        item *ni = realloc(s->items, nc * sizeof *ni);
        if (!ni) return -1;
        s->items = ni, s->cap = nc;
    }
    item *it = &s->items[s->n];
    it->exact = exact_hash(text);
    it->sh = lm_ftext_shingles(text, strlen(text), SHINGLE_N, &it->n);
    uint32_t idx = (uint32_t)s->n++;
    if (store_put_key(s, it->exact ^ 0xe7acULL, idx)) return -1;
    if (it->sh) {
        uint64_t keys[BANDS];
        band_keys(d, it->sh, it->n, keys);
        for (int b = 0; b < BANDS; b++)
            if (store_put_key(s, keys[b], idx)) return -1;
    }
    return 0;
}

int lm_dedup_check(const lm_dedup *d, const lm_filter_sample *x, lm_filter_result *r) {
    if (d->q.n == 0 && d->a.n == 0) {
        r->checked |= 1u << LM_FILTER_DUP;
        return r->pass;
    }
    r->checked |= 1u << LM_FILTER_DUP;
    char msg[LM_FILTER_REASON_MAX];
    size_t k = 0;
    msg[0] = 0;
    const char *texts[2] = {x->question, x->answer};
    const store *stores[2] = {&d->q, &d->a};
    const char *roles[2] = {"question", "answer"};
    for (int i = 0; i < 2; i++) {
        if (!texts[i]) continue;
        double sim;
        int exact;
        long j = store_find(d, stores[i], texts[i], &sim, &exact);
        if (j < 0) continue;
        int n = exact ? snprintf(msg + k, sizeof msg - k, "%s%s is an exact duplicate of accepted sample %ld",
                                 k ? "; " : "", roles[i], j)
                      : snprintf(msg + k, sizeof msg - k, "%s%s is a near-duplicate of accepted sample %ld (Jaccard %.2f)",
                                 k ? "; " : "", roles[i], j, sim);
        if (n > 0) k += (size_t)n < sizeof msg - k ? (size_t)n : sizeof msg - k - 1;
    }
    if (k) {
        r->pass = 0;
        r->failed |= 1u << LM_FILTER_DUP;
        if (r->n_notes < LM_FILTER_COUNT) {
            r->notes[r->n_notes].filter = LM_FILTER_DUP;
            snprintf(r->notes[r->n_notes].reason, LM_FILTER_REASON_MAX, "%s", msg);
            r->n_notes++;
        }
    }
    return r->pass;
}

long lm_dedup_add(lm_dedup *d, const lm_filter_sample *x, lm_err *err) {
    long idx = (long)d->q.n;
    /* both stores stay index-aligned: an absent text is stored as "" */
    if (store_add(d, &d->q, x->question ? x->question : "") ||
        store_add(d, &d->a, x->answer ? x->answer : "")) {
        lm_errf(err, "dedup: out of memory at sample %ld", idx);
        return -1;
    }
    return idx;
}
