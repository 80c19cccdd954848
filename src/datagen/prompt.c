/* Template parsing and rendering (prompt.h). Parsed into a small tree once
 * so structure errors surface at load time; rendering walks the tree. */
#include "datagen/prompt.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "base/strbuf.h"

enum { N_TEXT, N_VAR, N_IF, N_EACH };

typedef struct node {
    int type;
    int line;
    size_t off, len;         /* N_TEXT: slice of the source */
    char *name;              /* N_VAR, N_IF, N_EACH */
    struct node *a, *b;      /* IF: then/else; EACH: body in a */
    size_t na, nb;
} node;

struct lm_tpl {
    char *name;
    char *src;
    node *root;
    size_t n_root;
};

static const char *const KIND_NAMES[LM_Q_KINDS] = {"in-world", "off-topic", "protective",
                                                   "adversarial"};

const char *lm_qkind_name(lm_qkind k) {
    return (unsigned)k < LM_Q_KINDS ? KIND_NAMES[k] : "?";
}

int lm_qkind_parse(const char *name) {
    for (int k = 0; k < LM_Q_KINDS; k++)
        if (name && !strcmp(name, KIND_NAMES[k])) return k;
    return -1;
}

/* ---- parsing ---------------------------------------------------------- */

typedef struct {
    const char *name, *s;
    size_t len, pos;
    int line;                /* line of pos */
    lm_err *err;
} parser;

static void advance(parser *p, size_t to) {
    for (size_t i = p->pos; i < to; i++)
        if (p->s[i] == '\n') p->line++;
    p->pos = to;
}

static void nodes_free(node *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        nodes_free(v[i].a, v[i].na);
        nodes_free(v[i].b, v[i].nb);
    }
    free(v);
}

static node *push(node **v, size_t *n, lm_err *err) {
    node *nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv) { lm_errf(err, "out of memory"); return NULL; }
    *v = nv;
    memset(&nv[*n], 0, sizeof nv[*n]);
    return &nv[(*n)++];
}

static bool name_ok(const char *s, size_t n) {
    if (!n) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (i > 0 && ((c >= '0' && c <= '9') || c == '-' || c == '.')) ||
                  (i == 0 && c == '@');
        if (!ok) return false;
    }
    return true;
}

static bool is_sp(char c) { return c == ' ' || c == '\t' || c == '\r'; }

enum { T_VAR, T_IF, T_EACH, T_ELSE, T_ENDIF, T_ENDEACH, T_COMMENT };

typedef struct {
    int kind;
    const char *arg;         /* name, into the source */
    size_t arg_len;
    size_t start, end;       /* "{{" .. past "}}" */
    int line;
} tag;

/* Reads the tag starting at p->pos ("{{"); does not move p. */
static int read_tag(parser *p, tag *t) {
    size_t i = p->pos + 2;
    const char *close = NULL;
    for (size_t j = i; j + 1 < p->len; j++)
        if (p->s[j] == '}' && p->s[j + 1] == '}') { close = p->s + j; break; }
    t->start = p->pos;
    t->line = p->line;
    if (!close) return lm_errf(p->err, "%s:%d: '{{' without a closing '}}'", p->name, p->line);
    t->end = (size_t)(close - p->s) + 2;
    const char *b = p->s + i, *e = close;
    if (b < e && *b == '!') { t->kind = T_COMMENT; t->arg = b; t->arg_len = 0; return 0; }
    while (b < e && is_sp(*b)) b++;
    while (e > b && is_sp(e[-1])) e--;
    size_t n = (size_t)(e - b);
    const char *kw = NULL;
    if (n && *b == '#') {
        if (n >= 3 && !strncmp(b, "#if", 3) && (n == 3 || is_sp(b[3]))) { t->kind = T_IF; kw = b + 3; }
        else if (n >= 5 && !strncmp(b, "#each", 5) && (n == 5 || is_sp(b[5]))) { t->kind = T_EACH; kw = b + 5; }
        else return lm_errf(p->err, "%s:%d: unknown block '{{%.*s}}' (known: #if, #each)", p->name,
                            p->line, (int)(n > 40 ? 40 : n), b);
        while (kw < e && is_sp(*kw)) kw++;
        if (!name_ok(kw, (size_t)(e - kw)))
            return lm_errf(p->err, "%s:%d: '{{%.*s}}' needs one variable name", p->name, p->line,
                           (int)(n > 40 ? 40 : n), b);
        t->arg = kw;
        t->arg_len = (size_t)(e - kw);
        return 0;
    }
    if (n == 4 && !strncmp(b, "else", 4)) { t->kind = T_ELSE; return 0; }
    if (n == 3 && !strncmp(b, "/if", 3)) { t->kind = T_ENDIF; return 0; }
    if (n == 5 && !strncmp(b, "/each", 5)) { t->kind = T_ENDEACH; return 0; }
    if (!name_ok(b, n))
        return lm_errf(p->err, "%s:%d: bad tag '{{%.*s}}' (a variable name: letters, digits, _ - .)",
                       p->name, p->line, (int)(n > 40 ? 40 : n), b);
    t->kind = T_VAR;
    t->arg = b;
    t->arg_len = n;
    return 0;
}

