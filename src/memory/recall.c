#include "memory/recall.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/strbuf.h"

void lm_recall_when(double h, char *buf, size_t cap) {
    if (h < 1) snprintf(buf, cap, "just now");
    else if (h < 2) snprintf(buf, cap, "an hour ago");
    else if (h < 20) snprintf(buf, cap, "%d hours ago", (int)h);
    else if (h < 40) snprintf(buf, cap, "yesterday");
    else if (h < 24 * 14) snprintf(buf, cap, "%d days ago", (int)lround(h / 24));
    else if (h < 24 * 60) snprintf(buf, cap, "%d weeks ago", (int)lround(h / (24 * 7)));
    else snprintf(buf, cap, "long ago");
}

static bool word_char(char c) { return isalnum((unsigned char)c) || (unsigned char)c >= 0x80; }

/* Key found in any of the texts, case-insensitively (ASCII) and as whole
 * words: "inn" is not in "beginning". */
static bool mentioned(const char *key, const char *const *scan, size_t n) {
    size_t k = strlen(key);
    while (k && isspace((unsigned char)key[k - 1])) k--;
    while (k && isspace((unsigned char)*key)) key++, k--;
    if (k == 0) return false;
    for (size_t i = 0; i < n; i++) {
        if (!scan[i]) continue;
        for (const char *p = scan[i]; *p; p++) {
            if (p > scan[i] && word_char(p[-1]) && word_char(key[0])) continue;
            size_t j = 0;
            while (j < k && p[j] && tolower((unsigned char)p[j]) == tolower((unsigned char)key[j]))
                j++;
            if (j == k && !(word_char(key[k - 1]) && word_char(p[k]))) return true;
        }
    }
    return false;
}

typedef struct active {
    const lm_lore_entry *e;
    double order;
    size_t seq;
} active;

static int by_order(const void *a, const void *b) {
    const active *x = a, *y = b;
    if (x->order != y->order) return x->order < y->order ? -1 : 1;
    return x->seq < y->seq ? -1 : 1;
}

static int count_tokens(const lm_tokenizer *t, const char *s, lm_err *err) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (lm_tokenize(t, s, strlen(s), false, &ids, &n, err)) return -1;
    free(ids);
    return (int)n;
}

typedef struct packer {
    const lm_tokenizer *t;
    lm_sb b;
    int used, budget;
    const char *heading;     /* written before the first line under it */
    bool headed;
} packer;

/* Adds "- line\n" (and the pending heading) if it fits the budget. */
static int pack(packer *p, const char *line, lm_err *err) {
    lm_sb add = {0};
    if (!p->headed) lm_sb_printf(&add, "%s\n", p->heading);
    lm_sb_printf(&add, "- %s\n", line);
    char *s = lm_sb_take(&add);
    if (!s) return lm_errf(err, "out of memory");
    int k = count_tokens(p->t, s, err);
    if (k < 0) { free(s); return -1; }
    if (p->used + k <= p->budget) {
        lm_sb_str(&p->b, s);
        p->used += k;
        p->headed = true;
    }
    free(s);
    return p->b.oom ? lm_errf(err, "out of memory") : 0;
}

typedef struct mem_job {
    packer *p;
    const lm_recall *r;
    double now;
    lm_err *err;
    int rc;
} mem_job;

static int put_memory(void *ud, const lm_memory *m, double score) {
    (void)score;
    mem_job *j = ud;
    for (size_t i = 0; i < j->r->n_skip; i++)
        if (!strcmp(m->text, j->r->skip[i])) return 0;
    char when[32], line[2048];
    lm_recall_when(j->now - m->time, when, sizeof when);
    switch (m->kind) {
    case LM_MEM_SAID:
        snprintf(line, sizeof line, "%s told you %s: \"%s\"", m->player ? m->player : "Someone",
                 when, m->text);
        break;
    case LM_MEM_FACT:
        if (m->player) snprintf(line, sizeof line, "About %s: %s", m->player, m->text);
        else snprintf(line, sizeof line, "%s", m->text);
        break;
    default:
        if (m->witnessed)
            snprintf(line, sizeof line, "You saw it %s%s%s: %s", when, m->place ? " at " : "",
                     m->place ? m->place : "", m->text);
        else
            snprintf(line, sizeof line, "You heard %s: %s", when, m->text);
    }
    if (pack(j->p, line, j->err)) { j->rc = -1; return 1; }
    return 0;
}

