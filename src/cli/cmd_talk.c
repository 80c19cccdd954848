/* lemonpc talk: talk to an NPC of a world in the terminal, with its memory.
 * A thin user of the public API (include/lemonpc.h): the world file keeps
 * what happened and what was said across runs; /event, /time, /memory,
 * /save, /load and /forget drive it like a game would. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli_gen.h"
#include "cli/commands.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: lemonpc talk WORLD_DIR NPC --model MODEL [options]\n\n"
            "Talks to the character NPC (WORLD_DIR/characters/NPC.md, by file name) as a\n"
            "player, with the NPC's memory of the world kept in a world file across runs.\n"
            "Each line is what the player says. Commands:\n"
            "  /event [N] TEXT   something happens in front of the NPC (importance N, 1..10,\n"
            "                    default 5)\n"
            "  /time H           H game hours pass\n"
            "  /memory           what the NPC remembers of you, and what it had in mind for\n"
            "                    its last reply\n"
            "  /save [FILE]      keep this conversation in the world file (and copy the whole\n"
            "                    world to FILE, a save slot)\n"
            "  /load             go back to the conversation kept by /save\n"
            "  /forget           the NPC forgets you\n"
            "  /reset            start the conversation over (memories stay)\n"
            "  /quit             leave (also end of input)\n\n"
            "  --player NAME     who you are (default: Traveller)\n"
            "  --world-file F    the world's memory (default: ~/.local/share/lemonpc/<world>.db)\n"
            "  --memory-tokens N budget of what the NPC recalls per reply (default 256)\n"
            "%s"
            "  -h, --help        this help\n",
            CLI_GEN_FLAGS_HELP);
}

static int print_memory(void *user, const lemonpc_memory *m) {
    (void)user;
    fprintf(stderr, "  [%s, hour %.0f, importance %d] %s%s%s\n", m->kind, m->time, m->importance,
            m->text, m->place ? " @ " : "", m->place ? m->place : "");
    return 0;
}

int cmd_talk(int argc, char **argv) {
    cli_gen_opts o;
    cli_gen_opts_init(&o, 160);
    o.sp.temp = 0.7f;          /* the API's NPC defaults (lemonpc_sampling_defaults) */
    o.sp.repeat_penalty = 1.1f;
    const char *dir = NULL, *who = NULL, *player = "Traveller", *world_file = NULL;
    long memory_tokens = 256;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = cli_gen_parse_flag("talk", argc, argv, &i, &o);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--model") || !strcmp(a, "--player") || !strcmp(a, "--world-file") ||
            !strcmp(a, "--memory-tokens")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "lemonpc talk: %s needs a value\n", a);
                return 2;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--model")) o.model = v;
            else if (!strcmp(a, "--player")) player = v;
            else if (!strcmp(a, "--world-file")) world_file = v;
            else {
                char *end;
                memory_tokens = strtol(v, &end, 10);
                if (*end || memory_tokens < 1 || memory_tokens > 4096) {
                    fprintf(stderr, "lemonpc talk: --memory-tokens wants 1..4096, got '%s'\n", v);
                    return 2;
                }
            }
            continue;
        }
        if (a[0] == '-' && a[1]) {
            fprintf(stderr, "lemonpc talk: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (!dir) dir = a;
        else if (!who) who = a;
        else {
            fprintf(stderr, "lemonpc talk: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (!dir || !who || !o.model) {
        fprintf(stderr, "lemonpc talk: %s\n\n", !dir ? "no WORLD_DIR given" : !who ? "no NPC given"
                                                                         : "no --model given");
        usage(stderr);
        return 2;
    }
    char sheet[1024], wpath[1024];
    snprintf(sheet, sizeof sheet, "%s/characters/%s.md", dir, who);
    if (access(sheet, R_OK) != 0) {
        fprintf(stderr, "lemonpc talk: no character sheet %s\n", sheet);
        return 1;
    }
    if (!world_file) {
        if (cli_default_world_file(dir, wpath, sizeof wpath)) {
            fprintf(stderr, "lemonpc talk: cannot create the folder of the world file (%s)\n",
                    strerror(errno));
            return 1;
        }
        world_file = wpath;
    }
    o.character = sheet;
    o.asker = player;

    lemonpc_error err = {0};
    cli_npc n = {0};
    lemonpc_world *world = NULL;
    lemonpc_conversation *conv = NULL;
    char *line = NULL;
    size_t cap = 0;
    int rc = 1;
    if (!(world = lemonpc_world_open(world_file, &err))) goto done;
    if (cli_npc_open(&n, &o, &err)) goto done;
    if (lemonpc_npc_set_world(n.npc, world, NULL, (int)memory_tokens, &err)) goto done;
    const char *name = lemonpc_npc_name(n.npc);
    if (!(conv = lemonpc_conversation_open(n.npc, player, o.place, &err))) goto done;
    bool tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    if (tty)
        fprintf(stderr, "talking with %s as %s; the world is kept in %s (game hour %.0f). "
                "/quit leaves, --help lists the commands.\n", name, player, world_file,
                lemonpc_world_time(world));
    for (;;) {
        if (tty) { printf("> "); fflush(stdout); }
        ssize_t len = getline(&line, &cap, stdin);
        if (len < 0) break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) continue;
        lemonpc_error e = {0};
        if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
        if (!strncmp(line, "/event ", 7)) {
            char *text = line + 7, *end;
            long imp = strtol(text, &end, 10);
            if (end != text && *end == ' ') text = end + 1;
            else imp = 5;
            const char *wit[] = {name};
            lemonpc_event ev = {text, o.place, (int)imp, wit, 1};
            if (lemonpc_world_event(world, &ev, NULL, &e)) fprintf(stderr, "lemonpc talk: %s\n", e.message);
            else fprintf(stderr, "(%s saw it)\n", name);
        } else if (!strncmp(line, "/time ", 6)) {
            double h = strtod(line + 6, NULL);
            if (lemonpc_world_set_time(world, lemonpc_world_time(world) + h, &e))
                fprintf(stderr, "lemonpc talk: %s\n", e.message);
            else fprintf(stderr, "(game hour %.1f)\n", lemonpc_world_time(world));
        } else if (!strcmp(line, "/memory")) {
            fprintf(stderr, "%s remembers of %s:\n", name, player);
            if (lemonpc_world_memories(world, name, player, print_memory, NULL, &e))
                fprintf(stderr, "lemonpc talk: %s\n", e.message);
            fprintf(stderr, "in mind for the last reply:\n%s\n", lemonpc_conversation_memory(conv));
        } else if (!strcmp(line, "/save") || !strncmp(line, "/save ", 6)) {
            if (lemonpc_world_save_conversation(conv, &e)) fprintf(stderr, "lemonpc talk: %s\n", e.message);
            else if (line[5] == ' ' && lemonpc_world_save_as(world, line + 6, &e))
                fprintf(stderr, "lemonpc talk: %s\n", e.message);
            else fprintf(stderr, "(saved%s%s)\n", line[5] == ' ' ? " to " : "",
                         line[5] == ' ' ? line + 6 : "");
        } else if (!strcmp(line, "/load")) {
            lemonpc_conversation *back = lemonpc_world_load_conversation(n.npc, player, o.place, &e);
            if (!back) fprintf(stderr, "lemonpc talk: %s\n", e.message);
            else {
                lemonpc_conversation_close(conv);
                conv = back;
                fprintf(stderr, "(loaded: %d turns)\n", lemonpc_conversation_n_turns(conv));
            }
        } else if (!strcmp(line, "/forget")) {
            if (lemonpc_world_forget(world, name, player, &e)) fprintf(stderr, "lemonpc talk: %s\n", e.message);
            else fprintf(stderr, "(%s forgot %s)\n", name, player);
        } else if (!strcmp(line, "/reset")) {
            if (lemonpc_conversation_reset(conv, &e)) fprintf(stderr, "lemonpc talk: %s\n", e.message);
        } else if (line[0] == '/' && line[1] && line[1] != ' ') {
            fprintf(stderr, "lemonpc talk: unknown command '%s' (see --help)\n", line);
        } else {
            lemonpc_reply_info info;
            lemonpc_status st = lemonpc_say(conv, line, cli_put_text, stdout, NULL, &info, &e);
            printf("\n");
            fflush(stdout);
            if (st) fprintf(stderr, "lemonpc talk: %s\n", e.message);
            else if (o.verbose) cli_print_reply_stats(&info);
        }
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "lemonpc talk: %s\n", err.message);
    free(line);
    lemonpc_conversation_close(conv);
    cli_npc_close(&n);
    lemonpc_world_close(world);
    return rc;
}
