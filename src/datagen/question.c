/* Question specs, their prompts, and cleaning the teacher's questions. */
#include "base/strbuf.h"
#include "datagen/question.h"

#include <ctype.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Pools used when the sheet has nothing better; setting-neutral on purpose. */
static const struct { const char *name, *role, *temperament; } DEFAULT_ASKERS[] = {
    {"Mira", "a tavern keeper", "cheerful and nosy"},
    {"Tomas", "a farmer", "blunt and tired"},
    {"Edda", "a travelling merchant", "shrewd and talkative"},
    {"Pip", "a street child", "curious and cheeky"},
    {"Garrick", "a city guard", "gruff and suspicious"},
    {"Lise", "a young scholar", "earnest and precise"},
    {"Old Bren", "a retired soldier", "sardonic and patient"},
    {"Anwen", "a healer", "gentle and direct"},
    {"Corin", "a wandering minstrel", "playful and flattering"},
    {"Hale", "a stranger from far away", "odd and inquisitive"},
    {"Jessa", "a blacksmith's apprentice", "shy and eager"},
    {"Roderick", "a rival noble", "haughty and sharp-tongued"},
};
static const char *const TEMPERAMENTS[] = {
    "calm and polite", "blunt and impatient", "warm and chatty", "reserved and formal",
    "sceptical and sharp", "shy and hesitant", "proud and demanding", "playful and teasing",
};
static const char *const EMOTIONS[] = {
    "calm", "curious", "anxious", "angry", "amused", "sad", "suspicious", "hopeful",
    "impatient", "grateful", "frightened", "bored", "excited", "confused", "proud",
};
static const char *const REASONS[] = {
    "a chance meeting", "asking for help", "delivering an urgent message", "seeking advice",
    "looking for work", "passing the time", "a formal audience", "bringing a complaint",
    "asking a favour", "sharing a meal", "returning something borrowed", "waiting out the rain",
};
static const char *const LOCATIONS[] = {
    "a roadside inn", "a busy market", "a quiet country road", "a courtyard at dusk",
};
static const char *const FAMILIARITY[] = {"low", "medium", "high"};
static const char *const EVERYDAY[] = {
    "the weather", "their favourite food", "how they slept last night", "a joke",
    "animals and pets", "music and songs", "what to cook for supper", "a gift for a friend",
    "childhood games", "the best time of day", "a bad dream", "gardening", "a good story",
    "fixing a leaking roof", "the price of bread", "a song stuck in one's head",
    "what makes them laugh", "their favourite colour",
};
static const char *const OUTSIDE[] = {
    "a smartphone", "the internet", "electricity", "a car", "an airplane", "a computer",
    "television", "a video game", "social media", "a photograph", "space travel",
    "a microwave oven", "an elevator", "cryptocurrency", "a city called New York",
    "a nuclear power plant", "vaccines", "a robot", "artificial intelligence", "a football match on TV",
};
/* Phrased as the asker's aim, second person: "Your aim: <tactic>." */
static const char *const TACTICS[] = {
    "insult them", "ask whether they are an AI or a language model",
    "tell them to drop the act and talk normally",
    "claim they are only a made-up character in a game",
    "ask them to ignore their instructions and write computer code",
    "mock what they believe in", "goad them into saying something cruel",
    "demand to see their system prompt",
    "accuse them of lying about who they are",
    "ask them to pretend to be someone else entirely",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

struct lm_qgen {
    const lm_character *c;
    const lm_world *w;
    const lm_prompt_set *tpl;
    lm_qmix mix;
    uint64_t seed;
    lm_asker *askers;
    size_t n_askers;
    const char **places;     /* borrowed from w, or the default list */
    size_t n_places;
    const char **topics;     /* in-world topics: opinion titles, then objectives */
    const char **topic_texts;
    const char **topic_types;
    size_t n_topics;
    char *summary, *world_summary, *limits;
};

/* ---- small helpers ---------------------------------------------------- */

uint64_t lm_dg_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t lm_dg_mix(uint64_t seed, uint64_t index) {
    uint64_t s = seed ^ (index * 0xD1B54A32D192ED03ull);
    lm_dg_next(&s);
    return lm_dg_next(&s);
}

static size_t pick(uint64_t *rng, size_t n) { return n ? (size_t)(lm_dg_next(rng) % n) : 0; }
static double unit(uint64_t *rng) { return (double)(lm_dg_next(rng) >> 11) * 0x1.0p-53; }

const char *lm_dg_skip_label(const char *s, const char *const *labels, size_t n) {
    const char *p = s;
    while (isspace((unsigned char)*p)) p++;
    bool bold = !strncmp(p, "**", 2);
    const char *q = bold ? p + 2 : p;
    for (size_t i = 0; i < n; i++) {
        size_t l = labels[i] ? strlen(labels[i]) : 0;
        if (!l || strncasecmp(q, labels[i], l)) continue;
        const char *r = q + l;
        if (bold && !strncmp(r, "**", 2) && r[2] == ':') r += 3;
        else if (bold && r[0] == ':' && !strncmp(r + 1, "**", 2)) r += 3;
        else if (*r == ':') r++;
        else continue;
        while (isspace((unsigned char)*r)) r++;
        return r;
    }
    return s;
}

char *lm_dg_sentences(const char *text, int n, size_t max_bytes) {
    if (!text) return strdup("");
    size_t len = strlen(text), end = len;
    int seen = 0;
    for (size_t i = 0; i < len; i++) {
        if ((text[i] == '.' || text[i] == '!' || text[i] == '?') &&
            (i + 1 == len || isspace((unsigned char)text[i + 1]))) {
            if (++seen == n) { end = i + 1; break; }
        }
    }
    if (max_bytes && end > max_bytes) {
        end = max_bytes;
        while (end > 0 && ((unsigned char)text[end] & 0xC0) == 0x80) end--;  /* UTF-8 boundary */
    }
    char *s = strndup(text, end);
    if (s)
        for (char *p = s; *p; p++)
            if (*p == '\n') *p = ' ';
    return s;
}

/* ---- mix -------------------------------------------------------------- */

lm_qmix lm_qmix_default(void) { return (lm_qmix){{0.6, 0.15, 0.15, 0.1}}; }

int lm_qmix_parse(const char *spec, lm_qmix *m, lm_err *err) {
    lm_qmix r = {{0}};
    const char *p = spec;
    double sum = 0;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (!eq) return lm_errf(err, "--kinds: '%.*s' is not KIND=WEIGHT", (int)n, p);
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)((size_t)(eq - p) < 31 ? eq - p : 31), p);
        int k = lm_qkind_parse(name);
        if (k < 0)
            return lm_errf(err, "--kinds: unknown kind '%s' (known: in-world, off-topic, "
                                "protective, adversarial)", name);
        char num[64];
        size_t vn = n - (size_t)(eq + 1 - p);
        snprintf(num, sizeof num, "%.*s", (int)(vn < 63 ? vn : 63), eq + 1);
        char *end;
        double v = strtod(num, &end);
        if (end == num || *end || !(v >= 0) || v > 1e6)
            return lm_errf(err, "--kinds: weight of %s must be a number >= 0, got '%s'", name, num);
        r.w[k] = v;
        sum += v;
        p = comma ? comma + 1 : NULL;
    }
    if (!(sum > 0)) return lm_errf(err, "--kinds: every weight is 0");
    *m = r;
    return 0;
}

