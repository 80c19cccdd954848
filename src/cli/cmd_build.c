/* lemonpc build: one command from a sheet folder to a fine-tuned NPC.
 *
 * Stages, each recorded in DIR/build.json when it finishes (wall time, peak
 * RSS, the key of its inputs):
 *   check    the sheet folder loads without errors
 *   dataset  curated (+ teacher) conversations -> DIR/data (assemble.h)
 *   train    `lemonpc train` -> DIR/run (LoRA by default, --full)
 *   pairs    (--dpo) `lemonpc pairs`: the trained NPC's own samples on the
 *            train split, scored -> DIR/dpo/pairs.jsonl
 *   dpo      (--dpo) `lemonpc train --dpo`, continuing the SFT weights
 *            -> DIR/dpo/run; eval and export then take its best checkpoint
 *   eval     `lemonpc eval` on the held-out questions and the test split
 *   export   adapter GGUF, merged Q8_0 GGUF, PEFT folder -> DIR/export
 * A stage's key hashes its inputs and the previous stage's key, so a rerun
 * skips every finished stage whose inputs did not change and redoes the rest;
 * a killed train stage resumes from its last checkpoint. The stages that
 * need the model run as child processes of this same binary (their peak RSS
 * is measured apart, and they die with the build). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "cli/commands.h"
#include "datagen/assemble.h"
#include "model/adapter.h"
#include "runtime/npc_stamp.h"
#include "sheet/sheet.h"
#include "tokenizer/tokenizer.h"
#include "train/train_model.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc build WORLD_DIR --character NAME --out DIR [options]\n\n"
            "Builds an NPC from a sheet folder: check -> dataset -> fine-tune -> eval ->\n"
            "export, everything in DIR with DIR/build.json (inputs and their hashes, settings,\n"
            "per-stage wall time and peak RSS). Run it again after a kill or a change: it\n"
            "skips the finished stages whose inputs did not change.\n\n"
            "  --character NAME   the character (sheet id, file name, full or first name)\n"
            "  --out DIR          the build folder\n"
            "  --model FILE       base GGUF (default: $LEMONPC_MODEL, else SmolLM2-135M-Instruct\n"
            "                     in ${LEMONPC_CACHE:-~/.cache/lemonpc}, as scripts/fetch_model.sh puts it)\n"
            "  --data DIR         curated conversations, *.jsonl (default WORLD_DIR/data/<sheet file name>)\n"
            "  --extra FILE       teacher-generated conversations (lemonpc datagen's output) to add,\n"
            "                     deduplicated against the curated ones; repeatable\n"
            "  --questions FILE   held-out eval questions (default WORLD_DIR/eval/<sheet file name>.jsonl)\n"
            "  --persona MODE     system turn in training and use: short (default), full, none\n"
            "  --no-lore          train and evaluate without the lorebook block (the sheet's and\n"
            "                     world.md's ## Lore entries whose keys a line brings up) that a\n"
            "                     game's lemonpc_say puts before the player's line\n"
            "  --full             fine-tune all weights instead of a LoRA adapter\n"
            "  --lora-rank R      default 16 (alpha 2R)\n"
            "  --adapter-type T   f32 (default) or f16: the exported adapter's factors; f16 halves\n"
            "                     its file and the memory each NPC holds at run time\n"
            "  --lr X             default 4e-4 (LoRA), 1e-4 (full)\n"
            "  --epochs N         default 3\n"
            "  --batch N          rows per micro-batch (default 1), each --seq tokens of packed\n"
            "  --seq N            conversations (default 512)\n"
            "  --grad-accum N     micro-batches per step (default 4)\n"
            "  --seed S           split, shuffle and init (default 42)\n"
            "  -t, --threads N    default: all CPUs\n"
            "  --precision P      f32 (default) or bf16: the train and dpo stages' matmul inputs\n"
            "                     in bf16, sums and weights f32 (lemonpc train; AVX-512 BF16)\n"
            "  --dpo              after fine-tuning, preference training: the NPC samples answers\n"
            "                     to the train split, the filters pick chosen and rejected ones\n"
            "                     (lemonpc pairs), and DPO trains the weights further\n"
            "  --dpo-samples N    answers sampled per prompt (default 2)\n"
            "  --dpo-pairs MODE   self-play (default): the writer's reply against the NPC's own\n"
            "                     answer, failing ones first (SPIN); checks: only answers the\n"
            "                     filters reject (few, once an NPC is fine-tuned)\n"
            "  --dpo-review DIR   (implies --dpo) pairs from a reader's verdicts instead: a blind\n"
            "                     review (`lemonpc eval --blind`, verdicts.jsonl) of the NPC's\n"
            "                     replies, the preferred one chosen (lemonpc pairs --review, with\n"
            "                     its veto); repeatable, several readers vote\n"
            "  --dpo-max-prompts N  a seeded choice of N train prompts (default: all)\n"
            "  --dpo-beta X       DPO beta (default 0.1)\n"
            "  --dpo-nll A        add A times the chosen reply's per-token NLL to the DPO loss\n"
            "                     (RPO; default 0): holds the replies DPO prefers likely\n"
            "  --dpo-epochs N     default 1\n"
            "  --dpo-lr X         default 5e-5 (LoRA), 1e-6 (full)\n"
            "  --dpo-seq N        tokens per side (default 512, room for the lorebook block's 256;\n"
            "                     a pair's rows are padded to it, longer sides are cut)\n"
            "  --no-eval          skip the eval stage\n"
            "  -h, --help         this help\n"
            "Exit status: 0 ok, 1 error, 2 usage.\n");
}

typedef struct build_opts {
    const char *world, *character, *out, *model, *data, *questions;
    const char **extra;
    int n_extra;
    const char **reviews;          /* --dpo-review folders */
    int n_reviews;
    int persona, full, rank, epochs, batch, seq, accum, threads, no_eval, adapter_f16, bf16, no_lore;
    int dpo, dpo_samples, dpo_max_prompts, dpo_epochs, dpo_seq, dpo_checks_only;
    double lr, dpo_beta, dpo_lr, dpo_nll;
    unsigned long long seed;
} build_opts;

/* snprintf for paths (a path longer than the buffer is cut, never overrun;
 * no caller comes near PATH_MAX). */
