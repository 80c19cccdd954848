/* JSONL files, one JSON object per line, read a line at a time: the one
 * line splitter behind the trainer's data, `lemonpc filter`, review,
 * datagen and eval (chat_jsonl.h adds the chat messages on top).
 *
 * Lines end in "\n" or "\r\n"; the last one may lack it. Blank lines
 * (spaces, tabs, CR only) are skipped but counted, so line numbers are
 * what an editor shows. A bad line (invalid JSON, not an object) is
 * reported as "NAME:LINE: what is wrong" and the reader goes on with the
 * next line: whether that ends the read is the caller's policy. In jansson,
 * whose types this hands out (train sits above the runtime a game links,
 * which must not need it). */
#ifndef LM_TRAIN_JSONL_H
#define LM_TRAIN_JSONL_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"

struct json_t;
typedef struct lm_jsonl lm_jsonl;

enum {
    LM_JSONL_END = 0,   /* no more lines */
    LM_JSONL_OK = 1,    /* a line's object */
    LM_JSONL_BAD = 2,   /* a bad line: err says where and what; the next call goes on */
};

/* Reads all of path ("-": stdin); messages name it as given. */
lm_jsonl *lm_jsonl_open(const char *path, lm_err *err);
/* buf[0..len) (need not be NUL-terminated; copied), named name in messages. */
lm_jsonl *lm_jsonl_open_mem(const char *name, const char *buf, size_t len, lm_err *err);
void lm_jsonl_close(lm_jsonl *r);

/* The next non-blank line: LM_JSONL_OK with *obj its object (the reader's
 * reference, valid until the next call or close: json_incref to keep it),
 * LM_JSONL_BAD with err set, or LM_JSONL_END. */
int lm_jsonl_next(lm_jsonl *r, struct json_t **obj, lm_err *err);
/* The 1-based line of what lm_jsonl_next returned last. */
int lm_jsonl_line(const lm_jsonl *r);
/* The byte offset just past that line, its line end included: where an
 * append-only journal is cut back to its last good record. */
size_t lm_jsonl_offset(const lm_jsonl *r);
/* True when that line is the file's last and has no line end: a record
 * whose write a crash cut short, which a journal drops. */
bool lm_jsonl_torn(const lm_jsonl *r);
const char *lm_jsonl_name(const lm_jsonl *r);

#endif
