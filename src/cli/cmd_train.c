/* lemonpc train: supervised fine-tuning (LoRA or full) of a GGUF model on a
 * JSONL chat dataset, or DPO on preference pairs (--dpo); see
 * docs/TRAINING.md. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "train/sft.h"
#include "train/train_config.h"

static void usage(FILE *out) {
    fprintf(out,
        "usage: lemonpc train --model BASE.gguf --data train.jsonl --out RUN_DIR [options]\n"
        "       lemonpc train --model BASE.gguf --dpo pairs.jsonl [--adapter SFT.gguf] --out RUN_DIR [options]\n"
        "       lemonpc train --config run.json [options]\n"
        "       lemonpc train --resume RUN_DIR [--threads N] [--stop-after N]\n\n"
        "Fine-tunes on conversations in JSONL chat format; only the assistant turns\n"
        "(and the <|im_end|> ending each) are trained.\n\n"
        "--dpo trains on preference pairs instead (TRL's format: {\"prompt\": [messages] or\n"
        "a string, \"chosen\": ..., \"rejected\": ...}) with DPO. The reference is the start:\n"
        "BASE (+ the SFT adapter given with --adapter, which the LoRA policy continues);\n"
        "its log-likelihoods are computed once (RUN_DIR/ref_logps.bin).\n"
        "  --dpo-beta 0.1       --dpo-loss sigmoid|ipo|sigmoid-norm (mean log-probs per token)\n"
        "  --dpo-nll 0          + this weight times the chosen reply's per-token NLL (RPO;\n"
        "                       TRL's rpo_alpha): keeps the chosen replies likely\n"
        "  --val FILE / --val-frac F: held-out pairs (reward accuracy and margins)\n"
        "  default --lr 2e-5 (LoRA), 1e-6 (full)\n\n"
        "  --val FILE           validation JSONL            --val-frac F   split F of --data off instead\n"
        "  --lora | --full      LoRA adapter (default) or all weights\n"
        "  --lora-rank 8  --lora-alpha 16  --lora-targets q,k,v,o,gate,up,down (or all)\n"
        "  --lora-dropout 0     dropout P in [0, 1) on the adapters' input (training only,\n"
        "                       masks from --seed and the step)\n"
        "  --lr X               default 2e-4 (LoRA), 5e-5 (full)\n"
        "  --epochs 3  --batch 8  --seq 256  --grad-accum 1\n"
        "  --warmup 0.1         fraction of all steps (or a whole number of steps)\n"
        "  --schedule cosine|linear|constant   --weight-decay 0   --clip 1.0\n"
        "  --eval-every N       validation loss every N steps too (always at epoch ends)\n"
        "  --save-every 20      last/ checkpoint every N steps too (0: only at evaluations)\n"
        "  --seed 42  --threads N (default all CPUs)  --pack (several conversations per row)\n"
        "  --precision f32|bf16 matmul inputs in bf16, sums and weights f32 (needs AVX-512 BF16;\n"
        "                       default f32). LEMONPC_KERNELS=avx512|avx2|scalar forces a kernel set\n"
        "  --stop-after N       stop after N steps of this call (checkpointed; --resume continues)\n"
        "Ctrl-C (or SIGTERM) finishes the current step, saves last/ and stops.\n\n"
        "A config file holds the same keys as JSON ({\"lr\": 1e-4, \"lora-rank\": 16, ...});\n"
        "flags given after it override it. RUN_DIR gets metrics.jsonl, loss.svg,\n"
        "last/ and best/ (adapter.gguf or model.gguf, optim.bin, state.json).\n");
}

/* Set by the signal handler, polled by the loop after each step. A signal
 * handler can reach nothing but a static; this is the command's only one. */
static volatile sig_atomic_t g_interrupt;

static void on_signal(int sig) {
    (void)sig;
    g_interrupt = 1;
}

static void print_note(void *ctx, const char *line) {
    (void)ctx;
    fprintf(stderr, "%s\n", line);
}