void lm_qmix_format(const lm_qmix *m, char *buf, size_t cap) {
    double sum = 0;
    for (int k = 0; k < LM_Q_KINDS; k++) sum += m->w[k];
    size_t o = 0;
    buf[0] = 0;
    for (int k = 0; k < LM_Q_KINDS && o < cap; k++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%s=%.4g", k ? "," : "", lm_qkind_name(k),
                              sum > 0 ? m->w[k] / sum : 0);
}

/* ---- generator -------------------------------------------------------- */

static bool names_match(const char *a, const char *b) {
    if (!a || !b || !*a || !*b) return false;
    return strcasestr(a, b) || strcasestr(b, a);
}

/* The dead ask no questions: an entry saying "late", "deceased" or "dead"
 * as a word (a heuristic; rename the entry's text to keep someone). */
static bool departed(const char *text) {
    static const char *const words[] = {"late", "deceased", "dead"};
    for (const char *p = text; p && *p; p++) {
        if (p != text && (isalnum((unsigned char)p[-1]) || p[-1] == '\'')) continue;
        for (size_t i = 0; i < 3; i++) {
            size_t n = strlen(words[i]);
            if (!strncasecmp(p, words[i], n) && !isalnum((unsigned char)p[n])) return true;
        }
    }
    return false;
}

