/* lemonpc review: accept, reject, edit or promote generated samples in a
 * terminal UI; decisions persist after every key (datagen/review.h). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "datagen/review.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc review DATASET.jsonl [--decisions FILE] [--editor CMD] [--export OUT.jsonl]\n\n"
            "Shows one sample at a time: a accept, r reject, e edit the answer in $EDITOR,\n"
            "p promote the answer to a style example, s skip, u undo, q quit.\n"
            "Every decision is appended to FILE (default DATASET.decisions.jsonl) at once;\n"
            "a rerun resumes at the first undecided sample. Promoted samples are written to\n"
            "DATASET.promoted.jsonl, the style examples of the next generation round.\n"
            "  --decisions FILE  the decisions log\n"
            "  --editor CMD      editor command (default $VISUAL, $EDITOR, vi)\n"
            "  --export OUT      write the accepted (and edited) samples and exit; no terminal needed\n"
            "Exit status: 0 ok, 1 error, 2 usage.\n");
}

int cmd_review(int argc, char **argv) {
    const char *dataset = NULL, *decisions = NULL, *editor = NULL, *export = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "--decisions") || !strcmp(a, "--editor") || !strcmp(a, "--export")) && i + 1 < argc) {
            const char **dst = a[2] == 'd' ? &decisions : a[3] == 'd' ? &editor : &export;
            *dst = argv[++i];
        } else if (a[0] == '-' || dataset) {
            usage(stderr);
            return 2;
        } else {
            dataset = a;
        }
    }
    if (!dataset) {
        usage(stderr);
        return 2;
    }
    if (!export && (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))) {
        fprintf(stderr, "lemonpc review: needs a terminal (stdin and stdout); "
                        "use --export OUT.jsonl to write the accepted samples without one\n");
        return 1;
    }
    lm_err err = {{0}};
    lm_review *r = lm_review_open(dataset, decisions, &err);
    if (!r) {
        fprintf(stderr, "lemonpc review: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (export) {
        size_t n;
        if (lm_review_export(r, export, &n, &err)) rc = 1;
        else fprintf(stderr, "lemonpc review: wrote %zu accepted samples to %s\n", n, export);
    } else if (lm_review_tui(r, editor, &err)) {
        rc = 1;
    }
    if (rc) fprintf(stderr, "lemonpc review: %s\n", err.msg);
    lm_review_close(r);
    return rc;
}
