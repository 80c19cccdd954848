"""Inference benchmark: LeMoNPC against llama.cpp on the same GGUF files,
prompt tokens and thread counts, in one run. Prints a Markdown table with
our/llama.cpp ratios (run by `make bench`; results go in BENCHMARKS.md).

Each side runs in its own process with the same protocol: a 512-token prompt
evaluated as one batch (prompt tok/s; time to first token = that plus picking
the first token), then 128 greedy decode steps (decode tok/s), best of REPS;
peak RSS of the process. llama.cpp runs through llama-cpp-python's low-level
API, so its process carries a Python interpreter: its column "lib RSS"
subtracts the interpreter's RSS measured before the model loads.
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = ROOT / os.environ.get("LEMONPC_BUILD", "build")
OUT = ROOT / "bench" / "out"

TEXT = (ROOT / "examples" / "luminara" / "characters" / "orlando.md")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def prompt_tokens(model, n):
    """n token ids of real text (the example character sheet, repeated),
    tokenized by llama.cpp so both sides see the same ids."""
    import llama_cpp
    llm = llama_cpp.Llama(str(model), vocab_only=True, verbose=False)
    text = TEXT.read_text() if TEXT.exists() else "The knight of Luminara speaks. " * 200
    ids = []
    while len(ids) < n:
        ids += llm.tokenize(text.encode(), add_bos=False, special=False)
    return ids[:n]


def run_side(cmd):
    out = sh(cmd)
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default="q8_0,q4_0,q4_1")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    # A bare `python3 bench/bench_infer.py` runs whatever build/bench/infer is
    # there; one left from before a kernel change measured the old kernels.
    # `make bench` rebuilds it first.
    infer, lib = BUILD / "bench" / "infer", BUILD / "liblemonpc_all.a"
    if not infer.exists() or (lib.exists() and infer.stat().st_mtime < lib.stat().st_mtime):
        sys.exit(f"{infer} is missing or older than {lib}: run `make bench` (it rebuilds it)")

    src = pathlib.Path(sh([str(ROOT / "scripts" / "fetch_model.sh")]).strip())
    OUT.mkdir(parents=True, exist_ok=True)
    ids = prompt_tokens(src, args.prompt)
    tok_file = OUT / "prompt_tokens.txt"
    tok_file.write_text(" ".join(map(str, ids)) + "\n")

    rows = []
    for qt in args.types.split(","):
        if qt == "q4_1":
            model = src  # the file as shipped
        else:
            model = OUT / f"smollm2-135m-{qt}.gguf"
            if not model.exists():
                sh([str(BUILD / "lemonpc"), "quantize", str(src), str(model), qt])
        size_mb = model.stat().st_size / 1048576
        for th in args.threads.split(","):
            common = [str(model), str(tok_file), th, str(args.gen), str(args.reps)]
            ours = run_side([str(BUILD / "bench" / "infer")] + common)
            ref = run_side([sys.executable, str(ROOT / "bench" / "llamacpp_infer.py")] + common)
            rows.append((qt.upper(), th, size_mb, ours, ref))
            print(f"  done {qt} threads={th}", file=sys.stderr)

    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"\nMachine: {cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}")
    print(f"Command: make bench  (python3 bench/bench_infer.py --prompt {args.prompt} --gen {args.gen} --reps {args.reps})\n")
    print("| model | threads | prompt tok/s (ours / llama.cpp / ratio) | decode tok/s (ours / llama.cpp / ratio) "
          "| TTFT ms (ours / llama.cpp) | peak RSS MB (ours / llama.cpp lib) | RSS budget (file+KV+30) |")
    print("|---|---|---|---|---|---|---|")
    for qt, th, size_mb, o, r in rows:
        budget = size_mb + o["kv_mb"] + 30
        print(f"| {qt} | {th} | {o['pp_tps']:.0f} / {r['pp_tps']:.0f} / **{o['pp_tps']/r['pp_tps']:.2f}x** "
              f"| {o['tg_tps']:.1f} / {r['tg_tps']:.1f} / **{o['tg_tps']/r['tg_tps']:.2f}x** "
              f"| {o['ttft_s']*1e3:.0f} / {r['ttft_s']*1e3:.0f} "
              f"| {o['peak_rss_mb']:.0f} / {r['peak_rss_lib_mb']:.0f} "
              f"| {budget:.0f} {'ok' if o['peak_rss_mb'] <= budget else 'OVER'} |")


if __name__ == "__main__":
    main()