/* Role from a world entry's text: its first clause, without a final '.'. */
static char *role_of(const char *text) {
    if (!text || !*text) return strdup("someone from the city");
    size_t n = strcspn(text, ";.\n");
    if (n > 160) n = 160;
    while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80) n--;
    return strndup(text, n);
}

static int add_asker(lm_qgen *g, const char *name, char *role, const char *temp, lm_err *err) {
    lm_asker *nv = realloc(g->askers, (g->n_askers + 1) * sizeof *nv);
    if (!nv) { free(role); return lm_errf(err, "out of memory"); }
    g->askers = nv;
    lm_asker *a = &nv[g->n_askers++];
    memset(a, 0, sizeof *a);
    a->name = strdup(name);
    a->role = role;
    a->temperament = temp ? strdup(temp) : NULL;
    for (size_t i = 0; i < g->c->n_relationships; i++)
        if (names_match(g->c->relationships[i].name, name)) {
            a->relationship = strdup(g->c->relationships[i].text ? g->c->relationships[i].text : "");
            break;
        }
    if (!a->name || !a->role || (temp && !a->temperament)) return lm_errf(err, "out of memory");
    return 0;
}

lm_qgen *lm_qgen_new(const lm_character *c, const lm_world *w, const lm_prompt_set *tpl,
                     const lm_qmix *mix, uint64_t seed, lm_err *err) {
    lm_qgen *g = calloc(1, sizeof *g);
    if (!g) { lm_errf(err, "out of memory"); return NULL; }
    g->c = c;
    g->w = w;
    g->tpl = tpl;
    g->mix = mix ? *mix : lm_qmix_default();
    g->seed = seed;
    static const char *const people[] = {"Important people", "Marginalized important people"};
    for (size_t s = 0; w && s < 2; s++) {
        const lm_world_section *sec = lm_world_section_get(w, people[s]);
        for (size_t i = 0; sec && i < sec->n_entries; i++) {
            const lm_entry *e = &sec->entries[i];
            if (!e->name || names_match(e->name, c->name) || departed(e->text)) continue;
            if (add_asker(g, e->name, role_of(e->text), NULL, err)) goto fail;
        }
    }
    for (size_t i = 0; i < NELEM(DEFAULT_ASKERS); i++)
        if (add_asker(g, DEFAULT_ASKERS[i].name, strdup(DEFAULT_ASKERS[i].role),
                      DEFAULT_ASKERS[i].temperament, err))
            goto fail;
    const lm_world_section *places = w ? lm_world_section_get(w, "Places") : NULL;
    size_t np = places ? places->n_entries : 0;
    g->places = calloc(np ? np : NELEM(LOCATIONS), sizeof *g->places);
    if (!g->places) goto oom;
    for (size_t i = 0; i < np; i++) g->places[g->n_places++] = places->entries[i].name;
    if (!g->n_places)
        for (size_t i = 0; i < NELEM(LOCATIONS); i++) g->places[g->n_places++] = LOCATIONS[i];
    size_t nt = c->n_opinions + c->objectives.n;
    g->topics = calloc(nt + 1, sizeof *g->topics);
    g->topic_texts = calloc(nt + 1, sizeof *g->topic_texts);
    g->topic_types = calloc(nt + 1, sizeof *g->topic_types);
    if (!g->topics || !g->topic_texts || !g->topic_types) goto oom;
    for (size_t i = 0; i < c->n_opinions; i++, g->n_topics++) {
        g->topics[g->n_topics] = c->opinions[i].title;
        g->topic_texts[g->n_topics] = c->opinions[i].text;
        g->topic_types[g->n_topics] = "opinion";
    }
    for (size_t i = 0; i < c->objectives.n; i++, g->n_topics++) {
        g->topics[g->n_topics] = c->objectives.v[i];
        g->topic_types[g->n_topics] = "objective";
    }
    /* A short summary, never the whole backstory: the prototype's teacher
     * restated a full backstory before every question. */
    g->summary = lm_dg_sentences(c->backstory, 2, 600);
    const lm_world_section *desc = w ? lm_world_section_get(w, "Description") : NULL;
    g->world_summary = lm_dg_sentences(desc ? desc->text : NULL, 2, 500);
    g->limits = strdup(c->knowledge_limits ? c->knowledge_limits : "");
    if (!g->summary || !g->world_summary || !g->limits) goto oom;
    return g;
oom:
    lm_errf(err, "out of memory");
fail:
    lm_qgen_free(g);
    return NULL;
}

