/* `lemonpc serve` (server.h): libmicrohttpd with a thread per connection.
 * A request's body is gathered (at most max_body bytes), parsed by
 * oai_request.c, answered by the runtime, and written by oai_response.c.
 * A plain reply is generated in the connection's thread; a stream in a
 * worker thread whose server-sent events the connection's thread hands to
 * libmicrohttpd as they come. A client that goes away cancels its reply. */
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "base/clock.h"
#include "base/strbuf.h"
#include "server/oai_response.h"

lm_server_config lm_server_default_config(void) {
    return (lm_server_config){.host = "127.0.0.1", .port = 8080, .max_body = 1 << 20,
                              .limits = {.max_messages = 256, .max_tokens = 1024,
                                         .max_stop_bytes = 256},
                              .idle_timeout_s = 15, .request_timeout_s = 300,
                              .max_connections = 256, .max_conversations = 64,
                              .saves_dir = "."};
}

/* Bytes of an oversized body read and dropped before answering 413 (so
 * the client, still sending, can read the answer); beyond, the connection
 * is closed on it. */
#define DRAIN_CAP ((size_t)64 << 20)

/* One conversation the server keeps: an NPC with a user. */
typedef struct conv_slot {
    bool used;
    size_t npc;
    char *user;               /* "" for requests without a user */
    lemonpc_conversation *conv;
    bool busy;                /* a request is using it */
    uint64_t last;            /* for least-recently-used eviction */
} conv_slot;

/* A conversation generating, for the cancel at shutdown. */
typedef struct active {
    lemonpc_conversation *conv;
    struct active *prev, *next;
} active;

struct lm_server {
    lm_server_config cfg;
    char *host, *api_key, *saves_dir, *world_file;
    lm_server_npc *npcs;
    char **names;             /* each NPC's name in the world */
    size_t n_npcs;
    lemonpc_world *world;
    struct MHD_Daemon *d;
    int port;
    long long started;
    pthread_mutex_t mu;       /* slots, active, tick */
    conv_slot *slots;
    uint64_t tick;
    active *act;
    atomic_bool stopping;
    atomic_uint_fast64_t seq; /* completion ids and seeds */
};

typedef struct job job;

/* One HTTP request (libmicrohttpd's con_cls). */
typedef struct req {
    lm_server *s;
    double t0;
    char method[16], path[160];
    lm_sb body;
    size_t got;               /* body bytes received (kept or dropped) */
    bool too_large, answered;
    int status;
    bool timeout_changed;
    char model[64], user[64], note[1100];
    oai_usage usage;
    bool has_usage, stream;
    job *job;
} req;

static void put_logf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void put_logf(const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "lemonpc serve: %s\n", line);   /* one write per line: lines do not mix */
}

static void mhd_logger(void *cls, const char *fmt, va_list ap) {
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n') line[--n] = '\0';
    put_logf("libmicrohttpd: %s", line);
}

/* ---- responses ------------------------------------------------------------- */

static enum MHD_Result send_body(struct MHD_Connection *c, req *r, int status, char *body,
                                 const char *ctype) {
    static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                              "\"param\":null,\"code\":null}}";
    struct MHD_Response *resp =
        body ? MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
    if (!resp) { free(body); return MHD_NO; }
    if (!body) status = 500;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (r->too_large) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    r->answered = true;
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, req *r, int status, json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return send_body(c, r, status, s, "application/json");
}

static enum MHD_Result send_error(struct MHD_Connection *c, req *r, const oai_error *e) {
    snprintf(r->note, sizeof r->note, "%s", e->message);
    return send_body(c, r, e->status, oai_error_json(e), "application/json");
}