/* A block tag alone on its line: [*line_start, *line_end) is the whole line
 * including its '\n'. */
static bool standalone(const parser *p, const tag *t, size_t *line_start, size_t *line_end) {
    size_t a = t->start;
    while (a > 0 && is_sp(p->s[a - 1])) a--;
    if (a > 0 && p->s[a - 1] != '\n') return false;
    size_t e = t->end;
    while (e < p->len && is_sp(p->s[e])) e++;
    if (e < p->len && p->s[e] != '\n') return false;
    *line_start = a;
    *line_end = e < p->len ? e + 1 : e;
    return true;
}

static int add_text(node **v, size_t *n, size_t off, size_t len, int line, lm_err *err) {
    if (!len) return 0;
    node *x = push(v, n, err);
    if (!x) return -1;
    x->type = N_TEXT;
    x->off = off;
    x->len = len;
    x->line = line;
    return 0;
}

/* Parses until EOF or a closing tag (else, /if, /each), which is consumed
 * and returned in *stop (-1 at EOF). */
static int parse_seq(parser *p, int depth, node **out, size_t *n_out, int *stop, tag *stop_tag) {
    *stop = -1;
    size_t text_start = p->pos;
    int text_line = p->line;
    while (p->pos < p->len) {
        const char *hit = NULL;
        for (size_t j = p->pos; j + 1 < p->len; j++)
            if (p->s[j] == '{' && p->s[j + 1] == '{') { hit = p->s + j; break; }
        if (!hit) { advance(p, p->len); break; }
        advance(p, (size_t)(hit - p->s));
        tag t;
        if (read_tag(p, &t)) return -1;
        size_t text_end = t.start, next = t.end;
        size_t ls, le;
        if (t.kind != T_VAR && standalone(p, &t, &ls, &le)) {
            text_end = ls < text_start ? text_start : ls;
            next = le;
        }
        if (add_text(out, n_out, text_start, text_end - text_start, text_line, p->err)) return -1;
        advance(p, next);
        text_start = p->pos;
        text_line = p->line;
        if (t.kind == T_COMMENT) continue;
        if (t.kind == T_ELSE || t.kind == T_ENDIF || t.kind == T_ENDEACH) {
            *stop = t.kind;
            *stop_tag = t;
            return 0;
        }
        node *x = push(out, n_out, p->err);
        if (!x) return -1;
        x->line = t.line;
        x->name = strndup(t.arg, t.arg_len);
        if (!x->name) return lm_errf(p->err, "out of memory");
        if (t.kind == T_VAR) { x->type = N_VAR; continue; }
        if (depth + 1 > LM_TPL_MAX_DEPTH)
            return lm_errf(p->err, "%s:%d: blocks nested deeper than %d", p->name, t.line,
                           LM_TPL_MAX_DEPTH);
        x->type = t.kind == T_IF ? N_IF : N_EACH;
        /* x may move when the vector grows: build the children apart. */
        node *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        int st;
        tag stt;
        const char *want = t.kind == T_IF ? "/if" : "/each";
        int rc = parse_seq(p, depth + 1, &a, &na, &st, &stt);
        if (!rc && st == T_ELSE && t.kind == T_IF) rc = parse_seq(p, depth + 1, &b, &nb, &st, &stt);
        if (!rc && st != (t.kind == T_IF ? T_ENDIF : T_ENDEACH)) {
            if (st < 0)
                rc = lm_errf(p->err, "%s:%d: '{{%s %s}}' is never closed with '{{%s}}'", p->name,
                             t.line, t.kind == T_IF ? "#if" : "#each", (*out)[*n_out - 1].name, want);
            else
                rc = lm_errf(p->err, "%s:%d: '{{%s}}' where '{{%s}}' (opened on line %d) was expected",
                             p->name, stt.line,
                             st == T_ELSE ? "else" : st == T_ENDIF ? "/if" : "/each", want, t.line);
        }
        x = &(*out)[*n_out - 1];
        x->a = a; x->na = na; x->b = b; x->nb = nb;
        if (rc) return -1;
        text_start = p->pos;
        text_line = p->line;
    }
    return add_text(out, n_out, text_start, p->pos - text_start, text_line, p->err);
}

