/* lemonpc pairs: preference pairs for DPO from an NPC's own samples and
 * datagen's rejected answers (eval/pairs.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_gen.h"
#include "cli/commands.h"
#include "eval/pairs.h"
#include "sheet/sheet.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc pairs MODEL --out PAIRS.jsonl [--data CONVS.jsonl]... [--questions Q.jsonl]...\n"
            "                     [--datagen DIR] [--review DIR]... [options]\n\n"
            "Makes DPO preference pairs (TRL's format, for `lemonpc train --dpo`). The NPC (MODEL,\n"
            "an optional --adapter, the --character sheet) samples --samples answers to each\n"
            "prompt with the runtime's sampling; the dataset filters and the eval's checks score\n"
            "them (assistant speech, stage directions, reciting the sheet, modern knowledge,\n"
            "breaking the fiction, loops, speaking for the player, no honest ignorance on a\n"
            "protective question, ...). The curated reply (or else the first passing sample) is\n"
            "chosen, the worst failing sample rejected. A datagen folder's rejected answers are\n"
            "rejected sides as they stand. PAIRS.jsonl.samples.jsonl keeps every sample with its\n"
            "reasons; a killed run resumes where it stopped.\n\n"
            "  --out FILE           the pairs (written when the run ends)\n"
            "  --data FILE          chat conversations (e.g. a build's data/train.jsonl): the prompt\n"
            "                       up to the last user turn, the reply after it the reference;\n"
            "                       repeatable\n"
            "  --no-lore            no lorebook block (the sheet's and world.md's ## Lore entries\n"
            "                       a line brings up, as a game's lemonpc_say adds) before a\n"
            "                       prompt's last user turn that has none; added by default\n"
            "  --all-turns          --data: a prompt for every user turn a reply follows, not only\n"
            "                       the last\n"
            "  --questions FILE     questions in `lemonpc eval`'s format (no reference); repeatable\n"
            "  --datagen DIR        a `lemonpc datagen` folder (rejected.jsonl, dataset.jsonl)\n"
            "  --review DIR         a blind review a reader judged (`lemonpc eval --blind`, then\n"
            "                       verdicts.jsonl): the reply preferred is chosen, the other\n"
            "                       rejected; repeatable: reviews of the same two NPCs are\n"
            "                       several readers, and a pair needs more votes than against\n"
            "  --veto MODE          which review and datagen pairs are dropped: ignorance\n"
            "                       (default) those whose chosen reply fails a check the rejected\n"
            "                       one passes, or (a review's) claims not to know where the\n"
            "                       rejected one does not, on any line (readers' \"I do not know\" over a muddled\n"
            "                       answer teaches the NPC to dodge everything); checks: the\n"
            "                       first only; none: keep every pair\n"
            "  --character SHEET    the character sheet (.md): filters by name and sheet, and the\n"
            "                       system turn of prompts that have none\n"
            "  --persona MODE       that system turn: short, full or none (default: the mode\n"
            "                       stamped in the adapter, else short)\n"
            "  --adapter FILE       the NPC's LoRA adapter GGUF\n"
            "  --kinds LIST         only prompts of these kinds (meta.kind / category), comma-separated\n"
            "  --max-prompts N      a seeded choice of N prompts (default: all)\n"
            "  --samples N          answers sampled per prompt (default 4)\n"
            "  --per-prompt N       pairs per prompt at most, distinct rejected texts (default 1)\n"
            "  --chosen-from-samples  prefer the best passing sample to the reference\n"
            "  --self-play          SPIN: against the writer's reply, the NPC's own answers are\n"
            "                       rejected even when the checks pass them (failing ones first):\n"
            "                       a pair for every prompt with a reference\n"
            "  --restart            discard a journal made under other settings (without it,\n"
            "                       that is an error: the journal may hold hours of samples)\n"
            "  --temp X             sampling temperature (default 0.7, as the runtime)\n"
            "  --seed S             seeds every sample (default 1)\n"
            "  -n, --max-tokens N   per sample (default 160)\n"
            "  -t, --threads N      worker threads (default: all CPUs)\n"
            "  -h, --help           this help\n"
            "Exit status: 0 ok, 1 error, 2 usage.\n");
}

static int num_arg(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "lemonpc pairs: %s wants a number in [%g, %g], got '%s'\n", flag, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int int_arg(const char *flag, const char *v, double lo, double hi, int *out) {
    double x;
    if (num_arg(flag, v, lo, hi, &x)) return -1;
    if (x != (double)(int)x) {
        fprintf(stderr, "lemonpc pairs: %s wants an integer, got '%s'\n", flag, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int cmd_pairs(int argc, char **argv) {
    lm_pairs_opts o;
    lm_pairs_opts_init(&o);
    o.persona = -1;
    const char **data = calloc((size_t)argc + 1, sizeof *data);
    const char **qs = calloc((size_t)argc + 1, sizeof *qs);
    const char **revs = calloc((size_t)argc + 1, sizeof *revs);
    const char *model = NULL;
    int rc = 2;
    if (!data || !qs || !revs) { fprintf(stderr, "lemonpc pairs: out of memory\n"); rc = 1; goto done; }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); rc = 0; goto done; }
        if (!strcmp(a, "--chosen-from-samples")) { o.chosen_from_samples = true; continue; }
        if (!strcmp(a, "--all-turns")) { o.all_turns = true; continue; }
        if (!strcmp(a, "--no-lore")) { o.no_lore = true; continue; }
        if (!strcmp(a, "--self-play")) { o.self_play = true; continue; }
        if (!strcmp(a, "--restart")) { o.restart = true; continue; }
        if (a[0] == '-' && a[1]) {
            if (i + 1 >= argc) { fprintf(stderr, "lemonpc pairs: %s needs a value (see --help)\n", a); goto done; }
            const char *v = argv[++i];
            double d;
            if (!strcmp(a, "--out")) o.out = v;
            else if (!strcmp(a, "--data")) data[o.n_data++] = v;
            else if (!strcmp(a, "--questions")) qs[o.n_questions++] = v;
            else if (!strcmp(a, "--datagen")) o.datagen = v;
            else if (!strcmp(a, "--review")) revs[o.n_reviews++] = v;
            else if (!strcmp(a, "--character")) o.character = v;
            else if (!strcmp(a, "--adapter")) o.adapter = v;
            else if (!strcmp(a, "--kinds")) o.kinds = v;
            else if (!strcmp(a, "--veto")) {
                if ((o.veto = lm_pairs_veto_parse(v)) < 0) {
                    fprintf(stderr, "lemonpc pairs: --veto wants ignorance, checks or none, got '%s'\n", v);
                    goto done;
                }
            }
            else if (!strcmp(a, "--persona")) {
                if ((o.persona = lm_persona_mode_parse(v)) < 0) {
                    fprintf(stderr, "lemonpc pairs: --persona wants short, full or none, got '%s'\n", v);
                    goto done;
                }
            } else if (!strcmp(a, "--max-prompts")) { if (int_arg(a, v, 1, 1e9, &o.max_prompts)) goto done; }
            else if (!strcmp(a, "--samples")) { if (int_arg(a, v, 1, 64, &o.samples)) goto done; }
            else if (!strcmp(a, "--per-prompt")) { if (int_arg(a, v, 1, 64, &o.per_prompt)) goto done; }
            else if (!strcmp(a, "--temp")) { if (num_arg(a, v, 0.01, 5, &d)) goto done; o.sp.temp = (float)d; }
            else if (!strcmp(a, "--seed")) { if (num_arg(a, v, 0, 1e15, &d)) goto done; o.sp.seed = (uint64_t)d; }
            else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) { if (int_arg(a, v, 1, 4096, &o.max_tokens)) goto done; }
            else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { if (int_arg(a, v, 1, 1024, &o.threads)) goto done; }
            else { fprintf(stderr, "lemonpc pairs: unknown option '%s' (see --help)\n", a); goto done; }
            continue;
        }
        if (model) { fprintf(stderr, "lemonpc pairs: unexpected argument '%s'\n", a); goto done; }
        model = a;
    }
    if (!model || !o.out) {
        fprintf(stderr, "lemonpc pairs: %s\n\n", !model ? "no MODEL given" : "--out FILE is required");
        usage(stderr);
        goto done;
    }
    o.model = model;
    o.data = data;
    o.questions = qs;
    o.reviews = revs;
    lm_err err = {0};
    rc = 1;
    if (!o.character) o.persona = LM_PERSONA_NONE;
    else {
        lm_character *c = NULL;
        lm_world *w = NULL;
        if (lm_sheet_load_character(o.character, &c, &w, &err) == 0)
            o.persona = cli_persona_mode(o.model, o.adapter, o.persona, LM_PERSONA_SHORT, c, w, &err);
        else o.persona = -1;
        lm_world_free(w);
        lm_character_free(c);
        if (o.persona < 0) { fprintf(stderr, "lemonpc pairs: %s\n", err.msg); goto done; }
    }
    lm_pairs_stats st;
    if (lm_pairs_run(&o, &st, &err)) {
        fprintf(stderr, "lemonpc pairs: %s\n", err.msg);
        goto done;
    }
    fprintf(stderr,
            "%zu prompts (%zu from the journal): %zu samples, %zu failing; %zu pairs; no pair: %zu "
            "where every sample passed, %zu with nothing to prefer, %zu vetoed\n",
            st.prompts, st.resumed, st.samples, st.failing, st.pairs, st.all_passed, st.no_chosen, st.vetoed);
    printf("%s\n", o.out);
    rc = 0;
done:
    free(data);
    free(qs);
    free(revs);
    return rc;
}