static void pathf(char *out, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, cap, fmt, ap);
    va_end(ap);
}

/* ---- hashing inputs ---------------------------------------------------- */

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s) { return fnv_bytes(h, s ? s : "", s ? strlen(s) + 1 : 1); }

/* Hash of a file's contents (0 with err set when it cannot be read). */
static int hash_file(const char *path, uint64_t *out, lm_err *err) {
    char *d;
    size_t n;
    if (lm_read_file(path, &d, &n, false, err)) return -1;
    *out = fnv_bytes(1469598103934665603ull, d, n);
    free(d);
    return 0;
}

static void hex(uint64_t h, char out[17]) { snprintf(out, 17, "%016llx", (unsigned long long)h); }

/* The *.jsonl (or *.md) files of dir, sorted; NULL-terminated, malloc'd. */
static char **list_files(const char *dir, const char *suffix, size_t *n, lm_err *err) {
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return lm_errno(err, "%s", dir), NULL;
    char **v = NULL;
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name), sl = strlen(suffix);
        if (l <= sl || strcmp(e->d_name + l - sl, suffix) || e->d_name[0] == '.') continue;
        if (*n + 2 > cap) {
            cap = cap ? cap * 2 : 16;
            char **q = realloc(v, cap * sizeof *q);
            if (!q) break;
            v = q;
        }
        size_t need = strlen(dir) + l + 2;
        v[*n] = malloc(need);
        if (!v[*n]) break;
        snprintf(v[*n], need, "%s/%s", dir, e->d_name);
        (*n)++;
        v[*n] = NULL;
    }
    closedir(d);
    for (size_t i = 1; i < *n; i++)   /* insertion sort: a handful of files */
        for (size_t j = i; j > 0 && strcmp(v[j - 1], v[j]) > 0; j--) {
            char *t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    if (!*n) {
        free(v);
        lm_errf(err, "%s: no %s files", dir, suffix);
        return NULL;
    }
    return v;
}

static void free_list(char **v, size_t n) {
    for (size_t i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

/* ---- build.json -------------------------------------------------------- */

typedef struct build {
    const build_opts *o;
    json_t *doc;           /* build.json */
    char path[PATH_MAX];   /* DIR/build.json */
    char self[PATH_MAX];   /* this binary */
    int n_stages, at;
} build;

static int save(build *b, lm_err *err) {
    char *s = json_dumps(b->doc, JSON_INDENT(2));
    int rc = s ? lm_write_file_atomic(b->path, s, strlen(s), err) : lm_errf(err, "out of memory");
    free(s);
    return rc;
}

/* Whether stage `name` finished with this key. */
static int stage_done(build *b, const char *name, const char *key) {
    json_t *st = json_object_get(json_object_get(b->doc, "stages"), name);
    return json_is_true(json_object_get(st, "done")) &&
           !strcmp(json_string_value(json_object_get(st, "key")) ?: "", key);
}

static void stage_begin(build *b, const char *name) {
    b->at++;
    fprintf(stderr, "[build %d/%d] %s\n", b->at, b->n_stages, name);
}

static int stage_end(build *b, const char *name, const char *key, double wall, long rss_kb,
                     json_t *extra, lm_err *err) {
    json_t *st = json_pack("{s:b, s:s, s:f, s:f}", "done", 1, "key", key, "wall_s", wall,
                           "peak_rss_mb", (double)rss_kb / 1024.0);
    if (extra) json_object_update(st, extra);
    json_decref(extra);
    json_object_set_new(json_object_get(b->doc, "stages"), name, st);
    fprintf(stderr, "[build %d/%d] %s done in %.1f s, peak RSS %.0f MB\n", b->at, b->n_stages, name,
            wall, (double)rss_kb / 1024.0);
    return save(b, err);
}

static void stage_skip(build *b, const char *name) {
    b->at++;
    fprintf(stderr, "[build %d/%d] %s: done before, inputs unchanged\n", b->at, b->n_stages, name);
}

/* Drops the record of a stage (it is being redone). */
static int stage_reset(build *b, const char *name, lm_err *err) {
    json_object_del(json_object_get(b->doc, "stages"), name);
    return save(b, err);
}

/* Runs this binary with argv (argv[0] is the command name); returns the
 * exit status, *rss_kb the child's peak RSS. The child dies with us. */
static int run_self(build *b, char *const *argv, long *rss_kb, lm_err *err) {
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return lm_errno(err, "fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        size_t n = 0;
        while (argv[n]) n++;
        char **av = calloc(n + 2, sizeof *av);
        if (!av) _exit(127);
        av[0] = b->self;
        for (size_t i = 0; i < n; i++) av[i + 1] = argv[i];
        execv(b->self, av);
        _exit(127);
    }
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0)
        if (errno != EINTR) return lm_errno(err, "wait");
    *rss_kb = ru.ru_maxrss;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    if (WIFSIGNALED(status)) return lm_errf(err, "lemonpc %s died of signal %d", argv[0], WTERMSIG(status));
    return lm_errf(err, "lemonpc %s failed (exit status %d; its message is above)", argv[0],
                   WEXITSTATUS(status));
}

/* This process's peak RSS in KB: VmHWM (ru_maxrss would also count the
 * image that exec'd us, e.g. a Python test runner). */
static long peak_rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return kb;
}

static int exists(const char *p) {
    struct stat s;
    return stat(p, &s) == 0;
}

static int rm_rf(const char *p) {
    if (!exists(p)) return 0;
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", "--", p, (char *)NULL);
        _exit(127);
    }
    int st;
    return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* ---- stages ------------------------------------------------------------ */

typedef struct ctx {
    build b;
    lm_sheet_dir *sheets;
    const lm_character *c;
    char stem[256];          /* the sheet's file name without .md */
    char data_dir[PATH_MAX], questions[PATH_MAX], model[PATH_MAX];
    char k_check[17], k_data[17], k_train[17], k_pairs[17], k_dpo[17], k_eval[17];
} ctx;

