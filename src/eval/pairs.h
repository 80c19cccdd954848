/* Preference pairs for DPO from what the pipeline already has
 * (`lemonpc pairs`): an NPC's own samples, scored by the dataset filters
 * and the eval's in-character checks, and datagen's rejected answers.
 *
 * Prompts come from
 *   data       chat conversations (a build's data/train.jsonl, a curated
 *              file): the prompt is every message up to the last user turn
 *              (all_turns: up to each user turn a reply follows, id
 *              "ID#k" for the k-th), the assistant turn after it the
 *              curated reference;
 *   questions  question files in the eval's format (id, question, category,
 *              asker, location, history): no reference;
 *   datagen    a `lemonpc datagen` folder: each answer its filters rejected
 *              (rejected.jsonl) is a rejected side as it stands; the
 *              accepted answer to the same question (dataset.jsonl), if any,
 *              its chosen side;
 *   reviews    blind review folders (`lemonpc eval --blind`, eval/blind.h)
 *              a reader has judged: the reply a reader preferred is chosen,
 *              the other rejected. Reviews of the same two NPCs are several
 *              readers: a pair is kept when more of them preferred one
 *              reply than the other (a tie is no vote), so two readers who
 *              disagree cancel out.
 * A prompt without a system turn gets the persona policy's (the character
 * sheet, the persona mode, the scene from asker and location), as
 * `lemonpc build` puts in its training data and the runtime serves.
 *
 * For each prompt that still needs a side, the NPC (model + adapter)
 * samples `samples` answers with the runtime's sampling, each seeded from
 * (seed, prompt id, sample index), so a rerun samples the same. A sample
 * fails when a dataset filter rejects it (assistant speech, stage
 * directions, reciting the sheet, modern knowledge, breaking the fiction,
 * loops, a turn cut at max tokens, ...) or the eval's checks do (speaking
 * for the player, not ending the turn, no honest ignorance on a protective
 * question, claiming not to know or declining on an in-world one); its
 * reasons are kept, and scored again from the text when a run resumes.
 *   chosen   = the reference (unless chosen_from_samples), else the
 *              first passing sample. The writer's reference sets the bar:
 *              a check it fails itself (a follow-up turn of a protective
 *              conversation that needs no "I do not know") is not held
 *              against the samples of that prompt either;
 *   rejected = the failing samples, most reasons first (up to per_prompt,
 *              distinct texts), or datagen's rejected answer.
 * A prompt with no failing sample or no acceptable chosen side gives no
 * pair: the NPC already does well there, or nothing good is known.
 *
 * Veto: a pair whose two sides come from outside (a review, datagen) is
 * dropped when its chosen reply fails a check its rejected reply passes,
 * e.g. a reader preferring "I do not know" to a muddled answer about the
 * knight's own order; and by default (LM_VETO_IGNORANCE) a reader's pair
 * whenever the chosen reply claims not to know and the rejected one does
 * not, on a protective line too (datagen's chosen side passed the dataset
 * filters, which ask a protective line for exactly that). Readers asked to prefer honest ignorance to
 * confident nonsense make such pairs often. DPO on all of them taught
 * Orlando to claim ignorance of his own world (report v10-readers-dpo:
 * in-world dodges 45% -> 70%); with the checks' veto alone, which keeps
 * the protective ones, the claim spread to his world and to small talk,
 * and two blind readers preferred the adapter trained without any such
 * pair (report v11-veto: 81-51, 85-58). The SFT data already teaches the
 * protective answer. The journal keeps each vetoed pair's reasons
 * ("vetoed").
 *
 * self_play (SPIN, Chen et al. 2024, "Self-Play Fine-Tuning Converts Weak
 * Language Models to Strong Language Models"): against the writer's reply,
 * the NPC's own answers are rejected even when the cheap checks pass them
 * (failing ones first), so every prompt with a reference gives a pair. The
 * checks see assistant speech and modern knowledge, not a non sequitur or
 * an invented wife; self-play pushes the NPC toward the writer's replies on
 * everything the checks cannot see. The pairs are made from the journal's
 * samples, so the mode can be switched without sampling again.
 *
 * Output: `out` in TRL's preference format (prompt messages, chosen and
 * rejected as one assistant message each) plus "meta" (id, kind, source,
 * chosen_from, rejected_reasons), written atomically at the end; and
 * out + ".samples.jsonl", a journal of every prompt's samples and reasons,
 * appended and flushed per prompt, so a killed run resumes where it stopped
 * (prompts already in the journal under the same settings are not sampled
 * again) and a person can read what the NPC said. A journal made under other
 * settings (model, adapter or sheet rebuilt, other sampling) is an error
 * naming what differs, unless restart discards it. */
