/* Open-addressing hash table from byte strings to int32, used for the
 * vocabulary (text -> id) and the merge ranks. Keys are copied into one
 * growing buffer; slots hold entry indices so rehashing moves no keys. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/internal.h"

static uint64_t hash(const void *key, size_t len) {
    /* FNV-1a: plenty for short token strings, and deterministic. */
    const uint8_t *p = key;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static int rehash(lm_strmap *m, size_t n_slots) {
    uint32_t *slots = calloc(n_slots, sizeof *slots);
    if (!slots) return -1;
    for (size_t e = 0; e < m->n; e++) {
        size_t i = hash(m->keys + m->key_off[e], m->key_len[e]) & (n_slots - 1);
        while (slots[i]) i = (i + 1) & (n_slots - 1);
        slots[i] = (uint32_t)(e + 1);
    }
    free(m->slots);
    m->slots = slots;
    m->n_slots = n_slots;
    return 0;
}

int lm_strmap_init(lm_strmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    size_t n_slots = 16;
    while (n_slots < expected * 2) n_slots *= 2;
    return rehash(m, n_slots);
}

void lm_strmap_free(lm_strmap *m) {
    if (!m) return;
    free(m->slots);
    free(m->key_off);
    free(m->key_len);
    free(m->val);
    free(m->keys);
    memset(m, 0, sizeof *m);
}

/* Slot holding key, or the empty slot where it would go. */
static size_t find(const lm_strmap *m, const void *key, size_t len) {
    size_t i = hash(key, len) & (m->n_slots - 1);
    for (;;) {
        uint32_t s = m->slots[i];
        if (!s) return i;
        size_t e = s - 1;
        if (m->key_len[e] == len && memcmp(m->keys + m->key_off[e], key, len) == 0) return i;
        i = (i + 1) & (m->n_slots - 1);
    }
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

int lm_strmap_put(lm_strmap *m, const void *key, size_t len, int32_t val, bool keep_first) {
    if (len > UINT32_MAX) return -1;
    size_t i = find(m, key, len);
    if (m->slots[i]) {
        if (!keep_first) m->val[m->slots[i] - 1] = val;
        return 0;
    }
    if (m->n + 1 > UINT32_MAX - 1) return -1;
    if (m->n + 1 > m->cap) {
        size_t cap = m->cap, c2 = m->cap, c3 = m->cap;
        void *a = m->key_off, *b = m->key_len, *c = m->val;
        if (grow(&a, &cap, m->n + 1, sizeof *m->key_off)) return -1;
        m->key_off = a;
        if (grow(&b, &c2, m->n + 1, sizeof *m->key_len)) return -1;
        m->key_len = b;
        if (grow(&c, &c3, m->n + 1, sizeof *m->val)) return -1;
        m->val = c;
        m->cap = cap;
    }
    void *k = m->keys;
    if (grow(&k, &m->keys_cap, m->keys_len + len + 1, 1)) return -1;
    m->keys = k;
    if (m->keys_len + len > UINT32_MAX) return -1;
    if (len) memcpy(m->keys + m->keys_len, key, len);
    m->key_off[m->n] = (uint32_t)m->keys_len;
    m->key_len[m->n] = (uint32_t)len;
    m->val[m->n] = val;
    m->keys_len += len;
    m->n++;
    m->slots[i] = (uint32_t)m->n;
    if (m->n * 2 > m->n_slots) return rehash(m, m->n_slots * 2);
    return 0;
}

int32_t lm_strmap_get(const lm_strmap *m, const void *key, size_t len) {
    if (!m->slots) return -1;
    size_t i = find(m, key, len);
    return m->slots[i] ? m->val[m->slots[i] - 1] : -1;
}