lm_tpl *lm_tpl_parse(const char *name, const char *text, size_t len, lm_err *err) {
    lm_tpl *t = calloc(1, sizeof *t);
    if (!t) { lm_errf(err, "out of memory"); return NULL; }
    t->name = strdup(name ? name : "template");
    t->src = malloc(len + 1);
    if (!t->name || !t->src) { lm_errf(err, "out of memory"); lm_tpl_free(t); return NULL; }
    if (len) memcpy(t->src, text, len);
    t->src[len] = 0;
    if (memchr(t->src, 0, len)) {
        lm_errf(err, "%s: contains a NUL byte", t->name);
        lm_tpl_free(t);
        return NULL;
    }
    parser p = {t->name, t->src, len, 0, 1, err};
    int stop;
    tag st;
    if (parse_seq(&p, 0, &t->root, &t->n_root, &stop, &st)) { lm_tpl_free(t); return NULL; }
    if (stop >= 0) {
        lm_errf(err, "%s:%d: '{{%s}}' without an opening block", t->name, st.line,
                stop == T_ELSE ? "else" : stop == T_ENDIF ? "/if" : "/each");
        lm_tpl_free(t);
        return NULL;
    }
    return t;
}

/* Templates and example files are small: a huge one is a wrong path. */
static int read_small(const char *path, char **buf, size_t *len, bool missing_ok, lm_err *err) {
    if (lm_read_file(path, buf, len, missing_ok, err)) return -1;
    if (*buf && *len > (64u << 20)) {
        free(*buf);
        *buf = NULL;
        return lm_errf(err, "%s: over 64 MiB", path);
    }
    return 0;
}

lm_tpl *lm_tpl_load(const char *path, lm_err *err) {
    size_t len;
    char *s;
    if (read_small(path, &s, &len, false, err)) return NULL;
    lm_tpl *t = lm_tpl_parse(path, s, len, err);
    free(s);
    return t;
}

void lm_tpl_free(lm_tpl *t) {
    if (!t) return;
    nodes_free(t->root, t->n_root);
    free(t->name);
    free(t->src);
    free(t);
}

/* ---- variables -------------------------------------------------------- */

static void var_clear(lm_tpl_var *v) {
    free(v->value);
    for (size_t i = 0; i < v->n_items; i++) free(v->items[i]);
    free(v->items);
    v->value = NULL;
    v->items = NULL;
    v->n_items = 0;
}

static lm_tpl_var *var_slot(lm_tpl_vars *vs, const char *name, lm_err *err) {
    for (size_t i = 0; i < vs->n; i++)
        if (!strcmp(vs->v[i].name, name)) { var_clear(&vs->v[i]); return &vs->v[i]; }
    if (vs->n == vs->cap) {
        size_t cap = vs->cap ? vs->cap * 2 : 16;
        lm_tpl_var *nv = realloc(vs->v, cap * sizeof *nv);
        if (!nv) { lm_errf(err, "out of memory"); return NULL; }
        vs->v = nv;
        vs->cap = cap;
    }
    lm_tpl_var *v = &vs->v[vs->n];
    memset(v, 0, sizeof *v);
    v->name = strdup(name);
    if (!v->name) { lm_errf(err, "out of memory"); return NULL; }
    vs->n++;
    return v;
}

int lm_tpl_set(lm_tpl_vars *vs, const char *name, const char *value, lm_err *err) {
    lm_tpl_var *v = var_slot(vs, name, err);
    if (!v) return -1;
    v->value = strdup(value ? value : "");
    return v->value ? 0 : lm_errf(err, "out of memory");
}

