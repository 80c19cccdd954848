"""Runtime benchmark: what a game pays per NPC with LeMoNPC's runtime
(include/lemonpc.h, driven by build/bench/runtime) against llama.cpp
(llama-cpp-python's low-level API) doing the same work, in one run. Prints
Markdown tables (BENCHMARKS.md, "Runtime") and writes bench/out/runtime.json
(runtime-quick.json with --quick). Run by `make bench-runtime`.

1. Time to first token, persona evaluated vs cached. One NPC (orlando.md,
   persona FULL) on the base model. "Evaluated": the first reply of a freshly
   loaded NPC (its first_token_seconds includes evaluating the persona);
   "cached": the first reply of a second conversation of that NPC (the
   persona's KV is copied). llama.cpp evaluates the same prompt token ids
   (system + scene + the player's line, from bench/prompt_tokens) from an
   empty cache: what a llama.cpp user pays per new conversation. Medians of
   --reps after one untimed warm-up on each side.
2. Decode tokens/s with 1 and 4 conversations at once: 4 NPCs (the example
   sheets in turn, persona FULL, different players), one application thread
   per conversation, greedy, at most --tokens tokens. All conversations wait
   at a barrier at their first token, so their decoding overlaps; decode
   steps are the one-token forward passes after the first token. llama.cpp:
   (a) one context per conversation, each in its own Python thread (ctypes
   drops the GIL in llama_decode) with the same thread count, on one shared
   model; (b) one context holding all conversations as sequences of one
   batch (llama.cpp's own way to serve several users of one model).
3. Peak RSS with 1, 10 and 50 NPCs on a Q8_0 base, each NPC with its own
   rank-8 LoRA adapter on all seven projections, stored in F16 (random:
   build/tools/lm_make_adapter --type f16, seeds 1..N; our runtime keeps it
   F16, 4.9 MB per NPC), persona SHORT (what a fine-tuned NPC runs with), and
   one open conversation that has answered one short line. Ours: one
   process. llama.cpp: one process per NPC loading that NPC's merged model
   (`lemonpc merge ...  --type q8_0` of the same F16 adapter), answering the
   same prompt; their peak RSS summed. The
   processes run one after another (each merged file is made, used and
   deleted in turn, so the disk holds one at a time); as their memory is
   private or maps distinct files, the sum is what N live processes hold.
   Each process carries a Python interpreter: "lib" subtracts that
   process's RSS measured after importing llama_cpp and numpy, before the
   model loads (as bench_infer.py does); "whole" does not.
"""
import argparse
import json
import os
import pathlib
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = ROOT / os.environ.get("LEMONPC_BUILD", "build")
OUT = ROOT / "bench" / "out"
CHARS = ROOT / "examples" / "luminara" / "characters"
SHEETS = [CHARS / "orlando.md", CHARS / "elena.md"]
PLAYERS = ["Mira, a young acolyte", "Tomas, a pilgrim", "Ines, a wine merchant", "Aldo, a city guard"]
PLACE = "the Great Cathedral"
LINE_TTFT = "Who are the Unblessed, and what do you think of them?"
LINE_DECODE = "Tell me about yourself: who you are, what you believe and what you want."
LINE_RSS = "Good morning to you!"
N_CTX = 2048  # ours: min(2048, the model's) by default; llama.cpp gets the same
SUB_TIMEOUT = 3600


class BenchError(Exception):
    pass


# ---- llama.cpp workers (run in child processes: python3 bench_runtime.py --worker NAME ...) ----

def _llama():
    # llama.cpp's OpenMP threads spin between ops by default; passive as in
    # bench/llamacpp_infer.py (set before the library loads).
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    import ctypes
    import llama_cpp as L
    import numpy as np
    quiet = L.llama_log_callback(lambda *a: None)
    L.llama_log_set(quiet, ctypes.c_void_p())
    L.llama_backend_init()
    return L, np, quiet


def _peak_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _read_ids(path):
    ids = [int(t) for t in open(path).read().split()]
    if not ids:
        raise SystemExit(f"no token ids in {path}")
    return ids


