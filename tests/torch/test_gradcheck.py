"""The C trainer against PyTorch, the way llm.c checks itself: PyTorch (in
float64) computes logits, the masked loss, every parameter gradient, every
LoRA gradient and 10 AdamW steps of a small random Llama; build/tools/
lm_gradcheck loads the same model from GGUF, recomputes everything in f32
and compares. Tolerances (checked in the tool): logits and loss 1e-4
relative, gradients 1e-3 (max |ours - ref| / max |ref| per tensor), AdamW
losses 1e-4.

The reference runs each sequence alone at its true length, while the C side
gets one right-padded batch: agreement shows padding is inert."""
import re
import subprocess

import numpy as np
import pytest
import torch

import gguf_mini
import llama_ref as ref

STEPS = 10
LR, WD, CLIP = 1e-3, 0.1, 1.0
RANK, ALPHA = 4, 8.0


def make_batch(cfg, gen):
    B, T = 3, 12
    lens = [12, 9, 5]
    starts = [3, 2, 0]            # first position whose target is trained
    tokens = torch.full((B, T), 2, dtype=torch.long)   # pad == eos, as in SmolLM2
    targets = torch.full((B, T), 2, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.uint8)
    for b in range(B):
        n = lens[b]
        seq = torch.randint(3, cfg.vocab, (n,), generator=gen)
        tokens[b, :n] = seq
        targets[b, :n - 1] = seq[1:]
        targets[b, n - 1] = 2     # the turn's end token is trained, by position
        mask[b, starts[b]:n] = 1
    return tokens, targets, mask, lens


def ref_loss(cfg, P, tokens, targets, mask, lens, lora=None, scale=0.0):
    """Per-sequence forward at true length; returns (loss, logits [B,T,V])."""
    B, T = tokens.shape
    logits = torch.zeros(B, T, cfg.vocab, dtype=torch.float64)
    nll, count = 0.0, int(mask.sum())
    for b in range(B):
        n = lens[b]
        z = ref.forward(cfg, P, tokens[b:b + 1, :n], lora, scale)[0]
        m = mask[b, :n].bool()
        nll = nll + torch.nn.functional.cross_entropy(z[m], targets[b, :n][m], reduction="sum")
        logits[b, :n] = z.detach()
    return nll / count, logits


def adamw_losses(cfg, params, trainable, batch, lora=None, scale=0.0):
    decay = [p for p in trainable if p.dim() == 2]
    no_decay = [p for p in trainable if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.999), eps=1e-8)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss, _ = ref_loss(cfg, params, *batch, lora=lora, scale=scale)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, CLIP)
        opt.step()
        losses.append(loss.item())
    return losses


def leaf(d):
    return {k: v.clone().requires_grad_(True) for k, v in d.items()}


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_gradcheck(tool, tmp_path, tied):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234 + tied)
    cfg = ref.Config(tied=tied)
    P0 = ref.init_params(cfg, gen)
    L0 = ref.init_lora(cfg, RANK, gen)
    batch = make_batch(cfg, gen)
    tokens, targets, mask, lens = batch

    # full-parameter gradients
    P = leaf(P0)
    loss, logits = ref_loss(cfg, P, *batch)
    loss.backward()

    # LoRA gradients on all seven projections (base frozen)
    Lp = leaf(L0)
    lora_loss, lora_logits = ref_loss(cfg, P0, *batch, lora=Lp, scale=ALPHA / RANK)
    lora_loss.backward()

    P2 = leaf(P0)
    full_losses = adamw_losses(cfg, P2, list(P2.values()), batch)
    L2 = leaf(L0)
    lora_losses = adamw_losses(cfg, P0, list(L2.values()), batch, lora=L2, scale=ALPHA / RANK)

    model_path, ref_path = tmp_path / "model.gguf", tmp_path / "ref.gguf"
    gguf_mini.write(model_path, [
        ("general.architecture", "llama"),
        ("llama.embedding_length", ("u32", cfg.dim)),
        ("llama.block_count", ("u32", cfg.n_layers)),
        ("llama.feed_forward_length", ("u32", cfg.ffn)),
        ("llama.attention.head_count", ("u32", cfg.n_heads)),
        ("llama.attention.head_count_kv", ("u32", cfg.n_kv_heads)),
        ("llama.rope.freq_base", ("f32", cfg.rope_base)),
        ("llama.attention.layer_norm_rms_epsilon", ("f32", cfg.eps)),
    ], [(ref.gguf_name(k), ref.to_gguf_layout(cfg, k, v)) for k, v in P0.items()])

    tensors = [("logits", logits.reshape(-1, cfg.vocab).float().numpy()),
               ("lora_logits", lora_logits.reshape(-1, cfg.vocab).float().numpy())]
    tensors += [("grad." + ref.gguf_name(k), ref.to_gguf_layout(cfg, k, v.grad)) for k, v in P.items()]
    tensors += [("lora." + ref.gguf_name(k), ref.to_gguf_layout(cfg, k, v)) for k, v in L0.items()]
    tensors += [("lora_grad." + ref.gguf_name(k), ref.to_gguf_layout(cfg, k, v.grad)) for k, v in Lp.items()]
    gguf_mini.write(ref_path, [
        ("gc.B", ("u32", tokens.shape[0])), ("gc.T", ("u32", tokens.shape[1])),
        ("gc.tokens", ("arr_i32", tokens.numpy())), ("gc.targets", ("arr_i32", targets.numpy())),
        ("gc.mask", ("arr_u8", mask.numpy())), ("gc.lens", ("arr_i32", lens)),
        ("gc.loss", ("f64", loss.item())), ("gc.lora_loss", ("f64", lora_loss.item())),
        ("gc.lora_rank", ("u32", RANK)), ("gc.lora_alpha", ("f32", ALPHA)),
        ("gc.lr", ("f32", LR)), ("gc.weight_decay", ("f32", WD)), ("gc.grad_clip", ("f32", CLIP)),
        ("gc.adamw_losses", ("arr_f64", full_losses)),
        ("gc.lora_adamw_losses", ("arr_f64", lora_losses)),
    ], tensors)

    r = subprocess.run([str(tool("lm_gradcheck")), str(model_path), str(ref_path)],
                       capture_output=True, text=True, timeout=300)
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    # every tensor really was compared (the tool prints one row per tensor)
    n_grad = len(re.findall(r"^grad ", r.stdout, re.M))
    n_lora = len(re.findall(r"^lora_grad ", r.stdout, re.M))
    assert n_grad == len(P0) and n_lora == len(L0), r.stdout
    assert re.search(r"^ALL OK", r.stdout, re.M)
    # the optimizer really moved the loss (otherwise matching would be vacuous)
    assert full_losses[-1] < full_losses[0] - 1e-3 and lora_losses[-1] < lora_losses[0] - 1e-3
    assert np.isfinite(full_losses).all()
