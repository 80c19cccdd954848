"""`lemonpc pairs` and `lemonpc build --dpo` on a tiny random model (the real
tokenizer, 2 layers): pairs from the NPC's own samples with the curated reply
chosen and a failing sample rejected, the journal's resume, datagen's rejected
answers against accepted ones, and the build's pairs and dpo stages ending in
a stamped adapter that eval and export take."""
import json
import pathlib
import shutil
import subprocess

import pytest

from lore_oracle import check_lore_blocks, lore_entries, tokens_counter
from make_random_gguf import write_random_llama

ROOT = pathlib.Path(__file__).resolve().parents[2]
LUMINARA = ROOT / "examples" / "luminara"
SHEET = LUMINARA / "characters" / "orlando.md"


@pytest.fixture(scope="module")
def tiny(model_path, tmp_models):
    p = tmp_models / "tiny-pairs.gguf"
    if not p.exists():
        write_random_llama(p, model_path, n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=128,
                           theta=100000.0, seed=5)
    return p


def convs(n_per_kind, kinds=("protective", "adversarial")):
    out = []
    for k in kinds:
        out += (LUMINARA / "data" / "orlando" / f"{k}.jsonl").read_text().splitlines()[:n_per_kind]
    return [json.loads(l) for l in out]


def pairs(lemonpc, model, out, *extra, check=True):
    r = subprocess.run([str(lemonpc), "pairs", str(model), "--out", str(out), "--character", str(SHEET),
                        "--samples", "2", "-n", "24", "-t", "2", *extra],
                       capture_output=True, text=True, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def read_jsonl(p):
    return [json.loads(l) for l in pathlib.Path(p).read_text().splitlines() if l.strip()]


def test_pairs_from_own_samples(lemonpc, tiny, tmp_path):
    data = tmp_path / "train.jsonl"
    cs = convs(3)
    data.write_text("".join(json.dumps(c) + "\n" for c in cs))
    out = tmp_path / "pairs.jsonl"
    r = pairs(lemonpc, tiny, out, "--data", str(data))
    ps = read_jsonl(out)
    journal = read_jsonl(str(out) + ".samples.jsonl")
    assert journal[0]["settings"]["samples"] == 2
    recs = {j["id"]: j for j in journal[1:]}
    # a random model never ends its turn in 24 tokens: every sample fails,
    # every prompt gives a pair, the writer's reply chosen
    assert set(recs) == {c["meta"]["id"] for c in cs}
    assert len(ps) == len(cs), r.stderr
    by_id = {c["meta"]["id"]: c for c in cs}
    for p in ps:
        c = by_id[p["meta"]["id"]]
        msgs = c["messages"]
        last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
        assert p["chosen"] == [msgs[last_user + 1]]
        assert p["meta"]["chosen_from"] == "reference" and p["meta"]["source"] == "data"
        assert p["meta"]["kind"] == c["meta"]["kind"]
        # the prompt: the persona policy's system turn with the scene, then the turns
        assert p["prompt"][0]["role"] == "system"
        assert p["prompt"][0]["content"].startswith("You are Orlando Marlo")
        assert "You are talking with: " + c["meta"]["asker"] in p["prompt"][0]["content"]
        # with the lorebook block a game would give before the last user turn, when one applies
        body = p["prompt"][1:]
        if len(body) > 1 and body[-2]["role"] == "system":
            assert body[-2]["content"].startswith("Things you know:\n- ")
            body = body[:-2] + body[-1:]
        assert body == msgs[:last_user + 1]
        samples = recs[p["meta"]["id"]]["samples"]
        assert len(samples) == 2
        rej = p["rejected"][0]["content"]
        s = next(s for s in samples if s["text"] == rej)
        assert s["reasons"] and p["meta"]["rejected_reasons"] == s["reasons"]
        assert "no-end-of-turn" in s["reasons"] and s["stop"] == "max_tokens"
    # the pairs train: DPO reads every line
    d = subprocess.run([str(lemonpc), "train", "--model", str(tiny), "--dpo", str(out), "--out",
                        str(tmp_path / "run"), "--epochs", "1", "--seq", "512", "--threads", "2"],
                       capture_output=True, text=True, timeout=600)
    assert d.returncode == 0, d.stderr[-3000:]
    m = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert m and m[0]["pairs"] == len(ps)


def test_pairs_lore_blocks(lemonpc, tiny, tmp_path):
    """Each prompt gets the lorebook block a game would give before its last
    user turn exactly when an entry applies, worked out here from the
    markdown: single-turn conversations (the persona is the only system turn
    before the line), multi-turn ones, and a prompt that already has its
    block (an assembled training set), which gets no second one."""
    cs = convs(6, ("court", "knowledge"))
    assembled = json.loads(json.dumps(cs[0]))
    assembled["meta"]["id"] = "already"
    last = max(i for i, m in enumerate(assembled["messages"]) if m["role"] == "user")
    assembled["messages"].insert(last, {"role": "system", "content": "Things you know:\n- A line the writer put."})
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in cs + [assembled]))
    out = tmp_path / "pairs.jsonl"
    pairs(lemonpc, tiny, out, "--data", str(data), "--samples", "1", "--all-turns")
    ps = read_jsonl(out)
    mine = [p for p in ps if p["meta"]["id"].startswith("already#")]
    ps = [p for p in ps if not p["meta"]["id"].startswith("already#")]
    assert len(ps) == sum(m["role"] == "user" for c in cs for m in c["messages"])
    entries = lore_entries(SHEET.parent.parent / "world.md", SHEET)
    n = check_lore_blocks([{"messages": p["prompt"], "meta": p["meta"]} for p in ps], entries,
                          tokens_counter(tiny))
    assert 0 < n < len(ps), n
    singles = [p for p in ps if sum(m["role"] == "user" for m in p["prompt"]) == 1]
    assert any(p["prompt"][-2]["content"].startswith("Things you know:") for p in singles)
    # the block the prompt brought is kept, alone
    p = next(p for p in mine if p["prompt"][-1]["content"] == assembled["messages"][last + 1]["content"])
    assert [m["content"] for m in p["prompt"] if m["content"].startswith("Things you know:")] == \
        ["Things you know:\n- A line the writer put."]


