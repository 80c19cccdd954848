#include "sheet/parse.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lm_each_line(const char *text, int first_line, lm_line_fn fn, void *ctx) {
    const char *p = text;
    int line = first_line;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (fn(ctx, p, n, line++)) return -1;
        p += n;
        if (*p) p++;
    }
    return 0;
}

/* *dst + sep + s[0..n) trimmed, in place of *dst: a line that continues
 * the item before it. -1 when out of memory (*dst unchanged). */
static int append_trimmed(char **dst, const char *sep, const char *s, size_t n) {
    char *t = lm_sh_trim(s, n);
    if (!t) return -1;
    size_t pl = strlen(*dst), sl = strlen(sep), tl = strlen(t);
    char *q = realloc(*dst, pl + sl + tl + 1);
    if (!q) { free(t); return -1; }
    memcpy(q + pl, sep, sl);
    memcpy(q + pl + sl, t, tl + 1);
    *dst = q;
    free(t);
    return 0;
}

/* Length of a bullet marker at s (with its space), or 0. */
static size_t bullet(const char *s, size_t n) {
    size_t i = 0;
    while (i < n && i < 3 && s[i] == ' ') i++;
    if (i + 1 < n && (s[i] == '-' || s[i] == '*' || s[i] == '+') && s[i + 1] == ' ')
        return i + 2;
    size_t j = i;
    while (j < n && isdigit((unsigned char)s[j])) j++;
    if (j > i && j + 1 < n && (s[j] == '.' || s[j] == ')') && s[j + 1] == ' ') return j + 2;
    return 0;
}

typedef struct {
    const char *file;
    lm_strlist *out;
    lm_diags *d;
    int warned;
} list_ctx;

static int list_line(void *vc, const char *s, size_t n, int line) {
    list_ctx *c = vc;
    if (lm_sh_blank(s, n)) return 0;
    size_t b = bullet(s, n);
    /* A wrapped bullet: join with a space. */
    if (!b && c->out->n) return append_trimmed(&c->out->v[c->out->n - 1], " ", s, n);
    if (!b && !c->warned) {
        lm_diags_add(c->d, LM_DIAG_WARNING, c->file, line, "start each item with `- `",
                     "expected a bullet list; line taken as one item");
        c->warned = 1;
    }
    char **slot = lm_sh_push(&c->out->v, &c->out->n, sizeof *slot);
    if (!slot) return -1;
    *slot = lm_sh_trim(s + b, n - b);
    return *slot ? 0 : -1;
}

int lm_parse_list(const char *file, const lm_md_section *s, lm_strlist *out, lm_diags *d) {
    list_ctx c = {file, out, d, 0};
    return lm_each_line(s->body, s->body_line, list_line, &c);
}

typedef struct {
    const char *file;
    lm_named **out;
    size_t *n;
    lm_diags *d;
    int require_colon;
} named_ctx;

static int named_line(void *vc, const char *s, size_t n, int line) {
    named_ctx *c = vc;
    if (lm_sh_blank(s, n)) return 0;
    size_t b = bullet(s, n);
    if (!b) {
        if (*c->n) {
            lm_named *prev = &(*c->out)[*c->n - 1];
            return append_trimmed(&prev->text, prev->text[0] ? " " : "", s, n);
        }
        return 0; /* prose around the list is allowed */
    }
    const char *p = s + b, *end = s + n;
    const char *name_a, *name_b, *rest;
    if (end - p >= 4 && p[0] == '*' && p[1] == '*') {
        const char *close = NULL;
        for (const char *q = p + 2; q + 1 < end; q++)
            if (q[0] == '*' && q[1] == '*') { close = q; break; }
        if (!close) goto plain;
        name_a = p + 2;
        name_b = close;
        rest = close + 2;
        if (name_b > name_a && name_b[-1] == ':') name_b--;
        else {
            while (rest < end && *rest == ' ') rest++;
            if (rest < end && (*rest == ':' || *rest == '-')) rest++;
            else if (end - rest >= 3 && !memcmp(rest, "\xe2\x80\x94", 3)) rest += 3; /* em dash */
            else if (c->require_colon) goto bad;
        }
    } else {
    plain:;
        const char *colon = memchr(p, ':', (size_t)(end - p));
        if (!colon) {
            if (c->require_colon) goto bad;
            colon = end;
        }
        name_a = p;
        name_b = colon;
        rest = colon < end ? colon + 1 : end;
    }
    {
        lm_named *e = lm_sh_push(c->out, c->n, sizeof *e);
        if (!e) return -1;
        e->name = lm_sh_trim(name_a, (size_t)(name_b - name_a));
        e->text = lm_sh_trim(rest, (size_t)(end - rest));
        e->line = line;
        if (!e->name || !e->text) return -1;
        if (!e->name[0])
            lm_diags_add(c->d, LM_DIAG_ERROR, c->file, line, "write `- Name: text`",
                         "bullet has an empty name");
        return 0;
    }
bad:
    lm_diags_add(c->d, LM_DIAG_ERROR, c->file, line, "write `- Name: text`",
                 "bullet is not `Name: text`");
    return 0;
}

