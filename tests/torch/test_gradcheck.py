"""The C trainer against PyTorch, the way llm.c checks itself: PyTorch (in
float64) computes logits, the masked loss, every parameter gradient, every
LoRA gradient and 10 AdamW steps of a small random Llama (and, with LoRA
dropout, the LoRA numbers again on masks that tests/torch/dropout_ref.py
rebuilds from the hash the C side uses); build/tools/
lm_gradcheck loads the same model from GGUF, recomputes everything in f32
and compares, once under each kernel set this machine runs (avx512, avx2,
scalar: conftest.kernel_sets; LEMONPC_KERNELS picks one). Tolerances (checked in the tool): logits and loss 1e-4
relative, gradients 1e-3 (max |ours - ref| / max |ref| per tensor), AdamW
losses 1e-4.

The reference runs each sequence alone at its true length, while the C side
gets one right-padded batch: agreement shows padding is inert."""
import dataclasses
import re
import time

import numpy as np
import pytest
import torch

import dropout_ref
import gguf_mini
import llama_ref as ref

STEPS = 10
LR, WD, CLIP = 1e-3, 0.1, 1.0
RANK, ALPHA = 4, 8.0
# LoRA dropout key: a seed above 2^32 and a step and micro-batch other than 0
# (all of them must reach the hash whole)
DROP_SEED, DROP_STEP, DROP_MICRO = 0x1234_5678_9ABC, 5, 2


def make_batch(cfg, gen, packed=False):
    """Three sequences of 12, 9 and 5 tokens, right-padded one per row, or
    packed two rows of 16: [seq0, pad x4], [seq1, seq2, pad x2]. Returns
    (tokens, targets, mask, spans, packed); spans are (row, start, length)."""
    lens = [12, 9, 5]
    starts = [3, 2, 0]            # first position whose target is trained
    if packed:
        B, T, spans = 2, 16, [(0, 0, 12), (1, 0, 9), (1, 9, 5)]
    else:
        B, T, spans = 3, 12, [(b, 0, n) for b, n in enumerate(lens)]
    tokens = torch.full((B, T), 2, dtype=torch.long)   # pad == eos, as in SmolLM2
    targets = torch.full((B, T), 2, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.uint8)
    for (b, s, n), st in zip(spans, starts):
        seq = torch.randint(3, cfg.vocab, (n,), generator=gen)
        tokens[b, s:s + n] = seq
        targets[b, s:s + n - 1] = seq[1:]
        targets[b, s + n - 1] = 2  # the turn's end token is trained, by position
        mask[b, s + st:s + n] = 1
    return tokens, targets, mask, spans, packed


def ref_loss(cfg, P, tokens, targets, mask, spans, packed, lora=None, scale=0.0, drop=None,
             precision="f64"):
    """Each sequence alone at its true length; returns (loss, logits [B,T,V]).
    drop: LoRA dropout masks over the C side's batch rows, {"l.proj": [B*T, in]};
    each sequence gets the rows it occupies there."""
    B, T = tokens.shape
    logits = torch.zeros(B, T, cfg.vocab, dtype=torch.float64)
    nll, count = 0.0, int(mask.sum())
    for b, s, n in spans:
        d = None
        if drop is not None:
            r0 = b * T + s
            d = {k: torch.from_numpy(v[r0:r0 + n][None]) for k, v in drop.items()}
        z = ref.forward(cfg, P, tokens[b:b + 1, s:s + n], lora, scale, d, precision)[0]
        m = mask[b, s:s + n].bool()
        nll = nll + torch.nn.functional.cross_entropy(z[m], targets[b, s:s + n][m], reduction="sum")
        logits[b, s:s + n] = z.detach()
    return nll / count, logits


def adamw_losses(cfg, params, trainable, batch, lora=None, scale=0.0, steps=STEPS, lr=LR,
                 drops=None, precision="f64"):
    """drops: optional LoRA dropout masks per step (step s uses drops(s))."""
    decay = [p for p in trainable if p.dim() == 2]
    no_decay = [p for p in trainable if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.999), eps=1e-8)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss, _ = ref_loss(cfg, params, *batch, lora=lora, scale=scale,
                           drop=drops(len(losses)) if drops else None, precision=precision)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, CLIP)
        opt.step()
        losses.append(loss.item())
    return losses


