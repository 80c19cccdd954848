"""Server load test: `lemonpc serve` against llama-server (llama-cpp-python's
OpenAI-compatible server, `python3 -m llama_cpp.server`) on the same model,
the same requests and the same threads, driven from this process over
loopback. Prints Markdown tables (BENCHMARKS.md, "Server") and writes
bench/out/serve.json (serve-quick.json with --quick). Run by
`make bench-serve`.

The workload: --concurrency clients at once, each a player (Mira, Tomas, ...)
sending single-turn streamed requests, greedy, at most --tokens tokens,
cycling over --npcs NPCs and a few lines; --requests in all per server
(bounded: a server that has not finished within --max-seconds is stopped
taking new requests, and the run reports how many it served).

- Ours: `lemonpc serve` on a world folder holding the NPCs' sheets (the
  luminara examples, and for more than two, copies under other names so
  that every persona differs), each NPC with the full persona, no adapter.
  A request is POST /v1/chat/completions {"model": npc, "user": player,
  "messages": [line]}: the server renders the persona, the scene, what the
  NPC recalls (lore, what the player said before) and the line.
- llama-server: the one model, POST /v1/completions with the prompt our
  runtime renders for the same NPC, player and line (bench/prompt_tokens,
  detokenized with llama.cpp's vocabulary; llama-server tokenizes it back to
  the same ids, special tokens included), --n_threads and --n_threads_batch
  the same, --interrupt_requests False (else a new request cuts off the
  stream being generated). It serves one request at a time; a waiting
  request's time to first token includes its wait, as a client sees it.
  It gets no recalled block, so its prompts are a little shorter: the
  tables give each side's mean prompt tokens.

llama-server runs twice: as it starts ("llama"), and with --cache True
("llama-cache": llama-cpp-python keeps the state after each prompt in RAM,
up to 2 GiB, and restores the longest matching prefix: its way to keep a
persona evaluated).

The servers run side by side, idle while another is measured, and are
measured in turn, half of the requests at a time (ours, llama, llama-cache,
then again), so that a change of the machine's load hits all. Before that,
a warm-up that is not counted: ours and llama-cache get one request per NPC
and player (ours keeps a conversation, a KV cache, per pair, up to
--max-conversations; llama-cache keeps states by prompt), plain llama
--warmup requests (it keeps nothing per pair). Each request's time to first
token (the first piece of text, not the role event ours sends at once) and
total time are taken on this side of the socket. The server's RSS is
sampled every 0.2 s from /proc: "growth" is the RSS at the end less the RSS
right after the warm-up.
"""
import argparse
import http.client
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = ROOT / os.environ.get("LEMONPC_BUILD", "build")
OUT = ROOT / "bench" / "out"
WORLD = ROOT / "examples" / "luminara"
PLAYERS = ["Mira", "Tomas", "Ines", "Aldo", "Bea", "Cato", "Dara", "Enzo"]
LINES = [
    "Good morning! Who are you?",
    "What do you think of the Unblessed?",
    "Tell me about the Great Cathedral.",
    "Have you heard any news from the capital?",
    "What do you fear most?",
    "Where can I find a place to sleep tonight?",
]
# more NPCs than the example sheets: copies under other names (every name
# in the sheet replaced, so each persona differs from its first tokens)
RENAMES = [("orlando", "Orlando", "Dario"), ("elena", "Elena", "Mara"),
           ("orlando", "Orlando", "Tullio"), ("elena", "Elena", "Livia")]
START_TIMEOUT = 300
NAMES = {"ours": "lemonpc serve", "llama": "llama-server",
         "llama-cache": "llama-server --cache True"}


class BenchError(Exception):
    pass


