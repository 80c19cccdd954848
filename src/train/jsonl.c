/* JSONL object lines (jsonl.h). */
#include "train/jsonl.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"

struct lm_jsonl {
    char *name;
    char *data;     /* the whole file: datasets are small next to a model */
    size_t len, at;
    int line;
    bool torn;      /* the last line returned has no line end */
    json_t *obj;    /* the last line's object, released on the next call */
};

static lm_jsonl *make(const char *name, char *data, size_t len, lm_err *err) {
    lm_jsonl *r = calloc(1, sizeof *r);
    if (r && !(r->name = strdup(name))) {
        free(r);
        r = NULL;
    }
    if (!r) {
        free(data);
        lm_errf(err, "%s: out of memory", name);
        return NULL;
    }
    r->data = data;
    r->len = len;
    return r;
}

lm_jsonl *lm_jsonl_open(const char *path, lm_err *err) {
    char *data;
    size_t len;
    if (lm_read_file(path, &data, &len, false, err)) return NULL;
    return make(path, data, len, err);
}

lm_jsonl *lm_jsonl_open_mem(const char *name, const char *buf, size_t len, lm_err *err) {
    char *data = malloc(len + 1);
    if (!data) {
        lm_errf(err, "%s: out of memory", name);
        return NULL;
    }
    if (len) memcpy(data, buf, len);
    data[len] = 0;
    return make(name, data, len, err);
}

void lm_jsonl_close(lm_jsonl *r) {
    if (!r) return;
    json_decref(r->obj);
    free(r->data);
    free(r->name);
    free(r);
}

int lm_jsonl_line(const lm_jsonl *r) { return r->line; }
size_t lm_jsonl_offset(const lm_jsonl *r) { return r->at; }
bool lm_jsonl_torn(const lm_jsonl *r) { return r->torn; }
const char *lm_jsonl_name(const lm_jsonl *r) { return r->name; }

static bool blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return false;
    return true;
}

int lm_jsonl_next(lm_jsonl *r, json_t **obj, lm_err *err) {
    *obj = NULL;
    json_decref(r->obj);
    r->obj = NULL;
    while (r->at < r->len) {
        const char *p = r->data + r->at;
        const char *nl = memchr(p, '\n', r->len - r->at);
        size_t n = nl ? (size_t)(nl - p) : r->len - r->at;
        r->at += n + (nl != NULL);
        r->line++;
        r->torn = nl == NULL;
        if (blank(p, n)) continue;
        /* Without the "\r" of a CRLF line jansson's column of an error at
         * the end of the line is right (with a line end, it reported
         * column 0 of the next line). */
        while (n && p[n - 1] == '\r') n--;
        json_error_t je;
        /* any value: a line that is not an object is told so, not "'[' expected" */
        json_t *o = json_loadb(p, n, JSON_DECODE_ANY, &je);
        if (!o) {
            /* a last line cut short (a crash mid-write) says so */
            lm_errf(err, "%s:%d: invalid JSON at column %d: %s%s", r->name, r->line, je.column, je.text,
                    !nl && (size_t)je.position >= n ? " (the file ends inside this line)" : "");
            return LM_JSONL_BAD;
        }
        if (!json_is_object(o)) {
            json_decref(o);
            lm_errf(err, "%s:%d: expected a JSON object per line", r->name, r->line);
            return LM_JSONL_BAD;
        }
        *obj = r->obj = o;
        return LM_JSONL_OK;
    }
    return LM_JSONL_END;
}
