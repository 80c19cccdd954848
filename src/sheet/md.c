#include "sheet/md.h"

#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"

typedef struct {
    const char *s;
    size_t n;
} span;

/* Heading level (1..6) of a line, or 0; *text gets the heading text. */
static int heading(span l, span *text) {
    size_t i = 0;
    while (i < l.n && l.s[i] == '#') i++;
    if (i == 0 || i > 6) return 0;
    if (i < l.n && l.s[i] != ' ' && l.s[i] != '\t') return 0;
    size_t a = i, b = l.n;
    while (a < b && (l.s[a] == ' ' || l.s[a] == '\t')) a++;
    while (b > a && (l.s[b - 1] == ' ' || l.s[b - 1] == '\t')) b--;
    /* Closing hashes ("## Values ##") are part of CommonMark headings. */
    size_t c = b;
    while (c > a && l.s[c - 1] == '#') c--;
    if (c < b && (c == a || l.s[c - 1] == ' ')) {
        b = c;
        while (b > a && l.s[b - 1] == ' ') b--;
    }
    text->s = l.s + a;
    text->n = b - a;
    return (int)i;
}

/* Joins lines [a, b) trimming blank lines at both ends and unescaping
 * `\#`; *first gets the 1-based line of the first kept line. NULL when
 * out of memory. */
static char *join(const span *lines, int a, int b, int *first) {
    while (a < b && lm_sh_blank(lines[a].s, lines[a].n)) a++;
    while (b > a && lm_sh_blank(lines[b - 1].s, lines[b - 1].n)) b--;
    *first = a + 1;
    lm_sb sb = {0};
    for (int i = a; i < b; i++) {
        span l = lines[i];
        size_t k = 0;
        while (k < l.n && l.s[k] == '\\') k++;
        if (k > 0 && k < l.n && l.s[k] == '#') { l.s++; l.n--; }
        lm_sb_add(&sb, l.s, l.n);
        if (i + 1 < b) lm_sb_add(&sb, "\n", 1);
    }
    return lm_sb_take(&sb);
}

void lm_md_put_body(lm_sb *b, const char *text) {
    const char *p = text;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        size_t k = 0;
        while (k < n && p[k] == '\\') k++;
        if (k < n && p[k] == '#') lm_sb_add(b, "\\", 1);
        lm_sb_add(b, p, n);
        lm_sb_add(b, "\n", 1);
        p += n;
        if (*p) p++;
    }
}

/* Both return -1 when out of memory. */
static int close_sub(lm_md_section *sec, const span *lines, int end) {
    if (!sec || !sec->n_subs) return 0;
    lm_md_sub *s = &sec->subs[sec->n_subs - 1];
    if (s->body) return 0;
    s->body = join(lines, s->line, end, &s->body_line);
    return s->body ? 0 : -1;
}

static int close_sec(lm_md_doc *doc, const span *lines, int end) {
    if (!doc->n_secs) return 0;
    lm_md_section *sec = &doc->secs[doc->n_secs - 1];
    if (sec->body) return 0;
    if (close_sub(sec, lines, end)) return -1;
    sec->body = join(lines, sec->line, end, &sec->body_line);
    int intro_end = sec->n_subs ? sec->subs[0].line - 1 : end;
    sec->intro = join(lines, sec->line, intro_end, &sec->intro_line);
    return sec->body && sec->intro ? 0 : -1;
}

