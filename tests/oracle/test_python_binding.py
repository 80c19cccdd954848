"""The Python binding (bindings/python/lemonpc.py) on the real model.

Its struct layouts, enum values and prototypes are checked against
include/lemonpc.h by the C compiler; its greedy replies against
`lemonpc generate` (a thin user of the same C API); and streaming, errors,
cancelling from another thread, save/restore and NPCs through the binding.
Each reply is a few dozen tokens at most."""
import ctypes
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = ROOT / os.environ.get("LEMONPC_BUILD", "build")
HEADER = ROOT / "include" / "lemonpc.h"
SHEETS = ROOT / "examples" / "luminara" / "characters"
ORLANDO = SHEETS / "orlando.md"
ELENA = SHEETS / "elena.md"
ADAPTER = ROOT / "examples" / "luminara" / "npc" / "orlando.adapter.gguf"
BLACKSMITH = "You are Brann, a grumpy dwarven blacksmith. Answer in one or two sentences."
THREADS = 2


def make(target):
    args = ["make", "-j2", target]
    if "LEMONPC_BUILD" in os.environ:
        args.append(f"BUILD={os.environ['LEMONPC_BUILD']}")
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    if r.returncode:
        pytest.fail(f"{' '.join(args)} failed:\n{r.stdout[-2000:]}{r.stderr[-4000:]}")


@pytest.fixture(scope="session")
def L():
    """The binding, on LEMONPC_LIB or the repository's build (built if missing)."""
    lib = os.environ.get("LEMONPC_LIB")
    if not lib:
        lib = BUILD / "liblemonpc.so"
        if not lib.exists():
            make("lib")
    sys.path.insert(0, str(ROOT / "bindings" / "python"))
    import lemonpc
    lemonpc.load_library(lib)
    return lemonpc


@pytest.fixture(scope="session")
def cli():
    exe = BUILD / "lemonpc"
    if not exe.exists():
        make(str(exe.relative_to(ROOT)))
    return exe


@pytest.fixture(scope="module")
def model(L, model_path):
    with L.Model(model_path, threads=THREADS) as m:
        yield m


def greedy(L, n, **kw):
    # the CLI's repetition penalty is off by default, the library's is 1.1
    return L.Sampling(temperature=0, max_tokens=n, repeat_penalty=1.0, **kw)


# ---- the binding against the header -----------------------------------------

def c_compiler():
    cc = os.environ.get("CC", "cc")
    if not shutil.which(cc):
        pytest.skip(f"no C compiler ({cc})")
    return cc


def check_c(tmp_path, body, name="check.c"):
    src = tmp_path / name
    src.write_text(f'#include <stddef.h>\n#include "lemonpc.h"\n{body}\n')
    return subprocess.run([c_compiler(), "-std=c11", "-Wall", "-Werror", "-fsyntax-only",
                           f"-I{ROOT / 'include'}", str(src)], capture_output=True, text=True)


def layout_checks(L):
    """_Static_asserts of every struct's size, alignment and field offsets
    and every enum constant, as the binding has them."""
    out = []
    for s in L._STRUCTS:
        t = s._c_name_
        out.append(f'_Static_assert(sizeof({t}) == {ctypes.sizeof(s)}, "sizeof {t}");')
        out.append(f'_Static_assert(_Alignof({t}) == {ctypes.alignment(s)}, "alignof {t}");')
        for f, ft in s._fields_:
            off = getattr(s, f).offset
            out.append(f'_Static_assert(offsetof({t}, {f}) == {off}, "offsetof {t}.{f}");')
            out.append(f'_Static_assert(sizeof((({t} *)0)->{f}) == {ctypes.sizeof(ft)}, '
                       f'"sizeof {t}.{f}");')
    for enum, prefix in L._ENUMS.items():
        for name, m in enum.__members__.items():   # a flag enum's combinations too
            out.append(f'_Static_assert({prefix}{name} == {int(m)}, "{prefix}{name}");')
    for t in ("lemonpc_status", "lemonpc_kv_type", "lemonpc_persona", "lemonpc_stop"):
        out.append(f'_Static_assert(sizeof({t}) == {ctypes.sizeof(ctypes.c_int)}, "{t}");')
    # each callback typedef is the function pointer type the binding declares
    for t, c in L._CALLBACKS.items():
        out.append(f'_Static_assert(_Generic(({t})0, {c}: 1, default: 0), "{t}");')
    return "\n".join(out)