int lm_parse_named(const char *file, const lm_md_section *s, lm_named **out, size_t *n,
                   int require_colon, lm_diags *d) {
    named_ctx c = {file, out, n, d, require_colon};
    if (lm_each_line(s->intro, s->intro_line, named_line, &c)) return -1;
    for (size_t i = 0; i < s->n_subs; i++) {
        lm_named *e = lm_sh_push(out, n, sizeof *e);
        if (!e) return -1;
        e->name = strdup(s->subs[i].title);
        e->text = strdup(s->subs[i].body);
        e->line = s->subs[i].line;
        if (!e->name || !e->text) return -1;
    }
    return 0;
}

void lm_put_keys(lm_sb *b, char *const *keys, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (i) lm_sb_str(b, ", ");
        for (const char *p = keys[i]; *p; p++) {
            if (*p == ',' || *p == '\\') lm_sb_add(b, "\\", 1);
            lm_sb_add(b, p, 1);
        }
    }
}

int lm_split_keys(const char *s, char ***keys, size_t *n) {
    lm_sb cur = {0};
    const char *p = s;
    for (;;) {
        if (*p == '\\' && p[1]) {
            lm_sb_add(&cur, p + 1, 1);
            p += 2;
            continue;
        }
        if (*p == ',' || !*p) {
            char *raw = lm_sb_take(&cur);
            char *k = raw ? lm_sh_trim(raw, strlen(raw)) : NULL;
            free(raw);
            if (!k) return -1;
            if (!k[0]) {
                free(k);
            } else {
                char **slot = lm_sh_push(keys, n, sizeof *slot);
                if (!slot) { free(k); return -1; }
                *slot = k;
            }
            if (!*p) break;
            p++;
            continue;
        }
        lm_sb_add(&cur, p++, 1);
    }
    return 0;
}

static int parse_bool(const char *v, int *out) {
    if (!lm_sh_casecmp(v, "yes") || !lm_sh_casecmp(v, "true")) { *out = 1; return 0; }
    if (!lm_sh_casecmp(v, "no") || !lm_sh_casecmp(v, "false")) { *out = 0; return 0; }
    return -1;
}

/* Field lines at the top of a lore entry ("Enabled: yes"). Returns 1 if
 * the line was a field, 0 if not, -1 when out of memory. */
static int lore_field(const char *file, lm_lore_entry *e, const char *s, size_t n, int line,
                      lm_diags *d) {
    static const char *const names[] = {"secondary keys", "enabled", "constant", "selective",
                                        "insertion order", "comment", NULL};
    const char *colon = memchr(s, ':', n);
    if (!colon) return 0;
    char *k = lm_sh_trim(s, (size_t)(colon - s));
    if (!k) return -1;
    int which = -1;
    for (int i = 0; names[i]; i++)
        if (!lm_sh_casecmp(k, names[i])) which = i;
    free(k);
    if (which < 0) return 0;
    char *v = lm_sh_trim(colon + 1, n - (size_t)(colon + 1 - s));
    if (!v) return -1;
    int rc = 1;
    int *flag = which == 1 ? &e->enabled : which == 2 ? &e->constant : &e->selective;
    switch (which) {
    case 0:
        if (lm_split_keys(v, &e->secondary_keys, &e->n_secondary_keys)) rc = -1;
        break;
    case 1: case 2: case 3:
        if (parse_bool(v, flag))
            lm_diags_add(d, LM_DIAG_ERROR, file, line, "write yes or no",
                         "lore field has value '%s', not yes/no", v);
        break;
    case 4: {
        char *end;
        e->insertion_order = strtod(v, &end);
        e->has_insertion_order = 1;
        if (end == v || *end)
            lm_diags_add(d, LM_DIAG_ERROR, file, line, "write a number",
                         "insertion order '%s' is not a number", v);
        break;
    }
    case 5:
        free(e->comment); /* a second Comment line wins */
        e->comment = v;
        v = NULL;
        break;
    }
    free(v);
    return rc;
}

