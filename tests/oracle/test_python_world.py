"""The world's memory through the Python binding (World, Npc.set_world,
Conversation.memory, conversations kept in the world), and the tavern
scene written with it (examples/tavern/tavern.py) against the C one
(examples/tavern/tavern.c).

The World tests need no model; the recall and tavern tests run the real
SmolLM2-135M for a few short greedy replies."""
import gc
import os
import pathlib
import sqlite3
import subprocess
import sys
import textwrap
import weakref

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = ROOT / os.environ.get("LEMONPC_BUILD", "build")
BINDING = ROOT / "bindings" / "python"
TAVERN_PY = ROOT / "examples" / "tavern" / "tavern.py"
THREADS = 2
ORLANDO, ELENA = "Orlando Marlo", "Elena Solwind"
FIRE = "The bell tower of Saint Aurel burned down"


def make(target):
    args = ["make", "-s", "--no-print-directory", "-j2", target]
    if "LEMONPC_BUILD" in os.environ:
        args.append(f"BUILD={os.environ['LEMONPC_BUILD']}")
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    if r.returncode:
        pytest.fail(f"{' '.join(args)} failed:\n{r.stdout[-2000:]}{r.stderr[-4000:]}")


def library():
    lib = os.environ.get("LEMONPC_LIB")
    if lib:
        return pathlib.Path(lib)
    lib = BUILD / "liblemonpc.so"
    if not lib.exists():
        make("lib")
    return lib


@pytest.fixture(scope="session")
def L():
    """The binding, on LEMONPC_LIB or the repository's build (built if missing)."""
    lib = library()
    sys.path.insert(0, str(BINDING))
    import lemonpc
    lemonpc.load_library(lib)
    return lemonpc


@pytest.fixture(scope="module")
def model(L, model_path):
    with L.Model(model_path, threads=THREADS) as m:
        yield m


def greedy(L, n):
    return L.Sampling(temperature=0, max_tokens=n)


def kinds(memories):
    return [(m.kind, m.text) for m in memories]


# ---- the world without a model ----------------------------------------------

def test_events_reach_only_witnesses(L, tmp_path):
    with L.World(tmp_path / "w.world") as w:
        assert w.time == 0
        w.time = 30.5
        fire = w.event(FIRE, place="Aurelion", importance=8, witnesses=[ORLANDO, "Brann"])
        w.set_time(31)
        ill = w.event("The king is ill", witnesses=ELENA)   # one name alone
        nobody = w.event("A cat crossed the square")
        assert len({fire, ill, nobody}) == 3 and min(fire, ill, nobody) > 0

        (m,) = w.memories(ORLANDO)
        assert (m.id, m.kind, m.text, m.place, m.player) == (fire, "event", FIRE, "Aurelion", None)
        assert (m.time, m.importance, m.witnessed) == (30.5, 8, True)
        assert kinds(w.memories("Brann")) == [("event", FIRE)]
        assert kinds(w.memories(ELENA)) == [("event", "The king is ill")]
        assert w.memories(ELENA)[0].time == 31 and w.memories(ELENA)[0].place is None
        assert w.memories("Someone else") == []

        # told, not seen; oldest first
        w.tell(fire, ELENA)
        assert kinds(w.memories(ELENA)) == [("event", FIRE), ("event", "The king is ill")]
        told = w.memories(ELENA)[0]
        assert told.id == fire and not told.witnessed
        with pytest.raises(L.NotFoundError) as e:
            w.tell(fire + 1000, ELENA)
        assert str(tmp_path / "w.world") in e.value.message

        with pytest.raises(L.InvalidArgumentError, match="importance"):
            w.event("Too much", importance=11)
        with pytest.raises(L.InvalidArgumentError, match="text"):
            w.event("")
        with pytest.raises(L.InvalidArgumentError, match="finite"):
            w.time = float("nan")
        assert w.time == 31


