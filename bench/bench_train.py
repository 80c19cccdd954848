#!/usr/bin/env python3
"""Training benchmark: our C trainer (build/bench/train_step) against a plain
PyTorch training loop, same weights, same tokens, same thread count.

SmolLM2-135M, sequence 256, batch 8 (one optimizer step = 8 sequences, run
as micro-batches of --micro-full / --micro-lora sequences on both sides,
gradients accumulated), AdamW, every position counted in the loss. Each
configuration runs in its own process so peak RSS is per run. Prints a
Markdown table: tokens/s, peak RSS, ratios, and model FLOP utilisation
(achieved FLOP/s over threads x --peak-gflops f32 peak per core).

The PyTorch side is tests/torch/llama_ref.py's model (a plain Llama written
from the HF conventions) on weights dequantized by tests/torch/gguf_mini.py;
LoRA there is plain A/B matrices on all seven projections, as ours. It runs
under /usr/bin/python3 (Debian's python3-torch) unless --torch-python says
otherwise.

    python3 bench/bench_train.py [--threads N] [--steps S] [--model PATH]
"""
import argparse
import json
import os
import pathlib
import random
import resource
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = ROOT / os.environ.get("LEMONPC_BUILD", "build")


def default_model():
    p = os.environ.get("LEMONPC_MODEL")
    if p:
        return p
    cache = os.environ.get("LEMONPC_CACHE", os.path.expanduser("~/.cache/lemonpc"))
    return os.path.join(cache, "SmolLM2-135M-Instruct.Q4_1.gguf")


# ---------------------------------------------------------------- torch side

