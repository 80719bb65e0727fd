"""Agreement of two per-trace measures when a problem contributes several traces (the judge's counts
against the reflection words): a rank correlation whose interval resamples problems, not traces."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

from layerprobe.metrics.correlation import spearman


def spearman_clustered(
    x: Sequence[float],
    y: Sequence[float],
    clusters: Sequence[Hashable],
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """(rho, low, high): Spearman's rho over every (x, y) pair and its percentile bootstrap interval,
    each resample drawing clusters (problems) with replacement and keeping all their pairs (the traces of
    one problem are not independent). Pairs with a NaN are dropped. rho is NaN with fewer than 3 pairs
    or a constant side; the interval is (nan, nan) then, with fewer than 2 clusters, or when fewer than
    half of the resamples have a defined rho."""
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
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[k] for k in pick])
        r = spearman(a[idx], b[idx])
        if not math.isnan(r):
            boots.append(r)
    if len(boots) < n_boot // 2:
        return rho, math.nan, math.nan
    alpha = 1.0 - confidence
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return rho, float(lo), float(hi)
