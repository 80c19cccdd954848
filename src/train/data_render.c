/* One conversation -> tokens + loss mask, piece by piece (see data.h).
 *
 * With parse_special = true, tokenizing a rendered ChatML string first cuts
 * it at special tokens and tokenizes each fragment on its own. The fragments
 * of a turn are therefore "role\ncontent" (between <|im_start|> and
 * <|im_end|>) and "\n" (up to the next <|im_start|>), and tokenizing exactly
 * those pieces reproduces the full tokenization while telling us which
 * token came from where. The prefix the template may add before the first
 * message (SmolLM2's default system turn) is taken from lm_chat_render
 * itself, so training sees exactly what inference renders. */
#include <stdlib.h>
#include <string.h>

#include "train/data.h"

typedef struct tokbuf {
    int32_t *tok;
    uint8_t *mask;
    int n, cap;
} tokbuf;

static int grow(tokbuf *b, size_t extra) {
    if ((size_t)b->n + extra <= (size_t)b->cap) return 0;
    if ((size_t)b->n + extra > (size_t)INT32_MAX / 2) return -1;
    int cap = b->cap ? b->cap : 256;
    while ((size_t)cap < (size_t)b->n + extra) cap *= 2;
    int32_t *t = realloc(b->tok, (size_t)cap * sizeof *t);
    if (!t) return -1;
    b->tok = t;
    uint8_t *m = realloc(b->mask, (size_t)cap);
    if (!m) return -1;
    b->mask = m;
    b->cap = cap;
    return 0;
}

static int push(tokbuf *b, int32_t id, uint8_t m) {
    if (grow(b, 1)) return -1;
    b->tok[b->n] = id;
    b->mask[b->n++] = m;
    return 0;
}

/* Tokenizes text[0..len) and appends it; tokens ending past byte `from`
 * get mask m (from = 0: all of them). Returns the index of the first
 * masked token appended, or -2 on error. */
static int push_text(tokbuf *b, const lm_tokenizer *t, const char *text, size_t len,
                     bool special, size_t from, uint8_t m, int *first_straddles, lm_err *err) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (lm_tokenize(t, text, len, special, &ids, &n, err)) return -2;
    if (grow(b, n)) {
        free(ids);
        lm_errf(err, "out of memory");
        return -2;
    }
    size_t end = 0;
    int first = -1;
    for (size_t i = 0; i < n; i++) {
        int k = lm_token_bytes(t, ids[i], true, NULL, 0);
        size_t start = end;
        end += k > 0 ? (size_t)k : 0;
        uint8_t mi = m && end > from ? m : 0;
        if (mi && first < 0) {
            first = b->n;
            if (first_straddles) *first_straddles = start < from;
        }
        b->tok[b->n] = ids[i];
        b->mask[b->n++] = mi;
    }
    free(ids);
    return first;
}

/* FNV-1a over roles and contents, each followed by a 0 byte, so the hash
 * ignores JSON formatting and field order. */
static uint64_t conv_hash(const lm_chat_msg *msgs, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        const char *parts[2] = {msgs[i].role, msgs[i].content};
        for (int p = 0; p < 2; p++) {
            for (const unsigned char *s = (const unsigned char *)parts[p]; *s; s++)
                h = (h ^ *s) * 0x100000001b3ull;
            h = (h ^ 0) * 0x100000001b3ull;
        }
    }
    return h;
}

void lm_sft_example_free(lm_sft_example *ex) {
    if (!ex) return;
    free(ex->tokens);
    free(ex->mask);
    memset(ex, 0, sizeof *ex);
}

int lm_sft_render(const lm_tokenizer *t, const lm_chat_msg *msgs, size_t n, lm_sft_example *ex,
                  int *header_merges, lm_err *err) {
    memset(ex, 0, sizeof *ex);
    if (header_merges) *header_merges = 0;
    int32_t im_start = lm_tokenizer_find(t, "<|im_start|>");
    int32_t im_end = lm_tokenizer_find(t, "<|im_end|>");
    if (im_start < 0 || im_end < 0)
        return lm_errf(err, "tokenizer has no %s token: not a ChatML model",
                       im_start < 0 ? "<|im_start|>" : "<|im_end|>");
    if (n == 0) return lm_errf(err, "conversation has no messages");

    /* The full rendering ends with our turns; what precedes them is the
     * template's own prefix (the injected system turn, or nothing). */
    char *full = lm_chat_render(t, msgs, n, false, err);
    if (!full) return -1;
    size_t turns_len = 0;
    for (size_t i = 0; i < n; i++)
        turns_len += strlen("<|im_start|>") + strlen(msgs[i].role) + 1 + strlen(msgs[i].content) +
                     strlen("<|im_end|>") + 1;
    size_t full_len = strlen(full);
    if (full_len < turns_len) {
        free(full);
        return lm_errf(err, "chat template renders fewer bytes than the ChatML turns it holds");
    }
    size_t prefix_len = full_len - turns_len;

    tokbuf b = {0};
    int rc = 0;
    if (prefix_len && push_text(&b, t, full, prefix_len, true, 0, 0, NULL, err) == -2) rc = -1;
    /* The turns, checked against the rendering as we go: a template that
     * renders turns differently must not be trained on silently. */
    size_t at = prefix_len;
    char *piece = NULL;
    size_t piece_cap = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *role = msgs[i].role, *content = msgs[i].content;
        size_t rl = strlen(role), cl = strlen(content), pl = rl + 1 + cl;
        if (strncmp(full + at, "<|im_start|>", 12) || memcmp(full + at + 12, role, rl) ||
            full[at + 12 + rl] != '\n' || memcmp(full + at + 13 + rl, content, cl) ||
            strncmp(full + at + 13 + rl + cl, "<|im_end|>\n", 11)) {
            rc = lm_errf(err, "message %zu: the chat template renders it differently from ChatML", i);
            break;
        }
        at += 12 + pl + 11;
        if (pl + 1 > piece_cap) {
            free(piece);
            piece_cap = pl + 1;
            piece = malloc(piece_cap);
            if (!piece) { rc = lm_errf(err, "out of memory"); break; }
        }
        memcpy(piece, role, rl);
        piece[rl] = '\n';
        memcpy(piece + rl + 1, content, cl);
        bool train = strcmp(role, "assistant") == 0;
        int straddles = 0;
        if (push(&b, im_start, 0)) { rc = lm_errf(err, "out of memory"); break; }
        if (push_text(&b, t, piece, pl, false, rl + 1, train, &straddles, err) == -2) {
            rc = lm_err_prefix(err, "message %zu", i);
            break;
        }
        if (push(&b, im_end, train)) { rc = lm_errf(err, "out of memory"); break; }
        if (push_text(&b, t, "\n", 1, false, 0, 0, NULL, err) == -2) { rc = -1; break; }
        if (straddles && header_merges) (*header_merges)++;
    }
    free(piece);
    free(full);
    if (rc) {
        free(b.tok);
        free(b.mask);
        return lm_err_prefix(err, "rendering conversation");
    }
    ex->tokens = b.tok;
    ex->mask = b.mask;
    ex->n = b.n;
    for (int i = 1; i < b.n; i++) ex->n_trained += b.mask[i];
    ex->hash = conv_hash(msgs, n);
    return 0;
}