def test_facts_and_forget(L, tmp_path):
    with L.World(tmp_path / "w.world") as w:
        fire = w.event(FIRE, witnesses=[ELENA])
        w.fact(ELENA, "Mira", "Mira is the blacksmith's daughter", importance=6)
        w.fact(ELENA, None, "The river floods in spring")
        w.fact(ORLANDO, "Mira", "Mira owes the Cathedral ten crowns")
        mira = w.memories(ELENA, "Mira")
        assert kinds(mira) == [("fact", "Mira is the blacksmith's daughter")]
        assert mira[0].player == "Mira" and mira[0].importance == 6
        assert kinds(w.memories(ELENA)) == [("event", FIRE),
                                            ("fact", "Mira is the blacksmith's daughter"),
                                            ("fact", "The river floods in spring")]
        assert w.memories(ELENA, "Anna") == []

        w.forget(ELENA, "Mira")
        assert kinds(w.memories(ELENA)) == [("event", FIRE),
                                            ("fact", "The river floods in spring")]
        # Orlando still knows his own fact about Mira
        assert kinds(w.memories(ORLANDO, "Mira")) == [("fact", "Mira owes the Cathedral ten crowns")]
        w.tell(fire, ORLANDO)
        with pytest.raises(L.InvalidArgumentError):
            w.forget(ELENA, None)


def test_save_as_is_a_world(L, tmp_path):
    slot = tmp_path / "slot 1.world"
    with L.World(tmp_path / "w.world") as w:
        w.time = 12
        w.event(FIRE, witnesses=[ORLANDO])
        w.fact(ELENA, "Mira", "Mira is the blacksmith's daughter")
        want = {n: w.memories(n) for n in (ORLANDO, ELENA)}
        w.save_as(slot)
        w.event("Later, not in the slot", witnesses=[ORLANDO])
        with pytest.raises(L.FileError) as e:
            w.save_as(tmp_path / "no such folder" / "s.world")
        assert "no such folder" in e.value.message
    assert not pathlib.Path(f"{slot}-wal").exists()   # one file
    with L.World(slot) as s:
        assert s.time == 12 and {n: s.memories(n) for n in want} == want
    # the original kept going, and is kept on close
    with L.World(tmp_path / "w.world") as w:
        assert len(w.memories(ORLANDO)) == 2


def test_load_a_slot(L, tmp_path):
    slot = tmp_path / "slot.world"
    with L.World(tmp_path / "w.world") as w:
        w.time = 12
        w.event(FIRE, witnesses=[ORLANDO])
        want = w.memories(ORLANDO)
        w.save_as(slot)
        w.time = 30
        w.event("Later, not in the slot", witnesses=[ORLANDO])
        assert len(w.memories(ORLANDO)) == 2
        w.load(slot)
        assert w.time == 12 and w.memories(ORLANDO) == want
        with pytest.raises(L.NotFoundError):
            w.load(tmp_path / "no such slot.world")
        junk = tmp_path / "junk.world"
        junk.write_bytes(b"not a world\n" * 100)
        with pytest.raises(L.FormatError):
            w.load(junk)
        assert w.time == 12 and w.memories(ORLANDO) == want   # left as it was


def test_bad_world_files(L, tmp_path):
    junk = tmp_path / "junk.world"
    junk.write_bytes(b"not a world, not SQLite\n" * 100)
    with pytest.raises(L.FormatError) as e:
        L.World(junk)
    assert str(junk) in e.value.message and e.value.code == L.Status.ERR_FORMAT
    assert junk.read_bytes() == b"not a world, not SQLite\n" * 100   # left as it was

    other = tmp_path / "other program.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE scores (name TEXT, points INTEGER)")
    before = other.read_bytes()
    with pytest.raises(L.FormatError) as e:
        L.World(other)
    assert str(other) in e.value.message and "not a LeMoNPC world" in e.value.message
    assert other.read_bytes() == before

    with pytest.raises(L.FileError) as e:
        L.World(tmp_path / "no such folder" / "w.world")
    assert "no such folder" in e.value.message