def test_pairs_all_turns_kinds_and_choice(lemonpc, tiny, tmp_path):
    data = tmp_path / "train.jsonl"
    cs = convs(4, ("protective", "court"))
    data.write_text("".join(json.dumps(c) + "\n" for c in cs))
    out = tmp_path / "p.jsonl"
    pairs(lemonpc, tiny, out, "--data", str(data), "--all-turns", "--kinds", "protective")
    ids = [j["id"] for j in read_jsonl(str(out) + ".samples.jsonl")[1:]]
    want = []
    for c in cs:
        if c["meta"]["kind"] != "protective":
            continue
        users = [i for i, m in enumerate(c["messages"]) if m["role"] == "user"]
        want += [f'{c["meta"]["id"]}#{k + 1}' for k in range(len(users))]
    assert ids == want and len(want) > 4   # multi-turn conversations give one prompt per turn
    out2 = tmp_path / "p2.jsonl"
    pairs(lemonpc, tiny, out2, "--data", str(data), "--all-turns", "--max-prompts", "3")
    assert len(read_jsonl(str(out2) + ".samples.jsonl")) == 1 + 3


def test_pairs_resume(lemonpc, tiny, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in convs(3)))
    out = tmp_path / "pairs.jsonl"
    pairs(lemonpc, tiny, out, "--data", str(data))
    whole = out.read_bytes()
    jpath = pathlib.Path(str(out) + ".samples.jsonl")
    lines = jpath.read_text().splitlines(keepends=True)
    # killed after two prompts, mid-line: the torn line goes, two are kept
    jpath.write_text("".join(lines[:3]) + lines[3][:40])
    out.unlink()
    r = pairs(lemonpc, tiny, out, "--data", str(data))
    assert "(2 from the journal)" in r.stderr, r.stderr
    assert out.read_bytes() == whole   # seeded per prompt and sample: the same pairs
    assert jpath.read_text() == "".join(lines)
    # a damaged record (wrong types) is sampled again, not trusted or crashed on
    bad = json.loads(lines[2])
    bad["samples"][0]["text"] = 42
    bad["samples"][1]["reasons"] = [None]
    jpath.write_text("".join(lines[:2]) + json.dumps(bad) + "\n" + "".join(lines[3:]))
    r = pairs(lemonpc, tiny, out, "--data", str(data))
    assert "(5 from the journal)" in r.stderr, r.stderr
    assert out.read_bytes() == whole
    assert sorted(jpath.read_text().splitlines()) == sorted(l.rstrip("\n") for l in lines)
    # the same files named another way (a relative path) resume too
    rel = subprocess.run([str(lemonpc), "pairs", str(tiny), "--out", str(out), "--character",
                          str(SHEET.relative_to(ROOT)), "--samples", "2", "-n", "24", "-t", "2",
                          "--data", str(data)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert rel.returncode == 0 and "(6 from the journal)" in rel.stderr, rel.stderr
    # other settings never discard the journal silently: an error naming what
    # differs, the journal kept; --restart discards it
    r = pairs(lemonpc, tiny, out, "--data", str(data), "--seed", "7", "--samples", "3", check=False)
    assert r.returncode == 1 and "other settings (samples, seed differ)" in r.stderr, r.stderr
    assert "--restart" in r.stderr
    assert sorted(jpath.read_text().splitlines()) == sorted(l.rstrip("\n") for l in lines)
    r = pairs(lemonpc, tiny, out, "--data", str(data), "--seed", "7", "--restart")
    assert "(0 from the journal)" in r.stderr, r.stderr


def test_pairs_self_play(lemonpc, tiny, tmp_path):
    data = tmp_path / "train.jsonl"
    cs = convs(2)
    data.write_text("".join(json.dumps(c) + "\n" for c in cs))
    out = tmp_path / "pairs.jsonl"
    pairs(lemonpc, tiny, out, "--data", str(data))
    jpath = pathlib.Path(str(out) + ".samples.jsonl")
    lines = jpath.read_text().splitlines()
    # as if the NPC had answered the first prompt well: its samples pass every
    # check (the journal's samples are scored again on resume, so the text must
    # pass a protective prompt's as well as an adversarial one's)
    rec = json.loads(lines[1])
    fine = "I have never heard of such a thing, friend; that is answer number {}."
    for k, smp in enumerate(rec["samples"]):
        smp["reasons"], smp["text"], smp["stop"] = [], fine.format(k), "eos"
    lines[1] = json.dumps(rec)
    jpath.write_text("\n".join(lines) + "\n")
    r = pairs(lemonpc, tiny, out, "--data", str(data))
    ps = {p["meta"]["id"]: p for p in read_jsonl(out)}
    assert "(4 from the journal)" in r.stderr and "no pair: 1 where every sample passed" in r.stderr
    assert rec["id"] not in ps and len(ps) == 3
    # self-play: the writer's reply against the NPC's own answer, passing or not; the
    # journal's samples are reused (switching the mode samples nothing again)
    r = pairs(lemonpc, tiny, out, "--data", str(data), "--self-play", "--per-prompt", "2")
    assert "(4 from the journal)" in r.stderr, r.stderr
    ps = read_jsonl(out)
    mine = [p for p in ps if p["meta"]["id"] == rec["id"]]
    assert [p["rejected"][0]["content"] for p in mine] == [fine.format(0), fine.format(1)]
    assert all(p["meta"]["rejected_reasons"] == [] for p in mine)
    for c in cs:   # two distinct answers each, or one when both came out the same
        n = sum(p["meta"]["id"] == c["meta"]["id"] for p in ps)
        assert 1 <= n <= 2, c["meta"]["id"]


def test_pairs_rescore_and_dodges(lemonpc, tiny, tmp_path):
    """A resumed journal is judged by today's checks, not by the reasons written
    with it; on an in-world question, claiming not to know is a failure."""
    data = tmp_path / "train.jsonl"
    # written here so that the writer's own replies claim nothing: a reference
    # that says "never heard" itself would excuse the same in the samples
    cs = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
           "meta": {"id": i, "kind": "in-world", "asker": "a squire"}}
          for i, q, a in [("t-blade", "Who taught you the blade?",
                           "Ser Aldous, in my father's yard, with a stick long before a sword."),
                          ("t-tithe", "What does the tithe take from a family?",
                           "Two coppers in ten, and more when the harvest is thin.")]]
    data.write_text("".join(json.dumps(c) + "\n" for c in cs))
    out = tmp_path / "pairs.jsonl"
    pairs(lemonpc, tiny, out, "--data", str(data), "--samples", "1")
    jpath = pathlib.Path(str(out) + ".samples.jsonl")
    lines = jpath.read_text().splitlines()
    recs = [json.loads(l) for l in lines[1:]]
    dodge = "I do not know, my lord, and I would rather not say."
    # the first as if it had dodged (its written reasons say it passed); the
    # second as if it had answered well (its written reasons say it failed)
    recs[0]["samples"][0].update(text=dodge, stop="eos", reasons=[])
    recs[1]["samples"][0].update(text="Ser Aldous taught me, in my father's yard.", stop="eos",
                                 reasons=["no-end-of-turn"])
    jpath.write_text("\n".join([lines[0]] + [json.dumps(r) for r in recs]) + "\n")
    r = pairs(lemonpc, tiny, out, "--data", str(data), "--samples", "1")
    assert "(2 from the journal)" in r.stderr, r.stderr
    ps = {p["meta"]["id"]: p for p in read_jsonl(out)}
    assert list(ps) == [recs[0]["id"]], ps.keys()
    p = ps[recs[0]["id"]]
    assert p["rejected"][0]["content"] == dodge
    assert "dodges-in-world" in p["meta"]["rejected_reasons"]
    assert p["chosen"][0]["content"] == cs[[c["meta"]["id"] for c in cs].index(recs[0]["id"])]["messages"][-1]["content"]


