#include "model/sampler.h"

#include <math.h>

#include "base/pages.h"
#include <stdlib.h>
#include <string.h>

typedef struct {
    float logit;
    int32_t id;
} cand;

struct lm_sampler {
    lm_sampler_params p;
    int n_vocab;
    uint64_t rng[4];   /* xoshiro256** state */
    int32_t *hist;     /* ring of the last repeat_last_n accepted tokens */
    int hist_n, hist_pos;
    /* Work arrays of one draw, allocated (lm_pages) by the first draw and
     * given back by lm_sampler_trim; nothing in them outlives a draw (seen
     * is all zeros between draws). */
    cand *c;           /* [n_vocab] working candidates */
    uint8_t *seen;     /* [n_vocab] marks for "distinct token" in the penalty */
};

static size_t cand_bytes(const lm_sampler *s) { return sizeof(cand) * (size_t)s->n_vocab; }

lm_sampler_params lm_sampler_defaults(void) {
    lm_sampler_params p = {
        .temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
        .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0,
    };
    return p;
}

int lm_sampler_params_check(const lm_sampler_params *p, lm_err *err) {
    if (!isfinite(p->temp))
        return lm_errf(err, "sampler: temp must be a finite number, got %g", (double)p->temp);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return lm_errf(err, "sampler: top_p must be in (0, 1], got %g", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return lm_errf(err, "sampler: min_p must be in [0, 1], got %g", (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f) || !isfinite(p->repeat_penalty))
        return lm_errf(err, "sampler: repeat_penalty must be > 0, got %g",
                       (double)p->repeat_penalty);
    if (p->repeat_last_n < 0)
        return lm_errf(err, "sampler: repeat_last_n must be >= 0, got %d", p->repeat_last_n);
    return 0;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double uniform01(uint64_t s[4]) {
    return (double)(xoshiro_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

lm_sampler *lm_sampler_new(const lm_sampler_params *p, int n_vocab, lm_err *err) {
    if (lm_sampler_params_check(p, err)) return NULL;
    if (n_vocab <= 0) {
        lm_errf(err, "sampler: n_vocab must be > 0, got %d", n_vocab);
        return NULL;
    }
    lm_sampler *s = calloc(1, sizeof *s);
    if (!s) { lm_errf(err, "sampler: out of memory"); return NULL; }
    s->p = *p;
    s->n_vocab = n_vocab;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    s->hist = malloc(sizeof *s->hist * (size_t)(p->repeat_last_n > 0 ? p->repeat_last_n : 1));
    if (!s->hist) {
        lm_sampler_free(s);
        lm_errf(err, "sampler: out of memory for a history of %d tokens", p->repeat_last_n);
        return NULL;
    }
    return s;
}

void lm_sampler_trim(lm_sampler *s) {
    if (!s) return;
    lm_pages_free(s->c, cand_bytes(s));
    lm_pages_free(s->seen, (size_t)s->n_vocab);
    s->c = NULL;
    s->seen = NULL;
}

void lm_sampler_free(lm_sampler *s) {
    if (!s) return;
    lm_sampler_trim(s);
    free(s->hist);
    free(s);
}

void lm_sampler_accept(lm_sampler *s, int32_t token) {
    int n = s->p.repeat_last_n;
    if (n <= 0) return;
    s->hist[s->hist_pos] = token;
    s->hist_pos = (s->hist_pos + 1) % n;
    if (s->hist_n < n) s->hist_n++;
}

void lm_sampler_reset(lm_sampler *s) {
    s->hist_n = 0;
    s->hist_pos = 0;
}

/* a ranks before b: larger logit, then smaller id (a total order, so the
 * result never depends on the selection algorithm). */
static int ranks_before(const cand *a, const cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cmp_desc(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    return ranks_before(a, b) ? -1 : ranks_before(b, a) ? 1 : 0;
}

/* Min-heap (by rank) sift-down over h[0..n). */
static void sift_down(cand *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && ranks_before(&h[m], &h[l])) m = l;
        if (r < n && ranks_before(&h[m], &h[r])) m = r;
        if (m == i) return;
        cand t = h[i]; h[i] = h[m]; h[m] = t;
        i = m;
    }
}

/* Moves the k best of c[0..n) to c[0..k), sorted best first, in
 * O(n log k) rather than sorting all n (n is 49152 per token). */
static void select_top(cand *c, int n, int k) {
    if (k >= n) { qsort(c, (size_t)n, sizeof *c, cmp_desc); return; }
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(c, k, i);
    for (int i = k; i < n; i++) {
        if (ranks_before(&c[i], &c[0])) {
            cand t = c[0]; c[0] = c[i]; c[i] = t;
            sift_down(c, k, 0);
        }
    }
    qsort(c, (size_t)k, sizeof *c, cmp_desc);
}

static float max_logit(const cand *c, int n) {
    float m = -INFINITY;
    for (int i = 0; i < n; i++) if (c[i].logit > m) m = c[i].logit;
    return m;
}

static void apply_penalty(lm_sampler *s) {
    float pen = s->p.repeat_penalty;
    if (pen == 1.0f || s->hist_n == 0) return;
    for (int i = 0; i < s->hist_n; i++) {
        int32_t t = s->hist[i];
        if (t < 0 || t >= s->n_vocab || s->seen[t]) continue;
        s->seen[t] = 1;
        float *l = &s->c[t].logit;   /* candidates are still indexed by id here */
        *l = *l <= 0.0f ? *l * pen : *l / pen;
    }
    for (int i = 0; i < s->hist_n; i++) {
        int32_t t = s->hist[i];
        if (t >= 0 && t < s->n_vocab) s->seen[t] = 0;
    }
}

/* Keeps the smallest prefix (by rank) whose probability reaches top_p.
 * Grows the sorted prefix geometrically: usually a few dozen tokens hold
 * the mass, so a full sort is rare. Returns the new candidate count. */
static int apply_top_p(cand *c, int n, float top_p) {
    float m = max_logit(c, n);
    double z = 0.0;
    for (int i = 0; i < n; i++) z += exp((double)c[i].logit - m);
    for (int k = n < 64 ? n : 64;; k = k * 4 < n ? k * 4 : n) {
        select_top(c, n, k);
        double cum = 0.0;
        for (int i = 0; i < k; i++) {
            cum += exp((double)c[i].logit - m) / z;
            if (cum >= top_p) return i + 1;
        }
        if (k == n) return n;
    }
}

int32_t lm_sampler_sample(lm_sampler *s, const float *logits) {
    int n = s->n_vocab;
    if (!s->c) {
        s->c = lm_pages_alloc(cand_bytes(s));
        s->seen = lm_pages_alloc((size_t)n);
        if (!s->c || !s->seen) {
            lm_sampler_trim(s);
            return -1;
        }
    }
    cand *c = s->c;
    for (int i = 0; i < n; i++) { c[i].logit = logits[i]; c[i].id = i; }
    apply_penalty(s);

    if (s->p.temp <= 0.0f) {
        int best = 0;
        for (int i = 1; i < n; i++) if (ranks_before(&c[i], &c[best])) best = i;
        return c[best].id;
    }
    if (s->p.top_k > 0 && s->p.top_k < n) {
        select_top(c, n, s->p.top_k);
        n = s->p.top_k;
    }
    if (s->p.top_p < 1.0f) n = apply_top_p(c, n, s->p.top_p);
    if (s->p.min_p > 0.0f) {
        /* p_i >= min_p * p_max  <=>  logit_i >= max_logit + log(min_p) */
        float thr = max_logit(c, n) + logf(s->p.min_p);
        int j = 0;
        for (int i = 0; i < n; i++) if (c[i].logit >= thr) c[j++] = c[i];
        n = j;   /* the max always survives, so n >= 1 */
    }

    float m = max_logit(c, n);
    double inv_t = 1.0 / s->p.temp, z = 0.0;
    for (int i = 0; i < n; i++) z += exp(((double)c[i].logit - m) * inv_t);
    double u = uniform01(s->rng) * z, cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += exp(((double)c[i].logit - m) * inv_t);
        if (u < cum) return c[i].id;
    }
    return c[n - 1].id;   /* u landed on the rounding slack at the top */
}

void lm_sampler_rng_get(const lm_sampler *s, uint64_t st[4]) { memcpy(st, s->rng, sizeof s->rng); }
void lm_sampler_rng_set(lm_sampler *s, const uint64_t st[4]) { memcpy(s->rng, st, sizeof s->rng); }
