/* The resumable runner (see runner.h for the file formats and guarantees). */
#include "datagen/runner.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/progress.h"
#include "base/utf8.h"
#include "train/jsonl.h"

/* ---- a set of strings (ids) ------------------------------------------- */

typedef struct strset { const char **slot; size_t cap, n; } strset;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* Borrowed strings; returns 1 if added, 0 if present, -1 out of memory. */
static int strset_add(strset *s, const char *k) {
    if ((s->n + 1) * 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        const char **nw = calloc(cap, sizeof *nw);
        if (!nw) return -1;
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->slot[i]) continue;
            size_t j = fnv1a(s->slot[i]) & (cap - 1);
            while (nw[j]) j = (j + 1) & (cap - 1);
            nw[j] = s->slot[i];
        }
        free(s->slot);
        s->slot = nw;
        s->cap = cap;
    }
    size_t j = fnv1a(k) & (s->cap - 1);
    for (; s->slot[j]; j = (j + 1) & (s->cap - 1))
        if (!strcmp(s->slot[j], k)) return 0;
    s->slot[j] = k;
    s->n++;
    return 1;
}

static bool strset_has(const strset *s, const char *k) {
    if (!s->cap) return false;
    for (size_t j = fnv1a(k) & (s->cap - 1); s->slot[j]; j = (j + 1) & (s->cap - 1))
        if (!strcmp(s->slot[j], k)) return true;
    return false;
}

/* ---- request lists ---------------------------------------------------- */

static void request_free(lm_request *r) {
    free(r->id);
    for (size_t i = 0; i < r->n_msgs; i++) {
        free((char *)r->msgs[i].role);
        free((char *)r->msgs[i].content);
    }
    free(r->msgs);
    for (size_t i = 0; i < r->params.n_stop; i++) free((char *)r->params.stop[i]);
    free((void *)r->params.stop);
    free(r->metadata);
}

void lm_request_list_free(lm_request_list *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) request_free(&l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

int lm_request_list_add(lm_request_list *l, const char *id, const lm_chat_msg *msgs, size_t n,
                        const lm_teacher_params *params, const char *metadata_json, lm_err *err) {
    if (!id || !*id) return lm_errf(err, "request: empty id");
    if (n == 0) return lm_errf(err, "request '%s': no messages", id);
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->items[i].id, id)) return lm_errf(err, "request '%s': duplicate id", id);
    if (metadata_json) {
        json_error_t je;
        json_t *m = json_loads(metadata_json, 0, &je);
        bool obj = json_is_object(m);
        json_decref(m);
        if (!obj) return lm_errf(err, "request '%s': metadata is not a JSON object", id);
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        lm_request *nw = realloc(l->items, cap * sizeof *nw);
        if (!nw) return lm_errf(err, "out of memory");
        l->items = nw;
        l->cap = cap;
    }
    lm_request r;
    memset(&r, 0, sizeof r);
    r.params = params ? *params : lm_teacher_params_default();
    r.params.stop = NULL;
    r.params.n_stop = 0;
    bool oom = false;
    r.id = strdup(id);
    r.metadata = strdup(metadata_json ? metadata_json : "{}");
    r.msgs = calloc(n, sizeof *r.msgs);
    oom = !r.id || !r.metadata || !r.msgs;
    if (r.msgs) {
        r.n_msgs = n;
        for (size_t i = 0; i < n; i++) {
            r.msgs[i].role = strdup(msgs[i].role ? msgs[i].role : "");
            r.msgs[i].content = strdup(msgs[i].content ? msgs[i].content : "");
            oom |= !r.msgs[i].role || !r.msgs[i].content;
        }
    }
    if (!oom && params && params->n_stop) {
        char **st = calloc(params->n_stop, sizeof *st);
        oom = !st;
        if (st) {
            r.params.stop = (const char *const *)st;
            r.params.n_stop = params->n_stop;
            for (size_t i = 0; i < params->n_stop; i++) oom |= !(st[i] = strdup(params->stop[i]));
        }
    }
    if (oom) {
        request_free(&r);
        return lm_errf(err, "out of memory");
    }
    l->items[l->n++] = r;
    return 0;
}

