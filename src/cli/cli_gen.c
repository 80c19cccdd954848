#include "cli/cli_gen.h"
#include "runtime/guard.h"
#include "base/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/strbuf.h"
#include "runtime/npc_stamp.h"
#include "sheet/sheet.h"
#include "tensor/ops.h"

const char CLI_GEN_FLAGS_HELP[] =
    "  -n, --n-predict N     most tokens per reply (default 256; chat 512)\n"
    "  --temp T              temperature; 0 = greedy (default 0.8)\n"
    "  --top-k K             keep the K most likely tokens; 0 = off (default 40)\n"
    "  --top-p P             keep the smallest set with probability >= P; 1 = off (default 0.95)\n"
    "  --min-p M             drop tokens below M * p(best); 0 = off (default 0.05)\n"
    "  --repeat-penalty R    penalise the last --repeat-last-n tokens; 1 = off (default 1.1,\n"
    "                        the runtime's; generate: 1.0, llama.cpp's)\n"
    "  --repeat-last-n N     window of the repetition penalty (default 64)\n"
    "  --seed S              sampling seed (default 0: same output every run)\n"
    "  -t, --threads N       worker threads (default: all CPUs)\n"
    "  -c, --ctx N           context size in tokens (default min(2048, model's))\n"
    "  --kv TYPE             KV cache element type: f16 (default, as llama.cpp's) or f32\n"
    "                        (twice the memory per token; logits as llama.cpp's f32 cache)\n"
    "  --character SHEET.md  speak as this character: its sheet (and the world.md of its\n"
    "                        sheet folder) becomes the system message\n"
    "  --persona MODE        how much of the sheet: full (the base model needs it), short\n"
    "                        (one line) or none; default: the mode stamped in the adapter or\n"
    "                        model by `lemonpc build` (short), else full\n"
    "  --asker TEXT          who is speaking to the character (\"a young acolyte\"), and\n"
    "  --place TEXT          where: the scene lines of the system message\n"
    "  --adapter FILE        apply a LoRA adapter GGUF (llama.cpp format) without merging\n"
    "  --adapter-scale S     multiply the adapter's alpha/r by S (default 1)\n"
    "  --guard N             check each reply before it is shown (not with --raw): one\n"
    "                        that fails the checks is drawn again, up to N times (0 = off)\n"
    "  --guard-checks LIST   voice, modern, ended, loop, dodge, ignorance; default (the\n"
    "                        first four) or all (default: default)\n"
    "  --best-of N           the guard draws N replies (then --guard more while none\n"
    "                        passes) and shows, of those passing, the one most about\n"
    "                        the line (each draw costs a reply's decoding; 1 = off)\n"
    "  -v, --verbose         print the kernel set (LEMONPC_KERNELS=avx512|avx2|scalar forces one)\n"
    "                        and timings (prompt/decode tok/s, time to first token) on stderr\n";

