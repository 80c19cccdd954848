/* Teacher backends: the larger model that writes the dataset's questions and
 * answers. One interface, two backends:
 *
 *   lm_teacher_http_new   any OpenAI-compatible chat-completions server
 *                         (llama.cpp's server, Ollama, vLLM, hosted APIs),
 *                         POST {base_url}/chat/completions with libcurl;
 *   lm_teacher_local_new  our own engine on a local GGUF (runtime/generate.h).
 *
 *     lm_teacher *t = lm_teacher_http_new(&cfg, &err);
 *     char *reply;
 *     if (lm_teacher_complete(t, msgs, n, &params, &reply, &err)) ...;
 *     free(reply);
 *     lm_teacher_free(t);
 *
 * lm_teacher_run_batch runs many requests with at most max_in_flight of them
 * in flight (HTTP: curl multi on the calling thread; local: one at a time)
 * and reports each outcome as it arrives, in completion order; the runner
 * (datagen/runner.h) sits on it. Transient failures are retried inside
 * (HTTP: 429, 5xx, timeouts, dropped connections, unusable responses), with
 * exponential backoff and jitter from a PRNG seeded by the config; 400, 401,
 * 403, 404 and other 4xx fail at once. A request that still fails is
 * reported as a failure for that request alone; the batch goes on. */
#ifndef LM_DATAGEN_TEACHER_H
#define LM_DATAGEN_TEACHER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "tokenizer/tokenizer.h"

/* Sampling for one request. A field at its "unset" value is left out of the
 * HTTP body (the server's default applies) or takes the local default. */
typedef struct lm_teacher_params {
    float temperature;          /* < 0: unset (local default 0.8) */
    float top_p;                /* <= 0: unset (local: 1, off) */
    int max_tokens;             /* <= 0: unset (local: 512) */
    bool has_seed;
    uint64_t seed;              /* unset: the backend's config seed (local), none (HTTP) */
    const char *const *stop;    /* [n_stop] strings that end the reply (not included) */
    size_t n_stop;
} lm_teacher_params;

/* All unset. */
lm_teacher_params lm_teacher_params_default(void);

typedef struct lm_teacher_http_config {
    const char *base_url;       /* e.g. "http://127.0.0.1:8080/v1" (http:// or https://) */
    const char *model;          /* "model" field of the request; NULL: "default" */
    const char *api_key_env;    /* NAME of the environment variable holding the key
                                   (NULL: no Authorization header); the key is never logged */
    long connect_timeout_ms;    /* <= 0: 10000 */
    long timeout_ms;            /* whole transfer; <= 0: 120000 */
    int max_retries;            /* extra attempts after the first; < 0: 4 */
    long backoff_base_ms;       /* delay before retry k is base * 2^(k-1), <= 0: 500 */
    long backoff_max_ms;        /* cap of the delay, Retry-After included; <= 0: 30000 */
    uint64_t seed;              /* jitter PRNG */
    int max_in_flight;          /* <= 0: 4 */
} lm_teacher_http_config;

/* Defaults as above (base_url left NULL). */
lm_teacher_http_config lm_teacher_http_config_default(void);

typedef struct lm_teacher_local_config {
    const char *model_path;     /* GGUF */
    int n_ctx;                  /* <= 0: min(2048, the model's) */
    int threads;                /* <= 0: all online CPUs */
    uint64_t seed;              /* used by requests without their own seed */
} lm_teacher_local_config;

/* One request of a batch; everything is borrowed for the batch's duration. */
typedef struct lm_teacher_job {
    const char *id;             /* named in error messages */
    const lm_chat_msg *msgs;
    size_t n_msgs;
    const lm_teacher_params *params;
    void *user;                 /* passed back in the outcome */
} lm_teacher_job;

/* What became of one job; the strings live only during the callback. */
typedef struct lm_teacher_outcome {
    const char *reply;          /* NULL on failure */
    const char *error;          /* NULL on success, else the final error */
    const char *history;        /* errors of the attempts that were retried, one per line
                                   ("attempt 1: HTTP 503: ..."), "" when none */
    int attempts;
} lm_teacher_outcome;

