"""Paired bootstrap, McNemar, sign-flip and Wilson intervals."""

from __future__ import annotations

import math
from fractions import Fraction
from math import comb

import numpy as np
import pytest

from layerprobe.metrics import (
    bootstrap_mean_interval,
    bootstrap_means,
    mcnemar_exact,
    paired_comparison,
    proportion_interval,
    sign_flip_test,
)
from layerprobe.metrics import paired as paired_module


def test_bootstrap_interval_covers_true_difference_at_nominal_rate():
    # 200 simulated benchmarks of 60 problems with paired 0/1 correctness:
    # P(a=1) = 0.6, P(b=1 | a=1) = 0.7, P(b=1 | a=0) = 0.2, so E[b - a] = 0.5 - 0.6 = -0.1.
    rng = np.random.default_rng(12345)
    true_diff = (0.6 * 0.7 + 0.4 * 0.2) - 0.6
    covered = 0
    for sim in range(200):
        a = (rng.random(60) < 0.6).astype(float)
        b = np.where(a == 1, rng.random(60) < 0.7, rng.random(60) < 0.2).astype(float)
        res = paired_comparison(a, b, n_boot=2000, n_perm=64, seed=sim)
        covered += res.ci_low <= true_diff <= res.ci_high
    assert 0.90 <= covered / 200 <= 0.98


def test_identical_variants_have_no_clear_difference():
    a = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1] * 3
    res = paired_comparison(a, a)
    # 30 identical outcomes do not prove a zero difference: the interval has a width around 0
    assert res.diff == 0.0 and -0.15 < res.ci_low < 0.0 < res.ci_high < 0.15
    assert res.ci_low == pytest.approx(-res.ci_high)
    assert res.verdict == "no clear difference"
    assert res.mcnemar_p == 1.0 and res.n01 == 0 and res.n10 == 0


def test_clear_differences_get_a_direction():
    rng = np.random.default_rng(0)
    a = rng.normal(size=40)
    res = paired_comparison(a, a + 1.0 + 0.1 * rng.normal(size=40))
    assert res.verdict == "higher" and res.ci_low > 0 and not res.binary
    res = paired_comparison(a, a - 1.0)
    assert res.verdict == "lower" and res.ci_high < 0


def test_tiny_samples_never_claim_a_difference():
    # Three problems, all won by b: McNemar's exact p = 2 / 2**3 = 0.25, so this is noise; the
    # verdict needs the test as well as the interval, and the disagreement is recorded
    res = paired_comparison([0, 0, 0], [1, 1, 1])
    assert res.mcnemar_p == pytest.approx(0.25) and not res.agree
    assert res.verdict == "no clear difference"
    res = paired_comparison([0.0], [5.0])
    assert res.verdict == "no clear difference" and res.n_pairs == 1


def test_nan_pairs_are_dropped_and_counted():
    a = [1.0, float("nan"), 0.5, 0.25, 2.0]
    b = [2.0, 1.0, float("nan"), 0.75, 2.0]
    res = paired_comparison(a, b)
    assert res.n_pairs == 3 and res.n_dropped == 2
    assert res.diff == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert res.mean_a == pytest.approx((1.0 + 0.25 + 2.0) / 3)
    empty = paired_comparison([float("nan")], [1.0])
    assert empty.n_pairs == 0 and empty.n_dropped == 1 and math.isnan(empty.diff)
    assert empty.verdict == "no clear difference"
    with pytest.raises(ValueError):
        paired_comparison([1, 2], [1])


def test_binary_counts_and_dict():
    a = [1, 1, 0, 0, 1, 0]
    b = [1, 0, 1, 1, 1, 1]
    res = paired_comparison(a, b)
    assert res.binary and (res.n01, res.n10) == (3, 1)
    assert res.mcnemar_p == pytest.approx(2 * (1 + 4) / 16)
    d = res.as_dict()
    assert d["verdict"] == res.verdict and d["n_pairs"] == 6


def test_results_are_reproducible_with_a_seed():
    rng = np.random.default_rng(3)
    a, b = rng.random(30), rng.random(30)
    assert paired_comparison(a, b, seed=7) == paired_comparison(a, b, seed=7)


