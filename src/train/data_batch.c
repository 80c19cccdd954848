/* Fitting to max_len, the seeded train/validation split, and the batcher
 * that lays examples out as [B, T] rows with next-token targets. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/data.h"

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t mix2(uint64_t a, uint64_t b) {
    uint64_t s = a;
    uint64_t h = splitmix64(&s);
    s = h ^ b;
    return splitmix64(&s);
}

static int count_trained(const lm_sft_example *e) {
    int k = 0;
    for (int i = 1; i < e->n; i++) k += e->mask[i];
    return k;
}

void lm_sft_dataset_recount(lm_sft_dataset *ds) {
    lm_sft_stats *s = &ds->stats;
    s->conversations = ds->n;
    s->tokens = s->trained_tokens = s->truncated = 0;
    for (int i = 0; i < ds->n; i++) {
        s->tokens += ds->ex[i].n;
        s->trained_tokens += ds->ex[i].n_trained;
        s->truncated += ds->ex[i].truncated;
    }
}

void lm_sft_dataset_fit(lm_sft_dataset *ds, int max_len, int policy) {
    if (max_len <= 0) return;
    int kept = 0;
    for (int i = 0; i < ds->n; i++) {
        lm_sft_example *e = &ds->ex[i];
        if (e->n > max_len) {
            if (policy == LM_SFT_DROP) {
                ds->stats.dropped++;
                lm_sft_example_free(e);
                continue;
            }
            int cut = e->n - max_len;
            e->n = max_len;
            e->truncated = true;
            e->n_trained = count_trained(e);
            if (e->n_trained == 0) {   /* the cut took every assistant token */
                ds->stats.dropped++;
                lm_sft_example_free(e);
                continue;
            }
            ds->stats.truncated_tokens += cut;
        }
        ds->ex[kept++] = *e;
    }
    ds->n = kept;
    lm_sft_dataset_recount(ds);
}

/* ---- split --------------------------------------------------------------- */

static double score(uint64_t hash, uint64_t seed) {
    return (double)(mix2(seed, hash) >> 11) * 0x1.0p-53;   /* uniform in [0, 1) */
}

uint8_t *lm_sft_split_sides(const void *set, int n, uint64_t (*hash)(const void *set, int i),
                            double val_frac, uint64_t seed, lm_err *err) {
    if (!(val_frac >= 0 && val_frac < 1))
        return lm_errf(err, "validation fraction %g: expected 0 <= f < 1", val_frac), NULL;
    uint8_t *side = calloc(n ? (size_t)n : 1, 1);
    if (!side) return lm_errf(err, "out of memory"), NULL;
    int n_val = 0, lo = -1, hi = -1;
    double slo = 2, shi = -1;
    for (int i = 0; i < n; i++) {
        double s = score(hash(set, i), seed);
        side[i] = s < val_frac;
        n_val += side[i];
        if (s < slo) { slo = s; lo = i; }
        if (s > shi) { shi = s; hi = i; }
    }
    if (val_frac > 0 && n >= 2) {
        if (n_val == 0) side[lo] = 1;
        else if (n_val == n) side[hi] = 0;
    }
    return side;
}

int lm_sft_example_copy(lm_sft_example *dst, const lm_sft_example *src) {
    *dst = *src;
    dst->tokens = malloc((size_t)src->n * sizeof *dst->tokens);
    dst->mask = malloc((size_t)src->n);
    if (!dst->tokens || !dst->mask) {
        free(dst->tokens);
        free(dst->mask);
        dst->tokens = NULL;
        dst->mask = NULL;
        return -1;
    }
    memcpy(dst->tokens, src->tokens, (size_t)src->n * sizeof *dst->tokens);
    memcpy(dst->mask, src->mask, (size_t)src->n);
    return 0;
}

