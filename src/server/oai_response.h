/* OpenAI-compatible response bodies of `lemonpc serve`: errors, the model
 * list, whole completions (chat.completion, text_completion) and the
 * server-sent events of a stream (chat.completion.chunk, ending with
 * "data: [DONE]"). Pure functions: each returns a malloc'd NUL-terminated
 * string, or NULL when out of memory. Text that is not valid UTF-8 (the
 * runtime never gives any) has its bad bytes replaced by U+FFFD. */
#ifndef LM_SERVER_OAI_RESPONSE_H
#define LM_SERVER_OAI_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>

#include "server/oai_request.h"

typedef struct oai_usage {
    int prompt_tokens;       /* the whole prompt: evaluated + taken from the cache */
    int completion_tokens;
    int cached_tokens;       /* prompt_tokens_details.cached_tokens: taken from the cache */
} oai_usage;

#define OAI_SSE_DONE "data: [DONE]\n\n"

/* "stop" or "length" for a lemonpc_stop (LEMONPC_STOP_*). */
const char *oai_finish_reason(int stop);

/* {"error": {"message", "type", "param", "code"}} */
char *oai_error_json(const oai_error *e);
/* {"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]} */
char *oai_models_json(const char *const *ids, size_t n, long long created);
/* A whole reply: a chat.completion (chat) or a text_completion, with usage. */
char *oai_completion_json(bool chat, const char *id, long long created, const char *model,
                          const char *text, size_t len, const char *finish, const oai_usage *u);
/* One event of a stream, "data: {...}\n\n": a chat.completion.chunk whose
 * delta has the role (first) and text (may be NULL: no content), or a
 * text_completion piece; finish NULL is null. usage_null adds "usage": null
 * (a stream with stream_options.include_usage). */
char *oai_chunk_sse(bool chat, const char *id, long long created, const char *model, bool first,
                    const char *text, size_t len, const char *finish, bool usage_null);
/* The last event of a stream with include_usage: no choices, the usage. */
char *oai_usage_chunk_sse(bool chat, const char *id, long long created, const char *model,
                          const oai_usage *u);

#endif