def leaf(d):
    return {k: v.clone().requires_grad_(True) for k, v in d.items()}


def check_output(ks, r, n_params, n_lora, steps, dropout):
    """lm_gradcheck's verdict under kernel set ks: passed, and every tensor
    really was compared (the tool prints one row per tensor)."""
    what = f"LEMONPC_KERNELS={ks}:\n{r.stdout}{r.stderr}"
    assert r.returncode == 0, what
    assert re.search(rf"^kernels: {ks}$", r.stdout, re.M), what
    assert len(re.findall(r"^grad ", r.stdout, re.M)) == n_params, what
    assert len(re.findall(r"^lora_grad ", r.stdout, re.M)) == n_lora, what
    assert len(re.findall(r"^adamw ", r.stdout, re.M)) == steps, what
    n_drop = len(re.findall(r"^drop_grad ", r.stdout, re.M))
    assert n_drop == (n_lora if dropout > 0 else 0), what
    assert len(re.findall(r"^drop_adamw ", r.stdout, re.M)) == (steps if dropout > 0 else 0), what
    assert re.search(r"^ALL OK", r.stdout, re.M), what


def check(run_per_set, tmp_path, cfg, P0, L0, batch, model_path=None, steps=STEPS, lr=LR, dropout=0.0,
          precision="f64", skip=()):
    """Reference numbers from PyTorch -> ref.gguf; lm_gradcheck compares.
    dropout > 0 adds LoRA with dropout: gradients at (DROP_SEED, step
    DROP_STEP, micro-batch DROP_MICRO), then AdamW steps 0.. with micro 0.
    precision "bf16": the reference's matmuls take bf16-rounded inputs
    (llama_ref.MatmulBF16) and the C side runs --precision bf16, which only
    the avx512 set has: the other sets must refuse it."""
    pr = dict(precision=precision)
    tokens, targets, mask, spans, packed = batch
    B, T = tokens.shape
    valid = np.zeros((B, T), dtype=np.uint8)
    segments = np.zeros((B, T), dtype=np.int32)
    pos = np.zeros((B, T), dtype=np.int32)
    for i, (b, s, n) in enumerate(spans):
        valid[b, s:s + n] = 1
        segments[b, s:s + n] = i + 1
        pos[b, s:s + n] = np.arange(n)
    lens = [int(valid[b].nonzero()[0].max()) + 1 for b in range(B)]
    t0 = time.time()
    # full-parameter gradients
    P = leaf(P0)
    loss, logits = ref_loss(cfg, P, *batch, **pr)
    loss.backward()
    grads = {k: ref.to_gguf_layout(cfg, k, v.grad) for k, v in P.items()}
    del P
    # LoRA gradients on all seven projections (base frozen)
    Lp = leaf(L0)
    lora_loss, lora_logits = ref_loss(cfg, P0, *batch, lora=Lp, scale=ALPHA / RANK, **pr)
    lora_loss.backward()

    drop_kvs, drop_tensors = [], []
    if dropout > 0:
        N = B * T
        drops = lambda step, micro=0: dropout_ref.masks(cfg, dropout, DROP_SEED, step, micro, N)
        Ld = leaf(L0)
        drop_loss, drop_logits = ref_loss(cfg, P0, *batch, lora=Ld, scale=ALPHA / RANK,
                                          drop=drops(DROP_STEP, DROP_MICRO), **pr)
        drop_loss.backward()
        Ld2 = leaf(L0)
        drop_losses = adamw_losses(cfg, P0, list(Ld2.values()), batch, lora=Ld2, scale=ALPHA / RANK,
                                   steps=steps, lr=lr, drops=drops, **pr)
        # the masks really changed the numbers
        assert abs(drop_loss.item() - lora_loss.item()) > 1e-6 * abs(lora_loss.item())
        drop_kvs = [("gc.drop_p", ("f32", dropout)), ("gc.drop_seed", ("u64", DROP_SEED)),
                    ("gc.drop_step", ("u64", DROP_STEP)), ("gc.drop_micro", ("u64", DROP_MICRO)),
                    ("gc.drop_loss", ("f64", drop_loss.item())),
                    ("gc.drop_adamw_losses", ("arr_f64", drop_losses))]
        drop_tensors = [("drop_logits", drop_logits.reshape(-1, cfg.vocab).float().numpy())]
        drop_tensors += [("drop_grad." + ref.gguf_name(k), ref.to_gguf_layout(cfg, k, v.grad))
                         for k, v in Ld.items()]

    P2 = leaf(P0)
    full_losses = adamw_losses(cfg, P2, list(P2.values()), batch, steps=steps, lr=lr, **pr)
    del P2
    L2 = leaf(L0)
    lora_losses = adamw_losses(cfg, P0, list(L2.values()), batch, lora=L2, scale=ALPHA / RANK,
                               steps=steps, lr=lr, **pr)

    if model_path is None:
        model_path = tmp_path / "model.gguf"
        gguf_mini.write(model_path, *ref.gguf_model(cfg, P0))

    ref_path = tmp_path / "ref.gguf"
    tensors = [("logits", logits.reshape(-1, cfg.vocab).float().numpy()),
               ("lora_logits", lora_logits.reshape(-1, cfg.vocab).float().numpy())]
    tensors += [("grad." + ref.gguf_name(k), g) for k, g in grads.items()]
    tensors += [("lora." + ref.gguf_name(k), ref.to_gguf_layout(cfg, k, v)) for k, v in L0.items()]
    tensors += [("lora_grad." + ref.gguf_name(k), ref.to_gguf_layout(cfg, k, v.grad)) for k, v in Lp.items()]
    tensors += drop_tensors
    gguf_mini.write(ref_path, [
        ("gc.B", ("u32", tokens.shape[0])), ("gc.T", ("u32", tokens.shape[1])),
        ("gc.tokens", ("arr_i32", tokens.numpy())), ("gc.targets", ("arr_i32", targets.numpy())),
        ("gc.mask", ("arr_u8", mask.numpy())), ("gc.lens", ("arr_i32", lens)),
        ("gc.loss", ("f64", loss.item())), ("gc.lora_loss", ("f64", lora_loss.item())),
        ("gc.lora_rank", ("u32", RANK)), ("gc.lora_alpha", ("f32", ALPHA)),
        ("gc.lr", ("f32", lr)), ("gc.weight_decay", ("f32", WD)), ("gc.grad_clip", ("f32", CLIP)),
        ("gc.adamw_losses", ("arr_f64", full_losses)),
        ("gc.lora_adamw_losses", ("arr_f64", lora_losses)),
        ("gc.valid", ("arr_u8", valid)),
    ] + ([("gc.bf16", ("u32", 1))] if precision == "bf16" else []) + drop_kvs + ([("gc.segments", ("arr_i32", segments)), ("gc.pos", ("arr_i32", pos))] if packed else []),
        tensors)
    del tensors, grads

    print(f"reference done in {time.time() - t0:.1f}s")
    ran = []
    for ks, r in run_per_set("lm_gradcheck", model_path, ref_path, skip=skip):
        if precision == "bf16" and ks != "avx512":
            assert r.returncode == 2, f"LEMONPC_KERNELS={ks}:\n{r.stdout}{r.stderr}"
            assert "precision bf16 needs the avx512 kernel set" in r.stderr, r.stderr
            continue
        check_output(ks, r, len(P0), len(L0), steps, dropout)
        ran.append(ks)
    if precision == "bf16" and "avx512" in run_per_set.sets and "avx512" not in skip:
        assert ran == ["avx512"], ran
    # the optimizer really moved the loss (otherwise matching would be vacuous)
    assert full_losses[-1] < full_losses[0] - 1e-3 and lora_losses[-1] < lora_losses[0] - 1e-3
    assert np.isfinite(full_losses).all()