static lm_sft_dataset *copy_some(const lm_sft_dataset *ds, const uint8_t *side, uint8_t want,
                                 lm_err *err) {
    lm_sft_dataset *o = calloc(1, sizeof *o);
    if (!o) goto oom;
    o->pad_id = ds->pad_id;
    o->stats.longest = ds->stats.longest;
    int n = 0;
    for (int i = 0; i < ds->n; i++) n += side[i] == want;
    o->ex = calloc(n ? (size_t)n : 1, sizeof *o->ex);
    if (!o->ex) goto oom;
    for (int i = 0; i < ds->n; i++) {
        if (side[i] != want) continue;
        if (lm_sft_example_copy(&o->ex[o->n], &ds->ex[i])) goto oom;
        o->n++;
    }
    lm_sft_dataset_recount(o);
    return o;
oom:
    lm_sft_dataset_free(o);
    lm_errf(err, "out of memory");
    return NULL;
}

static uint64_t example_hash(const void *set, int i) {
    return ((const lm_sft_dataset *)set)->ex[i].hash;
}

int lm_sft_split(const lm_sft_dataset *ds, double val_frac, uint64_t seed,
                 lm_sft_dataset **train, lm_sft_dataset **val, lm_err *err) {
    *train = *val = NULL;
    uint8_t *side = lm_sft_split_sides(ds, ds->n, example_hash, val_frac, seed, err);
    if (!side) return -1;
    *train = copy_some(ds, side, 0, err);
    *val = *train ? copy_some(ds, side, 1, err) : NULL;
    free(side);
    if (!*val) {
        lm_sft_dataset_free(*train);
        *train = NULL;
        return -1;
    }
    return 0;
}

/* ---- batcher ------------------------------------------------------------- */

struct lm_batcher {
    const lm_sft_dataset *ds;
    lm_batcher_opts o;
    int *order;             /* [ds->n] this epoch's example order */
    int cursor;             /* next index into order */
    int epoch, batch_in_epoch, batches;
    int *row_first;         /* [B + 1] the order index each row of a batch starts at */
    long step;
    lm_batch buf;           /* arrays owned here */
};

