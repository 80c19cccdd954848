"""DPO in the C trainer against a plain PyTorch implementation of the DPO
paper's formula (Rafailov et al. 2023, eq. 7; IPO as Azar et al. 2023 and
TRL's loss_type="ipo" compute it, on per-token mean log-probabilities; and
sigmoid DPO on mean log-probabilities, the length-normalised variant), in
float64 on a small random Llama (llama_ref.py), the way test_gradcheck.py
checks SFT. TRL itself is not installed here; the formula below is the
paper's, written from it, not from src/train/dpo.c.

Three preference pairs of random tokens (prompts and completions of
different lengths, each completion ending with the end-of-turn token).
The reference model is the base plus an adapter L0 (the "SFT adapter"),
the policy the base plus another adapter L1 (so rewards are not zero).
build/tools/lm_dpo_check recomputes, in f32, through the functions the
training loop calls (lm_dpo_logps, lm_dpo_grad, micro-batches normalised
by the whole step's pairs), under each kernel set this machine runs
(conftest.kernel_sets):
  - every sequence's summed completion log-likelihood, reference and policy
  - the mean DPO loss and each pair's chosen/rejected rewards
  - every LoRA gradient, and every parameter gradient of a full run
  - the losses of 10 AdamW steps on the LoRA starting at the reference,
    which must go down while the reward accuracy and margin go up.
Tolerances (in the tool) as the SFT check: log-likelihoods, losses and
rewards 1e-4 relative, gradients 1e-3 (max |ours - ref| / max |ref|).

The reference runs each sequence alone at its true length; the C side lays
pairs out as padded rows (chosen rows, then rejected rows), so agreement
also shows padding and the layout are inert."""
import math
import re
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gguf_mini
import llama_ref as ref

STEPS = 10
LR, WD, CLIP = 1e-3, 0.1, 1.0
RANK, ALPHA = 4, 8.0
BETA = 0.1
KINDS = {"sigmoid": 0, "ipo": 1, "sigmoid-norm": 2}
PAD = 2          # pad == end of turn, as in SmolLM2


def make_pairs(cfg, gen):
    """(prompt, chosen, rejected) token tensors; completions end with PAD."""
    shapes = [(5, 4, 6), (3, 7, 2), (6, 3, 5)]
    pairs = []
    for n_p, n_c, n_r in shapes:
        p = torch.randint(3, cfg.vocab, (n_p,), generator=gen)
        c = torch.cat([torch.randint(3, cfg.vocab, (n_c - 1,), generator=gen), torch.tensor([PAD])])
        r = torch.cat([torch.randint(3, cfg.vocab, (n_r - 1,), generator=gen), torch.tensor([PAD])])
        pairs.append((p, c, r))
    return pairs


def seq_logp(cfg, P, prompt, comp, lora=None, scale=0.0):
    """log pi(completion | prompt): the sum of the completion tokens'
    log-probabilities, the sequence run alone at its true length."""
    seq = torch.cat([prompt, comp])
    z = ref.forward(cfg, P, seq[None], lora, scale)[0]
    logp = F.log_softmax(z, dim=-1)
    n = len(prompt)
    return logp[n - 1:-1].gather(1, comp[:, None]).sum()


def dpo(kind, beta, pc, pr, rc, rr, nc, nr, nll=0.0):
    """One pair: (loss, reward_chosen, reward_rejected) from policy (pc, pr)
    and reference (rc, rr) log-likelihoods of completions of nc, nr tokens.
    nll > 0 adds RPO's term (Pang et al. 2024, eq. 2): nll times the chosen
    completion's negative log-likelihood over its length."""
    rpo = -nll * pc / nc
    if kind != "sigmoid":
        pc, rc, pr, rr = pc / nc, rc / nc, pr / nr, rr / nr
    h = (pc - rc) - (pr - rr)
    if kind == "ipo":
        loss = (h - 1 / (2 * beta)) ** 2
    else:
        loss = -F.logsigmoid(beta * h)
    return loss + rpo, beta * (pc - rc), beta * (pr - rr)


def all_logps(cfg, P, pairs, lora=None, scale=0.0):
    return [(seq_logp(cfg, P, p, c, lora, scale), seq_logp(cfg, P, p, r, lora, scale)) for p, c, r in pairs]