def test_closed_world(L, tmp_path):
    w = L.World(tmp_path / "w.world")
    w.close()
    assert w.closed
    with pytest.raises(ValueError, match="closed"):
        w.memories(ORLANDO)
    w.close()


# ---- NPCs living in a world ---------------------------------------------------

def test_npc_in_a_world_lifetimes(L, model, tmp_path):
    with L.World(tmp_path / "a.world") as a, L.World(tmp_path / "b.world") as b:
        orlando = L.Npc(model, ROOT / "examples/luminara/characters/orlando.md")
        brann = L.Npc(model, system="You are Brann, a blacksmith.")
        loner = L.Npc(model, system="You are nobody.")
        with pytest.raises(L.InvalidArgumentError, match="id"):
            brann.set_world(a)              # no sheet, no name: it needs an id
        with pytest.raises(TypeError):
            brann.set_world(str(tmp_path / "a.world"))
        orlando.set_world(a)
        assert orlando.world is a and orlando.world_id == ORLANDO
        brann.set_world(a, "Brann", memory_tokens=64)
        conv = brann.open("Mira")
        with pytest.raises(L.BusyError, match="conversations"):
            brann.set_world(b, "Brann")     # its conversations first
        conv.close()
        # moved to b: closing a leaves it alone
        brann.set_world(b, "Brann")
        assert brann.world is b
        conv = brann.open("Mira")
        orlando_conv = orlando.open("Mira")
        # Npc objects stand for their names in the world
        fire = a.event(FIRE, witnesses=[orlando])
        b.tell(b.event("The forge went cold"), brann)
        assert kinds(a.memories(orlando)) == [("event", FIRE)]
        assert a.memories(ORLANDO)[0].id == fire
        assert kinds(b.memories("Brann")) == [("event", "The forge went cold")]
        assert not b.memories(brann)[0].witnessed

        a.close()   # closes the NPC living in it (and its conversation) first
        assert orlando.closed and orlando_conv.closed
        assert not brann.closed and not conv.closed and not loner.closed and not model.closed
        b.close()
        assert brann.closed and conv.closed and not loner.closed
        loner.close()


def test_world_outlives_its_npcs_when_collected(L, model, tmp_path):
    """The World object collected before an NPC living in it: its file is
    closed only after the NPC is freed."""
    npc = L.Npc(model, system="You are Brann, a blacksmith.")
    w = L.World(tmp_path / "w.world")
    npc.set_world(w, "Brann")
    file, gone = w._file, weakref.ref(w)
    npc.world = None   # drop the NPC's reference (a game would not)
    del w
    gc.collect()
    assert gone() is None and file._h is not None    # collected, its file still open
    npc.close()
    assert file._h is None                            # closed with the last NPC


