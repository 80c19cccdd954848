#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sheet/sheet.h"
#include "sheet/util.h"

void lm_diags_add(lm_diags *d, lm_diag_level level, const char *file, int line,
                  const char *hint, const char *fmt, ...) {
    if (!d) return;
    lm_diag *g = lm_sh_push(&d->v, &d->n, sizeof *g);
    d->cap = d->n;
    g->level = level;
    g->file = lm_sh_strdup(file ? file : "");
    g->line = line;
    g->hint = lm_sh_strdup(hint);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    g->msg = lm_sh_alloc((size_t)(n > 0 ? n : 0) + 1);
    va_start(ap, fmt);
    vsnprintf(g->msg, (size_t)(n > 0 ? n : 0) + 1, fmt, ap);
    va_end(ap);
}

size_t lm_diags_count(const lm_diags *d, lm_diag_level level) {
    size_t k = 0;
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
}