static int do_check(ctx *x, lm_err *err) {
    const build_opts *o = x->b.o;
    lm_diags d = {0};
    x->sheets = lm_sheet_dir_load(o->world, &d);
    size_t n_err = lm_diags_count(&d, LM_DIAG_ERROR);
    if (!x->sheets || n_err) {
        lm_diags_sort(&d);
        for (size_t i = 0; i < d.n; i++)
            if (d.v[i].level == LM_DIAG_ERROR) {
                lm_errf(err, "%s:%d: %s (run `lemonpc check %s`)", d.v[i].file, d.v[i].line, d.v[i].msg, o->world);
                break;
            }
        if (!err->msg[0]) lm_errf(err, "%s: cannot load the sheet folder", o->world);
        lm_diags_free(&d);
        return -1;
    }
    lm_diags_free(&d);
    if (!(x->c = lm_sheet_find(x->sheets, o->character))) {
        char names[512] = "";
        for (size_t i = 0; i < x->sheets->n_chars; i++) {
            size_t l = strlen(names);
            snprintf(names + l, sizeof names - l, " %s", x->sheets->chars[i]->name);
        }
        return lm_errf(err, "%s: no character '%s' (the sheets have:%s)", o->world, o->character, names);
    }
    const char *p = x->c->path, *slash = strrchr(p, '/');
    pathf(x->stem, sizeof x->stem, "%s", slash ? slash + 1 : p);
    char *dot = strrchr(x->stem, '.');
    if (dot) *dot = '\0';
    /* key: the sheet folder's files */
    uint64_t h = 1469598103934665603ull, fh;
    char wpath[PATH_MAX];
    pathf(wpath, sizeof wpath, "%s/world.md", o->world);
    if (exists(wpath)) {
        if (hash_file(wpath, &fh, err)) return -1;
        h = fnv_bytes(h, &fh, sizeof fh);
    }
    if (hash_file(x->c->path, &fh, err)) return -1;
    h = fnv_bytes(h, &fh, sizeof fh);
    hex(h, x->k_check);
    return 0;
}

static int do_dataset(ctx *x, lm_err *err) {
    const build_opts *o = x->b.o;
    size_t n = 0;
    if (o->data) pathf(x->data_dir, sizeof x->data_dir, "%s", o->data);
    else pathf(x->data_dir, sizeof x->data_dir, "%s/data/%s", o->world, x->stem);
    char **files = list_files(x->data_dir, ".jsonl", &n, err);
    if (!files) {
        lm_err_prefix(err, "dataset (write the character's conversations there, or give --data)");
        return -1;
    }
    uint64_t h = fnv_str(1469598103934665603ull, x->k_check), fh;
    int rc = 0;
    json_t *inputs = json_object_get(x->b.doc, "inputs");
    char hx[17];
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = hash_file(files[i], &fh, err);
        h = fnv_str(fnv_bytes(h, &fh, sizeof fh), files[i]);
        hex(fh, hx);
        json_object_set_new(inputs, files[i], json_string(hx));
    }
    for (int i = 0; rc == 0 && i < o->n_extra; i++) {
        rc = hash_file(o->extra[i], &fh, err);
        h = fnv_str(fnv_bytes(h, &fh, sizeof fh), o->extra[i]);
        hex(fh, hx);
        json_object_set_new(inputs, o->extra[i], json_string(hx));
    }
    h = fnv_bytes(h, &o->seed, sizeof o->seed);
    h = fnv_bytes(h, &o->persona, sizeof o->persona);
    /* the lorebook block is counted in the model's tokens */
    h = o->no_lore ? fnv_str(h, "no-lore") : fnv_str(fnv_str(h, "lore"), x->model);
    hex(h, x->k_data);
    if (rc) { free_list(files, n); return -1; }
    if (stage_done(&x->b, "dataset", x->k_data)) {
        free_list(files, n);
        stage_skip(&x->b, "dataset");
        return 0;
    }
    stage_begin(&x->b, "dataset");
    if (stage_reset(&x->b, "dataset", err)) { free_list(files, n); return -1; }
    double t0 = lm_now_s();
    char out[PATH_MAX];
    pathf(out, sizeof out, "%s/data", o->out);
    lm_tokenizer *tok = NULL;
    if (!o->no_lore) {
        gguf_file *mf = gguf_open(x->model, err);
        tok = mf ? lm_tokenizer_load(mf, err) : NULL;
        gguf_close(mf);
        if (!tok) { free_list(files, n); return -1; }
    }
    lm_assemble_opts ao = {(const char *const *)files, n, o->extra, (size_t)o->n_extra, o->persona,
                           o->seed, 10, 10, out, tok};
    lm_assemble_stats st;
    rc = lm_assemble(&ao, x->c, x->sheets->world, &st, err);
    lm_tokenizer_free(tok);
    free_list(files, n);
    if (rc) return -1;
    fprintf(stderr, "  %zu conversations read, %zu rejected (%zu near-duplicates): train %zu, "
                    "validation %zu, test %zu; %zu multi-turn, %zu with lorebook entries\n",
            st.read, st.rejected, st.duplicates, st.train, st.val, st.test, st.multi_turn, st.with_lore);
    json_t *extra = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "read", (json_int_t)st.read, "rejected",
                              (json_int_t)st.rejected, "train", (json_int_t)st.train, "val",
                              (json_int_t)st.val, "test", (json_int_t)st.test, "with_lore",
                              (json_int_t)st.with_lore);
    return stage_end(&x->b, "dataset", x->k_data, lm_now_s() - t0, peak_rss_kb(), extra, err);
}

/* Starts a training stage's run folder: a killed run of the same key
 * resumes (*resume set), anything else starts over in an empty folder.
 * Records the started key so a rerun can tell. */
static int begin_run(ctx *x, const char *stage, const char *key, const char *run, bool *resume,
                     lm_err *err) {
    char state[PATH_MAX];
    pathf(state, sizeof state, "%s/last/state.json", run);
    json_t *st = json_object_get(json_object_get(x->b.doc, "stages"), stage);
    *resume = exists(state) && !strcmp(json_string_value(json_object_get(st, "started_key")) ?: "", key);
    if (!*resume && rm_rf(run)) return lm_errf(err, "%s: cannot remove the old run", run);
    json_object_set_new(json_object_get(x->b.doc, "stages"), stage,
                        json_pack("{s:b, s:s}", "done", 0, "started_key", key));
    return save(&x->b, err);
}