int lm_parse_lore(const char *file, const lm_md_section *s, lm_lore *out, lm_diags *d) {
    if (!lm_sh_blank(s->intro, strlen(s->intro)))
        lm_diags_add(d, LM_DIAG_WARNING, file, s->intro_line,
                     "start each entry with `### key, other key`",
                     "text before the first lore entry is ignored");
    for (size_t i = 0; i < s->n_subs; i++) {
        const lm_md_sub *sub = &s->subs[i];
        lm_lore_entry *e = lm_sh_push(&out->v, &out->n, sizeof *e);
        if (!e) return -1;
        e->enabled = e->constant = e->selective = -1;
        e->line = sub->line;
        if (strcmp(sub->title, "(no keys)") && lm_split_keys(sub->title, &e->keys, &e->n_keys))
            return -1;
        const char *p = sub->body;
        int line = sub->body_line;
        while (*p) {
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            int f = lore_field(file, e, p, n, line, d);
            if (f < 0) return -1;
            if (!f) break;
            p += n;
            line++;
            if (*p) p++;
        }
        /* One blank line separates the fields from the content. */
        if (p != sub->body && *p == '\n') p++;
        e->content = strdup(p);
        if (!e->content) return -1;
        if (!e->content[0])
            lm_diags_add(d, LM_DIAG_WARNING, file, sub->line, NULL, "lore entry has no content");
    }
    return 0;
}

void lm_strlist_free(lm_strlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

void lm_lore_free(lm_lore *l) {
    for (size_t i = 0; i < l->n; i++) {
        lm_lore_entry *e = &l->v[i];
        for (size_t k = 0; k < e->n_keys; k++) free(e->keys[k]);
        free(e->keys);
        for (size_t k = 0; k < e->n_secondary_keys; k++) free(e->secondary_keys[k]);
        free(e->secondary_keys);
        free(e->comment);
        free(e->content);
    }
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

void lm_check_length(const char *file, const lm_md_section *s, bool warn, lm_diags *d) {
    size_t n = strlen(s->body);
    if (n > LM_SHEET_FIELD_MAX)
        lm_diags_add(d, LM_DIAG_ERROR, file, s->line, "split it or move detail to the world",
                     "section '%s' is %zu bytes, over the %u-byte limit", s->title, n,
                     LM_SHEET_FIELD_MAX);
    else if (warn && n > LM_SHEET_FIELD_WARN)
        lm_diags_add(d, LM_DIAG_WARNING, file, s->line,
                     "a 135M model's context is 2048 tokens; keep sections short",
                     "section '%s' is long (%zu bytes)", s->title, n);
}

int lm_heading_index(const char *title, const char *const *known, char *hint, size_t hintlen) {
    int best = -1;
    size_t bestd = (size_t)-1;
    for (int i = 0; known[i]; i++)
        if (!lm_sh_casecmp(title, known[i])) return i;
    /* Only unknown headings pay for the edit distances. */
    for (int i = 0; known[i]; i++) {
        size_t dd = lm_sh_edit_distance(title, known[i]);
        if (dd < bestd) { bestd = dd; best = i; }
    }
    size_t tl = strlen(title);
    int off = 0;
    if (best >= 0 && bestd <= 3 && bestd < tl)
        off = snprintf(hint, hintlen, "did you mean '%s'? ", known[best]);
    off += snprintf(hint + off, hintlen - (size_t)off, "known headings:");
    for (int i = 0; known[i] && off > 0 && (size_t)off < hintlen; i++)
        off += snprintf(hint + off, hintlen - (size_t)off, "%s %s", i ? "," : "", known[i]);
    return -1;
}
