"""The module structure docs/HACKING.md states is the structure of the code:
every `#include "module/..."` in src/ points down the chain, never up or
sideways, and no header includes itself through others. A new module, or an
include against the arrows, fails here until the code or the doc is changed."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

# Top to bottom, as docs/HACKING.md draws it; modules on one level do not
# include each other.
LEVELS = [["cli"], ["server", "eval"], ["datagen"], ["runtime", "train"], ["memory", "check"],
          ["sheet", "model", "tokenizer"], ["gguf"], ["tensor"], ["base"]]
LEVEL = {m: i for i, ms in enumerate(LEVELS) for m in ms}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def includes(path):
    return INCLUDE.findall(path.read_text(errors="replace"))


def target_module(inc):
    if inc == "lemonpc.h":   # include/lemonpc.h: the runtime's public API
        return "runtime"
    return inc.split("/", 1)[0] if "/" in inc else None


def test_every_module_has_a_level():
    mods = sorted(p.name for p in SRC.iterdir() if p.is_dir())
    assert mods, SRC
    assert [m for m in mods if m not in LEVEL] == [], "add the module to LEVELS and to docs/HACKING.md"


def test_doc_draws_the_same_chain():
    chain = " -> ".join("/".join(ms) for ms in LEVELS)
    doc = " ".join((ROOT / "docs" / "HACKING.md").read_text().split())
    assert chain in doc, f"docs/HACKING.md should state the chain: {chain}"


def test_includes_point_down():
    bad = []
    for f in sorted(SRC.rglob("*.[ch]")):
        mod = f.relative_to(SRC).parts[0]
        for inc in includes(f):
            t = target_module(inc)
            if t is None or t == mod:
                continue
            if t not in LEVEL:
                bad.append(f"{f.relative_to(ROOT)}: includes \"{inc}\" of no known module")
            elif LEVEL[t] <= LEVEL[mod]:
                bad.append(f"{f.relative_to(ROOT)}: {mod} includes \"{inc}\" ({t} is not below {mod})")
    assert bad == []


def test_no_header_cycles():
    headers = {str(h.relative_to(SRC)): h for h in SRC.rglob("*.h")}
    graph = {k: [i for i in includes(h) if i in headers] for k, h in headers.items()}
    state, cycles = {}, []

    def visit(h, path):
        state[h] = "open"
        for n in graph[h]:
            if state.get(n) == "open":
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[h] = "done"

    for h in sorted(graph):
        if h not in state:
            visit(h, [h])
    assert cycles == []


def test_the_checks_can_fail(tmp_path):
    """The rules themselves, on made-up includes: an upward and a sideways one fail."""
    def allowed(a, b):   # may module a include module b?
        return LEVEL[b] > LEVEL[a]
    assert allowed("tokenizer", "gguf") and allowed("gguf", "tensor") and allowed("cli", "base")
    assert not allowed("model", "tokenizer")   # sideways
    assert not allowed("base", "tensor")       # upward
    f = tmp_path / "x.c"
    f.write_text('#include "model/llama.h"\n#include <stdio.h>\n  # include "lemonpc.h"\n')
    assert includes(f) == ["model/llama.h", "lemonpc.h"]
    assert [target_module(i) for i in includes(f)] == ["model", "runtime"]
    assert target_module("stdio.h") is None
