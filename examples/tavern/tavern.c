/* The Golden Bell: a small text scene on the LeMoNPC runtime, as a game
 * would write it. Two NPCs of the Luminara world share one base model:
 * Orlando Marlo by the hearth and Elena Solwind at a corner table. The
 * player walks between them and talks; a rider brings news that only the
 * NPC in the room hears; the other learns of it only when told. Everything
 * that happens is kept in a world file, so quitting and starting again
 * finds both NPCs remembering.
 *
 * Build: make tavern (or, against an installed library:
 *   cc tavern.c $(pkg-config --cflags --libs lemonpc) -o tavern)
 * Run:   build/examples/tavern MODEL.gguf [--world-file FILE] [--luminara DIR]
 *
 * Lines starting with '/' are the player's actions:
 *   /go orlando | /go elena   walk over to one of them
 *   /rider                    a rider bursts in with news (only the NPC beside you hears it)
 *   /wait                     an hour passes
 *   /memory                   what the NPC beside you remembers
 *   /quit                     leave the inn (the world is kept)
 * Anything else is said to the NPC beside you. */
#define _POSIX_C_SOURCE 200809L   /* getline */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lemonpc.h"

#define PLAYER "Wren"

typedef struct npc_slot {
    const char *key;       /* what /go takes */
    const char *sheet;     /* under the Luminara folder */
    const char *adapter;   /* its fine-tuned LoRA there, if it has one */
    const char *where;     /* where in the inn */
    lemonpc_npc *npc;
    lemonpc_conversation *conv;
} npc_slot;

