/* lemonpc serve: the NPCs of a world behind an OpenAI-compatible HTTP
 * server (src/server/, docs/SERVER.md). Every character sheet of
 * WORLD_DIR/characters is an NPC whose model id is the sheet's file stem;
 * --npc NAME=ADAPTER gives one its fine-tuned adapter. Runs until SIGINT or
 * SIGTERM. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli_gen.h"
#include "cli/commands.h"
#include "server/server.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc serve WORLD_DIR --model MODEL [options]\n\n"
            "Serves the characters of WORLD_DIR/characters/*.md over an OpenAI-compatible\n"
            "HTTP API: each is a model id (its file stem: orlando.md is \"orlando\"), answering\n"
            "POST /v1/chat/completions in character, with its memory of the world kept in the\n"
            "world file. See docs/SERVER.md.\n\n"
            "  --npc NAME=ADAPTER    serve NAME with its LoRA adapter (repeatable); its persona\n"
            "                        follows what the adapter was trained with\n"
            "  --host ADDR           address to listen on (default 127.0.0.1: this machine only)\n"
            "  --port N              port (default 8080; 0: any free one, printed)\n"
            "  --api-key-env VAR     requests must carry \"Authorization: Bearer $VAR\"\n"
            "  --world-file F        the world's memory (default: ~/.local/share/lemonpc/<world>.db)\n"
            "  --saves-dir D         where POST /v1/world/save writes and /v1/world/load reads\n"
            "                        (default: the world file's folder)\n"
            "  --memory-tokens N     budget of what an NPC recalls per reply (default 256)\n"
            "  --max-tokens N        the most tokens a request may ask (default 1024)\n"
            "  --max-body BYTES      the largest request body (default 1048576)\n"
            "  --max-messages N      the most messages in a request (default 256)\n"
            "  --max-conversations N conversations kept at once (default 64)\n"
            "  --max-connections N   connections open at once (default 256)\n"
            "  --idle-timeout S      close a connection silent for S seconds (default 15)\n"
            "  --request-timeout S   a request's body must arrive, and its reply progress,\n"
            "                        within S seconds (default 300)\n"
            "%s"
            "  -h, --help            this help\n",
            CLI_GEN_FLAGS_HELP);
}

static int parse_int(const char *flag, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < lo || n > hi) {
        fprintf(stderr, "lemonpc serve: %s wants an integer in [%ld, %ld], got '%s'\n", flag, lo,
                hi, v);
        return -1;
    }
    *out = n;
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The stems of the .md sheets in WORLD_DIR/characters, sorted. */
static char **list_sheets(const char *dir, size_t *n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/characters", dir);
    DIR *d = opendir(path);
    *n = 0;
    if (!d) {
        fprintf(stderr, "lemonpc serve: cannot open %s (%s)\n", path, strerror(errno));
        return NULL;
    }
    char **out = NULL;
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t k = strlen(e->d_name);
        if (e->d_name[0] == '.' || k < 4 || strcmp(e->d_name + k - 3, ".md")) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            char **q = realloc(out, cap * sizeof *q);
            if (!q) break;
            out = q;
        }
        if (!(out[*n] = strndup(e->d_name, k - 3))) break;
        ++*n;
    }
    closedir(d);
    if (*n) qsort(out, *n, sizeof *out, cmp_str);
    return out;
}

