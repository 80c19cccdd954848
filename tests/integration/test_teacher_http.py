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
    with FakeOpenAI(delay_s=0.3) as srv:
        r, s = run(tmp_path, srv.base_url, "--in-flight", 4, "--model", "teacher-x")
        assert r.returncode == 0, r.stderr
        assert srv.max_active <= 4
        assert srv.max_active >= 2, "requests were not sent concurrently"
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
        "[[slow]]": r"timed out .*total 800 ms",
    }
    contents = [f"case {k}" for k in faults]
    ids = write_requests(tmp_path / "req.jsonl", contents)
    t0 = time.monotonic()
    with FakeOpenAI(slow_s=4, retry_after=1) as srv:
        r, s = run(tmp_path, srv.base_url, "--in-flight", 4, "--retries", 2,
                   "--timeout-ms", 800)
        attempts = dict(srv.attempts)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 30
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
            # Retry-After: 1 means one second at least; the client should not dawdle either.
            assert 0.95 <= gap < 2.5, gap
    ok, fail = check_exactly_once(tmp_path, ids)
    assert not fail and ok["q0"]["attempts"] == 2


def test_retry_after_is_capped_by_backoff_max(tmp_path):
    ids = write_requests(tmp_path / "req.jsonl", ["cap [[429x1]]"])
    with FakeOpenAI(retry_after=30) as srv:
        t0 = time.monotonic()
        r, s = run(tmp_path, srv.base_url, "--backoff-max-ms", 300)
        assert time.monotonic() - t0 < 10
    assert r.returncode == 0 and s["ok"] == 1
    check_exactly_once(tmp_path, ids)


def test_timeouts_do_not_hang(tmp_path):
    ids = write_requests(tmp_path / "req.jsonl", [f"slow {i} [[slow]]" for i in range(3)])
    with FakeOpenAI(slow_s=60) as srv:
        t0 = time.monotonic()
        r, s = run(tmp_path, srv.base_url, "--timeout-ms", 500, "--retries", 1, timeout=30)
        took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert took < 6, f"took {took:.1f}s with a 0.5 s timeout and one retry"
    ok, fail = check_exactly_once(tmp_path, ids)
    assert not ok
    for f in fail.values():
        assert "timed out" in f["error"] and f["attempts"] == 2


def test_connection_refused_is_reported(tmp_path):
    ids = write_requests(tmp_path / "req.jsonl", ["nobody home"])
    with FakeOpenAI() as srv:
        base = srv.base_url
    r, s = run(tmp_path, base, "--retries", 1, "--connect-timeout-ms", 500)
    assert r.returncode == 0
    ok, fail = check_exactly_once(tmp_path, ids)
    assert "connect" in fail["q0"]["error"].lower()


def wait_lines(path, n, proc, limit=30):
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
    with FakeOpenAI(delay_s=0.1) as srv:
        args = [str(TOOL), "--requests", str(tmp_path / "req.jsonl"), "--out", str(out),
                "--base", srv.base_url, "--in-flight", 3]
        p = subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        wait_lines(out, 8, p)
        p.send_signal(sig)
        stdout, stderr = p.communicate(timeout=10)
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


def test_api_key_from_environment_never_printed(tmp_path):
    ids = write_requests(tmp_path / "req.jsonl", ["key please"])
    key = "sk-test-7f3a9c1e5b"
    env = dict(os.environ, LM_TEST_KEY=key)
    with FakeOpenAI(api_key=key) as srv:
        r, s = run(tmp_path, srv.base_url, "--api-key-env", "LM_TEST_KEY", env=env)
        assert r.returncode == 0 and s["ok"] == 1, r.stderr
        r2, _ = run(tmp_path, srv.base_url, "--api-key-env", "LM_NO_SUCH_KEY_VAR")
        assert r2.returncode == 1 and "LM_NO_SUCH_KEY_VAR" in r2.stderr
        # a wrong key is a 401: reported once, not retried
        (tmp_path / "out.jsonl").unlink()
        env_bad = dict(os.environ, LM_TEST_KEY="sk-wrong")
        r3, s3 = run(tmp_path, srv.base_url, "--api-key-env", "LM_TEST_KEY", env=env_bad)
        assert s3["failed"] == 1
    ok, fail = check_exactly_once(tmp_path, ids)
    assert "HTTP 401: Incorrect API key provided" in fail["q0"]["error"]
    for text in (r.stdout, r.stderr, (tmp_path / "out.failures.jsonl").read_text()):
        assert key not in text and "sk-wrong" not in text


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
