/* Answer prompts and cleaning the teacher's answers. */
#include "base/strbuf.h"
#include "datagen/answer.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct lm_agen {
    const lm_character *c;
    const lm_world *w;
    const lm_prompt_set *tpl;
    char *persona;
    char **examples;         /* formatted conversations: sheet ones, then promoted */
    size_t n_examples, n_sheet, max_examples, max_bytes;
    char first[128];
};

static char *fmt_conv(const char *name, const lm_turn *t, size_t n, const char *q, const char *a) {
    size_t cap = 64 + (q ? strlen(q) : 0) + (a ? strlen(a) : 0);
    for (size_t i = 0; i < n; i++) cap += strlen(t[i].text ? t[i].text : "") + strlen(name) + 8;
    char *s = malloc(cap), *o = s;
    if (!s) return NULL;
    *o = 0;
    for (size_t i = 0; i < n; i++)
        o += sprintf(o, "%s%s: %s", i ? "\n" : "", t[i].role == LM_ROLE_USER ? "User" : name,
                     t[i].text ? t[i].text : "");
    if (q) sprintf(o, "User: %s\n%s: %s", q, name, a ? a : "");
    return s;
}

lm_agen *lm_agen_new(const lm_character *c, const lm_world *w, const lm_prompt_set *tpl,
                     const lm_style_example *promoted, size_t n_promoted, size_t max_examples,
                     size_t max_bytes, lm_err *err) {
    lm_agen *g = calloc(1, sizeof *g);
    if (!g) { lm_errf(err, "out of memory"); return NULL; }
    g->c = c;
    g->w = w;
    g->tpl = tpl;
    g->max_examples = max_examples ? max_examples : 8;
    g->max_bytes = max_bytes;
    const char *name = c->name ? c->name : "Character";
    snprintf(g->first, sizeof g->first, "%.*s", (int)strcspn(name, " "), name);
    lm_persona_opts po = {max_bytes / 2, 1, 0, NULL};
    g->persona = lm_persona_prompt(c, w, &po, err);
    if (!g->persona) { lm_agen_free(g); return NULL; }
    g->examples = calloc(c->n_examples + n_promoted + 1, sizeof *g->examples);
    if (!g->examples) goto oom;
    for (size_t i = 0; i < c->n_examples; i++) {
        char *s = fmt_conv(g->first, c->examples[i].turns, c->examples[i].n_turns, NULL, NULL);
        if (!s) goto oom;
        g->examples[g->n_examples++] = s;
    }
    g->n_sheet = g->n_examples;
    for (size_t i = 0; i < n_promoted; i++) {
        char *s = fmt_conv(g->first, NULL, 0, promoted[i].question, promoted[i].answer);
        if (!s) goto oom;
        g->examples[g->n_examples++] = s;
    }
    return g;
oom:
    lm_errf(err, "out of memory");
    lm_agen_free(g);
    return NULL;
}

void lm_agen_free(lm_agen *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n_examples; i++) free(g->examples[i]);
    free(g->examples);
    free(g->persona);
    free(g);
}

size_t lm_agen_n_examples(const lm_agen *g) { return g->n_examples; }

/* Renders the system message showing at most `max` style examples. */
static char *render_system(const lm_agen *g, const lm_qspec *s, size_t max, lm_err *err);

char *lm_agen_system(const lm_agen *g, const lm_qspec *s, lm_err *err) {
    /* Fewer examples until the message fits the byte budget (a small
     * teacher's context is 2048 tokens); the persona was capped at half. */
    size_t max = g->max_examples < 256 ? g->max_examples : 256;
    for (;;) {
        char *out = render_system(g, s, max, err);
        if (!out || !g->max_bytes || strlen(out) <= g->max_bytes || max == 0) return out;
        free(out);
        max--;
    }
}

