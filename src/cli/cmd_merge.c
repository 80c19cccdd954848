/* `lemonpc merge BASE.gguf ADAPTER.gguf OUT.gguf [--type T] [--scale S]`:
 * a LoRA adapter merged into its base, written as a plain GGUF model. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "base/pool.h"
#include "train/merge.h"

/* Below this fraction of the adapter's change kept (lm_merge_report), the
 * merged model is mostly the base: a Q8_0 merge keeps over 99% of a real
 * fine-tune, a Q4_1 merge under half (tests/oracle/test_merge_types.py). */
#define MIN_KEPT 0.9

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc merge BASE.gguf ADAPTER.gguf OUT.gguf [--type T] [--scale S]\n"
            "                     [--threads N] [--force]\n\n"
            "Merges a LoRA adapter GGUF (llama.cpp format, as `lemonpc train` writes it)\n"
            "into its base model: W += S * alpha/r * B A, then writes every weight matrix\n"
            "as T (norms stay F32), through the converter `lemonpc quantize` uses. The\n"
            "result loads in llama.cpp as a plain model.\n\n"
            "A fine-tune changes the weights by less than a 4-bit type's rounding step:\n"
            "a q4_0/q4_1 merge rounds most of the change back to the base. The merge\n"
            "says how much of the change it kept and refuses to write a model that keeps\n"
            "less than %d%% of it. Use q8_0 or f32, or run the base with the adapter\n"
            "(`--adapter`), which keeps it whole.\n\n"
            "  --type T     f32, f16, bf16, q8_0, q4_0 or q4_1 (default f32)\n"
            "  --scale S    adapter strength (default 1)\n"
            "  --threads N  worker threads (default: all CPUs)\n"
            "  --force      write the merge however little of the adapter it keeps\n"
            "  -h, --help   this text\n", (int)(MIN_KEPT * 100));
}

int cmd_merge(int argc, char **argv) {
    const char *pos[3];
    int n_pos = 0;
    lm_dtype type = LM_F32;
    float scale = 1.0f;
    int threads = 0, force = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--force")) { force = 1; continue; }
        if (!strcmp(a, "--threads")) {
            char *end;
            if (i + 1 >= argc) { fprintf(stderr, "lemonpc merge: --threads needs a number\n"); return 2; }
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 1 || v > 1024) {
                fprintf(stderr, "lemonpc merge: --threads '%s': expected a number from 1 to 1024\n",
                        argv[i]);
                return 2;
            }
            threads = (int)v;
        } else if (!strcmp(a, "--type") || !strcmp(a, "--scale")) {
            if (i + 1 >= argc) { fprintf(stderr, "lemonpc merge: %s needs a value\n", a); return 2; }
            const char *v = argv[++i];
            if (!strcmp(a, "--type")) {
                int t = lm_dtype_parse(v);
                if (t != LM_F32 && t != LM_F16 && t != LM_BF16 && t != LM_Q8_0 && t != LM_Q4_0 &&
                    t != LM_Q4_1) {
                    fprintf(stderr, "lemonpc merge: unknown --type '%s' (f32, f16, bf16, q8_0, "
                            "q4_0, q4_1)\n", v);
                    return 2;
                }
                type = (lm_dtype)t;
            } else {
                char *end;
                errno = 0;
                double s = strtod(v, &end);
                if (errno || end == v || *end || !(s > -1e6 && s < 1e6)) {
                    fprintf(stderr, "lemonpc merge: --scale wants a number, got '%s'\n", v);
                    return 2;
                }
                scale = (float)s;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "lemonpc merge: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (n_pos < 3) {
            pos[n_pos++] = a;
        } else {
            fprintf(stderr, "lemonpc merge: too many arguments ('%s')\n", a);
            return 2;
        }
    }
    if (n_pos != 3) { usage(stderr); return 2; }
    lm_err err;
    lm_merge_report rep = {1.0, 0};
    lm_pool *pool = lm_pool_new(threads, &err);
    int rc = !pool || lm_merge_write(pos[0], pos[1], pos[2], type, scale, force ? 0.0 : MIN_KEPT,
                                     &rep, pool, &err);
    lm_pool_free(pool);
    if (rc) {
        fprintf(stderr, "lemonpc merge: %s\n", err.msg);
        if (rep.kept < MIN_KEPT)
            fprintf(stderr, "lemonpc merge: use --type q8_0 or f32, or run the base with --adapter "
                    "(the change whole); --force writes this merge anyway\n");
        return 1;
    }
    fprintf(stderr, "lemonpc merge: wrote %s (%s), %d matrices merged, %.1f%% of the adapter's "
            "change kept\n", pos[2], lm_dtype_name(type), rep.n_adapted, 100.0 * rep.kept);
    if (rep.kept < MIN_KEPT)
        fprintf(stderr, "lemonpc merge: warning: most of the fine-tune is lost in this merge "
                "(--force)\n");
    return 0;
}