static int do_train(ctx *x, lm_err *err) {
    const build_opts *o = x->b.o;
    char a[16][64];
    snprintf(a[0], 64, "%d", o->full ? 0 : o->rank);
    snprintf(a[1], 64, "%d", o->full ? 0 : 2 * o->rank);
    snprintf(a[2], 64, "%g", o->lr > 0 ? o->lr : o->full ? 1e-4 : 4e-4);
    snprintf(a[3], 64, "%d", o->epochs);
    snprintf(a[4], 64, "%d", o->batch);
    snprintf(a[5], 64, "%d", o->seq);
    snprintf(a[6], 64, "%d", o->accum);
    snprintf(a[7], 64, "%llu", o->seed);
    snprintf(a[8], 64, "%d", o->threads);
    uint64_t h = fnv_str(fnv_str(1469598103934665603ull, x->k_data), x->model), mh;
    if (hash_file(x->model, &mh, err)) return -1;
    h = fnv_bytes(h, &mh, sizeof mh);
    h = fnv_str(h, o->full ? "full" : "lora");
    for (int i = 0; i < 8; i++) h = fnv_str(h, a[i]);   /* threads change nothing that matters */
    if (o->bf16) h = fnv_str(h, "bf16");   /* f32 keys stay what they were */
    hex(h, x->k_train);
    if (stage_done(&x->b, "train", x->k_train)) { stage_skip(&x->b, "train"); return 0; }
    stage_begin(&x->b, "train");
    char run[PATH_MAX], data[PATH_MAX], val[PATH_MAX];
    pathf(run, sizeof run, "%s/run", o->out);
    pathf(data, sizeof data, "%s/data/train.jsonl", o->out);
    pathf(val, sizeof val, "%s/data/val.jsonl", o->out);
    bool resume;
    if (begin_run(x, "train", x->k_train, run, &resume, err)) return -1;
    double t0 = lm_now_s();
    long rss = 0;
    int rc;
    if (resume) {
        fprintf(stderr, "  resuming the killed run in %s\n", run);
        char *av[] = {"train", "--resume", run, o->threads ? "--threads" : NULL, a[8], NULL};
        rc = run_self(&x->b, av, &rss, err);
    } else if (o->full) {
        char *av[] = {"train", "--model", x->model, "--data", data, "--val", val, "--out", run, "--full",
                      "--lr", a[2], "--epochs", a[3], "--batch", a[4], "--seq", a[5], "--grad-accum",
                      a[6], "--seed", a[7], "--pack", "--eval-every", "20",
                      "--precision", o->bf16 ? "bf16" : "f32", o->threads ? "--threads" : NULL, a[8], NULL};
        rc = run_self(&x->b, av, &rss, err);
    } else {
        char *av[] = {"train", "--model", x->model, "--data", data, "--val", val, "--out", run,
                      "--lora-rank", a[0], "--lora-alpha", a[1], "--lr", a[2], "--epochs", a[3],
                      "--batch", a[4], "--seq", a[5], "--grad-accum", a[6], "--seed", a[7], "--pack",
                      "--eval-every", "20", "--precision", o->bf16 ? "bf16" : "f32",
                      o->threads ? "--threads" : NULL, a[8], NULL};
        rc = run_self(&x->b, av, &rss, err);
    }
    if (rc) return -1;
    json_t *extra = json_pack("{s:s, s:s}", "started_key", x->k_train, "mode", o->full ? "full" : "lora");
    return stage_end(&x->b, "train", x->k_train, lm_now_s() - t0, rss, extra, err);
}

/* The supervised weights: run/best/adapter.gguf or run/best/model.gguf. */
static void sft_file(const ctx *x, char *out, size_t cap) {
    snprintf(out, cap, "%s/run/best/%s", x->b.o->out, x->b.o->full ? "model.gguf" : "adapter.gguf");
}

/* The weights eval and export take: DPO's best checkpoint with --dpo (its
 * last one when too few pairs were made to hold any out for validation). */
static void best_file(const ctx *x, char *out, size_t cap) {
    if (!x->b.o->dpo) { sft_file(x, out, cap); return; }
    const char *f = x->b.o->full ? "model.gguf" : "adapter.gguf";
    snprintf(out, cap, "%s/dpo/run/best/%s", x->b.o->out, f);
    if (!exists(out)) snprintf(out, cap, "%s/dpo/run/last/%s", x->b.o->out, f);
}

/* The key of the weights best_file names. */
static const char *final_key(const ctx *x) { return x->b.o->dpo ? x->k_dpo : x->k_train; }

