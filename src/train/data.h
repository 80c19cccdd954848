/* SFT data: JSONL chat conversations -> token sequences with a per-position
 * loss mask -> train/validation split -> [B, T] batches.
 *
 * Input, one conversation per line (blank lines ignored):
 *   {"messages": [{"role": "system|user|assistant", "content": "..."}, ...], ...}
 * or the ShareGPT shape
 *   {"conversations": [{"from": "system|human|gpt", "value": "..."}, ...], ...}
 * (from also accepts user/assistant). Other fields are ignored. A line must
 * hold at least one assistant message.
 *
 * Bad lines: by default a bad line is skipped and counted (stats.skipped),
 * each reported through opts.warn; more than opts.max_skipped bad lines fail
 * the load. With opts.strict the first bad line fails it. Messages name the
 * place: "data.jsonl:17: messages[2].role: expected one of
 * system/user/assistant, got 'bot'".
 *
 * Rendering follows the model's chat template exactly as lm_chat_render does
 * at inference (ChatML; SmolLM2 injects its default system turn when the
 * first message is not a system message), tokenized piece by piece so each
 * token's origin is known:
 *   <|im_start|> | tokenize("role\n" + content, no specials) | <|im_end|> | "\n"
 * Content is tokenized with parse_special = false: text that looks like a
 * special token stays text. For content without such text the tokens equal
 * lm_tokenize(lm_chat_render(...), parse_special = true) (tested).
 *
 * The mask is by position, never by token id (pad == eos == <|im_end|> in
 * SmolLM2): mask[i] = 1 for the tokens of every assistant message's content
 * and for the <|im_end|> closing it; 0 for system/user turns, every role
 * header "<|im_start|>assistant\n" and the "\n" after each <|im_end|>. When
 * content starts with whitespace, BPE may merge the header's "\n" with it
 * into one token; such a token carries content bytes and is trained
 * (counted in stats.header_merges). */
#ifndef LM_TRAIN_DATA_H
#define LM_TRAIN_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "tokenizer/tokenizer.h"

/* One conversation. mask[i] is the mask of token i *as a target*: the loss
 * trains predicting tokens[i] from tokens[0..i) when mask[i] = 1. */
typedef struct lm_sft_example {
    int32_t *tokens;        /* [n] */
    uint8_t *mask;          /* [n] */
    int n;
    int n_trained;          /* sum of mask[1..n): mask[0] never has a context */
    int line;               /* 1-based line in the source */
    uint64_t hash;          /* of roles and contents (not of formatting): the split key */
    bool truncated;         /* cut to max_len */
} lm_sft_example;

typedef struct lm_sft_stats {
    long conversations;     /* kept examples */
    long messages, assistant_turns;
    long tokens;            /* after truncation */
    long trained_tokens;    /* sum of n_trained */
    long truncated;         /* examples cut to max_len */
    long truncated_tokens;  /* tokens cut away */
    long dropped;           /* over max_len with LM_SFT_DROP, or nothing left to train after the cut */
    long skipped;           /* bad lines skipped */
    long header_merges;     /* assistant turns whose first token straddles the header */
    int longest;            /* tokens of the longest example, before truncation */
} lm_sft_stats;

enum { LM_SFT_TRUNCATE = 0, LM_SFT_DROP = 1 };

typedef struct lm_sft_opts {
    int max_len;            /* tokens per example; 0: no limit */
    int overlong;           /* LM_SFT_TRUNCATE (keep the first max_len) or LM_SFT_DROP */
    bool strict;            /* the first bad line fails the load */
    long max_skipped;       /* without strict: more bad lines than this fail; < 0: no cap */
    /* Called once per skipped line with its message (library code never prints). */
    void (*warn)(void *ctx, const char *msg);
    void *warn_ctx;
} lm_sft_opts;

/* max_len 0, truncate, not strict, max_skipped 100, no warn. */
lm_sft_opts lm_sft_opts_default(void);

typedef struct lm_sft_dataset {
    lm_sft_example *ex;     /* [n], owned */
    int n;
    int32_t pad_id;         /* filler for padding positions (eos / <|im_end|>) */
    lm_sft_stats stats;
} lm_sft_dataset;

/* Reads a JSONL file (name is used in messages). */
int lm_sft_dataset_load(const char *path, const lm_tokenizer *t, const lm_sft_opts *opts,
                        lm_sft_dataset **out, lm_err *err);
/* The same from memory (buf need not be NUL-terminated). */
int lm_sft_dataset_load_mem(const char *name, const char *buf, size_t len, const lm_tokenizer *t,
                            const lm_sft_opts *opts, lm_sft_dataset **out, lm_err *err);
void lm_sft_dataset_free(lm_sft_dataset *ds);
/* Recomputes the per-example totals of ds->stats (conversations, tokens,
 * trained_tokens, truncated) from ds->ex, e.g. after a split. */
void lm_sft_dataset_recount(lm_sft_dataset *ds);

/* Renders and tokenizes one conversation into ex (tokens, mask, n,
 * n_trained, hash). *header_merges (may be NULL) gets how many assistant
 * turns had their first token straddle the header. On failure ex is empty. */
int lm_sft_render(const lm_tokenizer *t, const lm_chat_msg *msgs, size_t n, lm_sft_example *ex,
                  int *header_merges, lm_err *err);
void lm_sft_example_free(lm_sft_example *ex);

/* Applies max_len with policy LM_SFT_TRUNCATE or LM_SFT_DROP, updating the
 * stats; an example left with no trained token is dropped too. */
void lm_sft_dataset_fit(lm_sft_dataset *ds, int max_len, int policy);