def test_mcnemar_exact_against_binomial_sums():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(5, 5) == 1.0
    for n01 in range(0, 15):
        for n10 in range(0, 15):
            m = n01 + n10
            if m == 0:
                continue
            lo = min(n01, n10)
            exact = min(Fraction(1), 2 * Fraction(sum(comb(m, i) for i in range(lo + 1)), 2**m))
            assert mcnemar_exact(n01, n10) == pytest.approx(float(exact), abs=1e-15)
    assert mcnemar_exact(0, 1000) == pytest.approx(2.0**-999, rel=1e-12)
    # Beyond 2000 discordant pairs the sum is done in log space: same values.
    for n01, n10 in [(900, 1300), (1000, 1100), (1040, 1060)]:
        m = n01 + n10
        exact = 2 * Fraction(sum(comb(m, i) for i in range(n01 + 1)), 2**m)
        assert mcnemar_exact(n01, n10) == pytest.approx(float(exact), rel=1e-9)
    assert mcnemar_exact(40_000, 60_000) == 0.0  # underflows quietly, no overflow error


def test_sign_flip_exact_small_cases():
    assert sign_flip_test([1.0, 2.0]) == pytest.approx(0.5)  # |sums|: 3, 1, 1, 3
    assert sign_flip_test([1.0] * 5) == pytest.approx(2 / 32)
    assert sign_flip_test([]) == 1.0
    mc = sign_flip_test(np.ones(40), n_perm=2000, seed=1)
    assert mc == pytest.approx(1 / 2001)


def test_bootstrap_blocks_draw_the_same_indices(monkeypatch):
    values = np.random.default_rng(5).random(50)
    whole = bootstrap_means(values, 300, seed=11)
    monkeypatch.setattr(paired_module, "_CHUNK_ELEMENTS", 7 * 50)
    blocked = bootstrap_means(values, 300, seed=11)
    np.testing.assert_array_equal(whole, blocked)


def test_one_bootstrap_for_the_package():
    """metrics.bootstrap draws what bootstrap_means draws from the same seed (one set of resamples for the
    package), resamples whole clusters when given them, and leaves out resamples whose statistic is NaN."""
    from layerprobe.metrics.paired import bootstrap

    values = np.random.default_rng(3).random(17)
    np.testing.assert_array_equal(bootstrap(lambda i: values[i].mean(), 17, 500, seed=4), bootstrap_means(values, 500, seed=4))
    # two clusters of very different values: every resample holds whole clusters, so its mean is one of
    # three values (both clusters drawn, or one drawn twice), never a mix of single units
    x = np.array([0.0, 0.0, 0.0, 10.0, 10.0])
    clusters = [np.array([0, 1, 2]), np.array([3, 4])]
    means = bootstrap(lambda i: x[i].mean(), 5, 400, seed=0, clusters=clusters)
    assert set(np.round(means, 9).tolist()) <= {0.0, 4.0, 10.0} and len(means) == 400
    # undefined resamples (here: the mean of x where it holds no 10) are left out, not counted as 0
    kept = bootstrap(lambda i: x[i].mean() if (x[i] > 0).any() else math.nan, 5, 400, seed=0)
    assert 0 < len(kept) < 400 and (kept > 0).all()
    pairs = bootstrap(lambda i: [x[i].min(), x[i].max()], 5, 50, seed=0)
    assert pairs.shape == (50, 2) and (pairs[:, 0] <= pairs[:, 1]).all()


def test_bootstrap_mean_interval():
    lo, hi = bootstrap_mean_interval([0.5] * 10)
    assert lo == hi == 0.5
    lo, hi = bootstrap_mean_interval([0, 1] * 30, seed=2)
    assert lo < 0.5 < hi
    assert all(math.isnan(x) for x in bootstrap_mean_interval([float("nan")]))


def test_wilson_interval_known_values():
    z = 1.959963984540054
    lo, hi = proportion_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(z * z / (10 + z * z), abs=1e-12)
    lo, hi = proportion_interval(5, 10)  # tabulated Wilson interval for 5/10
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = proportion_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(10 / (10 + z * z), abs=1e-12)
    lo, hi = proportion_interval(21, 30)
    assert lo < 0.7 < hi
    assert all(math.isnan(x) for x in proportion_interval(0, 0))
    with pytest.raises(ValueError):
        proportion_interval(3, 2)
    with pytest.raises(ValueError):
        proportion_interval(1, 2, confidence=1.5)