static int do_pairs(ctx *x, lm_err *err) {
    const build_opts *o = x->b.o;
    char a[4][64];
    snprintf(a[0], 64, "%d", o->dpo_samples);
    snprintf(a[1], 64, "%d", o->dpo_max_prompts);
    snprintf(a[2], 64, "%llu", o->seed);
    snprintf(a[3], 64, "%d", o->threads);
    /* the samples' key (the NPC and how it is sampled), then the pairs' (how
     * they are picked from the samples) */
    uint64_t h = fnv_str(1469598103934665603ull, x->k_train);
    for (int i = 0; i < 3; i++) h = fnv_str(h, a[i]);
    /* a review's journal holds no samples, and replaces a self-play one */
    if (o->n_reviews) h = fnv_str(h, "reviews");
    char k_samples[17];
    hex(h, k_samples);
    h = fnv_str(h, o->dpo_checks_only ? "checks" : "self-play");
    /* a reader's verdicts: the review's three files are its inputs */
    static const char *const rfiles[] = {"key.json", "items.jsonl", "verdicts.jsonl"};
    json_t *inputs = json_object_get(x->b.doc, "inputs");
    for (int i = 0; i < o->n_reviews; i++) {
        h = fnv_str(h, "review");
        for (int j = 0; j < 3; j++) {
            char path[PATH_MAX], hx[17];
            uint64_t fh;
            pathf(path, sizeof path, "%s/%s", o->reviews[i], rfiles[j]);
            if (hash_file(path, &fh, err)) {
                lm_err_prefix(err, "--dpo-review %s (a blind review a reader judged)", o->reviews[i]);
                return -1;
            }
            h = fnv_bytes(h, &fh, sizeof fh);
            hex(fh, hx);
            json_object_set_new(inputs, path, json_string(hx));
        }
    }
    hex(h, x->k_pairs);
    if (stage_done(&x->b, "pairs", x->k_pairs)) { stage_skip(&x->b, "pairs"); return 0; }
    stage_begin(&x->b, "pairs");
    char dir[PATH_MAX], out[PATH_MAX], sft[PATH_MAX], data[PATH_MAX];
    pathf(dir, sizeof dir, "%s/dpo", o->out);
    if (mkdir(dir, 0777) && errno != EEXIST) return lm_errno(err, "%s", dir);
    pathf(out, sizeof out, "%s/pairs.jsonl", dir);
    sft_file(x, sft, sizeof sft);
    pathf(data, sizeof data, "%s/data/train.jsonl", o->out);
    const char *persona = lm_persona_mode_name((lm_persona_mode)o->persona);
    /* The journal (pairs.h) keeps the samples of a killed run, and of a run
     * that only picks its pairs another way; a retrained NPC (whose adapter
     * has the same path) or other sampling starts it over. */
    char journal[PATH_MAX + 16];
    pathf(journal, sizeof journal, "%s.samples.jsonl", out);
    const char *sk = json_string_value(json_object_get(
        json_object_get(json_object_get(x->b.doc, "stages"), "pairs"), "samples_key"));
    if (!sk || strcmp(sk, k_samples)) unlink(journal);
    json_object_set_new(json_object_get(x->b.doc, "stages"), "pairs",
                        json_pack("{s:b, s:s}", "done", 0, "samples_key", k_samples));
    if (save(&x->b, err)) return -1;
    char **av = calloc(24 + 2 * (size_t)o->n_reviews, sizeof *av);
    if (!av) return lm_errf(err, "out of memory");
    int n = 0;
    av[n++] = "pairs", av[n++] = o->full ? sft : x->model, av[n++] = "--out", av[n++] = out;
    av[n++] = "--character", av[n++] = (char *)x->c->path, av[n++] = "--persona", av[n++] = (char *)persona;
    if (o->n_reviews) {
        /* the reader's choices alone: nothing is sampled, and each review's
         * key gives the lorebook block its replies were made with */
        for (int i = 0; i < o->n_reviews; i++) av[n++] = "--review", av[n++] = (char *)o->reviews[i];
    } else {
        av[n++] = "--data", av[n++] = data, av[n++] = "--samples", av[n++] = a[0];
        av[n++] = "--seed", av[n++] = a[2], av[n++] = "--all-turns";
        if (!o->full) av[n++] = "--adapter", av[n++] = sft;
        if (o->dpo_max_prompts) av[n++] = "--max-prompts", av[n++] = a[1];
        if (!o->dpo_checks_only) av[n++] = "--self-play";
    }
    if (o->no_lore) av[n++] = "--no-lore";
    if (o->threads) av[n++] = "-t", av[n++] = a[3];
    double t0 = lm_now_s();
    long rss = 0;
    int rr = run_self(&x->b, av, &rss, err);
    free(av);
    if (rr) return -1;
    return stage_end(&x->b, "pairs", x->k_pairs, lm_now_s() - t0, rss,
                     json_pack("{s:s}", "samples_key", k_samples), err);
}

static int do_dpo(ctx *x, lm_err *err) {
    const build_opts *o = x->b.o;
    char a[7][64];
    snprintf(a[0], 64, "%g", o->dpo_beta);
    snprintf(a[1], 64, "%d", o->dpo_epochs);
    snprintf(a[2], 64, "%g", o->dpo_lr > 0 ? o->dpo_lr : o->full ? 1e-6 : 5e-5);
    snprintf(a[3], 64, "%llu", o->seed);
    snprintf(a[4], 64, "%d", o->threads);
    snprintf(a[5], 64, "%d", o->dpo_seq);
    snprintf(a[6], 64, "%g", o->dpo_nll);
    uint64_t h = fnv_str(1469598103934665603ull, x->k_pairs);
    for (int i = 0; i < 4; i++) h = fnv_str(h, a[i]);
    h = fnv_str(h, a[5]);
    if (o->bf16) h = fnv_str(h, "bf16");
    if (o->dpo_nll > 0) h = fnv_str(fnv_str(h, "nll"), a[6]);   /* keys without it stay */
    hex(h, x->k_dpo);
    if (stage_done(&x->b, "dpo", x->k_dpo)) { stage_skip(&x->b, "dpo"); return 0; }
    stage_begin(&x->b, "dpo");
    char run[PATH_MAX], pairs[PATH_MAX], sft[PATH_MAX];
    pathf(run, sizeof run, "%s/dpo/run", o->out);
    pathf(pairs, sizeof pairs, "%s/dpo/pairs.jsonl", o->out);
    sft_file(x, sft, sizeof sft);
    bool resume;
    if (begin_run(x, "dpo", x->k_dpo, run, &resume, err)) return -1;
    double t0 = lm_now_s();
    long rss = 0;
    int rc;
    if (resume) {
        fprintf(stderr, "  resuming the killed run in %s\n", run);
        char *av[] = {"train", "--resume", run, o->threads ? "--threads" : NULL, a[4], NULL};
        rc = run_self(&x->b, av, &rss, err);
    } else {
        /* LoRA: the SFT adapter is the reference and is trained further;
         * full: the fine-tuned model is both. */
        char *av[32] = {"train", "--model", o->full ? sft : x->model, "--dpo", pairs, "--val-frac", "0.1",
                        "--out", run, "--dpo-beta", a[0], "--epochs", a[1], "--lr", a[2], "--seed", a[3],
                        "--seq", a[5], "--eval-every", "10", "--precision", o->bf16 ? "bf16" : "f32",
                        "--dpo-nll", a[6]};
        int n = 25;
        if (o->full) av[n++] = "--full";
        else av[n++] = "--adapter", av[n++] = sft;
        if (o->threads) av[n++] = "--threads", av[n++] = a[4];
        rc = run_self(&x->b, av, &rss, err);
    }
    if (rc) return -1;
    return stage_end(&x->b, "dpo", x->k_dpo, lm_now_s() - t0, rss,
                     json_pack("{s:s}", "started_key", x->k_dpo), err);
}