/* Deterministic split by a seeded hash of each conversation's content: an
 * example's side depends only on its content, seed and val_frac, so adding
 * lines never moves existing ones. With val_frac > 0 and at least two
 * examples, each side gets at least one (the example with the smallest
 * hash score moves) -- the only case where the rule above bends. Both
 * outputs are deep copies, freed with lm_sft_dataset_free; order is kept. */
int lm_sft_split(const lm_sft_dataset *ds, double val_frac, uint64_t seed,
                 lm_sft_dataset **train, lm_sft_dataset **val, lm_err *err);

/* ---- batching ------------------------------------------------------------ */

typedef struct lm_batcher_opts {
    int B, T;               /* rows per batch, positions per row */
    uint64_t seed;          /* shuffle seed; epoch e uses the permutation of (seed, e) */
    bool shuffle;           /* false: file order (validation) */
    /* Several conversations per row, each with its own segment id and
     * positions restarting at 0; the consumer must keep attention inside a
     * segment (segments[]) and use pos[] for RoPE. Off: one per row. */
    bool pack;
    /* Each batch cut to its longest row (lm_batch_span) and to its rows
     * holding data: out->B = n_rows, out->T <= T. The positions cut away
     * are padding, which no real position attends to and the loss never
     * counts, so a trimmed batch trains exactly as the full one. */
    bool trim;
} lm_batcher_opts;

/* The row length a batch whose longest row holds `longest` tokens is cut
 * to: longest rounded up to a multiple of 4, at most T. The multiple of 4
 * keeps the portable kernels' 4-row groups (train_matmul.c) where the full
 * batch has them when T is a multiple of 4, so gradients keep their bits
 * on every kernel set. */
int lm_batch_span(int longest, int T);

/* One batch. Every array is row-major [B, T] unless noted (with trim, B and
 * T are this batch's); owned by the batcher, valid until the next
 * lm_batcher_next/lm_batcher_free.
 * For a row holding tokens x[0..n) of one conversation:
 *   tokens[t]    = x[t]                  t < n, else pad_id
 *   targets[t]   = x[t+1]                t < n-1, else pad_id
 *   loss_mask[t] = mask[t+1]             t < n-1, else 0
 * i.e. position t is trained when the token it predicts is an assistant
 * token. In a packed row the same holds within each segment; the last
 * position of a segment predicts nothing (its target is pad_id, mask 0).
 * The trainer's lm_tbatch (train_model.h) takes these arrays as they are:
 *   {B, T, tokens, targets, .mask = loss_mask, segments, pos}
 * (segments may be passed when not packing too: one segment per row). */
typedef struct lm_batch {
    int B, T;
    int32_t *tokens, *targets;
    uint8_t *loss_mask;
    uint8_t *valid;         /* 1: a real token, 0: padding */
    int32_t *segments;      /* 1.. per conversation in the row, 0 on padding */
    int32_t *pos;           /* position inside its conversation (0 on padding) */
    int32_t *lengths;       /* [B] real tokens per row (rows past n_rows: 0) */
    int n_rows;             /* rows holding data; the last batch of an epoch may have < B */
    long n_trained;         /* sum of loss_mask */
    int epoch;              /* 0-based epoch this batch belongs to */
    long step;              /* 0-based batch counter over all epochs */
    int batch_in_epoch;
    bool epoch_end;         /* the last batch of its epoch */
} lm_batch;

typedef struct lm_batcher lm_batcher;

/* ds must outlive the batcher. Examples longer than T are an error (fit
 * the dataset with lm_sft_dataset_fit(ds, T, ...) first). */
lm_batcher *lm_batcher_new(const lm_sft_dataset *ds, const lm_batcher_opts *opts, lm_err *err);
void lm_batcher_free(lm_batcher *b);
/* Fills *out with the next batch, starting the next epoch (reshuffled)
 * after the last one; out's arrays alias the batcher's buffers. */
int lm_batcher_next(lm_batcher *b, lm_batch *out, lm_err *err);
/* Batches per epoch (with packing: of the current epoch's order). */
int lm_batcher_batches_per_epoch(const lm_batcher *b);

/* ---- shared by the SFT and DPO data (dpo_data.c) ----------------------- */

/* A bad line under opts' policy (lines are read by train/chat_jsonl.h).
 * e holds its message, already prefixed with name:line. Returns -1 (err
 * set) when the load must fail (strict, or more than max_skipped bad
 * lines); else counts it in *skipped, passes it to opts->warn and returns
 * 0. */
int lm_jsonl_bad_line(const lm_sft_opts *opts, const char *name, long *skipped, const lm_err *e,
                      lm_err *err);

/* The filler token of a tokenizer's batches: eos, else <|im_end|>, else 0. */
int32_t lm_sft_pad_id(const lm_tokenizer *t);

/* A deep copy of src's tokens and mask into dst (other fields copied as
 * they are). -1 on out of memory, with dst left holding no arrays. */
int lm_sft_example_copy(lm_sft_example *dst, const lm_sft_example *src);

/* The split rule of lm_sft_split for n items with content hashes hash(set,
 * i): side[i] = 1 (validation) when the seeded score of the hash is below
 * val_frac, and with val_frac > 0 and n >= 2 at least one item on each
 * side. malloc'd [n] (at least 1 byte); NULL with err set for a val_frac
 * outside [0, 1) or out of memory. */
uint8_t *lm_sft_split_sides(const void *set, int n, uint64_t (*hash)(const void *set, int i),
                            double val_frac, uint64_t seed, lm_err *err);

/* order[0..n) for epoch `epoch`: 0..n-1 shuffled by a Fisher-Yates shuffle
 * seeded from (seed, epoch) -- the batcher's order, and DPO's. */
void lm_sft_epoch_order(int *order, int n, uint64_t seed, int epoch);

#endif