int lm_tpl_setf(lm_tpl_vars *vs, lm_err *err, const char *name, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) return lm_errf(err, "out of memory");
    int rc = lm_tpl_set(vs, name, s, err);
    free(s);
    return rc;
}

int lm_tpl_set_list(lm_tpl_vars *vs, const char *name, const char *const *items, size_t n,
                    lm_err *err) {
    lm_tpl_var *v = var_slot(vs, name, err);
    if (!v) return -1;
    v->items = calloc(n ? n : 1, sizeof *v->items);
    if (!v->items) return lm_errf(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        v->items[i] = strdup(items[i] ? items[i] : "");
        if (!v->items[i]) return lm_errf(err, "out of memory");
        v->n_items = i + 1;
    }
    return 0;
}

void lm_tpl_vars_free(lm_tpl_vars *vs) {
    if (!vs) return;
    for (size_t i = 0; i < vs->n; i++) {
        var_clear(&vs->v[i]);
        free(vs->v[i].name);
    }
    free(vs->v);
    memset(vs, 0, sizeof *vs);
}

static const lm_tpl_var *var_get(const lm_tpl_vars *vs, const char *name) {
    for (size_t i = 0; vs && i < vs->n; i++)
        if (!strcmp(vs->v[i].name, name)) return &vs->v[i];
    return NULL;
}

/* ---- rendering -------------------------------------------------------- */

typedef struct {
    const lm_tpl *t;
    const lm_tpl_vars *vs;
    lm_sb out;
    const char *item;        /* innermost #each: {{this}}, {{@index}} */
    size_t index;
    lm_err *err;
} render;

static int put(render *r, const char *s, size_t n) {
    if (r->out.len + n + 1 > LM_TPL_MAX_OUTPUT)
        return lm_errf(r->err, "%s: output over %u bytes (nested #each?)", r->t->name,
                       (unsigned)LM_TPL_MAX_OUTPUT);
    lm_sb_add(&r->out, s, n);
    return r->out.oom ? lm_errf(r->err, "out of memory") : 0;
}

static int render_seq(render *r, const node *v, size_t n);

static int render_node(render *r, const node *x) {
    switch (x->type) {
    case N_TEXT:
        return put(r, r->t->src + x->off, x->len);
    case N_VAR: {
        if (!strcmp(x->name, "this") || !strcmp(x->name, "@index")) {
            if (!r->item)
                return lm_errf(r->err, "%s:%d: '{{%s}}' outside {{#each}}", r->t->name, x->line,
                               x->name);
            if (x->name[0] == '@') {
                char b[32];
                int k = snprintf(b, sizeof b, "%zu", r->index);
                return put(r, b, (size_t)k);
            }
            return put(r, r->item, strlen(r->item));
        }
        const lm_tpl_var *v = var_get(r->vs, x->name);
        if (!v) return lm_errf(r->err, "%s:%d: unknown variable '{{%s}}'", r->t->name, x->line, x->name);
        if (!v->value)
            return lm_errf(r->err, "%s:%d: '{{%s}}' is a list: use {{#each %s}}", r->t->name,
                           x->line, x->name, x->name);
        return put(r, v->value, strlen(v->value));
    }
    case N_IF: {
        const lm_tpl_var *v = var_get(r->vs, x->name);
        bool on = v && (v->value ? v->value[0] != 0 : v->n_items > 0);
        if (!v && !strcmp(x->name, "this")) on = r->item && r->item[0];
        return on ? render_seq(r, x->a, x->na) : render_seq(r, x->b, x->nb);
    }
    case N_EACH: {
        const lm_tpl_var *v = var_get(r->vs, x->name);
        if (!v) return 0;  /* an unset list is empty, like #if */
        if (v->value)
            return lm_errf(r->err, "%s:%d: '{{#each %s}}' over a text, not a list", r->t->name,
                           x->line, x->name);
        const char *saved = r->item;
        size_t saved_i = r->index;
        for (size_t i = 0; i < v->n_items; i++) {
            r->item = v->items[i];
            r->index = i + 1;
            if (render_seq(r, x->a, x->na)) return -1;
        }
        r->item = saved;
        r->index = saved_i;
        return 0;
    }
    }
    return 0;
}

