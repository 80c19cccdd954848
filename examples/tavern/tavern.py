#!/usr/bin/env python3
"""The Golden Bell, through the Python binding (bindings/python/lemonpc.py):
the scene of tavern.c, with the same commands and the same output, so one
test script drives both (tests/oracle/test_python_world.py).

Two NPCs of the Luminara world share one base model: Orlando Marlo by the
hearth (his fine-tuned adapter) and Elena Solwind at a corner table (the
base model with her full sheet). The player walks between them and talks;
a rider brings news that only the NPC in the room hears; the other learns
of it only when told. Everything that happens is kept in a world file, so
quitting and starting again finds both NPCs remembering.

Run:   python3 examples/tavern/tavern.py MODEL.gguf [--world-file FILE] [--luminara DIR]
       (make lib first; LEMONPC_LIB names another liblemonpc.so)
       TAVERN_GREEDY=1: temperature 0, the same scene every run.

Lines starting with '/' are the player's actions:
  /go orlando | /go elena   walk over to one of them
  /rider                    a rider bursts in with news (only the NPC beside you hears it)
  /wait                     an hour passes
  /memory                   what the NPC beside you remembers
  /quit                     leave the inn (the world is kept)
Anything else is said to the NPC beside you.
"""
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "bindings" / "python"))
import lemonpc  # noqa: E402

PLAYER = "Wren"
USAGE = "usage: tavern MODEL.gguf [--world-file FILE] [--luminara DIR]"


class Slot:
    def __init__(self, key, sheet, adapter, where):
        self.key = key          # what /go takes
        self.sheet = sheet      # under the Luminara folder
        self.adapter = adapter  # its fine-tuned LoRA there, if it has one
        self.where = where      # where in the inn
        self.npc = None
        self.conv = None


class Die(Exception):
    """tavern: WHAT: MESSAGE on stderr, exit status 1."""


def parse_args(argv):
    model_path, world_file, luminara = None, "golden-bell.world", None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--world-file" and i + 1 < len(argv):
            i += 1
            world_file = argv[i]
        elif a == "--luminara" and i + 1 < len(argv):
            i += 1
            luminara = argv[i]
        elif not a.startswith("-") and model_path is None:
            model_path = a
        else:
            return None
        i += 1
    if model_path is None:
        return None
    if luminara is None:
        # as tavern.c, from the repository root; else the folder beside this one
        luminara = "examples/luminara" if os.access("examples/luminara", os.R_OK) \
            else str(HERE.parent / "luminara")
    return model_path, world_file, luminara


def out(*parts, end="\n"):
    sys.stdout.write("".join(parts) + end)
    sys.stdout.flush()


def read_lines():
    """The player's lines, without their line ends; a prompt on a terminal."""
    tty = sys.stdin.isatty()
    while True:
        if tty:
            out(f"{PLAYER}> ", end="")
        raw = sys.stdin.readline()
        if not raw:
            return
        yield raw.rstrip("\r\n")


def play(model, world, slots, world_file):
    """The scene; returns the exit status."""
    out(f"The Golden Bell, an inn on the Dawn Road. {slots[0].npc.name} sits {slots[0].where}; "
        f"{slots[1].npc.name} sits {slots[1].where}.")
    if world.time > 0:
        out(f"(You have been here before: it is hour {world.time:.0f} of your journey.)")
    out(f"You are {PLAYER}. /go orlando, /go elena, /rider, /wait, /memory, /quit.")
    here = slots[0]
    out(f"You walk over to {here.npc.name}.")

    rc = 0
    try:
        for line in read_lines():
            if not line:
                continue
            if line == "/quit":
                break
            name, what = here.npc.name, ""
            try:
                if line.startswith("/go "):
                    to = next((s for s in slots if s.key == line[4:]), None)
                    if to is None:
                        out(f"(There is no {line[4:]} here.)")
                        continue
                    here = to
                    out(f"You walk over to {here.npc.name}, {here.where}.")
                elif line == "/rider":
                    # only the NPC beside the player is in the common room
                    what = "event"
                    world.event("A rider burst into the Golden Bell: the bell tower of Saint "
                                "Aurel in Aurelion has burned down in the night",
                                place="the Golden Bell inn", importance=8, witnesses=[name])
                    out("The door bangs open. A rider, grey with road dust, shouts that the bell "
                        f"tower of Saint Aurel has burned down in the night. {name} hears it; "
                        "the other has stepped out to the yard.")
                elif line == "/wait":
                    what = "time"
                    world.time = world.time + 1
                    out(f"(An hour passes. Hour {world.time:.0f}.)")
                elif line == "/memory":
                    what = "memories"
                    out(f"{name} remembers:")
                    for m in world.memories(name):
                        out(f"   - [{m.kind}] {m.text}")
                    mind = here.conv.memory
                    if mind:
                        out(f"and had in mind for the last reply:\n{mind}")
                elif line.startswith("/"):
                    out("(/go orlando, /go elena, /rider, /wait, /memory, /quit)")
                else:
                    out(f"{name}: ", end="")
                    try:
                        here.conv.say(line, on_text=lambda piece: out(piece, end=""))
                    except lemonpc.LemonpcError as e:
                        out(f"\n({e.message})", end="")
                    out()
            except lemonpc.LemonpcError as e:
                print(f"tavern: {what}: {e.message}", file=sys.stderr)
                rc = 1
                break
    except KeyboardInterrupt:   # Ctrl-C: leave as /quit does (a reply cut short is not kept)
        out()
    out(f"You leave the Golden Bell. (The world is kept in {world_file}.)")
    return rc


def main(argv):
    args = parse_args(argv)
    if args is None:
        print(USAGE, file=sys.stderr)
        return 2
    model_path, world_file, luminara = args
    # the scene's text is UTF-8 whatever the locale, as tavern.c writes it
    sys.stdout.reconfigure(encoding="utf-8")
    sys.stdin.reconfigure(encoding="utf-8", errors="replace")

    slots = [Slot("orlando", "characters/orlando.md", "npc/orlando.adapter.gguf", "by the hearth"),
             Slot("elena", "characters/elena.md", None, "at a corner table, writing")]
    what = model_path
    try:
        # Closing the model closes the NPCs and their conversations; closing
        # the world (first, as the with-blocks unwind) closes the NPCs living in it.
        with lemonpc.Model(model_path) as model:
            what = world_file
            with lemonpc.World(world_file) as world:
                for s in slots:
                    sheet = f"{luminara}/{s.sheet}"
                    # Orlando is fine-tuned (his adapter says which persona he
                    # was trained with); Elena runs on the base model with her
                    # full sheet. Both share the one base model loaded above.
                    adapter = None
                    if s.adapter:
                        adapter = f"{luminara}/{s.adapter}"
                        if not os.access(adapter, os.R_OK):
                            adapter = None
                    sampling = lemonpc.Sampling(
                        max_tokens=80,
                        # the same scene every run
                        temperature=0 if os.environ.get("TAVERN_GREEDY") is not None else None)
                    what = sheet
                    # a reply that slips out of character (assistant talk, our
                    # world's things, a line cut short) is drawn again before
                    # the player sees it
                    s.npc = lemonpc.Npc(model, sheet, adapter=adapter, sampling=sampling, guard=2)
                    what = "set_world"
                    s.npc.set_world(world, memory_tokens=200)
                    what = "prepare"
                    s.npc.prepare()
                    what = "conversation"
                    s.conv = s.npc.open(f"{PLAYER}, a traveller", "the Golden Bell inn")
                return play(model, world, slots, world_file)
    except lemonpc.LemonpcError as e:
        print(f"tavern: {what}: {e.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