static int do_eval(ctx *x, lm_err *err) {
    const build_opts *o = x->b.o;
    uint64_t h = fnv_str(1469598103934665603ull, final_key(x)), qh = 0;
    bool have_q = x->questions[0] && exists(x->questions);
    if (have_q && hash_file(x->questions, &qh, err)) return -1;
    h = fnv_bytes(h, &qh, sizeof qh);
    hex(h, x->k_eval);
    if (stage_done(&x->b, "eval", x->k_eval)) { stage_skip(&x->b, "eval"); return 0; }
    stage_begin(&x->b, "eval");
    /* A killed eval of the same key keeps its answers (lemonpc eval resumes
     * when its settings and files match); one of another key starts over. */
    char dir[PATH_MAX];
    pathf(dir, sizeof dir, "%s/eval", o->out);
    const char *sk = json_string_value(json_object_get(
        json_object_get(json_object_get(x->b.doc, "stages"), "eval"), "started_key"));
    if (sk && strcmp(sk, x->k_eval) && rm_rf(dir))
        return lm_errf(err, "%s: cannot remove the old evaluation", dir);
    json_object_set_new(json_object_get(x->b.doc, "stages"), "eval",
                        json_pack("{s:b, s:s}", "done", 0, "started_key", x->k_eval));
    if (save(&x->b, err)) return -1;
    char best[PATH_MAX], model[PATH_MAX], tq[PATH_MAX], refs[PATH_MAX], out1[PATH_MAX], out2[PATH_MAX];
    best_file(x, best, sizeof best);
    pathf(model, sizeof model, "%s", o->full ? best : x->model);
    pathf(tq, sizeof tq, "%s/data/test_questions.jsonl", o->out);
    pathf(refs, sizeof refs, "%s/data/test.jsonl", o->out);
    pathf(out1, sizeof out1, "%s/eval/heldout", o->out);
    pathf(out2, sizeof out2, "%s/eval/test", o->out);
    if (mkdir(dir, 0777) && errno != EEXIST) return lm_errno(err, "%s", dir);
    const char *persona = lm_persona_mode_name((lm_persona_mode)o->persona);
    char thr[16];
    pathf(thr, sizeof thr, "%d", o->threads);
    double t0 = lm_now_s();
    long rss1 = 0, rss2 = 0;
    char label[512];
    if (o->full) pathf(label, sizeof label, "%s, full fine-tune%s, %s persona", x->c->name,
                       o->dpo ? " + DPO" : "", persona);
    else pathf(label, sizeof label, "%s, LoRA r%d%s, %s persona", x->c->name, o->rank,
               o->dpo ? " + DPO" : "", persona);
    /* eval MODEL QUESTIONS --out DIR, then the same flags for both runs */
    char *av[24] = {"eval", model, NULL, "--out", NULL, "--character", x->c->path, "--persona",
                    (char *)persona, "--label", label};
    int n = 11;
    if (!o->full) av[n++] = "--adapter", av[n++] = best;   /* a full fine-tune is the model */
    if (o->threads) av[n++] = "-t", av[n++] = thr;
    av[n++] = "--refs", av[n++] = refs;   /* perplexity of the test split's answers */
    if (o->no_lore) av[n++] = "--no-lore";
    if (have_q) {
        av[2] = x->questions, av[4] = out1;
        if (run_self(&x->b, av, &rss1, err)) return -1;
    } else fprintf(stderr, "  no held-out questions (%s): only the test split is evaluated\n",
                   x->questions[0] ? x->questions : "none given");
    av[2] = tq, av[4] = out2;
    if (run_self(&x->b, av, &rss2, err)) return -1;
    return stage_end(&x->b, "eval", x->k_eval, lm_now_s() - t0, rss1 > rss2 ? rss1 : rss2,
                     json_pack("{s:s}", "started_key", x->k_eval), err);
}

static int do_export(ctx *x, lm_err *err) {
    const build_opts *o = x->b.o;
    /* the trained weights and, when not the default, the adapter's type */
    char key[17];
    if (o->adapter_f16 && !o->full)
        hex(fnv_str(fnv_str(1469598103934665603ull, final_key(x)), "adapter f16"), key);
    else
        snprintf(key, sizeof key, "%s", final_key(x));
    if (stage_done(&x->b, "export", key)) { stage_skip(&x->b, "export"); return 0; }
    stage_begin(&x->b, "export");
    if (stage_reset(&x->b, "export", err)) return -1;
    char dir[PATH_MAX], best[PATH_MAX], q8[PATH_MAX], peft[PATH_MAX], ad[PATH_MAX];
    pathf(dir, sizeof dir, "%s/export", o->out);
    if (mkdir(dir, 0777) && errno != EEXIST) return lm_errno(err, "%s", dir);
    best_file(x, best, sizeof best);
    pathf(q8, sizeof q8, "%s/%s.Q8_0.gguf", dir, x->stem);
    double t0 = lm_now_s();
    long rss = 0, r2 = 0;
    if (o->full) {
        char *av[] = {"quantize", best, q8, "Q8_0", NULL};
        if (run_self(&x->b, av, &rss, err)) return -1;
    } else {
        pathf(ad, sizeof ad, "%s/%s.adapter.gguf", dir, x->stem);
        /* the shipped adapter carries the persona policy it was trained with */
        if (lm_npc_stamp_write(best, ad, x->c, x->sheets->world, (lm_persona_mode)o->persona, err))
            return -1;
        if (o->adapter_f16 && lm_adapter_convert(ad, ad, LM_F16, err)) return -1;
        char *av[] = {"merge", x->model, best, q8, "--type", "q8_0", NULL};
        if (run_self(&x->b, av, &rss, err)) return -1;
        pathf(peft, sizeof peft, "%s/peft", dir);
        char *av2[] = {"peft", x->model, best, peft, NULL};
        if (run_self(&x->b, av2, &r2, err)) return -1;
    }
    if (lm_npc_stamp_write(q8, q8, x->c, x->sheets->world, (lm_persona_mode)o->persona, err)) return -1;
    fprintf(stderr, "  %s\n", q8);
    return stage_end(&x->b, "export", key, lm_now_s() - t0, rss > r2 ? rss : r2, NULL, err);
}

