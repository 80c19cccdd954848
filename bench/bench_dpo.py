#!/usr/bin/env python3
"""DPO benchmark: `lemonpc train --dpo` against TRL's DPOTrainer, same
pairs, same token ids, same batch of pairs per step, same sequence cap,
same thread count.

Pairs (TRL's preference format, prompt/chosen/rejected message lists) are
made from Orlando's conversations (examples/luminara/data/orlando/*.jsonl):
the prompt is a conversation's first user message, chosen the writer's
reply, rejected the first reply of a conversation from another file, drawn
with a fixed seed; or --pairs FILE (single-turn prompts, as many pairs as
--batch). The run trains on exactly --batch pairs, one optimizer step per
epoch, so every step does the same work on both sides: one warm-up step,
then --steps timed ones.

Both sides: LoRA r --rank, alpha 2 r, on all seven projections, dropout 0,
sigmoid DPO loss, beta --beta, AdamW at a constant --lr, no warm-up, weight
decay 0, clip 1.0, f32, the reference log-likelihoods computed once before
the first step (ours always; TRL with precompute_ref_log_probs=True; TRL's
default, False, runs a second, no-grad forward of the batch with the
adapter disabled in every step: --trl-ref precompute,default adds it).

Token ids are ours on both sides: build/tools/lm_sft_dump renders each side
(prompt + completion) exactly as the DPO trainer does (chat template,
SmolLM2's default system turn, only the completion's tokens scored), and
the TRL side gets those ids through DPOTrainer.tokenize_row (the way
bench_train.py feeds SFTTrainer pre-tokenized rows). Its collator pads each
batch to its longest side; ours lays out 2 x batch rows cut to the
micro-batch's longest side (rounded up to a multiple of 4), or with --rows
seq (LEMONPC_TRAIN_FULL_ROWS=1) rows of --seq tokens, as the trainer did
before it cut them (--rows longest,seq runs both, back to back).
tokens/s counts the pairs' real tokens (both sides, prompt included), the
same number on both sides.

Ours runs as `lemonpc train --dpo`; seconds per step are the step times of
its metrics.jsonl (tokens / tokens_per_s: forward, backward and AdamW), CPU
seconds per step the process's CPU time between two metrics lines (read
from /proc; it also holds the checkpoint the trainer writes after each
epoch). TRL is timed between its on_step_end callbacks (trainer overhead
counts) in the venv of scripts/setup_trl_venv.sh, on a LlamaForCausalLM
holding the same f32 weights (dequantized from the GGUF by
tests/torch/gguf_mini.py). Peak RSS is each process's own (one process per
run: wait4 for ours, getrusage in the TRL worker), model loading included.

Debian's torch calls whatever libblas.so.3 the system's alternatives pick;
with only libblas3 installed that is the reference BLAS, about 9x slower
than OpenBLAS here. The TRL worker therefore runs with LD_LIBRARY_PATH set
to --blas-dir (default: libopenblas0-openmp's folder, when installed) and
the table names the BLAS it loaded. It runs with OMP_WAIT_POLICY=passive
(unless set), as bench_infer.py runs llama.cpp.

    python3 bench/bench_dpo.py [--threads 1,2] [--steps 2] [--batch 4] [--seq 256]
                               [--impls lemonpc,trl] [--trl-ref precompute[,default]]
                               [--rows longest[,seq]]
"""
import argparse
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train as bt   # noqa: E402  (helpers: model, HF Llama, tokenizer, TRL venv)

ROOT, BUILD = bt.ROOT, bt.BUILD
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-openmp"   # Debian's libopenblas0-openmp


# ---------------------------------------------------------------- pairs

