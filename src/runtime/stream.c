#include "runtime/stream.h"

#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"

void lm_stream_init(lm_stream *s, const char *const *stop, size_t n_stop, lm_stream_emit_fn emit,
                    void *ud) {
    memset(s, 0, sizeof *s);
    s->stop = stop;
    s->n_stop = n_stop;
    s->emit = emit;
    s->ud = ud;
    for (size_t i = 0; i < n_stop; i++)
        if (strlen(stop[i]) > s->max_stop) s->max_stop = strlen(stop[i]);
}

/* Passes raw[done, end) on, cleaned. */
static int pass_on(lm_stream *s, size_t end, bool last, lm_err *err) {
    if (end <= s->done) return 0;
    size_t before = s->out.len;
    lm_utf8_clean_into(&s->out, s->raw.p + s->done, end - s->done,
                       LM_UTF8_NO_NUL | (last ? LM_UTF8_DROP_TAIL : 0));
    s->done = end;
    if (s->out.oom) return lm_errf(err, "out of memory");
    if (s->out.len > before && s->emit && s->emit(s->ud, s->out.p + before, s->out.len - before)) {
        s->cancelled = true;
        return lm_errf(err, "cancelled by the stream callback");
    }
    return 0;
}

/* Where the earliest stop string starts at or after from, or -1. */
static long find_stop(const lm_stream *s, size_t from) {
    long best = -1;
    for (size_t i = 0; i < s->n_stop; i++) {
        size_t k = strlen(s->stop[i]);
        if (k == 0) continue;
        for (size_t j = from; j + k <= s->raw.len; j++)
            if (!memcmp(s->raw.p + j, s->stop[i], k)) {
                if (best < 0 || (long)j < best) best = (long)j;
                break;
            }
    }
    return best;
}

int lm_stream_push(lm_stream *s, const char *bytes, size_t n, lm_err *err) {
    if (s->stopped || s->cancelled || n == 0) return 0;
    lm_sb_add(&s->raw, bytes, n);
    if (s->raw.oom) return lm_errf(err, "out of memory");
    /* Bytes before done never start a stop string: they were held back
     * until no stop could begin there. */
    long at = find_stop(s, s->done);
    if (at >= 0) {
        s->stopped = true;
        return pass_on(s, (size_t)at, true, err);
    }
    size_t end = s->raw.len;
    size_t hold = s->max_stop ? s->max_stop - 1 : 0;
    end = end > hold ? end - hold : 0;
    /* do not cut a character whose last bytes have not come yet */
    for (size_t i = end; i > s->done && i + 4 > end; i--) {
        unsigned char c = (unsigned char)s->raw.p[i - 1];
        if ((c & 0xC0) == 0x80) continue;
        size_t k = (size_t)lm_utf8_lead_len(c);
        if (k > 1 && i - 1 + k > end) end = i - 1;
        break;
    }
    return pass_on(s, end, false, err);
}

int lm_stream_finish(lm_stream *s, lm_err *err) {
    if (s->stopped || s->cancelled) return 0;
    return pass_on(s, s->raw.len, true, err);
}

char *lm_stream_take(lm_stream *s) { return lm_sb_take(&s->out); }

void lm_stream_free(lm_stream *s) {
    lm_sb_free(&s->raw);
    lm_sb_free(&s->out);
}