static int print_piece(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static int print_memory(void *user, const lemonpc_memory *m) {
    (void)user;
    printf("   - [%s] %s\n", m->kind, m->text);
    return 0;
}

static int die(const char *what, const lemonpc_error *err) {
    fprintf(stderr, "tavern: %s: %s\n", what, err->message);
    return 1;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *world_file = "golden-bell.world", *luminara = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--world-file") && i + 1 < argc) world_file = argv[++i];
        else if (!strcmp(argv[i], "--luminara") && i + 1 < argc) luminara = argv[++i];
        else if (argv[i][0] != '-' && !model_path) model_path = argv[i];
        else {
            fprintf(stderr, "usage: tavern MODEL.gguf [--world-file FILE] [--luminara DIR]\n");
            return 2;
        }
    }
    if (!model_path) {
        fprintf(stderr, "usage: tavern MODEL.gguf [--world-file FILE] [--luminara DIR]\n");
        return 2;
    }
    if (!luminara) luminara = access("examples/luminara", R_OK) == 0 ? "examples/luminara"
                                                                     : "../luminara";

    lemonpc_error err;
    lemonpc_model *model = lemonpc_model_load(model_path, NULL, &err);
    if (!model) return die(model_path, &err);
    lemonpc_world *world = lemonpc_world_open(world_file, &err);
    if (!world) return die(world_file, &err);

    npc_slot slots[2] = {
        {"orlando", "characters/orlando.md", "npc/orlando.adapter.gguf", "by the hearth", NULL,
         NULL},
        {"elena", "characters/elena.md", NULL, "at a corner table, writing", NULL, NULL},
    };
    for (int i = 0; i < 2; i++) {
        char sheet[1024], adapter[1024];
        snprintf(sheet, sizeof sheet, "%s/%s", luminara, slots[i].sheet);
        lemonpc_npc_params p = lemonpc_npc_default_params();
        p.sheet = sheet;
        /* Orlando is fine-tuned (his adapter says which persona he was
         * trained with); Elena runs on the base model with her full sheet.
         * Both share the one base model loaded above. */
        if (slots[i].adapter) {
            snprintf(adapter, sizeof adapter, "%s/%s", luminara, slots[i].adapter);
            if (access(adapter, R_OK) == 0) p.adapter = adapter;
        }
        p.sampling.max_tokens = 80;
        /* a reply that slips out of character (assistant talk, our world's
         * things, a line cut short) is drawn again before the player sees it */
        p.guard.retries = 2;
        if (getenv("TAVERN_GREEDY")) p.sampling.temperature = 0;   /* the same scene every run */
        if (!(slots[i].npc = lemonpc_npc_load(model, &p, &err))) return die(sheet, &err);
        if (lemonpc_npc_set_world(slots[i].npc, world, NULL, 200, &err))
            return die("set_world", &err);
        if (lemonpc_npc_prepare(slots[i].npc, &err)) return die("prepare", &err);
        if (!(slots[i].conv = lemonpc_conversation_open(slots[i].npc, PLAYER ", a traveller",
                                                        "the Golden Bell inn", &err)))
            return die("conversation", &err);
    }

    printf("The Golden Bell, an inn on the Dawn Road. %s sits %s; %s sits %s.\n",
           lemonpc_npc_name(slots[0].npc), slots[0].where, lemonpc_npc_name(slots[1].npc),
           slots[1].where);
    if (lemonpc_world_time(world) > 0)
        printf("(You have been here before: it is hour %.0f of your journey.)\n",
               lemonpc_world_time(world));
    printf("You are %s. /go orlando, /go elena, /rider, /wait, /memory, /quit.\n", PLAYER);
    npc_slot *here = &slots[0];
    printf("You walk over to %s.\n", lemonpc_npc_name(here->npc));

    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    for (;;) {
        if (isatty(STDIN_FILENO)) { printf("%s> ", PLAYER); fflush(stdout); }
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (n == 0) continue;
        if (!strcmp(line, "/quit")) break;
        if (!strncmp(line, "/go ", 4)) {
            npc_slot *to = NULL;
            for (int i = 0; i < 2; i++)
                if (!strcmp(line + 4, slots[i].key)) to = &slots[i];
            if (!to) { printf("(There is no %s here.)\n", line + 4); continue; }
            here = to;
            printf("You walk over to %s, %s.\n", lemonpc_npc_name(here->npc), here->where);
        } else if (!strcmp(line, "/rider")) {
            /* only the NPC beside the player is in the common room */
            const char *witness[] = {lemonpc_npc_name(here->npc)};
            lemonpc_event ev = {"A rider burst into the Golden Bell: the bell tower of Saint "
                                "Aurel in Aurelion has burned down in the night",
                                "the Golden Bell inn", 8, witness, 1};
            if (lemonpc_world_event(world, &ev, NULL, &err)) { rc = die("event", &err); break; }
            printf("The door bangs open. A rider, grey with road dust, shouts that the bell tower "
                   "of Saint Aurel has burned down in the night. %s hears it; the other has "
                   "stepped out to the yard.\n", lemonpc_npc_name(here->npc));
        } else if (!strcmp(line, "/wait")) {
            if (lemonpc_world_set_time(world, lemonpc_world_time(world) + 1, &err)) {
                rc = die("time", &err);
                break;
            }
            printf("(An hour passes. Hour %.0f.)\n", lemonpc_world_time(world));
        } else if (!strcmp(line, "/memory")) {
            printf("%s remembers:\n", lemonpc_npc_name(here->npc));
            if (lemonpc_world_memories(world, lemonpc_npc_name(here->npc), NULL, print_memory,
                                       NULL, &err)) { rc = die("memories", &err); break; }
            const char *mind = lemonpc_conversation_memory(here->conv);
            if (*mind) printf("and had in mind for the last reply:\n%s\n", mind);
        } else if (line[0] == '/') {
            printf("(/go orlando, /go elena, /rider, /wait, /memory, /quit)\n");
        } else {
            printf("%s: ", lemonpc_npc_name(here->npc));
            fflush(stdout);
            if (lemonpc_say(here->conv, line, print_piece, NULL, NULL, NULL, &err))
                printf("\n(%s)", err.message);
            printf("\n");
        }
    }
    printf("You leave the Golden Bell. (The world is kept in %s.)\n", world_file);
    free(line);
    for (int i = 0; i < 2; i++) {
        lemonpc_conversation_close(slots[i].conv);
        lemonpc_npc_free(slots[i].npc);
    }
    lemonpc_world_close(world);
    lemonpc_model_free(model);
    return rc;
}
