"""A plain PyTorch Llama, written from the architecture definition (HF
`LlamaForCausalLM` conventions), used as the gradient oracle for the C
trainer. It is deliberately NOT a port of src/train: it uses HF's
rotate-half RoPE on un-permuted Q/K weights, and the test permutes Q/K rows
(exactly as llama.cpp's convert_hf_to_gguf.py does) when it writes the GGUF
the C code reads. Agreement therefore also checks that adjacent-pair RoPE on
GGUF-layout weights equals rotate-half on HF-layout weights.

Architecture: token embedding -> L x [RMSNorm -> GQA causal attention with
RoPE -> residual; RMSNorm -> SwiGLU MLP down(silu(gate(x)) * up(x)) ->
residual] -> RMSNorm -> LM head (tied to the embedding unless untied). No
biases. RMSNorm: x / sqrt(mean(x^2) + eps) * w.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PROJ = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass
class Config:
    vocab: int = 256
    dim: int = 64
    n_layers: int = 3
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn: int = 160
    rope_base: float = 10000.0
    eps: float = 1e-5
    tied: bool = True
    # HF's Llama 3 rope_scaling ({"factor", "low_freq_factor",
    # "high_freq_factor", "original_max_position_embeddings"}) or None
    rope_scaling: dict = None

    @property
    def head_dim(self):
        return self.dim // self.n_heads


def proj_shape(cfg, p):
    """(out, in) of projection p."""
    hd = cfg.head_dim
    return {
        "q": (cfg.n_heads * hd, cfg.dim),
        "k": (cfg.n_kv_heads * hd, cfg.dim),
        "v": (cfg.n_kv_heads * hd, cfg.dim),
        "o": (cfg.dim, cfg.n_heads * hd),
        "gate": (cfg.ffn, cfg.dim),
        "up": (cfg.ffn, cfg.dim),
        "down": (cfg.dim, cfg.ffn),
    }[p]


def init_params(cfg, gen, dtype=torch.float64, std=0.08):
    """HF-layout parameters as a dict of leaf tensors."""
    def randn(*shape):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std).to(dtype)

    def norm():
        return (1.0 + 0.1 * torch.randn(cfg.dim, generator=gen, dtype=torch.float64)).to(dtype)

    P = {"embed": randn(cfg.vocab, cfg.dim), "final_norm": norm()}
    if not cfg.tied:
        P["lm_head"] = randn(cfg.vocab, cfg.dim)
    for l in range(cfg.n_layers):
        P[f"{l}.attn_norm"] = norm()
        P[f"{l}.ffn_norm"] = norm()
        for p in PROJ:
            P[f"{l}.{p}"] = randn(*proj_shape(cfg, p))
    return P


def init_lora(cfg, rank, gen, dtype=torch.float64, b_std=0.05):
    """A as PEFT initialises it (U(-1/sqrt(in), 1/sqrt(in))), B non-zero so
    that every LoRA gradient is non-trivial."""
    L = {}
    for l in range(cfg.n_layers):
        for p in PROJ:
            out, inp = proj_shape(cfg, p)
            bound = 1.0 / math.sqrt(inp)
            L[f"{l}.{p}.A"] = ((torch.rand(rank, inp, generator=gen, dtype=torch.float64) * 2 - 1) * bound).to(dtype)
            L[f"{l}.{p}.B"] = (torch.randn(out, rank, generator=gen, dtype=torch.float64) * b_std).to(dtype)
    return L


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def llama3_inv_freq(inv_freq, rs):
    """HF transformers' _compute_llama3_parameters: long wavelengths slowed
    down by `factor`, short ones kept, a smooth blend between."""
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, inv_freq_llama)


def rope_cos_sin(T, hd, base, dtype, rope_scaling=None):
    inv_freq = base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    if rope_scaling:
        inv_freq = llama3_inv_freq(inv_freq, rope_scaling)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [T, hd/2]
    emb = torch.cat((ang, ang), dim=-1)                                      # [T, hd]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def bf16(t):
    """t rounded as the C side rounds a matmul input: to f32 (its storage),
    then to bf16, nearest even; back in t's dtype."""
    return t.to(torch.float32).to(torch.bfloat16).to(t.dtype)


