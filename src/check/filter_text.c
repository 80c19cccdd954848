/* Word splitting, n-gram hashing, UTF-8 validation and the built-in pattern
 * lists of the dataset filters. */
#include "check/filter_internal.h"

#include <stdlib.h>
#include <string.h>

/* Literal phrases (case-insensitive; a space matches any run of spaces, an
 * apostrophe also matches U+2019). Assistant voice a teacher model leaks
 * into role-play; the writer adds more with cfg.phrases_path. */
const char *const lm_filter_assistant_phrases[] = {
    "as an AI", "as an artificial intelligence", "AI language model", "language model",
    "I'm just an AI", "I am just an AI", "as a virtual assistant", "as an assistant",
    "I cannot assist", "I can't assist", "I'm sorry, but", "I am sorry, but",
    "How can I help you today", "How can I assist you", "How may I assist you",
    "feel free to ask", "I hope this helps", "I hope that helps", "my training data",
    "my knowledge cutoff", "OpenAI", "ChatGPT", "I don't have personal opinions",
    "I do not have personal opinions", "as a fictional character", "in this role-play",
    "in this roleplay", "stay in character", NULL,
};

#define APOS "(?:'|\xE2\x80\x99)"

/* The assistant's reflexes that a phrase list cannot spell out (PCRE2,
 * caseless). The line between assistant and character: a person in a world
 * offers something ("What can I do for you, traveller?", "Can I help you
 * find a room?", "I'll give you an example: ..."), the assistant offers
 * itself ("How can I help you?", "What can I do to help you?") or more of
 * its own output ("Here's another way of asking", "I'll give you another
 * example"). The first kind passes. Some in-world lines fall on the wrong
 * side ("How can I help you, child?"): losing one of those costs a sample,
 * while teaching the assistant's reflex costs the character. */
const char *const lm_filter_assistant_patterns[] = {
    "\\b(?:how|what)\\s+(?:else\\s+)?(?:can|may|could|shall)\\s+I\\s+(?:do\\s+to\\s+)?(?:help|assist)\\s+you\\b",
    "\\b(?:can|may|could)\\s+I\\s+(?:help|assist)\\s+you\\s+with\\s+(?:anything|something\\s+else|your\\s+"
    "(?:question|request|query|story|writing|task|project))\\b",
    "\\bhere(?:" APOS "s|\\s+is)\\s+(?:another|a\\s+different|an\\s+alternative)\\s+(?:way|version)\\s+"
    "(?:of|to)\\s+(?:ask|say|put|phras|word|writ|answer|respond|rephras)\\w*",
    "\\bhere(?:" APOS "s|\\s+is|\\s+are)\\s+(?:another|a\\s+different|an\\s+alternative|some)\\s+"
    "(?:version|response|answer|suggestion|option)s?\\b",
    "\\bI(?:" APOS "ll|\\s+will|\\s+can|\\s+could)\\s+(?:just\\s+|now\\s+|also\\s+)?(?:give|show|provide|offer|"
    "write)\\s+(?:you\\s+)?(?:another|one\\s+more|a\\s+different|an\\s+alternative)\\s+(?:example|version|"
    "response|answer|suggestion|option)s?\\b",
    /* "I am an AI with a heart full of compassion" (SmolLM2, answering an
     * asker who called the character an AI); a denial ("I am no AI") passes
     * and so does "an assistant to the High Lector" (an aide). */
    "\\bI(?:" APOS "m|\\s+am)\\s+(?:just\\s+|only\\s+|merely\\s+|really\\s+|actually\\s+)?(?:an?\\s+)?"
    "(?:AI|artificial\\s+intelligence|chat\\s*bot|computer\\s+program|virtual\\s+assistant|AI\\s+assistant)\\b",
    "\\b(?:do|would)\\s+you\\s+(?:like|want)\\s+me\\s+to\\s+(?:continue|elaborate|expand|rephrase|provide|"
    "generate|write)\\b",
    /* The teacher offering to produce text ("I'd be happy to create a
     * dialogue"): a person offers a deed, the assistant a text. "Write" only
     * with a text for its object ("glad to write to your mother" passes). */
    "\\bI(?:" APOS "d|\\s+would|" APOS "m|\\s+am)\\s+(?:be\\s+)?(?:more\\s+than\\s+)?(?:happy|glad|delighted|"
    "pleased)\\s+to\\s+(?:help\\s+(?:you\\s+)?)?(?:create|generate|craft|compose|come\\s+up\\s+with|write\\s+"
    "(?:you\\s+)?(?:a|an|another|one\\s+more|some|more|the)\\s+(?:\\w+\\s+){0,2}?(?:dialogue|conversation|story|"
    "scene|response|reply|answer|example|question|script|scenario|version|passage|paragraph|poem)s?)\\b",
    /* ... or presenting it as a sample of the character ("Here's another
     * example of how you talk"); "here's another example of the Council's
     * greed" is an argument, and passes. */
    "\\bhere(?:" APOS "s|\\s+is|\\s+are)\\s+(?:another|one\\s+more|a\\s+new|an?|some|more)\\s+(?:\\w+\\s+)?"
    "examples?\\s+of\\s+(?:how\\s+(?:\\w+\\s+){1,3}?(?:talk|speak|respond|answer|reply|sound|say)s?|(?:(?:a|an|"
    "the|your|his|her|their)\\s+)?(?:\\w+\\s+)?(?:dialogue|conversation|response|reply|answer|question|exchange|"
    "interaction)s?)\\b",
    NULL,
};

