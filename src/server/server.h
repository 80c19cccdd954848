/* `lemonpc serve`: NPCs behind an OpenAI-compatible HTTP server
 * (libmicrohttpd, a thread per connection). Each NPC is a model id; the
 * server keeps one conversation per (NPC, user) and, when a request's
 * messages continue it, answers from its KV cache (docs/SERVER.md).
 * Linked into the `lemonpc` command only, never into liblemonpc. */
#ifndef LM_SERVER_SERVER_H
#define LM_SERVER_SERVER_H

#include <stddef.h>

#include "lemonpc.h"
#include "server/oai_request.h"

typedef struct lm_server_config {
    const char *host;           /* address to bind ("127.0.0.1"; "::1" etc. for IPv6) */
    int port;                   /* 0: any free port (lm_server_port says which) */
    const char *api_key;        /* requests must carry "Authorization: Bearer KEY"; NULL: none */
    size_t max_body;            /* bytes of a request body; beyond: 413 */
    oai_limits limits;          /* messages, max_tokens, stop strings */
    int idle_timeout_s;         /* a connection silent this long is closed */
    int request_timeout_s;      /* a request's body must arrive, and a reply progress, within */
    int max_connections;
    int max_conversations;      /* kept at once; the least recently used idle one goes */
    const char *saves_dir;      /* where POST /v1/world/save writes its slots, and
                                 * POST /v1/world/load reads them */
    const char *world_file;     /* the live world's file, never a slot; NULL: unknown */
} lm_server_config;

/* Defaults: 127.0.0.1:8080, no key, 1 MiB bodies, 256 messages, 1024
 * tokens, 15 s idle, 300 s per request, 256 connections, 64 conversations. */
lm_server_config lm_server_default_config(void);

typedef struct lm_server_npc {
    const char *id;             /* the model id ("orlando") */
    lemonpc_npc *npc;           /* lives in the server's world */
    lemonpc_sampling sampling;  /* what it was loaded with: a request's fields override it */
} lm_server_npc;

typedef struct lm_server lm_server;

/* Starts serving npcs[0, n) (copied; the NPCs and the world must outlive
 * the server). NULL with err filled when the address cannot be bound. */
lm_server *lm_server_start(const lm_server_config *cfg, const lm_server_npc *npcs, size_t n,
                           lemonpc_world *world, char *err, size_t err_cap);
int lm_server_port(const lm_server *s);
/* Cancels the replies being generated, closes the connections and the
 * conversations, and frees the server. */
void lm_server_stop(lm_server *s);

#endif