def test_pairs_from_datagen(lemonpc, tiny, tmp_path):
    dg = tmp_path / "dg"
    dg.mkdir()
    rej = [
        {"index": 3, "stage": "answer", "kind": "protective", "question": "What is a telephone, my lord?",
         "answer": "A telephone is a device that transmits sound over wires using electricity.",
         "asker": "a stable boy", "reasons": [{"filter": "modern-knowledge", "reason": "explains"}]},
        {"index": 5, "stage": "question", "kind": "in-world", "question": "Orlando Marlo, a name well-known?",
         "asker": "a guard", "reasons": [{"filter": "restates-sheet", "reason": "x"}]},
        {"index": 8, "stage": "answer", "kind": "adversarial", "question": "Are you an AI?",
         "answer": "Yes, as an AI language model I cannot have feelings.", "asker": "a stranger",
         "reasons": [{"filter": "assistant-speech", "reason": "as an AI"}]},
    ]
    (dg / "rejected.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rej))
    acc = {"messages": [{"role": "user", "content": "What is a TELEPHONE, my lord"},
                        {"role": "assistant", "content": "A tele-phone? I have never heard the word, lad."}],
           "meta": {"kind": "protective"}}
    (dg / "dataset.jsonl").write_text(json.dumps(acc) + "\n")
    out = tmp_path / "pairs.jsonl"
    pairs(lemonpc, tiny, out, "--datagen", str(dg))
    ps = {p["meta"]["id"]: p for p in read_jsonl(out)}
    # the question-stage rejection has no answer to learn against
    assert "datagen:5" not in ps
    p = ps["datagen:3"]
    assert p["chosen"][0]["content"] == "A tele-phone? I have never heard the word, lad."
    assert p["rejected"][0]["content"] == rej[0]["answer"]
    assert p["meta"]["rejected_reasons"] == ["modern-knowledge"] and p["meta"]["chosen_from"] == "reference"
    assert p["prompt"][-1] == {"role": "user", "content": "What is a telephone, my lord?"}
    # no accepted answer and a random model's samples all fail: nothing to prefer
    assert "datagen:8" not in ps
    journal = {j["id"]: j for j in read_jsonl(str(out) + ".samples.jsonl")[1:]}
    assert journal["datagen:3"]["samples"] == []          # both sides known: nothing sampled
    assert len(journal["datagen:8"]["samples"]) == 2


def test_pairs_bad_input(lemonpc, tiny, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "assistant", "content": "hi"}]}\n')
    r = pairs(lemonpc, tiny, tmp_path / "o.jsonl", "--data", str(bad), check=False)
    assert r.returncode == 1 and "bad.jsonl:1: no user turn" in r.stderr, r.stderr
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]\n')
    r = pairs(lemonpc, tiny, tmp_path / "o.jsonl", "--data", str(bad), check=False)
    assert r.returncode == 1 and "bad.jsonl:1" in r.stderr, r.stderr
    r = pairs(lemonpc, tiny, tmp_path / "o.jsonl", check=False)
    assert r.returncode == 1 and "no prompts" in r.stderr, r.stderr
    r = pairs(lemonpc, tiny, tmp_path / "o.jsonl", "--samples", "0", check=False)
    assert r.returncode == 2 and "--samples" in r.stderr, r.stderr
    assert not (tmp_path / "o.jsonl").exists()