def torch_worker(a):
    import torch
    sys.path.insert(0, str(ROOT / "tests" / "torch"))
    import gguf_mini
    import llama_ref as R

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    kvs, tensors = gguf_mini.read(a.model)
    arch = kvs["general.architecture"]
    dim = int(kvs[f"{arch}.embedding_length"])
    cfg = R.Config(vocab=tensors["token_embd.weight"].shape[0], dim=dim,
                   n_layers=int(kvs[f"{arch}.block_count"]),
                   n_heads=int(kvs[f"{arch}.attention.head_count"]),
                   n_kv_heads=int(kvs[f"{arch}.attention.head_count_kv"]),
                   ffn=int(kvs[f"{arch}.feed_forward_length"]),
                   rope_base=float(kvs.get(f"{arch}.rope.freq_base", 10000.0)),
                   eps=float(kvs.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
                   tied="output.weight" not in tensors)
    P = R.params_from_gguf(cfg, tensors, torch.float32)
    del tensors
    rows = [[int(x) for x in line.split()] for line in open(a.tokens)]
    data = torch.tensor(rows, dtype=torch.long)            # [B, T + 1]
    B, T = data.shape[0], data.shape[1] - 1

    lora = None
    if a.mode == "lora":
        for t in P.values():
            t.requires_grad_(False)
        gen = torch.Generator().manual_seed(1)
        lora = R.init_lora(cfg, a.rank, gen, torch.float32, b_std=0.0)
        for t in lora.values():
            t.requires_grad_(True)
        train = list(lora.values())
        lr, scale = 1e-4, 2.0 * a.rank / a.rank
    else:
        for t in P.values():
            t.requires_grad_(True)
        train = list(P.values())
        lr, scale = 1e-5, 0.0
    opt = torch.optim.AdamW(train, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

    times, cpu, losses = [], [], []
    for s in range(a.steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for mb in range(0, B, a.micro):
            x = data[mb:mb + a.micro, :T]
            y = data[mb:mb + a.micro, 1:]
            logits = R.forward(cfg, P, x, lora, scale)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, cfg.vocab), y.reshape(-1), reduction="sum") / (B * T)
            loss.backward()
            total += loss.item()
            del logits, loss
        torch.nn.utils.clip_grad_norm_(train, 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(total)
        if s > 0:
            times.append(dt)
            cpu.append(time.process_time() - c0)
        print(f"torch step {s} loss {total:.4f} {dt:.2f}s", file=sys.stderr)
    tps = B * T * len(times) / sum(times)
    print(json.dumps({"impl": f"torch {torch.__version__}", "mode": a.mode, "threads": a.threads,
                      "tok_s": tps, "s_per_step": sum(times) / len(times),
                      "cpu_s_per_step": sum(cpu) / len(cpu),
                      "loss_first": losses[0], "loss_last": losses[-1],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


# ---------------------------------------------------------------- driver

def run_json(cmd, env=None):
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.time() - t0
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    ap.add_argument("--micro-full", type=int, default=2)
    ap.add_argument("--micro-lora", type=int, default=2)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--modes", default="full,lora")
    ap.add_argument("--peak-gflops", type=float, default=100.0,
                    help="f32 peak per core (Zen 3/4: 2 x 256-bit FMA per cycle at ~3 GHz)")
    ap.add_argument("--torch-python", default="/usr/bin/python3")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tokens", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--micro", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_worker:
        return torch_worker(a)

    exe = BUILD / "bench" / "train_step"
    if not exe.exists():
        raise SystemExit(f"{exe} missing: run `make build/bench/train_step`")
    if not os.path.exists(a.model):
        raise SystemExit(f"{a.model} missing: run scripts/fetch_model.sh")
    rng = random.Random(1234)
    tok = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    with tok:
        for _ in range(a.batch):
            tok.write(" ".join(str(rng.randrange(1, 49152)) for _ in range(a.seq + 1)) + "\n")
    load = os.getloadavg()
    results = []
    try:
        for mode in a.modes.split(","):
            micro = a.micro_full if mode == "full" else a.micro_lora
            ours = run_json([str(exe), a.model, tok.name, str(a.threads), mode, str(a.batch),
                             str(a.seq), str(micro), str(a.steps), str(a.rank)])
            theirs = run_json([a.torch_python, __file__, "--torch-worker", "--model", a.model,
                               "--tokens", tok.name, "--threads", str(a.threads), "--mode", mode,
                               "--micro", str(micro), "--steps", str(a.steps), "--rank",
                               str(a.rank)])
            results.append((mode, micro, ours, theirs))
            print(f"{mode}: ours {ours['tok_s']:.1f} tok/s, torch {theirs['tok_s']:.1f} tok/s",
                  file=sys.stderr)
    finally:
        os.unlink(tok.name)
    load_end = os.getloadavg()

    peak = a.threads * a.peak_gflops * 1e9
    print(f"\nSmolLM2-135M training, seq {a.seq}, batch {a.batch}, {a.threads} threads, "
          f"{a.steps} timed steps after 1 warm-up; load average {load[0]:.1f} -> {load_end[0]:.1f}\n")
    print("| mode | micro | impl | tokens/s | s/step | CPU s/step | peak RSS MB | MFU | loss first -> last |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, micro, ours, theirs in results:
        fpt = ours["flop_per_token"]
        for r in (ours, theirs):
            print(f"| {mode} | {micro} | {r['impl']} | {r['tok_s']:.1f} | {r['s_per_step']:.1f} | "
                  f"{r['cpu_s_per_step']:.1f} | {r['peak_rss_mb']:.0f} | {100 * r['tok_s'] * fpt / peak:.1f}% | "
                  f"{r['loss_first']:.4f} -> {r['loss_last']:.4f} |")
    print("\n| mode | tokens/s ours / torch | CPU s/step torch / ours | peak RSS ours / torch |")
    print("|---|---|---|---|")
    for mode, micro, ours, theirs in results:
        print(f"| {mode} | {ours['tok_s'] / theirs['tok_s']:.2f}x | "
              f"{theirs['cpu_s_per_step'] / ours['cpu_s_per_step']:.2f}x | "
              f"{ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}x |")
    print(f"\nMFU = tokens/s x FLOPs/token (6N full, 4N LoRA, N = parameters, plus causal "
          f"attention) / ({a.threads} x {a.peak_gflops:.0f} GFLOP/s).")


if __name__ == "__main__":
    main()
