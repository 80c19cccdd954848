"""`lemonpc build` and `lemonpc eval` end to end on a tiny random model (the
real tokenizer, 2 layers): every stage's output, a rerun that redoes
nothing, a SIGKILL in each stage followed by a rerun that keeps the stages
finished before the kill, and eval's answers, report and comparison."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

from lore_oracle import check_block, check_lore_blocks, lore_entries, mentions, tokens_counter
from make_random_gguf import write_random_llama

ROOT = pathlib.Path(__file__).resolve().parents[2]
LUMINARA = ROOT / "examples" / "luminara"
STAGES = ["check", "dataset", "train", "eval", "export"]


@pytest.fixture(scope="module")
def tiny(model_path, tmp_models):
    p = tmp_models / "tiny-build.gguf"
    if not p.exists():
        write_random_llama(p, model_path, n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=128,
                           theta=100000.0, seed=3)
    return p


@pytest.fixture
def world(tmp_path):
    """A sheet folder with Orlando, 48 of his conversations (a mix of kinds) and 6 questions."""
    w = tmp_path / "world"
    (w / "characters").mkdir(parents=True)
    shutil.copy(LUMINARA / "world.md", w / "world.md")
    shutil.copy(LUMINARA / "characters" / "orlando.md", w / "characters" / "orlando.md")
    data = w / "data" / "orlando"
    data.mkdir(parents=True)
    for name in ["court", "smalltalk", "protective", "adversarial"]:
        lines = (LUMINARA / "data" / "orlando" / f"{name}.jsonl").read_text().splitlines()[:12]
        (data / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    (w / "eval").mkdir()
    qs = (LUMINARA / "eval" / "orlando.jsonl").read_text().splitlines()
    (w / "eval" / "orlando.jsonl").write_text("\n".join(qs[:3] + qs[-3:]) + "\n")
    return w


def build_cmd(lemonpc, world, out, tiny, *extra):
    return [str(lemonpc), "build", str(world), "--character", "orlando", "--out", str(out),
            "--model", str(tiny), "--epochs", "2", "--batch", "2", "--seq", "256", "--threads", "2",
            *extra]


def run_build(lemonpc, world, out, tiny, *extra):
    r = subprocess.run(build_cmd(lemonpc, world, out, tiny, *extra), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def stages(out):
    return json.loads((out / "build.json").read_text())["stages"]


def test_build_all_stages(lemonpc, world, tiny, tmp_path, model_path):
    out = tmp_path / "npc"
    r = run_build(lemonpc, world, out, tiny)
    st = stages(out)
    for s in STAGES:
        assert st[s]["done"], s
        assert st[s]["wall_s"] >= 0 and st[s]["peak_rss_mb"] > 0, (s, st[s])
    doc = json.loads((out / "build.json").read_text())
    assert doc["settings"]["mode"] == "lora" and doc["settings"]["persona"] == "short"
    assert any(k.endswith("orlando.md") for k in doc["inputs"])
    assert sum(k.endswith(".jsonl") for k in doc["inputs"]) == 5   # 4 data files + the questions
    # the train stage ran with the build's own settings (it once got --dpo-seq as --seq)
    cfg = json.loads((out / "run" / "last" / "state.json").read_text())["config"]
    assert (cfg["seq"], cfg["batch"], cfg["epochs"], cfg["lora-rank"]) == (256, 2, 2, 16), cfg
    stats = json.loads((out / "data" / "stats.json").read_text())
    assert stats["read"] == 48 and stats["train"] + stats["val"] + stats["test"] + stats["rejected"] == 48
    # the persona policy's system turn, with the scene, opens every training line
    first = json.loads((out / "data" / "train.jsonl").read_text().splitlines()[0])
    sys_turn = first["messages"][0]
    assert sys_turn["role"] == "system"
    assert sys_turn["content"].startswith("You are Orlando Marlo, of the Holy Kingdom of Luminara.")
    assert "You are talking with: " + first["meta"]["asker"] in sys_turn["content"]
    # the lorebook block lemonpc_say gives a game's NPC, before the last user turn
    entries = lore_entries(world / "world.md", world / "characters" / "orlando.md")
    assert entries and doc["settings"]["lore"] is True
    convs = [json.loads(l) for f in ["train", "val", "test"]
             for l in (out / "data" / f"{f}.jsonl").read_text().splitlines()]
    assert check_lore_blocks(convs, entries, tokens_counter(model_path)) == stats["with_lore"] > 0
    # export: the adapter, a merged Q8_0 model that loads, a PEFT folder
    exp = out / "export"
    assert (exp / "orlando.adapter.gguf").stat().st_size > 0
    assert (exp / "peft" / "adapter_config.json").exists()
    g = subprocess.run([str(lemonpc), "generate", str(exp / "orlando.Q8_0.gguf"), "-p", "Hello", "-n", "4",
                        "--temp", "0"], capture_output=True, text=True)
    assert g.returncode == 0, g.stderr
    # the exported adapter carries the persona policy it was trained with
    import gguf
    fields = gguf.GGUFReader(str(exp / "orlando.adapter.gguf")).fields
    def kv(name):
        f = fields[name]
        return bytes(f.parts[f.data[0]]).decode()
    assert kv("lemonpc.persona.mode") == "short" and kv("lemonpc.character") == "Orlando Marlo"
    assert len(kv("lemonpc.persona.hash")) == 16
    # `lemonpc stamp` gives weights trained by hand the same stamp: the best
    # checkpoint stamped by it is the exported adapter, byte for byte
    stamped = tmp_path / "stamped.gguf"
    r = subprocess.run([str(lemonpc), "stamp", str(out / "run" / "best" / "adapter.gguf"), "--character",
                        str(world / "characters" / "orlando.md"), "--out", str(stamped)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert stamped.read_bytes() == (exp / "orlando.adapter.gguf").read_bytes()
    r = subprocess.run([str(lemonpc), "stamp", str(stamped), "--character", str(world / "characters" / "orlando.md"),
                        "--persona", "odd"], capture_output=True, text=True)
    assert r.returncode == 2 and "--persona wants" in r.stderr, r.stderr
    sheet = world / "characters" / "orlando.md"
    gen = [str(lemonpc), "generate", str(tiny), "--adapter", str(exp / "orlando.adapter.gguf"),
           "--character", str(sheet), "-p", "Hello", "-n", "4", "--temp", "0"]
    g = subprocess.run(gen, capture_output=True, text=True)
    assert g.returncode == 0 and "warning" not in g.stderr, g.stderr
    g = subprocess.run(gen + ["--persona", "full"], capture_output=True, text=True)
    assert g.returncode == 0 and "trained with the short persona, not full" in g.stderr, g.stderr
    edited = sheet.read_text().replace("Lawful Good", "Neutral Good")
    (world / "characters" / "orlando.md").write_text(edited)
    g = subprocess.run(gen, capture_output=True, text=True)
    assert g.returncode == 0 and "sheet has changed since" in g.stderr, g.stderr
    (world / "characters" / "orlando.md").write_text(edited.replace("Neutral Good", "Lawful Good"))
    # eval ran on the held-out questions and on the test split (with perplexity)
    held = json.loads((out / "eval" / "heldout" / "report.json").read_text())
    assert held["metrics"]["n"] == 6 and held["label"] == "Orlando Marlo, LoRA r16, short persona"
    assert held["settings"]["persona"] == "short" and held["n_refs"] == stats["test"]
    test = json.loads((out / "eval" / "test" / "report.json").read_text())
    assert test["metrics"]["n"] == stats["test"]
    assert test["n_refs"] == stats["test"] and test["metrics"]["ppl"] > 1
    # a rerun redoes nothing
    r2 = run_build(lemonpc, world, out, tiny)
    assert stages(out) == st
    for s in STAGES[1:]:
        assert f"{s}: done before" in r2.stderr, r2.stderr
    # --adapter-type f16 redoes the export alone: the adapter's factors in F16
    # (half the file), still stamped, and it runs
    size32 = (exp / "orlando.adapter.gguf").stat().st_size
    r4 = run_build(lemonpc, world, out, tiny, "--adapter-type", "f16")
    assert "train: done before" in r4.stderr and "export: done before" not in r4.stderr, r4.stderr
    rd = gguf.GGUFReader(str(exp / "orlando.adapter.gguf"))
    assert {t.tensor_type.name for t in rd.tensors} == {"F16"}
    assert (exp / "orlando.adapter.gguf").stat().st_size < 0.6 * size32
    fields = rd.fields
    assert kv("lemonpc.persona.mode") == "short"
    assert json.loads((out / "build.json").read_text())["settings"]["adapter_type"] == "f16"
    g = subprocess.run(gen, capture_output=True, text=True)
    assert g.returncode == 0 and "warning" not in g.stderr, g.stderr
    r5 = run_build(lemonpc, world, out, tiny, "--adapter-type", "f16")
    assert "export: done before" in r5.stderr, r5.stderr
    st = stages(out)
    # changing the data redoes the dataset and what follows, not the check
    with open(world / "data" / "orlando" / "court.jsonl", "a") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": "Is the bread fresh today, Sir Orlando?"},
                                         {"role": "assistant", "content": "Fresh this morning, and still warm."}],
                            "meta": {"id": "orl-new-1", "kind": "off-topic", "asker": "a baker",
                                     "location": "the market"}}) + "\n")
    r3 = run_build(lemonpc, world, out, tiny, "--no-eval")
    assert "[build 2/4] dataset\n" in r3.stderr and "dataset: done before" not in r3.stderr
    assert stages(out)["check"] == st["check"]
    assert stages(out)["dataset"] != st["dataset"]


@pytest.mark.parametrize("victim", ["dataset", "train", "eval", "export"])
def test_build_resumes_after_sigkill(lemonpc, world, tiny, tmp_path, victim):
    out = tmp_path / "npc"
    extra = ["--epochs", "6"] if victim == "train" else []   # long enough to be killed mid-run
    cmd = build_cmd(lemonpc, world, out, tiny, *extra)
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    banner = f"] {victim}\n"
    seen, deadline = "", time.time() + 600
    while banner not in seen and time.time() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        seen += line
    assert banner in seen, seen
    if victim == "train":   # let it write a checkpoint first
        ckpt = out / "run" / "last" / "state.json"
        while not ckpt.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert ckpt.exists()
    before = stages(out)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    p.stderr.close()
    # the build's children die with it
    time.sleep(0.2)
    ps = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True)
    assert ps.stdout.strip() == "", ps.stdout
    r = run_build(lemonpc, world, out, tiny, *extra)
    after = stages(out)
    done_before = [s for s in STAGES if before.get(s, {}).get("done")]
    assert STAGES.index(victim) >= len(done_before)
    for s in done_before:
        assert after[s] == before[s], s          # not redone
        assert f"{s}: done before" in r.stderr or s == "check"
    for s in STAGES:
        assert after[s]["done"], s
    if victim == "train":
        assert "resuming the killed run" in r.stderr, r.stderr


def test_eval_end_to_end(lemonpc, tiny, tmp_path, model_path):
    qs = tmp_path / "q.jsonl"
    rows = [json.loads(l) for l in (LUMINARA / "eval" / "orlando.jsonl").read_text().splitlines()]
    pick = [q for q in rows if "history" in q][:2] + [q for q in rows if "history" not in q][:3]
    # the lorebook's keys in the question and, for the second, only in its history
    pick += [{"id": "lore-1", "question": "Is it true the Hollow Quarter floods?", "category": "in-world"},
             {"id": "lore-2", "question": "Why?", "history": [
                 {"role": "user", "content": "They say a knight swears an oath at dawn."},
                 {"role": "assistant", "content": "Two of them."}]}]
    qs.write_text("".join(json.dumps(q) + "\n" for q in pick))
    sheet = LUMINARA / "characters" / "orlando.md"
    out = tmp_path / "ev"
    cmd = [str(lemonpc), "eval", str(tiny), str(qs), "--out", str(out), "--character", str(sheet),
           "--persona", "full", "-n", "12", "-t", "2", "--label", "tiny"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ans = [json.loads(l) for l in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["id"] for a in ans] == [q["id"] for q in pick]
    for a in ans:
        assert a["stop"] in ("eos", "max_tokens", "context", "stop_string")
        assert a["tokens"] <= 12 and isinstance(a["answer"], str) and isinstance(a["flags"], list)
    # the lorebook block a game's lemonpc_say would give, recorded with the answer
    entries = lore_entries(LUMINARA / "world.md", sheet)
    ntok = tokens_counter(model_path)
    for q, a in zip(pick, ans):
        scan = [h["content"] for h in q.get("history", [])][-4:] + [q["question"]]
        want = [t for keys, sec, const, t in entries if const or (
            any(mentions(k, scan) for k in keys) and (not sec or any(mentions(k, scan) for k in sec)))]
        assert ("lore" in a) == bool(want), (q, a.get("lore"))
        if want:
            check_block(a["lore"], want, ntok)
    assert "Hollow Quarter" in ans[5]["lore"] and "oath" in ans[6]["lore"]
    rep = json.loads((out / "report.json").read_text())
    m = rep["metrics"]
    assert rep["label"] == "tiny" and m["n"] == 7
    assert m["eos_rate"] == sum(a["stop"] == "eos" for a in ans) / 7
    for k, v in m.items():
        if k.endswith("_rate"):
            assert 0 <= v <= 1, k
    assert "# Evaluation: tiny" in (out / "report.md").read_text()
    # greedy is deterministic: a second eval into another folder gives the same answers
    out2 = tmp_path / "ev2"
    cmd2 = cmd[:]
    cmd2[cmd2.index(str(out))] = str(out2)
    cmd2[cmd2.index("tiny", cmd2.index("--label"))] = "tiny again"
    assert subprocess.run(cmd2, capture_output=True).returncode == 0
    assert [json.loads(l)["answer"] for l in (out2 / "answers.jsonl").read_text().splitlines()] == \
        [a["answer"] for a in ans]
    # --guard: the first draw is the greedy answer; an answer cut at 12 tokens
    # fails "ended" and is drawn again; the random model's draws rarely end,
    # and when none passes the one failing the fewest checks is given
    outg = tmp_path / "evg"
    cmdg = cmd[:]
    cmdg[cmdg.index(str(out))] = str(outg)
    r = subprocess.run(cmdg + ["--guard", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    gans = [json.loads(l) for l in (outg / "answers.jsonl").read_text().splitlines()]
    assert [g["id"] for g in gans] == [a["id"] for a in ans]
    for g, a in zip(gans, ans):
        assert 1 <= g["attempts"] <= 3, g
        if "guard_failed" in g:
            assert g["attempts"] == 3, g
        if g["attempts"] == 1:
            assert g["answer"] == a["answer"], (g, a)
        if a["stop"] != "eos":
            assert g["attempts"] > 1, (g, a)
    assert any("ended" in g.get("guard_failed", "") for g in gans), gans
    grep = json.loads((outg / "report.json").read_text())
    assert grep["guard"]["retries"] == 2
    assert grep["guard"]["retried"] == sum(g["attempts"] > 1 for g in gans)
    assert grep["settings"]["guard"] == {"retries": 2, "checks": "voice, modern, ended, loop"}
    gmd = (outg / "report.md").read_text()
    assert "Reply guard: up to 2 retries" in gmd
    # each answer drawn again says so where it is read
    assert gmd.count("(guard: drawn ") == sum(g["attempts"] > 1 for g in gans) > 0
    assert "(guard: drawn 3 times; still fails " in gmd
    r = subprocess.run(cmdg + ["--guard", "2", "--guard-checks", "voice,manners"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "manners" in r.stderr, r.stderr
    # --seed: the guard's retries draw from it; the same seed gives the same
    # answers, another seed other retries (recorded, so a resume never mixes them)
    def guarded(seed, name, extra=(), retries="2"):
        o = tmp_path / name
        c = cmd[:]
        c[c.index(str(out))] = str(o)
        r = subprocess.run(c + ["--guard", retries, "--seed", str(seed), *extra], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        return o, [json.loads(l)["answer"] for l in (o / "answers.jsonl").read_text().splitlines()]
    o1, s1 = guarded(1, "evg-seed1")
    assert s1 == [g["answer"] for g in gans]   # seed 1 is the default
    o7, s7 = guarded(7, "evg-seed7")
    assert guarded(7, "evg-seed7b")[1] == s7
    retried = [i for i, g in enumerate(gans) if g["attempts"] > 1]
    assert any(s7[i] != s1[i] for i in retried), (s1, s7)
    assert json.loads((o7 / "report.json").read_text())["settings"]["seed"] == 7
    assert "seed" not in json.loads((o1 / "report.json").read_text())["settings"]
    r = subprocess.run(cmdg + ["--seed", "-3"], capture_output=True, text=True)
    assert r.returncode == 2 and "--seed" in r.stderr, r.stderr
    # --best-of: every answer is chosen among 3 draws, the first the greedy
    # one; of those failing the fewest checks, the most relevant (per token,
    # log p(answer | line) - log p(answer | empty line)); every draw recorded
    ob, _ = guarded(1, "evb", ["--best-of", "3"], retries="0")
    bans = [json.loads(l) for l in (ob / "answers.jsonl").read_text().splitlines()]
    ranked = 0
    for b, a in zip(bans, ans):
        ds = b["draws"]
        assert b["attempts"] == len(ds) == 3, b
        assert ds[0]["answer"] == a["answer"], (b, a)
        chosen = [d for d in ds if d.get("chosen")]
        assert len(chosen) == 1 and chosen[0]["answer"] == b["answer"], b
        nfail = lambda d: len([x for x in d["failed"].split(", ") if x])
        best = [d for d in ds if nfail(d) == min(nfail(x) for x in ds)]
        assert chosen[0] in best, b
        if len(best) > 1:
            ranked += 1
            assert all(d["relevance"] != 0 for d in best), b
            assert chosen[0]["relevance"] == max(d["relevance"] for d in best), b
    assert ranked > 0, bans
    assert json.loads((ob / "report.json").read_text())["settings"]["guard"] == {
        "retries": 0, "checks": "voice, modern, ended, loop", "best_of": 3}
    r = subprocess.run(cmd + ["--best-of", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "--best-of" in r.stderr, r.stderr
    # --blind / --unblind: the greedy answers against the best-of ones, read
    # by a "reader" that always takes reply 1; lemonpc pairs --review makes
    # those choices DPO pairs, and a second reader who always takes reply 2
    # cancels every pair the two read alike
    differ = [a["id"] for a, b in zip(ans, bans) if a["answer"] != b["answer"]]
    assert differ
    reviews = []
    for seed, pick in ((3, "1"), (4, "2")):
        rv = tmp_path / f"review{seed}"
        r = subprocess.run([str(lemonpc), "eval", "--blind", str(out), str(ob), "--out", str(rv),
                            "--seed", str(seed)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        items = [json.loads(l) for l in (rv / "items.jsonl").read_text().splitlines()]
        assert len(items) == len(differ)
        (rv / "verdicts.jsonl").write_text("".join(
            json.dumps({"item": it["item"], "better": pick}) + "\n" for it in items))
        r = subprocess.run([str(lemonpc), "eval", "--unblind", str(rv)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        v = json.loads((rv / "verdict.json").read_text())
        key = json.loads((rv / "key.json").read_text())
        firsts = sum(k["reply_1"] == "a" for k in key["items"])
        assert (v["wins_a"], v["wins_b"]) == ((firsts, len(items) - firsts) if pick == "1" else
                                             (len(items) - firsts, firsts))
        assert v["same"] == len(ans) - len(differ)
        reviews.append((rv, items, key))
    def review_pairs(*dirs, veto="none"):
        pf = tmp_path / "rp.jsonl"
        c = [str(lemonpc), "pairs", str(tiny), "--out", str(pf), "--character", str(sheet), "-t", "2",
             "--restart"]
        for d in dirs:
            c += ["--review", str(d)]
        r = subprocess.run(c + ([] if veto == "default" else ["--veto", veto]), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return [json.loads(l) for l in pf.read_text().splitlines()]
    rv, items, key = reviews[0]
    pairs = review_pairs(rv)
    assert len(pairs) == len(items)
    chosen = {k["id"]: it["reply_1"] for it, k in zip(items, key["items"])}
    # the key keeps the lorebook block the replies were made with, and the
    # pairs' prompts carry exactly it (none where the replies had none)
    blocks = {a["id"]: a.get("lore") for a in ans}
    assert all(k["lore"] == blocks[k["id"]] for k in key["items"]), key
    assert any(k["lore"] for k in key["items"]) and any(k["lore"] is None for k in key["items"])
    lore = {k["id"]: k["lore"] for k in key["items"]}
    for p in pairs:
        assert p["meta"]["source"] == "review"
        assert p["chosen"][0]["content"] == chosen[p["meta"]["id"]]
        assert p["prompt"][-1]["role"] == "user" and p["prompt"][0]["role"] == "system"
        shown = [m["content"] for m in p["prompt"][1:-1] if m["role"] == "system"]
        assert shown == ([lore[p["meta"]["id"]]] if lore[p["meta"]["id"]] else []), p
    # the second reader took, on every line, the reply the first did not
    # whenever the two layouts put them on the same side: those cancel
    rv2, items2, key2 = reviews[1]
    side = {k["id"]: k["reply_1"] for k in key["items"]}
    same_side = sum(side[k["id"]] == k["reply_1"] for k in key2["items"])
    assert len(review_pairs(rv, rv2)) == len(items) - same_side
    # a review of another pair of NPCs on the same lines (other replies)
    # adds its own pairs, a line's second pair named ID~2
    rv3 = tmp_path / "review-other"
    rv3.mkdir()
    (rv3 / "items.jsonl").write_text("".join(json.dumps(
        dict(it, reply_1=it["reply_1"] + " Truly.", reply_2=it["reply_2"] + " Truly.")) + "\n" for it in items))
    shutil.copy(rv / "key.json", rv3 / "key.json")
    shutil.copy(rv / "verdicts.jsonl", rv3 / "verdicts.jsonl")
    both = review_pairs(rv, rv3)
    assert sorted(p["meta"]["id"] for p in both) == sorted(list(chosen) + [i + "~2" for i in chosen])
    for p in both:
        qid, _, n = p["meta"]["id"].partition("~")
        assert p["chosen"][0]["content"] == chosen[qid] + (" Truly." if n else "")
    # the veto: a pair whose chosen reply fails a check the rejected one
    # passes is dropped, with its reasons in the journal; a check both fail,
    # or one only the rejected fails, keeps the pair (--veto checks); by
    # default a chosen claim of not knowing against a rejected reply without
    # one goes too, on any line
    hv = tmp_path / "review-hand"
    hv.mkdir()
    lines = [  # (id, category, line, reader's choice, the other reply)
        ("w1", "in-world", "Who leads your order now?", "I do not know, friend.",
         "Sir Aldric leads us, as his father did before him."),
        ("p1", "protective", "Can you show me how to use a smartphone?",
         "I have never heard of such a thing.",
         "A smartphone is a device: tap the screen and open the app store."),
        ("w2", "in-world", "Is the bridge safe tonight?", "Safe enough if you keep to the lamps.",
         "The bridge? I do not know anything about bridges."),
    ]
    (hv / "items.jsonl").write_text("".join(json.dumps(
        {"item": i + 1, "line": q, "reply_1": a, "reply_2": b, "asker": "a traveller"}) + "\n"
        for i, (_, _, q, a, b) in enumerate(lines)))
    (hv / "key.json").write_text(json.dumps({"a": "x", "b": "y", "items": [
        {"item": i + 1, "id": n, "category": c, "reply_1": "a"} for i, (n, c, *_) in enumerate(lines)]}))
    (hv / "verdicts.jsonl").write_text("".join(
        json.dumps({"item": i + 1, "better": "1"}) + "\n" for i in range(len(lines))))
    def journal():
        return {j["id"]: j for j in map(json.loads, (tmp_path / "rp.jsonl.samples.jsonl").read_text()
                                        .splitlines()[1:])}
    kept = {p["meta"]["id"]: p["chosen"][0]["content"] for p in review_pairs(hv, veto="checks")}
    assert kept == {"p1": lines[1][3], "w2": lines[2][3]}, kept
    assert journal()["w1"]["vetoed"] == ["dodges-in-world"], journal()["w1"]
    assert "vetoed" not in journal()["p1"]
    kept = {p["meta"]["id"]: p["chosen"][0]["content"] for p in review_pairs(hv, veto="default")}
    assert kept == {"w2": lines[2][3]}, kept
    assert journal()["w1"]["vetoed"] == ["dodges-in-world", "claims-ignorance"], journal()["w1"]
    assert journal()["p1"]["vetoed"] == ["claims-ignorance"], journal()["p1"]
    assert "vetoed" not in journal()["w2"]
    assert len(review_pairs(hv)) == 3
    c = [str(lemonpc), "pairs", str(tiny), "--out", str(tmp_path / "x.jsonl"), "--review", str(hv)]
    r = subprocess.run(c + ["--veto", "some"], capture_output=True, text=True)
    assert r.returncode == 2 and "--veto wants ignorance, checks or none" in r.stderr, r.stderr
    # --no-lore: no block
    out3 = tmp_path / "ev3"
    cmd3 = cmd[:]
    cmd3[cmd3.index(str(out))] = str(out3)
    assert subprocess.run(cmd3 + ["--no-lore"], capture_output=True).returncode == 0
    assert not any("lore" in json.loads(l) for l in (out3 / "answers.jsonl").read_text().splitlines())
    # resume: a torn answers file keeps its whole lines and answers the rest
    lines = (out / "answers.jsonl").read_text().splitlines()
    (out / "answers.jsonl").write_text(lines[0] + "\n" + lines[1][:20])
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "answers.jsonl").read_text().splitlines() == lines
    # side by side
    cmp_dir = tmp_path / "cmp"
    r = subprocess.run([str(lemonpc), "eval", "--compare", str(out), str(out2), "--out", str(cmp_dir)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    md = (cmp_dir / "compare.md").read_text()
    # the settings name files as a reader of the report can follow them: the sheet
    # relative to the repository (the working directory), the model outside it by name
    assert '"character":"examples/luminara/characters/orlando.md"' in md, md
    assert f'"model":"{tiny.name}"' in md and str(tmp_path) not in md, md
    assert "| tiny | tiny again |" in md.replace(" metric |", "").splitlines()[2] or "tiny again" in md
    svg = (cmp_dir / "compare.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<rect") > 5
    # bad input is an error naming the line
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "question": "Hi"}\n{"id": 2}\n')
    r = subprocess.run([str(lemonpc), "eval", str(tiny), str(bad), "--out", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "bad.jsonl:2" in r.stderr and "question" in r.stderr
