"""Uncertainty: paired comparisons of two variants, and intervals for one accuracy.

Benchmarks of 30 problems are small. A difference between base and pruned is only called a
difference when it is outside the noise; everything else is "no clear difference". One rule decides
that for every comparison layerprobe shows (`decide`, docs/report.md#the-difference-rule).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

#: Verdict words of a paired comparison (b relative to a).
HIGHER = "higher"
LOWER = "lower"
NO_CLEAR_DIFFERENCE = "no clear difference"

#: Why a comparison names a direction or not (`decide`): both the interval and the test say so; neither
#: does; only the interval excludes 0; only the test rejects; too few problems for any verdict.
BOTH, NEITHER, INTERVAL_ONLY, TEST_ONLY, TOO_FEW = "both", "neither", "interval only", "test only", "too few"
MIN_UNITS = 6
"""Fewest independent units (problems) a verdict may rest on, on each side of a comparison (the pairs
of a paired one). Below it no exact test at the 5 % level can reject at all (the sign-flip and McNemar
tests' smallest two-sided p-value with 5 pairs is 2/2^5 = 0.0625), and a bootstrap interval over so
few values is narrower than the truth: the means are shown, no verdict."""

N_BOOT = 2000
"""Resamples of a `bootstrap` interval unless its caller says otherwise (explain's intervals use it)."""
_CHUNK_ELEMENTS = 4_000_000  # bound on the size of one block of resampled indices
_EXACT_MCNEMAR_MAX = 2000  # discordant pairs up to which McNemar is summed in integers


def _check_confidence(confidence: float) -> float:
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def _check_count(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def resamples(n: int, n_boot: int, seed: int | np.random.Generator = 0) -> Iterator[np.ndarray]:
    """The bootstrap's draws, the one place they are made: `n_boot` resamples of n units with replacement,
    as (rows, n) blocks of unit indices (one row per resample) from a seeded numpy Generator. The blocks
    split one (n_boot, n) array so that none is very large; the draws are the same however they are split
    (and the same as n_boot successive draws of n)."""
    n_boot = _check_count(n_boot, "n_boot")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_boot, rows):
        yield rng.integers(0, n, size=(min(n_boot, start + rows) - start, n))


def bootstrap(
    statistic: Callable[[np.ndarray], Any],
    n: int,
    n_boot: int = N_BOOT,
    seed: int | np.random.Generator = 0,
    clusters: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """The bootstrap distribution of a statistic: `statistic(idx)` over `n_boot` resamples (`resamples`) of
    n units, each given the drawn unit indices (idx, with repeats). With `clusters` (the unit indices of
    each cluster, in a fixed order; e.g. the traces of each problem) a resample draws as many clusters as
    there are and keeps all their units, so units of one cluster never count as independent. Resamples
    whose statistic is NaN (undefined there, e.g. one class only) are left out. Returns the kept values,
    (kept,), or (kept, k) for a statistic of k values."""
    m = n if clusters is None else len(clusters)
    out = []
    for block in resamples(m, n_boot, seed):
        for pick in block:
            idx = pick if clusters is None else np.concatenate([clusters[k] for k in pick])
            value = np.asarray(statistic(idx), dtype=np.float64)
            if not np.isnan(value).any():
                out.append(value)
    return np.asarray(out, dtype=np.float64)


def bootstrap_means(values: np.ndarray, n_boot: int = 10_000, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Means of `n_boot` resamples (with replacement, same size) of `values` (`resamples`, computed a
    block at a time)."""
    vals = np.asarray(values, dtype=np.float64)
    return np.concatenate([vals[idx].mean(axis=1) for idx in resamples(vals.shape[0], n_boot, seed)])


def _percentile_interval(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def bootstrap_mean_interval(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int | np.random.Generator = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampling the problems).

    NaN values are dropped first; (nan, nan) when nothing is left.
    """
    confidence = _check_confidence(confidence)
    vals = _as_1d(values, "values")
    vals = vals[~np.isnan(vals)]
    if vals.shape[0] == 0:
        return math.nan, math.nan
    return _percentile_interval(bootstrap_means(vals, n_boot, seed), confidence)


def proportion_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion of `successes` out of `n`.

    Well-behaved at 0 and n successes and for small n (unlike the normal approximation).
    (nan, nan) when n == 0. Raises ValueError unless 0 <= successes <= n.
    """
    confidence = _check_confidence(confidence)
    n = _check_count(n, "n", minimum=0)
    successes = _check_count(successes, "successes", minimum=0)
    if successes > n:
        raise ValueError(f"successes ({successes}) cannot exceed n ({n})")
    if n == 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def mcnemar_exact(n01: int, n10: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts.

    n01: pairs where only the second variant is right, n10: only the first. Under "no
    difference" each discordant pair goes either way with probability 1/2, so the p-value is
    min(1, 2 P(Binomial(n01 + n10, 1/2) <= min(n01, n10))), computed exactly. 1.0 when there
    are no discordant pairs.
    """
    n01 = _check_count(n01, "n01", minimum=0)
    n10 = _check_count(n10, "n10", minimum=0)
    m = n01 + n10
    if m == 0:
        return 1.0
    low = min(n01, n10)
    if 2 * low >= m:
        return 1.0
    if m <= _EXACT_MCNEMAR_MAX:
        tail = sum(math.comb(m, i) for i in range(low + 1))
        return min(1.0, 2 * tail / 2**m)
    # Large counts: the same sum in log space (relative error ~1e-12).
    log_terms = [math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) for i in range(low + 1)]
    top = max(log_terms)
    log_tail = top + math.log(math.fsum(math.exp(t - top) for t in log_terms))
    return min(1.0, math.exp(math.log(2.0) + log_tail - m * math.log(2.0)))


def sign_flip_test(
    diffs: Sequence[float] | np.ndarray,
    n_perm: int = 10_000,
    seed: int | np.random.Generator = 0,
) -> float:
    """Two-sided paired permutation (sign-flip) p-value for "the mean difference is 0".

    Under the null each difference is as likely to have the opposite sign. Exact (all 2^n
    sign patterns) when 2^n <= n_perm, else Monte Carlo with n_perm patterns and the
    (1 + hits) / (1 + n_perm) correction. 1.0 for no differences.
    """
    d = _as_1d(diffs, "diffs")
    n = d.shape[0]
    n_perm = _check_count(n_perm, "n_perm")
    if n == 0:
        return 1.0
    observed = abs(float(d.sum()))
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    if n <= 30 and 2**n <= n_perm:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        sums = np.abs(patterns @ d)
        return float(np.mean(sums >= observed - tol))
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    hits = 0
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_perm, rows):
        stop = min(n_perm, start + rows)
        signs = rng.integers(0, 2, size=(stop - start, n)) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
    return (1 + hits) / (1 + n_perm)


@dataclass(frozen=True)
class PairedComparison:
    """Variant b against variant a on the same problems (difference = b - a).

    n_pairs: problems used (both values present); n_dropped: problems dropped for a NaN on
    either side; mean_a, mean_b, diff: means and mean difference; ci_low, ci_high: interval of
    diff at `confidence` (ci_method says which); binary: whether all values are 0/1;
    n01 / n10: problems only b / only a got right (binary only); mcnemar_p: exact McNemar
    p-value (binary only); permutation_p: sign-flip p-value; test, p_value: the test the
    verdict uses; agree: whether the interval excluding zero and the test rejecting coincide
    (they can differ near the boundary: the interval is not the inversion of the test); verdict:
    "higher" / "lower" (b relative to a) only when the interval excludes zero and the test
    rejects (p < 1 - confidence) and there are at least MIN_UNITS pairs, else "no clear difference";
    reason: why (`decide`).
    """

    n_pairs: int
    n_dropped: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    confidence: float
    binary: bool
    n01: int | None
    n10: int | None
    mcnemar_p: float | None
    permutation_p: float
    verdict: str
    n_boot: int
    seed: int | None
    ci_method: str = "paired bootstrap"
    test: str = "sign-flip permutation"
    p_value: float = 1.0
    agree: bool = True
    reason: str = NEITHER

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields (NaN stays NaN)."""
        return asdict(self)


def decide(
    ci_low: float,
    ci_high: float,
    n: int,
    p_value: float | None = None,
    *,
    alpha: float = 0.05,
    tol: float = 0.0,
) -> tuple[str, str]:
    """The difference rule: (verdict, reason) of a comparison with interval [ci_low, ci_high] of the
    difference, `n` independent units on its smaller side (pairs, or problems per side), and the test's
    p-value (None where the data have no test: then the interval alone decides).

    A direction ("higher" / "lower") is named only when n >= MIN_UNITS, the interval lies entirely on
    one side of 0 (by more than `tol`: rounding is not a difference) and the test, where there is one,
    rejects at `alpha`. Otherwise the verdict is "no clear difference" and the reason says why:
    TOO_FEW, NEITHER, INTERVAL_ONLY or TEST_ONLY (the interval is not the inversion of the test, so near
    the boundary the two can part)."""
    if n < MIN_UNITS:
        return NO_CLEAR_DIFFERENCE, TOO_FEW
    finite = not (math.isnan(ci_low) or math.isnan(ci_high))
    excludes = finite and (ci_low > tol or ci_high < -tol)
    rejects = p_value is None or p_value < alpha
    if excludes and rejects:
        return (HIGHER if ci_low > tol else LOWER), BOTH
    if excludes:
        return NO_CLEAR_DIFFERENCE, INTERVAL_ONLY
    if p_value is not None and rejects:
        return NO_CLEAR_DIFFERENCE, TEST_ONLY
    return NO_CLEAR_DIFFERENCE, NEITHER


def paired_comparison(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    n_perm: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Compare per-problem values of two variants measured on the same problems.

    a[i] and b[i] belong to problem i (0/1 correctness, accuracy averaged over samples, or
    any metric). Pairs with a NaN on either side are dropped and counted. The mean
    difference b - a gets a paired bootstrap percentile interval (problems resampled
    together, n_boot resamples, numpy Generator seeded with `seed`). For 0/1 data the exact
    McNemar test is added. The verdict only names a direction when the interval excludes
    zero and the paired test (McNemar for 0/1 data, sign-flip otherwise) has
    p < 1 - confidence, with at least MIN_UNITS pairs (the difference rule, `decide`).
    """
    confidence = _check_confidence(confidence)
    n_boot = _check_count(n_boot, "n_boot")
    n_perm = _check_count(n_perm, "n_perm")
    xa = _as_1d(a, "a")
    xb = _as_1d(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"a and b must have the same length, got {xa.shape[0]} and {xb.shape[0]}")
    keep = ~(np.isnan(xa) | np.isnan(xb))
    xa, xb = xa[keep], xb[keep]
    n = int(xa.shape[0])
    dropped = int(keep.shape[0]) - n
    if n == 0:
        nan = math.nan
        return PairedComparison(
            0,
            dropped,
            nan,
            nan,
            nan,
            nan,
            nan,
            confidence,
            False,
            None,
            None,
            None,
            1.0,
            NO_CLEAR_DIFFERENCE,
            n_boot,
            seed,
            p_value=1.0,
            reason=TOO_FEW,
        )
    rng = np.random.default_rng(seed)
    d = xb - xa
    diff = float(d.mean())
    low, high = _percentile_interval(bootstrap_means(d, n_boot, rng), confidence)
    binary = bool(np.all((xa == 0) | (xa == 1)) and np.all((xb == 0) | (xb == 1)))
    n01 = n10 = None
    mcnemar_p = None
    ci_method, test = "paired bootstrap (percentile)", "sign-flip permutation"
    if binary:
        n01 = int(np.count_nonzero((xa == 0) & (xb == 1)))
        n10 = int(np.count_nonzero((xa == 1) & (xb == 0)))
        mcnemar_p = mcnemar_exact(n01, n10)
        n11 = int(np.count_nonzero((xa == 1) & (xb == 1)))
        low, high = newcombe_paired_interval(n11, n10, n01, n - n11 - n10 - n01, confidence)
        ci_method, test = "Newcombe square-and-add (paired Wilson score)", "exact McNemar"
    permutation_p = sign_flip_test(d, n_perm, rng)
    test_p = mcnemar_p if mcnemar_p is not None else permutation_p
    alpha = 1.0 - confidence
    excludes_zero = low > 0.0 or high < 0.0
    rejects = n >= 2 and test_p < alpha
    verdict, reason = decide(low, high, n, float(test_p), alpha=alpha)
    return PairedComparison(
        n_pairs=n,
        n_dropped=dropped,
        mean_a=float(xa.mean()),
        mean_b=float(xb.mean()),
        diff=diff,
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        binary=binary,
        n01=n01,
        n10=n10,
        mcnemar_p=mcnemar_p,
        permutation_p=permutation_p,
        verdict=verdict,
        n_boot=n_boot,
        seed=seed,
        ci_method=ci_method,
        test=test,
        p_value=float(test_p),
        agree=(excludes_zero == rejects) or n < 2,
        reason=reason,
    )


def newcombe_paired_interval(n11: int, n10: int, n01: int, n00: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval of the paired difference in accuracy b − a from the paired 2×2 table.

    n11 problems both variants got right, n10 only a, n01 only b, n00 neither. Newcombe's
    square-and-add interval for paired proportions (Newcombe 1998, method 10): the Wilson score
    intervals of the two accuracies combined with their estimated correlation φ (its numerator
    corrected by n/2 as Newcombe does), truncated to [−1, 1]. Unconditional: it reflects how many
    problems are discordant, so no end sits on the estimate when every discordant problem goes one
    way, and it has a width when none is discordant. (nan, nan) for an empty table.
    """
    confidence = _check_confidence(confidence)
    n = n11 + n10 + n01 + n00
    if n == 0:
        return math.nan, math.nan
    # rows: b right / wrong; columns: a right / wrong (b's accuracy is the row margin)
    r1, r2, c1, c2 = n11 + n01, n10 + n00, n11 + n10, n01 + n00
    pb, pa = r1 / n, c1 / n
    diff = pb - pa
    lb, ub = proportion_interval(r1, n, confidence)
    la, ua = proportion_interval(c1, n, confidence)
    cross = n11 * n00 - n01 * n10
    cross_c = cross - n / 2 if cross > n / 2 else (float(cross) if cross < 0 else 0.0)
    denom = r1 * r2 * c1 * c2
    phi = cross_c / math.sqrt(denom) if denom > 0 else 0.0
    down = (pb - lb) ** 2 - 2.0 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2
    up = (pa - la) ** 2 - 2.0 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2
    return max(-1.0, diff - math.sqrt(max(down, 0.0))), min(1.0, diff + math.sqrt(max(up, 0.0)))


def clustered_difference(
    values: Sequence[float] | np.ndarray,
    in_a: Sequence[bool] | np.ndarray,
    clusters: Sequence[Any],
    confidence: float = 0.95,
    n_boot: int = 4000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean of group A − mean of group B, 95 % interval) for two unpaired groups of values whose units
    come in clusters (e.g. the wrong and the right traces of a run, several traces per problem): a
    percentile bootstrap that resamples whole clusters, so traces of one problem never count as
    independent. Resamples that lack either group are redrawn away (skipped). NaN values are dropped;
    (nan, nan, nan) when a group is empty."""
    confidence = _check_confidence(confidence)
    vals = np.asarray(values, dtype=np.float64)
    a = np.asarray(in_a, dtype=bool)
    keep = ~np.isnan(vals)
    vals, a = vals[keep], a[keep]
    cl = [c for c, k in zip(clusters, keep) if k]
    if not a.any() or a.all():
        return math.nan, math.nan, math.nan
    diff = float(vals[a].mean() - vals[~a].mean())
    ids = {c: i for i, c in enumerate(dict.fromkeys(cl))}
    idx = np.array([ids[c] for c in cl])
    m = len(ids)
    # per cluster: sum and count of each group, so a resample is a weighted sum
    sa = np.bincount(idx, weights=np.where(a, vals, 0.0), minlength=m)
    na = np.bincount(idx, weights=a.astype(float), minlength=m)
    sb = np.bincount(idx, weights=np.where(~a, vals, 0.0), minlength=m)
    nb = np.bincount(idx, weights=(~a).astype(float), minlength=m)
    boots = []
    for draws in resamples(m, n_boot, seed):
        k = draws.shape[0]
        counts = np.zeros((k, m))  # (resample, cluster): how often each cluster was drawn
        np.add.at(counts, (np.repeat(np.arange(k), m), draws.ravel()), 1.0)
        tot_na, tot_nb = counts @ na, counts @ nb
        ok = (tot_na > 0) & (tot_nb > 0)
        boots.append((counts[ok] @ sa) / tot_na[ok] - (counts[ok] @ sb) / tot_nb[ok])
    boot = np.concatenate(boots)
    if boot.size == 0:
        return diff, math.nan, math.nan
    lo, hi = _percentile_interval(boot, confidence)
    return diff, lo, hi