void cli_gen_opts_init(cli_gen_opts *o, int n_predict) {
    memset(o, 0, sizeof *o);
    o->n_predict = n_predict;
    o->adapter_scale = 1.0f;
    o->persona = -1;
    o->guard = lemonpc_npc_default_params().guard;
    o->sp = lm_sampler_defaults();
    /* The runtime's default (lemonpc_sampling_defaults): without a penalty
     * SmolLM2-135M loops (at the chat's temperature and greedy, 4 of 10
     * replies of 256 tokens repeated a 6-word run 3 times or more; none at
     * 1.1). generate keeps llama.cpp's 1.0, for scripts comparing the two. */
    o->sp.repeat_penalty = 1.1f;
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
        "--adapter", "--adapter-scale", "--persona", "--asker", "--place", "--kv", "--guard",
        "--guard-checks", "--best-of",
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
    if (!strcmp(a, "--kv")) {
        if (strcmp(v, "f16") && strcmp(v, "f32")) {
            fprintf(stderr, "lemonpc %s: --kv wants f16 or f32, got '%s'\n", cmd, v);
            return -1;
        }
        o->kv_type = !strcmp(v, "f16") ? LEMONPC_KV_F16 : LEMONPC_KV_F32;
        return 1;
    }
    if (!strcmp(a, "--guard-checks")) {
        lm_err ge = {{0}};
        long bits = lm_guard_parse(v, &ge);
        if (bits <= 0) {
            fprintf(stderr, "lemonpc %s: --guard-checks: %s\n", cmd, bits < 0 ? ge.msg : "no check named");
            return -1;
        }
        o->guard.checks = (unsigned)bits;
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
    } else if (!strcmp(a, "--guard")) {
        if (parse_long(cmd, a, v, 0, 16, &n)) return -1;
        o->guard.retries = (int)n;
    } else if (!strcmp(a, "--best-of")) {
        if (parse_long(cmd, a, v, 1, 16, &n)) return -1;
        o->guard.best_of = (int)n;
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

/* A sheet file under dir (dir/characters/X.md, else dir/X.md but world.md)
 * into out, for the hint when --character names a folder; "" if none. */
static void sheet_in_folder(const char *dir, char *out, size_t cap) {
    out[0] = '\0';
    char sub[1024];
    snprintf(sub, sizeof sub, "%s/characters", dir);
    const char *tries[2] = {sub, dir};
    for (int t = 0; t < 2 && !out[0]; t++) {
        DIR *d = opendir(tries[t]);
        if (!d) continue;
        for (struct dirent *e; !out[0] && (e = readdir(d));) {
            size_t k = strlen(e->d_name);
            if (k > 3 && !strcmp(e->d_name + k - 3, ".md") && strcmp(e->d_name, "world.md"))
                snprintf(out, cap, "%s/%s", tries[t], e->d_name);
        }
        closedir(d);
    }
}

int cli_npc_open(cli_npc *n, const cli_gen_opts *o, lemonpc_error *err) {
    memset(n, 0, sizeof *n);
    struct stat st;
    if (o->character && stat(o->character, &st) == 0 && S_ISDIR(st.st_mode)) {
        char ex[1100];
        sheet_in_folder(o->character, ex, sizeof ex);
        snprintf(err->message, sizeof err->message,
                 "--character %.300s: is a folder; give one character's sheet file (%s%.400s)",
                 o->character, ex[0] ? "such as " : "FOLDER/characters/NAME.md",
                 ex[0] ? ex : "");
        return err->code = LEMONPC_ERR_INVALID;
    }
    if (o->character && o->system) {
        snprintf(err->message, sizeof err->message,
                 "--character and --system both set the system message: give one");
        return err->code = LEMONPC_ERR_INVALID;
    }
    if ((o->asker || o->place) && !o->character) {
        snprintf(err->message, sizeof err->message,
                 "--asker and --place describe the scene of a --character: give one");
        return err->code = LEMONPC_ERR_INVALID;
    }
    lemonpc_model_params mp = {.threads = o->threads, .n_ctx = o->n_ctx, .kv_type = o->kv_type};
    if (!(n->model = lemonpc_model_load(o->model, &mp, err))) return err->code;
    /* the load checked LEMONPC_KERNELS: the set named is the one that runs */
    if (o->verbose) fprintf(stderr, "kernels: %s\n", lm_kernels_name());
    lemonpc_npc_params np = lemonpc_npc_default_params();
    np.sheet = o->character;
    np.system = o->system;
    np.persona = o->persona < 0 ? LEMONPC_PERSONA_AUTO : (lemonpc_persona)o->persona;
    np.adapter = o->adapter;
    np.adapter_scale = o->adapter_scale;
    np.guard = o->guard;
    np.sampling = (lemonpc_sampling){.temperature = o->sp.temp, .top_k = o->sp.top_k,
                                     .top_p = o->sp.top_p, .min_p = o->sp.min_p,
                                     .repeat_penalty = o->sp.repeat_penalty,
                                     .repeat_last_n = o->sp.repeat_last_n, .seed = o->sp.seed,
                                     .max_tokens = o->n_predict};
    if (!(n->npc = lemonpc_npc_load(n->model, &np, err))) {
        cli_npc_close(n);
        return err->code;
    }
    if (lemonpc_npc_warning(n->npc)[0])
        fprintf(stderr, "lemonpc: warning: %s\n", lemonpc_npc_warning(n->npc));
    return LEMONPC_OK;
}

void cli_npc_close(cli_npc *n) {
    lemonpc_npc_free(n->npc);
    lemonpc_model_free(n->model);
    memset(n, 0, sizeof *n);
}

int cli_put_text(void *user, const char *text, size_t len) {
    FILE *out = user;
    fwrite(text, 1, len, out);
    fflush(out);
    return 0;
}

void cli_print_reply_stats(const lemonpc_reply_info *i) {
    /* decoding starts at the first token (the time before it includes a
     * persona evaluated for the first time, which prompt_seconds does not) */
    double gen_s = i->total_seconds - i->first_token_seconds;
    /* under the guard the reply is shown once chosen: every draw (and its
     * scores) came before its first token */
    if (i->attempts > 1) gen_s = i->first_token_seconds - i->prompt_seconds;
    fprintf(stderr, "\nprompt: %d tokens in %.3f s (%.1f tok/s), %d reused from the cache; "
            "time to first token %.3f s\n", i->n_prompt, i->prompt_seconds,
            i->prompt_seconds > 0 ? i->n_prompt / i->prompt_seconds : 0.0, i->n_reused,
            i->first_token_seconds);
    fprintf(stderr, "decode: %d tokens in %.3f s (%.1f tok/s)\n", i->n_generated, gen_s,
            gen_s > 0 ? i->n_generated / gen_s : 0.0);
    if (i->attempts > 1) {
        char names[128];
        fprintf(stderr, "guard: %d draws%s%s", i->attempts,
                i->failed_checks ? "; still fails: " : "",
                i->failed_checks ? lm_guard_names(i->failed_checks, names, sizeof names) : "");
        if (i->relevance != 0) fprintf(stderr, "; relevance %.3f nats/token", i->relevance);
        fputc('\n', stderr);
    }
}

int cli_default_world_file(const char *dir, char *out, size_t cap) {
    const char *home = getenv("XDG_DATA_HOME");
    char base[512];
    if (home && *home) snprintf(base, sizeof base, "%s/lemonpc", home);
    else snprintf(base, sizeof base, "%s/.local/share/lemonpc", getenv("HOME") ? getenv("HOME") : ".");
    lm_err e = {{0}};
    if (lm_mkdir_p(base, &e)) return -1;
    char name[256];
    snprintf(name, sizeof name, "%s", dir);
    size_t k = strlen(name);
    while (k > 1 && name[k - 1] == '/') name[--k] = '\0';
    const char *slash = strrchr(name, '/');
    snprintf(out, cap, "%s/%s.db", base, slash ? slash + 1 : name);
    return 0;
}
