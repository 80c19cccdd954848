#include "cli/cli_gen.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/strbuf.h"
#include "runtime/generate.h"
#include "runtime/npc_stamp.h"
#include "sheet/sheet.h"

const char CLI_GEN_FLAGS_HELP[] =
    "  -n, --n-predict N     most tokens per reply (default 256; chat 512)\n"
    "  --temp T              temperature; 0 = greedy (default 0.8)\n"
    "  --top-k K             keep the K most likely tokens; 0 = off (default 40)\n"
    "  --top-p P             keep the smallest set with probability >= P; 1 = off (default 0.95)\n"
    "  --min-p M             drop tokens below M * p(best); 0 = off (default 0.05)\n"
    "  --repeat-penalty R    penalise the last --repeat-last-n tokens; 1 = off (default 1.0)\n"
    "  --repeat-last-n N     window of the repetition penalty (default 64)\n"
    "  --seed S              sampling seed (default 0: same output every run)\n"
    "  -t, --threads N       worker threads (default: all CPUs)\n"
    "  -c, --ctx N           context size in tokens (default min(2048, model's))\n"
    "  --character SHEET.md  speak as this character: its sheet (and the world.md of its\n"
    "                        sheet folder) becomes the system message\n"
    "  --persona MODE        how much of the sheet: full (the base model needs it), short\n"
    "                        (one line) or none; default: the mode stamped in the adapter or\n"
    "                        model by `lemonpc build` (short), else full\n"
    "  --asker TEXT          who is speaking to the character (\"a young acolyte\"), and\n"
    "  --place TEXT          where: the scene lines of the system message\n"
    "  --adapter FILE        apply a LoRA adapter GGUF (llama.cpp format) without merging\n"
    "  --adapter-scale S     multiply the adapter's alpha/r by S (default 1)\n"
    "  -v, --verbose         print timings (prompt/decode tok/s, time to first token) on stderr\n";

void cli_gen_opts_init(cli_gen_opts *o, int n_predict) {
    memset(o, 0, sizeof *o);
    o->n_predict = n_predict;
    o->adapter_scale = 1.0f;
    o->persona = -1;
    o->sp = lm_sampler_defaults();
}

static int parse_long(const char *cmd, const char *flag, const char *s, long lo, long hi,
                      long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "lemonpc %s: %s wants an integer in [%ld, %ld], got '%s'\n", cmd, flag,
                lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_float(const char *cmd, const char *flag, const char *s, double lo, double hi,
                       float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "lemonpc %s: %s wants a number in [%g, %g], got '%s'\n", cmd, flag, lo,
                hi, s);
        return -1;
    }
    *out = (float)v;
    return 0;
}

