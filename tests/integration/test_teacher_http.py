"""The teacher runner (build/tools/lm_teacher_run, the C runner + HTTP
backend) against a fake OpenAI-compatible server that misbehaves on demand:
every request must end up exactly once in the output or in the failures
file with a clear message, runs must resume after a kill, the concurrency
bound and Retry-After must be honoured, and nothing may hang."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from fake_openai import FakeOpenAI  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOL = ROOT / os.environ.get("LEMONPC_BUILD", "build") / "tools" / "lm_teacher_run"


@pytest.fixture(scope="module", autouse=True)
def built():
    assert TOOL.exists(), f"{TOOL} missing: run `make` first"


def write_requests(path, contents, params=None):
    with open(path, "w") as f:
        for i, c in enumerate(contents):
            r = {"id": f"q{i}", "messages": [{"role": "system", "content": "You are Brann."},
                                            {"role": "user", "content": c}],
                 "metadata": {"n": i, "kind": "test"}}
            if params:
                r["params"] = params
            f.write(json.dumps(r) + "\n")
    return [f"q{i}" for i in range(len(contents))]


def run(tmp, base, *extra, timeout=60, env=None):
    args = [str(TOOL), "--requests", str(tmp / "req.jsonl"), "--out", str(tmp / "out.jsonl"),
            "--base", base, "--backoff-base-ms", "50", "--seed", "7", *map(str, extra)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    summary = json.loads(r.stdout) if r.returncode == 0 else None
    return r, summary


def lines(path):
    if not path.exists():
        return []
    return [json.loads(s) for s in path.read_text().splitlines() if s.strip()]


def check_exactly_once(tmp, ids):
    out = lines(tmp / "out.jsonl")
    fail = lines(tmp / "out.failures.jsonl")
    got = [o["id"] for o in out] + [f["id"] for f in fail]
    assert sorted(got) == sorted(ids), "every request exactly once in output or failures"
    return {o["id"]: o for o in out}, {f["id"]: f for f in fail}


def test_good_server_all_answers_and_concurrency_bound(tmp_path):
    contents = [f"question {i}" for i in range(24)]
    ids = write_requests(tmp_path / "req.jsonl", contents,
                         {"temperature": 0.7, "max_tokens": 64, "seed": 5, "stop": ["\n\n"]})
    # The first requests wait until 4 are in flight at once (30 s at most):
    # only a client that really keeps 4 going gets max_active to 4.
    with FakeOpenAI(delay_s=0.05, rendezvous=4) as srv:
        r, s = run(tmp_path, srv.base_url, "--in-flight", 4, "--model", "teacher-x")
        assert r.returncode == 0, r.stderr
        assert srv.max_active == 4, "requests were not sent 4 at a time"
        assert srv.max_conns <= 4
        body = srv.bodies[0]
    assert s == {"total": 24, "skipped": 0, "ok": 24, "failed": 0, "retried": 0,
                 "torn_bytes": 0, "cancelled": False}
    ok, fail = check_exactly_once(tmp_path, ids)
    assert not fail
    for i, c in enumerate(contents):
        o = ok[f"q{i}"]
        assert o["reply"] == f"reply to: {c}"
        assert o["messages"][1] == {"role": "user", "content": c}
        assert o["metadata"] == {"n": i, "kind": "test"}
        assert o["attempts"] == 1
        assert o["teacher"] == f"openai:teacher-x@{srv.base_url}"
    assert body["model"] == "teacher-x" and body["stream"] is False
    assert body["max_tokens"] == 64 and body["seed"] == 5 and body["stop"] == ["\n\n"]
    assert abs(body["temperature"] - 0.7) < 1e-6


def test_in_flight_one_is_sequential(tmp_path):
    ids = write_requests(tmp_path / "req.jsonl", [f"s{i}" for i in range(6)])
    with FakeOpenAI(delay_s=0.1) as srv:
        r, s = run(tmp_path, srv.base_url, "--in-flight", 1)
        assert srv.max_active == 1 and srv.max_conns == 1
    assert r.returncode == 0 and s["ok"] == 6
    check_exactly_once(tmp_path, ids)


def test_every_fault_ends_once_with_a_clear_message(tmp_path):
    faults = {
        "ok": None, "[[429x1]]": None, "[[500x2]]": None, "[[503x1]]": None,
        "[[dropx1]]": None, "[[hangupx1]]": None, "[[malformedx1]]": None, "[[slowx1]]": None,
        "[[malformed]]": r"response to request 'q\d+': JSON error at line 1 column \d+",
        "[[noshape]]": r"response to request 'q\d+': no choices\[0\]\.message\.content",
        "[[empty]]": r"empty choices\[0\]\.message\.content",
        "[[500]]": r"request 'q\d+': HTTP 500: fake failure 500 \(gave up after 3 attempts\)",
        "[[503]]": r"HTTP 503: fake failure 503",
        "[[401]]": r"request 'q\d+': HTTP 401: fake failure 401$",
        "[[400]]": r"HTTP 400: fake failure 400$",
        "[[drop]]": r"request 'q\d+': .*(transfer closed|Transferred a partial file)",
        "[[slow]]": r"timed out .*total 2000 ms",
    }
    contents = [f"case {k}" for k in faults]
    ids = write_requests(tmp_path / "req.jsonl", contents)
    # "slow" never answers (the server closes first), so only the client's
    # timeout ends it; 2 s is far beyond what an answered request takes on a
    # busy machine. A client that hangs hits run()'s 60 s limit.
    with FakeOpenAI(slow_s=3600, retry_after=1) as srv:
        r, s = run(tmp_path, srv.base_url, "--in-flight", 4, "--retries", 2,
                   "--timeout-ms", 2000)
        attempts = dict(srv.attempts)
    assert r.returncode == 0, r.stderr
    ok, fail = check_exactly_once(tmp_path, ids)
    import re
    for i, (k, pattern) in enumerate(faults.items()):
        rid = f"q{i}"
        if pattern is None:
            assert rid in ok, f"{k} should recover: {fail.get(rid)}"
            assert ok[rid]["reply"] == f"reply to: case {k}"
        else:
            assert rid in fail, f"{k} should fail"
            err = fail[rid]["error"]
            assert err.startswith(f"teacher {srv.base_url}: ")
            assert re.search(pattern, err), (k, err)
            assert fail[rid]["metadata"] == {"n": i, "kind": "test"}
    # 4xx other than 429 are not retried; retried failures keep their history
    q401 = fail[f"q{list(faults).index('[[401]]')}"]
    assert q401["attempts"] == 1 and attempts["case [[401]]"] == 1 and q401["history"] == []
    q500 = fail[f"q{list(faults).index('[[500]]')}"]
    assert q500["attempts"] == 3 and len(q500["history"]) == 2
    assert q500["history"][0].startswith("attempt 1: HTTP 500")
    assert ok[f"q{list(faults).index('[[500x2]]')}"]["attempts"] == 3
    assert ok[f"q{list(faults).index('[[slowx1]]')}"]["attempts"] == 2   # timed out, then answered
    assert s["ok"] == len(ok) and s["failed"] == len(fail)


def test_429_retry_after_is_honoured(tmp_path):
    contents = [f"rate {i} [[429x1]]" for i in range(3)] + ["plain"]
    ids = write_requests(tmp_path / "req.jsonl", contents)
    with FakeOpenAI(retry_after=1) as srv:
        r, s = run(tmp_path, srv.base_url, "--in-flight", 4, "--backoff-max-ms", 10000)
        assert r.returncode == 0, r.stderr
        for c in contents[:3]:
            log = srv.times_of(c)
            assert [w for _, w in log] == ["429", "ok"]
            gap = log[1][0] - log[0][0]
            # Retry-After: 1 means one second at least (a wait the machine's
            # load can only lengthen). The upper bound is far from 1 s but
            # below the 10 s a client waiting its whole backoff-max would take.
            assert 0.95 <= gap < 8, gap
    ok, fail = check_exactly_once(tmp_path, ids)
    assert not fail and ok["q0"]["attempts"] == 2


def test_retry_after_is_capped_by_backoff_max(tmp_path):
    ids = write_requests(tmp_path / "req.jsonl", ["cap [[429x1]]"])
    with FakeOpenAI(retry_after=30) as srv:
        r, s = run(tmp_path, srv.base_url, "--backoff-max-ms", 300)
        log = srv.times_of("cap [[429x1]]")
    assert r.returncode == 0 and s["ok"] == 1
    assert [w for _, w in log] == ["429", "ok"]
    # Capped at 0.3 s; a client that honoured the 30 s would not be back
    # within 20 (and would have run past run()'s limit of 60 s in all).
    assert log[1][0] - log[0][0] < 20
    check_exactly_once(tmp_path, ids)


def test_timeouts_do_not_hang(tmp_path):
    ids = write_requests(tmp_path / "req.jsonl", [f"slow {i} [[slow]]" for i in range(3)])
    # The server never answers; a client without working timeouts would run
    # into run()'s limit (subprocess.TimeoutExpired) instead of returning.
    with FakeOpenAI(slow_s=3600) as srv:
        r, s = run(tmp_path, srv.base_url, "--timeout-ms", 500, "--retries", 1, timeout=60)
        logs = {i: srv.times_of(f"slow {i} [[slow]]") for i in range(3)}
    assert r.returncode == 0, r.stderr
    ok, fail = check_exactly_once(tmp_path, ids)
    assert not ok
    for f in fail.values():
        assert "timed out" in f["error"] and "total 500 ms" in f["error"], f["error"]
        assert f["attempts"] == 2
    for log in logs.values():
        assert len(log) == 2
        # the second attempt came after the first had waited out its 0.5 s
        # (load can only make this longer) and was not the 3600 s answer
        assert 0.45 <= log[1][0] - log[0][0] < 20, log


def test_connection_refused_is_reported(tmp_path):
    ids = write_requests(tmp_path / "req.jsonl", ["nobody home"])
    with FakeOpenAI() as srv:
        base = srv.base_url
    r, s = run(tmp_path, base, "--retries", 1, "--connect-timeout-ms", 500)
    assert r.returncode == 0
    ok, fail = check_exactly_once(tmp_path, ids)
    assert "connect" in fail["q0"]["error"].lower()


def wait_until(cond, proc, what, limit=60):
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() - t0 < limit, f"no {what} in {limit} s"
        time.sleep(0.02)


def wait_lines(path, n, proc, limit=60):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.02)
    raise AssertionError("no progress")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_without_loss_or_duplicates(tmp_path, sig):
    contents = [f"resume {i}" for i in range(40)]
    ids = write_requests(tmp_path / "req.jsonl", contents)
    out = tmp_path / "out.jsonl"
    # Requests after the 10th wait at the server's gate: the run is surely
    # in the middle when the signal comes, however busy the machine is.
    with FakeOpenAI(hold_after=10) as srv:
        args = [str(TOOL), "--requests", str(tmp_path / "req.jsonl"), "--out", str(out),
                "--base", srv.base_url, "--in-flight", 3]
        p = subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        try:
            wait_lines(out, 8, p)
            wait_until(lambda: srv.held >= 3, p, "three requests held at the gate")
            p.send_signal(sig)
        finally:
            srv.gate.set()
        stdout, stderr = p.communicate(timeout=60)
        if sig == signal.SIGINT:
            assert p.returncode == 0, stderr
            assert json.loads(stdout)["cancelled"] is True
        first = [o["id"] for o in lines(out)]
        assert 8 <= len(first) < 40 and len(set(first)) == len(first)
        torn = 0
        if sig == signal.SIGKILL:
            # What a crash in the middle of a write leaves: a line without its end.
            with open(out, "a") as f:
                f.write('{"id": "q39", "messages": [{"role": "us')
            torn = len('{"id": "q39", "messages": [{"role": "us')
        r, s = run(tmp_path, srv.base_url, "--in-flight", 3)
        assert r.returncode == 0, r.stderr
        assert s["skipped"] == len(first) and s["ok"] == 40 - len(first)
        assert s["torn_bytes"] == torn
        # What was already saved is never asked again.
        for rid in first:
            assert srv.attempts[contents[int(rid[1:])]] == 1
    ok, fail = check_exactly_once(tmp_path, ids)
    assert not fail and len(ok) == 40
    assert out.read_text().endswith("\n")


def test_failures_are_retried_on_rerun_and_leave_the_failures_file(tmp_path):
    ids = write_requests(tmp_path / "req.jsonl", ["a", "b [[503x2]]"])
    with FakeOpenAI() as srv:
        r, s = run(tmp_path, srv.base_url, "--retries", 0)
        assert s["ok"] == 1 and s["failed"] == 1
        ok, fail = check_exactly_once(tmp_path, ids)
        assert "HTTP 503" in fail["q1"]["error"]
        # --no-retry-failures: the failure stays and is not asked again
        r, s = run(tmp_path, srv.base_url, "--retries", 0, "--no-retry-failures")
        assert s["skipped"] == 2 and s["ok"] == 0 and s["failed"] == 0
        check_exactly_once(tmp_path, ids)
        r, s = run(tmp_path, srv.base_url, "--retries", 0)
        assert s["skipped"] == 1 and s["failed"] == 1     # second 503
        r, s = run(tmp_path, srv.base_url, "--retries", 0)
        assert s["skipped"] == 1 and s["ok"] == 1
    ok, fail = check_exactly_once(tmp_path, ids)
    assert not fail and ok["q1"]["reply"] == "reply to: b [[503x2]]"


def written_texts(root):
    """Every file under root, as (path, bytes)."""
    return [(f, f.read_bytes()) for f in sorted(root.rglob("*")) if f.is_file()]


def test_api_key_from_environment_never_printed(tmp_path):
    """The key is sent (the server sees it) but never written: not on stdout
    or stderr of any run, not in any file a run leaves, whether the run
    succeeds, has no key, has a wrong key, or fails in other ways with a
    good one (retries with a history, connection refused)."""
    key = "sk-test-7f3a9c1e5b2d4f6a"
    wrong = "sk-wrong-4d2b8e60c1a3f5e7"
    env = dict(os.environ, LM_TEST_KEY=key)
    env_bad = dict(os.environ, LM_TEST_KEY=wrong)
    runs = {}

    def go(name, base, *extra, env=None):
        d = tmp_path / name
        d.mkdir()
        write_requests(d / "req.jsonl", ["key please", "again [[500]]", "drop [[dropx1]]"])
        r, s = run(d, base, "--api-key-env", "LM_TEST_KEY", "--retries", 1, *extra, env=env)
        runs[name] = r
        return d, r, s

    with FakeOpenAI(api_key=key) as srv:
        d, r, s = go("good", srv.base_url, env=env)
        assert r.returncode == 0, r.stderr
        assert s["ok"] == 2 and s["failed"] == 1, s     # the 500 fails with a history
        assert f"Bearer {key}" in srv.auth              # the key was really used
        n_good = len(srv.auth)
        d, r, s = go("unset", srv.base_url)             # LM_TEST_KEY not set at all
        assert r.returncode == 1 and "LM_TEST_KEY" in r.stderr
        assert len(srv.auth) == n_good                  # nothing was sent
        # a wrong key is a 401: reported once, not retried
        d, r, s = go("wrong", srv.base_url, env=env_bad)
        assert r.returncode == 0 and s["failed"] == 3, (r.stderr, s)
        assert srv.auth[n_good:] == [f"Bearer {wrong}"] * 3
        ok, fail = check_exactly_once(d, ["q0", "q1", "q2"])
        assert all("HTTP 401: Incorrect API key provided" in f["error"] for f in fail.values())
        assert all(f["attempts"] == 1 for f in fail.values())
        base = srv.base_url
    # nobody listens any more: connect errors, with the key set
    d, r, s = go("refused", base, "--connect-timeout-ms", 500, env=env)
    assert r.returncode == 0 and s["failed"] == 3, (r.stderr, s)

    # the whole keys, and any 8 characters of their random parts (a key cut
    # short or with its prefix stripped is still a leak)
    secrets = [key, wrong] + [k[-16:][i:i + 8] for k in (key, wrong) for i in range(9)]
    for name, r in runs.items():
        for stream, text in (("stdout", r.stdout), ("stderr", r.stderr)):
            for sec in secrets:
                assert sec not in text, f"run {name}: {stream} shows the key"
    files = written_texts(tmp_path)
    assert any(f.name == "out.failures.jsonl" for f, _ in files)
    for f, data in files:
        for sec in secrets:
            assert sec.encode() not in data, f"{f} holds the key"


def test_bad_request_file_and_corrupt_output_are_errors(tmp_path):
    req = tmp_path / "req.jsonl"
    req.write_text('{"id": "a", "messages": [{"role": "user", "content": "x"}]}\n'
                   '{"id": "a", "messages": [{"role": "user", "content": "y"}]}\n')
    r, _ = run(tmp_path, "http://127.0.0.1:9/v1")
    assert r.returncode == 1 and f"{req}:2" in r.stderr and "duplicate id" in r.stderr
    req.write_text('{"id": "a", "messages": [{"role": "user"}]}\n')
    r, _ = run(tmp_path, "http://127.0.0.1:9/v1")
    assert r.returncode == 1 and "messages[0].content" in r.stderr
    write_requests(req, ["x"])
    (tmp_path / "out.jsonl").write_text('{"id": "q9", "reply": "fine"}\nnot json at all\n')
    r, _ = run(tmp_path, "http://127.0.0.1:9/v1")
    assert r.returncode == 1 and "out.jsonl:2: not a result line" in r.stderr
