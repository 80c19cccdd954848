#!/usr/bin/env python3
"""Training benchmark: our C trainer (build/bench/train_step) against a plain
PyTorch training loop, same weights, same tokens, same thread count.

SmolLM2-135M, sequence 256, batch 8 (one optimizer step = 8 sequences, run
as micro-batches of --micro-full / --micro-lora sequences on every side,
gradients accumulated), AdamW, every position counted in the loss. Each
configuration runs in its own process so peak RSS is per run. Prints a
Markdown table: tokens/s, peak RSS, ratios, and model FLOP utilisation
(achieved FLOP/s over threads x --peak-gflops f32 peak per core).

The PyTorch side is tests/torch/llama_ref.py's model (a plain Llama written
from the HF conventions) on weights dequantized by tests/torch/gguf_mini.py;
LoRA there is plain A/B matrices on all seven projections, as ours. It runs
under /usr/bin/python3 (Debian's python3-torch) unless --torch-python says
otherwise.

The TRL column is Hugging Face TRL's SFTTrainer on a transformers
LlamaForCausalLM holding the same weights, fed the same token rows
pre-tokenized (peft LoraConfig r, alpha = 2r, the same seven projections,
for LoRA). It runs in the venv of scripts/setup_trl_venv.sh (TRL 0.8.6 on
the same Debian torch) and is skipped, with a note, when that is missing.

The variable-length table (--tables varlen) is what a user's NPC data
costs: --varlen conversations drawn with a fixed seed from Orlando's
(examples/luminara/data/orlando/*.jsonl; its first 715 were 54 to 277 tokens
rendered, median 102), trained by `lemonpc train` itself (LoRA r --rank, --batch, --seq,
--varlen-epochs epochs, constant LR), unpacked and with --pack, each with
every row computed at --seq (LEMONPC_TRAIN_FULL_ROWS=1, the trainer before
it cut batches to their longest row) and cut to the batch's longest row,
back to back in one run. tokens/s counts real tokens over the step times
of metrics.jsonl (forward, backward, AdamW), the first step excluded as
warm-up; the losses show both layouts did the same work.

    python3 bench/bench_train.py [--threads N] [--steps S] [--model PATH]
                                 [--impls lemonpc,torch,trl] [--tables fixed,varlen]
                                 [--ours avx512,avx2,avx512:bf16] [--repeat R]

--ours runs our trainer once per variant, KERNELS[:bf16] (LEMONPC_KERNELS,
and --precision bf16 with ":bf16"), back to back, the whole round --repeat
times (a shared machine's load drifts: interleaving spreads it over all
variants alike); tokens/s is the median over the repeats, and a second
table compares every variant with the first. The ratio tables against
PyTorch/TRL use the first variant.

PyTorch runs with LD_LIBRARY_PATH=--blas-dir (default: Debian's
libopenblas0-openmp folder, when installed), since Debian's torch calls
whatever libblas.so.3 the alternatives pick and the reference BLAS is
about 9x slower: the worker reports the BLAS it loaded, and no
ratio is printed against a reference BLAS.
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
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-openmp"   # Debian's libopenblas0-openmp
BUILD = ROOT / os.environ.get("LEMONPC_BUILD", "build")
sys.path.insert(0, str(ROOT / "tests" / "torch"))   # gguf_mini, llama_ref (workers)


def default_model():
    p = os.environ.get("LEMONPC_MODEL")
    if p:
        return p
    cache = os.environ.get("LEMONPC_CACHE", os.path.expanduser("~/.cache/lemonpc"))
    return os.path.join(cache, "SmolLM2-135M-Instruct.Q4_1.gguf")


# ---------------------------------------------------------------- torch side

def load_model(a):
    """GGUF -> (llama_ref Config, HF-layout f32 parameter dict, GGUF metadata)."""
    import torch
    import gguf_mini
    import llama_ref as R

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
    return cfg, P, kvs


def read_tokens(path):
    return [[int(x) for x in line.split()] for line in open(path)]


def torch_worker(a):
    import torch
    import llama_ref as R

    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    cfg, P, _ = load_model(a)
    rows = read_tokens(a.tokens)
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
    # the BLAS torch really loaded, as folder/file ("blas/libblas.so.3" is the reference one)
    blas = sorted({"/".join(os.path.realpath(line.split()[-1]).split("/")[-2:])
                   for line in open("/proc/self/maps") if "blas" in line.split()[-1]})
    print(json.dumps({"impl": f"torch {torch.__version__}", "mode": a.mode, "threads": a.threads,
                      "blas": ", ".join(blas),
                      "tok_s": tps, "s_per_step": sum(times) / len(times),
                      "cpu_s_per_step": sum(cpu) / len(cpu),
                      "loss_first": losses[0], "loss_last": losses[-1],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


# ---------------------------------------------------------------- TRL side

HF_PROJ = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
           "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
           "down": "mlp.down_proj"}


def hf_llama(cfg, P, kvs):
    """llama_ref parameters (HF layout already) -> transformers LlamaForCausalLM."""
    import transformers
    arch = kvs["general.architecture"]
    hf = transformers.LlamaConfig(
        vocab_size=cfg.vocab, hidden_size=cfg.dim, intermediate_size=cfg.ffn,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads, rms_norm_eps=cfg.eps, rope_theta=cfg.rope_base,
        max_position_embeddings=int(kvs.get(f"{arch}.context_length", 2048)),
        tie_word_embeddings=cfg.tied, attention_bias=False, hidden_act="silu",
        torch_dtype="float32")
    model = transformers.LlamaForCausalLM(hf)
    sd = {"model.embed_tokens.weight": P["embed"], "model.norm.weight": P["final_norm"],
          "lm_head.weight": P["embed"] if cfg.tied else P["lm_head"]}
    for l in range(cfg.n_layers):
        sd[f"model.layers.{l}.input_layernorm.weight"] = P[f"{l}.attn_norm"]
        sd[f"model.layers.{l}.post_attention_layernorm.weight"] = P[f"{l}.ffn_norm"]
        for p, name in HF_PROJ.items():
            sd[f"model.layers.{l}.{name}.weight"] = P[f"{l}.{p}"]
    model.load_state_dict(sd, strict=True)
    return model


def gguf_tokenizer(kvs, max_len):
    """The model's byte-level BPE from the GGUF vocabulary and merges (plain
    text matches llama.cpp's ids; special tokens are not registered). The
    data is pre-tokenized, so SFTTrainer's collator only uses its pad token."""
    import tokenizers
    from transformers import PreTrainedTokenizerFast
    toks = kvs["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in kvs["tokenizer.ggml.merges"]]
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE({t: i for i, t in enumerate(toks)}, merges))
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    # Id 0 (<|endoftext|>) as pad: the bench's random ids start at 1, so the
    # collator's "labels[input_ids == pad] = -100" masks nothing.
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=toks[0], eos_token=toks[0],
                                   model_max_length=max_len, padding_side="right")