def test_world_closed_after_npcs_at_exit(L, model_path, tmp_path):
    """At interpreter exit finalizers run newest first: a World opened after
    its NPC must still be closed after it (lemonpc_world_close complains on
    stderr about NPCs still in it, and freeing them later reads freed memory)."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(BINDING)!r})
        import lemonpc
        lemonpc.load_library({str(library())!r})
        model = lemonpc.Model({str(model_path)!r}, threads=1)
        npc = lemonpc.Npc(model, system="You are Brann, a blacksmith.")
        world = lemonpc.World({str(tmp_path / "w.world")!r})
        npc.set_world(world, "Brann")
        conv = npc.open("Mira")
        world.event("The forge went cold", witnesses=["Brann"])
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    assert "lemonpc" not in r.stderr, r.stderr
    with L.World(tmp_path / "w.world") as w:
        assert kinds(w.memories("Brann")) == [("event", "The forge went cold")]


def test_prepare(L, model):
    with L.Npc(model, ROOT / "examples/luminara/characters/elena.md") as elena:
        assert elena.prefix_tokens == 0
        elena.prepare()
        assert elena.prefix_tokens > 0


def test_memory_recalled_across_reopen(L, model, tmp_path):
    """What the player said to an NPC in one run is in its recalled block in
    the next, and not in another NPC's; conversations come back from the
    world, from their stored state or rebuilt from their turns."""
    path = tmp_path / "w.world"
    player = "Mira, a young acolyte"
    said = {"Brann": "I keep bees behind the old mill.",
            "Tilda": "My brother sails to Calimport tomorrow."}

    def npcs(world):
        out = {}
        for name in said:
            out[name] = L.Npc(model, system=f"You are {name}, a villager. Answer briefly.",
                              sampling=greedy(L, 8))
            out[name].set_world(world, name)
        return out

    turns = {}
    with L.World(path) as w:
        for name, npc in npcs(w).items():
            conv = npc.open(player, "the village square")
            assert conv.memory == ""
            conv.say(said[name])
            turns[name] = conv.turns()
            if name == "Brann":
                conv.save_to_world()
            else:
                with L.World(tmp_path / "other.world") as other, \
                        pytest.raises(ValueError, match="does not live"):
                    other.save_conversation(conv)
        assert kinds(w.memories("Brann", "Mira")) == [("said", said["Brann"])]

    # the next run
    with L.World(path) as w:
        n = npcs(w)
        # the conversations kept in the world
        with n["Brann"].load_conversation(player) as back:   # from its stored state
            assert back.turns() == turns["Brann"] and back.n_cached > 0
        with n["Tilda"].load_conversation(player) as back:   # rebuilt from its turns
            assert back.turns() == turns["Tilda"] and back.n_cached == 0

        # a new conversation recalls what was said before (the lines a
        # conversation holds are not recalled again)
        for name, npc in n.items():
            other = next(o for o in said if o != name)
            with npc.open(player, "the village square") as conv:
                conv.say("Do you remember what I told you?")
                assert said[name] in conv.memory, conv.memory
                assert said[other] not in conv.memory, conv.memory
                assert "Mira told you" in conv.memory

        # every exchange with the player is recorded: two conversations now
        with n["Tilda"].load_conversation(player) as back:
            assert back.n_turns == 4 and back.turns()[:2] == turns["Tilda"]
            back.say("And what else?")
            assert back.n_turns == 6 and back.n_cached > 0
            w.save_conversation(back)
        with n["Tilda"].load_conversation(player) as back:   # from the state just stored
            assert back.n_turns == 6 and back.n_cached > 0
        with pytest.raises(L.NotFoundError) as e:
            n["Brann"].load_conversation("Anna")
        assert str(path) in e.value.message and "Brann has no conversation" in e.value.message

        w.forget("Brann", "Mira")
        assert w.memories("Brann", "Mira") == []
        with pytest.raises(L.NotFoundError):
            n["Brann"].load_conversation(player)
    with L.Npc(model, system="No world.") as lone:
        with pytest.raises(L.InvalidArgumentError, match="no world"):
            lone.load_conversation(player)


def test_not_found_names_the_player(L, model, tmp_path):
    with L.World(tmp_path / "w.world") as w, \
            L.Npc(model, system="You are Brann, a blacksmith.") as brann:
        brann.set_world(w, "Brann")
        with pytest.raises(L.NotFoundError) as e:
            brann.load_conversation("Anna, a farmer")
    assert e.value.message.endswith("Brann has no conversation with Anna"), e.value.message


# ---- the tavern: tavern.py, and tavern.c with the same script -------------------

RUN1 = ["I am Wren, and I carry sealed letters for the royal archive.",
        "/rider",
        "/go elena",
        "Good evening. Is there any news?",
        "/quit"]
RUN2 = ["/memory",
        "/go elena",
        "/memory",
        "The bell tower of Saint Aurel burned down last night.",
        "/memory"]


def play(cmd, world, script):
    env = {**os.environ, "TAVERN_GREEDY": "1"}
    env.setdefault("LEMONPC_LIB", str(library()))   # for tavern.py
    r = subprocess.run([*cmd, "--world-file", str(world)], cwd=ROOT,
                       input="".join(line + "\n" for line in script), capture_output=True,
                       text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def memory_of(out, name):
    """The lines /memory printed for the NPC named name (the last listing)."""
    block = out.split(f"{name} remembers:\n")[-1]
    return [line for line in block.splitlines() if line.startswith("   - ")]


def check_scene(out1, out2):
    """What tests/oracle/test_tavern.py asserts of tavern.c."""
    assert f"{ORLANDO}: " in out1 and f"{ELENA}: " in out1
    assert f"{ORLANDO} hears it" in out1
    for reply in [line for line in out1.splitlines() if line.startswith((f"{ORLANDO}: ",
                                                                         f"{ELENA}: "))]:
        assert len(reply.split(": ", 1)[1].strip()) > 0, reply

    orlando = memory_of(out2.split("You walk over to Elena")[0], ORLANDO)
    assert any("sealed letters for the royal archive" in line for line in orlando), orlando
    assert any("[event]" in line and "bell tower" in line for line in orlando), orlando
    elena_before = memory_of(out2.split("The bell tower of Saint Aurel burned")[0], ELENA)
    assert any("Is there any news?" in line for line in elena_before), elena_before
    assert not any("sealed letters" in line for line in elena_before), elena_before
    assert not any("[event]" in line for line in elena_before), elena_before
    elena_after = memory_of(out2, ELENA)
    assert any("bell tower of Saint Aurel burned" in line for line in elena_after), elena_after


@pytest.fixture(scope="module")
def python_scene(model_path, tmp_path_factory):
    """tavern.py run twice against one world file: (out1, out2, world)."""
    world = tmp_path_factory.mktemp("tavern_py") / "bell.world"
    cmd = [sys.executable, str(TAVERN_PY), str(model_path)]
    return play(cmd, world, RUN1), play(cmd, world, RUN2), world


def test_tavern_py_remembers_across_runs(python_scene):
    out1, out2, world = python_scene
    check_scene(out1, out2)
    assert f"(The world is kept in {world}.)" in out1
    assert "You have been here before" not in out2   # no /wait: still hour 0


def test_tavern_py_prints_what_tavern_c_prints(python_scene, model_path, tmp_path):
    """The same greedy scene, byte for byte, from the C game and the Python one."""
    make("tavern")
    world = tmp_path / "bell.world"
    cmd = [str(BUILD / "examples" / "tavern"), str(model_path)]
    c1, c2 = play(cmd, world, RUN1), play(cmd, world, RUN2)
    py1, py2, py_world = python_scene
    assert py1.replace(str(py_world), str(world)) == c1
    assert py2.replace(str(py_world), str(world)) == c2


def test_tavern_py_commands(L, model_path, tmp_path):
    """/wait, an unknown NPC, an unknown command, and the usage."""
    world = tmp_path / "bell.world"
    with L.World(world) as w:
        w.time = 4
    out = play([sys.executable, str(TAVERN_PY), str(model_path)], world,
               ["/go nobody", "/dance", "/wait", "", "/memory"])
    assert "(You have been here before: it is hour 4 of your journey.)" in out
    assert "(There is no nobody here.)" in out
    assert "(/go orlando, /go elena, /rider, /wait, /memory, /quit)" in out
    assert "(An hour passes. Hour 5.)" in out
    assert f"{ORLANDO} remembers:\nYou leave the Golden Bell." in out
    env = {**os.environ, "LEMONPC_LIB": os.environ.get("LEMONPC_LIB", str(library()))}
    r = subprocess.run([sys.executable, str(TAVERN_PY)], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "usage: tavern MODEL.gguf" in r.stderr
    junk = tmp_path / "junk.world"
    junk.write_bytes(b"junk" * 100)
    r = subprocess.run([sys.executable, str(TAVERN_PY), str(model_path), "--world-file",
                        str(junk)], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                       env=env)
    assert r.returncode == 1 and r.stderr.startswith(f"tavern: {junk}: ") and \
        "not a LeMoNPC world" in r.stderr, r.stderr