def batch_loss(kind, pairs, lps, ref_lps, nll=0.0):
    """Mean loss over the pairs, per-pair rewards."""
    out = [dpo(kind, BETA, lc, lr, rc, rr, len(c), len(r), nll)
           for (p, c, r), (lc, lr), (rc, rr) in zip(pairs, lps, ref_lps)]
    loss = torch.stack([o[0] for o in out]).mean()
    return loss, [o[1].item() for o in out], [o[2].item() for o in out]


def layout(pairs):
    """The C side's rows: chosen of pair k in row k, rejected in row B + k;
    targets are next tokens, mask 1 where the target is a completion token."""
    B = len(pairs)
    T = max(len(p) + max(len(c), len(r)) for p, c, r in pairs)
    tokens = np.full((2 * B, T), PAD, np.int32)
    targets = np.full((2 * B, T), PAD, np.int32)
    mask = np.zeros((2 * B, T), np.uint8)
    for k, (p, c, r) in enumerate(pairs):
        for side, comp in enumerate((c, r)):
            seq = torch.cat([p, comp]).numpy()
            row, n = side * B + k, len(seq)
            tokens[side * B + k, :n] = seq
            targets[row, :n - 1] = seq[1:]
            mask[row, len(p) - 1:n - 1] = 1
    return tokens, targets, mask, T


def leaf(d):
    return {k: v.clone().requires_grad_(True) for k, v in d.items()}


def write_model(path, cfg, P0):
    gguf_mini.write(path, *ref.gguf_model(cfg, P0))


@pytest.mark.parametrize("kind,tied,micro,nll", [("sigmoid", True, 3, 0.0), ("sigmoid", False, 2, 0.0),
                                                 ("ipo", True, 2, 0.0), ("sigmoid-norm", False, 3, 0.0),
                                                 ("sigmoid", False, 2, 1.0)],
                         ids=["sigmoid-tied", "sigmoid-untied-accum", "ipo-tied-accum",
                              "sigmoid-norm-untied", "sigmoid-nll-untied-accum"])