class _Llama:
    """A model and helpers over llama-cpp-python's low-level API."""

    def __init__(self, path):
        self.L, self.np, self._quiet = _llama()
        self.interp_mb = _peak_mb()
        mp = self.L.llama_model_default_params()
        self.model = self.L.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise SystemExit(f"llama.cpp cannot load {path}")
        self.vocab = self.L.llama_model_get_vocab(self.model)
        self.n_vocab = self.L.llama_vocab_n_tokens(self.vocab)

    def context(self, threads, n_ctx=N_CTX, n_batch=512, n_seq=1):
        cp = self.L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = cp.n_ubatch = n_batch
        cp.n_seq_max = n_seq
        cp.n_threads = cp.n_threads_batch = threads
        ctx = self.L.llama_init_from_model(self.model, cp)
        if not ctx:
            raise SystemExit("llama_init_from_model failed")
        return ctx

    def decode_seq(self, ctx, ids, pos0=0, seq=0):
        """Evaluates ids at positions pos0.. of sequence seq; logits of the last."""
        L = self.L
        b = L.llama_batch_init(len(ids), 0, 1)
        try:
            for j, t in enumerate(ids):
                b.token[j] = t
                b.pos[j] = pos0 + j
                b.n_seq_id[j] = 1
                b.seq_id[j][0] = seq
                b.logits[j] = j == len(ids) - 1
            b.n_tokens = len(ids)
            if L.llama_decode(ctx, b) != 0:
                raise SystemExit("llama_decode failed")
        finally:
            L.llama_batch_free(b)

    def argmax(self, ctx, i=-1):
        row = self.L.llama_get_logits_ith(ctx, i)
        return int(self.np.argmax(self.np.ctypeslib.as_array(row, shape=(self.n_vocab,))))

    def is_eog(self, tok):
        return bool(self.L.llama_vocab_is_eog(self.vocab, tok))


def worker_ttft(model, ids_file, threads, reps, warmup):
    ids = _read_ids(ids_file)
    m = _Llama(model)
    ctx = m.context(int(threads), n_batch=max(512, len(ids)))
    mem = m.L.llama_get_memory(ctx)
    times = []
    for r in range(-int(warmup), int(reps)):
        m.L.llama_memory_clear(mem, True)
        a = time.perf_counter()
        m.decode_seq(ctx, ids)
        m.argmax(ctx)
        if r >= 0:
            times.append(time.perf_counter() - a)
    print(json.dumps({"prompt_tokens": len(ids), "ttft_s": times,
                      "ttft_median_s": statistics.median(times), "peak_rss_mb": _peak_mb()}))


def _decode_loop(m, ctx, first, pos, max_tokens, step):
    """Greedy decoding from the first sampled token: each generated token is
    evaluated (as our runtime keeps it in the conversation's cache) until an
    end-of-generation token or max_tokens. Returns (tokens, steps)."""
    tok, n_gen, steps = first, 0, 0
    while True:
        if m.is_eog(tok):
            break
        n_gen += 1
        step(tok, pos)
        pos += 1
        steps += 1
        if n_gen >= max_tokens:
            break
        tok = m.argmax(ctx)
    return n_gen, steps