int lm_recall_block(const lm_recall *r, const lm_tokenizer *t, const char *const *scan,
                    size_t n_scan, const char *query, char **out, int *n_tokens, lm_err *err) {
    *out = NULL;
    *n_tokens = 0;
    packer p = {.t = t, .budget = r->budget, .heading = LM_RECALL_HEADING};
    if (r->budget <= 0) return 0;
    /* the writer's lore the conversation calls up, in insertion order */
    size_t n_all = 0;
    for (int l = 0; l < 2; l++) n_all += r->lore[l] ? r->lore[l]->n : 0;
    active *act = calloc(n_all ? n_all : 1, sizeof *act);
    if (!act) return lm_errf(err, "out of memory");
    size_t n_act = 0, seq = 0;
    for (int l = 0; l < 2; l++) {
        for (size_t i = 0; r->lore[l] && i < r->lore[l]->n; i++, seq++) {
            const lm_lore_entry *e = &r->lore[l]->v[i];
            if (e->enabled == 0 || !e->content || !e->content[0]) continue;
            bool on = e->constant == 1;
            for (size_t k = 0; !on && k < e->n_keys; k++) on = mentioned(e->keys[k], scan, n_scan);
            if (on && e->constant != 1 && e->selective == 1 && e->n_secondary_keys > 0) {
                bool second = false;
                for (size_t k = 0; !second && k < e->n_secondary_keys; k++)
                    second = mentioned(e->secondary_keys[k], scan, n_scan);
                on = second;
            }
            if (on)
                act[n_act++] = (active){e, e->has_insertion_order ? e->insertion_order : 1e9, seq};
        }
    }
    qsort(act, n_act, sizeof *act, by_order);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n_act; i++) rc = pack(&p, act[i].e->content, err);
    free(act);
    /* then what the NPC remembers that fits the line best */
    if (rc == 0 && r->db && r->npc) {
        p.heading = "Things you remember:";
        p.headed = false;
        mem_job j = {&p, r, lm_memdb_time(r->db), err, 0};
        rc = lm_memdb_recall(r->db, r->npc, query, r->max_memories, put_memory, &j, err);
        if (rc == 0) rc = j.rc;
    }
    if (rc == 0 && p.b.len) {
        p.b.p[--p.b.len] = '\0';   /* no newline after the last line */
        if (!(*out = lm_sb_take(&p.b))) return lm_errf(err, "out of memory");
        *n_tokens = count_tokens(t, *out, err);
        return *n_tokens < 0 ? -1 : 0;
    }
    lm_sb_free(&p.b);
    return rc;
}

int lm_recall_lore(const lm_lore *ch, const lm_lore *w, const lm_tokenizer *t,
                   const char *const *turns, size_t n_turns, const char *line, char **out,
                   lm_err *err) {
    const char *scan[LM_RECALL_SCAN_TURNS + 1];
    size_t ns = 0;
    for (size_t i = n_turns > LM_RECALL_SCAN_TURNS ? n_turns - LM_RECALL_SCAN_TURNS : 0; i < n_turns; i++)
        scan[ns++] = turns[i];
    scan[ns++] = line;
    lm_recall r = {{ch, w}, NULL, NULL, LM_RECALL_LORE_BUDGET, 0, NULL, 0};
    int n_tokens;
    return lm_recall_block(&r, t, scan, ns, line, out, &n_tokens, err);
}
