#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sheet/parse.h"

void lm_diags_add(lm_diags *d, lm_diag_level level, const char *file, int line,
                  const char *hint, const char *fmt, ...) {
    if (!d) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    size_t len = (size_t)(n > 0 ? n : 0);
    char *msg = malloc(len + 1), *f = strdup(file ? file : ""), *h = hint ? strdup(hint) : NULL;
    lm_diag *g = msg && f && (h || !hint) ? lm_sh_push(&d->v, &d->n, sizeof *g) : NULL;
    if (!g) {
        free(msg);
        free(f);
        free(h);
        d->oom = 1;
        return;
    }
    d->cap = d->n;
    va_start(ap, fmt);
    vsnprintf(msg, len + 1, fmt, ap);
    va_end(ap);
    g->level = level;
    g->file = f;
    g->line = line;
    g->hint = h;
    g->msg = msg;
}

int lm_diags_oom(lm_diags *d, const char *file) {
    lm_diags_add(d, LM_DIAG_ERROR, file, 0, NULL, "out of memory while reading the sheet");
    return -1;
}

size_t lm_diags_count(const lm_diags *d, lm_diag_level level) {
    size_t k = level == LM_DIAG_ERROR && d->oom;
    for (size_t i = 0; i < d->n; i++) k += d->v[i].level == level;
    return k;
}

void lm_diags_sort(lm_diags *d) {
    /* Insertion sort: stable, and reports hold tens of entries. */
    for (size_t i = 1; i < d->n; i++) {
        lm_diag x = d->v[i];
        size_t j = i;
        while (j > 0) {
            int c = strcmp(d->v[j - 1].file, x.file);
            if (c < 0 || (c == 0 && d->v[j - 1].line <= x.line)) break;
            d->v[j] = d->v[j - 1];
            j--;
        }
        d->v[j] = x;
    }
}

void lm_diags_free(lm_diags *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->v[i].file);
        free(d->v[i].msg);
        free(d->v[i].hint);
    }
    free(d->v);
    d->v = NULL;
    d->n = d->cap = 0;
    d->oom = 0;
}