int cli_gen_parse_flag(const char *cmd, int argc, char **argv, int *i, cli_gen_opts *o) {
    const char *a = argv[*i];
    if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) { o->verbose = true; return 1; }
    static const char *const with_value[] = {
        "-n", "--n-predict", "--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty",
        "--repeat-last-n", "--seed", "-t", "--threads", "-c", "--ctx", "--character",
        "--adapter", "--adapter-scale", "--persona", "--asker", "--place",
    };
    bool known = false;
    for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++)
        if (!strcmp(a, with_value[k])) known = true;
    if (!known) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "lemonpc %s: %s needs a value\n", cmd, a);
        return -1;
    }
    const char *v = argv[++*i];
    long n;
    if (!strcmp(a, "--character")) {
        o->character = v;
        return 1;
    }
    if (!strcmp(a, "--asker") || !strcmp(a, "--place")) {
        *(!strcmp(a, "--asker") ? &o->asker : &o->place) = v;
        return 1;
    }
    if (!strcmp(a, "--persona")) {
        int m = lm_persona_mode_parse(v);
        if (m < 0) {
            fprintf(stderr, "lemonpc %s: --persona wants full, short or none, got '%s'\n", cmd, v);
            return -1;
        }
        o->persona = m;
        return 1;
    }
    if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
        if (parse_long(cmd, a, v, 1, 1 << 24, &n)) return -1;
        o->n_predict = (int)n;
    } else if (!strcmp(a, "--temp")) {
        if (parse_float(cmd, a, v, 0, 100, &o->sp.temp)) return -1;
    } else if (!strcmp(a, "--top-k")) {
        if (parse_long(cmd, a, v, 0, 1 << 24, &n)) return -1;
        o->sp.top_k = (int)n;
    } else if (!strcmp(a, "--top-p")) {
        if (parse_float(cmd, a, v, 0, 1, &o->sp.top_p)) return -1;
        if (o->sp.top_p <= 0) {
            fprintf(stderr, "lemonpc %s: --top-p must be > 0\n", cmd);
            return -1;
        }
    } else if (!strcmp(a, "--min-p")) {
        if (parse_float(cmd, a, v, 0, 1, &o->sp.min_p)) return -1;
    } else if (!strcmp(a, "--repeat-penalty")) {
        if (parse_float(cmd, a, v, 1e-3, 100, &o->sp.repeat_penalty)) return -1;
    } else if (!strcmp(a, "--repeat-last-n")) {
        if (parse_long(cmd, a, v, 0, 1 << 20, &n)) return -1;
        o->sp.repeat_last_n = (int)n;
    } else if (!strcmp(a, "--seed")) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (errno || end == v || *end || v[0] == '-') {
            fprintf(stderr, "lemonpc %s: --seed wants a non-negative integer, got '%s'\n", cmd, v);
            return -1;
        }
        o->sp.seed = s;
    } else if (!strcmp(a, "--adapter")) {
        o->adapter = v;
    } else if (!strcmp(a, "--adapter-scale")) {
        char *end;
        errno = 0;
        double s = strtod(v, &end);
        if (errno || end == v || *end || !(s > -1e6 && s < 1e6)) {
            fprintf(stderr, "lemonpc %s: --adapter-scale wants a number, got '%s'\n", cmd, v);
            return -1;
        }
        o->adapter_scale = (float)s;
    } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
        if (parse_long(cmd, a, v, 1, 1024, &n)) return -1;
        o->threads = (int)n;
    } else {   /* -c, --ctx */
        if (parse_long(cmd, a, v, 1, 1 << 24, &n)) return -1;
        o->n_ctx = (int)n;
    }
    return 1;
}

int cli_persona_mode(const char *model, const char *adapter, int asked, int fallback,
                     const lm_character *c, const lm_world *w, lm_err *err) {
    lm_npc_stamp st = {0};
    const char *from = adapter ? adapter : model;
    if (lm_npc_stamp_read(from, &st, err)) return -1;
    if (!st.present && adapter && lm_npc_stamp_read(model, &st, err)) return -1;
    char warn[512];
    int mode = lm_npc_persona_mode(&st, asked >= 0 ? asked : -1, c, w, warn, sizeof warn);
    if (!st.present && asked < 0) mode = fallback;
    if (warn[0]) fprintf(stderr, "lemonpc: warning: %s\n", warn);
    return mode;
}

/* The sheet's system turn under the persona policy (sheet.h), in the mode
 * the NPC was trained with unless --persona says otherwise. */
static char *persona_from_sheet(const cli_gen_opts *o, lm_err *err) {
    lm_character *c = NULL;
    lm_world *w = NULL;
    if (lm_sheet_load_character(o->character, &c, &w, err)) return NULL;
    lm_scene sc = {o->asker, o->place};
    int mode = cli_persona_mode(o->model, o->adapter, o->persona, LM_PERSONA_FULL, c, w, err);
    char *out = mode < 0 ? NULL : lm_persona_system(c, w, (lm_persona_mode)mode, &sc, err);
    if (!out && err->msg[0]) lm_err_prefix(err, "%s", o->character);
    lm_world_free(w);
    lm_character_free(c);
    return out;
}

const char *cli_gen_system(const cli_gen *g, const cli_gen_opts *o) {
    return o->system ? o->system : g->persona;
}

