/* Chat conversations in JSONL, one per line: the one reader of the trainer,
 * `lemonpc filter`, review and datagen (lines as in jsonl.h).
 *
 *   {"messages": [{"role": "system|user|assistant", "content": "..."}, ...], "meta": {...}}
 * and, with opts.sharegpt, the ShareGPT shape
 *   {"conversations": [{"from": "system|human|gpt", "value": "..."}, ...]}
 * (from also accepts user/assistant). Other fields are kept, not checked.
 *
 * Each line gives its object whole (a tool writes it back with its meta
 * untouched) and the checked messages; a bad line gives "NAME:LINE: what is
 * wrong", e.g. "d.jsonl:17: messages[2].role: expected one of
 * system/user/assistant, got 'bot'". Strict (the trainer's --strict,
 * review, datagen): a bad line ends the read. Lenient (the trainer's
 * default, filter): it is returned, counted, and the read goes on. */
#ifndef LM_TRAIN_CHAT_JSONL_H
#define LM_TRAIN_CHAT_JSONL_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"
#include "tokenizer/tokenizer.h"
#include "train/jsonl.h"

/* Roles a line must hold at least once (lm_chat_jsonl_opts.need). */
enum { LM_CHAT_NEED_USER = 1, LM_CHAT_NEED_ASSISTANT = 2 };

typedef struct lm_chat_jsonl_opts {
    bool strict;        /* a bad line fails lm_chat_jsonl_next (-1) */
    bool sharegpt;      /* also accept the ShareGPT shape */
    unsigned need;      /* LM_CHAT_NEED_* */
} lm_chat_jsonl_opts;

typedef struct lm_chat_line {
    struct json_t *root;        /* the line's object; the reader's until the next call */
    const lm_chat_msg *msgs;    /* [n] into root; role is "system", "user" or "assistant" */
    size_t n;
    int line;                   /* 1-based */
} lm_chat_line;

typedef struct lm_chat_jsonl lm_chat_jsonl;

lm_chat_jsonl *lm_chat_jsonl_open(const char *path, const lm_chat_jsonl_opts *o, lm_err *err);
/* buf[0..len) (copied), named name in messages. */
lm_chat_jsonl *lm_chat_jsonl_open_mem(const char *name, const char *buf, size_t len,
                                      const lm_chat_jsonl_opts *o, lm_err *err);
void lm_chat_jsonl_close(lm_chat_jsonl *r);

/* LM_JSONL_OK with *out, LM_JSONL_END, or for a bad line LM_JSONL_BAD (err
 * set, counted; lenient) or -1 (err set; strict). Nothing is lost when the
 * caller goes on after LM_JSONL_BAD. */
int lm_chat_jsonl_next(lm_chat_jsonl *r, lm_chat_line *out, lm_err *err);
/* Bad lines returned so far. */
long lm_chat_jsonl_bad(const lm_chat_jsonl *r);

/* The check of one object: the message count with *msgs (malloc'd, into
 * root), or -1 with err "messages[2].content: missing" (no place). */
int lm_chat_parse(struct json_t *root, const lm_chat_jsonl_opts *o, lm_chat_msg **msgs,
                  lm_err *err);

/* A message list (an array of {"role", "content"}) checked as field
 * (named so in messages, e.g. "chosen[1].role: missing"): its count with
 * *msgs (malloc'd, into list), or -1 with err set. */
int lm_chat_parse_messages(struct json_t *list, const char *field, lm_chat_msg **msgs, lm_err *err);

/* Index of the last message of role in l, -1 if none. */
long lm_chat_last(const lm_chat_line *l, const char *role);

#endif