def worker_decode(model, threads, max_tokens, conc_list, *ids_files):
    """(a) one context per conversation, one Python thread each; (b) one context,
    the conversations as sequences of one batch."""
    threads, max_tokens = int(threads), int(max_tokens)
    concs = [int(c) for c in conc_list.split(",")]
    prompts = [_read_ids(f) for f in ids_files]
    if max(concs) > len(prompts):
        raise SystemExit(f"{max(concs)} conversations, {len(prompts)} prompts")
    m = _Llama(model)
    result = {"separate": [], "batched": []}
    n_ctx = N_CTX
    ctxs = [m.context(threads, n_ctx=n_ctx, n_batch=max(512, len(p))) for p in prompts[:max(concs)]]
    for n in concs:
        bar = threading.Barrier(n, timeout=600)
        rec = [None] * n
        errors = []

        def run(i):
            try:
                run_one(i)
            except BaseException as e:  # a failed thread must not leave the others at the barrier
                errors.append(f"conversation {i}: {e!r}")
                bar.abort()

        def run_one(i):
            ctx = ctxs[i]
            m.L.llama_memory_clear(m.L.llama_get_memory(ctx), True)
            p = prompts[i]
            m.decode_seq(ctx, p)
            first = m.argmax(ctx)
            try:
                bar.wait()
            except threading.BrokenBarrierError:
                pass
            t_leave = time.perf_counter()
            n_gen, steps = _decode_loop(m, ctx, first, len(p), max_tokens,
                                        lambda t, pos: m.decode_seq(ctx, [t], pos))
            rec[i] = {"n_generated": n_gen, "decode_steps": steps, "t_leave": t_leave,
                      "t_end": time.perf_counter()}

        ths = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        if errors:
            raise SystemExit("llama.cpp decode: " + "; ".join(errors))
        result["separate"].append(_decode_summary(n, rec))

        # (b) batched: prompts one sequence at a time, then one batch per step
        ctx = m.context(threads, n_ctx=n_ctx * n, n_batch=max(512, max(len(p) for p in prompts[:n])),
                        n_seq=n)
        toks, pos, alive = [], [], []
        for i in range(n):
            m.decode_seq(ctx, prompts[i], 0, i)
            toks.append(m.argmax(ctx))
            pos.append(len(prompts[i]))
        gen = [0] * n
        t0 = time.perf_counter()
        ends = [t0] * n
        L = m.L
        b = L.llama_batch_init(n, 0, 1)
        try:
            alive = [i for i in range(n)]
            while alive:
                still = []
                for i in alive:
                    if m.is_eog(toks[i]):
                        ends[i] = time.perf_counter()
                    else:
                        still.append(i)
                alive = still
                if not alive:
                    break
                for j, i in enumerate(alive):
                    b.token[j] = toks[i]
                    b.pos[j] = pos[i]
                    b.n_seq_id[j] = 1
                    b.seq_id[j][0] = i
                    b.logits[j] = 1
                    gen[i] += 1
                    pos[i] += 1
                b.n_tokens = len(alive)
                if L.llama_decode(ctx, b) != 0:
                    raise SystemExit("llama_decode failed (batched)")
                still = []
                for j, i in enumerate(alive):
                    if gen[i] >= max_tokens:
                        ends[i] = time.perf_counter()
                    else:
                        toks[i] = m.argmax(ctx, j)
                        still.append(i)
                alive = still
        finally:
            L.llama_batch_free(b)
            L.llama_free(ctx)
        rec = [{"n_generated": gen[i], "decode_steps": gen[i], "t_leave": t0, "t_end": ends[i]}
               for i in range(n)]
        result["batched"].append(_decode_summary(n, rec))
    for c in ctxs:
        m.L.llama_free(c)
    result["peak_rss_mb"] = _peak_mb()
    print(json.dumps(result))


def _decode_summary(n, rec):
    release = min(r["t_leave"] for r in rec)
    last = max(r["t_end"] for r in rec)
    steps = sum(r["decode_steps"] for r in rec)
    convs = [{"n_generated": r["n_generated"], "decode_steps": r["decode_steps"],
              "decode_s": r["t_end"] - r["t_leave"],
              "decode_tps": r["decode_steps"] / (r["t_end"] - r["t_leave"]) if r["t_end"] > r["t_leave"] else 0}
             for r in rec]
    return {"conc": n, "aggregate_tps": steps / (last - release) if last > release else 0,
            "decode_wall_s": last - release, "convs": convs}


