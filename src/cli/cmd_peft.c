/* `lemonpc peft BASE.gguf ADAPTER.gguf OUTDIR [--base-name NAME]`: a LoRA
 * adapter GGUF as a PEFT folder (transformers, vLLM). The base model is
 * read for the checks and for the head size that un-permutes Q/K rows. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "model/adapter.h"
#include "train/peft.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc peft BASE.gguf ADAPTER.gguf OUTDIR [--base-name NAME]\n"
            "       lemonpc peft --import BASE.gguf PEFTDIR OUT_ADAPTER.gguf\n\n"
            "Writes OUTDIR/adapter_config.json and OUTDIR/adapter_model.safetensors, a PEFT\n"
            "LoRA adapter that `peft` loads on top of the Hugging Face model (Q/K rows are\n"
            "converted from GGUF order back to Hugging Face order). With --import, the\n"
            "reverse: a PEFT LoRA folder becomes a llama.cpp adapter GGUF for BASE.\n\n"
            "  --base-name NAME  base_model_name_or_path (default\n"
            "                    HuggingFaceTB/SmolLM2-135M-Instruct)\n"
            "  -h, --help        this text\n");
}

int cmd_peft(int argc, char **argv) {
    const char *pos[3], *base_name = NULL;
    int n_pos = 0, import = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--import")) {
            import = 1;
        } else if (!strcmp(a, "--base-name")) {
            if (i + 1 >= argc) { fprintf(stderr, "lemonpc peft: %s needs a value\n", a); return 2; }
            base_name = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "lemonpc peft: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (n_pos < 3) {
            pos[n_pos++] = a;
        } else {
            fprintf(stderr, "lemonpc peft: too many arguments ('%s')\n", a);
            return 2;
        }
    }
    if (n_pos != 3) { usage(stderr); return 2; }
    lm_err err;
    int rc = 1;
    lm_model *m = lm_model_load(pos[0], &err);
    if (import) {
        if (m && !lm_peft_import(m, pos[1], pos[2], &err)) {
            fprintf(stderr, "lemonpc peft: wrote %s\n", pos[2]);
            rc = 0;
        } else {
            fprintf(stderr, "lemonpc peft: %s\n", err.msg);
        }
        lm_model_free(m);
        return rc;
    }
    lm_adapter *a = m ? lm_adapter_load(m, pos[1], &err) : NULL;
    if (a && !lm_peft_write(m, a, pos[2], base_name, &err)) {
        fprintf(stderr, "lemonpc peft: wrote %s (r %d, alpha %g)\n", pos[2], a->rank,
                (double)a->alpha);
        rc = 0;
    } else {
        fprintf(stderr, "lemonpc peft: %s\n", err.msg);
    }
    lm_adapter_free(a);
    lm_model_free(m);
    return rc;
}