def run(cmd, what):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode:
        raise BenchError(f"{what} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return r.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def pct(xs, p):
    """Nearest-rank percentile."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


# ---- the servers ------------------------------------------------------------------

class Server:
    name = ""

    def __init__(self, cmd, port, log, env=None):
        self.port = port
        self.log_path = log
        self.log = open(log, "w")
        self.proc = subprocess.Popen([str(c) for c in cmd], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)
        self.samples = []   # (monotonic time, RSS MB)
        self._stop = threading.Event()
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited at start:\n{log.read_text()[-3000:]}")
            if time.monotonic() - t0 > START_TIMEOUT:
                self.close()
                raise BenchError(f"{self.name} did not come up in {START_TIMEOUT} s")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/v1/models")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self):
        while not self._stop.wait(0.2):
            r = rss_mb(self.proc.pid)
            if r is not None:
                self.samples.append((time.monotonic(), r))

    def close(self):
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Ours(Server):
    name = "lemonpc serve"

    def __init__(self, args, model, world, tmp):
        port = free_port()
        super().__init__([BUILD / "lemonpc", "serve", world, "--model", model, "--port", port,
                          "--world-file", tmp / "world.db", "-t", args.threads,
                          "--max-conversations", 256], port, tmp / "ours.log")

    def request(self, npc, player, line, prompt, tokens):
        return "/v1/chat/completions", {
            "model": npc, "user": player, "messages": [{"role": "user", "content": line}],
            "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}


class Llama(Server):
    name = "llama-server"

    def __init__(self, args, model, tmp, cache=False):
        port = free_port()
        self.cache = cache
        self.prompt_ids = {}   # the prompt text -> its token count (llama-server streams no usage)
        # llama.cpp's OpenMP threads spin between ops by default: passive,
        # so that the idle server does not take the cores from the other
        env = dict(os.environ, OMP_WAIT_POLICY="passive")
        super().__init__([sys.executable, "-m", "llama_cpp.server", "--model", model,
                          "--host", "127.0.0.1", "--port", port, "--n_ctx", 2048,
                          "--n_threads", args.threads, "--n_threads_batch", args.threads,
                          "--interrupt_requests", "False", "--verbose", "False",
                          *(["--cache", "True"] if cache else [])],
                         port, tmp / f"llama{'-cache' if cache else ''}.log", env=env)

    def request(self, npc, player, line, prompt, tokens):
        return "/v1/completions", {
            "model": "m", "prompt": prompt, "max_tokens": tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}


def one_request(srv, path, body, timeout):
    """Sends one streamed request; returns its record (times from send)."""
    rec = {"ok": False, "ttft": None, "total": None, "completion": 0, "prompt": None,
           "pieces": 0, "error": None}
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    try:
        c.request("POST", path, body=json.dumps(body),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            rec["error"] = f"HTTP {r.status}: {r.read()[:300]!r}"
            return rec
        done = False
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            ev = json.loads(data)
            if "error" in ev:
                rec["error"] = ev["error"].get("message", "error event")
                return rec
            if ev.get("usage"):
                rec["completion"] = ev["usage"]["completion_tokens"]
                rec["prompt"] = ev["usage"]["prompt_tokens"]
            for ch in ev.get("choices") or []:
                text = ch.get("text") if "text" in ch else (ch.get("delta") or {}).get("content")
                if text:
                    rec["pieces"] += 1
                    if rec["ttft"] is None:
                        rec["ttft"] = time.monotonic() - t0
        rec["total"] = time.monotonic() - t0
        if not done:
            rec["error"] = "the stream ended without [DONE]"
        elif rec["ttft"] is None:
            rec["ttft"] = rec["total"]   # an empty reply: its first token was its end
            rec["ok"] = True
        else:
            rec["ok"] = True
        if not rec["completion"]:
            rec["completion"] = rec["pieces"]
        return rec
    except (OSError, http.client.HTTPException, ValueError) as e:
        rec["error"] = f"{type(e).__name__}: {e}"
        return rec
    finally:
        c.close()


def run_phase(srv, work, prompts, args, deadline):
    """work: per client, its list of (npc, player, line); all clients at
    once. Returns (records, wall seconds, stopped early)."""
    recs, lock = [], threading.Lock()
    stopped = threading.Event()

    def client(items):
        for npc, player, line in items:
            if time.monotonic() > deadline:
                stopped.set()
                return
            path, body = srv.request(npc, player, line,
                                     prompts.get((npc, player, line), (None,))[0], args.tokens)
            rec = one_request(srv, path, body, args.request_timeout)
            rec.update(npc=npc, player=player)
            if rec["prompt"] is None and isinstance(srv, Llama):
                rec["prompt"] = prompts[(npc, player, line)][1]
            with lock:
                recs.append(rec)

    t0 = time.monotonic()
    ths = [threading.Thread(target=client, args=(w,)) for w in work]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return recs, time.monotonic() - t0, stopped.is_set()


# ---- the workload -------------------------------------------------------------------

def make_world(tmp, n_npcs):
    """A world folder with n_npcs sheets; returns it and the NPC ids."""
    w = tmp / "world"
    (w / "characters").mkdir(parents=True)
    shutil.copy(WORLD / "world.md", w / "world.md")
    ids = []
    for stem in ("orlando", "elena")[:n_npcs]:
        shutil.copy(WORLD / "characters" / f"{stem}.md", w / "characters" / f"{stem}.md")
        ids.append(stem)
    for src, old, new in RENAMES[:max(0, n_npcs - 2)]:
        text = (WORLD / "characters" / f"{src}.md").read_text()
        text = re.sub(rf"\b{old}\b", new, text)
        (w / "characters" / f"{new.lower()}.md").write_text(text)
        ids.append(new.lower())
    return w, ids


def workload(ids, n_clients, n_requests, offset=0):
    """Per client, its requests: request k of the run goes to client k mod
    n_clients, to NPC k mod len(ids), with line k mod len(LINES) (mixed so
    that a client does not always ask the same NPC the same line)."""
    work = [[] for _ in range(n_clients)]
    for k in range(offset, offset + n_requests):
        cl = k % n_clients
        work[cl].append((ids[(k + k // len(ids)) % len(ids)], PLAYERS[cl % len(PLAYERS)],
                         LINES[(k // 2) % len(LINES)]))
    return work


def llama_prompts(model, world, items, tmp):
    """The text of the prompt our runtime renders for each (npc, player,
    line) without recall: bench/prompt_tokens' ids, detokenized; and their
    count."""
    import llama_cpp
    vocab = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    out = {}
    for npc, player, line in sorted(set(items)):
        ids = [int(x) for x in run([BUILD / "bench" / "prompt_tokens", model,
                                    world / "characters" / f"{npc}.md", "full", line, player],
                                   "prompt_tokens").split()]
        text = vocab.detokenize(ids, special=True).decode()
        back = vocab.tokenize(text.encode(), add_bos=False, special=True)
        if back != ids:
            raise BenchError(f"the prompt of {npc}/{player} does not tokenize back to its ids")
        out[(npc, player, line)] = (text, len(ids))
    vocab.close()
    return out


# ---- the report -------------------------------------------------------------------

def summarize(srv, recs, wall, warm_end):
    ok = [r for r in recs if r["ok"]]
    errors = [r["error"] for r in recs if not r["ok"]]
    rss = [r for t, r in srv.samples if t >= warm_end]
    after_warmup = rss[0] if rss else float("nan")
    at_end = statistics.mean(r for t, r in srv.samples[-5:]) if srv.samples else float("nan")
    toks = sum(r["completion"] for r in ok)
    prompts = [r["prompt"] for r in ok if r["prompt"]]
    return {
        "requests": len(recs), "ok": len(ok), "errors": errors[:10], "n_errors": len(errors),
        "wall_s": wall, "req_per_s": len(ok) / wall if wall else 0,
        "tok_per_s": toks / wall if wall else 0, "completion_tokens": toks,
        "mean_completion": toks / len(ok) if ok else 0,
        "mean_prompt": statistics.mean(prompts) if prompts else None,
        "ttft": {f"p{p}": pct([r["ttft"] for r in ok], p) for p in (50, 90, 99)},
        "total": {f"p{p}": pct([r["total"] for r in ok], p) for p in (50, 90, 99)},
        "rss_mb": {"after_warmup": after_warmup, "end": at_end,
                   "peak": max(rss) if rss else float("nan"),
                   "growth": at_end - after_warmup},
    }


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
            "load_avg_at_start": os.getloadavg(), "utc": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                       time.gmtime())}


def ratio(a, b):
    return f"{a / b:.2f}x" if b else "n/a"


def report(res, args):
    mc = res["machine"]
    la = " / ".join(f"{x:.2f}" for x in mc["load_avg_at_start"])
    le = " / ".join(f"{x:.2f}" for x in res["load_avg_at_end"])
    print(f"\nMachine: {mc['cpu']}, {mc['cpus']} CPUs, {mc['os']}; load average (1/5/15 min) "
          f"{la} at the start, {le} at the end; {mc['utc']}"
          f"{' (QUICK RUN: not for BENCHMARKS.md)' if args.quick else ''}")
    print(f"Command: {res['command']}")
    print(f"Model: {res['model']}; {args.threads} threads on both sides; {len(res['npcs'])} NPCs "
          f"({', '.join(res['npcs'])}), {args.concurrency} clients at once, greedy, at most "
          f"{args.tokens} tokens per reply, streamed\n")
    keys = [k for k in NAMES if k in res["servers"]]
    sv = res["servers"]
    refs = [k for k in keys if k != "ours"] if "ours" in keys else []
    rows = [("requests served / sent", lambda s: f"{s['ok']} / {s['requests']}", None),
            ("errors", lambda s: f"{s['n_errors']}", None),
            ("mean prompt tokens", lambda s: f"{s['mean_prompt']:.0f}" if s["mean_prompt"] else "-",
             None),
            ("mean completion tokens", lambda s: f"{s['mean_completion']:.1f}", None)]
    for k in ("ttft", "total"):
        for p in ("p50", "p90", "p99"):
            name = f"{'time to first token' if k == 'ttft' else 'total time'} {p}, ms"
            rows.append((name, lambda s, k=k, p=p: f"{s[k][p] * 1e3:.0f}",
                         lambda o, r, k=k, p=p: ratio(r[k][p], o[k][p])))
    rows += [("throughput, requests/s", lambda s: f"{s['req_per_s']:.2f}",
              lambda o, r: ratio(o["req_per_s"], r["req_per_s"])),
             ("throughput, completion tokens/s", lambda s: f"{s['tok_per_s']:.1f}",
              lambda o, r: ratio(o["tok_per_s"], r["tok_per_s"])),
             ("RSS after warm-up, MB", lambda s: f"{s['rss_mb']['after_warmup']:.0f}", None),
             ("RSS at the end (peak), MB",
              lambda s: f"{s['rss_mb']['end']:.0f} ({s['rss_mb']['peak']:.0f})", None),
             ("RSS growth after warm-up, MB", lambda s: f"{s['rss_mb']['growth']:+.1f}", None)]
    print("| | " + " | ".join(NAMES[k] for k in keys) + "".join(
        f" | ours vs {NAMES[k]}" for k in refs) + " |")
    print("|---" * (1 + len(keys) + len(refs)) + "|")
    for name, fmt, rat in rows:
        cells = [fmt(sv[k]) for k in keys]
        cells += [f"**{rat(sv['ours'], sv[k])}**" if rat else "" for k in refs]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nRatios: a latency's is the other's time / ours; a throughput's, ours / the "
          "other's (above 1: ours is better).")
    for key, s in res["servers"].items():
        if s["n_errors"]:
            print(f"\n{key}: {s['n_errors']} errors, e.g. {s['errors'][0]}")
        if s.get("stopped"):
            print(f"\n{key}: stopped at --max-seconds after {s['requests']} requests")


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 8 requests, 8 tokens, 2 warm-up (options given beside it win)")
    ap.add_argument("--model", help="the GGUF both serve (default: the fetched "
                    "SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--servers", default="ours,llama,llama-cache",
                    help="which: ours, llama (llama-server as it starts), llama-cache (with "
                         "--cache True: states kept by prompt in RAM); default: all three")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--npcs", type=int, default=4, help="NPCs, 1 to 6 (default 4)")
    ap.add_argument("--concurrency", type=int, default=4, help="clients at once (default 4)")
    ap.add_argument("--requests", type=int, default=48, help="measured requests per server")
    ap.add_argument("--warmup", type=int, default=4, help="requests per server not counted")
    ap.add_argument("--tokens", type=int, default=32, help="most tokens per reply")
    ap.add_argument("--max-seconds", type=float, default=300,
                    help="per server: no new request after this long measuring")
    ap.add_argument("--request-timeout", type=float, default=300)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder under bench/out")
    args = ap.parse_args()
    if args.quick:
        given = {a.split("=")[0] for a in sys.argv[1:] if a.startswith("--")}
        for k, v in {"requests": 8, "tokens": 8, "warmup": 2}.items():
            if "--" + k not in given:
                setattr(args, k, v)
    servers = [s for s in args.servers.split(",") if s]
    if not servers or any(s not in NAMES for s in servers) or len(set(servers)) < len(servers):
        ap.error(f"--servers: some of {', '.join(NAMES)}, got {args.servers!r}")
    if not 1 <= args.npcs <= 2 + len(RENAMES):
        ap.error(f"--npcs: 1 to {2 + len(RENAMES)}")
    if not 1 <= args.concurrency <= len(PLAYERS):
        ap.error(f"--concurrency: 1 to {len(PLAYERS)}")
    for exe in (BUILD / "lemonpc", BUILD / "bench" / "prompt_tokens"):
        if not exe.exists():
            print(f"bench_serve: {exe} missing: run `make bench-serve`", file=sys.stderr)
            return 1
    if any(k.startswith("llama") for k in servers):
        try:
            import llama_cpp.server  # noqa: F401  (the [server] extras: fastapi, uvicorn, ...)
            import sse_starlette  # noqa: F401
        except ImportError as e:
            print(f"bench_serve: llama-cpp-python's server is not installed ({e}): "
                  "pip install -r tests/requirements.txt (scripts/install_test_deps.sh)",
                  file=sys.stderr)
            return 1
    command = "make bench-serve" + (f" BENCH_ARGS=\"{' '.join(sys.argv[1:])}\""
                                    if sys.argv[1:] else "")
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="serve-", dir=OUT))
    res = {"machine": machine(), "args": vars(args), "command": command, "servers": {}}
    live = []
    try:
        model = pathlib.Path(args.model) if args.model else pathlib.Path(
            run([ROOT / "scripts" / "fetch_model.sh"], "fetching the model").strip())
        if not model.exists():
            raise BenchError(f"no model at {model}")
        res["model"] = str(model)
        world, ids = make_world(tmp, args.npcs)
        res["npcs"] = ids
        # warm-up: ours keeps a conversation (a KV cache) per NPC and player,
        # and llama-server's --cache keeps states by prompt, so both first
        # meet every pair once; plain llama-server keeps nothing per pair
        pairs = [[(npc, PLAYERS[c], LINES[-1]) for npc in ids] for c in range(args.concurrency)]
        warm_plain = workload(ids, args.concurrency, args.warmup, offset=10_000)
        warm = {k: pairs if k in ("ours", "llama-cache") else warm_plain for k in servers}
        halves = [workload(ids, args.concurrency, args.requests // 2),
                  workload(ids, args.concurrency, args.requests - args.requests // 2,
                           offset=args.requests // 2)]
        prompts = {}
        if any(k.startswith("llama") for k in servers):
            items = [x for w in list(warm.values()) + halves for c in w for x in c]
            prompts = llama_prompts(model, world, items, tmp)
        srv = {}
        for key in servers:   # both up before anything is measured
            print(f"starting {key} ...", file=sys.stderr)
            srv[key] = Ours(args, model, world, tmp) if key == "ours" else \
                Llama(args, model, tmp, cache=key == "llama-cache")
            live.append(srv[key])
        recs = {k: [] for k in servers}
        wall = {k: 0.0 for k in servers}
        warm_end, stopped = {}, {k: False for k in servers}
        for key in servers:
            r, _, _ = run_phase(srv[key], warm[key], prompts, args,
                                time.monotonic() + args.max_seconds)
            bad = [x["error"] for x in r if not x["ok"]]
            if bad:
                raise BenchError(f"{key}: warm-up request failed: {bad[0]}")
            warm_end[key] = time.monotonic()
        spent = {k: 0.0 for k in servers}
        for h, work in enumerate(halves):
            for key in servers:
                print(f"{key}: half {h + 1} of the measured requests ...", file=sys.stderr)
                deadline = time.monotonic() + max(0.0, args.max_seconds - spent[key])
                r, w, st = run_phase(srv[key], work, prompts, args, deadline)
                recs[key] += r
                wall[key] += w
                spent[key] += w
                stopped[key] |= st
        res["load_avg_at_end"] = os.getloadavg()
        for key in servers:
            s = summarize(srv[key], recs[key], wall[key], warm_end[key])
            s["stopped"] = stopped[key]
            s["rss_samples"] = [(round(t - warm_end[key], 2), round(r, 1))
                                for t, r in srv[key].samples]
            res["servers"][key] = s
    except BenchError as e:
        print(f"bench_serve: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_serve: interrupted", file=sys.stderr)
        return 130
    finally:
        for s in live:
            s.close()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    out = OUT / ("serve-quick.json" if args.quick else "serve.json")
    out.write_text(json.dumps(res, indent=1) + "\n")
    report(res, args)
    print(f"\n(raw numbers and RSS samples: {out.relative_to(ROOT)})")
    return 1 if any(s["n_errors"] for s in res["servers"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