static enum MHD_Result send_errorf(struct MHD_Connection *c, req *r, int status, const char *type,
                                   const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static enum MHD_Result send_errorf(struct MHD_Connection *c, req *r, int status, const char *type,
                                   const char *param, const char *code, const char *fmt, ...) {
    oai_error e = {.status = status, .type = type, .code = code};
    snprintf(e.param, sizeof e.param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    return send_error(c, r, &e);
}

/* The HTTP status and OpenAI error of a runtime failure. */
static void runtime_error(const lm_server *s, lemonpc_status st, const lemonpc_error *err,
                          oai_error *e) {
    switch (st) {
    case LEMONPC_ERR_CONTEXT_FULL:
        oai_fail(e, 400, "invalid_request_error", "messages", "context_length_exceeded", "%s",
                 err->message);
        break;
    case LEMONPC_ERR_INVALID:
        oai_fail(e, 400, "invalid_request_error", NULL, NULL, "%s", err->message);
        break;
    case LEMONPC_ERR_BUSY:
        oai_fail(e, 409, "invalid_request_error", "user", "conversation_busy", "%s", err->message);
        break;
    case LEMONPC_ERR_CANCELLED:
        if (atomic_load(&s->stopping))
            oai_fail(e, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
        else
            oai_fail(e, 499, "invalid_request_error", NULL, "cancelled", "%s", err->message);
        break;
    default:
        oai_fail(e, st == LEMONPC_ERR_NOMEM ? 503 : 500, "server_error", NULL, NULL, "%s",
                 err->message);
    }
}

/* ---- conversations --------------------------------------------------------- */

static long find_npc(const lm_server *s, const char *id) {
    for (size_t i = 0; i < s->n_npcs; i++)
        if (!strcmp(s->npcs[i].id, id)) return (long)i;
    return -1;
}

static void slot_close(conv_slot *sl) {
    lemonpc_conversation_close(sl->conv);
    free(sl->user);
    memset(sl, 0, sizeof *sl);
}

/* The conversation of (npc, user), marked busy; a new one when none is
 * kept (the least recently used idle one makes room). Returns the slot
 * index, or -1 with e: 409 when it is busy, 503 when all are. */
static long slot_take(lm_server *s, size_t npc, const char *user, oai_error *e) {
    pthread_mutex_lock(&s->mu);
    long free_i = -1, lru = -1;
    for (long i = 0; i < s->cfg.max_conversations; i++) {
        conv_slot *sl = &s->slots[i];
        if (!sl->used) { if (free_i < 0) free_i = i; continue; }
        if (sl->npc == npc && !strcmp(sl->user, user)) {
            if (sl->busy) {
                pthread_mutex_unlock(&s->mu);
                return oai_fail(e, 409, "invalid_request_error", "user", "conversation_busy",
                                "the conversation of %s with %s is answering another request; "
                                "send one request at a time per user (or give each its own user)",
                                s->npcs[npc].id, user[0] ? user : "(no user)");
            }
            sl->busy = true;
            pthread_mutex_unlock(&s->mu);
            return i;
        }
        if (!sl->busy && (lru < 0 || sl->last < s->slots[lru].last)) lru = i;
    }
    if (free_i < 0 && lru >= 0) {
        slot_close(&s->slots[lru]);
        free_i = lru;
    }
    if (free_i < 0) {
        pthread_mutex_unlock(&s->mu);
        return oai_fail(e, 503, "server_error", NULL, "server_busy", "all %d conversations are "
                        "answering requests; try again", s->cfg.max_conversations);
    }
    lemonpc_error err;
    conv_slot *sl = &s->slots[free_i];
    sl->conv = lemonpc_conversation_open(s->npcs[npc].npc, user[0] ? user : NULL, NULL, &err);
    sl->user = strdup(user);
    if (!sl->conv || !sl->user) {
        slot_close(sl);
        pthread_mutex_unlock(&s->mu);
        return oai_fail(e, 500, "server_error", NULL, NULL, "cannot open a conversation: %s",
                        err.message);
    }
    sl->used = sl->busy = true;
    sl->npc = npc;
    pthread_mutex_unlock(&s->mu);
    return free_i;
}

static void slot_give(lm_server *s, long i) {
    if (i < 0) return;
    pthread_mutex_lock(&s->mu);
    s->slots[i].busy = false;
    s->slots[i].last = ++s->tick;
    pthread_mutex_unlock(&s->mu);
}

static void active_add(lm_server *s, active *a) {
    pthread_mutex_lock(&s->mu);
    a->prev = NULL;
    a->next = s->act;
    if (s->act) s->act->prev = a;
    s->act = a;
    pthread_mutex_unlock(&s->mu);
    if (atomic_load(&s->stopping)) lemonpc_conversation_cancel(a->conv);
}

static void active_remove(lm_server *s, active *a) {
    pthread_mutex_lock(&s->mu);
    if (a->prev) a->prev->next = a->next;
    else s->act = a->next;
    if (a->next) a->next->prev = a->prev;
    pthread_mutex_unlock(&s->mu);
}

/* Has the client closed its end? (checked between tokens) */
static bool client_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* ---- a generation: what chat and completions share ------------------------- */

typedef struct gen {
    lm_server *s;
    bool chat, stream, include_usage;
    char id[48];
    long long created;
    char model[64];
    long slot;                       /* -1: a conversation of its own (completions) */
    lemonpc_conversation *conv;
    char *line;                      /* the user's line or the prompt (owned) */
    int fd;
    active act;
    lemonpc_status st;
    lemonpc_reply_info info;
    lemonpc_error err;
    char *text;                      /* the whole reply (plain requests) */
} gen;

static void gen_release(gen *g) {
    if (g->act.conv) active_remove(g->s, &g->act);
    g->act.conv = NULL;
    if (g->slot >= 0) slot_give(g->s, g->slot);
    else lemonpc_conversation_close(g->conv);
    g->conv = NULL;
    g->slot = -1;
    free(g->line);
    g->line = NULL;
    free(g->text);
    g->text = NULL;
}

/* A plain reply's stream callback: only watches the client. */
static int plain_piece(void *u, const char *text, size_t len) {
    (void)text, (void)len;
    return client_gone(((const gen *)u)->fd);
}

static lemonpc_status gen_run(gen *g, lemonpc_stream_fn fn, void *user) {
    char **out = g->stream ? NULL : &g->text;
    g->st = g->chat ? lemonpc_say(g->conv, g->line, fn, user, out, &g->info, &g->err)
                    : lemonpc_conversation_complete(g->conv, g->line, fn, user, out, &g->info,
                                                    &g->err);
    return g->st;
}

static oai_usage gen_usage(const gen *g) {
    return (oai_usage){.prompt_tokens = g->info.n_prompt + g->info.n_reused,
                       .completion_tokens = g->info.n_generated,
                       .cached_tokens = g->info.n_reused};
}

/* Sets up g for request q on NPC npc: its conversation (the kept one when
 * q's messages continue it, else rebuilt from them), its sampling. */
static int gen_prepare(lm_server *s, gen *g, const oai_request *q, size_t npc, oai_error *e) {
    memset(g, 0, sizeof *g);
    g->s = s;
    g->chat = q->chat;
    g->stream = q->stream;
    g->include_usage = q->include_usage;
    g->slot = -1;
    g->fd = -1;
    g->created = (long long)time(NULL);
    uint64_t k = atomic_fetch_add(&s->seq, 1);
    snprintf(g->id, sizeof g->id, "%s-%llx%04" PRIx64, q->chat ? "chatcmpl" : "cmpl",
             (long long)g->created, k & 0xffff);
    snprintf(g->model, sizeof g->model, "%s", s->npcs[npc].id);
    lemonpc_error err;
    if (q->chat) {
        g->slot = slot_take(s, npc, q->user ? q->user : "", e);
        if (g->slot < 0) return -1;
        g->conv = s->slots[g->slot].conv;
        /* the turns before the user's last line, system messages left out
         * (the NPC's persona is its system turn) */
        lemonpc_turn *t = calloc(q->n_messages, sizeof *t);
        if (!t) { oai_fail(e, 500, "server_error", NULL, NULL, "out of memory"); goto fail; }
        size_t n = 0;
        for (size_t i = 0; i + 1 < q->n_messages; i++)
            if (strcmp(q->messages[i].role, "system"))
                t[n++] = (lemonpc_turn){q->messages[i].role, q->messages[i].content};
        bool same = (size_t)lemonpc_conversation_n_turns(g->conv) == n;
        for (size_t i = 0; same && i < n; i++) {
            const char *role;
            const char *text = lemonpc_conversation_turn(g->conv, (int)i, &role);
            same = text && !strcmp(role, t[i].role) && !strcmp(text, t[i].text);
        }
        lemonpc_status st = same ? LEMONPC_OK : lemonpc_conversation_set_turns(g->conv, t, n, &err);
        free(t);
        if (st) { runtime_error(s, st, &err, e); goto fail; }
        g->line = strdup(q->messages[q->n_messages - 1].content);
    } else {
        if (!(g->conv = lemonpc_conversation_open(s->npcs[npc].npc, NULL, NULL, &err))) {
            runtime_error(s, err.code, &err, e);
            goto fail;
        }
        g->line = strdup(q->prompt);
    }
    if (!g->line) { oai_fail(e, 500, "server_error", NULL, NULL, "out of memory"); goto fail; }
    lemonpc_sampling sp = s->npcs[npc].sampling;
    if (q->max_tokens > 0) sp.max_tokens = q->max_tokens;
    if (q->has_temperature) sp.temperature = (float)q->temperature;
    if (q->has_top_p) sp.top_p = (float)q->top_p;
    /* without a seed, each request draws anew */
    uint64_t x = k + 0x9E3779B97F4A7C15ull * (uint64_t)(g->created + 1);
    x = (x ^ (x >> 31)) * 0xBF58476D1CE4E5B9ull;
    sp.seed = q->has_seed ? q->seed : x ^ (x >> 29);
    lemonpc_status st = lemonpc_conversation_set_sampling(g->conv, &sp,
                                                          (const char *const *)q->stop, q->n_stop,
                                                          &err);
    if (st) { runtime_error(s, st, &err, e); goto fail; }
    g->act.conv = g->conv;
    active_add(s, &g->act);
    return 0;
fail:
    gen_release(g);
    return -1;
}

/* ---- streams ---------------------------------------------------------------- */

struct job {
    gen g;
    pthread_t th;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lm_sb out;                /* events not yet handed to libmicrohttpd */
    size_t off;
    bool done, first;
    atomic_int refs;          /* the request's and the response's */
};

static void job_push(job *j, char *event) {
    pthread_mutex_lock(&j->mu);
    if (event) lm_sb_str(&j->out, event);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    free(event);
}

static int job_piece(void *u, const char *text, size_t len) {
    job *j = u;
    if (client_gone(j->g.fd)) return 1;
    job_push(j, oai_chunk_sse(j->g.chat, j->g.id, j->g.created, j->g.model, false, text, len, NULL,
                              j->g.include_usage));
    return 0;
}

static void *job_main(void *arg) {
    job *j = arg;
    gen *g = &j->g;
    lemonpc_status st = gen_run(g, job_piece, j);
    /* the conversation is free for the client's next request before it
     * reads the end of this one */
    pthread_mutex_lock(&j->mu);
    gen_release(g);
    pthread_mutex_unlock(&j->mu);
    lm_sb tail = {0};
    char *ev;
    if (st == LEMONPC_OK) {
        ev = oai_chunk_sse(g->chat, g->id, g->created, g->model, false, NULL, 0,
                           oai_finish_reason(g->info.stop), g->include_usage);
        if (ev) lm_sb_str(&tail, ev);
        free(ev);
        if (g->include_usage) {
            oai_usage u = gen_usage(g);
            ev = oai_usage_chunk_sse(g->chat, g->id, g->created, g->model, &u);
            if (ev) lm_sb_str(&tail, ev);
            free(ev);
        }
    } else {
        oai_error e;
        runtime_error(g->s, st, &g->err, &e);
        char *body = oai_error_json(&e);
        if (body) lm_sb_printf(&tail, "data: %s\n\n", body);
        free(body);
    }
    lm_sb_str(&tail, OAI_SSE_DONE);
    pthread_mutex_lock(&j->mu);
    if (tail.p) lm_sb_str(&j->out, tail.p);
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    lm_sb_free(&tail);
    return NULL;
}

static void job_unref(job *j) {
    if (atomic_fetch_sub(&j->refs, 1) != 1) return;
    lm_sb_free(&j->out);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

static ssize_t job_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    job *j = cls;
    pthread_mutex_lock(&j->mu);
    while (j->off == j->out.len && !j->done) pthread_cond_wait(&j->cv, &j->mu);
    ssize_t n;
    if (j->off < j->out.len) {
        size_t k = j->out.len - j->off < max ? j->out.len - j->off : max;
        memcpy(buf, j->out.p + j->off, k);
        j->off += k;
        if (j->off == j->out.len) j->off = j->out.len = 0;
        n = (ssize_t)k;
    } else {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    }
    pthread_mutex_unlock(&j->mu);
    return n;
}

static void job_response_free(void *cls) { job_unref(cls); }

/* The request is over (answered, or the client left): the reply is
 * cancelled if still running, and the conversation given back. */
static void job_end(req *r) {
    job *j = r->job;
    if (j->started) {
        /* a conversation given back may already serve another request:
         * only one still held is cancelled */
        pthread_mutex_lock(&j->mu);
        if (j->g.conv) {
            lemonpc_conversation_cancel(j->g.conv);
            snprintf(r->note, sizeof r->note, "client gone: reply cancelled");
        }
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->th, NULL);
        if (j->g.st == LEMONPC_OK) {
            r->usage = gen_usage(&j->g);
            r->has_usage = true;
        } else if (!r->note[0]) {
            snprintf(r->note, sizeof r->note, "%s", j->g.err.message);
        }
    }
    gen_release(&j->g);
    r->job = NULL;
    job_unref(j);
}

/* ---- endpoints -------------------------------------------------------------- */

static enum MHD_Result do_generate(struct MHD_Connection *c, req *r, bool chat) {
    lm_server *s = r->s;
    oai_request q;
    oai_error e;
    if ((chat ? oai_parse_chat : oai_parse_completion)(r->body.p ? r->body.p : "", r->body.len,
                                                       &s->cfg.limits, &q, &e))
        return send_error(c, r, &e);
    snprintf(r->model, sizeof r->model, "%s", q.model);
    snprintf(r->user, sizeof r->user, "%s", q.user ? q.user : "");
    r->stream = q.stream;
    long npc = find_npc(s, q.model);
    if (npc < 0) {
        oai_fail(&e, 404, "invalid_request_error", "model", "model_not_found",
                 "The model `%s` does not exist: GET /v1/models lists the NPCs", q.model);
        oai_request_free(&q);
        return send_error(c, r, &e);
    }
    /* a reply may take longer than an idle connection may stay open */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned)s->cfg.request_timeout_s);
    r->timeout_changed = true;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!q.stream) {
        gen g;
        if (gen_prepare(s, &g, &q, (size_t)npc, &e)) {
            oai_request_free(&q);
            return send_error(c, r, &e);
        }
        oai_request_free(&q);
        g.fd = ci ? ci->connect_fd : -1;
        if (gen_run(&g, plain_piece, &g) == LEMONPC_OK) {
            oai_usage u = gen_usage(&g);
            r->usage = u;
            r->has_usage = true;
            char *body = oai_completion_json(chat, g.id, g.created, g.model, g.text,
                                             strlen(g.text), oai_finish_reason(g.info.stop), &u);
            gen_release(&g);
            return send_body(c, r, 200, body, "application/json");
        }
        runtime_error(s, g.st, &g.err, &e);
        gen_release(&g);
        return send_error(c, r, &e);
    }
    job *j = calloc(1, sizeof *j);
    if (!j) {
        oai_request_free(&q);
        return send_errorf(c, r, 503, "server_error", NULL, NULL, "out of memory");
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    atomic_init(&j->refs, 1);
    r->job = j;
    if (gen_prepare(s, &j->g, &q, (size_t)npc, &e)) {
        oai_request_free(&q);
        j->g.slot = -1;
        return send_error(c, r, &e);
    }
    oai_request_free(&q);
    j->g.fd = ci ? ci->connect_fd : -1;
    /* the role first, at once: the client sees the stream start */
    if (chat)
        job_push(j, oai_chunk_sse(true, j->g.id, j->g.created, j->g.model, true, "", 0, NULL,
                                  j->g.include_usage));
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, job_read,
                                                                  j, job_response_free);
    if (!resp) return send_errorf(c, r, 503, "server_error", NULL, NULL, "out of memory");
    atomic_fetch_add(&j->refs, 1);   /* the response's, dropped by job_response_free */
    if (pthread_create(&j->th, NULL, job_main, j)) {
        MHD_destroy_response(resp);
        return send_errorf(c, r, 503, "server_error", NULL, NULL, "cannot start a thread");
    }
    j->started = true;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    r->status = 200;
    r->answered = true;
    return ret;
}

