"""A fake OpenAI-compatible chat-completions server for the teacher tests.

Runs on 127.0.0.1 on a free port, in a thread of the test process. What it
does with a request is chosen by a tag in the last message's content:

    [[ok]]            answer at once (also the default without a tag)
    [[NAME]]          misbehave that way on every attempt
    [[NAMExK]]        misbehave on the first K attempts, then answer

NAME is one of: slow (answer after `slow_s` seconds, or never if the server
closes first), 429 (Retry-After:
`retry_after` seconds), 500, 503, 400, 401, malformed (a body that is not
JSON), noshape (JSON without "choices"), empty (empty content), drop (send
headers and half the body, then close), hangup (close without a word).

Attempts are counted per distinct content. Every request is logged as
(content, monotonic time, what was done); `max_active` is the most requests
handled at the same time, the concurrency the client really used;
`max_conns` the most TCP connections open at once; `auth` the Authorization
header of every request, in arrival order.

Two ways to make timing-dependent tests deterministic:
- `rendezvous=N`: requests wait (up to `wait_s`) until N are active at once,
  until that has happened once. A client that really sends N requests
  concurrently passes straight through; one that does not leaves
  `max_active` below N after the wait, and the test fails instead of hanging.
- `hold_after=N`: requests after the first N wait (up to `wait_s`) until the
  test sets `gate`; `held` counts them. A test interrupts a run while it is
  surely in the middle, however slow the machine is.
"""
import http.server
import json
import re
import socket
import threading
import time

TAG = re.compile(r"\[\[([a-z0-9]+?)(?:x(\d+))?\]\]")


class FakeOpenAI:
    def __init__(self, delay_s=0.0, slow_s=5.0, retry_after=1, api_key=None, rendezvous=None,
                 hold_after=None, wait_s=30.0, responder=None):
        self.delay_s = delay_s          # every good answer takes this long
        self.slow_s = slow_s
        self.retry_after = retry_after
        self.api_key = api_key          # when set, requests must carry it
        self.responder = responder      # request body -> the answer's content ("reply to: ..." if None)
        self.lock = threading.Lock()
        self.attempts = {}
        self.log = []
        self.active = 0
        self.max_active = 0
        self.conns = 0                  # open TCP connections (keep-alive ones too)
        self.max_conns = 0
        self.bodies = []
        self.auth = []
        self.rendezvous = rendezvous
        self.met = threading.Event()
        self.hold_after = hold_after
        self.gate = threading.Event()
        self.held = 0
        self.seen = 0                   # requests received
        self.wait_s = wait_s
        self.closing = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                with fake.lock:
                    fake.conns += 1
                    fake.max_conns = max(fake.max_conns, fake.conns)

            def finish(self):
                try:
                    super().finish()
                finally:
                    with fake.lock:
                        fake.conns -= 1

            def do_POST(self):
                with fake.lock:
                    fake.active += 1
                    fake.max_active = max(fake.max_active, fake.active)
                    fake.seen += 1
                    hold = fake.hold_after is not None and fake.seen > fake.hold_after
                    if hold:
                        fake.held += 1
                    if fake.rendezvous is not None and fake.active >= fake.rendezvous:
                        fake.met.set()
                if fake.rendezvous is not None:
                    fake.met.wait(fake.wait_s)
                    fake.met.set()      # met, or given up on: nobody waits again
                if hold:
                    fake.gate.wait(fake.wait_s)
                try:
                    fake._handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with fake.lock:
                        fake.active -= 1

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.closing.set()
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- one request ---------------------------------------------------

    def _send(self, h, status, body, headers=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()

    def _handle(self, h):
        n = int(h.headers.get("Content-Length", "0"))
        raw = h.rfile.read(n)
        if h.path != "/v1/chat/completions":
            return self._send(h, 404, {"error": {"message": f"no route {h.path}"}})
        try:
            req = json.loads(raw)
            content = req["messages"][-1]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return self._send(h, 400, {"error": {"message": f"bad request: {e}"}})
        with self.lock:
            self.bodies.append(req)
            self.auth.append(h.headers.get("Authorization"))
            k = self.attempts.get(content, 0) + 1
            self.attempts[content] = k
        if self.api_key is not None and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            self._note(content, "401-key")
            return self._send(h, 401, {"error": {"message": "Incorrect API key provided"}})
        m = TAG.search(content)
        mode, times = (m.group(1), m.group(2)) if m else ("ok", None)
        if times is not None and k > int(times):
            mode = "ok"
        self._note(content, mode)
        if mode == "ok":
            if self.delay_s:
                time.sleep(self.delay_s)
            return self._send(h, 200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "model": req.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant",
                                         "content": self.responder(req) if self.responder
                                         else f"reply to: {content}"}}]})
        if mode == "slow":
            if self.closing.wait(self.slow_s):
                return None
            return self._send(h, 200, {"choices": [{"message": {"content": "too late"}}]})
        if mode == "429":
            return self._send(h, 429, {"error": {"message": "Rate limit reached, slow down",
                                                 "type": "rate_limit"}},
                              [("Retry-After", str(self.retry_after))])
        if mode in ("500", "503", "400", "401"):
            return self._send(h, int(mode), {"error": {"message": f"fake failure {mode}"}})
        if mode == "malformed":
            return self._send(h, 200, b'{"choices": [{"message": {"content": "half')
        if mode == "noshape":
            return self._send(h, 200, {"object": "chat.completion", "result": "no choices here"})
        if mode == "empty":
            return self._send(h, 200, {"choices": [{"message": {"role": "assistant", "content": ""}}]})
        if mode == "drop":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "400")
            h.end_headers()
            h.wfile.write(b'{"choices": [{"message": ')
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return None
        if mode == "hangup":
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return None
        return self._send(h, 500, {"error": {"message": f"fake server: unknown mode {mode}"}})

    def _note(self, content, what):
        with self.lock:
            self.log.append((content, time.monotonic(), what))

    def times_of(self, content):
        with self.lock:
            return [(t, w) for c, t, w in self.log if c == content]


if __name__ == "__main__":
    with FakeOpenAI() as f:
        print(f.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