lm_md_doc *lm_md_parse(const char *file, const char *text, size_t len, lm_diags *d) {
    if (len > LM_SHEET_FILE_MAX) {
        lm_diags_add(d, LM_DIAG_ERROR, file, 0, NULL, "file is %zu bytes, over the %u-byte limit",
                     len, LM_SHEET_FILE_MAX);
        return NULL;
    }
    /* Editors on some systems start UTF-8 files with a byte-order mark. */
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) {
        text += 3;
        len -= 3;
    }
    span *lines = NULL;
    size_t nl = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && text[j] != '\n') j++;
        span *l = lm_sh_push(&lines, &nl, sizeof *l);
        if (!l) {
            free(lines);
            lm_diags_oom(d, file);
            return NULL;
        }
        l->s = text + i;
        l->n = j - i;
        if (l->n && l->s[l->n - 1] == '\r') l->n--;
        i = j + 1;
    }
    lm_md_doc *doc = calloc(1, sizeof *doc);
    if (!doc) {
        free(lines);
        lm_diags_oom(d, file);
        return NULL;
    }
    int i = 0, n = (int)nl;
    for (int k = 0; k < n; k++) {
        size_t bad = lm_utf8_check(lines[k].s, lines[k].n);
        if (bad < lines[k].n)
            lm_diags_add(d, LM_DIAG_ERROR, file, k + 1, "save the file as UTF-8",
                         "invalid UTF-8 byte 0x%02X at column %zu",
                         (unsigned char)lines[k].s[bad], bad + 1);
    }
    if (n > 0 && lines[0].n == 3 && !memcmp(lines[0].s, "---", 3)) {
        int k = 1;
        for (; k < n; k++) {
            span l = lines[k];
            if (l.n == 3 && !memcmp(l.s, "---", 3)) break;
            if (lm_sh_blank(l.s, l.n) || l.s[0] == '#') continue;
            const char *colon = memchr(l.s, ':', l.n);
            if (!colon) {
                lm_diags_add(d, LM_DIAG_ERROR, file, k + 1, "write `key: value`",
                             "front matter line is not `key: value`");
                continue;
            }
            lm_kv *kv = lm_sh_push(&doc->meta, &doc->n_meta, sizeof *kv);
            if (!kv) goto oom;
            kv->key = lm_sh_trim(l.s, (size_t)(colon - l.s));
            kv->value = lm_sh_trim(colon + 1, l.n - (size_t)(colon + 1 - l.s));
            kv->line = k + 1;
            if (!kv->key || !kv->value) goto oom;
        }
        if (k == n)
            lm_diags_add(d, LM_DIAG_ERROR, file, 1, "close it with a `---` line",
                         "front matter is never closed");
        i = k + 1;
    }
    int preamble_warned = 0;
    for (; i < n; i++) {
        span t;
        int lvl = heading(lines[i], &t);
        if (lvl == 0 || lvl > 3) {
            int in_sec = doc->n_secs > 0;
            if (!in_sec && !preamble_warned && !lm_sh_blank(lines[i].s, lines[i].n)) {
                lm_diags_add(d, LM_DIAG_WARNING, file, i + 1,
                             doc->title ? "put it under a `## Section`" : "start with `# Name`",
                             "text outside any section is ignored");
                preamble_warned = 1;
            }
            continue;
        }
        if (t.n == 0) {
            lm_diags_add(d, LM_DIAG_ERROR, file, i + 1, "write the heading's text after the #",
                         "empty heading");
            continue;
        }
        if (lvl == 1) {
            if (doc->title) {
                lm_diags_add(d, LM_DIAG_ERROR, file, i + 1, "a sheet describes one character or world",
                             "second `#` title (first at line %d)", doc->title_line);
                continue;
            }
            if (close_sec(doc, lines, i)) goto oom;
            doc->title = strndup(t.s, t.n);
            doc->title_line = i + 1;
            if (!doc->title) goto oom;
        } else if (lvl == 2) {
            if (close_sec(doc, lines, i)) goto oom;
            lm_md_section *s = lm_sh_push(&doc->secs, &doc->n_secs, sizeof *s);
            if (!s) goto oom;
            s->title = strndup(t.s, t.n);
            s->line = i + 1;
            if (!s->title) goto oom;
        } else {
            if (!doc->n_secs) {
                lm_diags_add(d, LM_DIAG_WARNING, file, i + 1, "put it under a `## Section`",
                             "subsection outside any section is ignored");
                continue;
            }
            lm_md_section *s = &doc->secs[doc->n_secs - 1];
            if (close_sub(s, lines, i)) goto oom;
            lm_md_sub *sub = lm_sh_push(&s->subs, &s->n_subs, sizeof *sub);
            if (!sub) goto oom;
            sub->title = strndup(t.s, t.n);
            sub->line = i + 1;
            if (!sub->title) goto oom;
        }
    }
    if (close_sec(doc, lines, n)) goto oom;
    free(lines);
    return doc;
oom:
    free(lines);
    lm_md_free(doc);
    lm_diags_oom(d, file);
    return NULL;
}

void lm_md_free(lm_md_doc *doc) {
    if (!doc) return;
    for (size_t i = 0; i < doc->n_meta; i++) {
        free(doc->meta[i].key);
        free(doc->meta[i].value);
    }
    free(doc->meta);
    free(doc->title);
    for (size_t i = 0; i < doc->n_secs; i++) {
        lm_md_section *s = &doc->secs[i];
        free(s->title);
        free(s->body);
        free(s->intro);
        for (size_t j = 0; j < s->n_subs; j++) {
            free(s->subs[j].title);
            free(s->subs[j].body);
        }
        free(s->subs);
    }
    free(doc->secs);
    free(doc);
}