/* One key of "params" into out; a stop list goes to *stop_tmp (borrowed strings). */
static int parse_param(const char *key, json_t *v, lm_teacher_params *out, const char **stop_tmp[],
                       lm_err *err) {
    if (!strcmp(key, "temperature") || !strcmp(key, "top_p")) {
        if (!json_is_number(v) || json_number_value(v) < 0)
            return lm_errf(err, "field 'params.%s': expected a number >= 0", key);
        if (key[0] == 't' && key[1] == 'e') out->temperature = (float)json_number_value(v);
        else out->top_p = (float)json_number_value(v);
    } else if (!strcmp(key, "max_tokens")) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1 << 24)
            return lm_errf(err, "field 'params.max_tokens': expected an integer >= 1");
        out->max_tokens = (int)json_integer_value(v);
    } else if (!strcmp(key, "seed")) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return lm_errf(err, "field 'params.seed': expected an integer >= 0");
        out->has_seed = true;
        out->seed = (uint64_t)json_integer_value(v);
    } else if (!strcmp(key, "stop")) {
        if (!json_is_array(v)) return lm_errf(err, "field 'params.stop': expected an array of strings");
        size_t n = json_array_size(v);
        if (n == 0) return 0;
        const char **st = calloc(n, sizeof *st);
        if (!st) return lm_errf(err, "out of memory");
        for (size_t i = 0; i < n; i++) {
            json_t *s = json_array_get(v, i);
            if (!json_is_string(s) || json_string_length(s) == 0) {
                free(st);
                return lm_errf(err, "field 'params.stop[%zu]': expected a non-empty string", i);
            }
            st[i] = json_string_value(s);
        }
        *stop_tmp = st;
        out->stop = st;
        out->n_stop = n;
    } else {
        return lm_errf(err, "field 'params.%s': unknown (known: temperature, top_p, "
                       "max_tokens, seed, stop)", key);
    }
    return 0;
}

static int parse_params(json_t *p, lm_teacher_params *out, const char **stop_tmp[], lm_err *err) {
    *out = lm_teacher_params_default();
    *stop_tmp = NULL;
    if (!p) return 0;
    if (!json_is_object(p)) return lm_errf(err, "field 'params': expected an object");
    const char *key;
    json_t *v;
    json_object_foreach(p, key, v) {
        if (parse_param(key, v, out, stop_tmp, err)) {
            /* a stop list read before the bad key was leaked here (found by
             * fuzz/fuzz_datagen_journal.c): the caller frees it only on success */
            free(*stop_tmp);
            *stop_tmp = NULL;
            out->stop = NULL;
            out->n_stop = 0;
            return -1;
        }
    }
    return 0;
}

static int load_line(lm_request_list *l, json_t *o, lm_err *err) {
    if (!json_is_object(o)) return lm_errf(err, "expected a JSON object");
    json_t *id = json_object_get(o, "id");
    if (!json_is_string(id) || json_string_length(id) == 0)
        return lm_errf(err, "field 'id': expected a non-empty string");
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
        if (strcmp(key, "id") && strcmp(key, "messages") && strcmp(key, "params") &&
            strcmp(key, "metadata"))
            return lm_errf(err, "field '%s': unknown (known: id, messages, params, metadata)", key);
    json_t *ms = json_object_get(o, "messages");
    if (!json_is_array(ms) || json_array_size(ms) == 0)
        return lm_errf(err, "field 'messages': expected a non-empty array");
    size_t n = json_array_size(ms);
    lm_chat_msg *msgs = calloc(n, sizeof *msgs);
    if (!msgs) return lm_errf(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(ms, i);
        json_t *r = json_object_get(m, "role"), *c = json_object_get(m, "content");
        if (!json_is_string(r) || !json_is_string(c)) {
            free(msgs);
            return lm_errf(err, "field 'messages[%zu].%s': expected a string", i,
                           json_is_string(r) ? "content" : "role");
        }
        if (strlen(json_string_value(c)) != json_string_length(c)) {
            free(msgs);
            return lm_errf(err, "field 'messages[%zu].content': holds a NUL character", i);
        }
        msgs[i].role = json_string_value(r);
        msgs[i].content = json_string_value(c);
    }
    lm_teacher_params p;
    const char **stop_tmp;
    if (parse_params(json_object_get(o, "params"), &p, &stop_tmp, err)) {
        free(msgs);
        return -1;
    }
    json_t *md = json_object_get(o, "metadata");
    char *mdj = NULL;
    if (md) {
        if (!json_is_object(md)) {
            free(msgs);
            free(stop_tmp);
            return lm_errf(err, "field 'metadata': expected an object");
        }
        mdj = json_dumps(md, JSON_COMPACT | JSON_PRESERVE_ORDER);
    }
    int rc = lm_request_list_add(l, json_string_value(id), msgs, n, &p, mdj, err);
    free(mdj);
    free(msgs);
    free(stop_tmp);
    return rc;
}