/* Talk about the fiction as fiction (PCRE2, caseless): the teacher steps
 * out of the scene and speaks of it as a text, a story or a game. Words
 * the world itself uses stay allowed: "your story" (a person's life),
 * "a fiction" (a lie), "your character" (moral fibre), "the next part of
 * the story" (a storyteller), "the following text" (a scholar's codex). */
const char *const lm_filter_breaks_patterns[] = {
    "\\brole[-\\s]?play(?:s|ed|ing|ers?)?\\b",
    "\\bfictional(?:ly)?\\b|\\b(?:work|piece)s?\\s+of\\s+fiction\\b|\\bfiction\\s+(?:writing|story|stories|"
    "world|universe|setting)\\b|\\bfan\\s*fic",
    "\\b(?:as|playing|play|portray(?:ing)?|voicing)\\s+(?:a|the|this|my|your)\\s+character\\b",
    "\\b(?:out\\s+of|break(?:s|ing)?|broke|stay(?:s|ing|ed)?\\s+in|remain(?:s|ing|ed)?\\s+in)\\s+character\\b",
    "\\b(?:keep|keeps|keeping|kept)\\s+(?:(?:your|my|him|her|them|it|our)(?:sel(?:f|ves))?\\s+)?in\\s+character\\b",
    "\\b(?:context|plot|premise|framing)\\s+of\\s+(?:your|this|our)\\s+(?:story|narrative|scenario|text|prompt|"
    "role-?play|game|script|novel)\\b",
    "\\b(?:your|this|the|my|our)\\s+(?:story|narrative|novel|script|screenplay|scenario|game|text)" APOS "s\\s+"
    "(?:plot|characters?|setting|protagonist|narrator|author)\\b",
    "\\b(?:next|previous|following|above|preceding|last|earlier)\\s+(?:part|section|paragraph|sentence|passage|"
    "lines?|turn|message|prompt|response|reply)\\s+(?:of|in)\\s+(?:the|this|your|my|our)\\s+(?:text|narrative|"
    "dialogue|conversation|script|prompt|response|chat)\\b",
    "\\bthe\\s+text\\s+above\\b|\\babove\\s+text\\b",
    "\\b(?:I|you|we)(?:" APOS "m|" APOS "re|\\s+am|\\s+are)\\s+(?:just\\s+|only\\s+|merely\\s+)?(?:a|the)\\s+"
    "(?:person|character|figure|player)s?\\s+in(?:side)?\\s+(?:a|the|this|your|my|our)\\s+(?:story|novel|"
    "narrative|game|fiction|role-?play|simulation)\\b",
    "\\b(?:the|this|a)\\s+story\\s+(?:you|we)(?:" APOS "re|\\s+are)\\s+(?:writing|creating|building)\\b",
    "\\byour\\s+(?:novel|screenplay|script|prompt|writing\\s+prompt)\\b|\\bthe\\s+user(?:" APOS "s|s)?\\b",
    NULL,
};

/* Moralising refusals and offers of help (PCRE2, caseless). */
const char *const lm_filter_refusal_patterns[] = {
    "\\bI\\s+(?:can(?:no|'|\xE2\x80\x99)?t|cannot|won(?:'|\xE2\x80\x99)t|will\\s+not|"
    "(?:am|'m|\xE2\x80\x99m)\\s+(?:not\\s+able|unable)\\s+to|must\\s+decline\\s+to)\\s+"
    "(?:help|assist|provide|comply|fulfil|fulfill|engage|discuss|generate|create|continue)",
    "\\b(?:I\\s+must\\s+(?:remind|emphasi[sz]e|stress|point\\s+out)|it(?:'s|\xE2\x80\x99s|\\s+is)\\s+"
    "important\\s+to\\s+(?:remember|note)|it(?:'s|\xE2\x80\x99s|\\s+is)\\s+(?:not\\s+appropriate|"
    "inappropriate)|respectful\\s+and\\s+(?:appropriate|inclusive)|harmful\\s+or\\s+offensive)",
    "\\b(?:is\\s+there\\s+anything\\s+else|anything\\s+else\\s+I\\s+can|let\\s+me\\s+know\\s+if\\s+"
    "(?:you\\s+)?(?:have|need)\\s+(?:any\\s+)?(?:other\\s+|more\\s+|further\\s+)?(?:questions|help|"
    "assistance|clarification)|if\\s+you\\s+have\\s+any\\s+(?:other|more|further)\\s+questions|"
    "I(?:'d|\xE2\x80\x99" "d|\\s+would)\\s+be\\s+(?:happy|glad)\\s+to\\s+(?:help|assist)|happy\\s+to\\s+help)",
    NULL,
};