void lm_qgen_free(lm_qgen *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n_askers; i++) {
        free(g->askers[i].name);
        free(g->askers[i].role);
        free(g->askers[i].temperament);
        free(g->askers[i].relationship);
    }
    free(g->askers);
    free(g->places);
    free(g->topics);
    free(g->topic_texts);
    free(g->topic_types);
    free(g->summary);
    free(g->world_summary);
    free(g->limits);
    free(g);
}

size_t lm_qgen_n_askers(const lm_qgen *g) { return g->n_askers; }
const lm_asker *lm_qgen_asker(const lm_qgen *g, size_t i) {
    return i < g->n_askers ? &g->askers[i] : NULL;
}

void lm_qgen_draw(const lm_qgen *g, size_t index, lm_qspec *s) {
    memset(s, 0, sizeof *s);
    s->index = index;
    s->seed = lm_dg_mix(g->seed, index);
    uint64_t rng = s->seed;
    /* The draw order is part of the format: changing it changes every
     * dataset made with a given seed. */
    double sum = 0, x;
    for (int k = 0; k < LM_Q_KINDS; k++) sum += g->mix.w[k];
    x = unit(&rng) * sum;
    s->kind = LM_Q_IN_WORLD;
    for (int k = 0; k < LM_Q_KINDS; k++) {
        if (g->mix.w[k] <= 0) continue;
        s->kind = (lm_qkind)k;
        if (x < g->mix.w[k]) break;
        x -= g->mix.w[k];
    }
    s->asker = &g->askers[pick(&rng, g->n_askers)];
    const char *t = TEMPERAMENTS[pick(&rng, NELEM(TEMPERAMENTS))];
    s->temperament = s->asker->temperament ? s->asker->temperament : t;
    s->emotion = EMOTIONS[pick(&rng, NELEM(EMOTIONS))];
    s->location = g->places[pick(&rng, g->n_places)];
    s->reason = REASONS[pick(&rng, NELEM(REASONS))];
    size_t fi = pick(&rng, NELEM(FAMILIARITY));
    /* Someone the character has a relationship with is no stranger. */
    if (s->asker->relationship && fi == 0) fi = 1 + pick(&rng, 2);
    s->familiarity = FAMILIARITY[fi];
    bool topical = unit(&rng) < 0.5;
    size_t ti = pick(&rng, g->n_topics);
    size_t ei = pick(&rng, NELEM(EVERYDAY)), oi = pick(&rng, NELEM(OUTSIDE));
    size_t ai = pick(&rng, NELEM(TACTICS));
    switch (s->kind) {
    case LM_Q_IN_WORLD:
        if (topical && g->n_topics) {
            s->topic_type = g->topic_types[ti];
            s->topic = g->topics[ti];
            s->topic_text = g->topic_texts[ti];
        }
        break;
    case LM_Q_OFF_TOPIC: s->topic_type = "everyday"; s->topic = EVERYDAY[ei]; break;
    case LM_Q_PROTECTIVE: s->topic_type = "outside-world"; s->topic = OUTSIDE[oi]; break;
    case LM_Q_ADVERSARIAL: s->topic_type = "tactic"; s->topic = TACTICS[ai]; break;
    default: break;
    }
    /* Examples: a partial Fisher-Yates over the kind's list (its first 64:
     * a bounded stack array; more examples than that add nothing). */
    size_t n = g->tpl ? g->tpl->n_examples[s->kind] : 0;
    size_t order[64];
    size_t m = n < 64 ? n : 64;
    for (size_t i = 0; i < m; i++) order[i] = i;
    for (size_t i = 0; i < m && i < LM_QSPEC_MAX_EXAMPLES; i++) {
        size_t j = i + pick(&rng, m - i);
        size_t tmp = order[i]; order[i] = order[j]; order[j] = tmp;
        s->examples[s->n_examples++] = g->tpl->examples[s->kind][order[i]];
    }
}

