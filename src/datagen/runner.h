/* Resumable request runner: sends a list of chat requests through a teacher
 * (at most the teacher's max_in_flight at once) and appends each result to
 * a JSONL file the moment it arrives, made durable (fdatasync) before the
 * next one is written, so a crash or kill loses at most the requests that
 * were in flight. A rerun with the same output files skips every id that is
 * already there and continues exactly where the last run stopped.
 *
 * Input (lm_requests_load_jsonl), one request per line:
 *   {"id": "q17", "messages": [{"role": "user", "content": "..."}, ...],
 *    "params": {"temperature", "top_p", "max_tokens", "seed", "stop": [...]},
 *    "metadata": {...}}                        params, metadata optional
 * ids are unique non-empty strings.
 *
 * Output, two files:
 *   out       one line per success:
 *             {"id", "messages", "reply", "teacher", "metadata", "attempts"}
 *   failures  one line per request that failed in the LATEST run:
 *             {"id", "error", "history": [per retried attempt], "attempts",
 *              "teacher", "metadata"}
 * A rerun retries the failures (unless opts.retry_failures is false) and
 * starts the failures file afresh, so after any run every request is in
 * exactly one of the two files, once (or in neither if it was never reached).
 *
 * Resume: an out file whose last line is cut short (no '\n': a crash in the
 * middle of a write) is truncated back to its last complete line and that
 * request is asked again; a complete line that is not a result line is an
 * error naming the file and line (something else wrote there). A run holds
 * an exclusive flock on the out file: a second run on it is refused. */
#ifndef LM_DATAGEN_RUNNER_H
#define LM_DATAGEN_RUNNER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"
#include "datagen/teacher.h"

typedef struct lm_request {
    char *id;
    lm_chat_msg *msgs;          /* role/content strings owned by the list */
    size_t n_msgs;
    lm_teacher_params params;   /* stop strings owned by the list */
    char *metadata;             /* JSON object text, "{}" when none */
} lm_request;

typedef struct lm_request_list {
    lm_request *items;
    size_t n, cap;
} lm_request_list;

/* Adds a copy of a request; metadata_json NULL means {} and must otherwise
 * be a JSON object. Fails on a duplicate or empty id. */
int lm_request_list_add(lm_request_list *l, const char *id, const lm_chat_msg *msgs, size_t n,
                        const lm_teacher_params *params, const char *metadata_json, lm_err *err);
/* Reads the JSONL format above; errors name path:line and the field. */
int lm_requests_load_jsonl(lm_request_list *l, const char *path, lm_err *err);
/* The same from the file's text (name stands for the path in messages). */
int lm_requests_parse_jsonl(lm_request_list *l, const char *name, const char *data, size_t len,
                            lm_err *err);
void lm_request_list_free(lm_request_list *l);

typedef struct lm_runner_opts {
    const char *out_path;
    const char *failures_path;   /* NULL: out_path with ".failures.jsonl" in place of ".jsonl" */
    bool retry_failures;         /* rerun: ask failed ids again (default true) */
    bool progress;               /* progress line on stderr (silent when not a terminal) */
    const volatile sig_atomic_t *cancel;   /* set (e.g. by a SIGINT handler): stop soon */
} lm_runner_opts;

lm_runner_opts lm_runner_opts_default(void);

typedef struct lm_runner_summary {
    size_t total;        /* requests in the list */
    size_t skipped;      /* already done in earlier runs */
    size_t ok, failed;   /* this run */
    size_t retried;      /* requests of this run that needed more than one attempt */
    size_t torn_bytes;   /* bytes of a cut-short last line removed from out */
    bool cancelled;      /* stopped by opts.cancel before the end */
} lm_runner_summary;

/* Runs every request of l not yet in the output. Returns 0 when the run
 * finished or was cancelled (see summary), -1 on an error that stops it
 * (unreadable/corrupt output file, failed write). Per-request failures do
 * not stop the run; they are counted and written to the failures file. */
int lm_runner_run(lm_teacher *t, const lm_request_list *l, const lm_runner_opts *opts,
                  lm_runner_summary *sum, lm_err *err);

/* The resume scan alone (exposed for tests): reads the ids in a result
 * JSONL file (missing file: none), truncating a cut-short last line when
 * fix_tail (else reporting it as torn without changing the file).
 * *ids is a malloc'd array of malloc'd strings. */
int lm_runner_scan(const char *path, bool fix_tail, char ***ids, size_t *n_ids,
                   size_t *torn_bytes, lm_err *err);
/* The scan of a result file's text (name in messages); never changes a file. */
int lm_runner_scan_mem(const char *name, const char *data, size_t len, char ***ids,
                       size_t *n_ids, size_t *torn_bytes, lm_err *err);

#endif