def test_dpo_against_torch(run_per_set, tmp_path, kind, tied, micro, nll):
    """micro < 3: the pairs go through two micro-batches (2 + 1 pairs, the
    second with an empty pair slot), each normalised by all three pairs.
    nll > 0: DPO + the chosen replies' NLL (RPO)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4321 + tied)
    cfg = ref.Config(tied=tied)
    P0 = ref.init_params(cfg, gen)
    L0 = ref.init_lora(cfg, RANK, gen)
    L1_0 = {k: v + 0.05 * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in L0.items()}
    pairs = make_pairs(cfg, gen)
    scale = ALPHA / RANK
    t0 = time.time()

    with torch.no_grad():
        ref_lps = [(a.item(), b.item()) for a, b in all_logps(cfg, P0, pairs, L0, scale)]
    # LoRA policy L1
    L1 = leaf(L1_0)
    lps = all_logps(cfg, P0, pairs, L1, scale)
    loss, rw_c, rw_r = batch_loss(kind, pairs, lps, ref_lps, nll)
    loss.backward()
    # full run: the base alone is the policy (reference numbers as above)
    P = leaf(P0)
    full_lps = all_logps(cfg, P, pairs)
    full_loss, _, _ = batch_loss(kind, pairs, full_lps, ref_lps, nll)
    full_loss.backward()
    grads = {k: ref.to_gguf_layout(cfg, k, v.grad) for k, v in P.items()}
    del P
    # AdamW on the LoRA from the reference adapter (step 0: policy == reference)
    L = leaf(L0)
    opt = torch.optim.AdamW(list(L.values()), lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=WD)
    losses, accs, margins = [], [], []
    for _ in range(STEPS):
        opt.zero_grad()
        l, rc_, rr_ = batch_loss(kind, pairs, all_logps(cfg, P0, pairs, L, scale), ref_lps, nll)
        l.backward()
        torch.nn.utils.clip_grad_norm_(list(L.values()), CLIP)
        opt.step()
        losses.append(l.item())
        accs.append(float(np.mean([a > b for a, b in zip(rc_, rr_)])))
        margins.append(float(np.mean([a - b for a, b in zip(rc_, rr_)])))
    print(f"torch: losses {np.round(losses, 5).tolist()}\n  accuracy {accs}\n"
          f"  margins {np.round(margins, 5).tolist()}")
    # the formula's fixed points and the training signal the C side must match
    if (kind == "sigmoid" or kind == "sigmoid-norm") and nll == 0:
        assert abs(losses[0] - math.log(2)) < 1e-12
    assert losses[-1] < losses[0] - 1e-3
    assert margins[-1] > margins[0] and accs[-1] > accs[0] and accs[-1] == 1.0

    tokens, targets, mask, T = layout(pairs)
    B = len(pairs)
    flat = lambda lp: [x[0] for x in lp] + [x[1] for x in lp]   # chosen rows, then rejected
    fl = lambda lp: [float(x) for x in flat(lp)]
    model_path, ref_path = tmp_path / "model.gguf", tmp_path / "ref.gguf"
    write_model(model_path, cfg, P0)
    tensors = [("ref_lora." + ref.gguf_name(k), ref.to_gguf_layout(cfg, k, v)) for k, v in L0.items()]
    tensors += [("lora." + ref.gguf_name(k), ref.to_gguf_layout(cfg, k, v)) for k, v in L1_0.items()]
    tensors += [("lora_grad." + ref.gguf_name(k), ref.to_gguf_layout(cfg, k, v.grad)) for k, v in L1.items()]
    tensors += [("grad." + ref.gguf_name(k), g) for k, g in grads.items()]
    gguf_mini.write(ref_path, [
        ("gc.B", ("u32", B)), ("gc.T", ("u32", T)), ("gc.micro", ("u32", micro)),
        ("gc.kind", ("u32", KINDS[kind])), ("gc.beta", ("f32", BETA)), ("gc.nll", ("f32", nll)),
        ("gc.lora_rank", ("u32", RANK)), ("gc.lora_alpha", ("f32", ALPHA)),
        ("gc.lr", ("f32", LR)), ("gc.weight_decay", ("f32", WD)), ("gc.grad_clip", ("f32", CLIP)),
        ("gc.tokens", ("arr_i32", tokens)), ("gc.targets", ("arr_i32", targets)),
        ("gc.mask", ("arr_u8", mask)),
        ("gc.ref_logps", ("arr_f64", fl(ref_lps))),
        ("gc.logps", ("arr_f64", fl([(a.item(), b.item()) for a, b in lps]))),
        ("gc.full_logps", ("arr_f64", fl([(a.item(), b.item()) for a, b in full_lps]))),
        ("gc.loss", ("f64", loss.item())), ("gc.full_loss", ("f64", full_loss.item())),
        ("gc.rewards_c", ("arr_f64", rw_c)), ("gc.rewards_r", ("arr_f64", rw_r)),
        ("gc.adamw_losses", ("arr_f64", losses)),
    ], tensors)
    print(f"reference done in {time.time() - t0:.1f}s")

    for ks, r in run_per_set("lm_dpo_check", model_path, ref_path):
        out = r.stdout
        what = f"LEMONPC_KERNELS={ks}:\n{out}{r.stderr}"
        assert r.returncode == 0, what
        assert re.search(rf"^kernels: {ks}$", out, re.M), what
        # every check really ran (one row per tensor, step, quantity)
        assert len(re.findall(r"^lora_grad ", out, re.M)) == len(L0), what
        assert len(re.findall(r"^grad ", out, re.M)) == len(P0), what
        assert len(re.findall(r"^dpo_adamw ", out, re.M)) == STEPS, what
        for k in ("ref_logp", "logp", "loss", "reward_c", "reward_r", "full_logp", "full_loss"):
            assert len(re.findall(rf"^{k} .* ok$", out, re.M)) == 1, (k, what)
        assert re.search(r"^ALL OK", out, re.M), what
        # the C run's own accuracy and margin rose too (its steps are printed)
        steps = re.findall(r"^dpo_adamw\s+step \d+ \(ours (\S+) acc (\S+) margin (\S+)\)", out, re.M)
        assert len(steps) == STEPS, what
        assert float(steps[-1][1]) == 1.0 and float(steps[-1][2]) > float(steps[0][2]), what
    # rewards are not trivially zero: the policy differs from the reference
    assert max(abs(x) for x in rw_c + rw_r) > 1e-3