/* ---- the command ------------------------------------------------------- */

static int num(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= lo && d <= hi)) {
        fprintf(stderr, "lemonpc build: %s wants a number in [%g, %g], got '%s'\n", flag, lo, hi, v);
        return -1;
    }
    *out = d;
    return 0;
}

static int parse(int argc, char **argv, build_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 1; }
        if (!strcmp(a, "--full")) { o->full = 1; continue; }
        if (!strcmp(a, "--no-eval")) { o->no_eval = 1; continue; }
        if (!strcmp(a, "--no-lore")) { o->no_lore = 1; continue; }
        if (!strcmp(a, "--dpo")) { o->dpo = 1; continue; }
        if (a[0] == '-' && a[1]) {
            if (i + 1 >= argc) { fprintf(stderr, "lemonpc build: %s needs a value (see --help)\n", a); return -1; }
            const char *v = argv[++i];
            double d;
            if (!strcmp(a, "--character")) o->character = v;
            else if (!strcmp(a, "--out")) o->out = v;
            else if (!strcmp(a, "--model")) o->model = v;
            else if (!strcmp(a, "--data")) o->data = v;
            else if (!strcmp(a, "--questions")) o->questions = v;
            else if (!strcmp(a, "--extra")) o->extra[o->n_extra++] = v;
            else if (!strcmp(a, "--dpo-review")) o->reviews[o->n_reviews++] = v, o->dpo = 1;
            else if (!strcmp(a, "--persona")) {
                if ((o->persona = lm_persona_mode_parse(v)) < 0) {
                    fprintf(stderr, "lemonpc build: --persona wants short, full or none, got '%s'\n", v);
                    return -1;
                }
            } else if (!strcmp(a, "--adapter-type")) {
                if (strcmp(v, "f32") && strcmp(v, "f16")) {
                    fprintf(stderr, "lemonpc build: --adapter-type wants f32 or f16, got '%s'\n", v);
                    return -1;
                }
                o->adapter_f16 = !strcmp(v, "f16");
            } else if (!strcmp(a, "--precision")) {
                if (strcmp(v, "f32") && strcmp(v, "bf16")) {
                    fprintf(stderr, "lemonpc build: --precision wants f32 or bf16, got '%s'\n", v);
                    return -1;
                }
                o->bf16 = !strcmp(v, "bf16");
            } else if (!strcmp(a, "--lr")) { if (num(a, v, 1e-8, 1, &o->lr)) return -1; }
            else if (!strcmp(a, "--dpo-lr")) { if (num(a, v, 1e-9, 1, &o->dpo_lr)) return -1; }
            else if (!strcmp(a, "--dpo-beta")) { if (num(a, v, 1e-4, 100, &o->dpo_beta)) return -1; }
            else if (!strcmp(a, "--dpo-nll")) { if (num(a, v, 0, 100, &o->dpo_nll)) return -1; }
            else if (!strcmp(a, "--dpo-pairs")) {
                if (strcmp(v, "self-play") && strcmp(v, "checks")) {
                    fprintf(stderr, "lemonpc build: --dpo-pairs wants self-play or checks, got '%s'\n", v);
                    return -1;
                }
                o->dpo_checks_only = !strcmp(v, "checks");
            }
            else {
                static const struct { const char *flag; double lo, hi; } ints[] = {
                    {"--lora-rank", 1, 256}, {"--epochs", 1, 1000}, {"--batch", 1, 4096},
                    {"--seq", 16, 8192}, {"--grad-accum", 1, 4096}, {"--seed", 0, 1e15},
                    {"-t", 1, 1024}, {"--threads", 1, 1024}, {"--dpo-samples", 1, 64},
                    {"--dpo-max-prompts", 1, 1e9}, {"--dpo-epochs", 1, 1000}, {"--dpo-seq", 16, 8192}};
                int k = -1;
                for (int j = 0; j < 12; j++) if (!strcmp(a, ints[j].flag)) k = j;
                if (k < 0) { fprintf(stderr, "lemonpc build: unknown option '%s' (see --help)\n", a); return -1; }
                if (num(a, v, ints[k].lo, ints[k].hi, &d)) return -1;
                if (d != (double)(long long)d) { fprintf(stderr, "lemonpc build: %s wants an integer\n", a); return -1; }
                int *slot[] = {&o->rank, &o->epochs, &o->batch, &o->seq, &o->accum, NULL, &o->threads,
                               &o->threads, &o->dpo_samples, &o->dpo_max_prompts, &o->dpo_epochs, &o->dpo_seq};
                if (k == 5) o->seed = (unsigned long long)d;
                else *slot[k] = (int)d;
            }
            continue;
        }
        if (o->world) { fprintf(stderr, "lemonpc build: unexpected argument '%s'\n", a); return -1; }
        o->world = a;
    }
    if (!o->world || !o->character || !o->out) {
        fprintf(stderr, "lemonpc build: %s\n\n", !o->world ? "no WORLD_DIR given" : !o->character ?
                "--character NAME is required" : "--out DIR is required");
        usage(stderr);
        return -1;
    }
    return 0;
}

static json_t *settings_json(const build_opts *o, const char *model) {
    json_t *s = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:f, s:i, s:i, s:i, s:i, s:I}",
                          "world", o->world, "character", o->character, "model", model, "mode",
                          o->full ? "full" : "lora", "persona",
                          lm_persona_mode_name((lm_persona_mode)o->persona), "lora_rank",
                          o->full ? 0 : o->rank, "lora_alpha", o->full ? 0 : 2 * o->rank, "lr",
                          o->lr > 0 ? o->lr : o->full ? 1e-4 : 4e-4, "epochs", o->epochs, "batch",
                          o->batch, "seq", o->seq, "grad_accum", o->accum, "seed", (json_int_t)o->seed);
    if (s && o->adapter_f16 && !o->full) json_object_set_new(s, "adapter_type", json_string("f16"));
    if (s && o->bf16) json_object_set_new(s, "precision", json_string("bf16"));
    if (s) json_object_set_new(s, "lore", json_boolean(!o->no_lore));
    if (s && o->dpo) {
        json_object_set_new(s, "dpo", json_pack("{s:s, s:i, s:i, s:f, s:i, s:i, s:f}", "pairs",
                                                o->n_reviews ? "reviews" : o->dpo_checks_only ? "checks" : "self-play",
                                                "samples", o->dpo_samples,
                                                "max_prompts", o->dpo_max_prompts, "beta", o->dpo_beta,
                                                "epochs", o->dpo_epochs, "seq", o->dpo_seq, "lr",
                                                o->dpo_lr > 0 ? o->dpo_lr : o->full ? 1e-6 : 5e-5));
        json_t *d = json_object_get(s, "dpo");
        if (d && o->dpo_nll > 0) json_object_set_new(d, "nll", json_real(o->dpo_nll));
        if (d && o->n_reviews) {
            json_t *r = json_array();
            for (int i = 0; i < o->n_reviews; i++) json_array_append_new(r, json_string(o->reviews[i]));
            json_object_set_new(d, "reviews", r);
        }
    }
    return s;
}

