"""Rank correlation with a bootstrap interval (for "does this score predict that damage?", and for "does the
judge count what the reflection words count?", where a problem contributes several traces)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

from layerprobe.metrics.paired import bootstrap


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
    return spearman_clustered(x, y, range(len(x)), n_boot, seed, confidence)


def spearman_clustered(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    clusters: Sequence[Hashable],
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """(rho, low, high): Spearman's rho over every (x, y) pair and its percentile bootstrap interval,
    each resample drawing clusters (e.g. problems, whose several traces are not independent) with
    replacement and keeping all their pairs; one cluster per pair is `spearman_interval`. Pairs with a
    NaN are dropped. rho is NaN with fewer than 3 pairs or a constant side; the interval is (nan, nan)
    then, with fewer than 2 clusters, or when fewer than half of the resamples have a defined rho."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(clusters) != a.shape[0]:
        raise ValueError("x, y and clusters must be one-dimensional and of the same length")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    labels = [c for c, k in zip(clusters, keep) if k]
    rho = spearman(a, b)
    ids: dict[Hashable, int] = {}
    codes = np.array([ids.setdefault(c, len(ids)) for c in labels], dtype=np.int64)
    if math.isnan(rho) or len(ids) < 2:
        return rho, math.nan, math.nan
    members = [np.flatnonzero(codes == k) for k in range(len(ids))]
    boots = bootstrap(lambda idx: spearman(a[idx], b[idx]), len(a), n_boot, seed, clusters=members)
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
