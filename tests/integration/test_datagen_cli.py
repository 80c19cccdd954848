"""`lemonpc datagen` end to end against a small fake OpenAI-compatible teacher
that writes plausible questions and answers (varied by a hash of the
request), fails some requests once with 500 or malformed JSON, and can be
slowed down: the round finishes, every request is accounted for once, a
SIGINT'd run resumes to exactly the bytes of an uninterrupted one, and bad
invocations fail clearly without writing a dataset."""
import hashlib
import http.server
import json
import os
import pathlib
import signal
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LEMONPC = ROOT / os.environ.get("LEMONPC_BUILD", "build") / "lemonpc"
SHEETS = ROOT / "examples" / "luminara"
WORDS = ["dawn", "bread", "river", "sword", "council", "vineyard", "lantern", "harvest",
         "archive", "bell", "orchard", "road", "winter", "chapel", "market", "horse"]


class Teacher:
    def __init__(self, delay_s=0.0, faults=True):
        self.delay_s, self.faults = delay_s, faults
        self.lock = threading.Lock()
        self.attempts = {}
        self.requests = 0
        t = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, body = t.reply(req)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def reply(self, req):
        msgs = req["messages"]
        key = msgs[0]["content"] + msgs[-1]["content"]
        h = int(hashlib.sha256((key + str(req.get("seed"))).encode()).hexdigest(), 16)
        with self.lock:
            self.requests += 1
            k = self.attempts[key] = self.attempts.get(key, 0) + 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.faults and k == 1 and h % 7 == 0:
            return 500, {"error": {"message": "overloaded"}}
        if self.faults and k == 1 and h % 11 == 0:
            return 200, b"{not json"
        w = [WORDS[(h >> (4 * i)) % 16] for i in range(4)]
        if "Answer their next message" in msgs[0]["content"]:
            text = f"The {w[0]} and the {w[1]} are dear to me, friend; I think of the {w[2]} at every {w[3]}."
        else:
            text = f"Tell me, what of the {w[0]} and the {w[1]}, or the {w[2]} past the {w[3]}?"
        return 200, {"choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}]}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module", autouse=True)
def built():
    assert LEMONPC.exists(), f"{LEMONPC} missing: run `make` first"


def args(out, url, n=24, *extra):
    return [str(LEMONPC), "datagen", str(SHEETS), "--character", "orlando", "--out", str(out),
            "--teacher-url", url, "--n", str(n), "--seed", "3", "--max-retries", "3",
            "--templates", str(ROOT / "datagen" / "templates"), *extra]


def lines(p):
    return [json.loads(s) for s in p.read_text().splitlines() if s.strip()] if p.exists() else []


def test_round_with_faults_accounts_for_every_request(tmp_path):
    t = Teacher()
    try:
        r = subprocess.run(args(tmp_path / "o", t.url), capture_output=True, text=True, timeout=120)
    finally:
        t.close()
    assert r.returncode == 0, r.stderr
    o = tmp_path / "o"
    st = json.loads((o / "stats.json").read_text())["counts"]
    ds, rej = lines(o / "dataset.jsonl"), lines(o / "rejected.jsonl")
    assert st["requested"] == 24 and st["question_failures"] == 0 and st["answer_failures"] == 0
    assert len(ds) == st["kept"] > 0
    assert len(ds) + len(rej) == 24
    split = sum(len(lines(o / f)) for f in ("train.jsonl", "validation.jsonl", "test.jsonl"))
    assert split == len(ds)
    # The journals hold each request once, though some were retried.
    q = [x["id"] for x in lines(o / "questions.jsonl")]
    assert sorted(q) == sorted(f"q{i}" for i in range(24))
    assert any(x["attempts"] > 1 for x in lines(o / "questions.jsonl") + lines(o / "answers.jsonl"))
    for s in ds:
        assert [m["role"] for m in s["messages"]] == ["user", "assistant"]
        assert s["meta"]["teacher"].startswith("openai:")
    assert "kept" in r.stdout


def test_sigint_then_rerun_equals_uninterrupted(tmp_path):
    t = Teacher()
    try:
        ref = subprocess.run(args(tmp_path / "ref", t.url, 20), capture_output=True, text=True, timeout=120)
        assert ref.returncode == 0, ref.stderr
        t.delay_s = 0.15
        p = subprocess.Popen(args(tmp_path / "res", t.url, 20, "--max-in-flight", "2"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        qf = tmp_path / "res" / "questions.jsonl"
        deadline = time.time() + 30
        while time.time() < deadline and len(lines(qf)) < 6:
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 130, err
        assert "rerun the same command" in err
        assert not (tmp_path / "res" / "dataset.jsonl").exists()
        t.delay_s = 0
        again = subprocess.run(args(tmp_path / "res", t.url, 20, "--max-in-flight", "2"),
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
    finally:
        t.close()
    assert (tmp_path / "res" / "dataset.jsonl").read_bytes() == (tmp_path / "ref" / "dataset.jsonl").read_bytes()
    ids = [x["id"] for x in lines(tmp_path / "res" / "questions.jsonl")]
    assert len(ids) == len(set(ids)) == 20


def test_bad_invocations(tmp_path):
    base = [str(LEMONPC), "datagen", str(SHEETS), "--out", str(tmp_path / "x")]
    r = subprocess.run(base + ["--character", "orlando"], capture_output=True, text=True)
    assert r.returncode == 2 and "exactly one teacher" in r.stderr
    r = subprocess.run(base + ["--character", "nobody", "--teacher-url", "http://127.0.0.1:9/v1"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no character 'nobody'" in r.stderr and "Orlando Marlo" in r.stderr
    r = subprocess.run(base + ["--character", "orlando", "--teacher-url", "http://127.0.0.1:9/v1",
                               "--kinds", "in-world=1,gossip=2"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown kind 'gossip'" in r.stderr
    bad = tmp_path / "tpl"
    bad.mkdir()
    for f in (ROOT / "datagen" / "templates").iterdir():
        (bad / f.name).write_text(f.read_text())
    (bad / "question_instruction.txt").write_text("line\n{{#if is_protective}}\nno end\n")
    r = subprocess.run(base + ["--character", "orlando", "--teacher-url", "http://127.0.0.1:9/v1",
                               "--templates", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "question_instruction.txt:2:" in r.stderr
    assert not (tmp_path / "x" / "dataset.jsonl").exists()
    r = subprocess.run([str(LEMONPC), "datagen", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--kinds" in r.stdout
