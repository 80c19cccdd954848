"""Character Cards made by other programs, imported by `lemonpc import` and
judged by another program.

Where the cards come from (none is written by our code or by hand-rolled
chunk writers):
- tavern-card 0.1.1 (PyPI, MIT, pure Python; tests/requirements.txt) writes
  V2 and V3 cards as JSON (its `convert` command) and PNG (its
  write_png_card) while the test runs. It is also the judge: its parsed
  view of a card is what the sheet is checked against, and it must read
  our export back equal to the original.
- card-forge 0.4.0 (PyPI, MIT; needs Pillow and pydantic, so its output is
  vendored): a V3 JSON card as its pydantic model dumps it (every unset
  optional field as null) and a V3 PNG written by Pillow with `ccv3` and
  `chara` chunks, and the same card in a zTXt and in an iTXt chunk (Pillow).
  tests/data/cards/thirdparty/make_cardforge.py made them.
tests/data/cards/thirdparty/README.md gives versions and licenses."""
import base64
import json
import pathlib
import re
import struct
import subprocess
import sys

import pytest

import tavern_card

ROOT = pathlib.Path(__file__).resolve().parents[2]
TP = ROOT / "tests/data/cards/thirdparty"


# -- the third-party side -------------------------------------------------

def tc_view(path):
    """tavern-card's parsed view of a card file (V2-shaped dict)."""
    blob = pathlib.Path(path).read_bytes()
    if blob.startswith(b"\x89PNG"):
        return tavern_card.parse_png_card(blob)
    return tavern_card.parse_card(blob.decode("utf-8"))