int cmd_train(int argc, char **argv) {
    lm_train_cfg cfg;
    lm_train_cfg_defaults(&cfg);
    lm_sft_ctl ctl = {.progress = 1};
    lm_err err = {{0}};
    const char *resume = NULL;
    int resume_threads = 0, other = 0;
    /* The config file first, so flags override it wherever they stand. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) { fprintf(stderr, "lemonpc train: --config needs a file\n"); return 2; }
            if (lm_train_cfg_load_json(&cfg, argv[i + 1], &err)) {
                fprintf(stderr, "lemonpc train: %s\n", err.msg);
                return 2;
            }
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) || !a[2]) {
            fprintf(stderr, "lemonpc train: unexpected argument '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
        const char *key = a + 2;
        if (lm_train_cfg_is_flag(key)) {
            if (lm_train_cfg_set(&cfg, key, "true", &err)) goto bad;
            other = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "lemonpc train: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(key, "config")) continue;
        if (!strcmp(key, "resume")) { resume = v; continue; }
        if (!strcmp(key, "stop-after")) {
            char *end;
            ctl.stop_after = strtol(v, &end, 10);
            if (!*v || *end || ctl.stop_after <= 0) {
                fprintf(stderr, "lemonpc train: --stop-after: expected a positive integer, got '%s'\n", v);
                return 2;
            }
            continue;
        }
        if (lm_train_cfg_set(&cfg, key, v, &err)) goto bad;
        if (!strcmp(key, "threads")) resume_threads = 1;
        else other = 1;
    }
    (void)resume_threads;
    if (resume) {
        if (other) {
            fprintf(stderr, "lemonpc train: --resume takes the run's own settings; "
                            "only --threads and --stop-after may go with it\n");
            return 2;
        }
        if (strlen(resume) >= sizeof cfg.out) {
            fprintf(stderr, "lemonpc train: --resume: path too long\n");
            return 2;
        }
        strcpy(cfg.out, resume);
        ctl.resume = 1;
    } else if (lm_train_cfg_finish(&cfg, &err)) {
        goto bad;
    }

    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;   /* a second Ctrl-C kills at once */
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    ctl.interrupt = &g_interrupt;
    /* Rows computed at --seq as before batches were cut to their longest
     * row: the same results, slower (bench/bench_train.py compares the two). */
    const char *fr = getenv("LEMONPC_TRAIN_FULL_ROWS");
    ctl.full_rows = fr && strcmp(fr, "1") == 0;
    lm_sft_report rep;
    int failed = lm_sft_run(&cfg, &ctl, &rep, print_note, NULL, &err);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (failed) {
        fprintf(stderr, "lemonpc train: %s\n", err.msg);
        return 1;
    }
    if (rep.steps_here == 0)   /* --resume of a finished run: no step, no loss of its own */
        printf("nothing to train: %s had done its %ld/%ld steps (%ld tokens in %.0f s)\n", cfg.out,
               rep.steps, rep.total_steps, rep.tokens, rep.seconds);
    else
        printf("%s: %ld/%ld steps, %ld tokens in %.0f s (%.1f tok/s), last loss %.4f\n",
               rep.stopped ? "stopped" : "done", rep.steps, rep.total_steps, rep.tokens, rep.seconds,
               rep.seconds > 0 ? (double)rep.tokens / rep.seconds : 0.0, rep.last_loss);
    if (rep.dpo)
        printf("%s reward accuracy %.3f, margin %.4f\n", rep.best_val >= 0 ? "validation" : "last step",
               rep.reward_acc, rep.reward_margin);
    if (rep.best_val >= 0)
        printf("best validation loss %.4f at step %ld: %s/best/\n", rep.best_val, rep.best_step, cfg.out);
    printf("last checkpoint: %s/last/  metrics: %s/metrics.jsonl  curve: %s/loss.svg\n",
           cfg.out, cfg.out, cfg.out);
    if (rep.stopped) printf("continue with: lemonpc train --resume %s\n", cfg.out);
    return 0;
bad:
    fprintf(stderr, "lemonpc train: %s\n", err.msg);
    return 2;
}