def test_layout_and_prototypes_match_header(L, tmp_path):
    """The compiler checks what the binding assumes: sizes, offsets, enum
    values, callback types, and the prototypes (a redeclaration with other
    types is a 'conflicting types' error). Every function and constant of
    the header is bound."""
    r = check_c(tmp_path, layout_checks(L) + "\n" + L._PROTOTYPES)
    assert r.returncode == 0, r.stderr
    # ... and the check has teeth
    bad = L._PROTOTYPES.replace("int lemonpc_conversation_n_turns", "size_t "
                                "lemonpc_conversation_n_turns")
    assert bad != L._PROTOTYPES
    r = check_c(tmp_path, bad, "bad.c")
    assert r.returncode != 0 and "lemonpc_conversation_n_turns" in r.stderr
    r = check_c(tmp_path, '_Static_assert(offsetof(lemonpc_sampling, seed) == 28, "seed");',
                "bad2.c")
    assert r.returncode != 0
    r = check_c(tmp_path, '_Static_assert(_Generic((lemonpc_memory_fn)0, '
                'int (*)(void *, const void *): 1, default: 0), "fn");', "bad3.c")
    assert r.returncode != 0

    header = HEADER.read_text()
    declared = set(re.findall(r"LEMONPC_API[^;]*?\b(lemonpc_\w+)\s*\(", header, re.S))
    bound = {name for name, _, _ in L._parse_prototypes(L._PROTOTYPES)}
    assert bound <= declared, f"bound but not in lemonpc.h: {sorted(bound - declared)}"
    for name in bound:
        assert hasattr(L._lib(), name)
    # ... and each declared function is called somewhere in the binding
    code = pathlib.Path(L.__file__).read_text().replace(L._PROTOTYPES, "")
    uncalled = sorted(n for n in bound if not re.search(rf"\b{n}\b", code))
    assert not uncalled, f"in _PROTOTYPES but called by no wrapper: {uncalled}"
    # a function added to the header is bound (and wrapped) with it
    assert not declared - bound, \
        f"lemonpc.h functions the Python binding lacks: {sorted(declared - bound)}"
    have = {p + name for e, p in L._ENUMS.items() for name in e.__members__}
    consts = set(re.findall(r"\b(LEMONPC_(?:OK|ERR_\w+|KV_\w+|STOP_\w+|PERSONA_\w+|CHECK_\w+))\s*=", header))
    assert not consts - have, f"lemonpc.h constants the Python binding lacks: {sorted(consts - have)}"
    # and so is every struct and callback type
    structs = set(re.findall(r"typedef struct (lemonpc_\w+) \{", header))
    assert structs == {s._c_name_ for s in L._STRUCTS}
    callbacks = set(re.findall(r"typedef \w+ \(\*(lemonpc_\w+)\)", header))
    assert callbacks == set(L._CALLBACKS)
    assert L.version() == re.search(r'#define LEMONPC_VERSION "(.*)"', header).group(1)
    assert L.status_name(L.Status.ERR_CANCELLED) == "cancelled"


def test_sampling_defaults(L):
    d = L.Sampling.defaults()
    assert (d.temperature, d.top_k, d.top_p, d.repeat_penalty, d.max_tokens) == \
        (0.7, 40, 0.95, 1.1, 160)


# ---- replies ----------------------------------------------------------------