def tc_convert(src, dst):
    """tavern-card's own command line: `tavern-card convert SRC DST`."""
    r = subprocess.run([sys.executable, "-m", "tavern_card.cli", "convert", str(src), str(dst)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def png_texts(path):
    """tEXt chunks of a PNG, keyword -> text (stdlib only)."""
    b = pathlib.Path(path).read_bytes()
    out, o = {}, 8
    while o + 8 <= len(b):
        n, kind = struct.unpack(">I4s", b[o:o + 8])
        if kind == b"tEXt":
            k, _, v = b[o + 8:o + 8 + n].partition(b"\0")
            out[k.decode("latin-1")] = v.decode("latin-1")
        o += 12 + n
    return out


def chunk_json(path, key):
    return json.loads(base64.b64decode(png_texts(path)[key]))


# -- the sheet side: a small reader of our Markdown, written for this test --

def unescape(body):
    return "\n".join(line[1:] if re.match(r"\\+#", line) else line for line in body.split("\n"))


def md_sections(md):
    """'## Title' -> body; '### Sub' blocks stay inside the body."""
    secs, cur = {}, None
    for line in md.split("\n"):
        if line.startswith("## "):
            cur = line[3:].strip()
            secs[cur] = []
        elif cur is not None:
            secs[cur].append(line)
    return {k: "\n".join(v).strip("\n") for k, v in secs.items()}


def md_subs(body):
    """'### Title' blocks of a section body, in order: [(title, body)]."""
    subs = []
    for line in body.split("\n"):
        if line.startswith("### "):
            subs.append([line[4:], []])
        elif subs:
            subs[-1][1].append(line)
    return [(t, "\n".join(b).strip("\n")) for t, b in subs]


def split_keys(s):
    if s == "(no keys)":
        return []
    return [k.strip().replace("\\,", ",") for k in re.split(r"(?<!\\),", s)]


LORE_FIELD = re.compile(r"(Secondary keys|Enabled|Constant|Selective|Insertion order|Comment): (.*)")


def md_lore(body):
    """[(keys, fields, content)] of a `## Lore` section."""
    out = []
    for title, b in md_subs(body):
        lines, fields = b.split("\n"), {}
        while lines and LORE_FIELD.fullmatch(lines[0]):
            k, v = LORE_FIELD.fullmatch(lines[0]).groups()
            fields[k] = v
            lines.pop(0)
        out.append((split_keys(title), fields, unescape("\n".join(lines).strip("\n"))))
    return out


def mes_turns(mes):
    """A card's mes_example as conversations of (role, text): <START>
    splits conversations, {{user}}:/{{char}}: start turns, other lines
    continue the turn before."""
    convs = []
    for block in re.split(r"^<START>[ \t]*$", mes.replace("\r\n", "\n"), flags=re.M | re.I):
        turns = []
        for line in block.split("\n"):
            m = re.match(r"\{\{(user|char)\}\}:\s?(.*)", line, re.I)
            if m:
                turns.append([m.group(1).lower(), m.group(2)])
            elif turns:
                turns[-1][1] += "\n" + line
        if turns:
            convs.append([(r, t.strip()) for r, t in turns])
    return convs


def md_turns(body):
    convs = []
    for _, b in md_subs(body):
        turns = []
        for line in unescape(b).split("\n"):
            m = re.match(r"\*\*(.+?):\*\* ?(.*)", line)
            if m:
                turns.append(["user" if m.group(1) == "User" else "char", m.group(2)])
            elif turns:
                turns[-1][1] += "\n" + line
        convs.append([(r, t.strip()) for r, t in turns])
    return convs


# -- lemonpc --------------------------------------------------------------

def run(lemonpc, *args):
    r = subprocess.run([str(lemonpc), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, f"lemonpc {' '.join(map(str, args))}: {r.stderr}"
    return r


def import_card(lemonpc, src, out):
    md = pathlib.Path(run(lemonpc, "import", src, out).stdout.strip().splitlines()[-1])
    assert md.exists(), md
    return md


def check_sheet(lemonpc, md, out, view):
    """The sheet says what tavern-card read in the card, field by field."""
    d = view["data"]
    text = md.read_text(encoding="utf-8")
    secs = md_sections(text)
    assert re.search(r"^# (.*)$", text, re.M).group(1) == d["name"]
    assert unescape(secs["Backstory"]).strip() == d["description"].strip()
    for field, heading in [("personality", "Speaking style"), ("scenario", "Scenario"),
                           ("creator_notes", "Creator notes"), ("system_prompt", "System prompt"),
                           ("post_history_instructions", "Post-history instructions")]:
        if d[field].strip():
            assert unescape(secs[heading]).strip() == d[field].strip(), field
        else:
            assert heading not in secs, heading
    greetings = [unescape(b).strip() for _, b in md_subs(secs.get("Greetings", ""))]
    want = [g.strip() for g in [d["first_mes"]] + d["alternate_greetings"]]
    assert greetings == (want if any(want) else [])
    assert md_turns(secs.get("Example conversations", "")) == mes_turns(d["mes_example"])
    if d["tags"]:
        assert re.search(r"^tags: (.*)$", text, re.M).group(1) == ", ".join(d["tags"])

    book = d["character_book"]
    if book and book.get("entries"):
        world = (out / "world.md").read_text(encoding="utf-8")
        lore = md_lore(md_sections(world)["Lore"])
        assert len(lore) == len(book["entries"])
        for (keys, fields, content), e in zip(lore, book["entries"]):
            assert keys == e["keys"]
            assert content == e["content"].strip()
            if e.get("enabled") is not None:
                assert fields["Enabled"] == ("yes" if e["enabled"] else "no")
            if e.get("secondary_keys"):
                assert split_keys(fields["Secondary keys"]) == e["secondary_keys"]
    else:
        assert not (out / "world.md").exists()

    r = subprocess.run([str(lemonpc), "check", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def export(lemonpc, md, dst, *flags):
    run(lemonpc, "export", md, dst, *flags)
    return dst


def v3_upgrade(view):
    """What a V2 card is once written as V3 (our `ccv3` chunk): the spec,
    and `use_regex` on lorebook entries, which V3 requires."""
    v = json.loads(json.dumps(view))
    v["spec"], v["spec_version"] = "chara_card_v3", "3.0"
    for e in (v["data"]["character_book"] or {}).get("entries", []):
        e.setdefault("use_regex", False)
    return v


# -- the cards ------------------------------------------------------------

def lorebook():
    """A lorebook with the fields SillyTavern writes on entries."""
    def entry(i, keys, content, **kw):
        e = {"id": i, "keys": keys, "secondary_keys": [], "comment": "", "content": content,
             "constant": False, "selective": True, "insertion_order": 100, "enabled": True,
             "position": "before_char", "case_sensitive": False, "name": keys[0], "priority": 10,
             "extensions": {"position": 0, "exclude_recursion": False, "display_index": i,
                            "probability": 100, "useProbability": True, "depth": 4,
                            "selectiveLogic": 0, "group": "", "scan_depth": None,
                            "match_whole_words": None, "role": 0, "vectorized": False}}
        e.update(kw)
        return e
    return {
        "name": "Eldergrove",
        "entries": [
            entry(0, ["Eldergrove", "the grove"], "Eldergrove is an old forest where the trees\nremember every footstep.\n\nIts heart is a glade of white stones."),
            entry(1, ["Thornwatch"], "# Thornwatch\nA ruined tower on the northern ridge.", secondary_keys=["ruin", "tower"],
                  comment="a line starting with # in the content", enabled=False),
            entry(2, ["shadow, beast", "wraith"], "Shadow beasts fear running water.", constant=True,
                  insertion_order=5, selective=False),
        ],
        "extensions": {},
        "scan_depth": 4, "token_budget": 512, "recursive_scanning": False,
    }


def v2_dict():
    return {
        "spec": "chara_card_v2", "spec_version": "2.0",
        "data": {
            "name": "Maelis Thorn",
            "description": "{{char}} is the warden of Eldergrove, a half-elf ranger of forty winters.\n\n"
                           "She speaks softly, carries a yew bow and a satchel of herbs, and distrusts "
                           "anyone who hunts for sport. \u00c9lodie, her sister, left for the city years ago.",
            "personality": "patient, wry, protective, blunt with fools \U0001F33F",
            "scenario": "{{user}} wakes in the warden's hut after being found unconscious at the forest's edge.",
            "first_mes": "*The fire crackles. A woman in a green cloak looks up from a mortar of crushed leaves.*\n\n"
                         "\"Awake at last. You were lucky the wolves were fed.\"",
            "mes_example": "<START>\n{{user}}: Who are you?\n{{char}}: Maelis. I keep this forest.\n"
                            "Mostly from people like you.\n<START>\n{{user}}: Can I leave?\n"
                            "{{char}}: Whenever you like. The path east is safe by daylight.\n"
                            "{{user}}: And at night?\n{{char}}: At night nothing here is safe. Not even me.",
            "creator_notes": "Made for the import tests; slow-burn, low-violence.",
            "system_prompt": "Write {{char}}'s next reply in a fictional roleplay with {{user}}.",
            "post_history_instructions": "{{original}}\nStay in character as {{char}}.",
            "alternate_greetings": ["*She is gone when you wake; a note on the table says: 'Wait.'*",
                                    "\"You again. The grove seems to like you.\""],
            "tags": ["fantasy", "ranger", "female", "Eldergrove"],
            "creator": "lemonpc tests",
            "character_version": "1.2",
            "extensions": {"talkativeness": "0.5", "fav": False, "world": "Eldergrove",
                           "depth_prompt": {"prompt": "", "depth": 4, "role": "system"}},
            "character_book": lorebook(),
        },
    }


def v3_dict():
    c = v2_dict()
    c["spec"], c["spec_version"] = "chara_card_v3", "3.0"
    c["data"]["name"] = "Orrin Vale"
    for e in c["data"]["character_book"]["entries"]:
        e["use_regex"] = False
    return c


@pytest.fixture
def made(tmp_path):
    """Cards written by tavern-card: name -> path."""
    src = tmp_path / "src"
    src.mkdir()
    files = {}
    for tag, card in [("v2", v2_dict()), ("v3", v3_dict())]:
        # JSON through its command line (input: a plain dict as a user
        # would hand-write it), PNG through its library.
        raw = src / f"{tag}_input.json"
        raw.write_text(json.dumps(card), encoding="utf-8")
        files[f"{tag}.json"] = src / f"{tag}.json"
        tc_convert(raw, files[f"{tag}.json"])
        files[f"{tag}.png"] = src / f"{tag}.png"
        files[f"{tag}.png"].write_bytes(tavern_card.write_png_card(tavern_card.parse_card(card)))
    # A V2 card without a lorebook: tavern-card writes "character_book": null.
    bare = v2_dict()
    del bare["data"]["character_book"]
    files["v2_nobook.png"] = src / "v2_nobook.png"
    files["v2_nobook.png"].write_bytes(tavern_card.write_png_card(tavern_card.parse_card(bare)))
    return files


GENERATED = ["v2.json", "v2.png", "v3.json", "v3.png", "v2_nobook.png"]
VENDORED = ["brann.card-forge.json", "brann.card-forge.png"]


def source(name, made):
    return made[name] if name in made else TP / name


@pytest.mark.parametrize("name", GENERATED + VENDORED)
def test_import_matches_third_party_view(lemonpc, tmp_path, made, name):
    src = source(name, made)
    view = tc_view(src)
    out = tmp_path / "sheets"
    md = import_card(lemonpc, src, out)
    check_sheet(lemonpc, md, out, view)


@pytest.mark.parametrize("name", GENERATED + VENDORED)
def test_round_trip_judged_by_tavern_card(lemonpc, tmp_path, made, name):
    src = source(name, made)
    view = tc_view(src)
    md = import_card(lemonpc, src, tmp_path / "sheets")
    is_png = src.suffix == ".png"
    back = export(lemonpc, md, tmp_path / ("back.png" if is_png else "back.json"))
    if not is_png:
        assert tc_view(back) == view
        # Lossless: the very same JSON, nulls and unknown fields included.
        assert json.loads(back.read_text(encoding="utf-8")) == json.loads(src.read_text(encoding="utf-8"))
        return
    # Our PNG carries both chunks; each, read by tavern-card, is the card.
    orig = png_texts(src)
    key = "ccv3" if "ccv3" in orig else "chara"
    read_as = view["spec"]
    ours = png_texts(back)
    if read_as == "chara_card_v3":
        assert tavern_card.parse_card(ours["ccv3"]) == view
        assert chunk_json(back, "ccv3") == chunk_json(src, key)
    else:
        assert tavern_card.parse_card(ours["chara"]) == view
        assert chunk_json(back, "chara") == chunk_json(src, key)
        # A reader that prefers ccv3 (tavern-card does) gets the V3 form.
        assert tc_view(back) == v3_upgrade(view)


@pytest.mark.parametrize("name", ["v2.json", "v3.json"])
def test_json_to_png_and_back(lemonpc, tmp_path, made, name):
    """Export to the other container: tavern-card reads our PNG as the card
    it wrote as JSON, and converts it back to the same JSON."""
    src = source(name, made)
    view = tc_view(src)
    md = import_card(lemonpc, src, tmp_path / "sheets")
    png = export(lemonpc, md, tmp_path / "back.png")
    key = "ccv3" if view["spec"] == "chara_card_v3" else "chara"
    assert tavern_card.parse_card(png_texts(png)[key]) == view
    again = tmp_path / "again.json"
    tc_convert(png, again)
    want = view if key == "ccv3" else v3_upgrade(view)
    assert tc_view(again) == want


@pytest.mark.parametrize("kind", ["ztxt", "itxt"])
def test_compressed_and_international_text_chunks(lemonpc, tmp_path, kind):
    """The card in a zTXt or iTXt chunk (Pillow's other text chunks), on a
    palette picture: imported as the card-forge JSON it holds, and back."""
    src = TP / f"brann.pillow-{kind}.png"
    want = json.loads((TP / "brann.card-forge.json").read_text(encoding="utf-8"))
    md = import_card(lemonpc, src, tmp_path / "sheets")
    check_sheet(lemonpc, md, tmp_path / "sheets", tavern_card.parse_card(want))
    back = export(lemonpc, md, tmp_path / "back.json")
    assert json.loads(back.read_text(encoding="utf-8")) == want
    if kind == "ztxt":  # tavern-card reads zTXt (not iTXt)
        assert tc_view(src) == tc_view(back)


def test_card_forge_reads_our_export(lemonpc, tmp_path, made):
    """card-forge (when installed) validates our V3 export with its pydantic
    model and finds the card it wrote."""
    import forge.models as models
    src = TP / "brann.card-forge.json"
    md = import_card(lemonpc, src, tmp_path / "sheets")
    back = export(lemonpc, md, tmp_path / "back.json")
    ours = models.CharacterCardV3.model_validate_json(back.read_text(encoding="utf-8"))
    theirs = models.CharacterCardV3.model_validate_json(src.read_text(encoding="utf-8"))
    assert ours == theirs
