/* Backend-independent parts of the teacher interface: dispatch, the
 * one-at-a-time batch used by backends without their own, backoff. */
#include "datagen/teacher.h"

#include <stdlib.h>
#include <string.h>

lm_teacher_params lm_teacher_params_default(void) {
    lm_teacher_params p;
    memset(&p, 0, sizeof p);
    p.temperature = -1;
    p.top_p = -1;
    p.max_tokens = 0;
    return p;
}

const char *lm_teacher_name(const lm_teacher *t) { return t ? t->name : "(none)"; }

void lm_teacher_free(lm_teacher *t) {
    if (t) t->vt->free(t);
}

int lm_teacher_complete(lm_teacher *t, const lm_chat_msg *msgs, size_t n,
                        const lm_teacher_params *p, char **reply, lm_err *err) {
    *reply = NULL;
    return t->vt->complete(t, msgs, n, p, reply, err);
}

int lm_teacher_run_batch(lm_teacher *t, const lm_teacher_job *jobs, size_t n,
                         lm_teacher_done_fn done, void *ud,
                         const volatile sig_atomic_t *cancel, lm_err *err) {
    if (t->vt->run_batch) return t->vt->run_batch(t, jobs, n, done, ud, cancel, err);
    for (size_t i = 0; i < n; i++) {
        if (cancel && *cancel) return 1;
        char *reply = NULL;
        lm_err e = {{0}};
        int rc = t->vt->complete(t, jobs[i].msgs, jobs[i].n_msgs, jobs[i].params, &reply, &e);
        lm_teacher_outcome out = {
            .reply = rc ? NULL : reply,
            .error = rc ? e.msg : NULL,
            .history = "",
            .attempts = 1,
        };
        int d = done(ud, &jobs[i], &out, err);
        free(reply);
        if (d) return d < 0 ? -1 : 1;
    }
    return 0;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

long lm_teacher_backoff_ms(long base_ms, long max_ms, int attempt, long retry_after_s,
                           uint64_t *rng) {
    if (attempt < 1) attempt = 1;
    double d = (double)base_ms;
    for (int k = 1; k < attempt && d < (double)max_ms; k++) d *= 2;
    if (d > (double)max_ms) d = (double)max_ms;
    /* Jitter spreads retries of requests that failed together (a burst of
     * 503s) so they do not all come back at the same instant. */
    double u = (double)(splitmix64(rng) >> 11) / 9007199254740992.0;   /* [0, 1) */
    d *= 0.5 + 0.5 * u;
    if (retry_after_s >= 0) {
        double floor_ms = (double)retry_after_s * 1000.0;
        if (floor_ms > (double)max_ms) floor_ms = (double)max_ms;
        if (d < floor_ms) d = floor_ms;
    }
    return (long)d;
}
