/* OpenAI-compatible chat-completions teacher over HTTP(S) with libcurl.
 * A batch runs on the calling thread with one curl multi handle: at most
 * max_in_flight transfers at once, every transfer bounded by the connect
 * and total timeouts, failed attempts parked until their backoff expires.
 * A 429 also pauses new starts for the whole batch until its delay is over,
 * since the server is telling the client, not the request, to slow down. */
#include "datagen/teacher.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/strbuf.h"

#define MAX_RESPONSE (16u << 20)   /* no chat reply is this big: a broken server */
#define SERVER_MSG_MAX 240         /* how much of a server's error text we quote */

typedef struct http_teacher {
    lm_teacher base;
    char *base_url;       /* without trailing '/' */
    char *url;            /* base_url + "/chat/completions" */
    char *model;
    char *auth;           /* "Authorization: Bearer KEY" or NULL; secret */
    long connect_ms, timeout_ms, backoff_base_ms, backoff_max_ms;
    int max_retries, max_in_flight;
    uint64_t rng;
} http_teacher;

/* ---- wire format ------------------------------------------------------ */

char *lm_teacher_http_body(const char *model, const lm_chat_msg *msgs, size_t n,
                           const lm_teacher_params *p, lm_err *err) {
    json_t *root = json_object(), *arr = json_array();
    if (!root || !arr) goto oom;
    int bad = json_object_set_new(root, "model", json_string(model ? model : "default"));
    bad |= json_object_set_new(root, "messages", arr);
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content) {
            json_decref(root);
            lm_errf(err, "message %zu: missing %s", i, msgs[i].role ? "content" : "role");
            return NULL;
        }
        /* json_string refuses invalid UTF-8 (NULL); say which message. */
        json_t *r = json_string(msgs[i].role), *c = json_string(msgs[i].content);
        if (!r || !c) {
            json_decref(r);
            json_decref(c);
            json_decref(root);
            lm_errf(err, "message %zu: %s is not valid UTF-8", i, r ? "content" : "role");
            return NULL;
        }
        json_t *m = json_object();
        bad |= !m || json_object_set_new(m, "role", r) || json_object_set_new(m, "content", c) ||
               json_array_append_new(arr, m);
    }
    bad |= json_object_set_new(root, "stream", json_false());
    if (p) {
        if (p->temperature >= 0)
            bad |= json_object_set_new(root, "temperature", json_real(p->temperature));
        if (p->top_p > 0) bad |= json_object_set_new(root, "top_p", json_real(p->top_p));
        if (p->max_tokens > 0)
            bad |= json_object_set_new(root, "max_tokens", json_integer(p->max_tokens));
        /* JSON integers are signed 64-bit in jansson and OpenAI takes an
         * int64 seed: the top bit of a larger seed is dropped. */
        if (p->has_seed)
            bad |= json_object_set_new(root, "seed",
                                       json_integer((json_int_t)(p->seed & INT64_MAX)));
        if (p->n_stop) {
            json_t *st = json_array();
            bad |= !st || json_object_set_new(root, "stop", st);
            for (size_t i = 0; st && i < p->n_stop; i++) {
                json_t *s = json_string(p->stop[i]);
                if (!s) {
                    json_decref(root);
                    lm_errf(err, "stop[%zu] is not valid UTF-8", i);
                    return NULL;
                }
                bad |= json_array_append_new(st, s);
            }
        }
    }
    if (bad) goto oom;
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s) lm_errf(err, "out of memory");
    return s;
oom:
    json_decref(root);
    lm_errf(err, "out of memory");
    return NULL;
}

int lm_teacher_http_parse(const char *body, size_t len, char **content, lm_err *err) {
    *content = NULL;
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    if (!root) {
        if (len == 0) return lm_errf(err, "empty response body");
        return lm_errf(err, "JSON error at line %d column %d: %s", je.line, je.column, je.text);
    }
    int rc = -1;
    json_t *choices = json_object_get(root, "choices");
    json_t *c0 = json_array_get(choices, 0);
    json_t *msg = json_object_get(c0, "message");
    json_t *txt = json_object_get(msg, "content");
    if (!json_is_object(root)) {
        lm_errf(err, "response is a JSON %s, not an object",
                json_is_array(root) ? "array" : "scalar");
    } else if (!json_is_array(choices)) {
        lm_errf(err, "no choices[0].message.content (no \"choices\" array)");
    } else if (!c0) {
        lm_errf(err, "no choices[0].message.content (\"choices\" is empty)");
    } else if (!json_is_object(msg)) {
        lm_errf(err, "no choices[0].message.content (no \"message\" object)");
    } else if (!json_is_string(txt)) {
        lm_errf(err, "no choices[0].message.content (%s)",
                txt ? "content is not a string" : "no \"content\"");
    } else if (json_string_length(txt) == 0) {
        lm_errf(err, "empty choices[0].message.content");
    } else {
        *content = strndup(json_string_value(txt), json_string_length(txt));
        if (*content) rc = 0;
        else lm_errf(err, "out of memory");
    }
    json_decref(root);
    return rc;
}

