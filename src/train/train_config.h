/* A training run's settings: defaults (DESIGN.md recipes), `--flag value`
 * pairs and a JSON config file with the same keys, and the JSON form that
 * goes into every checkpoint so `--resume` needs nothing else.
 *
 * Keys are the flag names without "--"; in JSON '_' may stand for '-'
 * ("lora_rank" == "lora-rank"). Unknown keys and bad values are errors that
 * name the key (and the file). */
#ifndef LM_TRAIN_CONFIG_H
#define LM_TRAIN_CONFIG_H

#include <stdint.h>

#include "base/err.h"
#include "train/adamw.h"

#define LM_TCFG_PATH 1024

/* DPO objectives (dpo.h): sigmoid DPO on summed log-likelihoods, IPO and
 * sigmoid DPO on per-token mean log-likelihoods (length-normalised). */
typedef enum { LM_DPO_SIGMOID, LM_DPO_IPO, LM_DPO_SIGMOID_NORM } lm_dpo_kind;

typedef struct lm_train_cfg {
    char model[LM_TCFG_PATH];   /* base GGUF */
    char data[LM_TCFG_PATH];    /* train JSONL */
    char val[LM_TCFG_PATH];     /* validation JSONL, "" if none */
    char out[LM_TCFG_PATH];     /* run directory */
    char dpo[LM_TCFG_PATH];     /* preference pairs JSONL: a DPO run instead of SFT ("" if none) */
    char adapter[LM_TCFG_PATH]; /* DPO: the (SFT) adapter the policy starts from, "" if none */
    float dpo_beta;
    float dpo_nll;              /* weight of the chosen replies' NLL in the DPO loss (0: none) */
    lm_dpo_kind dpo_loss;
    double val_frac;            /* split of data when val is "" (0: no validation) */
    int full;                   /* 1: full fine-tune, 0: LoRA */
    int lora_rank;
    float lora_alpha, lora_dropout;
    unsigned lora_targets;      /* LM_LORA_* bits */
    float lr;                   /* <= 0: the recipe default for full/LoRA */
    int epochs, batch, seq, grad_accum;
    float warmup;               /* fraction of all steps (< 1) or a step count (>= 1) */
    lm_lr_kind schedule;
    float weight_decay, clip;
    int eval_every;             /* optimizer steps; 0: only at epoch ends */
    int save_every;             /* last/ also every N steps; 0: only at eval points */
    uint64_t seed;
    int threads;                /* 0: all online CPUs */
    int pack;
    int bf16;                   /* precision bf16: matmul inputs in bf16, sums f32 */
} lm_train_cfg;

void lm_train_cfg_defaults(lm_train_cfg *c);
/* Sets one key from its text form (a flag's argument). Boolean keys
 * (lora, full, pack) take "true"/"false"/"1"/"0". */
int lm_train_cfg_set(lm_train_cfg *c, const char *key, const char *value, lm_err *err);
/* 1 if key names a setting that takes no value on the command line. */
int lm_train_cfg_is_flag(const char *key);
/* Applies every key of a JSON object file. */
int lm_train_cfg_load_json(lm_train_cfg *c, const char *path, lm_err *err);
/* The same from a JSON text (name used in messages). */
int lm_train_cfg_parse_json(lm_train_cfg *c, const char *name, const char *text, lm_err *err);
/* All settings as a JSON object text; malloc'd, NULL on out of memory. */
char *lm_train_cfg_to_json(const lm_train_cfg *c);
/* Whole-config checks (required paths, ranges that depend on each other);
 * resolves lr <= 0 to the recipe default. */
int lm_train_cfg_finish(lm_train_cfg *c, lm_err *err);
/* Warmup in steps for a run of total steps. */
long lm_train_cfg_warmup_steps(const lm_train_cfg *c, long total);

#endif