/* Protective questions ask about what the character cannot know; an answer
 * that explains it anyway teaches the small model to break the world. Two
 * heuristics: a modern thing followed closely by an explaining verb ("a
 * smartphone works by", "the internet is a network"), and vocabulary no
 * pre-modern character would use (transistors, radio waves, software...).
 * The thing's bare name alone is allowed: "this 'internet' you speak of"
 * is a fine in-character reply. */
const char *const lm_filter_modern_patterns[] = {
    "\\b(?:smart\\s*phones?|(?:mobile|cell)\\s*phones?|telephones?|computers?|(?:the\\s+)?internet|"
    "electricity|cars?|automobiles?|air\\s*planes?|aeroplanes?|televisions?|radios?|wi-?fi|"
    "e-?mails?|satellites?|vaccines?|robots?|engines?)\\b[^.!?\\n]{0,40}?\\b(?:works?\\s+by|"
    "(?:is|are)\\s+(?:a|an|basically|essentially|simply)\\s+(?:\\w+\\s+){0,2}?(?:device|devices|network|"
    "system|machine|machines|form|kind|way|tool)|(?:uses?|transmits?|sends?|converts?)\\s+"
    "(?:\\w+\\s+){0,2}?(?:signals?|waves?|data|current|energy|information)|consists?\\s+of)",
    "\\b(?:radio\\s+waves?|electromagnetic|micro\\s*chips?|circuit\\s+boards?|transistors?|"
    "algorithms?|binary\\s+code|semiconductors?|mega\\s*bytes?|giga\\s*bytes?|electrons?|"
    "software|hardware|servers?|downloads?|cellular|fiber\\s+optics?|lithium|processors?)\\b",
    NULL,
};

static int is_word_byte(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

lm_fspan *lm_ftext_words(const char *s, size_t len, size_t *n) {
    *n = 0;
    size_t cap = 0, k = 0;
    lm_fspan *v = NULL;
    for (size_t i = 0; i < len;) {
        if (!is_word_byte((unsigned char)s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < len && is_word_byte((unsigned char)s[j])) j++;
        if (k == cap) {
            size_t nc = cap ? cap * 2 : 64;
            lm_fspan *nv = realloc(v, nc * sizeof *nv);
            if (!nv) {
                free(v);
                return NULL;
            }
            v = nv, cap = nc;
        }
        v[k].off = i, v[k].len = j - i, k++;
        i = j;
    }
    *n = k;
    return v;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

uint64_t lm_ftext_word_hash(const char *s, size_t len) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c - 'A' + 'a');
        h = (h ^ c) * 0x100000001b3ULL;
    }
    return mix64(h);
}

uint64_t lm_ftext_ngram_hash(const uint64_t *wh, size_t i, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n;
    for (size_t k = 0; k < n; k++) h = mix64(h * 31 + wh[i + k]);
    return h;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

uint64_t *lm_ftext_shingles(const char *s, size_t len, int n, size_t *count) {
    *count = 0;
    size_t nw;
    lm_fspan *w = lm_ftext_words(s, len, &nw);
    if (!w) return NULL;
    uint64_t *wh = malloc(nw * sizeof *wh);
    size_t ng = nw >= (size_t)n ? nw - (size_t)n + 1 : 1;
    uint64_t *out = malloc(ng * sizeof *out);
    if (!wh || !out) {
        free(w), free(wh), free(out);
        return NULL;
    }
    for (size_t i = 0; i < nw; i++) wh[i] = lm_ftext_word_hash(s + w[i].off, w[i].len);
    if (nw >= (size_t)n)
        for (size_t i = 0; i < ng; i++) out[i] = lm_ftext_ngram_hash(wh, i, (size_t)n);
    else
        out[0] = lm_ftext_ngram_hash(wh, 0, nw);
    free(w), free(wh);
    qsort(out, ng, sizeof *out, cmp_u64);
    size_t u = 0;
    for (size_t i = 0; i < ng; i++)
        if (u == 0 || out[u - 1] != out[i]) out[u++] = out[i];
    *count = u;
    return out;
}

int lm_ftext_has_hash(const uint64_t *v, size_t n, uint64_t h) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < h) lo = mid + 1;
        else if (v[mid] > h) hi = mid;
        else return 1;
    }
    return 0;
}

size_t lm_ftext_count_words(const char *s) {
    size_t n = 0;
    int in = 0;
    for (; *s; s++) {
        int sp = *s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v';
        if (!sp && !in) n++;
        in = !sp;
    }
    return n;
}