static void quote_clean(const char *s, size_t len, char *buf, size_t cap) {
    size_t k = 0;
    bool cut = false;
    for (size_t i = 0; i < len; i++) {
        if (k + 4 >= cap) { cut = true; break; }
        unsigned char ch = (unsigned char)s[i];
        buf[k++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
    }
    /* Do not leave half a UTF-8 sequence before the ellipsis. */
    if (cut) {
        while (k > 0 && ((unsigned char)buf[k - 1] & 0xC0) == 0x80) k--;
        if (k > 0 && ((unsigned char)buf[k - 1] & 0xC0) == 0xC0) k--;
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
}

void lm_teacher_http_error_text(const char *body, size_t len, char *buf, size_t cap) {
    if (cap == 0) return;
    buf[0] = '\0';
    if (cap < 8) return;
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *e = json_object_get(root, "error");
    const char *pick = NULL;
    if (json_is_string(e)) pick = json_string_value(e);
    else if (json_is_string(json_object_get(e, "message")))
        pick = json_string_value(json_object_get(e, "message"));
    else if (json_is_string(json_object_get(root, "detail")))
        pick = json_string_value(json_object_get(root, "detail"));
    else if (json_is_string(json_object_get(root, "message")))
        pick = json_string_value(json_object_get(root, "message"));
    if (pick) {
        quote_clean(pick, strlen(pick), buf, cap);
    } else if (json_object_get(root, "detail")) {
        /* FastAPI validation errors put a list in "detail". */
        char *d = json_dumps(json_object_get(root, "detail"), JSON_COMPACT);
        if (d) quote_clean(d, strlen(d), buf, cap);
        free(d);
    } else {
        quote_clean(body ? body : "", body ? len : 0, buf, cap);
    }
    json_decref(root);
}

/* ---- the teacher ------------------------------------------------------ */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

typedef struct slot {
    size_t job;
    int attempts;
    double not_before;        /* waiting for a retry until then */
    bool active;
    CURL *easy;
    struct curl_slist *hdrs;
    char *body;               /* request JSON, built on the first attempt */
    lm_sb resp;
    lm_sb history;
    char curl_err[CURL_ERROR_SIZE];
} slot;

static void slot_release_transfer(slot *s, CURLM *multi) {
    if (s->easy) {
        curl_multi_remove_handle(multi, s->easy);
        curl_easy_cleanup(s->easy);
        s->easy = NULL;
    }
    curl_slist_free_all(s->hdrs);
    s->hdrs = NULL;
    lm_sb_free(&s->resp);
    s->active = false;
}

static void slot_free(slot *s, CURLM *multi) {
    slot_release_transfer(s, multi);
    free(s->body);
    lm_sb_free(&s->history);
    free(s);
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud) {
    lm_sb *b = ud;
    size_t k = size * nmemb;
    if (b->len + k > MAX_RESPONSE) {
        b->oom = true;
        return 0;   /* CURLE_WRITE_ERROR: refuse to buffer more */
    }
    lm_sb_add(b, ptr, k);
    return b->oom ? 0 : k;
}

static int slot_start(http_teacher *t, slot *s, const lm_teacher_job *job, CURLM *multi,
                      lm_err *err) {
    if (!s->body) {
        s->body = lm_teacher_http_body(t->model, job->msgs, job->n_msgs, job->params, err);
        if (!s->body) return -1;
    }
    s->easy = curl_easy_init();
    if (!s->easy) return lm_errf(err, "curl_easy_init failed");
    struct curl_slist *h = NULL, *h2;
    const char *hs[] = {"Content-Type: application/json", "Accept: application/json",
                        "Expect:", t->auth};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        if (!hs[i]) continue;
        h2 = curl_slist_append(h, hs[i]);
        if (!h2) { curl_slist_free_all(h); return lm_errf(err, "out of memory"); }
        h = h2;
    }
    s->hdrs = h;
    s->curl_err[0] = '\0';
    CURL *e = s->easy;
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, t->url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->hdrs) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, s->body) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(s->body)) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, t->connect_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, t->timeout_ms) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, &s->resp) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->curl_err) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, s) != CURLE_OK;
    if (bad) return lm_errf(err, "curl_easy_setopt failed");
    if (curl_multi_add_handle(multi, e) != CURLM_OK) return lm_errf(err, "curl_multi_add_handle failed");
    s->active = true;
    s->attempts++;
    return 0;
}

