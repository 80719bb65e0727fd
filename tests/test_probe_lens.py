"""The lens statistics from logits (probe.lens._stats_from_logits) against a float64 recomputation, on
peaked, flat and tied distributions, and the same values whatever the chunk layout."""

from __future__ import annotations

import pytest
import torch

from layerprobe.probe import lens


def _reference(z: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, 4, L) float64: jsd, entropy, top1_agree, rank, computed directly from the definitions."""
    B, L, _ = z.shape
    lp = torch.log_softmax(z.double(), -1)
    p = lp.exp()
    pf = p[:, -1:]
    m = 0.5 * (p + pf)
    lm = torch.where(m > 0, m.log(), 0.0)
    jsd = 0.5 * torch.special.xlogy(pf, pf).sum(-1) + 0.5 * torch.special.xlogy(p, p).sum(-1) - (m * lm).sum(-1)
    ent = -torch.special.xlogy(p, p).sum(-1)
    top = lp.argmax(-1)
    agree = (top == top[:, -1:]).double()
    tok_lp = lp.gather(-1, tokens.view(B, 1, 1).expand(B, L, 1))
    rank = (lp > tok_lp).sum(-1).double()
    return torch.stack([jsd, ent, agree, rank], dim=1)


def _logits(B: int = 5, L: int = 7, V: int = 3001, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, L, V, generator=g) * torch.linspace(0.5, 6.0, L).view(1, L, 1)
    z[0, :, 17] += 200.0  # a near one-hot distribution: most probabilities underflow to 0 in float32
    z[1] = 0.0  # flat at every layer: entropy ln V, every token tied
    z[2, :, :40] = z[2].amax(-1, keepdim=True) + 1.0  # forty tied largest logits at every layer
    return z


def test_stats_match_float64_definitions():
    z = _logits()
    tokens = torch.tensor([17, 5, 3, 100, 2999])
    got = lens._stats_from_logits(z.clone(), tokens)
    ref = _reference(z, tokens)
    assert got.shape == (5, lens.N_LENS_STATS, 7)
    torch.testing.assert_close(got[:, 0, :-1].double(), ref[:, 0, :-1], atol=2e-6, rtol=0)  # jsd
    assert torch.all(got[:, 0, -1] == 0)
    torch.testing.assert_close(got[:, 1].double(), ref[:, 1], atol=1e-5, rtol=0)  # entropy
    torch.testing.assert_close(got[:, 3].double(), ref[:, 3], atol=0, rtol=0)  # rank: strictly larger only
    torch.testing.assert_close(got[:, 2].double(), ref[:, 2], atol=0, rtol=0)  # top-1 agreement
    # not trivial: JSD spans most of [0, ln 2], some ranks are large, some layers disagree, ties counted
    assert got[3:, 0, 0].max() > 0.3 and got[3:, 3].max() > 100 and got[3:, 2].min() == 0
    assert torch.all(got[2, 3] == 0) and torch.all(got[1, 3] == 0)
    torch.testing.assert_close(got[1, 1], torch.full((7,), float(torch.log(torch.tensor(3001.0)))), atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk", [1, 3001, 3 * 3001, 7 * 3001, 2 * 7 * 3001, 1 << 30])
def test_chunk_layout_does_not_change_values(chunk, monkeypatch):
    """One row, a few layers, whole positions and everything at once give the same statistics."""
    z = _logits(seed=1)
    tokens = torch.tensor([1, 2, 3, 4, 5])
    monkeypatch.setattr(lens, "CHUNK_ELEMENTS", 1 << 19)
    base = lens._stats_from_logits(z.clone(), tokens)
    monkeypatch.setattr(lens, "CHUNK_ELEMENTS", chunk)
    got = lens._stats_from_logits(z.clone(), tokens)
    torch.testing.assert_close(got, base, atol=1e-6, rtol=0)
