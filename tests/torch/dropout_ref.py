"""LoRA dropout masks rebuilt from the specification in src/train/lora.h,
in numpy (not a port of the C code's loop: whole arrays of counters), so
the PyTorch reference can apply the very masks the C trainer draws.

With G = 0x9E3779B97F4A7C15, mix = splitmix64's finaliser and
at(h, i) = mix(h + (i + 1) G) mod 2^64:
  key  = at(at(seed, step), micro)
  pkey = at(key, layer * 7 + target)      target: q k v o gate up down = 0..6
  e    = n * in + i                       element [n, i] of the input x[N, in]
  w    = at(pkey, e // 2)
  u    = high 32 bits of w for even e, low 32 bits for odd e
  kept = u >= floor(p * 2^32)             p as an f32
and a kept element is scaled by 1 / (1 - p) (inverted dropout, as
torch.nn.Dropout). n is the row of the C side's B*T batch."""
import numpy as np

import llama_ref as ref

G = 0x9E3779B97F4A7C15
M64 = (1 << 64) - 1


def mix(z):
    """splitmix64's output function on a uint64 array."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def at(h, i):
    """The i-th output of splitmix64 seeded with h (h an int, i an int or array)."""
    i = np.asarray(i, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return mix(np.uint64(h) + (i + np.uint64(1)) * np.uint64(G))


def key(seed, step, micro):
    return int(at(int(at(seed, step)), micro))


def keep_mask(k, layer, target, N, inp, p):
    """Boolean [N, inp]: which elements of one projection's input are kept."""
    pkey = int(at(k, layer * len(ref.PROJ) + target))
    e = np.arange(N * inp, dtype=np.uint64)
    w = at(pkey, e >> np.uint64(1))
    u = np.where(e & np.uint64(1), w & np.uint64(0xFFFFFFFF), w >> np.uint64(32))
    thresh = int(float(np.float32(p)) * 2.0 ** 32)
    return (u >= np.uint64(thresh)).reshape(N, inp)


def masks(cfg, p, seed, step, micro, N):
    """{"l.proj": float64 [N, in] of 0 or 1/(1-p)} for every layer and projection."""
    scale = 1.0 / (1.0 - float(np.float32(p)))
    k = key(seed, step, micro)
    out = {}
    for l in range(cfg.n_layers):
        for t, proj in enumerate(ref.PROJ):
            inp = ref.proj_shape(cfg, proj)[1]
            out[f"{l}.{proj}"] = keep_mask(k, l, t, N, inp, p) * scale
    return out