def test_newcombe_interval_matches_published_example():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8: complete
    # response before / after consolidation therapy (Cavo et al. 2012), table [[59, 6], [16, 80]]:
    # Newcombe square-and-add, estimate -0.0621, 95 % CI -0.1186 to -0.0046 (difference row - column).
    from layerprobe.metrics.paired import newcombe_paired_interval

    # b = row variable: n11 = 59 both right, n01 = 6 only b right, n10 = 16 only a right, n00 = 80
    lo, hi = newcombe_paired_interval(59, 16, 6, 80)
    assert lo == pytest.approx(-0.1186, abs=5e-5) and hi == pytest.approx(-0.0046, abs=5e-5)


def test_binary_interval_is_not_pinned_to_the_estimate():
    # every discordant problem goes one way (base 30/30, pruned 16/30): both ends away from the estimate
    res = paired_comparison([1] * 30, [1] * 16 + [0] * 14)
    assert res.ci_low < res.diff - 0.05 and res.diff + 0.05 < res.ci_high < 0 and res.verdict == "lower"
    # no discordant problem: a real width, not [0, 0]
    same = paired_comparison([1] * 30, [1] * 30)
    assert same.ci_low < -0.05 and same.ci_high > 0.05 and same.verdict == "no clear difference"


def test_binary_interval_covers_the_true_difference():
    # simulated paired 0/1 data with a known difference: coverage of the 95 % interval near 95 %
    rng = np.random.default_rng(1)
    for p_a, p_b, n in [(0.9, 0.6, 30), (0.5, 0.5, 40), (0.95, 0.3, 25)]:
        hits = 0
        for _ in range(1000):
            u, v = rng.random(n), rng.random(n)
            a = (u < p_a).astype(float)  # half the pairs share u: positively correlated, as base and pruned are
            b = (np.where(rng.random(n) < 0.5, u, v) < p_b).astype(float)
            res = paired_comparison(a, b, n_boot=10, n_perm=10)
            hits += res.ci_low <= p_b - p_a <= res.ci_high
        assert 0.92 <= hits / 1000 <= 0.995, (p_a, p_b, n, hits)


def test_reverse_2_facts_case_is_coherent():
    # 10 problems, 5 lost by b and none won: bootstrap excluded 0 while McNemar (p = 0.0625) did not
    # the verdict needs both: the interval excludes 0 here but the exact test does not reject
    res = paired_comparison([1] * 5 + [0] * 5, [0] * 10)
    assert res.mcnemar_p == pytest.approx(0.0625) and res.ci_high < 0 and res.verdict == "no clear difference"
    assert not res.agree


def test_clustered_difference_resamples_problems_not_traces():
    import numpy as np

    from layerprobe.metrics import clustered_difference

    rng = np.random.default_rng(3)
    vals = rng.normal(size=60)
    wrong = rng.random(60) < 0.5
    vals[wrong] += 0.4
    diff, lo, hi = clustered_difference(vals, wrong, list(range(60)))
    assert diff == pytest.approx(vals[wrong].mean() - vals[~wrong].mean())
    assert lo < diff < hi
    # every trace copied 5 times inside its own problem: the same evidence, so about the same interval;
    # treated as independent traces the interval would shrink by about sqrt(5)
    rep = np.repeat(vals, 5)
    d2, lo2, hi2 = clustered_difference(rep, np.repeat(wrong, 5), list(np.repeat(np.arange(60), 5)))
    _, lo3, hi3 = clustered_difference(rep, np.repeat(wrong, 5), list(range(300)))
    assert d2 == pytest.approx(diff) and (hi2 - lo2) == pytest.approx(hi - lo, rel=0.25)
    assert (hi3 - lo3) < 0.6 * (hi2 - lo2)
    far = clustered_difference([5.0, 6, 7, 0, 1, 2], [True, True, True, False, False, False], [0, 1, 2, 3, 4, 5])
    assert far[1] > 0
    assert all(np.isnan(clustered_difference([1.0, 2.0], [True, True], [0, 1])))