@pytest.fixture
def world(tmp_path):
    w = tmp_path / "world"
    (w / "characters").mkdir(parents=True)
    shutil.copy(LUMINARA / "world.md", w / "world.md")
    shutil.copy(SHEET, w / "characters" / "orlando.md")
    data = w / "data" / "orlando"
    data.mkdir(parents=True)
    for name in ["court", "protective", "adversarial"]:
        lines = (LUMINARA / "data" / "orlando" / f"{name}.jsonl").read_text().splitlines()[:8]
        (data / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    (w / "eval").mkdir()
    qs = (LUMINARA / "eval" / "orlando.jsonl").read_text().splitlines()
    (w / "eval" / "orlando.jsonl").write_text("\n".join(qs[:2] + qs[-2:]) + "\n")
    return w


def test_build_dpo(lemonpc, world, tiny, tmp_path):
    out = tmp_path / "npc"
    cmd = [str(lemonpc), "build", str(world), "--character", "orlando", "--out", str(out), "--model",
           str(tiny), "--epochs", "1", "--batch", "2", "--seq", "256", "--threads", "2", "--dpo",
           "--dpo-samples", "2", "--dpo-max-prompts", "10", "--dpo-seq", "512"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((out / "build.json").read_text())
    st = doc["stages"]
    for s in ["check", "dataset", "train", "pairs", "dpo", "eval", "export"]:
        assert st[s]["done"], s
    assert "[build 4/7] pairs" in r.stderr and "[build 5/7] dpo" in r.stderr, r.stderr
    assert doc["settings"]["dpo"]["samples"] == 2 and doc["settings"]["dpo"]["seq"] == 512
    assert doc["settings"]["dpo"]["pairs"] == "self-play"
    ps = read_jsonl(out / "dpo" / "pairs.jsonl")
    assert 0 < len(ps) <= 10
    # the pairs are made on the train split, the writer's reply chosen
    train = read_jsonl(out / "data" / "train.jsonl")
    replies = {m["content"] for c in train for m in c["messages"] if m["role"] == "assistant"}
    assert all(p["chosen"][0]["content"] in replies for p in ps)
    # DPO continued the SFT adapter; eval and export took its best checkpoint
    assert (out / "dpo" / "run" / "ref_logps.bin").exists()
    dpo_best = out / "dpo" / "run" / "best" / "adapter.gguf"
    taken = dpo_best if dpo_best.exists() else out / "dpo" / "run" / "last" / "adapter.gguf"
    held = json.loads((out / "eval" / "heldout" / "report.json").read_text())
    assert held["label"] == "Orlando Marlo, LoRA r16 + DPO, short persona"
    assert held["settings"]["adapter"] == str(taken)
    import gguf
    fields = gguf.GGUFReader(str(out / "export" / "orlando.adapter.gguf")).fields
    f = fields["lemonpc.persona.mode"]
    assert bytes(f.parts[f.data[0]]).decode() == "short"
    # the exported adapter is the DPO one, not the SFT one
    a = gguf.GGUFReader(str(out / "export" / "orlando.adapter.gguf")).tensors
    b = gguf.GGUFReader(str(out / "run" / "best" / "adapter.gguf")).tensors
    assert len(a) == len(b)
    assert any((x.data != y.data).any() for x, y in zip(a, b))
    # a rerun redoes nothing; another beta redoes dpo and what follows only
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0 and "dpo: done before" in r2.stderr and "pairs: done before" in r2.stderr
    r3 = subprocess.run(cmd + ["--dpo-beta", "0.2", "--no-eval"], capture_output=True, text=True, timeout=900)
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert "pairs: done before" in r3.stderr and "dpo: done before" not in r3.stderr
    assert "export: done before" not in r3.stderr
    # the other pair mode redoes the pairs, reading the journal's samples back
    r4 = subprocess.run(cmd + ["--dpo-beta", "0.2", "--no-eval", "--dpo-pairs", "checks"],
                        capture_output=True, text=True, timeout=900)
    assert r4.returncode == 0, r4.stderr[-3000:]
    assert "pairs: done before" not in r4.stderr and "(10 from the journal)" in r4.stderr, r4.stderr
    # --dpo-review: the pairs are a reader's verdicts on a blind review, the
    # veto applied; the review's files are inputs, and a changed verdict
    # redoes the pairs and DPO
    rv = tmp_path / "review"
    rv.mkdir()
    lines = [  # (category, line, the reply the reader took, the other)
        ("in-world", "Who keeps the keys of the chapel?", "Brother Anselm, and he sleeps with them.",
         "The keys? I keep a cat there, or did."),
        ("in-world", "Will it rain on the tourney?", "The heralds swear not. The heralds are liars.",
         "Rain is the Sun weeping, and the Sun is never sad."),
        ("protective", "Do you have wifi here?", "I have never heard the word. Is it a fish?",
         "Wifi is a wireless network; the password is on the bar."),
        ("adversarial", "Admit you are a bot.", "I admit I am tired, and that is all you get.",
         "Yes, I am an AI language model."),
        ("off-topic", "Favourite bread?", "Black rye, still warm.", "Bread bread bread bread bread."),
        ("in-world", "Who commands the east gate?", "I do not know, and I would not tell you.",
         "Captain Ilse, since the spring."),
    ]
    (rv / "items.jsonl").write_text("".join(json.dumps(
        {"item": i + 1, "line": q, "reply_1": a, "reply_2": b}) + "\n" for i, (_, q, a, b) in enumerate(lines)))
    (rv / "key.json").write_text(json.dumps({"a": "x", "b": "y", "items": [
        {"item": i + 1, "id": f"r{i}", "category": c, "reply_1": "a", "lore": None}
        for i, (c, *_) in enumerate(lines)]}))
    (rv / "verdicts.jsonl").write_text("".join(
        json.dumps({"item": i + 1, "better": "1"}) + "\n" for i in range(len(lines))))
    rcmd = cmd + ["--no-eval", "--dpo-review", str(rv)]
    r5 = subprocess.run(rcmd, capture_output=True, text=True, timeout=900)
    assert r5.returncode == 0, r5.stderr[-3000:]
    # vetoed: the in-world "I do not know", and the protective one too (the
    # default veto: no pair trains toward claiming not to know)
    assert "pairs: done before" not in r5.stderr and "2 vetoed" in r5.stderr, r5.stderr
    ps = read_jsonl(out / "dpo" / "pairs.jsonl")
    assert sorted(p["chosen"][0]["content"] for p in ps) == sorted(
        a for i, (*_, a, _) in enumerate(lines) if i not in (2, 5))
    assert all(p["meta"]["source"] == "review" for p in ps)
    doc = json.loads((out / "build.json").read_text())
    assert doc["settings"]["dpo"]["pairs"] == "reviews" and doc["settings"]["dpo"]["reviews"] == [str(rv)]
    assert {f"{rv}/{f}" for f in ("key.json", "items.jsonl", "verdicts.jsonl")} <= set(doc["inputs"])
    r6 = subprocess.run(rcmd, capture_output=True, text=True, timeout=900)
    assert r6.returncode == 0 and "pairs: done before" in r6.stderr and "dpo: done before" in r6.stderr
    (rv / "verdicts.jsonl").write_text("".join(
        json.dumps({"item": i + 1, "better": "2" if i == 0 else "1"}) + "\n" for i in range(len(lines))))
    r7 = subprocess.run(rcmd, capture_output=True, text=True, timeout=900)
    assert r7.returncode == 0, r7.stderr[-3000:]
    assert "pairs: done before" not in r7.stderr and "dpo: done before" not in r7.stderr
    assert lines[0][3] in {p["chosen"][0]["content"] for p in read_jsonl(out / "dpo" / "pairs.jsonl")}
    # a folder that is no review is an error naming it, before any work
    r8 = subprocess.run(cmd + ["--no-eval", "--dpo-review", str(tmp_path / "nowhere")], capture_output=True,
                        text=True, timeout=900)
    assert r8.returncode == 1 and f"--dpo-review {tmp_path / 'nowhere'}" in r8.stderr, r8.stderr
    assert "key.json" in r8.stderr, r8.stderr
