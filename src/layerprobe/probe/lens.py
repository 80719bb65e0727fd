"""Logit lens for the last position of every layer, all layers of a step in one stacked matmul.

p_l = softmax(W_U · final_norm(h_l)) with the model's own final norm and unembedding (in the model's
dtype, exactly what the model does after its last layer), log-softmax in float32. Against the last
layer's lens p_L (= the model's own next-token distribution):

- JSD(p_L ‖ p_l) = H(m) − (H(p_L) + H(p_l)) / 2 with m = (p_L + p_l) / 2, in nats (0 ≤ JSD ≤ ln 2);
  the last layer's JSD is 0 by definition (set exactly, not computed);
- entropy H(p_l) in nats;
- top-1 agreement: argmax p_l == argmax p_L (the final layer's top-1 token holds the layer's
  largest logit, which differs from comparing indices only where two logits are exactly equal);
- rank of a given token (the one fed next) under p_l: how many tokens have a strictly larger
  log-probability (0 = top).

`topk=K` restricts every layer's distribution to the final layer's top-K tokens (renormalised over
those K): the matmul is then L×K instead of L×V per row. It is an approximation, labelled
"topk:K" wherever it is stored; a token outside the top K gets rank K.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

N_LENS_STATS = 4  # jsd, entropy, top1_agree, rank
LOG2 = math.log(2.0)
# The full lens holds about three (rows × layers × vocab) float32 tensors at once; rows are processed
# in groups so that one such tensor stays under this many elements (2**27 floats = 512 MiB).
MAX_LENS_ELEMENTS = 1 << 27


def final_logits(h: torch.Tensor, final_norm: nn.Module, unembed: nn.Module, softcap: float | None = None) -> torch.Tensor:
    """unembed(final_norm(h)) as float32 (..., V), with optional logit soft-capping."""
    z = unembed(final_norm(h)).float()
    if softcap:
        z = torch.tanh(z / softcap) * softcap
    return z


# Statistics are computed a few rows (layers, or whole positions for a small vocabulary) at a time
# so that every float32 pass over a (rows × vocab) block stays in cache (docs/performance.md).
CHUNK_ELEMENTS = 1 << 19
LOG2E = 1.0 / LOG2
# Mixture probabilities below this are raised to it, so that u·log u needs no zero test: each such
# entry moves the mixture's entropy by less than 1e-36 nats.
_TINY = torch.finfo(torch.float32).tiny


def _stats_from_logits(z: torch.Tensor, tokens: torch.Tensor, absent_rank: torch.Tensor | None = None) -> torch.Tensor:
    """z: (B, L, V') float32 logits (consumed: modified in place); tokens: (B,) index into V' (any
    value where absent_rank marks the token missing). Returns (B, 4, L) float32.

    Two transcendental passes per logit, one exp2 (the softmax, whose exponentials also give the
    entropy) and one log (the mixture's entropy, for the JSD); rank and top-1 agreement compare raw
    logits."""
    B, L, V = z.shape
    out = torch.empty((B, N_LENS_STATS, L), dtype=torch.float32, device=z.device)
    # Every position's final layer before z is consumed: its top-1 (B, 1, 1), entropy (B, 1) and
    # distribution q = p_L (B, 1, V).
    zf = z[:, -1:]
    top_final = zf.argmax(-1, keepdim=True)
    x2f = torch.sub(zf, zf.amax(-1, keepdim=True)).mul_(LOG2E)  # log2 of the unnormalised softmax
    qf = torch.exp2(x2f)
    sf = qf.sum(-1, keepdim=True)  # (B, 1, 1)
    ent_final = (sf.log() - LOG2 * torch.linalg.vecdot(qf, x2f).unsqueeze(-1) / sf).squeeze(-1)  # (B, 1)
    q = qf.div_(sf).clamp_min_(_TINY)  # (B, 1, V)
    tok_logit = z.gather(-1, tokens.view(B, 1, 1).expand(B, L, 1))  # (B, L, 1)
    top_logit = z.gather(-1, top_final.expand(B, L, 1))  # each layer's logit of the final top-1
    rows = max(1, CHUNK_ELEMENTS // max(1, V))
    nb, nl = (max(1, rows // L), L) if rows >= L else (1, rows)  # a chunk: nb positions × nl layers
    buf = torch.empty((nb, nl, V), dtype=torch.float32, device=z.device)
    for b0 in range(0, B, nb):
        b1 = min(B, b0 + nb)
        for s0 in range(0, L, nl):
            s1 = min(L, s0 + nl)
            x = z[b0:b1, s0:s1]  # (b, l, V)
            e = buf[: b1 - b0, : s1 - s0]  # (b, l, V)
            out[b0:b1, 3, s0:s1] = torch.gt(x, tok_logit[b0:b1, s0:s1], out=e).sum(-1)  # rank
            m = x.amax(-1, keepdim=True)  # (b, l, 1)
            # agreement: the final layer's top-1 token holds this layer's largest logit
            out[b0:b1, 2, s0:s1] = (top_logit[b0:b1, s0:s1] == m).squeeze(-1)
            x2 = torch.add(m.mul(-LOG2E), x, alpha=LOG2E, out=x)  # (z − max) · log2 e
            torch.exp2(x2, out=e)
            s = e.sum(-1, keepdim=True)  # (b, l, 1)
            log_s = s.log()
            ent = log_s - LOG2 * x2.mul_(e).sum(-1, keepdim=True) / s  # H(p) = ln Σe − Σ e·ln e / Σe
            out[b0:b1, 1, s0:s1] = ent.squeeze(-1)
            # the mixture m = (p + q) / 2, scaled: u = Σe · (p + q) = e + Σe·q, Σu = 2 Σe, so that
            # H(m) = ln 2 − ½ Σ (p+q) ln(p+q) = ln 2 − ½ Σ u ln u / Σe + ln Σe
            u = e.addcmul_(q[b0:b1], s)
            ulu = torch.log(u, out=x).mul_(u).sum(-1, keepdim=True)
            hm = LOG2 - 0.5 * ulu / s + log_s
            jsd = hm - 0.5 * (ent + ent_final[b0:b1].unsqueeze(-1))
            out[b0:b1, 0, s0:s1] = jsd.squeeze(-1).clamp_min_(0.0)
    out[:, 0, -1] = 0.0
    if absent_rank is not None:
        out[:, 3] = torch.where(absent_rank.view(B, 1) >= 0, absent_rank.view(B, 1).float(), out[:, 3])
    return out


def lens_stats(
    h: torch.Tensor,
    tokens: torch.Tensor,
    final_norm: nn.Module,
    unembed: nn.Module,
    *,
    topk: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Lens statistics of raw layer outputs h (B, L, H) (model dtype, before the final norm; the last
    entry along L must be the last layer) for the tokens (B,) fed next. Returns (B, 4, L) float32:
    jsd, entropy, top1_agree, rank."""
    B, L, _ = h.shape
    tokens = tokens.to(h.device, torch.long)
    if topk is None:
        weight = getattr(unembed, "weight", None)
        vocab = weight.shape[0] if weight is not None else None
        group = B if vocab is None else max(1, min(B, MAX_LENS_ELEMENTS // max(1, L * vocab)))
        out = []
        for s in range(0, B, group):
            z = final_logits(h[s : s + group], final_norm, unembed, softcap)  # one matmul: (g·L, H) × (H, V)
            out.append(_stats_from_logits(z, tokens[s : s + group]))
        return out[0] if len(out) == 1 else torch.cat(out, dim=0)
    if not isinstance(unembed, nn.Linear):
        raise TypeError("the top-k lens needs the unembedding to be a plain nn.Linear")
    hn = final_norm(h)  # (B, L, H)
    zf = F.linear(hn[:, -1], unembed.weight, unembed.bias).float()  # the final layer's full logits (B, V)
    if softcap:
        zf = torch.tanh(zf / softcap) * softcap
    k = min(int(topk), zf.shape[-1])
    idx = zf.topk(k, dim=-1).indices  # (B, K)
    wk = unembed.weight[idx]  # (B, K, H)
    z = torch.einsum("blh,bkh->blk", hn, wk)
    if unembed.bias is not None:
        z = z + unembed.bias[idx].unsqueeze(1)
    z = z.float()
    if softcap:
        z = torch.tanh(z / softcap) * softcap
    hit = idx == tokens.view(B, 1)  # (B, K)
    present = hit.any(-1)
    where = hit.float().argmax(-1)  # position of the token among the K (0 when absent)
    absent = torch.where(present, torch.full_like(where, -1), torch.full_like(where, k))
    return _stats_from_logits(z, where, absent)


def log_probs(h: torch.Tensor, final_norm: nn.Module, unembed: nn.Module, softcap: float | None = None) -> torch.Tensor:
    """Float32 log-softmax of the lens at h (..., H) → (..., V)."""
    z = final_logits(h, final_norm, unembed, softcap)
    return z.sub_(torch.logsumexp(z, dim=-1, keepdim=True))


def jsd_logprobs(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """JSD(p ‖ q) in nats from float32 log-probabilities (..., V) → (...)."""
    p, q = lp.exp(), lq.exp()
    hp = -torch.linalg.vecdot(p, lp)
    hq = -torch.linalg.vecdot(q, lq)
    m = p.add_(q).mul_(0.5)
    hm = -torch.special.xlogy(m, m).sum(-1)
    return (hm - 0.5 * (hp + hq)).clamp_min_(0.0)


def kl_logprobs(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) in nats from float32 log-probabilities (..., V) → (...)."""
    p = lp.exp()
    return torch.linalg.vecdot(p, lp - lq)


def model_softcap(model: nn.Module) -> float | None:
    """The config's final logit soft-cap (Gemma 2 style), if any."""
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    return float(cap) if cap else None