@pytest.mark.parametrize("tied,packed,dropout", [(True, False, 0.0), (False, False, 0.0),
                                                 (True, True, 0.0), (False, False, 0.1),
                                                 (True, True, 0.3)],
                         ids=["tied", "untied", "tied-packed", "untied-dropout", "tied-packed-dropout"])
def test_gradcheck(run_per_set, tmp_path, tied, packed, dropout):
    """Small random model (vocab 256, dim 64, 3 layers, 4 heads / 2 KV), float64.
    Packed: two sequences share a row; the reference still runs each alone
    (with dropout, on the mask rows its tokens occupy in the C batch)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234 + tied)
    cfg = ref.Config(tied=tied)
    P0 = ref.init_params(cfg, gen)
    L0 = ref.init_lora(cfg, RANK, gen)
    check(run_per_set, tmp_path, cfg, P0, L0, make_batch(cfg, gen, packed), dropout=dropout)


TOL_BF16_LOGITS = 2.5e-3   # lm_gradcheck's bf16 logits tolerance (||ours - ref|| / ||ref||)


@pytest.mark.parametrize("tied,packed,dropout", [(True, False, 0.0), (False, False, 0.1),
                                                 (True, True, 0.3)],
                         ids=["tied", "untied-dropout", "tied-packed-dropout"])
def test_gradcheck_bf16(run_per_set, tmp_path, tied, packed, dropout):
    """--precision bf16 against a reference that rounds the same matmul
    inputs to bf16 and sums in float64 (llama_ref.MatmulBF16). Not to the
    last bits: an input a hair apart in f32 and float64 can round to
    neighbouring bf16 values, and that step (2^-8) feeds every later
    matmul, so tensors compare by ||ours - ref|| / ||ref|| at tolerances
    set by how far such steps carry (lm_gradcheck.c: logits 2.5e-3,
    gradients 2e-2, losses 2e-3). The logits tell bf16 from f32: checked
    first, bf16 logits are more than twice their tolerance away from
    float64 ones, so a C side that skipped the rounding would fail. The
    GEMM itself is checked bit for bit in tests/test_tmm.c."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234 + tied)
    cfg = ref.Config(tied=tied)
    P0 = ref.init_params(cfg, gen)
    L0 = ref.init_lora(cfg, RANK, gen)
    batch = make_batch(cfg, gen, packed)
    logits = {}
    for precision in ("f64", "bf16"):
        _, logits[precision] = ref_loss(cfg, P0, *batch, precision=precision)
    valid = logits["f64"].abs().sum(-1) > 0   # positions the reference computed
    gap = float((logits["bf16"] - logits["f64"])[valid].norm() / logits["f64"][valid].norm())
    print(f"bf16 against float64 logits: ||bf16 - f64|| / ||f64|| = {gap:.2e}")
    assert gap > 2 * TOL_BF16_LOGITS, gap
    check(run_per_set, tmp_path, cfg, P0, L0, batch, dropout=dropout, precision="bf16")