static char *render_system(const lm_agen *g, const lm_qspec *s, size_t max, lm_err *err) {
    /* Style examples: every one when they fit; otherwise the newest promoted
     * ones (up to half) and a seeded draw from the rest, in their order. */
    const char *shown[256];
    size_t n_shown = 0;
    if (g->n_examples <= max) {
        for (size_t i = 0; i < g->n_examples; i++) shown[n_shown++] = g->examples[i];
    } else {
        size_t n_prom = g->n_examples - g->n_sheet, keep = n_prom < max / 2 ? n_prom : max / 2;
        size_t rest = g->n_examples - keep, need = max - keep;
        uint64_t rng = lm_dg_mix(s->seed, 0xA5A5);
        /* Selection sampling keeps the chosen ones in order. */
        for (size_t i = 0; i < rest && need; i++) {
            if (lm_dg_next(&rng) % (rest - i) < need) { shown[n_shown++] = g->examples[i]; need--; }
        }
        for (size_t i = rest; i < g->n_examples; i++) shown[n_shown++] = g->examples[i];
    }
    lm_tpl_vars v = {0};
    int rc = 0;
    rc |= lm_tpl_set(&v, "persona", g->persona, err);
    rc |= lm_tpl_set(&v, "character", g->c->name, err);
    rc |= lm_tpl_set(&v, "character_first_name", g->first, err);
    rc |= lm_tpl_set(&v, "world", g->w && g->w->name ? g->w->name : "", err);
    rc |= lm_tpl_set(&v, "speaking_style", g->c->speaking_style, err);
    rc |= lm_tpl_set(&v, "knowledge_limits", g->c->knowledge_limits, err);
    rc |= lm_tpl_set_list(&v, "catchphrases", (const char *const *)g->c->catchphrases.v,
                          g->c->catchphrases.n, err);
    rc |= lm_tpl_set_list(&v, "examples", shown, n_shown, err);
    rc |= lm_tpl_set(&v, "asker_name", s->asker->name, err);
    rc |= lm_tpl_set(&v, "asker_role", s->asker->role, err);
    rc |= lm_tpl_set(&v, "relationship", s->asker->relationship, err);
    rc |= lm_tpl_set(&v, "emotion", s->emotion, err);
    rc |= lm_tpl_set(&v, "location", s->location, err);
    rc |= lm_tpl_set(&v, "familiarity", s->familiarity, err);
    rc |= lm_tpl_set(&v, "kind", lm_qkind_name(s->kind), err);
    rc |= lm_tpl_set(&v, "is_in_world", s->kind == LM_Q_IN_WORLD ? "1" : "", err);
    rc |= lm_tpl_set(&v, "is_off_topic", s->kind == LM_Q_OFF_TOPIC ? "1" : "", err);
    rc |= lm_tpl_set(&v, "is_protective", s->kind == LM_Q_PROTECTIVE ? "1" : "", err);
    rc |= lm_tpl_set(&v, "is_adversarial", s->kind == LM_Q_ADVERSARIAL ? "1" : "", err);
    rc |= lm_tpl_set(&v, "topic", s->topic, err);
    if (rc) { lm_tpl_vars_free(&v); return NULL; }
    char *a = lm_tpl_render(g->tpl->answer_persona, &v, err);
    char *b = a ? lm_tpl_render(g->tpl->answer_instruction, &v, err) : NULL;
    lm_tpl_vars_free(&v);
    if (!b) { free(a); return NULL; }
    size_t la = strlen(a), lb = strlen(b);
    while (la && isspace((unsigned char)a[la - 1])) la--;
    char *out = malloc(la + lb + 3);
    if (!out) { free(a); free(b); lm_errf(err, "out of memory"); return NULL; }
    memcpy(out, a, la);
    memcpy(out + la, "\n\n", 2);
    memcpy(out + la + 2, b, lb + 1);
    free(a);
    free(b);
    return out;
}


/* A line that opens with "Label:" for another speaker. */
static bool other_speaker(const char *line, const char *const *labels, size_t n) {
    return lm_dg_skip_label(line, labels, n) != line;
}

char *lm_answer_clean(const char *reply, const char *character, const char *asker,
                      char *why, size_t why_cap) {
    if (!reply) { snprintf(why, why_cap, "no reply"); return NULL; }
    char cf[128] = "", af[128] = "";
    if (character) snprintf(cf, sizeof cf, "%.*s", (int)strcspn(character, " "), character);
    if (asker) snprintf(af, sizeof af, "%.*s", (int)strcspn(asker, " "), asker);
    const char *self[] = {"Answer", character, cf[0] ? cf : NULL, "Character", "{{char}}"};
    const char *others[] = {"User", "{{user}}", "Player", asker, af[0] ? af : NULL};
    const char *p = lm_dg_skip_label(reply, self, 5);
    char *s = strdup(p);
    if (!s) { snprintf(why, why_cap, "out of memory"); return NULL; }
    /* Cut where the teacher starts writing the other side of the dialogue. */
    for (char *l = s; l && *l;) {
        if (l != s && other_speaker(l, others, 5)) { *l = 0; break; }
        if (l != s && lm_dg_skip_label(l, self, 5) != l) {  /* "Orlando:" again: a new turn */
            *l = 0;
            break;
        }
        l = strchr(l, '\n');
        if (l) l++;
    }
    lm_str_trim(s);
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"' && !memchr(s + 1, '"', n - 2)) {
        memmove(s, s + 1, n - 2);
        s[n - 2] = 0;
        lm_str_trim(s);
    }
    if (!*s) {
        free(s);
        snprintf(why, why_cap, "empty answer");
        return NULL;
    }
    return s;
}
