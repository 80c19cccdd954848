/* Runs a request JSONL file through the resumable runner against a teacher
 * and prints the summary as one JSON line on stdout (for the pytest tests).
 *   lm_teacher_run --requests R.jsonl --out OUT.jsonl [--failures F.jsonl]
 *                  (--base URL [--model M] [--api-key-env NAME] | --local GGUF)
 *                  [--in-flight N] [--timeout-ms MS] [--connect-timeout-ms MS]
 *                  [--retries N] [--backoff-base-ms MS] [--backoff-max-ms MS]
 *                  [--seed S] [--threads N] [--no-retry-failures]
 * SIGINT/SIGTERM stop the run cleanly (exit 0, "cancelled": true). Exit 1
 * on an error that stops the run, 2 on bad usage. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "datagen/runner.h"
#include "datagen/teacher.h"

static volatile sig_atomic_t g_stop;   /* a signal handler can only reach a global */
static void on_signal(int sig) { (void)sig; g_stop = 1; }

int main(int argc, char **argv) {
    const char *requests = NULL, *local = NULL;
    lm_teacher_http_config hc = lm_teacher_http_config_default();
    lm_teacher_local_config lc = {0};
    lm_runner_opts ro = lm_runner_opts_default();
    ro.progress = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--no-retry-failures")) { ro.retry_failures = false; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "%s needs a value\n", a); return 2; }
        const char *v = argv[++i];
        if (!strcmp(a, "--requests")) requests = v;
        else if (!strcmp(a, "--out")) ro.out_path = v;
        else if (!strcmp(a, "--failures")) ro.failures_path = v;
        else if (!strcmp(a, "--base")) hc.base_url = v;
        else if (!strcmp(a, "--model")) hc.model = v;
        else if (!strcmp(a, "--api-key-env")) hc.api_key_env = v;
        else if (!strcmp(a, "--local")) local = v;
        else if (!strcmp(a, "--in-flight")) hc.max_in_flight = atoi(v);
        else if (!strcmp(a, "--timeout-ms")) hc.timeout_ms = atol(v);
        else if (!strcmp(a, "--connect-timeout-ms")) hc.connect_timeout_ms = atol(v);
        else if (!strcmp(a, "--retries")) hc.max_retries = atoi(v);
        else if (!strcmp(a, "--backoff-base-ms")) hc.backoff_base_ms = atol(v);
        else if (!strcmp(a, "--backoff-max-ms")) hc.backoff_max_ms = atol(v);
        else if (!strcmp(a, "--seed")) hc.seed = lc.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--threads")) lc.threads = atoi(v);
        else { fprintf(stderr, "unknown flag %s\n", a); return 2; }
    }
    if (!requests || !ro.out_path || (!hc.base_url == !local)) {
        fprintf(stderr, "usage: lm_teacher_run --requests R --out O (--base URL | --local GGUF)\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    ro.cancel = &g_stop;

    lm_err err = {{0}};
    lm_request_list l = {0};
    lm_teacher *t = NULL;
    int rc = 1;
    if (lm_requests_load_jsonl(&l, requests, &err)) goto done;
    lc.model_path = local;
    t = local ? lm_teacher_local_new(&lc, &err) : lm_teacher_http_new(&hc, &err);
    if (!t) goto done;
    lm_runner_summary s;
    if (lm_runner_run(t, &l, &ro, &s, &err)) goto done;
    printf("{\"total\": %zu, \"skipped\": %zu, \"ok\": %zu, \"failed\": %zu, \"retried\": %zu, "
           "\"torn_bytes\": %zu, \"cancelled\": %s}\n", s.total, s.skipped, s.ok, s.failed,
           s.retried, s.torn_bytes, s.cancelled ? "true" : "false");
    rc = 0;
done:
    if (rc) fprintf(stderr, "lm_teacher_run: %s\n", err.msg);
    lm_teacher_free(t);
    lm_request_list_free(&l);
    return rc;
}