class MatmulBF16(torch.autograd.Function):
    """x @ w.T with both inputs rounded to bf16 and the sum in x's dtype;
    backward likewise rounds the inputs of its own two products,
    dx = bf16(dy) bf16(w) and dw = bf16(dy)^T bf16(x). That is what the
    trainer's three GEMMs compute under --precision bf16 (written from that
    definition, not from src/train)."""
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return bf16(x) @ bf16(w).T

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        d = bf16(dy)
        dx = d @ bf16(w)
        dw = d.reshape(-1, d.shape[-1]).T @ bf16(x).reshape(-1, x.shape[-1])
        return dx, dw


def matmul_t(x, w, precision="f64"):
    """x @ w.T, in the reference's float64 or with bf16 inputs."""
    return MatmulBF16.apply(x, w) if precision == "bf16" else x @ w.T


def linear(x, P, lora, key, scale, drop=None, precision="f64"):
    """x W^T (+ scale B(A(dropout(x))), dropout as PEFT applies it: on the
    adapter's input only; drop[key] is the mask times 1/(1-p), [B, T, in])."""
    y = matmul_t(x, P[key], precision)
    if lora is not None:
        xl = x * drop[key] if drop is not None else x
        y = y + scale * matmul_t(matmul_t(xl, lora[key + ".A"], precision), lora[key + ".B"], precision)
    return y


def forward(cfg, P, tokens, lora=None, lora_scale=0.0, drop=None, precision="f64"):
    """tokens [B, T] -> logits [B, T, vocab]. drop: optional LoRA dropout
    masks, {"l.proj": [B, T, in]}. precision "bf16": every projection and
    the LM head as MatmulBF16 (attention, norms, the loss stay float64)."""
    B, T = tokens.shape
    hd, H, Hkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    x = P["embed"][tokens]
    cos, sin = rope_cos_sin(T, hd, cfg.rope_base, x.dtype, cfg.rope_scaling)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(cfg.n_layers):
        h = rms_norm(x, P[f"{l}.attn_norm"], cfg.eps)
        q = linear(h, P, lora, f"{l}.q", lora_scale, drop, precision).view(B, T, H, hd).transpose(1, 2)
        k = linear(h, P, lora, f"{l}.k", lora_scale, drop, precision).view(B, T, Hkv, hd).transpose(1, 2)
        v = linear(h, P, lora, f"{l}.v", lora_scale, drop, precision).view(B, T, Hkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~causal, float("-inf"))
        att = torch.softmax(s, dim=-1) @ v                      # [B, H, T, hd]
        att = att.transpose(1, 2).reshape(B, T, H * hd)
        x = x + linear(att, P, lora, f"{l}.o", lora_scale, drop, precision)
        h = rms_norm(x, P[f"{l}.ffn_norm"], cfg.eps)
        g = linear(h, P, lora, f"{l}.gate", lora_scale, drop, precision)
        u = linear(h, P, lora, f"{l}.up", lora_scale, drop, precision)
        x = x + linear(F.silu(g) * u, P, lora, f"{l}.down", lora_scale, drop, precision)
    x = rms_norm(x, P["final_norm"], cfg.eps)
    head = P["embed"] if cfg.tied else P["lm_head"]
    return matmul_t(x, head, precision)


def masked_ce(logits, targets, mask):
    """Mean cross-entropy over positions where mask is 1."""
    m = mask.bool()
    return F.cross_entropy(logits[m], targets[m], reduction="mean")


