/* lemonpc eval: an NPC answers a question file; answers, metrics, report. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_gen.h"
#include "datagen/teacher.h"
#include "cli/commands.h"
#include "eval/blind.h"
#include "eval/eval.h"
#include "runtime/guard.h"
#include "sheet/sheet.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc eval MODEL QUESTIONS.jsonl --out DIR [options]\n"
            "       lemonpc eval --compare DIR [DIR...] --out DIR\n"
            "       lemonpc eval --blind DIR_A DIR_B --out REVIEW [--seed S]\n"
            "       lemonpc eval --unblind REVIEW\n\n"
            "The NPC (MODEL, an optional --adapter, the --character sheet under a --persona\n"
            "mode) answers every question; writes DIR/answers.jsonl, DIR/report.md and\n"
            "DIR/report.json: end-of-turn rate, staying in character (assistant speech,\n"
            "refusals, stage directions, self-introduction, speaking for the player, talk of\n"
            "the fiction), honest ignorance on protective questions, claims not to know on\n"
            "in-world ones, recital of the sheet on off-topic ones, loops, distinct-n,\n"
            "catchphrases and, with --refs, the perplexity of held-out reference answers.\n"
            "A killed eval resumes where it stopped.\n"
            "With --compare: the reports of several evals side by side (compare.md) and in\n"
            "one picture (compare.svg).\n"
            "With --blind: a blind review of two evals of the same questions: each pair of\n"
            "replies that differ, shuffled, sides drawn by --seed, in REVIEW/items.md and\n"
            "items.jsonl for a reader (a person, or a judge model) who must not know which\n"
            "NPC wrote which; the key in REVIEW/key.json. The reader writes\n"
            "REVIEW/verdicts.jsonl ({\"item\": N, \"better\": \"1\"|\"2\"|\"tie\"} per item);\n"
            "--unblind then counts each NPC's wins by category, with a sign test, in\n"
            "REVIEW/verdict.md and verdict.json.\n\n"
            "QUESTIONS.jsonl: one {\"id\", \"question\", \"category\" (in-world, off-topic,\n"
            "protective, adversarial), \"asker\", \"location\", \"history\": [{role, content}]}\n"
            "per line; all but id and question optional.\n\n"
            "  --out DIR            output folder (created)\n"
            "  --character SHEET    the character sheet (.md; its folder's world.md too)\n"
            "  --persona MODE       full, short or none: the system turn (docs/BUILD.md);\n"
            "                       default: the mode stamped in the adapter or model by\n"
            "                       `lemonpc build`, else short\n"
            "  --no-lore            without the lorebook entries (the sheet's and world.md's\n"
            "                       ## Lore) that a game's lemonpc_say puts before the\n"
            "                       player's line when its keys come up; with them by default\n"
            "  --adapter FILE       a LoRA adapter GGUF applied at run time\n"
            "  --refs FILE          JSONL conversations whose last assistant turn is scored\n"
            "                       (under this NPC's system turn when --character is given)\n"
            "  --label TEXT         the NPC's name in reports\n"
            "  --sample             the runtime's sampling (temp 0.7, repeat penalty 1.1,\n"
            "                       seed 1) instead of greedy decoding\n"
            "  --seed S             the seed of --sample and of the guard's retries (default\n"
            "                       1): runs with several seeds show how much of a difference\n"
            "                       between two NPCs is the draw's\n"
            "  --guard N            the reply guard a game can turn on (lemonpc_guard): an\n"
            "                       answer failing the runtime's checks is drawn again, up\n"
            "                       to N times (sampled, seeded by the question's index)\n"
            "  --guard-checks LIST  voice, modern, ended, loop, dodge, ignorance, default\n"
            "                       (the first four) or all (default: default)\n"
            "  --best-of N          the guard draws N answers (then --guard more while none\n"
            "                       passes) and keeps, of those passing, the one most about\n"
            "                       the line, as lemonpc_guard.best_of (1 = off); every\n"
            "                       draw goes into answers.jsonl\n"
            "  -n, --max-tokens N   per answer (default 160)\n"
            "  --judge-url URL      an LLM judge: an OpenAI-compatible server (e.g.\n"
            "                       http://127.0.0.1:8080/v1) scores every answer 1-7 on\n"
            "                       memorization, values, personality, hallucination and\n"
            "                       stability (Character-LLM's dimensions); DIR/judge.jsonl\n"
            "  --judge-model NAME   the judge server's model name\n"
            "  --judge-key-env VAR  the environment variable holding its API key\n"
            "  --judge-gguf FILE    a local GGUF as the judge instead of a server\n"
            "  -t, --threads N      worker threads (default: all CPUs)\n"
            "  -h, --help           this help\n"
            "Exit status: 0 ok, 1 error, 2 usage.\n");
}

static int int_arg(const char *flag, const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "lemonpc eval: %s wants an integer in [%d, %d], got '%s'\n", flag, lo, hi, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int cmd_eval(int argc, char **argv) {
    lm_eval_opts o;
    lm_eval_opts_init(&o);
    o.persona = -1;   /* the trained mode, else short: resolved below */
    bool compare = false, blind = false;
    const char *unblind = NULL;
    const char *judge_url = NULL, *judge_model = NULL, *judge_key = NULL, *judge_gguf = NULL;
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    int npos = 0;
    if (!pos) { fprintf(stderr, "lemonpc eval: out of memory\n"); return 1; }
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); rc = 0; goto done; }
        if (!strcmp(a, "--compare")) { compare = true; continue; }
        if (!strcmp(a, "--blind")) { blind = true; continue; }
        if (!strcmp(a, "--sample")) { o.sample = true; continue; }
        if (!strcmp(a, "--no-lore")) { o.no_lore = true; continue; }
        static const char *const with_value[] = {"--out", "--character", "--persona", "--adapter",
                                                 "--refs", "--label", "-n", "--max-tokens", "-t",
                                                 "--threads", "--judge-url", "--judge-model",
                                                 "--judge-key-env", "--judge-gguf", "--guard",
                                                 "--guard-checks", "--seed", "--best-of",
                                                 "--unblind"};
        bool known = false;
        for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++) known |= !strcmp(a, with_value[k]);
        if (known) {
            if (i + 1 >= argc) { fprintf(stderr, "lemonpc eval: %s needs a value\n", a); goto done; }
            const char *v = argv[++i];
            if (!strcmp(a, "--out")) o.out = v;
            else if (!strcmp(a, "--character")) o.character = v;
            else if (!strcmp(a, "--adapter")) o.adapter = v;
            else if (!strcmp(a, "--refs")) o.refs = v;
            else if (!strcmp(a, "--label")) o.label = v;
            else if (!strcmp(a, "--judge-url")) judge_url = v;
            else if (!strcmp(a, "--judge-model")) judge_model = v;
            else if (!strcmp(a, "--judge-key-env")) judge_key = v;
            else if (!strcmp(a, "--judge-gguf")) judge_gguf = v;
            else if (!strcmp(a, "--guard")) { if (int_arg(a, v, 0, 16, &o.guard)) goto done; }
            else if (!strcmp(a, "--best-of")) { if (int_arg(a, v, 1, 16, &o.best_of)) goto done; }
            else if (!strcmp(a, "--unblind")) unblind = v;
            else if (!strcmp(a, "--seed")) {
                int seed;
                if (int_arg(a, v, 0, 2147483647, &seed)) goto done;
                o.sp.seed = (uint64_t)seed;
            }
            else if (!strcmp(a, "--guard-checks")) {
                lm_err ge = {{0}};
                long bits = lm_guard_parse(v, &ge);
                if (bits <= 0) {
                    fprintf(stderr, "lemonpc eval: --guard-checks: %s\n",
                            bits < 0 ? ge.msg : "no check named");
                    goto done;
                }
                o.guard_checks = (unsigned)bits;
            }
            else if (!strcmp(a, "--persona")) {
                o.persona = lm_persona_mode_parse(v);
                if (o.persona < 0) {
                    fprintf(stderr, "lemonpc eval: --persona wants full, short or none, got '%s'\n", v);
                    goto done;
                }
            } else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
                if (int_arg(a, v, 1, 4096, &o.max_tokens)) goto done;
            } else if (int_arg(a, v, 1, 1024, &o.threads)) goto done;
            continue;
        }
        if (a[0] == '-' && a[1]) {
            fprintf(stderr, "lemonpc eval: unknown option '%s' (see --help)\n", a);
            goto done;
        }
        pos[npos++] = a;
    }
    lm_err err = {0};
    if (unblind) {
        rc = lm_blind_tally(unblind, &err) ? 1 : 0;
        if (rc) fprintf(stderr, "lemonpc eval: %s\n", err.msg);
        else printf("%s/verdict.md\n", unblind);
        goto done;
    }
    if (!o.out) {
        fprintf(stderr, "lemonpc eval: --out DIR is required\n\n");
        usage(stderr);
        goto done;
    }
    if (blind) {
        if (npos != 2) { fprintf(stderr, "lemonpc eval: --blind wants two eval folders\n"); goto done; }
        rc = lm_blind_write(pos[0], pos[1], o.out, o.sp.seed, &err) ? 1 : 0;
        if (rc) fprintf(stderr, "lemonpc eval: %s\n", err.msg);
        else printf("%s/items.md\n", o.out);
        goto done;
    }
    if (compare) {
        if (npos < 1) { fprintf(stderr, "lemonpc eval: --compare wants report folders\n"); goto done; }
        rc = lm_eval_compare(pos, npos, o.out, &err) ? 1 : 0;
        if (rc) fprintf(stderr, "lemonpc eval: %s\n", err.msg);
        else printf("%s/compare.md\n%s/compare.svg\n", o.out, o.out);
        goto done;
    }
    if (npos != 2) {
        fprintf(stderr, "lemonpc eval: want MODEL and QUESTIONS.jsonl, got %d argument%s\n\n", npos,
                npos == 1 ? "" : "s");
        usage(stderr);
        goto done;
    }
    o.model = pos[0];
    o.questions = pos[1];
    if (!o.character) o.persona = LM_PERSONA_NONE;
    else {
        lm_character *c = NULL;
        lm_world *w = NULL;
        if (lm_sheet_load_character(o.character, &c, &w, &err) == 0)
            o.persona = cli_persona_mode(o.model, o.adapter, o.persona, LM_PERSONA_SHORT, c, w, &err);
        else o.persona = -1;
        lm_world_free(w);
        lm_character_free(c);
        if (o.persona < 0) {
            fprintf(stderr, "lemonpc eval: %s\n", err.msg);
            rc = 1;
            goto done;
        }
    }
    if (judge_url && judge_gguf) {
        fprintf(stderr, "lemonpc eval: --judge-url and --judge-gguf: give one judge\n");
        goto done;
    }
    if ((judge_model || judge_key) && !judge_url) {
        fprintf(stderr, "lemonpc eval: --judge-model and --judge-key-env go with --judge-url\n");
        goto done;
    }
    if (judge_url) {
        lm_teacher_http_config hc = lm_teacher_http_config_default();
        hc.base_url = judge_url;
        hc.model = judge_model;
        hc.api_key_env = judge_key;
        o.judge = lm_teacher_http_new(&hc, &err);
    } else if (judge_gguf) {
        lm_teacher_local_config lc = {.model_path = judge_gguf, .threads = o.threads, .seed = 1};
        o.judge = lm_teacher_local_new(&lc, &err);
    }
    if ((judge_url || judge_gguf) && !o.judge) {
        fprintf(stderr, "lemonpc eval: judge: %s\n", err.msg);
        rc = 1;
        goto done;
    }
    rc = lm_eval_run(&o, &err) ? 1 : 0;
    lm_teacher_free(o.judge);
    if (rc) fprintf(stderr, "lemonpc eval: %s\n", err.msg);
    else printf("%s/report.md\n", o.out);
done:
    free(pos);
    return rc;
}
