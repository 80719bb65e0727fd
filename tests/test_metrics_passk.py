"""pass@k against the closed form, maj@k ties, cov@k."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pytest

from layerprobe.metrics import cov_at_k, maj_at_k, majority_answer, pass_at_k


def test_pass_at_k_matches_closed_form_on_full_grid():
    for n in range(1, 21):
        for c in range(0, n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(comb(n - c, k), comb(n, k))
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12), (n, c, k)


def test_pass_at_k_edges():
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # only 2 wrong samples: any 3 contain a correct one
    assert pass_at_k(10, 1, 1) == pytest.approx(0.1)
    assert pass_at_k(np.int64(4), np.int64(2), np.int64(2)) == pytest.approx(1 - 1 / 6)
    for n, c, k in [(3, 1, 4), (3, 1, 0), (3, 4, 1), (3, -1, 1), (0, 0, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)
    with pytest.raises(TypeError):
        pass_at_k(3.0, 1, 1)


def test_pass_at_k_large_n_is_stable():
    value = pass_at_k(1000, 3, 100)
    exact = 1 - Fraction(comb(997, 100), comb(1000, 100))
    assert value == pytest.approx(float(exact), rel=1e-12)


def test_maj_at_k_tie_goes_to_earliest():
    answers = ["b", "a", "a", "b"]
    assert majority_answer(answers, 4) == 0
    assert maj_at_k(answers, "b", 4) is True
    assert maj_at_k(answers, "a", 4) is False
    assert maj_at_k(answers, "a", 3) is True  # a: 2 votes, b: 1
    assert maj_at_k(answers, "b", 1) is True


def test_maj_at_k_with_flags_and_missing_answers():
    answers = [None, "7", " ", "8", "8"]
    flags = [False, True, False, False, False]
    assert maj_at_k(answers, flags, 2) is True  # only "7" voted
    assert maj_at_k(answers, flags, 4) is True  # "7" and "8" tie: "7" came first
    assert maj_at_k(answers, flags, 5) is False  # "8" has 2 votes
    assert maj_at_k([None, None], [True, True], 2) is False  # nothing to vote for
    with pytest.raises(ValueError):
        maj_at_k(answers, flags[:2], 2)
    with pytest.raises(ValueError):
        maj_at_k(answers, flags, 6)
    with pytest.raises(ValueError):
        maj_at_k(answers, flags, 0)


def test_cov_at_k():
    flags = [False, False, True, False]
    assert cov_at_k(flags, 2) is False
    assert cov_at_k(flags, 3) is True
    assert cov_at_k(np.array([0, 1]), 2) is True
    with pytest.raises(ValueError):
        cov_at_k(flags, 5)
