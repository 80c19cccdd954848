"""`lemonpc serve` on the real model and the luminara world, from another
process: plain HTTP (http.client, raw sockets) and the official `openai`
package. Plain and streamed chat, usage counts, stop strings, two NPCs, a
conversation continued from its cache, the NPC endpoints, and bad input
(malformed JSON, wrong types, unknown model, empty messages, a 10 MB body,
a body cut off, a slow client, 100 idle connections, a client that leaves
mid-reply): each gets a 4xx or is dropped, and the server keeps serving.
Replies are greedy and short, so each test takes about a second."""
import http.client
import json
import os
import pathlib
import socket
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LEMONPC = ROOT / os.environ.get("LEMONPC_BUILD", "build") / "lemonpc"
IDLE = 3   # the servers' --idle-timeout, seconds


@pytest.fixture(scope="module")
def model_path():
    p = os.environ.get("LEMONPC_MODEL")
    if not p:
        p = subprocess.run([str(ROOT / "scripts" / "fetch_model.sh")], check=True,
                           capture_output=True, text=True).stdout.strip()
    return pathlib.Path(p)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp, model_path, *extra, env=None):
        assert LEMONPC.exists(), f"{LEMONPC} missing: run `make` first"
        self.port = free_port()
        self.log_path = tmp / "serve.log"
        self.log = open(self.log_path, "w")
        self.world = tmp / "world.db"
        self.proc = subprocess.Popen(
            [str(LEMONPC), "serve", str(ROOT / "examples" / "luminara"), "--model", str(model_path),
             "--npc", f"orlando={ROOT / 'examples/luminara/npc/orlando.adapter.gguf'}",
             "--port", str(self.port), "--world-file", str(self.world), "-t", "2",
             "--idle-timeout", str(IDLE), *map(str, extra)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        t0 = time.monotonic()
        try:
            while True:
                assert self.proc.poll() is None, f"lemonpc serve exited:\n{self.log_text()}"
                try:
                    if self.get("/health")[0] == 200:
                        break
                except OSError:
                    pass
                # a limit, not an expectation: ASan on a loaded 2-core machine
                # takes minutes
                assert time.monotonic() - t0 < 600, "lemonpc serve did not come up in 600 s"
                time.sleep(0.2)
        except BaseException:
            self.proc.kill()   # never left running behind a failed start
            self.proc.wait()
            raise

    def log_text(self):
        return self.log_path.read_text()

    def conn(self, timeout=300):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None):
        c = self.conn()
        try:
            data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
            c.request(method, path, body=data,
                      headers={"Content-Type": "application/json", **(headers or {})})
            r = c.getresponse()
            raw = r.read()
            ctype = r.getheader("Content-Type", "")
            return r.status, (json.loads(raw) if "json" in ctype else raw.decode())
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def chat(self, model, messages, **kw):
        body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": 12, **kw}
        return self.post("/v1/chat/completions", {k: v for k, v in body.items() if v is not None})

    def stop(self):
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.log.close()
        return rc


@pytest.fixture(scope="module")
def srv(model_path, tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("serve"), model_path)
    yield s
    assert s.stop() == 0, "lemonpc serve did not stop cleanly on SIGTERM"
    log = s.log_text()
    # ASan/UBSan (build-san) and TSan (build-tsan) reports
    assert "ERROR" not in log and "Sanitizer" not in log, log


def user_msg(text):
    return {"role": "user", "content": text}


def sse_events(raw):
    """The data lines of a server-sent event stream, JSON-decoded but [DONE]."""
    events = [e for e in raw.split("\n\n") if e.strip()]
    for e in events:
        assert e.startswith("data: "), e
    assert events[-1] == "data: [DONE]"
    return [json.loads(e[6:]) for e in events[:-1]]


def assert_error(status, body, want_status, param=None):
    assert status == want_status, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    if param is not None:
        assert err["param"] == param, err


# ---- OpenAI's endpoints over plain HTTP ---------------------------------------

def test_health_and_models(srv):
    assert srv.get("/health") == (200, {"status": "ok", "npcs": 2})
    status, body = srv.get("/v1/models")
    assert status == 200 and body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["elena", "orlando"]
    status, body = srv.get("/v1/models/orlando")
    assert status == 200 and body["name"] == "Orlando Marlo"


def test_plain_chat_and_usage(srv):
    status, r = srv.chat("orlando", [user_msg("Who are you?")], user="Anna", max_tokens=8)
    assert status == 200, r
    assert r["object"] == "chat.completion" and r["model"] == "orlando"
    choice = r["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    u = r["usage"]
    assert u["completion_tokens"] <= 8
    assert choice["finish_reason"] == ("length" if u["completion_tokens"] == 8 else "stop")
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    # the persona prefix was evaluated once, at start: the prompt reuses it
    assert 0 < u["prompt_tokens_details"]["cached_tokens"] < u["prompt_tokens"]


def test_stream_equals_plain(srv):
    # no user: no memory of the world recalled or recorded, so the same
    # messages make the same prompt twice
    msgs = [user_msg("What is the Great Cathedral?")]
    status, plain = srv.chat("elena", msgs, user=None)
    assert status == 200, plain
    status, raw = srv.chat("elena", msgs, user=None, stream=True,
                           stream_options={"include_usage": True})
    assert status == 200
    ev = sse_events(raw)
    assert ev[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(e["object"] == "chat.completion.chunk" and e["id"] == ev[0]["id"] for e in ev)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in ev if e["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert ev[-2]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert ev[-1]["choices"] == [] and ev[-1]["usage"]["completion_tokens"] == \
        plain["usage"]["completion_tokens"]
    assert all(e["usage"] is None for e in ev[:-1])
    # without include_usage, no usage anywhere
    status, raw = srv.chat("elena", msgs, user=None, stream=True)
    assert all("usage" not in e for e in sse_events(raw))


def test_stop_strings(srv):
    msgs = [user_msg("Tell me about the Sunguard.")]
    status, r = srv.chat("orlando", msgs, max_tokens=16)
    full = r["choices"][0]["message"]["content"]
    words = full.split()
    assert len(words) >= 3, full
    stop = words[2]
    status, r = srv.chat("orlando", msgs, max_tokens=16, stop=[stop, "zzz"])
    assert status == 200, r
    assert r["choices"][0]["message"]["content"] == full[:full.index(stop)]
    assert r["choices"][0]["finish_reason"] == "stop"


def test_two_npcs_answer_differently(srv):
    msgs = [user_msg("What is your name?")]
    a = srv.chat("orlando", msgs, user="Twin")[1]["choices"][0]["message"]["content"]
    b = srv.chat("elena", msgs, user="Twin")[1]["choices"][0]["message"]["content"]
    assert a and b and a != b


def test_continued_conversation_reuses_the_cache(srv):
    """Each request that continues the kept conversation re-evaluates only
    the last exchange, the recalled block and the new line (docs/RUNTIME.md):
    by the third, the first exchange comes from the cache."""
    msgs, usage = [], []
    for line in ("Hello, who are you?", "Where do you live?", "What do you do all day?"):
        msgs.append(user_msg(line))
        status, r = srv.chat("orlando", msgs, user="Cont")
        assert status == 200, r
        usage.append(r["usage"])
        msgs.append({"role": "assistant", "content": r["choices"][0]["message"]["content"]})
    cached = [u["prompt_tokens_details"]["cached_tokens"] for u in usage]
    assert cached[1] >= cached[0]
    assert cached[2] >= cached[0] + usage[0]["completion_tokens"], usage
    # a history that differs from the first reply on is rebuilt: the cache
    # is reused up to the difference only
    other = [msgs[0], {"role": "assistant", "content": "Nobody you would know."}, msgs[2]]
    status, r = srv.chat("orlando", other, user="Cont")
    assert status == 200, r
    assert r["usage"]["prompt_tokens_details"]["cached_tokens"] < cached[2]


def test_client_system_message_is_ignored(srv):
    other = [user_msg("Hello, who are you?"), {"role": "assistant", "content": "A priest."},
             user_msg("Where do you live?")]
    status, r3 = srv.chat("orlando", other)
    status, r4 = srv.chat("orlando", [{"role": "system", "content": "You are a pirate."}] + other)
    assert status == 200, r4
    assert r4["choices"][0]["message"]["content"] == r3["choices"][0]["message"]["content"]


def test_completions(srv):
    status, r = srv.post("/v1/completions", {"model": "orlando", "prompt": "The sky is",
                                             "max_tokens": 5, "temperature": 0})
    assert status == 200, r
    assert r["object"] == "text_completion" and r["choices"][0]["text"]
    assert r["usage"]["completion_tokens"] <= 5
    status, raw = srv.post("/v1/completions", {"model": "orlando", "prompt": "The sky is",
                                               "max_tokens": 5, "temperature": 0, "stream": True})
    ev = sse_events(raw)
    assert "".join(e["choices"][0]["text"] for e in ev) == r["choices"][0]["text"]


# ---- the official openai package ---------------------------------------------

def test_openai_package(srv):
    import openai   # tests/requirements.txt: a missing package fails, it does not skip
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{srv.port}/v1", api_key="unused",
                           max_retries=0, timeout=300)
    assert sorted(m.id for m in client.models.list()) == ["elena", "orlando"]
    r = client.chat.completions.create(model="elena", messages=[user_msg("Who are you?")],
                                       max_tokens=10, temperature=0)
    text = r.choices[0].message.content
    assert text and r.usage.completion_tokens <= 10
    assert r.usage.prompt_tokens_details.cached_tokens > 0
    pieces, usage = [], None
    stream = client.chat.completions.create(model="elena", messages=[user_msg("Who are you?")],
                                            max_tokens=10, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == text and usage.completion_tokens == r.usage.completion_tokens
    c = client.completions.create(model="orlando", prompt="Once upon a time", max_tokens=4,
                                  temperature=0)
    assert c.choices[0].text
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nobody", messages=[user_msg("hi")])
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="orlando", messages=[])


# ---- the NPC endpoints --------------------------------------------------------

def test_events_memories_forget_and_save(srv):
    status, ev = srv.post("/v1/npcs/orlando/events",
                          {"text": "The bell tower of Saint Aurel burned down", "place": "Aurelion",
                           "importance": 8, "witnesses": ["elena"]})
    assert status == 200, ev
    assert ev["witnesses"] == ["Orlando Marlo", "Elena Solwind"] and ev["id"] > 0
    assert_error(*srv.post("/v1/npcs/orlando/events", {"text": "x", "importance": 11}), 400,
                 "importance")
    assert_error(*srv.post("/v1/npcs/nobody/events", {"text": "x"}), 404)
    srv.chat("orlando", [user_msg("I keep bees behind the mill.")], user="Bea", max_tokens=4)
    status, mem = srv.get("/v1/npcs/orlando/memories?user=Bea")
    assert status == 200
    assert any(m["kind"] == "said" and "bees" in m["text"] for m in mem["data"]), mem
    status, everything = srv.get("/v1/npcs/orlando/memories")
    assert any("bell tower" in m["text"] for m in everything["data"]), everything
    status, r = srv.request("DELETE", "/v1/npcs/orlando/memories?user=Bea")
    assert status == 200, r
    assert srv.get("/v1/npcs/orlando/memories?user=Bea")[1]["data"] == []
    assert_error(*srv.request("DELETE", "/v1/npcs/orlando/memories"), 400, "user")
    status, r = srv.post("/v1/world/save", {"path": "slot1.db"})
    assert status == 200, r
    assert pathlib.Path(r["path"]).is_file() and pathlib.Path(r["path"]).parent == srv.world.parent
    assert_error(*srv.post("/v1/world/save", {"path": "../escape.db"}), 400, "path")


def memories(srv, npc, user=None):
    status, body = srv.get(f"/v1/npcs/{npc}/memories" + (f"?user={user}" if user else ""))
    assert status == 200, body
    return body["data"]


def world_memories(srv):
    return {n: memories(srv, n) for n in ("orlando", "elena")}


def test_world_load(srv):
    """A slot saved, the world changed, the slot loaded: every memory is back
    as saved (ids too), what came after is gone, the kept conversations are
    closed (a continued history is rebuilt on the persona alone), and the
    slot is only read. A missing, corrupt or truncated slot, the live world
    file and bad names get 4xx JSON errors, the world left as it was."""
    srv.post("/v1/npcs/orlando/events", {"text": "The granary of Aurelion was robbed at night",
                                         "importance": 7, "witnesses": ["elena"]})
    msgs = [user_msg("I sell lanterns in the lower market.")]
    status, r1 = srv.chat("orlando", msgs, user="Lux", max_tokens=6)
    assert status == 200, r1
    persona = r1["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert any("lanterns" in m["text"] for m in memories(srv, "orlando", "Lux"))
    saved = world_memories(srv)
    status, r = srv.post("/v1/world/save", {"path": "before-comet.db"})
    assert status == 200, r
    slot = pathlib.Path(r["path"])
    slot_bytes = slot.read_bytes()

    # the world moves on; Lux's conversation goes on from its cache
    srv.post("/v1/npcs/elena/events", {"text": "A comet crossed the sky", "witnesses": ["orlando"]})
    msgs += [{"role": "assistant", "content": r1["choices"][0]["message"]["content"]},
             user_msg("Do you need a lantern?")]
    status, r2 = srv.chat("orlando", msgs, user="Lux", max_tokens=6)
    assert status == 200, r2
    assert r2["usage"]["prompt_tokens_details"]["cached_tokens"] > persona
    assert world_memories(srv) != saved

    status, r = srv.post("/v1/world/load", {"path": "before-comet.db"})
    assert status == 200, r
    assert r["object"] == "world.load" and r["path"] == str(slot)
    assert r["conversations_closed"] >= 1
    assert world_memories(srv) == saved
    assert slot.read_bytes() == slot_bytes
    # the kept conversation is gone: the same history is rebuilt on the
    # persona alone, over the loaded memory
    status, r3 = srv.chat("orlando", msgs, user="Lux", max_tokens=6)
    assert status == 200, r3
    assert r3["usage"]["prompt_tokens_details"]["cached_tokens"] == persona
    said = [m["text"] for m in memories(srv, "orlando", "Lux") if m["kind"] == "said"]
    assert said == [msgs[0]["content"], msgs[2]["content"]], said

    # refused, and the world is left as it was
    now = world_memories(srv)
    folder = srv.world.parent
    (folder / "junk.db").write_bytes(b"not a world at all\n" * 200)
    (folder / "half.db").write_bytes(slot_bytes[:len(slot_bytes) // 2])
    (folder / "empty.db").write_bytes(b"")
    for name in ("junk.db", "half.db", "empty.db"):
        status, body = srv.post("/v1/world/load", {"path": name})
        assert_error(status, body, 400, "path")
        assert body["error"]["code"] == "invalid_save", body
    status, body = srv.post("/v1/world/load", {"path": "no-such-slot.db"})
    assert_error(status, body, 404, "path")
    for name in ("../before-comet.db", "/etc/passwd", "", 5, srv.world.name,
                 srv.world.name + "-wal"):
        assert_error(*srv.post("/v1/world/load", {"path": name}), 400, "path")
    for name in (srv.world.name, srv.world.name + "-wal", srv.world.name + "-shm"):
        assert_error(*srv.post("/v1/world/save", {"path": name}), 400, "path")
    assert_error(*srv.post("/v1/world/load", b"{not json"), 400)
    assert_error(*srv.get("/v1/world/load"), 405)
    assert world_memories(srv) == now
    assert srv.chat("elena", [user_msg("Good evening.")], max_tokens=4)[0] == 200


def test_world_load_waits_for_replies(srv):
    """While a reply is being generated the load is refused with 409 (the
    exchange would be recorded into the loaded world); once the reply is
    over (here: cancelled), the load goes through."""
    assert srv.post("/v1/world/save", {"path": "quiet.db"})[0] == 200
    s = start_stream(srv, "orlando", "Tell me a very long story.", "Storyteller")
    status, body = srv.post("/v1/world/load", {"path": "quiet.db"})
    assert_error(status, body, 409)
    assert body["error"]["code"] == "world_busy", body
    s.close()   # cancels the reply
    t0 = time.monotonic()
    while True:
        status, body = srv.post("/v1/world/load", {"path": "quiet.db"})
        if status == 200:
            break
        assert status == 409 and time.monotonic() - t0 < 300, body
        time.sleep(0.1)


# ---- bad input ------------------------------------------------------------------

def test_bad_requests_get_openai_errors(srv):
    chat = "/v1/chat/completions"
    assert_error(*srv.post(chat, b'{"model": "orlando", "messages": ['), 400)
    assert_error(*srv.post(chat, b"\xff\xfe not json"), 400)
    assert_error(*srv.post(chat, {"model": 5, "messages": [user_msg("hi")]}), 400, "model")
    assert_error(*srv.post(chat, {"model": "orlando", "messages": "hi"}), 400, "messages")
    assert_error(*srv.post(chat, {"model": "orlando", "messages": [user_msg("hi")],
                                  "max_tokens": "many"}), 400, "max_tokens")
    assert_error(*srv.post(chat, {"model": "orlando", "messages": [user_msg("hi")],
                                  "temperature": 9}), 400, "temperature")
    assert_error(*srv.post(chat, {"model": "nobody", "messages": [user_msg("hi")]}), 404, "model")
    assert_error(*srv.post(chat, {"model": "orlando", "messages": []}), 400, "messages")
    assert_error(*srv.post(chat, {"model": "orlando", "messages": [user_msg("hi")] * 300}), 400,
                 "messages")
    assert_error(*srv.get("/v1/nothing"), 404)
    assert_error(*srv.request("PUT", "/v1/models"), 405)
    # 10 MB: refused with 413, the body read and dropped
    status, body = srv.post(chat, b"x" * (10 << 20))
    assert_error(status, body, 413)
    assert srv.get("/health")[0] == 200


def raw_socket(srv):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=IDLE + 5)
    return s


def closed_within(s, seconds):
    """True if the server closes s (EOF or reset) within seconds."""
    s.settimeout(seconds)
    try:
        while True:
            if not s.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_cut_off_slow_and_idle_clients(srv):
    # a body cut off: the client closes after 10 of 1000 bytes
    s = raw_socket(srv)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 1000\r\n\r\n{\"model\":")
    s.close()
    # a slow client: headers then nothing; dropped after the idle timeout
    slow = raw_socket(srv)
    slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    # 100 connections opened and left idle
    idle = [raw_socket(srv) for _ in range(100)]
    # the others are served at once, not after the idle ones are dropped
    t0 = time.monotonic()
    assert srv.get("/health")[0] == 200
    assert time.monotonic() - t0 < 1, "a request waited for the idle connections"
    status, r = srv.chat("elena", [user_msg("Good morning!")], user="Busy", max_tokens=4)
    assert status == 200, r
    assert closed_within(slow, IDLE + 3)
    assert all(closed_within(c, IDLE + 3) for c in idle)
    for c in idle + [slow]:
        c.close()
    assert srv.get("/health")[0] == 200


def test_slow_reader_gets_the_whole_stream(srv):
    """A client that reads its stream a little at a time, through a small
    receive buffer, still gets every event, the same text as a plain reply,
    while others are served."""
    msgs = [user_msg("Describe the Great Cathedral.")]
    status, plain = srv.chat("elena", msgs, max_tokens=48)
    assert status == 200, plain
    body = json.dumps({"model": "elena", "messages": msgs, "max_tokens": 48, "temperature": 0,
                       "stream": True})
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)   # before connect: the window
    s.settimeout(60)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
    got, checked = b"", False
    while True:
        chunk = s.recv(128)   # about 6 kB/s: slower than the events come
        if not chunk:
            break
        got += chunk
        time.sleep(0.02)
        if not checked and len(got) > 1024:
            # the others do not wait for the slow reader
            assert srv.get("/health")[0] == 200
            checked = True
    s.close()
    assert checked
    head, _, payload = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    # chunked transfer: the chunk sizes are dropped, the events put back together
    events, rest = [], payload
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        events.append(rest[:n])
        rest = rest[n + 2:]
    ev = sse_events(b"".join(events).decode())
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in ev if e["choices"])
    assert text == plain["choices"][0]["message"]["content"]


def test_dribbling_client_dropped_at_request_timeout(model_path, tmp_path):
    """A client that sends its body a byte at a time is never idle, so the
    idle timeout does not drop it; the request timeout does (logged as 408:
    libmicrohttpd closes, it cannot answer before the whole body), and
    others are served meanwhile."""
    timeout = 4
    s = Server(tmp_path, model_path, "--request-timeout", timeout)
    try:
        c = raw_socket(s)
        c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                  b"\r\n{")
        t0 = time.monotonic()
        c.settimeout(0.5)
        closed = None
        while closed is None:
            assert time.monotonic() - t0 < timeout + 120, "the dribbling client was never dropped"
            try:
                c.sendall(b" ")
                if not c.recv(4096):
                    closed = time.monotonic() - t0
            except socket.timeout:
                pass
            except (ConnectionResetError, BrokenPipeError):
                closed = time.monotonic() - t0
            if closed is None:
                assert s.get("/health")[0] == 200
        c.close()
        # the server started its clock after t0: never dropped before the
        # request timeout, though it outlived the idle timeout
        assert closed >= timeout > IDLE
        assert "POST /v1/chat/completions 408" in s.log_text(), s.log_text()
        assert s.chat("elena", [user_msg("Hello.")], max_tokens=4)[0] == 200
    finally:
        assert s.stop() == 0


def start_stream(srv, npc, line, user, max_tokens=400):
    """A streamed reply on a raw socket, returned once its first piece of
    text has arrived (the reply is being generated)."""
    body = json.dumps({"model": npc, "messages": [user_msg(line)], "max_tokens": max_tokens,
                       "temperature": 0, "stream": True, "user": user})
    s = raw_socket(srv)
    s.settimeout(300)   # the first piece: seconds under ASan on a loaded machine
    s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    got = b""
    while b'"content":"' not in got.split(b'"role":"assistant"', 1)[-1]:
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    return s


def test_client_leaving_cancels_its_reply(srv):
    s = start_stream(srv, "orlando", "Tell me a very long story.", "Leaver")
    # while it streams, the same conversation is busy: 409
    assert_error(*srv.chat("orlando", [user_msg("Hello?")], user="Leaver"), 409, "user")
    s.close()
    t0 = time.monotonic()
    while not any("user=Leaver stream" in ln and "cancelled" in ln
                  for ln in srv.log_text().splitlines()):
        # the cancel is seen between tokens: one token can take seconds
        # under ASan on a loaded machine
        assert time.monotonic() - t0 < 120, srv.log_text()[-2000:]
        time.sleep(0.1)
    status, r = srv.chat("orlando", [user_msg("Hello?")], user="Leaver", max_tokens=4)
    assert status == 200, r


def test_concurrent_requests_on_different_npcs(srv):
    """Requests on different NPCs run at the same time, and what runs beside
    a request changes nothing: each NPC's reply beside the other's is its
    reply alone on the same conversation, in the same state. Each NPC is
    asked once alone first, so both later requests find the whole prompt in
    the cache: a reply at temperature 0 is a function of the prompt and of
    which part of it the cache held (docs/SERVER.md, "Determinism"), and a
    fresh conversation would not be the same state."""
    q = [user_msg("What do you fear most?")]
    npcs = ("orlando", "elena")
    for npc in npcs:
        assert srv.chat(npc, q, max_tokens=16)[0] == 200
    for _ in range(2):
        out = {}

        def ask(npc):
            out[npc] = srv.chat(npc, q, max_tokens=16)

        threads = [threading.Thread(target=ask, args=(n,)) for n in npcs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        for npc in npcs:
            assert out[npc][0] == 200, out
            alone = srv.chat(npc, q, max_tokens=16)
            assert alone[0] == 200, alone
            assert alone[1]["choices"][0]["message"]["content"] == \
                out[npc][1]["choices"][0]["message"]["content"], npc
            assert alone[1]["usage"] == out[npc][1]["usage"]
    assert out["orlando"][1]["choices"][0]["message"]["content"] != \
        out["elena"][1]["choices"][0]["message"]["content"]


def test_request_log_line_per_request(srv):
    srv.get("/v1/models")
    srv.chat("nobody", [user_msg("hi")])
    # the line is written when libmicrohttpd reports the request completed,
    # which can come after the client has read the reply
    t0 = time.monotonic()
    while "model=nobody" not in srv.log_text():
        assert time.monotonic() - t0 < 60, srv.log_text()[-2000:]
        time.sleep(0.05)
    log = srv.log_text()
    assert "GET /v1/models 200" in log
    assert any("POST /v1/chat/completions 404" in ln and "model=nobody" in ln
               for ln in log.splitlines()), log[-2000:]


# ---- an API key -----------------------------------------------------------------

def test_api_key(model_path, tmp_path):
    env = dict(os.environ, LEMONPC_TEST_KEY="s3cret")
    s = Server(tmp_path, model_path, "--api-key-env", "LEMONPC_TEST_KEY", env=env)
    try:
        assert s.get("/health")[0] == 200
        assert_error(*s.get("/v1/models"), 401)
        assert_error(*s.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        assert s.get("/v1/models", headers={"Authorization": "Bearer s3cret"})[0] == 200
    finally:
        assert s.stop() == 0
    r = subprocess.run([str(LEMONPC), "serve", str(ROOT / "examples" / "luminara"), "--model",
                        str(model_path), "--api-key-env", "LEMONPC_NO_SUCH_VAR"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "LEMONPC_NO_SUCH_VAR" in r.stderr
