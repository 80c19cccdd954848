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


class RunState:
    """What the fake teacher knows of one run: attempts per request (faults
    are served on a request's first attempt in that run), every request's key
    in arrival order, the faults served. Each run gets its own."""

    def __init__(self, hold_after=None):
        self.attempts = {}
        self.keys = []
        self.faults = 0
        self.hold_after = hold_after    # requests past this many wait for `gate`
        self.gate = threading.Event()
        self.held = 0


class Teacher:
    def __init__(self, delay_s=0.0, faults=True):
        self.delay_s, self.faults = delay_s, faults
        self.lock = threading.Lock()
        self.state = RunState()
        t = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, body = t.reply(req)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass    # the client was interrupted meanwhile

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def attempts(self):
        return self.state.attempts

    @property
    def requests(self):
        return len(self.state.keys)

    def new_run(self, hold_after=None):
        """A fresh state for the next run (the URL, which the outputs name,
        stays the same); returns it."""
        with self.lock:
            self.state = RunState(hold_after)
            return self.state

    def reply(self, req):
        msgs = req["messages"]
        key = msgs[0]["content"] + msgs[-1]["content"]
        h = int(hashlib.sha256((key + str(req.get("seed"))).encode()).hexdigest(), 16)
        with self.lock:
            st = self.state
            st.keys.append(key)
            k = st.attempts[key] = st.attempts.get(key, 0) + 1
            hold = st.hold_after is not None and len(st.keys) > st.hold_after
            if hold:
                st.held += 1
        if hold:
            # Generous: the test opens the gate as soon as it has interrupted.
            assert st.gate.wait(60), "the test never opened the gate"
        if self.delay_s:
            time.sleep(self.delay_s)
        fault = None
        if self.faults and k == 1 and h % 7 == 0:
            fault = 500, {"error": {"message": "overloaded"}}
        elif self.faults and k == 1 and h % 11 == 0:
            fault = 200, b"{not json"
        if fault:
            with self.lock:
                st.faults += 1
            return fault
        w = [WORDS[(h >> (4 * i)) % 16] for i in range(4)]
        if "Answer their next message" in msgs[0]["content"]:
            text = f"The {w[0]} and the {w[1]} are dear to me, friend; I think of the {w[2]} at every {w[3]}."
        else:
            text = f"Tell me, what of the {w[0]} and the {w[1]}, or the {w[2]} past the {w[3]}?"
        return 200, {"choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}]}

    def close(self):
        with self.lock:
            self.state.gate.set()
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


# Journals record requests in the order they were answered, and how many
# attempts each took: both depend on the run. Everything else must be the same.
JOURNALS = ("questions.jsonl", "answers.jsonl")


def journal_by_id(path):
    out = {}
    for x in lines(path):
        assert x["id"] not in out, f"{path}: {x['id']} twice"
        x.pop("attempts")
        out[x["id"]] = x
    return out


def wait_until(cond, proc, what, limit=60):
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() - t0 < limit, f"no {what} in {limit} s"
        time.sleep(0.02)


def test_sigint_then_rerun_equals_uninterrupted(tmp_path):
    """Three runs, each with its own teacher state (faults on each request's
    first attempt in that run): an uninterrupted reference, a run interrupted
    by SIGINT while the teacher holds its next requests (so the interruption
    falls mid-run however busy the machine), and the rerun that finishes it.
    Every file the finished run leaves equals the reference's."""
    t = Teacher()
    try:
        ref_state = t.new_run()
        ref = subprocess.run(args(tmp_path / "ref", t.url, 20), capture_output=True, text=True, timeout=120)
        assert ref.returncode == 0, ref.stderr
        assert ref_state.faults > 0, "the reference run met no faults"

        cut = t.new_run(hold_after=8)
        p = subprocess.Popen(args(tmp_path / "res", t.url, 20, "--max-in-flight", "2"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: cut.held >= 2, p, "two requests held at the gate")
            p.send_signal(signal.SIGINT)
        finally:
            cut.gate.set()
        _, err = p.communicate(timeout=60)
        assert p.returncode == 130, err
        assert "rerun the same command" in err
        assert not (tmp_path / "res" / "dataset.jsonl").exists()
        done_q = lines(tmp_path / "res" / "questions.jsonl")
        done_a = lines(tmp_path / "res" / "answers.jsonl")
        assert 0 < len(done_q) + len(done_a) <= 10, "interrupted after 8 requests and 2 held"

        rest = t.new_run()
        again = subprocess.run(args(tmp_path / "res", t.url, 20, "--max-in-flight", "2"),
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
    finally:
        t.close()
    # Nothing the interrupted run had saved was asked again.
    for x in done_q + done_a:
        key = x["messages"][0]["content"] + x["messages"][-1]["content"]
        assert key not in rest.attempts, f"{x['id']} was asked again after the rerun"
    # Every request that faulted in the reference faulted again in one of the
    # two runs that replaced it (their states are fresh), so both handled faults.
    assert cut.faults + rest.faults >= ref_state.faults

    ref_dir, res_dir = tmp_path / "ref", tmp_path / "res"
    names = sorted(f.name for f in ref_dir.iterdir())
    assert names == sorted(f.name for f in res_dir.iterdir())
    assert "dataset.jsonl" in names and "stats.json" in names
    for name in names:
        if name in JOURNALS:
            assert journal_by_id(res_dir / name) == journal_by_id(ref_dir / name), name
        else:
            assert (res_dir / name).read_bytes() == (ref_dir / name).read_bytes(), name
    ids = [x["id"] for x in lines(res_dir / "questions.jsonl")]
    assert len(ids) == len(set(ids)) == 20


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_teacher_fails(tmp_path):
    """Nothing came back: an error naming the first failure, exit 1, and no
    (empty) dataset files; the journals stay for the rerun."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    r = subprocess.run(args(tmp_path / "o", url, 4, "--max-retries", "0"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "the teacher answered none of the 4 question requests" in r.stderr, r.stderr
    assert "Couldn't connect" in r.stderr and "questions.failures.jsonl" in r.stderr
    for f in ("dataset.jsonl", "train.jsonl", "validation.jsonl", "test.jsonl", "stats.json"):
        assert not (tmp_path / "o" / f).exists(), f
    assert len(lines(tmp_path / "o" / "questions.failures.jsonl")) == 4


def test_teacher_failing_every_answer_fails(tmp_path):
    t = Teacher(faults=False)
    ask = t.reply

    def reply(req):
        if "Answer their next message" in req["messages"][0]["content"]:
            return 500, {"error": {"message": "answers are down"}}
        return ask(req)
    t.reply = reply
    try:
        r = subprocess.run(args(tmp_path / "o", t.url, 4, "--max-retries", "0"),
                           capture_output=True, text=True, timeout=120)
    finally:
        t.close()
    assert r.returncode == 1, r.stderr
    assert "the teacher answered none of the" in r.stderr and "answer requests" in r.stderr, r.stderr
    assert "answers are down" in r.stderr
    assert not (tmp_path / "o" / "dataset.jsonl").exists()


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