static bool curl_retryable(CURLcode rc) {
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: case CURLE_COULDNT_CONNECT: case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_GOT_NOTHING: case CURLE_RECV_ERROR: case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE: case CURLE_SSL_CONNECT_ERROR: case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

/* Judges a finished transfer. Returns 0 with *reply set on success, else
 * fills what (one line, no prefix), *retry and *retry_after_s. */
static int judge(http_teacher *t, slot *s, CURLcode rc, char **reply, char *what, size_t cap,
                 bool *retry, long *retry_after_s) {
    *reply = NULL;
    *retry = false;
    *retry_after_s = -1;
    if (rc != CURLE_OK) {
        *retry = curl_retryable(rc);
        if (rc == CURLE_OPERATION_TIMEDOUT)
            snprintf(what, cap, "timed out (connect limit %ld ms, total %ld ms): %s",
                     t->connect_ms, t->timeout_ms, s->curl_err[0] ? s->curl_err : "no detail");
        else if (rc == CURLE_WRITE_ERROR && s->resp.oom)
            snprintf(what, cap, "response larger than %u MiB (or out of memory)",
                     MAX_RESPONSE >> 20);
        else
            snprintf(what, cap, "%s%s%s", curl_easy_strerror(rc), s->curl_err[0] ? ": " : "",
                     s->curl_err);
        return -1;
    }
    long status = 0;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        char msg[SERVER_MSG_MAX + 4];
        lm_teacher_http_error_text(s->resp.p, s->resp.len, msg, sizeof msg);
        snprintf(what, cap, "HTTP %ld%s%s", status, msg[0] ? ": " : "", msg);
        *retry = status == 429 || status == 408 || status >= 500;
        curl_off_t ra = 0;
        if (*retry && curl_easy_getinfo(s->easy, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
            *retry_after_s = (long)ra;
        return -1;
    }
    lm_err e = {{0}};
    if (lm_teacher_http_parse(s->resp.p ? s->resp.p : "", s->resp.len, reply, &e)) {
        /* A garbled or truncated answer may well be fine the next time. */
        snprintf(what, cap, "response: %.600s", e.msg);
        *retry = true;
        return -1;
    }
    return 0;
}

static int http_run_batch(lm_teacher *base, const lm_teacher_job *jobs, size_t n,
                          lm_teacher_done_fn done, void *ud,
                          const volatile sig_atomic_t *cancel, lm_err *err) {
    http_teacher *t = (http_teacher *)base;
    if (n == 0) return 0;
    CURLM *multi = curl_multi_init();
    size_t cap_slots = (size_t)t->max_in_flight * 2 + 8;
    slot **waiting = calloc(cap_slots, sizeof *waiting);   /* parked for a retry */
    slot **flying = calloc((size_t)t->max_in_flight, sizeof *flying);
    if (!multi || !waiting || !flying) {
        curl_multi_cleanup(multi);
        free(waiting);
        free(flying);
        return lm_errf(err, "out of memory");
    }
    size_t n_wait = 0, next = 0, reported = 0;
    int active = 0, rc = 0;
    double pause_until = 0;

    while (reported < n && rc == 0) {
        if (cancel && *cancel) { rc = 1; break; }
        double now = lm_now_s();
        /* Start work: retries that are due first, then new jobs. */
        while (active < t->max_in_flight && now >= pause_until && rc == 0) {
            slot *s = NULL;
            for (size_t i = 0; i < n_wait; i++)
                if (waiting[i]->not_before <= now) {
                    s = waiting[i];
                    waiting[i] = waiting[--n_wait];
                    break;
                }
            if (!s && next < n) {
                /* Keep room to park every in-flight transfer for a retry. */
                if (n_wait + (size_t)active >= cap_slots) break;
                s = calloc(1, sizeof *s);
                if (!s) { rc = lm_errf(err, "out of memory"); break; }
                s->job = next++;
            }
            if (!s) break;
            lm_err e = {{0}};
            if (slot_start(t, s, &jobs[s->job], multi, &e)) {
                /* Could not even send it (bad UTF-8 in a message, ...): that
                 * request fails, the batch goes on. */
                char msg[LM_ERR_MAX + 300];
                snprintf(msg, sizeof msg, "teacher %s: request '%s': %s", t->base_url,
                         jobs[s->job].id ? jobs[s->job].id : "?", e.msg);
                lm_teacher_outcome o = {NULL, msg, s->history.p ? s->history.p : "", s->attempts};
                int d = done(ud, &jobs[s->job], &o, err);
                reported++;
                slot_free(s, multi);
                if (d) rc = d < 0 ? -1 : 1;
                continue;
            }
            flying[active++] = s;
        }
        if (rc) break;
        if (active == 0) {
            if (reported >= n) break;
            /* Only parked retries left: sleep towards the earliest one. */
            double wake = pause_until;
            for (size_t i = 0; i < n_wait; i++)
                if (i == 0 || waiting[i]->not_before < wake) wake = waiting[i]->not_before;
            if (wake < pause_until) wake = pause_until;
            double dt = wake - lm_now_s();
            if (dt > 0.1) dt = 0.1;
            if (dt > 0) {
                struct timespec ts = {0, (long)(dt * 1e9)};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        int running = 0;
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int q;
        while ((m = curl_multi_info_read(multi, &q)) && rc == 0) {
            if (m->msg != CURLMSG_DONE) continue;
            slot *s = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            CURLcode res = m->data.result;
            char what[LM_ERR_MAX - 200];
            char *reply = NULL;
            bool retry = false;
            long ra = -1;
            int ok = judge(t, s, res, &reply, what, sizeof what, &retry, &ra) == 0;
            slot_release_transfer(s, multi);
            for (int i = 0; i < active; i++)
                if (flying[i] == s) { flying[i] = flying[--active]; break; }
            const lm_teacher_job *job = &jobs[s->job];
            const char *id = job->id ? job->id : "?";
            if (!ok && retry && s->attempts <= t->max_retries) {
                lm_sb_printf(&s->history, "attempt %d: %s\n", s->attempts, what);
                long ms = lm_teacher_backoff_ms(t->backoff_base_ms, t->backoff_max_ms,
                                                s->attempts, ra, &t->rng);
                s->not_before = lm_now_s() + ms / 1000.0;
                if (ra > 0 && s->not_before > pause_until) pause_until = s->not_before;
                waiting[n_wait++] = s;
                continue;
            }
            char msg[LM_ERR_MAX + 300];
            if (!ok) {
                bool resp = !strncmp(what, "response: ", 10);
                char tries[64] = "";
                if (s->attempts > 1) snprintf(tries, sizeof tries, " (gave up after %d attempts)", s->attempts);
                snprintf(msg, sizeof msg, "teacher %s: %s '%s': %s%s", t->base_url,
                         resp ? "response to request" : "request", id, resp ? what + 10 : what,
                         tries);
            }
            lm_teacher_outcome o = {ok ? reply : NULL, ok ? NULL : msg,
                                    s->history.p ? s->history.p : "", s->attempts};
            int d = done(ud, job, &o, err);
            free(reply);
            reported++;
            slot_free(s, multi);
            if (d) rc = d < 0 ? -1 : 1;
        }
        if (rc || reported >= n) break;
        /* Wake for socket activity, a due retry, or the cancel poll. */
        int wait_ms = 100;
        double now2 = lm_now_s();
        for (size_t i = 0; i < n_wait; i++) {
            double dt = (waiting[i]->not_before - now2) * 1000.0;
            if (dt < wait_ms) wait_ms = dt < 0 ? 0 : (int)dt;
        }
        curl_multi_poll(multi, NULL, 0, wait_ms, NULL);
    }
    /* Abandon whatever is still in flight or parked (stop or error). */
    for (int i = 0; i < active; i++) slot_free(flying[i], multi);
    free(flying);
    for (size_t i = 0; i < n_wait; i++) slot_free(waiting[i], multi);
    free(waiting);
    curl_multi_cleanup(multi);
    return rc;
}

typedef struct one_result { char *reply; lm_err *err; } one_result;

static int one_done(void *ud, const lm_teacher_job *job, const lm_teacher_outcome *o, lm_err *err) {
    (void)job;
    (void)err;
    one_result *r = ud;
    if (o->reply) {
        r->reply = strdup(o->reply);
        if (!r->reply) lm_errf(r->err, "out of memory");
    } else {
        lm_errf(r->err, "%s", o->error);
    }
    return 0;
}

static int http_complete(lm_teacher *t, const lm_chat_msg *msgs, size_t n,
                         const lm_teacher_params *p, char **reply, lm_err *err) {
    lm_teacher_job job = {"complete", msgs, n, p, NULL};
    one_result r = {NULL, err};
    if (http_run_batch(t, &job, 1, one_done, &r, NULL, err)) return -1;
    *reply = r.reply;
    return r.reply ? 0 : -1;
}

static void http_free(lm_teacher *base) {
    http_teacher *t = (http_teacher *)base;
    if (t->auth) {
        /* The key should not linger in freed memory. */
        volatile char *a = t->auth;
        for (size_t i = 0; a[i]; i++) a[i] = 0;
        free(t->auth);
    }
    free(t->base_url);
    free(t->url);
    free(t->model);
    free(t);
}

static const lm_teacher_vt http_vt = {http_complete, http_run_batch, http_free};

lm_teacher_http_config lm_teacher_http_config_default(void) {
    lm_teacher_http_config c;
    memset(&c, 0, sizeof c);
    c.connect_timeout_ms = 10000;
    c.timeout_ms = 120000;
    c.max_retries = 4;
    c.backoff_base_ms = 500;
    c.backoff_max_ms = 30000;
    c.max_in_flight = 4;
    return c;
}

lm_teacher *lm_teacher_http_new(const lm_teacher_http_config *cfg, lm_err *err) {
    const char *u = cfg->base_url;
    if (!u || (strncmp(u, "http://", 7) && strncmp(u, "https://", 8)))
        return lm_errf(err, "teacher: base URL '%s' must start with http:// or https://",
                       u ? u : "(none)"), NULL;
    pthread_once(&curl_once, curl_init_once);
    http_teacher *t = calloc(1, sizeof *t);
    if (!t) return lm_errf(err, "out of memory"), NULL;
    t->base.vt = &http_vt;
    size_t ul = strlen(u);
    while (ul > 0 && u[ul - 1] == '/') ul--;
    /* base_url is what messages and output lines show: credentials in the
     * URL (https://user:secret@host/v1) are masked there. */
    const char *auth_start = strstr(u, "://") + 3;
    const char *auth_end = auth_start + strcspn(auth_start, "/?#");
    const char *at = memchr(auth_start, '@', (size_t)(auth_end - auth_start));
    if (at && at < u + ul) {
        size_t head = (size_t)(auth_start - u), tail = ul - (size_t)(at - u);
        t->base_url = malloc(head + 3 + tail + 1);
        if (t->base_url) {
            memcpy(t->base_url, u, head);
            memcpy(t->base_url + head, "***", 3);
            memcpy(t->base_url + head + 3, at, tail);
            t->base_url[head + 3 + tail] = '\0';
        }
    } else {
        t->base_url = strndup(u, ul);
    }
    t->model = strdup(cfg->model ? cfg->model : "default");
    t->url = malloc(ul + sizeof "/chat/completions");
    if (!t->base_url || !t->model || !t->url) goto oom;
    memcpy(t->url, u, ul);
    memcpy(t->url + ul, "/chat/completions", sizeof "/chat/completions");
    if (cfg->api_key_env) {
        const char *key = getenv(cfg->api_key_env);
        if (!key || !*key) {
            lm_errf(err, "teacher %s: environment variable %s (the API key) is not set",
                    t->base_url, cfg->api_key_env);
            http_free(&t->base);
            return NULL;
        }
        for (const char *k = key; *k; k++)
            if ((unsigned char)*k < 0x21 || *k == 0x7f) {
                lm_errf(err, "teacher %s: the API key in %s holds a space or control character",
                        t->base_url, cfg->api_key_env);
                http_free(&t->base);
                return NULL;
            }
        size_t kl = strlen(key);
        t->auth = malloc(kl + sizeof "Authorization: Bearer ");
        if (!t->auth) goto oom;
        memcpy(t->auth, "Authorization: Bearer ", sizeof "Authorization: Bearer " - 1);
        memcpy(t->auth + sizeof "Authorization: Bearer " - 1, key, kl + 1);
    }
    t->connect_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 10000;
    t->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 120000;
    t->max_retries = cfg->max_retries >= 0 ? cfg->max_retries : 4;
    t->backoff_base_ms = cfg->backoff_base_ms > 0 ? cfg->backoff_base_ms : 500;
    t->backoff_max_ms = cfg->backoff_max_ms > 0 ? cfg->backoff_max_ms : 30000;
    t->max_in_flight = cfg->max_in_flight > 0 ? cfg->max_in_flight : 4;
    t->rng = cfg->seed;
    snprintf(t->base.name, sizeof t->base.name, "openai:%s@%s", t->model, t->base_url);
    return &t->base;
oom:
    http_free(&t->base);
    return lm_errf(err, "out of memory"), NULL;
}