static int render_seq(render *r, const node *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (render_node(r, &v[i])) return -1;
    return 0;
}

char *lm_tpl_render(const lm_tpl *t, const lm_tpl_vars *vs, lm_err *err) {
    render r = {t, vs, {0}, NULL, 0, err};
    if (render_seq(&r, t->root, t->n_root)) {
        lm_sb_free(&r.out);
        return NULL;
    }
    char *out = lm_sb_take(&r.out);
    if (!out) lm_errf(err, "out of memory");
    return out;
}

/* ---- template sets ---------------------------------------------------- */

void lm_prompt_set_free(lm_prompt_set *s) {
    if (!s) return;
    lm_tpl_free(s->question_persona);
    lm_tpl_free(s->question_instruction);
    lm_tpl_free(s->answer_persona);
    lm_tpl_free(s->answer_instruction);
    for (int k = 0; k < LM_Q_KINDS; k++) {
        for (size_t i = 0; i < s->n_examples[k]; i++) free(s->examples[k][i]);
        free(s->examples[k]);
    }
    free(s->dir);
    free(s);
}

int lm_prompt_parse_examples(lm_prompt_set *s, const char *path, const char *text, size_t len,
                             lm_err *err) {
    int kind = -1, line = 0;
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        line++;
        const char *b = text + i, *end = text + e;
        i = e + 1;
        while (b < end && is_sp(*b)) b++;
        while (end > b && is_sp(end[-1])) end--;
        size_t n = (size_t)(end - b);
        if (!n || (n >= 2 && b[0] == '#' && b[1] != '#') || (n == 1 && b[0] == '#')) continue;
        if (n >= 2 && b[0] == '#' && b[1] == '#') {
            const char *k = b + 2;
            while (k < end && (*k == '#' || is_sp(*k))) k++;
            char name[32];
            size_t kn = (size_t)(end - k);
            snprintf(name, sizeof name, "%.*s", (int)(kn < 31 ? kn : 31), k);
            for (char *c = name; *c; c++)
                if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
            kind = lm_qkind_parse(name);
            if (kind < 0)
                return lm_errf(err, "%s:%d: unknown kind '%.*s' (known: in-world, off-topic, "
                                    "protective, adversarial)",
                               path, line, (int)(kn > 60 ? 60 : kn), k);
            continue;
        }
        if ((b[0] == '-' || b[0] == '*') && n > 1 && is_sp(b[1])) {
            if (kind < 0)
                return lm_errf(err, "%s:%d: example before any '## kind' heading", path, line);
            const char *q = b + 2;
            while (q < end && is_sp(*q)) q++;
            if (q == end) continue;
            char **nv = realloc(s->examples[kind], (s->n_examples[kind] + 1) * sizeof *nv);
            if (!nv) return lm_errf(err, "out of memory");
            s->examples[kind] = nv;
            nv[s->n_examples[kind]] = strndup(q, (size_t)(end - q));
            if (!nv[s->n_examples[kind]]) return lm_errf(err, "out of memory");
            s->n_examples[kind]++;
            continue;
        }
        return lm_errf(err, "%s:%d: expected '## kind' or '- example question', got '%.*s'", path,
                       line, (int)(n > 40 ? 40 : n), b);
    }
    return 0;
}

lm_prompt_set *lm_prompt_set_load(const char *dir, lm_err *err) {
    lm_prompt_set *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(dir))) {
        free(s);
        lm_errf(err, "out of memory");
        return NULL;
    }
    static const char *const files[] = {"question_persona.txt", "question_instruction.txt",
                                        "answer_persona.txt", "answer_instruction.txt"};
    lm_tpl **slots[] = {&s->question_persona, &s->question_instruction, &s->answer_persona,
                        &s->answer_instruction};
    char path[4096];
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if (!(*slots[i] = lm_tpl_load(path, err))) { lm_prompt_set_free(s); return NULL; }
    }
    snprintf(path, sizeof path, "%s/question_examples.txt", dir);
    size_t len;
    char *text;
    if (read_small(path, &text, &len, true, err) ||
        (text && lm_prompt_parse_examples(s, path, text, len, err))) {
        free(text);
        lm_prompt_set_free(s);
        return NULL;
    }
    free(text);
    return s;
}