int lm_requests_parse_jsonl(lm_request_list *l, const char *name, const char *data, size_t len,
                            lm_err *err) {
    lm_jsonl *in = lm_jsonl_open_mem(name, data, len, err);
    if (!in) return -1;
    json_t *o;
    int got, rc = 0;
    while (rc == 0 && (got = lm_jsonl_next(in, &o, err)) != LM_JSONL_END)
        if (got != LM_JSONL_OK) rc = -1;
        else if ((rc = load_line(l, o, err))) lm_err_prefix(err, "%s:%d", name, lm_jsonl_line(in));
    lm_jsonl_close(in);
    return rc;
}

int lm_requests_load_jsonl(lm_request_list *l, const char *path, lm_err *err) {
    char *data;
    size_t len;
    if (lm_read_file(path, &data, &len, false, err)) return -1;
    int rc = lm_requests_parse_jsonl(l, path, data, len, err);
    free(data);
    return rc;
}

/* ---- resume scan ------------------------------------------------------ */

static void free_ids(char **ids, size_t n) {
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
}

int lm_runner_scan_mem(const char *name, const char *data, size_t len, char ***ids_out,
                       size_t *n_out, size_t *torn_bytes, lm_err *err) {
    *ids_out = NULL;
    *n_out = 0;
    *torn_bytes = 0;
    lm_jsonl *in = lm_jsonl_open_mem(name, data, len, err);
    if (!in) return -1;
    char **ids = NULL;
    size_t n = 0, cap = 0;
    int rc = 0, got;
    json_t *o;
    while ((got = lm_jsonl_next(in, &o, err)) != LM_JSONL_END) {
        /* Our writer ends every record with '\n' in the same write(): no
         * newline means the write was cut short, even when what came
         * before the cut parses. */
        if (lm_jsonl_torn(in)) break;
        json_t *id = json_object_get(o, "id");
        if (got != LM_JSONL_OK || !json_is_string(id)) {
            /* the reader's "NAME:LINE: invalid JSON ..." told as ours */
            char where[600], why[LM_ERR_MAX];
            snprintf(where, sizeof where, "%s:%d: ", name, lm_jsonl_line(in));
            size_t wl = strlen(where);
            snprintf(why, sizeof why, "%s", got == LM_JSONL_OK ? "no string \"id\""
                     : err->msg + (strncmp(err->msg, where, wl) ? 0 : wl));
            rc = lm_errf(err, "%snot a result line (%s); remove the line or use another output file",
                         where, why);
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nw = realloc(ids, cap * sizeof *nw);
            if (!nw) { rc = lm_errf(err, "out of memory"); break; }
            ids = nw;
        }
        if (!(ids[n] = strdup(json_string_value(id)))) { rc = lm_errf(err, "out of memory"); break; }
        n++;
    }
    lm_jsonl_close(in);
    if (rc) {
        free_ids(ids, n);
        return -1;
    }
    /* what follows the last line end (blank lines before it are whole) */
    if (len && data[len - 1] != '\n') {
        const char *nl = memrchr(data, '\n', len);
        *torn_bytes = nl ? len - (size_t)(nl - data) - 1 : len;
    }
    *ids_out = ids;
    *n_out = n;
    return 0;
}

int lm_runner_scan(const char *path, bool fix_tail, char ***ids_out, size_t *n_out,
                   size_t *torn_bytes, lm_err *err) {
    *ids_out = NULL;
    *n_out = 0;
    *torn_bytes = 0;
    char *data;
    size_t len;
    if (lm_read_file(path, &data, &len, true, err)) return -1;
    int rc = lm_runner_scan_mem(path, data, len, ids_out, n_out, torn_bytes, err);
    free(data);
    if (rc == 0 && *torn_bytes && fix_tail && truncate(path, (off_t)(len - *torn_bytes))) {
        free_ids(*ids_out, *n_out);
        *ids_out = NULL;
        *n_out = 0;
        return lm_errno(err, "%s: cannot cut the unfinished last line", path);
    }
    return rc;
}

