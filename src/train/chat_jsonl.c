/* Chat JSONL (chat_jsonl.h). */
#include "train/chat_jsonl.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* Field names of the two accepted shapes. */
typedef struct shape {
    const char *list, *role, *content;
    const char *names[3];   /* accepted role spellings -> system, user, assistant */
    const char *alias[3];
    const char *expect;
} shape;

static const shape OPENAI = {"messages", "role", "content",
                             {"system", "user", "assistant"}, {NULL, NULL, NULL},
                             "system/user/assistant"};
static const shape SHAREGPT = {"conversations", "from", "value",
                               {"system", "human", "gpt"}, {NULL, "user", "assistant"},
                               "system/human/gpt"};
static const char *const ROLES[3] = {"system", "user", "assistant"};

/* messages[i] checked into *m; -1 with err set. */
static int parse_msg(const shape *sh, const char *field, json_t *o, size_t i, lm_chat_msg *m, lm_err *err) {
    if (!json_is_object(o)) return lm_errf(err, "%s[%zu]: expected an object", field, i);
    json_t *r = json_object_get(o, sh->role), *c = json_object_get(o, sh->content);
    if (!json_is_string(r))
        return lm_errf(err, "%s[%zu].%s: %s", field, i, sh->role, r ? "expected a string" : "missing");
    const char *rs = json_string_value(r);
    int k = -1;
    for (int j = 0; j < 3; j++)
        if (!strcmp(rs, sh->names[j]) || (sh->alias[j] && !strcmp(rs, sh->alias[j]))) k = j;
    if (k < 0)
        return lm_errf(err, "%s[%zu].%s: expected one of %s, got '%.64s'", field, i, sh->role,
                       sh->expect, rs);
    if (!json_is_string(c))
        return lm_errf(err, "%s[%zu].%s: %s", field, i, sh->content, c ? "expected a string" : "missing");
    /* jansson keeps \u0000 out unless asked, but say so plainly if a string
     * ever holds one: every consumer works on C strings. */
    if (strlen(json_string_value(c)) != json_string_length(c))
        return lm_errf(err, "%s[%zu].%s: contains a NUL character", field, i, sh->content);
    *m = (lm_chat_msg){ROLES[k], json_string_value(c)};
    return 0;
}

/* list checked as field (e.g. "messages") of shape sh: its count with
 * *msgs, or -1. */
static int parse_list(const shape *sh, const char *field, json_t *list, lm_chat_msg **msgs,
                      lm_err *err) {
    *msgs = NULL;
    if (!json_is_array(list)) return lm_errf(err, "%s: expected an array", field);
    size_t n = json_array_size(list);
    if (n == 0) return lm_errf(err, "%s: empty", field);
    if (n > 1u << 20) return lm_errf(err, "%s: %zu messages is too many", field, n);
    lm_chat_msg *m = calloc(n, sizeof *m);
    if (!m) return lm_errf(err, "out of memory");
    for (size_t i = 0; i < n; i++)
        if (parse_msg(sh, field, json_array_get(list, i), i, &m[i], err)) {
            free(m);
            return -1;
        }
    *msgs = m;
    return (int)n;
}

int lm_chat_parse_messages(json_t *list, const char *field, lm_chat_msg **msgs, lm_err *err) {
    return parse_list(&OPENAI, field, list, msgs, err);
}

int lm_chat_parse(json_t *root, const lm_chat_jsonl_opts *o, lm_chat_msg **msgs, lm_err *err) {
    *msgs = NULL;
    if (!json_is_object(root)) return lm_errf(err, "expected a JSON object per line");
    const shape *sh = &OPENAI;
    json_t *list = json_object_get(root, "messages");
    if (!list && o->sharegpt && (list = json_object_get(root, "conversations"))) sh = &SHAREGPT;
    if (!list)
        return lm_errf(err, o->sharegpt ? "no \"messages\" (or ShareGPT \"conversations\") field"
                                        : "no \"messages\" field");
    int n = parse_list(sh, sh->list, list, msgs, err);
    if (n < 0) return -1;
    unsigned have = 0;
    for (int i = 0; i < n; i++)
        have |= (*msgs)[i].role == ROLES[1] ? LM_CHAT_NEED_USER
              : (*msgs)[i].role == ROLES[2] ? LM_CHAT_NEED_ASSISTANT : 0;
    unsigned miss = o->need & ~have;
    if (miss) {
        free(*msgs);
        *msgs = NULL;
        return lm_errf(err, "%s: no %s message", sh->list, miss & LM_CHAT_NEED_USER ? "user" : "assistant");
    }
    return n;
}

struct lm_chat_jsonl {
    lm_jsonl *lines;
    lm_chat_jsonl_opts opts;
    lm_chat_msg *msgs;      /* the last line's, freed on the next call */
    long bad;
};

static lm_chat_jsonl *wrap(lm_jsonl *lines, const lm_chat_jsonl_opts *o, lm_err *err) {
    if (!lines) return NULL;
    lm_chat_jsonl *r = calloc(1, sizeof *r);
    if (!r) {
        lm_errf(err, "%s: out of memory", lm_jsonl_name(lines));
        lm_jsonl_close(lines);
        return NULL;
    }
    r->lines = lines;
    if (o) r->opts = *o;
    return r;
}

lm_chat_jsonl *lm_chat_jsonl_open(const char *path, const lm_chat_jsonl_opts *o, lm_err *err) {
    return wrap(lm_jsonl_open(path, err), o, err);
}

lm_chat_jsonl *lm_chat_jsonl_open_mem(const char *name, const char *buf, size_t len,
                                      const lm_chat_jsonl_opts *o, lm_err *err) {
    return wrap(lm_jsonl_open_mem(name, buf, len, err), o, err);
}

void lm_chat_jsonl_close(lm_chat_jsonl *r) {
    if (!r) return;
    lm_jsonl_close(r->lines);
    free(r->msgs);
    free(r);
}

long lm_chat_jsonl_bad(const lm_chat_jsonl *r) { return r->bad; }

int lm_chat_jsonl_next(lm_chat_jsonl *r, lm_chat_line *out, lm_err *err) {
    *out = (lm_chat_line){0};
    free(r->msgs);
    r->msgs = NULL;
    json_t *root;
    int rc = lm_jsonl_next(r->lines, &root, err);
    int line = lm_jsonl_line(r->lines);
    if (rc == LM_JSONL_OK) {
        int n = lm_chat_parse(root, &r->opts, &r->msgs, err);
        if (n >= 0) {
            *out = (lm_chat_line){root, r->msgs, (size_t)n, line};
            return LM_JSONL_OK;
        }
        lm_err_prefix(err, "%s:%d", lm_jsonl_name(r->lines), line);
        rc = LM_JSONL_BAD;
    }
    if (rc != LM_JSONL_BAD) return rc;
    r->bad++;
    return r->opts.strict ? -1 : LM_JSONL_BAD;
}

long lm_chat_last(const lm_chat_line *l, const char *role) {
    for (size_t i = l->n; i-- > 0;)
        if (!strcmp(l->msgs[i].role, role)) return (long)i;
    return -1;
}