def cli_reply(cli, model_path, n, prompt, *args):
    r = subprocess.run([str(cli), "generate", str(model_path), "-p", prompt, "--temp", "0",
                        "-n", str(n), "-t", str(THREADS), *map(str, args)],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.endswith(b"\n")
    return r.stdout[:-1].decode()


@pytest.mark.parametrize("system,prompt", [
    (BLACKSMITH, "Who are you, and what do you sell?"),
    (None, "Write the Japanese word for cat."),   # multi-byte characters
])
def test_greedy_matches_cli(L, model, cli, model_path, system, prompt):
    n = 32
    want = cli_reply(cli, model_path, n, prompt, *(["--system", system] if system else []))
    with L.Npc(model, system=system, sampling=greedy(L, n)) as npc, npc.open() as conv:
        pieces = []
        text, info = conv.say(prompt, on_text=pieces.append)
    assert text == want
    assert "".join(pieces) == text and all(pieces)
    assert "\ufffd" not in text
    assert 0 < info.n_generated <= n and info.total_seconds > 0
    assert info.stop in (L.Stop.END, L.Stop.MAX_TOKENS)


def test_greedy_character_with_adapter_matches_cli(L, model, cli, model_path):
    n, line = 24, "Who are the Unblessed?"
    want = cli_reply(cli, model_path, n, line, "--character", ORLANDO, "--adapter", ADAPTER,
                     "--asker", "Mira", "--place", "the cathedral")
    with L.Npc(model, ORLANDO, adapter=ADAPTER, sampling=greedy(L, n)) as npc, \
            npc.open("Mira", "the cathedral") as conv:
        assert npc.name == "Orlando Marlo" and isinstance(npc.warning, str)
        text, info = conv.say(line)
        assert npc.prefix_tokens > 0 and info.n_reused >= npc.prefix_tokens
    assert text == want


def test_stream_pieces_are_whole_utf8(L, model):
    """The library's guarantee, at the C level: every piece decodes alone."""
    with L.Npc(model, sampling=greedy(L, 16)) as npc, npc.open() as conv:
        raw = []
        cb = L._STREAM_FN(lambda _u, p, n: raw.append(ctypes.string_at(p, n)) or 0)
        out, info, err = ctypes.c_void_p(), L._ReplyInfo(), L._Error()
        code = L._lib().lemonpc_say(conv._h, b"Write the Japanese word for cat.", cb, None,
                                    ctypes.byref(out), ctypes.byref(info), ctypes.byref(err))
        assert code == 0, err.message
        whole = ctypes.string_at(out.value)
        L._lib().lemonpc_string_free(out)
    assert b"".join(raw) == whole and any(b > 0x7f for b in whole)
    for piece in raw:
        piece.decode("utf-8")   # strict


def test_complete_streams(L, model):
    with L.Npc(model, sampling=greedy(L, 12)) as npc:
        pieces = []
        text, info = npc.complete("<|im_start|>user\nName three colours.<|im_end|>\n"
                                  "<|im_start|>assistant\n", on_text=pieces.append)
    assert text and "".join(pieces) == text and info.n_generated <= 12


def test_stop_strings(L, model):
    with L.Npc(model, system="You are a grumpy blacksmith.", sampling=greedy(L, 24)) as plain, \
            L.Npc(model, system="You are a grumpy blacksmith.", sampling=greedy(L, 24),
                  stop=["forge"]) as stopped, plain.open() as a, stopped.open() as b:
        full = a.say("Who are you?").text
        assert "forge" in full, full
        text, info = b.say("Who are you?")
    assert text == full[:full.index("forge")] and info.stop == L.Stop.STRING


def test_guard_draws_again(L, model):
    """A reply cut at 6 tokens fails the guard's "ended" check on every draw:
    three draws, the first (the greedy reply) given, streamed once whole."""
    with L.Npc(model, system="You are a grumpy blacksmith.", sampling=greedy(L, 6)) as plain, \
            L.Npc(model, system="You are a grumpy blacksmith.", sampling=greedy(L, 6), guard=2,
                  guard_checks=L.Check.ENDED) as guarded, plain.open() as a, guarded.open() as b:
        first, info_a = a.say("Tell me about your forge.")
        pieces = []
        text, info = b.say("Tell me about your forge.", on_text=pieces.append)
    assert info_a.attempts == 1 and info_a.failed_checks == L.Check(0)
    assert text == first and pieces == [text]
    assert info.attempts == 3 and info.failed_checks == L.Check.ENDED
    # best_of: three draws though they fail alike, the most relevant of them
    # given, its relevance in the info (the draws are the same as above)
    with L.Npc(model, system="You are a grumpy blacksmith.", sampling=greedy(L, 6), best_of=3,
               guard_checks=L.Check.ENDED) as ranked, ranked.open() as c:
        text_c, info_c = c.say("Tell me about your forge.")
    assert info_c.attempts == 3 and info_c.relevance != 0 and isinstance(text_c, str)
    with pytest.raises(L.InvalidArgumentError, match="best_of"):
        L.Npc(model, system="x", best_of=17)


def test_set_turns_sampling_and_conversation_complete(L, model):
    with L.Npc(model, system="You are a grumpy blacksmith.", sampling=greedy(L, 12)) as npc, \
            npc.open("Tom") as a, npc.open("Tom") as b:
        r1 = a.say("Hello.").text
        r2, info = a.say("What do you sell?")
        b.set_turns([("user", "Hello."), ("assistant", r1)])
        assert b.turns() == [("user", "Hello."), ("assistant", r1)]
        b.say("What do you sell?")
        assert b.n_turns == 4
        a.set_turns(a.turns()[:2])
        again, info2 = a.say("What do you sell?")
        assert again == r2 and info2.n_reused >= info.n_reused
        with pytest.raises(L.InvalidArgumentError, match="narrator"):
            b.set_turns([("narrator", "x")])
        b.set_sampling(L.Sampling(temperature=0, max_tokens=3))
        _, info = b.say("Anything else?")
        assert info.n_generated == 3 and info.stop == L.Stop.MAX_TOKENS
        b.set_sampling(None, stop=[r1[2:]])
        b.set_turns([])
        cut, info = b.say("Hello.")
        assert info.stop == L.Stop.STRING and cut == r1[:2]
        text, _ = b.complete("The three primary colours are")
        assert text == npc.complete("The three primary colours are").text
        _, info = b.complete("The three primary colours are")
        assert info.n_prompt == 1


# ---- errors -------------------------------------------------------------------

def test_errors_name_what_is_wrong(L, model, tmp_path):
    missing = tmp_path / "no such model.gguf"
    with pytest.raises(L.FileError) as e:
        L.Model(missing)
    assert str(missing) in e.value.message and e.value.code == L.Status.ERR_IO
    assert isinstance(e.value, L.LemonpcError)

    for bad, field in ((L.Sampling(top_p=1.5), "top_p"), (L.Sampling(top_k=-1), "top_k"),
                       (L.Sampling(temperature=float("nan")), "temp")):
        with pytest.raises(L.InvalidArgumentError) as e:
            L.Npc(model, sampling=bad)
        assert field in e.value.message, e.value.message

    with pytest.raises(L.InvalidArgumentError, match="sheet"):
        L.Npc(model, ORLANDO, system="both")
    with pytest.raises(L.LemonpcError) as e:
        L.Npc(model, tmp_path / "nobody.md")
    assert "nobody.md" in e.value.message
    with pytest.raises(L.LemonpcError) as e:
        L.Npc(model, ORLANDO, adapter=tmp_path / "none.adapter.gguf")
    assert "none.adapter.gguf" in e.value.message

    with L.Npc(model, system=BLACKSMITH) as npc:
        with pytest.raises(L.FileError) as e:
            npc.restore(tmp_path / "never saved.lmc")
        assert "never saved.lmc" in e.value.message
        junk = tmp_path / "junk.lmc"
        junk.write_bytes(b"not a conversation" * 10)
        with pytest.raises(L.FormatError) as e:
            npc.restore(junk)
        assert "junk.lmc" in e.value.message


def test_closed_handles(L, model_path):
    m = L.Model(model_path, threads=1)
    npc = L.Npc(m, system=BLACKSMITH)
    conv = npc.open()
    m.close()   # closes its NPC and conversation first
    assert conv.closed and npc.closed and m.closed
    with pytest.raises(ValueError, match="closed"):
        conv.say("hello")
    with pytest.raises(ValueError, match="closed"):
        npc.open()
    conv.cancel()   # a no-op
    m.close()


# ---- cancel, busy ---------------------------------------------------------------

def blocked_reply(conv, line, started, release, errors):
    """say(line) with a stream callback that waits for `release` at the
    first piece; whatever it raises goes to errors."""
    def on_text(_piece):
        if not started.is_set():
            started.set()
            assert release.wait(30)
        return False
    try:
        conv.say(line, on_text=on_text)
    except BaseException as e:  # noqa: B902
        errors.append(e)


def test_cancel_from_another_thread(L, model):
    line1, line2 = "Who are you?", "Count slowly from one to one hundred."
    with L.Npc(model, system=BLACKSMITH, sampling=greedy(L, 24)) as npc, \
            npc.open() as conv, npc.open() as twin:
        for c in (conv, twin):
            c.say(line1)
        before = conv.turns()
        assert len(before) == conv.n_turns == 2
        started, release, errors = threading.Event(), threading.Event(), []
        t = threading.Thread(target=blocked_reply, args=(conv, line2, started, release, errors))
        t.start()
        assert started.wait(60)
        conv.cancel()           # from this thread while the other is mid-reply
        release.set()
        t.join(60)
        assert not t.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], L.CancelledError), errors
        assert errors[0].code == L.Status.ERR_CANCELLED
        assert errors[0].info.stop == L.Stop.CANCELLED and errors[0].info.n_generated < 24
        assert conv.n_turns == 2 and conv.turns() == before
        # the conversation goes on as if the cancelled reply never was
        assert conv.say("What do you sell?").text == twin.say("What do you sell?").text