/* ---- the run ---------------------------------------------------------- */

typedef struct run_state {
    lm_teacher *t;
    const lm_request_list *l;
    const char *out_path, *fail_path;
    int out_fd, fail_fd;
    lm_runner_summary *sum;
    lm_progress prog;
    size_t todo;
} run_state;

/* A reply cut inside a character still makes a valid JSON string: bytes
 * that are not UTF-8 become U+FFFD. */
static json_t *text_json(const char *s) {
    json_t *j = json_string(s);
    if (j) return j;
    char *f = lm_utf8_clean(s, strlen(s), LM_UTF8_NO_NUL, NULL);
    j = f ? json_string(f) : NULL;
    free(f);
    return j;
}

static int write_line(int fd, const char *path, json_t *o, lm_err *err) {
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!s) return lm_errf(err, "%s: cannot encode a result line (out of memory?)", path);
    size_t n = strlen(s);
    s[n] = '\n';   /* json_dumps's NUL becomes the record end: one write() per record */
    size_t off = 0;
    int rc = 0;
    while (off < n + 1) {
        ssize_t k = write(fd, s + off, n + 1 - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) { rc = lm_errno(err, "%s: write", path); break; }
        off += (size_t)k;
    }
    free(s);
    /* Durable before the next one: a kill or power cut loses at most what
     * was still in flight. */
    if (rc == 0 && fdatasync(fd) && errno != EINVAL) rc = lm_errno(err, "%s: fdatasync", path);
    return rc;
}

static int on_done(void *ud, const lm_teacher_job *job, const lm_teacher_outcome *o, lm_err *err) {
    run_state *st = ud;
    const lm_request *r = job->user;
    json_t *line = json_object(), *msgs = json_array();
    json_t *md = json_loads(r->metadata, 0, NULL);
    int bad = !line || !msgs || !md;
    bad |= json_object_set_new(line, "id", json_string(r->id));
    if (o->reply) {
        for (size_t i = 0; i < r->n_msgs; i++) {
            json_t *m = json_object();
            bad |= !m || json_object_set_new(m, "role", text_json(r->msgs[i].role)) ||
                   json_object_set_new(m, "content", text_json(r->msgs[i].content)) ||
                   json_array_append_new(msgs, m);
        }
        bad |= json_object_set_new(line, "messages", msgs);
        msgs = NULL;
        bad |= json_object_set_new(line, "reply", text_json(o->reply));
    } else {
        bad |= json_object_set_new(line, "error", text_json(o->error ? o->error : "unknown error"));
        json_t *h = json_array();
        bad |= !h || json_object_set_new(line, "history", h);
        for (const char *p = o->history; h && p && *p;) {
            const char *e = strchr(p, '\n');
            size_t k = e ? (size_t)(e - p) : strlen(p);
            char *one = strndup(p, k);
            bad |= !one || json_array_append_new(h, text_json(one));
            free(one);
            p += k + (e ? 1 : 0);
        }
    }
    bad |= json_object_set_new(line, "teacher", json_string(lm_teacher_name(st->t)));
    bad |= json_object_set_new(line, "metadata", md);
    md = NULL;
    bad |= json_object_set_new(line, "attempts", json_integer(o->attempts));
    json_decref(msgs);
    int rc = 0;
    if (bad) rc = lm_errf(err, "request '%s': cannot build the result line (out of memory?)", r->id);
    else if (o->reply) rc = write_line(st->out_fd, st->out_path, line, err);
    else rc = write_line(st->fail_fd, st->fail_path, line, err);
    json_decref(line);
    if (rc) return -1;
    if (o->reply) st->sum->ok++;
    else st->sum->failed++;
    if (o->attempts > 1) st->sum->retried++;
    char extra[64];
    snprintf(extra, sizeof extra, "ok %zu  failed %zu", st->sum->ok, st->sum->failed);
    lm_progress_update(&st->prog, (int64_t)(st->sum->ok + st->sum->failed), extra);
    return 0;
}

lm_runner_opts lm_runner_opts_default(void) {
    lm_runner_opts o;
    memset(&o, 0, sizeof o);
    o.retry_failures = true;
    o.progress = true;
    return o;
}