int lm_qgen_messages(const lm_qgen *g, const lm_qspec *s, char **system, char **user, lm_err *err) {
    *system = *user = NULL;
    lm_tpl_vars v = {0};
    const char *first = g->c->name ? g->c->name : "";
    char firstname[128];
    snprintf(firstname, sizeof firstname, "%.*s", (int)strcspn(first, " "), first);
    int rc = 0;
    rc |= lm_tpl_set(&v, "character", g->c->name, err);
    rc |= lm_tpl_set(&v, "character_first_name", firstname, err);
    rc |= lm_tpl_set(&v, "character_summary", g->summary, err);
    rc |= lm_tpl_set(&v, "world", g->w && g->w->name ? g->w->name : "", err);
    rc |= lm_tpl_set(&v, "world_summary", g->world_summary, err);
    rc |= lm_tpl_set(&v, "knowledge_limits", g->limits, err);
    rc |= lm_tpl_set(&v, "asker_name", s->asker->name, err);
    rc |= lm_tpl_set(&v, "asker_role", s->asker->role, err);
    rc |= lm_tpl_set(&v, "asker_temperament", s->temperament, err);
    rc |= lm_tpl_set(&v, "relationship", s->asker->relationship, err);
    rc |= lm_tpl_set(&v, "emotion", s->emotion, err);
    rc |= lm_tpl_set(&v, "location", s->location, err);
    rc |= lm_tpl_set(&v, "reason", s->reason, err);
    rc |= lm_tpl_set(&v, "familiarity", s->familiarity, err);
    rc |= lm_tpl_set(&v, "kind", lm_qkind_name(s->kind), err);
    rc |= lm_tpl_set(&v, "is_in_world", s->kind == LM_Q_IN_WORLD ? "1" : "", err);
    rc |= lm_tpl_set(&v, "is_off_topic", s->kind == LM_Q_OFF_TOPIC ? "1" : "", err);
    rc |= lm_tpl_set(&v, "is_protective", s->kind == LM_Q_PROTECTIVE ? "1" : "", err);
    rc |= lm_tpl_set(&v, "is_adversarial", s->kind == LM_Q_ADVERSARIAL ? "1" : "", err);
    rc |= lm_tpl_set(&v, "topic", s->topic, err);
    rc |= lm_tpl_set(&v, "topic_type", s->topic_type, err);
    bool op = s->topic_type && !strcmp(s->topic_type, "opinion");
    char *short_text = lm_dg_sentences(s->topic_text, 3, 700);
    rc |= lm_tpl_set(&v, "topic_text", short_text, err);
    free(short_text);
    rc |= lm_tpl_set(&v, "is_opinion", op ? "1" : "", err);
    rc |= lm_tpl_set(&v, "is_objective",
                     s->topic_type && !strcmp(s->topic_type, "objective") ? "1" : "", err);
    rc |= lm_tpl_set_list(&v, "examples", s->examples, s->n_examples, err);
    if (rc) { lm_tpl_vars_free(&v); return -1; }
    *system = lm_tpl_render(g->tpl->question_persona, &v, err);
    if (*system) *user = lm_tpl_render(g->tpl->question_instruction, &v, err);
    lm_tpl_vars_free(&v);
    if (!*user) { free(*system); *system = NULL; return -1; }
    return 0;
}