def test_callback_cancels_and_raises(L, model):
    with L.Npc(model, system=BLACKSMITH, sampling=greedy(L, 64)) as npc, npc.open() as conv:
        seen = []
        with pytest.raises(L.CancelledError):
            conv.say("Tell me a long story.", on_text=lambda s: seen.append(s) or len(seen) >= 3)
        assert len(seen) == 3 and conv.n_turns == 0

        def boom(_piece):
            raise KeyError("from the callback")
        with pytest.raises(KeyError, match="from the callback"):
            conv.say("Tell me a long story.", on_text=boom)
        assert conv.n_turns == 0


def test_busy_from_another_thread(L, model):
    with L.Npc(model, system=BLACKSMITH, sampling=greedy(L, 24)) as npc, npc.open() as conv:
        started, release, errors = threading.Event(), threading.Event(), []
        t = threading.Thread(target=blocked_reply, args=(conv, "Hello.", started, release, errors))
        t.start()
        try:
            assert started.wait(60)
            with pytest.raises(L.BusyError, match="in use"):
                conv.say("Me too.")
        finally:
            release.set()
            t.join(60)
        assert errors == [] and conv.n_turns == 2


def test_close_cancels_and_waits(L, model):
    """close() from another thread while a reply runs: the reply is cancelled
    and the handle freed only once the call has returned."""
    with L.Npc(model, system=BLACKSMITH, sampling=greedy(L, 24)) as npc:
        conv = npc.open()
        started, release, errors = threading.Event(), threading.Event(), []
        t = threading.Thread(target=blocked_reply,
                             args=(conv, "Count from one to one hundred.", started, release, errors))
        t.start()
        assert started.wait(60)
        closer = threading.Thread(target=conv.close)
        closer.start()
        closer.join(0.2)
        assert closer.is_alive() and not conv.closed   # waiting for the reply
        release.set()
        t.join(60)
        closer.join(60)
        assert conv.closed and len(errors) == 1 and isinstance(errors[0], L.CancelledError)


