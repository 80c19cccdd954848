#include "sheet/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void *lm_sh_alloc(size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) { fputs("lemonpc: out of memory\n", stderr); abort(); }
    return p;
}

void *lm_sh_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) { fputs("lemonpc: out of memory\n", stderr); abort(); }
    return q;
}

char *lm_sh_strndup(const char *s, size_t n) {
    char *d = lm_sh_alloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *lm_sh_strdup(const char *s) { return s ? lm_sh_strndup(s, strlen(s)) : NULL; }

void *lm_sh_push(void *v, size_t *n, size_t elem) {
    void **pv = v;
    /* Capacity is implied by n: the array is reallocated whenever n reaches
     * a power of two, so it always holds the next power of two >= n. */
    if (*n == 0 || (*n & (*n - 1)) == 0) *pv = lm_sh_realloc(*pv, (*n ? 2 * *n : 1) * elem);
    char *slot = (char *)*pv + *n * elem;
    memset(slot, 0, elem);
    (*n)++;
    return slot;
}

static void sb_grow(lm_shb *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    b->s = lm_sh_realloc(b->s, cap);
    b->cap = cap;
}

void lm_shb_putn(lm_shb *b, const char *s, size_t n) {
    sb_grow(b, n);
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

void lm_shb_puts(lm_shb *b, const char *s) { lm_shb_putn(b, s, strlen(s)); }
void lm_shb_putc(lm_shb *b, char c) { lm_shb_putn(b, &c, 1); }

void lm_shb_printf(lm_shb *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    sb_grow(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

char *lm_shb_take(lm_shb *b) {
    char *s = b->s ? b->s : lm_sh_strdup("");
    b->s = NULL;
    b->n = b->cap = 0;
    return s;
}

int lm_sh_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
    return 1;
}

char *lm_sh_trim(const char *s, size_t n) {
    while (n && (*s == ' ' || *s == '\t')) { s++; n--; }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) n--;
    return lm_sh_strndup(s, n);
}

int lm_sh_casecmp(const char *a, const char *b) {
    for (;; a++, b++) {
        int ca = tolower((unsigned char)*a), cb = tolower((unsigned char)*b);
        if (ca != cb || !ca) return ca - cb;
    }
}

size_t lm_sh_edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return (size_t)-1; /* headings are short */
    size_t row[65];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            int same = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]);
            size_t best = diag + (same ? 0 : 1);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

int lm_sh_read_file(const char *path, size_t max, char **out, size_t *len, char *errbuf,
                    size_t errlen) {
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) { snprintf(errbuf, errlen, "%s: cannot open: %s", path, strerror(errno)); return -1; }
    /* fopen opens a folder, and reading it fails with a bare EISDIR */
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(errbuf, errlen, "%s: is a folder, not a file", path);
        fclose(f);
        return -1;
    }
    lm_shb b = {0};
    char buf[65536];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        if (b.n + got > max) {
            snprintf(errbuf, errlen, "%s: larger than %zu bytes", path, max);
            fclose(f);
            free(b.s);
            return -1;
        }
        lm_shb_putn(&b, buf, got);
    }
    int bad = ferror(f), why = errno;
    fclose(f);
    if (bad) {
        snprintf(errbuf, errlen, "%s: read error: %s", path, strerror(why));
        free(b.s);
        return -1;
    }
    *len = b.n;
    *out = lm_shb_take(&b);
    return 0;
}

int lm_sh_write_atomic(const char *path, const void *data, size_t len, char *errbuf,
                       size_t errlen) {
    size_t pl = strlen(path);
    char *tmp = lm_sh_alloc(pl + 32);
    snprintf(tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(errbuf, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    int ok = fwrite(data, 1, len, f) == len;
    ok = (fflush(f) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(errbuf, errlen, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}