def permute_qk(w, n_head):
    """HF -> GGUF row order of a Q/K weight (or LoRA B) [n_head*hd, ...]:
    within each head, rows (i, i + hd/2) become (2i, 2i + 1), so that
    adjacent-pair RoPE on the result equals rotate-half on the original."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
             .swapaxes(1, 2).reshape(w.shape))


def gguf_name(key):
    """HF-style key of init_params/init_lora -> GGUF tensor name."""
    fixed = {"embed": "token_embd.weight", "final_norm": "output_norm.weight",
             "lm_head": "output.weight"}
    if key in fixed:
        return fixed[key]
    parts = key.split(".")
    l, p = parts[0], parts[1]
    name = {"attn_norm": "attn_norm", "ffn_norm": "ffn_norm", "q": "attn_q", "k": "attn_k",
            "v": "attn_v", "o": "attn_output", "gate": "ffn_gate", "up": "ffn_up",
            "down": "ffn_down"}[p]
    out = f"blk.{l}.{name}.weight"
    if len(parts) == 3:
        out += ".lora_a" if parts[2] == "A" else ".lora_b"
    return out


def to_gguf_layout(cfg, key, t):
    """A parameter or gradient in HF layout -> GGUF layout (numpy f32)."""
    parts = key.split(".")
    if len(parts) >= 2 and parts[1] in ("q", "k") and (len(parts) == 2 or parts[2] == "B"):
        t = permute_qk(t, cfg.n_heads if parts[1] == "q" else cfg.n_kv_heads)
    return t.detach().to(torch.float32).contiguous().numpy()


def unpermute_qk(w, n_head):
    """Inverse of permute_qk: GGUF -> HF row order."""
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
             .swapaxes(1, 2).reshape(w.shape))


def params_from_gguf(cfg, tensors, dtype):
    """GGUF-layout f32 arrays (name -> ndarray) -> HF-layout parameter dict."""
    P = {}
    for key in init_keys(cfg):
        t = torch.from_numpy(tensors[gguf_name(key)].copy())
        parts = key.split(".")
        if len(parts) == 2 and parts[1] in ("q", "k"):
            t = unpermute_qk(t, cfg.n_heads if parts[1] == "q" else cfg.n_kv_heads)
        P[key] = t.to(dtype)
    return P


def init_keys(cfg):
    keys = ["embed", "final_norm"] + ([] if cfg.tied else ["lm_head"])
    for l in range(cfg.n_layers):
        keys += [f"{l}.attn_norm", f"{l}.ffn_norm"] + [f"{l}.{p}" for p in PROJ]
    return keys


def gguf_rope_freqs(cfg):
    """rope_freqs.weight as llama.cpp's convert_hf_to_gguf.py writes it for
    Llama 3 (LlamaModel.generate_extra_tensors): per-pair divisors of the
    angles, computed in float32 from the same rope_scaling -- another
    formulation than llama3_inv_freq, which the reference uses."""
    rs = cfg.rope_scaling
    hd = cfg.head_dim
    freqs = 1.0 / (cfg.rope_base ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old / low, old / high
    out = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            out.append(1.0)
        elif wavelen > low_freq_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32).numpy()


def gguf_model(cfg, P, n_ctx=2048):
    """(kvs, tensors) of a GGUF holding cfg and the HF-layout parameters P,
    for gguf_mini.write: the keys llama.cpp requires, rope_freqs.weight when
    cfg has Llama 3 rope scaling."""
    kvs = [
        ("general.architecture", "llama"),
        ("llama.context_length", ("u32", n_ctx)),
        ("llama.embedding_length", ("u32", cfg.dim)),
        ("llama.block_count", ("u32", cfg.n_layers)),
        ("llama.feed_forward_length", ("u32", cfg.ffn)),
        ("llama.attention.head_count", ("u32", cfg.n_heads)),
        ("llama.attention.head_count_kv", ("u32", cfg.n_kv_heads)),
        ("llama.rope.freq_base", ("f32", cfg.rope_base)),
        ("llama.attention.layer_norm_rms_epsilon", ("f32", cfg.eps)),
    ]
    tensors = [(gguf_name(k), to_gguf_layout(cfg, k, v)) for k, v in P.items()]
    if cfg.rope_scaling:
        tensors.append(("rope_freqs.weight", gguf_rope_freqs(cfg)))
    return kvs, tensors