def worker_npc(model, ids_file, threads, max_tokens):
    """One NPC as a llama.cpp user runs it: its merged model, a context, the
    prompt evaluated and a greedy reply; peak RSS with and without the
    interpreter."""
    ids = _read_ids(ids_file)
    m = _Llama(model)
    ctx = m.context(int(threads), n_batch=max(512, len(ids)))
    m.decode_seq(ctx, ids)
    first = m.argmax(ctx)
    n_gen, _ = _decode_loop(m, ctx, first, len(ids), int(max_tokens),
                            lambda t, pos: m.decode_seq(ctx, [t], pos))
    vm = -1.0
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                vm = float(line.split()[1]) / 1024
    except OSError:
        pass
    peak = _peak_mb()
    print(json.dumps({"peak_rss_mb": peak, "interp_rss_mb": m.interp_mb,
                      "peak_rss_lib_mb": peak - m.interp_mb, "rss_mb": vm, "n_generated": n_gen}))


WORKERS = {"ttft": worker_ttft, "decode": worker_decode, "npc": worker_npc}


# ---- the orchestrator -------------------------------------------------------

def run(cmd, what):
    """Runs cmd; returns stdout. A failure raises BenchError with its stderr."""
    cmd = [str(c) for c in cmd]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=SUB_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: timed out after {SUB_TIMEOUT} s: {' '.join(cmd)}")
    except OSError as e:
        raise BenchError(f"{what}: cannot run {cmd[0]}: {e}")
    if p.returncode != 0:
        tail = "\n".join(p.stderr.strip().splitlines()[-15:])
        raise BenchError(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n{tail}")
    return p.stdout


def run_json(cmd, what):
    out = run(cmd, what).strip().splitlines()
    if not out:
        raise BenchError(f"{what}: no output")
    try:
        return json.loads(out[-1])
    except json.JSONDecodeError:
        raise BenchError(f"{what}: not JSON: {out[-1][:200]}")


def worker_cmd(name, *args):
    return [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", name, *args]


class Bench:
    def __init__(self, args, tmp):
        self.a = args
        self.tmp = tmp
        self.runtime = BUILD / "bench" / "runtime"
        self.ptok = BUILD / "bench" / "prompt_tokens"
        self.lemonpc = BUILD / "lemonpc"
        self.mkadapter = BUILD / "tools" / "lm_make_adapter"
        missing = [str(p) for p in (self.runtime, self.ptok, self.lemonpc, self.mkadapter) if not p.exists()]
        if missing:
            raise BenchError("not built: " + ", ".join(missing) + " (run `make bench-runtime`)")
        for s in SHEETS:
            if not s.exists():
                raise BenchError(f"missing character sheet {s}")
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise BenchError("llama-cpp-python is not installed (pip install llama-cpp-python)")
        self._ids = {}

    def base_model(self):
        if self.a.model:
            p = pathlib.Path(self.a.model)
            if not p.exists():
                raise BenchError(f"no model at {p}")
            return p
        src = pathlib.Path(run([ROOT / "scripts" / "fetch_model.sh"], "fetching the model").strip())
        q8 = OUT / "smollm2-135m-q8_0.gguf"  # the file bench_infer.py makes too
        if not q8.exists():
            print(f"making {q8} from {src}", file=sys.stderr)
            part = self.tmp / "q8_0.gguf"
            run([self.lemonpc, "quantize", src, part, "q8_0"], "lemonpc quantize")
            shutil.move(str(part), str(q8))
        return q8

    def ids(self, model, sheet, persona, line, player):
        """The ids file of an NPC's first prompt (cached per distinct prompt)."""
        key = (str(model), str(sheet), persona, line, player)
        if key not in self._ids:
            out = run([self.ptok, model, sheet, persona, line, player, PLACE], "prompt_tokens")
            f = self.tmp / f"prompt_{len(self._ids)}.txt"
            f.write_text(out)
            self._ids[key] = f
        return self._ids[key]

    def npc_args(self, n, persona):
        a = ["--persona", persona, "--place", PLACE]
        for i in range(n):
            a += ["--sheet", SHEETS[i % len(SHEETS)], "--player", PLAYERS[i % len(PLAYERS)]]
        return a

    # -- 1 --
    def ttft(self, model):
        a = self.a
        print("1/3 time to first token", file=sys.stderr)
        ours = run_json([self.runtime, "ttft", "--model", model, "--threads", a.threads,
                         "--reps", a.reps, "--warmup", int(a.warmup), "--max-tokens", 1,
                         "--line", LINE_TTFT, *self.npc_args(1, "full")], "runtime ttft")
        ids = self.ids(model, SHEETS[0], "full", LINE_TTFT, PLAYERS[0])
        ref = run_json(worker_cmd("ttft", model, ids, a.threads, a.reps, int(a.warmup)), "llama.cpp ttft")
        if ref["prompt_tokens"] != ours["prompt_tokens"]:
            raise BenchError(f"prompt tokens differ: ours {ours['prompt_tokens']}, "
                             f"prompt_tokens gave llama.cpp {ref['prompt_tokens']}")
        return {"ours": ours, "llama_cpp": ref}

    # -- 2 --
    def decode(self, model):
        a = self.a
        print("2/3 decode", file=sys.stderr)
        conc = [int(c) for c in a.conc.split(",")]
        n = max(conc)
        ours = run_json([self.runtime, "decode", "--model", model, "--threads", a.threads,
                         "--max-tokens", a.tokens, "--conc", a.conc, "--line", LINE_DECODE,
                         *self.npc_args(n, "full")], "runtime decode")
        files = [self.ids(model, SHEETS[i % len(SHEETS)], "full", LINE_DECODE, PLAYERS[i % len(PLAYERS)])
                 for i in range(n)]
        ref = run_json(worker_cmd("decode", model, a.threads, a.tokens, a.conc, *files), "llama.cpp decode")
        for c in ours["runs"][-1]["convs"]:
            n_ours = c["n_prompt"] + c["n_reused"]
            n_ref = len(files[c["npc"]].read_text().split())
            if n_ours != n_ref:
                raise BenchError(f"decode, NPC {c['npc']}: our prompt has {n_ours} tokens, "
                                 f"prompt_tokens gave llama.cpp {n_ref}")
        return {"ours": ours, "llama_cpp": ref}

    # -- 3 --
    def rss(self, model):
        a = self.a
        print("3/3 peak RSS", file=sys.stderr)
        counts = sorted({int(c) for c in a.npcs.split(",")})
        n = max(counts)
        size = model.stat().st_size
        free = shutil.disk_usage(self.tmp).free
        # adapters (~5 MB each at rank 8 in F16) and one merged model at a time
        need = n * 6 * 2**20 + size * 1.2
        all_at_once = n * size
        print(f"  disk: {free / 2**30:.1f} GB free in {self.tmp}; {n} merged files would be "
              f"{all_at_once / 2**30:.1f} GB, made and deleted one at a time", file=sys.stderr)
        if free < need:
            raise BenchError(f"not enough disk in {self.tmp}: {free / 2**20:.0f} MB free, "
                             f"{need / 2**20:.0f} MB needed (adapters + one merged model)")
        adapters = []
        for i in range(n):
            f = self.tmp / f"adapter_{i + 1}.gguf"
            run([self.mkadapter, model, f, "--rank", 8, "--seed", i + 1, "--type", "f16"],
                "lm_make_adapter")
            adapters.append(f)
        ours = []
        for c in counts:
            args = [self.runtime, "rss", "--model", model, "--threads", a.threads,
                    "--max-tokens", a.rss_tokens, "--line", LINE_RSS, *self.npc_args(c, "short")]
            for f in adapters[:c]:
                args += ["--adapter", f]
            ours.append(run_json(args, f"runtime rss {c}"))
        procs = []
        merge_s = 0.0
        for i in range(n):
            merged = self.tmp / "merged.gguf"
            t = time.perf_counter()
            run([self.lemonpc, "merge", model, adapters[i], merged, "--type", "q8_0"], "lemonpc merge")
            merge_s += time.perf_counter() - t
            ids = self.ids(model, SHEETS[i % len(SHEETS)], "short", LINE_RSS, PLAYERS[i % len(PLAYERS)])
            procs.append(run_json(worker_cmd("npc", merged, ids, a.threads, a.rss_tokens), f"llama.cpp NPC {i + 1}"))
            merged.unlink()
            if (i + 1) % 10 == 0:
                print(f"  llama.cpp NPC {i + 1}/{n}", file=sys.stderr)
        refs = []
        for c in counts:
            p = procs[:c]
            refs.append({"n_npcs": c,
                         "sum_peak_rss_mb": sum(x["peak_rss_mb"] for x in p),
                         "sum_peak_rss_lib_mb": sum(x["peak_rss_lib_mb"] for x in p),
                         "interp_rss_mb_median": statistics.median(x["interp_rss_mb"] for x in p)})
        return {"ours": ours, "llama_cpp": refs, "llama_cpp_procs": procs,
                "merge_s_mean": merge_s / n, "model_mb": size / 2**20}


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = -1
    return {"cpu": cpu, "cpus": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
            "load_avg_1m_at_start": load, "utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def ratio(a, b):
    return f"{a / b:.2f}x" if b else "n/a"


def report(res, args, cmdline):
    mc = res["machine"]
    print(f"\nMachine: {mc['cpu']}, {mc['cpus']} CPUs, {mc['os']}; load average {mc['load_avg_1m_at_start']:.2f} "
          f"at the start, {mc['utc']}{' (QUICK RUN: not for BENCHMARKS.md)' if args.quick else ''}")
    print(f"Command: {cmdline}")
    print(f"Model: {res['model']}, {args.threads} threads on every side\n")
    if "ttft" in res:
        t = res["ttft"]
        o, r = t["ours"], t["llama_cpp"]
        unc, cac, ref = o["uncached_median_s"], o["cached_median_s"], r["ttft_median_s"]
        sp = unc / cac if cac else 0
        print(f"### Time to first token (median of {o['reps']})\n")
        print("| persona tokens | prompt tokens | ours, persona evaluated ms | ours, persona cached ms "
              "| cached speedup | llama.cpp, whole prompt ms | llama.cpp / ours cached |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {o['prefix_tokens']} | {o['prompt_tokens']} | {unc * 1e3:.1f} | {cac * 1e3:.1f} "
              f"| **{sp:.1f}x** | {ref * 1e3:.1f} | **{ratio(ref, cac)}** |")
        print(f"\nTarget: cached >= 5x faster than evaluated: {'met' if sp >= 5 else 'NOT met'} ({sp:.1f}x).\n")
    if "decode" in res:
        d = res["decode"]
        print(f"### Decode tokens/s (greedy, at most {args.tokens} tokens per reply)\n")
        print("| conversations | ours per conv (median, min-max) | ours aggregate "
              "| llama.cpp contexts per conv | llama.cpp contexts aggregate "
              "| llama.cpp batched aggregate | ours / contexts | ours / batched | tokens per conv (ours / llama.cpp) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for o, s, b in zip(d["ours"]["runs"], d["llama_cpp"]["separate"], d["llama_cpp"]["batched"]):
            pc = [c["decode_tps"] for c in o["convs"]]
            sc = [c["decode_tps"] for c in s["convs"]]
            print(f"| {o['conc']} | {statistics.median(pc):.1f} ({min(pc):.1f}-{max(pc):.1f}) "
                  f"| {o['aggregate_tps']:.1f} | {statistics.median(sc):.1f} | {s['aggregate_tps']:.1f} "
                  f"| {b['aggregate_tps']:.1f} | **{ratio(o['aggregate_tps'], s['aggregate_tps'])}** "
                  f"| **{ratio(o['aggregate_tps'], b['aggregate_tps'])}** "
                  f"| {'/'.join(str(c['n_generated']) for c in o['convs'])} / "
                  f"{'/'.join(str(c['n_generated']) for c in s['convs'])} |")
        print()
    if "rss" in res:
        r = res["rss"]
        print(f"### Peak RSS, NPCs with a rank-8 F16 adapter and one answered line (Q8_0 base, "
              f"{r['model_mb']:.0f} MB file)\n")
        print("| NPCs | ours MB | llama.cpp processes, whole MB | llama.cpp processes, lib MB "
              "| llama.cpp lib / ours | target (ours) |")
        print("|---|---|---|---|---|---|")
        targets = {10: 300, 50: 600}
        for o, ref in zip(r["ours"], r["llama_cpp"]):
            n = o["n_npcs"]
            tg = targets.get(n)
            tgt = f"<= {tg} MB: {'met' if o['peak_rss_mb'] <= tg else 'NOT met'}" if tg else "-"
            print(f"| {n} | {o['peak_rss_mb']:.0f} | {ref['sum_peak_rss_mb']:.0f} | {ref['sum_peak_rss_lib_mb']:.0f} "
                  f"| **{ratio(ref['sum_peak_rss_lib_mb'], o['peak_rss_mb'])}** | {tgt} |")
        print(f"\nllama.cpp: interpreter RSS per process (median) "
              f"{r['llama_cpp'][0]['interp_rss_mb_median']:.0f} MB; merging one adapter took "
              f"{r['merge_s_mean']:.1f} s on average (not counted).")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        if len(sys.argv) < 3 or sys.argv[2] not in WORKERS:
            raise SystemExit(f"--worker needs one of {', '.join(WORKERS)}")
        WORKERS[sys.argv[2]](*sys.argv[3:])
        return 0
    # a kill (SIGTERM) unwinds like an error: the temporary folder is removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 1 rep, no warm-up, 8 tokens, 1 and 2 conversations, 1 and 2 NPCs "
                         "(options given beside it win, e.g. --quick --npcs 1,10)")
    ap.add_argument("--parts", default="ttft,decode,rss", help="which measurements (default: all)")
    ap.add_argument("--model", help="base model GGUF (default: Q8_0 made from the fetched Q4_1 in bench/out)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-warmup", dest="warmup", action="store_false")
    ap.add_argument("--tokens", type=int, default=64, help="most tokens per reply in the decode test")
    ap.add_argument("--conc", default="1,4", help="conversations at once in the decode test")
    ap.add_argument("--npcs", default="1,10,50", help="NPC counts in the RSS test")
    ap.add_argument("--rss-tokens", type=int, default=32, help="most tokens of the reply in the RSS test")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder under bench/out")
    args = ap.parse_args()
    if args.quick:
        # a smoke run's settings, except those given on the command line
        given = {a.split("=")[0] for a in sys.argv[1:] if a.startswith("--")}
        quick = {"reps": 1, "warmup": False, "tokens": 8, "conc": "1,2", "npcs": "1,2", "rss_tokens": 8}
        for k, v in quick.items():
            if "--" + k.replace("_", "-") not in given and not (k == "warmup" and "--no-warmup" in given):
                setattr(args, k, v)
    parts = [p for p in args.parts.split(",") if p]
    bad = [p for p in parts if p not in ("ttft", "decode", "rss")]
    if bad or not parts:
        ap.error(f"--parts: ttft, decode and/or rss, got {args.parts!r}")
    cmdline = "make bench-runtime" + (f" BENCH_ARGS=\"{' '.join(sys.argv[1:])}\"" if sys.argv[1:] else "") + \
        f"  (python3 bench/bench_runtime.py {' '.join(sys.argv[1:])})".rstrip()

    OUT.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="runtime-", dir=OUT))
    res = {"machine": machine(), "args": vars(args), "command": cmdline}
    try:
        b = Bench(args, tmp)
        model = b.base_model()
        res["model"] = str(model)
        for p in parts:
            res[p] = getattr(b, p)(model)
    except BenchError as e:
        print(f"bench_runtime: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_runtime: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    out = OUT / ("runtime-quick.json" if args.quick else "runtime.json")
    out.write_text(json.dumps(res, indent=1) + "\n")
    report(res, args, cmdline)
    print(f"\n(raw numbers: {out.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