# ---- save and restore, several NPCs ---------------------------------------------

@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=0.9, seed=7)])
def test_save_restore_same_next_reply(L, model, tmp_path, sampling):
    sp = L.Sampling(max_tokens=20, **sampling)
    save = tmp_path / "brann.lmc"
    with L.Npc(model, system=BLACKSMITH, sampling=sp) as npc:
        with npc.open() as conv:
            conv.say("Good morning, smith.")
            conv.save(save)
            turns = conv.turns()
            want = conv.say("How much for a sword?")
        with npc.restore(save) as back:
            assert back.turns() == turns and back.n_cached > 0
            got = back.say("How much for a sword?")
            assert got.text == want.text
            assert got.info.n_reused > 0
            back.reset()
            assert back.n_turns == 0
        with L.Npc(model, system="You are someone else.", sampling=sp) as other:
            with pytest.raises(L.MismatchError):
                other.restore(save)


def test_two_npcs_answer_differently(L, model):
    line = "Who are you?"
    sp = greedy(L, 24)
    with L.Npc(model, system=BLACKSMITH, sampling=sp) as brann, \
            L.Npc(model, ORLANDO, adapter=ADAPTER, sampling=sp) as orlando, \
            brann.open() as a, orlando.open("Mira") as b:
        ra, rb = a.say(line).text, b.say(line).text
        assert ra and rb and ra != rb
        # the same again from two threads at once (the GIL is released in C)
        with brann.open() as a2, orlando.open("Mira") as b2:
            out = {}
            ts = [threading.Thread(target=lambda c=c, k=k: out.__setitem__(k, c.say(line).text))
                  for k, c in (("a", a2), ("b", b2))]
            for t in ts:
                t.start()
            for t in ts:
                t.join(60)
            assert out == {"a": ra, "b": rb}