int lm_runner_run(lm_teacher *t, const lm_request_list *l, const lm_runner_opts *opts,
                  lm_runner_summary *sum, lm_err *err) {
    memset(sum, 0, sizeof *sum);
    sum->total = l->n;
    if (!opts->out_path) return lm_errf(err, "runner: no output path");
    char *fail_path = NULL;
    if (opts->failures_path) {
        fail_path = strdup(opts->failures_path);
    } else {
        size_t n = strlen(opts->out_path);
        size_t stem = n >= 6 && !strcmp(opts->out_path + n - 6, ".jsonl") ? n - 6 : n;
        fail_path = malloc(stem + sizeof ".failures.jsonl");
        if (fail_path) {
            memcpy(fail_path, opts->out_path, stem);
            memcpy(fail_path + stem, ".failures.jsonl", sizeof ".failures.jsonl");
        }
    }
    if (!fail_path) return lm_errf(err, "out of memory");
    if (!strcmp(fail_path, opts->out_path)) {
        free(fail_path);
        return lm_errf(err, "runner: the failures file must differ from the output file");
    }

    char **done_ids = NULL, **fail_ids = NULL;
    size_t n_done = 0, n_fail = 0, torn_fail = 0;
    strset done = {0};
    lm_teacher_job *jobs = NULL;
    run_state st = {.t = t, .l = l, .out_path = opts->out_path, .fail_path = fail_path,
                    .out_fd = -1, .fail_fd = -1, .sum = sum};
    int rc = -1;
    /* Two runs appending to one file would duplicate work and could
     * interleave; the second one is refused. The lock dies with the process. */
    st.out_fd = open(opts->out_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (st.out_fd < 0) { lm_errno(err, "%s", opts->out_path); goto out; }
    if (flock(st.out_fd, LOCK_EX | LOCK_NB)) {
        if (errno == EWOULDBLOCK) lm_errf(err, "%s: another run is writing to this file", opts->out_path);
        else lm_errno(err, "%s: lock", opts->out_path);
        goto out;
    }
    if (lm_runner_scan(opts->out_path, true, &done_ids, &n_done, &sum->torn_bytes, err)) goto out;
    if (!opts->retry_failures &&
        lm_runner_scan(fail_path, true, &fail_ids, &n_fail, &torn_fail, err))
        goto out;
    for (size_t i = 0; i < n_done; i++)
        if (strset_add(&done, done_ids[i]) < 0) { lm_errf(err, "out of memory"); goto out; }
    for (size_t i = 0; i < n_fail; i++)
        if (strset_add(&done, fail_ids[i]) < 0) { lm_errf(err, "out of memory"); goto out; }

    jobs = calloc(l->n ? l->n : 1, sizeof *jobs);
    if (!jobs) { lm_errf(err, "out of memory"); goto out; }
    for (size_t i = 0; i < l->n; i++) {
        const lm_request *r = &l->items[i];
        if (strset_has(&done, r->id)) { sum->skipped++; continue; }
        jobs[st.todo++] = (lm_teacher_job){r->id, r->msgs, r->n_msgs, &r->params, (void *)r};
    }

    int fflags = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | (opts->retry_failures ? O_TRUNC : 0);
    st.fail_fd = open(fail_path, fflags, 0644);
    if (st.fail_fd < 0) { lm_errno(err, "%s", fail_path); goto out; }

    if (opts->progress) lm_progress_begin(&st.prog, "teacher", (int64_t)st.todo, "requests");
    else lm_progress_begin_file(&st.prog, NULL, "teacher", (int64_t)st.todo, "requests");
    int b = lm_teacher_run_batch(t, jobs, st.todo, on_done, &st, opts->cancel, err);
    lm_progress_end(&st.prog);
    if (b < 0) goto out;
    sum->cancelled = b == 1;
    rc = 0;
out:
    if (st.out_fd >= 0 && close(st.out_fd) && rc == 0) rc = lm_errno(err, "%s: close", opts->out_path);
    if (st.fail_fd >= 0 && close(st.fail_fd) && rc == 0) rc = lm_errno(err, "%s: close", fail_path);
    free(jobs);
    free(done.slot);
    free_ids(done_ids, n_done);
    free_ids(fail_ids, n_fail);
    free(fail_path);
    return rc;
}
