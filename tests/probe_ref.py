"""Independent reference for the probe tests: per-layer statistics of a whole sequence from one plain
forward pass with output_hidden_states (no cache), in float64."""

from __future__ import annotations

import numpy as np
import torch


def reference_stats(loaded, prompt_ids: list[int], all_ids: list[int]) -> dict[str, np.ndarray]:
    """Statistics of step n (n = 0 … T−1) of a trace: the forward position that produced all_ids[n]."""
    model = loaded.model
    ids = torch.tensor([list(prompt_ids) + list(all_ids[:-1])])
    raw_last: list[torch.Tensor] = []
    # hidden_states[-1] is after the final norm in transformers 5: take the last layer's raw output
    # from the input of the final norm instead
    handle = loaded.final_norm.register_forward_pre_hook(lambda _m, args: raw_last.append(args[0]))
    try:
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    hs = list(out.hidden_states)
    n_layers = len(loaded.layers)
    assert len(hs) == n_layers + 1
    hs[-1] = raw_last[0]
    P, T = len(prompt_ids), len(all_ids)
    pos = torch.arange(P - 1, P - 1 + T)
    x = torch.stack([h[0, pos] for h in hs]).double()  # (L+1, T, H)
    a, b = x[:-1], x[1:]
    den = a.norm(dim=-1) * b.norm(dim=-1)
    cos = torch.where(den > 0, (a * b).sum(-1) / den.clamp_min(1e-300), 0.0)  # a zero vector (pad embedding): cos 0
    bi = (1 - cos).T.numpy()  # (T, L)
    norm = b.norm(dim=-1).T.numpy()
    with torch.no_grad():
        h_raw = torch.stack([h[0, pos] for h in hs[1:]])  # (L, T, H) model dtype
        logits = loaded.unembed(loaded.final_norm(h_raw)).double()
    lp = torch.log_softmax(logits, -1)  # (L, T, V)
    p = lp.exp()
    pf, lpf = p[-1:], lp[-1:]
    m = 0.5 * (p + pf)
    lm = m.log()
    jsd = 0.5 * (pf * (lpf - lm)).sum(-1) + 0.5 * (p * (lp - lm)).sum(-1)
    ent = -(p * lp).sum(-1)
    top = lp.argmax(-1)
    agree = (top == top[-1:]).double()
    tok = torch.tensor(all_ids).view(1, T, 1).expand(n_layers, T, 1)
    rank = (lp > lp.gather(-1, tok)).sum(-1)
    # the final layer's lens must be the model's own next-token distribution
    model_lp = torch.log_softmax(out.logits[0, pos].double(), -1)
    assert torch.allclose(model_lp, lp[-1], atol=1e-4)
    return {
        "block_influence": bi,
        "norm": norm,
        "jsd": jsd.T.numpy(),
        "entropy": ent.T.numpy(),
        "top1_agree": agree.T.numpy(),
        "rank": rank.T.numpy(),
        "logprobs": lp,
    }


def lively_loaded(family: str, seed: int = 0, mix: float = 30.0, unembed: float = 30.0):
    """tests.helpers.tiny_loaded with its layers' output projections and unembedding scaled up.

    The shared tiny models have embeddings scaled ×20, so their layers barely move the residual and
    every layer's lens is nearly the final one (JSD ~1e-5: too small to test anything). Scaled like
    this, JSD spans 0 … 0.6 nats, entropies ~1 nat and block influence 0.1 … 0.3 across layers."""
    from tests.helpers import tiny_loaded

    loaded = tiny_loaded(family, seed)
    with torch.no_grad():
        for layer in loaded.layers:
            layer.self_attn.o_proj.weight.mul_(mix)
            layer.mlp.down_proj.weight.mul_(mix)
        loaded.unembed.weight.mul_(unembed)
    return loaded