def make_pairs(n, seed):
    """n pairs from Orlando's conversations: (prompt, chosen, rejected) as
    TRL's conversational preference format."""
    convs = []
    for f in sorted(glob.glob(str(ROOT / "examples/luminara/data/orlando/*.jsonl"))):
        for line in open(f):
            m = json.loads(line)["messages"]
            if len(m) >= 2 and m[0]["role"] == "user" and m[1]["role"] == "assistant":
                convs.append((f, m[0]["content"], m[1]["content"]))
    rng = random.Random(seed)
    pairs = []
    for i in rng.sample(range(len(convs)), n):
        f, q, a = convs[i]
        j = rng.choice([k for k in range(len(convs)) if convs[k][0] != f])
        pairs.append({"prompt": [{"role": "user", "content": q}],
                      "chosen": [{"role": "assistant", "content": a}],
                      "rejected": [{"role": "assistant", "content": convs[j][2]}]})
    return pairs


def as_messages(x, role):
    return [{"role": role, "content": x}] if isinstance(x, str) else x


def tokenize_pairs(model, pairs, seq, tmp):
    """Each side's token ids and scored-token mask as our DPO trainer sees
    them. A DPO side is prompt + completion rendered as SFT renders that
    conversation; with no assistant message in the prompt, SFT's mask (the
    assistant turns) is the DPO mask (the completion), so lm_sft_dump
    gives both."""
    conv = os.path.join(tmp, "sides.jsonl")
    with open(conv, "w") as f:
        for k, p in enumerate(pairs):
            prompt = as_messages(p["prompt"], "user")
            if any(m["role"] == "assistant" for m in prompt):
                raise SystemExit(f"pair {k + 1}: the bench takes prompts without assistant turns")
            for side in ("chosen", "rejected"):
                f.write(json.dumps({"messages": prompt + as_messages(p[side], "assistant")}) + "\n")
    exe = BUILD / "tools" / "lm_sft_dump"
    if not exe.exists():
        raise SystemExit(f"{exe} missing: run `make {exe.relative_to(ROOT)}`")
    out = subprocess.run([str(exe), model, conv], capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    if len(rows) != 2 * len(pairs):
        raise SystemExit(f"lm_sft_dump kept {len(rows)} of {2 * len(pairs)} sides")
    for r in rows:
        if len(r["tokens"]) > seq:
            raise SystemExit(f"a side has {len(r['tokens'])} tokens, more than --seq {seq} "
                             "(the two trainers truncate differently)")
    return [{"chosen": rows[2 * k], "rejected": rows[2 * k + 1]} for k in range(len(pairs))]


# ---------------------------------------------------------------- our side

def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime


def run_lemonpc(a, pairs_path, threads, out_dir, rows, positions):
    """One `lemonpc train --dpo` run (rows: "longest" or "seq"); step times
    from metrics.jsonl, CPU per step sampled from /proc as each metrics line
    appears, peak RSS by wait4."""
    exe = BUILD / "lemonpc"
    if not exe.exists():
        raise SystemExit(f"{exe} missing: run `make {exe.relative_to(ROOT)}`")
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [str(exe), "train", "--dpo", pairs_path, "--model", a.model, "--out", out_dir,
           "--threads", str(threads), "--batch", str(a.batch), "--seq", str(a.seq),
           "--epochs", str(a.steps + 1), "--lora-rank", str(a.rank),
           "--lora-alpha", str(2 * a.rank), "--lora-dropout", "0", "--lr", str(a.lr),
           "--warmup", "0", "--schedule", "constant", "--weight-decay", "0", "--clip", "1",
           "--dpo-loss", "sigmoid", "--dpo-beta", str(a.beta)]
    metrics = os.path.join(out_dir, "metrics.jsonl")
    log = open(out_dir + ".log", "w")
    t0 = time.time()
    env = dict(os.environ)
    env.pop("LEMONPC_TRAIN_FULL_ROWS", None)
    if rows == "seq":
        env["LEMONPC_TRAIN_FULL_ROWS"] = "1"
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    cpu_marks, seen = [], 0
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        try:
            n = sum(1 for _ in open(metrics))
            if n > seen:
                cpu_marks.append(proc_cpu_s(p.pid))
                seen = n
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.05)
    p.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if p.returncode != 0:
        raise SystemExit(f"lemonpc train failed ({p.returncode}):\n{open(out_dir + '.log').read()[-2000:]}")
    steps = [json.loads(line) for line in open(metrics)]
    if len(steps) != a.steps + 1 or len(cpu_marks) != len(steps):
        raise SystemExit(f"lemonpc: {len(steps)} metrics lines, {len(cpu_marks)} CPU marks, "
                         f"expected {a.steps + 1}")
    times = [s["tokens"] / s["tokens_per_s"] for s in steps[1:]]
    cpu = [c - b for b, c in zip(cpu_marks, cpu_marks[1:])]
    for s in steps:
        print(f"lemonpc step {s['step']} loss {s['loss']:.4f} "
              f"{s['tokens'] / s['tokens_per_s']:.2f}s", file=sys.stderr)
    return {"impl": "lemonpc" + (" (rows of --seq)" if rows == "seq" else ""), "threads": threads,
            "tokens": steps[-1]["tokens"], "positions": positions, "s_per_step": sum(times) / len(times),
            "cpu_s_per_step": sum(cpu) / len(cpu), "loss_first": steps[0]["loss"],
            "loss_last": steps[-1]["loss"], "margin_last": steps[-1]["rewards/margins"],
            "peak_rss_mb": ru.ru_maxrss / 1024.0, "wall_s": time.time() - t0}


