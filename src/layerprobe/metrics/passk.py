"""Parallel-scaling accuracies of one problem: pass@k, maj@k and cov@k.

Averaging these over problems gives the curves of the report.
"""

from __future__ import annotations

import operator
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: the chance that at least one of k samples drawn without replacement
    from n generated samples, c of them correct, is correct.

    Equals 1 - C(n - c, k) / C(n, k) (Chen et al. 2021), computed as the stable product
    1 - prod_{i = n - c + 1}^{n} (1 - k / i). 1.0 when fewer than k samples are wrong.
    Raises ValueError unless 0 <= c <= n and 1 <= k <= n.
    """
    n, c, k = _int(n, "n"), _int(c, "c"), _int(k, "k")
    if n < 1:
        raise ValueError(f"pass@k needs n >= 1 samples, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"the number of correct samples c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def _is_missing(answer: Any) -> bool:
    return answer is None or (isinstance(answer, str) and not answer.strip())


def majority_answer(answers: Sequence[Hashable | None], k: int | None = None) -> int | None:
    """Index of the majority answer among the first k (all when k is None).

    The most frequent answer wins; ties go to the answer that occurs first. Missing answers
    (None or blank strings) do not vote. None when no answer is present.
    """
    limit = len(answers) if k is None else k
    counts: dict[Any, int] = {}
    first: dict[Any, int] = {}
    for i, answer in enumerate(answers[:limit]):
        if _is_missing(answer):
            continue
        counts[answer] = counts.get(answer, 0) + 1
        first.setdefault(answer, i)
    if not counts:
        return None
    best = max(counts, key=lambda a: (counts[a], -first[a]))
    return first[best]


def _check_k(k: Any, n: int) -> int:
    k = _int(k, "k")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] (the number of samples), got {k}")
    return k


def _is_flags(correct: Any) -> bool:
    if isinstance(correct, (str, bytes)):
        return False
    return isinstance(correct, (list, tuple, np.ndarray))


def maj_at_k(answers: Sequence[Hashable | None], correct: Any, k: int) -> bool:
    """maj@k: whether the majority answer among the first k samples is correct.

    `correct` is either the per-sample correctness flags (same length as `answers`; the
    majority answer is judged by the flag of its first occurrence) or the gold answer
    (compared with ==). Ties go to the answer that occurs first; missing answers (None or
    blank) do not vote, and with no answer at all the result is False.
    Raises ValueError unless 1 <= k <= len(answers).
    """
    answers = list(answers)
    k = _check_k(k, len(answers))
    winner = majority_answer(answers, k)
    if winner is None:
        return False
    if _is_flags(correct):
        flags = list(correct)
        if len(flags) != len(answers):
            raise ValueError(f"got {len(flags)} correctness flags for {len(answers)} answers")
        return bool(flags[winner])
    return bool(answers[winner] == correct)


def cov_at_k(correct: Sequence[Any], k: int) -> bool:
    """cov@k (coverage): whether any of the first k samples is correct.

    `correct` holds per-sample correctness flags in sample order. Raises ValueError unless
    1 <= k <= len(correct).
    """
    flags = list(correct)
    k = _check_k(k, len(flags))
    return any(bool(flag) for flag in flags[:k])