int cmd_build(int argc, char **argv) {
    /* 4 packed rows of 512 tokens per step, one row at a time: LoRA stays
     * near 1 GB and a full fine-tune under 3 GB (a 4-row micro-batch is ~15%
     * faster and needs twice the memory: --batch 4 --grad-accum 1). */
    build_opts o = {.persona = LM_PERSONA_SHORT, .rank = 16, .epochs = 3, .batch = 1, .seq = 512,
                    .accum = 4, .seed = 42, .dpo_samples = 2, .dpo_beta = 0.1, .dpo_epochs = 1,
                    .dpo_seq = 512};
    o.extra = calloc((size_t)argc, sizeof *o.extra);
    o.reviews = calloc((size_t)argc, sizeof *o.reviews);
    if (!o.extra || !o.reviews) { free(o.extra); free(o.reviews); return 1; }
    int p = parse(argc, argv, &o);
    if (p) { free(o.extra); free(o.reviews); return p > 0 ? 0 : 2; }
    ctx x = {0};
    x.b.o = &o;
    x.b.n_stages = (o.no_eval ? 4 : 5) + (o.dpo ? 2 : 0);
    lm_err err = {0};
    int rc = 1;
    if (o.bf16 && lm_tprec_check(LM_TPREC_BF16, &err)) {   /* before hours of other stages */
        fprintf(stderr, "lemonpc build: --precision bf16: %s\n", err.msg);
        free(o.extra);
        free(o.reviews);
        return 2;
    }
    if (o.model) pathf(x.model, sizeof x.model, "%s", o.model);
    else if (getenv("LEMONPC_MODEL")) pathf(x.model, sizeof x.model, "%s", getenv("LEMONPC_MODEL"));
    else if (getenv("LEMONPC_CACHE"))
        pathf(x.model, sizeof x.model, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", getenv("LEMONPC_CACHE"));
    else pathf(x.model, sizeof x.model, "%s/.cache/lemonpc/SmolLM2-135M-Instruct.Q4_1.gguf",
                  getenv("HOME") ? getenv("HOME") : ".");
    if (!exists(x.model)) {
        fprintf(stderr, "lemonpc build: %s: no such model (give --model, or run scripts/fetch_model.sh)\n", x.model);
        goto done;
    }
    ssize_t n = readlink("/proc/self/exe", x.b.self, sizeof x.b.self - 1);
    if (n <= 0) { fprintf(stderr, "lemonpc build: cannot find its own binary\n"); goto done; }
    x.b.self[n] = '\0';
    lm_err merr = {{0}};
    if (lm_mkdir_p(o.out, &merr)) {
        fprintf(stderr, "lemonpc build: %s\n", merr.msg);
        goto done;
    }
    pathf(x.b.path, sizeof x.b.path, "%s/build.json", o.out);
    json_t *old = json_load_file(x.b.path, 0, NULL);
    x.b.doc = json_object();
    json_object_set_new(x.b.doc, "version", json_integer(1));
    json_object_set_new(x.b.doc, "settings", settings_json(&o, x.model));
    json_object_set_new(x.b.doc, "inputs", json_object());
    json_object_set(x.b.doc, "stages", json_is_object(json_object_get(old, "stages")) ?
                                           json_object_get(old, "stages") : json_object());
    if (!json_object_get(x.b.doc, "stages")) json_object_set_new(x.b.doc, "stages", json_object());
    json_decref(old);
    double t0 = lm_now_s();

    stage_begin(&x.b, "check");
    if (do_check(&x, &err)) goto fail;
    json_object_set_new(json_object_get(x.b.doc, "inputs"), x.c->path, json_string(x.k_check));
    if (o.questions) pathf(x.questions, sizeof x.questions, "%s", o.questions);
    else pathf(x.questions, sizeof x.questions, "%s/eval/%s.jsonl", o.world, x.stem);
    if (exists(x.questions)) {
        uint64_t qh;
        char hx[17];
        if (hash_file(x.questions, &qh, &err)) goto fail;
        hex(qh, hx);
        json_object_set_new(json_object_get(x.b.doc, "inputs"), x.questions, json_string(hx));
    } else if (o.questions) {
        fprintf(stderr, "lemonpc build: %s: no such question file\n", o.questions);
        goto done;
    }
    /* The check always runs (later stages need the sheets); its record
     * changes only with the sheets. */
    if (!stage_done(&x.b, "check", x.k_check) &&
        stage_end(&x.b, "check", x.k_check, lm_now_s() - t0, peak_rss_kb(),
                  json_pack("{s:s}", "character", x.c->name), &err))
        goto fail;
    if (do_dataset(&x, &err) || do_train(&x, &err)) goto fail;
    if (o.dpo && (do_pairs(&x, &err) || do_dpo(&x, &err))) goto fail;
    if (!o.no_eval && do_eval(&x, &err)) goto fail;
    if (do_export(&x, &err)) goto fail;
    fprintf(stderr, "[build] %s ready in %s (%.0f s this run)\n", x.c->name, o.out, lm_now_s() - t0);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "lemonpc build: %s\n", err.msg);
done:
    json_decref(x.b.doc);
    lm_sheet_dir_free(x.sheets);
    free(o.extra);
    free(o.reviews);
    return rc;
}
