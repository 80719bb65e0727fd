"""Rank correlation with a bootstrap interval (for "does this score predict that damage?")."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant or
    there are fewer than 3 pairs. Pairs with a NaN are dropped."""
    from scipy.stats import rankdata

    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size < 3:
        return math.nan
    ra, rb = rankdata(a), rankdata(b)
    if np.std(ra) == 0 or np.std(rb) == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def spearman_interval(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(rho, low, high): Spearman's rho and its percentile bootstrap interval, resampling the pairs.
    Resamples where a side is constant are skipped; (rho, nan, nan) when fewer than half survive."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    rho = spearman(a, b)
    if a.size < 3 or math.isnan(rho):
        return rho, math.nan, math.nan
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, a.size, a.size)
        r = spearman(a[idx], b[idx])
        if not math.isnan(r):
            boots.append(r)
    if len(boots) < n_boot // 2:
        return rho, math.nan, math.nan
    alpha = 1.0 - confidence
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return rho, float(lo), float(hi)


def spearman_permutation_p(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, n_perm: int = 10_000, seed: int = 0
) -> float:
    """Two-sided permutation p-value of Spearman's rho against "no association": exact over all
    orderings of y for up to 8 pairs, else Monte Carlo with (1 + hits) / (1 + n_perm). 1.0 when rho
    is undefined."""
    import itertools

    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    rho = spearman(a, b)
    if math.isnan(rho):
        return 1.0
    tol = 1e-12
    if a.size <= 8:
        perms = [spearman(a, b[list(p)]) for p in itertools.permutations(range(a.size))]
        vals = np.array([0.0 if math.isnan(r) else r for r in perms])
        return float(np.mean(np.abs(vals) >= abs(rho) - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_perm):
        r = spearman(a, rng.permutation(b))
        hits += int(not math.isnan(r) and abs(r) >= abs(rho) - tol)
    return (1 + hits) / (1 + n_perm)
