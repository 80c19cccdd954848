/* `lemonpc merge BASE.gguf ADAPTER.gguf OUT.gguf [--type T] [--scale S]`:
 * a LoRA adapter merged into its base, written as a plain GGUF model. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "train/merge.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc merge BASE.gguf ADAPTER.gguf OUT.gguf [--type T] [--scale S]\n\n"
            "Merges a LoRA adapter GGUF (llama.cpp format, as `lemonpc train` writes it)\n"
            "into its base model: W += S * alpha/r * B A, then writes every weight matrix\n"
            "as T (norms stay F32). The result loads in llama.cpp as a plain model.\n\n"
            "  --type T    f32, f16, bf16, q8_0, q4_0 or q4_1 (default f32)\n"
            "  --scale S   adapter strength (default 1)\n"
            "  -h, --help  this text\n");
}

int cmd_merge(int argc, char **argv) {
    const char *pos[3];
    int n_pos = 0;
    lm_dtype type = LM_F32;
    float scale = 1.0f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--type") || !strcmp(a, "--scale")) {
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
    if (lm_merge_write(pos[0], pos[1], pos[2], type, scale, &err)) {
        fprintf(stderr, "lemonpc merge: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "lemonpc merge: wrote %s (%s)\n", pos[2], lm_dtype_name(type));
    return 0;
}