def trl_lora_config(rank):
    """peft's LoRA as ours: r, alpha 2r, no dropout, the seven projections."""
    import peft
    return peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none",
                           target_modules=[n.split(".")[1] for n in HF_PROJ.values()],
                           task_type="CAUSAL_LM")


def trl_step_clock():
    """A TrainerCallback that marks (wall, CPU, torch threads) after each
    optimizer step, and its list of marks (for trl_step_times)."""
    import torch
    from transformers import TrainerCallback
    marks = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks.append((time.perf_counter(), time.process_time(), torch.get_num_threads()))
    return Clock(), marks


def trl_step_times(marks, threads):
    """Wall and CPU seconds of each step after the first, each timed from
    the end of the step before it (so the warm-up step, and what precedes
    it, is not timed, and trainer overhead counts); stops unless torch ran
    with `threads` throughout."""
    if any(m[2] != threads for m in marks):
        raise SystemExit(f"trl worker: torch ran with {[m[2] for m in marks]} threads, not {threads}")
    return ([m[0] - p[0] for p, m in zip(marks, marks[1:])],
            [m[1] - p[1] for p, m in zip(marks, marks[1:])])


def trl_worker(a):
    """SFTTrainer as a user would run it on CPU: pre-tokenized fixed-length
    rows (what packing produces; nothing to pad), labels = input_ids shifted
    inside the model, micro-batches with gradient accumulation, AdamW with
    a constant learning rate, clipping at 1.0, fp32, no checkpointing."""
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
    cfg, P, kvs = load_model(a)
    model = hf_llama(cfg, P, kvs)
    del P
    rows = read_tokens(a.tokens)                       # B rows of T + 1 ids
    B, T = len(rows), len(rows[0]) - 1
    if B % a.micro:
        raise SystemExit(f"trl worker: batch {B} is not a multiple of micro-batch {a.micro}")
    tok = gguf_tokenizer(kvs, T + 1)
    if any(t == tok.pad_token_id for r in rows for t in r):
        raise SystemExit(f"trl worker: {a.tokens} holds pad id {tok.pad_token_id}")
    # T + 1 ids per row: the model shifts labels, so the loss covers the same
    # B x T next-token targets as the other two sides.
    ds = datasets.Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * (T + 1)] * B})

    peft_cfg = trl_lora_config(a.rank) if a.mode == "lora" else None
    clock, marks = trl_step_clock()

    with tf.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, use_cpu=True, seed=1, max_steps=a.steps + 1,
            per_device_train_batch_size=a.micro, gradient_accumulation_steps=B // a.micro,
            learning_rate=1e-4 if a.mode == "lora" else 1e-5, lr_scheduler_type="constant",
            warmup_steps=0, optim="adamw_torch", weight_decay=0.01, adam_beta1=0.9,
            adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0, gradient_checkpointing=False,
            logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
            dataloader_num_workers=0)
        trainer = trl.SFTTrainer(model=model, args=args, train_dataset=ds, tokenizer=tok,
                                 peft_config=peft_cfg, dataset_text_field="input_ids",
                                 max_seq_length=T + 1, packing=False, callbacks=[clock])
        trainer.train()
    times, cpu = trl_step_times(marks, a.threads)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    for s, loss in enumerate(losses):
        print(f"trl step {s} loss {loss:.4f}" + (f" {times[s - 1]:.2f}s" if s else ""), file=sys.stderr)
    print(json.dumps({"impl": f"trl {trl.__version__}", "mode": a.mode, "threads": marks[-1][2],
                      "tok_s": B * T * len(times) / sum(times), "s_per_step": sum(times) / len(times),
                      "cpu_s_per_step": sum(cpu) / len(cpu),
                      "loss_first": losses[0], "loss_last": losses[-1],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


# ---------------------------------------------------------------- driver

def default_trl_python():
    venv = os.environ.get("LEMONPC_TRL_VENV") or os.path.join(
        os.environ.get("LEMONPC_CACHE", os.path.expanduser("~/.cache/lemonpc")), "trl-venv")
    return os.path.join(venv, "bin", "python")


def trl_available(python):
    if not os.path.exists(python):
        return False
    p = subprocess.run([python, "-c", "import trl, peft, datasets"], capture_output=True)
    return p.returncode == 0


# ---------------------------------------------------------------- variable-length rows

def varlen_data(n, seed, path):
    """n of Orlando's conversations (seeded draw), as a training JSONL."""
    import glob
    convs = []
    for f in sorted(glob.glob(str(ROOT / "examples/luminara/data/orlando/*.jsonl"))):
        convs += [json.loads(line)["messages"] for line in open(f) if line.strip()]
    if len(convs) < n:
        raise SystemExit(f"only {len(convs)} conversations in examples/luminara/data/orlando")
    with open(path, "w") as f:
        for m in random.Random(seed).sample(convs, n):
            f.write(json.dumps({"messages": m}) + "\n")


def varlen_run(a, data, pack, full_rows, out):
    """One `lemonpc train` run; tokens/s over the step times after the first."""
    import shutil
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(BUILD / "lemonpc"), "train", "--model", a.model, "--data", data, "--out", out,
           "--threads", str(a.threads), "--batch", str(a.batch), "--seq", str(a.seq),
           "--epochs", str(a.varlen_epochs), "--lora-rank", str(a.rank),
           "--lora-alpha", str(2 * a.rank), "--lr", "1e-4", "--warmup", "0",
           "--schedule", "constant", "--save-every", "0"] + (["--pack"] if pack else [])
    env = dict(os.environ)
    env.pop("LEMONPC_TRAIN_FULL_ROWS", None)
    if full_rows:
        env["LEMONPC_TRAIN_FULL_ROWS"] = "1"
    t0 = time.time()
    with tempfile.TemporaryFile("w+") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise SystemExit(f"lemonpc train failed ({status}):\n{log.read()[-2000:]}")
    steps = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    if len(steps) < 2:
        raise SystemExit(f"lemonpc train: {len(steps)} steps, need 2 (raise --varlen-epochs)")
    timed = steps[1:]
    secs = sum(s["tokens"] / s["tokens_per_s"] for s in timed)
    return {"pack": pack, "rows": "--seq" if full_rows else "longest", "steps": len(steps),
            "tokens_per_step": sum(s["tokens"] for s in timed) / len(timed),
            "tok_s": sum(s["tokens"] for s in timed) / secs, "s_per_step": secs / len(timed),
            "loss_first": steps[0]["loss"], "loss_last": steps[-1]["loss"],
            "cpu_s": ru.ru_utime + ru.ru_stime, "wall_s": time.time() - t0}


def varlen_table(a):
    if not (BUILD / "lemonpc").exists():
        raise SystemExit(f"{BUILD / 'lemonpc'} missing: run `make {BUILD.name}/lemonpc`")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "conv.jsonl")
        varlen_data(a.varlen, 1234, data)
        load = os.getloadavg()
        rows = []
        for pack in (False, True):
            for full_rows in (True, False):
                r = varlen_run(a, data, pack, full_rows, os.path.join(tmp, "run"))
                print(f"varlen pack={pack} rows={r['rows']}: {r['tok_s']:.1f} tok/s", file=sys.stderr)
                rows.append(r)
        load_end = os.getloadavg()
    print(f"\nVariable-length conversations: {a.varlen} of Orlando's, LoRA r{a.rank}, batch "
          f"{a.batch}, seq {a.seq}, {a.varlen_epochs} epochs, {a.threads} threads, `lemonpc train`; "
          f"load average {load[0]:.1f} -> {load_end[0]:.1f}\n")
    print("| pack | rows computed to | steps | real tokens/step | tokens/s | s/step | CPU s (whole run) | "
          "loss first -> last |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {'yes' if r['pack'] else 'no'} | {r['rows']} | {r['steps']} | "
              f"{r['tokens_per_step']:.0f} | {r['tok_s']:.1f} | {r['s_per_step']:.2f} | "
              f"{r['cpu_s']:.1f} | {r['loss_first']:.4f} -> {r['loss_last']:.4f} |")
    for pack in (False, True):
        full, cut = [r for r in rows if r["pack"] == pack]
        print(f"\n{'packed' if pack else 'unpacked'}: rows cut to the longest / rows of --seq: "
              f"{cut['tok_s'] / full['tok_s']:.2f}x tokens/s, {full['cpu_s'] / cut['cpu_s']:.2f}x "
              f"less CPU time", end="")
    print()


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
    ap.add_argument("--trl-python", default=default_trl_python(),
                    help="python of scripts/setup_trl_venv.sh; TRL is skipped when it is missing")
    ap.add_argument("--impls", default="lemonpc,torch,trl", help="which columns to run")
    ap.add_argument("--tables", default="fixed,varlen",
                    help="fixed: rows of --seq random tokens against PyTorch/TRL; varlen: "
                         "Orlando's conversations through lemonpc train, rows of --seq against "
                         "rows cut to the longest")
    ap.add_argument("--varlen", type=int, default=40, help="conversations in the varlen table")
    ap.add_argument("--varlen-epochs", type=int, default=2)
    ap.add_argument("--ours", default="",
                    help="our variants KERNELS[:bf16], comma separated (default: the widest set, f32)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of --ours, back to back")
    ap.add_argument("--blas-dir", default=OPENBLAS if os.path.isdir(OPENBLAS) else "",
                    help="LD_LIBRARY_PATH for the PyTorch and TRL workers: a folder holding libblas.so.3")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--trl-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tokens", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--micro", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_worker:
        return torch_worker(a)
    if a.trl_worker:
        return trl_worker(a)

    tables = a.tables.split(",")
    if "fixed" in tables:
        fixed_table(a)
    if "varlen" in tables:
        varlen_table(a)


def fixed_table(a):
    impls = a.impls.split(",")
    variants = a.ours.split(",") if a.ours else [""]
    exe = BUILD / "bench" / "train_step"
    if not exe.exists():
        raise SystemExit(f"{exe} missing: run `make build/bench/train_step`")
    if not os.path.exists(a.model):
        raise SystemExit(f"{a.model} missing: run scripts/fetch_model.sh")
    if "trl" in impls and not trl_available(a.trl_python):
        print(f"TRL: not installed ({a.trl_python}: run scripts/setup_trl_venv.sh)", file=sys.stderr)
        impls.remove("trl")
    rng = random.Random(1234)
    tok = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    with tok:
        for _ in range(a.batch):
            tok.write(" ".join(str(rng.randrange(1, 49152)) for _ in range(a.seq + 1)) + "\n")
    load = os.getloadavg()
    results = []   # (mode, micro, {impl: result})
    try:
        for mode in a.modes.split(","):
            micro = a.micro_full if mode == "full" else a.micro_lora
            worker = ["--model", a.model, "--tokens", tok.name, "--threads", str(a.threads),
                      "--mode", mode, "--micro", str(micro), "--steps", str(a.steps),
                      "--rank", str(a.rank)]
            r = {}
            if "lemonpc" in impls:
                runs = {v: [] for v in variants}
                for _ in range(a.repeat):
                    for v in variants:
                        kernels, _, prec = v.partition(":")
                        env = dict(os.environ)
                        env.pop("LEMONPC_KERNELS", None)
                        if kernels:
                            env["LEMONPC_KERNELS"] = kernels
                        runs[v].append(run_json([str(exe), a.model, tok.name, str(a.threads), mode,
                                                 str(a.batch), str(a.seq), str(micro), str(a.steps),
                                                 str(a.rank), prec or "f32"], env))
                        print(f"  {mode} {v or 'default'}: {runs[v][-1]['tok_s']:.1f} tok/s "
                              f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr)
                for i, v in enumerate(variants):
                    res = sorted(runs[v], key=lambda x: x["tok_s"])[len(runs[v]) // 2]   # median
                    res["all_tok_s"] = [x["tok_s"] for x in runs[v]]
                    res["impl"] = f"lemonpc {res['kernels']}" + (" bf16" if res["precision"] == "bf16" else "")
                    r["lemonpc" if i == 0 else f"lemonpc#{i}"] = res
            blas_env = dict(os.environ)
            if a.blas_dir:
                blas_env["LD_LIBRARY_PATH"] = a.blas_dir + (":" + blas_env["LD_LIBRARY_PATH"]
                                                            if blas_env.get("LD_LIBRARY_PATH") else "")
            if "torch" in impls:
                r["torch"] = run_json([a.torch_python, __file__, "--torch-worker"] + worker, blas_env)
            if "trl" in impls:
                r["trl"] = run_json([a.trl_python, __file__, "--trl-worker"] + worker, blas_env)
            results.append((mode, micro, r))
            print(f"{mode}: " + ", ".join(f"{k} {v['tok_s']:.1f} tok/s" for k, v in r.items()),
                  file=sys.stderr)
    finally:
        os.unlink(tok.name)
    load_end = os.getloadavg()

    peak = a.threads * a.peak_gflops * 1e9
    print(f"\nSmolLM2-135M training, seq {a.seq}, batch {a.batch}, {a.threads} threads, "
          f"{a.steps} timed steps after 1 warm-up; load average {load[0]:.1f} -> {load_end[0]:.1f}\n")
    print("| mode | micro | impl | tokens/s | s/step | CPU s/step | peak RSS MB | MFU | loss first -> last |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, micro, r in results:
        fpt = r["lemonpc"]["flop_per_token"] if "lemonpc" in r else None   # counted in C
        for v in r.values():
            mfu = f"{100 * v['tok_s'] * fpt / peak:.1f}%" if fpt else "-"
            impl = v["impl"] + (f" ({v['blas']})" if v.get("blas") else "")
            tps = f"{v['tok_s']:.1f}"
            if len(v.get("all_tok_s", [])) > 1:
                tps += " (" + ", ".join(f"{x:.1f}" for x in v["all_tok_s"]) + ")"
            print(f"| {mode} | {micro} | {impl} | {tps} | {v['s_per_step']:.1f} | "
                  f"{v['cpu_s_per_step']:.1f} | {v['peak_rss_mb']:.0f} | {mfu} | "
                  f"{v['loss_first']:.4f} -> {v['loss_last']:.4f} |")
    if len(variants) > 1 and "lemonpc" in impls:
        r0 = results[0][2]
        print("\n| mode | " + " | ".join(f"{r0[f'lemonpc#{i}']['impl']} / {r0['lemonpc']['impl']} "
                                        f"(tokens/s; CPU s/step)" for i in range(1, len(variants))) + " |")
        print("|---|" + "---|" * (len(variants) - 1))
        for mode, micro, r in results:
            print(f"| {mode} | " + " | ".join(
                f"{r[f'lemonpc#{i}']['tok_s'] / r['lemonpc']['tok_s']:.2f}x; "
                f"{r['lemonpc']['cpu_s_per_step'] / r[f'lemonpc#{i}']['cpu_s_per_step']:.2f}x"
                for i in range(1, len(variants))) + " |")
    others = [k for k in ("torch", "trl") if k in impls]
    for mode, micro, r in results:
        for k in others:
            if k in r and "blas/libblas.so.3" in r[k].get("blas", "").split(", ") and k in others:
                print(f"\n{k} ran on the reference BLAS ({r[k]['blas']}): no ratio against it "
                      f"(install libopenblas0 or give --blas-dir)")
                others.remove(k)
    if "lemonpc" in impls and others:
        head = " | ".join(f"tokens/s ours / {k} | CPU s/step {k} / ours | peak RSS ours / {k}"
                          for k in others)
        print(f"\n| mode | {head} |")
        print("|---|" + "---|" * 3 * len(others))
        for mode, micro, r in results:
            ours = r["lemonpc"]
            cells = []
            for k in others:
                t = r[k]
                cells += [f"{ours['tok_s'] / t['tok_s']:.2f}x",
                          f"{t['cpu_s_per_step'] / ours['cpu_s_per_step']:.2f}x",
                          f"{ours['peak_rss_mb'] / t['peak_rss_mb']:.2f}x"]
            print(f"| {mode} | " + " | ".join(cells) + " |")
    print(f"\nMFU = tokens/s x FLOPs/token (6N full, 4N LoRA, N = parameters, plus causal "
          f"attention) / ({a.threads} x {a.peak_gflops:.0f} GFLOP/s).")


if __name__ == "__main__":
    main()