int cmd_serve(int argc, char **argv) {
    cli_gen_opts o;
    cli_gen_opts_init(&o, 160);
    o.sp.temp = 0.7f;           /* the API's NPC defaults (lemonpc_sampling_defaults) */
    o.sp.repeat_penalty = 1.1f;
    lm_server_config cfg = lm_server_default_config();
    const char *dir = NULL, *world_file = NULL, *key_env = NULL, *saves = NULL;
    const char **npc_args = calloc((size_t)argc + 1, sizeof *npc_args);
    size_t n_npc_args = 0;
    long memory_tokens = 256, v;
    if (!npc_args) return 1;
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = cli_gen_parse_flag("serve", argc, argv, &i, &o);
        if (r < 0) goto out;
        if (r > 0) continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); rc = 0; goto out; }
        static const char *const with_value[] = {
            "--model", "--npc", "--host", "--port", "--api-key-env", "--world-file", "--saves-dir",
            "--memory-tokens", "--max-tokens", "--max-body", "--max-messages",
            "--max-conversations", "--max-connections", "--idle-timeout", "--request-timeout"};
        bool known = false;
        for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++)
            known |= !strcmp(a, with_value[k]);
        if (known) {
            if (i + 1 >= argc) {
                fprintf(stderr, "lemonpc serve: %s needs a value\n", a);
                goto out;
            }
            const char *val = argv[++i];
            if (!strcmp(a, "--model")) o.model = val;
            else if (!strcmp(a, "--npc")) npc_args[n_npc_args++] = val;
            else if (!strcmp(a, "--host")) cfg.host = val;
            else if (!strcmp(a, "--api-key-env")) key_env = val;
            else if (!strcmp(a, "--world-file")) world_file = val;
            else if (!strcmp(a, "--saves-dir")) saves = val;
            else if (!strcmp(a, "--port")) {
                if (parse_int(a, val, 0, 65535, &v)) goto out;
                cfg.port = (int)v;
            } else if (!strcmp(a, "--memory-tokens")) {
                if (parse_int(a, val, 1, 4096, &memory_tokens)) goto out;
            } else if (!strcmp(a, "--max-tokens")) {
                if (parse_int(a, val, 1, 1 << 20, &v)) goto out;
                cfg.limits.max_tokens = (int)v;
            } else if (!strcmp(a, "--max-body")) {
                if (parse_int(a, val, 1024, 1L << 30, &v)) goto out;
                cfg.max_body = (size_t)v;
            } else if (!strcmp(a, "--max-messages")) {
                if (parse_int(a, val, 1, 1 << 20, &v)) goto out;
                cfg.limits.max_messages = (size_t)v;
            } else if (!strcmp(a, "--max-conversations")) {
                if (parse_int(a, val, 1, 1 << 16, &v)) goto out;
                cfg.max_conversations = (int)v;
            } else if (!strcmp(a, "--max-connections")) {
                if (parse_int(a, val, 1, 1 << 16, &v)) goto out;
                cfg.max_connections = (int)v;
            } else if (!strcmp(a, "--idle-timeout")) {
                if (parse_int(a, val, 1, 86400, &v)) goto out;
                cfg.idle_timeout_s = (int)v;
            } else {
                if (parse_int(a, val, 1, 86400, &v)) goto out;
                cfg.request_timeout_s = (int)v;
            }
            continue;
        }
        if (a[0] == '-' && a[1]) {
            fprintf(stderr, "lemonpc serve: unknown option '%s' (see --help)\n", a);
            goto out;
        }
        if (dir) {
            fprintf(stderr, "lemonpc serve: unexpected argument '%s'\n", a);
            goto out;
        }
        dir = a;
    }
    if (!dir || !o.model) {
        fprintf(stderr, "lemonpc serve: %s\n\n", !dir ? "no WORLD_DIR given" : "no --model given");
        usage(stderr);
        goto out;
    }
    if (o.character || o.system || o.adapter || o.asker || o.place || o.persona >= 0) {
        fprintf(stderr, "lemonpc serve: --character, --adapter, --persona, --asker and --place "
                "are per NPC here: the NPCs are WORLD_DIR's sheets, --npc NAME=ADAPTER gives "
                "one its adapter, and each request's user is the player\n");
        goto out;
    }
    if (o.n_predict > cfg.limits.max_tokens) cfg.limits.max_tokens = o.n_predict;
    const char *api_key = NULL;
    if (key_env) {
        api_key = getenv(key_env);
        if (!api_key || !api_key[0]) {
            fprintf(stderr, "lemonpc serve: --api-key-env %s: the variable is not set or empty\n",
                    key_env);
            goto out;
        }
    }
    cfg.api_key = api_key;
    rc = 1;

    size_t n = 0;
    char **ids = list_sheets(dir, &n);
    lemonpc_error err = {0};
    lemonpc_model *model = NULL;
    lemonpc_world *world = NULL;
    lm_server_npc *npcs = calloc(n ? n : 1, sizeof *npcs);
    lm_server *srv = NULL;
    char wpath[1024], saves_dir[1024];
    if (!npcs) goto done;
    if (n == 0) {
        fprintf(stderr, "lemonpc serve: no character sheets (*.md) in %s/characters\n", dir);
        goto done;
    }
    for (size_t k = 0; k < n_npc_args; k++) {
        const char *eq = strchr(npc_args[k], '=');
        bool found = false;
        for (size_t i = 0; eq && i < n; i++)
            found |= strlen(ids[i]) == (size_t)(eq - npc_args[k]) &&
                     !strncmp(ids[i], npc_args[k], (size_t)(eq - npc_args[k]));
        if (!eq || !eq[1] || !found) {
            fprintf(stderr, "lemonpc serve: --npc %s: %s\n", npc_args[k],
                    !eq || !eq[1] ? "wants NAME=ADAPTER" : "no such sheet in WORLD_DIR/characters");
            goto done;
        }
    }
    if (!world_file) {
        if (cli_default_world_file(dir, wpath, sizeof wpath)) {
            fprintf(stderr, "lemonpc serve: cannot create the folder of the world file (%s)\n",
                    strerror(errno));
            goto done;
        }
        world_file = wpath;
    }
    if (!saves) {
        snprintf(saves_dir, sizeof saves_dir, "%s", world_file);
        char *slash = strrchr(saves_dir, '/');
        if (slash) *slash = '\0';
        else snprintf(saves_dir, sizeof saves_dir, ".");
        saves = saves_dir;
    }
    cfg.saves_dir = saves;
    cfg.world_file = world_file;
    if (!(world = lemonpc_world_open(world_file, &err))) goto done;
    lemonpc_model_params mp = {.threads = o.threads, .n_ctx = o.n_ctx, .kv_type = o.kv_type};
    if (!(model = lemonpc_model_load(o.model, &mp, &err))) goto done;
    lemonpc_sampling sp = {.temperature = o.sp.temp, .top_k = o.sp.top_k, .top_p = o.sp.top_p,
                           .min_p = o.sp.min_p, .repeat_penalty = o.sp.repeat_penalty,
                           .repeat_last_n = o.sp.repeat_last_n, .seed = o.sp.seed,
                           .max_tokens = o.n_predict};
    for (size_t i = 0; i < n; i++) {
        char sheet[1024];
        snprintf(sheet, sizeof sheet, "%s/characters/%s.md", dir, ids[i]);
        lemonpc_npc_params np = lemonpc_npc_default_params();
        np.sheet = sheet;
        np.sampling = sp;
        np.guard = o.guard;
        for (size_t k = 0; k < n_npc_args; k++)
            if (!strncmp(npc_args[k], ids[i], strlen(ids[i])) && npc_args[k][strlen(ids[i])] == '=')
                np.adapter = npc_args[k] + strlen(ids[i]) + 1;
        npcs[i].id = ids[i];
        npcs[i].sampling = sp;
        if (!(npcs[i].npc = lemonpc_npc_load(model, &np, &err))) {
            fprintf(stderr, "lemonpc serve: NPC %s (%s):\n", ids[i], sheet);
            goto done;
        }
        if (lemonpc_npc_warning(npcs[i].npc)[0])
            fprintf(stderr, "lemonpc serve: warning: %s: %s\n", ids[i],
                    lemonpc_npc_warning(npcs[i].npc));
        if (lemonpc_npc_set_world(npcs[i].npc, world, NULL, (int)memory_tokens, &err)) goto done;
        if (lemonpc_npc_prepare(npcs[i].npc, &err)) goto done;
        fprintf(stderr, "lemonpc serve: %s = %s%s%s\n", ids[i], lemonpc_npc_name(npcs[i].npc),
                np.adapter ? " with " : "", np.adapter ? np.adapter : "");
    }
    /* the signals are taken by sigwait below: every thread blocks them */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    char why[512];
    if (!(srv = lm_server_start(&cfg, npcs, n, world, why, sizeof why))) {
        fprintf(stderr, "lemonpc serve: %s\n", why);
        goto done;
    }
    fprintf(stderr, "lemonpc serve: %zu NPCs on http://%s%s%s:%d/v1 (world %s)%s\n", n,
            strchr(cfg.host, ':') ? "[" : "", cfg.host, strchr(cfg.host, ':') ? "]" : "",
            lm_server_port(srv), world_file, api_key ? ", API key required" : "");
    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) == 0 && sig != SIGPIPE) {
            fprintf(stderr, "lemonpc serve: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
            break;
        }
    }
    lm_server_stop(srv);
    rc = 0;
done:
    if (rc && err.message[0]) fprintf(stderr, "lemonpc serve: %s\n", err.message);
    for (size_t i = 0; npcs && i < n; i++) lemonpc_npc_free(npcs[i].npc);
    free(npcs);
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
    lemonpc_model_free(model);
    lemonpc_world_close(world);
out:
    free(npc_args);
    return rc;
}