# Llama-3.2-1B's settings scaled down: GQA 4:1 (32/8 heads there, 8/2 here),
# rope base 500000, Llama 3 rope scaling (factor 32, low/high frequency
# factors 1 and 4; the original context 8192 scaled to 64 so that the three
# bands of pairs -- kept, blended, slowed down -- all fall within these
# head dims and sequence lengths), untied output (1B ties it; the untied
# head is the path SmolLM2 does not take).
LLAMA3_SCALING = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64}


def llama3_config():
    return ref.Config(vocab=320, dim=128, n_layers=2, n_heads=8, n_kv_heads=2, ffn=352,
                      rope_base=500000.0, eps=1e-5, tied=False, rope_scaling=LLAMA3_SCALING)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_gradcheck_llama3_shape(run_per_set, tmp_path, packed):
    """A second shape, Llama 3 style: the GGUF carries rope_freqs.weight (as
    convert_hf_to_gguf.py computes it), the reference applies HF's Llama 3
    rope scaling to its inverse frequencies. Logits, loss, every full and
    LoRA gradient and AdamW steps must agree as for SmolLM2's shape; and the
    scaling must matter here (else this would not test it): without it the
    reference's logits move by far more than the tolerance."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4321)
    cfg = llama3_config()
    half = cfg.head_dim // 2
    freqs = ref.gguf_rope_freqs(cfg)
    # all three bands present: 1 (kept), factor (slowed), strictly between
    assert freqs[0] == 1.0 and freqs[-1] == 32.0
    assert any(1.0 < f < 32.0 for f in freqs) and len(freqs) == half
    P0 = ref.init_params(cfg, gen)
    L0 = ref.init_lora(cfg, RANK, gen)
    batch = make_batch(cfg, gen, packed)
    tokens = batch[0][:1, :12]
    with torch.no_grad():
        z = ref.forward(cfg, P0, tokens)
        plain = dataclasses.replace(cfg, rope_scaling=None)
        z0 = ref.forward(plain, P0, tokens)
    rel = ((z - z0).abs().max() / z.abs().max()).item()
    assert rel > 1e-2, f"rope scaling changes the logits by only {rel:.2e}"
    check(run_per_set, tmp_path, cfg, P0, L0, batch)


# "The capital of France is Paris. The capital of Germany is Berlin. ..." as
# llama.cpp tokenizes it with the SmolLM2 vocabulary (input only).
REAL_TOKENS = [504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 4521, 314, 11452, 30, 378,
               3575, 282, 7158, 314, 7268, 30, 378, 3575, 282, 7476, 314, 28030, 30]


def test_gradcheck_real_model(run_per_set, tmp_path, real_model):
    """SmolLM2-135M itself (Q4_1 dequantized by an independent numpy reader,
    Q/K un-permuted to HF layout for the reference): 30 layers, 9/3 heads,
    head dim 64, rope base 1e5. 3 optimizer steps at the full fine-tuning
    lr of the SmolLM2 recipes (5e-5) to bound time: at 1e-3 a pretrained
    model's loss jumps chaotically (2.4 -> 4.6 in one step) and the first
    Adam step, ~lr * sign(g) for every element, turns rounding-level
    differences in tiny gradients into visible loss differences."""
    kvs, tensors = gguf_mini.read(real_model)
    cfg = ref.Config(vocab=tensors["token_embd.weight"].shape[0],
                     dim=kvs["llama.embedding_length"], n_layers=kvs["llama.block_count"],
                     n_heads=kvs["llama.attention.head_count"],
                     n_kv_heads=kvs["llama.attention.head_count_kv"],
                     ffn=kvs["llama.feed_forward_length"], rope_base=kvs["llama.rope.freq_base"],
                     eps=kvs["llama.attention.layer_norm_rms_epsilon"],
                     tied="output.weight" not in tensors)
    P0 = ref.params_from_gguf(cfg, tensors, torch.float64)
    del tensors
    gen = torch.Generator().manual_seed(99)
    L0 = ref.init_lora(cfg, RANK, gen, b_std=0.02)
    T = 20
    tokens = torch.tensor([REAL_TOKENS[:T], REAL_TOKENS[8:8 + T]], dtype=torch.long)
    lens = [T, 14]
    tokens[1, lens[1]:] = 2
    targets = torch.full_like(tokens, 2)
    targets[0, :T - 1] = tokens[0, 1:]
    targets[1, :lens[1] - 1] = tokens[1, 1:lens[1]]
    mask = torch.zeros_like(tokens, dtype=torch.uint8)
    mask[0, 4:T - 1] = 1
    mask[1, 0:lens[1]] = 1
    spans = [(0, 0, T), (1, 0, lens[1])]
    check(run_per_set, tmp_path, cfg, P0, L0, (tokens, targets, mask, spans, False), model_path=real_model,
          steps=3, lr=5e-5, skip=("scalar",))
