"""Settling depth and deep-thinking tokens from stored logit-lens JSD (Chen et al. 2026).

Conventions (0-based layer positions in code, 1-based depth in the paper):

- settling depth c_t (0-based position in the model as it is, pruned or not) = the first layer l with
  min_{j ≤ l} JSD_{t,j} ≤ g. The running minimum first drops to g or below exactly where JSD_{t,l}
  itself first does, so this is the first l with JSD_{t,l} ≤ g. The paper's 1-based depth is c_t + 1.
- The last layer's JSD is 0 by definition, so with a complete lens every token settles at the latest
  at l = L − 1. A profile that never reaches g (possible only for hand-made or damaged arrays) is
  assigned L − 1 as well and counted in `never_settled`.
- Steps whose lens was skipped (a NaN row, e.g. with lens_every > 1) get c_t = −1 and are excluded
  from every summary.
- deep-thinking token: 1-based depth c_t + 1 ≥ ⌈ρ · L⌉, i.e. c_t ≥ ⌈ρ · L⌉ − 1 (0-based). With
  L = 28 and ρ = 0.85: ⌈23.8⌉ = 24, tokens settling in layers 24…28 (1-based) = positions 23…27.
  ρ · L is rounded to 9 decimals before the ceiling so that e.g. 0.85 · 20 = 17.000000000000004
  gives 17, not 18.
- deep-thinking ratio = share of (lens-computed) tokens that are deep-thinking.
- depth as a fraction of the model's depth = (c_t + 1) / L (1.0 = settles only at the last layer);
  as an original layer index = layers[c_t] (differs from c_t for pruned models).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

G_DEFAULT = 0.5
RHO_DEFAULT = 0.85


def settling_depth(jsd: np.ndarray, g: float = G_DEFAULT) -> np.ndarray:
    """(T,) int64 settling depth per token (0-based layer position); −1 for rows that are all NaN."""
    jsd = np.asarray(jsd, dtype=np.float64)
    if jsd.ndim != 2:
        raise ValueError("jsd must be (tokens, layers)")
    T, L = jsd.shape
    skipped = np.isnan(jsd).all(axis=1)
    ok = np.fmin.accumulate(np.where(np.isnan(jsd), np.inf, jsd), axis=1) <= g
    first = np.where(ok.any(axis=1), ok.argmax(axis=1), L - 1)
    return np.where(skipped, -1, first).astype(np.int64)


def never_settled(jsd: np.ndarray, g: float = G_DEFAULT) -> np.ndarray:
    """(T,) bool: lens rows whose JSD never reaches g (assigned L − 1 by settling_depth)."""
    jsd = np.asarray(jsd, dtype=np.float64)
    skipped = np.isnan(jsd).all(axis=1)
    return ~skipped & ~(np.nan_to_num(jsd, nan=np.inf) <= g).any(axis=1)


def deep_threshold(n_layers: int, rho: float = RHO_DEFAULT) -> int:
    """The first 0-based layer position counted as deep: ⌈ρ · L⌉ − 1."""
    if not 0 < rho <= 1:
        raise ValueError("rho must be in (0, 1]")
    return max(0, math.ceil(round(rho * n_layers, 9)) - 1)


def deep_thinking(c: np.ndarray, n_layers: int, rho: float = RHO_DEFAULT) -> np.ndarray:
    """(T,) bool: deep-thinking tokens (c ≥ ⌈ρ · L⌉ − 1 for 0-based c); skipped steps (c = −1) are False."""
    c = np.asarray(c)
    return (c >= 0) & (c >= deep_threshold(n_layers, rho))


def settle_summary(jsd: np.ndarray, layers: Any = None, g: float = G_DEFAULT, rho: float = RHO_DEFAULT) -> dict[str, Any]:
    """Per-trace summary (plain JSON-able dict) of settling depths and the deep-thinking ratio.

    jsd: (T, L) array, or a TraceLayers (its jsd and layers are used). layers: original layer index of
    each position (default 0 … L−1)."""
    if hasattr(jsd, "jsd") and hasattr(jsd, "layers"):
        layers = jsd.layers if layers is None else layers
        jsd = jsd.jsd
    jsd = np.asarray(jsd, dtype=np.float64)
    L = jsd.shape[1]
    layers = np.arange(L) if layers is None else np.asarray(layers)
    c = settling_depth(jsd, g)
    valid = c >= 0
    cv = c[valid]
    deep = deep_thinking(cv, L, rho)
    n = int(valid.sum())
    mean = lambda a: float(np.mean(a)) if n else None
    return {
        "g": float(g),
        "rho": float(rho),
        "n_layers": int(L),
        "n_tokens": int(jsd.shape[0]),
        "n_lens_tokens": n,
        "deep_from": int(deep_threshold(L, rho)),  # 0-based position
        "deep_from_original": int(layers[deep_threshold(L, rho)]),
        "deep_thinking_ratio": mean(deep),
        "n_deep": int(deep.sum()),
        "never_settled": int(never_settled(jsd, g).sum()),
        "settling_depth_mean": mean(cv),  # 0-based position
        "settling_depth_fraction_mean": mean((cv + 1) / L),
        "settling_depth_original_mean": mean(layers[cv]) if n else None,
        "settling_depth_median": float(np.median(cv)) if n else None,
    }
