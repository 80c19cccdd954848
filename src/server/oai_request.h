/* OpenAI-compatible request bodies of `lemonpc serve`, parsed and checked
 * without the model or the network: POST /v1/chat/completions and
 * POST /v1/completions. A bad body gives an oai_error shaped as OpenAI's
 * (HTTP status, type, param, code, message). Pure functions: no I/O, no
 * global state; fuzzed by fuzz/fuzz_oai_request.c. */
#ifndef LM_SERVER_OAI_REQUEST_H
#define LM_SERVER_OAI_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OAI_MAX_STOP 4   /* stop strings per request, as OpenAI */

/* An error as OpenAI returns it: {"error": {"message", "type", "param", "code"}}. */
typedef struct oai_error {
    int status;           /* HTTP status: 400, 401, 404, 409, 413, 500, 503 ... */
    const char *type;     /* "invalid_request_error", "server_error", ... (static) */
    const char *code;     /* static, or NULL for null */
    char param[64];       /* "" for null */
    char message[512];
} oai_error;

/* Fills e and returns -1. param and code may be NULL. */
int oai_fail(oai_error *e, int status, const char *type, const char *param, const char *code,
             const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* What a server accepts; a request beyond them is a 400 naming the field. */
typedef struct oai_limits {
    size_t max_messages;     /* entries of messages[] */
    int max_tokens;          /* the most max_tokens a request may ask */
    size_t max_stop_bytes;   /* the longest stop string */
} oai_limits;

typedef struct oai_message {
    const char *role;        /* "system" (also OpenAI's "developer"), "user" or "assistant" */
    char *content;           /* owned: a string, or the text parts joined by newlines */
} oai_message;

typedef struct oai_request {
    bool chat;               /* chat.completions (messages) or completions (prompt) */
    char *model;             /* owned */
    oai_message *messages;   /* chat: [n_messages] */
    size_t n_messages;
    char *prompt;            /* completions: owned */
    bool stream;
    bool include_usage;      /* stream_options.include_usage */
    int max_tokens;          /* max_tokens or max_completion_tokens; 0: not given */
    bool has_temperature;
    double temperature;      /* 0 .. 2 */
    bool has_top_p;
    double top_p;            /* (0, 1] */
    bool has_seed;
    uint64_t seed;           /* the integer's two's complement */
    char *stop[OAI_MAX_STOP];/* owned, non-empty */
    size_t n_stop;
    char *user;              /* owned, or NULL: who speaks (the player) */
} oai_request;

/* Parses a POST /v1/chat/completions body (len bytes, need not end in NUL).
 * A chat request has at least one message that is not a system message,
 * and its last message is the user's: the line the NPC answers. Unknown
 * fields are ignored; n other than 1, logprobs and tools are refused.
 * Returns 0, or -1 with e filled (out then holds nothing to free). */
int oai_parse_chat(const char *body, size_t len, const oai_limits *lim, oai_request *out,
                   oai_error *e);
/* Parses a POST /v1/completions body: prompt is a string or an array of
 * one string; echo, suffix, best_of > 1 are refused. */
int oai_parse_completion(const char *body, size_t len, const oai_limits *lim, oai_request *out,
                         oai_error *e);
void oai_request_free(oai_request *r);

#endif
