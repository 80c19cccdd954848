/* A reply on its way to the game: the decoder's bytes in, text out that is
 * always valid UTF-8 (an invalid byte becomes U+FFFD; a character split
 * over two tokens waits for its second half) and never shows the start of
 * a stop string that then ends the reply (the last max_stop - 1 bytes wait
 * until they cannot begin one). What was passed on is also kept whole, so
 * the streamed pieces and the returned reply are the same text. */
#ifndef LM_RUNTIME_STREAM_H
#define LM_RUNTIME_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"
#include "base/strbuf.h"

/* Receives each piece of clean text; nonzero stops the stream (cancel). */
typedef int (*lm_stream_emit_fn)(void *ud, const char *text, size_t n);

typedef struct lm_stream {
    const char *const *stop;  /* [n_stop], borrowed */
    size_t n_stop, max_stop;
    lm_stream_emit_fn emit;   /* may be NULL */
    void *ud;
    lm_sb raw;                /* every byte pushed */
    size_t done;              /* raw bytes already passed on */
    lm_sb out;                /* the clean text passed on: the reply */
    bool stopped;             /* a stop string was found; later bytes are dropped */
    bool cancelled;           /* emit returned nonzero */
} lm_stream;

void lm_stream_init(lm_stream *s, const char *const *stop, size_t n_stop, lm_stream_emit_fn emit,
                    void *ud);
/* Adds decoded bytes. -1 (err set) when out of memory or emit cancelled. */
int lm_stream_push(lm_stream *s, const char *bytes, size_t n, lm_err *err);
/* Passes on what was held back (an incomplete last character is dropped). */
int lm_stream_finish(lm_stream *s, lm_err *err);
/* The reply (malloc'd, owned by the caller); the stream is emptied. */
char *lm_stream_take(lm_stream *s);
void lm_stream_free(lm_stream *s);

#endif