/* Return 0 to go on, 1 to stop gracefully (in-flight requests are abandoned
 * and not reported), -1 for an error (set *err; the batch stops and fails). */
typedef int (*lm_teacher_done_fn)(void *ud, const lm_teacher_job *job,
                                  const lm_teacher_outcome *out, lm_err *err);

typedef struct lm_teacher lm_teacher;

typedef struct lm_teacher_vt {
    int (*complete)(lm_teacher *t, const lm_chat_msg *msgs, size_t n,
                    const lm_teacher_params *p, char **reply, lm_err *err);
    /* NULL: lm_teacher_run_batch calls complete once per job, in order. */
    int (*run_batch)(lm_teacher *t, const lm_teacher_job *jobs, size_t n,
                     lm_teacher_done_fn done, void *ud,
                     const volatile sig_atomic_t *cancel, lm_err *err);
    void (*free)(lm_teacher *t);
} lm_teacher_vt;

/* Backends start their struct with this. */
struct lm_teacher {
    const lm_teacher_vt *vt;
    char name[256];             /* "openai:MODEL@URL" or "local:FILE", for output lines */
};

lm_teacher *lm_teacher_http_new(const lm_teacher_http_config *cfg, lm_err *err);
lm_teacher *lm_teacher_local_new(const lm_teacher_local_config *cfg, lm_err *err);
void lm_teacher_free(lm_teacher *t);

const char *lm_teacher_name(const lm_teacher *t);

/* One request, retried like any batch job. *reply is malloc'd. */
int lm_teacher_complete(lm_teacher *t, const lm_chat_msg *msgs, size_t n,
                        const lm_teacher_params *p, char **reply, lm_err *err);

/* Runs jobs[0..n); done is called on this thread once per job (unless the
 * batch stops). cancel (may be NULL) is polled at least every 100 ms; when
 * it becomes non-zero no job is started any more, in-flight ones are
 * abandoned and the call returns 1. Returns 0 when every job was reported,
 * 1 when stopped (cancel or done returned 1), -1 on error. */
int lm_teacher_run_batch(lm_teacher *t, const lm_teacher_job *jobs, size_t n,
                         lm_teacher_done_fn done, void *ud,
                         const volatile sig_atomic_t *cancel, lm_err *err);

/* ---- HTTP wire format (exposed for tests) ----------------------------- */

/* The chat-completions request body as a malloc'd JSON string:
 * {"model", "messages": [{"role","content"}], "stream": false, and the set
 * params as "temperature", "top_p", "max_tokens", "seed", "stop"}. */
char *lm_teacher_http_body(const char *model, const lm_chat_msg *msgs, size_t n,
                           const lm_teacher_params *p, lm_err *err);

/* Reads choices[0].message.content from a 2xx response body. Errors say what
 * was wrong: "JSON error at line L column C: ...", "no choices[0]...",
 * "empty choices[0].message.content". *content is malloc'd. */
int lm_teacher_http_parse(const char *body, size_t len, char **content, lm_err *err);

/* The server's own explanation in an error response ({"error":{"message"}},
 * {"error":"..."}, {"detail":...}, {"message":...}, else the raw body),
 * control characters replaced, cut to fit cap (with "..."). */
void lm_teacher_http_error_text(const char *body, size_t len, char *buf, size_t cap);

/* Delay in ms before retry `attempt` (1 = first retry): base * 2^(attempt-1)
 * capped at max, then scaled by a jitter factor in [0.5, 1] drawn from *rng
 * (splitmix64 state). retry_after_s >= 0 (the server's Retry-After) sets a
 * floor of that many seconds, still capped at max. */
long lm_teacher_backoff_ms(long base_ms, long max_ms, int attempt, long retry_after_s,
                           uint64_t *rng);

#endif