# ---------------------------------------------------------------- TRL side

def trl_worker(a):
    """DPOTrainer on CPU as a user would run it (its data collator, its
    loss, AdamW through the HF Trainer), on our token ids."""
    import resource
    import tempfile as tf
    import torch
    import datasets
    import transformers
    import trl
    from transformers import TrainingArguments

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    cfg, P, kvs = bt.load_model(a)
    model = bt.hf_llama(cfg, P, kvs)
    del P
    sides = json.load(open(a.tokens))
    tok = bt.gguf_tokenizer(kvs, a.seq)

    def row(side):
        ids, mask = side["tokens"], side["mask"]
        # mask[i]: token i is scored (its logit row i - 1); TRL shifts labels the same way.
        return ids, [t if m else -100 for t, m in zip(ids, mask)]

    class PreTokenized(trl.DPOTrainer):
        def tokenize_row(self, feature, model=None):
            s = sides[feature["pair"]]
            b = {}
            for name in ("chosen", "rejected"):
                ids, labels = row(s[name])
                b[f"{name}_input_ids"], b[f"{name}_attention_mask"] = ids, [1] * len(ids)
                b[f"{name}_labels"] = labels
            ids = s["chosen"]["tokens"]
            n_prompt = s["chosen"]["mask"].index(1)
            b["prompt_input_ids"], b["prompt_attention_mask"] = ids[:n_prompt], [1] * n_prompt
            return b

    ds = datasets.Dataset.from_dict({"pair": list(range(len(sides)))})
    clock, marks = bt.trl_step_clock()   # the reference pass precedes the untimed warm-up step

    with tf.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, use_cpu=True, seed=1, max_steps=a.steps + 1,
            per_device_train_batch_size=len(sides), gradient_accumulation_steps=1,
            learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0,
            optim="adamw_torch", weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,
            adam_epsilon=1e-8, max_grad_norm=1.0, gradient_checkpointing=False,
            logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
            dataloader_num_workers=0, remove_unused_columns=False)
        trainer = PreTokenized(model=model, ref_model=None, beta=a.beta, loss_type="sigmoid",
                               args=args, train_dataset=ds, tokenizer=tok,
                               peft_config=bt.trl_lora_config(a.rank),
                               max_length=a.seq, max_prompt_length=a.seq,
                               precompute_ref_log_probs=a.trl_ref == "precompute",
                               callbacks=[clock])
        trainer.train()
    times, cpu = bt.trl_step_times(marks, a.threads)
    logs = [e for e in trainer.state.log_history if "loss" in e]
    for s, e in enumerate(logs):
        print(f"trl step {s} loss {e['loss']:.4f}" + (f" {times[s - 1]:.2f}s" if s else ""),
              file=sys.stderr)
    longest = max(len(s[k]["tokens"]) for s in sides for k in ("chosen", "rejected"))
    blas = sorted({os.path.realpath(line.split()[-1]) for line in open("/proc/self/maps")
                   if "blas" in line.split()[-1]})
    print(json.dumps({"impl": f"trl {trl.__version__}", "ref": a.trl_ref, "threads": marks[-1][2],
                      "blas": ", ".join(os.path.basename(b) for b in blas),
                      "tokens": sum(len(s[k]["tokens"]) for s in sides for k in ("chosen", "rejected")),
                      "positions": 2 * len(sides) * longest,
                      "s_per_step": sum(times) / len(times), "cpu_s_per_step": sum(cpu) / len(cpu),
                      "loss_first": logs[0]["loss"], "loss_last": logs[-1]["loss"],
                      "margin_last": logs[-1]["rewards/margins"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


# ---------------------------------------------------------------- driver

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=bt.default_model())
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("--batch", type=int, default=4, help="pairs per optimizer step")
    ap.add_argument("--seq", type=int, default=256, help="sequence cap (--seq, max_length)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=1234, help="which conversations make the pairs")
    ap.add_argument("--pairs", help="a TRL-format pairs file instead (its first --batch pairs)")
    ap.add_argument("--impls", default="lemonpc,trl")
    ap.add_argument("--rows", default="longest",
                    help="ours: longest (rows cut to the longest side), seq (rows of --seq, "
                         "as before the cut), or both comma-separated")
    ap.add_argument("--trl-ref", default="precompute",
                    help="TRL variants: precompute (precompute_ref_log_probs=True, as ours), "
                         "default (False: a reference forward in every step)")
    ap.add_argument("--trl-python", default=bt.default_trl_python())
    ap.add_argument("--blas-dir", default=OPENBLAS if os.path.isdir(OPENBLAS) else "",
                    help="LD_LIBRARY_PATH for the TRL worker: a folder holding libblas.so.3")
    ap.add_argument("--trl-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tokens", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.trl_worker:
        a.threads = int(a.threads)
        return trl_worker(a)

    impls = a.impls.split(",")
    if not os.path.exists(a.model):
        raise SystemExit(f"{a.model} missing: run scripts/fetch_model.sh")
    if "trl" in impls and not bt.trl_available(a.trl_python):
        print(f"TRL: not installed ({a.trl_python}: run scripts/setup_trl_venv.sh)", file=sys.stderr)
        impls.remove("trl")
    tmp = tempfile.mkdtemp(prefix="bench_dpo.")
    try:
        if a.pairs:
            pairs = [json.loads(line) for line in open(a.pairs) if line.strip()][:a.batch]
            if len(pairs) < a.batch:
                raise SystemExit(f"{a.pairs}: {len(pairs)} pairs, --batch is {a.batch}")
        else:
            pairs = make_pairs(a.batch, a.seed)
        pairs_path = os.path.join(tmp, "pairs.jsonl")
        with open(pairs_path, "w") as f:
            f.writelines(json.dumps(p) + "\n" for p in pairs)
        sides = tokenize_pairs(a.model, pairs, a.seq, tmp)
        tokens_path = os.path.join(tmp, "tokens.json")
        json.dump(sides, open(tokens_path, "w"))
        env = dict(os.environ)
        # As bench_infer.py runs llama.cpp: OpenMP threads that wait sleep
        # instead of spinning (on a shared machine a spinning libgomp barrier
        # burns the CPU its preempted partner needs).
        env.setdefault("OMP_WAIT_POLICY", "passive")
        if a.blas_dir:
            env["LD_LIBRARY_PATH"] = a.blas_dir + (":" + env["LD_LIBRARY_PATH"]
                                                   if env.get("LD_LIBRARY_PATH") else "")
        results = []   # (threads, [result...], load before, load after)
        for threads in (int(t) for t in a.threads.split(",")):
            load0, r = os.getloadavg()[0], []
            if "lemonpc" in impls:
                longest = max(len(x[k]["tokens"]) for x in sides for k in ("chosen", "rejected"))
                span = min(a.seq, (longest + 3) // 4 * 4)   # src/train/data.h: lm_batch_span
                for rows in a.rows.split(","):
                    r.append(run_lemonpc(a, pairs_path, threads, os.path.join(tmp, f"run{threads}"),
                                         rows, 2 * a.batch * (a.seq if rows == "seq" else span)))
            if "trl" in impls:
                for ref in a.trl_ref.split(","):
                    r.append(bt.run_json([a.trl_python, __file__, "--trl-worker", "--model", a.model,
                                          "--tokens", tokens_path, "--threads", str(threads),
                                          "--seq", str(a.seq), "--steps", str(a.steps),
                                          "--rank", str(a.rank), "--beta", str(a.beta),
                                          "--lr", str(a.lr), "--trl-ref", ref], env=env))
            for v in r:
                if v["tokens"] != r[0]["tokens"]:
                    raise SystemExit(f"{v['impl']} saw {v['tokens']} tokens a step, "
                                     f"{r[0]['impl']} {r[0]['tokens']}")
            results.append((threads, r, load0, os.getloadavg()[0]))
            for v in r:
                print(json.dumps(v), file=sys.stderr)
            print(f"{threads} threads: " + ", ".join(f"{v['impl']} {v['s_per_step']:.1f} s/step"
                                                     for v in r), file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def name(v):
        return v["impl"] + (f" ({'precompute' if v['ref'] == 'precompute' else 'ref each step'})"
                            if "ref" in v else "")

    blas = sorted({v["blas"] for _, r, _, _ in results for v in r if "blas" in v})
    print(f"\nSmolLM2-135M DPO, LoRA r{a.rank} alpha {2 * a.rank} (7 projections), sigmoid "
          f"beta {a.beta}, {a.batch} pairs a step, seq cap {a.seq}, {a.steps} timed steps after 1 "
          f"warm-up" + (f"; torch's BLAS: {'; '.join(blas)}" if blas else "") + "\n")
    print("| threads | impl | s/step | pairs/s | tokens/s | CPU s/step | positions/step | "
          "peak RSS MB | loss first -> last | margin last | load avg before -> after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for threads, r, l0, l1 in results:
        for v in r:
            print(f"| {threads} | {name(v)} | {v['s_per_step']:.2f} | {a.batch / v['s_per_step']:.3f} | "
                  f"{v['tokens'] / v['s_per_step']:.1f} | {v['cpu_s_per_step']:.2f} | {v['positions']} | "
                  f"{v['peak_rss_mb']:.0f} | {v['loss_first']:.4f} -> {v['loss_last']:.4f} | "
                  f"{v['margin_last']:.4f} | {l0:.1f} -> {l1:.1f} |")
    others = [v for v in results[0][1] if not v["impl"].startswith("lemonpc")] if results else []
    if "lemonpc" in impls and others:
        print("\n| threads | ours | vs | speed ours / TRL (s/step TRL / ours) | CPU s/step TRL / ours | "
              "peak RSS ours / TRL |")
        print("|---|---|---|---|---|---|")
        for threads, r, _, _ in results:
            mine = [v for v in r if v["impl"].startswith("lemonpc")]
            theirs = [v for v in r if not v["impl"].startswith("lemonpc")]
            for o, v in ((o, v) for o in mine for v in theirs):
                print(f"| {threads} | {o['impl']} | {name(v)} | {v['s_per_step'] / o['s_per_step']:.2f}x | "
                      f"{v['cpu_s_per_step'] / o['cpu_s_per_step']:.2f}x | "
                      f"{o['peak_rss_mb'] / v['peak_rss_mb']:.2f}x |")
    ours = [v for _, r, _, _ in results for v in r if v["impl"].startswith("lemonpc")]
    if len(ours) > 1 and len(a.rows.split(",")) > 1:
        print("\n| threads | speed rows cut to the longest / rows of --seq | CPU s/step seq / longest |")
        print("|---|---|---|")
        for threads, r, _, _ in results:
            cut = [v for v in r if v["impl"] == "lemonpc"]
            full = [v for v in r if v["impl"] == "lemonpc (rows of --seq)"]
            if cut and full:
                print(f"| {threads} | {full[0]['s_per_step'] / cut[0]['s_per_step']:.2f}x | "
                      f"{full[0]['cpu_s_per_step'] / cut[0]['cpu_s_per_step']:.2f}x |")


if __name__ == "__main__":
    main()