void lm_sft_epoch_order(int *order, int n, uint64_t seed, int epoch) {
    for (int i = 0; i < n; i++) order[i] = i;
    uint64_t s = mix2(seed, (uint64_t)epoch);
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(splitmix64(&s) % (uint64_t)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

static void start_epoch(lm_batcher *b, int epoch) {
    int n = b->ds->n;
    if (b->o.shuffle) {
        lm_sft_epoch_order(b->order, n, b->o.seed, epoch);
    } else {
        for (int i = 0; i < n; i++) b->order[i] = i;
    }
    b->epoch = epoch;
    b->cursor = 0;
    b->batch_in_epoch = 0;
    /* Rows this epoch: one per example, or greedy first-fit in order when packing. */
    int rows = 0;
    for (int i = 0; i < n;) {
        int used = b->ds->ex[b->order[i++]].n;
        while (b->o.pack && i < n && used + b->ds->ex[b->order[i]].n <= b->o.T)
            used += b->ds->ex[b->order[i++]].n;
        rows++;
    }
    b->batches = (rows + b->o.B - 1) / b->o.B;
}

lm_batcher *lm_batcher_new(const lm_sft_dataset *ds, const lm_batcher_opts *opts, lm_err *err) {
    if (opts->B <= 0 || opts->T <= 1) {
        lm_errf(err, "batch shape B=%d T=%d: need B >= 1 and T >= 2", opts->B, opts->T);
        return NULL;
    }
    if ((size_t)opts->B * (size_t)opts->T > (size_t)1 << 30) {
        lm_errf(err, "batch shape B=%d T=%d is too large", opts->B, opts->T);
        return NULL;
    }
    if (ds->n == 0) {
        lm_errf(err, "empty dataset: nothing to batch");
        return NULL;
    }
    for (int i = 0; i < ds->n; i++)
        if (ds->ex[i].n > opts->T) {
            lm_errf(err, "conversation from line %d has %d tokens, more than T=%d "
                         "(fit the dataset to max_len first)", ds->ex[i].line, ds->ex[i].n, opts->T);
            return NULL;
        }
    lm_batcher *b = calloc(1, sizeof *b);
    if (!b) goto oom;
    b->ds = ds;
    b->o = *opts;
    size_t bt = (size_t)opts->B * (size_t)opts->T;
    b->order = malloc((size_t)ds->n * sizeof *b->order);
    b->buf.tokens = malloc(bt * sizeof(int32_t));
    b->buf.targets = malloc(bt * sizeof(int32_t));
    b->buf.segments = malloc(bt * sizeof(int32_t));
    b->buf.pos = malloc(bt * sizeof(int32_t));
    b->buf.loss_mask = malloc(bt);
    b->buf.valid = malloc(bt);
    b->buf.lengths = malloc((size_t)opts->B * sizeof(int32_t));
    b->row_first = malloc(((size_t)opts->B + 1) * sizeof *b->row_first);
    if (!b->order || !b->row_first || !b->buf.tokens || !b->buf.targets || !b->buf.segments || !b->buf.pos ||
        !b->buf.loss_mask || !b->buf.valid || !b->buf.lengths)
        goto oom;
    b->buf.B = opts->B;
    b->buf.T = opts->T;
    start_epoch(b, 0);
    return b;
oom:
    lm_batcher_free(b);
    lm_errf(err, "out of memory");
    return NULL;
}

void lm_batcher_free(lm_batcher *b) {
    if (!b) return;
    free(b->order);
    free(b->row_first);
    free(b->buf.tokens);
    free(b->buf.targets);
    free(b->buf.segments);
    free(b->buf.pos);
    free(b->buf.loss_mask);
    free(b->buf.valid);
    free(b->buf.lengths);
    free(b);
}

int lm_batcher_batches_per_epoch(const lm_batcher *b) { return b->batches; }

/* Writes example e at row[off..off+e->n); returns the trained positions. */
static long place(lm_batch *o, size_t row_off, int off, const lm_sft_example *e, int seg) {
    long trained = 0;
    for (int i = 0; i < e->n; i++) {
        size_t p = row_off + (size_t)off + (size_t)i;
        o->tokens[p] = e->tokens[i];
        o->valid[p] = 1;
        o->segments[p] = seg;
        o->pos[p] = i;
        if (i + 1 < e->n) {   /* the last token of a conversation predicts nothing */
            o->targets[p] = e->tokens[i + 1];
            o->loss_mask[p] = e->mask[i + 1];
            trained += e->mask[i + 1];
        }
    }
    return trained;
}

int lm_batch_span(int longest, int T) {
    int t = (longest + 3) / 4 * 4;
    return t < T ? t : T;
}

int lm_batcher_next(lm_batcher *b, lm_batch *out, lm_err *err) {
    const lm_sft_dataset *ds = b->ds;
    if (b->cursor >= ds->n) start_epoch(b, b->epoch + 1);
    lm_batch *o = &b->buf;
    /* Which examples go in which row, then the shape. */
    int rows = 0, longest = 0, c = b->cursor;
    memset(o->lengths, 0, (size_t)b->o.B * sizeof *o->lengths);
    for (; rows < b->o.B && c < ds->n; rows++) {
        b->row_first[rows] = c;
        int used = ds->ex[b->order[c++]].n;
        while (b->o.pack && c < ds->n && used + ds->ex[b->order[c]].n <= b->o.T)
            used += ds->ex[b->order[c++]].n;
        o->lengths[rows] = used;
        if (used > longest) longest = used;
    }
    b->row_first[rows] = c;
    o->B = b->o.trim ? rows : b->o.B;
    o->T = b->o.trim ? lm_batch_span(longest, b->o.T) : b->o.T;
    size_t bt = (size_t)o->B * (size_t)o->T;
    for (size_t i = 0; i < bt; i++) {
        o->tokens[i] = o->targets[i] = ds->pad_id;
        o->segments[i] = o->pos[i] = 0;
    }
    memset(o->loss_mask, 0, bt);
    memset(o->valid, 0, bt);
    o->n_rows = rows;
    o->n_trained = 0;
    for (int r = 0; r < rows; r++) {
        size_t row_off = (size_t)r * (size_t)o->T;
        int used = 0, seg = 1;
        for (int k = b->row_first[r]; k < b->row_first[r + 1]; k++) {
            const lm_sft_example *e = &ds->ex[b->order[k]];
            o->n_trained += place(o, row_off, used, e, seg++);
            used += e->n;
        }
    }
    b->cursor = c;
    o->epoch = b->epoch;
    o->step = b->step++;
    o->batch_in_epoch = b->batch_in_epoch++;
    o->epoch_end = b->cursor >= ds->n;
    *out = *o;
    return 0;
}