int cli_gen_open(cli_gen *g, const cli_gen_opts *o, lm_err *err) {
    memset(g, 0, sizeof *g);
    if (o->character && o->system) {
        lm_errf(err, "--character and --system both set the system message: give one");
        return -1;
    }
    if ((o->asker || o->place) && !o->character) {
        lm_errf(err, "--asker and --place describe the scene of a --character: give one");
        return -1;
    }
    if (o->character && !(g->persona = persona_from_sheet(o, err)) && err->msg[0]) goto fail;
    g->model = lm_model_load(o->model, err);
    if (!g->model) goto fail;
    g->tok = lm_tokenizer_load(g->model->gguf, err);
    if (!g->tok) { lm_err_prefix(err, "%s", o->model); goto fail; }
    if (lm_tokenizer_n_vocab(g->tok) != g->model->cfg.n_vocab) {
        lm_errf(err, "%s: tokenizer has %d tokens but token_embd.weight has %d rows", o->model,
                lm_tokenizer_n_vocab(g->tok), g->model->cfg.n_vocab);
        goto fail;
    }
    g->pool = lm_pool_new(o->threads, err);
    if (!g->pool) goto fail;
    g->ctx = lm_ctx_new(g->model, o->n_ctx, g->pool, err);
    if (!g->ctx) { lm_err_prefix(err, "%s", o->model); goto fail; }
    if (o->adapter) {
        if (!(g->adapter = lm_adapter_load(g->model, o->adapter, err))) goto fail;
        if (lm_ctx_set_adapter(g->ctx, g->adapter, o->adapter_scale, err)) goto fail;
    }
    g->smp = lm_sampler_new(&o->sp, g->model->cfg.n_vocab, err);
    if (!g->smp) goto fail;
    g->logits = malloc(sizeof(float) * (size_t)g->model->cfg.n_vocab);
    if (!g->logits) { lm_errf(err, "out of memory"); goto fail; }
    g->eos = lm_tokenizer_eos(g->tok);
    g->im_end = lm_tokenizer_find(g->tok, "<|im_end|>");
    g->n_predict = o->n_predict;
    return 0;
fail:
    cli_gen_close(g);
    return -1;
}

void cli_gen_close(cli_gen *g) {
    free(g->persona);
    free(g->logits);
    lm_sampler_free(g->smp);
    lm_ctx_free(g->ctx);
    lm_adapter_free(g->adapter);
    lm_pool_free(g->pool);
    lm_tokenizer_free(g->tok);
    lm_model_free(g->model);
    memset(g, 0, sizeof *g);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int put_piece(void *ud, const char *piece, size_t n, lm_err *err) {
    (void)err;
    FILE *out = ud;
    fwrite(piece, 1, n, out);
    fflush(out);
    return 0;
}

int cli_gen_reply(cli_gen *g, const int32_t *prompt, size_t n_prompt, FILE *out, char **reply,
                  bool *hit_ctx_end, cli_gen_stats *st, lm_err *err) {
    memset(st, 0, sizeof *st);
    *hit_ctx_end = false;
    if (reply) *reply = NULL;
    int room = lm_ctx_n_ctx(g->ctx) - lm_ctx_n_past(g->ctx);
    if (n_prompt == 0) return lm_errf(err, "empty prompt");
    if (n_prompt > (size_t)room)
        return lm_errf(err, "context full: the prompt needs %zu tokens but only %d of %d are "
                       "free (raise --ctx, or /reset in chat)", n_prompt, room,
                       lm_ctx_n_ctx(g->ctx));
    double t0 = now_s();
    if (lm_eval(g->ctx, prompt, (int)n_prompt, LM_LOGITS_LAST, g->logits, err)) return -1;
    for (size_t i = 0; i < n_prompt; i++) lm_sampler_accept(g->smp, prompt[i]);
    double t1 = now_s();
    st->n_prompt = (int)n_prompt;
    st->prompt_s = t1 - t0;

    lm_sb text = {0};
    lm_gen_params p = {.max_tokens = g->n_predict};
    lm_decoder d = {g->ctx, g->tok, g->smp, g->logits, g->eos, g->im_end, g->eval_all,
                    put_piece, out};
    lm_gen_info info = {0};
    int rc = lm_decode(&d, &p, reply ? &text : NULL, &info, err);
    if (info.first_token_at > 0) st->ttft_s = info.first_token_at - t0;
    st->n_gen = info.n_gen;
    *hit_ctx_end = info.hit_ctx;
    st->gen_s = now_s() - t1;
    if (rc) { lm_sb_free(&text); return -1; }
    if (reply && !(*reply = lm_sb_take(&text))) return lm_errf(err, "out of memory");
    return 0;
}

void cli_gen_print_stats(const cli_gen_stats *st) {
    fprintf(stderr, "\nprompt: %d tokens in %.3f s (%.1f tok/s); time to first token %.3f s\n",
            st->n_prompt, st->prompt_s, st->prompt_s > 0 ? st->n_prompt / st->prompt_s : 0.0,
            st->ttft_s);
    fprintf(stderr, "decode: %d tokens in %.3f s (%.1f tok/s)\n", st->n_gen, st->gen_s,
            st->gen_s > 0 ? st->n_gen / st->gen_s : 0.0);
}
