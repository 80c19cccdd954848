/* The BPE merge loop for one pre-tokenized word, on raw bytes (the vocab
 * and merges were decoded through the byte map at load time, which is a
 * bijection, so this equals merging in the mapped alphabet).
 *
 * Start from one symbol per byte; repeatedly merge the adjacent pair with
 * the lowest merge rank, leftmost first among equal ranks, until no pair
 * has a rank. A heap holds candidate pairs; entries made stale by an
 * earlier merge are recognised because symbols only ever grow. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

typedef struct pair {
    int32_t rank;
    int32_t left, right;     /* symbol indices */
    uint32_t len_l, len_r;   /* symbol lengths when pushed */
} pair;

struct lm_bpe_ws {
    int32_t *start, *len, *next, *prev;   /* symbols [cap_sym] */
    size_t cap_sym;
    pair *heap;
    size_t n_heap, cap_heap;
    uint8_t *key;                          /* merge lookup key [cap_key] */
    size_t cap_key;
};

lm_bpe_ws *lm_bpe_ws_new(void) { return calloc(1, sizeof(lm_bpe_ws)); }

void lm_bpe_ws_free(lm_bpe_ws *ws) {
    if (!ws) return;
    free(ws->start); free(ws->len); free(ws->next); free(ws->prev);
    free(ws->heap);
    free(ws->key);
    free(ws);
}

static int reserve(lm_bpe_ws *ws, size_t n) {
    if (n > ws->cap_sym) {
        size_t c = ws->cap_sym ? ws->cap_sym : 64;
        while (c < n) c *= 2;
        int32_t **arrs[] = {&ws->start, &ws->len, &ws->next, &ws->prev};
        for (int i = 0; i < 4; i++) {
            int32_t *q = realloc(*arrs[i], c * sizeof *q);
            if (!q) return -1;
            *arrs[i] = q;
        }
        ws->cap_sym = c;
    }
    if (n + 4 > ws->cap_key) {
        size_t c = ws->cap_key ? ws->cap_key : 64;
        while (c < n + 4) c *= 2;
        uint8_t *q = realloc(ws->key, c);
        if (!q) return -1;
        ws->key = q;
        ws->cap_key = c;
    }
    return 0;
}

static bool before(const pair *a, const pair *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static int heap_push(lm_bpe_ws *ws, pair p) {
    if (ws->n_heap == ws->cap_heap) {
        size_t c = ws->cap_heap ? ws->cap_heap * 2 : 64;
        pair *q = realloc(ws->heap, c * sizeof *q);
        if (!q) return -1;
        ws->heap = q;
        ws->cap_heap = c;
    }
    size_t i = ws->n_heap++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!before(&p, &ws->heap[up])) break;
        ws->heap[i] = ws->heap[up];
        i = up;
    }
    ws->heap[i] = p;
    return 0;
}

static pair heap_pop(lm_bpe_ws *ws) {
    pair top = ws->heap[0];
    pair last = ws->heap[--ws->n_heap];
    size_t i = 0, n = ws->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(&ws->heap[c + 1], &ws->heap[c])) c++;
        if (!before(&ws->heap[c], &last)) break;
        ws->heap[i] = ws->heap[c];
        i = c;
    }
    if (n) ws->heap[i] = last;
    return top;
}

/* Rank of merging symbols l and r, or -1. Key: u32 len(left), left, right. */
static int32_t rank_of(const lm_tokenizer *t, lm_bpe_ws *ws, const uint8_t *w, int32_t l, int32_t r) {
    uint32_t ll = (uint32_t)ws->len[l], lr = (uint32_t)ws->len[r];
    memcpy(ws->key, &ll, 4);
    memcpy(ws->key + 4, w + ws->start[l], ll);
    memcpy(ws->key + 4 + ll, w + ws->start[r], lr);
    return lm_strmap_get(&t->merges, ws->key, 4 + (size_t)ll + lr);
}

static int add_pair(const lm_tokenizer *t, lm_bpe_ws *ws, const uint8_t *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    int32_t rank = rank_of(t, ws, w, l, r);
    if (rank < 0) return 0;
    return heap_push(ws, (pair){rank, l, r, (uint32_t)ws->len[l], (uint32_t)ws->len[r]});
}

static int emit(int32_t id, int32_t **out, size_t *n, size_t *cap) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        int32_t *q = realloc(*out, c * sizeof *q);
        if (!q) return -1;
        *out = q;
        *cap = c;
    }
    (*out)[(*n)++] = id;
    return 0;
}

int lm_bpe_word(const lm_tokenizer *t, lm_bpe_ws *ws, const uint8_t *w, size_t n,
                int32_t **out, size_t *n_out, size_t *cap_out) {
    if (n == 0) return 0;
    if (n > INT32_MAX / 2 || reserve(ws, n)) return -1;
    for (size_t i = 0; i < n; i++) {
        ws->start[i] = (int32_t)i;
        ws->len[i] = 1;
        ws->prev[i] = (int32_t)i - 1;
        ws->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    ws->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (add_pair(t, ws, w, (int32_t)i, (int32_t)i + 1)) return -1;
    while (ws->n_heap) {
        pair p = heap_pop(ws);
        int32_t l = p.left, r = p.right;
        if (ws->len[l] == 0 || ws->len[r] == 0 || ws->next[l] != r ||
            (uint32_t)ws->len[l] != p.len_l || (uint32_t)ws->len[r] != p.len_r)
            continue;   /* stale */
        ws->len[l] += ws->len[r];
        ws->len[r] = 0;
        ws->next[l] = ws->next[r];
        if (ws->next[r] >= 0) ws->prev[ws->next[r]] = l;
        if (add_pair(t, ws, w, ws->prev[l], l)) return -1;
        if (add_pair(t, ws, w, l, ws->next[l])) return -1;
    }
    for (int32_t s = 0; s >= 0; s = ws->next[s]) {
        const uint8_t *p = w + ws->start[s];
        int32_t id = lm_strmap_get(&t->by_bytes, p, (size_t)ws->len[s]);
        if (id >= 0) {
            if (emit(id, out, n_out, cap_out)) return -1;
            continue;
        }
        /* A symbol that is not a token: fall back to one token per byte;
         * bytes without a token are dropped (docs/TOKENIZER.md). */
        for (int32_t k = 0; k < ws->len[s]; k++) {
            int32_t b = lm_strmap_get(&t->by_bytes, p + k, 1);
            if (b >= 0 && emit(b, out, n_out, cap_out)) return -1;
        }
    }
    return 0;
}