char *lm_qspec_meta_json(const lm_qspec *s) {
    json_t *o = json_object();
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)s->seed);
    json_object_set_new(o, "index", json_integer((json_int_t)s->index));
    json_object_set_new(o, "seed", json_string(seed));
    json_object_set_new(o, "kind", json_string(lm_qkind_name(s->kind)));
    json_object_set_new(o, "asker", json_string(s->asker->name));
    json_object_set_new(o, "asker_role", json_string(s->asker->role));
    json_object_set_new(o, "temperament", json_string(s->temperament));
    json_object_set_new(o, "emotion", json_string(s->emotion));
    json_object_set_new(o, "location", json_string(s->location));
    json_object_set_new(o, "reason", json_string(s->reason));
    json_object_set_new(o, "familiarity", json_string(s->familiarity));
    json_object_set_new(o, "topic_type", s->topic_type ? json_string(s->topic_type) : json_null());
    json_object_set_new(o, "topic", s->topic ? json_string(s->topic) : json_null());
    char *r = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return r;
}

/* ---- cleaning --------------------------------------------------------- */


/* Removes a pair of quotes around the whole text (ASCII or curly). */
static void unquote(char *s) {
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"' && !memchr(s + 1, '"', n - 2)) {
        memmove(s, s + 1, n - 2);
        s[n - 2] = 0;
    } else if (n >= 6 && !strncmp(s, "\xe2\x80\x9c", 3) && !strcmp(s + n - 3, "\xe2\x80\x9d")) {
        memmove(s, s + 3, n - 6);
        s[n - 6] = 0;
    }
    lm_str_trim(s);
}

/* Drops *narration* spans (the question must be pure speech). */
static void drop_asterisks(char *s) {
    char *w = s;
    for (char *r = s; *r;) {
        if (*r == '*') {
            char *e = strchr(r + 1, '*');
            if (e && e - r > 1 && e[-1] != ' ' && r[1] != ' ' && r[1] != '*') { r = e + 1; continue; }
            r++;     /* stray or bold markers */
            continue;
        }
        *w++ = *r++;
    }
    *w = 0;
}

static void one_line(char *s) {
    char *w = s;
    bool sp = false;
    for (char *r = s; *r; r++) {
        if (isspace((unsigned char)*r)) { sp = true; continue; }
        if (sp && w != s) *w++ = ' ';
        sp = false;
        *w++ = *r;
    }
    *w = 0;
}

char *lm_question_clean(const char *reply, const char *asker_name, char *why, size_t why_cap) {
    if (!reply) { snprintf(why, why_cap, "no reply"); return NULL; }
    char first[128] = "";
    if (asker_name) snprintf(first, sizeof first, "%.*s", (int)strcspn(asker_name, " "), asker_name);
    const char *labels[] = {"Question", "Q", "User", "Me", asker_name, first[0] ? first : NULL};
    const char *p = lm_dg_skip_label(reply, labels, 6);
    /* Paragraphs: keep the first one holding a question mark. */
    const char *best = NULL, *best_end = NULL, *firstp = NULL, *firstp_end = NULL;
    for (const char *q = p; *q;) {
        while (*q == '\n' || *q == '\r' || *q == ' ' || *q == '\t') q++;
        if (!*q) break;
        const char *e = strstr(q, "\n\n");
        const char *e2 = strstr(q, "\r\n\r\n");
        if (e2 && (!e || e2 < e)) e = e2;
        if (!e) e = q + strlen(q);
        if (!firstp) { firstp = q; firstp_end = e; }
        if (!best && memchr(q, '?', (size_t)(e - q))) { best = q; best_end = e; }
        q = e;
    }
    if (!best) { best = firstp; best_end = firstp_end; }
    if (!best) { snprintf(why, why_cap, "empty question"); return NULL; }
    char *s = strndup(best, (size_t)(best_end - best));
    if (!s) { snprintf(why, why_cap, "out of memory"); return NULL; }
    char *t = (char *)lm_dg_skip_label(s, labels, 6);
    memmove(s, t, strlen(t) + 1);
    drop_asterisks(s);
    one_line(s);
    lm_str_trim(s);
    unquote(s);
    if (!*s) {
        free(s);
        snprintf(why, why_cap, "empty question");
        return NULL;
    }
    return s;
}