static enum MHD_Result do_models(struct MHD_Connection *c, req *r, const char *one) {
    lm_server *s = r->s;
    const char **ids = malloc((s->n_npcs + 1) * sizeof *ids);
    if (!ids) return send_body(c, r, 500, NULL, "application/json");
    for (size_t i = 0; i < s->n_npcs; i++) ids[i] = s->npcs[i].id;
    if (!one) {
        char *body = oai_models_json(ids, s->n_npcs, s->started);
        free(ids);
        return send_body(c, r, 200, body, "application/json");
    }
    free(ids);
    long i = find_npc(s, one);
    if (i < 0)
        return send_errorf(c, r, 404, "invalid_request_error", "model", "model_not_found",
                           "The model `%s` does not exist", one);
    return send_json(c, r, 200, json_pack("{s:s, s:s, s:I, s:s, s:s}", "id", one, "object",
                                          "model", "created", (json_int_t)s->started, "owned_by",
                                          "lemonpc", "name", s->names[i]));
}

/* The body as a JSON object, or an error sent. */
static json_t *body_object(struct MHD_Connection *c, req *r) {
    json_error_t je;
    json_t *j = json_loadb(r->body.p ? r->body.p : "", r->body.len, 0, &je);
    if (!j) {
        send_errorf(c, r, 400, "invalid_request_error", NULL, NULL,
                    "We could not parse the JSON body of your request: %s (line %d, column %d)",
                    je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        send_errorf(c, r, 400, "invalid_request_error", NULL, NULL,
                    "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

static enum MHD_Result do_event(struct MHD_Connection *c, req *r, size_t npc) {
    lm_server *s = r->s;
    json_t *j = body_object(c, r);
    if (!j) return MHD_YES;
    json_t *text = json_object_get(j, "text"), *place = json_object_get(j, "place");
    json_t *imp = json_object_get(j, "importance"), *wit = json_object_get(j, "witnesses");
    const char *bad = !json_is_string(text) || !json_string_length(text) ? "text"
                    : place && !json_is_null(place) && !json_is_string(place) ? "place"
                    : imp && !json_is_null(imp) && (!json_is_integer(imp) ||
                        json_integer_value(imp) < 1 || json_integer_value(imp) > 10) ? "importance"
                    : wit && !json_is_null(wit) && (!json_is_array(wit) ||
                        json_array_size(wit) > 64) ? "witnesses" : NULL;
    for (size_t i = 0; !bad && json_is_array(wit) && i < json_array_size(wit); i++)
        if (!json_is_string(json_array_get(wit, i))) bad = "witnesses";
    if (bad) {
        json_decref(j);
        return send_errorf(c, r, 400, "invalid_request_error", bad, NULL, "%s",
                           !strcmp(bad, "text") ? "text must be a non-empty string"
                           : !strcmp(bad, "place") ? "place must be a string"
                           : !strcmp(bad, "importance") ? "importance must be an integer in [1, 10]"
                           : "witnesses must be an array of at most 64 NPC ids or names");
    }
    /* the NPC of the URL saw it, and so did the witnesses (ids or names) */
    const char *w[65];
    size_t nw = 0;
    w[nw++] = s->names[npc];
    for (size_t i = 0; json_is_array(wit) && i < json_array_size(wit); i++) {
        const char *x = json_string_value(json_array_get(wit, i));
        long k = find_npc(s, x);
        const char *name = k >= 0 ? s->names[k] : x;
        bool dup = false;
        for (size_t m = 0; m < nw; m++) dup |= !strcmp(w[m], name);
        if (!dup) w[nw++] = name;
    }
    lemonpc_event ev = {json_string_value(text), json_is_string(place) ? json_string_value(place)
                                                                        : NULL,
                        json_is_integer(imp) ? (int)json_integer_value(imp) : 5, w, nw};
    int64_t id;
    lemonpc_error err;
    lemonpc_status st = lemonpc_world_event(s->world, &ev, &id, &err);
    json_t *ws = json_array();
    for (size_t i = 0; i < nw; i++) json_array_append_new(ws, json_string(w[i]));
    json_decref(j);
    if (st) {
        json_decref(ws);
        return send_errorf(c, r, st == LEMONPC_ERR_INVALID ? 400 : 500, st == LEMONPC_ERR_INVALID ?
                           "invalid_request_error" : "server_error", NULL, NULL, "%s", err.message);
    }
    return send_json(c, r, 200, json_pack("{s:s, s:I, s:o, s:f}", "object", "event", "id",
                                          (json_int_t)id, "witnesses", ws, "time",
                                          lemonpc_world_time(s->world)));
}

static int add_memory(void *user, const lemonpc_memory *m) {
    json_t *a = user;
    json_array_append_new(a, json_pack("{s:I, s:s, s:s, s:s?, s:s?, s:f, s:i, s:b}", "id",
                                       (json_int_t)m->id, "kind", m->kind, "text", m->text,
                                       "place", m->place, "player", m->player, "time", m->time,
                                       "importance", m->importance, "witnessed", m->witnessed));
    return 0;
}

static enum MHD_Result do_memories(struct MHD_Connection *c, req *r, size_t npc, bool erase) {
    lm_server *s = r->s;
    const char *user = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "user");
    if (user && !user[0]) user = NULL;
    snprintf(r->user, sizeof r->user, "%s", user ? user : "");
    snprintf(r->model, sizeof r->model, "%s", s->npcs[npc].id);
    lemonpc_error err;
    if (!erase) {
        json_t *a = json_array();
        if (lemonpc_world_memories(s->world, s->names[npc], user, add_memory, a, &err)) {
            json_decref(a);
            return send_errorf(c, r, 500, "server_error", NULL, NULL, "%s", err.message);
        }
        return send_json(c, r, 200, json_pack("{s:s, s:o}", "object", "list", "data", a));
    }
    if (!user)
        return send_errorf(c, r, 400, "invalid_request_error", "user", NULL,
                           "DELETE memories needs ?user=NAME: the player the NPC forgets");
    /* the conversation kept for them goes too */
    pthread_mutex_lock(&s->mu);
    for (long i = 0; i < s->cfg.max_conversations; i++) {
        conv_slot *sl = &s->slots[i];
        if (!sl->used || sl->npc != npc || strcmp(sl->user, user)) continue;
        if (sl->busy) {
            pthread_mutex_unlock(&s->mu);
            return send_errorf(c, r, 409, "invalid_request_error", "user", "conversation_busy",
                               "%s is answering %s: try again when the reply is done",
                               s->npcs[npc].id, user);
        }
        slot_close(sl);
    }
    pthread_mutex_unlock(&s->mu);
    if (lemonpc_world_forget(s->world, s->names[npc], user, &err))
        return send_errorf(c, r, 500, "server_error", NULL, NULL, "%s", err.message);
    return send_json(c, r, 200, json_pack("{s:s, s:s, s:s, s:b}", "object", "memories.deleted",
                                          "npc", s->npcs[npc].id, "user", user, "deleted", 1));
}

/* A save slot's file name: letters, digits, '.', '_', '-'; no leading dot. */
static bool slot_name_ok(const char *p) {
    size_t n = strlen(p);
    if (!n || n > 128 || p[0] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* The body's "path" as a slot in the saves folder, into full; or an error
 * sent. Refused besides bad names: SQLite's own files beside a database
 * (renaming a save over a live WAL corrupts that database) and the live
 * world file itself (the saves folder defaults to its folder). */
static bool slot_path(struct MHD_Connection *c, req *r, char *full, size_t cap) {
    lm_server *s = r->s;
    json_t *j = body_object(c, r);
    if (!j) return false;
    json_t *p = json_object_get(j, "path");
    bool ok = json_is_string(p) && slot_name_ok(json_string_value(p));
    if (ok) snprintf(full, cap, "%s/%s", s->saves_dir, json_string_value(p));
    bool sidecar = ok && (ends_with(full, "-wal") || ends_with(full, "-shm") ||
                          ends_with(full, "-journal"));
    json_decref(j);
    if (!ok)
        return send_errorf(c, r, 400, "invalid_request_error", "path", NULL,
                           "path must be a file name (letters, digits, '.', '_', '-'; no "
                           "folders): the slot is in the server's saves folder"), false;
    struct stat a, b;
    if (sidecar || (s->world_file && !stat(full, &a) && !stat(s->world_file, &b) &&
                    a.st_dev == b.st_dev && a.st_ino == b.st_ino))
        return send_errorf(c, r, 400, "invalid_request_error", "path", NULL,
                           "%s is %s, not a save slot", full,
                           sidecar ? "one of SQLite's files beside a database"
                                   : "the world file the server runs on"), false;
    return true;
}

static enum MHD_Result do_world_save(struct MHD_Connection *c, req *r) {
    lm_server *s = r->s;
    char full[1024];
    if (!slot_path(c, r, full, sizeof full)) return MHD_YES;
    lemonpc_error err;
    if (lemonpc_world_save_as(s->world, full, &err))
        return send_errorf(c, r, 500, "server_error", "path", NULL, "%s", err.message);
    return send_json(c, r, 200, json_pack("{s:s, s:s}", "object", "world.save", "path", full));
}

/* The world becomes a save slot. The kept conversations hold turns and
 * recalled memories of the world before, so they are closed: a client
 * that sends its history goes on from it over the loaded memory. Refused
 * while a conversation is answering (its exchange would be recorded into
 * the loaded world, or lost); the server's lock is held from that check to
 * the end of the load, so none starts meanwhile (the load is one SQLite
 * copy: milliseconds for a small world). */
static enum MHD_Result do_world_load(struct MHD_Connection *c, req *r) {
    lm_server *s = r->s;
    char full[1024];
    if (!slot_path(c, r, full, sizeof full)) return MHD_YES;
    pthread_mutex_lock(&s->mu);
    int busy = 0;
    for (long i = 0; i < s->cfg.max_conversations; i++) busy += s->slots[i].used && s->slots[i].busy;
    if (busy) {
        pthread_mutex_unlock(&s->mu);
        return send_errorf(c, r, 409, "invalid_request_error", NULL, "world_busy",
                           "%d conversation%s answering: load the world when no reply is being "
                           "generated", busy, busy == 1 ? " is" : "s are");
    }
    lemonpc_error err;
    lemonpc_status st = lemonpc_world_load(s->world, full, &err);
    int closed = 0;
    for (long i = 0; st == LEMONPC_OK && i < s->cfg.max_conversations; i++)
        if (s->slots[i].used) {
            slot_close(&s->slots[i]);
            closed++;
        }
    pthread_mutex_unlock(&s->mu);
    if (st == LEMONPC_ERR_NOT_FOUND)
        return send_errorf(c, r, 404, "invalid_request_error", "path", "save_not_found",
                           "no save slot %s: POST /v1/world/save writes one", full);
    if (st == LEMONPC_ERR_FORMAT)
        return send_errorf(c, r, 400, "invalid_request_error", "path", "invalid_save",
                           "%s (the world is left as it was)", err.message);
    if (st)
        return send_errorf(c, r, 500, "server_error", "path", NULL,
                           "%s (the world is left as it was)", err.message);
    snprintf(r->note, sizeof r->note, "loaded %s, %d conversations closed", full, closed);
    return send_json(c, r, 200, json_pack("{s:s, s:s, s:f, s:i}", "object", "world.load", "path",
                                          full, "time", lemonpc_world_time(s->world),
                                          "conversations_closed", closed));
}

/* Constant-time comparison of the bearer token with the key. */
static bool authorized(const lm_server *s, struct MHD_Connection *c) {
    if (!s->api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    size_t a = strlen(h), b = strlen(s->api_key);
    unsigned diff = a != b;
    for (size_t i = 0; i < b; i++) diff |= (unsigned char)s->api_key[i] ^ (unsigned char)h[i < a ? i : 0];
    return diff == 0 && a > 0;
}

static enum MHD_Result route(struct MHD_Connection *c, req *r) {
    lm_server *s = r->s;
    const char *m = r->method, *p = r->path;
    if (atomic_load(&s->stopping))
        return send_errorf(c, r, 503, "server_error", NULL, "shutting_down",
                           "the server is shutting down");
    bool get = !strcmp(m, "GET"), post = !strcmp(m, "POST"), del = !strcmp(m, "DELETE");
    if (!strcmp(p, "/health") && get)
        return send_json(c, r, 200, json_pack("{s:s, s:i}", "status", "ok", "npcs", (int)s->n_npcs));
    if (!authorized(s, c))
        return send_errorf(c, r, 401, "invalid_request_error", NULL, "invalid_api_key",
                           "Incorrect or missing API key: send \"Authorization: Bearer KEY\"");
    const char *allowed = NULL;
    if (!strcmp(p, "/v1/models")) {
        if (get) return do_models(c, r, NULL);
        allowed = "GET";
    } else if (!strncmp(p, "/v1/models/", 11) && p[11]) {
        if (get) return do_models(c, r, p + 11);
        allowed = "GET";
    } else if (!strcmp(p, "/v1/chat/completions") || !strcmp(p, "/v1/completions")) {
        if (post) return do_generate(c, r, p[4] == 'c' && p[5] == 'h');
        allowed = "POST";
    } else if (!strcmp(p, "/v1/world/save")) {
        if (post) return do_world_save(c, r);
        allowed = "POST";
    } else if (!strcmp(p, "/v1/world/load")) {
        if (post) return do_world_load(c, r);
        allowed = "POST";
    } else if (!strncmp(p, "/v1/npcs/", 9)) {
        const char *id = p + 9, *slash = strchr(id, '/');
        char name[64];
        if (slash && (size_t)(slash - id) < sizeof name) {
            snprintf(name, sizeof name, "%.*s", (int)(slash - id), id);
            long npc = find_npc(s, name);
            bool events = !strcmp(slash, "/events"), memories = !strcmp(slash, "/memories");
            if ((events || memories) && npc < 0)
                return send_errorf(c, r, 404, "invalid_request_error", "model", "model_not_found",
                                   "no NPC `%s`: GET /v1/models lists them", name);
            if (events) {
                if (post) return do_event(c, r, (size_t)npc);
                allowed = "POST";
            } else if (memories) {
                if (get || del) return do_memories(c, r, (size_t)npc, del);
                allowed = "GET, DELETE";
            }
        }
    }
    if (allowed)
        return send_errorf(c, r, 405, "invalid_request_error", NULL, "method_not_allowed",
                           "%s %s: allowed: %s", m, p, allowed);
    return send_errorf(c, r, 404, "invalid_request_error", NULL, "unknown_url",
                       "Unknown request URL: %s %s", m, p);
}

/* Ends a request whose body is still arriving: closed without a reply. */
static enum MHD_Result drop(req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result drop(req *r, int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->note, sizeof r->note, fmt, ap);
    va_end(ap);
    r->status = status;
    r->answered = true;
    return MHD_NO;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls) {
    lm_server *s = cls;
    req *r = *con_cls;
    if (!r) {
        if (!(r = calloc(1, sizeof *r))) return MHD_NO;
        r->s = s;
        r->t0 = lm_now_s();
        snprintf(r->method, sizeof r->method, "%s", method);
        snprintf(r->path, sizeof r->path, "%s", url);
        *con_cls = r;
        /* a declared length far beyond the limit: answered before the body */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > DRAIN_CAP) {
            r->too_large = true;
            return send_errorf(c, r, 413, "invalid_request_error", NULL, "request_too_large",
                               "the request body (%s bytes) is larger than %zu bytes", cl,
                               s->cfg.max_body);
        }
        return MHD_YES;
    }
    if (*size) {
        if (r->answered) { *size = 0; return MHD_YES; }
        r->got += *size;
        if (r->got > s->cfg.max_body) {
            r->too_large = true;
            lm_sb_free(&r->body);
        } else {
            lm_sb_add(&r->body, data, *size);
        }
        *size = 0;
        /* libmicrohttpd (0.9.75) queues no reply before the body is whole:
         * these close the connection, and the log line says why */
        if (r->got > DRAIN_CAP)
            return drop(r, 413, "the request body is larger than %zu bytes (more than %zu "
                        "sent: connection closed)", s->cfg.max_body, DRAIN_CAP);
        if (lm_now_s() - r->t0 > s->cfg.request_timeout_s)
            return drop(r, 408, "the request body took longer than %d s: connection closed",
                        s->cfg.request_timeout_s);
        return MHD_YES;
    }
    if (r->answered) return MHD_YES;
    if (r->too_large)
        return send_errorf(c, r, 413, "invalid_request_error", NULL, "request_too_large",
                           "the request body (%zu bytes) is larger than %zu bytes", r->got,
                           s->cfg.max_body);
    if (r->body.oom) return send_errorf(c, r, 503, "server_error", NULL, NULL, "out of memory");
    return route(c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    lm_server *s = cls;
    req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    if (r->job) job_end(r);
    if (r->timeout_changed)
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)s->cfg.idle_timeout_s);
    static const char *const why[] = {"", "error", "timeout", "shutdown", "read error",
                                      "client gone"};
    lm_sb line = {0};
    lm_sb_printf(&line, "%s %s %d %.3fs", r->method, r->path, r->answered ? r->status : 0,
                 lm_now_s() - r->t0);
    if (r->model[0]) lm_sb_printf(&line, " model=%s", r->model);
    if (r->user[0]) lm_sb_printf(&line, " user=%s", r->user);
    if (r->stream) lm_sb_str(&line, " stream");
    if (r->has_usage)
        lm_sb_printf(&line, " prompt=%d cached=%d completion=%d", r->usage.prompt_tokens,
                     r->usage.cached_tokens, r->usage.completion_tokens);
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        lm_sb_printf(&line, " [%s]", (unsigned)toe < 6 ? why[toe] : "ended");
    if (r->note[0]) lm_sb_printf(&line, " (%s)", r->note);
    if (line.p && !line.oom) put_logf("%s", line.p);
    lm_sb_free(&line);
    lm_sb_free(&r->body);
    free(r);
}

lm_server *lm_server_start(const lm_server_config *cfg, const lm_server_npc *npcs, size_t n,
                           lemonpc_world *world, char *err, size_t cap) {
    lm_server *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, cap, "out of memory"); return NULL; }
    s->cfg = *cfg;
    s->world = world;
    s->n_npcs = n;
    s->started = (long long)time(NULL);
    atomic_init(&s->stopping, false);
    atomic_init(&s->seq, 0);
    pthread_mutex_init(&s->mu, NULL);
    s->host = strdup(cfg->host ? cfg->host : "127.0.0.1");
    s->api_key = cfg->api_key ? strdup(cfg->api_key) : NULL;
    s->saves_dir = strdup(cfg->saves_dir ? cfg->saves_dir : ".");
    s->world_file = cfg->world_file ? strdup(cfg->world_file) : NULL;
    s->npcs = calloc(n ? n : 1, sizeof *s->npcs);
    s->names = calloc(n ? n : 1, sizeof *s->names);
    s->slots = calloc((size_t)(cfg->max_conversations > 0 ? cfg->max_conversations : 1),
                      sizeof *s->slots);
    if (!s->host || (cfg->api_key && !s->api_key) || !s->saves_dir ||
        (cfg->world_file && !s->world_file) || !s->npcs || !s->names || !s->slots) {
        snprintf(err, cap, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        s->npcs[i] = npcs[i];
        const char *name = lemonpc_npc_name(npcs[i].npc);
        if (!(s->npcs[i].id = strdup(npcs[i].id)) || !(s->names[i] = strdup(name[0] ? name : npcs[i].id))) {
            snprintf(err, cap, "out of memory");
            goto fail;
        }
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, s->host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)cfg->port);
    } else if (inet_pton(AF_INET6, s->host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, cap, "--host %s: not an IPv4 or IPv6 address", s->host);
        goto fail;
    }
    s->d = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, s,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, s,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->idle_timeout_s,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_END);
    if (!s->d) {
        snprintf(err, cap, "cannot listen on %s port %d (%s)", s->host, cfg->port,
                 errno ? strerror(errno) : "libmicrohttpd refused the options");
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    return s;
fail:
    lm_server_stop(s);
    return NULL;
}

int lm_server_port(const lm_server *s) { return s ? s->port : 0; }

void lm_server_stop(lm_server *s) {
    if (!s) return;
    atomic_store(&s->stopping, true);
    pthread_mutex_lock(&s->mu);
    for (active *a = s->act; a; a = a->next) lemonpc_conversation_cancel(a->conv);
    pthread_mutex_unlock(&s->mu);
    if (s->d) MHD_stop_daemon(s->d);
    for (long i = 0; s->slots && i < s->cfg.max_conversations; i++)
        if (s->slots[i].used) slot_close(&s->slots[i]);
    for (size_t i = 0; i < s->n_npcs; i++) {
        if (s->npcs) free((char *)s->npcs[i].id);
        if (s->names) free(s->names[i]);
    }
    free(s->npcs);
    free(s->names);
    free(s->slots);
    free(s->host);
    free(s->api_key);
    free(s->saves_dir);
    free(s->world_file);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
