"""`lemonpc eval --judge-url`: an LLM judge (here a fake OpenAI-compatible
server that answers with scores chosen by the test) scores each answer on
Character-LLM's five dimensions. Checks what the judge is sent, the means in
the report, a judge reply that is not scores counted as a failure rather
than a crash, the resume that asks only for what is missing, and a report
without a judge having no judge rows."""
import json
import pathlib
import re
import subprocess
import sys

import pytest

from make_random_gguf import write_random_llama

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from fake_openai import FakeOpenAI  # noqa: E402

LUMINARA = ROOT / "examples" / "luminara"
SHEET = LUMINARA / "characters" / "orlando.md"
DIMS = ["memorization", "values", "personality", "hallucination", "stability"]


@pytest.fixture(scope="module")
def tiny(model_path, tmp_models):
    p = tmp_models / "tiny-judge.gguf"
    if not p.exists():
        write_random_llama(p, model_path, n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=128,
                           theta=100000.0, seed=9)
    return p


def scores_for(question):
    """The fake judge's scores: a pure function of the question, so the test
    knows the means; the vineyard question gets prose instead of scores."""
    if "frost took the lower rows" in question:
        return None
    h = sum(map(ord, question))
    return {d: 1 + (h + 3 * i) % 7 for i, d in enumerate(DIMS)}


def responder(req):
    user = req["messages"][-1]["content"]
    q = re.search(r"# The question\n\n(.*?)\n\n# The character's reply", user, re.S).group(1)
    s = scores_for(q)
    if s is None:
        return "I would say this reply is rather good, perhaps a five."
    return "Scores:\n```json\n" + json.dumps(s) + "\n```"


def test_eval_with_judge(lemonpc, tiny, tmp_path):
    rows = [json.loads(l) for l in (LUMINARA / "eval" / "orlando.jsonl").read_text().splitlines()]
    pick = [q for q in rows if "history" in q][:1] + [q for q in rows if "history" not in q][:5]
    assert any("frost took the lower rows" in q["question"] for q in pick)
    qs = tmp_path / "q.jsonl"
    qs.write_text("".join(json.dumps(q) + "\n" for q in pick))
    out = tmp_path / "ev"
    with FakeOpenAI(responder=responder) as fake:
        cmd = [str(lemonpc), "eval", str(tiny), str(qs), "--out", str(out), "--character", str(SHEET),
               "--persona", "short", "-n", "8", "-t", "2", "--label", "tiny",
               "--judge-url", fake.base_url, "--judge-model", "big-judge"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        assert len(fake.bodies) == len(pick)
        body = fake.bodies[0]
        assert body["model"] == "big-judge" and body["temperature"] == 0
        sys_msg, user = body["messages"][0]["content"], body["messages"][1]["content"]
        assert "JSON" in sys_msg
        ans = [json.loads(l) for l in (out / "answers.jsonl").read_text().splitlines()]
        by_q = {b["messages"][1]["content"].split("# The question\n\n")[1].split("\n\n")[0]: b
                for b in fake.bodies}
        for q, a in zip(pick, ans):
            u = by_q[q["question"]]["messages"][1]["content"]
            # the judge sees the whole sheet, the scene, earlier turns, the question, the answer
            assert "Orlando Marlo" in u and "Lawful Good" in u   # the full sheet, not the short persona
            assert f"Speaking to the character: {q.get('asker', 'unknown')}" in u
            assert a["answer"] in u
            for h in q.get("history", []):
                assert f"{h['role']}: {h['content']}" in u
            s = scores_for(q["question"])
            assert a.get("judge") == s
        rep = json.loads((out / "report.json").read_text())
        scored = [scores_for(q["question"]) for q in pick if scores_for(q["question"])]
        assert rep["judge"] == {"name": rep["judge"]["name"], "scored": len(scored), "failed": 1}
        assert "big-judge" in rep["judge"]["name"]
        for d in DIMS:
            assert rep["metrics"][f"judge_{d}"] == pytest.approx(sum(s[d] for s in scored) / len(scored))
        md = (out / "report.md").read_text()
        assert "judge: memorization (1-7)" in md and "1 failed" in md
        jl = [json.loads(l) for l in (out / "judge.jsonl").read_text().splitlines()]
        assert "big-judge" in jl[0]["judge"]
        failed = [x for x in jl[1:] if "error" in x]
        assert len(failed) == 1 and "no JSON object" in failed[0]["error"]
        # resume: only the answer the judge failed on is asked again
        n0 = len(fake.bodies)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        assert len(fake.bodies) == n0 + 1
        assert json.loads((out / "report.json").read_text())["metrics"] == rep["metrics"]
    # without a judge: no judge rows, no judge scores on the answers
    r = subprocess.run(cmd[:cmd.index("--judge-url")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rep2 = json.loads((out / "report.json").read_text())
    assert "judge" not in rep2 and not any(k.startswith("judge_") for k in rep2["metrics"])
    assert not any("judge" in json.loads(l) for l in (out / "answers.jsonl").read_text().splitlines())
    assert "judge:" not in (out / "report.md").read_text()


def test_judge_flags(lemonpc, tiny, tmp_path):
    qs = tmp_path / "q.jsonl"
    qs.write_text(json.dumps({"id": "q1", "question": "Hello?"}) + "\n")
    base = [str(lemonpc), "eval", str(tiny), str(qs), "--out", str(tmp_path / "o"), "-n", "4"]
    r = subprocess.run(base + ["--judge-url", "http://127.0.0.1:9/v1", "--judge-gguf", str(tiny)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "give one judge" in r.stderr, r.stderr
    r = subprocess.run(base + ["--judge-model", "x"], capture_output=True, text=True)
    assert r.returncode == 2 and "go with --judge-url" in r.stderr, r.stderr
    # a judge that cannot be reached: every answer counted as a judge failure, with the
    # reason in judge.jsonl; the eval itself stands
    r = subprocess.run(base + ["--judge-url", "http://127.0.0.1:9/v1"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["judge"]["scored"] == 0 and rep["judge"]["failed"] == 1
    assert not any(k.startswith("judge_") for k in rep["metrics"])
    jl = [json.loads(l) for l in (tmp_path / "o" / "judge.jsonl").read_text().splitlines()]
    assert len(jl) == 2 and jl[1]["id"] == "q1" and jl[1]["error"]