#ifndef LM_EVAL_PAIRS_H
#define LM_EVAL_PAIRS_H

#include <stdbool.h>
#include <stddef.h>

#include "base/err.h"
#include "model/sampler.h"

typedef struct lm_pairs_opts {
    const char *model;                 /* GGUF */
    const char *adapter;               /* LoRA GGUF or NULL */
    const char *character;             /* sheet .md or NULL (no persona, name-less filters) */
    int persona;                       /* lm_persona_mode for prompts without a system turn */
    bool no_lore;                      /* no lorebook block before a prompt's last user
                                        * turn that has none (eval.h's no_lore) */
    const char *const *data;           /* conversation JSONL files */
    size_t n_data;
    const char *const *questions;      /* question JSONL files */
    size_t n_questions;
    const char *datagen;               /* datagen output folder or NULL */
    const char *const *reviews;        /* blind review folders (eval/blind.h) with verdicts */
    size_t n_reviews;
    const char *out;                   /* pairs JSONL */
    const char *kinds;                 /* "protective,adversarial": only these; NULL all */
    int max_prompts;                   /* 0: all; else a seeded choice of this many */
    int samples;                       /* per prompt (default 4) */
    int per_prompt;                    /* pairs per prompt at most (default 1) */
    int max_tokens;                    /* per sample (default 160, as eval) */
    bool all_turns;                    /* data: a prompt per replied user turn, not the last only */
    bool chosen_from_samples;          /* the best passing sample even when a reference exists */
    bool restart;                      /* discard a journal made under other settings */
    bool self_play;                    /* SPIN: with a reference, any own answer is rejected */
    int veto;                          /* lm_pairs_veto: which review and datagen pairs go */
    lm_sampler_params sp;              /* the runtime's sampling; sp.seed seeds every draw */
    int threads;
    bool quiet;
} lm_pairs_opts;

/* Which pairs with both sides given (review, datagen) are dropped. */
typedef enum lm_pairs_veto {
    LM_VETO_IGNORANCE = 0,   /* default: as CHECKS, and, for a reader's pair, a chosen
                              * reply that claims not to know (or declines) against a
                              * rejected one that does not, on any line */
    LM_VETO_CHECKS,          /* the chosen reply fails a check the rejected one passes */
    LM_VETO_NONE,
} lm_pairs_veto;

/* "ignorance", "checks" or "none"; -1 for anything else. */
int lm_pairs_veto_parse(const char *s);

void lm_pairs_opts_init(lm_pairs_opts *o);

typedef struct lm_pairs_stats {
    size_t prompts;          /* after kinds and max_prompts */
    size_t resumed;          /* taken from the journal */
    size_t samples;          /* sampled answers (all prompts, journal included) */
    size_t failing;          /* of them, failing */
    size_t pairs;            /* written */
    size_t all_passed;       /* prompts with no failing sample: no pair */
    size_t no_chosen;        /* prompts with failures but nothing to prefer: no pair */
    size_t vetoed;           /* review or datagen pairs the checks vetoed */
} lm_pairs_stats;

int lm_pairs_run(const lm_pairs_opts *o, lm_pairs_stats *st, lm_err *err);

#endif
